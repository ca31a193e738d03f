//! Webhooks from the real binary: an RTMP ingest's start and end reach a receiver started by the test, each
//! once, with a valid signature; a receiver that fails at first gets the event again, and media is not held
//! up meanwhile.
//! An egress announces its failure and its state changes (degraded, active).

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::rtmp::{AAC_48K, BASELINE, Killed, Setup, ffmpeg, start_with};
use serde_json::Value;
use sfu_gateway::redact::Secret;
use sfu_gateway::webhooks::signature;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const HOOK_SECRET: &str = "webhook-signing-secret";

#[derive(Default)]
struct Received {
    /// (status answered, headers, body) of every request.
    requests: Vec<(u16, HeaderMap, Bytes)>,
}

async fn hook(State(state): State<Arc<Mutex<Received>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut received = state.lock().unwrap();
    // The first request fails, as if the receiver were down: the gateway must retry.
    let status = if received.requests.is_empty() { 503 } else { 200 };
    received.requests.push((status, headers, body));
    StatusCode::from_u16(status).unwrap()
}

/// A webhook receiver on loopback: what it got, and its URL.
async fn receiver() -> (Arc<Mutex<Received>>, String) {
    let received = Arc::new(Mutex::new(Received::default()));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (received, hook_url)
}

/// A gateway that sends its webhooks to `hook_url`, signed with [`HOOK_SECRET`], with `extra` settings.
fn start_hooked(hook_url: &str, extra: &[(&str, &str)]) -> Setup {
    let mut settings = vec![
        ("GATEWAY__WEBHOOKS__URLS", hook_url),
        ("GATEWAY__WEBHOOKS__SECRET", HOOK_SECRET),
    ];
    settings.extend_from_slice(extra);
    start_with(&settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_events_arrive_once_signed_and_retried() {
    let (received, hook_url) = receiver().await;

    let setup = start_hooked(&hook_url, &[("GATEWAY__RTMP__RECONNECT_GRACE", "1s")]);
    let ingress = setup.create_ingress("hooked").await;
    let id = ingress["id"].as_str().unwrap().to_string();
    let url = format!("rtmp://{}/live/{}", setup.rtmp, ingress["streamKey"].as_str().unwrap());
    let publisher = Killed(ffmpeg(&url, 30, BASELINE, AAC_48K));

    let wait_for = |kind: &'static str| {
        let received = received.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let delivered = received
                    .lock()
                    .unwrap()
                    .requests
                    .iter()
                    .filter(|(status, headers, _)| *status == 200 && headers["x-gateway-event"] == kind)
                    .count();
                if delivered > 0 || Instant::now() > deadline {
                    return delivered;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(
        wait_for("ingress.started").await,
        1,
        "ingress.started was not delivered"
    );
    // Media flowed while the receiver was failing.
    let live = setup.ingress(&id).await;
    assert_eq!(live["state"], "live");
    drop(publisher);
    assert_eq!(wait_for("ingress.ended").await, 1, "ingress.ended was not delivered");

    let received = received.lock().unwrap();
    let (first_status, first_headers, _) = &received.requests[0];
    assert_eq!(*first_status, 503);
    let retried = received
        .requests
        .iter()
        .filter(|(_, headers, _)| headers["x-gateway-delivery"] == first_headers["x-gateway-delivery"])
        .count();
    assert!(retried >= 2, "the failed delivery was not retried");
    for (_, headers, body) in &received.requests {
        let header = headers["x-gateway-signature"].to_str().unwrap();
        let timestamp: u64 = header
            .trim_start_matches("t=")
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            header,
            signature(&Secret::new(HOOK_SECRET.into()), timestamp, body),
            "bad signature"
        );
        let event: Value = serde_json::from_slice(body).unwrap();
        if event["type"] == "session.state_changed" {
            assert_eq!(event["data"]["kind"], "rtmp-ingress", "{event}");
            continue;
        }
        assert_eq!(event["data"]["ingressId"], id.as_str());
    }
    let ended = received
        .requests
        .iter()
        .rev()
        .find(|(s, h, _)| *s == 200 && h["x-gateway-event"] == "ingress.ended");
    let event: Value = serde_json::from_slice(&ended.unwrap().2).unwrap();
    assert_eq!(event["data"]["state"], "ended");
    assert!(!setup.gateway.log.iter().any(|l| l.contains(HOOK_SECRET)));
    setup.gateway.signal("TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_that_cannot_subscribe_reports_egress_failed() {
    let (received, hook_url) = receiver().await;
    let setup = start_hooked(&hook_url, &[]);
    let response = setup
        .http
        .post(format!("{}/v1/egresses", setup.gateway.api))
        .bearer_auth(common::rtmp::TOKEN)
        .json(&serde_json::json!({
            "tracks": [{"sessionId": "0".repeat(32), "trackName": "nope"}],
            "outputs": [{"url": "rtmp://127.0.0.1:9/live/x"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let event = loop {
        let found = received
            .lock()
            .unwrap()
            .requests
            .iter()
            .find_map(|(status, headers, body)| {
                (*status == 200 && headers["x-gateway-event"] == "egress.failed")
                    .then(|| serde_json::from_slice::<Value>(body).unwrap())
            });
        if let Some(event) = found {
            break event;
        }
        assert!(Instant::now() < deadline, "no egress.failed webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(event["data"]["egressId"], id.as_str());
    assert!(
        event["data"]["reason"].as_str().unwrap().contains("subscribe"),
        "{event}"
    );
    let egress: Value = setup
        .http
        .get(format!("{}/v1/egresses/{id}", setup.gateway.api))
        .bearer_auth(common::rtmp::TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(egress["state"], "failed", "{egress}");
    let started = received
        .lock()
        .unwrap()
        .requests
        .iter()
        .any(|(_, h, _)| h["x-gateway-event"] == "egress.started");
    assert!(!started, "an egress that never subscribed did not start");
}

/// The first event `kind` the receiver accepted: its position among the requests, and its body.
async fn accepted(received: &Mutex<Received>, kind: &str, within: Duration) -> (usize, Value) {
    let deadline = Instant::now() + within;
    loop {
        let found = received
            .lock()
            .unwrap()
            .requests
            .iter()
            .enumerate()
            .find_map(|(i, (status, headers, body))| {
                (*status == 200 && headers["x-gateway-event"] == kind)
                    .then(|| (i, serde_json::from_slice::<Value>(body).unwrap()))
            });
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < deadline, "no {kind} webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An egress announces its state changes: `egress.degraded` while an output is down (its URL shown without
/// the stream key), then `egress.active` once that destination is up and every output sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_state_changes_are_announced() {
    use common::egress::{create_egress, live_source};
    use common::nginx::NginxRtmp;
    let (received, hook_url) = receiver().await;
    let setup = start_hooked(&hook_url, &[]);
    let nginx = NginxRtmp::start();
    let (session, _publisher) = live_source(&setup, "stated", BASELINE, 2).await;
    let port = common::nginx::free_port();
    let id = create_egress(
        &setup,
        serde_json::json!({
            "tracks": [{"sessionId": session, "trackName": "stated-video"}, {"sessionId": session, "trackName": "stated-audio"}],
            "outputs": [{"url": nginx.url("good")}, {"url": format!("rtmp://127.0.0.1:{port}/live/late-secret-key")}],
            "video": {"width": 320, "height": 180, "fps": 15, "bitrateKbps": 300},
        }),
    )
    .await;
    let (degraded_at, degraded) = accepted(&received, "egress.degraded", Duration::from_secs(20)).await;
    let data = &degraded["data"];
    assert_eq!(data["egressId"], id.as_str(), "{degraded}");
    assert_eq!(data["state"], "degraded", "{degraded}");
    assert_eq!(data["outputs"][1]["state"], "reconnecting", "{degraded}");
    assert!(
        !degraded.to_string().contains("late-secret-key"),
        "the stream key reached a webhook: {degraded}"
    );
    let _late = NginxRtmp::start_on(Some(port));
    let (active_at, active) = accepted(&received, "egress.active", Duration::from_secs(40)).await;
    assert!(active_at > degraded_at, "active before degraded");
    let data = &active["data"];
    assert_eq!(data["state"], "active", "{active}");
    assert_eq!(data["outputs"][0]["state"], "active", "{active}");
    assert_eq!(data["outputs"][1]["state"], "active", "{active}");
    assert!(data["outputs"][1]["reconnects"].as_u64().unwrap() >= 1, "{active}");
}
