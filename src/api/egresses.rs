//! `POST/GET/DELETE /v1/egresses[/{id}]`: SFU tracks re-encoded to RTMP(S) destinations.

use super::{ApiError, AppState};
use crate::egress::layout::Layout;
use crate::egress::output::Target;
use crate::egress::session::{self, EgressDeps, Sources};
use crate::egress::store::{AudioOut, EgressSpec, TrackRef, VideoOut};
use crate::error::ErrorClass;
use crate::rooms::validate_room_name;
use crate::supervisor::SessionKind;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/egresses", get(list).post(create))
        .route("/egresses/{id}", get(one).patch(update).delete(remove))
}

/// One destination: an RTMP(S) `url`, a `file` name for a fragmented MP4 recording, or an `hls` name for a
/// live HLS directory (`{name}/index.m3u8`), both in the configured recordings directory.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Output {
    url: Option<String>,
    file: Option<String>,
    hls: Option<String>,
}

/// `POST /v1/egresses` body: the sources (`tracks` by name, or a `room` whose audio and video tracks are
/// followed as participants join and leave), how several videos are laid out, the outputs and the encoding.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateEgress {
    /// Tracks to take (1-16).
    #[serde(default)]
    tracks: Vec<TrackRef>,
    /// Or a room to take every track of.
    room: Option<String>,
    /// Or an RTMP ingress to take the tracks of, followed when its publisher comes back under a new SFU
    /// session.
    ingress: Option<String>,
    /// `grid` (default) or `speaker` (the loudest participant large).
    #[serde(default)]
    layout: Layout,
    outputs: Vec<Output>,
    #[serde(default)]
    video: VideoOut,
    #[serde(default)]
    audio: AudioOut,
}

/// Most tracks one egress takes by name.
const MAX_TRACKS: usize = 16;

fn invalid(field: &str, problem: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        format!("{field}: {problem}"),
    )
}

fn validate(request: &CreateEgress) -> Result<(), ApiError> {
    let given = usize::from(!request.tracks.is_empty())
        + usize::from(request.room.is_some())
        + usize::from(request.ingress.is_some());
    if given != 1 {
        return Err(invalid("tracks", "give exactly one of tracks, room or ingress"));
    }
    if let Some(room) = &request.room {
        validate_room_name(room).map_err(|e| invalid("room", &e.to_string()))?;
    }
    if request.tracks.len() > MAX_TRACKS {
        return Err(invalid("tracks", "name 1 to 16 tracks"));
    }
    if request.outputs.is_empty() || request.outputs.len() > 8 {
        return Err(invalid("outputs", "1 to 8 outputs"));
    }
    Ok(())
}

/// The targets of the outputs, or the field that is wrong.
fn targets(state: &AppState, outputs: &[Output]) -> Result<Vec<Target>, ApiError> {
    let mut targets = Vec::with_capacity(outputs.len());
    for (i, output) in outputs.iter().enumerate() {
        let target = match (&output.url, &output.file, &output.hls) {
            (Some(url), None, None) => {
                let url = crate::egress::publish::RtmpUrl::parse(url).map_err(|e| {
                    invalid(
                        &format!("outputs[{i}].url"),
                        &format!("must be rtmp[s]://host[:port]/app/stream ({e})"),
                    )
                })?;
                Target::Rtmp(url, state.egress_tls.clone())
            }
            (None, Some(name), None) | (None, None, Some(name)) => {
                let field = if output.file.is_some() { "file" } else { "hls" };
                let Some(dir) = &state.recordings_dir else {
                    return Err(invalid(
                        &format!("outputs[{i}].{field}"),
                        "recordings are off (egress.recordings_dir)",
                    ));
                };
                let valid = !name.is_empty()
                    && name.len() <= 100
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    return Err(invalid(
                        &format!("outputs[{i}].{field}"),
                        "1-100 letters, digits, '-' or '_'",
                    ));
                }
                if output.file.is_some() {
                    Target::File(dir.join(name))
                } else {
                    Target::Hls(dir.join(name))
                }
            }
            _ => return Err(invalid(&format!("outputs[{i}]"), "give one of url, file or hls")),
        };
        targets.push(target);
    }
    Ok(targets)
}

fn check_video(request: &CreateEgress) -> Result<(), ApiError> {
    let v = &request.video;
    let even = |n: u32| n % 2 == 0;
    if !(16..=3840).contains(&v.width) || !(16..=2160).contains(&v.height) || !even(v.width) || !even(v.height) {
        return Err(invalid("video", "width 16-3840 and height 16-2160, both even"));
    }
    if !(1..=60).contains(&v.fps) || !(100..=20_000).contains(&v.bitrate_kbps) {
        return Err(invalid("video", "fps 1-60 and bitrateKbps 100-20000"));
    }
    if !(32..=512).contains(&request.audio.bitrate_kbps) {
        return Err(invalid("audio.bitrateKbps", "32-512"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/egresses", tag = "egresses", request_body = CreateEgress, responses((status = 201, body = Object), (status = 400), (status = 422), (status = 503, description = "Over capacity")))]
pub(super) async fn create(
    State(state): State<AppState>,
    body: Result<axum::Json<CreateEgress>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let axum::Json(request) = body.map_err(|e| ApiError::from_class(ErrorClass::BadInput, e.body_text()))?;
    validate(&request)?;
    check_video(&request)?;
    let targets = targets(&state, &request.outputs)?;
    let urls: Vec<String> = request
        .outputs
        .iter()
        .map(|o| {
            o.url.clone().unwrap_or_else(|| match (&o.file, &o.hls) {
                (Some(file), _) => format!("file:{file}"),
                (_, hls) => format!("hls:{}", hls.clone().unwrap_or_default()),
            })
        })
        .collect();
    let sources = match (&request.room, &request.ingress) {
        (Some(room), _) => Sources::Room(room.clone()),
        (None, Some(ingress)) => {
            if state.ingresses.get(ingress).is_none() {
                return Err(invalid("ingress", "no such ingress"));
            }
            Sources::Ingress(ingress.clone())
        }
        (None, None) => Sources::Tracks(request.tracks.clone()),
    };
    let spec = EgressSpec {
        tracks: request.tracks,
        room: request.room,
        ingress: request.ingress,
        layout: request.layout,
        video: request.video,
        audio: request.audio,
    };
    let egress = state.egresses.create(spec, &urls);
    let deps = EgressDeps {
        store: state.egresses.clone(),
        client: state
            .egress_client
            .clone()
            .ok_or_else(|| ApiError::from_class(ErrorClass::Unavailable, "no SFU"))?,
        fragments: state.fragments.clone(),
        webhooks: state.webhooks.clone(),
        rooms: state.rooms.clone(),
        ingresses: state.ingresses.clone(),
        timing: state.egress_timing,
    };
    let id = egress.id.clone();
    let spawned = state
        .supervisor
        .spawn_with_cost(SessionKind::Egress, id.clone(), state.egress_cost, move |ctx| {
            session::run(ctx, deps, id, sources, targets)
        });
    match spawned {
        Ok(session) => state
            .egresses
            .update(&egress.id, |e| e.session = Some(session.to_string())),
        Err(e) => {
            state
                .egresses
                .update(&egress.id, |e| e.state = crate::egress::store::EgressState::Failed);
            return Err(e.into());
        }
    }
    tracing::info!(egress = %egress.id, "egress created");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"id": egress.id, "state": egress.state})),
    ))
}

#[utoipa::path(get, path = "/v1/egresses", tag = "egresses", responses((status = 200, body = Object)))]
pub(super) async fn list(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({"egresses": state.egresses.list()}))
}

#[utoipa::path(get, path = "/v1/egresses/{id}", tag = "egresses", params(("id" = String, Path)), responses((status = 200, description = "State and per-output {url (key redacted), state, reconnects, bytes, bitrateBps, dropped}", body = Object), (status = 404)))]
pub(super) async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    let egress = state.egresses.get(&id).ok_or_else(|| ApiError::not_found("egress"))?;
    Ok(axum::Json(serde_json::to_value(egress).unwrap_or(Value::Null)))
}

/// `PATCH /v1/egresses/{id}` body: what may change while the egress runs.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateEgress {
    /// A new layout, applied within a second.
    layout: Option<Layout>,
}

#[utoipa::path(patch, path = "/v1/egresses/{id}", tag = "egresses", params(("id" = String, Path)), request_body = UpdateEgress, responses((status = 200, body = Object), (status = 400), (status = 404)))]
pub(super) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<axum::Json<UpdateEgress>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let axum::Json(request) = body.map_err(|e| ApiError::from_class(ErrorClass::BadInput, e.body_text()))?;
    state.egresses.get(&id).ok_or_else(|| ApiError::not_found("egress"))?;
    if let Some(layout) = request.layout {
        state.egresses.update(&id, |e| e.layout = layout);
        tracing::info!(egress = %id, ?layout, "egress layout changed");
    }
    let egress = state.egresses.get(&id).ok_or_else(|| ApiError::not_found("egress"))?;
    Ok(axum::Json(serde_json::to_value(egress).unwrap_or(Value::Null)))
}

#[utoipa::path(delete, path = "/v1/egresses/{id}", tag = "egresses", params(("id" = String, Path)), responses((status = 204), (status = 404)))]
pub(super) async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let egress = state
        .egresses
        .remove(&id)
        .ok_or_else(|| ApiError::not_found("egress"))?;
    // Stopped now (its outputs then finish their files); a session already gone is fine.
    if let Some(session) = egress.session.as_deref().and_then(crate::supervisor::SessionId::parse) {
        let _ = state.supervisor.stop(&session);
    }
    Ok(StatusCode::NO_CONTENT)
}
