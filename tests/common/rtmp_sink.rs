//! A minimal RTMP destination for egress tests: rml_rtmp's server session over tokio on loopback, with an 8 KiB
//! receive buffer so that a connection that stops reading (frozen, as a hung server) pushes back on the
//! sender within seconds. It accepts every publish and records what each connection received.

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One media message: video or audio, its timestamp and first two bytes (FLV frame type and packet type), and
/// when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub video: bool,
    pub ms: u32,
    pub head: [u8; 2],
    pub at: Instant,
}

/// What the sink saw: the messages of each connection, in order.
#[derive(Debug, Default)]
pub struct Seen {
    pub connections: Vec<Vec<Message>>,
    /// Connections (by index) that stop reading while they are listed here.
    pub frozen: Vec<usize>,
    /// Connections (by index) the sink closes (as a restarting server would) once listed here.
    pub closed: Vec<usize>,
    /// When each connection was accepted.
    pub accepted: Vec<Instant>,
}

impl Seen {
    /// The video messages connection number `connection` has received so far.
    pub fn videos(&self, connection: usize) -> usize {
        self.connections
            .get(connection)
            .map_or(0, |c| c.iter().filter(|m| m.video).count())
    }
}

/// The running sink (stops when dropped).
pub struct RtmpSink {
    pub port: u16,
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RtmpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RtmpSink {
    pub async fn start() -> RtmpSink {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(8192).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut seen = shared.lock().unwrap();
                    seen.connections.push(Vec::new());
                    seen.accepted.push(Instant::now());
                    seen.connections.len() - 1
                };
                tokio::spawn(serve(stream, index, shared.clone()));
            }
        });
        RtmpSink { port, seen, task }
    }

    pub fn url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.port)
    }

    /// Waits (bounded by `within`) until `check` holds for what the sink has seen.
    pub async fn until(&self, within: std::time::Duration, what: &str, check: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !check(&self.seen.lock().unwrap()) {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The video messages connection number `connection` has received so far.
    pub fn videos(&self, connection: usize) -> usize {
        self.seen.lock().unwrap().videos(connection)
    }
}

async fn serve(mut stream: TcpStream, index: usize, seen: Arc<Mutex<Seen>>) {
    let mut handshake = Handshake::new(PeerType::Server);
    let mut session: Option<ServerSession> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while seen.lock().unwrap().frozen.contains(&index) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if seen.lock().unwrap().closed.contains(&index) {
            return;
        }
        let Ok(n) = stream.read(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        let mut out = Vec::new();
        let mut input = buf[..n].to_vec();
        if session.is_none() {
            match handshake.process_bytes(&input) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    out = response_bytes;
                    input.clear();
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    out = response_bytes;
                    let (new, initial) = ServerSession::new(ServerSessionConfig::new()).unwrap();
                    session = Some(new);
                    results(session.as_mut().unwrap(), initial, index, &seen, &mut out);
                    input = remaining_bytes;
                }
                Err(_) => return,
            }
        }
        if let (Some(s), false) = (session.as_mut(), input.is_empty()) {
            let Ok(produced) = s.handle_input(&input) else { return };
            results(s, produced, index, &seen, &mut out);
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn results(
    session: &mut ServerSession,
    results_in: Vec<ServerSessionResult>,
    index: usize,
    seen: &Mutex<Seen>,
    out: &mut Vec<u8>,
) {
    for result in results_in {
        match result {
            ServerSessionResult::OutboundResponse(packet) => out.extend(packet.bytes),
            ServerSessionResult::RaisedEvent(event) => {
                let answer = match &event {
                    ServerSessionEvent::ConnectionRequested { request_id, .. }
                    | ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                        session.accept_request(*request_id).ok()
                    }
                    ServerSessionEvent::VideoDataReceived { data, timestamp, .. }
                    | ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                        let video = matches!(event, ServerSessionEvent::VideoDataReceived { .. });
                        let head = [data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0)];
                        seen.lock().unwrap().connections[index].push(Message {
                            video,
                            ms: timestamp.value,
                            head,
                            at: Instant::now(),
                        });
                        None
                    }
                    _ => None,
                };
                if let Some(answer) = answer {
                    results(session, answer, index, seen, out);
                }
            }
            ServerSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
}
