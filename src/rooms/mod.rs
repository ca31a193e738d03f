//! Rooms: the SFU has none, so the gateway keeps them.
//!
//! A room is a named set of [`Participant`]s, each with its SFU session id and the tracks it publishes. Two
//! sources of truth feed it, and both may be used at once:
//!
//! - the application registers, updates and removes participants through the control API
//!   ([`Rooms::upsert_participant`], [`Rooms::remove_participant`], [`Rooms::remove_room`]);
//! - a resolver webhook (`rooms.resolver_url`) the gateway calls, once per room, when it needs a room it does
//!   not know ([`Resolver::ensure`]).
//!
//! Gateway sessions (an RTMP ingest, a phone caller) join their room with [`Rooms::join_gateway`]; the
//! returned [`Membership`] removes them when the session ends.
//!
//! Every change is a [`RoomEvent`] with the room's next sequence number. [`Rooms::subscribe`] returns the
//! room's snapshot together with a receiver of exactly the events that follow it, delivered as they happen.
//! A subscriber that falls too far behind gets [`SubscriptionError::Lagged`] and re-snapshots with
//! [`RoomSubscription::resync`]. A `ParticipantLeft` event means all of that participant's tracks are gone
//! too; no `TrackRemoved` precedes it.
//!
//! The registry is plain in-memory state behind one short-lived lock; nothing here does I/O except the
//! resolver's webhook call.

mod diff;
pub mod follow;
mod membership;
mod model;
pub mod pull;
mod registry;
mod resolver;
mod subscription;

pub use membership::Membership;
pub use model::{
    MAX_DISPLAY_NAME_LEN, MAX_ID_LEN, MAX_METADATA_BYTES, MAX_RID_LEN, MAX_RIDS_PER_TRACK, MAX_TRACK_NAME_LEN,
    MAX_TRACKS_PER_PARTICIPANT, Participant, ParticipantSource, PublishedTrack, RoomEvent, RoomEventKind, RoomSnapshot,
    validate_participant, validate_participant_id, validate_room_name, validate_track,
};
pub use registry::{DEFAULT_EVENT_BUFFER, Rooms};
pub use resolver::{RESOLVER_TIMEOUT, Resolver};
pub use subscription::{RoomSubscription, SubscriptionError};

use crate::error::ErrorClass;

/// Why a room operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The input is malformed; `field` names the offending field (`tracks[3].trackName`).
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// The field's path in the input.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The room, participant or track does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The resolver webhook failed or replied something unusable (a later call retries).
    #[error("room resolver failed: {0}")]
    Resolver(String),
}

impl RoomError {
    /// The error class, for status codes.
    pub fn class(&self) -> ErrorClass {
        match self {
            RoomError::Invalid { .. } => ErrorClass::BadInput,
            RoomError::NotFound { .. } => ErrorClass::NotFound,
            RoomError::Resolver(_) => ErrorClass::Upstream,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        RoomError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        RoomError::NotFound { what: what.into() }
    }

    /// Prefixes the field of an `Invalid` error with the path of the enclosing object (`participants[2]`).
    pub(crate) fn within(self, prefix: &str) -> Self {
        match self {
            RoomError::Invalid { field, problem } => RoomError::Invalid {
                field: format!("{prefix}.{field}"),
                problem,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_know_their_class_and_nest_field_paths() {
        let invalid = RoomError::invalid("trackName", "must not be empty").within("tracks[3]");
        assert_eq!(invalid.to_string(), "invalid tracks[3].trackName: must not be empty");
        assert_eq!(invalid.class().http_status(), 400);
        assert_eq!(RoomError::not_found("room \"r\"").class(), ErrorClass::NotFound);
        assert_eq!(RoomError::Resolver("timeout".into()).class(), ErrorClass::Upstream);
        assert_eq!(
            RoomError::Resolver("x".into()).within("p"),
            RoomError::Resolver("x".into())
        );
    }
}
