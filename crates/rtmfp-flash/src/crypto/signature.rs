//! Signatures of Initial Keying messages (RFC 7425 §4.3.5): an option list,
//! possibly holding Simple Password options (§4.3.5.1.1).

use std::fmt;

use hmac::{Hmac, Mac};
use rtmfp::wire::put_option;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::options::{Item, Items};

/// Signature option: Simple Password (§4.3.5.1.1).
pub const SIGNATURE_SIMPLE_PASSWORD: u64 = 0x1d;

/// The signature sent when there is nothing to sign with (§4.3.5).
pub const EMPTY_SIGNATURE: &[u8] = b"X";

/// A Simple Password credential: an identifier and the password used as
/// the HMAC key. The password is zeroized on drop and never printed.
#[derive(Clone)]
pub struct SimplePassword {
    id: Vec<u8>,
    password: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SimplePassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimplePassword")
            .field("id", &String::from_utf8_lossy(&self.id))
            .finish_non_exhaustive()
    }
}

impl SimplePassword {
    /// A credential.
    pub fn new(id: impl Into<Vec<u8>>, password: impl Into<Vec<u8>>) -> Self {
        Self {
            id: id.into(),
            password: Zeroizing::new(password.into()),
        }
    }

    /// The password identifier.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.password)
            .expect("HMAC takes any key length");
        m.update(msg);
        m.finalize().into_bytes().into()
    }
}

/// Signs `msg` with every credential (one Simple Password option each);
/// with none, the signature is "X" (§4.3.5).
pub fn sign(msg: &[u8], credentials: &[SimplePassword]) -> Vec<u8> {
    if credentials.is_empty() {
        return EMPTY_SIGNATURE.to_vec();
    }
    let mut out = Vec::new();
    for c in credentials {
        let mut v = c.mac(msg).to_vec();
        v.extend_from_slice(&c.id);
        put_option(&mut out, SIGNATURE_SIMPLE_PASSWORD, &v);
    }
    out
}

/// Verifies a signature field (§4.3.5, §4.3.5.1.1).
///
/// When `required` is false every signature (even malformed) is valid.
/// Otherwise the signature must hold at least one Simple Password option
/// with a known identifier, and every option with a known identifier must
/// carry the right HMAC; options with unknown identifiers are ignored. A
/// malformed field or a lone "X" counts as empty (hence invalid).
pub fn verify(msg: &[u8], signature: &[u8], known: &[SimplePassword], required: bool) -> bool {
    if !required {
        return true;
    }
    if signature == EMPTY_SIGNATURE {
        return false;
    }
    let mut options = Vec::new();
    for item in Items::new(signature) {
        match item {
            Ok(Item::Option(ty, v)) => options.push((ty, v)),
            Ok(Item::Marker) => {}
            Err(_) => return false, // malformed: as though empty
        }
    }
    let mut good = 0;
    for (ty, v) in options {
        if ty != SIGNATURE_SIMPLE_PASSWORD || v.len() < 32 {
            continue;
        }
        let (tag, id) = v.split_at(32);
        let Some(cred) = known.iter().find(|c| c.id == id) else {
            continue;
        };
        if !bool::from(cred.mac(msg).ct_eq(tag)) {
            return false;
        }
        good += 1;
    }
    good > 0
}
