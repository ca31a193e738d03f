//! Dial-out: `POST /v1/calls` sends an INVITE through an outbound trunk (digest credentials answered on
//! 401/407 by the stack), follows ringing, busy, no answer and failure, and bridges the callee into the room
//! on answer with the same media loop as an inbound call. A callee that answers 422 (Session Interval Too
//! Small) is invited once more with the interval its `Min-SE` names (RFC 4028 §7.4).

use super::bridge::{self, Media};
use super::call::{self, Ended, SfuSide};
use super::dispatch::Destination;
use super::leg::Leg;
use super::sdp::{self, Direction, LocalAudio};
use super::server::{Shared, SipServer};
use super::store::{CallDirection, CallState, CallView};
use crate::config::TrunkConfig;
use crate::redact::PhoneNumber;
use crate::supervisor::{SessionCtx, SessionError, SessionKind};

/// The session interval a dial-out asks for (RFC 4028's recommended 30 minutes); the callee decides the
/// interval and who refreshes.
const SESSION_EXPIRES: u32 = 1800;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::DialogState;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::Uri;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;

/// How the ringing phase ended: a final response, or a 183 with SDP (early media) with the final response
/// still to come.
enum Rung<F> {
    Final(F),
    Early(Vec<u8>),
}

/// How long a dialled phone rings by default before the call is cancelled.
pub const RING_TIMEOUT: Duration = Duration::from_secs(60);

/// A call to place.
#[derive(Debug, Clone)]
pub struct DialRequest {
    /// Number or SIP user to call.
    pub to: String,
    /// Outbound trunk name.
    pub trunk: String,
    /// Room the callee joins.
    pub room: String,
    /// From user; the trunk's caller id when `None`.
    pub caller_id: Option<String>,
    /// The callee's display name in the room.
    pub participant_name: Option<String>,
    /// How long the phone may ring.
    pub ring_timeout: Duration,
    /// A `Replaces` header for the INVITE (RFC 3891): the call it replaces at the callee (attended transfer).
    pub replaces: Option<String>,
}

/// Why a call could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// No trunk of that name with an address.
    #[error("no outbound trunk of that name")]
    UnknownTrunk,
    /// The supervisor refused the session (draining, or over capacity).
    #[error(transparent)]
    Refused(#[from] crate::supervisor::SupervisorError),
}

/// Starts a dial-out session; returns the call as it starts.
pub fn dial(server: &SipServer, request: DialRequest) -> Result<CallView, DialError> {
    dial_with(server.shared(), request)
}

/// [`dial`] from inside the SIP module (a transfer asked by REFER).
pub(super) fn dial_with(shared: &Arc<Shared>, request: DialRequest) -> Result<CallView, DialError> {
    let shared = shared.clone();
    let store = shared.call.store.clone();
    let trunk = shared
        .config
        .trunks
        .iter()
        .find(|t| t.name == request.trunk && !t.address.is_empty())
        .cloned()
        .ok_or(DialError::UnknownTrunk)?;
    let caller_id = request
        .caller_id
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| trunk.caller_id.clone());
    let view = CallView {
        direction: CallDirection::Outbound,
        state: CallState::Ringing,
        room: request.room.clone(),
        from: caller_id,
        to: request.to.clone(),
        trunk: Some(trunk.name.clone()),
        started_at: crate::supervisor::unix_now(),
        ..CallView::default()
    };
    let (commands_tx, commands) = mpsc::channel(16);
    let session_view = view.clone();
    let session_commands = commands_tx.clone();
    let supervisor = shared.supervisor.clone();
    let cost = shared.cost;
    let id = supervisor
        .spawn_with_cost(SessionKind::SipCall, "outbound", cost, move |ctx| async move {
            let span = tracing::info_span!("sip_call", session = %ctx.id(), direction = "outbound", to = %PhoneNumber::new(&request.to));
            let deps = shared.call.clone();
            let body = place(&ctx, &shared, &trunk, &request, &session_view, commands);
            call::supervised(&ctx, &deps, session_view.clone(), session_commands, body).instrument(span).await
        })
        ?;
    let mut view = view;
    view.id = id.to_string();
    // The session registers itself too; whichever comes first, the API never answers 404 for it.
    store.insert_if_absent(view.clone(), commands_tx);
    Ok(view)
}

fn uri(text: &str) -> Result<Uri, String> {
    Uri::try_from(text).map_err(|e| format!("bad URI {text:?}: {e}"))
}

async fn place(
    ctx: &SessionCtx,
    shared: &Arc<Shared>,
    trunk: &TrunkConfig,
    request: &DialRequest,
    view: &CallView,
    commands: mpsc::Receiver<super::store::CallCommand>,
) -> Ended {
    let started = Instant::now();
    let deps = &shared.call;
    let id = ctx.id().to_string();
    let track = format!("{}-sip-{id}", request.room);
    deps.store.update(&id, |c| c.track_name = Some(track.clone()));
    let (socket, rtcp, local_addr) = match deps.ports.bind().await {
        Ok(bound) => bound,
        Err(e) => return Ended::failed(format!("rtp: {e}"), None),
    };
    let local = LocalAudio {
        session_id: rand::random::<u32>().into(),
        version: 1,
        addr: local_addr,
        direction: Direction::SendRecv,
        key: super::srtp::MasterKey::random(),
    };
    let transport = if trunk.transport == "tcp" { ";transport=tcp" } else { "" };
    // SRTP when the trunk asks for it: an RTP/SAVP offer, and an answer that must accept it.
    let (suite, policy) = if trunk.srtp {
        (
            Some(super::srtp::Suite::AesCm128HmacSha1_80),
            crate::config::SrtpPolicy::Required,
        )
    } else {
        (None, crate::config::SrtpPolicy::Off)
    };
    let contact_host = shared.contact.host_with_port.to_string();
    let (caller, callee) = match (
        uri(&format!("sip:{}@{contact_host}", view.from.clone().replace(' ', ""))),
        uri(&format!("sip:{}@{}{transport}", request.to, trunk.address)),
    ) {
        (Ok(caller), Ok(callee)) => (caller, callee),
        (Err(e), _) | (_, Err(e)) => return Ended::failed(e, None),
    };
    let min_se = shared.config.min_session_expires.as_secs() as u32;
    let offer = sdp::offer(&local, &deps.codecs, suite).into_bytes();
    // The INVITE asking for a session interval of `expires` seconds, `min_se` the least we accept (a retry
    // keeps the first INVITE's Call-ID, RFC 3261 §8.1.3.5).
    let invite = |expires: u32, min_se: u32, call_id: Option<String>| InviteOption {
        caller: caller.clone(),
        callee: callee.clone(),
        contact: shared.contact.clone(),
        offer: Some(offer.clone()),
        headers: Some(
            super::timer::offer_headers(expires, min_se)
                .into_iter()
                .chain(
                    request
                        .replaces
                        .clone()
                        .map(|replaces| rsipstack::sip::Header::Other("Replaces".into(), replaces)),
                )
                .collect(),
        ),
        credential: (!trunk.username.is_empty()).then(|| Credential {
            username: trunk.username.clone(),
            password: trunk.password.expose().clone(),
            realm: None,
            auth_username: None,
        }),
        call_id,
        ..InviteOption::default()
    };
    let (state_tx, mut states) = shared.dialogs.new_dialog_state_channel();
    let (mut dialog, mut answer) = match shared
        .dialogs
        .do_invite_async(invite(SESSION_EXPIRES, min_se, None), state_tx)
    {
        Ok(started) => started,
        Err(e) => return Ended::failed(format!("INVITE: {e}"), None),
    };
    let mut retried = false;
    let result = async {
        // The SFU side is set up while the phone rings.
        let mut sfu: Option<Result<SfuSide, SessionError>> = None;
        let connect = call::connect_sfu(deps, &track);
        tokio::pin!(connect);
        let deadline = tokio::time::sleep(request.ring_timeout);
        tokio::pin!(deadline);
        let rung = loop {
            tokio::select! {
                connected = &mut connect, if sfu.is_none() => sfu = Some(connected),
                joined = &mut answer => {
                    // A 422 names the least interval the callee takes: invite again, once, asking for it.
                    let asked = match &joined {
                        Ok(Ok((_, Some(response)))) if !retried => {
                            super::timer::retry_interval(response, SESSION_EXPIRES)
                        }
                        _ => None,
                    };
                    let Some(asked) = asked else { break Rung::Final(joined) };
                    tracing::info!(asked, "sip: callee wants a longer session interval (422); inviting again");
                    retried = true;
                    shared.dialogs.remove_dialog(&dialog.id());
                    let (state_tx, new_states) = shared.dialogs.new_dialog_state_channel();
                    match shared.dialogs.do_invite_async(invite(asked, asked, Some(dialog.id().call_id)), state_tx) {
                        Ok((new_dialog, new_answer)) => (dialog, answer, states) = (new_dialog, new_answer, new_states),
                        Err(e) => return Ended::failed(format!("INVITE: {e}"), None),
                    }
                }
                () = &mut deadline => {
                    let _ = dialog.cancel().await;
                    deps.store.update(&id, |c| c.sip_status = Some(487));
                    return Ended::failed("no answer", Some(487));
                }
                () = ctx.cancel_token().cancelled() => {
                    let _ = dialog.hangup().await;
                    return Ended::ok("cancelled by the gateway");
                }
                state = states.recv() => if let Some(DialogState::Early(_, response)) = state {
                    // A 183 with SDP: early media (ringback, an announcement) the room should hear.
                    if !response.body.is_empty() {
                        tracing::info!("sip: callee sends early media");
                        break Rung::Early(response.body);
                    }
                    tracing::info!("sip: callee ringing");
                },
            }
        };
        let mut session_timer = None;
        let (body, pending) = match rung {
            Rung::Final(response) => {
                let response = match response {
                    Ok(Ok((_, response))) => response,
                    Ok(Err(e)) => return Ended::failed(format!("INVITE failed: {e}"), None),
                    Err(e) => return Ended::failed(format!("INVITE task: {e}"), None),
                };
                let Some(response) = response else {
                    return Ended::failed("no final response", Some(408));
                };
                let status = response.status_code.code();
                deps.store.update(&id, |c| c.sip_status = Some(status));
                if !(200..300).contains(&status) {
                    tracing::info!(status, "sip: dial-out not answered");
                    return Ended::failed(format!("callee answered {status}"), Some(status));
                }
                session_timer = super::timer::from_answer(&response);
                (response.body, None)
            }
            Rung::Early(body) => {
                // The final answer comes later, within what is left of the ring time.
                let left = deadline
                    .deadline()
                    .saturating_duration_since(tokio::time::Instant::now());
                let pending: bridge::PendingAnswer = Box::pin(async move {
                    match tokio::time::timeout(left, answer).await {
                        Err(_) => Err("no answer".to_string()),
                        Ok(Ok(Ok((_, Some(response))))) => {
                            let timer = super::timer::from_answer(&response);
                            Ok((response.status_code.code(), response.body, timer))
                        }
                        Ok(Ok(Ok((_, None)))) => Err("no final response".to_string()),
                        Ok(Ok(Err(e))) => Err(format!("INVITE failed: {e}")),
                        Ok(Err(e)) => Err(format!("INVITE task: {e}")),
                    }
                });
                (body, Some(pending))
            }
        };
        let sfu = match sfu {
            Some(connected) => connected,
            None => connect.await,
        };
        let sfu = match sfu {
            Ok(sfu) => sfu,
            Err(e) => return call::hang_up(&dialog, &format!("SFU unavailable: {e}"), 503).await,
        };
        let answer = sdp::parse(&String::from_utf8_lossy(&body))
            .and_then(|r| sdp::negotiate(&r, &deps.codecs, policy).map(|n| (r, n)));
        let (remote, negotiated) = match answer {
            Ok(answer) => answer,
            Err(e) if pending.is_some() => {
                // Early media we cannot use: the call is not established yet, so it is cancelled.
                let _ = dialog.cancel().await;
                return Ended::failed(format!("unusable early-media SDP: {e}"), Some(488));
            }
            Err(e) => return call::hang_up(&dialog, &format!("unusable SDP answer: {e}"), 488).await,
        };
        let setup_ms = started.elapsed().as_millis() as u64;
        deps.store.update(&id, |c| {
            c.codec = Some(negotiated.codec.name().to_string());
            c.srtp = negotiated.srtp.is_some();
            c.setup_ms = Some(setup_ms);
        });
        tracing::info!(codec = negotiated.codec.name(), setup_ms, "sip: dial-out answered");
        let leg = match Leg::new(&remote, negotiated, Instant::now(), deps.opus_complexity, &local.key) {
            Ok(leg) => leg,
            Err(e) => return call::hang_up(&dialog, &e.to_string(), 500).await,
        };
        let destination = Destination {
            room: request.room.clone(),
            pin: None,
            participant_name: request.participant_name.clone(),
            metadata: None,
        };
        let media = Media {
            socket,
            rtcp,
            local,
            leg,
            sfu,
            destination,
            commands,
            session_timer,
            pending,
        };
        bridge::bridge(ctx, deps, &dialog, &mut states, media).await
    }
    .await;
    shared.dialogs.remove_dialog(&dialog.id());
    result
}
