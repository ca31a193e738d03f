//! The RTMP publishing side of an egress output, sans-IO: bytes from the server go in, bytes for the server
//! come out. It does the handshake, `connect` (with `tcUrl`), `releaseStream`/`FCPublish`/`createStream` as
//! OBS and ffmpeg do (some services expect them), `publish`, answers pings and acknowledges what it
//! receives, and turns the FLV tags of the egress muxer into RTMP messages (metadata as `@setDataFrame`).
//! Chunks and messages are rml_rtmp's; the session logic is ours, so a refusal reaches the egress state
//! with the server's own status code.

use crate::redact::Secret;
use bytes::Bytes;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{MessagePayload, RtmpMessage, UserControlEventType};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;

/// Chunk size the publisher announces: a 720p keyframe is a few chunks, not hundreds.
const CHUNK_SIZE: u32 = 4096;
/// FLV tag types, as RTMP message types.
const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const SCRIPT: u8 = 18;
/// Transaction ids of the commands the publisher sends.
const CONNECT: f64 = 1.0;
const CREATE_STREAM: f64 = 4.0;

/// Why publishing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The URL is not `rtmp[s]://host[:port]/app/stream`.
    #[error("invalid RTMP URL: {0}")]
    Url(&'static str),
    /// The server broke the protocol (or the handshake).
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    /// The server refused `connect` or `publish` (its status code and description).
    #[error("the server refused: {0}")]
    Refused(String),
    /// An FLV tag from the muxer is malformed (a bug, not the server's fault).
    #[error("malformed FLV tag")]
    Tag,
}

/// Where an RTMP output publishes: `rtmp[s]://host[:port]/app[/more]/stream[?query]`. The last path segment
/// (with its query) is the stream name; what comes before it is the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// rtmps:// (TLS).
    pub tls: bool,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port (1935, or 443 for rtmps:// when absent).
    pub port: u16,
    /// The application (`live2` in YouTube's URL).
    pub app: String,
    /// The stream name: the stream key.
    pub stream: Secret,
    /// `rtmp[s]://host[:port]/app`, sent in `connect`.
    pub tc_url: String,
}

impl RtmpUrl {
    /// Parses an output URL.
    pub fn parse(url: &str) -> Result<Self, PublishError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("rtmps://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("rtmp://") {
            (false, rest)
        } else {
            return Err(PublishError::Url("the scheme must be rtmp:// or rtmps://"));
        };
        let (authority, path) = rest.split_once('/').ok_or(PublishError::Url("no application"))?;
        let (host, port) = split_host_port(authority)?;
        let (app, stream) = path
            .rsplit_once('/')
            .ok_or(PublishError::Url("no stream name after the application"))?;
        if app.is_empty() || stream.is_empty() {
            return Err(PublishError::Url("empty application or stream name"));
        }
        let port = port.unwrap_or(if tls { 443 } else { 1935 });
        let scheme = if tls { "rtmps" } else { "rtmp" };
        Ok(Self {
            tls,
            tc_url: format!("{scheme}://{authority}/{app}"),
            host,
            port,
            app: app.to_string(),
            stream: Secret::new(stream.to_string()),
        })
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), PublishError> {
    let bad_port = PublishError::Url("bad port");
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(PublishError::Url("unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad_port)?),
            None if after.is_empty() => None,
            None => return Err(PublishError::Url("junk after the address")),
        };
        return Ok((host.to_string(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port.parse().map_err(|_| bad_port)?)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(PublishError::Url("no host"));
    }
    Ok((host.to_string(), port))
}

enum State {
    Handshake(Box<Handshake>),
    /// Waiting for the answer to `connect`.
    Connecting,
    /// Waiting for `createStream`'s stream id.
    Creating,
    /// `publish` sent on the stream; waiting for `NetStream.Publish.Start`.
    Publishing,
    /// Accepted: media may flow.
    Live,
    /// [`Publisher::unpublish`] was called.
    Unpublished,
}

/// One publishing RTMP connection, sans-IO.
pub struct Publisher {
    url: RtmpUrl,
    state: State,
    serializer: ChunkSerializer,
    deserializer: ChunkDeserializer,
    stream_id: u32,
    /// The server's acknowledgement window, bytes received in all and since the last acknowledgement.
    window: Option<u32>,
    received: u64,
    unacknowledged: u64,
    out: Vec<u8>,
}

impl Publisher {
    /// Starts a connection: its first bytes (C0 + C1) wait in [`Publisher::take_output`].
    pub fn new(url: RtmpUrl) -> Result<Self, PublishError> {
        let mut handshake = Handshake::new(PeerType::Client);
        let hello = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| PublishError::Protocol(format!("handshake: {e:?}")))?;
        Ok(Self {
            url,
            state: State::Handshake(Box::new(handshake)),
            serializer: ChunkSerializer::new(),
            deserializer: ChunkDeserializer::new(),
            stream_id: 0,
            window: None,
            received: 0,
            unacknowledged: 0,
            out: hello,
        })
    }

    /// Bytes to send to the server now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether the server accepted the publication (media may be sent).
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Live)
    }

    /// Takes bytes received from the server.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), PublishError> {
        // rml_rtmp can panic on some malformed input: a hostile or broken server must not take the
        // gateway's task down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.receive_unguarded(data)))
            .unwrap_or_else(|_| Err(PublishError::Protocol("malformed data from the server".into())))
    }

    fn receive_unguarded(&mut self, data: &[u8]) -> Result<(), PublishError> {
        if let State::Handshake(handshake) = &mut self.state {
            let result = handshake
                .process_bytes(data)
                .map_err(|e| PublishError::Protocol(format!("handshake: {e:?}")))?;
            match result {
                HandshakeProcessResult::InProgress { response_bytes } => self.out.extend(response_bytes),
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.out.extend(response_bytes);
                    self.start_session()?;
                    if !remaining_bytes.is_empty() {
                        self.chunks(&remaining_bytes)?;
                    }
                }
            }
            return Ok(());
        }
        self.chunks(data)
    }

    fn start_session(&mut self) -> Result<(), PublishError> {
        let packet = self
            .serializer
            .set_max_chunk_size(CHUNK_SIZE, RtmpTimestamp::new(0))
            .map_err(protocol)?;
        self.out.extend(packet.bytes);
        let object = HashMap::from([
            ("app".to_string(), Amf0Value::Utf8String(self.url.app.clone())),
            ("type".to_string(), Amf0Value::Utf8String("nonprivate".into())),
            (
                "flashVer".to_string(),
                Amf0Value::Utf8String("FMLE/3.0 (compatible; sfu-gateway)".into()),
            ),
            ("tcUrl".to_string(), Amf0Value::Utf8String(self.url.tc_url.clone())),
        ]);
        self.command("connect", CONNECT, Amf0Value::Object(object), vec![], 0)?;
        self.state = State::Connecting;
        Ok(())
    }

    fn chunks(&mut self, data: &[u8]) -> Result<(), PublishError> {
        self.received += data.len() as u64;
        self.unacknowledged += data.len() as u64;
        if self
            .window
            .is_some_and(|w| w > 0 && self.unacknowledged >= u64::from(w))
        {
            self.unacknowledged = 0;
            let sequence_number = self.received as u32; // the count wraps, as the protocol has it
            self.message(RtmpMessage::Acknowledgement { sequence_number }, 0)?;
        }
        let mut input = data;
        while let Some(payload) = self.deserializer.get_next_message(input).map_err(protocol)? {
            input = &[];
            // Commands are read here: rml_rtmp's own reader panics on a command of fewer than three values,
            // which servers send (ffmpeg's `onFCPublish`). 17 is AMF3-flagged AMF0, after a zero byte.
            let command = match payload.type_id {
                20 => Some(&payload.data[..]),
                17 => Some(payload.data.strip_prefix(&[0]).unwrap_or(&payload.data[..])),
                _ => None,
            };
            if let Some(command) = command {
                let values = rml_rtmp::rml_amf0::deserialize(&mut std::io::Cursor::new(command)).map_err(protocol)?;
                if let [Amf0Value::Utf8String(name), Amf0Value::Number(transaction), rest @ ..] = &values[..] {
                    // `rest` is the command object, then the arguments.
                    self.command_received(name, *transaction, rest.get(1..).unwrap_or_default())?;
                }
                continue;
            }
            let message = payload.to_rtmp_message().map_err(protocol)?;
            self.handle(message)?;
        }
        Ok(())
    }

    fn handle(&mut self, message: RtmpMessage) -> Result<(), PublishError> {
        match message {
            RtmpMessage::SetChunkSize { size } => {
                self.deserializer.set_max_chunk_size(size as usize).map_err(protocol)?
            }
            RtmpMessage::WindowAcknowledgement { size } => self.window = Some(size),
            RtmpMessage::UserControl {
                event_type: UserControlEventType::PingRequest,
                timestamp,
                ..
            } => {
                let pong = RtmpMessage::UserControl {
                    event_type: UserControlEventType::PingResponse,
                    stream_id: None,
                    buffer_length: None,
                    timestamp,
                };
                self.message(pong, 0)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn command_received(&mut self, name: &str, transaction: f64, args: &[Amf0Value]) -> Result<(), PublishError> {
        match (name, &self.state) {
            ("_result", State::Connecting) if transaction == CONNECT => {
                let stream = Amf0Value::Utf8String(self.url.stream.expose().clone());
                self.command("releaseStream", 2.0, Amf0Value::Null, vec![stream.clone()], 0)?;
                self.command("FCPublish", 3.0, Amf0Value::Null, vec![stream], 0)?;
                self.command("createStream", CREATE_STREAM, Amf0Value::Null, vec![], 0)?;
                self.state = State::Creating;
            }
            ("_result", State::Creating) if transaction == CREATE_STREAM => {
                let Some(Amf0Value::Number(id)) = args.first() else {
                    return Err(PublishError::Protocol("createStream gave no stream id".into()));
                };
                self.stream_id = *id as u32;
                let publish = vec![
                    Amf0Value::Utf8String(self.url.stream.expose().clone()),
                    Amf0Value::Utf8String("live".into()),
                ];
                self.command("publish", 5.0, Amf0Value::Null, publish, self.stream_id)?;
                self.state = State::Publishing;
            }
            // releaseStream (2) and FCPublish (3) may be refused by servers that do not know them: harmless.
            // Anything else refused before the publication is live is the end of this connection.
            ("_error", State::Connecting | State::Creating | State::Publishing)
                if transaction != 2.0 && transaction != 3.0 =>
            {
                return Err(PublishError::Refused(status(args)));
            }
            ("onStatus", State::Publishing | State::Live) => {
                let code = status(args);
                if code.starts_with("NetStream.Publish.Start") {
                    self.state = State::Live;
                } else if level(args) == Some("error") {
                    return Err(PublishError::Refused(code));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Ends the publication politely (`FCUnpublish`, `deleteStream`), as OBS and ffmpeg do when they stop:
    /// the server ends the stream at once instead of waiting for its idle timeout. The bytes wait in
    /// [`Publisher::take_output`]; nothing is sent once the connection is not publishing.
    pub fn unpublish(&mut self) -> Result<(), PublishError> {
        if !matches!(self.state, State::Publishing | State::Live) {
            return Ok(());
        }
        let stream = Amf0Value::Utf8String(self.url.stream.expose().clone());
        self.command("FCUnpublish", 6.0, Amf0Value::Null, vec![stream], 0)?;
        let id = Amf0Value::Number(f64::from(self.stream_id));
        self.command("deleteStream", 7.0, Amf0Value::Null, vec![id], 0)?;
        self.state = State::Unpublished;
        Ok(())
    }

    /// Sends one FLV tag (11-byte header, body, optional 4-byte trailer) as an RTMP message; the FLV file
    /// header is skipped. The bytes wait in [`Publisher::take_output`].
    pub fn send_tag(&mut self, tag: &[u8]) -> Result<(), PublishError> {
        if tag.starts_with(b"FLV") || matches!(self.state, State::Unpublished) {
            return Ok(());
        }
        if tag.len() < 11 {
            return Err(PublishError::Tag);
        }
        let size = u32::from_be_bytes([0, tag[1], tag[2], tag[3]]) as usize;
        let body = tag.get(11..11 + size).ok_or(PublishError::Tag)?;
        let ms = u32::from_be_bytes([tag[7], tag[4], tag[5], tag[6]]);
        let data = match tag[0] {
            AUDIO | VIDEO => Bytes::copy_from_slice(body),
            // Metadata goes out as `@setDataFrame` + the tag's `onMetaData`, as publishers send it.
            SCRIPT => {
                let mut data = Vec::with_capacity(body.len() + 16);
                data.extend_from_slice(&[0x02, 0x00, 0x0d]);
                data.extend_from_slice(b"@setDataFrame");
                data.extend_from_slice(body);
                Bytes::from(data)
            }
            _ => return Err(PublishError::Tag),
        };
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(ms),
            type_id: tag[0],
            message_stream_id: self.stream_id,
            data,
        };
        let packet = self.serializer.serialize(&payload, false, false).map_err(protocol)?;
        self.out.extend(packet.bytes);
        Ok(())
    }

    fn command(
        &mut self,
        name: &str,
        transaction_id: f64,
        command_object: Amf0Value,
        additional_arguments: Vec<Amf0Value>,
        stream_id: u32,
    ) -> Result<(), PublishError> {
        let command = RtmpMessage::Amf0Command {
            command_name: name.to_string(),
            transaction_id,
            command_object,
            additional_arguments,
        };
        self.message(command, stream_id)
    }

    fn message(&mut self, message: RtmpMessage, stream_id: u32) -> Result<(), PublishError> {
        let payload = message
            .into_message_payload(RtmpTimestamp::new(0), stream_id)
            .map_err(protocol)?;
        let packet = self.serializer.serialize(&payload, false, false).map_err(protocol)?;
        self.out.extend(packet.bytes);
        Ok(())
    }
}

fn protocol(e: impl std::fmt::Debug) -> PublishError {
    PublishError::Protocol(format!("{e:?}"))
}

/// The info object of an `onStatus` or `_error`: `code` (and `description`, when there is one).
fn status(args: &[Amf0Value]) -> String {
    let field = |name: &str| {
        args.iter().find_map(|v| match v {
            Amf0Value::Object(o) => match o.get(name) {
                Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        })
    };
    match (field("code"), field("description")) {
        (Some(code), Some(description)) if !description.is_empty() => format!("{code} ({description})"),
        (Some(code), _) => code,
        (None, Some(description)) => description,
        (None, None) => "no status".into(),
    }
}

fn level(args: &[Amf0Value]) -> Option<&str> {
    args.iter().find_map(|v| match v {
        Amf0Value::Object(o) => match o.get("level") {
            Some(Amf0Value::Utf8String(s)) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;
