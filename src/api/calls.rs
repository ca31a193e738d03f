//! `/v1/calls`: phone calls. List and inspect them, hang one up, send DTMF digits to the phone, and dial out
//! through a trunk.

use super::{ApiError, AppState};
use crate::ingress::sip::{CallCommand, CallView};
use crate::supervisor::SessionId;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/calls", get(list).post(dial))
        .route("/calls/{id}", get(one).delete(hang_up))
        .route("/calls/{id}/dtmf", post(dtmf))
}

fn sip(state: &AppState) -> Result<&crate::ingress::sip::SipServer, ApiError> {
    state.sip.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sip_disabled",
            "the SIP user agent is not running",
        )
    })
}

fn invalid(field: &str, problem: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        format!("{field}: {problem}"),
    )
}

/// Every call, live ones first.
#[utoipa::path(get, path = "/v1/calls", tag = "calls", responses((status = 200, body = [CallView])))]
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Vec<CallView>>, ApiError> {
    Ok(Json(sip(&state)?.calls().list()))
}

/// One call with its state and quality figures.
#[utoipa::path(get, path = "/v1/calls/{id}", tag = "calls", params(("id" = String, Path)), responses((status = 200, body = CallView), (status = 404)))]
pub(super) async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<CallView>, ApiError> {
    sip(&state)?
        .calls()
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("call"))
}

/// Hangs up a call (BYE, or CANCEL/480 before the answer).
#[utoipa::path(delete, path = "/v1/calls/{id}", tag = "calls", params(("id" = String, Path)), responses((status = 204), (status = 404)))]
pub(super) async fn hang_up(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let call = sip(&state)?
        .calls()
        .get(&id)
        .ok_or_else(|| ApiError::not_found("call"))?;
    if call.state == crate::ingress::sip::CallState::Ended {
        return Err(ApiError::new(StatusCode::CONFLICT, "call_ended", "the call is over"));
    }
    let session = SessionId::parse(&id).ok_or_else(|| ApiError::not_found("call"))?;
    state
        .supervisor
        .stop(&session)
        .map_err(|_| ApiError::not_found("call"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/calls/{id}/dtmf` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Digits {
    /// Digits to play: `0-9`, `*`, `#`, `A-D` (at most 32).
    digits: String,
}

/// Plays DTMF digits to the phone (RFC 4733 events).
#[utoipa::path(post, path = "/v1/calls/{id}/dtmf", tag = "calls", params(("id" = String, Path)), request_body = Digits,
    responses((status = 202), (status = 404), (status = 422)))]
pub(super) async fn dtmf(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<Digits>,
) -> Result<StatusCode, ApiError> {
    let valid = !body.digits.is_empty()
        && body.digits.len() <= 32
        && body
            .digits
            .chars()
            .all(|c| crate::ingress::sip::rtp::digit_event(c).is_some());
    if !valid {
        return Err(invalid("digits", "1 to 32 of 0-9 * # A-D"));
    }
    if sip(&state)?.calls().command(&id, CallCommand::Dtmf(body.digits)) {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::not_found("live call"))
    }
}

/// `POST /v1/calls` body: dial a number through a trunk and join a room on answer.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Dial {
    /// The number (or SIP user) to call.
    to: String,
    /// The outbound trunk's name.
    trunk: String,
    /// The room the callee joins.
    room: String,
    /// Caller id (From user); the trunk's `caller_id` when absent.
    caller_id: Option<String>,
    /// Display name of the callee in the room.
    participant_name: Option<String>,
    /// Seconds the phone may ring (1 to 300, default 60).
    ring_timeout: Option<u64>,
}

/// Dials out: the call starts `ringing` and joins the room when answered; `GET /v1/calls/{id}` shows how it
/// went (`sipStatus` for busy, no answer or failure).
#[utoipa::path(post, path = "/v1/calls", tag = "calls", request_body = Dial,
    responses((status = 201, body = CallView), (status = 422), (status = 503)))]
pub(super) async fn dial(
    State(state): State<AppState>,
    Json(body): Json<Dial>,
) -> Result<(StatusCode, Json<CallView>), ApiError> {
    let server = sip(&state)?;
    crate::rooms::validate_room_name(&body.room).map_err(|e| invalid("room", &e.to_string()))?;
    let number_ok = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "+*#-._".contains(c))
    };
    if !number_ok(&body.to) {
        return Err(invalid("to", "1-64 of letters, digits and + * # - . _"));
    }
    if body.caller_id.as_deref().is_some_and(|c| !number_ok(c)) {
        return Err(invalid("callerId", "1-64 of letters, digits and + * # - . _"));
    }
    let ring_timeout = match body.ring_timeout {
        None => crate::ingress::sip::dialout::RING_TIMEOUT,
        Some(s @ 1..=300) => std::time::Duration::from_secs(s),
        Some(_) => return Err(invalid("ringTimeout", "1 to 300 seconds")),
    };
    let request = crate::ingress::sip::dialout::DialRequest {
        ring_timeout,
        to: body.to,
        trunk: body.trunk,
        room: body.room,
        caller_id: body.caller_id,
        participant_name: body.participant_name,
        replaces: None,
    };
    match crate::ingress::sip::dialout::dial(server, request) {
        Ok(view) => Ok((StatusCode::CREATED, Json(view))),
        Err(crate::ingress::sip::dialout::DialError::UnknownTrunk) => {
            Err(invalid("trunk", "no outbound trunk of that name"))
        }
        Err(crate::ingress::sip::dialout::DialError::Refused(e)) => Err(e.into()),
    }
}
