//! The Calls API error codes, and the HTTP status and retry class of each.

use std::fmt;

/// An `errorCode` value of the Calls API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bad bearer secret.
    Unauthorized,
    /// Unknown app.
    NotFound,
    /// The body is not valid JSON or has wrong field types.
    DecodingError,
    /// A bad field, combination or limit.
    InvalidParams,
    /// The body is too big.
    PayloadTooLarge,
    /// The session is unknown, expired or closed (410) or not connected yet (425).
    SessionError,
    /// The SDP was rejected, or the offer/answer order is wrong.
    InvalidSessionDescription,
    /// A remote publication is not found (publisher not connected or not sending yet).
    NotFoundTrackError,
    /// A subscription got no source media in time.
    EmptyTrackError,
    /// The allocation already exists.
    RepeatedLocalTrackError,
    /// A simulcast update does not apply.
    UpdateTrackError,
    /// The track does not exist or was already closed.
    CloseTrackError,
    /// A transient failure; retry.
    RetryableTransientError,
    /// Temporarily unavailable; retry.
    TemporarilyUnavailableError,
    /// The transport is not available yet; retry.
    TransportUnavailableError,
    /// A backend failure.
    BackendError,
    /// An internal failure.
    InternalError,
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::DecodingError => "decoding_error",
            ErrorCode::InvalidParams => "invalid_params",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::SessionError => "session_error",
            ErrorCode::InvalidSessionDescription => "invalid_session_description",
            ErrorCode::NotFoundTrackError => "not_found_track_error",
            ErrorCode::EmptyTrackError => "empty_track_error",
            ErrorCode::RepeatedLocalTrackError => "repeated_local_track_error",
            ErrorCode::UpdateTrackError => "update_track_error",
            ErrorCode::CloseTrackError => "close_track_error",
            ErrorCode::RetryableTransientError => "retryable_transient_error",
            ErrorCode::TemporarilyUnavailableError => "temporarily_unavailable_error",
            ErrorCode::TransportUnavailableError => "transport_unavailable_error",
            ErrorCode::BackendError => "backend_error",
            ErrorCode::InternalError => "internal_error",
        }
    }

    /// Whether a client should retry the operation later ("not yet" and transient codes).
    pub fn is_retryable(code: &str) -> bool {
        matches!(
            code,
            "not_found_track_error"
                | "empty_track_error"
                | "retryable_transient_error"
                | "temporarily_unavailable_error"
                | "transport_unavailable_error"
                | "backend_error"
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
