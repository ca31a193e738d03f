//! Self-test of the nginx-rtmp destination harness: ffmpeg publishes to a real nginx, which records it; the
//! recording and a live play of the same stream probe as what was sent.

mod common;

use common::nginx::{NginxRtmp, decode_errors, probe, probe_url};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn nginx_records_and_serves_a_published_stream() {
    let nginx = NginxRtmp::start();
    let url = nginx.url("harness");

    // A player started before the publisher: nginx holds it until the stream appears.
    let player = {
        let url = url.clone();
        std::thread::spawn(move || probe_url(&url, 2))
    };

    let mut publisher = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine", "-t", "4"])
        .args(["-c:v", "libx264", "-g", "25", "-c:a", "aac", "-f", "flv", url.as_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = publisher.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = publisher.kill();
            let _ = publisher.wait();
            panic!("ffmpeg still publishing after 30 s; nginx log:\n{}", nginx.error_log());
        }
        // Polling the child's exit status: there is no portable blocking wait with a timeout.
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    let _ = publisher.stderr.take().expect("stderr").read_to_string(&mut stderr);
    assert!(
        status.success(),
        "ffmpeg publish failed ({status}): {stderr}\nnginx log:\n{}",
        nginx.error_log()
    );

    let recording = nginx.wait_recording("harness", Duration::from_secs(5));
    let probed = probe(&recording);
    let video = probed.video.as_ref().unwrap_or_else(|| panic!("no video: {probed:?}"));
    assert_eq!(video.codec, "h264", "{probed:?}");
    assert_eq!((video.width, video.height), (320, 240), "{probed:?}");
    assert!((video.fps - 25.0).abs() < 1.0, "{probed:?}");
    assert!(video.frames >= 90, "{probed:?}");
    let audio = probed.audio.as_ref().unwrap_or_else(|| panic!("no audio: {probed:?}"));
    assert_eq!(audio.codec, "aac", "{probed:?}");
    assert!(audio.sample_rate > 0 && audio.channels > 0, "{probed:?}");
    assert!(probed.duration >= 3.5, "{probed:?}");
    let errors = decode_errors(&recording);
    assert!(errors.is_empty(), "recording does not decode cleanly:\n{errors}");

    let played = player.join().expect("player thread");
    let played_video = played.video.as_ref().map(|v| (v.codec.as_str(), v.width, v.height));
    assert_eq!(played_video, Some(("h264", 320, 240)), "{played:?}");
    assert!(played.video.as_ref().is_some_and(|v| v.frames > 0), "{played:?}");
    let played_audio = played.audio.as_ref().map(|a| a.codec.as_str());
    assert_eq!(played_audio, Some("aac"), "{played:?}");
}
