//! The legacy `reg.cgi` protocol: query-string parser and XML writer.
//!
//! Both are pure functions (no I/O), so they can be fuzzed and property-tested.
//!
//! The parser follows what `reg.cgi` gets from Python's `cgi.parse()`: pairs are
//! separated by `&` or `;`, `+` means a space, `%XX` is a byte and a `%` that does not
//! start a valid escape stays as it is, a pair without `=` or with an empty value is
//! ignored, the first `username` and `identity` win and every `friends` counts, in
//! order. Parameters it does not know (such as the client's `time` cache-buster) are
//! ignored. Unlike `reg.cgi` it refuses, with a reason, what it cannot store or answer
//! safely: values that are not UTF-8, names with control characters or longer than 64
//! characters, identities that are neither 64 hex digits nor `0`, more than
//! [`MAX_FRIENDS`] look-ups, query strings over [`MAX_QUERY_BYTES`], and requests that
//! ask for nothing.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::names::{check_name, is_valid_peer_id};

/// Longest query string (or form body) accepted by [`parse_legacy_query`], in bytes.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Most `friends` look-ups in one request.
pub const MAX_FRIENDS: usize = 100;

/// A parsed `reg.cgi` request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyRequest {
    /// The user name to register, refresh or unregister (`username`).
    pub username: Option<String>,
    /// The identity to store for `username`: 64 lower-case hex digits, or `"0"` to
    /// unregister. `None` when the request had no (non-empty) `identity`; `reg.cgi`
    /// then stores NULL.
    pub identity: Option<String>,
    /// The names to look up (`friends`), as requested, in request order.
    pub friends: Vec<String>,
    /// A bearer token given as the `token` parameter (for `authenticated` mode).
    pub token: Option<String>,
}

impl LegacyRequest {
    /// True when this request unregisters `username` (identity `0`, or none given).
    pub fn is_unregister(&self) -> bool {
        self.identity.as_deref().is_none_or(|i| i == "0")
    }
}

/// Why a legacy query string was refused. Each maps to HTTP status 400 (or 414 for
/// [`LegacyError::QueryTooLong`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// The query string is longer than [`MAX_QUERY_BYTES`].
    #[error("query string is {len} bytes long, more than the {max} allowed")]
    QueryTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A parameter's value is not UTF-8 once percent-decoded.
    #[error("parameter `{param}` is not valid UTF-8 once percent-decoded")]
    InvalidUtf8 {
        /// The parameter.
        param: &'static str,
    },
    /// A user name is empty, too long or has a control character.
    #[error("parameter `{param}`: {reason}")]
    InvalidName {
        /// The parameter (`username` or `friends`).
        param: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `identity` is neither 64 hexadecimal digits nor `0`.
    #[error("parameter `identity` must be 64 hexadecimal digits, or 0 to unregister")]
    InvalidIdentity,
    /// More than [`MAX_FRIENDS`] `friends` parameters.
    #[error("{count} `friends` parameters, at most {max} are allowed")]
    TooManyFriends {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Neither `username` nor `friends` was given.
    #[error(
        "missing parameters: give `username` and `identity` to register, or `friends` to look up"
    )]
    NothingToDo,
}

/// Decodes one `application/x-www-form-urlencoded` component the way Python 2's
/// `urllib.unquote(s.replace('+', ' '))` does: invalid escapes are kept literally.
fn form_decode(raw: &str) -> Cow<'_, [u8]> {
    let bytes = raw.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_value(raw: &str, param: &'static str) -> Result<String, LegacyError> {
    match form_decode(raw) {
        Cow::Borrowed(b) => std::str::from_utf8(b).map(str::to_owned),
        Cow::Owned(v) => String::from_utf8(v).map_err(|e| e.utf8_error()),
    }
    .map_err(|_| LegacyError::InvalidUtf8 { param })
}

fn checked_name(value: String, param: &'static str) -> Result<String, LegacyError> {
    check_name(&value).map_err(|p| LegacyError::InvalidName {
        param,
        reason: p.describe(),
    })?;
    Ok(value)
}

/// Parses a `reg.cgi` query string (without the leading `?`), or a form-encoded POST
/// body, into a [`LegacyRequest`]. Never panics, whatever the input.
pub fn parse_legacy_query(query: &str) -> Result<LegacyRequest, LegacyError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(LegacyError::QueryTooLong {
            len: query.len(),
            max: MAX_QUERY_BYTES,
        });
    }
    let mut username: Option<String> = None;
    let mut identity: Option<String> = None;
    let mut token: Option<String> = None;
    let mut friends: Vec<String> = Vec::new();
    let mut friend_count = 0usize;

    for pair in query.split(['&', ';']) {
        let Some((raw_key, raw_value)) = pair.split_once('=') else {
            continue; // no '=': ignored, as with keep_blank_values=0
        };
        if raw_value.is_empty() {
            continue; // blank values are ignored
        }
        let key = form_decode(raw_key);
        match &*key {
            b"username" if username.is_none() => {
                username = Some(decode_value(raw_value, "username")?);
            }
            b"identity" if identity.is_none() => {
                identity = Some(decode_value(raw_value, "identity")?);
            }
            b"token" if token.is_none() => {
                token = Some(decode_value(raw_value, "token")?);
            }
            b"friends" => {
                friend_count += 1;
                if friend_count > MAX_FRIENDS {
                    continue; // counted, reported below
                }
                let f = decode_value(raw_value, "friends")?;
                friends.push(checked_name(f, "friends")?);
            }
            _ => {}
        }
    }
    if friend_count > MAX_FRIENDS {
        return Err(LegacyError::TooManyFriends {
            count: friend_count,
            max: MAX_FRIENDS,
        });
    }
    // Python's decoded values can still be empty strings only if the raw value was
    // non-empty; "username=%" decodes to "%", so an empty decoded value cannot occur.
    let username = username.map(|u| checked_name(u, "username")).transpose()?;
    let identity = match (&username, identity) {
        (Some(_), Some(id)) => {
            if id == "0" {
                Some(id)
            } else if is_valid_peer_id(&id) {
                Some(id.to_ascii_lowercase())
            } else {
                return Err(LegacyError::InvalidIdentity);
            }
        }
        // An identity without a user name is ignored, as by reg.cgi.
        _ => None,
    };
    if username.is_none() && friends.is_empty() {
        return Err(LegacyError::NothingToDo);
    }
    Ok(LegacyRequest {
        username,
        identity,
        friends,
        token,
    })
}

/// Escapes text for XML element content: `&`, `<` and `>`, as `reg.cgi`'s
/// `xml.sax.saxutils.escape` does.
pub fn xml_escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// What a look-up found for one `friends` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundIdentity {
    /// The stored identity (`None` when it was registered without one; written as an
    /// empty `<identity></identity>`).
    pub identity: Option<String>,
    /// The name as stored. Written as `<registered>` when it differs from the name
    /// that was asked for (only in letter case).
    pub registered: String,
}

/// One `<friend>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendResult {
    /// The name as requested.
    pub user: String,
    /// The live registration, if any.
    pub found: Option<FoundIdentity>,
}

/// A `reg.cgi` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyReply {
    /// `<update>true|false</update>`, present when the request had a `username`.
    pub update: Option<bool>,
    /// One `<friend>` for each `friends` parameter, in request order.
    pub friends: Vec<FriendResult>,
    /// An `<error>` element (not part of `reg.cgi`; only in replies with an error
    /// status, where the Adobe client fails anyway).
    pub error: Option<String>,
}

impl LegacyReply {
    /// A reply that carries only an error message.
    pub fn error(message: impl Into<String>) -> Self {
        LegacyReply {
            error: Some(message.into()),
            ..LegacyReply::default()
        }
    }

    /// Writes the XML document, laid out like `reg.cgi`'s (tabs and newlines).
    pub fn to_xml(&self) -> String {
        let mut s = String::with_capacity(96 + self.friends.len() * 160);
        s.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<result>\n");
        if let Some(u) = self.update {
            s.push_str(if u {
                "\t<update>true</update>\n"
            } else {
                "\t<update>false</update>\n"
            });
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "\t<error>{}</error>", xml_escape(e));
        }
        for f in &self.friends {
            let _ = write!(s, "\t<friend>\n\t\t<user>{}</user>\n", xml_escape(&f.user));
            if let Some(found) = &f.found {
                let _ = writeln!(
                    s,
                    "\t\t<identity>{}</identity>",
                    xml_escape(found.identity.as_deref().unwrap_or(""))
                );
                if found.registered != f.user {
                    let _ = writeln!(
                        s,
                        "\t\t<registered>{}</registered>",
                        xml_escape(&found.registered)
                    );
                }
            }
            s.push_str("\t</friend>\n");
        }
        s.push_str("</result>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[test]
    fn register_request() {
        let q = format!("username=alice&identity={}&time=1234", id('A'));
        let r = parse_legacy_query(&q).unwrap();
        assert_eq!(r.username.as_deref(), Some("alice"));
        assert_eq!(r.identity, Some(id('a')));
        assert!(r.friends.is_empty());
        assert!(!r.is_unregister());
    }

    #[test]
    fn lookups_in_order_and_decoded() {
        let r = parse_legacy_query("friends=bob&friends=Carol+D&friends=%C3%A9ve&time=1").unwrap();
        assert_eq!(r.friends, vec!["bob", "Carol D", "éve"]);
        assert_eq!(r.username, None);
    }

    #[test]
    fn python_quirks() {
        // ';' separates too, blank values and pairs without '=' are ignored,
        // the first username wins, invalid escapes stay literal.
        let r =
            parse_legacy_query("username=a%zz;username=b&friends=&friends&friends=x%2").unwrap();
        assert_eq!(r.username.as_deref(), Some("a%zz"));
        assert_eq!(r.friends, vec!["x%2"]);
        assert!(r.is_unregister());
        let r = parse_legacy_query("username=alice&identity=0").unwrap();
        assert!(r.is_unregister());
        assert_eq!(r.identity.as_deref(), Some("0"));
    }

    #[test]
    fn errors() {
        assert_eq!(parse_legacy_query(""), Err(LegacyError::NothingToDo));
        assert_eq!(
            parse_legacy_query("time=1&identity=0"),
            Err(LegacyError::NothingToDo)
        );
        assert_eq!(
            parse_legacy_query("username=a&identity=xyz"),
            Err(LegacyError::InvalidIdentity)
        );
        assert_eq!(
            parse_legacy_query("friends=%ff"),
            Err(LegacyError::InvalidUtf8 { param: "friends" })
        );
        assert!(matches!(
            parse_legacy_query("friends=a%01"),
            Err(LegacyError::InvalidName {
                param: "friends",
                ..
            })
        ));
        let many = vec!["friends=a"; MAX_FRIENDS + 1].join("&");
        assert!(matches!(
            parse_legacy_query(&many),
            Err(LegacyError::TooManyFriends { count: 101, .. })
        ));
        let long = "a".repeat(MAX_QUERY_BYTES + 1);
        assert!(matches!(
            parse_legacy_query(&long),
            Err(LegacyError::QueryTooLong { .. })
        ));
    }

    #[test]
    fn xml_layout() {
        let reply = LegacyReply {
            update: Some(true),
            friends: vec![
                FriendResult {
                    user: "BOB".into(),
                    found: Some(FoundIdentity {
                        identity: Some(id('1')),
                        registered: "bob".into(),
                    }),
                },
                FriendResult {
                    user: "<x&y>".into(),
                    found: None,
                },
            ],
            error: None,
        };
        let expected = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<result>\n\t<update>true</update>\n\
             \t<friend>\n\t\t<user>BOB</user>\n\t\t<identity>{}</identity>\n\t\t<registered>bob</registered>\n\t</friend>\n\
             \t<friend>\n\t\t<user>&lt;x&amp;y&gt;</user>\n\t</friend>\n</result>\n",
            id('1')
        );
        assert_eq!(reply.to_xml(), expected);
    }
}
