//! One phone call as a supervised session: the SFU peer with the caller's track, the room membership, the
//! RTP leg and the mix toward the phone. Inbound calls come from `server.rs`, outbound ones from
//! `dialout.rs`; both end in `bridge.rs`, the media loop.

use super::dispatch::Destination;
use super::leg::Leg;
use super::rtp_ports::RtpPorts;
use super::sdp::{self, Direction, LocalAudio, Negotiated, PhoneCodec, RemoteAudio};
use super::store::{CallCommand, CallState, CallStore, CallView};
use crate::config::SrtpPolicy;
use crate::redact::PhoneNumber;
use crate::rooms::Rooms;
use crate::sfu::client::CallsClient;
use crate::sfu::peer::{Codec, LocalTrackSpec, Peer, PeerConfig, PeerStreams};
use crate::supervisor::{SessionCtx, SessionError};
use crate::webhooks::Webhooks;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;

/// What a call session needs from the gateway.
#[derive(Clone)]
pub struct CallDeps {
    /// Calls API client.
    pub client: CallsClient,
    /// Peer settings.
    pub peer: PeerConfig,
    /// Rooms.
    pub rooms: Rooms,
    /// The room mixes the phones hear.
    pub mixes: super::roommix::RoomMixes,
    /// Events.
    pub webhooks: Webhooks,
    /// The calls registry.
    pub store: CallStore,
    /// RTP sockets.
    pub ports: RtpPorts,
    /// Codecs accepted on the phone leg.
    pub codecs: Vec<PhoneCodec>,
    /// No RTP for this long (not on hold) ends the call.
    pub rtp_timeout: Duration,
    /// Time to type a PIN.
    pub pin_timeout: Duration,
    /// The PIN prompt from `sip.pin_prompt` (beeps when `None`).
    pub pin_prompt: Option<Arc<super::pin::Prompt>>,
    /// Ringing time before an inbound call is answered.
    pub answer_delay: Duration,
    /// Opus encoder complexity (0–10).
    pub opus_complexity: i32,
    /// Whether phone legs may or must use SDES-SRTP.
    pub srtp: crate::config::SrtpPolicy,
    /// The SIP server, for dialling the target of a transfer (set once the server exists).
    pub(super) server: Arc<std::sync::OnceLock<std::sync::Weak<super::server::Shared>>>,
}

/// An inbound call admitted by the server, before the answer.
pub struct Inbound {
    /// The server dialog.
    pub dialog: InviteDialog,
    /// Its state changes.
    pub states: DialogStateReceiver,
    /// The caller's offer with the codec chosen, or `None` for an INVITE without SDP.
    pub offer: Option<(RemoteAudio, Negotiated)>,
    /// Where it goes.
    pub destination: Destination,
    /// The call as the API shows it (id filled in here).
    pub view: CallView,
    /// When the INVITE arrived.
    pub started: Instant,
    /// The session-timer interval agreed (seconds), if the caller asked for one.
    pub session_expires: Option<u32>,
}

/// How a call ended.
#[derive(Debug)]
pub(super) struct Ended {
    pub reason: String,
    pub sip_status: Option<u16>,
    pub failed: bool,
}

impl Ended {
    pub fn ok(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            sip_status: None,
            failed: false,
        }
    }

    pub fn failed(reason: impl Into<String>, sip_status: Option<u16>) -> Self {
        Self {
            reason: reason.into(),
            sip_status,
            failed: true,
        }
    }
}

/// The SFU side of a call: the peer with the caller's published track.
pub(super) struct SfuSide {
    pub peer: Arc<Peer>,
    pub streams: PeerStreams,
    pub track: String,
}

/// Connects to the SFU and publishes the caller's Opus track.
pub(super) async fn connect_sfu(deps: &CallDeps, track: &str) -> Result<SfuSide, SessionError> {
    let (peer, streams) = Peer::connect(deps.client.clone(), deps.peer.clone()).await?;
    peer.publish(vec![LocalTrackSpec::new(track, Codec::Opus)]).await?;
    Ok(SfuSide {
        peer: Arc::new(peer),
        streams,
        track: track.to_string(),
    })
}

/// Registers the call, runs `body`, then records how it ended (store, webhook, metrics).
pub(super) async fn supervised<F>(
    ctx: &SessionCtx,
    deps: &CallDeps,
    mut view: CallView,
    commands: mpsc::Sender<CallCommand>,
    body: F,
) -> Result<(), SessionError>
where
    F: Future<Output = Ended>,
{
    let id = ctx.id().to_string();
    view.id = id.clone();
    let direction = view.direction;
    let room = view.room.clone();
    deps.store.insert_if_absent(view, commands);
    deps.webhooks.send(
        "call.started",
        serde_json::json!({"callId": id, "room": room, "direction": direction}),
    );
    metrics::gauge!("sip_calls_active").increment(1.0);
    let ended = body.await;
    metrics::gauge!("sip_calls_active").decrement(1.0);
    metrics::counter!("sip_calls_total", "outcome" => if ended.failed { "failed" } else { "ended" }).increment(1);
    let (reason, status) = (ended.reason.clone(), ended.sip_status);
    deps.store.update(&id, |c| {
        c.state = CallState::Ended;
        c.reason = Some(reason.clone());
        if status.is_some() {
            c.sip_status = status;
        }
    });
    let stats = deps.store.get(&id).map(|c| c.stats).unwrap_or_default();
    record_quality(&stats);
    deps.webhooks.send(
        "call.ended",
        serde_json::json!({"callId": id, "room": room, "reason": ended.reason, "sipStatus": ended.sip_status, "stats": stats}),
    );
    tracing::info!(reason = %ended.reason, "call ended");
    if ended.failed { Err(ended.reason.into()) } else { Ok(()) }
}

/// MOS-style figures of a finished call, per direction, as histograms over calls.
fn record_quality(stats: &super::store::CallStats) {
    let from_phone = stats.packets_from_phone + stats.lost_from_phone;
    if from_phone > 0 {
        metrics::histogram!("sip_call_loss_ratio", "direction" => "from_phone")
            .record(stats.lost_from_phone as f64 / from_phone as f64);
        metrics::histogram!("sip_call_jitter_ms", "direction" => "from_phone").record(stats.jitter_from_phone_ms);
    }
    if stats.packets_to_phone > 0 {
        let impaired = stats.concealed_to_phone + stats.late_to_phone;
        metrics::histogram!("sip_call_loss_ratio", "direction" => "to_phone")
            .record(impaired as f64 / stats.packets_to_phone as f64);
    }
}

/// Runs an inbound call until it ends.
pub async fn run_inbound(
    ctx: SessionCtx,
    deps: CallDeps,
    dialogs: Arc<DialogLayer>,
    call: Inbound,
) -> Result<(), SessionError> {
    let span = tracing::info_span!("sip_call", session = %ctx.id(), direction = "inbound", to = %PhoneNumber::new(&call.view.to));
    let (commands_tx, commands) = mpsc::channel(16);
    let view = call.view.clone();
    let dialog_id = call.dialog.id();
    let result = async {
        supervised(
            &ctx,
            &deps,
            view,
            commands_tx,
            answer_and_bridge(&ctx, &deps, call, commands),
        )
        .await
    }
    .instrument(span)
    .await;
    dialogs.remove_dialog(&dialog_id);
    result
}

async fn answer_and_bridge(
    ctx: &SessionCtx,
    deps: &CallDeps,
    mut call: Inbound,
    commands: mpsc::Receiver<CallCommand>,
) -> Ended {
    let id = ctx.id().to_string();
    let track = format!("{}-sip-{id}", call.destination.room);
    deps.store.update(&id, |c| c.track_name = Some(track.clone()));
    let (socket, rtcp, local_addr) = match deps.ports.bind().await {
        Ok(bound) => bound,
        Err(e) => {
            let _ = call.dialog.reject(Some(StatusCode::ServiceUnavailable), None);
            return Ended::failed(format!("rtp: {e}"), Some(503));
        }
    };
    let _ = call.dialog.ringing(None, None);
    // Connect to the SFU while the phone rings; a CANCEL or a stop ends the wait.
    let ring = async {
        let (sfu, ()) = tokio::join!(connect_sfu(deps, &track), tokio::time::sleep(deps.answer_delay));
        sfu
    };
    let sfu = tokio::select! {
        sfu = ring => sfu,
        ended = wait_terminated(&mut call.states) => return ended,
        () = ctx.cancel_token().cancelled() => {
            let _ = call.dialog.reject(Some(StatusCode::TemporarilyUnavailable), None);
            return Ended::ok("stopped before answer");
        }
    };
    let sfu = match sfu {
        Ok(sfu) => sfu,
        Err(e) => {
            tracing::warn!(error = %e, "sip: SFU unavailable, call refused");
            let _ = call.dialog.reject(
                Some(StatusCode::ServiceUnavailable),
                Some("SIP;cause=503;text=\"SFU unavailable\"".into()),
            );
            return Ended::failed(format!("sfu: {e}"), Some(503));
        }
    };
    let mut local = LocalAudio {
        session_id: rand::random::<u32>().into(),
        version: 1,
        addr: local_addr,
        direction: Direction::SendRecv,
        key: super::srtp::MasterKey::random(),
    };
    let timer_headers = call
        .session_expires
        .map(|secs| super::timer::answer_headers(secs, "uac"))
        .unwrap_or_default();
    let content_type = || {
        let mut headers = vec![Header::ContentType("application/sdp".into())];
        headers.extend(timer_headers.iter().cloned());
        Some(headers)
    };
    let (remote, negotiated) = match call.offer.take() {
        Some((remote, negotiated)) => {
            local.direction = remote.direction.answer();
            let _ = call
                .dialog
                .accept(content_type(), Some(sdp::answer(&local, &negotiated).into_bytes()));
            (remote, negotiated)
        }
        None => {
            // INVITE without SDP: our offer goes in the 200 (SRTP when the policy requires it), the answer
            // comes in the ACK.
            let srtp = (deps.srtp == SrtpPolicy::Required).then_some(super::srtp::Suite::AesCm128HmacSha1_80);
            let _ = call.dialog.accept(
                content_type(),
                Some(sdp::offer(&local, &deps.codecs, srtp).into_bytes()),
            );
            match wait_ack_answer(&mut call.states, &call.dialog, &deps.codecs, deps.srtp).await {
                Ok(answer) => answer,
                Err(ended) => return ended,
            }
        }
    };
    let setup_ms = call.started.elapsed().as_millis() as u64;
    metrics::histogram!("sip_call_setup_seconds").record(call.started.elapsed().as_secs_f64());
    deps.store.update(&id, |c| {
        c.codec = Some(negotiated.codec.name().to_string());
        c.srtp = negotiated.srtp.is_some();
        c.setup_ms = Some(setup_ms);
    });
    tracing::info!(codec = negotiated.codec.name(), setup_ms, "call answered");
    let leg = match Leg::new(&remote, negotiated, Instant::now(), deps.opus_complexity, &local.key) {
        Ok(leg) => leg,
        Err(e) => {
            let _ = call.dialog.bye().await;
            return Ended::failed(e.to_string(), None);
        }
    };
    let media = super::bridge::Media {
        socket,
        rtcp,
        local,
        leg,
        sfu,
        destination: call.destination,
        commands,
        session_timer: call.session_expires.map(|secs| super::timer::Timer {
            interval: Duration::from_secs(secs.into()),
            refresher: super::timer::Refresher::Them,
            by_update: false,
        }),
        pending: None,
    };
    super::bridge::bridge(ctx, deps, &call.dialog, &mut call.states, media).await
}

/// Waits until the dialog ends (CANCEL, BYE, timeout).
pub(super) async fn wait_terminated(states: &mut DialogStateReceiver) -> Ended {
    while let Some(state) = states.recv().await {
        if let DialogState::Terminated(_, reason) = state {
            return terminated(&reason);
        }
    }
    Ended::ok("dialog closed")
}

pub(super) fn terminated(reason: &TerminatedReason) -> Ended {
    match reason {
        TerminatedReason::UacCancel => Ended {
            reason: "cancelled by the caller".into(),
            sip_status: Some(487),
            failed: false,
        },
        TerminatedReason::UacBye | TerminatedReason::UasBye => Ended::ok("hung up"),
        TerminatedReason::Timeout => Ended::failed("no ACK (timeout)", Some(408)),
        other => Ended::ok(format!("{other:?}")),
    }
}

async fn wait_ack_answer(
    states: &mut DialogStateReceiver,
    dialog: &InviteDialog,
    codecs: &[PhoneCodec],
    srtp: SrtpPolicy,
) -> Result<(RemoteAudio, Negotiated), Ended> {
    while let Some(state) = states.recv().await {
        match state {
            DialogState::Confirmed(..) => {
                let body = dialog.last_remote_ack().map(|ack| ack.body).unwrap_or_default();
                let answer = sdp::parse(&String::from_utf8_lossy(&body))
                    .and_then(|r| sdp::negotiate(&r, codecs, srtp).map(|n| (r, n)));
                return match answer {
                    Ok(answer) => Ok(answer),
                    Err(e) => {
                        let _ = dialog
                            .bye_with_reason("SIP;cause=488;text=\"no usable answer in ACK\"".into())
                            .await;
                        Err(Ended::failed(format!("ACK answer: {e}"), Some(488)))
                    }
                };
            }
            DialogState::Terminated(_, reason) => return Err(terminated(&reason)),
            _ => {}
        }
    }
    Err(Ended::ok("dialog closed"))
}

/// Ends the call from our side with a Reason header.
pub(super) async fn hang_up(dialog: &InviteDialog, why: &str, cause: u16) -> Ended {
    tracing::warn!(reason = why, "sip: hanging up");
    let _ = dialog
        .bye_with_reason(format!("SIP;cause={cause};text=\"{why}\""))
        .await;
    Ended::failed(why, Some(cause))
}
