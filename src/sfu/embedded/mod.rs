//! The embedded SFU: a Calls-API-compatible SFU running in-process, so the gateway works offline and tests
//! run against a real SFU. HTTP on its own listener, media on one UDP socket for all sessions (ICE-lite,
//! DTLS server, one BUNDLE group). See `docs/sfu.md` for the behaviour chosen where the API leaves it open.

mod core;
mod http;
mod ops;
mod sdp;
mod session;

pub use self::core::CoreStats;
pub use http::MAX_BODY_BYTES;

use crate::config::EmbeddedSfuConfig;
use crate::redact::Secret;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use str0m::Rtc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why the embedded SFU could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// A listener could not be bound.
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        /// `http` or `udp`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// No DTLS certificate could be made.
    #[error("cannot generate a DTLS certificate")]
    Certificate,
}

/// A running embedded SFU; stopped by [`EmbeddedSfu::shutdown`] or on drop.
pub struct EmbeddedSfu {
    http_addr: SocketAddr,
    udp_addr: SocketAddr,
    app_id: String,
    app_secret: Secret,
    stats: Arc<CoreStats>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl EmbeddedSfu {
    /// Binds the HTTP listener and the UDP socket and starts serving. An empty app id or secret is
    /// generated.
    pub async fn start(config: EmbeddedSfuConfig) -> Result<Self, EmbeddedError> {
        let app_id = if config.app_id.is_empty() {
            format!("{:032x}", rand::random::<u128>())
        } else {
            config.app_id.clone()
        };
        let app_secret = if config.app_secret.is_empty() {
            Secret::new(format!(
                "{:032x}{:032x}",
                rand::random::<u128>(),
                rand::random::<u128>()
            ))
        } else {
            config.app_secret.clone()
        };
        let socket = tokio::net::UdpSocket::bind(config.udp)
            .await
            .map_err(|source| EmbeddedError::Bind {
                what: "udp",
                addr: config.udp,
                source,
            })?;
        let udp_addr = socket.local_addr().map_err(|source| EmbeddedError::Bind {
            what: "udp",
            addr: config.udp,
            source,
        })?;
        let candidates: Vec<SocketAddr> = if config.public_ips.is_empty() {
            vec![udp_addr]
        } else {
            config
                .public_ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, udp_addr.port()))
                .collect()
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| EmbeddedError::Bind {
                what: "http",
                addr: config.listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| EmbeddedError::Bind {
            what: "http",
            addr: config.listen,
            source,
        })?;
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or(EmbeddedError::Certificate)?;
        let template = Rtc::builder()
            .set_ice_lite(true)
            .set_dtls_cert(cert)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
            // Sender reports every second for audio too (str0m's default is 5 s): subscribers line tracks up
            // from them, so they should not wait long for the first.
            .set_rtcp_report_interval_audio(Duration::from_secs(1));
        let timers = core::CoreTimers {
            track_idle: config.track_idle_timeout,
            // Unconnected or disconnected sessions outlive their tracks, as on the real SFU.
            session_idle: config.track_idle_timeout * 2,
        };
        let stats = Arc::new(CoreStats::default());
        let core = core::Core::new(socket, candidates, template, timers, stats.clone()).map_err(|source| {
            EmbeddedError::Bind {
                what: "udp",
                addr: udp_addr,
                source,
            }
        })?;
        let cancel = CancellationToken::new();
        let (commands, receiver) = tokio::sync::mpsc::channel(256);
        let core_task = tokio::spawn(core.run(receiver, cancel.clone()));
        let state = http::HttpState {
            commands,
            app_id: app_id.clone(),
            app_secret: app_secret.clone(),
        };
        let shutdown = cancel.clone();
        let http_task = tokio::spawn(async move {
            let server = axum::serve(listener, http::router(state)).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "embedded sfu: http server error");
            }
        });
        tracing::info!(http = %http_addr, udp = %udp_addr, app_id = %app_id, "embedded sfu started");
        Ok(Self {
            http_addr,
            udp_addr,
            app_id,
            app_secret,
            stats,
            cancel,
            tasks: vec![core_task, http_task],
        })
    }

    /// The Calls API base URL, e.g. `http://127.0.0.1:8788/v1`.
    pub fn api_url(&self) -> String {
        format!("http://{}/v1", self.http_addr)
    }

    /// The HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The media socket's address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The app id it accepts.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The bearer secret it accepts.
    pub fn app_secret(&self) -> &Secret {
        &self.app_secret
    }

    /// Forwarding counters.
    pub fn stats(&self) -> Arc<CoreStats> {
        self.stats.clone()
    }

    /// Stops serving and waits (bounded) for the tasks to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for EmbeddedSfu {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
