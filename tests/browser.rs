//! Real browser against the embedded SFU: headless Chromium (fake camera and microphone) publishes through the Calls
//! API, pulls its own tracks back into a second PeerConnection and decodes them, exactly as a browser app would
//! (`tests/browser/calls.html`, harness in `tests/common/browser.rs`). Needs `/usr/bin/chromium`; fails without it.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::browser::{self, Mode};
use sfu_gateway::config::EmbeddedSfuConfig;
use sfu_gateway::sfu::embedded::EmbeddedSfu;

/// The page bounds each of its stages (sending, pulling, receiving) well below this.
const LOOP_TIMEOUT: Duration = Duration::from_secs(45);

/// A Calls API client for `sfu`.
fn client_of(sfu: &EmbeddedSfu) -> sfu_gateway::sfu::client::CallsClient {
    use sfu_gateway::sfu::client::{CallsClient, ClientConfig, RetryPolicy};
    CallsClient::new(&ClientConfig {
        api_url: sfu.api_url(),
        app_id: sfu.app_id().to_string(),
        app_secret: sfu.app_secret().clone(),
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy::default(),
    })
    .expect("client")
}

/// The embedded SFU on loopback ephemeral ports, with a generated app id and secret.
async fn start_sfu() -> EmbeddedSfu {
    let config = EmbeddedSfuConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        udp: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        public_ips: Vec::new(),
        ..EmbeddedSfuConfig::default()
    };
    EmbeddedSfu::start(config).await.expect("start the embedded SFU")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_publishes_and_pulls_through_embedded_sfu() {
    let sfu = start_sfu().await;
    let mut page = browser::open_page(Mode::Loop, &sfu.api_url(), sfu.app_id(), sfu.app_secret().expose()).await;
    let report = page.next_loop_report(LOOP_TIMEOUT).await;
    eprintln!("browser loop report: {report:?}");

    assert!(
        report.ok,
        "the page failed at stage {:?}: {:?}",
        report.stage, report.error
    );
    assert!(
        !report.session_a.is_empty() && report.session_a != report.session_b,
        "sessions: {report:?}"
    );
    assert!(report.frames_decoded > 0, "no video frame decoded: {report:?}");
    assert!(
        report.frame_width > 0 && report.frame_height > 0,
        "no video frame size: {report:?}"
    );
    assert!(
        report.audio_packets_received > 0,
        "no audio packet received: {report:?}"
    );
    assert!(
        report.total_samples_received > 0,
        "no audio sample received: {report:?}"
    );
    if report.timed_out {
        eprintln!(
            "media flowed but slowly: {} frames decoded, {} audio samples",
            report.frames_decoded, report.total_samples_received
        );
    }

    drop(page);
    sfu.shutdown().await;
}

#[test]
fn page_url_percent_encodes_every_value() {
    assert_eq!(browser::percent_encode("aZ09-._~"), "aZ09-._~");
    assert_eq!(
        browser::percent_encode("http://127.0.0.1:8788/v1"),
        "http%3A%2F%2F127.0.0.1%3A8788%2Fv1"
    );
    assert_eq!(browser::percent_encode("a b+c/d=é&"), "a%20b%2Bc%2Fd%3D%C3%A9%26");
    assert_eq!(
        browser::page_url("http://localhost:1", &[("mode", "loop"), ("secret", "s&e=t")]),
        "http://localhost:1/calls.html?mode=loop&secret=s%26e%3Dt"
    );
}

/// The reverse direction: Chromium publishes its fake camera (VP8) and microphone, and the gateway's own
/// `Peer` subscribes and decodes what arrives with GStreamer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_peer_decodes_a_browser_publication() {
    use common::media::Decoder;
    use sfu_gateway::sfu::peer::{Codec, Peer, PeerConfig, RemoteTrackSpec};

    let sfu = start_sfu().await;
    let (page, published) =
        browser::start_browser_publisher(&sfu.api_url(), sfu.app_id(), sfu.app_secret().expose()).await;
    let client = client_of(&sfu);
    let (peer, mut streams) = Peer::connect(client, PeerConfig::default()).await.expect("peer");
    let subscribed = peer
        .subscribe(
            ["cam", "mic"]
                .iter()
                .map(|name| RemoteTrackSpec {
                    session_id: published.session_id.clone(),
                    track_name: name.to_string(),
                    preferred_rid: None,
                })
                .collect(),
        )
        .await
        .expect("subscribe to the browser's tracks");
    let video_mid = subscribed
        .iter()
        .find(|t| t.track_name == "cam")
        .expect("cam")
        .mid
        .clone();
    let audio_mid = subscribed
        .iter()
        .find(|t| t.track_name == "mic")
        .expect("mic")
        .mid
        .clone();
    let video = Decoder::video("vp8");
    let audio = Decoder::opus();
    let mut first: std::collections::HashMap<String, u64> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (pictures, sound) = (video.snapshot(), audio.snapshot());
        if pictures.frames >= 30 && pictures.varied_picture && sound.samples >= 48_000 {
            assert_eq!(pictures.last_frame_bytes, 640 * 480 * 3 / 2, "decoded size is 640x480");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not enough decoded: video {pictures:?} audio {sound:?}\n{}",
            page.diagnostics()
        );
        let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(200), streams.media_in.recv()).await else {
            continue;
        };
        let (decoder, clock) = if frame.mid == video_mid {
            assert_eq!(frame.codec, Some(Codec::Vp8), "the browser was asked to prefer VP8");
            (&video, 90_000u128)
        } else if frame.mid == audio_mid {
            (&audio, 48_000u128)
        } else {
            continue;
        };
        let base = *first.entry(frame.mid.clone()).or_insert(frame.rtp_time);
        decoder.push(
            &frame.data,
            (u128::from(frame.rtp_time - base) * 1_000_000_000 / clock) as u64,
        );
    }
    drop(page);
    sfu.shutdown().await;
}

/// Simulcast: Chromium sends three layers (1280x720, 640x360, 320x180); the gateway Peer pulls the quarter
/// layer, then switches to the full one with `tracks/update`, and the decoded frame size follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layer_is_chosen_and_switched() {
    use common::media::Decoder;
    use sfu_gateway::sfu::peer::{Peer, PeerConfig, RemoteTrackSpec};

    let sfu = start_sfu().await;
    let (page, published) =
        browser::start_publishing_page(Mode::Simulcast, &sfu.api_url(), sfu.app_id(), sfu.app_secret().expose()).await;
    let client = client_of(&sfu);
    let (peer, mut streams) = Peer::connect(client, PeerConfig::default()).await.expect("peer");
    let subscribed = peer
        .subscribe(vec![RemoteTrackSpec {
            session_id: published.session_id.clone(),
            track_name: "cam".into(),
            preferred_rid: Some("c".into()),
        }])
        .await
        .expect("subscribe to the quarter layer");
    let mid = subscribed[0].mid.clone();
    let decoder = Decoder::video("vp8");
    let mut base = None;
    let mut wait_for_size = async |bytes: usize, what: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
        let mut frames_at_size = 0;
        loop {
            let pictures = decoder.snapshot();
            frames_at_size = if pictures.last_frame_bytes == bytes {
                frames_at_size + 1
            } else {
                0
            };
            if frames_at_size >= 10 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: decoded {pictures:?}, want frames of {bytes} bytes\n{}",
                page.diagnostics()
            );
            if let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(200), streams.media_in.recv()).await {
                if frame.mid == mid {
                    let first = *base.get_or_insert(frame.rtp_time);
                    decoder.push(
                        &frame.data,
                        (u128::from(frame.rtp_time.saturating_sub(first)) * 1_000_000_000 / 90_000) as u64,
                    );
                }
            }
        }
    };
    wait_for_size(320 * 180 * 3 / 2, "quarter layer c").await;
    let missing = peer.prefer_layer(&mid, "z").await.expect_err("there is no layer z");
    assert!(missing.to_string().contains("update_track_error"), "{missing}");
    peer.prefer_layer(&mid, "a").await.expect("switch to layer a");
    wait_for_size(1280 * 720 * 3 / 2, "full layer a").await;
    drop(page);
    sfu.shutdown().await;
}
