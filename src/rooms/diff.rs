//! The events that turn one version of a participant into the next: pure, no state, no I/O.

use super::model::{Participant, RoomEventKind};

/// The changes from `old` (absent: the participant is new) to `new`, in a fixed order:
///
/// - new participant: `ParticipantJoined` (carrying its tracks);
/// - new SFU session: `ParticipantLeft` for the old session, then `ParticipantJoined`;
/// - otherwise `TrackRemoved` for each track gone or changed (in the old order), `TrackAdded` for each new or
///   changed track (in the new order), then `ParticipantUpdated` if the name, metadata or source changed.
///
/// A track whose kind or rids changed is removed and added again, so subscribers pull it afresh. Nothing at
/// all (an empty list) when only the order of the tracks changed.
pub(super) fn diff(old: Option<&Participant>, new: &Participant) -> Vec<RoomEventKind> {
    let Some(old) = old else {
        return vec![RoomEventKind::ParticipantJoined {
            participant: new.clone(),
        }];
    };
    if old.session_id != new.session_id {
        return vec![
            RoomEventKind::ParticipantLeft {
                participant_id: old.id.clone(),
                session_id: old.session_id.clone(),
            },
            RoomEventKind::ParticipantJoined {
                participant: new.clone(),
            },
        ];
    }
    let mut kinds = Vec::new();
    // Track names are unique within a participant (validated), so comparing whole tracks finds exactly the
    // removed, added and changed ones.
    for track in old.tracks.iter().filter(|t| !new.tracks.contains(t)) {
        kinds.push(RoomEventKind::TrackRemoved {
            participant_id: new.id.clone(),
            session_id: new.session_id.clone(),
            track_name: track.track_name.clone(),
        });
    }
    for track in new.tracks.iter().filter(|t| !old.tracks.contains(t)) {
        kinds.push(RoomEventKind::TrackAdded {
            participant_id: new.id.clone(),
            session_id: new.session_id.clone(),
            track: track.clone(),
        });
    }
    if old.name != new.name || old.metadata != new.metadata || old.source != new.source {
        kinds.push(RoomEventKind::ParticipantUpdated {
            participant: new.clone(),
        });
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::model::{ParticipantSource, PublishedTrack};
    use crate::sfu::api::TrackKind;
    use serde_json::json;

    const S1: &str = "e017a2629c754fedc1f7d8587e06d126";
    const S2: &str = "0123456789abcdef0123456789abcdef";

    fn participant(tracks: &[(&str, TrackKind)]) -> Participant {
        let mut p = Participant::new("alice", S1, ParticipantSource::Api);
        p.tracks = tracks.iter().map(|(n, k)| PublishedTrack::new(*n, *k)).collect();
        p
    }

    /// A compact description of each event: `type:detail`.
    fn describe(kinds: &[RoomEventKind]) -> Vec<String> {
        kinds
            .iter()
            .map(|k| match k {
                RoomEventKind::ParticipantJoined { participant } => format!("joined:{}", participant.session_id),
                RoomEventKind::ParticipantLeft { session_id, .. } => format!("left:{session_id}"),
                RoomEventKind::TrackAdded { track, .. } => format!("added:{}", track.track_name),
                RoomEventKind::TrackRemoved { track_name, .. } => format!("removed:{track_name}"),
                RoomEventKind::ParticipantUpdated { .. } => "updated".to_string(),
                RoomEventKind::Dtmf { digit, .. } => format!("dtmf:{digit}"),
            })
            .collect()
    }

    #[test]
    fn a_new_participant_joins_with_its_tracks() {
        let new = participant(&[("mic", TrackKind::Audio)]);
        let kinds = diff(None, &new);
        assert_eq!(describe(&kinds), ["joined:".to_string() + S1]);
        assert!(matches!(&kinds[0], RoomEventKind::ParticipantJoined { participant } if participant == &new));
    }

    #[test]
    fn track_changes_come_removed_then_added_then_updated() {
        let old = participant(&[
            ("mic", TrackKind::Audio),
            ("cam", TrackKind::Video),
            ("screen", TrackKind::Video),
        ]);
        let mut new = participant(&[
            ("screen", TrackKind::Video),
            ("cam2", TrackKind::Video),
            ("mic", TrackKind::Video),
        ]);
        new.metadata = Some(json!({"hand": "raised"}));
        assert_eq!(
            describe(&diff(Some(&old), &new)),
            ["removed:mic", "removed:cam", "added:cam2", "added:mic", "updated"]
        );
    }

    #[test]
    fn simulcast_layers_count_as_part_of_the_track() {
        let old = participant(&[("cam", TrackKind::Video)]);
        let mut new = old.clone();
        new.tracks[0].rids = vec!["h".into(), "l".into()];
        assert_eq!(describe(&diff(Some(&old), &new)), ["removed:cam", "added:cam"]);
    }

    #[test]
    fn no_change_and_reordering_give_nothing() {
        let old = participant(&[("mic", TrackKind::Audio), ("cam", TrackKind::Video)]);
        assert!(diff(Some(&old), &old.clone()).is_empty());
        let reordered = participant(&[("cam", TrackKind::Video), ("mic", TrackKind::Audio)]);
        assert!(diff(Some(&old), &reordered).is_empty());
    }

    #[test]
    fn name_or_source_change_is_an_update() {
        let old = participant(&[]);
        let mut renamed = old.clone();
        renamed.name = Some("Alice".into());
        assert_eq!(describe(&diff(Some(&old), &renamed)), ["updated"]);
        let mut moved = old.clone();
        moved.source = ParticipantSource::Gateway;
        assert_eq!(describe(&diff(Some(&old), &moved)), ["updated"]);
    }

    #[test]
    fn a_new_session_is_a_leave_then_a_join() {
        let old = participant(&[("mic", TrackKind::Audio)]);
        let mut new = old.clone();
        new.session_id = S2.into();
        assert_eq!(
            describe(&diff(Some(&old), &new)),
            [format!("left:{S1}"), format!("joined:{S2}")]
        );
    }
}
