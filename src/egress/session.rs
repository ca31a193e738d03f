//! One egress: the session task that subscribes to its tracks (named ones, or a room's, following it) through
//! a `Peer`, feeds them into the egress pipeline (a decoding branch per track, composited, encoded, muxed
//! once), and fans the FLV out to one small pipeline per output.
//! An output that fails is retried on its own (`output.rs`); the main pipeline is restarted with backoff only
//! if it fails itself.

use super::composite::{Composite, Pushed, TrackInfo};
use super::fanout::Fanout;
use super::pipeline;
pub use super::sources::Sources;
use super::sources::{
    IngressFollow, KeyframeAsks, follow_ingress, info, key, pulled, room_event, subscribe_named, switch_layers,
};
use super::state::StateReport;
use super::store::{EgressState, EgressStore, TrackRef};
use super::sync::PlayoutClock;
use crate::media::frames::{Frame, appsink_frames};
use crate::media::keyframes::EncoderKeyframes;
use crate::media::{Fragments, PipelineGuard};
use crate::rooms::follow::{Follower, TrackKey};
use crate::rooms::pull::RoomPull;
use crate::rooms::{Rooms, SubscriptionError};
use crate::sfu::api::TrackKind;
use crate::sfu::client::CallsClient;
use crate::sfu::peer::{Codec, InFrame, Peer, PeerConfig, PeerEvent, PeerStreams};
use crate::supervisor::{SessionCtx, SessionError, SessionState};
use gstreamer::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How an egress absorbs jitter and retries (`[egress]` of the configuration).
#[derive(Debug, Clone, Copy)]
pub struct EgressTiming {
    /// How late a frame may arrive and still be composited and mixed.
    pub jitter: Duration,
    /// Longest wait between two restarts of a pipeline or an output.
    pub max_backoff: Duration,
}

/// What an egress session needs.
#[derive(Clone)]
pub struct EgressDeps {
    /// The egress registry.
    pub store: EgressStore,
    /// Calls API client.
    pub client: CallsClient,
    /// Pipeline fragments.
    pub fragments: Fragments,
    /// Event sink.
    pub webhooks: crate::webhooks::Webhooks,
    /// The rooms a room egress follows.
    pub rooms: Rooms,
    /// The ingresses an ingress egress follows.
    pub ingresses: crate::ingress::store::IngressStore,
    /// Jitter allowance and retry cap.
    pub timing: EgressTiming,
}

/// The main pipeline of one attempt, its sources and its FLV output.
struct Running {
    guard: PipelineGuard,
    ended: tokio::sync::oneshot::Receiver<crate::media::PipelineEnd>,
    composite: Composite,
    clock: PlayoutClock,
    flv: mpsc::Receiver<Frame>,
}

impl Running {
    /// The presentation time of a received frame: its capture time plus the common playout delay, or its
    /// arrival time before its track's first sender report (`sync.rs`).
    fn pts(&mut self, frame: &InFrame) -> u64 {
        let now = self.guard.pipeline().current_running_time().map_or(0, |t| t.nseconds());
        let arrival = now.saturating_sub(frame.received.elapsed().as_nanos() as u64);
        let capture = frame.capture.map(|c| {
            let ago = std::time::SystemTime::now().duration_since(c).unwrap_or_default();
            i128::from(now) - ago.as_nanos() as i128
        });
        self.clock.pts(arrival, capture)
    }
}

fn start_pipeline(deps: &EgressDeps, id: &str) -> Result<Running, SessionError> {
    let egress = deps.store.get(id).ok_or("the egress was deleted")?;
    let description = pipeline::describe(&deps.fragments, egress.video, deps.timing.jitter)?;
    let guard = PipelineGuard::parse("egress", &description)?;
    pipeline::keep_timestamps_increasing(guard.pipeline());
    super::priming::compensate(guard.pipeline(), "encoder_a");
    for (name, property, value) in [
        ("encoder_v", "bitrate", egress.video.bitrate_kbps.to_string()),
        // A keyframe every 2 s, as streaming services require.
        ("encoder_v", "key-int-max", (egress.video.fps * 2).to_string()),
        ("encoder_a", "bitrate", (egress.audio.bitrate_kbps * 1000).to_string()),
        // One encoding thread per egress: x264's slice threads cost CPU in hand-offs, and a gateway runs many
        // egresses side by side (a 720p30 ultrafast frame takes a few ms on one core).
        ("encoder_v", "threads", "1".to_string()),
    ] {
        if let Ok(element) = guard.element(name) {
            if element.has_property(property) {
                element.set_property_from_str(property, &value);
            }
        }
    }
    let (flv, _dropped) = appsink_frames(&guard, "flv", 1024)?;
    Ok(Running {
        composite: Composite::new(guard.pipeline().clone(), egress.layout, egress.video),
        clock: PlayoutClock::default(),
        flv,
        ended: guard.start()?,
        guard,
    })
}

/// Runs an egress until it is stopped or deleted.
pub async fn run(
    ctx: SessionCtx,
    deps: EgressDeps,
    id: String,
    sources: Sources,
    outputs: Vec<super::output::Target>,
) -> Result<(), SessionError> {
    let (
        peer,
        PeerStreams {
            mut media_in,
            mut events,
        },
    ) = Peer::connect(deps.client.clone(), PeerConfig::default()).await?;
    let peer = Arc::new(peer);
    // The subscribed tracks by mid.
    let mut tracks: HashMap<String, TrackInfo> = HashMap::new();
    let (mut room, mut pull, mut follow) = (None, None, None);
    match sources {
        Sources::Tracks(named) => {
            let subscribed = tokio::select! {
                () = ctx.cancel_token().cancelled() => return Ok(()),
                subscribed = subscribe_named(&deps, &id, &peer, named) => subscribed?,
            };
            tracks.extend(subscribed.iter().map(|t| (t.mid.clone(), info(t))));
        }
        Sources::Room(name) => {
            let subscription = deps.rooms.subscribe(&name);
            let mut room_pull = RoomPull::new(peer.clone(), Follower::new(&[TrackKind::Audio, TrackKind::Video]));
            room_pull.snapshot(&subscription.snapshot);
            (room, pull) = (Some(subscription), Some(room_pull));
        }
        Sources::Ingress(ingress) => {
            follow = Some(IngressFollow {
                id: ingress,
                session: None,
            })
        }
    }
    let mut keyframes = KeyframeAsks::default();
    tracing::info!(egress = %id, tracks = tracks.len(), "egress subscribed");
    deps.webhooks
        .send("egress.started", serde_json::json!({"egressId": id}));
    let report = StateReport {
        store: deps.store.clone(),
        webhooks: deps.webhooks.clone(),
        egress: id.clone(),
    };
    let mut backoff = Duration::from_millis(500);
    // Output tasks of every attempt: awaited at the end, so `ended` means the recordings are complete.
    let mut output_tasks = Vec::new();
    let outcome: Result<(), SessionError> = 'attempts: loop {
        output_tasks.retain(|task: &tokio::task::JoinHandle<()>| !task.is_finished());
        let mut running = match start_pipeline(&deps, &id) {
            Ok(running) => running,
            Err(e) => break Err(e),
        };
        // Ask for keyframes at once so the decoders start without waiting for the next one.
        for mid in tracks.keys() {
            keyframes.ask(&peer, mid).await;
        }
        let outputs_stop = ctx.cancel_token().child_token();
        // Outputs stop with this attempt, however it ends.
        let _outputs_guard = outputs_stop.clone().drop_guard();
        let mut fanout = Fanout::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut levels = tokio::time::interval(super::speaker::TICK);
        let mut frames = 0u64;
        // Frame captured (or, before sender reports, received) → its FLV video tag out.
        let added_latency = metrics::histogram!("egress_added_latency_seconds");
        let ended = loop {
            tokio::select! {
                () = ctx.cancel_token().cancelled() => break 'attempts Ok(()),
                end = &mut running.ended => break end.map(|e| e.to_string()).unwrap_or_else(|_| "stopped".into()),
                flv = running.flv.recv() => {
                    let Some(flv) = flv else { continue };
                    if !flv.header && flv.data.first() == Some(&super::output::FLV_VIDEO_TAG) {
                        if let Some(now) = running.guard.pipeline().current_running_time() {
                            // A frame is presented at capture + the playout delay: out − presentation + delay
                            // is capture → out, an upper bound of what the egress adds (it includes the path
                            // to the gateway); before any sender report, arrival → out.
                            let hold = running.clock.delay().map_or(0, |d| d.as_nanos() as u64);
                            added_latency.record((now.nseconds() + hold).saturating_sub(flv.pts_ns) as f64 / 1e9);
                        }
                    }
                    if fanout.is_empty() {
                        // The first buffer fixes the caps (with the FLV stream headers) every output starts from.
                        let caps = running.guard.element("flv").ok()
                            .and_then(|sink| sink.static_pad("sink"))
                            .and_then(|pad| pad.current_caps());
                        let Some(caps) = caps else { continue };
                        // The `video-encode-h264` fragment's `encoder`, suffixed in `pipeline::describe`.
                        let encoder_keyframes = EncoderKeyframes::new(running.guard.element("encoder_v").ok());
                        for (i, target) in outputs.iter().enumerate() {
                            let (sender, task) = super::output::spawn(report.clone(), i, target.clone(), caps.clone(), deps.timing.max_backoff, encoder_keyframes.clone(), outputs_stop.clone());
                            fanout.add(sender);
                            output_tasks.push(task);
                        }
                    }
                    fanout.send(&id, &flv);
                }
                frame = media_in.recv() => {
                    let Some(frame) = frame else { break 'attempts Err("the SFU peer stopped".into()) };
                    frames += 1;
                    let (Some(track), Some(codec)) = (tracks.get(&frame.mid), frame.codec) else { continue };
                    if !frame.contiguous && codec != Codec::Opus {
                        keyframes.ask(&peer, &frame.mid).await;
                    }
                    let pts = running.pts(&frame);
                    match running.composite.push(&frame.mid, track, (codec, frame.keyframe, &frame.data), pts) {
                        Ok(Pushed::Ok) => switch_layers(&peer, &mut running.composite, &mut keyframes).await,
                        Ok(Pushed::NeedsKeyframe) => keyframes.ask(&peer, &frame.mid).await,
                        Ok(Pushed::Undecoded(n)) => {
                            tracing::debug!(egress = %id, mid = %frame.mid, frames = n, "egress: the decoder dropped frames; asking for a keyframe");
                            metrics::counter!("egress_undecodable_frames_total").increment(n);
                            keyframes.ask(&peer, &frame.mid).await;
                        }
                        Ok(Pushed::NoRoom) => {}
                        Err(e) => break e.to_string(),
                    }
                }
                event = events.recv() => match event {
                    Some(PeerEvent::Failed { reason }) => break 'attempts Err(reason.into()),
                    Some(PeerEvent::Reconnected { subscribed, .. }) => {
                        // A new SFU session: the tracks came back on new mids.
                        running.composite.clear();
                        let rids: HashMap<TrackKey, Vec<String>> = tracks.drain().map(|(_, t)| (t.key, t.rids)).collect();
                        tracks = subscribed.iter().map(|t| {
                            let rids = rids.get(&key(t)).cloned().unwrap_or_default();
                            (t.mid.clone(), TrackInfo { key: key(t), rids })
                        }).collect();
                        for mid in tracks.keys() {
                            keyframes.ask(&peer, mid).await;
                        }
                        if let Some(pull) = pull.as_mut() {
                            pull.restore(&subscribed);
                        }
                    }
                    _ => {}
                },
                new = pulled(&mut pull) => {
                    for track in new {
                        tracing::debug!(egress = %id, mid = %track.mid, "egress: room track pulled");
                        keyframes.ask(&peer, &track.mid).await;
                        let rids = pull.as_ref().map(|p| p.rids(&key(&track)).to_vec()).unwrap_or_default();
                        tracks.insert(track.mid.clone(), TrackInfo { key: key(&track), rids });
                    }
                }
                event = room_event(&mut room) => {
                    let (Some(sub), Some(pull)) = (room.as_mut(), pull.as_mut()) else { continue };
                    let gone = match event {
                        Ok(event) => pull.event(&event),
                        Err(SubscriptionError::Lagged { .. }) => pull.snapshot(&sub.resync().clone()),
                        Err(SubscriptionError::Closed) => break 'attempts Ok(()),
                    };
                    let mids: Vec<String> = tracks.iter().filter(|(_, t)| gone.contains(&t.key)).map(|(mid, _)| mid.clone()).collect();
                    for mid in &mids {
                        tracks.remove(mid);
                        running.composite.remove(mid);
                    }
                    pull.close(mids);
                    switch_layers(&peer, &mut running.composite, &mut keyframes).await;
                }
                _ = levels.tick() => {
                    running.composite.sample_levels();
                    switch_layers(&peer, &mut running.composite, &mut keyframes).await;
                }
                _ = tick.tick() => {
                    let Some(egress) = deps.store.get(&id) else { break 'attempts Ok(()) };
                    running.composite.set_layout(egress.layout);
                    if let Some(follow) = follow.as_mut() {
                        follow_ingress(&deps, &peer, follow, &mut tracks, &mut running.composite, &mut keyframes).await;
                    }
                    switch_layers(&peer, &mut running.composite, &mut keyframes).await;
                    let mut current: Vec<TrackRef> = tracks.values().map(|t| TrackRef {
                        session_id: t.key.0.clone(),
                        track_name: t.key.1.clone(),
                    }).collect();
                    let sources = running.composite.views();
                    current.sort_by(|a, b| (&a.session_id, &a.track_name).cmp(&(&b.session_id, &b.track_name)));
                    deps.store.update(&id, |e| {
                        e.frames_in = frames;
                        e.tracks = current;
                        e.sources = sources;
                    });
                    fanout.publish(&deps.store, &id);
                    if !fanout.is_empty() {
                        ctx.set_state(SessionState::Active);
                    }
                    backoff = Duration::from_millis(500);
                }
            }
        };
        drop(running.guard);
        tracing::warn!(egress = %id, reason = %ended, ?backoff, "egress pipeline stopped; restarting");
        // Every output is down until the new pipeline's outputs send again.
        report.update(|e| {
            for output in &mut e.outputs {
                output.state = "reconnecting".into();
            }
            e.reason = Some(ended.clone());
        });
        ctx.set_state(SessionState::Reconnecting);
        tokio::select! {
            () = ctx.cancel_token().cancelled() => break Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(deps.timing.max_backoff);
    };
    // The outputs were cancelled with their attempt; let them finish their files (bounded).
    let finished = async {
        for task in output_tasks {
            let _ = task.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), finished).await;
    let failed = outcome.as_ref().err().map(|e| e.to_string());
    deps.store.update(&id, |e| {
        e.state = if failed.is_some() {
            EgressState::Failed
        } else {
            EgressState::Ended
        };
        e.reason = failed.clone();
    });
    // `egress.failed` when it gave up with an error, `egress.ended` when it was stopped or deleted.
    let kind = if failed.is_some() {
        "egress.failed"
    } else {
        "egress.ended"
    };
    deps.webhooks
        .send(kind, serde_json::json!({"egressId": id, "reason": failed}));
    outcome
}
