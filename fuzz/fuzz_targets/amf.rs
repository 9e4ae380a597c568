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

/// Whatever `decode` accepts re-encodes with `encode`, and a second cycle is
/// exact.
fn check_stable(
    data: &[u8],
    name: &str,
    decode: fn(&[u8], DecodeOptions) -> flash_amf::Result<Vec<Value>>,
    encode: fn(&[Value]) -> flash_amf::Result<Vec<u8>>,
) {
    if let Ok(v1) = decode(data, options()) {
        if let Ok(b1) = encode(&v1) {
            let v2 = decode(&b1, relaxed())
                .unwrap_or_else(|e| panic!("re-encoded {name} decodes: {e:?}"));
            let b2 = encode(&v2).unwrap_or_else(|e| panic!("normalised {name} encodes: {e:?}"));
            let v3 = decode(&b2, relaxed())
                .unwrap_or_else(|e| panic!("normalised {name} decodes: {e:?}"));
            assert!(same(&v2, &v3), "{name} normalisation is not stable");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_stable(data, "AMF0", amf0::decode_all_with, amf0::encode_all);
    check_stable(data, "AMF3", amf3::decode_all_with, amf3::encode_all);
    let _ = flash_amf::command::decode_extended_with(data, options());
});
