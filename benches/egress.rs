//! `scripts/bench egress`: N concurrent single-track 720p30 egresses (H.264 + Opus from the SFU → decode →
//! x264 + AAC → FLV → an RTMP destination) beside ffmpeg doing the same decode + encode in the same
//! invocation. With `--composite K`, each egress is a room egress of K 720p30 participants in a grid (K
//! decodes, scaled into their cells, one 720p30 encode), and ffmpeg decodes the K inputs, scales and overlays
//! them in the same grid (`egress::layout`) and encodes the same.
//!
//! The source is an RTMP ingest (ffmpeg `-re -c copy` from a 720p30 3 Mbit/s file encoded once) published
//! into an embedded SFU that runs in a *separate* gateway process, together with the ingest; the gateway under
//! test only runs the egresses, so its CPU and RSS are theirs. Each egress and each baseline ffmpeg sends its
//! FLV to its own `ffmpeg -listen 1 … -c copy -f null` destination (not measured). The added latency (frame
//! in → FLV video tag out) is the gateway's `egress_added_latency_seconds` summary.
//! The baseline's input is the same video with the audio as Opus, as the egress receives it. The egresses and
//! the baseline run at the same time and are sampled over the same `--windows` windows of `--seconds` (this
//! machine's speed varies by tens of percent from one minute to the next); the table gives the ratio over the
//! whole run and the median and range of the per-window ratios.

mod util;

use serde_json::{Value, json};
use sfu_gateway::egress::layout::{Layout, cells};
use std::time::{Duration, Instant};
use util::{Proc, cores, ffmpeg, sample_all};

const APP: &str = "0000000000000000000000000000e6e5";
const SECRET: &str = "egress-bench-secret-egress-bench-secret-egress-bench-secret-egr";
const INPUT: &str = "/tmp/sfu-gateway-bench-720p30-3M.flv";
/// The same video with the audio an egress receives from the SFU (the ingest's Opus: 48 kHz stereo, 64 kbit/s,
/// 20 ms frames), so the baseline decodes what the egress decodes.
const INPUT_OPUS: &str = "/tmp/sfu-gateway-bench-720p30-3M-opus.mkv";

/// An RTMP destination that takes one stream and throws it away; returns it and its URL.
async fn destination() -> (Proc, String) {
    let port = util::free_tcp_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/bench");
    let sink = ffmpeg(&["-listen", "1", "-i", &url, "-c", "copy", "-f", "null", "-"]);
    // `-listen 1` takes exactly one connection, so readiness cannot be probed by connecting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    (sink, url)
}

async fn json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.expect("request").json().await.expect("json")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let flags = util::flags(&[("egresses", 1), ("seconds", 20), ("composite", 0), ("windows", 4)]);
    let (n, seconds) = (flags["egresses"] as usize, flags["seconds"]);
    // Participants per egress: 0 = one named source (the single-track case).
    let composite = flags["composite"] as usize;
    util::prepare_input(INPUT, "1280x720", "3M");
    prepare_opus_input();
    let binary = env!("CARGO_BIN_EXE_sfu-gateway");
    let http = reqwest::Client::new();

    // The SFU and the source (an RTMP ingest publishing into it), in their own process.
    let (_sfu, found) = util::gateway(
        binary,
        &[
            ("GATEWAY__SIP__ENABLED", "false"),
            ("GATEWAY__SFU__EMBEDDED__APP_ID", APP),
            ("GATEWAY__SFU__EMBEDDED__APP_SECRET", SECRET),
        ],
        &[
            ("embedded sfu started", "http"),
            ("api listening", "addr"),
            ("rtmp listening", "addr"),
        ],
    );
    let (sfu_api, source_api, rtmp) = (
        format!("http://{}/v1", found[0]),
        format!("http://{}", found[1]),
        &found[2],
    );
    // One source, or `composite` sources in the room `bench`.
    let mut publishers = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..composite.max(1) {
        let (publisher, id) = publish(&http, &source_api, rtmp, i).await;
        sessions.push(id);
        publishers.push(publisher);
    }
    let session = sessions[0].clone();

    // The gateway under test: egresses only.
    let (gw, found) = util::gateway(
        binary,
        &[
            ("GATEWAY__RTMP__ENABLED", "false"),
            ("GATEWAY__SIP__ENABLED", "false"),
            ("GATEWAY__SFU__MODE", "cloudflare"),
            ("GATEWAY__SFU__API_URL", &sfu_api),
            ("GATEWAY__SFU__APP_ID", APP),
            ("GATEWAY__SFU__APP_SECRET", SECRET),
        ],
        &[("api listening", "addr")],
    );
    let api = format!("http://{}", found[0]);
    let pid = [gw.0.id()];
    // The room as the application would register it with the gateway (the sources' SFU sessions).
    if composite > 0 {
        for (i, session) in sessions.iter().enumerate() {
            let tracks = json!([{"trackName": format!("src{i}-video"), "kind": "video"}, {"trackName": format!("src{i}-audio"), "kind": "audio"}]);
            let reply = http
                .put(format!("{api}/v1/rooms/bench/participants/src{i}"))
                .json(&json!({"sessionId": session, "tracks": tracks}))
                .send()
                .await
                .expect("register a participant");
            assert!(
                reply.status().is_success(),
                "participant not registered: {}",
                reply.status()
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = sample_all(&pid).rss;
    let mut destinations = Vec::new();
    for _ in 0..n {
        let (sink, url) = destination().await;
        let mut body = json!({
            "outputs": [{"url": url}],
            "video": {"width": 1280, "height": 720, "fps": 30, "bitrateKbps": 2500},
        });
        if composite > 0 {
            body["room"] = json!("bench");
        } else {
            body["tracks"] = json!([{"sessionId": session, "trackName": "src0-video"}, {"sessionId": session, "trackName": "src0-audio"}]);
        }
        let created = json(http.post(format!("{api}/v1/egresses")).json(&body)).await;
        let id = created["id"].as_str().expect("egress id").to_string();
        destinations.push((sink, id));
    }
    for (_, id) in &destinations {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let egress = json(http.get(format!("{api}/v1/egresses/{id}"))).await;
            let sources = egress["tracks"].as_array().map_or(0, Vec::len);
            if egress["state"] == "active" && sources == 2 * composite.max(1) {
                break;
            }
            assert!(Instant::now() < deadline, "the egress never became active: {egress}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Baseline, running at the same time: ffmpeg decoding the same 720p30 H.264 and the same Opus the
    // egress receives, encoding what the egress encodes with its x264 and AAC settings
    // (`pipelines/video-encode-h264.gst`, `audio-encode-aac.gst`), to RTMP. Both are sampled over the same
    // windows, so a slow or busy stretch of the machine weighs on both alike.
    let (baseline, ff_pids) = start_baseline(n, composite, INPUT_OPUS).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // warm-up
    let windows = flags["windows"].max(1);
    let mut ratios = Vec::new();
    let (first_gw, first_ff) = (sample_all(&pid), sample_all(&ff_pids));
    let (mut last_gw, mut last_ff) = (first_gw.clone(), first_ff.clone());
    for _ in 0..windows {
        tokio::time::sleep(Duration::from_secs_f64(seconds as f64 / windows as f64)).await;
        let (gw_now, ff_now) = (sample_all(&pid), sample_all(&ff_pids));
        ratios.push(cores(&last_gw, &gw_now) / cores(&last_ff, &ff_now).max(1e-9));
        (last_gw, last_ff) = (gw_now, ff_now);
    }
    let (gw_cores, gw_rss) = (cores(&first_gw, &last_gw), (last_gw.rss - idle_rss) / n as f64);
    let (ff_cores, ff_rss) = (cores(&first_ff, &last_ff), last_ff.rss / n as f64);
    ratios.sort_by(f64::total_cmp);
    let p50 = util::metrics_quantile_ms(&api, "egress_added_latency_seconds", "0.5").await;
    let p95 = util::metrics_quantile_ms(&api, "egress_added_latency_seconds", "0.95").await;
    drop(baseline);
    for (_, id) in &destinations {
        let _ = http.delete(format!("{api}/v1/egresses/{id}")).send().await;
    }
    drop(destinations);

    let mib = |b: f64| b / 1_048_576.0;
    let what = if composite > 0 {
        format!("{composite}-participant 720p30 grid composite")
    } else {
        "single-track 720p30".to_string()
    };
    println!("## egress benchmark ({n} {what} egress(es), {seconds} s)");
    println!();
    println!("| figure | gateway | baseline (ffmpeg) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| CPU per {what} egress (H.264 + Opus in → x264 2.5 Mbit/s + AAC 128 kbit/s FLV out) | {:.1} % | {:.1} % | {:.2} |",
        gw_cores / n as f64 * 100.0,
        ff_cores / n as f64 * 100.0,
        gw_cores / ff_cores.max(1e-9)
    );
    println!(
        "| ratio per {:.1} s window: median (min – max) over {windows} | | | {:.2} ({:.2} – {:.2}) |",
        seconds as f64 / windows as f64,
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    println!(
        "| RSS per egress | {:.1} MiB (added to the idle process) | {:.1} MiB (whole ffmpeg) | |",
        mib(gw_rss),
        mib(ff_rss)
    );
    println!(
        "| added latency p50 / p95 (frame in → FLV video tag out) | {p50:.0} / {p95:.0} ms | not instrumented | |"
    );
}

/// Starts `n` baseline ffmpegs on `input`, each with its own destination; returns them and their pids.
async fn start_baseline(n: usize, composite: usize, input: &str) -> (Vec<(Proc, Proc)>, Vec<u32>) {
    let mut running = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..n {
        let (sink, url) = destination().await;
        let args = baseline_args(composite, input, &url);
        let encoder = ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
        pids.push(encoder.0.id());
        running.push((sink, encoder));
    }
    (running, pids)
}

/// Encodes [`INPUT_OPUS`] once from [`INPUT`]: the video copied, the audio as the ingest publishes it.
fn prepare_opus_input() {
    if std::path::Path::new(INPUT_OPUS).exists() {
        return;
    }
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i", INPUT, "-c:v", "copy"])
        .args([
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            "-ar",
            "48000",
            "-ac",
            "2",
            "-frame_duration",
            "20",
        ])
        .arg(INPUT_OPUS)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "cannot make the Opus input");
}

/// Publishes source `i` (the input file, copied) through an RTMP ingest of the SFU process; waits until it is
/// live and returns the publisher and its SFU session.
async fn publish(http: &reqwest::Client, source_api: &str, rtmp: &str, i: usize) -> (Proc, String) {
    let body = json!({"name": format!("src{i}"), "video": {"mode": "passthrough"}});
    let ingress = json(http.post(format!("{source_api}/v1/ingresses")).json(&body)).await;
    let key = ingress["streamKey"].as_str().expect("stream key");
    let ingress_id = ingress["id"].as_str().expect("ingress id");
    let publisher = ffmpeg(&[
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        INPUT,
        "-c",
        "copy",
        "-f",
        "flv",
        &format!("rtmp://{rtmp}/live/{key}"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = json(http.get(format!("{source_api}/v1/ingresses/{ingress_id}"))).await;
        if live["state"] == "live" && live["sfu"]["tracks"].as_array().is_some_and(|t| t.len() == 2) {
            let session = live["sfu"]["sessionId"].as_str().expect("session").to_string();
            return (publisher, session);
        }
        assert!(Instant::now() < deadline, "the source never went live: {live}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// ffmpeg doing what an egress does: decode `input` (`composite` of them, laid out in the egress's grid,
/// or one), encode with the egress's x264 and AAC settings (`pipelines/video-encode-h264.gst`,
/// `audio-encode-aac.gst`), send FLV to `url`.
fn baseline_args(composite: usize, input: &str, url: &str) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    for _ in 0..composite.max(1) {
        args.extend(["-re", "-stream_loop", "-1", "-i", input].map(String::from));
    }
    if composite > 0 {
        let mut graph = String::from("color=black:s=1280x720:r=30[bg0];");
        for (i, cell) in cells(Layout::Grid, composite, 0, 1280, 720).iter().enumerate() {
            graph.push_str(&format!(
                "[{i}:v]scale={}:{}[s{i}];[bg{i}][s{i}]overlay={}:{}:shortest=1[bg{}];",
                cell.width,
                cell.height,
                cell.x,
                cell.y,
                i + 1
            ));
        }
        let inputs: String = (0..composite).map(|i| format!("[{i}:a]")).collect();
        graph.push_str(&format!("{inputs}amix=inputs={composite}[a]"));
        args.extend(["-filter_complex".into(), graph]);
        args.extend(["-map".into(), format!("[bg{composite}]"), "-map".into(), "[a]".into()]);
    } else {
        args.extend(["-vf", "scale=1280:720"].map(String::from));
    }
    args.extend(
        [
            "-r",
            "30",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-profile:v",
            "baseline",
            "-b:v",
            "2500k",
            "-g",
            "60",
            "-bf",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ar",
            "48000",
            "-ac",
            "2",
            "-f",
            "flv",
            url,
        ]
        .map(String::from),
    );
    args
}
