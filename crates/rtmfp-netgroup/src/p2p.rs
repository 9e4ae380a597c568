//! NetGroup messages between members (peer-to-peer group sessions).
//!
//! Flash-compatible messages (layouts from our NetGroup notes, re-checked
//! against decrypted captures of librtmfp members):
//!
//! | flow metadata | carries |
//! |---|---|
//! | `"GR" 1C` (no association) | group connect `01`, `02`, begin `0E`/`0F`, report `0A`, ask-close `0C` |
//! | `"GR" 11` (in return to the peer's 1C flow), one per stream | announce / end `21`, fragments map `22`, push mask `23`, pull `2B` |
//! | `"GR" 12` (in return to the peer's 11 flow of that stream) | media fragments `20` / `30` `10` `00` |
//!
//! Nimbus's own messages (posting, routing, object replication — Flash's
//! wire form for them is unknown) travel on a separate flow with metadata
//! [`NIMBUS_METADATA`], which Flash and librtmfp reject without harm; see
//! [`NimbusMessage`].

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rtmfp::wire::{put_vlu, Address, AddressOrigin, Reader};
use sha2::Sha256;

use rtmfp_flash::message::group_join::GroupWireError;

/// A reader of `msg` past its first byte, the message type, which must be
/// `expected`.
fn reader_of(msg: &[u8], expected: u8) -> Result<Reader<'_>, GroupWireError> {
    let mut r = Reader::new(msg);
    match r.u8()? {
        t if t == expected => Ok(r),
        t => Err(GroupWireError::UnexpectedType(t)),
    }
}

/// Metadata of the report / main flow.
pub const META_REPORT: &[u8] = b"GR\x1c";
/// Metadata of a media report flow (one per stream).
pub const META_MEDIA: &[u8] = b"GR\x11";
/// Metadata of a media fragments flow.
pub const META_FRAGMENTS: &[u8] = b"GR\x12";
/// Metadata of Nimbus's posting / routing / replication flow.
pub const NIMBUS_METADATA: &[u8] = b"NG\x01";

/// Group connect.
pub const MSG_CONNECT: u8 = 0x01;
/// Sent before begin (meaning unknown; ignored).
pub const MSG_DATA: u8 = 0x02;
/// Report.
pub const MSG_REPORT: u8 = 0x0a;
/// Ask close.
pub const MSG_ASK_CLOSE: u8 = 0x0c;
/// Begin.
pub const MSG_BEGIN: u8 = 0x0e;
/// Begin, receive mode NEAREST.
pub const MSG_BEGIN_NEAREST: u8 = 0x0f;
/// Stream announce or end of media.
pub const MSG_ANNOUNCE: u8 = 0x21;
/// Fragments map.
pub const MSG_MAP: u8 = 0x22;
/// Push mask.
pub const MSG_PUSH: u8 = 0x23;
/// Pull request.
pub const MSG_PULL: u8 = 0x2b;
/// Whole fragment.
pub const FRAG_WHOLE: u8 = 0x20;
/// First part of a split message.
pub const FRAG_FIRST: u8 = 0x30;
/// Middle part.
pub const FRAG_MIDDLE: u8 = 0x10;
/// Last part.
pub const FRAG_LAST: u8 = 0x00;

/// Largest fragment ID accepted from peers (2^48: 89 years at 100
/// fragments a second), so that ID arithmetic never overflows.
pub const MAX_FRAGMENT_ID: u64 = 1 << 48;

/// Largest stream name (bytes) in an announce.
pub const MAX_STREAM_NAME: usize = 255;

/// Largest media payload in one fragment (larger messages are split).
pub const MAX_FRAGMENT_PAYLOAD: usize = 959;
/// Most bytes of a fragments map bitmap we send or accept.
pub const MAX_MAP_BYTES: usize = 4096;

/// The group connect key a sender puts in its `01` message:
/// HMAC-SHA256(key = groupspec text, msg = receiver's session nonce), where
/// the session nonce is RFC 7425's HMAC-SHA256(DH secret, receiver's keying
/// component) — `SessionInfo::far_nonce` on the sending side and
/// `SessionInfo::near_nonce` on the receiving side.
pub fn connect_key(group_text: &str, receiver_session_nonce: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(group_text.as_bytes())
        .expect("HMAC takes any key length");
    m.update(receiver_session_nonce);
    m.finalize().into_bytes().into()
}

/// A group connect message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConnect {
    /// The group ID (compared as lowercase hex on the wire).
    pub group_id: [u8; 32],
    /// The connect key.
    pub key: [u8; 32],
    /// The receiver's peer ID.
    pub receiver: [u8; 32],
}

fn hex_lower(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[usize::from(x >> 4)] as char);
        s.push(H[usize::from(x & 15)] as char);
    }
    s
}

fn unhex32(s: &[u8]) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let d = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        *o = d(s[2 * i])? << 4 | d(s[2 * i + 1])?;
    }
    Some(out)
}

impl GroupConnect {
    /// Encodes `01 | 41 00 <hex id> | 21 01 <key> | 23 03 21 0F <receiver>`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(137);
        out.push(MSG_CONNECT);
        out.extend_from_slice(&[0x41, 0x00]);
        out.extend_from_slice(hex_lower(&self.group_id).as_bytes());
        out.extend_from_slice(&[0x21, 0x01]);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&[0x23, 0x03, 0x21, 0x0f]);
        out.extend_from_slice(&self.receiver);
        out
    }

    /// Parses a group connect message.
    pub fn parse(msg: &[u8]) -> Result<Self, GroupWireError> {
        let mut r = reader_of(msg, MSG_CONNECT)?;
        if r.bytes(2)? != [0x41, 0x00] {
            return Err(GroupWireError::Malformed("group connect: no group ID"));
        }
        let group_id = unhex32(r.bytes(64)?).ok_or(GroupWireError::Malformed("group ID hex"))?;
        if r.bytes(2)? != [0x21, 0x01] {
            return Err(GroupWireError::Malformed("group connect: no key"));
        }
        let key = r.bytes(32)?.try_into().expect("32 bytes");
        if r.bytes(4)? != [0x23, 0x03, 0x21, 0x0f] {
            return Err(GroupWireError::Malformed("group connect: no peer ID"));
        }
        let receiver = r.bytes(32)?.try_into().expect("32 bytes");
        Ok(GroupConnect {
            group_id,
            key,
            receiver,
        })
    }
}

/// One member listed in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportEntry {
    /// Peer ID.
    pub peer: [u8; 32],
    /// Seconds since the sender last heard of it.
    pub seconds: u64,
    /// Its addresses (a [`AddressOrigin::Relay`] one is its server).
    pub addresses: Vec<Address>,
}

/// A group report `0A`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The receiver's address as the sender sees it.
    pub seen: Option<Address>,
    /// The sender's server and own addresses.
    pub sender_addresses: Vec<Address>,
    /// Members (the best list the sender computed for the receiver).
    pub entries: Vec<ReportEntry>,
}

/// Most entries accepted from one report.
pub const MAX_REPORT_ENTRIES: usize = 256;
/// Most addresses kept per entry.
pub const MAX_ENTRY_ADDRESSES: usize = 8;

fn put_addresses(out: &mut Vec<u8>, addrs: &[Address]) {
    let len: usize = 1 + addrs.iter().map(Address::encoded_len).sum::<usize>();
    put_vlu(out, len as u64);
    out.push(0x0a);
    for a in addrs {
        a.encode(out);
    }
}

fn read_addresses(body: &[u8], max: usize) -> Vec<Address> {
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    while !r.is_empty() {
        match r.address() {
            Ok(a) => {
                if out.len() < max {
                    out.push(a);
                }
            }
            Err(_) => break,
        }
    }
    out
}

impl Report {
    /// Encodes the report.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.entries.len() * 60);
        out.push(MSG_REPORT);
        if let Some(seen) = &self.seen {
            out.push((1 + seen.encoded_len()) as u8);
            out.push(0x0d);
            seen.encode(&mut out);
        }
        put_addresses(&mut out, &self.sender_addresses);
        out.push(0x00);
        for e in &self.entries {
            out.push(0x22);
            out.extend_from_slice(&[0x21, 0x0f]);
            out.extend_from_slice(&e.peer);
            put_vlu(&mut out, e.seconds);
            put_addresses(&mut out, &e.addresses);
            out.push(0x00);
        }
        out
    }

    /// Parses a report, tolerating what Flash and librtmfp send (leading
    /// `01 xx` items, a missing seen address, trailing bytes).
    pub fn parse(msg: &[u8]) -> Result<Self, GroupWireError> {
        let mut r = reader_of(msg, MSG_REPORT)?;
        let mut rep = Report::default();
        // header options until the 00 separator: `len type value`
        let mut guard = 0;
        loop {
            guard += 1;
            if guard > 16 {
                return Err(GroupWireError::Malformed("report header"));
            }
            let len = r.vlu()? as usize;
            if len == 0 {
                break;
            }
            let body = r.bytes(len)?;
            let (ty, value) = body.split_first().ok_or(GroupWireError::Truncated)?;
            match ty {
                0x0d => rep.seen = Reader::new(value).address().ok(),
                0x0a => rep.sender_addresses = read_addresses(value, MAX_ENTRY_ADDRESSES),
                _ => {}
            }
        }
        while r.remaining() > 4 && rep.entries.len() < MAX_REPORT_ENTRIES {
            let idlen = r.u8()?;
            if idlen == 0 {
                continue;
            }
            let raw = r.bytes(usize::from(idlen))?;
            if idlen != 0x22 || raw[..2] != [0x21, 0x0f] {
                // an item we do not know: its length was idlen; skip the rest of the report
                break;
            }
            let seconds = r.vlu()?;
            let len = r.vlu()? as usize;
            let body = r.bytes(len)?;
            let addresses = match body.split_first() {
                Some((0x0a, rest)) => read_addresses(rest, MAX_ENTRY_ADDRESSES),
                _ => Vec::new(),
            };
            rep.entries.push(ReportEntry {
                peer: raw[2..].try_into().expect("32 bytes"),
                seconds,
                addresses,
            });
        }
        Ok(rep)
    }
}

/// Stream parameters carried in an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamParams {
    /// Availability (map) send to all neighbours.
    pub send_to_all: bool,
    /// Window duration (ms).
    pub window_ms: u64,
    /// Availability update period (ms).
    pub update_period_ms: u64,
    /// Fetch period (ms).
    pub fetch_period_ms: u64,
}

impl Default for StreamParams {
    fn default() -> Self {
        StreamParams {
            send_to_all: false,
            window_ms: 8000,
            update_period_ms: 100,
            fetch_period_ms: 2500,
        }
    }
}

/// A multicast stream announce (`21 …`) or end of media (`21 <id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaAnnounce {
    /// A stream: name, 32-byte key, parameters.
    Stream {
        /// Stream name.
        name: String,
        /// Stream key (the 32 bytes after `21 01`).
        key: [u8; 32],
        /// Parameters.
        params: StreamParams,
    },
    /// The stream ended: the first fragment ID that will never exist.
    End(u64),
}

fn put_param(out: &mut Vec<u8>, ty: u8, v: u64) {
    let mut b = Vec::with_capacity(4);
    put_vlu(&mut b, v);
    out.push((1 + b.len()) as u8);
    out.push(ty);
    out.extend_from_slice(&b);
}

impl MediaAnnounce {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(MSG_ANNOUNCE);
        match self {
            MediaAnnounce::End(id) => put_vlu(&mut out, *id),
            MediaAnnounce::Stream { name, key, params } => {
                let mut n = name.len().min(MAX_STREAM_NAME);
                while !name.is_char_boundary(n) {
                    n -= 1;
                }
                let name = &name.as_bytes()[..n];
                put_vlu(&mut out, (name.len() + 1) as u64);
                out.push(0x00);
                out.extend_from_slice(name);
                out.extend_from_slice(&[0x21, 0x01]);
                out.extend_from_slice(key);
                out.extend_from_slice(&[0x01, 0x02]);
                put_param(&mut out, 0x03, params.window_ms);
                put_param(&mut out, 0x04, 300_000);
                put_param(&mut out, 0x05, params.update_period_ms);
                put_param(&mut out, 0x07, params.fetch_period_ms);
                if params.send_to_all {
                    // after the others: librtmfp stops reading at 06
                    out.extend_from_slice(&[0x01, 0x06]);
                }
            }
        }
        out
    }

    /// Parses the message.
    pub fn parse(msg: &[u8]) -> Result<Self, GroupWireError> {
        let mut r = reader_of(msg, MSG_ANNOUNCE)?;
        if r.remaining() < 0x24 {
            let id = r.vlu()?;
            if id > MAX_FRAGMENT_ID {
                return Err(GroupWireError::Malformed("fragment ID out of range"));
            }
            return Ok(MediaAnnounce::End(id));
        }
        let nlen = r.vlu()? as usize;
        let nbody = r.bytes(nlen)?;
        let (&ty, name) = nbody.split_first().ok_or(GroupWireError::Truncated)?;
        if ty != 0 {
            return Err(GroupWireError::Malformed("announce: no name"));
        }
        let name = std::str::from_utf8(name)
            .map_err(|_| GroupWireError::Malformed("announce: name is not UTF-8"))?
            .to_owned();
        if r.bytes(2)? != [0x21, 0x01] {
            return Err(GroupWireError::Malformed("announce: no stream key"));
        }
        let key = r.bytes(32)?.try_into().expect("32 bytes");
        let mut params = StreamParams::default();
        while !r.is_empty() {
            let len = usize::from(r.u8()?);
            if len == 0 {
                continue;
            }
            let body = r.bytes(len)?;
            let ty = body[0];
            let v = if body.len() > 1 {
                Reader::new(&body[1..]).vlu().unwrap_or(0)
            } else {
                0
            };
            match ty {
                0x03 => params.window_ms = v.min(600_000),
                0x05 => params.update_period_ms = v.clamp(10, 10_000),
                0x06 => params.send_to_all = true,
                0x07 => params.fetch_period_ms = v.clamp(10, 60_000),
                _ => {}
            }
        }
        Ok(MediaAnnounce::Stream { name, key, params })
    }
}

/// Encodes a fragments map: `22 <last> <bitmap>`; `has(id)` tells whether
/// fragment `id` (below `last`) is held; ids down to `first` are described.
pub fn encode_map(last: u64, first: u64, has: impl Fn(u64) -> bool) -> Vec<u8> {
    let span = last.saturating_sub(first.max(1)) as usize;
    let nbytes = span.div_ceil(8).min(MAX_MAP_BYTES);
    let mut out = Vec::with_capacity(10 + nbytes);
    out.push(MSG_MAP);
    put_vlu(&mut out, last);
    for k in 0..nbytes {
        let mut b = 0u8;
        for i in 0..8 {
            let off = (8 * k + i) as u64 + 1;
            if off > last {
                break;
            }
            let id = last - off;
            if id >= first.max(1) && has(id) {
                b |= 1 << i;
            }
        }
        out.push(b);
    }
    out
}

/// A parsed fragments map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FragmentMap {
    /// The newest fragment held.
    pub last: u64,
    /// Bitmap (see [`FragmentMap::has`]).
    pub bitmap: Bytes,
}

impl FragmentMap {
    /// Parses `22 <last> <bitmap>`.
    pub fn parse(msg: &[u8]) -> Result<Self, GroupWireError> {
        let mut r = reader_of(msg, MSG_MAP)?;
        let last = r.vlu()?;
        if last > MAX_FRAGMENT_ID {
            return Err(GroupWireError::Malformed("fragment ID out of range"));
        }
        let rest = r.rest();
        let bitmap = Bytes::copy_from_slice(&rest[..rest.len().min(MAX_MAP_BYTES)]);
        Ok(FragmentMap { last, bitmap })
    }

    /// Whether the map says fragment `id` is held.
    pub fn has(&self, id: u64) -> bool {
        if id == 0 || id > self.last {
            return false;
        }
        if id == self.last {
            return true;
        }
        let off = self.last - 1 - id;
        let (k, i) = ((off / 8) as usize, off % 8);
        self.bitmap.get(k).is_some_and(|b| b & (1 << i) != 0)
    }
}

/// A media fragment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Marker: [`FRAG_WHOLE`], [`FRAG_FIRST`], [`FRAG_MIDDLE`], [`FRAG_LAST`].
    pub marker: u8,
    /// Fragment ID.
    pub id: u64,
    /// Parts that follow (first and middle parts).
    pub left: u8,
    /// RTMP message type (whole and first parts).
    pub message_type: u8,
    /// Timestamp (whole and first parts).
    pub timestamp: u32,
    /// Offset of the payload in the message.
    pub payload_at: usize,
}

impl FragmentHeader {
    /// Parses the header of a fragment message.
    pub fn parse(msg: &[u8]) -> Result<Self, GroupWireError> {
        let mut r = Reader::new(msg);
        let marker = r.u8()?;
        let id = r.vlu()?;
        if id == 0 || id > MAX_FRAGMENT_ID {
            return Err(GroupWireError::Malformed("fragment ID out of range"));
        }
        let (left, message_type, timestamp) = match marker {
            FRAG_WHOLE => (0, r.u8()?, r.u32()?),
            FRAG_FIRST => {
                let left = r.u8()?;
                (left, r.u8()?, r.u32()?)
            }
            FRAG_MIDDLE => (r.u8()?, 0, 0),
            FRAG_LAST => (0, 0, 0),
            t => return Err(GroupWireError::UnexpectedType(t)),
        };
        Ok(FragmentHeader {
            marker,
            id,
            left,
            message_type,
            timestamp,
            payload_at: r.position(),
        })
    }
}

/// Splits one media message into fragment messages with consecutive IDs
/// from `first_id`.
pub fn split_media(
    first_id: u64,
    message_type: u8,
    timestamp: u32,
    payload: &[u8],
) -> Vec<Vec<u8>> {
    let head = |out: &mut Vec<u8>, marker: u8, id: u64| {
        out.push(marker);
        put_vlu(out, id);
    };
    if payload.len() <= MAX_FRAGMENT_PAYLOAD {
        let mut m = Vec::with_capacity(payload.len() + 10);
        head(&mut m, FRAG_WHOLE, first_id);
        m.push(message_type);
        m.extend_from_slice(&timestamp.to_be_bytes());
        m.extend_from_slice(payload);
        return vec![m];
    }
    let parts: Vec<&[u8]> = payload.chunks(MAX_FRAGMENT_PAYLOAD).collect();
    let n = parts.len().min(256);
    let mut out = Vec::with_capacity(n);
    for (i, part) in parts.iter().take(n).enumerate() {
        let id = first_id + i as u64;
        let left = (n - 1 - i) as u8;
        let mut m = Vec::with_capacity(part.len() + 12);
        if i == 0 {
            head(&mut m, FRAG_FIRST, id);
            m.push(left);
            m.push(message_type);
            m.extend_from_slice(&timestamp.to_be_bytes());
        } else if left > 0 {
            head(&mut m, FRAG_MIDDLE, id);
            m.push(left);
        } else {
            head(&mut m, FRAG_LAST, id);
        }
        m.extend_from_slice(part);
        out.push(m);
    }
    out
}

/// Most parts one media message may be split into (256 × 959 bytes).
pub const MAX_PARTS: usize = 256;

/// Nimbus's own group messages (on the [`NIMBUS_METADATA`] flow). All
/// integers are RTMFP VLUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NimbusMessage {
    /// `01 <32-byte message ID> <payload>`: a post, flooded to every
    /// member once (the ID is SHA-256 of the payload, as Flash's
    /// messageID is derived from the message).
    Post {
        /// Message ID.
        id: [u8; 32],
        /// The posted message (application-encoded, AMF by convention).
        payload: Bytes,
    },
    /// `02 <32-byte destination group address> <hops> <32-byte origin group
    /// address> <payload>`: routed toward the member nearest the
    /// destination (sendToNearest).
    Route {
        /// Destination group address.
        dest: [u8; 32],
        /// Hops so far.
        hops: u8,
        /// Origin group address.
        origin: [u8; 32],
        /// Message.
        payload: Bytes,
    },
    /// `03 <32-byte origin group address> <payload>`: to this neighbour only.
    Neighbor {
        /// Origin group address.
        origin: [u8; 32],
        /// Message.
        payload: Bytes,
    },
    /// `04 <count> (<start> <end>)*`: the sender's whole "have" set of
    /// object indices, as inclusive ranges.
    Have(Vec<(u64, u64)>),
    /// `05 <index>`: asks for object `index`.
    Want(u64),
    /// `06 <index> <object>`: object `index`.
    Object {
        /// Index.
        index: u64,
        /// The object.
        object: Bytes,
    },
    /// `07 <index>`: the sender will not send object `index`.
    Deny(u64),
}

/// Most ranges in a [`NimbusMessage::Have`].
pub const MAX_HAVE_RANGES: usize = 1024;

impl NimbusMessage {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            NimbusMessage::Post { id, payload } => {
                out.push(1);
                out.extend_from_slice(id);
                out.extend_from_slice(payload);
            }
            NimbusMessage::Route {
                dest,
                hops,
                origin,
                payload,
            } => {
                out.push(2);
                out.extend_from_slice(dest);
                out.push(*hops);
                out.extend_from_slice(origin);
                out.extend_from_slice(payload);
            }
            NimbusMessage::Neighbor { origin, payload } => {
                out.push(3);
                out.extend_from_slice(origin);
                out.extend_from_slice(payload);
            }
            NimbusMessage::Have(ranges) => {
                out.push(4);
                let n = ranges.len().min(MAX_HAVE_RANGES);
                put_vlu(&mut out, n as u64);
                for &(a, b) in &ranges[..n] {
                    put_vlu(&mut out, a);
                    put_vlu(&mut out, b);
                }
            }
            NimbusMessage::Want(i) => {
                out.push(5);
                put_vlu(&mut out, *i);
            }
            NimbusMessage::Object { index, object } => {
                out.push(6);
                put_vlu(&mut out, *index);
                out.extend_from_slice(object);
            }
            NimbusMessage::Deny(i) => {
                out.push(7);
                put_vlu(&mut out, *i);
            }
        }
        out
    }

    /// Parses a message (`data` is the whole flow message).
    pub fn parse(data: &Bytes) -> Result<Self, GroupWireError> {
        let mut r = Reader::new(data);
        let t = r.u8()?;
        let a32 = |r: &mut Reader<'_>| -> Result<[u8; 32], GroupWireError> {
            Ok(r.bytes(32)?.try_into().expect("32 bytes"))
        };
        Ok(match t {
            1 => {
                let id = a32(&mut r)?;
                NimbusMessage::Post {
                    id,
                    payload: data.slice(r.position()..),
                }
            }
            2 => {
                let dest = a32(&mut r)?;
                let hops = r.u8()?;
                let origin = a32(&mut r)?;
                NimbusMessage::Route {
                    dest,
                    hops,
                    origin,
                    payload: data.slice(r.position()..),
                }
            }
            3 => {
                let origin = a32(&mut r)?;
                NimbusMessage::Neighbor {
                    origin,
                    payload: data.slice(r.position()..),
                }
            }
            4 => {
                let n = r.vlu()? as usize;
                if n > MAX_HAVE_RANGES {
                    return Err(GroupWireError::Malformed("too many ranges"));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let a = r.vlu()?;
                    let b = r.vlu()?;
                    if b < a {
                        return Err(GroupWireError::Malformed("empty range"));
                    }
                    v.push((a, b));
                }
                NimbusMessage::Have(v)
            }
            5 => NimbusMessage::Want(r.vlu()?),
            6 => {
                let index = r.vlu()?;
                NimbusMessage::Object {
                    index,
                    object: data.slice(r.position()..),
                }
            }
            7 => NimbusMessage::Deny(r.vlu()?),
            t => return Err(GroupWireError::UnexpectedType(t)),
        })
    }
}

/// Builds an [`Address`] for a socket address with an origin.
pub fn address(addr: std::net::SocketAddr, origin: AddressOrigin) -> Address {
    Address { addr, origin }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_round_trip() {
        let c = GroupConnect {
            group_id: [0x76; 32],
            key: [1; 32],
            receiver: [2; 32],
        };
        let m = c.encode();
        assert_eq!(m.len(), 137);
        assert_eq!(&m[..5], &[1, 0x41, 0, b'7', b'6']);
        assert_eq!(GroupConnect::parse(&m).unwrap(), c);
        for n in 0..m.len() {
            assert!(GroupConnect::parse(&m[..n]).is_err());
        }
    }

    #[test]
    fn report_matches_capture() {
        // `0A 08 0D 02 7F000001 8A87 08 0A 03 7F000001 078F 00 22 21 0F <32> 01 01 0A 00`
        let mut m = vec![0x0a, 0x08, 0x0d, 0x02, 127, 0, 0, 1, 0x8a, 0x87];
        m.extend_from_slice(&[0x08, 0x0a, 0x03, 127, 0, 0, 1, 0x07, 0x8f, 0x00]);
        m.extend_from_slice(&[0x22, 0x21, 0x0f]);
        m.extend_from_slice(&[0x19; 32]);
        m.extend_from_slice(&[0x01, 0x01, 0x0a, 0x00]);
        let r = Report::parse(&m).unwrap();
        assert_eq!(r.seen.unwrap().addr, "127.0.0.1:35463".parse().unwrap());
        assert_eq!(r.sender_addresses.len(), 1);
        assert_eq!(r.sender_addresses[0].origin, AddressOrigin::Relay);
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.entries[0].peer, [0x19; 32]);
        assert_eq!(r.entries[0].seconds, 1);
        assert_eq!(r.encode(), m);
    }

    #[test]
    fn announce_matches_capture() {
        let a = MediaAnnounce::Stream {
            name: "test123".into(),
            key: [0xfe; 32],
            params: StreamParams::default(),
        };
        let m = a.encode();
        assert_eq!(m.len(), 62);
        assert_eq!(
            &m[..9],
            &[0x21, 0x08, 0x00, b't', b'e', b's', b't', b'1', b'2']
        );
        assert_eq!(
            &m[44..],
            &[
                0x01, 0x02, 0x03, 0x03, 0xbe, 0x40, 0x04, 0x04, 0x92, 0xa7, 0x60, 0x02, 0x05, 0x64,
                0x03, 0x07, 0x93, 0x44
            ]
        );
        assert_eq!(MediaAnnounce::parse(&m).unwrap(), a);
        assert_eq!(
            MediaAnnounce::parse(&[0x21, 0x91, 0x68]).unwrap(),
            MediaAnnounce::End(2280)
        );
    }

    #[test]
    fn maps_match_capture() {
        let m = FragmentMap::parse(&[0x22, 0x13, 0x80, 0x80]).unwrap();
        let held: Vec<u64> = (1..=19).filter(|&i| m.has(i)).collect();
        assert_eq!(held, vec![3, 11, 19]);
        let enc = encode_map(19, 1, |i| i == 3 || i == 11);
        assert_eq!(enc, vec![0x22, 0x13, 0x80, 0x80, 0x00]);
        let full = encode_map(20, 1, |_| true);
        assert_eq!(full, vec![0x22, 0x14, 0xff, 0xff, 0x07]);
    }

    #[test]
    fn split_matches_notes() {
        let p = vec![7u8; 2000];
        let parts = split_media(7, 9, 40, &p);
        assert_eq!(parts.len(), 3);
        assert_eq!(&parts[0][..8], &[0x30, 7, 2, 9, 0, 0, 0, 40]);
        assert_eq!(&parts[1][..3], &[0x10, 8, 1]);
        assert_eq!(&parts[2][..2], &[0x00, 9]);
        assert_eq!(parts[2].len(), 2 + 82);
        let h = FragmentHeader::parse(&parts[0]).unwrap();
        assert_eq!(
            (h.left, h.message_type, h.timestamp, h.payload_at),
            (2, 9, 40, 8)
        );
    }

    #[test]
    fn nimbus_round_trip() {
        for m in [
            NimbusMessage::Post {
                id: [1; 32],
                payload: Bytes::from_static(b"hi"),
            },
            NimbusMessage::Route {
                dest: [2; 32],
                hops: 3,
                origin: [4; 32],
                payload: Bytes::from_static(b"x"),
            },
            NimbusMessage::Neighbor {
                origin: [5; 32],
                payload: Bytes::new(),
            },
            NimbusMessage::Have(vec![(0, 4), (9, 9)]),
            NimbusMessage::Want(300),
            NimbusMessage::Object {
                index: 2,
                object: Bytes::from_static(b"obj"),
            },
            NimbusMessage::Deny(7),
        ] {
            let e = Bytes::from(m.encode());
            assert_eq!(NimbusMessage::parse(&e).unwrap(), m);
        }
    }
}
