//! A real nginx with the RTMP module on loopback, as the destination of an RTMP egress, and ffprobe/ffmpeg
//! helpers that check what it received (codecs, size, frame rate, duration, clean decode).
//!
//! Needs `/usr/sbin/nginx` with `ngx_rtmp_module.so` (Debian/Ubuntu `nginx` + `libnginx-mod-rtmp`), `ffmpeg`
//! and `ffprobe` on `PATH`.

use serde_json::Value;
use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const NGINX: &str = "/usr/sbin/nginx";
const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// A running nginx-rtmp accepting publishers on `rtmp://127.0.0.1:{port}/live/{stream}` and recording every
/// stream to `{record_dir}/{stream}.flv`. Killed, and its directory removed, on drop.
pub struct NginxRtmp {
    /// The loopback RTMP port.
    pub port: u16,
    /// Where recordings go (`{stream}.flv`).
    pub record_dir: PathBuf,
    child: Child,
    dir: TempDir,
}

impl NginxRtmp {
    /// Starts nginx on a free loopback port and waits (bounded) until it accepts connections.
    ///
    /// The port is found by binding `127.0.0.1:0` and dropping the listener before nginx binds it, so another
    /// process could take it in between; nginx then exits with "Address already in use" and we retry on a new
    /// port (a few times).
    pub fn start() -> NginxRtmp {
        Self::start_on(None)
    }

    /// Like [`NginxRtmp::start`] on a given port (a destination that was down and comes back).
    pub fn start_on(fixed_port: Option<u16>) -> NginxRtmp {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: install the Debian/Ubuntu packages `nginx` and `libnginx-mod-rtmp`"
        );
        assert!(
            Path::new(RTMP_MODULE).exists(),
            "{RTMP_MODULE} is missing: install the Debian/Ubuntu package `libnginx-mod-rtmp`"
        );
        let dir = tempfile::Builder::new()
            .prefix("nginx-rtmp-")
            .tempdir()
            .expect("tempdir");
        let record_dir = dir.path().join("rec");
        std::fs::create_dir(&record_dir).expect("create record dir");
        // nginx runs as us (`master_process off` never switches user), but a world-writable directory keeps
        // recording working whatever user it ends up as: a failure to open the file is only logged.
        std::fs::set_permissions(&record_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod record dir");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = fixed_port.unwrap_or_else(free_port);
            // nginx appends; start each attempt with a fresh log for the readiness check below.
            let _ = std::fs::remove_file(dir.path().join("error.log"));
            let config_path = dir.path().join("nginx.conf");
            std::fs::write(&config_path, config(dir.path(), &record_dir, port)).expect("write nginx.conf");
            let stderr = File::create(dir.path().join("stderr.log")).expect("create stderr.log");
            let mut child = Command::new(NGINX)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("start nginx");
            match wait_listening(&mut child, dir.path(), port, Duration::from_secs(5)) {
                Ok(()) => {
                    return NginxRtmp {
                        port,
                        record_dir,
                        child,
                        dir,
                    };
                }
                Err(problem) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = read_log(dir.path());
                    // Lost the port race: try another port.
                    if fixed_port.is_none() && attempt < 5 && log.contains("Address already in use") {
                        continue;
                    }
                    panic!("nginx did not start listening on 127.0.0.1:{port} ({problem}); log:\n{log}");
                }
            }
        }
    }

    /// `rtmp://127.0.0.1:{port}/live/{stream}`.
    pub fn url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.port)
    }

    /// The file nginx records stream `stream` to (it exists once a publisher has started; a later publish on
    /// the same name truncates it).
    pub fn recording(&self, stream: &str) -> PathBuf {
        self.record_dir.join(format!("{stream}.flv"))
    }

    /// Waits (bounded) until the recording of `stream` exists and has stopped growing for half a second, i.e.
    /// the publisher is gone and nginx has written everything. Call it after the publisher stopped.
    pub fn wait_recording(&self, stream: &str, timeout: Duration) -> PathBuf {
        let path = self.recording(stream);
        let deadline = Instant::now() + timeout;
        let mut last = None;
        let mut stable_since = Instant::now();
        loop {
            let size = std::fs::metadata(&path).map(|m| m.len()).ok().filter(|&n| n > 0);
            if size != last {
                last = size;
                stable_since = Instant::now();
            } else if size.is_some() && stable_since.elapsed() >= Duration::from_millis(500) {
                return path;
            }
            assert!(
                Instant::now() < deadline,
                "recording {} not complete within {timeout:?} (size {last:?}); nginx log:\n{}",
                path.display(),
                self.error_log()
            );
            // Polling the file size: nginx gives no other signal that a recording is closed.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// nginx's error log (and anything it printed on stderr), for failure messages.
    pub fn error_log(&self) -> String {
        read_log(self.dir.path())
    }
}

impl Drop for NginxRtmp {
    fn drop(&mut self) {
        // `master_process off`: this is the only nginx process. The tempdir is removed after this, as a field.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls (every 50 ms, bounded) until nginx has bound `port` and it accepts a connection; `Err` if nginx exited or
/// time ran out.
///
/// A connection alone could reach whoever took the port in the race (while nginx retries its bind for 2.5 s), so
/// this also waits for the version line (`... [notice] 123#123: nginx/1.22.1`) that nginx logs only after opening
/// its listening sockets.
fn wait_listening(child: &mut Child, dir: &Path, port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait nginx") {
            return Err(format!("exited with {status}"));
        }
        let started = std::fs::read_to_string(dir.join("error.log")).is_ok_and(|log| log.contains(": nginx/"));
        if started && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not listening after {timeout:?}"));
        }
        // Polling the port: nginx in the foreground has no readiness notification.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The error log and stderr of the nginx in `dir`.
fn read_log(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    if stderr.trim().is_empty() {
        log
    } else {
        format!("{log}\nstderr:\n{stderr}")
    }
}

/// A free loopback port: bound, read, and released again (see the race note on [`NginxRtmp::start`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free loopback port")
        .port()
}

fn config(dir: &Path, record_dir: &Path, port: u16) -> String {
    let dir = dir.display();
    let record_dir = record_dir.display();
    // `master_process off`: one process, running as us (no `user` switch), that a kill stops.
    // `access_log off`: the RTMP module's default access log is /var/log/nginx/access.log.
    format!(
        r#"load_module {RTMP_MODULE};
daemon off;
master_process off;
pid "{dir}/nginx.pid";
error_log "{dir}/error.log" info;
events {{}}
rtmp {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
            record all;
            record_path "{record_dir}";
            record_unique off;
        }}
    }}
}}
"#
    )
}

/// What ffprobe found in a media file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    /// The first video stream.
    pub video: Option<VideoInfo>,
    /// The first audio stream.
    pub audio: Option<AudioInfo>,
    /// Container duration in seconds (0 if unknown).
    pub duration: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoInfo {
    /// ffprobe's codec name: `h264`, `vp8`, ...
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// From `avg_frame_rate`, else `r_frame_rate` (0 if neither is known).
    pub fps: f64,
    /// Frames actually read (`-count_frames`).
    pub frames: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioInfo {
    /// ffprobe's codec name: `aac`, `opus`, ...
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u32,
}

/// Probes `path` with ffprobe (counting frames); panics with ffprobe's message if it cannot read the file.
pub fn probe(path: &Path) -> Probe {
    try_probe(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`probe`], with ffprobe's failure as `Err`.
pub fn try_probe(path: &Path) -> Result<Probe, String> {
    let mut command = Command::new("ffprobe");
    command
        .args(["-v", "error", "-print_format", "json"])
        .args(["-show_streams", "-show_format", "-count_frames"])
        .arg(path);
    let (status, stdout, stderr) = run_bounded(&mut command, Duration::from_secs(60), "ffprobe");
    if !status.is_some_and(|s| s.success()) {
        return Err(format!("ffprobe {} failed ({status:?}): {stderr}", path.display()));
    }
    let json: Value =
        serde_json::from_str(&stdout).map_err(|e| format!("ffprobe {}: bad JSON ({e}): {stdout}", path.display()))?;
    Ok(parse_probe(&json))
}

fn parse_probe(json: &Value) -> Probe {
    let streams = json["streams"].as_array().map(Vec::as_slice).unwrap_or_default();
    let of_type = |kind: &str| streams.iter().find(|s| s["codec_type"].as_str() == Some(kind));
    let video = of_type("video").map(|s| VideoInfo {
        codec: s["codec_name"].as_str().unwrap_or_default().to_string(),
        width: number(&s["width"]).unwrap_or(0.0) as u32,
        height: number(&s["height"]).unwrap_or(0.0) as u32,
        fps: rate(&s["avg_frame_rate"])
            .or_else(|| rate(&s["r_frame_rate"]))
            .unwrap_or(0.0),
        frames: number(&s["nb_read_frames"])
            .or_else(|| number(&s["nb_frames"]))
            .unwrap_or(0.0) as u64,
    });
    let audio = of_type("audio").map(|s| AudioInfo {
        codec: s["codec_name"].as_str().unwrap_or_default().to_string(),
        sample_rate: number(&s["sample_rate"]).unwrap_or(0.0) as u32,
        channels: number(&s["channels"]).unwrap_or(0.0) as u32,
    });
    let duration = number(&json["format"]["duration"])
        .or_else(|| streams.iter().filter_map(|s| number(&s["duration"])).reduce(f64::max))
        .unwrap_or(0.0);
    Probe { video, audio, duration }
}

/// A JSON number, or a string holding one (ffprobe prints many numbers as strings).
fn number(value: &Value) -> Option<f64> {
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    number.filter(|n| n.is_finite())
}

/// A positive frame rate such as `"30/1"` or `"30000/1001"`; `None` for `"0/0"` and the like.
fn rate(value: &Value) -> Option<f64> {
    let text = value.as_str()?;
    let rate = match text.split_once('/') {
        Some((num, den)) => num.trim().parse::<f64>().ok()? / den.trim().parse::<f64>().ok()?,
        None => text.trim().parse().ok()?,
    };
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

/// Decodes `path` fully with ffmpeg and returns its error output: empty means a clean decode.
pub fn decode_errors(path: &Path) -> String {
    let mut command = Command::new("ffmpeg");
    command
        .args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"]);
    let (status, _, stderr) = run_bounded(&mut command, Duration::from_secs(60), "ffmpeg decode");
    match status {
        Some(s) if s.success() => stderr,
        Some(s) if stderr.trim().is_empty() => format!("ffmpeg exited with {s}"),
        Some(_) => stderr,
        None => format!("ffmpeg decode timed out after 60 s\n{stderr}"),
    }
}

/// Plays `url` for `seconds` of media (copied, not decoded, into a temporary FLV) and probes what arrived.
///
/// Can be started before the stream is published: nginx holds the player until a publisher appears, and ffmpeg
/// gives up after 10 s without data. Stream copy starts video at the first keyframe. ffmpeg is killed after
/// `seconds + 15` s; whatever it wrote is still probed. Panics if nothing was recorded.
pub fn probe_url(url: &str, seconds: u32) -> Probe {
    let dir = tempfile::Builder::new()
        .prefix("probe-url-")
        .tempdir()
        .expect("tempdir");
    let file = dir.path().join("stream.flv");
    let seconds_arg = seconds.to_string();
    let mut command = Command::new("ffmpeg");
    command
        .args(["-nostdin", "-hide_banner", "-v", "error"])
        .args(["-rw_timeout", "10000000", "-i", url])
        .args(["-t", seconds_arg.as_str(), "-c", "copy", "-f", "flv", "-y"])
        .arg(&file);
    let limit = Duration::from_secs(u64::from(seconds) + 15);
    let (status, _, stderr) = run_bounded(&mut command, limit, "ffmpeg play");
    let recorded = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(
        recorded > 0,
        "nothing recorded from {url} (ffmpeg {}): {stderr}",
        status.map_or_else(|| format!("killed after {limit:?}"), |s| s.to_string())
    );
    probe(&file)
}

/// Runs `command` with piped output, killing it after `limit`; the status is `None` if it was killed.
fn run_bounded(command: &mut Command, limit: Duration, what: &str) -> (Option<ExitStatus>, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let stdout = read_in_background(child.stdout.take().expect("stdout"));
    let stderr = read_in_background(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Polling the child's exit status: there is no portable blocking wait with a timeout.
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    (status, stdout, stderr)
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
