//! Calls as the API shows them. Each call's session writes its state here; the API reads it and sends
//! commands (DTMF) through the call's channel.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// Ended calls kept for the API at most (the oldest are forgotten first).
const KEEP_ENDED: usize = 1_000;

/// Who started the call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CallDirection {
    /// A phone called the gateway.
    #[default]
    Inbound,
    /// The gateway called a phone through a trunk.
    Outbound,
}

/// State of a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    /// Setting up (inbound: before the answer; outbound: INVITE sent).
    #[default]
    Ringing,
    /// Outbound, not answered yet, but the callee sends early media (a 183 with SDP: ringback, an
    /// announcement), which the room hears.
    EarlyMedia,
    /// Answered, waiting for the caller's PIN.
    Pin,
    /// Answered and in the room.
    Answered,
    /// Answered, the phone put the call on hold.
    OnHold,
    /// Finished.
    Ended,
}

/// Quality figures of one call, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallStats {
    /// RTP packets received from the phone.
    pub packets_from_phone: u64,
    /// Packets the phone's sequence numbers say were lost.
    pub lost_from_phone: u64,
    /// Inter-arrival jitter of the phone's packets (RFC 3550), ms.
    pub jitter_from_phone_ms: f64,
    /// RTP packets sent to the phone.
    pub packets_to_phone: u64,
    /// 20 ms frames of the room's audio that were concealed (lost or late from the SFU).
    pub concealed_to_phone: u64,
    /// Packets from the SFU that came after their play time.
    pub late_to_phone: u64,
    /// DTMF digits received from the phone.
    pub dtmf_received: u64,
    /// Loss toward the phone over its last RTCP report interval, as the phone reports it, %.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_to_phone_pct: Option<f64>,
    /// Jitter of the gateway's packets as the phone reports it, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_to_phone_ms: Option<f64>,
    /// Round trip to the phone from RTCP (its report on our last sender report), ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
}

/// The SFU side of a call: its session and the caller's track.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallSfu {
    /// The call's SFU session.
    pub session_id: String,
    /// Tracks it publishes (the caller's audio).
    pub tracks: Vec<crate::rooms::PublishedTrack>,
}

/// One call.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    /// Call id (the gateway session id).
    pub id: String,
    /// Inbound or outbound.
    pub direction: CallDirection,
    /// State.
    pub state: CallState,
    /// The room.
    pub room: String,
    /// Caller (From user).
    pub from: String,
    /// Called number (Request-URI user).
    pub to: String,
    /// The trunk it came through or goes out by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trunk: Option<String>,
    /// Codec of the phone leg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// Whether the phone leg is encrypted (SDES-SRTP).
    pub srtp: bool,
    /// The caller's SFU track.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_name: Option<String>,
    /// The SFU session and track, once connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sfu: Option<CallSfu>,
    /// The gateway's RTP address of the phone leg (as written in its SDP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_rtp: Option<String>,
    /// Where the gateway sends the phone's RTP (after latching onto its real source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_rtp: Option<String>,
    /// The SIP status the call ended with (or the final answer of a dial-out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    /// Why it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds from INVITE to answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_ms: Option<u64>,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    /// Quality figures.
    pub stats: CallStats,
}

/// A command for a running call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallCommand {
    /// Play these digits to the phone (RFC 4733).
    Dtmf(String),
}

struct Entry {
    view: CallView,
    commands: Option<mpsc::Sender<CallCommand>>,
}

/// The calls, live and recently ended.
#[derive(Clone, Default)]
pub struct CallStore {
    inner: Arc<Mutex<BTreeMap<String, Entry>>>,
}

impl CallStore {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new call with its command channel.
    pub fn insert(&self, view: CallView, commands: mpsc::Sender<CallCommand>) {
        let mut calls = self.lock();
        let ended: Vec<String> = calls
            .iter()
            .filter(|(_, e)| e.view.state == CallState::Ended)
            .map(|(id, _)| id.clone())
            .collect();
        if ended.len() >= KEEP_ENDED {
            let mut oldest = ended;
            oldest.sort_by_key(|id| calls[id].view.started_at);
            for id in &oldest[..oldest.len() + 1 - KEEP_ENDED] {
                calls.remove(id);
            }
        }
        calls.insert(
            view.id.clone(),
            Entry {
                view,
                commands: Some(commands),
            },
        );
    }

    /// Registers a call unless it is already there.
    pub fn insert_if_absent(&self, view: CallView, commands: mpsc::Sender<CallCommand>) {
        let mut calls = self.lock();
        calls.entry(view.id.clone()).or_insert(Entry {
            view,
            commands: Some(commands),
        });
    }

    /// Changes a call's view.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut CallView)) {
        if let Some(entry) = self.lock().get_mut(id) {
            change(&mut entry.view);
            if entry.view.state == CallState::Ended {
                entry.commands = None;
            }
        }
    }

    /// One call.
    pub fn get(&self, id: &str) -> Option<CallView> {
        self.lock().get(id).map(|e| e.view.clone())
    }

    /// Every call, live first, then by start time.
    pub fn list(&self) -> Vec<CallView> {
        let mut calls: Vec<CallView> = self.lock().values().map(|e| e.view.clone()).collect();
        calls.sort_by_key(|c| (c.state == CallState::Ended, c.started_at));
        calls
    }

    /// Sends a command to a live call; false when the call is unknown or over.
    pub fn command(&self, id: &str, command: CallCommand) -> bool {
        let sender = self.lock().get(id).and_then(|e| e.commands.clone());
        sender.is_some_and(|s| s.try_send(command).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_listed_updated_and_commanded() {
        let store = CallStore::default();
        let (tx, mut rx) = mpsc::channel(4);
        store.insert(
            CallView {
                id: "a".into(),
                started_at: 2,
                ..Default::default()
            },
            tx,
        );
        let (tx2, _rx2) = mpsc::channel(4);
        store.insert(
            CallView {
                id: "b".into(),
                started_at: 1,
                ..Default::default()
            },
            tx2,
        );
        assert!(store.command("a", CallCommand::Dtmf("12".into())));
        assert_eq!(rx.try_recv().unwrap(), CallCommand::Dtmf("12".into()));
        store.update("b", |c| c.state = CallState::Ended);
        assert!(
            !store.command("b", CallCommand::Dtmf("1".into())),
            "an ended call takes no command"
        );
        assert!(!store.command("zz", CallCommand::Dtmf("1".into())));
        let ids: Vec<String> = store.list().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["a", "b"], "live calls first");
        assert_eq!(store.get("b").unwrap().state, CallState::Ended);
    }
}
