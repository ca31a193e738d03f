//! Where an egress's tracks come from: named tracks, a room followed through its events, or an RTMP ingress
//! followed into whatever SFU session its publisher is in; and the requests that keep them decodable
//! (keyframes, simulcast layers).

use super::composite::{Composite, TrackInfo};
use super::session::EgressDeps;
use super::store::{EgressState, TrackRef};
use crate::rooms::follow::TrackKey;
use crate::rooms::pull::RoomPull;
use crate::rooms::{RoomSubscription, SubscriptionError};
use crate::sfu::peer::{Peer, RemoteTrackSpec, SubscribedTrack};
use crate::supervisor::SessionError;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Keyframe requests, at most one per track per half second.
#[derive(Default)]
pub(super) struct KeyframeAsks(HashMap<String, Instant>);

impl KeyframeAsks {
    pub(super) async fn ask(&mut self, peer: &Peer, mid: &str) {
        let now = Instant::now();
        if self
            .0
            .get(mid)
            .is_some_and(|last| now - *last < Duration::from_millis(500))
        {
            return;
        }
        self.0.insert(mid.to_string(), now);
        let _ = peer.request_keyframe(mid.to_string()).await;
    }
}

/// The room events, or never (an egress of named tracks).
pub(super) async fn room_event(
    sub: &mut Option<RoomSubscription>,
) -> Result<crate::rooms::RoomEvent, SubscriptionError> {
    match sub {
        Some(sub) => sub.recv().await,
        None => std::future::pending().await,
    }
}

/// The room's newly pulled tracks, or never.
pub(super) async fn pulled(pull: &mut Option<RoomPull>) -> Vec<SubscribedTrack> {
    match pull {
        Some(pull) => pull.next().await,
        None => std::future::pending().await,
    }
}

pub(super) fn key(track: &SubscribedTrack) -> TrackKey {
    (track.session_id.clone(), track.track_name.clone())
}

/// A subscribed track with no known layers.
pub(super) fn info(track: &SubscribedTrack) -> TrackInfo {
    TrackInfo {
        key: key(track),
        rids: Vec::new(),
    }
}

/// Asks the SFU for the layers the layout chose.
pub(super) async fn switch_layers(peer: &Peer, composite: &mut Composite, keyframes: &mut KeyframeAsks) {
    for (mid, rid) in composite.take_layer_changes() {
        tracing::debug!(%mid, %rid, "egress: switching simulcast layer");
        if let Err(e) = peer.prefer_layer(mid.clone(), rid).await {
            tracing::warn!(error = %e, %mid, "egress: layer switch refused");
        }
        keyframes.ask(peer, &mid).await;
    }
}

/// What an egress takes.
#[derive(Debug, Clone)]
pub enum Sources {
    /// These tracks.
    Tracks(Vec<TrackRef>),
    /// Every audio and video track of this room, following joins and leaves.
    Room(String),
    /// The tracks of this RTMP ingress, in whatever SFU session its publisher is in now.
    Ingress(String),
}

/// An ingress being followed, and the SFU session its tracks were taken from.
pub(super) struct IngressFollow {
    pub(super) id: String,
    pub(super) session: Option<String>,
}

/// Takes the ingress's tracks when it is live in a session other than the one they were taken from (its
/// publisher came back after the reconnect grace): the old subscriptions go, the new ones come in. A
/// refusal (no media yet) is tried again at the next call.
pub(super) async fn follow_ingress(
    deps: &EgressDeps,
    peer: &Peer,
    follow: &mut IngressFollow,
    tracks: &mut HashMap<String, TrackInfo>,
    composite: &mut Composite,
    keyframes: &mut KeyframeAsks,
) {
    let Some(sfu) = deps.ingresses.get(&follow.id).and_then(|i| i.sfu) else {
        return;
    };
    if sfu.tracks.is_empty() || follow.session.as_deref() == Some(sfu.session_id.as_str()) {
        return;
    }
    let specs = sfu
        .tracks
        .iter()
        .map(|t| RemoteTrackSpec {
            session_id: sfu.session_id.clone(),
            track_name: t.track_name.clone(),
            preferred_rid: None,
        })
        .collect();
    match tokio::time::timeout(Duration::from_secs(5), peer.subscribe(specs)).await {
        Ok(Ok(subscribed)) => {
            let old: Vec<String> = tracks.drain().map(|(mid, _)| mid).collect();
            for mid in &old {
                composite.remove(mid);
            }
            if !old.is_empty() {
                let _ = peer.close(old).await;
            }
            for track in &subscribed {
                keyframes.ask(peer, &track.mid).await;
                tracks.insert(track.mid.clone(), info(track));
            }
            tracing::info!(ingress = %follow.id, tracks = subscribed.len(), "egress: following the ingress's session");
            follow.session = Some(sfu.session_id);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "egress: the ingress's tracks are not available yet"),
        Err(_) => tracing::debug!("egress: subscribing to the ingress timed out"),
    }
}

/// Subscribes to named tracks; the egress fails if the SFU refuses.
pub(super) async fn subscribe_named(
    deps: &EgressDeps,
    id: &str,
    peer: &Peer,
    tracks: Vec<TrackRef>,
) -> Result<Vec<SubscribedTrack>, SessionError> {
    let specs = tracks
        .into_iter()
        .map(|t| RemoteTrackSpec {
            session_id: t.session_id,
            track_name: t.track_name,
            preferred_rid: None,
        })
        .collect();
    peer.subscribe(specs).await.map_err(|e| {
        let reason = format!("cannot subscribe to the tracks: {e}");
        deps.store.update(id, |egress| {
            egress.state = EgressState::Failed;
            egress.reason = Some(reason.clone());
        });
        deps.webhooks
            .send("egress.failed", serde_json::json!({"egressId": id, "reason": reason}));
        reason.into()
    })
}
