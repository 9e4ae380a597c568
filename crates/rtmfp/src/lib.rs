//! # rtmfp — a sans-IO RTMFP engine (RFC 7016)
//!
//! This crate owns the Secure Real-Time Media Flow Protocol itself: the wire
//! syntax of packets and chunks, session startup (as initiator, responder,
//! redirector and forwarder), flows with partial reliability, acknowledgements,
//! congestion control, keepalive, address mobility and close.
//!
//! It must not touch sockets, clocks, threads or ambient randomness: every
//! input carries `now`, randomness comes from the `RngCore` given to
//! [`Endpoint::new`], and all cryptography goes through the
//! [`CryptoProfile`] trait (RFC 7016 leaves it to the application;
//! `rtmfp-flash` implements RFC 7425, [`PlainProfile`] is for tests).
//! The async driver lives in `rtmfp-tokio`.
//!
//! ## Run-loop contract
//!
//! An [`Endpoint`] is a state machine driven by its owner:
//!
//! 1. Feed every received UDP payload to [`Endpoint::handle_datagram`].
//! 2. When the instant returned by [`Endpoint::poll_timeout`] is reached, call
//!    [`Endpoint::handle_timeout`] (spurious or late calls are harmless).
//! 3. After **every** input (datagram, timeout or API call such as
//!    [`Endpoint::send`]), call [`Endpoint::poll_transmit`] until it returns
//!    `None`, sending each datagram to the address it returns; then drain
//!    [`Endpoint::poll_event`]; then re-read [`Endpoint::poll_timeout`].
//! 4. Only with [`EndpointConfig::deferred_keying`]: after every input also
//!    drain [`Endpoint::poll_keying`], run each [`KeyingJob`] anywhere (a
//!    worker thread: [`KeyingJob::run`] is the Diffie-Hellman work and
//!    touches nothing of the endpoint), and hand each [`KeyingResult`] back
//!    with [`Endpoint::handle_keying`], which is an input like any other
//!    (then poll again: a returned result frees a slot). Without it the
//!    endpoint runs keyings itself and `poll_keying` returns `None`.
//!
//! ```
//! use std::time::Instant;
//! use rtmfp::{Endpoint, EndpointConfig, PlainProfile, Event};
//! use rand_core::SeedableRng;
//!
//! let now = Instant::now();
//! let rng = |s| Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(s));
//! let mut a = Endpoint::new(EndpointConfig::default(), Box::new(PlainProfile::new("a")), rng(1), now);
//! let mut b = Endpoint::new(EndpointConfig::default(), Box::new(PlainProfile::new("b")), rng(2), now);
//! let (addr_a, addr_b) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
//! let session = a.connect(now, b"b", &[addr_b]).unwrap();
//! let mut buf = Vec::new();
//! // shuttle datagrams until the handshake completes (IHello, RHello, IIKeying, RIKeying)
//! for _ in 0..4 {
//!     while let Some(dst) = a.poll_transmit(now, &mut buf) { assert_eq!(dst, addr_b); b.handle_datagram(now, addr_a, &buf); }
//!     while let Some(dst) = b.poll_transmit(now, &mut buf) { assert_eq!(dst, addr_a); a.handle_datagram(now, addr_b, &buf); }
//! }
//! assert!(matches!(a.poll_event(), Some(Event::SessionOpened { session: s, .. }) if s == session));
//! ```
//!
//! ## Servers
//!
//! * **Shards.** Run one [`Endpoint`] per core with
//!   [`EndpointConfig::shard_bits`] and a distinct [`EndpointConfig::shard`]:
//!   session IDs then carry the shard number, and [`datagram_shard`] tells
//!   which shard owns a received datagram (`None` for startup packets, which
//!   any shard answers). A shard given a datagram for a session it does not
//!   own drops it.
//! * **Handshake floods.** Answers to addresses not yet proven by a cookie
//!   can be bounded with [`EndpointConfig::amplification_factor`] (off by
//!   default; servers use 3, counted in wire bytes, which still answers
//!   the smallest IHello at once); the responder keeps no state before a
//!   valid cookie. Keyings (the Diffie-Hellman work) are bounded globally
//!   and shared round-robin between source addresses
//!   ([`EndpointConfig::max_keyings_in_flight`],
//!   [`EndpointConfig::max_keyings_waiting`]) and, with
//!   [`EndpointConfig::deferred_keying`], run off the packet path, so many
//!   clients behind one NAT address connect at once while a flooding
//!   address cannot starve others. [`EndpointConfig::max_sessions`] bounds
//!   sessions; a per-source IHello rate
//!   ([`EndpointConfig::ihello_rate_per_source`]) is available but off.
//! * **Shared identity.** Shards given the same profile and the same
//!   [`EndpointConfig::cookie_secret`] (and the same `now` at creation)
//!   accept each other's cookies.
//! * **Idle sessions** hold no buffer capacity: about 1.9 KB each with
//!   [`PlainProfile`] and one flow each way (`examples/session_memory.rs`).

mod amplification;
mod cc;
mod config;
mod crypto;
mod endpoint;
mod event;
mod flow;
mod keying;
mod machine;
mod ratelimit;
mod session;
pub mod wire;

pub use config::EndpointConfig;
pub use crypto::{
    internet_checksum, CryptoError, CryptoProfile, IIKeyingInput, InitiatorHandshake, PacketCrypto,
    PlainPacketCrypto, PlainProfile, ResponderHandshake, SessionKeys,
};
pub use endpoint::{datagram_shard, Endpoint, EndpointStats, MAX_SHARD_BITS};
pub use event::{CloseReason, Event, OpenError, Role, SessionId, SessionInfo, SessionStats};
pub use flow::{Priority, RecvMessage};
pub use keying::{KeyingId, KeyingJob, KeyingResult};
pub use machine::{EndpointCommand, Machine};
pub use wire::{Address, AddressOrigin};

/// Errors returned by the [`Endpoint`] API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such session.
    #[error("no such session")]
    NoSession,
    /// No such flow.
    #[error("no such flow")]
    NoFlow,
    /// The session is closing or closed.
    #[error("session closed")]
    SessionClosed,
    /// The flow was closed by us.
    #[error("flow closed")]
    FlowClosed,
    /// The far end rejected the flow.
    #[error("flow rejected by the far end")]
    FlowRejected,
    /// The send buffer is full; wait for [`Event::Writable`].
    #[error("send buffer full")]
    WouldBlock,
    /// Too many flows in this session.
    #[error("too many flows")]
    TooManyFlows,
    /// Too many sessions.
    #[error("too many sessions")]
    TooManySessions,
    /// Flow metadata too large for one packet.
    #[error("metadata too large")]
    MetadataTooLarge,
    /// An argument is too large.
    #[error("too large")]
    TooLarge,
    /// No candidate address given.
    #[error("no address")]
    NoAddress,
}
