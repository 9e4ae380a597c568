//! Wire syntax of RFC 7016 §2: elementary types, VLUs, options, addresses,
//! the packet header and every chunk type.
//!
//! Parsers borrow from the input, check every bound and return
//! [`WireError`]; they never panic and never allocate more than the input
//! justifies. Encoders append to a `Vec<u8>`.

mod chunk;
mod packet;

pub use chunk::*;
pub use packet::*;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A syntax error found while parsing wire data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before the structure did.
    #[error("truncated input")]
    Truncated,
    /// A VLU does not fit in 64 bits.
    #[error("VLU overflows 64 bits")]
    VluOverflow,
    /// A field holds a value the syntax forbids.
    #[error("invalid value: {0}")]
    Invalid(&'static str),
}

/// Bounds-checked reader over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Whether everything was consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    /// Current offset from the start.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let s = self.bytes(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let s = self.bytes(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// Reads `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Reads everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    /// Reads a VLU (RFC 7016 §2.1.2).
    pub fn vlu(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        loop {
            let b = self.u8()?;
            if value > (u64::MAX >> 7) {
                return Err(WireError::VluOverflow);
            }
            value = (value << 7) | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
    }
    /// Reads a VLU length followed by that many bytes.
    pub fn vlu_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.vlu()?;
        let n = usize::try_from(n).map_err(|_| WireError::Truncated)?;
        self.bytes(n)
    }
    /// Reads an [`Address`] (RFC 7016 §2.1.5).
    pub fn address(&mut self) -> Result<Address, WireError> {
        let flags = self.u8()?;
        let origin = AddressOrigin::from_bits(flags & 0x03);
        let ip = if flags & 0x80 != 0 {
            let b = self.bytes(16)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            let b = self.bytes(4)?;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        };
        let port = self.u16()?;
        Ok(Address {
            addr: SocketAddr::new(ip, port),
            origin,
        })
    }
    /// Reads one option (RFC 7016 §2.1.3); `None` is a Marker.
    pub fn option(&mut self) -> Result<Option<(u64, &'a [u8])>, WireError> {
        let body = self.vlu_bytes()?;
        if body.is_empty() {
            return Ok(None);
        }
        let mut r = Reader::new(body);
        let ty = r.vlu()?;
        Ok(Some((ty, r.rest())))
    }
}

/// Number of bytes the VLU encoding of `v` takes.
pub fn vlu_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Appends the VLU encoding of `v`.
pub fn put_vlu(out: &mut Vec<u8>, v: u64) {
    let n = vlu_len(v);
    for i in (0..n).rev() {
        let digit = ((v >> (7 * i)) & 0x7f) as u8;
        out.push(if i == 0 { digit } else { digit | 0x80 });
    }
}

/// Appends a VLU length and the bytes.
pub fn put_vlu_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_vlu(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends an option (type and value) with its length.
pub fn put_option(out: &mut Vec<u8>, ty: u64, value: &[u8]) {
    put_vlu(out, (vlu_len(ty) + value.len()) as u64);
    put_vlu(out, ty);
    out.extend_from_slice(value);
}

/// Encoded size of an option.
pub fn option_len(ty: u64, value_len: usize) -> usize {
    let body = vlu_len(ty) + value_len;
    vlu_len(body as u64) + body
}

/// Iterates over an option list (RFC 7016 §2.1.4) that runs to the end of
/// `buf` (no terminating Marker expected; a Marker ends it early).
pub fn options(buf: &[u8]) -> impl Iterator<Item = Result<(u64, &[u8]), WireError>> {
    let mut r = Reader::new(buf);
    let mut done = false;
    std::iter::from_fn(move || {
        if done || r.is_empty() {
            return None;
        }
        match r.option() {
            Ok(Some(o)) => Some(Ok(o)),
            Ok(None) => {
                done = true;
                None
            }
            Err(e) => {
                done = true;
                Some(Err(e))
            }
        }
    })
}

/// Origin tag of an [`Address`] (RFC 7016 §2.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressOrigin {
    /// Unknown or other.
    Unknown,
    /// Reported by its owner as a local interface address.
    Local,
    /// Observed as a packet's source address (reflexive).
    Public,
    /// A relay, proxy or introducer.
    Relay,
}

impl AddressOrigin {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => Self::Unknown,
            1 => Self::Local,
            2 => Self::Public,
            _ => Self::Relay,
        }
    }
    fn bits(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Local => 1,
            Self::Public => 2,
            Self::Relay => 3,
        }
    }
}

/// An Internet socket address with its origin (RFC 7016 §2.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    /// The socket address.
    pub addr: SocketAddr,
    /// Where the address came from.
    pub origin: AddressOrigin,
}

impl Address {
    /// Encodes the address.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self.addr.ip() {
            IpAddr::V4(ip) => {
                out.push(self.origin.bits());
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(0x80 | self.origin.bits());
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&self.addr.port().to_be_bytes());
    }
    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        if self.addr.is_ipv4() {
            7
        } else {
            19
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vlu_examples() {
        let mut v = Vec::new();
        put_vlu(&mut v, 0);
        assert_eq!(v, [0]);
        v.clear();
        put_vlu(&mut v, 127);
        assert_eq!(v, [0x7f]);
        v.clear();
        put_vlu(&mut v, 128);
        assert_eq!(v, [0x81, 0x00]);
        v.clear();
        put_vlu(&mut v, u64::MAX);
        assert_eq!(v.len(), 10);
        assert_eq!(Reader::new(&v).vlu(), Ok(u64::MAX));
        // 11 bytes of continuation overflow
        assert_eq!(Reader::new(&[0xff; 11]).vlu(), Err(WireError::VluOverflow));
        assert_eq!(Reader::new(&[0x81]).vlu(), Err(WireError::Truncated));
    }

    proptest! {
        #[test]
        fn vlu_round_trip(x: u64) {
            let mut v = Vec::new();
            put_vlu(&mut v, x);
            prop_assert_eq!(v.len(), vlu_len(x));
            let mut r = Reader::new(&v);
            prop_assert_eq!(r.vlu().unwrap(), x);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn address_round_trip(v6: bool, a: [u8; 16], port: u16, o in 0u8..4) {
            let ip = if v6 { IpAddr::V6(Ipv6Addr::from(a)) } else { IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])) };
            let addr = Address { addr: SocketAddr::new(ip, port), origin: AddressOrigin::from_bits(o) };
            let mut v = Vec::new();
            addr.encode(&mut v);
            prop_assert_eq!(v.len(), addr.encoded_len());
            prop_assert_eq!(Reader::new(&v).address().unwrap(), addr);
        }

        #[test]
        fn reader_never_panics(data: Vec<u8>) {
            let mut r = Reader::new(&data);
            let _ = r.vlu();
            let _ = r.address();
            let _ = r.option();
            for o in options(&data) { let _ = o; }
        }
    }
}
