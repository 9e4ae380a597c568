//! FLV reader/writer and codec header tests with hand-built files.

use std::io::{self, Read};

use flash_amf::flv::{
    self, split_nalus, AacPacketType, AudioSpecificConfig, AudioTagHeader,
    AvcDecoderConfigurationRecord, AvcPacketType, CodecId, FlvReaderOptions, FrameType,
    SoundFormat, SoundRate, SoundSize, SoundType, TagHeader, TagType, VideoTagHeader,
};
use flash_amf::{EcmaArray, Error, FlvHeader, FlvReader, FlvTag, FlvWriter, Value};

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const AVC_CONFIG: [u8; 17] = [
    0x01, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0x00, 0x04, 0x67, 0x42, 0xC0, 0x1E, 0x01, 0x00, 0x02, 0x68,
    0xCE,
];

fn script_body() -> Vec<u8> {
    // "onMetaData", ECMA array {duration: 0}
    cat(&[
        &[0x02, 0x00, 0x0A],
        b"onMetaData",
        &[0x08, 0, 0, 0, 1, 0x00, 0x08],
        b"duration",
        &[0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x09],
    ])
}

/// A hand-built file: script tag, AAC sequence header, AVC sequence header, and
/// an AVC NALU tag with an extended timestamp.
fn hand_built_file() -> Vec<u8> {
    let script = script_body();
    assert_eq!(script.len(), 40);
    let avc_seq = cat(&[&[0x17, 0x00, 0x00, 0x00, 0x00], &AVC_CONFIG]);
    assert_eq!(avc_seq.len(), 22);
    cat(&[
        // header: FLV, version 1, audio+video, offset 9; PreviousTagSize0
        &[b'F', b'L', b'V', 0x01, 0x05, 0, 0, 0, 9],
        &[0, 0, 0, 0],
        // script tag, 40 bytes, ts 0
        &[0x12, 0x00, 0x00, 40, 0, 0, 0, 0, 0, 0, 0],
        &script,
        &[0, 0, 0, 51],
        // AAC sequence header: AF 00 + AudioSpecificConfig 12 10
        &[0x08, 0x00, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0],
        &[0xAF, 0x00, 0x12, 0x10],
        &[0, 0, 0, 15],
        // AVC sequence header
        &[0x09, 0x00, 0x00, 22, 0, 0, 0, 0, 0, 0, 0],
        &avc_seq,
        &[0, 0, 0, 33],
        // AVC inter NALU, ts 0x01234567 (extended byte 0x01), cts 33
        &[0x09, 0x00, 0x00, 0x0A, 0x23, 0x45, 0x67, 0x01, 0, 0, 0],
        &[0x27, 0x01, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x01, 0x65],
        &[0, 0, 0, 21],
    ])
}

fn expected_tags() -> Vec<FlvTag> {
    vec![
        FlvTag::script(0, script_body()),
        FlvTag::audio(0, vec![0xAF, 0x00, 0x12, 0x10]),
        FlvTag::video(0, cat(&[&[0x17, 0x00, 0x00, 0x00, 0x00], &AVC_CONFIG])),
        FlvTag::video(
            0x0123_4567,
            vec![0x27, 0x01, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x01, 0x65],
        ),
    ]
}

#[test]
fn read_hand_built_file() {
    let file = hand_built_file();
    let mut r = FlvReader::with_options(
        &file[..],
        FlvReaderOptions {
            check_previous_tag_size: true,
            ..FlvReaderOptions::default()
        },
    )
    .unwrap();
    assert_eq!(*r.header(), FlvHeader::new(true, true));
    let tags: Vec<FlvTag> = r.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(tags, expected_tags());

    // Script data.
    let values = tags[0].script_values().unwrap();
    assert_eq!(values[0], Value::from("onMetaData"));
    assert_eq!(
        values[1],
        Value::EcmaArray(EcmaArray::new().with("duration", 0.0))
    );

    // Audio: AAC sequence header.
    let (ah, payload) = AudioTagHeader::parse(&tags[1].data).unwrap();
    assert_eq!(
        ah,
        AudioTagHeader {
            sound_format: SoundFormat::Aac,
            sound_rate: SoundRate::Rate44k,
            sound_size: SoundSize::Bits16,
            sound_type: SoundType::Stereo,
            aac_packet_type: Some(AacPacketType::SequenceHeader),
        }
    );
    let asc = AudioSpecificConfig::parse(payload).unwrap();
    assert_eq!(asc.audio_object_type, 2);
    assert_eq!(asc.sampling_frequency_index, 4);
    assert_eq!(asc.sampling_frequency, 44100);
    assert_eq!(asc.channel_configuration, 2);
    assert!(asc.sbr.is_none());
    let ga = asc.ga.unwrap();
    assert!(!ga.frame_length_flag && !ga.depends_on_core_coder && !ga.extension_flag);
    assert_eq!(asc.to_bytes(), [0x12, 0x10]);
    assert_eq!(AudioSpecificConfig::aac_lc(4, 2).to_bytes(), [0x12, 0x10]);

    // Video: AVC sequence header and configuration record.
    let (vh, payload) = VideoTagHeader::parse(&tags[2].data).unwrap();
    assert_eq!(vh.frame_type, FrameType::KeyFrame);
    assert_eq!(vh.codec_id, CodecId::Avc);
    assert_eq!(vh.avc_packet_type, Some(AvcPacketType::SequenceHeader));
    assert_eq!(vh.composition_time, 0);
    let rec = AvcDecoderConfigurationRecord::parse(payload).unwrap();
    assert_eq!(rec.profile_indication, 66);
    assert_eq!(rec.profile_compatibility, 0xC0);
    assert_eq!(rec.level_indication, 30);
    assert_eq!(rec.nalu_length_size(), 4);
    assert_eq!(rec.sps, vec![vec![0x67, 0x42, 0xC0, 0x1E]]);
    assert_eq!(rec.pps, vec![vec![0x68, 0xCE]]);
    assert!(rec.trailing.is_empty());
    assert_eq!(rec.to_bytes().unwrap(), AVC_CONFIG);

    // Video: NALU with composition time and extended timestamp.
    let (vh, payload) = VideoTagHeader::parse(&tags[3].data).unwrap();
    assert_eq!(vh.frame_type, FrameType::InterFrame);
    assert_eq!(vh.avc_packet_type, Some(AvcPacketType::Nalu));
    assert_eq!(vh.composition_time, 33);
    assert_eq!(tags[3].timestamp, 0x0123_4567);
    assert_eq!(split_nalus(payload, 4).unwrap(), vec![&[0x65u8][..]]);
    assert_eq!(vh.to_bytes().unwrap(), &tags[3].data[..5]);
}

#[test]
fn write_matches_hand_built_file() {
    let bytes = flv::encode_all(&FlvHeader::new(true, true), &expected_tags()).unwrap();
    assert_eq!(bytes, hand_built_file());
    let mut w = FlvWriter::new(Vec::new(), &FlvHeader::new(true, true)).unwrap();
    for t in expected_tags() {
        w.write_tag(&t).unwrap();
    }
    assert_eq!(w.into_inner().unwrap(), hand_built_file());
}

/// A reader that returns at most one byte per call.
struct Trickle<R>(R);

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn reads_from_short_reads() {
    let file = hand_built_file();
    let tags: Vec<FlvTag> = FlvReader::new(Trickle(&file[..]))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tags, expected_tags());
}

#[test]
fn every_truncation_is_handled() {
    let file = hand_built_file();
    let all = expected_tags();
    for n in 0..file.len() {
        match flv::decode_all(&file[..n]) {
            // A cut at a tag boundary (or just before a PreviousTagSize) is a
            // clean end: the tags read are a prefix of the full list.
            Ok((_, tags)) => assert_eq!(&all[..tags.len()], &tags[..], "prefix {n}"),
            Err(Error::Truncated(_)) => {}
            Err(e) => panic!("prefix {n}: unexpected error {e}"),
        }
    }
    assert!(matches!(
        flv::decode_all(&file[..5]),
        Err(Error::Truncated("file header"))
    ));
    assert!(matches!(
        flv::decode_all(&file[..20]),
        Err(Error::Truncated("tag header"))
    ));
    assert!(matches!(
        flv::decode_all(&file[..30]),
        Err(Error::Truncated("tag data"))
    ));
    assert!(matches!(
        flv::decode_all(&file[..13 + 11 + 40 + 2]),
        Err(Error::Truncated("previous tag size"))
    ));
}

#[test]
fn header_variants() {
    assert!(matches!(
        FlvHeader::parse(b"FLX\x01\x05\x00\x00\x00\x09"),
        Err(Error::InvalidFlvSignature)
    ));
    assert!(matches!(
        FlvHeader::parse(b"FLV\x01\x05\x00\x00\x00\x08"),
        Err(Error::InvalidFlv(_))
    ));
    let h = FlvHeader::parse(b"FLV\x01\x04\x00\x00\x00\x09").unwrap();
    assert!(h.has_audio && !h.has_video);
    // A larger DataOffset: extra header bytes are skipped / zero-filled.
    let h = FlvHeader {
        data_offset: 12,
        ..FlvHeader::new(false, true)
    };
    let bytes = flv::encode_all(&h, &[FlvTag::video(5, vec![0x22, 0x00])]).unwrap();
    assert_eq!(
        &bytes[..16],
        b"FLV\x01\x01\x00\x00\x00\x0C\x00\x00\x00\x00\x00\x00\x00"
    );
    let (h2, tags) = flv::decode_all(&bytes).unwrap();
    assert_eq!(h2, h);
    assert_eq!(tags, vec![FlvTag::video(5, vec![0x22, 0x00])]);
    // DataOffset beyond the configured limit.
    let big = b"FLV\x01\x05\xFF\xFF\xFF\xFF";
    assert!(matches!(flv::decode_all(big), Err(Error::InvalidFlv(_))));
    // Header only (no PreviousTagSize0): no tags.
    assert_eq!(
        flv::decode_all(&b"FLV\x01\x05\x00\x00\x00\x09"[..])
            .unwrap()
            .1,
        vec![]
    );
}

#[test]
fn previous_tag_size_checking() {
    let mut file = hand_built_file();
    // Corrupt PreviousTagSize after the first tag (offset 13 + 11 + 40).
    file[13 + 11 + 40 + 3] = 50;
    // Lenient by default.
    assert_eq!(flv::decode_all(&file).unwrap().1, expected_tags());
    let r = FlvReader::with_options(
        &file[..],
        FlvReaderOptions {
            check_previous_tag_size: true,
            ..FlvReaderOptions::default()
        },
    )
    .unwrap();
    let results: Vec<_> = r.collect();
    assert_eq!(results.len(), 1, "iterator stops after the error");
    assert!(matches!(
        results[0],
        Err(Error::PreviousTagSizeMismatch {
            expected: 51,
            found: 50
        })
    ));
}

#[test]
fn tag_size_limit() {
    let file = hand_built_file();
    let mut r = FlvReader::with_options(
        &file[..],
        FlvReaderOptions {
            max_tag_size: 20,
            ..FlvReaderOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(
        r.next_tag(),
        Err(Error::TagTooLarge {
            size: 40,
            limit: 20
        })
    ));
    assert!(r.next_tag().unwrap().is_none());
}

#[test]
fn tag_header_fields() {
    let h = TagHeader::parse(&[
        0x29, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A,
    ])
    .unwrap();
    assert!(h.filter);
    assert_eq!(h.tag_type, TagType::Video);
    assert_eq!(h.data_size, 0x010203);
    assert_eq!(h.timestamp, 0x07040506);
    assert_eq!(h.stream_id, 0x08090A);
    assert_eq!(
        h.to_bytes().unwrap(),
        [0x29, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A]
    );
    assert_eq!(TagType::from_u8(0x1F), TagType::Other(0x1F));
    let too_big = TagHeader {
        data_size: 0x0100_0000,
        ..h
    };
    assert!(too_big.to_bytes().is_err());
}

#[test]
fn audio_headers() {
    // Speex: 0xB2 = format 11, rate 0, 16-bit, mono.
    let (h, rest) = AudioTagHeader::parse(&[0xB2, 0xAA]).unwrap();
    assert_eq!(h.sound_format, SoundFormat::Speex);
    assert_eq!(h.sound_rate, SoundRate::Rate5_5k);
    assert_eq!(h.sound_size, SoundSize::Bits16);
    assert_eq!(h.sound_type, SoundType::Mono);
    assert_eq!(h.aac_packet_type, None);
    assert_eq!(rest, &[0xAA]);
    assert_eq!(h.to_bytes(), [0xB2]);
    // Nellymoser 44 kHz 16-bit mono: 6 << 4 | 3 << 2 | 2 = 0x6E.
    let (h, _) = AudioTagHeader::parse(&[0x6E]).unwrap();
    assert_eq!(h.sound_format, SoundFormat::Nellymoser);
    assert_eq!(h.sound_rate.hz(), 44100);
    // Every first byte round-trips.
    for b in 0..=255u8 {
        let body = [b, 0x01];
        let (h, _) = AudioTagHeader::parse(&body).unwrap();
        assert_eq!(h.to_bytes(), &body[..h.len()]);
    }
    assert!(AudioTagHeader::parse(&[]).is_err());
    assert!(AudioTagHeader::parse(&[0xAF]).is_err());
    assert_eq!(SoundFormat::from_u4(9), SoundFormat::Reserved(9));
}

#[test]
fn video_headers() {
    // Sorenson H.263 key frame.
    let (h, rest) = VideoTagHeader::parse(&[0x12, 0x00, 0x00]).unwrap();
    assert_eq!(h.frame_type, FrameType::KeyFrame);
    assert_eq!(h.codec_id, CodecId::SorensonH263);
    assert_eq!(h.avc_packet_type, None);
    assert_eq!(rest, &[0x00, 0x00]);
    // Negative composition time: 0xFFFFFE = -2.
    let (h, _) = VideoTagHeader::parse(&[0x27, 0x01, 0xFF, 0xFF, 0xFE]).unwrap();
    assert_eq!(h.composition_time, -2);
    assert_eq!(h.to_bytes().unwrap(), [0x27, 0x01, 0xFF, 0xFF, 0xFE]);
    // Video info/command frame: 0x52 = frame type 5, H.263; command 0 (seek start).
    let (h, rest) = VideoTagHeader::parse(&[0x52, 0x00]).unwrap();
    assert_eq!(h.frame_type, FrameType::VideoInfoCommand);
    assert_eq!(h.video_command, Some(0));
    assert!(rest.is_empty());
    assert_eq!(h.to_bytes().unwrap(), [0x52, 0x00]);
    // AVC end of sequence.
    let (h, _) = VideoTagHeader::parse(&[0x17, 0x02, 0x00, 0x00, 0x00]).unwrap();
    assert_eq!(h.avc_packet_type, Some(AvcPacketType::EndOfSequence));
    // Truncated AVC header.
    assert!(VideoTagHeader::parse(&[0x17, 0x01, 0x00]).is_err());
    assert!(VideoTagHeader::parse(&[]).is_err());
}

#[test]
fn avc_config_errors_and_extensions() {
    for n in 0..AVC_CONFIG.len() {
        assert!(
            AvcDecoderConfigurationRecord::parse(&AVC_CONFIG[..n]).is_err(),
            "prefix {n}"
        );
    }
    let mut bad = AVC_CONFIG;
    bad[0] = 2;
    assert!(AvcDecoderConfigurationRecord::parse(&bad).is_err());
    // High-profile extension bytes are kept.
    let ext = cat(&[&AVC_CONFIG, &[0xFD, 0xF8, 0xF8, 0x00]]);
    let rec = AvcDecoderConfigurationRecord::parse(&ext).unwrap();
    assert_eq!(&rec.trailing[..], &[0xFD, 0xF8, 0xF8, 0x00]);
    assert_eq!(rec.to_bytes().unwrap(), ext);
    // NALU splitting.
    assert_eq!(
        split_nalus(&[0x00, 0x02, 0xAA, 0xBB, 0x00, 0x01, 0xCC], 2).unwrap(),
        vec![&[0xAA, 0xBB][..], &[0xCC][..]]
    );
    assert!(split_nalus(&[0x00, 0x03, 0xAA], 2).is_err());
    assert!(split_nalus(&[0x00], 2).is_err());
    assert!(split_nalus(&[], 5).is_err());
}

#[test]
fn audio_specific_config_variants() {
    // HE-AAC with explicit SBR signalling: AOT 5, 24 kHz core, stereo,
    // extension 48 kHz, underlying AOT 2, GA flags 0.
    let bytes = [0x2B, 0x11, 0x88, 0x00];
    let asc = AudioSpecificConfig::parse(&bytes).unwrap();
    assert_eq!(asc.audio_object_type, 2);
    assert_eq!(asc.sampling_frequency, 24000);
    assert_eq!(asc.channel_configuration, 2);
    let sbr = asc.sbr.unwrap();
    assert_eq!(sbr.object_type, 5);
    assert_eq!(sbr.sampling_frequency, 48000);
    assert_eq!(asc.to_bytes(), bytes);
    // Escaped object type 42 (31 + 6 bits), 48 kHz, stereo; no GA config.
    let bytes = [0xF9, 0x46, 0x40];
    let asc = AudioSpecificConfig::parse(&bytes).unwrap();
    assert_eq!(asc.audio_object_type, 42);
    assert_eq!(asc.sampling_frequency, 48000);
    assert!(asc.ga.is_none());
    assert_eq!(asc.to_bytes(), bytes);
    // Explicit 24-bit frequency.
    let mut asc = AudioSpecificConfig::aac_lc(15, 1);
    asc.sampling_frequency = 44056;
    let parsed = AudioSpecificConfig::parse(&asc.to_bytes()).unwrap();
    assert_eq!(parsed.sampling_frequency_index, 15);
    assert_eq!(parsed.sampling_frequency, 44056);
    assert_eq!(parsed.channel_configuration, 1);
    // Too short.
    assert!(AudioSpecificConfig::parse(&[0x12]).is_err());
    assert!(AudioSpecificConfig::parse(&[]).is_err());
}

#[test]
fn garbage_after_header_never_panics() {
    let mut state = 0x1234_5678u32;
    for len in 0..200usize {
        let mut file = b"FLV\x01\x05\x00\x00\x00\x09".to_vec();
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            file.push(state as u8);
        }
        let _ = flv::decode_all(&file);
    }
}
