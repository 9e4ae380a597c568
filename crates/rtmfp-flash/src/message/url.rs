//! The application a connecting client names in its EPD (RFC 7425 §5.3.1).

/// A parsed connect URL: `rtmfp://host[:port]/app[/instance...][?query]`, or
/// just `app[/instance...][?query]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectUrl {
    /// The host, when the URL had an authority (brackets of an IPv6 literal
    /// removed).
    pub host: Option<String>,
    /// The port, when given.
    pub port: Option<u16>,
    /// The application name (first path segment; may be empty).
    pub app: String,
    /// The rest of the path after the application (instance), without the
    /// leading `/`.
    pub instance: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
}

/// Parses the URL in a connecting client's EPD Ancillary Data option.
///
/// Flash Player and rtmfp-cpp send the whole `rtmfp://host:port/app/inst`
/// URI; librtmfp sends only the application name (`"app"` or `"app/inst"`).
/// Both are accepted: a string with a `scheme://` prefix is parsed as a URI
/// (any scheme, compared case-insensitively is not needed: the scheme is
/// skipped), anything else as a path. Never fails: garbage gives an app name
/// made of that garbage, for the server to accept or reject.
pub fn parse_connect_url(url: &str) -> ConnectUrl {
    let (path, host, port) = match url.find("://") {
        Some(i)
            if url[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            let rest = &url[i + 3..];
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let authority = authority.rsplit('@').next().unwrap_or_default();
            let (host, port) = split_host_port(authority);
            (path, Some(host), port)
        }
        _ => (url, None, None),
    };
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (path, None),
    };
    let path = path.trim_start_matches('/');
    let (app, instance) = path.split_once('/').unwrap_or((path, ""));
    ConnectUrl {
        host,
        port,
        app: app.to_owned(),
        instance: instance.to_owned(),
        query,
    }
}

fn split_host_port(authority: &str) -> (String, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((h, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h.to_owned(), port);
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_owned(), p.parse().ok()),
        _ => (authority.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri_and_bare_app() {
        let u = parse_connect_url("rtmfp://127.0.0.1:1935/live/room?x=1");
        assert_eq!(u.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(u.port, Some(1935));
        assert_eq!(u.app, "live");
        assert_eq!(u.instance, "room");
        assert_eq!(u.query.as_deref(), Some("x=1"));
        let u = parse_connect_url("live");
        assert_eq!(u.host, None);
        assert_eq!(u.app, "live");
        assert_eq!(u.instance, "");
        let u = parse_connect_url("rtmfp://[::1]:99/app");
        assert_eq!(
            (u.host.as_deref(), u.port, u.app.as_str()),
            (Some("::1"), Some(99), "app")
        );
        let u = parse_connect_url("rtmfp://example.com");
        assert_eq!(
            (u.host.as_deref(), u.port, u.app.as_str()),
            (Some("example.com"), None, "")
        );
        assert_eq!(parse_connect_url("/app/inst").instance, "inst");
    }
}
