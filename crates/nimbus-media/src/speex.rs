//! Speex wideband audio (FLV SoundFormat 11), as Flash Player sends it from a
//! microphone: 16 kHz mono, one 20 ms frame (320 samples) per FLV audio
//! packet, header byte `0xB2`.
//!
//! Only built with the cargo feature `speex`, which links the system libspeex
//! (Debian: `libspeex-dev`; the library is BSD-licensed). The binding is a
//! minimal hand-written FFI to the encoder half of `<speex/speex.h>` and
//! `<speex/speex_bits.h>`, confined to the private module `ffi`.
//!
//! The encoder is constant bit rate (VBR off) at quality 6 by default
//! (Flash Player's default `Microphone.encodeQuality`), which makes every
//! frame 52 bytes, i.e. 53-byte packets and 21.2 kbit/s of audio payload.

use flash_amf::flv::{AudioTagHeader, SoundFormat, SoundRate, SoundSize, SoundType};

use crate::audio::AudioEncoder;
use crate::MediaError;

/// The only sample rate of Speex in FLV (wideband).
pub const SPEEX_SAMPLE_RATE: u32 = 16_000;

/// Samples per wideband frame (20 ms at 16 kHz).
pub const SPEEX_FRAME_SAMPLES: usize = 320;

/// Default encoder quality (0..=10): Flash Player's default encodeQuality.
pub const SPEEX_DEFAULT_QUALITY: u8 = 6;

/// The FLV audio header byte of Speex: SoundFormat 11, SoundRate 0 (ignored
/// for Speex, which is always 16 kHz), 16-bit, mono. Flash Player writes 0xB2.
pub const SPEEX_HEADER_BYTE: u8 = 0xB2;

/// Largest encoded wideband frame we accept (quality 10 is 106 bytes).
const MAX_FRAME_BYTES: usize = 256;

/// Encodes 16 kHz mono PCM into FLV Speex packets (one wideband frame each).
#[derive(Debug)]
pub struct SpeexEncoder {
    enc: ffi::WbEncoder,
    quality: u8,
    header: u8,
    frame: Vec<u8>,
}

impl SpeexEncoder {
    /// A wideband encoder at the default quality. `sample_rate` must be
    /// 16000: FLV Speex is always wideband.
    pub fn new(sample_rate: u32) -> Result<Self, MediaError> {
        Self::with_quality(sample_rate, SPEEX_DEFAULT_QUALITY)
    }

    /// A wideband encoder at `quality` (0..=10, constant bit rate).
    pub fn with_quality(sample_rate: u32, quality: u8) -> Result<Self, MediaError> {
        if sample_rate != SPEEX_SAMPLE_RATE {
            return Err(MediaError::Config(format!(
                "FLV Speex is wideband, 16000 Hz, not {sample_rate}"
            )));
        }
        if quality > 10 {
            return Err(MediaError::Config(format!(
                "Speex quality {quality} outside 0..=10"
            )));
        }
        let enc = ffi::WbEncoder::new(i32::from(quality))
            .ok_or_else(|| MediaError::Config("libspeex: cannot create encoder".into()))?;
        if enc.frame_size() != SPEEX_FRAME_SAMPLES {
            return Err(MediaError::Config(format!(
                "libspeex: wideband frame size {} instead of {SPEEX_FRAME_SAMPLES}",
                enc.frame_size()
            )));
        }
        let h = AudioTagHeader {
            sound_format: SoundFormat::Speex,
            sound_rate: SoundRate::Rate5_5k,
            sound_size: SoundSize::Bits16,
            sound_type: SoundType::Mono,
            aac_packet_type: None,
        };
        let header = h.to_bytes().first().copied().unwrap_or(SPEEX_HEADER_BYTE);
        Ok(SpeexEncoder {
            enc,
            quality,
            header,
            frame: vec![0; MAX_FRAME_BYTES],
        })
    }

    /// The encoder quality (0..=10).
    pub fn quality(&self) -> u8 {
        self.quality
    }

    /// The 1-byte FLV audio header (always 0xB2).
    pub fn header_byte(&self) -> u8 {
        self.header
    }
}

impl AudioEncoder for SpeexEncoder {
    fn sound_format(&self) -> SoundFormat {
        SoundFormat::Speex
    }

    fn sample_rate(&self) -> u32 {
        SPEEX_SAMPLE_RATE
    }

    fn frame_samples(&self) -> Option<usize> {
        Some(SPEEX_FRAME_SAMPLES)
    }

    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), MediaError> {
        if pcm.len() != SPEEX_FRAME_SAMPLES {
            return Err(MediaError::Config(format!(
                "a Speex packet is {SPEEX_FRAME_SAMPLES} samples, not {}",
                pcm.len()
            )));
        }
        let n = self
            .enc
            .encode(pcm, &mut self.frame)
            .ok_or_else(|| MediaError::Config("libspeex: encoding failed".into()))?;
        out.reserve(1 + n);
        out.push(self.header);
        out.extend_from_slice(&self.frame[..n]);
        Ok(())
    }
}

/// The FFI binding to libspeex's encoder.
///
/// `unsafe` is allowed here, and only here: calling C needs it and the
/// workspace denies `unsafe_code` elsewhere. Declarations follow
/// `<speex/speex.h>` and `<speex/speex_bits.h>` of Speex 1.2 (Debian's
/// `libspeex-dev`). [`WbEncoder`] is the safe owner of one encoder state and
/// its bit buffer.
#[allow(unsafe_code)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    use std::ptr::NonNull;

    /// `SPEEX_MODEID_WB`.
    const SPEEX_MODEID_WB: c_int = 1;
    /// `SPEEX_GET_FRAME_SIZE` (argument: `int*`).
    const SPEEX_GET_FRAME_SIZE: c_int = 3;
    /// `SPEEX_SET_QUALITY` (argument: `int*`, 0..=10).
    const SPEEX_SET_QUALITY: c_int = 4;
    /// `SPEEX_SET_VBR` (argument: `int*`, 0 or 1).
    const SPEEX_SET_VBR: c_int = 12;
    /// `SPEEX_SET_COMPLEXITY` (argument: `int*`, 1..=10).
    const SPEEX_SET_COMPLEXITY: c_int = 16;

    /// `SpeexBits` from `<speex/speex_bits.h>`: filled in by
    /// `speex_bits_init`, which allocates `chars`.
    #[repr(C)]
    struct SpeexBits {
        chars: *mut c_char,
        nb_bits: c_int,
        char_ptr: c_int,
        bit_ptr: c_int,
        owner: c_int,
        overflow: c_int,
        buf_size: c_int,
        reserved1: c_int,
        reserved2: *mut c_void,
    }

    /// `SpeexMode`, only used by pointer.
    #[repr(C)]
    struct SpeexMode {
        _opaque: [u8; 0],
    }

    #[link(name = "speex")]
    extern "C" {
        fn speex_lib_get_mode(mode: c_int) -> *const SpeexMode;
        fn speex_encoder_init(mode: *const SpeexMode) -> *mut c_void;
        fn speex_encoder_destroy(state: *mut c_void);
        fn speex_encoder_ctl(state: *mut c_void, request: c_int, ptr: *mut c_void) -> c_int;
        fn speex_encode_int(state: *mut c_void, input: *mut i16, bits: *mut SpeexBits) -> c_int;
        fn speex_bits_init(bits: *mut SpeexBits);
        fn speex_bits_destroy(bits: *mut SpeexBits);
        fn speex_bits_reset(bits: *mut SpeexBits);
        fn speex_bits_write(bits: *mut SpeexBits, bytes: *mut c_char, max_len: c_int) -> c_int;
    }

    /// One wideband encoder state and its bit buffer, freed on drop.
    pub(super) struct WbEncoder {
        state: NonNull<c_void>,
        bits: Box<SpeexBits>,
        frame_size: usize,
        input: Vec<i16>,
    }

    // SAFETY: the encoder state and the bit buffer are owned exclusively by
    // this value (no aliases are handed out) and libspeex keeps no
    // thread-local or global mutable state for them, so moving the owner to
    // another thread is sound. It is not `Sync` (all methods take `&mut`).
    unsafe impl Send for WbEncoder {}

    impl std::fmt::Debug for WbEncoder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("WbEncoder")
                .field("frame_size", &self.frame_size)
                .finish_non_exhaustive()
        }
    }

    impl WbEncoder {
        /// A constant-bit-rate wideband encoder at `quality` (0..=10);
        /// `None` if libspeex fails.
        pub(super) fn new(quality: c_int) -> Option<Self> {
            // SAFETY: speex_lib_get_mode returns a pointer to a static mode
            // (or null for an unknown id, checked by speex_encoder_init's
            // result below).
            let mode = unsafe { speex_lib_get_mode(SPEEX_MODEID_WB) };
            if mode.is_null() {
                return None;
            }
            // SAFETY: `mode` is a valid static mode; the returned state is
            // owned by the WbEncoder and destroyed exactly once in Drop.
            let state = NonNull::new(unsafe { speex_encoder_init(mode) })?;
            let mut bits = Box::new(SpeexBits {
                chars: std::ptr::null_mut(),
                nb_bits: 0,
                char_ptr: 0,
                bit_ptr: 0,
                owner: 0,
                overflow: 0,
                buf_size: 0,
                reserved1: 0,
                reserved2: std::ptr::null_mut(),
            });
            // SAFETY: `bits` points to a live, properly laid out SpeexBits;
            // it is destroyed exactly once in Drop.
            unsafe { speex_bits_init(&mut *bits) };
            let mut enc = WbEncoder {
                state,
                bits,
                frame_size: 0,
                input: Vec::new(),
            };
            enc.ctl_set(SPEEX_SET_VBR, 0);
            enc.ctl_set(SPEEX_SET_COMPLEXITY, 3);
            enc.ctl_set(SPEEX_SET_QUALITY, quality.clamp(0, 10));
            let mut n: c_int = 0;
            // SAFETY: SPEEX_GET_FRAME_SIZE writes one int through the pointer.
            unsafe {
                speex_encoder_ctl(
                    enc.state.as_ptr(),
                    SPEEX_GET_FRAME_SIZE,
                    (&mut n as *mut c_int).cast(),
                )
            };
            enc.frame_size = usize::try_from(n).ok().filter(|&n| n > 0)?;
            enc.input = vec![0; enc.frame_size];
            Some(enc)
        }

        /// A `speex_encoder_ctl` setter that takes an `int*`.
        fn ctl_set(&mut self, request: c_int, value: c_int) {
            let mut v = value;
            // SAFETY: the requests used here read one int through the
            // pointer, which is valid for the duration of the call.
            unsafe {
                speex_encoder_ctl(self.state.as_ptr(), request, (&mut v as *mut c_int).cast())
            };
        }

        /// Samples per frame (320 in wideband).
        pub(super) fn frame_size(&self) -> usize {
            self.frame_size
        }

        /// Encodes exactly one frame of `pcm` (`frame_size` samples) into
        /// `out`; returns the number of bytes written, or `None` on a wrong
        /// input length or if the frame does not fit.
        pub(super) fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Option<usize> {
            if pcm.len() != self.frame_size {
                return None;
            }
            // libspeex takes a non-const pointer: give it our own copy.
            self.input.copy_from_slice(pcm);
            let max = c_int::try_from(out.len()).unwrap_or(c_int::MAX);
            // SAFETY: the state and bits are live; `input` holds exactly
            // frame_size samples, all that speex_encode_int reads; `out` is
            // valid for `max` bytes and speex_bits_write writes at most that.
            let n = unsafe {
                let bits: *mut SpeexBits = &mut *self.bits;
                speex_bits_reset(bits);
                speex_encode_int(self.state.as_ptr(), self.input.as_mut_ptr(), bits);
                let n = speex_bits_write(bits, out.as_mut_ptr().cast(), max);
                let whole = (*bits).nb_bits.saturating_add(7) / 8;
                speex_bits_reset(bits);
                if whole > max {
                    return None;
                }
                n
            };
            usize::try_from(n).ok().filter(|&n| n > 0)
        }
    }

    impl Drop for WbEncoder {
        fn drop(&mut self) {
            // SAFETY: both were initialised in `new` and are released once.
            unsafe {
                speex_bits_destroy(&mut *self.bits);
                speex_encoder_destroy(self.state.as_ptr());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{AudioCodec, ToneConfig, ToneGenerator};
    use crate::{FlvSink, MediaKind, MediaTag, TestSource, TestSourceConfig};
    use nimbus_testkit::ffmpeg;
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn encodes_the_tone_into_constant_size_packets() {
        let mut e = SpeexEncoder::new(16_000).unwrap();
        assert_eq!(e.header_byte(), 0xB2);
        assert_eq!(e.sound_format(), SoundFormat::Speex);
        assert_eq!(e.sample_rate(), 16_000);
        assert_eq!(e.frame_samples(), Some(320));
        let mut tone = ToneGenerator::new(ToneConfig {
            sample_rate: 16_000,
            ..ToneConfig::default()
        })
        .unwrap();
        let mut pcm = vec![0i16; 320];
        for _ in 0..100 {
            tone.fill(&mut pcm);
            let mut out = Vec::new();
            e.encode(&pcm, &mut out).unwrap();
            // Quality 6, CBR: 20.6 kbit/s = 412 bits, padded to 52 bytes.
            assert_eq!(out.len(), 1 + 52, "{out:02x?}");
            let h = AudioTagHeader::parse(&out).unwrap().0;
            assert_eq!(h.sound_format, SoundFormat::Speex);
            assert_eq!(h.sound_size, SoundSize::Bits16);
            assert_eq!(h.sound_type, SoundType::Mono);
        }
        // Other qualities change the frame size, not the framing.
        let mut low = SpeexEncoder::with_quality(16_000, 0).unwrap();
        let mut high = SpeexEncoder::with_quality(16_000, 10).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        low.encode(&pcm, &mut a).unwrap();
        high.encode(&pcm, &mut b).unwrap();
        assert_eq!((a[0], b[0]), (0xB2, 0xB2));
        assert!(
            a.len() < 53 && b.len() > 53 && b.len() <= 1 + 106,
            "{a:?} {b:?}"
        );
    }

    #[test]
    fn rejects_wrong_rates_qualities_and_lengths() {
        assert!(SpeexEncoder::new(11_025).is_err());
        assert!(SpeexEncoder::new(8_000).is_err());
        assert!(SpeexEncoder::with_quality(16_000, 11).is_err());
        assert!(AudioCodec::Speex.encoder(11_025).is_err());
        let mut e = AudioCodec::Speex.encoder(16_000).unwrap();
        let mut out = Vec::new();
        assert!(e.encode(&[0; 319], &mut out).is_err());
        assert!(e.encode(&[0; 321], &mut out).is_err());
        assert!(out.is_empty());
        e.encode(&[0; 320], &mut out).unwrap();
        assert_eq!(out[0], 0xB2);
    }

    fn speex_source(duration_ms: u64, video: bool) -> TestSource {
        let base = TestSourceConfig::default();
        TestSource::new(TestSourceConfig {
            video: if video { base.video } else { None },
            audio_codec: AudioCodec::Speex,
            duration: Some(Duration::from_millis(duration_ms)),
            ..base
        })
        .unwrap()
    }

    #[test]
    fn test_source_sends_20ms_speex_packets_at_16khz() {
        // The default tone config says 11025 Hz; Speex makes it 16 kHz.
        assert_eq!(ToneConfig::default().sample_rate, 11_025);
        assert_eq!(AudioCodec::Speex.fixed_sample_rate(), Some(16_000));
        assert_eq!(AudioCodec::Speex.sound_format(), SoundFormat::Speex);
        let tags: Vec<MediaTag> = speex_source(1000, false).collect::<Result<_, _>>().unwrap();
        assert_eq!(tags[0].kind, MediaKind::Data);
        let audio: Vec<&MediaTag> = tags[1..].iter().collect();
        assert_eq!(audio.len(), 50);
        for (k, t) in audio.iter().enumerate() {
            assert_eq!(t.kind, MediaKind::Audio);
            assert_eq!(t.timestamp, k as u32 * 20);
            assert_eq!(t.data[0], 0xB2);
            assert_eq!(t.data.len(), 53);
            assert!(!t.is_sequence_header());
        }
    }

    /// Decodes the audio of `path` to 16 kHz s16le samples.
    fn decode_pcm(path: &Path) -> Vec<i16> {
        ffmpeg::decode(path, &["-vn", "-f", "s16le", "-ac", "1", "-ar", "16000"])
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    #[test]
    fn ffmpeg_decodes_the_speex_flv() {
        if !ffmpeg::tools_present("ffmpeg_decodes_the_speex_flv") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for video in [false, true] {
            let path = dir.path().join(format!("speex-{video}.flv"));
            let mut src = speex_source(2000, video);
            let mut sink = FlvSink::open(&path, true, video).unwrap();
            sink.write_all(&mut src).unwrap();
            sink.finish().unwrap();
            ffmpeg::assert_decodes_cleanly(&path);
            // Also through the reference decoder (libspeex), when ffmpeg has it.
            if ffmpeg::has_decoder("libspeex") {
                ffmpeg::assert_decodes_cleanly_with(&path, Some("libspeex"));
            }
            ffmpeg::assert_probe(
                &path,
                "a:0",
                &[
                    "codec_name=speex",
                    "sample_rate=16000",
                    "channels=1",
                    "nb_read_frames=100",
                ],
            );
            // 2 s of audio; the beep (−6 dBFS) is much louder than the
            // tone (−20 dBFS) in the decoded signal too.
            let pcm = decode_pcm(&path);
            assert!((31_000..=32_400).contains(&pcm.len()), "{}", pcm.len());
            let rms = |from: usize, n: usize| {
                let s: f64 = pcm[from..from + n]
                    .iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum();
                (s / n as f64).sqrt()
            };
            // Allow for the codec's delay: look inside the beep and tone.
            let beep = rms(16_000 + 400, 800);
            let tone = rms(16_000 + 8_000, 1600);
            println!("beep rms {beep:.0}, tone rms {tone:.0}");
            // Expected: 0.5 and 0.1 of full scale over √2, 11585 and 2317.
            assert!((9_500.0..13_500.0).contains(&beep), "beep {beep}");
            assert!((1_800.0..2_900.0).contains(&tone), "tone {tone}");
        }
    }
}
