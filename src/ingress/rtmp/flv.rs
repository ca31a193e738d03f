//! FLV tag bodies as RTMP carries them (sans-IO): H.264 (AVC) and AAC, the Enhanced RTMP forms (video
//! FourCCs `avc1`, `hvc1`, `av01`, `vp09`; audio `Opus`, `mp4a`), plus the conversion of AVC access units from
//! length-prefixed NAL units to Annex-B for WebRTC. Malformed tags are errors, never panics.

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

/// The video codecs a publisher may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 (legacy FLV codec 7, or Enhanced RTMP `avc1`).
    Avc,
    /// H.265 (Enhanced RTMP `hvc1`).
    Hevc,
    /// AV1 (Enhanced RTMP `av01`).
    Av1,
    /// VP9 (Enhanced RTMP `vp09`).
    Vp9,
}

impl VideoCodec {
    fn from_fourcc(fourcc: u32) -> Option<Self> {
        match &fourcc.to_be_bytes() {
            b"avc1" => Some(Self::Avc),
            b"hvc1" => Some(Self::Hevc),
            b"av01" => Some(Self::Av1),
            b"vp09" => Some(Self::Vp9),
            _ => None,
        }
    }

    /// The codec's name as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avc => "h264",
            Self::Hevc => "h265",
            Self::Av1 => "av1",
            Self::Vp9 => "vp9",
        }
    }
}

/// A video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// A sequence header: the codec's configuration record (avcC, hvcC, av1C, vpcC).
    Config {
        /// The codec.
        codec: VideoCodec,
        /// The record.
        record: &'a [u8],
    },
    /// One access unit (AVC/HEVC: length-prefixed NAL units; AV1: a temporal unit of OBUs; VP9: a frame).
    Frame {
        /// The codec.
        codec: VideoCodec,
        /// A keyframe.
        keyframe: bool,
        /// Composition time offset in milliseconds (pts - dts).
        cts: i32,
        /// The coded data.
        data: &'a [u8],
    },
    /// End of sequence, metadata, or a video info/command frame: nothing to forward.
    Ignored,
}

/// Enhanced RTMP packet types that carry a `ModEx` prefix before the real one (video 7, audio 7).
const MOD_EX: u8 = 7;

/// Skips the `ModEx` extensions in front of an Enhanced RTMP packet; returns the real packet type.
fn skip_mod_ex(r: &mut Reader<'_>, mut packet_type: u8) -> Result<u8, FlvError> {
    let mut rounds = 0;
    while packet_type == MOD_EX {
        rounds += 1;
        if rounds > 8 {
            return Err(FlvError::Truncated(r.what));
        }
        let mut size = usize::from(r.u8()?) + 1;
        if size == 256 {
            size = usize::from(r.u16()?) + 1;
        }
        r.bytes(size)?;
        packet_type = r.u8()? & 0x0f;
    }
    Ok(packet_type)
}

/// Reads a video tag body.
pub fn video_tag(body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let mut r = Reader::new(body, "video");
    let first = r.u8()?;
    if first & 0x80 != 0 {
        return enhanced_video(&mut r, first);
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
        0 => Ok(VideoTag::Config {
            codec: VideoCodec::Avc,
            record: r.rest(),
        }),
        1 => Ok(VideoTag::Frame {
            codec: VideoCodec::Avc,
            keyframe: frame_type == 1,
            cts,
            data: r.rest(),
        }),
        _ => Ok(VideoTag::Ignored),
    }
}

/// An Enhanced RTMP video tag (`first` has the ex-header bit): frame type, packet type, FourCC, body.
fn enhanced_video<'a>(r: &mut Reader<'a>, first: u8) -> Result<VideoTag<'a>, FlvError> {
    const MULTITRACK: u8 = 6;
    let frame_type = (first >> 4) & 0x07;
    let packet_type = skip_mod_ex(r, first & 0x0f)?;
    if packet_type == MULTITRACK {
        return Err(FlvError::Unsupported {
            kind: "video multitrack",
            id: u32::from(packet_type),
        });
    }
    let fourcc = r.u32()?;
    let codec = VideoCodec::from_fourcc(fourcc).ok_or(FlvError::Unsupported {
        kind: "video",
        id: fourcc,
    })?;
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    let keyframe = frame_type == 1;
    match packet_type {
        0 => Ok(VideoTag::Config {
            codec,
            record: r.rest(),
        }),
        // Coded frames: AVC and HEVC carry a signed composition time offset first.
        1 => {
            let cts = if matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) {
                r.i24()?
            } else {
                0
            };
            Ok(VideoTag::Frame {
                codec,
                keyframe,
                cts,
                data: r.rest(),
            })
        }
        // Coded frames with an implicit offset of zero.
        3 => Ok(VideoTag::Frame {
            codec,
            keyframe,
            cts: 0,
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
    /// Opus sequence start: its `OpusHead` (may be empty).
    OpusConfig(&'a [u8]),
    /// One Opus packet.
    OpusFrame(&'a [u8]),
    /// Sequence end or a multichannel description: nothing to forward.
    Ignored,
}

/// Reads an audio tag body.
pub fn audio_tag(body: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    const EX_HEADER: u8 = 9;
    let mut r = Reader::new(body, "audio");
    let first = r.u8()?;
    let format = first >> 4;
    if format == EX_HEADER {
        return enhanced_audio(&mut r, first & 0x0f);
    }
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

/// An Enhanced RTMP audio tag: packet type (low nibble of the first byte), FourCC, body.
fn enhanced_audio<'a>(r: &mut Reader<'a>, packet_type: u8) -> Result<AudioTag<'a>, FlvError> {
    const MULTITRACK: u8 = 5;
    let packet_type = skip_mod_ex(r, packet_type)?;
    if packet_type == MULTITRACK {
        return Err(FlvError::Unsupported {
            kind: "audio multitrack",
            id: u32::from(packet_type),
        });
    }
    let fourcc = r.u32()?;
    let opus = match &fourcc.to_be_bytes() {
        b"Opus" => true,
        b"mp4a" => false,
        _ => {
            return Err(FlvError::Unsupported {
                kind: "audio",
                id: fourcc,
            });
        }
    };
    Ok(match (packet_type, opus) {
        (0, true) => AudioTag::OpusConfig(r.rest()),
        (0, false) => AudioTag::AacConfig(r.rest()),
        (1, true) => AudioTag::OpusFrame(r.rest()),
        (1, false) => AudioTag::AacFrame(r.rest()),
        _ => AudioTag::Ignored,
    })
}

/// The channel count of an `OpusHead` (RFC 7845 §5.1); an empty header means stereo. `None`: not an
/// OpusHead, or more than two channels (a mapping family WebRTC's Opus does not carry).
pub fn opus_channels(head: &[u8]) -> Option<u8> {
    if head.is_empty() {
        return Some(2);
    }
    if head.len() < 19 || &head[..8] != b"OpusHead" {
        return None;
    }
    let (channels, family) = (head[9], head[18]);
    (family == 0 && (1..=2).contains(&channels)).then_some(channels)
}

/// The OBUs of an AV1 temporal unit (low-overhead format: every OBU but the last has its size field), as
/// (OBU type, the whole OBU with its header); `None` when the OBUs do not add up.
pub fn av1_obus(mut tu: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut obus = Vec::new();
    while let Some(&header) = tu.first() {
        let kind = (header >> 3) & 0x0f;
        let mut used = 1 + usize::from(header & 0x04 != 0); // header, extension
        if header & 0x02 == 0 {
            // No size field: the OBU runs to the end.
            tu.get(used..)?;
            obus.push((kind, tu));
            break;
        }
        let mut size = 0usize;
        for i in 0..8 {
            let byte = *tu.get(used)?;
            size |= usize::from(byte & 0x7f).checked_shl(7 * i)?;
            used += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let end = used.checked_add(size)?;
        obus.push((kind, tu.get(..end)?));
        tu = &tu[end..];
    }
    Some(obus)
}

/// AV1 in FLV (as in MP4) may keep the sequence header only in the `av1C` record; a decoder needs it before
/// the first keyframe. Returns the keyframe with the record's configuration OBUs in front when it has no
/// sequence header of its own (`None`: it has one, or the record has none).
pub fn av1_with_sequence_header(record: &[u8], keyframe: &[u8]) -> Option<Vec<u8>> {
    const SEQUENCE_HEADER: u8 = 1;
    let config = record.get(4..).filter(|c| !c.is_empty())?;
    if av1_obus(keyframe).is_some_and(|obus| obus.iter().any(|(kind, _)| *kind == SEQUENCE_HEADER)) {
        return None;
    }
    Some([config, keyframe].concat())
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
            VideoTag::Config {
                codec: VideoCodec::Avc,
                record: &[1, 2]
            }
        );
        assert_eq!(
            video_tag(&[0x27, 1, 0xff, 0xff, 0xd8, 9]).unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Avc,
                keyframe: false,
                cts: -40,
                data: &[9]
            }
        );
        assert!(matches!(
            video_tag(&[0x12, 0]),
            Err(FlvError::Unsupported { kind: "video", id: 2 })
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

    #[test]
    fn enhanced_video_tags() {
        // Keyframe + SequenceStart, hvc1.
        assert_eq!(
            video_tag(b"\x90hvc1\x01\x02").unwrap(),
            VideoTag::Config {
                codec: VideoCodec::Hevc,
                record: &[1, 2]
            }
        );
        // Inter frame + CodedFrames, hvc1: a signed 24-bit composition offset.
        assert_eq!(
            video_tag(b"\xa1hvc1\xff\xff\xd8\x09").unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Hevc,
                keyframe: false,
                cts: -40,
                data: &[9]
            }
        );
        // Keyframe + CodedFramesX: no offset field.
        assert_eq!(
            video_tag(b"\x93hvc1\x07").unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Hevc,
                keyframe: true,
                cts: 0,
                data: &[7]
            }
        );
        // AV1 coded frames carry no offset; a ModEx prefix (2 bytes of nanosecond offset) is skipped.
        assert_eq!(
            video_tag(b"\x97\x01\x00\x10\x01av01\x12\x00").unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Av1,
                keyframe: true,
                cts: 0,
                data: &[0x12, 0]
            }
        );
        assert_eq!(video_tag(b"\xd2vp09").unwrap(), VideoTag::Ignored); // command frame
        assert_eq!(video_tag(b"\x92avc1").unwrap(), VideoTag::Ignored); // sequence end
        assert!(matches!(
            video_tag(b"\x90xyz1\x01"),
            Err(FlvError::Unsupported { kind: "video", .. })
        ));
        assert!(matches!(
            video_tag(b"\x96\x00avc1"),
            Err(FlvError::Unsupported {
                kind: "video multitrack",
                ..
            })
        ));
        // Truncated everywhere, and ModEx sizes that run past the end: errors, never panics.
        let whole = b"\x97\xff\x00\x10\x01hvc1\x00\x00\x00\x05";
        for end in 0..whole.len() {
            assert!(video_tag(&whole[..end]).is_err(), "{end}");
        }
        assert!(video_tag(&[0x97; 64]).is_err());
    }

    #[test]
    fn av1_sequence_header_from_the_record_when_the_keyframe_lacks_one() {
        // A sequence header OBU (type 1, size 2) and a frame OBU (type 6, size 3, with an extension byte).
        let sequence_header = [0x0a, 0x02, 0xaa, 0xbb];
        let frame = [0x36, 0x00, 0x03, 1, 2, 3];
        let record = [&[0x81, 0x00, 0x0c, 0x00][..], &sequence_header].concat();
        assert_eq!(av1_obus(&frame), Some(vec![(6, &frame[..])]));
        assert_eq!(
            av1_with_sequence_header(&record, &frame),
            Some([&sequence_header[..], &frame].concat())
        );
        let whole = [&sequence_header[..], &frame].concat();
        assert_eq!(av1_obus(&whole), Some(vec![(1, &sequence_header[..]), (6, &frame[..])]));
        assert_eq!(av1_with_sequence_header(&record, &whole), None);
        assert_eq!(av1_with_sequence_header(&record[..4], &frame), None);
        // Sizes past the end: not a sequence header, no panic.
        assert_eq!(av1_obus(&[0x0a, 0x7f]), None);
        assert_eq!(
            av1_obus(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            None
        );
    }

    #[test]
    fn enhanced_audio_tags_and_opus_head() {
        assert_eq!(audio_tag(b"\x90Opus").unwrap(), AudioTag::OpusConfig(&[]));
        assert_eq!(audio_tag(b"\x91Opus\xfc\x01").unwrap(), AudioTag::OpusFrame(&[0xfc, 1]));
        assert_eq!(
            audio_tag(b"\x90mp4a\x11\x90").unwrap(),
            AudioTag::AacConfig(&[0x11, 0x90])
        );
        assert_eq!(audio_tag(b"\x91mp4a\x07").unwrap(), AudioTag::AacFrame(&[7]));
        assert_eq!(audio_tag(b"\x92Opus").unwrap(), AudioTag::Ignored);
        assert!(matches!(
            audio_tag(b"\x90fLaC"),
            Err(FlvError::Unsupported { kind: "audio", .. })
        ));
        for end in 0..5 {
            assert!(audio_tag(&b"\x91Opus"[..end]).is_err());
        }
        let mut head = b"OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00".to_vec();
        assert_eq!(opus_channels(&head), Some(1));
        head[9] = 6;
        head[18] = 1;
        assert_eq!(opus_channels(&head), None); // surround: not for WebRTC
        assert_eq!(opus_channels(b"OpusTags"), None);
        assert_eq!(opus_channels(&[]), Some(2));
    }
}
