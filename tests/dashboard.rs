//! The dashboard (`GET /`, `src/api/dashboard.html`) in a real browser: ffmpeg publishes to an ingress, headless
//! Chromium opens the dashboard with `#token=…&preview=<ingress>`, the page pulls the ingress's tracks through the
//! gateway's Calls API proxy (`/v1/sfu/*`) and decodes them, then reports what it saw (`?report=<url>`).
//!
//! `UPDATE_SCREENSHOT=1` also rewrites `docs/dashboard.png` (skipped otherwise, so CI never touches the file).
//! Needs `/usr/bin/chromium` and ffmpeg; fails without them.

mod common;

use common::browser::{self, CHROMIUM, percent_encode};
use common::rtmp::{AAC_48K, BASELINE, Killed, TOKEN, ffmpeg};
use serde::Deserialize;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// The page reports once its preview decoded more than 30 frames, or after 30 s.
const REPORT_TIMEOUT: Duration = Duration::from_secs(45);

/// Chromium gets this long to write the screenshot.
const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the page POSTs to `?report=`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DashboardReport {
    ok: bool,
    /// Why not `ok` (set when the page gave up waiting for frames).
    error: Option<String>,
    preview_state: Option<String>,
    frames_decoded: u64,
    frame_width: u32,
    frame_height: u32,
    audio_samples: u64,
    ingresses_shown: u64,
    egresses_shown: u64,
    calls_shown: u64,
    /// Window errors, unhandled rejections and `console.error` calls of the page.
    errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_previews_a_live_ingress() {
    let sip = common::sip::start("[[sip.rules]]\nto = \"*\"\nroom = \"lobby\"\n", &[]).await;
    let setup = &sip.setup;
    let api = setup.gateway.api.clone();
    let port = api.rsplit_once(':').expect("api address has a port").1.to_string();
    // http://localhost is a secure context (the API listens on 127.0.0.1).
    let origin = format!("http://localhost:{port}");

    // The page itself needs no token; the Calls API proxy does.
    for path in ["/", "/dashboard"] {
        let response = setup.http.get(format!("{api}{path}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(content_type.starts_with("text/html"), "GET {path}: {content_type}");
        assert!(
            response.text().await.unwrap().contains("dashboardState"),
            "GET {path}: not the dashboard"
        );
    }
    let anonymous = setup
        .http
        .post(format!("{api}/v1/sfu/sessions/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status().as_u16(),
        401,
        "the Calls API proxy answered without a token"
    );

    let ingress = setup.create_ingress("dash").await;
    let id = ingress["id"].as_str().unwrap().to_string();
    let key = ingress["streamKey"].as_str().unwrap().to_string();
    let _publisher = Killed(ffmpeg(
        &format!("rtmp://{}/live/{key}", setup.rtmp),
        120,
        BASELINE,
        AAC_48K,
    ));
    setup
        .wait_ingress(&id, "live with two tracks", |i| {
            i["state"] == "live" && i["sfu"]["tracks"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    // An egress to a destination that is not there: it is listed (degraded) on the page.
    let live = setup.ingress(&id).await;
    let session = live["sfu"]["sessionId"].as_str().unwrap().to_string();
    let egress = setup
        .http
        .post(format!("{}/v1/egresses", setup.gateway.api))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "tracks": [{"sessionId": session, "trackName": "dash-video"}],
            "outputs": [{"url": "rtmp://127.0.0.1:9/live/nowhere"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(egress.status().as_u16(), 201);

    // A phone call that stays up while the page is open: it is listed.
    let offer = common::sip::sdp(&[common::sip::PCMU], "[media_port]", "sendrecv");
    let steps = common::sip::scenario(&[
        common::sip::invite(&offer, ""),
        common::sip::final_response(200, ""),
        common::sip::ack(false, ""),
        common::sip::pause(60_000),
        common::sip::in_dialog("BYE", "", "", 200),
    ]);
    let _phone = sip.sipp("dashboard-call", &steps, "100", &[]);
    sip.call_to("100", |c| c["state"] == "answered").await;

    let token = percent_encode(TOKEN);
    let mut page = browser::open_url(|report| {
        format!(
            "{origin}/?report={}#token={token}&preview={}",
            percent_encode(report),
            percent_encode(&id)
        )
    })
    .await;
    let value = page.next_report(REPORT_TIMEOUT).await;
    let report: DashboardReport = serde_json::from_value(value.clone())
        .unwrap_or_else(|error| panic!("unexpected dashboard report ({error}): {value}"));
    eprintln!("dashboard report: {report:?}");

    assert!(
        report.errors.is_empty(),
        "the page logged errors: {:?}\n{}",
        report.errors,
        page.diagnostics()
    );
    assert!(
        report.ok,
        "the preview failed ({:?}, preview {:?})\n{}",
        report.error,
        report.preview_state,
        page.diagnostics()
    );
    assert!(report.frames_decoded > 0, "no frame decoded: {report:?}");
    // BASELINE publishes 640x360, passed through untouched.
    assert_eq!(
        (report.frame_width, report.frame_height),
        (640, 360),
        "frame size: {report:?}"
    );
    assert!(report.ingresses_shown >= 1, "the ingress table is empty: {report:?}");
    assert_eq!(
        report.egresses_shown, 1,
        "the egress table does not list the egress: {report:?}"
    );
    assert_eq!(
        report.calls_shown, 1,
        "the calls table does not list the call: {report:?}"
    );
    if report.audio_samples == 0 {
        eprintln!("note: the preview had no audio samples yet when it reported");
    }
    drop(page);

    if std::env::var("UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        screenshot(&format!("{origin}/#token={token}")).await;
    }
}

/// Writes `docs/dashboard.png` (1280x900) of `url` with a one-shot headless Chromium. A failure is reported, not
/// asserted: the screenshot is documentation.
async fn screenshot(url: &str) {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    let profile = tempfile::Builder::new()
        .prefix("sfu-gateway-screenshot-")
        .tempdir()
        .expect("create a temporary Chromium profile");
    let mut child = Command::new(CHROMIUM)
        .args(browser::HEADLESS_FLAGS)
        .args([
            "--hide-scrollbars",
            "--window-size=1280,900",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", target.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that a hung browser is killed with its helpers.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("start {CHROMIUM}: {error}"));
    let outcome = tokio::time::timeout(SCREENSHOT_TIMEOUT, child.wait()).await;
    match outcome {
        Ok(Ok(status)) if status.success() && target.exists() => eprintln!("wrote {}", target.display()),
        Ok(outcome) => eprintln!("screenshot failed: Chromium ended with {outcome:?}"),
        Err(_) => {
            eprintln!("screenshot failed: Chromium did not finish within {SCREENSHOT_TIMEOUT:?}");
            if let Some(pid) = child.id() {
                let group = format!("-{pid}");
                let _ = std::process::Command::new("kill")
                    .args(["-s", "KILL", "--", group.as_str()])
                    .status();
            }
            let _ = child.wait().await;
        }
    }
}
