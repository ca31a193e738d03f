//! One live ingest: the session task that owns the SFU peer and the media legs of an ingress, survives
//! publisher reconnects within the grace period, and keeps its tracks alive during a gap.

use super::flv::{self, AudioTag, AvcConfig, VideoTag};
use super::media::{Transcoder, ladder};
use crate::ingress::store::{IngressSfu, IngressState, IngressStore, IngressTrack, VideoCodec, VideoMode};
use crate::media::Fragments;
use crate::media::frames::Frame;
use crate::rooms::{Participant, ParticipantSource, PublishedTrack};
use crate::sfu::api::TrackKind;
use crate::sfu::client::CallsClient;
use crate::sfu::peer::{Codec, LocalTrackSpec, OutFrame, Peer, PeerConfig, PeerEvent, PeerStreams};
use crate::supervisor::{SessionCtx, SessionError, SessionState};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// An Opus frame of 20 ms of silence, sent during a publisher gap so the SFU keeps the audio track.
const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// What the connection tasks send to the ingest session.
#[derive(Debug)]
pub enum IngestMsg {
    /// A publisher connection took over the stream.
    Attach,
    /// A video tag body, its RTMP timestamp (ms), and when it arrived.
    Video(u32, Bytes, Instant),
    /// An audio tag body, its RTMP timestamp (ms), and when it arrived.
    Audio(u32, Bytes, Instant),
    /// `onMetaData`.
    Metadata(serde_json::Value),
    /// The publisher connection ended.
    Detach(String),
}

/// What every ingest session needs.
#[derive(Clone)]
pub struct IngestDeps {
    /// The ingress registry.
    pub store: IngressStore,
    /// Calls API client.
    pub client: CallsClient,
    /// Pipeline fragments.
    pub fragments: Fragments,
    /// How long a dropped publisher may take to come back.
    pub grace: Duration,
    /// Peer settings.
    pub peer: PeerConfig,
    /// Rooms the ingests join.
    pub rooms: crate::rooms::Rooms,
    /// Event sink.
    pub webhooks: crate::webhooks::Webhooks,
    /// Admission costs.
    pub costs: crate::config::CostsConfig,
}

/// Extends 32-bit millisecond timestamps across wraps and keeps output time monotonic over reconnects.
#[derive(Default)]
struct Clock {
    last_raw: Option<u32>,
    wraps: u64,
    /// Added to the publisher's time so that a reconnect continues where the last connection stopped.
    offset_ms: i64,
    last_out_ms: i64,
    rebase: bool,
}

impl Clock {
    fn attach(&mut self) {
        self.last_raw = None;
        self.wraps = 0;
        self.rebase = true;
    }

    /// The output time in ms of a tag with RTMP timestamp `raw`.
    fn map(&mut self, raw: u32) -> i64 {
        if let Some(last) = self.last_raw {
            if raw < last && last - raw > u32::MAX / 2 {
                self.wraps += 1;
            }
        }
        self.last_raw = Some(raw);
        let extended = ((self.wraps << 32) | u64::from(raw)) as i64;
        if self.rebase {
            self.rebase = false;
            self.offset_ms = self.last_out_ms + 40 - extended;
        }
        let out = extended + self.offset_ms;
        self.last_out_ms = self.last_out_ms.max(out);
        out
    }
}

struct Video {
    /// The publisher's codec and configuration record.
    codec: flv::VideoCodec,
    record: Vec<u8>,
    /// For H.264: what the passthrough path needs (other codecs are always transcoded).
    avc: Option<AvcConfig>,
    transcoder: Option<Transcoder>,
    /// Frames since the last keyframe (replayed into a transcoder that starts mid-stream).
    gop: Vec<(i64, i64, bool, Bytes)>,
    /// Arrival times by output pts, to measure the gateway-added latency of the transcode path.
    arrivals: VecDeque<(u64, Instant)>,
    last_keyframe: Option<Vec<u8>>,
    /// The dts of the publisher's last keyframe (ms), for the keyframe interval.
    last_keyframe_dts: Option<i64>,
    /// The pts of the first frame pushed into the transcoder.
    first_transcoded_pts: Option<u64>,
    /// Output pts minus input pts of the transcoder (fixed by its first output frame).
    pts_shift: Option<i128>,
}

enum Audio {
    /// AAC, decoded and re-encoded to Opus.
    Aac(Transcoder),
    /// Opus (Enhanced RTMP), forwarded as it came.
    Opus,
}

struct Ingest {
    deps: IngestDeps,
    id: String,
    mode: VideoMode,
    /// Codec of the transcode path.
    codec: VideoCodec,
    video_track: String,
    audio_track: String,
    peer: Peer,
    clock: Clock,
    /// The instant of media time 0 on the continuous clock: a frame at `ms` was captured at `epoch + ms`
    /// (sent as each frame's capture time, so the SFU's sender reports line audio and video up).
    epoch: Option<Instant>,
    video: Option<Video>,
    audio: Option<Audio>,
    published: Vec<IngressTrack>,
    bytes_this_second: u64,
    /// Simulcast layers of the transcode path.
    layers: u8,
    /// Gateway-added video latency samples.
    latency: Latency,
    /// Picture size from `onMetaData` (the top layer's size).
    frame_size: Option<(u32, u32)>,
    /// The codec the video track was published with (it stays for the session, across reconnects).
    video_codec: Option<Codec>,
    /// Participant in the ingress's room while live (leaves when dropped).
    membership: Option<crate::rooms::Membership>,
}

fn ms_to_ns(ms: i64) -> u64 {
    (ms.max(0) as u64) * 1_000_000
}

impl Ingest {
    fn update_store(&self, change: impl FnOnce(&mut crate::ingress::store::Ingress)) {
        self.deps.store.update(&self.id, change);
    }

    async fn publish(&mut self, name: String, codec: Codec, rids: Vec<String>) {
        let kind = if codec == Codec::Opus { "audio" } else { "video" };
        match self
            .peer
            .publish(vec![LocalTrackSpec {
                name: name.clone(),
                codec,
                rids: rids.clone(),
            }])
            .await
        {
            Ok(_) => {
                if let Some(membership) = &self.membership {
                    let track_kind = if codec == Codec::Opus {
                        TrackKind::Audio
                    } else {
                        TrackKind::Video
                    };
                    // The room learns the simulcast layers too (a room egress picks one per cell size).
                    let track = PublishedTrack {
                        rids,
                        ..PublishedTrack::new(name.clone(), track_kind)
                    };
                    if let Err(e) = membership.add_track(track) {
                        tracing::warn!(error = %e, "cannot add the track to the room");
                    }
                }
                self.published.push(IngressTrack {
                    track_name: name,
                    kind: kind.into(),
                });
                let sfu = IngressSfu {
                    session_id: self.peer.session_id(),
                    tracks: self.published.clone(),
                };
                self.update_store(|i| i.sfu = Some(sfu));
            }
            Err(e) => tracing::warn!(error = %e, track = kind, "cannot publish the track"),
        }
    }

    fn send(&mut self, track: &str, rtp_time: u64, capture: Option<Instant>, data: Vec<u8>) -> bool {
        self.peer.send_frame(OutFrame {
            track: track.to_string(),
            rtp_time,
            data,
            rid: None,
            capture,
        })
    }

    /// The capture instant of media time `ms`. A tag arriving at `arrived` anchors the clock when there is no
    /// anchor yet or the old one no longer fits (its capture would be in the future or over a second old: a
    /// reconnect, or a publisher clock running off).
    fn capture_of(&mut self, ms: i64, arrived: Option<Instant>) -> Option<Instant> {
        let at = |epoch: Instant| {
            let offset = Duration::from_millis(ms.unsigned_abs());
            if ms >= 0 {
                epoch.checked_add(offset)
            } else {
                epoch.checked_sub(offset)
            }
        };
        if let Some(arrived) = arrived {
            let fits = self
                .epoch
                .and_then(at)
                .is_some_and(|c| c <= arrived && arrived - c < Duration::from_secs(1));
            if !fits {
                let offset = Duration::from_millis(ms.unsigned_abs());
                self.epoch = if ms >= 0 {
                    arrived.checked_sub(offset)
                } else {
                    arrived.checked_add(offset)
                };
            }
        }
        self.epoch.and_then(at)
    }

    async fn video_tag(&mut self, ts: u32, body: &[u8], arrived: Instant) {
        let tag = match flv::video_tag(body) {
            Ok(tag) => tag,
            Err(e) => {
                tracing::debug!(error = %e, "video tag dropped");
                self.update_store(|i| i.stats.dropped += 1);
                return;
            }
        };
        match tag {
            VideoTag::Config { codec, record } => self.video_config(codec, record).await,
            VideoTag::Frame {
                codec,
                keyframe,
                cts,
                data,
            } => {
                if self.video.as_ref().is_some_and(|v| v.codec == codec) {
                    self.video_frame(ts, keyframe, cts, data, arrived);
                } else {
                    // A frame before its sequence header, or of another codec than the header said.
                    self.update_store(|i| i.stats.dropped += 1);
                }
            }
            VideoTag::Ignored => {}
        }
    }

    /// A sequence header: (re)starts the video path for `codec` and publishes the track the first time.
    async fn video_config(&mut self, codec: flv::VideoCodec, record: &[u8]) {
        let avc = match codec {
            flv::VideoCodec::Avc => match AvcConfig::parse(record) {
                Ok(config) => Some(config),
                Err(e) => {
                    tracing::info!(error = %e, "bad AVC configuration from the publisher");
                    return;
                }
            },
            _ => None,
        };
        // (Published once: the track stays through codec changes and reconnects.)
        let first = self.video_codec.is_none();
        let layers = (self.layers > 1).then(|| {
            // The top layer is the input size, at most 720p (as WebRTC viewers use it).
            let (width, height) = self.frame_size.unwrap_or((1280, 720));
            let (width, height) = if height > 720 {
                (width * 720 / height, 720)
            } else {
                (width, height)
            };
            ladder(width, height, self.layers)
        });
        // Browser-decodable H.264 passes through in `auto` and `passthrough`; AV1 and VP9 only when
        // `passthrough` is asked (not every viewer decodes them); HEVC is transcoded whatever the mode. A track
        // keeps the codec it was published with.
        let browser_safe = avc.as_ref().is_some_and(AvcConfig::browser_profile);
        let passed_as = match codec {
            flv::VideoCodec::Av1 => Some(Codec::Av1),
            flv::VideoCodec::Vp9 => Some(Codec::Vp9),
            flv::VideoCodec::Avc | flv::VideoCodec::Hevc => None,
        }
        .filter(|_| self.mode == VideoMode::Passthrough && layers.is_none());
        let track_codec = passed_as.unwrap_or(match self.codec {
            VideoCodec::H264 => Codec::H264,
            VideoCodec::Vp8 => Codec::Vp8,
        });
        if self.video_codec.is_some_and(|published| published != track_codec) {
            tracing::warn!(
                codec = codec.name(),
                "the publisher changed codec; the track keeps its own: video dropped until it changes back"
            );
            self.video = None;
            return;
        }
        let browser_safe = browser_safe || passed_as.is_some();
        if !browser_safe && self.mode == VideoMode::Passthrough {
            tracing::info!(
                codec = codec.name(),
                "passthrough asked, but the stream needs a transcode"
            );
        }
        let transcode = passed_as.is_none()
            && (layers.is_some()
                || self.codec == VideoCodec::Vp8
                || self.mode == VideoMode::Transcode
                || !browser_safe);
        let transcoder = match &layers {
            Some(layers) => {
                Transcoder::video_layers(&self.deps.fragments, codec, record, layers, self.codec.fragment())
                    .map_err(|e| tracing::warn!(error = %e, "cannot start the layered transcoder"))
                    .ok()
            }
            None if transcode => self.start_transcoder(codec, record),
            None => None,
        };
        let rids: Vec<String> = layers.iter().flatten().map(|l| l.rid.clone()).collect();
        self.video = Some(Video {
            codec,
            record: record.to_vec(),
            avc,
            transcoder,
            gop: Vec::new(),
            arrivals: VecDeque::new(),
            last_keyframe: None,
            last_keyframe_dts: None,
            first_transcoded_pts: None,
            pts_shift: None,
        });
        self.report_path();
        self.update_store(|i| i.stats.input_video_codec = Some(codec.name().into()));
        if first {
            let name = self.video_track.clone();
            self.video_codec = Some(track_codec);
            self.publish(name, track_codec, rids).await;
        }
    }

    fn start_transcoder(&self, codec: flv::VideoCodec, record: &[u8]) -> Option<Transcoder> {
        match Transcoder::video_transcode(&self.deps.fragments, codec, record, self.codec.fragment()) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the video transcoder");
                None
            }
        }
    }

    fn report_path(&self) {
        let path = match &self.video {
            Some(v) if v.transcoder.is_some() => "transcode",
            Some(_) => "passthrough",
            None => return,
        };
        self.update_store(|i| i.stats.video_path = Some(path.into()));
    }

    fn video_frame(&mut self, ts: u32, keyframe: bool, cts: i32, data: &[u8], arrived: Instant) {
        let dts = self.clock.map(ts);
        let pts = dts + i64::from(cts);
        self.bytes_this_second += data.len() as u64;
        self.update_store(|i| i.stats.video_frames_in += 1);
        let Some(video) = self.video.as_mut() else { return };
        // B-frames (non-zero composition offsets) are not safe to pass to WebRTC players: switch to transcode.
        if cts != 0 && self.mode == VideoMode::Auto && video.transcoder.is_none() {
            tracing::info!("the stream has B-frames: switching to transcode");
            video.transcoder =
                Transcoder::video_transcode(&self.deps.fragments, video.codec, &video.record, self.codec.fragment())
                    .map_err(|e| tracing::warn!(error = %e, "cannot start the video transcoder"))
                    .ok();
            video.first_transcoded_pts = video.gop.first().map(|(pts, ..)| ms_to_ns(*pts));
            if let Some(transcoder) = &video.transcoder {
                for (pts, dts, key, data) in &video.gop {
                    transcoder.push(data, ms_to_ns(*pts), ms_to_ns(*dts), *key);
                }
            }
            self.report_path();
        }
        let Some(video) = self.video.as_mut() else { return };
        if keyframe {
            video.gop.clear();
            let interval = video.last_keyframe_dts.map(|last| dts - last).filter(|ms| *ms > 0);
            video.last_keyframe_dts = Some(dts);
            if let Some(ms) = interval {
                metrics::histogram!("rtmp_ingest_keyframe_interval_seconds").record(ms as f64 / 1000.0);
                self.update_store(|i| i.stats.keyframe_interval_ms = Some(ms as u64));
            }
        }
        let Some(video) = self.video.as_mut() else { return };
        let completed = (keyframe && video.codec == flv::VideoCodec::Av1)
            .then(|| flv::av1_with_sequence_header(&video.record, data))
            .flatten();
        let data = completed.as_deref().unwrap_or(data);
        video.gop.push((pts, dts, keyframe, Bytes::copy_from_slice(data)));
        if let Some(transcoder) = &video.transcoder {
            video.first_transcoded_pts.get_or_insert(ms_to_ns(pts));
            video.arrivals.push_back((ms_to_ns(pts), arrived));
            if video.arrivals.len() > 256 {
                video.arrivals.pop_front();
            }
            if !transcoder.push(data, ms_to_ns(pts), ms_to_ns(dts), keyframe) {
                self.update_store(|i| i.stats.dropped += 1);
            }
            return;
        }
        let payload = if video.codec == flv::VideoCodec::Vp9 && self.video_codec == Some(Codec::Vp9) {
            // VP9 passed through: the frame (or superframe) as it came, if it starts like one (frame marker).
            if data.first().is_none_or(|b| b >> 6 != 0b10) {
                tracing::debug!("malformed VP9 frame dropped");
                self.update_store(|i| i.stats.dropped += 1);
                return;
            }
            data.to_vec()
        } else if video.codec == flv::VideoCodec::Av1 && self.video_codec == Some(Codec::Av1) {
            // AV1 passed through: the temporal unit as it came (its sequence header completed on keyframes),
            // once its OBUs add up (the packetizer would fail the whole SFU session on a malformed one).
            if flv::av1_obus(data).is_none() {
                tracing::debug!("malformed AV1 temporal unit dropped");
                self.update_store(|i| i.stats.dropped += 1);
                return;
            }
            data.to_vec()
        } else {
            let Some(avc) = &video.avc else {
                // Not passthrough-able and its transcoder did not start.
                self.update_store(|i| i.stats.dropped += 1);
                return;
            };
            match avc.to_annex_b(data, keyframe) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::debug!(error = %e, "video frame dropped");
                    self.update_store(|i| i.stats.dropped += 1);
                    return;
                }
            }
        };
        if keyframe {
            video.last_keyframe = Some(payload.clone());
        }
        let track = self.video_track.clone();
        let capture = self.capture_of(pts, Some(arrived));
        let sent = self.send(&track, (pts.max(0) as u64) * 90, capture, payload);
        self.latency.record("passthrough", arrived);
        self.count_sent(true, sent);
    }

    fn transcoded_video(&mut self, rid: Option<String>, mut frame: Frame) {
        let Some(video) = self.video.as_mut() else { return };
        // Encoders shift timestamps (x264enc by ~1000 hours, to keep DTS positive): the first output frame
        // is the first input frame, which gives the shift to undo.
        let first_in = video.first_transcoded_pts.unwrap_or(0);
        let shift = *video
            .pts_shift
            .get_or_insert(i128::from(frame.pts_ns) - i128::from(first_in));
        frame.pts_ns = (i128::from(frame.pts_ns) - shift).max(0) as u64;
        // Latency is measured on the top layer (or the single output).
        let top = rid.as_deref().is_none_or(|r| r == "a");
        let mut latency = None;
        while let Some((pts, arrived)) = video.arrivals.front().copied().filter(|_| top) {
            if pts > frame.pts_ns {
                break;
            }
            video.arrivals.pop_front();
            if pts == frame.pts_ns {
                latency = Some(arrived);
            }
        }
        if frame.keyframe && top {
            video.last_keyframe = Some(frame.data.clone());
        }
        if let Some(arrived) = latency {
            self.latency.record("transcode", arrived);
        }
        let capture = self.capture_of((frame.pts_ns / 1_000_000) as i64, None);
        let sent = self.peer.send_frame(OutFrame {
            track: self.video_track.clone(),
            rtp_time: frame.ticks(90_000),
            data: frame.data,
            rid,
            capture,
        });
        self.count_sent(true, sent);
    }

    async fn audio_tag(&mut self, ts: u32, body: &[u8]) {
        let tag = match flv::audio_tag(body) {
            Ok(tag) => tag,
            Err(e) => {
                tracing::debug!(error = %e, "audio tag dropped");
                self.update_store(|i| i.stats.dropped += 1);
                return;
            }
        };
        match tag {
            AudioTag::AacConfig(config) => {
                let Some((rate, channels)) = flv::aac_rate_and_channels(config) else {
                    tracing::info!("bad AAC configuration from the publisher");
                    return;
                };
                match Transcoder::aac_to_opus(&self.deps.fragments, config, rate, channels) {
                    Ok(transcoder) => self.audio_started(Audio::Aac(transcoder), "aac").await,
                    Err(e) => tracing::warn!(error = %e, "cannot start the audio transcoder"),
                }
            }
            AudioTag::OpusConfig(head) => match flv::opus_channels(head) {
                Some(_) => self.audio_started(Audio::Opus, "opus").await,
                None => {
                    tracing::info!("unsupported Opus stream from the publisher (not mono or stereo)");
                    self.update_store(|i| i.stats.dropped += 1);
                }
            },
            AudioTag::AacFrame(data) => {
                let pts = self.audio_in(ts, data.len());
                if let Some(Audio::Aac(transcoder)) = &self.audio {
                    let ns = ms_to_ns(pts);
                    transcoder.push(data, ns, ns, true);
                }
            }
            AudioTag::OpusFrame(data) => {
                let pts = self.audio_in(ts, data.len());
                if let Some(Audio::Opus) = &self.audio {
                    // Already what WebRTC carries: the packet goes out as it came, at its FLV time.
                    let (track, capture) = (self.audio_track.clone(), self.capture_of(pts, None));
                    let sent = self.send(&track, (pts.max(0) as u64) * 48, capture, data.to_vec());
                    self.count_sent(false, sent);
                } else {
                    self.update_store(|i| i.stats.dropped += 1);
                }
            }
            AudioTag::Ignored => {}
        }
    }

    /// The audio path is ready: publishes the track the first time.
    async fn audio_started(&mut self, audio: Audio, codec: &'static str) {
        let first = self.audio.is_none();
        self.audio = Some(audio);
        self.update_store(|i| i.stats.input_audio_codec = Some(codec.into()));
        if first {
            let name = self.audio_track.clone();
            self.publish(name, Codec::Opus, Vec::new()).await;
        }
    }

    /// An audio frame of `bytes` at RTMP time `ts` arrived: its output time in ms (anchoring the capture clock).
    fn audio_in(&mut self, ts: u32, bytes: usize) -> i64 {
        let pts = self.clock.map(ts);
        self.capture_of(pts, Some(Instant::now()));
        self.bytes_this_second += bytes as u64;
        self.update_store(|i| i.stats.audio_frames_in += 1);
        pts
    }

    /// Counts a frame handed to the peer (`sent`) or dropped.
    fn count_sent(&self, video: bool, sent: bool) {
        self.update_store(|i| match (sent, video) {
            (true, true) => i.stats.video_frames_out += 1,
            (true, false) => i.stats.audio_frames_out += 1,
            (false, _) => i.stats.dropped += 1,
        });
    }

    fn transcoded_audio(&mut self, frame: Frame) {
        let track = self.audio_track.clone();
        // The Opus encoder's delay is not the capture's: the frame keeps the time of the AAC it came from.
        let capture = self.capture_of((frame.pts_ns / 1_000_000) as i64, None);
        let sent = self.send(&track, frame.ticks(48_000), capture, frame.data);
        self.count_sent(false, sent);
    }

    /// During a publisher gap: one silence frame and the last keyframe per tick, at advancing times.
    fn keep_alive(&mut self) {
        self.clock.last_out_ms += 1000;
        let now_ms = self.clock.last_out_ms.max(0) as u64;
        if self.audio.is_some() {
            let track = self.audio_track.clone();
            self.send(&track, now_ms * 48, None, OPUS_SILENCE.to_vec());
        }
        if let Some(keyframe) = self.video.as_ref().and_then(|v| v.last_keyframe.clone()) {
            let track = self.video_track.clone();
            self.send(&track, now_ms * 90, None, keyframe);
        }
    }
}

/// The gateway-added latency of video frames (FLV tag arrival → frame handed to the WebRTC peer): a
/// Prometheus histogram, and the last samples for the ingress's own p50/p95/p99.
#[derive(Default)]
struct Latency {
    samples: VecDeque<f64>,
}

impl Latency {
    const KEEP: usize = 1800; // about a minute of 30 fps video

    fn record(&mut self, path: &'static str, arrived: Instant) {
        let seconds = arrived.elapsed().as_secs_f64();
        metrics::histogram!("rtmp_ingest_added_latency_seconds", "path" => path).record(seconds);
        if self.samples.len() == Self::KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(seconds * 1000.0);
    }

    fn quantiles(&self) -> Option<[f64; 3]> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some([at(0.5), at(0.95), at(0.99)])
    }
}

impl Ingest {
    /// The SFU asks for a keyframe of the video (layer `rid`): a new subscriber, a simulcast layer switch, or
    /// loss. A transcode makes one at its next frame; passed-through video has to wait for the publisher's
    /// next keyframe (RTMP has no way to ask for one).
    fn keyframe_requested(&self, rid: Option<&str>) {
        match self.video.as_ref().and_then(|v| v.transcoder.as_ref()) {
            Some(transcoder) => {
                let asked = transcoder.force_keyframe(rid);
                tracing::debug!(?rid, asked, "keyframe requested by the SFU: asked of the encoder");
            }
            None => tracing::debug!(
                ?rid,
                "keyframe requested by the SFU: passthrough, waiting for the publisher's"
            ),
        }
    }
}

async fn recv_frame(transcoder: Option<&mut Transcoder>) -> Option<(Option<String>, Frame)> {
    match transcoder {
        Some(t) => t.output.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs an ingest session until the stream ends (publisher gone past the grace) or the session is stopped.
pub async fn run(
    ctx: SessionCtx,
    deps: IngestDeps,
    ingress: crate::ingress::store::Ingress,
    mut rx: mpsc::Receiver<IngestMsg>,
) -> Result<(), SessionError> {
    let (peer, PeerStreams { mut events, .. }) = Peer::connect(deps.client.clone(), deps.peer.clone()).await?;
    tracing::info!(ingress = %ingress.id, sfu_session = %peer.session_id(), "ingest started");
    let mut ingest = Ingest {
        id: ingress.id.clone(),
        mode: ingress.video_mode,
        codec: ingress.video_codec,
        video_track: format!("{}-video", ingress.name),
        audio_track: format!("{}-audio", ingress.name),
        deps,
        peer,
        clock: Clock::default(),
        epoch: None,
        video: None,
        audio: None,
        published: Vec::new(),
        bytes_this_second: 0,
        layers: ingress.layers,
        latency: Latency::default(),
        frame_size: None,
        video_codec: None,
        membership: None,
    };
    if let Some(room) = &ingress.room {
        let mut participant =
            Participant::new(ingress.id.clone(), ingest.peer.session_id(), ParticipantSource::Gateway);
        participant.name = Some(ingress.name.clone());
        match ingest.deps.rooms.join_gateway(room, participant) {
            Ok(membership) => ingest.membership = Some(membership),
            Err(e) => tracing::warn!(error = %e, "cannot join the ingress room"),
        }
    }
    ingest.update_store(|i| {
        i.state = IngressState::Live;
        i.reason = None;
        i.stats = Default::default();
        i.stats.connections = 1;
        i.sfu = None;
    });
    ctx.set_state(SessionState::Active);
    ingest.deps.webhooks.send(
        "ingress.started",
        serde_json::json!({"ingressId": ingress.id, "name": ingress.name, "room": ingress.room,
                           "sfu": {"sessionId": ingest.peer.session_id()}}),
    );
    let mut detached_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let grace = ingest.deps.grace;
    let outcome: Result<(), SessionError> = loop {
        let grace_over = async {
            match detached_at {
                Some(at) => tokio::time::sleep_until((at + grace).into()).await,
                None => std::future::pending().await,
            }
        };
        let video_out = recv_frame(ingest.video.as_mut().and_then(|v| v.transcoder.as_mut()));
        let audio_out = recv_frame(match ingest.audio.as_mut() {
            Some(Audio::Aac(transcoder)) => Some(transcoder),
            _ => None,
        });
        tokio::select! {
            () = ctx.cancel_token().cancelled() => break Ok(()),
            () = grace_over => {
                tracing::info!("publisher did not come back within the grace period");
                break Ok(());
            }
            message = rx.recv() => match message {
                Some(IngestMsg::Video(ts, body, arrived)) => ingest.video_tag(ts, &body, arrived).await,
                Some(IngestMsg::Audio(ts, body, _)) => ingest.audio_tag(ts, &body).await,
                Some(IngestMsg::Metadata(metadata)) => {
                    let size = |key: &str| metadata[key].as_f64().filter(|v| *v >= 16.0 && *v <= 8192.0);
                    if let (Some(width), Some(height)) = (size("width"), size("height")) {
                        ingest.frame_size = Some((width as u32, height as u32));
                    }
                    ingest.update_store(|i| i.metadata = Some(metadata));
                }
                Some(IngestMsg::Attach) => {
                    detached_at = None;
                    ingest.clock.attach();
                    ctx.set_state(SessionState::Active);
                    ingest.update_store(|i| {
                        i.state = IngressState::Live;
                        i.stats.connections += 1;
                    });
                    tracing::info!("publisher reconnected");
                }
                Some(IngestMsg::Detach(reason)) => {
                    tracing::info!(%reason, ?grace, "publisher disconnected; waiting for it to come back");
                    detached_at = Some(Instant::now());
                    ctx.set_state(SessionState::Reconnecting);
                    ingest.update_store(|i| i.state = IngressState::Reconnecting);
                }
                None => break Ok(()),
            },
            Some((rid, frame)) = video_out => ingest.transcoded_video(rid, frame),
            Some((_, frame)) = audio_out => ingest.transcoded_audio(frame),
            event = events.recv() => match event {
                Some(PeerEvent::Failed { reason }) => break Err(reason.into()),
                Some(PeerEvent::KeyframeRequested { track, rid }) if track == ingest.video_track => {
                    ingest.keyframe_requested(rid.as_deref());
                }
                Some(event) => tracing::debug!(?event, "peer event"),
                None => break Err("the SFU peer stopped".into()),
            },
            _ = tick.tick() => {
                if ingest.deps.store.get(&ingest.id).is_none() {
                    tracing::info!("the ingress was deleted: ending the stream");
                    break Ok(());
                }
                let bitrate = ingest.bytes_this_second * 8;
                ingest.bytes_this_second = 0;
                let latency = ingest.latency.quantiles();
                ingest.update_store(|i| {
                    i.stats.bitrate_bps = bitrate;
                    i.stats.added_latency_ms = latency;
                });
                if detached_at.is_some() {
                    ingest.keep_alive();
                }
            }
        }
    };
    let state = match &outcome {
        Ok(()) => IngressState::Ended,
        Err(_) => IngressState::Failed,
    };
    let reason = outcome.as_ref().err().map(|e| e.to_string());
    ingest.deps.webhooks.send(
        "ingress.ended",
        serde_json::json!({"ingressId": ingress.id, "name": ingress.name,
                           "state": if reason.is_some() { "failed" } else { "ended" }, "reason": reason}),
    );
    ingest.update_store(|i| {
        i.state = state;
        i.reason = reason;
        i.sfu = None;
    });
    tracing::info!("ingest ended");
    outcome
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn clock_wraps_and_continues_over_reconnects() {
        let mut clock = Clock::default();
        assert_eq!(clock.map(0), 0);
        assert_eq!(clock.map(1000), 1000);
        assert_eq!(clock.map(u32::MAX - 10), i64::from(u32::MAX) - 10);
        assert_eq!(clock.map(5), (1i64 << 32) + 5);
        let mut clock = Clock::default();
        clock.map(5000);
        clock.attach();
        // The new publisher starts again at 0: output continues after 5000.
        assert_eq!(clock.map(0), 5040);
        assert_eq!(clock.map(100), 5140);
    }
}
