//! Registry configuration.

use std::time::Duration;

/// `as_str`, `Display` and `FromStr` for a unit enum, from one table of
/// its variants and their names on the command line and in config files;
/// `what` names the setting in the error (`"x" is not a legacy mode (…)`).
macro_rules! keyword_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name used on the command line and in config files.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(format!(
                        "{s:?} is not {} ({})",
                        $what,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
    };
}

/// Who may use the legacy `reg.cgi` endpoint, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LegacyMode {
    /// `reg.cgi` as it was: anyone may register names and look them up, without
    /// credentials, so the unmodified Adobe sample works. Names that belong to
    /// accounts, and peer IDs that the server has bound to a session, still cannot be
    /// claimed by anonymous callers.
    Open,
    /// Every request must carry a log-in token (`token` parameter or `Authorization:
    /// Bearer`); a caller can register only its own name. Anonymous requests get 401
    /// whatever they ask for.
    #[default]
    Authenticated,
    /// For a registry embedded in the rendezvous server: a registration is accepted
    /// only for an identity whose session is connected now (and, if the server bound
    /// that session to an account, only under that account's name); look-ups return
    /// only identities that are connected now.
    ConnectedOnly,
}

keyword_enum!(LegacyMode, "a legacy mode", {
    Open => "open",
    Authenticated => "authenticated",
    ConnectedOnly => "connected-only",
});

/// SQLite's `synchronous` setting for the registry database (always in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SqliteSync {
    /// Every commit is flushed to stable storage (`fsync` of the WAL) before it is
    /// acknowledged: durable across a killed process *and* a power loss or OS crash.
    #[default]
    Full,
    /// Commits reach the OS (the WAL file) before they are acknowledged but are synced
    /// only at checkpoints: durable across a killed process, not across a power loss.
    Normal,
}

keyword_enum!(SqliteSync, "a SQLite sync mode", {
    Full => "full",
    Normal => "normal",
});

/// A token-bucket rate limit: `per_second` sustained, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second allowed on average; 0 turns the limit off.
    pub per_second: f64,
    /// Largest burst allowed.
    pub burst: u32,
}

impl RateLimit {
    /// No limit.
    pub const OFF: RateLimit = RateLimit {
        per_second: 0.0,
        burst: 0,
    };

    /// True when the limit is off.
    pub fn is_off(&self) -> bool {
        !(self.per_second.is_finite() && self.per_second > 0.0)
    }
}

/// Settings of a [`crate::Registry`].
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// A registration is visible until this long after its last refresh (`reg.cgi`:
    /// one hour).
    pub expiry: Duration,
    /// How long a log-in token stays valid.
    pub token_ttl: Duration,
    /// Rules of the legacy endpoint.
    pub legacy_mode: LegacyMode,
    /// Per-client-address limit on all requests.
    pub rate_limit: RateLimit,
    /// Stricter per-client-address limit on sign-up and log-in (each costs an Argon2
    /// hash).
    pub auth_rate_limit: RateLimit,
    /// Largest request body accepted (JSON API and form-encoded legacy POSTs).
    pub max_body_bytes: usize,
    /// SQLite durability setting.
    pub sqlite_sync: SqliteSync,
    /// Connections in the read pool (SQLite) or the whole pool (PostgreSQL);
    /// `None` picks a default.
    pub max_connections: Option<u32>,
    /// Most writes committed together in one transaction (group commit).
    pub max_write_batch: usize,
    /// Argon2 memory cost in KiB (default 19456, OWASP's minimum for Argon2id).
    pub argon2_memory_kib: u32,
    /// Argon2 time cost (iterations).
    pub argon2_iterations: u32,
    /// Most password hashes computed at once; more requests wait.
    pub max_concurrent_hashes: usize,
    /// How often expired tokens and registrations are purged and bound sessions
    /// refreshed.
    pub maintenance_interval: Duration,
    /// Domains allowed by the Flash cross-domain policy served at
    /// `/crossdomain.xml` (e.g. `videophone.example.com`, `*.example.com`, `*`), for
    /// a VideoPhone SWF loaded from another site. Empty: no policy file (404).
    pub crossdomain_allow: Vec<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            expiry: Duration::from_secs(3600),
            token_ttl: Duration::from_secs(24 * 3600),
            legacy_mode: LegacyMode::default(),
            rate_limit: RateLimit {
                per_second: 50.0,
                burst: 100,
            },
            auth_rate_limit: RateLimit {
                per_second: 0.5,
                burst: 10,
            },
            max_body_bytes: 8 * 1024,
            sqlite_sync: SqliteSync::default(),
            max_connections: None,
            max_write_batch: 512,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            max_concurrent_hashes: 2,
            maintenance_interval: Duration::from_secs(60),
            crossdomain_allow: Vec::new(),
        }
    }
}

impl RegistryConfig {
    /// Settings for tests and benchmarks: no rate limits and cheap password hashes.
    pub fn for_tests() -> Self {
        RegistryConfig {
            rate_limit: RateLimit::OFF,
            auth_rate_limit: RateLimit::OFF,
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            max_concurrent_hashes: 8,
            ..RegistryConfig::default()
        }
    }
}
