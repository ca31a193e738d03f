//! Session timers (RFC 4028). As the answering side: a caller that asks for `Session-Expires` gets it (the
//! caller refreshes with re-INVITE or UPDATE), an interval below our `Min-SE` gets 422. As the calling side
//! (dial-out): our INVITE supports timers, and when the callee's 2xx makes us the refresher we refresh at half
//! the interval (UPDATE when the callee allows it, else re-INVITE). Either way, a session whose refresh does
//! not come in time is ended.

use rsipstack::sip::{Header, Request, Response};
use std::time::Duration;

/// Which side refreshes a running session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The gateway sends the refreshes.
    Us,
    /// The phone (or trunk) sends them; the gateway ends the call when none comes.
    Them,
}

/// A running session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// The session interval.
    pub interval: Duration,
    /// Who refreshes.
    pub refresher: Refresher,
    /// When we refresh: with UPDATE (the other side allows it) or with a re-INVITE.
    pub by_update: bool,
}

impl Timer {
    /// When the refresher refreshes: half the interval (RFC 4028 §10).
    pub fn refresh_after(&self) -> Duration {
        self.interval / 2
    }

    /// The `refresher` parameter to answer a refresh (re-INVITE/UPDATE) from the other side with, keeping
    /// the roles as they are: `uac` is the sender of that request, `uas` us.
    pub fn answer_refresher(&self) -> &'static str {
        match self.refresher {
            Refresher::Us => "uas",
            Refresher::Them => "uac",
        }
    }
}

/// The value of a header named `long` (or its compact form `short`), from `Display`ed headers.
fn header_value<'a>(headers: impl Iterator<Item = &'a Header>, long: &str, short: &str) -> Option<String> {
    headers.into_iter().find_map(|h| {
        let text = h.to_string();
        let (name, value) = text.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short)).then(|| value.trim().to_string())
    })
}

/// The timer a 2xx to our INVITE sets up (RFC 4028 §7.2): none without `Session-Expires`; refreshed by us
/// when it says `refresher=uac` (or names no refresher), by the callee when `refresher=uas`.
pub fn from_answer(response: &Response) -> Option<Timer> {
    let value = header_value(response.headers.iter(), "session-expires", "x")?;
    let mut parts = value.split(';');
    let secs: u64 = parts.next()?.trim().parse().ok().filter(|s| *s > 0)?;
    let refresher = parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("refresher"))
        .map(|(_, v)| v.trim().to_ascii_lowercase());
    let refresher = match refresher.as_deref() {
        Some("uas") => Refresher::Them,
        _ => Refresher::Us,
    };
    let by_update = header_value(response.headers.iter(), "allow", "allow")
        .is_some_and(|allow| allow.split(',').any(|m| m.trim().eq_ignore_ascii_case("UPDATE")));
    Some(Timer {
        interval: Duration::from_secs(secs),
        refresher,
        by_update,
    })
}

/// Headers of a dial-out INVITE: timers supported, `secs` asked for (the callee picks the refresher).
pub fn offer_headers(secs: u32, min_se: u32) -> Vec<Header> {
    vec![
        Header::Other("Supported".into(), "timer".into()),
        Header::Other("Session-Expires".into(), secs.to_string()),
        Header::Other("Min-SE".into(), min_se.to_string()),
    ]
}

/// Longest interval a callee's 422 may make us ask for: a day (a session refreshed that rarely is as good as
/// none, and a larger `Min-SE` is more likely a broken peer).
const MAX_RETRY_INTERVAL: u32 = 86_400;

/// The interval to ask for again after a 422 (Session Interval Too Small) to our INVITE that offered
/// `offered` seconds: the 422's `Min-SE` (RFC 4028 §7.4). `None` for any other answer, a 422 without a usable
/// `Min-SE`, or one not above what was offered.
pub fn retry_interval(response: &Response, offered: u32) -> Option<u32> {
    if response.status_code.code() != 422 {
        return None;
    }
    let min_se: u32 = header_value(response.headers.iter(), "min-se", "min-se")?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()?;
    (min_se > offered && min_se <= MAX_RETRY_INTERVAL).then_some(min_se)
}

/// Headers of our refresh (UPDATE or re-INVITE): the same interval, us refreshing.
pub fn refresh_headers(timer: &Timer) -> Vec<Header> {
    vec![
        Header::Other(
            "Session-Expires".into(),
            format!("{};refresher=uac", timer.interval.as_secs()),
        ),
        Header::Other("Supported".into(), "timer".into()),
    ]
}

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
    let value = header_value(request.headers.iter(), "session-expires", "x")?;
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

/// Headers of a 2xx that runs a timer of `secs`, refreshed by the side `refresher` names (`uac`: the
/// request's sender).
pub fn answer_headers(secs: u32, refresher: &str) -> Vec<Header> {
    vec![
        Header::Other("Session-Expires".into(), format!("{secs};refresher={refresher}")),
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
        let headers: Vec<String> = answer_headers(600, "uac").iter().map(|h| h.to_string()).collect();
        assert_eq!(headers, ["Session-Expires: 600;refresher=uac", "Require: timer"]);
        assert_eq!(too_small_headers(90)[0].to_string(), "Min-SE: 90");
    }

    fn ok(extra: &str) -> Response {
        response("200 OK", extra)
    }

    fn response(status: &str, extra: &str) -> Response {
        let text = format!(
            "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:gw@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Response::try_from(text.as_str()).unwrap()
    }

    #[test]
    fn the_answer_to_our_invite_decides_who_refreshes_and_how() {
        let ours = from_answer(&ok(
            "Session-Expires: 120;refresher=uac\r\nAllow: INVITE, ACK, BYE, UPDATE\r\n",
        ));
        let ours = ours.unwrap();
        assert_eq!(
            (ours.interval, ours.refresher, ours.by_update),
            (Duration::from_secs(120), Refresher::Us, true)
        );
        assert_eq!(ours.refresh_after(), Duration::from_secs(60));
        assert_eq!(ours.answer_refresher(), "uas");
        let theirs = from_answer(&ok("x: 90; refresher=UAS\r\n")).unwrap();
        assert_eq!((theirs.refresher, theirs.by_update), (Refresher::Them, false));
        assert_eq!(theirs.answer_refresher(), "uac");
        assert_eq!(from_answer(&ok("")), None);
        assert_eq!(from_answer(&ok("Session-Expires: 0\r\n")), None);
        let headers: Vec<String> = refresh_headers(&ours).iter().map(|h| h.to_string()).collect();
        assert_eq!(headers, ["Session-Expires: 120;refresher=uac", "Supported: timer"]);
        let offer: Vec<String> = offer_headers(1800, 90).iter().map(|h| h.to_string()).collect();
        assert_eq!(offer, ["Supported: timer", "Session-Expires: 1800", "Min-SE: 90"]);
        let too_small = |extra: &str| response("422 Session Interval Too Small", extra);
        assert_eq!(retry_interval(&too_small("Min-SE: 3600\r\n"), 1800), Some(3600));
        assert_eq!(retry_interval(&too_small("Min-SE: 1800\r\n"), 1800), None);
        assert_eq!(retry_interval(&too_small("Min-SE: 999999\r\n"), 1800), None);
        assert_eq!(retry_interval(&too_small(""), 1800), None);
        assert_eq!(retry_interval(&ok("Min-SE: 3600\r\n"), 1800), None);
    }
}
