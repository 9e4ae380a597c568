//! Property tests: round trips within each encoding's representable domain, and
//! "arbitrary bytes never panic" for every decoder.

use flash_amf::amf0::{self, Amf0Decoder, Amf0Encoder};
use flash_amf::amf3::{self, Amf3Decoder, Amf3Encoder};
use flash_amf::command::{self, Amf3Switch, Command};
use flash_amf::flv::{
    self, AudioSpecificConfig, AudioTagHeader, AvcDecoderConfigurationRecord, VideoTagHeader,
};
use flash_amf::{
    Date, DecodeOptions, Dictionary, EcmaArray, EncodeOptions, FlvHeader, FlvTag, Object,
    ObjectVector, Value, Vector,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// Strings biased towards repeats so that string references get exercised.
/// Vectors, fixed or not, of fewer than `max` items of `item`.
fn vector<T: std::fmt::Debug>(
    item: impl Strategy<Value = T>,
    max: usize,
) -> impl Strategy<Value = Vector<T>> {
    (any::<bool>(), vec(item, 0..max)).prop_map(|(fixed, items)| Vector { fixed, items })
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ab]{0,2}",
        2 => ".{0,6}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[abc]{1,2}", 1 => ".{1,6}"]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(-0.0),
        1 => (-1000i32..1000).prop_map(f64::from),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..8)
}

/// AMF3 leaves.
fn amf3_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Undefined),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (amf3::INT_MIN..=amf3::INT_MAX).prop_map(Value::Integer),
        prop_oneof![
            Just(-1),
            Just(0),
            Just(0x7F),
            Just(0x80),
            Just(0x3FFF),
            Just(0x4000)
        ]
        .prop_map(Value::Integer),
        number().prop_map(Value::Number),
        any_string().prop_map(Value::String),
        number().prop_map(|n| Value::Date(Date::new(n))),
        any_string().prop_map(Value::XmlDocument),
        any_string().prop_map(Value::Xml),
        bytes().prop_map(Value::ByteArray),
        vector(any::<i32>(), 4).prop_map(Value::VectorInt),
        vector(any::<u32>(), 4).prop_map(Value::VectorUint),
        vector(number(), 4).prop_map(Value::VectorDouble),
    ]
}

/// Values that AMF3 encodes and decodes back exactly.
fn amf3_value() -> impl Strategy<Value = Value> {
    amf3_leaf().prop_recursive(4, 48, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::StrictArray),
            (vec(inner.clone(), 0..3), vec((key(), inner.clone()), 1..3))
                .prop_map(|(dense, assoc)| Value::EcmaArray(EcmaArray { dense, assoc })),
            (
                prop::option::of(key()),
                vec((any_string(), inner.clone()), 0..3),
                any::<bool>(),
                vec((key(), inner.clone()), 0..3),
            )
                .prop_map(|(class_name, sealed, dynamic, props)| {
                    Value::Object(Object {
                        class_name,
                        sealed,
                        dynamic,
                        properties: if dynamic { props } else { Vec::new() },
                    })
                }),
            (any::<bool>(), any_string(), vec(inner.clone(), 0..3)).prop_map(
                |(fixed, type_name, items)| Value::VectorObject(ObjectVector {
                    fixed,
                    type_name,
                    items
                })
            ),
            (any::<bool>(), vec((inner.clone(), inner.clone()), 0..3)).prop_map(
                |(weak_keys, entries)| Value::Dictionary(Dictionary { weak_keys, entries })
            ),
            // Repeated subtrees, to exercise object references.
            inner.prop_map(|v| Value::StrictArray(vec![v.clone(), v])),
        ]
    })
}

/// AMF3-only values: AMF0 always writes these behind the avmplus marker.
fn amf3_only(inner: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    prop_oneof![
        any_string().prop_map(Value::Xml),
        bytes().prop_map(Value::ByteArray),
        vector(any::<i32>(), 3).prop_map(Value::VectorInt),
        vector(any::<u32>(), 3).prop_map(Value::VectorUint),
        vector(number(), 3).prop_map(Value::VectorDouble),
        (any::<bool>(), vec((inner.clone(), inner.clone()), 0..2))
            .prop_map(|(weak_keys, entries)| Value::Dictionary(Dictionary { weak_keys, entries })),
        (key(), vec((any_string(), inner), 1..3)).prop_map(|(c, sealed)| {
            Value::Object(Object {
                class_name: Some(c),
                sealed,
                dynamic: false,
                properties: Vec::new(),
            })
        }),
    ]
}

fn amf0_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop_oneof![
            Just(Value::Undefined),
            Just(Value::Null),
            Just(Value::Unsupported),
            any::<bool>().prop_map(Value::Bool),
            number().prop_map(Value::Number),
            any_string().prop_map(Value::String),
            any_string().prop_map(Value::LongString),
            (number(), any::<i16>()).prop_map(|(millis, timezone)| Value::Date(Date {
                millis,
                timezone
            })),
            any_string().prop_map(Value::XmlDocument),
        ],
        1 => amf3_only(amf3_value().boxed()),
    ]
}

/// Values that AMF0 encodes and decodes back exactly (with default options).
fn amf0_value() -> impl Strategy<Value = Value> {
    amf0_leaf().prop_recursive(4, 48, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::StrictArray),
            vec((key(), inner.clone()), 0..3).prop_map(|assoc| Value::EcmaArray(EcmaArray {
                dense: vec![],
                assoc
            })),
            (
                prop::option::of(any_string()),
                vec((key(), inner.clone()), 0..3)
            )
                .prop_map(|(class_name, properties)| Value::Object(Object {
                    class_name,
                    properties,
                    ..Object::new()
                })),
            inner.prop_map(|v| Value::StrictArray(vec![v.clone(), v])),
        ]
    })
}

fn assert_same(a: &[Value], b: &[Value]) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        prop_assert!(x.bitwise_eq(y), "{:?}\n!=\n{:?}", x, y);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn amf3_round_trip(values in vec(amf3_value(), 1..4), refs in any::<bool>()) {
        let opts = EncodeOptions { amf3_object_references: refs, ..EncodeOptions::default() };
        let mut e = Amf3Encoder::with_options(opts);
        for v in &values {
            e.encode(v).unwrap();
        }
        let bytes = e.into_vec();
        let back = Amf3Decoder::new(&bytes).decode_all().unwrap();
        assert_same(&values, &back)?;
    }

    #[test]
    fn amf3_object_references_never_grow_output(v in amf3_value()) {
        let plain = amf3::encode(&v).unwrap();
        let opts = EncodeOptions { amf3_object_references: true, ..EncodeOptions::default() };
        let refs = amf3::encode_all_with(std::slice::from_ref(&v), opts).unwrap();
        prop_assert!(refs.len() <= plain.len());
    }

    #[test]
    fn amf0_round_trip(values in vec(amf0_value(), 1..4), refs in any::<bool>(), share in any::<bool>()) {
        let opts = EncodeOptions {
            amf0_references: refs,
            amf3_object_references: refs,
            share_amf3_context: share,
            ..EncodeOptions::default()
        };
        let bytes = amf0::encode_all_with(&values, opts).unwrap();
        let dopts = DecodeOptions { share_amf3_context: share, ..DecodeOptions::default() };
        let back = Amf0Decoder::with_options(&bytes, dopts).decode_all().unwrap();
        assert_same(&values, &back)?;
    }

    #[test]
    fn amf0_avmplus_wrapper_round_trip(values in vec(amf3_value(), 1..4)) {
        let wrapped: Vec<Value> = values.into_iter().map(|v| Value::Avmplus(Box::new(v))).collect();
        let bytes = amf0::encode_all(&wrapped).unwrap();
        let dopts = DecodeOptions { keep_avmplus_wrapper: true, ..DecodeOptions::default() };
        let back = Amf0Decoder::with_options(&bytes, dopts).decode_all().unwrap();
        assert_same(&wrapped, &back)?;
    }

    #[test]
    fn command_round_trip(
        name in ".{0,10}",
        txn in number(),
        obj in amf3_value(),
        args in vec(amf3_value(), 0..3),
        after_header in any::<bool>(),
    ) {
        let cmd = Command { name, transaction_id: txn, command_object: obj, arguments: args };
        let policy = if after_header { Amf3Switch::AfterHeader } else { Amf3Switch::WhenNeeded };
        let bytes = cmd.to_amf3(policy).unwrap();
        let back = Command::from_amf3(&bytes).unwrap();
        prop_assert_eq!(&back.name, &cmd.name);
        prop_assert_eq!(back.transaction_id.to_bits(), cmd.transaction_id.to_bits());
        if after_header {
            // Everything after the header went through AMF3 unchanged.
            prop_assert!(back.command_object.bitwise_eq(&cmd.command_object));
            assert_same(&cmd.arguments, &back.arguments)?;
        }
    }

    #[test]
    fn flv_round_trip(
        audio in any::<bool>(),
        video in any::<bool>(),
        tags in vec((prop_oneof![Just(8u8), Just(9), Just(18), 0u8..32], any::<u32>(), vec(any::<u8>(), 0..64)), 0..6),
    ) {
        let header = FlvHeader::new(audio, video);
        let tags: Vec<FlvTag> = tags
            .into_iter()
            .map(|(t, ts, data)| FlvTag::new(flv::TagType::from_u8(t), ts, data))
            .collect();
        let bytes = flv::encode_all(&header, &tags).unwrap();
        let (h, back) = flv::decode_all(&bytes).unwrap();
        prop_assert_eq!(h, header);
        prop_assert_eq!(back, tags);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..256)) {
        let _ = flash_amf::decode_amf0_all(&data);
        let _ = flash_amf::decode_amf3_all(&data);
        let _ = flash_amf::decode_extended_all(&data);
        let _ = flash_amf::decode_flv_all(&data);
        let keep = DecodeOptions {
            resolve_amf0_references: false,
            keep_avmplus_wrapper: true,
            share_amf3_context: true,
            externalizable: flash_amf::ExternalizableMode::RawRemainder,
            ..DecodeOptions::default()
        };
        let _ = amf0::decode_all_with(&data, keep.clone());
        let _ = amf3::decode_all_with(&data, keep);
        let _ = AudioTagHeader::parse(&data);
        let _ = VideoTagHeader::parse(&data);
        let _ = AvcDecoderConfigurationRecord::parse(&data);
        let _ = AudioSpecificConfig::parse(&data);
        let _ = flv::split_nalus(&data, 4);
        let _ = command::decode_message_values(17, &data);
    }

    #[test]
    fn amf_marker_soup_never_panics(data in vec(prop_oneof![0u8..0x13, any::<u8>()], 0..128)) {
        // Biased towards valid markers and small lengths, to get deeper than
        // uniformly random bytes do.
        let _ = flash_amf::decode_amf0_all(&data);
        let _ = flash_amf::decode_amf3_all(&data);
    }

    #[test]
    fn flv_garbage_after_header_never_panics(data in vec(any::<u8>(), 0..256)) {
        let mut file = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        file.extend_from_slice(&data);
        if let Ok((_, tags)) = flv::decode_all(&file) {
            for t in tags {
                let _ = t.audio_header();
                let _ = t.video_header();
                let _ = t.script_values();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Valid encodings with a few bytes changed, truncated or extended: decoding
    /// must fail cleanly or succeed, never panic; and whatever decodes must
    /// encode again.
    #[test]
    fn mutated_encodings_never_panic(
        v in amf3_value(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        for mut bytes in [amf3::encode(&v).unwrap(), amf0::encode(&v).unwrap()] {
            for (i, b) in &edits {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            let opts = DecodeOptions::default().with_flex_collections();
            if let Ok(values) = amf3::decode_all_with(&bytes, opts.clone()) {
                let _ = amf3::encode_all(&values);
            }
            if let Ok(values) = amf0::decode_all_with(&bytes, opts) {
                let _ = amf0::encode_all(&values);
            }
            let n = cut.index(bytes.len() + 1);
            let _ = flash_amf::decode_amf0_all(&bytes[..n]);
            let _ = flash_amf::decode_amf3_all(&bytes[..n]);
        }
    }
}

#[test]
fn amf0_encoder_reference_indices_match_decoder() {
    // Complex values inside an avmplus-switched value do not enter the AMF0
    // table: [ {a}, 0x11 [ {b} ], {a} ] must reference index 1 ({a}).
    let a = Value::Object(Object::new().with("a", 1.0));
    let b = Value::Object(Object::new().with("b", 1.0));
    let v = Value::StrictArray(vec![
        a.clone(),
        Value::Avmplus(Box::new(Value::StrictArray(vec![b]))),
        a,
    ]);
    let opts = EncodeOptions {
        amf0_references: true,
        ..EncodeOptions::default()
    };
    let mut e = Amf0Encoder::with_options(opts);
    e.encode(&v).unwrap();
    let bytes = e.into_vec();
    assert_eq!(&bytes[bytes.len() - 3..], &[0x07, 0x00, 0x01]);
    let dopts = DecodeOptions {
        keep_avmplus_wrapper: true,
        ..DecodeOptions::default()
    };
    let back = Amf0Decoder::with_options(&bytes, dopts).decode().unwrap();
    assert!(back.bitwise_eq(&v));
}

fn relaxed() -> DecodeOptions {
    DecodeOptions::default()
        .with_limits(flash_amf::Limits {
            max_alloc_bytes: 1 << 28,
            max_references: 1 << 24,
            ..flash_amf::Limits::default()
        })
        .with_flex_collections()
}

/// The check the `amf` fuzz target makes: whatever decodes re-encodes, the
/// re-encoding decodes, and a second cycle is exact.
fn normalisation_is_stable(data: &[u8]) -> Result<(), TestCaseError> {
    let opts = DecodeOptions::default().with_flex_collections();
    if let Ok(v1) = amf0::decode_all_with(data, opts.clone()) {
        if let Ok(b1) = amf0::encode_all(&v1) {
            let v2 = amf0::decode_all_with(&b1, relaxed()).unwrap();
            let v3 = amf0::decode_all_with(&amf0::encode_all(&v2).unwrap(), relaxed()).unwrap();
            assert_same(&v2, &v3)?;
        }
    }
    if let Ok(v1) = amf3::decode_all_with(data, opts) {
        if let Ok(b1) = amf3::encode_all(&v1) {
            let v2 = amf3::decode_all_with(&b1, relaxed()).unwrap();
            let v3 = amf3::decode_all_with(&amf3::encode_all(&v2).unwrap(), relaxed()).unwrap();
            assert_same(&v2, &v3)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn normalisation_of_marker_soup(data in vec(prop_oneof![0u8..0x13, any::<u8>()], 0..96)) {
        normalisation_is_stable(&data)?;
    }

    #[test]
    fn normalisation_of_mutated_encodings(
        v in amf0_value(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        // (AMF0-domain values may hold AMF0-only variants that AMF3 refuses.)
        for mut bytes in [amf0::encode(&v), amf3::encode(&v)].into_iter().flatten() {
            for (i, b) in &edits {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            normalisation_is_stable(&bytes)?;
        }
    }
}
