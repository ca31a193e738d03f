//! SIP signalling of the real binary against sipp scenarios with asserted responses: unknown number (404),
//! unsupported codecs (488), CANCEL before the answer (487), BYE from the gateway (`DELETE /v1/calls/{id}`),
//! re-INVITE hold and resume, INVITE without SDP (offer in the 200, answer in the ACK), digest
//! authentication (401, then 200 or 403), an unauthorised source (403), OPTIONS.

mod common;

use common::sip::{
    self, EVENTS, PCMU, PhoneMedia, ack, cancel, expect_bye, final_response, in_dialog, invite, invite_failing, pause,
    scenario,
};
use std::time::Duration;

const RULES: &str = r#"
[[sip.rules]]
to = "100"
room = "r1"
"#;

fn offer() -> String {
    sip::sdp(&[PCMU, EVENTS], "[media_port]", "sendrecv")
}

fn assert_ok(output: std::process::Output) {
    assert!(
        output.status.success(),
        "sipp failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_unknown_number_unsupported_codec_and_options() {
    let sip = sip::start(RULES, &[]).await;
    let unknown = scenario(&[invite_failing(&offer(), ""), final_response(404, ""), ack(true, "")]);
    assert_ok(
        sip.sipp("unknown", &unknown, "555", &[])
            .finish(Duration::from_secs(20)),
    );
    let g729 = sip::sdp(&[(18, "G729/8000")], "[media_port]", "sendrecv");
    let codec = scenario(&[invite_failing(&g729, ""), final_response(488, ""), ack(true, "")]);
    assert_ok(sip.sipp("g729", &codec, "100", &[]).finish(Duration::from_secs(20)));
    let srtp = offer().replace("RTP/AVP", "RTP/SAVP");
    let secure = scenario(&[invite_failing(&srtp, ""), final_response(488, ""), ack(true, "")]);
    assert_ok(sip.sipp("srtp", &secure, "100", &[]).finish(Duration::from_secs(20)));
    let options = sip::raw_request("OPTIONS", &sip.addr, "127.0.0.1:9", "opt1", "tester", "");
    let reply = sip::raw_udp(&sip.addr, options.as_bytes(), Duration::from_secs(3))
        .await
        .expect("an OPTIONS reply");
    assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
    assert!(
        reply.contains("INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"),
        "Allow lists the methods: {reply}"
    );
    let (_, calls) = sip.get("/v1/calls").await;
    assert_eq!(calls, serde_json::json!([]), "refused INVITEs make no call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_the_answer_and_bye_from_the_gateway() {
    let sip = sip::start(RULES, &[("GATEWAY__SIP__ANSWER_DELAY", "3s")]).await;
    let cancelled = scenario(&[
        invite_failing(&offer(), ""),
        "<recv response=\"100\" optional=\"true\" response_txn=\"invite\"/>\n<recv response=\"180\" response_txn=\"invite\"/>\n".into(),
        pause(300),
        cancel(),
    ]);
    assert_ok(
        sip.sipp("cancel", &cancelled, "100", &[])
            .finish(Duration::from_secs(20)),
    );
    let call = sip.call_to("100", |c| c["state"] == "ended").await;
    assert_eq!(call["sipStatus"], 487);
    assert_eq!(call["reason"], "cancelled by the caller");
    assert!(call["codec"].is_null(), "never answered");

    let hung_up = scenario(&[
        invite(&offer(), ""),
        final_response(200, ""),
        ack(false, ""),
        expect_bye(),
    ]);
    let phone = sip.sipp("bye", &hung_up, "100", &[]);
    let call = sip.call_to("100", |c| c["state"] == "answered").await;
    let id = call["id"].as_str().unwrap();
    let (_, session) = sip.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["kind"], "sip-call");
    assert_eq!(
        session["restart_policy"], "never",
        "a phone call is never restarted: {session}"
    );
    let (status, _) = sip
        .send(reqwest::Method::DELETE, &format!("/v1/calls/{id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_ok(phone.finish(Duration::from_secs(20)));
    let ended = sip.hook("call.ended", |d| d["callId"] == id).await;
    assert_eq!(ended["data"]["reason"], "ended by the gateway");
    let (status, _) = sip
        .send(reqwest::Method::DELETE, &format!("/v1/calls/{id}"), None)
        .await;
    assert_eq!(status, 409, "an ended call cannot be hung up again");
    let (status, _) = sip
        .send(reqwest::Method::DELETE, "/v1/calls/s_0000000000000000", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvite_holds_and_resumes_and_an_invite_without_sdp_gets_its_answer_in_the_ack() {
    let sip = sip::start(RULES, &[]).await;
    let hold = sip::sdp(&[PCMU, EVENTS], "[media_port]", "sendonly");
    let resume = offer();
    let steps = scenario(&[
        invite(&offer(), ""),
        final_response(200, ""),
        ack(false, ""),
        pause(500),
        sip::reinvite_expecting(&hold, "a=recvonly"),
        pause(1_500),
        sip::reinvite_expecting(&resume, "a=sendrecv"),
        pause(1_500),
        in_dialog("BYE", "", "", 200),
    ]);
    let phone = sip.sipp("hold", &steps, "100", &[]);
    sip.call_to("100", |c| c["state"] == "on-hold").await;
    sip.call_to("100", |c| {
        c["state"] == "answered" && c["stats"]["packetsToPhone"].as_u64() > Some(0)
    })
    .await;
    assert_ok(phone.finish(Duration::from_secs(20)));

    // Late offer: no SDP in the INVITE, our offer in the 200, the phone's answer in the ACK.
    let phone_media = PhoneMedia::bind().await;
    let answer = sip::sdp(&[PCMU, EVENTS], &phone_media.port().to_string(), "sendrecv");
    let moved_media = PhoneMedia::bind().await;
    let moved = sip::sdp(&[PCMU, EVENTS], &moved_media.port().to_string(), "sendrecv");
    let late = scenario(&[
        invite("", ""),
        "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"180\" optional=\"true\"/>\n\
         <recv response=\"200\" rrs=\"true\"><action><ereg regexp=\"m=audio [0-9]+ RTP/AVP 96 9 0 8 101\" search_in=\"body\" check_it=\"true\" assign_to=\"offer\"/>\
         <log message=\"[$offer]\"/></action></recv>\n"
            .into(),
        ack(false, &answer),
        pause(3_000),
        // A re-INVITE without SDP: the gateway offers again in the 200, the phone answers in the ACK with a
        // new media port.
        in_dialog("INVITE", "", "", 200).replacen(&ack(false, ""), &ack(false, &moved), 1),
        pause(3_000),
        in_dialog("BYE", "", "", 200),
    ]);
    let phone = sip.sipp("late", &late, "100", &[]);
    let call = sip
        .call_to("100", |c| c["state"] == "answered" && c["codec"] == "PCMU")
        .await;
    let (pcm, _) = phone_media.receive(true, Duration::from_secs(1)).await;
    assert!(
        pcm.len() >= 6_400,
        "the gateway sends to the address of the ACK's answer: {} samples",
        pcm.len()
    );
    // (The re-INVITE comes 3 s after the call is answered.)
    let (pcm, _) = moved_media.receive(true, Duration::from_secs(5)).await;
    assert!(
        pcm.len() >= 6_400,
        "after the re-INVITE, the gateway sends where the new ACK's answer says: {} samples",
        pcm.len()
    );
    assert_ok(phone.finish(Duration::from_secs(20)));
    assert_eq!(call["direction"], "inbound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_authentication_and_source_allowlists() {
    let config =
        format!("{RULES}\n[[sip.trunks]]\nname = \"carrier\"\nusername = \"gw\"\npassword = \"s3cret-pass\"\n");
    let sip = sip::start(&config, &[]).await;
    let authed = scenario(&[
        invite_failing(&offer(), ""),
        "<recv response=\"100\" optional=\"true\" response_txn=\"invite\"/>\n<recv response=\"401\" auth=\"true\" response_txn=\"invite\"/>\n".into(),
        ack(true, ""),
        invite(&offer(), "[authentication username=gw password=s3cret-pass]\n"),
        final_response(200, ""),
        ack(false, ""),
        pause(500),
        in_dialog("BYE", "", "", 200),
    ]);
    assert_ok(sip.sipp("auth-ok", &authed, "100", &[]).finish(Duration::from_secs(20)));
    let call = sip.call_to("100", |c| c["state"] == "ended").await;
    assert_eq!(call["trunk"], "carrier");
    let wrong = scenario(&[
        invite_failing(&offer(), ""),
        "<recv response=\"100\" optional=\"true\" response_txn=\"invite\"/>\n<recv response=\"401\" auth=\"true\" response_txn=\"invite\"/>\n".into(),
        ack(true, ""),
        invite_failing(&offer(), "[authentication username=gw password=wrong]\n"),
        final_response(403, ""),
        ack(true, ""),
    ]);
    assert_ok(
        sip.sipp("auth-wrong", &wrong, "100", &[])
            .finish(Duration::from_secs(20)),
    );
    // The password never reaches the log.
    assert!(sip.setup.gateway.log.iter().all(|l| !l.contains("s3cret-pass")));
    drop(sip);

    let fenced = format!("{RULES}\n[[sip.trunks]]\nname = \"pbx\"\nallow = [\"10.0.0.0/8\"]\n");
    let sip = sip::start(&fenced, &[]).await;
    let refused = scenario(&[invite_failing(&offer(), ""), final_response(403, ""), ack(true, "")]);
    assert_ok(sip.sipp("fenced", &refused, "100", &[]).finish(Duration::from_secs(20)));
    let (_, calls) = sip.get("/v1/calls").await;
    assert_eq!(calls, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timers_are_granted_refreshed_and_enforced() {
    let sip = sip::start(RULES, &[("GATEWAY__SIP__MIN_SESSION_EXPIRES", "2s")]).await;
    let timer = "Session-Expires: 3;refresher=uac\nSupported: timer\n";
    let granted = format!(
        "{}<recv response=\"200\" rtd=\"true\" rrs=\"true\"><action><ereg regexp=\"Session-Expires: 3;refresher=uac\" \
         search_in=\"msg\" check_it=\"true\" assign_to=\"se\"/><log message=\"[$se]\"/></action></recv>\n",
        sip::provisional(false)
    );
    let steps = scenario(&[
        invite(&offer(), timer),
        granted,
        ack(false, ""),
        pause(1_500),
        // The caller refreshes once, then stops refreshing: the gateway ends the call.
        sip::reinvite_expecting(&offer(), "a=sendrecv"),
        expect_bye(),
    ]);
    let started = std::time::Instant::now();
    assert_ok(sip.sipp("timer", &steps, "100", &[]).finish(Duration::from_secs(20)));
    assert!(
        started.elapsed() >= Duration::from_millis(4_000),
        "ended before the refreshed interval ran out"
    );
    let call = sip.call_to("100", |c| c["state"] == "ended").await;
    assert_eq!(call["reason"], "session timer expired without a refresh");

    let small = scenario(&[
        invite_failing(&offer(), "Session-Expires: 1\n"),
        format!(
            "{}<recv response=\"422\" response_txn=\"invite\"><action><ereg regexp=\"Min-SE: 2\" search_in=\"msg\" \
                 check_it=\"true\" assign_to=\"min\"/><log message=\"[$min]\"/></action></recv>\n",
            sip::provisional(true)
        ),
        ack(true, ""),
    ]);
    assert_ok(
        sip.sipp("timer-small", &small, "100", &[])
            .finish(Duration::from_secs(20)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gateway_refuses_calls_with_503() {
    let config = format!("{RULES}\n[[sip.trunks]]\nname = \"out\"\naddress = \"127.0.0.1:9\"\n");
    let sip = sip::start(&config, &[("GATEWAY__SUPERVISOR__CAPACITY", "1")]).await;
    let first = scenario(&[
        invite(&offer(), ""),
        final_response(200, ""),
        ack(false, ""),
        expect_bye(),
    ]);
    let phone = sip.sipp("first", &first, "100", &[]);
    let call = sip.call_to("100", |c| c["state"] == "answered").await;
    let second = scenario(&[invite_failing(&offer(), ""), final_response(503, ""), ack(true, "")]);
    assert_ok(sip.sipp("second", &second, "100", &[]).finish(Duration::from_secs(20)));
    let response = sip
        .setup
        .http
        .post(format!("{}/v1/calls", sip.setup.gateway.api))
        .bearer_auth(common::rtmp::TOKEN)
        .json(&serde_json::json!({"to": "+15550000", "trunk": "out", "room": "r1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503, "dial-out over capacity");
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(sip.hang_up(&call).await, 204);
    assert_ok(phone.finish(Duration::from_secs(20)));
    let (_, calls) = sip.get("/v1/calls").await;
    assert_eq!(
        calls.as_array().unwrap().len(),
        1,
        "refused calls are not listed: {calls}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_phone_is_hung_up_after_the_rtp_timeout_but_not_while_on_hold() {
    let sip = sip::start(RULES, &[("GATEWAY__SIP__RTP_TIMEOUT", "3s")]).await;
    // sipp sends no RTP at all. First it holds for 4 s (longer than the timeout): the call stays; after it
    // resumes, the silence ends the call.
    let hold = sip::sdp(&[PCMU, EVENTS], "[media_port]", "sendonly");
    let steps = scenario(&[
        invite(&offer(), ""),
        final_response(200, ""),
        ack(false, ""),
        pause(300),
        sip::reinvite_expecting(&hold, "a=recvonly"),
        pause(4_000),
        sip::reinvite_expecting(&offer(), "a=sendrecv"),
        sip::expect_bye_with("Reason: SIP;cause=408"),
    ]);
    let started = std::time::Instant::now();
    assert_ok(sip.sipp("silent", &steps, "100", &[]).finish(Duration::from_secs(20)));
    assert!(started.elapsed() >= Duration::from_secs(7), "hung up while on hold");
    let call = sip.call_to("100", |c| c["state"] == "ended").await;
    assert_eq!(call["sipStatus"], 408);
    assert_eq!(call["reason"], "no RTP from the phone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_over_tls_answers_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::self_signed_cert(dir.path());
    // The TLS listener binds when the endpoint serves, so its port is chosen here.
    let port = sip::free_even_port();
    let listen = format!("127.0.0.1:{port}");
    let sip = sip::start(
        RULES,
        &[
            ("GATEWAY__SIP__TLS_LISTEN", listen.as_str()),
            ("GATEWAY__SIP__TLS_CERT", cert.to_str().unwrap()),
            ("GATEWAY__SIP__TLS_KEY", key.to_str().unwrap()),
        ],
    )
    .await;
    let options =
        sip::raw_request("OPTIONS", &listen, "127.0.0.1:9", "tls1", "tester", "").replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    // openssl s_client is the TLS peer: it sends the request and prints what comes back.
    let mut client = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &listen, "-quiet", "-servername", "localhost"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_client");
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let mut reply = Vec::new();
    let exchange = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline && !String::from_utf8_lossy(&reply).contains("\r\n\r\n") {
            // The request is re-sent until the handshake is done and an answer comes.
            let _ = stdin.write_all(options.as_bytes()).await;
            let mut buf = [0u8; 2048];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), stdout.read(&mut buf)).await {
                reply.extend_from_slice(&buf[..n]);
            }
        }
    };
    exchange.await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("SIP/2.0 200"), "no 200 over TLS: {text:?}");
    assert!(text.contains("Via: SIP/2.0/TLS"), "{text}");
    drop(sip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatch_webhook_places_or_refuses_calls_without_a_rule() {
    async fn dispatch(axum::Json(request): axum::Json<serde_json::Value>) -> axum::Json<serde_json::Value> {
        axum::Json(match request["to"].as_str() {
            Some("777") => {
                serde_json::json!({"room": "hooked", "participantName": "Caller 777", "metadata": {"crm": 42}})
            }
            _ => serde_json::json!({"reject": 486}),
        })
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/dispatch", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/dispatch", axum::routing::post(dispatch));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sip = sip::start(RULES, &[("GATEWAY__SIP__DISPATCH_URL", url.as_str())]).await;
    let placed = scenario(&[
        invite(&offer(), ""),
        final_response(200, ""),
        ack(false, ""),
        pause(1_500),
        in_dialog("BYE", "", "", 200),
    ]);
    let phone = sip.sipp("hooked", &placed, "777", &[]);
    let call = sip.call_to("777", |c| c["state"] == "answered").await;
    assert_eq!(call["room"], "hooked");
    let (_, room) = sip.get("/v1/rooms/hooked").await;
    let caller = &room["participants"][0];
    assert_eq!(caller["name"], "Caller 777", "{room}");
    assert_eq!(caller["metadata"]["crm"], 42);
    assert_ok(phone.finish(Duration::from_secs(20)));
    let busy = scenario(&[invite_failing(&offer(), ""), final_response(486, ""), ack(true, "")]);
    assert_ok(sip.sipp("busy", &busy, "555", &[]).finish(Duration::from_secs(20)));
    // A rule still wins over the webhook.
    let ruled = scenario(&[
        invite(&offer(), ""),
        final_response(200, ""),
        ack(false, ""),
        in_dialog("BYE", "", "", 200),
    ]);
    assert_ok(sip.sipp("ruled", &ruled, "100", &[]).finish(Duration::from_secs(20)));
    assert_eq!(sip.call_to("100", |c| c["state"] == "ended").await["room"], "r1");
}
