//! The `G:` groupspec text form and the group ID.
//!
//! See the [module documentation](super) for what is known about the format
//! and what is not.
//!
//! * [`GroupSpecifier`] builds a groupspec the way Flash's
//!   `flash.net.GroupSpecifier` does (for the options whose codes are known).
//! * [`GroupSpec::parse`] reads any groupspec text, bounds-checked and without
//!   panicking, keeping every option (known or not) so that
//!   [`GroupSpec::encode`] gives the same text back.
//! * [`group_id`] / [`GroupSpec::group_id`] compute the 32-byte group ID that
//!   members and the server exchange.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// The longest groupspec text [`GroupSpec::parse`] accepts, in bytes.
pub const MAX_GROUPSPEC_LEN: usize = 8192;

/// The text prefix of every groupspec.
const PREFIX: &str = "G:";

/// Option type: groupspec version (value `02` for version 2).
pub const OPTION_VERSION: u8 = 0x7f;
/// Option type: multicast enabled (no value).
pub const OPTION_MULTICAST: u8 = 0x01;
/// Option type: object replication enabled (no value).
pub const OPTION_OBJECT_REPLICATION: u8 = 0x02;
/// Option type: posting enabled (no value).
pub const OPTION_POSTING: u8 = 0x03;
/// Option type: the group name (UTF-8).
pub const OPTION_NAME: u8 = 0x0e;

/// The groupspec version [`GroupSpecifier`] writes, and the one whose group
/// ID is a double SHA-256.
pub const GROUPSPEC_VERSION: u8 = 2;

/// The longest option value (after the type byte) one length byte allows.
const MAX_VALUE_LEN: usize = 254;

/// Option types [`GroupSpecifier`] sets through typed setters only.
const RESERVED: [u8; 5] = [
    OPTION_VERSION,
    OPTION_MULTICAST,
    OPTION_OBJECT_REPLICATION,
    OPTION_POSTING,
    OPTION_NAME,
];

/// Why a groupspec could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GroupSpecError {
    /// The text is longer than [`MAX_GROUPSPEC_LEN`].
    #[error("groupspec is {len} bytes long, more than the {max} allowed")]
    TooLong {
        /// The text's length.
        len: usize,
        /// [`MAX_GROUPSPEC_LEN`].
        max: usize,
    },
    /// The text does not start with `G:`.
    #[error("groupspec does not start with \"G:\"")]
    MissingPrefix,
    /// A character after `G:` is not a lowercase hex digit.
    #[error("byte {offset} of the groupspec is not a lowercase hex digit")]
    InvalidHex {
        /// Byte offset in the text.
        offset: usize,
    },
    /// The hex after `G:` has an odd number of digits.
    #[error("groupspec has an odd number of hex digits")]
    OddLength,
    /// An option's length byte runs past the end of the text.
    #[error("option at byte {offset} of the decoded groupspec claims {len} bytes, past the end")]
    Truncated {
        /// Offset of the length byte in the decoded bytes.
        offset: usize,
        /// The length it claims.
        len: u8,
    },
    /// No `00` length byte ends the group-defining options.
    #[error("groupspec has no 00 terminator")]
    MissingTerminator,
    /// The group name does not fit in one option.
    #[error("group name is {len} bytes; at most {max} fit in an option")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The most that fit.
        max: usize,
    },
    /// A raw option value does not fit in one option.
    #[error("option value is {len} bytes; at most {max} fit in an option")]
    ValueTooLong {
        /// The value's length in bytes.
        len: usize,
        /// The most that fit.
        max: usize,
    },
    /// A raw option used a type that has a typed setter.
    #[error("option type {0:#04x} has a typed setter and cannot be set raw")]
    ReservedType(u8),
    /// The groupspec is valid but [`GroupSpecifier`] would not write it this
    /// way (missing or repeated options, another version, another order, a
    /// name that is not UTF-8, …).
    #[error("groupspec is not in the form GroupSpecifier writes")]
    NotCanonical,
}

/// One option of a parsed groupspec: its type byte and its value (the bytes
/// after the type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupOption<'a> {
    /// The option type (the first byte after the length byte).
    pub kind: u8,
    /// The rest of the option.
    pub value: &'a [u8],
}

/// Where one option's value lies in [`GroupSpec`]'s decoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    kind: u8,
    start: usize,
    end: usize,
}

/// A parsed groupspec, borrowing its text.
///
/// Every option is kept in order (known or not), and the part after the `00`
/// terminator (authorizations, per-member parts) is kept as opaque bytes, so
/// [`encode`](Self::encode) gives back the parsed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec<'a> {
    text: &'a str,
    /// The hex after `G:`, decoded.
    bytes: Vec<u8>,
    /// Offset of the `00` terminator in `bytes`.
    terminator: usize,
    options: Vec<Span>,
}

impl<'a> GroupSpec<'a> {
    /// Parses a groupspec text (`G:` followed by lowercase hex).
    ///
    /// Never panics; rejects texts longer than [`MAX_GROUPSPEC_LEN`].
    pub fn parse(text: &'a str) -> Result<Self, GroupSpecError> {
        if text.len() > MAX_GROUPSPEC_LEN {
            return Err(GroupSpecError::TooLong {
                len: text.len(),
                max: MAX_GROUPSPEC_LEN,
            });
        }
        let hex = text
            .strip_prefix(PREFIX)
            .ok_or(GroupSpecError::MissingPrefix)?;
        let digits = hex.as_bytes();
        if let Some(i) = digits.iter().position(|&c| hex_value(c).is_none()) {
            return Err(GroupSpecError::InvalidHex {
                offset: PREFIX.len() + i,
            });
        }
        if digits.len() % 2 != 0 {
            return Err(GroupSpecError::OddLength);
        }
        let bytes: Vec<u8> = digits
            .chunks_exact(2)
            .map(|pair| match (hex_value(pair[0]), hex_value(pair[1])) {
                (Some(hi), Some(lo)) => hi << 4 | lo,
                _ => 0, // unreachable: every digit was checked above
            })
            .collect();
        let mut options = Vec::new();
        let mut pos = 0;
        let terminator = loop {
            let Some(&len) = bytes.get(pos) else {
                return Err(GroupSpecError::MissingTerminator);
            };
            if len == 0 {
                break pos;
            }
            let end = pos + 1 + usize::from(len);
            if end > bytes.len() {
                return Err(GroupSpecError::Truncated { offset: pos, len });
            }
            options.push(Span {
                kind: bytes[pos + 1],
                start: pos + 2,
                end,
            });
            pos = end;
        };
        Ok(Self {
            text,
            bytes,
            terminator,
            options,
        })
    }

    /// The whole text, authorizations included (Flash's
    /// `groupspecWithAuthorizations()`).
    pub fn group_spec_with_authorizations(&self) -> &'a str {
        self.text
    }

    /// The text up to and including the `00` terminator (Flash's
    /// `groupspecWithoutAuthorizations()`).
    pub fn group_spec_without_authorizations(&self) -> &'a str {
        &self.text[..PREFIX.len() + 2 * (self.terminator + 1)]
    }

    /// The text the group ID is computed from: from `G:` up to but excluding
    /// the `00` terminator.
    pub fn hashed_text(&self) -> &'a str {
        &self.text[..PREFIX.len() + 2 * self.terminator]
    }

    /// The bytes after the `00` terminator (authorizations and per-member
    /// parts; their encoding is not known, so they are opaque).
    pub fn authorizations(&self) -> &[u8] {
        &self.bytes[self.terminator + 1..]
    }

    /// The hex text after the `00` terminator (Flash's `authorizations()`,
    /// presumably).
    pub fn authorizations_hex(&self) -> &'a str {
        &self.text[PREFIX.len() + 2 * (self.terminator + 1)..]
    }

    /// Every option before the terminator, in order.
    pub fn options(&self) -> impl Iterator<Item = GroupOption<'_>> + '_ {
        self.options.iter().map(|s| GroupOption {
            kind: s.kind,
            value: &self.bytes[s.start..s.end],
        })
    }

    /// The options whose type this module does not interpret (for example the
    /// unverified flags `0C`, `0D`, `1B` and the `05` value), in order.
    pub fn unknown_options(&self) -> impl Iterator<Item = GroupOption<'_>> + '_ {
        self.options().filter(|o| !RESERVED.contains(&o.kind))
    }

    /// The value of the first option of type `kind`.
    pub fn option(&self, kind: u8) -> Option<&[u8]> {
        self.options().find(|o| o.kind == kind).map(|o| o.value)
    }

    fn flag(&self, kind: u8) -> bool {
        self.options().any(|o| o.kind == kind && o.value.is_empty())
    }

    /// The groupspec version (option `7F` with a one-byte value), if present.
    pub fn version(&self) -> Option<u8> {
        match self.option(OPTION_VERSION) {
            Some(&[v]) => Some(v),
            _ => None,
        }
    }

    /// The group name (option `0E`), as bytes.
    pub fn name(&self) -> Option<&[u8]> {
        self.option(OPTION_NAME)
    }

    /// The group name, if present and UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        self.name().and_then(|n| std::str::from_utf8(n).ok())
    }

    /// Whether option `01` (multicast) is present.
    pub fn multicast_enabled(&self) -> bool {
        self.flag(OPTION_MULTICAST)
    }

    /// Whether option `02` (object replication) is present.
    pub fn object_replication_enabled(&self) -> bool {
        self.flag(OPTION_OBJECT_REPLICATION)
    }

    /// Whether option `03` (posting) is present.
    pub fn posting_enabled(&self) -> bool {
        self.flag(OPTION_POSTING)
    }

    /// The 32-byte group ID: SHA-256(SHA-256([`hashed_text`](Self::hashed_text)))
    /// for version 2, a single SHA-256 otherwise.
    pub fn group_id(&self) -> [u8; 32] {
        hash_group_id(self.hashed_text(), self.version())
    }

    /// The group ID as 64 lowercase hex characters.
    pub fn group_id_hex(&self) -> String {
        to_hex(&self.group_id())
    }

    /// Writes the groupspec back from its options and authorizations. Equals
    /// the parsed text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.text.len());
        out.push_str(PREFIX);
        for o in self.options() {
            push_option(&mut out, o.kind, o.value);
        }
        out.push_str("00");
        push_hex(&mut out, self.authorizations());
        out
    }

    /// The [`GroupSpecifier`] that writes exactly this text, or
    /// [`GroupSpecError::NotCanonical`] if there is none.
    pub fn to_specifier(&self) -> Result<GroupSpecifier, GroupSpecError> {
        if self.version() != Some(GROUPSPEC_VERSION) {
            return Err(GroupSpecError::NotCanonical);
        }
        let name = self.name_str().ok_or(GroupSpecError::NotCanonical)?;
        let mut spec = GroupSpecifier::new(name)?
            .multicast_enabled(self.multicast_enabled())
            .object_replication_enabled(self.object_replication_enabled())
            .posting_enabled(self.posting_enabled())
            .with_raw_authorizations(self.authorizations().to_vec());
        for o in self.unknown_options() {
            spec = spec.raw_option(o.kind, o.value)?;
        }
        if spec.group_spec_with_authorizations() == self.text {
            Ok(spec)
        } else {
            Err(GroupSpecError::NotCanonical)
        }
    }
}

impl fmt::Display for GroupSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text)
    }
}

/// A groupspec builder mirroring Flash's `flash.net.GroupSpecifier`.
///
/// All capabilities start disabled. Only the options whose codes are known
/// have setters (see the [module documentation](super)); others can be set
/// with [`raw_option`](Self::raw_option). The output is always a version 2
/// groupspec, options written version first and then by ascending type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpecifier {
    name: String,
    multicast: bool,
    object_replication: bool,
    posting: bool,
    raw: BTreeMap<u8, Vec<u8>>,
    authorizations: Vec<u8>,
}

impl GroupSpecifier {
    /// A groupspec for the group `name` (Flash's `new GroupSpecifier(name)`).
    ///
    /// Fails if the UTF-8 name is longer than 254 bytes (it must fit in one
    /// option).
    pub fn new(name: impl Into<String>) -> Result<Self, GroupSpecError> {
        let name = name.into();
        if name.len() > MAX_VALUE_LEN {
            return Err(GroupSpecError::NameTooLong {
                len: name.len(),
                max: MAX_VALUE_LEN,
            });
        }
        Ok(Self {
            name,
            multicast: false,
            object_replication: false,
            posting: false,
            raw: BTreeMap::new(),
            authorizations: Vec::new(),
        })
    }

    /// Flash's `multicastEnabled` (option `01`).
    #[must_use]
    pub fn multicast_enabled(mut self, enabled: bool) -> Self {
        self.multicast = enabled;
        self
    }

    /// Flash's `objectReplicationEnabled` (option `02`).
    #[must_use]
    pub fn object_replication_enabled(mut self, enabled: bool) -> Self {
        self.object_replication = enabled;
        self
    }

    /// Flash's `postingEnabled` (option `03`).
    #[must_use]
    pub fn posting_enabled(mut self, enabled: bool) -> Self {
        self.posting = enabled;
        self
    }

    /// Sets an option this module does not interpret (for example the
    /// unverified flags `0C`, `0D`, `1B` with an empty value), replacing any
    /// earlier value of the same type.
    ///
    /// Fails for the types that have typed setters (`01`, `02`, `03`, `0E`,
    /// `7F`) and for values over 254 bytes.
    pub fn raw_option(
        mut self,
        kind: u8,
        value: impl Into<Vec<u8>>,
    ) -> Result<Self, GroupSpecError> {
        let value = value.into();
        if RESERVED.contains(&kind) {
            return Err(GroupSpecError::ReservedType(kind));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(GroupSpecError::ValueTooLong {
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        self.raw.insert(kind, value);
        Ok(self)
    }

    /// Sets the opaque bytes written after the `00` terminator. Their
    /// encoding (Flash's `setPostingPassword` / `setPublishPassword`,
    /// bootstrap peers, IP multicast addresses) is not known; this exists so
    /// that parsed groupspecs can be rebuilt.
    #[must_use]
    pub fn with_raw_authorizations(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.authorizations = bytes.into();
        self
    }

    /// The group name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether multicast is enabled.
    pub fn is_multicast_enabled(&self) -> bool {
        self.multicast
    }

    /// Whether object replication is enabled.
    pub fn is_object_replication_enabled(&self) -> bool {
        self.object_replication
    }

    /// Whether posting is enabled.
    pub fn is_posting_enabled(&self) -> bool {
        self.posting
    }

    /// The raw options, by type.
    pub fn raw_options(&self) -> impl Iterator<Item = GroupOption<'_>> + '_ {
        self.raw
            .iter()
            .map(|(&kind, value)| GroupOption { kind, value })
    }

    /// The text without the terminator: what the group ID hashes.
    fn hashed_text(&self) -> String {
        let mut opts: BTreeMap<u8, &[u8]> = BTreeMap::new();
        if self.multicast {
            opts.insert(OPTION_MULTICAST, &[]);
        }
        if self.object_replication {
            opts.insert(OPTION_OBJECT_REPLICATION, &[]);
        }
        if self.posting {
            opts.insert(OPTION_POSTING, &[]);
        }
        opts.insert(OPTION_NAME, self.name.as_bytes());
        for (&kind, value) in &self.raw {
            opts.insert(kind, value);
        }
        let mut out = String::from(PREFIX);
        push_option(&mut out, OPTION_VERSION, &[GROUPSPEC_VERSION]);
        for (kind, value) in opts {
            push_option(&mut out, kind, value);
        }
        out
    }

    /// Flash's `groupspecWithoutAuthorizations()`: the group-defining options
    /// and the `00` terminator.
    pub fn group_spec_without_authorizations(&self) -> String {
        let mut out = self.hashed_text();
        out.push_str("00");
        out
    }

    /// Flash's `groupspecWithAuthorizations()` (and `toString()`): the text
    /// without authorizations followed by the authorization bytes.
    pub fn group_spec_with_authorizations(&self) -> String {
        let mut out = self.group_spec_without_authorizations();
        push_hex(&mut out, &self.authorizations);
        out
    }

    /// Flash's `authorizations()`: the hex written after the terminator.
    pub fn authorizations(&self) -> String {
        to_hex(&self.authorizations)
    }

    /// The 32-byte group ID (see [`GroupSpec::group_id`]).
    pub fn group_id(&self) -> [u8; 32] {
        hash_group_id(&self.hashed_text(), Some(GROUPSPEC_VERSION))
    }

    /// The group ID as 64 lowercase hex characters.
    pub fn group_id_hex(&self) -> String {
        to_hex(&self.group_id())
    }
}

impl fmt::Display for GroupSpecifier {
    /// Same as [`group_spec_with_authorizations`](Self::group_spec_with_authorizations).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.group_spec_with_authorizations())
    }
}

/// The 32-byte group ID of a groupspec text (see [`GroupSpec::group_id`]).
pub fn group_id(spec_text: &str) -> Result<[u8; 32], GroupSpecError> {
    GroupSpec::parse(spec_text).map(|s| s.group_id())
}

/// The group ID of a groupspec text as 64 lowercase hex characters.
pub fn group_id_hex(spec_text: &str) -> Result<String, GroupSpecError> {
    group_id(spec_text).map(|id| to_hex(&id))
}

fn hash_group_id(hashed_text: &str, version: Option<u8>) -> [u8; 32] {
    let once: [u8; 32] = Sha256::digest(hashed_text.as_bytes()).into();
    if version == Some(GROUPSPEC_VERSION) {
        Sha256::digest(once).into()
    } else {
        once
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Writes `len type value` (callers keep `value` ≤ 254 bytes).
fn push_option(out: &mut String, kind: u8, value: &[u8]) {
    let len = u8::try_from(value.len() + 1).unwrap_or(u8::MAX);
    push_hex(out, &[len, kind]);
    push_hex(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the NetGroup notes.
    const EXAMPLE: &str = "G:027f0201010103010c050e74657374011b00";

    #[test]
    fn notes_example_group_id() {
        let id = group_id_hex(EXAMPLE).unwrap();
        assert!(id.starts_with("763f90e4"), "{id}");
        assert!(id.ends_with("9a092620"), "{id}");
        // It is SHA-256² of the text without the terminator.
        let text = "G:027f0201010103010c050e74657374011b";
        let expected: [u8; 32] = Sha256::digest(Sha256::digest(text.as_bytes())).into();
        assert_eq!(group_id(EXAMPLE).unwrap(), expected);
    }

    #[test]
    fn notes_example_parses() {
        let spec = GroupSpec::parse(EXAMPLE).unwrap();
        assert_eq!(spec.version(), Some(2));
        assert_eq!(spec.name_str(), Some("test"));
        assert!(spec.multicast_enabled());
        assert!(spec.posting_enabled());
        assert!(!spec.object_replication_enabled());
        let unknown: Vec<_> = spec
            .unknown_options()
            .map(|o| (o.kind, o.value.to_vec()))
            .collect();
        assert_eq!(unknown, vec![(0x0c, vec![]), (0x1b, vec![])]);
        assert_eq!(spec.hashed_text(), "G:027f0201010103010c050e74657374011b");
        assert_eq!(spec.group_spec_without_authorizations(), EXAMPLE);
        assert_eq!(spec.authorizations(), b"");
        assert_eq!(spec.encode(), EXAMPLE);
        assert_eq!(spec.to_string(), EXAMPLE);
    }

    #[test]
    fn builder_reproduces_notes_example() {
        let spec = GroupSpecifier::new("test")
            .unwrap()
            .multicast_enabled(true)
            .posting_enabled(true)
            .raw_option(0x1b, [])
            .unwrap()
            .raw_option(0x0c, [])
            .unwrap();
        assert_eq!(spec.group_spec_with_authorizations(), EXAMPLE);
        assert_eq!(spec.group_spec_without_authorizations(), EXAMPLE);
        assert_eq!(spec.to_string(), EXAMPLE);
        assert_eq!(spec.group_id(), group_id(EXAMPLE).unwrap());
        assert_eq!(
            GroupSpec::parse(EXAMPLE).unwrap().to_specifier().unwrap(),
            spec
        );
    }

    #[test]
    fn builder_options() {
        let base = GroupSpecifier::new("test").unwrap();
        assert_eq!(base.to_string(), "G:027f02050e7465737400");
        assert_eq!(
            base.clone().multicast_enabled(true).to_string(),
            "G:027f020101050e7465737400"
        );
        assert_eq!(
            base.clone().object_replication_enabled(true).to_string(),
            "G:027f020102050e7465737400"
        );
        assert_eq!(
            base.clone().posting_enabled(true).to_string(),
            "G:027f020103050e7465737400"
        );
        let all = base
            .clone()
            .multicast_enabled(true)
            .object_replication_enabled(true)
            .posting_enabled(true);
        assert_eq!(all.to_string(), "G:027f02010101020103050e7465737400");
        // Disabling again removes the option.
        assert_eq!(
            all.multicast_enabled(false)
                .object_replication_enabled(false)
                .posting_enabled(false),
            base
        );
        // An empty name is still written.
        assert_eq!(
            GroupSpecifier::new("").unwrap().to_string(),
            "G:027f02010e00"
        );
    }

    #[test]
    fn builder_limits() {
        assert!(GroupSpecifier::new("x".repeat(254)).is_ok());
        assert_eq!(
            GroupSpecifier::new("x".repeat(255)),
            Err(GroupSpecError::NameTooLong { len: 255, max: 254 })
        );
        let b = GroupSpecifier::new("n").unwrap();
        for kind in RESERVED {
            assert_eq!(
                b.clone().raw_option(kind, []),
                Err(GroupSpecError::ReservedType(kind))
            );
        }
        assert_eq!(
            b.clone().raw_option(0x05, vec![0; 255]),
            Err(GroupSpecError::ValueTooLong { len: 255, max: 254 })
        );
        let long = b
            .raw_option(0x05, vec![0xab; 254])
            .unwrap()
            .with_name("y".repeat(254));
        let text = long.to_string();
        let parsed = GroupSpec::parse(&text).unwrap();
        assert_eq!(parsed.to_specifier().unwrap(), long);
    }

    impl GroupSpecifier {
        fn with_name(mut self, name: String) -> Self {
            self.name = name;
            self
        }
    }

    #[test]
    fn authorizations_not_hashed() {
        let plain = GroupSpecifier::new("room").unwrap().posting_enabled(true);
        let with = plain
            .clone()
            .with_raw_authorizations(vec![0x21, 0x05, 0xde, 0xad]);
        assert_eq!(with.authorizations(), "2105dead");
        assert_eq!(with.to_string(), format!("{}2105dead", plain));
        assert_eq!(with.group_spec_without_authorizations(), plain.to_string());
        assert_eq!(with.group_id(), plain.group_id());
        let text = with.to_string();
        let parsed = GroupSpec::parse(&text).unwrap();
        assert_eq!(parsed.authorizations(), &[0x21, 0x05, 0xde, 0xad]);
        assert_eq!(parsed.authorizations_hex(), "2105dead");
        assert_eq!(parsed.group_id(), plain.group_id());
        assert_eq!(
            parsed.group_spec_without_authorizations(),
            plain.to_string()
        );
        assert_eq!(parsed.to_specifier().unwrap(), with);
        // Even a `00` byte in the authorizations is not a second terminator.
        assert_eq!(
            group_id(&format!("{}0000", plain)).unwrap(),
            plain.group_id()
        );
    }

    #[test]
    fn version_other_than_2_hashes_once() {
        let text = "G:027f01050e7465737400";
        let once: [u8; 32] = Sha256::digest(b"G:027f01050e74657374").into();
        assert_eq!(group_id(text).unwrap(), once);
        let spec = GroupSpec::parse(text).unwrap();
        assert_eq!(spec.version(), Some(1));
        assert_eq!(spec.to_specifier(), Err(GroupSpecError::NotCanonical));
        // No version option at all: single SHA-256 too.
        let bare: [u8; 32] = Sha256::digest(b"G:050e74657374").into();
        assert_eq!(group_id("G:050e7465737400").unwrap(), bare);
    }

    #[test]
    fn parse_errors() {
        use GroupSpecError::*;
        assert_eq!(GroupSpec::parse(""), Err(MissingPrefix));
        assert_eq!(GroupSpec::parse("g:00"), Err(MissingPrefix));
        assert_eq!(GroupSpec::parse("G:"), Err(MissingTerminator));
        assert_eq!(GroupSpec::parse("G:0"), Err(OddLength));
        assert_eq!(GroupSpec::parse("G:0x"), Err(InvalidHex { offset: 3 }));
        assert_eq!(
            GroupSpec::parse("G:027F0200"),
            Err(InvalidHex { offset: 5 })
        );
        assert_eq!(GroupSpec::parse("G:é0"), Err(InvalidHex { offset: 2 }));
        assert_eq!(GroupSpec::parse("G:027f02"), Err(MissingTerminator));
        assert_eq!(
            GroupSpec::parse("G:027f0205"),
            Err(Truncated { offset: 3, len: 5 })
        );
        assert_eq!(
            GroupSpec::parse("G:02"),
            Err(Truncated { offset: 0, len: 2 })
        );
        let long = format!("G:{}", "0".repeat(MAX_GROUPSPEC_LEN));
        assert_eq!(
            GroupSpec::parse(&long),
            Err(TooLong {
                len: MAX_GROUPSPEC_LEN + 2,
                max: MAX_GROUPSPEC_LEN
            })
        );
        // The minimal groupspec: just the terminator.
        let empty = GroupSpec::parse("G:00").unwrap();
        assert_eq!(empty.options().count(), 0);
        assert_eq!(empty.hashed_text(), "G:");
        assert_eq!(empty.to_specifier(), Err(NotCanonical));
    }

    #[test]
    fn non_canonical_round_trips_through_encode() {
        // Out of order, repeated, flag with a value, unknown types: all kept.
        let text = "G:050e74657374027f0201010101020301031b01ff010c00ab";
        let spec = GroupSpec::parse(text).unwrap();
        assert_eq!(spec.encode(), text);
        assert!(spec.multicast_enabled());
        assert!(!spec.posting_enabled()); // `03` carries a value here
        assert_eq!(spec.option(0x1b), Some(&[0x01, 0xff][..]));
        assert_eq!(spec.to_specifier(), Err(GroupSpecError::NotCanonical));
    }
}
