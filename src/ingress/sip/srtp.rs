//! SDES-SRTP for the phone leg (sans-IO): RFC 3711 with the suites of RFC 4568 that phones and trunks
//! offer — `AES_CM_128_HMAC_SHA1_80` and `AES_CM_128_HMAC_SHA1_32` — keyed by `a=crypto` lines.
//!
//! One [`Srtp`] context protects or unprotects one direction: session keys derived from the master key
//! (key derivation rate 0), AES counter mode over the payload, HMAC-SHA1 over header, payload and rollover
//! counter, the rollover counter estimated from sequence numbers, and a 64-packet replay window. The leg's
//! RTCP goes through `srtcp.rs` on an SRTP leg.

use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Master key length (AES-128).
pub(super) const KEY_LEN: usize = 16;
/// Master salt length.
pub(super) const SALT_LEN: usize = 14;
/// Key derivation labels (RFC 3711 §4.3.1).
const LABEL_ENCRYPTION: u8 = 0;
const LABEL_AUTH: u8 = 1;
const LABEL_SALT: u8 = 2;

/// A crypto suite of RFC 4568.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, 32-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_32,
}

impl Suite {
    /// The suite's name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite named `name`, if supported.
    pub fn from_name(name: &str) -> Option<Suite> {
        [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32]
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    fn tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// A master key and salt, as carried base64 in `inline:`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey {
    key: [u8; KEY_LEN],
    salt: [u8; SALT_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Why SRTP could not be set up or a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The `inline:` key is not base64 of 30 bytes.
    #[error("bad SRTP key parameters")]
    BadKey,
    /// Shorter than an RTP header and a tag.
    #[error("SRTP packet too short")]
    TooShort,
    /// The authentication tag does not match.
    #[error("SRTP authentication failed")]
    Auth,
    /// The packet was seen already, or is older than the replay window.
    #[error("SRTP replay")]
    Replay,
    /// The crypto library refused.
    #[error("SRTP cipher failure")]
    Cipher,
}

impl MasterKey {
    /// A fresh random key and salt.
    pub fn random() -> Self {
        Self {
            key: rand::random(),
            salt: rand::random(),
        }
    }

    /// Parses key parameters `inline:<base64>[|lifetime][|MKI:len]` (lifetime and MKI are ignored).
    pub fn from_params(params: &str) -> Result<Self, SrtpError> {
        let inline = params.trim().strip_prefix("inline:").ok_or(SrtpError::BadKey)?;
        let encoded = inline.split('|').next().unwrap_or_default();
        let bytes = STANDARD.decode(encoded).map_err(|_| SrtpError::BadKey)?;
        if bytes.len() != KEY_LEN + SALT_LEN {
            return Err(SrtpError::BadKey);
        }
        let mut key = [0; KEY_LEN];
        let mut salt = [0; SALT_LEN];
        key.copy_from_slice(&bytes[..KEY_LEN]);
        salt.copy_from_slice(&bytes[KEY_LEN..]);
        Ok(Self { key, salt })
    }

    /// The key parameters for `a=crypto`: `inline:<base64 of key and salt>`.
    pub fn to_params(&self) -> String {
        let mut bytes = Vec::with_capacity(KEY_LEN + SALT_LEN);
        bytes.extend_from_slice(&self.key);
        bytes.extend_from_slice(&self.salt);
        format!("inline:{}", STANDARD.encode(bytes))
    }

    /// A session key of `len` bytes for `label` (RFC 3711 §4.3.1, key derivation rate 0).
    pub(super) fn derive(&self, label: u8, len: usize) -> Result<Vec<u8>, SrtpError> {
        let mut iv = [0u8; 16];
        iv[..SALT_LEN].copy_from_slice(&self.salt);
        iv[7] ^= label;
        let mut out = vec![0u8; len];
        aes_ctr(&self.key, iv, &mut out)?;
        Ok(out)
    }
}

/// XORs `data` with the AES-128 counter-mode keystream starting at block `iv`.
pub(super) fn aes_ctr(key: &[u8], iv: [u8; 16], data: &mut [u8]) -> Result<(), SrtpError> {
    let key = UnboundCipherKey::new(&AES_128, key).map_err(|_| SrtpError::Cipher)?;
    let key = EncryptingKey::ctr(key).map_err(|_| SrtpError::Cipher)?;
    key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| SrtpError::Cipher)?;
    Ok(())
}

/// One direction of SRTP.
pub struct Srtp {
    suite: Suite,
    cipher: EncryptingKey,
    auth: hmac::Key,
    salt: [u8; SALT_LEN],
    roc: u32,
    /// Highest sequence number seen (receiver) or sent (sender).
    last_seq: Option<u16>,
    /// Replay window: the highest index accepted and a bitmap of the 64 before it.
    highest: u64,
    window: u64,
}

impl Srtp {
    /// A context for `suite` keyed by `master`.
    pub fn new(suite: Suite, master: &MasterKey) -> Result<Self, SrtpError> {
        let cipher_key = master.derive(LABEL_ENCRYPTION, KEY_LEN)?;
        let auth_key = master.derive(LABEL_AUTH, 20)?;
        let salt_key = master.derive(LABEL_SALT, SALT_LEN)?;
        let unbound = UnboundCipherKey::new(&AES_128, &cipher_key).map_err(|_| SrtpError::Cipher)?;
        let mut salt = [0; SALT_LEN];
        salt.copy_from_slice(&salt_key);
        Ok(Self {
            suite,
            cipher: EncryptingKey::ctr(unbound).map_err(|_| SrtpError::Cipher)?,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth_key),
            salt,
            roc: 0,
            last_seq: None,
            highest: 0,
            window: 0,
        })
    }

    /// Encrypts and authenticates the RTP packet in `packet` in place (the tag is appended).
    pub fn protect(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header = header_len(packet).ok_or(SrtpError::TooShort)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        if let Some(last) = self.last_seq {
            if seq < last && last - seq > 0x8000 {
                self.roc = self.roc.wrapping_add(1);
            }
        }
        self.last_seq = Some(seq);
        let index = (u64::from(self.roc) << 16) | u64::from(seq);
        let iv = self.iv(ssrc(packet), index);
        self.cipher
            .less_safe_encrypt(&mut packet[header..], EncryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| SrtpError::Cipher)?;
        let tag = self.tag(packet, self.roc);
        packet.extend_from_slice(&tag.as_ref()[..self.suite.tag_len()]);
        Ok(())
    }

    /// Checks and decrypts the SRTP packet in `packet` in place (the tag is removed).
    pub fn unprotect(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let tag_len = self.suite.tag_len();
        if packet.len() < 12 + tag_len {
            return Err(SrtpError::TooShort);
        }
        let body = packet.len() - tag_len;
        let header = header_len(&packet[..body]).ok_or(SrtpError::TooShort)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let roc = self.estimate_roc(seq);
        let index = (u64::from(roc) << 16) | u64::from(seq);
        if self.last_seq.is_some() && !self.fresh(index) {
            return Err(SrtpError::Replay);
        }
        let tag = self.tag(&packet[..body], roc);
        aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..tag_len], &packet[body..])
            .map_err(|_| SrtpError::Auth)?;
        packet.truncate(body);
        let iv = self.iv(ssrc(packet), index);
        self.cipher
            .less_safe_encrypt(&mut packet[header..], EncryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| SrtpError::Cipher)?;
        self.accept(seq, roc, index);
        Ok(())
    }

    /// The rollover counter of a received sequence number (RFC 3711 §3.3.1).
    fn estimate_roc(&self, seq: u16) -> u32 {
        let Some(last) = self.last_seq else { return self.roc };
        if last < 0x8000 {
            if seq > last && seq - last > 0x8000 {
                self.roc.wrapping_sub(1)
            } else {
                self.roc
            }
        } else if last - 0x8000 > seq {
            self.roc.wrapping_add(1)
        } else {
            self.roc
        }
    }

    /// Whether `index` is new and inside the replay window.
    fn fresh(&self, index: u64) -> bool {
        if index > self.highest {
            return true;
        }
        let behind = self.highest - index;
        behind < 64 && self.window & (1 << behind) == 0
    }

    fn accept(&mut self, seq: u16, roc: u32, index: u64) {
        if self.last_seq.is_none() || index > self.highest {
            let shift = index.saturating_sub(self.highest);
            self.window = if self.last_seq.is_none() || shift >= 64 {
                1
            } else {
                (self.window << shift) | 1
            };
            self.highest = index;
            self.roc = roc;
            self.last_seq = Some(seq);
        } else {
            self.window |= 1 << (self.highest - index);
        }
    }

    fn iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        counter_iv(&self.salt, ssrc, index)
    }

    fn tag(&self, authenticated: &[u8], roc: u32) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.auth);
        context.update(authenticated);
        context.update(&roc.to_be_bytes());
        context.sign()
    }
}

/// The AES-CM IV of packet `index` of `ssrc` (RFC 3711 §4.1.1; SRTP and SRTCP alike): the session salt XOR
/// the SSRC at bytes 4..8 XOR the index at bytes 8..14.
pub(super) fn counter_iv(salt: &[u8; SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..SALT_LEN].copy_from_slice(salt);
    for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
        iv[4 + i] ^= b;
    }
    for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
        iv[8 + i] ^= b;
    }
    iv
}

fn ssrc(packet: &[u8]) -> u32 {
    u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])
}

/// Length of the RTP header with CSRCs and extension, if the packet holds it.
fn header_len(packet: &[u8]) -> Option<usize> {
    if packet.len() < 12 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= packet.len()).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn master(key: &str, salt: &str) -> MasterKey {
        let mut m = MasterKey {
            key: [0; KEY_LEN],
            salt: [0; SALT_LEN],
        };
        m.key.copy_from_slice(&hex(key));
        m.salt.copy_from_slice(&hex(salt));
        m
    }

    #[test]
    fn session_keys_match_rfc_3711_appendix_b3() {
        let m = master("E1F97A0D3E018BE0D64FA32C06DE4139", "0EC675AD498AFEEBB6960B3AABE6");
        assert_eq!(
            m.derive(LABEL_ENCRYPTION, 16).unwrap(),
            hex("C61E7A93744F39EE10734AFE3FF7A087")
        );
        assert_eq!(m.derive(LABEL_SALT, 14).unwrap(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            m.derive(LABEL_AUTH, 20).unwrap(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    #[test]
    fn the_keystream_matches_rfc_3711_appendix_b2() {
        let mut data = vec![0u8; 48];
        let iv: [u8; 16] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000").try_into().unwrap();
        aes_ctr(&hex("2B7E151628AED2A6ABF7158809CF4F3C"), iv, &mut data).unwrap();
        assert_eq!(
            data,
            hex("E03EAD0935C95E80E166B16DD92B4EB4D23513162B02D0F72A43A2FE4A5F97AB41E95B3BB0A2E8DD477901E4FCA894C0")
        );
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn protected_packets_round_trip_and_tampering_or_replay_is_refused() {
        let key = MasterKey::from_params(&MasterKey::random().to_params()).unwrap();
        for suite in [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32] {
            let mut tx = Srtp::new(suite, &key).unwrap();
            let mut rx = Srtp::new(suite, &key).unwrap();
            // Across a sequence-number wrap, so the rollover counter moves on both sides.
            for seq in (65_530..=65_535).chain(0..5) {
                let plain = rtp(seq, &[seq as u8; 160]);
                let mut packet = plain.clone();
                tx.protect(&mut packet).unwrap();
                assert_eq!(packet.len(), plain.len() + suite.tag_len());
                assert_ne!(&packet[12..172], &plain[12..], "the payload is encrypted");
                let mut replayed = packet.clone();
                let mut tampered = packet.clone();
                tampered[20] ^= 1;
                assert_eq!(rx.unprotect(&mut tampered), Err(SrtpError::Auth));
                rx.unprotect(&mut packet).unwrap();
                assert_eq!(packet, plain);
                assert_eq!(rx.unprotect(&mut replayed), Err(SrtpError::Replay));
            }
            assert_eq!(rx.roc, 1);
        }
    }

    #[test]
    fn reordered_packets_within_the_window_are_accepted_once() {
        let key = MasterKey::random();
        let mut tx = Srtp::new(Suite::AesCm128HmacSha1_80, &key).unwrap();
        let mut rx = Srtp::new(Suite::AesCm128HmacSha1_80, &key).unwrap();
        let packets: Vec<Vec<u8>> = (100..110)
            .map(|seq| {
                let mut p = rtp(seq, b"hello");
                tx.protect(&mut p).unwrap();
                p
            })
            .collect();
        for i in [0, 2, 1, 5, 3, 4, 9, 6, 8, 7] {
            let mut p = packets[i].clone();
            rx.unprotect(&mut p).unwrap();
            assert_eq!(&p[12..], b"hello");
        }
        let mut again = packets[6].clone();
        assert_eq!(rx.unprotect(&mut again), Err(SrtpError::Replay));
        let mut short = vec![0x80, 0, 0];
        assert_eq!(rx.unprotect(&mut short), Err(SrtpError::TooShort));
        assert!(MasterKey::from_params("inline:AAAA").is_err());
        assert!(MasterKey::from_params("nonsense").is_err());
    }
}
