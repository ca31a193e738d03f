//! Prometheus metrics: the `metrics` recorder's output plus session gauges, build info and process figures.

use super::AppState;
use crate::supervisor::{SessionKind, SessionState};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::fmt::Write;
use std::sync::OnceLock;

/// Installs the process-wide recorder once and returns its handle.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

pub(super) fn render(state: &AppState) -> String {
    let mut out = state.metrics.render();
    let counts = state.supervisor.counts();
    out.push_str("# HELP sfu_gateway_sessions Live sessions by kind and state.\n");
    out.push_str("# TYPE sfu_gateway_sessions gauge\n");
    for kind in SessionKind::ALL {
        for name in SessionState::NAMES
            .iter()
            .filter(|n| !matches!(**n, "ended" | "failed"))
        {
            let n = counts.get(&(kind, *name)).copied().unwrap_or(0);
            let _ = writeln!(out, "sfu_gateway_sessions{{kind=\"{kind}\",state=\"{name}\"}} {n}");
        }
    }
    out.push_str("# HELP sfu_gateway_build_info Build information.\n");
    out.push_str("# TYPE sfu_gateway_build_info gauge\n");
    let _ = writeln!(
        out,
        "sfu_gateway_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let (used, capacity) = state.supervisor.capacity();
    out.push_str("# HELP sfu_gateway_capacity_used_units Capacity units used by live sessions.\n");
    out.push_str("# TYPE sfu_gateway_capacity_used_units gauge\n");
    let _ = writeln!(out, "sfu_gateway_capacity_used_units {used}");
    out.push_str("# HELP sfu_gateway_capacity_units Configured capacity (supervisor.capacity).\n");
    out.push_str("# TYPE sfu_gateway_capacity_units gauge\n");
    let _ = writeln!(out, "sfu_gateway_capacity_units {capacity}");
    out.push_str("# HELP sfu_gateway_ready Whether the gateway accepts new sessions.\n");
    out.push_str("# TYPE sfu_gateway_ready gauge\n");
    let _ = writeln!(out, "sfu_gateway_ready {}", u8::from(state.supervisor.is_accepting()));
    if let Some(stats) = &state.embedded_sfu {
        embedded_sfu_metrics(&mut out, stats);
    }
    process_metrics(&mut out);
    out
}

fn embedded_sfu_metrics(out: &mut String, stats: &crate::sfu::embedded::CoreStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = [
        (
            "frames_forwarded_total",
            "Frames written to subscriber legs.",
            &stats.frames_forwarded,
        ),
        (
            "bytes_forwarded_total",
            "Payload bytes written to subscriber legs.",
            &stats.bytes_forwarded,
        ),
        (
            "frames_dropped_total",
            "Frames that could not be forwarded.",
            &stats.frames_dropped,
        ),
        ("datagrams_in_total", "UDP datagrams received.", &stats.datagrams_in),
        ("datagrams_out_total", "UDP datagrams sent.", &stats.datagrams_out),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP sfu_embedded_{name} {help}");
        let _ = writeln!(out, "# TYPE sfu_embedded_{name} counter");
        let _ = writeln!(out, "sfu_embedded_{name} {}", value.load(Relaxed));
    }
    out.push_str("# HELP sfu_embedded_sessions Live sessions in the embedded SFU.\n");
    out.push_str("# TYPE sfu_embedded_sessions gauge\n");
    let _ = writeln!(out, "sfu_embedded_sessions {}", stats.sessions.load(Relaxed));
}

/// Resident memory, CPU time, open file descriptors and start time, read from `/proc/self`.
fn process_metrics(out: &mut String) {
    let ticks_per_second = 100.0; // USER_HZ on every Linux target we ship.
    let page_size = 4096.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name, which may itself contain spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            out.push_str("# HELP process_cpu_seconds_total User and system CPU time.\n");
            out.push_str("# TYPE process_cpu_seconds_total counter\n");
            let _ = writeln!(out, "process_cpu_seconds_total {}", (utime + stime) / ticks_per_second);
        }
        if let Some(rss) = field(24) {
            out.push_str("# HELP process_resident_memory_bytes Resident memory.\n");
            out.push_str("# TYPE process_resident_memory_bytes gauge\n");
            let _ = writeln!(out, "process_resident_memory_bytes {}", rss * page_size);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push_str("# HELP process_open_fds Open file descriptors.\n");
        out.push_str("# TYPE process_open_fds gauge\n");
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
}
