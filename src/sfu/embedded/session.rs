//! State of one embedded-SFU session: its `Rtc`, its publications, its subscriptions, and the SDP exchange
//! in flight.

use crate::sfu::api::ErrorCode;
use std::collections::HashMap;
use std::time::Instant;
use str0m::Rtc;
use str0m::change::SdpPendingOffer;
use str0m::media::{MediaKind, Mid};

/// A failure of an API operation: HTTP status, error code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// Calls API error code.
    pub code: ErrorCode,
    /// Human-readable text.
    pub description: String,
}

impl ApiFailure {
    /// A failure.
    pub fn new(status: u16, code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
        }
    }

    /// 410 `session_error`.
    pub fn gone() -> Self {
        Self::new(410, ErrorCode::SessionError, "session not found, expired or closed")
    }

    /// 400 `invalid_session_description`.
    pub fn bad_sdp(detail: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            ErrorCode::InvalidSessionDescription,
            format!("invalid session description: {detail}"),
        )
    }

    /// 406 `invalid_params`.
    pub fn params(detail: impl Into<String>) -> Self {
        Self::new(406, ErrorCode::InvalidParams, detail)
    }
}

/// A track this session publishes into the SFU.
#[derive(Debug)]
pub struct LocalTrack {
    /// Its name, unique among the session's active tracks.
    pub name: String,
    /// The m-line it arrives on.
    pub mid: Mid,
    /// Audio or video.
    pub kind: MediaKind,
    /// Simulcast layers the publisher sends (empty: no simulcast).
    pub rids: Vec<String>,
    /// Still published (false after close or idle collection).
    pub active: bool,
    /// When it was published.
    pub created: Instant,
    /// When media last arrived (`None`: never, so it cannot be pulled yet).
    pub last_media: Option<Instant>,
    /// Subscriptions: (subscriber session, mid in that session).
    pub subscribers: Vec<(String, Mid)>,
    /// Last keyframe request sent to the publisher (throttling).
    pub last_keyframe_request: Option<Instant>,
}

/// Another session's publication received by this session.
#[derive(Debug, Clone)]
pub struct RemoteTrack {
    /// The publishing session.
    pub publisher: String,
    /// The publication's name.
    pub track_name: String,
    /// The simulcast layer asked for.
    pub preferred_rid: Option<String>,
    /// The simulcast layer being forwarded (switches on the next keyframe of the preferred one).
    pub current_rid: Option<String>,
    /// False once the subscription or its source ended.
    pub active: bool,
    /// Video only: forwarding has started at a keyframe (a subscriber never gets a partial GOP).
    pub started: bool,
}

impl RemoteTrack {
    /// A new, active subscription to `publisher`'s `track_name`, on layer `preferred_rid` if simulcast.
    pub fn new(publisher: String, track_name: String, preferred_rid: Option<String>) -> Self {
        Self {
            publisher,
            track_name,
            preferred_rid,
            current_rid: None,
            active: true,
            started: false,
        }
    }
}

/// The SDP exchange state of a session.
pub enum Negotiation {
    /// No exchange in flight.
    Stable,
    /// The SFU sent an offer and waits for the answer through `renegotiate`.
    LocalOffer {
        /// str0m's side of the offer.
        pending: SdpPendingOffer,
        /// Subscriptions that start once the answer is applied.
        subscriptions: Vec<(Mid, RemoteTrack)>,
        /// Publications (SFU-offered) that start once the answer is applied.
        publications: Vec<LocalTrack>,
    },
}

/// One Calls session: one PeerConnection.
pub struct Session {
    /// The 32-hex-digit id.
    pub id: String,
    /// The WebRTC state machine.
    pub rtc: Rtc,
    /// When it was created.
    pub created: Instant,
    /// ICE+DTLS are up.
    pub connected: bool,
    /// Since when ICE reports disconnected.
    pub disconnected_since: Option<Instant>,
    /// Publications, in publication order.
    pub local: Vec<LocalTrack>,
    /// Subscriptions by the mid they are sent on.
    pub remote: HashMap<Mid, RemoteTrack>,
    /// SDP exchange in flight.
    pub negotiation: Negotiation,
    /// When the `Rtc` next needs a timeout input.
    pub next_timeout: Instant,
}

impl Session {
    /// A new session around `rtc`.
    pub fn new(id: String, rtc: Rtc, now: Instant) -> Self {
        Self {
            id,
            rtc,
            created: now,
            connected: false,
            disconnected_since: None,
            local: Vec::new(),
            remote: HashMap::new(),
            negotiation: Negotiation::Stable,
            next_timeout: now,
        }
    }

    /// The active publication called `name`.
    pub fn local_by_name(&self, name: &str) -> Option<&LocalTrack> {
        self.local.iter().find(|t| t.active && t.name == name)
    }

    /// The active publication arriving on `mid`.
    pub fn local_by_mid_mut(&mut self, mid: Mid) -> Option<&mut LocalTrack> {
        self.local.iter_mut().find(|t| t.active && t.mid == mid)
    }

    /// Whether an SFU offer is waiting for its answer.
    pub fn has_pending_offer(&self) -> bool {
        matches!(self.negotiation, Negotiation::LocalOffer { .. })
    }
}

/// A fresh 32-hex-digit session id.
pub fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether `id` looks like a session id.
pub fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
