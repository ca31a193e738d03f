//! One egress: the session task that subscribes to its tracks through a `Peer`, feeds them into the egress
//! pipeline, and restarts the pipeline with backoff when an output fails (a destination that comes back is
//! never given up on).

use super::pipeline;
use super::store::{EgressState, EgressStore, TrackRef};
use crate::media::frames::FramePusher;
use crate::media::{Fragments, PipelineGuard};
use crate::redact::Secret;
use crate::sfu::client::CallsClient;
use crate::sfu::peer::{Codec, Peer, PeerConfig, PeerEvent, PeerStreams, RemoteTrackSpec};
use crate::supervisor::{SessionCtx, SessionError, SessionState};
use gstreamer::prelude::*;
use std::time::Duration;

/// Longest wait between two pipeline restarts.
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

/// The pipeline of one attempt and its inputs.
struct Running {
    guard: PipelineGuard,
    ended: tokio::sync::oneshot::Receiver<crate::media::PipelineEnd>,
    vp8: FramePusher,
    h264: FramePusher,
    opus: FramePusher,
}

fn start_pipeline(deps: &EgressDeps, id: &str, outputs: &[Secret]) -> Result<Running, SessionError> {
    let egress = deps.store.get(id).ok_or("the egress was deleted")?;
    let description = pipeline::describe(&deps.fragments, egress.video, egress.audio, outputs)?;
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
    let running = Running {
        vp8: FramePusher::new(&guard, "vp8")?,
        h264: FramePusher::new(&guard, "h264")?,
        opus: FramePusher::new(&guard, "opus")?,
        ended: guard.start()?,
        guard,
    };
    Ok(running)
}

/// Runs an egress until it is stopped or deleted.
pub async fn run(
    ctx: SessionCtx,
    deps: EgressDeps,
    id: String,
    tracks: Vec<TrackRef>,
    outputs: Vec<Secret>,
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
        subscribed = peer.subscribe(specs) => subscribed?,
    };
    tracing::info!(egress = %id, tracks = subscribed.len(), "egress subscribed");
    deps.webhooks
        .send("egress.started", serde_json::json!({"egressId": id}));
    let mut backoff = Duration::from_millis(500);
    let outcome: Result<(), SessionError> = 'attempts: loop {
        let mut running = match start_pipeline(&deps, &id, &outputs) {
            Ok(running) => running,
            Err(e) => break Err(e),
        };
        // Ask for keyframes at once so the decoders start without waiting for the next one.
        for track in &subscribed {
            let _ = peer.request_keyframe(track.mid.clone()).await;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut frames = 0u64;
        let ended = loop {
            tokio::select! {
                () = ctx.cancel_token().cancelled() => break 'attempts Ok(()),
                end = &mut running.ended => {
                    let reason = end.map(|e| e.to_string()).unwrap_or_else(|_| "stopped".into());
                    // GStreamer's message may quote an output URL: its stream key must not reach logs or the API.
                    break outputs.iter().fold(reason, |text, url| {
                        text.replace(url.expose().as_str(), &super::store::redact_url(url.expose()))
                    });
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
                    deps.store.update(&id, |e| {
                        e.frames_in = frames;
                        if e.state != EgressState::Active {
                            e.state = EgressState::Active;
                            e.outputs.iter_mut().for_each(|o| o.state = "active".into());
                        }
                    });
                    ctx.set_state(SessionState::Active);
                    backoff = Duration::from_millis(500);
                }
            }
        };
        drop(running.guard);
        tracing::warn!(egress = %id, reason = %ended, ?backoff, "egress pipeline stopped; restarting");
        deps.store.update(&id, |e| {
            e.state = EgressState::Degraded;
            e.reason = Some(ended.clone());
            e.outputs.iter_mut().for_each(|o| {
                o.state = "reconnecting".into();
                o.reconnects += 1;
            });
        });
        ctx.set_state(SessionState::Reconnecting);
        tokio::select! {
            () = ctx.cancel_token().cancelled() => break Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    let failed = outcome.as_ref().err().map(|e| e.to_string());
    deps.store.update(&id, |e| {
        e.state = if failed.is_some() {
            EgressState::Failed
        } else {
            EgressState::Ended
        };
        e.reason = failed.clone();
    });
    deps.webhooks
        .send("egress.ended", serde_json::json!({"egressId": id, "reason": failed}));
    outcome
}
