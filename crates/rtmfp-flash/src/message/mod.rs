//! The Flash message layer of RFC 7425 §5: RTMP messages over RTMFP flows.
//!
//! Codec parts, usable by clients and servers alike (no state, never panic on
//! arbitrary input):
//!
//! * [`FlowMetadata`]: the `"TC"` flow User Metadata (§5.1.1) carrying the RTMP
//!   stream ID and the receive-intent hint.
//! * [`RtmpMessage`]: the §5.1.2 framing of one RTMP message in one flow message
//!   (`type u8 | timestamp u32 | payload`), and [`Body`], its typed payload:
//!   [`UserControl`] events (including Flow Synchronization, event 34, §5.2, and
//!   Set Keepalive Timers, event 41, §5.3.4), audio and video (FLV tag bodies),
//!   data messages (types 18 / 15) and command messages (types 20 / 17).
//! * [`parse_connect_url`]: the application named by a connecting client's EPD,
//!   whether it is a whole `rtmfp://host/app` URI or only the app name.
//!
//! On top of them, [`NetConnection`] is a sans-IO client state machine for the
//! §5.3 client-to-server connection (connect, calls, streams, publish / play,
//! media) driven over an [`rtmfp::Endpoint`] session.
//!
//! [`ServerConnection`] is the server half: a sans-IO per-session state
//! machine for the server side of the NetConnection (accepting or rejecting
//! `connect`, answering calls, `createStream`, reporting publish / play and
//! media, sending `onStatus`, user control events and relayed media); see its
//! module documentation for the server's flow layout.
//!
//! [`PeerPublisher`] and [`PeerPlayer`] are the two halves of direct
//! peer-to-peer NetStreams (§5.4, Flash's `NetStream.DIRECT_CONNECTIONS`);
//! see their module documentation for the P2P flow layout.
//!
//! Flow association (§5.3.2, §5.3.5) is an engine matter: a flow is opened
//! "in return" to a receiving flow with
//! [`Endpoint::open_flow`](rtmfp::Endpoint::open_flow)'s `association`, and the
//! engine reports it as [`Event::IncomingFlow`](rtmfp::Event::IncomingFlow)'s
//! `association`. The client's NetConnection control flow has stream ID 0 and
//! no association; the server answers with return flows for stream ID 0
//! associated to it, the first of which is the canonical server control flow to
//! which every further client flow is associated.
//!
//! ```
//! use bytes::Bytes;
//! use flash_amf::{Command, Value};
//! use rtmfp_flash::message::{Body, FlowMetadata, RtmpMessage, UserControl};
//!
//! // the NetConnection control flow's metadata: "TC", SID flag, stream 0
//! assert_eq!(FlowMetadata::control().encode(), b"TC\x04\x00");
//! // a command in a flow message: type 20, timestamp 0, AMF0 values
//! let m = RtmpMessage::from_body(0, &Body::command(Command::new("createStream", 2.0, Value::Null))).unwrap();
//! let wire: Bytes = m.encode();
//! assert_eq!(&wire[..5], b"\x14\x00\x00\x00\x00");
//! // RFC 7425 §5.2 flow synchronisation
//! let sync = RtmpMessage::decode_slice(b"\x04\0\0\0\0\x00\x22\0\0\0\x08\0\0\0\x02").unwrap();
//! assert_eq!(sync.body().unwrap(), Body::UserControl(UserControl::FlowSync { sync_id: 8, count: 2 }));
//! ```

mod client;
pub mod group_join;
mod metadata;
mod peer;
mod rtmp;
mod server;
mod slot;
mod sync;
mod url;

pub use client::{NcEvent, NcState, NetConnection, Status, TraceEntry};
pub use metadata::{FlowMetadata, ReceiveIntent, TC_SIGNATURE};
pub use peer::{
    PeerEvent, PeerPlayer, PeerPublisher, PlayerEvent, MAX_PEER_EVENTS, MAX_PEER_STREAMS,
    MAX_PEER_SUBSCRIBERS,
};
pub use rtmp::{
    Body, RtmpMessage, UserControl, MSG_AUDIO, MSG_USER_CONTROL, MSG_VIDEO, UC_BUFFER_EMPTY,
    UC_BUFFER_READY, UC_FLOW_SYNC, UC_PING_REQUEST, UC_PING_RESPONSE, UC_SET_BUFFER_LENGTH,
    UC_SET_KEEPALIVE, UC_STREAM_BEGIN, UC_STREAM_DRY, UC_STREAM_EOF, UC_STREAM_IS_RECORDED,
};
pub use server::{
    MediaKind, ServerConnection, ServerEvent, MAX_COMMAND_SIZE, MAX_GROUPS, MAX_PEER_ADDRESSES,
    MAX_QUEUED_EVENTS, MAX_QUEUED_MEDIA_BYTES, MAX_RECV_FLOWS, MAX_STREAMS, REJECT_GRACE,
};
pub use sync::{SyncBarriers, MAX_PENDING_BARRIERS};
pub use url::{parse_connect_url, ConnectUrl};

/// Errors of the message layer codecs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The input ended early.
    #[error("truncated")]
    Truncated,
    /// Flow metadata without the `"TC"` signature.
    #[error("not an RTMP message flow (no \"TC\" signature)")]
    NotTc,
    /// `"TC"` metadata without a stream ID (a receiver should reject the flow).
    #[error("no stream ID in the flow metadata")]
    NoStreamId,
    /// A value out of range (for example a stream ID above 2^32-1).
    #[error("value out of range")]
    OutOfRange,
    /// A command or data message whose AMF payload does not decode.
    #[error("AMF: {0}")]
    Amf(#[from] flash_amf::Error),
}
