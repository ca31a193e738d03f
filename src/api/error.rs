//! JSON errors of the control API: `{"error": {"code", "message"}}` with the matching status.

use crate::error::ErrorClass;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error reply.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An error whose status follows its class.
    pub fn from_class(class: ErrorClass, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(class.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match class {
            ErrorClass::BadInput => "bad_request",
            ErrorClass::Unauthorized => "unauthorized",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Upstream => "upstream_error",
            ErrorClass::Internal => "internal_error",
        };
        let mut error = Self::new(status, code, message);
        if class == ErrorClass::Unavailable {
            error.retry_after = Some(5);
        }
        error
    }

    /// 404 for an unknown resource.
    pub fn not_found(what: &str) -> Self {
        Self::from_class(ErrorClass::NotFound, format!("{what} not found"))
    }
}

impl From<crate::supervisor::SupervisorError> for ApiError {
    fn from(e: crate::supervisor::SupervisorError) -> Self {
        Self::from_class(e.class(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
