//! Shared by the benchmarks: CPU and memory of processes and threads from /proc.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
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

#[derive(Clone)]
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

/// A child process, killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sfu-gateway run` (JSON logs, every listener on a free loopback port) with `env` on top; returns it
/// and, for each `(message, field)` in `wanted`, that field of the first log line with that message.
pub fn gateway(binary: &str, env: &[(&str, &str)], wanted: &[(&str, &str)]) -> (Proc, Vec<String>) {
    let mut command = Command::new(binary);
    command
        .args(["run", "--log-format", "json"])
        .env("GATEWAY__API__LISTEN", "127.0.0.1:0")
        .env("GATEWAY__SFU__EMBEDDED__LISTEN", "127.0.0.1:0")
        .env("GATEWAY__SFU__EMBEDDED__UDP", "127.0.0.1:0")
        .env("GATEWAY__RTMP__LISTEN", "127.0.0.1:0")
        .env("GATEWAY__SIP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("start sfu-gateway");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut found = vec![String::new(); wanted.len()];
    while found.iter().any(String::is_empty) {
        let line = lines.next().expect("gateway log").expect("log line");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        for (i, (message, field)) in wanted.iter().enumerate() {
            if value["fields"]["message"] == *message {
                found[i] = value["fields"][*field].as_str().unwrap_or_default().to_string();
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), found)
}

/// Numeric command-line flags (`--name N`), starting from `defaults`; other arguments (cargo's `--bench`)
/// are ignored.
pub fn flags(defaults: &[(&str, u64)]) -> HashMap<String, u64> {
    let mut values: HashMap<String, u64> = defaults.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if let Some(name) = arg.strip_prefix("--").filter(|n| values.contains_key(*n)) {
            let value = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("a number after the flag");
            values.insert(name.to_string(), value);
        }
    }
    values
}

/// `ffmpeg` with `args` (quiet, no stdin), killed on drop.
pub fn ffmpeg(args: &[&str]) -> Proc {
    Proc(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg"),
    )
}

/// Encodes the benchmark input once (kept at `path` between runs): 20 s of a test pattern at `size` and
/// 30 fps, H.264 baseline at `bitrate` (no B-frames, keyframe every 60 frames) + 440 Hz AAC, in FLV.
pub fn prepare_input(path: &str, size: &str, bitrate: &str) {
    if std::path::Path::new(path).exists() {
        return;
    }
    eprintln!("encoding the {size} {bitrate}bit/s input once: {path}");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate=30")])
        .args(["-f", "lavfi", "-i", "sine=frequency=440"])
        .args([
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-preset",
            "veryfast",
        ])
        .args([
            "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate, "-g", "60", "-bf", "0",
        ])
        .args([
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-f", "flv", path,
        ])
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "cannot encode the input");
}

/// The Prometheus text at `url`.
pub async fn metrics_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// A quantile of a summary in the gateway's `/metrics` at `api`, in milliseconds (NaN when absent).
pub async fn metrics_quantile_ms(api: &str, name: &str, quantile: &str) -> f64 {
    metrics_text(&format!("{api}/metrics"))
        .await
        .lines()
        .find(|l| l.starts_with(name) && l.contains(&format!("quantile=\"{quantile}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |s| s * 1000.0)
}

/// A free TCP port on loopback (for an `ffmpeg -listen 1` RTMP server).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("local addr")
        .port()
}
