//! RTMP ingest through the real binary: ffmpeg publishes to the gateway, the gateway publishes into its
//! embedded SFU, and a subscriber `Peer` decodes what arrives. Bad input (wrong key, second publisher,
//! garbage, half handshakes) is refused without disturbing the live stream.

mod common;

use common::rtmp::{AAC_48K, BASELINE, Killed, ffmpeg, receive, start, start_with, subscribe};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_baseline_and_aac_pass_through_and_decode() {
    let setup = start();
    let ingress = setup.create_ingress("show").await;
    let id = ingress["id"].as_str().unwrap().to_string();
    let key = ingress["streamKey"].as_str().unwrap().to_string();
    assert_eq!(ingress["state"], "idle");
    assert!(
        ingress["publishUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/live/{key}"))
    );
    let url = format!("rtmp://{}/live/{key}", setup.rtmp);
    let _publisher = Killed(ffmpeg(&url, 30, BASELINE, AAC_48K));
    let live = setup
        .wait_ingress(&id, "live with two tracks", |i| {
            i["state"] == "live" && i["sfu"]["tracks"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let session = live["sfu"]["sessionId"].as_str().unwrap().to_string();
    let (_peer, mut streams, subscribed) = subscribe(&setup, &session, &["show-video", "show-audio"]).await;
    let received = receive(&mut streams, &subscribed, Duration::from_secs(6)).await;
    let video_mid = &subscribed.iter().find(|t| t.track_name == "show-video").unwrap().mid;
    let audio_mid = &subscribed.iter().find(|t| t.track_name == "show-audio").unwrap().mid;
    let (video, first, last, frames, _) = &received[video_mid];
    let expected = (last - first) / 3000 + 1;
    let decoded = video.settled().await;
    assert!(
        decoded.frames * 10 >= expected * 9,
        "decoded {} of {expected} frames sent in that span ({frames} received)",
        decoded.frames
    );
    assert_eq!(decoded.last_frame_bytes, 640 * 360 * 3 / 2);
    assert!(decoded.varied_picture);
    let sound = received[audio_mid].0.snapshot();
    assert!(sound.samples > 48_000 * 4 && sound.max_rms > 0.05, "{sound:?}");
    let now = setup.ingress(&id).await;
    assert_eq!(now["stats"]["videoPath"], "passthrough", "{now}");
    assert!(now["stats"]["videoFramesOut"].as_u64().unwrap() > 100, "{now}");
    // ffmpeg sends a keyframe every 30 frames at 30 fps.
    let interval = now["stats"]["keyframeIntervalMs"]
        .as_u64()
        .expect("a keyframe interval");
    assert!((967..=1_034).contains(&interval), "keyframe interval {interval} ms");

    // A second publisher on the live key is refused; the first continues.
    let mut second = ffmpeg(&url, 5, BASELINE, AAC_48K);
    let status = tokio::task::spawn_blocking(move || second.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the second publisher was not refused");
    let before = setup.ingress(&id).await["stats"]["videoFramesOut"].as_u64().unwrap();
    let after = setup
        .wait_ingress(&id, "still receiving from the first publisher", |i| {
            i["stats"]["videoFramesOut"].as_u64().unwrap() > before + 15
        })
        .await;
    assert_eq!(after["state"], "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_garbage_and_half_handshakes_are_refused() {
    let mut setup = start();
    let ingress = setup.create_ingress("guarded").await;
    let bad_key = "not-the-key-0123456789";
    let url = format!("rtmp://{}/live/{bad_key}", setup.rtmp);
    let mut publisher = ffmpeg(&url, 3, BASELINE, AAC_48K);
    let status = tokio::task::spawn_blocking(move || publisher.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "a wrong key was accepted");
    setup.gateway.wait_for_log("publish refused", Duration::from_secs(5));
    assert!(
        !setup.gateway.log.iter().any(|l| l.contains(bad_key)),
        "the stream key reached the log"
    );

    // Random bytes: the connection is closed at once.
    let mut garbage = tokio::net::TcpStream::connect(&setup.rtmp).await.unwrap();
    let noise: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 253) as u8).collect();
    garbage.write_all(&noise).await.unwrap();
    let mut buf = [0u8; 4096];
    let closed = timeout(Duration::from_secs(3), async {
        loop {
            match garbage.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "garbage did not close the connection");

    // Half a handshake: closed after the handshake timeout (1 s here).
    let mut half = tokio::net::TcpStream::connect(&setup.rtmp).await.unwrap();
    half.write_all(&[3u8; 600]).await.unwrap();
    let started = Instant::now();
    let closed = timeout(Duration::from_secs(5), async {
        loop {
            match half.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a half handshake was kept open");
    assert!(started.elapsed() >= Duration::from_millis(800));

    // Still healthy, and the real key still works.
    let health = reqwest::get(format!("{}/healthz", setup.gateway.api)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let _publisher = publish(&setup, &ingress);
    let id = ingress["id"].as_str().unwrap();
    let live = setup
        .wait_ingress(id, "live with tracks", |i| {
            i["state"] == "live" && i["sfu"]["sessionId"].is_string()
        })
        .await;

    // The SFU proxy serves the Calls API behind the control API's token, never exposing the app secret.
    let session = live["sfu"]["sessionId"].as_str().unwrap();
    let proxied = setup
        .http
        .get(format!("{}/v1/sfu/sessions/{session}", setup.gateway.api))
        .bearer_auth(common::rtmp::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status().as_u16(), 200);
    let body: serde_json::Value = proxied.json().await.unwrap();
    assert!(body["tracks"].as_array().is_some_and(|t| !t.is_empty()), "{body}");
    let anonymous = setup
        .http
        .get(format!("{}/v1/sfu/sessions/{session}", setup.gateway.api))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // Deleting a live ingress ends its stream and disconnects the publisher.
    let deleted = setup
        .http
        .delete(format!("{}/v1/ingresses/{id}", setup.gateway.api))
        .bearer_auth(common::rtmp::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    let mut publisher = _publisher;
    let exited = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if publisher.0.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })
    .await
    .unwrap();
    assert!(exited, "the publisher of a deleted ingress was not disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_by_cost_refuses_what_does_not_fit() {
    // Capacity 11: one transcode (10 units) fits, a second does not, a passthrough (1 unit) still does.
    let setup = common::rtmp::start_with(&[("GATEWAY__SUPERVISOR__CAPACITY", "11")]);
    let create = |name: &'static str, mode: &'static str| {
        let setup = &setup;
        async move {
            let response = setup
                .http
                .post(format!("{}/v1/ingresses", setup.gateway.api))
                .bearer_auth(common::rtmp::TOKEN)
                .json(&serde_json::json!({"name": name, "video": {"mode": mode}}))
                .send()
                .await
                .unwrap();
            let ingress: serde_json::Value = response.json().await.unwrap();
            let url = format!("rtmp://{}/live/{}", setup.rtmp, ingress["streamKey"].as_str().unwrap());
            (ingress["id"].as_str().unwrap().to_string(), url)
        }
    };
    let (first, first_url) = create("heavy1", "transcode").await;
    let _first = Killed(ffmpeg(&first_url, 30, BASELINE, AAC_48K));
    setup.wait_ingress(&first, "live", |i| i["state"] == "live").await;

    let (_, second_url) = create("heavy2", "transcode").await;
    let mut second = ffmpeg(&second_url, 5, BASELINE, AAC_48K);
    let status = tokio::task::spawn_blocking(move || second.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "a session over capacity was admitted");

    let (light, light_url) = create("light", "passthrough").await;
    let _light = Killed(ffmpeg(&light_url, 30, BASELINE, AAC_48K));
    setup.wait_ingress(&light, "live", |i| i["state"] == "live").await;
    let metrics = setup.metrics_text().await;
    assert!(metrics.contains("sfu_gateway_capacity_used_units 11"), "{metrics}");
}

/// Reads until the server closes the connection; how long that took (`None`: still open after `limit`).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_limit_are_closed_at_once() {
    let setup = start_with(&[("GATEWAY__RTMP__MAX_CONNECTIONS_PER_IP", "2")]);
    // Two idle connections are allowed (each lives until the 1 s handshake timeout)…
    let opened = Instant::now();
    let mut first = tokio::net::TcpStream::connect(&setup.rtmp).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(&setup.rtmp).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // …a third from the same address is closed at once.
    let mut third = tokio::net::TcpStream::connect(&setup.rtmp).await.unwrap();
    let refused = closed_within(&mut third, Duration::from_millis(500)).await;
    assert!(refused.is_some(), "the third connection was kept open");
    for allowed in [&mut first, &mut second] {
        closed_within(allowed, Duration::from_secs(3))
            .await
            .expect("closed by the handshake timeout");
        let lived = opened.elapsed();
        assert!(
            lived >= Duration::from_millis(800),
            "an allowed connection was closed after {lived:?}"
        );
    }
    // Once they are gone, the address may connect again, and a publisher works.
    let mut again = tokio::net::TcpStream::connect(&setup.rtmp).await.unwrap();
    assert!(
        closed_within(&mut again, Duration::from_millis(500)).await.is_none(),
        "a connection after the others closed was refused"
    );
    drop(again);
    let metrics = setup.metrics_text().await;
    assert!(
        metrics.contains("rtmp_connections_refused_total{reason=\"per_ip\"} 1"),
        "{metrics}"
    );
    let ingress = setup.create_ingress("capped").await;
    let _publisher = publish(&setup, &ingress);
    setup
        .wait_ingress(ingress["id"].as_str().unwrap(), "live", |i| i["state"] == "live")
        .await;
}

/// ffmpeg publishing 10 s of H.264 baseline + AAC to `ingress`'s key.
fn publish(setup: &common::rtmp::Setup, ingress: &serde_json::Value) -> Killed {
    let key = ingress["streamKey"].as_str().unwrap();
    Killed(ffmpeg(
        &format!("rtmp://{}/live/{key}", setup.rtmp),
        10,
        BASELINE,
        AAC_48K,
    ))
}
