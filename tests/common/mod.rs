//! Helpers shared by the process tests: start the real binary, find its address, send signals.
#![allow(dead_code)]

pub mod browser;
pub mod egress;
pub mod ertmp;

pub mod media;
pub mod nginx;
pub mod rtmp;
pub mod rtmp_client;
pub mod rtmp_sink;
pub mod sip;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A self-signed certificate and key for `localhost` (PEM files in `dir`), made by openssl.
pub fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl could not make a certificate");
    (cert, key)
}

/// A test CA and a certificate it signed for `localhost` and 127.0.0.1 (subjectAltName, not a CA: what
/// rustls verifies), made by openssl; returns the PEM paths (CA, certificate, key) in `dir`.
#[allow(dead_code)]
pub fn ca_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=sfu-gateway-test-CA -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out leaf.csr",
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile leaf.ext -out cert.pem",
    ] {
        let status = Command::new("openssl")
            .args(args.split(' '))
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args} failed");
    }
    let (ca, cert, key) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    (ca, cert, key)
}

/// The gateway binary built by cargo for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_sfu-gateway")
}

/// A running `sfu-gateway run`, killed on drop.
pub struct Gateway {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every log line seen so far.
    pub log: Vec<String>,
    /// Base URL of the control API.
    pub api: String,
}

impl Gateway {
    /// Starts the gateway with JSON logs, the API on a free loopback port, and `env` on top.
    pub fn start(env: &[(&str, &str)]) -> Gateway {
        let mut command = Command::new(binary());
        command
            .args(["run", "--log-format", "json"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GATEWAY__API__LISTEN", "127.0.0.1:0")
            .env("GATEWAY__SFU__EMBEDDED__LISTEN", "127.0.0.1:0")
            .env("GATEWAY__SFU__EMBEDDED__UDP", "127.0.0.1:0")
            .env("GATEWAY__RTMP__LISTEN", "127.0.0.1:0")
            .env("GATEWAY__SIP__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start sfu-gateway");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut gateway = Gateway {
            child,
            lines,
            log: Vec::new(),
            api: String::new(),
        };
        let line = gateway.wait_for_log("api listening", Duration::from_secs(20));
        let value: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let addr = value["fields"]["addr"].as_str().expect("addr field").to_string();
        gateway.api = format!("http://{addr}");
        gateway
    }

    /// Waits (bounded) for a log line containing `needle` and returns it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line containing {needle:?} within {timeout:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The value of field `field` in the first JSON log line containing `needle` (bounded wait).
    pub fn log_field(&mut self, needle: &str, field: &str) -> String {
        let line = self.wait_for_log(needle, Duration::from_secs(20));
        let value: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        value["fields"][field]
            .as_str()
            .unwrap_or_else(|| panic!("no field {field} in {line}"))
            .to_string()
    }

    /// Sends a signal (`TERM`, `INT`) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                while let Ok(line) = self.lines.try_recv() {
                    self.log.push(line);
                }
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            // Polling the child's exit status: there is no portable blocking wait with a timeout.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An embedded SFU on `listen` (HTTP) and `udp` with app `app`/`secret`, in the test's process (so a test can
/// stop it and start it again on the same addresses).
pub async fn embedded_sfu(
    listen: std::net::SocketAddr,
    udp: std::net::SocketAddr,
    app: &str,
    secret: &str,
) -> sfu_gateway::sfu::embedded::EmbeddedSfu {
    sfu_gateway::sfu::embedded::EmbeddedSfu::start(sfu_gateway::config::EmbeddedSfuConfig {
        listen,
        udp,
        app_id: app.into(),
        app_secret: secret.to_string().into(),
        ..Default::default()
    })
    .await
    .expect("embedded sfu")
}
