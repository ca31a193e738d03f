//! `[sip]`: the SIP user agent, its trunks and its dispatch rules.

use super::ConfigError;
use crate::redact::Secret;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Whether the phone leg may or must use SDES-SRTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    /// Plain RTP only.
    Off,
    /// SRTP when the phone offers it, else plain RTP.
    #[default]
    Optional,
    /// SRTP only.
    Required,
}

/// `[sip]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Whether the SIP user agent runs.
    pub enabled: bool,
    /// UDP and TCP listener.
    pub listen: SocketAddr,
    /// SIP over TLS listener, used when `tls_cert` and `tls_key` are set.
    pub tls_listen: SocketAddr,
    /// PEM certificate chain for SIP over TLS; empty: no TLS.
    pub tls_cert: String,
    /// PEM private key for SIP over TLS.
    pub tls_key: String,
    /// Address written in Contact and SDP; empty: the listener's address (or the first non-loopback IPv4
    /// when it is a wildcard).
    pub public_ip: String,
    /// First RTP port of the phone legs.
    pub rtp_port_min: u16,
    /// Last RTP port of the phone legs.
    pub rtp_port_max: u16,
    /// No RTP from a phone for this long (not on hold) ends the call with BYE.
    #[serde(with = "humantime_serde")]
    pub rtp_timeout: Duration,
    /// Codecs accepted on the phone leg, any of `PCMU`, `PCMA`, `G722`, `opus`.
    pub codecs: Vec<String>,
    /// INVITEs per second accepted from one source address (a burst of twice as many is allowed).
    pub invite_rate: u32,
    /// Requests whose User-Agent contains one of these (case-insensitive) are dropped and counted.
    pub blocked_user_agents: Vec<String>,
    /// Realm of digest challenges.
    pub realm: String,
    /// How long a digest nonce stays valid (each is good for one request).
    #[serde(with = "humantime_serde")]
    pub nonce_ttl: Duration,
    /// Webhook asked where a call goes when no rule matches: POST `{from, to, trunk}` → `{room,
    /// participantName, metadata}`, or `{reject: 403|404|486}`. Empty: rules only.
    pub dispatch_url: String,
    /// How long a caller has to type a room's PIN.
    #[serde(with = "humantime_serde")]
    pub pin_timeout: Duration,
    /// WAV file (16-bit PCM) played to a caller who must type a PIN, and again after a wrong one; empty:
    /// short beeps.
    pub pin_prompt: String,
    /// How long an inbound call rings before it is answered (ringback for the caller; 0s: answer as soon
    /// as the SFU side is ready).
    #[serde(with = "humantime_serde")]
    pub answer_delay: Duration,
    /// Smallest session-timer interval accepted (RFC 4028 `Min-SE`); a caller asking for less gets 422.
    #[serde(with = "humantime_serde")]
    pub min_session_expires: Duration,
    /// Opus encoder complexity of the phone legs (0–10): CPU per call against quality; phone audio is
    /// narrowband, where the low settings lose little.
    pub opus_complexity: u8,
    /// SDES-SRTP on the phone leg: `optional` (used when the phone offers `RTP/SAVP` with a supported
    /// `a=crypto`), `required` (plain RTP offers get 488) or `off` (SRTP offers get 488).
    pub srtp: SrtpPolicy,
    /// Trunks: who may call in, and where dial-out goes.
    pub trunks: Vec<TrunkConfig>,
    /// Dispatch rules: called number → room, first match wins.
    pub rules: Vec<RuleConfig>,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5060),
            tls_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5061),
            tls_cert: String::new(),
            tls_key: String::new(),
            public_ip: String::new(),
            rtp_port_min: 10_000,
            rtp_port_max: 20_000,
            rtp_timeout: Duration::from_secs(30),
            codecs: vec!["opus".into(), "G722".into(), "PCMU".into(), "PCMA".into()],
            invite_rate: 20,
            blocked_user_agents: [
                "friendly-scanner",
                "sipvicious",
                "sipcli",
                "sip-scan",
                "vaxsipuseragent",
                "iwar",
                "sundayddr",
            ]
            .map(String::from)
            .to_vec(),
            realm: "sfu-gateway".into(),
            nonce_ttl: Duration::from_secs(300),
            dispatch_url: String::new(),
            pin_timeout: Duration::from_secs(20),
            pin_prompt: String::new(),
            answer_delay: Duration::ZERO,
            opus_complexity: 5,
            srtp: SrtpPolicy::Optional,
            min_session_expires: Duration::from_secs(90),
            trunks: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// `[[sip.trunks]]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrunkConfig {
    /// Unique name (used by rules and dial-out).
    pub name: String,
    /// Inbound: source addresses allowed (CIDR or single address); empty: any source that passes digest.
    pub allow: Vec<String>,
    /// Inbound digest username; empty: no digest required. Outbound: the credentials sent on 401/407.
    pub username: String,
    /// Digest password. Never logged.
    pub password: Secret,
    /// Outbound: where INVITEs go (`host:port`); empty: inbound only.
    pub address: String,
    /// Outbound transport: `udp` or `tcp`.
    pub transport: String,
    /// Outbound: the caller id (From user) used when a call gives none.
    pub caller_id: String,
    /// Outbound: offer SDES-SRTP (`RTP/SAVP` with a crypto line) on calls placed through this trunk; the
    /// answer must accept it, or the call is hung up with 488.
    pub srtp: bool,
}

/// `[[sip.rules]]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Called number: exact (`+15550100`), a prefix ending in `*` (`+1555*`), or `*` for any.
    pub to: String,
    /// The room the call joins.
    pub room: String,
    /// PIN the caller must type (DTMF, ended by `#` or the PIN's length) before joining.
    pub pin: String,
    /// Only calls that came in through this trunk match.
    pub trunk: String,
}

/// A parsed CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128` or a single address.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr.parse::<IpAddr>().ok()?, prefix.parse::<u8>().ok()?),
            None => {
                let addr = text.parse::<IpAddr>().ok()?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { network: addr, prefix })
    }

    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl SipConfig {
    /// Checks ranges, names, CIDRs and references between rules and trunks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.rtp_port_min == 0 || self.rtp_port_min > self.rtp_port_max {
            return Err(ConfigError::invalid("sip.rtp_port_min", "must be 1..=sip.rtp_port_max"));
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return Err(ConfigError::invalid("sip.tls_key", "tls_cert and tls_key go together"));
        }
        for (key, path) in [("sip.tls_cert", &self.tls_cert), ("sip.tls_key", &self.tls_key)] {
            if !path.is_empty() && !std::path::Path::new(path).is_file() {
                return Err(ConfigError::invalid(key, format!("file {path} does not exist")));
            }
        }
        if !self.public_ip.is_empty() && self.public_ip.parse::<IpAddr>().is_err() {
            return Err(ConfigError::invalid("sip.public_ip", "must be an IP address"));
        }
        if self.rtp_timeout < Duration::from_secs(1) || self.rtp_timeout > Duration::from_secs(3600) {
            return Err(ConfigError::invalid("sip.rtp_timeout", "must be 1s to 1h"));
        }
        if self.answer_delay > Duration::from_secs(60) {
            return Err(ConfigError::invalid("sip.answer_delay", "must be at most 60s"));
        }
        if self.min_session_expires < Duration::from_secs(1) || self.min_session_expires > Duration::from_secs(86_400) {
            return Err(ConfigError::invalid("sip.min_session_expires", "must be 1s to 1d"));
        }
        if self.opus_complexity > 10 {
            return Err(ConfigError::invalid("sip.opus_complexity", "must be 0 to 10"));
        }
        if self.codecs.is_empty() {
            return Err(ConfigError::invalid("sip.codecs", "must list at least one codec"));
        }
        for codec in &self.codecs {
            if !["PCMU", "PCMA", "G722", "opus"]
                .iter()
                .any(|c| c.eq_ignore_ascii_case(codec))
            {
                return Err(ConfigError::invalid("sip.codecs", format!("unknown codec {codec:?}")));
            }
        }
        if self.invite_rate == 0 {
            return Err(ConfigError::invalid("sip.invite_rate", "must be at least 1"));
        }
        let url = &self.dispatch_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "sip.dispatch_url",
                "must be an http:// or https:// URL",
            ));
        }
        for (i, trunk) in self.trunks.iter().enumerate() {
            let key = |field: &str| format!("sip.trunks[{i}].{field}");
            if trunk.name.is_empty() || self.trunks[..i].iter().any(|t| t.name == trunk.name) {
                return Err(ConfigError::invalid(key("name"), "must be set and unique"));
            }
            if let Some(bad) = trunk.allow.iter().find(|a| Cidr::parse(a).is_none()) {
                return Err(ConfigError::invalid(
                    key("allow"),
                    format!("{bad:?} is not an address or CIDR"),
                ));
            }
            if trunk.username.is_empty() != trunk.password.is_empty() {
                return Err(ConfigError::invalid(
                    key("password"),
                    "username and password go together",
                ));
            }
            if !matches!(trunk.transport.as_str(), "" | "udp" | "tcp") {
                return Err(ConfigError::invalid(key("transport"), "must be udp or tcp"));
            }
            if !trunk.address.is_empty() && !trunk.address.contains(':') {
                return Err(ConfigError::invalid(key("address"), "must be host:port"));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let key = |field: &str| format!("sip.rules[{i}].{field}");
            if rule.to.is_empty() {
                return Err(ConfigError::invalid(
                    key("to"),
                    "must be a number, a prefix ending in *, or *",
                ));
            }
            crate::rooms::validate_room_name(&rule.room)
                .map_err(|e| ConfigError::invalid(key("room"), e.to_string()))?;
            if !rule.pin.bytes().all(|b| b.is_ascii_digit()) || rule.pin.len() > 16 {
                return Err(ConfigError::invalid(key("pin"), "must be up to 16 digits"));
            }
            if !rule.trunk.is_empty() && !self.trunks.iter().any(|t| t.name == rule.trunk) {
                return Err(ConfigError::invalid(
                    key("trunk"),
                    format!("no trunk named {:?}", rule.trunk),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_match_their_addresses() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped");
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("::1/128").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "::/129", "host", "10.0.0.0/x"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        let mut config = SipConfig::default();
        config.validate().unwrap();
        config.trunks.push(TrunkConfig {
            name: "t".into(),
            allow: vec!["10.0.0.0/99".into()],
            ..Default::default()
        });
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("sip.trunks[0].allow"), "{err}");
        config.trunks[0].allow = vec!["10.0.0.0/8".into()];
        config.rules.push(RuleConfig {
            to: "+1555*".into(),
            room: "r".into(),
            trunk: "other".into(),
            ..Default::default()
        });
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("sip.rules[0].trunk"), "{err}");
        config.rules[0].trunk = "t".into();
        config.rules[0].pin = "12a".into();
        assert!(config.validate().unwrap_err().to_string().contains("sip.rules[0].pin"));
        config.rules[0].pin = "1234".into();
        config.validate().unwrap();
        config.codecs = vec!["G729".into()];
        assert!(config.validate().unwrap_err().to_string().contains("sip.codecs"));
    }
}
