//! The real binary: health, auth, metrics, and SIGTERM drain / second-signal behaviour.

mod common;

use common::Gateway;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-api-token-0123";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn readyz(gateway: &Gateway) -> (u16, serde_json::Value) {
    let response = client().get(format!("{}/readyz", gateway.api)).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn create_dummy(gateway: &Gateway, body: serde_json::Value) -> String {
    let response = client()
        .post(format!("{}/v1/test/sessions", gateway.api))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let value: serde_json::Value = response.json().await.unwrap();
    value["id"].as_str().unwrap().to_string()
}

/// Polls `/readyz` (bounded) until the supervisor reports draining.
async fn wait_draining(gateway: &Gateway) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = readyz(gateway).await;
        if body["subsystems"]["supervisor"]["ready"] == false || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn env_with(drain: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GATEWAY__API__TOKEN", TOKEN.to_string()),
        ("GATEWAY__API__TEST_ROUTES", "true".to_string()),
        ("GATEWAY__SUPERVISOR__DRAIN_TIMEOUT", drain.to_string()),
    ]
}

fn start(drain: &str) -> Gateway {
    let env = env_with(drain);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gateway::start(&env)
}

#[tokio::test]
async fn health_auth_and_sessions() {
    let gateway = start("5s");
    let http = client();
    let health = http.get(format!("{}/healthz", gateway.api)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    let unauthorised = http.get(format!("{}/v1/sessions", gateway.api)).send().await.unwrap();
    assert_eq!(unauthorised.status().as_u16(), 401);
    let body: serde_json::Value = unauthorised.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = http
        .get(format!("{}/v1/sessions", gateway.api))
        .bearer_auth("test-api-token-0124")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);

    let id = create_dummy(&gateway, serde_json::json!({"drain_ms": 10})).await;
    let list = http
        .get(format!("{}/v1/sessions", gateway.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status().as_u16(), 200);
    let body: serde_json::Value = list.json().await.unwrap();
    assert_eq!(body["sessions"][0]["id"], id.as_str());
    assert_eq!(body["sessions"][0]["kind"], "egress");

    let one = http
        .get(format!("{}/v1/sessions/{id}", gateway.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = one.json().await.unwrap();
    assert_eq!(body["state"], "active");
    let missing = http
        .get(format!("{}/v1/sessions/s_0000000000000000", gateway.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let gateway = start("5s");
    create_dummy(&gateway, serde_json::json!({"drain_ms": 10})).await;
    let response = client().get(format!("{}/metrics", gateway.api)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let find = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        find("sfu_gateway_sessions", Some(("kind", "egress"))).map(|_| ()),
        Some(())
    );
    let active_egress = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sfu_gateway_sessions"
                && s.labels.get("kind") == Some("egress")
                && s.labels.get("state") == Some("active")
        })
        .expect("egress/active sample");
    assert!(matches!(active_egress.value, prometheus_parse::Value::Gauge(v) if v == 1.0));
    assert_eq!(
        find("sfu_gateway_build_info", Some(("version", env!("CARGO_PKG_VERSION")))),
        Some(1.0)
    );
    assert!(find("process_resident_memory_bytes", None).unwrap() > 1e6);
    assert!(find("process_cpu_seconds_total", None).is_some());
}

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let mut gateway = start("10s");
    let (status, before) = readyz(&gateway).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["subsystems"]["supervisor"]["ready"], true, "{before}");
    assert_eq!(before["subsystems"]["sfu"]["ready"], true, "{before}");
    let id = create_dummy(&gateway, serde_json::json!({"drain_ms": 1500})).await;

    let signalled = Instant::now();
    gateway.signal("TERM");
    let (status, body) = wait_draining(&gateway).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    let during = client()
        .get(format!("{}/v1/sessions/{id}", gateway.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let during: serde_json::Value = during.json().await.unwrap();
    assert_eq!(during["state"], "draining", "{during}");
    let refused = client()
        .post(format!("{}/v1/test/sessions", gateway.api))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"drain_ms": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    assert!(refused.headers().contains_key("retry-after"));

    let status = gateway
        .wait_exit(Duration::from_secs(10))
        .expect("exits within the drain timeout");
    let elapsed = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", gateway.log.join("\n"));
    assert!(
        elapsed >= Duration::from_millis(1400),
        "did not wait for the session: {elapsed:?}"
    );
    assert!(gateway.log.iter().any(|l| l.contains("drained cleanly")));
}

#[tokio::test]
async fn drain_timeout_stops_sessions_that_do_not_finish() {
    let mut gateway = start("1s");
    create_dummy(&gateway, serde_json::json!({})).await;
    let signalled = Instant::now();
    gateway.signal("TERM");
    let status = gateway
        .wait_exit(Duration::from_secs(8))
        .expect("exits after the drain timeout");
    assert_eq!(status.code(), Some(0));
    let elapsed = signalled.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(7),
        "{elapsed:?}"
    );
    assert!(gateway.log.iter().any(|l| l.contains("drain timeout passed")));
}

#[tokio::test]
async fn second_signal_stops_at_once() {
    for second in ["TERM", "INT"] {
        let mut gateway = start("60s");
        create_dummy(&gateway, serde_json::json!({})).await;
        gateway.signal("TERM");
        let (status, _) = wait_draining(&gateway).await;
        assert_eq!(status, 503);
        let signalled = Instant::now();
        gateway.signal(second);
        let status = gateway.wait_exit(Duration::from_secs(5)).expect("exits at once");
        assert!(signalled.elapsed() < Duration::from_secs(3));
        assert_eq!(status.code(), Some(130), "{}", gateway.log.join("\n"));
    }
}

#[tokio::test]
async fn json_logs_carry_the_session_span() {
    let mut gateway = start("5s");
    let id = create_dummy(&gateway, serde_json::json!({"drain_ms": 10})).await;
    let line = gateway.wait_for_log("session started", Duration::from_secs(5));
    assert!(line.contains(&id), "{line}");
    gateway.signal("TERM");
    let line = gateway.wait_for_log("dummy session finishing its work", Duration::from_secs(5));
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["span"]["id"], id.as_str(), "{line}");
    assert_eq!(value["span"]["kind"], "egress", "{line}");
    assert!(gateway.wait_exit(Duration::from_secs(5)).is_some());
}
