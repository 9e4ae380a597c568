//! Deterministic, seeded network simulator with virtual time.
//!
//! `rtmfp-sim` is **test infrastructure** (a dev-dependency only; it is not
//! published and must never be used by production code). It lets tests of the
//! sans-IO RTMFP engine (RFC 7016) — or of anything else that exchanges UDP
//! datagrams — run many endpoints over an impaired network, reproducibly and
//! much faster than real time. It is generic over datagrams and knows nothing
//! about RTMFP.
//!
//! It owns:
//!
//! * [`Network`]: an in-flight queue of [`Datagram`]s ordered by arrival time,
//!   with per-directional-link impairments ([`LinkConfig`]: delay, jitter,
//!   independent and [`GilbertElliott`] bursty loss, duplication, reordering,
//!   bandwidth with a tail-drop buffer, MTU), NAT / address-change mapping,
//!   partitions and counters ([`NetStats`]).
//! * [`Sim`]: a discrete-event loop driving a set of [`Node`]s (thin adaptors
//!   around sans-IO engines) over a `Network`.
//! * [`SimRng`]: the small seeded PRNG (xoshiro256**) behind all randomness.
//!
//! # Determinism and time
//!
//! Everything is a pure function of the seed and of the calls made: the same
//! seed and the same node behaviour produce the identical sequence of events.
//! Time is virtual: a base [`std::time::Instant`] is taken once (by
//! [`Sim::new`]; or supplied with [`Sim::with_start`] / [`Network::new`]) and
//! only ever advanced by adding durations, so nodes must use the `now` they
//! are given and never read the real clock. Loops are bounded: a node whose
//! timer never moves forward, that never stops transmitting, or a zero-delay
//! message loop makes the simulation panic with an explanation instead of
//! hanging (see [`Sim::set_stall_limits`]).
//!
//! # Example
//!
//! ```
//! use std::collections::VecDeque;
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use rtmfp_sim::{Datagram, LinkConfig, Node, Sim};
//!
//! /// Replies "pong" to every datagram; remembers how many it received.
//! #[derive(Default)]
//! struct Echo { out: VecDeque<Datagram>, received: usize }
//!
//! impl Node for Echo {
//!     fn handle_datagram(&mut self, _now: Instant, src: SocketAddr, dst: SocketAddr, _data: &[u8]) {
//!         self.received += 1;
//!         self.out.push_back(Datagram::new(dst, src, b"pong".to_vec()));
//!     }
//!     fn handle_timeout(&mut self, _now: Instant) {}
//!     fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> { self.out.pop_front() }
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//! }
//!
//! let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
//! let b: SocketAddr = "10.0.0.2:2000".parse().unwrap();
//!
//! let mut sim = Sim::new(42);
//! sim.net.set_default_link(LinkConfig::wan(Duration::from_millis(25)).with_loss(0.01));
//! let ia = sim.add_node(Echo::default(), &[a]);
//! let ib = sim.add_node(Echo::default(), &[b]);
//!
//! // Kick things off with a datagram from `a` to `b`; the two nodes then
//! // bounce it back and forth until the loss model eats it.
//! sim.send(Datagram::new(a, b, b"ping".to_vec()));
//! sim.run_for(Duration::from_secs(60));
//!
//! let hops = sim.node(ia).received + sim.node(ib).received;
//! assert_eq!(hops as u64, sim.net.stats().delivered);
//! assert_eq!(sim.net.stats().dropped_loss, 1);
//! assert_eq!(sim.elapsed(), Duration::from_secs(60));
//! ```

mod link;
mod network;
mod rng;
mod sim;

pub use link::{GilbertElliott, LinkConfig, ETHERNET_UDP_PAYLOAD, MAX_UDP_PAYLOAD};
pub use network::{Datagram, NetStats, Network};
pub use rng::SimRng;
pub use sim::{
    Node, Sim, DEFAULT_MAX_EVENTS_PER_INSTANT, DEFAULT_MAX_TIMEOUTS_PER_INSTANT,
    DEFAULT_MAX_TRANSMITS_PER_DRAIN,
};
