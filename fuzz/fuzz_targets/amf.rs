//! Fuzzes the AMF0, AMF3 and RTMP extended-message decoders.
//!
//! Besides "never panics", checks that anything that decodes re-encodes, that
//! the re-encoding decodes, and that a second encode/decode cycle is exact
//! (decoding normalises a value once; after that it is stable).
#![no_main]

use flash_amf::{amf0, amf3, DecodeOptions, Limits, Value};
use libfuzzer_sys::fuzz_target;

fn options() -> DecodeOptions {
    // Tighter than the defaults so that each input stays fast.
    DecodeOptions::default()
        .with_limits(Limits {
            max_alloc_bytes: 1 << 20,
            ..Limits::default()
        })
        .with_flex_collections()
}

fn relaxed() -> DecodeOptions {
    DecodeOptions::default()
        .with_limits(Limits {
            max_alloc_bytes: 1 << 28,
            max_references: 1 << 24,
            ..Limits::default()
        })
        .with_flex_collections()
}

fn same(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.bitwise_eq(y))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v1) = amf0::decode_all_with(data, options()) {
        if let Ok(b1) = amf0::encode_all(&v1) {
            let v2 = amf0::decode_all_with(&b1, relaxed()).expect("re-encoded AMF0 decodes");
            let b2 = amf0::encode_all(&v2).expect("normalised AMF0 encodes");
            let v3 = amf0::decode_all_with(&b2, relaxed()).expect("normalised AMF0 decodes");
            assert!(same(&v2, &v3), "AMF0 normalisation is not stable");
        }
    }
    if let Ok(v1) = amf3::decode_all_with(data, options()) {
        if let Ok(b1) = amf3::encode_all(&v1) {
            let v2 = amf3::decode_all_with(&b1, relaxed()).expect("re-encoded AMF3 decodes");
            let b2 = amf3::encode_all(&v2).expect("normalised AMF3 encodes");
            let v3 = amf3::decode_all_with(&b2, relaxed()).expect("normalised AMF3 decodes");
            assert!(same(&v2, &v3), "AMF3 normalisation is not stable");
        }
    }
    let _ = flash_amf::command::decode_extended_with(data, options());
});
