//! Helpers for RTMP/RTMFP command and data message payloads.
//!
//! | RTMP message type | payload |
//! |---|---|
//! | 20 Command (AMF0) | AMF0 values: name, transaction id, command object, arguments… |
//! | 17 Command Extended (AMF3) | format byte 0x00, then the same values, each AMF0 unless prefixed by 0x11 |
//! | 18 Data (AMF0) | AMF0 values: handler name, arguments… |
//! | 15 Data Extended (AMF3) | format byte 0x00, then values as for type 17 |
//!
//! The extended format follows RTMP Errata and Addenda §7.2: the payload is *not*
//! a sequence of AMF3 values, but a format selector (which must be 0) followed by
//! AMF0 values, any of which may switch to AMF3 with the avmplus marker.

use crate::amf0::{Amf0Decoder, Amf0Encoder};
use crate::error::{Error, Result};
use crate::options::{DecodeOptions, EncodeOptions};
use crate::value::{Object, Value};

/// RTMP message type of an AMF3 ("extended") data message.
pub const MSG_DATA_AMF3: u8 = 15;
/// RTMP message type of an AMF3 ("extended") command message.
pub const MSG_COMMAND_AMF3: u8 = 17;
/// RTMP message type of an AMF0 data message.
pub const MSG_DATA_AMF0: u8 = 18;
/// RTMP message type of an AMF0 command message.
pub const MSG_COMMAND_AMF0: u8 = 20;

/// Handler name publishers use to set stream metadata.
pub const SET_DATA_FRAME: &str = "@setDataFrame";
/// Handler name of stream metadata.
pub const ON_META_DATA: &str = "onMetaData";

/// Which values of an extended (type 15/17) message are written in AMF3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Amf3Switch {
    /// Every value after the name (and transaction id) is written as 0x11 + AMF3
    /// (default). The name and transaction id stay AMF0 so that any decoder can
    /// dispatch on them.
    #[default]
    AfterHeader,
    /// Only values that AMF0 cannot represent are switched (see
    /// [`EncodeOptions::auto_avmplus`]).
    WhenNeeded,
}

/// Encodes an extended (type 15/17) payload: format selector 0, then `header`
/// values in AMF0, then `body` values switched according to `policy`.
pub fn encode_extended(header: &[Value], body: &[Value], policy: Amf3Switch) -> Result<Vec<u8>> {
    let mut e = Amf0Encoder::with_options(EncodeOptions::default());
    e.write_raw(&[0x00]);
    for v in header {
        e.encode(v)?;
    }
    for v in body {
        match policy {
            Amf3Switch::AfterHeader => e.encode_avmplus(v)?,
            Amf3Switch::WhenNeeded => e.encode(v)?,
        }
    }
    Ok(e.into_vec())
}

/// Decodes an extended (type 15/17) payload into its values, with AMF3 values
/// unwrapped. An empty payload or a format selector other than 0 is an error.
pub fn decode_extended(payload: &[u8]) -> Result<Vec<Value>> {
    decode_extended_with(payload, DecodeOptions::default())
}

/// Like [`decode_extended`] with explicit options.
pub fn decode_extended_with(payload: &[u8], options: DecodeOptions) -> Result<Vec<Value>> {
    let (&selector, rest) = payload
        .split_first()
        .ok_or(Error::MalformedMessage("empty extended message"))?;
    if selector != 0 {
        return Err(Error::UnknownFormatSelector(selector));
    }
    Amf0Decoder::with_options(rest, options).decode_all()
}

/// A command message: `name, transaction id, command object, arguments…`.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The command (method) name, e.g. `"connect"`, `"_result"`, `"onStatus"`.
    pub name: String,
    /// The transaction id; 0 when no reply is expected.
    pub transaction_id: f64,
    /// The command object (`Null` when there is none).
    pub command_object: Value,
    /// Further arguments.
    pub arguments: Vec<Value>,
}

impl Command {
    /// A command with no arguments.
    pub fn new(name: impl Into<String>, transaction_id: f64, command_object: Value) -> Self {
        Command {
            name: name.into(),
            transaction_id,
            command_object,
            arguments: Vec::new(),
        }
    }

    /// Builder: appends an argument.
    pub fn with_arg(mut self, arg: impl Into<Value>) -> Self {
        self.arguments.push(arg.into());
        self
    }

    /// A `connect` command (transaction id 1) with the given command object.
    pub fn connect(command_object: Object) -> Self {
        Command::new("connect", 1.0, Value::Object(command_object))
    }

    /// All values of the command in wire order.
    pub fn to_values(&self) -> Vec<Value> {
        let mut v = Vec::with_capacity(3 + self.arguments.len());
        v.push(Value::String(self.name.clone()));
        v.push(Value::Number(self.transaction_id));
        v.push(self.command_object.clone());
        v.extend(self.arguments.iter().cloned());
        v
    }

    /// Builds a command from decoded values. The name must be a string and the
    /// transaction id a number; a missing command object reads as `Null`.
    pub fn from_values(values: Vec<Value>) -> Result<Self> {
        let mut it = values.into_iter().map(Value::into_unwrapped);
        let name = match it.next() {
            Some(Value::String(s)) | Some(Value::LongString(s)) => s,
            Some(_) => return Err(Error::MalformedMessage("command name is not a string")),
            None => return Err(Error::MalformedMessage("empty command message")),
        };
        let transaction_id = match it.next() {
            Some(Value::Number(n)) => n,
            Some(Value::Integer(i)) => f64::from(i),
            Some(_) => return Err(Error::MalformedMessage("transaction id is not a number")),
            None => return Err(Error::MalformedMessage("command without transaction id")),
        };
        let command_object = it.next().unwrap_or(Value::Null);
        Ok(Command {
            name,
            transaction_id,
            command_object,
            arguments: it.collect(),
        })
    }

    /// Encodes the payload of an RTMP type 20 (AMF0 command) message.
    pub fn to_amf0(&self) -> Result<Vec<u8>> {
        crate::amf0::encode_all(&self.to_values())
    }

    /// Encodes the payload of an RTMP type 17 (AMF3 command) message: 0x00, the
    /// name and transaction id in AMF0, the remaining values per `policy`.
    pub fn to_amf3(&self, policy: Amf3Switch) -> Result<Vec<u8>> {
        let values = self.to_values();
        encode_extended(&values[..2], &values[2..], policy)
    }

    /// Decodes the payload of an RTMP type 20 message.
    pub fn from_amf0(payload: &[u8]) -> Result<Self> {
        Self::from_values(crate::amf0::decode_all(payload)?)
    }

    /// Decodes the payload of an RTMP type 17 message.
    pub fn from_amf3(payload: &[u8]) -> Result<Self> {
        Self::from_values(decode_extended(payload)?)
    }
}

/// A data message: `handler name, values…` (for example `onMetaData`, or a
/// `NetStream.send` handler call).
#[derive(Debug, Clone, PartialEq)]
pub struct DataMessage {
    /// The handler name.
    pub handler: String,
    /// The values after the handler name.
    pub values: Vec<Value>,
}

impl DataMessage {
    /// A data message.
    pub fn new(handler: impl Into<String>, values: Vec<Value>) -> Self {
        DataMessage {
            handler: handler.into(),
            values,
        }
    }

    /// `@setDataFrame("onMetaData", metadata)`, as sent by publishers.
    pub fn set_data_frame(metadata: Value) -> Self {
        DataMessage::new(
            SET_DATA_FRAME,
            vec![Value::String(ON_META_DATA.to_owned()), metadata],
        )
    }

    /// `onMetaData(metadata)`, as stored in FLV files and sent to subscribers.
    pub fn on_meta_data(metadata: Value) -> Self {
        DataMessage::new(ON_META_DATA, vec![metadata])
    }

    /// If this is `@setDataFrame(name, args…)`, the message `name(args…)` that a
    /// server forwards to subscribers; otherwise `self` unchanged.
    pub fn strip_set_data_frame(self) -> Self {
        if self.handler != SET_DATA_FRAME {
            return self;
        }
        let mut it = self.values.into_iter();
        match it.next().map(Value::into_unwrapped) {
            Some(Value::String(name)) | Some(Value::LongString(name)) => DataMessage {
                handler: name,
                values: it.collect(),
            },
            other => DataMessage {
                handler: SET_DATA_FRAME.to_owned(),
                values: other.into_iter().chain(it).collect(),
            },
        }
    }

    /// All values of the message in wire order.
    pub fn to_values(&self) -> Vec<Value> {
        let mut v = Vec::with_capacity(1 + self.values.len());
        v.push(Value::String(self.handler.clone()));
        v.extend(self.values.iter().cloned());
        v
    }

    /// Builds a data message from decoded values; the first must be a string.
    pub fn from_values(values: Vec<Value>) -> Result<Self> {
        let mut it = values.into_iter().map(Value::into_unwrapped);
        let handler = match it.next() {
            Some(Value::String(s)) | Some(Value::LongString(s)) => s,
            Some(_) => return Err(Error::MalformedMessage("handler name is not a string")),
            None => return Err(Error::MalformedMessage("empty data message")),
        };
        Ok(DataMessage {
            handler,
            values: it.collect(),
        })
    }

    /// Encodes the payload of an RTMP type 18 (AMF0 data) message or an FLV
    /// script tag body.
    pub fn to_amf0(&self) -> Result<Vec<u8>> {
        crate::amf0::encode_all(&self.to_values())
    }

    /// Encodes the payload of an RTMP type 15 (AMF3 data) message.
    pub fn to_amf3(&self, policy: Amf3Switch) -> Result<Vec<u8>> {
        let values = self.to_values();
        encode_extended(&values[..1], &values[1..], policy)
    }

    /// Decodes the payload of an RTMP type 18 message or FLV script tag.
    pub fn from_amf0(payload: &[u8]) -> Result<Self> {
        Self::from_values(crate::amf0::decode_all(payload)?)
    }

    /// Decodes the payload of an RTMP type 15 message.
    pub fn from_amf3(payload: &[u8]) -> Result<Self> {
        Self::from_values(decode_extended(payload)?)
    }
}

/// Decodes a payload of RTMP message type 15, 17, 18 or 20 into its values.
/// Other types are an error. Never panics.
pub fn decode_message_values(message_type: u8, payload: &[u8]) -> Result<Vec<Value>> {
    match message_type {
        MSG_DATA_AMF0 | MSG_COMMAND_AMF0 => crate::amf0::decode_all(payload),
        MSG_DATA_AMF3 | MSG_COMMAND_AMF3 => decode_extended(payload),
        _ => Err(Error::MalformedMessage(
            "not a command or data message type",
        )),
    }
}
