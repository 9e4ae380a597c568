//! # nimbus-bench — load generators and benchmarks
//!
//! Owns every `nimbus bench …` measurement and the load it generates:
//! the engine's bulk transfer and handshake rates ([`engine`]), the
//! rendezvous server under thousands of Flash clients ([`server`]), a whole
//! call's latency and loss ([`phone`], on the whole-system call of
//! [`system`], which `nimbus demo` runs too), NetGroup multicast costs
//! ([`group`]) and the registry's request rates ([`registry`]). Each prints
//! figures and, with `--json`, one JSON object.
//!
//! Must not touch protocol logic (it drives the library crates as a user
//! would) nor the command line (its options are plain structs the binary
//! fills in).

pub mod engine;
pub mod group;
mod group_members;
pub mod phone;
pub mod registry;
pub mod server;
pub mod stats;
pub mod system;
