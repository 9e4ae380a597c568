//! Test harness: RTMFP endpoints as simulator nodes.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointConfig, Event, PlainProfile, Priority, SessionId};
use rtmfp_sim::{Datagram, Node, Sim};

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A byte source pushed into a flow as fast as the engine accepts it.
pub struct Source {
    pub session: SessionId,
    pub flow: u64,
    pub total: usize,
    pub sent: usize,
    pub msg_size: usize,
    pub close_when_done: bool,
}

pub fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| (i * 31 % 251) as u8)
        .collect()
}

pub struct Peer {
    pub ep: Endpoint,
    pub addr: SocketAddr,
    pub events: Vec<Event>,
    /// Bytes received per (session, flow), concatenated.
    pub received: HashMap<(SessionId, u64), Vec<u8>>,
    pub messages: HashMap<(SessionId, u64), Vec<(Instant, Bytes, bool)>>,
    pub auto_read: bool,
    pub source: Option<Source>,
    next_timeout: Option<Instant>,
    buf: Vec<u8>,
}

impl Peer {
    pub fn new(
        name: &str,
        addr: SocketAddr,
        config: EndpointConfig,
        seed: u64,
        now: Instant,
    ) -> Self {
        Self::with_cert(name.as_bytes().to_vec(), addr, config, seed, now)
    }

    pub fn with_cert(
        cert: Vec<u8>,
        addr: SocketAddr,
        config: EndpointConfig,
        seed: u64,
        now: Instant,
    ) -> Self {
        let ep = Endpoint::new(
            config,
            Box::new(PlainProfile::new(cert)),
            Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
            now,
        );
        Self {
            ep,
            addr,
            events: Vec::new(),
            received: HashMap::new(),
            messages: HashMap::new(),
            auto_read: true,
            source: None,
            next_timeout: None,
            buf: Vec::new(),
        }
    }

    pub fn pump(&mut self, now: Instant) {
        while let Some(e) = self.ep.poll_event() {
            if let Event::Readable { session, flow } = e {
                if self.auto_read {
                    self.read_all(now, session, flow);
                }
            }
            self.events.push(e);
        }
        self.feed(now);
        self.next_timeout = self.ep.poll_timeout();
    }

    pub fn read_all(&mut self, now: Instant, session: SessionId, flow: u64) {
        while let Some(m) = self.ep.read(now, session, flow) {
            self.received
                .entry((session, flow))
                .or_default()
                .extend_from_slice(&m.data);
            self.messages
                .entry((session, flow))
                .or_default()
                .push((now, m.data, m.after_gap));
        }
    }

    pub fn read_some(&mut self, now: Instant, session: SessionId, flow: u64, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(m) = self.ep.read(now, session, flow) else {
                break;
            };
            n += m.data.len();
            self.received
                .entry((session, flow))
                .or_default()
                .extend_from_slice(&m.data);
        }
        n
    }

    fn feed(&mut self, now: Instant) {
        let Some(src) = self.source.as_mut() else {
            return;
        };
        while src.sent < src.total {
            let len = src.msg_size.min(src.total - src.sent);
            let data = Bytes::from(pattern(src.sent, len));
            match self.ep.send(now, src.session, src.flow, data, None) {
                Ok(()) => src.sent += len,
                Err(_) => break,
            }
        }
        if src.sent == src.total && src.close_when_done {
            let _ = self.ep.close_flow(now, src.session, src.flow);
            src.close_when_done = false;
        }
    }

    pub fn opened(&self) -> Vec<SessionId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::SessionOpened { session, .. } => Some(*session),
                _ => None,
            })
            .collect()
    }

    pub fn incoming_flows(&self) -> Vec<(SessionId, u64)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::IncomingFlow { session, flow, .. } => Some((*session, *flow)),
                _ => None,
            })
            .collect()
    }

    pub fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }

    /// Runs `f` against the endpoint, then processes the results.
    pub fn with<R>(&mut self, now: Instant, f: impl FnOnce(&mut Endpoint, Instant) -> R) -> R {
        let r = f(&mut self.ep, now);
        self.pump(now);
        r
    }
}

impl Node for Peer {
    fn handle_datagram(&mut self, now: Instant, src: SocketAddr, _dst: SocketAddr, data: &[u8]) {
        self.ep.handle_datagram(now, src, data);
        self.pump(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        self.pump(now);
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        let dst = self.ep.poll_transmit(now, &mut self.buf)?;
        let d = Datagram::new(self.addr, dst, self.buf.clone());
        self.pump(now);
        Some(d)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }
}

/// Two peers "a" (index 0) and "b" (index 1).
pub fn pair(seed: u64, config: EndpointConfig) -> Sim<Peer> {
    let mut sim: Sim<Peer> = Sim::new(seed);
    let now = sim.now();
    let a = addr("198.18.0.1:1000");
    let b = addr("198.18.0.2:2000");
    sim.add_node(Peer::new("a", a, config.clone(), seed ^ 1, now), &[a]);
    sim.add_node(Peer::new("b", b, config, seed ^ 2, now), &[b]);
    sim
}

/// Connects node `from` to node `to` and runs until both report the session.
pub fn connect(
    sim: &mut Sim<Peer>,
    from: usize,
    to: usize,
    limit: Duration,
) -> Option<(SessionId, SessionId)> {
    let now = sim.now();
    let to_addr = sim.node(to).addr;
    let name = sim.node(to).ep.profile().certificate().to_vec();
    let before_to = sim.node(to).opened().len();
    let sid = sim
        .node_mut(from)
        .with(now, |ep, now| ep.connect(now, &name, &[to_addr]))
        .ok()?;
    let ok = sim.run_until(limit, |s| {
        s.node(from).opened().contains(&sid) && s.node(to).opened().len() > before_to
    });
    if !ok {
        return None;
    }
    let far = *sim.node(to).opened().last()?;
    Some((sid, far))
}

pub fn open_flow(
    sim: &mut Sim<Peer>,
    node: usize,
    session: SessionId,
    meta: &[u8],
    prio: Priority,
) -> u64 {
    let now = sim.now();
    sim.node_mut(node)
        .with(now, |ep, now| ep.open_flow(now, session, meta, None, prio))
        .unwrap()
}
