//! Test harness: RTMFP endpoints as simulator nodes.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nimbus_testkit::identity;
pub use nimbus_testkit::sim::{Engine, Recorder, Script, SimNode};
use rtmfp::{Endpoint, EndpointConfig, Priority, SessionId};
use rtmfp_sim::Sim;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A byte source pushed into a flow as fast as the engine accepts it.
#[derive(Debug)]
pub struct Source {
    pub session: SessionId,
    pub flow: u64,
    pub total: usize,
    pub sent: usize,
    pub msg_size: usize,
    pub close_when_done: bool,
}

/// Starts sending `total` bytes on `flow` of `session` from node `i`, in
/// messages of `msg_size`; the flow closes when all are sent if
/// `close_when_done`.
pub fn start_source(
    sim: &mut Sim<Peer>,
    i: usize,
    session: SessionId,
    flow: u64,
    total: usize,
    msg_size: usize,
    close_when_done: bool,
) {
    sim.node_mut(i).source = Some(Source {
        session,
        flow,
        total,
        sent: 0,
        msg_size,
        close_when_done,
    });
    let now = sim.now();
    sim.node_mut(i).call(now, |_, _| ());
}

/// Node `i` sends `data` on `flow` of `session` now, as a reliable message.
pub fn send_now(sim: &mut Sim<Peer>, i: usize, session: SessionId, flow: u64, data: Bytes) {
    let now = sim.now();
    sim.node_mut(i)
        .call(now, |ep, now| ep.send(now, session, flow, data, None))
        .unwrap();
}

pub fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| (i * 31 % 251) as u8)
        .collect()
}

/// What the scenarios do with an engine: record everything (and read
/// every flow, unless `auto_read` is off), and feed a [`Source`].
#[derive(Debug, Default)]
pub struct Flows {
    pub rec: Recorder,
    pub auto_read: bool,
    pub source: Option<Source>,
}

impl std::ops::Deref for Flows {
    type Target = Recorder;
    fn deref(&self) -> &Recorder {
        &self.rec
    }
}

impl std::ops::DerefMut for Flows {
    fn deref_mut(&mut self) -> &mut Recorder {
        &mut self.rec
    }
}

impl Flows {
    pub fn read_some(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        session: SessionId,
        flow: u64,
        max: usize,
    ) -> usize {
        let mut n = 0;
        while n < max {
            let Some(m) = ep.read(now, session, flow) else {
                break;
            };
            n += m.data.len();
            self.rec
                .received
                .entry((session, flow))
                .or_default()
                .extend_from_slice(&m.data);
        }
        n
    }

    fn feed(&mut self, ep: &mut Endpoint, now: Instant) {
        let Some(src) = self.source.as_mut() else {
            return;
        };
        while src.sent < src.total {
            let len = src.msg_size.min(src.total - src.sent);
            let data = Bytes::from(pattern(src.sent, len));
            match ep.send(now, src.session, src.flow, data, None) {
                Ok(()) => src.sent += len,
                Err(_) => break,
            }
        }
        if src.sent == src.total && src.close_when_done {
            let _ = ep.close_flow(now, src.session, src.flow);
            src.close_when_done = false;
        }
    }
}

impl Script for Flows {
    fn process(&mut self, ep: &mut Endpoint, now: Instant) {
        self.rec.hold_reads = !self.auto_read;
        self.rec.process(ep, now);
        self.feed(ep, now);
    }
}

/// An engine with the plain profile in the simulator.
pub type Peer = SimNode<Engine<Flows>>;

/// A plain-profile peer named `name` at `addr`.
pub fn peer(name: &str, addr: SocketAddr, config: EndpointConfig, seed: u64, now: Instant) -> Peer {
    peer_with_cert(name.as_bytes().to_vec(), addr, config, seed, now)
}

/// A plain-profile peer with any certificate bytes.
pub fn peer_with_cert(
    cert: Vec<u8>,
    addr: SocketAddr,
    config: EndpointConfig,
    seed: u64,
    now: Instant,
) -> Peer {
    let flows = Flows {
        auto_read: true,
        ..Flows::default()
    };
    SimNode::new(
        addr,
        Engine::new(identity::plain_with(cert, config, seed, now), flows),
    )
}

/// Two peers "a" (index 0) and "b" (index 1).
pub fn pair(seed: u64, config: EndpointConfig) -> Sim<Peer> {
    let mut sim: Sim<Peer> = Sim::new(seed);
    let now = sim.now();
    let a = addr("198.18.0.1:1000");
    let b = addr("198.18.0.2:2000");
    sim.add_node(peer("a", a, config.clone(), seed ^ 1, now), &[a]);
    sim.add_node(peer("b", b, config, seed ^ 2, now), &[b]);
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
        .call(now, |ep, now| ep.connect(now, &name, &[to_addr]))
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
        .call(now, |ep, now| ep.open_flow(now, session, meta, None, prio))
        .unwrap()
}
