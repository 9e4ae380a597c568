//! Connect policy: which application a connect names, and whether it may
//! connect.
//!
//! The application is the first path segment of the connect URL (`tcUrl`,
//! or the `app` property): `rtmfp://host:port/app/instance`. The Cirrus form
//! `rtmfp://host/DEVELOPERKEY` selects the app whose `developer_keys`
//! contain that segment. A bare app name (what librtmfp sends as `app`) works
//! too.

use flash_amf::Value;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{AppConfig, Policy};

/// What the connect command says about where and who.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Path segments of the connect URL after the host (app, instance...).
    pub path: Vec<String>,
    /// URL query parameters.
    pub query: Vec<(String, String)>,
    /// String connect arguments (after the command object), in order.
    pub args: Vec<String>,
}

impl ConnectRequest {
    /// Builds the request from the connect command's `tcUrl` / `app`
    /// properties and its extra arguments.
    pub fn from_connect(tc_url: Option<&str>, app: Option<&str>, args: &[Value]) -> Self {
        let mut r = ConnectRequest::default();
        let url = tc_url.filter(|u| !u.is_empty()).or(app).unwrap_or("");
        // strip scheme and authority when present
        let rest = match url.find("://") {
            Some(i) => {
                let after = &url[i + 3..];
                match after.find('/') {
                    Some(j) => &after[j + 1..],
                    None => "",
                }
            }
            None => url.trim_start_matches('/'),
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        r.path = path
            .split('/')
            .filter(|s| !s.is_empty())
            .take(8)
            .map(|s| s.chars().take(256).collect())
            .collect();
        // `app` may carry a query of its own when tcUrl is absent
        if let Some(q) = query {
            for kv in q.split('&').take(32) {
                if let Some((k, v)) = kv.split_once('=') {
                    r.query.push((k.to_string(), v.to_string()));
                } else if !kv.is_empty() {
                    r.query.push((kv.to_string(), String::new()));
                }
            }
        }
        r.args = args
            .iter()
            .take(16)
            .filter_map(|v| match v {
                Value::String(s) | Value::LongString(s) => Some(s.chars().take(1024).collect()),
                _ => None,
            })
            .collect();
        r
    }

    fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The outcome of the synchronous part of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accepted; the user name the client proved or claimed, if any.
    Accept {
        /// Index of the application in the server's app list.
        app: usize,
        /// The user's name (token subject, or claimed under an open policy).
        user: Option<String>,
    },
    /// Refused, with a description for `NetConnection.Connect.Rejected`.
    Reject(String),
    /// Ask the registry whether `user` / `credential` is valid.
    CheckRegistry {
        /// Index of the application.
        app: usize,
        /// User name.
        user: String,
        /// Password or registry token.
        credential: String,
    },
}

/// Picks the application a connect names.
pub fn select_app(apps: &[AppConfig], req: &ConnectRequest) -> Option<usize> {
    let first = req.path.first().map(|s| s.as_str()).unwrap_or("");
    if let Some(i) = apps
        .iter()
        .position(|a| a.name != "*" && a.name.eq_ignore_ascii_case(first))
    {
        return Some(i);
    }
    if let Some(i) = apps
        .iter()
        .position(|a| a.developer_keys.iter().any(|k| k == first))
    {
        return Some(i);
    }
    apps.iter().position(|a| a.name == "*")
}

/// Applies an app's policy to a connect, for a client whose wall-clock
/// time is `unix_now` (token expiry).
pub fn decide(apps: &[AppConfig], req: &ConnectRequest, unix_now: u64) -> Decision {
    let Some(i) = select_app(apps, req) else {
        let name = req.path.first().cloned().unwrap_or_default();
        return Decision::Reject(format!("unknown application {name:?}"));
    };
    let app = &apps[i];
    let claimed = req
        .query_value("user")
        .map(str::to_string)
        .filter(|s| valid_name(s));
    match app.policy {
        Policy::Open => Decision::Accept {
            app: i,
            user: claimed,
        },
        Policy::DeveloperKey => {
            let first = req.path.first().map(String::as_str);
            let offered = [
                first,
                req.query_value("key"),
                req.args.first().map(String::as_str),
            ];
            if offered.iter().flatten().any(|k| {
                app.developer_keys
                    .iter()
                    .any(|d| constant_eq(d.as_bytes(), k.as_bytes()))
            }) {
                Decision::Accept {
                    app: i,
                    user: claimed,
                }
            } else {
                Decision::Reject("a valid developer key is required".into())
            }
        }
        Policy::Token => {
            let secret = app.token_secret.as_deref().unwrap_or("");
            let token = req
                .query_value("token")
                .or(req.args.first().map(String::as_str));
            match token.map(|t| verify_token(secret, &app.name, t, unix_now)) {
                Some(Ok(user)) => Decision::Accept {
                    app: i,
                    user: Some(user),
                },
                Some(Err(why)) => Decision::Reject(why.into()),
                None => Decision::Reject("a signed token is required".into()),
            }
        }
        Policy::Registry => {
            let user = req
                .args
                .first()
                .cloned()
                .or_else(|| req.query_value("user").map(str::to_string));
            let cred = req
                .args
                .get(1)
                .cloned()
                .or_else(|| req.query_value("token").map(str::to_string));
            match (user, cred) {
                (Some(user), Some(credential)) if valid_name(&user) => Decision::CheckRegistry {
                    app: i,
                    user,
                    credential,
                },
                _ => Decision::Reject(
                    "user name and password (or registry token) are required".into(),
                ),
            }
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type HmacSha256 = Hmac<Sha256>;

fn token_mac(secret: &str, app: &str, user: &str, expiry: u64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(app.as_bytes());
    mac.update(b"\n");
    mac.update(user.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.to_string().as_bytes());
    mac
}

/// Makes a connect token `USER:EXPIRY:HEXMAC` for `app`, valid until
/// `expiry` (Unix seconds): HMAC-SHA256 keyed with the app's secret over
/// `app "\n" user "\n" expiry`.
pub fn make_token(secret: &str, app: &str, user: &str, expiry: u64) -> String {
    let tag = token_mac(secret, app, user, expiry).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{user}:{expiry}:{hex}")
}

/// Checks a token made by [`make_token`]; returns its user.
pub fn verify_token(
    secret: &str,
    app: &str,
    token: &str,
    unix_now: u64,
) -> Result<String, &'static str> {
    let mut parts = token.rsplitn(3, ':');
    let (Some(hex), Some(expiry), Some(user)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("malformed token");
    };
    let expiry: u64 = expiry.parse().map_err(|_| "malformed token")?;
    if hex.len() != 64 || !valid_name(user) {
        return Err("malformed token");
    }
    let tag = rtmfp_flash::hex_decode(hex).ok_or("malformed token")?;
    token_mac(secret, app, user, expiry)
        .verify_slice(&tag)
        .map_err(|_| "invalid token")?;
    if expiry < unix_now {
        return Err("token expired");
    }
    Ok(user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Vec<AppConfig> {
        vec![
            AppConfig::open("live"),
            AppConfig::developer_key("cirrus", ["c0ffee0123"]),
            AppConfig::token("secure", "0123456789abcdef-secret"),
            AppConfig::registry("phone"),
        ]
    }

    fn req(url: &str, args: &[&str]) -> ConnectRequest {
        let args: Vec<Value> = args.iter().map(|s| Value::String(s.to_string())).collect();
        ConnectRequest::from_connect(Some(url), None, &args)
    }

    #[test]
    fn parses_urls() {
        let r = req("rtmfp://example.com:1935/live/room1?user=bob&x", &[]);
        assert_eq!(r.path, ["live", "room1"]);
        assert_eq!(r.query_value("user"), Some("bob"));
        let r = ConnectRequest::from_connect(None, Some("live"), &[]);
        assert_eq!(r.path, ["live"]);
        let r = ConnectRequest::from_connect(Some(""), Some("/live/"), &[]);
        assert_eq!(r.path, ["live"]);
        let r = req("rtmfp://host", &[]);
        assert!(r.path.is_empty());
    }

    #[test]
    fn open_and_unknown_apps() {
        let a = apps();
        assert_eq!(
            decide(&a, &req("rtmfp://h/live?user=bob", &[]), 0),
            Decision::Accept {
                app: 0,
                user: Some("bob".into())
            }
        );
        assert!(matches!(
            decide(&a, &req("rtmfp://h/nope", &[]), 0),
            Decision::Reject(m) if m.contains("nope")
        ));
    }

    #[test]
    fn developer_keys() {
        let a = apps();
        // Cirrus form
        assert!(matches!(
            decide(&a, &req("rtmfp://h/c0ffee0123", &[]), 0),
            Decision::Accept { app: 1, .. }
        ));
        assert!(matches!(
            decide(&a, &req("rtmfp://h/cirrus?key=c0ffee0123", &[]), 0),
            Decision::Accept { app: 1, .. }
        ));
        assert!(matches!(
            decide(&a, &req("rtmfp://h/cirrus", &["c0ffee0123"]), 0),
            Decision::Accept { app: 1, .. }
        ));
        assert!(matches!(
            decide(&a, &req("rtmfp://h/cirrus", &["wrong"]), 0),
            Decision::Reject(_)
        ));
    }

    #[test]
    fn tokens() {
        let a = apps();
        let t = make_token("0123456789abcdef-secret", "secure", "alice", 1000);
        assert_eq!(
            decide(&a, &req("rtmfp://h/secure", &[&t]), 999),
            Decision::Accept {
                app: 2,
                user: Some("alice".into())
            }
        );
        assert_eq!(
            decide(&a, &req("rtmfp://h/secure", &[&t]), 1001),
            Decision::Reject("token expired".into())
        );
        let forged = t.replace("alice", "mallory");
        assert_eq!(
            decide(&a, &req("rtmfp://h/secure", &[&forged]), 0),
            Decision::Reject("invalid token".into())
        );
        // a token for another app does not work here
        let other = make_token("0123456789abcdef-secret", "live", "alice", 1000);
        assert!(matches!(
            decide(&a, &req("rtmfp://h/secure", &[&other]), 0),
            Decision::Reject(_)
        ));
        for junk in ["", ":", "a:b:c", "a:1:zz", "::::"] {
            assert!(verify_token("k", "secure", junk, 0).is_err());
        }
    }

    #[test]
    fn registry_needs_credentials() {
        let a = apps();
        assert_eq!(
            decide(&a, &req("rtmfp://h/phone", &["alice", "pw"]), 0),
            Decision::CheckRegistry {
                app: 3,
                user: "alice".into(),
                credential: "pw".into()
            }
        );
        assert!(matches!(
            decide(&a, &req("rtmfp://h/phone", &["alice"]), 0),
            Decision::Reject(_)
        ));
    }
}
