//! A client of the peer-ID registry's `reg.cgi` protocol (Adobe's VideoPhone
//! sample): register `username` + `identity` after logging in, refresh every
//! 30 minutes, look up `friends`, unregister with `identity=0` on quit.
//!
//! Plain HTTP/1.1 over TCP (put TLS in front of the registry with a proxy on
//! the server side, or use `http://127.0.0.1` through a tunnel); every request
//! has a timeout and a bounded reply.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How often the sample refreshes its registration.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Longest reply read.
const MAX_REPLY: usize = 256 * 1024;
/// Timeout of one request.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the registry client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The URL is not `http://host[:port]/path[?query]`.
    #[error("registry URL must be http://HOST[:PORT]/PATH, not {0:?}")]
    BadUrl(String),
    /// Connecting, sending or receiving failed.
    #[error("registry request failed: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("registry request timed out")]
    Timeout,
    /// The service answered with an error status.
    #[error("registry answered HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Body (shortened).
        body: String,
    },
    /// The reply is not what reg.cgi sends.
    #[error("registry reply not understood: {0}")]
    BadReply(String),
}

/// A reg.cgi endpoint, e.g. `http://127.0.0.1:8080/reg.cgi?token=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryClient {
    host: String,
    port: u16,
    path: String,
    /// Query parameters that go with every request (e.g. `token=…`).
    base_query: String,
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml[start..end].trim())
}

impl RegistryClient {
    /// Parses the service URL.
    pub fn new(url: &str) -> Result<Self, RegistryError> {
        let bad = || RegistryError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path_query) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/reg.cgi"),
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_query, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            // [v6addr] or [v6addr]:port
            let (h, rest) = v6.split_once(']').ok_or_else(bad)?;
            let port = match rest {
                "" => 80,
                r => r
                    .strip_prefix(':')
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(bad)?,
            };
            (h, port)
        } else {
            match authority.split_once(':') {
                // one colon: host:port; more need brackets
                Some((h, p)) if !p.contains(':') => (h, p.parse::<u16>().map_err(|_| bad())?),
                Some(_) => return Err(bad()),
                None => (authority, 80),
            }
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(RegistryClient {
            host: host.to_string(),
            port,
            path: path.to_string(),
            base_query: query.to_string(),
        })
    }

    async fn get(&self, query: &str) -> Result<String, RegistryError> {
        let q = if self.base_query.is_empty() {
            query.to_string()
        } else {
            format!("{}&{query}", self.base_query)
        };
        self.request("GET", &format!("{}?{q}", self.path), None)
            .await
    }

    async fn request(
        &self,
        method: &str,
        target: &str,
        json: Option<&str>,
    ) -> Result<String, RegistryError> {
        let fut = async {
            let mut s = TcpStream::connect((self.host.as_str(), self.port)).await?;
            let host = if self.host.contains(':') {
                format!("[{}]:{}", self.host, self.port)
            } else {
                format!("{}:{}", self.host, self.port)
            };
            let mut req = format!(
                "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nimbus-phone\r\nConnection: close\r\n"
            );
            if let Some(b) = json {
                req.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                ));
            } else {
                req.push_str("\r\n");
            }
            s.write_all(req.as_bytes()).await?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_REPLY {
                    return Err(RegistryError::BadReply("reply too large".into()));
                }
            }
            Ok::<_, RegistryError>(buf)
        };
        let buf = tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| RegistryError::Timeout)??;
        let (status, body) = parse_http_reply(&buf)?;
        if status != 200 {
            return Err(RegistryError::Status {
                status,
                body: body.chars().take(200).collect(),
            });
        }
        Ok(body)
    }

    /// Whether requests carry a token (`token=` in the URL or from
    /// [`log_in`](Self::log_in)).
    pub fn has_token(&self) -> bool {
        self.base_query
            .split('&')
            .any(|kv| kv.starts_with("token="))
    }

    /// Logs in with the JSON API (`POST /api/v1/sessions`) of a Nimbus
    /// registry on the same host and adds the token to every reg.cgi
    /// request (the registry's `authenticated` legacy mode).
    pub async fn log_in(&mut self, user: &str, password: &str) -> Result<(), RegistryError> {
        let body = serde_json::json!({ "name": user, "password": password }).to_string();
        let reply = self
            .request("POST", "/api/v1/sessions", Some(&body))
            .await?;
        let v: serde_json::Value = serde_json::from_str(&reply)
            .map_err(|e| RegistryError::BadReply(format!("log-in reply: {e}")))?;
        let token = v
            .get("token")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| RegistryError::BadReply("log-in reply has no token".into()))?;
        let t = format!("token={}", enc(token));
        self.base_query = if self.base_query.is_empty() {
            t
        } else {
            format!("{}&{t}", self.base_query)
        };
        Ok(())
    }

    /// `?username=U&identity=ID` (also the 30-minute refresh, with `time`).
    pub async fn register(&self, user: &str, peer_id: &str) -> Result<(), RegistryError> {
        let body = self
            .get(&format!(
                "username={}&identity={}&time={}",
                enc(user),
                enc(peer_id),
                now_ms()
            ))
            .await?;
        parse_register_reply(&body)
    }

    /// `?username=U&identity=0`.
    pub async fn unregister(&self, user: &str) -> Result<(), RegistryError> {
        self.get(&format!("username={}&identity=0", enc(user)))
            .await
            .map(|_| ())
    }

    /// `?friends=U&time=…`: the registered peer ID, or `None`.
    pub async fn lookup(&self, user: &str) -> Result<Option<String>, RegistryError> {
        let body = self
            .get(&format!("friends={}&time={}", enc(user), now_ms()))
            .await?;
        parse_lookup_reply(&body)
    }
}

/// Splits a raw HTTP/1.x reply into its status and body (chunked bodies
/// are de-chunked). Never panics.
pub fn parse_http_reply(raw: &[u8]) -> Result<(u16, String), RegistryError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| RegistryError::BadReply("no HTTP header".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RegistryError::BadReply("no HTTP status".into()))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    // chunk sizes count bytes: de-chunk before decoding UTF-8
    let body = if chunked {
        String::from_utf8_lossy(&dechunk(body)).into_owned()
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    Ok((status, body))
}

/// Reads a reg.cgi registration reply (`<result><update>true</update>…`).
pub fn parse_register_reply(body: &str) -> Result<(), RegistryError> {
    match element(body, "update") {
        Some("true") => Ok(()),
        Some(other) => Err(RegistryError::BadReply(format!(
            "update = {}",
            other.chars().take(40).collect::<String>()
        ))),
        None => Err(RegistryError::BadReply("no <update> in the reply".into())),
    }
}

/// Reads a reg.cgi look-up reply: the first friend's identity when it is a
/// peer ID (64 hex digits, lower-cased), `None` for an unknown user.
pub fn parse_lookup_reply(body: &str) -> Result<Option<String>, RegistryError> {
    if !body.contains("<result") {
        return Err(RegistryError::BadReply(
            "HTTP response has no result".into(),
        ));
    }
    let id = element(body, "friend").and_then(|f| element(f, "identity"));
    Ok(id
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase))
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let (len, after) = (&rest[..eol], &rest[eol + 2..]);
        let Some(n) = std::str::from_utf8(len)
            .ok()
            .and_then(|l| usize::from_str_radix(l.trim(), 16).ok())
        else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.extend_from_slice(&after[..n]);
        rest = &after[n..];
        while let Some(r) = rest.strip_prefix(b"\r\n") {
            rest = r;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let c = RegistryClient::new("http://127.0.0.1:8080/reg.cgi?token=abc").unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 8080);
        assert_eq!(c.path, "/reg.cgi");
        assert_eq!(c.base_query, "token=abc");
        let c = RegistryClient::new("http://example.com").unwrap();
        assert_eq!((c.port, c.path.as_str()), (80, "/reg.cgi"));
        let c = RegistryClient::new("http://[::1]:9/cgi-bin/reg.cgi").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 9));
        for bad in [
            "https://x/reg.cgi",
            "ftp://x",
            "http://:80/",
            "http://h:99999/",
        ] {
            assert!(RegistryClient::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_reg_cgi_replies() {
        let x = "<result>\n\t<friend>\n\t\t<user>bob</user>\n\t\t<identity>AB</identity>\n\t</friend>\n</result>";
        assert_eq!(
            element(element(x, "friend").unwrap(), "identity"),
            Some("AB")
        );
        assert_eq!(
            element("<result><update>true</update></result>", "update"),
            Some("true")
        );
        assert_eq!(
            element(
                "<result><friend><user>x</user></friend></result>",
                "identity"
            ),
            None
        );
        assert_eq!(enc("a b&c=ü"), "a%20b%26c%3D%C3%BC");
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
        // chunk sizes count bytes, and may split a character (é = C3 A9)
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\xc3\r\n2\r\n\xa9x\r\n0\r\n\r\n";
        assert_eq!(parse_http_reply(raw).unwrap(), (200, "\u{e9}x".to_string()));
    }
}
