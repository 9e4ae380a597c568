//! `nimbus server` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use nimbus_server::config::{AppConfig, Policy, RegistrySection, ServerConfig};
use nimbus_server::Server;

/// Arguments of `nimbus server`. Flags override the configuration file.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ServerArgs {
    /// UDP address to serve RTMFP on (repeat for several, e.g. IPv4 and IPv6).
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// TOML configuration file (see docs/server.md).
    #[arg(long, value_name = "FILE", env = "NIMBUS_SERVER_CONFIG")]
    config: Option<PathBuf>,
    /// Engine shards (threads); 0 = one per core.
    #[arg(long)]
    shards: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Embed the peer-ID registry on this database (sqlite:PATH or postgres://...).
    #[arg(long, value_name = "URL")]
    registry_db: Option<String>,
    /// Serve the registry's HTTP API (reg.cgi and JSON) on this address.
    #[arg(long, value_name = "ADDR")]
    registry_listen: Option<SocketAddr>,
    /// Accept only connects with one of these developer keys (Cirrus style,
    /// `rtmfp://host/KEY`) on every app without its own configuration.
    #[arg(long = "developer-key", value_name = "KEY")]
    developer_keys: Vec<String>,
    /// Diffie-Hellman groups to offer (comma separated: 2,5,14,16).
    #[arg(long, value_delimiter = ',')]
    dh_groups: Option<Vec<u8>>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Log filter (e.g. info, debug, nimbus_server=debug).
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

impl ServerArgs {
    /// The effective configuration: file (if any), then flags.
    pub(crate) fn to_config(&self) -> anyhow::Result<ServerConfig> {
        let mut c = match &self.config {
            Some(p) => ServerConfig::from_file(p)?,
            None => ServerConfig::default(),
        };
        if !self.listen.is_empty() {
            c.listen = self.listen.clone();
        }
        if let Some(n) = self.shards {
            c.shards = n;
        }
        if let Some(m) = self.metrics {
            c.metrics.listen = Some(m);
        }
        if let Some(db) = &self.registry_db {
            let r = c.registry.get_or_insert_with(RegistrySection::default);
            r.db = db.clone();
        }
        if let Some(l) = self.registry_listen {
            let r = c.registry.get_or_insert_with(RegistrySection::default);
            r.listen = Some(l);
        }
        if !self.developer_keys.is_empty() {
            if c.apps.iter().any(|a| a.name == "*") {
                for a in c.apps.iter_mut().filter(|a| a.name == "*") {
                    a.policy = Policy::DeveloperKey;
                    a.developer_keys = self.developer_keys.clone();
                }
            } else {
                c.apps
                    .push(AppConfig::developer_key("*", self.developer_keys.clone()));
            }
        }
        if let Some(g) = &self.dh_groups {
            c.dh_groups = g.clone();
        }
        if self.log_json {
            c.log.format = "json".into();
        }
        if let Some(f) = &self.log {
            c.log.filter = f.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

fn init_logging(c: &ServerConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&c.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if c.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Runs the server until SIGINT or SIGTERM, then shuts it down cleanly.
pub(crate) async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.to_config()?;
    init_logging(&config);
    let server = Server::start(config).await?;
    for a in server.local_addrs() {
        eprintln!("nimbus server: rtmfp://{a}/");
    }
    if let Some(m) = server.metrics_addr() {
        eprintln!("nimbus server: metrics at http://{m}/metrics");
    }
    if let Some(r) = server.registry_addr() {
        eprintln!("nimbus server: registry at http://{r}/");
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "listen = [\"127.0.0.1:1935\"]\nshards = 4\n").unwrap();
        let a = ServerArgs {
            config: Some(f),
            listen: vec!["127.0.0.1:2000".parse().unwrap()],
            developer_keys: vec!["k".into()],
            ..ServerArgs::default()
        };
        let c = a.to_config().unwrap();
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:2000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.shards, 4);
        assert_eq!(c.apps[0].policy, Policy::DeveloperKey);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let a = ServerArgs {
            config: Some("/nonexistent/x.toml".into()),
            ..ServerArgs::default()
        };
        let e = a.to_config().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }
}
