//! The room types as they appear on the wire (camelCase fields) and the validation of remote input.

use super::RoomError;
use crate::sfu::api::TrackKind;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Room names and participant ids are at most this many characters.
pub const MAX_ID_LEN: usize = 128;
/// A participant publishes at most this many tracks (the SFU's per-request limit).
pub const MAX_TRACKS_PER_PARTICIPANT: usize = 64;
/// Track names are at most this many characters.
pub const MAX_TRACK_NAME_LEN: usize = 256;
/// A track has at most this many simulcast layers.
pub const MAX_RIDS_PER_TRACK: usize = 8;
/// A simulcast rid is at most this many characters.
pub const MAX_RID_LEN: usize = 16;
/// Display names are at most this many characters.
pub const MAX_DISPLAY_NAME_LEN: usize = 256;
/// Participant metadata is at most this many bytes once serialised as JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Who registered a participant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantSource {
    /// The application, through the control API.
    #[default]
    Api,
    /// A gateway session (an RTMP ingest, a phone caller) registered itself.
    Gateway,
    /// The room resolver webhook returned it.
    Resolver,
}

/// A track a participant publishes in its SFU session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedTrack {
    /// The publication's name, unique within the participant's session.
    pub track_name: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// Simulcast layers (`rid`s), empty when the track is not simulcast.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rids: Vec<String>,
}

impl PublishedTrack {
    /// A track without simulcast.
    pub fn new(track_name: impl Into<String>, kind: TrackKind) -> Self {
        Self {
            track_name: track_name.into(),
            kind,
            rids: Vec::new(),
        }
    }
}

/// A member of a room: one SFU session and what it publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// Unique within the room.
    pub id: String,
    /// The participant's SFU session (32 hex digits).
    pub session_id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tracks published in `session_id`.
    #[serde(default)]
    pub tracks: Vec<PublishedTrack>,
    /// Opaque application data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Who registered the participant (set by the gateway, whatever the input says).
    #[serde(default)]
    pub source: ParticipantSource,
}

impl Participant {
    /// A participant without name, tracks or metadata.
    pub fn new(id: impl Into<String>, session_id: impl Into<String>, source: ParticipantSource) -> Self {
        Self {
            id: id.into(),
            session_id: session_id.into(),
            name: None,
            tracks: Vec::new(),
            metadata: None,
            source,
        }
    }

    /// The track named `track_name`, if published.
    pub fn track(&self, track_name: &str) -> Option<&PublishedTrack> {
        self.tracks.iter().find(|t| t.track_name == track_name)
    }
}

/// A room's state at one point of its event sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSnapshot {
    /// The room name.
    pub name: String,
    /// Every participant, ordered by id.
    pub participants: Vec<Participant>,
    /// The `seq` of the last event applied (0 before the first); the next event has `version + 1`.
    pub version: u64,
}

/// One change of a room. On the wire the kind's fields sit beside `room` and `seq`:
/// `{"room": "r", "seq": 7, "type": "track_added", "participantId": "p", "sessionId": "…", "track": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    /// The room name.
    pub room: String,
    /// The room's sequence number after this change: consecutive within a room, starting at 1.
    pub seq: u64,
    /// What changed.
    #[serde(flatten)]
    pub kind: RoomEventKind,
}

/// What changed in a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum RoomEventKind {
    /// A participant joined, with the tracks it already publishes (no `TrackAdded` follows for those).
    ParticipantJoined {
        /// The new participant.
        participant: Participant,
    },
    /// A participant left. Its tracks are gone with it: no `TrackRemoved` is sent for them.
    ParticipantLeft {
        /// The participant's id.
        participant_id: String,
        /// The SFU session it had.
        session_id: String,
    },
    /// A participant publishes a new track.
    TrackAdded {
        /// The publisher's id.
        participant_id: String,
        /// The publisher's SFU session.
        session_id: String,
        /// The track.
        track: PublishedTrack,
    },
    /// A participant stopped publishing a track.
    TrackRemoved {
        /// The publisher's id.
        participant_id: String,
        /// The publisher's SFU session.
        session_id: String,
        /// The track's name.
        track_name: String,
    },
    /// A participant's name, metadata or source changed (tracks changes have their own events).
    ParticipantUpdated {
        /// The participant as it is now.
        participant: Participant,
    },
    /// A phone participant typed a DTMF digit (changes nothing in the room's state).
    Dtmf {
        /// The caller's participant id.
        participant_id: String,
        /// Its SFU session.
        session_id: String,
        /// `0-9`, `*`, `#` or `A-D`.
        digit: String,
    },
}

/// Checks a room name: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
pub fn validate_room_name(room: &str) -> Result<(), RoomError> {
    check_id("room", room)
}

/// Checks a participant id: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
pub fn validate_participant_id(id: &str) -> Result<(), RoomError> {
    check_id("id", id)
}

/// Checks every field of a participant; the error names the field (`tracks[3].trackName`).
pub fn validate_participant(participant: &Participant) -> Result<(), RoomError> {
    validate_participant_id(&participant.id)?;
    if participant.session_id.len() != 32 || !participant.session_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RoomError::invalid("sessionId", "must be 32 hexadecimal digits"));
    }
    if let Some(name) = &participant.name {
        check_text("name", name, MAX_DISPLAY_NAME_LEN)?;
    }
    if let Some(metadata) = &participant.metadata {
        let size = serde_json::to_vec(metadata).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_METADATA_BYTES {
            return Err(RoomError::invalid(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
            ));
        }
    }
    if participant.tracks.len() > MAX_TRACKS_PER_PARTICIPANT {
        return Err(RoomError::invalid(
            "tracks",
            format!("at most {MAX_TRACKS_PER_PARTICIPANT} tracks per participant"),
        ));
    }
    let mut names = HashSet::new();
    for (i, track) in participant.tracks.iter().enumerate() {
        validate_track(track).map_err(|e| e.within(&format!("tracks[{i}]")))?;
        if !names.insert(track.track_name.as_str()) {
            return Err(RoomError::invalid(
                format!("tracks[{i}].trackName"),
                "duplicate track name",
            ));
        }
    }
    Ok(())
}

/// Checks one track; the error names the field relative to the track (`trackName`, `rids[0]`).
pub fn validate_track(track: &PublishedTrack) -> Result<(), RoomError> {
    check_text("trackName", &track.track_name, MAX_TRACK_NAME_LEN)?;
    if track.rids.len() > MAX_RIDS_PER_TRACK {
        return Err(RoomError::invalid(
            "rids",
            format!("at most {MAX_RIDS_PER_TRACK} simulcast layers"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, rid) in track.rids.iter().enumerate() {
        let field = format!("rids[{i}]");
        if !rid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(RoomError::invalid(field, "may contain only A-Z a-z 0-9 - _"));
        }
        if rid.is_empty() || rid.len() > MAX_RID_LEN {
            return Err(RoomError::invalid(
                field,
                format!("must be 1 to {MAX_RID_LEN} characters"),
            ));
        }
        if !seen.insert(rid.as_str()) {
            return Err(RoomError::invalid(field, "duplicate rid"));
        }
    }
    Ok(())
}

fn check_id(field: &str, value: &str) -> Result<(), RoomError> {
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(RoomError::invalid(field, "may contain only A-Z a-z 0-9 . _ : -"));
    }
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(RoomError::invalid(
            field,
            format!("must be 1 to {MAX_ID_LEN} characters"),
        ));
    }
    Ok(())
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), RoomError> {
    if value.is_empty() || value.chars().count() > max {
        return Err(RoomError::invalid(field, format!("must be 1 to {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(RoomError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SESSION: &str = "e017a2629c754fedc1f7d8587e06d126";

    fn alice() -> Participant {
        let mut p = Participant::new("alice", SESSION, ParticipantSource::Api);
        p.tracks.push(PublishedTrack::new("mic", TrackKind::Audio));
        p
    }

    fn field_of(result: Result<(), RoomError>) -> String {
        match result {
            Err(RoomError::Invalid { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn participants_use_wire_names_and_default_their_source() {
        let mut p = alice();
        p.tracks.push(PublishedTrack {
            track_name: "cam".into(),
            kind: TrackKind::Video,
            rids: vec!["h".into(), "l".into()],
        });
        p.source = ParticipantSource::Gateway;
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"id": "alice", "sessionId": SESSION, "source": "gateway", "tracks": [
                {"trackName": "mic", "kind": "audio"},
                {"trackName": "cam", "kind": "video", "rids": ["h", "l"]}
            ]})
        );
        let decoded: Participant = serde_json::from_value(json!({"id": "bob", "sessionId": SESSION})).unwrap();
        assert_eq!(decoded.source, ParticipantSource::Api);
        assert!(decoded.tracks.is_empty() && decoded.name.is_none() && decoded.metadata.is_none());
    }

    #[test]
    fn events_are_flat_and_tagged_in_snake_case() {
        let event = RoomEvent {
            room: "r".into(),
            seq: 3,
            kind: RoomEventKind::TrackRemoved {
                participant_id: "alice".into(),
                session_id: SESSION.into(),
                track_name: "mic".into(),
            },
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            value,
            json!({"room": "r", "seq": 3, "type": "track_removed", "participantId": "alice",
                   "sessionId": SESSION, "trackName": "mic"})
        );
        assert_eq!(serde_json::from_value::<RoomEvent>(value).unwrap(), event);
        let joined = RoomEvent {
            room: "r".into(),
            seq: 1,
            kind: RoomEventKind::ParticipantJoined { participant: alice() },
        };
        let text = serde_json::to_string(&joined).unwrap();
        assert!(text.contains(r#""type":"participant_joined""#), "{text}");
        assert_eq!(serde_json::from_str::<RoomEvent>(&text).unwrap(), joined);
    }

    #[test]
    fn valid_input_passes() {
        validate_room_name("team-1.standup:2024_06").unwrap();
        validate_room_name(&"r".repeat(MAX_ID_LEN)).unwrap();
        let mut p = alice();
        p.name = Some("Alice Ünlü".into());
        p.metadata = Some(json!({"role": "host"}));
        p.tracks[0].rids = vec!["f".into(), "h".into(), "q".into()];
        validate_participant(&p).unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(validate_room_name("")), "room");
        assert_eq!(field_of(validate_room_name("a b")), "room");
        assert_eq!(field_of(validate_room_name(&"r".repeat(MAX_ID_LEN + 1))), "room");

        let mut p = alice();
        p.id = "al/ice".into();
        assert_eq!(field_of(validate_participant(&p)), "id");

        let mut p = alice();
        p.session_id = "not-hex".into();
        assert_eq!(field_of(validate_participant(&p)), "sessionId");
        p.session_id = format!("{SESSION}0");
        assert_eq!(field_of(validate_participant(&p)), "sessionId");

        let mut p = alice();
        p.name = Some("line\nbreak".into());
        assert_eq!(field_of(validate_participant(&p)), "name");

        let mut p = alice();
        p.metadata = Some(json!("x".repeat(MAX_METADATA_BYTES)));
        assert_eq!(field_of(validate_participant(&p)), "metadata");

        let mut p = alice();
        p.tracks.push(PublishedTrack::new("", TrackKind::Video));
        assert_eq!(field_of(validate_participant(&p)), "tracks[1].trackName");
        p.tracks[1].track_name = "cam\u{7}".into();
        assert_eq!(field_of(validate_participant(&p)), "tracks[1].trackName");
        p.tracks[1].track_name = "t".repeat(MAX_TRACK_NAME_LEN + 1);
        assert_eq!(field_of(validate_participant(&p)), "tracks[1].trackName");
        p.tracks[1].track_name = "mic".into();
        assert_eq!(field_of(validate_participant(&p)), "tracks[1].trackName");
        p.tracks[1].track_name = "cam".into();
        p.tracks[1].rids = vec!["h".into(), "h".into()];
        assert_eq!(field_of(validate_participant(&p)), "tracks[1].rids[1]");
        p.tracks[1].rids = vec!["h l".into()];
        assert_eq!(field_of(validate_participant(&p)), "tracks[1].rids[0]");

        let mut p = alice();
        p.tracks = (0..=MAX_TRACKS_PER_PARTICIPANT)
            .map(|i| PublishedTrack::new(format!("t{i}"), TrackKind::Audio))
            .collect();
        assert_eq!(field_of(validate_participant(&p)), "tracks");
        p.tracks.pop();
        validate_participant(&p).unwrap();
    }
}
