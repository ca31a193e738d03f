//! The AAC encoder's priming, taken out of the timestamps. libav's AAC-LC encoder (`avenc_aac`) starts every
//! stream with 1024 samples of priming (its `initial_padding`), and its packets keep the timestamps of their
//! input; FLV has no edit list to say so, so a player decodes the sound 21.3 ms after the picture it belongs
//! with (ffmpeg's own FLV output has the same lag). The encoder's packets are stamped 1024 samples earlier
//! instead, and the first one, which is all priming, is dropped.

use gstreamer as gst;
use gstreamer::prelude::*;

/// The priming of libav's AAC-LC encoder, in samples.
const PRIMING_SAMPLES: u64 = 1024;
/// The rate the egress encodes audio at (`pipelines/audio-encode-aac.gst`).
const RATE: u64 = 48_000;

/// Restamps the packets of the AAC encoder named `encoder` (only if it is `avenc_aac`, whose priming is
/// known): true if it did.
pub fn compensate(pipeline: &gst::Pipeline, encoder: &str) -> bool {
    let Some(element) = pipeline.by_name(encoder) else {
        return false;
    };
    if element.factory().is_none_or(|f| f.name() != "avenc_aac") {
        return false;
    }
    let Some(pad) = element.static_pad("src") else {
        return false;
    };
    let shift = gst::ClockTime::from_nseconds(PRIMING_SAMPLES * 1_000_000_000 / RATE);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(pts) = buffer.pts() else {
            return gst::PadProbeReturn::Ok;
        };
        // Within the priming: silence that plays before the stream's first sample.
        let Some(earlier) = pts.checked_sub(shift) else {
            return gst::PadProbeReturn::Drop;
        };
        let buffer = buffer.make_mut();
        buffer.set_pts(earlier);
        if let Some(dts) = buffer.dts() {
            buffer.set_dts(dts.checked_sub(shift).unwrap_or(gst::ClockTime::ZERO));
        }
        gst::PadProbeReturn::Ok
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::PipelineGuard;
    use gstreamer_app as gst_app;

    /// Encodes three seconds of stereo 48 kHz silence with a 1 kHz tone from 1.000 s to AAC, muxes it to FLV,
    /// demuxes and decodes it again: the millisecond at which the tone is heard.
    fn tone_heard_at(compensated: bool) -> f64 {
        let guard = PipelineGuard::parse(
            "priming-test",
            "appsrc name=src format=time caps=audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2 ! \
             audioconvert ! avenc_aac name=encoder_a bitrate=128000 ! aacparse ! flvmux streamable=true ! \
             flvdemux ! aacparse ! avdec_aac ! audioconvert ! \
             audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=1 ! appsink name=out sync=false",
        )
        .expect("pipeline");
        if compensated {
            assert!(compensate(guard.pipeline(), "encoder_a"));
        }
        let src = guard.element("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
        let out = guard.element("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
        let _ended = guard.start().expect("start");
        for chunk in 0..150u64 {
            // 20 ms chunks of 960 samples.
            let samples: Vec<u8> = (chunk * 960..(chunk + 1) * 960)
                .flat_map(|i| {
                    let on = (48_000..48_000 + 4_800).contains(&i);
                    let v = if on {
                        (16_000.0 * (2.0 * std::f64::consts::PI * 1_000.0 * i as f64 / 48_000.0).sin()) as i16
                    } else {
                        0
                    };
                    [v.to_le_bytes(), v.to_le_bytes()].concat()
                })
                .collect();
            let mut buffer = gst::Buffer::from_mut_slice(samples);
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(chunk * 20));
            b.set_duration(gst::ClockTime::from_mseconds(20));
            src.push_buffer(buffer).expect("push");
        }
        src.end_of_stream().expect("eos");
        while let Some(sample) = out.try_pull_sample(gst::ClockTime::from_seconds(5)) {
            let buffer = sample.buffer().unwrap();
            let start = buffer.pts().unwrap().nseconds() as f64 / 1e6;
            let map = buffer.map_readable().unwrap();
            let loud = map
                .chunks_exact(2)
                .position(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > 3_000);
            if let Some(i) = loud {
                return start + i as f64 / 48.0;
            }
        }
        panic!("the tone was never heard");
    }

    #[test]
    fn the_sound_is_heard_when_it_was_played_not_a_priming_later() {
        let plain = tone_heard_at(false);
        assert!((plain - 1_021.3).abs() < 3.0, "without: heard at {plain:.1} ms");
        let compensated = tone_heard_at(true);
        assert!(
            (compensated - 1_000.0).abs() < 3.0,
            "with: heard at {compensated:.1} ms"
        );
    }
}
