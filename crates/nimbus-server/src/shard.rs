//! One engine shard: a thread with its own `rtmfp::Endpoint`, its own
//! SO_REUSEPORT sockets and its own sessions.
//!
//! The kernel spreads clients over the shards' sockets by address hash. A
//! session ID names its shard (`EndpointConfig::shard_bits`), so a datagram
//! that reaches another shard's socket (after the client's address
//! changed) is handed to the owner over a channel. Shards talk to each other
//! only through bounded channels ([`ShardMsg`]); the shared directory and
//! stream table are locked only on connects, introductions, relays and
//! stream changes, never per packet.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flash_amf::Value;
use rand_core::SeedableRng;
use rtmfp::{Address, AddressOrigin, Endpoint, Event, SessionId};
use rtmfp_flash::message::{ServerConnection, ServerEvent};
use rtmfp_flash::{fingerprint, hex_decode, hex_encode as hex, Epd};
use rustc_hash::FxHashMap;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::directory::{NameEntry, PeerEntry};
use crate::groups::{GroupKey, Introduction, JoinError, Member};
use crate::metrics::Metrics;
use crate::policy::{decide, ConnectRequest, Decision};
use crate::streams::{classify, Headers, MediaClass, Publisher, StreamKey};
use crate::Shared;

/// Most messages waiting in a shard's channel; beyond it, messages (mostly
/// rerouted datagrams and relayed media) are dropped like a full socket
/// buffer would.
pub(crate) const CHANNEL_CAPACITY: usize = 16384;

/// Most datagrams waiting for a full socket.
const MAX_SEND_BACKLOG: usize = 4096;

/// Lifetime of relayed media in the engine: late media is abandoned, not
/// delivered late.
const AUDIO_LIFETIME: Duration = Duration::from_millis(1500);
const VIDEO_LIFETIME: Duration = Duration::from_millis(3000);

/// A message between shards (or from the control runtime to a shard).
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// A datagram that arrived on another shard's socket.
    Datagram { from: SocketAddr, data: Vec<u8> },
    /// Forward an IHello to one of our sessions (introduction).
    ForwardIHello {
        session: SessionId,
        epd: Bytes,
        reply_to: SocketAddr,
        tag: Bytes,
    },
    /// Call a client method on one of our sessions (onRelay, onMessage).
    Deliver {
        session: SessionId,
        name: String,
        args: Vec<Value>,
    },
    /// The registry's answer for a connect waiting on it.
    ConnectChecked {
        session: SessionId,
        app: usize,
        user: String,
        ok: Result<(), String>,
    },
    /// A shard with players wants a published stream (to its publisher).
    Subscribe { key: StreamKey, shard: usize },
    /// A shard has no players of a stream left (to its publisher).
    Unsubscribe { key: StreamKey, shard: usize },
    /// The cached configuration messages (publisher to a subscriber).
    StreamHeaders { key: StreamKey, headers: Headers },
    /// A stream was published or unpublished (to shards with players).
    StreamState { key: StreamKey, published: bool },
    /// A media message of a stream (publisher to subscribers).
    Media { key: StreamKey, frame: Bytes },
    /// Introduce NetGroup members to one of our sessions (`0B` messages on
    /// its group flow); `member` is the peer ID the session must still have.
    GroupIntroduce {
        session: SessionId,
        member: [u8; 32],
        group: [u8; 32],
        peers: Vec<[u8; 32]>,
    },
    /// Close every session and stop.
    Shutdown,
}

#[derive(Debug)]
enum Role {
    Publishing(StreamKey),
    Playing(StreamKey),
}

#[derive(Debug)]
struct Conn {
    nc: ServerConnection,
    peer: [u8; 32],
    addr: SocketAddr,
    /// The address counted against the per-address limit at open (`addr`
    /// follows the client when it moves).
    counted_ip: std::net::IpAddr,
    app: Option<u16>,
    /// The app named in the connect URL (streams are named `app/name`).
    app_path: Box<str>,
    waiting: bool,
    user: Option<Box<str>>,
    registry_bound: bool,
    streams: Vec<(u32, Role)>,
    /// NetGroups this session is a member of (joins the table accepted).
    groups: Vec<[u8; 32]>,
}

#[derive(Debug)]
struct Publication {
    session: SessionId,
    stream: u32,
    /// Shards with players.
    subscribers: u64,
    headers: Headers,
}

#[derive(Debug)]
struct Player {
    session: SessionId,
    stream: u32,
    waiting_keyframe: bool,
    /// Joined and not yet sent the stream's cached configuration.
    needs_headers: bool,
}

#[derive(Debug, Default)]
struct Audience {
    headers: Headers,
    players: Vec<Player>,
}

pub(crate) struct Shard {
    id: usize,
    shared: Arc<Shared>,
    ep: Endpoint,
    socks: Vec<UdpSocket>,
    /// Whether each socket is IPv4 (read once: no syscall per datagram).
    socks_v4: Vec<bool>,
    rx: mpsc::Receiver<ShardMsg>,
    /// Boxed: the table's slack then costs a pointer per slot, not a `Conn`.
    conns: FxHashMap<SessionId, Box<Conn>>,
    publications: HashMap<StreamKey, Publication>,
    audiences: HashMap<StreamKey, Audience>,
    out: Vec<u8>,
    rbuf: Vec<u8>,
    backlog: VecDeque<(Vec<u8>, SocketAddr)>,
    stopping: Option<Instant>,
    /// Rejected connections waiting for their grace period.
    rejecting: Vec<SessionId>,
    /// Engine counters already added to the metrics.
    reported: rtmfp::EndpointStats,
    next_report: Instant,
    /// Randomness for NetGroup long-range hints.
    rng: rand_chacha::ChaCha8Rng,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("sessions", &self.conns.len())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_peer_id(v: Option<&Value>) -> Option<[u8; 32]> {
    hex_decode(v?.as_str()?)?.try_into().ok()
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        shared: Arc<Shared>,
        ep: Endpoint,
        socks: Vec<UdpSocket>,
        rx: mpsc::Receiver<ShardMsg>,
    ) -> Self {
        let socks_v4 = socks
            .iter()
            .map(|s| s.local_addr().map(|l| l.is_ipv4()).unwrap_or(true))
            .collect();
        Self {
            id,
            shared,
            ep,
            socks,
            socks_v4,
            rx,
            conns: FxHashMap::default(),
            publications: HashMap::new(),
            audiences: HashMap::new(),
            out: Vec::with_capacity(2048),
            rbuf: vec![0; 65536],
            backlog: VecDeque::new(),
            stopping: None,
            rejecting: Vec::new(),
            reported: rtmfp::EndpointStats::default(),
            next_report: Instant::now(),
            rng: rand_chacha::ChaCha8Rng::from_entropy(),
        }
    }

    /// Runs until shut down.
    pub(crate) async fn run(mut self) {
        loop {
            let now = Instant::now();
            if self.ep.poll_timeout().is_some_and(|t| t <= now) {
                self.ep.handle_timeout(now);
            }
            if !self.rejecting.is_empty() {
                self.reject_timers(now);
            }
            if now >= self.next_report {
                self.report_engine_stats(now);
            }
            self.process_events(now);
            self.flush(now);
            if let Some(deadline) = self.stopping {
                if self.ep.session_count() == 0 || now >= deadline {
                    break;
                }
            }
            let mut wake = self
                .ep
                .poll_timeout()
                .unwrap_or(now + Duration::from_secs(1))
                .min(now + Duration::from_secs(1));
            if let Some(d) = self.stopping {
                wake = wake.min(d);
            }
            if !self.rejecting.is_empty() {
                // grace periods are seconds long: a coarse tick is enough
                wake = wake.min(now + Duration::from_millis(250));
            }
            let want_write = !self.backlog.is_empty();
            tokio::select! {
                biased;
                msg = self.rx.recv() => {
                    let Some(msg) = msg else { break };
                    let now = Instant::now();
                    self.handle_msg(now, msg);
                    for _ in 0..256 {
                        match self.rx.try_recv() {
                            Ok(m) => self.handle_msg(now, m),
                            Err(_) => break,
                        }
                    }
                }
                i = recv_ready(&self.socks) => self.read_socket(i),
                _ = writable(&self.socks), if want_write => self.drain_backlog(),
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    fn read_socket(&mut self, i: usize) {
        let now = Instant::now();
        let bits = self.shared.shard_bits;
        for _ in 0..128 {
            match self.socks[i].try_recv_from(&mut self.rbuf) {
                Ok((n, from)) => {
                    let m = &self.shared.metrics;
                    Metrics::inc(&m.datagrams_received_total, 1);
                    Metrics::inc(&m.bytes_received_total, n as u64);
                    let data = &self.rbuf[..n];
                    match rtmfp::datagram_shard(data, bits).map(|s| s as usize) {
                        Some(owner) if owner != self.id && owner < self.shared.senders.len() => {
                            Metrics::inc(&m.datagrams_rerouted_total, 1);
                            let msg = ShardMsg::Datagram {
                                from,
                                data: data.to_vec(),
                            };
                            let _ = self.shared.senders[owner].try_send(msg);
                        }
                        _ => self.ep.handle_datagram(now, from, data),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here on Linux; nothing to do
                    tracing::trace!(shard = self.id, error = %e, "recv error");
                    Metrics::inc(&self.shared.metrics.socket_errors_total, 1);
                    break;
                }
            }
        }
    }

    /// Adds the engine's defence counters to the metrics (once a second).
    fn report_engine_stats(&mut self, now: Instant) {
        self.next_report = now + Duration::from_secs(1);
        let st = self.ep.stats();
        let m = &self.shared.metrics;
        let amp = st
            .amplification_drops
            .saturating_sub(self.reported.amplification_drops);
        let rate = st
            .ihello_rate_drops
            .saturating_sub(self.reported.ihello_rate_drops);
        if amp > 0 || rate > 0 {
            tracing::debug!(
                shard = self.id,
                amplification_drops = amp,
                ihello_rate_drops = rate,
                "handshake answers withheld"
            );
        }
        Metrics::inc(&m.amplification_drops_total, amp);
        Metrics::inc(&m.handshake_rate_drops_total, rate);
        self.reported = st;
    }

    fn socket_for(&self, dst: SocketAddr) -> usize {
        self.socks_v4
            .iter()
            .position(|v4| *v4 == dst.is_ipv4())
            .unwrap_or(0)
    }

    fn flush(&mut self, now: Instant) {
        if !self.backlog.is_empty() {
            self.drain_backlog();
            if !self.backlog.is_empty() {
                return;
            }
        }
        while let Some(dst) = self.ep.poll_transmit(now, &mut self.out) {
            let i = self.socket_for(dst);
            match self.socks[i].try_send_to(&self.out, dst) {
                Ok(n) => {
                    let m = &self.shared.metrics;
                    Metrics::inc(&m.datagrams_sent_total, 1);
                    Metrics::inc(&m.bytes_sent_total, n as u64);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.backlog.len() < MAX_SEND_BACKLOG {
                        self.backlog.push_back((self.out.clone(), dst));
                    }
                    return;
                }
                Err(e) => {
                    tracing::trace!(shard = self.id, error = %e, %dst, "send error");
                    Metrics::inc(&self.shared.metrics.socket_errors_total, 1);
                }
            }
        }
    }

    fn drain_backlog(&mut self) {
        while let Some((d, dst)) = self.backlog.front() {
            let i = self.socket_for(*dst);
            match self.socks[i].try_send_to(d, *dst) {
                Ok(n) => {
                    Metrics::inc(&self.shared.metrics.datagrams_sent_total, 1);
                    Metrics::inc(&self.shared.metrics.bytes_sent_total, n as u64);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => Metrics::inc(&self.shared.metrics.socket_errors_total, 1),
            }
            self.backlog.pop_front();
        }
    }

    fn send_to_shard(&self, shard: usize, msg: ShardMsg) {
        if let Some(tx) = self.shared.senders.get(shard) {
            if tx.try_send(msg).is_err() {
                Metrics::inc(&self.shared.metrics.limit_refusals_total, 1);
            }
        }
    }

    // ----- cross-shard messages ----------------------------------------------

    fn handle_msg(&mut self, now: Instant, msg: ShardMsg) {
        match msg {
            ShardMsg::Datagram { from, data } => self.ep.handle_datagram(now, from, &data),
            ShardMsg::ForwardIHello {
                session,
                epd,
                reply_to,
                tag,
            } => {
                let _ = self.ep.forward_ihello(now, session, &epd, reply_to, &tag);
            }
            ShardMsg::Deliver {
                session,
                name,
                args,
            } => {
                if let Some(c) = self.conns.get_mut(&session) {
                    if c.app.is_some() {
                        let _ = c.nc.call(&mut self.ep, now, &name, args);
                    }
                }
            }
            ShardMsg::ConnectChecked {
                session,
                app,
                user,
                ok,
            } => {
                let Some(c) = self.conns.get_mut(&session) else {
                    return;
                };
                c.waiting = false;
                match ok {
                    Ok(()) => self.accept(now, session, app, Some(user), true),
                    Err(why) => self.reject(now, session, &why),
                }
            }
            ShardMsg::Subscribe { key, shard } => {
                if let Some(p) = self.publications.get_mut(&key) {
                    p.subscribers |= 1 << shard;
                    let headers = p.headers.clone();
                    self.route_headers(now, shard, key, headers);
                }
            }
            ShardMsg::Unsubscribe { key, shard } => {
                if let Some(p) = self.publications.get_mut(&key) {
                    p.subscribers &= !(1 << shard);
                }
            }
            ShardMsg::StreamHeaders { key, headers } => self.on_headers(now, &key, headers),
            ShardMsg::StreamState { key, published } => self.on_stream_state(now, &key, published),
            ShardMsg::Media { key, frame } => self.deliver_media(now, &key, &frame),
            ShardMsg::GroupIntroduce {
                session,
                member,
                group,
                peers,
            } => self.introduce_local(now, session, &member, &group, &peers),
            ShardMsg::Shutdown => self.begin_shutdown(now),
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        let grace = Duration::from_secs(self.shared.config.shutdown_grace_secs);
        self.stopping = Some(now + grace);
        let sessions: Vec<SessionId> = self.ep.sessions().collect();
        for s in sessions {
            if let Some(c) = self.conns.get_mut(&s) {
                c.nc.close(&mut self.ep, now);
            } else {
                self.ep.close_session(now, s);
            }
        }
    }

    // ----- engine events -----------------------------------------------------

    fn process_events(&mut self, now: Instant) {
        while let Some(ev) = self.ep.poll_event() {
            match &ev {
                Event::SessionOpened { session, peer, .. } => {
                    self.on_open(now, *session, *peer);
                }
                Event::IHelloForOther { from, epd, tag } => {
                    self.on_foreign_ihello(now, *from, epd, tag);
                    continue;
                }
                Event::AddressChanged { session, new, .. } => {
                    if let Some(c) = self.conns.get_mut(session) {
                        c.addr = *new;
                        self.shared
                            .directory
                            .set_public(&c.peer, self.id, *session, *new);
                    }
                }
                _ => {}
            }
            let Some(sid) = ev.session() else { continue };
            if let Some(c) = self.conns.get_mut(&sid) {
                c.nc.on_event(&mut self.ep, now, &ev);
                self.drain_conn(now, sid);
            }
            if matches!(
                ev,
                Event::SessionClosed { .. } | Event::SessionFailed { .. }
            ) {
                self.on_closed(now, sid);
            }
        }
    }

    fn on_open(&mut self, now: Instant, session: SessionId, peer: SocketAddr) {
        let m = &self.shared.metrics;
        Metrics::inc(&m.sessions_opened_total, 1);
        let Some(info) = self.ep.session_info(session) else {
            return;
        };
        if !self
            .shared
            .directory
            .add_address(peer.ip(), self.shared.config.limits.sessions_per_address)
        {
            Metrics::inc(&m.limit_refusals_total, 1);
            tracing::info!(%peer, "too many sessions from this address");
            self.ep.abort_session(now, session);
            return;
        }
        Metrics::add(&m.sessions, 1);
        let peer_id = fingerprint(&info.far_certificate).0;
        tracing::debug!(shard = self.id, %peer, peer_id = %hex(&peer_id), "session open");
        self.conns.insert(
            session,
            Box::new(Conn {
                nc: ServerConnection::new(session),
                peer: peer_id,
                addr: peer,
                counted_ip: peer.ip(),
                app: None,
                app_path: "".into(),
                waiting: false,
                user: None,
                registry_bound: false,
                streams: Vec::new(),
                groups: Vec::new(),
            }),
        );
    }

    fn on_closed(&mut self, now: Instant, session: SessionId) {
        let Some(c) = self.conns.remove(&session).map(|b| *b) else {
            return;
        };
        let m = &self.shared.metrics;
        Metrics::inc(&m.sessions_closed_total, 1);
        Metrics::add(&m.sessions, -1);
        self.shared.directory.remove_address(c.counted_ip);
        if c.app.is_some() {
            Metrics::add(&m.connections, -1);
            self.shared.directory.remove(&c.peer, self.id, session);
        }
        if let Some(name) = &c.user {
            self.shared.directory.release_name(name, self.id, session);
        }
        if c.registry_bound {
            if let Some(reg) = self.shared.registry.clone() {
                let peer = hex(&c.peer);
                self.shared.control.spawn(async move {
                    if let Err(e) = reg.unbind_session(&peer).await {
                        tracing::warn!(error = %e, "registry unbind failed");
                    }
                });
            }
        }
        for (stream, role) in c.streams {
            self.end_role(now, session, stream, role);
        }
        // normally left already (GroupLeave comes before Closed)
        for group in c.groups {
            self.leave_group(now, session, c.peer, &c.app_path, group);
        }
    }

    fn on_foreign_ihello(&mut self, now: Instant, from: SocketAddr, epd: &Bytes, tag: &Bytes) {
        let m = &self.shared.metrics;
        let Some(fp) = Epd::parse(epd).ok().and_then(|e| e.fingerprint) else {
            return;
        };
        let Some(target) = self.shared.directory.get(&fp.0) else {
            Metrics::inc(&m.introductions_unknown_total, 1);
            return;
        };
        if !target.introducible || target.public == from {
            Metrics::inc(&m.introductions_unknown_total, 1);
            return;
        }
        let dests: Vec<Address> = target
            .redirect_addresses(self.shared.config.limits.redirect_addresses)
            .into_iter()
            .map(|addr| Address {
                addr,
                origin: if addr == target.public {
                    AddressOrigin::Public
                } else {
                    AddressOrigin::Local
                },
            })
            .collect();
        self.ep.send_redirect(from, tag, &dests);
        if target.shard == self.id {
            let _ = self.ep.forward_ihello(now, target.session, epd, from, tag);
        } else {
            self.send_to_shard(
                target.shard,
                ShardMsg::ForwardIHello {
                    session: target.session,
                    epd: epd.clone(),
                    reply_to: from,
                    tag: tag.clone(),
                },
            );
        }
        Metrics::inc(&m.introductions_total, 1);
        tracing::debug!(%from, target = %hex(&fp.0), "introduction");
    }

    // ----- NetConnection events ------------------------------------------------

    fn drain_conn(&mut self, now: Instant, sid: SessionId) {
        for _ in 0..10_000 {
            let Some(ev) = self.conns.get_mut(&sid).and_then(|c| c.nc.poll_event()) else {
                return;
            };
            self.on_nc_event(now, sid, ev);
        }
    }

    fn on_nc_event(&mut self, now: Instant, sid: SessionId, ev: ServerEvent) {
        match ev {
            ServerEvent::Connect { object, args, .. } => {
                let Some(c) = self.conns.get_mut(&sid) else {
                    return;
                };
                if c.app.is_some() || c.waiting {
                    return;
                }
                let tc_url = object.get("tcUrl").and_then(Value::as_str);
                let app = object.get("app").and_then(Value::as_str);
                let req = ConnectRequest::from_connect(tc_url, app, &args);
                c.app_path = req
                    .path
                    .first()
                    .map(|s| s.to_ascii_lowercase())
                    .unwrap_or_default()
                    .into();
                match decide(&self.shared.apps, &req, unix_now()) {
                    Decision::Accept { app, user } => self.accept(now, sid, app, user, false),
                    Decision::Reject(why) => self.reject(now, sid, &why),
                    Decision::CheckRegistry {
                        app,
                        user,
                        credential,
                    } => self.check_registry(sid, app, user, credential),
                }
            }
            ServerEvent::SetPeerInfo { addresses } => {
                if let Some(c) = self.conns.get(&sid) {
                    let mut a = addresses;
                    a.truncate(self.shared.config.limits.redirect_addresses);
                    self.shared.directory.set_reported(&c.peer, self.id, sid, a);
                }
            }
            ServerEvent::Call { txn, name, args } => self.on_call(now, sid, txn, &name, args),
            ServerEvent::Publish { stream, name, .. } => self.on_publish(now, sid, stream, &name),
            ServerEvent::Play { stream, name, .. } => self.on_play(now, sid, stream, &name),
            ServerEvent::StreamClosed { stream } => self.end_stream(now, sid, stream),
            ServerEvent::Media { stream, frame, .. } => self.on_media(now, sid, stream, frame),
            ServerEvent::GroupJoin { group } => self.on_group_join(now, sid, group),
            ServerEvent::GroupLeave { group } => {
                let Some(c) = self.conns.get_mut(&sid) else {
                    return;
                };
                let Some(i) = c.groups.iter().position(|g| *g == group) else {
                    return; // a refused join
                };
                c.groups.swap_remove(i);
                let (peer, app) = (c.peer, c.app_path.clone());
                self.leave_group(now, sid, peer, &app, group);
            }
            ServerEvent::Closed => {
                if let Some(c) = self.conns.get_mut(&sid) {
                    c.nc.close(&mut self.ep, now);
                }
            }
            _ => {}
        }
    }

    fn app_of(&self, sid: SessionId) -> Option<&crate::config::AppConfig> {
        let c = self.conns.get(&sid)?;
        self.shared.apps.get(usize::from(c.app?))
    }

    fn accept(
        &mut self,
        now: Instant,
        sid: SessionId,
        app: usize,
        user: Option<String>,
        registry: bool,
    ) {
        let Some(c) = self.conns.get_mut(&sid) else {
            return;
        };
        if let Some(name) = &user {
            let entry = NameEntry {
                peer: c.peer,
                shard: self.id,
                session: sid,
            };
            if !self.shared.directory.claim_name(name, entry) {
                self.reject(now, sid, "that user name is already connected");
                return;
            }
        }
        let introducible = self.shared.apps.get(app).is_none_or(|a| a.introductions);
        c.app = Some(app as u16);
        c.user = user.map(String::into_boxed_str);
        self.shared.directory.insert(
            c.peer,
            PeerEntry {
                shard: self.id,
                session: sid,
                public: c.addr,
                reported: Vec::new(),
                introducible,
            },
        );
        let peer_hex = hex(&c.peer);
        let _ = c.nc.accept_connect(&mut self.ep, now, Vec::new());
        let cfg = &self.shared.config;
        let _ = c.nc.set_keepalive(
            &mut self.ep,
            now,
            cfg.client_keepalive_ms,
            cfg.peer_keepalive_ms,
        );
        let m = &self.shared.metrics;
        Metrics::inc(&m.connects_accepted_total, 1);
        Metrics::add(&m.connections, 1);
        tracing::info!(shard = self.id, peer = %c.addr, peer_id = %peer_hex, user = c.user.as_deref().unwrap_or(""), app = self.shared.apps.get(app).map(|a| a.name.as_str()).unwrap_or(""), "connected");
        if registry {
            if let (Some(reg), Some(user)) = (self.shared.registry.clone(), c.user.clone()) {
                c.registry_bound = true;
                self.shared.control.spawn(async move {
                    if let Err(e) = reg.bind_session(&user, &peer_hex).await {
                        tracing::warn!(error = %e, %user, "registry bind failed");
                    }
                });
            }
        }
    }

    fn reject(&mut self, now: Instant, sid: SessionId, why: &str) {
        let Some(c) = self.conns.get_mut(&sid) else {
            return;
        };
        tracing::info!(shard = self.id, peer = %c.addr, reason = why, "connect rejected");
        Metrics::inc(&self.shared.metrics.connects_rejected_total, 1);
        let _ = c.nc.reject_connect(&mut self.ep, now, why);
        if c.nc.poll_timeout().is_some() {
            self.rejecting.push(sid);
        }
    }

    fn reject_timers(&mut self, now: Instant) {
        let conns = &mut self.conns;
        let ep = &mut self.ep;
        self.rejecting.retain(|sid| match conns.get_mut(sid) {
            Some(c) => match c.nc.poll_timeout() {
                Some(t) if t <= now => {
                    c.nc.handle_timeout(ep, now);
                    false
                }
                Some(_) => true,
                None => false,
            },
            None => false,
        });
    }

    fn check_registry(&mut self, sid: SessionId, app: usize, user: String, credential: String) {
        let Some(reg) = self.shared.registry.clone() else {
            let now = Instant::now();
            self.reject(now, sid, "the registry is not available");
            return;
        };
        if let Some(c) = self.conns.get_mut(&sid) {
            c.waiting = true;
        }
        let tx = self.shared.senders[self.id].clone();
        self.shared.control.spawn(async move {
            let ok = match reg.authenticate(&user, &credential).await {
                Ok(_) => Ok(()),
                Err(nimbus_registry::RegistryError::BadCredentials) => {
                    Err("unknown user or wrong password".to_string())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registry error at connect");
                    Err("the registry is not available".to_string())
                }
            };
            let _ = tx
                .send(ShardMsg::ConnectChecked {
                    session: sid,
                    app,
                    user,
                    ok,
                })
                .await;
        });
    }

    // ----- calls ---------------------------------------------------------------

    fn on_call(
        &mut self,
        now: Instant,
        sid: SessionId,
        txn: f64,
        name: &str,
        mut args: Vec<Value>,
    ) {
        Metrics::inc(&self.shared.metrics.calls_total, 1);
        let Some(relay_allowed) = self.app_of(sid).map(|a| a.relay) else {
            return;
        };
        let Some(c) = self.conns.get(&sid) else {
            return;
        };
        let me = c.peer;
        let my_name = c.user.clone();
        let answer = match name {
            // Cirrus sample: relay(targetPeerID, args...) -> onRelay(senderPeerID, args...)
            "relay" if relay_allowed => {
                let target = parse_peer_id(args.first());
                match target.and_then(|t| self.shared.directory.get(&t)) {
                    Some(t) => {
                        args[0] = Value::String(hex(&me));
                        self.deliver(now, t.shard, t.session, "onRelay", args);
                        Metrics::inc(&self.shared.metrics.relays_total, 1);
                        Ok(Value::Null)
                    }
                    None => {
                        Metrics::inc(&self.shared.metrics.relays_failed_total, 1);
                        Err((
                            "NetConnection.Call.Failed",
                            "relay target is not connected".to_string(),
                        ))
                    }
                }
            }
            // sendToUser(name, args...) -> onMessage(senderName or peer ID, args...)
            "sendToUser" if relay_allowed => {
                let target = args
                    .first()
                    .and_then(Value::as_str)
                    .and_then(|n| self.shared.directory.name(n));
                match target {
                    Some(t) => {
                        args[0] =
                            Value::String(my_name.map(String::from).unwrap_or_else(|| hex(&me)));
                        self.deliver(now, t.shard, t.session, "onMessage", args);
                        Metrics::inc(&self.shared.metrics.relays_total, 1);
                        Ok(Value::Null)
                    }
                    None => {
                        Metrics::inc(&self.shared.metrics.relays_failed_total, 1);
                        Err((
                            "NetConnection.Call.Failed",
                            "user is not connected".to_string(),
                        ))
                    }
                }
            }
            // lookup(name) -> peer ID (hex) or null
            "lookup" | "lookupUser" => match args.first().and_then(Value::as_str) {
                Some(n) => Ok(self
                    .shared
                    .directory
                    .name(n)
                    .map(|e| Value::String(hex(&e.peer)))
                    .unwrap_or(Value::Null)),
                None => Err((
                    "NetConnection.Call.BadValue",
                    "lookup(name) needs a name".to_string(),
                )),
            },
            // whoami() -> { peerID, user, address }
            "getPeerInfo" | "whoami" => {
                let mut o = flash_amf::Object::new();
                o.insert("peerID", Value::String(hex(&me)));
                if let Some(u) = &my_name {
                    o.insert("user", Value::String(u.to_string()));
                }
                o.insert("address", Value::String(c.addr.to_string()));
                Ok(Value::Object(o))
            }
            _ => Err((
                "NetConnection.Call.Failed",
                format!("Method not found ({name})"),
            )),
        };
        if txn == 0.0 {
            return;
        }
        let Some(c) = self.conns.get_mut(&sid) else {
            return;
        };
        let _ = match answer {
            Ok(v) => c.nc.send_result(&mut self.ep, now, txn, v),
            Err((code, why)) => {
                Metrics::inc(&self.shared.metrics.protocol_errors_total, 1);
                c.nc.send_error(&mut self.ep, now, txn, code, &why)
            }
        };
    }

    fn deliver(
        &mut self,
        now: Instant,
        shard: usize,
        session: SessionId,
        name: &str,
        args: Vec<Value>,
    ) {
        if shard == self.id {
            if let Some(c) = self.conns.get_mut(&session) {
                let _ = c.nc.call(&mut self.ep, now, name, args);
            }
        } else {
            self.send_to_shard(
                shard,
                ShardMsg::Deliver {
                    session,
                    name: name.to_string(),
                    args,
                },
            );
        }
    }

    // ----- NetGroups ---------------------------------------------------------------

    fn on_group_join(&mut self, now: Instant, sid: SessionId, group: [u8; 32]) {
        let Some(c) = self.conns.get(&sid) else {
            return;
        };
        let Some(app) = c.app else {
            return;
        };
        let m = &self.shared.metrics;
        let app_cfg = self.shared.apps.get(usize::from(app));
        let app_name = app_cfg.map(|a| a.name.as_str()).unwrap_or("");
        let allowed = self
            .shared
            .group_access
            .get(usize::from(app))
            .is_some_and(|a| a.allows(&group));
        if !allowed {
            Metrics::inc(&m.group_join_refusals_total, 1);
            tracing::info!(shard = self.id, peer_id = %hex(&c.peer), app = app_name, group = %hex(&group), "group join refused: not allowed in this app");
            return;
        }
        let key = GroupKey {
            app: c.app_path.clone(),
            id: group,
        };
        let member = Member {
            peer: c.peer,
            shard: self.id,
            session: sid,
            introducible: app_cfg.is_none_or(|a| a.introductions),
        };
        match self.shared.groups.join(key, member, &mut self.rng) {
            Ok(j) => {
                Metrics::inc(&m.group_joins_total, 1);
                if j.new_group {
                    Metrics::add(&m.groups, 1);
                }
                if !j.replaced {
                    Metrics::add(&m.group_members, 1);
                }
                tracing::debug!(shard = self.id, peer_id = %hex(&c.peer), app = app_name, group = %hex(&group), "group join");
                if let Some(c) = self.conns.get_mut(&sid) {
                    if !c.groups.contains(&group) {
                        c.groups.push(group);
                    }
                }
                self.send_group_introductions(now, &group, j.introductions);
            }
            Err(e) => {
                Metrics::inc(&m.group_join_refusals_total, 1);
                Metrics::inc(&m.limit_refusals_total, 1);
                let limit = match e {
                    JoinError::TooManyGroups => "max_groups",
                    JoinError::GroupFull => "max_group_members",
                };
                tracing::info!(shard = self.id, peer_id = %hex(&c.peer), app = app_name, group = %hex(&group), limit, "group join refused: {e}");
            }
        }
    }

    fn leave_group(
        &mut self,
        now: Instant,
        sid: SessionId,
        peer: [u8; 32],
        app: &str,
        group: [u8; 32],
    ) {
        let key = GroupKey {
            app: app.into(),
            id: group,
        };
        let Some(l) = self.shared.groups.leave(&key, &peer, self.id, sid) else {
            return; // taken over by a newer session of the same peer
        };
        let m = &self.shared.metrics;
        Metrics::inc(&m.group_leaves_total, 1);
        Metrics::add(&m.group_members, -1);
        if l.group_removed {
            Metrics::add(&m.groups, -1);
        }
        tracing::debug!(shard = self.id, peer_id = %hex(&peer), group = %hex(&group), "group leave");
        self.send_group_introductions(now, &group, l.introductions);
    }

    fn send_group_introductions(
        &mut self,
        now: Instant,
        group: &[u8; 32],
        intros: Vec<Introduction>,
    ) {
        for i in intros {
            if i.to.shard == self.id {
                self.introduce_local(now, i.to.session, &i.to.peer, group, &i.peers);
            } else {
                self.send_to_shard(
                    i.to.shard,
                    ShardMsg::GroupIntroduce {
                        session: i.to.session,
                        member: i.to.peer,
                        group: *group,
                        peers: i.peers,
                    },
                );
            }
        }
    }

    /// Sends `0B` introductions of `peers` to our session `sid` (if it is
    /// still `member` and in `group`).
    fn introduce_local(
        &mut self,
        now: Instant,
        sid: SessionId,
        member: &[u8; 32],
        group: &[u8; 32],
        peers: &[[u8; 32]],
    ) {
        let Some(c) = self.conns.get_mut(&sid) else {
            return;
        };
        if c.peer != *member || !c.groups.contains(group) {
            return;
        }
        if c.nc.introduce_group_peers(&mut self.ep, now, group, peers) {
            Metrics::inc(
                &self.shared.metrics.group_introductions_total,
                peers.len() as u64,
            );
        }
    }

    // ----- streams ---------------------------------------------------------------

    fn stream_key(&self, sid: SessionId, name: &str) -> Option<StreamKey> {
        self.app_of(sid)?;
        let app = &self.conns.get(&sid)?.app_path;
        // the stream name without query options (e.g. "cam?token=...")
        let name = name.split('?').next().unwrap_or("");
        if name.is_empty() || name.len() > 256 {
            return None;
        }
        Some(format!("{app}/{name}").into())
    }

    fn status(
        &mut self,
        now: Instant,
        sid: SessionId,
        stream: u32,
        code: &str,
        level: &str,
        desc: &str,
        details: Option<&str>,
    ) {
        if let Some(c) = self.conns.get_mut(&sid) {
            let _ =
                c.nc.stream_status(&mut self.ep, now, stream, code, level, desc, details);
        }
    }

    fn on_publish(&mut self, now: Instant, sid: SessionId, stream: u32, name: &str) {
        let allowed = self.app_of(sid).is_some_and(|a| a.streams);
        let Some(key) = self.stream_key(sid, name).filter(|_| allowed) else {
            self.status(
                now,
                sid,
                stream,
                "NetStream.Publish.BadName",
                "error",
                "publishing is not allowed here",
                Some(name),
            );
            return;
        };
        self.end_stream(now, sid, stream);
        let p = Publisher {
            shard: self.id,
            session: sid,
            stream,
        };
        let Some(subscribers) = self.shared.streams.publish(&key, p) else {
            self.status(
                now,
                sid,
                stream,
                "NetStream.Publish.BadName",
                "error",
                "stream is already being published",
                Some(name),
            );
            return;
        };
        self.publications.insert(
            key.clone(),
            Publication {
                session: sid,
                stream,
                subscribers,
                headers: Headers::default(),
            },
        );
        if let Some(c) = self.conns.get_mut(&sid) {
            c.streams.push((stream, Role::Publishing(key.clone())));
        }
        Metrics::add(&self.shared.metrics.streams_published, 1);
        self.status(
            now,
            sid,
            stream,
            "NetStream.Publish.Start",
            "status",
            &format!("{name} is now published"),
            Some(name),
        );
        for shard in bits(subscribers) {
            self.route_state(now, shard, key.clone(), true);
        }
        tracing::info!(shard = self.id, stream = %key, "publish");
    }

    fn on_play(&mut self, now: Instant, sid: SessionId, stream: u32, name: &str) {
        let allowed = self.app_of(sid).is_some_and(|a| a.streams);
        let Some(key) = self.stream_key(sid, name).filter(|_| allowed) else {
            self.status(
                now,
                sid,
                stream,
                "NetStream.Play.StreamNotFound",
                "error",
                "playing is not allowed here",
                Some(name),
            );
            return;
        };
        self.end_stream(now, sid, stream);
        let limit = self.shared.config.limits.players_per_stream;
        if self
            .audiences
            .get(&key)
            .is_some_and(|a| a.players.len() >= limit)
        {
            Metrics::inc(&self.shared.metrics.limit_refusals_total, 1);
            self.status(
                now,
                sid,
                stream,
                "NetStream.Play.Failed",
                "error",
                "too many players",
                Some(name),
            );
            return;
        }
        let publisher = self.shared.streams.play(&key, self.id);
        if let Some(c) = self.conns.get_mut(&sid) {
            c.streams.push((stream, Role::Playing(key.clone())));
            let _ = c.nc.stream_begin(&mut self.ep, now, stream);
        }
        self.status(
            now,
            sid,
            stream,
            "NetStream.Play.Reset",
            "status",
            &format!("Playing and resetting {name}"),
            Some(name),
        );
        self.status(
            now,
            sid,
            stream,
            "NetStream.Play.Start",
            "status",
            &format!("Started playing {name}"),
            Some(name),
        );
        let audience = self.audiences.entry(key.clone()).or_default();
        audience.players.push(Player {
            session: sid,
            stream,
            waiting_keyframe: true,
            needs_headers: true,
        });
        Metrics::add(&self.shared.metrics.stream_players, 1);
        if let Some(p) = publisher {
            // the publisher's shard answers with the cached configuration
            self.status(
                now,
                sid,
                stream,
                "NetStream.Play.PublishNotify",
                "status",
                &format!("{name} is now published"),
                Some(name),
            );
            self.route_subscribe(now, p.shard, key.clone());
        }
        tracing::info!(shard = self.id, stream = %key, "play");
    }

    fn route_subscribe(&mut self, now: Instant, shard: usize, key: StreamKey) {
        if shard == self.id {
            self.handle_msg(
                now,
                ShardMsg::Subscribe {
                    key,
                    shard: self.id,
                },
            );
        } else {
            self.send_to_shard(
                shard,
                ShardMsg::Subscribe {
                    key,
                    shard: self.id,
                },
            );
        }
    }

    fn route_state(&mut self, now: Instant, shard: usize, key: StreamKey, published: bool) {
        if shard == self.id {
            self.on_stream_state(now, &key, published);
        } else {
            self.send_to_shard(shard, ShardMsg::StreamState { key, published });
        }
    }

    fn route_headers(&mut self, now: Instant, shard: usize, key: StreamKey, headers: Headers) {
        if shard == self.id {
            self.on_headers(now, &key, headers);
        } else {
            self.send_to_shard(shard, ShardMsg::StreamHeaders { key, headers });
        }
    }

    /// Ends whatever `stream` of `sid` was doing.
    fn end_stream(&mut self, now: Instant, sid: SessionId, stream: u32) {
        let Some(c) = self.conns.get_mut(&sid) else {
            return;
        };
        let Some(i) = c.streams.iter().position(|(s, _)| *s == stream) else {
            return;
        };
        let (_, role) = c.streams.swap_remove(i);
        self.end_role(now, sid, stream, role);
    }

    fn end_role(&mut self, now: Instant, sid: SessionId, stream: u32, role: Role) {
        match role {
            Role::Publishing(key) => {
                let p = Publisher {
                    shard: self.id,
                    session: sid,
                    stream,
                };
                if self
                    .publications
                    .get(&key)
                    .is_some_and(|p| p.session == sid && p.stream == stream)
                {
                    self.publications.remove(&key);
                }
                if let Some(mask) = self.shared.streams.unpublish(&key, p) {
                    Metrics::add(&self.shared.metrics.streams_published, -1);
                    for shard in bits(mask) {
                        self.route_state(now, shard, key.clone(), false);
                    }
                    tracing::info!(shard = self.id, stream = %key, "unpublish");
                }
            }
            Role::Playing(key) => {
                let mut empty = false;
                if let Some(a) = self.audiences.get_mut(&key) {
                    a.players
                        .retain(|p| !(p.session == sid && p.stream == stream));
                    empty = a.players.is_empty();
                }
                Metrics::add(&self.shared.metrics.stream_players, -1);
                if empty {
                    self.audiences.remove(&key);
                }
                let (last, publisher) = self.shared.streams.stop(&key, self.id);
                if last {
                    if let Some(p) = publisher {
                        let msg = ShardMsg::Unsubscribe {
                            key,
                            shard: self.id,
                        };
                        if p.shard == self.id {
                            self.handle_msg(now, msg);
                        } else {
                            self.send_to_shard(p.shard, msg);
                        }
                    }
                }
            }
        }
    }

    fn on_stream_state(&mut self, now: Instant, key: &StreamKey, published: bool) {
        let Some(a) = self.audiences.get_mut(key) else {
            return;
        };
        if !published {
            a.headers = Headers::default();
        }
        let players: Vec<(SessionId, u32)> = a
            .players
            .iter_mut()
            .map(|p| {
                p.waiting_keyframe = true;
                (p.session, p.stream)
            })
            .collect();
        let name = key.split_once('/').map(|(_, n)| n).unwrap_or(key);
        let (code, desc) = if published {
            (
                "NetStream.Play.PublishNotify",
                format!("{name} is now published"),
            )
        } else {
            (
                "NetStream.Play.UnpublishNotify",
                format!("{name} is now unpublished"),
            )
        };
        for (sid, stream) in players {
            self.status(now, sid, stream, code, "status", &desc, Some(name));
        }
    }

    fn on_headers(&mut self, now: Instant, key: &StreamKey, headers: Headers) {
        let Some(a) = self.audiences.get_mut(key) else {
            return;
        };
        a.headers = headers;
        let frames: Vec<Bytes> = a.headers.frames().cloned().collect();
        let mut targets = Vec::new();
        for p in a.players.iter_mut().filter(|p| p.needs_headers) {
            p.needs_headers = false;
            targets.push((p.session, p.stream));
        }
        for (sid, stream) in targets {
            if let Some(c) = self.conns.get_mut(&sid) {
                for f in &frames {
                    let _ =
                        c.nc.send_media(&mut self.ep, now, stream, f.clone(), Some(VIDEO_LIFETIME));
                }
            }
        }
    }

    fn on_media(&mut self, now: Instant, sid: SessionId, stream: u32, frame: Bytes) {
        let Some(c) = self.conns.get(&sid) else {
            return;
        };
        let Some(key) = c.streams.iter().find_map(|(s, r)| match r {
            Role::Publishing(k) if *s == stream => Some(k.clone()),
            _ => None,
        }) else {
            return;
        };
        let Some(p) = self.publications.get_mut(&key) else {
            return;
        };
        if let MediaClass::Config(slot) = classify(&frame) {
            p.headers.store(slot, frame.clone());
        }
        let subscribers = p.subscribers;
        for shard in bits(subscribers) {
            if shard == self.id {
                self.deliver_media(now, &key, &frame);
            } else {
                self.send_to_shard(
                    shard,
                    ShardMsg::Media {
                        key: key.clone(),
                        frame: frame.clone(),
                    },
                );
            }
        }
    }

    fn deliver_media(&mut self, now: Instant, key: &StreamKey, frame: &Bytes) {
        let Some(a) = self.audiences.get_mut(key) else {
            return;
        };
        let class = classify(frame);
        if let MediaClass::Config(slot) = class {
            a.headers.store(slot, frame.clone());
        }
        let limit = self.shared.config.limits.player_backlog_bytes;
        let m = &self.shared.metrics;
        for p in &mut a.players {
            let Some(c) = self.conns.get_mut(&p.session) else {
                continue;
            };
            let backlog = c.nc.media_backlog(&self.ep, p.stream);
            let lifetime = match class {
                MediaClass::Keyframe => {
                    if backlog > limit {
                        p.waiting_keyframe = true;
                        Metrics::inc(&m.media_dropped_total, 1);
                        continue;
                    }
                    p.waiting_keyframe = false;
                    VIDEO_LIFETIME
                }
                MediaClass::Video => {
                    if p.waiting_keyframe || backlog > limit {
                        p.waiting_keyframe = true;
                        Metrics::inc(&m.media_dropped_total, 1);
                        continue;
                    }
                    VIDEO_LIFETIME
                }
                MediaClass::Audio | MediaClass::Data => {
                    // audio keeps flowing until the backlog is far over the limit
                    if backlog > limit.saturating_mul(2) {
                        Metrics::inc(&m.media_dropped_total, 1);
                        continue;
                    }
                    AUDIO_LIFETIME
                }
                MediaClass::Config(_) => {
                    p.needs_headers = false;
                    VIDEO_LIFETIME
                }
            };
            if c.nc
                .send_media(&mut self.ep, now, p.stream, frame.clone(), Some(lifetime))
                .is_ok()
            {
                Metrics::inc(&m.media_messages_relayed_total, 1);
                Metrics::inc(&m.media_bytes_relayed_total, frame.len() as u64);
            } else {
                Metrics::inc(&m.media_dropped_total, 1);
            }
        }
    }
}

fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| mask & (1u64 << i) != 0)
}

/// Waits until one of the sockets has a datagram; returns its index.
async fn recv_ready(socks: &[UdpSocket]) -> usize {
    std::future::poll_fn(|cx| {
        for (i, s) in socks.iter().enumerate() {
            if s.poll_recv_ready(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    })
    .await
}

/// Waits until any socket can send.
async fn writable(socks: &[UdpSocket]) {
    std::future::poll_fn(|cx| {
        for s in socks {
            if s.poll_send_ready(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_iteration() {
        assert_eq!(bits(0b1010).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(bits(0).count(), 0);
    }
}
