//! sfu-gateway: bridges phone calls (SIP) and livestreams (RTMP) into the Cloudflare Realtime SFU, and SFU
//! tracks back out. See `docs/` and the architecture notes in the README.

#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod config;
pub mod egress;
pub mod error;
pub mod ingress;
pub mod logging;
pub mod media;
pub mod readiness;
pub mod redact;
pub mod rooms;
pub mod server;
pub mod sfu;
pub mod supervisor;
pub mod webhooks;
