//! The GStreamer legs of an RTMP ingest: AAC to Opus (always), and H.264 decode and re-encode (transcode
//! path). Each is a pipeline from an appsrc to an appsink, built from the fragments in `pipelines/`.

use super::flv::VideoCodec;
use crate::media::fragments::suffixed;
use crate::media::frames::{Frame, FramePusher, appsink_frames};
use crate::media::keyframes::EncoderKeyframes;
use crate::media::{Fragments, MediaError, PipelineGuard};
use tokio::sync::mpsc;

/// A running transcoder: push encoded input, receive encoded output.
pub struct Transcoder {
    _guard: PipelineGuard,
    pusher: FramePusher,
    /// The video encoder of each output (by simulcast layer), for keyframes on request.
    keyframes: Vec<(Option<String>, EncoderKeyframes)>,
    /// Encoded output frames, with their simulcast layer (`None`: a single output).
    pub output: mpsc::Receiver<(Option<String>, Frame)>,
}

/// One simulcast layer of a transcode: its rid and output size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The rid (`a` is the largest).
    pub rid: String,
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
}

/// `count` layers from `width`x`height` down, each half the size of the previous: rids `a`, `b`, `c`.
pub fn ladder(width: u32, height: u32, count: u8) -> Vec<Layer> {
    (0..count.clamp(1, 3))
        .map(|i| Layer {
            rid: char::from(b'a' + i).to_string(),
            width: ((width >> i) & !1).max(2),
            height: ((height >> i) & !1).max(2),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The appsrc and decoder for the coded video a publisher sends, up to raw frames. The FLV sequence header
/// is GStreamer's `codec_data` for H.264 (avcC) and H.265 (hvcC); AV1 temporal units carry their sequence
/// header OBU in keyframes, VP9 frames need nothing.
fn decode_input(codec: VideoCodec, record: &[u8]) -> String {
    let (caps, decode) = match codec {
        VideoCodec::Avc => (
            format!(
                "video/x-h264,stream-format=(string)avc,alignment=(string)au,codec_data=(buffer){}",
                hex(record)
            ),
            "h264parse ! avdec_h264",
        ),
        VideoCodec::Hevc => (
            format!(
                "video/x-h265,stream-format=(string)hvc1,alignment=(string)au,codec_data=(buffer){}",
                hex(record)
            ),
            "h265parse ! avdec_h265",
        ),
        VideoCodec::Av1 => (
            "video/x-av1,stream-format=(string)obu-stream,alignment=(string)tu".to_string(),
            "av1parse ! av1dec",
        ),
        VideoCodec::Vp9 => ("video/x-vp9".to_string(), "vp9dec"),
    };
    format!("appsrc name=src format=time is-live=true do-timestamp=false caps=\"{caps}\" ! {decode}")
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
    /// Starts `description`; its appsinks are `sinks` (name, layer rid).
    fn start(role: &str, description: &str, sinks: &[(String, Option<String>)]) -> Result<Self, MediaError> {
        let guard = PipelineGuard::parse(role, description)?;
        let pusher = FramePusher::new(&guard, "src")?;
        let (tx, output) = mpsc::channel(512);
        let mut keyframes = Vec::new();
        for (sink, rid) in sinks {
            // The fragments name their encoder `encoder`; a layer's copy is suffixed with its rid.
            let encoder = match rid {
                Some(rid) => format!("encoder_{rid}"),
                None => "encoder".to_string(),
            };
            keyframes.push((rid.clone(), EncoderKeyframes::new(guard.element(&encoder).ok())));
            let (mut frames, _dropped) = appsink_frames(&guard, sink, 512)?;
            let (tx, rid) = (tx.clone(), rid.clone());
            // Merges the layers into one channel; ends when the pipeline or the receiver goes away.
            tokio::spawn(async move {
                while let Some(frame) = frames.recv().await {
                    if tx.send((rid.clone(), frame)).await.is_err() {
                        return;
                    }
                }
            });
        }
        guard.start()?;
        Ok(Self {
            _guard: guard,
            pusher,
            keyframes,
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
        Self::start("rtmp-audio", &description, &[("sink".into(), None)])
    }

    /// Video of `codec` (with its configuration record) decoded and re-encoded by the `encoder` fragment
    /// (`video-encode-h264` or `video-encode-vp8`).
    pub fn video_transcode(
        fragments: &Fragments,
        codec: VideoCodec,
        record: &[u8],
        encoder: &str,
    ) -> Result<Self, MediaError> {
        let encode = fragment(fragments, encoder, "rtmp-video")?;
        let description = format!(
            "{} ! {encode} ! appsink name=sink sync=false",
            decode_input(codec, record)
        );
        Self::start("rtmp-video", &description, &[("sink".into(), None)])
    }

    /// Video of `codec` decoded once and re-encoded as simulcast `layers` (scaled copies, one `encoder` each).
    /// The scalers cascade: each layer is scaled from the one above it, not from the input, so a 1080p
    /// input is read in full once (GStreamer's scaler costs about twice swscale per input pixel).
    pub fn video_layers(
        fragments: &Fragments,
        codec: VideoCodec,
        record: &[u8],
        layers: &[Layer],
        encoder: &str,
    ) -> Result<Self, MediaError> {
        let encode = fragment(fragments, encoder, "rtmp-video")?;
        let mut description = decode_input(codec, record);
        let mut sinks = Vec::new();
        let mut above: Option<&str> = None;
        for layer in layers {
            let scale = format!(
                "videoscale ! capsfilter caps=\"video/x-raw,width={},height={}\" ! tee name=scaled_{}",
                layer.width, layer.height, layer.rid
            );
            match above {
                None => description.push_str(&format!(" ! {scale}")),
                Some(rid) => description.push_str(&format!(
                    " scaled_{rid}. ! queue max-size-buffers=2 leaky=downstream ! {scale}"
                )),
            }
            description.push_str(&format!(
                " scaled_{rid}. ! queue max-size-buffers=2 leaky=downstream ! {} ! appsink name=sink_{rid} sync=false",
                suffixed(encode, &layer.rid),
                rid = layer.rid
            ));
            sinks.push((format!("sink_{}", layer.rid), Some(layer.rid.clone())));
            above = Some(&layer.rid);
        }
        Self::start("rtmp-video-layers", &description, &sinks)
    }

    /// Asks the encoder of layer `rid` (any layer's when `None` or unknown: a request without a rid is for
    /// the whole track) for a keyframe at its next frame; whether one was asked (at most one per encoder in
    /// 500 ms).
    pub fn force_keyframe(&self, rid: Option<&str>) -> bool {
        let layer = self.keyframes.iter().find(|(r, _)| r.as_deref() == rid);
        match layer {
            Some((_, keyframes)) => keyframes.ask(),
            None => self.keyframes.iter().fold(false, |asked, (_, k)| k.ask() | asked),
        }
    }

    /// Pushes one input frame.
    pub fn push(&self, data: &[u8], pts_ns: u64, dts_ns: u64, keyframe: bool) -> bool {
        self.pusher.push_with_dts(data, pts_ns, dts_ns, keyframe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_halves_and_names_layers() {
        assert_eq!(
            ladder(1280, 720, 3),
            vec![
                Layer {
                    rid: "a".into(),
                    width: 1280,
                    height: 720
                },
                Layer {
                    rid: "b".into(),
                    width: 640,
                    height: 360
                },
                Layer {
                    rid: "c".into(),
                    width: 320,
                    height: 180
                },
            ]
        );
        assert_eq!(ladder(640, 360, 9).len(), 3);
        assert_eq!(
            ladder(641, 361, 2)[1],
            Layer {
                rid: "b".into(),
                width: 320,
                height: 180
            }
        );
        assert_eq!(
            suffixed("a name=encoder ! b name=caps", "b"),
            "a name=encoder_b ! b name=caps_b"
        );
    }
}
