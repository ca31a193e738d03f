//! An output that reconnects sends again at once: it asks the egress's encoder for a keyframe rather than
//! waiting for the next periodic one (every 2 s). The destination drops the connection just after a
//! periodic keyframe; the output reconnects after its 0.5 s backoff, when the next periodic keyframe is still
//! ~1.5 s away. With the request, the first video arrives well within that, and it is the AVC sequence header
//! and then a keyframe off the periodic grid. The same holds for the output's first connection.

mod common;

use common::egress::{egress_to_sink, live_source};
use common::rtmp::{BASELINE, start};
use common::rtmp_sink::{Message, RtmpSink};
use std::time::Duration;

/// How long each step may take.
const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_output_resumes_at_once_with_a_keyframe_made_for_it() {
    let setup = start();
    let sink = RtmpSink::start().await;
    let (session, _publisher) = live_source(&setup, "resume", BASELINE, 2).await;
    let _id = egress_to_sink(&setup, &sink, &session, "resume", 30).await;
    let keyframes = |messages: &[Message]| -> Vec<u32> {
        messages
            .iter()
            .filter(|m| m.video && m.head == [0x17, 0x01])
            .map(|m| m.ms)
            .collect()
    };
    // Dropped right after a periodic keyframe: the second one (the first is the one the output asked for
    // when it started).
    sink.until(WITHIN, "no second keyframe", |seen| {
        seen.connections.first().is_some_and(|c| keyframes(c).len() >= 2)
    })
    .await;
    sink.seen.lock().unwrap().closed.push(0);
    sink.until(WITHIN, "the output did not reconnect", |seen| {
        seen.connections.len() >= 2
    })
    .await;
    sink.until(WITHIN, "no video on the new connection", |seen| seen.videos(1) >= 2)
        .await;
    let seen = sink.seen.lock().unwrap();
    let periodic = keyframes(&seen.connections[0]);
    // The first connection too started at once, not at the encoder's second keyframe 2 s in.
    let started = seen.connections[0]
        .iter()
        .find(|m| m.video)
        .unwrap()
        .at
        .duration_since(seen.accepted[0]);
    assert!(
        started < Duration::from_millis(800),
        "the first video came {started:?} after connecting"
    );
    let video: Vec<_> = seen.connections[1].iter().filter(|m| m.video).collect();
    let waited = video[0].at.duration_since(seen.accepted[1]);
    assert_eq!(video[0].head, [0x17, 0x00], "the AVC sequence header first");
    assert_eq!(video[1].head, [0x17, 0x01], "then a keyframe");
    assert!(
        waited < Duration::from_millis(800),
        "the first video came {waited:?} after the reconnection (keyframes before: {periodic:?} ms, after: {} ms)",
        video[1].ms
    );
    // Made for this output: not the periodic one, 2 s (60 frames) after the last before the reconnection.
    let phase = video[1].ms - periodic[periodic.len() - 1];
    assert!(
        (100..1900).contains(&phase),
        "keyframe at {} ms, on the grid of {periodic:?}",
        video[1].ms
    );
}
