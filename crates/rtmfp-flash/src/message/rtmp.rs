//! RFC 7425 §5.1.2 message mapping and typed RTMP message bodies.

use bytes::{BufMut, Bytes, BytesMut};

use super::MessageError;
use flash_amf::command::{
    Amf3Switch, Command, DataMessage, MSG_COMMAND_AMF0, MSG_COMMAND_AMF3, MSG_DATA_AMF0,
    MSG_DATA_AMF3,
};

/// RTMP message type of a User Control message.
pub const MSG_USER_CONTROL: u8 = 4;
/// RTMP message type of an audio message (FLV AUDIODATA body).
pub const MSG_AUDIO: u8 = 8;
/// RTMP message type of a video message (FLV VIDEODATA body).
pub const MSG_VIDEO: u8 = 9;

/// User Control event: Stream Begin.
pub const UC_STREAM_BEGIN: u16 = 0;
/// User Control event: Stream EOF.
pub const UC_STREAM_EOF: u16 = 1;
/// User Control event: Stream Dry.
pub const UC_STREAM_DRY: u16 = 2;
/// User Control event: Set Buffer Length.
pub const UC_SET_BUFFER_LENGTH: u16 = 3;
/// User Control event: Stream Is Recorded.
pub const UC_STREAM_IS_RECORDED: u16 = 4;
/// User Control event: Ping Request.
pub const UC_PING_REQUEST: u16 = 6;
/// User Control event: Ping Response.
pub const UC_PING_RESPONSE: u16 = 7;
/// User Control event: Buffer Empty (not in the RTMP spec; widely seen).
pub const UC_BUFFER_EMPTY: u16 = 31;
/// User Control event: Buffer Ready (not in the RTMP spec; widely seen).
pub const UC_BUFFER_READY: u16 = 32;
/// User Control event: Flow Synchronization (RFC 7425 §5.2).
pub const UC_FLOW_SYNC: u16 = 34;
/// User Control event: Set Keepalive Timers (RFC 7425 §5.3.4).
pub const UC_SET_KEEPALIVE: u16 = 41;

/// One RTMP message as carried in one RTMFP flow message (§5.1.2): the stream
/// ID is not here, it comes from the flow's [`FlowMetadata`](super::FlowMetadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpMessage {
    /// RTMP message type.
    pub message_type: u8,
    /// RTMP timestamp (milliseconds, wrapping).
    pub timestamp: u32,
    /// The payload; its length is the flow message's length minus 5.
    pub payload: Bytes,
}

impl RtmpMessage {
    /// A message.
    pub fn new(message_type: u8, timestamp: u32, payload: impl Into<Bytes>) -> Self {
        RtmpMessage {
            message_type,
            timestamp,
            payload: payload.into(),
        }
    }

    /// Builds the message of a typed body.
    pub fn from_body(timestamp: u32, body: &Body) -> Result<Self, MessageError> {
        let (message_type, payload) = body.encode()?;
        Ok(Self::new(message_type, timestamp, payload))
    }

    /// The flow message: `type | timestamp (BE) | payload`.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(5 + self.payload.len());
        b.put_u8(self.message_type);
        b.put_u32(self.timestamp);
        b.extend_from_slice(&self.payload);
        b.freeze()
    }

    /// Parses a flow message (at least 5 bytes). The payload shares `data`.
    pub fn decode(data: &Bytes) -> Result<Self, MessageError> {
        if data.len() < 5 {
            return Err(MessageError::Truncated);
        }
        Ok(RtmpMessage {
            message_type: data[0],
            timestamp: u32::from_be_bytes([data[1], data[2], data[3], data[4]]),
            payload: data.slice(5..),
        })
    }

    /// Parses a flow message from a slice (copies the payload).
    pub fn decode_slice(data: &[u8]) -> Result<Self, MessageError> {
        Self::decode(&Bytes::copy_from_slice(data))
    }

    /// Whether this is an RTMP Chunk Stream protocol control message (types 1,
    /// 2, 3, 5, 6), which must be ignored over RTMFP (§5.1).
    pub fn is_chunk_control(&self) -> bool {
        matches!(self.message_type, 1 | 2 | 3 | 5 | 6)
    }

    /// Decodes the typed body.
    pub fn body(&self) -> Result<Body, MessageError> {
        Body::decode(self.message_type, &self.payload)
    }
}

/// A User Control event (RTMP message type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserControl {
    /// Stream Begin (0).
    StreamBegin(u32),
    /// Stream EOF (1).
    StreamEof(u32),
    /// Stream Dry (2).
    StreamDry(u32),
    /// Set Buffer Length (3).
    SetBufferLength {
        /// The stream.
        stream_id: u32,
        /// Buffer length in milliseconds.
        buffer_ms: u32,
    },
    /// Stream Is Recorded (4).
    StreamIsRecorded(u32),
    /// Ping Request (6).
    PingRequest(u32),
    /// Ping Response (7).
    PingResponse(u32),
    /// Buffer Empty (31).
    BufferEmpty(u32),
    /// Buffer Ready (32).
    BufferReady(u32),
    /// Flow Synchronization (34, RFC 7425 §5.2): a barrier across `count`
    /// flows of the same association tree.
    FlowSync {
        /// The barrier's identifier.
        sync_id: u32,
        /// Number of flows synchronised (at least 1).
        count: u32,
    },
    /// Set Keepalive Timers (41, RFC 7425 §5.3.4).
    SetKeepalive {
        /// Advised keepalive period with the server (ms).
        server_ms: u32,
        /// Advised keepalive period with peers (ms).
        peer_ms: u32,
    },
    /// Any other event, or a known one whose data is malformed.
    Other {
        /// Event type.
        event_type: u16,
        /// Event data.
        data: Bytes,
    },
}

fn be32(d: &[u8], i: usize) -> Option<u32> {
    d.get(i..i + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

impl UserControl {
    /// Encodes the message payload (event type + data).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10);
        let (ty, a, b): (u16, Option<u32>, Option<u32>) = match *self {
            UserControl::StreamBegin(s) => (UC_STREAM_BEGIN, Some(s), None),
            UserControl::StreamEof(s) => (UC_STREAM_EOF, Some(s), None),
            UserControl::StreamDry(s) => (UC_STREAM_DRY, Some(s), None),
            UserControl::SetBufferLength {
                stream_id,
                buffer_ms,
            } => (UC_SET_BUFFER_LENGTH, Some(stream_id), Some(buffer_ms)),
            UserControl::StreamIsRecorded(s) => (UC_STREAM_IS_RECORDED, Some(s), None),
            UserControl::PingRequest(t) => (UC_PING_REQUEST, Some(t), None),
            UserControl::PingResponse(t) => (UC_PING_RESPONSE, Some(t), None),
            UserControl::BufferEmpty(s) => (UC_BUFFER_EMPTY, Some(s), None),
            UserControl::BufferReady(s) => (UC_BUFFER_READY, Some(s), None),
            UserControl::FlowSync { sync_id, count } => (UC_FLOW_SYNC, Some(sync_id), Some(count)),
            UserControl::SetKeepalive { server_ms, peer_ms } => {
                (UC_SET_KEEPALIVE, Some(server_ms), Some(peer_ms))
            }
            UserControl::Other {
                event_type,
                ref data,
            } => {
                out.extend_from_slice(&event_type.to_be_bytes());
                out.extend_from_slice(data);
                return out;
            }
        };
        out.extend_from_slice(&ty.to_be_bytes());
        for v in [a, b].into_iter().flatten() {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    /// Decodes a User Control payload. Known events with short data decode as
    /// [`UserControl::Other`]; extra bytes after known data are ignored.
    pub fn decode(payload: &[u8]) -> Result<Self, MessageError> {
        if payload.len() < 2 {
            return Err(MessageError::Truncated);
        }
        let ty = u16::from_be_bytes([payload[0], payload[1]]);
        let d = &payload[2..];
        let one = be32(d, 0);
        let two = one.zip(be32(d, 4));
        let ev = match (ty, one, two) {
            (UC_STREAM_BEGIN, Some(s), _) => UserControl::StreamBegin(s),
            (UC_STREAM_EOF, Some(s), _) => UserControl::StreamEof(s),
            (UC_STREAM_DRY, Some(s), _) => UserControl::StreamDry(s),
            (UC_SET_BUFFER_LENGTH, _, Some((stream_id, buffer_ms))) => {
                UserControl::SetBufferLength {
                    stream_id,
                    buffer_ms,
                }
            }
            (UC_STREAM_IS_RECORDED, Some(s), _) => UserControl::StreamIsRecorded(s),
            (UC_PING_REQUEST, Some(t), _) => UserControl::PingRequest(t),
            (UC_PING_RESPONSE, Some(t), _) => UserControl::PingResponse(t),
            (UC_BUFFER_EMPTY, Some(s), _) => UserControl::BufferEmpty(s),
            (UC_BUFFER_READY, Some(s), _) => UserControl::BufferReady(s),
            (UC_FLOW_SYNC, _, Some((sync_id, count))) => UserControl::FlowSync { sync_id, count },
            (UC_SET_KEEPALIVE, _, Some((server_ms, peer_ms))) => {
                UserControl::SetKeepalive { server_ms, peer_ms }
            }
            _ => UserControl::Other {
                event_type: ty,
                data: Bytes::copy_from_slice(d),
            },
        };
        Ok(ev)
    }
}

/// The typed payload of an RTMP message.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Type 4.
    UserControl(UserControl),
    /// Type 8: an FLV AUDIODATA tag body.
    Audio(Bytes),
    /// Type 9: an FLV VIDEODATA tag body.
    Video(Bytes),
    /// Type 18 (`amf3 == false`) or 15 (`amf3 == true`).
    Data {
        /// The message.
        message: DataMessage,
        /// Sent as type 15 (format byte 0x00, values may switch to AMF3).
        amf3: bool,
    },
    /// Type 20 (`amf3 == false`) or 17 (`amf3 == true`).
    Command {
        /// The command.
        command: Command,
        /// Sent as type 17 (format byte 0x00, values may switch to AMF3).
        amf3: bool,
    },
    /// Any other type (including chunk-stream control types, which must be
    /// ignored over RTMFP).
    Other {
        /// RTMP message type.
        message_type: u8,
        /// The payload.
        payload: Bytes,
    },
}

impl Body {
    /// An AMF0 (type 20) command.
    pub fn command(command: Command) -> Self {
        Body::Command {
            command,
            amf3: false,
        }
    }

    /// An AMF0 (type 18) data message.
    pub fn data(message: DataMessage) -> Self {
        Body::Data {
            message,
            amf3: false,
        }
    }

    /// The RTMP message type of this body.
    pub fn message_type(&self) -> u8 {
        match self {
            Body::UserControl(_) => MSG_USER_CONTROL,
            Body::Audio(_) => MSG_AUDIO,
            Body::Video(_) => MSG_VIDEO,
            Body::Data { amf3: false, .. } => MSG_DATA_AMF0,
            Body::Data { amf3: true, .. } => MSG_DATA_AMF3,
            Body::Command { amf3: false, .. } => MSG_COMMAND_AMF0,
            Body::Command { amf3: true, .. } => MSG_COMMAND_AMF3,
            Body::Other { message_type, .. } => *message_type,
        }
    }

    /// Encodes to `(message type, payload)`. Extended (AMF3) forms switch every
    /// value after the header to AMF3 ([`Amf3Switch::AfterHeader`]).
    pub fn encode(&self) -> Result<(u8, Bytes), MessageError> {
        let payload: Bytes = match self {
            Body::UserControl(u) => u.encode().into(),
            Body::Audio(b) | Body::Video(b) => b.clone(),
            Body::Data { message, amf3 } => if *amf3 {
                message.to_amf3(Amf3Switch::AfterHeader)?
            } else {
                message.to_amf0()?
            }
            .into(),
            Body::Command { command, amf3 } => if *amf3 {
                command.to_amf3(Amf3Switch::AfterHeader)?
            } else {
                command.to_amf0()?
            }
            .into(),
            Body::Other { payload, .. } => payload.clone(),
        };
        Ok((self.message_type(), payload))
    }

    /// Decodes the payload of a message of type `message_type`. Never panics.
    pub fn decode(message_type: u8, payload: &Bytes) -> Result<Self, MessageError> {
        Ok(match message_type {
            MSG_USER_CONTROL => Body::UserControl(UserControl::decode(payload)?),
            MSG_AUDIO => Body::Audio(payload.clone()),
            MSG_VIDEO => Body::Video(payload.clone()),
            MSG_DATA_AMF0 => Body::data(DataMessage::from_amf0(payload)?),
            MSG_DATA_AMF3 => Body::Data {
                message: DataMessage::from_amf3(payload)?,
                amf3: true,
            },
            MSG_COMMAND_AMF0 => Body::command(Command::from_amf0(payload)?),
            MSG_COMMAND_AMF3 => Body::Command {
                command: Command::from_amf3(payload)?,
                amf3: true,
            },
            _ => Body::Other {
                message_type,
                payload: payload.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flash_amf::Value;

    #[test]
    fn framing_known_bytes() {
        let m = RtmpMessage::new(MSG_VIDEO, 0x01020304, Bytes::from_static(b"\x17\x01"));
        assert_eq!(&m.encode()[..], b"\x09\x01\x02\x03\x04\x17\x01");
        assert_eq!(RtmpMessage::decode(&m.encode()).unwrap(), m);
        assert!(matches!(
            RtmpMessage::decode_slice(b"\x09\x00\x00\x00"),
            Err(MessageError::Truncated)
        ));
    }

    #[test]
    fn rfc7425_user_control_events() {
        let sync = UserControl::FlowSync {
            sync_id: 8,
            count: 2,
        };
        assert_eq!(sync.encode(), b"\x00\x22\x00\x00\x00\x08\x00\x00\x00\x02");
        assert_eq!(UserControl::decode(&sync.encode()).unwrap(), sync);
        let ka = UserControl::SetKeepalive {
            server_ms: 15000,
            peer_ms: 10000,
        };
        assert_eq!(ka.encode(), b"\x00\x29\x00\x00\x3a\x98\x00\x00\x27\x10");
        assert_eq!(UserControl::decode(&ka.encode()).unwrap(), ka);
        assert_eq!(
            UserControl::decode(b"\x00\x00\x00\x00\x00\x05").unwrap(),
            UserControl::StreamBegin(5)
        );
        assert!(matches!(
            UserControl::decode(b"\x00\x22\x00").unwrap(),
            UserControl::Other { event_type: 34, .. }
        ));
    }

    #[test]
    fn amf3_command_has_format_byte() {
        let c = Command::new("createStream", 2.0, Value::Null);
        let m = RtmpMessage::from_body(
            0,
            &Body::Command {
                command: c.clone(),
                amf3: true,
            },
        )
        .unwrap();
        assert_eq!(m.message_type, 17);
        assert_eq!(m.payload[0], 0);
        assert_eq!(
            m.body().unwrap(),
            Body::Command {
                command: c,
                amf3: true
            }
        );
    }
}
