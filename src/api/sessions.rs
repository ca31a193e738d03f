//! `GET /v1/sessions`, `GET /v1/sessions/{id}`, `DELETE /v1/sessions/{id}`.

use super::{ApiError, AppState};
use crate::supervisor::{SessionId, SessionInfo};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(list))
        .route("/sessions/{id}", get(one).delete(stop))
}

#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", responses((status = 200, description = "Live and recently finished sessions", body = Object)))]
pub(super) async fn list(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({"sessions": state.supervisor.list()}))
}

fn parse_id(id: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(id).ok_or_else(|| ApiError::not_found("session"))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404)))]
pub(super) async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<SessionInfo>, ApiError> {
    let id = parse_id(&id)?;
    state
        .supervisor
        .get(&id)
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("session"))
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path)), responses((status = 202, description = "Stopping"), (status = 404)))]
pub(super) async fn stop(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.supervisor.stop(&parse_id(&id)?)?;
    Ok(StatusCode::ACCEPTED)
}
