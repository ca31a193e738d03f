//! `scripts/bench sip`: N concurrent phone calls (sipp places them: G.711 µ-law, signalling only) into rooms
//! of `--room-size` callers plus one SFU-side Opus publisher each, stepping N up to `--calls` by `--step`.
//! The phones' media is played and received by this process on one UDP socket: speech from sipp's A-law
//! sample (transcoded to µ-law) toward each call, and per call the packets back from the gateway are
//! counted (lost by sequence, late when more than 40 ms behind the call's best arrival offset).
//!
//! The gateway under test publishes to an embedded SFU in a *separate* process, so its CPU and RSS are the
//! calls' own. Beside it, in the same run, the baseline: this process doing only the raw codec work of N
//! calls on one thread, paced in real time (per call and 20 ms: G.711 expand + Opus encode toward the SFU;
//! `room-size` Opus decodes + mix + G.711 compress toward the phone — the same libopus settings as the
//! gateway, which codes narrowband Opus at 8 kHz and so does no resampling). The gateway's added one-way
//! latency comes from its `/metrics` summaries (`sip_uplink_delay_seconds`, `sip_downlink_delay_seconds`).

mod util;

use serde_json::{Value, json};
use sfu_gateway::ingress::sip::g711;
use sfu_gateway::ingress::sip::rtp::RtpPacket;
use sfu_gateway::sfu::client::{CallsClient, ClientConfig, RetryPolicy};
use sfu_gateway::sfu::peer::{Codec, LocalTrackSpec, OutFrame, Peer, PeerConfig, PeerStreams};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use util::{Proc, cores, sample_all};

const APP: &str = "0000000000000000000000000000ca11";
const SECRET: &str = "sip-bench-secret-sip-bench-secret-sip-bench-secret-sip-bench-se";

struct Args {
    calls: usize,
    step: usize,
    seconds: u64,
    room_size: usize,
    complexity: i32,
}

fn args() -> Args {
    let flags = util::flags(&[
        ("calls", 200),
        ("step", 100),
        ("seconds", 20),
        ("room-size", 2),
        ("complexity", 5),
    ]);
    Args {
        calls: flags["calls"] as usize,
        step: flags["step"].max(1) as usize,
        seconds: flags["seconds"],
        room_size: flags["room-size"].clamp(1, 3) as usize,
        complexity: flags["complexity"].min(10) as i32,
    }
}

/// 20 ms µ-law payloads of speech (sipp's A-law sample, transcoded), looped by the phones.
fn speech() -> Vec<Vec<u8>> {
    let bytes = std::fs::read("/usr/share/sip-tester/g711a.pcap").expect("sipp's g711a.pcap (package sip-tester)");
    let mut samples = Vec::new();
    let mut offset = 24;
    while offset + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().unwrap()) as usize;
        let rtp = offset + 16 + 42; // Ethernet, IPv4, UDP
        if let Ok(packet) = RtpPacket::parse(&bytes[rtp..offset + 16 + caplen]) {
            samples.extend(
                packet
                    .payload
                    .iter()
                    .map(|&b| g711::linear_to_ulaw(g711::alaw_to_linear(b))),
            );
        }
        offset += 16 + caplen;
    }
    // The sample has 30 ms packets; the phones send 20 ms.
    samples.chunks_exact(160).map(<[u8]>::to_vec).collect()
}

#[derive(Default, Clone, Copy)]
struct Leg {
    received: u64,
    first_seq: Option<u16>,
    highest: u64,
    best_offset: Option<f64>,
    late: u64,
}

#[derive(Default)]
struct Phones {
    targets: Vec<SocketAddr>,
    legs: HashMap<SocketAddr, Leg>,
}

/// Sends speech to every target every 20 ms and accounts what comes back.
fn run_phones(socket: Arc<UdpSocket>, phones: Arc<Mutex<Phones>>) {
    let frames = speech();
    let sender = socket.clone();
    let send_phones = phones.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut out = Vec::new();
        for n in 0u32.. {
            tick.tick().await;
            let targets = send_phones.lock().unwrap().targets.clone();
            let payload = &frames[n as usize % frames.len()];
            for (i, target) in targets.iter().enumerate() {
                let packet = RtpPacket {
                    payload_type: 0,
                    marker: false,
                    seq: n as u16,
                    timestamp: n * 160,
                    ssrc: i as u32 + 1,
                    payload,
                };
                packet.write(&mut out);
                let _ = sender.send_to(&out, target).await;
            }
        }
    });
    let epoch = Instant::now();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let at = epoch.elapsed().as_secs_f64();
            let Ok(packet) = RtpPacket::parse(&buf[..len]) else {
                continue;
            };
            let mut phones = phones.lock().unwrap();
            let leg = phones.legs.entry(from).or_default();
            let first = *leg.first_seq.get_or_insert(packet.seq);
            let index = u64::from(packet.seq.wrapping_sub(first));
            leg.received += 1;
            leg.highest = leg.highest.max(index);
            let offset = at - index as f64 * 0.020;
            let best = leg.best_offset.map_or(offset, |b: f64| b.min(offset));
            leg.best_offset = Some(best);
            if offset - best > 0.040 {
                leg.late += 1;
            }
        }
    });
}

fn client(sfu_api: &str) -> CallsClient {
    CallsClient::new(&ClientConfig {
        api_url: sfu_api.to_string(),
        app_id: APP.into(),
        app_secret: SECRET.to_string().into(),
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy::default(),
    })
    .expect("client")
}

/// One SFU-side participant per room, publishing a pre-encoded 440 Hz tone.
async fn publisher(sfu: &CallsClient, api: &str, room: usize, tone: Arc<Vec<Vec<u8>>>) -> (Arc<Peer>, PeerStreams) {
    let (peer, streams) = Peer::connect(sfu.clone(), PeerConfig::default()).await.expect("peer");
    let track = format!("pub{room}");
    peer.publish(vec![LocalTrackSpec::new(&track, Codec::Opus)])
        .await
        .expect("publish");
    let peer = Arc::new(peer);
    let body = json!({"sessionId": peer.session_id(), "tracks": [{"trackName": track, "kind": "audio"}]});
    let response = reqwest::Client::new()
        .put(format!("{api}/v1/rooms/room{room}/participants/pub{room}"))
        .json(&body)
        .send()
        .await
        .expect("room");
    assert!(
        response.status().is_success(),
        "register publisher: {}",
        response.status()
    );
    let sender = peer.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for n in 0u64.. {
            tick.tick().await;
            let data = tone[n as usize % tone.len()].clone();
            sender.send_frame(OutFrame {
                track: track.clone(),
                rtp_time: n * 960,
                data,
                rid: None,
                capture: None,
            });
        }
    });
    (peer, streams)
}

fn opus_tone() -> Vec<Vec<u8>> {
    let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    (0..50)
        .map(|n| {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    (((n * 960 + i) as f64 * 440.0 * 2.0 * std::f64::consts::PI / 48_000.0).sin() * 6_000.0) as i16
                })
                .collect();
            encoder.encode_vec(&pcm, 400).unwrap()
        })
        .collect()
}

fn scenario(port: u16) -> String {
    let from = "From: sipp <sip:bench@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]";
    let to = "To: <sip:[field0]@[remote_ip]:[remote_port]>";
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"bench\">\n\
<send retrans=\"500\"><![CDATA[\nINVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n{from}\n{to}\n\
Call-ID: [call_id]\nCSeq: 1 INVITE\nContact: sip:sipp@[local_ip]:[local_port]\nMax-Forwards: 70\nContent-Type: application/sdp\nContent-Length: [len]\n\n\
v=0\no=bench 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {port} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n]]></send>\n\
<recv response=\"100\" optional=\"true\"/>\n<recv response=\"180\" optional=\"true\"/>\n<recv response=\"200\" rrs=\"true\"/>\n\
<send><![CDATA[\nACK [next_url] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n{from}\n{to}[peer_tag_param]\nCall-ID: [call_id]\nCSeq: 1 ACK\nContent-Length: 0\n\n]]></send>\n\
<recv request=\"BYE\"/>\n<send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n]]></send>\n</scenario>\n"
    )
}

/// Raw codec work of `calls` calls for `seconds` on one thread, paced at 20 ms: returns the cores used.
fn baseline(calls: usize, inputs: usize, seconds: u64, complexity: i32) -> f64 {
    std::thread::spawn(move || {
        let frames = speech();
        let tone = opus_tone();
        let mut up: Vec<opus::Encoder> = (0..calls)
            .map(|_| {
                let mut e = opus::Encoder::new(8_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
                e.set_inband_fec(true).unwrap();
                e.set_packet_loss_perc(5).unwrap();
                e.set_dtx(true).unwrap();
                e.set_bitrate(opus::Bitrate::Bits(24_000)).unwrap();
                e.set_complexity(complexity).unwrap();
                e
            })
            .collect();
        let mut down: Vec<opus::Decoder> = (0..calls * inputs)
            .map(|_| opus::Decoder::new(8_000, opus::Channels::Mono).unwrap())
            .collect();
        let (mut pcm, mut packet, mut decoded, mut mix) =
            (vec![0i16; 160], vec![0u8; 400], vec![0i16; 960], vec![0i32; 160]);
        let mut sink = 0usize;
        let start_cpu = util::cpu_and_rss("/proc/thread-self/stat").0;
        let start = Instant::now();
        let mut n = 0usize;
        while start.elapsed() < Duration::from_secs(seconds) {
            for call in 0..calls {
                for (dst, &b) in pcm.iter_mut().zip(&frames[(n + call) % frames.len()]) {
                    *dst = g711::ulaw_to_linear(b);
                }
                sink += up[call].encode(&pcm, &mut packet).unwrap_or(0);
                mix.iter_mut().for_each(|m| *m = 0);
                for input in 0..inputs {
                    let got = down[call * inputs + input]
                        .decode(&tone[n % tone.len()], &mut decoded, false)
                        .unwrap_or(0);
                    for (m, &s) in mix.iter_mut().zip(&decoded[..got.min(160)]) {
                        *m += i32::from(s);
                    }
                }
                sink += mix
                    .iter()
                    .map(|&m| usize::from(g711::linear_to_ulaw(m.clamp(-32_768, 32_767) as i16)))
                    .sum::<usize>();
            }
            n += 1;
            let next = start + Duration::from_millis(20 * n as u64);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        std::hint::black_box(sink);
        (util::cpu_and_rss("/proc/thread-self/stat").0 - start_cpu) / start.elapsed().as_secs_f64()
    })
    .join()
    .expect("baseline thread")
}

async fn answered(api: &str) -> Vec<Value> {
    let calls: Value = reqwest::get(format!("{api}/v1/calls"))
        .await
        .expect("calls")
        .json()
        .await
        .expect("json");
    calls
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["state"] == "answered")
        .collect()
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("tempdir");
    let rooms = args.calls.div_ceil(args.room_size);
    let rules: String = (0..rooms)
        .map(|r| format!("[[sip.rules]]\nto = \"r{r}x*\"\nroom = \"room{r}\"\n\n"))
        .collect();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, rules).expect("config");
    let binary = env!("CARGO_BIN_EXE_sfu-gateway");
    let (_sfu, found) = util::gateway(
        binary,
        &[
            ("GATEWAY__RTMP__ENABLED", "false"),
            ("GATEWAY__SIP__ENABLED", "false"),
            ("GATEWAY__SFU__EMBEDDED__APP_ID", APP),
            ("GATEWAY__SFU__EMBEDDED__APP_SECRET", SECRET),
            ("GATEWAY__SUPERVISOR__MAX_SESSIONS", "100000"),
        ],
        &[("embedded sfu started", "http")],
    );
    let sfu_api = format!("http://{}/v1", found[0]);
    let config_path = config.display().to_string();
    let complexity = args.complexity.to_string();
    let (gw, found) = util::gateway(
        binary,
        &[
            ("GATEWAY_CONFIG", config_path.as_str()),
            ("GATEWAY__RTMP__ENABLED", "false"),
            ("GATEWAY__SIP__LISTEN", "127.0.0.1:0"),
            ("GATEWAY__SIP__INVITE_RATE", "1000"),
            ("GATEWAY__SIP__OPUS_COMPLEXITY", &complexity),
            ("GATEWAY__SFU__MODE", "cloudflare"),
            ("GATEWAY__SFU__API_URL", &sfu_api),
            ("GATEWAY__SFU__APP_ID", APP),
            ("GATEWAY__SFU__APP_SECRET", SECRET),
            ("GATEWAY__SUPERVISOR__CAPACITY", "100000"),
            ("GATEWAY__SUPERVISOR__MAX_SESSIONS", "100000"),
        ],
        &[("api listening", "addr"), ("sip listening", "addr")],
    );
    let (api, sip_addr) = (format!("http://{}", found[0]), found[1].clone());
    let gateway_pid = [gw.0.id()];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = sample_all(&gateway_pid).rss;

    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("phone socket"));
    let phone_port = socket.local_addr().unwrap().port();
    let phones = Arc::new(Mutex::new(Phones::default()));
    run_phones(socket, phones.clone());
    let scenario_path = dir.path().join("bench.xml");
    std::fs::write(&scenario_path, scenario(phone_port)).expect("scenario");
    let sfu = client(&sfu_api);
    let tone = Arc::new(opus_tone());
    let mut publishers = Vec::new();
    let mut sipps: Vec<Proc> = Vec::new();
    let mut placed = 0;
    let mut rows = Vec::new();
    let mut n = args.step.min(args.calls);
    loop {
        while publishers.len() < n.div_ceil(args.room_size) {
            let room = publishers.len();
            publishers.push(publisher(&sfu, &api, room, tone.clone()).await);
        }
        let fields = dir.path().join(format!("calls{n}.csv"));
        let lines: String = (placed..n).map(|i| format!("r{}x{i};\n", i / args.room_size)).collect();
        std::fs::write(&fields, format!("SEQUENTIAL\n{lines}")).expect("fields");
        let count = (n - placed).to_string();
        sipps.push(Proc(
            Command::new("sipp")
                .args([
                    &sip_addr,
                    "-sf",
                    &scenario_path.display().to_string(),
                    "-inf",
                    &fields.display().to_string(),
                ])
                .args([
                    "-m",
                    &count,
                    "-l",
                    &count,
                    "-r",
                    "50",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    "0",
                    "-nostdin",
                    "-timeout",
                    "0",
                ])
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sipp"),
        ));
        placed = n;
        let deadline = Instant::now() + Duration::from_secs(60 + n as u64 / 10);
        let calls = loop {
            let calls = answered(&api).await;
            if calls.len() >= n || Instant::now() > deadline {
                break calls;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(calls.len() >= n, "only {} of {n} calls were answered", calls.len());
        let targets: Vec<SocketAddr> = calls
            .iter()
            .filter_map(|c| c["localRtp"].as_str()?.parse().ok())
            .collect();
        phones.lock().unwrap().targets = targets;
        tokio::time::sleep(Duration::from_secs(3)).await; // warm-up: jitter buffers fill, latches settle
        phones.lock().unwrap().legs.clear();
        let start = sample_all(&gateway_pid);
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let end = sample_all(&gateway_pid);
        let gw_cores = cores(&start, &end);
        let (received, expected, late) = {
            let phones = phones.lock().unwrap();
            phones.legs.values().fold((0, 0, 0), |(r, e, l), leg| {
                (r + leg.received, e + leg.highest + 1, l + leg.late)
            })
        };
        let lost = expected.saturating_sub(received) as f64 / expected.max(1) as f64 * 100.0;
        let late = late as f64 / received.max(1) as f64 * 100.0;
        let up_p95 = util::metrics_quantile_ms(&api, "sip_uplink_delay_seconds", "0.95").await;
        let down_p95 = util::metrics_quantile_ms(&api, "sip_downlink_delay_seconds", "0.95").await;
        let base_cores = baseline(n, args.room_size, args.seconds.min(10), args.complexity);
        let legs = phones.lock().unwrap().legs.len();
        rows.push(format!(
            "| {n} | {legs} | {gw_cores:.3} | {:.2} | {:.2} | {lost:.3} | {late:.3} | {up_p95:.1} | {down_p95:.1} | {base_cores:.3} | {:.2} |",
            gw_cores * 1000.0 / n as f64,
            (end.rss - idle_rss) / n as f64 / 1_048_576.0,
            gw_cores / base_cores,
        ));
        eprintln!("{}", rows.last().unwrap());
        if n >= args.calls {
            break;
        }
        n = (n + args.step).min(args.calls);
    }
    println!(
        "\nSIP bench: rooms of {} callers + 1 SFU publisher; Opus complexity {}; {} s per step; machine: {} cores\n",
        args.room_size,
        args.complexity,
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| calls | legs heard | gateway cores | CPU ms/s per call | RSS MiB per call | lost to phone % | late to phone % | uplink added p95 ms | downlink added p95 ms | baseline cores (raw codec) | gateway ÷ baseline |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    drop(sipps);
    drop(publishers);
}
