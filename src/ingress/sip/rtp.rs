//! The phone leg's RTP: header parsing and building (RFC 3550), and telephone events (RFC 4733).

/// A parsed RTP packet borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Payload type.
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp in the payload's clock.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// The payload, padding removed.
    pub payload: &'a [u8],
}

/// Why a datagram is not RTP we can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than its header says.
    #[error("truncated RTP packet")]
    Truncated,
    /// Not version 2.
    #[error("not RTP version 2")]
    Version,
    /// RTCP (payload types 72–79 with the marker bit, RFC 5761), handled elsewhere.
    #[error("RTCP packet")]
    Rtcp,
}

impl<'a> RtpPacket<'a> {
    /// Parses one datagram.
    pub fn parse(data: &'a [u8]) -> Result<Self, RtpError> {
        if data.len() < 12 {
            return Err(RtpError::Truncated);
        }
        if data[0] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        if (200..=204).contains(&data[1]) {
            return Err(RtpError::Rtcp);
        }
        let csrc = usize::from(data[0] & 0x0f) * 4;
        let mut start = 12 + csrc;
        if data[0] & 0x10 != 0 {
            let ext = data.get(start + 2..start + 4).ok_or(RtpError::Truncated)?;
            start += 4 + usize::from(u16::from_be_bytes([ext[0], ext[1]])) * 4;
        }
        let mut end = data.len();
        if data[0] & 0x20 != 0 {
            let pad = usize::from(*data.last().ok_or(RtpError::Truncated)?);
            end = end.checked_sub(pad).ok_or(RtpError::Truncated)?;
        }
        if start > end {
            return Err(RtpError::Truncated);
        }
        Ok(Self {
            payload_type: data[1] & 0x7f,
            marker: data[1] & 0x80 != 0,
            seq: u16::from_be_bytes([data[2], data[3]]),
            timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
            payload: &data[start..end],
        })
    }

    /// Writes the packet (no CSRC, no extension, no padding) into `out`, replacing its content.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(0x80);
        out.push(self.payload_type & 0x7f | if self.marker { 0x80 } else { 0 });
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(self.payload);
    }
}

/// The digit (or letter) of a telephone event code (0–9, `*`, `#`, A–D).
pub fn event_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The telephone event code of a digit.
pub fn digit_event(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        c @ '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        c @ 'A'..='D' => Some(c as u8 - b'A' + 12),
        _ => None,
    }
}

/// Turns the RFC 4733 packets of a phone into digits, each reported once (an event is repeated in several
/// packets with the same timestamp, its end three times).
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    last: Option<u32>,
}

impl DtmfReceiver {
    /// The digit this payload starts, if it starts a new event.
    pub fn receive(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = *payload.first()?;
        if payload.len() < 4 || self.last == Some(timestamp) {
            return None;
        }
        self.last = Some(timestamp);
        event_digit(event)
    }
}

/// The RFC 4733 payloads that play `digit` for `duration_samples` at 8 kHz: one packet per 20 ms (160
/// samples) with the growing duration, the last one with the end bit, repeated three times.
pub fn dtmf_payloads(digit: char, duration_samples: u16) -> Option<Vec<[u8; 4]>> {
    const VOLUME: u8 = 10; // -10 dBm0
    let event = digit_event(digit)?;
    let mut payloads = Vec::new();
    let mut duration = 0u16;
    while duration < duration_samples {
        duration = duration.saturating_add(160).min(duration_samples);
        let end = duration == duration_samples;
        let flags = if end { 0x80 } else { 0 } | VOLUME;
        let [hi, lo] = duration.to_be_bytes();
        let payload = [event, flags, hi, lo];
        let copies = if end { 3 } else { 1 };
        payloads.extend(std::iter::repeat_n(payload, copies));
    }
    Some(payloads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes_a_packet() {
        let payload = [1u8, 2, 3];
        let packet = RtpPacket {
            payload_type: 8,
            marker: true,
            seq: 65_535,
            timestamp: 0xdead_beef,
            ssrc: 42,
            payload: &payload,
        };
        let mut bytes = Vec::new();
        packet.write(&mut bytes);
        assert_eq!(bytes.len(), 15);
        assert_eq!(RtpPacket::parse(&bytes), Ok(packet));
    }

    #[test]
    fn skips_csrcs_extension_and_padding() {
        let mut bytes = vec![0x80 | 0x20 | 0x10 | 1, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        bytes.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        bytes.extend_from_slice(&[0xbe, 0xde, 0, 1, 7, 7, 7, 7]); // extension of one word
        bytes.extend_from_slice(&[0xaa, 0xbb]);
        bytes.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let packet = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(packet.payload, [0xaa, 0xbb]);
        assert_eq!(packet.seq, 1);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(RtpError::Truncated));
        assert_eq!(RtpPacket::parse(&[0u8; 20]), Err(RtpError::Version));
        assert_eq!(
            RtpPacket::parse(&[0x80, 200, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RtpError::Rtcp)
        );
        let mut padded = vec![0xa0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        padded.push(200); // more padding than packet
        assert_eq!(RtpPacket::parse(&padded), Err(RtpError::Truncated));
        let mut ext = vec![0x90, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde, 0, 9];
        ext.push(1);
        assert_eq!(RtpPacket::parse(&ext), Err(RtpError::Truncated));
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 0x80) as u8).collect();
            let _ = RtpPacket::parse(&junk);
        }
    }

    #[test]
    fn digits_map_to_events_and_back() {
        for digit in "0123456789*#ABCD".chars() {
            assert_eq!(event_digit(digit_event(digit).unwrap()), Some(digit));
        }
        assert_eq!(digit_event('x'), None);
        assert_eq!(event_digit(16), None);
    }

    #[test]
    fn a_digit_sent_is_received_once() {
        let payloads = dtmf_payloads('7', 800).unwrap();
        assert_eq!(payloads.len(), 4 + 3, "four growing packets, then the end three times");
        assert_eq!(payloads.last().unwrap(), &[7, 0x80 | 10, 0x03, 0x20]);
        let mut receiver = DtmfReceiver::default();
        let digits: String = payloads.iter().filter_map(|p| receiver.receive(1000, p)).collect();
        assert_eq!(digits, "7");
        assert_eq!(
            receiver.receive(2000, &[11, 0, 0, 160]),
            Some('#'),
            "a new timestamp is a new event"
        );
        assert_eq!(dtmf_payloads('?', 800), None);
    }
}
