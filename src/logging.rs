//! Log output: readable lines by default, one JSON object per line with `--log-format json`.

use crate::config::LogFormat;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `RUST_LOG` wins over `level` when set. Logs go to stderr.
pub fn init(format: LogFormat, level: &str) {
    let wanted = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| level.to_string());
    let filter = EnvFilter::try_new(with_quiet_sip_stack(&wanted)).unwrap_or_else(|_| EnvFilter::new("info"));
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let output = match format {
        LogFormat::Text => output.boxed(),
        LogFormat::Json => output.json().with_current_span(true).with_span_list(false).boxed(),
    };
    let malformed = MalformedSip::default()
        .with_filter(Targets::new().with_target("rsipstack::transport::udp", tracing::Level::DEBUG));
    let result = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .with(malformed)
        .try_init();
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// Turns rsipstack's `debug` report of an unparsable UDP datagram into a counter and a (rate-limited)
/// warning naming the source, without the datagram's content or the parser's error text (either may hold
/// phone numbers).
#[derive(Default)]
struct MalformedSip {
    last_logged_second: AtomicU64,
}

/// rsipstack's messages for a datagram it could not parse, or that had no usable Via.
fn is_malformed_report(message: &str) -> bool {
    matches!(message, "error parsing SIP message" | "error updating SIP via")
}

#[derive(Default)]
struct ParseErrorFields {
    message: bool,
    src: String,
}

impl Visit for ParseErrorFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = is_malformed_report(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `raw_message` is never formatted.
        match field.name() {
            "message" => self.message = is_malformed_report(&format!("{value:?}")),
            "src" => self.src = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for MalformedSip {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = ParseErrorFields::default();
        event.record(&mut fields);
        if !fields.message {
            return;
        }
        metrics::counter!("sip_malformed_total").increment(1);
        let second = crate::supervisor::unix_now();
        if self.last_logged_second.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(src = %fields.src, "sip: malformed datagram dropped");
        }
    }
}

/// rsipstack logs every SIP message in full at `info` (phone numbers, digest fields): unless the filter
/// names it explicitly, it is held to warnings.
fn with_quiet_sip_stack(filter: &str) -> String {
    if filter.contains("rsipstack") {
        filter.to_string()
    } else {
        format!("{filter},rsipstack=warn")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sip_stack_is_quiet_unless_asked() {
        assert_eq!(with_quiet_sip_stack("info"), "info,rsipstack=warn");
        assert_eq!(with_quiet_sip_stack("debug,rsipstack=trace"), "debug,rsipstack=trace");
        assert!(EnvFilter::try_new(with_quiet_sip_stack("sfu_gateway=debug,info")).is_ok());
    }
}
