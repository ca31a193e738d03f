//! RTMPS: with a certificate configured, ffmpeg publishes over TLS to the second listener and the ingress
//! goes live with media flowing.

mod common;

use common::rtmp::{AAC_48K, BASELINE, Killed, ffmpeg, start_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmps() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::self_signed_cert(dir.path());
    let mut setup = start_with(&[
        ("GATEWAY__RTMP__RTMPS_LISTEN", "127.0.0.1:0"),
        ("GATEWAY__RTMP__TLS_CERT", cert.to_str().unwrap()),
        ("GATEWAY__RTMP__TLS_KEY", key.to_str().unwrap()),
    ]);
    let rtmps = setup.gateway.log_field("rtmps listening", "addr");
    let ingress = setup.create_ingress("secure").await;
    let id = ingress["id"].as_str().unwrap();
    let url = format!("rtmps://{rtmps}/live/{}", ingress["streamKey"].as_str().unwrap());
    let _publisher = Killed(ffmpeg(&url, 20, BASELINE, AAC_48K));
    let live = setup
        .wait_ingress(id, "receiving media over RTMPS", |i| {
            i["state"] == "live"
                && i["stats"]["videoFramesOut"].as_u64().unwrap_or(0) > 60
                && i["stats"]["audioFramesOut"].as_u64().unwrap_or(0) > 50
        })
        .await;
    assert_eq!(live["stats"]["videoPath"], "passthrough");
}
