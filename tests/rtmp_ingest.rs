//! RTMP ingest through the real binary: ffmpeg publishes to the gateway, the gateway publishes into its
//! embedded SFU, and a subscriber `Peer` decodes what arrives. Bad input (wrong key, second publisher,
//! garbage, half handshakes) is refused without disturbing the live stream.

mod common;

use common::Gateway;
use common::media::Decoder;
use serde_json::{Value, json};
use sfu_gateway::sfu::client::{CallsClient, ClientConfig, RetryPolicy};
use sfu_gateway::sfu::peer::{Codec, Peer, PeerConfig, PeerStreams, RemoteTrackSpec, SubscribedTrack};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

const TOKEN: &str = "rtmp-test-token";
const APP: &str = "abcdefabcdefabcdefabcdefabcdef00";
const SECRET: &str = "rtmp-test-secret-rtmp-test-secret-rtmp-test-secret-rtmp-test-se";

struct Setup {
    gateway: Gateway,
    rtmp: String,
    sfu_api: String,
    http: reqwest::Client,
}

fn start() -> Setup {
    let mut gateway = Gateway::start(&[
        ("GATEWAY__API__TOKEN", TOKEN),
        ("GATEWAY__SFU__EMBEDDED__APP_ID", APP),
        ("GATEWAY__SFU__EMBEDDED__APP_SECRET", SECRET),
        ("GATEWAY__RTMP__HANDSHAKE_TIMEOUT", "1s"),
        ("GATEWAY__RTMP__RECONNECT_GRACE", "4s"),
    ]);
    let rtmp = gateway.log_field("rtmp listening", "addr");
    let sfu_api = format!("http://{}/v1", gateway.log_field("embedded sfu started", "http"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    Setup {
        gateway,
        rtmp,
        sfu_api,
        http,
    }
}

impl Setup {
    async fn create_ingress(&self, name: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/v1/ingresses", self.gateway.api))
            .bearer_auth(TOKEN)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        response.json().await.unwrap()
    }

    async fn ingress(&self, id: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/v1/ingresses/{id}", self.gateway.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    /// Waits (bounded) until the ingress satisfies `check`.
    async fn wait_ingress(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ingress = self.ingress(id).await;
            if check(&ingress) {
                return ingress;
            }
            assert!(Instant::now() < deadline, "ingress never {what}: {ingress}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn client(&self) -> CallsClient {
        CallsClient::new(&ClientConfig {
            api_url: self.sfu_api.clone(),
            app_id: APP.into(),
            app_secret: SECRET.to_string().into(),
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        })
        .unwrap()
    }
}

/// ffmpeg publishing a test pattern and a tone for `seconds` to `url`.
fn ffmpeg(url: &str, seconds: u32, video: &[&str], audio: &[&str]) -> Child {
    let mut args: Vec<String> = vec!["-hide_banner", "-loglevel", "error", "-re"]
        .into_iter()
        .map(String::from)
        .collect();
    if !video.is_empty() {
        args.extend(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"].map(String::from));
    }
    if !audio.is_empty() {
        args.extend(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"].map(String::from));
    }
    args.extend(["-t".to_string(), seconds.to_string()]);
    args.extend(video.iter().map(|s| s.to_string()));
    args.extend(audio.iter().map(|s| s.to_string()));
    args.extend(["-f", "flv", url].map(String::from));
    Command::new("ffmpeg")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg")
}

const BASELINE: &[&str] = &[
    "-c:v",
    "libx264",
    "-profile:v",
    "baseline",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-g",
    "30",
    "-pix_fmt",
    "yuv420p",
];
const AAC_48K: &[&str] = &["-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "128k"];

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn subscribe(setup: &Setup, session: &str, tracks: &[&str]) -> (Peer, PeerStreams, Vec<SubscribedTrack>) {
    let (peer, streams) = Peer::connect(setup.client(), PeerConfig::default())
        .await
        .expect("peer");
    let specs = tracks
        .iter()
        .map(|t| RemoteTrackSpec {
            session_id: session.to_string(),
            track_name: t.to_string(),
            preferred_rid: None,
        })
        .collect();
    let subscribed = peer.subscribe(specs).await.expect("subscribe");
    (peer, streams, subscribed)
}

/// Decodes what arrives for `duration`; returns per-mid (decoder, first and last rtp time, frames).
async fn receive(
    streams: &mut PeerStreams,
    subscribed: &[SubscribedTrack],
    duration: Duration,
) -> HashMap<String, (Decoder, u64, u64, u64)> {
    let mut out: HashMap<String, (Decoder, u64, u64, u64)> = HashMap::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let Ok(Some(frame)) = timeout(Duration::from_millis(200), streams.media_in.recv()).await else {
            continue;
        };
        if !subscribed.iter().any(|t| t.mid == frame.mid) {
            continue;
        }
        // Video decodes from its first keyframe: frames before it are not counted.
        if frame.codec != Some(Codec::Opus) && !frame.keyframe && !out.contains_key(&frame.mid) {
            continue;
        }
        let entry = out.entry(frame.mid.clone()).or_insert_with(|| {
            let decoder = if frame.codec == Some(Codec::Opus) {
                Decoder::opus()
            } else {
                Decoder::video("h264")
            };
            (decoder, frame.rtp_time, frame.rtp_time, 0)
        });
        let clock = if frame.codec == Some(Codec::Opus) {
            48_000u128
        } else {
            90_000
        };
        entry.2 = frame.rtp_time;
        entry.3 += 1;
        let pts = (u128::from(frame.rtp_time.saturating_sub(entry.1)) * 1_000_000_000 / clock) as u64;
        entry.0.push(&frame.data, pts);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_baseline_and_aac_pass_through_and_decode() {
    let setup = start();
    let ingress = setup.create_ingress("show").await;
    let id = ingress["id"].as_str().unwrap().to_string();
    let key = ingress["streamKey"].as_str().unwrap().to_string();
    assert_eq!(ingress["state"], "idle");
    assert!(
        ingress["publishUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/live/{key}"))
    );
    let url = format!("rtmp://{}/live/{key}", setup.rtmp);
    let _publisher = Killed(ffmpeg(&url, 30, BASELINE, AAC_48K));
    let live = setup
        .wait_ingress(&id, "live with two tracks", |i| {
            i["state"] == "live" && i["sfu"]["tracks"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let session = live["sfu"]["sessionId"].as_str().unwrap().to_string();
    let (_peer, mut streams, subscribed) = subscribe(&setup, &session, &["show-video", "show-audio"]).await;
    let received = receive(&mut streams, &subscribed, Duration::from_secs(6)).await;
    let video_mid = &subscribed.iter().find(|t| t.track_name == "show-video").unwrap().mid;
    let audio_mid = &subscribed.iter().find(|t| t.track_name == "show-audio").unwrap().mid;
    let (video, first, last, frames) = &received[video_mid];
    let expected = (last - first) / 3000 + 1;
    let decoded = video.settled().await;
    assert!(
        decoded.frames * 10 >= expected * 9,
        "decoded {} of {expected} frames sent in that span ({frames} received)",
        decoded.frames
    );
    assert_eq!(decoded.last_frame_bytes, 640 * 360 * 3 / 2);
    assert!(decoded.varied_picture);
    let sound = received[audio_mid].0.snapshot();
    assert!(sound.samples > 48_000 * 4 && sound.max_rms > 0.05, "{sound:?}");
    let now = setup.ingress(&id).await;
    assert_eq!(now["stats"]["videoPath"], "passthrough", "{now}");
    assert!(now["stats"]["videoFramesOut"].as_u64().unwrap() > 100, "{now}");

    // A second publisher on the live key is refused; the first continues.
    let mut second = ffmpeg(&url, 5, BASELINE, AAC_48K);
    let status = tokio::task::spawn_blocking(move || second.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the second publisher was not refused");
    let before = setup.ingress(&id).await["stats"]["videoFramesOut"].as_u64().unwrap();
    let after = setup
        .wait_ingress(&id, "still receiving from the first publisher", |i| {
            i["stats"]["videoFramesOut"].as_u64().unwrap() > before + 15
        })
        .await;
    assert_eq!(after["state"], "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_garbage_and_half_handshakes_are_refused() {
    let mut setup = start();
    let ingress = setup.create_ingress("guarded").await;
    let bad_key = "not-the-key-0123456789";
    let url = format!("rtmp://{}/live/{bad_key}", setup.rtmp);
    let mut publisher = ffmpeg(&url, 3, BASELINE, AAC_48K);
    let status = tokio::task::spawn_blocking(move || publisher.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "a wrong key was accepted");
    setup.gateway.wait_for_log("publish refused", Duration::from_secs(5));
    assert!(
        !setup.gateway.log.iter().any(|l| l.contains(bad_key)),
        "the stream key reached the log"
    );

    // Random bytes: the connection is closed at once.
    let mut garbage = tokio::net::TcpStream::connect(&setup.rtmp).await.unwrap();
    let noise: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 253) as u8).collect();
    garbage.write_all(&noise).await.unwrap();
    let mut buf = [0u8; 4096];
    let closed = timeout(Duration::from_secs(3), async {
        loop {
            match garbage.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "garbage did not close the connection");

    // Half a handshake: closed after the handshake timeout (1 s here).
    let mut half = tokio::net::TcpStream::connect(&setup.rtmp).await.unwrap();
    half.write_all(&[3u8; 600]).await.unwrap();
    let started = Instant::now();
    let closed = timeout(Duration::from_secs(5), async {
        loop {
            match half.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a half handshake was kept open");
    assert!(started.elapsed() >= Duration::from_millis(800));

    // Still healthy, and the real key still works.
    let health = reqwest::get(format!("{}/healthz", setup.gateway.api)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let key = ingress["streamKey"].as_str().unwrap();
    let _publisher = Killed(ffmpeg(
        &format!("rtmp://{}/live/{key}", setup.rtmp),
        10,
        BASELINE,
        AAC_48K,
    ));
    let id = ingress["id"].as_str().unwrap();
    setup.wait_ingress(id, "live", |i| i["state"] == "live").await;
}
