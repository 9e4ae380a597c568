//! Checks the media module against ffmpeg/ffprobe when they are installed
//! (prints `SKIPPED:` and passes otherwise): the test source's FLV decodes
//! without errors, has the right streams and frame count, the clock moves,
//! and decoded pictures equal the encoder's input sample for sample.

use std::path::Path;
use std::time::Duration;

use nimbus_media::flv::{avc_nalu_body, avc_sequence_header_body};
use nimbus_media::h264::pattern::{Overlay, TestPattern};
use nimbus_media::h264::{EncoderConfig, Frame, H264Encoder, Yuv};
use nimbus_media::{FlvFileSource, FlvSink, MediaKind, MediaTag, TestSource, TestSourceConfig};
use nimbus_testkit::ffmpeg::{assert_decodes_cleanly, assert_probe, decode, tools_present};

/// Decodes the video of `path` to raw frames in `pix_fmt`.
fn decode_raw(path: &Path, pix_fmt: &str) -> Vec<u8> {
    decode(path, &["-f", "rawvideo", "-pix_fmt", pix_fmt])
}

#[test]
fn test_source_three_seconds_decodes_with_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("testsrc.flv");
    let mut src = TestSource::new(TestSourceConfig {
        duration: Some(Duration::from_secs(3)),
        ..TestSourceConfig::default()
    })
    .unwrap();
    let mut sink = FlvSink::open(&path, true, true).unwrap();
    let n = sink.write_all(&mut src).unwrap();
    sink.finish().unwrap();
    assert_eq!(
        n,
        2 + 45 + 150,
        "metadata, sequence header, 45 frames, 150 audio packets"
    );

    // Our own reader reads it back with timing.
    let tags: Vec<MediaTag> = FlvFileSource::open(&path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tags.len() as u64, n);
    let video: Vec<&MediaTag> = tags.iter().filter(|t| t.kind == MediaKind::Video).collect();
    assert!(video[0].is_sequence_header());
    assert_eq!(video.iter().filter(|t| t.is_keyframe()).count(), 1 + 2);
    assert_eq!(video.last().unwrap().timestamp, 44 * 1000 / 15);
    assert!(tags.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));

    if !tools_present("test_source_three_seconds_decodes_with_ffmpeg") {
        return;
    }
    assert_decodes_cleanly(&path);
    assert_probe(
        &path,
        "v:0",
        &[
            "codec_name=h264",
            "width=320",
            "height=240",
            "nb_read_frames=45",
        ],
    );
    assert_probe(
        &path,
        "a:0",
        &["codec_name=pcm_s16le", "sample_rate=11025", "channels=1"],
    );

    // The clock moves: its region differs between consecutive decoded frames.
    let gray = decode_raw(&path, "gray");
    let size = 320 * 240;
    assert_eq!(gray.len(), 45 * size);
    let (cx, cy, cw, ch) = TestPattern::new(320, 240).unwrap().clock_rect();
    let region = |f: usize| -> Vec<u8> {
        let mut v = Vec::new();
        for y in cy..cy + ch {
            let s = f * size + (y * 320 + cx) as usize;
            v.extend_from_slice(&gray[s..s + cw as usize]);
        }
        v
    };
    let mut changed = 0;
    for f in 1..45 {
        if region(f) != region(f - 1) {
            changed += 1;
        }
    }
    println!("clock region changed in {changed} of 44 frame pairs");
    assert_eq!(
        changed, 44,
        "the clock must change every frame (milliseconds)"
    );
    // And it is not noise: the colour bars stay put.
    assert_eq!(gray[10 * 320 + 10], gray[44 * size + 10 * 320 + 10]);
}

/// Frames exercising every macroblock kind: the test pattern at a size that
/// needs cropping, a moving noise square (I_PCM in P slices) and a moving grey
/// square at odd positions.
fn mixed_frames(width: u32, height: u32, count: u64) -> Vec<Frame> {
    let pat = TestPattern::new(width, height).unwrap();
    let mut seed = 0x1234_5678u32;
    (0..count)
        .map(|n| {
            let mut f = Frame::new(width, height).unwrap();
            pat.render(
                &mut f,
                &Overlay {
                    clock_ms: n * 73,
                    frame: n,
                    beep: n % 7 == 0,
                },
            );
            let nx = (n * 5 % u64::from(width - 24)) as usize;
            let ny = (n * 3 % u64::from(height - 24)) as usize;
            let stride = f.luma_stride();
            for y in ny..ny + 24 {
                for x in nx..nx + 24 {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    f.luma_mut()[y * stride + x] = seed as u8;
                }
            }
            let gx = (width - 30) - (n * 7 % u64::from(width - 30)) as u32;
            f.fill_rect(
                gx | 1,
                3 + (n as u32 % 5) * 2,
                10,
                6,
                Yuv::new(200, 90, 160),
            );
            f
        })
        .collect()
}

#[test]
fn decoded_pictures_equal_encoder_input() {
    let dir = tempfile::tempdir().unwrap();
    for (width, height, interval) in [(200u32, 120u32, 8u32), (320, 240, 30), (66, 34, 3)] {
        let cfg = EncoderConfig {
            width,
            height,
            fps: 25,
            idr_interval: interval,
            inband_parameter_sets: interval == 3,
        };
        let frames = mixed_frames(width, height, 40);
        let mut enc = H264Encoder::new(cfg).unwrap();
        let path = dir.path().join(format!("mixed-{width}x{height}.flv"));
        let mut sink = FlvSink::open(&path, false, true).unwrap();
        let seq = avc_sequence_header_body(&enc.decoder_configuration_bytes());
        sink.write(&MediaTag::new(MediaKind::Video, 0, seq))
            .unwrap();
        let mut pcm_in_p = 0;
        for (n, f) in frames.iter().enumerate() {
            let e = enc.encode(f).unwrap();
            if !e.keyframe {
                pcm_in_p += e.stats.pcm;
            }
            let body = avc_nalu_body(e.keyframe, &e.to_avcc());
            sink.write(&MediaTag::new(MediaKind::Video, n as u32 * 40, body))
                .unwrap();
        }
        sink.finish().unwrap();
        assert!(pcm_in_p > 0);
        if !tools_present("decoded_pictures_equal_encoder_input") {
            return;
        }
        assert_decodes_cleanly(&path);
        let raw = decode_raw(&path, "yuv420p");
        let fsize = (width * height * 3 / 2) as usize;
        assert_eq!(raw.len(), frames.len() * fsize, "{width}x{height}");
        for (n, f) in frames.iter().enumerate() {
            let want = f.to_i420();
            let got = &raw[n * fsize..(n + 1) * fsize];
            let first_diff = want.iter().zip(got).position(|(a, b)| a != b);
            assert!(
                first_diff.is_none(),
                "{width}x{height} frame {n}: first difference at byte {first_diff:?}"
            );
        }
        println!(
            "{width}x{height}: {} frames decode to exactly the encoder input",
            frames.len()
        );
    }
}
