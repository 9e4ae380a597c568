//! # nimbus-registry — the peer-ID registry service
//!
//! Maps user names to RTMFP peer IDs so that a caller can find whom to call.
//!
//! ## What this crate owns
//! * The registry **data layer** ([`Registry`]): one API over two real back ends,
//!   SQLite (the embedded default: a file in WAL mode) and PostgreSQL (a URL), with
//!   schema migrations applied at start, group-committed writes that are acknowledged
//!   only after they are durable, and parameterised SQL only.
//! * The **legacy `reg.cgi` protocol** spoken by Adobe's VideoPhone sample
//!   ([`legacy`]): `GET /reg.cgi?username=…&identity=…&friends=…`, answered in XML,
//!   served at `/reg.cgi` and `/cgi-bin/reg.cgi`.
//! * The **JSON API** (sign up with an Argon2-hashed password, log in for a bearer
//!   token with an expiry, publish presence, look up, remove) and its OpenAPI
//!   description, served at `/openapi.json`.
//! * Session binding for the rendezvous server ([`Registry::bind_session`],
//!   [`Registry::unbind_session`], [`ConnectedPeers`]) and user authentication at
//!   connect time ([`Registry::authenticate`]).
//! * Serving it over HTTP ([`serve`]); the standalone service is `nimbus registry`,
//!   in the `nimbus` binary, and the load generator behind `nimbus bench registry` is
//!   `nimbus-bench`'s.
//!
//! ## What it must not touch
//! * RTMFP itself: handshakes, sessions and the rendezvous logic belong to the `rtmfp`
//!   crates. This crate never parses RTMFP packets; the server tells it which peer ID
//!   belongs to which authenticated user and which peer IDs are connected now.
//! * The `nimbus` command line: it has no command-line code; `nimbus registry` in the
//!   binary wires [`Registry`] and [`serve`] together.
//! * Process-global state: it installs no global tracing subscriber (only its own
//!   binary does), no global allocator and no signal handlers outside [`run`].
//! * Secrets in logs: passwords, tokens and database passwords are never logged.

mod api;
mod auth;
mod clock;
mod config;
mod error;
pub mod legacy;
mod names;
mod ratelimit;
mod registry;
mod server;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{LegacyMode, RateLimit, RegistryConfig, SqliteSync};
pub use error::RegistryError;
pub use legacy::{parse_legacy_query, LegacyError, LegacyRequest};
pub use names::{is_valid_peer_id, normalize_name};
pub use registry::{
    BinderFuture, ConnectedPeers, IssuedToken, Presence, Registry, SessionBinder, UserId, UserInfo,
};
pub use server::{serve, ServeHandle};
pub use store::redact_url;

/// The OpenAPI 3 description of the JSON API, as served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");
