//! A sans-IO NetConnection client (RFC 7425 §5.3) over an engine session.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtmfp::{Endpoint, Event, Priority, SessionId};

use super::{Body, FlowMetadata, ReceiveIntent, RtmpMessage, UserControl};
use crate::Epd;
use flash_amf::{Command, DataMessage, Object, Value};

/// An `info` object of `onStatus`, `_result` or `_error`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// `code`, e.g. `NetConnection.Connect.Success`.
    pub code: String,
    /// `level`: `status`, `warning` or `error`.
    pub level: String,
    /// `description`.
    pub description: String,
    /// The whole object.
    pub info: Value,
}

impl Status {
    /// Reads `code`, `level` and `description` of an info object (missing
    /// properties read as empty strings).
    pub fn from_value(info: Value) -> Self {
        let s = |k: &str| match info.get(k).cloned().map(Value::into_unwrapped) {
            Some(Value::String(s)) | Some(Value::LongString(s)) => s,
            _ => String::new(),
        };
        Status {
            code: s("code"),
            level: s("level"),
            description: s("description"),
            info: info.clone(),
        }
    }

    /// An info object with these three properties.
    pub fn object(code: &str, level: &str, description: &str) -> Object {
        Object::new()
            .with("level", level)
            .with("code", code)
            .with("description", description)
    }
}

/// What a [`NetConnection`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NcEvent {
    /// `connect` succeeded (`NetConnection.Connect.Success`); the
    /// `setPeerInfo` command has been sent.
    Connected(Status),
    /// `connect` was refused (`_error`, e.g. `NetConnection.Connect.Rejected`)
    /// or the session failed (`NetConnection.Connect.Failed`).
    ConnectFailed(Status),
    /// An `onStatus` on a stream (0 for the NetConnection).
    Status {
        /// Stream ID.
        stream: u32,
        /// The status.
        status: Status,
    },
    /// The answer to [`NetConnection::call`].
    CallResult {
        /// Transaction ID.
        transaction_id: f64,
        /// `_result` (true) or `_error` (false).
        ok: bool,
        /// The command object and arguments of the answer.
        values: Vec<Value>,
    },
    /// `createStream` answered.
    StreamCreated {
        /// Transaction ID of the request.
        transaction_id: f64,
        /// The new stream.
        stream: u32,
    },
    /// A command from the server not answering one of ours.
    Command {
        /// Stream ID.
        stream: u32,
        /// The command.
        command: Command,
    },
    /// A User Control event.
    UserControl {
        /// Stream ID of the flow it came on.
        stream: u32,
        /// The event.
        event: UserControl,
    },
    /// Audio on a stream.
    Audio {
        /// Stream ID.
        stream: u32,
        /// Timestamp (ms).
        timestamp: u32,
        /// FLV AUDIODATA body.
        payload: Bytes,
    },
    /// Video on a stream.
    Video {
        /// Stream ID.
        stream: u32,
        /// Timestamp (ms).
        timestamp: u32,
        /// FLV VIDEODATA body.
        payload: Bytes,
    },
    /// A data message on a stream.
    Data {
        /// Stream ID.
        stream: u32,
        /// Timestamp (ms).
        timestamp: u32,
        /// The message.
        message: DataMessage,
    },
    /// The connection is gone (session closed, or the server rejected our
    /// control flow).
    Closed,
}

/// One flow message seen by a [`NetConnection`] with tracing on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Sent by us (true) or received.
    pub sent: bool,
    /// The flow's User Metadata.
    pub metadata: Bytes,
    /// The flow message (§5.1.2 framing).
    pub message: Bytes,
}

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NcState {
    /// The RTMFP session is opening.
    Opening,
    /// `connect` sent, waiting for the answer.
    Connecting,
    /// Connected.
    Connected,
    /// Closed or failed.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pending {
    Connect,
    CreateStream,
    Call,
}

#[derive(Debug, Default)]
struct StreamFlows {
    control: Option<u64>,
    audio: Option<u64>,
    video: Option<u64>,
}

/// A NetConnection client over one RTMFP session.
///
/// It owns no socket and no clock: every method takes the engine and `now`,
/// and [`on_event`](Self::on_event) must see every engine event (it ignores
/// other sessions' events). Drain typed events with
/// [`poll_event`](Self::poll_event).
///
/// Flows: one control flow for stream 0 (the first one, sending `connect`),
/// and per NetStream one flow for commands and data, one for audio
/// ([`ReceiveIntent::Network`], [`Priority::IMMEDIATE`]) and one for video
/// ([`Priority::PRIORITY`]), all associated to the server's canonical return
/// control flow.
#[derive(Debug)]
pub struct NetConnection {
    session: SessionId,
    state: NcState,
    connect_object: Object,
    connect_args: Vec<Value>,
    peer_info: Vec<String>,
    control: Option<u64>,
    server_control: Option<u64>,
    recv_streams: HashMap<u64, u32>,
    streams: HashMap<u32, StreamFlows>,
    pending: HashMap<u64, Pending>,
    next_tid: u64,
    events: VecDeque<NcEvent>,
    media_lifetime: Option<Duration>,
    trace: Option<Vec<TraceEntry>>,
    flow_metadata: HashMap<(bool, u64), Bytes>,
    /// Flow Synchronization barriers across the receiving flows (§5.2).
    sync: super::SyncBarriers,
}

fn tid_key(t: f64) -> u64 {
    if t.is_finite() && t >= 0.0 {
        t as u64
    } else {
        u64::MAX
    }
}

impl NetConnection {
    /// Opens a session to `url` (an `rtmfp://host[:port]/app...` URI, sent as
    /// the EPD's ancillary data) at `candidates`. When it opens, `connect` is
    /// sent with a command object made of `app`, `tcUrl`, `flashVer`,
    /// `objectEncoding` (0) and then `properties` (which may override them).
    pub fn connect(
        ep: &mut Endpoint,
        now: Instant,
        url: &str,
        candidates: &[SocketAddr],
        properties: Object,
    ) -> Result<Self, rtmfp::Error> {
        let epd = Epd::server(url.as_bytes()).encode();
        let session = ep.connect(now, &epd, candidates)?;
        let app = super::parse_connect_url(url);
        let app = if app.instance.is_empty() {
            app.app
        } else {
            format!("{}/{}", app.app, app.instance)
        };
        let mut obj = Object::new()
            .with("app", app.as_str())
            .with("tcUrl", url)
            .with("flashVer", "rtmfp-flash/0.1")
            .with("objectEncoding", 0.0);
        for (k, v) in properties.properties {
            obj.properties.retain(|(old, _)| *old != k);
            obj.properties.push((k, v));
        }
        Ok(Self::with_session(session, obj))
    }

    /// A client over a session opened by the caller (opening or open); sends
    /// `connect` with `connect_object` as is. If the session is already open,
    /// call [`start`](Self::start).
    pub fn with_session(session: SessionId, connect_object: Object) -> Self {
        NetConnection {
            session,
            state: NcState::Opening,
            connect_object,
            connect_args: Vec::new(),
            peer_info: Vec::new(),
            control: None,
            server_control: None,
            recv_streams: HashMap::new(),
            sync: super::SyncBarriers::new(),
            streams: HashMap::new(),
            pending: HashMap::new(),
            next_tid: 2,
            events: VecDeque::new(),
            media_lifetime: None,
            trace: None,
            flow_metadata: HashMap::new(),
        }
    }

    /// Builder: extra `connect` arguments (after the command object).
    pub fn with_connect_args(mut self, args: Vec<Value>) -> Self {
        self.connect_args = args;
        self
    }

    /// Sets the addresses sent in `setPeerInfo` after connecting (default:
    /// none).
    pub fn set_peer_addresses(&mut self, addrs: &[SocketAddr]) {
        self.peer_info = addrs.iter().map(ToString::to_string).collect();
    }

    /// Builder: a lifetime after which undelivered audio/video is abandoned.
    pub fn with_media_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.media_lifetime = lifetime;
        self
    }

    /// Starts (or stops) recording every flow message sent and received.
    pub fn set_tracing(&mut self, on: bool) {
        self.trace = on.then(Vec::new);
    }

    /// Takes the recorded flow messages.
    pub fn take_trace(&mut self) -> Vec<TraceEntry> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn record(&mut self, sent: bool, flow: u64, message: &Bytes) {
        if let Some(t) = self.trace.as_mut() {
            let metadata = self
                .flow_metadata
                .get(&(sent, flow))
                .cloned()
                .unwrap_or_default();
            t.push(TraceEntry {
                sent,
                metadata,
                message: message.clone(),
            });
        }
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Our NetConnection control flow (sending), once opened: the flow a
    /// NetGroup join flow is associated to.
    pub fn control_flow_id(&self) -> Option<u64> {
        self.control
    }

    /// The state.
    pub fn state(&self) -> NcState {
        self.state
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<NcEvent> {
        self.events.pop_front()
    }

    /// Opens the control flow and sends `connect` (called on
    /// `SessionOpened`; call it yourself when the session was already open).
    pub fn start(&mut self, ep: &mut Endpoint, now: Instant) -> Result<(), rtmfp::Error> {
        if self.control.is_some() {
            return Ok(());
        }
        let md = FlowMetadata::control().encode();
        let f = ep.open_flow(now, self.session, &md, None, Priority::IMMEDIATE)?;
        self.flow_metadata.insert((true, f), md.into());
        self.control = Some(f);
        self.state = NcState::Connecting;
        let mut c = Command::new("connect", 1.0, Value::Object(self.connect_object.clone()));
        c.arguments = self.connect_args.clone();
        self.pending.insert(1, Pending::Connect);
        self.send_body(ep, now, f, 0, &Body::command(c), None)
    }

    fn send_body(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        flow: u64,
        timestamp: u32,
        body: &Body,
        lifetime: Option<Duration>,
    ) -> Result<(), rtmfp::Error> {
        let m = RtmpMessage::from_body(timestamp, body)
            .map_err(|_| rtmfp::Error::TooLarge)?
            .encode();
        self.record(true, flow, &m);
        ep.send(now, self.session, flow, m, lifetime)
    }

    fn control_flow(&self) -> Result<u64, rtmfp::Error> {
        match (self.state, self.control) {
            (NcState::Connected, Some(f)) => Ok(f),
            (NcState::Closed, _) => Err(rtmfp::Error::SessionClosed),
            _ => Err(rtmfp::Error::NoFlow),
        }
    }

    fn take_tid(&mut self, kind: Pending) -> f64 {
        let t = self.next_tid;
        self.next_tid += 1;
        self.pending.insert(t, kind);
        t as f64
    }

    /// Calls a server method on the NetConnection; the answer comes as
    /// [`NcEvent::CallResult`] with the returned transaction ID.
    pub fn call(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        name: &str,
        args: Vec<Value>,
    ) -> Result<f64, rtmfp::Error> {
        let f = self.control_flow()?;
        let tid = self.take_tid(Pending::Call);
        let mut c = Command::new(name, tid, Value::Null);
        c.arguments = args;
        self.send_body(ep, now, f, 0, &Body::command(c), None)?;
        Ok(tid)
    }

    /// Sends a command on the NetConnection expecting no answer (transaction
    /// ID 0).
    pub fn send_command(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        name: &str,
        args: Vec<Value>,
    ) -> Result<(), rtmfp::Error> {
        let f = self.control_flow()?;
        let mut c = Command::new(name, 0.0, Value::Null);
        c.arguments = args;
        self.send_body(ep, now, f, 0, &Body::command(c), None)
    }

    /// Sends `setPeerInfo(addresses…)` (RFC 7425 §5.3.3).
    pub fn set_peer_info(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        addresses: &[String],
    ) -> Result<(), rtmfp::Error> {
        let args = addresses.iter().map(|a| Value::from(a.as_str())).collect();
        self.send_command(ep, now, "setPeerInfo", args)
    }

    /// Sends `createStream`; the stream ID comes as
    /// [`NcEvent::StreamCreated`] with the returned transaction ID.
    pub fn create_stream(&mut self, ep: &mut Endpoint, now: Instant) -> Result<f64, rtmfp::Error> {
        let f = self.control_flow()?;
        let tid = self.take_tid(Pending::CreateStream);
        let c = Command::new("createStream", tid, Value::Null);
        self.send_body(ep, now, f, 0, &Body::command(c), None)?;
        Ok(tid)
    }

    /// Sends `deleteStream(stream)` and closes the stream's flows.
    pub fn delete_stream(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
    ) -> Result<(), rtmfp::Error> {
        self.send_command(
            ep,
            now,
            "deleteStream",
            vec![Value::Number(f64::from(stream))],
        )?;
        if let Some(s) = self.streams.remove(&stream) {
            for f in [s.control, s.audio, s.video].into_iter().flatten() {
                let _ = ep.close_flow(now, self.session, f);
            }
        }
        Ok(())
    }

    fn stream_flow(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        which: u8,
    ) -> Result<u64, rtmfp::Error> {
        self.control_flow()?;
        let assoc = self.server_control.ok_or(rtmfp::Error::NoFlow)?;
        let s = self.streams.entry(stream).or_default();
        let (slot, intent, prio) = match which {
            0 => (&mut s.control, ReceiveIntent::Sequence, Priority::PRIORITY),
            1 => (&mut s.audio, ReceiveIntent::Network, Priority::IMMEDIATE),
            _ => (&mut s.video, ReceiveIntent::Sequence, Priority::PRIORITY),
        };
        if let Some(f) = *slot {
            return Ok(f);
        }
        let md = FlowMetadata::new(stream).with_intent(intent).encode();
        let f = ep.open_flow(now, self.session, &md, Some(assoc), prio)?;
        *slot = Some(f);
        self.flow_metadata.insert((true, f), md.into());
        Ok(f)
    }

    /// Sends a command on a NetStream's flow (transaction ID 0).
    pub fn stream_command(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        name: &str,
        args: Vec<Value>,
    ) -> Result<(), rtmfp::Error> {
        let f = self.stream_flow(ep, now, stream, 0)?;
        let mut c = Command::new(name, 0.0, Value::Null);
        c.arguments = args;
        self.send_body(ep, now, f, 0, &Body::command(c), None)
    }

    /// `NetStream.publish(name, "live")`.
    pub fn publish(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        name: &str,
    ) -> Result<(), rtmfp::Error> {
        self.stream_command(ep, now, stream, "publish", vec![name.into(), "live".into()])
    }

    /// `NetStream.play(name)`.
    pub fn play(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        name: &str,
    ) -> Result<(), rtmfp::Error> {
        self.stream_command(ep, now, stream, "play", vec![name.into()])
    }

    /// `closeStream` on a NetStream (stops publishing or playing).
    pub fn close_stream(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
    ) -> Result<(), rtmfp::Error> {
        self.stream_command(ep, now, stream, "closeStream", Vec::new())
    }

    /// `NetStream.send(handler, values…)`: a data message on the stream.
    pub fn send_data(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        timestamp: u32,
        message: DataMessage,
    ) -> Result<(), rtmfp::Error> {
        let f = self.stream_flow(ep, now, stream, 0)?;
        self.send_body(ep, now, f, timestamp, &Body::data(message), None)
    }

    /// Sends an audio message (FLV AUDIODATA body) on the stream's audio flow.
    pub fn send_audio(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        timestamp: u32,
        payload: Bytes,
    ) -> Result<(), rtmfp::Error> {
        let f = self.stream_flow(ep, now, stream, 1)?;
        let lt = self.media_lifetime;
        self.send_body(ep, now, f, timestamp, &Body::Audio(payload), lt)
    }

    /// Sends a video message (FLV VIDEODATA body) on the stream's video flow.
    pub fn send_video(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        timestamp: u32,
        payload: Bytes,
    ) -> Result<(), rtmfp::Error> {
        let f = self.stream_flow(ep, now, stream, 2)?;
        let lt = self.media_lifetime;
        self.send_body(ep, now, f, timestamp, &Body::Video(payload), lt)
    }

    /// Orderly close (§5.3.6): closes every sending flow, then the session.
    pub fn close(&mut self, ep: &mut Endpoint, now: Instant) {
        for s in self.streams.values() {
            for f in [s.control, s.audio, s.video].into_iter().flatten() {
                let _ = ep.close_flow(now, self.session, f);
            }
        }
        if let Some(f) = self.control {
            let _ = ep.close_flow(now, self.session, f);
        }
        ep.close_session(now, self.session);
        self.set_closed();
    }

    fn set_closed(&mut self) {
        if self.state != NcState::Closed {
            if self.state != NcState::Connected {
                self.events
                    .push_back(NcEvent::ConnectFailed(Status::from_value(Value::Object(
                        Status::object(
                            "NetConnection.Connect.Failed",
                            "error",
                            "the session closed before the connection was up",
                        ),
                    ))));
            }
            self.state = NcState::Closed;
            self.events.push_back(NcEvent::Closed);
        }
    }

    /// Feeds an engine event. Returns whether it belonged to this connection.
    /// On `Readable`, reads every message of the flow.
    pub fn on_event(&mut self, ep: &mut Endpoint, now: Instant, event: &Event) -> bool {
        match *event {
            Event::SessionOpened { session, .. } if session == self.session => {
                if self.start(ep, now).is_err() {
                    self.set_closed();
                }
                true
            }
            Event::SessionFailed { session, .. } | Event::SessionClosed { session, .. }
                if session == self.session =>
            {
                self.set_closed();
                true
            }
            Event::IncomingFlow {
                session,
                flow,
                ref metadata,
                association,
            } if session == self.session => {
                match FlowMetadata::decode(metadata) {
                    Ok(md) => {
                        if md.stream_id == 0
                            && self.server_control.is_none()
                            && association.is_some()
                            && association == self.control
                        {
                            self.server_control = Some(flow);
                        }
                        if md.receive_intent == ReceiveIntent::Network {
                            let _ =
                                ep.set_recv_flow_options(session, flow, Some(false), None, None);
                        }
                        self.recv_streams.insert(flow, md.stream_id);
                        self.flow_metadata.insert((false, flow), metadata.clone());
                    }
                    Err(_) => {
                        let _ = ep.reject_flow(now, session, flow, 0);
                    }
                }
                true
            }
            Event::Readable { session, flow } if session == self.session => {
                self.drain(ep, now, flow);
                true
            }
            Event::RecvFlowComplete { session, flow } if session == self.session => {
                self.recv_streams.remove(&flow);
                self.sync.forget_flow(flow);
                if Some(flow) == self.server_control {
                    // the server closed its canonical control flow: orderly close
                    self.close(ep, now);
                }
                true
            }
            Event::SendFlowException { session, flow, .. } if session == self.session => {
                if Some(flow) == self.control {
                    // abrupt close by the server (§5.3.6)
                    ep.close_session(now, session);
                    self.set_closed();
                }
                true
            }
            Event::SendFlowComplete { session, .. }
            | Event::Writable { session, .. }
            | Event::AddressChanged { session, .. }
                if session == self.session =>
            {
                true
            }
            _ => false,
        }
    }

    /// Reads and handles the messages of receiving flows, honouring Flow
    /// Synchronization barriers (§5.2): a flow that reaches a barrier is
    /// suspended in the engine (its receive window closes) until every flow
    /// of the barrier has reached it; then those flows are read again.
    fn drain(&mut self, ep: &mut Endpoint, now: Instant, flow: u64) {
        let session = self.session;
        let mut work = VecDeque::from([flow]);
        // each flow is resumed at most once per barrier; bound the loop anyway
        let mut budget = 4096;
        while let Some(flow) = work.pop_front() {
            budget -= 1;
            if budget == 0 {
                break;
            }
            if self.sync.is_suspended(flow) {
                continue;
            }
            let stream = self.recv_streams.get(&flow).copied();
            while let Some(m) = ep.read(now, session, flow) {
                self.record(false, flow, &m.data);
                let Ok(msg) = RtmpMessage::decode(&m.data) else {
                    continue;
                };
                if let Ok(Body::UserControl(UserControl::FlowSync { sync_id, count })) = msg.body()
                {
                    let resume = self.sync.on_sync(flow, sync_id, count);
                    if resume.is_empty() {
                        let _ = ep.set_recv_flow_options(session, flow, None, None, Some(true));
                        break;
                    }
                    for f in resume {
                        let _ = ep.set_recv_flow_options(session, f, None, None, Some(false));
                        if f != flow {
                            work.push_back(f);
                        }
                    }
                    continue;
                }
                if let Some(stream) = stream {
                    self.on_message(ep, now, stream, msg);
                }
            }
        }
    }

    fn on_message(&mut self, ep: &mut Endpoint, now: Instant, stream: u32, msg: RtmpMessage) {
        if msg.is_chunk_control() {
            return;
        }
        let timestamp = msg.timestamp;
        let Ok(body) = msg.body() else { return };
        let ev = match body {
            Body::Audio(payload) => NcEvent::Audio {
                stream,
                timestamp,
                payload,
            },
            Body::Video(payload) => NcEvent::Video {
                stream,
                timestamp,
                payload,
            },
            Body::Data { message, .. } => NcEvent::Data {
                stream,
                timestamp,
                message,
            },
            Body::UserControl(event) => NcEvent::UserControl { stream, event },
            Body::Command { command, .. } => match self.on_command(ep, now, stream, command) {
                Some(e) => e,
                None => return,
            },
            Body::Other { .. } => return,
        };
        self.events.push_back(ev);
    }

    fn on_command(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stream: u32,
        command: Command,
    ) -> Option<NcEvent> {
        let ok = match command.name.as_str() {
            "_result" => true,
            "_error" => false,
            "onStatus" => {
                let info = command.arguments.into_iter().next().unwrap_or(Value::Null);
                return Some(NcEvent::Status {
                    stream,
                    status: Status::from_value(info),
                });
            }
            _ => return Some(NcEvent::Command { stream, command }),
        };
        let tid = command.transaction_id;
        let Some(kind) = self.pending.remove(&tid_key(tid)) else {
            return Some(NcEvent::Command { stream, command });
        };
        let first_arg = command.arguments.first().cloned().unwrap_or(Value::Null);
        match kind {
            Pending::Connect => {
                let status = Status::from_value(first_arg);
                self.events.push_back(NcEvent::Status {
                    stream: 0,
                    status: status.clone(),
                });
                if ok {
                    self.state = NcState::Connected;
                    let peers = self.peer_info.clone();
                    let _ = self.set_peer_info(ep, now, &peers);
                    Some(NcEvent::Connected(status))
                } else {
                    ep.close_session(now, self.session);
                    self.state = NcState::Closed;
                    self.events.push_back(NcEvent::ConnectFailed(status));
                    Some(NcEvent::Closed)
                }
            }
            Pending::CreateStream => match (ok, first_arg.into_unwrapped()) {
                (true, Value::Number(n)) if n >= 0.0 && n <= f64::from(u32::MAX) => {
                    Some(NcEvent::StreamCreated {
                        transaction_id: tid,
                        stream: n as u32,
                    })
                }
                (_, v) => Some(NcEvent::CallResult {
                    transaction_id: tid,
                    ok: false,
                    values: vec![command.command_object, v],
                }),
            },
            Pending::Call => {
                let mut values = vec![command.command_object];
                values.extend(command.arguments);
                Some(NcEvent::CallResult {
                    transaction_id: tid,
                    ok,
                    values,
                })
            }
        }
    }
}
