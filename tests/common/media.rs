//! GStreamer test sources and decoders that verify media as media: decoded frames and audio energy.

use sfu_gateway::media::frames::{FramePusher, appsink_frames};
use sfu_gateway::media::{Fragments, PipelineGuard};
use sfu_gateway::sfu::peer::OutFrame;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A live test source encoded by one of our pipeline fragments, frames on a channel.
pub struct EncodedSource {
    /// Keeps the pipeline running.
    pub guard: PipelineGuard,
    /// Encoded frames.
    pub frames: tokio::sync::mpsc::Receiver<sfu_gateway::media::frames::Frame>,
}

/// `videotestsrc` (moving ball, 320x240 at 30 fps) encoded by fragment `fragment` (`video-encode-vp8`,
/// `video-encode-h264`).
pub fn video_source(fragment: &str) -> EncodedSource {
    let fragments = Fragments::load(None).expect("built-in fragments");
    let encoder = &fragments.get(fragment).expect("fragment").description;
    let description = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! {encoder} ! \
         appsink name=sink sync=false"
    );
    start_source("test-video", &description)
}

/// A 440 Hz sine encoded to Opus by the `audio-encode-opus` fragment.
pub fn audio_source() -> EncodedSource {
    let fragments = Fragments::load(None).expect("built-in fragments");
    let encoder = &fragments.get("audio-encode-opus").expect("fragment").description;
    let description =
        format!("audiotestsrc is-live=true wave=sine freq=440 volume=0.5 ! {encoder} ! appsink name=sink sync=false");
    start_source("test-audio", &description)
}

/// A live source from a launch description whose encoded output is the appsink `sink`.
pub fn start_source(role: &str, description: &str) -> EncodedSource {
    let guard = PipelineGuard::parse(role, description).expect("source pipeline");
    let (frames, _dropped) = appsink_frames(&guard, "sink", 256).expect("appsink");
    guard.start().expect("start source");
    EncodedSource { guard, frames }
}

/// What a decoder has seen.
#[derive(Debug, Default, Clone)]
pub struct Decoded {
    /// Decoded video frames (or audio buffers).
    pub frames: u64,
    /// Bytes of the last decoded video frame (I420: width*height*3/2).
    pub last_frame_bytes: usize,
    /// Whether some decoded frame had varied luma (not a flat colour).
    pub varied_picture: bool,
    /// Audio samples decoded.
    pub samples: u64,
    /// Largest RMS of a decoded audio buffer, as a fraction of full scale.
    pub max_rms: f64,
}

/// Decodes frames pushed into it and records what came out.
pub struct Decoder {
    _guard: PipelineGuard,
    pusher: FramePusher,
    /// Results so far.
    pub decoded: Arc<Mutex<Decoded>>,
    /// Buffers pushed.
    pub pushed: Arc<AtomicU64>,
}

impl Decoder {
    /// A VP8 (`vp8`), AV1 (`av1`) or H.264 (`h264`) video decoder to raw I420.
    pub fn video(codec: &str) -> Decoder {
        let (caps, decode) = match codec {
            "vp8" => ("video/x-vp8", "vp8dec"),
            "vp9" => ("video/x-vp9", "vp9dec"),
            "av1" => ("video/x-av1,stream-format=obu-stream,alignment=tu", "av1parse ! av1dec"),
            _ => (
                "video/x-h264,stream-format=byte-stream,alignment=au",
                "h264parse ! avdec_h264",
            ),
        };
        let description = format!(
            "appsrc name=src is-live=true format=time caps=\"{caps}\" ! {decode} ! videoconvert ! \
             video/x-raw,format=I420 ! appsink name=sink sync=false"
        );
        Self::start("test-video-decoder", &description, false)
    }

    /// An Opus decoder to mono S16 at 48 kHz.
    pub fn opus() -> Decoder {
        let description = "appsrc name=src is-live=true format=time \
             caps=\"audio/x-opus,channel-mapping-family=(int)0,channels=(int)2,rate=(int)48000\" ! opusdec ! \
             audioconvert ! audioresample ! audio/x-raw,format=S16LE,channels=1,rate=48000 ! appsink name=sink sync=false";
        Self::start("test-audio-decoder", description, true)
    }

    fn start(role: &str, description: &str, audio: bool) -> Decoder {
        let guard = PipelineGuard::parse(role, description).expect("decoder pipeline");
        let pusher = FramePusher::new(&guard, "src").expect("appsrc");
        let (mut frames, _) = appsink_frames(&guard, "sink", 1024).expect("appsink");
        guard.start().expect("start decoder");
        let decoded = Arc::new(Mutex::new(Decoded::default()));
        let sink = decoded.clone();
        tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                let mut d = sink.lock().expect("decoded lock");
                d.frames += 1;
                if audio {
                    let samples: Vec<i16> = frame
                        .data
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    d.samples += samples.len() as u64;
                    if !samples.is_empty() {
                        let mean = samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len() as f64;
                        d.max_rms = d.max_rms.max(mean.sqrt() / 32768.0);
                    }
                } else {
                    d.last_frame_bytes = frame.data.len();
                    let luma = &frame.data[..frame.data.len() * 2 / 3];
                    let (min, max) = luma.iter().fold((255u8, 0u8), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
                    d.varied_picture |= max.saturating_sub(min) > 64;
                }
            }
        });
        Decoder {
            _guard: guard,
            pusher,
            decoded,
            pushed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Pushes one encoded frame with its media time in nanoseconds.
    pub fn push(&self, data: &[u8], pts_ns: u64) {
        if self.pusher.push(data, pts_ns) {
            self.pushed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The results once the decoder has caught up: its output stopped growing for 300 ms (at most 5 s).
    pub async fn settled(&self) -> Decoded {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut last = self.snapshot();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let now = self.snapshot();
            if now.frames == last.frames || tokio::time::Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// A copy of the results.
    pub fn snapshot(&self) -> Decoded {
        self.decoded.lock().expect("decoded lock").clone()
    }
}

/// Feeds an encoded source into a published track until the task is aborted.
pub fn pump(
    mut source: EncodedSource,
    peer_sender: tokio::sync::mpsc::Sender<OutFrame>,
    track: &str,
    clock: u32,
) -> tokio::task::JoinHandle<()> {
    let track = track.to_string();
    tokio::spawn(async move {
        let _keep = &source.guard;
        while let Some(frame) = source.frames.recv().await {
            let out = OutFrame {
                track: track.clone(),
                rtp_time: frame.ticks(clock),
                data: frame.data,
                rid: None,
                capture: None,
            };
            let _ = peer_sender.try_send(out);
        }
    })
}
