//! The SIP user agent: one rsipstack endpoint on UDP and TCP, and the routing of every request it
//! receives. New INVITEs go through the gate (scanners, rate, trunks, digest), the SDP check and the
//! dispatch, then become a call session under the supervisor.

use super::call::{self, CallDeps, Inbound};
use super::dispatch::{self, DispatchError};
use super::gate::{DigestAnswer, Gate, Verdict};
use super::roommix::RoomMixes;
use super::rtp_ports::RtpPorts;
use super::sdp::{self, PhoneCodec, SdpError};
use super::store::{CallDirection, CallState, CallStore, CallView};
use super::timer;
use crate::config::SipConfig;
use crate::redact::PhoneNumber;
use crate::supervisor::{SessionKind, Supervisor};
use rsipstack::EndpointBuilder;
use rsipstack::dialog::authenticate::verify_digest;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::typed::{Authorization, WwwAuthenticate};
use rsipstack::sip::{Header, Method, StatusCode, Uri};
use rsipstack::transaction::Transaction;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{TcpListenerConnection, TlsConfig, TlsListenerConnection, TransportLayer};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Methods the gateway answers.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, NOTIFY";

/// What the SIP server needs from the rest of the gateway.
#[derive(Clone)]
pub struct SipDeps {
    /// Owns every call.
    pub supervisor: Supervisor,
    /// Cost of one call in capacity units.
    pub cost: u32,
    /// Calls API client.
    pub client: crate::sfu::client::CallsClient,
    /// Peer settings.
    pub peer: crate::sfu::peer::PeerConfig,
    /// Rooms.
    pub rooms: crate::rooms::Rooms,
    /// Events.
    pub webhooks: crate::webhooks::Webhooks,
    /// The calls registry.
    pub store: CallStore,
}

/// State shared by the request loop and the calls it starts.
pub(super) struct Shared {
    pub config: SipConfig,
    pub supervisor: Supervisor,
    pub cost: u32,
    pub call: CallDeps,
    pub dialogs: Arc<DialogLayer>,
    pub gate: Mutex<Gate>,
    pub contact: Uri,
    pub codecs: Vec<PhoneCodec>,
    pub http: reqwest::Client,
}

/// The running SIP user agent.
#[derive(Clone)]
pub struct SipServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl SipServer {
    /// The bound UDP (and TCP) address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The calls registry.
    pub fn calls(&self) -> &CallStore {
        &self.shared.call.store
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Binds UDP (and TCP on the same port) and serves until `cancel`.
pub async fn start(config: SipConfig, deps: SipDeps, cancel: CancellationToken) -> std::io::Result<SipServer> {
    let pin_prompt = if config.pin_prompt.is_empty() {
        None
    } else {
        let bytes = std::fs::read(&config.pin_prompt)?;
        let prompt = super::pin::Prompt::from_wav(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("sip.pin_prompt: {e}")))?;
        Some(Arc::new(prompt))
    };
    let transport = TransportLayer::new(cancel.child_token());
    let udp = UdpConnection::create_connection(config.listen, None, Some(cancel.child_token()))
        .await
        .map_err(io_error)?;
    let bound = udp.get_addr().get_socketaddr().map_err(io_error)?;
    let addr = SocketAddr::new(config.listen.ip(), bound.port());
    transport.add_transport(udp.into());
    let tcp = TcpListenerConnection::new(addr, None).await.map_err(io_error)?;
    transport.add_transport(tcp.into());
    if !config.tls_cert.is_empty() {
        let tls = TlsConfig {
            cert: Some(std::fs::read(&config.tls_cert)?),
            key: Some(std::fs::read(&config.tls_key)?),
            ..TlsConfig::default()
        };
        let listener = TlsListenerConnection::new(config.tls_listen, None, tls)
            .await
            .map_err(io_error)?;
        transport.add_transport(listener.into());
        tracing::info!(addr = %config.tls_listen, "sip tls listening");
    }
    let public_ip: IpAddr = match config.public_ip.parse() {
        Ok(ip) => ip,
        Err(_) if !addr.ip().is_unspecified() => addr.ip(),
        Err(_) => bound.ip(),
    };
    let option = rsipstack::transaction::endpoint::EndpointOption {
        callid_suffix: Some("sfu-gateway".into()),
        ..Default::default()
    };
    let endpoint = EndpointBuilder::new()
        .with_option(option)
        .with_transport_layer(transport)
        .with_cancel_token(cancel.clone())
        .with_user_agent(concat!("sfu-gateway/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut incoming = endpoint.incoming_transactions().map_err(io_error)?;
    let inner = endpoint.inner.clone();
    tokio::spawn(async move {
        if let Err(e) = inner.serve().await {
            tracing::error!(error = %e, "sip endpoint stopped");
        }
    });
    let contact: Uri = format!("sip:gateway@{}", SocketAddr::new(public_ip, addr.port()))
        .as_str()
        .try_into()
        .map_err(io_error)?;
    let codecs: Vec<PhoneCodec> = config
        .codecs
        .iter()
        .filter_map(|c| match c.to_ascii_lowercase().as_str() {
            "pcmu" => Some(PhoneCodec::Pcmu),
            "pcma" => Some(PhoneCodec::Pcma),
            "g722" => Some(PhoneCodec::G722),
            "opus" => Some(PhoneCodec::Opus),
            _ => None,
        })
        .collect();
    let shared = Arc::new(Shared {
        gate: Mutex::new(Gate::new(&config)),
        dialogs: Arc::new(DialogLayer::new(endpoint.inner.clone())),
        contact,
        call: CallDeps {
            mixes: RoomMixes::new(deps.client.clone(), deps.peer.clone(), deps.rooms.clone()),
            client: deps.client,
            peer: deps.peer,
            rooms: deps.rooms,
            webhooks: deps.webhooks,
            store: deps.store,
            ports: RtpPorts::new(addr.ip(), public_ip, config.rtp_port_min, config.rtp_port_max),
            codecs: codecs.clone(),
            rtp_timeout: config.rtp_timeout,
            pin_timeout: config.pin_timeout,
            pin_prompt,
            answer_delay: config.answer_delay,
            opus_complexity: i32::from(config.opus_complexity),
            srtp: config.srtp,
            server: Arc::default(),
        },
        supervisor: deps.supervisor,
        cost: deps.cost,
        codecs,
        http: reqwest::Client::new(),
        config,
    });
    let _ = shared.call.server.set(Arc::downgrade(&shared));
    tracing::info!(%addr, %public_ip, "sip listening");
    let loop_shared = shared.clone();
    tokio::spawn(async move {
        // The endpoint lives as long as its requests are served.
        let _endpoint = endpoint;
        loop {
            let tx = tokio::select! {
                () = cancel.cancelled() => break,
                tx = incoming.recv() => tx,
            };
            let Some(tx) = tx else { break };
            route(&loop_shared, tx);
        }
    });
    Ok(SipServer { shared, addr })
}

fn source(tx: &Transaction) -> Option<SocketAddr> {
    tx.connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok())
}

fn dropped(reason: &'static str) {
    metrics::counter!("sip_requests_dropped_total", "reason" => reason).increment(1);
}

/// Sends a final answer without a dialog, in the background.
fn reply(mut tx: Transaction, status: StatusCode, headers: Vec<Header>) {
    tokio::spawn(async move {
        if let Err(e) = tx.reply_with(status, headers, None).await {
            tracing::debug!(error = %e, "sip: reply failed");
        }
    });
}

/// Routes one request: in-dialog ones to their dialog, new ones by method.
fn route(shared: &Arc<Shared>, tx: Transaction) {
    let request = &tx.original;
    let Some(src) = source(&tx) else { return };
    let user_agent = request
        .user_agent_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default();
    if shared
        .gate
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_scanner(&user_agent)
    {
        dropped("scanner");
        tracing::debug!(%src, "sip: request from a scanner dropped");
        return;
    }
    let in_dialog = request
        .to_header()
        .ok()
        .and_then(|to| to.tag().ok().flatten())
        .is_some();
    if in_dialog {
        match shared.dialogs.match_dialog(&tx) {
            Some(mut dialog) => {
                let mut tx = tx;
                tokio::spawn(async move {
                    if let Err(e) = dialog.handle(&mut tx).await {
                        tracing::debug!(error = %e, "sip: in-dialog request failed");
                    }
                });
            }
            None if request.method == Method::Ack => {}
            None => reply(tx, StatusCode::CallTransactionDoesNotExist, vec![]),
        }
        return;
    }
    match request.method {
        Method::Options => reply(
            tx,
            StatusCode::OK,
            vec![Header::Allow(ALLOW.into()), Header::Accept("application/sdp".into())],
        ),
        Method::Invite => {
            let allowed = shared
                .gate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_invite(src.ip(), Instant::now());
            if !allowed {
                dropped("rate");
                tracing::debug!(%src, "sip: INVITE over the rate limit dropped");
                return;
            }
            tokio::spawn(inbound(shared.clone(), tx, src));
        }
        Method::Ack => {}
        Method::Bye | Method::Cancel | Method::Info | Method::Update | Method::PRack => {
            reply(tx, StatusCode::CallTransactionDoesNotExist, vec![]);
        }
        _ => reply(tx, StatusCode::MethodNotAllowed, vec![Header::Allow(ALLOW.into())]),
    }
}

/// The digest answer in an INVITE, checked against the trunk passwords.
fn digest_answer(shared: &Shared, tx: &Transaction) -> Option<DigestAnswer> {
    let raw = tx.original.header_value("Authorization")?;
    let auth = Authorization::parse(&raw).ok()?;
    let gate = shared.gate.lock().unwrap_or_else(|e| e.into_inner());
    let valid = auth.realm == shared.config.realm
        && gate
            .password_of(&auth.username)
            .is_some_and(|password| verify_digest(&auth, password, &Method::Invite, &raw));
    Some(DigestAnswer {
        valid_for: valid.then(|| auth.username.clone()),
        username: auth.username,
        realm: auth.realm,
        nonce: auth.nonce,
    })
}

fn user_of(uri: &Uri) -> String {
    uri.user().map(str::to_string).unwrap_or_default()
}

/// A new INVITE: admission, SDP, dispatch, then the call session.
async fn inbound(shared: Arc<Shared>, mut tx: Transaction, src: SocketAddr) {
    let started = Instant::now();
    let digest = digest_answer(&shared, &tx);
    let verdict = shared
        .gate
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .admit(src.ip(), digest.as_ref(), started);
    let trunk = match verdict {
        Verdict::Admit(trunk) => trunk,
        Verdict::Challenge { nonce, stale } => {
            let challenge = WwwAuthenticate {
                realm: shared.config.realm.clone(),
                nonce,
                algorithm: Some(rsipstack::sip::headers::auth::Algorithm::Md5),
                qop: Some(rsipstack::sip::headers::auth::Qop::Auth),
                stale: stale.then(|| "true".to_string()),
                ..Default::default()
            };
            let _ = tx
                .reply_with(StatusCode::Unauthorized, vec![challenge.into()], None)
                .await;
            return;
        }
        Verdict::Forbidden(why) => {
            metrics::counter!("sip_calls_rejected_total", "reason" => "forbidden").increment(1);
            tracing::info!(%src, reason = why, "sip: INVITE refused (403)");
            let _ = tx.reply(StatusCode::Forbidden).await;
            return;
        }
    };
    let request = &tx.original;
    let to = if request.uri.user().is_some() {
        user_of(&request.uri)
    } else {
        request
            .to_header()
            .ok()
            .and_then(|t| t.uri().ok())
            .map(|u| user_of(&u))
            .unwrap_or_default()
    };
    let from = request
        .from_header()
        .ok()
        .and_then(|f| f.uri().ok())
        .map(|u| user_of(&u))
        .unwrap_or_default();
    let offer = if request.body.is_empty() {
        None
    } else {
        let text = String::from_utf8_lossy(&request.body);
        let parsed = sdp::parse(&text)
            .and_then(|remote| sdp::negotiate(&remote, &shared.codecs, shared.call.srtp).map(|n| (remote, n)));
        match parsed {
            Ok(offer) => Some(offer),
            Err(e) => {
                let status = match e {
                    SdpError::Malformed(_) => StatusCode::BadRequest,
                    SdpError::NoCommonCodec | SdpError::Security(_) => StatusCode::NotAcceptableHere,
                };
                metrics::counter!("sip_calls_rejected_total", "reason" => "sdp").increment(1);
                tracing::info!(%src, error = %e, status = status.code(), "sip: INVITE refused");
                let _ = tx.reply(status).await;
                return;
            }
        }
    };
    let min_se = shared.config.min_session_expires.as_secs() as u32;
    let session_expires = match timer::decide(timer::requested(&tx.original), min_se) {
        timer::SessionTimer::Off => None,
        timer::SessionTimer::On(secs) => Some(secs),
        timer::SessionTimer::TooSmall => {
            let _ = tx
                .reply_with(StatusCode::from(422), timer::too_small_headers(min_se), None)
                .await;
            return;
        }
    };
    let (state_tx, states) = shared.dialogs.new_dialog_state_channel();
    let dialog = match shared
        .dialogs
        .get_or_create_server_invite(&tx, state_tx, None, Some(shared.contact.clone()))
    {
        Ok(dialog) => dialog,
        Err(e) => {
            tracing::info!(%src, error = %e, "sip: INVITE refused (400)");
            let _ = tx.reply(StatusCode::BadRequest).await;
            return;
        }
    };
    // The dialog drives the INVITE transaction: 100 Trying now, then our answers and their retransmissions.
    let mut driver = dialog.clone();
    tokio::spawn(async move {
        if let Err(e) = driver.handle(&mut tx).await {
            tracing::debug!(error = %e, "sip: INVITE transaction ended with an error");
        }
    });
    let destination = match dispatch::by_rules(&shared.config.rules, &to, trunk.as_deref()) {
        Some(destination) => Ok(destination),
        None if shared.config.dispatch_url.is_empty() => Err(DispatchError::NotFound),
        None => {
            dispatch::by_webhook(
                &shared.http,
                &shared.config.dispatch_url,
                &from,
                &to,
                trunk.as_deref(),
                crate::rooms::RESOLVER_TIMEOUT,
            )
            .await
        }
    };
    let destination = match destination {
        Ok(destination) => destination,
        Err(e) => {
            metrics::counter!("sip_calls_rejected_total", "reason" => "dispatch").increment(1);
            tracing::info!(%src, to = %PhoneNumber::new(&to), error = %e, "sip: call not dispatched");
            let _ = dialog.reject(Some(StatusCode::from(e.sip_status())), None);
            shared.dialogs.remove_dialog(&dialog.id());
            return;
        }
    };
    let view = CallView {
        direction: CallDirection::Inbound,
        state: CallState::Ringing,
        room: destination.room.clone(),
        from: from.clone(),
        to: to.clone(),
        trunk: trunk.clone(),
        started_at: crate::supervisor::unix_now(),
        ..CallView::default()
    };
    let call = Inbound {
        dialog: dialog.clone(),
        states,
        offer,
        destination,
        view,
        started,
        session_expires,
    };
    let deps = shared.call.clone();
    let dialogs = shared.dialogs.clone();
    let spawned = shared
        .supervisor
        .spawn_with_cost(SessionKind::SipCall, "inbound", shared.cost, move |ctx| {
            call::run_inbound(ctx, deps, dialogs, call)
        });
    if let Err(e) = spawned {
        metrics::counter!("sip_calls_rejected_total", "reason" => "capacity").increment(1);
        tracing::warn!(error = %e, "sip: call refused (503)");
        let _ = dialog.reject(Some(StatusCode::ServiceUnavailable), None);
        shared.dialogs.remove_dialog(&dialog.id());
    }
}
