//! The simulated network: links, NAT, partitions and the in-flight queue.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::link::LinkConfig;
use crate::rng::SimRng;

/// A UDP datagram travelling through the simulated network.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Datagram {
    /// Source address (as seen by the receiver once delivered, i.e. after
    /// NAT rewriting).
    pub src: SocketAddr,
    /// Destination address (once delivered: the address of the receiving
    /// socket, i.e. after reverse NAT mapping).
    pub dst: SocketAddr,
    /// UDP payload.
    pub data: Vec<u8>,
}

impl Datagram {
    /// Creates a datagram.
    pub fn new(src: SocketAddr, dst: SocketAddr, data: impl Into<Vec<u8>>) -> Self {
        Self {
            src,
            dst,
            data: data.into(),
        }
    }
}

/// Counters kept by a [`Network`].
///
/// Every datagram passed to [`Network::send`] is counted once in `sent` and
/// then either delivered or counted in exactly one `dropped_*` counter;
/// duplicates are additionally counted in `duplicated` and each copy counts
/// as delivered. Datagrams still in flight are counted in neither.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Datagrams handed out by [`Network::poll_delivery`] (or to a node by
    /// [`crate::Sim`]), including duplicate copies.
    pub delivered: u64,
    /// Dropped by random (independent or Gilbert–Elliott) loss.
    pub dropped_loss: u64,
    /// Tail-dropped because the bottleneck buffer was full.
    pub dropped_queue: u64,
    /// Dropped because larger than the link MTU.
    pub dropped_mtu: u64,
    /// Dropped because the path was blocked with [`Network::block`].
    pub dropped_blocked: u64,
    /// Dropped on arrival because no node owns the destination address
    /// (only counted when driven by [`crate::Sim`]).
    pub dropped_no_route: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
    /// Datagrams selected for reordering (held back by `reorder_delay`),
    /// whether or not anything actually overtook them.
    pub reordered: u64,
    /// Payload bytes delivered (including duplicate copies).
    pub bytes_delivered: u64,
}

impl NetStats {
    /// Total datagrams dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss
            + self.dropped_queue
            + self.dropped_mtu
            + self.dropped_blocked
            + self.dropped_no_route
    }
}

/// Dynamic state of one directional link (ordered host pair).
#[derive(Debug)]
struct LinkState {
    /// Per-link override of the default configuration.
    cfg: Option<LinkConfig>,
    /// When the transmitter finishes serialising everything accepted so far.
    busy_until: Instant,
    /// Latest arrival time scheduled for a non-reordered datagram (FIFO).
    last_arrival: Instant,
    /// Gilbert–Elliott state: `true` when in the bad state.
    ge_bad: bool,
}

impl LinkState {
    fn new(start: Instant) -> Self {
        Self {
            cfg: None,
            busy_until: start,
            last_arrival: start,
            ge_bad: false,
        }
    }
}

/// A datagram in flight, ordered by (arrival time, send sequence).
#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    dgram: Datagram,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Deterministic simulated datagram network with virtual time.
///
/// The network does not own a clock: every call takes the current virtual
/// `now`, which must never go backwards. Links are directional and keyed by
/// the pair of *host* IP addresses of the physical endpoints: the sender's
/// own (pre-NAT) source IP and the receiver's (post-NAT) IP. The same key is
/// used by [`Network::block`]. NAT rewriting, blocking and all link effects
/// are decided when the datagram is sent; changing them later does not
/// affect datagrams already in flight.
#[derive(Debug)]
pub struct Network {
    rng: SimRng,
    start: Instant,
    default_link: LinkConfig,
    links: BTreeMap<(IpAddr, IpAddr), LinkState>,
    /// inner -> outer
    nat_out: BTreeMap<SocketAddr, SocketAddr>,
    /// outer -> inner
    nat_in: BTreeMap<SocketAddr, SocketAddr>,
    blocked: BTreeSet<(IpAddr, IpAddr)>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    next_seq: u64,
    stats: NetStats,
}

impl Network {
    /// Creates an empty network with perfect default links. `start` is the
    /// virtual time origin; all randomness derives from `seed`.
    pub fn new(seed: u64, start: Instant) -> Self {
        Self {
            rng: SimRng::new(seed),
            start,
            default_link: LinkConfig::default(),
            links: BTreeMap::new(),
            nat_out: BTreeMap::new(),
            nat_in: BTreeMap::new(),
            blocked: BTreeSet::new(),
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            stats: NetStats::default(),
        }
    }

    /// The virtual time origin given to [`Network::new`].
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Sets the configuration used by every link without its own override.
    ///
    /// # Panics
    /// If the configuration is invalid (see [`LinkConfig::validate`]).
    pub fn set_default_link(&mut self, cfg: LinkConfig) {
        assert_valid(&cfg);
        self.default_link = cfg;
    }

    /// The default link configuration.
    pub fn default_link(&self) -> &LinkConfig {
        &self.default_link
    }

    /// Overrides the configuration of the directional link `from -> to`.
    /// Queue/FIFO/burst state of the link is kept.
    ///
    /// # Panics
    /// If the configuration is invalid (see [`LinkConfig::validate`]).
    pub fn set_link(&mut self, from: IpAddr, to: IpAddr, cfg: LinkConfig) {
        assert_valid(&cfg);
        let start = self.start;
        self.links
            .entry((from, to))
            .or_insert_with(|| LinkState::new(start))
            .cfg = Some(cfg);
    }

    /// Sets the same configuration on both directions between `a` and `b`.
    pub fn set_link_symmetric(&mut self, a: IpAddr, b: IpAddr, cfg: LinkConfig) {
        self.set_link(a, b, cfg.clone());
        self.set_link(b, a, cfg);
    }

    /// Removes the override of `from -> to`, reverting to the default.
    pub fn clear_link(&mut self, from: IpAddr, to: IpAddr) {
        if let Some(link) = self.links.get_mut(&(from, to)) {
            link.cfg = None;
        }
    }

    /// The configuration in effect for `from -> to`.
    pub fn link_config(&self, from: IpAddr, to: IpAddr) -> &LinkConfig {
        self.links
            .get(&(from, to))
            .and_then(|l| l.cfg.as_ref())
            .unwrap_or(&self.default_link)
    }

    /// Installs (or replaces) a NAT mapping: datagrams sent from `inner`
    /// leave with source `outer`, and datagrams sent to `outer` are delivered
    /// to `inner`. Any previous mapping of `inner`, or onto `outer`, is
    /// removed. Changing the mapping of a live socket simulates an address
    /// change (NAT rebinding / mobility).
    pub fn set_nat(&mut self, inner: SocketAddr, outer: SocketAddr) {
        self.clear_nat(inner);
        if let Some(old_inner) = self.nat_in.remove(&outer) {
            self.nat_out.remove(&old_inner);
        }
        self.nat_out.insert(inner, outer);
        self.nat_in.insert(outer, inner);
    }

    /// Removes the NAT mapping of `inner`, if any.
    pub fn clear_nat(&mut self, inner: SocketAddr) {
        if let Some(outer) = self.nat_out.remove(&inner) {
            self.nat_in.remove(&outer);
        }
    }

    /// The public address `inner` is currently mapped to, if any.
    pub fn nat_mapping(&self, inner: SocketAddr) -> Option<SocketAddr> {
        self.nat_out.get(&inner).copied()
    }

    /// Blocks (or unblocks) the directional path `from -> to`: datagrams
    /// sent while blocked are dropped and counted in `dropped_blocked`.
    pub fn block(&mut self, from: IpAddr, to: IpAddr, blocked: bool) {
        if blocked {
            self.blocked.insert((from, to));
        } else {
            self.blocked.remove(&(from, to));
        }
    }

    /// Blocks or unblocks both directions between `a` and `b` (a partition).
    pub fn block_both(&mut self, a: IpAddr, b: IpAddr, blocked: bool) {
        self.block(a, b, blocked);
        self.block(b, a, blocked);
    }

    /// Whether `from -> to` is currently blocked.
    pub fn is_blocked(&self, from: IpAddr, to: IpAddr) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Sends a datagram at virtual time `now`, subject to NAT, partitions and
    /// the impairments of its link. `d.src` is the sender's own socket
    /// address; `d.dst` the address it sends to.
    pub fn send(&mut self, now: Instant, mut d: Datagram) {
        self.stats.sent += 1;

        let phys_src = d.src.ip();
        if let Some(outer) = self.nat_out.get(&d.src) {
            d.src = *outer;
        }
        if let Some(inner) = self.nat_in.get(&d.dst) {
            d.dst = *inner;
        }
        let phys_dst = d.dst.ip();

        if self.blocked.contains(&(phys_src, phys_dst)) {
            self.stats.dropped_blocked += 1;
            return;
        }

        let Self {
            rng,
            start,
            default_link,
            links,
            stats,
            ..
        } = self;
        let link = links
            .entry((phys_src, phys_dst))
            .or_insert_with(|| LinkState::new(*start));
        let cfg = link.cfg.as_ref().unwrap_or(default_link);
        let len = d.data.len();

        if len > cfg.mtu {
            stats.dropped_mtu += 1;
            return;
        }

        // Bottleneck queue and serialisation.
        let sent_at = match cfg.bandwidth_bps {
            Some(bps) if bps > 0 => {
                let backlog = backlog_bytes(link.busy_until.saturating_duration_since(now), bps);
                if backlog > 0 && backlog.saturating_add(len) > cfg.queue_bytes {
                    stats.dropped_queue += 1;
                    return;
                }
                let done = now.max(link.busy_until) + cfg.serialisation_time(len);
                link.busy_until = done;
                done
            }
            _ => now,
        };

        // Loss on the wire.
        let mut lost = rng.chance(cfg.loss);
        if let Some(ge) = &cfg.gilbert_elliott {
            let p = if link.ge_bad {
                ge.loss_in_bad
            } else {
                ge.loss_in_good
            };
            lost |= rng.chance(p);
            link.ge_bad = if link.ge_bad {
                !rng.chance(ge.p_bad_to_good)
            } else {
                rng.chance(ge.p_good_to_bad)
            };
        }
        if lost {
            stats.dropped_loss += 1;
            return;
        }

        // Propagation.
        let mut arrival = sent_at + cfg.delay + rng.duration_up_to(cfg.jitter);
        if rng.chance(cfg.reorder) {
            arrival += cfg.reorder_delay;
            stats.reordered += 1;
        } else {
            arrival = arrival.max(link.last_arrival);
            link.last_arrival = arrival;
        }

        if rng.chance(cfg.duplicate) {
            stats.duplicated += 1;
            let copy = d.clone();
            self.push(arrival, d);
            self.push(arrival, copy);
        } else {
            self.push(arrival, d);
        }
    }

    /// Schedules `d` for delivery at `at` exactly as given, bypassing NAT,
    /// partitions and link impairments (for injecting crafted traffic).
    /// Counted in `sent`.
    pub fn inject(&mut self, at: Instant, d: Datagram) {
        self.stats.sent += 1;
        self.push(at, d);
    }

    fn push(&mut self, at: Instant, dgram: Datagram) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push(Reverse(InFlight { at, seq, dgram }));
    }

    /// Arrival time of the earliest datagram in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(f)| f.at)
    }

    /// Number of datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Returns the next datagram whose arrival time is `<= now`, in arrival
    /// order (ties in send order), and counts it as delivered.
    pub fn poll_delivery(&mut self, now: Instant) -> Option<Datagram> {
        let d = self.pop_due(now)?;
        self.record_delivered(d.data.len());
        Some(d)
    }

    /// Pops the next due datagram without touching the delivery counters.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Datagram> {
        if self.next_delivery()? > now {
            return None;
        }
        self.in_flight.pop().map(|Reverse(f)| f.dgram)
    }

    pub(crate) fn record_delivered(&mut self, len: usize) {
        self.stats.delivered += 1;
        self.stats.bytes_delivered += len as u64;
    }

    pub(crate) fn record_no_route(&mut self) {
        self.stats.dropped_no_route += 1;
    }

    /// Drops everything in flight (not counted in any drop counter).
    pub fn clear_in_flight(&mut self) {
        self.in_flight.clear();
    }

    /// Counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Resets all counters to zero.
    pub fn reset_stats(&mut self) {
        self.stats = NetStats::default();
    }

    /// The network's random number generator, for tests that want extra
    /// randomness derived from the same seed. Drawing from it changes the
    /// subsequent network behaviour (deterministically).
    pub fn rng_mut(&mut self) -> &mut SimRng {
        &mut self.rng
    }
}

/// Bytes still to be serialised in `remaining` time at `bps` (rounded up).
fn backlog_bytes(remaining: Duration, bps: u64) -> usize {
    if remaining.is_zero() {
        return 0;
    }
    let bits = remaining.as_nanos() * u128::from(bps);
    let bytes = bits.div_ceil(8 * 1_000_000_000);
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

fn assert_valid(cfg: &LinkConfig) {
    if let Err(e) = cfg.validate() {
        panic!("rtmfp-sim: invalid LinkConfig: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::GilbertElliott;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const A: &str = "10.0.0.1:1000";
    const B: &str = "10.0.0.2:2000";

    /// Sends `n` datagrams from A to B, one every `gap`, numbering them, and
    /// returns the delivered (arrival offset, number) sequence.
    fn run_numbered(net: &mut Network, n: u32, gap: Duration) -> Vec<(Duration, u32)> {
        let start = net.start();
        let mut out = Vec::new();
        let mut now = start;
        for i in 0..n {
            net.send(
                now,
                Datagram::new(addr(A), addr(B), i.to_be_bytes().to_vec()),
            );
            while let Some(d) = net.poll_delivery(now) {
                out.push((
                    now - start,
                    u32::from_be_bytes(d.data[..4].try_into().unwrap()),
                ));
            }
            now += gap;
        }
        while let Some(t) = net.next_delivery() {
            now = now.max(t);
            let d = net.poll_delivery(now).unwrap();
            out.push((
                now - start,
                u32::from_be_bytes(d.data[..4].try_into().unwrap()),
            ));
        }
        out
    }

    fn impaired() -> LinkConfig {
        LinkConfig::default()
            .with_delay(Duration::from_millis(20))
            .with_jitter(Duration::from_millis(5))
            .with_loss(0.1)
            .with_gilbert_elliott(GilbertElliott::bursty(0.05, 3.0))
            .with_duplicate(0.05)
            .with_reorder(0.05, Duration::from_millis(15))
            .with_bandwidth(10_000_000)
            .with_queue_bytes(20_000)
    }

    fn count_inversions(seq: &[(Duration, u32)]) -> usize {
        seq.windows(2).filter(|w| w[1].1 < w[0].1).count()
    }

    /// A network with the default links, and the time it starts at.
    fn new_net(seed: u64) -> (Network, Instant) {
        let start = Instant::now();
        (Network::new(seed, start), start)
    }

    /// A network with `link` as its default link, and the time it starts at.
    fn net_with(seed: u64, link: LinkConfig) -> (Network, Instant) {
        let (mut net, start) = new_net(seed);
        net.set_default_link(link);
        (net, start)
    }

    #[test]
    fn deterministic_for_seed() {
        let start = Instant::now();
        let run = |seed| {
            let mut net = Network::new(seed, start);
            net.set_default_link(impaired());
            let seq = run_numbered(&mut net, 20_000, Duration::from_micros(300));
            (seq, net.stats().clone())
        };
        let (a, sa) = run(7);
        let (b, sb) = run(7);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        let (c, _) = run(8);
        assert_ne!(a, c);
    }

    #[test]
    fn perfect_link_delivers_everything_in_order_instantly() {
        let (mut net, _) = new_net(1);
        let seq = run_numbered(&mut net, 1000, Duration::from_millis(1));
        assert_eq!(seq.len(), 1000);
        for (i, (t, n)) in seq.iter().enumerate() {
            assert_eq!(*n as usize, i);
            assert_eq!(*t, Duration::from_millis(i as u64));
        }
        assert_eq!(net.stats().sent, 1000);
        assert_eq!(net.stats().delivered, 1000);
        assert_eq!(net.stats().bytes_delivered, 4000);
        assert_eq!(net.stats().dropped(), 0);
    }

    #[test]
    fn delay_applied() {
        let (mut net, start) = net_with(
            1,
            LinkConfig::default().with_delay(Duration::from_millis(30)),
        );
        net.send(start, Datagram::new(addr(A), addr(B), vec![1]));
        assert_eq!(net.next_delivery(), Some(start + Duration::from_millis(30)));
        assert!(net
            .poll_delivery(start + Duration::from_millis(29))
            .is_none());
        assert!(net
            .poll_delivery(start + Duration::from_millis(30))
            .is_some());
        assert!(net.next_delivery().is_none());
    }

    #[test]
    fn loss_rate_within_tolerance() {
        let (mut net, start) = net_with(99, LinkConfig::default().with_loss(0.2));
        let n = 100_000u64;
        for _ in 0..n {
            net.send(start, Datagram::new(addr(A), addr(B), vec![0; 8]));
        }
        let mut delivered = 0u64;
        while net.poll_delivery(start).is_some() {
            delivered += 1;
        }
        let s = net.stats();
        assert_eq!(s.sent, n);
        assert_eq!(s.delivered, delivered);
        assert_eq!(s.dropped_loss + s.delivered, n);
        let rate = s.dropped_loss as f64 / n as f64;
        // sigma = sqrt(0.2 * 0.8 / 1e5) ~= 0.00126; allow ~4 sigma.
        assert!((rate - 0.2).abs() < 0.005, "loss rate {rate}");
    }

    #[test]
    fn gilbert_elliott_is_bursty() {
        let ge = GilbertElliott::bursty(0.1, 5.0);
        let (mut net, _) = net_with(5, LinkConfig::default().with_gilbert_elliott(ge));
        let seq = run_numbered(&mut net, 100_000, Duration::from_micros(10));
        let rate = 1.0 - seq.len() as f64 / 100_000.0;
        assert!((rate - 0.1).abs() < 0.02, "GE loss rate {rate}");
        // Mean length of runs of consecutive losses should be ~5.
        let mut runs = 0u64;
        let mut lost = 0u64;
        let mut expected = 0u32;
        for &(_, n) in &seq {
            if n > expected {
                runs += 1;
                lost += u64::from(n - expected);
            }
            expected = n + 1;
        }
        let mean_run = lost as f64 / runs as f64;
        assert!((mean_run - 5.0).abs() < 0.75, "mean burst {mean_run}");
    }

    #[test]
    fn jitter_alone_keeps_fifo() {
        let (mut net, _) = net_with(
            3,
            LinkConfig::default()
                .with_delay(Duration::from_millis(10))
                .with_jitter(Duration::from_millis(10)),
        );
        let seq = run_numbered(&mut net, 10_000, Duration::from_micros(100));
        assert_eq!(seq.len(), 10_000);
        assert_eq!(count_inversions(&seq), 0);
        assert_eq!(net.stats().reordered, 0);
        // Jitter did spread the arrivals beyond the fixed delay.
        assert!(seq
            .iter()
            .any(|(t, n)| *t > Duration::from_micros(u64::from(*n) * 100 + 15_000)));
    }

    #[test]
    fn reordering_happens_when_enabled() {
        let (mut net, _) = net_with(
            4,
            LinkConfig::default()
                .with_delay(Duration::from_millis(10))
                .with_reorder(0.1, Duration::from_millis(5)),
        );
        let seq = run_numbered(&mut net, 10_000, Duration::from_micros(500));
        assert_eq!(seq.len(), 10_000);
        let inv = count_inversions(&seq);
        let reordered = net.stats().reordered;
        assert!((800..1200).contains(&reordered), "reordered {reordered}");
        assert!(inv > 500, "inversions {inv}");
        // Every datagram still arrives exactly once.
        let mut nums: Vec<u32> = seq.iter().map(|x| x.1).collect();
        nums.sort_unstable();
        assert!(nums.iter().enumerate().all(|(i, n)| *n as usize == i));
    }

    #[test]
    fn duplication() {
        let (mut net, _) = net_with(11, LinkConfig::default().with_duplicate(0.25));
        let seq = run_numbered(&mut net, 20_000, Duration::from_micros(10));
        let dups = net.stats().duplicated;
        assert_eq!(seq.len() as u64, 20_000 + dups);
        assert_eq!(net.stats().delivered, 20_000 + dups);
        let rate = dups as f64 / 20_000.0;
        assert!((rate - 0.25).abs() < 0.02, "dup rate {rate}");
        // Copies arrive back to back.
        let adjacent = seq.windows(2).filter(|w| w[0].1 == w[1].1).count() as u64;
        assert_eq!(adjacent, dups);
    }

    #[test]
    fn bandwidth_limits_throughput() {
        // 1 Mbit/s => 125 datagrams of 1000 bytes per second.
        let (mut net, start) = net_with(
            2,
            LinkConfig::default()
                .with_bandwidth(1_000_000)
                .with_queue_bytes(1_000_000_000),
        );
        let mut now = start;
        for _ in 0..250 {
            net.send(now, Datagram::new(addr(A), addr(B), vec![0; 1000]));
        }
        let mut arrivals = Vec::new();
        while let Some(t) = net.next_delivery() {
            now = t;
            net.poll_delivery(now).unwrap();
            arrivals.push(now - start);
        }
        assert_eq!(arrivals.len(), 250);
        assert_eq!(arrivals[0], Duration::from_millis(8));
        assert_eq!(arrivals[249], Duration::from_secs(2));
        for (i, a) in arrivals.iter().enumerate() {
            assert_eq!(*a, Duration::from_millis(8 * (i as u64 + 1)));
        }
    }

    #[test]
    fn bandwidth_tail_drop_and_sustained_rate() {
        let (mut net, start) = net_with(
            2,
            LinkConfig::default()
                .with_delay(Duration::from_millis(10))
                .with_bandwidth(1_000_000)
                .with_queue_bytes(10_000),
        );
        // Burst: the idle link takes one, the buffer holds 10 000 bytes in total.
        for _ in 0..100 {
            net.send(start, Datagram::new(addr(A), addr(B), vec![0; 1000]));
        }
        assert_eq!(net.in_flight(), 10);
        assert_eq!(net.stats().dropped_queue, 90);

        // Let the burst drain, then apply sustained overload: offer 4x the
        // capacity for 10 s.
        while net.poll_delivery(start + Duration::from_secs(1)).is_some() {}
        net.reset_stats();
        let mut now = start + Duration::from_secs(1);
        let end = now + Duration::from_secs(10);
        let mut delivered_bytes_in_window = 0u64;
        while now < end {
            net.send(now, Datagram::new(addr(A), addr(B), vec![0; 1000]));
            while let Some(d) = net.poll_delivery(now) {
                delivered_bytes_in_window += d.data.len() as u64;
            }
            now += Duration::from_millis(2);
        }
        let s = net.stats();
        assert_eq!(s.sent, 5000);
        // 10 s at 125 kB/s = 1.25 MB, +- the queue and delay edge effects.
        let expected = 1_250_000i64;
        let got = delivered_bytes_in_window as i64;
        assert!((got - expected).abs() <= 12_000, "delivered {got} bytes");
        assert!(s.dropped_queue >= 3_700, "tail drops {}", s.dropped_queue);
    }

    #[test]
    fn mtu_drop() {
        let (mut net, start) = net_with(1, LinkConfig::default().with_mtu(1200));
        net.send(start, Datagram::new(addr(A), addr(B), vec![0; 1200]));
        net.send(start, Datagram::new(addr(A), addr(B), vec![0; 1201]));
        assert_eq!(net.stats().dropped_mtu, 1);
        assert_eq!(net.poll_delivery(start).unwrap().data.len(), 1200);
        assert!(net.poll_delivery(start).is_none());
    }

    #[test]
    fn per_link_override_is_directional() {
        let (mut net, start) = new_net(1);
        let a = addr(A);
        let b = addr(B);
        net.set_default_link(LinkConfig::default().with_delay(Duration::from_millis(1)));
        net.set_link(
            a.ip(),
            b.ip(),
            LinkConfig::default().with_delay(Duration::from_millis(50)),
        );
        net.send(start, Datagram::new(a, b, vec![1]));
        net.send(start, Datagram::new(b, a, vec![2]));
        assert_eq!(net.next_delivery(), Some(start + Duration::from_millis(1)));
        assert_eq!(
            net.poll_delivery(start + Duration::from_millis(1))
                .unwrap()
                .data,
            vec![2]
        );
        assert_eq!(net.next_delivery(), Some(start + Duration::from_millis(50)));
        net.clear_link(a.ip(), b.ip());
        assert_eq!(
            net.link_config(a.ip(), b.ip()).delay,
            Duration::from_millis(1)
        );
    }

    #[test]
    fn nat_rewrites_both_directions() {
        let (mut net, start) = new_net(1);
        let inner = addr("192.168.1.10:5000");
        let outer = addr("203.0.113.7:40000");
        let server = addr("198.51.100.1:1935");
        net.set_nat(inner, outer);
        assert_eq!(net.nat_mapping(inner), Some(outer));

        net.send(start, Datagram::new(inner, server, vec![1]));
        let d = net.poll_delivery(start).unwrap();
        assert_eq!((d.src, d.dst), (outer, server));

        net.send(start, Datagram::new(server, outer, vec![2]));
        let d = net.poll_delivery(start).unwrap();
        assert_eq!((d.src, d.dst), (server, inner));

        // Rebinding to a new public address (address change).
        let outer2 = addr("203.0.113.7:40001");
        net.set_nat(inner, outer2);
        net.send(start, Datagram::new(inner, server, vec![3]));
        assert_eq!(net.poll_delivery(start).unwrap().src, outer2);
        net.send(start, Datagram::new(server, outer, vec![4]));
        // The old mapping is gone: delivered to the (unowned) old address.
        assert_eq!(net.poll_delivery(start).unwrap().dst, outer);

        net.clear_nat(inner);
        net.send(start, Datagram::new(inner, server, vec![5]));
        assert_eq!(net.poll_delivery(start).unwrap().src, inner);
        net.send(start, Datagram::new(server, outer2, vec![6]));
        assert_eq!(net.poll_delivery(start).unwrap().dst, outer2);
    }

    #[test]
    fn block_cuts_one_direction() {
        let (mut net, start) = new_net(1);
        let a = addr(A);
        let b = addr(B);
        net.block(a.ip(), b.ip(), true);
        assert!(net.is_blocked(a.ip(), b.ip()));
        net.send(start, Datagram::new(a, b, vec![1]));
        net.send(start, Datagram::new(b, a, vec![2]));
        assert_eq!(net.stats().dropped_blocked, 1);
        assert_eq!(net.poll_delivery(start).unwrap().data, vec![2]);
        assert!(net.poll_delivery(start).is_none());
        net.block(a.ip(), b.ip(), false);
        net.send(start, Datagram::new(a, b, vec![3]));
        assert_eq!(net.poll_delivery(start).unwrap().data, vec![3]);
        net.block_both(a.ip(), b.ip(), true);
        net.send(start, Datagram::new(a, b, vec![4]));
        net.send(start, Datagram::new(b, a, vec![5]));
        assert_eq!(net.stats().dropped_blocked, 3);
        assert_eq!(net.in_flight(), 0);
    }

    #[test]
    fn ties_delivered_in_send_order() {
        let (mut net, start) = new_net(1);
        let c = addr("10.0.0.3:3000");
        for i in 0..100u8 {
            let (s, d) = if i % 2 == 0 {
                (addr(A), addr(B))
            } else {
                (c, addr(A))
            };
            net.send(start, Datagram::new(s, d, vec![i]));
        }
        for i in 0..100u8 {
            assert_eq!(net.poll_delivery(start).unwrap().data, vec![i]);
        }
    }

    #[test]
    fn inject_bypasses_link() {
        let (mut net, start) = net_with(1, LinkConfig::default().with_loss(1.0));
        net.block(addr(A).ip(), addr(B).ip(), true);
        let at = start + Duration::from_millis(3);
        net.inject(at, Datagram::new(addr(A), addr(B), vec![9]));
        assert_eq!(net.next_delivery(), Some(at));
        assert_eq!(net.poll_delivery(at).unwrap().data, vec![9]);
    }

    #[test]
    #[should_panic(expected = "invalid LinkConfig")]
    fn invalid_config_panics() {
        let mut net = Network::new(1, Instant::now());
        net.set_default_link(LinkConfig::default().with_reorder(2.0, Duration::ZERO));
    }

    #[test]
    fn backlog_rounding() {
        assert_eq!(backlog_bytes(Duration::ZERO, 1_000_000), 0);
        assert_eq!(backlog_bytes(Duration::from_millis(8), 1_000_000), 1000);
        assert_eq!(backlog_bytes(Duration::from_nanos(1), 1_000_000), 1);
    }
}
