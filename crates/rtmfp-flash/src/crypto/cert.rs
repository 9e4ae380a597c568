//! Certificates (RFC 7425 §4.3): format, options, fingerprint (peer ID),
//! authenticity.

use std::fmt;
use std::str::FromStr;

use rtmfp::wire::put_option;
use sha2::{Digest, Sha256};

use super::options::{put_vlu_option, vlu_and_rest, vlu_value, Item, Items};

/// Certificate option: Hostname (§4.3.3.1).
pub const CERT_HOSTNAME: u64 = 0x00;
/// Certificate option: Accepts Ancillary Data (§4.3.3.2).
pub const CERT_ACCEPTS_ANCILLARY_DATA: u64 = 0x0a;
/// Certificate option: Extra Randomness (§4.3.3.3).
pub const CERT_EXTRA_RANDOMNESS: u64 = 0x0e;
/// Certificate option: Supported Ephemeral Diffie-Hellman Group (§4.3.3.4).
pub const CERT_SUPPORTED_EPHEMERAL_GROUP: u64 = 0x15;
/// Certificate option: Static Diffie-Hellman Public Key (§4.3.3.5).
pub const CERT_STATIC_PUBLIC_KEY: u64 = 0x1d;

/// Why a certificate is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// Not a well-formed option list, or an option value is malformed.
    #[error("malformed certificate")]
    Malformed,
    /// More than one Hostname option (§4.3.3.1).
    #[error("more than one hostname")]
    DuplicateHostname,
    /// Both ephemeral groups and static keys (§4.3.3.4, §4.3.3.5).
    #[error("both ephemeral groups and static keys")]
    MixedKeyModes,
}

/// The decoded canonical section of a certificate (options after the first
/// marker that must be in the canonical section are ignored, as are
/// unknown options).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Certificate {
    /// Hostname (§4.3.3.1).
    pub hostname: Option<Vec<u8>>,
    /// Accepts Ancillary Data (§4.3.3.2).
    pub accepts_ancillary_data: bool,
    /// Extra Randomness (§4.3.3.3), the first one.
    pub extra_randomness: Option<Vec<u8>>,
    /// Supported ephemeral DH group IDs (§4.3.3.4), in order.
    pub ephemeral_groups: Vec<u64>,
    /// Static DH public keys `(group ID, key)` (§4.3.3.5), in order.
    pub static_keys: Vec<(u64, Vec<u8>)>,
}

impl Certificate {
    /// Decodes a certificate.
    pub fn parse(raw: &[u8]) -> Result<Self, CertificateError> {
        let mut c = Certificate::default();
        let mut canonical = true;
        for item in Items::new(raw) {
            let item = item.map_err(|_| CertificateError::Malformed)?;
            let (ty, v) = match item {
                Item::Marker => {
                    canonical = false;
                    continue;
                }
                Item::Option(ty, v) => (ty, v),
            };
            match ty {
                CERT_EXTRA_RANDOMNESS if c.extra_randomness.is_none() => {
                    c.extra_randomness = Some(v.to_vec());
                }
                CERT_EXTRA_RANDOMNESS => {}
                _ if !canonical => {}
                CERT_HOSTNAME => {
                    if c.hostname.is_some() {
                        return Err(CertificateError::DuplicateHostname);
                    }
                    c.hostname = Some(v.to_vec());
                }
                CERT_ACCEPTS_ANCILLARY_DATA => c.accepts_ancillary_data = true,
                CERT_SUPPORTED_EPHEMERAL_GROUP => {
                    let g = vlu_value(v).map_err(|_| CertificateError::Malformed)?;
                    c.ephemeral_groups.push(g);
                }
                CERT_STATIC_PUBLIC_KEY => {
                    let (g, key) = vlu_and_rest(v).map_err(|_| CertificateError::Malformed)?;
                    c.static_keys.push((g, key.to_vec()));
                }
                _ => {}
            }
        }
        if !c.ephemeral_groups.is_empty() && !c.static_keys.is_empty() {
            return Err(CertificateError::MixedKeyModes);
        }
        Ok(c)
    }

    /// Encodes the certificate; everything goes in the canonical section,
    /// in the order hostname, ancillary data, groups, keys, randomness.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(h) = &self.hostname {
            put_option(&mut out, CERT_HOSTNAME, h);
        }
        if self.accepts_ancillary_data {
            put_option(&mut out, CERT_ACCEPTS_ANCILLARY_DATA, &[]);
        }
        for &g in &self.ephemeral_groups {
            put_vlu_option(&mut out, CERT_SUPPORTED_EPHEMERAL_GROUP, g, &[]);
        }
        for (g, key) in &self.static_keys {
            put_vlu_option(&mut out, CERT_STATIC_PUBLIC_KEY, *g, key);
        }
        if let Some(r) = &self.extra_randomness {
            put_option(&mut out, CERT_EXTRA_RANDOMNESS, r);
        }
        out
    }

    /// Whether the certificate has static DH public keys.
    pub fn is_static(&self) -> bool {
        !self.static_keys.is_empty()
    }

    /// Whether the certificate has a key mode at all (static keys or
    /// ephemeral groups).
    pub fn has_keying(&self) -> bool {
        self.is_static() || !self.ephemeral_groups.is_empty()
    }

    /// The static public key for a group (the first one, §4.3.3.5).
    pub fn static_key(&self, group: u64) -> Option<&[u8]> {
        self.static_keys
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, k)| k.as_slice())
    }

    /// Whether the certificate offers a group for key agreement.
    pub fn supports_group(&self, group: u64) -> bool {
        if self.is_static() {
            self.static_key(group).is_some()
        } else {
            self.ephemeral_groups.contains(&group)
        }
    }
}

/// Length of the canonical section of a certificate (§4.3.1): everything
/// before the first marker. `None` if the certificate is malformed.
pub fn canonical_len(raw: &[u8]) -> Option<usize> {
    let mut items = Items::new(raw);
    loop {
        let at = items.position();
        match items.next() {
            None => return Some(at),
            Some(Ok(Item::Marker)) => return Some(at),
            Some(Ok(Item::Option(..))) => {}
            Some(Err(_)) => return None,
        }
    }
}

/// A certificate's fingerprint (§4.3.2), the peer ID: SHA-256 of its
/// canonical section. A malformed certificate (never authentic) is hashed
/// whole so that the function stays total and deterministic.
pub fn fingerprint(raw: &[u8]) -> PeerId {
    let n = canonical_len(raw).unwrap_or(raw.len());
    PeerId(Sha256::digest(&raw[..n]).into())
}

/// A peer ID: the 32-byte certificate fingerprint (§4.3.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hexadecimal (64 characters), as Flash shows peer IDs.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.to_hex())
    }
}

/// A string that is not 64 hexadecimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a peer ID is 64 hexadecimal digits")]
pub struct PeerIdParseError;

impl FromStr for PeerId {
    type Err = PeerIdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = hex_decode(s).ok_or(PeerIdParseError)?;
        Ok(PeerId(b.try_into().map_err(|_| PeerIdParseError)?))
    }
}

/// Lowercase hex of bytes.
pub fn hex_encode(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

/// Bytes of a hex string (either case), or `None`.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}
