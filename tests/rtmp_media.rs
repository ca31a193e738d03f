//! RTMP ingest media variants through the real binary: B-frames (auto → transcode), AAC 44.1 kHz mono,
//! audio-only, video-only, and a publisher that drops and comes back within the reconnect grace.

mod common;

use common::rtmp::{AAC_48K, BASELINE, Killed, Setup, ffmpeg, receive, start, subscribe};
use serde_json::Value;
use sfu_gateway::sfu::peer::Codec;
use std::time::Duration;
use tokio::time::{Instant, timeout};

const HIGH_WITH_B_FRAMES: &[&str] = &[
    "-c:v",
    "libx264",
    "-profile:v",
    "high",
    "-preset",
    "veryfast",
    "-bf",
    "2",
    "-g",
    "30",
    "-pix_fmt",
    "yuv420p",
];

async fn live(setup: &Setup, name: &str, video: &[&str], audio: &[&str], tracks: usize) -> (Value, Killed) {
    let ingress = setup.create_ingress(name).await;
    let id = ingress["id"].as_str().unwrap().to_string();
    let url = format!("rtmp://{}/live/{}", setup.rtmp, ingress["streamKey"].as_str().unwrap());
    let publisher = Killed(ffmpeg(&url, 30, video, audio));
    let live = setup
        .wait_ingress(&id, &format!("live with {tracks} tracks"), |i| {
            i["state"] == "live" && i["sfu"]["tracks"].as_array().is_some_and(|t| t.len() == tracks)
        })
        .await;
    (live, publisher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_switch_auto_to_transcode_and_decode_in_order() {
    let setup = start();
    let (live, _publisher) = live(&setup, "bframes", HIGH_WITH_B_FRAMES, AAC_48K, 2).await;
    let session = live["sfu"]["sessionId"].as_str().unwrap().to_string();
    let (_peer, mut streams, subscribed) = subscribe(&setup, &session, &["bframes-video"]).await;
    let received = receive(&mut streams, &subscribed, Duration::from_secs(6)).await;
    let (video, first, last, frames, _) = &received[&subscribed[0].mid];
    let expected = (last - first) / 3000 + 1;
    let decoded = video.settled().await;
    assert!(
        decoded.frames * 10 >= expected * 9,
        "decoded {} of {expected} ({frames} received)",
        decoded.frames
    );
    assert_eq!(decoded.last_frame_bytes, 640 * 360 * 3 / 2);
    let id = live["id"].as_str().unwrap();
    let now = setup.ingress(id).await;
    assert_eq!(now["stats"]["videoPath"], "transcode", "{now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aac_44k_mono_audio_only_and_video_only_each_decode() {
    let setup = start();
    let mono = &["-c:a", "aac", "-ar", "44100", "-ac", "1", "-b:a", "96k"];
    let (audio_only, _a) = live(&setup, "radio", &[], mono, 1).await;
    assert_eq!(audio_only["sfu"]["tracks"][0]["kind"], "audio");
    let (video_only, _v) = live(&setup, "silent", BASELINE, &[], 1).await;
    assert_eq!(video_only["sfu"]["tracks"][0]["kind"], "video");

    let session = audio_only["sfu"]["sessionId"].as_str().unwrap().to_string();
    let (_p1, mut s1, sub1) = subscribe(&setup, &session, &["radio-audio"]).await;
    let received = receive(&mut s1, &sub1, Duration::from_secs(4)).await;
    let sound = received[&sub1[0].mid].0.settled().await;
    assert!(
        sound.samples > 48_000 * 2 && sound.max_rms > 0.05,
        "44.1 kHz mono audio: {sound:?}"
    );

    let session = video_only["sfu"]["sessionId"].as_str().unwrap().to_string();
    let (_p2, mut s2, sub2) = subscribe(&setup, &session, &["silent-video"]).await;
    let received = receive(&mut s2, &sub2, Duration::from_secs(4)).await;
    let pictures = received[&sub2[0].mid].0.settled().await;
    assert!(
        pictures.frames >= 60 && pictures.varied_picture,
        "video-only: {pictures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_reconnect_within_grace_keeps_the_track() {
    let setup = start(); // reconnect grace 4 s
    let (live, publisher) = live(&setup, "flaky", BASELINE, AAC_48K, 2).await;
    let id = live["id"].as_str().unwrap().to_string();
    let key = setup.ingress(&id).await["streamKey"].as_str().unwrap().to_string();
    let session = live["sfu"]["sessionId"].as_str().unwrap().to_string();
    let (_peer, mut streams, subscribed) = subscribe(&setup, &session, &["flaky-video"]).await;
    let before = receive(&mut streams, &subscribed, Duration::from_secs(2)).await;
    let decoder_frames = before[&subscribed[0].mid].0.settled().await.frames;
    assert!(decoder_frames > 30, "no video before the drop");

    drop(publisher); // kill ffmpeg
    setup
        .wait_ingress(&id, "reconnecting", |i| i["state"] == "reconnecting")
        .await;
    let url = format!("rtmp://{}/live/{key}", setup.rtmp);
    let restarted = Instant::now();
    let _again = Killed(ffmpeg(&url, 30, BASELINE, AAC_48K));
    // The same subscription decodes fresh frames again within 2 s of the restart.
    let mut fresh = 0u64;
    let deadline = restarted + Duration::from_secs(2);
    while Instant::now() < deadline && fresh < 15 {
        if let Ok(Some(frame)) = timeout(Duration::from_millis(100), streams.media_in.recv()).await {
            if frame.mid == subscribed[0].mid && frame.codec == Some(Codec::H264) {
                fresh += 1;
            }
        }
    }
    assert!(fresh >= 15, "only {fresh} frames within 2 s of the restart");
    let resumed = setup.wait_ingress(&id, "live again", |i| i["state"] == "live").await;
    assert_eq!(resumed["sfu"]["sessionId"], session.as_str(), "the SFU session changed");
    assert_eq!(resumed["stats"]["connections"], 2);

    // Dropped for longer than the grace: the ingress ends.
    drop(_again);
    let ended = setup.wait_ingress(&id, "ended", |i| i["state"] == "ended").await;
    assert!(ended.get("sfu").is_none(), "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcode_with_three_layers_serves_each_rid_at_its_size() {
    transcoded_layers(
        serde_json::json!({"mode": "transcode", "layers": 3}),
        &[("a", 640, 360), ("b", 320, 180), ("c", 160, 90)],
        Codec::H264,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_transcode_serves_vp8_layers() {
    transcoded_layers(
        serde_json::json!({"codec": "vp8", "layers": 2}),
        &[("a", 640, 360), ("b", 320, 180)],
        Codec::Vp8,
    )
    .await;
}

/// An ingress with `video` options, fed H.264 640x360: a subscriber pulls each `(rid, width, height)` layer
/// and decodes frames of that size and `codec`.
async fn transcoded_layers(video: Value, layers: &[(&str, usize, usize)], codec: Codec) {
    let setup = start();
    if codec == Codec::Vp8 {
        // The publisher sends H.264: VP8 cannot be a passthrough.
        let refused = setup
            .http
            .post(format!("{}/v1/ingresses", setup.gateway.api))
            .bearer_auth(common::rtmp::TOKEN)
            .json(&serde_json::json!({"name": "nope", "video": {"codec": "vp8", "mode": "passthrough"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 422);
    }
    let body = serde_json::json!({"name": "ladder", "video": video});
    let live = setup.publish_live(&body, 30, BASELINE, AAC_48K, 2).await;
    let (id, session) = (live.id.clone(), live.session.clone());
    let (peer, mut streams) =
        sfu_gateway::sfu::peer::Peer::connect(setup.client(), sfu_gateway::sfu::peer::PeerConfig::default())
            .await
            .unwrap();
    let specs = layers
        .iter()
        .map(|(rid, ..)| sfu_gateway::sfu::peer::RemoteTrackSpec {
            session_id: session.clone(),
            track_name: "ladder-video".into(),
            preferred_rid: Some(rid.to_string()),
        })
        .collect();
    let subscribed = peer.subscribe(specs).await.expect("subscribe to each layer");
    assert_eq!(subscribed.len(), layers.len());
    let received = receive(&mut streams, &subscribed, Duration::from_secs(6)).await;
    for (track, (_, width, height)) in subscribed.iter().zip(layers) {
        let (decoder, .., codec_seen) = &received[&track.mid];
        assert_eq!(*codec_seen, Some(codec), "{track:?}");
        let pictures = decoder.settled().await;
        assert!(pictures.frames > 30, "{track:?}: {pictures:?}");
        assert_eq!(
            pictures.last_frame_bytes,
            width * height * 3 / 2,
            "{track:?} is not {width}x{height}"
        );
    }
    let now = setup.ingress(&id).await;
    assert_eq!(now["stats"]["videoPath"], "transcode");
}
