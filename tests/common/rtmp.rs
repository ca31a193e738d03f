//! Shared by the RTMP tests: a gateway with its embedded SFU, ffmpeg publishers, and subscribers that decode.

use super::Gateway;
use super::media::Decoder;
use serde_json::{Value, json};
use sfu_gateway::sfu::client::{CallsClient, ClientConfig, RetryPolicy};
use sfu_gateway::sfu::peer::{Codec, Peer, PeerConfig, PeerStreams, RemoteTrackSpec, SubscribedTrack};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::{Instant, timeout};

pub const TOKEN: &str = "rtmp-test-token";
pub const APP: &str = "abcdefabcdefabcdefabcdefabcdef00";
pub const SECRET: &str = "rtmp-test-secret-rtmp-test-secret-rtmp-test-secret-rtmp-test-se";

pub struct Setup {
    pub gateway: Gateway,
    pub rtmp: String,
    pub sfu_api: String,
    pub http: reqwest::Client,
}

pub fn start() -> Setup {
    start_with(&[])
}

/// Like [`start`] with more environment (later entries win).
pub fn start_with(extra: &[(&str, &str)]) -> Setup {
    let mut env = vec![
        ("GATEWAY__API__TOKEN", TOKEN),
        ("GATEWAY__SFU__EMBEDDED__APP_ID", APP),
        ("GATEWAY__SFU__EMBEDDED__APP_SECRET", SECRET),
        ("GATEWAY__RTMP__HANDSHAKE_TIMEOUT", "1s"),
        ("GATEWAY__RTMP__RECONNECT_GRACE", "4s"),
    ];
    env.extend_from_slice(extra);
    let mut gateway = Gateway::start(&env);
    let rtmp = gateway.log_field("rtmp listening", "addr");
    // An external SFU (`GATEWAY__SFU__API_URL`, cloudflare mode) or the embedded one.
    let sfu_api = match extra.iter().find(|(k, _)| *k == "GATEWAY__SFU__API_URL") {
        Some((_, url)) => url.to_string(),
        None => format!("http://{}/v1", gateway.log_field("embedded sfu started", "http")),
    };
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
    /// `POST {path}` of the gateway's API with `body`: the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.gateway.api))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST {path}` that must create (201); the created object.
    pub async fn create(&self, path: &str, body: &Value) -> Value {
        let (status, created) = self.post(path, body).await;
        assert_eq!(status, 201, "POST {path}: {created}");
        created
    }

    pub async fn create_ingress(&self, name: &str) -> Value {
        self.create("/v1/ingresses", &json!({"name": name})).await
    }

    /// Creates the ingress `body`, publishes ffmpeg's test picture and tone to it for `seconds` (encoded as
    /// `video` and `audio`, see [`ffmpeg`]), and waits (bounded) until its `tracks` tracks are in the SFU.
    pub async fn publish_live(
        &self,
        body: &Value,
        seconds: u32,
        video: &[&str],
        audio: &[&str],
        tracks: usize,
    ) -> Live {
        let ingress = self.create("/v1/ingresses", body).await;
        let id = ingress["id"].as_str().unwrap().to_string();
        let url = format!("rtmp://{}/live/{}", self.rtmp, ingress["streamKey"].as_str().unwrap());
        let publisher = Killed(ffmpeg(&url, seconds, video, audio));
        let live = self
            .wait_ingress(&id, "live", |i| {
                i["sfu"]["tracks"].as_array().is_some_and(|t| t.len() == tracks)
            })
            .await;
        let session = live["sfu"]["sessionId"].as_str().unwrap().to_string();
        Live {
            id,
            url,
            session,
            publisher,
        }
    }

    pub async fn ingress(&self, id: &str) -> Value {
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
    pub async fn wait_ingress(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
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

    /// The gateway's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.gateway.api))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn client(&self) -> CallsClient {
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
pub fn ffmpeg(url: &str, seconds: u32, video: &[&str], audio: &[&str]) -> Child {
    let picture = (!video.is_empty()).then_some("testsrc2=size=640x360:rate=30");
    let sound = (!audio.is_empty()).then_some("sine=frequency=440:sample_rate=48000");
    let inputs: Vec<&str> = picture.into_iter().chain(sound).collect();
    let encoding: Vec<&str> = video.iter().chain(audio).copied().collect();
    ffmpeg_with(url, seconds, &inputs, &encoding)
}

/// ffmpeg publishing the lavfi sources `inputs`, encoded with `encoding`, for `seconds` to `url` in real time.
pub fn ffmpeg_with(url: &str, seconds: u32, inputs: &[&str], encoding: &[&str]) -> Child {
    let mut args: Vec<String> = vec!["-hide_banner", "-loglevel", "error", "-re"]
        .into_iter()
        .map(String::from)
        .collect();
    for input in inputs {
        args.extend(["-f", "lavfi", "-i", input].map(String::from));
    }
    args.extend(["-t".to_string(), seconds.to_string()]);
    args.extend(encoding.iter().map(|s| s.to_string()));
    args.extend(["-f", "flv", url].map(String::from));
    Command::new("ffmpeg")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg")
}

pub const BASELINE: &[&str] = &[
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
pub const AAC_48K: &[&str] = &["-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "128k"];

/// A live RTMP ingress and its publisher (see [`Setup::publish_live`]).
pub struct Live {
    /// The ingress id.
    pub id: String,
    /// Where to publish (with the stream key).
    pub url: String,
    /// The SFU session its tracks are in.
    pub session: String,
    /// The ffmpeg publishing.
    pub publisher: Killed,
}

pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn subscribe(setup: &Setup, session: &str, tracks: &[&str]) -> (Peer, PeerStreams, Vec<SubscribedTrack>) {
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
pub async fn receive(
    streams: &mut PeerStreams,
    subscribed: &[SubscribedTrack],
    duration: Duration,
) -> HashMap<String, (Decoder, u64, u64, u64, Option<Codec>)> {
    let mut out: HashMap<String, (Decoder, u64, u64, u64, Option<Codec>)> = HashMap::new();
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
            let decoder = match frame.codec {
                Some(Codec::Opus) => Decoder::opus(),
                Some(Codec::Vp8) => Decoder::video("vp8"),
                Some(Codec::Av1) => Decoder::video("av1"),
                Some(Codec::Vp9) => Decoder::video("vp9"),
                _ => Decoder::video("h264"),
            };
            (decoder, frame.rtp_time, frame.rtp_time, 0, frame.codec)
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
