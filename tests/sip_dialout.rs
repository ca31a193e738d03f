//! Dial-out through trunks to sipp acting as the called phone: answered (the callee hears the room and is
//! hung up through the API), busy (486), no answer (CANCEL after the ring timeout, 487), and a trunk that
//! asks for digest credentials (401, then the INVITE with Authorization is answered); session timers (the
//! gateway refreshing, and a callee's 422 answered by a second INVITE with its Min-SE).

mod common;

use common::sip::{self, EVENTS, PCMU, PhoneMedia, expect_bye, scenario, sipp_uas, uas_response};
use serde_json::json;
use std::time::Duration;

fn assert_ok(output: std::process::Output) {
    assert!(
        output.status.success(),
        "sipp failed:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

fn trunk(name: &str, port: u16, credentials: bool) -> String {
    let auth = if credentials {
        "username = \"gw\"\npassword = \"dial-secret\"\n"
    } else {
        ""
    };
    format!("[[sip.trunks]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\ncaller_id = \"+15550100\"\n{auth}\n")
}

fn answering(sdp: &str, challenge: bool) -> String {
    let mut steps = vec!["<recv request=\"INVITE\" crlf=\"true\"/>\n".to_string()];
    if challenge {
        steps.push(uas_response(
            "401 Unauthorized",
            "WWW-Authenticate: Digest realm=\"carrier.test\", nonce=\"6a1f0c2b9d\", algorithm=MD5\n",
            "",
        ));
        steps.push("<recv request=\"ACK\"/>\n".into());
        steps.push(
            "<recv request=\"INVITE\"><action><verifyauth assign_to=\"authvalid\" username=\"gw\" password=\"dial-secret\"/></action></recv>\n\
             <nop hide=\"true\" test=\"authvalid\" next=\"good\"/>\n"
                .into(),
        );
        steps.push(uas_response("403 Forbidden", "", ""));
        steps.push("<recv request=\"ACK\" next=\"end\"/>\n<label id=\"good\"/>\n".into());
    }
    steps.push(uas_response("180 Ringing", "", ""));
    steps.push(uas_response("200 OK", "", sdp));
    steps.push("<recv request=\"ACK\" crlf=\"true\"/>\n".into());
    steps.push(expect_bye());
    steps.push("<label id=\"end\"/>\n".into());
    scenario(&steps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_out_answered_busy_unanswered_and_with_digest() {
    let ports: Vec<u16> = (0..4).map(|_| sip::free_even_port()).collect();
    let config = [
        trunk("answer", ports[0], false),
        trunk("busy", ports[1], false),
        trunk("silent", ports[2], false),
        trunk("auth", ports[3], true),
    ]
    .concat();
    let sip = sip::start(&config, &[]).await;
    let _alice = sip.tone_publisher("r1", "alice", 440.0).await;
    let dir = sip.dir.path();

    // Answered: the callee hears the room, then the API hangs up.
    let phone_media = PhoneMedia::bind().await;
    let callee_sdp = sip::sdp(&[PCMU, EVENTS], &phone_media.port().to_string(), "sendrecv");
    let callee = sipp_uas(dir, "answer", &answering(&callee_sdp, false), ports[0]);
    let call = dial(&sip, json!({"to": "+15551234", "trunk": "answer", "room": "r1"})).await;
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["from"], "+15550100", "the trunk's caller id");
    let id = call["id"].as_str().unwrap().to_string();
    let (status, _) = sip.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(status, 200, "the call is visible at once");
    let answered = sip.call_to("+15551234", |c| c["state"] == "answered").await;
    assert_eq!(answered["sipStatus"], 200);
    assert_eq!(answered["codec"], "PCMU");
    let (share, samples) = phone_media.hears(440.0, 0.3, Duration::from_secs(5)).await;
    assert!(
        share > 0.3,
        "the callee hears the room's 440 Hz: {share:.3} ({samples} samples)"
    );
    let (status, _) = sip
        .send(reqwest::Method::DELETE, &format!("/v1/calls/{id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_ok(callee.finish(Duration::from_secs(20)));

    // Busy.
    let busy_scenario = scenario(&[
        "<recv request=\"INVITE\" crlf=\"true\"/>\n".into(),
        uas_response("486 Busy Here", "", ""),
        "<recv request=\"ACK\"/>\n".into(),
    ]);
    let busy = sipp_uas(dir, "busy", &busy_scenario, ports[1]);
    dial(&sip, json!({"to": "+15552222", "trunk": "busy", "room": "r1"})).await;
    let ended = sip.call_to("+15552222", |c| c["state"] == "ended").await;
    assert_eq!(ended["sipStatus"], 486);
    assert_ok(busy.finish(Duration::from_secs(20)));

    // No answer: cancelled after the ring timeout.
    let silent_scenario = scenario(&[
        "<recv request=\"INVITE\" crlf=\"true\"><action><ereg regexp=\"CSeq: ([0-9]+)\" search_in=\"msg\" assign_to=\"line,seq\"/>\
         <log message=\"[$line] [$seq]\"/></action></recv>\n"
            .into(),
        uas_response("180 Ringing", "", ""),
        "<recv request=\"CANCEL\"/>\n".into(),
        uas_response("200 OK", "", "").replace(" retrans=\"500\"", ""),
        uas_response("487 Request Terminated", "", "").replace("[last_CSeq:]", "CSeq: [$seq] INVITE"),
        "<recv request=\"ACK\"/>\n".into(),
    ]);
    let silent = sipp_uas(dir, "silent", &silent_scenario, ports[2]);
    dial(
        &sip,
        json!({"to": "+15553333", "trunk": "silent", "room": "r1", "ringTimeout": 2}),
    )
    .await;
    let ended = sip.call_to("+15553333", |c| c["state"] == "ended").await;
    assert_eq!(ended["sipStatus"], 487);
    assert_eq!(ended["reason"], "no answer");
    assert_ok(silent.finish(Duration::from_secs(20)));

    // A trunk that challenges: the INVITE is sent again with the trunk's credentials.
    let authed = sipp_uas(
        dir,
        "auth",
        &answering(&sip::sdp(&[PCMU], "[media_port]", "sendrecv"), true),
        ports[3],
    );
    let call = dial(
        &sip,
        json!({"to": "+15554444", "trunk": "auth", "room": "r1", "callerId": "+15559999"}),
    )
    .await;
    assert_eq!(call["from"], "+15559999");
    sip.call_to("+15554444", |c| c["state"] == "answered").await;
    assert_eq!(sip.hang_up(&call).await, 204);
    assert_ok(authed.finish(Duration::from_secs(20)));
    assert!(sip.setup.gateway.log.iter().all(|l| !l.contains("dial-secret")));

    // Validation.
    let (status, _) = sip
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(json!({"to": "+1555", "trunk": "nope", "room": "r1"})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = sip
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(json!({"to": "bad number!", "trunk": "answer", "room": "r1"})),
        )
        .await;
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_transfers_the_caller_to_another_number_in_the_same_room() {
    transfer("<sip:+15557777@127.0.0.1>", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attended_transfer_replaces_the_consultation_call_at_the_target() {
    // The caller has a consultation call with the target (Call-ID abc@host); its REFER names it in Replaces,
    // and the gateway's INVITE must carry it so the target swaps that call for the gateway's.
    transfer(
        "<sip:+15557777@127.0.0.1?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        Some("Replaces: abc@host;to-tag=1;from-tag=2"),
    )
    .await;
}

/// A call to `100` REFERs to `refer_to`; the target's INVITE must contain `replaces` (when given).
async fn transfer(refer_to: &str, replaces: Option<&str>) {
    let port = sip::free_even_port();
    let config = format!(
        "[[sip.rules]]\nto = \"*\"\nroom = \"r1\"\n\n{}",
        trunk("out", port, false)
    );
    let sip = sip::start(&config, &[]).await;
    let dir = sip.dir.path();
    let _alice = sip.tone_publisher("r1", "alice", 440.0).await;
    // The transfer target answers and hears the room.
    let target_media = PhoneMedia::bind().await;
    let target_sdp = sip::sdp(&[PCMU], &target_media.port().to_string(), "sendrecv");
    let mut answer = answering(&target_sdp, false);
    if let Some(replaces) = replaces {
        let check = format!(
            "<recv request=\"INVITE\" crlf=\"true\"><action><ereg regexp=\"{replaces}\" search_in=\"msg\" \
             check_it=\"true\" assign_to=\"found\"/><log message=\"[$found]\"/></action></recv>"
        );
        answer = answer.replacen("<recv request=\"INVITE\" crlf=\"true\"/>", &check, 1);
    }
    let target = sipp_uas(dir, "target", &answer, port);
    // The caller asks for the transfer, gets 202 and two NOTIFYs (100, then 200), and is hung up.
    let notify_ok = format!("<recv request=\"NOTIFY\"/>\n{}", sip::reply_ok());
    let refer = "<send retrans=\"500\"><![CDATA[\nREFER [next_url] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
                 From: sipp <sip:+15550001@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
                 To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\nCall-ID: [call_id]\nCSeq: [cseq] REFER\n\
                 Contact: sip:sipp@[local_ip]:[local_port]\nMax-Forwards: 70\nRefer-To: REFER_TO\n\
                 Referred-By: <sip:+15550001@[local_ip]>\nContent-Length: 0\n\n]]></send>\n<recv response=\"202\"/>\n"
        .replace("REFER_TO", refer_to);
    let steps = scenario(&[
        sip::invite(&sip::sdp(&[PCMU], "[media_port]", "sendrecv"), ""),
        sip::final_response(200, ""),
        sip::ack(false, ""),
        sip::pause(500),
        refer,
        notify_ok.to_string(),
        notify_ok.replace("<recv request=\"NOTIFY\"/>", "<recv request=\"NOTIFY\"><action><ereg regexp=\"SIP/2.0 200\" search_in=\"body\" check_it=\"true\" assign_to=\"frag\"/><log message=\"[$frag]\"/></action></recv>"),
        expect_bye(),
    ]);
    let caller = sip.sipp("transferor", &steps, "100", &[]);
    assert_ok(caller.finish(Duration::from_secs(30)));
    let original = sip.call_to("100", |c| c["state"] == "ended").await;
    assert_eq!(original["reason"], "transferred");
    let transferred = sip.call_to("+15557777", |c| c["state"] == "answered").await;
    assert_eq!(transferred["direction"], "outbound");
    assert_eq!(transferred["room"], "r1");
    assert_eq!(transferred["trunk"], "out");
    let (share, samples) = target_media.hears(440.0, 0.3, Duration::from_secs(5)).await;
    assert!(share > 0.3, "the target hears the room: {share:.3} ({samples} samples)");
    assert_eq!(sip.hang_up(&transferred).await, 204);
    assert_ok(target.finish(Duration::from_secs(20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_media_from_the_callee_reaches_the_room_before_the_answer() {
    let (port, failing_port) = (sip::free_even_port(), sip::free_even_port());
    let config = format!(
        "[[sip.rules]]\nto = \"*\"\nroom = \"r1\"\n\n{}{}",
        trunk("early", port, false),
        trunk("unavailable", failing_port, false)
    );
    let sip = sip::start(&config, &[]).await;
    let phone_media = PhoneMedia::bind().await;
    let callee_sdp = sip::sdp(&[PCMU, EVENTS], &phone_media.port().to_string(), "sendrecv");
    // 183 with SDP (an announcement plays), then the answer 6 s later.
    let steps = scenario(&[
        "<recv request=\"INVITE\" crlf=\"true\"/>\n".into(),
        uas_response("183 Session Progress", "", &callee_sdp),
        "<pause milliseconds=\"6000\"/>\n".into(),
        uas_response("200 OK", "", &callee_sdp),
        "<recv request=\"ACK\" crlf=\"true\"/>\n".into(),
        expect_bye(),
    ]);
    let callee = sipp_uas(sip.dir.path(), "early", &steps, port);
    dial(&sip, json!({"to": "+15554444", "trunk": "early", "room": "r1"})).await;
    let early = sip
        .call_to("+15554444", |c| {
            c["state"] == "early-media" && c["localRtp"].is_string()
        })
        .await;
    // The announcement, sent to where the gateway's offer said, is heard in the room before any answer.
    let gateway_rtp: std::net::SocketAddr = early["localRtp"].as_str().unwrap().parse().unwrap();
    let announcement = tokio::spawn(async move { phone_media.send_syllables(gateway_rtp, true, 1_000.0, 8).await });
    let participant = format!("sip-{}", early["id"].as_str().unwrap());
    let (session, track) = sip
        .room_track("r1", Duration::from_secs(10), |p| p["id"] == participant.as_str())
        .await;
    let pcm = sip.listen(&session, &track, Duration::from_secs(2)).await;
    let share = sip::share_of(&pcm, 48_000, 1_000.0);
    assert!(share > 0.3, "the room hears the early media: {share:.3}");
    let (_, still) = sip.get(&format!("/v1/calls/{}", early["id"].as_str().unwrap())).await;
    assert_eq!(still["state"], "early-media", "not answered yet: {still}");
    let answered = sip.call_to("+15554444", |c| c["state"] == "answered").await;
    assert_eq!(answered["sipStatus"], 200);
    assert_eq!(sip.hang_up(&answered).await, 204);
    assert_ok(callee.finish(Duration::from_secs(20)));
    announcement.abort();

    // Early media, then a failure: the call ends with the callee's status and leaves the room.
    let failing = scenario(&[
        "<recv request=\"INVITE\" crlf=\"true\"/>\n".into(),
        uas_response("183 Session Progress", "", &callee_sdp),
        "<pause milliseconds=\"1500\"/>\n".into(),
        uas_response("480 Temporarily Unavailable", "", ""),
        "<recv request=\"ACK\"/>\n".into(),
    ]);
    let callee = sipp_uas(sip.dir.path(), "unavailable", &failing, failing_port);
    dial(&sip, json!({"to": "+15555555", "trunk": "unavailable", "room": "r1"})).await;
    sip.call_to("+15555555", |c| c["state"] == "early-media").await;
    let ended = sip.call_to("+15555555", |c| c["state"] == "ended").await;
    assert_eq!(ended["sipStatus"], 480, "{ended}");
    let gone = format!("sip-{}", ended["id"].as_str().unwrap());
    let (_, room) = sip.get("/v1/rooms/r1").await;
    assert!(
        !room.to_string().contains(&gone),
        "the failed call left the room: {room}"
    );
    assert_ok(callee.finish(Duration::from_secs(20)));
}

/// A 200 OK to an in-dialog request from the gateway (its To already has our tag), with `extra` headers and
/// an SDP `body` when not empty.
fn in_dialog_ok(extra: &str, body: &str) -> String {
    let content = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\n"
    };
    format!(
        "<send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]\n\
         Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n{extra}{content}Content-Length: [len]\n\n{body}]]></send>\n"
    )
}

/// A request from the gateway that must match `regexp`.
fn recv_matching(method: &str, regexp: &str) -> String {
    format!(
        "<recv request=\"{method}\" timeout=\"5000\"><action><ereg regexp=\"{regexp}\" search_in=\"msg\" check_it=\"true\" \
         assign_to=\"found\"/><log message=\"[$found]\"/></action></recv>\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_out_refreshes_the_session_when_the_callee_makes_it_the_refresher() {
    let ports = [sip::free_even_port(), sip::free_even_port()];
    let config = [trunk("update", ports[0], false), trunk("reinvite", ports[1], false)].concat();
    let sip = sip::start(&config, &[]).await;
    let _alice = sip.tone_publisher("r1", "alice", 440.0).await;
    let timer = "Session-Expires: 4;refresher=uac\nRequire: timer\n";
    // The INVITE offers timers; the callee answers with a 4 s session that the gateway must refresh.
    let invite = recv_matching("INVITE", "Supported: timer");

    // A callee that allows UPDATE: two UPDATE refreshes (without SDP) within the 4 s intervals.
    let phone_media = PhoneMedia::bind().await;
    let callee_sdp = sip::sdp(&[PCMU, EVENTS], &phone_media.port().to_string(), "sendrecv");
    let update = recv_matching("UPDATE", "Session-Expires: 4;refresher=uac");
    let by_update = scenario(
        &[
            invite.clone(),
            uas_response(
                "200 OK",
                &format!("{timer}Allow: INVITE, ACK, BYE, CANCEL, UPDATE\n"),
                &callee_sdp,
            ),
            "<recv request=\"ACK\" crlf=\"true\"/>\n".into(),
            update.clone(),
            in_dialog_ok(timer, ""),
            update,
            in_dialog_ok(timer, ""),
        ]
        .into_iter()
        .chain(later_refreshes_then_bye("UPDATE", &in_dialog_ok(timer, ""), false))
        .collect::<Vec<_>>(),
    );
    let callee = sipp_uas(sip.dir.path(), "update", &by_update, ports[0]);
    let id = outlive_the_interval(&sip, "+15550001", "update").await;
    hears_the_room_then_hang_up(&sip, &id, callee, &phone_media, "the callee still hears the room").await;

    // A callee without UPDATE: re-INVITEs with the SDP in use; the answer is applied (the media moves to
    // the port the refresh's answer names).
    let first = PhoneMedia::bind().await;
    let second = PhoneMedia::bind().await;
    let sdp_at = |media: &PhoneMedia| sip::sdp(&[PCMU, EVENTS], &media.port().to_string(), "sendrecv");
    let reinvite = recv_matching("INVITE", "m=audio [0-9]+ RTP/AVP 0");
    let by_reinvite = scenario(
        &[
            invite,
            uas_response(
                "200 OK",
                &format!("{timer}Allow: INVITE, ACK, BYE, CANCEL\n"),
                &sdp_at(&first),
            ),
            "<recv request=\"ACK\" crlf=\"true\"/>\n".into(),
            reinvite.clone(),
            in_dialog_ok(timer, &sdp_at(&second)),
            "<recv request=\"ACK\"/>\n".into(),
            reinvite,
            in_dialog_ok(timer, &sdp_at(&second)),
            "<recv request=\"ACK\"/>\n".into(),
        ]
        .into_iter()
        .chain(later_refreshes_then_bye(
            "INVITE",
            &in_dialog_ok(timer, &sdp_at(&second)),
            true,
        ))
        .collect::<Vec<_>>(),
    );
    let callee = sipp_uas(sip.dir.path(), "reinvite", &by_reinvite, ports[1]);
    let id = outlive_the_interval(&sip, "+15550002", "reinvite").await;
    let what = "the room reaches the port of the refresh's answer";
    hears_the_room_then_hang_up(&sip, &id, callee, &second, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_that_wants_a_longer_session_interval_is_invited_again_with_it() {
    let port = sip::free_even_port();
    let sip = sip::start(&trunk("picky", port, false), &[]).await;
    let _alice = sip.tone_publisher("r1", "alice", 440.0).await;
    let phone_media = PhoneMedia::bind().await;
    let callee_sdp = sip::sdp(&[PCMU, EVENTS], &phone_media.port().to_string(), "sendrecv");
    // 422 with Min-SE 3600 to the INVITE's 1800 s; the second INVITE (same Call-ID, so the same sipp call)
    // must ask for 3600 s and accept no less.
    let again = "<recv request=\"INVITE\" timeout=\"5000\"><action>\
        <ereg regexp=\"Session-Expires: 3600\" search_in=\"msg\" check_it=\"true\" assign_to=\"se\"/>\
        <ereg regexp=\"Min-SE: 3600\" search_in=\"msg\" check_it=\"true\" assign_to=\"min\"/><log message=\"[$se] [$min]\"/></action></recv>\n";
    let steps = scenario(&[
        recv_matching("INVITE", "Session-Expires: 1800"),
        uas_response("422 Session Interval Too Small", "Min-SE: 3600\n", ""),
        "<recv request=\"ACK\"/>\n".into(),
        again.into(),
        uas_response(
            "200 OK",
            "Session-Expires: 3600;refresher=uas\nRequire: timer\n",
            &callee_sdp,
        ),
        "<recv request=\"ACK\" crlf=\"true\"/>\n".into(),
        expect_bye(),
    ]);
    let callee = sipp_uas(sip.dir.path(), "picky", &steps, port);
    let call = dial(&sip, json!({"to": "+15550003", "trunk": "picky", "room": "r1"})).await;
    let id = call["id"].as_str().unwrap().to_string();
    sip.call_to("+15550003", |c| c["state"] == "answered").await;
    let what = "the callee hears the room after the second INVITE";
    hears_the_room_then_hang_up(&sip, &id, callee, &phone_media, what).await;
}

/// After the refreshes a test requires: any later `method` refresh (the gateway goes on refreshing every 2 s
/// until the hang-up, whose moment depends on the machine's load) is answered with `answer` (and its ACK
/// taken when `acked`), until the gateway's BYE.
fn later_refreshes_then_bye(method: &str, answer: &str, acked: bool) -> Vec<String> {
    let back = if acked {
        "<recv request=\"ACK\" next=\"more\"/>\n"
    } else {
        "<nop next=\"more\"/>\n"
    };
    vec![
        "<label id=\"more\"/>\n".into(),
        format!("<recv request=\"{method}\" optional=\"true\" next=\"refresh\"/>\n"),
        expect_bye(),
        "<nop next=\"done\"/>\n".into(),
        "<label id=\"refresh\"/>\n".into(),
        answer.to_string(),
        back.into(),
        "<label id=\"done\"/>\n".into(),
    ]
}

/// Dials `to` through `trunk` into room r1 and waits past the callee's 4 s session interval: without
/// refreshes the session would be over (and the gateway hang up). Returns the call id.
async fn outlive_the_interval(sip: &sip::Sip, to: &str, trunk: &str) -> String {
    let call = dial(sip, json!({"to": to, "trunk": trunk, "room": "r1"})).await;
    let id = call["id"].as_str().unwrap().to_string();
    sip.call_to(to, |c| c["state"] == "answered").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, now) = sip.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(now["state"], "answered", "{now}");
    id
}

/// Checks that `media` (the callee's RTP port) receives the room's 440 Hz for a second (`what` says why it
/// should), then hangs call `id` up.
async fn hears_the_room_then_hang_up(sip: &sip::Sip, id: &str, callee: sip::Sipp, media: &PhoneMedia, what: &str) {
    let (share, samples) = media.hears(440.0, 0.3, Duration::from_secs(5)).await;
    assert!(share > 0.3, "{what}: {share:.3} ({samples} samples)");
    hang_up(sip, id, callee).await;
}

/// Hangs the call up through the API; the callee's scenario must end well.
async fn hang_up(sip: &sip::Sip, id: &str, callee: sip::Sipp) {
    let (status, _) = sip
        .send(reqwest::Method::DELETE, &format!("/v1/calls/{id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_ok(callee.finish(Duration::from_secs(20)));
}

/// `POST /v1/calls` with `body`, which must be accepted (201); the call as answered.
async fn dial(sip: &sip::Sip, body: serde_json::Value) -> serde_json::Value {
    let (status, call) = sip.send(reqwest::Method::POST, "/v1/calls", Some(body)).await;
    assert_eq!(status, 201, "{call}");
    call
}
