//! `/v1/rooms`: rooms, their participants, and a Server-Sent Events feed of each room's changes.
//!
//! - `GET /v1/rooms` lists the rooms that have participants;
//! - `GET /v1/rooms/{room}` is the room's snapshot (asking the resolver webhook about a room it does not know);
//! - `PUT|GET|DELETE /v1/rooms/{room}/participants/{id}` registers, reads and removes one participant;
//! - `DELETE /v1/rooms/{room}` makes every participant leave;
//! - `GET /v1/rooms/{room}/events` streams a `snapshot` event, then one event per change (`event:` is the
//!   change's `type`, `id:` its `seq`), and a fresh `snapshot` whenever the client fell too far behind.
//!
//! Invalid names and fields are `422 invalid_field` with a message naming the field (`sessionId: …`).

use super::{ApiError, AppState};
use crate::error::ErrorClass;
use crate::rooms::{
    Participant, ParticipantSource, RoomError, RoomEvent, RoomSnapshot, RoomSubscription, SubscriptionError,
};
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often an idle event stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// SSE events queued for a slow client before the forwarding task waits (the room's broadcast buffer then
/// absorbs the rest, and a client that falls further behind gets a fresh snapshot).
const EVENT_QUEUE: usize = 32;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/rooms", get(list))
        .route("/rooms/{room}", get(one).delete(remove_room))
        .route("/rooms/{room}/events", get(events))
        .route(
            "/rooms/{room}/participants/{id}",
            put(upsert_participant).get(get_participant).delete(remove_participant),
        )
}

/// Maps a registry error: invalid input is 422 naming the field, the rest follows the error's class.
fn room_error(error: RoomError) -> ApiError {
    match error {
        RoomError::Invalid { field, problem } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {problem}"),
        ),
        other => ApiError::from_class(other.class(), other.to_string()),
    }
}

#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", responses((status = 200, body = Object)))]
pub(super) async fn list(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({"rooms": state.rooms.list()}))
}

/// Resolves the room if needed (validating its name) and returns its snapshot; 404 when it has nobody.
async fn snapshot(state: &AppState, room: &str) -> Result<RoomSnapshot, ApiError> {
    state.resolver.ensure(&state.rooms, room).await.map_err(room_error)?;
    state.rooms.get(room).ok_or_else(|| ApiError::not_found("room"))
}

#[utoipa::path(get, path = "/v1/rooms/{room}", tag = "rooms", params(("room" = String, Path)), responses((status = 200, description = "Snapshot: participants and their tracks", body = Object), (status = 404), (status = 502, description = "Resolver webhook failed")))]
pub(super) async fn one(
    State(state): State<AppState>,
    Path(room): Path<String>,
) -> Result<axum::Json<RoomSnapshot>, ApiError> {
    snapshot(&state, &room).await.map(axum::Json)
}

#[utoipa::path(delete, path = "/v1/rooms/{room}", tag = "rooms", params(("room" = String, Path)), responses((status = 204), (status = 404), (status = 422)))]
pub(super) async fn remove_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::rooms::validate_room_name(&room).map_err(room_error)?;
    let events = state.rooms.remove_room(&room).map_err(room_error)?;
    // The application ended the room: a room of that name that comes back is asked about afresh.
    state.resolver.forget(&room);
    tracing::info!(room, left = events.len(), "room deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/rooms/{room}/participants/{id}", tag = "rooms", params(("room" = String, Path), ("id" = String, Path)), request_body = Participant, responses((status = 200, description = "{participant, events}", body = Object), (status = 400), (status = 422)))]
pub(super) async fn upsert_participant(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let axum::Json(mut body) = body.map_err(|e| ApiError::from_class(ErrorClass::BadInput, e.body_text()))?;
    // The id in the path is the participant's id; the body need not repeat it.
    if let Some(object) = body.as_object_mut() {
        object.insert("id".into(), Value::String(id));
    }
    let mut participant: Participant = serde_json::from_value(body)
        .map_err(|e| ApiError::from_class(ErrorClass::BadInput, format!("invalid participant: {e}")))?;
    participant.source = ParticipantSource::Api;
    let events: Vec<RoomEvent> = state
        .rooms
        .upsert_participant(&room, participant.clone())
        .map_err(room_error)?;
    tracing::debug!(room, participant = %participant.id, events = events.len(), "participant registered");
    Ok(axum::Json(json!({"participant": participant, "events": events})))
}

#[utoipa::path(get, path = "/v1/rooms/{room}/participants/{id}", tag = "rooms", params(("room" = String, Path), ("id" = String, Path)), responses((status = 200, body = Participant), (status = 404)))]
pub(super) async fn get_participant(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
) -> Result<axum::Json<Participant>, ApiError> {
    state.resolver.ensure(&state.rooms, &room).await.map_err(room_error)?;
    state
        .rooms
        .get(&room)
        .and_then(|snapshot| snapshot.participants.into_iter().find(|p| p.id == id))
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("participant"))
}

#[utoipa::path(delete, path = "/v1/rooms/{room}/participants/{id}", tag = "rooms", params(("room" = String, Path), ("id" = String, Path)), responses((status = 204), (status = 404)))]
pub(super) async fn remove_participant(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.rooms.remove_participant(&room, &id).map_err(room_error)?;
    tracing::debug!(room, participant = %id, "participant removed");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/rooms/{room}/events`: a task forwards the room's subscription into a channel the response body
/// reads; the task ends (dropping the subscription) as soon as the client goes away.
#[utoipa::path(get, path = "/v1/rooms/{room}/events", tag = "rooms", params(("room" = String, Path)), responses((status = 200, description = "Server-Sent Events: a `snapshot`, then one event per change (`participant_joined`, `participant_left`, `track_added`, `track_removed`, `participant_updated`, `dtmf`)", content_type = "text/event-stream")))]
pub(super) async fn events(State(state): State<AppState>, Path(room): Path<String>) -> Result<Response, ApiError> {
    // `ensure` validates the name first; resolving here puts the webhook's participants in the snapshot.
    state.resolver.ensure(&state.rooms, &room).await.map_err(room_error)?;
    let subscription = state.rooms.subscribe(&room);
    let (sender, receiver) = mpsc::channel(EVENT_QUEUE);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = forward(subscription, sender) => {}
        }
    });
    let sse = Sse::new(EventStream(receiver)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    Ok(sse.into_response())
}

/// Sends the snapshot, then every event, until the subscription closes or the client is gone.
async fn forward(mut subscription: RoomSubscription, events: mpsc::Sender<Event>) {
    if events.send(snapshot_event(&subscription.snapshot)).await.is_err() {
        return;
    }
    loop {
        let next = tokio::select! {
            // The client disconnected while the room was quiet.
            () = events.closed() => return,
            next = subscription.recv() => next,
        };
        let event = match next {
            Ok(event) => room_event(&event),
            Err(SubscriptionError::Lagged { missed }) => {
                tracing::info!(
                    room = subscription.room(),
                    missed,
                    "room event stream fell behind: new snapshot"
                );
                snapshot_event(subscription.resync())
            }
            Err(SubscriptionError::Closed) => return,
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

fn snapshot_event(snapshot: &RoomSnapshot) -> Event {
    let data = serde_json::to_string(snapshot).unwrap_or_else(|_| "null".to_string());
    Event::default().event("snapshot").data(data)
}

fn room_event(event: &RoomEvent) -> Event {
    let value = serde_json::to_value(event).unwrap_or(Value::Null);
    // The wire name of the change (`track_added`, …), as the event model serialises it.
    let kind = value["type"].as_str().unwrap_or("message").to_string();
    Event::default()
        .event(kind)
        .id(event.seq.to_string())
        .data(value.to_string())
}

/// The response body's stream: the SSE events the forwarding task queued.
struct EventStream(mpsc::Receiver<Event>);

impl futures_core::Stream for EventStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|event| event.map(Ok))
    }
}
