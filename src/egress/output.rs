//! One egress destination in its own small pipeline, fed with the FLV the main egress pipeline muxes once:
//! `appsrc ! rtmp2sink` for RTMP(S), `appsrc ! flvdemux ! splitmuxsink` writing fragmented MP4 (a crash
//! loses at most the last second), or `appsrc ! flvdemux ! hlssink2` writing a live HLS playlist. A destination that refuses or drops the connection is restarted with
//! backoff (forever) without touching the other outputs; after a restart it resumes at the next keyframe.

use super::store::{EgressState, EgressStore};
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

/// Where an output sends the stream.
#[derive(Debug, Clone)]
pub enum Target {
    /// An rtmp:// or rtmps:// URL (its key is a secret).
    Rtmp(Secret),
    /// A fragmented MP4 recording: files `{path}_00000.mp4`, ... (a new file every 10 minutes).
    File(std::path::PathBuf),
    /// Live HLS in a directory: `index.m3u8` over the last 6 segments of ~2 s (`segment00000.ts`, ...; the
    /// 12 newest are kept).
    Hls(std::path::PathBuf),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Rtmp(url) => format!(
                "appsrc name=src format=time is-live=true ! queue max-size-time=2000000000 leaky=downstream ! \
                 rtmp2sink name=sink location=\"{}\"",
                url.expose().replace('"', "")
            ),
            Target::File(path) => format!(
                "appsrc name=src format=time is-live=true ! flvdemux name=demux \
                 demux.video ! queue ! h264parse ! rec.video demux.audio ! queue ! aacparse ! rec.audio_0 \
                 splitmuxsink name=rec async-finalize=true muxer-factory=mp4mux \
                 muxer-properties=\"properties,fragment-duration=(uint)1000\" max-size-time=600000000000 \
                 location=\"{}_%05d.mp4\"",
                path.display().to_string().replace('"', "")
            ),
            Target::Hls(dir) => {
                let dir = dir.display().to_string().replace('"', "");
                format!(
                    "appsrc name=src format=time is-live=true ! flvdemux name=demux \
                     demux.video ! queue ! h264parse ! hls.video demux.audio ! queue ! aacparse ! hls.audio \
                     hlssink2 name=hls target-duration=2 playlist-length=6 max-files=12 \
                     send-keyframe-requests=false location=\"{dir}/segment%05d.ts\" \
                     playlist-location=\"{dir}/index.m3u8\""
                )
            }
        }
    }

    /// The target as it may be logged (stream key redacted).
    fn shown(&self) -> String {
        match self {
            Target::Rtmp(url) => super::store::redact_url(url.expose()),
            Target::File(path) | Target::Hls(path) => path.display().to_string(),
        }
    }
}

/// Starts the task of output `index` of egress `egress`; returns where to send the FLV buffers, and the task
/// (which ends after `cancel`, once a recording has written its last fragment).
pub fn spawn(
    store: EgressStore,
    egress: String,
    index: usize,
    target: Target,
    caps: gst::Caps,
    cancel: CancellationToken,
) -> (mpsc::Sender<Frame>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(store, egress, index, target, caps, rx, cancel));
    (tx, task)
}

/// The FLV stream headers carried in the caps (file outputs demux the bytes and need them first).
fn stream_headers(caps: &gst::Caps) -> Vec<gst::Buffer> {
    let headers: Vec<gst::Buffer> = caps
        .structure(0)
        .and_then(|s| s.get::<gst::Array>("streamheader").ok())
        .map(|array| array.iter().filter_map(|v| v.get::<gst::Buffer>().ok()).collect())
        .unwrap_or_default();
    tracing::debug!(headers = headers.len(), %caps, "flv stream headers");
    headers
}

fn set_state(store: &EgressStore, egress: &str, index: usize, state: &str, reconnected: bool) {
    store.update(egress, |e| {
        if let Some(output) = e.outputs.get_mut(index) {
            output.state = state.to_string();
            if reconnected {
                output.reconnects += 1;
            }
        }
        // The egress is active the moment its last output starts sending (the session's tick only refreshes).
        if e.state == EgressState::Starting && e.outputs.iter().all(|o| o.state == "active") {
            e.state = EgressState::Active;
        }
    });
}

async fn run(
    store: EgressStore,
    egress: String,
    index: usize,
    target: Target,
    caps: gst::Caps,
    mut frames: mpsc::Receiver<Frame>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    // Bytes sent over all attempts, and in the current second.
    let (mut bytes, mut this_second) = (0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let headers = match target {
        Target::File(_) | Target::Hls(_) => stream_headers(&caps),
        Target::Rtmp(_) => Vec::new(), // rtmp2sink takes them from the caps
    };
    if let Target::Hls(dir) = &target {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(egress = %egress, output = index, error = %e, "cannot create the HLS directory");
        }
    }
    loop {
        let description = target.describe();
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
                        () = cancel.cancelled() => {
                            // Let a recording write its last fragment before the pipeline stops.
                            pusher.end();
                            let _ = tokio::time::timeout(Duration::from_secs(3), &mut ended).await;
                            return;
                        }
                        end = &mut ended => break end.map(|e| e.to_string()).unwrap_or_else(|_| "stopped".into()),
                        frame = frames.recv() => {
                            let Some(frame) = frame else { return };
                            // flvmux also sends its headers as buffers; they come from the caps instead.
                            if frame.header {
                                continue;
                            }
                            // A (re)started output begins at a keyframe, after the stream headers of the caps.
                            if !sending && !frame.keyframe {
                                continue;
                            }
                            if !sending {
                                sending = true;
                                for header in &headers {
                                    pusher.push_buffer(header.clone());
                                }
                                set_state(&store, &egress, index, "active", false);
                                backoff = Duration::from_millis(500);
                            }
                            pusher.push_with_dts(&frame.data, frame.pts_ns, frame.pts_ns, frame.keyframe);
                            bytes += frame.data.len() as u64;
                            this_second += frame.data.len() as u64;
                        }
                        _ = tick.tick() => {
                            let rate = std::mem::take(&mut this_second) * 8;
                            store.update(&egress, |e| {
                                if let Some(output) = e.outputs.get_mut(index) {
                                    output.bytes = bytes;
                                    output.bitrate_bps = rate;
                                }
                            });
                        }
                    }
                };
                drop(guard);
                reason
            }
            Err(e) => e.to_string(),
        };
        // GStreamer's message may quote the URL: keep its stream key out of the log.
        let reason = match &target {
            Target::Rtmp(url) => reason.replace(url.expose().as_str(), &target.shown()),
            Target::File(_) | Target::Hls(_) => reason,
        };
        tracing::warn!(egress = %egress, output = index, target = %target.shown(), %reason, ?backoff, "egress output down; retrying");
        set_state(&store, &egress, index, "reconnecting", true);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        while frames.try_recv().is_ok() {} // stale: resume from a fresh keyframe
    }
}
