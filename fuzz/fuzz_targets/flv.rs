//! Fuzzes the FLV reader and the codec header parsers.
//!
//! Besides "never panics", checks that any file that parses is written back and
//! re-read as the same header and tags.
#![no_main]

use flash_amf::flv::{
    self, AacPacketType, AudioSpecificConfig, AvcDecoderConfigurationRecord, AvcPacketType, TagType,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((header, tags)) = flash_amf::decode_flv_all(data) else {
        return;
    };
    for tag in &tags {
        match tag.tag_type {
            TagType::Audio => {
                if let Ok((h, body)) = flv::AudioTagHeader::parse(&tag.data) {
                    assert_eq!(h.to_bytes(), &tag.data[..h.len()]);
                    if h.aac_packet_type == Some(AacPacketType::SequenceHeader) {
                        let _ = AudioSpecificConfig::parse(body).map(|c| c.to_bytes());
                    }
                }
            }
            TagType::Video => {
                if let Ok((h, body)) = flv::VideoTagHeader::parse(&tag.data) {
                    match h.avc_packet_type {
                        Some(AvcPacketType::SequenceHeader) => {
                            if let Ok(rec) = AvcDecoderConfigurationRecord::parse(body) {
                                let _ = rec.to_bytes();
                            }
                        }
                        Some(AvcPacketType::Nalu) => {
                            let _ = flv::split_nalus(body, 4);
                        }
                        _ => {}
                    }
                }
            }
            TagType::ScriptData => {
                let _ = tag.script_values();
            }
            TagType::Other(_) => {}
        }
    }
    let bytes = flv::encode_all(&header, &tags).expect("parsed FLV re-encodes");
    let (h2, tags2) = flv::decode_all(&bytes).expect("re-encoded FLV parses");
    assert_eq!(h2, header);
    assert_eq!(tags2, tags);
});
