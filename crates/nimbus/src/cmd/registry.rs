//! `nimbus registry`: the peer-ID registry as a service of its own.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use nimbus_registry::{
    redact_url, serve, LegacyMode, RateLimit, Registry, RegistryConfig, RegistryError, SqliteSync,
};

/// The command line of `nimbus registry …`.
#[derive(Clone, clap::Args)]
pub(crate) struct RegistryArgs {
    /// Address to listen on for HTTP.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Database: `sqlite:PATH` (created if missing) or
    /// `postgres://USER:PASSWORD@HOST[:PORT]/DB`.
    #[arg(
        long,
        env = "NIMBUS_REGISTRY_DB",
        default_value = "sqlite:nimbus-registry.sqlite",
        hide_env_values = true
    )]
    db: String,

    /// A registration expires this many seconds after its last refresh.
    #[arg(long, default_value_t = 3600)]
    expiry_secs: u64,

    /// Rules of the legacy reg.cgi endpoint: `open` (anyone, as the original
    /// reg.cgi; needed by the unmodified Adobe sample against a standalone registry),
    /// `authenticated` (token required) or `connected-only` (embedded in the server:
    /// only identities of sessions connected now).
    #[arg(long, default_value_t = LegacyMode::Authenticated)]
    legacy_mode: LegacyMode,

    /// Lifetime of log-in tokens, in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    token_ttl_secs: u64,

    /// Requests per second allowed per client address (0 turns the limit off).
    #[arg(long, default_value_t = 50.0)]
    rate_limit: f64,

    /// Burst allowed above the per-address rate.
    #[arg(long, default_value_t = 100)]
    rate_burst: u32,

    /// Sign-ups and log-ins per minute allowed per client address (0 = no limit).
    #[arg(long, default_value_t = 30.0)]
    auth_rate_per_min: f64,

    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 8192)]
    max_body_bytes: usize,

    /// SQLite durability: `full` syncs every commit to disk (survives power loss),
    /// `normal` survives a killed process but not a power loss.
    #[arg(long, default_value_t = SqliteSync::Full)]
    sqlite_synchronous: SqliteSync,

    /// Database connections for reads (default: 4 for SQLite, 8 for PostgreSQL).
    #[arg(long)]
    db_connections: Option<u32>,

    /// Serve a Flash cross-domain policy at /crossdomain.xml allowing this domain
    /// (repeatable; `*.example.com` and `*` work), for a VideoPhone SWF hosted on
    /// another site.
    #[arg(long = "crossdomain-allow", value_name = "DOMAIN")]
    crossdomain_allow: Vec<String>,
}

impl Default for RegistryArgs {
    /// The same defaults as the command line's.
    fn default() -> Self {
        RegistryArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            db: "sqlite:nimbus-registry.sqlite".to_owned(),
            expiry_secs: 3600,
            legacy_mode: LegacyMode::Authenticated,
            token_ttl_secs: 24 * 3600,
            rate_limit: 50.0,
            rate_burst: 100,
            auth_rate_per_min: 30.0,
            max_body_bytes: 8192,
            sqlite_synchronous: SqliteSync::Full,
            db_connections: None,
            crossdomain_allow: Vec::new(),
        }
    }
}

impl std::fmt::Debug for RegistryArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryArgs")
            .field("listen", &self.listen)
            .field("db", &redact_url(&self.db))
            .field("expiry_secs", &self.expiry_secs)
            .field("legacy_mode", &self.legacy_mode)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("rate_limit", &self.rate_limit)
            .field("rate_burst", &self.rate_burst)
            .field("auth_rate_per_min", &self.auth_rate_per_min)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .field("db_connections", &self.db_connections)
            .field("crossdomain_allow", &self.crossdomain_allow)
            .finish()
    }
}

impl RegistryArgs {
    /// Opens the registry these settings describe (for embedding: the caller then
    /// mounts [`Registry::router`]).
    pub(crate) async fn open(&self) -> Result<Registry, RegistryError> {
        Registry::open(&self.db, self.to_config()).await
    }

    /// The [`RegistryConfig`] these arguments describe.
    pub(crate) fn to_config(&self) -> RegistryConfig {
        RegistryConfig {
            expiry: Duration::from_secs(self.expiry_secs.max(1)),
            token_ttl: Duration::from_secs(self.token_ttl_secs.max(1)),
            legacy_mode: self.legacy_mode,
            rate_limit: RateLimit {
                per_second: self.rate_limit.max(0.0),
                burst: self.rate_burst.max(1),
            },
            auth_rate_limit: RateLimit {
                per_second: self.auth_rate_per_min.max(0.0) / 60.0,
                burst: (self.auth_rate_per_min.max(0.0) / 3.0).ceil().max(1.0) as u32,
            },
            max_body_bytes: self.max_body_bytes.max(64),
            sqlite_sync: self.sqlite_synchronous,
            max_connections: self.db_connections,
            crossdomain_allow: self.crossdomain_allow.clone(),
            ..RegistryConfig::default()
        }
    }
}

/// Waits for Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs the registry service until Ctrl-C or SIGTERM, then shuts down gracefully
/// (requests in flight finish, every acknowledged write is already committed).
///
/// Prints one line `nimbus-registry listening on http://ADDR` to standard output once
/// it accepts connections (tests read it).
pub(crate) async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
    let registry = args
        .open()
        .await
        .with_context(|| format!("cannot open the registry database {}", redact_url(&args.db)))?;
    let handle = serve(&registry, args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if args.legacy_mode == LegacyMode::Open {
        tracing::warn!(
            "legacy endpoint is open: anyone can register unowned names and look names up"
        );
    }
    println!(
        "nimbus-registry listening on {} (db {}, legacy mode {})",
        handle.base_url(),
        redact_url(&args.db),
        args.legacy_mode.as_str()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await.context("HTTP server failed")?;
    registry.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: RegistryArgs,
    }

    #[test]
    fn defaults_agree() {
        let parsed = Cli::try_parse_from(["x"]).unwrap().args;
        let default = RegistryArgs::default();
        // NIMBUS_REGISTRY_DB may be set in the environment; compare the rest.
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(parsed.expiry_secs, default.expiry_secs);
        assert_eq!(parsed.legacy_mode, default.legacy_mode);
        assert_eq!(parsed.token_ttl_secs, default.token_ttl_secs);
        assert_eq!(parsed.rate_limit, default.rate_limit);
        assert_eq!(parsed.rate_burst, default.rate_burst);
        assert_eq!(parsed.auth_rate_per_min, default.auth_rate_per_min);
        assert_eq!(parsed.max_body_bytes, default.max_body_bytes);
        assert_eq!(parsed.sqlite_synchronous, default.sqlite_synchronous);
        assert_eq!(parsed.db_connections, default.db_connections);
    }

    #[test]
    fn parses_flags() {
        let a = Cli::try_parse_from([
            "x",
            "--listen",
            "0.0.0.0:9000",
            "--db",
            "postgres://u:secret@h/db",
            "--legacy-mode",
            "connected-only",
            "--expiry-secs",
            "60",
        ])
        .unwrap()
        .args;
        assert_eq!(a.legacy_mode, LegacyMode::ConnectedOnly);
        assert_eq!(a.to_config().expiry, Duration::from_secs(60));
        assert!(!format!("{a:?}").contains("secret"));
        assert!(Cli::try_parse_from(["x", "--legacy-mode", "nope"]).is_err());
    }
}
