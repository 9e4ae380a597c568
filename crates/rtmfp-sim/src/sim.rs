//! Discrete-event driver for sans-IO nodes attached to a [`Network`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::network::{Datagram, Network};

/// Default cap on timeouts fired at one virtual instant (see
/// [`Sim::set_stall_limits`]).
pub const DEFAULT_MAX_TIMEOUTS_PER_INSTANT: u64 = 10_000;
/// Default cap on events (deliveries + timeouts) processed at one virtual
/// instant (see [`Sim::set_stall_limits`]).
pub const DEFAULT_MAX_EVENTS_PER_INSTANT: u64 = 1_000_000;
/// Default cap on datagrams drained from one node in one go (see
/// [`Sim::set_stall_limits`]).
pub const DEFAULT_MAX_TRANSMITS_PER_DRAIN: u64 = 1_000_000;

/// A participant driven by the simulator (a sans-IO engine adaptor).
///
/// The simulator calls these methods with the current virtual time; a node
/// must never read the real clock.
pub trait Node {
    /// A datagram from `src` arrived on the local socket `dst`.
    fn handle_datagram(&mut self, now: Instant, src: SocketAddr, dst: SocketAddr, data: &[u8]);
    /// The deadline last reported by [`Node::poll_timeout`] has passed.
    /// Called with `now >= deadline` (a deadline in the past fires at the
    /// current time). By default nothing happens (a node without timers).
    fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }
    /// Next datagram to send, if any: (local source address, destination,
    /// bytes). Called repeatedly until it returns `None`.
    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram>;
    /// When the node next wants [`Node::handle_timeout`] called, if ever
    /// (by default never).
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Delivery,
    Timeout(usize),
}

/// Deterministic discrete-event simulation of [`Node`]s over a [`Network`].
///
/// Virtual time only moves forward, and only inside [`Sim::step`],
/// [`Sim::run_for`] and [`Sim::run_until`]. At each step the earliest event
/// is processed: a datagram arrival (delivered to the node owning its
/// destination address) or a node timeout. Deliveries win ties against
/// timeouts; timeouts of different nodes are fired in node index order.
/// After every event (and before looking for the next one) every node's
/// [`Node::poll_transmit`] is drained into the network, in node index order.
pub struct Sim<N: Node> {
    /// The network; configure links, NAT and partitions through it.
    pub net: Network,
    nodes: Vec<N>,
    routes: BTreeMap<SocketAddr, usize>,
    start: Instant,
    now: Instant,
    events: u64,
    stall_instant: Instant,
    timeouts_at_instant: u64,
    events_at_instant: u64,
    max_timeouts_per_instant: u64,
    max_events_per_instant: u64,
    max_transmits_per_drain: u64,
}

impl<N: Node> fmt::Debug for Sim<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("elapsed", &self.elapsed())
            .field("nodes", &self.nodes.len())
            .field("routes", &self.routes)
            .field("events", &self.events)
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

impl<N: Node> Sim<N> {
    /// Creates a simulation with a perfect default network. The base
    /// [`Instant`] is read from the real clock once, here; everything after
    /// that is virtual.
    pub fn new(seed: u64) -> Self {
        Self::with_start(seed, Instant::now())
    }

    /// Creates a simulation whose virtual time starts at `start`.
    pub fn with_start(seed: u64, start: Instant) -> Self {
        Self::with_network(Network::new(seed, start))
    }

    /// Creates a simulation around an existing network; virtual time starts
    /// at [`Network::start`].
    pub fn with_network(net: Network) -> Self {
        let start = net.start();
        Self {
            net,
            nodes: Vec::new(),
            routes: BTreeMap::new(),
            start,
            now: start,
            events: 0,
            stall_instant: start,
            timeouts_at_instant: 0,
            events_at_instant: 0,
            max_timeouts_per_instant: DEFAULT_MAX_TIMEOUTS_PER_INSTANT,
            max_events_per_instant: DEFAULT_MAX_EVENTS_PER_INSTANT,
            max_transmits_per_drain: DEFAULT_MAX_TRANSMITS_PER_DRAIN,
        }
    }

    /// Changes the livelock guards: the simulation panics when more than
    /// `timeouts` timeouts or `events` events are processed at a single
    /// virtual instant, or when one node yields more than `transmits`
    /// datagrams from a single drain of [`Node::poll_transmit`].
    pub fn set_stall_limits(&mut self, timeouts: u64, events: u64, transmits: u64) {
        self.max_timeouts_per_instant = timeouts;
        self.max_events_per_instant = events;
        self.max_transmits_per_drain = transmits;
    }

    /// Adds a node that receives datagrams addressed to any of `addrs`, and
    /// returns its index.
    ///
    /// # Panics
    /// If one of `addrs` is already owned by a node.
    pub fn add_node(&mut self, node: N, addrs: &[SocketAddr]) -> usize {
        let i = self.nodes.len();
        self.nodes.push(node);
        for &a in addrs {
            self.add_addr(i, a);
        }
        i
    }

    /// Makes node `i` also receive datagrams addressed to `addr`.
    ///
    /// # Panics
    /// If `addr` is already owned by another node or `i` is out of range.
    pub fn add_addr(&mut self, i: usize, addr: SocketAddr) {
        assert!(i < self.nodes.len(), "rtmfp-sim: no node {i}");
        if let Some(&owner) = self.routes.get(&addr) {
            assert!(
                owner == i,
                "rtmfp-sim: address {addr} is already owned by node {owner}"
            );
        }
        self.routes.insert(addr, i);
    }

    /// Detaches `addr` from whichever node owns it; returns that node.
    pub fn remove_addr(&mut self, addr: SocketAddr) -> Option<usize> {
        self.routes.remove(&addr)
    }

    /// The node owning `addr`, if any.
    pub fn owner(&self, addr: SocketAddr) -> Option<usize> {
        self.routes.get(&addr).copied()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &N {
        &self.nodes[i]
    }

    /// Node `i`, mutably (for example to start a connection). Datagrams it
    /// queues are picked up at the next step.
    pub fn node_mut(&mut self, i: usize) -> &mut N {
        &mut self.nodes[i]
    }

    /// All nodes, by index.
    pub fn nodes(&self) -> &[N] {
        &self.nodes
    }

    /// All nodes, by index, mutably.
    pub fn nodes_mut(&mut self) -> &mut [N] {
        &mut self.nodes
    }

    /// The virtual start time.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Number of events (deliveries and timeouts) processed so far.
    pub fn events_processed(&self) -> u64 {
        self.events
    }

    /// Sends a datagram into the network at the current time, as if sent by
    /// the socket `d.src` (subject to NAT and link effects).
    pub fn send(&mut self, d: Datagram) {
        self.net.send(self.now, d);
    }

    /// Time of the earliest pending event, if any (never earlier than now).
    pub fn next_event_time(&self) -> Option<Instant> {
        self.next_event().map(|(t, _)| t)
    }

    /// Advances to the earliest pending event (a delivery or a node timeout),
    /// processes it, then drains every node's `poll_transmit` into the
    /// network. Returns `false` (without advancing time) when nothing at all
    /// is pending.
    ///
    /// # Panics
    /// If a livelock guard trips (see [`Sim::set_stall_limits`]).
    pub fn step(&mut self) -> bool {
        self.drain_transmits();
        match self.next_event() {
            None => false,
            Some((t, ev)) => {
                self.process(t, ev);
                self.drain_transmits();
                true
            }
        }
    }

    /// Processes every event up to and including `now + d`, then sets the
    /// virtual time to exactly `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        loop {
            self.drain_transmits();
            match self.next_event() {
                Some((t, ev)) if t <= deadline => self.process(t, ev),
                _ => break,
            }
        }
        self.now = deadline;
    }

    /// Runs until `cond` returns `true` (checked before the first event and
    /// after every event) or until `limit` of virtual time has passed.
    /// Returns whether `cond` became true; on `false` the virtual time is
    /// exactly `now + limit`.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            self.drain_transmits();
            if cond(self) {
                return true;
            }
            match self.next_event() {
                Some((t, ev)) if t <= deadline => self.process(t, ev),
                _ => {
                    self.now = deadline;
                    return cond(self);
                }
            }
        }
    }

    fn next_event(&self) -> Option<(Instant, Event)> {
        let mut best = self
            .net
            .next_delivery()
            .map(|t| (t.max(self.now), Event::Delivery));
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(t) = node.poll_timeout() {
                let t = t.max(self.now);
                if best.is_none_or(|(b, _)| t < b) {
                    best = Some((t, Event::Timeout(i)));
                }
            }
        }
        best
    }

    fn process(&mut self, t: Instant, ev: Event) {
        debug_assert!(t >= self.now);
        self.now = t;
        if t != self.stall_instant {
            self.stall_instant = t;
            self.timeouts_at_instant = 0;
            self.events_at_instant = 0;
        }
        self.events += 1;
        self.events_at_instant += 1;
        if self.events_at_instant > self.max_events_per_instant {
            panic!(
                "rtmfp-sim: livelock: more than {} events processed at the same virtual \
                 instant ({:?} after start) without time advancing (zero-delay message loop?)",
                self.max_events_per_instant,
                self.elapsed()
            );
        }
        match ev {
            Event::Delivery => {
                if let Some(d) = self.net.pop_due(t) {
                    match self.routes.get(&d.dst) {
                        Some(&i) => {
                            self.net.record_delivered(d.data.len());
                            self.nodes[i].handle_datagram(t, d.src, d.dst, &d.data);
                        }
                        None => self.net.record_no_route(),
                    }
                }
            }
            Event::Timeout(i) => {
                self.timeouts_at_instant += 1;
                if self.timeouts_at_instant > self.max_timeouts_per_instant {
                    panic!(
                        "rtmfp-sim: livelock: more than {} timeouts fired at the same virtual \
                         instant ({:?} after start); node {i} keeps returning a poll_timeout() \
                         <= now after handle_timeout() without making progress",
                        self.max_timeouts_per_instant,
                        self.elapsed()
                    );
                }
                self.nodes[i].handle_timeout(t);
            }
        }
    }

    fn drain_transmits(&mut self) {
        let now = self.now;
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let mut count = 0u64;
            while let Some(d) = node.poll_transmit(now) {
                count += 1;
                if count > self.max_transmits_per_drain {
                    panic!(
                        "rtmfp-sim: node {i} produced more than {} datagrams from one \
                         poll_transmit() drain; it never returns None?",
                        self.max_transmits_per_drain
                    );
                }
                self.net.send(now, d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkConfig;
    use std::collections::VecDeque;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Sends numbered pings to `peer`, the next one when the previous pong
    /// arrives, retransmitting after `rto` without an answer.
    #[derive(Debug)]
    struct Pinger {
        local: SocketAddr,
        peer: SocketAddr,
        rto: Duration,
        target: u32,
        next: u32,
        outbox: VecDeque<Datagram>,
        timer: Option<Instant>,
        log: Vec<(Instant, String)>,
    }

    impl Pinger {
        fn new(local: SocketAddr, peer: SocketAddr, target: u32, rto: Duration) -> Self {
            Self {
                local,
                peer,
                rto,
                target,
                next: 0,
                outbox: VecDeque::new(),
                timer: None,
                log: Vec::new(),
            }
        }

        fn start(&mut self, now: Instant) {
            self.send_ping(now);
        }

        fn send_ping(&mut self, now: Instant) {
            let d = Datagram::new(self.local, self.peer, self.next.to_be_bytes().to_vec());
            self.outbox.push_back(d);
            self.timer = Some(now + self.rto);
        }

        fn done(&self) -> bool {
            self.next >= self.target
        }
    }

    /// Answers every ping with a pong carrying the same number.
    #[derive(Debug)]
    struct Ponger {
        outbox: VecDeque<Datagram>,
        log: Vec<(Instant, String)>,
    }

    #[derive(Debug)]
    enum PingNode {
        Ping(Pinger),
        Pong(Ponger),
    }

    impl Node for PingNode {
        fn handle_datagram(&mut self, now: Instant, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
            let n = u32::from_be_bytes(data.try_into().unwrap());
            match self {
                PingNode::Ping(p) => {
                    p.log.push((now, format!("pong {n} from {src}")));
                    if n == p.next {
                        p.next += 1;
                        if p.done() {
                            p.timer = None;
                        } else {
                            p.send_ping(now);
                        }
                    }
                }
                PingNode::Pong(p) => {
                    p.log.push((now, format!("ping {n} from {src}")));
                    p.outbox.push_back(Datagram::new(dst, src, data.to_vec()));
                }
            }
        }

        fn handle_timeout(&mut self, now: Instant) {
            if let PingNode::Ping(p) = self {
                p.log.push((now, format!("rto {}", p.next)));
                p.send_ping(now);
            }
        }

        fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
            match self {
                PingNode::Ping(p) => p.outbox.pop_front(),
                PingNode::Pong(p) => p.outbox.pop_front(),
            }
        }

        fn poll_timeout(&self) -> Option<Instant> {
            match self {
                PingNode::Ping(p) => p.timer,
                PingNode::Pong(_) => None,
            }
        }
    }

    fn pinger(sim: &Sim<PingNode>) -> &Pinger {
        match sim.node(0) {
            PingNode::Ping(p) => p,
            PingNode::Pong(_) => unreachable!(),
        }
    }

    const CLIENT: &str = "10.0.0.1:5000";
    const SERVER: &str = "10.0.0.2:1935";

    fn ping_pong_sim(seed: u64, target: u32, link: LinkConfig) -> Sim<PingNode> {
        let mut sim = Sim::new(seed);
        sim.net.set_default_link(link);
        let c = addr(CLIENT);
        let s = addr(SERVER);
        let rto = Duration::from_millis(100);
        sim.add_node(PingNode::Ping(Pinger::new(c, s, target, rto)), &[c]);
        sim.add_node(
            PingNode::Pong(Ponger {
                outbox: VecDeque::new(),
                log: Vec::new(),
            }),
            &[s],
        );
        let now = sim.now();
        if let PingNode::Ping(p) = sim.node_mut(0) {
            p.start(now);
        }
        sim
    }

    #[test]
    fn ping_pong_over_delay() {
        let link = LinkConfig::default().with_delay(Duration::from_millis(10));
        let mut sim = ping_pong_sim(1, 50, link);
        let ok = sim.run_until(Duration::from_secs(10), |s| pinger(s).done());
        assert!(ok);
        assert_eq!(sim.elapsed(), Duration::from_millis(50 * 20));
        assert_eq!(sim.net.stats().sent, 100);
        assert_eq!(sim.net.stats().delivered, 100);
        assert_eq!(sim.net.stats().bytes_delivered, 400);
        // Nothing left: the pinger stopped its timer.
        assert!(!sim.step());
        assert_eq!(sim.elapsed(), Duration::from_millis(1000));
    }

    #[test]
    fn ping_pong_recovers_from_loss_with_timeouts() {
        let link = LinkConfig::wan(Duration::from_millis(15)).with_loss(0.3);
        let mut sim = ping_pong_sim(2, 200, link);
        assert!(sim.run_until(Duration::from_secs(600), |s| pinger(s).done()));
        let stats = sim.net.stats().clone();
        assert!(stats.dropped_loss > 50, "{stats:?}");
        assert!(pinger(&sim).log.iter().any(|(_, l)| l.starts_with("rto")));
    }

    #[test]
    fn run_until_gives_up_at_limit() {
        let link = LinkConfig::default().with_delay(Duration::from_millis(10));
        let mut sim = ping_pong_sim(1, 1_000_000, link);
        let ok = sim.run_until(Duration::from_millis(105), |s| pinger(s).done());
        assert!(!ok);
        assert_eq!(sim.elapsed(), Duration::from_millis(105));
        assert_eq!(pinger(&sim).next, 5);
    }

    fn event_log(seed: u64) -> (Vec<(Duration, String)>, crate::NetStats) {
        let link = LinkConfig::default()
            .with_delay(Duration::from_millis(20))
            .with_jitter(Duration::from_millis(10))
            .with_loss(0.2)
            .with_duplicate(0.1)
            .with_reorder(0.1, Duration::from_millis(30));
        let mut sim = ping_pong_sim(seed, 300, link);
        assert!(sim.run_until(Duration::from_secs(3600), |s| pinger(s).done()));
        let start = sim.start();
        let mut log = Vec::new();
        for node in sim.nodes() {
            let l = match node {
                PingNode::Ping(p) => &p.log,
                PingNode::Pong(p) => &p.log,
            };
            log.extend(l.iter().map(|(t, s)| (*t - start, s.clone())));
        }
        (log, sim.net.stats().clone())
    }

    #[test]
    fn sim_is_deterministic() {
        let (a, sa) = event_log(1234);
        let (b, sb) = event_log(1234);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        let (c, _) = event_log(4321);
        assert_ne!(a, c);
    }

    #[test]
    fn unknown_destination_is_dropped_and_counted() {
        let mut sim: Sim<PingNode> = Sim::new(1);
        let c = addr(CLIENT);
        let nowhere = addr("10.9.9.9:9");
        sim.add_node(
            PingNode::Ping(Pinger::new(c, nowhere, 1, Duration::from_secs(1))),
            &[c],
        );
        let now = sim.now();
        if let PingNode::Ping(p) = sim.node_mut(0) {
            p.start(now);
        }
        sim.run_for(Duration::from_millis(3500));
        let s = sim.net.stats();
        // Initial send plus three retransmissions.
        assert_eq!(s.sent, 4);
        assert_eq!(s.dropped_no_route, 4);
        assert_eq!(s.delivered, 0);
        assert_eq!(sim.elapsed(), Duration::from_millis(3500));
    }

    #[test]
    fn nat_through_sim() {
        let link = LinkConfig::default().with_delay(Duration::from_millis(5));
        let mut sim = ping_pong_sim(3, 10, link);
        let outer = addr("203.0.113.9:62000");
        sim.net.set_nat(addr(CLIENT), outer);
        assert!(sim.run_until(Duration::from_secs(1), |s| pinger(s).done()));
        match sim.node(1) {
            PingNode::Pong(p) => {
                assert!(p.log.iter().all(|(_, l)| l.ends_with(&outer.to_string())))
            }
            PingNode::Ping(_) => unreachable!(),
        }
        assert!(pinger(&sim).log.iter().all(|(_, l)| l.ends_with(SERVER)));
    }

    #[test]
    fn partition_then_heal() {
        let link = LinkConfig::default().with_delay(Duration::from_millis(5));
        let mut sim = ping_pong_sim(4, 20, link);
        let c = addr(CLIENT).ip();
        let s = addr(SERVER).ip();
        sim.run_for(Duration::from_millis(50));
        let before = pinger(&sim).next;
        sim.net.block_both(c, s, true);
        sim.run_for(Duration::from_millis(500));
        // At most the exchange in flight when the partition began completes.
        assert!(pinger(&sim).next <= before + 1);
        assert!(sim.net.stats().dropped_blocked >= 4);
        sim.net.block_both(c, s, false);
        assert!(sim.run_until(Duration::from_secs(5), |s| pinger(s).done()));
    }

    /// A node driven only by a periodic timer.
    #[derive(Debug)]
    struct Ticker {
        next: Option<Instant>,
        period: Duration,
        fired: Vec<Instant>,
    }

    impl Node for Ticker {
        fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: SocketAddr, _: &[u8]) {}

        fn handle_timeout(&mut self, now: Instant) {
            self.fired.push(now);
            self.next = Some(now + self.period);
        }

        fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
            None
        }

        fn poll_timeout(&self) -> Option<Instant> {
            self.next
        }
    }

    /// A simulation of one [`Ticker`], first due `first` after the start (or
    /// never), and its start time.
    fn ticker_sim(first: Option<Duration>, period: Duration) -> (Sim<Ticker>, Instant) {
        let mut sim = Sim::new(1);
        let start = sim.start();
        let ticker = Ticker {
            next: first.map(|d| start + d),
            period,
            fired: Vec::new(),
        };
        sim.add_node(ticker, &[]);
        (sim, start)
    }

    #[test]
    fn run_for_is_bounded_in_virtual_time() {
        let (mut sim, start) = ticker_sim(Some(Duration::from_millis(1)), Duration::from_millis(1));
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.elapsed(), Duration::from_secs(1));
        assert_eq!(sim.node(0).fired.len(), 1000);
        assert_eq!(sim.events_processed(), 1000);
        assert_eq!(
            sim.next_event_time(),
            Some(start + Duration::from_millis(1001))
        );
    }

    #[test]
    fn past_timeout_fires_at_now() {
        let (mut sim, start) = ticker_sim(None, Duration::from_secs(3600));
        assert!(!sim.step());
        sim.run_for(Duration::from_millis(10));
        sim.node_mut(0).next = Some(start + Duration::from_millis(2));
        assert!(sim.step());
        assert_eq!(sim.node(0).fired, vec![start + Duration::from_millis(10)]);
        assert_eq!(sim.elapsed(), Duration::from_millis(10));
    }

    /// A broken node whose deadline never moves.
    #[derive(Debug)]
    struct Stuck(Instant);

    impl Node for Stuck {
        fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: SocketAddr, _: &[u8]) {}
        fn handle_timeout(&mut self, _now: Instant) {}
        fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            Some(self.0)
        }
    }

    #[test]
    #[should_panic(expected = "timeouts fired at the same virtual instant")]
    fn stuck_timer_panics_instead_of_hanging() {
        let mut sim = Sim::new(1);
        let start = sim.start();
        sim.add_node(Stuck(start), &[]);
        sim.run_for(Duration::from_secs(1));
    }

    /// A broken node that never stops transmitting.
    #[derive(Debug)]
    struct Chatty(SocketAddr);

    impl Node for Chatty {
        fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: SocketAddr, _: &[u8]) {}
        fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
            Some(Datagram::new(self.0, self.0, vec![]))
        }
    }

    #[test]
    #[should_panic(expected = "never returns None")]
    fn endless_transmit_panics() {
        let a = addr(CLIENT);
        let mut sim = Sim::new(1);
        sim.set_stall_limits(10, 100, 1000);
        sim.add_node(Chatty(a), &[a]);
        sim.step();
    }

    /// Echoes every datagram straight back (a zero-delay loop with a peer).
    #[derive(Debug)]
    struct Echo(VecDeque<Datagram>);

    impl Node for Echo {
        fn handle_datagram(&mut self, _: Instant, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
            self.0.push_back(Datagram::new(dst, src, data.to_vec()));
        }
        fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
            self.0.pop_front()
        }
    }

    #[test]
    #[should_panic(expected = "zero-delay message loop")]
    fn zero_delay_loop_panics() {
        let a = addr(CLIENT);
        let b = addr(SERVER);
        let mut sim = Sim::new(1);
        sim.set_stall_limits(10, 1000, 1000);
        sim.add_node(Echo(VecDeque::new()), &[a]);
        sim.add_node(Echo(VecDeque::new()), &[b]);
        sim.send(Datagram::new(a, b, vec![1]));
        sim.run_for(Duration::from_secs(1));
    }

    #[test]
    #[should_panic(expected = "already owned")]
    fn duplicate_address_panics() {
        let a = addr(CLIENT);
        let mut sim = Sim::new(1);
        sim.add_node(Echo(VecDeque::new()), &[a]);
        sim.add_node(Echo(VecDeque::new()), &[a]);
    }

    #[test]
    fn address_ownership_changes() {
        let a = addr(CLIENT);
        let b = addr(SERVER);
        let mut sim = Sim::new(1);
        sim.add_node(Echo(VecDeque::new()), &[a]);
        let n = sim.add_node(Echo(VecDeque::new()), &[]);
        assert_eq!(sim.owner(a), Some(0));
        assert_eq!(sim.remove_addr(a), Some(0));
        sim.add_addr(n, a);
        sim.add_addr(n, b);
        assert_eq!(sim.owner(a), Some(1));
        assert_eq!(sim.owner(b), Some(1));
    }

    #[test]
    fn many_datagrams_through_sim() {
        // 100k datagrams through an impaired link into an echo node whose
        // replies go to an address nobody owns: exercises the event loop at
        // volume and the accounting invariants.
        let b = addr(SERVER);
        let sink = addr("10.0.0.3:1");
        let mut sim = Sim::new(9);
        sim.net.set_default_link(
            LinkConfig::default()
                .with_delay(Duration::from_millis(5))
                .with_jitter(Duration::from_millis(1))
                .with_loss(0.01),
        );
        sim.add_node(Echo(VecDeque::new()), &[b]);
        let start = sim.start();
        for i in 0..100_000u64 {
            let at = start + Duration::from_micros(i * 10);
            sim.net.send(at, Datagram::new(sink, b, vec![0; 100]));
        }
        sim.run_for(Duration::from_secs(2));
        let s = sim.net.stats();
        assert_eq!(sim.net.in_flight(), 0);
        assert_eq!(s.sent, 100_000 + s.delivered);
        assert_eq!(s.sent, s.delivered + s.dropped());
        assert!(s.dropped_no_route > 97_000, "{s:?}");
    }
}
