//! Session Keying Components (RFC 7425 §4.5) and the session key
//! computation (§4.6).

use hmac::{Hmac, Mac};
use rtmfp::wire::{put_option, put_vlu, Reader};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::options::{put_vlu_option, vlu_and_rest, vlu_value, Item, Items};
use super::packet::SessionKeyMaterial;

/// Keying option: Ephemeral Diffie-Hellman Public Key (§4.5.2.1).
pub const KEYING_EPHEMERAL_PUBLIC_KEY: u64 = 0x0d;
/// Keying option: Extra Randomness (§4.5.2.2).
pub const KEYING_EXTRA_RANDOMNESS: u64 = 0x0e;
/// Keying option: Diffie-Hellman Group Select (§4.5.2.3).
pub const KEYING_GROUP_SELECT: u64 = 0x1d;
/// Keying option: HMAC Negotiation (§4.5.2.4).
pub const KEYING_HMAC_NEGOTIATION: u64 = 0x1a;
/// Keying option: Session Sequence Number Negotiation (§4.5.2.5).
pub const KEYING_SSEQ_NEGOTIATION: u64 = 0x1e;

/// The flags byte of an HMAC or Session Sequence Number Negotiation option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct NegotiationFlags {
    /// SND: the sender will always send it.
    pub send_always: bool,
    /// SOR: the sender will send it if the other end requests it.
    pub send_on_request: bool,
    /// REQ: the sender asks the other end to send it.
    pub request: bool,
}

impl NegotiationFlags {
    /// Encodes the flags byte (reserved bits zero).
    pub fn to_byte(self) -> u8 {
        u8::from(self.send_always) << 2
            | u8::from(self.send_on_request) << 1
            | u8::from(self.request)
    }

    /// Decodes the flags byte (reserved bits ignored).
    pub fn from_byte(b: u8) -> Self {
        Self {
            send_always: b & 4 != 0,
            send_on_request: b & 2 != 0,
            request: b & 1 != 0,
        }
    }

    /// Whether an end with these flags sends the field to an end whose
    /// request flag is `other_requests` (§4.6.4, §4.6.6).
    pub fn sends(self, other_requests: bool) -> bool {
        self.send_always || (self.send_on_request && other_requests)
    }
}

/// Why a keying component is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyingError {
    /// Not a well-formed option list, or a malformed option value.
    #[error("malformed keying component")]
    Malformed,
    /// An option that must not repeat occurs twice.
    #[error("duplicate keying option {0:#x}")]
    Duplicate(u64),
}

/// A decoded Session Keying Component (SKIC or SKRC).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyingComponent {
    /// Ephemeral DH public key `(group ID, key)` (§4.5.2.1).
    pub ephemeral_public_key: Option<(u64, Vec<u8>)>,
    /// Extra randomness (§4.5.2.2).
    pub extra_randomness: Option<Vec<u8>>,
    /// DH group select (§4.5.2.3).
    pub group_select: Option<u64>,
    /// HMAC negotiation: flags and hmacLength (§4.5.2.4).
    pub hmac: Option<(NegotiationFlags, u64)>,
    /// Session sequence number negotiation (§4.5.2.5).
    pub sseq: Option<NegotiationFlags>,
}

impl KeyingComponent {
    /// Decodes a keying component. Unknown options are ignored, markers
    /// skipped; the two options that must not repeat (ephemeral key, group
    /// select) are refused when repeated; otherwise the first one counts.
    pub fn parse(raw: &[u8]) -> Result<Self, KeyingError> {
        let mut k = KeyingComponent::default();
        for item in Items::new(raw) {
            let Item::Option(ty, v) = item.map_err(|_| KeyingError::Malformed)? else {
                continue;
            };
            match ty {
                KEYING_EPHEMERAL_PUBLIC_KEY => {
                    if k.ephemeral_public_key.is_some() {
                        return Err(KeyingError::Duplicate(ty));
                    }
                    let (g, key) = vlu_and_rest(v).map_err(|_| KeyingError::Malformed)?;
                    k.ephemeral_public_key = Some((g, key.to_vec()));
                }
                KEYING_GROUP_SELECT => {
                    if k.group_select.is_some() {
                        return Err(KeyingError::Duplicate(ty));
                    }
                    k.group_select = Some(vlu_value(v).map_err(|_| KeyingError::Malformed)?);
                }
                KEYING_EXTRA_RANDOMNESS if k.extra_randomness.is_none() => {
                    k.extra_randomness = Some(v.to_vec());
                }
                KEYING_HMAC_NEGOTIATION if k.hmac.is_none() => {
                    let mut r = Reader::new(v);
                    let flags =
                        NegotiationFlags::from_byte(r.u8().map_err(|_| KeyingError::Malformed)?);
                    let len = if r.is_empty() {
                        0
                    } else {
                        r.vlu().map_err(|_| KeyingError::Malformed)?
                    };
                    k.hmac = Some((flags, len));
                }
                KEYING_SSEQ_NEGOTIATION if k.sseq.is_none() => {
                    let b = *v.first().ok_or(KeyingError::Malformed)?;
                    k.sseq = Some(NegotiationFlags::from_byte(b));
                }
                _ => {}
            }
        }
        Ok(k)
    }

    /// Encodes the component in initiator order: key or group select,
    /// randomness, then HMAC and sequence-number negotiation (the order
    /// Flash-family initiators use).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.put_keys(&mut out);
        self.put_negotiation(&mut out);
        out
    }

    /// Encodes the component in responder order: HMAC and sequence-number
    /// negotiation first, then the key or randomness. Option order carries
    /// no meaning (§4.5.1), but some Flash-era initiators (librtmfp) only
    /// accept an SKRC laid out this way.
    pub fn encode_negotiation_first(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.put_negotiation(&mut out);
        self.put_keys(&mut out);
        out
    }

    fn put_keys(&self, out: &mut Vec<u8>) {
        if let Some((g, key)) = &self.ephemeral_public_key {
            put_vlu_option(out, KEYING_EPHEMERAL_PUBLIC_KEY, *g, key);
        }
        if let Some(g) = self.group_select {
            put_vlu_option(out, KEYING_GROUP_SELECT, g, &[]);
        }
        if let Some(r) = &self.extra_randomness {
            put_option(out, KEYING_EXTRA_RANDOMNESS, r);
        }
    }

    fn put_negotiation(&self, out: &mut Vec<u8>) {
        if let Some((flags, len)) = self.hmac {
            let mut v = vec![flags.to_byte()];
            put_vlu(&mut v, len);
            put_option(out, KEYING_HMAC_NEGOTIATION, &v);
        }
        if let Some(flags) = self.sseq {
            put_option(out, KEYING_SSEQ_NEGOTIATION, &[flags.to_byte()]);
        }
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// What was negotiated for the packets of a session (§4.6.4, §4.6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// Length of the HMAC we send, 0 for the simple checksum.
    pub send_hmac_len: usize,
    /// Length of the HMAC the far end sends, 0 for the checksum.
    pub recv_hmac_len: usize,
    /// We send session sequence numbers.
    pub send_sseq: bool,
    /// The far end sends session sequence numbers.
    pub recv_sseq: bool,
}

/// The session key computation of §4.6.3-4.6.5 from DH_SECRET, the near
/// component (SKNC) and the far component (SKFC).
pub fn derive_session_keys(
    dh_secret: &[u8],
    sknc: &[u8],
    skfc: &[u8],
    negotiated: Negotiated,
) -> SessionKeyMaterial {
    let encrypt_key = hmac_sha256(dh_secret, &*hmac_sha256(skfc, sknc));
    let decrypt_key = hmac_sha256(dh_secret, &*hmac_sha256(sknc, skfc));
    let hmac_send_key = hmac_sha256(dh_secret, &*encrypt_key);
    let hmac_recv_key = hmac_sha256(dh_secret, &*decrypt_key);
    SessionKeyMaterial {
        encrypt_key: *encrypt_key,
        decrypt_key: *decrypt_key,
        hmac_send_key: *hmac_send_key,
        hmac_recv_key: *hmac_recv_key,
        send_hmac_len: negotiated.send_hmac_len,
        recv_hmac_len: negotiated.recv_hmac_len,
        send_sseq: negotiated.send_sseq,
        recv_sseq: negotiated.recv_sseq,
        near_nonce: *hmac_sha256(dh_secret, sknc),
        far_nonce: *hmac_sha256(dh_secret, skfc),
    }
}
