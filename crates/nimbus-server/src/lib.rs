//! # nimbus-server: the Nimbus rendezvous server
//!
//! A drop-in replacement for Adobe Cirrus and the RTMFP side of Flash Media
//! Server: clients connect over RTMFP (RFC 7016) with the Flash profile
//! (RFC 7425); the server accepts or refuses them by application policy,
//! indexes their peer IDs, introduces peers to each other (Redirect and
//! Forwarded IHello, so they talk directly even behind NATs), relays calls
//! and messages, and relays streams (publish / play) when no direct path
//! exists. NetGroup members (Flash `NetGroup`, librtmfp) are introduced to
//! a few other members of their group (ring neighbours and long-range
//! hints), so they can build their mesh.
//!
//! **Owns:** the UDP sockets and threads of the server (one engine shard per
//! core on SO_REUSEPORT sockets, [`shard`]), the connect policy
//! ([`policy`]), the peer directory ([`directory`]), the NetGroup
//! rendezvous table and its introduction policy ([`groups`]: who is in which
//! group, and which members are told about which), stream relay
//! ([`streams`]), configuration ([`config`]), metrics ([`metrics`]) and the
//! embedding of the peer-ID registry.
//!
//! **Must not touch:** wire formats and protocol state machines — those are
//! `rtmfp` (transport) and `rtmfp-flash` (crypto, AMF, NetConnection
//! messages). This crate only decides *what* to answer.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let mut config = nimbus_server::ServerConfig::default();
//! config.listen = vec!["127.0.0.1:1935".parse()?];
//! let server = nimbus_server::Server::start(config).await?;
//! println!("serving on {:?}", server.local_addrs());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod config;
pub mod directory;
pub mod groups;
pub mod metrics;
pub mod policy;
pub mod shard;
pub mod streams;

mod cli;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointConfig};
use rtmfp_flash::{DhGroup, FlashProfile, Negotiation};
use tokio::sync::mpsc;

pub use cli::{run, ServerArgs};
pub use config::{AppConfig, ConfigError, GroupJoin, Limits, Policy, ServerConfig};
pub use metrics::Metrics;

use crate::directory::Directory;
use crate::groups::{GroupAccess, GroupTable};
use crate::shard::{Shard, ShardMsg, CHANNEL_CAPACITY};
use crate::streams::StreamTable;

/// State shared by every shard.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) apps: Vec<AppConfig>,
    pub(crate) directory: Directory,
    /// NetGroup members, server-wide.
    pub(crate) groups: GroupTable,
    /// Who may join which groups, per app (same order as `apps`).
    pub(crate) group_access: Vec<GroupAccess>,
    pub(crate) streams: StreamTable,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) senders: Vec<mpsc::Sender<ShardMsg>>,
    pub(crate) registry: Option<nimbus_registry::Registry>,
    pub(crate) control: tokio::runtime::Handle,
    pub(crate) shard_bits: u8,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    local_addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    registry_http: Option<nimbus_registry::ServeHandle>,
    metrics_task: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

fn dh_group(g: u8) -> DhGroup {
    match g {
        2 => DhGroup::Modp1024,
        5 => DhGroup::Modp1536,
        14 => DhGroup::Modp2048,
        _ => DhGroup::Modp4096,
    }
}

fn bind_udp(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse_port {
        #[cfg(unix)]
        s.set_reuse_port(true)?;
    }
    // a burst of handshakes must not overflow the socket
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

impl Server {
    /// Binds the listeners, starts one engine shard per core (or
    /// `config.shards`), the registry and the metrics endpoint. Must be
    /// called inside a tokio runtime (it runs the control tasks).
    pub async fn start(config: ServerConfig) -> anyhow::Result<Server> {
        config.validate()?;
        let nshards = if config.shards == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(64)
        } else {
            config.shards
        };
        let shard_bits = if nshards <= 1 {
            0
        } else {
            (usize::BITS - (nshards - 1).leading_zeros()) as u8
        };

        // sockets: every shard gets one per listen address, same port
        let mut local_addrs = Vec::new();
        let mut per_shard: Vec<Vec<std::net::UdpSocket>> =
            (0..nshards).map(|_| Vec::new()).collect();
        for want in &config.listen {
            let first = bind_udp(*want, nshards > 1)
                .with_context(|| format!("cannot listen on udp {want}"))?;
            let actual = first.local_addr()?;
            local_addrs.push(actual);
            per_shard[0].push(first);
            for socks in per_shard.iter_mut().skip(1) {
                socks
                    .push(bind_udp(actual, true).with_context(|| {
                        format!("cannot listen on udp {actual} (SO_REUSEPORT)")
                    })?);
            }
        }

        let registry = match &config.registry {
            Some(r) => {
                let reg = nimbus_registry::Registry::open(&r.db, Default::default())
                    .await
                    .with_context(|| format!("cannot open the registry database {}", r.db))?;
                Some(reg)
            }
            None => None,
        };

        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..nshards {
            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
            senders.push(tx);
            receivers.push(rx);
        }
        let metrics = Arc::new(Metrics::default());
        let apps = config.effective_apps();
        let group_access = apps
            .iter()
            .map(GroupAccess::from_app)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let shared = Arc::new(Shared {
            apps,
            group_access,
            groups: GroupTable::new(config.limits.max_groups, config.limits.max_group_members),
            directory: Directory::new(),
            streams: StreamTable::new(nshards),
            metrics: metrics.clone(),
            senders,
            registry: registry.clone(),
            control: tokio::runtime::Handle::current(),
            shard_bits,
            config: config.clone(),
        });

        if let Some(reg) = &registry {
            let s = Arc::downgrade(&shared);
            reg.set_connected_peers(Arc::new(move |hex: &str| {
                let Some(shared) = s.upgrade() else {
                    return false;
                };
                let Some(bytes) = rtmfp_flash::crypto::hex_decode(hex) else {
                    return false;
                };
                let Ok(id) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                    return false;
                };
                shared.directory.get(&id).is_some()
            }));
        }

        // engines
        let mut threads = Vec::new();
        let groups: Vec<DhGroup> = config.dh_groups.iter().map(|g| dh_group(*g)).collect();
        let auth = match config.packet_auth.as_str() {
            "required" => Negotiation::REQUIRED,
            "preferred" => Negotiation::PREFERRED,
            _ => Negotiation::ON_REQUEST,
        };
        for (id, (socks, rx)) in per_shard.into_iter().zip(receivers).enumerate() {
            let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
            let profile = FlashProfile::server(config.hostname.as_deref())
                .groups(&groups)
                .hmac(auth)
                .sseq(auth)
                .build(&mut rng)
                .map_err(|e| anyhow::anyhow!("crypto profile: {e}"))?;
            let l = &config.limits;
            let ec = EndpointConfig {
                shard_bits,
                shard: id as u32,
                report_foreign_ihello: true,
                accept_forwarded_ihello: false,
                max_sessions: (l.max_sessions / nshards).max(1),
                max_flows_per_session: l.flows_per_session,
                recv_buffer: (l.buffered_bytes_per_session / 4).max(16 << 10),
                send_buffer: l.buffered_bytes_per_session,
                idle_timeout: config.idle_timeout(),
                keepalive_interval: Duration::from_secs(30).min(config.idle_timeout() / 3),
                ihello_rate_per_source: l.handshakes_per_second_per_address,
                amplification_factor: l.amplification_factor,
                ihello_burst_per_source: l.handshakes_per_second_per_address.saturating_mul(2),
                ..EndpointConfig::default()
            };
            let ep = Endpoint::new(
                ec,
                Box::new(profile),
                Box::new(rand_chacha::ChaCha20Rng::from_entropy()),
                Instant::now(),
            );
            let shared2 = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("nimbus-shard-{id}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start shard runtime");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        let mut tsocks = Vec::new();
                        for s in socks {
                            match tokio::net::UdpSocket::from_std(s) {
                                Ok(s) => tsocks.push(s),
                                Err(e) => {
                                    tracing::error!(error = %e, "socket");
                                    return;
                                }
                            }
                        }
                        Shard::new(id, shared2, ep, tsocks, rx).run().await;
                    });
                })?;
            threads.push(t);
        }

        let registry_http = match (&registry, config.registry.as_ref().and_then(|r| r.listen)) {
            (Some(reg), Some(listen)) => Some(
                nimbus_registry::serve(reg, listen)
                    .await
                    .with_context(|| format!("cannot serve the registry on {listen}"))?,
            ),
            _ => None,
        };

        let mut metrics_addr = None;
        let mut metrics_task = None;
        if let Some(listen) = config.metrics.listen {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot serve metrics on {listen}"))?;
            metrics_addr = Some(listener.local_addr()?);
            let m = metrics.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let m = m.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            m.render(),
                        )
                    }
                }),
            );
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await;
            });
            metrics_task = Some((tx, task));
        }

        tracing::info!(
            listen = ?local_addrs,
            shards = nshards,
            metrics = ?metrics_addr,
            registry = registry.as_ref().map(|r| r.backend_name()),
            "nimbus server started"
        );
        Ok(Server {
            shared,
            threads,
            local_addrs,
            metrics_addr,
            registry_http,
            metrics_task,
        })
    }

    /// The UDP addresses the server listens on (with the real ports).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The metrics endpoint's address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The registry's HTTP address, if enabled.
    pub fn registry_addr(&self) -> Option<SocketAddr> {
        self.registry_http.as_ref().map(|h| h.local_addr())
    }

    /// The embedded registry, if configured.
    pub fn registry(&self) -> Option<&nimbus_registry::Registry> {
        self.shared.registry.as_ref()
    }

    /// Live metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Number of engine shards.
    pub fn shards(&self) -> usize {
        self.shared.senders.len()
    }

    /// Closes every session cleanly (up to `shutdown_grace_secs`), then stops
    /// the shards, the registry and the metrics endpoint.
    pub async fn shutdown(mut self) {
        for tx in &self.shared.senders {
            let _ = tx.send(ShardMsg::Shutdown).await;
        }
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        if let Some(h) = self.registry_http.take() {
            let _ = h.shutdown().await;
        }
        if let Some((tx, task)) = self.metrics_task.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
        if let Some(reg) = &self.shared.registry {
            reg.close().await;
        }
        tracing::info!("nimbus server stopped");
    }
}
