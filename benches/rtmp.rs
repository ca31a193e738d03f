//! `scripts/bench rtmp`: N concurrent 1080p30 6 Mbit/s RTMP ingests (ffmpeg `-re -c copy` from a file
//! encoded once, so the publishers' encoding is not measured) through the gateway, in passthrough and in
//! transcode (720p + 2 simulcast layers), each beside a baseline run in the same invocation:
//! - passthrough vs ffmpeg receiving the same RTMP and relaying it to RTP with `-c copy`;
//! - transcode vs ffmpeg receiving it and encoding the same three layers with the same x264 settings
//!   (plus AAC → Opus, as the gateway does).
//!
//! The gateway under test publishes to an embedded SFU running in a *separate* gateway process, so its
//! CPU is the ingest's own (RTMP, FLV, SRTP, and the transcode when there is one). The gateway-added latency
//! (FLV tag arrival → frame handed to the WebRTC peer) comes from its `/metrics` summary.

#[path = "../tests/common/rtmp_client.rs"]
mod rtmp_client;
mod util;

use serde_json::{Value, json};
use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;
use util::{Proc, Sample, cores, ffmpeg, sample_all};

const APP: &str = "0000000000000000000000000000beef";
const SECRET: &str = "rtmp-bench-secret-rtmp-bench-secret-rtmp-bench-secret-rtmp-benc";
const INPUT: &str = "/tmp/sfu-gateway-bench-1080p30-6M.flv";

struct Args {
    streams: usize,
    transcode_streams: usize,
    seconds: u64,
}

fn args() -> Args {
    let flags = util::flags(&[("streams", 2), ("transcode-streams", 1), ("seconds", 10)]);
    Args {
        streams: flags["streams"] as usize,
        transcode_streams: flags["transcode-streams"] as usize,
        seconds: flags["seconds"],
    }
}

fn gateway(env: &[(&str, &str)], wanted: &[(&str, &str)]) -> (Proc, Vec<String>) {
    util::gateway(env!("CARGO_BIN_EXE_sfu-gateway"), env, wanted)
}

fn publisher(url: &str) -> Proc {
    ffmpeg(&["-re", "-stream_loop", "-1", "-i", INPUT, "-c", "copy", "-f", "flv", url])
}

async fn create_ingress(api: &str, name: &str, video: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{api}/v1/ingresses"))
        .json(&json!({"name": name, "video": video}))
        .send()
        .await
        .expect("create ingress")
        .json()
        .await
        .expect("ingress json")
}

/// Mean over the live ingresses named `prefix*` of their p50/p95/p99 added latency (ms), from the API.
async fn quantiles(api: &str, prefix: &str) -> (f64, f64, f64) {
    let all: Value = reqwest::get(format!("{api}/v1/ingresses"))
        .await
        .expect("ingresses")
        .json()
        .await
        .expect("json");
    let rows: Vec<[f64; 3]> = all["ingresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["name"].as_str().is_some_and(|n| n.starts_with(prefix)) && i["state"] == "live")
        .filter_map(|i| serde_json::from_value(i["stats"]["addedLatencyMs"].clone()).ok())
        .collect();
    let n = rows.len().max(1) as f64;
    let mean = |k: usize| {
        if rows.is_empty() {
            f64::NAN
        } else {
            rows.iter().map(|r| r[k]).sum::<f64>() / n
        }
    };
    (mean(0), mean(1), mean(2))
}

/// Measures the processes `pids` over `seconds` after a warm-up: (cores, RSS bytes).
async fn measure(pids: &[u32], seconds: u64) -> (f64, f64) {
    tokio::time::sleep(Duration::from_secs(3)).await; // warm-up
    for pid in pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "measured process {pid} is not running"
        );
    }
    let start: Sample = sample_all(pids);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let end = sample_all(pids);
    (cores(&start, &end), end.rss)
}

/// The video tags of an FLV file, (timestamp ms, tag body) in file order, and the file's duration in ms.
fn flv_video_tags(path: &str) -> (Vec<(u32, bytes::Bytes)>, u32) {
    let file = std::fs::read(path).expect("read the input");
    let mut at = 9 + 4; // FLV header, PreviousTagSize0
    let (mut tags, mut last) = (Vec::new(), 0);
    while at + 11 <= file.len() {
        let kind = file[at];
        let size = u32::from_be_bytes([0, file[at + 1], file[at + 2], file[at + 3]]) as usize;
        let ms = u32::from_be_bytes([file[at + 7], file[at + 4], file[at + 5], file[at + 6]]);
        let Some(body) = file.get(at + 11..at + 11 + size) else {
            break;
        };
        if kind == 9 {
            tags.push((ms, bytes::Bytes::copy_from_slice(body)));
        }
        last = last.max(ms);
        at += 11 + size + 4;
    }
    (tags, last + 33)
}

/// `count` Opus packets of 20 ms (64 kbit/s stereo, a 440 Hz tone), encoded before any measurement.
fn opus_packets(count: u32) -> Vec<bytes::Bytes> {
    use gstreamer::prelude::*;
    gstreamer::init().expect("gstreamer");
    let description = format!(
        "audiotestsrc num-buffers={count} samplesperbuffer=960 wave=sine freq=440 ! \
         audio/x-raw,rate=48000,channels=2 ! opusenc frame-size=20 bitrate=64000 ! appsink name=sink sync=false"
    );
    let pipeline = gstreamer::parse::launch(&description)
        .expect("opus pipeline")
        .downcast::<gstreamer::Pipeline>()
        .expect("a pipeline");
    let sink = pipeline
        .by_name("sink")
        .expect("appsink")
        .downcast::<gstreamer_app::AppSink>()
        .expect("an appsink");
    pipeline.set_state(gstreamer::State::Playing).expect("play");
    let mut packets = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
            packets.push(bytes::Bytes::copy_from_slice(map.as_slice()));
        }
    }
    pipeline.set_state(gstreamer::State::Null).expect("stop");
    packets
}

/// Publishes the file's H.264 with Opus audio in Enhanced RTMP (FourCC `Opus`), in real time, looping, until
/// the task is aborted: what an OBS with Opus audio sends, and what needs no transcode at all.
async fn opus_publisher(addr: String, key: String, video: std::sync::Arc<(Vec<(u32, bytes::Bytes)>, u32)>) {
    let (tags, duration) = (&video.0, video.1);
    let opus = opus_packets(duration / 20 + 1);
    let mut rtmp = rtmp_client::connect(&addr, &key)
        .await
        .expect("E-RTMP publisher connects");
    let opus_head = [&b"\x90Opus"[..], &rtmp_client::OPUS_HEAD].concat();
    rtmp.send(false, 0, opus_head).await.expect("send");
    let start = tokio::time::Instant::now();
    for round in 0u32.. {
        let base = round * duration;
        let (mut v, mut a) = (0, 0);
        while v < tags.len() || a < opus.len() {
            let video_ms = tags.get(v).map(|(ms, _)| *ms);
            let audio_ms = (a < opus.len()).then_some(a as u32 * 20);
            let (video, ms) = match (video_ms, audio_ms) {
                (Some(vm), Some(am)) if vm <= am => (true, vm),
                (Some(vm), None) => (true, vm),
                (_, Some(am)) => (false, am),
                (None, None) => break,
            };
            tokio::time::sleep_until(start + Duration::from_millis(u64::from(base + ms))).await;
            let body = if video {
                v += 1;
                let body = &tags[v - 1].1;
                // The AVC sequence header only once.
                if round > 0 && body.get(1) == Some(&0) {
                    continue;
                }
                body.to_vec()
            } else {
                a += 1;
                [&b"\x91Opus"[..], &opus[a - 1]].concat()
            };
            if rtmp.send(video, base + ms, body).await.is_err() {
                return;
            }
        }
    }
}

/// UDP sinks that drain what the baseline ffmpeg relays send (so sends never fail).
fn sinks(n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("sink");
            let port = socket.local_addr().expect("sink addr").port();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while socket.recv(&mut buf).is_ok() {}
            });
            port
        })
        .collect()
}

/// An ffmpeg RTMP listener per stream running `outputs`, fed by a publisher each; returns all processes.
async fn ffmpeg_baseline(streams: usize, mut outputs: impl FnMut() -> Vec<String>) -> (Vec<Proc>, Vec<u32>) {
    let mut procs = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..streams {
        let port = util::free_tcp_port();
        let url = format!("rtmp://127.0.0.1:{port}/live/bench");
        let mut args = vec!["-listen".to_string(), "1".into(), "-i".into(), url.clone()];
        args.extend(outputs());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let listener = ffmpeg(&refs);
        pids.push(listener.0.id());
        procs.push(listener);
        // ffmpeg's `-listen 1` takes exactly one connection, so readiness cannot be probed by connecting:
        // give it a second to open its socket (pacing, not synchronisation of results).
        tokio::time::sleep(Duration::from_secs(1)).await;
        procs.push(publisher(&url));
    }
    (procs, pids)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    util::prepare_input(INPUT, "1920x1080", "6M");
    let (_sfu, found) = gateway(
        &[
            ("GATEWAY__RTMP__ENABLED", "false"),
            ("GATEWAY__SFU__EMBEDDED__APP_ID", APP),
            ("GATEWAY__SFU__EMBEDDED__APP_SECRET", SECRET),
        ],
        &[("embedded sfu started", "http")],
    );
    let sfu_api = format!("http://{}/v1", found[0]);
    let (gw, found) = gateway(
        &[
            ("GATEWAY__SFU__MODE", "cloudflare"),
            ("GATEWAY__SFU__API_URL", &sfu_api),
            ("GATEWAY__SFU__APP_ID", APP),
            ("GATEWAY__SFU__APP_SECRET", SECRET),
        ],
        &[("api listening", "addr"), ("rtmp listening", "addr")],
    );
    let (api, rtmp) = (format!("http://{}", found[0]), found[1].clone());
    let gateway_pid = [gw.0.id()];

    // Passthrough.
    let mut publishers = Vec::new();
    for i in 0..args.streams {
        let ingress = create_ingress(&api, &format!("pass{i}"), json!({"mode": "passthrough"})).await;
        let key = ingress["streamKey"].as_str().expect("stream key");
        publishers.push(publisher(&format!("rtmp://{rtmp}/live/{key}")));
    }
    let (pass_cores, pass_rss) = measure(&gateway_pid, args.seconds).await;
    let pass_latency = quantiles(&api, "pass").await;
    drop(publishers);
    // Passthrough of both: the same video, Opus audio in Enhanced RTMP.
    let video = std::sync::Arc::new(flv_video_tags(INPUT));
    let mut publishers = Vec::new();
    for i in 0..args.streams {
        let ingress = create_ingress(&api, &format!("opus{i}"), json!({"mode": "passthrough"})).await;
        let key = ingress["streamKey"].as_str().expect("stream key").to_string();
        publishers.push(tokio::spawn(opus_publisher(rtmp.clone(), key, video.clone())));
    }
    let (opus_cores, _) = measure(&gateway_pid, args.seconds).await;
    let opus_latency = quantiles(&api, "opus").await;
    publishers.iter().for_each(tokio::task::JoinHandle::abort);
    let ports = sinks(2 * args.streams);
    let relay_outputs = |audio: &'static [&'static str]| {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let ports = ports.clone();
        move || {
            let i = next.fetch_add(2, std::sync::atomic::Ordering::Relaxed) % ports.len();
            ["-map", "0:v", "-c", "copy", "-f", "rtp"]
                .iter()
                .map(|s| s.to_string())
                .chain([format!("rtp://127.0.0.1:{}", ports[i])])
                .chain(
                    ["-map", "0:a"]
                        .iter()
                        .chain(audio)
                        .chain(&["-f", "rtp"])
                        .map(|s| s.to_string()),
                )
                .chain([format!("rtp://127.0.0.1:{}", ports[i + 1])])
                .collect::<Vec<String>>()
        }
    };
    let (relays, pids) = ffmpeg_baseline(args.streams, relay_outputs(&["-c", "copy"])).await;
    let (relay_cores, relay_rss) = measure(&pids, args.seconds).await;
    drop(relays);
    // The gateway also turns AAC into Opus on this path: the same work done by ffmpeg.
    let opus = &["-c:a", "libopus", "-ar", "48000", "-b:a", "64k"];
    let (relays, pids) = ffmpeg_baseline(args.streams, relay_outputs(opus)).await;
    let (relay_opus_cores, _) = measure(&pids, args.seconds).await;
    drop(relays);

    // Transcode: 720p + 2 layers.
    let mut publishers = Vec::new();
    for i in 0..args.transcode_streams {
        let ingress = create_ingress(&api, &format!("tx{i}"), json!({"mode": "transcode", "layers": 3})).await;
        let key = ingress["streamKey"].as_str().expect("stream key");
        publishers.push(publisher(&format!("rtmp://{rtmp}/live/{key}")));
    }
    let (tx_cores, tx_rss) = measure(&gateway_pid, args.seconds).await;
    let tx_latency = quantiles(&api, "tx").await;
    drop(publishers);
    let sink = sinks(1)[0];
    let x264 = "-c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -b:v 2500k -g 60 -bf 0";
    let (encoders, pids) = ffmpeg_baseline(args.transcode_streams, || {
        let mut out: Vec<String> = Vec::new();
        for (i, size) in ["1280x720", "640x360", "320x180"].iter().enumerate() {
            out.extend(["-map", "0:v", "-s", size].iter().map(|s| s.to_string()));
            out.extend(x264.split(' ').map(String::from));
            out.extend([
                "-f".to_string(),
                "rtp".into(),
                format!("rtp://127.0.0.1:{}?pkt_size=1200&i={i}", sink),
            ]);
        }
        out.extend(
            [
                "-map", "0:a", "-c:a", "libopus", "-ar", "48000", "-b:a", "64k", "-f", "rtp",
            ]
            .map(String::from),
        );
        out.push(format!("rtp://127.0.0.1:{sink}"));
        out
    })
    .await;
    let (ffmpeg_tx_cores, ffmpeg_tx_rss) = measure(&pids, args.seconds).await;
    drop(encoders);

    let (n, t) = (args.streams as f64, args.transcode_streams as f64);
    let mib = |b: f64| b / 1048576.0;
    println!("## rtmp benchmark");
    println!();
    println!("| figure | gateway | baseline (ffmpeg) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| passthrough CPU per 1080p30 6 Mbit/s stream ({} streams) | {:.1} % | {:.1} % (`-c copy` to RTP) | {:.2} |",
        args.streams,
        pass_cores / n * 100.0,
        relay_cores / n * 100.0,
        pass_cores / relay_cores.max(1e-9)
    );
    println!(
        "| passthrough CPU, baseline doing the same audio work | {:.1} % | {:.1} % (video copy, AAC → Opus) | {:.2} |",
        pass_cores / n * 100.0,
        relay_opus_cores / n * 100.0,
        pass_cores / relay_opus_cores.max(1e-9)
    );
    println!(
        "| passthrough CPU, E-RTMP H.264 + Opus publisher (nothing transcoded) | {:.1} % | {:.1} % (`-c copy` to RTP, H.264 + AAC) | {:.2} |",
        opus_cores / n * 100.0,
        relay_cores / n * 100.0,
        opus_cores / relay_cores.max(1e-9)
    );
    println!(
        "| passthrough added latency p50 / p95 / p99, E-RTMP H.264 + Opus | {:.2} / {:.2} / {:.2} ms | not instrumented | |",
        opus_latency.0, opus_latency.1, opus_latency.2
    );
    println!(
        "| passthrough RSS per stream | {:.1} MiB (whole process / {}) | {:.1} MiB | |",
        mib(pass_rss) / n,
        args.streams,
        mib(relay_rss) / n
    );
    println!(
        "| passthrough added latency p50 / p95 / p99 | {:.2} / {:.2} / {:.2} ms | not instrumented | |",
        pass_latency.0, pass_latency.1, pass_latency.2
    );
    println!(
        "| transcode CPU per stream (720p + 360p + 180p, {} streams) | {:.1} % | {:.1} % (x264 same settings) | {:.2} |",
        args.transcode_streams,
        tx_cores / t * 100.0,
        ffmpeg_tx_cores / t * 100.0,
        tx_cores / ffmpeg_tx_cores.max(1e-9)
    );
    println!(
        "| transcode RSS per stream | {:.1} MiB (whole process) | {:.1} MiB | |",
        mib(tx_rss) / t,
        mib(ffmpeg_tx_rss) / t
    );
    println!(
        "| transcode added latency p50 / p95 / p99 | {:.1} / {:.1} / {:.1} ms | not instrumented | |",
        tx_latency.0, tx_latency.1, tx_latency.2
    );
}
