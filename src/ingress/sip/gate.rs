//! Who may call in (sans-IO): scanner user agents, the INVITE rate per source, trunks by source address
//! and digest authentication with single-use nonces.

use crate::config::{Cidr, SipConfig, TrunkConfig};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Nonces outstanding at most; beyond it the oldest are forgotten (a flood cannot grow memory).
const MAX_NONCES: usize = 10_000;
/// Sources tracked by the rate limiter at most.
const MAX_SOURCES: usize = 10_000;

/// A digest response as the caller sent it.
#[derive(Debug, Clone)]
pub struct DigestAnswer {
    /// The username.
    pub username: String,
    /// The realm.
    pub realm: String,
    /// The nonce it answers.
    pub nonce: String,
    /// Whether the response matches the password of `username` (checked by the caller with the trunk's
    /// password, see [`Gate::password_of`]).
    pub valid_for: Option<String>,
}

/// The decision on a new INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it in, through this trunk (`None`: no trunk is configured and the source is loopback).
    Admit(Option<String>),
    /// Answer 401 with this nonce (`stale`: the previous one expired).
    Challenge {
        /// The new nonce.
        nonce: String,
        /// Whether the credentials were right but the nonce had expired.
        stale: bool,
    },
    /// Answer 403.
    Forbidden(&'static str),
}

struct Trunk {
    config: TrunkConfig,
    allow: Vec<Cidr>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The state of admission: trunks, nonces, rate buckets.
pub struct Gate {
    trunks: Vec<Trunk>,
    nonce_ttl: Duration,
    nonces: HashMap<String, Instant>,
    rate: f64,
    buckets: HashMap<IpAddr, Bucket>,
    blocked: Vec<String>,
}

impl Gate {
    /// A gate for the `[sip]` configuration.
    pub fn new(config: &SipConfig) -> Self {
        Self {
            // A trunk with only an address is for dial-out; it admits nobody.
            trunks: config
                .trunks
                .iter()
                .filter(|t| !t.allow.is_empty() || !t.username.is_empty() || t.address.is_empty())
                .map(|t| Trunk {
                    allow: t.allow.iter().filter_map(|a| Cidr::parse(a)).collect(),
                    config: t.clone(),
                })
                .collect(),
            nonce_ttl: config.nonce_ttl,
            nonces: HashMap::new(),
            rate: f64::from(config.invite_rate),
            buckets: HashMap::new(),
            blocked: config
                .blocked_user_agents
                .iter()
                .map(|u| u.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a User-Agent belongs to a known scanner.
    pub fn is_scanner(&self, user_agent: &str) -> bool {
        let ua = user_agent.to_ascii_lowercase();
        self.blocked.iter().any(|b| !b.is_empty() && ua.contains(b.as_str()))
    }

    /// Takes one INVITE from `source` out of its bucket; false when the source is over its rate.
    pub fn take_invite(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&source) {
            let rate = self.rate;
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() * rate < 2.0 * rate);
        }
        let burst = 2.0 * self.rate;
        let bucket = self.buckets.entry(source).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The password of the trunk whose username is `username`, for checking a digest response.
    pub fn password_of(&self, username: &str) -> Option<&str> {
        self.trunks
            .iter()
            .find(|t| !t.config.username.is_empty() && t.config.username == username)
            .map(|t| t.config.password.expose().as_str())
    }

    /// Decides on a new INVITE from `source`, with the caller's digest answer if it sent one.
    pub fn admit(&mut self, source: IpAddr, digest: Option<&DigestAnswer>, now: Instant) -> Verdict {
        if self.trunks.is_empty() {
            return if source.is_loopback() {
                Verdict::Admit(None)
            } else {
                Verdict::Forbidden("no trunk is configured; only loopback may call")
            };
        }
        let by_source: Vec<&Trunk> = self
            .trunks
            .iter()
            .filter(|t| t.allow.is_empty() || t.allow.iter().any(|c| c.contains(source)))
            .collect();
        if by_source.is_empty() {
            return Verdict::Forbidden("source address not allowed by any trunk");
        }
        if let Some(open) = by_source.iter().find(|t| t.config.username.is_empty()) {
            return Verdict::Admit(Some(open.config.name.clone()));
        }
        let Some(answer) = digest else {
            return self.challenge(now, false);
        };
        let issued = self.nonces.remove(&answer.nonce);
        let trunk = by_source.iter().find(|t| t.config.username == answer.username);
        let valid = trunk.is_some() && answer.valid_for.as_deref() == Some(answer.username.as_str());
        match issued {
            None => self.challenge(now, false), // unknown or already used: no replay
            Some(_) if !valid => Verdict::Forbidden("wrong digest credentials"),
            Some(at) if now.saturating_duration_since(at) > self.nonce_ttl => self.challenge(now, true),
            Some(_) => Verdict::Admit(trunk.map(|t| t.config.name.clone())),
        }
    }

    fn challenge(&mut self, now: Instant, stale: bool) -> Verdict {
        if self.nonces.len() >= MAX_NONCES {
            let ttl = self.nonce_ttl;
            self.nonces.retain(|_, at| now.saturating_duration_since(*at) <= ttl);
            if self.nonces.len() >= MAX_NONCES {
                if let Some(oldest) = self.nonces.iter().min_by_key(|(_, at)| **at).map(|(n, _)| n.clone()) {
                    self.nonces.remove(&oldest);
                }
            }
        }
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        self.nonces.insert(nonce.clone(), now);
        Verdict::Challenge { nonce, stale }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Secret;

    fn config(trunks: Vec<TrunkConfig>) -> SipConfig {
        SipConfig {
            trunks,
            invite_rate: 5,
            ..SipConfig::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn answer(nonce: &str, valid: bool) -> DigestAnswer {
        DigestAnswer {
            username: "gw".into(),
            realm: "sfu-gateway".into(),
            nonce: nonce.into(),
            valid_for: valid.then(|| "gw".to_string()),
        }
    }

    #[test]
    fn without_trunks_only_loopback_calls() {
        let mut gate = Gate::new(&config(vec![]));
        let now = Instant::now();
        assert_eq!(gate.admit(ip("127.0.0.1"), None, now), Verdict::Admit(None));
        assert!(matches!(gate.admit(ip("192.0.2.1"), None, now), Verdict::Forbidden(_)));
    }

    #[test]
    fn outbound_only_trunks_admit_nobody() {
        let trunk = TrunkConfig {
            name: "out".into(),
            address: "192.0.2.9:5060".into(),
            ..Default::default()
        };
        let mut gate = Gate::new(&config(vec![trunk]));
        let now = Instant::now();
        assert_eq!(gate.admit(ip("127.0.0.1"), None, now), Verdict::Admit(None));
        assert!(matches!(gate.admit(ip("192.0.2.9"), None, now), Verdict::Forbidden(_)));
    }

    #[test]
    fn trunks_admit_by_source_address() {
        let trunk = TrunkConfig {
            name: "pbx".into(),
            allow: vec!["10.0.0.0/8".into()],
            ..Default::default()
        };
        let mut gate = Gate::new(&config(vec![trunk]));
        let now = Instant::now();
        assert_eq!(
            gate.admit(ip("10.9.8.7"), None, now),
            Verdict::Admit(Some("pbx".into()))
        );
        assert!(matches!(gate.admit(ip("127.0.0.1"), None, now), Verdict::Forbidden(_)));
    }

    #[test]
    fn digest_is_challenged_checked_and_never_replayed() {
        let trunk = TrunkConfig {
            name: "carrier".into(),
            username: "gw".into(),
            password: Secret::new("pw".to_string()),
            ..Default::default()
        };
        let mut gate = Gate::new(&config(vec![trunk]));
        assert_eq!(gate.password_of("gw"), Some("pw"));
        assert_eq!(gate.password_of("other"), None);
        let now = Instant::now();
        let Verdict::Challenge { nonce, stale: false } = gate.admit(ip("192.0.2.1"), None, now) else {
            panic!("expected a challenge")
        };
        assert_eq!(
            gate.admit(ip("192.0.2.1"), Some(&answer(&nonce, true)), now),
            Verdict::Admit(Some("carrier".into()))
        );
        // The same nonce again (a replayed INVITE): challenged anew, not admitted.
        assert!(matches!(
            gate.admit(ip("192.0.2.1"), Some(&answer(&nonce, true)), now),
            Verdict::Challenge { .. }
        ));
        // Wrong password: forbidden.
        let Verdict::Challenge { nonce, .. } = gate.admit(ip("192.0.2.1"), None, now) else {
            panic!()
        };
        assert!(matches!(
            gate.admit(ip("192.0.2.1"), Some(&answer(&nonce, false)), now),
            Verdict::Forbidden(_)
        ));
        // Expired nonce with the right password: a stale challenge.
        let Verdict::Challenge { nonce, .. } = gate.admit(ip("192.0.2.1"), None, now) else {
            panic!()
        };
        let later = now + Duration::from_secs(301);
        assert!(matches!(
            gate.admit(ip("192.0.2.1"), Some(&answer(&nonce, true)), later),
            Verdict::Challenge { stale: true, .. }
        ));
    }

    #[test]
    fn invites_are_rate_limited_per_source_and_scanners_spotted() {
        let mut gate = Gate::new(&config(vec![]));
        let now = Instant::now();
        let admitted = (0..100).filter(|_| gate.take_invite(ip("127.0.0.1"), now)).count();
        assert_eq!(admitted, 10, "a burst of twice the rate");
        assert!(gate.take_invite(ip("127.0.0.2"), now), "other sources are not affected");
        assert!(!gate.take_invite(ip("127.0.0.1"), now + Duration::from_millis(100)));
        assert!(
            gate.take_invite(ip("127.0.0.1"), now + Duration::from_millis(250)),
            "tokens come back"
        );
        assert!(gate.is_scanner("friendly-scanner 1.0"));
        assert!(gate.is_scanner("SIPVicious/0.3"));
        assert!(!gate.is_scanner("baresip v1.0.0"));
    }
}
