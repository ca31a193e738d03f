//! SDES-SRTP on the phone leg with a real SRTP phone: baresip (libsrtp through its `srtp` module) dials in
//! with `mediaenc=srtp-mand`, speaks a tone from a WAV file and records what it hears. Its voice must reach
//! the room (decoded from the caller's Opus track) and the room's publisher must reach its recording —
//! which only happens when both directions are encrypted and authenticated the way libsrtp expects.
//! With `sip.srtp = "required"`, a plain RTP offer is refused. A phone that re-keys mid-call (re-INVITE with
//! a new `a=crypto` key) is followed: the test sends SRTP itself, with the old key then the new one.

mod common;

use common::sip::{self, ack, final_response, in_dialog, invite, invite_failing, pause, scenario};
use sfu_gateway::ingress::sip::g711;
use sfu_gateway::ingress::sip::pin::Prompt;
use sfu_gateway::ingress::sip::rtp::RtpPacket;
use sfu_gateway::ingress::sip::srtp::{MasterKey, Srtp, Suite};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RULES: &str = r#"
[[sip.rules]]
to = "*"
room = "r1"
"#;

/// Starts baresip in `dir` with mandatory SRTP for `seconds`: dialling `number` at `gateway`, or, with
/// `dial = None`, answering calls on its own port (returned).
fn baresip(dir: &Path, dial: Option<(&str, &str)>, seconds: u32) -> (std::process::Child, u16) {
    let port = sip::free_even_port();
    let d = dir.display();
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{port}\nrtp_ports 31000-31999\n\
         audio_player aufile,{d}/played.wav\naudio_source aufile,{d}/tone.wav\naudio_alert aufile,{d}/tone.wav\n\
         module_path /usr/lib/baresip/modules\nmodule stdio.so\nmodule g711.so\nmodule aufile.so\n\
         module sndfile.so\nsnd_path {d}\nmodule srtp.so\nmodule_app account.so\nmodule_app menu.so\n"
    );
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(
        dir.join("accounts"),
        "<sip:phone@127.0.0.1>;regint=0;mediaenc=srtp-mand;answermode=auto;audio_codecs=PCMU\n",
    )
    .unwrap();
    let mut command = Command::new("baresip");
    command.args(["-f", &d.to_string()]);
    if let Some((number, gateway)) = dial {
        command.args(["-e", &format!("/dial sip:{number}@{gateway}")]);
    }
    let child = command
        .args(["-t", &seconds.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip");
    (child, port)
}

/// The room track of call `call` (its participant `sip-{id}` in `room`), once it is there.
async fn caller_track(sip: &sip::Sip, room: &str, call: &serde_json::Value) -> (String, String) {
    let id = format!("sip-{}", call["id"].as_str().unwrap());
    sip.room_track(room, Duration::from_secs(10), |p| p["id"] == id.as_str())
        .await
}

/// baresip's recording of what it heard, once it has quit, at 8 kHz.
async fn heard_by(phone: &mut std::process::Child, dir: &Path) -> Vec<i16> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while phone.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "baresip did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recording = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip's recording of what it heard");
    // (The gateway's own WAV reader, the one its PIN prompts go through.)
    Prompt::from_wav(&std::fs::read(&recording).unwrap())
        .expect("a 16-bit PCM recording")
        .at_rate(8_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srtp_phone_is_heard_in_the_room_and_hears_the_room() {
    let sip = sip::start(RULES, &[]).await;
    let _alice = sip.tone_publisher("r1", "alice", 440.0).await;
    let phone_dir = tempfile::tempdir().unwrap();
    // A 1 kHz tone swelling in loudness as speech does (a steady tone is taken for background noise by
    // Opus's voice detector and stops being sent).
    let tone = sip::swelling_tone(8_000, 1_000.0, 20);
    sip::write_wav(&phone_dir.path().join("tone.wav"), 8_000, &tone);
    let (mut phone, _) = baresip(phone_dir.path(), Some(("100", &sip.addr)), 14);
    let call = sip
        .call_to("100", |c| c["state"] == "answered" && c["localRtp"].is_string())
        .await;
    assert_eq!(call["srtp"], true, "the call shows its leg is encrypted: {call}");
    assert_eq!(call["codec"], "PCMU");
    // The phone's voice, decrypted and authenticated by the gateway, reaches the room as Opus.
    let (session, track) = caller_track(&sip, "r1", &call).await;
    let pcm = sip.listen(&session, &track, Duration::from_secs(3)).await;
    assert!(
        pcm.len() > 48_000 * 2,
        "only {} samples of the caller arrived",
        pcm.len()
    );
    let (tone, other) = (
        sip::share_of(&pcm, 48_000, 1_000.0),
        sip::share_of(&pcm, 48_000, 2_500.0),
    );
    assert!(
        tone > 0.3 && other < 0.01,
        "the caller's 1 kHz: {tone:.3} (2.5 kHz {other:.3})"
    );
    // SRTCP both ways with libsrtp: the phone's reports decrypt, and they answer our sender reports (their
    // LSR is ours, which gives a round trip), so the phone decrypted ours.
    let id = call["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let (_, now) = sip.get(&format!("/v1/calls/{id}")).await;
        if now["stats"]["rttMs"].is_number() && now["stats"]["lossToPhonePct"].is_number() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no SRTCP report from the phone on our stream: {now}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The room, encrypted by the gateway, decrypted by libsrtp: the phone's recording holds alice's 440 Hz.
    let heard = heard_by(&mut phone, phone_dir.path()).await;
    assert!(heard.len() > 8_000 * 4, "only {} samples heard", heard.len());
    let tail = &heard[8_000 * 2..];
    let (alice, own) = (sip::share_of(tail, 8_000, 440.0), sip::share_of(tail, 8_000, 1_000.0));
    assert!(alice > 0.5, "the phone hears the room's 440 Hz: {alice:.3}");
    assert!(own < 0.01, "the phone does not hear itself: {own:.3}");
    let metrics = sip.setup.metrics_text().await;
    assert!(
        !metrics.contains("sip_srtp_refused_total"),
        "no SRTP packet of the phone was refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_srtp_refuses_plain_rtp_offers() {
    let config = format!("[sip]\nsrtp = \"required\"\n{RULES}");
    let sip = sip::start(&config, &[]).await;
    let plain = sip::sdp(&[(0, "PCMU/8000")], "[media_port]", "sendrecv");
    let refused = scenario(&[invite_failing(&plain, ""), final_response(488, ""), ack(true, "")]);
    let output = sip.sipp("plain", &refused, "100", &[]).finish(Duration::from_secs(20));
    assert!(
        output.status.success(),
        "sipp failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let (_, calls) = sip.get("/v1/calls").await;
    assert_eq!(calls, serde_json::json!([]), "a refused offer makes no call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_srtp_required_an_invite_without_sdp_gets_an_srtp_offer() {
    let config = format!("[sip]\nsrtp = \"required\"\n{RULES}");
    let sip = sip::start(&config, &[]).await;
    // The phone's answer in the ACK, with its own key (30 bytes, base64).
    let answer = sip::sdp(&[(0, "PCMU/8000")], "[media_port]", "sendrecv").replace("RTP/AVP", "RTP/SAVP")
        + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:YUJjRGVGZ0hpSmtMbU5vUHFSc1R1VndYeVohQCMk\r\n";
    let late = scenario(&[
        invite("", ""),
        "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"180\" optional=\"true\"/>\n\
         <recv response=\"200\" rrs=\"true\"><action><ereg regexp=\"RTP/SAVP 96 9 0 8 101.*a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:[A-Za-z0-9+/]{40}\" search_in=\"body\" check_it=\"true\" assign_to=\"offer\"/>\
         <log message=\"[$offer]\"/></action></recv>\n"
            .into(),
        ack(false, &answer),
        pause(1_500),
        in_dialog("BYE", "", "", 200),
    ]);
    let phone = sip.sipp("late-srtp", &late, "100", &[]);
    let call = sip.call_to("100", |c| c["state"] == "answered").await;
    assert_eq!(call["srtp"], true, "the ACK's SRTP answer was taken: {call}");
    let output = phone.finish(Duration::from_secs(20));
    assert!(
        output.status.success(),
        "the 200 carried no SRTP offer: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_out_through_an_srtp_trunk_reaches_an_srtp_phone() {
    let phone_dir = tempfile::tempdir().unwrap();
    let tone = sip::swelling_tone(8_000, 1_000.0, 20);
    sip::write_wav(&phone_dir.path().join("tone.wav"), 8_000, &tone);
    // baresip answers by itself, and only with SRTP.
    let (mut phone, port) = baresip(phone_dir.path(), None, 10);
    let config = format!(
        "{RULES}\n[[sip.trunks]]\nname = \"secure\"\naddress = \"127.0.0.1:{port}\"\ncaller_id = \"gw\"\nsrtp = true\n"
    );
    let sip = sip::start(&config, &[]).await;
    let _alice = sip.tone_publisher("r1", "alice", 440.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // baresip listening
    let (status, placed) = sip
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(serde_json::json!({"to": "phone", "trunk": "secure", "room": "r1"})),
        )
        .await;
    assert_eq!(status, 201, "{placed}");
    let call = sip.call_to("phone", |c| c["state"] == "answered").await;
    assert_eq!(call["srtp"], true, "the placed call is encrypted: {call}");
    let (session, track) = caller_track(&sip, "r1", &call).await;
    let pcm = sip.listen(&session, &track, Duration::from_secs(3)).await;
    let tone = sip::share_of(&pcm, 48_000, 1_000.0);
    assert!(tone > 0.3, "the callee's 1 kHz reaches the room: {tone:.3}");
    let heard = heard_by(&mut phone, phone_dir.path()).await;
    assert!(heard.len() > 8_000 * 4, "only {} samples heard", heard.len());
    let alice = sip::share_of(&heard[8_000 * 2..], 8_000, 440.0);
    assert!(alice > 0.5, "the callee hears the room's 440 Hz: {alice:.3}");
}

/// Sends SRTP (µ-law, a swelling tone at `hz`) to `to` from `socket` for `seconds`, protected by `key`,
/// continuing the sequence numbers and timestamps from `first`.
async fn send_srtp(
    socket: &tokio::net::UdpSocket,
    to: std::net::SocketAddr,
    key: &MasterKey,
    first: u32,
    seconds: u32,
) {
    let mut srtp = Srtp::new(Suite::AesCm128HmacSha1_80, key).unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let tau = 2.0 * std::f64::consts::PI;
    for n in first..first + seconds * 50 {
        tick.tick().await;
        let payload: Vec<u8> = (0..160)
            .map(|i| (n as usize * 160 + i) as f64 / 8_000.0)
            .map(|t| (t * 1_000.0 * tau).sin() * 8_000.0 * (0.75 - 0.25 * (t * 3.0 * tau).sin()))
            .map(|s| g711::linear_to_ulaw(s as i16))
            .collect();
        let mut packet = Vec::new();
        RtpPacket {
            payload_type: 0,
            marker: n == first,
            seq: n as u16,
            timestamp: n * 160,
            ssrc: 0x5eed,
            payload: &payload,
        }
        .write(&mut packet);
        srtp.protect(&mut packet).unwrap();
        let _ = socket.send_to(&packet, to).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_re_keys_srtp_mid_call_is_still_heard() {
    let config = format!("[sip]\nsrtp = \"required\"\n{RULES}");
    let sip = sip::start(&config, &[]).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    let (before, after) = (MasterKey::random(), MasterKey::random());
    let offer = |key: &MasterKey| {
        sip::sdp(&[(0, "PCMU/8000")], &port, "sendrecv").replace("RTP/AVP", "RTP/SAVP")
            + &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {}\r\n", key.to_params())
    };
    // The phone re-keys with a re-INVITE 3 s into the call (a new a=crypto key, same media).
    let steps = scenario(&[
        invite(&offer(&before), ""),
        final_response(200, ""),
        ack(false, ""),
        pause(3_000),
        in_dialog("INVITE", "application/sdp", &offer(&after), 200),
        pause(5_000),
        in_dialog("BYE", "", "", 200),
    ]);
    let phone = sip.sipp("re-key", &steps, "100", &[]);
    let call = sip
        .call_to("100", |c| c["state"] == "answered" && c["localRtp"].is_string())
        .await;
    let gateway: std::net::SocketAddr = call["localRtp"].as_str().unwrap().parse().unwrap();
    let (session, track) = caller_track(&sip, "r1", &call).await;
    // The old key until the re-INVITE has surely been answered, then the new one; the room listens to the
    // caller's track after the switch only.
    send_srtp(&socket, gateway, &before, 0, 4).await;
    let listening = sip.listen(&session, &track, Duration::from_secs(3));
    let (heard, ()) = tokio::join!(listening, send_srtp(&socket, gateway, &after, 200, 4));
    let tail = &heard[heard.len().min(48_000)..];
    let share = sip::share_of(tail, 48_000, 1_000.0);
    assert!(
        tail.len() > 48_000 && share > 0.3 && sip::rms(tail) > 300.0,
        "after the re-key the room hears the caller: {} samples, 1 kHz share {share:.3}",
        tail.len()
    );
    let output = phone.finish(Duration::from_secs(20));
    assert!(
        output.status.success(),
        "sipp: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}
