//! The page's HTTP server and its WebSocket, and what keeps strangers out.
//!
//! # Security model
//!
//! The phone has a camera, a microphone, chat and the power to place calls,
//! all reachable from `http://127.0.0.1:PORT`. Anything else running in the
//! same browser (another web site) and any other user of the machine can
//! reach that address too. Only the page the phone printed may drive it:
//!
//! * **A secret per start.** [`Security::new`] draws 192 bits from the
//!   operating system; the printed URL carries it (`/?token=…`, as Jupyter
//!   does). The page and its WebSocket (`/ws?token=…`) are refused without it
//!   (**401**); it is compared in constant time. The page's code and style
//!   (`/app.js`, `/style.css`) are the same for everyone and need no token.
//!   Another local user does not see our terminal, so does not know it.
//! * **Host.** Every request must name the server as `127.0.0.1:PORT`,
//!   `localhost:PORT`, `[::1]:PORT` or the address given with `--web`
//!   (**421** otherwise): a site that points its own name at `127.0.0.1`
//!   (DNS rebinding) cannot use it.
//! * **Origin.** The WebSocket upgrade must come from the page's own origin
//!   (`Origin: http://` + the request's Host; **403** otherwise): a page of
//!   another site that learnt the token still cannot open it. There is no
//!   other way to act or to read state (no POST, no JSON endpoints): every
//!   action and every piece of state (chat, call state, the WebRTC offer
//!   and answer) travels on that WebSocket.
//! * **Headers.** `Referrer-Policy: no-referrer` (the token never leaves in
//!   a Referer), a Content-Security-Policy that allows only our own script,
//!   style and WebSocket, and no framing (`frame-ancestors 'none'`,
//!   `X-Frame-Options: DENY`): another site cannot show the page in a frame
//!   and trick clicks on it.
//! * **Media.** The WebRTC answer, with its ICE credentials and DTLS
//!   fingerprint, goes only to the page on that WebSocket, so nobody else
//!   can complete a connection to the bridge.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;

use crate::protocol::{PageMsg, PhoneMsg, MAX_MESSAGE};

/// Messages waiting for one page; a page that lets more pile up is closed.
pub const PAGE_QUEUE: usize = 512;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The secret and the names the server answers to.
#[derive(Debug, Clone)]
pub struct Security {
    token: String,
    hosts: Vec<String>,
}

impl Security {
    /// A fresh secret (from the OS) for a server on `addr`, which also
    /// answers to `extra_host` (the address as the user wrote it).
    pub fn new(addr: SocketAddr, extra_host: Option<&str>) -> Self {
        let mut b = [0u8; 24];
        OsRng.fill_bytes(&mut b);
        let token = b.iter().map(|x| format!("{x:02x}")).collect();
        Self::with_token(addr, extra_host, token)
    }

    fn with_token(addr: SocketAddr, extra_host: Option<&str>, token: String) -> Self {
        let port = addr.port();
        let mut hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        if !addr.ip().is_unspecified() {
            hosts.push(addr.to_string());
        }
        if let Some(h) = extra_host {
            hosts.push(h.to_ascii_lowercase());
        }
        hosts.sort();
        hosts.dedup();
        Security { token, hosts }
    }

    /// The secret.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The request's Host, if it is one of ours.
    fn host<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let h = headers.get(header::HOST)?.to_str().ok()?;
        self.hosts
            .iter()
            .any(|x| x.eq_ignore_ascii_case(h))
            .then_some(h)
    }

    /// The query carries the secret.
    fn token_in(&self, query: Option<&str>) -> bool {
        let Some(q) = query else {
            return false;
        };
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("token="))
            .any(|t| constant_time_eq(t.as_bytes(), self.token.as_bytes()))
    }
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// What the server tells the application.
#[derive(Debug)]
pub enum PageInput {
    /// A page connected; messages for it go to `tx`.
    Opened {
        /// Its number.
        page: u64,
        /// Its queue.
        tx: mpsc::Sender<PhoneMsg>,
    },
    /// A message from a page.
    Msg {
        /// Which page.
        page: u64,
        /// The message.
        msg: PageMsg,
    },
    /// A page went away.
    Closed {
        /// Which page.
        page: u64,
    },
}

#[derive(Debug)]
struct Shared {
    security: Security,
    app: mpsc::Sender<PageInput>,
    next_page: AtomicU64,
}

/// The router: `/` (the page), `/app.js`, `/style.css`, `/ws`.
pub fn router(security: Security, app: mpsc::Sender<PageInput>) -> Router {
    let shared = Arc::new(Shared {
        security,
        app,
        next_page: AtomicU64::new(1),
    });
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/ws", get(ws))
        .fallback(not_found)
        .with_state(shared)
}

fn refuse(status: StatusCode, text: &str) -> Response {
    let mut r = (status, format!("{text}\n")).into_response();
    hardening(r.headers_mut(), None);
    r
}

fn hardening(h: &mut HeaderMap, host: Option<&str>) {
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let connect = host.map(|h| format!(" ws://{h}")).unwrap_or_default();
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         media-src 'self' blob: mediastream:; connect-src 'self'{connect}; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert("content-security-policy", v);
    }
}

fn wrong_host() -> Response {
    refuse(
        StatusCode::MISDIRECTED_REQUEST,
        "this phone answers only to 127.0.0.1, localhost or [::1] (and its --web address)",
    )
}

fn wrong_token() -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        "open the address the phone printed at start (it ends with ?token=…)",
    )
}

fn asset(headers: &HeaderMap, st: &Shared, body: &'static str, mime: &'static str) -> Response {
    let Some(host) = st.security.host(headers) else {
        return wrong_host();
    };
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    hardening(r.headers_mut(), Some(host));
    r
}

async fn index(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if st.security.host(&headers).is_none() {
        return wrong_host();
    }
    if !st.security.token_in(q.as_deref()) {
        return wrong_token();
    }
    asset(&headers, &st, INDEX_HTML, "text/html; charset=utf-8")
}

async fn app_js(State(st): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    asset(&headers, &st, APP_JS, "text/javascript; charset=utf-8")
}

async fn style_css(State(st): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    asset(&headers, &st, STYLE_CSS, "text/css; charset=utf-8")
}

async fn not_found(State(st): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if st.security.host(&headers).is_none() {
        return wrong_host();
    }
    refuse(StatusCode::NOT_FOUND, "not found")
}

async fn ws(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Some(host) = st.security.host(&headers) else {
        return wrong_host();
    };
    if !st.security.token_in(q.as_deref()) {
        return wrong_token();
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let own = format!("http://{host}");
    if !origin.is_some_and(|o| o.eq_ignore_ascii_case(&own)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "only the phone's own page may open its WebSocket",
        );
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let page = st.next_page.fetch_add(1, Ordering::Relaxed);
    let app = st.app.clone();
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| page_task(socket, page, app))
}

/// One page's WebSocket: its messages to the application, the
/// application's to it.
async fn page_task(mut socket: WebSocket, page: u64, app: mpsc::Sender<PageInput>) {
    let (tx, mut rx) = mpsc::channel::<PhoneMsg>(PAGE_QUEUE);
    if app.send(PageInput::Opened { page, tx }).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else {
                    // the application let go of this page
                    break;
                };
                let last = matches!(m, PhoneMsg::Replaced);
                if socket.send(Message::Text(m.to_json().into())).await.is_err() || last {
                    break;
                }
            }
            m = socket.recv() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        tracing::debug!(page, "binary message ignored");
                        continue;
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                };
                match PageMsg::parse(text.as_str()) {
                    Ok(msg) => {
                        if app.send(PageInput::Msg { page, msg }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let line = PhoneMsg::Line { kind: "error", text: format!("the phone ignored a message: {e}"), unix_ms: crate::app::unix_ms() };
                        if socket.send(Message::Text(line.to_json().into())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    let _ = app.send(PageInput::Closed { page }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_secret_is_long_and_fresh() {
        let a = Security::new("127.0.0.1:8935".parse().unwrap(), None);
        let b = Security::new("127.0.0.1:8935".parse().unwrap(), None);
        assert_eq!(a.token().len(), 48);
        assert!(a.token().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.token(), b.token());
    }

    #[test]
    fn hosts_and_tokens() {
        let s = Security::with_token(
            "127.0.0.1:8935".parse().unwrap(),
            Some("Phone.Local:8935"),
            "abc".into(),
        );
        for ok in [
            "127.0.0.1:8935",
            "localhost:8935",
            "LOCALHOST:8935",
            "[::1]:8935",
            "phone.local:8935",
        ] {
            assert!(s.host(&headers(&[("host", ok)])).is_some(), "{ok}");
        }
        for bad in ["127.0.0.1:8936", "evil.example:8935", "127.0.0.1", ""] {
            assert!(s.host(&headers(&[("host", bad)])).is_none(), "{bad}");
        }
        assert!(s.host(&HeaderMap::new()).is_none());
        assert!(s.token_in(Some("token=abc")));
        assert!(s.token_in(Some("x=1&token=abc")));
        assert!(!s.token_in(Some("token=abd")));
        assert!(!s.token_in(Some("token=ab")));
        assert!(!s.token_in(Some("token=")));
        assert!(!s.token_in(Some("xtoken=abc")));
        assert!(!s.token_in(None));
    }

    #[test]
    fn constant_time_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
