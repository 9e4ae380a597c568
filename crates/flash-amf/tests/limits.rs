//! Hostile-input tests: depth, collection, allocation and reference-table limits.

use flash_amf::amf0::{self, Amf0Decoder, Amf0Encoder};
use flash_amf::amf3::{self, Amf3Decoder};
use flash_amf::{DecodeOptions, EncodeOptions, Error, Limits, Value};

fn opts(limits: Limits) -> DecodeOptions {
    DecodeOptions::default().with_limits(limits)
}

#[test]
fn amf0_depth_bomb() {
    // 10 000 nested strict arrays of one element.
    let mut bytes = Vec::new();
    for _ in 0..10_000 {
        bytes.extend_from_slice(&[0x0A, 0, 0, 0, 1]);
    }
    bytes.push(0x05);
    assert!(matches!(
        amf0::decode(&bytes),
        Err(Error::DepthLimitExceeded { limit: 64 })
    ));
    // Exactly at the limit is fine: 64 arrays put the null at depth 64.
    let mut ok = Vec::new();
    for _ in 0..64 {
        ok.extend_from_slice(&[0x0A, 0, 0, 0, 1]);
    }
    ok.push(0x05);
    assert!(amf0::decode(&ok).is_ok());
    let mut too_deep = vec![0x0A, 0, 0, 0, 1];
    too_deep.extend_from_slice(&ok);
    assert!(amf0::decode(&too_deep).is_err());
    // Nested objects the same way.
    let mut bytes = Vec::new();
    for _ in 0..1000 {
        bytes.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
    }
    assert!(matches!(
        amf0::decode(&bytes),
        Err(Error::DepthLimitExceeded { .. })
    ));
}

/// `n` AMF3 arrays, each the one element of the one before; the innermost
/// element is left for the caller.
fn nested_amf3_arrays(n: usize) -> Vec<u8> {
    [0x09, 0x03, 0x01].repeat(n)
}

#[test]
fn amf3_depth_bomb() {
    let mut bytes = nested_amf3_arrays(100_000);
    bytes.push(0x01);
    assert!(matches!(
        amf3::decode(&bytes),
        Err(Error::DepthLimitExceeded { limit: 64 })
    ));
    // Via the avmplus switch too.
    let mut bytes = vec![0x11];
    for _ in 0..100 {
        bytes.extend_from_slice(&[0x0A, 0x0B, 0x01, 0x03, b'a']);
    }
    assert!(matches!(
        amf0::decode(&bytes),
        Err(Error::DepthLimitExceeded { .. })
    ));
}

#[test]
fn configurable_depth() {
    let bytes = [0x0A, 0, 0, 0, 1, 0x0A, 0, 0, 0, 1, 0x05];
    let shallow = Limits {
        max_depth: 1,
        ..Limits::default()
    };
    assert!(Amf0Decoder::with_options(&bytes, opts(shallow))
        .decode()
        .is_err());
    let ok = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    assert!(Amf0Decoder::with_options(&bytes, opts(ok)).decode().is_ok());
    // Encoder depth limit.
    let mut v = Value::Null;
    for _ in 0..100 {
        v = Value::StrictArray(vec![v]);
    }
    assert!(matches!(
        amf0::encode(&v),
        Err(Error::DepthLimitExceeded { limit: 64 })
    ));
    assert!(matches!(
        amf3::encode(&v),
        Err(Error::DepthLimitExceeded { limit: 64 })
    ));
    let mut e = Amf0Encoder::with_options(EncodeOptions {
        max_depth: 200,
        ..EncodeOptions::default()
    });
    e.encode(&v).unwrap();
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // Strict array claiming 4 billion elements.
    assert!(matches!(
        amf0::decode(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF]),
        Err(Error::CollectionTooLarge { .. })
    ));
    // Claiming 1 000 000 elements (within the limit) with no data: EOF, and the
    // preallocation is bounded by the (empty) remaining input.
    assert!(matches!(
        amf0::decode(&[0x0A, 0x00, 0x0F, 0x42, 0x40]),
        Err(Error::UnexpectedEof { .. })
    ));
    // Long string / XML claiming 4 GB.
    assert!(matches!(
        amf0::decode(&[0x0C, 0xFF, 0xFF, 0xFF, 0xFF, b'a']),
        Err(Error::UnexpectedEof { .. })
    ));
    assert!(matches!(
        amf0::decode(&[0x0F, 0xFF, 0xFF, 0xFF, 0xFF]),
        Err(Error::UnexpectedEof { .. })
    ));
    // AMF3 byte array / string / array / dictionary / vector with the largest U29.
    for marker in [0x06u8, 0x07, 0x0B, 0x0C] {
        assert!(matches!(
            amf3::decode(&[marker, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(Error::UnexpectedEof { .. })
        ));
    }
    for marker in [0x09u8, 0x0D, 0x0E, 0x0F, 0x10, 0x11] {
        assert!(matches!(
            amf3::decode(&[marker, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]),
            Err(Error::CollectionTooLarge { .. })
        ));
    }
    // Traits claiming 2^25 sealed members.
    assert!(matches!(
        amf3::decode(&[0x0A, 0xFF, 0xFF, 0xFF, 0xF3, 0x01]),
        Err(Error::CollectionTooLarge { .. })
    ));
}

#[test]
fn collection_limit() {
    let limits = Limits {
        max_collection_len: 2,
        ..Limits::default()
    };
    let abc = Value::Object(
        flash_amf::Object::new()
            .with("a", 1.0)
            .with("b", 1.0)
            .with("c", 1.0),
    );
    let three = Value::StrictArray(vec![Value::Null; 3]);
    let from_amf0 =
        |v: &Value| Amf0Decoder::with_options(&amf0::encode(v).unwrap(), opts(limits)).decode();
    let from_amf3 =
        |v: &Value| Amf3Decoder::with_options(&amf3::encode(v).unwrap(), opts(limits)).decode();
    for (what, r) in [
        ("AMF0 strict array", from_amf0(&three)),
        ("AMF0 object", from_amf0(&abc)),
        ("AMF3 object", from_amf3(&abc)),
    ] {
        assert!(
            matches!(r, Err(Error::CollectionTooLarge { len: 3, limit: 2 })),
            "{what}: {r:?}"
        );
    }
}

#[test]
fn allocation_limit() {
    let limits = Limits {
        max_alloc_bytes: 1000,
        ..Limits::default()
    };
    let s = amf0::encode(&Value::LongString("x".repeat(2000))).unwrap();
    assert!(matches!(
        Amf0Decoder::with_options(&s, opts(limits)).decode(),
        Err(Error::AllocationLimitExceeded { limit: 1000 })
    ));
    let b = amf3::encode(&Value::ByteArray(vec![0; 2000])).unwrap();
    assert!(matches!(
        Amf3Decoder::with_options(&b, opts(limits)).decode(),
        Err(Error::AllocationLimitExceeded { limit: 1000 })
    ));
    // 1000 nulls cost far more than 1000 bytes of value nodes.
    let nulls = amf3::encode(&Value::StrictArray(vec![Value::Null; 1000])).unwrap();
    assert!(matches!(
        Amf3Decoder::with_options(&nulls, opts(limits)).decode(),
        Err(Error::AllocationLimitExceeded { .. })
    ));
}

/// Each level is an array holding two references to the previous level, so
/// level k expands to 2^k nodes.
#[test]
fn amf3_reference_bomb() {
    let mut bytes = vec![0x09, 0x05, 0x01, 0x01, 0x01]; // object 0: [null, null]
    for k in 1..64u8 {
        // object k: [ref k-1, ref k-1]
        let r = (k - 1) << 1;
        bytes.extend_from_slice(&[0x09, 0x05, 0x01, 0x09, r, 0x09, r]);
    }
    let start = std::time::Instant::now();
    let r = amf3::decode_all(&bytes);
    assert!(
        matches!(r, Err(Error::AllocationLimitExceeded { .. })),
        "{r:?}"
    );
    assert!(start.elapsed().as_secs() < 30);
    // A small one resolves fully.
    let small = &bytes[..5 + 7 * 3];
    let v = amf3::decode_all(small).unwrap();
    let level3 = &v[3];
    fn count(v: &Value) -> usize {
        match v {
            Value::StrictArray(a) => 1 + a.iter().map(count).sum::<usize>(),
            _ => 1,
        }
    }
    assert_eq!(count(level3), 31); // 2^(k+2) - 1 nodes at level k
}

#[test]
fn amf0_reference_bomb() {
    let mut bytes = vec![0x0A, 0, 0, 0, 2, 0x05, 0x05];
    for k in 1..64u16 {
        let r = (k - 1).to_be_bytes();
        bytes.extend_from_slice(&[0x0A, 0, 0, 0, 2, 0x07, r[0], r[1], 0x07, r[0], r[1]]);
    }
    let r = amf0::decode_all(&bytes);
    assert!(
        matches!(r, Err(Error::AllocationLimitExceeded { .. })),
        "{r:?}"
    );
    // Unresolved mode is linear.
    let o = DecodeOptions {
        resolve_amf0_references: false,
        ..DecodeOptions::default()
    };
    let v = amf0::decode_all_with(&bytes, o).unwrap();
    assert_eq!(v.len(), 64);
    assert_eq!(
        v[63],
        Value::StrictArray(vec![Value::Reference(62), Value::Reference(62)])
    );
}

#[test]
fn reference_resolution_respects_depth() {
    // Object 0 is a chain 40 deep; object 40 wraps 30 levels around a
    // reference to it: 70 levels in total once resolved.
    let mut bytes = nested_amf3_arrays(40);
    bytes.push(0x01);
    bytes.extend(nested_amf3_arrays(30));
    bytes.extend_from_slice(&[0x09, 0x00]);
    let mut d = Amf3Decoder::new(&bytes);
    assert!(d.decode().is_ok());
    assert!(matches!(d.decode(), Err(Error::DepthLimitExceeded { .. })));
}

#[test]
fn reference_table_limit() {
    let limits = Limits {
        max_references: 2,
        ..Limits::default()
    };
    let v = Value::StrictArray(vec![Value::StrictArray(vec![]), Value::StrictArray(vec![])]);
    let b0 = amf0::encode(&v).unwrap();
    assert!(matches!(
        Amf0Decoder::with_options(&b0, opts(limits)).decode(),
        Err(Error::ReferenceTableFull { limit: 2 })
    ));
    let b3 = amf3::encode(&v).unwrap();
    assert!(matches!(
        Amf3Decoder::with_options(&b3, opts(limits)).decode(),
        Err(Error::ReferenceTableFull { limit: 2 })
    ));
    let strings = amf3::encode(&Value::StrictArray(vec![
        Value::from("a"),
        Value::from("b"),
        Value::from("c"),
    ]))
    .unwrap();
    assert!(matches!(
        Amf3Decoder::with_options(&strings, opts(limits)).decode(),
        Err(Error::ReferenceTableFull { limit: 2 })
    ));
}

#[test]
fn cycles_are_rejected() {
    // AMF3 object whose member is itself.
    assert!(matches!(
        amf3::decode(&[0x0A, 0x0B, 0x01, 0x03, b'a', 0x0A, 0x00, 0x01]),
        Err(Error::CyclicReference { index: 0, .. })
    ));
    // AMF0 object whose member is itself.
    assert!(matches!(
        amf0::decode(&[0x03, 0x00, 0x01, b'a', 0x07, 0x00, 0x00, 0x00, 0x00, 0x09]),
        Err(Error::CyclicReference { index: 0, .. })
    ));
    // Traits reference to a traits entry that does not exist.
    assert!(matches!(
        amf3::decode(&[0x0A, 0x05]),
        Err(Error::BadReference { index: 1, .. })
    ));
}
