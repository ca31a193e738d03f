//! Which tracks of a room a gateway session takes (sans-IO): every track of the kinds it wants, of every
//! participant, following joins, leaves, new and removed tracks. The phones' room mix follows the audio
//! tracks; a room egress follows audio and video.

use super::{RoomEvent, RoomEventKind, RoomSnapshot};
use crate::sfu::api::TrackKind;
use std::collections::{BTreeSet, HashMap};

/// A publication: (SFU session id, track name).
pub type TrackKey = (String, String);

/// Tracks a follower leaves alone because they reach its owner another way (the gateway's own callers, whom
/// the room mix hears without the SFU round trip).
#[derive(Clone)]
pub struct Skip(std::sync::Arc<dyn Fn(&TrackKey) -> bool + Send + Sync>);

impl Skip {
    /// Skips the tracks `skip` says yes to.
    pub fn new(skip: impl Fn(&TrackKey) -> bool + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(skip))
    }
}

impl std::fmt::Debug for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Skip")
    }
}

/// The set of tracks to take, and the changes to it.
#[derive(Debug)]
pub struct Follower {
    kinds: Vec<TrackKind>,
    skip: Option<Skip>,
    wanted: BTreeSet<TrackKey>,
    /// The simulcast layers of the wanted tracks that have some.
    rids: HashMap<TrackKey, Vec<String>>,
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
    /// Follows the tracks of `kinds`.
    pub fn new(kinds: &[TrackKind]) -> Self {
        Self {
            kinds: kinds.to_vec(),
            skip: None,
            wanted: BTreeSet::new(),
            rids: HashMap::new(),
        }
    }

    /// Follows the audio tracks.
    pub fn audio() -> Self {
        Self::new(&[TrackKind::Audio])
    }

    /// Leaves alone the tracks `skip` says yes to (asked when a track appears).
    pub fn skipping(mut self, skip: Skip) -> Self {
        self.skip = Some(skip);
        self
    }

    fn takes(&self, kind: TrackKind, key: &TrackKey) -> bool {
        self.kinds.contains(&kind) && !self.skip.as_ref().is_some_and(|skip| (skip.0)(key))
    }

    /// The simulcast layers of a wanted track, best first (empty if it has none).
    pub fn rids(&self, key: &TrackKey) -> &[String] {
        self.rids.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every wanted track.
    pub fn wanted(&self) -> impl Iterator<Item = &TrackKey> {
        self.wanted.iter()
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
            .flat_map(|p| {
                p.tracks
                    .iter()
                    .map(|t| (t.kind, (p.session_id.clone(), t.track_name.clone())))
            })
            .filter(|(kind, key)| self.takes(*kind, key))
            .map(|(_, key)| key)
            .collect();
        let changes = Changes {
            add: desired.difference(&self.wanted).cloned().collect(),
            remove: self.wanted.difference(&desired).cloned().collect(),
        };
        self.wanted = desired;
        self.rids.clear();
        for p in &snapshot.participants {
            for t in p.tracks.iter().filter(|t| self.kinds.contains(&t.kind)) {
                let key = (p.session_id.clone(), t.track_name.clone());
                note_rids(&mut self.rids, &key, &t.rids);
            }
        }
        changes
    }

    /// Applies one room event.
    pub fn event(&mut self, event: &RoomEvent) -> Changes {
        let mut changes = Changes::default();
        match &event.kind {
            RoomEventKind::ParticipantJoined { participant } => {
                for track in &participant.tracks {
                    let key = (participant.session_id.clone(), track.track_name.clone());
                    if !self.takes(track.kind, &key) {
                        continue;
                    }
                    note_rids(&mut self.rids, &key, &track.rids);
                    if self.wanted.insert(key.clone()) {
                        changes.add.push(key);
                    }
                }
            }
            RoomEventKind::TrackAdded { session_id, track, .. }
                if self.takes(track.kind, &(session_id.clone(), track.track_name.clone())) =>
            {
                let key = (session_id.clone(), track.track_name.clone());
                note_rids(&mut self.rids, &key, &track.rids);
                if self.wanted.insert(key.clone()) {
                    changes.add.push(key);
                }
            }
            RoomEventKind::TrackRemoved {
                session_id, track_name, ..
            } => {
                let key = (session_id.clone(), track_name.clone());
                self.rids.remove(&key);
                if self.wanted.remove(&key) {
                    changes.remove.push(key);
                }
            }
            RoomEventKind::ParticipantLeft { session_id, .. } => {
                let gone: Vec<TrackKey> = self.wanted.iter().filter(|(s, _)| s == session_id).cloned().collect();
                for key in gone {
                    self.wanted.remove(&key);
                    self.rids.remove(&key);
                    changes.remove.push(key);
                }
            }
            _ => {}
        }
        changes
    }
}

fn note_rids(all: &mut HashMap<TrackKey, Vec<String>>, key: &TrackKey, rids: &[String]) {
    if rids.is_empty() {
        all.remove(key);
    } else {
        all.insert(key.clone(), rids.to_vec());
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
    fn hears_every_audio_track_following_joins_and_leaves() {
        let mut follower = Follower::audio();
        let snapshot = RoomSnapshot {
            name: "r".into(),
            participants: vec![
                participant("alice", A, &[("mic", TrackKind::Audio), ("cam", TrackKind::Video)]),
                participant("sip-1", ME, &[("r-sip-1", TrackKind::Audio)]),
            ],
            version: 2,
        };
        let changes = follower.snapshot(&snapshot);
        assert_eq!(
            changes.add,
            [
                (A.to_string(), "mic".to_string()),
                (ME.to_string(), "r-sip-1".to_string())
            ],
            "audio only, the phones' own tracks included"
        );
        assert!(changes.remove.is_empty());
        let mic2 = RoomEventKind::TrackAdded {
            participant_id: "alice".into(),
            session_id: A.into(),
            track: PublishedTrack::new("mic2", TrackKind::Audio),
        };
        assert_eq!(follower.event(&event(mic2.clone())).add.len(), 1);
        assert_eq!(
            follower.event(&event(mic2)),
            Changes::default(),
            "no double subscription"
        );
        let video = follower.event(&event(RoomEventKind::TrackAdded {
            participant_id: "alice".into(),
            session_id: A.into(),
            track: PublishedTrack::new("screen", TrackKind::Video),
        }));
        assert_eq!(video, Changes::default());
        let left = follower.event(&event(RoomEventKind::ParticipantLeft {
            participant_id: "alice".into(),
            session_id: A.into(),
        }));
        assert_eq!(left.remove.len(), 2);
        assert!(!follower.wants(&(A.to_string(), "mic".to_string())));
        let removed = follower.event(&event(RoomEventKind::TrackRemoved {
            participant_id: "sip-1".into(),
            session_id: ME.into(),
            track_name: "r-sip-1".into(),
        }));
        assert_eq!(removed.remove, [(ME.to_string(), "r-sip-1".to_string())]);
        // A resync against an empty room removes nothing more.
        let empty = RoomSnapshot {
            name: "r".into(),
            participants: vec![],
            version: 9,
        };
        assert_eq!(follower.snapshot(&empty), Changes::default());
    }

    #[test]
    fn skipped_tracks_are_never_taken() {
        let mine = (ME.to_string(), "r-sip-1".to_string());
        let local = mine.clone();
        let mut follower = Follower::audio().skipping(Skip::new(move |key| *key == local));
        let snapshot = RoomSnapshot {
            name: "r".into(),
            participants: vec![
                participant("alice", A, &[("mic", TrackKind::Audio)]),
                participant("sip-1", ME, &[("r-sip-1", TrackKind::Audio)]),
            ],
            version: 2,
        };
        assert_eq!(follower.snapshot(&snapshot).add, [(A.to_string(), "mic".to_string())]);
        let joined = follower.event(&event(RoomEventKind::ParticipantJoined {
            participant: participant("sip-1", ME, &[("r-sip-1", TrackKind::Audio)]),
        }));
        assert_eq!(joined, Changes::default());
        let added = follower.event(&event(RoomEventKind::TrackAdded {
            participant_id: "sip-1".into(),
            session_id: ME.into(),
            track: PublishedTrack::new("r-sip-1", TrackKind::Audio),
        }));
        assert_eq!(added, Changes::default());
        assert!(!follower.wants(&mine));
    }

    #[test]
    fn an_audio_and_video_follower_takes_both_kinds() {
        let mut follower = Follower::new(&[TrackKind::Audio, TrackKind::Video]);
        let joined = follower.event(&event(RoomEventKind::ParticipantJoined {
            participant: participant("alice", A, &[("mic", TrackKind::Audio), ("cam", TrackKind::Video)]),
        }));
        assert_eq!(joined.add.len(), 2);
        let screen = follower.event(&event(RoomEventKind::TrackAdded {
            participant_id: "alice".into(),
            session_id: A.into(),
            track: PublishedTrack::new("screen", TrackKind::Video),
        }));
        assert_eq!(screen.add, [(A.to_string(), "screen".to_string())]);
        // Simulcast layers are remembered while the track is followed.
        let layered = PublishedTrack {
            rids: vec!["a".into(), "b".into()],
            ..PublishedTrack::new("cam2", TrackKind::Video)
        };
        follower.event(&event(RoomEventKind::TrackAdded {
            participant_id: "alice".into(),
            session_id: A.into(),
            track: layered,
        }));
        let key = (A.to_string(), "cam2".to_string());
        assert_eq!(follower.rids(&key), ["a", "b"]);
        assert!(follower.rids(&(A.to_string(), "cam".to_string())).is_empty());
        follower.event(&event(RoomEventKind::ParticipantLeft {
            participant_id: "alice".into(),
            session_id: A.into(),
        }));
        assert!(follower.rids(&key).is_empty());
    }
}
