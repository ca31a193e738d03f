//! `/healthz` (alive), `/readyz` (accepting work) and `/metrics`.

use super::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is alive")))]
pub(super) async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Every subsystem is ready"), (status = 503, description = "Draining or a subsystem is down")))]
pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut rows = state.readiness.snapshot();
    let accepting = state.supervisor.is_accepting();
    rows.insert(
        "supervisor",
        crate::readiness::SubsystemStatus {
            ready: accepting,
            detail: if accepting {
                format!("accepting; {} live sessions", state.supervisor.live())
            } else {
                format!("draining; {} live sessions", state.supervisor.live())
            },
        },
    );
    let ready = rows.values().all(|row| row.ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({"ready": ready, "subsystems": rows})))
}

#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = super::metrics::render(&state);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
