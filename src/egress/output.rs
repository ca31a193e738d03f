//! One egress destination in its own small pipeline (`appsrc ! rtmp2sink`), fed with the FLV the main
//! egress pipeline muxes once. A destination that refuses or drops the connection is restarted with backoff
//! (forever) without touching the other outputs; after a restart it resumes at the next keyframe.

use super::store::EgressStore;
use crate::media::PipelineGuard;
use crate::media::frames::{Frame, FramePusher};
use crate::redact::Secret;
use gstreamer as gst;
use gstreamer::prelude::*;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest wait between two restarts of one output.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// FLV buffers waiting for one output; beyond it the output drops and resumes at a keyframe.
const QUEUE: usize = 512;

/// Starts the task of output `index` of egress `egress`; returns where to send the FLV buffers.
pub fn spawn(
    store: EgressStore,
    egress: String,
    index: usize,
    url: Secret,
    caps: gst::Caps,
    cancel: CancellationToken,
) -> mpsc::Sender<Frame> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(store, egress, index, url, caps, rx, cancel));
    tx
}

fn set_state(store: &EgressStore, egress: &str, index: usize, state: &str, reconnected: bool) {
    store.update(egress, |e| {
        if let Some(output) = e.outputs.get_mut(index) {
            output.state = state.to_string();
            if reconnected {
                output.reconnects += 1;
            }
        }
    });
}

async fn run(
    store: EgressStore,
    egress: String,
    index: usize,
    url: Secret,
    caps: gst::Caps,
    mut frames: mpsc::Receiver<Frame>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let description = format!(
            "appsrc name=src format=time is-live=true ! queue max-size-time=2000000000 leaky=downstream ! \
             rtmp2sink name=sink location=\"{}\"",
            url.expose().replace('"', "")
        );
        let started = PipelineGuard::parse("egress-output", &description).and_then(|guard| {
            guard.element("src")?.set_property("caps", &caps);
            let pusher = FramePusher::new(&guard, "src")?;
            let ended = guard.start()?;
            Ok((guard, pusher, ended))
        });
        let reason = match started {
            Ok((guard, pusher, mut ended)) => {
                let mut sending = false;
                let reason = loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        end = &mut ended => break end.map(|e| e.to_string()).unwrap_or_else(|_| "stopped".into()),
                        frame = frames.recv() => {
                            let Some(frame) = frame else { return };
                            // A (re)started output begins at a keyframe, after the stream headers of the caps.
                            if !sending && !frame.keyframe {
                                continue;
                            }
                            if !sending {
                                sending = true;
                                set_state(&store, &egress, index, "active", false);
                                backoff = Duration::from_millis(500);
                            }
                            pusher.push_with_dts(&frame.data, frame.pts_ns, frame.pts_ns, frame.keyframe);
                        }
                    }
                };
                drop(guard);
                reason
            }
            Err(e) => e.to_string(),
        };
        // GStreamer's message may quote the URL: keep its stream key out of the log.
        let reason = reason.replace(url.expose().as_str(), &super::store::redact_url(url.expose()));
        tracing::warn!(egress = %egress, output = index, %reason, ?backoff, "egress output down; retrying");
        set_state(&store, &egress, index, "reconnecting", true);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        while frames.try_recv().is_ok() {} // stale: resume from a fresh keyframe
    }
}
