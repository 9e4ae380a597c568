//! Only the phone's own page may drive it: real HTTP requests without the
//! secret, with a wrong one, from another origin or to another host name
//! are refused with a clear status, and nothing happens (no phone is
//! started, no login, no call). No browser needed.

use std::net::SocketAddr;
use std::time::Duration;

use nimbus_web::{WebConfig, WebPhone};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one raw HTTP/1.1 request and returns the status code, the headers
/// and the start of the body.
async fn request(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    // enough to judge: the status line and headers (a 101
                    // keeps the connection open)
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() > 12 {
                        let text = String::from_utf8_lossy(&buf);
                        if text.starts_with("HTTP/1.1 101") || text.contains("content-length") {
                            let body_ok =
                                text.split("\r\n\r\n").nth(1).is_some_and(|b| !b.is_empty());
                            if text.starts_with("HTTP/1.1 101") || body_ok {
                                break;
                            }
                        }
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(path: &str, host: &str, extra: &[&str]) -> String {
    let mut h = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for e in extra {
        h.push_str(e);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}

const UPGRADE: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

fn ws(path: &str, host: &str, origin: Option<&str>) -> String {
    let mut h = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for e in UPGRADE {
        h.push_str(e);
        h.push_str("\r\n");
    }
    if let Some(o) = origin {
        h.push_str(&format!("Origin: {o}\r\n"));
    }
    h.push_str("\r\n");
    h
}

async fn phone() -> WebPhone {
    // the server is never reached: nothing logs in
    let mut cfg = WebConfig::new(
        "rtmfp://127.0.0.1:9/phone",
        vec!["127.0.0.1:9".parse().unwrap()],
    );
    cfg.phone_bind = "127.0.0.1:0".parse().unwrap();
    WebPhone::start(cfg, None).await.unwrap()
}

#[tokio::test]
async fn the_printed_url_opens_the_page_and_nothing_else_does() {
    let p = phone().await;
    let addr = p.addr();
    let token = p.token().to_string();
    assert!(p
        .url()
        .starts_with(&format!("http://127.0.0.1:{}/?token=", addr.port())));
    assert!(token.len() >= 32, "at least 128 bits");
    let host = format!("127.0.0.1:{}", addr.port());

    // the printed URL: the page, with its protective headers
    let (status, text) = request(addr, &get(&format!("/?token={token}"), &host, &[])).await;
    assert_eq!(status, 200, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("referrer-policy: no-referrer"), "{text}");
    assert!(lower.contains("frame-ancestors 'none'"), "{text}");
    assert!(lower.contains("x-frame-options: deny"), "{text}");
    // localhost and [::1] are the same machine
    let (status, _) = request(
        addr,
        &get(
            &format!("/?token={token}"),
            &format!("localhost:{}", addr.port()),
            &[],
        ),
    )
    .await;
    assert_eq!(status, 200);

    // no token, a wrong one, a truncated one: 401
    for path in [
        "/",
        "/?token=",
        "/?token=0123",
        &format!("/?token={}", &token[..token.len() - 1]),
    ] {
        let (status, text) = request(addr, &get(path, &host, &[])).await;
        assert_eq!(status, 401, "{path}: {text}");
        assert!(text.contains("token"), "the refusal says why: {text}");
    }
    let mut wrong = token.clone().into_bytes();
    wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    let (status, _) = request(addr, &get(&format!("/?token={wrong}"), &host, &[])).await;
    assert_eq!(status, 401);

    // another host name (DNS rebinding): 421, even with the token
    for h in [
        "evil.example",
        "evil.example:80",
        &format!("evil.example:{}", addr.port()),
        "127.0.0.1:1",
    ] {
        let (status, text) = request(addr, &get(&format!("/?token={token}"), h, &[])).await;
        assert_eq!(status, 421, "{h}: {text}");
        let (status, _) = request(addr, &get("/app.js", h, &[])).await;
        assert_eq!(status, 421, "{h}");
    }

    // the code itself is public, on our host
    let (status, text) = request(addr, &get("/app.js", &host, &[])).await;
    assert_eq!(status, 200);
    assert!(text.contains("nimbusPhone"));
    // no other ways in: no POST, nothing else
    let post = format!(
        "POST /?token={token} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let (status, _) = request(addr, &post).await;
    assert_eq!(status, 405);
    let (status, _) = request(addr, &get(&format!("/state?token={token}"), &host, &[])).await;
    assert_eq!(status, 404);
    p.shutdown().await;
}

#[tokio::test]
async fn only_the_pages_own_origin_opens_the_websocket() {
    let p = phone().await;
    let addr = p.addr();
    let token = p.token().to_string();
    let host = format!("127.0.0.1:{}", addr.port());
    let own = format!("http://{host}");
    let path = format!("/ws?token={token}");

    // another web site in the same browser: 403, even with the token
    for origin in [
        Some("http://evil.example"),
        Some("https://127.0.0.1"),
        Some(&format!("http://localhost:{}", addr.port())[..]),
        Some(&format!("http://127.0.0.1:{}", addr.port() ^ 1)[..]),
        Some("null"),
        None,
    ] {
        let (status, text) = request(addr, &ws(&path, &host, origin)).await;
        assert_eq!(status, 403, "{origin:?}: {text}");
    }
    // without the token, or with the wrong host: refused before the origin
    let (status, _) = request(addr, &ws("/ws", &host, Some(&own))).await;
    assert_eq!(status, 401);
    let (status, _) = request(addr, &ws("/ws?token=x", &host, Some(&own))).await;
    assert_eq!(status, 401);
    let (status, _) = request(
        addr,
        &ws(&path, "evil.example", Some("http://evil.example")),
    )
    .await;
    assert_eq!(status, 421);
    // nothing happened: no page, no login
    let s = p.snapshot().await.unwrap();
    assert!(
        !s.page && !s.state.logged_in && s.state.user.is_none(),
        "{s:?}"
    );

    // the page's own origin, with the token: the WebSocket opens
    let (status, text) = request(addr, &ws(&path, &host, Some(&own))).await;
    assert_eq!(status, 101, "{text}");
    p.shutdown().await;
}

#[tokio::test]
async fn a_page_that_sends_garbage_is_answered_not_obeyed() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

    let p = phone().await;
    let addr = p.addr();
    let mut req = format!("ws://127.0.0.1:{}/ws?token={}", addr.port(), p.token())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "origin",
        format!("http://127.0.0.1:{}", addr.port()).parse().unwrap(),
    );
    let (mut sock, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    for bad in [
        "not json",
        r#"{"type":"login","user":"a b"}"#,
        r#"{"type":"call"}"#,
        r#"{"type":"offer","id":1,"sdp":"garbage"}"#,
    ] {
        sock.send(Message::Text(bad.into())).await.unwrap();
    }
    sock.send(Message::Binary(vec![0u8; 1000].into()))
        .await
        .unwrap();
    // the phone answers with lines (and an offer error) and stays up
    let mut errors = 0;
    let mut offer_error = false;
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while (errors < 3 || !offer_error) && tokio::time::Instant::now() < end {
        let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_secs(5), sock.next()).await
        else {
            break;
        };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "line" && v["kind"] == "error" {
            errors += 1;
        }
        if v["type"] == "offerError" && v["id"] == 1 {
            offer_error = true;
        }
    }
    assert!(errors >= 3, "each bad message is answered");
    assert!(offer_error, "the bad offer is refused");
    let s = p.snapshot().await.unwrap();
    assert!(!s.state.logged_in && s.state.user.is_none());
    // an oversized message closes the connection, not the phone
    let huge = format!(r#"{{"type":"chat","text":"{}"}}"#, "x".repeat(200_000));
    let _ = sock.send(Message::Text(huge.into())).await;
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), sock.next()).await {
            Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_))) | Err(_) => break,
            Ok(Some(Ok(_))) => {}
        }
        assert!(tokio::time::Instant::now() < end);
    }
    assert!(p.snapshot().await.is_some(), "the phone is still up");
    p.shutdown().await;
}
