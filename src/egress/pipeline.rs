//! The GStreamer pipeline of an egress: a black slate under a compositor and silence under an audio mixer (so
//! the destination gets a valid stream from the first second, and audio-only or video-only sources still give
//! both), encoded H.264 + AAC with the fragments of `pipelines/` and muxed to FLV once for every output. The
//! sources are added to it while it plays, one branch per track (`branch.rs`).

use super::store::VideoOut;
use crate::media::fragments::suffixed;
use crate::media::{Fragments, MediaError};

/// The raw audio every source is mixed as (`branch.rs` measures its level in this format).
pub const AUDIO_CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2";

/// Jitter allowance of the compositor and mixer, in nanoseconds.
const LATENCY_NS: u64 = 150_000_000;

/// The launch description of an egress pipeline: the compositor `mix` and the audio mixer `amix` take the
/// sources' branches; the muxed FLV comes out of the appsink `flv` (each output has its own pipeline, see
/// `output.rs`).
pub fn describe(fragments: &Fragments, video: VideoOut) -> Result<String, MediaError> {
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
    // would be AYUV: two full-frame conversions per frame, most of an egress's CPU). The slate only has to
    // keep the output going: a 16x16 black corner over the compositor's black background, not a full frame
    // generated and copied 30 times a second.
    let raw = format!("video/x-raw,format=I420,width={w},height={h}");
    let d = format!(
        "compositor name=mix background=black latency={LATENCY_NS} ! capsfilter caps=\"{raw},framerate={fps}/1\" ! \
         {} ! h264parse ! flvmux name=mux streamable=true latency={LATENCY_NS} ! appsink name=flv sync=false \
         videotestsrc is-live=true pattern=black ! \
         capsfilter caps=\"video/x-raw,format=I420,width=16,height=16,framerate={fps}/1\" ! mix. \
         audiomixer name=amix latency={LATENCY_NS} ! {} ! aacparse ! mux. \
         audiotestsrc is-live=true wave=silence ! capsfilter caps=\"{AUDIO_CAPS}\" ! amix.",
        fragment("video-encode-h264", "v")?,
        fragment("audio-encode-aac", "a")?,
    );
    Ok(d)
}
