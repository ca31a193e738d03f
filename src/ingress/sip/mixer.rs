//! A room's mix (sans-IO): every audio track of the room, each through its own jitter buffer and Opus
//! decoder (at the phone legs' sample rate, so no separate resampling), summed once per 20 ms tick.
//!
//! Each track is decoded once per room, not once per listening phone: a tick yields the total and every
//! track's own part, and a phone hears the total minus its own part ([`MixFrame::heard_by`]). The gateway's
//! own callers come as the PCM they were encoded from ([`Mixer::push_pcm`]): same jitter buffer, no decode.

use super::jitter::{FRAME_TICKS, JitterBuffer, JitterStats, Pull};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

/// One input of the mix.
struct Input {
    buffer: JitterBuffer,
    decoder: opus::Decoder,
    pcm: VecDeque<i16>,
    /// Its packets are PCM at the mixer's rate (little-endian samples), not Opus.
    raw: bool,
}

impl Input {
    /// Makes the input take `raw` packets (PCM) or Opus; a switch (a caller's codec changed) starts over.
    fn expect(&mut self, raw: bool) {
        if self.raw != raw {
            self.raw = raw;
            self.buffer = JitterBuffer::new();
            self.pcm.clear();
        }
    }
}

/// Mixes Opus inputs (keyed by `K`) into 20 ms PCM frames.
pub struct Mixer<K> {
    rate: u32,
    inputs: HashMap<K, Input>,
    scratch: Vec<i16>,
    /// `sip_downlink_delay_seconds`, looked up once: recorded for every packet.
    delay: metrics::Histogram,
}

/// 20 ms of a room: the sum of all inputs that had audio, and each one's part of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MixFrame<K> {
    /// The unclipped sum, one value per sample.
    pub total: Vec<i32>,
    /// The inputs that had audio, with their decoded samples.
    pub parts: Vec<(K, Vec<i16>)>,
}

impl<K: PartialEq> MixFrame<K> {
    /// What a listener whose own input is `own` hears: the total without that input, clipped to 16 bits.
    pub fn heard_by(&self, own: Option<&K>, out: &mut Vec<i16>) {
        out.clear();
        let own = own.and_then(|own| self.parts.iter().find(|(k, _)| k == own));
        match own {
            Some((_, mine)) => out.extend(self.total.iter().zip(mine.iter()).map(|(t, m)| clip(t - i32::from(*m)))),
            None => out.extend(self.total.iter().map(|t| clip(*t))),
        }
    }
}

fn clip(sample: i32) -> i16 {
    sample.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// Why the mixer could not take an input.
#[derive(Debug, thiserror::Error)]
#[error("opus decoder: {0}")]
pub struct MixerError(#[from] opus::Error);

impl<K: Hash + Eq + Clone> Mixer<K> {
    /// A mixer producing mono PCM at `rate` (8, 12, 16, 24 or 48 kHz).
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            inputs: HashMap::new(),
            scratch: vec![0; rate as usize * 120 / 1000],
            delay: metrics::histogram!("sip_downlink_delay_seconds"),
        }
    }

    /// Samples in one 20 ms frame.
    pub fn frame_len(&self) -> usize {
        self.rate as usize / 50
    }

    /// Starts mixing the track `key`.
    pub fn add(&mut self, key: &K) -> Result<(), MixerError> {
        if !self.inputs.contains_key(key) {
            let decoder = opus::Decoder::new(self.rate, opus::Channels::Mono)?;
            self.inputs.insert(
                key.clone(),
                Input {
                    buffer: JitterBuffer::new(),
                    decoder,
                    pcm: VecDeque::new(),
                    raw: false,
                },
            );
        }
        Ok(())
    }

    /// Stops mixing `key`.
    pub fn remove(&mut self, key: &K) {
        self.inputs.remove(key);
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Whether there is no input.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Hands a received Opus packet to its input's jitter buffer (ignored for an unknown key).
    pub fn push(&mut self, key: &K, rtp_time: u64, data: Arc<[u8]>, now: Instant) {
        if let Some(input) = self.inputs.get_mut(key) {
            input.expect(false);
            let ticks = opus::packet::get_nb_samples(&data, 48_000).map_or(FRAME_TICKS, |n| n as u64);
            input.buffer.push(rtp_time, data, ticks, now);
        }
    }

    /// Hands 20 ms of PCM at the mixer's rate (`rtp_time` on the 48 kHz clock) to its input's jitter buffer,
    /// to be mixed as it is (ignored for an unknown key).
    pub fn push_pcm(&mut self, key: &K, rtp_time: u64, samples: Arc<[i16]>, now: Instant) {
        if let Some(input) = self.inputs.get_mut(key) {
            input.expect(true);
            let bytes: Arc<[u8]> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
            let ticks = samples.len() as u64 * 48_000 / u64::from(self.rate);
            input.buffer.push(rtp_time, bytes, ticks, now);
        }
    }

    /// Mixes the next 20 ms.
    pub fn mix(&mut self) -> MixFrame<K> {
        let frame = self.frame_len();
        let mut total = vec![0i32; frame];
        let mut parts = Vec::new();
        for (key, input) in &mut self.inputs {
            fill(input, frame, &mut self.scratch, &self.delay);
            if input.pcm.is_empty() {
                continue;
            }
            let mut part: Vec<i16> = input.pcm.drain(..frame.min(input.pcm.len())).collect();
            part.resize(frame, 0);
            for (acc, sample) in total.iter_mut().zip(&part) {
                *acc += i32::from(*sample);
            }
            parts.push((key.clone(), part));
        }
        MixFrame { total, parts }
    }

    /// Counters of each input.
    pub fn stats(&self) -> impl Iterator<Item = (&K, JitterStats)> {
        self.inputs.iter().map(|(k, input)| (k, input.buffer.stats))
    }
}

/// Decodes packets (or conceals) until the input holds at least one frame, or it has nothing to play.
fn fill(input: &mut Input, frame: usize, scratch: &mut [i16], delay: &metrics::Histogram) {
    while input.pcm.len() < frame {
        let pulled = input.buffer.pull();
        if input.raw {
            match pulled {
                Pull::Idle => return,
                Pull::Packet(data, _, arrived) => {
                    delay.record(arrived.elapsed().as_secs_f64());
                    let samples = data.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]));
                    input.pcm.extend(samples);
                }
                // A frame that did not come (the caller's silence, or a loss): silence.
                Pull::Conceal(_) => input.pcm.extend(std::iter::repeat_n(0, frame)),
            }
            continue;
        }
        let decoded = match pulled {
            Pull::Idle => return,
            Pull::Packet(data, _, arrived) => {
                // Time from arrival to play-out: the delay the mix adds (jitter buffer and tick alignment).
                delay.record(arrived.elapsed().as_secs_f64());
                input.decoder.decode(&data, scratch, false)
            }
            Pull::Conceal(Some(next)) => input.decoder.decode(&next, &mut scratch[..frame], true),
            Pull::Conceal(None) => input.decoder.decode(&[], &mut scratch[..frame], false),
        };
        match decoded {
            Ok(n) => input.pcm.extend(&scratch[..n]),
            // A corrupt packet plays as silence rather than stopping the mix.
            Err(_) => input.pcm.extend(std::iter::repeat_n(0, frame)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    fn tone(rate: u32, hz: f64, n: usize, offset: usize) -> Vec<i16> {
        (0..n)
            .map(|i| ((i + offset) as f64 * hz * 2.0 * std::f64::consts::PI / f64::from(rate)).sin() * 8_000.0)
            .map(|s| s as i16)
            .collect()
    }

    /// Power of `hz` in `pcm` (Goertzel), relative to the total power.
    pub(crate) fn share_of(pcm: &[i16], rate: u32, hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in pcm {
            let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        let total: f64 = pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() * pcm.len() as f64 / 2.0;
        power / total.max(1.0)
    }

    /// An 8 kHz mixer with the inputs `keys`.
    fn mixer_of(keys: &[&'static str]) -> Mixer<&'static str> {
        let mut mixer = Mixer::new(8_000);
        for key in keys {
            mixer.add(key).unwrap();
        }
        mixer
    }

    /// Frame `n` of a 20 ms Opus tone of `hz` from `encoder`.
    fn opus_tone(encoder: &mut opus::Encoder, hz: f64, n: usize) -> Arc<[u8]> {
        Arc::from(encoder.encode_vec(&tone(48_000, hz, 960, n * 960), 400).unwrap())
    }

    fn voip_encoder() -> opus::Encoder {
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap()
    }

    #[test]
    fn two_opus_inputs_are_both_heard_in_the_mix_and_a_listener_never_hears_itself() {
        let mut mixer = mixer_of(&["a", "b"]);
        let (mut enc_a, mut enc_b) = (voip_encoder(), voip_encoder());
        let start = Instant::now();
        let (mut everyone, mut heard_by_a) = (Vec::new(), Vec::new());
        let mut out = Vec::new();
        for n in 0..50usize {
            let now = start + Duration::from_millis(20 * n as u64);
            let ts = (n * 960) as u64;
            mixer.push(&"a", ts, opus_tone(&mut enc_a, 440.0, n), now);
            mixer.push(&"b", ts, opus_tone(&mut enc_b, 1_000.0, n), now);
            let frame = mixer.mix();
            assert_eq!(frame.total.len(), 160);
            frame.heard_by(None, &mut out);
            everyone.extend_from_slice(&out);
            frame.heard_by(Some(&"a"), &mut out);
            heard_by_a.extend_from_slice(&out);
        }
        let tail = &everyone[everyone.len() / 2..];
        let (a, b, other) = (
            share_of(tail, 8_000, 440.0),
            share_of(tail, 8_000, 1_000.0),
            share_of(tail, 8_000, 2_500.0),
        );
        assert!(a > 0.2 && b > 0.2, "both tones present: {a:.3} {b:.3}");
        assert!(other < 0.01, "no other tone: {other:.3}");
        let tail = &heard_by_a[heard_by_a.len() / 2..];
        let (a, b) = (share_of(tail, 8_000, 440.0), share_of(tail, 8_000, 1_000.0));
        assert!(a < 0.001 && b > 0.9, "a hears only b: own {a:.4}, b {b:.3}");
        assert!(mixer.stats().all(|(_, s)| s.concealed == 0));
        mixer.remove(&"a");
        assert_eq!(mixer.len(), 1);
    }

    #[test]
    fn pcm_inputs_are_mixed_as_they_came_beside_opus_ones() {
        let mut mixer = mixer_of(&["local", "remote"]);
        let mut encoder = voip_encoder();
        let start = Instant::now();
        let (mut sent, mut heard, mut out) = (Vec::new(), Vec::new(), Vec::new());
        for n in 0..50usize {
            let (now, ts) = (start + Duration::from_millis(20 * n as u64), (n * 960) as u64);
            let pcm = tone(8_000, 440.0, 160, n * 160);
            sent.extend_from_slice(&pcm);
            mixer.push_pcm(&"local", ts, Arc::from(pcm), now);
            mixer.push(&"remote", ts, opus_tone(&mut encoder, 1_000.0, n), now);
            let frame = mixer.mix();
            // The remote phone hears the local caller's samples exactly (an Opus round trip would not be).
            frame.heard_by(Some(&"remote"), &mut out);
            heard.extend_from_slice(&out);
            frame.heard_by(Some(&"local"), &mut out);
            let (a, b) = (share_of(&out, 8_000, 440.0), share_of(&out, 8_000, 1_000.0));
            assert!(
                n < 10 || (a < 0.001 && b > 0.5),
                "local hears only remote: {a:.4} {b:.3}"
            );
        }
        let offset = heard.iter().position(|&s| s != 0).expect("the local caller is heard");
        let first = sent.iter().position(|&s| s != 0).unwrap();
        assert_eq!(&heard[offset..], &sent[first..first + heard.len() - offset]);
        assert!(mixer.stats().all(|(_, s)| s.concealed == 0));
    }

    #[test]
    fn heard_by_clips_after_taking_out_the_listeners_own_part() {
        let frame = MixFrame {
            total: vec![40_000, -40_000, 100],
            parts: vec![("me", vec![20_000, -20_000, 100]), ("you", vec![20_000, -20_000, 0])],
        };
        let mut out = Vec::new();
        frame.heard_by(None, &mut out);
        assert_eq!(out, [i16::MAX, i16::MIN, 100]);
        frame.heard_by(Some(&"me"), &mut out);
        assert_eq!(out, [20_000, -20_000, 0]);
        frame.heard_by(Some(&"nobody"), &mut out);
        assert_eq!(out, [i16::MAX, i16::MIN, 100]);
    }

    #[test]
    fn a_silent_room_mixes_to_silence_and_garbage_does_not_break_it() {
        let mut mixer = Mixer::new(8_000);
        mixer.add(&"a").unwrap();
        let frame = mixer.mix();
        assert!(frame.parts.is_empty());
        assert!(frame.total.iter().all(|&s| s == 0));
        let start = Instant::now();
        for n in 0..4u64 {
            mixer.push(&"a", n * 960, Arc::from(vec![0xffu8; 3]), start);
            mixer.push(&"unknown", n * 960, Arc::from(vec![1u8]), start);
        }
        assert_eq!(mixer.mix().total.len(), 160);
    }
}
