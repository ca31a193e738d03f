//! `/v1/sfu/{path}`: the Calls API of the configured SFU (Cloudflare or the embedded one), forwarded with
//! the app secret added, so a browser (the dashboard's preview) can pull tracks without ever holding the
//! secret. It sits behind the control API's bearer token like the rest of `/v1`.

use super::{ApiError, AppState};
use crate::error::ErrorClass;
use crate::redact::Secret;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use std::time::Duration;

/// Largest body forwarded.
const MAX_BODY: usize = 1024 * 1024;

/// Where the proxy forwards to.
#[derive(Clone)]
pub struct SfuProxy {
    http: reqwest::Client,
    base: String,
    secret: Secret,
}

impl SfuProxy {
    /// A proxy to `{api_url}/apps/{app_id}` authenticating with `secret`.
    pub fn new(api_url: &str, app_id: &str, secret: Secret, timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder().timeout(timeout).build().unwrap_or_default(),
            base: format!("{}/apps/{app_id}", api_url.trim_end_matches('/')),
            secret,
        }
    }
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/sfu/{*path}", any(forward))
}

#[utoipa::path(post, path = "/v1/sfu/{path}", tag = "sfu", params(("path" = String, Path, description = "A Calls API path after /apps/{appId}/, e.g. sessions/new; GET and PUT are forwarded too")), responses((status = 200, description = "The SFU's reply, unchanged", body = Object), (status = 502)))]
pub(super) async fn forward(
    State(state): State<AppState>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(proxy) = &state.sfu_proxy else {
        return Err(ApiError::from_class(ErrorClass::Unavailable, "no SFU is configured"));
    };
    if path.split('/').any(|segment| segment == ".." || segment.is_empty()) {
        return Err(ApiError::from_class(ErrorClass::BadInput, "invalid path"));
    }
    let method = request.method().clone();
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "body too large"))?;
    let mut url = format!("{}/{path}", proxy.base);
    if let Some(query) = query {
        url.push('?');
        url.push_str(&query);
    }
    let mut upstream = proxy
        .http
        .request(method, url)
        .bearer_auth(proxy.secret.expose())
        .header(header::CONTENT_TYPE, "application/json");
    if !body.is_empty() {
        upstream = upstream.body(body);
    }
    let reply = upstream.send().await.map_err(|e| {
        tracing::info!(error = %e.without_url(), "sfu proxy: upstream failed");
        ApiError::from_class(ErrorClass::Upstream, "the SFU did not answer")
    })?;
    let status = StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = reply
        .bytes()
        .await
        .map_err(|_| ApiError::from_class(ErrorClass::Upstream, "the SFU reply was cut short"))?;
    let mut response = (status, Body::from(bytes)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
