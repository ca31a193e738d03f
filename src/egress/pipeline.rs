//! The GStreamer pipeline of an egress: decode what arrives (VP8, H.264, Opus), composite it over a black
//! slate and mix it over silence (so the destination gets a valid stream from the first second, and
//! audio-only or video-only sources still give both), encode H.264 + AAC with the fragments of
//! `pipelines/`, and mux FLV once for every output.

use super::store::{AudioOut, VideoOut};
use crate::media::fragments::suffixed;
use crate::media::{Fragments, MediaError};

/// Jitter allowance of the compositor and mixer, in nanoseconds.
const LATENCY_NS: u64 = 150_000_000;

/// The launch description of an egress pipeline. Its appsrcs are `vp8`, `h264` and `opus`; the muxed FLV
/// comes out of the appsink `flv` (each output has its own pipeline, see `output.rs`).
pub fn describe(fragments: &Fragments, video: VideoOut, audio: AudioOut) -> Result<String, MediaError> {
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
    let raw = format!("video/x-raw,format=I420,width={w},height={h}");
    let d = format!(
        "compositor name=mix background=black latency={LATENCY_NS} ! capsfilter caps=\"{raw},framerate={fps}/1\" ! \
         {} ! h264parse ! flvmux name=mux streamable=true latency={LATENCY_NS} ! appsink name=flv sync=false \
         videotestsrc is-live=true pattern=black ! capsfilter caps=\"{raw},framerate={fps}/1\" ! mix. \
         appsrc name=vp8 is-live=true do-timestamp=true format=time caps=video/x-vp8 ! queue ! vp8dec ! \
         videoconvert ! videoscale ! capsfilter caps=\"{raw}\" ! mix. \
         appsrc name=h264 is-live=true do-timestamp=true format=time \
         caps=\"video/x-h264,stream-format=byte-stream,alignment=au\" ! queue ! h264parse ! avdec_h264 ! \
         videoconvert ! videoscale ! capsfilter caps=\"{raw}\" ! mix. \
         audiomixer name=amix latency={LATENCY_NS} ! {} ! aacparse ! mux. \
         audiotestsrc is-live=true wave=silence ! capsfilter caps=\"audio/x-raw,rate=48000,channels=2\" ! amix. \
         appsrc name=opus is-live=true do-timestamp=true format=time \
         caps=\"audio/x-opus,channel-mapping-family=(int)0,channels=(int)2,rate=(int)48000\" ! queue ! \
         opusdec plc=true ! audioconvert ! audioresample ! capsfilter caps=\"audio/x-raw,rate=48000,channels=2\" ! amix.",
        fragment("video-encode-h264", "v")?,
        fragment("audio-encode-aac", "a")?,
    );
    let _ = audio;
    Ok(d)
}
