//! The caller's audio toward the SFU: phone RTP payloads in, Opus frames with 48 kHz timestamps out.
//!
//! G.711 is expanded to PCM and encoded to Opus at 8 kHz (Opus codes narrowband natively, so there is no
//! resampling), in-band FEC on, DTX in silence with a keep-alive frame so the SFU does not collect the track.
//! A short gap in the phone's packets (up to 60 ms) is concealed by repeating the last frame, fading;
//! a longer one moves the timestamps on. An Opus phone is forwarded as it is (no transcoding).

use super::g711;
use super::sdp::PhoneCodec;
use ezk_g722::libg722::Bitrate;
use ezk_g722::libg722::decoder::Decoder as G722Decoder;
use ezk_g722::libg722::encoder::Encoder as G722Encoder;
use std::collections::VecDeque;
use std::sync::Arc;

/// A silent stream still sends one frame this often (in 20 ms frames: 400 ms).
const KEEPALIVE_FRAMES: u32 = 20;
/// Gaps up to this many 20 ms frames are concealed.
const MAX_CONCEALED: u64 = 3;

/// An Opus frame for the SFU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusFrame {
    /// Timestamp, 48 kHz.
    pub rtp_time: u64,
    /// The Opus packet.
    pub data: Vec<u8>,
    /// The 20 ms of PCM it encodes, at the phone's rate (`None` for a phone that sends Opus itself): the
    /// room's other phones are mixed from it, with no Opus decode and no coding loss.
    pub pcm: Option<Arc<[i16]>>,
}

/// Why the uplink could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("opus encoder: {0}")]
pub struct UplinkError(#[from] opus::Error);

/// Converts one phone's RTP payloads into Opus frames.
pub struct Uplink {
    codec: PhoneCodec,
    encoder: Option<opus::Encoder>,
    g722: Option<G722Decoder>,
    /// PCM samples in 20 ms, and 48 kHz ticks per PCM sample.
    frame_len: usize,
    ticks_per_sample: u64,
    pcm: VecDeque<i16>,
    last_frame: Vec<i16>,
    /// Extended phone timestamp expected next.
    expected: Option<u64>,
    last_ts: Option<u32>,
    extended_base: u64,
    /// 48 kHz timestamp of the next frame out.
    out_time: u64,
    silent_frames: u32,
    frame: Vec<i16>,
    packet: Vec<u8>,
}

impl Uplink {
    /// An uplink for a phone sending `codec`, encoding Opus at `complexity` (0–10).
    pub fn new(codec: PhoneCodec, complexity: i32) -> Result<Self, UplinkError> {
        let rate = codec.pcm_rate();
        let encoder = match codec {
            PhoneCodec::Opus => None,
            PhoneCodec::Pcmu | PhoneCodec::Pcma | PhoneCodec::G722 => {
                // Opus codes the phone's band natively: narrowband at 8 kHz, wideband at 16 kHz (G.722).
                let mut encoder = opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip)?;
                encoder.set_inband_fec(true)?;
                encoder.set_packet_loss_perc(5)?;
                encoder.set_dtx(true)?;
                encoder.set_bitrate(opus::Bitrate::Bits(if rate > 8_000 { 32_000 } else { 24_000 }))?;
                encoder.set_complexity(complexity)?;
                Some(encoder)
            }
        };
        let frame_len = rate as usize / 50;
        Ok(Self {
            codec,
            encoder,
            g722: (codec == PhoneCodec::G722).then(|| G722Decoder::new(Bitrate::Mode1_64000, false, false)),
            frame_len,
            ticks_per_sample: u64::from(48_000 / rate),
            pcm: VecDeque::new(),
            last_frame: vec![0; frame_len],
            expected: None,
            last_ts: None,
            extended_base: 0,
            out_time: 0,
            silent_frames: 0,
            frame: vec![0; frame_len],
            packet: vec![0; 400],
        })
    }

    fn extend(&mut self, ts: u32) -> u64 {
        if let Some(last) = self.last_ts {
            // Wrap-around forward: the high half moves on; an older timestamp just before a wrap goes back.
            if ts < last && last - ts > u32::MAX / 2 {
                self.extended_base += 1 << 32;
            } else if ts > last && ts - last > u32::MAX / 2 {
                return (self.extended_base + u64::from(ts)).saturating_sub(1 << 32);
            }
        }
        self.last_ts = Some(ts);
        self.extended_base + u64::from(ts)
    }

    /// Takes one RTP payload of the phone's codec; returns the Opus frames ready for the SFU.
    pub fn push(&mut self, timestamp: u32, payload: &[u8], out: &mut Vec<OpusFrame>) {
        let ts = self.extend(timestamp);
        if self.codec == PhoneCodec::Opus {
            out.push(OpusFrame {
                rtp_time: ts,
                data: payload.to_vec(),
                pcm: None,
            });
            return;
        }
        match self.expected {
            Some(expected) if ts < expected => return, // late or duplicate: its time has passed
            Some(expected) if ts > expected => {
                let missing = (ts - expected) / 160;
                if missing <= MAX_CONCEALED {
                    for n in 0..missing {
                        let gain = 1 << (n + 1);
                        self.pcm.extend(self.last_frame.iter().map(|s| s / gain));
                    }
                } else {
                    self.flush_partial();
                    self.out_time += (ts - expected) * 6;
                }
            }
            _ => {}
        }
        // One payload byte is one tick of the 8 kHz RTP clock for G.711 and G.722 alike.
        self.expected = Some(ts + payload.len() as u64);
        match (self.codec, self.g722.as_mut()) {
            (PhoneCodec::Pcmu, _) => self.pcm.extend(payload.iter().map(|&b| g711::ulaw_to_linear(b))),
            (PhoneCodec::G722, Some(decoder)) => self.pcm.extend(decoder.decode(payload)),
            _ => self.pcm.extend(payload.iter().map(|&b| g711::alaw_to_linear(b))),
        }
        self.drain(out);
    }

    fn flush_partial(&mut self) {
        let partial = self.pcm.len();
        self.pcm.clear();
        self.out_time += partial as u64 * self.ticks_per_sample;
    }

    fn drain(&mut self, out: &mut Vec<OpusFrame>) {
        let Some(encoder) = self.encoder.as_mut() else { return };
        while self.pcm.len() >= self.frame_len {
            for (dst, src) in self.frame.iter_mut().zip(self.pcm.drain(..self.frame_len)) {
                *dst = src;
            }
            self.last_frame.copy_from_slice(&self.frame);
            let rtp_time = self.out_time;
            self.out_time += 960;
            let Ok(len) = encoder.encode(&self.frame, &mut self.packet) else {
                continue;
            };
            // One or two bytes: DTX says nothing needs sending, except a keep-alive now and then.
            if len <= 2 {
                self.silent_frames += 1;
                if self.silent_frames % KEEPALIVE_FRAMES != 1 {
                    continue;
                }
            } else {
                self.silent_frames = 0;
            }
            out.push(OpusFrame {
                rtp_time,
                data: self.packet[..len].to_vec(),
                pcm: Some(Arc::from(self.frame.as_slice())),
            });
        }
    }
}

/// Encodes 20 ms of mixed PCM for the phone: G.711 bytes, or an Opus packet.
pub struct Downlink {
    codec: PhoneCodec,
    encoder: Option<opus::Encoder>,
    g722: Option<G722Encoder>,
}

impl Downlink {
    /// An encoder toward a phone receiving `codec` (Opus at `complexity`, 0–10).
    pub fn new(codec: PhoneCodec, complexity: i32) -> Result<Self, UplinkError> {
        let encoder = match codec {
            PhoneCodec::Opus => {
                let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)?;
                encoder.set_inband_fec(true)?;
                encoder.set_complexity(complexity)?;
                Some(encoder)
            }
            _ => None,
        };
        let g722 = (codec == PhoneCodec::G722).then(|| G722Encoder::new(Bitrate::Mode1_64000, false, false));
        Ok(Self { codec, encoder, g722 })
    }

    /// Encodes one frame of PCM into `payload` (replacing its content).
    pub fn encode(&mut self, pcm: &[i16], payload: &mut Vec<u8>) {
        payload.clear();
        match (self.codec, self.encoder.as_mut()) {
            (PhoneCodec::Pcmu, _) => payload.extend(pcm.iter().map(|&s| g711::linear_to_ulaw(s))),
            (PhoneCodec::Pcma, _) => payload.extend(pcm.iter().map(|&s| g711::linear_to_alaw(s))),
            (PhoneCodec::G722, _) => {
                if let Some(encoder) = self.g722.as_mut() {
                    payload.extend(encoder.encode(pcm));
                }
            }
            (PhoneCodec::Opus, Some(encoder)) => {
                payload.resize(400, 0);
                let len = encoder.encode(pcm, payload).unwrap_or(0);
                payload.truncate(len);
            }
            (PhoneCodec::Opus, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulaw_tone(n: usize, offset: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i + offset) as f64 * 440.0 * 2.0 * std::f64::consts::PI / 8_000.0).sin() * 8_000.0)
            .map(|s| g711::linear_to_ulaw(s as i16))
            .collect()
    }

    #[test]
    fn g711_becomes_20ms_opus_frames_with_48khz_timestamps() {
        let mut uplink = Uplink::new(PhoneCodec::Pcmu, 5).unwrap();
        let mut out = Vec::new();
        // 30 ms packets (ptime 30) still give 20 ms Opus frames.
        for n in 0..10u32 {
            uplink.push(1_000 + n * 240, &ulaw_tone(240, n as usize * 240), &mut out);
        }
        assert_eq!(out.len(), 15);
        let times: Vec<u64> = out.iter().map(|f| f.rtp_time).collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] == 960), "{times:?}");
        let mut decoder = opus::Decoder::new(8_000, opus::Channels::Mono).unwrap();
        let mut pcm = vec![0i16; 160];
        let energy: f64 = out[5..]
            .iter()
            .map(|f| {
                let n = decoder.decode(&f.data, &mut pcm, false).unwrap();
                pcm[..n].iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / n as f64
            })
            .sum::<f64>()
            / 10.0;
        assert!(energy.sqrt() > 2_000.0, "the tone survives: rms {}", energy.sqrt());
    }

    #[test]
    fn gaps_are_concealed_or_skipped_and_silence_is_sent_sparsely() {
        let mut uplink = Uplink::new(PhoneCodec::Pcma, 5).unwrap();
        let mut out = Vec::new();
        let silence = vec![g711::linear_to_alaw(0); 160];
        uplink.push(0, &silence, &mut out);
        uplink.push(3 * 160, &silence, &mut out); // two packets lost: concealed
        uplink.push(100 * 160, &silence, &mut out); // a long gap: time moves on
        uplink.push(50 * 160, &silence, &mut out); // late: dropped
        let times: Vec<u64> = out.iter().map(|f| f.rtp_time).collect();
        assert_eq!(times.first(), Some(&0));
        for n in 101..200u32 {
            uplink.push(n * 160, &silence, &mut out);
        }
        assert!(out.len() < 20, "DTX: {} frames for 2 s of silence", out.len());
        assert!(out.len() >= 5, "keep-alive frames: {}", out.len());
        assert!(out.iter().any(|f| f.rtp_time >= 100 * 960), "timestamps follow the gap");
    }

    #[test]
    fn opus_phones_are_forwarded_and_timestamps_survive_wrap_around() {
        let mut uplink = Uplink::new(PhoneCodec::Opus, 5).unwrap();
        let mut out = Vec::new();
        uplink.push(u32::MAX - 959, &[1, 2, 3], &mut out);
        uplink.push(0, &[4, 5, 6], &mut out);
        assert_eq!(out[1].rtp_time - out[0].rtp_time, 960);
        assert_eq!(out[1].data, [4, 5, 6]);
    }

    #[test]
    fn g722_keeps_wideband_audio_through_opus() {
        // A 5 kHz tone exists only in wideband: G.711 could not carry it.
        let tone: Vec<i16> = (0..16_000)
            .map(|i| ((f64::from(i) * 5_000.0 * 2.0 * std::f64::consts::PI / 16_000.0).sin() * 8_000.0) as i16)
            .collect();
        let mut phone = G722Encoder::new(Bitrate::Mode1_64000, false, false);
        let mut uplink = Uplink::new(PhoneCodec::G722, 5).unwrap();
        let mut out = Vec::new();
        for (n, chunk) in tone.chunks(320).enumerate() {
            let payload = phone.encode(chunk);
            assert_eq!(payload.len(), 160, "64 kbit/s: one byte per 8 kHz tick");
            uplink.push(n as u32 * 160, &payload, &mut out);
        }
        assert_eq!(out.len(), 50);
        assert!(out.windows(2).all(|w| w[1].rtp_time - w[0].rtp_time == 960));
        let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0i16; 960];
        for frame in &out {
            let n = decoder.decode(&frame.data, &mut buf, false).unwrap();
            pcm.extend_from_slice(&buf[..n]);
        }
        let share = crate::ingress::sip::mixer::tests::share_of(&pcm[24_000..], 48_000, 5_000.0);
        assert!(share > 0.5, "the 5 kHz tone survives: {share:.3}");
        // And back: 16 kHz PCM → G.722 → PCM.
        let mut downlink = Downlink::new(PhoneCodec::G722, 5).unwrap();
        let mut payload = Vec::new();
        downlink.encode(&tone[..320], &mut payload);
        assert_eq!(payload.len(), 160);
    }

    #[test]
    fn downlink_encodes_for_each_codec() {
        let pcm = vec![0i16; 160];
        let mut payload = Vec::new();
        Downlink::new(PhoneCodec::Pcmu, 5).unwrap().encode(&pcm, &mut payload);
        assert_eq!(payload, vec![0xff; 160]);
        Downlink::new(PhoneCodec::Pcma, 5).unwrap().encode(&pcm, &mut payload);
        assert_eq!(payload, vec![0xd5; 160]);
        Downlink::new(PhoneCodec::Opus, 5)
            .unwrap()
            .encode(&[0i16; 960], &mut payload);
        assert!(!payload.is_empty() && payload.len() < 400);
    }
}
