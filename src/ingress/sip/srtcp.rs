//! SRTCP (RFC 3711 §3.4) for the phone leg's RTCP: session keys from the same master key with the RTCP labels,
//! AES-CM over everything after the first 8 bytes (header and sender SSRC), then the E flag and the 31-bit
//! SRTCP index, then an 80-bit HMAC-SHA1 tag over all of it — 80 bits for both suites (RFC 4568 §6.2: the
//! `_32` suites shorten only the SRTP tag). A 64-packet replay window on the index.

use super::srtp::{KEY_LEN, MasterKey, SALT_LEN, SrtpError, aes_ctr, counter_iv};
use aws_lc_rs::hmac;

/// Key derivation labels for SRTCP (RFC 3711 §4.3.2).
const LABEL_ENCRYPTION: u8 = 3;
const LABEL_AUTH: u8 = 4;
const LABEL_SALT: u8 = 5;
/// The SRTCP authentication tag.
const TAG_LEN: usize = 10;
/// The E flag (encrypted) of the index word.
const E_FLAG: u32 = 1 << 31;

/// One direction of SRTCP.
pub struct Srtcp {
    key: Vec<u8>,
    auth: hmac::Key,
    salt: [u8; SALT_LEN],
    /// The next index to send.
    next: u32,
    /// Receiver: the highest index accepted and a bitmap of the 64 before it.
    highest: Option<u32>,
    window: u64,
}

impl Srtcp {
    /// A context keyed by `master`.
    pub fn new(master: &MasterKey) -> Result<Self, SrtpError> {
        let mut salt = [0; SALT_LEN];
        salt.copy_from_slice(&master.derive(LABEL_SALT, SALT_LEN)?);
        Ok(Self {
            key: master.derive(LABEL_ENCRYPTION, KEY_LEN)?,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &master.derive(LABEL_AUTH, 20)?),
            salt,
            next: 0,
            highest: None,
            window: 0,
        })
    }

    /// Encrypts and authenticates the compound RTCP packet in `packet` in place.
    pub fn protect(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < 8 {
            return Err(SrtpError::TooShort);
        }
        let index = self.next;
        self.next = (self.next + 1) & !E_FLAG;
        let iv = counter_iv(&self.salt, sender(packet), u64::from(index));
        aes_ctr(&self.key, iv, &mut packet[8..])?;
        packet.extend_from_slice(&(E_FLAG | index).to_be_bytes());
        let tag = hmac::sign(&self.auth, packet);
        packet.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        Ok(())
    }

    /// Checks and decrypts the SRTCP packet in `packet` in place (index and tag removed).
    pub fn unprotect(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < 8 + 4 + TAG_LEN {
            return Err(SrtpError::TooShort);
        }
        let body = packet.len() - TAG_LEN;
        let tag = hmac::sign(&self.auth, &packet[..body]);
        aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..TAG_LEN], &packet[body..])
            .map_err(|_| SrtpError::Auth)?;
        let word = u32::from_be_bytes([packet[body - 4], packet[body - 3], packet[body - 2], packet[body - 1]]);
        let index = word & !E_FLAG;
        if !self.fresh(index) {
            return Err(SrtpError::Replay);
        }
        packet.truncate(body - 4);
        if word & E_FLAG != 0 {
            let iv = counter_iv(&self.salt, sender(packet), u64::from(index));
            aes_ctr(&self.key, iv, &mut packet[8..])?;
        }
        self.accept(index);
        Ok(())
    }

    fn fresh(&self, index: u32) -> bool {
        let Some(highest) = self.highest else { return true };
        if index > highest {
            return true;
        }
        let behind = highest - index;
        behind < 64 && self.window & (1 << behind) == 0
    }

    fn accept(&mut self, index: u32) {
        match self.highest {
            Some(highest) if index <= highest => self.window |= 1 << (highest - index),
            Some(highest) if index - highest < 64 => {
                self.window = (self.window << (index - highest)) | 1;
                self.highest = Some(index);
            }
            _ => {
                self.window = 1;
                self.highest = Some(index);
            }
        }
    }
}

/// The sender SSRC of an RTCP packet (bytes 4..8).
fn sender(packet: &[u8]) -> u32 {
    u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Vec<u8> {
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 9];
        rr.extend_from_slice(&[0, 0, 0, 1, 26, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0]);
        rr
    }

    #[test]
    fn reports_round_trip_and_tampering_or_replay_is_refused() {
        let key = MasterKey::random();
        let (mut sender, mut receiver) = (Srtcp::new(&key).unwrap(), Srtcp::new(&key).unwrap());
        let plain = report();
        let mut packet = plain.clone();
        sender.protect(&mut packet).unwrap();
        assert_eq!(packet.len(), plain.len() + 4 + TAG_LEN);
        assert_eq!(&packet[..8], &plain[..8], "header and SSRC stay clear");
        assert_ne!(&packet[8..plain.len()], &plain[8..], "the rest is encrypted");
        assert_eq!(
            &packet[plain.len()..plain.len() + 4],
            &[0x80, 0, 0, 0],
            "E flag, index 0"
        );
        let copy = packet.clone();
        receiver.unprotect(&mut packet).unwrap();
        assert_eq!(packet, plain);
        let mut replayed = copy.clone();
        assert!(matches!(receiver.unprotect(&mut replayed), Err(SrtpError::Replay)));
        let mut second = plain.clone();
        sender.protect(&mut second).unwrap();
        let mut tampered = second.clone();
        tampered[10] ^= 1;
        assert!(matches!(receiver.unprotect(&mut tampered), Err(SrtpError::Auth)));
        receiver.unprotect(&mut second).unwrap();
        assert_eq!(second, plain);
        // Another key cannot read it.
        let mut stranger = Srtcp::new(&MasterKey::random()).unwrap();
        let mut third = plain.clone();
        sender.protect(&mut third).unwrap();
        assert!(stranger.unprotect(&mut third).is_err());
        assert!(matches!(
            receiver.unprotect(&mut vec![0x80; 10]),
            Err(SrtpError::TooShort)
        ));
    }
}
