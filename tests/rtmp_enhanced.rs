//! Enhanced RTMP ingest through the real binary: a publisher speaking E-RTMP (HEVC, AV1 or VP9 video, Opus or
//! `mp4a` audio) → the gateway transcodes the video to H.264 (or passes AV1 and VP9 through when asked), passes Opus
//! through, decodes AAC → a subscriber through the embedded SFU decodes the picture and hears the tone.

mod common;

use common::ertmp::{self, ExAudio, ExVideo};
use common::rtmp::{Setup, receive, start, subscribe};
use serde_json::Value;
use sfu_gateway::sfu::peer::Codec;
use std::time::Duration;

/// Publishes `video` + `audio` as ingress `name` and checks what a subscriber decodes, and the ingress view
/// (its video transcoded).
async fn enhanced(setup: &Setup, name: &str, video: ExVideo, audio: ExAudio) -> Value {
    let ingress = setup.create_ingress(name).await;
    published(setup, ingress, name, video, audio, "transcode").await
}

/// Publishes `video` + `audio` into `ingress` (named `name`) and checks what a subscriber decodes, and that
/// the video took `path`.
async fn published(setup: &Setup, ingress: Value, name: &str, video: ExVideo, audio: ExAudio, path: &str) -> Value {
    let id = ingress["id"].as_str().unwrap().to_string();
    let key = ingress["streamKey"].as_str().unwrap().to_string();
    let addr = setup.rtmp.clone();
    let publisher =
        tokio::spawn(
            async move { ertmp::publish(&addr, &key, Some(video), Some(audio), Duration::from_secs(14)).await },
        );
    let live = setup
        .wait_ingress(&id, "live with 2 tracks", |i| {
            i["state"] == "live" && i["sfu"]["tracks"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let session = live["sfu"]["sessionId"].as_str().unwrap().to_string();
    let tracks = [format!("{name}-video"), format!("{name}-audio")];
    let (_peer, mut streams, subscribed) = subscribe(setup, &session, &[&tracks[0], &tracks[1]]).await;
    let received = receive(&mut streams, &subscribed, Duration::from_secs(6)).await;

    let (pictures, first, last, frames, codec) = &received[&subscribed[0].mid];
    // The track carries what was published when it passes through, H.264 when it is transcoded.
    let expected_codec = match (path, video) {
        ("passthrough", ExVideo::Vp9 | ExVideo::Vp9WithGarbage) => Codec::Vp9,
        ("passthrough", _) => Codec::Av1,
        _ => Codec::H264,
    };
    assert_eq!(*codec, Some(expected_codec), "{name}: the track's codec");
    let expected = (last - first) / 3000 + 1;
    let decoded = pictures.settled().await;
    assert!(
        decoded.frames * 10 >= expected * 9 && expected >= 90,
        "{name}: decoded {} of {expected} frames ({frames} received)",
        decoded.frames
    );
    assert_eq!(decoded.last_frame_bytes, 320 * 240 * 3 / 2, "{name}: not 320x240");
    assert!(decoded.varied_picture, "{name}: a flat picture");

    let sound = received[&subscribed[1].mid].0.settled().await;
    assert!(
        sound.samples > 48_000 * 4 && sound.max_rms > 0.1,
        "{name}: audio {sound:?}"
    );

    let now = setup.ingress(&id).await;
    assert_eq!(now["stats"]["videoPath"], path, "{now}");
    let sent = publisher.await.unwrap().expect("the publisher ran to its end");
    assert!(sent.video > 300 && sent.audio > 500, "{sent:?}");
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_with_opus_is_transcoded_and_opus_passes_through() {
    let setup = start();
    let now = enhanced(&setup, "hevc", ExVideo::Hevc, ExAudio::Opus).await;
    let stats = &now["stats"];
    assert_eq!(stats["inputVideoCodec"], "h265", "{now}");
    assert_eq!(stats["inputAudioCodec"], "opus", "{now}");
    // Passthrough: every Opus packet in went out (no encoder between them).
    let (audio_in, audio_out) = (
        stats["audioFramesIn"].as_u64().unwrap(),
        stats["audioFramesOut"].as_u64().unwrap(),
    );
    assert!(audio_in > 250 && audio_out == audio_in, "{now}");
    // FLV times are the publisher's, one clock for both streams: a keyframe every second.
    assert_eq!(stats["keyframeIntervalMs"], 1000, "{now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn av1_without_in_band_sequence_headers_and_mp4a_audio_decode() {
    let setup = start();
    let now = enhanced(&setup, "av1", ExVideo::Av1, ExAudio::Aac).await;
    assert_eq!(now["stats"]["inputVideoCodec"], "av1", "{now}");
    assert_eq!(now["stats"]["inputAudioCodec"], "aac", "{now}");
}

/// A new ingress `name` whose video is to pass through.
async fn passthrough_ingress(setup: &Setup, name: &str) -> Value {
    let body = serde_json::json!({"name": name, "video": {"mode": "passthrough"}});
    setup.create("/v1/ingresses", &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn av1_passes_through_to_webrtc_when_passthrough_is_asked() {
    let setup = start();
    passes_through(&setup, "av1pass", ExVideo::Av1, "av1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_passes_through_to_webrtc_when_passthrough_is_asked() {
    let setup = start();
    passes_through(&setup, "vp9pass", ExVideo::Vp9, "vp9").await;
    // In `auto`, the same publisher is transcoded to H.264.
    let now = enhanced(&setup, "vp9auto", ExVideo::Vp9, ExAudio::Opus).await;
    assert_eq!(now["stats"]["inputVideoCodec"], "vp9", "{now}");
}

/// `video` published into a passthrough ingress `name`: the subscriber's track has the publisher's codec
/// and decodes (`published` checks both), and every frame in went out (a transcoder would have re-timed and
/// re-counted them).
async fn passes_through(setup: &Setup, name: &str, video: ExVideo, codec: &str) {
    let ingress = passthrough_ingress(setup, name).await;
    let now = published(setup, ingress, name, video, ExAudio::Opus, "passthrough").await;
    let stats = &now["stats"];
    assert_eq!(stats["inputVideoCodec"], codec, "{now}");
    let (video_in, video_out) = (
        stats["videoFramesIn"].as_u64().unwrap(),
        stats["videoFramesOut"].as_u64().unwrap(),
    );
    assert!(video_in > 150 && video_out == video_in, "{now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_av1_frames_are_dropped_and_the_passthrough_goes_on() {
    malformed_frames_are_dropped("av1bad", ExVideo::Av1WithGarbage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_vp9_frames_are_dropped_and_the_passthrough_goes_on() {
    malformed_frames_are_dropped("vp9bad", ExVideo::Vp9WithGarbage).await;
}

/// Every 30th frame of `video` is garbage: each is dropped (counted), the rest still decode at the
/// subscriber, and the ingress stays live.
async fn malformed_frames_are_dropped(name: &str, video: ExVideo) {
    let setup = start();
    let ingress = passthrough_ingress(&setup, name).await;
    let now = published(&setup, ingress, name, video, ExAudio::Opus, "passthrough").await;
    let stats = &now["stats"];
    let (video_in, video_out, dropped) = (
        stats["videoFramesIn"].as_u64().unwrap(),
        stats["videoFramesOut"].as_u64().unwrap(),
        stats["dropped"].as_u64().unwrap(),
    );
    assert!(dropped >= 4 && video_out + dropped == video_in, "{now}");
    assert_eq!(now["state"], "live", "{now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_decodes_an_av1_publisher_passed_through() {
    chromium_decodes_passed_through("av1web", ExVideo::Av1, "video/AV1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_decodes_a_vp9_publisher_passed_through() {
    chromium_decodes_passed_through("vp9web", ExVideo::Vp9, "video/VP9").await;
}

/// Headless Chromium pulls a passthrough ingress's tracks (`video` published as `name`) and decodes them:
/// the codec it reports is `mime`, 320x240 frames and audio energy.
async fn chromium_decodes_passed_through(name: &str, video: ExVideo, mime: &str) {
    use common::browser;
    use common::rtmp::{APP, SECRET};
    let setup = start();
    let ingress = passthrough_ingress(&setup, name).await;
    let id = ingress["id"].as_str().unwrap().to_string();
    let key = ingress["streamKey"].as_str().unwrap().to_string();
    let addr = setup.rtmp.clone();
    let publisher = tokio::spawn(async move {
        ertmp::publish(&addr, &key, Some(video), Some(ExAudio::Opus), Duration::from_secs(30)).await
    });
    let live = setup
        .wait_ingress(&id, "live with 2 tracks", |i| {
            i["state"] == "live" && i["sfu"]["tracks"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let session = live["sfu"]["sessionId"].as_str().unwrap();
    let tracks = [format!("{name}-video"), format!("{name}-audio")];
    let mut page = browser::open_subscriber(
        &setup.sfu_api,
        APP,
        SECRET,
        session,
        [tracks[0].as_str(), tracks[1].as_str()],
    )
    .await;
    let report = page.next_loop_report(Duration::from_secs(45)).await;
    assert!(report.ok, "{report:?}\n{}", page.diagnostics());
    assert_eq!(report.video_codec.as_deref(), Some(mime), "{report:?}");
    assert!(report.frames_decoded > 30, "{report:?}");
    assert_eq!((report.frame_width, report.frame_height), (320, 240), "{report:?}");
    assert!(
        report.total_samples_received > 48_000 && report.total_audio_energy > 0.0,
        "{report:?}"
    );
    drop(page);
    publisher.abort();
}
