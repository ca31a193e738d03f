//! Phone calls through the real binary, with sipp as the phone (UDP and TCP), the embedded SFU, and the
//! room's other participants publishing and subscribing Opus: the caller's speech reaches the room, the
//! phone hears the room's mix without itself, DTMF (RFC 4733 and SIP INFO) becomes webhooks, a PIN routes
//! the caller, and digits sent through the API reach the phone.

mod common;

use common::sip::{
    self, EVENTS, PCMA, PCMU, PhoneMedia, ack, final_response, in_dialog, invite, pause, play_pcap, scenario,
};
use sfu_gateway::ingress::sip::rtp::DtmfReceiver;
use std::path::Path;
use std::time::Duration;

const RULES: &str = r#"
[[sip.rules]]
to = "200"
room = "secret"
pin = "1234"

[[sip.rules]]
to = "*"
room = "r1"
"#;

/// The room participant of a call (its SFU session) and its track.
async fn caller_in_room(sip: &sip::Sip, room: &str, call: &serde_json::Value) -> (String, String) {
    let id = format!("sip-{}", call["id"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, snapshot) = sip.get(&format!("/v1/rooms/{room}")).await;
        let found = snapshot["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["id"] == id.as_str())
            .cloned();
        if let Some(p) = found {
            return (
                p["sessionId"].as_str().unwrap().to_string(),
                p["tracks"][0]["trackName"].as_str().unwrap().to_string(),
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "caller {id} never joined {room}: {snapshot}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn speech_call(pcap: &Path, format: (u8, &str)) -> String {
    scenario(&[
        invite(&sip::sdp(&[format, EVENTS], "[media_port]", "sendrecv"), ""),
        final_response(200, ""),
        ack(false, ""),
        play_pcap(pcap),
        pause(5_000),
        in_dialog("BYE", "", "", 200),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_speech_reaches_the_room_as_opus_over_udp_and_tcp() {
    let sip = sip::start(RULES, &[]).await;
    let ulaw = sip::ulaw_pcap(sip.dir.path());
    for (number, pcap, format, transport) in [
        ("100", Path::new(sip::PCAP_ALAW).to_path_buf(), PCMA, "u1"),
        ("101", ulaw, PCMU, "t1"),
    ] {
        let phone = sip.sipp(
            &format!("speech-{number}"),
            &speech_call(&pcap, format),
            number,
            &["-t", transport],
        );
        let call = sip.call_to(number, |c| c["state"] == "answered").await;
        assert_eq!(call["codec"], format.1.split('/').next().unwrap());
        assert_eq!(call["from"], "+15550001");
        let (session, track) = caller_in_room(&sip, "r1", &call).await;
        assert_eq!(track, format!("r1-sip-{}", call["id"].as_str().unwrap()));
        let (_, shown) = sip.get(&format!("/v1/calls/{}", call["id"].as_str().unwrap())).await;
        assert_eq!(
            shown["sfu"]["sessionId"],
            session.as_str(),
            "the call shows its SFU session"
        );
        assert_eq!(shown["sfu"]["tracks"][0]["trackName"], track.as_str());
        let pcm = sip.listen(&session, &track, Duration::from_secs(3)).await;
        assert!(
            pcm.len() > 48_000 * 2,
            "{number}: only {} samples of the caller arrived",
            pcm.len()
        );
        // Speech, not silence: energy in most 100 ms windows.
        let voiced = pcm.chunks(4_800).filter(|w| sip::rms(w) > 300.0).count();
        assert!(
            voiced * 2 > pcm.len() / 4_800,
            "{number}: {voiced} voiced windows of {}",
            pcm.len() / 4_800
        );
        let output = phone.finish(Duration::from_secs(30));
        assert!(
            output.status.success(),
            "sipp failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let ended = sip.hook("call.ended", |d| d["callId"] == call["id"]).await;
        assert_eq!(ended["data"]["reason"], "hung up");
        assert!(ended["data"]["stats"]["packetsFromPhone"].as_u64().unwrap() > 100);
        // The caller left the room with its track.
        let (_, room) = sip.get("/v1/rooms/r1").await;
        let still = room["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["sessionId"] == session.as_str());
        assert!(!still, "the caller is still in the room: {room}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_hears_the_room_mix_but_not_itself() {
    let sip = sip::start(RULES, &[]).await;
    let _alice = sip.tone_publisher("r1", "alice", 440.0).await;
    let _bob = sip.tone_publisher("r1", "bob", 1_000.0).await;
    let phone_media = PhoneMedia::bind().await;
    let (phone, _call, gateway_rtp) = sip.call_with_media("mix", &phone_media, &[PCMU], 6_000).await;
    // The phone speaks a 2.5 kHz tone while it listens.
    let speak = phone_media.send_tone(gateway_rtp, true, 2_500.0, 4);
    let listen = phone_media.receive(true, Duration::from_secs(4));
    let ((), (pcm, _)) = tokio::join!(speak, listen);
    assert!(pcm.len() > 8_000 * 3, "only {} samples reached the phone", pcm.len());
    let tail = &pcm[8_000..];
    let (alice, bob, own) = (
        sip::share_of(tail, 8_000, 440.0),
        sip::share_of(tail, 8_000, 1_000.0),
        sip::share_of(tail, 8_000, 2_500.0),
    );
    assert!(
        alice > 0.15 && bob > 0.15,
        "both publishers are mixed: 440 Hz {alice:.3}, 1 kHz {bob:.3}"
    );
    assert!(own < 0.01, "the caller hears itself: 2.5 kHz {own:.3}");
    let call = sip.call_to("100", |c| c["remoteRtp"].is_string()).await;
    assert_eq!(
        call["remoteRtp"],
        phone_media.socket.local_addr().unwrap().to_string(),
        "latched onto the phone"
    );
    let output = phone.finish(Duration::from_secs(30));
    assert!(
        output.status.success(),
        "sipp failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_in_one_room_hear_each_other_through_one_shared_mix() {
    let sip = sip::start(RULES, &[]).await;
    let _alice = sip.tone_publisher("r1", "alice", 440.0).await;
    let (media_a, media_b) = (PhoneMedia::bind().await, PhoneMedia::bind().await);
    let (phone_a, _, rtp_a) = sip
        .call_number_with_media("101", "shared-a", &media_a, &[PCMU], 7_000)
        .await;
    let (phone_b, _, rtp_b) = sip
        .call_number_with_media("102", "shared-b", &media_b, &[PCMU], 7_000)
        .await;
    // Each phone speaks its own tone, swelling like speech, while both listen.
    let listen = Duration::from_secs(4);
    let ((), (), (pcm_a, _), (pcm_b, _)) = tokio::join!(
        media_a.send_syllables(rtp_a, true, 2_500.0, 4),
        media_b.send_syllables(rtp_b, true, 1_200.0, 4),
        media_a.receive(true, listen),
        media_b.receive(true, listen),
    );
    for (name, pcm, other_hz, own_hz) in [("a", &pcm_a, 1_200.0, 2_500.0), ("b", &pcm_b, 2_500.0, 1_200.0)] {
        assert!(pcm.len() > 8_000 * 3, "only {} samples reached phone {name}", pcm.len());
        let tail = &pcm[8_000..];
        let (alice, other, own) = (
            sip::share_of(tail, 8_000, 440.0),
            sip::share_of(tail, 8_000, other_hz),
            sip::share_of(tail, 8_000, own_hz),
        );
        assert!(
            alice > 0.1 && other > 0.1,
            "phone {name} hears the publisher ({alice:.3}) and the other phone ({other:.3})"
        );
        assert!(own < 0.01, "phone {name} hears itself: {own:.3}");
    }
    // One mix for the room: one decoder per track (2 phones + alice), not one per listening phone; the two
    // phones are mixed straight from the gateway's own uplinks, only alice comes from the SFU.
    let gauge = |metrics: &str, name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
            .unwrap_or_else(|| panic!("no {name} in the metrics"))
    };
    let metrics = sip.setup.metrics_text().await;
    assert_eq!(gauge(&metrics, "sip_room_mixes "), 1.0);
    assert_eq!(gauge(&metrics, "sip_room_mix_tracks "), 3.0);
    assert_eq!(gauge(&metrics, "sip_room_mix_local_tracks "), 2.0);
    // ... from the PCM they were encoded from: a µ-law phone's 8 kHz is the mix's rate, nothing to decode.
    assert!(
        gauge(&metrics, "sip_room_mix_local_pcm_frames_total ") > 100.0,
        "{metrics}"
    );
    for phone in [phone_a, phone_b] {
        let output = phone.finish(Duration::from_secs(30));
        assert!(
            output.status.success(),
            "sipp failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    // The last phone gone, the mix stops and gives its tracks up.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = sip.setup.metrics_text().await;
        if gauge(&metrics, "sip_room_mixes ") == 0.0 && gauge(&metrics, "sip_room_mix_tracks ") == 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the room mix outlived its phones");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_from_the_phone_becomes_webhooks_and_api_digits_reach_the_phone() {
    let sip = sip::start(RULES, &[]).await;
    let phone_media = PhoneMedia::bind().await;
    let offer = sip::sdp(&[PCMU, EVENTS], &phone_media.port().to_string(), "sendrecv");
    let steps = scenario(&[
        invite(&offer, ""),
        final_response(200, ""),
        ack(false, ""),
        pause(2_500),
        play_pcap(Path::new("/usr/share/sip-tester/dtmf_2833_1.pcap")),
        pause(1_000),
        in_dialog("INFO", "application/dtmf-relay", "Signal=5\nDuration=160\n", 200),
        in_dialog("INFO", "application/dtmf", "#", 200),
        pause(1_000),
        in_dialog("BYE", "", "", 200),
    ]);
    // The room's event stream, opened before the call.
    let mut room_events = sip
        .setup
        .http
        .get(format!("{}/v1/rooms/r1/events", sip.setup.gateway.api))
        .bearer_auth(common::rtmp::TOKEN)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let phone = sip.sipp("dtmf", &steps, "100", &[]);
    let call = sip.call_to("100", |c| c["state"] == "answered").await;
    let id = call["id"].as_str().unwrap().to_string();
    // Digits to the phone, before sipp's own RTP makes the gateway latch onto sipp's media port.
    let (status, _) = sip
        .send(
            reqwest::Method::POST,
            &format!("/v1/calls/{id}/dtmf"),
            Some(serde_json::json!({"digits": "42#"})),
        )
        .await;
    assert_eq!(status, 202);
    let (_, events) = phone_media.receive(true, Duration::from_secs(2)).await;
    let mut receiver = DtmfReceiver::default();
    let digits: String = events
        .iter()
        .filter_map(|(ts, payload)| receiver.receive(*ts, payload))
        .collect();
    assert_eq!(digits, "42#", "RFC 4733 events at the phone");
    let (status, _) = sip
        .send(
            reqwest::Method::POST,
            &format!("/v1/calls/{id}/dtmf"),
            Some(serde_json::json!({"digits": "12x"})),
        )
        .await;
    assert_eq!(status, 422, "digits are validated");
    // Digits from the phone.
    for (digit, method) in [("1", "rfc4733"), ("5", "info"), ("#", "info")] {
        let event = sip.hook("call.dtmf", |d| d["digit"] == digit).await;
        assert_eq!(event["data"]["callId"], id.as_str());
        assert_eq!(event["data"]["method"], method);
        assert_eq!(event["data"]["room"], "r1");
    }
    // The same digits as room events for the room's other participants.
    let mut stream = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stream.matches("event: dtmf").count() < 3 && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), room_events.chunk()).await {
            Ok(Ok(Some(chunk))) => stream.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    let digits: Vec<&str> = stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| d.contains("\"type\":\"dtmf\""))
        .filter_map(|d| d.split("\"digit\":\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(digits, ["1", "5", "#"], "room events: {stream}");
    let output = phone.finish(Duration::from_secs(30));
    assert!(
        output.status.success(),
        "sipp failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let ended = sip.call_to("100", |c| c["state"] == "ended").await;
    assert_eq!(ended["stats"]["dtmfReceived"], 3, "each digit counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_typed_by_dtmf_routes_the_caller_into_its_room() {
    // The prompt: a 700 Hz WAV at 16 kHz (played at the leg's 8 kHz).
    let prompts = tempfile::tempdir().unwrap();
    let prompt = prompts.path().join("enter-pin.wav");
    sip::write_wav(&prompt, 16_000, &sip::swelling_tone(16_000, 700.0, 3));
    let config = format!("[sip]\npin_prompt = \"{}\"\n{RULES}", prompt.display());
    let sip = sip::start(&config, &[]).await;
    let phone_media = PhoneMedia::bind().await;
    let offer = sip::sdp(&[PCMU, EVENTS], &phone_media.port().to_string(), "sendrecv");
    let mut steps = vec![
        invite(&offer, ""),
        final_response(200, ""),
        ack(false, ""),
        pause(1_500),
    ];
    for digit in ["9", "#", "1", "2", "3", "4"] {
        steps.push(in_dialog("INFO", "application/dtmf", digit, 200));
    }
    steps.extend([pause(2_000), in_dialog("BYE", "", "", 200)]);
    let phone = sip.sipp("pin", &scenario(&steps), "200", &[]);
    let waiting = sip.call_to("200", |c| c["state"] == "pin").await;
    assert_eq!(waiting["room"], "secret");
    // The caller hears the prompt file while the PIN is awaited, and is not in the room yet.
    let (pcm, _) = phone_media.receive(true, Duration::from_millis(800)).await;
    let prompt_share = sip::share_of(&pcm, 8_000, 700.0);
    assert!(prompt_share > 0.3, "the prompt's 700 Hz: {prompt_share:.3}");
    let (_, room) = sip.get("/v1/rooms/secret").await;
    assert!(
        room["participants"].as_array().is_none_or(|p| p.is_empty()),
        "joined before the PIN: {room}"
    );
    let joined = sip.call_to("200", |c| c["state"] == "answered").await;
    caller_in_room(&sip, "secret", &joined).await;
    let output = phone.finish(Duration::from_secs(30));
    assert!(
        output.status.success(),
        "sipp failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    // Digits typed for the PIN are not application events.
    assert!(sip.hooks.lock().unwrap().iter().all(|e| e["kind"] != "call.dtmf"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g722_phone_is_bridged_in_wideband_both_ways() {
    let sip = sip::start(RULES, &[]).await;
    let _alice = sip.tone_publisher("r1", "alice", 440.0).await;
    let phone_media = PhoneMedia::bind().await;
    let (phone, call, gateway_rtp) = sip
        .call_with_media("g722", &phone_media, &[(9, "G722/8000")], 6_000)
        .await;
    assert_eq!(call["codec"], "G722");
    let (session, track) = caller_in_room(&sip, "r1", &call).await;
    // The phone speaks a 5 kHz tone — beyond what narrowband can carry — and listens.
    let speak = phone_media.send_g722_tone(gateway_rtp, 5_000.0, 4);
    let hear = phone_media.receive_g722(Duration::from_secs(4));
    let room = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sip.listen(&session, &track, Duration::from_secs(3)).await
    };
    let ((), heard, in_room) = tokio::join!(speak, hear, room);
    assert!(heard.len() > 16_000 * 3, "only {} samples at the phone", heard.len());
    let alice = sip::share_of(&heard[16_000..], 16_000, 440.0);
    assert!(alice > 0.3, "the phone hears the room over G.722: {alice:.3}");
    assert!(in_room.len() > 48_000 * 2, "only {} samples in the room", in_room.len());
    let wideband = sip::share_of(&in_room[24_000..], 48_000, 5_000.0);
    assert!(wideband > 0.3, "the room hears the caller's 5 kHz tone: {wideband:.3}");
    let output = phone.finish(Duration::from_secs(30));
    assert!(
        output.status.success(),
        "sipp failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_reports_go_to_the_phone_and_its_reports_give_the_loss_toward_it() {
    use sfu_gateway::ingress::sip::rtcp;
    let sip = sip::start(RULES, &[]).await;
    // The phone's RTP port and, above it, its RTCP port.
    let (phone_media, phone_rtcp) = loop {
        let media = PhoneMedia::bind().await;
        if let Ok(rtcp) = tokio::net::UdpSocket::bind(("127.0.0.1", media.port() + 1)).await {
            break (media, rtcp);
        }
    };
    let (phone, _call, gateway_rtp) = sip.call_with_media("rtcp", &phone_media, &[PCMU], 10_000).await;
    let talker = tokio::spawn(async move { phone_media.send_syllables(gateway_rtp, true, 1_000.0, 9).await });
    // The gateway's sender report, from the port above its RTP, with a block on the phone's stream.
    let mut buf = [0u8; 1500];
    let (len, from) = tokio::time::timeout(Duration::from_secs(8), phone_rtcp.recv_from(&mut buf))
        .await
        .expect("a sender report within 8 s")
        .unwrap();
    assert_eq!(from.port(), gateway_rtp.port() + 1);
    let report = rtcp::parse(&buf[..len]).expect("RTCP");
    let (gateway_ssrc, sr_ntp) = report.sender_report.expect("a sender report");
    assert!(
        u32::from_be_bytes(buf[20..24].try_into().unwrap()) > 0,
        "it counts the packets sent"
    );
    assert_eq!(report.blocks.len(), 1, "a report on the phone's stream: {report:?}");
    // The phone reports 13/256 lost and 80 units (10 ms at 8 kHz) of jitter on the gateway's stream.
    let block = rtcp::ReportBlock {
        ssrc: gateway_ssrc,
        fraction_lost: 13,
        cumulative_lost: 10,
        highest_seq: 1_000,
        jitter: 80,
        lsr: rtcp::middle(sr_ntp),
        dlsr: 0,
    };
    let info = rtcp::SenderInfo {
        ntp: rtcp::ntp(std::time::SystemTime::now()),
        rtp_timestamp: 0,
        packets: 1,
        octets: 160,
    };
    let phone_report = rtcp::sender_report(42, info, &[block], "phone");
    phone_rtcp.send_to(&phone_report, from).await.unwrap();
    let call = sip.call_to("100", |c| c["stats"]["lossToPhonePct"].is_number()).await;
    let stats = &call["stats"];
    assert!(
        (stats["lossToPhonePct"].as_f64().unwrap() - 5.08).abs() < 0.01,
        "{stats}"
    );
    assert_eq!(stats["jitterToPhoneMs"], 10.0);
    let rtt = stats["rttMs"].as_f64().expect("a round trip");
    assert!((0.0..1_000.0).contains(&rtt), "{rtt} ms");
    talker.abort();
    drop(phone);
}
