//! Keyframe requests on decode errors. A publisher (a gateway `Peer` in the test) sends an H.264 clip with a
//! keyframe every 2 s through the embedded SFU to an egress; one frame between two keyframes has its slice
//! header garbled, as a broken encoder or a corrupting middlebox would deliver it — no packet is lost, so the
//! loss-based requests do not fire. The egress's decoder drops that frame, and the egress must ask the
//! publisher for a keyframe within a second (the pictures after it miss a reference until the next one);
//! before it, once the egress runs, it must not ask at all. The egress's output goes on showing the source.

mod common;

use common::egress::{create_egress, picture_and_sound, publisher, stop_and_wait};
use common::nginx::NginxRtmp;
use common::rtmp::start;
use serde_json::json;
use sfu_gateway::media::PipelineGuard;
use sfu_gateway::media::frames::{Frame, appsink_frames};
use sfu_gateway::sfu::peer::{Codec, OutFrame, PeerEvent};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const SECONDS: u32 = 9;
/// The garbled frame: 5.5 s in, half-way between the keyframes at 4 s and 6 s.
const BROKEN: usize = 165;

/// `SECONDS` of 320x180 H.264 (constrained baseline, a keyframe every 60 frames), one access unit per frame.
fn clip(dir: &Path) -> Vec<Frame> {
    let path = dir.join("clip.mkv");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x180:r=30",
            "-t",
            &SECONDS.to_string(),
        ])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-pix_fmt",
            "yuv420p",
            "-bf",
            "0",
        ])
        .args([
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-b:v",
            "400k",
            "-y",
        ])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let description = format!(
        "filesrc location={} ! matroskademux ! h264parse config-interval=-1 ! \
         video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=v sync=false",
        path.display()
    );
    let guard = PipelineGuard::parse("clip", &description).expect("demuxer");
    let (mut video, _) = appsink_frames(&guard, "v", 4096).expect("video sink");
    let ended = guard.start().expect("start");
    let _ = ended.blocking_recv();
    let mut frames = Vec::new();
    while let Ok(frame) = video.try_recv() {
        frames.push(frame);
    }
    frames
}

/// Overwrites the first non-IDR slice of an Annex B access unit after its NAL header with bytes that are
/// never zero (so no start code appears): the slice header no longer parses.
fn garble(access_unit: &mut [u8]) {
    let start = access_unit
        .windows(4)
        .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 1)
        .expect("a non-IDR slice")
        + 4;
    let end = access_unit[start..]
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map_or(access_unit.len(), |p| start + p);
    let mut x: u32 = 12345;
    for byte in &mut access_unit[start..end] {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *byte = ((x >> 16) % 255) as u8 + 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_the_decoder_cannot_decode_gets_a_keyframe_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut video = tokio::task::block_in_place(|| clip(dir.path()));
    assert_eq!(video.len(), SECONDS as usize * 30);
    assert!(video[120].keyframe && video[180].keyframe && !video[BROKEN].keyframe);
    garble(&mut video[BROKEN].data);
    let setup = start();
    let nginx = NginxRtmp::start();
    let (peer, mut streams) = publisher(&setup, &[("kf-video", Codec::H264)]).await;
    let session = peer.session_id();
    let id = create_egress(
        &setup,
        json!({
            "tracks": [{"sessionId": session, "trackName": "kf-video"}],
            "outputs": [{"url": nginx.url("kf")}],
            "video": {"width": 320, "height": 180, "fps": 30, "bitrateKbps": 400},
        }),
    )
    .await;
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorder = requests.clone();
    let listener = tokio::spawn(async move {
        while let Some(event) = streams.events.recv().await {
            if matches!(event, PeerEvent::KeyframeRequested { .. }) {
                recorder.lock().unwrap().push(Instant::now());
            }
        }
    });
    // Real time, from t0; the publisher never answers a request (the test only records them).
    let sender = peer.frame_sender();
    let t0 = Instant::now() + Duration::from_millis(500);
    for frame in video {
        tokio::time::sleep_until(t0 + Duration::from_nanos(frame.pts_ns)).await;
        let out = OutFrame {
            track: "kf-video".into(),
            rtp_time: frame.ticks(90_000),
            data: frame.data,
            rid: None,
            capture: None,
        };
        if sender.send(out).await.is_err() {
            panic!("the publisher stopped");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    listener.abort();
    let requests = requests.lock().unwrap().clone();
    let seconds: Vec<String> = requests
        .iter()
        .map(|at| format!("{:.2}", at.duration_since(t0).as_secs_f64()))
        .collect();
    let broken_at = t0 + Duration::from_millis(BROKEN as u64 * 1000 / 30);
    // Before: the egress has its start-up requests answered by the keyframe at 2 s, and then stays quiet.
    let quiet = requests
        .iter()
        .filter(|at| **at > t0 + Duration::from_secs(3) && **at < broken_at)
        .count();
    assert_eq!(quiet, 0, "requests with nothing broken, at t0 + {seconds:?} s");
    let answered = requests
        .iter()
        .any(|at| *at >= broken_at && *at < broken_at + Duration::from_secs(1));
    assert!(
        answered,
        "no keyframe request within 1 s of the broken frame ({:.2} s); requests at t0 + {seconds:?} s",
        (broken_at - t0).as_secs_f64()
    );
    // The egress shows it.
    let egress = common::egress::get_egress(&setup, &id).await;
    assert_eq!(egress["sources"][0]["undecodableFrames"], 1, "{egress}");
    // The picture goes on after it: the source's colour bars, not a black frame.
    let recording = stop_and_wait(&setup, &id, &nginx, "kf").await;
    let probe = common::nginx::probe(&recording);
    let frames = probe.video.as_ref().map_or(0, |v| v.frames);
    // The recording ends with the clip, 3.5 s after the broken frame; its last half-second.
    let at = format!("{:.1}", frames as f64 / 30.0 - 0.5);
    let ((lo, hi), _) = picture_and_sound(&recording, &at);
    assert!(
        hi.saturating_sub(lo) > 100,
        "the output at {at} s is flat: grey levels {lo}..{hi}; {probe:?}"
    );
}
