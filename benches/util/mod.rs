//! Shared by the benchmarks: CPU and memory of processes and threads from /proc.
#![allow(dead_code)]

use std::time::Instant;

/// CPU seconds (user + system) and RSS bytes of a process or thread `stat` file.
pub fn cpu_and_rss(stat_path: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ((field(14) + field(15)) / 100.0, field(24) * 4096.0)
}

pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// CPU seconds.
    pub cpu: f64,
    /// Resident bytes.
    pub rss: f64,
}

pub fn sample(path: &str) -> Sample {
    let (cpu, rss) = cpu_and_rss(path);
    Sample {
        at: Instant::now(),
        cpu,
        rss,
    }
}

pub fn cores(a: &Sample, b: &Sample) -> f64 {
    (b.cpu - a.cpu) / b.at.duration_since(a.at).as_secs_f64()
}

/// CPU cores used and RSS summed over several processes (0 for those already gone).
pub fn sample_all(pids: &[u32]) -> Sample {
    let mut total = Sample {
        at: Instant::now(),
        cpu: 0.0,
        rss: 0.0,
    };
    for pid in pids {
        let (cpu, rss) = cpu_and_rss(&format!("/proc/{pid}/stat"));
        total.cpu += cpu;
        total.rss += rss;
    }
    total
}
