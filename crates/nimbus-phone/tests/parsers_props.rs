//! Property tests of the phone's parsers: the reg.cgi HTTP client
//! (`registry`), the server URL of the command line (`cli`) and the
//! `onRelay` arguments (`call`). None of them may panic on any input.

use std::net::{Ipv4Addr, Ipv6Addr};

use nimbus_phone::call::{parse_relay_args, Message};
use nimbus_phone::cli::server_host_port;
use nimbus_phone::registry::{
    parse_http_reply, parse_lookup_reply, parse_register_reply, RegistryClient,
};
use proptest::prelude::*;

/// XML whitespace as reg.cgi (or a hand-written reply) may put it.
fn ws() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,6}"
}

/// A user name as it appears in a reply (XML-escaped, so no `<`, `>`, `&`).
fn user_name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9_.-]{0,16}", "[^<>&]{0,24}",]
}

/// A peer ID in any case.
fn peer_hex() -> impl Strategy<Value = String> {
    "[0-9a-fA-F]{64}"
}

/// A host name (not an IP address).
fn host_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}"
}

/// A host as written in a URL, and as the parsers return it.
fn url_host() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| {
            let a = Ipv4Addr::from(b).to_string();
            (a.clone(), a)
        }),
        any::<[u8; 16]>().prop_map(|b| {
            let a = Ipv6Addr::from(b).to_string();
            (format!("[{a}]"), a)
        }),
        host_name().prop_map(|h| (h.clone(), h)),
    ]
}

/// A path (starting with `/`) without `?` or whitespace.
fn url_path() -> impl Strategy<Value = String> {
    "(/[a-zA-Z0-9_.~%-]{0,12}){1,4}"
}

/// A query without whitespace.
fn url_query() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_=&%.-]{0,24}"
}

/// An HTTP reply with `status` and `body`, chunked into pieces of the given
/// sizes (cycled) when `chunks` is not empty.
fn http_reply(
    status: u16,
    reason: &str,
    headers: &[String],
    body: &[u8],
    chunks: &[usize],
) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for h in headers {
        r.extend_from_slice(h.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    if chunks.is_empty() {
        r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        r.extend_from_slice(body);
        return r;
    }
    r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    let mut rest = body;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        let (c, more) = rest.split_at(n);
        r.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        r.extend_from_slice(c);
        r.extend_from_slice(b"\r\n");
        rest = more;
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_never_panic(
        raw in prop::collection::vec(any::<u8>(), 0..512),
        text in ".{0,256}",
        args in prop::collection::vec(".{0,16}", 0..5),
    ) {
        let _ = parse_http_reply(&raw);
        let lossy = String::from_utf8_lossy(&raw);
        for s in [text.as_str(), &lossy] {
            let _ = parse_register_reply(s);
            let _ = parse_lookup_reply(s);
            let _ = RegistryClient::new(s);
            let _ = RegistryClient::new(&format!("http://{s}"));
            let _ = server_host_port(s);
            let _ = server_host_port(&format!("rtmfp://{s}"));
        }
        let _ = parse_relay_args(&args);
    }

    #[test]
    fn http_parser_never_panics_on_chunked_bodies(
        head in "[ -~]{1,40}",
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut raw = format!("HTTP/1.1 200 OK\r\n{head}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
        raw.extend_from_slice(&body);
        let (status, out) = parse_http_reply(&raw).unwrap();
        prop_assert_eq!(status, 200);
        // lossy decoding makes one replacement character of at most 1 byte
        prop_assert!(out.len() <= 3 * body.len());
    }

    #[test]
    fn relay_args_parse_the_first_two(
        msg in prop::sample::select(vec![
            Message::Invite, Message::Cancel, Message::Accept,
            Message::Reject, Message::Bye, Message::Ok,
        ]),
        rest in prop::collection::vec(".{0,16}", 0..4),
        junk in "[a-zA-Z]{0,8}",
    ) {
        let mut args = vec![msg.as_str().to_string()];
        args.extend(rest.iter().cloned());
        prop_assert_eq!(
            parse_relay_args(&args),
            Some((msg, rest.first().map(String::as_str)))
        );
        if Message::parse(&junk).is_none() {
            let mut bad = vec![junk];
            bad.extend(rest);
            prop_assert_eq!(parse_relay_args(&bad), None);
        }
    }

    #[test]
    fn lookup_finds_the_identity(
        ws in prop::collection::vec(ws(), 8),
        name in user_name(),
        id in peer_hex(),
        id_first in any::<bool>(),
        prolog in prop_oneof![Just(String::new()), Just("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n".to_string())],
    ) {
        let user = format!("<user>{}{name}{}</user>", ws[0], ws[1]);
        let identity = format!("<identity>{}{id}{}</identity>", ws[2], ws[3]);
        let (a, b) = if id_first { (&identity, &user) } else { (&user, &identity) };
        let xml = format!(
            "{prolog}<result>{}<friend>{}{a}{}{b}{}</friend>{}</result>",
            ws[4], ws[5], ws[6], ws[7], ws[0]
        );
        prop_assert_eq!(parse_lookup_reply(&xml).unwrap(), Some(id.to_ascii_lowercase()));
    }

    #[test]
    fn lookup_of_unknown_user_is_none(
        ws in prop::collection::vec(ws(), 4),
        name in user_name(),
        bad_id in prop_oneof![
            Just(String::new()),
            Just("0".to_string()),
            "[0-9a-f]{1,63}",
            "[0-9a-f]{65,70}",
            "[0-9a-f]{63}[g-z]",
        ],
    ) {
        prop_assert_eq!(
            parse_lookup_reply("<result><friend><user>x</user></friend></result>").unwrap(),
            None
        );
        let xml = format!("<result>{}<friend>{}<user>{name}</user>{}</friend>{}</result>", ws[0], ws[1], ws[2], ws[3]);
        prop_assert_eq!(parse_lookup_reply(&xml).unwrap(), None);
        let xml = format!("<result><friend><user>{name}</user><identity>{bad_id}</identity></friend></result>");
        prop_assert_eq!(parse_lookup_reply(&xml).unwrap(), None);
        let input = format!("<friend><user>{name}</user></friend>");
        prop_assert!(parse_lookup_reply(&input).is_err(), "{input:?}");
    }

    #[test]
    fn register_reply(ws in ws(), ws2 in ws(), other in "[a-z0-9]{0,10}") {
        let ok = format!("<result>{ws}<update>{ws2}true{ws}</update>{ws2}</result>");
        prop_assert!(parse_register_reply(&ok).is_ok());
        if other != "true" {
            let no = format!("<result><update>{other}</update></result>");
            prop_assert!(parse_register_reply(&no).is_err());
        }
        let input = format!("<result>{ws}</result>");
        prop_assert!(parse_register_reply(&input).is_err(), "{input:?}");
    }

    #[test]
    fn http_reply_round_trips(
        status in 100u16..=599,
        reason in "[A-Za-z ]{0,20}",
        headers in prop::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,20}", 0..4),
        body in "(?s).{0,200}",
        chunked in any::<bool>(),
        chunks in prop::collection::vec(1usize..40, 1..6),
    ) {
        // headers that would change the framing are the test's own business
        prop_assume!(headers.iter().all(|h| !h.to_ascii_lowercase().contains("transfer-encoding")));
        let chunks = if chunked { chunks } else { Vec::new() };
        // chunk sizes count bytes and may split characters
        let raw = http_reply(status, &reason, &headers, body.as_bytes(), &chunks);
        prop_assert_eq!(parse_http_reply(&raw).unwrap(), (status, body.clone()));
    }

    #[test]
    fn http_reply_without_status_is_an_error(junk in "[^\r\n]{0,40}") {
        prop_assert!(parse_http_reply(junk.as_bytes()).is_err());
        let no_status = format!("{}\r\n\r\nbody", junk.split_whitespace().next().unwrap_or(""));
        prop_assert!(parse_http_reply(no_status.as_bytes()).is_err());
    }

    #[test]
    fn server_url_round_trips(
        (written, host) in url_host(),
        port in prop::option::of(any::<u16>()),
        app in "[a-zA-Z0-9_-]{0,12}(/[a-zA-Z0-9_-]{0,8}){0,2}",
        query in prop::option::of(url_query()),
    ) {
        let mut url = format!("rtmfp://{written}");
        if let Some(p) = port {
            url.push_str(&format!(":{p}"));
        }
        url.push('/');
        url.push_str(&app);
        if let Some(q) = &query {
            url.push('?');
            url.push_str(q);
        }
        prop_assert_eq!(server_host_port(&url).unwrap(), (host, port.unwrap_or(1935)));
    }

    #[test]
    fn server_url_rejects_others(
        scheme in "[a-z]{1,8}",
        (written, _host) in url_host(),
        bad_port in prop_oneof!["[1-9][0-9]{5,7}", "[a-z]{1,4}", Just(String::new())],
    ) {
        prop_assume!(scheme != "rtmfp");
        let input = format!("{scheme}://{written}/app");
        prop_assert!(server_host_port(&input).is_err(), "{input:?}");
        let input = format!("rtmfp://{written}:{bad_port}/app");
        prop_assert!(server_host_port(&input).is_err(), "{input:?}");
        prop_assert!(server_host_port("rtmfp:///app").is_err());
    }

    #[test]
    fn registry_url_accepted(
        (written, host) in url_host(),
        port in prop::option::of(any::<u16>()),
        path in prop::option::of(url_path()),
        query in prop::option::of(url_query()),
        token in any::<bool>(),
    ) {
        prop_assume!(!query.iter().flat_map(|q| q.split('&')).any(|kv| kv.starts_with("token=")));
        let mut url = format!("http://{written}");
        if let Some(p) = port {
            url.push_str(&format!(":{p}"));
        }
        let q = match (&query, token) {
            (Some(q), true) => Some(format!("token=t&{q}")),
            (Some(q), false) => Some(q.clone()),
            (None, true) => Some("token=t".to_string()),
            (None, false) => None,
        };
        if path.is_some() || q.is_some() {
            url.push_str(path.as_deref().unwrap_or("/"));
        }
        if let Some(q) = &q {
            url.push('?');
            url.push_str(q);
        }
        let c = RegistryClient::new(&url).unwrap();
        prop_assert_eq!(c.has_token(), token);
        // the fields are private; their Debug form shows what was parsed
        let want_path = match (&path, &q) {
            (Some(p), _) => p.clone(),
            (None, Some(_)) => "/".to_string(),
            (None, None) => "/reg.cgi".to_string(),
        };
        let want = format!(
            "RegistryClient {{ host: {host:?}, port: {}, path: {want_path:?}, base_query: {:?} }}",
            port.unwrap_or(80),
            q.as_deref().unwrap_or(""),
        );
        let got = format!("{c:?}");
        prop_assert_eq!(got, want);
    }

    #[test]
    fn registry_url_rejected(
        scheme in "[a-zA-Z+.-]{1,8}",
        (written, _host) in url_host(),
        bad_port in prop_oneof!["[1-9][0-9]{5,7}", "[a-z]{1,4}", "-[0-9]{1,3}"],
        rest in "[ -~]{0,20}",
    ) {
        prop_assume!(scheme != "http");
        let input = format!("{scheme}://{written}/reg.cgi");
        prop_assert!(RegistryClient::new(&input).is_err(), "{input:?}");
        let input = format!("{scheme}:{rest}");
        prop_assert!(RegistryClient::new(&input).is_err(), "{input:?}");
        let input = format!("http://{written}:{bad_port}/reg.cgi");
        prop_assert!(RegistryClient::new(&input).is_err(), "{input:?}");
        prop_assert!(RegistryClient::new("http:///reg.cgi").is_err());
        let input = format!("http://{written}/a b");
        prop_assert!(RegistryClient::new(&input).is_err(), "{input:?}");
    }
}

/// `http://[::1]/reg.cgi` (bracketed IPv6, default port) is a valid
/// registry URL (the last `:` inside the brackets is not a port separator);
/// unbracketed IPv6 is refused.
#[test]
fn registry_ipv6_without_port() {
    let a = RegistryClient::new("http://[::1]/reg.cgi").unwrap();
    assert_eq!(a, RegistryClient::new("http://[::1]:80/reg.cgi").unwrap());
    assert!(RegistryClient::new("http://::1/reg.cgi").is_err());
}

/// A chunk boundary inside a multi-byte character used to panic (byte
/// index not a char boundary); also kept as a fuzz regression input.
#[test]
fn chunk_boundary_inside_a_character() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\xc3\xa9\r\n0\r\n\r\n";
    assert!(parse_http_reply(raw).is_ok());
}
