//! The endpoint: packet multiplex (§3.3), fragmentation (§3.4), session
//! startup as initiator and responder (§3.5.1), redirector and forwarder
//! support, timers and the transmit schedule.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand_core::RngCore;
use rustc_hash::{FxHashMap, FxHashSet};
use sha2::{Digest, Sha256};

use crate::config::EndpointConfig;
use crate::crypto::{CryptoProfile, IIKeyingInput, InitiatorHandshake, PacketCrypto};
use crate::event::{CloseReason, Event, OpenError, Role, SessionId, SessionInfo};
use crate::flow::{Priority, RecvMessage};
use crate::ratelimit::RateLimiter;
use crate::session::{Ctx, Effects, Session, TcState};
use crate::wire::{self, Address, Chunk, Mode, Packet, PacketHeader};
use crate::Error;

const COOKIE_LEN: usize = 64;
const TAG_LEN: usize = 16;
const MAX_REASSEMBLIES: usize = 256;
const MAX_REASSEMBLY_BYTES: usize = 65536;
const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_EVENTS: usize = 1 << 16;

#[derive(Debug)]
struct Candidate {
    addr: SocketAddr,
    next: Instant,
    interval: Duration,
}

#[derive(Debug)]
enum Phase {
    IHello,
    Keying {
        dest: SocketAddr,
        cookie: Vec<u8>,
        far_cert: Bytes,
        handshake: Box<dyn InitiatorHandshake>,
        iikeying: Vec<u8>,
        next: Instant,
        interval: Duration,
        cookie_changed: bool,
        /// IIKeyings sent (first and retransmissions).
        sends: u32,
    },
}

/// IIKeyings sent without an answer before the opening falls back (see
/// [`CryptoProfile::fall_back`]) instead of retransmitting again: with the
/// default 1.5 s retry the fallback comes 4.5 s after the first IIKeying.
const KEYING_SENDS_BEFORE_FALLBACK: u32 = 2;

/// An opening session as initiator (S_IHELLO_SENT / S_KEYING_SENT).
#[derive(Debug)]
struct Opening {
    epd: Vec<u8>,
    tag: [u8; TAG_LEN],
    started: Instant,
    candidates: Vec<Candidate>,
    phase: Phase,
    /// Time of this opening's live entry in the timer heap.
    armed: Option<Instant>,
    /// Whether the profile already fell back during this opening.
    fell_back: bool,
}

#[derive(Debug)]
struct Reassembly {
    mode: Mode,
    fragments: Vec<Option<Vec<u8>>>,
    last_index: Option<u64>,
    bytes: usize,
    progress: Instant,
}

/// Most shard bits honoured in session IDs
/// ([`EndpointConfig::shard_bits`] is capped at this).
pub const MAX_SHARD_BITS: u8 = 16;

/// The shard that owns the session a datagram is addressed to, for a
/// server running one [`Endpoint`] per shard
/// ([`EndpointConfig::shard_bits`], [`EndpointConfig::shard`]).
///
/// Unscrambles the datagram's session ID (RFC 7016 §2.2.1: the first 32
/// bits XOR the next two 32-bit words) and returns its top `shard_bits`
/// bits (at most [`MAX_SHARD_BITS`]; 0 bits: shard 0). Returns `None` for
/// a datagram shorter than 4 bytes and for session ID 0 (startup packets:
/// IHello, IIKeying and their fragments), which any shard can handle
/// itself: its responder keeps no state before the IIKeying, and the
/// session it then opens carries its own shard number.
///
/// Handing a datagram to a shard that owns no such session is harmless:
/// it is dropped and counted in
/// [`EndpointStats::datagrams_dropped`].
pub fn datagram_shard(data: &[u8], shard_bits: u8) -> Option<u32> {
    let (sid, _) = wire::demultiplex(data)?;
    if sid == 0 {
        return None;
    }
    let bits = u32::from(shard_bits.min(MAX_SHARD_BITS));
    Some(if bits == 0 { 0 } else { sid >> (32 - bits) })
}

/// A sans-IO RTMFP endpoint: many sessions over one datagram interface.
///
/// See the [crate documentation](crate) for the run-loop contract.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    profile: std::sync::Arc<dyn CryptoProfile>,
    default_crypto: Box<dyn PacketCrypto>,
    rng: RngBox,
    epoch: Instant,
    cookie_secret: [u8; 32],
    // keyed by session IDs this endpoint chose: a fast hasher is safe
    // boxed: a map's buckets outnumber its entries, and a session is large
    sessions: FxHashMap<u32, Box<Session>>,
    openings: FxHashMap<u32, Opening>,
    tags: HashMap<[u8; TAG_LEN], u32>,
    by_addr: HashMap<SocketAddr, u32>,
    /// Sessions by SHA-256 of the far certificate (duplicate and override
    /// checks without scanning every session).
    /// (64 bits of the digest: the certificates themselves are compared.)
    by_cert: HashMap<u64, u32>,
    /// Timer entries; an entry is live when its time equals the `armed`
    /// time of its session or opening session (others are skipped).
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    ready: VecDeque<u32>,
    in_ready: FxHashSet<u32>,
    startup_queue: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    tc: TcState,
    reassembly: HashMap<(SocketAddr, u64), Reassembly>,
    next_packet_id: u64,
    scratch: Vec<u8>,
    /// Scratch of `Session::write_data` (flow service order).
    order_scratch: Vec<u64>,
    stats: EndpointStats,
    ihello_limiter: RateLimiter,
    /// Latest time seen at an entry point (for startup packet timestamps).
    now: Instant,
    /// Bytes exchanged with unproven addresses (anti-amplification).
    amp: crate::amplification::AmpLedger,
    /// Responder keyings waiting or running (fair across sources, bounded).
    keyings: crate::keying::KeyingQueue,
}

struct RngBox(Box<dyn RngCore + Send>);

impl std::fmt::Debug for RngBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rng")
    }
}

/// Endpoint-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_received: u64,
    /// Datagrams dropped (undecryptable, unknown session, malformed).
    pub datagrams_dropped: u64,
    /// Datagrams produced by `poll_transmit`.
    pub datagrams_sent: u64,
    /// RHellos sent (answers to IHello / Forwarded IHello).
    pub rhellos_sent: u64,
    /// Sessions opened as responder.
    pub sessions_accepted: u64,
    /// Sessions opened as initiator.
    pub sessions_initiated: u64,
    /// Redirects sent.
    pub redirects_sent: u64,
    /// Forwarded IHellos sent.
    pub fihellos_sent: u64,
    /// Startup packets dropped because the queue was full.
    pub startup_dropped: u64,
    /// RHellos and RHello Cookie Changes not sent because they exceeded the
    /// anti-amplification limit
    /// ([`EndpointConfig::amplification_factor`]).
    pub amplification_drops: u64,
    /// IHellos dropped by the per-source rate limit
    /// ([`EndpointConfig::ihello_rate_per_source`]).
    pub ihello_rate_drops: u64,
    /// IIKeyings queued for keying (Diffie-Hellman).
    pub keyings_queued: u64,
    /// Keyings dropped unrun or unused: not queued because the keying
    /// queue was full and their source had its share, evicted from a full
    /// queue for another source's turn, or given up after
    /// [`EndpointConfig::keying_max_wait`] (waiting, or out with
    /// [`Endpoint::poll_keying`] without a result).
    pub keyings_dropped: u64,
    /// Keyings done (results handled in time: sessions opened, or refused
    /// after them).
    pub keyings_done: u64,
}

/// Frees the buffer of an empty endpoint-wide queue after a burst (kept
/// when small, so steady traffic does not reallocate).
fn shrink_queue<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > 64 {
        *q = VecDeque::new();
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256>>::new_from_slice(key).expect("hmac takes any key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn cert_key(certificate: &[u8]) -> u64 {
    let d = Sha256::digest(certificate);
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn addr_bytes(a: SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(19);
    Address {
        addr: a,
        origin: wire::AddressOrigin::Unknown,
    }
    .encode(&mut v);
    v
}

enum CookieCheck {
    Valid,
    WrongAddress,
    Invalid,
}

impl Endpoint {
    /// Creates an endpoint. `rng` supplies all randomness (session IDs,
    /// tags, cookies' secret, keying); `now` is the time origin of the
    /// endpoint's 250 Hz timestamps.
    pub fn new(
        config: EndpointConfig,
        profile: Box<dyn CryptoProfile>,
        rng: Box<dyn RngCore + Send>,
        now: Instant,
    ) -> Self {
        Self::with_shared_profile(config, std::sync::Arc::from(profile), rng, now)
    }

    /// Like [`new`](Self::new) with a profile shared with other endpoints
    /// (server shards with one identity: one certificate, one cache of
    /// ephemeral keys; give them the same
    /// [`cookie_secret`](EndpointConfig::cookie_secret) and `now` too).
    pub fn with_shared_profile(
        config: EndpointConfig,
        profile: std::sync::Arc<dyn CryptoProfile>,
        mut rng: Box<dyn RngCore + Send>,
        now: Instant,
    ) -> Self {
        let cookie_secret = match config.cookie_secret {
            Some(s) => s,
            None => {
                let mut c = [0u8; 32];
                rng.fill_bytes(&mut c);
                c
            }
        };
        let keyings = crate::keying::KeyingQueue::new(
            config.max_keyings_in_flight,
            config.max_keyings_waiting,
            config.keying_max_wait,
        );
        let default_crypto = profile.default_session_crypto();
        let ihello_limiter = RateLimiter::new(
            config.ihello_rate_per_source,
            config.ihello_burst_per_source,
            config.max_rate_limit_entries,
            now,
        );
        let amp = crate::amplification::AmpLedger::new(
            config.amplification_factor,
            config.max_rate_limit_entries.max(1024),
        );
        Self {
            amp,
            keyings,
            config,
            profile,
            default_crypto,
            rng: RngBox(rng),
            epoch: now,
            cookie_secret,
            sessions: FxHashMap::default(),
            openings: FxHashMap::default(),
            tags: HashMap::new(),
            by_addr: HashMap::new(),
            by_cert: HashMap::new(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            in_ready: Default::default(),
            startup_queue: VecDeque::new(),
            events: VecDeque::new(),
            tc: TcState::default(),
            reassembly: HashMap::new(),
            next_packet_id: 1,
            scratch: Vec::with_capacity(2048),
            order_scratch: Vec::new(),
            stats: EndpointStats::default(),
            ihello_limiter,
            now,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The crypto profile.
    pub fn profile(&self) -> &dyn CryptoProfile {
        &*self.profile
    }

    /// Endpoint counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Number of sessions (open, closing or opening).
    pub fn session_count(&self) -> usize {
        self.sessions.len() + self.openings.len()
    }

    /// IDs of all open sessions.
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.sessions
            .iter()
            .filter(|(_, s)| s.is_open())
            .map(|(k, _)| SessionId(*k))
    }

    fn ctx(&mut self) -> (Ctx<'_>, &mut FxHashMap<u32, Box<Session>>) {
        (
            Ctx {
                config: &self.config,
                events: &mut self.events,
                tc: &mut self.tc,
                epoch: self.epoch,
                order_scratch: &mut self.order_scratch,
            },
            &mut self.sessions,
        )
    }

    /// A fresh receive session ID: random, never 0, and with
    /// [`shard_bits`](EndpointConfig::shard_bits) > 0 carrying the shard
    /// number in its top bits (see [`datagram_shard`]). `None` when the
    /// shard's ID space is full.
    fn new_session_id(&mut self) -> Option<u32> {
        let bits = u32::from(self.config.shard_bits.min(MAX_SHARD_BITS));
        let with_shard = |r: u32| match bits {
            0 => r,
            b => ((self.config.shard & ((1 << b) - 1)) << (32 - b)) | (r >> b),
        };
        for _ in 0..1000 {
            let r = with_shard(self.rng.0.next_u32());
            if r != 0 && !self.sessions.contains_key(&r) && !self.openings.contains_key(&r) {
                return Some(r);
            }
        }
        // astronomically unlikely (max_sessions permitting); fall back to
        // a linear probe within the shard's range
        let space = u32::MAX >> bits;
        (1..=space).map(|r| with_shard(r << bits)).find(|id| {
            *id != 0 && !self.sessions.contains_key(id) && !self.openings.contains_key(id)
        })
    }

    fn schedule(&mut self, sid: u32) {
        let t = if let Some(s) = self.sessions.get(&sid) {
            s.next_timeout(&self.config)
        } else if let Some(o) = self.openings.get(&sid) {
            Some(Self::opening_deadline(o, &self.config))
        } else {
            None
        };
        // An armed timer earlier than `t` stays: when it fires,
        // handle_timeout finds nothing due and re-arms at the deadline of
        // then. So a deadline that keeps moving later (keepalive, idle
        // timeout, retransmission alarm) costs no heap push per packet,
        // and each session has about one entry in the heap.
        let Some(t) = t else { return };
        let Some(armed) = self.armed_mut(sid) else {
            return;
        };
        if armed.is_none_or(|a| t < a) {
            *armed = Some(t);
            self.timers.push(Reverse((t, sid)));
        }
    }

    /// The time of a session's (or opening session's) entry in `timers`.
    fn armed_mut(&mut self, sid: u32) -> Option<&mut Option<Instant>> {
        if let Some(s) = self.sessions.get_mut(&sid) {
            Some(&mut s.armed)
        } else {
            self.openings.get_mut(&sid).map(|o| &mut o.armed)
        }
    }

    fn armed(&self, sid: u32) -> Option<Instant> {
        if let Some(s) = self.sessions.get(&sid) {
            s.armed
        } else {
            self.openings.get(&sid).and_then(|o| o.armed)
        }
    }

    fn mark_ready(&mut self, sid: u32) {
        if self.in_ready.insert(sid) {
            self.ready.push_back(sid);
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(e);
        }
    }

    // ----- run loop -------------------------------------------------------

    /// The next instant at which [`handle_timeout`](Self::handle_timeout)
    /// must be called, if any.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((t, sid))) = self.timers.peek().copied() {
            if self.armed(sid) == Some(t) {
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    /// Processes expired timers. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        // collect first: processing may schedule new timers at or before
        // `now` (work that poll_transmit completes), which must not be
        // re-run in this call
        let mut due = Vec::new();
        while let Some(Reverse((t, sid))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match self.armed_mut(sid) {
                Some(armed) if *armed == Some(t) => *armed = None,
                _ => continue, // superseded by an earlier entry, or gone
            }
            due.push(sid);
        }
        if self.timers.capacity() > 1024 && self.timers.len() < self.timers.capacity() / 4 {
            self.timers.shrink_to(self.timers.len() * 2);
        }
        for sid in due {
            if self.openings.contains_key(&sid) {
                self.opening_timeout(now, sid);
            } else if self.sessions.contains_key(&sid) {
                let (mut ctx, sessions) = self.ctx();
                let s = sessions.get_mut(&sid).expect("present");
                s.on_timeout(now, &mut ctx);
                self.mark_ready(sid);
                self.after_session(sid);
            }
        }
        let stale: Vec<(SocketAddr, u64)> = self
            .reassembly
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.progress) > REASSEMBLY_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.reassembly.remove(&k);
        }
    }

    /// Drains the next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() {
            shrink_queue(&mut self.events);
        }
        e
    }

    /// Assembles the next datagram to send into `buf` (cleared first) and
    /// returns its destination, or `None` when nothing is due. Call until it
    /// returns `None` after every input.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        if let Some((dst, d)) = self.startup_queue.pop_front() {
            buf.clear();
            buf.extend_from_slice(&d);
            self.stats.datagrams_sent += 1;
            return Some(dst);
        }
        shrink_queue(&mut self.startup_queue);
        while let Some(sid) = self.ready.pop_front() {
            self.in_ready.remove(&sid);
            let (mut ctx, sessions) = self.ctx();
            let Some(s) = sessions.get_mut(&sid) else {
                continue;
            };
            let r = s.poll_packet(now, buf, &mut ctx);
            if r.is_some() {
                self.mark_ready(sid);
                self.stats.datagrams_sent += 1;
            } else {
                s.compact();
            }
            self.after_session(sid);
            if r.is_some() {
                return r;
            }
        }
        shrink_queue(&mut self.ready);
        if self.in_ready.is_empty() && self.in_ready.capacity() > 64 {
            self.in_ready = FxHashSet::default();
        }
        None
    }

    /// Housekeeping after a session was touched: removal when closed,
    /// timer rescheduling.
    fn after_session(&mut self, sid: u32) {
        let closed = self.sessions.get(&sid).is_some_and(|s| s.is_closed());
        if closed {
            if let Some(s) = self.sessions.remove(&sid) {
                let key = cert_key(&s.far_cert);
                if self.by_cert.get(&key) == Some(&sid) {
                    self.by_cert.remove(&key);
                }
                if self.by_addr.get(&s.far_addr) == Some(&sid) {
                    self.by_addr.remove(&s.far_addr);
                }
            }
            return;
        }
        self.schedule(sid);
    }

    /// Processes one received datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.now = self.now.max(now);
        self.stats.datagrams_received += 1;
        let Some((sid, enc)) = wire::demultiplex(data) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(enc);
        if sid != 0 && self.sessions.contains_key(&sid) {
            self.handle_session_datagram(now, from, sid, &mut buf, data.len());
            self.scratch = buf;
            return;
        }
        // startup packet (SID 0), or RIKeying / cookie change to an opening
        if sid == 0 || self.openings.contains_key(&sid) {
            if sid == 0 {
                let wire = data.len() + crate::amplification::wire_overhead(from);
                self.amp.received(from, wire);
            }
            if let Ok(r) = self.default_crypto.decrypt(&mut buf) {
                let plain = buf[r].to_vec();
                self.handle_startup(now, from, sid, &plain, 0);
            } else {
                self.stats.datagrams_dropped += 1;
            }
        } else {
            self.stats.datagrams_dropped += 1;
        }
        self.scratch = buf;
    }

    fn handle_session_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sid: u32,
        buf: &mut [u8],
        size: usize,
    ) {
        let mut fx = Effects::default();
        {
            let (mut ctx, sessions) = self.ctx();
            let s = sessions.get_mut(&sid).expect("checked");
            let range = {
                // decrypt with the session key
                match s_decrypt(s, buf) {
                    Some(r) => r,
                    None => {
                        self.stats.datagrams_dropped += 1;
                        return;
                    }
                }
            };
            let Ok(packet) = Packet::parse(&buf[range]) else {
                self.stats.datagrams_dropped += 1;
                return;
            };
            s.handle_packet(now, from, &packet, size, &mut ctx, &mut fx);
            // the initiator has evidently received our RIKeying
            if s.rikeying.is_some() && s.stats.packets_received > 0 {
                s.rikeying = None;
            }
        }
        if let Some((old, new)) = fx.moved {
            if self.by_addr.get(&old) == Some(&sid) {
                self.by_addr.remove(&old);
            }
            self.by_addr.insert(new, sid);
        }
        for (epd, reply, tag) in fx.fihellos {
            if self.config.accept_forwarded_ihello
                && self.config.accept_sessions
                && self.profile.epd_selects_near(&epd)
            {
                // the forwarder vouches for the initiator with its datagram
                let wire = size + crate::amplification::wire_overhead(reply);
                self.amp.received(reply, wire);
                self.send_rhello(now, reply, &tag);
            }
        }
        self.mark_ready(sid);
        self.after_session(sid);
    }

    // ----- startup --------------------------------------------------------

    fn handle_startup(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sid: u32,
        plain: &[u8],
        depth: u8,
    ) {
        let Ok(packet) = Packet::parse(plain) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        if packet.header.mode != Mode::Startup {
            self.stats.datagrams_dropped += 1;
            return;
        }
        for (_, chunk) in packet.chunks() {
            let Ok(chunk) = chunk else { continue };
            match chunk {
                Chunk::PacketFragment {
                    more,
                    packet_id,
                    fragment_num,
                    data,
                } if depth == 0 => {
                    if let Some(whole) = self.reassemble(
                        now,
                        from,
                        packet.header.mode,
                        more,
                        packet_id,
                        fragment_num,
                        data,
                    ) {
                        self.handle_startup(now, from, sid, &whole, 1);
                    }
                }
                Chunk::IHello { epd, tag } if sid == 0 => self.on_ihello(now, from, epd, tag),
                Chunk::RHello {
                    tag_echo,
                    cookie,
                    certificate,
                } if sid == 0 => self.on_rhello(now, from, tag_echo, cookie, certificate),
                Chunk::Redirect {
                    tag_echo,
                    destinations,
                } if sid == 0 => self.on_redirect(now, from, tag_echo, &destinations),
                Chunk::IIKeying {
                    initiator_session_id,
                    cookie_echo,
                    certificate,
                    skic,
                    signed,
                    signature,
                } if sid == 0 => self.on_iikeying(
                    now,
                    from,
                    initiator_session_id,
                    cookie_echo,
                    IIKeyingInput {
                        certificate,
                        skic,
                        signed,
                        signature,
                    },
                ),
                Chunk::RIKeying {
                    responder_session_id,
                    skrc,
                    signed,
                    signature,
                } if sid != 0 => self.on_rikeying(
                    now,
                    from,
                    sid,
                    responder_session_id,
                    skrc,
                    signed,
                    signature,
                ),
                Chunk::RHelloCookieChange {
                    old_cookie,
                    new_cookie,
                } if sid != 0 => self.on_cookie_change(now, sid, old_cookie, new_cookie),
                _ => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reassemble(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mode: Mode,
        more: bool,
        packet_id: u64,
        index: u64,
        data: &[u8],
    ) -> Option<Vec<u8>> {
        if index > 64 {
            return None;
        }
        let key = (from, packet_id);
        if !self.reassembly.contains_key(&key) {
            if self.reassembly.len() >= MAX_REASSEMBLIES {
                // drop the oldest
                let oldest = self
                    .reassembly
                    .iter()
                    .min_by_key(|(_, r)| r.progress)
                    .map(|(k, _)| *k)?;
                self.reassembly.remove(&oldest);
            }
            self.reassembly.insert(
                key,
                Reassembly {
                    mode,
                    fragments: Vec::new(),
                    last_index: None,
                    bytes: 0,
                    progress: now,
                },
            );
        }
        let r = self.reassembly.get_mut(&key)?;
        if r.mode != mode {
            return None;
        }
        let i = index as usize;
        if r.fragments.len() <= i {
            r.fragments.resize(i + 1, None);
        }
        if r.fragments[i].is_none() {
            r.bytes += data.len();
            if r.bytes > MAX_REASSEMBLY_BYTES {
                self.reassembly.remove(&key);
                return None;
            }
            r.fragments[i] = Some(data.to_vec());
            r.progress = now;
        }
        if !more {
            r.last_index = Some(index);
        }
        let last = r.last_index? as usize;
        if r.fragments.len() < last + 1 || r.fragments[..=last].iter().any(|f| f.is_none()) {
            return None;
        }
        let r = self.reassembly.remove(&key)?;
        let mut whole = Vec::with_capacity(r.bytes);
        for f in r.fragments.into_iter().take(last + 1).flatten() {
            whole.extend_from_slice(&f);
        }
        Some(whole)
    }

    /// Queues a startup packet (mode 3, Default Session Key) holding
    /// `chunk`, fragmenting it when it exceeds the datagram size.
    fn queue_startup(&mut self, dst: SocketAddr, sid: u32, chunk: &[u8]) {
        for d in self.seal_startup(sid, chunk) {
            self.push_startup(dst, d);
        }
    }

    /// Like [`queue_startup`](Self::queue_startup) for an answer to an
    /// unproven address: nothing is sent, and false returned, when the
    /// datagrams would exceed what the amplification ledger allows `dst`
    /// (in wire bytes: payloads plus UDP/IP headers).
    fn queue_startup_limited(&mut self, dst: SocketAddr, sid: u32, chunk: &[u8]) -> bool {
        let datagrams = self.seal_startup(sid, chunk);
        let header = crate::amplification::wire_overhead(dst);
        let total: usize = datagrams.iter().map(|d| d.len() + header).sum();
        if total > self.amp.allowance(dst) {
            self.stats.amplification_drops += 1;
            return false;
        }
        self.amp.spent(dst, total);
        for d in datagrams {
            self.push_startup(dst, d);
        }
        true
    }

    /// Encrypts a startup packet holding `chunk` into one datagram, or
    /// several Packet Fragments (§3.4) when it exceeds the datagram size.
    fn seal_startup(&mut self, sid: u32, chunk: &[u8]) -> Vec<Vec<u8>> {
        let mut plain = Vec::with_capacity(chunk.len() + 8);
        self.startup_header().encode(&mut plain);
        plain.extend_from_slice(chunk);
        let max_plain = self
            .config
            .max_startup_datagram_size
            .max(self.config.max_datagram_size)
            .saturating_sub(4 + self.default_crypto.overhead());
        if plain.len() <= max_plain {
            return vec![self.seal_startup_plain(sid, &plain)];
        }
        // §3.4 packet fragmentation
        let id = self.next_packet_id;
        self.next_packet_id += 1;
        let piece = max_plain.saturating_sub(1 + 3 + 1 + 20).max(16);
        let n = plain.len().div_ceil(piece);
        let mut out = Vec::with_capacity(n);
        for (i, part) in plain.chunks(piece).enumerate() {
            let mut p = Vec::with_capacity(piece + 32);
            self.startup_header().encode(&mut p);
            let _ = Chunk::PacketFragment {
                more: i + 1 < n,
                packet_id: id,
                fragment_num: i as u64,
                data: part,
            }
            .encode(&mut p);
            out.push(self.seal_startup_plain(sid, &p));
        }
        out
    }

    /// Startup packets carry a timestamp, as Flash, rtmfp-cpp and librtmfp
    /// send them (flags 0x0b); librtmfp rejects startup packets without one.
    fn startup_header(&self) -> PacketHeader {
        let ts = (self.now.saturating_duration_since(self.epoch).as_millis() / 4) as u16;
        PacketHeader {
            timestamp: Some(ts),
            ..PacketHeader::startup()
        }
    }

    fn seal_startup_plain(&mut self, sid: u32, plain: &[u8]) -> Vec<u8> {
        let mut d = Vec::with_capacity(plain.len() + 4 + self.default_crypto.overhead());
        d.extend_from_slice(&[0; 4]);
        d.extend_from_slice(plain);
        self.default_crypto.encrypt(&mut d, 4);
        let ssid = wire::scramble_session_id(sid, &d[4..]);
        d[..4].copy_from_slice(&ssid.to_be_bytes());
        d
    }

    fn push_startup(&mut self, dst: SocketAddr, datagram: Vec<u8>) {
        if self.startup_queue.len() >= self.config.max_startup_queue {
            self.stats.startup_dropped += 1;
            return;
        }
        self.startup_queue.push_back((dst, datagram));
    }

    fn make_cookie(&self, now: Instant, addr: SocketAddr) -> [u8; COOKIE_LEN] {
        let secs = now.saturating_duration_since(self.epoch).as_secs() as u32;
        let mut c = [0u8; COOKIE_LEN];
        c[..4].copy_from_slice(&secs.to_be_bytes());
        // bytes 4..16: a per-second value derived from the secret (no state)
        let n = hmac(
            &self.cookie_secret,
            &[b"n", &secs.to_be_bytes(), &addr_bytes(addr)],
        );
        c[4..16].copy_from_slice(&n[..12]);
        let m1 = hmac(&self.cookie_secret, &[b"1", &c[..16]]);
        c[16..32].copy_from_slice(&m1[..16]);
        let m2 = hmac(&self.cookie_secret, &[b"2", &c[..32], &addr_bytes(addr)]);
        c[32..].copy_from_slice(&m2);
        c
    }

    fn check_cookie(&self, now: Instant, cookie: &[u8], addr: SocketAddr) -> CookieCheck {
        if cookie.len() != COOKIE_LEN {
            return CookieCheck::Invalid;
        }
        let m1 = hmac(&self.cookie_secret, &[b"1", &cookie[..16]]);
        if !ct_eq(&m1[..16], &cookie[16..32]) {
            return CookieCheck::Invalid;
        }
        let secs = u32::from_be_bytes([cookie[0], cookie[1], cookie[2], cookie[3]]);
        let now_secs = now.saturating_duration_since(self.epoch).as_secs();
        if u64::from(secs) > now_secs
            || now_secs - u64::from(secs) > self.config.cookie_lifetime.as_secs()
        {
            return CookieCheck::Invalid;
        }
        let m2 = hmac(
            &self.cookie_secret,
            &[b"2", &cookie[..32], &addr_bytes(addr)],
        );
        if ct_eq(&m2, &cookie[32..]) {
            CookieCheck::Valid
        } else {
            CookieCheck::WrongAddress
        }
    }

    /// Answers an IHello (or a Forwarded IHello) within the amplification
    /// limit.
    fn send_rhello(&mut self, now: Instant, to: SocketAddr, tag: &[u8]) {
        let cookie = self.make_cookie(now, to);
        let mut c =
            Vec::with_capacity(COOKIE_LEN + tag.len() + self.profile.certificate().len() + 8);
        let _ = Chunk::RHello {
            tag_echo: tag,
            cookie: &cookie,
            certificate: self.profile.certificate(),
        }
        .encode(&mut c);
        if self.queue_startup_limited(to, 0, &c) {
            self.stats.rhellos_sent += 1;
        }
    }

    fn on_ihello(&mut self, now: Instant, from: SocketAddr, epd: &[u8], tag: &[u8]) {
        if tag.len() > 255 {
            return;
        }
        if !self.ihello_limiter.allow(now, from.ip()) {
            self.stats.ihello_rate_drops += 1;
            return;
        }
        if self.config.accept_sessions && self.profile.epd_selects_near(epd) {
            self.send_rhello(now, from, tag);
        } else if self.config.report_foreign_ihello {
            let e = Event::IHelloForOther {
                from,
                epd: Bytes::copy_from_slice(epd),
                tag: Bytes::copy_from_slice(tag),
            };
            self.push_event(e);
        }
    }

    fn on_rhello(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tag: &[u8],
        cookie: &[u8],
        cert: &[u8],
    ) {
        let Ok(tag) = <[u8; TAG_LEN]>::try_from(tag) else {
            return;
        };
        let Some(&sid) = self.tags.get(&tag) else {
            return;
        };
        let Some(o) = self.openings.get(&sid) else {
            return;
        };
        if !matches!(o.phase, Phase::IHello) {
            return;
        }
        if !self.profile.epd_selects(&o.epd, cert) || !self.profile.is_authentic(cert) {
            return;
        }
        if cookie.len() > 1024 || cert.len() > 16384 {
            return;
        }
        // duplicate session check (§3.5.1.1.1): an open session with the
        // same certificate (hence the same canonical EPD)
        if let Some(&existing) = self.by_cert.get(&cert_key(cert)).filter(|id| {
            self.sessions
                .get(id)
                .is_some_and(|s| s.is_open() && s.far_cert[..] == cert[..])
        }) {
            self.fail_opening(sid, OpenError::Duplicate(SessionId(existing)));
            return;
        }
        let handshake = match self.profile.begin_initiator(cert, &mut *self.rng.0) {
            Ok(h) => h,
            Err(e) => {
                self.fail_opening(sid, OpenError::Keying(e.to_string()));
                return;
            }
        };
        let iikeying = Self::build_iikeying(self.profile.certificate(), sid, cookie, &*handshake);
        let retry = self.config.handshake_retry;
        let o = self.openings.get_mut(&sid).expect("present");
        for c in &o.candidates {
            if self.by_addr.get(&c.addr) == Some(&sid) {
                self.by_addr.remove(&c.addr);
            }
        }
        o.phase = Phase::Keying {
            dest: from,
            cookie: cookie.to_vec(),
            far_cert: Bytes::copy_from_slice(cert),
            handshake,
            iikeying: iikeying.clone(),
            next: now + retry,
            interval: retry,
            cookie_changed: false,
            sends: 1,
        };
        self.by_addr.entry(from).or_insert(sid);
        self.queue_startup(from, 0, &iikeying);
        self.schedule(sid);
    }

    fn build_iikeying(
        cert: &[u8],
        sid: u32,
        cookie: &[u8],
        hs: &dyn InitiatorHandshake,
    ) -> Vec<u8> {
        let mut signed = Vec::new();
        wire::encode_iikeying_signed(&mut signed, sid, cookie, cert, hs.skic());
        let signature = hs.sign(&signed);
        let mut c = Vec::with_capacity(signed.len() + signature.len() + 3);
        c.push(wire::chunk_type::IIKEYING);
        c.extend_from_slice(&((signed.len() + signature.len()) as u16).to_be_bytes());
        c.extend_from_slice(&signed);
        c.extend_from_slice(&signature);
        c
    }

    fn on_redirect(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tag: &[u8],
        destinations: &[Address],
    ) {
        let Ok(tag) = <[u8; TAG_LEN]>::try_from(tag) else {
            return;
        };
        let Some(&sid) = self.tags.get(&tag) else {
            return;
        };
        let threshold = self.config.redirect_threshold;
        let retry = self.config.handshake_retry;
        let Some(o) = self.openings.get_mut(&sid) else {
            return;
        };
        if !matches!(o.phase, Phase::IHello) {
            return;
        }
        let implied = [Address {
            addr: from,
            origin: wire::AddressOrigin::Public,
        }];
        let dests = if destinations.is_empty() {
            &implied[..]
        } else {
            destinations
        };
        let mut added = Vec::new();
        for d in dests {
            if o.candidates.len() >= threshold {
                break;
            }
            if o.candidates.iter().any(|c| c.addr == d.addr) {
                continue;
            }
            o.candidates.push(Candidate {
                addr: d.addr,
                next: now + retry,
                interval: retry,
            });
            added.push(d.addr);
        }
        let epd = o.epd.clone();
        let otag = o.tag;
        for a in added {
            self.by_addr.entry(a).or_insert(sid);
            self.send_ihello(a, &epd, &otag);
        }
        self.schedule(sid);
    }

    fn send_ihello(&mut self, to: SocketAddr, epd: &[u8], tag: &[u8]) {
        let mut c = Vec::with_capacity(epd.len() + tag.len() + 8);
        let _ = Chunk::IHello { epd, tag }.encode(&mut c);
        self.queue_startup(to, 0, &c);
    }

    fn on_iikeying(
        &mut self,
        now: Instant,
        from: SocketAddr,
        isid: u32,
        cookie: &[u8],
        k: IIKeyingInput<'_>,
    ) {
        if !self.config.accept_sessions || isid == 0 {
            return;
        }
        match self.check_cookie(now, cookie, from) {
            CookieCheck::Invalid => return,
            CookieCheck::WrongAddress => {
                // §3.5.1.2 cookie change
                let newc = self.make_cookie(now, from);
                let mut c = Vec::new();
                let _ = Chunk::RHelloCookieChange {
                    old_cookie: cookie,
                    new_cookie: &newc,
                }
                .encode(&mut c);
                // the cookie's address differs: this one is not proven
                self.queue_startup_limited(from, isid, &c);
                return;
            }
            CookieCheck::Valid => self.amp.proven(from),
        }
        let digest: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(isid.to_be_bytes());
            h.update((k.certificate.len() as u64).to_be_bytes());
            h.update(k.certificate);
            h.update(k.skic);
            h.finalize().into()
        };
        if let Some(&existing) = self.by_addr.get(&from) {
            if self.openings.contains_key(&existing) {
                // glare (§3.5.1.3): decided again when the keying is done
                if !self.profile.far_prevails(k.certificate) {
                    return;
                }
            } else if let Some(s) = self.sessions.get(&existing) {
                if s.is_open() && s.role == Role::Responder && s.keying_digest == Some(digest) {
                    // retransmitted IIKeying: resend RIKeying
                    if let Some(rik) = s.rikeying.clone() {
                        let ssid = s.ssid;
                        self.queue_startup(from, ssid, &rik);
                    }
                    return;
                }
            }
        }
        if !self.profile.is_authentic(k.certificate) {
            return;
        }
        if self.session_count() >= self.config.max_sessions {
            return;
        }
        let pending = crate::keying::Pending {
            from,
            isid,
            digest,
            certificate: Bytes::copy_from_slice(k.certificate),
            skic: Bytes::copy_from_slice(k.skic),
            signed: Bytes::copy_from_slice(k.signed),
            signature: Bytes::copy_from_slice(k.signature),
            queued: now,
        };
        let (offer, evicted) = self
            .keyings
            .offer(crate::ratelimit::source_key(from.ip()), pending);
        // evicted: other sources' newest jobs, dropped to make room
        self.stats.keyings_dropped += evicted as u64;
        match offer {
            crate::keying::Offer::Queued => self.stats.keyings_queued += 1,
            // a retransmission while the first is queued or running
            crate::keying::Offer::Duplicate => return,
            crate::keying::Offer::Full => {
                self.stats.keyings_dropped += 1;
                return;
            }
        }
        if !self.config.deferred_keying {
            self.run_keyings_inline(now);
        }
    }

    /// Runs the queued keyings here and now (without
    /// [`EndpointConfig::deferred_keying`]).
    fn run_keyings_inline(&mut self, now: Instant) {
        loop {
            let mut expired = 0;
            let next = self.keyings.next(now, &mut expired).map(|(id, p)| {
                let input = IIKeyingInput {
                    certificate: &p.certificate,
                    skic: &p.skic,
                    signed: &p.signed,
                    signature: &p.signature,
                };
                (id, self.profile.respond(input, &mut *self.rng.0))
            });
            self.stats.keyings_dropped += expired as u64;
            let Some((id, outcome)) = next else {
                return;
            };
            if let crate::keying::Finished::Done(p) = self.keyings.finish(now, id) {
                self.finish_keying(now, p, outcome);
            }
        }
    }

    /// The next responder keying to run, with
    /// [`deferred_keying`](EndpointConfig::deferred_keying) (always `None`
    /// without it).
    ///
    /// Run the job anywhere, a worker thread say, with
    /// [`KeyingJob::run`](crate::KeyingJob::run), and hand its result to
    /// [`handle_keying`](Self::handle_keying). Jobs come out round-robin
    /// across sources (an IPv4 address or an IPv6 /64), at most
    /// [`max_keyings_in_flight`](EndpointConfig::max_keyings_in_flight)
    /// at once: once that many are out, this returns `None` until results
    /// come back. A job whose result has not come back within
    /// [`keying_max_wait`](EndpointConfig::keying_max_wait) is forgotten
    /// (its slot freed, its late result ignored). Drain it after every input,
    /// like [`poll_transmit`](Self::poll_transmit).
    pub fn poll_keying(&mut self) -> Option<crate::KeyingJob> {
        if !self.config.deferred_keying {
            return None;
        }
        let now = self.now;
        let mut expired = 0;
        let job = self.keyings.next(now, &mut expired).map(|(id, p)| {
            (
                id,
                p.certificate.clone(),
                p.skic.clone(),
                p.signed.clone(),
                p.signature.clone(),
            )
        });
        self.stats.keyings_dropped += expired as u64;
        let (id, certificate, skic, signed, signature) = job?;
        let mut seed = [0u8; 32];
        self.rng.0.fill_bytes(&mut seed);
        Some(crate::keying::KeyingJob::new(
            id,
            self.profile.clone(),
            certificate,
            skic,
            signed,
            signature,
            seed,
        ))
    }

    /// The result of a job from [`poll_keying`](Self::poll_keying): the
    /// session opens (RIKeying queued for
    /// [`poll_transmit`](Self::poll_transmit), [`Event::SessionOpened`])
    /// unless things changed meanwhile (the initiator's address took
    /// another session, say). A result that comes after
    /// [`keying_max_wait`](EndpointConfig::keying_max_wait) is dropped and
    /// counted in [`EndpointStats::keyings_dropped`]; unknown or repeated
    /// results are ignored.
    pub fn handle_keying(&mut self, now: Instant, result: crate::KeyingResult) {
        self.now = self.now.max(now);
        let (id, outcome) = result.into_parts();
        match self.keyings.finish(now, id) {
            crate::keying::Finished::Done(p) => self.finish_keying(now, p, outcome),
            crate::keying::Finished::Expired => self.stats.keyings_dropped += 1,
            crate::keying::Finished::Unknown => {}
        }
    }

    /// Responder keyings waiting or in flight (taken with
    /// [`poll_keying`](Self::poll_keying) and not yet handed back).
    pub fn keyings_pending(&self) -> usize {
        self.keyings.len()
    }

    /// Responder keyings taken with [`poll_keying`](Self::poll_keying) and
    /// not yet handed back (nor forgotten).
    pub fn keyings_in_flight(&self) -> usize {
        self.keyings.in_flight()
    }

    /// Opens the responder session of a finished keying (§3.5.1.2).
    fn finish_keying(
        &mut self,
        now: Instant,
        p: crate::keying::Pending,
        outcome: Result<Box<dyn crate::crypto::ResponderHandshake>, crate::CryptoError>,
    ) {
        self.stats.keyings_done += 1;
        let Ok(hs) = outcome else {
            return;
        };
        let from = p.from;
        let certificate = &p.certificate[..];
        let mut reuse_sid: Option<u32> = None;
        if let Some(&existing) = self.by_addr.get(&from) {
            if self.openings.contains_key(&existing) {
                // glare (§3.5.1.3)
                if !self.profile.far_prevails(certificate) {
                    return;
                }
                self.remove_opening(existing);
                reuse_sid = Some(existing);
            } else if let Some(s) = self.sessions.get(&existing) {
                if s.is_open() {
                    if s.role == Role::Responder && s.keying_digest == Some(p.digest) {
                        // opened meanwhile by the same IIKeying
                        return;
                    }
                    if !self.profile.overrides(&s.far_cert, certificate) {
                        return;
                    }
                    // the old session is stale: close it (fast reconnection)
                    let (mut ctx, sessions) = self.ctx();
                    if let Some(s) = sessions.get_mut(&existing) {
                        s.abort(CloseReason::Overridden, &mut ctx);
                    }
                    self.mark_ready(existing);
                    self.after_session(existing);
                    self.by_addr.remove(&from);
                }
            }
        }
        // any other open session with an identity this one overrides
        let stale: Option<u32> = self
            .by_cert
            .get(&cert_key(certificate))
            .copied()
            .filter(|id| {
                self.sessions.get(id).is_some_and(|s| {
                    s.is_open()
                        && s.far_cert[..] == certificate[..]
                        && self.profile.overrides(&s.far_cert, certificate)
                        && s.far_addr != from
                })
            });
        if self.session_count() >= self.config.max_sessions {
            return;
        }
        if let Some(id) = stale {
            let (mut ctx, sessions) = self.ctx();
            if let Some(s) = sessions.get_mut(&id) {
                s.abort(CloseReason::Overridden, &mut ctx);
            }
            self.mark_ready(id);
            self.after_session(id);
        }
        let rsid = match reuse_sid.or_else(|| self.new_session_id()) {
            Some(r) => r,
            None => return,
        };
        let mut signed = Vec::new();
        wire::encode_rikeying_signed(&mut signed, rsid, hs.skrc());
        let mut to_sign = signed.clone();
        to_sign.extend_from_slice(&p.skic);
        let signature = hs.sign(&to_sign);
        let mut rik = Vec::with_capacity(signed.len() + signature.len() + 3);
        rik.push(wire::chunk_type::RIKEYING);
        rik.extend_from_slice(&((signed.len() + signature.len()) as u16).to_be_bytes());
        rik.extend_from_slice(&signed);
        rik.extend_from_slice(&signature);
        let keys = hs.into_keys();
        let mut mob = [0u8; 16];
        self.rng.0.fill_bytes(&mut mob);
        let mut s = Session::new(
            rsid,
            p.isid,
            Role::Responder,
            from,
            p.certificate.clone(),
            keys,
            mob,
            now,
            &self.config,
        );
        s.keying_digest = Some(p.digest);
        s.rikeying = Some(Bytes::from(rik.clone()));
        self.sessions.insert(rsid, Box::new(s));
        self.by_addr.insert(from, rsid);
        self.by_cert.insert(cert_key(certificate), rsid);
        self.queue_startup(from, p.isid, &rik);
        self.stats.sessions_accepted += 1;
        self.push_event(Event::SessionOpened {
            session: SessionId(rsid),
            role: Role::Responder,
            peer: from,
        });
        self.schedule(rsid);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_rikeying(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sid: u32,
        rsid: u32,
        skrc: &[u8],
        signed: &[u8],
        signature: &[u8],
    ) {
        let Some(o) = self.openings.get(&sid) else {
            return;
        };
        let Phase::Keying { dest, .. } = &o.phase else {
            return;
        };
        let dest = *dest;
        if rsid == 0 {
            return;
        }
        let mut o = self.remove_opening(sid).expect("present");
        let Phase::Keying {
            handshake,
            far_cert,
            ..
        } = std::mem::replace(&mut o.phase, Phase::IHello)
        else {
            return;
        };
        let mut responder_signed = signed.to_vec();
        responder_signed.extend_from_slice(handshake.skic());
        match handshake.complete(skrc, &responder_signed, signature) {
            Ok(keys) => {
                let mut mob = [0u8; 16];
                self.rng.0.fill_bytes(&mut mob);
                let _ = from;
                self.by_cert.insert(cert_key(&far_cert), sid);
                let s = Session::new(
                    sid,
                    rsid,
                    Role::Initiator,
                    dest,
                    far_cert,
                    keys,
                    mob,
                    now,
                    &self.config,
                );
                self.sessions.insert(sid, Box::new(s));
                self.by_addr.insert(dest, sid);
                self.stats.sessions_initiated += 1;
                self.push_event(Event::SessionOpened {
                    session: SessionId(sid),
                    role: Role::Initiator,
                    peer: dest,
                });
                self.mark_ready(sid);
                self.schedule(sid);
            }
            Err(e) => {
                if !o.fell_back {
                    if let Some(what) = self.profile.fall_back() {
                        tracing::warn!(
                            responder = %dest,
                            error = %e,
                            "RIKeying refused; retrying with {what}"
                        );
                        o.armed = None;
                        self.openings.insert(sid, o);
                        self.restart_opening(now, sid, dest);
                        return;
                    }
                }
                self.push_event(Event::SessionFailed {
                    session: SessionId(sid),
                    error: OpenError::Keying(e.to_string()),
                });
            }
        }
    }

    /// A random initiator tag no opening uses.
    fn fresh_tag(&mut self) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        loop {
            self.rng.0.fill_bytes(&mut tag);
            if !self.tags.contains_key(&tag) {
                return tag;
            }
        }
    }

    /// Starts an opening again from a new IHello to `dest` (the responder
    /// that answered the first one), after the profile fell back; the open
    /// timeout still counts from the first IHello.
    fn restart_opening(&mut self, now: Instant, sid: u32, dest: SocketAddr) {
        let tag = self.fresh_tag();
        let retry = self.config.handshake_retry;
        let Some(o) = self.openings.get_mut(&sid) else {
            return;
        };
        let old = std::mem::replace(&mut o.tag, tag);
        o.fell_back = true;
        o.phase = Phase::IHello;
        o.candidates = vec![Candidate {
            addr: dest,
            next: now + retry,
            interval: retry,
        }];
        let epd = o.epd.clone();
        self.tags.remove(&old);
        self.tags.insert(tag, sid);
        self.by_addr.retain(|_, v| *v != sid);
        self.by_addr.entry(dest).or_insert(sid);
        self.send_ihello(dest, &epd, &tag);
        self.schedule(sid);
    }

    fn on_cookie_change(&mut self, now: Instant, sid: u32, old: &[u8], new: &[u8]) {
        if new.is_empty() || new.len() > 1024 {
            return;
        }
        let cert = self.profile.certificate().to_vec();
        let Some(o) = self.openings.get_mut(&sid) else {
            return;
        };
        let Phase::Keying {
            dest,
            cookie,
            handshake,
            iikeying,
            next,
            cookie_changed,
            ..
        } = &mut o.phase
        else {
            return;
        };
        if *cookie_changed || cookie.as_slice() != old {
            return;
        }
        *cookie_changed = true;
        *cookie = new.to_vec();
        *iikeying = Self::build_iikeying(&cert, sid, new, &**handshake);
        *next = now + self.config.handshake_retry;
        let (dest, ik) = (*dest, iikeying.clone());
        self.queue_startup(dest, 0, &ik);
        self.schedule(sid);
    }

    fn opening_deadline(o: &Opening, config: &EndpointConfig) -> Instant {
        let mut t = o.started + config.open_timeout;
        match &o.phase {
            Phase::IHello => {
                for c in &o.candidates {
                    t = t.min(c.next);
                }
            }
            Phase::Keying { next, .. } => t = t.min(*next),
        }
        t
    }

    fn opening_timeout(&mut self, now: Instant, sid: u32) {
        let open_timeout = self.config.open_timeout;
        let Some(o) = self.openings.get_mut(&sid) else {
            return;
        };
        if now >= o.started + open_timeout {
            self.fail_opening(sid, OpenError::Timeout);
            return;
        }
        let grow = |d: Duration| {
            (d.mul_f64(1.5))
                .max(d + Duration::from_millis(1500))
                .min(Duration::from_secs(30))
        };
        let mut ihellos = Vec::new();
        let mut iikeying = None;
        if let Phase::Keying {
            dest, next, sends, ..
        } = &o.phase
        {
            if *next <= now && *sends >= KEYING_SENDS_BEFORE_FALLBACK && !o.fell_back {
                let dest = *dest;
                let sends = *sends;
                if let Some(what) = self.profile.fall_back() {
                    tracing::warn!(
                        responder = %dest,
                        "no answer to {sends} IIKeyings; retrying with {what}"
                    );
                    self.restart_opening(now, sid, dest);
                    return;
                }
            }
        }
        let Some(o) = self.openings.get_mut(&sid) else {
            return;
        };
        match &mut o.phase {
            Phase::IHello => {
                for c in &mut o.candidates {
                    if c.next <= now {
                        ihellos.push(c.addr);
                        c.interval = grow(c.interval);
                        c.next = now + c.interval;
                    }
                }
            }
            Phase::Keying {
                dest,
                iikeying: ik,
                next,
                interval,
                sends,
                ..
            } => {
                if *next <= now {
                    *sends += 1;
                    iikeying = Some((*dest, ik.clone()));
                    *interval = grow(*interval);
                    *next = now + *interval;
                }
            }
        }
        let (epd, tag) = (o.epd.clone(), o.tag);
        for a in ihellos {
            self.send_ihello(a, &epd, &tag);
        }
        if let Some((d, ik)) = iikeying {
            self.queue_startup(d, 0, &ik);
        }
        self.schedule(sid);
    }

    fn remove_opening(&mut self, sid: u32) -> Option<Opening> {
        let o = self.openings.remove(&sid)?;
        self.tags.remove(&o.tag);
        self.by_addr.retain(|_, v| *v != sid);
        Some(o)
    }

    fn fail_opening(&mut self, sid: u32, error: OpenError) {
        if self.remove_opening(sid).is_some() {
            self.push_event(Event::SessionFailed {
                session: SessionId(sid),
                error,
            });
        }
    }

    // ----- user API -------------------------------------------------------

    /// Opens a session (as initiator) to the endpoint named by `epd`,
    /// sending IHellos to every candidate address at once; the first
    /// acceptable answer wins (§3.5.1.7). Completion is reported as
    /// [`Event::SessionOpened`] or [`Event::SessionFailed`].
    pub fn connect(
        &mut self,
        now: Instant,
        epd: &[u8],
        candidates: &[SocketAddr],
    ) -> Result<SessionId, Error> {
        self.now = self.now.max(now);
        if candidates.is_empty() {
            return Err(Error::NoAddress);
        }
        if epd.len() > 8192 {
            return Err(Error::TooLarge);
        }
        if self.session_count() >= self.config.max_sessions {
            return Err(Error::TooManySessions);
        }
        let sid = self.new_session_id().ok_or(Error::TooManySessions)?;
        let tag = self.fresh_tag();
        let retry = self.config.handshake_retry;
        let mut o = Opening {
            epd: epd.to_vec(),
            tag,
            started: now,
            candidates: Vec::new(),
            phase: Phase::IHello,
            armed: None,
            fell_back: false,
        };
        for &a in candidates.iter().take(self.config.redirect_threshold) {
            if !o.candidates.iter().any(|c| c.addr == a) {
                o.candidates.push(Candidate {
                    addr: a,
                    next: now + retry,
                    interval: retry,
                });
            }
        }
        let addrs: Vec<SocketAddr> = o.candidates.iter().map(|c| c.addr).collect();
        self.openings.insert(sid, o);
        self.tags.insert(tag, sid);
        for a in addrs {
            self.by_addr.entry(a).or_insert(sid);
            self.send_ihello(a, epd, &tag);
        }
        self.schedule(sid);
        Ok(SessionId(sid))
    }

    /// Adds a candidate address to an opening session.
    pub fn add_candidate(
        &mut self,
        now: Instant,
        session: SessionId,
        addr: SocketAddr,
    ) -> Result<(), Error> {
        self.now = self.now.max(now);
        let retry = self.config.handshake_retry;
        let threshold = self.config.redirect_threshold;
        let o = self.openings.get_mut(&session.0).ok_or(Error::NoSession)?;
        if !matches!(o.phase, Phase::IHello) || o.candidates.len() >= threshold {
            return Ok(());
        }
        if o.candidates.iter().any(|c| c.addr == addr) {
            return Ok(());
        }
        o.candidates.push(Candidate {
            addr,
            next: now + retry,
            interval: retry,
        });
        let (epd, tag) = (o.epd.clone(), o.tag);
        self.by_addr.entry(addr).or_insert(session.0);
        self.send_ihello(addr, &epd, &tag);
        self.schedule(session.0);
        Ok(())
    }

    fn session_mut(&mut self, session: SessionId) -> Result<&mut Session, Error> {
        self.sessions
            .get_mut(&session.0)
            .map(|s| &mut **s)
            .ok_or(Error::NoSession)
    }

    /// Opens a sending flow with the user's metadata, optionally in return
    /// to a receiving flow (§3.6.2.1). Returns its flow ID.
    pub fn open_flow(
        &mut self,
        _now: Instant,
        session: SessionId,
        metadata: &[u8],
        association: Option<u64>,
        priority: Priority,
    ) -> Result<u64, Error> {
        // disjoint borrows of the session table and the configuration
        self.sessions
            .get_mut(&session.0)
            .ok_or(Error::NoSession)?
            .open_flow(metadata, association, priority, &self.config)
    }

    /// Queues a message on a sending flow. With `lifetime`, the message is
    /// abandoned if not delivered in time (partial reliability). Returns
    /// [`Error::WouldBlock`] when the flow's send buffer is full; an
    /// [`Event::Writable`] follows when there is room again.
    pub fn send(
        &mut self,
        now: Instant,
        session: SessionId,
        flow: u64,
        data: Bytes,
        lifetime: Option<Duration>,
    ) -> Result<(), Error> {
        let s = self.sessions.get_mut(&session.0).ok_or(Error::NoSession)?;
        s.send(now, flow, data, lifetime, &self.config)?;
        self.mark_ready(session.0);
        self.schedule(session.0);
        Ok(())
    }

    /// Room left in a sending flow's buffer (bytes).
    pub fn send_buffer_available(&self, session: SessionId, flow: u64) -> Option<usize> {
        self.sessions
            .get(&session.0)?
            .send_buffer_available(flow, &self.config)
    }

    /// Closes a sending flow once everything queued is delivered or
    /// abandoned (§3.6.2.11).
    pub fn close_flow(
        &mut self,
        _now: Instant,
        session: SessionId,
        flow: u64,
    ) -> Result<(), Error> {
        self.session_mut(session)?.close_flow(flow)?;
        self.mark_ready(session.0);
        self.schedule(session.0);
        Ok(())
    }

    /// Reads the next complete message of a receiving flow.
    pub fn read(&mut self, _now: Instant, session: SessionId, flow: u64) -> Option<RecvMessage> {
        let (mut ctx, sessions) = self.ctx();
        let s = sessions.get_mut(&session.0)?;
        let m = s.read(flow, &mut ctx);
        self.mark_ready(session.0);
        m
    }

    /// Sets receiving-flow options: unordered delivery, buffer capacity,
    /// suspended delivery.
    pub fn set_recv_flow_options(
        &mut self,
        session: SessionId,
        flow: u64,
        ordered: Option<bool>,
        capacity: Option<usize>,
        paused: Option<bool>,
    ) -> Result<(), Error> {
        let (mut ctx, sessions) = self.ctx();
        sessions
            .get_mut(&session.0)
            .ok_or(Error::NoSession)?
            .set_recv_options(flow, ordered, capacity, paused, &mut ctx)?;
        self.mark_ready(session.0);
        Ok(())
    }

    /// Rejects a receiving flow with an exception code (§3.6.3.7).
    pub fn reject_flow(
        &mut self,
        _now: Instant,
        session: SessionId,
        flow: u64,
        code: u64,
    ) -> Result<(), Error> {
        self.session_mut(session)?.reject_flow(flow, code)?;
        self.mark_ready(session.0);
        Ok(())
    }

    /// Closes a session in an orderly way (§3.5.5), or cancels an opening one.
    pub fn close_session(&mut self, now: Instant, session: SessionId) {
        if self.openings.contains_key(&session.0) {
            self.fail_opening(session.0, OpenError::Cancelled);
            return;
        }
        let (mut ctx, sessions) = self.ctx();
        if let Some(s) = sessions.get_mut(&session.0) {
            s.close(now, &mut ctx);
            self.mark_ready(session.0);
            self.schedule(session.0);
        }
    }

    /// Closes a session abruptly (a Close Ack is sent).
    pub fn abort_session(&mut self, _now: Instant, session: SessionId) {
        if self.openings.contains_key(&session.0) {
            self.fail_opening(session.0, OpenError::Cancelled);
            return;
        }
        let (mut ctx, sessions) = self.ctx();
        if let Some(s) = sessions.get_mut(&session.0) {
            s.abort(CloseReason::Aborted, &mut ctx);
            self.mark_ready(session.0);
        }
    }

    /// Overrides the keepalive interval of one open session (e.g. as told
    /// by a server with RFC 7425 §5.3.4 "Set Keepalive Timers", user
    /// control event 41): a Ping is sent after this long without receiving
    /// anything. Values under 1 s are raised to 1 s. Takes effect at once.
    pub fn set_keepalive(
        &mut self,
        session: SessionId,
        keepalive_interval: Duration,
    ) -> Result<(), Error> {
        self.session_mut(session)?.set_keepalive(keepalive_interval);
        self.mark_ready(session.0);
        self.schedule(session.0);
        Ok(())
    }

    /// Overrides the idle timeout of one open session: it is closed
    /// ([`CloseReason::IdleTimeout`]) after this long without receiving
    /// anything. Values under 1 s are raised to 1 s. Takes effect at once.
    pub fn set_idle_timeout(
        &mut self,
        session: SessionId,
        idle_timeout: Duration,
    ) -> Result<(), Error> {
        self.session_mut(session)?.set_idle_timeout(idle_timeout);
        self.schedule(session.0);
        Ok(())
    }

    /// The smoothed round-trip time of a session, if measured: a cheap
    /// read for per-message decisions (no [`SessionInfo`] snapshot).
    pub fn srtt(&self, session: SessionId) -> Option<Duration> {
        self.sessions.get(&session.0).and_then(|s| s.srtt())
    }

    /// A snapshot of an open or closing session.
    pub fn session_info(&self, session: SessionId) -> Option<SessionInfo> {
        self.sessions.get(&session.0).map(|s| s.info())
    }

    /// Finds the open session whose far certificate the EPD selects.
    pub fn find_session_by_epd(&self, epd: &[u8]) -> Option<SessionId> {
        self.sessions
            .iter()
            .find(|(_, s)| s.is_open() && self.profile.epd_selects(epd, &s.far_cert))
            .map(|(k, _)| SessionId(*k))
    }

    /// Redirector (§3.5.1.4): answers an IHello from `to` with a Redirect
    /// listing `destinations` (an empty list is an Implied Redirect).
    ///
    /// The Redirect is one datagram of at most
    /// [`max_datagram_size`](EndpointConfig::max_datagram_size) bytes and,
    /// as `to` is not proven, within the amplification limit: at most
    /// [`amplification_factor`](EndpointConfig::amplification_factor) times
    /// the smallest datagram that can carry an IHello with this `tag` (the
    /// engine keeps nothing of the IHello itself). With the RFC 7425
    /// profile and a 16-byte tag that datagram is 36 bytes, so at a
    /// factor of 4 a Redirect holds up to 14 IPv4 or 5 IPv6
    /// addresses (PlainProfile: 44 bytes, 18 IPv4 or 6 IPv6 addresses).
    /// Trailing destinations that do not fit are left out.
    ///
    /// Returns how many of `destinations` were sent (`Some(0)` for an
    /// Implied Redirect), or `None` when nothing was sent: not even one
    /// destination fits (counted in
    /// [`EndpointStats::amplification_drops`]), the tag is longer than 255
    /// bytes, or the startup queue is full.
    pub fn send_redirect(
        &mut self,
        to: SocketAddr,
        tag: &[u8],
        destinations: &[Address],
    ) -> Option<usize> {
        if tag.len() > 255 {
            return None;
        }
        let header = crate::amplification::wire_overhead(to);
        let limit = self
            .amp
            .allowance(to)
            .saturating_sub(header)
            .min(self.config.max_datagram_size);
        // header (flags, timestamp), chunk header, tag length and tag
        let fixed = 4 + self.default_crypto.overhead() + 3 + 3 + 1 + tag.len();
        let mut n = 0;
        let mut used = fixed;
        for d in destinations {
            used += d.encoded_len();
            if used > limit {
                break;
            }
            n += 1;
        }
        loop {
            let mut c = Vec::new();
            let chunk = Chunk::Redirect {
                tag_echo: tag,
                destinations: destinations[..n].to_vec(),
            };
            if chunk.encode(&mut c).is_err() {
                return None;
            }
            let datagrams = self.seal_startup(0, &c);
            let size: usize = datagrams.iter().map(Vec::len).sum();
            if datagrams.len() == 1 && size <= limit && (n > 0 || destinations.is_empty()) {
                let queued = self.startup_queue.len();
                self.amp.spent(to, size + header);
                for d in datagrams {
                    self.push_startup(to, d);
                }
                if self.startup_queue.len() == queued {
                    return None;
                }
                self.stats.redirects_sent += 1;
                return Some(n);
            }
            if n <= 1 {
                self.stats.amplification_drops += 1;
                return None;
            }
            // overhead() is an upper bound, so this is rarely reached
            n -= 1;
        }
    }

    /// Forwarder (§3.5.1.5): sends a Forwarded IHello over `session` on
    /// behalf of an initiator at `reply_to`.
    pub fn forward_ihello(
        &mut self,
        _now: Instant,
        session: SessionId,
        epd: &[u8],
        reply_to: SocketAddr,
        tag: &[u8],
    ) -> Result<(), Error> {
        self.session_mut(session)?
            .queue_fihello(epd, reply_to, tag)?;
        self.stats.fihellos_sent += 1;
        self.mark_ready(session.0);
        Ok(())
    }
}

fn s_decrypt(s: &mut Session, buf: &mut [u8]) -> Option<std::ops::Range<usize>> {
    s.crypto.decrypt(buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PlainProfile;
    use rand_core::SeedableRng;

    fn ep(name: &str, config: EndpointConfig, seed: u64, now: Instant) -> Endpoint {
        Endpoint::new(
            config,
            Box::new(PlainProfile::new(name)),
            Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
            now,
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn drain(e: &mut Endpoint, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(d) = e.poll_transmit(now, &mut buf) {
            out.push((d, buf.clone()));
        }
        out
    }

    /// Lets `a` (at `aa`) and `b` (at `ba`) exchange datagrams until quiet.
    fn shuttle(a: &mut Endpoint, aa: SocketAddr, b: &mut Endpoint, ba: SocketAddr, now: Instant) {
        for _ in 0..20 {
            let x = drain(a, now);
            let y = drain(b, now);
            if x.is_empty() && y.is_empty() {
                return;
            }
            for (_, d) in x {
                b.handle_datagram(now, aa, &d);
            }
            for (_, d) in y {
                a.handle_datagram(now, ba, &d);
            }
        }
    }

    /// The IHello datagram `a` sends to connect to "b".
    fn ihello(a: &mut Endpoint, now: Instant, to: SocketAddr) -> Vec<u8> {
        a.connect(now, b"b", &[to]).unwrap();
        let mut d = drain(a, now);
        assert_eq!(d.len(), 1);
        d.pop().unwrap().1
    }

    #[test]
    fn rhello_over_the_amplification_limit_is_not_sent() {
        let now = Instant::now();
        let (aa, ba) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        // counted in wire bytes (IPv4: payload + 28): 74 in, 139 out
        for (factor, answered) in [(1, false), (2, true), (3, true), (0, true)] {
            let config = EndpointConfig {
                amplification_factor: factor,
                ..EndpointConfig::default()
            };
            let mut a = ep("a", EndpointConfig::default(), 1, now);
            let mut b = ep("b", config, 2, now);
            let ih = ihello(&mut a, now, ba);
            b.handle_datagram(now, aa, &ih);
            let out = drain(&mut b, now);
            assert_eq!(!out.is_empty(), answered, "factor {factor}");
            if let Some((_, rh)) = out.first() {
                // PlainProfile, 16-byte tag, 1-byte certificate: 46 and 111 bytes
                assert_eq!((ih.len(), rh.len()), (46, 111));
                assert!(factor == 0 || rh.len() + 28 <= factor * (ih.len() + 28));
            }
            let st = b.stats();
            assert_eq!(st.rhellos_sent, u64::from(answered));
            assert_eq!(st.amplification_drops, u64::from(!answered));
        }
    }

    #[test]
    fn rikeying_is_not_limited_and_sessions_open_at_factor_4() {
        let now = Instant::now();
        let (aa, ba) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        let mut a = ep("a", EndpointConfig::default(), 1, now);
        let config = EndpointConfig {
            amplification_factor: 4,
            ..EndpointConfig::default()
        };
        let mut b = ep("b", config, 2, now);
        let s = a.connect(now, b"b", &[ba]).unwrap();
        shuttle(&mut a, aa, &mut b, ba, now);
        assert!(a.session_info(s).is_some_and(|i| i.open));
        assert_eq!(b.stats().amplification_drops, 0);
    }

    fn foreign_ihello(now: Instant) -> (Endpoint, SocketAddr, Bytes) {
        let config = EndpointConfig {
            amplification_factor: 4,
            report_foreign_ihello: true,
            accept_sessions: false,
            ..EndpointConfig::default()
        };
        let mut r = ep("redirector", config, 3, now);
        let mut a = ep("a", EndpointConfig::default(), 1, now);
        let aa = addr("192.0.2.1:1");
        let ih = ihello(&mut a, now, addr("192.0.2.9:9"));
        r.handle_datagram(now, aa, &ih);
        let tag = std::iter::from_fn(|| r.poll_event())
            .find_map(|e| match e {
                Event::IHelloForOther { tag, .. } => Some(tag),
                _ => None,
            })
            .unwrap();
        (r, aa, tag)
    }

    fn v4(i: u16) -> Address {
        Address {
            addr: SocketAddr::from(([203, 0, 113, i as u8], 1000 + i)),
            origin: wire::AddressOrigin::Public,
        }
    }

    fn v6(i: u16) -> Address {
        Address {
            addr: SocketAddr::from((std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i), i)),
            origin: wire::AddressOrigin::Public,
        }
    }

    #[test]
    fn redirect_is_capped_to_fit_the_amplification_limit() {
        let now = Instant::now();
        // the IHello from `a` (PlainProfile, 16-byte tag, EPD "b") is 46
        // bytes, 74 on the wire: at factor 4 everything sent back to it
        // totals <= 296 wire bytes, one datagram of <= 268 bytes
        let (mut r, aa, tag) = foreign_ihello(now);
        let many: Vec<Address> = (1..=40).map(v4).collect();
        let n = r.send_redirect(aa, &tag, &many).unwrap();
        assert!((28..=33).contains(&n), "{n}");
        let out = drain(&mut r, now);
        assert_eq!(out.len(), 1);
        let first = out[0].1.len();
        assert!(first + 28 <= 296, "{first}");
        // the allowance is cumulative: little is left for a second answer
        let six: Vec<Address> = (1..=40).map(v6).collect();
        assert_eq!(r.send_redirect(aa, &tag, &six), None);
        assert_eq!(r.stats().amplification_drops, 1);
        // a retransmitted IHello earns more
        let (mut r, aa, tag) = foreign_ihello(now);
        assert_eq!(r.send_redirect(aa, &tag, &many[..3]), Some(3));
        assert_eq!(r.send_redirect(aa, &tag, &[]), Some(0));
        assert_eq!(drain(&mut r, now).len(), 2);
        assert_eq!(r.stats().redirects_sent, 2);
        assert_eq!(r.send_redirect(aa, &[7; 256], &many), None, "tag too long");
        // an address that sent nothing gets nothing
        assert_eq!(r.send_redirect(addr("192.0.2.77:7"), &tag, &many), None);
        // without a limit only the datagram size caps the list
        let config = EndpointConfig {
            amplification_factor: 0,
            ..EndpointConfig::default()
        };
        let mut r = ep("redirector", config, 3, now);
        let n = r.send_redirect(aa, &tag, &(1..=400).map(v4).collect::<Vec<_>>());
        assert_eq!(n, Some(165));
        assert!(drain(&mut r, now).iter().all(|(_, d)| d.len() <= 1200));
    }

    #[test]
    fn short_ihellos_are_answered_once_enough_was_received() {
        // counted over all the datagrams of an address, as QUIC does: at
        // factor 1 one 46-byte IHello (74 wire bytes) allows 74, less than
        // the 111-byte RHello (139); its retransmission brings it to 148
        let now = Instant::now();
        let (aa, ba) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        let config = EndpointConfig {
            amplification_factor: 1,
            ..EndpointConfig::default()
        };
        let mut a = ep("a", EndpointConfig::default(), 1, now);
        let mut b = ep("b", config, 2, now);
        let ih = ihello(&mut a, now, ba);
        b.handle_datagram(now, aa, &ih);
        assert!(drain(&mut b, now).is_empty());
        b.handle_datagram(now, aa, &ih);
        let out = drain(&mut b, now);
        assert_eq!(out.len(), 1);
        assert!(out[0].1.len() + 28 <= 2 * (ih.len() + 28));
        // the cookie proves the address: the handshake completes
        a.handle_datagram(now, ba, &out[0].1);
        shuttle(&mut a, aa, &mut b, ba, now);
        assert_eq!(b.stats().sessions_accepted, 1);
    }

    #[test]
    fn ihello_flood_from_one_source_is_rate_limited() {
        let now = Instant::now();
        let mut a = ep("a", EndpointConfig::default(), 1, now);
        let limited = EndpointConfig {
            ihello_rate_per_source: 20,
            ihello_burst_per_source: 40,
            ..EndpointConfig::default()
        };
        let mut b = ep("b", limited, 2, now);
        let ih = ihello(&mut a, now, addr("192.0.2.2:2"));
        for port in 0..100 {
            // one host, any port
            b.handle_datagram(now, SocketAddr::from(([198, 51, 100, 7], port)), &ih);
        }
        assert_eq!(drain(&mut b, now).len(), 40);
        assert_eq!(b.stats().ihello_rate_drops, 60);
        // other sources are answered
        b.handle_datagram(now, addr("198.51.100.8:1"), &ih);
        assert_eq!(drain(&mut b, now).len(), 1);
        // 20 per second refill
        let later = now + Duration::from_millis(500);
        for _ in 0..100 {
            b.handle_datagram(later, addr("198.51.100.7:1"), &ih);
        }
        assert_eq!(drain(&mut b, later).len(), 10);
        // 0 = unlimited (the default)
        let mut c = ep("b", EndpointConfig::default(), 2, now);
        for _ in 0..100 {
            c.handle_datagram(now, addr("198.51.100.7:1"), &ih);
        }
        assert_eq!(drain(&mut c, now).len(), 100);
        assert_eq!(c.stats().ihello_rate_drops, 0);
    }

    fn open_pair(
        now: Instant,
        ca: EndpointConfig,
        cb: EndpointConfig,
    ) -> (
        Endpoint,
        SocketAddr,
        SessionId,
        Endpoint,
        SocketAddr,
        SessionId,
    ) {
        let (aa, ba) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        let mut a = ep("a", ca, 1, now);
        let mut b = ep("b", cb, 2, now);
        let sa = a.connect(now, b"b", &[ba]).unwrap();
        shuttle(&mut a, aa, &mut b, ba, now);
        let sb = b.sessions().next().unwrap();
        assert!(a.session_info(sa).unwrap().open);
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
        (a, aa, sa, b, ba, sb)
    }

    #[test]
    fn per_session_keepalive_and_idle_timeout() {
        let t0 = Instant::now();
        let (mut a, aa, sa, mut b, ba, sb) =
            open_pair(t0, EndpointConfig::default(), EndpointConfig::default());
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(
            a.set_keepalive(SessionId(12345), Duration::from_secs(2)),
            Err(Error::NoSession)
        );
        a.set_keepalive(sa, Duration::from_secs(2)).unwrap();
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        // a pings b every 2 s of silence; b answers, so both stay open
        let mut now = t0;
        let mut pings = 0;
        for _ in 0..15 {
            now += Duration::from_secs(1);
            a.handle_timeout(now);
            b.handle_timeout(now);
            let out = drain(&mut a, now);
            pings += out.len();
            for (_, d) in out {
                b.handle_datagram(now, aa, &d);
            }
            for (_, d) in drain(&mut b, now) {
                a.handle_datagram(now, ba, &d);
            }
        }
        assert!(pings >= 6, "{pings} pings in 15 s");
        assert!(b.session_info(sb).unwrap().open);
        // values under 1 s are raised to 1 s
        a.set_keepalive(sa, Duration::ZERO).unwrap();
        let t = a.poll_timeout().unwrap();
        assert!(t >= now, "{:?}", t.saturating_duration_since(now));
        // b's idle timeout shortened to 5 s: a silent a is dropped then
        b.set_idle_timeout(sb, Duration::from_secs(5)).unwrap();
        let deadline = b.poll_timeout().unwrap();
        assert!(deadline <= now + Duration::from_secs(5));
        now += Duration::from_secs(5);
        b.handle_timeout(now);
        let _ = drain(&mut b, now);
        assert!(std::iter::from_fn(|| b.poll_event()).any(|e| matches!(
            e,
            Event::SessionClosed {
                reason: CloseReason::IdleTimeout,
                ..
            }
        )));
    }

    #[test]
    fn session_ids_carry_the_shard_and_datagrams_route_to_it() {
        let now = Instant::now();
        for bits in [1u8, 4, 8, 16] {
            let shard = (1u32 << bits) - 1;
            let config = EndpointConfig {
                shard_bits: bits,
                shard,
                ..EndpointConfig::default()
            };
            let mut e = ep("a", config, u64::from(bits), now);
            for i in 0..50u16 {
                let s = e
                    .connect(now, b"b", &[SocketAddr::from(([192, 0, 2, 1], i))])
                    .unwrap();
                assert_eq!(s.0 >> (32 - u32::from(bits)), shard);
                assert_ne!(s.0, 0);
            }
        }
        // shard numbers beyond the bits are masked, not spilled
        let config = EndpointConfig {
            shard_bits: 2,
            shard: 6,
            ..EndpointConfig::default()
        };
        let mut e = ep("a", config, 9, now);
        let s = e.connect(now, b"b", &[addr("192.0.2.1:1")]).unwrap();
        assert_eq!(s.0 >> 30, 2);

        // two shards of a server (the responder) and a client
        let cs = addr("192.0.2.2:2");
        let shard_cfg = |shard| EndpointConfig {
            shard_bits: 4,
            shard,
            ..EndpointConfig::default()
        };
        let mut shards = [
            ep("b", shard_cfg(0), 10, now),
            ep("b", shard_cfg(9), 11, now),
        ];
        let mut clients: Vec<Endpoint> = (0..8)
            .map(|i| ep(&format!("a{i}"), EndpointConfig::default(), 20 + i, now))
            .collect();
        let mut sessions = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            let from = SocketAddr::from(([198, 51, 100, i as u8], 5000));
            let s = c.connect(now, b"b", &[cs]).unwrap();
            sessions.push(s);
            for _ in 0..4 {
                for (_, d) in drain(c, now) {
                    // startup packets: any shard (here: by client)
                    let shard = match datagram_shard(&d, 4) {
                        None => i % 2,
                        Some(0) => 0,
                        Some(9) => 1,
                        Some(x) => panic!("shard {x}"),
                    };
                    shards[shard].handle_datagram(now, from, &d);
                }
                for sh in shards.iter_mut() {
                    for (_, d) in drain(sh, now) {
                        c.handle_datagram(now, cs, &d);
                    }
                }
            }
            assert!(c.session_info(s).is_some_and(|x| x.open), "client {i}");
        }
        assert_eq!(shards[0].sessions().count(), 4);
        assert_eq!(shards[1].sessions().count(), 4);
        assert!(shards[0].sessions().all(|s| s.0 >> 28 == 0));
        assert!(shards[1].sessions().all(|s| s.0 >> 28 == 9));
        // an ordinary packet for a session another shard owns is dropped
        // quietly by the wrong shard
        let c = &mut clients[1]; // its session is on shard 1
        let f = c
            .open_flow(now, sessions[1], b"m", None, Priority::ROUTINE)
            .unwrap();
        c.send(now, sessions[1], f, Bytes::from_static(b"hello"), None)
            .unwrap();
        let d = drain(c, now);
        assert_eq!(d.len(), 1);
        assert_eq!(datagram_shard(&d[0].1, 4), Some(9));
        for sh in shards.iter_mut() {
            while sh.poll_event().is_some() {}
        }
        let before = shards[0].stats();
        shards[0].handle_datagram(now, addr("198.51.100.1:5000"), &d[0].1);
        assert_eq!(
            shards[0].stats().datagrams_dropped,
            before.datagrams_dropped + 1
        );
        assert!(shards[0].poll_event().is_none());
        assert!(drain(&mut shards[0], now).is_empty());
        shards[1].handle_datagram(now, addr("198.51.100.1:5000"), &d[0].1);
        assert!(std::iter::from_fn(|| shards[1].poll_event())
            .any(|e| matches!(e, Event::IncomingFlow { .. })));
        // short datagrams and no sharding
        assert_eq!(datagram_shard(&[1, 2, 3], 4), None);
        assert_eq!(datagram_shard(&d[0].1, 0), Some(0));
        assert_eq!(datagram_shard(&d[0].1, 40), Some(sessions_owner(&d[0].1)));
    }

    fn sessions_owner(d: &[u8]) -> u32 {
        wire::demultiplex(d).unwrap().0 >> 16
    }
}
