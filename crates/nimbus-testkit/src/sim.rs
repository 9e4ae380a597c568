//! Any [`Machine`] in the `rtmfp-sim` simulator: [`SimNode`], the one
//! adaptor, and [`Engine`], a machine made of an engine and a test script.
//!
//! ```
//! use nimbus_testkit::sim::{Engine, Recorder, SimNode};
//! use nimbus_testkit::identity;
//! use rtmfp_sim::Sim;
//!
//! let mut sim: Sim<SimNode<Engine<Recorder>>> = Sim::new(7);
//! let now = sim.now();
//! let (a, b) = ("198.18.0.1:1000".parse().unwrap(), "198.18.0.2:2000".parse().unwrap());
//! sim.add_node(SimNode::new(a, Engine::new(identity::plain("a", 1, now), Recorder::default())), &[a]);
//! sim.add_node(SimNode::new(b, Engine::new(identity::plain("b", 2, now), Recorder::default())), &[b]);
//! let s = sim.node_mut(0).call(now, |ep, now| ep.connect(now, b"b", &[b])).unwrap();
//! assert!(sim.run_until(std::time::Duration::from_secs(5), |x| {
//!     x.node(0).opened().contains(&s) && !x.node(1).opened().is_empty()
//! }));
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use bytes::Bytes;
use rtmfp::{Endpoint, Event, Machine, SessionId};
use rtmfp_sim::{Datagram, Node};

/// A [`Machine`] as a simulator [`Node`] at one address: it drives the
/// machine as a host would (events drained after every input into
/// [`reported`](Self::reported), the next timeout re-read), and derefs to the
/// machine.
#[derive(Debug)]
pub struct SimNode<M: Machine> {
    /// The machine.
    pub machine: M,
    /// Its address.
    pub addr: SocketAddr,
    /// Every event the machine reported, in order.
    pub reported: Vec<M::Event>,
    next_timeout: Option<Instant>,
    buf: Vec<u8>,
}

impl<M: Machine> SimNode<M> {
    /// `machine` at `addr`.
    pub fn new(addr: SocketAddr, machine: M) -> Self {
        let mut n = Self {
            machine,
            addr,
            reported: Vec::new(),
            next_timeout: None,
            buf: Vec::with_capacity(2048),
        };
        n.next_timeout = n.machine.poll_timeout();
        n
    }

    /// Runs `f` on the machine at `now`, then collects what it reported
    /// (as after any input).
    pub fn with<R>(&mut self, now: Instant, f: impl FnOnce(&mut M, Instant) -> R) -> R {
        let r = f(&mut self.machine, now);
        self.pump();
        r
    }

    /// A command, as a host would hand it over.
    pub fn command(&mut self, now: Instant, c: M::Command) {
        self.machine.handle_command(now, c);
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(e) = self.machine.poll_event() {
            self.reported.push(e);
        }
        self.next_timeout = self.machine.poll_timeout();
    }
}

impl<M: Machine> Deref for SimNode<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.machine
    }
}

impl<M: Machine> DerefMut for SimNode<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.machine
    }
}

impl<M: Machine> Node for SimNode<M> {
    fn handle_datagram(&mut self, now: Instant, src: SocketAddr, _dst: SocketAddr, data: &[u8]) {
        self.machine.handle_datagram(now, src, data);
        self.pump();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.machine.handle_timeout(now);
        self.pump();
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        let dst = self.machine.poll_transmit(now, &mut self.buf)?;
        let d = Datagram::new(self.addr, dst, self.buf.as_slice());
        self.pump();
        Some(d)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }
}

/// What a test does with an engine: called after every input, it drains
/// the engine's events (`ep.poll_event()`) and acts on them.
pub trait Script {
    /// The engine had an input at `now`.
    fn process(&mut self, ep: &mut Endpoint, now: Instant);

    /// When the script itself next wants [`process`](Self::process) called
    /// (state machines of its own with timers).
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// A [`Machine`] made of an engine and a [`Script`]; derefs to the script.
#[derive(Debug)]
pub struct Engine<S> {
    /// The engine.
    pub ep: Endpoint,
    /// The script (the test's side of the machine).
    pub user: S,
}

impl<S: Script> Engine<S> {
    /// `ep` driven by `script`.
    pub fn new(ep: Endpoint, script: S) -> Self {
        Self { ep, user: script }
    }

    /// Runs `f` on the engine and the script, then lets the script see the
    /// results.
    pub fn call<R>(&mut self, now: Instant, f: impl FnOnce(&mut Endpoint, Instant) -> R) -> R {
        let r = f(&mut self.ep, now);
        self.user.process(&mut self.ep, now);
        r
    }
}

impl<S> Deref for Engine<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.user
    }
}

impl<S> DerefMut for Engine<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.user
    }
}

/// A command for an [`Engine`]: a call on the engine and its script.
pub type EngineCall<S> = Box<dyn FnOnce(&mut Endpoint, &mut S, Instant)>;

impl<S: Script> Machine for Engine<S> {
    type Command = EngineCall<S>;
    /// Events stay with the script.
    type Event = std::convert::Infallible;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.ep.handle_datagram(now, from, data);
        self.user.process(&mut self.ep, now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        self.user.process(&mut self.ep, now);
    }

    fn handle_command(&mut self, now: Instant, command: EngineCall<S>) {
        command(&mut self.ep, &mut self.user, now);
        self.user.process(&mut self.ep, now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let dst = self.ep.poll_transmit(now, buf);
        // sending may report (writable flows, abandoned messages)
        self.user.process(&mut self.ep, now);
        dst
    }

    fn poll_event(&mut self) -> Option<std::convert::Infallible> {
        None
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.ep.poll_timeout(), self.user.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The plainest script: keeps every engine event and reads every readable
/// flow to its end.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Bytes received per (session, flow), concatenated.
    pub received: HashMap<(SessionId, u64), Vec<u8>>,
    /// Messages received per (session, flow): when, what, and whether a gap
    /// (abandoned messages) came before.
    pub messages: HashMap<(SessionId, u64), Vec<(Instant, Bytes, bool)>>,
    /// Leave readable flows unread (to test a slow reader).
    pub hold_reads: bool,
}

impl Recorder {
    /// Reads everything `flow` holds.
    pub fn read_all(&mut self, ep: &mut Endpoint, now: Instant, session: SessionId, flow: u64) {
        while let Some(m) = ep.read(now, session, flow) {
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

    /// Sessions reported open, in order.
    pub fn opened(&self) -> Vec<SessionId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::SessionOpened { session, .. } => Some(*session),
                _ => None,
            })
            .collect()
    }

    /// The first failure to open a session, if any.
    pub fn failed(&self) -> Option<rtmfp::OpenError> {
        self.events.iter().find_map(|e| match e {
            Event::SessionFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
    }

    /// Incoming flows, in order.
    pub fn incoming_flows(&self) -> Vec<(SessionId, u64)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::IncomingFlow { session, flow, .. } => Some((*session, *flow)),
                _ => None,
            })
            .collect()
    }

    /// Whether an event matching `f` was reported.
    pub fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }
}

impl Script for Recorder {
    fn process(&mut self, ep: &mut Endpoint, now: Instant) {
        while let Some(e) = ep.poll_event() {
            if let Event::Readable { session, flow } = e {
                if !self.hold_reads {
                    self.read_all(ep, now, session, flow);
                }
            }
            self.events.push(e);
        }
    }
}

impl<S: Script> SimNode<Engine<S>> {
    /// Runs `f` on the engine, lets the script see the results, and collects
    /// what the node has to send.
    pub fn call<R>(&mut self, now: Instant, f: impl FnOnce(&mut Endpoint, Instant) -> R) -> R {
        self.with(now, |m, now| m.call(now, f))
    }
}

/// Opens a flow on session `sid` of node `from`, sends `data` in 1,000-byte
/// messages and runs the simulation until node `to` holds all of it (at
/// most `within` of simulated time); panics when it does not arrive intact.
pub fn move_data(
    sim: &mut rtmfp_sim::Sim<SimNode<Engine<Recorder>>>,
    from: usize,
    to: usize,
    sid: SessionId,
    data: &[u8],
    within: std::time::Duration,
) {
    let now = sim.now();
    let flow = sim
        .node_mut(from)
        .call(now, |ep, now| {
            ep.open_flow(now, sid, b"test", None, rtmfp::Priority::ROUTINE)
        })
        .expect("open a flow");
    for chunk in data.chunks(1000) {
        let now = sim.now();
        sim.node_mut(from)
            .call(now, |ep, now| {
                ep.send(now, sid, flow, Bytes::copy_from_slice(chunk), None)
            })
            .expect("send");
    }
    let len = data.len();
    let ok = sim.run_until(within, |s| {
        s.node(to).received.values().any(|v| v.len() >= len)
    });
    assert!(ok, "data did not arrive");
    let got = sim.node(to).received.values().next().expect("a flow");
    assert_eq!(got.as_slice(), data);
}
