//! The control API: health, readiness, metrics and the `/v1` resources (bearer-token protected).

mod calls;
mod dashboard;
mod egresses;
mod error;
mod health;
mod ingresses;
mod metrics;
mod openapi;
mod rooms;
mod sessions;
mod sfu_proxy;
mod test_routes;

pub use error::ApiError;
pub use metrics::install_recorder;
pub use openapi::ApiDoc;
pub use sfu_proxy::SfuProxy;

use crate::readiness::Readiness;
use crate::redact::Secret;
use crate::supervisor::Supervisor;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::{Ipv4Addr, SocketAddr};
use tokio_util::sync::CancellationToken;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The session supervisor.
    pub supervisor: Supervisor,
    /// Subsystem readiness.
    pub readiness: Readiness,
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
    /// Bearer token for `/v1/*`; empty means no auth (loopback only).
    pub token: Secret,
    /// Whether `/v1/test/*` is mounted.
    pub test_routes: bool,
    /// Counters of the embedded SFU, when it runs in this process.
    pub embedded_sfu: Option<std::sync::Arc<crate::sfu::embedded::CoreStats>>,
    /// The ingress registry.
    pub ingresses: crate::ingress::store::IngressStore,
    /// Publish URL of the RTMP server (without the key), when it runs.
    pub rtmp_url: Option<String>,
    /// Rooms and their participants.
    pub rooms: crate::rooms::Rooms,
    /// The room resolver webhook.
    pub resolver: crate::rooms::Resolver,
    /// Cancelled when the API shuts down (ends long-lived responses such as event streams).
    pub shutdown: CancellationToken,
    /// The Calls API proxy for browsers (`/v1/sfu/...`).
    pub sfu_proxy: Option<SfuProxy>,
    /// The egress registry.
    pub egresses: crate::egress::store::EgressStore,
    /// Calls API client for egress sessions.
    pub egress_client: Option<crate::sfu::client::CallsClient>,
    /// Capacity units of one egress.
    pub egress_cost: u32,
    /// Where file outputs of egresses are written (none: file outputs are refused).
    pub recordings_dir: Option<std::path::PathBuf>,
    /// The egresses' jitter allowance and retry cap (`[egress]`).
    pub egress_timing: crate::egress::session::EgressTiming,
    /// TLS client configuration of rtmps:// egress outputs.
    pub egress_tls: std::sync::Arc<rustls::ClientConfig>,
    /// Pipeline fragments.
    pub fragments: crate::media::Fragments,
    /// Event sink.
    pub webhooks: crate::webhooks::Webhooks,
    /// The SIP user agent, when it runs.
    pub sip: Option<crate::ingress::sip::SipServer>,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let mut v1 = Router::new()
        .merge(sessions::routes())
        .merge(ingresses::routes())
        .merge(egresses::routes())
        .merge(calls::routes())
        .merge(sfu_proxy::routes())
        .merge(rooms::routes());
    if state.test_routes {
        v1 = v1.merge(test_routes::routes());
    }
    let v1 = v1.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(health::routes())
        .merge(dashboard::routes())
        .merge(openapi::routes())
        .nest("/v1", v1)
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.token.is_empty() {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|token| state.token.ct_eq(token)) {
            return ApiError::from_class(crate::error::ErrorClass::Unauthorized, "missing or wrong bearer token")
                .into_response();
        }
    }
    next.run(request).await
}

/// The address to bind: without a token the API is kept on loopback.
pub fn effective_listen(listen: SocketAddr, token: &Secret) -> SocketAddr {
    if token.is_empty() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "api.token is not set: binding the control API to loopback only");
        let loopback = if listen.is_ipv6() {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        } else {
            std::net::IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        return SocketAddr::new(loopback, listen.port());
    }
    if token.is_empty() {
        tracing::warn!("api.token is not set: /v1 is open to local processes");
    }
    listen
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
