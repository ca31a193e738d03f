//! `scripts/bench sfu`: N publishers x M subscribers of a ~2.5 Mbps VP8 video + Opus through the embedded SFU,
//! run as a separate `sfu-gateway run` process; the peers run here.
//!
//! Reports: the gateway `Peer`'s CPU and RSS per published track pair (phase 1, publishers only); the SFU's
//! forwarded packets/s per core, CPU and RSS per subscriber (phase 2); and, as the baseline measured in the
//! same invocation, a plain UDP relay thread forwarding the same packet rate and size (recv + M sends per
//! packet, no crypto, no RTP). Ratios to that baseline are what to compare across machines.

use sfu_gateway::media::PipelineGuard;
use sfu_gateway::media::frames::{Frame, appsink_frames};
use sfu_gateway::sfu::client::{CallsClient, ClientConfig, RetryPolicy};
use sfu_gateway::sfu::peer::{Codec, LocalTrackSpec, OutFrame, Peer, PeerConfig, PeerEvent, RemoteTrackSpec};
mod util;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use util::{cores, sample};

const APP: &str = "00000000000000000000000000bench0";
const SECRET: &str = "bench-secret-bench-secret-bench-secret-bench-secret-bench-secret";

struct Args {
    publishers: usize,
    subscribers: usize,
    seconds: u64,
}

fn args() -> Args {
    let flags = util::flags(&[("publishers", 2), ("subscribers", 4), ("seconds", 10)]);
    Args {
        publishers: flags["publishers"] as usize,
        subscribers: flags["subscribers"] as usize,
        seconds: flags["seconds"],
    }
}

/// Encodes `seconds` of media once, before measuring, so no encoder runs during the benchmark.
fn encode(description: &str, buffers: usize) -> Vec<Frame> {
    let guard = PipelineGuard::parse("bench-encode", description).expect("encoder pipeline");
    let (mut rx, _) = appsink_frames(&guard, "sink", buffers + 16).expect("appsink");
    let done = guard.start().expect("start encoder");
    let _ = done.blocking_recv();
    let mut frames = Vec::new();
    while let Ok(frame) = rx.try_recv() {
        frames.push(frame);
    }
    frames
}

struct Sfu {
    child: util::Proc,
    api: String,
    metrics: String,
}

fn start_sfu() -> Sfu {
    let (child, found) = util::gateway(
        env!("CARGO_BIN_EXE_sfu-gateway"),
        &[
            ("GATEWAY__RTMP__ENABLED", "false"),
            ("GATEWAY__SFU__EMBEDDED__APP_ID", APP),
            ("GATEWAY__SFU__EMBEDDED__APP_SECRET", SECRET),
        ],
        &[("embedded sfu started", "http"), ("api listening", "addr")],
    );
    Sfu {
        child,
        api: format!("http://{}/v1", found[0]),
        metrics: format!("http://{}/metrics", found[1]),
    }
}

async fn metric(url: &str, name: &str) -> f64 {
    util::metrics_text(url)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn client(api: &str) -> CallsClient {
    CallsClient::new(&ClientConfig {
        api_url: api.to_string(),
        app_id: APP.into(),
        app_secret: SECRET.to_string().into(),
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy::default(),
    })
    .expect("client")
}

/// Sends the pre-encoded frames in a loop at their real rate, with increasing media time.
fn feed(sender: tokio::sync::mpsc::Sender<OutFrame>, track: &'static str, frames: Arc<Vec<Frame>>, clock: u32) {
    tokio::spawn(async move {
        let period = frames.last().map(|f| f.pts_ns + 1).unwrap_or(1);
        let interval_ns = period / frames.len().max(1) as u64;
        let mut ticker = tokio::time::interval(Duration::from_nanos(interval_ns));
        for n in 0u64.. {
            ticker.tick().await;
            let frame = &frames[(n as usize) % frames.len()];
            let rtp_time = (u128::from(n * interval_ns) * u128::from(clock) / 1_000_000_000) as u64;
            let out = OutFrame {
                track: track.to_string(),
                rtp_time,
                data: frame.data.clone(),
                rid: None,
                capture: None,
            };
            if sender.send(out).await.is_err() {
                return;
            }
        }
    });
}

/// The baseline: one relay thread forwarding every datagram to `fanout` sinks, fed at `rate` packets/s of
/// `size` bytes for `seconds`. Returns the relay thread's CPU cores used.
fn udp_relay_baseline(rate: f64, size: usize, fanout: usize, seconds: u64) -> f64 {
    let relay = UdpSocket::bind("127.0.0.1:0").expect("relay socket");
    let relay_addr = relay.local_addr().expect("relay addr");
    let sinks: Vec<UdpSocket> = (0..fanout)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("sink"))
        .collect();
    let sink_addrs: Vec<_> = sinks.iter().map(|s| s.local_addr().expect("sink addr")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let drained = Arc::new(AtomicU64::new(0));
    for sink in sinks {
        let (stop, drained) = (stop.clone(), drained.clone());
        sink.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if sink.recv(&mut buf).is_ok() {
                    drained.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    relay
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let relay_stop = stop.clone();
    let relay_thread = std::thread::spawn(move || {
        let before = sample("/proc/thread-self/stat");
        let mut buf = [0u8; 2048];
        while !relay_stop.load(Ordering::Relaxed) {
            if let Ok(n) = relay.recv(&mut buf) {
                for addr in &sink_addrs {
                    let _ = relay.send_to(&buf[..n], addr);
                }
            }
        }
        cores(&before, &sample("/proc/thread-self/stat"))
    });
    let sender = UdpSocket::bind("127.0.0.1:0").expect("sender");
    let payload = vec![0x5au8; size];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let _ = sender.send_to(&payload, relay_addr);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1)); // pacing the sender, not synchronisation
    }
    stop.store(true, Ordering::Relaxed);
    relay_thread.join().expect("relay thread")
}

fn main() {
    let args = args();
    sfu_gateway::media::init().expect("gstreamer");
    let video = Arc::new(encode(
        "videotestsrc pattern=snow num-buffers=90 ! video/x-raw,width=320,height=240,framerate=30/1 ! \
         vp8enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate=2500000 keyframe-max-dist=60 lag-in-frames=0 max-quantizer=63 ! \
         appsink name=sink sync=false",
        90,
    ));
    let audio = Arc::new(encode(
        "audiotestsrc wave=pink-noise num-buffers=150 samplesperbuffer=960 ! audio/x-raw,rate=48000,channels=2 ! \
         opusenc frame-size=20 bitrate=64000 ! appsink name=sink sync=false",
        150,
    ));
    let video_bytes: usize = video.iter().map(|f| f.data.len()).sum();
    let video_kbps = video_bytes as f64 * 8.0 / 3.0 / 1000.0;
    eprintln!(
        "media: {} video frames ({video_kbps:.0} kbit/s), {} opus packets",
        video.len(),
        audio.len()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(args, video, audio, video_kbps));
}

async fn run(args: Args, video: Arc<Vec<Frame>>, audio: Arc<Vec<Frame>>, video_kbps: f64) {
    let sfu = start_sfu();
    let sfu_stat = format!("/proc/{}/stat", sfu.child.0.id());
    let me = "/proc/self/stat";
    let idle_me = sample(me);
    let idle_sfu = sample(&sfu_stat);

    // Phase 1: publishers only.
    let mut publishers = Vec::new();
    for _ in 0..args.publishers {
        let (peer, mut streams) = Peer::connect(client(&sfu.api), PeerConfig::default())
            .await
            .expect("publisher");
        peer.publish(vec![
            LocalTrackSpec::new("cam", Codec::Vp8),
            LocalTrackSpec::new("mic", Codec::Opus),
        ])
        .await
        .expect("publish");
        while let Some(event) = streams.events.recv().await {
            if event == PeerEvent::Connected {
                break;
            }
        }
        feed(peer.frame_sender(), "cam", video.clone(), 90_000);
        feed(peer.frame_sender(), "mic", audio.clone(), 48_000);
        publishers.push((peer, streams));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    let (p1_me, p1_sfu) = (sample(me), sample(&sfu_stat));
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (p1_me_end, p1_sfu_end) = (sample(me), sample(&sfu_stat));
    let peer_cores = cores(&p1_me, &p1_me_end) / args.publishers as f64;
    let peer_rss = (p1_me_end.rss - idle_me.rss) / args.publishers as f64;

    // Phase 2: M subscribers per publisher, each receiving both tracks.
    let received = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::new();
    for (publisher, _) in &publishers {
        for _ in 0..args.subscribers {
            let (peer, mut streams) = Peer::connect(client(&sfu.api), PeerConfig::default())
                .await
                .expect("subscriber");
            peer.subscribe(
                ["cam", "mic"]
                    .iter()
                    .map(|name| RemoteTrackSpec {
                        session_id: publisher.session_id(),
                        track_name: name.to_string(),
                        preferred_rid: None,
                    })
                    .collect(),
            )
            .await
            .expect("subscribe");
            let counter = received.clone();
            tokio::spawn(async move {
                while streams.media_in.recv().await.is_some() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
            subscribers.push(peer);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    let out_before = metric(&sfu.metrics, "sfu_embedded_datagrams_out_total").await;
    let received_before = received.load(Ordering::Relaxed);
    let p2_sfu = sample(&sfu_stat);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let p2_sfu_end = sample(&sfu_stat);
    let out_after = metric(&sfu.metrics, "sfu_embedded_datagrams_out_total").await;
    let bytes_in = metric(&sfu.metrics, "sfu_embedded_bytes_forwarded_total").await;
    let frames = metric(&sfu.metrics, "sfu_embedded_frames_forwarded_total").await;
    let window = p2_sfu_end.at.duration_since(p2_sfu.at).as_secs_f64();
    let out_rate = (out_after - out_before) / window;
    let received_rate = (received.load(Ordering::Relaxed) - received_before) as f64 / window;
    let sfu_cores = cores(&p2_sfu, &p2_sfu_end);
    let n_subs = (args.publishers * args.subscribers) as f64;
    let sfu_cores_publish_only = cores(&p1_sfu, &p1_sfu_end);
    let per_sub_cores = (sfu_cores - sfu_cores_publish_only) / n_subs;
    let per_sub_rss = (p2_sfu_end.rss - p1_sfu_end.rss) / n_subs;
    let avg_packet = if frames > 0.0 {
        (bytes_in / frames).min(1200.0)
    } else {
        1000.0
    };

    // Baseline: a bare UDP relay moving the same packets/s.
    let in_rate = out_rate / args.subscribers as f64;
    let (subscribers_n, seconds) = (args.subscribers, args.seconds);
    let relay_cores =
        tokio::task::spawn_blocking(move || udp_relay_baseline(in_rate, avg_packet as usize, subscribers_n, seconds))
            .await
            .expect("baseline");
    let ratio = (sfu_cores / out_rate.max(1.0)) / (relay_cores / out_rate.max(1.0)).max(1e-12);

    println!("## sfu benchmark");
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| publishers x subscribers | {} x {} ({} subscriber legs, 2 tracks each) |",
        args.publishers, args.subscribers, n_subs
    );
    println!("| video | VP8 320x240 noise, {video_kbps:.0} kbit/s, + Opus 64 kbit/s |");
    println!("| SFU idle (before peers) | RSS {:.1} MiB |", idle_sfu.rss / 1048576.0);
    println!(
        "| gateway Peer per published video+audio pair | {:.2} % of a core, {:.1} MiB RSS |",
        peer_cores * 100.0,
        peer_rss / 1048576.0
    );
    println!("| SFU forwarded datagrams/s | {out_rate:.0} |");
    println!("| SFU CPU | {:.1} % of a core |", sfu_cores * 100.0);
    println!(
        "| SFU forwarded packets/s per core | {:.0} |",
        out_rate / sfu_cores.max(1e-9)
    );
    println!(
        "| SFU CPU per subscriber leg | {:.2} % of a core |",
        per_sub_cores * 100.0
    );
    println!("| SFU RSS per subscriber leg | {:.2} MiB |", per_sub_rss / 1048576.0);
    println!("| frames received by subscribers/s | {received_rate:.0} |");
    println!(
        "| baseline: bare UDP relay, same packets/s | {:.1} % of a core |",
        relay_cores * 100.0
    );
    println!("| ratio SFU / bare relay (CPU per forwarded packet) | {ratio:.1} |");
    drop(subscribers);
    drop(publishers);
}
