//! Which audio tracks of the room to hear (sans-IO): every audio track of every participant but an excluded
//! one, following joins, leaves, new and removed tracks. The room's mix hears them all.

use crate::rooms::{RoomEvent, RoomEventKind, RoomSnapshot};
use crate::sfu::api::TrackKind;
use std::collections::BTreeSet;

/// A publication: (SFU session id, track name).
pub type TrackKey = (String, String);

/// The set of tracks to hear, and the changes to it.
#[derive(Debug, Default)]
pub struct Follower {
    own_participant: String,
    own_session: String,
    wanted: BTreeSet<TrackKey>,
}

/// Tracks to start and stop hearing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Newly wanted.
    pub add: Vec<TrackKey>,
    /// No longer wanted.
    pub remove: Vec<TrackKey>,
}

impl Follower {
    /// A follower that never hears `own_participant` (the caller) nor its SFU session.
    pub fn new(own_participant: impl Into<String>, own_session: impl Into<String>) -> Self {
        Self {
            own_participant: own_participant.into(),
            own_session: own_session.into(),
            wanted: BTreeSet::new(),
        }
    }

    /// Whether a track is (still) wanted.
    pub fn wants(&self, key: &TrackKey) -> bool {
        self.wanted.contains(key)
    }

    /// Aligns with a whole snapshot (the start, or after a lag).
    pub fn snapshot(&mut self, snapshot: &RoomSnapshot) -> Changes {
        let desired: BTreeSet<TrackKey> = snapshot
            .participants
            .iter()
            .filter(|p| p.id != self.own_participant && p.session_id != self.own_session)
            .flat_map(|p| {
                p.tracks
                    .iter()
                    .filter(|t| t.kind == TrackKind::Audio)
                    .map(|t| (p.session_id.clone(), t.track_name.clone()))
            })
            .collect();
        let changes = Changes {
            add: desired.difference(&self.wanted).cloned().collect(),
            remove: self.wanted.difference(&desired).cloned().collect(),
        };
        self.wanted = desired;
        changes
    }

    /// Applies one room event.
    pub fn event(&mut self, event: &RoomEvent) -> Changes {
        let mut changes = Changes::default();
        let own = |participant: &str, session: &str| participant == self.own_participant || session == self.own_session;
        match &event.kind {
            RoomEventKind::ParticipantJoined { participant } if !own(&participant.id, &participant.session_id) => {
                for track in participant.tracks.iter().filter(|t| t.kind == TrackKind::Audio) {
                    let key = (participant.session_id.clone(), track.track_name.clone());
                    if self.wanted.insert(key.clone()) {
                        changes.add.push(key);
                    }
                }
            }
            RoomEventKind::TrackAdded {
                participant_id,
                session_id,
                track,
            } if track.kind == TrackKind::Audio && !own(participant_id, session_id) => {
                let key = (session_id.clone(), track.track_name.clone());
                if self.wanted.insert(key.clone()) {
                    changes.add.push(key);
                }
            }
            RoomEventKind::TrackRemoved {
                session_id, track_name, ..
            } => {
                let key = (session_id.clone(), track_name.clone());
                if self.wanted.remove(&key) {
                    changes.remove.push(key);
                }
            }
            RoomEventKind::ParticipantLeft { session_id, .. } => {
                let gone: Vec<TrackKey> = self.wanted.iter().filter(|(s, _)| s == session_id).cloned().collect();
                for key in gone {
                    self.wanted.remove(&key);
                    changes.remove.push(key);
                }
            }
            _ => {}
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::{Participant, ParticipantSource, PublishedTrack};

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const ME: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

    fn participant(id: &str, session: &str, tracks: &[(&str, TrackKind)]) -> Participant {
        let mut p = Participant::new(id, session, ParticipantSource::Api);
        p.tracks = tracks
            .iter()
            .map(|(name, kind)| PublishedTrack::new(*name, *kind))
            .collect();
        p
    }

    fn event(kind: RoomEventKind) -> RoomEvent {
        RoomEvent {
            room: "r".into(),
            seq: 1,
            kind,
        }
    }

    #[test]
    fn hears_other_audio_tracks_but_never_its_own() {
        let mut follower = Follower::new("sip-1", ME);
        let snapshot = RoomSnapshot {
            name: "r".into(),
            participants: vec![
                participant("alice", A, &[("mic", TrackKind::Audio), ("cam", TrackKind::Video)]),
                participant("sip-1", ME, &[("r-sip-1", TrackKind::Audio)]),
            ],
            version: 2,
        };
        let changes = follower.snapshot(&snapshot);
        assert_eq!(changes.add, [(A.to_string(), "mic".to_string())]);
        assert!(changes.remove.is_empty());
        let added = follower.event(&event(RoomEventKind::TrackAdded {
            participant_id: "alice".into(),
            session_id: A.into(),
            track: PublishedTrack::new("mic2", TrackKind::Audio),
        }));
        assert_eq!(added.add.len(), 1);
        let own = follower.event(&event(RoomEventKind::TrackAdded {
            participant_id: "sip-1".into(),
            session_id: ME.into(),
            track: PublishedTrack::new("x", TrackKind::Audio),
        }));
        assert_eq!(own, Changes::default());
        let left = follower.event(&event(RoomEventKind::ParticipantLeft {
            participant_id: "alice".into(),
            session_id: A.into(),
        }));
        assert_eq!(left.remove.len(), 2);
        assert!(!follower.wants(&(A.to_string(), "mic".to_string())));
        // A resync against an empty room removes nothing more.
        let empty = RoomSnapshot {
            name: "r".into(),
            participants: vec![],
            version: 9,
        };
        assert_eq!(follower.snapshot(&empty), Changes::default());
    }
}
