//! Bridges between GStreamer and channels of encoded frames: an appsink that hands out frames with their
//! media time, and an appsrc that takes frames in. Callbacks only push into bounded channels (full: drop and
//! count).

use super::pipeline::{MediaError, PipelineGuard};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// One encoded (or raw) buffer out of a pipeline.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Presentation time in nanoseconds from the pipeline's start.
    pub pts_ns: u64,
    /// Whether the buffer is a keyframe (no DELTA_UNIT flag).
    pub keyframe: bool,
    /// Whether the buffer is a stream header (HEADER flag), e.g. what a muxer also puts in its caps.
    pub header: bool,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Frame {
    /// The media time in ticks of a `clock_rate` Hz clock.
    pub fn ticks(&self, clock_rate: u32) -> u64 {
        (u128::from(self.pts_ns) * u128::from(clock_rate) / 1_000_000_000) as u64
    }
}

/// Connects the appsink named `sink` of `pipeline` to a bounded channel; returns the receiver and the
/// counter of dropped frames.
pub fn appsink_frames(
    pipeline: &PipelineGuard,
    sink: &str,
    capacity: usize,
) -> Result<(mpsc::Receiver<Frame>, Arc<AtomicU64>), MediaError> {
    let element = pipeline.element(sink)?;
    let appsink = element.downcast::<gst_app::AppSink>().map_err(|_| MediaError::Build {
        role: sink.to_string(),
        message: "not an appsink".into(),
    })?;
    let (tx, rx) = mpsc::channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(map) = buffer.map_readable() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let frame = Frame {
                    pts_ns: buffer.pts().map(|t| t.nseconds()).unwrap_or(0),
                    keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    header: buffer.flags().contains(gst::BufferFlags::HEADER),
                    data: map.as_slice().to_vec(),
                };
                if tx.try_send(frame).is_err() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok((rx, dropped))
}

/// Pushes frames into the appsrc named `src` of `pipeline`.
#[derive(Clone)]
pub struct FramePusher {
    appsrc: gst_app::AppSrc,
}

impl FramePusher {
    /// The pusher for appsrc `src`.
    pub fn new(pipeline: &PipelineGuard, src: &str) -> Result<Self, MediaError> {
        let appsrc = pipeline
            .element(src)?
            .downcast::<gst_app::AppSrc>()
            .map_err(|_| MediaError::Build {
                role: src.to_string(),
                message: "not an appsrc".into(),
            })?;
        Ok(Self { appsrc })
    }

    /// The pusher for an appsrc found some other way (e.g. in a bin added to a running pipeline).
    pub fn from_appsrc(appsrc: gst_app::AppSrc) -> Self {
        Self { appsrc }
    }

    /// Pushes one buffer with timestamp `pts_ns`; false when the pipeline refuses it.
    pub fn push(&self, data: &[u8], pts_ns: u64) -> bool {
        let mut buffer = gst::Buffer::from_slice(data.to_vec());
        if let Some(buffer) = buffer.get_mut() {
            buffer.set_pts(gst::ClockTime::from_nseconds(pts_ns));
        }
        self.appsrc.push_buffer(buffer).is_ok()
    }

    /// Pushes a ready buffer (stream headers).
    pub fn push_buffer(&self, buffer: gst::Buffer) -> bool {
        self.appsrc.push_buffer(buffer).is_ok()
    }

    /// Pushes one buffer with presentation and decoding timestamps (streams with B-frames).
    pub fn push_with_dts(&self, data: &[u8], pts_ns: u64, dts_ns: u64, keyframe: bool) -> bool {
        let mut buffer = gst::Buffer::from_slice(data.to_vec());
        if let Some(buffer) = buffer.get_mut() {
            buffer.set_pts(gst::ClockTime::from_nseconds(pts_ns));
            buffer.set_dts(gst::ClockTime::from_nseconds(dts_ns));
            if !keyframe {
                buffer.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        self.appsrc.push_buffer(buffer).is_ok()
    }

    /// Ends the stream.
    pub fn end(&self) {
        let _ = self.appsrc.end_of_stream();
    }
}
