use super::*;
use crate::rooms::model::{MAX_TRACKS_PER_PARTICIPANT, ParticipantSource};
use crate::sfu::api::TrackKind;
use serde_json::json;

const S1: &str = "e017a2629c754fedc1f7d8587e06d126";
const S2: &str = "0123456789abcdef0123456789abcdef";

fn participant(id: &str, tracks: &[&str]) -> Participant {
    let mut p = Participant::new(id, S1, ParticipantSource::Api);
    p.tracks = tracks
        .iter()
        .map(|n| PublishedTrack::new(*n, TrackKind::Audio))
        .collect();
    p
}

/// `seq type:detail` for each event.
fn describe(events: &[RoomEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let what = match &e.kind {
                RoomEventKind::ParticipantJoined { participant } => format!("joined:{}", participant.id),
                RoomEventKind::ParticipantLeft { participant_id, .. } => format!("left:{participant_id}"),
                RoomEventKind::TrackAdded { track, .. } => format!("added:{}", track.track_name),
                RoomEventKind::TrackRemoved { track_name, .. } => format!("removed:{track_name}"),
                RoomEventKind::ParticipantUpdated { participant } => format!("updated:{}", participant.id),
                RoomEventKind::Dtmf { digit, .. } => format!("dtmf:{digit}"),
            };
            format!("{} {what}", e.seq)
        })
        .collect()
}

fn field_of<T: std::fmt::Debug>(result: Result<T, RoomError>) -> String {
    match result {
        Err(RoomError::Invalid { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn upserts_emit_the_diff_with_consecutive_seqs() {
    let rooms = Rooms::new();
    let r = |events: Result<Vec<RoomEvent>, RoomError>| describe(&events.unwrap());
    assert_eq!(
        r(rooms.upsert_participant("r", participant("alice", &["mic"]))),
        ["1 joined:alice"]
    );
    assert_eq!(
        r(rooms.upsert_participant("r", participant("bob", &[]))),
        ["2 joined:bob"]
    );
    let mut alice = participant("alice", &["cam", "screen"]);
    alice.name = Some("Alice".into());
    assert_eq!(
        r(rooms.upsert_participant("r", alice.clone())),
        ["3 removed:mic", "4 added:cam", "5 added:screen", "6 updated:alice"]
    );
    assert!(rooms.upsert_participant("r", alice.clone()).unwrap().is_empty());
    let mut moved = alice.clone();
    moved.session_id = S2.into();
    assert_eq!(
        r(rooms.upsert_participant("r", moved)),
        ["7 left:alice", "8 joined:alice"]
    );
    let left = rooms.remove_participant("r", "alice").unwrap();
    assert_eq!(describe(&[left]), ["9 left:alice"]);
    let snapshot = rooms.get("r").unwrap();
    assert_eq!(snapshot.version, 9);
    assert_eq!(snapshot.participants, [participant("bob", &[])]);
    assert_eq!(snapshot.name, "r");
}

#[test]
fn invalid_input_is_refused_and_changes_nothing() {
    let rooms = Rooms::new();
    assert_eq!(
        field_of(rooms.upsert_participant("no spaces", participant("a", &[]))),
        "room"
    );
    let mut bad = participant("a", &["mic"]);
    bad.session_id = "xyz".into();
    assert_eq!(field_of(rooms.upsert_participant("r", bad)), "sessionId");
    assert_eq!(
        field_of(rooms.upsert_participant("r", participant("a", &["mic", "mic"]))),
        "tracks[1].trackName"
    );
    assert!(rooms.get("r").is_none());
    assert!(rooms.list().is_empty());
}

#[test]
fn tracks_are_added_replaced_and_removed_one_by_one() {
    let rooms = Rooms::new();
    rooms.upsert_participant("r", participant("gw", &[])).unwrap();
    let video = PublishedTrack::new("video", TrackKind::Video);
    assert_eq!(
        describe(&rooms.add_track("r", "gw", video.clone()).unwrap()),
        ["2 added:video"]
    );
    assert!(
        rooms.add_track("r", "gw", video.clone()).unwrap().is_empty(),
        "identical track"
    );
    let simulcast = PublishedTrack {
        rids: vec!["h".into(), "l".into()],
        ..video
    };
    assert_eq!(
        describe(&rooms.add_track("r", "gw", simulcast.clone()).unwrap()),
        ["3 removed:video", "4 added:video"]
    );
    assert_eq!(rooms.get("r").unwrap().participants[0].tracks, [simulcast]);
    assert_eq!(
        describe(&[rooms.remove_track("r", "gw", "video").unwrap()]),
        ["5 removed:video"]
    );

    assert!(matches!(
        rooms.remove_track("r", "gw", "video"),
        Err(RoomError::NotFound { .. })
    ));
    assert!(matches!(
        rooms.remove_track("r", "nobody", "video"),
        Err(RoomError::NotFound { .. })
    ));
    let audio = PublishedTrack::new("audio", TrackKind::Audio);
    assert!(matches!(
        rooms.add_track("other", "gw", audio.clone()),
        Err(RoomError::NotFound { .. })
    ));
    assert_eq!(
        field_of(rooms.add_track("r", "gw", PublishedTrack::new("", TrackKind::Audio))),
        "trackName"
    );
    for i in 0..MAX_TRACKS_PER_PARTICIPANT {
        rooms
            .add_track("r", "gw", PublishedTrack::new(format!("t{i}"), TrackKind::Audio))
            .unwrap();
    }
    assert_eq!(field_of(rooms.add_track("r", "gw", audio)), "tracks");
}

#[test]
fn removing_a_room_lets_everyone_leave_in_id_order() {
    let rooms = Rooms::new();
    for id in ["carol", "alice", "bob"] {
        rooms.upsert_participant("r", participant(id, &["mic"])).unwrap();
    }
    rooms.upsert_participant("a-room", participant("x", &[])).unwrap();
    assert_eq!(rooms.list(), ["a-room", "r"]);
    assert!(rooms.contains("r"));
    assert_eq!(
        describe(&rooms.remove_room("r").unwrap()),
        ["4 left:alice", "5 left:bob", "6 left:carol"]
    );
    assert!(!rooms.contains("r"));
    assert_eq!(rooms.list(), ["a-room"]);
    assert!(matches!(rooms.remove_room("r"), Err(RoomError::NotFound { .. })));
    assert!(matches!(
        rooms.remove_participant("r", "alice"),
        Err(RoomError::NotFound { .. })
    ));
    assert!(matches!(
        rooms.remove_participant("a-room", "y"),
        Err(RoomError::NotFound { .. })
    ));
}

#[test]
fn seeding_keeps_participants_that_are_already_there() {
    let rooms = Rooms::new();
    let mut registered = participant("alice", &["mic"]);
    registered.metadata = Some(json!({"from": "api"}));
    rooms.upsert_participant("r", registered.clone()).unwrap();
    let mut stale = participant("alice", &[]);
    stale.source = ParticipantSource::Resolver;
    let mut bob = participant("bob", &[]);
    bob.source = ParticipantSource::Resolver;
    let events = rooms.seed("r", vec![stale, bob.clone()]);
    assert_eq!(describe(&events), ["2 joined:bob"]);
    assert_eq!(rooms.get("r").unwrap().participants, [registered, bob]);
    assert!(rooms.seed("empty", Vec::new()).is_empty());
    assert_eq!(rooms.list(), ["r"], "seeding nothing creates no room");
}
