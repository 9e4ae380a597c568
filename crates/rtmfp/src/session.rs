//! An established session (RFC 7016 §3.5): packet processing, flows,
//! acknowledgements, congestion control, keepalive, mobility and close.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::cc::{Congestion, Pacer, RttEstimator};
use crate::config::EndpointConfig;
use crate::crypto::{PacketCrypto, SessionKeys};
use crate::event::{CloseReason, Event, Role, SessionId, SessionInfo, SessionStats};
use crate::flow::{FlowMap, Priority, RecvFlow, RecvMessage, RecvState, SendFlow, SendState};
use crate::wire::{
    self, chunk_type, encode_ack_body, option_len, put_option, put_vlu, vlu_len, Chunk, DataFlags,
    Mode, Packet, PacketHeader, UserData, OPTION_RETURN_ASSOCIATION, OPTION_USER_METADATA,
};
use crate::Error;

/// Session states (§3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionState {
    Open,
    NearClose { since: Instant, next_close: Instant },
    FarCloseLinger { since: Instant },
    Closed,
}

const MIN_PACING_RTT: Duration = Duration::from_millis(12);
const TC_WINDOW: Duration = Duration::from_millis(800);
const DELACK: Duration = Duration::from_millis(200);
const NEARCLOSE_RESEND: Duration = Duration::from_secs(5);
const NEARCLOSE_MAX: Duration = Duration::from_secs(90);
const FARCLOSE_LINGER: Duration = Duration::from_secs(19);
const SEND_LINGER: Duration = Duration::from_secs(130);
const RECV_LINGER: Duration = Duration::from_secs(120);
const MAX_PENDING_PING_REPLIES: usize = 8;
const MAX_PING_SIZE: usize = 512;
const MAX_RECV_RANGES: usize = 1024;
const MAX_RECV_AHEAD: u64 = 1 << 20;
const RECV_SLACK: usize = 64 * 1024;
/// Bytes reserved for the packet header and the chunk header of a data
/// fragment: flags, header (5), chunk header (3), data flags (1), flow ID,
/// sequence number and FSN offset VLUs (3 x 10).
const DATA_OVERHEAD: usize = 5 + 3 + 1 + 30;

/// Endpoint-wide time-critical state shared by sessions.
#[derive(Debug, Default)]
pub(crate) struct TcState {
    /// Last time TC data was received, and on which session.
    pub last_rx: Option<(Instant, u32)>,
    /// Last time TC data was received on a session other than `last_rx`'s.
    pub other_rx: Option<Instant>,
    /// Last time TC data was sent on any session.
    pub last_tx: Option<Instant>,
}

impl TcState {
    fn note_rx(&mut self, now: Instant, sid: u32) {
        if let Some((t, s)) = self.last_rx {
            if s != sid {
                self.other_rx = Some(t);
            }
        }
        self.last_rx = Some((now, sid));
    }
    /// Whether TC data was received on a session other than `sid` recently.
    fn receiving_elsewhere(&self, now: Instant, sid: u32) -> bool {
        let recent = |t: Instant| now.saturating_duration_since(t) < TC_WINDOW;
        match self.last_rx {
            Some((t, s)) if s != sid && recent(t) => true,
            _ => self.other_rx.is_some_and(recent),
        }
    }
}

/// Side effects of session processing that the endpoint applies.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Forwarded IHellos received: (epd, reply address, tag).
    pub fihellos: Vec<(Vec<u8>, SocketAddr, Vec<u8>)>,
    /// Far address changed (old, new).
    pub moved: Option<(SocketAddr, SocketAddr)>,
}

pub(crate) struct Ctx<'a> {
    pub config: &'a EndpointConfig,
    pub events: &'a mut VecDeque<Event>,
    pub tc: &'a mut TcState,
    pub epoch: Instant,
    /// Scratch for the flow service order in `write_data`.
    pub order_scratch: &'a mut Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    tsn: u64,
    flow: u64,
    seq: u64,
    /// Ack-packet counter value at the first negative acknowledgement.
    stamp: u64,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub rsid: u32,
    pub ssid: u32,
    pub role: Role,
    pub state: SessionState,
    pub far_addr: SocketAddr,
    pub far_cert: Bytes,
    /// Responder: digest of (ISID, certificate, SKIC) of the IIKeying.
    pub keying_digest: Option<[u8; 32]>,
    /// Responder: the RIKeying chunk, resent on a retransmitted IIKeying.
    pub rikeying: Option<Bytes>,
    pub(crate) crypto: Box<dyn PacketCrypto>,
    near_nonce: Bytes,
    far_nonce: Bytes,
    ts_rx: Option<u16>,
    ts_rx_time: Option<Instant>,
    ts_echo_tx: Option<u16>,
    ts_tx: Option<u16>,
    ts_echo_rx: Option<u16>,
    rtt: RttEstimator,
    cc: Congestion,
    pacer: Pacer,
    pacing_until: Option<Instant>,
    // sorted vectors: sessions have few flows (no hashing of the peer's
    // flow IDs, O(log n) lookups)
    send_flows: FlowMap<SendFlow>,
    send_order: Vec<u64>,
    send_order_prio: Vec<Priority>,
    rr: usize,
    recv_flows: FlowMap<RecvFlow>,
    next_flow_id: u64,
    in_flight: VecDeque<InFlight>,
    next_tsn: u64,
    max_tsn_ack: u64,
    stamp_frontier: u64,
    ack_packets: u64,
    outstanding: u64,
    rx_data_packets: u32,
    ack_now: bool,
    delack: Option<Instant>,
    timeout_alarm: Option<Instant>,
    data_packet_count: u32,
    last_recv: Instant,
    keepalive_sent: Option<Instant>,
    mob_secret: [u8; 16],
    mob_tx_ts: Option<Instant>,
    mob_rx_ts: u64,
    /// (boxed: rarely used)
    mobility_probe: Option<Box<(SocketAddr, Vec<u8>)>>,
    ping_replies: VecDeque<Bytes>,
    fihellos: VecDeque<Vec<u8>>,
    send_close_ack: bool,
    tc_sent_at: Option<Instant>,
    tcr_rx_at: Option<Instant>,
    pub stats: SessionStats,
    plain_budget: usize,
    /// Time of this session's live entry in the endpoint's timer heap.
    pub armed: Option<Instant>,
    /// Per-session keepalive interval in ms (0: the configuration's).
    keepalive_ms: u32,
    /// Per-session idle timeout in ms (0: the configuration's).
    idle_ms: u32,
}

/// Shortest per-session keepalive interval or idle timeout.
pub(crate) const MIN_SESSION_TIMER: Duration = Duration::from_secs(1);

/// A per-session timer in milliseconds, clamped to at least
/// [`MIN_SESSION_TIMER`] and at most `u32::MAX` ms (about 49 days).
fn clamp_ms(d: Duration) -> u32 {
    d.max(MIN_SESSION_TIMER)
        .as_millis()
        .min(u128::from(u32::MAX)) as u32
}

/// Frees an empty queue's buffer (`VecDeque::new` does not allocate).
pub(crate) fn release_if_empty<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > 0 {
        *q = VecDeque::new();
    }
}

fn timestamp(now: Instant, epoch: Instant) -> u16 {
    (now.saturating_duration_since(epoch).as_millis() / 4) as u16
}

fn recent(t: Option<Instant>, now: Instant) -> bool {
    t.is_some_and(|t| now.saturating_duration_since(t) < TC_WINDOW)
}

fn addr_bytes(a: SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(19);
    wire::Address {
        addr: a,
        origin: wire::AddressOrigin::Unknown,
    }
    .encode(&mut v);
    v
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rsid: u32,
        ssid: u32,
        role: Role,
        far_addr: SocketAddr,
        far_cert: Bytes,
        keys: SessionKeys,
        mob_secret: [u8; 16],
        now: Instant,
        config: &EndpointConfig,
    ) -> Self {
        let overhead = keys.crypto.overhead();
        let plain_budget = config
            .max_datagram_size
            .saturating_sub(4 + overhead)
            .max(64);
        Self {
            rsid,
            ssid,
            role,
            state: SessionState::Open,
            far_addr,
            far_cert,
            keying_digest: None,
            rikeying: None,
            crypto: keys.crypto,
            near_nonce: keys.near_nonce.into(),
            far_nonce: keys.far_nonce.into(),
            ts_rx: None,
            ts_rx_time: None,
            ts_echo_tx: None,
            ts_tx: None,
            ts_echo_rx: None,
            rtt: RttEstimator::new(),
            cc: Congestion::new(plain_budget as u64),
            pacer: Pacer::new(),
            pacing_until: None,
            send_flows: FlowMap::default(),
            send_order: Vec::new(),
            send_order_prio: Vec::new(),
            rr: 0,
            recv_flows: FlowMap::default(),
            next_flow_id: 1,
            in_flight: VecDeque::new(),
            next_tsn: 1,
            max_tsn_ack: 0,
            stamp_frontier: 0,
            ack_packets: 0,
            outstanding: 0,
            rx_data_packets: 0,
            ack_now: false,
            delack: None,
            timeout_alarm: None,
            data_packet_count: 0,
            last_recv: now,
            keepalive_sent: None,
            mob_secret,
            mob_tx_ts: None,
            mob_rx_ts: 0,
            mobility_probe: None,
            ping_replies: VecDeque::new(),
            fihellos: VecDeque::new(),
            send_close_ack: false,
            tc_sent_at: None,
            tcr_rx_at: None,
            stats: SessionStats::default(),
            plain_budget,
            armed: None,
            keepalive_ms: 0,
            idle_ms: 0,
        }
    }

    fn id(&self) -> SessionId {
        SessionId(self.rsid)
    }

    fn my_mode(&self) -> Mode {
        match self.role {
            Role::Initiator => Mode::Initiator,
            Role::Responder => Mode::Responder,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == SessionState::Open
    }

    // ----- user API -------------------------------------------------------

    pub(crate) fn open_flow(
        &mut self,
        metadata: &[u8],
        association: Option<u64>,
        priority: Priority,
        config: &EndpointConfig,
    ) -> Result<u64, Error> {
        if !self.is_open() {
            return Err(Error::SessionClosed);
        }
        if self.send_flows.len() + self.recv_flows.len() >= config.max_flows_per_session {
            return Err(Error::TooManyFlows);
        }
        if metadata.len() > self.plain_budget / 2 {
            return Err(Error::MetadataTooLarge);
        }
        if let Some(a) = association {
            if !self
                .recv_flows
                .get(&a)
                .is_some_and(|f| f.state == RecvState::Open)
            {
                return Err(Error::NoFlow);
            }
        }
        let mut id = self.next_flow_id;
        while self.send_flows.contains_key(&id) {
            id += 1;
        }
        self.next_flow_id = id + 1;
        self.send_flows.insert(
            id,
            Box::new(SendFlow::new(
                id,
                Bytes::copy_from_slice(metadata),
                association,
                priority,
            )),
        );
        self.rebuild_order();
        Ok(id)
    }

    fn rebuild_order(&mut self) {
        let mut ids: Vec<(Priority, u64)> = self
            .send_flows
            .values()
            .map(|f| (f.priority, f.id))
            .collect();
        ids.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        self.send_order_prio = ids.iter().map(|(p, _)| *p).collect();
        self.send_order = ids.into_iter().map(|(_, id)| id).collect();
    }

    fn frag_size(&self, f: &SendFlow) -> usize {
        let opts = option_len(OPTION_USER_METADATA, f.metadata.len())
            + f.association
                .map_or(0, |a| option_len(OPTION_RETURN_ASSOCIATION, vlu_len(a)))
            + 1;
        self.plain_budget
            .saturating_sub(DATA_OVERHEAD + opts)
            .max(16)
    }

    pub(crate) fn send(
        &mut self,
        now: Instant,
        flow: u64,
        data: Bytes,
        lifetime: Option<Duration>,
        config: &EndpointConfig,
    ) -> Result<(), Error> {
        if !self.is_open() {
            return Err(Error::SessionClosed);
        }
        let frag = {
            let f = self.send_flows.get(&flow).ok_or(Error::NoFlow)?;
            self.frag_size(f)
        };
        let f = self.send_flows.get_mut(&flow).ok_or(Error::NoFlow)?;
        if f.state != SendState::Open {
            return Err(Error::FlowClosed);
        }
        if f.exception {
            return Err(Error::FlowRejected);
        }
        if f.buffered_bytes > 0 && f.buffered_bytes + data.len() > config.send_buffer {
            f.writable_blocked = true;
            return Err(Error::WouldBlock);
        }
        f.enqueue(data, frag, lifetime.map(|l| now + l));
        Ok(())
    }

    pub(crate) fn send_buffer_available(
        &self,
        flow: u64,
        config: &EndpointConfig,
    ) -> Option<usize> {
        let f = self.send_flows.get(&flow)?;
        Some(config.send_buffer.saturating_sub(f.buffered_bytes))
    }

    pub(crate) fn close_flow(&mut self, flow: u64) -> Result<(), Error> {
        let f = self.send_flows.get_mut(&flow).ok_or(Error::NoFlow)?;
        f.close();
        Ok(())
    }

    pub(crate) fn read(&mut self, flow: u64, ctx: &mut Ctx<'_>) -> Option<RecvMessage> {
        let f = self.recv_flows.get_mut(&flow)?;
        let m = f.read();
        // reopen the receive window promptly when it was nearly closed
        let cap_blocks = (f.capacity / 1024) as u64;
        if let Some(prev) = f.prev_rwnd {
            if prev < cap_blocks / 2 && f.advertise_blocks() >= cap_blocks / 2 + prev.max(1) {
                f.should_ack = true;
                self.ack_now = true;
            }
        }
        if m.is_none() {
            self.check_recv_complete(flow, ctx, None);
        }
        m
    }

    pub(crate) fn set_recv_options(
        &mut self,
        flow: u64,
        ordered: Option<bool>,
        capacity: Option<usize>,
        paused: Option<bool>,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Error> {
        let f = self.recv_flows.get_mut(&flow).ok_or(Error::NoFlow)?;
        if let Some(o) = ordered {
            f.ordered = o;
        }
        if let Some(c) = capacity {
            f.capacity = c;
        }
        if let Some(p) = paused {
            f.paused = p;
            let was_empty = f.ready.is_empty();
            if !p && f.deliver() && was_empty && f.announced {
                ctx.events.push_back(Event::Readable {
                    session: SessionId(self.rsid),
                    flow,
                });
            }
            f.should_ack = true;
            self.ack_now = true;
        }
        Ok(())
    }

    pub(crate) fn reject_flow(&mut self, flow: u64, code: u64) -> Result<(), Error> {
        let f = self.recv_flows.get_mut(&flow).ok_or(Error::NoFlow)?;
        f.reject(code);
        self.ack_now = true;
        Ok(())
    }

    /// Starts an orderly close (§3.5.5).
    pub(crate) fn close(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if self.state != SessionState::Open {
            return;
        }
        self.state = SessionState::NearClose {
            since: now,
            next_close: now,
        };
        self.abort_flows();
        ctx.events.push_back(Event::SessionClosed {
            session: self.id(),
            reason: CloseReason::Local,
        });
    }

    /// Abrupt close: a Close Ack is sent, then the session is closed.
    pub(crate) fn abort(&mut self, reason: CloseReason, ctx: &mut Ctx<'_>) {
        let was_open = self.state == SessionState::Open;
        self.send_close_ack = true;
        self.abort_flows();
        self.state = SessionState::Closed;
        if was_open {
            ctx.events.push_back(Event::SessionClosed {
                session: self.id(),
                reason,
            });
        }
    }

    fn abort_flows(&mut self) {
        self.send_flows.clear();
        self.send_order.clear();
        self.send_order_prio.clear();
        self.recv_flows.clear();
        self.in_flight.clear();
        self.outstanding = 0;
        self.timeout_alarm = None;
        self.fihellos.clear();
        self.ack_now = false;
        self.delack = None;
    }

    pub(crate) fn queue_fihello(
        &mut self,
        epd: &[u8],
        reply: SocketAddr,
        tag: &[u8],
    ) -> Result<(), Error> {
        if !self.is_open() {
            return Err(Error::SessionClosed);
        }
        if self.fihellos.len() >= 64 {
            return Err(Error::WouldBlock);
        }
        let mut c = Vec::new();
        Chunk::FIHello {
            epd,
            reply_address: wire::Address {
                addr: reply,
                origin: wire::AddressOrigin::Public,
            },
            tag,
        }
        .encode(&mut c)
        .map_err(|_| Error::TooLarge)?;
        if c.len() + 5 > self.plain_budget {
            return Err(Error::TooLarge);
        }
        self.fihellos.push_back(c);
        Ok(())
    }

    /// Smoothed RTT, if measured.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt
    }

    pub(crate) fn info(&self) -> SessionInfo {
        SessionInfo {
            role: self.role,
            peer: self.far_addr,
            far_certificate: self.far_cert.clone(),
            near_nonce: self.near_nonce.clone(),
            far_nonce: self.far_nonce.clone(),
            srtt: self.rtt.srtt,
            erto: self.rtt.erto,
            cwnd: self.cc.cwnd,
            outstanding: self.outstanding,
            send_buffered: self.send_flows.values().map(|f| f.buffered_bytes).sum(),
            recv_buffered: self.recv_flows.values().map(|f| f.buffered_bytes).sum(),
            send_flows: self.send_flows.len(),
            recv_flows: self.recv_flows.len(),
            stats: self.stats,
            open: self.is_open(),
        }
    }

    // ----- receiving ------------------------------------------------------

    /// Processes a decrypted packet of this session.
    #[allow(clippy::collapsible_match)]
    pub(crate) fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &Packet<'_>,
        size: usize,
        ctx: &mut Ctx<'_>,
        fx: &mut Effects,
    ) {
        let h = packet.header;
        if h.mode == Mode::Startup || h.mode == self.my_mode() {
            return;
        }
        if self.state == SessionState::Closed {
            return;
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += size as u64;
        self.last_recv = now;
        self.keepalive_sent = None;
        if let Some(ts) = h.timestamp {
            if self.ts_rx != Some(ts) {
                self.ts_rx = Some(ts);
                self.ts_rx_time = Some(now);
            }
        }
        if let Some(echo) = h.timestamp_echo {
            if self.ts_echo_rx != Some(echo) {
                self.ts_echo_rx = Some(echo);
                let ticks = timestamp(now, ctx.epoch).wrapping_sub(echo);
                if ticks <= 32767 {
                    self.rtt.sample(Duration::from_millis(u64::from(ticks) * 4));
                }
            }
        }
        if h.time_critical {
            ctx.tc.note_rx(now, self.rsid);
        }
        if h.time_critical_reverse {
            self.tcr_rx_at = Some(now);
        }
        self.cc.begin_packet(self.outstanding);
        let mut any_ack = false;
        let mut had_data = false;
        let mut prev: Option<(u64, u64, u64)> = None; // flow, seq, fsn of last data chunk
        for (ty, chunk) in packet.chunks() {
            let chunk = match chunk {
                Ok(c) => c,
                Err(_) => {
                    if ty == chunk_type::USER_DATA || ty == chunk_type::NEXT_USER_DATA {
                        prev = None;
                    }
                    continue;
                }
            };
            if chunk.is_startup() {
                continue;
            }
            match chunk {
                Chunk::UserData(u) => {
                    let Some((flow, seq, fsn)) = (match u.header {
                        Some((f, s, off)) => Some((f, s, s - off)),
                        None => prev.and_then(|(f, s, fsn)| s.checked_add(1).map(|s| (f, s, fsn))),
                    }) else {
                        continue;
                    };
                    prev = Some((flow, seq, fsn));
                    had_data = true;
                    if self.state == SessionState::Open {
                        self.on_user_data(now, flow, seq, fsn, &u, ctx);
                    }
                }
                Chunk::Ack(a) => {
                    if self.state == SessionState::Open {
                        any_ack = true;
                        self.on_ack(now, &a, ctx);
                    }
                }
                Chunk::Ping(m) => {
                    if m.len() <= MAX_PING_SIZE
                        && self.ping_replies.len() < MAX_PENDING_PING_REPLIES
                    {
                        self.ping_replies.push_back(Bytes::copy_from_slice(m));
                    }
                }
                Chunk::PingReply(m) => self.on_ping_reply(now, from, m, ctx, fx),
                Chunk::BufferProbe { flow_id } => {
                    if let Some(f) = self.recv_flows.get_mut(&flow_id) {
                        f.should_ack = true;
                        self.ack_now = true;
                    }
                }
                Chunk::FlowException { flow_id, code } => {
                    let session = self.id();
                    if let Some(f) = self.send_flows.get_mut(&flow_id) {
                        if f.state == SendState::Open {
                            f.close();
                            ctx.events.push_back(Event::SendFlowException {
                                session,
                                flow: flow_id,
                                code,
                            });
                        }
                        f.exception = true;
                        f.abandon_all();
                    }
                }
                Chunk::FIHello {
                    epd,
                    reply_address,
                    tag,
                } => {
                    if self.state == SessionState::Open && fx.fihellos.len() < 16 {
                        fx.fihellos
                            .push((epd.to_vec(), reply_address.addr, tag.to_vec()));
                    }
                }
                Chunk::Close => {
                    self.send_close_ack = true;
                    if self.state == SessionState::Open {
                        self.abort_flows();
                        self.state = SessionState::FarCloseLinger { since: now };
                        ctx.events.push_back(Event::SessionClosed {
                            session: self.id(),
                            reason: CloseReason::Remote,
                        });
                    }
                }
                Chunk::CloseAck => {
                    if self.state == SessionState::Open {
                        ctx.events.push_back(Event::SessionClosed {
                            session: self.id(),
                            reason: CloseReason::Remote,
                        });
                    }
                    self.abort_flows();
                    self.send_close_ack = false;
                    self.state = SessionState::Closed;
                }
                _ => {}
            }
        }
        if any_ack {
            self.detect_loss(ctx);
            let fastgrow = !recent(self.tcr_rx_at, now) && !recent(ctx.tc.last_tx, now);
            self.cc.end_packet(fastgrow, recent(self.tc_sent_at, now));
            if self.timeout_alarm.is_some() {
                self.timeout_alarm = Some(now + self.rtt.erto);
            }
            self.data_packet_count = 0;
        }
        if had_data {
            self.rx_data_packets += 1;
            if self.rx_data_packets >= 2 {
                self.ack_now = true;
            }
        }
        if !self.ack_now && self.delack.is_none() && self.recv_flows.values().any(|f| f.should_ack)
        {
            self.delack = Some(now + DELACK);
        }
        // address mobility (§3.5.4.2)
        if self.state == SessionState::Open
            && from != self.far_addr
            && self
                .mob_tx_ts
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.mob_tx_ts = Some(now);
            let ts = now.saturating_duration_since(ctx.epoch).as_millis() as u64;
            let mut msg = Vec::with_capacity(25);
            msg.push(b'M');
            msg.extend_from_slice(&ts.to_be_bytes());
            let mac = self.mobility_mac(&msg, from);
            msg.extend_from_slice(&mac);
            self.mobility_probe = Some(Box::new((from, msg)));
        }
    }

    fn mobility_mac(&self, msg: &[u8], addr: SocketAddr) -> [u8; 16] {
        let mut m = <Hmac<Sha256>>::new_from_slice(&self.mob_secret).expect("hmac takes any key");
        m.update(msg);
        m.update(&addr_bytes(addr));
        let out = m.finalize().into_bytes();
        let mut r = [0u8; 16];
        r.copy_from_slice(&out[..16]);
        r
    }

    fn on_ping_reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        m: &[u8],
        ctx: &mut Ctx<'_>,
        fx: &mut Effects,
    ) {
        if m.len() != 25 || m[0] != b'M' {
            return;
        }
        let mut tsb = [0u8; 8];
        tsb.copy_from_slice(&m[1..9]);
        let ts = u64::from_be_bytes(tsb);
        let now_ms = now.saturating_duration_since(ctx.epoch).as_millis() as u64;
        if ts > now_ms || now_ms - ts > 120_000 || ts <= self.mob_rx_ts && self.mob_rx_ts != 0 {
            return;
        }
        let mac = self.mobility_mac(&m[..9], from);
        // constant-time comparison
        let diff = mac.iter().zip(&m[9..]).fold(0u8, |a, (x, y)| a | (x ^ y));
        if diff != 0 {
            return;
        }
        self.mob_rx_ts = ts;
        if from != self.far_addr {
            let old = self.far_addr;
            self.far_addr = from;
            fx.moved = Some((old, from));
            ctx.events.push_back(Event::AddressChanged {
                session: self.id(),
                old,
                new: from,
            });
        }
    }

    fn on_user_data(
        &mut self,
        now: Instant,
        flow_id: u64,
        seq: u64,
        fsn: u64,
        u: &UserData<'_>,
        ctx: &mut Ctx<'_>,
    ) {
        if !self.recv_flows.contains_key(&flow_id) {
            if self.send_flows.len() + self.recv_flows.len() >= ctx.config.max_flows_per_session {
                return; // no state for flows over the limit
            }
            // §3.6.3.1 startup
            let mut metadata: Option<&[u8]> = None;
            let mut assoc: Option<u64> = None;
            let mut bad_option = false;
            if let Some(opts) = u.options {
                for o in wire::options(opts) {
                    match o {
                        Ok((OPTION_USER_METADATA, v)) => metadata = Some(v),
                        Ok((OPTION_RETURN_ASSOCIATION, v)) => {
                            assoc = wire::Reader::new(v).vlu().ok();
                            if assoc.is_none() {
                                bad_option = true;
                            }
                        }
                        Ok((t, _)) if t < 8192 => bad_option = true,
                        Ok(_) => {}
                        Err(_) => bad_option = true,
                    }
                }
            }
            let mut f = RecvFlow::new(
                flow_id,
                Bytes::copy_from_slice(metadata.unwrap_or_default()),
                assoc,
                ctx.config.recv_buffer,
            );
            let assoc_ok = match assoc {
                None => true,
                Some(a) => self
                    .send_flows
                    .get(&a)
                    .is_some_and(|s| s.state == SendState::Open),
            };
            if metadata.is_none() || !assoc_ok || bad_option {
                f.reject(0);
            } else {
                f.announced = true;
                ctx.events.push_back(Event::IncomingFlow {
                    session: self.id(),
                    flow: flow_id,
                    metadata: f.metadata.clone(),
                    association: assoc,
                });
            }
            self.recv_flows.insert(flow_id, Box::new(f));
            self.ack_now = true;
        }
        let Some(f) = self.recv_flows.get_mut(&flow_id) else {
            return;
        };
        if f.state == RecvState::Open {
            if let Some(opts) = u.options {
                if wire::options(opts).any(|o| match o {
                    Ok((t, _)) => {
                        t < 8192 && t != OPTION_USER_METADATA && t != OPTION_RETURN_ASSOCIATION
                    }
                    Err(_) => true,
                }) {
                    f.reject(0);
                    self.ack_now = true;
                }
            }
        }
        // resource limits against hostile senders
        let csn = f.csn();
        if seq > csn.saturating_add(MAX_RECV_AHEAD)
            || (!f.seqs.contains(seq) && f.seqs.len() >= MAX_RECV_RANGES && seq > csn + 1)
            || (f.state == RecvState::Open
                && !u.flags.abandon
                && f.buffered_bytes + u.data.len() > f.capacity + RECV_SLACK
                && !f.seqs.contains(seq))
        {
            f.should_ack = true;
            self.ack_now = true;
            return;
        }
        let was_empty = f.ready.is_empty();
        let out = f.receive(
            seq,
            fsn,
            u.flags.fragmentation,
            u.flags.abandon,
            u.flags.fin,
            u.data,
            Bytes::copy_from_slice,
        );
        if out.ack_now {
            self.ack_now = true;
        }
        if out.became_readable && was_empty && f.announced {
            ctx.events.push_back(Event::Readable {
                session: SessionId(self.rsid),
                flow: flow_id,
            });
        }
        self.check_recv_complete(flow_id, ctx, Some(now));
    }

    fn check_recv_complete(&mut self, flow_id: u64, ctx: &mut Ctx<'_>, now: Option<Instant>) {
        let Some(f) = self.recv_flows.get_mut(&flow_id) else {
            return;
        };
        if !f.is_complete() {
            return;
        }
        if let Some(now) = now {
            if matches!(f.state, RecvState::Open | RecvState::Rejected(_)) {
                f.state = RecvState::CompleteLinger(now + RECV_LINGER);
                f.should_ack = true;
                self.ack_now = true;
            }
        }
        if matches!(f.state, RecvState::CompleteLinger(_))
            && f.ready.is_empty()
            && f.buffer.is_empty()
            && !f.complete_reported
        {
            f.complete_reported = true;
            if f.announced {
                ctx.events.push_back(Event::RecvFlowComplete {
                    session: SessionId(self.rsid),
                    flow: flow_id,
                });
            }
        }
    }

    fn on_ack(&mut self, now: Instant, a: &wire::Ack<'_>, ctx: &mut Ctx<'_>) {
        let Some(f) = self.send_flows.get_mut(&a.flow_id) else {
            return;
        };
        f.startup_options = false;
        f.rx_buffer_size = a.buffer_blocks.saturating_mul(1024);
        if f.rx_buffer_size == 0 && !f.exception {
            if f.probe_at.is_none() {
                f.probe_interval = self.rtt.erto.max(Duration::from_secs(1));
                f.probe_at = Some(now + Duration::from_millis(200));
            }
        } else {
            f.probe_at = None;
        }
        let top = f.next_sn.saturating_sub(1);
        let mut acked_bytes = 0u64;
        let mut max_tsn = self.max_tsn_ack;
        let mut ack_range = |f: &mut SendFlow, lo: u64, hi: u64| {
            let lo = lo.max(f.base_seq);
            let hi = hi.min(top);
            let mut s = lo;
            let (mut out_delta, mut buf_delta) = (0u64, 0usize);
            while s <= hi {
                if let Some(e) = f.entry_mut(s) {
                    if !e.acked {
                        e.acked = true;
                        if e.in_flight {
                            e.in_flight = false;
                            acked_bytes += u64::from(e.transmit_size);
                            out_delta += u64::from(e.transmit_size);
                            max_tsn = max_tsn.max(e.tsn);
                        }
                        if !e.abandoned {
                            buf_delta += e.data.len();
                        }
                        e.data = Bytes::new();
                    }
                }
                s += 1;
            }
            f.outstanding_bytes -= out_delta;
            f.buffered_bytes -= buf_delta;
        };
        ack_range(f, 0, a.cum_ack);
        for (lo, hi) in a.ranges() {
            if lo > top {
                break;
            }
            ack_range(f, lo, hi);
        }
        f.trim();
        self.max_tsn_ack = max_tsn;
        self.outstanding -= acked_bytes.min(self.outstanding);
        if acked_bytes > 0 {
            self.cc.on_ack(acked_bytes);
        }
        if f.writable_blocked && f.buffered_bytes <= ctx.config.send_buffer / 2 {
            f.writable_blocked = false;
            ctx.events.push_back(Event::Writable {
                session: SessionId(self.rsid),
                flow: f.id,
            });
        }
        if f.is_complete() && f.state == SendState::Closing {
            f.state = SendState::CompleteLinger(now + SEND_LINGER);
            if !f.exception {
                ctx.events.push_back(Event::SendFlowComplete {
                    session: SessionId(self.rsid),
                    flow: f.id,
                });
            }
        }
    }

    /// Negative acknowledgement and loss detection (§3.6.2.5), amortised
    /// O(1) per fragment: a fragment's NAK count is the number of
    /// acknowledgement packets processed since a later-sent fragment was
    /// first acknowledged.
    fn detect_loss(&mut self, _ctx: &mut Ctx<'_>) {
        self.ack_packets += 1;
        let start = self
            .in_flight
            .partition_point(|e| e.tsn < self.stamp_frontier);
        for e in self.in_flight.range_mut(start..) {
            if e.tsn >= self.max_tsn_ack {
                break;
            }
            e.stamp = self.ack_packets;
        }
        self.stamp_frontier = self.stamp_frontier.max(self.max_tsn_ack);
        while let Some(&front) = self.in_flight.front() {
            let valid = self
                .send_flows
                .get(&front.flow)
                .and_then(|f| f.entry(front.seq))
                .is_some_and(|e| e.in_flight && e.tsn == front.tsn);
            if !valid {
                self.in_flight.pop_front();
                continue;
            }
            if front.stamp == 0 {
                break;
            }
            self.cc.on_nak();
            if self.ack_packets - front.stamp + 1 < 3 {
                break;
            }
            self.in_flight.pop_front();
            let f = self.send_flows.get_mut(&front.flow).expect("valid");
            let e = f.entry_mut(front.seq).expect("valid");
            e.in_flight = false;
            let size = u64::from(e.transmit_size);
            f.outstanding_bytes -= size;
            f.retransmit.insert(front.seq);
            self.outstanding -= size.min(self.outstanding);
            self.stats.fragments_lost += 1;
            self.cc.on_loss();
        }
    }

    // ----- timers ---------------------------------------------------------

    pub(crate) fn next_timeout(&self, config: &EndpointConfig) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut add = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        match self.state {
            SessionState::Closed => return None,
            SessionState::NearClose { since, next_close } => {
                add(Some(next_close));
                add(Some(since + NEARCLOSE_MAX));
                return t;
            }
            SessionState::FarCloseLinger { since } => {
                add(Some(since + FARCLOSE_LINGER));
                return t;
            }
            SessionState::Open => {}
        }
        add(self.delack);
        add(self.timeout_alarm);
        add(self.pacing_until);
        add(Some(self.last_recv + self.idle_timeout(config)));
        match self.keepalive_sent {
            None => add(Some(self.last_recv + self.keepalive_interval(config))),
            Some(s) => add(Some(s + self.rtt.erto.max(Duration::from_secs(1)))),
        }
        for f in self.send_flows.values() {
            add(f.probe_at);
            add(f.earliest_deadline);
            if let SendState::CompleteLinger(end) = f.state {
                add(Some(end));
            }
        }
        for f in self.recv_flows.values() {
            if let RecvState::CompleteLinger(end) = f.state {
                add(Some(end));
            }
        }
        t
    }

    /// Handles expired timers. Call when `next_timeout` has passed.
    pub(crate) fn on_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        match self.state {
            SessionState::Closed => return,
            SessionState::NearClose { since, .. } => {
                if now >= since + NEARCLOSE_MAX {
                    self.state = SessionState::Closed;
                }
                return;
            }
            SessionState::FarCloseLinger { since } => {
                if now >= since + FARCLOSE_LINGER {
                    self.state = SessionState::Closed;
                }
                return;
            }
            SessionState::Open => {}
        }
        if now >= self.last_recv + self.idle_timeout(ctx.config) {
            self.abort(CloseReason::IdleTimeout, ctx);
            return;
        }
        if self.delack.is_some_and(|d| d <= now) {
            self.delack = None;
            self.ack_now = true;
        }
        if self.pacing_until.is_some_and(|p| p <= now) {
            self.pacing_until = None;
        }
        if let Some(s) = self.keepalive_sent {
            if now >= s + self.rtt.erto.max(Duration::from_secs(1)) {
                // no reply within ERTO: back off and ping again
                self.rtt.backoff();
                self.keepalive_sent = None;
            }
        }
        if self.timeout_alarm.is_some_and(|t| t <= now) {
            self.timeout_alarm = None;
            self.on_retransmission_timeout();
        }
        let mut done_send = Vec::new();
        for f in self.send_flows.values_mut() {
            f.abandon_expired(now);
            if let SendState::CompleteLinger(end) = f.state {
                if now >= end {
                    done_send.push(f.id);
                }
            }
            if let Some(p) = f.probe_at {
                if p <= now {
                    f.probe_at = Some(now + f.probe_interval);
                    f.probe_interval =
                        (f.probe_interval * 2).min(Duration::from_secs(60).max(self.rtt.erto));
                }
            }
        }
        for id in done_send {
            self.send_flows.remove(&id);
            self.rebuild_order();
        }
        let mut done_recv = Vec::new();
        for f in self.recv_flows.values() {
            if let RecvState::CompleteLinger(end) = f.state {
                if now >= end && f.ready.is_empty() {
                    done_recv.push(f.id);
                }
            }
        }
        for id in done_recv {
            self.recv_flows.remove(&id);
        }
    }

    fn on_retransmission_timeout(&mut self) {
        let mut was_loss = false;
        while let Some(e) = self.in_flight.pop_front() {
            if let Some(f) = self.send_flows.get_mut(&e.flow) {
                if let Some(en) = f.entry_mut(e.seq) {
                    if en.in_flight && en.tsn == e.tsn {
                        en.in_flight = false;
                        let size = u64::from(en.transmit_size);
                        f.outstanding_bytes -= size;
                        f.retransmit.insert(e.seq);
                        self.outstanding -= size.min(self.outstanding);
                        was_loss = true;
                    }
                }
            }
        }
        self.stats.timeouts += 1;
        if was_loss {
            self.rtt.backoff();
        }
        self.cc.on_timeout(was_loss);
        self.data_packet_count = 0;
    }

    // ----- sending --------------------------------------------------------

    /// Assembles the next datagram for this session into `out` (cleared
    /// first). Returns its destination, or `None` if there is nothing to send.
    pub(crate) fn poll_packet(
        &mut self,
        now: Instant,
        out: &mut Vec<u8>,
        ctx: &mut Ctx<'_>,
    ) -> Option<SocketAddr> {
        out.clear();
        if let Some((addr, msg)) = self.mobility_probe.take().map(|b| *b) {
            if self.state == SessionState::Open {
                out.extend_from_slice(&[0; 4]);
                let header = self.header(now, ctx, false);
                header.encode(out);
                Chunk::Ping(&msg).encode(out).ok()?;
                self.finish(out);
                return Some(addr);
            }
        }
        let closing_send = match self.state {
            SessionState::NearClose { next_close, since } if next_close <= now => {
                self.state = SessionState::NearClose {
                    since,
                    next_close: now + NEARCLOSE_RESEND,
                };
                true
            }
            _ => false,
        };
        let open = self.state == SessionState::Open;
        let want_control = self.send_close_ack
            || closing_send
            || !self.ping_replies.is_empty()
            || (open && !self.fihellos.is_empty())
            || (open && self.keepalive_due(now, ctx.config))
            || (open && self.ack_now)
            || (open && self.probe_due(now));
        let can_data = open && self.data_allowed(now);
        if !want_control && !can_data {
            return None;
        }
        out.extend_from_slice(&[0; 4]);
        let header_at = out.len();
        let header = self.header(now, ctx, false);
        header.encode(out);
        let limit = 4 + self.plain_budget;
        let mut has_content = false;
        if self.send_close_ack {
            out.extend_from_slice(&[chunk_type::CLOSE_ACK, 0, 0]);
            self.send_close_ack = false;
            has_content = true;
        }
        if closing_send {
            out.extend_from_slice(&[chunk_type::CLOSE, 0, 0]);
            has_content = true;
        }
        while let Some(m) = self.ping_replies.front() {
            if out.len() + 3 + m.len() > limit {
                break;
            }
            let m = self.ping_replies.pop_front().expect("front");
            let _ = Chunk::PingReply(&m).encode(out);
            has_content = true;
        }
        if open {
            if self.keepalive_due(now, ctx.config) && out.len() + 3 <= limit {
                out.extend_from_slice(&[chunk_type::PING, 0, 0]);
                self.keepalive_sent = Some(now);
                has_content = true;
            }
            while let Some(c) = self.fihellos.front() {
                if out.len() + c.len() > limit {
                    break;
                }
                let c = self.fihellos.pop_front().expect("front");
                out.extend_from_slice(&c);
                has_content = true;
            }
            let mut any_ack = false;
            if self.ack_now {
                any_ack = self.write_acks(out, limit, !has_content);
                if !self.recv_flows.values().any(|f| f.should_ack) {
                    self.ack_now = false;
                    self.rx_data_packets = 0;
                    self.delack = None;
                }
            }
            let mut tc = false;
            let mut any_data = false;
            if can_data {
                (any_data, tc) = self.write_data(now, out, limit, ctx);
            }
            if any_data || any_ack {
                // opportunistic acknowledgements
                if self.write_acks(out, limit, false)
                    && !self.recv_flows.values().any(|f| f.should_ack)
                {
                    self.ack_now = false;
                    self.rx_data_packets = 0;
                    self.delack = None;
                }
            }
            has_content |= any_ack || any_data;
            // buffer probes
            for f in self.send_flows.values_mut() {
                if let Some(p) = f.probe_at {
                    if p <= now && out.len() + 3 + vlu_len(f.id) <= limit {
                        let _ = Chunk::BufferProbe { flow_id: f.id }.encode(out);
                        f.probe_at = Some(now + f.probe_interval);
                        has_content = true;
                    }
                }
            }
            if any_data {
                self.data_packet_count += 1;
                self.timeout_alarm = Some(now + self.rtt.erto);
                if ctx.config.pacing && self.rtt.srtt.is_some_and(|r| r >= MIN_PACING_RTT) {
                    self.pacer.consume(out.len());
                }
            }
            if tc {
                out[header_at] |= wire::FLAG_TC;
                self.tc_sent_at = Some(now);
                ctx.tc.last_tx = Some(now);
            }
        }
        if !has_content {
            out.clear();
            return None;
        }
        self.finish(out);
        Some(self.far_addr)
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.crypto.encrypt(out, 4);
        let ssid = wire::scramble_session_id(self.ssid, &out[4..]);
        out[..4].copy_from_slice(&ssid.to_be_bytes());
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += out.len() as u64;
    }

    fn header(&mut self, now: Instant, ctx: &Ctx<'_>, _tc: bool) -> PacketHeader {
        // every packet carries the timestamp, even within one 4 ms tick:
        // RFC 7016 allows leaving repeats out, but librtmfp (and so
        // MonaServer-era clients) drops every packet without one; receivers
        // ignore repeats (§3.5.2.2), so this costs two bytes and nothing else
        let ts = timestamp(now, ctx.epoch);
        self.ts_tx = Some(ts);
        let timestamp = Some(ts);
        let mut timestamp_echo = None;
        if let (Some(rx), Some(rx_time)) = (self.ts_rx, self.ts_rx_time) {
            let elapsed = now.saturating_duration_since(rx_time);
            if elapsed > Duration::from_secs(128) {
                self.ts_rx = None;
                self.ts_echo_tx = None;
            } else {
                let echo = rx.wrapping_add((elapsed.as_millis() / 4) as u16);
                if self.ts_echo_tx != Some(echo) {
                    self.ts_echo_tx = Some(echo);
                    timestamp_echo = Some(echo);
                }
            }
        }
        PacketHeader {
            time_critical: false,
            time_critical_reverse: ctx.tc.receiving_elsewhere(now, self.rsid),
            mode: self.my_mode(),
            timestamp,
            timestamp_echo,
        }
    }

    /// This session's keepalive interval: set by
    /// [`set_keepalive`](Self::set_keepalive), else the configuration's.
    pub(crate) fn keepalive_interval(&self, config: &EndpointConfig) -> Duration {
        match self.keepalive_ms {
            0 => config.keepalive_interval,
            ms => Duration::from_millis(u64::from(ms)),
        }
    }

    /// This session's idle timeout: set by
    /// [`set_idle_timeout`](Self::set_idle_timeout), else the
    /// configuration's.
    pub(crate) fn idle_timeout(&self, config: &EndpointConfig) -> Duration {
        match self.idle_ms {
            0 => config.idle_timeout,
            ms => Duration::from_millis(u64::from(ms)),
        }
    }

    pub(crate) fn set_keepalive(&mut self, interval: Duration) {
        self.keepalive_ms = clamp_ms(interval);
    }

    pub(crate) fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_ms = clamp_ms(timeout);
    }

    fn keepalive_due(&self, now: Instant, config: &EndpointConfig) -> bool {
        self.keepalive_sent.is_none() && now >= self.last_recv + self.keepalive_interval(config)
    }

    fn probe_due(&self, now: Instant) -> bool {
        self.send_flows
            .values()
            .any(|f| f.probe_at.is_some_and(|p| p <= now))
    }

    /// Whether congestion control, burst avoidance and pacing allow a data
    /// packet now, and some flow has data.
    fn data_allowed(&mut self, now: Instant) -> bool {
        if self.outstanding >= self.cc.cwnd {
            return false;
        }
        if self.pacing_until.is_some_and(|p| p > now) {
            return false;
        }
        let mut any = false;
        for id in &self.send_order {
            if let Some(f) = self.send_flows.get_mut(id) {
                if f.window_open() && f.has_eligible() {
                    any = true;
                    break;
                }
            }
        }
        any
    }

    /// Writes acknowledgements for flows that should be acknowledged.
    /// `first` allows truncating the first ack to fit (§3.6.3.4.2).
    fn write_acks(&mut self, out: &mut Vec<u8>, limit: usize, first: bool) -> bool {
        let mut wrote = false;
        let mut first = first;
        for f in self.recv_flows.values_mut().filter(|f| f.should_ack) {
            let id = f.id;
            let before = out.len();
            if let RecvState::Rejected(code) = f.state {
                if out.len() + 3 + vlu_len(id) + vlu_len(code) > limit {
                    break;
                }
                let _ = Chunk::FlowException { flow_id: id, code }.encode(out);
            }
            let cum = f.csn();
            let blocks = f.advertise_blocks();
            let fixed = 3 + vlu_len(id) + vlu_len(blocks) + vlu_len(cum);
            if out.len() + fixed > limit {
                out.truncate(before);
                break;
            }
            let max_body = limit - out.len() - fixed;
            let ranges = f.seqs.ranges();
            let extra: &[(u64, u64)] = if ranges.first().is_some_and(|r| r.0 == 0) {
                &ranges[1..]
            } else {
                ranges
            };
            let at = out.len();
            out.extend_from_slice(&[0, 0, 0]);
            put_vlu(out, id);
            put_vlu(out, blocks);
            put_vlu(out, cum);
            let (ty, full) = encode_ack_body(out, cum, extra, max_body);
            if !full && !first {
                out.truncate(before);
                break;
            }
            let len = (out.len() - at - 3) as u16;
            out[at] = ty;
            out[at + 1..at + 3].copy_from_slice(&len.to_be_bytes());
            f.should_ack = false;
            f.prev_rwnd = Some(blocks);
            wrote = true;
            first = false;
        }
        wrote
    }

    /// Writes user data chunks. Returns (any data written, time critical).
    fn write_data(
        &mut self,
        now: Instant,
        out: &mut Vec<u8>,
        limit: usize,
        ctx: &mut Ctx<'_>,
    ) -> (bool, bool) {
        // Pace on paths whose RTT the 4 ms timestamps can measure; on
        // shorter paths (LAN, loopback) pacing would only add delay, and the
        // burst limit of §3.5.2.3 bounds bursts instead.
        let pace = ctx.config.pacing && self.rtt.srtt.is_some_and(|r| r >= MIN_PACING_RTT);
        if pace {
            let size = self.plain_budget + 4;
            let slow = self.cc.cwnd < self.cc.ssthresh;
            let release = self
                .pacer
                .release_time(now, size, self.cc.cwnd, self.rtt.srtt, slow);
            if release > now {
                self.pacing_until = Some(release);
                return (false, false);
            }
        } else if self.data_packet_count >= ctx.config.max_burst_packets {
            return (false, false);
        }
        let mut any = false;
        let mut tc = false;
        let n = self.send_order.len();
        if n == 0 {
            return (false, false);
        }
        // serve the highest priority first; round-robin within a priority
        // highest priority first; round-robin among flows of equal priority
        let start = self.rr % n;
        self.rr = self.rr.wrapping_add(1);
        let mut order = std::mem::take(ctx.order_scratch);
        order.clear();
        let mut i = 0;
        while i < n {
            let p = self.send_order_prio[i];
            let mut j = i;
            while j < n && self.send_order_prio[j] == p {
                j += 1;
            }
            let len = j - i;
            for k in 0..len {
                order.push(self.send_order[i + (start + k) % len]);
            }
            i = j;
        }
        for &id in &order {
            if self.outstanding >= self.cc.cwnd {
                break;
            }
            let Some(f) = self.send_flows.get_mut(&id) else {
                continue;
            };
            f.abandon_expired(now);
            f.trim();
            let mut prev_seq: Option<u64> = None;
            let mut first_in_packet = true;
            while f.window_open() && self.outstanding < self.cc.cwnd {
                let Some(seq) = f.next_eligible() else { break };
                let fsn = f.fsn();
                let final_sn = f.final_sn;
                let startup = f.startup_options && first_in_packet;
                // the metadata is only written with the startup options
                let metadata = if startup {
                    f.metadata.clone()
                } else {
                    Bytes::new()
                };
                let assoc = f.association;
                let e = f.entry(seq).expect("eligible");
                let abandoned = e.abandoned;
                let data_len = if abandoned { 0 } else { e.data.len() };
                let next = prev_seq.is_some_and(|p| p + 1 == seq) && !startup;
                let opts_len = if startup {
                    option_len(OPTION_USER_METADATA, metadata.len())
                        + assoc.map_or(0, |a| option_len(OPTION_RETURN_ASSOCIATION, vlu_len(a)))
                        + 1
                } else {
                    0
                };
                let head = if next {
                    0
                } else {
                    vlu_len(id) + vlu_len(seq) + vlu_len(seq - fsn.min(seq))
                };
                let chunk_len = 3 + 1 + head + opts_len + data_len;
                if out.len() + chunk_len > limit {
                    break;
                }
                let flags = DataFlags {
                    options_present: startup,
                    fragmentation: e.fra,
                    abandon: abandoned,
                    fin: final_sn == Some(seq),
                };
                out.push(if next {
                    chunk_type::NEXT_USER_DATA
                } else {
                    chunk_type::USER_DATA
                });
                out.extend_from_slice(&((chunk_len - 3) as u16).to_be_bytes());
                out.push(flags.to_byte());
                if !next {
                    put_vlu(out, id);
                    put_vlu(out, seq);
                    put_vlu(out, seq - fsn.min(seq));
                }
                if startup {
                    put_option(out, OPTION_USER_METADATA, &metadata);
                    if let Some(a) = assoc {
                        let mut v = Vec::with_capacity(10);
                        put_vlu(&mut v, a);
                        put_option(out, OPTION_RETURN_ASSOCIATION, &v);
                    }
                    out.push(0);
                }
                if !abandoned {
                    out.extend_from_slice(&e.data);
                }
                let tsn = self.next_tsn;
                self.next_tsn += 1;
                let e = f.entry_mut(seq).expect("eligible");
                if e.ever_sent {
                    self.stats.fragments_retransmitted += 1;
                } else {
                    self.stats.fragments_sent += 1;
                }
                e.in_flight = true;
                e.ever_sent = true;
                e.sent_abandoned = abandoned;
                e.transmit_size = chunk_len as u32;
                e.tsn = tsn;
                f.outstanding_bytes += chunk_len as u64;
                self.outstanding += chunk_len as u64;
                if f.retransmit.first() == Some(&seq) {
                    f.retransmit.pop_first();
                } else if seq == f.next_new {
                    f.next_new += 1;
                }
                self.in_flight.push_back(InFlight {
                    tsn,
                    flow: id,
                    seq,
                    stamp: 0,
                });
                any = true;
                tc |= f.priority.is_time_critical();
                prev_seq = Some(seq);
                first_in_packet = false;
            }
            if out.len() + 8 >= limit {
                break;
            }
        }
        *ctx.order_scratch = order;
        (any, tc)
    }

    /// Releases the buffers of queues that are empty (an idle session then
    /// holds no spare capacity). Called whenever the session has nothing
    /// more to send; O(flows).
    pub(crate) fn compact(&mut self) {
        release_if_empty(&mut self.in_flight);
        release_if_empty(&mut self.ping_replies);
        release_if_empty(&mut self.fihellos);
        for f in self.send_flows.values_mut() {
            f.compact();
        }
        for f in self.recv_flows.values_mut() {
            f.compact();
        }
    }

    /// Whether the session may be forgotten.
    pub(crate) fn is_closed(&self) -> bool {
        self.state == SessionState::Closed && !self.send_close_ack
    }
}
