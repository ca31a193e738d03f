//! `POST /v1/test/sessions`: dummy sessions for process tests (mounted only with `api.test_routes = true`).
//!
//! A dummy session is active until the gateway drains; it then needs `drain_ms` to finish its work (or
//! ignores the drain entirely when `drain_ms` is absent), and stops at once when cancelled.

use super::{ApiError, AppState};
use crate::supervisor::{SessionKind, SessionState};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

#[derive(Deserialize)]
struct DummyRequest {
    drain_ms: Option<u64>,
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/test/sessions", post(create))
}

async fn create(
    State(state): State<AppState>,
    axum::Json(request): axum::Json<DummyRequest>,
) -> Result<(StatusCode, axum::Json<serde_json::Value>), ApiError> {
    let id = state
        .supervisor
        .spawn(SessionKind::Egress, "dummy", move |ctx| async move {
            ctx.set_state(SessionState::Active);
            let finish_work = async {
                match request.drain_ms {
                    Some(ms) => {
                        ctx.drain_token().cancelled().await;
                        tracing::info!(drain_ms = ms, "dummy session finishing its work");
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = finish_work => {}
                () = ctx.cancel_token().cancelled() => tracing::info!("dummy session stopped"),
            }
            Ok(())
        })?;
    Ok((StatusCode::CREATED, axum::Json(json!({"id": id}))))
}
