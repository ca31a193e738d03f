//! An adaptive jitter buffer for one Opus input of the phone's mix (sans-IO: packets and pulls go in, the
//! caller drives the clock).
//!
//! Packets are ordered by their 48 kHz timestamp. Playback starts once `target` worth of audio is buffered;
//! the target follows the measured inter-arrival jitter (RFC 3550 estimator), between [`MIN_TARGET`] and
//! [`MAX_TARGET`]. A missing packet is concealed (with in-band FEC from the next packet when it is there); a
//! buffer that runs dry for [`MAX_CONCEALED`] pulls stops and buffers again; a burst that overfills the
//! buffer drops the oldest audio so the delay stays bounded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Ticks of the 48 kHz clock in 20 ms.
pub const FRAME_TICKS: u64 = 960;
/// Smallest playout delay (40 ms).
pub const MIN_TARGET: u64 = 2 * FRAME_TICKS;
/// Largest playout delay (80 ms).
pub const MAX_TARGET: u64 = 4 * FRAME_TICKS;
/// Consecutive concealed frames on an empty buffer before playback stops (DTX, a leaving publisher).
pub const MAX_CONCEALED: u32 = 3;
/// Buffered audio beyond which the oldest packets are dropped (a burst after a stall).
const OVERFLOW: u64 = 3 * MAX_TARGET;
/// Pulls (20 ms each) over which the smallest buffer level is watched: a buffer that never went below
/// target + 20 ms in that time holds delay nobody needs, and the excess is dropped.
const SHRINK_WINDOW: u32 = 25;

/// What to play next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pull {
    /// The next packet, lasting `ticks` (48 kHz), that arrived at the instant given.
    Packet(Arc<[u8]>, u64, Instant),
    /// The next packet is missing: conceal 20 ms, from this following packet's FEC when given.
    Conceal(Option<Arc<[u8]>>),
    /// Nothing to play (not started, or the input went quiet).
    Idle,
}

/// Counters of one input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets played.
    pub played: u64,
    /// 20 ms frames concealed.
    pub concealed: u64,
    /// Packets that came after their time and were dropped.
    pub late: u64,
    /// Packets dropped to bound the delay (bursts, and excess delay left behind by one).
    pub overflowed: u64,
}

/// The buffer of one input.
#[derive(Debug)]
pub struct JitterBuffer {
    packets: BTreeMap<u64, (Arc<[u8]>, u64, Instant)>,
    next: Option<u64>,
    playing: bool,
    concealed_run: u32,
    jitter: f64,
    last_arrival: Option<(Instant, u64)>,
    window_min: u64,
    window_pulls: u32,
    /// Counters.
    pub stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self {
            packets: BTreeMap::new(),
            next: None,
            playing: false,
            concealed_run: 0,
            jitter: 0.0,
            last_arrival: None,
            window_min: u64::MAX,
            window_pulls: 0,
            stats: JitterStats::default(),
        }
    }

    /// The current playout delay target, in 48 kHz ticks.
    pub fn target(&self) -> u64 {
        let wanted = (3.0 * self.jitter) as u64 + FRAME_TICKS;
        wanted
            .div_ceil(FRAME_TICKS)
            .saturating_mul(FRAME_TICKS)
            .clamp(MIN_TARGET, MAX_TARGET)
    }

    /// Audio buffered, in ticks.
    pub fn buffered(&self) -> u64 {
        match (self.packets.first_key_value(), self.packets.last_key_value()) {
            (Some((first, _)), Some((last, (_, ticks, _)))) => last + ticks - first,
            _ => 0,
        }
    }

    /// Adds a packet with its timestamp and duration (ticks) that arrived at `now`.
    pub fn push(&mut self, timestamp: u64, data: Arc<[u8]>, ticks: u64, now: Instant) {
        if let Some((at, ts)) = self.last_arrival {
            let arrival = now.saturating_duration_since(at).as_secs_f64() * 48_000.0;
            let spacing = timestamp as f64 - ts as f64;
            self.jitter += ((arrival - spacing).abs() - self.jitter) / 16.0;
        }
        self.last_arrival = Some((now, timestamp));
        if self.next.is_some_and(|next| timestamp < next) {
            self.stats.late += 1;
            return;
        }
        self.packets.insert(timestamp, (data, ticks.max(1), now));
        while self.buffered() > OVERFLOW {
            self.packets.pop_first();
            self.stats.overflowed += 1;
            self.next = self.packets.first_key_value().map(|(ts, _)| *ts);
        }
    }

    /// Drops the delay a past burst left behind: when the buffer stayed above target + 20 ms for a whole
    /// window, the oldest packets beyond the target go.
    fn shrink(&mut self) {
        self.window_min = self.window_min.min(self.buffered());
        self.window_pulls += 1;
        if self.window_pulls < SHRINK_WINDOW {
            return;
        }
        let target = self.target();
        if self.window_min > target + FRAME_TICKS {
            while self.buffered() > target + FRAME_TICKS / 2 && self.packets.len() > 1 {
                self.packets.pop_first();
                self.stats.overflowed += 1;
            }
            self.next = self.packets.first_key_value().map(|(ts, _)| *ts);
        }
        self.window_min = u64::MAX;
        self.window_pulls = 0;
    }

    /// What to play for the next 20 ms.
    pub fn pull(&mut self) -> Pull {
        if !self.playing {
            if self.packets.is_empty() || self.buffered() < self.target() {
                return Pull::Idle;
            }
            self.playing = true;
            self.next = self.packets.first_key_value().map(|(ts, _)| *ts);
        }
        self.shrink();
        let next = self.next.unwrap_or_default();
        // Anything older than the play position was already concealed.
        while let Some(entry) = self.packets.first_entry() {
            if *entry.key() >= next {
                break;
            }
            entry.remove();
            self.stats.late += 1;
        }
        if let Some((data, ticks, arrived)) = self.packets.remove(&next) {
            self.next = Some(next + ticks);
            self.concealed_run = 0;
            self.stats.played += 1;
            return Pull::Packet(data, ticks, arrived);
        }
        if self.packets.is_empty() && self.concealed_run >= MAX_CONCEALED {
            self.playing = false;
            self.next = None;
            self.concealed_run = 0;
            return Pull::Idle;
        }
        self.concealed_run += 1;
        self.stats.concealed += 1;
        self.next = Some(next + FRAME_TICKS);
        let fec = self.packets.get(&(next + FRAME_TICKS)).map(|(data, ..)| data.clone());
        Pull::Conceal(fec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn packet(n: u8) -> Arc<[u8]> {
        Arc::from(vec![n])
    }

    fn played(pull: Pull) -> Option<u8> {
        match pull {
            Pull::Packet(data, ..) => Some(data[0]),
            _ => None,
        }
    }

    #[test]
    fn waits_for_the_target_then_plays_in_order() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        jb.push(1_000, packet(0), FRAME_TICKS, start);
        assert_eq!(jb.pull(), Pull::Idle, "20 ms is below the 40 ms target");
        // Reordered arrival.
        jb.push(
            1_000 + 2 * FRAME_TICKS,
            packet(2),
            FRAME_TICKS,
            start + Duration::from_millis(20),
        );
        jb.push(
            1_000 + FRAME_TICKS,
            packet(1),
            FRAME_TICKS,
            start + Duration::from_millis(21),
        );
        let order: Vec<_> = (0..3).filter_map(|_| played(jb.pull())).collect();
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(jb.stats.played, 3);
    }

    #[test]
    fn a_lost_packet_is_concealed_with_fec_from_the_next() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        for n in [0u8, 1, 3, 4] {
            jb.push(
                u64::from(n) * FRAME_TICKS,
                packet(n),
                FRAME_TICKS,
                start + Duration::from_millis(20 * u64::from(n)),
            );
        }
        assert_eq!(played(jb.pull()), Some(0));
        assert_eq!(played(jb.pull()), Some(1));
        assert_eq!(jb.pull(), Pull::Conceal(Some(packet(3))));
        assert_eq!(played(jb.pull()), Some(3));
        // The lost packet arrives after its time: dropped, counted late.
        jb.push(
            2 * FRAME_TICKS,
            packet(2),
            FRAME_TICKS,
            start + Duration::from_millis(90),
        );
        assert_eq!(jb.stats.late, 1);
        assert_eq!(played(jb.pull()), Some(4));
        assert_eq!(jb.stats.concealed, 1);
    }

    #[test]
    fn an_input_that_goes_quiet_stops_after_a_few_concealed_frames() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        jb.push(0, packet(0), FRAME_TICKS, start);
        jb.push(FRAME_TICKS, packet(1), FRAME_TICKS, start);
        jb.pull();
        jb.pull();
        for _ in 0..MAX_CONCEALED {
            assert_eq!(jb.pull(), Pull::Conceal(None));
        }
        assert_eq!(jb.pull(), Pull::Idle);
        // It starts again (after buffering) when packets come back, even with a timestamp jump (DTX).
        jb.push(50 * FRAME_TICKS, packet(9), FRAME_TICKS, start + Duration::from_secs(1));
        jb.push(
            51 * FRAME_TICKS,
            packet(10),
            FRAME_TICKS,
            start + Duration::from_secs(1),
        );
        assert_eq!(played(jb.pull()), Some(9));
    }

    #[test]
    fn delay_left_by_a_burst_shrinks_back_to_the_target() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new();
        // A stall, then 10 packets (200 ms) at once, then steady arrival in real time.
        for n in 0..10u64 {
            jb.push(n * FRAME_TICKS, packet(0), FRAME_TICKS, start);
        }
        for n in 10..200u64 {
            let at = start + Duration::from_millis(20 * (n - 9));
            jb.push(n * FRAME_TICKS, packet(0), FRAME_TICKS, at);
            jb.pull();
        }
        assert!(
            jb.buffered() <= jb.target() + FRAME_TICKS,
            "buffered {} ticks against a target of {}",
            jb.buffered(),
            jb.target()
        );
        assert!(jb.stats.overflowed > 0);
    }

    #[test]
    fn the_target_follows_jitter_within_bounds_and_bursts_are_trimmed() {
        let start = Instant::now();
        let mut steady = JitterBuffer::new();
        for n in 0..50u64 {
            steady.push(
                n * FRAME_TICKS,
                packet(0),
                FRAME_TICKS,
                start + Duration::from_millis(20 * n),
            );
        }
        assert_eq!(steady.target(), MIN_TARGET);
        let mut bursty = JitterBuffer::new();
        for n in 0..50u64 {
            // Packets arrive in bursts of five every 100 ms.
            let at = start + Duration::from_millis(100 * (n / 5));
            bursty.push(n * FRAME_TICKS, packet(0), FRAME_TICKS, at);
        }
        assert_eq!(bursty.target(), MAX_TARGET);
        assert!(
            bursty.buffered() <= OVERFLOW,
            "a burst never buffers more than {OVERFLOW} ticks"
        );
        assert!(bursty.stats.overflowed > 0);
    }
}
