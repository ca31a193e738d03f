//! Lip-sync of an egress from RTCP sender reports. A publisher (a gateway `Peer` in the test) sends a clip
//! whose picture flashes white and whose sound beeps at the same instants, once a second — but delivers
//! every video frame 300 ms after its audio, as a slow video path would, while its sender reports say when
//! each frame was captured. Through the embedded SFU and an egress to nginx-rtmp, the recording's flashes and
//! beeps must coincide: stamping frames on arrival would leave the picture 300 ms behind the sound. The same
//! clip published over RTMP (H.264 passed through, AAC transcoded to Opus) must come out in sync too.

mod common;

use common::egress::{create_egress, publisher, stop_and_wait};
use common::nginx::NginxRtmp;
use common::rtmp::{AAC_48K, BASELINE, Killed, ffmpeg_with, start};
use serde_json::json;
use sfu_gateway::media::PipelineGuard;
use sfu_gateway::media::frames::{Frame, appsink_frames};
use sfu_gateway::sfu::peer::{Codec, OutFrame};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::time::Instant;

/// The flashing picture and beeping sound of the clip, as lavfi sources.
const FLASH: &str = "color=c=black:s=320x180:r=30,drawbox=c=white:t=fill:enable='lt(mod(t,1),0.1)'";
const BEEP: &str = "aevalsrc=exprs=0.5*sin(2*PI*1000*t)*lt(mod(t\\,1)\\,0.1):s=48000";

/// How late the video is delivered.
const VIDEO_DELAY: Duration = Duration::from_millis(300);
const SECONDS: u32 = 14;

/// A clip of `SECONDS`: black 320x180 VP8 at 30 fps flashing white, and Opus beeping at 1 kHz, both for the
/// first 100 ms of every second; returns its (video, audio) frames with their media times.
fn clip(dir: &Path) -> (Vec<Frame>, Vec<Frame>) {
    let path = dir.join("clip.webm");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", FLASH, "-f", "lavfi", "-i", BEEP])
        .args([
            "-t",
            &SECONDS.to_string(),
            "-c:v",
            "libvpx",
            "-g",
            "30",
            "-deadline",
            "realtime",
        ])
        .args(["-b:v", "300k", "-c:a", "libopus", "-ac", "2", "-y"])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let description = format!(
        "filesrc location={} ! matroskademux name=d d.video_0 ! queue ! appsink name=v sync=false \
         d.audio_0 ! queue ! appsink name=a sync=false",
        path.display()
    );
    let guard = PipelineGuard::parse("clip", &description).expect("demuxer");
    let (mut video, _) = appsink_frames(&guard, "v", 4096).expect("video sink");
    let (mut audio, _) = appsink_frames(&guard, "a", 4096).expect("audio sink");
    let ended = guard.start().expect("start");
    let _ = ended.blocking_recv();
    let drain = |rx: &mut tokio::sync::mpsc::Receiver<Frame>| {
        let mut out = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            out.push(frame);
        }
        out
    };
    (drain(&mut video), drain(&mut audio))
}

/// Onsets (seconds) of a signal sampled at `rate` Hz: where it crosses `threshold` upwards after being below
/// it for at least half a second.
fn onsets(values: &[f64], rate: f64, threshold: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut quiet = 0usize;
    for (i, v) in values.iter().enumerate() {
        if *v >= threshold {
            if quiet as f64 >= rate / 2.0 {
                out.push(i as f64 / rate);
            }
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    out
}

/// The flashes (mean luma per frame, at 30 fps) and beeps (RMS per 5 ms) of a recording.
fn flashes_and_beeps(path: &Path) -> (Vec<f64>, Vec<f64>) {
    let luma = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-vf", "fps=30,scale=16:9", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap()
        .stdout;
    let means: Vec<f64> = luma
        .chunks_exact(16 * 9)
        .map(|f| f.iter().map(|v| f64::from(*v)).sum::<f64>() / f.len() as f64)
        .collect();
    let pcm = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .unwrap()
        .stdout;
    let samples: Vec<f64> = pcm
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    let rms: Vec<f64> = samples
        .chunks(240)
        .map(|w| (w.iter().map(|s| s * s).sum::<f64>() / w.len() as f64).sqrt())
        .collect();
    (onsets(&means, 30.0, 128.0), onsets(&rms, 200.0, 0.1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flashes_and_beeps_captured_together_stay_together() {
    let dir = tempfile::tempdir().unwrap();
    let (video, audio) = tokio::task::block_in_place(|| clip(dir.path()));
    assert!(
        video.len() > 300 && audio.len() > 500,
        "{} {}",
        video.len(),
        audio.len()
    );
    let setup = start();
    let nginx = NginxRtmp::start();
    let (peer, _streams) = publisher(&setup, &[("sync-video", Codec::Vp8), ("sync-audio", Codec::Opus)]).await;
    let session = peer.session_id();
    // Real time: audio at its media time, video VIDEO_DELAY later; both say when they were captured.
    let sender = peer.frame_sender();
    let t0 = Instant::now() + Duration::from_millis(200);
    let mut schedule: Vec<(Instant, OutFrame)> = Vec::new();
    for (frames, track, clock, delay) in [
        (video, "sync-video", 90_000, VIDEO_DELAY),
        (audio, "sync-audio", 48_000, Duration::ZERO),
    ] {
        for frame in frames {
            let capture = t0 + Duration::from_nanos(frame.pts_ns);
            schedule.push((
                capture + delay,
                OutFrame {
                    track: track.into(),
                    rtp_time: frame.ticks(clock),
                    data: frame.data,
                    rid: None,
                    capture: Some(capture.into_std()),
                },
            ));
        }
    }
    schedule.sort_by_key(|(at, _)| *at);
    let pacer = tokio::spawn(async move {
        for (at, frame) in schedule {
            tokio::time::sleep_until(at).await;
            if sender.send(frame).await.is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = create_egress(
        &setup,
        json!({
            "tracks": [{"sessionId": session, "trackName": "sync-video"}, {"sessionId": session, "trackName": "sync-audio"}],
            "outputs": [{"url": nginx.url("sync")}],
            "video": {"width": 320, "height": 180, "fps": 30, "bitrateKbps": 500},
        }),
    )
    .await;
    let _ = pacer.await;
    let recording = stop_and_wait(&setup, &id, &nginx, "sync").await;
    let median = picture_minus_sound(&recording);
    assert!(median.abs() < 0.06, "picture − sound = {:.0} ms", median * 1000.0);
}

/// The median of (flash − nearest beep) in a recording, in seconds, judged from 4 s on (the first seconds
/// may be stamped on arrival, before the first sender reports).
fn picture_minus_sound(recording: &Path) -> f64 {
    let (flashes, beeps) = flashes_and_beeps(recording);
    let offsets: Vec<f64> = flashes
        .iter()
        .filter(|t| **t >= 4.0)
        .filter_map(|flash| {
            beeps
                .iter()
                .map(|beep| flash - beep)
                .min_by(|a, b| a.abs().total_cmp(&b.abs()))
        })
        .collect();
    assert!(
        offsets.len() >= 5,
        "too few flashes to judge: flashes {flashes:?}, beeps {beeps:?}"
    );
    let mut sorted = offsets.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    eprintln!(
        "picture − sound: {:.0} ms over {} flashes (offsets {offsets:?})",
        median * 1000.0,
        offsets.len()
    );
    median
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_publisher_stays_in_sync_through_ingest_sfu_and_egress() {
    let setup = start();
    let nginx = NginxRtmp::start();
    // ffmpeg publishes the flashing, beeping clip as H.264 + AAC; the ingest passes the video through and
    // transcodes the audio to Opus (whose encoder delay must not shift it).
    let ingress = setup.create_ingress("clip").await;
    let url = format!("rtmp://{}/live/{}", setup.rtmp, ingress["streamKey"].as_str().unwrap());
    let encoding = [BASELINE, AAC_48K].concat();
    let publisher = Killed(ffmpeg_with(&url, 16, &[FLASH, BEEP], &encoding));
    let live = setup
        .wait_ingress(ingress["id"].as_str().unwrap(), "live", |i| {
            i["sfu"]["tracks"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let session = live["sfu"]["sessionId"].as_str().unwrap();
    let id = create_egress(
        &setup,
        json!({
            "tracks": [{"sessionId": session, "trackName": "clip-video"}, {"sessionId": session, "trackName": "clip-audio"}],
            "outputs": [{"url": nginx.url("clip")}],
            "video": {"width": 320, "height": 180, "fps": 30, "bitrateKbps": 500},
        }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    drop(publisher);
    let recording = stop_and_wait(&setup, &id, &nginx, "clip").await;
    let median = picture_minus_sound(&recording);
    assert!(median.abs() < 0.06, "picture − sound = {:.0} ms", median * 1000.0);
}
