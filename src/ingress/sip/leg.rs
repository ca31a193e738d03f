//! The phone leg's RTP state (sans-IO): where to send, what was negotiated, receive statistics, the
//! outgoing sequence, the DTMF digits queued for the phone, and SDES-SRTP when negotiated. The call task
//! owns the socket and feeds datagrams and ticks in.

use super::rtcp;
use super::rtp::{DtmfReceiver, RtpPacket, dtmf_payloads};
use super::sdp::{Direction, Negotiated, PhoneCodec, RemoteAudio};
use super::srtcp::Srtcp;
use super::srtp::{MasterKey, Srtp, SrtpError};
use super::store::CallStats;
use super::uplink::{Downlink, OpusFrame, Uplink, UplinkError};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

/// Milliseconds of a DTMF digit sent to the phone, and of the pause after it.
const DIGIT_MS: u16 = 120;
const PAUSE_FRAMES: usize = 3;

/// What a datagram from the phone carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Audio (its Opus frames were appended to the output).
    Audio,
    /// The start of a DTMF digit.
    Digit(char),
    /// Nothing usable (garbage, another source, a payload type we did not negotiate, RTCP).
    Ignored,
}

/// Why a leg could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LegError {
    /// The codec could not be set up.
    #[error(transparent)]
    Codec(#[from] UplinkError),
    /// The SRTP keys could not be used.
    #[error(transparent)]
    Srtp(#[from] SrtpError),
}

/// SRTP contexts: the phone's key for what it sends, the gateway's for what goes to it.
struct Secure {
    inbound: Srtp,
    outbound: Srtp,
    rtcp_in: Srtcp,
    rtcp_out: Srtcp,
}

enum Outgoing {
    Event { payload: [u8; 4], first: bool },
    Pause,
}

/// One phone leg.
pub struct Leg {
    complexity: i32,
    remote: SocketAddr,
    latched: bool,
    negotiated: Negotiated,
    remote_direction: Direction,
    uplink: Uplink,
    downlink: Downlink,
    dtmf: DtmfReceiver,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    outgoing: VecDeque<Outgoing>,
    event_timestamp: u32,
    last_seq: Option<u16>,
    transit: Option<i64>,
    jitter: f64,
    /// Receive and send figures.
    pub stats: CallStats,
    /// When the phone's last packet came.
    pub last_received: Instant,
    payload: Vec<u8>,
    local_key: MasterKey,
    secure: Option<Secure>,
    scratch: Vec<u8>,
    /// RTCP: the phone's SSRC, payload octets sent, the last sender report of the phone (its NTP middle
    /// bits and when it came), and the counts at the previous report (expected, received).
    remote_ssrc: Option<u32>,
    octets_sent: u64,
    last_sr: Option<(u32, Instant)>,
    reported: (u64, u64),
}

fn secure(negotiated: &Negotiated, local_key: &MasterKey) -> Result<Option<Secure>, SrtpError> {
    negotiated
        .srtp
        .map(|crypto| {
            Ok(Secure {
                inbound: Srtp::new(crypto.suite, &crypto.key)?,
                outbound: Srtp::new(crypto.suite, local_key)?,
                rtcp_in: Srtcp::new(&crypto.key)?,
                rtcp_out: Srtcp::new(local_key)?,
            })
        })
        .transpose()
}

impl Leg {
    /// A leg toward `remote` with what the offer/answer settled; with SRTP, the gateway encrypts with
    /// `local_key` (the key of its SDP).
    pub fn new(
        remote: &RemoteAudio,
        negotiated: Negotiated,
        now: Instant,
        complexity: i32,
        local_key: &MasterKey,
    ) -> Result<Self, LegError> {
        Ok(Self {
            local_key: *local_key,
            secure: secure(&negotiated, local_key)?,
            scratch: Vec::with_capacity(400),
            complexity,
            remote: remote.addr,
            latched: false,
            negotiated,
            remote_direction: remote.direction,
            uplink: Uplink::new(negotiated.codec, complexity)?,
            downlink: Downlink::new(negotiated.codec, complexity)?,
            dtmf: DtmfReceiver::default(),
            seq: rand::random(),
            timestamp: rand::random(),
            ssrc: rand::random(),
            outgoing: VecDeque::new(),
            event_timestamp: 0,
            last_seq: None,
            transit: None,
            jitter: 0.0,
            stats: CallStats::default(),
            last_received: now,
            payload: Vec::with_capacity(400),
            remote_ssrc: None,
            octets_sent: 0,
            last_sr: None,
            reported: (0, 0),
        })
    }

    /// The negotiated codec.
    pub fn codec(&self) -> PhoneCodec {
        self.negotiated.codec
    }

    /// What the offer/answer settled.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// Where RTP goes.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Whether the phone put the call on hold (any direction but sendrecv).
    pub fn on_hold(&self) -> bool {
        self.remote_direction != Direction::SendRecv
    }

    /// Whether the leg uses SRTP.
    pub fn is_secure(&self) -> bool {
        self.secure.is_some()
    }

    /// Applies a new description from a re-INVITE (hold, resume, new address, codec or keys).
    pub fn update(&mut self, remote: &RemoteAudio, negotiated: Negotiated, now: Instant) -> Result<(), LegError> {
        if negotiated.codec != self.negotiated.codec {
            self.uplink = Uplink::new(negotiated.codec, self.complexity)?;
            self.downlink = Downlink::new(negotiated.codec, self.complexity)?;
        }
        if negotiated.srtp != self.negotiated.srtp {
            self.secure = secure(&negotiated, &self.local_key)?;
        }
        if remote.addr != self.remote && !remote.addr.ip().is_unspecified() {
            self.remote = remote.addr;
            self.latched = false;
        }
        self.negotiated = negotiated;
        self.remote_direction = remote.direction;
        self.last_received = now;
        Ok(())
    }

    /// Takes one datagram from `from`; Opus frames for the SFU are appended to `frames`. With SRTP, only
    /// authenticated packets count (and only they can move the latch).
    pub fn receive(&mut self, data: &[u8], from: SocketAddr, now: Instant, frames: &mut Vec<OpusFrame>) -> Received {
        if self.latched && from != self.remote {
            return Received::Ignored;
        }
        let Some(secure) = self.secure.as_mut() else {
            return self.receive_plain(data, from, now, frames);
        };
        // RTCP (multiplexed or not) is not relayed; anything else must authenticate.
        if data.len() < 12 || (200..=204).contains(&data[1]) {
            return Received::Ignored;
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(data);
        let received = match secure.inbound.unprotect(&mut buf) {
            Ok(()) => self.receive_plain(&buf, from, now, frames),
            Err(e) => {
                metrics::counter!("sip_srtp_refused_total").increment(1);
                tracing::debug!(error = %e, "sip: SRTP packet refused");
                Received::Ignored
            }
        };
        self.scratch = buf;
        received
    }

    fn receive_plain(&mut self, data: &[u8], from: SocketAddr, now: Instant, frames: &mut Vec<OpusFrame>) -> Received {
        let Ok(packet) = RtpPacket::parse(data) else {
            return Received::Ignored;
        };
        let is_dtmf = Some(packet.payload_type) == self.negotiated.dtmf_pt;
        if packet.payload_type != self.negotiated.pt && !is_dtmf {
            return Received::Ignored;
        }
        // Symmetric RTP: answer where the phone really sends from (NAT).
        if !self.latched {
            self.remote = from;
            self.latched = true;
        }
        self.last_received = now;
        self.stats.packets_from_phone += 1;
        self.remote_ssrc = Some(packet.ssrc);
        if let Some(last) = self.last_seq {
            let gap = packet.seq.wrapping_sub(last);
            if gap > 1 && gap < 1_000 {
                self.stats.lost_from_phone += u64::from(gap - 1);
            }
            if gap == 0 || gap > 60_000 {
                return Received::Ignored; // duplicate or old
            }
        }
        self.last_seq = Some(packet.seq);
        if is_dtmf {
            return self
                .dtmf
                .receive(packet.timestamp, packet.payload)
                .map_or(Received::Ignored, Received::Digit);
        }
        self.update_jitter(packet.timestamp, now);
        self.uplink.push(packet.timestamp, packet.payload, frames);
        Received::Audio
    }

    fn update_jitter(&mut self, timestamp: u32, now: Instant) {
        thread_local! {
            static EPOCH: Instant = Instant::now();
        }
        let rate = f64::from(self.negotiated.codec.clock_rate());
        let arrival = EPOCH.with(|epoch| now.saturating_duration_since(*epoch).as_secs_f64() * rate) as i64;
        let transit = arrival - i64::from(timestamp);
        if let Some(previous) = self.transit {
            let d = (transit - previous).unsigned_abs() as f64;
            if d < rate {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.transit = Some(transit);
        self.stats.jitter_from_phone_ms = self.jitter * 1000.0 / rate;
    }

    /// Queues digits to play to the phone (RFC 4733); characters that are not digits are skipped.
    pub fn queue_digits(&mut self, digits: &str) -> usize {
        let duration = DIGIT_MS * 8;
        let mut queued = 0;
        for digit in digits.chars() {
            let Some(payloads) = dtmf_payloads(digit, duration) else {
                continue;
            };
            queued += 1;
            for (i, payload) in payloads.into_iter().enumerate() {
                self.outgoing.push_back(Outgoing::Event { payload, first: i == 0 });
            }
            self.outgoing.extend((0..PAUSE_FRAMES).map(|_| Outgoing::Pause));
        }
        queued
    }

    /// The packet to send for the next 20 ms: a DTMF event while digits are queued, else `pcm` encoded.
    /// `None` when the phone does not want media (hold) or the DTMF pause keeps the line quiet.
    pub fn tick(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> bool {
        let step = self.negotiated.codec.clock_rate() / 50;
        let next_timestamp = self.timestamp.wrapping_add(step);
        let packet = match self.outgoing.pop_front() {
            Some(Outgoing::Event { payload, first }) => {
                if first {
                    self.event_timestamp = self.timestamp;
                }
                // Every packet of an event carries the event's start time; the end is repeated.
                self.payload.clear();
                self.payload.extend_from_slice(&payload);
                Some((self.negotiated.dtmf_pt.unwrap_or(101), first, self.event_timestamp))
            }
            Some(Outgoing::Pause) => None,
            None => {
                self.downlink.encode(pcm, &mut self.payload);
                Some((self.negotiated.pt, false, self.timestamp))
            }
        };
        self.timestamp = next_timestamp;
        let Some((payload_type, marker, timestamp)) = packet else {
            return false;
        };
        if !self.remote_direction.remote_receives() || self.payload.is_empty() {
            return false;
        }
        RtpPacket {
            payload_type,
            marker,
            seq: self.seq,
            timestamp,
            ssrc: self.ssrc,
            payload: &self.payload,
        }
        .write(out);
        if let Some(secure) = self.secure.as_mut() {
            if secure.outbound.protect(out).is_err() {
                return false;
            }
        }
        self.seq = self.seq.wrapping_add(1);
        self.stats.packets_to_phone += 1;
        self.octets_sent += self.payload.len() as u64;
        true
    }

    /// The RTCP sender report to send now (every few seconds): what the gateway sent, and a report block on
    /// the phone's stream; SRTCP on an SRTP leg. `None` if it cannot be protected.
    pub fn rtcp_report(&mut self, now: Instant, wall: std::time::SystemTime) -> Option<Vec<u8>> {
        let info = rtcp::SenderInfo {
            ntp: rtcp::ntp(wall),
            rtp_timestamp: self.timestamp,
            packets: self.stats.packets_to_phone as u32,
            octets: self.octets_sent as u32,
        };
        let block = self.remote_ssrc.map(|ssrc| {
            let received = self.stats.packets_from_phone;
            let expected = received + self.stats.lost_from_phone;
            let (expected_prior, received_prior) = self.reported;
            self.reported = (expected, received);
            let (interval_expected, interval_received) = (expected - expected_prior, received - received_prior);
            let lost = interval_expected.saturating_sub(interval_received);
            let fraction_lost = (lost << 8)
                .checked_div(interval_expected)
                .map_or(0, |f| f.min(255) as u8);
            let (lsr, dlsr) = self.last_sr.map_or((0, 0), |(middle, at)| {
                (middle, rtcp::short(now.saturating_duration_since(at)))
            });
            rtcp::ReportBlock {
                ssrc,
                fraction_lost,
                cumulative_lost: self.stats.lost_from_phone.min(0x7f_ffff) as u32,
                highest_seq: u32::from(self.last_seq.unwrap_or(0)),
                jitter: self.jitter as u32,
                lsr,
                dlsr,
            }
        });
        let mut report = rtcp::sender_report(self.ssrc, info, block.as_slice(), "sfu-gateway");
        if let Some(secure) = self.secure.as_mut() {
            secure.rtcp_out.protect(&mut report).ok()?;
        }
        Some(report)
    }

    /// Takes what the phone's RTCP says about the gateway's stream: loss and jitter toward the phone, and the
    /// round trip. Returns false for anything that is not RTCP (or, on an SRTP leg, not authentic SRTCP).
    pub fn rtcp_received(&mut self, data: &[u8], now: Instant, wall: std::time::SystemTime) -> bool {
        let received = match self.secure.as_mut() {
            None => rtcp::parse(data),
            // Only what looks like RTCP is checked (phones also send a few bytes, or an RTP packet, to open
            // their NAT pinhole on this port: ignored, not a forgery).
            Some(_) if data.len() < 8 || data[0] >> 6 != 2 || !(200..=206).contains(&data[1]) => None,
            Some(secure) => {
                let mut packet = data.to_vec();
                match secure.rtcp_in.unprotect(&mut packet) {
                    Ok(()) => rtcp::parse(&packet),
                    Err(e) => {
                        let reason = match e {
                            SrtpError::Auth => "auth",
                            SrtpError::Replay => "replay",
                            _ => "malformed",
                        };
                        metrics::counter!("sip_srtcp_refused_total", "reason" => reason).increment(1);
                        tracing::debug!(error = %e, "sip: SRTCP packet refused");
                        None
                    }
                }
            }
        };
        let Some(received) = received else {
            return false;
        };
        if let Some((_, ntp)) = received.sender_report {
            self.last_sr = Some((rtcp::middle(ntp), now));
        }
        let rate = f64::from(self.negotiated.codec.clock_rate());
        for block in received.blocks.iter().filter(|b| b.ssrc == self.ssrc) {
            self.stats.loss_to_phone_pct = Some(f64::from(block.fraction_lost) * 100.0 / 256.0);
            self.stats.jitter_to_phone_ms = Some(f64::from(block.jitter) * 1000.0 / rate);
            if let Some(rtt) = rtcp::round_trip(rtcp::middle(rtcp::ntp(wall)), block.lsr, block.dlsr) {
                self.stats.rtt_ms = Some(f64::from(rtt) * 1000.0 / 65_536.0);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::sip::g711;

    /// A PCMU leg toward 127.0.0.1:4000 (encrypted with `srtp`, the phone's crypto line), and the gateway's key.
    fn leg_with(direction: Direction, srtp: Option<crate::ingress::sip::sdp::Crypto>) -> (Leg, MasterKey) {
        let remote = RemoteAudio {
            addr: "127.0.0.1:4000".parse().unwrap(),
            formats: Vec::new(),
            direction,
            ptime: None,
            srtp: srtp.is_some(),
            crypto: Vec::new(),
        };
        let negotiated = Negotiated {
            codec: PhoneCodec::Pcmu,
            pt: 0,
            dtmf_pt: Some(101),
            ptime: 20,
            srtp,
        };
        let key = MasterKey::random();
        (Leg::new(&remote, negotiated, Instant::now(), 5, &key).unwrap(), key)
    }

    fn leg(direction: Direction) -> Leg {
        leg_with(direction, None).0
    }

    fn packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        RtpPacket {
            payload_type: pt,
            marker: false,
            seq,
            timestamp: ts,
            ssrc: 9,
            payload,
        }
        .write(&mut out);
        out
    }

    #[test]
    fn latches_to_the_real_source_and_counts_loss() {
        let mut leg = leg(Direction::SendRecv);
        let nat: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let mut frames = Vec::new();
        let now = Instant::now();
        let silence = [g711::linear_to_ulaw(0); 160];
        assert_eq!(
            leg.receive(&packet(0, 1, 0, &silence), nat, now, &mut frames),
            Received::Audio
        );
        assert_eq!(leg.remote(), nat, "symmetric RTP");
        assert_eq!(
            leg.receive(&packet(0, 4, 480, &silence), nat, now, &mut frames),
            Received::Audio
        );
        assert_eq!(leg.stats.lost_from_phone, 2);
        let other: SocketAddr = "127.0.0.1:6666".parse().unwrap();
        assert_eq!(
            leg.receive(&packet(0, 5, 640, &silence), other, now, &mut frames),
            Received::Ignored
        );
        assert_eq!(
            leg.receive(&packet(8, 6, 800, &silence), nat, now, &mut frames),
            Received::Ignored,
            "not negotiated"
        );
        assert_eq!(leg.receive(b"junk", nat, now, &mut frames), Received::Ignored);
        assert_eq!(leg.stats.packets_from_phone, 2);
    }

    #[test]
    fn rtcp_reports_what_the_phone_lost_and_reads_what_it_reports() {
        let mut leg = leg(Direction::SendRecv);
        let from: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let (mut frames, now) = (Vec::new(), Instant::now());
        let silence = [g711::linear_to_ulaw(0); 160];
        // 4 packets expected (1..=4), 2 received: half lost.
        leg.receive(&packet(0, 1, 0, &silence), from, now, &mut frames);
        leg.receive(&packet(0, 4, 480, &silence), from, now, &mut frames);
        let wall = std::time::SystemTime::now();
        let ours = rtcp::parse(&leg.rtcp_report(now, wall).expect("a report")).unwrap();
        let (ssrc, _) = ours.sender_report.expect("a sender report");
        let block = ours.blocks[0];
        assert_eq!(
            (
                block.ssrc,
                block.fraction_lost,
                block.cumulative_lost,
                block.highest_seq
            ),
            (9, 128, 2, 4)
        );
        // The next interval, nothing new: nothing lost in it.
        let again = rtcp::parse(&leg.rtcp_report(now, wall).unwrap()).unwrap();
        assert_eq!(again.blocks[0].fraction_lost, 0);
        // The phone's receiver report on our stream.
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 9];
        rr.extend_from_slice(&ssrc.to_be_bytes());
        rr.extend_from_slice(&[64, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0, 160, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(leg.rtcp_received(&rr, now, wall));
        assert_eq!(leg.stats.loss_to_phone_pct, Some(25.0));
        assert_eq!(leg.stats.jitter_to_phone_ms, Some(20.0));
        assert!(!leg.rtcp_received(b"junk", now, wall));
    }

    #[test]
    fn digits_in_and_out() {
        let mut leg = leg(Direction::SendRecv);
        let from: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut frames = Vec::new();
        let now = Instant::now();
        assert_eq!(
            leg.receive(&packet(101, 1, 100, &[5, 10, 0, 160]), from, now, &mut frames),
            Received::Digit('5')
        );
        assert_eq!(
            leg.receive(&packet(101, 2, 100, &[5, 0x8a, 1, 64]), from, now, &mut frames),
            Received::Ignored
        );
        assert_eq!(leg.queue_digits("1x#"), 2);
        let mut sent = Vec::new();
        let mut out = Vec::new();
        let pcm = [0i16; 160];
        for _ in 0..40 {
            if leg.tick(&pcm, &mut out) {
                sent.push(
                    RtpPacket::parse(&out)
                        .map(|p| (p.payload_type, p.payload.to_vec(), p.timestamp))
                        .unwrap(),
                );
            }
        }
        let mut receiver = DtmfReceiver::default();
        let digits: String = sent
            .iter()
            .filter(|(pt, ..)| *pt == 101)
            .filter_map(|(_, payload, ts)| receiver.receive(*ts, payload))
            .collect();
        assert_eq!(digits, "1#");
        assert!(sent.iter().any(|(pt, ..)| *pt == 0), "audio resumes after the digits");
    }

    #[test]
    fn nothing_is_sent_to_a_phone_that_holds() {
        let mut leg = leg(Direction::SendOnly);
        assert!(leg.on_hold());
        let mut out = Vec::new();
        assert!(!leg.tick(&[0i16; 160], &mut out));
        let remote = RemoteAudio {
            addr: "127.0.0.1:4002".parse().unwrap(),
            formats: Vec::new(),
            direction: Direction::SendRecv,
            ptime: None,
            srtp: false,
            crypto: Vec::new(),
        };
        leg.update(&remote, leg.negotiated(), Instant::now()).unwrap();
        assert!(!leg.on_hold());
        assert!(leg.tick(&[0i16; 160], &mut out));
        assert_eq!(leg.remote(), remote.addr);
    }

    #[test]
    fn an_srtp_leg_takes_only_authenticated_packets_and_encrypts_what_it_sends() {
        use crate::ingress::sip::sdp::Crypto;
        use crate::ingress::sip::srtp::Suite;
        let phone_key = MasterKey::random();
        let suite = Suite::AesCm128HmacSha1_80;
        let crypto = Crypto {
            tag: 1,
            suite,
            key: phone_key,
        };
        let (mut leg, gateway_key) = leg_with(Direction::SendRecv, Some(crypto));
        assert!(leg.is_secure());
        let mut phone_tx = Srtp::new(suite, &phone_key).unwrap();
        let mut phone_rx = Srtp::new(suite, &gateway_key).unwrap();
        let (phone, attacker): (SocketAddr, SocketAddr) =
            ("127.0.0.1:4000".parse().unwrap(), "127.0.0.1:6666".parse().unwrap());
        let mut frames = Vec::new();
        // Plain RTP, or SRTP with another key, neither counts nor latches.
        let plain = packet(0, 1, 160, &[0xff; 160]);
        assert_eq!(
            leg.receive(&plain, attacker, Instant::now(), &mut frames),
            Received::Ignored
        );
        let mut forged = plain.clone();
        Srtp::new(suite, &MasterKey::random())
            .unwrap()
            .protect(&mut forged)
            .unwrap();
        assert_eq!(
            leg.receive(&forged, attacker, Instant::now(), &mut frames),
            Received::Ignored
        );
        assert_eq!(leg.stats.packets_from_phone, 0);
        for seq in 2..6u16 {
            let mut p = packet(0, seq, u32::from(seq) * 160, &[0xff; 160]);
            phone_tx.protect(&mut p).unwrap();
            assert_eq!(leg.receive(&p, phone, Instant::now(), &mut frames), Received::Audio);
        }
        assert_eq!(leg.remote(), phone);
        assert_eq!(leg.stats.packets_from_phone, 4);
        let mut out = Vec::new();
        assert!(leg.tick(&[0; 160], &mut out));
        assert_eq!(out.len(), 12 + 160 + 10, "header, payload and the 80-bit tag");
        phone_rx.unprotect(&mut out).unwrap();
        let sent = RtpPacket::parse(&out).unwrap();
        assert_eq!(sent.payload.len(), 160);
        assert_eq!(sent.payload[0], g711::linear_to_ulaw(0));
    }
}
