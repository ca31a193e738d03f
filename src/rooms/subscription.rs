//! A subscriber's view of one room: a snapshot, then every later event in order.

use super::model::{RoomEvent, RoomSnapshot};
use super::registry::{EventReceiver, Rooms};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Why [`RoomSubscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The subscriber fell more than the event buffer behind and `missed` events are lost. Call
    /// [`RoomSubscription::resync`] for a fresh snapshot; receiving on without it skips those events.
    #[error("the subscriber fell behind and missed {missed} room events")]
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
    /// No more events will come (the subscription was taken apart).
    #[error("the room subscription is closed")]
    Closed,
}

/// The state of a room and the events that follow it, from [`Rooms::subscribe`].
///
/// The first event received has `seq == snapshot.version + 1`, and each next one the following `seq`: no gap,
/// no duplicate. Events arrive as soon as they happen. While a subscription lives its room is kept, even with
/// no participants. Dropping it unsubscribes.
pub struct RoomSubscription {
    /// The room's state when the subscription (or the last [`resync`](Self::resync)) started.
    pub snapshot: RoomSnapshot,
    rooms: Rooms,
    room: String,
    /// Always `Some` except while being dropped.
    receiver: Option<EventReceiver>,
}

impl RoomSubscription {
    pub(super) fn new(rooms: Rooms, room: String, snapshot: RoomSnapshot, receiver: EventReceiver) -> Self {
        Self {
            snapshot,
            rooms,
            room,
            receiver: Some(receiver),
        }
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The next event. Cancel-safe: dropping the future loses no event. `snapshot` is not updated; apply the
    /// events to it if you need the current state.
    pub async fn recv(&mut self) -> Result<RoomEvent, SubscriptionError> {
        let Some(receiver) = self.receiver.as_mut() else {
            return Err(SubscriptionError::Closed);
        };
        match receiver.recv().await {
            Ok(event) => Ok(Arc::unwrap_or_clone(event)),
            Err(RecvError::Lagged(missed)) => Err(SubscriptionError::Lagged { missed }),
            Err(RecvError::Closed) => Err(SubscriptionError::Closed),
        }
    }

    /// Replaces `snapshot` with the room's current state and continues with the events after it (after
    /// [`SubscriptionError::Lagged`]); returns the new snapshot.
    pub fn resync(&mut self) -> &RoomSnapshot {
        let (snapshot, receiver) = self.rooms.attach(&self.room);
        self.snapshot = snapshot;
        // The old receiver goes after the new one exists, so the room is never idle in between.
        self.receiver = Some(receiver);
        &self.snapshot
    }
}

impl Drop for RoomSubscription {
    fn drop(&mut self) {
        self.rooms.detach(&self.room, self.receiver.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::model::{Participant, ParticipantSource, RoomEventKind};
    use std::collections::BTreeSet;
    use std::time::Duration;

    const SESSION: &str = "e017a2629c754fedc1f7d8587e06d126";
    const WAIT: Duration = Duration::from_secs(5);

    fn participant(id: impl Into<String>) -> Participant {
        Participant::new(id, SESSION, ParticipantSource::Api)
    }

    async fn next(subscription: &mut RoomSubscription) -> Result<RoomEvent, SubscriptionError> {
        tokio::time::timeout(WAIT, subscription.recv())
            .await
            .expect("no room event within 5 s")
    }

    #[tokio::test]
    async fn snapshot_then_later_events_in_order() {
        let rooms = Rooms::new();
        rooms.upsert_participant("r", participant("a")).unwrap();
        let mut subscription = rooms.subscribe("r");
        assert_eq!(subscription.room(), "r");
        assert_eq!(subscription.snapshot.version, 1);
        assert_eq!(subscription.snapshot.participants, [participant("a")]);
        rooms.upsert_participant("r", participant("b")).unwrap();
        rooms.remove_participant("r", "a").unwrap();
        let joined = next(&mut subscription).await.unwrap();
        assert_eq!(joined.seq, 2);
        assert!(matches!(joined.kind, RoomEventKind::ParticipantJoined { ref participant } if participant.id == "b"));
        let left = next(&mut subscription).await.unwrap();
        assert_eq!(left.seq, 3);
        assert!(
            matches!(left.kind, RoomEventKind::ParticipantLeft { ref participant_id, .. } if participant_id == "a")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_gap_and_no_duplicate_under_concurrent_changes() {
        const TOTAL: usize = 300;
        let rooms = Rooms::new();
        let (halfway_tx, halfway_rx) = tokio::sync::oneshot::channel();
        let writer = {
            let rooms = rooms.clone();
            tokio::spawn(async move {
                let mut halfway = Some(halfway_tx);
                for i in 0..TOTAL {
                    rooms.upsert_participant("r", participant(format!("p{i}"))).unwrap();
                    if i == TOTAL / 3 {
                        let _ = halfway.take().expect("signalled once").send(());
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        tokio::time::timeout(WAIT, halfway_rx).await.unwrap().unwrap();
        let mut subscription = rooms.subscribe("r");
        let mut seen: BTreeSet<String> = subscription
            .snapshot
            .participants
            .iter()
            .map(|p| p.id.clone())
            .collect();
        let mut expected_seq = subscription.snapshot.version + 1;
        while seen.len() < TOTAL {
            let event = next(&mut subscription).await.unwrap();
            assert_eq!(event.seq, expected_seq, "events must be consecutive");
            expected_seq += 1;
            let RoomEventKind::ParticipantJoined { participant } = event.kind else {
                panic!("unexpected event {event:?}");
            };
            assert!(seen.insert(participant.id), "duplicate join");
        }
        tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
        assert_eq!(expected_seq, TOTAL as u64 + 1);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_and_resyncs() {
        let rooms = Rooms::with_event_buffer(4);
        let mut subscription = rooms.subscribe("r");
        assert_eq!(subscription.snapshot.version, 0);
        for i in 0..10 {
            rooms.upsert_participant("r", participant(format!("p{i}"))).unwrap();
        }
        assert_eq!(
            next(&mut subscription).await,
            Err(SubscriptionError::Lagged { missed: 6 })
        );
        assert_eq!(subscription.resync().version, 10);
        assert_eq!(subscription.snapshot.participants.len(), 10);
        rooms.remove_participant("r", "p3").unwrap();
        assert_eq!(next(&mut subscription).await.unwrap().seq, 11);
    }

    #[tokio::test]
    async fn a_watched_room_outlives_its_last_participant() {
        let rooms = Rooms::new();
        let mut subscription = rooms.subscribe("r");
        rooms.upsert_participant("r", participant("a")).unwrap();
        rooms.remove_participant("r", "a").unwrap();
        assert!(rooms.get("r").is_none(), "an empty room is not listed");
        rooms.upsert_participant("r", participant("b")).unwrap();
        let seqs = [
            next(&mut subscription).await.unwrap().seq,
            next(&mut subscription).await.unwrap().seq,
            next(&mut subscription).await.unwrap().seq,
        ];
        assert_eq!(seqs, [1, 2, 3], "the sequence continues while someone watches");
        rooms.remove_room("r").unwrap();
        drop(subscription);
        // Forgotten: the sequence starts again.
        let events = rooms.upsert_participant("r", participant("c")).unwrap();
        assert_eq!(events[0].seq, 1);
    }

    #[test]
    fn an_unwatched_empty_room_is_forgotten() {
        let rooms = Rooms::new();
        rooms.upsert_participant("r", participant("a")).unwrap();
        rooms.remove_participant("r", "a").unwrap();
        assert!(rooms.list().is_empty());
        let subscription = rooms.subscribe("r");
        assert!(subscription.snapshot.participants.is_empty());
        assert_eq!(subscription.snapshot.version, 0, "nothing of the old room is left");
        drop(subscription);
        assert!(rooms.list().is_empty());
        assert!(matches!(
            rooms.remove_room("r"),
            Err(crate::rooms::RoomError::NotFound { .. })
        ));
    }
}
