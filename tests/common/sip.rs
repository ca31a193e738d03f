//! Shared by the SIP tests: a gateway with SIP rules and a webhook receiver, sipp scenarios written by the
//! test, a plain RTP endpoint standing in for a phone's media, and Opus publishers/subscribers in rooms.

use super::rtmp::{self, Setup};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use sfu_gateway::ingress::sip::g711;
use sfu_gateway::ingress::sip::rtp::RtpPacket;
use sfu_gateway::sfu::peer::{Codec, LocalTrackSpec, OutFrame, Peer, PeerConfig, PeerStreams, RemoteTrackSpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

pub const HOOK_SECRET: &str = "sip-webhook-secret";
pub const PCAP_ALAW: &str = "/usr/share/sip-tester/g711a.pcap";

/// A gateway with SIP, its embedded SFU and a webhook receiver.
pub struct Sip {
    pub setup: Setup,
    /// `127.0.0.1:port` of the SIP listener.
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub hooks: Arc<Mutex<Vec<Value>>>,
}

async fn hook(State(events): State<Arc<Mutex<Vec<Value>>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    event["kind"] = Value::String(headers["x-gateway-event"].to_str().unwrap_or_default().to_string());
    events.lock().unwrap().push(event);
    StatusCode::OK
}

/// Starts the gateway with `config` (TOML) and `env`.
pub async fn start(config: &str, env: &[(&str, &str)]) -> Sip {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let path_text = path.display().to_string();
    let mut all = vec![
        ("GATEWAY_CONFIG", path_text.as_str()),
        ("GATEWAY__WEBHOOKS__URLS", hook_url.as_str()),
        ("GATEWAY__WEBHOOKS__SECRET", HOOK_SECRET),
    ];
    all.extend_from_slice(env);
    let mut setup = rtmp::start_with(&all);
    let addr = setup.gateway.log_field("sip listening", "addr");
    Sip {
        setup,
        addr,
        dir,
        hooks,
    }
}

impl Sip {
    /// Waits (bounded) for a webhook event of `kind` matching `check`.
    pub async fn hook(&self, kind: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .hooks
                .lock()
                .unwrap()
                .iter()
                .find(|e| e["kind"] == kind && check(&e["data"]))
                .cloned();
            if let Some(event) = found {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} webhook; got {:?}",
                self.hooks.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .setup
            .http
            .get(format!("{}{path}", self.setup.gateway.api))
            .bearer_auth(rtmp::TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .setup
            .http
            .request(method, format!("{}{path}", self.setup.gateway.api))
            .bearer_auth(rtmp::TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A sipp call to `100` whose SDP sends the gateway's media to `media` (offering `formats` and
    /// telephone-event), held for `hold_ms` then hung up by sipp; waits until it is answered and returns sipp,
    /// the call and the gateway's RTP address.
    pub async fn call_with_media(
        &self,
        name: &str,
        media: &PhoneMedia,
        formats: &[(u8, &str)],
        hold_ms: u64,
    ) -> (Sipp, Value, std::net::SocketAddr) {
        self.call_number_with_media("100", name, media, formats, hold_ms).await
    }

    /// [`Self::call_with_media`] to `number`.
    pub async fn call_number_with_media(
        &self,
        number: &str,
        name: &str,
        media: &PhoneMedia,
        formats: &[(u8, &str)],
        hold_ms: u64,
    ) -> (Sipp, Value, std::net::SocketAddr) {
        let mut offered = formats.to_vec();
        offered.push(EVENTS);
        let offer = sdp(&offered, &media.port().to_string(), "sendrecv");
        let steps = scenario(&[
            invite(&offer, ""),
            final_response(200, ""),
            ack(false, ""),
            pause(hold_ms),
            in_dialog("BYE", "", "", 200),
        ]);
        let phone = self.sipp(name, &steps, number, &[]);
        let call = self
            .call_to(number, |c| c["state"] == "answered" && c["localRtp"].is_string())
            .await;
        let rtp = call["localRtp"].as_str().unwrap().parse().unwrap();
        (phone, call, rtp)
    }

    /// `DELETE /v1/calls/{id}` of a call (as listed); returns the status.
    pub async fn hang_up(&self, call: &Value) -> u16 {
        let id = call["id"].as_str().expect("call id");
        self.send(reqwest::Method::DELETE, &format!("/v1/calls/{id}"), None)
            .await
            .0
    }

    /// The only call whose `to` is `number`, waiting (bounded) until it satisfies `check`.
    pub async fn call_to(&self, number: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, calls) = self.get("/v1/calls").await;
            let found = calls
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["to"] == number && check(c))
                .cloned();
            if let Some(call) = found {
                return call;
            }
            assert!(
                Instant::now() < deadline,
                "no call to {number} as expected; calls: {calls}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs sipp with `scenario` against the gateway; see [`sipp`].
    pub fn sipp(&self, name: &str, scenario: &str, service: &str, extra: &[&str]) -> Sipp {
        sipp(self.dir.path(), &self.addr, name, scenario, service, extra)
    }
}

/// A free even UDP port on loopback (for sipp's media port).
pub fn free_even_port() -> u16 {
    // Outside the kernel's ephemeral range (32768+), so a port probed free here is not handed to another
    // socket before sipp binds it, and outside the gateway's RTP range (10000-20000). A port is handed out once
    // per process (sipp's SIP and media ports must differ), with the three after it free too (sipp's media
    // port is followed by its RTCP and video ports).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = 20_000 + 4 * (rand::random::<u16>() % 2_500);
        let mut given = GIVEN.lock().unwrap();
        if given.contains(&port) {
            continue;
        }
        let free = (port..port + 4).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            given.push(port);
            return port;
        }
    }
}

/// A running sipp.
pub struct Sipp {
    child: Option<std::process::Child>,
    pub messages: PathBuf,
}

impl Sipp {
    /// Waits (bounded) for sipp to end; returns its output.
    pub fn finish(mut self, limit: Duration) -> Output {
        let mut child = self.child.take().unwrap();
        let deadline = std::time::Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                let messages = std::fs::read_to_string(&self.messages).unwrap_or_default();
                panic!(
                    "sipp did not finish within {limit:?}: {}\nmessages:\n{messages}",
                    String::from_utf8_lossy(&output.stdout)
                );
            }
            // Polling the child: there is no blocking wait with a timeout.
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            if let Ok(output) = child.wait_with_output() {
                if std::thread::panicking() {
                    eprintln!(
                        "sipp stdout:\n{}\nsipp stderr:\n{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                    eprintln!(
                        "sipp messages:\n{}",
                        std::fs::read_to_string(&self.messages).unwrap_or_default()
                    );
                }
            }
        }
    }
}

/// Starts sipp on loopback running `scenario` (XML) once toward `target`, calling `service`.
pub fn sipp(dir: &Path, target: &str, name: &str, scenario: &str, service: &str, extra: &[&str]) -> Sipp {
    let port = free_even_port();
    let mut args = vec![target, "-s", service, "-l", "1"];
    args.extend_from_slice(extra);
    spawn_sipp(dir, name, scenario, port, &args)
}

/// Starts sipp as a UAS on `port` running `scenario` once.
pub fn sipp_uas(dir: &Path, name: &str, scenario: &str, port: u16) -> Sipp {
    spawn_sipp(dir, name, scenario, port, &[])
}

fn spawn_sipp(dir: &Path, name: &str, scenario: &str, port: u16, args: &[&str]) -> Sipp {
    let file = dir.join(format!("{name}.xml"));
    std::fs::write(&file, scenario).unwrap();
    let messages = dir.join(format!("{name}.messages"));
    let (port, media_port) = (port.to_string(), free_even_port().to_string());
    let common = [
        "-sf",
        &file.display().to_string(),
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-mi",
        "127.0.0.1",
        "-mp",
        &media_port,
        "-nostdin",
        "-timeout",
        "40s",
        "-trace_msg",
        "-message_file",
        &messages.display().to_string(),
    ]
    .map(String::from);
    let child = Command::new("sipp")
        .args(args)
        .args(common)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipp");
    Sipp {
        child: Some(child),
        messages,
    }
}

/// An SDP offer for sipp; `port` is the media port written (`[media_port]` for sipp's own).
pub fn sdp(formats: &[(u8, &str)], port: &str, direction: &str) -> String {
    let pts: Vec<String> = formats.iter().map(|(pt, _)| pt.to_string()).collect();
    let mut sdp = format!(
        "v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {port} RTP/AVP {}\n",
        pts.join(" ")
    );
    for (pt, map) in formats {
        sdp.push_str(&format!("a=rtpmap:{pt} {map}\n"));
    }
    sdp.push_str(&format!("a={direction}\n"));
    sdp
}

pub const PCMA: (u8, &str) = (8, "PCMA/8000");
pub const PCMU: (u8, &str) = (0, "PCMU/8000");
pub const EVENTS: (u8, &str) = (101, "telephone-event/8000");

const FROM: &str = "From: sipp <sip:+15550001@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]";
const HEADERS: &str =
    "Call-ID: [call_id]\nContact: sip:sipp@[local_ip]:[local_port]\nMax-Forwards: 70\nUser-Agent: sipp-test";

/// An INVITE (with `body` as SDP unless empty) answered with 2xx.
pub fn invite(body: &str, extra_headers: &str) -> String {
    invite_with(body, extra_headers, "")
}

/// An INVITE expected to fail: its transaction is named `invite` so the ACK of the failure reuses it.
pub fn invite_failing(body: &str, extra_headers: &str) -> String {
    invite_with(body, extra_headers, " start_txn=\"invite\"")
}

fn invite_with(body: &str, extra_headers: &str, txn: &str) -> String {
    let content = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\n".to_string()
    };
    format!(
        "<send retrans=\"500\"{txn}><![CDATA[\nINVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n\
         Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n{FROM}\nTo: <sip:[service]@[remote_ip]:[remote_port]>\n\
         {HEADERS}\nCSeq: [cseq] INVITE\n{extra_headers}{content}Content-Length: [len]\n\n{body}]]></send>\n"
    )
}

/// Provisional responses, then the final `code` of the INVITE (2xx: route set recorded).
pub fn final_response(code: u16, extra: &str) -> String {
    let (txn, route) = if code >= 300 {
        (" response_txn=\"invite\"", "")
    } else {
        ("", " rrs=\"true\"")
    };
    format!(
        "{}<recv response=\"{code}\" rtd=\"true\"{txn}{route} {extra}/>\n",
        provisional(code >= 300)
    )
}

/// The optional provisional responses of an INVITE (`named`: of the transaction named `invite`).
pub fn provisional(named: bool) -> String {
    let txn = if named { " response_txn=\"invite\"" } else { "" };
    ["100", "180", "183"]
        .map(|code| format!("<recv response=\"{code}\" optional=\"true\"{txn}/>\n"))
        .concat()
}

/// ACK of a 2xx (new transaction) or of a failure (`failure`: the INVITE's transaction).
pub fn ack(failure: bool, body: &str) -> String {
    let (txn, uri, branch) = if failure {
        (
            " ack_txn=\"invite\"",
            "sip:[service]@[remote_ip]:[remote_port]",
            "[branch]",
        )
    } else {
        ("", "[next_url]", "[branch]")
    };
    let content = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\n".to_string()
    };
    format!(
        "<send{txn}><![CDATA[\nACK {uri} SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}\n{FROM}\n\
         To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n{HEADERS}\nCSeq: [cseq] ACK\n{content}Content-Length: [len]\n\n{body}]]></send>\n"
    )
}

/// An in-dialog request (`BYE`, `INFO`, re-`INVITE`) and its expected answer.
pub fn in_dialog(method: &str, content_type: &str, body: &str, expect: u16) -> String {
    let content = if content_type.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {content_type}\n")
    };
    let recv = if method == "INVITE" {
        format!(
            "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"{expect}\"/>\n{}",
            ack(false, "")
        )
    } else {
        format!("<recv response=\"{expect}\" crlf=\"true\"/>\n")
    };
    format!(
        "<send retrans=\"500\"><![CDATA[\n{method} [next_url] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n{FROM}\n\
         To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n{HEADERS}\nCSeq: [cseq] {method}\n{content}Content-Length: [len]\n\n{body}]]></send>\n{recv}"
    )
}

/// Receives the gateway's BYE and answers 200.
pub fn expect_bye() -> String {
    expect_bye_with("")
}

/// Receives the gateway's BYE, which must match `regexp` (when not empty), and answers 200.
pub fn expect_bye_with(regexp: &str) -> String {
    let recv = if regexp.is_empty() {
        "<recv request=\"BYE\"/>".to_string()
    } else {
        format!(
            "<recv request=\"BYE\"><action><ereg regexp=\"{regexp}\" search_in=\"msg\" check_it=\"true\" assign_to=\"found\"/>\
             <log message=\"[$found]\"/></action></recv>"
        )
    };
    format!("{recv}\n{}", reply_ok())
}

/// A 200 OK to the request just received.
pub fn reply_ok() -> String {
    "<send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n]]></send>\n".to_string()
}

pub fn pause(ms: u64) -> String {
    format!("<pause milliseconds=\"{ms}\"/>\n")
}

pub fn play_pcap(path: &Path) -> String {
    format!(
        "<nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n",
        path.display()
    )
}

pub fn scenario(steps: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"test\">\n{}</scenario>\n",
        steps.concat()
    )
}

/// Writes a copy of sipp's A-law speech pcap with the payloads transcoded to µ-law (payload type 0).
pub fn ulaw_pcap(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(PCAP_ALAW).unwrap();
    let mut offset = 24; // global header
    while offset + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().unwrap()) as usize;
        let packet = offset + 16;
        let rtp = packet + 14 + 20 + 8; // Ethernet, IPv4, UDP
        if rtp + 12 <= packet + caplen && bytes[rtp + 1] & 0x7f == 8 {
            bytes[rtp + 1] &= 0x80; // payload type 0 (PCMU), marker kept
            for b in &mut bytes[rtp + 12..packet + caplen] {
                *b = g711::linear_to_ulaw(g711::alaw_to_linear(*b));
            }
            // The UDP checksum no longer matches: zero means "none" for IPv4.
            bytes[packet + 14 + 20 + 6] = 0;
            bytes[packet + 14 + 20 + 7] = 0;
        }
        offset = packet + caplen;
    }
    let path = dir.join("g711u.pcap");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A sine at `hz`, 20 ms at 48 kHz starting at sample `offset`.
pub fn tone_48k(hz: f64, offset: usize) -> Vec<i16> {
    (0..960)
        .map(|i| ((i + offset) as f64 * hz * 2.0 * std::f64::consts::PI / 48_000.0).sin() * 8_000.0)
        .map(|s| s as i16)
        .collect()
}

/// Share of the signal's power at `hz` (Goertzel), 0..1.
pub fn share_of(pcm: &[i16], rate: u32, hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in pcm {
        let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let total: f64 = pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() * pcm.len() as f64 / 2.0;
    power / total.max(1.0)
}

pub fn rms(pcm: &[i16]) -> f64 {
    (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
}

/// A participant of the room publishing a tone as Opus through the embedded SFU, registered in the room.
pub struct TonePublisher {
    pub peer: Arc<Peer>,
    pub session: String,
    task: tokio::task::JoinHandle<()>,
    _streams: PeerStreams,
}

impl Drop for TonePublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sip {
    pub async fn tone_publisher(&self, room: &str, id: &str, hz: f64) -> TonePublisher {
        let (peer, streams) = Peer::connect(self.setup.client(), PeerConfig::default()).await.unwrap();
        let track = format!("{id}-mic");
        peer.publish(vec![LocalTrackSpec::new(&track, Codec::Opus)])
            .await
            .unwrap();
        let peer = Arc::new(peer);
        let session = peer.session_id();
        let body = serde_json::json!({"sessionId": session, "tracks": [{"trackName": track, "kind": "audio"}]});
        let (status, reply) = self
            .send(
                reqwest::Method::PUT,
                &format!("/v1/rooms/{room}/participants/{id}"),
                Some(body),
            )
            .await;
        assert!(status == 200 || status == 201, "{status} {reply}");
        let sender = peer.clone();
        let task = tokio::spawn(async move {
            let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for n in 0u64.. {
                tick.tick().await;
                let data = encoder.encode_vec(&tone_48k(hz, n as usize * 960), 400).unwrap();
                sender.send_frame(OutFrame {
                    track: track.clone(),
                    rtp_time: n * 960,
                    data,
                    rid: None,
                    capture: None,
                });
            }
        });
        TonePublisher {
            peer,
            session,
            task,
            _streams: streams,
        }
    }

    /// The (SFU session, first track) of the first participant of `room` that `matches`, waiting up to `wait`.
    pub async fn room_track(&self, room: &str, wait: Duration, matches: impl Fn(&Value) -> bool) -> (String, String) {
        let deadline = Instant::now() + wait;
        loop {
            let (_, snapshot) = self.get(&format!("/v1/rooms/{room}")).await;
            let found = snapshot["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| matches(p))
                .map(|p| {
                    (
                        p["sessionId"].as_str().unwrap().to_string(),
                        p["tracks"][0]["trackName"].as_str().unwrap().to_string(),
                    )
                });
            if let Some(found) = found {
                return found;
            }
            assert!(Instant::now() < deadline, "no such participant in {room}: {snapshot}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Subscribes to `track` of `session` and decodes `duration` of its Opus to 48 kHz PCM.
    pub async fn listen(&self, session: &str, track: &str, duration: Duration) -> Vec<i16> {
        let (peer, mut streams) = Peer::connect(self.setup.client(), PeerConfig::default()).await.unwrap();
        let spec = RemoteTrackSpec {
            session_id: session.into(),
            track_name: track.into(),
            preferred_rid: None,
        };
        peer.subscribe(vec![spec]).await.unwrap();
        let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0i16; 5_760];
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(200), streams.media_in.recv()).await
            else {
                continue;
            };
            if let Ok(n) = decoder.decode(&frame.data, &mut buf, false) {
                pcm.extend_from_slice(&buf[..n]);
            }
        }
        pcm
    }
}

/// A plain RTP endpoint standing in for a phone's media.
pub struct PhoneMedia {
    pub socket: UdpSocket,
}

impl PhoneMedia {
    pub async fn bind() -> PhoneMedia {
        PhoneMedia {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Receives for `duration`: (decoded G.711 PCM at 8 kHz, RFC 4733 payloads with their timestamps).
    pub async fn receive(&self, ulaw: bool, duration: Duration) -> (Vec<i16>, Vec<(u32, Vec<u8>)>) {
        let mut pcm = Vec::new();
        let mut events = Vec::new();
        let mut buf = vec![0u8; 2048];
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let Ok(Ok(len)) = tokio::time::timeout(Duration::from_millis(100), self.socket.recv(&mut buf)).await else {
                continue;
            };
            let Ok(packet) = RtpPacket::parse(&buf[..len]) else {
                continue;
            };
            match packet.payload_type {
                101 => events.push((packet.timestamp, packet.payload.to_vec())),
                _ => {
                    let decode = if ulaw {
                        g711::ulaw_to_linear
                    } else {
                        g711::alaw_to_linear
                    };
                    pcm.extend(packet.payload.iter().map(|&b| decode(b)));
                }
            }
        }
        (pcm, events)
    }

    /// Listens (G.711 µ-law) until a one-second window is at least `enough` of `hz`, for `within` at most;
    /// returns the best window's share and the samples received. The path to a phone that just answered
    /// (room subscription, jitter buffer) takes a variable time to fill under load: what is checked is that
    /// the tone arrives, not when.
    #[allow(dead_code)]
    pub async fn hears(&self, hz: f64, enough: f64, within: Duration) -> (f64, usize) {
        let (mut pcm, mut best) = (Vec::new(), 0.0f64);
        let end = Instant::now() + within;
        while Instant::now() < end && best < enough {
            pcm.extend(self.receive(true, Duration::from_millis(250)).await.0);
            if pcm.len() >= 8_000 {
                best = best.max(share_of(&pcm[pcm.len() - 8_000..], 8_000, hz));
            }
        }
        (best, pcm.len())
    }

    /// Sends `seconds` of a tone as G.711 to `to`, paced at 20 ms.
    pub async fn send_tone(&self, to: std::net::SocketAddr, ulaw: bool, hz: f64, seconds: u32) {
        self.send_modulated(to, ulaw, hz, seconds, 0.0).await;
    }

    /// Like [`Self::send_tone`], with a 3 Hz swell in loudness as speech has: Opus's voice detector takes
    /// a steady tone for background noise after a second and stops sending it (DTX).
    pub async fn send_syllables(&self, to: std::net::SocketAddr, ulaw: bool, hz: f64, seconds: u32) {
        self.send_modulated(to, ulaw, hz, seconds, 0.5).await;
    }

    async fn send_modulated(&self, to: std::net::SocketAddr, ulaw: bool, hz: f64, seconds: u32, depth: f64) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut out = Vec::new();
        let tau = 2.0 * std::f64::consts::PI;
        for n in 0..seconds * 50 {
            tick.tick().await;
            let payload: Vec<u8> = (0..160)
                .map(|i| (n as usize * 160 + i) as f64 / 8_000.0)
                .map(|t| (t * hz * tau).sin() * 8_000.0 * (1.0 - depth * (0.5 + 0.5 * (t * 3.0 * tau).sin())))
                .map(|s| {
                    if ulaw {
                        g711::linear_to_ulaw(s as i16)
                    } else {
                        g711::linear_to_alaw(s as i16)
                    }
                })
                .collect();
            let pt = if ulaw { 0 } else { 8 };
            RtpPacket {
                payload_type: pt,
                marker: n == 0,
                seq: n as u16,
                timestamp: n * 160,
                ssrc: 7,
                payload: &payload,
            }
            .write(&mut out);
            let _ = self.socket.send_to(&out, to).await;
        }
    }
}

/// An in-dialog re-INVITE whose 200 must contain `expect_in_answer` (regular expression).
pub fn reinvite_expecting(body: &str, expect_in_answer: &str) -> String {
    let check = format!(
        "<action><ereg regexp=\"{expect_in_answer}\" search_in=\"body\" check_it=\"true\" assign_to=\"found\"/>\
         <log message=\"answer had [$found]\"/></action>"
    );
    in_dialog("INVITE", "application/sdp", body, 200).replacen(
        "<recv response=\"200\"/>",
        &format!("<recv response=\"200\">{check}</recv>"),
        1,
    )
}

/// CANCEL of the pending INVITE (after a provisional), its 200, the INVITE's 487 and the ACK.
pub fn cancel() -> String {
    format!(
        "<send><![CDATA[\nCANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n{FROM}\nTo: <sip:[service]@[remote_ip]:[remote_port]>\n\
         Call-ID: [call_id]\nCSeq: 1 CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n\
         <recv response=\"200\"/>\n<recv response=\"487\" response_txn=\"invite\"/>\n{}",
        ack(true, "")
    )
}

/// Sends one raw datagram to `target` and returns the first reply within `wait`, if any.
pub async fn raw_udp(target: &str, datagram: &[u8], wait: Duration) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(datagram, target).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        Ok(Ok(len)) => Some(String::from_utf8_lossy(&buf[..len]).to_string()),
        _ => None,
    }
}

/// An out-of-dialog request written by hand (`OPTIONS`, `INVITE`), from `local` (the sender's address).
pub fn raw_request(method: &str, target: &str, local: &str, call_id: &str, user_agent: &str, body: &str) -> String {
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:999@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\n\
         From: <sip:tester@{local}>;tag=t{call_id}\r\nTo: <sip:999@{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n\
         Contact: <sip:tester@{local}>\r\nUser-Agent: {user_agent}\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A response of a UAS to the last request (`to_tag`: add our tag to To).
pub fn uas_response(status: &str, extra_headers: &str, body: &str) -> String {
    let content = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\n".to_string()
    };
    // Final responses are retransmitted until the next message arrives (the ACK).
    let retrans = if status.starts_with('1') {
        ""
    } else {
        " retrans=\"500\""
    };
    format!(
        "<send{retrans}><![CDATA[\nSIP/2.0 {status}\n[last_Via:]\n[last_From:]\n[last_To:];tag=[pid]SIPpTag01[call_number]\n[last_Call-ID:]\n\
         [last_CSeq:]\nContact: <sip:[local_ip]:[local_port];transport=[transport]>\n{extra_headers}{content}Content-Length: [len]\n\n{body}]]></send>\n"
    )
}

impl PhoneMedia {
    /// Sends `seconds` of a tone at `hz` as G.722 (payload type 9) to `to`, paced at 20 ms.
    pub async fn send_g722_tone(&self, to: std::net::SocketAddr, hz: f64, seconds: u32) {
        use ezk_g722::libg722::{Bitrate, encoder::Encoder};
        let mut encoder = Encoder::new(Bitrate::Mode1_64000, false, false);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut out = Vec::new();
        for n in 0..seconds * 50 {
            tick.tick().await;
            let pcm: Vec<i16> = (0..320)
                .map(|i| ((n as usize * 320 + i) as f64 * hz * 2.0 * std::f64::consts::PI / 16_000.0).sin() * 8_000.0)
                .map(|s| s as i16)
                .collect();
            let payload = encoder.encode(&pcm);
            RtpPacket {
                payload_type: 9,
                marker: n == 0,
                seq: n as u16,
                timestamp: n * 160,
                ssrc: 9,
                payload: &payload,
            }
            .write(&mut out);
            let _ = self.socket.send_to(&out, to).await;
        }
    }

    /// Receives G.722 for `duration`, decoded to 16 kHz PCM.
    pub async fn receive_g722(&self, duration: Duration) -> Vec<i16> {
        use ezk_g722::libg722::{Bitrate, decoder::Decoder};
        let mut decoder = Decoder::new(Bitrate::Mode1_64000, false, false);
        let mut pcm = Vec::new();
        let mut buf = vec![0u8; 2048];
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let Ok(Ok(len)) = tokio::time::timeout(Duration::from_millis(100), self.socket.recv(&mut buf)).await else {
                continue;
            };
            if let Ok(packet) = RtpPacket::parse(&buf[..len]) {
                if packet.payload_type == 9 {
                    pcm.extend(decoder.decode(packet.payload));
                }
            }
        }
        pcm
    }
}

/// `seconds` of `hz` at `rate`, its loudness swelling at 3 Hz between half and full scale of 8,000.
pub fn swelling_tone(rate: u32, hz: f64, seconds: u32) -> Vec<i16> {
    let tau = 2.0 * std::f64::consts::PI;
    (0..rate * seconds)
        .map(|i| {
            let t = f64::from(i) / f64::from(rate);
            ((t * hz * tau).sin() * 8_000.0 * (0.75 + 0.25 * (t * 3.0 * tau).sin())) as i16
        })
        .collect()
}

/// Writes `samples` as a mono 16-bit PCM WAV file at `rate`.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut wav = Vec::with_capacity(44 + data.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    for field in [
        16u32.to_le_bytes(),
        [1, 0, 1, 0],
        rate.to_le_bytes(),
        (rate * 2).to_le_bytes(),
        [2, 0, 16, 0],
    ] {
        wav.extend_from_slice(&field);
    }
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).unwrap();
}
