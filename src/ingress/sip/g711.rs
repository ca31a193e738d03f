//! G.711 µ-law (PCMU) and A-law (PCMA): 8-bit companded samples at 8 kHz, per ITU-T G.711.

/// µ-law byte → linear 16-bit sample.
pub fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear 16-bit sample → µ-law byte.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const CLIP: i32 = 32_635;
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(CLIP) + 0x84;
    let exponent = (31 - (pcm as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (pcm >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// A-law byte → linear 16-bit sample.
pub fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// Linear 16-bit sample → A-law byte.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let pcm = i32::from(sample);
    let (sign, magnitude) = if pcm >= 0 { (0x80u8, pcm) } else { (0u8, -pcm - 1) };
    let magnitude = magnitude.min(32_767);
    let byte = if magnitude < 256 {
        (magnitude >> 4) as u8
    } else {
        let exponent = (31 - (magnitude as u32).leading_zeros()) as i32 - 7; // 1..=7
        let mantissa = (magnitude >> (exponent + 3)) & 0x0f;
        ((exponent << 4) as u8) | mantissa as u8
    };
    (sign | byte) ^ 0x55
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_round_trips_within_quantisation_error() {
        for sample in (-32_000i32..32_000).step_by(7) {
            let back = i32::from(ulaw_to_linear(linear_to_ulaw(sample as i16)));
            let tolerance = (sample.abs() / 16).max(8);
            assert!((back - sample).abs() <= tolerance, "{sample} -> {back}");
        }
        // Known code points of G.711 µ-law.
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
    }

    #[test]
    fn alaw_round_trips_within_quantisation_error() {
        for sample in (-32_000i32..32_000).step_by(7) {
            let back = i32::from(alaw_to_linear(linear_to_alaw(sample as i16)));
            let tolerance = (sample.abs() / 16).max(16);
            assert!((back - sample).abs() <= tolerance, "{sample} -> {back}");
        }
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0xaa), 32_256);
    }

    #[test]
    fn every_byte_decodes_and_re_encodes_to_itself() {
        for byte in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(byte)), byte, "alaw {byte:#x}");
            let ulaw = linear_to_ulaw(ulaw_to_linear(byte));
            // µ-law has two zeros (0x7f and 0xff); every other code maps to itself.
            assert!(
                ulaw == byte || (byte == 0x7f && ulaw == 0xff),
                "ulaw {byte:#x} -> {ulaw:#x}"
            );
        }
    }
}
