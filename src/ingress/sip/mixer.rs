//! The phone's mix: every other audio track of the room, each through its own jitter buffer and Opus
//! decoder (at the phone leg's sample rate, so no separate resampling), summed with clipping.

use super::jitter::{FRAME_TICKS, JitterBuffer, JitterStats, Pull};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// One input of the mix.
struct Input {
    buffer: JitterBuffer,
    decoder: opus::Decoder,
    pcm: VecDeque<i16>,
}

/// Mixes Opus inputs (keyed by the mid they arrive on) into 20 ms PCM frames.
pub struct Mixer {
    rate: u32,
    inputs: HashMap<String, Input>,
    scratch: Vec<i16>,
    sum: Vec<i32>,
}

/// Why the mixer could not take an input.
#[derive(Debug, thiserror::Error)]
#[error("opus decoder: {0}")]
pub struct MixerError(#[from] opus::Error);

impl Mixer {
    /// A mixer producing mono PCM at `rate` (8, 12, 16, 24 or 48 kHz).
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            inputs: HashMap::new(),
            scratch: vec![0; rate as usize * 120 / 1000],
            sum: vec![0; rate as usize / 50],
        }
    }

    /// Samples in one 20 ms frame.
    pub fn frame_len(&self) -> usize {
        self.rate as usize / 50
    }

    /// Starts mixing the track arriving on `mid`.
    pub fn add(&mut self, mid: &str) -> Result<(), MixerError> {
        if !self.inputs.contains_key(mid) {
            let decoder = opus::Decoder::new(self.rate, opus::Channels::Mono)?;
            self.inputs.insert(
                mid.to_string(),
                Input {
                    buffer: JitterBuffer::new(),
                    decoder,
                    pcm: VecDeque::new(),
                },
            );
        }
        Ok(())
    }

    /// Stops mixing `mid`.
    pub fn remove(&mut self, mid: &str) {
        self.inputs.remove(mid);
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Whether there is no input.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Hands a received Opus packet to its input's jitter buffer (ignored for an unknown mid).
    pub fn push(&mut self, mid: &str, rtp_time: u64, data: Arc<[u8]>, now: Instant) {
        if let Some(input) = self.inputs.get_mut(mid) {
            let ticks = opus::packet::get_nb_samples(&data, 48_000).map_or(FRAME_TICKS, |n| n as u64);
            input.buffer.push(rtp_time, data, ticks, now);
        }
    }

    /// Mixes the next 20 ms into `out` (resized to one frame); returns how many inputs had audio.
    pub fn mix(&mut self, out: &mut Vec<i16>) -> usize {
        let frame = self.frame_len();
        out.clear();
        out.resize(frame, 0);
        let sum = &mut self.sum;
        sum.clear();
        sum.resize(frame, 0);
        let mut active = 0;
        for input in self.inputs.values_mut() {
            fill(input, frame, &mut self.scratch);
            if input.pcm.is_empty() {
                continue;
            }
            active += 1;
            for (acc, sample) in sum.iter_mut().zip(input.pcm.drain(..frame.min(input.pcm.len()))) {
                *acc += i32::from(sample);
            }
        }
        for (o, s) in out.iter_mut().zip(sum.iter()) {
            *o = (*s).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
        active
    }

    /// Counters summed over all inputs.
    pub fn stats(&self) -> JitterStats {
        let mut total = JitterStats::default();
        for input in self.inputs.values() {
            let s = input.buffer.stats;
            total.played += s.played;
            total.concealed += s.concealed;
            total.late += s.late;
            total.overflowed += s.overflowed;
        }
        total
    }
}

/// Decodes packets (or conceals) until the input holds at least one frame, or it has nothing to play.
fn fill(input: &mut Input, frame: usize, scratch: &mut [i16]) {
    while input.pcm.len() < frame {
        let decoded = match input.buffer.pull() {
            Pull::Idle => return,
            Pull::Packet(data, _, arrived) => {
                // Time from arrival to play-out: the delay the mix adds (jitter buffer and tick alignment).
                metrics::histogram!("sip_downlink_delay_seconds").record(arrived.elapsed().as_secs_f64());
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

    #[test]
    fn two_opus_inputs_are_both_heard_in_the_mix() {
        let mut mixer = Mixer::new(8_000);
        mixer.add("a").unwrap();
        mixer.add("b").unwrap();
        let mut enc_a = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let mut enc_b = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let start = Instant::now();
        let mut mixed = Vec::new();
        let mut out = Vec::new();
        for n in 0..50usize {
            let now = start + Duration::from_millis(20 * n as u64);
            let ts = (n * 960) as u64;
            let a = enc_a.encode_vec(&tone(48_000, 440.0, 960, n * 960), 400).unwrap();
            let b = enc_b.encode_vec(&tone(48_000, 1_000.0, 960, n * 960), 400).unwrap();
            mixer.push("a", ts, Arc::from(a), now);
            mixer.push("b", ts, Arc::from(b), now);
            mixer.mix(&mut out);
            mixed.extend_from_slice(&out);
        }
        assert_eq!(out.len(), 160);
        let tail = &mixed[mixed.len() / 2..];
        let (a, b, other) = (
            share_of(tail, 8_000, 440.0),
            share_of(tail, 8_000, 1_000.0),
            share_of(tail, 8_000, 2_500.0),
        );
        assert!(a > 0.2 && b > 0.2, "both tones present: {a:.3} {b:.3}");
        assert!(other < 0.01, "no other tone: {other:.3}");
        assert_eq!(mixer.stats().concealed, 0);
        mixer.remove("a");
        assert_eq!(mixer.len(), 1);
    }

    #[test]
    fn a_silent_room_mixes_to_silence_and_garbage_does_not_break_it() {
        let mut mixer = Mixer::new(8_000);
        mixer.add("a").unwrap();
        let mut out = Vec::new();
        assert_eq!(mixer.mix(&mut out), 0);
        assert!(out.iter().all(|&s| s == 0));
        let start = Instant::now();
        for n in 0..4u64 {
            mixer.push("a", n * 960, Arc::from(vec![0xffu8; 3]), start);
            mixer.push("unknown", n * 960, Arc::from(vec![1u8]), start);
        }
        mixer.mix(&mut out);
        assert_eq!(out.len(), 160);
    }
}
