//! The real binary's `/v1/rooms` API: participants and their track changes, validation, the Server-Sent
//! Events feed of a room, and the resolver webhook called once per unknown room.

mod common;

use common::Gateway;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const TOKEN: &str = "test-api-token-rooms";
const SESSION: &str = "e017a2629c754fedc1f7d8587e06d126";
/// How long a room change may take to reach an event stream.
const EVENT_DEADLINE: Duration = Duration::from_secs(1);

fn start() -> Gateway {
    Gateway::start(&[("GATEWAY__API__TOKEN", TOKEN)])
}

/// A client of one gateway's API, with the bearer token.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(gateway: &Gateway) -> Api {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Api {
            http,
            base: gateway.api.clone(),
        }
    }

    /// Sends a request and returns the status and the JSON body (`Null` when there is none).
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("reply is not JSON ({status}): {text:?}"))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

fn alice(tracks: &[(&str, &str)]) -> Value {
    let tracks: Vec<Value> = tracks
        .iter()
        .map(|(name, kind)| json!({"trackName": name, "kind": kind}))
        .collect();
    json!({"sessionId": SESSION, "name": "Alice", "tracks": tracks})
}

fn types(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_are_registered_updated_and_removed() {
    let gateway = start();
    let api = Api::new(&gateway);

    // The id in the path wins over the body's, and the source is always `api`.
    let mut body = alice(&[("mic", "audio"), ("cam", "video")]);
    body["id"] = json!("someone-else");
    body["source"] = json!("resolver");
    let (status, reply) = api.put("/v1/rooms/r1/participants/alice", body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["participant"]["id"], "alice");
    assert_eq!(reply["participant"]["source"], "api");
    assert_eq!(types(&reply["events"]), ["participant_joined"]);
    assert_eq!(reply["events"][0]["seq"], 1);
    assert_eq!(reply["events"][0]["room"], "r1");

    let (status, list) = api.get("/v1/rooms").await;
    assert_eq!(status, 200);
    assert_eq!(list, json!({"rooms": ["r1"]}));
    let (status, room) = api.get("/v1/rooms/r1").await;
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["name"], "r1");
    assert_eq!(room["version"], 1);
    assert_eq!(room["participants"][0]["id"], "alice");
    assert_eq!(room["participants"][0]["tracks"].as_array().unwrap().len(), 2);
    let (status, participant) = api.get("/v1/rooms/r1/participants/alice").await;
    assert_eq!(status, 200);
    assert_eq!(participant["sessionId"], SESSION);
    assert_eq!(participant["name"], "Alice");

    // `cam` goes, `screen` comes: removed first, then added.
    let (status, reply) = api
        .put(
            "/v1/rooms/r1/participants/alice",
            alice(&[("mic", "audio"), ("screen", "video")]),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(types(&reply["events"]), ["track_removed", "track_added"]);
    assert_eq!(reply["events"][0]["trackName"], "cam");
    assert_eq!(reply["events"][0]["seq"], 2);
    assert_eq!(reply["events"][1]["track"]["trackName"], "screen");
    assert_eq!(reply["events"][1]["seq"], 3);
    // The same participant again changes nothing.
    let (status, reply) = api
        .put(
            "/v1/rooms/r1/participants/alice",
            alice(&[("mic", "audio"), ("screen", "video")]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply["events"], json!([]));

    let (status, _) = api.delete("/v1/rooms/r1/participants/alice").await;
    assert_eq!(status, 204);
    let (status, body) = api.get("/v1/rooms/r1/participants/alice").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = api.get("/v1/rooms/r1").await;
    assert_eq!(status, 404);
    let (status, _) = api.delete("/v1/rooms/r1/participants/alice").await;
    assert_eq!(status, 404);
    assert_eq!(api.get("/v1/rooms").await.1, json!({"rooms": []}));

    // Deleting a room makes everybody leave.
    for id in ["a", "b"] {
        let (status, _) = api.put(&format!("/v1/rooms/r2/participants/{id}"), alice(&[])).await;
        assert_eq!(status, 200);
    }
    let (status, _) = api.delete("/v1/rooms/r2").await;
    assert_eq!(status, 204);
    let (status, _) = api.get("/v1/rooms/r2").await;
    assert_eq!(status, 404);
    let (status, body) = api.delete("/v1/rooms/r2").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    // Without the token nothing is reachable.
    let anonymous = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = anonymous.get(format!("{}/v1/rooms", gateway.api)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = anonymous
        .put(format!("{}/v1/rooms/r1/participants/alice", gateway.api))
        .json(&alice(&[]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

/// Asserts a `422 invalid_field` whose message starts with `field`.
fn assert_invalid(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with(&format!("{field}: ")),
        "{message:?} should name {field}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_and_names_the_field() {
    let gateway = start();
    let api = Api::new(&gateway);

    let mut body = alice(&[]);
    body["sessionId"] = json!("not-a-session");
    let (status, reply) = api.put("/v1/rooms/r1/participants/alice", body).await;
    assert_invalid(status, &reply, "sessionId");

    let (status, reply) = api
        .put(
            "/v1/rooms/r1/participants/alice",
            alice(&[("mic", "audio"), ("", "video")]),
        )
        .await;
    assert_invalid(status, &reply, "tracks[1].trackName");

    let (status, reply) = api.put("/v1/rooms/r1/participants/bad%20id", alice(&[])).await;
    assert_invalid(status, &reply, "id");

    let long = "r".repeat(300);
    let (status, reply) = api
        .put(&format!("/v1/rooms/{long}/participants/alice"), alice(&[]))
        .await;
    assert_invalid(status, &reply, "room");
    let (status, reply) = api.get(&format!("/v1/rooms/{long}")).await;
    assert_invalid(status, &reply, "room");
    let (status, reply) = api.get("/v1/rooms/bad%20room").await;
    assert_invalid(status, &reply, "room");
    let (status, reply) = api.get("/v1/rooms/bad%20room/events").await;
    assert_invalid(status, &reply, "room");
    let (status, reply) = api.delete("/v1/rooms/bad%20room").await;
    assert_invalid(status, &reply, "room");

    let response = api
        .http
        .put(format!("{}/v1/rooms/r1/participants/alice", api.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"sessionId\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "bad_request");

    // Nothing was registered.
    assert_eq!(api.get("/v1/rooms").await.1, json!({"rooms": []}));
}

/// One Server-Sent Event.
#[derive(Debug)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
}

/// Reads SSE frames off a streaming response.
struct SseReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl SseReader {
    /// The next event (keep-alive comments skipped); panics if none is complete by `deadline`.
    async fn next(&mut self, deadline: Instant) -> SseEvent {
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_frame(&String::from_utf8(frame).expect("UTF-8 frame")) {
                    return event;
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("no complete event before the deadline")
                .expect("reading the event stream")
                .expect("the event stream ended");
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

/// Parses one frame; `None` for a frame without data (a keep-alive comment).
fn parse_frame(frame: &str) -> Option<SseEvent> {
    let mut event = String::from("message");
    let mut id = None;
    let mut data: Vec<&str> = Vec::new();
    for line in frame.lines() {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "event" => event = value.to_string(),
            "id" => id = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    let data = data.join("\n");
    let data = serde_json::from_str(&data).unwrap_or_else(|_| panic!("event data is not JSON: {data:?}"));
    Some(SseEvent { event, id, data })
}

/// Starts `change` in another task and returns the next event, which must come within [`EVENT_DEADLINE`];
/// also checks that the change was answered `expected`.
async fn event_after<F>(reader: &mut SseReader, expected: u16, change: F) -> SseEvent
where
    F: Future<Output = (u16, Value)> + Send + 'static,
{
    let deadline = Instant::now() + EVENT_DEADLINE;
    let change = tokio::spawn(change);
    let event = reader.next(deadline).await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), change)
        .await
        .expect("the change was answered")
        .unwrap();
    assert_eq!(status, expected, "{body}");
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_follows_the_room() {
    let gateway = start();
    let api = Arc::new(Api::new(&gateway));
    // No overall timeout: the stream stays open; each read has its own deadline.
    let streaming = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        streaming
            .get(format!("{}/v1/rooms/r1/events", gateway.api))
            .bearer_auth(TOKEN)
            .send(),
    )
    .await
    .expect("the event stream opened")
    .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let mut reader = SseReader {
        response,
        buffer: Vec::new(),
    };

    let snapshot = reader.next(Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data, json!({"name": "r1", "participants": [], "version": 0}));

    let put = |tracks: &'static [(&'static str, &'static str)]| {
        let api = api.clone();
        async move { api.put("/v1/rooms/r1/participants/alice", alice(tracks)).await }
    };
    let joined = event_after(&mut reader, 200, put(&[("mic", "audio")])).await;
    assert_eq!(joined.event, "participant_joined", "{joined:?}");
    assert_eq!(joined.id.as_deref(), Some("1"));
    assert_eq!(joined.data["type"], "participant_joined");
    assert_eq!(joined.data["room"], "r1");
    assert_eq!(joined.data["participant"]["id"], "alice");

    let added = event_after(&mut reader, 200, put(&[("mic", "audio"), ("cam", "video")])).await;
    assert_eq!(added.event, "track_added", "{added:?}");
    assert_eq!(added.id.as_deref(), Some("2"));
    assert_eq!(added.data["track"]["trackName"], "cam");
    assert_eq!(added.data["participantId"], "alice");

    let delete = {
        let api = api.clone();
        async move { api.delete("/v1/rooms/r1/participants/alice").await }
    };
    let left = event_after(&mut reader, 204, delete).await;
    assert_eq!(left.event, "participant_left", "{left:?}");
    assert_eq!(left.id.as_deref(), Some("3"));
    assert_eq!(left.data["participantId"], "alice");
    assert_eq!(left.data["sessionId"], SESSION);
}

/// The resolver webhook of the test: records the rooms it is asked about.
async fn resolve(
    axum::extract::State(asked): axum::extract::State<Arc<Mutex<Vec<String>>>>,
    axum::Json(request): axum::Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let room = request["room"].as_str().unwrap_or_default().to_string();
    asked.lock().unwrap().push(room.clone());
    match room.as_str() {
        "resolved" => axum::Json(json!({"participants": [{
            "id": "bob",
            "sessionId": SESSION,
            "tracks": [{"trackName": "mic", "kind": "audio"}, {"trackName": "cam", "kind": "video"}]
        }]}))
        .into_response(),
        "broken" => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_rooms_are_resolved_once_by_the_webhook() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/resolve", axum::routing::post(resolve))
        .with_state(asked.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://127.0.0.1:{port}/resolve");
    let gateway = Gateway::start(&[
        ("GATEWAY__API__TOKEN", TOKEN),
        ("GATEWAY__ROOMS__RESOLVER_URL", url.as_str()),
    ]);
    let api = Api::new(&gateway);
    let count = |room: &str| asked.lock().unwrap().iter().filter(|r| *r == room).count();

    for _ in 0..2 {
        let (status, room) = api.get("/v1/rooms/resolved").await;
        assert_eq!(status, 200, "{room}");
        assert_eq!(room["participants"][0]["id"], "bob");
        assert_eq!(room["participants"][0]["source"], "resolver");
        assert_eq!(room["participants"][0]["tracks"].as_array().unwrap().len(), 2);
    }
    assert_eq!(count("resolved"), 1);
    let (status, bob) = api.get("/v1/rooms/resolved/participants/bob").await;
    assert_eq!(status, 200);
    assert_eq!(bob["sessionId"], SESSION);
    assert_eq!(count("resolved"), 1);

    // The webhook knows nothing of this room: 404, and that answer is kept too.
    for _ in 0..2 {
        let (status, body) = api.get("/v1/rooms/empty").await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert_eq!(count("empty"), 1);

    // A failing webhook is an upstream error, and is asked again next time.
    for _ in 0..2 {
        let (status, body) = api.get("/v1/rooms/broken").await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "upstream_error");
    }
    assert_eq!(count("broken"), 2);
    server.abort();
}
