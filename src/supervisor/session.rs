//! Session identity, kind and lifecycle state.

use serde::Serialize;
use std::fmt;
use std::time::SystemTime;

/// A gateway session id: `s_` and 16 random hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(format!("s_{:016x}", rand::random::<u64>()))
    }

    /// Parses an id received from the API; `None` when it is not one of ours.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("s_")?;
        (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(text.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a session bridges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionKind {
    /// An RTMP publisher ingested into the SFU.
    RtmpIngress,
    /// A phone call (dial-in or dial-out).
    SipCall,
    /// SFU tracks sent out to RTMP destinations or files.
    Egress,
}

impl SessionKind {
    /// Every kind, for metrics.
    pub const ALL: [SessionKind; 3] = [SessionKind::RtmpIngress, SessionKind::SipCall, SessionKind::Egress];

    /// What happens when a session of this kind loses a leg. Each kind's session carries out its own policy
    /// (it holds the state a restart needs); the supervisor shows it in `/v1/sessions`.
    pub fn restart_policy(self) -> RestartPolicy {
        match self {
            SessionKind::RtmpIngress => RestartPolicy::ReconnectGrace,
            SessionKind::Egress => RestartPolicy::RetryForever,
            SessionKind::SipCall => RestartPolicy::Never,
        }
    }

    /// The kebab-case name used in logs, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::RtmpIngress => "rtmp-ingress",
            SessionKind::SipCall => "sip-call",
            SessionKind::Egress => "egress",
        }
    }
}

impl fmt::Display for SessionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a kind of session recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// A publisher that drops may come back within `rtmp.reconnect_grace` and continue the same SFU tracks;
    /// after that the ingest ends.
    ReconnectGrace,
    /// An output that drops is retried forever with backoff, and a failed pipeline is restarted with backoff;
    /// the session ends only when it is stopped.
    RetryForever,
    /// Never restarted: the session ends, telling its peer why (a phone call is hung up with a `Reason`).
    Never,
}

/// Lifecycle state of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum SessionState {
    /// Setting up (protocol handshake, SFU session, pipeline).
    Starting,
    /// Media flows.
    Active,
    /// A leg dropped and is being re-established.
    Reconnecting,
    /// The gateway is shutting down; the session is finishing its work.
    Draining,
    /// Finished normally.
    Ended,
    /// Finished with an error.
    Failed {
        /// Why it failed.
        reason: String,
    },
}

impl SessionState {
    /// Every state name, for metrics.
    pub const NAMES: [&'static str; 6] = ["starting", "active", "reconnecting", "draining", "ended", "failed"];

    /// The state's name without its details.
    pub fn name(&self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Active => "active",
            SessionState::Reconnecting => "reconnecting",
            SessionState::Draining => "draining",
            SessionState::Ended => "ended",
            SessionState::Failed { .. } => "failed",
        }
    }

    /// Whether the session has finished.
    pub fn is_final(&self) -> bool {
        matches!(self, SessionState::Ended | SessionState::Failed { .. })
    }
}

/// A snapshot of one session, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Its id.
    pub id: SessionId,
    /// Its kind.
    pub kind: SessionKind,
    /// A human label (ingress name, call direction, egress id).
    pub name: String,
    /// How it recovers when a leg drops.
    pub restart_policy: RestartPolicy,
    /// Current state.
    #[serde(flatten)]
    pub state: SessionState,
    /// Start time, seconds since the Unix epoch.
    pub started_at: u64,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = SessionId::random();
        assert_eq!(SessionId::parse(id.as_str()), Some(id));
        for bad in [
            "",
            "s_",
            "s_123",
            "x_0123456789abcdef",
            "s_0123456789abcdeg",
            "../etc/passwd",
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_kind_has_its_restart_policy() {
        assert_eq!(SessionKind::SipCall.restart_policy(), RestartPolicy::Never);
        assert_eq!(SessionKind::Egress.restart_policy(), RestartPolicy::RetryForever);
        assert_eq!(SessionKind::RtmpIngress.restart_policy(), RestartPolicy::ReconnectGrace);
        assert_eq!(
            serde_json::to_value(RestartPolicy::RetryForever).unwrap(),
            "retry-forever"
        );
    }

    #[test]
    fn failed_state_serialises_with_reason() {
        let state = SessionState::Failed {
            reason: "sfu gone".into(),
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json, serde_json::json!({"state": "failed", "reason": "sfu gone"}));
    }
}
