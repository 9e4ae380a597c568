//! Property tests of the legacy query-string parser and XML writer.

use nimbus_registry::legacy::{
    parse_legacy_query, xml_escape, FoundIdentity, FriendResult, LegacyReply, MAX_FRIENDS,
};
use proptest::prelude::*;

/// Percent-encodes everything but unreserved characters; spaces become `+` or `%20`.
fn encode(s: &str, plus_for_space: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' if plus_for_space => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Texts of all `<tag>…</tag>` elements, in order.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn name() -> impl Strategy<Value = String> {
    // 1..=64 characters, no control characters: ASCII, markup characters and
    // non-ASCII letters.
    proptest::collection::vec(
        prop_oneof![
            proptest::char::range('a', 'z'),
            proptest::char::range('A', 'Z'),
            Just(' '),
            Just('<'),
            Just('>'),
            Just('&'),
            Just('%'),
            Just('+'),
            Just('='),
            Just(';'),
            Just('é'),
            Just('Ж'),
            Just('😀'),
        ],
        1..=64,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn peer_id() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(b"0123456789abcdef".to_vec()), 64)
        .prop_map(|v| String::from_utf8(v).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The parser never panics, and whatever it accepts is within the limits.
    #[test]
    fn parser_total(input in ".{0,600}") {
        if let Ok(r) = parse_legacy_query(&input) {
            prop_assert!(r.username.is_some() || !r.friends.is_empty());
            prop_assert!(r.friends.len() <= MAX_FRIENDS);
            for f in &r.friends {
                prop_assert!(!f.is_empty() && f.chars().count() <= 64);
                prop_assert!(!f.chars().any(char::is_control));
            }
        }
    }

    /// Raw bytes-ish input made of separators and escapes never panics either.
    #[test]
    fn parser_total_on_query_alphabet(input in "[a-z=&;%+0-9A-F]{0,300}") {
        let _ = parse_legacy_query(&input);
    }

    /// Encoding a request and parsing it gives it back.
    #[test]
    fn parser_round_trip(
        user in proptest::option::of(name()),
        id in peer_id(),
        friends in proptest::collection::vec(name(), 0..8),
        plus in any::<bool>(),
        time in any::<u64>(),
    ) {
        prop_assume!(user.is_some() || !friends.is_empty());
        let mut parts = Vec::new();
        if let Some(u) = &user {
            parts.push(format!("username={}", encode(u, plus)));
            parts.push(format!("identity={}", id.to_uppercase()));
        }
        for f in &friends {
            parts.push(format!("friends={}", encode(f, plus)));
        }
        parts.push(format!("time={time}"));
        let r = parse_legacy_query(&parts.join("&")).unwrap();
        prop_assert_eq!(&r.username, &user);
        prop_assert_eq!(r.identity, user.as_ref().map(|_| id.clone()));
        prop_assert_eq!(r.friends, friends);
    }

    /// The XML is well-formed in the ways the client relies on: every name comes back
    /// unchanged after unescaping, no markup character leaks, the layout is reg.cgi's.
    #[test]
    fn xml_writer(
        update in proptest::option::of(any::<bool>()),
        entries in proptest::collection::vec((name(), proptest::option::of((proptest::option::of(peer_id()), name()))), 0..6),
    ) {
        let reply = LegacyReply {
            update,
            friends: entries
                .iter()
                .map(|(user, found)| FriendResult {
                    user: user.clone(),
                    found: found.as_ref().map(|(identity, registered)| FoundIdentity {
                        identity: identity.clone(),
                        registered: registered.clone(),
                    }),
                })
                .collect(),
            error: None,
        };
        let xml = reply.to_xml();
        prop_assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<result>\n"));
        prop_assert!(xml.ends_with("</result>\n"));
        let users: Vec<String> = elements(&xml, "user").into_iter().map(unescape).collect();
        let expected: Vec<String> = entries.iter().map(|e| e.0.clone()).collect();
        prop_assert_eq!(users, expected);
        for text in elements(&xml, "user").into_iter().chain(elements(&xml, "registered")) {
            prop_assert!(!text.contains('<') && !text.contains('>'));
            // Every '&' starts an entity.
            for (i, _) in text.match_indices('&') {
                let rest = &text[i..];
                prop_assert!(rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;"));
            }
        }
        prop_assert_eq!(elements(&xml, "friend").len(), entries.len());
        let n_found = entries.iter().filter(|e| e.1.is_some()).count();
        prop_assert_eq!(elements(&xml, "identity").len(), n_found);
        let n_registered = entries
            .iter()
            .filter(|e| e.1.as_ref().is_some_and(|(_, reg)| *reg != e.0))
            .count();
        prop_assert_eq!(elements(&xml, "registered").len(), n_registered);
        prop_assert_eq!(xml.contains("<update>"), update.is_some());
    }

    #[test]
    fn escape_is_reversible(s in ".{0,100}") {
        prop_assert_eq!(unescape(&xml_escape(&s)), s);
    }
}
