//! Egress helpers: live RTMP sources, the egress API, and what a recording shows and sounds like.

use super::nginx::NginxRtmp;
use super::rtmp::{AAC_48K, Killed, Setup, TOKEN};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// Publishes `name` with ffmpeg (14 s of `video` + AAC) and waits until its `tracks` are in the SFU; returns
/// its SFU session and the publisher.
pub async fn live_source(setup: &Setup, name: &str, video: &[&str], tracks: usize) -> (String, Killed) {
    let body = serde_json::json!({"name": name});
    let live = setup.publish_live(&body, 14, video, AAC_48K, tracks).await;
    (live.session, live.publisher)
}

/// `POST /v1/egresses` (201); returns the new id.
pub async fn create_egress(setup: &Setup, body: Value) -> String {
    let created = setup.create("/v1/egresses", &body).await;
    created["id"].as_str().unwrap().to_string()
}

/// `GET /v1/egresses/{id}`.
pub async fn get_egress(setup: &Setup, id: &str) -> Value {
    let response = setup
        .http
        .get(format!("{}/v1/egresses/{id}", setup.gateway.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

/// Polls `GET /v1/egresses/{id}` (bounded by `within`) until `check` holds; returns that state. The egress
/// twin of `Setup::wait_ingress`.
pub async fn wait_egress(
    setup: &Setup,
    id: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let egress = get_egress(setup, id).await;
        if check(&egress) {
            return egress;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {egress}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `DELETE /v1/egresses/{id}` (204).
pub async fn delete_egress(setup: &Setup, id: &str) {
    let deleted = setup
        .http
        .delete(format!("{}/v1/egresses/{id}", setup.gateway.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
}

/// Deletes egress `id`, then waits (bounded) for nginx to close its recording of `stream`.
pub async fn stop_and_wait(setup: &Setup, id: &str, nginx: &NginxRtmp, stream: &str) -> std::path::PathBuf {
    delete_egress(setup, id).await;
    nginx.wait_recording(stream, Duration::from_secs(15))
}

/// Grey levels (min, max) of one decoded frame at `seconds`, and the RMS of one second of audio there.
pub fn picture_and_sound(path: &std::path::Path, seconds: &str) -> ((u8, u8), f64) {
    let frame = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", seconds, "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap()
        .stdout;
    let levels = frame.iter().fold((255u8, 0u8), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let pcm = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", seconds, "-t", "1", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "1", "-"])
        .output()
        .unwrap()
        .stdout;
    let samples: Vec<f64> = pcm
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
        .collect();
    let rms = (samples.iter().map(|s| s * s).sum::<f64>() / samples.len().max(1) as f64).sqrt() / 32768.0;
    (levels, rms)
}

/// A gateway `Peer` on the test's SFU publishing `tracks`; returns it with its streams (keep them).
pub async fn publisher(
    setup: &Setup,
    tracks: &[(&str, sfu_gateway::sfu::peer::Codec)],
) -> (sfu_gateway::sfu::peer::Peer, sfu_gateway::sfu::peer::PeerStreams) {
    use sfu_gateway::sfu::peer::{LocalTrackSpec, Peer, PeerConfig};
    let (peer, streams) = Peer::connect(setup.client(), PeerConfig::default())
        .await
        .expect("peer");
    let specs = tracks
        .iter()
        .map(|(name, codec)| LocalTrackSpec::new(*name, *codec))
        .collect();
    peer.publish(specs).await.expect("publish");
    (peer, streams)
}

/// An egress of the tracks `{name}-video` and `{name}-audio` of `session` to the stream `name` of `sink`, at
/// 640x360 and `fps`; its id.
pub async fn egress_to_sink(
    setup: &Setup,
    sink: &super::rtmp_sink::RtmpSink,
    session: &str,
    name: &str,
    fps: u32,
) -> String {
    let body = serde_json::json!({
        "tracks": [{"sessionId": session, "trackName": format!("{name}-video")}, {"sessionId": session, "trackName": format!("{name}-audio")}],
        "outputs": [{"url": sink.url(name)}],
        "video": {"width": 640, "height": 360, "fps": fps, "bitrateKbps": 1500},
    });
    create_egress(setup, body).await
}
