//! Which frames a video decoder could not decode, sans-IO. GStreamer 1.22's decoders say nothing when libav
//! or libvpx rejects a frame (`avdec_h264` logs "decode_slice_header error" and moves on; with `max-errors=-1`
//! no message reaches the bus), but the frame then never comes out. So every frame handed to a branch is noted
//! with its timestamp, and every decoded picture is matched to it: a frame still waiting when a later one
//! (in presentation order) comes out was dropped by the decoder, and the pictures after it are built on a
//! missing reference until the next keyframe — the egress asks for one. A decoder that keeps more than
//! [`MAX_HELD`] frames without putting any out counts as failing too (a stream it cannot start on).

use std::collections::VecDeque;

/// More frames than any decoder legitimately holds back (H.264's 16 reference pictures plus frame threads).
pub const MAX_HELD: usize = 32;

/// The frames of one video branch between its appsrc and its decoder's output.
#[derive(Debug, Default)]
pub struct DecodeWatch {
    /// Timestamps of the frames handed to the decoder and not yet seen out, in decode order.
    pending: VecDeque<u64>,
    /// Frames the decoder dropped since the last [`DecodeWatch::take_undecoded`].
    undecoded: u64,
}

impl DecodeWatch {
    /// A frame to be presented at `pts_ns` went into the decoder.
    pub fn sent(&mut self, pts_ns: u64) {
        self.pending.push_back(pts_ns);
        if self.pending.len() > MAX_HELD {
            // Nothing comes out: the decoder cannot decode this stream from here.
            self.undecoded += self.pending.len() as u64;
            self.pending.clear();
        }
    }

    /// A picture stamped `pts_ns` came out of the decoder.
    pub fn decoded(&mut self, pts_ns: u64) {
        // Its own frame (not there if the watch was cleared since it went in).
        if let Some(own) = self.pending.iter().position(|&p| p == pts_ns) {
            self.pending.remove(own);
        }
        let before = self.pending.len();
        // Frames presented before this picture that have not come out never will (pictures leave a decoder
        // in presentation order); later ones are still being reordered.
        self.pending.retain(|&p| p >= pts_ns);
        self.undecoded += (before - self.pending.len()) as u64;
    }

    /// The frames dropped since the last call.
    pub fn take_undecoded(&mut self) -> u64 {
        std::mem::take(&mut self.undecoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u64 = 33_333_333;

    #[test]
    fn every_frame_decoded_in_order_is_no_error() {
        let mut watch = DecodeWatch::default();
        for i in 0..100 {
            watch.sent(i * FRAME);
            watch.decoded(i * FRAME);
        }
        assert_eq!(watch.take_undecoded(), 0);
    }

    #[test]
    fn a_frame_that_never_comes_out_is_counted_once_a_later_one_does() {
        let mut watch = DecodeWatch::default();
        for i in 0..10 {
            watch.sent(i * FRAME);
            if i != 4 {
                watch.decoded(i * FRAME);
            }
            if i == 4 {
                assert_eq!(watch.take_undecoded(), 0, "not known before the next picture");
            }
        }
        assert_eq!(watch.take_undecoded(), 1);
        assert_eq!(watch.take_undecoded(), 0, "taken");
    }

    #[test]
    fn two_frames_with_one_timestamp_are_two_pictures() {
        let mut watch = DecodeWatch::default();
        watch.sent(FRAME);
        watch.sent(FRAME);
        watch.decoded(FRAME);
        watch.decoded(FRAME);
        watch.sent(2 * FRAME);
        watch.decoded(2 * FRAME);
        assert_eq!(watch.take_undecoded(), 0);
    }

    #[test]
    fn reordered_pictures_are_not_errors() {
        // Decode order I0 P3 B1 B2 P6 B4 B5; pictures come out in presentation order, one frame late.
        let mut watch = DecodeWatch::default();
        let decode_order = [0u64, 3, 1, 2, 6, 4, 5];
        for &n in &decode_order {
            watch.sent(n * FRAME);
        }
        for n in 0..7u64 {
            watch.decoded(n * FRAME);
        }
        assert_eq!(watch.take_undecoded(), 0);
    }

    #[test]
    fn a_dropped_reference_among_reordered_frames_is_counted() {
        let mut watch = DecodeWatch::default();
        for n in [0u64, 3, 1, 2, 6, 4, 5] {
            watch.sent(n * FRAME);
        }
        // P3 is lost inside the decoder: 0, 1, 2, 4, 5, 6 come out.
        for n in [0u64, 1, 2, 4, 5, 6] {
            watch.decoded(n * FRAME);
        }
        assert_eq!(watch.take_undecoded(), 1);
    }

    #[test]
    fn a_decoder_that_puts_nothing_out_fails_after_max_held_frames() {
        let mut watch = DecodeWatch::default();
        for i in 0..MAX_HELD as u64 {
            watch.sent(i * FRAME);
        }
        assert_eq!(watch.take_undecoded(), 0, "a decoder may hold this many");
        watch.sent(MAX_HELD as u64 * FRAME);
        assert_eq!(watch.take_undecoded(), MAX_HELD as u64 + 1);
        // A picture of a cleared frame counts nothing.
        watch.decoded(3 * FRAME);
        assert_eq!(watch.take_undecoded(), 0);
    }
}
