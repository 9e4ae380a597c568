//! The audio test source: a 440 Hz tone with a louder 880 Hz beep at the start
//! of every second (so A/V sync is audible next to the video clock's beep box),
//! and the codecs that turn its samples into FLV AUDIODATA bodies.
//!
//! The default codec is FLV linear PCM, little-endian, 16-bit mono
//! (SoundFormat 3), which Flash Player plays and ffmpeg decodes without any
//! library. FLV's SoundRate field only has 5.5/11/22/44 kHz, so the rate is one
//! of 5512, 11025 (default), 22050 or 44100 Hz. With the cargo feature `speex`
//! there is also Speex wideband (SoundFormat 11, always 16 kHz; see
//! `media::speex`, which links the system libspeex). Further codecs
//! (Nellymoser) implement [`AudioEncoder`] and get a variant of [`AudioCodec`],
//! possibly behind a cargo feature; the rest of the pipeline does not change.

use flash_amf::flv::{AudioTagHeader, SoundFormat, SoundRate, SoundSize, SoundType};

use crate::MediaError;

/// Settings of the tone generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneConfig {
    /// Sample rate in Hz. Default 11025. A codec with a fixed rate (Speex:
    /// 16000, see [`AudioCodec::fixed_sample_rate`]) overrides it in a
    /// [`TestSource`](super::TestSource).
    pub sample_rate: u32,
    /// Continuous tone frequency in Hz. Default 440.
    pub tone_hz: f32,
    /// Tone amplitude, 0..=1 of full scale. Default 0.1 (−20 dBFS).
    pub tone_level: f32,
    /// Beep frequency in Hz. Default 880.
    pub beep_hz: f32,
    /// Beep amplitude, 0..=1. Default 0.5 (−6 dBFS).
    pub beep_level: f32,
    /// Beep length in ms at the start of every period. Default 100.
    pub beep_ms: u32,
    /// Beep period in ms. Default 1000.
    pub period_ms: u32,
}

impl Default for ToneConfig {
    fn default() -> Self {
        ToneConfig {
            sample_rate: 11_025,
            tone_hz: 440.0,
            tone_level: 0.1,
            beep_hz: 880.0,
            beep_level: 0.5,
            beep_ms: 100,
            period_ms: 1000,
        }
    }
}

impl ToneConfig {
    /// Whether the beep sounds at `ms` milliseconds of stream time.
    pub fn beeping_at(&self, ms: u64) -> bool {
        self.period_ms > 0 && ms % u64::from(self.period_ms) < u64::from(self.beep_ms)
    }
}

/// A deterministic tone generator: sample `n` depends only on `n`.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    cfg: ToneConfig,
    next: u64,
}

impl ToneGenerator {
    /// A generator starting at sample 0.
    pub fn new(cfg: ToneConfig) -> Result<Self, MediaError> {
        if !(1000..=96_000).contains(&cfg.sample_rate) {
            return Err(MediaError::Config(format!(
                "sample rate {} outside 1000..=96000",
                cfg.sample_rate
            )));
        }
        let levels_ok = [cfg.tone_level, cfg.beep_level]
            .iter()
            .all(|l| (0.0..=1.0).contains(l));
        let freqs_ok = [cfg.tone_hz, cfg.beep_hz]
            .iter()
            .all(|f| f.is_finite() && *f >= 0.0 && *f <= cfg.sample_rate as f32 / 2.0);
        if !levels_ok || !freqs_ok {
            return Err(MediaError::Config(
                "tone levels must be in 0..=1 and frequencies in 0..=rate/2".into(),
            ));
        }
        Ok(ToneGenerator { cfg, next: 0 })
    }

    /// The configuration.
    pub fn config(&self) -> &ToneConfig {
        &self.cfg
    }

    /// Sample number `n`.
    pub fn sample_at(&self, n: u64) -> i16 {
        let rate = u64::from(self.cfg.sample_rate);
        let ms = n.saturating_mul(1000) / rate;
        let (hz, level) = if self.cfg.beeping_at(ms) {
            (self.cfg.beep_hz, self.cfg.beep_level)
        } else {
            (self.cfg.tone_hz, self.cfg.tone_level)
        };
        // Phase from the sample index modulo one second keeps f64 precise for
        // any stream length (whole-Hz frequencies are periodic in a second).
        let t = (n % rate) as f64 / rate as f64;
        let s = (std::f64::consts::TAU * f64::from(hz) * t).sin() * f64::from(level);
        (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16
    }

    /// Index of the next sample [`fill`](Self::fill) produces.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Writes the next `out.len()` samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out.iter_mut() {
            *s = self.sample_at(self.next);
            self.next += 1;
        }
    }
}

/// An audio codec that produces FLV AUDIODATA bodies.
///
/// Implementations are given mono 16-bit samples at
/// [`sample_rate`](Self::sample_rate) in blocks of [`frame_samples`](Self::frame_samples)
/// (when the codec has a fixed frame size) and append one packet body,
/// including the 1-byte FLV audio header, per call.
pub trait AudioEncoder: Send + std::fmt::Debug {
    /// The FLV SoundFormat.
    fn sound_format(&self) -> SoundFormat;
    /// Input sample rate in Hz.
    fn sample_rate(&self) -> u32;
    /// Fixed number of samples per packet, or `None` when any count works.
    fn frame_samples(&self) -> Option<usize>;
    /// Encodes one packet and appends its AUDIODATA body (header byte
    /// included) to `out`.
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), MediaError>;
}

/// The available audio codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AudioCodec {
    /// FLV SoundFormat 3: linear PCM, little-endian, 16-bit mono.
    #[default]
    PcmLe,
    /// FLV SoundFormat 11: Speex wideband, 16 kHz mono, one 20 ms frame per
    /// packet, as Flash Player sends it (cargo feature `speex`, links the
    /// system libspeex).
    #[cfg(feature = "speex")]
    Speex,
}

impl AudioCodec {
    /// An encoder for `sample_rate`.
    pub fn encoder(self, sample_rate: u32) -> Result<Box<dyn AudioEncoder>, MediaError> {
        match self {
            AudioCodec::PcmLe => Ok(Box::new(PcmLeEncoder::new(sample_rate)?)),
            #[cfg(feature = "speex")]
            AudioCodec::Speex => Ok(Box::new(super::speex::SpeexEncoder::new(sample_rate)?)),
        }
    }

    /// The sample rate this codec always uses (Speex: 16000 Hz), or `None`
    /// when it takes the configured rate (PCM). A
    /// [`TestSource`](super::TestSource) runs its tone at this rate.
    pub fn fixed_sample_rate(self) -> Option<u32> {
        match self {
            AudioCodec::PcmLe => None,
            #[cfg(feature = "speex")]
            AudioCodec::Speex => Some(super::speex::SPEEX_SAMPLE_RATE),
        }
    }

    /// The FLV SoundFormat of this codec.
    pub fn sound_format(self) -> SoundFormat {
        match self {
            AudioCodec::PcmLe => SoundFormat::LinearPcmLittleEndian,
            #[cfg(feature = "speex")]
            AudioCodec::Speex => SoundFormat::Speex,
        }
    }
}

/// FLV linear PCM, little-endian, 16-bit mono (SoundFormat 3).
#[derive(Debug, Clone)]
pub struct PcmLeEncoder {
    rate: SoundRate,
    header: u8,
}

impl PcmLeEncoder {
    /// An encoder for 5512, 11025, 22050 or 44100 Hz (the rates FLV can
    /// express for PCM).
    pub fn new(sample_rate: u32) -> Result<Self, MediaError> {
        let rate = match sample_rate {
            5512 => SoundRate::Rate5_5k,
            11_025 => SoundRate::Rate11k,
            22_050 => SoundRate::Rate22k,
            44_100 => SoundRate::Rate44k,
            r => {
                return Err(MediaError::Config(format!(
                    "FLV PCM needs 5512, 11025, 22050 or 44100 Hz, not {r}"
                )))
            }
        };
        let h = AudioTagHeader {
            sound_format: SoundFormat::LinearPcmLittleEndian,
            sound_rate: rate,
            sound_size: SoundSize::Bits16,
            sound_type: SoundType::Mono,
            aac_packet_type: None,
        };
        let header = h.to_bytes().first().copied().unwrap_or(0x36);
        Ok(PcmLeEncoder { rate, header })
    }

    /// The 1-byte FLV audio header (0x36 at 11 kHz).
    pub fn header_byte(&self) -> u8 {
        self.header
    }
}

impl AudioEncoder for PcmLeEncoder {
    fn sound_format(&self) -> SoundFormat {
        SoundFormat::LinearPcmLittleEndian
    }

    fn sample_rate(&self) -> u32 {
        self.rate.hz()
    }

    fn frame_samples(&self) -> Option<usize> {
        None
    }

    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), MediaError> {
        out.reserve(1 + pcm.len() * 2);
        out.push(self.header);
        for s in pcm {
            out.extend_from_slice(&s.to_le_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_header_and_payload() {
        let mut e = PcmLeEncoder::new(11_025).unwrap();
        assert_eq!(e.header_byte(), 0x36); // 3<<4 | 1<<2 | 1<<1 | 0
        let mut out = Vec::new();
        e.encode(&[1, -2], &mut out).unwrap();
        assert_eq!(out, vec![0x36, 1, 0, 0xFE, 0xFF]);
        let h = AudioTagHeader::parse(&out).unwrap().0;
        assert_eq!(h.sound_format, SoundFormat::LinearPcmLittleEndian);
        assert_eq!(h.sound_rate.hz(), 11_025);
        assert!(PcmLeEncoder::new(8000).is_err());
        assert_eq!(PcmLeEncoder::new(44_100).unwrap().header_byte(), 0x3E);
        assert_eq!(AudioCodec::PcmLe.fixed_sample_rate(), None);
    }

    #[test]
    fn tone_beeps_at_the_start_of_each_second() {
        let g = ToneGenerator::new(ToneConfig::default()).unwrap();
        let rate = 11_025u64;
        let peak = |from: u64, n: u64| {
            (from..from + n)
                .map(|i| g.sample_at(i).unsigned_abs())
                .max()
                .unwrap()
        };
        // Beep (−6 dBFS) in the first 100 ms, tone (−20 dBFS) after it.
        assert!(peak(0, rate / 20) > 15_000);
        assert!(peak(rate / 2, rate / 20) < 3_500);
        assert!(peak(rate / 2, rate / 20) > 3_000);
        assert!(peak(rate * 7, rate / 20) > 15_000);
        assert!(ToneGenerator::new(ToneConfig {
            tone_level: 2.0,
            ..ToneConfig::default()
        })
        .is_err());
    }
}
