//! SIP dial-in and dial-out: phone calls bridged into SFU rooms.

pub mod g711;
pub mod jitter;
pub mod mixer;
pub mod rtp;
pub mod sdp;
pub mod uplink;
