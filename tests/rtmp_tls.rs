//! RTMPS: with a certificate configured, ffmpeg publishes over TLS to the second listener and the ingress
//! goes live with media flowing.

mod common;

use common::Gateway;
use common::rtmp::{AAC_48K, BASELINE, Killed, TOKEN, ffmpeg};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmps() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
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
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let mut gateway = Gateway::start(&[
        ("GATEWAY__API__TOKEN", TOKEN),
        ("GATEWAY__RTMP__RTMPS_LISTEN", "127.0.0.1:0"),
        ("GATEWAY__RTMP__TLS_CERT", cert.to_str().unwrap()),
        ("GATEWAY__RTMP__TLS_KEY", key.to_str().unwrap()),
    ]);
    let rtmps = gateway.log_field("rtmps listening", "addr");
    let http = reqwest::Client::new();
    let ingress: Value = http
        .post(format!("{}/v1/ingresses", gateway.api))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "secure"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = ingress["id"].as_str().unwrap();
    let url = format!("rtmps://{rtmps}/live/{}", ingress["streamKey"].as_str().unwrap());
    let _publisher = Killed(ffmpeg(&url, 20, BASELINE, AAC_48K));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now: Value = http
            .get(format!("{}/v1/ingresses/{id}", gateway.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if now["state"] == "live" && now["stats"]["videoFramesOut"].as_u64().unwrap_or(0) > 60 {
            assert!(now["stats"]["audioFramesOut"].as_u64().unwrap_or(0) > 50, "{now}");
            break;
        }
        assert!(Instant::now() < deadline, "no media over RTMPS: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
