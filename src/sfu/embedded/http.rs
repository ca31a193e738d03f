//! The embedded SFU's HTTP surface: the Calls API paths under `/v1/apps/{appId}` (and `/apps/{appId}`),
//! bearer-secret check, CORS on every path, bodies parsed as JSON whatever the Content-Type, JSON on every
//! reply.

use super::core::{Command, Reply};
use super::session::{ApiFailure, is_session_id};
use crate::redact::Secret;
use crate::sfu::api::{self, ErrorCode};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// How long a request waits for the core.
const CORE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// Commands to the media core.
    pub commands: mpsc::Sender<Command>,
    /// The app id accepted.
    pub app_id: String,
    /// The bearer secret accepted.
    pub app_secret: Secret,
}

/// Builds the router.
pub fn router(state: HttpState) -> Router {
    let app = Router::new()
        .route("/sessions/new", post(new_session))
        .route("/sessions/{session}", get(get_session))
        .route("/sessions/{session}/tracks/new", post(tracks_new))
        .route("/sessions/{session}/renegotiate", put(renegotiate))
        .route("/sessions/{session}/tracks/update", put(tracks_update))
        .route("/sessions/{session}/tracks/close", put(tracks_close));
    Router::new()
        .nest("/v1/apps/{app}", app.clone())
        .nest("/apps/{app}", app)
        .fallback(|| async { failure(ApiFailure::new(404, ErrorCode::NotFound, "no such path")) })
        .method_not_allowed_fallback(|| async {
            failure(ApiFailure::new(
                405,
                ErrorCode::InvalidParams,
                "method not allowed on this path",
            ))
        })
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(cors))
        .with_state(state)
}

/// Answers preflights and adds CORS headers to every reply.
async fn cors(request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = if request.method() == Method::OPTIONS {
        (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        origin.unwrap_or_else(|| HeaderValue::from_static("*")),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

fn failure(failure: ApiFailure) -> Response {
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = api::ErrorResponse {
        error_code: failure.code.to_string(),
        error_description: failure.description,
    };
    (status, axum::Json(body)).into_response()
}

fn reply<T: Serialize>(status: StatusCode, result: Result<T, ApiFailure>) -> Response {
    match result {
        Ok(body) => (status, axum::Json(body)).into_response(),
        Err(e) => failure(e),
    }
}

fn authorize(state: &HttpState, app: &str, headers: &HeaderMap) -> Result<(), ApiFailure> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .unwrap_or_default();
    if !state.app_secret.ct_eq(presented.trim()) {
        return Err(ApiFailure::new(
            401,
            ErrorCode::Unauthorized,
            "missing or wrong bearer secret",
        ));
    }
    if app != state.app_id {
        return Err(ApiFailure::new(404, ErrorCode::NotFound, "unknown app"));
    }
    Ok(())
}

async fn read_body(body: Body) -> Result<Bytes, ApiFailure> {
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiFailure::new(
            413,
            ErrorCode::PayloadTooLarge,
            format!("body larger than {MAX_BODY_BYTES} bytes"),
        )
    })
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiFailure> {
    serde_json::from_slice(bytes).map_err(|e| {
        tracing::debug!(error = %e, "embedded sfu: undecodable request body");
        ApiFailure::new(
            400,
            ErrorCode::DecodingError,
            format!("Failed to decode body as JSON: {e}"),
        )
    })
}

/// Authorises, checks the session id, and reads the JSON body.
async fn prepare<T: DeserializeOwned>(
    state: &HttpState,
    app: &str,
    session: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Option<T>, ApiFailure> {
    authorize(state, app, headers)?;
    if session.is_some_and(|s| !is_session_id(s)) {
        return Err(ApiFailure::gone());
    }
    let bytes = read_body(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    decode(&bytes).map(Some)
}

async fn call<T>(state: &HttpState, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ApiFailure> {
    let unavailable = || {
        ApiFailure::new(
            503,
            ErrorCode::TemporarilyUnavailableError,
            "the SFU core is not running",
        )
    };
    let (tx, rx) = oneshot::channel();
    state.commands.send(make(tx)).await.map_err(|_| unavailable())?;
    match tokio::time::timeout(CORE_TIMEOUT, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(unavailable()),
        Err(_) => Err(ApiFailure::new(
            503,
            ErrorCode::RetryableTransientError,
            "the SFU core is busy",
        )),
    }
}

fn required<T>(body: Option<T>) -> Result<T, ApiFailure> {
    body.ok_or_else(|| ApiFailure::new(400, ErrorCode::DecodingError, "a JSON body is required"))
}

async fn new_session(
    State(state): State<HttpState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let request: Option<api::NewSessionRequest> = prepare(&state, &app, None, &headers, body).await?;
        let offer = request.and_then(|r| r.session_description);
        call(&state, |tx| Command::NewSession(offer, tx)).await
    }
    .await;
    reply(StatusCode::CREATED, result)
}

async fn get_session(
    State(state): State<HttpState>,
    Path((app, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(&state, &app, &headers)?;
        if !is_session_id(&session) {
            return Err(ApiFailure::gone());
        }
        call(&state, |tx| Command::Get(session, tx)).await
    }
    .await;
    reply(StatusCode::OK, result)
}

/// One session mutation: authorise, read the JSON body as `R`, and ask the core with `command`.
async fn mutate<R, T>(
    state: &HttpState,
    app: &str,
    session: String,
    headers: &HeaderMap,
    body: Body,
    command: impl FnOnce(String, R, Reply<T>) -> Command,
) -> Response
where
    R: DeserializeOwned,
    T: Serialize,
{
    let result = async {
        let request: R = required(prepare(state, app, Some(&session), headers, body).await?)?;
        call(state, |tx| command(session, request, tx)).await
    }
    .await;
    reply(StatusCode::OK, result)
}

async fn tracks_new(
    State(state): State<HttpState>,
    Path((app, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    mutate(&state, &app, session, &headers, body, Command::Tracks).await
}

async fn renegotiate(
    State(state): State<HttpState>,
    Path((app, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    mutate(
        &state,
        &app,
        session,
        &headers,
        body,
        |session, request: api::RenegotiateRequest, tx| Command::Renegotiate(session, request.session_description, tx),
    )
    .await
}

async fn tracks_update(
    State(state): State<HttpState>,
    Path((app, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    mutate(&state, &app, session, &headers, body, Command::Update).await
}

async fn tracks_close(
    State(state): State<HttpState>,
    Path((app, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    mutate(&state, &app, session, &headers, body, Command::Close).await
}
