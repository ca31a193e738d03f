//! Blind transfer (REFER, RFC 3515): the phone asks the gateway to call another number in its place. The
//! gateway dials it through a trunk into the same room, reports progress with NOTIFY, and hangs up the
//! phone once the new call is answered.

use super::call::CallDeps;
use super::dialout::{self, DialRequest, RING_TIMEOUT};

/// The user part of a `Refer-To` value: `<sip:+15557777@host;transport=udp>` → `+15557777`.
pub fn refer_target(value: &str) -> Option<String> {
    let start = value.find("sip:").or_else(|| value.find("tel:"))? + 4;
    let rest = &value[start..];
    let end = rest.find(['@', '>', ';', '?']).unwrap_or(rest.len());
    let user = &rest[..end];
    let valid =
        !user.is_empty() && user.len() <= 64 && user.chars().all(|c| c.is_ascii_alphanumeric() || "+*#-._".contains(c));
    valid.then(|| user.to_string())
}

/// Starts the call to the transfer target: through the trunk the call came in by when it can dial out, else
/// the first outbound trunk. Returns the new call's id.
pub(super) fn begin(deps: &CallDeps, call_id: &str, refer_to: &str) -> Result<String, String> {
    let target = refer_target(refer_to).ok_or("no usable Refer-To")?;
    let shared = deps
        .server
        .get()
        .and_then(std::sync::Weak::upgrade)
        .ok_or("the SIP server is gone")?;
    let call = deps.store.get(call_id).ok_or("unknown call")?;
    let outbound = |name: Option<&str>| {
        shared
            .config
            .trunks
            .iter()
            .find(|t| !t.address.is_empty() && name.is_none_or(|n| t.name == n))
            .map(|t| t.name.clone())
    };
    let trunk = outbound(call.trunk.as_deref())
        .or_else(|| outbound(None))
        .ok_or("no outbound trunk")?;
    let request = DialRequest {
        to: target,
        trunk,
        room: call.room.clone(),
        caller_id: None,
        participant_name: Some("Transfer".into()),
        ring_timeout: RING_TIMEOUT,
    };
    dialout::dial_with(&shared, request)
        .map(|view| view.id)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refer_to_targets() {
        assert_eq!(
            refer_target("<sip:+15557777@10.0.0.1;transport=udp>").as_deref(),
            Some("+15557777")
        );
        assert_eq!(refer_target("sip:200@pbx").as_deref(), Some("200"));
        assert_eq!(refer_target("<tel:+441234>").as_deref(), Some("+441234"));
        assert_eq!(refer_target("<sip:@host>"), None);
        assert_eq!(refer_target("<http://x>"), None);
        assert_eq!(refer_target("<sip:a b@host>"), None);
    }
}
