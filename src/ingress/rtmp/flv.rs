//! FLV tag bodies as RTMP carries them (sans-IO): H.264 (AVC) and AAC, plus the conversion of AVC access
//! units from length-prefixed NAL units to Annex-B for WebRTC. Malformed tags are errors, never panics.

/// Why a tag could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The tag ended early.
    #[error("truncated {0} tag")]
    Truncated(&'static str),
    /// A codec we do not take.
    #[error("unsupported {kind} codec {id}")]
    Unsupported {
        /// `video` or `audio`.
        kind: &'static str,
        /// The FLV codec id (or an Enhanced RTMP FourCC as a number).
        id: u32,
    },
    /// The AVC configuration record is invalid.
    #[error("invalid AVC configuration record")]
    BadAvcConfig,
}

/// The SPS/PPS and NAL length size of an H.264 stream (from its AVCDecoderConfigurationRecord).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// `profile_idc` (66 baseline, 77 main, 100 high, ...).
    pub profile: u8,
    /// `constraint_set` flags.
    pub compatibility: u8,
    /// `level_idc`.
    pub level: u8,
    /// Bytes of each NAL length prefix (1, 2 or 4).
    pub nal_length_size: usize,
    /// Sequence parameter sets.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets.
    pub pps: Vec<Vec<u8>>,
    /// The record itself (GStreamer's `codec_data`).
    pub record: Vec<u8>,
}

impl AvcConfig {
    /// Parses an AVCDecoderConfigurationRecord.
    pub fn parse(record: &[u8]) -> Result<Self, FlvError> {
        let mut r = Reader::new(record, "avc config");
        let version = r.u8()?;
        let (profile, compatibility, level) = (r.u8()?, r.u8()?, r.u8()?);
        let nal_length_size = usize::from(r.u8()? & 0x03) + 1;
        if version != 1 || nal_length_size == 3 {
            return Err(FlvError::BadAvcConfig);
        }
        let sps_count = r.u8()? & 0x1f;
        let mut sps = Vec::new();
        for _ in 0..sps_count {
            let len = usize::from(r.u16()?);
            sps.push(r.bytes(len)?.to_vec());
        }
        let pps_count = r.u8()?;
        let mut pps = Vec::new();
        for _ in 0..pps_count {
            let len = usize::from(r.u16()?);
            pps.push(r.bytes(len)?.to_vec());
        }
        if sps.is_empty() || pps.is_empty() {
            return Err(FlvError::BadAvcConfig);
        }
        Ok(Self {
            profile,
            compatibility,
            level,
            nal_length_size,
            sps,
            pps,
            record: record.to_vec(),
        })
    }

    /// Whether browsers decode this profile (constrained baseline, baseline, main, high).
    pub fn browser_profile(&self) -> bool {
        matches!(self.profile, 66 | 77 | 100)
    }

    /// Converts one access unit of length-prefixed NAL units to Annex-B; with `parameter_sets`, the SPS and
    /// PPS go first (done before every keyframe so a late joiner can decode).
    pub fn to_annex_b(&self, access_unit: &[u8], parameter_sets: bool) -> Result<Vec<u8>, FlvError> {
        const START: [u8; 4] = [0, 0, 0, 1];
        let mut out = Vec::with_capacity(access_unit.len() + 64);
        if parameter_sets {
            for nal in self.sps.iter().chain(&self.pps) {
                out.extend_from_slice(&START);
                out.extend_from_slice(nal);
            }
        }
        let mut r = Reader::new(access_unit, "avc nalu");
        while !r.is_empty() {
            let len = match self.nal_length_size {
                1 => usize::from(r.u8()?),
                2 => usize::from(r.u16()?),
                _ => r.u32()? as usize,
            };
            let nal = r.bytes(len)?;
            // Parameter sets inside the stream are dropped when ours were just written.
            let nal_type = nal.first().map(|b| b & 0x1f);
            if parameter_sets && matches!(nal_type, Some(7 | 8)) {
                continue;
            }
            out.extend_from_slice(&START);
            out.extend_from_slice(nal);
        }
        Ok(out)
    }
}

/// A video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// AVC sequence header (configuration record).
    AvcConfig(&'a [u8]),
    /// One AVC access unit (length-prefixed NAL units).
    AvcFrame {
        /// A keyframe (IDR).
        keyframe: bool,
        /// Composition time offset in milliseconds (pts - dts).
        cts: i32,
        /// The NAL units.
        data: &'a [u8],
    },
    /// AVC end of sequence, or a video info/command frame: nothing to forward.
    Ignored,
}

/// Reads a video tag body.
pub fn video_tag(body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let mut r = Reader::new(body, "video");
    let first = r.u8()?;
    if first & 0x80 != 0 {
        // Enhanced RTMP: the FourCC follows (hvc1, av01, vp09...).
        let fourcc = r.u32()?;
        return Err(FlvError::Unsupported {
            kind: "video",
            id: fourcc,
        });
    }
    let (frame_type, codec) = (first >> 4, first & 0x0f);
    if codec != 7 {
        return Err(FlvError::Unsupported {
            kind: "video",
            id: u32::from(codec),
        });
    }
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    let packet_type = r.u8()?;
    let cts = r.i24()?;
    match packet_type {
        0 => Ok(VideoTag::AvcConfig(r.rest())),
        1 => Ok(VideoTag::AvcFrame {
            keyframe: frame_type == 1,
            cts,
            data: r.rest(),
        }),
        _ => Ok(VideoTag::Ignored),
    }
}

/// An audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AAC AudioSpecificConfig.
    AacConfig(&'a [u8]),
    /// One raw AAC frame.
    AacFrame(&'a [u8]),
}

/// Reads an audio tag body.
pub fn audio_tag(body: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let mut r = Reader::new(body, "audio");
    let format = r.u8()? >> 4;
    if format != 10 {
        return Err(FlvError::Unsupported {
            kind: "audio",
            id: u32::from(format),
        });
    }
    match r.u8()? {
        0 => Ok(AudioTag::AacConfig(r.rest())),
        _ => Ok(AudioTag::AacFrame(r.rest())),
    }
}

/// Sample rate and channel count from an AudioSpecificConfig.
pub fn aac_rate_and_channels(config: &[u8]) -> Option<(u32, u8)> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let (a, b) = (*config.first()?, *config.get(1)?);
    let index = ((a & 0x07) << 1) | (b >> 7);
    let channels = (b >> 3) & 0x0f;
    Some((*RATES.get(usize::from(index))?, channels))
}

struct Reader<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, what }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], FlvError> {
        if self.data.len() < n {
            return Err(FlvError::Truncated(self.what));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FlvError> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FlvError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, FlvError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i24(&mut self) -> Result<i32, FlvError> {
        let b = self.bytes(3)?;
        let value = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
        Ok((value << 8) >> 8) // sign-extend 24 bits
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Vec<u8> {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xaa];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut r = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, sps.len() as u8];
        r.extend_from_slice(&sps);
        r.extend_from_slice(&[1, 0, pps.len() as u8]);
        r.extend_from_slice(&pps);
        r
    }

    #[test]
    fn avc_config_and_annex_b() {
        let config = AvcConfig::parse(&record()).unwrap();
        assert_eq!((config.profile, config.nal_length_size), (66, 4));
        assert!(config.browser_profile());
        let idr = [0x65, 1, 2, 3];
        let sei = [0x06, 9];
        let mut au = Vec::new();
        for nal in [&sei[..], &idr[..]] {
            au.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            au.extend_from_slice(nal);
        }
        let out = config.to_annex_b(&au, true).unwrap();
        assert_eq!(
            out,
            [
                &[0, 0, 0, 1][..],
                &config.sps[0],
                &[0, 0, 0, 1],
                &config.pps[0],
                &[0, 0, 0, 1],
                &sei,
                &[0, 0, 0, 1],
                &idr
            ]
            .concat()
        );
        let mut lying = au.clone();
        lying[3] = 200; // length beyond the end
        assert_eq!(config.to_annex_b(&lying, false), Err(FlvError::Truncated("avc nalu")));
    }

    #[test]
    fn tags_parse_and_garbage_is_an_error() {
        assert_eq!(
            video_tag(&[0x17, 0, 0, 0, 0, 1, 2]).unwrap(),
            VideoTag::AvcConfig(&[1, 2])
        );
        assert_eq!(
            video_tag(&[0x27, 1, 0xff, 0xff, 0xd8, 9]).unwrap(),
            VideoTag::AvcFrame {
                keyframe: false,
                cts: -40,
                data: &[9]
            }
        );
        assert!(matches!(
            video_tag(&[0x12, 0]),
            Err(FlvError::Unsupported { kind: "video", id: 2 })
        ));
        assert!(matches!(
            video_tag(&[0x90, b'h', b'v', b'c', b'1']),
            Err(FlvError::Unsupported { .. })
        ));
        assert_eq!(
            audio_tag(&[0xaf, 0, 0x11, 0x90]).unwrap(),
            AudioTag::AacConfig(&[0x11, 0x90])
        );
        assert_eq!(audio_tag(&[0xaf, 1, 7]).unwrap(), AudioTag::AacFrame(&[7]));
        assert_eq!(aac_rate_and_channels(&[0x11, 0x90]), Some((48000, 2)));
        assert_eq!(aac_rate_and_channels(&[0x12, 0x08]), Some((44100, 1)));
        for garbage in [&[][..], &[0x17][..], &[0x17, 1, 0][..], &[0xaf][..], &[0x2f, 1][..]] {
            assert!(video_tag(garbage).is_err() || audio_tag(garbage).is_err());
        }
        assert_eq!(AvcConfig::parse(&[1, 2, 3]), Err(FlvError::Truncated("avc config")));
    }
}
