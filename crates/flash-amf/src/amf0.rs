//! AMF0 encoder and decoder.
//!
//! Every AMF0 marker is handled: number, boolean, string, object, movieclip
//! (reserved: error), null, undefined, reference, ECMA array, object end (error
//! outside an object), strict array, date, long string, unsupported, recordset
//! (reserved: error), XML document, typed object and the avmplus marker that
//! switches the next value to AMF3.
//!
//! The object reference table (objects, typed objects, ECMA arrays and strict
//! arrays, in the order their markers appear) spans everything one decoder or
//! encoder handles until [`Amf0Decoder::reset_references`] /
//! [`Amf0Encoder::reset_references`], i.e. normally one RTMP message.

use bytes::BufMut;

use crate::codec::{self, Amf0, Decoder, Encoder};
use crate::de::{DecodeState, PROP_COST};
use crate::error::{Error, Result};
use crate::options::{DecodeOptions, EncodeOptions};
use crate::ser::EncodeState;
use crate::value::{Date, EcmaArray, Object, Value};

/// AMF0 type markers.
pub mod marker {
    /// IEEE-754 double.
    pub const NUMBER: u8 = 0x00;
    /// Boolean.
    pub const BOOLEAN: u8 = 0x01;
    /// String with u16 length.
    pub const STRING: u8 = 0x02;
    /// Anonymous object.
    pub const OBJECT: u8 = 0x03;
    /// Movieclip (reserved, not supported).
    pub const MOVIECLIP: u8 = 0x04;
    /// Null.
    pub const NULL: u8 = 0x05;
    /// Undefined.
    pub const UNDEFINED: u8 = 0x06;
    /// Reference to an earlier complex value.
    pub const REFERENCE: u8 = 0x07;
    /// ECMA (associative) array.
    pub const ECMA_ARRAY: u8 = 0x08;
    /// Object end (after an empty key).
    pub const OBJECT_END: u8 = 0x09;
    /// Strict (dense) array.
    pub const STRICT_ARRAY: u8 = 0x0A;
    /// Date.
    pub const DATE: u8 = 0x0B;
    /// String with u32 length.
    pub const LONG_STRING: u8 = 0x0C;
    /// Unsupported.
    pub const UNSUPPORTED: u8 = 0x0D;
    /// Recordset (reserved, not supported).
    pub const RECORDSET: u8 = 0x0E;
    /// XML document.
    pub const XML_DOCUMENT: u8 = 0x0F;
    /// Typed object.
    pub const TYPED_OBJECT: u8 = 0x10;
    /// Switch to AMF3 for the next value.
    pub const AVMPLUS: u8 = 0x11;
}

// ---------------------------------------------------------------------------
// Decoding

impl<'a> DecodeState<'a> {
    /// Decodes one AMF0 value at nesting depth `depth`.
    pub(crate) fn amf0_value(&mut self, depth: usize) -> Result<Value> {
        self.enter(depth)?;
        let start = self.pos;
        let m = self.u8()?;
        Ok(match m {
            marker::NUMBER => Value::Number(self.f64()?),
            marker::BOOLEAN => Value::Bool(self.u8()? != 0),
            marker::STRING => {
                let n = self.u16()?;
                Value::String(self.string(usize::from(n))?)
            }
            marker::OBJECT => {
                let idx = self.amf0_register(start)?;
                let properties = self.amf0_properties(depth)?;
                DecodeState::finish(&mut self.amf0_refs, idx);
                Value::Object(Object {
                    properties,
                    ..Object::new()
                })
            }
            marker::MOVIECLIP | marker::RECORDSET => {
                return Err(Error::ReservedMarker {
                    marker: m,
                    offset: start,
                })
            }
            marker::NULL => Value::Null,
            marker::UNDEFINED => Value::Undefined,
            marker::REFERENCE => {
                let index = usize::from(self.u16()?);
                return self.amf0_reference(index, start, depth);
            }
            marker::ECMA_ARRAY => {
                // The associative count is only a hint; it is not trusted.
                let _count = self.u32()?;
                let idx = self.amf0_register(start)?;
                let assoc = self.amf0_properties(depth)?;
                DecodeState::finish(&mut self.amf0_refs, idx);
                Value::EcmaArray(EcmaArray {
                    dense: Vec::new(),
                    assoc,
                })
            }
            marker::OBJECT_END => return Err(Error::UnexpectedObjectEnd { offset: start }),
            marker::STRICT_ARRAY => {
                let count = self.u32()? as usize;
                self.check_len(count)?;
                let idx = self.amf0_register(start)?;
                let mut items = Vec::with_capacity(self.capacity_for::<Value>(count, 1));
                for _ in 0..count {
                    items.push(self.amf0_value(depth + 1)?);
                }
                DecodeState::finish(&mut self.amf0_refs, idx);
                Value::StrictArray(items)
            }
            marker::DATE => {
                let millis = self.f64()?;
                let timezone = self.i16()?;
                Value::Date(Date { millis, timezone })
            }
            marker::LONG_STRING => {
                let n = self.u32()? as usize;
                Value::LongString(self.string(n)?)
            }
            marker::UNSUPPORTED => Value::Unsupported,
            marker::XML_DOCUMENT => {
                let n = self.u32()? as usize;
                Value::XmlDocument(self.string(n)?)
            }
            marker::TYPED_OBJECT => {
                let n = self.u16()?;
                let class_name = self.string(usize::from(n))?;
                let idx = self.amf0_register(start)?;
                let properties = self.amf0_properties(depth)?;
                DecodeState::finish(&mut self.amf0_refs, idx);
                Value::Object(Object {
                    class_name: Some(class_name),
                    properties,
                    ..Object::new()
                })
            }
            marker::AVMPLUS => {
                let inner = self.amf0_switch_to_amf3(depth)?;
                if self.opts.keep_avmplus_wrapper {
                    Value::Avmplus(Box::new(inner))
                } else {
                    inner
                }
            }
            _ => {
                return Err(Error::UnknownMarker {
                    marker: m,
                    offset: start,
                })
            }
        })
    }

    fn amf0_register(&mut self, start: usize) -> Result<Option<usize>> {
        let max = self.opts.limits.max_references;
        let idx = DecodeState::register(&mut self.amf0_refs, self.amf0_replay, start, max)?;
        if idx.is_some() {
            self.charge(std::mem::size_of::<crate::de::RefEntry>())?;
        }
        Ok(idx)
    }

    fn amf0_reference(&mut self, index: usize, offset: usize, depth: usize) -> Result<Value> {
        if !self.opts.resolve_amf0_references {
            if index >= self.amf0_refs.len() {
                return Err(Error::BadReference { index, offset });
            }
            // Fits: the index was read from a u16.
            return Ok(Value::Reference(index as u16));
        }
        let entry = DecodeState::lookup(&self.amf0_refs, index, offset)?;
        let saved_pos = self.pos;
        let saved_replay = self.amf0_replay;
        self.pos = entry.start;
        self.amf0_replay = true;
        let result = self.amf0_value(depth);
        self.pos = saved_pos;
        self.amf0_replay = saved_replay;
        result
    }

    /// Reads `key value` pairs up to and including the `00 00 09` terminator.
    fn amf0_properties(&mut self, depth: usize) -> Result<Vec<(String, Value)>> {
        let mut props = Vec::new();
        loop {
            let klen = self.u16()?;
            if klen == 0 {
                let offset = self.pos;
                if self.u8()? != marker::OBJECT_END {
                    return Err(Error::ExpectedObjectEnd { offset });
                }
                return Ok(props);
            }
            self.check_len(props.len() + 1)?;
            let key = self.string(usize::from(klen))?;
            self.charge(PROP_COST)?;
            let value = self.amf0_value(depth + 1)?;
            props.push((key, value));
        }
    }

    fn amf0_switch_to_amf3(&mut self, depth: usize) -> Result<Value> {
        if self.opts.share_amf3_context {
            let saved = self.amf3_replay;
            self.amf3_replay = saved || self.amf0_replay;
            let r = self.amf3_value(depth + 1);
            self.amf3_replay = saved;
            r
        } else {
            let saved_tables = std::mem::take(&mut self.amf3);
            let saved_replay = std::mem::replace(&mut self.amf3_replay, false);
            let r = self.amf3_value(depth + 1);
            self.amf3 = saved_tables;
            self.amf3_replay = saved_replay;
            r
        }
    }
}

/// A streaming AMF0 decoder over a byte slice (see [`Decoder`]).
pub type Amf0Decoder<'a> = Decoder<'a, Amf0>;

/// Decodes exactly one AMF0 value; trailing bytes are an error.
pub fn decode(input: &[u8]) -> Result<Value> {
    codec::decode_one::<Amf0>(input)
}

/// Decodes a sequence of AMF0 values filling the whole input, sharing one
/// reference table (an RTMP type 18/20 message body). Never panics.
pub fn decode_all(input: &[u8]) -> Result<Vec<Value>> {
    Amf0Decoder::new(input).decode_all()
}

/// Like [`decode_all`] with explicit options.
pub fn decode_all_with(input: &[u8], options: DecodeOptions) -> Result<Vec<Value>> {
    Amf0Decoder::with_options(input, options).decode_all()
}

// ---------------------------------------------------------------------------
// Encoding

/// Whether AMF0 cannot write `v` natively, so it needs the avmplus switch.
fn needs_amf3(v: &Value) -> bool {
    match v {
        Value::Xml(_)
        | Value::ByteArray(_)
        | Value::VectorInt(_)
        | Value::VectorUint(_)
        | Value::VectorDouble(_)
        | Value::VectorObject(_)
        | Value::Dictionary(_)
        | Value::Externalizable(_) => true,
        Value::Object(o) => !o.is_amf0_compatible(),
        _ => false,
    }
}

impl EncodeState {
    /// UTF-8: a 16-bit length, then the bytes.
    fn amf0_utf8(&mut self, s: &str) -> Result<()> {
        self.amf0_sized_utf8(s, 2)
    }

    /// UTF-8-long: a 32-bit length, then the bytes.
    fn amf0_utf8_long(&mut self, s: &str) -> Result<()> {
        self.amf0_sized_utf8(s, 4)
    }

    /// `s` after its length in `width` (2 or 4) big-endian bytes.
    fn amf0_sized_utf8(&mut self, s: &str, width: usize) -> Result<()> {
        let len = s.len();
        let max = if width == 2 {
            usize::from(u16::MAX)
        } else {
            u32::MAX as usize
        };
        if len > max {
            return Err(Error::TooLong { len, max });
        }
        self.out.put_uint(len as u64, width);
        self.out.put_slice(s.as_bytes());
        Ok(())
    }

    fn amf0_key(&mut self, k: &str) -> Result<()> {
        if k.is_empty() {
            return Err(Error::EmptyKey);
        }
        self.amf0_utf8(k)
    }

    fn amf0_end(&mut self) {
        self.out.put_slice(&[0, 0, marker::OBJECT_END]);
    }

    /// Encodes one AMF0 value at nesting depth `depth`.
    pub(crate) fn amf0_value(&mut self, v: &Value, depth: usize) -> Result<()> {
        self.check_depth(depth)?;
        if needs_amf3(v) {
            if !self.opts.auto_avmplus {
                return Err(Error::NotRepresentable(
                    "AMF3-only value in AMF0 with auto_avmplus disabled",
                ));
            }
            return self.amf0_avmplus(v, depth);
        }
        match v {
            Value::Undefined => self.out.put_u8(marker::UNDEFINED),
            Value::Null => self.out.put_u8(marker::NULL),
            Value::Unsupported => self.out.put_u8(marker::UNSUPPORTED),
            Value::Bool(b) => {
                self.out.put_u8(marker::BOOLEAN);
                self.out.put_u8(u8::from(*b));
            }
            Value::Number(n) => {
                self.out.put_u8(marker::NUMBER);
                self.out.put_f64(*n);
            }
            Value::Integer(i) => {
                self.out.put_u8(marker::NUMBER);
                self.out.put_f64(f64::from(*i));
            }
            Value::String(s) => {
                if s.len() <= usize::from(u16::MAX) {
                    self.out.put_u8(marker::STRING);
                    self.amf0_utf8(s)?;
                } else {
                    self.out.put_u8(marker::LONG_STRING);
                    self.amf0_utf8_long(s)?;
                }
            }
            Value::LongString(s) => {
                self.out.put_u8(marker::LONG_STRING);
                self.amf0_utf8_long(s)?;
            }
            Value::Date(d) => {
                self.out.put_u8(marker::DATE);
                self.out.put_f64(d.millis);
                self.out.put_i16(d.timezone);
            }
            Value::XmlDocument(s) => {
                self.out.put_u8(marker::XML_DOCUMENT);
                self.amf0_utf8_long(s)?;
            }
            Value::Reference(i) => {
                if u32::from(*i) >= self.amf0_count {
                    return Err(Error::NotRepresentable(
                        "AMF0 reference to a value not yet written",
                    ));
                }
                self.out.put_u8(marker::REFERENCE);
                self.out.put_u16(*i);
            }
            Value::Avmplus(inner) => self.amf0_avmplus(inner, depth + 1)?,
            Value::Object(_) | Value::EcmaArray(_) | Value::StrictArray(_) => {
                self.amf0_complex(v, depth)?
            }
            // All remaining variants satisfy `needs_amf3` and were handled above.
            _ => return Err(Error::NotRepresentable("value not representable in AMF0")),
        }
        Ok(())
    }

    /// Objects, ECMA arrays and strict arrays: the values AMF0 can reference.
    fn amf0_complex(&mut self, v: &Value, depth: usize) -> Result<()> {
        if self.opts.amf0_references {
            if let Some(i) = self.amf0_objects.find(v) {
                self.out.put_u8(marker::REFERENCE);
                // Only indices <= u16::MAX are ever inserted.
                self.out.put_u16(i as u16);
                return Ok(());
            }
        }
        let index = self.amf0_count;
        self.amf0_count = self.amf0_count.saturating_add(1);
        match v {
            Value::Object(o) => {
                match &o.class_name {
                    None => self.out.put_u8(marker::OBJECT),
                    Some(c) => {
                        self.out.put_u8(marker::TYPED_OBJECT);
                        self.amf0_utf8(c)?;
                    }
                }
                for (k, val) in o.sealed.iter().chain(&o.properties) {
                    self.amf0_key(k)?;
                    self.amf0_value(val, depth + 1)?;
                }
                self.amf0_end();
            }
            Value::EcmaArray(a) => {
                self.out.put_u8(marker::ECMA_ARRAY);
                let count = a.dense.len().saturating_add(a.assoc.len());
                self.out.put_u32(u32::try_from(count).unwrap_or(u32::MAX));
                for (i, val) in a.dense.iter().enumerate() {
                    self.amf0_key(&i.to_string())?;
                    self.amf0_value(val, depth + 1)?;
                }
                for (k, val) in &a.assoc {
                    self.amf0_key(k)?;
                    self.amf0_value(val, depth + 1)?;
                }
                self.amf0_end();
            }
            Value::StrictArray(items) => {
                self.out.put_u8(marker::STRICT_ARRAY);
                let len = items.len();
                let n = u32::try_from(len).map_err(|_| Error::TooLong {
                    len,
                    max: u32::MAX as usize,
                })?;
                self.out.put_u32(n);
                for val in items {
                    self.amf0_value(val, depth + 1)?;
                }
            }
            _ => return Err(Error::NotRepresentable("not an AMF0 complex value")),
        }
        if self.opts.amf0_references && index <= u32::from(u16::MAX) {
            self.amf0_objects.insert(v, index);
        }
        Ok(())
    }

    /// Writes the avmplus marker and `v` in AMF3.
    pub(crate) fn amf0_avmplus(&mut self, v: &Value, depth: usize) -> Result<()> {
        self.out.put_u8(marker::AVMPLUS);
        if self.opts.share_amf3_context {
            self.amf3_value(v, depth)
        } else {
            let saved = std::mem::take(&mut self.amf3);
            let r = self.amf3_value(v, depth);
            self.amf3 = saved;
            r
        }
    }
}

/// An AMF0 encoder that appends to an internal buffer (see [`Encoder`]).
pub type Amf0Encoder = Encoder<Amf0>;

impl Encoder<Amf0> {
    /// Appends `value` as AMF3 behind the avmplus marker 0x11, whatever its type.
    pub fn encode_avmplus(&mut self, value: &Value) -> Result<()> {
        self.st.check_depth(0)?;
        self.st.amf0_avmplus(value, 1)
    }

    /// Appends raw bytes (for example an RTMP format selector).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.st.out.put_slice(bytes);
    }
}

/// Encodes one value as AMF0 with default options.
pub fn encode(value: &Value) -> Result<Vec<u8>> {
    encode_all(std::slice::from_ref(value))
}

/// Encodes a sequence of values as AMF0 sharing one reference table.
pub fn encode_all(values: &[Value]) -> Result<Vec<u8>> {
    encode_all_with(values, EncodeOptions::default())
}

/// Like [`encode_all`] with explicit options.
pub fn encode_all_with(values: &[Value], options: EncodeOptions) -> Result<Vec<u8>> {
    codec::encode_all::<Amf0>(values, options)
}
