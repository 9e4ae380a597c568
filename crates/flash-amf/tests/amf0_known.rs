//! Known-answer tests for every AMF0 marker, with hand-computed bytes.

mod common;

use common::cat;
use flash_amf::amf0::{self, Amf0Decoder, Amf0Encoder};
use flash_amf::{
    Date, DecodeOptions, Dictionary, EcmaArray, EncodeOptions, Error, Object, Value, Vector,
};

const ONE: [u8; 8] = [0x3F, 0xF0, 0, 0, 0, 0, 0, 0];

/// Checks that `v` encodes to `bytes` and `bytes` decodes to `v`.
fn both_ways(v: Value, bytes: &[u8]) {
    common::both_ways(amf0::encode, amf0::decode, v, bytes);
}

#[test]
fn number() {
    both_ways(Value::Number(1.0), &cat(&[&[0x00], &ONE]));
    both_ways(Value::Number(-2.5), &[0x00, 0xC0, 0x04, 0, 0, 0, 0, 0, 0]);
    both_ways(
        Value::Number(f64::NAN),
        &cat(&[&[0x00], &f64::NAN.to_be_bytes()]),
    );
    // Integer is written as a number.
    assert_eq!(
        amf0::encode(&Value::Integer(1)).unwrap(),
        cat(&[&[0x00], &ONE])
    );
}

#[test]
fn boolean() {
    both_ways(Value::Bool(true), &[0x01, 0x01]);
    both_ways(Value::Bool(false), &[0x01, 0x00]);
    // Any non-zero byte is true.
    assert_eq!(amf0::decode(&[0x01, 0x05]).unwrap(), Value::Bool(true));
}

#[test]
fn string() {
    both_ways(Value::from("hi"), &[0x02, 0x00, 0x02, b'h', b'i']);
    both_ways(Value::from(""), &[0x02, 0x00, 0x00]);
    // UTF-8: "é" is C3 A9.
    both_ways(Value::from("é"), &[0x02, 0x00, 0x02, 0xC3, 0xA9]);
    assert!(matches!(
        amf0::decode(&[0x02, 0x00, 0x01, 0xFF]),
        Err(Error::InvalidUtf8 { offset: 3 })
    ));
}

#[test]
fn long_string_and_auto_promotion() {
    both_ways(
        Value::LongString("abc".into()),
        &[0x0C, 0, 0, 0, 3, b'a', b'b', b'c'],
    );
    // A String longer than 65535 bytes must be written with marker 0x0C.
    let s = "x".repeat(70_000);
    let bytes = amf0::encode(&Value::String(s.clone())).unwrap();
    assert_eq!(&bytes[..5], &[0x0C, 0x00, 0x01, 0x11, 0x70]);
    assert_eq!(amf0::decode(&bytes).unwrap(), Value::LongString(s));
}

#[test]
fn object() {
    let v = Value::Object(Object::new().with("a", 1.0));
    both_ways(
        v,
        &cat(&[&[0x03, 0x00, 0x01, b'a', 0x00], &ONE, &[0x00, 0x00, 0x09]]),
    );
    both_ways(Value::Object(Object::new()), &[0x03, 0x00, 0x00, 0x09]);
    // Empty key not followed by the end marker.
    assert!(matches!(
        amf0::decode(&[0x03, 0x00, 0x00, 0x05]),
        Err(Error::ExpectedObjectEnd { offset: 3 })
    ));
    // Empty keys cannot be encoded.
    assert!(matches!(
        amf0::encode(&Value::Object(Object::new().with("", 1.0))),
        Err(Error::EmptyKey)
    ));
}

#[test]
fn typed_object() {
    let v = Value::Object(Object::typed("Foo").with("x", Value::Null));
    both_ways(
        v,
        &[
            0x10, 0x00, 0x03, b'F', b'o', b'o', 0x00, 0x01, b'x', 0x05, 0x00, 0x00, 0x09,
        ],
    );
}

#[test]
fn null_undefined_unsupported() {
    both_ways(Value::Null, &[0x05]);
    both_ways(Value::Undefined, &[0x06]);
    both_ways(Value::Unsupported, &[0x0D]);
}

#[test]
fn reserved_and_unknown_markers() {
    let cases: [(u8, fn(&Error) -> bool); 5] = [
        (0x04, |e| {
            matches!(e, Error::ReservedMarker { marker: 0x04, .. })
        }),
        (0x0E, |e| {
            matches!(e, Error::ReservedMarker { marker: 0x0E, .. })
        }),
        (0x09, |e| {
            matches!(e, Error::UnexpectedObjectEnd { offset: 0 })
        }),
        (0x12, |e| {
            matches!(e, Error::UnknownMarker { marker: 0x12, .. })
        }),
        (0xFF, |e| {
            matches!(e, Error::UnknownMarker { marker: 0xFF, .. })
        }),
    ];
    for (marker, expected) in cases {
        let r = amf0::decode(&[marker]);
        assert!(
            r.as_ref().is_err_and(expected),
            "marker {marker:#04x}: {r:?}"
        );
    }
}

#[test]
fn ecma_array() {
    let v = Value::EcmaArray(EcmaArray::new().with("k", "v"));
    both_ways(
        v,
        &[
            0x08, 0, 0, 0, 1, 0x00, 0x01, b'k', 0x02, 0x00, 0x01, b'v', 0x00, 0x00, 0x09,
        ],
    );
    // The count is only a hint: a wrong count still decodes.
    let d = amf0::decode(&[0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x09]).unwrap();
    assert_eq!(d, Value::EcmaArray(EcmaArray::new()));
    // A dense part is written as "0", "1", ... keys.
    let v = Value::EcmaArray(EcmaArray {
        dense: vec![Value::Null],
        assoc: vec![("a".into(), Value::Undefined)],
    });
    assert_eq!(
        amf0::encode(&v).unwrap(),
        [0x08, 0, 0, 0, 2, 0x00, 0x01, b'0', 0x05, 0x00, 0x01, b'a', 0x06, 0x00, 0x00, 0x09]
    );
}

#[test]
fn strict_array() {
    let v = Value::StrictArray(vec![Value::Number(1.0), Value::from("x")]);
    both_ways(
        v,
        &cat(&[&[0x0A, 0, 0, 0, 2, 0x00], &ONE, &[0x02, 0x00, 0x01, b'x']]),
    );
    both_ways(Value::StrictArray(vec![]), &[0x0A, 0, 0, 0, 0]);
}

#[test]
fn date() {
    // 1e12 ms = 0x426D1A94A2000000; time zone field 0.
    let v = Value::Date(Date::new(1e12));
    both_ways(
        v,
        &[
            0x0B, 0x42, 0x6D, 0x1A, 0x94, 0xA2, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
    );
    let v = Value::Date(Date {
        millis: 0.0,
        timezone: -60,
    });
    both_ways(v, &[0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xC4]);
}

#[test]
fn xml_document() {
    both_ways(
        Value::XmlDocument("<a/>".into()),
        &[0x0F, 0, 0, 0, 4, b'<', b'a', b'/', b'>'],
    );
}

#[test]
fn reference_decoding() {
    // [{a:"b"}, ref 0] as a sequence sharing one table.
    let obj = [
        0x03, 0x00, 0x01, b'a', 0x02, 0x00, 0x01, b'b', 0x00, 0x00, 0x09,
    ];
    let bytes = cat(&[&obj, &[0x07, 0x00, 0x00]]);
    let values = amf0::decode_all(&bytes).unwrap();
    assert_eq!(values.len(), 2);
    assert_eq!(values[0], values[1]);
    assert_eq!(values[0].get("a"), Some(&Value::from("b")));

    // Strict arrays and ECMA arrays are in the table too: [[], ref 0 (the outer)]
    // is a cycle; [ [], ref 1 ] refers to the inner array.
    let cyc = [0x0A, 0, 0, 0, 1, 0x07, 0x00, 0x00];
    assert!(matches!(
        amf0::decode(&cyc),
        Err(Error::CyclicReference { index: 0, .. })
    ));
    let ok = [0x0A, 0, 0, 0, 2, 0x0A, 0, 0, 0, 0, 0x07, 0x00, 0x01];
    assert_eq!(
        amf0::decode(&ok).unwrap(),
        Value::StrictArray(vec![Value::StrictArray(vec![]), Value::StrictArray(vec![])])
    );
    // Out-of-range reference.
    assert!(matches!(
        amf0::decode(&[0x07, 0x00, 0x00]),
        Err(Error::BadReference { index: 0, .. })
    ));
}

#[test]
fn unresolved_references() {
    let opts = DecodeOptions {
        resolve_amf0_references: false,
        ..DecodeOptions::default()
    };
    // A self-referencing object is allowed when references are kept.
    let bytes = [0x03, 0x00, 0x01, b's', 0x07, 0x00, 0x00, 0x00, 0x00, 0x09];
    let v = Amf0Decoder::with_options(&bytes, opts).decode().unwrap();
    assert_eq!(
        v,
        Value::Object(Object::new().with("s", Value::Reference(0)))
    );
    // And written back byte for byte.
    assert_eq!(amf0::encode(&v).unwrap(), bytes);
    // A reference to a value not yet written is refused by the encoder.
    assert!(amf0::encode(&Value::Reference(0)).is_err());
}

#[test]
fn reference_encoding() {
    let o = Value::Object(Object::new().with("a", "b"));
    let arr = Value::StrictArray(vec![o.clone(), o.clone()]);
    let opts = EncodeOptions {
        amf0_references: true,
        ..EncodeOptions::default()
    };
    let mut e = Amf0Encoder::with_options(opts);
    e.encode(&arr).unwrap();
    e.encode(&o).unwrap();
    let bytes = e.into_vec();
    let obj = [
        0x03, 0x00, 0x01, b'a', 0x02, 0x00, 0x01, b'b', 0x00, 0x00, 0x09,
    ];
    // array = index 0, object = index 1; both later occurrences are references.
    let expected = cat(&[
        &[0x0A, 0, 0, 0, 2],
        &obj,
        &[0x07, 0x00, 0x01],
        &[0x07, 0x00, 0x01],
    ]);
    assert_eq!(bytes, expected);
    let back = amf0::decode_all(&bytes).unwrap();
    assert_eq!(back, vec![arr, o]);
}

#[test]
fn avmplus_switch() {
    // 0x11 then AMF3 integer 5.
    assert_eq!(
        amf0::decode(&[0x11, 0x04, 0x05]).unwrap(),
        Value::Integer(5)
    );
    let opts = DecodeOptions {
        keep_avmplus_wrapper: true,
        ..DecodeOptions::default()
    };
    let v = Amf0Decoder::with_options(&[0x11, 0x04, 0x05], opts)
        .decode()
        .unwrap();
    assert_eq!(v, Value::Avmplus(Box::new(Value::Integer(5))));
    assert_eq!(amf0::encode(&v).unwrap(), [0x11, 0x04, 0x05]);

    // AMF3-only values switch automatically.
    both_ways(
        Value::ByteArray(vec![1, 2]),
        &[0x11, 0x0C, 0x05, 0x01, 0x02],
    );
    both_ways(
        Value::VectorInt(Vector {
            fixed: false,
            items: vec![7],
        }),
        &[0x11, 0x0D, 0x03, 0x00, 0, 0, 0, 7],
    );
    both_ways(
        Value::Dictionary(Dictionary::default()),
        &[0x11, 0x11, 0x01, 0x00],
    );
    both_ways(Value::Xml("".into()), &[0x11, 0x0B, 0x01]);
    // An object with sealed traits switches; anonymous dynamic ones do not.
    // U29O 0x1B = 1 sealed member << 4 | dynamic 0x08 | inline traits 0x03.
    both_ways(
        Value::Object(Object::typed("P").with_sealed("x", Value::Null)),
        &[0x11, 0x0A, 0x1B, 0x03, b'P', 0x03, b'x', 0x01, 0x01],
    );
    // Not dynamic: U29O 0x13, and no dynamic-member terminator.
    let mut sealed_only = Object::typed("P").with_sealed("x", Value::Null);
    sealed_only.dynamic = false;
    both_ways(
        Value::Object(sealed_only),
        &[0x11, 0x0A, 0x13, 0x03, b'P', 0x03, b'x', 0x01],
    );
    // Disabled: an error instead.
    let mut e = Amf0Encoder::with_options(EncodeOptions {
        auto_avmplus: false,
        ..EncodeOptions::default()
    });
    assert!(matches!(
        e.encode(&Value::ByteArray(vec![])),
        Err(Error::NotRepresentable(_))
    ));
}

#[test]
fn avmplus_fresh_context_per_switch() {
    // Two switched strings "ab": the second cannot refer to the first's string
    // table by default, so it is written inline again.
    let mut e = Amf0Encoder::new();
    e.encode_avmplus(&Value::from("ab")).unwrap();
    e.encode_avmplus(&Value::from("ab")).unwrap();
    let fresh = e.into_vec();
    assert_eq!(
        fresh,
        [0x11, 0x06, 0x05, b'a', b'b', 0x11, 0x06, 0x05, b'a', b'b']
    );
    // With a shared context, the second is a string reference.
    let shared_enc = EncodeOptions {
        share_amf3_context: true,
        ..EncodeOptions::default()
    };
    let mut e = Amf0Encoder::with_options(shared_enc);
    e.encode_avmplus(&Value::from("ab")).unwrap();
    e.encode_avmplus(&Value::from("ab")).unwrap();
    let shared = e.into_vec();
    assert_eq!(shared, [0x11, 0x06, 0x05, b'a', b'b', 0x11, 0x06, 0x00]);
    // A default decoder rejects the shared form; a sharing decoder accepts it.
    assert!(matches!(
        amf0::decode_all(&shared),
        Err(Error::BadReference { .. })
    ));
    let opts = DecodeOptions {
        share_amf3_context: true,
        ..DecodeOptions::default()
    };
    assert_eq!(
        amf0::decode_all_with(&shared, opts).unwrap(),
        vec![Value::from("ab"), Value::from("ab")]
    );
}

#[test]
fn reference_to_object_containing_avmplus_value() {
    // {b: 0x11 ByteArray[9]} then a reference to it: the replay rebuilds the
    // AMF3 context of the switched value.
    let obj = [
        0x03, 0x00, 0x01, b'b', 0x11, 0x0C, 0x03, 0x09, 0x00, 0x00, 0x09,
    ];
    let bytes = cat(&[&obj, &[0x07, 0x00, 0x00]]);
    let v = amf0::decode_all(&bytes).unwrap();
    assert_eq!(v[0], v[1]);
    assert_eq!(v[1].get("b"), Some(&Value::ByteArray(vec![9])));
}

#[test]
fn truncated_inputs() {
    let full = amf0::encode(&Value::Object(Object::new().with("key", "value"))).unwrap();
    for n in 0..full.len() {
        assert!(
            matches!(amf0::decode(&full[..n]), Err(Error::UnexpectedEof { .. })),
            "prefix {n}"
        );
    }
    assert!(matches!(
        amf0::decode(&[0x05, 0x05]),
        Err(Error::TrailingBytes {
            offset: 1,
            remaining: 1
        })
    ));
}
