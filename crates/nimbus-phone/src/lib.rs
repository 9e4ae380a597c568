//! # nimbus-phone — the Nimbus P2P video phone
//!
//! Owns the phone: logging in to a Nimbus rendezvous server (or any
//! Cirrus-compatible service), calling another user by name with the call
//! flow of Adobe's VideoPhone sample, and carrying the call's audio, video
//! and chat over a direct RTMFP session (RFC 7016 with the RFC 7425 Flash
//! profile) between the two phones, falling back to the server's relay when
//! no direct path opens.
//!
//! * [`phone::PhoneCore`] — the sans-IO phone, a [`rtmfp::Machine`]:
//!   datagrams, timeouts and [`phone::PhoneCommand`]s in (each with `now`);
//!   datagrams, [`phone::PhoneEvent`]s and its next deadline out. It reads
//!   no clock and draws no randomness it was not given; its module
//!   documentation states the run-loop contract;
//! * [`call`] — the call signalling state machine (pure logic);
//! * [`driver`] — the phone on its host (`rtmfp_tokio::Host`), with the
//!   application task around it: media sources and sinks, the registry
//!   client, the user's commands and events;
//! * [`registry`] — the reg.cgi client;
//! * [`cli`] — `nimbus phone`.
//!
//! Must not touch wire formats (the `rtmfp`, `rtmfp-flash` and `flash-amf`
//! crates), media codecs (`nimbus-media`) or sockets, timers and the
//! impairment of received datagrams (the host of `rtmfp-tokio`).

pub mod call;
pub mod cli;
pub mod driver;
pub mod phone;
pub mod registry;
pub use cli::{run, PhoneArgs};
