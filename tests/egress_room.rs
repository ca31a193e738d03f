//! Room egress through the real binary: RTMP publishers of plain colours join a room (ffmpeg → RTMP ingest →
//! embedded SFU), a room egress composites them to nginx-rtmp, and the recording is decoded frame by frame to
//! see where each colour is: a grid that changes as publishers join and leave, and a speaker layout that
//! follows who is loud.

mod common;

use common::egress::{create_egress, get_egress, stop_and_wait, wait_egress};
use common::nginx::{NginxRtmp, decode_errors, probe};
use common::rtmp::{AAC_48K, BASELINE, Killed, Setup, TOKEN, ffmpeg_with, start};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const W: usize = 640;
const H: usize = 360;

/// Publishes `color` (320x180, 15 fps, a keyframe every 2 s) and the audio of `audio` (a lavfi source) into
/// `room` as ingress `name`; waits until it is live with both tracks.
async fn publish(setup: &Setup, name: &str, room: &str, color: &str, audio: &str) -> Killed {
    publish_with(setup, json!({"name": name, "room": room}), "320x180", color, audio).await
}

/// Like [`publish`], with the ingress created from `body` and a picture of `size`.
async fn publish_with(setup: &Setup, body: serde_json::Value, size: &str, color: &str, audio: &str) -> Killed {
    let ingress = setup.create("/v1/ingresses", &body).await;
    let url = format!("rtmp://{}/live/{}", setup.rtmp, ingress["streamKey"].as_str().unwrap());
    let picture = format!("color=c={color}:size={size}:rate=15");
    let encoding = [BASELINE, AAC_48K].concat();
    let child = ffmpeg_with(&url, 60, &[&picture, audio], &encoding);
    let publisher = Killed(child);
    let id = ingress["id"].as_str().unwrap();
    setup
        .wait_ingress(id, "live", |i| {
            i["sfu"]["tracks"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    publisher
}

/// Waits (bounded) until the egress takes `n` tracks.
async fn wait_tracks(setup: &Setup, id: &str, n: usize) {
    let what = format!("the egress does not take {n} tracks");
    wait_egress(setup, id, Duration::from_secs(20), &what, |e| {
        e["tracks"].as_array().is_some_and(|t| t.len() == n)
    })
    .await;
}

/// Every half second of the recording as 640x360 RGB.
fn frames(path: &Path) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-vf", "fps=2", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap()
        .stdout;
    out.chunks_exact(W * H * 3).map(<[u8]>::to_vec).collect()
}

/// The colour of the pixel at (x, y), by which channels are high.
fn color(frame: &[u8], x: usize, y: usize) -> &'static str {
    let p = &frame[(y * W + x) * 3..][..3];
    match (p[0] > 128, p[1] > 128, p[2] > 128) {
        (true, false, false) => "red",
        (false, true, false) => "lime",
        (false, false, true) => "blue",
        (true, true, false) => "yellow",
        (false, false, false) if p.iter().all(|c| *c < 40) => "black",
        _ => "other",
    }
}

fn colors(frame: &[u8], points: &[(usize, usize)]) -> Vec<&'static str> {
    points.iter().map(|(x, y)| color(frame, *x, *y)).collect()
}

fn set<'a>(colors: &[&'a str]) -> BTreeSet<&'a str> {
    colors.iter().copied().collect()
}

/// Index of the first frame from `from` on that `matches`.
fn first(frames: &[Vec<u8>], from: usize, matches: impl Fn(&[u8]) -> bool) -> Option<usize> {
    (from..frames.len()).find(|i| matches(&frames[*i]))
}

/// The recording's audio level (RMS, full scale 1).
fn rms(path: &Path) -> f64 {
    let pcm = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "1", "-"])
        .output()
        .unwrap()
        .stdout;
    let n = (pcm.len() / 2).max(1) as f64;
    let sum: f64 = pcm
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])).powi(2))
        .sum();
    (sum / n).sqrt() / 32768.0
}

/// A tone per publisher (tones of one frequency could cancel out in the mix).
const TONE: &str = "sine=frequency=440:sample_rate=48000";
const TONE2: &str = "sine=frequency=550:sample_rate=48000";
const TONE3: &str = "sine=frequency=660:sample_rate=48000";
const TONE4: &str = "sine=frequency=770:sample_rate=48000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_egress_lays_out_a_grid_that_follows_joins_and_leaves() {
    let setup = start();
    let nginx = NginxRtmp::start();
    // Tracks and a room at once, a bad room name, an unknown layout: refused, nothing started.
    for (body, status) in [
        (
            json!({"room": "stage", "tracks": [{"sessionId": "a", "trackName": "b"}], "outputs": [{"url": nginx.url("x")}]}),
            422,
        ),
        (json!({"room": "no/slash", "outputs": [{"url": nginx.url("x")}]}), 422),
        (
            json!({"room": "stage", "layout": "mosaic", "outputs": [{"url": nginx.url("x")}]}),
            400,
        ),
        // RTMP URLs without a stream name, with a bad port, or of another scheme.
        (
            json!({"room": "stage", "outputs": [{"url": "rtmp://127.0.0.1/live"}]}),
            422,
        ),
        (
            json!({"room": "stage", "outputs": [{"url": "rtmp://127.0.0.1:port/live/k"}]}),
            422,
        ),
        (
            json!({"room": "stage", "outputs": [{"url": "srt://127.0.0.1:9000/live/k"}]}),
            422,
        ),
    ] {
        let (got, answer) = setup.post("/v1/egresses", &body).await;
        assert_eq!(got, status, "{body}");
        let bad_url = body["outputs"][0]["url"]
            .as_str()
            .is_some_and(|u| !u.starts_with(&nginx.url("")));
        if bad_url {
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("outputs[0].url"),
                "{answer}"
            );
        }
    }
    let red = publish(&setup, "red", "stage", "red", TONE).await;
    let _lime = publish(&setup, "lime", "stage", "lime", TONE2).await;
    let _blue = publish(&setup, "blue", "stage", "blue", TONE3).await;
    let id = create_egress(
        &setup,
        json!({
            "room": "stage",
            "outputs": [{"url": nginx.url("grid")}],
            "video": {"width": W, "height": H, "fps": 15, "bitrateKbps": 800},
        }),
    )
    .await;
    let egress = get_egress(&setup, &id).await;
    assert_eq!(
        (egress["room"].as_str(), egress["layout"].as_str()),
        (Some("stage"), Some("grid"))
    );
    wait_tracks(&setup, &id, 6).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A fourth joins: 2 × 2.
    let _yellow = publish(&setup, "yellow", "stage", "yellow", TONE4).await;
    wait_tracks(&setup, &id, 8).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The first leaves (after the ingest's reconnect grace): three again.
    drop(red);
    wait_tracks(&setup, &id, 6).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Switched to the speaker layout while it runs.
    let patch = |id: String, body: serde_json::Value| {
        setup
            .http
            .patch(format!("{}/v1/egresses/{id}", setup.gateway.api))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let bad = patch(id.clone(), json!({"layout": "mosaic"})).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let missing = patch("eg_0000000000000000".into(), json!({"layout": "grid"}))
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let patched = patch(id.clone(), json!({"layout": "speaker"})).await.unwrap();
    assert_eq!(patched.status().as_u16(), 200);
    assert_eq!(patched.json::<serde_json::Value>().await.unwrap()["layout"], "speaker");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recording = stop_and_wait(&setup, &id, &nginx, "grid").await;

    let probed = probe(&recording);
    let video = probed.video.as_ref().expect("video");
    assert_eq!((video.codec.as_str(), video.width, video.height), ("h264", 640, 360));
    assert_eq!(probed.audio.as_ref().map(|a| a.codec.as_str()), Some("aac"));
    assert_eq!(decode_errors(&recording), "");
    assert!(rms(&recording) > 0.05, "the room's tones are not heard");
    let frames = frames(&recording);
    // Three: two cells on top, one centred below, black beside it.
    let three = [(160, 90), (480, 90), (320, 270)];
    let beside = [(40, 300), (600, 300)];
    let four = [(160, 90), (480, 90), (160, 270), (480, 270)];
    let grid3 = |frame: &[u8], want: &[&str]| {
        set(&colors(frame, &three)) == set(want) && colors(frame, &beside) == ["black", "black"]
    };
    let all = ["red", "lime", "blue"];
    let joined = ["red", "lime", "blue", "yellow"];
    let left = ["lime", "blue", "yellow"];
    let summary: Vec<String> = frames
        .iter()
        .map(|f| format!("{:?}|{:?}", colors(f, &three), colors(f, &four)))
        .collect();
    let a =
        first(&frames, 0, |f| grid3(f, &all)).unwrap_or_else(|| panic!("no 3-grid of red, lime, blue: {summary:#?}"));
    let b = first(&frames, a, |f| set(&colors(f, &four)) == set(&joined))
        .unwrap_or_else(|| panic!("no 2x2 grid after the fourth joined: {summary:#?}"));
    let c = first(&frames, b, |f| grid3(f, &left))
        .unwrap_or_else(|| panic!("no 3-grid of the remaining three after red left: {summary:#?}"));
    // Speaker layout: the large cell reaches the bottom left, a side cell sits right of the centre; in the
    // grid both spots are black.
    let speaker = |f: &[u8]| colors(f, &[(40, 300), (560, 225)]).iter().all(|c| left.contains(c));
    first(&frames, c, speaker).unwrap_or_else(|| panic!("no speaker layout after the switch: {summary:#?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_speaker_layout_enlarges_whoever_is_loud() {
    let setup = start();
    let nginx = NginxRtmp::start();
    // Red is loud for its first 10 s, then silent; lime is silent until its 14th second, then loud; blue never
    // speaks.
    let loud_then_silent = "aevalsrc=exprs=0.5*sin(2*PI*440*t)*lt(t\\,10):s=48000";
    let silent_then_loud = "aevalsrc=exprs=0.5*sin(2*PI*660*t)*gt(t\\,14):s=48000";
    let silent = "aevalsrc=exprs=0:s=48000";
    let _red = publish(&setup, "red", "talk", "red", loud_then_silent).await;
    let _lime = publish(&setup, "lime", "talk", "lime", silent_then_loud).await;
    let _blue = publish(&setup, "blue", "talk", "blue", silent).await;
    let id = create_egress(
        &setup,
        json!({
            "room": "talk",
            "layout": "speaker",
            "outputs": [{"url": nginx.url("talk")}],
            "video": {"width": W, "height": H, "fps": 15, "bitrateKbps": 800},
        }),
    )
    .await;
    wait_tracks(&setup, &id, 6).await;
    tokio::time::sleep(Duration::from_secs(18)).await;
    let recording = stop_and_wait(&setup, &id, &nginx, "talk").await;
    assert_eq!(decode_errors(&recording), "");
    let frames = frames(&recording);
    // The speaker fills the left three quarters; the others are stacked on the right.
    let main = (240, 180);
    let side = [(560, 135), (560, 225)];
    let summary: Vec<String> = frames
        .iter()
        .map(|f| format!("{} {:?}", color(f, main.0, main.1), colors(f, &side)))
        .collect();
    let speaking = |frame: &[u8], who: &str, others: &[&str]| {
        color(frame, main.0, main.1) == who && set(&colors(frame, &side)) == set(others)
    };
    let a = first(&frames, 0, |f| speaking(f, "red", &["lime", "blue"]))
        .unwrap_or_else(|| panic!("red is never the speaker: {summary:#?}"));
    first(&frames, a, |f| speaking(f, "lime", &["red", "blue"]))
        .unwrap_or_else(|| panic!("lime never takes over: {summary:#?}"));
}

/// The egress's view of one video source, once `check` holds (bounded wait).
async fn wait_source(
    setup: &Setup,
    id: &str,
    track: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let source = |egress: &serde_json::Value| {
        egress["sources"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["trackName"] == track).cloned())
    };
    let what = format!("{track} never as expected");
    let egress = wait_egress(setup, id, Duration::from_secs(20), &what, |e| {
        source(e).is_some_and(|s| check(&s))
    })
    .await;
    source(&egress).expect("checked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_source_is_taken_at_the_layer_its_cell_needs() {
    let setup = start();
    let nginx = NginxRtmp::start();
    // 640x360 transcoded into three layers: a 640x360, b 320x180, c 160x90.
    let body = json!({"name": "red", "room": "layers", "video": {"layers": 3}});
    let _red = publish_with(&setup, body, "640x360", "red", TONE).await;
    let id = create_egress(
        &setup,
        json!({
            "room": "layers",
            "outputs": [{"url": nginx.url("layers")}],
            "video": {"width": W, "height": H, "fps": 15, "bitrateKbps": 800},
        }),
    )
    .await;
    // Alone, it fills the picture: the best layer.
    let full = wait_source(&setup, &id, "red-video", |s| s["height"] == 360).await;
    assert_eq!(full["rid"], "a", "{full}");
    // In a 2 x 2 grid its cell is 320x180: the half-size layer is enough.
    let _lime = publish(&setup, "lime", "layers", "lime", TONE2).await;
    let _blue = publish(&setup, "blue", "layers", "blue", TONE3).await;
    let _yellow = publish(&setup, "yellow", "layers", "yellow", TONE4).await;
    wait_tracks(&setup, &id, 8).await;
    let half = wait_source(&setup, &id, "red-video", |s| s["height"] == 180).await;
    assert_eq!(
        (half["rid"].as_str(), half["width"].as_u64()),
        (Some("b"), Some(320)),
        "{half}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recording = stop_and_wait(&setup, &id, &nginx, "layers").await;
    assert_eq!(decode_errors(&recording), "");
    // Red is still in its cell after the switch.
    let frames = frames(&recording);
    let four = [(160, 90), (480, 90), (160, 270), (480, 270)];
    let last = frames.last().expect("frames");
    assert_eq!(
        set(&colors(last, &four)),
        set(&["red", "lime", "blue", "yellow"]),
        "{:?}",
        colors(last, &four)
    );
}
