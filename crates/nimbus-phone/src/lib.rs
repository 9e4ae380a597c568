//! # nimbus-phone
//!
//! The Nimbus P2P video phone library. It will own the phone side of Nimbus:
//! logging in to a Nimbus rendezvous server (or Cirrus-compatible service),
//! calling another user by name, and carrying the call's audio and video over
//! direct RTMFP sessions (RFC 7016 with the RFC 7425 Flash profile) between the
//! two phones, falling back to the server's relay when no direct path exists.
//!
//! Today it holds the media layer those calls will carry, [`media`]:
//!
//! * [`media::h264`] — an exact H.264 Baseline encoder (IDR + P pictures made of
//!   `I_PCM`, intra-predicted and `P_Skip` macroblocks) and a test picture
//!   with colour bars and a running 7-segment clock;
//! * [`media::audio`] — a 440 Hz tone with a beep every second, FLV linear PCM,
//!   and the [`media::audio::AudioEncoder`] trait further codecs (Speex) plug into;
//! * [`media::flv`] — FLV sinks (file, stdout) and sources (file, stdin) of
//!   timed audio/video tags, built on `rtmfp_flash::flv`;
//! * [`media::TestSource`] — the live test source that yields timed FLV tag
//!   bodies, on a virtual clock or paced on the wall clock ([`media::Paced`]).
//!
//! Everything is pure Rust with no system library, and never panics on input.
//!
//! ```
//! use nimbus_phone::media::{FlvSink, MediaSource, TestSource, TestSourceConfig};
//! use std::time::Duration;
//!
//! let mut src = TestSource::new(TestSourceConfig {
//!     duration: Some(Duration::from_millis(500)),
//!     ..TestSourceConfig::default()
//! })?;
//! let mut sink = FlvSink::new(Vec::new(), true, true)?;
//! sink.write_all(&mut src)?;
//! let flv = sink.finish()?;
//! assert!(flv.starts_with(b"FLV"));
//! # Ok::<(), nimbus_phone::media::MediaError>(())
//! ```

pub mod call;
pub mod cli;
pub mod driver;
pub mod group;
pub mod group_cli;
pub mod media;
pub mod phone;
pub mod registry;
pub use cli::{run, PhoneArgs};
