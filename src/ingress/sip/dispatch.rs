//! Where a call goes: the dispatch rules (called number → room, optional PIN), then the dispatch webhook.

use crate::config::RuleConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where an admitted call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The room.
    pub room: String,
    /// The PIN to type first, if any.
    pub pin: Option<String>,
    /// Display name of the caller in the room.
    pub participant_name: Option<String>,
    /// Metadata attached to the caller's participant.
    pub metadata: Option<serde_json::Value>,
}

/// Why a call has no destination; each maps to a SIP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// No rule and no webhook answer: 404.
    #[error("no room for the called number")]
    NotFound,
    /// The webhook refused: 403.
    #[error("the dispatch webhook refused the call")]
    Forbidden,
    /// The webhook says busy: 486.
    #[error("the dispatch webhook says busy")]
    Busy,
    /// The webhook failed: 503.
    #[error("the dispatch webhook failed")]
    Unavailable,
}

impl DispatchError {
    /// The SIP status to answer with.
    pub fn sip_status(self) -> u16 {
        match self {
            DispatchError::NotFound => 404,
            DispatchError::Forbidden => 403,
            DispatchError::Busy => 486,
            DispatchError::Unavailable => 503,
        }
    }
}

/// Whether `pattern` (exact, prefix ending in `*`, or `*`) matches `number`. Visual separators in the
/// number (spaces, dashes, dots, brackets) are ignored.
pub fn matches(pattern: &str, number: &str) -> bool {
    let number: String = number.chars().filter(|c| !" -.()".contains(*c)).collect();
    match pattern.strip_suffix('*') {
        Some(prefix) => number.starts_with(prefix),
        None => pattern == number,
    }
}

/// The first rule matching the called number (and the trunk the call came through).
pub fn by_rules(rules: &[RuleConfig], to: &str, trunk: Option<&str>) -> Option<Destination> {
    rules
        .iter()
        .find(|r| matches(&r.to, to) && (r.trunk.is_empty() || Some(r.trunk.as_str()) == trunk))
        .map(|r| Destination {
            room: r.room.clone(),
            pin: (!r.pin.is_empty()).then(|| r.pin.clone()),
            participant_name: None,
            metadata: None,
        })
}

#[derive(Serialize)]
struct Request<'a> {
    from: &'a str,
    to: &'a str,
    trunk: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    room: Option<String>,
    participant_name: Option<String>,
    metadata: Option<serde_json::Value>,
    pin: Option<String>,
    reject: Option<u16>,
}

/// Asks the dispatch webhook (bounded by `timeout`).
pub async fn by_webhook(
    client: &reqwest::Client,
    url: &str,
    from: &str,
    to: &str,
    trunk: Option<&str>,
    timeout: Duration,
) -> Result<Destination, DispatchError> {
    let response = client
        .post(url)
        .timeout(timeout)
        .json(&Request { from, to, trunk })
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "sip: dispatch webhook unreachable");
            DispatchError::Unavailable
        })?;
    match response.status().as_u16() {
        404 => return Err(DispatchError::NotFound),
        403 => return Err(DispatchError::Forbidden),
        s if !(200..300).contains(&s) => {
            tracing::warn!(status = s, "sip: dispatch webhook failed");
            return Err(DispatchError::Unavailable);
        }
        _ => {}
    }
    let answer: Answer = response.json().await.map_err(|e| {
        tracing::warn!(error = %e, "sip: dispatch webhook answered something unusable");
        DispatchError::Unavailable
    })?;
    match (answer.reject, answer.room) {
        (Some(404), _) => Err(DispatchError::NotFound),
        (Some(486), _) => Err(DispatchError::Busy),
        (Some(_), _) => Err(DispatchError::Forbidden),
        (None, Some(room)) if crate::rooms::validate_room_name(&room).is_ok() => Ok(Destination {
            room,
            pin: answer.pin.filter(|p| !p.is_empty()),
            participant_name: answer.participant_name,
            metadata: answer.metadata,
        }),
        (None, _) => {
            tracing::warn!("sip: dispatch webhook gave no valid room");
            Err(DispatchError::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(to: &str, room: &str, trunk: &str) -> RuleConfig {
        RuleConfig {
            to: to.into(),
            room: room.into(),
            trunk: trunk.into(),
            ..RuleConfig::default()
        }
    }

    #[test]
    fn patterns_match_exact_prefix_and_any() {
        assert!(matches("+15550100", "+1 555-0100"));
        assert!(!matches("+15550100", "+155501000"));
        assert!(matches("+1555*", "+15559999"));
        assert!(!matches("+1555*", "+14155550000"));
        assert!(matches("*", "anything"));
    }

    #[test]
    fn first_matching_rule_wins_and_trunks_restrict() {
        let rules = [rule("100", "a", "pbx"), rule("100", "b", ""), rule("2*", "c", "")];
        assert_eq!(by_rules(&rules, "100", Some("pbx")).unwrap().room, "a");
        assert_eq!(by_rules(&rules, "100", Some("other")).unwrap().room, "b");
        assert_eq!(by_rules(&rules, "100", None).unwrap().room, "b");
        assert_eq!(by_rules(&rules, "2345", None).unwrap().room, "c");
        assert_eq!(by_rules(&rules, "999", None), None);
        assert_eq!(DispatchError::Busy.sip_status(), 486);
    }
}
