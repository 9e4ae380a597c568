//! Server configuration: a TOML file (see `docs/server.md` and
//! `deploy/nimbus-server.toml`) overridden by command-line flags.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Everything `nimbus server` needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP addresses to serve RTMFP on (IPv4 and/or IPv6).
    pub listen: Vec<SocketAddr>,
    /// Engine shards (threads, one SO_REUSEPORT socket per listen address
    /// each); 0 = one per CPU core.
    pub shards: usize,
    /// Hostname put in the server certificate (optional).
    pub hostname: Option<String>,
    /// Diffie-Hellman groups offered, strongest common one used (2, 5, 14, 16).
    pub dh_groups: Vec<u8>,
    /// HMAC / session sequence number policy: "on-request" (send when the
    /// client asks; what librtmfp needs), "preferred" or "required".
    pub packet_auth: String,
    /// Limits.
    pub limits: Limits,
    /// Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// Embedded peer-ID registry.
    pub registry: Option<RegistrySection>,
    /// Log output.
    pub log: LogConfig,
    /// Applications (chosen by the connect URL's first path segment).
    #[serde(rename = "app")]
    pub apps: Vec<AppConfig>,
    /// Seconds given to sessions to close cleanly at shutdown.
    pub shutdown_grace_secs: u64,
    /// Keepalive periods sent to clients (RFC 7425 §5.3.4), milliseconds:
    /// how often they ping the server, and peers.
    pub client_keepalive_ms: u32,
    /// Keepalive period toward peers that clients are told.
    pub peer_keepalive_ms: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec!["0.0.0.0:1935".parse().expect("literal")],
            shards: 0,
            hostname: None,
            dh_groups: vec![14, 5, 2],
            packet_auth: "on-request".into(),
            limits: Limits::default(),
            metrics: MetricsConfig::default(),
            registry: None,
            log: LogConfig::default(),
            apps: Vec::new(),
            shutdown_grace_secs: 3,
            client_keepalive_ms: 20_000,
            peer_keepalive_ms: 10_000,
        }
    }
}

/// Resource limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most sessions (open or opening) on the whole server.
    pub max_sessions: usize,
    /// Most sessions from one IP address (IPv6: one /64). The default,
    /// 65,536, is more than one IPv4 address has UDP ports: it never
    /// refuses a carrier-grade NAT; the keying budget below is what
    /// protects the CPU.
    pub sessions_per_address: usize,
    /// Most flows (both directions) per session.
    pub flows_per_session: usize,
    /// Most bytes buffered per session, each direction.
    pub buffered_bytes_per_session: usize,
    /// IHellos accepted per second from one source address (token bucket
    /// with twice this burst); 0 (the default) = unlimited: IHellos are
    /// answered from stateless cookies, and the costly part of a handshake,
    /// the keying, has its own budget below.
    pub handshakes_per_second_per_address: u32,
    /// Threads that run the Diffie-Hellman work of handshakes off the
    /// shards' packet path; 0 = one per core.
    pub keying_workers: usize,
    /// Keyings running at once per shard (on the workers); more wait.
    pub keyings_in_flight: usize,
    /// Keyings waiting per shard, served round-robin between source
    /// addresses; beyond it the source with the most waiting loses its
    /// newest (its client retransmits).
    pub keyings_waiting: usize,
    /// Most streams a connection may create.
    pub streams_per_connection: usize,
    /// Most players of one stream.
    pub players_per_stream: usize,
    /// Bytes of unacknowledged media queued to one player before video is
    /// dropped until the next keyframe.
    pub player_backlog_bytes: usize,
    /// Idle timeout: a session silent this long is closed (seconds).
    pub idle_timeout_secs: u64,
    /// Most addresses listed in one Redirect.
    pub redirect_addresses: usize,
    /// Before a client's address is proven, never send it more than this
    /// many times the bytes it sent (RHello, Redirect); 0 = no limit.
    pub amplification_factor: usize,
    /// Most NetGroups on the whole server (a join that would create one
    /// more is refused).
    pub max_groups: usize,
    /// Most members of one NetGroup (more joins are refused).
    pub max_group_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 200_000,
            sessions_per_address: 65_536,
            flows_per_session: 256,
            buffered_bytes_per_session: 2 << 20,
            handshakes_per_second_per_address: 0,
            keying_workers: 0,
            keyings_in_flight: 64,
            keyings_waiting: 4096,
            streams_per_connection: 32,
            players_per_stream: 10_000,
            player_backlog_bytes: 256 << 10,
            idle_timeout_secs: 120,
            redirect_addresses: 8,
            amplification_factor: 3,
            max_groups: 100_000,
            max_group_members: 50_000,
        }
    }
}

/// Prometheus endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// TCP address serving `GET /metrics` (none = off).
    pub listen: Option<SocketAddr>,
}

/// The embedded peer-ID registry (reg.cgi and JSON API, see `docs/registry.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySection {
    /// Database URL (`sqlite:PATH` or `postgres://...`).
    pub db: String,
    /// HTTP address of the registry API (none = used only by the server).
    pub listen: Option<SocketAddr>,
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            db: "sqlite:nimbus-registry.db".into(),
            listen: None,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "text" or "json".
    pub format: String,
    /// A tracing filter, e.g. "info" or "nimbus_server=debug".
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

/// Who may connect to an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Everybody.
    #[default]
    Open,
    /// A developer key from `developer_keys`, as the Cirrus URL path
    /// (`rtmfp://host/KEY`), the URL query `key=KEY`, or the first connect
    /// argument.
    DeveloperKey,
    /// A token signed with `token_secret` (see `docs/server.md`).
    Token,
    /// A user name and password (or registry token) known to the registry,
    /// as the first two connect arguments.
    Registry,
}

/// Who may join NetGroups in an application (see `docs/server.md`,
/// "NetGroup rendezvous").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GroupJoin {
    /// Any connected client may join any group.
    #[default]
    Open,
    /// Only the groups in `groups`.
    Listed,
    /// No groups in this app.
    None,
}

/// One application.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// The first path segment of the connect URL; "*" matches any app that
    /// no other entry names.
    pub name: String,
    /// Connect policy.
    pub policy: Policy,
    /// Accepted developer keys (policy developer-key).
    pub developer_keys: Vec<String>,
    /// HMAC-SHA256 secret of signed tokens (policy token).
    pub token_secret: Option<String>,
    /// Allow `relay` and `sendToUser` calls.
    pub relay: bool,
    /// Allow publishing and playing streams through the server.
    pub streams: bool,
    /// Allow introductions to this app's clients.
    pub introductions: bool,
    /// Who may join NetGroups: "open", "listed" (only `groups`) or "none".
    pub group_join: GroupJoin,
    /// The groups that may be joined with `group_join = "listed"`: `G:`
    /// groupspecs (hashed into their group IDs) or 64-hex-digit group IDs.
    pub groups: Vec<String>,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            name: "*".into(),
            policy: Policy::Open,
            developer_keys: Vec::new(),
            token_secret: None,
            relay: true,
            streams: true,
            introductions: true,
            group_join: GroupJoin::Open,
            groups: Vec::new(),
        }
    }
}

impl AppConfig {
    /// The app `name`, open to anyone, with the default permissions.
    pub fn open(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// The app `name` with policy developer-key, accepting `keys`.
    pub fn developer_key<K: Into<String>>(
        name: impl Into<String>,
        keys: impl IntoIterator<Item = K>,
    ) -> Self {
        Self {
            policy: Policy::DeveloperKey,
            developer_keys: keys.into_iter().map(Into::into).collect(),
            ..Self::open(name)
        }
    }

    /// The app `name` with policy token, tokens signed with `secret`.
    pub fn token(name: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            policy: Policy::Token,
            token_secret: Some(secret.into()),
            ..Self::open(name)
        }
    }

    /// The app `name` with policy registry (log-in through the registry).
    pub fn registry(name: impl Into<String>) -> Self {
        Self {
            policy: Policy::Registry,
            ..Self::open(name)
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ServerConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: ServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values and cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.is_empty() {
            return bad("at least one listen address is needed".into());
        }
        if self.shards > 64 {
            return bad(format!("shards = {} (at most 64)", self.shards));
        }
        if self.dh_groups.is_empty() {
            return bad("dh_groups is empty".into());
        }
        for g in &self.dh_groups {
            if !matches!(g, 2 | 5 | 14 | 16) {
                return bad(format!("dh_groups: unknown group {g} (2, 5, 14 or 16)"));
            }
        }
        if !matches!(
            self.packet_auth.as_str(),
            "on-request" | "preferred" | "required"
        ) {
            return bad(format!(
                "packet_auth = {:?} (on-request, preferred or required)",
                self.packet_auth
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad(format!("log.format = {:?} (text or json)", self.log.format));
        }
        let l = &self.limits;
        if l.max_sessions == 0 || l.sessions_per_address == 0 || l.flows_per_session < 4 {
            return bad(
                "limits: max_sessions and sessions_per_address must be > 0, flows_per_session >= 4"
                    .into(),
            );
        }
        if l.keyings_in_flight == 0 || l.keyings_waiting == 0 || l.keying_workers > 1024 {
            return bad(
                "limits: keyings_in_flight and keyings_waiting must be > 0, keying_workers <= 1024"
                    .into(),
            );
        }
        if l.idle_timeout_secs < 10 {
            return bad("limits.idle_timeout_secs must be at least 10".into());
        }
        if l.buffered_bytes_per_session < 64 << 10 {
            return bad("limits.buffered_bytes_per_session must be at least 65536".into());
        }
        if l.max_groups == 0 || l.max_group_members < 2 {
            return bad("limits: max_groups must be > 0 and max_group_members >= 2".into());
        }
        if self.client_keepalive_ms < 1000 || self.peer_keepalive_ms < 1000 {
            return bad("keepalive periods must be at least 1000 ms".into());
        }
        let mut names = std::collections::HashSet::new();
        for a in &self.apps {
            if a.name.is_empty() || a.name.contains('/') {
                return bad(format!("app name {:?} must be one path segment", a.name));
            }
            if !names.insert(a.name.to_ascii_lowercase()) {
                return bad(format!("app {:?} is configured twice", a.name));
            }
            match a.policy {
                Policy::DeveloperKey if a.developer_keys.is_empty() => {
                    return bad(format!(
                        "app {:?}: policy developer-key needs developer_keys",
                        a.name
                    ))
                }
                Policy::Token if a.token_secret.as_deref().unwrap_or("").len() < 16 => {
                    return bad(format!(
                        "app {:?}: policy token needs a token_secret of at least 16 characters",
                        a.name
                    ))
                }
                Policy::Registry if self.registry.is_none() => {
                    return bad(format!(
                        "app {:?}: policy registry needs a [registry] section",
                        a.name
                    ))
                }
                _ => {}
            }
            match a.group_join {
                GroupJoin::Listed if a.groups.is_empty() => {
                    return bad(format!(
                        "app {:?}: group_join = \"listed\" needs groups (or use \"none\")",
                        a.name
                    ))
                }
                GroupJoin::Open | GroupJoin::None if !a.groups.is_empty() => {
                    return bad(format!(
                        "app {:?}: groups is only used with group_join = \"listed\"",
                        a.name
                    ))
                }
                _ => {}
            }
            if a.groups.len() > 10_000 {
                return bad(format!("app {:?}: more than 10000 groups", a.name));
            }
            for g in &a.groups {
                if let Err(e) = crate::groups::parse_group(g) {
                    return bad(format!("app {:?}: {e}", a.name));
                }
            }
        }
        Ok(())
    }

    /// The applications, with an open "*" app when none is configured.
    pub fn effective_apps(&self) -> Vec<AppConfig> {
        if self.apps.is_empty() {
            vec![AppConfig::default()]
        } else {
            self.apps.clone()
        }
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.idle_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ServerConfig::default().validate().unwrap();
        let c = ServerConfig::from_toml("").unwrap();
        assert_eq!(c.effective_apps().len(), 1);
    }

    #[test]
    fn full_file_parses() {
        let c = ServerConfig::from_toml(
            r#"
            listen = ["127.0.0.1:1935", "[::1]:1935"]
            shards = 2
            dh_groups = [2]
            [limits]
            sessions_per_address = 10
            [metrics]
            listen = "127.0.0.1:9100"
            [registry]
            db = "sqlite:/tmp/x.db"
            [[app]]
            name = "live"
            [[app]]
            name = "cirrus"
            policy = "developer-key"
            developer_keys = ["0123456789abcdef"]
            [[app]]
            name = "phone"
            policy = "registry"
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.apps[1].policy, Policy::DeveloperKey);
        assert_eq!(c.limits.sessions_per_address, 10);
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let e = ServerConfig::from_toml("listen = [\"nonsense\"]").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e = ServerConfig::from_toml("bogus = 1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = ServerConfig::from_toml("[[app]]\nname='a'\npolicy='token'").unwrap_err();
        assert!(e.to_string().contains("token_secret"), "{e}");
        let e = ServerConfig::from_toml("[[app]]\nname='a'\npolicy='registry'").unwrap_err();
        assert!(e.to_string().contains("registry"), "{e}");
        let e = ServerConfig::from_toml("dh_groups = [3]").unwrap_err();
        assert!(e.to_string().contains("group 3"), "{e}");
        let e = ServerConfig::from_toml("[[app]]\nname='a'\n[[app]]\nname='A'").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = ServerConfig::from_toml("[[app]]\nname='a'\ngroup_join='listed'").unwrap_err();
        assert!(e.to_string().contains("needs groups"), "{e}");
        let e = ServerConfig::from_toml("[[app]]\nname='a'\ngroups=['G:00']").unwrap_err();
        assert!(e.to_string().contains("only used"), "{e}");
        let e = ServerConfig::from_toml("[[app]]\nname='a'\ngroup_join='listed'\ngroups=['x']")
            .unwrap_err();
        assert!(e.to_string().contains("neither"), "{e}");
        let e = ServerConfig::from_toml("[[app]]\nname='a'\ngroup_join='sometimes'").unwrap_err();
        assert!(e.to_string().contains("group_join"), "{e}");
        let e = ServerConfig::from_toml("[limits]\nmax_groups = 0").unwrap_err();
        assert!(e.to_string().contains("max_groups"), "{e}");
    }

    #[test]
    fn group_options_parse() {
        let c = ServerConfig::from_toml(
            r#"
            [limits]
            max_groups = 10
            max_group_members = 100
            [[app]]
            name = "mesh"
            group_join = "listed"
            groups = ["G:027f0201010103010c050e74657374011b00", "0505050505050505050505050505050505050505050505050505050505050505"]
            [[app]]
            name = "quiet"
            group_join = "none"
            "#,
        )
        .unwrap();
        assert_eq!(c.limits.max_groups, 10);
        assert_eq!(c.apps[0].group_join, GroupJoin::Listed);
        assert_eq!(c.apps[0].groups.len(), 2);
        assert_eq!(c.apps[1].group_join, GroupJoin::None);
        assert_eq!(AppConfig::default().group_join, GroupJoin::Open);
    }
}
