//! HTTPS client for the Calls API (Cloudflare or the embedded SFU).
//!
//! Every call has a timeout. Mutations on one session are serialised (the SFU rejects overlapping ones with
//! 406). Retries use exponential backoff with jitter, bounded in count and time, and only where the request
//! cannot have been applied: connection failures, 429 and 503 replies, any failure of a read (`GET`), and a
//! `tracks/new` whose every item failed with a "not yet" error (e.g. `not_found_track_error` while the
//! publisher starts) and that produced no SDP.

mod retry;

pub use retry::RetryPolicy;

use crate::error::ErrorClass;
use crate::redact::Secret;
use crate::sfu::api::{self, ErrorCode};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A failed Calls API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request was not sent (connection refused, DNS, TLS).
    #[error("cannot reach the SFU API: {0}")]
    Connect(String),
    /// No reply within the timeout (the request may have been applied).
    #[error("the SFU API did not answer in time")]
    Timeout,
    /// The SFU answered with an error status.
    #[error("SFU API error {status}: {code}: {description}")]
    Api {
        /// HTTP status.
        status: u16,
        /// `errorCode` (empty when the body had none).
        code: String,
        /// `errorDescription`.
        description: String,
    },
    /// The reply could not be decoded.
    #[error("undecodable SFU API reply: {0}")]
    Decode(String),
    /// Every item of the request failed.
    #[error("SFU rejected the track: {code}: {description}")]
    Item {
        /// The first item's `errorCode`.
        code: String,
        /// Its `errorDescription`.
        description: String,
    },
}

impl ClientError {
    /// The SFU's `errorCode`, when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } | ClientError::Item { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Who is at fault.
    pub fn class(&self) -> ErrorClass {
        match self {
            ClientError::Api { status: 401, .. } => ErrorClass::Internal, // our credentials are wrong
            ClientError::Api { status, .. } if *status < 500 => ErrorClass::BadInput,
            _ => ErrorClass::Upstream,
        }
    }

    fn retryable(&self, idempotent: bool) -> bool {
        match self {
            ClientError::Connect(_) => true,
            ClientError::Api { status: 429 | 503, .. } => true,
            ClientError::Api { status, .. } => idempotent && *status >= 500,
            ClientError::Timeout | ClientError::Decode(_) => idempotent,
            ClientError::Item { code, .. } => ErrorCode::is_retryable(code),
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://rtc.live.cloudflare.com/v1`.
    pub api_url: String,
    /// App id.
    pub app_id: String,
    /// App secret (bearer).
    pub app_secret: Secret,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
}

/// The Calls API client; cheap to clone.
#[derive(Clone)]
pub struct CallsClient {
    http: reqwest::Client,
    base: String,
    secret: Secret,
    retry: RetryPolicy,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl CallsClient {
    /// A client for `config`.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        Ok(Self {
            http,
            base: format!("{}/apps/{}", config.api_url.trim_end_matches('/'), config.app_id),
            secret: config.app_secret.clone(),
            retry: config.retry,
            locks: Arc::default(),
        })
    }

    fn session_lock(&self, session: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, lock| Arc::strong_count(lock) > 1); // forget idle sessions
        locks.entry(session.to_string()).or_default().clone()
    }

    async fn once<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(self.secret.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                ClientError::Timeout
            } else if e.is_connect() || e.is_builder() {
                ClientError::Connect(e.without_url().to_string())
            } else {
                ClientError::Decode(e.without_url().to_string())
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                ClientError::Timeout
            } else {
                ClientError::Decode(e.without_url().to_string())
            }
        })?;
        if !status.is_success() {
            let error: api::ErrorResponse = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: error.error_code,
                description: error.error_description,
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        if let Some(code) = value
            .get("errorCode")
            .and_then(|c| c.as_str())
            .filter(|c| !c.is_empty())
        {
            let description = value
                .get("errorDescription")
                .and_then(|d| d.as_str())
                .unwrap_or_default();
            return Err(ClientError::Api {
                status: StatusCode::OK.as_u16(),
                code: code.to_string(),
                description: description.to_string(),
            });
        }
        serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn with_retry<T, F, Fut>(&self, idempotent: bool, mut attempt_fn: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match attempt_fn().await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let out_of_budget = attempt >= self.retry.max_attempts || started.elapsed() >= self.retry.budget;
                    if out_of_budget || !e.retryable(idempotent) {
                        return Err(e);
                    }
                    let delay = self.retry.delay(attempt);
                    tracing::debug!(error = %e, attempt, ?delay, "calls api: retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// `POST /sessions/new`, optionally with an offer.
    pub async fn new_session(
        &self,
        offer: Option<api::SessionDescription>,
    ) -> Result<api::NewSessionResponse, ClientError> {
        let body = api::NewSessionRequest {
            session_description: offer,
        };
        self.with_retry(false, || self.once(&Method::POST, "/sessions/new", Some(&body)))
            .await
    }

    /// `POST /sessions/{id}/tracks/new`. A reply whose every item failed is an error ([`ClientError::Item`]);
    /// it is retried while the items' errors are "not yet" errors.
    pub async fn tracks_new(
        &self,
        session: &str,
        request: &api::TracksRequest,
    ) -> Result<api::TracksResponse, ClientError> {
        let lock = self.session_lock(session);
        let _serialised = lock.lock().await;
        let path = format!("/sessions/{session}/tracks/new");
        self.with_retry(false, || async {
            let reply: api::TracksResponse = self.once(&Method::POST, &path, Some(request)).await?;
            let all_failed = !reply.tracks.is_empty() && reply.tracks.iter().all(|t| t.error_code.is_some());
            if all_failed && reply.session_description.is_none() {
                let (code, description) = reply.tracks[0].error().unwrap_or_default();
                return Err(ClientError::Item {
                    code: code.to_string(),
                    description: description.to_string(),
                });
            }
            Ok(reply)
        })
        .await
    }

    /// `PUT /sessions/{id}/renegotiate` with our answer.
    pub async fn renegotiate(&self, session: &str, answer: api::SessionDescription) -> Result<(), ClientError> {
        let lock = self.session_lock(session);
        let _serialised = lock.lock().await;
        let body = api::RenegotiateRequest {
            session_description: answer,
        };
        let path = format!("/sessions/{session}/renegotiate");
        let _: api::RenegotiateResponse = self
            .with_retry(false, || self.once(&Method::PUT, &path, Some(&body)))
            .await?;
        Ok(())
    }

    /// `PUT /sessions/{id}/tracks/update`.
    pub async fn tracks_update(
        &self,
        session: &str,
        request: &api::UpdateTracksRequest,
    ) -> Result<api::TracksResponse, ClientError> {
        let lock = self.session_lock(session);
        let _serialised = lock.lock().await;
        let path = format!("/sessions/{session}/tracks/update");
        self.with_retry(false, || self.once(&Method::PUT, &path, Some(request)))
            .await
    }

    /// `PUT /sessions/{id}/tracks/close`.
    pub async fn tracks_close(
        &self,
        session: &str,
        request: &api::CloseTracksRequest,
    ) -> Result<api::TracksResponse, ClientError> {
        let lock = self.session_lock(session);
        let _serialised = lock.lock().await;
        let path = format!("/sessions/{session}/tracks/close");
        self.with_retry(false, || self.once(&Method::PUT, &path, Some(request)))
            .await
    }

    /// `GET /sessions/{id}`.
    pub async fn get_session(&self, session: &str) -> Result<api::GetSessionResponse, ClientError> {
        let path = format!("/sessions/{session}");
        self.with_retry(true, || self.once::<(), _>(&Method::GET, &path, None))
            .await
    }
}
