//! # nimbus-testkit — what the tests of every Nimbus crate share (dev-only)
//!
//! Owns test scaffolding only, never product code: any machine in the
//! simulator ([`sim`]: the one adaptor `SimNode<M>`, and `Engine<S>` for
//! tests that script an engine), test identities ([`identity`]), real
//! networks in network namespaces ([`netns`]), ffmpeg as a decoding oracle
//! ([`ffmpeg`]), a minimal HTTP/1.1 client and throw-away PostgreSQL
//! schemas ([`http`]).
//! Use it from integration tests (`tests/`), examples and the load
//! generators of `nimbus-bench`, never from a library's own code or unit
//! tests (a crate's unit tests would see a second copy of the crate).

pub mod ffmpeg;
pub mod http;
pub mod identity;
#[cfg(target_os = "linux")]
pub mod netns;
pub mod sim;
