//! SDP offer/answer for the phone leg (RFC 3264, RFC 4566): one audio stream over plain RTP.

use super::srtp::{MasterKey, Suite};
use crate::config::SrtpPolicy;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// A codec the phone leg can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneCodec {
    /// G.711 µ-law, 8 kHz.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
    /// G.722 wideband: 16 kHz audio, 8 kHz RTP clock (RFC 3551).
    G722,
    /// Opus (48 kHz RTP clock), narrowband to fullband.
    Opus,
}

impl PhoneCodec {
    /// The SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            PhoneCodec::Pcmu => "PCMU",
            PhoneCodec::Pcma => "PCMA",
            PhoneCodec::G722 => "G722",
            PhoneCodec::Opus => "opus",
        }
    }

    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            PhoneCodec::Pcmu | PhoneCodec::Pcma | PhoneCodec::G722 => 8_000,
            PhoneCodec::Opus => 48_000,
        }
    }

    /// The sample rate the gateway works at for this leg.
    pub fn pcm_rate(self) -> u32 {
        match self {
            PhoneCodec::Pcmu | PhoneCodec::Pcma => 8_000,
            PhoneCodec::G722 => 16_000,
            PhoneCodec::Opus => 48_000,
        }
    }

    fn static_pt(self) -> Option<u8> {
        match self {
            PhoneCodec::Pcmu => Some(0),
            PhoneCodec::Pcma => Some(8),
            PhoneCodec::G722 => Some(9),
            PhoneCodec::Opus => None,
        }
    }
}

/// Media direction (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// The SDP's author only sends.
    SendOnly,
    /// The SDP's author only receives.
    RecvOnly,
    /// No media (hold).
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction of an answer to an offer with this direction.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// Whether the remote side (author of an SDP with this direction) sends media.
    pub fn remote_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the remote side (author of an SDP with this direction) receives media.
    pub fn remote_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One payload type of an audio m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// Payload type.
    pub pt: u8,
    /// Encoding name as written.
    pub name: String,
    /// Clock rate.
    pub rate: u32,
}

/// The audio stream a remote SDP describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAudio {
    /// Where to send RTP (port 0: stream rejected).
    pub addr: SocketAddr,
    /// Offered formats in order of preference.
    pub formats: Vec<Format>,
    /// Direction.
    pub direction: Direction,
    /// Packetisation time in ms, if given.
    pub ptime: Option<u32>,
    /// Whether the profile is secure RTP (`RTP/SAVP`).
    pub srtp: bool,
    /// The `a=crypto` lines of supported suites with valid keys, in the offer's order.
    pub crypto: Vec<Crypto>,
}

/// One `a=crypto` line (RFC 4568): tag, suite and the sender's master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crypto {
    /// The tag, echoed in the answer.
    pub tag: u32,
    /// The suite.
    pub suite: Suite,
    /// The key the line's author encrypts with.
    pub key: MasterKey,
}

/// The outcome of negotiating a remote audio description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec chosen.
    pub codec: PhoneCodec,
    /// Its payload type.
    pub pt: u8,
    /// The telephone-event payload type, if both sides do RFC 4733.
    pub dtmf_pt: Option<u8>,
    /// Packetisation time in ms.
    pub ptime: u32,
    /// SDES-SRTP: the remote's crypto line chosen (its tag and suite are answered with the gateway's key).
    pub srtp: Option<Crypto>,
}

/// Why an SDP cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Syntax or a missing mandatory line.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No audio codec in common (SIP 488).
    #[error("no supported audio codec offered")]
    NoCommonCodec,
    /// The offer's media security does not fit the `sip.srtp` policy (SIP 488).
    #[error("media security not acceptable: {0}")]
    Security(&'static str),
}

/// Parses the first audio stream of an SDP.
pub fn parse(sdp: &str) -> Result<RemoteAudio, SdpError> {
    let malformed = |what: &str| SdpError::Malformed(what.to_string());
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut session_direction = Direction::SendRecv;
    let mut audio: Option<(u16, Vec<u8>, bool)> = None;
    let mut in_audio = false;
    let mut seen_media = false;
    let mut rtpmaps: Vec<(u8, String, u32)> = Vec::new();
    let mut direction: Option<Direction> = None;
    let mut ptime = None;
    let mut crypto = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        let Some((kind, value)) = line.split_once('=') else {
            if line.is_empty() {
                continue;
            }
            return Err(malformed("a line without '='"));
        };
        match kind {
            "m" => {
                if in_audio {
                    break; // only the first audio stream is used
                }
                seen_media = true;
                let mut parts = value.split_whitespace();
                let media = parts.next().unwrap_or_default();
                let port: u16 = parts
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| malformed("m= line without a port"))?;
                let profile = parts.next().unwrap_or_default();
                if media == "audio" && profile.starts_with("RTP/") {
                    let pts = parts.filter_map(|p| p.parse().ok()).collect();
                    audio = Some((port, pts, profile.contains("SAVP")));
                    in_audio = true;
                }
            }
            "c" => {
                let ip = value
                    .split_whitespace()
                    .nth(2)
                    .and_then(|a| a.split('/').next())
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| malformed("c= line without an address"))?;
                if seen_media {
                    if in_audio {
                        media_ip = Some(ip);
                    }
                } else {
                    session_ip = Some(ip);
                }
            }
            "a" if !seen_media || in_audio => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                let parsed = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                if let Some(d) = parsed {
                    if in_audio {
                        direction = Some(d);
                    } else {
                        session_direction = d;
                    }
                } else if name == "rtpmap" && in_audio {
                    let (pt, encoding) = arg.split_once(' ').ok_or_else(|| malformed("a=rtpmap"))?;
                    let mut enc = encoding.split('/');
                    let name = enc.next().unwrap_or_default().to_string();
                    let rate = enc.next().and_then(|r| r.parse().ok()).unwrap_or(8_000);
                    let pt = pt.parse().map_err(|_| malformed("a=rtpmap payload type"))?;
                    rtpmaps.push((pt, name, rate));
                } else if name == "ptime" && in_audio {
                    ptime = arg.trim().parse().ok().filter(|p| (10..=120).contains(p));
                } else if name == "crypto" && in_audio {
                    crypto.extend(parse_crypto(arg));
                }
            }
            _ => {}
        }
    }
    let (port, pts, srtp) = audio.ok_or_else(|| malformed("no audio stream"))?;
    let ip = media_ip
        .or(session_ip)
        .ok_or_else(|| malformed("no connection address"))?;
    let formats = pts
        .into_iter()
        .filter_map(|pt| {
            let mapped = rtpmaps.iter().find(|(p, ..)| *p == pt);
            match (mapped, pt) {
                (Some((_, name, rate)), _) => Some(Format {
                    pt,
                    name: name.clone(),
                    rate: *rate,
                }),
                (None, 0) => Some(Format {
                    pt,
                    name: "PCMU".into(),
                    rate: 8_000,
                }),
                (None, 8) => Some(Format {
                    pt,
                    name: "PCMA".into(),
                    rate: 8_000,
                }),
                (None, 9) => Some(Format {
                    pt,
                    name: "G722".into(),
                    rate: 8_000,
                }),
                _ => None,
            }
        })
        .collect();
    Ok(RemoteAudio {
        addr: SocketAddr::new(ip, port),
        formats,
        direction: direction.unwrap_or(session_direction),
        ptime,
        srtp,
        crypto,
    })
}

/// `<tag> <suite> <key-params> [session-params]`; `None` for an unsupported suite or a bad key.
fn parse_crypto(arg: &str) -> Option<Crypto> {
    let mut parts = arg.split_whitespace();
    let tag = parts.next()?.parse().ok()?;
    let suite = Suite::from_name(parts.next()?)?;
    let key = MasterKey::from_params(parts.next()?).ok()?;
    // Session parameters (UNENCRYPTED_SRTP, KDR, …) change the transform: not supported.
    if parts.next().is_some() {
        return None;
    }
    Some(Crypto { tag, suite, key })
}

/// Picks the codec for a remote description (the remote's first supported format wins) and, for
/// `RTP/SAVP`, its first supported crypto line, within the SRTP `policy`.
pub fn negotiate(remote: &RemoteAudio, allowed: &[PhoneCodec], policy: SrtpPolicy) -> Result<Negotiated, SdpError> {
    let srtp = match (remote.srtp, policy) {
        (true, SrtpPolicy::Off) => return Err(SdpError::Security("SRTP is turned off")),
        (false, SrtpPolicy::Required) => return Err(SdpError::Security("SRTP is required")),
        (true, _) => Some(
            *remote
                .crypto
                .first()
                .ok_or(SdpError::Security("no supported SRTP crypto suite"))?,
        ),
        (false, _) => None,
    };
    let (codec, pt) = remote
        .formats
        .iter()
        .find_map(|f| {
            allowed
                .iter()
                .find(|c| f.name.eq_ignore_ascii_case(c.name()) && f.rate == c.clock_rate())
                .map(|c| (*c, f.pt))
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let dtmf_pt = remote
        .formats
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("telephone-event") && f.rate == 8_000)
        .map(|f| f.pt);
    Ok(Negotiated {
        codec,
        pt,
        dtmf_pt,
        ptime: remote.ptime.unwrap_or(20),
        srtp,
    })
}

/// The gateway's side of a session description.
#[derive(Debug, Clone)]
pub struct LocalAudio {
    /// Session id and version (`o=` line), increase the version on each change.
    pub session_id: u64,
    /// Version of the description.
    pub version: u64,
    /// Address the RTP socket is reachable at.
    pub addr: SocketAddr,
    /// Direction written.
    pub direction: Direction,
    /// The key the gateway encrypts with when the leg uses SRTP.
    pub key: MasterKey,
}

/// Writes an answer carrying exactly the negotiated codec (and telephone-event).
pub fn answer(local: &LocalAudio, chosen: &Negotiated) -> String {
    let mut sdp = header(
        local,
        &[(chosen.pt, chosen.codec)],
        chosen.dtmf_pt,
        chosen.srtp.is_some(),
    );
    let _ = write!(sdp, "a=ptime:{}\r\n", chosen.ptime);
    if let Some(crypto) = chosen.srtp {
        let _ = write!(
            sdp,
            "a=crypto:{} {} {}\r\n",
            crypto.tag,
            crypto.suite.name(),
            local.key.to_params()
        );
    }
    sdp
}

/// Writes an offer of every allowed codec (static payload types where they exist, 96+ otherwise), with
/// telephone-event on 101; with `srtp`, as `RTP/SAVP` with one crypto line of that suite and the gateway's key.
pub fn offer(local: &LocalAudio, allowed: &[PhoneCodec], srtp: Option<Suite>) -> String {
    let mut next_dynamic = 96;
    let formats: Vec<(u8, PhoneCodec)> = allowed
        .iter()
        .map(|c| {
            let pt = c.static_pt().unwrap_or_else(|| {
                next_dynamic += 1;
                next_dynamic - 1
            });
            (pt, *c)
        })
        .collect();
    let mut sdp = header(local, &formats, Some(101), srtp.is_some());
    sdp.push_str("a=ptime:20\r\n");
    if let Some(suite) = srtp {
        let _ = write!(sdp, "a=crypto:1 {} {}\r\n", suite.name(), local.key.to_params());
    }
    sdp
}

fn header(local: &LocalAudio, formats: &[(u8, PhoneCodec)], dtmf_pt: Option<u8>, srtp: bool) -> String {
    let family = if local.addr.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.addr.ip();
    let mut sdp = format!(
        "v=0\r\no=sfu-gateway {} {} IN {family} {ip}\r\ns=sfu-gateway\r\nc=IN {family} {ip}\r\nt=0 0\r\n",
        local.session_id, local.version
    );
    let mut pts: Vec<String> = formats.iter().map(|(pt, _)| pt.to_string()).collect();
    pts.extend(dtmf_pt.map(|pt| pt.to_string()));
    let profile = if srtp { "RTP/SAVP" } else { "RTP/AVP" };
    let _ = write!(sdp, "m=audio {} {profile} {}\r\n", local.addr.port(), pts.join(" "));
    for (pt, codec) in formats {
        match codec {
            PhoneCodec::Opus => {
                let _ = write!(sdp, "a=rtpmap:{pt} opus/48000/2\r\na=fmtp:{pt} useinbandfec=1\r\n");
            }
            other => {
                let _ = write!(sdp, "a=rtpmap:{pt} {}/8000\r\n", other.name());
            }
        }
    }
    if let Some(pt) = dtmf_pt {
        let _ = write!(sdp, "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n");
    }
    let _ = write!(sdp, "a={}\r\n", local.direction.attribute());
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
        t=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-11,16\r\n";

    #[test]
    fn parses_an_offer_and_picks_the_first_supported_codec() {
        let remote = parse(SIPP_OFFER).unwrap();
        assert_eq!(remote.addr, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(remote.direction, Direction::SendRecv);
        let chosen = negotiate(&remote, &[PhoneCodec::Pcmu, PhoneCodec::Pcma], SrtpPolicy::Optional).unwrap();
        assert_eq!(
            chosen,
            Negotiated {
                codec: PhoneCodec::Pcma,
                pt: 8,
                dtmf_pt: Some(101),
                ptime: 20,
                srtp: None,
            }
        );
    }

    #[test]
    fn static_payload_types_need_no_rtpmap_and_media_lines_override_session_lines() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=sendonly\r\n\
                   m=audio 4000 RTP/AVP 18 0\r\nc=IN IP4 127.0.0.2\r\na=ptime:30\r\n\
                   m=video 5000 RTP/AVP 96\r\nc=IN IP4 10.9.9.9\r\na=recvonly\r\n";
        let remote = parse(sdp).unwrap();
        assert_eq!(remote.addr, "127.0.0.2:4000".parse().unwrap());
        assert_eq!(remote.direction, Direction::SendOnly, "session-level direction applies");
        let chosen = negotiate(&remote, &[PhoneCodec::Pcmu], SrtpPolicy::Optional).unwrap();
        assert_eq!(
            (chosen.codec, chosen.pt, chosen.ptime, chosen.dtmf_pt),
            (PhoneCodec::Pcmu, 0, 30, None)
        );
    }

    #[test]
    fn unsupported_codecs_have_no_common_codec() {
        let g729 = SIPP_OFFER
            .replace("RTP/AVP 8 101", "RTP/AVP 18")
            .replace("a=rtpmap:8 PCMA/8000\r\n", "");
        assert_eq!(
            negotiate(&parse(&g729).unwrap(), &[PhoneCodec::Pcma], SrtpPolicy::Optional),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn srtp_offers_are_answered_with_the_gateways_key_within_the_policy() {
        let key = MasterKey::random();
        let savp = SIPP_OFFER.replace("RTP/AVP", "RTP/SAVP").replace(
            "a=fmtp:101 0-11,16\r\n",
            &format!(
                "a=fmtp:101 0-11,16\r\na=crypto:1 AES_CM_256_HMAC_SHA1_80 inline:AAAA\r\n\
                 a=crypto:2 AES_CM_128_HMAC_SHA1_32 {}|2^31\r\n",
                key.to_params()
            ),
        );
        let remote = parse(&savp).unwrap();
        assert_eq!(remote.crypto.len(), 1, "the unsupported suite is skipped");
        let chosen = negotiate(&remote, &[PhoneCodec::Pcma], SrtpPolicy::Optional).unwrap();
        let crypto = chosen.srtp.unwrap();
        assert_eq!(
            (crypto.tag, crypto.suite, crypto.key),
            (2, Suite::AesCm128HmacSha1_32, key)
        );
        let local = local(Direction::SendRecv);
        let text = answer(&local, &chosen);
        assert!(text.contains("m=audio 10002 RTP/SAVP 8 101\r\n"), "{text}");
        let back = parse(&text).unwrap();
        assert_eq!(back.crypto[0].tag, 2);
        assert_eq!(back.crypto[0].key, local.key);
        assert_eq!(
            negotiate(&remote, &[PhoneCodec::Pcma], SrtpPolicy::Off),
            Err(SdpError::Security("SRTP is turned off"))
        );
        let plain = parse(SIPP_OFFER).unwrap();
        assert_eq!(
            negotiate(&plain, &[PhoneCodec::Pcma], SrtpPolicy::Required),
            Err(SdpError::Security("SRTP is required"))
        );
        let keyless = parse(&SIPP_OFFER.replace("RTP/AVP", "RTP/SAVP")).unwrap();
        assert_eq!(
            negotiate(&keyless, &[PhoneCodec::Pcma], SrtpPolicy::Optional),
            Err(SdpError::Security("no supported SRTP crypto suite"))
        );
    }

    #[test]
    fn malformed_sdp_is_an_error_not_a_panic() {
        for bad in [
            "",
            "garbage",
            "v=0\r\nm=audio x RTP/AVP 0\r\n",
            "v=0\r\nm=audio 5 RTP/AVP 0\r\n",
            "c=IN IP4\r\n",
        ] {
            assert!(matches!(parse(bad), Err(SdpError::Malformed(_))), "{bad:?}");
        }
        assert!(parse("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 0\r\na=rtpmap:zz\r\n").is_err());
    }

    /// The gateway's side on 127.0.0.1:10002, with a fresh key.
    fn local(direction: Direction) -> LocalAudio {
        LocalAudio {
            session_id: 7,
            version: 1,
            addr: "127.0.0.1:10002".parse().unwrap(),
            direction,
            key: MasterKey::random(),
        }
    }

    #[test]
    fn the_answer_round_trips_through_the_parser() {
        let local = local(Direction::RecvOnly);
        let remote = parse(SIPP_OFFER).unwrap();
        let chosen = negotiate(&remote, &[PhoneCodec::Pcma], SrtpPolicy::Optional).unwrap();
        let text = answer(&local, &chosen);
        let back = parse(&text).unwrap();
        assert_eq!(back.addr, local.addr);
        assert_eq!(back.direction, Direction::RecvOnly);
        assert_eq!(back.formats.len(), 2);
        assert_eq!(
            negotiate(&back, &[PhoneCodec::Pcma], SrtpPolicy::Optional).unwrap(),
            chosen
        );
        let secure = parse(&offer(&local, &[PhoneCodec::Pcma], Some(Suite::AesCm128HmacSha1_80))).unwrap();
        assert!(secure.srtp);
        assert_eq!(
            (secure.crypto[0].tag, secure.crypto[0].suite, secure.crypto[0].key),
            (1, Suite::AesCm128HmacSha1_80, local.key)
        );
        let offered = parse(&offer(&local, &[PhoneCodec::Opus, PhoneCodec::Pcmu], None)).unwrap();
        let names: Vec<_> = offered
            .formats
            .iter()
            .map(|f| (f.pt, f.name.as_str(), f.rate))
            .collect();
        assert_eq!(
            names,
            [
                (96, "opus", 48_000),
                (0, "PCMU", 8_000),
                (101, "telephone-event", 8_000)
            ]
        );
    }
}
