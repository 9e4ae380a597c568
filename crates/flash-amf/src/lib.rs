//! AMF0 and AMF3 codecs, RTMP command/data message helpers, and an FLV reader
//! and writer.
//!
//! - [`value`]: the [`Value`] model shared by both encodings.
//! - [`amf0`] / [`amf3`]: streaming decoders over byte slices and encoders into
//!   buffers, plus `decode`/`decode_all`/`encode`/`encode_all` helpers.
//! - [`command`]: RTMP message type 15/17/18/20 payloads ([`Command`],
//!   [`DataMessage`]), including the type 15/17 format selector and per-value
//!   avmplus switch described in the RTMP errata §7.2.
//! - [`flv`]: FLV file header, tag headers, audio/video body headers, AVC and AAC
//!   configuration records, streaming [`FlvReader`]/[`FlvWriter`].
//! - [`options`]: [`Limits`] for hostile input and encoder/decoder options.
//!
//! Decoding never panics on arbitrary input: every problem is an [`Error`], and
//! the [`Limits`] bound nesting depth, collection sizes, reference tables and the
//! total memory a decode may allocate. The `decode_*_all` functions at the crate
//! root are the fuzzing entry points.
//!
//! ```
//! use flash_amf::{amf0, Object, Value, command::Command};
//!
//! let connect = Command::connect(Object::new().with("app", "live"));
//! let bytes = connect.to_amf0().unwrap();
//! assert_eq!(&bytes[..10], b"\x02\x00\x07connect");
//! let back = Command::from_amf0(&bytes).unwrap();
//! assert_eq!(back.command_object.get("app"), Some(&Value::from("live")));
//! # let _ = amf0::decode_all(&bytes).unwrap();
//! ```

pub mod amf0;
pub mod amf3;
mod codec;
pub mod command;
mod de;
pub mod error;
pub mod flv;
pub mod options;
mod ser;
pub mod value;

pub use codec::{Amf0, Amf3, Decoder, Encoder, Encoding};
pub use command::{Amf3Switch, Command, DataMessage};
pub use error::{Error, Result};
pub use flv::{FlvHeader, FlvReader, FlvTag, FlvWriter};
pub use options::{DecodeOptions, EncodeOptions, ExternalizableMode, Limits};
pub use value::{
    Date, Dictionary, EcmaArray, ExternalData, Externalizable, Object, ObjectVector, Value, Vector,
};

/// Fuzzing entry point: decodes `data` as a sequence of AMF0 values with default
/// options. Never panics.
pub fn decode_amf0_all(data: &[u8]) -> Result<Vec<Value>> {
    amf0::decode_all(data)
}

/// Fuzzing entry point: decodes `data` as a sequence of AMF3 values with default
/// options (plus the Flex collection classes as externalizable values). Never panics.
pub fn decode_amf3_all(data: &[u8]) -> Result<Vec<Value>> {
    amf3::decode_all_with(data, DecodeOptions::default().with_flex_collections())
}

/// Fuzzing entry point: decodes `data` as an RTMP type 15/17 payload (format
/// selector, then AMF0 values with avmplus switches). Never panics.
pub fn decode_extended_all(data: &[u8]) -> Result<Vec<Value>> {
    command::decode_extended(data)
}

/// Fuzzing entry point: parses `data` as a complete FLV file. Never panics.
pub fn decode_flv_all(data: &[u8]) -> Result<(FlvHeader, Vec<FlvTag>)> {
    flv::decode_all(data)
}
