//! One egress: the session task that subscribes to its tracks through a `Peer`, feeds them into the egress
//! pipeline (decode, composite, encode, mux once), and fans the FLV out to one small pipeline per output.
//! An output that fails is retried on its own (`output.rs`); the main pipeline is restarted with backoff only
//! if it fails itself.

use super::pipeline;
use super::store::{EgressState, EgressStore, TrackRef};
use crate::media::frames::{Frame, FramePusher, appsink_frames};
use crate::media::{Fragments, PipelineGuard};
use crate::sfu::client::CallsClient;
use crate::sfu::peer::{Codec, Peer, PeerConfig, PeerEvent, PeerStreams, RemoteTrackSpec};
use crate::supervisor::{SessionCtx, SessionError, SessionState};
use gstreamer::prelude::*;
use std::time::Duration;
use tokio::sync::mpsc;

/// The first byte of an FLV video tag.
const FLV_VIDEO_TAG: u8 = 9;

/// Longest wait between two restarts of the main pipeline.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
}

/// The main pipeline of one attempt, its inputs and its FLV output.
struct Running {
    guard: PipelineGuard,
    ended: tokio::sync::oneshot::Receiver<crate::media::PipelineEnd>,
    vp8: FramePusher,
    h264: FramePusher,
    opus: FramePusher,
    flv: mpsc::Receiver<Frame>,
}

fn start_pipeline(deps: &EgressDeps, id: &str) -> Result<Running, SessionError> {
    let egress = deps.store.get(id).ok_or("the egress was deleted")?;
    let description = pipeline::describe(&deps.fragments, egress.video, egress.audio)?;
    let guard = PipelineGuard::parse("egress", &description)?;
    for (name, property, value) in [
        ("encoder_v", "bitrate", egress.video.bitrate_kbps.to_string()),
        ("encoder_a", "bitrate", (egress.audio.bitrate_kbps * 1000).to_string()),
    ] {
        if let Ok(element) = guard.element(name) {
            if element.has_property(property) {
                element.set_property_from_str(property, &value);
            }
        }
    }
    let (flv, _dropped) = appsink_frames(&guard, "flv", 1024)?;
    Ok(Running {
        vp8: FramePusher::new(&guard, "vp8")?,
        h264: FramePusher::new(&guard, "h264")?,
        opus: FramePusher::new(&guard, "opus")?,
        flv,
        ended: guard.start()?,
        guard,
    })
}

/// The egress's overall state from its outputs' states.
fn overall(store: &EgressStore, id: &str) {
    store.update(id, |e| {
        let all_active = e.outputs.iter().all(|o| o.state == "active");
        e.state = if all_active {
            EgressState::Active
        } else {
            EgressState::Degraded
        };
    });
}

/// Runs an egress until it is stopped or deleted.
pub async fn run(
    ctx: SessionCtx,
    deps: EgressDeps,
    id: String,
    tracks: Vec<TrackRef>,
    outputs: Vec<super::output::Target>,
) -> Result<(), SessionError> {
    let (
        peer,
        PeerStreams {
            mut media_in,
            mut events,
        },
    ) = Peer::connect(deps.client.clone(), PeerConfig::default()).await?;
    let specs = tracks
        .iter()
        .map(|t| RemoteTrackSpec {
            session_id: t.session_id.clone(),
            track_name: t.track_name.clone(),
            preferred_rid: None,
        })
        .collect();
    let subscribed = tokio::select! {
        () = ctx.cancel_token().cancelled() => return Ok(()),
        subscribed = peer.subscribe(specs) => match subscribed {
            Ok(subscribed) => subscribed,
            Err(e) => {
                let reason = format!("cannot subscribe to the tracks: {e}");
                deps.store.update(&id, |egress| {
                    egress.state = EgressState::Failed;
                    egress.reason = Some(reason.clone());
                });
                deps.webhooks.send("egress.failed", serde_json::json!({"egressId": id, "reason": reason}));
                return Err(reason.into());
            }
        },
    };
    tracing::info!(egress = %id, tracks = subscribed.len(), "egress subscribed");
    deps.webhooks
        .send("egress.started", serde_json::json!({"egressId": id}));
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
        for track in &subscribed {
            let _ = peer.request_keyframe(track.mid.clone()).await;
        }
        let outputs_stop = ctx.cancel_token().child_token();
        // Outputs stop with this attempt, however it ends.
        let _outputs_guard = outputs_stop.clone().drop_guard();
        let mut senders: Vec<mpsc::Sender<Frame>> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut frames = 0u64;
        // Frame in (appsrc, timestamped on arrival) → its FLV video tag out: the delay the egress adds.
        let added_latency = metrics::histogram!("egress_added_latency_seconds");
        let ended = loop {
            tokio::select! {
                () = ctx.cancel_token().cancelled() => break 'attempts Ok(()),
                end = &mut running.ended => break end.map(|e| e.to_string()).unwrap_or_else(|_| "stopped".into()),
                flv = running.flv.recv() => {
                    let Some(flv) = flv else { continue };
                    if !flv.header && flv.data.first() == Some(&FLV_VIDEO_TAG) {
                        if let Some(now) = running.guard.pipeline().current_running_time() {
                            added_latency.record(now.nseconds().saturating_sub(flv.pts_ns) as f64 / 1e9);
                        }
                    }
                    if senders.is_empty() {
                        // The first buffer fixes the caps (with the FLV stream headers) every output starts from.
                        let caps = running.guard.element("flv").ok()
                            .and_then(|sink| sink.static_pad("sink"))
                            .and_then(|pad| pad.current_caps());
                        let Some(caps) = caps else { continue };
                        for (i, target) in outputs.iter().enumerate() {
                            let (sender, task) = super::output::spawn(deps.store.clone(), id.clone(), i, target.clone(), caps.clone(), outputs_stop.clone());
                            senders.push(sender);
                            output_tasks.push(task);
                        }
                    }
                    for sender in &senders {
                        let _ = sender.try_send(flv.clone()); // a slow output drops, then resumes at a keyframe
                    }
                }
                frame = media_in.recv() => {
                    let Some(frame) = frame else { break 'attempts Err("the SFU peer stopped".into()) };
                    frames += 1;
                    if !frame.contiguous {
                        let _ = peer.request_keyframe(frame.mid.clone()).await;
                    }
                    let pusher = match frame.codec {
                        Some(Codec::Vp8) => &running.vp8,
                        Some(Codec::H264) => &running.h264,
                        Some(Codec::Opus) => &running.opus,
                        None => continue,
                    };
                    pusher.push_untimed(&frame.data);
                }
                event = events.recv() => if let Some(PeerEvent::Failed { reason }) = event {
                    break 'attempts Err(reason.into());
                },
                _ = tick.tick() => {
                    if deps.store.get(&id).is_none() {
                        break 'attempts Ok(());
                    }
                    deps.store.update(&id, |e| e.frames_in = frames);
                    if !senders.is_empty() {
                        overall(&deps.store, &id);
                        ctx.set_state(SessionState::Active);
                    }
                    backoff = Duration::from_millis(500);
                }
            }
        };
        drop(running.guard);
        tracing::warn!(egress = %id, reason = %ended, ?backoff, "egress pipeline stopped; restarting");
        deps.store.update(&id, |e| {
            e.state = EgressState::Degraded;
            e.reason = Some(ended.clone());
        });
        ctx.set_state(SessionState::Reconnecting);
        tokio::select! {
            () = ctx.cancel_token().cancelled() => break Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
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
