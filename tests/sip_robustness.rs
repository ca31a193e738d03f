//! Bad input at the SIP port while a call is up: truncated messages, a wrong Content-Length, binary junk,
//! huge headers (UDP and TCP), scanner user agents, and a flood of 1,000 INVITEs from one source. The
//! gateway answers or drops them, counts them, and the call already up keeps its audio.

mod common;

use common::sip::{self, EVENTS, PCMA, ack, final_response, in_dialog, invite, pause, play_pcap, scenario};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const RULES: &str = r#"
[[sip.rules]]
to = "100"
room = "r1"
"#;

/// A call playing speech for ~7 s; returns the subscriber's PCM of the caller over `listen`.
async fn speech_while(
    sip: &sip::Sip,
    name: &str,
    listen: Duration,
    disturb: impl Future<Output = ()>,
) -> (Vec<i16>, std::process::Output) {
    let steps = scenario(&[
        invite(&sip::sdp(&[PCMA, EVENTS], "[media_port]", "sendrecv"), ""),
        final_response(200, ""),
        ack(false, ""),
        play_pcap(Path::new(sip::PCAP_ALAW)),
        pause(6_500),
        in_dialog("BYE", "", "", 200),
    ]);
    let phone = sip.sipp(name, &steps, "100", &[]);
    let call = sip.call_to("100", |c| c["state"] == "answered").await;
    let participant = format!("sip-{}", call["id"].as_str().unwrap());
    let (_, room) = sip.get("/v1/rooms/r1").await;
    let caller = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == participant.as_str())
        .unwrap()
        .clone();
    let session = caller["sessionId"].as_str().unwrap().to_string();
    let track = caller["tracks"][0]["trackName"].as_str().unwrap().to_string();
    let (pcm, ()) = tokio::join!(sip.listen(&session, &track, listen), disturb);
    let output = phone.finish(Duration::from_secs(30));
    (pcm, output)
}

fn assert_speech(pcm: &[i16]) {
    let windows = pcm.len() / 4_800;
    assert!(windows >= 40, "only {} ms of the caller arrived", pcm.len() / 48);
    let voiced = pcm.chunks(4_800).filter(|w| sip::rms(w) > 300.0).count();
    assert!(voiced * 10 >= windows * 6, "{voiced} of {windows} windows voiced");
}

async fn metric(sip: &sip::Sip, name: &str, label: &str) -> f64 {
    let text = sip.setup.metrics_text().await;
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_answered_or_dropped_and_the_call_keeps_its_audio() {
    let sip = sip::start(RULES, &[]).await;
    let target = sip.addr.clone();
    let junk = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let valid = sip::raw_request("INVITE", &target, "127.0.0.1:9", "junk1", "tester", "v=0\r\n");
        let truncated = &valid.as_bytes()[..valid.len() / 2];
        let wrong_length = valid.replace("Content-Length: 5", "Content-Length: 900");
        let binary: Vec<u8> = (0..1_400u32).map(|i| (i * 7919 % 251) as u8).collect();
        let huge_header = valid.replace("User-Agent: tester", &format!("User-Agent: {}", "x".repeat(7_000)));
        let no_headers = b"INVITE sip:100@127.0.0.1 SIP/2.0\r\n\r\n".to_vec();
        for datagram in [
            truncated.to_vec(),
            wrong_length.into_bytes(),
            binary,
            huge_header.into_bytes(),
            no_headers,
            vec![0u8; 0],
        ] {
            let reply = sip::raw_udp(&target, &datagram, Duration::from_millis(300)).await;
            if let Some(reply) = reply {
                assert!(reply.starts_with("SIP/2.0 4"), "junk got {reply}");
            }
        }
        // Over TCP: a stream of junk and a header beyond any limit; the connection is closed, not the server.
        let mut stream = tokio::net::TcpStream::connect(&target).await.unwrap();
        let _ = stream.write_all(&vec![b'A'; 100_000]).await;
        let _ = stream.write_all(b"\r\n\r\n").await;
        drop(stream);
        // Still serving: OPTIONS is answered.
        let options = sip::raw_request("OPTIONS", &target, "127.0.0.1:9", "alive1", "tester", "");
        let reply = sip::raw_udp(&target, options.as_bytes(), Duration::from_secs(3))
            .await
            .expect("OPTIONS after junk");
        assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
    };
    let (pcm, output) = speech_while(&sip, "junk", Duration::from_secs(5), junk).await;
    assert!(
        output.status.success(),
        "sipp failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_speech(&pcm);
    let (status, _) = sip.get("/healthz").await;
    assert_eq!(status, 200);
    // Each unparsable datagram is counted, and logged (at most once a second) without its content.
    assert!(metric(&sip, "sip_malformed_total", "").await >= 2.0);
    let mut gateway = sip.setup.gateway;
    let line = gateway.wait_for_log("sip: malformed datagram dropped", Duration::from_secs(5));
    assert!(line.contains("127.0.0.1:"), "the source is named: {line}");
    assert!(
        gateway.log.iter().all(|l| !l.contains("junk1")),
        "no datagram content in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_flood_is_rate_limited_scanners_are_dropped_and_the_call_keeps_its_audio() {
    let sip = sip::start(RULES, &[]).await;
    let target = sip.addr.clone();
    let flood = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap().to_string();
        let sdp = sip::sdp(&[PCMA], "40000", "sendrecv").replace('\n', "\r\n");
        for i in 0..1_000 {
            let request = sip::raw_request("INVITE", &target, &local, &format!("flood{i}"), "tester", &sdp);
            socket.send_to(request.as_bytes(), &target).await.unwrap();
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(100)).await; // 1,000 in about two seconds
            }
        }
        let scanner = sip::raw_request("OPTIONS", &target, "127.0.0.1:9", "scan1", "friendly-scanner", "");
        assert_eq!(
            sip::raw_udp(&target, scanner.as_bytes(), Duration::from_millis(500)).await,
            None,
            "scanners get no answer"
        );
    };
    let (pcm, output) = speech_while(&sip, "flood", Duration::from_secs(5), flood).await;
    assert!(
        output.status.success(),
        "sipp failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_speech(&pcm);
    let limited = metric(&sip, "sip_requests_dropped_total", "reason=\"rate\"").await;
    assert!(limited >= 900.0, "rate-limited INVITEs: {limited}");
    assert_eq!(
        metric(&sip, "sip_requests_dropped_total", "reason=\"scanner\"").await,
        1.0
    );
    // The few INVITEs admitted went nowhere (no rule for 999) and made no call.
    let (_, calls) = sip.get("/v1/calls").await;
    assert_eq!(calls.as_array().unwrap().len(), 1, "only the real call: {calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_sfu_goes_away_is_hung_up_with_a_reason() {
    const APP: &str = "0000000000000000000000000000fa11";
    const SECRET: &str = "sip-fault-secret-sip-fault-secret-sip-fault-secret-sip-fault-se";
    // The SFU runs in its own process, so the test can take it away.
    let mut sfu = common::Gateway::start(&[
        ("GATEWAY__SIP__ENABLED", "false"),
        ("GATEWAY__SFU__EMBEDDED__APP_ID", APP),
        ("GATEWAY__SFU__EMBEDDED__APP_SECRET", SECRET),
    ]);
    let sfu_api = format!("http://{}/v1", sfu.log_field("embedded sfu started", "http"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, RULES).unwrap();
    let config = config.display().to_string();
    let mut gateway = common::Gateway::start(&[
        ("GATEWAY_CONFIG", config.as_str()),
        ("GATEWAY__SFU__MODE", "cloudflare"),
        ("GATEWAY__SFU__API_URL", sfu_api.as_str()),
        ("GATEWAY__SFU__APP_ID", APP),
        ("GATEWAY__SFU__APP_SECRET", SECRET),
    ]);
    let target = gateway.log_field("sip listening", "addr");
    let steps = scenario(&[
        invite(&sip::sdp(&[PCMA, EVENTS], "[media_port]", "sendrecv"), ""),
        final_response(200, ""),
        ack(false, ""),
        play_pcap(Path::new(sip::PCAP_ALAW)),
        sip::expect_bye_with("Reason: SIP;cause=503"),
    ]);
    let phone = sip::sipp(dir.path(), &target, "fault", &steps, "100", &[]);
    let http = reqwest::Client::new();
    let calls = format!("{}/v1/calls", gateway.api);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list: serde_json::Value = http.get(&calls).send().await.unwrap().json().await.unwrap();
        if list[0]["state"] == "answered" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call was not answered: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sfu.signal("KILL");
    let output = phone.finish(Duration::from_secs(45));
    assert!(
        output.status.success(),
        "no BYE with a 503 reason: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let list: serde_json::Value = http.get(&calls).send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["state"], "ended");
    assert_eq!(list[0]["sipStatus"], 503);
    assert!(list[0]["reason"].as_str().unwrap().contains("SFU"), "{}", list[0]);
    gateway.wait_for_log("sip: hanging up", Duration::from_secs(5));
}
