//! # rtmfp-flash — RTMFP for Flash communication (RFC 7425)
//!
//! This crate owns what RFC 7425 adds on top of the RTMFP engine. AMF and
//! FLV are the `flash-amf` crate; NetGroup (groupspecs, member ↔ member
//! messages, the member) is `rtmfp-netgroup`.
//!
//! * **now:** the Flash **Cryptography Profile** (RFC 7425 §4) as an
//!   [`rtmfp::CryptoProfile`]: the Default Session Key, AES-128-CBC packet
//!   encryption with the simple checksum or HMAC-SHA256 and session
//!   sequence numbers, certificates and peer IDs, Endpoint Discriminators,
//!   Diffie-Hellman key agreement (MODP groups 2, 5, 14, 16; ephemeral or
//!   static keys), session key computation, signatures. Start with
//!   [`FlashProfile`].
//! * **now:** [`message`]: the Flash message layer of RFC 7425 §5. Codecs
//!   shared by clients and servers — the `"TC"` flow metadata
//!   ([`message::FlowMetadata`]: stream ID, receive intent), the RTMP message
//!   framing over flows ([`message::RtmpMessage`], typed [`message::Body`]:
//!   user control events including flow synchronisation (34) and set
//!   keepalive (41), audio, video, AMF0/AMF3 data and command messages) and
//!   [`message::parse_connect_url`] (a full `rtmfp://host/app` URI or a bare
//!   app name) — and a sans-IO NetConnection / NetStream client state
//!   machine, [`message::NetConnection`] (connect, call, setPeerInfo,
//!   createStream, deleteStream, publish, play, closeStream, data / audio /
//!   video sending, `onStatus`), driven over an [`rtmfp::Endpoint`] session,
//!   and its server half, [`message::ServerConnection`]: a sans-IO per-session
//!   state machine (connect accept / reject, calls, setPeerInfo, createStream,
//!   publish / play, media relay with `send_media`, `onStatus`, Stream Begin,
//!   Set Keepalive), honouring Flow Synchronization barriers on receive.
//! * **now:** [`message::group_join`]: the member ↔ server NetGroup join
//!   and introductions carried by a NetConnection (the members themselves
//!   are the `rtmfp-netgroup` crate).
//! * **not yet:** applying Set Keepalive
//!   in the client (reported only), AMF3 object encoding negotiation
//!   (commands are sent as AMF0, type 20; type 17 is decoded).
//!
//! Interoperability is checked against zenomt/rtmfp-cpp (`tcserver`,
//! `fcclient`): see `examples/flash_client.rs` (handshake),
//! `examples/tc_client.rs` (connect, publish and play back through
//! `tcserver`), `examples/flash_responder.rs` and the recorded exchanges
//! replayed by `tests/vectors.rs` and `tests/message.rs`.
//!
//! It must **not** touch sockets, clocks, threads or ambient randomness:
//! like the engine it is sans-IO, and all randomness comes from the RNG the
//! engine (or the builder's caller) passes in. RFC 7016 itself — packets,
//! chunks, handshake sequencing, sessions, flows, congestion control — is
//! owned by the `rtmfp` engine; this crate only answers the profile
//! questions the engine asks.
//!
//! ```
//! use std::time::Instant;
//! use rand_core::SeedableRng;
//! use rtmfp::{Endpoint, EndpointConfig};
//! use rtmfp_flash::{Epd, FlashProfile};
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! let profile = FlashProfile::client().build(&mut rng).unwrap();
//! println!("my peer ID: {}", profile.peer_id());
//! let mut ep = Endpoint::new(EndpointConfig::default(), Box::new(profile), Box::new(rng), Instant::now());
//! let epd = Epd::server("rtmfp://127.0.0.1:1935/app").encode();
//! ep.connect(Instant::now(), &epd, &["127.0.0.1:1935".parse().unwrap()]).unwrap();
//! ```

pub mod crypto;
pub mod message;

pub use crypto::*;
