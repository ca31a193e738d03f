//! Everything on the SFU side: the Calls API types, the HTTP client, the WebRTC peer, and the embedded SFU.

pub mod api;
pub mod client;
pub mod embedded;
pub mod peer;
