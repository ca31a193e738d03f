//! PIN entry by DTMF before a caller joins a room (sans-IO), and the prompt tone played meanwhile.

use std::time::Instant;

/// Wrong PINs allowed before the call is ended.
pub const MAX_ATTEMPTS: u32 = 3;

/// What a typed digit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    /// More digits are expected.
    Pending,
    /// The PIN is right.
    Accepted,
    /// The PIN is wrong; the caller may try again.
    Wrong,
    /// Too many wrong PINs.
    Exhausted,
}

/// A PIN being typed.
#[derive(Debug)]
pub struct PinEntry {
    expected: String,
    typed: String,
    wrong: u32,
    deadline: Instant,
}

impl PinEntry {
    /// Expects `expected`, typed before `deadline`.
    pub fn new(expected: String, deadline: Instant) -> Self {
        Self {
            expected,
            typed: String::new(),
            wrong: 0,
            deadline,
        }
    }

    /// Whether the time to type it is over.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// Takes one digit; `#` ends an entry early, `*` starts it again.
    pub fn digit(&mut self, digit: char) -> PinOutcome {
        match digit {
            '*' => {
                self.typed.clear();
                return PinOutcome::Pending;
            }
            '#' => {}
            d => {
                self.typed.push(d);
                if self.typed.len() < self.expected.len() {
                    return PinOutcome::Pending;
                }
            }
        }
        let right = self.typed == self.expected;
        self.typed.clear();
        if right {
            return PinOutcome::Accepted;
        }
        self.wrong += 1;
        if self.wrong >= MAX_ATTEMPTS {
            PinOutcome::Exhausted
        } else {
            PinOutcome::Wrong
        }
    }
}

/// `beeps` short 425 Hz beeps (150 ms on, 100 ms off) at `rate`.
pub fn prompt_tone(rate: u32, beeps: usize) -> Vec<i16> {
    let on = rate as usize * 150 / 1000;
    let off = rate as usize / 10;
    let mut pcm = Vec::with_capacity(beeps * (on + off));
    for beep in 0..beeps {
        // The phase runs on through the pauses, as if the tone were gated.
        let start = beep * (on + off);
        pcm.extend(
            (start..start + on)
                .map(|i| ((i as f64 * 425.0 * 2.0 * std::f64::consts::PI / f64::from(rate)).sin() * 6_000.0) as i16),
        );
        pcm.extend(std::iter::repeat_n(0, off));
    }
    pcm
}

/// A spoken prompt loaded from a WAV file (16-bit PCM, any rate, mono or stereo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    rate: u32,
    samples: Vec<i16>,
}

/// Why a prompt file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("prompt WAV: {0}")]
pub struct PromptError(&'static str);

impl Prompt {
    /// Reads a RIFF/WAVE file of 16-bit PCM (stereo is mixed down to mono).
    pub fn from_wav(bytes: &[u8]) -> Result<Self, PromptError> {
        if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(PromptError("not a RIFF/WAVE file"));
        }
        let (mut format, mut data) = (None, None);
        let mut at = 12;
        while at + 8 <= bytes.len() {
            let id = &bytes[at..at + 4];
            let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
            let body = bytes.get(at + 8..(at + 8 + len).min(bytes.len())).unwrap_or_default();
            match id {
                b"fmt " if body.len() >= 16 => format = Some(body),
                b"data" => data = Some(body),
                _ => {}
            }
            at += 8 + len + (len & 1);
        }
        let format = format.ok_or(PromptError("no fmt chunk"))?;
        let data = data.ok_or(PromptError("no data chunk"))?;
        let field = |i: usize| u16::from_le_bytes([format[i], format[i + 1]]);
        let (encoding, channels, bits) = (field(0), field(2), field(14));
        let rate = u32::from_le_bytes([format[4], format[5], format[6], format[7]]);
        if encoding != 1 || bits != 16 || !(1..=2).contains(&channels) || !(8_000..=48_000).contains(&rate) {
            return Err(PromptError("not 16-bit PCM, mono or stereo, 8 to 48 kHz"));
        }
        let frames = data.chunks_exact(2 * usize::from(channels));
        let samples = frames
            .map(|frame| {
                let sum: i32 = frame
                    .chunks_exact(2)
                    .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])))
                    .sum();
                (sum / i32::from(channels)) as i16
            })
            .collect::<Vec<_>>();
        if samples.is_empty() {
            return Err(PromptError("no audio"));
        }
        Ok(Self { rate, samples })
    }

    /// The prompt at `rate` (linear interpolation; prompts are speech or tones, so no filter is needed for
    /// the usual 8/16/48 kHz steps).
    pub fn at_rate(&self, rate: u32) -> Vec<i16> {
        if rate == self.rate {
            return self.samples.clone();
        }
        let step = f64::from(self.rate) / f64::from(rate);
        let n = (self.samples.len() as f64 / step) as usize;
        (0..n)
            .map(|i| {
                let x = i as f64 * step;
                let (k, frac) = (x as usize, x.fract());
                let a = f64::from(self.samples[k]);
                let b = f64::from(*self.samples.get(k + 1).unwrap_or(&self.samples[k]));
                (a + (b - a) * frac) as i16
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn right_pin_by_length_or_hash_and_three_strikes() {
        let now = Instant::now();
        let mut entry = PinEntry::new("1234".into(), now + Duration::from_secs(20));
        assert_eq!(entry.digit('1'), PinOutcome::Pending);
        assert_eq!(entry.digit('*'), PinOutcome::Pending, "start again");
        for d in "123".chars() {
            assert_eq!(entry.digit(d), PinOutcome::Pending);
        }
        assert_eq!(entry.digit('4'), PinOutcome::Accepted);
        let mut entry = PinEntry::new("1234".into(), now + Duration::from_secs(20));
        assert_eq!(entry.digit('9'), PinOutcome::Pending);
        assert_eq!(entry.digit('#'), PinOutcome::Wrong);
        for d in "9999".chars() {
            entry.digit(d);
        }
        assert_eq!(
            "0000".chars().map(|d| entry.digit(d)).last(),
            Some(PinOutcome::Exhausted)
        );
        assert!(entry.expired(now + Duration::from_secs(20)));
        assert!(!entry.expired(now));
    }

    fn wav(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = b"RIFF\0\0\0\0WAVE".to_vec();
        out.extend_from_slice(b"LIST\x04\0\0\0INFO");
        out.extend_from_slice(b"fmt \x10\0\0\0\x01\0");
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        out.extend_from_slice(&(2 * channels).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn a_wav_prompt_is_read_mixed_down_and_resampled() {
        let tone: Vec<i16> = (0..16_000)
            .map(|i| ((f64::from(i) * 700.0 * 2.0 * std::f64::consts::PI / 16_000.0).sin() * 8_000.0) as i16)
            .collect();
        let prompt = Prompt::from_wav(&wav(16_000, 1, &tone)).unwrap();
        assert_eq!(prompt.at_rate(16_000), tone);
        let narrow = prompt.at_rate(8_000);
        assert_eq!(narrow.len(), 8_000);
        assert!(crate::ingress::sip::mixer::tests::share_of(&narrow, 8_000, 700.0) > 0.9);
        let wide = prompt.at_rate(48_000);
        assert_eq!(wide.len(), 48_000);
        assert!(crate::ingress::sip::mixer::tests::share_of(&wide, 48_000, 700.0) > 0.9);
        let stereo: Vec<i16> = tone.iter().flat_map(|&s| [s, 0]).collect();
        assert_eq!(
            Prompt::from_wav(&wav(16_000, 2, &stereo)).unwrap().at_rate(16_000)[100],
            tone[100] / 2
        );
        assert!(Prompt::from_wav(b"RIFF....WAVEjunk").is_err());
        assert!(Prompt::from_wav(&wav(16_000, 1, &[])).is_err());
        assert!(Prompt::from_wav(&wav(4_000, 1, &tone)).is_err());
        let mut float = wav(16_000, 1, &tone);
        float[32] = 3; // encoding 3: IEEE float
        assert!(Prompt::from_wav(&float).is_err());
    }

    #[test]
    fn the_prompt_is_audible_beeps() {
        let pcm = prompt_tone(8_000, 2);
        assert_eq!(pcm.len(), 2 * (1_200 + 800));
        assert!(pcm[..1_200].iter().any(|s| s.abs() > 5_000));
        assert!(pcm[1_200..2_000].iter().all(|&s| s == 0));
    }
}
