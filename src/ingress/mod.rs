//! Ingress adapters: RTMP(S) publishers into the SFU, and the ingress registry.

pub mod rtmp;
pub mod sip;
pub mod store;
