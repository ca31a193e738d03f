//! A transcoding RTMP ingest answers the SFU's keyframe requests. Its encoders here make a keyframe only every
//! 30 s (an overridden `video-encode-h264` fragment), so a subscriber that starts mid-stream, and each
//! simulcast layer switch — both of which wait for a keyframe of the layer — get their picture within a
//! second only because the SFU's request reaches the encoder of that layer.

mod common;

use common::media::Decoder;
use common::rtmp::{AAC_48K, BASELINE, start_with};
use sfu_gateway::sfu::peer::{Peer, PeerConfig, PeerStreams, RemoteTrackSpec};
use std::time::Duration;
use tokio::time::{Instant, timeout};

/// The built-in H.264 encoder fragment with a 30 s keyframe interval (900 frames at 30 fps).
fn long_gop_pipelines() -> tempfile::TempDir {
    let builtin = include_str!("../pipelines/video-encode-h264.gst");
    assert!(builtin.contains("key-int-max=60"), "the fragment changed: {builtin}");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = builtin.replace("key-int-max=60", "key-int-max=900");
    std::fs::write(dir.path().join("video-encode-h264.gst"), text).expect("write the fragment");
    dir
}

/// Receives the video of `mid` into `decoder` until it decodes `width`x`height` pictures; how long that took.
async fn until_size(
    streams: &mut PeerStreams,
    decoder: &Decoder,
    mid: &str,
    (width, height): (usize, usize),
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let want = width * height * 3 / 2;
    while started.elapsed() < within {
        if decoder.snapshot().last_frame_bytes == want {
            return started.elapsed();
        }
        let Ok(Some(frame)) = timeout(Duration::from_millis(50), streams.media_in.recv()).await else {
            continue;
        };
        if frame.mid == mid {
            // 90 kHz RTP time to nanoseconds; the decoder only needs them increasing.
            decoder.push(&frame.data, frame.rtp_time.saturating_mul(100_000) / 9);
        }
    }
    let seen = decoder.snapshot();
    panic!("no {width}x{height} picture within {within:?}: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcoded_ingest_makes_a_keyframe_for_a_new_subscriber_and_each_layer_switch() {
    let pipelines = long_gop_pipelines();
    let setup = start_with(&[("GATEWAY__PIPELINES__DIR", pipelines.path().to_str().unwrap())]);
    let body = serde_json::json!({"name": "gop", "video": {"mode": "transcode", "layers": 3}});
    let live = setup.publish_live(&body, 40, BASELINE, AAC_48K, 2).await;
    // Well past the encoders' first keyframes.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (peer, mut streams) = Peer::connect(setup.client(), PeerConfig::default())
        .await
        .expect("peer");
    let spec = RemoteTrackSpec {
        session_id: live.session.clone(),
        track_name: "gop-video".into(),
        preferred_rid: Some("a".into()),
    };
    let subscribed = peer.subscribe(vec![spec]).await.expect("subscribe");
    let mid = subscribed[0].mid.clone();
    let decoder = Decoder::video("h264");
    let first = until_size(&mut streams, &decoder, &mid, (640, 360), Duration::from_secs(3)).await;
    let mut switches = Vec::new();
    for (rid, size) in [("c", (160, 90)), ("b", (320, 180)), ("a", (640, 360)), ("c", (160, 90))] {
        peer.prefer_layer(mid.clone(), rid).await.expect("layer switch");
        switches.push(until_size(&mut streams, &decoder, &mid, size, Duration::from_secs(3)).await);
        // Past the encoders' 500 ms request throttle, so each switch is a request of its own.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    eprintln!("first picture after {first:?}, layer switches after {switches:?}");
    let slowest = switches.iter().max().copied().unwrap_or_default();
    assert!(
        first < Duration::from_secs(1) && slowest < Duration::from_secs(1),
        "first picture after {first:?}, layer switches after {switches:?}"
    );
    let pictures = decoder.settled().await;
    assert!(pictures.frames > 60, "{pictures:?}");
}
