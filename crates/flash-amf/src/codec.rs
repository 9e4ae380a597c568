//! The streaming decoder and encoder both encodings share: [`Decoder`] and
//! [`Encoder`], named [`Amf0Decoder`](crate::amf0::Amf0Decoder) /
//! [`Amf3Decoder`](crate::amf3::Amf3Decoder) and so on in the encoding modules.

use std::fmt::Debug;
use std::marker::PhantomData;

use crate::de::DecodeState;
use crate::error::Result;
use crate::options::{DecodeOptions, EncodeOptions};
use crate::ser::EncodeState;
use crate::value::Value;

mod sealed {
    /// Which of the two encodings a marker type stands for.
    pub trait Codec {
        /// AMF3 (otherwise AMF0).
        const AMF3: bool;
    }
}

/// An encoding a [`Decoder`] reads and an [`Encoder`] writes: [`Amf0`] or [`Amf3`].
pub trait Encoding: sealed::Codec + Debug + Default {}

/// The AMF0 encoding (with the avmplus switch to AMF3).
#[derive(Debug, Default, Clone, Copy)]
pub struct Amf0;

/// The AMF3 encoding.
#[derive(Debug, Default, Clone, Copy)]
pub struct Amf3;

impl Encoding for Amf0 {}
impl Encoding for Amf3 {}

impl sealed::Codec for Amf0 {
    const AMF3: bool = false;
}

impl sealed::Codec for Amf3 {
    const AMF3: bool = true;
}

/// A streaming decoder of encoding `E` over a byte slice.
///
/// The reference tables span every value decoded until
/// [`reset_references`](Decoder::reset_references). After an error the decoder's
/// position is unspecified; start a new decoder.
#[derive(Debug)]
pub struct Decoder<'a, E> {
    pub(crate) st: DecodeState<'a>,
    encoding: PhantomData<E>,
}

impl<'a, E: Encoding> Decoder<'a, E> {
    /// A decoder with default options.
    pub fn new(input: &'a [u8]) -> Self {
        Self::with_options(input, DecodeOptions::default())
    }

    /// A decoder with the given options.
    pub fn with_options(input: &'a [u8], options: DecodeOptions) -> Self {
        Decoder {
            st: DecodeState::new(input, options),
            encoding: PhantomData,
        }
    }

    /// Decodes the next value.
    pub fn decode(&mut self) -> Result<Value> {
        if E::AMF3 {
            self.st.amf3_value(0)
        } else {
            self.st.amf0_value(0)
        }
    }

    /// Decodes values until the input is exhausted.
    pub fn decode_all(&mut self) -> Result<Vec<Value>> {
        let mut values = Vec::new();
        while !self.is_empty() {
            values.push(self.decode()?);
        }
        Ok(values)
    }

    /// Whether all input has been consumed.
    pub fn is_empty(&self) -> bool {
        self.st.remaining() == 0
    }

    /// Number of input bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.st.remaining()
    }

    /// Offset of the next byte to be read.
    pub fn position(&self) -> usize {
        self.st.pos
    }

    /// The unconsumed input.
    pub fn rest(&self) -> &'a [u8] {
        &self.st.input[self.st.pos.min(self.st.input.len())..]
    }

    /// Clears the reference tables (for AMF0, the shared AMF3 context of avmplus
    /// values too).
    pub fn reset_references(&mut self) {
        self.st.reset_references();
    }
}

/// Decodes exactly one value of encoding `E`; trailing bytes are an error.
pub(crate) fn decode_one<E: Encoding>(input: &[u8]) -> Result<Value> {
    let mut d = Decoder::<E>::new(input);
    let v = d.decode()?;
    d.st.expect_end()?;
    Ok(v)
}

/// An encoder of encoding `E` that appends to an internal buffer.
///
/// The reference tables span every value written until
/// [`reset_references`](Encoder::reset_references). After an error the buffer
/// may hold a partial value; discard the encoder.
#[derive(Debug, Default)]
pub struct Encoder<E> {
    pub(crate) st: EncodeState,
    encoding: PhantomData<E>,
}

impl<E: Encoding> Encoder<E> {
    /// An encoder with default options.
    pub fn new() -> Self {
        Self::with_options(EncodeOptions::default())
    }

    /// An encoder with the given options.
    pub fn with_options(options: EncodeOptions) -> Self {
        Encoder {
            st: EncodeState::new(options),
            encoding: PhantomData,
        }
    }

    /// Appends one value.
    pub fn encode(&mut self, value: &Value) -> Result<()> {
        if E::AMF3 {
            self.st.amf3_value(value, 0)
        } else {
            self.st.amf0_value(value, 0)
        }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.st.out
    }

    /// Consumes the encoder, returning the bytes written.
    pub fn into_vec(self) -> Vec<u8> {
        self.st.out
    }

    /// Clears the reference tables.
    pub fn reset_references(&mut self) {
        self.st.reset_references();
    }
}

/// Encodes `values` in encoding `E` sharing one encoder (so one set of reference
/// tables).
pub(crate) fn encode_all<E: Encoding>(values: &[Value], options: EncodeOptions) -> Result<Vec<u8>> {
    let mut e = Encoder::<E>::with_options(options);
    for v in values {
        e.encode(v)?;
    }
    Ok(e.into_vec())
}
