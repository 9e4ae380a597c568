//! The value model shared by the AMF0 and AMF3 codecs.
//!
//! A [`Value`] is a tree: references in the wire format are resolved into copies
//! when decoding (AMF0 can optionally keep them as [`Value::Reference`]), and
//! encoders can optionally turn repeated equal subtrees back into references.

use std::hash::{Hash, Hasher};

/// One AMF value, covering both AMF0 and AMF3.
///
/// How each variant maps to the two encodings:
///
/// | variant | AMF0 | AMF3 |
/// |---|---|---|
/// | `Undefined` | 0x06 | 0x00 |
/// | `Null` | 0x05 | 0x01 |
/// | `Bool` | 0x01 | 0x02 / 0x03 |
/// | `Number` | 0x00 | 0x05 |
/// | `Integer` | 0x00 (as a number) | 0x04, or 0x05 outside the 29-bit range |
/// | `String` | 0x02, or 0x0C when longer than 65 535 bytes | 0x06 |
/// | `LongString` | 0x0C | 0x06 |
/// | `Date` | 0x0B | 0x08 (time zone dropped) |
/// | `XmlDocument` | 0x0F | 0x07 |
/// | `Xml` | 0x11 + AMF3 | 0x0B |
/// | `Object` | 0x03 / 0x10 (0x11 + AMF3 if it has sealed traits) | 0x0A |
/// | `EcmaArray` | 0x08 | 0x09 with associative part |
/// | `StrictArray` | 0x0A | 0x09 without associative part |
/// | `ByteArray`, `Vector*`, `Dictionary`, `Externalizable` | 0x11 + AMF3 | 0x0C, 0x0D–0x10, 0x11, 0x0A |
/// | `Reference` | 0x07 | not representable |
/// | `Unsupported` | 0x0D | not representable |
/// | `Avmplus` | 0x11 + AMF3 of the inner value | the inner value |
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `undefined`.
    Undefined,
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A double-precision number.
    Number(f64),
    /// An AMF3 integer. Only values in -2^28 ..= 2^28-1 are written as AMF3
    /// integers; others are written as doubles and decode as [`Value::Number`].
    Integer(i32),
    /// A string.
    String(String),
    /// An AMF0 long string (marker 0x0C). In AMF3 this is an ordinary string.
    LongString(String),
    /// A date.
    Date(Date),
    /// An XML document (AMF0 0x0F, AMF3 0x07 legacy `flash.xml.XMLDocument`).
    XmlDocument(String),
    /// An E4X XML value (AMF3 0x0B).
    Xml(String),
    /// An anonymous or typed object.
    Object(Object),
    /// An associative array (AMF0 ECMA array, or an AMF3 array with an associative part).
    EcmaArray(EcmaArray),
    /// A dense array (AMF0 strict array, or an AMF3 array without associative part).
    StrictArray(Vec<Value>),
    /// An AMF3 `flash.utils.ByteArray`.
    ByteArray(Vec<u8>),
    /// An AMF3 `Vector.<int>`.
    VectorInt(Vector<i32>),
    /// An AMF3 `Vector.<uint>`.
    VectorUint(Vector<u32>),
    /// An AMF3 `Vector.<Number>`.
    VectorDouble(Vector<f64>),
    /// An AMF3 `Vector.<T>` of objects.
    VectorObject(ObjectVector),
    /// An AMF3 `flash.utils.Dictionary`.
    Dictionary(Dictionary),
    /// An AMF3 object with externalizable traits.
    Externalizable(Externalizable),
    /// An unresolved AMF0 reference (index into the message's object table).
    /// Produced only when [`DecodeOptions::resolve_amf0_references`](crate::DecodeOptions)
    /// is `false`; written back as marker 0x07.
    Reference(u16),
    /// AMF0 `unsupported` (0x0D).
    Unsupported,
    /// A value carried in AMF3 inside an AMF0 stream (avmplus marker 0x11).
    Avmplus(Box<Value>),
}

/// A date: milliseconds since 1970-01-01T00:00:00Z plus the AMF0 time-zone field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Date {
    /// Milliseconds since the Unix epoch, UTC.
    pub millis: f64,
    /// AMF0 time-zone offset field (reserved; should be 0). AMF3 has no such
    /// field and always decodes it as 0.
    pub timezone: i16,
}

impl Date {
    /// A date at `millis` ms since the epoch with time zone 0.
    pub fn new(millis: f64) -> Self {
        Date {
            millis,
            timezone: 0,
        }
    }
}

/// An object: anonymous (`class_name == None`) or typed.
///
/// AMF0 objects have only `properties` (with `dynamic == true`). AMF3 objects
/// additionally have sealed members, listed in their traits, and a dynamic flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The class name; `None` for an anonymous object. (AMF3 writes `None` as the
    /// empty class name; AMF0 writes `Some(_)` as a typed object 0x10.)
    pub class_name: Option<String>,
    /// AMF3 sealed members in traits order. Always empty for objects decoded from AMF0.
    pub sealed: Vec<(String, Value)>,
    /// AMF3 traits dynamic flag. When `false`, `properties` must be empty to encode
    /// in AMF3.
    pub dynamic: bool,
    /// Dynamic members (AMF3) or properties (AMF0), in wire order. Keys must not be empty.
    pub properties: Vec<(String, Value)>,
}

impl Default for Object {
    fn default() -> Self {
        Object::new()
    }
}

impl Object {
    /// An empty anonymous dynamic object.
    pub fn new() -> Self {
        Object {
            class_name: None,
            sealed: Vec::new(),
            dynamic: true,
            properties: Vec::new(),
        }
    }

    /// An empty typed dynamic object of class `class_name`.
    pub fn typed(class_name: impl Into<String>) -> Self {
        Object {
            class_name: Some(class_name.into()),
            ..Object::new()
        }
    }

    /// Builder: appends a dynamic property.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Builder: appends a sealed member.
    pub fn with_sealed(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.sealed.push((key.into(), value.into()));
        self
    }

    /// Appends a dynamic property (duplicates are kept).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.properties.push((key.into(), value.into()));
    }

    /// The first sealed member or property named `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.sealed
            .iter()
            .chain(self.properties.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Whether AMF0 can represent this object without loss (no sealed traits).
    pub fn is_amf0_compatible(&self) -> bool {
        self.sealed.is_empty() && self.dynamic
    }
}

/// An associative array with an optional dense part.
///
/// AMF0 ECMA arrays have only the associative part. AMF3 arrays have both. When
/// an `EcmaArray` with a dense part is written as AMF0, the dense elements become
/// properties named `"0"`, `"1"`, … ahead of the associative ones.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EcmaArray {
    /// Dense (index 0..n) elements; AMF3 only.
    pub dense: Vec<Value>,
    /// Associative (string-keyed) elements in wire order. Keys must not be empty.
    pub assoc: Vec<(String, Value)>,
}

impl EcmaArray {
    /// An empty array.
    pub fn new() -> Self {
        EcmaArray::default()
    }

    /// Builder: appends an associative element.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.assoc.push((key.into(), value.into()));
        self
    }

    /// The first associative element named `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.assoc.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// An AMF3 vector of numbers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Vector<T> {
    /// Whether the vector has a fixed length.
    pub fixed: bool,
    /// The elements.
    pub items: Vec<T>,
}

/// An AMF3 vector of objects (`Vector.<T>` for a non-numeric `T`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectVector {
    /// Whether the vector has a fixed length.
    pub fixed: bool,
    /// The element type's class name; empty (or `"*"`) for `Object`.
    pub type_name: String,
    /// The elements.
    pub items: Vec<Value>,
}

/// An AMF3 dictionary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dictionary {
    /// Whether the dictionary holds weak references to its keys.
    pub weak_keys: bool,
    /// Key/value pairs in wire order.
    pub entries: Vec<(Value, Value)>,
}

/// An AMF3 externalizable object.
#[derive(Debug, Clone, PartialEq)]
pub struct Externalizable {
    /// The class name from the traits.
    pub class_name: String,
    /// The externalized payload.
    pub data: ExternalData,
}

/// The payload of an externalizable object.
#[derive(Debug, Clone, PartialEq)]
pub enum ExternalData {
    /// Raw payload bytes, written verbatim after the traits.
    Raw(Vec<u8>),
    /// A single AMF3 value (for classes such as Flex's `ArrayCollection`), written
    /// in the same AMF3 context as the enclosing value.
    Value(Box<Value>),
}

impl Value {
    /// The string contents of a `String` or `LongString`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::LongString(s) => Some(s),
            Value::Avmplus(v) => v.as_str(),
            _ => None,
        }
    }

    /// The numeric value of a `Number` or `Integer`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Integer(i) => Some(f64::from(*i)),
            Value::Avmplus(v) => v.as_f64(),
            _ => None,
        }
    }

    /// The value of a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Avmplus(v) => v.as_bool(),
            _ => None,
        }
    }

    /// The object, if this is an `Object`.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            Value::Avmplus(v) => v.as_object(),
            _ => None,
        }
    }

    /// Looks up `key` in an `Object` (sealed members, then properties) or in the
    /// associative part of an `EcmaArray`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(o) => o.get(key),
            Value::EcmaArray(a) => a.get(key),
            Value::Avmplus(v) => v.get(key),
            _ => None,
        }
    }

    /// Whether this is `Null` or `Undefined`.
    pub fn is_null_or_undefined(&self) -> bool {
        matches!(self, Value::Null | Value::Undefined)
    }

    /// Removes any [`Value::Avmplus`] wrappers at the top of this value.
    pub fn into_unwrapped(self) -> Value {
        let mut v = self;
        while let Value::Avmplus(inner) = v {
            v = *inner;
        }
        v
    }

    /// Structural equality that compares numbers by their bit patterns, so NaN
    /// equals an identical NaN and `0.0` differs from `-0.0`. This is the
    /// equality under which encode-then-decode round trips are exact.
    pub fn bitwise_eq(&self, other: &Value) -> bool {
        use Value as V;
        fn props_eq(a: &[(String, Value)], b: &[(String, Value)]) -> bool {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| ka == kb && va.bitwise_eq(vb))
        }
        fn list_eq(a: &[Value], b: &[Value]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.bitwise_eq(y))
        }
        match (self, other) {
            (V::Undefined, V::Undefined) | (V::Null, V::Null) => true,
            (V::Unsupported, V::Unsupported) => true,
            (V::Bool(a), V::Bool(b)) => a == b,
            (V::Number(a), V::Number(b)) => a.to_bits() == b.to_bits(),
            (V::Integer(a), V::Integer(b)) => a == b,
            (V::String(a), V::String(b))
            | (V::LongString(a), V::LongString(b))
            | (V::XmlDocument(a), V::XmlDocument(b))
            | (V::Xml(a), V::Xml(b)) => a == b,
            (V::Date(a), V::Date(b)) => {
                a.millis.to_bits() == b.millis.to_bits() && a.timezone == b.timezone
            }
            (V::Object(a), V::Object(b)) => {
                a.class_name == b.class_name
                    && a.dynamic == b.dynamic
                    && props_eq(&a.sealed, &b.sealed)
                    && props_eq(&a.properties, &b.properties)
            }
            (V::EcmaArray(a), V::EcmaArray(b)) => {
                list_eq(&a.dense, &b.dense) && props_eq(&a.assoc, &b.assoc)
            }
            (V::StrictArray(a), V::StrictArray(b)) => list_eq(a, b),
            (V::ByteArray(a), V::ByteArray(b)) => a == b,
            (V::VectorInt(a), V::VectorInt(b)) => a == b,
            (V::VectorUint(a), V::VectorUint(b)) => a == b,
            (V::VectorDouble(a), V::VectorDouble(b)) => {
                a.fixed == b.fixed
                    && a.items.len() == b.items.len()
                    && a.items
                        .iter()
                        .zip(&b.items)
                        .all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (V::VectorObject(a), V::VectorObject(b)) => {
                a.fixed == b.fixed && a.type_name == b.type_name && list_eq(&a.items, &b.items)
            }
            (V::Dictionary(a), V::Dictionary(b)) => {
                a.weak_keys == b.weak_keys
                    && a.entries.len() == b.entries.len()
                    && a.entries
                        .iter()
                        .zip(&b.entries)
                        .all(|((ka, va), (kb, vb))| ka.bitwise_eq(kb) && va.bitwise_eq(vb))
            }
            (V::Externalizable(a), V::Externalizable(b)) => {
                a.class_name == b.class_name
                    && match (&a.data, &b.data) {
                        (ExternalData::Raw(x), ExternalData::Raw(y)) => x == y,
                        (ExternalData::Value(x), ExternalData::Value(y)) => x.bitwise_eq(y),
                        _ => false,
                    }
            }
            (V::Reference(a), V::Reference(b)) => a == b,
            (V::Avmplus(a), V::Avmplus(b)) => a.bitwise_eq(b),
            _ => false,
        }
    }

    /// A hash consistent with [`Value::bitwise_eq`], used by the encoders to find
    /// repeated subtrees.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash_into(&mut h);
        h.finish()
    }

    fn hash_into<H: Hasher>(&self, h: &mut H) {
        fn props<H: Hasher>(p: &[(String, Value)], h: &mut H) {
            p.len().hash(h);
            for (k, v) in p {
                k.hash(h);
                v.hash_into(h);
            }
        }
        std::mem::discriminant(self).hash(h);
        match self {
            Value::Undefined | Value::Null | Value::Unsupported => {}
            Value::Bool(b) => b.hash(h),
            Value::Number(n) => n.to_bits().hash(h),
            Value::Integer(i) => i.hash(h),
            Value::String(s) | Value::LongString(s) | Value::XmlDocument(s) | Value::Xml(s) => {
                s.hash(h)
            }
            Value::Date(d) => {
                d.millis.to_bits().hash(h);
                d.timezone.hash(h);
            }
            Value::Object(o) => {
                o.class_name.hash(h);
                o.dynamic.hash(h);
                props(&o.sealed, h);
                props(&o.properties, h);
            }
            Value::EcmaArray(a) => {
                a.dense.len().hash(h);
                for v in &a.dense {
                    v.hash_into(h);
                }
                props(&a.assoc, h);
            }
            Value::StrictArray(a) => {
                a.len().hash(h);
                for v in a {
                    v.hash_into(h);
                }
            }
            Value::ByteArray(b) => b.hash(h),
            Value::VectorInt(v) => {
                v.fixed.hash(h);
                v.items.hash(h);
            }
            Value::VectorUint(v) => {
                v.fixed.hash(h);
                v.items.hash(h);
            }
            Value::VectorDouble(v) => {
                v.fixed.hash(h);
                v.items.len().hash(h);
                for x in &v.items {
                    x.to_bits().hash(h);
                }
            }
            Value::VectorObject(v) => {
                v.fixed.hash(h);
                v.type_name.hash(h);
                v.items.len().hash(h);
                for x in &v.items {
                    x.hash_into(h);
                }
            }
            Value::Dictionary(d) => {
                d.weak_keys.hash(h);
                d.entries.len().hash(h);
                for (k, v) in &d.entries {
                    k.hash_into(h);
                    v.hash_into(h);
                }
            }
            Value::Externalizable(e) => {
                e.class_name.hash(h);
                match &e.data {
                    ExternalData::Raw(b) => {
                        0u8.hash(h);
                        b.hash(h);
                    }
                    ExternalData::Value(v) => {
                        1u8.hash(h);
                        v.hash_into(h);
                    }
                }
            }
            Value::Reference(r) => r.hash(h),
            Value::Avmplus(v) => v.hash_into(h),
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<Object> for Value {
    fn from(o: Object) -> Self {
        Value::Object(o)
    }
}

impl From<EcmaArray> for Value {
    fn from(a: EcmaArray) -> Self {
        Value::EcmaArray(a)
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::StrictArray(v)
    }
}

impl From<Date> for Value {
    fn from(d: Date) -> Self {
        Value::Date(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitwise_eq_and_fingerprint() {
        let a = Value::Number(f64::NAN);
        assert_ne!(a, a.clone());
        assert!(a.bitwise_eq(&a.clone()));
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_eq!(Value::Number(0.0), Value::Number(-0.0));
        assert!(!Value::Number(0.0).bitwise_eq(&Value::Number(-0.0)));
        let o = Value::Object(Object::typed("C").with("k", 1.0).with_sealed("s", true));
        assert!(o.bitwise_eq(&o.clone()));
        assert_eq!(o.fingerprint(), o.clone().fingerprint());
        assert!(!o.bitwise_eq(&Value::Object(Object::typed("C").with("k", 1.0))));
    }

    #[test]
    fn accessors() {
        let o = Value::Object(Object::new().with("app", "live").with_sealed("n", 2.0));
        assert_eq!(o.get("app").and_then(Value::as_str), Some("live"));
        assert_eq!(o.get("n").and_then(Value::as_f64), Some(2.0));
        assert_eq!(o.get("missing"), None);
        let w = Value::Avmplus(Box::new(Value::Integer(3)));
        assert_eq!(w.as_f64(), Some(3.0));
        assert_eq!(w.into_unwrapped(), Value::Integer(3));
        assert!(Value::Undefined.is_null_or_undefined());
    }
}
