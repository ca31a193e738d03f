//! The muxer's FLV buffers handed to every output of an egress attempt: numbered, so that an output that fell
//! behind sees the gap and resumes at a video keyframe (`output::Gate`). A full output queue drops the buffer
//! there and then; the drops are counted per output (`dropped` in the egress state,
//! `egress_output_dropped_total`) and logged when an output starts falling behind.

use super::output::Sequenced;
use super::store::EgressStore;
use crate::media::frames::Frame;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, error::TrySendError};

/// At most one "fell behind" warning per output in this time.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The outputs of one pipeline attempt, in the egress's output order.
#[derive(Default)]
pub(super) struct Fanout {
    outputs: Vec<Slot>,
    /// The number of the last buffer sent.
    seq: u64,
}

struct Slot {
    sender: mpsc::Sender<Sequenced>,
    /// Buffers dropped since the egress state was last updated.
    unpublished: u64,
    /// Whether the last buffer was dropped.
    behind: bool,
    warned: Option<Instant>,
}

impl Fanout {
    /// Whether the outputs are not started yet.
    pub(super) fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Adds the next output's queue.
    pub(super) fn add(&mut self, sender: mpsc::Sender<Sequenced>) {
        self.outputs.push(Slot {
            sender,
            unpublished: 0,
            behind: false,
            warned: None,
        });
    }

    /// Hands `flv` to every output that has room for it; the others drop it.
    pub(super) fn send(&mut self, egress: &str, flv: &Frame) {
        self.seq += 1;
        for (index, slot) in self.outputs.iter_mut().enumerate() {
            match slot.sender.try_send((self.seq, flv.clone())) {
                Ok(()) => slot.behind = false,
                Err(TrySendError::Full(_)) => {
                    slot.unpublished += 1;
                    metrics::counter!("egress_output_dropped_total").increment(1);
                    let starts = !std::mem::replace(&mut slot.behind, true);
                    if starts && slot.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        slot.warned = Some(Instant::now());
                        tracing::warn!(
                            egress,
                            output = index,
                            "egress output fell behind its destination: dropping until it catches up, then \
                             resuming at a video keyframe"
                        );
                    }
                }
                // The output's task ended (the egress is stopping).
                Err(TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Adds the drops since the last call to the outputs' `dropped` in the egress state.
    pub(super) fn publish(&mut self, store: &EgressStore, egress: &str) {
        if self.outputs.iter().all(|slot| slot.unpublished == 0) {
            return;
        }
        let outputs = &mut self.outputs;
        store.update(egress, |e| {
            for (slot, view) in outputs.iter_mut().zip(e.outputs.iter_mut()) {
                view.dropped += std::mem::take(&mut slot.unpublished);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame {
            data: vec![9, 0],
            pts_ns: 0,
            keyframe: false,
            header: false,
        }
    }

    #[test]
    fn a_full_output_drops_and_the_others_get_every_buffer_numbered() {
        let (fast, mut fast_rx) = mpsc::channel(8);
        let (slow, mut slow_rx) = mpsc::channel(2);
        let mut fanout = Fanout::default();
        fanout.add(fast);
        fanout.add(slow);
        for _ in 0..5 {
            fanout.send("eg_test", &frame());
        }
        let fast_seqs: Vec<u64> = std::iter::from_fn(|| fast_rx.try_recv().ok().map(|(seq, _)| seq)).collect();
        assert_eq!(fast_seqs, vec![1, 2, 3, 4, 5]);
        let slow_seqs: Vec<u64> = std::iter::from_fn(|| slow_rx.try_recv().ok().map(|(seq, _)| seq)).collect();
        assert_eq!(slow_seqs, vec![1, 2]);
        assert_eq!(
            fanout.outputs.iter().map(|s| s.unpublished).collect::<Vec<_>>(),
            vec![0, 3]
        );
        // Caught up: the next buffer goes through, numbered after the gap.
        fanout.send("eg_test", &frame());
        assert_eq!(slow_rx.try_recv().unwrap().0, 6);
        assert!(!fanout.outputs[1].behind);
    }
}
