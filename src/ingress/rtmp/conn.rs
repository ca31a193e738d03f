//! One RTMP connection as a sans-IO state machine: bytes and the current time in, actions out. It wraps
//! rml_rtmp's handshake and server session, owns the deadlines (handshake, connect-to-publish, idle), and
//! turns a panic inside the RTMP library on hostile input into a closed connection.

use crate::redact::Secret;
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// Deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From TCP accept to a completed handshake.
    pub handshake: Duration,
    /// From the handshake to a publish request.
    pub publish: Duration,
    /// Longest silence while publishing.
    pub idle: Duration,
}

/// Why a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A deadline passed.
    Timeout(&'static str),
    /// The handshake bytes were not RTMP.
    BadHandshake,
    /// The RTMP messages were invalid.
    Protocol(String),
    /// The application name or the stream key was refused.
    Rejected,
    /// The publisher ended its stream.
    Unpublished,
}

/// What the I/O shell must do.
#[derive(Debug)]
pub enum Action {
    /// Write these bytes, in order.
    Send(Vec<u8>),
    /// The client asks to publish: answer with [`RtmpConn::accept`] or [`RtmpConn::reject`].
    PublishRequested {
        /// Pass back to accept/reject.
        request_id: u32,
        /// The stream key.
        key: Secret,
    },
    /// A video tag body with its timestamp (milliseconds, wrapping at 2^32).
    Video(u32, Bytes),
    /// An audio tag body with its timestamp.
    Audio(u32, Bytes),
    /// `onMetaData` of the stream.
    Metadata(serde_json::Value),
    /// Close the connection.
    Close(CloseReason),
}

enum State {
    Handshaking(Box<Handshake>),
    Session { publishing: bool },
    Closed,
}

/// The connection state machine.
pub struct RtmpConn {
    state: State,
    session: Option<ServerSession>,
    app: String,
    limits: Limits,
    deadline: Instant,
}

fn sends(results: Vec<ServerSessionResult>, out: &mut Vec<Action>) -> Vec<ServerSessionEvent> {
    let mut events = Vec::new();
    for result in results {
        match result {
            ServerSessionResult::OutboundResponse(packet) => out.push(Action::Send(packet.bytes)),
            ServerSessionResult::RaisedEvent(event) => events.push(event),
            ServerSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    events
}

impl RtmpConn {
    /// A connection accepted at `now` that publishes under application `app`.
    pub fn new(now: Instant, app: &str, limits: Limits) -> Self {
        Self {
            state: State::Handshaking(Box::new(Handshake::new(PeerType::Server))),
            session: None,
            app: app.to_string(),
            limits,
            deadline: now + limits.handshake,
        }
    }

    /// When [`RtmpConn::on_tick`] must be called if no bytes arrive.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    fn close(&mut self, reason: CloseReason, out: &mut Vec<Action>) {
        self.state = State::Closed;
        out.push(Action::Close(reason));
    }

    /// Time passed: closes the connection when its deadline is over.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if now >= self.deadline && !self.is_closed() {
            let what = match self.state {
                State::Handshaking(_) => "handshake",
                State::Session { publishing: false } => "publish request",
                _ => "idle",
            };
            self.close(CloseReason::Timeout(what), &mut out);
        }
        out
    }

    /// Bytes arrived.
    pub fn on_bytes(&mut self, now: Instant, data: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        match &mut self.state {
            State::Closed => {}
            State::Handshaking(handshake) => match handshake.process_bytes(data) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    if !response_bytes.is_empty() {
                        out.push(Action::Send(response_bytes));
                    }
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    if !response_bytes.is_empty() {
                        out.push(Action::Send(response_bytes));
                    }
                    match ServerSession::new(ServerSessionConfig::new()) {
                        Ok((session, results)) => {
                            sends(results, &mut out);
                            self.session = Some(session);
                            self.state = State::Session { publishing: false };
                            self.deadline = now + self.limits.publish;
                            if !remaining_bytes.is_empty() {
                                self.session_bytes(now, &remaining_bytes, &mut out);
                            }
                        }
                        Err(e) => self.close(CloseReason::Protocol(e.to_string()), &mut out),
                    }
                }
                Err(_) => self.close(CloseReason::BadHandshake, &mut out),
            },
            State::Session { .. } => self.session_bytes(now, data, &mut out),
        }
        out
    }

    fn session_bytes(&mut self, now: Instant, data: &[u8], out: &mut Vec<Action>) {
        let Some(session) = self.session.as_mut() else { return };
        // rml_rtmp can panic on some malformed messages: contain it to this connection.
        let results = match catch_unwind(AssertUnwindSafe(|| session.handle_input(data))) {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => return self.close(CloseReason::Protocol(e.to_string()), out),
            Err(_) => return self.close(CloseReason::Protocol("malformed RTMP message".into()), out),
        };
        if matches!(self.state, State::Session { publishing: true }) {
            self.deadline = now + self.limits.idle;
        }
        for event in sends(results, out) {
            self.event(event, out);
            if self.is_closed() {
                return;
            }
        }
    }

    fn event(&mut self, event: ServerSessionEvent, out: &mut Vec<Action>) {
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                let session = self.session.as_mut();
                let result = if app_name == self.app {
                    session.map(|s| s.accept_request(request_id))
                } else {
                    session
                        .map(|s| s.reject_request(request_id, "NetConnection.Connect.Rejected", "unknown application"))
                };
                if let Some(Ok(results)) = result {
                    sends(results, out);
                }
                if app_name != self.app {
                    self.close(CloseReason::Rejected, out);
                }
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id, stream_key, ..
            } => out.push(Action::PublishRequested {
                request_id,
                key: Secret::new(stream_key),
            }),
            ServerSessionEvent::PublishStreamFinished { .. } => self.close(CloseReason::Unpublished, out),
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                out.push(Action::Video(timestamp.value, data));
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                out.push(Action::Audio(timestamp.value, data));
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                out.push(Action::Metadata(serde_json::json!({
                    "width": metadata.video_width,
                    "height": metadata.video_height,
                    "videoCodecId": metadata.video_codec_id,
                    "frameRate": metadata.video_frame_rate,
                    "videoBitrateKbps": metadata.video_bitrate_kbps,
                    "audioCodecId": metadata.audio_codec_id,
                    "audioBitrateKbps": metadata.audio_bitrate_kbps,
                    "audioSampleRate": metadata.audio_sample_rate,
                    "audioChannels": metadata.audio_channels,
                    "encoder": metadata.encoder,
                })));
            }
            _ => {}
        }
    }

    /// Accepts a publish request.
    pub fn accept(&mut self, now: Instant, request_id: u32) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(session) = self.session.as_mut() else {
            return out;
        };
        match catch_unwind(AssertUnwindSafe(|| session.accept_request(request_id))) {
            Ok(Ok(results)) => {
                sends(results, &mut out);
                self.state = State::Session { publishing: true };
                self.deadline = now + self.limits.idle;
            }
            _ => self.close(
                CloseReason::Protocol("cannot accept the publish request".into()),
                &mut out,
            ),
        }
        out
    }

    /// Refuses a publish request with status `code` (`NetStream.Publish.BadName`, ...) and closes.
    pub fn reject(&mut self, request_id: u32, code: &str, description: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(session) = self.session.as_mut() {
            if let Ok(Ok(results)) = catch_unwind(AssertUnwindSafe(|| {
                session.reject_request(request_id, code, description)
            })) {
                sends(results, &mut out);
            }
        }
        self.close(CloseReason::Rejected, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        handshake: Duration::from_secs(5),
        publish: Duration::from_secs(10),
        idle: Duration::from_secs(10),
    };

    #[test]
    fn garbage_closes_the_connection() {
        let now = Instant::now();
        let mut conn = RtmpConn::new(now, "live", LIMITS);
        let actions = conn.on_bytes(now, &[0x47u8; 4000]); // not version 3
        assert!(matches!(actions.last(), Some(Action::Close(CloseReason::BadHandshake))));
        assert!(conn.is_closed());
        assert!(conn.on_bytes(now, b"more").is_empty());
    }

    #[test]
    fn half_handshake_times_out() {
        let now = Instant::now();
        let mut conn = RtmpConn::new(now, "live", LIMITS);
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&[0u8; 700]); // part of C1
        let actions = conn.on_bytes(now, &c0c1);
        assert!(!actions.iter().any(|a| matches!(a, Action::Close(_))));
        assert!(conn.on_tick(now + Duration::from_secs(1)).is_empty());
        let actions = conn.on_tick(now + LIMITS.handshake);
        assert!(matches!(
            actions[..],
            [Action::Close(CloseReason::Timeout("handshake"))]
        ));
    }

    #[test]
    fn a_full_client_handshake_reaches_the_session() {
        let now = Instant::now();
        let mut conn = RtmpConn::new(now, "live", LIMITS);
        let mut client = Handshake::new(PeerType::Client);
        let c0c1 = client.generate_outbound_p0_and_p1().unwrap();
        let mut from_server = Vec::new();
        for action in conn.on_bytes(now, &c0c1) {
            if let Action::Send(bytes) = action {
                from_server.extend(bytes);
            }
        }
        let HandshakeProcessResult::Completed { response_bytes, .. } = client.process_bytes(&from_server).unwrap()
        else {
            panic!("client handshake did not complete");
        };
        let actions = conn.on_bytes(now, &response_bytes);
        assert!(
            actions.iter().any(|a| matches!(a, Action::Send(_))),
            "session start messages"
        );
        assert!(!conn.is_closed());
        // Random bytes after the handshake: a protocol error or a panic in the library, never ours.
        let noise: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let actions = conn.on_bytes(now, &noise);
        let closed = actions
            .iter()
            .any(|a| matches!(a, Action::Close(CloseReason::Protocol(_))));
        assert!(closed || !conn.is_closed());
    }
}
