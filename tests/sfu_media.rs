//! Gateway peers through the embedded SFU, in-process: peer A publishes Opus + VP8 (and H.264) encoded by
//! our GStreamer fragments from test sources, peer B subscribes, and what B receives is decoded by
//! GStreamer: video frames of the right size with a real picture, audio with energy. Closing on A ends B's
//! tracks.

mod common;

use common::media::{Decoder, audio_source, pump, video_source};
use sfu_gateway::config::EmbeddedSfuConfig;
use sfu_gateway::sfu::client::{CallsClient, ClientConfig, RetryPolicy};
use sfu_gateway::sfu::embedded::EmbeddedSfu;
use sfu_gateway::sfu::peer::{
    Codec, InFrame, LocalTrackSpec, Peer, PeerConfig, PeerEvent, PeerStreams, RemoteTrackSpec,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::{Instant, timeout};

async fn embedded() -> EmbeddedSfu {
    let config = EmbeddedSfuConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        udp: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    EmbeddedSfu::start(config).await.expect("embedded sfu")
}

fn client(sfu: &EmbeddedSfu) -> CallsClient {
    client_for(&sfu.api_url(), sfu.app_id(), sfu.app_secret().expose())
}

fn client_for(api_url: &str, app_id: &str, secret: &str) -> CallsClient {
    CallsClient::new(&ClientConfig {
        api_url: api_url.to_string(),
        app_id: app_id.to_string(),
        app_secret: secret.to_string().into(),
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy::default(),
    })
    .expect("client")
}

async fn wait_connected(streams: &mut PeerStreams) {
    let connected = timeout(Duration::from_secs(10), async {
        while let Some(event) = streams.events.recv().await {
            if event == PeerEvent::Connected {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(connected, Ok(true), "peer did not connect to the SFU");
}

struct Received {
    decoders: HashMap<String, (Decoder, u32)>,
    first_ticks: HashMap<String, u64>,
    last_frame: HashMap<String, Instant>,
}

impl Received {
    fn push(&mut self, frame: &InFrame) {
        self.last_frame.insert(frame.mid.clone(), Instant::now());
        let Some((decoder, clock)) = self.decoders.get(&frame.mid) else {
            return;
        };
        let first = *self.first_ticks.entry(frame.mid.clone()).or_insert(frame.rtp_time);
        let pts_ns = (frame.rtp_time.saturating_sub(first) as u128 * 1_000_000_000 / u128::from(*clock)) as u64;
        decoder.push(&frame.data, pts_ns);
    }
}

async fn publish_and_receive(video: Codec, client: impl Fn() -> CallsClient) {
    let (a, mut a_streams) = Peer::connect(client(), PeerConfig::default()).await.expect("peer a");
    let published = a
        .publish(vec![
            LocalTrackSpec::new("mic", Codec::Opus),
            LocalTrackSpec::new("cam", video),
        ])
        .await
        .expect("publish");
    assert_eq!(published.len(), 2);
    wait_connected(&mut a_streams).await;
    let fragment = if video == Codec::Vp8 {
        "video-encode-vp8"
    } else {
        "video-encode-h264"
    };
    let video_pump = pump(video_source(fragment), a.frame_sender(), "cam", 90_000);
    let audio_pump = pump(audio_source(), a.frame_sender(), "mic", 48_000);

    let (b, mut b_streams) = Peer::connect(client(), PeerConfig::default()).await.expect("peer b");
    let subscribed = b
        .subscribe(vec![
            RemoteTrackSpec {
                session_id: a.session_id(),
                track_name: "cam".into(),
                preferred_rid: None,
            },
            RemoteTrackSpec {
                session_id: a.session_id(),
                track_name: "mic".into(),
                preferred_rid: None,
            },
        ])
        .await
        .expect("subscribe (the client retries while the publisher starts)");
    assert_eq!(subscribed.len(), 2, "{subscribed:?}");
    let video_mid = subscribed.iter().find(|t| t.track_name == "cam").unwrap().mid.clone();
    let audio_mid = subscribed.iter().find(|t| t.track_name == "mic").unwrap().mid.clone();
    let codec_name = if video == Codec::Vp8 { "vp8" } else { "h264" };
    let mut received = Received {
        decoders: HashMap::from([
            (video_mid.clone(), (Decoder::video(codec_name), 90_000)),
            (audio_mid.clone(), (Decoder::opus(), 48_000)),
        ]),
        first_ticks: HashMap::new(),
        last_frame: HashMap::new(),
    };

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pictures = received.decoders[&video_mid].0.snapshot();
        let sound = received.decoders[&audio_mid].0.snapshot();
        if pictures.frames >= 30 && pictures.varied_picture && sound.samples >= 48_000 && sound.max_rms > 0.1 {
            assert_eq!(pictures.last_frame_bytes, 320 * 240 * 3 / 2, "decoded size is 320x240");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not enough media decoded: video {pictures:?} audio {sound:?}"
        );
        match timeout(Duration::from_millis(200), b_streams.media_in.recv()).await {
            Ok(Some(frame)) => {
                if frame.mid == video_mid {
                    assert_eq!(frame.codec, Some(video));
                }
                received.push(&frame);
            }
            Ok(None) => panic!("peer b stopped"),
            Err(_) => {}
        }
    }
    let stats = b.stats().await.expect("stats");
    assert!(stats.connected && stats.frames_in > 0, "{stats:?}");

    // Closing the publication on A ends B's tracks: B's session reports them inactive, and frames stop.
    let a_mids: Vec<String> = published.iter().map(|t| t.mid.clone()).collect();
    a.close(a_mids).await.expect("close on a");
    let b_session = client().get_session(&b.session_id()).await.expect("get b");
    let statuses: Vec<_> = b_session
        .tracks
        .iter()
        .map(|t| t.status.clone().unwrap_or_default())
        .collect();
    assert_eq!(statuses, vec!["inactive", "inactive"], "{b_session:?}");
    let closed_at = Instant::now();
    let quiet = timeout(Duration::from_millis(1500), async {
        loop {
            match b_streams.media_in.recv().await {
                Some(frame) if Instant::now() - closed_at > Duration::from_millis(300) => return frame.mid,
                Some(_) => continue, // frames already in flight when the close happened
                None => return String::new(),
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "frames still arrive after close: {quiet:?}");
    video_pump.abort();
    audio_pump.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_and_vp8_through_the_embedded_sfu_decode() {
    let sfu = embedded().await;
    publish_and_receive(Codec::Vp8, || client(&sfu)).await;
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_and_h264_through_the_embedded_sfu_decode() {
    let sfu = embedded().await;
    publish_and_receive(Codec::H264, || client(&sfu)).await;
    sfu.shutdown().await;
}

/// The same flow through the real binary's embedded SFU (`sfu-gateway run` with no Cloudflare credentials).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_through_the_real_binary() {
    const APP: &str = "0123456789abcdef0123456789abcdef";
    const SECRET: &str = "binary-test-secret-0123456789abcdef0123456789abcdef0123456789ab";
    let mut gateway = common::Gateway::start(&[
        ("GATEWAY__SFU__EMBEDDED__APP_ID", APP),
        ("GATEWAY__SFU__EMBEDDED__APP_SECRET", SECRET),
    ]);
    let line = gateway.wait_for_log("embedded sfu started", Duration::from_secs(10));
    let value: serde_json::Value = serde_json::from_str(&line).expect("json log");
    let api_url = format!("http://{}/v1", value["fields"]["http"].as_str().expect("http field"));
    assert!(
        !gateway.log.iter().any(|l| l.contains(SECRET)),
        "the app secret reached the log"
    );
    let ready = reqwest::get(format!("{}/readyz", gateway.api)).await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    publish_and_receive(Codec::Vp8, || client_for(&api_url, APP, SECRET)).await;
    let metrics = reqwest::get(format!("{}/metrics", gateway.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let forwarded = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sfu_embedded_frames_forwarded_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("forwarded frames metric");
    assert!(forwarded > 30, "{metrics}");
}
