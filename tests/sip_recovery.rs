//! A phone call outlives a restart of the SFU. The gateway runs against an SFU of its own process (cloudflare
//! mode, an embedded SFU started by the test on fixed addresses); the SFU is stopped and started again empty.
//! The call's peer creates a new SFU session and republishes; the caller's room participant follows it to the
//! new session, and the phone's voice is heard there again — the call itself never drops.

mod common;

use common::rtmp::{APP, SECRET};
use common::sip::{self, PCMU, PhoneMedia};
use sfu_gateway::sfu::embedded::EmbeddedSfu;
use std::net::SocketAddr;
use std::time::Duration;

const RULES: &str = r#"
[[sip.rules]]
to = "*"
room = "r1"
"#;

async fn sfu(listen: SocketAddr, udp: SocketAddr) -> EmbeddedSfu {
    common::embedded_sfu(listen, udp, APP, SECRET).await
}

/// The caller's (session, track) in room `r1`, once `check` holds for the session (bounded wait).
async fn caller(sip: &sip::Sip, check: impl Fn(&str) -> bool) -> (String, String) {
    sip.room_track("r1", Duration::from_secs(40), |p| {
        p["id"].as_str().is_some_and(|id| id.starts_with("sip-")) && p["sessionId"].as_str().is_some_and(&check)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_an_sfu_restart_and_its_room_follows_the_new_session() {
    let first = sfu("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()).await;
    let (http, udp, api_url) = (first.http_addr(), first.udp_addr(), first.api_url());
    let sip = sip::start(
        RULES,
        &[
            ("GATEWAY__SFU__MODE", "cloudflare"),
            ("GATEWAY__SFU__API_URL", &api_url),
            ("GATEWAY__SFU__APP_ID", APP),
            ("GATEWAY__SFU__APP_SECRET", SECRET),
        ],
    )
    .await;
    let phone_media = PhoneMedia::bind().await;
    let (phone, call, gateway_rtp) = sip.call_with_media("survivor", &phone_media, &[PCMU], 40_000).await;
    // The phone speaks a 1 kHz tone all along
    // (Swelling like speech: a steady tone is taken for background noise by Opus and falls into DTX.)
    let talker = tokio::spawn(async move { phone_media.send_syllables(gateway_rtp, true, 1_000.0, 38).await });
    let (old_session, track) = caller(&sip, |_| true).await;
    let pcm = sip.listen(&old_session, &track, Duration::from_secs(2)).await;
    assert!(
        sip::share_of(&pcm, 48_000, 1_000.0) > 0.3,
        "the caller is heard before the restart"
    );

    first.shutdown().await;
    let second = sfu(http, udp).await;
    let (new_session, new_track) = caller(&sip, |s| s != old_session).await;
    assert_eq!(new_track, track, "the same track name in the new session");
    let pcm = sip.listen(&new_session, &new_track, Duration::from_secs(4)).await;
    assert!(pcm.len() > 48_000 * 2, "only {} samples after the restart", pcm.len());
    // (Judged after the first second: the subscription starts while the new session warms up.)
    let share = sip::share_of(&pcm[48_000..], 48_000, 1_000.0);
    assert!(share > 0.3, "the caller is heard again in the new session: {share:.3}");
    let id = call["id"].as_str().unwrap();
    let (_, now) = sip.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(now["state"], "answered", "the call never dropped: {now}");
    talker.abort();
    drop(phone);
    second.shutdown().await;
}
