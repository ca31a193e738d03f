//! One WebRTC peer per SFU session, on str0m. A task owns the `Rtc`, its UDP socket and its timers; the
//! [`Peer`] handle talks to it with messages. Media goes in and out as whole frames (Opus packets, VP8
//! frames, H.264 access units in Annex-B) over bounded channels: when a channel is full the frame is
//! dropped and counted, never waited for.

pub mod clock;
mod task;

use crate::sfu::api::TrackKind;
use crate::sfu::client::{CallsClient, ClientError};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A codec the peer publishes or receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Opus, 48 kHz.
    Opus,
    /// VP8, 90 kHz.
    Vp8,
    /// H.264, 90 kHz.
    H264,
    /// VP9, 90 kHz (received and forwarded; the gateway's own encoders make VP8 or H.264).
    Vp9,
    /// AV1, 90 kHz (an Enhanced RTMP publisher's AV1 passed through; egresses decode it).
    Av1,
}

impl Codec {
    /// Audio or video.
    pub fn kind(self) -> TrackKind {
        match self {
            Codec::Opus => TrackKind::Audio,
            Codec::Vp8 | Codec::H264 | Codec::Vp9 | Codec::Av1 => TrackKind::Video,
        }
    }

    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::Vp8 | Codec::H264 | Codec::Vp9 | Codec::Av1 => 90_000,
        }
    }
}

/// A track to publish.
#[derive(Debug, Clone)]
pub struct LocalTrackSpec {
    /// Its track name in the SFU.
    pub name: String,
    /// Its codec.
    pub codec: Codec,
    /// Simulcast layers sent (rids, best first); empty for a single stream.
    pub rids: Vec<String>,
}

impl LocalTrackSpec {
    /// A single-stream track.
    pub fn new(name: impl Into<String>, codec: Codec) -> Self {
        Self {
            name: name.into(),
            codec,
            rids: Vec::new(),
        }
    }
}

/// A published track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    /// Track name.
    pub name: String,
    /// The mid it is sent on.
    pub mid: String,
}

/// A remote publication to receive.
#[derive(Debug, Clone)]
pub struct RemoteTrackSpec {
    /// The publisher's session.
    pub session_id: String,
    /// The publication's name.
    pub track_name: String,
    /// Simulcast layer wanted, if any.
    pub preferred_rid: Option<String>,
}

/// A subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedTrack {
    /// The publisher's session.
    pub session_id: String,
    /// The publication's name.
    pub track_name: String,
    /// The mid frames arrive on.
    pub mid: String,
}

/// A frame to send on a published track.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// The published track's name.
    pub track: String,
    /// Media time in ticks of the codec clock (48 kHz Opus, 90 kHz video).
    pub rtp_time: u64,
    /// The encoded frame.
    pub data: Vec<u8>,
    /// The simulcast layer it belongs to (`None` for a single-stream track).
    pub rid: Option<String>,
    /// When it was captured, if not just now: the sender reports map its media time to this wallclock, so
    /// receivers can line tracks up (lip-sync) whatever each track's processing delay before sending.
    pub capture: Option<Instant>,
}

/// A received frame.
#[derive(Debug, Clone)]
pub struct InFrame {
    /// The mid it arrived on.
    pub mid: String,
    /// Its codec.
    pub codec: Option<Codec>,
    /// Media time in ticks of the codec clock.
    pub rtp_time: u64,
    /// Whether it is a keyframe.
    pub keyframe: bool,
    /// False when frames were lost before this one.
    pub contiguous: bool,
    /// When it arrived.
    pub received: Instant,
    /// When it was captured, from its track's RTCP sender reports (`None` before the first report).
    pub capture: Option<SystemTime>,
    /// The encoded frame (H.264 in Annex-B).
    pub data: Arc<[u8]>,
}

/// Something that happened to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// ICE and DTLS are up.
    Connected,
    /// ICE lost the path (it may come back).
    Disconnected,
    /// The SFU asks for a keyframe on a published track.
    KeyframeRequested {
        /// The track's name.
        track: String,
        /// The simulcast layer it is for (`None`: the track, or it has no layers).
        rid: Option<String>,
    },
    /// The transport failed; a new session is being created.
    Reconnecting {
        /// Why the old one was given up.
        reason: String,
    },
    /// A new session replaced the failed one; published tracks keep their names; the subscriptions that could
    /// be redone are listed (their mids may have changed) — the others' publishers are gone (after an SFU
    /// restart they have new sessions too), and it is for the owner to subscribe to them again.
    Reconnected {
        /// The new SFU session.
        session_id: String,
        /// Tracks published again.
        published: Vec<PublishedTrack>,
        /// Subscriptions made again.
        subscribed: Vec<SubscribedTrack>,
    },
    /// The transport failed and could not be replaced.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Counters of one peer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerStats {
    /// Whether the transport is connected.
    pub connected: bool,
    /// Bytes received / sent on the transport.
    pub bytes_rx: u64,
    /// Bytes sent on the transport.
    pub bytes_tx: u64,
    /// RTP packets received over all tracks.
    pub packets_rx: u64,
    /// RTP packets sent over all tracks.
    pub packets_tx: u64,
    /// Ingress loss fraction (0..1), when known.
    pub loss: Option<f32>,
    /// Round-trip time in milliseconds, when known.
    pub rtt_ms: Option<f64>,
    /// Frames received and handed out.
    pub frames_in: u64,
    /// Frames dropped because a channel was full or the transport was not ready.
    pub frames_dropped: u64,
}

/// Why a peer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The Calls API refused or failed.
    #[error(transparent)]
    Api(#[from] ClientError),
    /// Local WebRTC failure (SDP, socket).
    #[error("webrtc: {0}")]
    Rtc(String),
    /// The peer task has stopped.
    #[error("the peer has stopped")]
    Stopped,
}

/// Peer settings.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Local address to bind the media socket to (advertised as the host candidate).
    pub bind_ip: IpAddr,
    /// Capacity of the received-frames channel.
    pub media_in_capacity: usize,
    /// Capacity of the frames-to-send channel.
    pub media_out_capacity: usize,
    /// How long ICE may stay disconnected before the peer replaces its session.
    pub reconnect_after: Duration,
    /// Largest STUN retransmission interval (how fast a dead path is noticed).
    pub stun_max_rto: Duration,
    /// STUN retransmissions before a candidate pair is given up.
    pub stun_max_retransmits: usize,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            media_in_capacity: 512,
            media_out_capacity: 512,
            reconnect_after: Duration::from_secs(5),
            stun_max_rto: Duration::from_secs(3),
            stun_max_retransmits: 9,
        }
    }
}

enum Command {
    Publish(
        Vec<LocalTrackSpec>,
        oneshot::Sender<Result<Vec<PublishedTrack>, PeerError>>,
    ),
    Subscribe(
        Vec<RemoteTrackSpec>,
        oneshot::Sender<Result<Vec<SubscribedTrack>, PeerError>>,
    ),
    Close(Vec<String>, oneshot::Sender<Result<(), PeerError>>),
    Keyframe(String),
    Layer(String, String, oneshot::Sender<Result<(), PeerError>>),
    Stats(oneshot::Sender<PeerStats>),
}

/// Handle to a peer task; dropping it stops the task.
pub struct Peer {
    commands: mpsc::Sender<Command>,
    media_out: mpsc::Sender<OutFrame>,
    session_id: watch::Receiver<String>,
    cancel: CancellationToken,
}

/// The receiving ends of a peer: frames and events.
pub struct PeerStreams {
    /// Received frames.
    pub media_in: mpsc::Receiver<InFrame>,
    /// Connection and keyframe events.
    pub events: mpsc::Receiver<PeerEvent>,
}

impl Peer {
    /// Creates an SFU session and starts its peer task.
    pub async fn connect(client: CallsClient, config: PeerConfig) -> Result<(Peer, PeerStreams), PeerError> {
        let session = client.new_session(None).await?;
        let socket = tokio::net::UdpSocket::bind((config.bind_ip, 0))
            .await
            .map_err(|e| PeerError::Rtc(format!("cannot bind the media socket: {e}")))?;
        let (commands, command_rx) = mpsc::channel(32);
        let (media_out, media_out_rx) = mpsc::channel(config.media_out_capacity);
        let (media_in_tx, media_in) = mpsc::channel(config.media_in_capacity);
        let (events_tx, events) = mpsc::channel(64);
        let (session_tx, session_id) = watch::channel(session.session_id.clone());
        let cancel = CancellationToken::new();
        let task = task::PeerTask::new(
            client,
            session.session_id,
            socket,
            task::Channels {
                commands: command_rx,
                media_out: media_out_rx,
                media_in: media_in_tx,
                events: events_tx,
                session: session_tx,
            },
            config,
        )
        .map_err(|e| PeerError::Rtc(e.to_string()))?;
        let span = tracing::info_span!("sfu_peer", session = %session_id.borrow().as_str());
        tokio::spawn(task.run(cancel.clone()).instrument(span));
        let peer = Peer {
            commands,
            media_out,
            session_id,
            cancel,
        };
        Ok((peer, PeerStreams { media_in, events }))
    }

    /// The SFU session id.
    pub fn session_id(&self) -> String {
        self.session_id.borrow().clone()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| PeerError::Stopped)?;
        rx.await.map_err(|_| PeerError::Stopped)
    }

    /// Publishes tracks (we offer, the SFU answers).
    pub async fn publish(&self, tracks: Vec<LocalTrackSpec>) -> Result<Vec<PublishedTrack>, PeerError> {
        self.ask(|tx| Command::Publish(tracks, tx)).await?
    }

    /// Subscribes to remote tracks (the SFU offers, we answer through renegotiate).
    pub async fn subscribe(&self, tracks: Vec<RemoteTrackSpec>) -> Result<Vec<SubscribedTrack>, PeerError> {
        self.ask(|tx| Command::Subscribe(tracks, tx)).await?
    }

    /// Closes tracks by mid (forced close at the SFU).
    pub async fn close(&self, mids: Vec<String>) -> Result<(), PeerError> {
        self.ask(|tx| Command::Close(mids, tx)).await?
    }

    /// Switches a received simulcast track (by mid) to layer `rid` (`tracks/update`).
    pub async fn prefer_layer(&self, mid: impl Into<String>, rid: impl Into<String>) -> Result<(), PeerError> {
        let (mid, rid) = (mid.into(), rid.into());
        self.ask(|tx| Command::Layer(mid, rid, tx)).await?
    }

    /// Asks the SFU for a keyframe on a received track (PLI).
    pub async fn request_keyframe(&self, mid: impl Into<String>) -> Result<(), PeerError> {
        self.commands
            .send(Command::Keyframe(mid.into()))
            .await
            .map_err(|_| PeerError::Stopped)
    }

    /// Current counters.
    pub async fn stats(&self) -> Result<PeerStats, PeerError> {
        self.ask(Command::Stats).await
    }

    /// Queues a frame to send; a full queue drops it (returns false).
    pub fn send_frame(&self, frame: OutFrame) -> bool {
        self.media_out.try_send(frame).is_ok()
    }

    /// A sender for frames, for a GStreamer callback.
    pub fn frame_sender(&self) -> mpsc::Sender<OutFrame> {
        self.media_out.clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
