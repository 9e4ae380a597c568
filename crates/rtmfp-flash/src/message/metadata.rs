//! RFC 7425 §5.1.1 flow metadata.

use rtmfp::wire::{put_vlu, Reader};

use super::MessageError;

/// The signature beginning the User Metadata of an RTMP message flow.
pub const TC_SIGNATURE: [u8; 2] = *b"TC";

const FLAG_SID: u8 = 0x04;
const FLAG_RXI: u8 = 0x01;

/// The sender's hint about how the receiver should take delivery (RXI bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ReceiveIntent {
    /// Original queuing order (RXI = 0): control flows, data.
    #[default]
    Sequence,
    /// Network arrival order (RXI = 1): live, delay-sensitive media.
    Network,
}

/// The User Metadata of an RTMP message flow: `"TC"`, flags, stream ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowMetadata {
    /// The RTMP stream ID of every message on the flow (0: NetConnection).
    pub stream_id: u32,
    /// The receive-order hint.
    pub receive_intent: ReceiveIntent,
}

impl FlowMetadata {
    /// Metadata for stream `stream_id`, original queuing order.
    pub fn new(stream_id: u32) -> Self {
        FlowMetadata {
            stream_id,
            receive_intent: ReceiveIntent::Sequence,
        }
    }

    /// Metadata of a NetConnection control flow (stream 0, original order).
    pub fn control() -> Self {
        Self::new(0)
    }

    /// Builder: sets the receive intent.
    pub fn with_intent(mut self, receive_intent: ReceiveIntent) -> Self {
        self.receive_intent = receive_intent;
        self
    }

    /// Encodes the metadata (`'T' 'C' flags VLU(streamID)`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8);
        out.extend_from_slice(&TC_SIGNATURE);
        let rxi = match self.receive_intent {
            ReceiveIntent::Sequence => 0,
            ReceiveIntent::Network => FLAG_RXI,
        };
        out.push(FLAG_SID | rxi);
        put_vlu(&mut out, u64::from(self.stream_id));
        out
    }

    /// Decodes flow metadata. Reserved bits and bytes after the stream ID are
    /// ignored. A flow whose metadata fails here should be rejected (§5.1.1):
    /// [`MessageError::NotTc`] for another signature,
    /// [`MessageError::NoStreamId`] when the stream ID is absent.
    pub fn decode(metadata: &[u8]) -> Result<Self, MessageError> {
        if metadata.len() < 2 || metadata[..2] != TC_SIGNATURE {
            return Err(MessageError::NotTc);
        }
        let mut r = Reader::new(&metadata[2..]);
        let flags = r.u8().map_err(|_| MessageError::Truncated)?;
        if flags & FLAG_SID == 0 {
            return Err(MessageError::NoStreamId);
        }
        let sid = r.vlu().map_err(|_| MessageError::Truncated)?;
        let stream_id = u32::try_from(sid).map_err(|_| MessageError::OutOfRange)?;
        let receive_intent = if flags & FLAG_RXI != 0 {
            ReceiveIntent::Network
        } else {
            ReceiveIntent::Sequence
        };
        Ok(FlowMetadata {
            stream_id,
            receive_intent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        assert_eq!(FlowMetadata::control().encode(), b"TC\x04\x00");
        let m = FlowMetadata::new(200).with_intent(ReceiveIntent::Network);
        assert_eq!(m.encode(), b"TC\x05\x81\x48");
        assert_eq!(FlowMetadata::decode(b"TC\x05\x81\x48").unwrap(), m);
        assert!(matches!(
            FlowMetadata::decode(b"TX\x04\x00"),
            Err(MessageError::NotTc)
        ));
        assert!(matches!(
            FlowMetadata::decode(b"TC\x00"),
            Err(MessageError::NoStreamId)
        ));
        assert!(matches!(
            FlowMetadata::decode(b"TC\x04"),
            Err(MessageError::Truncated)
        ));
        assert!(matches!(
            FlowMetadata::decode(b"TC"),
            Err(MessageError::Truncated)
        ));
        assert!(matches!(
            FlowMetadata::decode(b"TC\x04\x90\x80\x80\x80\x00"),
            Err(MessageError::OutOfRange)
        ));
        // reserved bits ignored
        assert_eq!(
            FlowMetadata::decode(b"TC\xfe\x05").unwrap(),
            FlowMetadata::new(5)
        );
    }
}
