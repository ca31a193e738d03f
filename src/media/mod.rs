//! GStreamer glue: initialisation, the pipeline fragments of `pipelines/`, pipeline ownership, and
//! frame bridges between pipelines and channels.

pub mod fragments;
pub mod frames;
pub mod keyframes;
pub mod pipeline;

pub use fragments::Fragments;
pub use pipeline::{MediaError, PipelineEnd, PipelineGuard};

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), gstreamer::glib::Error> {
    gstreamer::init()
}
