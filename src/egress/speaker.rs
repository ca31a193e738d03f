//! Who is speaking, for the `speaker` layout (sans-IO): from each participant's audio loudness, sampled
//! every [`TICK`], the loudest one becomes the speaker once it has been clearly louder than the current one
//! for a second, so the layout does not flicker at every breath or cough.

use std::time::Duration;

/// How often the levels are sampled.
pub const TICK: Duration = Duration::from_millis(250);

/// Mean square below which a participant counts as silent (−40 dBFS).
const FLOOR: f64 = 1e-4;
/// How much louder (in power) a challenger must be than the speaker: 3 dB.
const MARGIN: f64 = 2.0;
/// Ticks a challenger must stay louder before it takes over.
const HOLD_TICKS: u32 = 4;

/// The speaker choice over time.
#[derive(Debug, Default)]
pub struct SpeakerPicker {
    current: Option<String>,
    challenger: Option<(String, u32)>,
}

impl SpeakerPicker {
    /// Takes one sample of `(participant, mean square)` levels; returns the speaker, if anyone has spoken.
    pub fn update(&mut self, levels: &[(String, f64)]) -> Option<&str> {
        let loudest = levels
            .iter()
            .filter(|(_, level)| *level >= FLOOR)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let current_level = self
            .current
            .as_ref()
            .and_then(|c| levels.iter().find(|(who, _)| who == c))
            .map(|(_, level)| *level);
        match (loudest, current_level) {
            (None, Some(_)) => self.challenger = None,
            (None, None) => {
                // The speaker left and nobody speaks: no speaker until someone does.
                self.current = None;
                self.challenger = None;
            }
            (Some((who, _)), None) => {
                self.current = Some(who.clone());
                self.challenger = None;
            }
            (Some((who, level)), Some(current)) => {
                if Some(who) == self.current.as_ref() || *level < current * MARGIN {
                    self.challenger = None;
                } else {
                    let ticks = match &self.challenger {
                        Some((c, n)) if c == who => n + 1,
                        _ => 1,
                    };
                    if ticks >= HOLD_TICKS {
                        self.current = Some(who.clone());
                        self.challenger = None;
                    } else {
                        self.challenger = Some((who.clone(), ticks));
                    }
                }
            }
        }
        self.current.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(a: f64, b: f64) -> Vec<(String, f64)> {
        vec![("a".into(), a), ("b".into(), b)]
    }

    #[test]
    fn the_first_to_speak_is_the_speaker_at_once() {
        let mut picker = SpeakerPicker::default();
        assert_eq!(picker.update(&levels(0.0, 0.0)), None);
        assert_eq!(picker.update(&levels(0.0, 0.01)), Some("b"));
        // Silence keeps the last speaker.
        assert_eq!(picker.update(&levels(0.0, 0.0)), Some("b"));
    }

    #[test]
    fn a_challenger_takes_over_after_a_second_of_being_clearly_louder() {
        let mut picker = SpeakerPicker::default();
        picker.update(&levels(0.01, 0.0));
        for _ in 0..HOLD_TICKS - 1 {
            assert_eq!(picker.update(&levels(0.01, 0.05)), Some("a"));
        }
        assert_eq!(picker.update(&levels(0.01, 0.05)), Some("b"));
        // Slightly louder (less than 3 dB) never takes over.
        for _ in 0..20 {
            assert_eq!(picker.update(&levels(0.06, 0.05)), Some("b"));
        }
        // A short burst does not either: the count restarts.
        picker.update(&levels(0.2, 0.01));
        picker.update(&levels(0.2, 0.01));
        picker.update(&levels(0.0, 0.01));
        picker.update(&levels(0.2, 0.01));
        assert_eq!(picker.update(&levels(0.2, 0.01)), Some("b"));
    }

    #[test]
    fn a_speaker_who_leaves_is_replaced_by_the_loudest() {
        let mut picker = SpeakerPicker::default();
        picker.update(&levels(0.01, 0.0));
        assert_eq!(picker.update(&[("b".into(), 0.02)]), Some("b"));
        assert_eq!(picker.update(&[]), None);
    }
}
