//! A gateway session's place in its room: joined when the session publishes, left when it ends.

use super::RoomError;
use super::model::{Participant, ParticipantSource, PublishedTrack, RoomEvent};
use super::registry::Rooms;

/// A gateway session (an RTMP ingest, a phone caller) registered as a participant of its room. Dropping it
/// removes the participant, so a session that ends or panics leaves its room; an API update that replaced
/// the participant with another SFU session or source is left alone.
pub struct Membership {
    rooms: Rooms,
    room: String,
    participant_id: String,
    session_id: String,
}

impl Rooms {
    /// Registers a gateway session as a participant of `room` (its source forced to `Gateway`) and returns
    /// the membership that removes it again when dropped.
    pub fn join_gateway(&self, room: &str, mut participant: Participant) -> Result<Membership, RoomError> {
        participant.source = ParticipantSource::Gateway;
        let participant_id = participant.id.clone();
        let session_id = participant.session_id.clone();
        self.upsert_participant(room, participant)?;
        Ok(Membership {
            rooms: self.clone(),
            room: room.to_string(),
            participant_id,
            session_id,
        })
    }
}

impl Membership {
    /// The room.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The participant id.
    pub fn participant_id(&self) -> &str {
        &self.participant_id
    }

    /// The session's SFU session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Announces a track the session now publishes (see [`Rooms::add_track`]); `NotFound` if the participant
    /// is no longer this session.
    pub fn add_track(&self, track: PublishedTrack) -> Result<Vec<RoomEvent>, RoomError> {
        self.rooms
            .add_track_of(&self.room, &self.participant_id, Some(self.session_id.as_str()), track)
    }

    /// Announces that the session stopped publishing a track.
    pub fn remove_track(&self, track_name: &str) -> Result<RoomEvent, RoomError> {
        self.rooms.remove_track_of(
            &self.room,
            &self.participant_id,
            Some(self.session_id.as_str()),
            track_name,
        )
    }

    /// Moves the participant to a new SFU session (its old one was replaced after a transport failure),
    /// keeping its id, name, metadata and tracks; the room's subscribers see the change as events.
    pub fn rebind(&mut self, session_id: &str) -> Result<Vec<RoomEvent>, RoomError> {
        let current = self
            .rooms
            .get(&self.room)
            .and_then(|room| {
                room.participants
                    .into_iter()
                    .find(|p| p.id == self.participant_id && p.session_id == self.session_id)
            })
            .ok_or_else(|| RoomError::not_found(format!("participant {:?} of this session", self.participant_id)))?;
        let mut moved = current;
        moved.session_id = session_id.to_string();
        let events = self.rooms.upsert_participant(&self.room, moved)?;
        self.session_id = session_id.to_string();
        Ok(events)
    }

    /// Tells the room's subscribers that this (phone) participant typed `digit`.
    pub fn dtmf(&self, digit: char) -> Result<RoomEvent, RoomError> {
        self.rooms
            .dtmf_of(&self.room, &self.participant_id, &self.session_id, digit)
    }

    /// Leaves the room now (the same as dropping the membership).
    pub fn leave(self) {}
}

impl Drop for Membership {
    fn drop(&mut self) {
        let session_id = self.session_id.as_str();
        let left = self.rooms.remove_where(&self.room, &self.participant_id, |p| {
            p.source == ParticipantSource::Gateway && p.session_id == session_id
        });
        if left.is_some() {
            tracing::debug!(room = %self.room, participant = %self.participant_id, "gateway session left its room");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::model::RoomEventKind;
    use crate::sfu::api::TrackKind;

    const S1: &str = "e017a2629c754fedc1f7d8587e06d126";
    const S2: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_membership_publishes_tracks_and_leaves_on_drop() {
        let rooms = Rooms::new();
        let membership = rooms
            .join_gateway("r", Participant::new("rtmp-1", S1, ParticipantSource::Api))
            .unwrap();
        assert_eq!(
            rooms.get("r").unwrap().participants[0].source,
            ParticipantSource::Gateway
        );
        let added = membership
            .add_track(PublishedTrack::new("video", TrackKind::Video))
            .unwrap();
        assert!(matches!(
            &added[..],
            [RoomEvent {
                seq: 2,
                kind: RoomEventKind::TrackAdded { .. },
                ..
            }]
        ));
        assert_eq!(membership.remove_track("video").unwrap().seq, 3);
        assert!(matches!(
            membership.remove_track("video"),
            Err(RoomError::NotFound { .. })
        ));
        membership.leave();
        assert!(rooms.get("r").is_none());
        assert!(rooms.list().is_empty());
    }

    #[test]
    fn a_callers_digit_is_a_room_event_that_changes_nothing() {
        let rooms = Rooms::new();
        let membership = rooms
            .join_gateway("r", Participant::new("sip-1", S1, ParticipantSource::Gateway))
            .unwrap();
        let mut subscription = rooms.subscribe("r");
        let before = subscription.snapshot.clone();
        let event = membership.dtmf('#').unwrap();
        assert_eq!(event.seq, 2);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "dtmf");
        assert_eq!(json["digit"], "#");
        assert_eq!(json["participantId"], "sip-1");
        assert_eq!(subscription.resync().participants, before.participants);
    }

    #[test]
    fn a_rebound_membership_follows_its_new_session_and_still_leaves() {
        let rooms = Rooms::new();
        let mut participant = Participant::new("sip-1", S1, ParticipantSource::Gateway);
        participant.tracks = vec![PublishedTrack::new("r-sip-1", TrackKind::Audio)];
        let mut membership = rooms.join_gateway("r", participant).unwrap();
        let events = membership.rebind(S2).unwrap();
        assert!(!events.is_empty(), "the move is announced");
        let snapshot = rooms.get("r").unwrap();
        assert_eq!(snapshot.participants[0].session_id, S2);
        assert_eq!(snapshot.participants[0].tracks.len(), 1, "tracks are kept");
        assert_eq!(membership.session_id(), S2);
        drop(membership);
        assert!(rooms.get("r").is_none(), "leaving still works after the move");
    }

    #[test]
    fn a_replaced_participant_is_not_removed() {
        let rooms = Rooms::new();
        let membership = rooms
            .join_gateway("r", Participant::new("caller", S1, ParticipantSource::Gateway))
            .unwrap();
        rooms
            .upsert_participant("r", Participant::new("caller", S2, ParticipantSource::Api))
            .unwrap();
        assert!(matches!(
            membership.add_track(PublishedTrack::new("audio", TrackKind::Audio)),
            Err(RoomError::NotFound { .. })
        ));
        drop(membership);
        let snapshot = rooms.get("r").unwrap();
        assert_eq!(snapshot.participants.len(), 1);
        assert_eq!(snapshot.participants[0].session_id, S2);
        assert!(snapshot.participants[0].tracks.is_empty());
    }
}
