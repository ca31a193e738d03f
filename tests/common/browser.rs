//! Real-browser harness: serves `tests/browser/calls.html` from a tiny local HTTP server, opens it in headless
//! Chromium (fake camera and microphone, no permission prompts) and hands the page's JSON reports to the test.
//!
//! The page is loaded from `http://localhost:<port>` (a secure context, so `getUserMedia` works) and calls the Calls
//! API cross-origin with `Authorization: Bearer`, exactly as a browser app does. Chromium is required: without
//! [`CHROMIUM`] the helpers panic instead of skipping.
//!
//! [`open_url`] opens any other page (e.g. the gateway's dashboard) with the same browser and report server: the
//! page POSTs its JSON report to the URL it is given (cross-origin is fine: the report endpoint allows any origin).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Where the test machines (and CI) have Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a page gets to send its (first) report.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(40);

/// The page, compiled in so the harness does not depend on the working directory.
const PAGE: &str = include_str!("../browser/calls.html");

/// Flags for headless Chromium on this closed, loopback-only machine (any page).
pub const HEADLESS_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
];

/// Extra flags for WebRTC pages (fake devices, loopback ICE), before `--user-data-dir` and the URL.
const WEBRTC_FLAGS: &[&str] = &[
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
];

/// Chromium's stdout and stderr, in the temporary directory.
const CHROMIUM_LOG: &str = "chromium.log";

/// Lines of Chromium's own log printed on failure.
const CHROMIUM_LOG_TAIL: usize = 200;

/// What the page does (its `mode` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Publish camera and microphone from one PeerConnection, pull both back into a second one through the SFU,
    /// and report the second one's inbound statistics ([`LoopReport`]).
    Loop,
    /// Publish camera (VP8 first) and microphone as `cam` and `mic`, report once packets leave
    /// ([`PublishedReport`]), then keep streaming until the browser is killed.
    Publish,
    /// Like [`Mode::Publish`] with a 1280x720 camera sent as three simulcast layers: `a` (full), `b` (half),
    /// `c` (quarter).
    Simulcast,
    /// Pull a video and an audio track of another session (see [`open_subscriber`]) and report the inbound
    /// statistics ([`LoopReport`]).
    Subscribe,
}

impl Mode {
    /// The query-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Loop => "loop",
            Mode::Publish => "publish",
            Mode::Simulcast => "simulcast",
            Mode::Subscribe => "subscribe",
        }
    }
}

/// The report of a `mode=loop` page. Missing fields (a failure report has few) read as zero or `None`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LoopReport {
    /// The whole flow ran and media reached the second PeerConnection.
    pub ok: bool,
    /// What went wrong, when not `ok`.
    pub error: Option<String>,
    /// The page's stage when it failed (`getUserMedia`, `publish`, `wait-sending`, `subscribe`, `renegotiate`,
    /// `receive`, ...).
    pub stage: Option<String>,
    /// The receiver gave up waiting for the wanted frame and sample counts (they are still above zero).
    pub timed_out: bool,
    /// Inbound video `framesDecoded` of the subscribing PeerConnection.
    pub frames_decoded: u64,
    /// Inbound video `frameWidth`.
    pub frame_width: u32,
    /// Inbound video `frameHeight`.
    pub frame_height: u32,
    /// Inbound video codec, e.g. `video/VP8`.
    pub video_codec: Option<String>,
    /// Inbound audio `totalSamplesReceived` (includes concealed samples).
    pub total_samples_received: u64,
    /// Inbound audio `concealedSamples`.
    pub concealed_samples: u64,
    /// Inbound audio `packetsReceived`.
    pub audio_packets_received: u64,
    /// Inbound audio `audioLevel` (0..1).
    pub audio_level: f64,
    /// Inbound audio `totalAudioEnergy`.
    pub total_audio_energy: f64,
    /// Inbound audio codec, e.g. `audio/opus`.
    pub audio_codec: Option<String>,
    /// The publishing session.
    pub session_a: String,
    /// The subscribing session.
    pub session_b: String,
}

/// The first report of a `mode=publish` page: where its tracks can be pulled from.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishedReport {
    /// The publishing Calls session (`sessionA` on the wire).
    #[serde(rename = "sessionA")]
    pub session_id: String,
    /// The published tracks: `cam` (video) and `mic` (audio).
    pub tracks: Vec<PublishedTrack>,
}

/// One track published by the page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PublishedTrack {
    /// `cam` or `mic`.
    #[serde(rename = "trackName")]
    pub track_name: String,
    /// Its mid in the publishing session.
    pub mid: String,
    /// `video` or `audio`.
    pub kind: String,
}

/// Headless Chromium showing a page (`calls.html`, or any URL given to [`open_url`]), plus the server that collects
/// the page's reports (and serves `calls.html`). Dropping it kills Chromium (its whole process group) and stops the
/// server; when dropped during a panic it first prints the page's log and the tail of Chromium's log.
pub struct BrowserGuard {
    /// `None` for a page opened with [`open_url`].
    mode: Option<Mode>,
    /// Names the page in messages: its mode, or its URL without the fragment.
    label: String,
    child: Child,
    pid: Option<u32>,
    reports: mpsc::Receiver<Value>,
    page_log: Arc<Mutex<Vec<String>>>,
    server: JoinHandle<()>,
    /// Holds Chromium's profile and log; declared last so that it is removed after Chromium is gone.
    dir: TempDir,
}

/// Opens `calls.html` in a fresh headless Chromium, pointed at the Calls API at `api` (e.g.
/// `http://127.0.0.1:PORT/v1`) with app `app` and bearer `secret`. Returns at once; read the outcome with
/// [`BrowserGuard::next_report`]. Panics if [`CHROMIUM`] is missing or does not start.
pub async fn open_page(mode: Mode, api: &str, app: &str, secret: &str) -> BrowserGuard {
    open_calls_page(mode, &[("api", api), ("app", app), ("secret", secret)]).await
}

/// Opens `calls.html` in [`Mode::Subscribe`]: it pulls `tracks` (a video, then an audio track name) of Calls
/// session `session` from the Calls API at `api` and reports what it decoded ([`BrowserGuard::next_loop_report`]).
pub async fn open_subscriber(api: &str, app: &str, secret: &str, session: &str, tracks: [&str; 2]) -> BrowserGuard {
    let tracks = tracks.join(",");
    let params = [
        ("api", api),
        ("app", app),
        ("secret", secret),
        ("session", session),
        ("tracks", tracks.as_str()),
    ];
    open_calls_page(Mode::Subscribe, &params).await
}

/// `calls.html` in `mode` with `params`, reporting to the harness.
async fn open_calls_page(mode: Mode, params: &[(&str, &str)]) -> BrowserGuard {
    launch(Some(mode), |origin| {
        let report_url = format!("{origin}/report");
        let log_url = format!("{origin}/log");
        let mut all = vec![("mode", mode.as_str())];
        all.extend_from_slice(params);
        all.extend([("report", report_url.as_str()), ("log", log_url.as_str())]);
        page_url(origin, &all)
    })
    .await
}

/// Opens the page `url_for(report_url)` in a fresh headless Chromium (same flags as [`open_page`]); the page is
/// expected to POST its JSON report (any Content-Type, e.g. `text/plain` to avoid a preflight) to `report_url`,
/// which accepts cross-origin requests. Returns at once; read the outcome with [`BrowserGuard::next_report`].
/// Panics if [`CHROMIUM`] is missing or does not start.
pub async fn open_url(url_for: impl FnOnce(&str) -> String) -> BrowserGuard {
    launch(None, |origin| url_for(&format!("{origin}/report"))).await
}

/// Starts the page server, then Chromium on `url_for(server origin)`.
async fn launch(mode: Option<Mode>, url_for: impl FnOnce(&str) -> String) -> BrowserGuard {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser tests need Chromium (apt-get install chromium; scripts/test installs it)"
    );
    let page_log = Arc::new(Mutex::new(Vec::new()));
    let (report_tx, reports) = mpsc::channel(16);
    let state = PageState {
        reports: report_tx,
        log: Arc::clone(&page_log),
    };
    let app_router = Router::new()
        .route("/calls.html", get(serve_page))
        .route("/report", post(receive_report))
        .route("/log", post(receive_log))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the page server to 127.0.0.1:0");
    let port = listener.local_addr().expect("page server address").port();
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app_router).await {
            eprintln!("browser page server stopped: {error}");
        }
    });

    let url = url_for(&format!("http://localhost:{port}"));
    // The fragment may hold a token: keep it out of messages.
    let label = match mode {
        Some(mode) => mode.as_str().to_string(),
        None => url.split('#').next().unwrap_or_default().to_string(),
    };

    let dir = tempfile::Builder::new()
        .prefix("sfu-gateway-chromium-")
        .tempdir()
        .expect("create a temporary directory for Chromium");
    let log = File::create(dir.path().join(CHROMIUM_LOG)).expect("create chromium.log");
    let mut user_data_dir = OsString::from("--user-data-dir=");
    user_data_dir.push(dir.path().join("profile"));
    let child = Command::new(CHROMIUM)
        .args(HEADLESS_FLAGS)
        .args(WEBRTC_FLAGS)
        .arg(user_data_dir)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the chromium.log handle"))
        .stderr(log)
        // Its own process group, so that drop can kill the browser together with every helper process.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("start {CHROMIUM}: {error}"));
    let pid = child.id();
    BrowserGuard {
        mode,
        label,
        child,
        pid,
        reports,
        page_log,
        server,
        dir,
    }
}

/// Opens a `mode=publish` page against the Calls API at `sfu_api`: Chromium publishes its fake camera (VP8 first)
/// and microphone as `cam` and `mic` in a new session and keeps streaming until the guard is dropped. Returns once
/// packets are leaving the browser. Panics (printing the page and Chromium logs) if the page fails or does not
/// report within [`REPORT_TIMEOUT`].
pub async fn start_browser_publisher(sfu_api: &str, app: &str, secret: &str) -> (BrowserGuard, PublishedReport) {
    start_publishing_page(Mode::Publish, sfu_api, app, secret).await
}

/// Like [`start_browser_publisher`] in `mode` ([`Mode::Publish`] or [`Mode::Simulcast`]).
pub async fn start_publishing_page(
    mode: Mode,
    sfu_api: &str,
    app: &str,
    secret: &str,
) -> (BrowserGuard, PublishedReport) {
    let mut browser = open_page(mode, sfu_api, app, secret).await;
    let report = browser.next_report(REPORT_TIMEOUT).await;
    assert_eq!(
        report.get("ok"),
        Some(&Value::Bool(true)),
        "the publishing page failed: {report}"
    );
    let published: PublishedReport = serde_json::from_value(report.clone())
        .unwrap_or_else(|error| panic!("unexpected publish report ({error}): {report}"));
    (browser, published)
}

impl BrowserGuard {
    /// The page's mode (`None` for a page opened with [`open_url`]).
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// Waits (bounded by `timeout`) for the page's next report. Panics if none arrives in time or if Chromium
    /// exits first.
    pub async fn next_report(&mut self, timeout: Duration) -> Value {
        let reports = &mut self.reports;
        let child = &mut self.child;
        let outcome = tokio::time::timeout(timeout, async {
            tokio::select! {
                biased;
                report = reports.recv() => Ok(report),
                status = child.wait() => Err(status),
            }
        })
        .await;
        match outcome {
            Ok(Ok(Some(report))) => report,
            Ok(Ok(None)) => panic!("the browser page server stopped before the page reported"),
            Ok(Err(status)) => panic!("Chromium exited before the page reported: {status:?}"),
            Err(_) => panic!(
                "no report from the {} page within {timeout:?} (Chromium running: {})",
                self.label,
                matches!(self.child.try_wait(), Ok(None))
            ),
        }
    }

    /// The page's next report as a [`LoopReport`]; see [`BrowserGuard::next_report`].
    pub async fn next_loop_report(&mut self, timeout: Duration) -> LoopReport {
        let report = self.next_report(timeout).await;
        serde_json::from_value(report.clone())
            .unwrap_or_else(|error| panic!("unexpected loop report ({error}): {report}"))
    }

    /// A report the page already sent, if any (a publishing page reports again when its connection fails).
    pub fn try_report(&mut self) -> Option<Value> {
        self.reports.try_recv().ok()
    }

    /// The page's progress log so far (each line also went to the browser console).
    pub fn page_log(&self) -> Vec<String> {
        self.page_log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Chromium's stdout and stderr.
    pub fn chromium_log_path(&self) -> PathBuf {
        self.dir.path().join(CHROMIUM_LOG)
    }

    /// The page's log and the tail of Chromium's own log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let log_path = self.chromium_log_path();
        let chromium = match std::fs::read_to_string(&log_path) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(CHROMIUM_LOG_TAIL)..].join("\n")
            }
            Err(error) => format!("<cannot read {}: {error}>", log_path.display()),
        };
        format!(
            "--- {} page log ---\n{}\n--- Chromium log (last {CHROMIUM_LOG_TAIL} lines of {}) ---\n{chromium}\n---",
            self.label,
            self.page_log().join("\n"),
            log_path.display(),
        )
    }
}

impl Drop for BrowserGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        self.server.abort();
        if let Some(pid) = self.pid {
            // `process_group(0)` made Chromium the leader of a group holding all its helper processes.
            let group = format!("-{pid}");
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", group.as_str()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
        // Reap (bounded) so that the profile directory is not removed under a live browser.
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `{origin}/calls.html?k=v&...` with every value percent-encoded.
pub fn page_url(origin: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params
        .iter()
        .map(|(key, value)| format!("{}={}", percent_encode(key), percent_encode(value)))
        .collect();
    format!("{origin}/calls.html?{}", query.join("&"))
}

/// Percent-encodes every byte of `value` except the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            write!(out, "%{byte:02X}").expect("writing to a String cannot fail");
        }
    }
    out
}

/// Shared by the page server's handlers.
#[derive(Clone)]
struct PageState {
    reports: mpsc::Sender<Value>,
    log: Arc<Mutex<Vec<String>>>,
}

impl PageState {
    fn push_log(&self, line: String) {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }
}

async fn serve_page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

/// `POST /report`: any JSON (whatever the Content-Type) goes to the test; a body that is not JSON becomes a
/// failure report. Any origin may post (a page opened with [`open_url`] is served by another server).
async fn receive_report(State(state): State<PageState>, body: Bytes) -> impl IntoResponse {
    let report = serde_json::from_slice::<Value>(&body).unwrap_or_else(|error| {
        serde_json::json!({
            "ok": false,
            "stage": "harness",
            "error": format!("report is not JSON ({error}): {}", String::from_utf8_lossy(&body)),
        })
    });
    state.push_log(format!("<report> {report}"));
    let status = match state.reports.send(report).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::GONE,
    };
    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], status)
}

/// `POST /log`: one progress line of the page (from any origin).
async fn receive_log(State(state): State<PageState>, line: String) -> impl IntoResponse {
    state.push_log(line);
    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], StatusCode::NO_CONTENT)
}
