//! The WebRTC bridge: the page's peer connection as one more machine on the
//! host.
//!
//! [`Bridge`] owns the [`str0m::Rtc`] of each page connection and is an
//! [`rtmfp::Machine`], so it runs on an [`rtmfp_tokio::Host`] like every
//! other machine of the system: the host's UDP socket (on `127.0.0.1`) is
//! the WebRTC socket. The host hands every datagram to
//! [`handle_datagram`](Machine::handle_datagram), which gives it to the
//! connection whose ICE credentials or nominated address claim it
//! ([`Rtc::accepts`]); [`poll_transmit`](Machine::poll_transmit) drains the
//! connections' datagrams (and turns their events into [`BridgeEvent`]s on
//! the way); [`poll_timeout`](Machine::poll_timeout) is the earliest
//! deadline of any connection.
//!
//! The page sends its camera as H.264 (Constrained Baseline, packetization
//! mode 1, with RTX) and its microphone as G.711; the answer offers nothing
//! else, so nothing else is negotiated. Frames go both ways at the frame
//! level: an H.264 access unit in Annex B on the 90 kHz RTP clock, a 20 ms
//! G.711 frame on the 8 kHz clock. The bridge does not convert media: the
//! application does (`nimbus_media::rtc`).
//!
//! One connection is active at a time: a new offer (a reloaded page, or a
//! second tab) replaces the active one, which is closed cleanly (RTCP BYE,
//! DTLS close_notify) and dropped once its last datagrams are out. A page
//! that vanishes without a word is noticed by ICE (no STUN for about 15 s).
//!
//! # What it does not keep
//!
//! No socket, no clock (every entry point gets `now`), no thread. One
//! exception to the rule on randomness, stated here because it is str0m's:
//! each connection's ICE credentials and its DTLS key and certificate are
//! drawn inside str0m from the operating system's generator (they are
//! secrets; a seeded generator would make them guessable). Nothing the
//! bridge decides depends on them.
//!
//! # Bounds
//!
//! At most [`MAX_CONNECTIONS`] connections (closing ones included), offers
//! of at most [`MAX_SDP`] bytes, at most [`MAX_EVENTS`] events waiting
//! (beyond, incoming media is dropped and counted), frames written of at most
//! `nimbus_media::rtc::MAX_ACCESS_UNIT` bytes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_media::g711::Law;
use nimbus_media::rtc::MAX_ACCESS_UNIT;
use rtmfp::Machine;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// Connections kept at once (the active one and those still closing).
pub const MAX_CONNECTIONS: usize = 4;
/// Largest SDP offer accepted (a browser's is a few kilobytes).
pub const MAX_SDP: usize = 64 * 1024;
/// Events waiting for the owner; beyond, received media is dropped.
pub const MAX_EVENTS: usize = 1024;
/// The page's encoder is asked for a key frame at most once per this.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(200);
/// Latency samples kept (the most recent).
const LATENCY_SAMPLES: usize = 8192;
/// The payload types we propose for H.264 and its retransmissions (str0m
/// answers with the offerer's numbers).
const H264_PT: u8 = 108;
const H264_RTX_PT: u8 = 109;
/// H.264 Constrained Baseline, level 3.1.
const PROFILE_LEVEL_ID: u32 = 0x42e01f;

/// A page connection's number (new for every accepted offer).
pub type ConnId = u64;

/// Settings of a [`Bridge`].
#[derive(Debug, Clone, Default)]
pub struct BridgeConfig {
    /// Propose A-law before μ-law (the page sends the first one).
    pub prefer_pcma: bool,
}

/// What the owner asks of the bridge.
#[derive(Debug)]
#[non_exhaustive]
pub enum BridgeCommand {
    /// The page's SDP offer; the answer comes back as
    /// [`BridgeEvent::Answer`] (or [`BridgeEvent::OfferRefused`]) with the
    /// same `request`. Replaces the active connection.
    Offer {
        /// The owner's number for this request.
        request: u64,
        /// The offer.
        sdp: String,
    },
    /// An H.264 access unit (Annex B) for the page.
    Video(FrameOut),
    /// A G.711 frame for the page, in the law the page negotiated
    /// ([`BridgeEvent::Connected`]).
    Audio(FrameOut),
    /// Ask the page's encoder for a key frame (a PLI, or a FIR where PLI
    /// was not negotiated), at most once per [`KEYFRAME_INTERVAL`].
    RequestKeyframe,
    /// Close the active connection.
    Close,
}

/// A frame for the page.
#[derive(Debug, Clone)]
pub struct FrameOut {
    /// Its RTP time (90 kHz for video, 8 kHz for G.711), not wrapped.
    pub rtp_time: u64,
    /// The wall-clock instant its media time stands for (RTCP sender
    /// reports map one to the other, for lip sync).
    pub wallclock: Instant,
    /// When it came in from the RTMFP side (for the latency the bridge
    /// adds).
    pub received: Instant,
    /// Annex B access unit, or companded samples.
    pub data: Vec<u8>,
}

/// A frame from the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameIn {
    /// RTP time (extended, 90 kHz or 8 kHz).
    pub rtp_time: u64,
    /// When its last packet arrived (the input that completed it).
    pub arrived: Instant,
    /// No packet was missing between the previous frame and this one.
    pub contiguous: bool,
    /// Annex B access unit (4-byte start codes), or companded samples.
    pub data: Arc<[u8]>,
}

/// What the bridge reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeEvent {
    /// The answer to an offer: send it to the page.
    Answer {
        /// The request it answers.
        request: u64,
        /// The new connection.
        conn: ConnId,
        /// The SDP answer.
        sdp: String,
    },
    /// The offer could not be accepted.
    OfferRefused {
        /// The request.
        request: u64,
        /// Why.
        reason: String,
    },
    /// ICE and DTLS are up: media flows.
    Connected {
        /// The connection.
        conn: ConnId,
        /// H.264 was negotiated.
        video: bool,
        /// The G.711 law negotiated, if any.
        audio: Option<Law>,
    },
    /// An access unit from the page's camera (or screen).
    Video {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: FrameIn,
    },
    /// A G.711 frame from the page's microphone.
    Audio {
        /// The connection.
        conn: ConnId,
        /// Its law.
        law: Law,
        /// The frame.
        frame: FrameIn,
    },
    /// The page lost the picture we send (a PLI or FIR): our source should
    /// send a key frame.
    KeyframeRequested {
        /// The connection.
        conn: ConnId,
    },
    /// A connection is gone (replaced, closed by the page, silent, failed).
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: String,
    },
}

/// Latency figures in milliseconds.
/// Latency percentiles: the phone's summary, so the page and the call
/// status read one shape.
pub use nimbus_phone::phone::LatencySummary;

/// The last [`LATENCY_SAMPLES`] latencies.
#[derive(Debug, Default, Clone)]
pub(crate) struct Latencies {
    ring: Vec<f64>,
    next: usize,
    seen: u64,
}

impl Latencies {
    pub(crate) fn add(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        if self.ring.len() < LATENCY_SAMPLES {
            self.ring.push(ms);
        } else {
            self.ring[self.next] = ms;
        }
        self.next = (self.next + 1) % LATENCY_SAMPLES;
        self.seen += 1;
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        if self.ring.is_empty() {
            return LatencySummary::default();
        }
        let mut v = self.ring.clone();
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

/// Counters of a bridge (read with `HostHandle::with(|b, _| b.stats())`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BridgeStats {
    /// Page connections accepted.
    pub connections: u64,
    /// Video frames from the page.
    pub video_in: u64,
    /// Audio frames from the page.
    pub audio_in: u64,
    /// Video frames to the page.
    pub video_out: u64,
    /// Audio frames to the page.
    pub audio_out: u64,
    /// Frames for the page dropped: no connected page, or refused by the
    /// WebRTC stack.
    pub out_dropped: u64,
    /// Frames from the page dropped: the owner fell behind.
    pub in_dropped: u64,
    /// Frames from the page that followed a gap (lost packets).
    pub in_gaps: u64,
    /// Key frames asked of the page's encoder.
    pub keyframes_asked: u64,
    /// Key frames the page asked of us (PLI/FIR).
    pub keyframes_requested: u64,
    /// Datagrams no connection claimed.
    pub unclaimed_datagrams: u64,
    /// From a frame's arrival on the RTMFP side to its first datagram out
    /// to the page.
    pub to_page: LatencySummary,
}

/// One page connection.
#[derive(Debug)]
struct Conn {
    id: ConnId,
    rtc: Rtc,
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    /// Negotiated payload types for what we send.
    video_pt: Option<Pt>,
    audio_pt: Option<(Pt, Law)>,
    connected: bool,
    /// [`BridgeEvent::Connected`] was reported (once the output that came
    /// with DTLS's completion, media lines included, is drained).
    announced: bool,
    /// Replaced or closed: drained until str0m lets go of it.
    closing: bool,
    /// Why it closes (reported once it is gone).
    reason: Option<String>,
    /// Its deadline, once its output was drained.
    timeout: Option<Instant>,
    /// It had input since its output was last drained.
    dirty: bool,
    /// The oldest frame written and not yet on the wire.
    written: Option<Instant>,
    last_keyframe_ask: Option<Instant>,
}

impl Conn {
    fn active(&self) -> bool {
        !self.closing && self.rtc.is_alive()
    }

    fn close(&mut self, reason: &str) {
        if !self.closing {
            self.closing = true;
            self.reason = Some(reason.to_string());
            if self.rtc.close().is_err() {
                self.rtc.disconnect();
            }
            self.dirty = true;
        }
    }

    fn fail(&mut self, reason: String) {
        self.closing = true;
        self.reason.get_or_insert(reason);
        self.rtc.disconnect();
    }

    /// Learns the negotiated payload types once the media lines exist.
    fn learn_params(&mut self) {
        if self.video_pt.is_none() {
            if let Some(w) = self.video_mid.and_then(|m| self.rtc.writer(m)) {
                self.video_pt = w
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::H264)
                    .map(|p| p.pt());
            }
        }
        if self.audio_pt.is_none() {
            if let Some(w) = self.audio_mid.and_then(|m| self.rtc.writer(m)) {
                self.audio_pt = w.payload_params().find_map(|p| match p.spec().codec {
                    Codec::PCMU => Some((p.pt(), Law::Mu)),
                    Codec::PCMA => Some((p.pt(), Law::A)),
                    _ => None,
                });
            }
        }
    }
}

/// The WebRTC side of a web phone (see the module documentation).
pub struct Bridge {
    cfg: BridgeConfig,
    local: SocketAddr,
    crypto: Arc<str0m::config::CryptoProvider>,
    conns: Vec<Conn>,
    next_id: ConnId,
    events: VecDeque<BridgeEvent>,
    stats: BridgeStats,
    to_page: Latencies,
    /// Round-robin start of `poll_transmit`.
    turn: usize,
    quitting: bool,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("local", &self.local)
            .field("conns", &self.conns.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// A bridge whose host's socket is bound to `local` (the address the
    /// page's ICE checks go to: it is the only candidate in the answer).
    pub fn new(local: SocketAddr, cfg: BridgeConfig) -> Self {
        Bridge {
            cfg,
            local,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            conns: Vec::new(),
            next_id: 1,
            events: VecDeque::new(),
            stats: BridgeStats::default(),
            to_page: Latencies::default(),
            turn: 0,
            quitting: false,
        }
    }

    /// The counters.
    pub fn stats(&self) -> BridgeStats {
        BridgeStats {
            to_page: self.to_page.summary(),
            ..self.stats.clone()
        }
    }

    /// The active connection, if its media flows.
    pub fn connected(&self) -> Option<ConnId> {
        self.conns
            .iter()
            .find(|c| c.active() && c.connected)
            .map(|c| c.id)
    }

    fn rtc_config(&self) -> RtcConfig {
        let cfg = RtcConfig::new()
            .set_crypto_provider(self.crypto.clone())
            .set_ice_lite(true)
            .clear_codecs();
        // the answer lists the codecs in this order and the page sends the
        // first one
        let mut cfg = if self.cfg.prefer_pcma {
            cfg.enable_pcma(true, false).enable_pcmu(true, false)
        } else {
            cfg.enable_pcmu(true, false).enable_pcma(true, false)
        };
        // exactly one H.264 variant (enable_h264 would add seven), with RTX:
        // without it one lost packet freezes the picture until the page's
        // next PLI
        cfg.codec_config().add_h264(
            H264_PT.into(),
            Some(H264_RTX_PT.into()),
            true,
            PROFILE_LEVEL_ID,
        );
        cfg
    }

    fn push(&mut self, e: BridgeEvent) {
        let media = matches!(e, BridgeEvent::Video { .. } | BridgeEvent::Audio { .. });
        if (media && self.events.len() >= MAX_EVENTS) || self.events.len() >= 2 * MAX_EVENTS {
            self.stats.in_dropped += 1;
            return;
        }
        self.events.push_back(e);
    }

    fn offer(&mut self, now: Instant, request: u64, sdp: &str) {
        if self.quitting {
            return;
        }
        let refuse = |this: &mut Self, reason: String| {
            this.push(BridgeEvent::OfferRefused { request, reason });
        };
        if sdp.len() > MAX_SDP {
            return refuse(self, format!("the offer is larger than {MAX_SDP} bytes"));
        }
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(o) => o,
            Err(e) => return refuse(self, format!("malformed offer: {e}")),
        };
        let mut rtc = self.rtc_config().build(now);
        let Ok(candidate) = Candidate::host(self.local, "udp") else {
            return refuse(self, format!("cannot use {} as a candidate", self.local));
        };
        if rtc.add_local_candidate(candidate).is_none() {
            return refuse(self, format!("cannot use {} as a candidate", self.local));
        }
        let answer = match rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => return refuse(self, format!("cannot answer the offer: {e}")),
        };
        // the new page replaces the old one
        for c in self.conns.iter_mut().filter(|c| !c.closing) {
            c.close("replaced by a newer page");
        }
        // closing ones that linger beyond the bound are dropped outright
        while self.conns.len() >= MAX_CONNECTIONS {
            let c = self.conns.remove(0);
            self.push(BridgeEvent::Closed {
                conn: c.id,
                reason: c.reason.unwrap_or_else(|| "too many connections".into()),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.stats.connections += 1;
        self.conns.push(Conn {
            id,
            rtc,
            video_mid: None,
            audio_mid: None,
            video_pt: None,
            audio_pt: None,
            connected: false,
            announced: false,
            closing: false,
            reason: None,
            timeout: None,
            dirty: true,
            written: None,
            last_keyframe_ask: None,
        });
        self.push(BridgeEvent::Answer {
            request,
            conn: id,
            sdp: answer.to_sdp_string(),
        });
    }

    fn active_mut(&mut self) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.active() && c.connected)
    }

    fn write(&mut self, now: Instant, video: bool, f: FrameOut) {
        let _ = now;
        if f.data.is_empty() || f.data.len() > MAX_ACCESS_UNIT {
            self.stats.out_dropped += 1;
            return;
        }
        let Some(c) = self.active_mut() else {
            self.stats.out_dropped += 1;
            return;
        };
        let (mid, pt, freq) = if video {
            (c.video_mid, c.video_pt, Frequency::NINETY_KHZ)
        } else {
            (
                c.audio_mid,
                c.audio_pt.map(|(p, _)| p),
                Frequency::EIGHT_KHZ,
            )
        };
        let (Some(mid), Some(pt)) = (mid, pt) else {
            self.stats.out_dropped += 1;
            return;
        };
        let Some(w) = c.rtc.writer(mid) else {
            self.stats.out_dropped += 1;
            return;
        };
        let written = w
            .write(pt, f.wallclock, MediaTime::new(f.rtp_time, freq), f.data)
            .is_ok();
        c.dirty = true;
        if written {
            c.written.get_or_insert(f.received);
            if video {
                self.stats.video_out += 1;
            } else {
                self.stats.audio_out += 1;
            }
        } else {
            self.stats.out_dropped += 1;
        }
    }

    fn ask_keyframe(&mut self, now: Instant) {
        let Some(c) = self.active_mut() else {
            return;
        };
        if c.last_keyframe_ask
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_INTERVAL)
        {
            return;
        }
        let Some(mut w) = c.video_mid.and_then(|m| c.rtc.writer(m)) else {
            return;
        };
        let kind = if w.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
            KeyframeRequestKind::Pli
        } else {
            KeyframeRequestKind::Fir
        };
        if w.request_keyframe(None, kind).is_ok() {
            c.last_keyframe_ask = Some(now);
            c.dirty = true;
            self.stats.keyframes_asked += 1;
        }
    }

    /// Turns one event of a connection's `Rtc` into ours.
    fn on_rtc_event(&mut self, i: usize, now: Instant, e: Event) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        let id = c.id;
        match e {
            Event::MediaAdded(m) => {
                match m.kind {
                    MediaKind::Video if c.video_mid.is_none() => c.video_mid = Some(m.mid),
                    MediaKind::Audio if c.audio_mid.is_none() => c.audio_mid = Some(m.mid),
                    _ => {}
                }
                c.learn_params();
            }
            Event::Connected => {
                // announced once the media lines are known: str0m reports
                // them after DTLS's completion (see `announce`)
                c.connected = true;
                c.learn_params();
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                c.fail("the page went silent".into());
            }
            Event::Closed => {
                c.fail("the page closed the connection".into());
            }
            Event::KeyframeRequest(req) if Some(req.mid) == c.video_mid && !c.closing => {
                self.stats.keyframes_requested += 1;
                self.push(BridgeEvent::KeyframeRequested { conn: id });
            }
            Event::MediaData(d) if !c.closing && !d.data.is_empty() => {
                let frame = FrameIn {
                    rtp_time: d.time.numer(),
                    arrived: now,
                    contiguous: d.contiguous,
                    data: d.data,
                };
                if Some(d.mid) == c.video_mid && d.params.spec().codec == Codec::H264 {
                    self.stats.video_in += 1;
                    if !frame.contiguous {
                        self.stats.in_gaps += 1;
                    }
                    self.push(BridgeEvent::Video { conn: id, frame });
                } else if Some(d.mid) == c.audio_mid {
                    let law = match d.params.spec().codec {
                        Codec::PCMU => Law::Mu,
                        Codec::PCMA => Law::A,
                        _ => return,
                    };
                    self.stats.audio_in += 1;
                    self.push(BridgeEvent::Audio {
                        conn: id,
                        law,
                        frame,
                    });
                }
            }
            _ => {}
        }
    }

    /// Reports a connection that is up, once its output is drained (the
    /// media lines str0m reports after `Connected` are known by then).
    fn announce(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if !c.connected || c.announced || c.closing {
            return;
        }
        c.announced = true;
        c.learn_params();
        let e = BridgeEvent::Connected {
            conn: c.id,
            video: c.video_pt.is_some(),
            audio: c.audio_pt.map(|(_, l)| l),
        };
        self.push(e);
    }

    /// Drops connections str0m has let go of, reporting each.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.conns.len() {
            if self.conns[i].rtc.is_alive() {
                i += 1;
                continue;
            }
            let c = self.conns.remove(i);
            self.push(BridgeEvent::Closed {
                conn: c.id,
                reason: c.reason.unwrap_or_else(|| "closed".into()),
            });
        }
    }
}

impl Machine for Bridge {
    type Command = BridgeCommand;
    type Event = BridgeEvent;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Ok(contents) = DatagramRecv::try_from(data) else {
            self.stats.unclaimed_datagrams += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.local,
                contents,
            },
        );
        // newest first: a reloaded page's checks belong to its new connection
        match self
            .conns
            .iter_mut()
            .rev()
            .find(|c| c.rtc.is_alive() && c.rtc.accepts(&input))
        {
            Some(c) => {
                c.dirty = true;
                if let Err(e) = c.rtc.handle_input(input) {
                    c.fail(format!("WebRTC error: {e}"));
                }
            }
            None => self.stats.unclaimed_datagrams += 1,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        for c in &mut self.conns {
            if c.timeout.is_some_and(|t| t <= now) {
                c.timeout = None;
                c.dirty = true;
                if let Err(e) = c.rtc.handle_input(Input::Timeout(now)) {
                    c.fail(format!("WebRTC error: {e}"));
                }
            }
        }
        self.reap();
    }

    fn handle_command(&mut self, now: Instant, command: BridgeCommand) {
        match command {
            BridgeCommand::Offer { request, sdp } => self.offer(now, request, &sdp),
            BridgeCommand::Video(f) => self.write(now, true, f),
            BridgeCommand::Audio(f) => self.write(now, false, f),
            BridgeCommand::RequestKeyframe => self.ask_keyframe(now),
            BridgeCommand::Close => {
                for c in self.conns.iter_mut().filter(|c| !c.closing) {
                    c.close("closed by the phone");
                }
            }
        }
        // str0m wants time to move after what we did (a written frame is
        // packetized on the next poll)
        for c in self.conns.iter_mut().filter(|c| c.dirty) {
            if let Err(e) = c.rtc.handle_input(Input::Timeout(now)) {
                c.fail(format!("WebRTC error: {e}"));
            }
        }
        self.reap();
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let n = self.conns.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            while let Some(c) = self.conns.get_mut(i) {
                if !c.dirty {
                    break;
                }
                if !c.rtc.is_alive() {
                    c.dirty = false;
                    break;
                }
                match c.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => {
                        buf.clear();
                        buf.extend_from_slice(&t.contents);
                        if let Some(at) = c.written.take() {
                            self.to_page.add(now.saturating_duration_since(at));
                        }
                        self.turn = i;
                        return Some(t.destination);
                    }
                    Ok(Output::Event(e)) => self.on_rtc_event(i, now, e),
                    Ok(Output::Timeout(t)) => {
                        c.timeout = Some(t);
                        c.dirty = false;
                        self.announce(i);
                    }
                    Err(e) => {
                        c.fail(format!("WebRTC error: {e}"));
                        c.dirty = false;
                    }
                }
            }
        }
        self.turn = self.turn.wrapping_add(1);
        self.reap();
        None
    }

    fn poll_event(&mut self) -> Option<BridgeEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.conns.iter().filter_map(|c| c.timeout).min()
    }

    fn handle_close(&mut self, now: Instant) {
        self.quitting = true;
        for c in &mut self.conns {
            c.close("the phone quit");
            if let Err(e) = c.rtc.handle_input(Input::Timeout(now)) {
                c.fail(format!("WebRTC error: {e}"));
            }
        }
    }

    fn is_done(&self) -> Option<bool> {
        Some(self.quitting && self.conns.iter().all(|c| !c.rtc.is_alive()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge() -> Bridge {
        Bridge::new("127.0.0.1:40000".parse().unwrap(), BridgeConfig::default())
    }

    fn drain(b: &mut Bridge, now: Instant) -> (Vec<Vec<u8>>, Vec<BridgeEvent>) {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while b.poll_transmit(now, &mut buf).is_some() {
            out.push(buf.clone());
        }
        let mut ev = Vec::new();
        while let Some(e) = b.poll_event() {
            ev.push(e);
        }
        (out, ev)
    }

    #[test]
    fn a_malformed_offer_is_refused_and_nothing_else_happens() {
        let mut b = bridge();
        let now = Instant::now();
        for sdp in ["", "v=0", "garbage\r\n\r\n", &"a".repeat(MAX_SDP + 1)] {
            b.handle_command(
                now,
                BridgeCommand::Offer {
                    request: 7,
                    sdp: sdp.to_string(),
                },
            );
            let (tx, ev) = drain(&mut b, now);
            assert!(tx.is_empty());
            assert!(
                matches!(&ev[..], [BridgeEvent::OfferRefused { request: 7, .. }]),
                "{ev:?}"
            );
        }
        assert_eq!(b.poll_timeout(), None);
        assert_eq!(b.stats().connections, 0);
    }

    #[test]
    fn stray_datagrams_are_counted_not_fatal() {
        let mut b = bridge();
        let now = Instant::now();
        let from = "127.0.0.1:5000".parse().unwrap();
        for d in [&b""[..], b"\x00\x01\x00\x00", &[0x80; 40], &[0x16; 13]] {
            b.handle_datagram(now, from, d);
        }
        let (tx, ev) = drain(&mut b, now);
        assert!(tx.is_empty() && ev.is_empty());
        assert_eq!(b.stats().unclaimed_datagrams, 4);
    }

    #[test]
    fn media_for_a_page_that_is_not_there_is_dropped() {
        let mut b = bridge();
        let now = Instant::now();
        let f = FrameOut {
            rtp_time: 0,
            wallclock: now,
            received: now,
            data: vec![0, 0, 0, 1, 0x65, 1, 2, 3],
        };
        b.handle_command(now, BridgeCommand::Video(f.clone()));
        b.handle_command(now, BridgeCommand::Audio(f));
        b.handle_command(now, BridgeCommand::RequestKeyframe);
        let (tx, ev) = drain(&mut b, now);
        assert!(tx.is_empty() && ev.is_empty());
        assert_eq!(b.stats().out_dropped, 2);
    }

    #[test]
    fn latencies_keep_the_recent_ones() {
        let mut l = Latencies::default();
        for i in 0..(LATENCY_SAMPLES as u64 + 100) {
            l.add(Duration::from_micros(i % 1000));
        }
        let s = l.summary();
        assert_eq!(s.samples, LATENCY_SAMPLES as u64 + 100);
        assert!(s.p50_ms > 0.3 && s.p50_ms < 0.7, "{s:?}");
        assert!(s.max_ms < 1.0);
    }

    #[test]
    fn closing_an_idle_bridge_is_done_at_once() {
        let mut b = bridge();
        let now = Instant::now();
        assert_eq!(b.is_done(), Some(false));
        b.handle_close(now);
        assert_eq!(b.is_done(), Some(true));
    }
}
