//! Typed configuration: built-in defaults < `gateway.toml` (`--config`) < environment.
//!
//! Environment variables are `GATEWAY__SECTION__KEY` (for example `GATEWAY__API__LISTEN`); the Cloudflare
//! credentials are also read from `CALLS_APP_ID`, `CALLS_APP_SECRET` and `CALLS_API_URL` (the names the
//! official examples use), below the `GATEWAY__` variables. [`Config::validate`] checks ranges, port clashes
//! and files; every problem is reported as a [`ConfigError`] naming the key.

mod sip;

pub use sip::{Cidr, RuleConfig, SipConfig, SrtpPolicy, TrunkConfig};

use crate::redact::Secret;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, always naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("invalid configuration: {0}")]
    Load(String),
    /// A value parsed but is not acceptable.
    #[error("invalid configuration: key `{key}`: {problem}")]
    Invalid {
        /// Dotted key, e.g. `api.listen`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`].
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Logging.
    pub log: LogConfig,
    /// Control API.
    pub api: ApiConfig,
    /// Session supervisor.
    pub supervisor: SupervisorConfig,
    /// SFU connection (Cloudflare or the embedded SFU).
    pub sfu: SfuConfig,
    /// GStreamer pipeline fragments.
    pub pipelines: PipelinesConfig,
    /// RTMP ingest server.
    pub rtmp: RtmpConfig,
    /// Rooms.
    pub rooms: RoomsConfig,
    /// Webhooks.
    pub webhooks: WebhooksConfig,
    /// Broadcast egress.
    pub egress: EgressConfig,
    /// SIP user agent, trunks and dispatch rules.
    pub sip: SipConfig,
    /// Ingresses declared here (stable stream keys for a fleet); more can be created through the API.
    pub ingresses: Vec<IngressConfig>,
}

/// `[rtmp]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// Whether the RTMP server runs.
    pub enabled: bool,
    /// Listener address.
    pub listen: SocketAddr,
    /// Application name in the publish URL (`rtmp://host/{app}/{streamKey}`).
    pub app: String,
    /// Base URL shown to streamers (`rtmp://host:port/app`); derived from `listen` when empty.
    pub public_url: String,
    /// A publisher that drops may come back this long and continue the same tracks.
    #[serde(with = "humantime_serde")]
    pub reconnect_grace: Duration,
    /// From TCP connect to a completed RTMP handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Longest silence from a connected publisher (also the wait for its publish request).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// RTMPS listener, used when `tls_cert` and `tls_key` are set.
    pub rtmps_listen: SocketAddr,
    /// PEM certificate chain for RTMPS; empty: no RTMPS.
    pub tls_cert: String,
    /// PEM private key for RTMPS.
    pub tls_key: String,
    /// Simultaneous connections accepted from one IP address (0: no limit); more are closed at once.
    pub max_connections_per_ip: u32,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1935),
            app: "live".into(),
            public_url: String::new(),
            reconnect_grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            rtmps_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1936),
            tls_cert: String::new(),
            tls_key: String::new(),
            max_connections_per_ip: 10,
        }
    }
}

impl RtmpConfig {
    /// Whether RTMPS is configured.
    pub fn rtmps(&self) -> bool {
        !self.tls_cert.is_empty() || !self.tls_key.is_empty()
    }

    /// The URL streamers publish to, without the key.
    pub fn url(&self, bound: SocketAddr) -> String {
        if !self.public_url.is_empty() {
            return self.public_url.trim_end_matches('/').to_string();
        }
        let host = if bound.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            bound.ip().to_string()
        };
        format!("rtmp://{host}:{}/{}", bound.port(), self.app)
    }
}

/// `[rooms]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Webhook called (POST `{"room": name}`) for a room the gateway does not know; empty: none.
    pub resolver_url: String,
}

/// `[egress]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// How late a source's frame may arrive and still be composited and mixed (the compositor's, mixer's and
    /// muxer's latency): more absorbs more network jitter, less adds less delay. 0–1 s.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Longest wait between two attempts of a failed output (the wait starts at 0.5 s and doubles); outputs
    /// are retried forever. 1 s – 1 h.
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Directory of the egresses' MP4 recordings (`outputs: [{file: "name"}]`); empty: recordings are off.
    pub recordings_dir: PathBuf,
    /// A PEM file of CA certificates rtmps:// outputs trust besides the system's (a private server's CA);
    /// empty: the system's only.
    pub tls_ca_file: PathBuf,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            jitter: Duration::from_millis(150),
            retry_max_backoff: Duration::from_secs(30),
            recordings_dir: PathBuf::new(),
            tls_ca_file: PathBuf::new(),
        }
    }
}

/// `[webhooks]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// URLs every event is POSTed to.
    pub urls: Vec<String>,
    /// HMAC-SHA256 key of the `X-Gateway-Signature` header.
    pub secret: Secret,
    /// Timeout of one delivery attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per event and URL before it is given up.
    pub max_attempts: u32,
    /// Events waiting per URL; beyond it new events are dropped (counted), never blocking media.
    pub queue: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: Secret::default(),
            timeout: Duration::from_secs(5),
            max_attempts: 8,
            queue: 1024,
        }
    }
}

/// `[[ingresses]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// Name; tracks are `{name}-video` and `{name}-audio`.
    pub name: String,
    /// The stream key (at least 16 characters).
    pub stream_key: Secret,
    /// Room the tracks join.
    #[serde(default)]
    pub room: Option<String>,
    /// `auto`, `passthrough` or `transcode`.
    #[serde(default)]
    pub video_mode: crate::ingress::store::VideoMode,
    /// Codec of the transcode path: `h264` or `vp8` (which needs `video_mode` `transcode`).
    #[serde(default)]
    pub video_codec: crate::ingress::store::VideoCodec,
    /// Simulcast layers when transcoding (1-3; more than 1 implies transcoding).
    #[serde(default = "one")]
    pub layers: u8,
}

fn one() -> u8 {
    1
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `sfu_gateway=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`; `--log-format` wins when given.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the control API, dashboard and metrics.
    pub listen: SocketAddr,
    /// Bearer token for `/v1/*`. When empty the API binds loopback only.
    pub token: Secret,
    /// Enables `/v1/test/*` routes that create dummy sessions (for process tests only).
    pub test_routes: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            token: Secret::default(),
            test_routes: false,
        }
    }
}

/// `[supervisor]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// How long sessions get to finish after SIGTERM before they are stopped.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Maximum number of live sessions (admission beyond it is refused with 503).
    pub max_sessions: usize,
    /// Capacity in cost units; a session is admitted only if its cost fits in what is left.
    pub capacity: u32,
    /// Cost of each kind of session.
    pub costs: CostsConfig,
}

/// `[supervisor.costs]`: capacity units per session (calibrate with `scripts/bench rtmp`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostsConfig {
    /// An RTMP ingest in passthrough (or auto) mode.
    pub rtmp_passthrough: u32,
    /// An RTMP ingest that transcodes, per simulcast layer.
    pub rtmp_transcode_layer: u32,
    /// An egress (decode, composite, encode).
    pub egress: u32,
    /// A phone call (G.711/Opus transcoding and the mix toward the phone).
    pub sip_call: u32,
}

impl Default for CostsConfig {
    fn default() -> Self {
        Self {
            rtmp_passthrough: 1,
            rtmp_transcode_layer: 10,
            egress: 10,
            sip_call: 1,
        }
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            max_sessions: 1000,
            capacity: 100,
            costs: CostsConfig::default(),
        }
    }
}

/// Which SFU the gateway talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SfuMode {
    /// The in-process, Calls-API-compatible SFU.
    Embedded,
    /// Cloudflare Realtime SFU.
    Cloudflare,
}

/// `[sfu]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SfuConfig {
    /// `embedded` or `cloudflare`; unset means cloudflare when credentials are set, embedded otherwise.
    pub mode: Option<SfuMode>,
    /// Calls API base URL (`CALLS_API_URL`).
    pub api_url: String,
    /// Calls app id (`CALLS_APP_ID`).
    pub app_id: String,
    /// Calls app secret (`CALLS_APP_SECRET`).
    pub app_secret: Secret,
    /// Timeout of one Calls API request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The embedded SFU.
    pub embedded: EmbeddedSfuConfig,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            mode: None,
            api_url: "https://rtc.live.cloudflare.com/v1".into(),
            app_id: String::new(),
            app_secret: Secret::default(),
            request_timeout: Duration::from_secs(10),
            embedded: EmbeddedSfuConfig::default(),
        }
    }
}

impl SfuConfig {
    /// The mode in effect: the configured one, else cloudflare when credentials are set.
    pub fn effective_mode(&self) -> SfuMode {
        self.mode
            .unwrap_or(if !self.app_id.is_empty() && !self.app_secret.is_empty() {
                SfuMode::Cloudflare
            } else {
                SfuMode::Embedded
            })
    }
}

/// `[sfu.embedded]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedSfuConfig {
    /// HTTP listener of the Calls API.
    pub listen: SocketAddr,
    /// The one UDP socket for all media.
    pub udp: SocketAddr,
    /// App id accepted by the embedded SFU (generated at start-up when empty).
    pub app_id: String,
    /// App secret accepted by the embedded SFU (generated and printed at start-up when empty).
    pub app_secret: Secret,
    /// Addresses advertised as host candidates; the UDP socket's address when empty.
    pub public_ips: Vec<IpAddr>,
    /// A track with no media for this long is collected.
    #[serde(with = "humantime_serde")]
    pub track_idle_timeout: Duration,
}

impl Default for EmbeddedSfuConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8788),
            udp: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8789),
            app_id: String::new(),
            app_secret: Secret::default(),
            public_ips: Vec::new(),
            track_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// `[pipelines]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelinesConfig {
    /// Directory of `<name>.gst` files overriding the built-in fragments of the same name.
    pub dir: Option<PathBuf>,
}

/// Environment variables the loader reads besides `GATEWAY__*`.
const CALLS_ENV: [(&str, &str); 3] = [
    ("CALLS_API_URL", "sfu.api_url"),
    ("CALLS_APP_ID", "sfu.app_id"),
    ("CALLS_APP_SECRET", "sfu.app_secret"),
];

impl Config {
    /// Loads defaults, then `file` (when given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars().collect())
    }

    /// Like [`Config::load`] with an explicit environment (tests).
    pub fn load_with_env(file: Option<&Path>, env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::invalid(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        // CALLS_* sit above the file and below GATEWAY__*: sources added later win.
        let calls_env: HashMap<String, String> = CALLS_ENV
            .iter()
            .filter_map(|(var, key)| {
                let value = env.get(*var).filter(|v| !v.is_empty())?;
                Some((key.replace('.', "__").to_uppercase(), value.clone()))
            })
            .collect();
        builder = builder.add_source(config::Environment::default().separator("__").source(Some(calls_env)));
        let gateway_env = config::Environment::with_prefix("GATEWAY")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("sfu.embedded.public_ips")
            .with_list_parse_key("webhooks.urls")
            .source(Some(env.into_iter().collect()));
        builder = builder.add_source(gateway_env);
        let loaded = builder.build().map_err(|e| ConfigError::Load(e.to_string()))?;
        let config: Config = loaded.try_deserialize().map_err(|e| ConfigError::Load(e.to_string()))?;
        Ok(config)
    }

    /// Checks ranges, port clashes and required files. Pipeline fragments are checked by
    /// [`crate::media::fragments::Fragments::load`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let timeout_range = |key: &str, value: Duration, min: Duration, max: Duration| {
            if value < min || value > max {
                Err(ConfigError::invalid(
                    key,
                    format!("{value:?} is out of range ({min:?} to {max:?})"),
                ))
            } else {
                Ok(())
            }
        };
        timeout_range(
            "supervisor.drain_timeout",
            self.supervisor.drain_timeout,
            Duration::ZERO,
            Duration::from_secs(3600),
        )?;
        timeout_range(
            "sfu.request_timeout",
            self.sfu.request_timeout,
            Duration::from_millis(100),
            Duration::from_secs(120),
        )?;
        timeout_range(
            "sfu.embedded.track_idle_timeout",
            self.sfu.embedded.track_idle_timeout,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        if self.supervisor.capacity == 0 {
            return Err(ConfigError::invalid("supervisor.capacity", "must be at least 1"));
        }
        if self.supervisor.max_sessions == 0 {
            return Err(ConfigError::invalid("supervisor.max_sessions", "must be at least 1"));
        }
        if !matches!(self.log.level.trim(), "") {
            tracing_subscriber::EnvFilter::try_new(&self.log.level)
                .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?;
        }
        if self.sfu.effective_mode() == SfuMode::Cloudflare {
            if self.sfu.app_id.is_empty() {
                return Err(ConfigError::invalid(
                    "sfu.app_id",
                    "required when sfu.mode = \"cloudflare\"",
                ));
            }
            if self.sfu.app_secret.is_empty() {
                return Err(ConfigError::invalid(
                    "sfu.app_secret",
                    "required when sfu.mode = \"cloudflare\"",
                ));
            }
        }
        if !(self.sfu.api_url.starts_with("https://") || self.sfu.api_url.starts_with("http://")) {
            return Err(ConfigError::invalid(
                "sfu.api_url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.sfu.effective_mode() == SfuMode::Embedded
            && self.sfu.embedded.udp.ip().is_unspecified()
            && self.sfu.embedded.public_ips.is_empty()
        {
            return Err(ConfigError::invalid(
                "sfu.embedded.public_ips",
                "must list the addresses clients reach when sfu.embedded.udp is a wildcard address",
            ));
        }
        timeout_range(
            "rtmp.reconnect_grace",
            self.rtmp.reconnect_grace,
            Duration::ZERO,
            Duration::from_secs(600),
        )?;
        timeout_range(
            "rtmp.handshake_timeout",
            self.rtmp.handshake_timeout,
            Duration::from_millis(100),
            Duration::from_secs(60),
        )?;
        timeout_range(
            "rtmp.idle_timeout",
            self.rtmp.idle_timeout,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?;
        if self.rtmp.enabled && self.rtmp.rtmps() {
            crate::ingress::rtmp::tls::server_config(&self.rtmp.tls_cert, &self.rtmp.tls_key)?;
        }
        let valid_name = |s: &str| {
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !valid_name(&self.rtmp.app) {
            return Err(ConfigError::invalid(
                "rtmp.app",
                "must be 1-64 letters, digits, '-' or '_'",
            ));
        }
        for (i, ingress) in self.ingresses.iter().enumerate() {
            if !valid_name(&ingress.name) {
                return Err(ConfigError::invalid(
                    format!("ingresses[{i}].name"),
                    "must be 1-64 letters, digits, '-' or '_'",
                ));
            }
            if ingress.stream_key.expose().len() < 16 {
                return Err(ConfigError::invalid(
                    format!("ingresses[{i}].stream_key"),
                    "must be at least 16 characters",
                ));
            }
            if !(1..=3).contains(&ingress.layers) {
                return Err(ConfigError::invalid(
                    format!("ingresses[{i}].layers"),
                    "must be 1, 2 or 3",
                ));
            }
            if ingress.video_codec == crate::ingress::store::VideoCodec::Vp8
                && ingress.video_mode != crate::ingress::store::VideoMode::Transcode
            {
                return Err(ConfigError::invalid(
                    format!("ingresses[{i}].video_codec"),
                    "vp8 needs video_mode = \"transcode\"",
                ));
            }
            if self.ingresses[..i].iter().any(|o| o.stream_key == ingress.stream_key) {
                return Err(ConfigError::invalid(
                    format!("ingresses[{i}].stream_key"),
                    "is the same as another ingress's",
                ));
            }
        }
        for (i, url) in self.webhooks.urls.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    format!("webhooks.urls[{i}]"),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if !self.webhooks.urls.is_empty() && self.webhooks.secret.is_empty() {
            return Err(ConfigError::invalid(
                "webhooks.secret",
                "required when webhooks.urls is set",
            ));
        }
        if self.webhooks.max_attempts == 0 || self.webhooks.queue == 0 {
            return Err(ConfigError::invalid(
                "webhooks",
                "max_attempts and queue must be at least 1",
            ));
        }
        if self.egress.jitter > Duration::from_secs(1) {
            return Err(ConfigError::invalid("egress.jitter", "must be at most 1 s"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.egress.retry_max_backoff) {
            return Err(ConfigError::invalid(
                "egress.retry_max_backoff",
                "must be between 1 s and 1 h",
            ));
        }
        if !self.egress.recordings_dir.as_os_str().is_empty() && !self.egress.recordings_dir.is_dir() {
            return Err(ConfigError::invalid(
                "egress.recordings_dir",
                format!("directory {} does not exist", self.egress.recordings_dir.display()),
            ));
        }
        if !self.egress.tls_ca_file.as_os_str().is_empty() {
            crate::egress::rtmp_out::tls_config(Some(&self.egress.tls_ca_file))?;
        }
        let resolver = &self.rooms.resolver_url;
        if !(resolver.is_empty() || resolver.starts_with("http://") || resolver.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "rooms.resolver_url",
                "must be an http:// or https:// URL",
            ));
        }
        self.sip.validate()?;
        self.check_port_clashes()?;
        if let Some(dir) = &self.pipelines.dir {
            if !dir.is_dir() {
                return Err(ConfigError::invalid(
                    "pipelines.dir",
                    format!("directory {} does not exist", dir.display()),
                ));
            }
        }
        Ok(())
    }

    fn check_port_clashes(&self) -> Result<(), ConfigError> {
        let mut tcp: Vec<(&str, SocketAddr)> = vec![("api.listen", self.api.listen)];
        if self.rtmp.enabled {
            tcp.push(("rtmp.listen", self.rtmp.listen));
            if self.rtmp.rtmps() {
                tcp.push(("rtmp.rtmps_listen", self.rtmp.rtmps_listen));
            }
        }
        if self.sip.enabled {
            tcp.push(("sip.listen", self.sip.listen));
            if !self.sip.tls_cert.is_empty() {
                tcp.push(("sip.tls_listen", self.sip.tls_listen));
            }
        }
        if self.sfu.effective_mode() == SfuMode::Embedded {
            tcp.push(("sfu.embedded.listen", self.sfu.embedded.listen));
        }
        for (i, (key_a, a)) in tcp.iter().enumerate() {
            for (key_b, b) in &tcp[i + 1..] {
                let same_ip = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
                if a.port() != 0 && a.port() == b.port() && same_ip {
                    return Err(ConfigError::invalid(
                        *key_b,
                        format!("port {} is already used by `{key_a}`", b.port()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted (for `check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        config.validate().unwrap();
        assert_eq!(config.api.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.supervisor.drain_timeout, Duration::from_secs(30));
        assert_eq!(config.sfu.effective_mode(), SfuMode::Embedded);
        assert_eq!(config.sfu.embedded.listen, "127.0.0.1:8788".parse().unwrap());
        assert_eq!(config.sfu.embedded.track_idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "[api]\nlisten = \"127.0.0.1:9000\"\n[supervisor]\ndrain_timeout = \"5s\"\n[sfu]\napp_id = \"from-file\"\n",
        );
        let config = Config::load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(config.api.listen.port(), 9000);
        assert_eq!(config.supervisor.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.sfu.app_id, "from-file");

        let config = Config::load_with_env(
            Some(&path),
            env(&[
                ("GATEWAY__API__LISTEN", "127.0.0.1:9100"),
                ("GATEWAY__SFU__EMBEDDED__PUBLIC_IPS", "127.0.0.1,::1"),
                ("CALLS_APP_ID", "from-calls-env"),
                ("CALLS_APP_SECRET", "s3cr3t-app-secret"),
            ]),
        )
        .unwrap();
        assert_eq!(config.api.listen.port(), 9100);
        assert_eq!(config.supervisor.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.sfu.app_id, "from-calls-env");
        assert_eq!(config.sfu.app_secret.expose(), "s3cr3t-app-secret");
        assert_eq!(config.sfu.effective_mode(), SfuMode::Cloudflare);
        assert_eq!(config.sfu.embedded.public_ips.len(), 2);

        let config = Config::load_with_env(
            Some(&path),
            env(&[
                ("CALLS_APP_ID", "from-calls-env"),
                ("GATEWAY__SFU__APP_ID", "from-gateway-env"),
            ]),
        )
        .unwrap();
        assert_eq!(config.sfu.app_id, "from-gateway-env");
    }

    #[test]
    fn example_file_lists_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.example.toml");
        let example = Config::load_with_env(Some(&path), env(&[])).unwrap();
        example.validate().unwrap();
        let defaults = Config::default();
        assert_eq!(example.to_redacted_toml(), defaults.to_redacted_toml());
        let text = std::fs::read_to_string(&path).unwrap();
        let rendered: toml::Table = toml::from_str(&defaults.to_redacted_toml()).unwrap();
        fn walk(prefix: &str, table: &toml::Table, text: &str) {
            for (key, value) in table {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match value.as_table() {
                    Some(inner) => {
                        assert!(text.contains(&format!("[{path}]")), "example lacks [{path}]");
                        walk(&path, inner, text);
                    }
                    None => assert!(text.contains(&format!("{key} =")), "example lacks {path}"),
                }
            }
        }
        walk("", &rendered, &text);
    }

    #[test]
    fn redacted_toml_hides_secrets() {
        let config = Config::load_with_env(
            None,
            env(&[
                ("CALLS_APP_SECRET", "s3cr3t-app-secret"),
                ("GATEWAY__API__TOKEN", "tok-123456"),
            ]),
        )
        .unwrap();
        let text = config.to_redacted_toml();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("tok-123456"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("[api]\nlisten = \"127.0.0.1:70000\"\n", "api.listen"),
            ("[supervisor]\nmax_sessions = \"many\"\n", "supervisor.max_sessions"),
            ("[supervisor]\ndrain_timeout = \"2h\"\n", "supervisor.drain_timeout"),
            ("[sfu.embedded]\nlisten = \"127.0.0.1:8080\"\n", "sfu.embedded.listen"),
            ("[pipelines]\ndir = \"/nonexistent/pipelines\"\n", "pipelines.dir"),
            ("[sfu]\nmode = \"cloudflare\"\n", "sfu.app_id"),
            ("[sfu.embedded]\nudp = \"0.0.0.0:8789\"\n", "sfu.embedded.public_ips"),
            ("[rtmp]\nlisten = \"127.0.0.1:8080\"\n", "rtmp.listen"),
            ("[egress]\njitter = \"2s\"\n", "egress.jitter"),
            ("[egress]\nretry_max_backoff = \"100ms\"\n", "egress.retry_max_backoff"),
            (
                "[[ingresses]]\nname = \"a b\"\nstream_key = \"0123456789abcdef\"\n",
                "ingresses[0].name",
            ),
            (
                "[[ingresses]]\nname = \"ab\"\nstream_key = \"short\"\n",
                "ingresses[0].stream_key",
            ),
        ];
        for (text, key) in cases {
            let path = write(&dir, text);
            let err = Config::load_with_env(Some(&path), env(&[]))
                .and_then(|c| c.validate().map(|_| c))
                .expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }
}
