//! Broadcast egress: SFU tracks (named ones, or a whole room's) decoded, composited over a black background in a grid
//! or speaker layout, re-encoded to H.264 + AAC and sent to RTMP(S) destinations, files and HLS.

pub mod branch;
pub mod composite;
pub mod decode_watch;
pub mod fanout;
pub mod layout;
pub mod output;
pub mod pipeline;
pub mod priming;
pub mod publish;
pub mod rtmp_out;
pub mod session;
pub mod sources;
pub mod speaker;
pub mod state;
pub mod store;
pub mod sync;
