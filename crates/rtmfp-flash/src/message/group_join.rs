//! NetGroup messages between members and the server: the `"GC"` flows
//! that belong to a NetConnection (the server side reads them in
//! [`ServerConnection`](super::ServerConnection); members use them through
//! the `rtmfp-netgroup` crate, which re-exports this module as `wire`).
//!
//! Layouts follow our NetGroup notes (`netgroup-notes.md`), which were
//! checked against decrypted captures of Flash-compatible peers:
//!
//! * a member joins a group by opening a flow whose User Metadata is
//!   `"GC"` (librtmfp and Flash write it as `"\0GC"`: the leading zero is
//!   the User Metadata option type), associated to its NetConnection flow,
//!   and sending one message `01 | option(0x15, group ID)`. Older Flash
//!   players send `01 | option(0x10, value)` and the group ID is
//!   SHA-256(value). Leaving is closing that flow.
//! * the server introduces other members on a `"GC"` flow it opens in
//!   return to the member's join flow, one message per peer: `0B | peer ID`.
//!
//! Every parser here is bounds-checked and returns [`GroupWireError`] on
//! malformed input; none allocates more than its input.

use rtmfp::wire::{put_option, Reader};
use sha2::{Digest, Sha256};

/// User Metadata of the member ↔ server group flows.
pub const GC_METADATA: &[u8] = b"GC";

/// First byte of a join message.
pub const MSG_JOIN: u8 = 0x01;
/// Option type carrying the 32-byte group ID in a join.
pub const OPT_GROUP_ID: u64 = 0x15;
/// Option type carrying a value to hash into the group ID (older Flash).
pub const OPT_GROUP_LEGACY: u64 = 0x10;
/// First byte of an introduction (server → member).
pub const MSG_INTRODUCE: u8 = 0x0b;

/// Largest legacy join value accepted (a groupspec text).
pub const MAX_LEGACY_VALUE: usize = 8192;

/// A malformed group message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupWireError {
    /// The message ends early.
    #[error("group message truncated")]
    Truncated,
    /// An unexpected message type.
    #[error("unexpected group message type {0:#04x}")]
    UnexpectedType(u8),
    /// A field has the wrong size or value.
    #[error("malformed group message: {0}")]
    Malformed(&'static str),
}

impl From<rtmfp::wire::WireError> for GroupWireError {
    fn from(_: rtmfp::wire::WireError) -> Self {
        GroupWireError::Truncated
    }
}

/// Whether flow metadata names a member ↔ server group flow.
pub fn is_gc_metadata(metadata: &[u8]) -> bool {
    metadata == GC_METADATA
}

/// Encodes a join for `group_id` (`01 21 15 <group ID>`).
pub fn encode_join(group_id: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(35);
    out.push(MSG_JOIN);
    put_option(&mut out, OPT_GROUP_ID, group_id);
    out
}

/// Parses a join message into the group ID (hashing the legacy form).
pub fn parse_join(msg: &[u8]) -> Result<[u8; 32], GroupWireError> {
    let mut r = Reader::new(msg);
    let ty = r.u8()?;
    if ty != MSG_JOIN {
        return Err(GroupWireError::UnexpectedType(ty));
    }
    let Some((kind, value)) = r.option()? else {
        return Err(GroupWireError::Malformed("empty join"));
    };
    match kind {
        OPT_GROUP_ID => value
            .try_into()
            .map_err(|_| GroupWireError::Malformed("group ID is not 32 bytes")),
        OPT_GROUP_LEGACY if !value.is_empty() && value.len() <= MAX_LEGACY_VALUE => {
            Ok(Sha256::digest(value).into())
        }
        _ => Err(GroupWireError::Malformed("unknown join option")),
    }
}

/// Encodes an introduction of `peer` (`0B <peer ID>`).
pub fn encode_introduction(peer: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(33);
    out.push(MSG_INTRODUCE);
    out.extend_from_slice(peer);
    out
}

/// Parses an introduction into the introduced peer's ID.
pub fn parse_introduction(msg: &[u8]) -> Result<[u8; 32], GroupWireError> {
    match msg.split_first() {
        Some((&MSG_INTRODUCE, rest)) => rest
            .get(..32)
            .and_then(|p| p.try_into().ok())
            .ok_or(GroupWireError::Truncated),
        Some((&t, _)) => Err(GroupWireError::UnexpectedType(t)),
        None => Err(GroupWireError::Truncated),
    }
}

/// A member's place on the group ring: SHA-256(`21 0F` ‖ peer ID).
pub fn group_address(peer: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0x21, 0x0f]);
    h.update(peer);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_matches_capture() {
        // capture: `01 21 15 76 3F 90 E4 …` for group 763f90e4…
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&[0x76, 0x3f, 0x90, 0xe4]);
        let m = encode_join(&id);
        assert_eq!(&m[..7], &[0x01, 0x21, 0x15, 0x76, 0x3f, 0x90, 0xe4]);
        assert_eq!(m.len(), 35);
        assert_eq!(parse_join(&m).unwrap(), id);
    }

    #[test]
    fn legacy_join_is_hashed() {
        let mut m = vec![MSG_JOIN];
        put_option(&mut m, OPT_GROUP_LEGACY, b"G:abc");
        assert_eq!(
            parse_join(&m).unwrap(),
            <[u8; 32]>::from(Sha256::digest(b"G:abc"))
        );
    }

    #[test]
    fn bad_joins() {
        assert_eq!(parse_join(&[]), Err(GroupWireError::Truncated));
        assert_eq!(parse_join(&[2]), Err(GroupWireError::UnexpectedType(2)));
        assert!(parse_join(&[1, 0x03, 0x15, 1, 2]).is_err());
        assert!(parse_join(&[1, 0x21, 0x15, 1]).is_err());
        assert!(parse_join(&[1, 0x00]).is_err());
        assert!(parse_join(&[1, 0x02, 0x10, 9]).is_ok());
        assert!(parse_join(&[1, 0x02, 0x33, 9]).is_err());
    }

    #[test]
    fn introduction_round_trip() {
        let p = [7u8; 32];
        let m = encode_introduction(&p);
        assert_eq!(m[0], 0x0b);
        assert_eq!(parse_introduction(&m).unwrap(), p);
        assert!(parse_introduction(&m[..20]).is_err());
        assert!(parse_introduction(&[0x0c; 33]).is_err());
    }
}
