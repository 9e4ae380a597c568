//! Known-answer tests for every AMF3 marker, U29 and the reference tables, with
//! hand-computed bytes.

mod common;

use common::cat;
use flash_amf::amf3::{self, read_u29, write_u29, Amf3Decoder, Amf3Encoder};
use flash_amf::{
    Date, DecodeOptions, Dictionary, EcmaArray, EncodeOptions, Error, ExternalData, Externalizable,
    ExternalizableMode, Object, ObjectVector, Value, Vector,
};

/// Checks that `v` encodes to `bytes` and `bytes` decodes to `v`.
fn both_ways(v: Value, bytes: &[u8]) {
    common::both_ways(amf3::encode, amf3::decode, v, bytes);
}

#[test]
fn u29_boundaries() {
    let cases: &[(u32, &[u8])] = &[
        (0, &[0x00]),
        (0x7F, &[0x7F]),
        (0x80, &[0x81, 0x00]),
        (0x3FFF, &[0xFF, 0x7F]),
        (0x4000, &[0x81, 0x80, 0x00]),
        (0x1F_FFFF, &[0xFF, 0xFF, 0x7F]),
        (0x20_0000, &[0x80, 0xC0, 0x80, 0x00]),
        (0x1FFF_FFFF, &[0xFF, 0xFF, 0xFF, 0xFF]),
    ];
    for &(v, bytes) in cases {
        let mut out = Vec::new();
        write_u29(&mut out, v).unwrap();
        assert_eq!(out, bytes, "encoding {v:#x}");
        assert_eq!(
            read_u29(bytes).unwrap(),
            (v, bytes.len()),
            "decoding {v:#x}"
        );
    }
    assert!(matches!(
        write_u29(&mut Vec::new(), 0x2000_0000),
        Err(Error::U29OutOfRange(0x2000_0000))
    ));
    // Non-canonical (over-long) encodings are accepted on input.
    assert_eq!(read_u29(&[0x80, 0x00]).unwrap(), (0, 2));
    assert_eq!(read_u29(&[0x80, 0x80, 0x80, 0x01]).unwrap(), (1, 4));
    // The fourth byte uses all 8 bits: 0xFF there is data, not a continuation.
    assert_eq!(read_u29(&[0x80, 0x80, 0x80, 0xFF]).unwrap(), (0xFF, 4));
    // Truncated.
    assert!(read_u29(&[0x80]).is_err());
    assert!(read_u29(&[0xFF, 0xFF, 0xFF]).is_err());
}

#[test]
fn simple_markers() {
    both_ways(Value::Undefined, &[0x00]);
    both_ways(Value::Null, &[0x01]);
    both_ways(Value::Bool(false), &[0x02]);
    both_ways(Value::Bool(true), &[0x03]);
}

#[test]
fn integers() {
    both_ways(Value::Integer(0), &[0x04, 0x00]);
    both_ways(Value::Integer(1), &[0x04, 0x01]);
    both_ways(Value::Integer(0x80), &[0x04, 0x81, 0x00]);
    // -1 = 0x1FFFFFFF in 29-bit two's complement.
    both_ways(Value::Integer(-1), &[0x04, 0xFF, 0xFF, 0xFF, 0xFF]);
    // 2^28 - 1 = 0x0FFFFFFF.
    both_ways(Value::Integer(0x0FFF_FFFF), &[0x04, 0xBF, 0xFF, 0xFF, 0xFF]);
    // -2^28 = 0x10000000.
    both_ways(Value::Integer(-(1 << 28)), &[0x04, 0xC0, 0x80, 0x80, 0x00]);
    // 2^28 does not fit: written as a double (2^28 = 0x41B0000000000000).
    let bytes = amf3::encode(&Value::Integer(1 << 28)).unwrap();
    assert_eq!(bytes, [0x05, 0x41, 0xB0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(amf3::decode(&bytes).unwrap(), Value::Number(268435456.0));
    assert_eq!(
        amf3::encode(&Value::Integer(i32::MIN)).unwrap()[0],
        0x05,
        "i32::MIN is a double"
    );
}

#[test]
fn double() {
    both_ways(Value::Number(0.5), &[0x05, 0x3F, 0xE0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn strings_and_string_table() {
    both_ways(
        Value::from("hello"),
        &[0x06, 0x0B, b'h', b'e', b'l', b'l', b'o'],
    );
    both_ways(Value::from(""), &[0x06, 0x01]);
    // ["ab", "ab", "", ""]: the second "ab" is string reference 0; the empty
    // string is always inline 0x01 and never enters the table.
    let v = Value::StrictArray(vec![
        Value::from("ab"),
        Value::from("ab"),
        Value::from(""),
        Value::from(""),
    ]);
    both_ways(
        v,
        &[
            0x09, 0x09, 0x01, 0x06, 0x05, b'a', b'b', 0x06, 0x00, 0x06, 0x01, 0x06, 0x01,
        ],
    );
    // A reference to string index 0 when the table is empty (the empty string was
    // not entered) is an error.
    assert!(matches!(
        amf3::decode(&[0x09, 0x05, 0x01, 0x06, 0x01, 0x06, 0x00]),
        Err(Error::BadReference { index: 0, .. })
    ));
    // Long strings are still 0x06 in AMF3.
    assert_eq!(
        amf3::encode(&Value::LongString("a".into())).unwrap(),
        [0x06, 0x03, b'a']
    );
}

#[test]
fn xml_types() {
    both_ways(
        Value::XmlDocument("<a/>".into()),
        &[0x07, 0x09, b'<', b'a', b'/', b'>'],
    );
    both_ways(
        Value::Xml("<a/>".into()),
        &[0x0B, 0x09, b'<', b'a', b'/', b'>'],
    );
}

#[test]
fn dates() {
    both_ways(
        Value::Date(Date::new(1e12)),
        &[0x08, 0x01, 0x42, 0x6D, 0x1A, 0x94, 0xA2, 0x00, 0x00, 0x00],
    );
}

#[test]
fn arrays() {
    both_ways(Value::StrictArray(vec![]), &[0x09, 0x01, 0x01]);
    both_ways(
        Value::StrictArray(vec![Value::Integer(1), Value::Null]),
        &[0x09, 0x05, 0x01, 0x04, 0x01, 0x01],
    );
    // dense [1], associative a: 2.
    both_ways(
        Value::EcmaArray(EcmaArray {
            dense: vec![Value::Integer(1)],
            assoc: vec![("a".into(), Value::Integer(2))],
        }),
        &[0x09, 0x03, 0x03, b'a', 0x04, 0x02, 0x01, 0x04, 0x01],
    );
}

#[test]
fn anonymous_object() {
    // {a: 1}: U29O 0x0B = 0 sealed, dynamic, inline traits; class "" = 0x01.
    both_ways(
        Value::Object(Object::new().with("a", Value::Integer(1))),
        &[0x0A, 0x0B, 0x01, 0x03, b'a', 0x04, 0x01, 0x01],
    );
}

#[test]
fn typed_sealed_objects_and_traits_reference() {
    let mut p1 = Object::typed("Pt")
        .with_sealed("x", Value::Integer(1))
        .with_sealed("y", Value::Integer(2));
    p1.dynamic = false;
    let mut p2 = p1.clone();
    p2.sealed[0].1 = Value::Integer(3);
    p2.sealed[1].1 = Value::Integer(4);
    // U29O 0x23 = 2 sealed << 4 | not dynamic | inline traits 0x03.
    // The second object uses traits reference 0: (0 << 2) | 1 = 0x01.
    both_ways(
        Value::StrictArray(vec![Value::Object(p1), Value::Object(p2)]),
        &[
            0x09, 0x05, 0x01, // array of 2
            0x0A, 0x23, 0x05, b'P', b't', 0x03, b'x', 0x03, b'y', 0x04, 0x01, 0x04, 0x02, 0x0A,
            0x01, 0x04, 0x03, 0x04, 0x04,
        ],
    );
}

#[test]
fn object_references() {
    // [o, o] with o = {}: the array is object 0, o is object 1, so the second o
    // is written as reference (1 << 1) = 0x02.
    let o = Value::Object(Object::new());
    let v = Value::StrictArray(vec![o.clone(), o]);
    let bytes = [0x09, 0x05, 0x01, 0x0A, 0x0B, 0x01, 0x01, 0x0A, 0x02];
    let mut e = Amf3Encoder::with_options(EncodeOptions {
        amf3_object_references: true,
        ..EncodeOptions::default()
    });
    e.encode(&v).unwrap();
    assert_eq!(e.into_vec(), bytes);
    assert_eq!(amf3::decode(&bytes).unwrap(), v);
    // Without the option the object is written twice, reusing the traits.
    assert_eq!(
        amf3::encode(&v).unwrap(),
        [0x09, 0x05, 0x01, 0x0A, 0x0B, 0x01, 0x01, 0x0A, 0x01, 0x01]
    );
    // Dates, byte arrays and XML are in the object table as well.
    let d = Value::Date(Date::new(0.0));
    let b = Value::ByteArray(vec![7]);
    let v = Value::StrictArray(vec![d.clone(), b.clone(), d, b]);
    let bytes = [
        0x09, 0x09, 0x01, 0x08, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x0C, 0x03, 0x07, 0x08, 0x02, 0x0C,
        0x04,
    ];
    assert_eq!(amf3::decode(&bytes).unwrap(), v);
    // A reference to the enclosing array is a cycle.
    assert!(matches!(
        amf3::decode(&[0x09, 0x03, 0x01, 0x09, 0x00]),
        Err(Error::CyclicReference { index: 0, .. })
    ));
    // And one past the table is out of range.
    assert!(matches!(
        amf3::decode(&[0x09, 0x03, 0x01, 0x09, 0x02]),
        Err(Error::BadReference { index: 1, .. })
    ));
}

#[test]
fn byte_array() {
    both_ways(Value::ByteArray(vec![1, 2, 3]), &[0x0C, 0x07, 1, 2, 3]);
    both_ways(Value::ByteArray(vec![]), &[0x0C, 0x01]);
}

#[test]
fn vectors() {
    both_ways(
        Value::VectorInt(Vector {
            fixed: true,
            items: vec![1, -1],
        }),
        &[0x0D, 0x05, 0x01, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF],
    );
    both_ways(
        Value::VectorUint(Vector {
            fixed: false,
            items: vec![0xFFFF_FFFF],
        }),
        &[0x0E, 0x03, 0x00, 0xFF, 0xFF, 0xFF, 0xFF],
    );
    both_ways(
        Value::VectorDouble(Vector {
            fixed: false,
            items: vec![1.0],
        }),
        &[0x0F, 0x03, 0x00, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0],
    );
    both_ways(
        Value::VectorObject(ObjectVector {
            fixed: false,
            type_name: "Foo".into(),
            items: vec![Value::Null],
        }),
        &[0x10, 0x03, 0x00, 0x07, b'F', b'o', b'o', 0x01],
    );
    // A declared count larger than the data is an EOF, not an allocation.
    assert!(matches!(
        amf3::decode(&[0x0F, 0xBF, 0xFF, 0xFF, 0xFF, 0x00]),
        Err(Error::CollectionTooLarge { .. })
    ));
    assert!(matches!(
        amf3::decode(&[0x0F, 0x81, 0x80, 0x01, 0x00]),
        Err(Error::UnexpectedEof { .. })
    ));
}

#[test]
fn dictionary() {
    both_ways(
        Value::Dictionary(Dictionary {
            weak_keys: true,
            entries: vec![(Value::from("k"), Value::Bool(true))],
        }),
        &[0x11, 0x03, 0x01, 0x06, 0x03, b'k', 0x03],
    );
}

#[test]
fn externalizable() {
    // Traits 0x07 = externalizable; class name is 33 bytes: (33 << 1) | 1 = 0x43.
    let class = "flex.messaging.io.ArrayCollection";
    assert_eq!(class.len(), 33);
    let bytes = cat(&[
        &[0x0A, 0x07, 0x43],
        class.as_bytes(),
        &[0x09, 0x03, 0x01, 0x04, 0x05],
    ]);
    assert!(matches!(
        amf3::decode(&bytes),
        Err(Error::Externalizable { ref class_name }) if class_name == class
    ));
    let v = Value::Externalizable(Externalizable {
        class_name: class.into(),
        data: ExternalData::Value(Box::new(Value::StrictArray(vec![Value::Integer(5)]))),
    });
    let opts = DecodeOptions::default().with_flex_collections();
    assert_eq!(Amf3Decoder::with_options(&bytes, opts).decode().unwrap(), v);
    assert_eq!(amf3::encode(&v).unwrap(), bytes);

    // Raw payload mode takes the rest of the input.
    let raw = cat(&[&[0x0A, 0x07, 0x07], b"Foo", &[1, 2, 3]]);
    let opts = DecodeOptions {
        externalizable: ExternalizableMode::RawRemainder,
        ..DecodeOptions::default()
    };
    let v = Amf3Decoder::with_options(&raw, opts).decode().unwrap();
    assert_eq!(
        v,
        Value::Externalizable(Externalizable {
            class_name: "Foo".into(),
            data: ExternalData::Raw(vec![1, 2, 3]),
        })
    );
    assert_eq!(amf3::encode(&v).unwrap(), raw);
}

#[test]
fn not_representable() {
    assert!(matches!(
        amf3::encode(&Value::Unsupported),
        Err(Error::NotRepresentable(_))
    ));
    assert!(matches!(
        amf3::encode(&Value::Reference(0)),
        Err(Error::NotRepresentable(_))
    ));
    let mut o = Object::typed("C").with("dyn", 1.0);
    o.dynamic = false;
    assert!(matches!(
        amf3::encode(&Value::Object(o)),
        Err(Error::NotRepresentable(_))
    ));
    assert!(matches!(
        amf3::encode(&Value::EcmaArray(EcmaArray::new().with("", 1.0))),
        Err(Error::EmptyKey)
    ));
}

#[test]
fn unknown_marker() {
    assert!(matches!(
        amf3::decode(&[0x12]),
        Err(Error::UnknownMarker { marker: 0x12, .. })
    ));
}

#[test]
fn tables_span_the_decoder() {
    // Two top-level values decoded by one decoder share the string table.
    let bytes = [0x06, 0x05, b'a', b'b', 0x06, 0x00];
    let mut d = Amf3Decoder::new(&bytes);
    assert_eq!(d.decode_all().unwrap(), vec![Value::from("ab"); 2]);
    let mut e = Amf3Encoder::new();
    e.encode(&Value::from("ab")).unwrap();
    e.encode(&Value::from("ab")).unwrap();
    assert_eq!(e.as_bytes(), bytes);
    e.reset_references();
    e.encode(&Value::from("ab")).unwrap();
    assert_eq!(&e.as_bytes()[6..], &[0x06, 0x05, b'a', b'b']);
}
