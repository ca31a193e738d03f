//! Broadcast egress: SFU tracks decoded, composited over a slate, re-encoded to H.264 + AAC and sent to
//! RTMP(S) destinations.

pub mod output;
pub mod pipeline;
pub mod session;
pub mod store;
