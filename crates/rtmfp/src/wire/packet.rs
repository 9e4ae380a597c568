//! Multiplex layer and plain packet header (RFC 7016 §2.2.2, §2.2.4).

use super::{Chunk, Reader, WireError};

/// Packet mode (RFC 7016 §2.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Sent by the original initiator of a session.
    Initiator = 1,
    /// Sent by the original responder of a session.
    Responder = 2,
    /// Session startup.
    Startup = 3,
}

/// Header flag: Time Critical Forward Notification.
pub const FLAG_TC: u8 = 0x80;
/// Header flag: Time Critical Reverse Notification.
pub const FLAG_TCR: u8 = 0x40;
/// Header flag: timestamp present.
pub const FLAG_TS: u8 = 0x08;
/// Header flag: timestamp echo present.
pub const FLAG_TSE: u8 = 0x04;

/// The common header of a plain packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    /// Time critical forward notification.
    pub time_critical: bool,
    /// Time critical reverse notification.
    pub time_critical_reverse: bool,
    /// Packet mode.
    pub mode: Mode,
    /// Sender's 250 Hz timestamp.
    pub timestamp: Option<u16>,
    /// Echo of the far end's timestamp.
    pub timestamp_echo: Option<u16>,
}

impl PacketHeader {
    /// A startup-mode header without timestamps.
    pub fn startup() -> Self {
        Self {
            time_critical: false,
            time_critical_reverse: false,
            mode: Mode::Startup,
            timestamp: None,
            timestamp_echo: None,
        }
    }
    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        1 + 2 * usize::from(self.timestamp.is_some())
            + 2 * usize::from(self.timestamp_echo.is_some())
    }
    /// Appends the header.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = self.mode as u8;
        if self.time_critical {
            flags |= FLAG_TC;
        }
        if self.time_critical_reverse {
            flags |= FLAG_TCR;
        }
        if self.timestamp.is_some() {
            flags |= FLAG_TS;
        }
        if self.timestamp_echo.is_some() {
            flags |= FLAG_TSE;
        }
        out.push(flags);
        if let Some(t) = self.timestamp {
            out.extend_from_slice(&t.to_be_bytes());
        }
        if let Some(t) = self.timestamp_echo {
            out.extend_from_slice(&t.to_be_bytes());
        }
    }
}

/// A parsed plain packet: header and the raw chunk area.
#[derive(Debug, Clone)]
pub struct Packet<'a> {
    /// The header.
    pub header: PacketHeader,
    chunks: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses a plain (decrypted) packet. Mode 0 is rejected.
    pub fn parse(plain: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(plain);
        let flags = r.u8()?;
        let mode = match flags & 3 {
            1 => Mode::Initiator,
            2 => Mode::Responder,
            3 => Mode::Startup,
            _ => return Err(WireError::Invalid("packet mode 0")),
        };
        let timestamp = if flags & FLAG_TS != 0 {
            Some(r.u16()?)
        } else {
            None
        };
        let timestamp_echo = if flags & FLAG_TSE != 0 {
            Some(r.u16()?)
        } else {
            None
        };
        Ok(Self {
            header: PacketHeader {
                time_critical: flags & FLAG_TC != 0,
                time_critical_reverse: flags & FLAG_TCR != 0,
                mode,
                timestamp,
                timestamp_echo,
            },
            chunks: r.rest(),
        })
    }

    /// Iterates over the chunks: `(type, result of parsing the payload)`.
    /// Iteration stops at padding (fewer than 3 bytes left, or a length that
    /// does not fit).
    pub fn chunks(&self) -> ChunkIter<'a> {
        ChunkIter { rest: self.chunks }
    }
}

/// Iterator over the chunks of a [`Packet`].
#[derive(Debug, Clone)]
pub struct ChunkIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ChunkIter<'a> {
    type Item = (u8, Result<Chunk<'a>, WireError>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 3 {
            return None;
        }
        let ty = self.rest[0];
        let len = usize::from(u16::from_be_bytes([self.rest[1], self.rest[2]]));
        if self.rest.len() - 3 < len {
            return None;
        }
        let payload = &self.rest[3..3 + len];
        self.rest = &self.rest[3 + len..];
        Some((ty, Chunk::parse(ty, payload)))
    }
}

/// Computes the scrambled session ID for an encrypted packet body
/// (RFC 7016 §2.2.2).
pub fn scramble_session_id(session_id: u32, encrypted: &[u8]) -> u32 {
    let mut w = [0u8; 8];
    let n = encrypted.len().min(8);
    w[..n].copy_from_slice(&encrypted[..n]);
    session_id
        ^ u32::from_be_bytes([w[0], w[1], w[2], w[3]])
        ^ u32::from_be_bytes([w[4], w[5], w[6], w[7]])
}

/// Splits a datagram into `(session ID, encrypted packet)`, or `None` if it
/// is shorter than 4 bytes.
pub fn demultiplex(datagram: &[u8]) -> Option<(u32, &[u8])> {
    if datagram.len() < 4 {
        return None;
    }
    let (ssid, enc) = datagram.split_at(4);
    let ssid = u32::from_be_bytes([ssid[0], ssid[1], ssid[2], ssid[3]]);
    Some((scramble_session_id(ssid, enc), enc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_round_trip(tc: bool, tcr: bool, m in 1u8..4, ts: Option<u16>, tse: Option<u16>) {
            let h = PacketHeader {
                time_critical: tc,
                time_critical_reverse: tcr,
                mode: match m { 1 => Mode::Initiator, 2 => Mode::Responder, _ => Mode::Startup },
                timestamp: ts,
                timestamp_echo: tse,
            };
            let mut v = Vec::new();
            h.encode(&mut v);
            prop_assert_eq!(v.len(), h.encoded_len());
            prop_assert_eq!(Packet::parse(&v).unwrap().header, h);
        }

        #[test]
        fn scramble_is_involution(sid: u32, body: Vec<u8>) {
            let ssid = scramble_session_id(sid, &body);
            let mut d = ssid.to_be_bytes().to_vec();
            d.extend_from_slice(&body);
            prop_assert_eq!(demultiplex(&d).unwrap().0, sid);
        }

        #[test]
        fn packet_parse_never_panics(data: Vec<u8>) {
            if let Ok(p) = Packet::parse(&data) {
                for (_, c) in p.chunks() { let _ = c; }
            }
        }
    }
}
