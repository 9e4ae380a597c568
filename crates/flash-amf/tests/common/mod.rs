//! Helpers the known-answer tests of both encodings share.

#![allow(dead_code, unreachable_pub)]

use flash_amf::{Result, Value};

/// Concatenates byte pieces.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Checks that `encode` writes `v` as `bytes` and `decode` reads `bytes` back as `v`.
pub fn both_ways(
    encode: fn(&Value) -> Result<Vec<u8>>,
    decode: fn(&[u8]) -> Result<Value>,
    v: Value,
    bytes: &[u8],
) {
    assert_eq!(encode(&v).unwrap(), bytes, "encoding {v:?}");
    let d = decode(bytes).unwrap();
    assert!(d.bitwise_eq(&v), "decoded {d:?}, expected {v:?}");
}
