//! `sfu-gateway run`: starts the subsystems, serves the API, and handles SIGTERM (drain) and SIGINT or a
//! second SIGTERM (stop now).

use crate::api::{self, AppState};
use crate::config::{Config, SfuMode};
use crate::media::Fragments;
use crate::readiness::Readiness;
use crate::sfu::embedded::EmbeddedSfu;
use crate::supervisor::{DrainOutcome, Supervisor};
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code after an immediate stop (SIGINT or a second SIGTERM).
pub const EXIT_STOPPED: u8 = 130;

/// Runs the gateway until it is told to stop; returns the process exit code.
pub async fn run(config: Config, _fragments: Fragments) -> ExitCode {
    match serve(config).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "gateway failed to start");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> std::io::Result<ExitCode> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let supervisor = Supervisor::new(config.supervisor.max_sessions);
    let readiness = Readiness::default();
    let embedded = start_sfu(&config, &readiness).await?;

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
