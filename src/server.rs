//! `sfu-gateway run`: starts the subsystems, serves the API, and handles SIGTERM (drain) and SIGINT or a
//! second SIGTERM (stop now).

use crate::api::{self, AppState, SfuProxy};
use crate::config::{Config, SfuMode};
use crate::ingress::rtmp::{self, ingest::IngestDeps};
use crate::ingress::store::IngressStore;
use crate::media::Fragments;
use crate::readiness::Readiness;
use crate::redact::Secret;
use crate::rooms::{Resolver, Rooms};
use crate::sfu::client::{CallsClient, ClientConfig, ClientError, RetryPolicy};
use crate::sfu::embedded::EmbeddedSfu;
use crate::sfu::peer::PeerConfig;
use crate::supervisor::{DrainOutcome, Supervisor};
use crate::webhooks::Webhooks;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code after an immediate stop (SIGINT or a second SIGTERM).
pub const EXIT_STOPPED: u8 = 130;

/// Runs the gateway until it is told to stop; returns the process exit code.
pub async fn run(config: Config, fragments: Fragments) -> ExitCode {
    match serve(config, fragments).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "gateway failed to start");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, fragments: Fragments) -> std::io::Result<ExitCode> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let supervisor = Supervisor::with_capacity(config.supervisor.max_sessions, config.supervisor.capacity);
    let readiness = Readiness::default();
    let embedded = start_sfu(&config, &readiness).await?;
    let client = sfu_client(&config, embedded.as_ref()).map_err(|e| std::io::Error::other(e.to_string()))?;
    let ingresses = IngressStore::default();
    let rooms = Rooms::new();
    let resolver_url = Some(config.rooms.resolver_url.clone()).filter(|u| !u.is_empty());
    let resolver = Resolver::new(resolver_url).map_err(|e| std::io::Error::other(e.to_string()))?;
    for declared in &config.ingresses {
        ingresses
            .create(
                &declared.name,
                declared.room.clone(),
                crate::ingress::store::VideoSettings {
                    mode: declared.video_mode,
                    codec: declared.video_codec,
                    layers: declared.layers,
                },
                Some(declared.stream_key.clone()),
                true,
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    let adapters = CancellationToken::new();
    let webhooks = Webhooks::start(&config.webhooks, adapters.clone());
    forward_state_changes(&supervisor, webhooks.clone(), adapters.clone());
    let rtmp_url = if config.rtmp.enabled {
        let deps = IngestDeps {
            store: ingresses.clone(),
            client: client.clone(),
            fragments: fragments.clone(),
            grace: config.rtmp.reconnect_grace,
            costs: config.supervisor.costs.clone(),
            rooms: rooms.clone(),
            webhooks: webhooks.clone(),
            peer: PeerConfig::default(),
        };
        let bound = rtmp::start(
            config.rtmp.clone(),
            ingresses.clone(),
            supervisor.clone(),
            deps,
            adapters.clone(),
        )
        .await?;
        readiness.set("rtmp", true, format!("listening on {bound}"));
        Some(config.rtmp.url(bound))
    } else {
        None
    };

    let sip = if config.sip.enabled {
        let deps = crate::ingress::sip::SipDeps {
            supervisor: supervisor.clone(),
            cost: config.supervisor.costs.sip_call,
            client: client.clone(),
            peer: PeerConfig::default(),
            rooms: rooms.clone(),
            webhooks: webhooks.clone(),
            store: crate::ingress::sip::CallStore::default(),
        };
        let server = crate::ingress::sip::start(config.sip.clone(), deps, adapters.clone()).await?;
        readiness.set("sip", true, format!("listening on {}", server.addr()));
        Some(server)
    } else {
        None
    };

    let ca = &config.egress.tls_ca_file;
    let egress_tls = crate::egress::rtmp_out::tls_config(Some(ca.as_path()).filter(|p| !p.as_os_str().is_empty()))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let listen = api::effective_listen(config.api.listen, &config.api.token);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let api_shutdown = CancellationToken::new();
    let state = AppState {
        supervisor: supervisor.clone(),
        readiness,
        metrics: api::install_recorder(),
        token: config.api.token.clone(),
        test_routes: config.api.test_routes,
        embedded_sfu: embedded.as_ref().map(EmbeddedSfu::stats),
        ingresses: ingresses.clone(),
        rtmp_url,
        rooms,
        resolver,
        shutdown: api_shutdown.clone(),
        sfu_proxy: Some(sfu_proxy(&config, embedded.as_ref())),
        egresses: crate::egress::store::EgressStore::default(),
        egress_client: Some(client.clone()),
        egress_cost: config.supervisor.costs.egress,
        recordings_dir: Some(config.egress.recordings_dir.clone()).filter(|d| !d.as_os_str().is_empty()),
        egress_tls,
        egress_timing: crate::egress::session::EgressTiming {
            jitter: config.egress.jitter,
            max_backoff: config.egress.retry_max_backoff,
        },
        fragments: fragments.clone(),
        webhooks: webhooks.clone(),
        sip,
    };
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    let api_task = tokio::spawn(api::serve(listener, state, api_shutdown.clone()));
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "gateway started");

    let drain_timeout = config.supervisor.drain_timeout;
    let code = tokio::select! {
        _ = sigint.recv() => {
            tracing::info!("SIGINT: stopping now");
            supervisor.stop_all().await;
            ExitCode::from(EXIT_STOPPED)
        }
        _ = sigterm.recv() => {
            tracing::info!(?drain_timeout, "SIGTERM: draining (send SIGTERM or SIGINT again to stop now)");
            let drain = supervisor.drain(drain_timeout);
            tokio::select! {
                outcome = drain => {
                    match outcome {
                        DrainOutcome::Clean => tracing::info!("drained cleanly"),
                        DrainOutcome::TimedOut { stopped } => {
                            tracing::warn!(stopped, "drain timeout passed; stopped the remaining sessions");
                        }
                    }
                    ExitCode::SUCCESS
                }
                _ = sigterm.recv() => {
                    tracing::info!("second SIGTERM: stopping now");
                    supervisor.stop_all().await;
                    ExitCode::from(EXIT_STOPPED)
                }
                _ = sigint.recv() => {
                    tracing::info!("SIGINT during drain: stopping now");
                    supervisor.stop_all().await;
                    ExitCode::from(EXIT_STOPPED)
                }
            }
        }
    };
    adapters.cancel();
    api_shutdown.cancel();
    match tokio::time::timeout(std::time::Duration::from_secs(5), api_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "api server error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "api task failed"),
        Err(_) => tracing::warn!("api server did not stop in time"),
    }
    if let Some(sfu) = embedded {
        sfu.shutdown().await;
    }
    tracing::info!("gateway stopped");
    Ok(code)
}

/// Sends every session state change as a `session.state_changed` webhook event.
fn forward_state_changes(supervisor: &Supervisor, webhooks: Webhooks, cancel: CancellationToken) {
    let mut changes = supervisor.subscribe();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                () = cancel.cancelled() => return,
                change = changes.recv() => change,
            };
            match change {
                Ok(info) => webhooks.send("session.state_changed", serde_json::to_value(&info).unwrap_or_default()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "session state events dropped (the webhook forwarder fell behind)"
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// The Calls API endpoint and credentials: Cloudflare's, or the embedded SFU's.
fn sfu_target(config: &Config, embedded: Option<&EmbeddedSfu>) -> (String, String, Secret) {
    match embedded {
        Some(sfu) => (sfu.api_url(), sfu.app_id().to_string(), sfu.app_secret().clone()),
        None => (
            config.sfu.api_url.clone(),
            config.sfu.app_id.clone(),
            config.sfu.app_secret.clone(),
        ),
    }
}

/// The browser-facing Calls API proxy.
fn sfu_proxy(config: &Config, embedded: Option<&EmbeddedSfu>) -> SfuProxy {
    let (api_url, app_id, secret) = sfu_target(config, embedded);
    SfuProxy::new(&api_url, &app_id, secret, config.sfu.request_timeout)
}

/// The Calls API client: to Cloudflare, or to the embedded SFU.
fn sfu_client(config: &Config, embedded: Option<&EmbeddedSfu>) -> Result<CallsClient, ClientError> {
    let (api_url, app_id, app_secret) = sfu_target(config, embedded);
    CallsClient::new(&ClientConfig {
        api_url,
        app_id,
        app_secret,
        request_timeout: config.sfu.request_timeout,
        retry: RetryPolicy::default(),
    })
}

/// Starts the embedded SFU in embedded mode; reports the SFU subsystem either way.
async fn start_sfu(config: &Config, readiness: &Readiness) -> std::io::Result<Option<EmbeddedSfu>> {
    match config.sfu.effective_mode() {
        SfuMode::Cloudflare => {
            readiness.set("sfu", true, format!("cloudflare ({})", config.sfu.api_url));
            Ok(None)
        }
        SfuMode::Embedded => {
            let generated = config.sfu.embedded.app_secret.is_empty();
            let sfu = EmbeddedSfu::start(config.sfu.embedded.clone())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if generated {
                // Printed once for the developer, on stdout and never through the logger.
                println!(
                    "embedded SFU: CALLS_API_URL={} CALLS_APP_ID={} CALLS_APP_SECRET={}",
                    sfu.api_url(),
                    sfu.app_id(),
                    sfu.app_secret().expose()
                );
            }
            readiness.set("sfu", true, format!("embedded ({})", sfu.api_url()));
            Ok(Some(sfu))
        }
    }
}
