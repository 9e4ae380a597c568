//! G.711 (ITU-T G.711) μ-law and A-law: 8 kHz telephone audio, one byte a
//! sample. The codec WebRTC and Flash have in common (FLV SoundFormat 8 and
//! 7, RTP payload types 0 and 8).

/// Which G.711 companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// μ-law (PCMU; FLV SoundFormat 8).
    Mu,
    /// A-law (PCMA; FLV SoundFormat 7).
    A,
}

/// G.711's sample rate.
pub const SAMPLE_RATE: u32 = 8000;

impl Law {
    /// One 16-bit linear sample, companded.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Mu => mulaw_encode(sample),
            Law::A => alaw_encode(sample),
        }
    }

    /// One companded byte, as a 16-bit linear sample.
    pub fn decode(self, byte: u8) -> i16 {
        match self {
            Law::Mu => mulaw_decode(byte),
            Law::A => alaw_decode(byte),
        }
    }

    /// Re-compands a byte of the other law into this one.
    pub fn from_other(self, byte: u8) -> u8 {
        match self {
            Law::Mu => mulaw_encode(alaw_decode(byte)),
            Law::A => alaw_encode(mulaw_decode(byte)),
        }
    }

    /// The FLV audio tag header byte for this law: SoundFormat 8 (μ) or 7
    /// (A), the rate field 0 (G.711 is always 8 kHz), 16-bit, mono — what
    /// FFmpeg writes and Flash reads.
    pub fn flv_header(self) -> u8 {
        match self {
            Law::Mu => 0x82,
            Law::A => 0x72,
        }
    }
}

const MU_BIAS: i32 = 0x84;
const MU_CLIP: i32 = 32635;

fn mulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(MU_CLIP) + MU_BIAS;
    let exponent = (7 - (s << 17).leading_zeros().min(7)) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

fn mulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = (((mantissa << 3) + MU_BIAS) << exponent) - MU_BIAS;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

fn alaw_encode(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes
    let (mask, mut s) = if sample >= 0 {
        (0xd5u8, i32::from(sample) >> 3)
    } else {
        (0x55u8, (-i32::from(sample) - 1).max(0) >> 3)
    };
    s = s.min(0x0fff);
    let byte = if s < 32 {
        (s >> 1) as u8
    } else {
        let exponent = (31 - (s as u32).leading_zeros()) as i32 - 4;
        ((exponent << 4) as u8) | ((s >> exponent) & 0x0f) as u8
    };
    byte ^ mask
}

fn alaw_decode(byte: u8) -> i16 {
    let b = byte ^ 0x55;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if b & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_mulaw_values() {
        // reference points of the G.711 μ-law table
        assert_eq!(mulaw_encode(0), 0xff);
        assert_eq!(mulaw_encode(-1), 0x7f);
        assert_eq!(mulaw_encode(i16::MAX), 0x80);
        assert_eq!(mulaw_encode(i16::MIN), 0x00);
        assert_eq!(mulaw_decode(0xff), 0);
        assert_eq!(mulaw_decode(0x80), 32124);
        assert_eq!(mulaw_decode(0x00), -32124);
    }

    #[test]
    fn known_alaw_values() {
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xaa), 32256);
        assert_eq!(alaw_decode(0x2a), -32256);
    }

    #[test]
    fn every_byte_round_trips_through_linear() {
        for law in [Law::Mu, Law::A] {
            for b in 0..=255u8 {
                let s = law.decode(b);
                let back = law.encode(s);
                // μ-law has two zeros (0x7f and 0xff); both decode to ~0
                assert!(
                    back == b || law.decode(back) == s,
                    "{law:?} {b:#04x} -> {s} -> {back:#04x}"
                );
            }
        }
    }

    #[test]
    fn companding_error_stays_within_a_step() {
        for law in [Law::Mu, Law::A] {
            for s in (i16::MIN..=i16::MAX).step_by(97) {
                let d = i32::from(law.decode(law.encode(s)));
                let err = (d - i32::from(s)).abs();
                // a G.711 step at the top segment is 1024 (μ) / 1024 (A)
                assert!(err <= 1100, "{law:?} {s} -> {d}");
                assert!(err <= i32::from(s).abs() / 16 + 40, "{law:?} {s} -> {d}");
            }
        }
    }

    #[test]
    fn other_law_keeps_the_level() {
        for b in 0..=255u8 {
            let a = Law::A.from_other(b);
            let (mu, al) = (i32::from(Law::Mu.decode(b)), i32::from(Law::A.decode(a)));
            assert!(
                (mu - al).abs() <= mu.abs() / 16 + 40,
                "{b:#04x}: {mu} vs {al}"
            );
        }
    }
}
