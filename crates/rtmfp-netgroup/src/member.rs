//! A NetGroup member: [`NetGroup`], sans-IO like the rest of the crate.
//!
//! One `NetGroup` is one membership of one group on an [`Endpoint`] that
//! already has a NetConnection session with a rendezvous server. Feed it
//! every engine event ([`NetGroup::on_event`] says whether the event was
//! its own; offer events to it *before* the NetConnection, because the
//! server's introduction flow is not a NetConnection flow), call
//! [`NetGroup::handle_timeout`] at [`NetGroup::poll_timeout`], and drain
//! [`NetGroup::poll_event`].
//!
//! What it does, following Flash (see `docs/netgroup.md` for the wire
//! format and what is ours):
//!
//! * **Membership**: joins through the server (`"GC"` flow), dials every
//!   member the server introduces, exchanges group connect messages whose
//!   key proves both ends know the groupspec, and reports (`0A`) its view of
//!   the group to each neighbour; it keeps a *heard list* of members and
//!   connects to the **best list** — ring neighbours, lowest-latency peers,
//!   a random member and long-range links at ring distances N/2^k until
//!   ⌊log2 N⌋ + 13 — so the mesh stays connected as members come and go.
//! * **Multicast streams**: publish and play by name; media split into
//!   fragments (≤ 959 bytes) with stream-wide IDs, availability maps, push
//!   masks (each of the 8 ID classes pushed by one neighbour), pulls for what
//!   was not pushed, a window of fragments kept for late joiners and
//!   neighbours, play-out in order with holes skipped after a timeout.
//! * **Posting, routing, object replication**: Nimbus's own messages
//!   ([`crate::p2p::NimbusMessage`]) on their own flow, which Flash peers
//!   refuse harmlessly.
//!
//! Limitation: one `NetGroup` per endpoint owns every group session of
//! that endpoint (peer sessions whose first group flow names another group
//! are refused).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::RngCore;
use rtmfp::wire::{Address, AddressOrigin};
use rtmfp::{Endpoint, Event, Priority, Role, SessionId};
use sha2::{Digest, Sha256};

use crate::p2p::{
    self, connect_key, FragmentHeader, FragmentMap, GroupConnect, MediaAnnounce, NimbusMessage,
    Report, ReportEntry, StreamParams,
};
use crate::spec::{GroupSpec, GroupSpecError};
use rtmfp_flash::message::group_join as wire;
use rtmfp_flash::{fingerprint, Epd, PeerId};

/// Tuning of a [`NetGroup`]. Defaults follow Flash where Flash has one.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Multicast window: fragments older than this (+ relay margin) are
    /// dropped (Flash `multicastWindowDuration`, 8 s).
    pub window: Duration,
    /// Extra time fragments are kept to serve neighbours (2 s).
    pub relay_margin: Duration,
    /// How often availability maps go out (`multicastAvailabilityUpdatePeriod`, 100 ms).
    pub update_period: Duration,
    /// Fetch period announced to Flash peers (`multicastFetchPeriod`, 2.5 s).
    pub fetch_period: Duration,
    /// How long a fragment seen in a neighbour's map may stay missing here
    /// before we pull it (Nimbus members pull sooner than Flash's fetch period).
    pub pull_delay: Duration,
    /// A pull not answered in this time is asked of another neighbour.
    pub pull_retry: Duration,
    /// A hole in play-out is skipped after this long.
    pub hole_timeout: Duration,
    /// Most neighbours each fragment is pushed to (`multicastPushNeighborLimit` + 1).
    pub push_limit: usize,
    /// How often a report goes to a random neighbour.
    pub report_period: Duration,
    /// How often the best list is recomputed and applied.
    pub best_list_period: Duration,
    /// Most members kept in the heard list.
    pub max_members: usize,
    /// Most sessions being opened at once.
    pub max_openings: usize,
    /// Most undrained events (more are dropped and counted).
    pub max_events: usize,
    /// Addresses of ours to advertise in reports (local interfaces).
    pub local_addresses: Vec<SocketAddr>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            window: Duration::from_secs(8),
            relay_margin: Duration::from_secs(2),
            update_period: Duration::from_millis(100),
            fetch_period: Duration::from_millis(2500),
            pull_delay: Duration::from_millis(400),
            pull_retry: Duration::from_millis(800),
            hole_timeout: Duration::from_secs(3),
            push_limit: 5,
            report_period: Duration::from_secs(5),
            best_list_period: Duration::from_secs(2),
            max_members: 100_000,
            max_openings: 8,
            max_events: 65_536,
            local_addresses: Vec::new(),
        }
    }
}

/// What a [`NetGroup`] reports. [`GroupEvent::code`] gives the Flash
/// `NetStatusEvent` code where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// The join was sent to the server (`NetGroup.Connect.Success`).
    ConnectSuccess,
    /// A neighbour is connected (`NetGroup.Neighbor.Connect`).
    NeighborConnect {
        /// Its peer ID.
        peer: PeerId,
        /// Its group address.
        address: [u8; 32],
    },
    /// A neighbour left (`NetGroup.Neighbor.Disconnect`).
    NeighborDisconnect {
        /// Its peer ID.
        peer: PeerId,
        /// Its group address.
        address: [u8; 32],
    },
    /// A multicast stream is published in the group
    /// (`NetGroup.MulticastStream.PublishNotify`).
    PublishNotify {
        /// Stream name.
        name: String,
    },
    /// A multicast stream ended (`NetGroup.MulticastStream.UnpublishNotify`).
    UnpublishNotify {
        /// Stream name.
        name: String,
    },
    /// A media message of a stream we play, in order.
    Media {
        /// Stream name.
        name: String,
        /// RTMP message type (8 audio, 9 video, 18 data…).
        message_type: u8,
        /// Timestamp (ms).
        timestamp: u32,
        /// Message body (FLV tag body).
        payload: Bytes,
    },
    /// A post (`NetGroup.Posting.Notify`).
    PostingNotify {
        /// Message ID (hex in Flash).
        id: [u8; 32],
        /// The message.
        message: Bytes,
    },
    /// A routed or neighbour message for us (`NetGroup.SendTo.Notify`).
    SendToNotify {
        /// The message.
        message: Bytes,
        /// The sender's group address.
        from: [u8; 32],
        /// Whether we are the final destination (`fromLocal` is true when
        /// the message was sent by this member).
        from_local: bool,
    },
    /// A neighbour wants object `index`: answer with
    /// [`NetGroup::write_requested_object`] or [`NetGroup::deny_requested_object`]
    /// (`NetGroup.Replication.Request`).
    ReplicationRequest {
        /// Object index.
        index: u64,
        /// Request ID.
        request: u64,
    },
    /// An object we wanted arrived (`NetGroup.Replication.Fetch.Result`).
    ReplicationFetchResult {
        /// Object index.
        index: u64,
        /// The object.
        object: Bytes,
    },
}

impl GroupEvent {
    /// The Flash status code of this event, if it is a status event.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            GroupEvent::ConnectSuccess => "NetGroup.Connect.Success",
            GroupEvent::NeighborConnect { .. } => "NetGroup.Neighbor.Connect",
            GroupEvent::NeighborDisconnect { .. } => "NetGroup.Neighbor.Disconnect",
            GroupEvent::PublishNotify { .. } => "NetGroup.MulticastStream.PublishNotify",
            GroupEvent::UnpublishNotify { .. } => "NetGroup.MulticastStream.UnpublishNotify",
            GroupEvent::PostingNotify { .. } => "NetGroup.Posting.Notify",
            GroupEvent::SendToNotify { .. } => "NetGroup.SendTo.Notify",
            GroupEvent::ReplicationRequest { .. } => "NetGroup.Replication.Request",
            GroupEvent::ReplicationFetchResult { .. } => "NetGroup.Replication.Fetch.Result",
            GroupEvent::Media { .. } => return None,
        })
    }
}

/// Counters of a [`NetGroup`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Members in the heard list.
    pub members_known: usize,
    /// Connected neighbours.
    pub neighbors: usize,
    /// Fragments created by our publisher.
    pub fragments_published: u64,
    /// Fragments received (first copy).
    pub fragments_received: u64,
    /// Fragments received again (already held).
    pub fragments_duplicate: u64,
    /// Fragments sent to neighbours (pushed or pulled).
    pub fragments_sent: u64,
    /// Fragment bytes sent to neighbours.
    pub fragment_bytes_sent: u64,
    /// Fragment bytes received.
    pub fragment_bytes_received: u64,
    /// Pull requests sent.
    pub pulls_sent: u64,
    /// Fragments skipped in play-out (never arrived in time).
    pub fragments_missed: u64,
    /// Media messages delivered to the application.
    pub media_delivered: u64,
    /// Fragments consumed by delivered media messages.
    pub fragments_played: u64,
    /// Posts delivered to the application.
    pub posts_delivered: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// Group connect messages refused (wrong key or group).
    pub connects_refused: u64,
}

/// Errors of the [`NetGroup`] API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The groupspec is invalid.
    #[error(transparent)]
    Spec(#[from] GroupSpecError),
    /// The group does not allow this (multicast, posting, replication off).
    #[error("the groupspec does not enable {0}")]
    NotEnabled(&'static str),
    /// The server session is gone.
    #[error("not connected to the server")]
    NotConnected,
    /// Already publishing that name.
    #[error("already publishing {0}")]
    AlreadyPublishing(String),
    /// Not publishing that name.
    #[error("not publishing {0}")]
    NotPublishing(String),
    /// A stream name longer than an announce can carry.
    #[error("stream names are at most {} bytes", p2p::MAX_STREAM_NAME)]
    NameTooLong,
}

#[derive(Debug)]
struct Member {
    peer: [u8; 32],
    address: [u8; 32],
    addrs: Vec<Address>,
    server: Option<SocketAddr>,
    heard: Instant,
    /// Next time we may dial it.
    next_dial: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
struct PeerMedia {
    out_11: Option<u64>,
    in_11: Option<u64>,
    out_12: Option<u64>,
    announce_sent: bool,
    announce_received: bool,
    /// Classes the neighbour asked us to push.
    their_mask: u8,
    /// Classes we asked it to push.
    our_mask: u8,
    map: FragmentMap,
    map_sent_last: u64,
    refused: bool,
}

#[derive(Debug)]
struct Neighbor {
    peer: [u8; 32],
    address: [u8; 32],
    role: Role,
    far: SocketAddr,
    out_1c: Option<u64>,
    in_1c: Option<u64>,
    connect_sent: bool,
    connect_ok: bool,
    reported: bool,
    report_initiator: bool,
    got_report: bool,
    notified: bool,
    server: Option<SocketAddr>,
    out_ng: Option<u64>,
    ng_refused: bool,
    have: Vec<(u64, u64)>,
    media: HashMap<[u8; 32], PeerMedia>,
    rtt: Duration,
    ask_close_sent: Option<Instant>,
}

impl Neighbor {
    fn ready(&self) -> bool {
        self.connect_ok && self.connect_sent && self.out_1c.is_some()
    }
}

#[derive(Debug, Clone)]
struct Fragment {
    data: Bytes,
    at: Instant,
}

#[derive(Debug)]
struct Stream {
    name: String,
    params: StreamParams,
    publisher: bool,
    playing: bool,
    frags: BTreeMap<u64, Fragment>,
    /// Newest fragment ID held or known to exist.
    last: u64,
    end: Option<u64>,
    next_id: u64,
    play_next: Option<u64>,
    hole_since: Option<Instant>,
    pulls: HashMap<u64, (Instant, SessionId)>,
    /// Times at which maps first showed fragment IDs up to `.1`.
    seen: VecDeque<(Instant, u64)>,
    /// Highest ID seen in any map.
    seen_last: u64,
    pusher: [Option<SessionId>; 8],
    avc_header: Option<Bytes>,
    aac_header: Option<Bytes>,
    last_avc_resend: Option<Instant>,
    last_aac_resend: Option<Instant>,
    last_activity: Instant,
    /// Highest fragment ID dropped from the window by age.
    evicted_below: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlow {
    Gc,
    Report,
    Media([u8; 32]),
    Fragments([u8; 32]),
    Nimbus,
    Ignored,
}

/// Ring distance between two group addresses (first 128 bits).
fn ring_distance(a: &[u8; 32], b: &[u8; 32]) -> u128 {
    let x = u128::from_be_bytes(a[..16].try_into().expect("16"));
    let y = u128::from_be_bytes(b[..16].try_into().expect("16"));
    let d = x.wrapping_sub(y);
    d.min(d.wrapping_neg())
}

fn ranges_contain(r: &[(u64, u64)], i: u64) -> bool {
    r.iter().any(|&(a, b)| a <= i && i <= b)
}

fn ranges_add(r: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    r.push((a, b));
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for &(s, e) in r.iter() {
        match out.last_mut() {
            Some(l) if s <= l.1.saturating_add(1) => l.1 = l.1.max(e),
            _ => out.push((s, e)),
        }
    }
    *r = out;
}

fn ranges_remove(r: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    let mut out = Vec::with_capacity(r.len() + 1);
    for &(s, e) in r.iter() {
        if e < a || s > b {
            out.push((s, e));
            continue;
        }
        if s < a {
            out.push((s, a - 1));
        }
        if e > b {
            out.push((b + 1, e));
        }
    }
    *r = out;
}

/// Most object indices one `add_want_objects` range may hold.
pub const MAX_WANT_SPAN: u64 = 1 << 20;

/// One NetGroup membership. See the [module documentation](self).
pub struct NetGroup {
    cfg: GroupConfig,
    group_text: String,
    group_id: [u8; 32],
    multicast: bool,
    posting: bool,
    replication: bool,
    me: [u8; 32],
    my_address: [u8; 32],
    server_session: SessionId,
    server_flow: Option<u64>,
    servers: Vec<SocketAddr>,
    gc_out: Option<u64>,
    joined: bool,
    left: bool,
    rng: Box<dyn RngCore + Send>,
    members: HashMap<[u8; 32], Member>,
    ring: BTreeMap<[u8; 32], [u8; 32]>,
    neighbors: HashMap<SessionId, Neighbor>,
    openings: HashMap<SessionId, [u8; 32]>,
    in_flows: HashMap<(SessionId, u64), InFlow>,
    streams: HashMap<[u8; 32], Stream>,
    play_names: HashSet<String>,
    my_public: Vec<Address>,
    events: VecDeque<GroupEvent>,
    stats: GroupStats,
    next_tick: Option<Instant>,
    next_report: Option<Instant>,
    next_best: Option<Instant>,
    next_maps: Option<Instant>,
    next_push: Option<Instant>,
    posts_seen: HashMap<[u8; 32], Instant>,
    posts_order: VecDeque<([u8; 32], Instant)>,
    have: Vec<(u64, u64)>,
    want: Vec<(u64, u64)>,
    want_pending: HashMap<u64, (Instant, SessionId)>,
    requests: HashMap<u64, (SessionId, u64)>,
    next_request: u64,
    died: HashMap<[u8; 32], Instant>,
}

impl std::fmt::Debug for NetGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetGroup")
            .field("group_id", &PeerId(self.group_id).to_string())
            .field("members", &self.members.len())
            .field("neighbors", &self.neighbors.len())
            .field("openings", &self.openings.len())
            .finish_non_exhaustive()
    }
}

/// Most events a neighbour's flows may produce per read burst.
const READ_BUDGET: usize = 4096;
/// Most fragments kept per stream.
const MAX_FRAGMENTS: usize = 65_536;
/// Most posts remembered for de-duplication.
const MAX_POSTS_SEEN: usize = 100_000;
/// How long a post ID is remembered.
const POST_MEMORY: Duration = Duration::from_secs(600);
/// Members not heard of for this long are forgotten.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(300);
/// Most routing hops.
const MAX_HOPS: u8 = 64;
/// Most streams known at once.
const MAX_STREAMS: usize = 64;

impl NetGroup {
    /// A membership of the group `spec` (the `G:` text, with or without
    /// authorizations) for the member `me` whose NetConnection is
    /// `server_session` (its control flow `server_flow`, to associate the
    /// join with, as Flash does), at the server `servers` (used to dial
    /// members). `rng` supplies every random choice.
    pub fn new(
        spec: &str,
        me: PeerId,
        server_session: SessionId,
        server_flow: Option<u64>,
        servers: Vec<SocketAddr>,
        cfg: GroupConfig,
        rng: Box<dyn RngCore + Send>,
    ) -> Result<Self, GroupError> {
        let parsed = GroupSpec::parse(spec)?;
        let me = me.0;
        Ok(NetGroup {
            group_text: parsed.hashed_text().to_owned(),
            group_id: parsed.group_id(),
            multicast: parsed.multicast_enabled(),
            posting: parsed.posting_enabled(),
            replication: parsed.object_replication_enabled(),
            cfg,
            me,
            my_address: wire::group_address(&me),
            server_session,
            server_flow,
            servers,
            gc_out: None,
            joined: false,
            left: false,
            rng,
            members: HashMap::new(),
            ring: BTreeMap::new(),
            neighbors: HashMap::new(),
            openings: HashMap::new(),
            in_flows: HashMap::new(),
            streams: HashMap::new(),
            play_names: HashSet::new(),
            my_public: Vec::new(),
            events: VecDeque::new(),
            stats: GroupStats::default(),
            next_tick: None,
            next_report: None,
            next_best: None,
            next_maps: None,
            next_push: None,
            posts_seen: HashMap::new(),
            posts_order: VecDeque::new(),
            have: Vec::new(),
            want: Vec::new(),
            want_pending: HashMap::new(),
            requests: HashMap::new(),
            next_request: 1,
            died: HashMap::new(),
        })
    }

    /// The group ID.
    pub fn group_id(&self) -> [u8; 32] {
        self.group_id
    }

    /// Our group address (`NetGroup.convertPeerIDToGroupAddress(myPeerID)`).
    pub fn local_address(&self) -> [u8; 32] {
        self.my_address
    }

    /// Counters.
    pub fn stats(&self) -> GroupStats {
        GroupStats {
            members_known: self.members.len(),
            neighbors: self.neighbor_count(),
            ..self.stats
        }
    }

    /// Number of connected neighbours (no allocation, unlike
    /// [`neighbors`](Self::neighbors)).
    pub fn neighbor_count(&self) -> usize {
        self.neighbors.values().filter(|n| n.ready()).count()
    }

    /// Connected neighbours (peer IDs).
    pub fn neighbors(&self) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self
            .neighbors
            .values()
            .filter(|n| n.ready())
            .map(|n| PeerId(n.peer))
            .collect();
        v.sort_unstable_by_key(|p| p.0);
        v.dedup();
        v
    }

    /// Estimated number of members (`NetGroup.estimatedMemberCount`).
    pub fn estimated_member_count(&self) -> usize {
        self.estimate_count()
    }

    /// Sends the join to the server.
    pub fn join(&mut self, ep: &mut Endpoint, now: Instant) -> Result<(), GroupError> {
        if self.gc_out.is_some() {
            return Ok(());
        }
        let f = ep
            .open_flow(
                now,
                self.server_session,
                wire::GC_METADATA,
                self.server_flow,
                Priority::IMMEDIATE,
            )
            .map_err(|_| GroupError::NotConnected)?;
        ep.send(
            now,
            self.server_session,
            f,
            Bytes::from(wire::encode_join(&self.group_id)),
            None,
        )
        .map_err(|_| GroupError::NotConnected)?;
        self.gc_out = Some(f);
        self.joined = true;
        self.push(GroupEvent::ConnectSuccess);
        self.next_tick = Some(now);
        Ok(())
    }

    /// Leaves the group: closes the join flow and every group session.
    pub fn leave(&mut self, ep: &mut Endpoint, now: Instant) {
        let names: Vec<String> = self
            .streams
            .values()
            .filter(|s| s.publisher)
            .map(|s| s.name.clone())
            .collect();
        for n in names {
            let _ = self.unpublish(ep, now, &n);
        }
        if let Some(f) = self.gc_out.take() {
            let _ = ep.close_flow(now, self.server_session, f);
        }
        for s in self.neighbors.keys().chain(self.openings.keys()) {
            ep.close_session(now, *s);
        }
        self.left = true;
        self.next_tick = None;
    }

    fn push(&mut self, e: GroupEvent) {
        if self.events.len() >= self.cfg.max_events {
            self.stats.events_dropped += 1;
            return;
        }
        self.events.push_back(e);
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    // ------------------------------------------------------------ members

    fn learn(&mut self, now: Instant, peer: [u8; 32], addrs: &[Address], heard: Instant) -> bool {
        if peer == self.me || self.died.get(&peer).is_some_and(|&t| now < t) {
            return false;
        }
        if let Some(m) = self.members.get_mut(&peer) {
            if heard > m.heard {
                m.heard = heard;
            }
            for a in addrs {
                if a.origin == AddressOrigin::Relay {
                    m.server = Some(a.addr);
                } else if !m.addrs.iter().any(|x| x.addr == a.addr) && m.addrs.len() < 8 {
                    m.addrs.push(*a);
                }
            }
            return false;
        }
        if self.members.len() >= self.cfg.max_members {
            return false;
        }
        let address = wire::group_address(&peer);
        let mut m = Member {
            peer,
            address,
            addrs: Vec::new(),
            server: None,
            heard,
            next_dial: now,
            failures: 0,
        };
        for a in addrs.iter().take(8) {
            if a.origin == AddressOrigin::Relay {
                m.server = Some(a.addr);
            } else {
                m.addrs.push(*a);
            }
        }
        self.ring.insert(address, peer);
        self.members.insert(peer, m);
        true
    }

    fn forget(&mut self, peer: &[u8; 32]) {
        if let Some(m) = self.members.remove(peer) {
            self.ring.remove(&m.address);
        }
    }

    fn connected_to(&self, peer: &[u8; 32]) -> bool {
        self.neighbors.values().any(|n| &n.peer == peer)
            || self.openings.values().any(|p| p == peer)
    }

    fn dial(&mut self, ep: &mut Endpoint, now: Instant, peer: [u8; 32], via_server_only: bool) {
        if peer == self.me || self.connected_to(&peer) || self.left {
            return;
        }
        let mut cands: Vec<SocketAddr> = Vec::new();
        if let Some(m) = self.members.get_mut(&peer) {
            if now < m.next_dial {
                return;
            }
            m.next_dial = now + Duration::from_secs(2u64 << m.failures.min(5));
            if !via_server_only {
                cands.extend(m.addrs.iter().map(|a| a.addr));
            }
            if let Some(s) = m.server {
                if !self.servers.contains(&s) {
                    cands.push(s);
                }
            }
        }
        cands.extend(self.servers.iter().copied());
        cands.dedup();
        let epd = Epd::peer(PeerId(peer)).encode();
        if let Ok(s) = ep.connect(now, &epd, &cands) {
            self.openings.insert(s, peer);
        }
    }

    fn estimate_count(&self) -> usize {
        let n = self.ring.len() + 1;
        if n < 8 {
            return n;
        }
        // the density of members around us on the ring
        let addrs: Vec<&[u8; 32]> = self.ring.keys().collect();
        let pos = addrs.partition_point(|a| *a < &self.my_address);
        let k = 3usize;
        let lo = addrs[(pos + addrs.len() - k) % addrs.len()];
        let hi = addrs[(pos + k - 1) % addrs.len()];
        let x = u128::from_be_bytes(lo[..16].try_into().expect("16"));
        let y = u128::from_be_bytes(hi[..16].try_into().expect("16"));
        let span = y.wrapping_sub(x);
        if span == 0 {
            return n;
        }
        let est = (u128::MAX / span).saturating_mul(2 * k as u128);
        (est.min(1 << 40) as usize).max(n)
    }

    /// The best list for `target` (a group address): who a member at
    /// `target` should be connected to.
    fn best_list(&mut self, target: &[u8; 32], for_self: bool) -> Vec<[u8; 32]> {
        let mut out: Vec<[u8; 32]> = Vec::new();
        let n = self.ring.len();
        if n <= 6 {
            return self.ring.values().copied().collect();
        }
        let addrs: Vec<([u8; 32], [u8; 32])> = self.ring.iter().map(|(a, p)| (*a, *p)).collect();
        let pos = addrs.partition_point(|(a, _)| a < target);
        let add = |out: &mut Vec<[u8; 32]>, i: usize| {
            let (a, p) = addrs[i % addrs.len()];
            if &a != target && !out.contains(&p) {
                out.push(p);
                true
            } else {
                false
            }
        };
        // ring neighbours: 3 before, 3 after
        for k in 1..=3 {
            add(&mut out, pos + n - k);
        }
        for k in 0..3 {
            add(&mut out, pos + k);
            if addrs[(pos + k) % n].0 == *target {
                add(&mut out, pos + 3);
            }
        }
        if for_self {
            let mut lat: Vec<(Duration, [u8; 32])> = self
                .neighbors
                .values()
                .filter(|nb| nb.ready())
                .map(|nb| (nb.rtt, nb.peer))
                .collect();
            lat.sort_unstable();
            for (_, p) in lat.into_iter().take(6) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        let r = (self.rng.next_u64() % n as u64) as usize;
        add(&mut out, r);
        let est = self.estimate_count().max(2);
        let target_count = ((usize::BITS - 1 - est.leading_zeros()) as usize + 13).min(n);
        let mut missing = target_count.saturating_sub(out.len());
        let mut cursor = pos;
        let mut guard = 0;
        while missing > 0 && guard < 4 * n {
            guard += 1;
            let step = (n >> missing.min(63)).max(1);
            cursor += step;
            let mut tries = 0;
            while tries < n && !add(&mut out, cursor) {
                cursor += 1;
                tries += 1;
            }
            missing = target_count.saturating_sub(out.len());
            if tries >= n {
                break;
            }
        }
        out
    }

    // ------------------------------------------------------------- events

    /// Feeds an engine event. Returns whether it was this group's.
    pub fn on_event(&mut self, ep: &mut Endpoint, now: Instant, ev: &Event) -> bool {
        match *ev {
            Event::IncomingFlow {
                session,
                flow,
                ref metadata,
                association,
            } => self.on_incoming_flow(ep, now, session, flow, metadata, association),
            Event::Readable { session, flow } => {
                let Some(kind) = self.in_flows.get(&(session, flow)).copied() else {
                    return self.neighbors.contains_key(&session);
                };
                self.read_flow(ep, now, session, flow, kind);
                true
            }
            Event::RecvFlowComplete { session, flow } => {
                let k = self.in_flows.remove(&(session, flow));
                if let Some(InFlow::Media(key)) = k {
                    if let Some(pm) = self
                        .neighbors
                        .get_mut(&session)
                        .and_then(|n| n.media.get_mut(&key))
                    {
                        pm.in_11 = None;
                        pm.their_mask = 0;
                    }
                }
                k.is_some() || self.neighbors.contains_key(&session)
            }
            Event::SendFlowException { session, flow, .. } => {
                if session == self.server_session && Some(flow) == self.gc_out {
                    return true;
                }
                let Some(n) = self.neighbors.get_mut(&session) else {
                    return false;
                };
                if n.out_1c == Some(flow) {
                    // refused group connect or accepted ask-close
                    ep.close_session(now, session);
                } else if n.out_ng == Some(flow) {
                    n.out_ng = None;
                    n.ng_refused = true;
                } else {
                    for pm in n.media.values_mut() {
                        if pm.out_11 == Some(flow) {
                            pm.refused = true;
                            pm.out_11 = None;
                            pm.their_mask = 0;
                        }
                        if pm.out_12 == Some(flow) {
                            pm.out_12 = None;
                        }
                    }
                }
                true
            }
            Event::SessionOpened {
                session,
                role,
                peer,
            } => {
                if let Some(p) = self.openings.remove(&session) {
                    let n = self.new_neighbor(ep, session, p, role, peer);
                    self.neighbors.insert(session, n);
                    self.start_neighbor(ep, now, session);
                    if let Some(m) = self.members.get_mut(&p) {
                        m.failures = 0;
                    }
                    return true;
                }
                false
            }
            Event::SessionFailed { session, .. } => {
                if let Some(p) = self.openings.remove(&session) {
                    if let Some(m) = self.members.get_mut(&p) {
                        m.failures += 1;
                        if m.failures >= 4 {
                            self.forget(&p);
                        }
                    }
                    return true;
                }
                self.drop_neighbor(now, session)
            }
            Event::SessionClosed { session, .. } => {
                self.openings.remove(&session);
                self.drop_neighbor(now, session)
            }
            Event::AddressChanged { session, new, .. } => match self.neighbors.get_mut(&session) {
                Some(n) => {
                    n.far = new;
                    true
                }
                None => false,
            },
            _ => {
                let s = ev.session();
                s.is_some_and(|s| self.neighbors.contains_key(&s) || self.openings.contains_key(&s))
            }
        }
    }

    fn new_neighbor(
        &self,
        ep: &Endpoint,
        session: SessionId,
        peer: [u8; 32],
        role: Role,
        far: SocketAddr,
    ) -> Neighbor {
        Neighbor {
            peer,
            address: wire::group_address(&peer),
            role,
            far,
            out_1c: None,
            in_1c: None,
            connect_sent: false,
            connect_ok: false,
            reported: false,
            report_initiator: false,
            got_report: false,
            notified: false,
            server: None,
            out_ng: None,
            ng_refused: false,
            have: Vec::new(),
            media: HashMap::new(),
            rtt: ep.srtt(session).unwrap_or(Duration::from_millis(500)),
            ask_close_sent: None,
        }
    }

    /// Opens our 1C flow; as initiator, sends the group connect at once.
    fn start_neighbor(&mut self, ep: &mut Endpoint, now: Instant, session: SessionId) {
        let Some(n) = self.neighbors.get_mut(&session) else {
            return;
        };
        if n.out_1c.is_none() {
            match ep.open_flow(now, session, p2p::META_REPORT, None, Priority::IMMEDIATE) {
                Ok(f) => n.out_1c = Some(f),
                Err(_) => return,
            }
        }
        if n.role == Role::Initiator {
            self.send_connect(ep, now, session);
        }
    }

    fn send_connect(&mut self, ep: &mut Endpoint, now: Instant, session: SessionId) {
        let Some(info) = ep.session_info(session) else {
            return;
        };
        let Some(n) = self.neighbors.get_mut(&session) else {
            return;
        };
        let Some(f) = n.out_1c else { return };
        if n.connect_sent {
            return;
        }
        let msg = GroupConnect {
            group_id: self.group_id,
            key: connect_key(&self.group_text, &info.far_nonce),
            receiver: n.peer,
        };
        let _ = ep.send(now, session, f, Bytes::from(msg.encode()), None);
        let _ = ep.send(now, session, f, Bytes::from_static(&[p2p::MSG_DATA]), None);
        let _ = ep.send(now, session, f, Bytes::from_static(&[p2p::MSG_BEGIN]), None);
        n.connect_sent = true;
    }

    fn drop_neighbor(&mut self, now: Instant, session: SessionId) -> bool {
        let Some(n) = self.neighbors.remove(&session) else {
            return false;
        };
        self.in_flows.retain(|(s, _), _| *s != session);
        for st in self.streams.values_mut() {
            for p in st.pusher.iter_mut() {
                if *p == Some(session) {
                    *p = None;
                }
            }
            st.pulls.retain(|_, (_, s)| *s != session);
        }
        self.want_pending.retain(|_, (_, s)| *s != session);
        self.requests.retain(|_, (s, _)| *s != session);
        if n.notified
            && !self
                .neighbors
                .values()
                .any(|o| o.peer == n.peer && o.notified)
        {
            self.push(GroupEvent::NeighborDisconnect {
                peer: PeerId(n.peer),
                address: n.address,
            });
        }
        if let Some(m) = self.members.get_mut(&n.peer) {
            m.next_dial = now + Duration::from_secs(2);
        }
        self.next_push = Some(now);
        true
    }

    fn on_incoming_flow(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        session: SessionId,
        flow: u64,
        metadata: &[u8],
        association: Option<u64>,
    ) -> bool {
        if session == self.server_session {
            if wire::is_gc_metadata(metadata) {
                // the server's introductions (in return to our join flow)
                if association.is_none() || association == self.gc_out {
                    self.in_flows.insert((session, flow), InFlow::Gc);
                    self.read_flow(ep, now, session, flow, InFlow::Gc);
                    return true;
                }
            }
            return false;
        }
        let kind = if metadata == p2p::META_REPORT {
            InFlow::Report
        } else if metadata == p2p::META_MEDIA {
            InFlow::Media([0; 32]) // unbound (key all zero) until its announce
        } else if metadata == p2p::META_FRAGMENTS {
            // bound by association to our media flow of that stream
            let key = self.neighbors.get(&session).and_then(|n| {
                n.media
                    .iter()
                    .find(|(_, pm)| pm.out_11.is_some() && pm.out_11 == association)
                    .map(|(k, _)| *k)
            });
            match key {
                Some(k) => InFlow::Fragments(k),
                None => {
                    if !self.neighbors.contains_key(&session) {
                        return false;
                    }
                    let _ = ep.reject_flow(now, session, flow, 0);
                    return true;
                }
            }
        } else if metadata == p2p::NIMBUS_METADATA {
            InFlow::Nimbus
        } else if metadata.starts_with(b"GR") {
            if !self.neighbors.contains_key(&session) {
                return false;
            }
            // other Flash group flows (1D, 18, 19): not implemented by any
            // open peer; refuse like librtmfp refuses what it cannot parse
            let _ = ep.reject_flow(now, session, flow, 0);
            return true;
        } else {
            return false;
        };
        if !self.neighbors.contains_key(&session) {
            // a member dialled us: claim the session on its report flow
            if kind != InFlow::Report || self.left {
                return false;
            }
            let Some(info) = ep.session_info(session) else {
                return false;
            };
            let peer = fingerprint(&info.far_certificate).0;
            let n = self.new_neighbor(ep, session, peer, info.role, info.peer);
            self.neighbors.insert(session, n);
            self.learn(
                now,
                peer,
                &[Address {
                    addr: info.peer,
                    origin: AddressOrigin::Public,
                }],
                now,
            );
            self.start_neighbor(ep, now, session);
        }
        if kind == InFlow::Report {
            if let Some(n) = self.neighbors.get_mut(&session) {
                n.in_1c = Some(flow);
            }
        }
        self.in_flows.insert((session, flow), kind);
        self.read_flow(ep, now, session, flow, kind);
        true
    }

    fn read_flow(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        session: SessionId,
        flow: u64,
        kind: InFlow,
    ) {
        let mut kind = kind;
        for _ in 0..READ_BUDGET {
            let Some(m) = ep.read(now, session, flow) else {
                return;
            };
            match kind {
                InFlow::Gc => {
                    if let Ok(p) = wire::parse_introduction(&m.data) {
                        if self.learn(now, p, &[], now) || !self.connected_to(&p) {
                            self.dial(ep, now, p, true);
                        }
                    }
                }
                InFlow::Report => {
                    if !self.on_report_message(ep, now, session, &m.data) {
                        let _ = ep.reject_flow(now, session, flow, 0);
                        return;
                    }
                }
                InFlow::Media(key) => {
                    match self.on_media_message(ep, now, session, flow, key, &m.data) {
                        Some(k) => {
                            kind = InFlow::Media(k);
                            self.in_flows.insert((session, flow), kind);
                        }
                        None => {
                            let _ = ep.reject_flow(now, session, flow, 0);
                            self.in_flows.insert((session, flow), InFlow::Ignored);
                            return;
                        }
                    }
                }
                InFlow::Fragments(key) => self.on_fragment(ep, now, session, key, m.data),
                InFlow::Nimbus => self.on_nimbus(ep, now, session, &m.data),
                InFlow::Ignored => {}
            }
        }
    }

    // ------------------------------------------------------------ 1C flow

    /// Returns false to refuse the flow.
    fn on_report_message(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        session: SessionId,
        data: &[u8],
    ) -> bool {
        let Some(&t) = data.first() else { return true };
        match t {
            p2p::MSG_CONNECT => {
                let Ok(c) = GroupConnect::parse(data) else {
                    self.stats.connects_refused += 1;
                    return false;
                };
                let Some(info) = ep.session_info(session) else {
                    return false;
                };
                let expected = connect_key(&self.group_text, &info.near_nonce);
                let ok = c.group_id == self.group_id
                    && c.receiver == self.me
                    && bool::from(subtle::ConstantTimeEq::ct_eq(&c.key[..], &expected[..]));
                if !ok {
                    self.stats.connects_refused += 1;
                    return false;
                }
                if let Some(n) = self.neighbors.get_mut(&session) {
                    n.connect_ok = true;
                }
                self.send_connect(ep, now, session);
                self.on_connected(ep, now, session);
                true
            }
            p2p::MSG_BEGIN | p2p::MSG_BEGIN_NEAREST => {
                let send = self
                    .neighbors
                    .get(&session)
                    .is_some_and(|n| n.connect_ok && !n.reported);
                if send {
                    if let Some(n) = self.neighbors.get_mut(&session) {
                        n.report_initiator = true;
                    }
                    self.send_report(ep, now, session);
                }
                true
            }
            p2p::MSG_REPORT => {
                let Ok(rep) = Report::parse(data) else {
                    return true;
                };
                self.on_report(ep, now, session, rep);
                true
            }
            p2p::MSG_ASK_CLOSE => {
                let connected = self.neighbor_count();
                let me = self.my_address;
                let best = self.best_list(&me, true);
                let peer = self.neighbors.get(&session).map(|n| n.peer);
                let accept = !best.is_empty()
                    && connected > best.len()
                    && peer.is_some_and(|p| !best.contains(&p));
                !accept
            }
            _ => true,
        }
    }

    /// Both group connects are done: keep one session per peer.
    fn on_connected(&mut self, ep: &mut Endpoint, now: Instant, session: SessionId) {
        let Some(n) = self.neighbors.get(&session) else {
            return;
        };
        if !n.ready() {
            return;
        }
        let peer = n.peer;
        let initiator = |nb: &Neighbor| {
            if nb.role == Role::Initiator {
                self.me
            } else {
                nb.peer
            }
        };
        let mine = initiator(n);
        let dup = self
            .neighbors
            .iter()
            .find(|(s, o)| **s != session && o.peer == peer && o.ready())
            .map(|(s, o)| (*s, initiator(o)));
        if let Some((other, other_init)) = dup {
            // keep the session initiated by the larger peer ID
            let close = if mine >= other_init { other } else { session };
            ep.close_session(now, close);
            self.drop_neighbor(now, close);
            if close == session {
                return;
            }
        }
        let Some(n) = self.neighbors.get_mut(&session) else {
            return;
        };
        n.rtt = ep.srtt(session).unwrap_or(n.rtt);
        if !n.notified {
            n.notified = true;
            let (peer, address) = (n.peer, n.address);
            self.push(GroupEvent::NeighborConnect {
                peer: PeerId(peer),
                address,
            });
        }
        if !self.have.is_empty() {
            let m = NimbusMessage::Have(self.have.clone());
            self.send_nimbus(ep, now, session, &m);
        }
    }

    fn send_report(&mut self, ep: &mut Endpoint, now: Instant, session: SessionId) {
        let Some(n) = self.neighbors.get(&session) else {
            return;
        };
        let Some(f) = n.out_1c else { return };
        let (target, far) = (n.address, n.far);
        let best = self.best_list(&target, false);
        let mut entries = Vec::with_capacity(best.len());
        for p in best {
            let Some(m) = self.members.get(&p) else {
                continue;
            };
            let mut addresses = Vec::new();
            if let Some(s) = m.server {
                addresses.push(Address {
                    addr: s,
                    origin: AddressOrigin::Relay,
                });
            }
            addresses.extend(m.addrs.iter().take(6).copied());
            entries.push(ReportEntry {
                peer: p,
                seconds: now.saturating_duration_since(m.heard).as_secs().min(299),
                addresses,
            });
            if entries.len() >= p2p::MAX_REPORT_ENTRIES {
                break;
            }
        }
        entries.sort_unstable_by_key(|e| e.peer);
        let mut mine = Vec::new();
        if let Some(s) = self.servers.first() {
            mine.push(Address {
                addr: *s,
                origin: AddressOrigin::Relay,
            });
        }
        mine.extend(self.my_public.iter().copied());
        for a in &self.cfg.local_addresses {
            mine.push(Address {
                addr: *a,
                origin: AddressOrigin::Local,
            });
        }
        let rep = Report {
            seen: Some(Address {
                addr: far,
                origin: AddressOrigin::Public,
            }),
            sender_addresses: mine,
            entries,
        };
        let _ = ep.send(now, session, f, Bytes::from(rep.encode()), None);
        if let Some(n) = self.neighbors.get_mut(&session) {
            n.reported = true;
        }
        self.next_report = Some(now + self.cfg.report_period);
    }

    fn on_report(&mut self, ep: &mut Endpoint, now: Instant, session: SessionId, rep: Report) {
        let Some(n) = self.neighbors.get_mut(&session) else {
            return;
        };
        if !n.connect_ok {
            return;
        }
        let first = !n.got_report;
        n.got_report = true;
        let reply = !n.report_initiator;
        n.report_initiator = false;
        let peer = n.peer;
        let far = n.far;
        for a in &rep.sender_addresses {
            if a.origin == AddressOrigin::Relay {
                n.server = Some(a.addr);
            }
        }
        n.rtt = ep.srtt(session).unwrap_or(n.rtt);
        if let Some(seen) = rep.seen {
            if !self.my_public.iter().any(|a| a.addr == seen.addr) {
                if self.my_public.len() >= 4 {
                    self.my_public.remove(0);
                }
                self.my_public.push(Address {
                    addr: seen.addr,
                    origin: AddressOrigin::Public,
                });
            }
        }
        let mut addrs = rep.sender_addresses.clone();
        addrs.push(Address {
            addr: far,
            origin: AddressOrigin::Public,
        });
        self.learn(now, peer, &addrs, now);
        let mut new = false;
        for e in &rep.entries {
            if e.seconds >= 300 {
                continue;
            }
            let heard = now
                .checked_sub(Duration::from_secs(e.seconds))
                .unwrap_or(now);
            new |= self.learn(now, e.peer, &e.addresses, heard);
        }
        if new
            && self
                .next_best
                .is_none_or(|t| t > now + Duration::from_millis(200))
        {
            self.next_best = Some(now + Duration::from_millis(200));
            self.next_tick = Some(
                self.next_tick
                    .map_or(now, |t| t.min(now + Duration::from_millis(200))),
            );
        }
        if reply {
            self.send_report(ep, now, session);
        }
        if first {
            self.on_connected(ep, now, session);
            // announce the streams we publish or hold to the new neighbour
            let keys: Vec<[u8; 32]> = self
                .streams
                .iter()
                .filter(|(_, s)| s.end.is_none() && (s.publisher || !s.frags.is_empty()))
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                self.announce(ep, now, session, k);
            }
        }
    }

    // -------------------------------------------------------- media flows

    fn announce(&mut self, ep: &mut Endpoint, now: Instant, session: SessionId, key: [u8; 32]) {
        let Some(st) = self.streams.get(&key) else {
            return;
        };
        let msg = MediaAnnounce::Stream {
            name: st.name.clone(),
            key,
            params: st.params,
        };
        let Some(n) = self.neighbors.get_mut(&session) else {
            return;
        };
        let Some(assoc) = n.in_1c else { return };
        let pm = n.media.entry(key).or_default();
        if pm.announce_sent || pm.refused {
            return;
        }
        if pm.out_11.is_none() {
            match ep.open_flow(
                now,
                session,
                p2p::META_MEDIA,
                Some(assoc),
                Priority::PRIORITY,
            ) {
                Ok(f) => pm.out_11 = Some(f),
                Err(_) => return,
            }
        }
        if let Some(f) = pm.out_11 {
            let _ = ep.send(now, session, f, Bytes::from(msg.encode()), None);
            pm.announce_sent = true;
        }
    }

    /// Handles a message on a neighbour's media flow; returns the stream key
    /// the flow is bound to, or `None` to refuse the flow.
    fn on_media_message(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        session: SessionId,
        flow: u64,
        key: [u8; 32],
        data: &[u8],
    ) -> Option<[u8; 32]> {
        let t = *data.first()?;
        let bound = key != [0; 32];
        if t == p2p::MSG_ANNOUNCE {
            match MediaAnnounce::parse(data).ok()? {
                MediaAnnounce::Stream {
                    name,
                    key: k,
                    params,
                } => {
                    if bound && k != key {
                        return None;
                    }
                    if !self.streams.contains_key(&k) {
                        if !self.play_names.contains(&name) || self.streams.len() >= MAX_STREAMS {
                            return None;
                        }
                        self.streams
                            .insert(k, Stream::new(name.clone(), params, false, true, now));
                        self.push(GroupEvent::PublishNotify { name });
                        // tell the others
                        let others: Vec<SessionId> = self
                            .neighbors
                            .iter()
                            .filter(|(s, n)| **s != session && n.got_report)
                            .map(|(s, _)| *s)
                            .collect();
                        for s in others {
                            self.announce(ep, now, s, k);
                        }
                    }
                    let n = self.neighbors.get_mut(&session)?;
                    let pm = n.media.entry(k).or_default();
                    if pm.in_11.is_some_and(|f| f != flow) {
                        return None;
                    }
                    pm.in_11 = Some(flow);
                    pm.announce_received = true;
                    self.announce(ep, now, session, k);
                    self.next_push = Some(now);
                    Some(k)
                }
                MediaAnnounce::End(id) => {
                    if !bound {
                        return None;
                    }
                    if let Some(st) = self.streams.get_mut(&key) {
                        if st.end.is_none() && !st.publisher {
                            st.end = Some(id);
                            st.last = st.last.max(id.saturating_sub(1));
                            let name = st.name.clone();
                            self.push(GroupEvent::UnpublishNotify { name });
                        }
                    }
                    Some(key)
                }
            }
        } else {
            if !bound {
                return None;
            }
            let n = self.neighbors.get_mut(&session)?;
            let pm = n.media.get_mut(&key)?;
            match t {
                p2p::MSG_MAP => {
                    if let Ok(map) = FragmentMap::parse(data) {
                        if map.last >= pm.map.last {
                            pm.map = map;
                            let last = pm.map.last;
                            if let Some(st) = self.streams.get_mut(&key) {
                                if last > st.seen_last {
                                    st.seen_last = last;
                                    st.seen.push_back((now, last));
                                    if st.seen.len() > 4096 {
                                        st.seen.pop_front();
                                    }
                                    if st.play_next.is_none() && st.playing && !st.publisher {
                                        // start near the live edge: the oldest of the
                                        // last 64 fragments the neighbour holds (a new
                                        // stream from its first fragment, metadata and
                                        // codec headers included)
                                        let lo = last.saturating_sub(64).max(1);
                                        let start =
                                            (lo..=last).find(|&i| pm.map.has(i)).unwrap_or(last);
                                        st.play_next = Some(start.max(1));
                                    }
                                }
                            }
                        }
                    }
                }
                p2p::MSG_PUSH => {
                    pm.their_mask = data.get(1).copied().unwrap_or(0);
                }
                p2p::MSG_PULL => {
                    if let Ok(id) = rtmfp::wire::Reader::new(&data[1..]).vlu() {
                        self.serve(ep, now, session, key, id);
                    }
                }
                _ => {}
            }
            Some(key)
        }
    }

    /// Sends fragment `id` of stream `key` to a neighbour.
    fn serve(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        session: SessionId,
        key: [u8; 32],
        id: u64,
    ) {
        let Some(data) = self
            .streams
            .get(&key)
            .and_then(|s| s.frags.get(&id))
            .map(|f| f.data.clone())
        else {
            return;
        };
        let Some(pm) = self
            .neighbors
            .get_mut(&session)
            .and_then(|n| n.media.get_mut(&key))
        else {
            return;
        };
        let Some(assoc) = pm.in_11 else { return };
        if pm.out_12.is_none() {
            match ep.open_flow(
                now,
                session,
                p2p::META_FRAGMENTS,
                Some(assoc),
                Priority::PRIORITY,
            ) {
                Ok(f) => pm.out_12 = Some(f),
                Err(_) => return,
            }
        }
        let Some(f) = pm.out_12 else { return };
        let lifetime = self.cfg.window + self.cfg.relay_margin;
        let len = data.len() as u64;
        if ep.send(now, session, f, data, Some(lifetime)).is_ok() {
            self.stats.fragments_sent += 1;
            self.stats.fragment_bytes_sent += len;
        }
    }

    fn on_fragment(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        session: SessionId,
        key: [u8; 32],
        data: Bytes,
    ) {
        let Ok(h) = FragmentHeader::parse(&data) else {
            return;
        };
        let Some(st) = self.streams.get_mut(&key) else {
            return;
        };
        if st.publisher {
            return;
        }
        st.pulls.remove(&h.id);
        if st.frags.contains_key(&h.id) {
            self.stats.fragments_duplicate += 1;
            return;
        }
        if let Some((&oldest, _)) = st.frags.first_key_value() {
            if h.id <= st.evicted_below && h.id < oldest {
                return; // older than the window
            }
        }
        if st.frags.len() >= MAX_FRAGMENTS {
            if let Some((id, _)) = st.frags.pop_first() {
                st.evicted_below = st.evicted_below.max(id);
            }
        }
        self.stats.fragments_received += 1;
        self.stats.fragment_bytes_received += data.len() as u64;
        st.last_activity = now;
        st.frags.insert(h.id, Fragment { data, at: now });
        let first = st.last == 0;
        if h.id > st.last {
            st.last = h.id;
        }
        if st.play_next.is_none() && st.playing {
            st.play_next = Some(h.id);
        }
        if first {
            // we hold the stream now: announce it to the neighbours that do not know
            let others: Vec<SessionId> = self
                .neighbors
                .iter()
                .filter(|(_, n)| {
                    n.got_report && !n.media.get(&key).is_some_and(|p| p.announce_sent)
                })
                .map(|(s, _)| *s)
                .collect();
            for s in others {
                self.announce(ep, now, s, key);
            }
        }
        self.push_fragment(ep, now, key, h.id, Some(session));
        self.play_out(now, key);
    }

    /// Pushes a new fragment to the neighbours that asked for its class.
    fn push_fragment(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        key: [u8; 32],
        id: u64,
        from: Option<SessionId>,
    ) {
        let class = 1u8 << (id % 8);
        let mut targets: Vec<SessionId> = self
            .neighbors
            .iter()
            .filter(|(s, n)| {
                Some(**s) != from
                    && n.media
                        .get(&key)
                        .is_some_and(|pm| pm.their_mask & class != 0 && pm.in_11.is_some())
            })
            .map(|(s, _)| *s)
            .collect();
        targets.sort_unstable_by_key(|s| s.0);
        targets.truncate(self.cfg.push_limit.max(1));
        for s in targets {
            self.serve(ep, now, s, key, id);
        }
    }

    /// Delivers complete messages in order.
    fn play_out(&mut self, now: Instant, key: [u8; 32]) {
        let hole_timeout = self.cfg.hole_timeout;
        let Some(st) = self.streams.get_mut(&key) else {
            return;
        };
        if !st.playing || st.publisher {
            return;
        }
        let Some(mut next) = st.play_next else {
            return;
        };
        let mut out: Vec<GroupEvent> = Vec::new();
        let mut missed = 0u64;
        let mut played = 0u64;
        for _ in 0..MAX_FRAGMENTS {
            let Some(f) = st.frags.get(&next) else {
                // a hole: wait, or skip it once it is too old
                let Some((&after, _)) = st.frags.range(next..).next() else {
                    st.hole_since = None;
                    break;
                };
                let since = *st.hole_since.get_or_insert(now);
                let evicted = next <= st.evicted_below;
                if now.saturating_duration_since(since) >= hole_timeout || evicted {
                    missed += after - next;
                    next = after;
                    st.hole_since = None;
                    continue;
                }
                break;
            };
            let Ok(h) = FragmentHeader::parse(&f.data) else {
                next += 1;
                continue;
            };
            match h.marker {
                p2p::FRAG_WHOLE => {
                    out.push(GroupEvent::Media {
                        name: st.name.clone(),
                        message_type: h.message_type,
                        timestamp: h.timestamp,
                        payload: f.data.slice(h.payload_at..),
                    });
                    played += 1;
                    next += 1;
                }
                p2p::FRAG_FIRST => {
                    let n = u64::from(h.left);
                    if (next + 1..=next + n).all(|i| st.frags.contains_key(&i)) {
                        let mut buf =
                            Vec::with_capacity((n as usize + 1) * p2p::MAX_FRAGMENT_PAYLOAD);
                        buf.extend_from_slice(&f.data[h.payload_at..]);
                        for i in next + 1..=next + n {
                            let d = &st.frags[&i].data;
                            if let Ok(hh) = FragmentHeader::parse(d) {
                                buf.extend_from_slice(&d[hh.payload_at..]);
                            }
                        }
                        out.push(GroupEvent::Media {
                            name: st.name.clone(),
                            message_type: h.message_type,
                            timestamp: h.timestamp,
                            payload: Bytes::from(buf),
                        });
                        played += n + 1;
                        next += n + 1;
                    } else {
                        let missing = (next + 1..=next + n).find(|i| !st.frags.contains_key(i));
                        let since = *st.hole_since.get_or_insert(now);
                        if now.saturating_duration_since(since) >= hole_timeout {
                            let skip_to = missing.map_or(next + 1, |m| m + 1);
                            missed += 1;
                            next = skip_to;
                            st.hole_since = None;
                            continue;
                        }
                        break;
                    }
                }
                _ => {
                    // a part of a message whose start we do not play
                    next += 1;
                }
            }
            st.hole_since = None;
        }
        st.play_next = Some(next);
        self.stats.fragments_missed += missed;
        self.stats.media_delivered += out.len() as u64;
        self.stats.fragments_played += played;
        for e in out {
            self.push(e);
        }
    }

    // --------------------------------------------------------- publishing

    /// The key of the stream `name` we are publishing now.
    fn published_key(&self, name: &str) -> Option<[u8; 32]> {
        self.streams
            .iter()
            .find(|(_, s)| s.publisher && s.name == name && s.end.is_none())
            .map(|(k, _)| *k)
    }

    /// Starts publishing a multicast stream `name` into the group
    /// (`NetStream.publish` on a group NetStream).
    pub fn publish(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        name: &str,
    ) -> Result<(), GroupError> {
        if !self.multicast {
            return Err(GroupError::NotEnabled("multicast"));
        }
        if self.published_key(name).is_some() {
            return Err(GroupError::AlreadyPublishing(name.into()));
        }
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        let params = StreamParams {
            send_to_all: false,
            window_ms: self.cfg.window.as_millis() as u64,
            update_period_ms: self.cfg.update_period.as_millis() as u64,
            fetch_period_ms: self.cfg.fetch_period.as_millis() as u64,
        };
        self.streams
            .insert(key, Stream::new(name.into(), params, true, false, now));
        let ready: Vec<SessionId> = self
            .neighbors
            .iter()
            .filter(|(_, n)| n.got_report)
            .map(|(s, _)| *s)
            .collect();
        for s in ready {
            self.announce(ep, now, s, key);
        }
        self.next_tick = Some(now);
        Ok(())
    }

    /// Sends one media message (RTMP type 8 audio, 9 video, 18 data) on a
    /// stream we publish.
    pub fn send_media(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        name: &str,
        message_type: u8,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), GroupError> {
        let Some(key) = self.published_key(name) else {
            return Err(GroupError::NotPublishing(name.into()));
        };
        if payload.len() > p2p::MAX_FRAGMENT_PAYLOAD * p2p::MAX_PARTS {
            return Ok(()); // larger than Flash can carry: dropped
        }
        // help late joiners: codec headers again before key frames
        let mut extra: Vec<(u8, Bytes)> = Vec::new();
        {
            let st = self.streams.get_mut(&key).expect("stream");
            if message_type == 9 && payload.len() >= 2 {
                let keyframe = payload[0] >> 4 == 1;
                let avc_header = payload[0] & 0x0f == 7 && payload[1] == 0;
                if avc_header {
                    st.avc_header = Some(Bytes::copy_from_slice(payload));
                    st.last_avc_resend = Some(now);
                } else if keyframe {
                    if let Some(h) = &st.avc_header {
                        if st.last_avc_resend.is_none_or(|t| {
                            now.saturating_duration_since(t) >= Duration::from_millis(900)
                        }) {
                            extra.push((9, h.clone()));
                            st.last_avc_resend = Some(now);
                        }
                    }
                }
            }
            if message_type == 8 && payload.len() >= 2 && payload[0] >> 4 == 10 {
                if payload[1] == 0 {
                    st.aac_header = Some(Bytes::copy_from_slice(payload));
                    st.last_aac_resend = Some(now);
                } else if let Some(h) = &st.aac_header {
                    if st
                        .last_aac_resend
                        .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
                    {
                        extra.push((8, h.clone()));
                        st.last_aac_resend = Some(now);
                    }
                }
            }
        }
        for (t, p) in extra {
            self.publish_one(ep, now, key, t, timestamp, &p);
        }
        self.publish_one(ep, now, key, message_type, timestamp, payload);
        Ok(())
    }

    fn publish_one(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        key: [u8; 32],
        t: u8,
        ts: u32,
        payload: &[u8],
    ) {
        let ids = {
            let st = self.streams.get_mut(&key).expect("stream");
            let parts = p2p::split_media(st.next_id, t, ts, payload);
            let mut ids = Vec::with_capacity(parts.len());
            for p in parts {
                let id = st.next_id;
                st.next_id += 1;
                if st.frags.len() >= MAX_FRAGMENTS {
                    st.frags.pop_first();
                }
                st.frags.insert(
                    id,
                    Fragment {
                        data: Bytes::from(p),
                        at: now,
                    },
                );
                st.last = id;
                ids.push(id);
            }
            st.last_activity = now;
            ids
        };
        self.stats.fragments_published += ids.len() as u64;
        for id in ids {
            self.push_fragment(ep, now, key, id, None);
        }
    }

    /// Stops publishing `name`: neighbours are told the stream ended.
    pub fn unpublish(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        name: &str,
    ) -> Result<(), GroupError> {
        let Some(key) = self.published_key(name) else {
            return Err(GroupError::NotPublishing(name.into()));
        };
        let end = {
            let st = self.streams.get_mut(&key).expect("stream");
            let end = st.next_id;
            st.next_id += 1;
            st.end = Some(end);
            st.last = end;
            end
        };
        let msg = Bytes::from(MediaAnnounce::End(end).encode());
        for (s, n) in &self.neighbors {
            if let Some(f) = n.media.get(&key).and_then(|pm| pm.out_11) {
                let _ = ep.send(now, *s, f, msg.clone(), None);
            }
        }
        Ok(())
    }

    /// Plays the multicast stream `name` (media arrives as
    /// [`GroupEvent::Media`]); members relay only streams they play.
    pub fn play(&mut self, name: &str) -> Result<(), GroupError> {
        if !self.multicast {
            return Err(GroupError::NotEnabled("multicast"));
        }
        if name.len() > p2p::MAX_STREAM_NAME {
            return Err(GroupError::NameTooLong);
        }
        self.play_names.insert(name.to_owned());
        for st in self.streams.values_mut() {
            if st.name == name {
                st.playing = true;
            }
        }
        Ok(())
    }

    /// Stops playing `name`.
    pub fn stop_play(&mut self, name: &str) {
        self.play_names.remove(name);
        self.streams.retain(|_, s| s.publisher || s.name != name);
    }

    // ----------------------------------------------------------- periodic

    /// Runs timers: reports, best-list upkeep, maps, push masks, pulls,
    /// play-out, eviction, object fetches.
    pub fn handle_timeout(&mut self, ep: &mut Endpoint, now: Instant) {
        if self.left || !self.joined {
            self.next_tick = None;
            return;
        }
        if self.next_report.is_none_or(|t| now >= t) {
            self.next_report = Some(now + self.cfg.report_period);
            let ready: Vec<SessionId> = self
                .neighbors
                .iter()
                .filter(|(_, n)| n.connect_ok && n.got_report)
                .map(|(s, _)| *s)
                .collect();
            if !ready.is_empty() {
                let s = ready[(self.rng.next_u64() % ready.len() as u64) as usize];
                if let Some(n) = self.neighbors.get_mut(&s) {
                    n.report_initiator = true;
                }
                self.send_report(ep, now, s);
            }
        }
        if self.next_best.is_none_or(|t| now >= t) {
            self.next_best = Some(now + self.cfg.best_list_period);
            self.manage_best(ep, now);
        }
        if self.next_maps.is_none_or(|t| now >= t) {
            self.next_maps = Some(now + self.cfg.update_period);
            self.send_maps(ep, now);
            self.pull(ep, now);
            let keys: Vec<[u8; 32]> = self.streams.keys().copied().collect();
            for k in keys {
                self.play_out(now, k);
            }
            self.evict(now);
        }
        if self.next_push.is_none_or(|t| now >= t) {
            self.next_push = Some(now + Duration::from_secs(1));
            self.assign_pushers(ep, now);
            self.fetch_objects(ep, now);
        }
        let period = if self.streams.is_empty() {
            Duration::from_millis(250)
        } else {
            self.cfg.update_period.min(Duration::from_millis(50))
        };
        self.next_tick = Some(now + period);
    }

    fn manage_best(&mut self, ep: &mut Endpoint, now: Instant) {
        // forget members not heard of for long
        let stale: Vec<[u8; 32]> = self
            .members
            .values()
            .filter(|m| now.saturating_duration_since(m.heard) > MEMBER_TIMEOUT)
            .map(|m| m.peer)
            .filter(|p| !self.neighbors.values().any(|n| &n.peer == p))
            .collect();
        for p in stale {
            self.forget(&p);
        }
        self.died.retain(|_, t| *t > now);
        let me = self.my_address;
        let best = self.best_list(&me, true);
        let mut dial = Vec::new();
        for p in &best {
            if !self.connected_to(p) {
                dial.push(*p);
            }
        }
        let room = self.cfg.max_openings.saturating_sub(self.openings.len());
        for p in dial.into_iter().take(room) {
            self.dial(ep, now, p, false);
        }
        // ask neighbours beyond the best list (and not needed for media) to go
        let connected = self.neighbor_count();
        let mut extra = connected.saturating_sub(best.len() + 4);
        if extra > 0 {
            let cands: Vec<SessionId> = self
                .neighbors
                .iter()
                .filter(|(_, n)| {
                    n.ready()
                        && !best.contains(&n.peer)
                        && n.ask_close_sent.is_none_or(|t| {
                            now.saturating_duration_since(t) > Duration::from_secs(90)
                        })
                })
                .map(|(s, _)| *s)
                .collect();
            for s in cands {
                if extra == 0 {
                    break;
                }
                if let Some(n) = self.neighbors.get_mut(&s) {
                    if let Some(f) = n.out_1c {
                        let _ = ep.send(now, s, f, Bytes::from_static(&[p2p::MSG_ASK_CLOSE]), None);
                        n.ask_close_sent = Some(now);
                        extra -= 1;
                    }
                }
            }
        }
    }

    fn send_maps(&mut self, ep: &mut Endpoint, now: Instant) {
        for (key, st) in &self.streams {
            if st.last == 0 {
                continue;
            }
            let first = st.frags.first_key_value().map_or(st.last, |(k, _)| *k);
            let last = st.end.unwrap_or(st.last);
            let mut msg: Option<Bytes> = None;
            for (s, n) in self.neighbors.iter_mut() {
                let Some(pm) = n.media.get_mut(key) else {
                    continue;
                };
                if !pm.announce_received || pm.map_sent_last == last {
                    continue;
                }
                let Some(f) = pm.out_11 else { continue };
                let m = msg
                    .get_or_insert_with(|| {
                        Bytes::from(p2p::encode_map(last, first, |i| st.frags.contains_key(&i)))
                    })
                    .clone();
                let _ = ep.send(now, *s, f, m, Some(Duration::from_secs(2)));
                pm.map_sent_last = last;
            }
        }
    }

    /// The keys of the streams we play (and do not publish).
    fn played_streams(&self) -> Vec<[u8; 32]> {
        self.streams
            .iter()
            .filter(|(_, s)| !s.publisher && s.playing)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Gives each of the 8 fragment classes of every stream we play to one
    /// neighbour that has the stream, and tells the neighbours.
    fn assign_pushers(&mut self, ep: &mut Endpoint, now: Instant) {
        for key in self.played_streams() {
            // candidates: neighbours with the stream whose maps are fresh
            let mut cands: Vec<(u64, SessionId)> = self
                .neighbors
                .iter()
                .filter_map(|(s, n)| {
                    let pm = n.media.get(&key)?;
                    (pm.announce_received && pm.out_11.is_some() && pm.map.last > 0)
                        .then_some((pm.map.last, *s))
                })
                .collect();
            if cands.is_empty() {
                continue;
            }
            cands.sort_unstable_by(|a, b| b.cmp(a));
            let best_last = cands[0].0;
            // neighbours far behind the freshest are poor pushers
            cands.retain(|(l, _)| *l + 64 >= best_last);
            let st = self.streams.get_mut(&key).expect("stream");
            for bit in 0..8 {
                let keep = st.pusher[bit].is_some_and(|s| cands.iter().any(|(_, c)| *c == s));
                if !keep {
                    let pick = cands[(self.rng.next_u64() % cands.len() as u64) as usize].1;
                    st.pusher[bit] = Some(pick);
                }
            }
            let pushers = st.pusher;
            for (s, n) in self.neighbors.iter_mut() {
                let Some(pm) = n.media.get_mut(&key) else {
                    continue;
                };
                let mut mask = 0u8;
                for (bit, p) in pushers.iter().enumerate() {
                    if *p == Some(*s) {
                        mask |= 1 << bit;
                    }
                }
                if mask != pm.our_mask {
                    if let Some(f) = pm.out_11 {
                        let _ = ep.send(now, *s, f, Bytes::from(vec![p2p::MSG_PUSH, mask]), None);
                        pm.our_mask = mask;
                    }
                }
            }
        }
    }

    fn pull(&mut self, ep: &mut Endpoint, now: Instant) {
        let delay = self.cfg.pull_delay;
        let retry = self.cfg.pull_retry;
        for key in self.played_streams() {
            let mut asks: Vec<(SessionId, u64)> = Vec::new();
            {
                let st = self.streams.get_mut(&key).expect("stream");
                let Some(start) = st.play_next else { continue };
                // the newest ID announced at least `delay` ago
                let limit = st
                    .seen
                    .iter()
                    .rev()
                    .find(|(t, _)| now.saturating_duration_since(*t) >= delay)
                    .map_or(0, |(_, l)| *l);
                let hi = limit.min(start + 4096);
                let mut id = start;
                let mut rot = self.rng.next_u64() as usize;
                while id <= hi && asks.len() < 128 {
                    if !st.frags.contains_key(&id) {
                        let pending = st.pulls.get(&id).copied();
                        let due =
                            pending.is_none_or(|(t, _)| now.saturating_duration_since(t) >= retry);
                        if due {
                            let holders: Vec<SessionId> = self
                                .neighbors
                                .iter()
                                .filter(|(s, n)| {
                                    Some(**s) != pending.map(|p| p.1)
                                        && n.media.get(&key).is_some_and(|pm| {
                                            pm.announce_received && pm.map.has(id)
                                        })
                                })
                                .map(|(s, _)| *s)
                                .collect();
                            let holders = if holders.is_empty() {
                                // the only holder may be the one already asked
                                self.neighbors
                                    .iter()
                                    .filter(|(_, n)| {
                                        n.media.get(&key).is_some_and(|pm| {
                                            pm.announce_received && pm.map.has(id)
                                        })
                                    })
                                    .map(|(s, _)| *s)
                                    .collect()
                            } else {
                                holders
                            };
                            if !holders.is_empty() {
                                rot = rot.wrapping_add(1);
                                let s = holders[rot % holders.len()];
                                asks.push((s, id));
                                st.pulls.insert(id, (now, s));
                            }
                        }
                    }
                    id += 1;
                }
            }
            for (s, id) in asks {
                let Some(f) = self
                    .neighbors
                    .get(&s)
                    .and_then(|n| n.media.get(&key))
                    .and_then(|pm| pm.out_11)
                else {
                    continue;
                };
                let mut m = vec![p2p::MSG_PULL];
                rtmfp::wire::put_vlu(&mut m, id);
                if ep.send(now, s, f, Bytes::from(m), Some(retry)).is_ok() {
                    self.stats.pulls_sent += 1;
                }
            }
        }
    }

    fn evict(&mut self, now: Instant) {
        let keep = self.cfg.window + self.cfg.relay_margin;
        let mut gone = Vec::new();
        for (k, st) in self.streams.iter_mut() {
            while let Some((&id, f)) = st.frags.first_key_value() {
                if now.saturating_duration_since(f.at) > keep {
                    st.frags.pop_first();
                    st.evicted_below = st.evicted_below.max(id);
                } else {
                    break;
                }
            }
            let below = st.evicted_below;
            st.pulls.retain(|id, _| *id > below);
            while st
                .seen
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > keep)
                && st.seen.len() > 1
            {
                st.seen.pop_front();
            }
            let idle = now.saturating_duration_since(st.last_activity) > Duration::from_secs(300);
            if (!st.publisher && idle) || (st.end.is_some() && st.frags.is_empty()) {
                gone.push(*k);
            }
        }
        for k in gone {
            self.streams.remove(&k);
            for n in self.neighbors.values_mut() {
                n.media.remove(&k);
            }
            self.in_flows
                .retain(|_, v| *v != InFlow::Media(k) && *v != InFlow::Fragments(k));
        }
    }

    // ------------------------------------------------ posting and routing

    fn send_nimbus(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        session: SessionId,
        m: &NimbusMessage,
    ) -> bool {
        let Some(n) = self.neighbors.get_mut(&session) else {
            return false;
        };
        if n.ng_refused || !n.ready() {
            return false;
        }
        if n.out_ng.is_none() {
            match ep.open_flow(
                now,
                session,
                p2p::NIMBUS_METADATA,
                n.in_1c,
                Priority::ROUTINE,
            ) {
                Ok(f) => n.out_ng = Some(f),
                Err(_) => return false,
            }
        }
        let f = n.out_ng.expect("flow");
        ep.send(now, session, f, Bytes::from(m.encode()), None)
            .is_ok()
    }

    fn remember_post(&mut self, now: Instant, id: [u8; 32]) -> bool {
        if self.posts_seen.contains_key(&id) {
            return false;
        }
        while let Some(&(old, t)) = self.posts_order.front() {
            if self.posts_order.len() >= MAX_POSTS_SEEN
                || now.saturating_duration_since(t) > POST_MEMORY
            {
                self.posts_order.pop_front();
                self.posts_seen.remove(&old);
            } else {
                break;
            }
        }
        self.posts_seen.insert(id, now);
        self.posts_order.push_back((id, now));
        true
    }

    /// Posts `message` to every member (`NetGroup.post`): each member gets
    /// it once. Returns the message ID, or `None` if the same message was
    /// posted or received recently (Flash drops identical posts too).
    pub fn post(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        message: Bytes,
    ) -> Result<Option<[u8; 32]>, GroupError> {
        if !self.posting {
            return Err(GroupError::NotEnabled("posting"));
        }
        let id: [u8; 32] = Sha256::digest(&message).into();
        if !self.remember_post(now, id) {
            return Ok(None);
        }
        let m = NimbusMessage::Post {
            id,
            payload: message,
        };
        let all: Vec<SessionId> = self.neighbors.keys().copied().collect();
        for s in all {
            self.send_nimbus(ep, now, s, &m);
        }
        Ok(Some(id))
    }

    /// Sends `message` toward the member whose group address is nearest
    /// `dest` (`NetGroup.sendToNearest`). Returns whether it left (or was
    /// delivered here).
    pub fn send_to_nearest(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        dest: [u8; 32],
        message: Bytes,
    ) -> bool {
        let origin = self.my_address;
        self.route(ep, now, None, dest, 0, origin, message)
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        from: Option<SessionId>,
        dest: [u8; 32],
        hops: u8,
        origin: [u8; 32],
        payload: Bytes,
    ) -> bool {
        let mine = ring_distance(&self.my_address, &dest);
        let next = self
            .neighbors
            .iter()
            .filter(|(s, n)| n.ready() && !n.ng_refused && Some(**s) != from)
            .map(|(s, n)| (ring_distance(&n.address, &dest), *s))
            .min();
        match next {
            Some((d, s)) if d < mine && hops < MAX_HOPS => {
                let m = NimbusMessage::Route {
                    dest,
                    hops: hops + 1,
                    origin,
                    payload,
                };
                self.send_nimbus(ep, now, s, &m)
            }
            _ => {
                self.push(GroupEvent::SendToNotify {
                    message: payload,
                    from: origin,
                    from_local: origin == self.my_address,
                });
                true
            }
        }
    }

    /// Sends `message` to the neighbour `peer` (`NetGroup.sendToNeighbor`).
    pub fn send_to_neighbor(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        peer: PeerId,
        message: Bytes,
    ) -> bool {
        let Some(s) = self
            .neighbors
            .iter()
            .find(|(_, n)| n.peer == peer.0 && n.ready())
            .map(|(s, _)| *s)
        else {
            return false;
        };
        let m = NimbusMessage::Neighbor {
            origin: self.my_address,
            payload: message,
        };
        self.send_nimbus(ep, now, s, &m)
    }

    /// Sends `message` to every neighbour (`NetGroup.sendToAllNeighbors`);
    /// returns how many it went to.
    pub fn send_to_all_neighbors(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        message: Bytes,
    ) -> usize {
        let m = NimbusMessage::Neighbor {
            origin: self.my_address,
            payload: message,
        };
        let all: Vec<SessionId> = self.neighbors.keys().copied().collect();
        all.into_iter()
            .filter(|s| self.send_nimbus(ep, now, *s, &m))
            .count()
    }

    fn on_nimbus(&mut self, ep: &mut Endpoint, now: Instant, session: SessionId, data: &Bytes) {
        if !self.neighbors.get(&session).is_some_and(|n| n.connect_ok) {
            return;
        }
        let Ok(m) = NimbusMessage::parse(data) else {
            return;
        };
        match m {
            NimbusMessage::Post { id, payload } => {
                if !self.posting
                    || Sha256::digest(&payload)[..] != id[..]
                    || !self.remember_post(now, id)
                {
                    return;
                }
                self.stats.posts_delivered += 1;
                self.push(GroupEvent::PostingNotify {
                    id,
                    message: payload.clone(),
                });
                let fwd = NimbusMessage::Post { id, payload };
                let others: Vec<SessionId> = self
                    .neighbors
                    .keys()
                    .copied()
                    .filter(|s| *s != session)
                    .collect();
                for s in others {
                    self.send_nimbus(ep, now, s, &fwd);
                }
            }
            NimbusMessage::Route {
                dest,
                hops,
                origin,
                payload,
            } => {
                self.route(ep, now, Some(session), dest, hops, origin, payload);
            }
            NimbusMessage::Neighbor { origin, payload } => self.push(GroupEvent::SendToNotify {
                message: payload,
                from: origin,
                from_local: false,
            }),
            NimbusMessage::Have(r) => {
                if let Some(n) = self.neighbors.get_mut(&session) {
                    n.have = r;
                }
                self.next_push = Some(now);
            }
            NimbusMessage::Want(index) => {
                if self.replication
                    && ranges_contain(&self.have, index)
                    && self.requests.len() < 4096
                {
                    let request = self.next_request;
                    self.next_request += 1;
                    self.requests.insert(request, (session, index));
                    self.push(GroupEvent::ReplicationRequest { index, request });
                } else {
                    self.send_nimbus(ep, now, session, &NimbusMessage::Deny(index));
                }
            }
            NimbusMessage::Object { index, object } => {
                if !ranges_contain(&self.want, index) || ranges_contain(&self.have, index) {
                    return;
                }
                self.want_pending.remove(&index);
                ranges_remove(&mut self.want, index, index);
                ranges_add(&mut self.have, index, index);
                self.push(GroupEvent::ReplicationFetchResult { index, object });
                self.broadcast_have(ep, now);
            }
            NimbusMessage::Deny(index) => {
                if let Some((_, s)) = self.want_pending.get(&index) {
                    if *s == session {
                        self.want_pending.remove(&index);
                        if let Some(n) = self.neighbors.get_mut(&session) {
                            ranges_remove(&mut n.have, index, index);
                        }
                    }
                }
            }
        }
    }

    // -------------------------------------------------- object replication

    fn broadcast_have(&mut self, ep: &mut Endpoint, now: Instant) {
        let m = NimbusMessage::Have(self.have.clone());
        let all: Vec<SessionId> = self.neighbors.keys().copied().collect();
        for s in all {
            self.send_nimbus(ep, now, s, &m);
        }
    }

    /// Adds objects `start..=end` to the set we hold and serve
    /// (`NetGroup.addHaveObjects`).
    pub fn add_have_objects(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        start: u64,
        end: u64,
    ) -> Result<(), GroupError> {
        if !self.replication {
            return Err(GroupError::NotEnabled("object replication"));
        }
        if end >= start {
            ranges_add(&mut self.have, start, end);
            ranges_remove(&mut self.want, start, end);
            self.broadcast_have(ep, now);
        }
        Ok(())
    }

    /// Removes objects from the set we serve (`NetGroup.removeHaveObjects`).
    pub fn remove_have_objects(&mut self, ep: &mut Endpoint, now: Instant, start: u64, end: u64) {
        if end >= start {
            ranges_remove(&mut self.have, start, end);
            self.broadcast_have(ep, now);
        }
    }

    /// Asks the group for objects `start..=end` (`NetGroup.addWantObjects`);
    /// each arrives as [`GroupEvent::ReplicationFetchResult`].
    pub fn add_want_objects(&mut self, start: u64, end: u64) -> Result<(), GroupError> {
        if !self.replication {
            return Err(GroupError::NotEnabled("object replication"));
        }
        if end >= start && end - start < MAX_WANT_SPAN {
            ranges_add(&mut self.want, start, end);
            for &(a, b) in &self.have.clone() {
                ranges_remove(&mut self.want, a, b);
            }
            self.next_push = Some(self.next_push.map_or(Instant::now(), |t| t));
        }
        Ok(())
    }

    /// Stops wanting objects (`NetGroup.removeWantObjects`).
    pub fn remove_want_objects(&mut self, start: u64, end: u64) {
        if end >= start {
            ranges_remove(&mut self.want, start, end);
            self.want_pending.retain(|i, _| !(start..=end).contains(i));
        }
    }

    /// Answers a [`GroupEvent::ReplicationRequest`] with the object
    /// (`NetGroup.writeRequestedObject`).
    pub fn write_requested_object(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        request: u64,
        object: Bytes,
    ) -> bool {
        let Some((s, index)) = self.requests.remove(&request) else {
            return false;
        };
        self.send_nimbus(ep, now, s, &NimbusMessage::Object { index, object })
    }

    /// Refuses a [`GroupEvent::ReplicationRequest`] (`NetGroup.denyRequestedObject`).
    pub fn deny_requested_object(&mut self, ep: &mut Endpoint, now: Instant, request: u64) {
        if let Some((s, index)) = self.requests.remove(&request) {
            self.send_nimbus(ep, now, s, &NimbusMessage::Deny(index));
        }
    }

    fn fetch_objects(&mut self, ep: &mut Endpoint, now: Instant) {
        if self.want.is_empty() {
            return;
        }
        let mut asks = Vec::new();
        'ranges: for &(a, b) in &self.want {
            for i in a..=b {
                if asks.len() + self.want_pending.len() >= 64 {
                    break 'ranges;
                }
                if let Some((t, _)) = self.want_pending.get(&i) {
                    if now.saturating_duration_since(*t) < Duration::from_secs(5) {
                        continue;
                    }
                }
                let holder = self
                    .neighbors
                    .iter()
                    .filter(|(_, n)| n.ready() && !n.ng_refused && ranges_contain(&n.have, i))
                    .map(|(s, _)| *s)
                    .min_by_key(|s| (s.0 as u64).wrapping_mul(0x9e37_79b9).wrapping_add(i));
                if let Some(s) = holder {
                    asks.push((s, i));
                }
            }
        }
        for (s, i) in asks {
            if self.send_nimbus(ep, now, s, &NimbusMessage::Want(i)) {
                self.want_pending.insert(i, (now, s));
            }
        }
    }
}

impl Stream {
    fn new(
        name: String,
        params: StreamParams,
        publisher: bool,
        playing: bool,
        now: Instant,
    ) -> Self {
        Stream {
            name,
            params,
            publisher,
            playing,
            frags: BTreeMap::new(),
            last: 0,
            end: None,
            next_id: 1,
            play_next: None,
            hole_since: None,
            pulls: HashMap::new(),
            seen: VecDeque::new(),
            seen_last: 0,
            pusher: [None; 8],
            avc_header: None,
            aac_header: None,
            last_avc_resend: None,
            last_aac_resend: None,
            last_activity: now,
            evicted_below: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let mut r = Vec::new();
        ranges_add(&mut r, 5, 9);
        ranges_add(&mut r, 10, 12);
        ranges_add(&mut r, 1, 2);
        assert_eq!(r, vec![(1, 2), (5, 12)]);
        ranges_remove(&mut r, 7, 8);
        assert_eq!(r, vec![(1, 2), (5, 6), (9, 12)]);
        assert!(ranges_contain(&r, 9) && !ranges_contain(&r, 8));
    }

    #[test]
    fn ring_distance_wraps() {
        let mut a = [0u8; 32];
        let mut b = [0xffu8; 32];
        assert_eq!(ring_distance(&a, &b), 1);
        a[0] = 0x80;
        b[0] = 0;
        b[1..].fill(0);
        assert_eq!(ring_distance(&a, &b), 1u128 << 127);
    }
}
