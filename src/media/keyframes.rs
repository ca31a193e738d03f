//! Keyframes on demand from one of our own video encoders: an upstream force-key-unit event on the encoder's
//! src pad, which `GstVideoEncoder` (x264enc, vp8enc) turns into a keyframe with the stream headers at its
//! next frame.
//!
//! An egress output that starts late, reconnects, or fell behind and dropped buffers can only (re)start at a
//! keyframe; the encoder makes one every 2 s, so it would wait up to 2 s (and the destination sees nothing
//! meanwhile) — it asks instead, and the other outputs get one extra keyframe. A transcoding RTMP ingest
//! answers the SFU's keyframe requests (PLI/FIR: a new subscriber, a simulcast layer switch, loss) the same
//! way, per layer.

use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most one request per encoder in this time (several waiting outputs or subscribers share one keyframe).
const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Asks one encoder for keyframes; cloned into each user (an egress's outputs).
#[derive(Clone, Debug, Default)]
pub struct EncoderKeyframes {
    /// The encoder's src pad (none when the pipeline has no encoder named as expected).
    pad: Option<gst::Pad>,
    last: Arc<Mutex<Option<Instant>>>,
}

impl EncoderKeyframes {
    /// Requests go to `encoder` (the element named `encoder` in the `video-encode-*` fragments).
    pub fn new(encoder: Option<gst::Element>) -> Self {
        Self {
            pad: encoder.and_then(|e| e.static_pad("src")),
            last: Arc::default(),
        }
    }

    /// Asks for a keyframe unless one was asked for less than [`MIN_INTERVAL`] ago; whether it asked.
    pub fn ask(&self) -> bool {
        let Some(pad) = &self.pad else { return false };
        let now = Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| now.duration_since(t) < MIN_INTERVAL) {
                return false;
            }
            *last = Some(now);
        }
        // `GstForceKeyUnit` as gst_video_event_new_upstream_force_key_unit builds it: no running time (the
        // next frame), with the SPS/PPS.
        let structure = gst::Structure::builder("GstForceKeyUnit")
            .field("all-headers", true)
            .field("count", 0u32)
            .build();
        let sent = pad.send_event(gst::event::CustomUpstream::new(structure));
        tracing::debug!(sent, "keyframe asked of the encoder");
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::PipelineGuard;
    use crate::media::frames::appsink_frames;

    /// A 10 s GOP: without the request the second keyframe would be frame 300.
    #[test]
    fn the_encoder_makes_a_keyframe_when_asked_and_not_twice_within_the_interval() {
        crate::media::init().expect("gstreamer");
        let guard = PipelineGuard::parse(
            "keyframes",
            "videotestsrc is-live=true num-buffers=40 ! video/x-raw,width=160,height=90,framerate=30/1 ! \
             x264enc name=encoder tune=zerolatency speed-preset=ultrafast key-int-max=300 ! \
             appsink name=out sync=false",
        )
        .expect("pipeline");
        let keyframes = EncoderKeyframes::new(guard.element("encoder").ok());
        let (mut frames, _) = appsink_frames(&guard, "out", 64).expect("appsink");
        let ended = guard.start().expect("start");
        let mut keys = Vec::new();
        for n in 0..40 {
            let Some(frame) = frames.blocking_recv() else { break };
            if frame.keyframe {
                keys.push(n);
            }
            if n == 10 {
                assert!(keyframes.ask());
                assert!(!keyframes.ask(), "a second request within the interval");
            }
        }
        let _ = ended.blocking_recv();
        assert_eq!(keys.first(), Some(&0));
        assert!(
            keys.len() == 2 && (11..=16).contains(&keys[1]),
            "keyframes at frames {keys:?}"
        );
    }
}
