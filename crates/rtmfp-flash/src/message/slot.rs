//! Pieces shared by the server and peer-to-peer stream state machines.

use bytes::Bytes;

use super::{Body, RtmpMessage};

/// A sending flow slot: not opened, open, or refused by the far end (then
/// it is never reopened, RFC 7425 §5.3.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Slot {
    #[default]
    None,
    Open(u64),
    Refused,
}

impl Slot {
    /// The open flow, if any.
    pub(super) fn flow(self) -> Option<u64> {
        match self {
            Slot::Open(f) => Some(f),
            _ => None,
        }
    }
}

/// One RTMP message framed for a flow (`type | timestamp | body`).
pub(super) fn encode(timestamp: u32, body: &Body) -> Result<Bytes, rtmfp::Error> {
    Ok(RtmpMessage::from_body(timestamp, body)
        .map_err(|_| rtmfp::Error::TooLarge)?
        .encode())
}
