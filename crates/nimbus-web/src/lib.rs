//! # nimbus-web — the people's phone: a video call in the browser
//!
//! `nimbus phone --web` serves a page that is a whole video phone: the
//! browser's camera, microphone and screen go to the peer over RTMFP, and
//! the peer's media plays in the page. The page talks WebRTC to a
//! [`bridge::Bridge`] on this machine (loopback); nothing is transcoded:
//! H.264 Constrained Baseline (packetization mode 1) and G.711 are common
//! to WebRTC and Flash, so access units and audio frames only change their
//! wrapping (RTP ↔ FLV tags, `nimbus_media::rtc`).
//!
//! | module | owns |
//! |---|---|
//! | [`bridge`] | [`bridge::Bridge`], the sans-IO WebRTC side (str0m), an [`rtmfp::Machine`] on its own `rtmfp_tokio::Host` |
//! | [`server`] | the page's HTTP server and WebSocket (axum), the per-start secret, Host and Origin checks |
//! | [`protocol`] | the page's JSON messages, parsed with bounds ([`protocol::PageMsg::parse`]) |
//! | [`app`] | [`app::WebPhone`]: the task that joins page, bridge and phone, and converts media |
//! | [`cli`] | `nimbus phone --web` |
//! | [`demo`] | `nimbus demo --web`: a server and two web phones |
//!
//! Must not touch: RTMFP (the phone, `nimbus-phone`, does), codecs and
//! containers (`nimbus-media`), UDP sockets (the host, `rtmfp-tokio`: the
//! bridge's socket belongs to its host like every other machine's).
//!
//! The page is plain HTML, JavaScript and CSS under `assets/`, embedded in
//! the binary: no build step. Its automation hooks (element ids and
//! `window.nimbusPhone.state()`) are documented in `docs/phone.md`.

pub mod app;
pub mod bridge;
pub mod cli;
pub mod demo;
pub mod protocol;
pub mod server;

pub use app::{WebCommand, WebConfig, WebPhone};
pub use cli::run;
