//! One engine shard's logic: `ShardCore`, a sans-IO [`Machine`] that owns
//! the shard's `rtmfp::Endpoint`, its sessions and what the server does with
//! them. The server runs one per thread, each on an `rtmfp_tokio::Host`
//! (`shard_host.rs`).
//!
//! The kernel spreads clients over the shards' SO_REUSEPORT sockets by
//! address hash. A session ID names its shard (`EndpointConfig::shard_bits`),
//! so a datagram that reaches another shard (after the client's address
//! changed) is handed to the owner as a `ShardMsg::Datagram`. Shards talk
//! to each other only through their hosts' bounded command channels
//! (`ShardMsg`, sent with `try_send`: a full channel drops the message and
//! counts it in `nimbus_limit_refusals_total`, like a full socket buffer
//! would); the shared directory, stream and group tables are locked only on
//! connects, introductions, relays and stream or group changes, never per
//! packet.
//!
//! ## What the core owns, and what it must not touch
//!
//! It owns the engine, the per-session `Conn` table (the
//! `ServerConnection`, peer ID, app, user, streams, groups), the stream
//! relay's publications and audiences, and the answers to cross-shard
//! messages. It opens no socket, reads no clock (every call gets `now`; the
//! Unix time for token expiry is derived from `now` through a `WallClock`
//! read by the caller), draws randomness only from the RNGs it is given
//! (the engine's, and one for NetGroup hints) and runs no task: the
//! registry's asynchronous work leaves as a `ShardEvent` and its answer
//! comes back as a command (`ShardMsg::ConnectChecked`).
//!
//! ## Run-loop contract
//!
//! The [`Machine`] contract, nothing more:
//!
//! 1. feed it what arrives: every datagram of every socket of the shard
//!    (`handle_datagram`), every `ShardMsg` (`handle_command`), and
//!    `handle_timeout` once `poll_timeout` has passed (there is always a
//!    deadline: the engine's defence counters reach the metrics once a
//!    second);
//! 2. after each input, drain `poll_transmit` (never drop what it gives:
//!    wait for the socket) and `poll_event` (registry work: do it and
//!    answer as the event says);
//! 3. after `ShardMsg::Shutdown` (or `handle_close`) the core closes every
//!    session and reports `is_done() == Some(true)` once none is left or
//!    `shutdown_grace_secs` after the `now` of the shutdown; before, it
//!    reports `Some(false)`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flash_amf::Value;
use rtmfp::{Address, AddressOrigin, Endpoint, Event, Machine, SessionId};
use rtmfp_flash::message::{ServerConnection, ServerEvent};
use rtmfp_flash::{fingerprint, hex_decode, hex_encode as hex, Epd};
use rustc_hash::FxHashMap;

use crate::directory::{NameEntry, PeerEntry};
use crate::groups::{GroupKey, Introduction, JoinError, Member};
use crate::metrics::Metrics;
use crate::policy::{decide, ConnectRequest, Decision};
use crate::streams::{classify, Headers, MediaClass, Publisher, StreamKey};
use crate::Shared;

/// Most commands waiting in a shard host's channel; beyond it, messages
/// from other shards (mostly rerouted datagrams and relayed media) are
/// dropped like a full socket buffer would.
pub(crate) const CHANNEL_CAPACITY: usize = 16384;

/// Most [`ShardEvent`]s waiting in the core while the registry is slow;
/// beyond it, registry connects are refused and bindings are skipped.
const MAX_PENDING_EVENTS: usize = 4096;

/// How often the engine's defence counters are added to the metrics.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Lifetime of relayed media in the engine: late media is abandoned, not
/// delivered late.
const AUDIO_LIFETIME: Duration = Duration::from_millis(1500);
const VIDEO_LIFETIME: Duration = Duration::from_millis(3000);

/// A command for a shard: a message from another shard, from the server
/// (shutdown) or from the control runtime (the registry's answers).
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
    /// The registry's answer for a connect waiting on it
    /// ([`ShardEvent::CheckCredential`]).
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
    /// A keying the pool ran for our engine ([`crate::keying`]).
    Keying(rtmfp::KeyingResult),
    /// Close every session and stop.
    Shutdown,
}

/// Asynchronous work a shard asks of the control runtime (the registry).
pub(crate) enum ShardEvent {
    /// Authenticate `user` with `credential`; answer with
    /// [`ShardMsg::ConnectChecked`] (the session's connect waits for it).
    CheckCredential {
        session: SessionId,
        app: usize,
        user: String,
        credential: String,
    },
    /// The registry user `user`, authenticated at connect, is now the peer
    /// `peer` (`bind_session`).
    BindUser { user: Box<str>, peer: [u8; 32] },
    /// The session of `peer`, bound in the registry, has closed
    /// (`unbind_session`).
    UnbindPeer { peer: [u8; 32] },
}

impl std::fmt::Debug for ShardEvent {
    /// Never shows the credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardEvent::CheckCredential {
                session, app, user, ..
            } => f
                .debug_struct("CheckCredential")
                .field("session", session)
                .field("app", app)
                .field("user", user)
                .finish_non_exhaustive(),
            ShardEvent::BindUser { user, peer } => f
                .debug_struct("BindUser")
                .field("user", user)
                .field("peer", &hex(peer))
                .finish(),
            ShardEvent::UnbindPeer { peer } => f
                .debug_struct("UnbindPeer")
                .field("peer", &hex(peer))
                .finish(),
        }
    }
}

/// Unix time derived from the core's `now`: the caller reads the system
/// clock once, when it builds the core, and the core counts from there on
/// the monotonic clock it is given (token expiry needs seconds, not more).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    at: Instant,
    unix_secs: u64,
}

impl WallClock {
    /// `unix` was the system time at `at`.
    pub(crate) fn new(at: Instant, unix: SystemTime) -> Self {
        Self {
            at,
            unix_secs: unix
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// Seconds since the Unix epoch at `now`.
    fn unix_secs(&self, now: Instant) -> u64 {
        self.unix_secs + now.saturating_duration_since(self.at).as_secs()
    }
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

/// Refusal of a publish request where streams are not allowed: status code
/// and description.
const PUBLISH_NOT_ALLOWED: (&str, &str) = (
    "NetStream.Publish.BadName",
    "publishing is not allowed here",
);
/// Refusal of a play request where streams are not allowed.
const PLAY_NOT_ALLOWED: (&str, &str) = (
    "NetStream.Play.StreamNotFound",
    "playing is not allowed here",
);

/// Where a NetStream status goes: a stream of a session, and the stream
/// name it is about.
#[derive(Debug, Clone, Copy)]
struct StreamAt<'a> {
    sid: SessionId,
    stream: u32,
    name: &'a str,
}

#[derive(Debug, Default)]
struct Audience {
    headers: Headers,
    players: Vec<Player>,
}

/// One shard's sans-IO core (see the module documentation).
pub(crate) struct ShardCore {
    id: usize,
    shared: Arc<Shared>,
    ep: Endpoint,
    /// Boxed: the table's slack then costs a pointer per slot, not a `Conn`.
    conns: FxHashMap<SessionId, Box<Conn>>,
    publications: HashMap<StreamKey, Publication>,
    audiences: HashMap<StreamKey, Audience>,
    /// Registry work for the control runtime (at most
    /// [`MAX_PENDING_EVENTS`]).
    events: VecDeque<ShardEvent>,
    /// The shutdown deadline, once shutting down.
    stopping: Option<Instant>,
    /// The shutdown deadline has passed.
    expired: bool,
    /// Rejected connections waiting for the end of their grace period, in
    /// deadline order (the grace period is constant and `now` never goes
    /// back).
    rejecting: VecDeque<(Instant, SessionId)>,
    /// Engine counters already added to the metrics.
    reported: rtmfp::EndpointStats,
    /// This shard's share of the `keyings_pending` gauge.
    reported_keyings_pending: i64,
    next_report: Instant,
    /// Randomness for NetGroup long-range hints.
    rng: rand_chacha::ChaCha8Rng,
    wall: WallClock,
}

impl std::fmt::Debug for ShardCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCore")
            .field("id", &self.id)
            .field("sessions", &self.conns.len())
            .field("stopping", &self.stopping.is_some())
            .finish_non_exhaustive()
    }
}

fn parse_peer_id(v: Option<&Value>) -> Option<[u8; 32]> {
    hex_decode(v?.as_str()?)?.try_into().ok()
}

impl ShardCore {
    /// The core of shard `id` around its engine (built with this shard's
    /// `shard_bits` and number), at `now`; `rng` draws the NetGroup hints.
    pub(crate) fn new(
        id: usize,
        shared: Arc<Shared>,
        ep: Endpoint,
        rng: rand_chacha::ChaCha8Rng,
        wall: WallClock,
        now: Instant,
    ) -> Self {
        Self {
            id,
            shared,
            ep,
            conns: FxHashMap::default(),
            publications: HashMap::new(),
            audiences: HashMap::new(),
            events: VecDeque::new(),
            stopping: None,
            expired: false,
            rejecting: VecDeque::new(),
            reported: rtmfp::EndpointStats::default(),
            reported_keyings_pending: 0,
            next_report: now + REPORT_INTERVAL,
            rng,
            wall,
        }
    }

    /// Adds the engine's defence counters to the metrics (once a second).
    fn report_engine_stats(&mut self, now: Instant) {
        self.next_report = now + REPORT_INTERVAL;
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
        let delta = |now: u64, then: u64| now.saturating_sub(then);
        Metrics::inc(
            &m.keyings_queued_total,
            delta(st.keyings_queued, self.reported.keyings_queued),
        );
        Metrics::inc(
            &m.keyings_done_total,
            delta(st.keyings_done, self.reported.keyings_done),
        );
        Metrics::inc(
            &m.keyings_dropped_total,
            delta(st.keyings_dropped, self.reported.keyings_dropped),
        );
        let pending = self.ep.keyings_pending() as i64;
        Metrics::add(&m.keyings_pending, pending - self.reported_keyings_pending);
        self.reported_keyings_pending = pending;
        self.reported = st;
    }

    /// Gives the keyings the engine queued to the workers (with deferred
    /// keying; a core without a pool runs them inside the engine).
    fn hand_out_keyings(&mut self, now: Instant) {
        let Some(pool) = &self.shared.keying else {
            return;
        };
        while let Some(job) = self.ep.poll_keying() {
            if let Err(id) = pool.submit(self.id, job) {
                Metrics::inc(&self.shared.metrics.limit_refusals_total, 1);
                self.ep
                    .handle_keying(now, rtmfp::KeyingResult::abandoned(id));
            }
        }
    }

    /// Sends `msg` to another shard through its host's command channel; a
    /// full channel drops it (counted as a limit refusal).
    fn send_to_shard(&self, shard: usize, msg: ShardMsg) {
        if let Some(tx) = self.shared.senders.get(shard) {
            if tx.try_send(msg).is_err() {
                Metrics::inc(&self.shared.metrics.limit_refusals_total, 1);
            }
        }
    }

    /// Queues work for the control runtime; `false` when too much is
    /// waiting already (the registry is slow or down).
    fn push_event(&mut self, event: ShardEvent) -> bool {
        if self.events.len() >= MAX_PENDING_EVENTS {
            Metrics::inc(&self.shared.metrics.limit_refusals_total, 1);
            tracing::warn!(
                shard = self.id,
                ?event,
                "registry work refused: too much is waiting"
            );
            return false;
        }
        self.events.push_back(event);
        true
    }

    // ----- cross-shard messages ----------------------------------------------

    fn handle_msg(&mut self, now: Instant, msg: ShardMsg) {
        match msg {
            ShardMsg::Datagram { from, data } => self.ep.handle_datagram(now, from, &data),
            ShardMsg::Keying(result) => self.ep.handle_keying(now, result),
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
        self.hand_out_keyings(now);
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
            self.push_event(ShardEvent::UnbindPeer { peer: c.peer });
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
                match decide(&self.shared.apps, &req, self.wall.unix_secs(now)) {
                    Decision::Accept { app, user } => self.accept(now, sid, app, user, false),
                    Decision::Reject(why) => self.reject(now, sid, &why),
                    Decision::CheckRegistry {
                        app,
                        user,
                        credential,
                    } => self.check_registry(now, sid, app, user, credential),
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
        tracing::info!(shard = self.id, peer = %c.addr, peer_id = %hex(&c.peer), user = c.user.as_deref().unwrap_or(""), app = self.shared.apps.get(app).map(|a| a.name.as_str()).unwrap_or(""), "connected");
        if let (true, Some(user)) = (registry, c.user.clone()) {
            let peer = c.peer;
            let bound = self.push_event(ShardEvent::BindUser { user, peer });
            if let Some(c) = self.conns.get_mut(&sid) {
                c.registry_bound = bound;
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
        if let Some(deadline) = c.nc.poll_timeout() {
            self.rejecting.push_back((deadline, sid));
        }
    }

    /// Closes the rejected connections whose grace period is over.
    fn reject_timers(&mut self, now: Instant) {
        while let Some(&(deadline, sid)) = self.rejecting.front() {
            if deadline > now {
                return;
            }
            self.rejecting.pop_front();
            if let Some(c) = self.conns.get_mut(&sid) {
                c.nc.handle_timeout(&mut self.ep, now);
            }
        }
    }

    /// Asks the control runtime to check a credential with the registry;
    /// the connect waits for [`ShardMsg::ConnectChecked`].
    fn check_registry(
        &mut self,
        now: Instant,
        sid: SessionId,
        app: usize,
        user: String,
        credential: String,
    ) {
        let event = ShardEvent::CheckCredential {
            session: sid,
            app,
            user,
            credential,
        };
        if self.shared.registry.is_none() || !self.push_event(event) {
            self.reject(now, sid, "the registry is not available");
            return;
        }
        if let Some(c) = self.conns.get_mut(&sid) {
            c.waiting = true;
        }
    }

    // ----- calls ---------------------------------------------------------------

    fn on_call(&mut self, now: Instant, sid: SessionId, txn: f64, name: &str, args: Vec<Value>) {
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
                let target = parse_peer_id(args.first())
                    .and_then(|t| self.shared.directory.get(&t))
                    .map(|t| (t.shard, t.session));
                let sender = Value::String(hex(&me));
                let missing = "relay target is not connected";
                self.relay(now, target, missing, "onRelay", sender, args)
            }
            // sendToUser(name, args...) -> onMessage(senderName or peer ID, args...)
            "sendToUser" if relay_allowed => {
                let target = args
                    .first()
                    .and_then(Value::as_str)
                    .and_then(|n| self.shared.directory.name(n))
                    .map(|t| (t.shard, t.session));
                let sender = Value::String(my_name.map(String::from).unwrap_or_else(|| hex(&me)));
                let missing = "user is not connected";
                self.relay(now, target, missing, "onMessage", sender, args)
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

    /// Relays a call to `target` (shard and session) as `command`, with
    /// `sender` in place of the first argument; without a target, the call
    /// fails with `missing`. Counted as a relay or a failed one.
    fn relay(
        &mut self,
        now: Instant,
        target: Option<(usize, SessionId)>,
        missing: &str,
        command: &str,
        sender: Value,
        mut args: Vec<Value>,
    ) -> Result<Value, (&'static str, String)> {
        let Some((shard, session)) = target else {
            Metrics::inc(&self.shared.metrics.relays_failed_total, 1);
            return Err(("NetConnection.Call.Failed", missing.to_string()));
        };
        args[0] = sender;
        self.deliver(now, shard, session, command, args);
        Metrics::inc(&self.shared.metrics.relays_total, 1);
        Ok(Value::Null)
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

    /// Sends a NetStream status to the stream of `at`, its details the
    /// stream name.
    fn status(&mut self, now: Instant, at: StreamAt<'_>, code: &str, level: &str, desc: &str) {
        if let Some(c) = self.conns.get_mut(&at.sid) {
            let _ = c.nc.stream_status(
                &mut self.ep,
                now,
                at.stream,
                code,
                level,
                desc,
                Some(at.name),
            );
        }
    }

    /// A status of level "error": the request of `at` is refused.
    fn refuse(&mut self, now: Instant, at: StreamAt<'_>, code: &str, desc: &str) {
        self.status(now, at, code, "error", desc);
    }

    /// A status of level "status".
    fn notify(&mut self, now: Instant, at: StreamAt<'_>, code: &str, desc: &str) {
        self.status(now, at, code, "status", desc);
    }

    /// Begins a publish or play request when the session's application
    /// allows streams: ends what the stream did before and returns its key.
    /// Otherwise refuses it with `refusal` (code and description).
    fn begin_stream(
        &mut self,
        now: Instant,
        at: StreamAt<'_>,
        (code, desc): (&str, &str),
    ) -> Option<StreamKey> {
        let allowed = self.app_of(at.sid).is_some_and(|a| a.streams);
        let key = self.stream_key(at.sid, at.name).filter(|_| allowed);
        match key {
            Some(_) => self.end_stream(now, at.sid, at.stream),
            None => self.refuse(now, at, code, desc),
        }
        key
    }

    fn on_publish(&mut self, now: Instant, sid: SessionId, stream: u32, name: &str) {
        let at = StreamAt { sid, stream, name };
        let Some(key) = self.begin_stream(now, at, PUBLISH_NOT_ALLOWED) else {
            return;
        };
        let p = Publisher {
            shard: self.id,
            session: sid,
            stream,
        };
        let Some(subscribers) = self.shared.streams.publish(&key, p) else {
            self.refuse(
                now,
                at,
                "NetStream.Publish.BadName",
                "stream is already being published",
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
        self.notify(
            now,
            at,
            "NetStream.Publish.Start",
            &format!("{name} is now published"),
        );
        for shard in bits(subscribers) {
            self.route_state(now, shard, key.clone(), true);
        }
        tracing::info!(shard = self.id, stream = %key, "publish");
    }

    fn on_play(&mut self, now: Instant, sid: SessionId, stream: u32, name: &str) {
        let at = StreamAt { sid, stream, name };
        let Some(key) = self.begin_stream(now, at, PLAY_NOT_ALLOWED) else {
            return;
        };
        let limit = self.shared.config.limits.players_per_stream;
        if self
            .audiences
            .get(&key)
            .is_some_and(|a| a.players.len() >= limit)
        {
            Metrics::inc(&self.shared.metrics.limit_refusals_total, 1);
            self.refuse(now, at, "NetStream.Play.Failed", "too many players");
            return;
        }
        let publisher = self.shared.streams.play(&key, self.id);
        if let Some(c) = self.conns.get_mut(&sid) {
            c.streams.push((stream, Role::Playing(key.clone())));
            let _ = c.nc.stream_begin(&mut self.ep, now, stream);
        }
        self.notify(
            now,
            at,
            "NetStream.Play.Reset",
            &format!("Playing and resetting {name}"),
        );
        self.notify(
            now,
            at,
            "NetStream.Play.Start",
            &format!("Started playing {name}"),
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
            self.notify(
                now,
                at,
                "NetStream.Play.PublishNotify",
                &format!("{name} is now published"),
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
            self.notify(now, StreamAt { sid, stream, name }, code, &desc);
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

impl Machine for ShardCore {
    type Command = ShardMsg;
    type Event = ShardEvent;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let owner = rtmfp::datagram_shard(data, self.shared.shard_bits).map(|s| s as usize);
        match owner {
            Some(owner) if owner != self.id && owner < self.shared.senders.len() => {
                Metrics::inc(&self.shared.metrics.datagrams_rerouted_total, 1);
                let data = data.to_vec();
                self.send_to_shard(owner, ShardMsg::Datagram { from, data });
            }
            _ => {
                self.ep.handle_datagram(now, from, data);
                self.process_events(now);
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        self.reject_timers(now);
        if now >= self.next_report {
            self.report_engine_stats(now);
        }
        if self.stopping.is_some_and(|d| now >= d) {
            self.expired = true;
        }
        self.process_events(now);
    }

    fn handle_command(&mut self, now: Instant, msg: ShardMsg) {
        self.handle_msg(now, msg);
        self.process_events(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.ep.poll_transmit(now, buf)
    }

    fn poll_event(&mut self) -> Option<ShardEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let stopping = self.stopping.filter(|_| !self.expired);
        let rejecting = self.rejecting.front().map(|(t, _)| *t);
        Some(
            [self.ep.poll_timeout(), rejecting, stopping]
                .into_iter()
                .flatten()
                .fold(self.next_report, Instant::min),
        )
    }

    fn handle_close(&mut self, now: Instant) {
        self.begin_shutdown(now);
        self.process_events(now);
    }

    fn is_done(&self) -> Option<bool> {
        Some(self.stopping.is_some() && (self.expired || self.ep.session_count() == 0))
    }
}

fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| mask & (1u64 << i) != 0)
}

#[cfg(test)]
mod tests {
    //! The core alone: no socket, no thread, no clock but the virtual one
    //! the tests advance.

    use super::*;
    use crate::directory::Directory;
    use crate::groups::{GroupAccess, GroupTable};
    use crate::streams::StreamTable;
    use crate::ServerConfig;
    use rand_core::SeedableRng;
    use rtmfp::EndpointConfig;
    use rtmfp_flash::message::{NcEvent, NetConnection};
    use rtmfp_flash::{DhGroup, FlashProfile};
    use rtmfp_tokio::HostChannel;
    use std::sync::atomic::Ordering;

    const SERVER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(10, 0, 0, 1),
        1935,
    ));
    const CLIENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(10, 0, 0, 2),
        50000,
    ));

    #[test]
    fn bit_iteration() {
        assert_eq!(bits(0b1010).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(bits(0).count(), 0);
    }

    #[test]
    fn wall_clock_counts_on_the_given_now() {
        let at = Instant::now();
        let w = WallClock::new(at, UNIX_EPOCH + Duration::from_secs(1_000));
        assert_eq!(w.unix_secs(at), 1_000);
        assert_eq!(w.unix_secs(at + Duration::from_millis(2_500)), 1_002);
    }

    /// The state of a server of `channels.len()` shards, without threads.
    fn shared(config: ServerConfig, channels: &[HostChannel<ShardCore>]) -> Arc<Shared> {
        let apps = config.effective_apps();
        let group_access = apps
            .iter()
            .map(GroupAccess::from_app)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let n = channels.len();
        Arc::new(Shared {
            apps,
            group_access,
            groups: GroupTable::new(10, 10),
            directory: Directory::new(),
            streams: StreamTable::new(n),
            metrics: Arc::default(),
            senders: channels.iter().map(HostChannel::handle).collect(),
            registry: None,
            keying: None,
            shard_bits: if n <= 1 { 0 } else { n.ilog2() as u8 },
            config,
        })
    }

    fn core(shared: Arc<Shared>, id: usize, now: Instant) -> ShardCore {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(id as u64);
        let profile = FlashProfile::server(None)
            .groups(&[DhGroup::Modp1024])
            .build(&mut rng)
            .unwrap();
        let ec = EndpointConfig {
            shard_bits: shared.shard_bits,
            shard: id as u32,
            report_foreign_ihello: true,
            ..EndpointConfig::default()
        };
        let ep = Endpoint::new(ec, Box::new(profile), Box::new(rng), now);
        let wall = WallClock::new(now, SystemTime::now());
        ShardCore::new(
            id,
            shared,
            ep,
            rand_chacha::ChaCha8Rng::seed_from_u64(7),
            wall,
            now,
        )
    }

    /// A server core and one Flash client exchanging datagrams in memory,
    /// in virtual time.
    struct Pair {
        core: ShardCore,
        ep: Endpoint,
        nc: NetConnection,
        events: Vec<NcEvent>,
        now: Instant,
        buf: Vec<u8>,
        /// Datagrams are lost both ways while unset.
        link_up: bool,
    }

    impl Pair {
        fn new(core: ShardCore, now: Instant) -> Self {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
            let profile = FlashProfile::client()
                .groups(&[DhGroup::Modp1024])
                .build(&mut rng)
                .unwrap();
            let mut ep = Endpoint::new(
                EndpointConfig::default(),
                Box::new(profile),
                Box::new(rng),
                now,
            );
            let url = format!("rtmfp://{SERVER}/app");
            let nc =
                NetConnection::connect(&mut ep, now, &url, &[SERVER], Default::default()).unwrap();
            Self {
                core,
                ep,
                nc,
                events: Vec::new(),
                now,
                buf: Vec::with_capacity(2048),
                link_up: true,
            }
        }

        /// One millisecond of both ends' lives.
        fn step(&mut self) {
            let now = self.now;
            while let Some(to) = self.ep.poll_transmit(now, &mut self.buf) {
                assert_eq!(to, SERVER);
                if self.link_up {
                    self.core.handle_datagram(now, CLIENT, &self.buf);
                }
            }
            while let Some(to) = self.core.poll_transmit(now, &mut self.buf) {
                assert_eq!(to, CLIENT);
                if self.link_up {
                    self.ep.handle_datagram(now, SERVER, &self.buf);
                }
            }
            while let Some(e) = self.ep.poll_event() {
                self.nc.on_event(&mut self.ep, now, &e);
            }
            while let Some(e) = self.nc.poll_event() {
                self.events.push(e);
            }
            self.now += Duration::from_millis(1);
            if self.ep.poll_timeout().is_some_and(|t| t <= self.now) {
                self.ep.handle_timeout(self.now);
            }
            if self.core.poll_timeout().is_some_and(|t| t <= self.now) {
                self.core.handle_timeout(self.now);
            }
        }

        /// Steps until `done` or `limit` of virtual time has passed.
        fn run(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
            let end = self.now + limit;
            while self.now < end {
                self.step();
                if done(self) {
                    return true;
                }
            }
            false
        }

        fn connected(&self) -> bool {
            self.events
                .iter()
                .any(|e| matches!(e, NcEvent::Connected(_)))
        }
    }

    fn config() -> ServerConfig {
        ServerConfig {
            dh_groups: vec![2],
            shutdown_grace_secs: 2,
            ..ServerConfig::default()
        }
    }

    #[test]
    fn a_client_connects_and_is_closed_at_shutdown() {
        let now = Instant::now();
        let channels = [HostChannel::new(16)];
        let shared = shared(config(), &channels);
        let mut p = Pair::new(core(shared.clone(), 0, now), now);
        assert!(p.run(Duration::from_secs(10), Pair::connected));
        assert_eq!(shared.metrics.connections.load(Ordering::Relaxed), 1);
        assert_eq!(p.core.is_done(), Some(false), "running until shut down");

        p.core.handle_command(p.now, ShardMsg::Shutdown);
        assert!(p.run(Duration::from_secs(1), |p| p
            .events
            .iter()
            .any(|e| matches!(e, NcEvent::Closed))));
        assert!(p.run(Duration::from_secs(1), |p| p.core.is_done() == Some(true)));
        assert_eq!(shared.metrics.connections.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn shutdown_ends_at_its_deadline_when_clients_are_silent() {
        let now = Instant::now();
        let channels = [HostChannel::new(16)];
        let shared = shared(config(), &channels);
        let mut p = Pair::new(core(shared, 0, now), now);
        assert!(p.run(Duration::from_secs(10), Pair::connected));
        p.link_up = false;
        let t0 = p.now;
        p.core.handle_command(t0, ShardMsg::Shutdown);
        let deadline = t0 + Duration::from_secs(2);
        assert!(p.core.poll_timeout().is_some_and(|t| t <= deadline));
        assert!(!p.run(deadline - p.now - Duration::from_millis(5), |p| p
            .core
            .is_done()
            == Some(true)));
        assert!(p.run(Duration::from_millis(10), |p| p.core.is_done()
            == Some(true)));
        assert!(p.now >= deadline);
    }

    #[test]
    fn a_core_with_no_session_is_done_at_once_after_shutdown() {
        let now = Instant::now();
        let channels = [HostChannel::new(16)];
        let mut c = core(shared(config(), &channels), 0, now);
        assert_eq!(c.is_done(), Some(false));
        assert!(c.poll_timeout().is_some(), "the stats report is a timer");
        c.handle_command(now, ShardMsg::Shutdown);
        assert_eq!(c.is_done(), Some(true));
    }

    #[test]
    fn a_datagram_for_another_shards_session_goes_to_that_shard() {
        let now = Instant::now();
        let channels = [HostChannel::new(16), HostChannel::new(16)];
        let shared = shared(config(), &channels);
        let mut c = core(shared.clone(), 0, now);
        // session ID 0x8000_0001 (shard 1 of 2), scrambled with zero words
        let mut d = vec![0u8; 24];
        d[..4].copy_from_slice(&0x8000_0001u32.to_be_bytes());
        c.handle_datagram(now, CLIENT, &d);
        let m = &shared.metrics;
        assert_eq!(m.datagrams_rerouted_total.load(Ordering::Relaxed), 1);
        assert_eq!(m.limit_refusals_total.load(Ordering::Relaxed), 0);
        assert_eq!(c.ep.stats().datagrams_dropped, 0, "not for this engine");
        // a session of ours goes to our engine (and is dropped there: unknown)
        d[..4].copy_from_slice(&0x0000_0001u32.to_be_bytes());
        c.handle_datagram(now, CLIENT, &d);
        assert_eq!(m.datagrams_rerouted_total.load(Ordering::Relaxed), 1);
    }
}
