//! RTCP on the phone leg (RFC 3550, sans-IO): the sender reports the gateway sends (with a report block on the
//! phone's stream: its loss and jitter as the gateway sees them) and the report blocks the phone sends back
//! about the gateway's stream — the network loss and jitter toward the phone, and the round trip.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// What a receiver says about one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The stream reported on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, out of 256.
    pub fraction_lost: u8,
    /// Packets lost since the start (24 bits).
    pub cumulative_lost: u32,
    /// Highest sequence number received, extended with the wrap count.
    pub highest_seq: u32,
    /// Interarrival jitter, in RTP timestamp units.
    pub jitter: u32,
    /// The middle 32 bits of the NTP time of the last sender report received from the stream's sender.
    pub lsr: u32,
    /// Delay since that report, in 1/65536 s.
    pub dlsr: u32,
}

/// The sender part of a sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Wallclock, 64-bit NTP format.
    pub ntp: u64,
    /// The RTP timestamp of the same instant.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// A 64-bit NTP timestamp of `t`.
pub fn ntp(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// The middle 32 bits of a 64-bit NTP timestamp (what LSR carries).
pub fn middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// The round trip in 1/65536 s from a report block received at `now` (middle NTP bits) that answers our
/// sender report `lsr` after holding it `dlsr` (RFC 3550 6.4.1): `now − LSR − DLSR`. `None` without a sender
/// report (`lsr` 0) or beyond 10 s (a stale or garbled block). A phone's DLSR is only as fine as its timer
/// (libre's, under baresip, counts milliseconds), so on a path shorter than that the difference can come out
/// a little below zero: up to 10 ms below, that is a round trip of 0, not a wrapped-around one of 18 hours.
pub fn round_trip(now: u32, lsr: u32, dlsr: u32) -> Option<u32> {
    const ROUNDING: u32 = 65_536 / 100;
    if lsr == 0 {
        return None;
    }
    match now.wrapping_sub(lsr).wrapping_sub(dlsr) {
        rtt if rtt < 65_536 * 10 => Some(rtt),
        rtt if rtt > u32::MAX - ROUNDING => Some(0),
        _ => None,
    }
}

/// A 1/65536 s count (DLSR) of `d`.
pub fn short(d: Duration) -> u32 {
    ((d.as_nanos() << 16) / 1_000_000_000).min(u128::from(u32::MAX)) as u32
}

/// A compound packet: a sender report from `ssrc` (with `blocks`) and an SDES with its CNAME.
pub fn sender_report(ssrc: u32, info: SenderInfo, blocks: &[ReportBlock], cname: &str) -> Vec<u8> {
    let blocks = &blocks[..blocks.len().min(31)];
    let mut out = Vec::with_capacity(28 + 24 * blocks.len() + 12 + cname.len());
    let words = 6 + 6 * blocks.len();
    out.push(0x80 | blocks.len() as u8);
    out.push(200);
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&info.ntp.to_be_bytes());
    out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
    out.extend_from_slice(&info.packets.to_be_bytes());
    out.extend_from_slice(&info.octets.to_be_bytes());
    for block in blocks {
        out.extend_from_slice(&block.ssrc.to_be_bytes());
        out.push(block.fraction_lost);
        out.extend_from_slice(&(block.cumulative_lost & 0x00ff_ffff).to_be_bytes()[1..]);
        out.extend_from_slice(&block.highest_seq.to_be_bytes());
        out.extend_from_slice(&block.jitter.to_be_bytes());
        out.extend_from_slice(&block.lsr.to_be_bytes());
        out.extend_from_slice(&block.dlsr.to_be_bytes());
    }
    // SDES: one chunk, CNAME item, END, padded to 32 bits.
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let chunk = 4 + 2 + cname.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    out.push(0x81);
    out.push(202);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(cname.len() as u8);
    out.extend_from_slice(cname);
    out.resize(out.len() + (padded - chunk) + 1, 0);
    out
}

/// What one received compound packet says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sender's SSRC and the NTP time of its sender report, when it held one.
    pub sender_report: Option<(u32, u64)>,
    /// Every report block of its SRs and RRs.
    pub blocks: Vec<ReportBlock>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn block(b: &[u8]) -> ReportBlock {
    ReportBlock {
        ssrc: be32(b),
        fraction_lost: b[4],
        cumulative_lost: be32(&b[4..8]) & 0x00ff_ffff,
        highest_seq: be32(&b[8..]),
        jitter: be32(&b[12..]),
        lsr: be32(&b[16..]),
        dlsr: be32(&b[20..]),
    }
}

/// Parses a compound RTCP packet; `None` when it is not RTCP or is malformed.
pub fn parse(mut data: &[u8]) -> Option<Received> {
    let mut received = Received::default();
    let mut any = false;
    while data.len() >= 4 {
        if data[0] >> 6 != 2 {
            return None;
        }
        let count = usize::from(data[0] & 0x1f);
        let kind = data[1];
        let len = (usize::from(u16::from_be_bytes([data[2], data[3]])) + 1) * 4;
        let packet = data.get(..len)?;
        let blocks_at = match kind {
            200 if len >= 28 => {
                received.sender_report = Some((
                    be32(&packet[4..]),
                    u64::from(be32(&packet[8..])) << 32 | u64::from(be32(&packet[12..])),
                ));
                Some(28)
            }
            201 if len >= 8 => Some(8),
            192..=223 => None,
            _ => return None,
        };
        if let Some(at) = blocks_at {
            for i in 0..count {
                let b = packet.get(at + i * 24..at + (i + 1) * 24)?;
                received.blocks.push(block(b));
            }
        }
        any = true;
        data = &data[len..];
    }
    any.then_some(received)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_is_now_less_lsr_less_dlsr_and_a_rounded_dlsr_is_not_a_wrap() {
        let lsr = 0x1234_0000;
        // Sent at LSR, held 1 s (65,536) by the phone, back 20 ms after that.
        assert_eq!(round_trip(lsr + 65_536 + 1_311, lsr, 65_536), Some(1_311));
        // On loopback a DLSR rounded up to the millisecond makes it ~−1 ms: a round trip of 0.
        assert_eq!(round_trip(lsr + 65_536, lsr, 65_536 + 66), Some(0));
        // No sender report yet; a block from 20 s ago or a garbled one.
        assert_eq!(round_trip(lsr + 65_536, 0, 0), None);
        assert_eq!(round_trip(lsr + 20 * 65_536, lsr, 0), None);
        assert_eq!(round_trip(lsr, lsr, 65_536), None);
    }

    use super::*;

    #[test]
    fn a_sender_report_round_trips() {
        let info = SenderInfo {
            ntp: ntp(UNIX_EPOCH + Duration::from_millis(1_500)),
            rtp_timestamp: 160,
            packets: 50,
            octets: 8_000,
        };
        let report = ReportBlock {
            ssrc: 0x1234_5678,
            fraction_lost: 13,
            cumulative_lost: 10,
            highest_seq: 0x1_0005,
            jitter: 80,
            lsr: 0xaabb_ccdd,
            dlsr: 65_536,
        };
        let packet = sender_report(0xdead_beef, info, &[report], "gw@example");
        assert_eq!(packet.len() % 4, 0);
        assert_eq!((packet[0], packet[1]), (0x81, 200));
        let parsed = parse(&packet).expect("parses");
        assert_eq!(parsed.sender_report, Some((0xdead_beef, info.ntp)));
        assert_eq!(parsed.blocks, [report]);
        // 1970 + 1.5 s in NTP: seconds 2 208 988 801, fraction one half.
        assert_eq!(info.ntp >> 32, NTP_UNIX_OFFSET + 1);
        assert_eq!(info.ntp & 0xffff_ffff, 1 << 31);
        assert_eq!(short(Duration::from_millis(500)), 32_768);
    }

    #[test]
    fn receiver_reports_and_garbage() {
        // An RR with one block, as a phone sends it.
        let mut rr = vec![0x81, 201, 0, 7];
        rr.extend_from_slice(&7u32.to_be_bytes());
        rr.extend_from_slice(&[0, 0, 0, 1, 26, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0]);
        let parsed = parse(&rr).expect("an RR");
        assert_eq!(parsed.sender_report, None);
        assert_eq!(parsed.blocks[0].ssrc, 1);
        assert_eq!(parsed.blocks[0].fraction_lost, 26);
        assert_eq!(parsed.blocks[0].cumulative_lost, 3);
        assert_eq!(parsed.blocks[0].jitter, 80);
        assert_eq!(parse(&[0x80, 0x00, 0, 0, 1, 2]), None, "RTP is not RTCP");
        assert_eq!(parse(&rr[..20]), None, "truncated");
        assert_eq!(parse(&[]), None);
    }
}
