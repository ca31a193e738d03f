//! A small, sans-IO reader of the parts of an SDP the embedded SFU decides on: each m-section's kind, mid,
//! direction and simulcast rids. str0m parses and validates the whole SDP; this only answers "which m-lines
//! does the peer send on".

/// One m-section as the remote peer wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// `audio`, `video` or `application`.
    pub kind: String,
    /// The `a=mid` value.
    pub mid: String,
    /// Direction from the writer's point of view (`sendrecv` when absent).
    pub direction: String,
    /// Port 0: the m-line is rejected or stopped.
    pub stopped: bool,
    /// `a=rid:<id> send` values (simulcast layers the writer sends), in order.
    pub send_rids: Vec<String>,
}

impl MediaSection {
    /// Whether the writer sends media on it.
    pub fn sends(&self) -> bool {
        !self.stopped && matches!(self.direction.as_str(), "sendrecv" | "sendonly")
    }

    /// Whether the writer receives media on it.
    pub fn receives(&self) -> bool {
        !self.stopped && matches!(self.direction.as_str(), "sendrecv" | "recvonly")
    }
}

/// The m-sections of `sdp`, in order. Sections without a mid are skipped (BUNDLE needs one).
pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    let mut out: Vec<MediaSection> = Vec::new();
    let mut current: Option<MediaSection> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            if let Some(done) = current.take().filter(|m| !m.mid.is_empty()) {
                out.push(done);
            }
            let mut fields = rest.split_whitespace();
            let kind = fields.next().unwrap_or_default().to_string();
            let stopped = fields.next() == Some("0");
            current = Some(MediaSection {
                kind,
                mid: String::new(),
                direction: "sendrecv".into(),
                stopped,
                send_rids: Vec::new(),
            });
            continue;
        }
        let Some(section) = current.as_mut() else { continue };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = mid.trim().to_string();
        } else if let Some(rid) = line.strip_prefix("a=rid:") {
            let mut parts = rid.split_whitespace();
            if let (Some(id), Some("send")) = (parts.next(), parts.next()) {
                section.send_rids.push(id.to_string());
            }
        } else if let Some(dir) = line.strip_prefix("a=") {
            if matches!(dir, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                section.direction = dir.to_string();
            }
        }
    }
    if let Some(done) = current.filter(|m| !m.mid.is_empty()) {
        out.push(done);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rid:f send\r\na=rid:h send\r\na=simulcast:send f;h\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn reads_kind_mid_direction_and_rids() {
        let sections = media_sections(OFFER);
        assert_eq!(sections.len(), 3, "the application section has no mid");
        assert_eq!((sections[0].kind.as_str(), sections[0].mid.as_str()), ("audio", "0"));
        assert!(sections[0].sends() && !sections[0].receives());
        assert_eq!(sections[1].direction, "sendrecv");
        assert_eq!(sections[1].send_rids, vec!["f", "h"]);
        assert!(sections[2].stopped && !sections[2].receives());
    }

    #[test]
    fn garbage_gives_nothing() {
        assert!(media_sections("").is_empty());
        assert!(media_sections("hello\nm=\na=mid:\n\u{0}").is_empty());
    }
}
