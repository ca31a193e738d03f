//! Error classes shared by every layer: each typed error knows whether the fault lies with the remote
//! input, with an upstream service, or with us, and maps to an HTTP (and later SIP) status from that.

/// Who is at fault for an error; decides the status code and the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request or remote input is wrong (400-class, logged at `info`).
    BadInput,
    /// Authentication is missing or wrong (401).
    Unauthorized,
    /// The thing asked for does not exist (404).
    NotFound,
    /// We are at capacity or shutting down; the caller may retry later (503).
    Unavailable,
    /// A service we depend on failed (502).
    Upstream,
    /// A bug or resource failure on our side (500, logged at `error`).
    Internal,
}

impl ErrorClass {
    /// The HTTP status code for this class.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorClass::BadInput => 400,
            ErrorClass::Unauthorized => 401,
            ErrorClass::NotFound => 404,
            ErrorClass::Unavailable => 503,
            ErrorClass::Upstream => 502,
            ErrorClass::Internal => 500,
        }
    }
}
