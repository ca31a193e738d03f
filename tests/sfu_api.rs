//! Calls API conformance of the embedded SFU: every endpoint and error the contract names, answered with
//! JSON, and no request that can break the server.

use serde_json::{Value, json};
use sfu_gateway::config::EmbeddedSfuConfig;
use sfu_gateway::sfu::embedded::{EmbeddedSfu, MAX_BODY_BYTES};
use std::time::{Duration, Instant};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

struct Api {
    sfu: EmbeddedSfu,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        let config = EmbeddedSfuConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            udp: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        let sfu = EmbeddedSfu::start(config).await.expect("embedded sfu");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Api { sfu, http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/apps/{}{path}", self.sfu.api_url(), self.sfu.app_id())
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(self.sfu.app_secret().expose());
        if let Some(body) = body {
            request = request.body(body.to_string()); // no Content-Type, like the official browser examples
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("reply is not JSON ({status}): {text:?}"));
        (status, value)
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn new_session(&self) -> String {
        let (status, body) = self.post("/sessions/new", None).await;
        assert_eq!(status, 201, "{body}");
        let id = body["sessionId"].as_str().expect("sessionId").to_string();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        id
    }
}

/// A browser-like offer from a str0m peer: one sendonly m-line per kind. Returns the SDP and the mids.
fn client_offer(kinds: &[MediaKind]) -> (String, Vec<String>) {
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:40000".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    let mids: Vec<String> = kinds
        .iter()
        .map(|kind| api.add_media(*kind, Direction::SendOnly, None, None, None).to_string())
        .collect();
    let (offer, _pending) = api.apply().expect("offer");
    (offer.to_sdp_string(), mids)
}

async fn publish(api: &Api, session: &str, names: &[&str]) -> (Value, Vec<String>) {
    let kinds: Vec<MediaKind> = names.iter().map(|_| MediaKind::Audio).collect();
    let (sdp, mids) = client_offer(&kinds);
    let tracks: Vec<Value> = names
        .iter()
        .zip(&mids)
        .map(|(name, mid)| json!({"location": "local", "mid": mid, "trackName": name}))
        .collect();
    let (status, body) = api
        .post(
            &format!("/sessions/{session}/tracks/new"),
            Some(json!({"sessionDescription": {"type": "offer", "sdp": sdp}, "tracks": tracks})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (body, mids)
}

#[tokio::test]
async fn auth_app_and_session_errors() {
    let api = Api::start().await;
    let wrong = api
        .http
        .post(api.url("/sessions/new"))
        .bearer_auth("not-the-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["errorCode"], "unauthorized");
    let missing = api.http.post(api.url("/sessions/new")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 401);

    let unknown_app = api
        .http
        .post(format!("{}/apps/0000/sessions/new", api.sfu.api_url()))
        .bearer_auth(api.sfu.app_secret().expose())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_app.status().as_u16(), 404);

    for session in ["0123456789abcdef0123456789abcdef", "not-a-session", "..%2F.."] {
        let (status, body) = api
            .send(reqwest::Method::GET, &format!("/sessions/{session}"), None)
            .await;
        assert_eq!(
            (status, body["errorCode"].as_str()),
            (410, Some("session_error")),
            "{session}"
        );
        let (status, _) = api
            .post(&format!("/sessions/{session}/tracks/new"), Some(json!({})))
            .await;
        assert_eq!(status, 410);
    }

    // The same API without the /v1 prefix (as Orange calls it).
    let base = api.sfu.api_url().trim_end_matches("/v1").to_string();
    let response = api
        .http
        .post(format!("{base}/apps/{}/sessions/new", api.sfu.app_id()))
        .bearer_auth(api.sfu.app_secret().expose())
        .header("content-type", "text/plain;charset=UTF-8")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
}

#[tokio::test]
async fn cors_preflight_on_every_path() {
    let api = Api::start().await;
    for path in [
        "/sessions/new",
        "/sessions/0123456789abcdef0123456789abcdef/tracks/new",
        "/anything",
    ] {
        let response = api
            .http
            .request(reqwest::Method::OPTIONS, api.url(path))
            .header("origin", "http://localhost:3000")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], "http://localhost:3000");
        assert!(
            headers["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("authorization")
        );
        assert!(
            headers["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("PUT")
        );
    }
    let response = api
        .http
        .post(api.url("/sessions/new"))
        .header("origin", "http://localhost:3000")
        .bearer_auth(api.sfu.app_secret().expose())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["vary"], "Origin");
}

#[tokio::test]
async fn publish_answer_is_ice_lite_passive_bundled() {
    let api = Api::start().await;
    let session = api.new_session().await;
    let (body, mids) = publish(&api, &session, &["mic", "mic2"]).await;
    assert_eq!(body["requiresImmediateRenegotiation"], false);
    assert_eq!(body["sessionDescription"]["type"], "answer");
    let sdp = body["sessionDescription"]["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=ice-lite"), "{sdp}");
    assert!(sdp.contains("a=setup:passive"), "{sdp}");
    assert!(sdp.contains("a=group:BUNDLE"), "{sdp}");
    assert!(
        sdp.contains(&format!("127.0.0.1 {} typ host", api.sfu.udp_addr().port())),
        "{sdp}"
    );
    assert_eq!(body["tracks"][0]["mid"], mids[0].as_str());
    assert_eq!(body["tracks"][0]["trackName"], "mic");
    assert_eq!(body["tracks"][1]["trackName"], "mic2");

    let (status, got) = api
        .send(reqwest::Method::GET, &format!("/sessions/{session}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["tracks"][0]["status"], "active");
    assert_eq!(got["tracks"][0]["location"], "local");

    // The same name twice in one session: item error for the second, the first stays.
    let other = api.new_session().await;
    let (body, _) = publish(&api, &other, &["cam", "cam"]).await;
    assert!(body["tracks"][0]["errorCode"].is_null(), "{body}");
    assert_eq!(body["tracks"][1]["errorCode"], "repeated_local_track_error");
}

#[tokio::test]
async fn pulling_a_silent_track_is_an_item_error_with_empty_mid() {
    let api = Api::start().await;
    let publisher = api.new_session().await;
    publish(&api, &publisher, &["mic"]).await;
    let subscriber = api.new_session().await;
    let (status, body) = api
        .post(
            &format!("/sessions/{subscriber}/tracks/new"),
            Some(json!({"tracks": [
                {"location": "remote", "sessionId": publisher, "trackName": "mic"},
                {"location": "remote", "sessionId": publisher, "trackName": "nope"}
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requiresImmediateRenegotiation"], false);
    for item in body["tracks"].as_array().unwrap() {
        assert_eq!(item["errorCode"], "not_found_track_error", "{item}");
        assert_eq!(item["mid"], "");
        assert_eq!(item["sessionId"], publisher.as_str());
    }
}

#[tokio::test]
async fn overlapping_mutation_is_406_and_renegotiate_completes_it() {
    let api = Api::start().await;
    let session = api.new_session().await;
    let (status, body) = api
        .post(
            &format!("/sessions/{session}/tracks/new"),
            Some(
                json!({"tracks": [{"location": "local", "trackName": "ai-voice", "kind": "audio",
                                    "bidirectionalMediaStream": true}]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requiresImmediateRenegotiation"], true);
    let offer = body["sessionDescription"]["sdp"].as_str().unwrap().to_string();
    assert_eq!(body["sessionDescription"]["type"], "offer");
    assert!(
        offer.contains("a=setup:actpass") && offer.contains("a=sendrecv"),
        "{offer}"
    );

    let (status, body) = api
        .post(
            &format!("/sessions/{session}/tracks/new"),
            Some(json!({"tracks": [{"location": "local", "trackName": "other", "kind": "audio"}]})),
        )
        .await;
    assert_eq!(status, 406, "{body}");
    assert!(body["errorCode"].is_string());
    let (status, _) = api
        .put(
            &format!("/sessions/{session}/tracks/close"),
            json!({"tracks": [{"mid": "0"}], "force": true}),
        )
        .await;
    assert_eq!(status, 406);

    // Answer with a str0m client, then the session is stable again.
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:40001".parse().unwrap(), "udp").unwrap());
    let answer = rtc
        .sdp_api()
        .accept_offer(str0m::change::SdpOffer::from_sdp_string(&offer).unwrap())
        .unwrap();
    let (status, body) = api
        .put(
            &format!("/sessions/{session}/renegotiate"),
            json!({"sessionDescription": {"type": "answer", "sdp": answer.to_sdp_string()}}),
        )
        .await;
    assert_eq!((status, body.clone()), (200, json!({})), "{body}");
    let (status, body) = api
        .put(
            &format!("/sessions/{session}/renegotiate"),
            json!({"sessionDescription": {"type": "answer", "sdp": answer.to_sdp_string()}}),
        )
        .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (400, Some("invalid_session_description"))
    );
    let (_, got) = api
        .send(reqwest::Method::GET, &format!("/sessions/{session}"), None)
        .await;
    assert_eq!(got["tracks"][0]["trackName"], "ai-voice");
}

#[tokio::test]
async fn close_twice_is_close_track_error() {
    let api = Api::start().await;
    let session = api.new_session().await;
    let (_, mids) = publish(&api, &session, &["mic"]).await;
    let close = json!({"tracks": [{"mid": mids[0]}], "force": true});
    let (status, body) = api
        .put(&format!("/sessions/{session}/tracks/close"), close.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["tracks"][0]["errorCode"].is_null(), "{body}");
    let (status, body) = api.put(&format!("/sessions/{session}/tracks/close"), close).await;
    assert_eq!(status, 200);
    assert_eq!(body["tracks"][0]["errorCode"], "close_track_error");
    let (_, got) = api
        .send(reqwest::Method::GET, &format!("/sessions/{session}"), None)
        .await;
    assert_eq!(got["tracks"][0]["status"], "inactive");
    let (status, _) = api
        .put(&format!("/sessions/{session}/tracks/close"), json!({"tracks": []}))
        .await;
    assert_eq!(status, 406);
}

#[tokio::test]
async fn malformed_input_gets_json_errors_and_never_breaks_the_server() {
    let api = Api::start().await;
    let session = api.new_session().await;
    let tracks = format!("/sessions/{session}/tracks/new");

    let response = api
        .http
        .post(api.url(&tracks))
        .bearer_auth(api.sfu.app_secret().expose())
        .body("{\"tracks\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errorCode"], "decoding_error");

    let (status, body) = api
        .post(
            &tracks,
            Some(
                json!({"sessionDescription": {"type": "offer", "sdp": "v=0\r\nthis is not sdp"},
                                   "tracks": [{"location": "local", "mid": "0", "trackName": "x"}]}),
            ),
        )
        .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (400, Some("invalid_session_description")),
        "{body}"
    );
    let (status, body) = api
        .post(
            &tracks,
            Some(json!({"sessionDescription": {"type": "answer", "sdp": "v=0"}, "tracks": []})),
        )
        .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (400, Some("invalid_session_description"))
    );

    let too_many: Vec<Value> = (0..65)
        .map(|i| json!({"location": "local", "trackName": format!("t{i}"), "kind": "audio"}))
        .collect();
    let (status, body) = api.post(&tracks, Some(json!({"tracks": too_many}))).await;
    assert_eq!((status, body["errorCode"].as_str()), (406, Some("invalid_params")));

    let mixed = json!({"tracks": [{"location": "local", "trackName": "a", "kind": "audio"},
                                  {"location": "remote", "sessionId": session, "trackName": "b"}]});
    assert_eq!(api.post(&tracks, Some(mixed)).await.0, 406);

    let oversize = "x".repeat(MAX_BODY_BYTES + 1);
    let response = api
        .http
        .post(api.url(&tracks))
        .bearer_auth(api.sfu.app_secret().expose())
        .body(oversize)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errorCode"], "payload_too_large");

    // A spray of wrong shapes at every mutation: each answered with a JSON 4xx, none with 5xx.
    let garbage = [
        json!(null),
        json!([]),
        json!("offer"),
        json!({"tracks": "x"}),
        json!({"tracks": [{"location": "sideways"}]}),
        json!({"tracks": [{}]}),
        json!({"sessionDescription": {"type": "offer"}}),
        json!({"sessionDescription": {"type": "pranswer", "sdp": ""}}),
        json!({"tracks": [{"mid": 7}], "force": "yes"}),
        json!({"sessionDescription": {"type": "offer", "sdp": "m=audio 9 RTP/AVP 0\r\n".repeat(200)}}),
    ];
    for body in garbage {
        for path in [
            tracks.clone(),
            format!("/sessions/{session}/renegotiate"),
            format!("/sessions/{session}/tracks/update"),
            format!("/sessions/{session}/tracks/close"),
            "/sessions/new".to_string(),
        ] {
            for method in [reqwest::Method::POST, reqwest::Method::PUT] {
                let response = api
                    .http
                    .request(method.clone(), api.url(&path))
                    .bearer_auth(api.sfu.app_secret().expose())
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("server still answers");
                let status = response.status().as_u16();
                let text = response.text().await.unwrap();
                assert!(status < 500, "{method} {path} {body}: {status} {text}");
                assert!(
                    serde_json::from_str::<Value>(&text).is_ok(),
                    "{method} {path}: not JSON: {text}"
                );
            }
        }
    }
    // Still serving.
    api.new_session().await;
}

#[tokio::test]
async fn silent_tracks_are_collected_and_unconnected_sessions_expire() {
    let config = EmbeddedSfuConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        udp: "127.0.0.1:0".parse().unwrap(),
        track_idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let api = Api {
        sfu: EmbeddedSfu::start(config).await.expect("embedded sfu"),
        http: reqwest::Client::new(),
    };
    let session = api.new_session().await;
    publish(&api, &session, &["mic"]).await;
    let (_, got) = api
        .send(reqwest::Method::GET, &format!("/sessions/{session}"), None)
        .await;
    assert_eq!(got["tracks"][0]["status"], "active");
    // The publisher never connects or sends: the track goes inactive, then the session is gone (410).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut saw_inactive = false;
    loop {
        let (status, got) = api
            .send(reqwest::Method::GET, &format!("/sessions/{session}"), None)
            .await;
        if status == 410 {
            assert_eq!(got["errorCode"], "session_error");
            break;
        }
        saw_inactive |= got["tracks"][0]["status"] == "inactive";
        assert!(Instant::now() < deadline, "session never expired: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_inactive, "the silent track was never reported inactive");
    let (status, _) = api
        .post(&format!("/sessions/{session}/tracks/new"), Some(json!({"tracks": []})))
        .await;
    assert_eq!(status, 410);
}
