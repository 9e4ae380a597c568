//! The RFC 7425 §4 Cryptography Profile.
//!
//! * [`packet`](FlashPacketCrypto): AES-128-CBC with a zero IV, 0xff
//!   padding, the simple checksum or a truncated HMAC-SHA256, session
//!   sequence numbers with a replay window (§4.1, §4.7).
//! * [`DhGroup`] / [`DhKeyPair`]: MODP groups 2, 5, 14 and 16 (§4.2, §4.6.2).
//! * [`Certificate`], [`PeerId`]: certificate format and fingerprint (§4.3).
//! * [`Epd`]: Endpoint Discriminators and certificate selection (§4.4).
//! * [`KeyingComponent`], [`derive_session_keys`]: keying components and key
//!   computation (§4.5, §4.6).
//! * [`sign`] / [`verify`]: signatures and Simple Passwords (§4.3.5).
//! * [`FlashProfile`]: all of it as an [`rtmfp::CryptoProfile`].

mod cert;
mod dh;
mod epd;
mod keying;
mod options;
mod packet;
mod profile;
mod signature;

pub use cert::{
    canonical_len, fingerprint, hex_decode, hex_encode, Certificate, CertificateError, PeerId,
    PeerIdParseError, CERT_ACCEPTS_ANCILLARY_DATA, CERT_EXTRA_RANDOMNESS, CERT_HOSTNAME,
    CERT_STATIC_PUBLIC_KEY, CERT_SUPPORTED_EPHEMERAL_GROUP,
};
pub use dh::{is_acceptable_public_key, DhError, DhGroup, DhKeyPair, MAX_EXPONENT_BITS};
pub use epd::{
    canonical_epd, Epd, EpdError, EPD_ANCILLARY_DATA, EPD_FINGERPRINT, EPD_REQUIRED_HOSTNAME,
};
pub use keying::{
    derive_session_keys, KeyingComponent, KeyingError, Negotiated, NegotiationFlags,
    KEYING_EPHEMERAL_PUBLIC_KEY, KEYING_EXTRA_RANDOMNESS, KEYING_GROUP_SELECT,
    KEYING_HMAC_NEGOTIATION, KEYING_SSEQ_NEGOTIATION,
};
pub use packet::{
    simple_checksum, FlashPacketCrypto, ReplayWindow, SessionKeyMaterial, DEFAULT_SESSION_KEY,
    MAX_HMAC_LENGTH, MIN_HMAC_LENGTH,
};
pub use profile::{
    AncillaryFilter, ConfigError, FlashProfile, FlashProfileBuilder, KeyLogEntry, KeyLogFn,
    KeyMode, KeyRotation, Negotiation,
};
pub use signature::{sign, verify, SimplePassword, EMPTY_SIGNATURE, SIGNATURE_SIMPLE_PASSWORD};
