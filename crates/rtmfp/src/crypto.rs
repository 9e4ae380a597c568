//! The Cryptography Profile interface (RFC 7016 §2.2.3, §3.2, §3.5.1) and a
//! plain profile for tests.
//!
//! RFC 7016 leaves packet encryption, certificates, endpoint discriminators
//! and key agreement to an application-defined *Cryptography Profile*. This
//! module mirrors that contract as traits; `rtmfp-flash` provides the RFC 7425
//! profile. [`PlainProfile`] provides no confidentiality and must only be used
//! for tests, benchmarks and trusted networks.

use std::fmt::Debug;
use std::ops::Range;

use rand_core::RngCore;

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A packet failed integrity or authenticity checks.
    #[error("packet failed verification")]
    BadPacket,
    /// A packet was a duplicate (replay protection).
    #[error("duplicate packet")]
    Duplicate,
    /// A certificate is not acceptable.
    #[error("certificate rejected: {0}")]
    BadCertificate(String),
    /// A keying component is not acceptable.
    #[error("keying rejected: {0}")]
    BadKeying(String),
    /// A signature is not valid.
    #[error("bad signature")]
    BadSignature,
    /// The operation was not carried out (a keying job abandoned by its
    /// worker pool, say).
    #[error("not carried out")]
    Abandoned,
}

/// Packet encryption and verification for one key (the Default Session Key
/// or one session's negotiated keys).
pub trait PacketCrypto: Send + Debug {
    /// Encrypts in place: `buf[start..]` holds a plain packet (RFC 7016
    /// §2.2.4); on return `buf[start..]` holds the encrypted packet. The
    /// implementation may insert or append bytes (padding, checksums, MACs).
    fn encrypt(&mut self, buf: &mut Vec<u8>, start: usize);
    /// Decrypts and verifies `buf` in place; returns the range of `buf` that
    /// holds the plain packet. Must discard (return an error for) packets
    /// that fail verification.
    fn decrypt(&mut self, buf: &mut [u8]) -> Result<Range<usize>, CryptoError>;
    /// The most bytes [`encrypt`](Self::encrypt) can ever add to a plain
    /// packet with this key. The engine reads it once per session to size
    /// packets, so it must be an upper bound for the session's lifetime
    /// (e.g. include the longest session sequence number).
    fn overhead(&self) -> usize;
}

/// Keys and nonces of an established session (RFC 7016 §3.5).
#[derive(Debug)]
pub struct SessionKeys {
    /// Packet crypto for this session (both directions).
    pub crypto: Box<dyn PacketCrypto>,
    /// This end's session nonce.
    pub near_nonce: Vec<u8>,
    /// The far end's session nonce.
    pub far_nonce: Vec<u8>,
}

/// Initiator state between sending IIKeying and receiving RIKeying.
pub trait InitiatorHandshake: Send + Debug {
    /// The Session Key Initiator Component to send in IIKeying.
    fn skic(&self) -> &[u8];
    /// Signs the IIKeying's initiatorSignedParameters.
    fn sign(&self, signed_parameters: &[u8]) -> Vec<u8>;
    /// Verifies the RIKeying (`responder_signed` is the signed portion
    /// followed by the SKIC, per §2.3.8) and computes the session keys.
    fn complete(
        self: Box<Self>,
        skrc: &[u8],
        responder_signed: &[u8],
        signature: &[u8],
    ) -> Result<SessionKeys, CryptoError>;
}

/// Responder state while building RIKeying.
pub trait ResponderHandshake: Send + Debug {
    /// The Session Key Responder Component to send in RIKeying.
    fn skrc(&self) -> &[u8];
    /// Signs the responderSignedParameters (signed portion followed by SKIC).
    fn sign(&self, responder_signed: &[u8]) -> Vec<u8>;
    /// The session keys.
    fn into_keys(self: Box<Self>) -> SessionKeys;
}

/// What a responder received in an IIKeying.
#[derive(Debug, Clone, Copy)]
pub struct IIKeyingInput<'a> {
    /// The initiator's certificate.
    pub certificate: &'a [u8],
    /// The Session Key Initiator Component.
    pub skic: &'a [u8],
    /// initiatorSignedParameters.
    pub signed: &'a [u8],
    /// The signature.
    pub signature: &'a [u8],
}

/// An RTMFP Cryptography Profile (RFC 7016 §2.2.3 and §3.2). All
/// identity functions must be deterministic.
///
/// The endpoint shares its profile with responder keying jobs that may run
/// on other threads ([`KeyingJob`](crate::KeyingJob)), so every method takes
/// `&self`: a profile that keeps state (a cache of ephemeral keys, say)
/// guards it itself.
pub trait CryptoProfile: Send + Sync + Debug {
    /// A fresh packet crypto for the well-known Default Session Key.
    fn default_session_crypto(&self) -> Box<dyn PacketCrypto>;
    /// The near end's certificate (sent in RHello and IIKeying).
    fn certificate(&self) -> &[u8];
    /// Whether an Endpoint Discriminator selects the near end.
    fn epd_selects_near(&self, epd: &[u8]) -> bool;
    /// Whether an Endpoint Discriminator selects a certificate.
    fn epd_selects(&self, epd: &[u8], certificate: &[u8]) -> bool;
    /// Whether a far certificate is authentic and acceptable.
    fn is_authentic(&self, certificate: &[u8]) -> bool;
    /// The Canonical Endpoint Discriminator of a certificate.
    fn canonical_epd(&self, certificate: &[u8]) -> Vec<u8>;
    /// Glare (§3.5.1.3): whether the far identity prevails over the near one.
    fn far_prevails(&self, far_certificate: &[u8]) -> bool;
    /// Session override (§3.2): whether a new incoming session from `new`
    /// replaces an existing session with `existing`. The engine finds
    /// candidates by certificate, so it asks this (and compares canonical
    /// EPDs for duplicates) only for bitwise-identical certificates, as
    /// RFC 7016 recommends.
    fn overrides(&self, existing: &[u8], new: &[u8]) -> bool {
        existing == new
    }
    /// Starts initiator keying toward a responder certificate.
    fn begin_initiator(
        &self,
        responder_certificate: &[u8],
        rng: &mut dyn RngCore,
    ) -> Result<Box<dyn InitiatorHandshake>, CryptoError>;
    /// Verifies an IIKeying and starts responder keying.
    fn respond(
        &self,
        iikeying: IIKeyingInput<'_>,
        rng: &mut dyn RngCore,
    ) -> Result<Box<dyn ResponderHandshake>, CryptoError>;
    /// A responder answered our IHello but then went silent after our
    /// IIKeying, or sent an RIKeying we could not use: switch this end, for
    /// this and every later handshake, to an identity more responders
    /// understand, if the profile has one and has not switched yet
    /// (Flash: a certificate with one static key, the way MonaServer2
    /// reads it). Returns a description for the log; `None` (the default)
    /// when there is nothing to fall back to. The engine then starts the
    /// opening again, once, with a new IHello.
    fn fall_back(&self) -> Option<String> {
        None
    }
}

/// A profile without confidentiality, for tests, benchmarks and trusted
/// networks, wire-compatible with the `PlainCryptoAdapter` of the RFC
/// author's implementation (zenomt/rtmfp-cpp), so that the RFC 7016 layer
/// can be tested against an independent implementation.
///
/// * A packet is sent in the clear followed by sixteen 0xff bytes (padding,
///   skipped by the chunk parser) and a 16-bit big-endian checksum: the
///   Internet checksum ([`internet_checksum`]) of everything before it, plus a
///   16-bit *salt* once the session is keyed.
/// * Each end's keying component (SKIC / SKRC) is 2 random bytes: the salt
///   the *other* end adds to the checksum of every session packet it sends
///   to this end. Startup packets (including RIKeying) are unsalted.
/// * The certificate, the Endpoint Discriminator and the canonical EPD are
///   the raw identity bytes; an EPD selects a certificate when the bytes are
///   equal; a certificate is authentic when it is not empty.
/// * The signature is the single byte `X` and is not checked.
/// * Glare: the lexicographically smaller identity prevails.
#[derive(Debug, Clone)]
pub struct PlainProfile {
    certificate: Vec<u8>,
}

impl PlainProfile {
    /// A plain profile whose identity is `certificate`.
    pub fn new(certificate: impl Into<Vec<u8>>) -> Self {
        Self {
            certificate: certificate.into(),
        }
    }
}

/// The Internet checksum as RTMFP implementations compute it (RFC 1071
/// one's-complement sum of big-endian 16-bit words, folded and
/// complemented), except that an odd final byte is added as the *low* byte
/// of a word, as rtmfp-cpp, librtmfp and Flash do.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Packet crypto of [`PlainProfile`]: padding, checksum and salts.
#[derive(Debug, Clone, Default)]
pub struct PlainPacketCrypto {
    /// Salt added to the checksum of packets we send.
    pub tx_salt: u16,
    /// Salt the far end adds to packets it sends us.
    pub rx_salt: u16,
}

const PLAIN_PADDING: usize = 16;

impl PacketCrypto for PlainPacketCrypto {
    fn encrypt(&mut self, buf: &mut Vec<u8>, start: usize) {
        buf.extend_from_slice(&[0xff; PLAIN_PADDING]);
        let sum = internet_checksum(&buf[start..]).wrapping_add(self.tx_salt);
        buf.extend_from_slice(&sum.to_be_bytes());
    }
    fn decrypt(&mut self, buf: &mut [u8]) -> Result<Range<usize>, CryptoError> {
        let n = buf.len();
        if n < 3 {
            return Err(CryptoError::BadPacket);
        }
        let got = u16::from_be_bytes([buf[n - 2], buf[n - 1]]).wrapping_sub(self.rx_salt);
        if internet_checksum(&buf[..n - 2]) != got {
            return Err(CryptoError::BadPacket);
        }
        Ok(0..n - 2)
    }
    fn overhead(&self) -> usize {
        PLAIN_PADDING + 2
    }
}

fn plain_salt(component: &[u8]) -> Result<u16, CryptoError> {
    match component {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(CryptoError::BadKeying(
            "keying component shorter than 2 bytes".into(),
        )),
    }
}

#[derive(Debug)]
struct PlainHandshake {
    component: [u8; 2],
}

impl InitiatorHandshake for PlainHandshake {
    fn skic(&self) -> &[u8] {
        &self.component
    }
    fn sign(&self, _: &[u8]) -> Vec<u8> {
        b"X".to_vec()
    }
    fn complete(
        self: Box<Self>,
        skrc: &[u8],
        _: &[u8],
        _: &[u8],
    ) -> Result<SessionKeys, CryptoError> {
        let tx_salt = plain_salt(skrc)?;
        Ok(SessionKeys {
            crypto: Box::new(PlainPacketCrypto {
                tx_salt,
                rx_salt: u16::from_be_bytes(self.component),
            }),
            near_nonce: self.component.to_vec(),
            far_nonce: skrc[..2].to_vec(),
        })
    }
}

#[derive(Debug)]
struct PlainResponder {
    component: [u8; 2],
    tx_salt: u16,
}

impl ResponderHandshake for PlainResponder {
    fn skrc(&self) -> &[u8] {
        &self.component
    }
    fn sign(&self, _: &[u8]) -> Vec<u8> {
        b"X".to_vec()
    }
    fn into_keys(self: Box<Self>) -> SessionKeys {
        SessionKeys {
            crypto: Box::new(PlainPacketCrypto {
                tx_salt: self.tx_salt,
                rx_salt: u16::from_be_bytes(self.component),
            }),
            near_nonce: self.component.to_vec(),
            far_nonce: self.tx_salt.to_be_bytes().to_vec(),
        }
    }
}

impl CryptoProfile for PlainProfile {
    fn default_session_crypto(&self) -> Box<dyn PacketCrypto> {
        Box::new(PlainPacketCrypto::default())
    }
    fn certificate(&self) -> &[u8] {
        &self.certificate
    }
    fn epd_selects_near(&self, epd: &[u8]) -> bool {
        epd == self.certificate.as_slice()
    }
    fn epd_selects(&self, epd: &[u8], certificate: &[u8]) -> bool {
        epd == certificate
    }
    fn is_authentic(&self, certificate: &[u8]) -> bool {
        !certificate.is_empty()
    }
    fn canonical_epd(&self, certificate: &[u8]) -> Vec<u8> {
        certificate.to_vec()
    }
    fn far_prevails(&self, far_certificate: &[u8]) -> bool {
        far_certificate < self.certificate.as_slice()
    }
    fn begin_initiator(
        &self,
        _: &[u8],
        rng: &mut dyn RngCore,
    ) -> Result<Box<dyn InitiatorHandshake>, CryptoError> {
        let mut component = [0u8; 2];
        rng.fill_bytes(&mut component);
        Ok(Box::new(PlainHandshake { component }))
    }
    fn respond(
        &self,
        iikeying: IIKeyingInput<'_>,
        rng: &mut dyn RngCore,
    ) -> Result<Box<dyn ResponderHandshake>, CryptoError> {
        let tx_salt = plain_salt(iikeying.skic)?;
        let mut component = [0u8; 2];
        rng.fill_bytes(&mut component);
        Ok(Box::new(PlainResponder { component, tx_salt }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_detects_corruption_and_wrong_salt() {
        let mut tx = PlainPacketCrypto {
            tx_salt: 0x1234,
            rx_salt: 0,
        };
        let mut rx = PlainPacketCrypto {
            tx_salt: 0,
            rx_salt: 0x1234,
        };
        let mut buf = b"xx\x0bhello world".to_vec();
        tx.encrypt(&mut buf, 2);
        assert_eq!(buf.len(), 2 + 12 + 16 + 2);
        let mut pkt = buf[2..].to_vec();
        let r = rx.decrypt(&mut pkt).unwrap();
        assert_eq!(&pkt[r.clone()][..12], b"\x0bhello world");
        assert!(pkt[r][12..].iter().all(|&b| b == 0xff));
        let mut unsalted = PlainPacketCrypto::default();
        assert!(unsalted.decrypt(&mut pkt.clone()).is_err());
        pkt[5] ^= 1;
        assert!(rx.decrypt(&mut pkt).is_err());
    }

    #[test]
    fn odd_trailing_byte_is_the_low_byte() {
        // 0x0102 + 0x0003 = 0x0105 -> complement 0xfefa
        assert_eq!(internet_checksum(&[1, 2, 3]), !0x0105);
        assert_eq!(internet_checksum(&[]), 0xffff);
    }
}
