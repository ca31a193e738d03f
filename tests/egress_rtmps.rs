//! Egress over RTMPS, and a destination that refuses the stream key. The destination is the gateway's own
//! RTMPS ingest (certificate from a test CA the egress trusts through `egress.tls_ca_file`): what the egress
//! publishes goes back into the SFU, where the test subscribes and decodes it.

mod common;

use common::egress::{create_egress, get_egress, live_source};
use common::rtmp::{BASELINE, receive, start_with, subscribe};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_publishes_over_rtmps_and_a_refused_key_is_retried_and_logged_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::ca_signed_cert(dir.path());
    let mut setup = start_with(&[
        ("GATEWAY__RTMP__RTMPS_LISTEN", "127.0.0.1:0"),
        ("GATEWAY__RTMP__TLS_CERT", cert.to_str().unwrap()),
        ("GATEWAY__RTMP__TLS_KEY", key.to_str().unwrap()),
        ("GATEWAY__EGRESS__TLS_CA_FILE", ca.to_str().unwrap()),
    ]);
    let rtmps = setup.gateway.log_field("rtmps listening", "addr");
    let (session, _publisher) = live_source(&setup, "origin", BASELINE, 2).await;
    let relay = setup.create_ingress("relay").await;
    let relay_id = relay["id"].as_str().unwrap();
    let good = format!("rtmps://{rtmps}/live/{}", relay["streamKey"].as_str().unwrap());
    let wrong_key = "not-a-key-4f1c9";
    let refused = format!("rtmp://{}/live/{wrong_key}", setup.rtmp);
    let id = create_egress(
        &setup,
        json!({
            "tracks": [{"sessionId": session, "trackName": "origin-video"}, {"sessionId": session, "trackName": "origin-audio"}],
            "outputs": [{"url": good}, {"url": refused}],
            "video": {"width": 320, "height": 240, "fps": 25, "bitrateKbps": 800},
        }),
    )
    .await;

    // The relay ingest goes live with what the egress sends over TLS.
    let live = setup
        .wait_ingress(relay_id, "the egress publishing over RTMPS", |i| {
            i["state"] == "live"
                && i["stats"]["videoFramesOut"].as_u64().unwrap_or(0) > 50
                && i["stats"]["audioFramesOut"].as_u64().unwrap_or(0) > 50
        })
        .await;
    let relay_session = live["sfu"]["sessionId"].as_str().unwrap().to_string();
    let (_peer, mut streams, subscribed) = subscribe(&setup, &relay_session, &["relay-video", "relay-audio"]).await;
    let received = receive(&mut streams, &subscribed, Duration::from_secs(5)).await;
    let video = received[&subscribed[0].mid].0.settled().await;
    // Decoding starts at the first keyframe (every 2.4 s at 25 fps): at least 2 s of pictures.
    assert!(video.frames >= 50, "{} frames in 5 s", video.frames);
    assert_eq!(video.last_frame_bytes, 320 * 240 * 3 / 2, "the egress's size");
    assert!(video.varied_picture, "the source's picture, not a slate");
    let audio = received[&subscribed[1].mid].0.settled().await;
    assert!(audio.max_rms > 0.02, "the source's sound: rms {}", audio.max_rms);

    // The refused output is retried, the good one is untouched, and the log names the server's refusal
    // without the key.
    let egress = get_egress(&setup, &id).await;
    assert_eq!(egress["outputs"][0]["state"], "active", "{egress}");
    assert!(egress["outputs"][0]["bytes"].as_u64().unwrap() > 100_000, "{egress}");
    assert_eq!(egress["outputs"][1]["state"], "reconnecting", "{egress}");
    assert!(egress["outputs"][1]["reconnects"].as_u64().unwrap() >= 1, "{egress}");
    assert_eq!(egress["state"], "degraded", "{egress}");
    setup.gateway.wait_for_log("egress output down", Duration::from_secs(5));
    let log = setup.gateway.log.join("\n");
    assert!(
        log.lines()
            .any(|l| l.contains("egress output down") && l.contains("refused: NetStream.Publish.BadName")),
        "the refusal is not logged with the server's code:\n{log}"
    );
    assert!(!log.contains(wrong_key), "a stream key reached the log");
}
