//! The publisher against rml_rtmp's server session (a full, independent RTMP server implementation, sans-IO):
//! handshake, connect, publish, then metadata and media arrive with their bytes and timestamps.

use super::*;
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};

/// The server side: its handshake, then its session; events it raised so far.
struct Server {
    handshake: Handshake,
    session: Option<ServerSession>,
    events: Vec<ServerSessionEvent>,
    /// How `publish` is answered.
    answer: Answer,
}

/// How the test server answers `publish`.
#[derive(Clone, Copy)]
enum Answer {
    Accept,
    /// Refused with `_error` and this code.
    Refuse(&'static str),
    /// Not at all (the test answers).
    Hold,
}

impl Server {
    fn new(answer: Answer) -> Self {
        Self {
            handshake: Handshake::new(PeerType::Server),
            session: None,
            events: Vec::new(),
            answer,
        }
    }

    /// Takes the client's bytes; returns the server's.
    fn receive(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut input = data.to_vec();
        if self.session.is_none() {
            match self.handshake.process_bytes(data).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => return response_bytes,
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    out.extend(response_bytes);
                    let (session, initial) = ServerSession::new(ServerSessionConfig::new()).unwrap();
                    self.session = Some(session);
                    self.results(initial, &mut out);
                    input = remaining_bytes;
                }
            }
        }
        if !input.is_empty() {
            let results = self.session.as_mut().unwrap().handle_input(&input).unwrap();
            self.results(results, &mut out);
        }
        out
    }

    fn results(&mut self, results: Vec<ServerSessionResult>, out: &mut Vec<u8>) {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => out.extend(packet.bytes),
                ServerSessionResult::RaisedEvent(event) => {
                    let session = self.session.as_mut().unwrap();
                    let answer = match &event {
                        ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                            Some(session.accept_request(*request_id).unwrap())
                        }
                        ServerSessionEvent::PublishStreamRequested { request_id, .. } => match self.answer {
                            Answer::Refuse(code) => {
                                Some(session.reject_request(*request_id, code, "not here").unwrap())
                            }
                            Answer::Accept => Some(session.accept_request(*request_id).unwrap()),
                            Answer::Hold => None,
                        },
                        _ => None,
                    };
                    self.events.push(event);
                    if let Some(answer) = answer {
                        self.results(answer, out);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }
}

/// Runs the two sides until neither has anything to say.
fn converse(publisher: &mut Publisher, server: &mut Server) -> Result<(), PublishError> {
    for _ in 0..20 {
        let to_server = publisher.take_output();
        if to_server.is_empty() {
            return Ok(());
        }
        let to_client = server.receive(&to_server);
        publisher.receive(&to_client)?;
    }
    panic!("the conversation does not end");
}

/// A publisher of `url` that has talked with a server answering `publish` with `answer`, until both were
/// quiet (or the publisher failed: the error).
fn connected(url: &str, answer: Answer) -> (Publisher, Server, Result<(), PublishError>) {
    let mut publisher = Publisher::new(RtmpUrl::parse(url).unwrap()).unwrap();
    let mut server = Server::new(answer);
    let result = converse(&mut publisher, &mut server);
    (publisher, server, result)
}

fn tag(kind: u8, ms: u32, body: &[u8]) -> Vec<u8> {
    let mut tag = vec![kind];
    tag.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    tag.extend_from_slice(&ms.to_be_bytes()[1..]);
    tag.push((ms >> 24) as u8);
    tag.extend_from_slice(&[0, 0, 0]);
    tag.extend_from_slice(body);
    tag.extend_from_slice(&(body.len() as u32 + 11).to_be_bytes());
    tag
}

#[test]
fn publishes_metadata_and_media_with_their_timestamps() {
    let (mut publisher, mut server, result) = connected("rtmp://127.0.0.1:1935/live/show?token=1", Answer::Accept);
    result.unwrap();
    assert!(publisher.is_live());
    assert!(server.events.iter().any(|e| matches!(e,
        ServerSessionEvent::PublishStreamRequested { app_name, stream_key, .. }
            if app_name == "live" && stream_key == "show?token=1")));

    // onMetaData as flvmux writes it: the string, then an ECMA array with `width`.
    let mut metadata = vec![0x02, 0x00, 0x0a];
    metadata.extend_from_slice(b"onMetaData");
    metadata.extend_from_slice(&[0x08, 0, 0, 0, 1, 0x00, 0x05]);
    metadata.extend_from_slice(b"width");
    metadata.push(0x00);
    metadata.extend_from_slice(&640f64.to_be_bytes());
    metadata.extend_from_slice(&[0x00, 0x00, 0x09]);
    publisher
        .send_tag(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00")
        .unwrap();
    publisher.send_tag(&tag(SCRIPT, 0, &metadata)).unwrap();
    // A keyframe bigger than one chunk, a 2^24 ms timestamp (the extended byte), and audio.
    let keyframe: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    publisher.send_tag(&tag(VIDEO, 0x0100_0010, &keyframe)).unwrap();
    publisher
        .send_tag(&tag(AUDIO, 0x0100_0020, &[0xaf, 0x01, 7, 8, 9]))
        .unwrap();
    converse(&mut publisher, &mut server).unwrap();

    let width = server.events.iter().find_map(|e| match e {
        ServerSessionEvent::StreamMetadataChanged { metadata, .. } => metadata.video_width,
        _ => None,
    });
    assert_eq!(width, Some(640));
    let video = server.events.iter().find_map(|e| match e {
        ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => Some((data.clone(), timestamp.value)),
        _ => None,
    });
    assert_eq!(video, Some((Bytes::from(keyframe), 0x0100_0010)));
    let audio = server.events.iter().find_map(|e| match e {
        ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => Some((data.clone(), timestamp.value)),
        _ => None,
    });
    assert_eq!(audio, Some((Bytes::from_static(&[0xaf, 0x01, 7, 8, 9]), 0x0100_0020)));
}

#[test]
fn a_refused_publication_is_an_error_with_the_servers_code() {
    let (publisher, _server, result) = connected(
        "rtmp://localhost/live/wrong",
        Answer::Refuse("NetStream.Publish.BadName"),
    );
    let refused = result.unwrap_err();
    assert_eq!(
        refused,
        PublishError::Refused("NetStream.Publish.BadName (not here)".into())
    );
    assert!(!publisher.is_live());
}

#[test]
fn garbage_from_the_server_is_an_error_not_a_panic() {
    let (mut publisher, _server, result) = connected("rtmp://localhost/live/key", Answer::Accept);
    result.unwrap();
    // A chunk header naming a 16 MiB message of an unknown type, then a chunk-size message of size 0.
    let mut garbage = vec![0x02, 0, 0, 0, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0u8; 300]);
    let _ = publisher.receive(&garbage);
    let mut zero_chunk = vec![0x02, 0, 0, 0, 0, 0, 4, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
    zero_chunk.extend_from_slice(&[0xc3; 64]);
    let _ = publisher.receive(&zero_chunk);
    assert!(publisher.send_tag(&[9, 0, 0]).is_err(), "a truncated tag is refused");
}

#[test]
fn urls_split_into_application_and_stream() {
    let youtube = RtmpUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh").unwrap();
    assert_eq!(
        (youtube.tls, youtube.host.as_str(), youtube.port, youtube.app.as_str()),
        (false, "a.rtmp.youtube.com", 1935, "live2")
    );
    assert_eq!(youtube.stream.expose(), "abcd-efgh");
    assert_eq!(youtube.tc_url, "rtmp://a.rtmp.youtube.com/live2");
    let twitch = RtmpUrl::parse("rtmps://live.twitch.tv/app/live_123?bandwidthtest=true").unwrap();
    assert_eq!((twitch.tls, twitch.port, twitch.app.as_str()), (true, 443, "app"));
    assert_eq!(twitch.stream.expose(), "live_123?bandwidthtest=true");
    let nested = RtmpUrl::parse("rtmp://[::1]:1936/a/b/key").unwrap();
    assert_eq!(
        (nested.host.as_str(), nested.port, nested.app.as_str()),
        ("::1", 1936, "a/b")
    );
    assert!(!format!("{nested:?}").contains("key"), "the stream key is not in Debug");
    for bad in [
        "http://x/live/k",
        "rtmp://host",
        "rtmp://host/live",
        "rtmp://host:port/live/k",
        "rtmp:///live/k",
        "rtmp://host/live/",
    ] {
        assert!(RtmpUrl::parse(bad).is_err(), "{bad}");
    }
}

/// A command message as a fresh serializer writes it: a full (type 0) chunk header the publisher can read
/// whatever came before.
fn command_chunk(values: Vec<Amf0Value>) -> Vec<u8> {
    let payload = MessagePayload {
        timestamp: RtmpTimestamp::new(0),
        type_id: 20,
        message_stream_id: 0,
        data: Bytes::from(rml_rtmp::rml_amf0::serialize(&values).unwrap()),
    };
    ChunkSerializer::new().serialize(&payload, true, false).unwrap().bytes
}

#[test]
fn an_on_status_error_refuses_the_publication() {
    let (mut publisher, _server, result) = connected("rtmp://localhost/live/taken", Answer::Hold);
    result.unwrap();
    assert!(!publisher.is_live());
    // nginx-rtmp's answer to a name already publishing.
    let info = HashMap::from([
        ("level".to_string(), Amf0Value::Utf8String("error".into())),
        (
            "code".to_string(),
            Amf0Value::Utf8String("NetStream.Publish.BadName".into()),
        ),
        (
            "description".to_string(),
            Amf0Value::Utf8String("Already publishing".into()),
        ),
    ]);
    let status = command_chunk(vec![
        Amf0Value::Utf8String("onStatus".into()),
        Amf0Value::Number(0.0),
        Amf0Value::Null,
        Amf0Value::Object(info),
    ]);
    assert_eq!(
        publisher.receive(&status),
        Err(PublishError::Refused(
            "NetStream.Publish.BadName (Already publishing)".into()
        ))
    );
}

#[test]
fn unpublishing_ends_the_stream_at_the_server() {
    let (mut publisher, mut server, result) = connected("rtmp://localhost/live/key", Answer::Accept);
    result.unwrap();
    publisher.unpublish().unwrap();
    converse(&mut publisher, &mut server).unwrap();
    assert!(server.events.iter().any(|e| matches!(e,
        ServerSessionEvent::PublishStreamFinished { stream_key, .. } if stream_key == "key")));
    publisher.send_tag(&tag(VIDEO, 0, &[0x17, 1])).unwrap();
    assert!(publisher.take_output().is_empty(), "nothing is sent after unpublishing");
}

#[test]
fn a_short_command_from_the_server_is_read_not_a_panic() {
    let (mut publisher, _server, result) = connected("rtmp://localhost/live/key", Answer::Accept);
    result.unwrap();
    // ffmpeg's server answers FCPublish with `onFCPublish, 0`: two values, no command object.
    let short = command_chunk(vec![
        Amf0Value::Utf8String("onFCPublish".into()),
        Amf0Value::Number(0.0),
    ]);
    assert_eq!(publisher.receive(&short), Ok(()));
    assert!(publisher.is_live());
}
