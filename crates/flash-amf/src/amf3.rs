//! AMF3 encoder and decoder.
//!
//! Covers every AMF3 marker (0x00–0x11): U29 integers, the string, object and
//! traits reference tables (the empty string is never entered in or taken from
//! the string table), sealed/dynamic/externalizable traits, arrays with an
//! associative part, dates, both XML types, ByteArray, the four vector types and
//! Dictionary.
//!
//! The reference tables span everything one decoder or encoder handles until
//! `reset_references` is called.

use std::rc::Rc;

use bytes::BufMut;

use crate::codec::{self, Amf3, Decoder, Encoder};
use crate::de::{i29, DecodeState, RefEntry, Traits, PROP_COST};
use crate::error::{Error, Result};
use crate::options::{DecodeOptions, EncodeOptions, ExternalizableMode};
use crate::ser::{EncodeState, TraitsKey, U29_MAX};
use crate::value::{
    Date, Dictionary, EcmaArray, ExternalData, Externalizable, Object, ObjectVector, Value, Vector,
};

/// AMF3 type markers.
pub mod marker {
    /// undefined.
    pub const UNDEFINED: u8 = 0x00;
    /// null.
    pub const NULL: u8 = 0x01;
    /// false.
    pub const FALSE: u8 = 0x02;
    /// true.
    pub const TRUE: u8 = 0x03;
    /// 29-bit signed integer (U29).
    pub const INTEGER: u8 = 0x04;
    /// IEEE-754 double.
    pub const DOUBLE: u8 = 0x05;
    /// String.
    pub const STRING: u8 = 0x06;
    /// Legacy XMLDocument.
    pub const XML_DOC: u8 = 0x07;
    /// Date.
    pub const DATE: u8 = 0x08;
    /// Array.
    pub const ARRAY: u8 = 0x09;
    /// Object.
    pub const OBJECT: u8 = 0x0A;
    /// E4X XML.
    pub const XML: u8 = 0x0B;
    /// ByteArray.
    pub const BYTE_ARRAY: u8 = 0x0C;
    /// `Vector.<int>`.
    pub const VECTOR_INT: u8 = 0x0D;
    /// `Vector.<uint>`.
    pub const VECTOR_UINT: u8 = 0x0E;
    /// `Vector.<Number>`.
    pub const VECTOR_DOUBLE: u8 = 0x0F;
    /// `Vector.<Object>`.
    pub const VECTOR_OBJECT: u8 = 0x10;
    /// Dictionary.
    pub const DICTIONARY: u8 = 0x11;
}

/// Smallest AMF3 integer (-2^28).
pub const INT_MIN: i32 = -(1 << 28);
/// Largest AMF3 integer (2^28 - 1).
pub const INT_MAX: i32 = (1 << 28) - 1;

// ---------------------------------------------------------------------------
// Decoding

impl<'a> DecodeState<'a> {
    /// Decodes one AMF3 value at nesting depth `depth`.
    pub(crate) fn amf3_value(&mut self, depth: usize) -> Result<Value> {
        self.enter(depth)?;
        let start = self.pos;
        let m = self.u8()?;
        Ok(match m {
            marker::UNDEFINED => Value::Undefined,
            marker::NULL => Value::Null,
            marker::FALSE => Value::Bool(false),
            marker::TRUE => Value::Bool(true),
            marker::INTEGER => Value::Integer(i29(self.u29()?)),
            marker::DOUBLE => Value::Number(self.f64()?),
            marker::STRING => {
                let s = self.amf3_str()?;
                Value::String(self.own(s)?)
            }
            marker::XML_DOC | marker::XML => {
                self.amf3_object_entry(start, depth, false, |st, u| {
                    let s = st.string((u >> 1) as usize)?;
                    Ok(if m == marker::XML {
                        Value::Xml(s)
                    } else {
                        Value::XmlDocument(s)
                    })
                })?
            }
            marker::DATE => self.amf3_object_entry(start, depth, false, |st, _| {
                Ok(Value::Date(Date::new(st.f64()?)))
            })?,
            marker::ARRAY => self.amf3_object_entry(start, depth, true, |st, u| {
                let count = (u >> 1) as usize;
                let assoc = st.amf3_members(depth)?;
                let mut dense = Vec::with_capacity(st.capacity_for::<Value>(count, 1));
                for _ in 0..count {
                    dense.push(st.amf3_value(depth + 1)?);
                }
                Ok(if assoc.is_empty() {
                    Value::StrictArray(dense)
                } else {
                    Value::EcmaArray(EcmaArray { dense, assoc })
                })
            })?,
            marker::OBJECT => {
                self.amf3_object_entry(start, depth, false, |st, u| st.amf3_object_body(u, depth))?
            }
            marker::BYTE_ARRAY => self.amf3_object_entry(start, depth, false, |st, u| {
                let n = (u >> 1) as usize;
                let bytes = st.take(n)?;
                st.charge(n)?;
                Ok(Value::ByteArray(bytes.to_vec()))
            })?,
            marker::VECTOR_INT | marker::VECTOR_UINT | marker::VECTOR_DOUBLE => {
                self.amf3_object_entry(start, depth, true, |st, u| {
                    let count = (u >> 1) as usize;
                    let fixed = st.u8()? != 0;
                    let width = if m == marker::VECTOR_DOUBLE { 8 } else { 4 };
                    // count < 2^28 and width <= 8, so this cannot overflow.
                    let bytes = st.take(count * width)?;
                    st.charge(count * width)?;
                    let words = bytes.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
                    Ok(match m {
                        marker::VECTOR_INT => Value::VectorInt(Vector {
                            fixed,
                            items: words.map(i32::from_be_bytes).collect(),
                        }),
                        marker::VECTOR_UINT => Value::VectorUint(Vector {
                            fixed,
                            items: words.map(u32::from_be_bytes).collect(),
                        }),
                        _ => Value::VectorDouble(Vector {
                            fixed,
                            items: bytes
                                .chunks_exact(8)
                                .map(|c| {
                                    let mut a = [0u8; 8];
                                    a.copy_from_slice(c);
                                    f64::from_be_bytes(a)
                                })
                                .collect(),
                        }),
                    })
                })?
            }
            marker::VECTOR_OBJECT => self.amf3_object_entry(start, depth, true, |st, u| {
                let count = (u >> 1) as usize;
                let fixed = st.u8()? != 0;
                let type_name = st.amf3_str()?;
                let type_name = st.own(type_name)?;
                let mut items = Vec::with_capacity(st.capacity_for::<Value>(count, 1));
                for _ in 0..count {
                    items.push(st.amf3_value(depth + 1)?);
                }
                Ok(Value::VectorObject(ObjectVector {
                    fixed,
                    type_name,
                    items,
                }))
            })?,
            marker::DICTIONARY => self.amf3_object_entry(start, depth, true, |st, u| {
                let count = (u >> 1) as usize;
                let weak_keys = st.u8()? != 0;
                let mut entries = Vec::with_capacity(st.capacity_for::<(Value, Value)>(count, 2));
                for _ in 0..count {
                    let k = st.amf3_value(depth + 1)?;
                    let v = st.amf3_value(depth + 1)?;
                    entries.push((k, v));
                }
                Ok(Value::Dictionary(Dictionary { weak_keys, entries }))
            })?,
            _ => {
                return Err(Error::UnknownMarker {
                    marker: m,
                    offset: start,
                })
            }
        })
    }

    /// Reads a value that may stand in the object table: a U29 header `u` that is
    /// either a reference (low bit 0) or the start of an inline value, which
    /// `read` decodes while it is registered in the table. With `counted`, `u >> 1`
    /// is a collection length, checked against the limits before registering.
    fn amf3_object_entry(
        &mut self,
        start: usize,
        depth: usize,
        counted: bool,
        read: impl FnOnce(&mut Self, u32) -> Result<Value>,
    ) -> Result<Value> {
        let u = self.u29()?;
        if u & 1 == 0 {
            return self.amf3_object_ref(u, start, depth);
        }
        if counted {
            self.check_len((u >> 1) as usize)?;
        }
        let idx = self.amf3_register(start)?;
        let v = read(self, u)?;
        DecodeState::finish(&mut self.amf3.objects, idx);
        Ok(v)
    }

    fn amf3_register(&mut self, start: usize) -> Result<Option<usize>> {
        let max = self.opts.limits.max_references;
        let idx = DecodeState::register(&mut self.amf3.objects, self.amf3_replay, start, max)?;
        if idx.is_some() {
            self.charge(std::mem::size_of::<RefEntry>())?;
        }
        Ok(idx)
    }

    /// Resolves an object-table reference by replaying the referenced bytes.
    fn amf3_object_ref(&mut self, u: u32, offset: usize, depth: usize) -> Result<Value> {
        let index = (u >> 1) as usize;
        let entry = DecodeState::lookup(&self.amf3.objects, index, offset)?;
        let saved_pos = self.pos;
        let saved_replay = self.amf3_replay;
        self.pos = entry.start;
        self.amf3_replay = true;
        let result = self.amf3_value(depth);
        self.pos = saved_pos;
        self.amf3_replay = saved_replay;
        result
    }

    /// Reads a UTF-8-vr string (inline or string-table reference), borrowing it.
    fn amf3_str(&mut self) -> Result<&'a str> {
        let offset = self.pos;
        let u = self.u29()?;
        if u & 1 == 0 {
            let index = (u >> 1) as usize;
            return self
                .amf3
                .strings
                .get(index)
                .copied()
                .ok_or(Error::BadReference { index, offset });
        }
        let s = self.str_slice((u >> 1) as usize)?;
        if !s.is_empty() && !self.amf3_replay {
            let max = self.opts.limits.max_references;
            if self.amf3.strings.len() >= max {
                return Err(Error::ReferenceTableFull { limit: max });
            }
            self.charge(std::mem::size_of::<&str>())?;
            self.amf3.strings.push(s);
        }
        Ok(s)
    }

    /// Reads traits and members after an inline U29O header.
    fn amf3_object_body(&mut self, u: u32, depth: usize) -> Result<Value> {
        let traits: Rc<Traits<'a>> = if u & 2 == 0 {
            let offset = self.pos;
            let index = (u >> 2) as usize;
            let t = self
                .amf3
                .traits
                .get(index)
                .cloned()
                .ok_or(Error::BadReference { index, offset })?;
            self.charge(std::mem::size_of::<String>() * (t.sealed.len() + 1))?;
            t
        } else {
            let (dynamic, externalizable, count) = if u & 4 != 0 {
                (false, true, 0)
            } else {
                (u & 8 != 0, false, (u >> 4) as usize)
            };
            self.check_len(count)?;
            let class_name = self.amf3_str()?;
            let mut sealed = Vec::with_capacity(self.capacity_for::<&str>(count, 1));
            for _ in 0..count {
                sealed.push(self.amf3_str()?);
            }
            let t = Rc::new(Traits {
                class_name,
                sealed,
                dynamic,
                externalizable,
            });
            if !self.amf3_replay {
                let max = self.opts.limits.max_references;
                if self.amf3.traits.len() >= max {
                    return Err(Error::ReferenceTableFull { limit: max });
                }
                self.charge(
                    std::mem::size_of::<Traits<'_>>() + std::mem::size_of::<&str>() * count,
                )?;
                self.amf3.traits.push(t.clone());
            }
            t
        };

        if traits.externalizable {
            let class_name = self.own(traits.class_name)?;
            let data = if self
                .opts
                .externalizable_value_classes
                .iter()
                .any(|c| c == traits.class_name)
            {
                ExternalData::Value(Box::new(self.amf3_value(depth + 1)?))
            } else {
                match self.opts.externalizable {
                    ExternalizableMode::Reject => return Err(Error::Externalizable { class_name }),
                    ExternalizableMode::RawRemainder => {
                        let n = self.remaining();
                        let bytes = self.take(n)?;
                        self.charge(n)?;
                        ExternalData::Raw(bytes.to_vec())
                    }
                }
            };
            return Ok(Value::Externalizable(Externalizable { class_name, data }));
        }

        let class_name = if traits.class_name.is_empty() {
            None
        } else {
            Some(self.own(traits.class_name)?)
        };
        let mut sealed = Vec::with_capacity(traits.sealed.len());
        for name in &traits.sealed {
            let key = self.own(name)?;
            self.charge(PROP_COST)?;
            let v = self.amf3_value(depth + 1)?;
            sealed.push((key, v));
        }
        let properties = if traits.dynamic {
            self.amf3_members(depth)?
        } else {
            Vec::new()
        };
        Ok(Value::Object(Object {
            class_name,
            sealed,
            dynamic: traits.dynamic,
            properties,
        }))
    }

    /// Reads `key, value` pairs up to the empty key: an array's associative
    /// part, or an object's dynamic members.
    fn amf3_members(&mut self, depth: usize) -> Result<Vec<(String, Value)>> {
        let mut members = Vec::new();
        loop {
            let key = self.amf3_str()?;
            if key.is_empty() {
                return Ok(members);
            }
            self.check_len(members.len() + 1)?;
            let key = self.own(key)?;
            self.charge(PROP_COST)?;
            let v = self.amf3_value(depth + 1)?;
            members.push((key, v));
        }
    }
}

/// A streaming AMF3 decoder over a byte slice (see [`Decoder`]).
pub type Amf3Decoder<'a> = Decoder<'a, Amf3>;

/// Decodes exactly one AMF3 value; trailing bytes are an error.
pub fn decode(input: &[u8]) -> Result<Value> {
    codec::decode_one::<Amf3>(input)
}

/// Decodes a sequence of AMF3 values filling the whole input, sharing one set of
/// reference tables. Never panics.
pub fn decode_all(input: &[u8]) -> Result<Vec<Value>> {
    Amf3Decoder::new(input).decode_all()
}

/// Like [`decode_all`] with explicit options.
pub fn decode_all_with(input: &[u8], options: DecodeOptions) -> Result<Vec<Value>> {
    Amf3Decoder::with_options(input, options).decode_all()
}

/// Reads one U29 from the start of `input`, returning it and the bytes used.
pub fn read_u29(input: &[u8]) -> Result<(u32, usize)> {
    let mut st = DecodeState::new(input, DecodeOptions::default());
    let v = st.u29()?;
    Ok((v, st.pos))
}

/// Appends the shortest U29 encoding of `value` (which must be < 2^29).
pub fn write_u29(out: &mut Vec<u8>, value: u32) -> Result<()> {
    let mut st = EncodeState::default();
    st.u29(value)?;
    out.extend_from_slice(&st.out);
    Ok(())
}

// ---------------------------------------------------------------------------
// Encoding

impl EncodeState {
    /// Writes a UTF-8-vr string, using the string table.
    fn amf3_string(&mut self, s: &str) -> Result<()> {
        if s.is_empty() {
            self.out.put_u8(0x01);
            return Ok(());
        }
        if let Some(&i) = self.amf3.strings.get(s) {
            return self.u29(i << 1);
        }
        self.u29_inline(s.len())?;
        self.out.put_slice(s.as_bytes());
        let i = self.amf3.string_count;
        self.amf3.string_count = i.saturating_add(1);
        if i <= U29_MAX >> 1 {
            self.amf3.strings.insert(s.to_owned(), i);
        }
        Ok(())
    }

    fn amf3_key(&mut self, k: &str) -> Result<()> {
        if k.is_empty() {
            return Err(Error::EmptyKey);
        }
        self.amf3_string(k)
    }

    /// Handles the object table for an object-table value: writes the marker,
    /// and either a reference (returning `None`) or nothing more (returning the
    /// new entry's index, for [`Self::amf3_done`]).
    fn amf3_begin(&mut self, m: u8, v: &Value) -> Result<Option<u32>> {
        self.out.put_u8(m);
        if self.opts.amf3_object_references {
            if let Some(i) = self.amf3.objects.find(v) {
                self.u29(i << 1)?;
                return Ok(None);
            }
        }
        let i = self.amf3.object_count;
        self.amf3.object_count = i.saturating_add(1);
        Ok(Some(i))
    }

    /// Writes a vector of numbers `v`: the count, the fixed flag, then each item
    /// by `put`.
    fn amf3_number_vector<T: Copy>(
        &mut self,
        m: u8,
        v: &Value,
        vec: &Vector<T>,
        put: impl Fn(&mut Vec<u8>, T),
    ) -> Result<()> {
        if let Some(i) = self.amf3_begin(m, v)? {
            self.u29_inline(vec.items.len())?;
            self.out.put_u8(u8::from(vec.fixed));
            for x in &vec.items {
                put(&mut self.out, *x);
            }
            self.amf3_done(v, i);
        }
        Ok(())
    }

    fn amf3_done(&mut self, v: &Value, index: u32) {
        if self.opts.amf3_object_references && index <= U29_MAX >> 1 {
            self.amf3.objects.insert(v, index);
        }
    }

    /// Writes the U29O header and traits, using the traits table.
    fn amf3_traits(&mut self, key: TraitsKey) -> Result<()> {
        if let Some(&i) = self.amf3.traits.get(&key) {
            return self.u29((i << 2) | 1);
        }
        if key.externalizable {
            self.u29(0x07)?;
        } else {
            let n = key.sealed.len();
            let max = (U29_MAX >> 4) as usize;
            if n > max {
                return Err(Error::TooLong { len: n, max });
            }
            self.u29(((n as u32) << 4) | (u32::from(key.dynamic) << 3) | 0x03)?;
        }
        self.amf3_string(&key.class_name)?;
        for name in &key.sealed {
            self.amf3_string(name)?;
        }
        let i = self.amf3.traits_count;
        self.amf3.traits_count = i.saturating_add(1);
        if i <= U29_MAX >> 2 {
            self.amf3.traits.insert(key, i);
        }
        Ok(())
    }

    /// Encodes one AMF3 value at nesting depth `depth`.
    pub(crate) fn amf3_value(&mut self, v: &Value, depth: usize) -> Result<()> {
        self.check_depth(depth)?;
        match v {
            Value::Undefined => self.out.put_u8(marker::UNDEFINED),
            Value::Null => self.out.put_u8(marker::NULL),
            Value::Bool(false) => self.out.put_u8(marker::FALSE),
            Value::Bool(true) => self.out.put_u8(marker::TRUE),
            Value::Integer(i) if (INT_MIN..=INT_MAX).contains(i) => {
                self.out.put_u8(marker::INTEGER);
                self.u29((*i as u32) & U29_MAX)?;
            }
            Value::Integer(i) => {
                self.out.put_u8(marker::DOUBLE);
                self.out.put_f64(f64::from(*i));
            }
            Value::Number(n) => {
                self.out.put_u8(marker::DOUBLE);
                self.out.put_f64(*n);
            }
            Value::String(s) | Value::LongString(s) => {
                self.out.put_u8(marker::STRING);
                self.amf3_string(s)?;
            }
            Value::XmlDocument(s) | Value::Xml(s) => {
                let m = if matches!(v, Value::Xml(_)) {
                    marker::XML
                } else {
                    marker::XML_DOC
                };
                if let Some(i) = self.amf3_begin(m, v)? {
                    self.u29_inline(s.len())?;
                    self.out.put_slice(s.as_bytes());
                    self.amf3_done(v, i);
                }
            }
            Value::Date(d) => {
                if let Some(i) = self.amf3_begin(marker::DATE, v)? {
                    self.u29(1)?;
                    self.out.put_f64(d.millis);
                    self.amf3_done(v, i);
                }
            }
            Value::StrictArray(items) => {
                if let Some(i) = self.amf3_begin(marker::ARRAY, v)? {
                    self.u29_inline(items.len())?;
                    self.out.put_u8(0x01);
                    for item in items {
                        self.amf3_value(item, depth + 1)?;
                    }
                    self.amf3_done(v, i);
                }
            }
            Value::EcmaArray(a) => {
                if let Some(i) = self.amf3_begin(marker::ARRAY, v)? {
                    self.u29_inline(a.dense.len())?;
                    for (k, item) in &a.assoc {
                        self.amf3_key(k)?;
                        self.amf3_value(item, depth + 1)?;
                    }
                    self.out.put_u8(0x01);
                    for item in &a.dense {
                        self.amf3_value(item, depth + 1)?;
                    }
                    self.amf3_done(v, i);
                }
            }
            Value::Object(o) => {
                if !o.dynamic && !o.properties.is_empty() {
                    return Err(Error::NotRepresentable(
                        "dynamic properties on an object with sealed (non-dynamic) traits",
                    ));
                }
                if let Some(i) = self.amf3_begin(marker::OBJECT, v)? {
                    self.amf3_traits(TraitsKey {
                        class_name: o.class_name.clone().unwrap_or_default(),
                        sealed: o.sealed.iter().map(|(k, _)| k.clone()).collect(),
                        dynamic: o.dynamic,
                        externalizable: false,
                    })?;
                    for (_, item) in &o.sealed {
                        self.amf3_value(item, depth + 1)?;
                    }
                    if o.dynamic {
                        for (k, item) in &o.properties {
                            self.amf3_key(k)?;
                            self.amf3_value(item, depth + 1)?;
                        }
                        self.out.put_u8(0x01);
                    }
                    self.amf3_done(v, i);
                }
            }
            Value::Externalizable(e) => {
                if let Some(i) = self.amf3_begin(marker::OBJECT, v)? {
                    self.amf3_traits(TraitsKey {
                        class_name: e.class_name.clone(),
                        sealed: Vec::new(),
                        dynamic: false,
                        externalizable: true,
                    })?;
                    match &e.data {
                        ExternalData::Raw(b) => self.out.put_slice(b),
                        ExternalData::Value(inner) => self.amf3_value(inner, depth + 1)?,
                    }
                    self.amf3_done(v, i);
                }
            }
            Value::ByteArray(b) => {
                if let Some(i) = self.amf3_begin(marker::BYTE_ARRAY, v)? {
                    self.u29_inline(b.len())?;
                    self.out.put_slice(b);
                    self.amf3_done(v, i);
                }
            }
            Value::VectorInt(vec) => {
                self.amf3_number_vector(marker::VECTOR_INT, v, vec, |out, x| out.put_i32(x))?;
            }
            Value::VectorUint(vec) => {
                self.amf3_number_vector(marker::VECTOR_UINT, v, vec, |out, x| out.put_u32(x))?;
            }
            Value::VectorDouble(vec) => {
                self.amf3_number_vector(marker::VECTOR_DOUBLE, v, vec, |out, x| out.put_f64(x))?;
            }
            Value::VectorObject(vec) => {
                if let Some(i) = self.amf3_begin(marker::VECTOR_OBJECT, v)? {
                    self.u29_inline(vec.items.len())?;
                    self.out.put_u8(u8::from(vec.fixed));
                    self.amf3_string(&vec.type_name)?;
                    for item in &vec.items {
                        self.amf3_value(item, depth + 1)?;
                    }
                    self.amf3_done(v, i);
                }
            }
            Value::Dictionary(d) => {
                if let Some(i) = self.amf3_begin(marker::DICTIONARY, v)? {
                    self.u29_inline(d.entries.len())?;
                    self.out.put_u8(u8::from(d.weak_keys));
                    for (k, item) in &d.entries {
                        self.amf3_value(k, depth + 1)?;
                        self.amf3_value(item, depth + 1)?;
                    }
                    self.amf3_done(v, i);
                }
            }
            Value::Avmplus(inner) => self.amf3_value(inner, depth + 1)?,
            Value::Reference(_) => {
                return Err(Error::NotRepresentable("AMF0 reference in AMF3"));
            }
            Value::Unsupported => {
                return Err(Error::NotRepresentable("AMF0 unsupported in AMF3"));
            }
        }
        Ok(())
    }
}

/// An AMF3 encoder that appends to an internal buffer (see [`Encoder`]).
pub type Amf3Encoder = Encoder<Amf3>;

/// Encodes one value as AMF3 with default options.
pub fn encode(value: &Value) -> Result<Vec<u8>> {
    encode_all(std::slice::from_ref(value))
}

/// Encodes a sequence of values as AMF3 sharing one set of reference tables.
pub fn encode_all(values: &[Value]) -> Result<Vec<u8>> {
    encode_all_with(values, EncodeOptions::default())
}

/// Like [`encode_all`] with explicit options.
pub fn encode_all_with(values: &[Value], options: EncodeOptions) -> Result<Vec<u8>> {
    codec::encode_all::<Amf3>(values, options)
}
