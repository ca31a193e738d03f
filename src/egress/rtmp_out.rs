//! An RTMP(S) output's connection: TCP (TLS for rtmps://, verified against the system's roots and an optional
//! extra CA), the publisher's handshake and commands (`publish.rs`) within a deadline, then the muxer's FLV
//! tags written straight to the socket from the output's task: no pipeline, no extra thread, one write per
//! batch of tags.

use super::output::{Admit, Attempt, Gate, Progress, Sequenced};
use super::publish::{PublishError, Publisher, RtmpUrl};
use crate::config::ConfigError;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

/// Connecting, the TLS and RTMP handshakes and `publish` together take at most this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A destination that does not take a batch of tags within this long is down.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// FLV tags written in one batch at most.
const BATCH: usize = 32;
/// The socket's send buffer (Linux doubles it): at most a few seconds of media wait in the kernel for a
/// congested destination (autotuning would let 4 MiB, 10+ s, pile up there); beyond it the output's own queue
/// fills and drops to the next keyframe. Still several times the bandwidth-delay product of a 20 Mbit/s
/// stream at 200 ms.
const SEND_BUFFER: u32 = 512 * 1024;

/// The TLS client configuration of rtmps:// outputs: the system's root certificates, and the CAs of
/// `extra_ca` (a PEM file; for private servers) when given.
pub fn tls_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        let field = "egress.tls_ca_file";
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| ConfigError::invalid(field, format!("cannot read {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ConfigError::invalid(
                field,
                format!("no certificate in {}", path.display()),
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ConfigError::invalid(field, format!("{}: {e}", path.display())))?;
        }
    }
    tracing::debug!(system_roots = added, "rtmps output trust store");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid("egress.tls_ca_file", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection whose publication the server accepted.
struct Connection {
    io: Box<dyn Io>,
    publisher: Publisher,
    buf: Vec<u8>,
}

impl Connection {
    /// Connects, handshakes and publishes, within [`CONNECT_TIMEOUT`].
    async fn open(url: RtmpUrl, tls: &Arc<ClientConfig>) -> Result<Self, String> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let late = |what: &str| format!("{what}: no answer within {} s", CONNECT_TIMEOUT.as_secs());
        let addrs: Vec<_> = timeout_at(deadline, tokio::net::lookup_host((url.host.as_str(), url.port)))
            .await
            .map_err(|_| late("resolving the host"))?
            .map_err(|e| format!("cannot resolve the host: {e}"))?
            .collect();
        let mut last = String::from("the host has no address");
        let mut tcp = None;
        for addr in addrs {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            };
            let socket = socket.map_err(|e| format!("cannot open a socket: {e}"))?;
            let _ = socket.set_send_buffer_size(SEND_BUFFER);
            match timeout_at(deadline, socket.connect(addr)).await {
                Ok(Ok(stream)) => {
                    tcp = Some(stream);
                    break;
                }
                Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
                Err(_) => return Err(late("connecting")),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if url.tls {
            let name = ServerName::try_from(url.host.clone()).map_err(|e| format!("bad TLS server name: {e}"))?;
            let connector = tokio_rustls::TlsConnector::from(tls.clone());
            let stream = timeout_at(deadline, connector.connect(name, tcp))
                .await
                .map_err(|_| late("TLS handshake"))?
                .map_err(|e| format!("TLS: {e}"))?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        let publisher = Publisher::new(url).map_err(|e| e.to_string())?;
        let mut connection = Self {
            io,
            publisher,
            buf: vec![0; 16 * 1024],
        };
        timeout_at(deadline, async {
            connection.flush().await?;
            while !connection.publisher.is_live() {
                connection.read().await?;
                connection.flush().await?;
            }
            Ok::<(), String>(())
        })
        .await
        .map_err(|_| late("publishing"))??;
        Ok(connection)
    }

    /// Reads what the server sent (pings, acknowledgements, status); the answers wait for
    /// [`Connection::flush`]. Cancel-safe: nothing is written here.
    async fn read(&mut self) -> Result<(), String> {
        let n = self.io.read(&mut self.buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        self.publisher.receive(&self.buf[..n]).map_err(|e| e.to_string())
    }

    /// Writes what the publisher has to send; returns its size.
    async fn flush(&mut self) -> Result<usize, String> {
        let out = self.publisher.take_output();
        if out.is_empty() {
            return Ok(0);
        }
        let (len, io) = (out.len(), &mut self.io);
        // Flushed: TLS may hold the last record back until asked.
        let write = async move {
            io.write_all(&out).await?;
            io.flush().await
        };
        timeout(WRITE_TIMEOUT, write)
            .await
            .map_err(|_| format!("the server took no data for {} s", WRITE_TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        Ok(len)
    }

    /// Unpublishes and sends it (within a second), before the connection is dropped.
    async fn close(mut self) {
        if self.publisher.unpublish().is_ok() {
            let _ = timeout(Duration::from_secs(1), self.flush()).await;
        }
    }

    fn tag(&mut self, tag: &[u8]) -> Result<(), String> {
        self.publisher.send_tag(tag).map_err(|e: PublishError| e.to_string())
    }
}

/// One attempt of an RTMP output: connect and publish, then send from the next video keyframe on (after
/// the stream headers of the caps) until the connection fails or the egress stops.
pub(super) async fn attempt(
    url: &RtmpUrl,
    tls: &Arc<ClientConfig>,
    headers: &[Vec<u8>],
    frames: &mut mpsc::Receiver<Sequenced>,
    cancel: &CancellationToken,
    progress: &mut Progress,
) -> Attempt {
    let key = url.stream.clone();
    let redact = |reason: String| match key.expose().len() {
        0 => reason,
        _ => reason.replace(key.expose().as_str(), crate::redact::REDACTED),
    };
    let mut connection = tokio::select! {
        () = cancel.cancelled() => return Attempt::Cancelled,
        opened = Connection::open(url.clone(), tls) => match opened {
            Ok(connection) => connection,
            Err(reason) => return Attempt::Down(redact(reason)),
        },
    };
    while frames.try_recv().is_ok() {} // what queued while connecting is stale
    let mut gate = Gate::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut batch = Vec::with_capacity(BATCH);
    let reason = loop {
        tokio::select! {
            () = cancel.cancelled() => {
                connection.close().await;
                return Attempt::Cancelled;
            }
            read = connection.read() => {
                if let Err(reason) = read {
                    break reason;
                }
                if let Err(reason) = connection.flush().await {
                    break reason;
                }
            }
            _ = tick.tick() => progress.tick(),
            n = frames.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    connection.close().await;
                    return Attempt::Cancelled;
                }
                let written = send(&mut connection, &mut batch, &mut gate, headers, progress).await;
                match written {
                    Ok(bytes) => progress.sent(bytes),
                    Err(reason) => break reason,
                }
            }
        }
    };
    Attempt::Down(redact(reason))
}

/// Sends a batch of muxer buffers (as the gate admits them); returns the bytes written.
async fn send(
    connection: &mut Connection,
    batch: &mut Vec<Sequenced>,
    gate: &mut Gate,
    headers: &[Vec<u8>],
    progress: &mut Progress,
) -> Result<usize, String> {
    for (seq, frame) in batch.drain(..) {
        match gate.admit(seq, &frame) {
            Admit::Skip => continue,
            Admit::Wait => {
                progress.wait_keyframe();
                continue;
            }
            Admit::Start { headers: first } => {
                if first {
                    for header in headers {
                        connection.tag(header)?;
                    }
                }
                progress.active();
            }
            Admit::Send => {}
        }
        connection.tag(&frame.data)?;
    }
    connection.flush().await
}
