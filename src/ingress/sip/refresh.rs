//! Keeping a call's session timer (RFC 4028) alive: when the gateway is the refresher (a dial-out whose callee
//! said `refresher=uac`) it refreshes at half the interval — UPDATE when the callee allows it, else (or when
//! the UPDATE is refused as unknown) a re-INVITE with the SDP in use — without holding up the media loop.
//! Either way, a session that goes a whole interval without a refresh is over.

use super::timer::{Refresher, Timer, refresh_headers};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Response};
use std::time::Instant;
use tokio::task::JoinHandle;

/// A refresh request on its way: its final response (`None`: the dialog was not confirmed).
type RefreshTask = JoinHandle<Result<Option<Response>, String>>;

/// What a finished refresh asks of the call.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refreshed {
    /// Nothing more to do.
    Done,
    /// The answer SDP of our re-INVITE, to apply to the leg.
    Answer(Vec<u8>),
    /// The refresh failed for good (RFC 4028 §10: 408 or 481): end the call.
    Fatal(String),
}

/// A call's session timer and the refresh in flight.
pub(super) struct Refresh {
    timer: Option<Timer>,
    last: Instant,
    /// After a refused refresh: not again before this.
    not_before: Instant,
    /// The refresh in flight: whether it is an UPDATE, and its task.
    inflight: Option<(bool, RefreshTask)>,
}

impl Refresh {
    /// A refresher for `timer` (none: the call has no session timer).
    pub fn new(timer: Option<Timer>) -> Self {
        Self {
            timer,
            last: Instant::now(),
            not_before: Instant::now(),
            inflight: None,
        }
    }

    /// The running timer.
    pub fn timer(&self) -> Option<Timer> {
        self.timer
    }

    /// The other side refreshed (re-INVITE or UPDATE).
    pub fn refreshed_by_them(&mut self) {
        self.last = Instant::now();
    }

    /// A whole interval went by without a refresh.
    pub fn expired(&self) -> bool {
        self.timer.is_some_and(|t| self.last.elapsed() > t.interval)
    }

    /// Sends our refresh when it is due and none is in flight; `offer` gives the SDP of a re-INVITE.
    pub fn start_if_due(&mut self, dialog: &InviteDialog, offer: impl FnOnce() -> String) {
        let Some(timer) = self.timer.filter(|t| t.refresher == Refresher::Us) else {
            return;
        };
        if self.inflight.is_some() || self.last.elapsed() < timer.refresh_after() || Instant::now() < self.not_before {
            return;
        }
        let dialog = dialog.clone();
        let mut headers = refresh_headers(&timer);
        let task = if timer.by_update {
            tokio::spawn(async move { dialog.update(Some(headers), None).await.map_err(|e| e.to_string()) })
        } else {
            headers.push(Header::ContentType("application/sdp".into()));
            let body = offer().into_bytes();
            tokio::spawn(async move {
                dialog
                    .reinvite(Some(headers), Some(body))
                    .await
                    .map_err(|e| e.to_string())
            })
        };
        tracing::debug!(update = timer.by_update, "sip: refreshing the session");
        self.inflight = Some((timer.by_update, task));
    }

    /// The outcome of the refresh in flight; pending while there is none.
    pub async fn outcome(&mut self) -> Result<Option<Response>, String> {
        match self.inflight.as_mut() {
            Some((_, task)) => task.await.unwrap_or_else(|e| Err(e.to_string())),
            None => std::future::pending().await,
        }
    }

    /// Takes a finished refresh's outcome into account.
    pub fn finished(&mut self, outcome: Result<Option<Response>, String>) -> Refreshed {
        let Some((by_update, _)) = self.inflight.take() else {
            return Refreshed::Done;
        };
        let response = match outcome {
            Ok(Some(response)) => response,
            Ok(None) => return Refreshed::Done, // the dialog is not confirmed (yet, or any more)
            Err(e) => {
                tracing::warn!(error = %e, "sip: session refresh not sent");
                return Refreshed::Done;
            }
        };
        let status = response.status_code.code();
        match status {
            200..=299 => {
                self.last = Instant::now();
                // The answer may change the interval (and hand the refreshing over).
                if let (Some(timer), Some(answered)) = (self.timer.as_mut(), super::timer::from_answer(&response)) {
                    timer.interval = answered.interval;
                    timer.refresher = answered.refresher;
                }
                if by_update || response.body.is_empty() {
                    Refreshed::Done
                } else {
                    Refreshed::Answer(response.body)
                }
            }
            405 | 501 if by_update => {
                tracing::info!(status, "sip: UPDATE refused; refreshing with re-INVITE");
                if let Some(timer) = self.timer.as_mut() {
                    timer.by_update = false;
                }
                Refreshed::Done
            }
            408 | 481 => Refreshed::Fatal(format!("session refresh answered {status}")),
            _ => {
                // Again a little later (491 glare, a busy server), well before the session expires.
                let interval = self.timer.map(|t| t.interval).unwrap_or_default();
                self.not_before = Instant::now() + (interval / 16).max(std::time::Duration::from_secs(2));
                tracing::info!(status, "sip: session refresh refused; trying again");
                Refreshed::Done
            }
        }
    }
}
