//! SIP dial-in and dial-out: phone calls bridged into SFU rooms.
//!
//! `server` runs the rsipstack endpoint and routes requests; `gate` decides who may call; `dispatch` finds
//! the room; `call` is the supervised session of one call and `bridge` its media loop, with its RTP `leg`,
//! the `uplink` (G.711/G.722 → Opus toward the SFU); `roommix` runs one SFU subscriber and one `mixer` per
//! room (each track through its own `jitter` buffer, decoded once) whose frames every phone of the room hears
//! minus its own part. Everything except `server`, `call`, `bridge`, `dialout`, `roommix` and `rtp_ports`
//! is sans-IO.

pub mod bridge;
pub mod call;
pub mod dialout;
pub mod dispatch;
pub mod g711;
pub mod gate;
pub mod jitter;
pub mod leg;
pub mod mixer;
pub mod pin;
pub mod refresh;
pub mod roommix;
pub mod rtcp;
pub mod rtp;
pub mod rtp_ports;
pub mod sdp;
pub mod server;
pub mod srtcp;
pub mod srtp;
pub mod store;
pub mod timer;
pub mod transfer;
pub mod uplink;

pub use server::{SipDeps, SipServer, start};
pub use store::{CallCommand, CallDirection, CallSfu, CallState, CallStats, CallStore, CallView};
