//! The GStreamer pipeline of an egress: a compositor and an audio mixer that run on the clock whether or not
//! they have inputs (`force-live`), so the destination gets a valid stream — a black picture, silence — from
//! the first second, and audio-only or video-only sources still give both; encoded H.264 + AAC with the
//! fragments of `pipelines/` and muxed to FLV once for every output. The sources are added to it while it
//! plays, one branch per track (`branch.rs`).

use super::store::VideoOut;
use crate::media::fragments::suffixed;
use crate::media::{Fragments, MediaError};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// The raw audio every source is mixed as (`branch.rs` measures its level in this format).
pub const AUDIO_CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2";

/// The launch description of an egress pipeline: the compositor `mix` and the audio mixer `amix` take the
/// sources' branches; the muxed FLV comes out of the appsink `flv` (each output has its own pipeline, see
/// `output.rs`). The compositor, the mixer and the muxer wait up to `jitter` for a late input.
pub fn describe(fragments: &Fragments, video: VideoOut, jitter: std::time::Duration) -> Result<String, MediaError> {
    let latency = jitter.as_nanos();
    let fragment = |name: &str, suffix: &str| {
        fragments
            .get(name)
            .map(|f| suffixed(&f.description, suffix))
            .ok_or_else(|| MediaError::Build {
                role: "egress".into(),
                message: format!("no fragment {name}"),
            })
    };
    let (w, h, fps) = (video.width, video.height, video.fps);
    // I420 end to end: decoders give it and x264 takes it, so the compositor never converts (its default
    // would be AYUV: two full-frame conversions per frame, most of an egress's CPU).
    //
    // No live test sources keep the mixers going: `force-live` makes each one produce its output on the clock
    // (the black background, silence) when an input is late or there is none, and `async=false` on the sink
    // lets the pipeline reach PLAYING without a first buffer (so the running time the sources are stamped
    // with starts at once). A live slate and silence source under the mixers cost ~7 % of an egress's CPU:
    // two more threads, and every output frame waited for both kinds of input.
    let raw = format!("video/x-raw,format=I420,width={w},height={h}");
    let d = format!(
        "compositor name=mix background=black force-live=true latency={latency} ! \
         capsfilter caps=\"{raw},framerate={fps}/1\" ! \
         {} ! h264parse ! flvmux name=mux streamable=true latency={latency} ! \
         appsink name=flv sync=false async=false \
         audiomixer name=amix force-live=true latency={latency} ! \
         {} ! aacparse ! mux.",
        fragment("video-encode-h264", "v")?,
        fragment("audio-encode-aac", "a")?,
    );
    Ok(d)
}

/// Keeps the mixers' output timestamps increasing: drops a buffer without a timestamp or not after the
/// previous one. With `force-live`, GStreamer 1.22's mixers can put out such a buffer around the moment a
/// source's pad is added while they run on their own clock; it reached the FLV as a frame stamped with the
/// previous frame's time, which the MP4 muxer of a file output refuses ("Buffer has no PTS").
pub fn keep_timestamps_increasing(pipeline: &gst::Pipeline) {
    for name in ["mix", "amix"] {
        let Some(pad) = pipeline.by_name(name).and_then(|e| e.static_pad("src")) else {
            continue;
        };
        let last = AtomicU64::new(u64::MAX);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let previous = last.load(Ordering::Relaxed);
            match buffer.pts().map(|t| t.nseconds()) {
                Some(pts) if previous == u64::MAX || pts > previous => {
                    last.store(pts, Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                }
                pts => {
                    tracing::debug!(
                        mixer = name,
                        ?pts,
                        previous,
                        "egress: dropped an output buffer out of time order"
                    );
                    gst::PadProbeReturn::Drop
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::PipelineGuard;
    use gstreamer_app as gst_app;

    #[test]
    fn the_mixers_and_the_muxer_wait_as_long_as_configured() {
        let fragments = crate::media::Fragments::load(None).expect("built-in fragments");
        let jitter = std::time::Duration::from_millis(40);
        let description = describe(&fragments, VideoOut::default(), jitter).expect("description");
        let guard = PipelineGuard::parse("jitter-test", &description).expect("pipeline");
        for name in ["mix", "amix", "mux"] {
            let latency: u64 = guard.element(name).unwrap().property("latency");
            assert_eq!(latency, 40_000_000, "{name}");
        }
    }

    #[test]
    fn buffers_out_of_time_order_are_dropped() {
        // `identity name=mix` stands in for the compositor: the probe goes on its src pad.
        let guard = PipelineGuard::parse(
            "probe-test",
            "appsrc name=src format=time ! identity name=mix ! appsink name=out sync=false",
        )
        .expect("pipeline");
        keep_timestamps_increasing(guard.pipeline());
        let src = guard.element("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
        let out = guard.element("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
        let _ended = guard.start().expect("start");
        const MS: u64 = 1_000_000;
        for pts in [
            Some(0),
            None,
            Some(40 * MS),
            Some(40 * MS),
            Some(20 * MS),
            Some(80 * MS),
        ] {
            let mut buffer = gst::Buffer::with_size(4).unwrap();
            buffer
                .get_mut()
                .unwrap()
                .set_pts(pts.map(gst::ClockTime::from_nseconds));
            src.push_buffer(buffer).expect("push");
        }
        src.end_of_stream().expect("eos");
        let mut seen = Vec::new();
        while let Some(sample) = out.try_pull_sample(gst::ClockTime::from_seconds(5)) {
            seen.push(sample.buffer().and_then(|b| b.pts()).map(|t| t.nseconds() / MS));
        }
        assert_eq!(seen, vec![Some(0), Some(40), Some(80)]);
    }
}
