//! Wrappers that keep secrets and personal data out of logs.
//!
//! [`Secret`] holds an app secret, API token, stream key, SIP password or phone number. Its `Debug` and
//! `Display` print a fixed marker, so the value cannot reach a log line or an error message by accident;
//! code that needs the value calls [`Secret::expose`], which is easy to find in review.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The text printed in place of a redacted value.
pub const REDACTED: &str = "[redacted]";

/// A value that must never be logged: `Debug`, `Display` and `Serialize` print [`REDACTED`].
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Gives access to the real value. Call it only where the value is used, never to log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl Secret<String> {
    /// Whether the wrapped string is empty (an unset secret).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `other` in constant time (for tokens and stream keys).
    pub fn ct_eq(&self, other: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.len() && bool::from(self.0.as_bytes().ct_eq(other.as_bytes()))
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

/// A phone number or SIP URI user part: logged as its last two digits only (`***42`), enough to tell calls
/// apart in a log without revealing the number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Wraps a number.
    pub fn new(number: impl Into<String>) -> Self {
        Self(number.into())
    }

    /// The real number, for signalling and for the API (never for logs).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits: Vec<char> = self.0.chars().filter(char::is_ascii_digit).collect();
        if digits.len() < 6 {
            return f.write_str(REDACTED);
        }
        let tail: String = digits[digits.len() - 2..].iter().collect();
        write!(f, "***{tail}")
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const KEY: &str = "live_sk_9f8e7d6c5b4a";
    const PHONE: &str = "+14155550123";

    #[test]
    fn debug_display_and_serialize_hide_the_value() {
        let key = Secret::new(KEY.to_string());
        let phone = PhoneNumber::new(PHONE);
        for text in [
            format!("{key}"),
            format!("{key:?}"),
            format!("{:?}", Some(&key)),
            serde_json::to_string(&key).unwrap(),
            format!("{phone}"),
            format!("{phone:?}"),
        ] {
            assert!(!text.contains(KEY), "stream key leaked: {text}");
            assert!(!text.contains("5550123"), "phone number leaked: {text}");
        }
        assert_eq!(format!("{phone}"), "***23");
        assert_eq!(key.expose(), KEY);
    }

    #[test]
    fn deserialize_keeps_the_real_value() {
        let key: Secret = serde_json::from_str(&format!("\"{KEY}\"")).unwrap();
        assert!(key.ct_eq(KEY));
        assert!(!key.ct_eq("live_sk_9f8e7d6c5b4b"));
        assert!(!key.ct_eq("short"));
    }

    #[test]
    fn log_lines_and_spans_do_not_contain_secrets() {
        let capture = Capture::default();
        let writer = capture.clone();
        for json in [false, true] {
            let make = {
                let writer = writer.clone();
                move || writer.clone()
            };
            let builder = tracing_subscriber::fmt().with_writer(make).with_ansi(false);
            let dispatch: tracing::Dispatch = if json {
                builder.json().finish().into()
            } else {
                builder.finish().into()
            };
            tracing::dispatcher::with_default(&dispatch, || {
                let key = Secret::new(KEY.to_string());
                let password = Secret::new("hunter2-sip-pass".to_string());
                let phone = PhoneNumber::new(PHONE);
                let span = tracing::info_span!("session", stream_key = %key, caller = %phone);
                let _entered = span.enter();
                tracing::info!(?key, %password, ?phone, "publisher connected");
                tracing::warn!("rejected {key} from {phone}");
            });
        }
        let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("publisher connected"), "nothing was logged: {out}");
        assert!(out.contains(REDACTED));
        assert!(!out.contains(KEY), "stream key leaked: {out}");
        assert!(!out.contains("hunter2"), "password leaked: {out}");
        assert!(!out.contains("5550123"), "phone number leaked: {out}");
    }
}
