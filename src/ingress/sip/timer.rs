//! Session timers (RFC 4028), as the answering side: a caller that asks for `Session-Expires` gets it (the
//! caller refreshes with re-INVITE or UPDATE), an interval below our `Min-SE` gets 422, and a session whose
//! refresh does not come in time is ended.

use rsipstack::sip::{Header, Request};

/// What to do with an INVITE's session-timer request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTimer {
    /// The caller asked for none.
    Off,
    /// Run a timer of this many seconds, refreshed by the caller.
    On(u32),
    /// The interval is below our minimum: answer 422 with `Min-SE`.
    TooSmall,
}

/// The `Session-Expires` of a request (long or compact `x` form), in seconds.
pub fn requested(request: &Request) -> Option<u32> {
    let value = request.headers.iter().find_map(|h| {
        let text = h.to_string();
        let (name, value) = text.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("session-expires") || name.eq_ignore_ascii_case("x"))
            .then(|| value.trim().to_string())
    })?;
    value.split(';').next()?.trim().parse().ok()
}

/// Decides on a requested interval against our minimum.
pub fn decide(requested: Option<u32>, min_se: u32) -> SessionTimer {
    match requested {
        None => SessionTimer::Off,
        Some(secs) if secs < min_se => SessionTimer::TooSmall,
        Some(secs) => SessionTimer::On(secs),
    }
}

/// Headers of a 2xx that runs a timer of `secs`, refreshed by the caller.
pub fn answer_headers(secs: u32) -> Vec<Header> {
    vec![
        Header::Other("Session-Expires".into(), format!("{secs};refresher=uac")),
        Header::Other("Require".into(), "timer".into()),
    ]
}

/// Headers of the 422 answer.
pub fn too_small_headers(min_se: u32) -> Vec<Header> {
    vec![Header::Other("Min-SE".into(), min_se.to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Request::try_from(text.as_str()).unwrap()
    }

    #[test]
    fn reads_the_interval_in_both_forms_and_decides() {
        assert_eq!(
            requested(&invite("Session-Expires: 1800;refresher=uac\r\n")),
            Some(1800)
        );
        assert_eq!(requested(&invite("x: 120\r\n")), Some(120));
        assert_eq!(requested(&invite("")), None);
        assert_eq!(requested(&invite("Session-Expires: soon\r\n")), None);
        assert_eq!(decide(Some(1800), 90), SessionTimer::On(1800));
        assert_eq!(decide(Some(30), 90), SessionTimer::TooSmall);
        assert_eq!(decide(None, 90), SessionTimer::Off);
        let headers: Vec<String> = answer_headers(600).iter().map(|h| h.to_string()).collect();
        assert_eq!(headers, ["Session-Expires: 600;refresher=uac", "Require: timer"]);
        assert_eq!(too_small_headers(90)[0].to_string(), "Min-SE: 90");
    }
}
