//! One source track inside a running egress pipeline: its own appsrc and decoder (and resampler for audio),
//! added while the pipeline plays and linked to a request pad of the compositor `mix` or the audio mixer
//! `amix`; placed in its layout cell, moved when the layout changes, taken out when the track leaves. Each
//! branch decodes on its appsrc's streaming thread (no `queue` after it: that was a second thread and hand-off
//! per frame, ~15 % of an egress's context switches); the compositor scales each video into its cell, keeping
//! its aspect ratio (a pad property, so a new layout applies at the next output frame, with no renegotiation).
//!
//! The compositor scales with a linear resampler rather than its default cubic one: for the common grid cell of
//! exactly half the source (a 720p source in a 2 x 2 grid of a 720p output) GStreamer then takes its 2 x 2
//! average in ORC, and otherwise a 4-tap filter instead of 8 for a 2:1 reduction. Its cubic path gathers every
//! tap's input byte in a scalar loop: that loop was ~15 % of a 3-participant composite's CPU. A video shown at
//! its own size gets no resampler setting at all: with one, the compositor would convert (copy) every frame
//! even when nothing is scaled.

use super::decode_watch::DecodeWatch;
use super::layout::Cell;
use super::pipeline::AUDIO_CAPS;
use crate::media::MediaError;
use crate::media::frames::FramePusher;
use crate::sfu::peer::Codec;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A decoding branch of one track.
pub struct Branch {
    bin: gst::Bin,
    /// The mixer's request pad it feeds.
    pad: gst::Pad,
    mixer: gst::Element,
    pusher: FramePusher,
    /// The audio's loudness (audio only), see [`Level`].
    level: Option<Level>,
    /// The frames the decoder has not put out yet (video only), see [`DecodeWatch`].
    watch: Option<Arc<Mutex<DecodeWatch>>>,
    /// The size of the video's cell, for [`set_scaling`] (updated by `place`, read on new caps too).
    cell_size: Arc<Mutex<(u32, u32)>>,
}

/// The loudness of an audio branch: the mean square of its samples (full scale = 1), smoothed over about
/// 300 ms, written by the branch's streaming thread and read by the session.
#[derive(Clone, Default)]
pub struct Level(Arc<AtomicU64>);

impl Level {
    /// The current smoothed mean square.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    /// Folds in one buffer of S16 samples.
    fn add(&self, samples: &[u8]) {
        let n = samples.len() / 2;
        if n == 0 {
            return;
        }
        let sum: f64 = samples
            .chunks_exact(2)
            .map(|b| {
                let v = f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0;
                v * v
            })
            .sum();
        // 10-20 ms buffers: a weight of 0.05 is a time constant of a few hundred ms.
        let smoothed = self.get() * 0.95 + sum / n as f64 * 0.05;
        self.0.store(smoothed.to_bits(), Ordering::Relaxed);
    }
}

fn build_error(message: impl Into<String>) -> MediaError {
    MediaError::Build {
        role: "egress".into(),
        message: message.into(),
    }
}

/// The launch description of a branch for `codec`.
fn describe(codec: Codec) -> String {
    let src = "appsrc name=src is-live=true format=time";
    match codec {
        Codec::Vp8 => format!("{src} caps=video/x-vp8 ! vp8dec"),
        Codec::Vp9 => format!("{src} caps=video/x-vp9 ! vp9dec"),
        Codec::Av1 => {
            format!("{src} caps=\"video/x-av1,stream-format=obu-stream,alignment=tu\" ! av1parse ! av1dec")
        }
        Codec::H264 => {
            format!("{src} caps=\"video/x-h264,stream-format=byte-stream,alignment=au\" ! h264parse ! avdec_h264")
        }
        Codec::Opus => format!(
            "{src} caps=\"audio/x-opus,channel-mapping-family=(int)0,channels=(int)2,rate=(int)48000\" ! \
             opusdec plc=true ! audioconvert ! audioresample ! capsfilter caps=\"{AUDIO_CAPS}\""
        ),
    }
}

impl Branch {
    /// Adds a branch for `codec` to the playing `pipeline` (video into `cell` of the compositor `mix`, audio
    /// into the mixer `amix`).
    pub fn add(pipeline: &gst::Pipeline, codec: Codec, cell: Cell) -> Result<Self, MediaError> {
        let video = codec != Codec::Opus;
        let mixer_name = if video { "mix" } else { "amix" };
        let mixer = pipeline
            .by_name(mixer_name)
            .ok_or_else(|| build_error(format!("no {mixer_name} in the pipeline")))?;
        let bin = gst::parse::bin_from_description(&describe(codec), true)
            .map_err(|e| build_error(format!("branch for {codec:?}: {e}")))?;
        let appsrc = bin
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| build_error("branch without its appsrc"))?;
        let src = bin
            .static_pad("src")
            .ok_or_else(|| build_error("branch without a src pad"))?;
        let pad = mixer
            .request_pad_simple("sink_%u")
            .ok_or_else(|| build_error(format!("{mixer_name} gave no pad")))?;
        pipeline
            .add(&bin)
            .map_err(|e| build_error(format!("adding the branch: {e}")))?;
        let level = (!video).then(|| {
            let level = Level::default();
            let writer = level.clone();
            src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(buffer) = info.buffer() {
                    if let Ok(map) = buffer.map_readable() {
                        writer.add(map.as_slice());
                    }
                }
                gst::PadProbeReturn::Ok
            });
            level
        });
        let watch = video.then(|| {
            // The bin's src pad is the decoder's: every decoded picture passes it.
            let watch = Arc::new(Mutex::new(DecodeWatch::default()));
            let decoded = watch.clone();
            src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                    decoded
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .decoded(pts.nseconds());
                }
                gst::PadProbeReturn::Ok
            });
            watch
        });
        let cell_size = Arc::new(Mutex::new((cell.width, cell.height)));
        if video {
            // A new decoded size (the first caps, a resolution change) may start or end the scaling.
            let (mixer_pad, cell_size) = (pad.clone(), cell_size.clone());
            src.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if let Some(gst::EventView::Caps(caps)) = info.event().map(|e| e.view()) {
                    let cell = *cell_size.lock().unwrap_or_else(|e| e.into_inner());
                    set_scaling(&mixer_pad, size_of(caps.caps()), cell);
                }
                gst::PadProbeReturn::Ok
            });
        }
        let branch = Self {
            bin,
            pad,
            mixer,
            pusher: FramePusher::from_appsrc(appsrc),
            level,
            watch,
            cell_size,
        };
        if let Err(e) = src.link(&branch.pad) {
            branch.remove(pipeline);
            return Err(build_error(format!("linking the branch: {e}")));
        }
        if video {
            // Scaled into its cell with black bars rather than stretched.
            branch.pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
            branch.place(cell);
        }
        if let Err(e) = branch.bin.sync_state_with_parent() {
            branch.remove(pipeline);
            return Err(build_error(format!("starting the branch: {e}")));
        }
        Ok(branch)
    }

    /// Moves (and rescales) the video to `cell`.
    pub fn place(&self, cell: Cell) {
        self.pad.set_property("xpos", cell.x as i32);
        self.pad.set_property("ypos", cell.y as i32);
        self.pad.set_property("width", cell.width as i32);
        self.pad.set_property("height", cell.height as i32);
        *self.cell_size.lock().unwrap_or_else(|e| e.into_inner()) = (cell.width, cell.height);
        set_scaling(&self.pad, self.decoded_size(), (cell.width, cell.height));
    }

    /// The size of the decoded video (what the source currently sends), once known.
    pub fn decoded_size(&self) -> Option<(u32, u32)> {
        size_of(self.bin.static_pad("src")?.current_caps()?.as_ref())
    }

    /// The audio's loudness; `None` for video.
    pub fn level(&self) -> Option<&Level> {
        self.level.as_ref()
    }

    /// Hands one encoded frame to the branch, to be presented at running time `pts_ns`; returns how many
    /// earlier frames the decoder could not decode since the last push (0 for audio).
    pub fn push(&self, data: &[u8], pts_ns: u64) -> u64 {
        let undecoded = self.watch.as_ref().map_or(0, |watch| {
            let mut watch = watch.lock().unwrap_or_else(|e| e.into_inner());
            watch.sent(pts_ns);
            watch.take_undecoded()
        });
        self.pusher.push(data, pts_ns);
        undecoded
    }

    /// Stops the branch and takes it out of the pipeline; the mixers go on with the others.
    pub fn remove(self, pipeline: &gst::Pipeline) {
        // Stopped first, so its streaming thread is gone before the link goes (an unlinked push would be a
        // "not-linked" error that stops the whole pipeline).
        let _ = self.bin.set_state(gst::State::Null);
        if let Some(src) = self.bin.static_pad("src") {
            let _ = src.unlink(&self.pad);
        }
        self.mixer.release_request_pad(&self.pad);
        let _ = pipeline.remove(&self.bin);
    }
}

/// The width and height of raw video caps.
fn size_of(caps: &gst::CapsRef) -> Option<(u32, u32)> {
    let s = caps.structure(0)?;
    let (w, h) = (s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?);
    Some((w as u32, h as u32))
}

/// Sets the compositor pad `pad` of a `source`-sized video in a `cell`-sized cell to scale with the linear
/// resampler, or to no converter setting when the video fills its cell at its own size (see the module doc).
/// The property is left alone when it already says so (setting it rebuilds the pad's converter).
fn set_scaling(pad: &gst::Pad, source: Option<(u32, u32)>, cell: (u32, u32)) {
    let unscaled = source == Some(cell);
    let current = pad.property::<Option<gst::Structure>>("converter-config");
    if unscaled == current.is_none() {
        return;
    }
    let config = (!unscaled).then(|| {
        let mut scaling = gst_video::VideoConverterConfig::new();
        // The enum type is required: an integer or a string would be silently ignored.
        scaling.set_resampler_method(gst_video::VideoResamplerMethod::Linear);
        gst::Structure::from(scaling)
    });
    pad.set_property("converter-config", config);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The I420 frame `description` puts out at its appsink `out`, with its compositor `mix`'s pad `sink_0`
    /// made to scale linearly if `linear`.
    fn frame(description: &str, linear: bool) -> Vec<u8> {
        crate::media::init().expect("gstreamer");
        let pipeline = gst::parse::launch(description)
            .expect("parse")
            .downcast::<gst::Pipeline>()
            .expect("a pipeline");
        if linear {
            let mix = pipeline.by_name("mix").expect("mix");
            let pad = mix.static_pad("sink_0").expect("sink_0");
            set_scaling(&pad, Some((1280, 720)), (640, 360));
        }
        let sink = pipeline
            .by_name("out")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .expect("appsink");
        pipeline.set_state(gst::State::Playing).expect("play");
        let sample = sink.pull_sample().expect("a frame");
        let data = sample.buffer().expect("buffer").map_readable().expect("map").to_vec();
        pipeline.set_state(gst::State::Null).expect("stop");
        data
    }

    /// Linear scaling is ORC's 2 x 2 average for a cell half the source's size (the compositor's default
    /// cubic filter is far from it on a zone plate: its 8 taps reach well beyond the 2 x 2 block).
    #[test]
    fn a_half_size_cell_is_the_two_by_two_average_of_the_source() {
        let source = "videotestsrc pattern=zone-plate kx2=20 ky2=20 kt=1 num-buffers=1 ! \
                      video/x-raw,format=I420,width=1280,height=720,framerate=30/1";
        let input = frame(&format!("{source} ! appsink name=out"), false);
        let scaled = |linear| {
            let description = format!(
                "{source} ! mix.sink_0 compositor name=mix background=black sink_0::width=640 sink_0::height=360 ! \
                 video/x-raw,format=I420,width=640,height=360 ! appsink name=out"
            );
            frame(&description, linear)
        };
        // Luma: the 2 x 2 average of the source, rounded.
        let average: Vec<u8> = (0..360 * 640)
            .map(|i| {
                let (y, x) = (i / 640 * 2, i % 640 * 2);
                let sum: u32 = [(y, x), (y, x + 1), (y + 1, x), (y + 1, x + 1)]
                    .iter()
                    .map(|(y, x)| u32::from(input[y * 1280 + x]))
                    .sum();
                ((sum + 2) / 4) as u8
            })
            .collect();
        let off = |frame: &[u8]| {
            frame[..average.len()]
                .iter()
                .zip(&average)
                .filter(|(a, b)| a.abs_diff(**b) > 1)
                .count()
        };
        let (linear, cubic) = (off(&scaled(true)), off(&scaled(false)));
        assert!(
            linear < average.len() / 100,
            "{linear} luma samples off the 2 x 2 average"
        );
        assert!(
            cubic > average.len() / 10,
            "the default filter matched the average ({cubic} off)"
        );
    }

    /// A video at its own size leaves the pad without a converter setting (the compositor then maps the frame
    /// as it is, where any setting would make it convert, i.e. copy, every frame).
    #[test]
    fn only_a_scaled_video_gets_the_resampler_setting() {
        crate::media::init().expect("gstreamer");
        let mix = gst::ElementFactory::make("compositor").build().expect("compositor");
        let pad = mix.request_pad_simple("sink_%u").expect("pad");
        let config = || pad.property::<Option<gst::Structure>>("converter-config");
        set_scaling(&pad, None, (640, 360));
        assert!(config().is_some(), "unknown size: scaled until known");
        set_scaling(&pad, Some((640, 360)), (640, 360));
        assert!(config().is_none());
        set_scaling(&pad, Some((1280, 720)), (640, 360));
        let method = config().and_then(|c| {
            c.get::<gst_video::VideoResamplerMethod>("GstVideoConverter.resampler-method")
                .ok()
        });
        assert_eq!(method, Some(gst_video::VideoResamplerMethod::Linear));
    }

    fn tone(amplitude: f64) -> Vec<u8> {
        (0..960)
            .flat_map(|i| {
                let v = (amplitude * 32767.0 * (i as f64 * 0.1).sin()) as i16;
                v.to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn the_level_follows_the_loudness() {
        let level = Level::default();
        for _ in 0..200 {
            level.add(&tone(0.5));
        }
        // A sine of amplitude 0.5 has a mean square of 0.125.
        assert!((level.get() - 0.125).abs() < 0.01, "{}", level.get());
        for _ in 0..200 {
            level.add(&tone(0.0));
        }
        assert!(level.get() < 0.001, "{}", level.get());
        level.add(&[]);
    }
}
