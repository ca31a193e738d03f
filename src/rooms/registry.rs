//! The in-memory room registry: participants per room, a sequence number per room, and one broadcast
//! channel per watched room. Every change happens under one short lock (never held across an `.await`), and
//! events are sent under that same lock, so their order on every channel is their `seq` order.

use super::RoomError;
use super::diff::diff;
use super::model::{
    Participant, PublishedTrack, RoomEvent, RoomEventKind, RoomSnapshot, validate_participant, validate_room_name,
    validate_track,
};
use super::subscription::RoomSubscription;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// Events a subscriber may fall behind by before it gets `Lagged`.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

/// What a subscription receives: the event, shared between subscribers.
pub(super) type EventReceiver = broadcast::Receiver<Arc<RoomEvent>>;

struct Room {
    participants: BTreeMap<String, Participant>,
    /// The `seq` of the last event.
    seq: u64,
    /// Created by the first subscriber, dropped once nobody listens.
    events: Option<broadcast::Sender<Arc<RoomEvent>>>,
}

impl Room {
    fn new() -> Self {
        Self {
            participants: BTreeMap::new(),
            seq: 0,
            events: None,
        }
    }

    fn emit(&mut self, room: &str, kind: RoomEventKind) -> RoomEvent {
        self.seq += 1;
        let event = RoomEvent {
            room: room.to_string(),
            seq: self.seq,
            kind,
        };
        if let Some(sender) = &self.events {
            // An error only means that nobody listens right now.
            let _ = sender.send(Arc::new(event.clone()));
        }
        event
    }

    /// Stores `participant` and emits the events that describe the change.
    fn apply(&mut self, room: &str, participant: Participant) -> Vec<RoomEvent> {
        let kinds = diff(self.participants.get(&participant.id), &participant);
        self.participants.insert(participant.id.clone(), participant);
        kinds.into_iter().map(|kind| self.emit(room, kind)).collect()
    }

    fn snapshot(&self, room: &str) -> RoomSnapshot {
        RoomSnapshot {
            name: room.to_string(),
            participants: self.participants.values().cloned().collect(),
            version: self.seq,
        }
    }

    /// Whether the room can be forgotten: no participants and nobody subscribed.
    fn is_idle(&mut self) -> bool {
        if self.events.as_ref().is_some_and(|sender| sender.receiver_count() == 0) {
            self.events = None;
        }
        self.participants.is_empty() && self.events.is_none()
    }
}

struct Inner {
    rooms: Mutex<HashMap<String, Room>>,
    event_buffer: usize,
}

/// The rooms the gateway knows; cheap to clone.
///
/// A room exists while it has participants ([`Rooms::get`], [`Rooms::list`]). Its sequence number grows by
/// one per event; a room that emptied while nobody was subscribed is forgotten, and starts again from 0 if
/// it comes back.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

impl Default for Rooms {
    fn default() -> Self {
        Self::new()
    }
}

impl Rooms {
    /// An empty registry; subscribers may fall [`DEFAULT_EVENT_BUFFER`] events behind.
    pub fn new() -> Self {
        Self::with_event_buffer(DEFAULT_EVENT_BUFFER)
    }

    /// An empty registry whose subscribers may fall `capacity` events behind (at least 1).
    pub fn with_event_buffer(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                rooms: Mutex::new(HashMap::new()),
                event_buffer: capacity.max(1),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // Every update completes before the lock is released and nothing in it can panic halfway through an
        // update, so a poisoned lock still holds consistent state.
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts or replaces a participant (matched by id) and returns the events describing the change, in
    /// the order they were sent (see the module docs); empty when nothing changed.
    pub fn upsert_participant(&self, room: &str, participant: Participant) -> Result<Vec<RoomEvent>, RoomError> {
        validate_room_name(room)?;
        validate_participant(&participant)?;
        let mut rooms = self.lock();
        let state = rooms.entry(room.to_string()).or_insert_with(Room::new);
        Ok(state.apply(room, participant))
    }

    /// Removes a participant: one `ParticipantLeft` event, which also stands for the removal of its tracks.
    pub fn remove_participant(&self, room: &str, participant_id: &str) -> Result<RoomEvent, RoomError> {
        self.remove_where(room, participant_id, |_| true)
            .ok_or_else(|| participant_not_found(room, participant_id))
    }

    /// Removes every participant of a room (one `ParticipantLeft` each, ordered by participant id).
    pub fn remove_room(&self, room: &str) -> Result<Vec<RoomEvent>, RoomError> {
        let mut rooms = self.lock();
        let state = rooms
            .get_mut(room)
            .filter(|state| !state.participants.is_empty())
            .ok_or_else(|| room_not_found(room))?;
        let participants = std::mem::take(&mut state.participants);
        let events: Vec<RoomEvent> = participants
            .into_values()
            .map(|p| {
                let kind = RoomEventKind::ParticipantLeft {
                    participant_id: p.id,
                    session_id: p.session_id,
                };
                state.emit(room, kind)
            })
            .collect();
        if state.is_idle() {
            rooms.remove(room);
        }
        Ok(events)
    }

    /// Adds a track to a participant, or replaces its track of the same name (events as for an upsert:
    /// `TrackAdded`, or `TrackRemoved` then `TrackAdded` for a changed track, or nothing if it is identical).
    /// Errors name fields relative to the track (`trackName`), except the per-participant limit (`tracks`).
    pub fn add_track(
        &self,
        room: &str,
        participant_id: &str,
        track: PublishedTrack,
    ) -> Result<Vec<RoomEvent>, RoomError> {
        self.add_track_of(room, participant_id, None, track)
    }

    /// Removes a participant's track: one `TrackRemoved` event.
    pub fn remove_track(&self, room: &str, participant_id: &str, track_name: &str) -> Result<RoomEvent, RoomError> {
        self.remove_track_of(room, participant_id, None, track_name)
    }

    /// `add_track`, only while the participant is in SFU session `session_id` (when given).
    pub(super) fn add_track_of(
        &self,
        room: &str,
        participant_id: &str,
        session_id: Option<&str>,
        track: PublishedTrack,
    ) -> Result<Vec<RoomEvent>, RoomError> {
        validate_track(&track)?;
        let mut rooms = self.lock();
        let state = room_of(&mut rooms, room, participant_id, session_id)?;
        let mut participant = state.participants[participant_id].clone();
        match participant.tracks.iter_mut().find(|t| t.track_name == track.track_name) {
            Some(existing) => *existing = track,
            None => participant.tracks.push(track),
        }
        validate_participant(&participant)?;
        Ok(state.apply(room, participant))
    }

    /// `remove_track`, only while the participant is in SFU session `session_id` (when given).
    pub(super) fn remove_track_of(
        &self,
        room: &str,
        participant_id: &str,
        session_id: Option<&str>,
        track_name: &str,
    ) -> Result<RoomEvent, RoomError> {
        let mut rooms = self.lock();
        let state = room_of(&mut rooms, room, participant_id, session_id)?;
        let participant = state
            .participants
            .get_mut(participant_id)
            .ok_or_else(|| participant_not_found(room, participant_id))?;
        let position = participant
            .tracks
            .iter()
            .position(|t| t.track_name == track_name)
            .ok_or_else(|| {
                RoomError::not_found(format!(
                    "track {track_name:?} of participant {participant_id:?} in room {room:?}"
                ))
            })?;
        let track = participant.tracks.remove(position);
        let kind = RoomEventKind::TrackRemoved {
            participant_id: participant.id.clone(),
            session_id: participant.session_id.clone(),
            track_name: track.track_name,
        };
        Ok(state.emit(room, kind))
    }

    /// A `Dtmf` event for a participant, only while it is in SFU session `session_id`.
    pub(super) fn dtmf_of(
        &self,
        room: &str,
        participant_id: &str,
        session_id: &str,
        digit: char,
    ) -> Result<RoomEvent, RoomError> {
        let mut rooms = self.lock();
        let state = room_of(&mut rooms, room, participant_id, Some(session_id))?;
        let kind = RoomEventKind::Dtmf {
            participant_id: participant_id.to_string(),
            session_id: session_id.to_string(),
            digit: digit.to_string(),
        };
        Ok(state.emit(room, kind))
    }

    /// The room's current state, if it has participants.
    pub fn get(&self, room: &str) -> Option<RoomSnapshot> {
        let rooms = self.lock();
        rooms
            .get(room)
            .filter(|state| !state.participants.is_empty())
            .map(|state| state.snapshot(room))
    }

    /// Whether the room has participants.
    pub fn contains(&self, room: &str) -> bool {
        self.lock()
            .get(room)
            .is_some_and(|state| !state.participants.is_empty())
    }

    /// The names of the rooms that have participants, sorted.
    pub fn list(&self) -> Vec<String> {
        let rooms = self.lock();
        let mut names: Vec<String> = rooms
            .iter()
            .filter(|(_, state)| !state.participants.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort_unstable();
        names
    }

    /// The room's snapshot and a receiver of every later event, with no gap and no duplicate: both are taken
    /// under the lock the changes hold while they send. A room nobody has joined yet gives an empty snapshot
    /// (version 0) and is kept while the subscription lives. The name is not validated here: check it with
    /// [`validate_room_name`] when it comes from outside.
    pub fn subscribe(&self, room: &str) -> RoomSubscription {
        let (snapshot, receiver) = self.attach(room);
        RoomSubscription::new(self.clone(), room.to_string(), snapshot, receiver)
    }

    /// Snapshot and receiver, taken together (for `subscribe` and `RoomSubscription::resync`).
    pub(super) fn attach(&self, room: &str) -> (RoomSnapshot, EventReceiver) {
        let mut rooms = self.lock();
        let state = rooms.entry(room.to_string()).or_insert_with(Room::new);
        let receiver = state
            .events
            .get_or_insert_with(|| broadcast::Sender::new(self.inner.event_buffer))
            .subscribe();
        (state.snapshot(room), receiver)
    }

    /// Drops a subscription's receiver under the lock, then forgets the room if that left it idle.
    pub(super) fn detach(&self, room: &str, receiver: Option<EventReceiver>) {
        let mut rooms = self.lock();
        drop(receiver);
        if rooms.get_mut(room).is_some_and(Room::is_idle) {
            rooms.remove(room);
        }
    }

    /// Adds the participants whose id the room does not have yet (the resolver's reply; already validated),
    /// in the given order; present ones win, as they are newer than the webhook's answer.
    pub(super) fn seed(&self, room: &str, participants: Vec<Participant>) -> Vec<RoomEvent> {
        let mut rooms = self.lock();
        let state = rooms.entry(room.to_string()).or_insert_with(Room::new);
        let mut events = Vec::new();
        for participant in participants {
            if !state.participants.contains_key(&participant.id) {
                events.extend(state.apply(room, participant));
            }
        }
        if state.is_idle() {
            rooms.remove(room);
        }
        events
    }

    /// Removes a participant if `matches` accepts it; forgets the room if that left it idle.
    pub(super) fn remove_where(
        &self,
        room: &str,
        participant_id: &str,
        matches: impl FnOnce(&Participant) -> bool,
    ) -> Option<RoomEvent> {
        let mut rooms = self.lock();
        let state = rooms.get_mut(room)?;
        if !state.participants.get(participant_id).is_some_and(matches) {
            return None;
        }
        let participant = state.participants.remove(participant_id)?;
        let event = state.emit(
            room,
            RoomEventKind::ParticipantLeft {
                participant_id: participant.id,
                session_id: participant.session_id,
            },
        );
        if state.is_idle() {
            rooms.remove(room);
        }
        Some(event)
    }
}

/// The room holding participant `participant_id`, of SFU session `session_id` when given.
fn room_of<'a>(
    rooms: &'a mut HashMap<String, Room>,
    room: &str,
    participant_id: &str,
    session_id: Option<&str>,
) -> Result<&'a mut Room, RoomError> {
    rooms
        .get_mut(room)
        .filter(|state| {
            state
                .participants
                .get(participant_id)
                .is_some_and(|p| session_id.is_none_or(|s| p.session_id == s))
        })
        .ok_or_else(|| participant_not_found(room, participant_id))
}

fn room_not_found(room: &str) -> RoomError {
    RoomError::not_found(format!("room {room:?}"))
}

fn participant_not_found(room: &str, participant_id: &str) -> RoomError {
    RoomError::not_found(format!("participant {participant_id:?} in room {room:?}"))
}

#[cfg(test)]
mod tests;
