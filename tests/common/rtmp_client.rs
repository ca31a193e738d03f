//! A minimal RTMP publisher over rml_rtmp's client session (sans-IO) and a tokio TCP stream, for the tests
//! and benchmarks that publish what no installed tool can (Enhanced RTMP).

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// The `OpusHead` an Enhanced RTMP Opus sequence start carries: version 1, stereo, pre-skip 312, 48 kHz,
/// gain 0, mapping family 0.
pub const OPUS_HEAD: [u8; 19] = *b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00";

/// A publishing RTMP connection.
pub struct Rtmp {
    stream: TcpStream,
    session: ClientSession,
}

impl Rtmp {
    async fn write(&mut self, results: Vec<ClientSessionResult>) -> Result<Vec<ClientSessionEvent>, String> {
        let mut events = Vec::new();
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.stream.write_all(&packet.bytes).await.map_err(|e| e.to_string())?
                }
                ClientSessionResult::RaisedEvent(event) => events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(events)
    }

    /// Reads until an event matches `done` (10 s at most).
    async fn wait(&mut self, what: &str, done: impl Fn(&ClientSessionEvent) -> bool) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = timeout(
                end.saturating_duration_since(Instant::now()),
                self.stream.read(&mut buf),
            )
            .await
            .map_err(|_| format!("no {what} within 10 s"))?
            .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("connection closed before {what}"));
            }
            let results = self.session.handle_input(&buf[..n]).map_err(|e| format!("{e:?}"))?;
            if self.write(results).await?.iter().any(&done) {
                return Ok(());
            }
        }
    }

    /// Sends one FLV tag body as a video (`video`) or audio message at `ms`.
    pub async fn send(&mut self, video: bool, ms: u32, body: Vec<u8>) -> Result<(), String> {
        let (data, at) = (Bytes::from(body), RtmpTimestamp::new(ms));
        let result = if video {
            self.session.publish_video_data(data, at, false)
        } else {
            self.session.publish_audio_data(data, at, false)
        };
        self.write(vec![result.map_err(|e| format!("{e:?}"))?])
            .await
            .map(|_| ())
    }
}

/// Connects to `addr`, publishes on `live/{key}`.
pub async fn connect(addr: &str, key: &str) -> Result<Rtmp, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut handshake = Handshake::new(PeerType::Client);
    let hello = handshake.generate_outbound_p0_and_p1().map_err(|e| format!("{e:?}"))?;
    stream.write_all(&hello).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 8192];
    let leftover = loop {
        let n = timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        match handshake.process_bytes(&buf[..n]).map_err(|e| format!("{e:?}"))? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await.map_err(|e| e.to_string())?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await.map_err(|e| e.to_string())?;
                break remaining_bytes;
            }
        }
    };
    let (session, initial) = ClientSession::new(ClientSessionConfig::new()).map_err(|e| format!("{e:?}"))?;
    let mut rtmp = Rtmp { stream, session };
    rtmp.write(initial).await?;
    if !leftover.is_empty() {
        let results = rtmp.session.handle_input(&leftover).map_err(|e| format!("{e:?}"))?;
        rtmp.write(results).await?;
    }
    let connect = rtmp
        .session
        .request_connection("live".into())
        .map_err(|e| format!("{e:?}"))?;
    rtmp.write(vec![connect]).await?;
    rtmp.wait("connect accepted", |e| {
        matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
    })
    .await?;
    let publish = rtmp
        .session
        .request_publishing(key.into(), PublishRequestType::Live)
        .map_err(|e| format!("{e:?}"))?;
    rtmp.write(vec![publish]).await?;
    rtmp.wait("publish accepted", |e| {
        matches!(e, ClientSessionEvent::PublishRequestAccepted)
    })
    .await?;
    Ok(rtmp)
}
