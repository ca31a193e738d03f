//! Pulls the tracks a [`Follower`] wants through one SFU [`Peer`], following the room: new tracks are
//! subscribed, tracks the SFU will not hand out yet (a publisher that has sent no media) are asked for again,
//! subscriptions that arrive after their track was removed are closed. Used by the phones' room mix and by
//! room egresses.

use super::follow::{Follower, TrackKey};
use super::{RoomEvent, RoomSnapshot};
use crate::sfu::peer::{Peer, RemoteTrackSpec, SubscribedTrack};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Subscription results, reported back to the owner's task.
type Subscribed = (Vec<TrackKey>, Result<Vec<SubscribedTrack>, String>);

/// Retries at this pace for the first `FAST_TRIES` (a publisher that starts sending is taken at once)...
const FAST_RETRY: Duration = Duration::from_millis(200);
const FAST_TRIES: u32 = 25;
/// ...then at this one, for as long as the track is wanted.
const SLOW_RETRY: Duration = Duration::from_secs(2);

/// The pulls of one session's room tracks.
pub struct RoomPull {
    peer: Arc<Peer>,
    follower: Follower,
    /// Tracks asked for again, with the number of tries so far.
    retries: HashMap<TrackKey, u32>,
    done_tx: mpsc::Sender<Subscribed>,
    done: mpsc::Receiver<Subscribed>,
}

impl RoomPull {
    /// Nothing pulled yet.
    pub fn new(peer: Arc<Peer>, follower: Follower) -> Self {
        let (done_tx, done) = mpsc::channel(16);
        Self {
            peer,
            follower,
            retries: HashMap::new(),
            done_tx,
            done,
        }
    }

    /// Aligns with a snapshot (the start, or after a lag): pulls what is new; returns what is no longer wanted.
    pub fn snapshot(&mut self, snapshot: &RoomSnapshot) -> Vec<TrackKey> {
        let changes = self.follower.snapshot(snapshot);
        self.apply(changes)
    }

    /// Applies a room event: pulls what is new; returns what is no longer wanted (the owner stops using those
    /// tracks and [`close`](Self::close)s their mids).
    pub fn event(&mut self, event: &RoomEvent) -> Vec<TrackKey> {
        let changes = self.follower.event(event);
        self.apply(changes)
    }

    fn apply(&mut self, changes: super::follow::Changes) -> Vec<TrackKey> {
        for key in &changes.remove {
            self.retries.remove(key);
        }
        self.subscribe(changes.add, Duration::ZERO);
        changes.remove
    }

    /// The next tracks the SFU handed out that are still wanted. Cancel-safe.
    pub async fn next(&mut self) -> Vec<SubscribedTrack> {
        let Some((wanted, result)) = self.done.recv().await else {
            return Vec::new(); // never: `self` holds a sender
        };
        match result {
            Ok(subscribed) => {
                let mut unwanted = Vec::new();
                let mut got = Vec::new();
                let mut taken = Vec::new();
                for track in subscribed {
                    let key = (track.session_id.clone(), track.track_name.clone());
                    if self.follower.wants(&key) {
                        self.retries.remove(&key);
                        taken.push(track);
                    } else {
                        unwanted.push(track.mid);
                    }
                    got.push(key);
                }
                self.close(unwanted);
                let missing = wanted
                    .into_iter()
                    .filter(|k| !got.contains(k) && self.follower.wants(k))
                    .collect();
                self.retry(missing);
                taken
            }
            Err(e) => {
                tracing::warn!(error = %e, tracks = wanted.len(), "subscribing to room tracks failed");
                let missing = wanted.into_iter().filter(|k| self.follower.wants(k)).collect();
                self.retry(missing);
                Vec::new()
            }
        }
    }

    /// After the peer replaced its SFU session: asks again (on the retry schedule) for every wanted track
    /// not among `restored`.
    pub fn restore(&mut self, restored: &[SubscribedTrack]) {
        let have: Vec<TrackKey> = restored
            .iter()
            .map(|t| (t.session_id.clone(), t.track_name.clone()))
            .collect();
        let missing = self.follower.wanted().filter(|k| !have.contains(k)).cloned().collect();
        self.retry(missing);
    }

    /// The simulcast layers of a followed track, best first (empty if it has none).
    pub fn rids(&self, key: &TrackKey) -> &[String] {
        self.follower.rids(key)
    }

    /// Ends subscriptions (in the background; a failure is only logged).
    pub fn close(&self, mids: Vec<String>) {
        if mids.is_empty() {
            return;
        }
        let peer = self.peer.clone();
        tokio::spawn(async move {
            if let Err(e) = peer.close(mids).await {
                tracing::debug!(error = %e, "closing room tracks failed");
            }
        });
    }

    fn retry(&mut self, keys: Vec<TrackKey>) {
        for key in keys {
            let n = self.retries.entry(key.clone()).or_insert(0);
            *n += 1;
            let delay = if *n <= FAST_TRIES { FAST_RETRY } else { SLOW_RETRY };
            self.subscribe(vec![key], delay);
        }
    }

    fn subscribe(&self, keys: Vec<TrackKey>, delay: Duration) {
        if keys.is_empty() {
            return;
        }
        let specs = keys
            .iter()
            .map(|(session_id, track_name)| RemoteTrackSpec {
                session_id: session_id.clone(),
                track_name: track_name.clone(),
                preferred_rid: None,
            })
            .collect();
        let (peer, done) = (self.peer.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let result = peer.subscribe(specs).await.map_err(|e| e.to_string());
            let _ = done.send((keys, result)).await;
        });
    }
}
