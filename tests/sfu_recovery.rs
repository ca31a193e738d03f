//! Transport failure: the SFU a peer is connected to goes away and comes back (a restart on the same
//! addresses). The peer notices the dead path, creates a new session, republishes the same track names, and
//! a new subscriber decodes its audio again.

mod common;

use common::media::{Decoder, audio_source, pump};
use sfu_gateway::sfu::client::{CallsClient, ClientConfig, RetryPolicy};
use sfu_gateway::sfu::embedded::EmbeddedSfu;
use sfu_gateway::sfu::peer::{Codec, LocalTrackSpec, Peer, PeerConfig, PeerEvent, RemoteTrackSpec};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{Instant, timeout};

const APP: &str = "fedcba9876543210fedcba9876543210";
const SECRET: &str = "recovery-secret-recovery-secret-recovery-secret-recovery-secret0";

async fn sfu(listen: SocketAddr, udp: SocketAddr) -> EmbeddedSfu {
    common::embedded_sfu(listen, udp, APP, SECRET).await
}

fn client(api_url: &str) -> CallsClient {
    CallsClient::new(&ClientConfig {
        api_url: api_url.to_string(),
        app_id: APP.into(),
        app_secret: SECRET.to_string().into(),
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy::default(),
    })
    .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_recovers_with_a_new_session_and_the_same_track_names() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let first = sfu("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()).await;
    let (http, udp, api_url) = (first.http_addr(), first.udp_addr(), first.api_url());
    let fast_failure = PeerConfig {
        reconnect_after: Duration::from_millis(500),
        stun_max_rto: Duration::from_millis(300),
        stun_max_retransmits: 3,
        ..PeerConfig::default()
    };
    let (a, mut a_events) = Peer::connect(client(&api_url), fast_failure).await.expect("peer a");
    a.publish(vec![LocalTrackSpec::new("mic", Codec::Opus)])
        .await
        .expect("publish");
    let old_session = a.session_id();
    let _audio = pump(audio_source(), a.frame_sender(), "mic", 48_000);
    let connected = timeout(Duration::from_secs(10), async {
        while let Some(event) = a_events.events.recv().await {
            if event == PeerEvent::Connected {
                return;
            }
        }
    })
    .await;
    assert!(connected.is_ok(), "peer a never connected");

    first.shutdown().await;
    let second = sfu(http, udp).await;

    let mut saw_reconnecting = false;
    let reconnected = timeout(Duration::from_secs(40), async {
        while let Some(event) = a_events.events.recv().await {
            match event {
                PeerEvent::Reconnecting { .. } => saw_reconnecting = true,
                PeerEvent::Reconnected {
                    session_id, published, ..
                } => return Some((session_id, published)),
                _ => {}
            }
        }
        None
    })
    .await
    .expect("peer a recovered in time")
    .expect("peer a stopped");
    assert!(saw_reconnecting);
    let (new_session, published) = reconnected;
    assert_ne!(new_session, old_session);
    assert_eq!(a.session_id(), new_session);
    assert_eq!(
        published.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["mic"]
    );

    let (b, mut b_streams) = Peer::connect(client(&second.api_url()), PeerConfig::default())
        .await
        .expect("peer b");
    let subscribed = b
        .subscribe(vec![RemoteTrackSpec {
            session_id: new_session,
            track_name: "mic".into(),
            preferred_rid: None,
        }])
        .await
        .expect("subscribe to the republished track");
    let decoder = Decoder::opus();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut first_ticks = None;
    loop {
        let sound = decoder.snapshot();
        if sound.samples >= 48_000 && sound.max_rms > 0.1 {
            break;
        }
        assert!(Instant::now() < deadline, "no audio after recovery: {sound:?}");
        if let Ok(Some(frame)) = timeout(Duration::from_millis(200), b_streams.media_in.recv()).await {
            assert_eq!(frame.mid, subscribed[0].mid);
            let base = *first_ticks.get_or_insert(frame.rtp_time);
            decoder.push(&frame.data, (frame.rtp_time - base) * 1_000_000_000 / 48_000);
        }
    }
    second.shutdown().await;
}
