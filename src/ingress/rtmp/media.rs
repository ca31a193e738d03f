//! The GStreamer legs of an RTMP ingest: AAC to Opus (always), and H.264 decode and re-encode (transcode
//! path). Each is a pipeline from an appsrc to an appsink, built from the fragments in `pipelines/`.

use crate::media::frames::{Frame, FramePusher, appsink_frames};
use crate::media::{Fragments, MediaError, PipelineGuard};
use tokio::sync::mpsc;

/// A running transcoder: push encoded input, receive encoded output.
pub struct Transcoder {
    _guard: PipelineGuard,
    pusher: FramePusher,
    /// Encoded output frames.
    pub output: mpsc::Receiver<Frame>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fragment<'a>(fragments: &'a Fragments, name: &str, role: &str) -> Result<&'a str, MediaError> {
    fragments
        .get(name)
        .map(|f| f.description.as_str())
        .ok_or_else(|| MediaError::Build {
            role: role.to_string(),
            message: format!("no fragment {name}"),
        })
}

impl Transcoder {
    fn start(role: &str, description: &str) -> Result<Self, MediaError> {
        let guard = PipelineGuard::parse(role, description)?;
        let pusher = FramePusher::new(&guard, "src")?;
        let (output, _dropped) = appsink_frames(&guard, "sink", 512)?;
        guard.start()?;
        Ok(Self {
            _guard: guard,
            pusher,
            output,
        })
    }

    /// AAC (raw, with its AudioSpecificConfig) to Opus 48 kHz.
    pub fn aac_to_opus(fragments: &Fragments, config: &[u8], rate: u32, channels: u8) -> Result<Self, MediaError> {
        let encode = fragment(fragments, "audio-encode-opus", "rtmp-audio")?;
        let description = format!(
            "appsrc name=src format=time is-live=true do-timestamp=false \
             caps=\"audio/mpeg,mpegversion=(int)4,stream-format=(string)raw,codec_data=(buffer){},rate=(int){rate},channels=(int){channels}\" ! \
             avdec_aac ! {encode} ! appsink name=sink sync=false",
            hex(config)
        );
        Self::start("rtmp-audio", &description)
    }

    /// H.264 (AVC, with its configuration record) decoded and re-encoded by `video-encode-h264`.
    pub fn h264_transcode(fragments: &Fragments, record: &[u8]) -> Result<Self, MediaError> {
        let encode = fragment(fragments, "video-encode-h264", "rtmp-video")?;
        let description = format!(
            "appsrc name=src format=time is-live=true do-timestamp=false \
             caps=\"video/x-h264,stream-format=(string)avc,alignment=(string)au,codec_data=(buffer){}\" ! \
             h264parse ! avdec_h264 ! {encode} ! appsink name=sink sync=false",
            hex(record)
        );
        Self::start("rtmp-video", &description)
    }

    /// Pushes one input frame.
    pub fn push(&self, data: &[u8], pts_ns: u64, dts_ns: u64, keyframe: bool) -> bool {
        self.pusher.push_with_dts(data, pts_ns, dts_ns, keyframe)
    }
}
