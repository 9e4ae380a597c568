//! One node's membership of the cluster: its state in Redis (kept from a
//! local copy, so it can always be written again), its heartbeat, the
//! lookups of everyone's state, and its pub/sub channel.
//!
//! Mutations (`register_peer`, `join_group`, …) are synchronous: they
//! change the local copy and queue a write, which a background task sends
//! to Redis in batches. They never wait for Redis and never fail because of
//! it: while Redis is lost the writes are skipped and the resync that
//! follows its return writes the whole local copy again. Lookups and claims
//! are asynchronous and do ask Redis (bounded by the configured timeout).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, oneshot, watch};

use crate::message::{Envelope, Message, VERSION};
use crate::metrics::ClusterMetrics;
use crate::model::*;

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// This node's name (unique in the cluster; `[A-Za-z0-9._-]`, ≤ 64).
    pub node: String,
    /// The address clients and other nodes reach this node at.
    pub advertise: SocketAddr,
    /// Prefix of every key and channel (several clusters can share one
    /// Redis database with different prefixes).
    pub prefix: String,
    /// Lifetime of the node's heartbeat and of all the state it registers:
    /// a node silent this long is gone, with its peers, users, streams and
    /// group memberships.
    pub ttl: Duration,
    /// Time between heartbeats (keep it well under `ttl`; a third or less).
    pub heartbeat: Duration,
    /// Longest wait for one Redis command (or a connection attempt).
    pub timeout: Duration,
    /// Time between reconnection attempts while Redis is lost.
    pub retry: Duration,
    /// Capacity of the queue of received messages.
    pub incoming_queue: usize,
    /// Capacity of the queue of writes and messages to send (a full queue
    /// drops messages, and turns writes into a full resync).
    pub outgoing_queue: usize,
    /// Most peers (and as many user names, streams and group memberships)
    /// this node registers.
    pub max_entries: usize,
}

impl ClusterConfig {
    /// A configuration with the default timings: a 10 s TTL, heartbeats
    /// every 2 s, 1 s command timeout, reconnection every 500 ms.
    pub fn new(url: impl Into<String>, node: impl Into<String>, advertise: SocketAddr) -> Self {
        Self {
            url: url.into(),
            node: node.into(),
            advertise,
            prefix: "nimbus:".into(),
            ttl: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            retry: Duration::from_millis(500),
            incoming_queue: 4096,
            outgoing_queue: 16384,
            max_entries: 1_000_000,
        }
    }
}

/// The node's link to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Not connected yet.
    Connecting,
    /// Connected; the node's state is registered.
    Connected,
    /// Redis is unreachable: the node serves its own clients only; its
    /// state changes are kept locally.
    Lost,
    /// Redis is back and the node registered all its state again (as
    /// good as `Connected`).
    Resynced,
}

impl ConnState {
    /// True when Redis is reachable.
    pub fn is_up(self) -> bool {
        matches!(self, Self::Connected | Self::Resynced)
    }
}

/// Errors of the cluster API.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A bad name, or a local table full.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The Redis URL cannot be used.
    #[error("bad Redis URL: {0}")]
    Url(String),
    /// Redis is not reachable now (lookups need it).
    #[error("Redis unavailable")]
    Unavailable,
    /// The send queue is full.
    #[error("cluster send queue full")]
    QueueFull,
    /// A Redis error or timeout.
    #[error("Redis: {0}")]
    Redis(String),
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e.to_string())
    }
}

/// The kinds of state a node registers, one Redis hash each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Peers,
    Users,
    Streams,
    Groups,
}

const KINDS: [Kind; 4] = [Kind::Peers, Kind::Users, Kind::Streams, Kind::Groups];

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Kind::Peers => "peers",
            Kind::Users => "users",
            Kind::Streams => "streams",
            Kind::Groups => "groups",
        }
    }
}

/// Key and channel names.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Sorted set of node names (score: the node's expiry, for garbage
    /// collection only).
    fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
    /// A node's heartbeat (its `NodeInfo`, with the TTL).
    fn node(&self, node: &str) -> String {
        format!("{}node:{node}", self.prefix)
    }
    /// A node's hash of one kind of state (same TTL).
    fn hash(&self, node: &str, kind: Kind) -> String {
        format!("{}node:{node}:{}", self.prefix, kind.suffix())
    }
    /// A node's channel.
    fn channel(&self, node: &str) -> String {
        format!("{}msg:{node}", self.prefix)
    }
    /// The broadcast channel.
    fn broadcast(&self) -> String {
        format!("{}msg:*", self.prefix)
    }
}

/// The node's own state, from which Redis is (re)written.
#[derive(Debug, Default)]
struct Local {
    peers: HashMap<Id32, PeerRecord>,
    users: HashMap<String, UserRecord>,
    streams: HashMap<String, StreamRecord>,
    groups: HashMap<String, BTreeSet<Id32>>,
}

impl Local {
    fn value(&self, kind: Kind, field: &str) -> Option<String> {
        match kind {
            Kind::Peers => parse_id(field)
                .and_then(|id| self.peers.get(&id))
                .map(to_json),
            Kind::Users => self.users.get(field).map(to_json),
            Kind::Streams => self.streams.get(field).map(to_json),
            Kind::Groups => self.groups.get(field).map(group_value),
        }
    }

    fn fields(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::Peers => self.peers.keys().map(|p| hex(p)).collect(),
            Kind::Users => self.users.keys().cloned().collect(),
            Kind::Streams => self.streams.keys().cloned().collect(),
            Kind::Groups => self.groups.keys().cloned().collect(),
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn group_value(members: &BTreeSet<Id32>) -> String {
    let list: Vec<String> = members.iter().map(|m| hex(m)).collect();
    serde_json::to_string(&list).unwrap_or_default()
}

/// Work for the writer task.
#[derive(Debug)]
enum Op {
    /// Write the local copy's current value of a field (or delete it).
    Touch(Kind, String),
    Publish(String, Vec<u8>),
    /// Write the field, then check no other live node holds it for
    /// another peer; answers whether the claim stands.
    Claim {
        kind: Kind,
        field: String,
        peer: String,
        reply: oneshot::Sender<bool>,
    },
    Flush(oneshot::Sender<()>),
    Leave(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Shared {
    cfg: ClusterConfig,
    keys: Keys,
    incarnation: u64,
    client: redis::Client,
    local: Mutex<Local>,
    sessions: AtomicU64,
    /// Set when a write could not be queued: the writer resyncs.
    dirty: AtomicBool,
    conn: Mutex<Option<MultiplexedConnection>>,
    state: watch::Sender<ConnState>,
    metrics: Arc<ClusterMetrics>,
    ops: mpsc::Sender<Op>,
}

/// A record one peer holds (a user name, a published stream).
trait Held {
    fn holder(&self) -> &str;
}

impl Held for UserRecord {
    fn holder(&self) -> &str {
        &self.peer
    }
}

impl Held for StreamRecord {
    fn holder(&self) -> &str {
        &self.peer
    }
}

/// Takes `field` for `peer_hex` in this node's copy: `Ok(false)` when
/// another peer holds it, an error when the map is full.
fn hold<R: Held>(
    map: &mut HashMap<String, R>,
    field: &str,
    peer_hex: &str,
    max: usize,
    what: &'static str,
    record: impl FnOnce() -> R,
) -> Result<bool, ClusterError> {
    match map.get(field) {
        Some(r) if r.holder() != peer_hex => return Ok(false),
        Some(_) => {}
        None if map.len() >= max => return Err(InvalidInput::Limit(what).into()),
        None => {}
    }
    map.insert(field.to_string(), record());
    Ok(true)
}

/// Removes `field` from this node's copy if `peer_hex` holds it.
fn unhold<R: Held>(map: &mut HashMap<String, R>, field: &str, peer_hex: &str) -> bool {
    let mine = map.get(field).is_some_and(|r| r.holder() == peer_hex);
    if mine {
        map.remove(field);
    }
    mine
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[derive(Debug)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A node's handle on the cluster (cheap to clone).
///
/// Dropping the last handle stops the heartbeat without removing anything
/// (as a crash would: the node's state expires after the TTL); [`leave`]
/// removes it at once.
///
/// [`leave`]: Cluster::leave
#[derive(Debug, Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

/// Messages from other nodes, in arrival order (bounded: when full, new
/// messages are dropped and counted).
pub type Incoming = mpsc::Receiver<Envelope>;

impl Cluster {
    /// Joins: starts the heartbeat and the channel listener on the current
    /// tokio runtime (an error outside one). Returns at once; the node registers itself when Redis
    /// answers (see [`Cluster::state`]) and keeps trying while it does not.
    pub fn start(cfg: ClusterConfig) -> Result<(Cluster, Incoming), ClusterError> {
        check_node_name(&cfg.node)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ClusterError::Redis("Cluster::start needs a tokio runtime".into()))?;
        if cfg.prefix.len() > 64 || cfg.prefix.chars().any(char::is_control) {
            return Err(ClusterError::Url("prefix too long".into()));
        }
        let client =
            redis::Client::open(cfg.url.as_str()).map_err(|e| ClusterError::Url(e.to_string()))?;
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| ClusterError::Redis(e.to_string()))?;
        let incarnation = u64::from_le_bytes(b);
        let (ops_tx, ops_rx) = mpsc::channel(cfg.outgoing_queue.max(16));
        let (in_tx, in_rx) = mpsc::channel(cfg.incoming_queue.max(16));
        let shared = Arc::new(Shared {
            keys: Keys {
                prefix: cfg.prefix.clone(),
            },
            incarnation,
            client,
            local: Mutex::default(),
            sessions: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            conn: Mutex::new(None),
            state: watch::channel(ConnState::Connecting).0,
            metrics: Arc::default(),
            ops: ops_tx,
            cfg,
        });
        let writer = runtime.spawn(run_writer(shared.clone(), ops_rx));
        let listener = runtime.spawn(run_listener(shared.clone(), in_tx));
        Ok((
            Cluster {
                shared,
                _tasks: Arc::new(Tasks(vec![writer, listener])),
            },
            in_rx,
        ))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.shared.cfg.node
    }

    /// This process's incarnation (random at start).
    pub fn incarnation(&self) -> u64 {
        self.shared.incarnation
    }

    /// The connection state, as a watch channel.
    pub fn state(&self) -> watch::Receiver<ConnState> {
        self.shared.state.subscribe()
    }

    /// The counters and gauges.
    pub fn metrics(&self) -> Arc<ClusterMetrics> {
        self.shared.metrics.clone()
    }

    /// Waits until Redis is reachable and the node registered (false after
    /// `limit`).
    pub async fn wait_up(&self, limit: Duration) -> bool {
        let mut rx = self.state();
        tokio::time::timeout(limit, rx.wait_for(|s| s.is_up()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Sets the load the next heartbeat publishes.
    pub fn set_sessions(&self, sessions: u64) {
        self.shared.sessions.store(sessions, Ordering::Relaxed);
    }

    fn queue(&self, op: Op) {
        if self.shared.ops.try_send(op).is_err() {
            // the resync writes everything, this change included
            self.shared.dirty.store(true, Ordering::Relaxed);
        }
    }

    fn update_gauges(&self, l: &Local) {
        let m = &self.shared.metrics;
        ClusterMetrics::set(&m.peers, l.peers.len());
        ClusterMetrics::set(&m.users, l.users.len());
        ClusterMetrics::set(&m.streams, l.streams.len());
        ClusterMetrics::set(&m.group_members, l.groups.values().map(BTreeSet::len).sum());
    }

    /// Registers (or updates) a peer connected to this node.
    pub fn register_peer(&self, peer: Id32, mut record: PeerRecord) -> Result<(), ClusterError> {
        let mut seen = Vec::with_capacity(record.reported.len().min(MAX_PEER_ADDRESSES));
        for a in record.reported {
            if seen.len() < MAX_PEER_ADDRESSES && !seen.contains(&a) {
                seen.push(a);
            }
        }
        record.reported = seen;
        if record.since_ms == 0 {
            record.since_ms = unix_ms();
        }
        {
            let mut l = lock(&self.shared.local);
            if !l.peers.contains_key(&peer) && l.peers.len() >= self.shared.cfg.max_entries {
                return Err(InvalidInput::Limit("peers").into());
            }
            l.peers.insert(peer, record);
            self.update_gauges(&l);
        }
        self.queue(Op::Touch(Kind::Peers, hex(&peer)));
        Ok(())
    }

    /// Removes a peer that left this node.
    pub fn unregister_peer(&self, peer: &Id32) {
        let removed = {
            let mut l = lock(&self.shared.local);
            let r = l.peers.remove(peer).is_some();
            self.update_gauges(&l);
            r
        };
        if removed {
            self.queue(Op::Touch(Kind::Peers, hex(peer)));
        }
    }

    async fn claim(&self, kind: Kind, field: String, peer: String) -> bool {
        let (tx, rx) = oneshot::channel();
        let op = Op::Claim {
            kind,
            field,
            peer,
            reply: tx,
        };
        if self.shared.ops.try_send(op).is_err() {
            self.shared.dirty.store(true, Ordering::Relaxed);
            return true; // decided locally, as while Redis is lost
        }
        rx.await.unwrap_or(true)
    }

    /// Claims a user name (case-insensitive) for a peer of this node.
    /// `Ok(false)` when another peer holds it, here or on another live
    /// node. A peer reclaiming its own name (a reconnection) succeeds.
    /// While Redis is lost, only this node's own names are checked.
    pub async fn claim_user(&self, name: &str, peer: Id32) -> Result<bool, ClusterError> {
        check_user_name(name)?;
        let field = user_field(name);
        let peer_hex = hex(&peer);
        {
            let mut l = lock(&self.shared.local);
            let max = self.shared.cfg.max_entries;
            let held = hold(&mut l.users, &field, &peer_hex, max, "users", || {
                UserRecord {
                    name: name.to_string(),
                    peer: peer_hex.clone(),
                    since_ms: unix_ms(),
                }
            })?;
            if !held {
                return Ok(false);
            }
            self.update_gauges(&l);
        }
        Ok(self.claim(Kind::Users, field, peer_hex).await)
    }

    /// Releases a user name if `peer` holds it.
    pub fn release_user(&self, name: &str, peer: &Id32) {
        let field = user_field(name);
        let removed = {
            let mut l = lock(&self.shared.local);
            let mine = unhold(&mut l.users, &field, &hex(peer));
            self.update_gauges(&l);
            mine
        };
        if removed {
            self.queue(Op::Touch(Kind::Users, field));
        }
    }

    /// Claims a stream (app, name) for a publishing peer of this node;
    /// `Ok(false)` when another peer publishes it (on any live node).
    pub async fn claim_stream(
        &self,
        app: &str,
        name: &str,
        peer: Id32,
    ) -> Result<bool, ClusterError> {
        check_app(app)?;
        check_stream(name)?;
        let field = stream_field(app, name);
        let peer_hex = hex(&peer);
        {
            let mut l = lock(&self.shared.local);
            let max = self.shared.cfg.max_entries;
            let held = hold(&mut l.streams, &field, &peer_hex, max, "streams", || {
                StreamRecord {
                    app: app.to_string(),
                    name: name.to_string(),
                    peer: peer_hex.clone(),
                    since_ms: unix_ms(),
                }
            })?;
            if !held {
                return Ok(false);
            }
            self.update_gauges(&l);
        }
        Ok(self.claim(Kind::Streams, field, peer_hex).await)
    }

    /// Releases a stream if `peer` publishes it.
    pub fn release_stream(&self, app: &str, name: &str, peer: &Id32) {
        let field = stream_field(app, name);
        let removed = {
            let mut l = lock(&self.shared.local);
            let mine = unhold(&mut l.streams, &field, &hex(peer));
            self.update_gauges(&l);
            mine
        };
        if removed {
            self.queue(Op::Touch(Kind::Streams, field));
        }
    }

    /// Adds a member (a peer of this node) to a NetGroup.
    pub fn join_group(&self, app: &str, group: &Id32, peer: Id32) -> Result<(), ClusterError> {
        check_app(app)?;
        let field = group_field(app, group);
        {
            let mut l = lock(&self.shared.local);
            let total: usize = l.groups.values().map(BTreeSet::len).sum();
            if total >= self.shared.cfg.max_entries {
                return Err(InvalidInput::Limit("group members").into());
            }
            let members = l.groups.entry(field.clone()).or_default();
            if members.len() >= MAX_GROUP_MEMBERS_PER_NODE && !members.contains(&peer) {
                return Err(InvalidInput::Limit("members of one group").into());
            }
            members.insert(peer);
            self.update_gauges(&l);
        }
        self.queue(Op::Touch(Kind::Groups, field));
        Ok(())
    }

    /// Removes a member from a NetGroup.
    pub fn leave_group(&self, app: &str, group: &Id32, peer: &Id32) {
        let field = group_field(app, group);
        let removed = {
            let mut l = lock(&self.shared.local);
            let mut removed = false;
            if let Some(m) = l.groups.get_mut(&field) {
                removed = m.remove(peer);
                if m.is_empty() {
                    l.groups.remove(&field);
                }
            }
            self.update_gauges(&l);
            removed
        };
        if removed {
            self.queue(Op::Touch(Kind::Groups, field));
        }
    }

    /// Sends a message to one node (queued; `Err` when the queue is full
    /// or Redis is lost, and counted).
    pub fn send(&self, node: &str, msg: Message) -> Result<(), ClusterError> {
        check_node_name(node)?;
        self.publish(self.shared.keys.channel(node), msg)
    }

    /// Sends a message to every node (this one ignores its own).
    pub fn broadcast(&self, msg: Message) -> Result<(), ClusterError> {
        self.publish(self.shared.keys.broadcast(), msg)
    }

    fn publish(&self, channel: String, msg: Message) -> Result<(), ClusterError> {
        let m = &self.shared.metrics;
        let env = Envelope {
            v: VERSION,
            from: self.shared.cfg.node.clone(),
            incarnation: self.shared.incarnation,
            msg,
        };
        if env.check().is_err() {
            ClusterMetrics::inc(&m.messages_send_dropped_total);
            return Err(InvalidInput::Limit("message fields").into());
        }
        if !self.shared.state.borrow().is_up() {
            ClusterMetrics::inc(&m.messages_send_dropped_total);
            return Err(ClusterError::Unavailable);
        }
        if self
            .shared
            .ops
            .try_send(Op::Publish(channel, env.encode()))
            .is_err()
        {
            ClusterMetrics::inc(&m.messages_send_dropped_total);
            return Err(ClusterError::QueueFull);
        }
        Ok(())
    }

    /// Waits until every change and message queued before it went to
    /// Redis (or was skipped because Redis is lost).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.ops.send(Op::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Leaves the cluster: removes this node's heartbeat and state from
    /// Redis now (rather than at the TTL) and stops.
    pub async fn leave(self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.ops.send(Op::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(self.shared.cfg.timeout * 2, rx).await;
        }
    }

    // ----- lookups -------------------------------------------------------------

    fn conn(&self) -> Result<MultiplexedConnection, ClusterError> {
        lock(&self.shared.conn)
            .clone()
            .ok_or(ClusterError::Unavailable)
    }

    async fn ask<T, F>(&self, f: F) -> Result<T, ClusterError>
    where
        F: std::future::Future<Output = Result<T, ClusterError>>,
    {
        let m = &self.shared.metrics;
        ClusterMetrics::inc(&m.lookups_total);
        let r = match tokio::time::timeout(self.shared.cfg.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Redis("timed out".into())),
        };
        if r.is_err() {
            ClusterMetrics::inc(&m.lookup_failures_total);
        }
        r
    }

    /// The live nodes with their load, by name.
    pub async fn live_nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let mut conn = self.conn()?;
        self.ask(live_nodes(&self.shared.keys, &mut conn)).await
    }

    /// The live node with the fewest sessions (ties: the first by name).
    pub async fn least_loaded(&self) -> Result<Option<NodeInfo>, ClusterError> {
        let nodes = self.live_nodes().await?;
        Ok(nodes.into_iter().min_by(|a, b| {
            a.sessions
                .cmp(&b.sessions)
                .then_with(|| a.name.cmp(&b.name))
        }))
    }

    /// Every live node's value of one field of one kind.
    async fn field_everywhere(
        &self,
        kind: Kind,
        field: &str,
    ) -> Result<Vec<(NodeInfo, String)>, ClusterError> {
        let mut conn = self.conn()?;
        self.ask(field_everywhere(&self.shared.keys, &mut conn, kind, field))
            .await
    }

    /// Where a peer is connected (the newest registration when a
    /// reconnecting peer is briefly on two nodes).
    pub async fn find_peer(&self, peer: &Id32) -> Result<Option<PeerLocation>, ClusterError> {
        let found = self.field_everywhere(Kind::Peers, &hex(peer)).await?;
        Ok(found
            .into_iter()
            .filter_map(|(node, v)| {
                let record: PeerRecord = serde_json::from_str(&v).ok()?;
                Some(PeerLocation { node, record })
            })
            .max_by_key(|p| p.record.since_ms))
    }

    /// Who holds a user name (case-insensitive).
    pub async fn find_user(&self, name: &str) -> Result<Option<UserLocation>, ClusterError> {
        check_user_name(name)?;
        let found = self
            .field_everywhere(Kind::Users, &user_field(name))
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(node, v)| {
                let r: UserRecord = serde_json::from_str(&v).ok()?;
                Some((r.since_ms, node, parse_id(&r.peer)?, r.name))
            })
            .max_by_key(|(since, ..)| *since)
            .map(|(_, node, peer, name)| UserLocation { node, peer, name }))
    }

    /// Which node publishes a stream.
    pub async fn find_stream(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Option<StreamLocation>, ClusterError> {
        check_app(app)?;
        check_stream(name)?;
        let found = self
            .field_everywhere(Kind::Streams, &stream_field(app, name))
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(node, v)| {
                let r: StreamRecord = serde_json::from_str(&v).ok()?;
                Some((r.since_ms, node, parse_id(&r.peer)?))
            })
            .max_by_key(|(since, ..)| *since)
            .map(|(_, node, peer)| StreamLocation { node, peer }))
    }

    /// The members of a NetGroup on every live node (at most
    /// [`MAX_GROUP_MEMBERS_RETURNED`]), sorted by peer ID (the group's
    /// ring order).
    pub async fn group_members(
        &self,
        app: &str,
        group: &Id32,
    ) -> Result<Vec<GroupMember>, ClusterError> {
        check_app(app)?;
        let found = self
            .field_everywhere(Kind::Groups, &group_field(app, group))
            .await?;
        let mut out = Vec::new();
        for (node, v) in found {
            let Ok(list) = serde_json::from_str::<Vec<String>>(&v) else {
                continue;
            };
            for p in list.iter().take(MAX_GROUP_MEMBERS_PER_NODE) {
                if let Some(peer) = parse_id(p) {
                    out.push(GroupMember {
                        peer,
                        node: node.name.clone(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.peer.cmp(&b.peer).then_with(|| a.node.cmp(&b.node)));
        out.truncate(MAX_GROUP_MEMBERS_RETURNED);
        Ok(out)
    }
}

/// The names to look at: the most recently heartbeating first, so the
/// names of nodes long gone cannot crowd out live ones.
async fn node_names(
    keys: &Keys,
    conn: &mut MultiplexedConnection,
) -> Result<Vec<String>, ClusterError> {
    Ok(redis::cmd("ZREVRANGE")
        .arg(keys.nodes())
        .arg(0)
        .arg(MAX_NODES as i64 - 1)
        .query_async(conn)
        .await?)
}

async fn live_nodes(
    keys: &Keys,
    conn: &mut MultiplexedConnection,
) -> Result<Vec<NodeInfo>, ClusterError> {
    let names = node_names(keys, conn).await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut get = redis::cmd("MGET");
    for n in &names {
        get.arg(keys.node(n));
    }
    let values: Vec<Option<String>> = get.query_async(conn).await?;
    let mut nodes: Vec<NodeInfo> = values
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_str::<NodeInfo>(&v).ok())
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

async fn field_everywhere(
    keys: &Keys,
    conn: &mut MultiplexedConnection,
    kind: Kind,
    field: &str,
) -> Result<Vec<(NodeInfo, String)>, ClusterError> {
    let names = node_names(keys, conn).await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // one transaction: a node's heartbeat and its entry are read at the
    // same instant, so an entry is only believed while its node is live
    let mut p = redis::pipe();
    p.atomic();
    for n in &names {
        p.cmd("GET").arg(keys.node(n));
        p.cmd("HGET").arg(keys.hash(n, kind)).arg(field);
    }
    let values: Vec<Option<String>> = p.query_async(conn).await?;
    let mut out = Vec::new();
    for pair in values.chunks_exact(2) {
        let (Some(info), Some(v)) = (&pair[0], &pair[1]) else {
            continue;
        };
        if let Ok(info) = serde_json::from_str::<NodeInfo>(info) {
            out.push((info, v.clone()));
        }
    }
    Ok(out)
}

// ----- the writer: heartbeat, writes, resync ------------------------------------------

async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(ClusterError::from),
        Err(_) => Err(ClusterError::Redis("timed out".into())),
    }
}

async fn connect(s: &Shared) -> Result<MultiplexedConnection, ClusterError> {
    timed(s.cfg.timeout, s.client.get_multiplexed_async_connection()).await
}

fn node_info(s: &Shared) -> NodeInfo {
    NodeInfo {
        name: s.cfg.node.clone(),
        addr: s.cfg.advertise,
        sessions: s.sessions.load(Ordering::Relaxed),
        incarnation: s.incarnation,
        heartbeat_ms: unix_ms(),
    }
}

/// Adds the heartbeat to a pipeline: the node's key (with the TTL), its
/// name in the node set, and the TTL of its hashes.
fn add_heartbeat(s: &Shared, p: &mut redis::Pipeline) {
    let ttl = ms(s.cfg.ttl);
    let info = serde_json::to_string(&node_info(s)).unwrap_or_default();
    let now = unix_ms();
    p.cmd("SET")
        .arg(s.keys.node(&s.cfg.node))
        .arg(info)
        .arg("PX")
        .arg(ttl)
        .ignore();
    // the score is only for garbage collection of names of nodes long
    // gone (liveness is the heartbeat key), so clocks need not agree
    p.cmd("ZADD")
        .arg(s.keys.nodes())
        .arg(now.saturating_add(ttl))
        .arg(&s.cfg.node)
        .ignore();
    p.cmd("ZREMRANGEBYSCORE")
        .arg(s.keys.nodes())
        .arg("-inf")
        .arg(now.saturating_sub(3_600_000))
        .ignore();
    for kind in KINDS {
        p.cmd("PEXPIRE")
            .arg(s.keys.hash(&s.cfg.node, kind))
            .arg(ttl)
            .ignore();
    }
}

/// Writes the node's whole state again, atomically: readers never see a
/// half-written node.
async fn resync(s: &Shared, conn: &mut MultiplexedConnection) -> Result<(), ClusterError> {
    s.dirty.store(false, Ordering::Relaxed);
    let mut p = redis::pipe();
    p.atomic();
    {
        let l = lock(&s.local);
        for kind in KINDS {
            let key = s.keys.hash(&s.cfg.node, kind);
            p.cmd("DEL").arg(&key).ignore();
            let fields = l.fields(kind);
            for chunk in fields.chunks(512) {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(&key);
                for f in chunk {
                    if let Some(v) = l.value(kind, f) {
                        cmd.arg(f).arg(v);
                    }
                }
                p.add_command(cmd).ignore();
            }
        }
    }
    add_heartbeat(s, &mut p);
    timed(s.cfg.timeout * 4, p.query_async::<()>(conn)).await
}

async fn heartbeat(s: &Shared, conn: &mut MultiplexedConnection) -> Result<(), ClusterError> {
    let mut p = redis::pipe();
    p.atomic();
    p.cmd("GET").arg(s.keys.node(&s.cfg.node));
    add_heartbeat(s, &mut p);
    let (previous,): (Option<String>,) = timed(s.cfg.timeout, p.query_async(conn)).await?;
    let m = &s.metrics;
    ClusterMetrics::inc(&m.heartbeats_total);
    if let Some(prev) = previous.and_then(|v| serde_json::from_str::<NodeInfo>(&v).ok()) {
        if prev.incarnation != s.incarnation {
            ClusterMetrics::inc(&m.name_conflicts_total);
            tracing::warn!(node = %s.cfg.node, other = %prev.addr, "another process uses this node's name");
        }
    }
    if let Ok(Ok(nodes)) = tokio::time::timeout(s.cfg.timeout, live_nodes(&s.keys, conn)).await {
        ClusterMetrics::set(&m.nodes, nodes.len());
    }
    Ok(())
}

/// Writes a batch of queued operations in one transaction; answers claims
/// afterwards.
async fn write_batch(
    s: &Shared,
    conn: &mut MultiplexedConnection,
    batch: Vec<Op>,
) -> Result<(), ClusterError> {
    let m = &s.metrics;
    let ttl = ms(s.cfg.ttl);
    let mut p = redis::pipe();
    p.atomic();
    let mut publishes = 0usize;
    let mut writes = 0u64;
    let mut claims = Vec::new();
    let mut flushes = Vec::new();
    let mut leave = None;
    {
        let l = lock(&s.local);
        let mut touched = Vec::new();
        for op in batch {
            match op {
                Op::Touch(kind, field) => {
                    let key = s.keys.hash(&s.cfg.node, kind);
                    match l.value(kind, &field) {
                        Some(v) => p.cmd("HSET").arg(&key).arg(&field).arg(v).ignore(),
                        None => p.cmd("HDEL").arg(&key).arg(&field).ignore(),
                    };
                    if !touched.contains(&kind) {
                        touched.push(kind);
                    }
                    writes += 1;
                }
                Op::Claim {
                    kind,
                    field,
                    peer,
                    reply,
                } => {
                    let key = s.keys.hash(&s.cfg.node, kind);
                    match l.value(kind, &field) {
                        Some(v) => p.cmd("HSET").arg(&key).arg(&field).arg(v).ignore(),
                        None => p.cmd("HDEL").arg(&key).arg(&field).ignore(),
                    };
                    if !touched.contains(&kind) {
                        touched.push(kind);
                    }
                    writes += 1;
                    claims.push((kind, field, peer, reply));
                }
                Op::Publish(channel, payload) => {
                    p.cmd("PUBLISH").arg(channel).arg(payload);
                    publishes += 1;
                }
                Op::Flush(tx) => flushes.push(tx),
                Op::Leave(tx) => leave = Some(tx),
            }
        }
        // a hash created by this HSET gets the TTL in the same transaction
        for kind in touched {
            p.cmd("PEXPIRE")
                .arg(s.keys.hash(&s.cfg.node, kind))
                .arg(ttl)
                .ignore();
        }
    }
    let result: Result<Vec<i64>, ClusterError> = if writes > 0 || publishes > 0 {
        timed(s.cfg.timeout, p.query_async(conn)).await
    } else {
        Ok(Vec::new())
    };
    let answer = |claims: Vec<(Kind, String, String, oneshot::Sender<bool>)>| {
        for (.., reply) in claims {
            let _ = reply.send(true);
        }
    };
    match result {
        Ok(receivers) => {
            m.writes_total.fetch_add(writes, Ordering::Relaxed);
            for r in receivers {
                ClusterMetrics::inc(&m.messages_sent_total);
                if r == 0 {
                    ClusterMetrics::inc(&m.messages_unheard_total);
                }
            }
        }
        Err(e) => {
            answer(claims);
            for tx in flushes {
                let _ = tx.send(());
            }
            if let Some(tx) = leave {
                let _ = tx.send(());
            }
            m.messages_send_dropped_total
                .fetch_add(publishes as u64, Ordering::Relaxed);
            return Err(e);
        }
    }
    for (kind, field, peer, reply) in claims {
        let stands = check_claim(s, conn, kind, &field, &peer).await;
        let _ = reply.send(stands);
    }
    for tx in flushes {
        let _ = tx.send(());
    }
    if let Some(tx) = leave {
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("DEL").arg(s.keys.node(&s.cfg.node)).ignore();
        p.cmd("ZREM").arg(s.keys.nodes()).arg(&s.cfg.node).ignore();
        for kind in KINDS {
            p.cmd("DEL").arg(s.keys.hash(&s.cfg.node, kind)).ignore();
        }
        let _ = timed(s.cfg.timeout, p.query_async::<()>(conn)).await;
        let _ = tx.send(());
        return Err(ClusterError::Unavailable); // stops the writer (see run_writer)
    }
    Ok(())
}

/// After writing a claim: does another live node hold the same field for
/// another peer? Then the claim is withdrawn. Both claimants write before
/// they read, so at least one of two concurrent claimants sees the other:
/// never both win (both may lose; the client tries again).
async fn check_claim(
    s: &Shared,
    conn: &mut MultiplexedConnection,
    kind: Kind,
    field: &str,
    peer: &str,
) -> bool {
    let found =
        match tokio::time::timeout(s.cfg.timeout, field_everywhere(&s.keys, conn, kind, field))
            .await
        {
            Ok(Ok(f)) => f,
            _ => return true, // Redis trouble: decided locally
        };
    let taken = found.iter().any(|(node, v)| {
        if node.name == s.cfg.node {
            return false;
        }
        let other = match kind {
            Kind::Users => serde_json::from_str::<UserRecord>(v).map(|r| r.peer),
            _ => serde_json::from_str::<StreamRecord>(v).map(|r| r.peer),
        };
        other.is_ok_and(|p| p != peer)
    });
    if !taken {
        return true;
    }
    ClusterMetrics::inc(&s.metrics.claims_refused_total);
    {
        let mut l = lock(&s.local);
        match kind {
            Kind::Users => {
                if l.users.get(field).is_some_and(|u| u.peer == peer) {
                    l.users.remove(field);
                }
            }
            _ => {
                if l.streams.get(field).is_some_and(|u| u.peer == peer) {
                    l.streams.remove(field);
                }
            }
        }
    }
    let mut p = redis::pipe();
    p.cmd("HDEL")
        .arg(s.keys.hash(&s.cfg.node, kind))
        .arg(field)
        .ignore();
    let _ = timed(s.cfg.timeout, p.query_async::<()>(conn)).await;
    false
}

/// While Redis is lost: answer what waits for an answer, skip the rest.
fn skip(s: &Shared, op: Op) -> bool {
    let m = &s.metrics;
    match op {
        Op::Touch(..) => ClusterMetrics::inc(&m.writes_deferred_total),
        Op::Claim { reply, .. } => {
            ClusterMetrics::inc(&m.writes_deferred_total);
            let _ = reply.send(true);
        }
        Op::Publish(..) => ClusterMetrics::inc(&m.messages_send_dropped_total),
        Op::Flush(tx) => {
            let _ = tx.send(());
        }
        Op::Leave(tx) => {
            let _ = tx.send(());
            return true;
        }
    }
    false
}

fn set_state(s: &Shared, state: ConnState) {
    s.metrics
        .redis_up
        .store(i64::from(state.is_up()), Ordering::Relaxed);
    s.state.send_replace(state);
}

async fn run_writer(s: Arc<Shared>, mut ops: mpsc::Receiver<Op>) {
    let mut ever_connected = false;
    loop {
        // connect and register everything
        let conn = match connect(&s).await {
            Ok(mut c) => match resync(&s, &mut c).await {
                Ok(()) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: resync failed");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "cluster: Redis unreachable");
                None
            }
        };
        if let Some(mut conn) = conn {
            *lock(&s.conn) = Some(conn.clone());
            if ever_connected {
                ClusterMetrics::inc(&s.metrics.resyncs_total);
                tracing::info!(node = %s.cfg.node, "cluster: Redis is back, state registered again");
                set_state(&s, ConnState::Resynced);
            } else {
                tracing::info!(node = %s.cfg.node, "cluster: joined");
                set_state(&s, ConnState::Connected);
            }
            ever_connected = true;
            let _ = heartbeat(&s, &mut conn).await;
            let mut tick = tokio::time::interval(s.cfg.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let failure = loop {
                tokio::select! {
                    op = ops.recv() => {
                        let Some(op) = op else { return };
                        let mut batch = vec![op];
                        while batch.len() < 1024 {
                            match ops.try_recv() {
                                Ok(op) => batch.push(op),
                                Err(_) => break,
                            }
                        }
                        let leaving = batch.iter().any(|o| matches!(o, Op::Leave(_)));
                        if let Err(e) = write_batch(&s, &mut conn, batch).await {
                            if leaving {
                                *lock(&s.conn) = None;
                                set_state(&s, ConnState::Lost);
                                return;
                            }
                            break e;
                        }
                    }
                    _ = tick.tick() => {
                        if s.dirty.load(Ordering::Relaxed) {
                            if let Err(e) = resync(&s, &mut conn).await {
                                break e;
                            }
                        }
                        if let Err(e) = heartbeat(&s, &mut conn).await {
                            ClusterMetrics::inc(&s.metrics.heartbeat_failures_total);
                            break e;
                        }
                    }
                }
            };
            *lock(&s.conn) = None;
            ClusterMetrics::inc(&s.metrics.redis_losses_total);
            tracing::warn!(node = %s.cfg.node, error = %failure, "cluster: Redis lost; serving local clients only");
        }
        set_state(&s, ConnState::Lost);
        // wait before trying again, still answering the queue
        let pause = tokio::time::sleep(s.cfg.retry);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                op = ops.recv() => {
                    let Some(op) = op else { return };
                    if skip(&s, op) {
                        return;
                    }
                }
            }
        }
    }
}

// ----- the listener: this node's channel and the broadcast channel --------------------

async fn run_listener(s: Arc<Shared>, incoming: mpsc::Sender<Envelope>) {
    let channels = [s.keys.channel(&s.cfg.node), s.keys.broadcast()];
    loop {
        let sub = async {
            let mut ps = s.client.get_async_pubsub().await?;
            for c in &channels {
                ps.subscribe(c).await?;
            }
            Ok::<_, redis::RedisError>(ps)
        };
        match tokio::time::timeout(s.cfg.timeout, sub).await {
            Ok(Ok(ps)) => {
                let mut stream = ps.into_on_message();
                // a connection that died silently is noticed by the writer's
                // timeouts: subscribe again when it says Redis was lost
                let mut state = s.state.subscribe();
                state.mark_unchanged();
                loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => deliver(&s, &incoming, msg.get_payload_bytes()),
                            None => break,
                        },
                        changed = state.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            if *state.borrow_and_update() == ConnState::Lost {
                                break;
                            }
                        }
                    }
                }
                tracing::debug!("cluster: channel subscription ended");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cluster: cannot subscribe"),
            Err(_) => tracing::debug!("cluster: subscribing timed out"),
        }
        if incoming.is_closed() {
            return;
        }
        tokio::time::sleep(s.cfg.retry).await;
    }
}

/// Parses one received payload and queues it (or counts why not).
fn deliver(s: &Shared, incoming: &mpsc::Sender<Envelope>, payload: &[u8]) {
    let m = &s.metrics;
    let env = match Envelope::decode(payload) {
        Ok(env) => env,
        Err(e) => {
            ClusterMetrics::inc(&m.messages_malformed_total);
            tracing::debug!(error = %e, "cluster: malformed message dropped");
            return;
        }
    };
    if env.from == s.cfg.node && env.incarnation == s.incarnation {
        return; // our own broadcast
    }
    if incoming.try_send(env).is_err() {
        ClusterMetrics::inc(&m.messages_receive_dropped_total);
    } else {
        ClusterMetrics::inc(&m.messages_received_total);
    }
}
