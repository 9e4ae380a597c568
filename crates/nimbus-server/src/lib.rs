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
//! **Owns:** the server's shards and what they decide: one engine shard per
//! core ([`shard`]: a sans-IO `ShardCore`, an `rtmfp::Machine` owning the
//! shard's engine, its sessions, its side of the stream relay and the
//! answers to the other shards), the threads that run them (one
//! current-thread tokio runtime and one `rtmfp_tokio::Host` per shard, on
//! that shard's SO_REUSEPORT sockets, one per listen address), the connect
//! policy ([`policy`]), the peer directory ([`directory`]), the NetGroup
//! rendezvous table and its introduction policy ([`groups`]: who is in which
//! group, and which members are told about which), stream relay
//! ([`streams`]), configuration ([`config`]), metrics ([`metrics`]) and the
//! embedding of the peer-ID registry.
//!
//! **Must not touch:** wire formats and protocol state machines — those are
//! `rtmfp` (transport) and `rtmfp-flash` (crypto, AMF, NetConnection
//! messages) — nor sockets, batching, timers or the clock: those are
//! `rtmfp-tokio`'s host. This crate only decides *what* to answer.
//!
//! ## The shards' run loop
//!
//! A shard core takes datagrams, `ShardMsg` commands (from other shards,
//! the registry's answers, shutdown) and `now`; it gives datagrams, its
//! next deadline, and `ShardEvent`s (registry work, done on the control
//! runtime, which answers with a command). It reads no clock and draws no
//! randomness it was not given; it reports `is_done` once shut down and
//! its sessions are closed (or the grace period has passed). Its host
//! follows the `rtmfp::Machine` contract: after every input, drain the
//! datagrams (waiting for a full socket, never dropping), then the events,
//! then re-arm the timer. The module documentation of [`shard`] has the
//! details.
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

mod keying;
mod shard_host;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rand_core::SeedableRng;
use rtmfp_tokio::HostHandle;

pub use config::{AppConfig, ConfigError, GroupJoin, Limits, Policy, ServerConfig};
pub use metrics::Metrics;

use crate::directory::Directory;
use crate::groups::{GroupAccess, GroupTable};
use crate::shard::{ShardCore, ShardMsg, WallClock};
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
    /// Every shard's host, by shard number: its command channel and its
    /// socket counters.
    pub(crate) senders: Vec<HostHandle<ShardCore>>,
    pub(crate) registry: Option<nimbus_registry::Registry>,
    pub(crate) shard_bits: u8,
    /// The keying workers (none: each engine keys inside its shard).
    pub(crate) keying: Option<keying::KeyingPool>,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The tasks doing the shards' registry work (on the control runtime).
    registry_tasks: Vec<tokio::task::JoinHandle<()>>,
    local_addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    registry_http: Option<nimbus_registry::ServeHandle>,
    metrics_task: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

/// Asks every shard to close its sessions and stop, and waits until their
/// threads have ended.
async fn stop_shards(senders: &[HostHandle<ShardCore>], threads: Vec<JoinHandle<()>>) {
    for h in senders {
        // a shard that never started has no host to answer
        let _ = h.send(ShardMsg::Shutdown).await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
}

/// Undoes a start that failed once shards were running.
async fn abandon_start(
    shared: &Shared,
    threads: Vec<JoinHandle<()>>,
    registry_http: Option<nimbus_registry::ServeHandle>,
) {
    stop_shards(&shared.senders, threads).await;
    if let Some(h) = registry_http {
        let _ = h.shutdown().await;
    }
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
            let first = shard_host::bind(*want, nshards > 1)
                .with_context(|| format!("cannot listen on udp {want}"))?;
            let actual = first.local_addr()?;
            local_addrs.push(actual);
            per_shard[0].push(first);
            for socks in per_shard.iter_mut().skip(1) {
                socks
                    .push(shard_host::bind(actual, true).with_context(|| {
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

        // the metrics endpoint's address, bound before anything runs
        let metrics_listener = match config.metrics.listen {
            Some(listen) => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot serve metrics on {listen}"))?;
                let addr = listener.local_addr()?;
                Some((listener, addr))
            }
            None => None,
        };

        let channels: Vec<_> = (0..nshards).map(|_| shard_host::channel()).collect();
        let senders: Vec<HostHandle<ShardCore>> = channels.iter().map(|c| c.handle()).collect();
        let metrics = Arc::new(Metrics::default());
        metrics.count_traffic_of(senders.clone());
        let apps = config.effective_apps();
        let group_access = apps
            .iter()
            .map(GroupAccess::from_app)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let workers = match config.limits.keying_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let keying = keying::KeyingPool::start(
            workers,
            nshards * config.limits.keyings_in_flight,
            senders.clone(),
        )
        .context("cannot start the keying workers")?;
        let shared = Arc::new(Shared {
            keying: Some(keying),
            apps,
            group_access,
            groups: GroupTable::new(config.limits.max_groups, config.limits.max_group_members),
            directory: Directory::new(),
            streams: StreamTable::new(nshards),
            metrics: metrics.clone(),
            senders,
            registry: registry.clone(),
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

        let registry_http = match (&registry, config.registry.as_ref().and_then(|r| r.listen)) {
            (Some(reg), Some(listen)) => Some(
                nimbus_registry::serve(reg, listen)
                    .await
                    .with_context(|| format!("cannot serve the registry on {listen}"))?,
            ),
            _ => None,
        };

        // engines: one core per shard, each on its own thread and host
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let mut cores = Vec::with_capacity(nshards);
        let identity = shard_host::Identity::new(&config, rtmfp_tokio::now())?;
        for id in 0..nshards {
            let now = rtmfp_tokio::now();
            let ep = shard_host::endpoint(&config, &identity, id, nshards, shard_bits, true);
            cores.push(ShardCore::new(
                id,
                shared.clone(),
                ep,
                rand_chacha::ChaCha8Rng::from_entropy(),
                WallClock::new(now, SystemTime::now()),
                now,
            ));
        }
        let mut threads = Vec::with_capacity(nshards);
        let mut readies = Vec::with_capacity(nshards);
        let shards = cores.into_iter().zip(per_shard).zip(channels).enumerate();
        for (id, ((core, socks), channel)) in shards {
            match shard_host::spawn(id, core, socks, channel, grace) {
                Ok((thread, ready)) => {
                    threads.push(thread);
                    readies.push(ready);
                }
                Err(e) => {
                    abandon_start(&shared, threads, registry_http).await;
                    return Err(e).context(format!("cannot start shard {id}"));
                }
            }
        }
        let mut registry_tasks = Vec::new();
        for (id, ready) in readies.into_iter().enumerate() {
            let events = match ready.await {
                Ok(Ok(events)) => events,
                failed => {
                    abandon_start(&shared, threads, registry_http).await;
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "its thread ended".to_string(),
                    };
                    anyhow::bail!("cannot start shard {id}: {why}");
                }
            };
            // without a registry the cores have no work for it (their
            // hosts would discard the events)
            if let Some(reg) = &registry {
                let shard = shared.senders[id].clone();
                registry_tasks.push(tokio::spawn(shard_host::serve_registry(
                    shard,
                    events,
                    reg.clone(),
                )));
            }
        }

        let mut metrics_addr = None;
        let mut metrics_task = None;
        if let Some((listener, addr)) = metrics_listener {
            metrics_addr = Some(addr);
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
            registry_tasks,
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
        let threads = std::mem::take(&mut self.threads);
        stop_shards(&self.shared.senders, threads).await;
        // the registry work of the last sessions (unbinding them) is done
        // before the registry closes
        for task in self.registry_tasks.drain(..) {
            let _ = task.await;
        }
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
