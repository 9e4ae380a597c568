use super::bits::{unescape_rbsp, BitReader};
use super::pattern::{Overlay, TestPattern};
use super::*;

fn rbsp(nal: &[u8]) -> Vec<u8> {
    unescape_rbsp(&nal[1..])
}

#[test]
fn sps_fields() {
    let enc = H264Encoder::new(EncoderConfig {
        width: 170,
        height: 98,
        ..EncoderConfig::default()
    })
    .unwrap();
    assert_eq!(enc.sps()[0], 0x67);
    let data = rbsp(enc.sps());
    let mut r = BitReader::new(&data);
    assert_eq!(r.bits(8), Some(66));
    assert_eq!(r.bits(8), Some(0xC0));
    assert_eq!(r.bits(8), Some(30));
    assert_eq!(r.ue(), Some(0)); // sps id
    assert_eq!(r.ue(), Some(4)); // log2_max_frame_num_minus4
    assert_eq!(r.ue(), Some(2)); // poc type
    assert_eq!(r.ue(), Some(1)); // refs
    assert_eq!(r.bit(), Some(false));
    assert_eq!(r.ue(), Some(10)); // 11 MBs wide
    assert_eq!(r.ue(), Some(6)); // 7 MBs high
    assert_eq!(r.bit(), Some(true));
    assert_eq!(r.bit(), Some(true));
    assert_eq!(r.bit(), Some(true)); // cropping
    assert_eq!(r.ue(), Some(0));
    assert_eq!(r.ue(), Some((176 - 170) / 2));
    assert_eq!(r.ue(), Some(0));
    assert_eq!(r.ue(), Some((112 - 98) / 2));
    assert_eq!(r.bit(), Some(true)); // VUI

    let rec = enc.decoder_configuration_bytes();
    assert_eq!(&rec[..6], &[1, 66, 0xC0, 30, 0xFF, 0xE1]);
    let parsed = AvcDecoderConfigurationRecord::parse(&rec).unwrap();
    assert_eq!(parsed.sps[0], enc.sps());
    assert_eq!(parsed.pps[0], enc.pps());
    assert_eq!(enc.pps()[0], 0x68);
}

#[test]
fn levels() {
    let l = |width, height, fps| {
        EncoderConfig {
            width,
            height,
            fps,
            ..EncoderConfig::default()
        }
        .level_idc()
    };
    assert_eq!(l(320, 240, 15), 30);
    assert_eq!(l(640, 480, 30), 30);
    assert_eq!(l(1280, 720, 30), 31);
    assert_eq!(l(1920, 1080, 30), 40);
    assert_eq!(l(4096, 2304, 120), 52);
}

#[test]
fn config_validation() {
    let bad = [
        EncoderConfig {
            width: 321,
            ..EncoderConfig::default()
        },
        EncoderConfig {
            height: 0,
            ..EncoderConfig::default()
        },
        EncoderConfig {
            width: 8192,
            ..EncoderConfig::default()
        },
        EncoderConfig {
            fps: 0,
            ..EncoderConfig::default()
        },
        EncoderConfig {
            fps: 1000,
            ..EncoderConfig::default()
        },
        EncoderConfig {
            idr_interval: 0,
            ..EncoderConfig::default()
        },
    ];
    for c in bad {
        assert!(H264Encoder::new(c).is_err(), "{c:?}");
    }
    let mut enc = H264Encoder::new(EncoderConfig::default()).unwrap();
    assert!(enc.encode(&Frame::new(64, 64).unwrap()).is_err());
}

#[test]
fn unchanged_p_frame_is_one_skip_run() {
    let mut enc = H264Encoder::new(EncoderConfig::default()).unwrap();
    let frame = Frame::new(320, 240).unwrap();
    let first = enc.encode(&frame).unwrap();
    assert!(first.keyframe);
    assert_eq!(first.nalus[0][0], 0x65);
    let p = enc.encode(&frame).unwrap();
    assert!(!p.keyframe);
    assert_eq!(p.stats.skip, 300);
    assert_eq!(p.nalus[0][0], 0x41);
    let data = rbsp(&p.nalus[0]);
    let mut r = BitReader::new(&data);
    assert_eq!(r.ue(), Some(0)); // first_mb_in_slice
    assert_eq!(r.ue(), Some(5)); // P
    assert_eq!(r.ue(), Some(0)); // pps
    assert_eq!(r.bits(8), Some(1)); // frame_num
    assert_eq!(r.bit(), Some(false)); // override
    assert_eq!(r.bit(), Some(false)); // reordering
    assert_eq!(r.bit(), Some(false)); // adaptive marking
    assert_eq!(r.se(), Some(0));
    assert_eq!(r.ue(), Some(1)); // deblocking off
    assert_eq!(r.ue(), Some(300)); // mb_skip_run
    assert_eq!(r.bit(), Some(true)); // rbsp_stop_one_bit
    assert!(p.stats.bytes < 12, "{}", p.stats.bytes);
}

#[test]
fn idr_interval_and_frame_num() {
    let mut enc = H264Encoder::new(EncoderConfig {
        idr_interval: 4,
        ..EncoderConfig::default()
    })
    .unwrap();
    let frame = Frame::new(320, 240).unwrap();
    let keys: Vec<bool> = (0..9)
        .map(|_| enc.encode(&frame).unwrap().keyframe)
        .collect();
    assert_eq!(
        keys,
        [true, false, false, false, true, false, false, false, true]
    );
    enc.force_keyframe();
    assert!(enc.encode(&frame).unwrap().keyframe);
}

/// A deterministic noise picture: nothing is predictable, everything is I_PCM.
fn noise(frame: &mut Frame, seed: u32) {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    };
    for b in frame.luma_mut() {
        *b = next();
    }
    for b in frame.cb_mut() {
        *b = next();
    }
    for b in frame.cr_mut() {
        *b = next();
    }
}

#[test]
fn noise_is_pcm() {
    let mut enc = H264Encoder::new(EncoderConfig {
        width: 64,
        height: 48,
        ..EncoderConfig::default()
    })
    .unwrap();
    let mut f = Frame::new(64, 48).unwrap();
    noise(&mut f, 1);
    let e = enc.encode(&f).unwrap();
    assert_eq!(e.stats.pcm, 12);
    assert!(e.stats.bytes >= 12 * 384);
    // Emulation prevention: no start code inside the NAL unit.
    for w in e.nalus[0].windows(3) {
        assert!(!(w[0] == 0 && w[1] == 0 && w[2] <= 2));
    }
    let avcc = e.to_avcc();
    assert_eq!(
        u32::from_be_bytes([avcc[0], avcc[1], avcc[2], avcc[3]]) as usize,
        e.nalus[0].len()
    );
    assert_eq!(&e.to_annex_b()[..4], &[0, 0, 0, 1]);
}

#[test]
fn pattern_is_cheap() {
    let cfg = EncoderConfig::default();
    let mut enc = H264Encoder::new(cfg).unwrap();
    let pat = TestPattern::new(cfg.width, cfg.height).unwrap();
    let mut f = Frame::new(cfg.width, cfg.height).unwrap();
    let mut max_p = 0;
    for n in 0..30u64 {
        pat.render(
            &mut f,
            &Overlay {
                clock_ms: n * 1000 / 15,
                frame: n,
                beep: n % 15 < 2,
            },
        );
        let e = enc.encode(&f).unwrap();
        if n == 0 {
            assert!(e.keyframe);
            // One I_PCM per bar and one for the grey row.
            assert!(e.stats.pcm <= 8, "{:?}", e.stats);
            assert!(e.stats.bytes < 5000, "{:?}", e.stats);
        } else {
            assert!(e.stats.pcm == 0, "{:?}", e.stats);
            max_p = max_p.max(e.stats.bytes);
        }
    }
    assert!(max_p < 600, "{max_p}");
}

#[test]
fn fill_rect_clips() {
    let mut f = Frame::new(32, 32).unwrap();
    f.fill_rect(u32::MAX, u32::MAX, u32::MAX, u32::MAX, Yuv::WHITE);
    f.fill_rect(30, 30, u32::MAX, u32::MAX, Yuv::WHITE);
    f.fill_rect(0, 0, 0, 10, Yuv::WHITE);
    assert_eq!(f.luma()[31 * 32 + 31], 235);
    assert_eq!(f.luma()[0], 16);
    assert_eq!(f.to_i420().len(), 32 * 32 * 3 / 2);
    // A pattern at a tiny size renders without panicking.
    let p = TestPattern::new(2, 2).unwrap();
    let mut f = Frame::new(2, 2).unwrap();
    p.render(&mut f, &Overlay::default());
    let mut enc = H264Encoder::new(EncoderConfig {
        width: 2,
        height: 2,
        ..EncoderConfig::default()
    })
    .unwrap();
    assert!(enc.encode(&f).unwrap().keyframe);
}

/// Decodes our restricted CAVLC level syntax (suffixLength 0, first level).
fn read_level(r: &mut BitReader<'_>) -> i32 {
    let mut prefix = 0;
    while !r.bit().unwrap() {
        prefix += 1;
    }
    let suffix_size = match prefix {
        14 => 4,
        p if p >= 15 => prefix - 3,
        _ => 0,
    };
    let suffix = r.bits(suffix_size).unwrap() as i32;
    let mut code = (prefix.min(15) as i32) + suffix;
    if prefix >= 15 {
        code += 15;
    }
    code += 2;
    if code % 2 == 0 {
        (code + 2) >> 1
    } else {
        (-code - 1) >> 1
    }
}

#[test]
fn level_coding_round_trips() {
    for level in (-255i16..=255).filter(|l| l.abs() >= 2) {
        let mut w = BitWriter::new();
        write_level(&mut w, level);
        w.put_trailing_bits();
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        assert_eq!(read_level(&mut r), i32::from(level), "level {level}");
        assert_eq!(r.bit(), Some(true));
    }
}

#[test]
fn coeff_tokens() {
    assert_eq!(coeff_token(0, 0, 0), (1, 1));
    assert_eq!(coeff_token(1, 1, 1), (2, 1));
    assert_eq!(coeff_token(3, 0, 1), (6, 0b001011));
    assert_eq!(coeff_token(5, 1, 1), (4, 0b1110));
    assert_eq!(coeff_token(16, 0, 0), (6, 0b000011));
    assert_eq!(coeff_token(16, 0, 1), (6, 0));
    assert_eq!(coeff_token(9, 1, 1), (6, 1));
    assert_eq!(blk_idx(3, 3), 15);
    for (i, &(x, y)) in BLK_XY.iter().enumerate() {
        assert_eq!(blk_idx(x, y), i);
    }
}
