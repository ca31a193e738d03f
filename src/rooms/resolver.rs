//! The room resolver webhook (`rooms.resolver_url`): asked once per room the gateway does not know.
//!
//! The gateway POSTs `{"room": "<name>"}` and expects `200 {"participants": [Participant…]}` (each
//! participant's `source` becomes `resolver`) or `404` for a room that is empty. Either answer is kept: the
//! webhook is not asked about that room again (see [`Resolver::forget`]). A failure (timeout, other status,
//! unusable reply) is not kept, so the next [`Resolver::ensure`] asks again. Concurrent calls for one room
//! share a single webhook call.

use super::RoomError;
use super::model::{Participant, ParticipantSource, validate_participant, validate_room_name};
use super::registry::Rooms;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long one webhook call may take, connection included.
pub const RESOLVER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct ResolveRequest<'a> {
    room: &'a str,
}

#[derive(Deserialize)]
struct ResolveReply {
    #[serde(default)]
    participants: Vec<Participant>,
}

/// One cell per room asked about; set once the webhook answered for it.
type Cells = HashMap<String, Arc<OnceCell<()>>>;

struct Inner {
    /// Not logged: it may carry a token.
    url: Option<String>,
    http: reqwest::Client,
    resolved: Mutex<Cells>,
}

/// Calls the resolver webhook for rooms the registry does not know; cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl Resolver {
    /// A resolver calling `url`; with `None` every room is simply what the registry holds.
    pub fn new(url: Option<String>) -> Result<Self, RoomError> {
        let http = reqwest::Client::builder()
            .timeout(RESOLVER_TIMEOUT)
            .connect_timeout(RESOLVER_TIMEOUT)
            .build()
            .map_err(|e| RoomError::Resolver(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.filter(|url| !url.is_empty()),
                http,
                resolved: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Whether a webhook is configured.
    pub fn is_configured(&self) -> bool {
        self.inner.url.is_some()
    }

    /// Makes sure `rooms` holds what is known about `room`: nothing to do when the room has participants,
    /// when no webhook is configured, or when the webhook already answered for it; otherwise one webhook call
    /// (shared by concurrent callers) whose participants join the room (participants already present are
    /// kept). Cancel-safe: a dropped call leaves the room unresolved.
    pub async fn ensure(&self, rooms: &Rooms, room: &str) -> Result<(), RoomError> {
        validate_room_name(room)?;
        let Some(url) = self.inner.url.as_deref() else {
            return Ok(());
        };
        if rooms.contains(room) {
            return Ok(());
        }
        let cell = self.cell(room);
        let result = cell.get_or_try_init(|| self.fetch(rooms, url, room)).await.map(|_| ());
        if result.is_err() {
            self.forget_failed(room, &cell);
        }
        result
    }

    /// Forgets the webhook's answer for `room`, so the next [`ensure`](Self::ensure) asks again (for a room
    /// the application deleted, say).
    pub fn forget(&self, room: &str) {
        self.resolved().remove(room);
    }

    fn resolved(&self) -> MutexGuard<'_, Cells> {
        // Each update is a single map operation, so a poisoned lock still holds a consistent map.
        self.inner.resolved.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cell(&self, room: &str) -> Arc<OnceCell<()>> {
        self.resolved().entry(room.to_string()).or_default().clone()
    }

    /// Drops the cell of a failed call unless another caller is using it, so failures leave nothing behind.
    fn forget_failed(&self, room: &str, cell: &Arc<OnceCell<()>>) {
        let mut resolved = self.resolved();
        // Two references: the map's and ours.
        if cell.get().is_none()
            && Arc::strong_count(cell) <= 2
            && resolved.get(room).is_some_and(|c| Arc::ptr_eq(c, cell))
        {
            resolved.remove(room);
        }
    }

    async fn fetch(&self, rooms: &Rooms, url: &str, room: &str) -> Result<(), RoomError> {
        let response = self
            .inner
            .http
            .post(url)
            .json(&ResolveRequest { room })
            .send()
            .await
            .map_err(|e| request_failed(room, e))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            tracing::info!(room, "room resolver: no such room, it starts empty");
            return Ok(());
        }
        if !status.is_success() {
            tracing::warn!(room, %status, "room resolver failed");
            return Err(RoomError::Resolver(format!("the webhook replied {status}")));
        }
        let reply = response
            .json::<ResolveReply>()
            .await
            .map_err(|e| request_failed(room, e))?;
        let participants = checked(reply.participants).map_err(|e| {
            tracing::warn!(room, error = %e, "room resolver replied something unusable");
            RoomError::Resolver(format!("unusable reply: {e}"))
        })?;
        let joined = rooms.seed(room, participants).len();
        tracing::info!(room, joined, "room resolved");
        Ok(())
    }
}

fn request_failed(room: &str, error: reqwest::Error) -> RoomError {
    // The URL may carry a token: keep it out of the message.
    let error = error.without_url();
    let what = if error.is_timeout() {
        format!("no reply within {}s", RESOLVER_TIMEOUT.as_secs())
    } else if let Some(cause) = std::error::Error::source(&error) {
        format!("{error}: {cause}")
    } else {
        error.to_string()
    };
    tracing::warn!(room, error = %what, "room resolver failed");
    RoomError::Resolver(what)
}

/// Validates the webhook's participants (all or none) and marks them as coming from the resolver.
fn checked(mut participants: Vec<Participant>) -> Result<Vec<Participant>, RoomError> {
    let mut ids = HashSet::new();
    for (i, participant) in participants.iter_mut().enumerate() {
        let path = format!("participants[{i}]");
        participant.source = ParticipantSource::Resolver;
        validate_participant(participant).map_err(|e| e.within(&path))?;
        if !ids.insert(participant.id.clone()) {
            return Err(RoomError::invalid(format!("{path}.id"), "duplicate participant id"));
        }
    }
    Ok(participants)
}

#[cfg(test)]
mod tests;
