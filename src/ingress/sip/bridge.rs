//! The media loop of an answered call (inbound or outbound): phone RTP ↔ SFU, the room's mix, DTMF, the
//! PIN, re-INVITEs (hold, codec change, session-timer refresh), REFER, and the room it follows.

use super::call::{CallDeps, Ended, SfuSide, hang_up, terminated};
use super::dispatch::Destination;
use super::leg::{Leg, Received};
use super::pin::{PinEntry, PinOutcome, prompt_tone};
use super::refresh::{Refresh, Refreshed};
use super::roommix::{LocalTrack, MixListener, RoomFrame};
use super::sdp::{self, Direction, LocalAudio, PhoneCodec};
use super::store::{CallCommand, CallState};
use crate::config::SrtpPolicy;
use crate::rooms::follow::TrackKey;
use crate::rooms::{Membership, Participant, ParticipantSource, PublishedTrack};
use crate::sfu::api::TrackKind;
use crate::sfu::peer::{OutFrame, Peer, PeerEvent, PeerStreams};
use crate::supervisor::{SessionCtx, SessionState};
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The answered call's parts.
pub(super) struct Media {
    pub socket: UdpSocket,
    /// RTCP, on the port above the RTP one.
    pub rtcp: UdpSocket,
    pub local: LocalAudio,
    pub leg: Leg,
    pub sfu: SfuSide,
    pub destination: Destination,
    pub commands: mpsc::Receiver<CallCommand>,
    /// The session timer, if any: who refreshes, and how often.
    pub session_timer: Option<super::timer::Timer>,
    /// A dial-out in early media: the callee's final answer, still to come.
    pub pending: Option<PendingAnswer>,
}

/// The final response to our INVITE: its status, SDP and session timer, or why none came (no answer in time).
pub(super) type PendingAnswer = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(u16, Vec<u8>, Option<super::timer::Timer>), String>> + Send>,
>;

/// The final answer of a call in early media, or never.
async fn final_answer(
    pending: &mut Option<PendingAnswer>,
) -> Result<(u16, Vec<u8>, Option<super::timer::Timer>), String> {
    match pending {
        Some(answer) => answer.await,
        None => std::future::pending().await,
    }
}

/// The call in its room: its membership, its place in the room's mix, and its own track there.
struct InRoom {
    membership: Membership,
    mix: MixListener,
    own: TrackKey,
    /// The caller's track registered as local to the gateway's room mixes.
    local: LocalTrack,
}

/// How often the gateway sends RTCP to the phone (RFC 3550's minimum).
const RTCP_INTERVAL: Duration = Duration::from_secs(5);

/// The media loop of an answered call: phone RTP ↔ SFU, the mix, DTMF, the PIN, re-INVITEs, the room.
pub(super) async fn bridge(
    ctx: &SessionCtx,
    deps: &CallDeps,
    dialog: &InviteDialog,
    states: &mut DialogStateReceiver,
    media: Media,
) -> Ended {
    let Media {
        socket,
        rtcp,
        mut local,
        mut leg,
        sfu,
        destination,
        mut commands,
        session_timer,
        mut pending,
    } = media;
    let mut refresh = Refresh::new(session_timer);
    // The CSeq of a re-INVITE without SDP we answered with an offer: its ACK carries the answer.
    let mut awaiting_ack: Option<u32> = None;
    let mut transfer: Option<String> = None;
    let id = ctx.id().to_string();
    let SfuSide { peer, streams, track } = sfu;
    // The call only publishes: the room's audio comes from the room's mix.
    let PeerStreams { media_in, mut events } = streams;
    drop(media_in);
    let local_rtp = local.addr.to_string();
    let sfu_view = super::store::CallSfu {
        session_id: peer.session_id(),
        tracks: vec![PublishedTrack::new(track.clone(), TrackKind::Audio)],
    };
    deps.store.update(&id, |c| {
        c.local_rtp = Some(local_rtp);
        c.sfu = Some(sfu_view);
    });
    let participant_id = format!("sip-{id}");
    let mut pin = destination
        .pin
        .clone()
        .map(|pin| PinEntry::new(pin, Instant::now() + deps.pin_timeout));
    let mut prompt: VecDeque<i16> = VecDeque::new();
    if pin.is_some() {
        prompt.extend(pin_prompt(deps, leg.codec().pcm_rate(), 2));
        deps.store.update(&id, |c| c.state = CallState::Pin);
    }
    let mut room: Option<InRoom> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    let mut rtcp_tick = tokio::time::interval_at(tokio::time::Instant::now() + RTCP_INTERVAL / 2, RTCP_INTERVAL);
    // Where the phone's RTCP comes from (symmetric, like RTP); until then the port above its RTP.
    let mut rtcp_remote: Option<std::net::SocketAddr> = None;
    let mut rtcp_buf = vec![0u8; 1500];
    let mut buf = vec![0u8; 2048];
    let mut frames = Vec::new();
    let mut pcm = Vec::new();
    // Looked up once: recorded for every packet.
    let uplink_delay = metrics::histogram!("sip_uplink_delay_seconds");
    let mut packet = Vec::new();
    if pin.is_none() {
        match join_room(
            deps,
            &destination,
            &participant_id,
            &peer,
            &track,
            leg.codec().pcm_rate(),
        ) {
            Ok(joined) => room = Some(joined),
            Err(e) => return hang_up(dialog, &e, 500).await,
        }
        ctx.set_state(SessionState::Active);
        let state = if pending.is_some() {
            CallState::EarlyMedia
        } else {
            CallState::Answered
        };
        deps.store.update(&id, |c| c.state = state);
    }
    loop {
        tokio::select! {
            () = ctx.cancel_token().cancelled() => {
                if pending.is_some() {
                    let _ = dialog.cancel().await;
                } else {
                    let _ = dialog.bye_with_reason("SIP;cause=200;text=\"call ended by the gateway\"".into()).await;
                }
                return Ended::ok("ended by the gateway");
            }
            answer = final_answer(&mut pending) => {
                pending = None;
                match answer {
                    Ok((status, body, timer)) if (200..300).contains(&status) => {
                        deps.store.update(&id, |c| c.sip_status = Some(status));
                        refresh = Refresh::new(timer);
                        // The 200 may move the media (its SDP, when it has one, is the answer that counts).
                        // (Encrypted as the early media was.)
                        let policy = policy_in_use(&leg);
                        if !body.is_empty() && !apply_answer(&mut leg, &mut local, &body, policy) {
                            return hang_up(dialog, "unusable SDP answer", 488).await;
                        }
                        let state = if pin.is_some() { CallState::Pin } else { CallState::Answered };
                        deps.store.update(&id, |c| c.state = state);
                        tracing::info!("sip: dial-out answered after early media");
                    }
                    Ok((status, ..)) => {
                        deps.store.update(&id, |c| c.sip_status = Some(status));
                        tracing::info!(status, "sip: dial-out not answered after early media");
                        return Ended::failed(format!("callee answered {status}"), Some(status));
                    }
                    Err(why) => {
                        let _ = dialog.cancel().await;
                        deps.store.update(&id, |c| c.sip_status = Some(487));
                        return Ended::failed(why, Some(487));
                    }
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((len, from)) = received else { continue };
                frames.clear();
                let arrived = Instant::now();
                match leg.receive(&buf[..len], from, arrived, &mut frames) {
                    Received::Audio => {
                        if let Some(in_room) = room.as_mut().filter(|_| !frames.is_empty()) {
                            for mut frame in frames.drain(..) {
                                // The room's phones hear the caller straight away; everyone else through the SFU.
                                let pcm = frame.pcm.take().map(|pcm| (leg.codec().pcm_rate(), pcm));
                                in_room.mix.feed(&in_room.own, frame.rtp_time, Arc::from(frame.data.as_slice()), pcm);
                                peer.send_frame(OutFrame { track: track.clone(), rtp_time: frame.rtp_time, data: frame.data, rid: None, capture: None });
                            }
                            uplink_delay.record(arrived.elapsed().as_secs_f64());
                        }
                    }
                    Received::Digit(digit) => {
                        if let Some(ended) = on_digit(deps, &id, digit, "rfc4733", &mut pin, &mut prompt, leg.codec(), &destination, &participant_id, &peer, &track, &mut room, ctx, dialog).await {
                            return ended;
                        }
                    }
                    Received::Ignored => {}
                }
            }
            // Outside the room (typing the PIN) the call plays its prompt, or silence, on its own clock.
            _ = tick.tick(), if room.is_none() => {
                let frame_len = leg.codec().pcm_rate() as usize / 50;
                pcm.clear();
                pcm.extend(prompt.drain(..frame_len.min(prompt.len())));
                pcm.resize(frame_len, 0);
                if leg.tick(&pcm, &mut packet) {
                    let _ = socket.send_to(&packet, leg.remote()).await;
                }
            }
            // In the room, the room's mix sets the pace: every frame, minus the caller's own part.
            frame = next_mix(&mut room) => match (frame, room.as_ref()) {
                (Ok(frame), Some(in_room)) => {
                    frame.heard_by(Some(&in_room.own), &mut pcm);
                    if leg.tick(&pcm, &mut packet) {
                        let _ = socket.send_to(&packet, leg.remote()).await;
                    }
                }
                (Err(why), _) => return hang_up(dialog, &why, 503).await,
                (Ok(_), None) => {}
            },
            event = events.recv() => match event {
                Some(PeerEvent::Failed { reason }) => return hang_up(dialog, &format!("SFU session failed: {reason}"), 503).await,
                Some(PeerEvent::Reconnected { session_id, .. }) => {
                    // The room learns the caller's new session; the room's mix resubscribes to it.
                    if let Some(in_room) = room.as_mut() {
                        // Still local under its new key, before the room (and its mix) learns the key.
                        in_room.local.rekey((session_id.clone(), in_room.own.1.clone()));
                        if let Err(e) = in_room.membership.rebind(&session_id) {
                            tracing::warn!(error = %e, "sip: the room could not follow the new SFU session");
                        }
                        in_room.own.0 = session_id.clone();
                    }
                    let new_session = session_id.clone();
                    deps.store.update(&id, |c| {
                        if let Some(sfu) = c.sfu.as_mut() {
                            sfu.session_id = new_session;
                        }
                    });
                }
                Some(_) => {}
                None => return hang_up(dialog, "SFU peer stopped", 503).await,
            },
            state = states.recv() => {
                let Some(state) = state else { return Ended::ok("dialog closed") };
                match state {
                    DialogState::Terminated(_, reason) => {
                        // In early media the dialog ends with the callee's final failure: report its status.
                        if let Some(answer) = pending.take() {
                            if let Ok(Ok((status, ..))) = tokio::time::timeout(Duration::from_secs(2), answer).await {
                                deps.store.update(&id, |c| c.sip_status = Some(status));
                                tracing::info!(status, "sip: dial-out not answered after early media");
                                return Ended::failed(format!("callee answered {status}"), Some(status));
                            }
                        }
                        return terminated(&reason);
                    }
                    DialogState::Updated(_, request, handle) => {
                        refresh.refreshed_by_them();
                        let answer = renegotiate(&mut leg, &mut local, &request.body, &deps.codecs, deps.srtp);
                        match answer {
                            Some(body) => {
                                if request.body.is_empty() && request.method == Method::Invite {
                                    // We offered in the 200: the answer comes in this re-INVITE's ACK.
                                    awaiting_ack = request.cseq_header().ok().and_then(|c| c.seq().ok());
                                }
                                let mut headers = vec![Header::ContentType("application/sdp".into())];
                                if let Some(timer) = refresh.timer() {
                                    headers.extend(super::timer::answer_headers(timer.interval.as_secs() as u32, timer.answer_refresher()));
                                }
                                let _ = handle.respond(StatusCode::OK, Some(headers), Some(body.into_bytes())).await;
                                // A codec change may change the rate the phone hears the room at.
                                if let Some(in_room) = room.as_mut() {
                                    if in_room.mix.rate() != leg.codec().pcm_rate() {
                                        in_room.mix = deps.mixes.listen(&destination.room, leg.codec().pcm_rate());
                                    }
                                }
                                let state = if leg.on_hold() { CallState::OnHold } else if pin.is_some() { CallState::Pin } else { CallState::Answered };
                                deps.store.update(&id, |c| c.state = state);
                                tracing::info!(hold = leg.on_hold(), "call re-negotiated");
                            }
                            None => { let _ = handle.reply(StatusCode::NotAcceptableHere).await; }
                        }
                    }
                    DialogState::Info(_, request, handle) => {
                        let _ = handle.reply(StatusCode::OK).await;
                        if let Some(digit) = info_digit(&request) {
                            if let Some(ended) = on_digit(deps, &id, digit, "info", &mut pin, &mut prompt, leg.codec(), &destination, &participant_id, &peer, &track, &mut room, ctx, dialog).await {
                                return ended;
                            }
                        }
                    }
                    DialogState::Confirmed(..) => {
                        // The ACK of a re-INVITE we offered in (matched by CSeq: `Confirmed` also follows
                        // other requests, and the last ACK stays until the next one).
                        let ack = dialog.last_remote_ack().filter(|ack| {
                            awaiting_ack.is_some() && ack.cseq_header().ok().and_then(|c| c.seq().ok()) == awaiting_ack
                        });
                        if let Some(ack) = ack {
                            awaiting_ack = None;
                            if apply_answer(&mut leg, &mut local, &ack.body, deps.srtp) {
                                let state = if leg.on_hold() { CallState::OnHold } else if pin.is_some() { CallState::Pin } else { CallState::Answered };
                                deps.store.update(&id, |c| c.state = state);
                                tracing::info!(hold = leg.on_hold(), "call re-negotiated (answer in the ACK)");
                            } else {
                                tracing::warn!("sip: no usable answer in the re-INVITE's ACK; media unchanged");
                            }
                        }
                    }
                    DialogState::Options(_, _, handle) => { let _ = handle.reply(StatusCode::OK).await; }
                    DialogState::Refer(_, request, handle) => {
                        let refer_to = request.header_value("Refer-To").or_else(|| request.header_value("r")).unwrap_or_default();
                        match super::transfer::begin(deps, &id, &refer_to) {
                            Ok(target) => {
                                tracing::info!(target_call = %target, "sip: transfer requested, dialling");
                                let _ = handle.reply(StatusCode::from(202)).await;
                                let notifier = dialog.clone();
                                tokio::spawn(async move {
                                    // The 202 leaves through the REFER's transaction task; give it a head start
                                    // so the phone sees it before the first NOTIFY (RFC 3515 allows either order,
                                    // many phones expect this one).
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    notifier.notify_refer(StatusCode::Trying, "active;expires=60").await
                                });
                                transfer = Some(target);
                            }
                            Err(why) => {
                                tracing::warn!(reason = %why, "sip: transfer refused");
                                let _ = handle.reply(StatusCode::Forbidden).await;
                            }
                        }
                    }
                    _ => {}
                }
            }
            received = rtcp.recv_from(&mut rtcp_buf) => {
                let Ok((len, from)) = received else { continue };
                if leg.rtcp_received(&rtcp_buf[..len], Instant::now(), std::time::SystemTime::now()) {
                    rtcp_remote = Some(from);
                }
            }
            _ = rtcp_tick.tick() => {
                if let Some(report) = leg.rtcp_report(Instant::now(), std::time::SystemTime::now()) {
                    let to = rtcp_remote.unwrap_or_else(|| {
                        let rtp = leg.remote();
                        std::net::SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
                    });
                    let _ = rtcp.send_to(&report, to).await;
                }
            }
            outcome = refresh.outcome() => match refresh.finished(outcome) {
                Refreshed::Done => {}
                Refreshed::Answer(body) => {
                    let policy = policy_in_use(&leg);
                    if !apply_answer(&mut leg, &mut local, &body, policy) {
                        return hang_up(dialog, "unusable SDP answer to the session refresh", 488).await;
                    }
                }
                Refreshed::Fatal(why) => return hang_up(dialog, &why, 408).await,
            },
            command = commands.recv() => {
                if let Some(CallCommand::Dtmf(digits)) = command {
                    leg.queue_digits(&digits);
                }
            }
            _ = stats_tick.tick() => {
                if let Some(target) = transfer.as_deref() {
                    match deps.store.get(target).map(|c| (c.state, c.sip_status)) {
                        Some((CallState::Answered, _)) => {
                            let _ = dialog.notify_refer(StatusCode::OK, "terminated;reason=noresource").await;
                            let _ = dialog.bye_with_reason("SIP;cause=200;text=\"transferred\"".into()).await;
                            return Ended::ok("transferred");
                        }
                        Some((CallState::Ended, status)) => {
                            let status = StatusCode::from(status.unwrap_or(500));
                            let _ = dialog.notify_refer(status, "terminated;reason=noresource").await;
                            tracing::info!("sip: transfer target not reached; the call goes on");
                            transfer = None;
                        }
                        _ => {}
                    }
                }
                if refresh.expired() {
                    return hang_up(dialog, "session timer expired without a refresh", 408).await;
                }
                if pending.is_none() {
                    refresh.start_if_due(dialog, || {
                        // A refresh re-INVITE offers what is in use (a new version: the same session).
                        local.version += 1;
                        offer_in_use(&leg, &local)
                    });
                }
                if pending.is_none() && !leg.on_hold() && leg.last_received.elapsed() > deps.rtp_timeout {
                    return hang_up(dialog, "no RTP from the phone", 408).await;
                }
                if pin.as_ref().is_some_and(|entry| entry.expired(Instant::now())) {
                    return hang_up(dialog, "no PIN typed in time", 403).await;
                }
                let jitter = room.as_ref().map(|r| r.mix.stats_except(&r.own)).unwrap_or_default();
                let stats = leg.stats;
                let remote = leg.remote().to_string();
                deps.store.update(&id, |c| {
                    c.remote_rtp = Some(remote);
                    let dtmf = c.stats.dtmf_received;
                    c.stats = stats;
                    c.stats.dtmf_received = dtmf;
                    c.stats.concealed_to_phone = jitter.concealed;
                    c.stats.late_to_phone = jitter.late;
                });
            }
        }
    }
}

async fn next_mix(room: &mut Option<InRoom>) -> Result<RoomFrame, String> {
    match room {
        Some(in_room) => in_room.mix.recv().await,
        None => std::future::pending().await,
    }
}

/// Joins the room (registering the caller's track) and starts hearing everyone else through the room's mix.
fn join_room(
    deps: &CallDeps,
    destination: &Destination,
    participant_id: &str,
    peer: &Arc<Peer>,
    track: &str,
    rate: u32,
) -> Result<InRoom, String> {
    let session_id = peer.session_id();
    // Registered before the room hears of the track, so the room's mix never pulls it from the SFU.
    let local = deps.mixes.local_track((session_id.clone(), track.to_string()));
    let mut participant = Participant::new(participant_id, &session_id, ParticipantSource::Gateway);
    participant.name = destination.participant_name.clone().or_else(|| Some("Phone".into()));
    participant.metadata = destination.metadata.clone();
    participant.tracks = vec![PublishedTrack::new(track, TrackKind::Audio)];
    let membership = deps
        .rooms
        .join_gateway(&destination.room, participant)
        .map_err(|e| e.to_string())?;
    let mix = deps.mixes.listen(&destination.room, rate);
    Ok(InRoom {
        membership,
        mix,
        own: (session_id, track.to_string()),
        local,
    })
}

/// The PIN prompt at `rate`: the configured file, or `beeps` beeps.
fn pin_prompt(deps: &CallDeps, rate: u32, beeps: usize) -> Vec<i16> {
    match &deps.pin_prompt {
        Some(prompt) => prompt.at_rate(rate),
        None => prompt_tone(rate, beeps),
    }
}

/// Applies a re-INVITE/UPDATE offer; returns the answer, or `None` when it cannot be accepted.
fn renegotiate(
    leg: &mut Leg,
    local: &mut LocalAudio,
    body: &[u8],
    codecs: &[PhoneCodec],
    srtp: SrtpPolicy,
) -> Option<String> {
    local.version += 1;
    if body.is_empty() {
        // No offer (RFC 3261 §14.2): offer what we use now, encrypted as now.
        local.direction = Direction::SendRecv;
        return Some(offer_in_use(leg, local));
    }
    let remote = sdp::parse(&String::from_utf8_lossy(body)).ok()?;
    // Keep the current codec when the phone still offers it.
    let negotiated = sdp::negotiate(&remote, &[leg.codec()], srtp)
        .or_else(|_| sdp::negotiate(&remote, codecs, srtp))
        .ok()?;
    leg.update(&remote, negotiated, Instant::now()).ok()?;
    local.direction = remote.direction.answer();
    Some(sdp::answer(local, &negotiated))
}

/// An offer of what the leg uses now: its codec, encrypted as now.
fn offer_in_use(leg: &Leg, local: &LocalAudio) -> String {
    let srtp = leg.negotiated().srtp.map(|crypto| crypto.suite);
    sdp::offer(local, &[leg.codec()], srtp)
}

/// The SRTP policy an answer to our offer of what is in use must meet: encrypted if the leg is.
fn policy_in_use(leg: &Leg) -> SrtpPolicy {
    if leg.negotiated().srtp.is_some() {
        SrtpPolicy::Required
    } else {
        SrtpPolicy::Off
    }
}

/// Applies the answer to our re-INVITE offer (same codec, same keys); false when it is not usable.
fn apply_answer(leg: &mut Leg, local: &mut LocalAudio, body: &[u8], srtp: SrtpPolicy) -> bool {
    let Ok(remote) = sdp::parse(&String::from_utf8_lossy(body)) else {
        return false;
    };
    let Ok(negotiated) = sdp::negotiate(&remote, &[leg.codec()], srtp) else {
        return false;
    };
    if leg.update(&remote, negotiated, Instant::now()).is_err() {
        return false;
    }
    local.direction = remote.direction.answer();
    true
}

/// The digit of a SIP INFO (application/dtmf-relay `Signal=5`, or application/dtmf `5`).
fn info_digit(request: &rsipstack::sip::Request) -> Option<char> {
    if request.method != Method::Info {
        return None;
    }
    let body = String::from_utf8_lossy(&request.body);
    let value = body
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("signal")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| body.trim().to_string());
    let mut chars = value.chars();
    let digit = chars.next()?;
    (chars.next().is_none() && super::rtp::digit_event(digit).is_some()).then_some(digit.to_ascii_uppercase())
}

/// A digit from the phone: the PIN while one is expected, else an event for the application.
#[allow(clippy::too_many_arguments)]
async fn on_digit(
    deps: &CallDeps,
    id: &str,
    digit: char,
    method: &str,
    pin: &mut Option<PinEntry>,
    prompt: &mut VecDeque<i16>,
    codec: PhoneCodec,
    destination: &Destination,
    participant_id: &str,
    peer: &Arc<Peer>,
    track: &str,
    room: &mut Option<InRoom>,
    ctx: &SessionCtx,
    dialog: &InviteDialog,
) -> Option<Ended> {
    metrics::counter!("sip_dtmf_events_total", "method" => method.to_string()).increment(1);
    deps.store.update(id, |c| c.stats.dtmf_received += 1);
    if let Some(entry) = pin.as_mut() {
        match entry.digit(digit) {
            PinOutcome::Pending => {}
            PinOutcome::Wrong => {
                tracing::info!("sip: wrong PIN");
                prompt.extend(pin_prompt(deps, codec.pcm_rate(), 3));
            }
            PinOutcome::Exhausted => return Some(hang_up(dialog, "wrong PIN", 403).await),
            PinOutcome::Accepted => {
                *pin = None;
                prompt.clear();
                match join_room(deps, destination, participant_id, peer, track, codec.pcm_rate()) {
                    Ok(joined) => *room = Some(joined),
                    Err(e) => return Some(hang_up(dialog, &e, 500).await),
                }
                ctx.set_state(SessionState::Active);
                deps.store.update(id, |c| c.state = CallState::Answered);
                tracing::info!("sip: PIN accepted, joined the room");
            }
        }
        return None;
    }
    if let Some(in_room) = room.as_ref() {
        if let Err(e) = in_room.membership.dtmf(digit) {
            tracing::debug!(error = %e, "sip: DTMF room event not sent");
        }
    }
    deps.webhooks.send(
        "call.dtmf",
        serde_json::json!({"callId": id, "room": destination.room, "digit": digit.to_string(), "method": method}),
    );
    None
}
