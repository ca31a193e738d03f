//! Dial-out through trunks to sipp acting as the called phone: answered (the callee hears the room and is
//! hung up through the API), busy (486), no answer (CANCEL after the ring timeout, 487), and a trunk that
//! asks for digest credentials (401, then the INVITE with Authorization is answered).

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
    let (status, call) = sip
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(json!({"to": "+15551234", "trunk": "answer", "room": "r1"})),
        )
        .await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["from"], "+15550100", "the trunk's caller id");
    let id = call["id"].as_str().unwrap().to_string();
    let (status, _) = sip.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(status, 200, "the call is visible at once");
    let answered = sip.call_to("+15551234", |c| c["state"] == "answered").await;
    assert_eq!(answered["sipStatus"], 200);
    assert_eq!(answered["codec"], "PCMU");
    let (pcm, _) = phone_media.receive(true, Duration::from_secs(2)).await;
    assert!(pcm.len() > 8_000, "the callee receives audio: {} samples", pcm.len());
    let share = sip::share_of(&pcm[4_000..], 8_000, 440.0);
    assert!(share > 0.3, "the callee hears the room's 440 Hz: {share:.3}");
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
    let (status, _) = sip
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(json!({"to": "+15552222", "trunk": "busy", "room": "r1"})),
        )
        .await;
    assert_eq!(status, 201);
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
    let (status, _) = sip
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(json!({"to": "+15553333", "trunk": "silent", "room": "r1", "ringTimeout": 2})),
        )
        .await;
    assert_eq!(status, 201);
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
    let (status, call) = sip
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(json!({"to": "+15554444", "trunk": "auth", "room": "r1", "callerId": "+15559999"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(call["from"], "+15559999");
    sip.call_to("+15554444", |c| c["state"] == "answered").await;
    let (status, _) = sip
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/calls/{}", call["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 204);
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
