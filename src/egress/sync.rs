//! Lip-sync of an egress's sources (sans-IO): every frame is timestamped at its capture time plus one
//! playout delay common to all tracks, instead of at its arrival.
//!
//! The capture time of a frame comes from its track's RTCP sender reports (NTP wallclock ↔ RTP time, see
//! `sfu::peer`). Tracks reach the gateway with different delays (an audio transcode, a video that waits for
//! its keyframe, another network path); stamping on arrival would put those differences into the output.
//! Here the delay `D` is the largest transit delay seen (capture → arrival) plus a small margin, and a frame
//! captured at `c` is presented at `c + D`: tracks captured together are presented together. `D` only
//! grows (a frame later than `D` would be too late for the compositor), up to [`MAX_DELAY`]; a frame that
//! took longer than that is stamped on arrival. Frames
//! without a capture time yet (before their track's first sender report) are stamped on arrival.

use std::time::Duration;

/// Margin added to the largest transit delay, for jitter.
const MARGIN: Duration = Duration::from_millis(20);
/// The playout delay never exceeds this (a broken sender report must not stall the egress).
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// The playout delay of one pipeline's sources.
#[derive(Debug, Default)]
pub struct PlayoutClock {
    delay_ns: Option<u64>,
}

impl PlayoutClock {
    /// The presentation time (pipeline running time, ns) of a frame that arrived at running time `arrival`
    /// and, if known, was captured at running time `capture` (which may be negative: before the pipeline
    /// started).
    pub fn pts(&mut self, arrival: u64, capture: Option<i128>) -> u64 {
        let Some(capture) = capture else { return arrival };
        let transit = (i128::from(arrival) - capture).max(0) as u64;
        let max = MAX_DELAY.as_nanos() as u64;
        if transit > max {
            // A bogus sender report (or a stalled sender): rather on arrival than held for seconds.
            return arrival;
        }
        let wanted = (transit + MARGIN.as_nanos() as u64).min(max);
        let delay = match self.delay_ns {
            Some(d) if d >= wanted => d,
            _ => {
                if self.delay_ns.is_some() {
                    tracing::debug!(delay_ms = wanted / 1_000_000, "egress: playout delay grows");
                }
                self.delay_ns = Some(wanted);
                wanted
            }
        };
        (capture + i128::from(delay)).max(0) as u64
    }

    /// The current playout delay, once a capture time was seen.
    pub fn delay(&self) -> Option<Duration> {
        self.delay_ns.map(Duration::from_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn tracks_captured_together_are_presented_together() {
        let mut clock = PlayoutClock::default();
        // Audio captured at 1000 ms arrives 5 ms later; video captured at the same instant 300 ms later.
        let audio = clock.pts(1005 * MS, Some(i128::from(1000 * MS)));
        let video = clock.pts(1300 * MS, Some(i128::from(1000 * MS)));
        // The first audio frame had only its own delay to go by; from the video on, both share 320 ms.
        assert_eq!(audio, 1025 * MS);
        assert_eq!(video, 1320 * MS);
        let audio = clock.pts(1045 * MS, Some(i128::from(1040 * MS)));
        let video = clock.pts(1340 * MS, Some(i128::from(1040 * MS)));
        assert_eq!(audio, video, "same capture, same presentation");
        assert_eq!(clock.delay(), Some(Duration::from_millis(320)));
    }

    #[test]
    fn without_a_capture_time_a_frame_is_stamped_on_arrival() {
        let mut clock = PlayoutClock::default();
        assert_eq!(clock.pts(500 * MS, None), 500 * MS);
        assert_eq!(clock.delay(), None);
    }

    #[test]
    fn the_delay_is_bounded_and_never_shrinks() {
        let mut clock = PlayoutClock::default();
        clock.pts(100 * MS, Some(i128::from(90 * MS)));
        assert_eq!(clock.delay(), Some(Duration::from_millis(30)));
        clock.pts(200 * MS, Some(i128::from(199 * MS)));
        assert_eq!(clock.delay(), Some(Duration::from_millis(30)));
        // A capture time an hour in the past (a bogus report): on arrival, the delay untouched.
        let pts = clock.pts(10_000 * MS, Some(-3_600_000 * i128::from(MS)));
        assert_eq!(pts, 10_000 * MS);
        assert_eq!(clock.delay(), Some(Duration::from_millis(30)));
        // Captured before the pipeline started: still a valid time.
        let mut fresh = PlayoutClock::default();
        assert_eq!(fresh.pts(0, Some(-5 * i128::from(MS))), 20 * MS);
    }
}
