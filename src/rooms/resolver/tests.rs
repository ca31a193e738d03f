use super::*;
use crate::error::ErrorClass;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SESSION: &str = "e017a2629c754fedc1f7d8587e06d126";
const WAIT: Duration = Duration::from_secs(10);

/// A webhook on 127.0.0.1 answering its n-th call with `replies[n]` (the last one repeats); stopped on drop.
struct Hook {
    url: String,
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Hook {
    async fn start(replies: Vec<(u16, serde_json::Value)>) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/resolve", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(replies);
        let server = {
            let (calls, bodies) = (calls.clone(), bodies.clone());
            tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let (calls, bodies, replies) = (calls.clone(), bodies.clone(), replies.clone());
                    connections.spawn(async move {
                        let _ = answer(stream, &calls, &bodies, &replies).await;
                    });
                }
            })
        };
        Hook {
            url,
            calls,
            bodies,
            server,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn resolver(&self) -> Resolver {
        Resolver::new(Some(self.url.clone())).unwrap()
    }
}

/// Reads one HTTP/1.1 request, records its JSON body, writes the scripted reply and closes.
async fn answer(
    mut stream: TcpStream,
    calls: &AtomicUsize,
    bodies: &Mutex<Vec<serde_json::Value>>,
    replies: &[(u16, serde_json::Value)],
) -> std::io::Result<()> {
    let mut request: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_len = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&request[..head_len]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < head_len + body_len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let body: serde_json::Value = serde_json::from_slice(&request[head_len..head_len + body_len]).unwrap_or_default();
    bodies.lock().unwrap().push(body);
    let n = calls.fetch_add(1, Ordering::SeqCst);
    let (status, reply) = &replies[n.min(replies.len() - 1)];
    let reply = reply.to_string();
    let response = format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{reply}",
        reply.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn ensure(resolver: &Resolver, rooms: &Rooms, room: &str) -> Result<(), RoomError> {
    tokio::time::timeout(WAIT, resolver.ensure(rooms, room))
        .await
        .expect("ensure did not finish")
}

fn alice_reply() -> serde_json::Value {
    json!({"participants": [{"id": "alice", "sessionId": SESSION, "source": "api",
                             "tracks": [{"trackName": "mic", "kind": "audio"}]}]})
}

#[tokio::test]
async fn concurrent_callers_share_one_call_and_the_answer_is_kept() {
    let hook = Hook::start(vec![(200, alice_reply())]).await;
    let resolver = hook.resolver();
    assert!(resolver.is_configured());
    let rooms = Rooms::new();
    let mut subscription = rooms.subscribe("standup");
    let (first, second) = tokio::join!(
        ensure(&resolver, &rooms, "standup"),
        ensure(&resolver, &rooms, "standup")
    );
    first.unwrap();
    second.unwrap();
    assert_eq!(hook.calls(), 1);
    assert_eq!(*hook.bodies.lock().unwrap(), [json!({"room": "standup"})]);

    let snapshot = rooms.get("standup").unwrap();
    assert_eq!(snapshot.participants.len(), 1);
    let alice = &snapshot.participants[0];
    assert_eq!(
        (alice.id.as_str(), alice.source),
        ("alice", ParticipantSource::Resolver)
    );
    assert_eq!(alice.tracks[0].track_name, "mic");
    let joined = tokio::time::timeout(WAIT, subscription.recv()).await.unwrap().unwrap();
    assert!(matches!(
        joined.kind,
        crate::rooms::RoomEventKind::ParticipantJoined { .. }
    ));

    // Everyone left: the room is unknown again, but the webhook's answer is kept.
    rooms.remove_participant("standup", "alice").unwrap();
    ensure(&resolver, &rooms, "standup").await.unwrap();
    assert_eq!(hook.calls(), 1);
    assert!(rooms.get("standup").is_none());

    resolver.forget("standup");
    ensure(&resolver, &rooms, "standup").await.unwrap();
    assert_eq!(hook.calls(), 2, "a forgotten room is asked about again");
}

#[tokio::test]
async fn a_404_is_an_empty_room_and_is_kept() {
    let hook = Hook::start(vec![(404, json!({"error": "no such room"}))]).await;
    let resolver = hook.resolver();
    let rooms = Rooms::new();
    ensure(&resolver, &rooms, "empty").await.unwrap();
    assert!(rooms.get("empty").is_none());
    ensure(&resolver, &rooms, "empty").await.unwrap();
    assert_eq!(hook.calls(), 1);
    ensure(&resolver, &rooms, "another").await.unwrap();
    assert_eq!(hook.calls(), 2, "each room is asked about");
}

#[tokio::test]
async fn a_failure_is_not_kept() {
    let hook = Hook::start(vec![(500, json!({})), (200, alice_reply())]).await;
    let resolver = hook.resolver();
    let rooms = Rooms::new();
    let error = ensure(&resolver, &rooms, "r").await.unwrap_err();
    assert!(matches!(error, RoomError::Resolver(_)), "{error:?}");
    assert_eq!(error.class(), ErrorClass::Upstream);
    assert!(
        !error.to_string().contains(&hook.url),
        "the URL stays out of errors: {error}"
    );
    assert!(rooms.get("r").is_none());
    ensure(&resolver, &rooms, "r").await.unwrap();
    assert_eq!(hook.calls(), 2);
    assert_eq!(rooms.get("r").unwrap().participants.len(), 1);
}

#[tokio::test]
async fn an_unusable_reply_changes_nothing() {
    let bad = json!({"participants": [
        {"id": "alice", "sessionId": SESSION},
        {"id": "bob", "sessionId": "not-a-session"}
    ]});
    let hook = Hook::start(vec![(200, bad), (200, json!({"participants": "nope"}))]).await;
    let resolver = hook.resolver();
    let rooms = Rooms::new();
    let error = ensure(&resolver, &rooms, "r").await.unwrap_err();
    assert!(error.to_string().contains("participants[1].sessionId"), "{error}");
    assert!(rooms.get("r").is_none(), "all or nothing");
    let error = ensure(&resolver, &rooms, "r").await.unwrap_err();
    assert!(matches!(error, RoomError::Resolver(_)), "{error:?}");
    assert_eq!(hook.calls(), 2);
}

#[tokio::test]
async fn known_rooms_bad_names_and_no_webhook_make_no_call() {
    let hook = Hook::start(vec![(200, alice_reply())]).await;
    let resolver = hook.resolver();
    let rooms = Rooms::new();
    rooms
        .upsert_participant("known", Participant::new("bob", SESSION, ParticipantSource::Api))
        .unwrap();
    ensure(&resolver, &rooms, "known").await.unwrap();
    assert_eq!(rooms.get("known").unwrap().participants.len(), 1);
    let error = ensure(&resolver, &rooms, "bad name").await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::BadInput);
    assert_eq!(hook.calls(), 0);

    let unconfigured = Resolver::new(None).unwrap();
    assert!(!unconfigured.is_configured());
    ensure(&unconfigured, &rooms, "elsewhere").await.unwrap();
    assert!(rooms.get("elsewhere").is_none());
    assert!(!Resolver::new(Some(String::new())).unwrap().is_configured());
}
