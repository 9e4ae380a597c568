//! User names and peer IDs: validation and normalisation.

/// Longest user name accepted, in Unicode scalar values.
pub(crate) const MAX_NAME_CHARS: usize = 64;

/// Why a user name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameProblem {
    Empty,
    TooLong,
    ControlCharacter,
}

impl NameProblem {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            NameProblem::Empty => "user name is empty",
            NameProblem::TooLong => "user name is longer than 64 characters",
            NameProblem::ControlCharacter => "user name contains a control character",
        }
    }
}

/// Checks that `name` can be a user name: 1 to 64 characters, no control characters
/// (they cannot be written in XML 1.0).
pub(crate) fn check_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameProblem::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(NameProblem::ControlCharacter);
    }
    Ok(())
}

/// The case-insensitive key under which a name is stored and compared.
///
/// Names are case-insensitive, as in `reg.cgi` (whose SQLite column is
/// `COLLATE NOCASE`); this uses full Unicode lower-casing, so `ÄLICE` and `älice` are
/// the same name too.
pub fn normalize_name(name: &str) -> String {
    name.to_lowercase()
}

/// True when `id` is a peer ID as the registry stores it: exactly 64 hexadecimal
/// digits (a SHA-256 digest, `NetConnection.nearID` in Flash).
pub fn is_valid_peer_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lower-case hexadecimal encoding.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("alice").is_ok());
        assert_eq!(check_name(""), Err(NameProblem::Empty));
        assert_eq!(check_name("a\u{1}b"), Err(NameProblem::ControlCharacter));
        assert!(check_name(&"é".repeat(64)).is_ok());
        assert_eq!(check_name(&"é".repeat(65)), Err(NameProblem::TooLong));
        assert_eq!(normalize_name("BoB"), "bob");
    }

    #[test]
    fn peer_ids() {
        assert!(is_valid_peer_id(&"aB".repeat(32)));
        assert!(!is_valid_peer_id(&"a".repeat(63)));
        assert!(!is_valid_peer_id(&"g".repeat(64)));
        assert_eq!(hex(&[0, 0xff, 0x1a]), "00ff1a");
    }
}
