//! One egress destination, fed with the FLV the main egress pipeline muxes once: RTMP(S) through our own
//! publisher straight from this task (`rtmp_out.rs`), `appsrc ! flvdemux ! splitmuxsink` writing fragmented
//! MP4 (a crash loses at most the last second), or `appsrc ! flvdemux ! hlssink2` writing a live HLS
//! playlist. A destination that refuses or drops the connection is retried with backoff (forever) without
//! touching the other outputs; after a restart it resumes at a keyframe, which it asks the encoder for.

use super::state::StateReport;
use crate::media::PipelineGuard;
use crate::media::frames::{Frame, FramePusher};
use crate::media::keyframes::EncoderKeyframes;
use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A muxer buffer numbered by the egress (consecutive: a jump is a gap this output had to drop).
pub type Sequenced = (u64, Frame);

/// The FLV tag type of video (the first byte of a video tag).
pub(super) const FLV_VIDEO_TAG: u8 = 9;

/// Which muxer buffers an output sends, sans-IO: from the first video keyframe on (the stream headers
/// first), and after a gap — buffers dropped because the output fell behind — again from the next video
/// keyframe, so the destination never gets frames that refer to ones it missed.
#[derive(Debug, Default)]
pub(super) struct Gate {
    sending: bool,
    started: bool,
    next: Option<u64>,
}

/// What to do with one buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Not sent (a muxer header: those come from the caps).
    Skip,
    /// Not sent: the output waits for a video keyframe (ask the encoder for one).
    Wait,
    /// Sent, and the output (re)starts with it: after the stream headers when `headers`.
    Start { headers: bool },
    /// Sent.
    Send,
}

impl Gate {
    /// Decides for buffer number `seq`.
    pub(super) fn admit(&mut self, seq: u64, frame: &Frame) -> Admit {
        let gap = self.next.is_some_and(|next| next != seq);
        self.next = Some(seq + 1);
        // flvmux also sends its headers as buffers; they come from the caps instead.
        if frame.header {
            return Admit::Skip;
        }
        if gap && self.sending {
            self.sending = false;
            metrics::counter!("egress_output_gaps_total").increment(1);
        }
        if self.sending {
            return Admit::Send;
        }
        if frame.keyframe && frame.data.first() == Some(&FLV_VIDEO_TAG) {
            self.sending = true;
            let headers = !std::mem::replace(&mut self.started, true);
            return Admit::Start { headers };
        }
        Admit::Wait
    }
}

/// FLV buffers waiting for one output; beyond it the output drops and resumes at a keyframe.
const QUEUE: usize = 512;

/// Where an output sends the stream.
#[derive(Debug, Clone)]
pub enum Target {
    /// An rtmp:// or rtmps:// URL (its key is a secret), published by our own RTMP client
    /// (`rtmp_out.rs`); rtmps:// verifies the server with this TLS configuration.
    Rtmp(super::publish::RtmpUrl, Arc<rustls::ClientConfig>),
    /// A fragmented MP4 recording: files `{path}_00000.mp4`, ... (a new file every 10 minutes).
    File(std::path::PathBuf),
    /// Live HLS in a directory: `index.m3u8` over the last 6 segments of ~2 s (`segment00000.ts`, ...; the
    /// 12 newest are kept).
    Hls(std::path::PathBuf),
}

/// The front every file and HLS output shares: the FLV bytes demuxed and parsed into the `video` and `audio`
/// pads of the element that writes them.
fn demuxed(video: &str, audio: &str) -> String {
    format!(
        "appsrc name=src format=time is-live=true ! flvdemux name=demux \
         demux.video ! queue ! h264parse ! {video} demux.audio ! queue ! aacparse ! {audio}"
    )
}

/// The pipeline of a file output: fragmented MP4 of 1 s fragments, a new file every 10 minutes.
fn file_pipeline(path: &std::path::Path) -> String {
    format!(
        "{} splitmuxsink name=rec async-finalize=true muxer-factory=mp4mux \
         muxer-properties=\"properties,fragment-duration=(uint)1000\" max-size-time=600000000000 \
         location=\"{}_%05d.mp4\"",
        demuxed("rec.video", "rec.audio_0"),
        path.display().to_string().replace('"', "")
    )
}

/// The pipeline of an HLS output.
fn hls_pipeline(dir: &std::path::Path) -> String {
    let dir = dir.display().to_string().replace('"', "");
    format!(
        "{} hlssink2 name=hls target-duration=2 playlist-length=6 max-files=12 \
         send-keyframe-requests=false location=\"{dir}/segment%05d.ts\" \
         playlist-location=\"{dir}/index.m3u8\"",
        demuxed("hls.video", "hls.audio")
    )
}

impl Target {
    /// The target as it may be logged (stream key redacted).
    fn shown(&self) -> String {
        match self {
            Target::Rtmp(url, _) => format!("{}/{}", url.tc_url, crate::redact::REDACTED),
            Target::File(path) | Target::Hls(path) => path.display().to_string(),
        }
    }
}

/// Starts the task of output `index` of egress `egress`; returns where to send the FLV buffers, and the task
/// (which ends after `cancel`, once a recording has written its last fragment).
pub fn spawn(
    report: StateReport,
    index: usize,
    target: Target,
    caps: gst::Caps,
    max_backoff: Duration,
    keyframes: EncoderKeyframes,
    cancel: CancellationToken,
) -> (mpsc::Sender<Sequenced>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let progress = Progress {
        report,
        index,
        bytes: 0,
        this_second: 0,
        went_active: false,
        keyframes,
    };
    let task = tokio::spawn(run(progress, target, caps, max_backoff, rx, cancel));
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

/// Sets output `index`'s state (and counts a reconnect); the egress's state follows.
fn set_state(report: &StateReport, index: usize, state: &str, reconnected: bool) {
    report.update(|e| {
        if let Some(output) = e.outputs.get_mut(index) {
            output.state = state.to_string();
            if reconnected {
                output.reconnects += 1;
            }
        }
    });
}

/// How one attempt of an output ended.
pub(super) enum Attempt {
    /// The egress stopped (or its FLV ended): the output is done.
    Cancelled,
    /// The destination failed, for this reason (safe to log): retry after the backoff.
    Down(String),
}

/// What an output reports to the egress state: its state, bytes and bitrate.
pub(super) struct Progress {
    report: StateReport,
    index: usize,
    /// Bytes sent over all attempts, and in the current second.
    bytes: u64,
    this_second: u64,
    /// Whether the current attempt got to sending.
    went_active: bool,
    /// Asked while the output waits for a keyframe to (re)start at.
    keyframes: EncoderKeyframes,
}

impl Progress {
    /// The output started sending.
    pub(super) fn active(&mut self) {
        self.went_active = true;
        set_state(&self.report, self.index, "active", false);
    }

    /// The output skips buffers until a keyframe: ask the encoder for one now.
    pub(super) fn wait_keyframe(&self) {
        self.keyframes.ask();
    }

    /// `n` more bytes were handed to the destination.
    pub(super) fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
        self.this_second += n as u64;
    }

    /// Once a second: publishes the byte count and the last second's bitrate.
    pub(super) fn tick(&mut self) {
        let rate = std::mem::take(&mut self.this_second) * 8;
        let bytes = self.bytes;
        self.report.store.update(&self.report.egress, |e| {
            if let Some(output) = e.outputs.get_mut(self.index) {
                output.bytes = bytes;
                output.bitrate_bps = rate;
            }
        });
    }
}

async fn run(
    mut progress: Progress,
    target: Target,
    caps: gst::Caps,
    max_backoff: Duration,
    mut frames: mpsc::Receiver<Sequenced>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    let (egress, index) = (progress.report.egress.clone(), progress.index);
    let headers = stream_headers(&caps);
    if let Target::Hls(dir) = &target {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(egress = %egress, output = index, error = %e, "cannot create the HLS directory");
        }
    }
    let tag_headers: Vec<Vec<u8>> = headers
        .iter()
        .filter_map(|b| b.map_readable().ok().map(|m| m.as_slice().to_vec()))
        .collect();
    loop {
        progress.went_active = false;
        let attempt = match &target {
            Target::Rtmp(url, tls) => {
                super::rtmp_out::attempt(url, tls, &tag_headers, &mut frames, &cancel, &mut progress).await
            }
            Target::File(path) => {
                let description = file_pipeline(path);
                pipeline_attempt(&description, &caps, &headers, &mut frames, &cancel, &mut progress).await
            }
            Target::Hls(dir) => {
                let description = hls_pipeline(dir);
                pipeline_attempt(&description, &caps, &headers, &mut frames, &cancel, &mut progress).await
            }
        };
        let Attempt::Down(reason) = attempt else { return };
        if progress.went_active {
            backoff = Duration::from_millis(500);
        }
        tracing::warn!(egress = %egress, output = index, target = %target.shown(), %reason, ?backoff, "egress output down; retrying");
        set_state(&progress.report, index, "reconnecting", true);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(max_backoff);
        while frames.try_recv().is_ok() {} // stale: resume from a fresh keyframe
    }
}

/// One attempt of a file or HLS output: its own small pipeline (`description`) fed with the FLV bytes.
async fn pipeline_attempt(
    description: &str,
    caps: &gst::Caps,
    headers: &[gst::Buffer],
    frames: &mut mpsc::Receiver<Sequenced>,
    cancel: &CancellationToken,
    progress: &mut Progress,
) -> Attempt {
    let started = PipelineGuard::parse("egress-output", description).and_then(|guard| {
        guard.element("src")?.set_property("caps", caps);
        let pusher = FramePusher::new(&guard, "src")?;
        let ended = guard.start()?;
        Ok((guard, pusher, ended))
    });
    let (_guard, pusher, mut ended) = match started {
        Ok(started) => started,
        Err(e) => return Attempt::Down(e.to_string()),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut gate = Gate::default();
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                // Let a recording write its last fragment before the pipeline stops.
                pusher.end();
                let _ = tokio::time::timeout(Duration::from_secs(3), &mut ended).await;
                return Attempt::Cancelled;
            }
            end = &mut ended => return Attempt::Down(end.map(|e| e.to_string()).unwrap_or_else(|_| "stopped".into())),
            frame = frames.recv() => {
                let Some((seq, frame)) = frame else { return Attempt::Cancelled };
                match gate.admit(seq, &frame) {
                    Admit::Skip => continue,
                    Admit::Wait => {
                        progress.wait_keyframe();
                        continue;
                    }
                    Admit::Start { headers: first } => {
                        if first {
                            for header in headers {
                                pusher.push_buffer(header.clone());
                            }
                        }
                        progress.active();
                    }
                    Admit::Send => {}
                }
                pusher.push_with_dts(&frame.data, frame.pts_ns, frame.pts_ns, frame.keyframe);
                progress.sent(frame.data.len());
            }
            _ = tick.tick() => progress.tick(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(video: bool, keyframe: bool) -> Frame {
        Frame {
            pts_ns: 0,
            keyframe,
            header: false,
            data: vec![if video { FLV_VIDEO_TAG } else { 8 }, 0, 0],
        }
    }

    #[test]
    fn an_output_starts_at_a_video_keyframe_and_resumes_at_the_next_one_after_a_gap() {
        let mut gate = Gate::default();
        let (audio, delta, key) = (buffer(false, true), buffer(true, false), buffer(true, true));
        assert_eq!(gate.admit(1, &audio), Admit::Wait, "audio does not start a stream");
        assert_eq!(gate.admit(2, &delta), Admit::Wait);
        assert_eq!(gate.admit(3, &key), Admit::Start { headers: true });
        assert_eq!(gate.admit(4, &delta), Admit::Send);
        assert_eq!(gate.admit(5, &audio), Admit::Send);
        // 6 and 7 were dropped: what follows refers to them.
        assert_eq!(gate.admit(8, &delta), Admit::Wait);
        assert_eq!(gate.admit(9, &audio), Admit::Wait);
        assert_eq!(
            gate.admit(10, &key),
            Admit::Start { headers: false },
            "headers once per connection"
        );
        assert_eq!(gate.admit(11, &audio), Admit::Send);
        let header = Frame {
            header: true,
            ..buffer(true, true)
        };
        assert_eq!(gate.admit(12, &header), Admit::Skip, "muxer headers come from the caps");
        assert_eq!(gate.admit(13, &delta), Admit::Send);
    }
}
