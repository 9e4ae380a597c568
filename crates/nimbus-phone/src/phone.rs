//! The phone itself, sans-IO: one RTMFP endpoint (Flash profile) that holds
//! the NetConnection to the rendezvous server, the call-signalling machine
//! ([`crate::call`]), and the direct P2P NetStreams of the call.
//!
//! # Run-loop contract
//!
//! Like the engine it wraps, [`PhoneCore`] is a [`Machine`]: it owns no
//! socket, reads no clock (every entry point takes `now`; its wall clock is
//! the `unix_ms` it was built with, advanced by `now`), starts no thread and
//! draws no randomness but the RNG it was given. Its host (the tokio
//! `rtmfp_tokio::Host` of [`crate::driver`], or a test's loop):
//!
//! 1. feeds it datagrams ([`PhoneCore::handle_datagram`]), timeouts
//!    ([`PhoneCore::handle_timeout`], once [`PhoneCore::poll_timeout`] is
//!    reached; spurious calls are harmless) and commands
//!    ([`PhoneCommand`], or the methods of the same names);
//! 2. after every input, drains [`PhoneCore::poll_transmit`] to the socket,
//!    then [`PhoneCore::poll_event`] to the owner, then re-reads
//!    `poll_timeout`.
//!
//! The owner acts on a few events: [`PhoneEvent::Media`] goes to the sink;
//! [`PhoneEvent::StartSource`] starts the call's media source, whose tags
//! come back as [`PhoneCommand::SendMedia`], until
//! [`PhoneEvent::StopSource`]; [`PhoneEvent::KeyframeRequested`] asks that
//! source for a key frame; [`PhoneEvent::RegistryLookup`] is answered
//! with [`PhoneCommand::RegistryLookupResult`]. To quit, send
//! [`PhoneCommand::Quit`] (or close the host: [`Machine::handle_close`])
//! and keep driving until [`PhoneCore::closed`] (the machine is then
//! [done](Machine::is_done)). Events wait in a bounded queue
//! ([`MAX_PENDING_EVENTS`]): an owner that falls behind loses received
//! media first (counted in [`PhoneStatus`]).
//!
//! # Call flow (Adobe's 2011 VideoPhone sample, so either side may be one)
//!
//! * **Log in**: `NetConnection.connect(rtmfp://host/app?user=NAME, NAME,
//!   PASSWORD)`, so the server's `open` policy (claims `?user=`) and its
//!   `registry` policy (user name + password arguments) both work.
//! * **Call**: `lookup(name)` on the server (or the reg.cgi registry through
//!   the owner), `relay(peer, "invite", me)`; the caller publishes
//!   `media-caller` (a `DIRECT_CONNECTIONS` stream: the callee may subscribe
//!   while it rings, as the sample does), opens the direct session to the
//!   callee's peer ID through the server (Redirect + Forwarded IHello: hole
//!   punching) and plays `media-callee` on it at once; the callee holds that
//!   play request until it accepts.
//! * **Accept**: the callee publishes `media-callee` (answering the held
//!   request), plays `media-caller` and sends `accept`.
//! * **Media**: audio and video from the owner's source go to the accepted
//!   subscriber; audio on its own flow above video, in network order; every
//!   message has a lifetime (late media is abandoned, not delayed); video
//!   waits for a key frame after any drop. A subscriber that is not the
//!   call's peer, or asks for another name, is refused
//!   (`NetStream.Connect.Rejected`), as `onPeerConnect` returning false.
//! * **Chat**: `NetStream.send("onIm", name, text)` on our published stream;
//!   `onIm` and the paper's `onReceive` are shown.
//! * **Key frames on request**: [`PhoneCommand::RequestKeyframe`] sends
//!   `NetStream.send("nimbusKeyframe")` on our published stream (the peer
//!   plays it); a phone that receives one reports
//!   [`PhoneEvent::KeyframeRequested`] so that its source encodes an IDR at
//!   once. Both ends are limited to one every [`KEYFRAME_REQUEST_INTERVAL`].
//!   Flash ignores the handler (it has no such method).
//! * **Hang up**: `bye` / `ok` (or `cancel` / `reject`); streams and the
//!   direct session close. A direct session closed by the peer while in the
//!   call also ends it (the peer hung up while the server was away).
//! * **Fallback**: if no direct session is up [`PhoneConfig::direct_timeout`]
//!   after the call is established, both phones (which see the same failed
//!   session) publish to and play from the server's stream relay under names
//!   derived from both peer IDs.
//! * **Resilience**: the direct session survives address changes (RFC 7016
//!   mobility); a lost server connection is re-established with backoff
//!   while the call goes on.
//!
//! # Latency
//!
//! The phone adds `nimbusEpochMs` (Unix milliseconds at media timestamp 0)
//! to the `onMetaData` it sends, so the receiving phone computes end-to-end
//! latency as `now − (epoch + timestamp)`; Flash ignores the extra field.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flash_amf::{self as amf, DataMessage, Object, Value};
use rand_core::RngCore;
use rtmfp::{CloseReason, Endpoint, EndpointConfig, Event, Machine, SessionId};
use rtmfp_flash::message::{
    Body, NcEvent, NetConnection, PeerEvent, PeerPlayer, PeerPublisher, PlayerEvent, RtmpMessage,
};
use rtmfp_flash::{Epd, FlashProfile, PeerId};

use crate::call::{self, Action, CallConfig, CallMachine, CallState};
use nimbus_media::{MediaKind, MediaTag};

/// Name of the caller's published stream.
pub const CALLER_STREAM: &str = "media-caller";
/// Name of the callee's published stream.
pub const CALLEE_STREAM: &str = "media-callee";
/// Most events waiting in [`PhoneCore::poll_event`]: beyond it, media and
/// the events peers can repeat at will are dropped (and counted); beyond
/// twice this, every event is.
pub const MAX_PENDING_EVENTS: usize = 4096;
/// Chat lines of a call waiting for the peer to receive (beyond: refused).
const MAX_CHAT_BACKLOG: usize = 16;
/// Latency samples kept for percentiles (a reservoir beyond that).
const MAX_LATENCY_SAMPLES: usize = 100_000;
/// Key-frame requests are sent, and reported, at most once per this.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(200);
/// The data message handler of a key-frame request.
pub const KEYFRAME_HANDLER: &str = "nimbusKeyframe";

/// Settings of a phone.
#[derive(Debug, Clone)]
pub struct PhoneConfig {
    /// Our user name.
    pub user: String,
    /// Password or registry token for the server's `registry` policy.
    pub password: Option<String>,
    /// `rtmfp://host:port/app` of the rendezvous server.
    pub url: String,
    /// The server's addresses.
    pub servers: Vec<SocketAddr>,
    /// Addresses we can be reached at, sent with `setPeerInfo`.
    pub local_addresses: Vec<SocketAddr>,
    /// Call-signalling timeouts.
    pub call: CallConfig,
    /// How long the direct session may take after the call is established
    /// before media goes through the server's relay.
    pub direct_timeout: Duration,
    /// Use the server's stream relay when no direct path opens.
    pub relay_fallback: bool,
    /// A direct call session silent this long is closed and reopened (or
    /// the call moves to the relay); keepalives go every quarter of it.
    pub direct_idle_timeout: Duration,
    /// End-to-end budget of interactive audio on a direct path: each audio
    /// message is abandoned unless it can still arrive within this, i.e.
    /// its lifetime is `audio_budget − srtt/2` (at least 20 ms, at most
    /// `audio_lifetime`); a retransmission that would come too late is
    /// never sent, so late audio is dropped, not delayed.
    pub audio_budget: Duration,
    /// Abandon audio not delivered within this (the relay path, and the
    /// cap of the direct path's budget-derived lifetime).
    pub audio_lifetime: Duration,
    /// Abandon video not delivered within this.
    pub video_lifetime: Duration,
    /// Longest wait between reconnection attempts to the server.
    pub reconnect_max: Duration,
    /// The server session is taken for dead (and reconnected) after this
    /// long without hearing from the server; keepalives every third of it.
    pub server_idle_timeout: Duration,
    /// Ask the owner for a registry (reg.cgi) look-up when the server does
    /// not know a name.
    pub registry_lookup: bool,
}

impl PhoneConfig {
    /// Defaults for `user` on the server at `url` / `servers`.
    pub fn new(user: impl Into<String>, url: impl Into<String>, servers: Vec<SocketAddr>) -> Self {
        PhoneConfig {
            user: user.into(),
            password: None,
            url: url.into(),
            servers,
            local_addresses: Vec::new(),
            call: CallConfig::default(),
            direct_timeout: Duration::from_secs(4),
            relay_fallback: true,
            direct_idle_timeout: Duration::from_secs(6),
            audio_budget: Duration::from_millis(120),
            audio_lifetime: Duration::from_millis(500),
            video_lifetime: Duration::from_millis(1500),
            reconnect_max: Duration::from_secs(8),
            server_idle_timeout: Duration::from_secs(30),
            registry_lookup: false,
        }
    }
}

/// How the call's media travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaPath {
    /// Not yet decided (the direct session is opening).
    Connecting,
    /// A direct RTMFP session with the peer at this address.
    Direct(SocketAddr),
    /// Through the server's stream relay.
    Relay,
}

impl std::fmt::Display for MediaPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaPath::Connecting => f.write_str("connecting"),
            MediaPath::Direct(a) => write!(f, "direct to {a}"),
            MediaPath::Relay => f.write_str("through the server's relay"),
        }
    }
}

/// What the phone reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PhoneEvent {
    /// Connected to the server; our peer ID (64 hex digits).
    LoggedIn {
        /// Our peer ID.
        peer_id: String,
        /// True when this was a reconnection.
        reconnected: bool,
    },
    /// The server refused us or could not be reached. `retry_in` is `None`
    /// when the phone gives up (the refusal is final).
    LoginFailed {
        /// The server's description or the failure.
        reason: String,
        /// When the phone tries again.
        retry_in: Option<Duration>,
    },
    /// The connection to the server was lost; calls go on, the phone
    /// reconnects.
    ServerLost {
        /// When the phone tries again.
        retry_in: Duration,
    },
    /// We are calling `name` (its peer ID found).
    Calling {
        /// Callee's name.
        name: String,
        /// Callee's peer ID.
        peer_id: String,
    },
    /// Call signalling (incoming call, accepted, rejected, busy, no answer,
    /// offline, cancelled, hung up, ended).
    Call(call::Event),
    /// The call's media path was decided or changed.
    Path(MediaPath),
    /// Received media for the sink (FLV tag body and timestamp).
    Media {
        /// The tag.
        tag: MediaTag,
        /// When its message came out of the RTMFP flow (the input's `now`).
        received: Instant,
    },
    /// The owner's media source should make its next video frame a key
    /// frame: the peer asked for one (`by_peer`: its decoder lost the
    /// picture), or the phone itself waits for one before it sends video
    /// again (a new receiver, or video dropped on the way out). At most one
    /// every [`KEYFRAME_REQUEST_INTERVAL`] of each kind.
    KeyframeRequested {
        /// The peer asked (`nimbusKeyframe`).
        by_peer: bool,
    },
    /// A chat line (ours when `local`).
    Chat {
        /// Sender's name.
        from: String,
        /// The text.
        text: String,
        /// Unix milliseconds when it was sent (ours) or received.
        unix_ms: u64,
        /// Sent by us.
        local: bool,
    },
    /// A peer not in the call tried to play our stream and was refused.
    Refused {
        /// Its peer ID.
        peer_id: String,
        /// The stream it asked for.
        stream: String,
    },
    /// The owner should look `name` up in the registry (reg.cgi) and answer
    /// with [`PhoneCommand::RegistryLookupResult`].
    RegistryLookup {
        /// The name.
        name: String,
    },
    /// Something the user asked for could not be done, or a peer misbehaved.
    Notice(String),
    /// The call is established and the peer receives our media: start the
    /// media source now (its first picture is then a key frame the peer can
    /// decode at once) and feed it with [`PhoneCommand::SendMedia`]. Once
    /// per call.
    StartSource,
    /// The established call is over: stop the media source and close the
    /// recording. Once per call that was established, after
    /// [`StartSource`](Self::StartSource) if there was one.
    StopSource {
        /// The call's figures at its end (for summaries).
        call: Box<PhoneStatus>,
    },
}

/// What the owner asks of a [`PhoneCore`]: its [`Machine`] command. Each
/// is one of the phone's methods; results come back as [`PhoneEvent`]s.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PhoneCommand {
    /// Log in to the server ([`PhoneCore::start`]).
    Start,
    /// Call a user by name or peer ID ([`PhoneCore::call`]).
    Call(String),
    /// Accept the ringing call ([`PhoneCore::accept`]).
    Accept,
    /// Reject the ringing call ([`PhoneCore::reject`]).
    Reject,
    /// Hang up, cancel or reject ([`PhoneCore::hangup`]).
    Hangup,
    /// Send a chat line ([`PhoneCore::say`]).
    Say(String),
    /// Hang up, close every session, stop reconnecting ([`PhoneCore::quit`]).
    Quit,
    /// One tag of our media source ([`PhoneCore::send_media`]).
    SendMedia {
        /// The tag.
        tag: MediaTag,
        /// When it was due on the source's clock (its capture time).
        captured: Instant,
    },
    /// Ask the peer's source for a key frame: our decoder lost its
    /// picture ([`PhoneCore::request_keyframe`]).
    RequestKeyframe,
    /// The answer to [`PhoneEvent::RegistryLookup`]
    /// ([`PhoneCore::registry_lookup_result`]).
    RegistryLookupResult {
        /// The name looked up.
        name: String,
        /// Its peer ID, if the registry knows it.
        peer_id: Option<String>,
    },
}

/// Counters of one direction of media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MediaCounters {
    /// Video frames (key frames and others; sequence headers excluded).
    pub video_frames: u64,
    /// Audio packets.
    pub audio_packets: u64,
    /// Data messages (metadata, chat).
    pub data_messages: u64,
    /// Bytes of media payload.
    pub bytes: u64,
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

#[derive(Debug, Default, Clone)]
struct Latency {
    samples: Vec<f64>,
    seen: u64,
    rng: u64,
}

impl Latency {
    fn add(&mut self, ms: f64) {
        self.seen += 1;
        if self.samples.len() < MAX_LATENCY_SAMPLES {
            self.samples.push(ms);
        } else {
            // reservoir sampling with a xorshift (deterministic: the phone
            // draws no randomness of its own); its state must not be zero
            if self.rng == 0 {
                self.rng = 0x9e37_79b9_7f4a_7c15;
            }
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let j = (self.rng % self.seen) as usize;
            if j < self.samples.len() {
                self.samples[j] = ms;
            }
        }
    }

    fn summary(&self) -> LatencySummary {
        if self.samples.is_empty() {
            return LatencySummary::default();
        }
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        LatencySummary {
            samples: self.seen,
            p50_ms: pick(0.5),
            p99_ms: pick(0.99),
            max_ms: v[v.len() - 1],
        }
    }
}

/// Gaps kept to find a stream's nominal interval.
const CONTINUITY_GAPS: usize = 32;

/// Received-media loss estimate of one kind from timestamp continuity.
///
/// Without a stated frame rate the nominal interval is the median of the
/// recent gaps: a camera's frames come with jitter (a 30 fps camera gives
/// gaps of 25 to 40 ms), so the smallest gap would count frames that were
/// never sent as lost; lost frames only lengthen some gaps, which moves the
/// median little while less than half are lost.
#[derive(Debug, Default, Clone, Copy)]
struct Continuity {
    first: Option<u32>,
    last: u32,
    count: u64,
    gaps: [u32; CONTINUITY_GAPS],
    gaps_seen: usize,
}

impl Continuity {
    fn add(&mut self, ts: u32) {
        match self.first {
            None => self.first = Some(ts),
            Some(_) => {
                let gap = ts.wrapping_sub(self.last);
                if gap > 0 && gap < 10_000 {
                    self.gaps[self.gaps_seen % CONTINUITY_GAPS] = gap;
                    self.gaps_seen += 1;
                }
            }
        }
        self.last = ts;
        self.count += 1;
    }

    /// The median of the recent gaps (ms).
    fn median_gap(&self) -> Option<u32> {
        let n = self.gaps_seen.min(CONTINUITY_GAPS);
        if n == 0 {
            return None;
        }
        let mut g = self.gaps;
        let g = &mut g[..n];
        g.sort_unstable();
        Some(g[n / 2])
    }

    /// Expected count given a nominal interval (ms).
    fn expected(&self, interval: Option<f64>) -> Option<u64> {
        let first = self.first?;
        let interval = interval.or(self.median_gap().map(f64::from))?;
        let span = f64::from(self.last.wrapping_sub(first));
        Some((span / interval).round() as u64 + 1)
    }
}

/// A snapshot for `status` and summaries.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PhoneStatus {
    /// Our user name.
    pub user: String,
    /// Our peer ID.
    pub peer_id: String,
    /// Connected to the server now.
    pub online: bool,
    /// Call state (`idle`, `calling`, `ringing`, `in-call`, `ending`).
    pub call_state: String,
    /// The peer's name.
    pub peer_name: Option<String>,
    /// Media path (`connecting`, `direct`, `relay`), if in a call.
    pub path: Option<String>,
    /// The peer's address on the direct path.
    pub peer_address: Option<String>,
    /// Media sent in this call (or the last one).
    pub sent: MediaCounters,
    /// Media received in this call (or the last one).
    pub received: MediaCounters,
    /// Video or audio the sender dropped (backpressure, waiting for a key frame).
    pub send_drops: u64,
    /// Our media from its capture (the `captured` instant of
    /// [`PhoneCommand::SendMedia`]) to the RTMFP engine: pacing for a file or
    /// the test source; for a web phone, the time the bridge adds from the
    /// RTP frame's arrival.
    pub send_latency: LatencySummary,
    /// Fraction (0..1) of the user-data fragments we sent on the call's
    /// direct session that RTMFP declared lost (then retransmitted or
    /// abandoned): the loss on the way out.
    pub sent_loss: f64,
    /// Key-frame requests we sent the peer.
    pub keyframe_requests_sent: u64,
    /// Key-frame requests the peer sent us.
    pub keyframe_requests_received: u64,
    /// Received bit rate over the last second (kbit/s).
    pub rx_kbps: f64,
    /// Sent bit rate over the last second (kbit/s).
    pub tx_kbps: f64,
    /// Estimated loss of received audio (0..1), from timestamp continuity.
    pub audio_loss: f64,
    /// Estimated loss of received video frames (0..1).
    pub video_loss: f64,
    /// End-to-end latency of received audio.
    pub audio_latency: LatencySummary,
    /// End-to-end latency of received video.
    pub video_latency: LatencySummary,
    /// Smoothed round-trip time of the media session (ms).
    pub rtt_ms: Option<f64>,
    /// Chat lines received.
    pub chat_received: u64,
    /// Chat lines sent.
    pub chat_sent: u64,
    /// Whether the media went through the server's relay at any point.
    pub relayed: bool,
    /// Calls made or answered.
    pub calls: u64,
    /// Received media not handed to the sink because the event queue was
    /// full (the owner fell behind).
    pub media_events_dropped: u64,
    /// Other events dropped because the event queue was full (chat lines,
    /// notices, refusals, path changes, busy signals).
    pub events_dropped: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Rate {
    start: Option<Instant>,
    bytes: u64,
    last_kbps: f64,
}

impl Rate {
    fn add(&mut self, now: Instant, n: usize) {
        self.roll(now);
        self.bytes += n as u64;
    }

    fn roll(&mut self, now: Instant) {
        let start = *self.start.get_or_insert(now);
        let el = now.saturating_duration_since(start);
        if el >= Duration::from_secs(1) {
            self.last_kbps = if el > Duration::from_secs(3) {
                0.0
            } else {
                self.bytes as f64 * 8.0 / el.as_secs_f64() / 1000.0
            };
            self.bytes = 0;
            self.start = Some(now);
        }
    }

    fn kbps(&mut self, now: Instant) -> f64 {
        self.roll(now);
        self.last_kbps
    }
}

/// One direct session and our publisher half on it.
#[derive(Debug)]
struct Peer {
    peer_hex: String,
    publisher: PeerPublisher,
}

#[derive(Debug, Clone, Copy)]
struct Subscriber {
    session: SessionId,
    id: u64,
    audio: bool,
    video: bool,
}

/// The server-relay half of a call (fallback).
#[derive(Debug, Default)]
struct RelayMedia {
    publish_txn: Option<f64>,
    play_txn: Option<f64>,
    publish_stream: Option<u32>,
    play_stream: Option<u32>,
    publishing: bool,
}

/// Media state of the current call.
#[derive(Debug)]
struct CallMedia {
    peer_hex: String,
    caller: bool,
    /// Our outgoing open to the peer, if any.
    opening: Option<SessionId>,
    /// The session the call uses.
    session: Option<SessionId>,
    player: Option<PeerPlayer>,
    play_stream: Option<u32>,
    subscriber: Option<Subscriber>,
    /// Play requests for our name from the peer while we cannot answer yet.
    held: Vec<(SessionId, u64)>,
    direct_deadline: Option<Instant>,
    path: MediaPath,
    relay: Option<RelayMedia>,
    /// Unix ms at our media timestamp 0.
    local_epoch: Option<f64>,
    /// Unix ms at the peer's media timestamp 0.
    remote_epoch: Option<f64>,
    remote_fps: Option<f64>,
    /// Metadata and decoder configuration to send to a new receiver.
    metadata: Option<MediaTag>,
    avc_config: Option<MediaTag>,
    aac_config: Option<MediaTag>,
    /// The current receiver has not had the headers yet.
    need_headers: bool,
    /// Video is held until the next key frame.
    need_key: bool,
    /// Chat lines said while the peer did not receive yet.
    chat: VecDeque<String>,
}

impl CallMedia {
    fn new(peer_hex: String, caller: bool) -> Self {
        CallMedia {
            peer_hex,
            caller,
            opening: None,
            session: None,
            player: None,
            play_stream: None,
            subscriber: None,
            held: Vec::new(),
            direct_deadline: None,
            path: MediaPath::Connecting,
            relay: None,
            local_epoch: None,
            remote_epoch: None,
            remote_fps: None,
            metadata: None,
            avc_config: None,
            aac_config: None,
            need_headers: true,
            need_key: true,
            chat: VecDeque::new(),
        }
    }

    /// Our `onMetaData`: the source's fields plus `nimbusEpochMs`.
    fn metadata_tag(&self, ts: u32) -> MediaTag {
        let mut values = self
            .metadata
            .as_ref()
            .and_then(|t| amf::amf0::decode_all(&t.data).ok())
            .unwrap_or_default();
        if values.is_empty() {
            values.push(Value::from("onMetaData"));
        }
        let epoch = self.local_epoch.unwrap_or(0.0);
        let mut obj = match values.get(1).cloned().map(Value::into_unwrapped) {
            Some(Value::Object(o)) => o,
            Some(Value::EcmaArray(a)) => {
                let mut o = Object::new();
                for (k, v) in a.assoc {
                    o.insert(k, v);
                }
                o
            }
            _ => Object::new(),
        };
        obj.insert("nimbusEpochMs", Value::Number(epoch));
        values.truncate(1);
        values.push(Value::Object(obj));
        let data = amf::amf0::encode_all(&values).unwrap_or_default();
        MediaTag::new(MediaKind::Data, ts, data)
    }

    fn our_stream(&self) -> &'static str {
        if self.caller {
            CALLER_STREAM
        } else {
            CALLEE_STREAM
        }
    }

    fn their_stream(&self) -> &'static str {
        if self.caller {
            CALLEE_STREAM
        } else {
            CALLER_STREAM
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Login {
    /// Connecting (the NetConnection exists).
    Connecting,
    /// Connected.
    Online,
    /// Waiting to reconnect.
    Waiting(Instant),
    /// Gave up or quit.
    Off,
}

#[derive(Debug, Clone)]
enum Pending {
    /// A `lookup` of this name, unanswered until the instant.
    Lookup(String, Instant),
    Relay(String),
}

/// How long the server has to answer a `lookup` (MonaServer2's sample
/// apps acknowledge one and never answer it): then the registry is asked,
/// or the call ends as offline.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Stats {
    send_latency: Latency,
    keyframe_requests_sent: u64,
    keyframe_requests_received: u64,
    /// Last key-frame request sent to the peer, reported for the peer,
    /// reported for ourselves.
    keyframe_sent_at: Option<Instant>,
    keyframe_by_peer_at: Option<Instant>,
    keyframe_own_at: Option<Instant>,
    /// Loss of what we sent on the call's direct session (last known: kept
    /// after the session closed, for summaries).
    sent_loss: f64,
    sent: MediaCounters,
    received: MediaCounters,
    send_drops: u64,
    rx: Rate,
    tx: Rate,
    audio_latency: Latency,
    video_latency: Latency,
    audio: Continuity,
    video: Continuity,
    chat_sent: u64,
    chat_received: u64,
    relayed: bool,
    /// The call's last media path (kept after the call for summaries).
    path: Option<MediaPath>,
    /// The peer's name (kept after the call for summaries).
    peer_name: Option<String>,
    /// The peer's video frame rate (from its metadata).
    remote_fps: Option<f64>,
}

/// The sans-IO phone (see the module documentation).
#[derive(Debug)]
pub struct PhoneCore {
    cfg: PhoneConfig,
    ep: Endpoint,
    peer_id: PeerId,
    peer_hex: String,
    base: (Instant, f64),
    nc: Option<NetConnection>,
    login: Login,
    was_online: bool,
    backoff: Duration,
    pending: BTreeMap<u64, Pending>,
    call: CallMachine,
    media: Option<CallMedia>,
    peers: BTreeMap<SessionId, Peer>,
    events: VecDeque<PhoneEvent>,
    stats: Stats,
    calls: u64,
    media_dropped_events: u64,
    events_dropped: u64,
    /// [`PhoneEvent::StartSource`] was reported for the current call.
    source_on: bool,
    /// The call was established at the end of the previous input.
    was_in_call: bool,
    quitting: bool,
    /// A call asked for before we were logged in.
    deferred_call: Option<String>,
    /// Scratch buffer of publisher events (see `process`).
    peer_events: Vec<(SessionId, PeerEvent)>,
}

fn tid_key(t: f64) -> u64 {
    if t.is_finite() && t >= 0.0 {
        t as u64
    } else {
        u64::MAX
    }
}

fn valid_peer_hex(s: &str) -> bool {
    s.parse::<PeerId>().is_ok()
}

/// The sender's peer ID (lowercase hex) and the relayed strings of an
/// `onRelay` command's arguments (after the transaction ID and command
/// object), in either form servers deliver:
///
/// * Cirrus (and `nimbus server`): `onRelay(senderPeerID, args...)`;
/// * rtmfp-cpp's `tcserver`: `onRelay({sender: connectionID, senderName?},
///   args...)`, the header object first. Its connection ID is the sender's
///   peer ID, the address its `relay` takes, unless the server runs with
///   `-m` (random connection IDs): then it is no peer ID, and we cannot
///   open the call's direct session to it, so the message is dropped.
///
/// `None` when the sender is not a peer ID.
pub fn parse_on_relay(arguments: &[Value]) -> Option<(String, Vec<&str>)> {
    let (first, rest) = arguments.split_first()?;
    let sender = match first.as_str() {
        Some(s) => s,
        None => first.get("sender")?.as_str()?,
    };
    let sender = sender.to_ascii_lowercase();
    if !valid_peer_hex(&sender) {
        return None;
    }
    let args = rest.iter().map(|v| v.as_str().unwrap_or("")).collect();
    Some((sender, args))
}

/// Stream name on the server's relay for one side of a call.
pub fn relay_stream_name(caller_hex: &str, callee_hex: &str, publisher_is_caller: bool) -> String {
    let side = if publisher_is_caller {
        "caller"
    } else {
        "callee"
    };
    let c: String = caller_hex.chars().take(16).collect();
    let d: String = callee_hex.chars().take(16).collect();
    format!("nimbus-call-{c}-{d}-{side}")
}

impl PhoneCore {
    /// A phone with its own identity (`profile`), randomness `rng`, at
    /// `now`, whose wall clock reads `unix_ms` at `now`.
    pub fn new(
        cfg: PhoneConfig,
        profile: FlashProfile,
        rng: Box<dyn RngCore + Send>,
        now: Instant,
        unix_ms: f64,
    ) -> Self {
        let peer_id = profile.peer_id();
        let ec = EndpointConfig {
            max_sessions: 64,
            ..EndpointConfig::default()
        };
        let ep = Endpoint::new(ec, Box::new(profile), rng, now);
        let call = CallMachine::with_config(cfg.user.clone(), cfg.call);
        PhoneCore {
            peer_hex: peer_id.to_hex(),
            peer_id,
            base: (now, unix_ms),
            nc: None,
            login: Login::Off,
            was_online: false,
            backoff: Duration::from_millis(500),
            pending: BTreeMap::new(),
            call,
            media: None,
            peers: BTreeMap::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            calls: 0,
            media_dropped_events: 0,
            events_dropped: 0,
            source_on: false,
            was_in_call: false,
            quitting: false,
            deferred_call: None,
            peer_events: Vec::new(),
            ep,
            cfg,
        }
    }

    /// Our peer ID (64 hex digits).
    pub fn peer_id(&self) -> &str {
        &self.peer_hex
    }

    /// Our peer ID.
    pub fn peer_id_bytes(&self) -> PeerId {
        self.peer_id
    }

    /// The configuration.
    pub fn config(&self) -> &PhoneConfig {
        &self.cfg
    }

    /// The engine (for statistics).
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// Connected to the server now.
    pub fn online(&self) -> bool {
        self.login == Login::Online
    }

    /// The call state.
    pub fn call_state(&self) -> CallState {
        self.call.state()
    }

    /// True while media should flow (the call is established).
    pub fn in_call(&self) -> bool {
        self.media.is_some() && self.call.state() == CallState::InCall
    }

    /// Unix ms at `now`.
    pub fn unix_ms(&self, now: Instant) -> f64 {
        let (i, u) = self.base;
        if now >= i {
            u + now.duration_since(i).as_secs_f64() * 1000.0
        } else {
            u - i.duration_since(now).as_secs_f64() * 1000.0
        }
    }

    /// Queues an event for the owner. Beyond [`MAX_PENDING_EVENTS`] (the
    /// owner fell behind), media and what peers or the server may repeat at
    /// will are dropped and counted; beyond twice that, everything is.
    fn push(&mut self, e: PhoneEvent) {
        if let PhoneEvent::Path(p) = &e {
            self.stats.path = Some(*p);
        }
        let n = self.events.len();
        if n >= MAX_PENDING_EVENTS {
            let repeatable = matches!(
                e,
                PhoneEvent::Chat { .. }
                    | PhoneEvent::Refused { .. }
                    | PhoneEvent::Notice(_)
                    | PhoneEvent::Path(_)
                    | PhoneEvent::KeyframeRequested { .. }
                    | PhoneEvent::Call(call::Event::Busy { .. })
            );
            if matches!(e, PhoneEvent::Media { .. }) {
                self.media_dropped_events += 1;
                return;
            }
            if repeatable || n >= 2 * MAX_PENDING_EVENTS {
                self.events_dropped += 1;
                return;
            }
        }
        self.events.push_back(e);
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PhoneEvent> {
        self.events.pop_front()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.ep.poll_transmit(now, buf)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut t = self.ep.poll_timeout();
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        min(self.call.poll_timeout());
        if let Login::Waiting(at) = self.login {
            min(Some(at));
        }
        min(self.media.as_ref().and_then(|m| m.direct_deadline));
        min(self.lookup_deadline());
        t
    }

    /// The earliest deadline of an unanswered `lookup`.
    fn lookup_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .filter_map(|p| match p {
                Pending::Lookup(_, at) => Some(*at),
                Pending::Relay(_) => None,
            })
            .min()
    }

    /// Lookups the server left unanswered are answered as "not found".
    fn expire_lookups(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Lookup(_, at) if *at <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(Pending::Lookup(name, _)) = self.pending.remove(&k) {
                self.push(PhoneEvent::Notice(format!(
                    "the server did not answer the lookup of {name} within {} s",
                    LOOKUP_TIMEOUT.as_secs()
                )));
                self.lookup_not_found(now, name);
            }
        }
    }

    /// The server does not know `name`: ask the registry, or end the call
    /// attempt as offline.
    fn lookup_not_found(&mut self, now: Instant, name: String) {
        if self.cfg.registry_lookup {
            self.push(PhoneEvent::RegistryLookup { name });
        } else {
            self.push(PhoneEvent::Notice(format!("{name} is not online")));
            let user = self.cfg.user.clone();
            let acts = self.call.call(now, &user, "");
            self.apply(now, acts);
        }
    }

    /// Starts logging in.
    pub fn start(&mut self, now: Instant) {
        if self.login == Login::Off && !self.quitting {
            self.connect_server(now);
        }
    }

    fn connect_url(&self) -> String {
        let sep = if self.cfg.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}user={}", self.cfg.url, self.cfg.user)
    }

    fn connect_server(&mut self, now: Instant) {
        let url = self.connect_url();
        let props = Object::new().with("flashVer", "WIN 32,0,0,0 nimbus-phone");
        match NetConnection::connect(&mut self.ep, now, &url, &self.cfg.servers, props) {
            Ok(nc) => {
                let mut args = vec![Value::from(self.cfg.user.as_str())];
                if let Some(p) = &self.cfg.password {
                    args.push(Value::from(p.as_str()));
                }
                let mut nc = nc
                    .with_connect_args(args)
                    .with_media_lifetime(Some(self.cfg.video_lifetime));
                nc.set_peer_addresses(&self.cfg.local_addresses);
                self.nc = Some(nc);
                self.login = Login::Connecting;
            }
            Err(e) => {
                let retry = self.next_backoff();
                self.login = Login::Waiting(now + retry);
                self.push(PhoneEvent::LoginFailed {
                    reason: format!("cannot open a session to the server: {e}"),
                    retry_in: Some(retry),
                });
            }
        }
    }

    fn next_backoff(&mut self) -> Duration {
        let b = self.backoff;
        self.backoff = (self.backoff * 2).min(self.cfg.reconnect_max);
        b
    }

    /// Feeds a received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.ep.handle_datagram(now, from, data);
        self.process(now);
    }

    /// Runs timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        let acts = self.call.handle_timeout(now);
        self.apply(now, acts);
        if let Login::Waiting(at) = self.login {
            if at <= now && !self.quitting {
                self.connect_server(now);
            }
        }
        let expired = self
            .media
            .as_ref()
            .and_then(|m| m.direct_deadline)
            .is_some_and(|d| d <= now);
        if expired {
            self.direct_timed_out(now);
        }
        self.expire_lookups(now);
        self.process(now);
    }

    // ----- user commands ---------------------------------------------------

    /// Calls the user `name`: looks up its peer ID, then invites it.
    pub fn call(&mut self, now: Instant, name: &str) {
        if self.call.state() != CallState::Idle {
            self.push(PhoneEvent::Notice(
                "already in a call; hang up first".into(),
            ));
            return;
        }
        if name.eq_ignore_ascii_case(&self.cfg.user) {
            self.push(PhoneEvent::Notice("you cannot call yourself".into()));
            return;
        }
        if valid_peer_hex(name) {
            self.place_call(now, name.to_string(), name.to_ascii_lowercase());
            self.process(now);
            return;
        }
        if self.login != Login::Online {
            if self.login == Login::Off {
                self.push(PhoneEvent::Notice("not connected to the server".into()));
            } else {
                // logging in or reconnecting: call once logged in
                self.push(PhoneEvent::Notice(format!(
                    "will call {name} once logged in"
                )));
                self.deferred_call = Some(name.to_string());
            }
            return;
        }
        let Some(nc) = self.nc.as_mut() else {
            return;
        };
        match nc.call(&mut self.ep, now, "lookup", vec![Value::from(name)]) {
            Ok(t) => {
                self.pending.insert(
                    tid_key(t),
                    Pending::Lookup(name.to_string(), now + LOOKUP_TIMEOUT),
                );
            }
            Err(e) => self.push(PhoneEvent::Notice(format!("lookup failed: {e}"))),
        }
        self.process(now);
    }

    /// The owner's answer to [`PhoneEvent::RegistryLookup`].
    pub fn registry_lookup_result(&mut self, now: Instant, name: &str, peer_id: Option<&str>) {
        match peer_id.filter(|p| valid_peer_hex(p)) {
            Some(p) if self.call.state() == CallState::Idle => {
                self.place_call(now, name.to_string(), p.to_ascii_lowercase());
            }
            Some(_) => {}
            None => {
                self.push(PhoneEvent::Notice(format!("{name} is not registered")));
                let acts = self.call.call(now, &self.cfg.user.clone(), "");
                self.apply(now, acts);
            }
        }
        self.process(now);
    }

    fn place_call(&mut self, now: Instant, name: String, peer_hex: String) {
        if peer_hex == self.peer_hex {
            self.push(PhoneEvent::Notice("you cannot call yourself".into()));
            return;
        }
        let user = self.cfg.user.clone();
        let acts = self.call.call(now, &user, &peer_hex);
        if self.call.state() == CallState::Calling {
            self.calls += 1;
            self.stats = Stats {
                peer_name: Some(name.clone()),
                ..Stats::default()
            };
            self.push(PhoneEvent::Calling {
                name,
                peer_id: peer_hex.clone(),
            });
            self.media = Some(CallMedia::new(peer_hex, true));
            // the sample's caller subscribes to media-callee at invite time:
            // open the direct session now (hole punching while it rings)
            self.open_direct(now);
        }
        self.apply(now, acts);
    }

    /// Accepts the ringing call.
    pub fn accept(&mut self, now: Instant) {
        if self.call.state() != CallState::Ringing {
            self.push(PhoneEvent::Notice("no call to accept".into()));
            return;
        }
        // publish media-callee (answer the held request) and play
        // media-caller before sending accept, as the sample does
        let acts = self.call.accept(now);
        self.apply(now, acts);
        self.process(now);
    }

    /// Rejects the ringing call.
    pub fn reject(&mut self, now: Instant) {
        if self.call.state() != CallState::Ringing {
            self.push(PhoneEvent::Notice("no call to reject".into()));
            return;
        }
        let acts = self.call.reject(now);
        self.apply(now, acts);
        self.process(now);
    }

    /// Hangs up (or cancels, or rejects) the call.
    pub fn hangup(&mut self, now: Instant) {
        if self.call.state() == CallState::Idle {
            if self.deferred_call.take().is_some() {
                self.push(PhoneEvent::Notice("call cancelled".into()));
            } else {
                self.push(PhoneEvent::Notice("no call to hang up".into()));
            }
            return;
        }
        let acts = self.call.hangup(now);
        self.apply(now, acts);
        self.process(now);
    }

    /// Sends a chat line to the peer.
    pub fn say(&mut self, now: Instant, text: &str) {
        if !self.in_call() {
            self.push(PhoneEvent::Notice("chat needs a call in progress".into()));
            return;
        }
        let Some(m) = self.media.as_mut() else {
            return;
        };
        if m.chat.len() >= MAX_CHAT_BACKLOG {
            self.push(PhoneEvent::Notice(
                "the peer is not receiving yet; chat line not sent".into(),
            ));
            return;
        }
        m.chat.push_back(text.chars().take(4000).collect());
        // sent at once if the peer receives (see `send_chat`)
        self.process(now);
    }

    /// Sends the chat lines said in the call while the peer receives, in
    /// order (the call's first lines wait for the peer's subscription).
    fn send_chat(&mut self, now: Instant) {
        while self.media_ready() {
            let Some(text) = self.media.as_mut().and_then(|m| m.chat.pop_front()) else {
                return;
            };
            let msg = DataMessage::new(
                "onIm",
                vec![
                    Value::from(self.cfg.user.as_str()),
                    Value::from(text.as_str()),
                ],
            );
            let ts = self.media_ts(now);
            if !self.send_data_message(now, ts, msg) {
                // the path is not ready after all: after the next input
                if let Some(m) = self.media.as_mut() {
                    m.chat.push_front(text);
                }
                return;
            }
            self.stats.chat_sent += 1;
            let unix_ms = self.unix_ms(now).max(0.0) as u64;
            self.push(PhoneEvent::Chat {
                from: self.cfg.user.clone(),
                text,
                unix_ms,
                local: true,
            });
        }
    }

    /// Asks the peer for a key frame (`nimbusKeyframe` on our published
    /// stream): our decoder (a web page's, say) lost its picture. At most one
    /// every [`KEYFRAME_REQUEST_INTERVAL`]; nothing while the peer does not
    /// receive our stream.
    pub fn request_keyframe(&mut self, now: Instant) {
        if !self.media_ready() {
            return;
        }
        if self
            .stats
            .keyframe_sent_at
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        let ts = self.media_ts(now);
        if self.send_data_message(now, ts, DataMessage::new(KEYFRAME_HANDLER, Vec::new())) {
            self.stats.keyframe_sent_at = Some(now);
            self.stats.keyframe_requests_sent += 1;
        }
        self.process(now);
    }

    /// Tells the owner that its source should send a key frame (at most one
    /// report of each kind every [`KEYFRAME_REQUEST_INTERVAL`]).
    fn report_keyframe_wanted(&mut self, now: Instant, by_peer: bool) {
        let last = if by_peer {
            &mut self.stats.keyframe_by_peer_at
        } else {
            &mut self.stats.keyframe_own_at
        };
        if last.is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
            return;
        }
        *last = Some(now);
        self.push(PhoneEvent::KeyframeRequested { by_peer });
    }

    /// Hangs up, closes every session and stops reconnecting.
    pub fn quit(&mut self, now: Instant) {
        if self.call.state() != CallState::Idle {
            let acts = self.call.hangup(now);
            self.apply(now, acts);
        }
        self.quitting = true;
        self.teardown_media(now);
        let sessions: Vec<SessionId> = self.peers.keys().copied().collect();
        for s in sessions {
            self.ep.close_session(now, s);
        }
        if let Some(nc) = self.nc.as_mut() {
            nc.close(&mut self.ep, now);
        }
        self.login = Login::Off;
        self.process(now);
    }

    /// True once [`quit`](Self::quit) finished closing (every session gone).
    pub fn closed(&self) -> bool {
        self.quitting && self.ep.session_count() == 0
    }

    /// Media timestamp for a data message now (our media clock).
    fn media_ts(&self, now: Instant) -> u32 {
        let epoch = self.media.as_ref().and_then(|m| m.local_epoch);
        match epoch {
            Some(e) => (self.unix_ms(now) - e).clamp(0.0, f64::from(u32::MAX)) as u32,
            None => 0,
        }
    }

    // ----- media out ---------------------------------------------------------

    /// Sends one tag of our media source to the peer; `captured` is when
    /// the tag was due (its timestamp on our media clock). Tags before the
    /// call is established, or while no path is up, are dropped (headers
    /// are kept for the receiver). Returns whether it was sent.
    pub fn send_media(&mut self, now: Instant, tag: &MediaTag, captured: Instant) -> bool {
        let unix = self.unix_ms(captured);
        if self.call.state() != CallState::InCall {
            return false;
        }
        if tag.kind != MediaKind::Data {
            let ms = now.saturating_duration_since(captured).as_secs_f64() * 1000.0;
            self.stats.send_latency.add(ms);
        }
        let Some(m) = self.media.as_mut() else {
            return false;
        };
        if m.local_epoch.is_none() {
            m.local_epoch = Some(unix - f64::from(tag.timestamp));
        }
        let is_metadata =
            tag.kind == MediaKind::Data && data_handler(&tag.data).as_deref() == Some("onMetaData");
        if is_metadata {
            m.metadata = Some(tag.clone());
        } else if tag.is_sequence_header() {
            match tag.kind {
                MediaKind::Video => m.avc_config = Some(tag.clone()),
                _ => m.aac_config = Some(tag.clone()),
            }
        }
        let r = self.send_tag(now, tag, is_metadata);
        self.process(now);
        r
    }

    /// True once the call is established and the peer receives our media
    /// (its subscription accepted, or the relay stream published).
    pub fn media_ready(&self) -> bool {
        self.in_call() && self.receiver_ready()
    }

    /// Whether a receiver is ready (direct subscriber or relay publishing).
    fn receiver_ready(&self) -> bool {
        self.media.as_ref().is_some_and(|m| {
            m.subscriber.is_some() || m.relay.as_ref().is_some_and(|r| r.publishing)
        })
    }

    /// Sends a source tag to the receiver, preceded by the metadata and
    /// decoder configuration when the receiver is new. The source's own
    /// `onMetaData` goes out as ours (with `nimbusEpochMs`).
    fn send_tag(&mut self, now: Instant, tag: &MediaTag, is_metadata: bool) -> bool {
        if !self.receiver_ready() {
            return false;
        }
        let Some(m) = self.media.as_mut() else {
            return false;
        };
        let mut first = Vec::new();
        if m.need_headers {
            m.need_headers = false;
            m.need_key = true;
            first.push(m.metadata_tag(tag.timestamp));
            first.extend(
                m.avc_config
                    .iter()
                    .chain(&m.aac_config)
                    .map(|h| MediaTag::new(h.kind, tag.timestamp, h.data.clone())),
            );
        } else if is_metadata {
            first.push(m.metadata_tag(tag.timestamp));
        }
        for h in first {
            let _ = self.transmit(now, &h);
        }
        if is_metadata {
            return true;
        }
        let Some(m) = self.media.as_mut() else {
            return false;
        };
        if tag.kind == MediaKind::Video && !tag.is_sequence_header() {
            if m.need_key && !tag.is_keyframe() {
                self.stats.send_drops += 1;
                // a live source sends key frames only when asked
                self.report_keyframe_wanted(now, false);
                return false;
            }
            m.need_key = false;
        }
        if let Some(sub) = m.subscriber {
            let muted = match tag.kind {
                MediaKind::Audio => !sub.audio,
                MediaKind::Video => !sub.video,
                MediaKind::Data => false,
            };
            if muted {
                return false;
            }
        }
        let ok = self.transmit(now, tag);
        if ok {
            let c = &mut self.stats.sent;
            match tag.kind {
                MediaKind::Video if !tag.is_sequence_header() => c.video_frames += 1,
                MediaKind::Audio if !tag.is_sequence_header() => c.audio_packets += 1,
                _ => c.data_messages += 1,
            }
            c.bytes += tag.data.len() as u64;
            self.stats.tx.add(now, tag.data.len());
        } else {
            self.stats.send_drops += 1;
            if tag.kind == MediaKind::Video {
                if let Some(m) = self.media.as_mut() {
                    m.need_key = true;
                }
            }
        }
        ok
    }

    /// Puts a tag on the wire by the current path.
    fn transmit(&mut self, now: Instant, tag: &MediaTag) -> bool {
        let body = match tag.kind {
            MediaKind::Audio => Body::Audio(tag.data.clone()),
            MediaKind::Video => Body::Video(tag.data.clone()),
            MediaKind::Data => match data_message(&tag.data) {
                Some(d) => Body::data(d),
                None => return false,
            },
        };
        self.transmit_body(now, tag.timestamp, body)
    }

    /// Puts an audio, video or data message on the wire by the current path.
    fn transmit_body(&mut self, now: Instant, ts: u32, body: Body) -> bool {
        let (audio_lt, video_lt) = (self.cfg.audio_lifetime, self.cfg.video_lifetime);
        let Some(m) = self.media.as_mut() else {
            return false;
        };
        if let Some(sub) = m.subscriber {
            let Some(peer) = self.peers.get_mut(&sub.session) else {
                return false;
            };
            let lt = match body {
                Body::Audio(_) => Some(match self.ep.srtt(sub.session) {
                    Some(srtt) => self
                        .cfg
                        .audio_budget
                        .saturating_sub(srtt / 2)
                        .clamp(Duration::from_millis(20), audio_lt),
                    // no RTT measured yet: the budget itself bounds the lifetime
                    None => self.cfg.audio_budget.min(audio_lt),
                }),
                Body::Video(_) => Some(video_lt),
                _ => None,
            };
            let Ok(frame) = RtmpMessage::from_body(ts, &body).map(|m| m.encode()) else {
                return false;
            };
            return peer
                .publisher
                .send_media(&mut self.ep, now, sub.id, frame, lt)
                .is_ok();
        }
        let Some(stream) = m
            .relay
            .as_ref()
            .filter(|r| r.publishing)
            .and_then(|r| r.publish_stream)
        else {
            return false;
        };
        let Some(nc) = self.nc.as_mut().filter(|_| self.login == Login::Online) else {
            return false;
        };
        let r = match body {
            Body::Audio(b) => nc.send_audio(&mut self.ep, now, stream, ts, b),
            Body::Video(b) => nc.send_video(&mut self.ep, now, stream, ts, b),
            Body::Data { message, .. } => nc.send_data(&mut self.ep, now, stream, ts, message),
            _ => return false,
        };
        r.is_ok()
    }

    fn send_data_message(&mut self, now: Instant, ts: u32, msg: DataMessage) -> bool {
        self.receiver_ready() && self.transmit_body(now, ts, Body::data(msg))
    }

    // ----- internals -------------------------------------------------------

    fn apply(&mut self, now: Instant, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::SendRelay { to_peer, args } => {
                    let sent = match self.nc.as_mut().filter(|_| self.login == Login::Online) {
                        Some(nc) => {
                            let mut v = vec![Value::from(to_peer.as_str())];
                            v.extend(args.iter().map(|s| Value::from(s.as_str())));
                            nc.call(&mut self.ep, now, "relay", v).ok()
                        }
                        None => None,
                    };
                    match sent {
                        Some(t) => {
                            self.pending.insert(tid_key(t), Pending::Relay(to_peer));
                        }
                        None => {
                            // the server is away: the message is lost; a
                            // bye still ends our side, the direct session's
                            // close tells the peer
                            if args.first().map(String::as_str) == Some("invite") {
                                let acts = self.call.relay_failed(now, &to_peer);
                                self.push(PhoneEvent::Notice("not connected to the server".into()));
                                self.apply(now, acts);
                            }
                        }
                    }
                }
                Action::Event(e) => self.on_call_event(now, e),
            }
        }
    }

    /// Takes the peer ID of the certificate the engine uses now: it
    /// changes when the Flash profile fell back to its group 2 certificate
    /// for a server that did not understand the default one (MonaServer2),
    /// and that server, the registry and our peers must know us by it.
    fn adopt_identity(&mut self) {
        let id = rtmfp_flash::fingerprint(self.ep.profile().certificate());
        if id != self.peer_id {
            self.push(PhoneEvent::Notice(format!(
                "the server did not answer our keying with the default certificate (DH \
                 groups 16, 14, 2); fell back to one with only our group 2 key: peer ID {id} \
                 (was {})",
                self.peer_hex
            )));
            self.peer_id = id;
            self.peer_hex = id.to_hex();
        }
    }

    fn on_call_event(&mut self, now: Instant, e: call::Event) {
        match &e {
            call::Event::Incoming { from_peer, .. } => {
                self.calls += 1;
                self.stats = Stats::default();
                self.media = Some(CallMedia::new(from_peer.to_ascii_lowercase(), false));
                self.adopt_session(now);
            }
            call::Event::Accepted => {
                if let Some(m) = self.media.as_mut() {
                    m.direct_deadline = Some(now + self.cfg.direct_timeout);
                }
                if !self.media.as_ref().is_some_and(|m| m.caller) {
                    self.adopt_session(now);
                    if self
                        .media
                        .as_ref()
                        .is_some_and(|m| m.session.is_none() && m.opening.is_none())
                    {
                        self.open_direct(now);
                    }
                }
                self.start_play(now);
                self.answer_held(now);
            }
            call::Event::HungUp { .. }
            | call::Event::Cancelled { .. }
            | call::Event::Rejected { .. }
            | call::Event::PeerBusy
            | call::Event::NoAnswer
            | call::Event::Offline => {
                // stop media at once; the session closes at Ended
                self.stop_streams(now);
            }
            call::Event::Ended => self.teardown_media(now),
            call::Event::Busy { .. } => {}
        }
        if let Some(name) = self.call.peer_name() {
            if self.stats.peer_name.as_deref() != Some(name) {
                self.stats.peer_name = Some(name.to_string());
            }
        }
        self.push(PhoneEvent::Call(e));
    }

    /// Opens the direct session to the call's peer through the server.
    fn open_direct(&mut self, now: Instant) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        let Ok(id) = m.peer_hex.parse::<PeerId>() else {
            return;
        };
        let epd = Epd::peer(id).encode();
        if let Ok(s) = self.ep.connect(now, &epd, &self.cfg.servers) {
            m.opening = Some(s);
        }
    }

    /// Takes an open session with the call's peer as the call's session.
    fn adopt_session(&mut self, now: Instant) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        if m.session.is_some() {
            return;
        }
        let found = self
            .peers
            .iter()
            .filter(|(_, p)| p.peer_hex == m.peer_hex)
            .map(|(s, _)| *s)
            .min();
        if let Some(s) = found {
            m.session = Some(s);
            // media flows all the time: a silent path is a dead one
            let idle = self.cfg.direct_idle_timeout;
            let _ = self.ep.set_idle_timeout(s, idle);
            let _ = self
                .ep
                .set_keepalive(s, (idle / 4).max(Duration::from_secs(1)));
            if let Some(info) = self.ep.session_info(s) {
                if m.path != MediaPath::Relay {
                    m.path = MediaPath::Direct(info.peer);
                    m.direct_deadline = None;
                    let p = m.path;
                    self.push(PhoneEvent::Path(p));
                }
            }
            self.start_play(now);
        }
    }

    /// Plays the peer's stream on the call session (caller: as soon as the
    /// session is up; callee: once accepted).
    fn start_play(&mut self, now: Instant) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        if m.play_stream.is_some() || m.path == MediaPath::Relay {
            return;
        }
        if !m.caller && self.call.state() != CallState::InCall {
            return;
        }
        let Some(s) = m.session else {
            return;
        };
        let mut player = PeerPlayer::new(s);
        if let Ok(id) = player.play(&mut self.ep, now, m.their_stream()) {
            m.play_stream = Some(id);
            m.player = Some(player);
        }
    }

    /// Answers play requests held while we could not publish yet.
    fn answer_held(&mut self, now: Instant) {
        let held = match self.media.as_mut() {
            Some(m) if m.caller || self.call.state() == CallState::InCall => {
                std::mem::take(&mut m.held)
            }
            _ => return,
        };
        for (s, sub) in held {
            self.accept_subscriber(now, s, sub);
        }
    }

    fn accept_subscriber(&mut self, now: Instant, s: SessionId, sub: u64) {
        let Some(peer) = self.peers.get_mut(&s) else {
            return;
        };
        if peer.publisher.accept(&mut self.ep, now, sub).is_err() {
            return;
        }
        if let Some(m) = self.media.as_mut() {
            if let Some(old) = m.subscriber.replace(Subscriber {
                session: s,
                id: sub,
                audio: true,
                video: true,
            }) {
                if old.session != s || old.id != sub {
                    if let Some(p) = self.peers.get_mut(&old.session) {
                        p.publisher.close_subscriber(&mut self.ep, now, old.id);
                    }
                }
            }
            m.need_headers = true;
            m.need_key = true;
            if m.path == MediaPath::Connecting {
                if let Some(info) = self.ep.session_info(s) {
                    m.path = MediaPath::Direct(info.peer);
                    m.direct_deadline = None;
                    let p = m.path;
                    self.push(PhoneEvent::Path(p));
                }
            }
        }
    }

    /// Stops our streams (keeps the session until the call has ended).
    fn stop_streams(&mut self, now: Instant) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        m.direct_deadline = None;
        if let (Some(p), Some(id)) = (m.player.as_mut(), m.play_stream.take()) {
            p.close(&mut self.ep, now, id);
        }
        if let Some(sub) = m.subscriber.take() {
            if let Some(p) = self.peers.get_mut(&sub.session) {
                p.publisher.close_subscriber(&mut self.ep, now, sub.id);
            }
        }
        for (s, sub) in std::mem::take(&mut m.held) {
            if let Some(p) = self.peers.get_mut(&s) {
                let _ = p
                    .publisher
                    .refuse(&mut self.ep, now, sub, "the call is over");
            }
        }
        if let Some(r) = m.relay.take() {
            if let Some(nc) = self.nc.as_mut().filter(|_| self.login == Login::Online) {
                for s in [r.publish_stream, r.play_stream].into_iter().flatten() {
                    let _ = nc.delete_stream(&mut self.ep, now, s);
                }
            }
        }
    }

    /// The call is over: streams and the direct session close.
    fn teardown_media(&mut self, now: Instant) {
        self.stop_streams(now);
        if let Some(m) = self.media.take() {
            if !m.chat.is_empty() {
                self.push(PhoneEvent::Notice(format!(
                    "{} chat line(s) not sent: the peer never received",
                    m.chat.len()
                )));
            }
            for s in [m.session, m.opening].into_iter().flatten() {
                self.ep.close_session(now, s);
                self.peers.remove(&s);
            }
            // other sessions with the same peer (glare)
            let dup: Vec<SessionId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.peer_hex == m.peer_hex)
                .map(|(s, _)| *s)
                .collect();
            for s in dup {
                self.ep.close_session(now, s);
                self.peers.remove(&s);
            }
        }
    }

    fn direct_timed_out(&mut self, now: Instant) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        m.direct_deadline = None;
        if self.call.state() != CallState::InCall
            || m.subscriber.is_some()
            || m.path != MediaPath::Connecting
        {
            return;
        }
        if !self.cfg.relay_fallback {
            self.push(PhoneEvent::Notice(
                "no direct path to the peer (relay fallback is off); still trying".into(),
            ));
            return;
        }
        m.path = MediaPath::Relay;
        m.relay = Some(RelayMedia::default());
        // give up on the direct player: media comes from the server now
        if let (Some(p), Some(id)) = (m.player.as_mut(), m.play_stream.take()) {
            p.close(&mut self.ep, now, id);
        }
        self.stats.relayed = true;
        self.push(PhoneEvent::Path(MediaPath::Relay));
        self.start_relay(now);
    }

    /// Creates the two relay streams (again after a reconnection).
    fn start_relay(&mut self, now: Instant) {
        let Some(nc) = self.nc.as_mut().filter(|_| self.login == Login::Online) else {
            return;
        };
        let Some(r) = self.media.as_mut().and_then(|m| m.relay.as_mut()) else {
            return;
        };
        *r = RelayMedia::default();
        if let Ok(t) = nc.create_stream(&mut self.ep, now) {
            r.publish_txn = Some(t);
        }
        if let Ok(t) = nc.create_stream(&mut self.ep, now) {
            r.play_txn = Some(t);
        }
    }

    fn relay_names(&self) -> Option<(String, String)> {
        let m = self.media.as_ref()?;
        let (caller, callee) = if m.caller {
            (self.peer_hex.as_str(), m.peer_hex.as_str())
        } else {
            (m.peer_hex.as_str(), self.peer_hex.as_str())
        };
        let ours = relay_stream_name(caller, callee, m.caller);
        let theirs = relay_stream_name(caller, callee, !m.caller);
        Some((ours, theirs))
    }

    fn on_stream_created(&mut self, now: Instant, txn: f64, stream: u32) {
        let Some((ours, theirs)) = self.relay_names() else {
            return;
        };
        let Some(r) = self.media.as_mut().and_then(|m| m.relay.as_mut()) else {
            return;
        };
        let Some(nc) = self.nc.as_mut() else {
            return;
        };
        if r.publish_txn == Some(txn) {
            r.publish_stream = Some(stream);
            if nc.publish(&mut self.ep, now, stream, &ours).is_ok() {
                r.publishing = true;
                if let Some(m) = self.media.as_mut() {
                    m.need_headers = true;
                    m.need_key = true;
                }
            }
        } else if r.play_txn == Some(txn) {
            r.play_stream = Some(stream);
            let _ = nc.play(&mut self.ep, now, stream, &theirs);
        }
    }

    /// Drains engine, NetConnection, publisher and player events.
    fn process(&mut self, now: Instant) {
        // bounded: each round consumes what the previous produced
        for _ in 0..64 {
            let mut any = false;
            while let Some(e) = self.ep.poll_event() {
                any = true;
                self.on_engine_event(now, e);
            }
            while let Some(e) = self.nc.as_mut().and_then(NetConnection::poll_event) {
                any = true;
                self.on_nc_event(now, e);
            }
            // gathered first (answering needs all of `self`); the buffer
            // keeps its capacity, so this costs no allocation per datagram
            let mut pe = std::mem::take(&mut self.peer_events);
            for (s, p) in self.peers.iter_mut() {
                while let Some(e) = p.publisher.poll_event() {
                    pe.push((*s, e));
                }
            }
            any |= !pe.is_empty();
            for (s, e) in pe.drain(..) {
                self.on_peer_event(now, s, e);
            }
            self.peer_events = pe;
            while let Some(e) = self
                .media
                .as_mut()
                .and_then(|m| m.player.as_mut())
                .and_then(PeerPlayer::poll_event)
            {
                any = true;
                self.on_player_event(now, e);
            }
            if !any {
                break;
            }
        }
        self.send_chat(now);
        self.source_lifecycle(now);
    }

    /// Reports when the media source must start (the call is established
    /// and the peer receives) and stop (the established call is over).
    fn source_lifecycle(&mut self, now: Instant) {
        let in_call = self.in_call();
        if in_call && !self.source_on && self.receiver_ready() {
            self.source_on = true;
            self.push(PhoneEvent::StartSource);
        }
        if !in_call && self.was_in_call {
            self.source_on = false;
            let call = Box::new(self.status(now));
            self.push(PhoneEvent::StopSource { call });
        }
        self.was_in_call = in_call;
    }

    fn on_engine_event(&mut self, now: Instant, e: Event) {
        if let Some(nc) = self.nc.as_mut() {
            if nc.on_event(&mut self.ep, now, &e) {
                return;
            }
        }
        match &e {
            Event::SessionOpened { session, .. } => {
                let Some(info) = self.ep.session_info(*session) else {
                    return;
                };
                let hex = rtmfp_flash::fingerprint(&info.far_certificate).to_hex();
                self.peers.insert(
                    *session,
                    Peer {
                        peer_hex: hex.clone(),
                        publisher: PeerPublisher::new(*session),
                    },
                );
                let ours = self.media.as_ref().is_some_and(|m| m.peer_hex == hex);
                if let Some(m) = self.media.as_mut() {
                    if m.opening == Some(*session) {
                        m.opening = None;
                    }
                }
                if ours {
                    self.adopt_session(now);
                }
                return;
            }
            Event::SessionFailed { session, .. } => {
                if let Some(m) = self.media.as_mut() {
                    if m.opening == Some(*session) {
                        m.opening = None;
                    }
                }
                return;
            }
            Event::SessionClosed { session, reason } => {
                let was_call = self
                    .media
                    .as_ref()
                    .is_some_and(|m| m.session == Some(*session));
                // let the halves see it first
                if let Some(p) = self.peers.get_mut(session) {
                    p.publisher.on_event(&mut self.ep, now, &e);
                }
                if was_call {
                    if let Some(pl) = self.media.as_mut().and_then(|m| m.player.as_mut()) {
                        pl.on_event(&mut self.ep, now, &e);
                    }
                }
                self.peers.remove(session);
                if was_call {
                    self.call_session_closed(now, reason.clone());
                }
                return;
            }
            _ => {}
        }
        let Some(session) = e.session() else {
            return;
        };
        if let Event::AddressChanged { new, .. } = &e {
            if let Some(m) = self.media.as_mut() {
                if m.session == Some(session) {
                    if let MediaPath::Direct(_) = m.path {
                        m.path = MediaPath::Direct(*new);
                        self.push(PhoneEvent::Path(MediaPath::Direct(*new)));
                    }
                }
            }
            return;
        }
        if let Some(pl) = self.media.as_mut().and_then(|m| m.player.as_mut()) {
            if pl.session() == session && pl.on_event(&mut self.ep, now, &e) {
                return;
            }
        }
        if let Some(p) = self.peers.get_mut(&session) {
            if p.publisher.on_event(&mut self.ep, now, &e) {
                return;
            }
        }
        // a flow nobody claims: refuse it
        if let Event::IncomingFlow { session, flow, .. } = e {
            let _ = self.ep.reject_flow(now, session, flow, 0);
        }
    }

    fn call_session_closed(&mut self, now: Instant, reason: CloseReason) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        m.session = None;
        m.player = None;
        m.play_stream = None;
        m.subscriber = None;
        if matches!(reason, CloseReason::Remote) {
            let acts = self.call.peer_gone(now);
            if !acts.is_empty() {
                self.apply(now, acts);
                return;
            }
        }
        // lost without a goodbye: try again, relay if it does not come back
        if self.call.state() == CallState::InCall && m.path != MediaPath::Relay {
            m.path = MediaPath::Connecting;
            m.direct_deadline = Some(now + self.cfg.direct_timeout);
            self.push(PhoneEvent::Notice("direct session lost; reopening".into()));
            self.push(PhoneEvent::Path(MediaPath::Connecting));
            self.open_direct(now);
        }
    }

    fn on_peer_event(&mut self, now: Instant, s: SessionId, e: PeerEvent) {
        match e {
            PeerEvent::PlayRequest {
                subscriber, name, ..
            } => {
                let peer_hex = self
                    .peers
                    .get(&s)
                    .map(|p| p.peer_hex.clone())
                    .unwrap_or_default();
                let (ours, ready) = match self.media.as_ref() {
                    Some(m) if m.peer_hex == peer_hex && name == m.our_stream() => {
                        // the caller publishes from the invite on; the
                        // callee once it accepts
                        (true, m.caller || self.call.state() == CallState::InCall)
                    }
                    _ => (false, false),
                };
                if ours && ready {
                    self.accept_subscriber(now, s, subscriber);
                } else if ours {
                    if let Some(m) = self.media.as_mut() {
                        if m.held.len() < 4 {
                            m.held.push((s, subscriber));
                        }
                    }
                } else {
                    if let Some(p) = self.peers.get_mut(&s) {
                        let _ = p.publisher.refuse(
                            &mut self.ep,
                            now,
                            subscriber,
                            "not in a call with you",
                        );
                    }
                    self.push(PhoneEvent::Refused {
                        peer_id: peer_hex,
                        stream: name,
                    });
                }
            }
            PeerEvent::Command {
                subscriber,
                name,
                args,
            } => {
                let on = args.first().and_then(Value::as_bool);
                if let Some(sub) = self
                    .media
                    .as_mut()
                    .and_then(|m| m.subscriber.as_mut())
                    .filter(|x| x.session == s && x.id == subscriber)
                {
                    match (name.as_str(), on) {
                        ("receiveAudio", Some(b)) => sub.audio = b,
                        ("receiveVideo", Some(b)) => {
                            if b && !sub.video {
                                if let Some(m) = self.media.as_mut() {
                                    m.need_key = true;
                                }
                            }
                            if let Some(sub) =
                                self.media.as_mut().and_then(|m| m.subscriber.as_mut())
                            {
                                sub.video = b;
                            }
                        }
                        _ => {}
                    }
                }
            }
            PeerEvent::Closed { subscriber } => {
                if let Some(m) = self.media.as_mut() {
                    if m.subscriber
                        .is_some_and(|x| x.session == s && x.id == subscriber)
                    {
                        m.subscriber = None;
                    }
                    m.held.retain(|h| *h != (s, subscriber));
                }
            }
            _ => {}
        }
    }

    fn on_player_event(&mut self, now: Instant, e: PlayerEvent) {
        let Some(stream) = self.media.as_ref().and_then(|m| m.play_stream) else {
            return;
        };
        match e {
            PlayerEvent::Audio {
                stream: s,
                timestamp,
                payload,
            } if s == stream => self.on_media(now, MediaKind::Audio, timestamp, payload),
            PlayerEvent::Video {
                stream: s,
                timestamp,
                payload,
            } if s == stream => self.on_media(now, MediaKind::Video, timestamp, payload),
            PlayerEvent::Data {
                stream: s,
                timestamp,
                message,
            } if s == stream => self.on_data(now, timestamp, message),
            PlayerEvent::Closed {
                stream: s,
                rejected,
            } if s == stream => {
                if let Some(m) = self.media.as_mut() {
                    m.play_stream = None;
                }
                // a rejection before any media is a refusal; after media it
                // is the peer closing its stream (hang-up)
                let got_media =
                    self.stats.received.video_frames + self.stats.received.audio_packets > 0;
                if rejected && !got_media {
                    self.push(PhoneEvent::Notice(
                        "the peer refused to send us its media".into(),
                    ));
                }
            }
            _ => {}
        }
    }

    fn on_media(&mut self, now: Instant, kind: MediaKind, ts: u32, payload: Bytes) {
        let unix = self.unix_ms(now);
        let tag = MediaTag::new(kind, ts, payload);
        let header = tag.is_sequence_header();
        if !header {
            let c = &mut self.stats.received;
            match kind {
                MediaKind::Audio => {
                    c.audio_packets += 1;
                    self.stats.audio.add(ts);
                }
                _ => {
                    c.video_frames += 1;
                    self.stats.video.add(ts);
                }
            }
            c.bytes += tag.data.len() as u64;
            if let Some(e) = self.media.as_ref().and_then(|m| m.remote_epoch) {
                let lat = unix - e - f64::from(ts);
                match kind {
                    MediaKind::Audio => self.stats.audio_latency.add(lat),
                    _ => self.stats.video_latency.add(lat),
                }
            }
        }
        self.stats.rx.add(now, tag.data.len());
        self.push(PhoneEvent::Media { tag, received: now });
    }

    fn on_data(&mut self, now: Instant, ts: u32, message: DataMessage) {
        self.stats.received.data_messages += 1;
        match message.handler.as_str() {
            "onIm" | "onReceive" => {
                let mut it = message.values.iter().filter_map(Value::as_str);
                let (Some(a), b) = (it.next(), it.next()) else {
                    return;
                };
                let (from, text) = match b {
                    Some(b) => (a.to_string(), b.to_string()),
                    None => (
                        self.media
                            .as_ref()
                            .map(|m| m.peer_hex.clone())
                            .unwrap_or_default(),
                        a.to_string(),
                    ),
                };
                self.stats.chat_received += 1;
                let unix_ms = self.unix_ms(now).max(0.0) as u64;
                self.push(PhoneEvent::Chat {
                    from,
                    text: text.chars().take(4000).collect(),
                    unix_ms,
                    local: false,
                });
            }
            KEYFRAME_HANDLER => {
                self.stats.keyframe_requests_received += 1;
                self.report_keyframe_wanted(now, true);
            }
            "onMetaData" => {
                let obj = message.values.first();
                let epoch = obj
                    .and_then(|o| o.get("nimbusEpochMs"))
                    .and_then(Value::as_f64);
                let fps = obj.and_then(|o| o.get("framerate")).and_then(Value::as_f64);
                if let Some(m) = self.media.as_mut() {
                    if let Some(e) = epoch.filter(|e| e.is_finite() && *e > 0.0) {
                        m.remote_epoch = Some(e);
                    }
                    if let Some(f) = fps.filter(|f| f.is_finite() && *f > 0.0 && *f <= 240.0) {
                        m.remote_fps = Some(f);
                        self.stats.remote_fps = Some(f);
                    }
                }
                let values: Vec<Value> = std::iter::once(Value::from("onMetaData"))
                    .chain(message.values)
                    .collect();
                if let Ok(data) = amf::amf0::encode_all(&values) {
                    self.push(PhoneEvent::Media {
                        tag: MediaTag::new(MediaKind::Data, ts, data),
                        received: now,
                    });
                }
            }
            _ => {}
        }
    }

    fn on_nc_event(&mut self, now: Instant, e: NcEvent) {
        match e {
            NcEvent::Connected(_) => {
                self.login = Login::Online;
                if let Some(nc) = self.nc.as_ref() {
                    let idle = self.cfg.server_idle_timeout;
                    let _ = self.ep.set_idle_timeout(nc.session(), idle);
                    let _ = self
                        .ep
                        .set_keepalive(nc.session(), (idle / 3).max(Duration::from_secs(1)));
                }
                self.backoff = Duration::from_millis(500);
                self.adopt_identity();
                let reconnected = self.was_online;
                self.was_online = true;
                self.push(PhoneEvent::LoggedIn {
                    peer_id: self.peer_hex.clone(),
                    reconnected,
                });
                if self.media.as_ref().is_some_and(|m| m.relay.is_some()) {
                    self.start_relay(now);
                }
                if let Some(name) = self.deferred_call.take() {
                    self.call(now, &name);
                }
            }
            NcEvent::ConnectFailed(status) => {
                let rejected = status.code == "NetConnection.Connect.Rejected";
                let reason = if status.description.is_empty() {
                    status.code.clone()
                } else {
                    format!("{} ({})", status.description, status.code)
                };
                if rejected && !self.was_online {
                    self.login = Login::Off;
                    self.nc = None;
                    self.push(PhoneEvent::LoginFailed {
                        reason,
                        retry_in: None,
                    });
                } else {
                    let retry = self.next_backoff();
                    self.login = Login::Waiting(now + retry);
                    self.nc = None;
                    self.push(PhoneEvent::LoginFailed {
                        reason,
                        retry_in: Some(retry),
                    });
                }
            }
            NcEvent::Closed if self.login == Login::Online && !self.quitting => {
                let retry = self.next_backoff();
                self.login = Login::Waiting(now + retry);
                self.nc = None;
                self.pending.clear();
                if let Some(r) = self.media.as_mut().and_then(|m| m.relay.as_mut()) {
                    *r = RelayMedia::default();
                }
                self.push(PhoneEvent::ServerLost { retry_in: retry });
            }
            NcEvent::CallResult {
                transaction_id,
                ok,
                values,
            } => {
                let Some(p) = self.pending.remove(&tid_key(transaction_id)) else {
                    return;
                };
                match p {
                    Pending::Lookup(name, _) => {
                        let id = values
                            .get(1)
                            .and_then(Value::as_str)
                            .filter(|s| valid_peer_hex(s))
                            .map(str::to_ascii_lowercase);
                        match id {
                            Some(id) if ok => self.place_call(now, name, id),
                            _ => self.lookup_not_found(now, name),
                        }
                    }
                    Pending::Relay(to) => {
                        if !ok {
                            let acts = self.call.relay_failed(now, &to);
                            self.apply(now, acts);
                        }
                    }
                }
            }
            NcEvent::StreamCreated {
                transaction_id,
                stream,
            } => {
                self.pending.remove(&tid_key(transaction_id));
                self.on_stream_created(now, transaction_id, stream);
            }
            NcEvent::Command { command, .. } if command.name == "onRelay" => {
                let Some((from, args)) = parse_on_relay(&command.arguments) else {
                    // every server we know relays from a peer ID; anything
                    // else is a server we cannot call back through
                    return;
                };
                let acts = self.call.on_relay(now, &from, &args);
                self.apply(now, acts);
            }
            NcEvent::Audio {
                stream,
                timestamp,
                payload,
            } if self.relay_play_stream() == Some(stream) => {
                self.on_media(now, MediaKind::Audio, timestamp, payload)
            }
            NcEvent::Video {
                stream,
                timestamp,
                payload,
            } if self.relay_play_stream() == Some(stream) => {
                self.on_media(now, MediaKind::Video, timestamp, payload)
            }
            NcEvent::Data {
                stream,
                timestamp,
                message,
            } if self.relay_play_stream() == Some(stream) => self.on_data(now, timestamp, message),
            _ => {}
        }
    }

    fn relay_play_stream(&self) -> Option<u32> {
        self.media
            .as_ref()
            .and_then(|m| m.relay.as_ref())
            .and_then(|r| r.play_stream)
    }

    /// A snapshot of the phone and its call.
    pub fn status(&mut self, now: Instant) -> PhoneStatus {
        let state = match self.call.state() {
            CallState::Idle => "idle",
            CallState::Calling => "calling",
            CallState::Ringing => "ringing",
            CallState::InCall => "in-call",
            CallState::Ending => "ending",
        };
        let m = self.media.as_ref();
        let (path, addr) = match m.map(|m| m.path).or(self.stats.path) {
            Some(MediaPath::Direct(a)) => (Some("direct".to_string()), Some(a.to_string())),
            Some(MediaPath::Relay) => (Some("relay".to_string()), None),
            Some(MediaPath::Connecting) => (Some("connecting".to_string()), None),
            None => (None, None),
        };
        let rtt_ms = m
            .and_then(|m| m.session)
            .and_then(|s| self.ep.srtt(s))
            .map(|d| d.as_secs_f64() * 1000.0);
        if let Some(info) = m
            .and_then(|m| m.session)
            .and_then(|s| self.ep.session_info(s))
        {
            let st = info.stats;
            if st.fragments_sent > 0 {
                self.stats.sent_loss =
                    (st.fragments_lost as f64 / st.fragments_sent as f64).clamp(0.0, 1.0);
            }
        }
        let fps = m.and_then(|m| m.remote_fps).or(self.stats.remote_fps);
        let loss = |c: &Continuity, interval: Option<f64>| match c.expected(interval) {
            Some(e) if e > 0 => (1.0 - c.count as f64 / e as f64).max(0.0),
            _ => 0.0,
        };
        let audio_loss = loss(&self.stats.audio, None);
        let video_loss = loss(&self.stats.video, fps.map(|f| 1000.0 / f));
        PhoneStatus {
            user: self.cfg.user.clone(),
            peer_id: self.peer_hex.clone(),
            online: self.online(),
            call_state: state.into(),
            peer_name: self
                .call
                .peer_name()
                .or(self.stats.peer_name.as_deref())
                .map(str::to_string),
            path,
            peer_address: addr,
            sent: self.stats.sent,
            received: self.stats.received,
            send_drops: self.stats.send_drops,
            send_latency: self.stats.send_latency.summary(),
            sent_loss: self.stats.sent_loss,
            keyframe_requests_sent: self.stats.keyframe_requests_sent,
            keyframe_requests_received: self.stats.keyframe_requests_received,
            rx_kbps: self.stats.rx.kbps(now),
            tx_kbps: self.stats.tx.kbps(now),
            audio_loss,
            video_loss,
            audio_latency: self.stats.audio_latency.summary(),
            video_latency: self.stats.video_latency.summary(),
            rtt_ms,
            chat_received: self.stats.chat_received,
            chat_sent: self.stats.chat_sent,
            relayed: self.stats.relayed,
            calls: self.calls,
            media_events_dropped: self.media_dropped_events,
            events_dropped: self.events_dropped,
        }
    }
}

/// The phone on a host (`rtmfp_tokio::Host`, or a simulator): the inherent
/// methods of the same names, [`PhoneCommand`]s for the others.
/// [`handle_close`](Machine::handle_close) quits; the phone is
/// [done](Machine::is_done) once it has quit and every session is closed.
impl Machine for PhoneCore {
    type Command = PhoneCommand;
    type Event = PhoneEvent;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        PhoneCore::handle_datagram(self, now, from, data);
    }

    fn handle_timeout(&mut self, now: Instant) {
        PhoneCore::handle_timeout(self, now);
    }

    fn handle_command(&mut self, now: Instant, command: PhoneCommand) {
        match command {
            PhoneCommand::Start => self.start(now),
            PhoneCommand::Call(name) => self.call(now, &name),
            PhoneCommand::Accept => self.accept(now),
            PhoneCommand::Reject => self.reject(now),
            PhoneCommand::Hangup => self.hangup(now),
            PhoneCommand::Say(text) => self.say(now, &text),
            PhoneCommand::Quit => self.quit(now),
            PhoneCommand::SendMedia { tag, captured } => {
                self.send_media(now, &tag, captured);
            }
            PhoneCommand::RequestKeyframe => self.request_keyframe(now),
            PhoneCommand::RegistryLookupResult { name, peer_id } => {
                self.registry_lookup_result(now, &name, peer_id.as_deref());
            }
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        PhoneCore::poll_transmit(self, now, buf)
    }

    fn poll_event(&mut self) -> Option<PhoneEvent> {
        PhoneCore::poll_event(self)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        PhoneCore::poll_timeout(self)
    }

    fn handle_close(&mut self, now: Instant) {
        self.quit(now);
    }

    fn is_done(&self) -> Option<bool> {
        Some(self.closed())
    }
}

/// The handler name of an AMF0 data message body.
fn data_handler(data: &[u8]) -> Option<String> {
    let mut d = amf::amf0::Amf0Decoder::new(data);
    d.decode().ok()?.as_str().map(str::to_string)
}

/// An AMF0 data message body as a [`DataMessage`].
fn data_message(data: &[u8]) -> Option<DataMessage> {
    let mut v = amf::amf0::decode_all(data).ok()?.into_iter();
    let handler = v.next()?.as_str()?.to_string();
    Some(DataMessage::new(handler, v.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jittery_camera_is_not_counted_as_loss() {
        // 30 fps with 25..40 ms gaps, none lost
        let mut c = Continuity::default();
        let mut ts = 0u32;
        for i in 0..300u32 {
            c.add(ts);
            ts += [33, 25, 40, 34, 31][(i % 5) as usize];
        }
        let e = c.expected(None).unwrap();
        assert!((e as f64 - 300.0).abs() < 15.0, "{e}");
        // a tenth of the frames lost
        let mut c = Continuity::default();
        for i in 0..300u32 {
            if i % 10 != 5 {
                c.add(i * 33);
            }
        }
        let e = c.expected(None).unwrap();
        assert_eq!(e, 300);
    }
    use rand_core::SeedableRng;

    #[test]
    fn on_relay_in_both_forms() {
        let peer = "AB".repeat(32);
        let lower = peer.to_ascii_lowercase();
        // Cirrus: the sender's peer ID first
        let cirrus = vec![
            Value::from(peer.as_str()),
            Value::from("invite"),
            Value::from("alice"),
        ];
        let (from, args) = parse_on_relay(&cirrus).unwrap();
        assert_eq!(from, lower);
        assert_eq!(args, ["invite", "alice"]);
        // tcserver: a header object with the sender's connection ID (its
        // peer ID) and, when it published, its name
        for named in [false, true] {
            let mut h = Object::new();
            h.insert("sender", Value::from(peer.as_str()));
            if named {
                h.insert("senderName", Value::from("someone"));
            }
            let tc = vec![Value::Object(h), Value::from("accept"), Value::from("bob")];
            let (from, args) = parse_on_relay(&tc).unwrap();
            assert_eq!(from, lower);
            assert_eq!(args, ["accept", "bob"]);
        }
        // tcserver -m: a random 24-byte connection ID is no peer ID
        let mut h = Object::new();
        h.insert("sender", Value::from("cd".repeat(24).as_str()));
        assert!(parse_on_relay(&[Value::Object(h), Value::from("invite")]).is_none());
        // neither form
        assert!(parse_on_relay(&[]).is_none());
        assert!(parse_on_relay(&[Value::Null, Value::from("invite")]).is_none());
        assert!(parse_on_relay(&[Value::from("not a peer"), Value::from("invite")]).is_none());
    }

    fn core(seed: u64, now: Instant) -> PhoneCore {
        let server: SocketAddr = "127.0.0.1:1935".parse().unwrap();
        let cfg = PhoneConfig::new("alice", "rtmfp://127.0.0.1:1935/phone", vec![server]);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let profile = FlashProfile::client().build(&mut rng).unwrap();
        let engine_rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(rng.next_u64()));
        PhoneCore::new(cfg, profile, engine_rng, now, 1_700_000_000_000.0)
    }

    /// Drives `m` through `inputs` (commands or a timeout at an offset from
    /// `t0`) as a host would, returning every datagram and event.
    fn run(
        m: &mut PhoneCore,
        t0: Instant,
        inputs: Vec<(Duration, Option<PhoneCommand>)>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for (at, input) in inputs {
            let now = t0 + at;
            match input {
                Some(c) => Machine::handle_command(m, now, c),
                None => Machine::handle_timeout(m, now),
            }
            while let Some(to) = Machine::poll_transmit(m, now, &mut buf) {
                out.push(format!("{to} {buf:02x?}"));
            }
            while let Some(e) = Machine::poll_event(m) {
                out.push(format!("{e:?}"));
            }
            out.push(format!("{:?}", Machine::poll_timeout(m).map(|t| t - t0)));
        }
        out
    }

    #[test]
    fn the_same_seed_and_inputs_give_the_same_datagrams() {
        let t0 = Instant::now();
        let peer = "ab".repeat(32);
        let inputs = || {
            let s = Duration::from_secs;
            vec![
                (s(0), Some(PhoneCommand::Start)),
                (s(0), Some(PhoneCommand::Call(peer.clone()))),
                (s(1), None),
                (s(3), None),
                (s(4), Some(PhoneCommand::Say("hello".into()))),
                (s(5), Some(PhoneCommand::Hangup)),
                (s(9), None),
                (s(10), Some(PhoneCommand::Quit)),
            ]
        };
        let a = run(&mut core(1, t0), t0, inputs());
        let b = run(&mut core(1, t0), t0, inputs());
        assert!(a.iter().filter(|l| l.starts_with("127.0.0.1:1935")).count() >= 2);
        assert_eq!(a, b, "the phone drew randomness or read a clock of its own");
    }

    #[test]
    fn quitting_closes_every_session_then_the_machine_is_done() {
        let t0 = Instant::now();
        let mut m = core(2, t0);
        assert_eq!(m.is_done(), Some(false));
        Machine::handle_command(&mut m, t0, PhoneCommand::Start);
        assert_eq!(m.is_done(), Some(false), "the server session is opening");
        Machine::handle_close(&mut m, t0);
        let mut now = t0;
        let mut buf = Vec::new();
        while m.is_done() != Some(true) {
            assert!(now < t0 + Duration::from_secs(120), "never done");
            while Machine::poll_transmit(&mut m, now, &mut buf).is_some() {}
            while Machine::poll_event(&mut m).is_some() {}
            now = Machine::poll_timeout(&mut m).map_or(now, |t| t.max(now));
            now += Duration::from_millis(1);
            Machine::handle_timeout(&mut m, now);
        }
        // a closed phone does not come back
        Machine::handle_command(&mut m, now, PhoneCommand::Start);
        assert_eq!(m.is_done(), Some(true));
    }

    #[test]
    fn an_owner_that_does_not_read_costs_bounded_memory() {
        let t0 = Instant::now();
        let mut m = core(3, t0);
        for _ in 0..3 * MAX_PENDING_EVENTS {
            m.push(PhoneEvent::Media {
                tag: MediaTag::new(MediaKind::Audio, 0, Bytes::new()),
                received: t0,
            });
            m.push(PhoneEvent::Notice("a peer repeats itself".into()));
            m.push(PhoneEvent::StartSource);
        }
        assert_eq!(m.events.len(), 2 * MAX_PENDING_EVENTS);
        let st = m.status(t0);
        assert!(
            st.media_events_dropped > 0 && st.events_dropped > 0,
            "{st:?}"
        );
        // below the first bound nothing was dropped: the oldest come first
        assert!(matches!(m.poll_event(), Some(PhoneEvent::Media { .. })));
    }

    #[test]
    fn an_unanswered_lookup_goes_to_the_registry_after_its_timeout() {
        let t0 = Instant::now();
        for registry in [true, false] {
            let mut m = core(4, t0);
            m.cfg.registry_lookup = registry;
            m.pending
                .insert(7, Pending::Lookup("bob".into(), t0 + LOOKUP_TIMEOUT));
            assert!(m.poll_timeout().is_some_and(|t| t <= t0 + LOOKUP_TIMEOUT));
            // not yet
            m.handle_timeout(t0 + LOOKUP_TIMEOUT - Duration::from_millis(1));
            assert_eq!(m.pending.len(), 1);
            m.handle_timeout(t0 + LOOKUP_TIMEOUT);
            assert!(m.pending.is_empty());
            let events: Vec<PhoneEvent> = std::iter::from_fn(|| m.poll_event()).collect();
            let asked = events
                .iter()
                .any(|e| matches!(e, PhoneEvent::RegistryLookup { name } if name == "bob"));
            let offline = events
                .iter()
                .any(|e| matches!(e, PhoneEvent::Notice(n) if n == "bob is not online"));
            assert_eq!((asked, offline), (registry, !registry), "{events:?}");
            assert!(m.lookup_deadline().is_none());
        }
    }
}
