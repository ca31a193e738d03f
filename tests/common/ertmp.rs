//! An Enhanced RTMP publisher for tests. No tool on this machine publishes E-RTMP (Debian 12's ffmpeg 5.1
//! cannot), so the test speaks it itself: rml_rtmp's client session over TCP for the RTMP part, GStreamer
//! encoders for the media, and the E-RTMP tag headers written here (FourCC `hvc1`/`av01`, `Opus`/`mp4a`).

use super::media::{EncodedSource, start_source};
use super::rtmp_client::{OPUS_HEAD, connect};
use gstreamer as gst;
use gstreamer::prelude::*;
use sfu_gateway::ingress::rtmp::flv::av1_obus;
use std::time::Duration;
use tokio::time::Instant;

/// The video codec the publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExVideo {
    /// H.265, sequence start = hvcC; coded frames alternate between CodedFrames and CodedFramesX.
    Hevc,
    /// AV1, sequence start = av1C; temporal units stripped of temporal delimiters and sequence headers
    /// (allowed: the sequence header then lives only in the record).
    Av1,
    /// [`ExVideo::Av1`] with the last frame before each keyframe (every 30th) replaced by a malformed
    /// temporal unit: an OBU whose size field runs past the data.
    Av1WithGarbage,
    /// VP9, sequence start = vpcC (as ffmpeg writes it: version and flags, then the record); frames as the
    /// encoder made them.
    Vp9,
    /// [`ExVideo::Vp9`] with the last frame before each keyframe (every 30th) replaced by bytes that are no
    /// VP9 frame (no frame marker).
    Vp9WithGarbage,
}

/// The audio codec the publisher sends (both as Enhanced RTMP audio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExAudio {
    /// `Opus`, sequence start = OpusHead, 20 ms packets.
    Opus,
    /// `mp4a`, sequence start = AudioSpecificConfig.
    Aac,
}

/// What the publisher sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// Video frames.
    pub video: u64,
    /// Audio frames.
    pub audio: u64,
}

fn video_source(video: ExVideo) -> EncodedSource {
    let raw = "videotestsrc is-live=true pattern=ball ! \
               video/x-raw,format=I420,width=320,height=240,framerate=30/1";
    let encode = match video {
        ExVideo::Hevc => {
            "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h265parse ! \
             video/x-h265,stream-format=hvc1,alignment=au"
        }
        ExVideo::Av1 | ExVideo::Av1WithGarbage => {
            "av1enc usage-profile=realtime cpu-used=9 keyframe-max-dist=30 ! \
             av1parse ! video/x-av1,stream-format=obu-stream,alignment=tu"
        }
        ExVideo::Vp9 | ExVideo::Vp9WithGarbage => {
            "vp9enc deadline=1 cpu-used=8 keyframe-max-dist=30 target-bitrate=500000 ! video/x-vp9"
        }
    };
    start_source(
        "ertmp-video",
        &format!("{raw} ! {encode} ! appsink name=sink sync=false"),
    )
}

fn audio_source(audio: ExAudio) -> EncodedSource {
    let encode = match audio {
        ExAudio::Opus => "opusenc frame-size=20 bitrate=64000",
        ExAudio::Aac => "avenc_aac ! aacparse ! audio/mpeg,stream-format=raw",
    };
    start_source(
        "ertmp-audio",
        &format!(
            "audiotestsrc is-live=true wave=sine freq=440 volume=0.5 ! audio/x-raw,rate=48000,channels=2 ! \
             {encode} ! appsink name=sink sync=false"
        ),
    )
}

/// The `codec_data` of the appsink's caps.
fn codec_data(source: &EncodedSource) -> Option<Vec<u8>> {
    let pad = source.guard.element("sink").ok()?.static_pad("sink")?;
    let caps = pad.current_caps()?;
    let buffer = caps.structure(0)?.get::<gst::Buffer>("codec_data").ok()?;
    let map = buffer.map_readable().ok()?;
    Some(map.as_slice().to_vec())
}

fn fourcc_header(first: u8, fourcc: &[u8; 4]) -> Vec<u8> {
    let mut header = vec![first];
    header.extend_from_slice(fourcc);
    header
}

/// The E-RTMP video tags of one encoded frame (the sequence start first when `record` is still to send).
fn video_tags(video: ExVideo, frame: &[u8], keyframe: bool, index: u64, record: &mut Option<Vec<u8>>) -> Vec<Vec<u8>> {
    const EX: u8 = 0x80;
    let frame_type: u8 = if keyframe { 1 << 4 } else { 2 << 4 };
    let mut tags = Vec::new();
    match video {
        ExVideo::Hevc => {
            if let Some(hvcc) = record.take() {
                tags.push([fourcc_header(EX | (1 << 4), b"hvc1"), hvcc].concat());
            }
            // CodedFrames (with a zero composition offset) and CodedFramesX in turn.
            let tag = if index % 2 == 0 {
                [
                    fourcc_header(EX | frame_type | 1, b"hvc1"),
                    vec![0, 0, 0],
                    frame.to_vec(),
                ]
                .concat()
            } else {
                [fourcc_header(EX | frame_type | 3, b"hvc1"), frame.to_vec()].concat()
            };
            tags.push(tag);
        }
        ExVideo::Av1 | ExVideo::Av1WithGarbage => {
            if video == ExVideo::Av1WithGarbage && index % 30 == 29 {
                // A frame OBU (type 6, size field present) claiming 32,767 bytes, followed by three.
                let garbage = vec![0x32, 0xff, 0xff, 0x01, 0xde, 0xad, 0x00];
                tags.push([fourcc_header(EX | frame_type | 1, b"av01"), garbage].concat());
                return tags;
            }
            let obus = av1_obus(frame).expect("whole OBUs from av1parse");
            if record.is_some() {
                let Some((_, sequence_header)) = obus.iter().find(|(t, _)| *t == 1) else {
                    return tags; // wait for a keyframe with its sequence header
                };
                record.take();
                // av1C: marker+version, profile/level, tier/depth/chroma, no presentation delay, configOBUs.
                let av1c = [&[0x81, 0x00, 0x0c, 0x00][..], sequence_header].concat();
                tags.push([fourcc_header(EX | (1 << 4), b"av01"), av1c].concat());
            }
            let kept: Vec<u8> = obus
                .iter()
                .filter(|(t, _)| *t != 1 && *t != 2)
                .flat_map(|(_, obu)| obu.iter().copied())
                .collect();
            tags.push([fourcc_header(EX | frame_type | 1, b"av01"), kept].concat());
        }
        ExVideo::Vp9 | ExVideo::Vp9WithGarbage => {
            if let Some(vpcc) = record.take() {
                tags.push([fourcc_header(EX | (1 << 4), b"vp09"), vpcc].concat());
            }
            let frame = if video == ExVideo::Vp9WithGarbage && index % 30 == 29 {
                &[0x00, 0xde, 0xad, 0xbe, 0xef][..]
            } else {
                frame
            };
            tags.push([fourcc_header(EX | frame_type | 1, b"vp09"), frame.to_vec()].concat());
        }
    }
    tags
}

/// Publishes test media to `rtmp://{addr}/live/{key}` in Enhanced RTMP for `duration`.
pub async fn publish(
    addr: &str,
    key: &str,
    video: Option<ExVideo>,
    audio: Option<ExAudio>,
    duration: Duration,
) -> Result<Sent, String> {
    let mut rtmp = connect(addr, key).await?;
    let mut video_in = video.map(video_source);
    let mut audio_in = audio.map(audio_source);
    let mut sent = Sent::default();
    let (mut video_record, mut audio_header_sent) = (None::<Vec<u8>>, false);
    // Each encoder has its own time base (x265enc starts at 1000 hours): both streams start at 0.
    let (mut video_base, mut audio_base) = (None::<u64>, None::<u64>);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let next_video = async {
            match video_in.as_mut() {
                Some(source) => source.frames.recv().await,
                None => std::future::pending().await,
            }
        };
        let next_audio = async {
            match audio_in.as_mut() {
                Some(source) => source.frames.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(frame) = next_video => {
                let (Some(kind), Some(source)) = (video, video_in.as_ref()) else { continue };
                if sent.video == 0 && video_record.is_none() {
                    if !frame.keyframe {
                        continue;
                    }
                    video_record = Some(match kind {
                        ExVideo::Hevc => codec_data(source).ok_or("no hvcC")?,
                        ExVideo::Av1 | ExVideo::Av1WithGarbage => Vec::new(), // from the first sequence header OBU
                        // vpcC v1: profile 0, level 3.0, 8 bits 4:2:0 (colocated), BT.709, no init data.
                        ExVideo::Vp9 | ExVideo::Vp9WithGarbage => vec![1, 0, 0, 0, 0, 30, 0x82, 1, 1, 1, 0, 0],
                    });
                }
                let ms = (frame.pts_ns.saturating_sub(*video_base.get_or_insert(frame.pts_ns)) / 1_000_000) as u32;
                let tags = video_tags(kind, &frame.data, frame.keyframe, sent.video, &mut video_record);
                if tags.is_empty() {
                    continue;
                }
                for tag in tags {
                    rtmp.send(true, ms, tag).await?;
                }
                sent.video += 1;
            }
            Some(frame) = next_audio => {
                let (Some(kind), Some(source)) = (audio, audio_in.as_ref()) else { continue };
                let fourcc = if kind == ExAudio::Opus { b"Opus" } else { b"mp4a" };
                if !audio_header_sent {
                    let header = match kind {
                        ExAudio::Opus => OPUS_HEAD.to_vec(),
                        ExAudio::Aac => codec_data(source).ok_or("no AudioSpecificConfig")?,
                    };
                    rtmp.send(false, 0, [fourcc_header(0x90, fourcc), header].concat()).await?;
                    audio_header_sent = true;
                }
                let ms = (frame.pts_ns.saturating_sub(*audio_base.get_or_insert(frame.pts_ns)) / 1_000_000) as u32;
                rtmp.send(false, ms, [fourcc_header(0x91, fourcc), frame.data].concat()).await?;
                sent.audio += 1;
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    Ok(sent)
}
