//! The shards' I/O: each shard is a thread with a current-thread tokio
//! runtime running an [`rtmfp_tokio::Host`] around its `ShardCore`, on its
//! own SO_REUSEPORT sockets (one per listen address). The host does every
//! socket operation (batched receive, GSO send, waiting for a full socket),
//! the timers and the command channel; the core does the rest.
//!
//! A shard's registry work ([`ShardEvent`]s) is done on the control runtime
//! (the one [`Server::start`](crate::Server::start) was called on) by
//! [`serve_registry`], which answers through the shard's command channel.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtmfp::{CryptoProfile, Endpoint, EndpointConfig};
use rtmfp_flash::{hex_encode as hex, DhGroup, FlashProfile, Negotiation};
use rtmfp_tokio::{Host, HostChannel, HostConfig, HostHandle};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::config::ServerConfig;
use crate::shard::{ShardCore, ShardEvent, ShardMsg, CHANNEL_CAPACITY};

/// Kernel send and receive buffer of every shard socket: a burst of
/// handshakes must not overflow it.
const SOCKET_BUFFER: usize = 4 << 20;

/// Registry events waiting for the control runtime, per shard (more wait
/// in the core).
const EVENT_CAPACITY: usize = 256;

/// Registry operations in flight per shard.
const MAX_REGISTRY_OPS: usize = 64;

/// What a shard thread reports once its host runs: the receiver of its
/// core's events, or why it could not start.
pub(crate) type Ready = oneshot::Receiver<io::Result<mpsc::Receiver<ShardEvent>>>;

/// Binds a shard's socket on `addr` (SO_REUSEPORT when the server has
/// several shards).
pub(crate) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    rtmfp_tokio::bind_udp(addr, reuse_port, Some(SOCKET_BUFFER))
}

/// The server's one identity: its Flash certificate (so one fingerprint,
/// whatever shard a client lands on), the secret of its cookies and the
/// epoch they count from (so any shard accepts a cookie any shard made).
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    profile: Arc<dyn CryptoProfile>,
    cookie_secret: [u8; 32],
    epoch: Instant,
}

impl Identity {
    /// Draws the server's identity for `config`, counting from `now`.
    pub(crate) fn new(config: &ServerConfig, now: Instant) -> anyhow::Result<Self> {
        use rand_core::{RngCore, SeedableRng};
        let groups: Vec<DhGroup> = config.dh_groups.iter().map(|g| dh_group(*g)).collect();
        let auth = match config.packet_auth.as_str() {
            "required" => Negotiation::REQUIRED,
            "preferred" => Negotiation::PREFERRED,
            _ => Negotiation::ON_REQUEST,
        };
        let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
        let profile = FlashProfile::server(config.hostname.as_deref())
            .groups(&groups)
            .hmac(auth)
            .sseq(auth)
            .build(&mut rng)
            .map_err(|e| anyhow::anyhow!("crypto profile: {e}"))?;
        let mut cookie_secret = [0u8; 32];
        rng.fill_bytes(&mut cookie_secret);
        Ok(Self {
            profile: Arc::new(profile),
            cookie_secret,
            epoch: now,
        })
    }
}

/// The engine of shard `id` of `shards`: the server's identity and limits
/// (the session limit split evenly), its shard number in every session ID;
/// keyings deferred to the workers when there are some.
pub(crate) fn endpoint(
    config: &ServerConfig,
    identity: &Identity,
    id: usize,
    shards: usize,
    shard_bits: u8,
    deferred_keying: bool,
) -> Endpoint {
    use rand_core::SeedableRng;
    let l = &config.limits;
    let ec = EndpointConfig {
        shard_bits,
        shard: id as u32,
        report_foreign_ihello: true,
        accept_forwarded_ihello: false,
        max_sessions: (l.max_sessions / shards).max(1),
        max_flows_per_session: l.flows_per_session,
        recv_buffer: (l.buffered_bytes_per_session / 4).max(16 << 10),
        send_buffer: l.buffered_bytes_per_session,
        idle_timeout: config.idle_timeout(),
        keepalive_interval: Duration::from_secs(30).min(config.idle_timeout() / 3),
        ihello_rate_per_source: l.handshakes_per_second_per_address,
        amplification_factor: l.amplification_factor,
        ihello_burst_per_source: l.handshakes_per_second_per_address.saturating_mul(2),
        deferred_keying,
        max_keyings_in_flight: l.keyings_in_flight,
        max_keyings_waiting: l.keyings_waiting,
        cookie_secret: Some(identity.cookie_secret),
        ..EndpointConfig::default()
    };
    Endpoint::with_shared_profile(
        ec,
        identity.profile.clone(),
        Box::new(rand_chacha::ChaCha20Rng::from_entropy()),
        identity.epoch,
    )
}

fn dh_group(g: u8) -> DhGroup {
    match g {
        2 => DhGroup::Modp1024,
        5 => DhGroup::Modp1536,
        14 => DhGroup::Modp2048,
        _ => DhGroup::Modp4096,
    }
}

/// A shard's command channel, made before the shards so that each can
/// reach all the others.
pub(crate) fn channel() -> HostChannel<ShardCore> {
    HostChannel::new(CHANNEL_CAPACITY)
}

/// Starts shard `id`'s thread: its runtime, and its host on `sockets` and
/// `channel` around `core`, until the core is done (after
/// [`ShardMsg::Shutdown`]). The returned [`Ready`] resolves once the host
/// runs.
///
/// # Errors
/// When the thread cannot be spawned.
pub(crate) fn spawn(
    id: usize,
    core: ShardCore,
    sockets: Vec<std::net::UdpSocket>,
    channel: HostChannel<ShardCore>,
    shutdown_grace: Duration,
) -> io::Result<(JoinHandle<()>, Ready)> {
    // (the command channel, made beforehand, has CHANNEL_CAPACITY)
    let mut config = HostConfig::default().socket_buffer(Some(SOCKET_BUFFER));
    config.event_capacity = EVENT_CAPACITY;
    // a host closed without ShardMsg::Shutdown (every handle gone) still
    // gives the sessions their grace period
    config.close_timeout = shutdown_grace + Duration::from_secs(1);
    let (ready, ready_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("nimbus-shard-{id}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match Host::with_channel(core, sockets, config, channel) {
                    Ok((host, events)) => {
                        let _ = ready.send(Ok(events));
                        host.run().await;
                        tracing::debug!(shard = id, "shard stopped");
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            });
        })?;
    Ok((thread, ready_rx))
}

/// Does shard `shard`'s registry work until its host stops: each
/// [`ShardEvent`] becomes a registry call (at most [`MAX_REGISTRY_OPS`] at
/// once; beyond, events wait in the host and the core), and a credential
/// check is answered with [`ShardMsg::ConnectChecked`]. Returns once the
/// calls in flight have finished.
pub(crate) async fn serve_registry(
    shard: HostHandle<ShardCore>,
    mut events: mpsc::Receiver<ShardEvent>,
    registry: nimbus_registry::Registry,
) {
    let mut work = JoinSet::new();
    while let Some(event) = events.recv().await {
        if work.len() >= MAX_REGISTRY_OPS {
            work.join_next().await;
        }
        work.spawn(registry_call(registry.clone(), shard.clone(), event));
    }
    while work.join_next().await.is_some() {}
}

async fn registry_call(
    registry: nimbus_registry::Registry,
    shard: HostHandle<ShardCore>,
    event: ShardEvent,
) {
    match event {
        ShardEvent::CheckCredential {
            session,
            app,
            user,
            credential,
        } => {
            let ok = match registry.authenticate(&user, &credential).await {
                Ok(_) => Ok(()),
                Err(nimbus_registry::RegistryError::BadCredentials) => {
                    Err("unknown user or wrong password".to_string())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registry error at connect");
                    Err("the registry is not available".to_string())
                }
            };
            let answer = ShardMsg::ConnectChecked {
                session,
                app,
                user,
                ok,
            };
            // a stopped shard needs no answer
            let _ = shard.send(answer).await;
        }
        ShardEvent::BindUser { user, peer } => {
            if let Err(e) = registry.bind_session(&user, &hex(&peer)).await {
                tracing::warn!(error = %e, %user, "registry bind failed");
            }
        }
        ShardEvent::UnbindPeer { peer } => {
            if let Err(e) = registry.unbind_session(&hex(&peer)).await {
                tracing::warn!(error = %e, "registry unbind failed");
            }
        }
    }
}
