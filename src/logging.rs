//! Log output: readable lines by default, one JSON object per line with `--log-format json`.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` wins over `level` when set. Logs go to stderr.
pub fn init(format: LogFormat, level: &str) {
    let wanted = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| level.to_string());
    let filter = EnvFilter::try_new(with_quiet_sip_stack(&wanted)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
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
