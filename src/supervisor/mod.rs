//! The supervisor owns every session: it admits, registers, tracks state, stops and drains them.
//!
//! Each session runs as one task (its single owner) inside a `session` span carrying its id and kind. It
//! gets a [`SessionCtx`] with a cancellation token (a child of the process token) and a drain signal. The
//! registry is the only shared map of live state; it holds snapshots, never the sessions themselves.

mod session;

pub(crate) use session::unix_now;
pub use session::{RestartPolicy, SessionId, SessionInfo, SessionKind, SessionState};

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How many finished sessions stay visible in the API.
const ENDED_HISTORY: usize = 256;
/// How long stopped sessions get to unwind after a forced stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The error a session task returns when it fails; its text becomes the `failed` reason.
pub type SessionError = Box<dyn std::error::Error + Send + Sync>;

/// Why the supervisor refused or could not do something.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SupervisorError {
    /// The gateway is draining and accepts no new sessions.
    #[error("the gateway is shutting down and accepts no new sessions")]
    Draining,
    /// The session limit is reached.
    #[error("at capacity ({max} sessions)")]
    AtCapacity {
        /// The configured limit.
        max: usize,
    },
    /// The new session's cost does not fit in the remaining capacity.
    #[error("over capacity: {used} of {capacity} units in use, the new session needs {cost}")]
    OverCapacity {
        /// Units used by live sessions.
        used: u32,
        /// Configured capacity.
        capacity: u32,
        /// The refused session's cost.
        cost: u32,
    },
    /// No live session has this id.
    #[error("no such session")]
    NotFound,
}

impl SupervisorError {
    /// The error class, for status codes.
    pub fn class(&self) -> crate::error::ErrorClass {
        match self {
            SupervisorError::Draining | SupervisorError::AtCapacity { .. } | SupervisorError::OverCapacity { .. } => {
                crate::error::ErrorClass::Unavailable
            }
            SupervisorError::NotFound => crate::error::ErrorClass::NotFound,
        }
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every session finished within the drain timeout.
    Clean,
    /// The timeout passed; this many sessions were stopped.
    TimedOut {
        /// Sessions still live when the timeout passed.
        stopped: usize,
    },
}

struct Entry {
    info: SessionInfo,
    cancel: CancellationToken,
    cost: u32,
}

#[derive(Default)]
struct Registry {
    live: HashMap<SessionId, Entry>,
    ended: VecDeque<SessionInfo>,
}

struct Inner {
    registry: Mutex<Registry>,
    root: CancellationToken,
    drain: CancellationToken,
    live_count: watch::Sender<usize>,
    max_sessions: usize,
    /// Capacity in cost units (admission by cost).
    capacity: u32,
    /// Every state change, for events.
    changes: tokio::sync::broadcast::Sender<SessionInfo>,
}

impl Inner {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the map half-updated (every update is one
        // statement), so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a state change and publishes it to [`Supervisor::subscribe`]rs.
    fn changed(&self, info: &SessionInfo) {
        metrics::counter!(
            "sfu_gateway_session_state_changes_total",
            "kind" => info.kind.as_str(),
            "state" => info.state.name()
        )
        .increment(1);
        let _ = self.changes.send(info.clone()); // nobody listening is fine
    }

    fn finish(&self, id: &SessionId, state: SessionState) {
        let mut registry = self.registry();
        if let Some(mut entry) = registry.live.remove(id) {
            entry.info.state = state;
            self.changed(&entry.info);
            if registry.ended.len() == ENDED_HISTORY {
                registry.ended.pop_front();
            }
            registry.ended.push_back(entry.info);
        }
        self.live_count.send_replace(registry.live.len());
    }
}

/// Handle to the supervisor; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

/// What a session task receives: its identity, its stop and drain signals, and a way to report state.
#[derive(Clone)]
pub struct SessionCtx {
    id: SessionId,
    kind: SessionKind,
    cancel: CancellationToken,
    drain: CancellationToken,
    inner: Arc<Inner>,
}

impl SessionCtx {
    /// The session id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The session kind.
    pub fn kind(&self) -> SessionKind {
        self.kind
    }

    /// Cancelled when the session must stop now (API stop, forced shutdown).
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Cancelled when the gateway starts draining: finish the work in hand, then return.
    pub fn drain_token(&self) -> &CancellationToken {
        &self.drain
    }

    /// Reports a new state (ignored once the session has finished).
    pub fn set_state(&self, state: SessionState) {
        if state.is_final() {
            return;
        }
        if let Some(entry) = self.inner.registry().live.get_mut(&self.id) {
            if entry.info.state == state {
                return;
            }
            tracing::debug!(from = entry.info.state.name(), to = state.name(), "session state");
            entry.info.state = state;
            self.inner.changed(&entry.info);
        }
    }
}

impl Supervisor {
    /// A supervisor admitting at most `max_sessions` live sessions, each costing one unit of an unlimited
    /// capacity.
    pub fn new(max_sessions: usize) -> Self {
        Self::with_capacity(max_sessions, u32::MAX)
    }

    /// A supervisor admitting at most `max_sessions` live sessions whose costs sum to at most `capacity`.
    pub fn with_capacity(max_sessions: usize, capacity: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry::default()),
                root: CancellationToken::new(),
                drain: CancellationToken::new(),
                live_count: watch::Sender::new(0),
                max_sessions,
                capacity,
                changes: tokio::sync::broadcast::Sender::new(256),
            }),
        }
    }

    /// Every later state change of every session (starting, active, ..., ended, failed), in order per session.
    /// A receiver that falls behind skips the oldest changes.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SessionInfo> {
        self.inner.changes.subscribe()
    }

    /// Capacity units used by live sessions, and the capacity.
    pub fn capacity(&self) -> (u32, u32) {
        let used = self.inner.registry().live.values().map(|e| e.cost).sum();
        (used, self.inner.capacity)
    }

    /// The process-wide token: cancelled when everything must stop now.
    pub fn root_token(&self) -> &CancellationToken {
        &self.inner.root
    }

    /// Whether new sessions are admitted (false once draining).
    pub fn is_accepting(&self) -> bool {
        !self.inner.drain.is_cancelled() && !self.inner.root.is_cancelled()
    }

    /// Starts a session task costing one unit. `run` gets the session context and returns when the session
    /// is over.
    pub fn spawn<F, Fut>(
        &self,
        kind: SessionKind,
        name: impl Into<String>,
        run: F,
    ) -> Result<SessionId, SupervisorError>
    where
        F: FnOnce(SessionCtx) -> Fut,
        Fut: Future<Output = Result<(), SessionError>> + Send + 'static,
    {
        self.spawn_with_cost(kind, name, 1, run)
    }

    /// Starts a session task that uses `cost` units of capacity (refused when they do not fit).
    pub fn spawn_with_cost<F, Fut>(
        &self,
        kind: SessionKind,
        name: impl Into<String>,
        cost: u32,
        run: F,
    ) -> Result<SessionId, SupervisorError>
    where
        F: FnOnce(SessionCtx) -> Fut,
        Fut: Future<Output = Result<(), SessionError>> + Send + 'static,
    {
        let id = SessionId::random();
        let cancel = self.inner.root.child_token();
        {
            let mut registry = self.inner.registry();
            if !self.is_accepting() {
                return Err(SupervisorError::Draining);
            }
            if registry.live.len() >= self.inner.max_sessions {
                return Err(SupervisorError::AtCapacity {
                    max: self.inner.max_sessions,
                });
            }
            let used: u32 = registry.live.values().map(|e| e.cost).sum();
            if used.saturating_add(cost) > self.inner.capacity {
                return Err(SupervisorError::OverCapacity {
                    used,
                    capacity: self.inner.capacity,
                    cost,
                });
            }
            let info = SessionInfo {
                id: id.clone(),
                kind,
                name: name.into(),
                restart_policy: kind.restart_policy(),
                state: SessionState::Starting,
                started_at: session::unix_now(),
            };
            self.inner.changed(&info);
            registry.live.insert(
                id.clone(),
                Entry {
                    info,
                    cancel: cancel.clone(),
                    cost,
                },
            );
            self.inner.live_count.send_replace(registry.live.len());
        }
        let ctx = SessionCtx {
            id: id.clone(),
            kind,
            cancel,
            drain: self.inner.drain.clone(),
            inner: self.inner.clone(),
        };
        let span = tracing::info_span!("session", id = %id, kind = %kind);
        let task = tokio::spawn(run(ctx).instrument(span.clone()));
        let inner = self.inner.clone();
        let task_id = id.clone();
        tokio::spawn(
            async move {
                let state = match task.await {
                    Ok(Ok(())) => SessionState::Ended,
                    Ok(Err(e)) => SessionState::Failed { reason: e.to_string() },
                    Err(e) if e.is_panic() => SessionState::Failed {
                        reason: "internal error (the session task panicked)".into(),
                    },
                    Err(_) => SessionState::Failed {
                        reason: "the session task was aborted".into(),
                    },
                };
                match &state {
                    SessionState::Failed { reason } => tracing::warn!(%reason, "session failed"),
                    _ => tracing::info!("session ended"),
                }
                inner.finish(&task_id, state);
            }
            .instrument(span),
        );
        tracing::info!(id = %id, kind = %kind, "session started");
        Ok(id)
    }

    /// Live sessions, then recently finished ones.
    pub fn list(&self) -> Vec<SessionInfo> {
        let registry = self.inner.registry();
        let mut out: Vec<SessionInfo> = registry.live.values().map(|e| e.info.clone()).collect();
        out.sort_by_key(|info| (info.started_at, info.id.clone()));
        out.extend(registry.ended.iter().rev().cloned());
        out
    }

    /// One session, live or recently finished.
    pub fn get(&self, id: &SessionId) -> Option<SessionInfo> {
        let registry = self.inner.registry();
        registry
            .live
            .get(id)
            .map(|e| e.info.clone())
            .or_else(|| registry.ended.iter().find(|i| &i.id == id).cloned())
    }

    /// Asks a live session to stop now.
    pub fn stop(&self, id: &SessionId) -> Result<(), SupervisorError> {
        let registry = self.inner.registry();
        let entry = registry.live.get(id).ok_or(SupervisorError::NotFound)?;
        entry.cancel.cancel();
        Ok(())
    }

    /// Number of live sessions per (kind, state name), for metrics.
    pub fn counts(&self) -> HashMap<(SessionKind, &'static str), usize> {
        let mut counts = HashMap::new();
        for entry in self.inner.registry().live.values() {
            *counts.entry((entry.info.kind, entry.info.state.name())).or_default() += 1;
        }
        counts
    }

    /// Number of live sessions.
    pub fn live(&self) -> usize {
        *self.inner.live_count.borrow()
    }

    /// Stops admitting, tells sessions to finish, waits up to `timeout`, then stops what is left.
    pub async fn drain(&self, timeout: Duration) -> DrainOutcome {
        self.inner.drain.cancel();
        for entry in self.inner.registry().live.values_mut() {
            entry.info.state = SessionState::Draining;
            self.inner.changed(&entry.info);
        }
        tracing::info!(sessions = self.live(), ?timeout, "draining");
        let mut count = self.inner.live_count.subscribe();
        let outcome = match tokio::time::timeout(timeout, count.wait_for(|n| *n == 0)).await {
            Ok(_) => DrainOutcome::Clean,
            Err(_) => DrainOutcome::TimedOut { stopped: self.live() },
        };
        self.stop_all().await;
        outcome
    }

    /// Stops every session now and waits (bounded) for them to unwind.
    pub async fn stop_all(&self) {
        self.inner.drain.cancel();
        self.inner.root.cancel();
        let mut count = self.inner.live_count.subscribe();
        if tokio::time::timeout(STOP_GRACE, count.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(sessions = self.live(), "sessions did not stop in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn wait_final(sup: &Supervisor, id: &SessionId) -> SessionState {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = sup.get(id).expect("known session").state;
            if state.is_final() || tokio::time::Instant::now() > deadline {
                return state;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn lifecycle_stop_and_failure() {
        let sup = Supervisor::new(10);
        let id = sup
            .spawn(SessionKind::Egress, "e1", |ctx| async move {
                ctx.set_state(SessionState::Active);
                ctx.cancel_token().cancelled().await;
                Ok(())
            })
            .unwrap();
        let failing = sup
            .spawn(SessionKind::SipCall, "c1", |_ctx| async move {
                Err("callee hung up badly".into())
            })
            .unwrap();
        let panicking = sup
            .spawn(SessionKind::RtmpIngress, "i1", |_ctx| async move {
                if true {
                    panic!("boom");
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(
            wait_final(&sup, &failing).await,
            SessionState::Failed {
                reason: "callee hung up badly".into()
            }
        );
        assert!(matches!(
            wait_final(&sup, &panicking).await,
            SessionState::Failed { .. }
        ));
        assert_eq!(sup.get(&id).unwrap().state, SessionState::Active);
        assert_eq!(sup.counts().get(&(SessionKind::Egress, "active")), Some(&1));
        sup.stop(&id).unwrap();
        assert_eq!(wait_final(&sup, &id).await, SessionState::Ended);
        assert_eq!(sup.stop(&id), Err(SupervisorError::NotFound));
        assert_eq!(sup.list().len(), 3);
    }

    #[tokio::test]
    async fn state_changes_are_published_in_order() {
        let sup = Supervisor::new(10);
        let mut changes = sup.subscribe();
        let id = sup
            .spawn(SessionKind::RtmpIngress, "watched", |ctx| async move {
                ctx.set_state(SessionState::Active);
                ctx.set_state(SessionState::Active); // no change, no event
                ctx.set_state(SessionState::Reconnecting);
                Err("publisher gone".into())
            })
            .unwrap();
        let mut seen = Vec::new();
        while seen.last().is_none_or(|s: &SessionState| !s.is_final()) {
            let info = tokio::time::timeout(Duration::from_secs(5), changes.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(info.id, id);
            seen.push(info.state);
        }
        assert_eq!(
            seen.iter().map(SessionState::name).collect::<Vec<_>>(),
            ["starting", "active", "reconnecting", "failed"]
        );
    }

    #[tokio::test]
    async fn capacity_and_drain() {
        let sup = Supervisor::new(2);
        for _ in 0..2 {
            sup.spawn(SessionKind::Egress, "finishes-on-drain", |ctx| async move {
                ctx.drain_token().cancelled().await;
                Ok(())
            })
            .unwrap();
        }
        let refused = sup.spawn(SessionKind::Egress, "x", |_| async { Ok(()) });
        assert_eq!(refused.unwrap_err(), SupervisorError::AtCapacity { max: 2 });
        let costly = Supervisor::with_capacity(10, 10);
        costly
            .spawn_with_cost(SessionKind::Egress, "big", 8, |ctx| async move {
                ctx.cancel_token().cancelled().await;
                Ok(())
            })
            .unwrap();
        let refused = costly.spawn_with_cost(SessionKind::Egress, "too big", 3, |_| async { Ok(()) });
        assert_eq!(
            refused.unwrap_err(),
            SupervisorError::OverCapacity {
                used: 8,
                capacity: 10,
                cost: 3
            }
        );
        assert!(
            costly
                .spawn_with_cost(SessionKind::SipCall, "fits", 2, |_| async { Ok(()) })
                .is_ok()
        );
        costly.stop_all().await;
        assert_eq!(sup.drain(Duration::from_secs(5)).await, DrainOutcome::Clean);
        assert_eq!(sup.live(), 0);
        let refused = sup.spawn(SessionKind::Egress, "x", |_| async { Ok(()) });
        assert_eq!(refused.unwrap_err(), SupervisorError::Draining);
    }

    #[tokio::test]
    async fn drain_timeout_stops_stragglers() {
        let sup = Supervisor::new(10);
        let id = sup
            .spawn(SessionKind::SipCall, "ignores-drain", |ctx| async move {
                ctx.cancel_token().cancelled().await;
                Ok(())
            })
            .unwrap();
        let outcome = sup.drain(Duration::from_millis(50)).await;
        assert_eq!(outcome, DrainOutcome::TimedOut { stopped: 1 });
        assert_eq!(sup.get(&id).unwrap().state, SessionState::Ended);
    }
}
