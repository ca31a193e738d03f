//! RTMP ingest: an RTMP server that accepts publishers by stream key and runs one supervised ingest session
//! per live ingress (see [`ingest`]). A publisher that drops and comes back within the grace period
//! continues the same session; a second publisher on a live key is refused.

mod conn;
pub mod flv;
pub mod ingest;
mod media;
pub mod tls;

use crate::config::RtmpConfig;
use crate::ingress::store::IngressStore;
use crate::supervisor::{SessionKind, Supervisor};
use conn::{Action, CloseReason, Limits, RtmpConn};
use ingest::{IngestDeps, IngestMsg};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a connection may wait for its ingest session to take a tag before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// A live ingest, reachable by its ingress id.
struct Live {
    tx: mpsc::Sender<IngestMsg>,
    /// The connection currently publishing (none during a reconnect grace).
    connection: Option<u64>,
}

/// Shared by the accept loop and the connections.
struct Shared {
    config: RtmpConfig,
    store: IngressStore,
    supervisor: Supervisor,
    deps: IngestDeps,
    live: Mutex<HashMap<String, Live>>,
    next_connection: std::sync::atomic::AtomicU64,
    /// Open connections by source address.
    per_ip: Mutex<HashMap<std::net::IpAddr, u32>>,
}

/// One open connection counted against its source address; uncounted when dropped.
struct Counted {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut per_ip = self
            .shared
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Shared {
    /// Counts a new connection from `ip`, or `None` when that address already has its maximum open.
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Counted> {
        let max = self.config.max_connections_per_ip;
        let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = per_ip.entry(ip).or_insert(0);
        if max > 0 && *open >= max {
            return None;
        }
        *open += 1;
        Some(Counted {
            shared: self.clone(),
            ip,
        })
    }
}

/// Binds the RTMP listener and serves until `cancel`; returns the bound address.
pub async fn start(
    config: RtmpConfig,
    store: IngressStore,
    supervisor: Supervisor,
    deps: IngestDeps,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        config,
        store,
        supervisor,
        deps,
        live: Mutex::new(HashMap::new()),
        next_connection: Default::default(),
        per_ip: Mutex::new(HashMap::new()),
    });
    tracing::info!(%addr, app = %shared.config.app, "rtmp listening");
    if shared.config.rtmps() {
        let tls = tls::server_config(&shared.config.tls_cert, &shared.config.tls_key)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let secure = TcpListener::bind(shared.config.rtmps_listen).await?;
        tracing::info!(addr = %secure.local_addr()?, "rtmps listening");
        tokio::spawn(accept_loop(
            secure,
            Some(TlsAcceptor::from(tls)),
            shared.clone(),
            cancel.clone(),
        ));
    }
    tokio::spawn(accept_loop(listener, None, shared, cancel));
    Ok(addr)
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "rtmp accept failed");
                continue;
            }
        };
        let Some(counted) = shared.admit(peer.ip()) else {
            metrics::counter!("rtmp_connections_refused_total", "reason" => "per_ip").increment(1);
            tracing::info!(ip = %peer.ip(), limit = shared.config.max_connections_per_ip, "rtmp: too many connections from one address, closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let id = shared
            .next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = tracing::info_span!("rtmp", connection = id, %peer, tls = tls.is_some());
        let (shared, cancel, tls) = (shared.clone(), cancel.clone(), tls.clone());
        tokio::spawn(
            async move {
                let _counted = counted;
                match tls {
                    None => connection(shared, stream, id, cancel).await,
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(stream));
                        match handshake.await {
                            Ok(Ok(stream)) => connection(shared, stream, id, cancel).await,
                            Ok(Err(e)) => tracing::info!(error = %e, "rtmps handshake failed"),
                            Err(_) => tracing::info!("rtmps handshake timed out"),
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
}

enum Decision {
    Accept(mpsc::Sender<IngestMsg>),
    Reject(&'static str, &'static str),
}

impl Shared {
    /// Decides a publish request: unknown key, key already live, capacity, or a new/resumed ingest.
    fn decide(self: &Arc<Self>, key: &str, connection: u64) -> Decision {
        let key = key.split('?').next().unwrap_or_default();
        let Some(ingress) = self.store.find_by_key(key) else {
            return Decision::Reject("NetStream.Publish.BadName", "unknown stream key");
        };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = live.get_mut(&ingress.id) {
            if entry.connection.is_some() && !entry.tx.is_closed() {
                tracing::warn!(ingress = %ingress.id, "refused a second publisher on a live stream key");
                return Decision::Reject("NetStream.Publish.BadName", "stream key already publishing");
            }
            if !entry.tx.is_closed() {
                entry.connection = Some(connection);
                if entry.tx.try_send(IngestMsg::Attach).is_ok() {
                    return Decision::Accept(entry.tx.clone());
                }
            }
        }
        let (tx, rx) = mpsc::channel(1024);
        let deps = self.deps.clone();
        let shared = self.clone();
        let id = ingress.id.clone();
        let live_id = ingress.id.clone();
        let transcodes = ingress.layers > 1 || ingress.video_mode == crate::ingress::store::VideoMode::Transcode;
        let cost = if transcodes {
            self.deps
                .costs
                .rtmp_transcode_layer
                .saturating_mul(u32::from(ingress.layers))
        } else {
            self.deps.costs.rtmp_passthrough
        };
        let spawned = self.supervisor.spawn_with_cost(
            SessionKind::RtmpIngress,
            ingress.name.clone(),
            cost,
            move |ctx| async move {
                let result = ingest::run(ctx, deps, ingress, rx).await;
                shared.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                result
            },
        );
        match spawned {
            Ok(_) => {
                live.insert(
                    live_id,
                    Live {
                        tx: tx.clone(),
                        connection: Some(connection),
                    },
                );
                Decision::Accept(tx)
            }
            Err(e) => {
                tracing::warn!(error = %e, "rtmp publish refused by admission");
                Decision::Reject(
                    "NetStream.Publish.Rejected",
                    "the gateway is at capacity or shutting down",
                )
            }
        }
    }

    /// The publisher connection `connection` ended: the ingest waits for it to come back.
    fn detach(&self, ingress_id: &str, connection: u64) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = live.get_mut(ingress_id) {
            if entry.connection == Some(connection) {
                entry.connection = None;
            }
        }
    }
}

fn ingress_id_of(store: &IngressStore, key: &str) -> String {
    store.find_by_key(key).map(|i| i.id).unwrap_or_default()
}

async fn connection<S>(shared: Arc<Shared>, mut stream: S, id: u64, cancel: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let limits = Limits {
        handshake: shared.config.handshake_timeout,
        publish: shared.config.idle_timeout,
        idle: shared.config.idle_timeout,
    };
    let mut conn = RtmpConn::new(Instant::now(), &shared.config.app, limits);
    let mut publishing: Option<(String, mpsc::Sender<IngestMsg>)> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let reason = 'outer: loop {
        let deadline = tokio::time::Instant::from_std(conn.deadline());
        let read = tokio::select! {
            () = cancel.cancelled() => break 'outer CloseReason::Timeout("shutdown"),
            read = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => read,
        };
        let now = Instant::now();
        let actions = match read {
            Err(_) => conn.on_tick(now),
            Ok(Ok(0)) | Ok(Err(_)) => break CloseReason::Protocol("connection closed by the client".into()),
            Ok(Ok(n)) => conn.on_bytes(now, &buf[..n]),
        };
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        break 'outer CloseReason::Protocol("write failed".into());
                    }
                }
                Action::PublishRequested { request_id, key, .. } => match shared.decide(key.expose(), id) {
                    Decision::Accept(tx) => {
                        let ingress = ingress_id_of(&shared.store, key.expose().split('?').next().unwrap_or(""));
                        tracing::info!(%ingress, "publisher accepted");
                        publishing = Some((ingress, tx));
                        queue.extend(conn.accept(Instant::now(), request_id));
                    }
                    Decision::Reject(code, description) => {
                        tracing::warn!(code, description, "publish refused");
                        queue.extend(conn.reject(request_id, code, description));
                    }
                },
                Action::Video(ts, data) | Action::Audio(ts, data) if publishing.is_none() => {
                    let _ = (ts, data); // media before an accepted publish is ignored
                }
                Action::Video(ts, data) => {
                    let tx = &publishing.as_ref().map(|p| p.1.clone());
                    if let Some(tx) = tx {
                        if tx
                            .send_timeout(IngestMsg::Video(ts, data, now), SEND_TIMEOUT)
                            .await
                            .is_err()
                        {
                            break 'outer CloseReason::Protocol("the ingest session stopped".into());
                        }
                    }
                }
                Action::Audio(ts, data) => {
                    let tx = &publishing.as_ref().map(|p| p.1.clone());
                    if let Some(tx) = tx {
                        if tx
                            .send_timeout(IngestMsg::Audio(ts, data, now), SEND_TIMEOUT)
                            .await
                            .is_err()
                        {
                            break 'outer CloseReason::Protocol("the ingest session stopped".into());
                        }
                    }
                }
                Action::Metadata(metadata) => {
                    if let Some((_, tx)) = &publishing {
                        let _ = tx.try_send(IngestMsg::Metadata(metadata));
                    }
                }
                Action::Close(reason) => break 'outer reason,
            }
        }
    };
    let _ = stream.shutdown().await;
    match &reason {
        CloseReason::Unpublished => tracing::info!("publisher ended the stream"),
        other => tracing::info!(reason = ?other, "rtmp connection closed"),
    }
    if let Some((ingress, tx)) = publishing {
        shared.detach(&ingress, id);
        let _ = tx.try_send(IngestMsg::Detach(format!("{reason:?}")));
    }
}
