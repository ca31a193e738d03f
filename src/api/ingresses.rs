//! `POST/GET/DELETE /v1/ingresses[/{id}]`: RTMP ingest endpoints with their stream keys.

use super::{ApiError, AppState};
use crate::error::ErrorClass;
use crate::ingress::store::{Ingress, IngressError, VideoCodec, VideoMode, VideoSettings};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ingresses", get(list).post(create))
        .route("/ingresses/{id}", get(one).delete(remove))
}

/// Video options of a new ingress.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct VideoOptions {
    mode: Option<VideoMode>,
    layers: Option<u8>,
    /// Codec of the transcode path (`h264` by default; `vp8` implies `mode` `transcode`).
    codec: Option<VideoCodec>,
}

/// `POST /v1/ingresses` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateIngress {
    name: String,
    room: Option<String>,
    video: Option<VideoOptions>,
}

fn view(state: &AppState, ingress: &Ingress) -> Value {
    let mut value = serde_json::to_value(ingress).unwrap_or(Value::Null);
    if let Some(url) = &state.rtmp_url {
        value["url"] = json!(url);
        value["publishUrl"] = json!(format!("{url}/{}", ingress.stream_key.expose()));
    }
    value
}

fn invalid(field: &str, problem: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        format!("{field}: {problem}"),
    )
}

#[utoipa::path(post, path = "/v1/ingresses", tag = "ingresses", request_body = CreateIngress, responses((status = 201, description = "{id, name, url, publishUrl, streamKey, state, room, ...}", body = Object), (status = 400), (status = 422)))]
pub(super) async fn create(
    State(state): State<AppState>,
    body: Result<axum::Json<CreateIngress>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let axum::Json(request) = body.map_err(|e| ApiError::from_class(ErrorClass::BadInput, e.body_text()))?;
    let valid = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !valid(&request.name) {
        return Err(invalid("name", "must be 1-64 letters, digits, '-' or '_'"));
    }
    if let Some(room) = &request.room {
        if room.is_empty() || room.len() > 128 {
            return Err(invalid("room", "must be 1-128 characters"));
        }
    }
    let video = request.video.unwrap_or(VideoOptions {
        mode: None,
        layers: None,
        codec: None,
    });
    let codec = video.codec.unwrap_or_default();
    let mode = match (codec, video.mode.unwrap_or_default()) {
        (VideoCodec::Vp8, VideoMode::Passthrough) => {
            return Err(invalid(
                "video.codec",
                "vp8 needs transcoding; the publisher sends H.264",
            ));
        }
        (VideoCodec::Vp8, _) => VideoMode::Transcode,
        (_, mode) => mode,
    };
    if let Some(layers) = video.layers {
        if !(1..=3).contains(&layers) {
            return Err(invalid("video.layers", "must be 1, 2 or 3"));
        }
    }
    let ingress = state
        .ingresses
        .create(
            &request.name,
            request.room,
            VideoSettings {
                mode,
                codec,
                layers: video.layers.unwrap_or(1),
            },
            None,
            false,
        )
        .map_err(|e| ApiError::from_class(ErrorClass::Internal, e.to_string()))?;
    tracing::info!(ingress = %ingress.id, name = %ingress.name, "ingress created");
    Ok((StatusCode::CREATED, axum::Json(view(&state, &ingress))))
}

#[utoipa::path(get, path = "/v1/ingresses", tag = "ingresses", responses((status = 200, body = Object)))]
pub(super) async fn list(State(state): State<AppState>) -> axum::Json<Value> {
    let all: Vec<Value> = state.ingresses.list().iter().map(|i| view(&state, i)).collect();
    axum::Json(json!({"ingresses": all}))
}

#[utoipa::path(get, path = "/v1/ingresses/{id}", tag = "ingresses", params(("id" = String, Path)), responses((status = 200, description = "State, SFU session and tracks while live, onMetaData, stats", body = Object), (status = 404)))]
pub(super) async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    let ingress = state.ingresses.get(&id).ok_or_else(|| ApiError::not_found("ingress"))?;
    Ok(axum::Json(view(&state, &ingress)))
}

#[utoipa::path(delete, path = "/v1/ingresses/{id}", tag = "ingresses", params(("id" = String, Path)), responses((status = 204), (status = 404), (status = 409, description = "Declared in the configuration")))]
pub(super) async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    match state.ingresses.delete(&id) {
        Ok(ingress) => {
            tracing::info!(ingress = %ingress.id, "ingress deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(IngressError::NotFound) => Err(ApiError::not_found("ingress")),
        Err(e) => Err(ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())),
    }
}
