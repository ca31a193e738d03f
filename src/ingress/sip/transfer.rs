//! Transfer (REFER, RFC 3515): the phone asks the gateway to call another number in its place. The gateway
//! dials it through a trunk into the same room, reports progress with NOTIFY, and hangs up the phone once
//! the new call is answered. An attended transfer's `Refer-To` carries a `Replaces` (RFC 3891): the call the
//! phone already has with the target, which the gateway's INVITE then replaces at the target.

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

/// The `Replaces` header value carried in a `Refer-To` URI (`<sip:bob@host?Replaces=id%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>`
/// → `id@h;to-tag=1;from-tag=2`), percent-decoded; `None` without one or when it is malformed.
pub fn refer_replaces(value: &str) -> Option<String> {
    let uri = value.trim().trim_start_matches('<');
    let uri = uri.split('>').next()?;
    let (_, headers) = uri.split_once('?')?;
    let encoded = headers.split('&').find_map(|h| {
        let (name, value) = h.split_once('=')?;
        name.eq_ignore_ascii_case("replaces").then_some(value)
    })?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut raw = encoded.bytes();
    while let Some(b) = raw.next() {
        if b == b'%' {
            let hex = [raw.next()?, raw.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    let decoded = String::from_utf8(bytes).ok()?;
    // A Call-ID with its tags: printable, no header injection, bounded.
    let valid = !decoded.is_empty()
        && decoded.len() <= 256
        && decoded.contains("to-tag=")
        && decoded.contains("from-tag=")
        && decoded.bytes().all(|b| b.is_ascii_graphic());
    valid.then_some(decoded)
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
        replaces: refer_replaces(refer_to),
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
        assert_eq!(
            refer_target("<sip:bob@pbx?Replaces=x%40y%3Bto-tag%3D1%3Bfrom-tag%3D2>").as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn replaces_in_refer_to() {
        assert_eq!(
            refer_replaces("<sip:bob@pbx?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>").as_deref(),
            Some("abc@host;to-tag=1;from-tag=2")
        );
        assert_eq!(
            refer_replaces("<sip:bob@pbx;transport=udp?Foo=1&replaces=a%3Bto-tag%3Dx%3Bfrom-tag%3Dy>").as_deref(),
            Some("a;to-tag=x;from-tag=y")
        );
        assert_eq!(refer_replaces("<sip:bob@pbx>"), None, "a blind transfer");
        assert_eq!(refer_replaces("<sip:bob@pbx?Replaces=abc>"), None, "no tags");
        assert_eq!(
            refer_replaces("<sip:bob@pbx?Replaces=a%0D%0AX:%20y%3Bto-tag%3D1%3Bfrom-tag%3D2>"),
            None,
            "no header injection"
        );
        assert_eq!(refer_replaces("<sip:bob@pbx?Replaces=a%4>"), None, "truncated escape");
    }
}
