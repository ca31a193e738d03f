//! GStreamer glue: initialisation and the pipeline fragments of `pipelines/`.

pub mod fragments;

pub use fragments::Fragments;

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), gstreamer::glib::Error> {
    gstreamer::init()
}
