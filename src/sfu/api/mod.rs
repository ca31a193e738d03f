//! The Calls API JSON types: one definition used by the client (`sfu::client`) and the embedded SFU
//! (`sfu::embedded`). Field names are exactly those on the wire (camelCase). Every field the service may
//! omit is an `Option`, so a reply from either side always decodes; unknown fields are ignored.

mod errors;

pub use errors::ErrorCode;

use serde::{Deserialize, Serialize};

/// `{type: "offer"|"answer", sdp}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// Offer or answer.
    #[serde(rename = "type")]
    pub sdp_type: SdpType,
    /// The SDP text.
    pub sdp: String,
}

impl SessionDescription {
    /// An offer.
    pub fn offer(sdp: impl Into<String>) -> Self {
        Self {
            sdp_type: SdpType::Offer,
            sdp: sdp.into(),
        }
    }

    /// An answer.
    pub fn answer(sdp: impl Into<String>) -> Self {
        Self {
            sdp_type: SdpType::Answer,
            sdp: sdp.into(),
        }
    }
}

/// The SDP type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// An offer.
    Offer,
    /// An answer.
    Answer,
}

/// Whether a track is published into this session or pulled from another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// Published by this session's peer.
    Local,
    /// Another session's publication, received by this session.
    Remote,
}

/// Media kind hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// Simulcast layer policy (`asciibetical`: "a" is best).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RidPolicy {
    /// No automatic choice.
    None,
    /// Order rids alphabetically.
    Asciibetical,
}

/// Simulcast preferences of a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulcastPreferences {
    /// The layer wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_rid: Option<String>,
    /// Order of preference when choosing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_ordering: Option<RidPolicy>,
    /// What to do when the preferred layer is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid_not_available: Option<RidPolicy>,
    /// Field of the older schema; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_strategy: Option<String>,
}

/// A track in a request or a reply (`TrackObject`, plus the per-item error and status of replies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackObject {
    /// Local (publish) or remote (pull).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The m-line mid in the session the URL names, or `#trackName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// The publisher's session (remote tracks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The publication's name, unique within its publishing session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_name: Option<String>,
    /// Makes the transceiver sendrecv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bidirectional_media_stream: Option<bool>,
    /// Kind hint (required when the SFU writes the offer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TrackKind>,
    /// Simulcast preferences (remote tracks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulcast: Option<SimulcastPreferences>,
    /// `active`, `inactive` (GET session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Item-level error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Item-level error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

impl TrackObject {
    /// A track to publish from transceiver `mid`.
    pub fn local(mid: impl Into<String>, track_name: impl Into<String>) -> Self {
        Self {
            location: Some(Location::Local),
            mid: Some(mid.into()),
            track_name: Some(track_name.into()),
            ..Self::default()
        }
    }

    /// A publication of `session_id` to pull.
    pub fn remote(session_id: impl Into<String>, track_name: impl Into<String>) -> Self {
        Self {
            location: Some(Location::Remote),
            session_id: Some(session_id.into()),
            track_name: Some(track_name.into()),
            ..Self::default()
        }
    }

    /// The item's error, if it failed.
    pub fn error(&self) -> Option<(&str, &str)> {
        self.error_code
            .as_deref()
            .map(|code| (code, self.error_description.as_deref().unwrap_or("")))
    }
}

/// `POST /sessions/new` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSessionRequest {
    /// An offer to answer at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_description: Option<SessionDescription>,
}

/// `POST /sessions/new` reply (201).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSessionResponse {
    /// The new session's id (32 hex chars).
    #[serde(default)]
    pub session_id: String,
    /// The answer, when the request carried an offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_description: Option<SessionDescription>,
    /// Top-level error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Top-level error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// `POST /sessions/{id}/tracks/new` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracksRequest {
    /// The client's offer (publish, WHEP-style pull).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_description: Option<SessionDescription>,
    /// Tracks to publish or pull (at most 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracks: Option<Vec<TrackObject>>,
    /// Publish every sending m-line of the offer under a generated name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_discover: Option<bool>,
}

/// Reply of `tracks/new` and `tracks/update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracksResponse {
    /// The reply carries an SFU offer that must be answered through `renegotiate`.
    #[serde(default)]
    pub requires_immediate_renegotiation: bool,
    /// Answer (to a client offer) or SFU offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_description: Option<SessionDescription>,
    /// One result per requested track.
    #[serde(default)]
    pub tracks: Vec<TrackObject>,
    /// Top-level error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Top-level error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// `PUT /sessions/{id}/tracks/update` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateTracksRequest {
    /// Remote tracks with their receiving mid and new preferences.
    #[serde(default)]
    pub tracks: Vec<TrackObject>,
    /// Optional SDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_description: Option<SessionDescription>,
}

/// `PUT /sessions/{id}/renegotiate` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenegotiateRequest {
    /// The client's answer to the last SFU offer.
    pub session_description: SessionDescription,
}

/// `PUT /sessions/{id}/renegotiate` reply: `{}` on success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenegotiateResponse {
    /// Top-level error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Top-level error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// One mid to close.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseTrackObject {
    /// The mid in this session.
    pub mid: String,
}

/// `PUT /sessions/{id}/tracks/close` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseTracksRequest {
    /// Mids to close (at least one).
    #[serde(default)]
    pub tracks: Vec<CloseTrackObject>,
    /// `true`: no SDP exchange; `false`: the request carries an offer with the transceivers stopped.
    #[serde(default)]
    pub force: bool,
    /// The client's offer for a negotiated close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_description: Option<SessionDescription>,
}

/// Reply of `GET /sessions/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetSessionResponse {
    /// Every track of the session with its status.
    #[serde(default)]
    pub tracks: Vec<TrackObject>,
    /// Datachannels (not supported by the embedded SFU yet: always empty).
    #[serde(default)]
    pub data_channels: Vec<serde_json::Value>,
    /// Top-level error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Top-level error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// A bare error reply `{errorCode, errorDescription}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    /// Error code, see [`ErrorCode`].
    #[serde(default)]
    pub error_code: String,
    /// Human-readable text.
    #[serde(default)]
    pub error_description: String,
}

/// At most this many tracks per request.
pub const MAX_TRACKS_PER_REQUEST: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn track_objects_use_wire_names_and_skip_absent_fields() {
        let local = TrackObject::local("0", "mic");
        assert_eq!(
            serde_json::to_value(&local).unwrap(),
            json!({"location": "local", "mid": "0", "trackName": "mic"})
        );
        let mut remote = TrackObject::remote("e017a2629c754fedc1f7d8587e06d126", "cam");
        remote.simulcast = Some(SimulcastPreferences {
            preferred_rid: Some("h".into()),
            ..Default::default()
        });
        remote.bidirectional_media_stream = Some(true);
        remote.kind = Some(TrackKind::Video);
        assert_eq!(
            serde_json::to_value(&remote).unwrap(),
            json!({"location": "remote", "sessionId": "e017a2629c754fedc1f7d8587e06d126", "trackName": "cam",
                   "bidirectionalMediaStream": true, "kind": "video", "simulcast": {"preferredRid": "h"}})
        );
    }

    #[test]
    fn replies_from_the_service_decode() {
        let failed: TracksResponse = serde_json::from_value(json!({
            "requiresImmediateRenegotiation": false,
            "tracks": [{"errorCode": "not_found_track_error", "errorDescription": "Track not found", "mid": "",
                        "sessionId": "abc", "trackName": "cam", "somethingNew": 1}]
        }))
        .unwrap();
        assert_eq!(
            failed.tracks[0].error(),
            Some(("not_found_track_error", "Track not found"))
        );
        let offer: TracksResponse = serde_json::from_value(json!({
            "requiresImmediateRenegotiation": true,
            "sessionDescription": {"type": "offer", "sdp": "v=0\r\n"},
            "tracks": [{"sessionId": "abc", "trackName": "cam", "mid": "2"}]
        }))
        .unwrap();
        assert_eq!(offer.session_description.unwrap().sdp_type, SdpType::Offer);
        let empty: RenegotiateResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, RenegotiateResponse::default());
        let old_simulcast: SimulcastPreferences =
            serde_json::from_value(json!({"preferredRid": "a", "fallbackStrategy": "auto"})).unwrap();
        assert_eq!(old_simulcast.preferred_rid.as_deref(), Some("a"));
        let close: CloseTracksRequest =
            serde_json::from_value(json!({"tracks": [{"mid": "1"}], "force": true})).unwrap();
        assert!(close.force && close.session_description.is_none());
    }
}
