//! Pipeline ownership: a guard that stops the pipeline (off the async runtime) when dropped, and a bus
//! watcher that turns errors and EOS into a typed end reason.

use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::oneshot;

/// Why a pipeline stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineEnd {
    /// End of stream.
    #[error("end of stream")]
    Eos,
    /// An element posted an error.
    #[error("pipeline error in {element}: {message}")]
    Error {
        /// The element's name.
        element: String,
        /// GStreamer's message.
        message: String,
    },
}

/// Errors building or starting a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The launch description did not parse or an element is missing.
    #[error("cannot build pipeline `{role}`: {message}")]
    Build {
        /// The pipeline's role.
        role: String,
        /// Why.
        message: String,
    },
    /// The state change to PLAYING failed.
    #[error("cannot start pipeline `{role}`")]
    Start {
        /// The pipeline's role.
        role: String,
    },
}

/// Owns a running pipeline; sets it to NULL on a separate thread when dropped.
pub struct PipelineGuard {
    pipeline: gst::Pipeline,
    role: String,
}

impl PipelineGuard {
    /// Parses `description` into a pipeline named `role`.
    pub fn parse(role: &str, description: &str) -> Result<Self, MediaError> {
        super::init().map_err(|e| MediaError::Build {
            role: role.to_string(),
            message: e.to_string(),
        })?;
        let element = gst::parse::launch(description).map_err(|e| MediaError::Build {
            role: role.to_string(),
            message: e.to_string(),
        })?;
        let pipeline = element.downcast::<gst::Pipeline>().map_err(|_| MediaError::Build {
            role: role.to_string(),
            message: "not a pipeline".into(),
        })?;
        pipeline.set_property("name", role);
        Ok(Self {
            pipeline,
            role: role.to_string(),
        })
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// The element called `name`.
    pub fn element(&self, name: &str) -> Result<gst::Element, MediaError> {
        self.pipeline.by_name(name).ok_or_else(|| MediaError::Build {
            role: self.role.clone(),
            message: format!("no element named `{name}`"),
        })
    }

    /// Starts it and returns a receiver that completes with the reason it ended.
    pub fn start(&self) -> Result<oneshot::Receiver<PipelineEnd>, MediaError> {
        let bus = self.pipeline.bus().ok_or_else(|| MediaError::Start {
            role: self.role.clone(),
        })?;
        let (tx, rx) = oneshot::channel();
        let role = self.role.clone();
        // The bus is consumed on its own thread; it ends when the pipeline ends or is stopped.
        std::thread::Builder::new()
            .name(format!("bus-{role}"))
            .spawn(move || {
                for message in bus.iter_timed(gst::ClockTime::NONE) {
                    let end = match message.view() {
                        gst::MessageView::Eos(_) => PipelineEnd::Eos,
                        gst::MessageView::Error(error) => PipelineEnd::Error {
                            element: error.src().map(|s| s.name().to_string()).unwrap_or_default(),
                            message: error.error().to_string(),
                        },
                        gst::MessageView::Application(_) => return, // stop request from Drop
                        _ => continue,
                    };
                    tracing::debug!(pipeline = %role, %end, "pipeline ended");
                    let _ = tx.send(end);
                    return;
                }
            })
            .map_err(|_| MediaError::Start {
                role: self.role.clone(),
            })?;
        self.pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| MediaError::Start {
                role: self.role.clone(),
            })?;
        Ok(rx)
    }
}

impl Drop for PipelineGuard {
    fn drop(&mut self) {
        let pipeline = self.pipeline.clone();
        let _ = std::thread::Builder::new().name("pipeline-stop".into()).spawn(move || {
            let _ = pipeline.set_state(gst::State::Null);
            if let Some(bus) = pipeline.bus() {
                let _ = bus.post(gst::message::Application::new(gst::Structure::new_empty("stop")));
            }
        });
    }
}
