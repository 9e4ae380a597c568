//! A sans-IO NetConnection server (RFC 7425 §5.3), one per client session.
//!
//! [`ServerConnection`] is the server half of [`NetConnection`](super::NetConnection):
//! it owns the bookkeeping of one client's NetConnection and NetStreams over one
//! [`rtmfp::Endpoint`] session — which receiving flow carries which stream, the
//! server's sending flows, stream IDs, Flow Synchronization barriers — and turns
//! the client's flow messages into typed [`ServerEvent`]s. It owns no socket, no
//! clock, no timer and no stream directory: the server application decides
//! (accepts or rejects `connect`, answers calls, matches publishers to players
//! and relays media with [`ServerConnection::send_media`]).
//!
//! # Flow layout
//!
//! ```text
//! client                                                    server
//!  C2S control (TC sid 0, no association) ───────────────▶ accepted: the NetConnection
//!  ◀── S2C control (TC sid 0, return to C2S control, IMMEDIATE): _result/_error,
//!       calls, User Control (Stream Begin, Set Keepalive)
//!  C2S stream flows (TC sid N, return to S2C control) ───▶ accepted while stream N exists
//!  ◀── S2C stream N data  (TC sid N, return to C2S control, IMMEDIATE): onStatus, data
//!  ◀── S2C stream N audio (TC sid N, return to C2S control, IMMEDIATE, time critical)
//!  ◀── S2C stream N video (TC sid N, return to C2S control, PRIORITY, time critical)
//! ```
//!
//! Every server flow is associated in return to the client's NetConnection
//! control flow (§5.3.2, §5.3.5.2), as rtmfp-cpp's `tcserver` does; the first
//! one opened (for the `connect` answer) is the canonical S2C control flow. All
//! server flows use original queuing order (RXI 0), so a player receives each
//! kind of media in order; audio never waits behind video because its flow has
//! a higher priority. Receiving flows are read in original order, whatever
//! their receive intent, so media is relayed in the order it was published.
//!
//! # Limits
//!
//! At most [`MAX_STREAMS`] NetStreams (`createStream` beyond it is answered
//! with `_error`), [`MAX_RECV_FLOWS`] receiving flows (more are rejected with
//! exception code 0), commands and data messages of at most
//! [`MAX_COMMAND_SIZE`] bytes (larger ones are ignored), at most
//! [`MAX_QUEUED_EVENTS`] undrained events and [`MAX_QUEUED_MEDIA_BYTES`] of
//! undrained media (beyond them new events are dropped, media first: drain
//! [`poll_event`](ServerConnection::poll_event) after every
//! [`on_event`](ServerConnection::on_event)). NetGroup `"GC"` join flows
//! (after `connect` was accepted, at most [`MAX_GROUPS`]) are reported as
//! [`ServerEvent::GroupJoin`] / [`ServerEvent::GroupLeave`]; a malformed join
//! or a second join of the same group is rejected. Other non-`"TC"` flows and flows for
//! streams that do not exist are rejected; undecodable messages are ignored.
//! Commands before `connect` are ignored (nothing is sent to an unconnected
//! client); a second `connect` is ignored. Messages that follow `connect` on
//! its flow are left in the engine (the flow's window closes) until the
//! connect is answered: accepted, they are read then; rejected, never.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtmfp::{Endpoint, Event, Priority, SessionId};

use super::slot::{encode, Slot};
use super::{Body, FlowMetadata, RtmpMessage, Status, SyncBarriers, UserControl};
use super::{MSG_AUDIO, MSG_VIDEO};
use flash_amf::{Command, Object, Value};

/// Most NetStreams one connection may have at once.
pub const MAX_STREAMS: usize = 64;
/// Most receiving flows one connection may have open at once.
pub const MAX_RECV_FLOWS: usize = 4 * MAX_STREAMS + 8;
/// Largest command or data message payload decoded (bytes).
pub const MAX_COMMAND_SIZE: usize = 64 * 1024;
/// Most events waiting in [`ServerConnection::poll_event`].
pub const MAX_QUEUED_EVENTS: usize = 1024;
/// Most media bytes waiting in [`ServerConnection::poll_event`].
pub const MAX_QUEUED_MEDIA_BYTES: usize = 4 << 20;
/// Most addresses taken from one `setPeerInfo`.
pub const MAX_PEER_ADDRESSES: usize = 32;
/// After [`ServerConnection::reject_connect`], how long the `_error` may take
/// to be acknowledged before the session is closed anyway (see
/// [`ServerConnection::poll_timeout`]).
pub const REJECT_GRACE: Duration = Duration::from_secs(2);

/// What kind of media a [`ServerEvent::Media`] frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// RTMP type 8.
    Audio,
    /// RTMP type 9.
    Video,
    /// RTMP types 18 / 15 (data messages, e.g. `onMetaData`, `NetStream.send`).
    Data,
}

/// What a [`ServerConnection`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The `connect` command (transaction ID normally 1): the command object
    /// (`app`, `tcUrl`, `flashVer`, `objectEncoding`, …; empty if the client
    /// sent none) and the extra arguments. Answer with
    /// [`ServerConnection::accept_connect`] or
    /// [`ServerConnection::reject_connect`].
    Connect {
        /// Transaction ID.
        txn: f64,
        /// The command object.
        object: Object,
        /// Arguments after the command object.
        args: Vec<Value>,
    },
    /// `setPeerInfo`: the addresses the client reports (unparsable entries
    /// are skipped).
    SetPeerInfo {
        /// The addresses.
        addresses: Vec<SocketAddr>,
    },
    /// Any other command on the NetConnection (stream 0). Answer with
    /// [`ServerConnection::send_result`] / [`ServerConnection::send_error`]
    /// unless `txn` is 0.
    Call {
        /// Transaction ID (0: no answer expected).
        txn: f64,
        /// Command name.
        name: String,
        /// Arguments after the command object.
        args: Vec<Value>,
    },
    /// `createStream` was answered with this new stream ID.
    StreamCreated {
        /// Stream ID.
        stream: u32,
    },
    /// `publish(name, kind)` on a stream. Answer with
    /// [`ServerConnection::stream_status`] (`NetStream.Publish.Start`, or
    /// `NetStream.Publish.BadName`).
    Publish {
        /// Stream ID.
        stream: u32,
        /// Stream name.
        name: String,
        /// `"live"` (default), `"record"`, `"append"`.
        kind: String,
    },
    /// `play(name, start)` on a stream.
    Play {
        /// Stream ID.
        stream: u32,
        /// Stream name.
        name: String,
        /// Start time argument (-2 when absent).
        start: f64,
    },
    /// The stream stopped publishing / playing: `closeStream`, `deleteStream`,
    /// `publish(false)`, the stream's last receiving flow closed, or the
    /// connection ended (reported for each active stream before
    /// [`ServerEvent::Closed`]).
    StreamClosed {
        /// Stream ID.
        stream: u32,
    },
    /// Media or data on a publishing stream. `frame` is the flow message
    /// (§5.1.2 framing: `type | timestamp | payload`), ready for
    /// [`ServerConnection::send_media`] to players; a `@setDataFrame(name, …)`
    /// arrives already rewritten as `name(…)` (e.g. `onMetaData`).
    Media {
        /// Stream ID.
        stream: u32,
        /// Audio, video or data.
        kind: MediaKind,
        /// RTMP timestamp (ms).
        timestamp: u32,
        /// The framed message.
        frame: Bytes,
    },
    /// Any other command on a stream flow (`receiveAudio`, `receiveVideo`,
    /// `pause`, `seek`, …).
    StreamCommand {
        /// Stream ID.
        stream: u32,
        /// Command name.
        name: String,
        /// Arguments after the command object.
        args: Vec<Value>,
    },
    /// The client joined a NetGroup: it opened a `"GC"` flow and sent the
    /// group ID (see [`super::group_join`]). Introduce other members with
    /// [`ServerConnection::introduce_group_peers`].
    GroupJoin {
        /// The 32-byte group ID.
        group: [u8; 32],
    },
    /// The client left a group: it closed the join flow, or the connection
    /// ended (reported for each joined group before [`ServerEvent::Closed`]).
    GroupLeave {
        /// The 32-byte group ID.
        group: [u8; 32],
    },
    /// The client closed the NetConnection, or the session ended.
    Closed,
}

/// Most groups one connection may be in at once (more joins are rejected).
pub const MAX_GROUPS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct GroupFlow {
    /// The client's join flow (receiving).
    recv: u64,
    /// The group, once the join message arrived.
    group: Option<[u8; 32]>,
    /// Our introduction flow (sending), once opened.
    send: Slot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for `connect`.
    Idle,
    /// `connect` received, not answered.
    Pending,
    /// Accepted.
    Connected,
    /// Rejected: waiting for the `_error` to be acknowledged.
    Rejecting,
    /// Closed.
    Closed,
}

#[derive(Debug)]
struct NetStream {
    id: u32,
    data: Slot,
    audio: Slot,
    video: Slot,
    publishing: bool,
    playing: bool,
}

impl NetStream {
    fn slots(&self) -> [Slot; 3] {
        [self.data, self.audio, self.video]
    }
}

#[derive(Debug, Clone, Copy)]
struct RecvFlow {
    flow: u64,
    stream: u32,
}

/// The server side of one client's NetConnection (RFC 7425 §5.3).
///
/// Feed it every engine event of its session with
/// [`on_event`](Self::on_event) and drain [`poll_event`](Self::poll_event)
/// afterwards. See the [module documentation](self) for the flow layout.
#[derive(Debug)]
pub struct ServerConnection {
    session: SessionId,
    state: State,
    object_encoding: u8,
    connect_txn: f64,
    /// The client's NetConnection control flow (receiving).
    client_control: Option<u64>,
    /// Our canonical NetConnection control flow (sending).
    control: Slot,
    recv: Vec<RecvFlow>,
    streams: Vec<NetStream>,
    next_stream: u32,
    events: VecDeque<ServerEvent>,
    queued_media: usize,
    dropped_events: u64,
    /// Flow Synchronization barriers, allocated on first use.
    sync: Option<Box<SyncBarriers>>,
    close_deadline: Option<Instant>,
    /// The flow that carried `connect`: not read further until the connect
    /// is answered, so commands pipelined after it wait for the answer.
    held: Option<u64>,
    /// NetGroup join flows.
    groups: Vec<GroupFlow>,
}

/// Parses a `setPeerInfo` address: `a.b.c.d:port` or `[v6]:port` (a zone
/// index is ignored).
fn parse_peer_address(s: &str) -> Option<SocketAddr> {
    if s.len() > 128 {
        return None;
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    // "[fe80::1%eth0]:1935": drop the zone
    let rest = s.strip_prefix('[')?;
    let (host, port) = rest.rsplit_once("]:")?;
    let host = host.split('%').next()?;
    let ip: IpAddr = host.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64).filter(|n| n.is_finite())
}

impl ServerConnection {
    /// A connection for `session` (a session the endpoint accepted), waiting
    /// for the client's control flow and `connect`.
    pub fn new(session: SessionId) -> Self {
        ServerConnection {
            session,
            state: State::Idle,
            object_encoding: 0,
            connect_txn: 1.0,
            client_control: None,
            control: Slot::None,
            recv: Vec::new(),
            streams: Vec::new(),
            next_stream: 1,
            events: VecDeque::new(),
            queued_media: 0,
            dropped_events: 0,
            sync: None,
            close_deadline: None,
            held: None,
            groups: Vec::new(),
        }
    }

    /// The groups the client has joined.
    pub fn groups(&self) -> impl Iterator<Item = [u8; 32]> + '_ {
        self.groups.iter().filter_map(|g| g.group)
    }

    /// Introduces `peers` (peer IDs) to the client as members of `group`
    /// (one `0B` message each on a `"GC"` flow in return to its join flow).
    /// Returns whether the client is in that group and the messages were
    /// queued.
    pub fn introduce_group_peers(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        group: &[u8; 32],
        peers: &[[u8; 32]],
    ) -> bool {
        if self.state != State::Connected {
            return false;
        }
        let session = self.session;
        let Some(g) = self
            .groups
            .iter_mut()
            .find(|g| g.group.as_ref() == Some(group))
        else {
            return false;
        };
        let flow = match g.send {
            Slot::Open(f) => f,
            Slot::Refused => return false,
            Slot::None => match ep.open_flow(
                now,
                session,
                super::group_join::GC_METADATA,
                Some(g.recv),
                Priority::IMMEDIATE,
            ) {
                Ok(f) => {
                    g.send = Slot::Open(f);
                    f
                }
                Err(_) => return false,
            },
        };
        for p in peers {
            let m = super::group_join::encode_introduction(p);
            if ep.send(now, session, flow, Bytes::from(m), None).is_err() {
                return false;
            }
        }
        true
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Whether `connect` was accepted (and the connection is not closed).
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether the connection is closed (or closing after a rejection).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed | State::Rejecting)
    }

    /// The `objectEncoding` the client asked for in `connect` (0 or 3).
    pub fn object_encoding(&self) -> u8 {
        self.object_encoding
    }

    /// Events dropped because [`poll_event`](Self::poll_event) was not
    /// drained (see [`MAX_QUEUED_EVENTS`]).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// The IDs of the streams that exist now.
    pub fn streams(&self) -> impl Iterator<Item = u32> + '_ {
        self.streams.iter().map(|s| s.id)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        let Some(e) = self.events.pop_front() else {
            // an idle connection keeps no queue capacity (servers hold
            // tens of thousands of them)
            if self.events.capacity() > 0 {
                self.events = Default::default();
            }
            return None;
        };
        if let ServerEvent::Media { frame, .. } = &e {
            self.queued_media = self.queued_media.saturating_sub(frame.len());
        }
        Some(e)
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called: only
    /// after [`reject_connect`](Self::reject_connect), at the end of the grace
    /// period for the `_error` to be acknowledged.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.close_deadline
    }

    /// Closes the session of a rejected connection once its grace period
    /// is over.
    pub fn handle_timeout(&mut self, ep: &mut Endpoint, now: Instant) {
        if let Some(d) = self.close_deadline {
            if now >= d {
                self.close_deadline = None;
                ep.close_session(now, self.session);
                self.set_closed();
            }
        }
    }

    fn push(&mut self, e: ServerEvent) {
        let media = match &e {
            ServerEvent::Media { frame, .. } => Some(frame.len()),
            _ => None,
        };
        let full = self.events.len() >= MAX_QUEUED_EVENTS
            || media.is_some_and(|n| self.queued_media + n > MAX_QUEUED_MEDIA_BYTES);
        if full && !matches!(e, ServerEvent::Closed | ServerEvent::StreamClosed { .. }) {
            self.dropped_events += 1;
            return;
        }
        self.queued_media += media.unwrap_or(0);
        self.events.push_back(e);
    }

    fn stream_index(&self, stream: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == stream)
    }

    // ---------------------------------------------------------------- sending

    fn send_on(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        flow: u64,
        data: Bytes,
        lifetime: Option<Duration>,
    ) -> Result<(), rtmfp::Error> {
        ep.send(now, self.session, flow, data, lifetime)
    }

    /// Our canonical control flow, opened on first use in return to the
    /// client's control flow.
    fn control_flow(&mut self, ep: &mut Endpoint, now: Instant) -> Result<u64, rtmfp::Error> {
        match self.control {
            Slot::Open(f) => return Ok(f),
            Slot::Refused => return Err(rtmfp::Error::FlowRejected),
            Slot::None => {}
        }
        if self.state == State::Closed {
            return Err(rtmfp::Error::SessionClosed);
        }
        let assoc = self.client_control.ok_or(rtmfp::Error::NoFlow)?;
        let md = FlowMetadata::control().encode();
        let f = ep.open_flow(now, self.session, &md, Some(assoc), Priority::IMMEDIATE)?;
        self.control = Slot::Open(f);
        Ok(f)
    }

    fn send_control(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        body: &Body,
    ) -> Result<(), rtmfp::Error> {
        let m = encode(0, body)?;
        let f = self.control_flow(ep, now)?;
        self.send_on(ep, now, f, m, None)
    }

    fn require_connected(&self) -> Result<(), rtmfp::Error> {
        match self.state {
            State::Connected => Ok(()),
            State::Closed | State::Rejecting => Err(rtmfp::Error::SessionClosed),
            _ => Err(rtmfp::Error::NoFlow),
        }
    }

    /// A stream's sending flow of a kind (0 data, 1 audio, 2 video), opened on
    /// first use in return to the client's control flow.
    fn stream_flow(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        which: u8,
    ) -> Result<u64, rtmfp::Error> {
        self.require_connected()?;
        let assoc = self.client_control.ok_or(rtmfp::Error::NoFlow)?;
        let i = self.stream_index(stream).ok_or(rtmfp::Error::NoFlow)?;
        let s = &mut self.streams[i];
        let (slot, prio) = match which {
            0 => (&mut s.data, Priority::IMMEDIATE),
            1 => (&mut s.audio, Priority::IMMEDIATE),
            _ => (&mut s.video, Priority::PRIORITY),
        };
        match *slot {
            Slot::Open(f) => Ok(f),
            Slot::Refused => Err(rtmfp::Error::FlowRejected),
            Slot::None => {
                let md = FlowMetadata::new(stream).encode();
                let f = ep.open_flow(now, self.session, &md, Some(assoc), prio)?;
                *slot = Slot::Open(f);
                Ok(f)
            }
        }
    }

    fn object_encoding_value(&self) -> Value {
        Value::Number(f64::from(self.object_encoding))
    }

    /// Answers the pending `connect` with `_result`: properties `fmsVer`,
    /// `capabilities`, `mode`; info `level: "status"`,
    /// `code: "NetConnection.Connect.Success"`, `description`,
    /// `objectEncoding` (as the client asked) and then `extra_info`.
    pub fn accept_connect(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        extra_info: Vec<(String, Value)>,
    ) -> Result<(), rtmfp::Error> {
        if self.state != State::Pending {
            return Err(match self.state {
                State::Closed | State::Rejecting => rtmfp::Error::SessionClosed,
                _ => rtmfp::Error::NoFlow,
            });
        }
        let props = Object::new()
            .with("fmsVer", "FMS/3,5,7,7009")
            .with("capabilities", 31.0)
            .with("mode", 1.0);
        let mut info = Status::object(
            "NetConnection.Connect.Success",
            "status",
            "Connection succeeded.",
        )
        .with("objectEncoding", self.object_encoding_value());
        for (k, v) in extra_info {
            if k.is_empty() {
                continue;
            }
            info.properties.retain(|(old, _)| *old != k);
            info.properties.push((k, v));
        }
        let c = Command::new("_result", self.connect_txn, Value::Object(props))
            .with_arg(Value::Object(info));
        self.send_control(ep, now, &Body::command(c))?;
        self.state = State::Connected;
        if let Some(f) = self.held.take() {
            // commands the client sent after connect
            self.drain(ep, now, f);
        }
        Ok(())
    }

    /// Answers the pending `connect` with `_error`
    /// (`NetConnection.Connect.Rejected`, level `error`, `description`), then
    /// closes the NetConnection's flows; the session is closed when the
    /// client acknowledges the answer (or closes its side), or at
    /// [`poll_timeout`](Self::poll_timeout) ([`REJECT_GRACE`]) if the caller
    /// drives [`handle_timeout`](Self::handle_timeout).
    pub fn reject_connect(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        description: &str,
    ) -> Result<(), rtmfp::Error> {
        if self.state != State::Pending {
            return Err(match self.state {
                State::Closed | State::Rejecting => rtmfp::Error::SessionClosed,
                _ => rtmfp::Error::NoFlow,
            });
        }
        let info = Status::object("NetConnection.Connect.Rejected", "error", description)
            .with("objectEncoding", self.object_encoding_value());
        let c = Command::new("_error", self.connect_txn, Value::Null).with_arg(Value::Object(info));
        let r = self.send_control(ep, now, &Body::command(c));
        self.state = State::Rejecting;
        self.held = None;
        if let Some(f) = self.control.flow() {
            let _ = ep.close_flow(now, self.session, f);
        }
        if r.is_err() {
            ep.close_session(now, self.session);
            self.set_closed();
        } else {
            self.close_deadline = Some(now + REJECT_GRACE);
        }
        r
    }

    /// `_result(txn, null, value)` on the NetConnection.
    pub fn send_result(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        txn: f64,
        value: Value,
    ) -> Result<(), rtmfp::Error> {
        self.require_connected()?;
        let c = Command::new("_result", txn, Value::Null).with_arg(value);
        self.send_control(ep, now, &Body::command(c))
    }

    /// `_error(txn, null, {level: "error", code, description})` on the
    /// NetConnection.
    pub fn send_error(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        txn: f64,
        code: &str,
        description: &str,
    ) -> Result<(), rtmfp::Error> {
        self.require_connected()?;
        let c = Command::new("_error", txn, Value::Null).with_arg(Value::Object(Status::object(
            code,
            "error",
            description,
        )));
        self.send_control(ep, now, &Body::command(c))
    }

    /// A server-to-client command on the NetConnection (transaction ID 0,
    /// null command object), e.g. `onRelay`.
    pub fn call(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        name: &str,
        args: Vec<Value>,
    ) -> Result<(), rtmfp::Error> {
        self.require_connected()?;
        let mut c = Command::new(name, 0.0, Value::Null);
        c.arguments = args;
        self.send_control(ep, now, &Body::command(c))
    }

    /// User Control event 41, Set Keepalive Timers (§5.3.4), on the control
    /// flow.
    pub fn set_keepalive(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        server_ms: u32,
        peer_ms: u32,
    ) -> Result<(), rtmfp::Error> {
        self.require_connected()?;
        let b = Body::UserControl(UserControl::SetKeepalive { server_ms, peer_ms });
        self.send_control(ep, now, &b)
    }

    /// `onStatus(0, null, {level, code, description[, details]})` on the
    /// stream's data flow.
    #[allow(clippy::too_many_arguments)]
    pub fn stream_status(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        code: &str,
        level: &str,
        description: &str,
        details: Option<&str>,
    ) -> Result<(), rtmfp::Error> {
        let f = self.stream_flow(ep, now, stream, 0)?;
        let mut info = Status::object(code, level, description);
        if let Some(d) = details {
            info.insert("details", d);
        }
        info.insert("clientid", Value::Number(f64::from(stream)));
        let c = Command::new("onStatus", 0.0, Value::Null).with_arg(Value::Object(info));
        let m = encode(0, &Body::command(c))?;
        self.send_on(ep, now, f, m, None)
    }

    /// User Control Stream Begin for `stream`, on the NetConnection control
    /// flow (as `tcserver` and FMS send it, before `NetStream.Play.Start`).
    pub fn stream_begin(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
    ) -> Result<(), rtmfp::Error> {
        self.require_connected()?;
        if self.stream_index(stream).is_none() {
            return Err(rtmfp::Error::NoFlow);
        }
        self.send_control(
            ep,
            now,
            &Body::UserControl(UserControl::StreamBegin(stream)),
        )
    }

    /// Any User Control event on the NetConnection control flow.
    pub fn user_control(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        event: UserControl,
    ) -> Result<(), rtmfp::Error> {
        self.require_connected()?;
        self.send_control(ep, now, &Body::UserControl(event))
    }

    /// Sends a framed RTMP message ([`RtmpMessage::encode`] output, e.g. a
    /// [`ServerEvent::Media`] frame) to `stream`: audio (type 8) on the
    /// stream's audio flow, video (type 9) on its video flow, anything else on
    /// its data flow. `lifetime` abandons the message if undelivered in time.
    /// Fails with [`rtmfp::Error::FlowRejected`] if the client refused that
    /// flow, [`rtmfp::Error::WouldBlock`] if the flow's buffer is full.
    pub fn send_media(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        frame: Bytes,
        lifetime: Option<Duration>,
    ) -> Result<(), rtmfp::Error> {
        let which = match frame.first() {
            Some(&MSG_AUDIO) => 1,
            Some(&MSG_VIDEO) => 2,
            _ => 0,
        };
        let f = self.stream_flow(ep, now, stream, which)?;
        self.send_on(ep, now, f, frame, lifetime)
    }

    /// Bytes queued and not yet acknowledged on the stream's sending flows
    /// (media and data).
    pub fn media_backlog(&self, ep: &Endpoint, stream: u32) -> usize {
        let Some(i) = self.stream_index(stream) else {
            return 0;
        };
        let cap = ep.config().send_buffer;
        self.streams[i]
            .slots()
            .iter()
            .filter_map(|s| s.flow())
            .filter_map(|f| ep.send_buffer_available(self.session, f))
            .map(|avail| cap.saturating_sub(avail))
            .sum()
    }

    fn close_stream_flows(&mut self, ep: &mut Endpoint, now: Instant, i: usize) {
        for f in self.streams[i].slots().iter().filter_map(|s| s.flow()) {
            let _ = ep.close_flow(now, self.session, f);
        }
    }

    /// Orderly close: closes every sending flow, then the session; reports
    /// [`ServerEvent::StreamClosed`] for active streams and
    /// [`ServerEvent::Closed`].
    pub fn close(&mut self, ep: &mut Endpoint, now: Instant) {
        for i in 0..self.streams.len() {
            self.close_stream_flows(ep, now, i);
        }
        if let Some(f) = self.control.flow() {
            let _ = ep.close_flow(now, self.session, f);
        }
        ep.close_session(now, self.session);
        self.set_closed();
    }

    fn set_closed(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.close_deadline = None;
        for g in std::mem::take(&mut self.groups) {
            if let Some(group) = g.group {
                self.push(ServerEvent::GroupLeave { group });
            }
        }
        for i in 0..self.streams.len() {
            let s = &mut self.streams[i];
            if s.publishing || s.playing {
                s.publishing = false;
                s.playing = false;
                let stream = s.id;
                self.push(ServerEvent::StreamClosed { stream });
            }
        }
        self.push(ServerEvent::Closed);
    }

    // -------------------------------------------------------------- receiving

    /// Feeds an engine event. Returns whether it belonged to this session.
    pub fn on_event(&mut self, ep: &mut Endpoint, now: Instant, event: &Event) -> bool {
        match *event {
            Event::IncomingFlow {
                session,
                flow,
                ref metadata,
                association,
            } if session == self.session => {
                self.on_incoming_flow(ep, now, flow, metadata, association);
                true
            }
            Event::Readable { session, flow } if session == self.session => {
                if let Some(i) = self.groups.iter().position(|g| g.recv == flow) {
                    self.drain_group(ep, now, i);
                } else {
                    self.drain(ep, now, flow);
                }
                true
            }
            Event::RecvFlowComplete { session, flow } if session == self.session => {
                self.on_recv_complete(ep, now, flow);
                true
            }
            Event::SendFlowException { session, flow, .. } if session == self.session => {
                self.on_send_exception(ep, now, flow);
                true
            }
            Event::SendFlowComplete { session, flow } if session == self.session => {
                if self.state == State::Rejecting && self.control.flow() == Some(flow) {
                    // the _error was delivered
                    ep.close_session(now, self.session);
                    self.set_closed();
                }
                true
            }
            Event::SessionClosed { session, .. } | Event::SessionFailed { session, .. }
                if session == self.session =>
            {
                self.set_closed();
                true
            }
            Event::SessionOpened { session, .. }
            | Event::Writable { session, .. }
            | Event::AddressChanged { session, .. }
                if session == self.session =>
            {
                if let Some(d) = self.close_deadline {
                    if now >= d {
                        self.handle_timeout(ep, now);
                    }
                }
                true
            }
            _ => false,
        }
    }

    fn on_incoming_flow(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        flow: u64,
        metadata: &[u8],
        association: Option<u64>,
    ) {
        let session = self.session;
        if super::group_join::is_gc_metadata(metadata) {
            if self.state != State::Connected
                || self.groups.len() >= MAX_GROUPS
                || self.groups.iter().any(|g| g.recv == flow)
            {
                let _ = ep.reject_flow(now, session, flow, 0);
            } else {
                self.groups.push(GroupFlow {
                    recv: flow,
                    group: None,
                    send: Slot::None,
                });
            }
            return;
        }
        let md = match FlowMetadata::decode(metadata) {
            Ok(md) if !matches!(self.state, State::Closed | State::Rejecting) => md,
            _ => {
                let _ = ep.reject_flow(now, session, flow, 0);
                return;
            }
        };
        if self.recv.len() >= MAX_RECV_FLOWS || self.recv.iter().any(|r| r.flow == flow) {
            let _ = ep.reject_flow(now, session, flow, 0);
            return;
        }
        if md.stream_id == 0 {
            if self.client_control.is_none() {
                if association.is_some() {
                    // a control flow must come first, unassociated
                    let _ = ep.reject_flow(now, session, flow, 0);
                    return;
                }
                self.client_control = Some(flow);
            }
        } else if self.client_control.is_none() || self.stream_index(md.stream_id).is_none() {
            // flows for streams that do not exist (§5.3.5.3: exception code 0)
            let _ = ep.reject_flow(now, session, flow, 0);
            return;
        }
        self.recv.push(RecvFlow {
            flow,
            stream: md.stream_id,
        });
    }

    fn on_recv_complete(&mut self, ep: &mut Endpoint, now: Instant, flow: u64) {
        if let Some(i) = self.groups.iter().position(|g| g.recv == flow) {
            let g = self.groups.swap_remove(i);
            self.leave_group(ep, now, g);
            return;
        }
        let Some(pos) = self.recv.iter().position(|r| r.flow == flow) else {
            return;
        };
        let r = self.recv.swap_remove(pos);
        if let Some(s) = self.sync.as_mut() {
            s.forget_flow(flow);
        }
        if Some(flow) == self.client_control {
            // the client closed its NetConnection (§5.3.6): close ours
            if self.state != State::Closed {
                self.close(ep, now);
            }
            return;
        }
        if r.stream != 0 && !self.recv.iter().any(|o| o.stream == r.stream) {
            self.stop_stream(r.stream);
        }
    }

    fn leave_group(&mut self, ep: &mut Endpoint, now: Instant, g: GroupFlow) {
        if let Slot::Open(f) = g.send {
            let _ = ep.close_flow(now, self.session, f);
        }
        if let Some(group) = g.group {
            self.push(ServerEvent::GroupLeave { group });
        }
    }

    /// Reads the join message of a group flow.
    fn drain_group(&mut self, ep: &mut Endpoint, now: Instant, i: usize) {
        let session = self.session;
        let flow = self.groups[i].recv;
        while let Some(m) = ep.read(now, session, flow) {
            if self.groups[i].group.is_some() || self.state != State::Connected {
                continue; // one join per flow; later messages are not defined
            }
            match super::group_join::parse_join(&m.data) {
                Ok(group) if !self.groups.iter().any(|g| g.group == Some(group)) => {
                    self.groups[i].group = Some(group);
                    self.push(ServerEvent::GroupJoin { group });
                }
                _ => {
                    // malformed, or a second flow for a group already joined
                    let _ = ep.reject_flow(now, session, flow, 0);
                    self.groups.swap_remove(i);
                    return;
                }
            }
        }
    }

    fn on_send_exception(&mut self, ep: &mut Endpoint, now: Instant, flow: u64) {
        for g in &mut self.groups {
            if g.send == Slot::Open(flow) {
                g.send = Slot::Refused;
                return;
            }
        }
        if self.control.flow() == Some(flow) {
            // abrupt close by the client (§5.3.6)
            self.control = Slot::Refused;
            ep.close_session(now, self.session);
            self.set_closed();
            return;
        }
        for s in &mut self.streams {
            for slot in [&mut s.data, &mut s.audio, &mut s.video] {
                if *slot == Slot::Open(flow) {
                    *slot = Slot::Refused;
                }
            }
        }
    }

    /// Reports the end of publishing / playing on a stream, if active.
    fn stop_stream(&mut self, stream: u32) {
        if let Some(i) = self.stream_index(stream) {
            let s = &mut self.streams[i];
            if s.publishing || s.playing {
                s.publishing = false;
                s.playing = false;
                self.push(ServerEvent::StreamClosed { stream });
            }
        }
    }

    /// Reads every message of a receiving flow, honouring Flow
    /// Synchronization barriers (§5.2) like the client does.
    fn drain(&mut self, ep: &mut Endpoint, now: Instant, flow: u64) {
        let session = self.session;
        let mut work = VecDeque::from([flow]);
        let mut budget = 4 * MAX_RECV_FLOWS;
        while let Some(flow) = work.pop_front() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            if self.held == Some(flow) || self.sync.as_ref().is_some_and(|s| s.is_suspended(flow)) {
                continue;
            }
            let stream = self.recv.iter().find(|r| r.flow == flow).map(|r| r.stream);
            while let Some(m) = ep.read(now, session, flow) {
                let Some(stream) = stream else {
                    continue; // not ours (rejected): discard
                };
                if self.state == State::Closed {
                    continue;
                }
                let Ok(msg) = RtmpMessage::decode(&m.data) else {
                    continue;
                };
                if msg.message_type == super::MSG_USER_CONTROL {
                    if let Ok(UserControl::FlowSync { sync_id, count }) =
                        UserControl::decode(&msg.payload)
                    {
                        let resume = self
                            .sync
                            .get_or_insert_with(Default::default)
                            .on_sync(flow, sync_id, count);
                        if resume.is_empty() {
                            let _ = ep.set_recv_flow_options(session, flow, None, None, Some(true));
                            break;
                        }
                        for f in resume {
                            let _ = ep.set_recv_flow_options(session, f, None, None, Some(false));
                            if f != flow && work.len() < MAX_RECV_FLOWS {
                                work.push_back(f);
                            }
                        }
                    }
                    continue;
                }
                self.on_message(ep, now, stream, msg, m.data);
                if self.state == State::Pending && self.held.is_none() {
                    // that was connect: hold the rest until it is answered
                    self.held = Some(flow);
                    break;
                }
            }
        }
    }

    fn on_message(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        msg: RtmpMessage,
        frame: Bytes,
    ) {
        if msg.is_chunk_control() {
            return;
        }
        let timestamp = msg.timestamp;
        match msg.message_type {
            MSG_AUDIO | MSG_VIDEO => {
                if self.state != State::Connected || !self.is_publishing(stream) {
                    return;
                }
                let kind = if msg.message_type == MSG_AUDIO {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                self.push(ServerEvent::Media {
                    stream,
                    kind,
                    timestamp,
                    frame,
                });
            }
            _ => {
                if msg.payload.len() > MAX_COMMAND_SIZE {
                    return;
                }
                match msg.body() {
                    Ok(Body::Command { command, .. }) => self.on_command(ep, now, stream, command),
                    Ok(Body::Data { message, amf3 }) => {
                        if self.state != State::Connected || !self.is_publishing(stream) {
                            return;
                        }
                        let frame = if message.handler == flash_amf::command::SET_DATA_FRAME {
                            let body = Body::Data {
                                message: message.strip_set_data_frame(),
                                amf3,
                            };
                            match encode(timestamp, &body) {
                                Ok(f) => f,
                                Err(_) => return,
                            }
                        } else {
                            frame
                        };
                        self.push(ServerEvent::Media {
                            stream,
                            kind: MediaKind::Data,
                            timestamp,
                            frame,
                        });
                    }
                    // User Control from clients (Set Buffer Length, ping
                    // responses…) and other types are not needed by a relay.
                    _ => {}
                }
            }
        }
    }

    fn is_publishing(&self, stream: u32) -> bool {
        self.stream_index(stream)
            .is_some_and(|i| self.streams[i].publishing)
    }

    fn on_command(&mut self, ep: &mut Endpoint, now: Instant, stream: u32, c: Command) {
        let txn = c.transaction_id;
        if c.name == "connect" && stream == 0 {
            if self.state != State::Idle {
                return; // a second connect is ignored
            }
            let object = match c.command_object.into_unwrapped() {
                Value::Object(o) => o,
                _ => Object::new(),
            };
            let amf3 = object.get("objectEncoding").and_then(Value::as_f64) == Some(3.0);
            self.object_encoding = if amf3 { 3 } else { 0 };
            self.connect_txn = if txn.is_finite() { txn } else { 1.0 };
            self.state = State::Pending;
            self.push(ServerEvent::Connect {
                txn: self.connect_txn,
                object,
                args: c.arguments,
            });
            return;
        }
        if self.state != State::Connected {
            return; // commands before connect are refused (ignored)
        }
        if stream != 0 {
            self.on_stream_command(ep, now, stream, c);
            return;
        }
        match c.name.as_str() {
            "setPeerInfo" => {
                let addresses = c
                    .arguments
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(parse_peer_address)
                    .take(MAX_PEER_ADDRESSES)
                    .collect();
                self.push(ServerEvent::SetPeerInfo { addresses });
            }
            "createStream" => self.create_stream(ep, now, txn),
            "deleteStream" => {
                if let Some(n) = number(c.arguments.first()) {
                    if n >= 1.0 && n <= f64::from(u32::MAX) {
                        self.delete_stream(ep, now, n as u32);
                    }
                }
            }
            "closeStream" => {
                // some clients send it on stream 0 with the stream ID argument
                if let Some(n) = number(c.arguments.first()) {
                    if n >= 1.0 && n <= f64::from(u32::MAX) {
                        self.stop_stream(n as u32);
                    }
                }
            }
            _ => self.push(ServerEvent::Call {
                txn,
                name: c.name,
                args: c.arguments,
            }),
        }
    }

    fn create_stream(&mut self, ep: &mut Endpoint, now: Instant, txn: f64) {
        if self.streams.len() >= MAX_STREAMS {
            let _ = self.send_error(
                ep,
                now,
                txn,
                "NetConnection.Call.Failed",
                "too many streams",
            );
            return;
        }
        let mut id = self.next_stream;
        while id == 0 || self.stream_index(id).is_some() {
            id = id.wrapping_add(1) & 0x00ff_ffff;
        }
        self.next_stream = id.wrapping_add(1) & 0x00ff_ffff;
        self.streams.push(NetStream {
            id,
            data: Slot::None,
            audio: Slot::None,
            video: Slot::None,
            publishing: false,
            playing: false,
        });
        let _ = self.send_result(ep, now, txn, Value::Number(f64::from(id)));
        self.push(ServerEvent::StreamCreated { stream: id });
    }

    fn delete_stream(&mut self, ep: &mut Endpoint, now: Instant, stream: u32) {
        let Some(i) = self.stream_index(stream) else {
            return;
        };
        self.stop_stream(stream);
        self.close_stream_flows(ep, now, i);
        self.streams.swap_remove(i);
        // §5.3.5.3: reject every receiving flow of the stream
        let session = self.session;
        self.recv.retain(|r| {
            if r.stream == stream {
                let _ = ep.reject_flow(now, session, r.flow, 0);
                false
            } else {
                true
            }
        });
    }

    fn on_stream_command(&mut self, ep: &mut Endpoint, now: Instant, stream: u32, c: Command) {
        let Some(i) = self.stream_index(stream) else {
            return;
        };
        let arg = |k: usize| c.arguments.get(k).cloned().map(Value::into_unwrapped);
        match c.name.as_str() {
            "publish" => match arg(0) {
                Some(Value::String(name)) | Some(Value::LongString(name)) => {
                    let kind = match arg(1) {
                        Some(Value::String(k)) | Some(Value::LongString(k)) if !k.is_empty() => k,
                        _ => "live".to_owned(),
                    };
                    let s = &mut self.streams[i];
                    if s.publishing || s.playing {
                        self.stop_stream(stream);
                    }
                    self.streams[i].publishing = true;
                    self.push(ServerEvent::Publish { stream, name, kind });
                }
                // publish(null) / publish(false): stop publishing
                _ => self.stop_stream(stream),
            },
            "play" => match arg(0) {
                Some(Value::String(name)) | Some(Value::LongString(name)) => {
                    let start = number(c.arguments.get(1)).unwrap_or(-2.0);
                    let s = &mut self.streams[i];
                    if s.publishing || s.playing {
                        self.stop_stream(stream);
                    }
                    self.streams[i].playing = true;
                    self.push(ServerEvent::Play {
                        stream,
                        name,
                        start,
                    });
                }
                _ => self.stop_stream(stream),
            },
            "closeStream" => self.stop_stream(stream),
            "deleteStream" => self.delete_stream(ep, now, stream),
            _ => self.push(ServerEvent::StreamCommand {
                stream,
                name: c.name,
                args: c.arguments,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses() {
        assert_eq!(
            parse_peer_address("192.0.2.129:50001"),
            Some("192.0.2.129:50001".parse().unwrap())
        );
        assert_eq!(
            parse_peer_address("[2001:db8:1::2]:50002"),
            Some("[2001:db8:1::2]:50002".parse().unwrap())
        );
        assert_eq!(
            parse_peer_address("[fe80::1%eth0]:1935"),
            Some("[fe80::1]:1935".parse().unwrap())
        );
        for junk in [
            "",
            "x",
            "1.2.3.4",
            "1.2.3.4:99999",
            "[::1]",
            "::1:5",
            "[zz]:1",
        ] {
            assert_eq!(parse_peer_address(junk), None, "{junk}");
        }
    }

    #[test]
    fn idle_footprint_is_small() {
        let size = std::mem::size_of::<ServerConnection>();
        assert!(size <= 224, "{size} bytes");
    }
}
