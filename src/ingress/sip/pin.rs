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

    #[test]
    fn the_prompt_is_audible_beeps() {
        let pcm = prompt_tone(8_000, 2);
        assert_eq!(pcm.len(), 2 * (1_200 + 800));
        assert!(pcm[..1_200].iter().any(|s| s.abs() > 5_000));
        assert!(pcm[1_200..2_000].iter().all(|&s| s == 0));
    }
}
