//! Sans-IO direct peer-to-peer NetStreams (RFC 7425 §5.4): what Flash's
//! `new NetStream(nc, NetStream.DIRECT_CONNECTIONS)` (publisher) and
//! `new NetStream(nc, peerID)` (subscriber / player) do over an RTMFP session
//! between two peers.
//!
//! # Flow layout
//!
//! ```text
//! subscriber (PeerPlayer)                                publisher (PeerPublisher)
//!  control flow (TC sid N, no association, IMMEDIATE) ──▶ play(name), closeStream…
//!  ◀── data  (TC sid N, return to the control flow, IMMEDIATE): Stream Begin,
//!       onStatus (Play.Reset, Play.Start / Connect.Rejected), data messages
//!  ◀── audio (TC sid N, return to the control flow, IMMEDIATE, time critical,
//!       receive intent "network order": the player reads it unordered)
//!  ◀── video (TC sid N, return to the control flow, PRIORITY, time critical)
//! ```
//!
//! A subscriber's control flow has a non-zero stream ID and no association
//! (§5.4.1); every publisher flow is a return flow associated to it with the
//! same stream ID (§5.4.2), which is how the subscriber knows which stream
//! the media belongs to. One session may carry several P2P NetStreams, each
//! its own control flow. Audio goes on its own flow at a higher priority than
//! video, so it never waits behind a large key frame.
//!
//! Closing (§5.4.3): the player closes its control flow; the publisher, on
//! its completion, closes its return flows and reports
//! [`PeerEvent::Closed`]. A refused subscriber gets `onStatus`
//! `NetStream.Connect.Rejected` (level `error`) on a return flow, which is
//! then closed, and once that is delivered the control flow is rejected; the
//! player reports [`PlayerEvent::Closed`] on the exception.
//!
//! Both halves only claim the engine events of their flows (see their
//! `on_event`): a [`PeerPublisher`] takes unassociated flows of its
//! session, a [`PeerPlayer`] the flows associated to its control flows, so
//! both can share a session. Flow Synchronization (§5.2) is not honoured on
//! P2P streams (messages are reported as they are read).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtmfp::{Endpoint, Event, Priority, SessionId};

use super::slot::{encode, Slot};
use super::{
    Body, FlowMetadata, ReceiveIntent, RtmpMessage, Status, UserControl, MAX_COMMAND_SIZE,
};
use super::{MSG_AUDIO, MSG_VIDEO};
use flash_amf::{Command, DataMessage, Value};

/// Most P2P subscribers (control flows) one [`PeerPublisher`] accepts at once.
pub const MAX_PEER_SUBSCRIBERS: usize = 16;
/// Most P2P NetStreams one [`PeerPlayer`] plays at once.
pub const MAX_PEER_STREAMS: usize = 16;
/// Most events waiting in `poll_event` (further ones, except closes, are
/// dropped).
pub const MAX_PEER_EVENTS: usize = 1024;

/// What a [`PeerPublisher`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// A subscriber asked to play `name` (Flash's `onPeerConnect`). Answer
    /// with [`PeerPublisher::accept`] or [`PeerPublisher::refuse`].
    PlayRequest {
        /// The session.
        session: SessionId,
        /// The subscriber (its control flow ID).
        subscriber: u64,
        /// The stream ID of the subscriber's NetStream.
        stream: u32,
        /// The stream name.
        name: String,
    },
    /// Any other command from an accepted subscriber (`receiveAudio`,
    /// `receiveVideo`, `pause`, …).
    Command {
        /// The subscriber.
        subscriber: u64,
        /// Command name.
        name: String,
        /// Arguments after the command object.
        args: Vec<Value>,
    },
    /// The subscriber is gone (closed its control flow, `closeStream`,
    /// refused, or the session ended).
    Closed {
        /// The subscriber.
        subscriber: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    /// Waiting for `play`.
    Idle,
    /// `play` reported, not answered.
    Pending,
    /// Accepted.
    Playing,
    /// Refused: waiting for the status to be delivered.
    Refusing,
    /// Closed.
    Closed,
}

#[derive(Debug)]
struct Subscriber {
    control: u64,
    stream: u32,
    state: SubState,
    data: Slot,
    audio: Slot,
    video: Slot,
}

impl Subscriber {
    fn slots(&self) -> [Slot; 3] {
        [self.data, self.audio, self.video]
    }
}

fn status_body(stream: u32, code: &str, level: &str, description: &str) -> Body {
    let info =
        Status::object(code, level, description).with("clientid", Value::Number(f64::from(stream)));
    Body::command(Command::new("onStatus", 0.0, Value::Null).with_arg(Value::Object(info)))
}

/// The publisher side of the P2P NetStreams a subscriber opened over one
/// session (a `DIRECT_CONNECTIONS` NetStream's view of one peer).
///
/// Feed it every engine event of its session with
/// [`on_event`](Self::on_event), then drain [`poll_event`](Self::poll_event).
#[derive(Debug)]
pub struct PeerPublisher {
    session: SessionId,
    subs: Vec<Subscriber>,
    events: VecDeque<PeerEvent>,
    closed: bool,
}

impl PeerPublisher {
    /// A publisher for a session (usually one a subscriber opened to us).
    pub fn new(session: SessionId) -> Self {
        PeerPublisher {
            session,
            subs: Vec::new(),
            events: VecDeque::new(),
            closed: false,
        }
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// The accepted subscribers now playing.
    pub fn playing(&self) -> impl Iterator<Item = u64> + '_ {
        self.subs
            .iter()
            .filter(|s| s.state == SubState::Playing)
            .map(|s| s.control)
    }

    fn push(&mut self, e: PeerEvent) {
        if self.events.len() >= MAX_PEER_EVENTS && !matches!(e, PeerEvent::Closed { .. }) {
            return;
        }
        self.events.push_back(e);
    }

    fn index(&self, subscriber: u64) -> Option<usize> {
        self.subs.iter().position(|s| s.control == subscriber)
    }

    fn flow(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        i: usize,
        which: u8,
    ) -> Result<u64, rtmfp::Error> {
        let s = &mut self.subs[i];
        let (control, stream) = (s.control, s.stream);
        // audio in network order (RXI 1), so a lost packet never holds back
        // the ones after it; data and video in original order
        let (slot, prio, intent) = match which {
            0 => (&mut s.data, Priority::IMMEDIATE, ReceiveIntent::Sequence),
            1 => (&mut s.audio, Priority::IMMEDIATE, ReceiveIntent::Network),
            _ => (&mut s.video, Priority::PRIORITY, ReceiveIntent::Sequence),
        };
        match *slot {
            Slot::Open(f) => Ok(f),
            Slot::Refused => Err(rtmfp::Error::FlowRejected),
            Slot::None => {
                let md = FlowMetadata::new(stream).with_intent(intent).encode();
                let f = ep.open_flow(now, self.session, &md, Some(control), prio)?;
                *slot = Slot::Open(f);
                Ok(f)
            }
        }
    }

    fn send_data_flow(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        i: usize,
        body: &Body,
    ) -> Result<(), rtmfp::Error> {
        let m = encode(0, body)?;
        let f = self.flow(ep, now, i, 0)?;
        ep.send(now, self.session, f, m, None)
    }

    fn pending(&self, subscriber: u64) -> Result<usize, rtmfp::Error> {
        let i = self.index(subscriber).ok_or(rtmfp::Error::NoFlow)?;
        match self.subs[i].state {
            SubState::Pending => Ok(i),
            SubState::Closed | SubState::Refusing => Err(rtmfp::Error::FlowRejected),
            _ => Err(rtmfp::Error::NoFlow),
        }
    }

    /// Accepts a [`PeerEvent::PlayRequest`]: sends Stream Begin and `onStatus`
    /// `NetStream.Play.Reset` and `NetStream.Play.Start` on a return flow.
    pub fn accept(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        subscriber: u64,
    ) -> Result<(), rtmfp::Error> {
        let i = self.pending(subscriber)?;
        let stream = self.subs[i].stream;
        self.send_data_flow(
            ep,
            now,
            i,
            &Body::UserControl(UserControl::StreamBegin(stream)),
        )?;
        for (code, d) in [
            ("NetStream.Play.Reset", "Playing and resetting stream."),
            ("NetStream.Play.Start", "Started playing stream."),
        ] {
            self.send_data_flow(ep, now, i, &status_body(stream, code, "status", d))?;
        }
        self.subs[i].state = SubState::Playing;
        Ok(())
    }

    /// Refuses a [`PeerEvent::PlayRequest`] (Flash's `onPeerConnect` returning
    /// false): `onStatus` `NetStream.Connect.Rejected` (level `error`) on a
    /// return flow that is then closed; the subscriber's control flow is
    /// rejected once the status is delivered. Reports [`PeerEvent::Closed`].
    pub fn refuse(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        subscriber: u64,
        description: &str,
    ) -> Result<(), rtmfp::Error> {
        let i = self.pending(subscriber)?;
        let stream = self.subs[i].stream;
        let b = status_body(stream, "NetStream.Connect.Rejected", "error", description);
        let r = self.send_data_flow(ep, now, i, &b);
        self.subs[i].state = SubState::Refusing;
        match (r.is_ok(), self.subs[i].data.flow()) {
            (true, Some(f)) => {
                let _ = ep.close_flow(now, self.session, f);
            }
            _ => self.drop_subscriber(ep, now, i, true),
        }
        self.push(PeerEvent::Closed { subscriber });
        r
    }

    /// Sends a framed RTMP message ([`RtmpMessage::encode`] output) to an
    /// accepted subscriber: audio (type 8) on the audio flow, video (type 9)
    /// on the video flow, anything else (data messages) on the data flow.
    /// `lifetime` abandons the message if undelivered in time.
    pub fn send_media(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        subscriber: u64,
        frame: Bytes,
        lifetime: Option<Duration>,
    ) -> Result<(), rtmfp::Error> {
        let i = self.index(subscriber).ok_or(rtmfp::Error::NoFlow)?;
        if self.subs[i].state != SubState::Playing {
            return Err(rtmfp::Error::NoFlow);
        }
        let which = match frame.first() {
            Some(&MSG_AUDIO) => 1,
            Some(&MSG_VIDEO) => 2,
            _ => 0,
        };
        let f = self.flow(ep, now, i, which)?;
        ep.send(now, self.session, f, frame, lifetime)
    }

    /// `NetStream.send(handler, values…)` to an accepted subscriber (e.g.
    /// `onIm`), on its data flow.
    pub fn send_data(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        subscriber: u64,
        timestamp: u32,
        message: DataMessage,
    ) -> Result<(), rtmfp::Error> {
        let frame = encode(timestamp, &Body::data(message))?;
        self.send_media(ep, now, subscriber, frame, None)
    }

    /// Stops publishing to a subscriber: closes our return flows and rejects
    /// its control flow (§5.4.3). Reports [`PeerEvent::Closed`].
    pub fn close_subscriber(&mut self, ep: &mut Endpoint, now: Instant, subscriber: u64) {
        if let Some(i) = self.index(subscriber) {
            if self.subs[i].state != SubState::Closed {
                self.drop_subscriber(ep, now, i, true);
                self.push(PeerEvent::Closed { subscriber });
            }
        }
    }

    /// Closes every subscriber (the session stays open).
    pub fn close(&mut self, ep: &mut Endpoint, now: Instant) {
        let subs: Vec<u64> = self.subs.iter().map(|s| s.control).collect();
        for s in subs {
            self.close_subscriber(ep, now, s);
        }
    }

    fn drop_subscriber(&mut self, ep: &mut Endpoint, now: Instant, i: usize, reject: bool) {
        let s = &mut self.subs[i];
        for f in s.slots().iter().filter_map(|x| x.flow()) {
            let _ = ep.close_flow(now, self.session, f);
        }
        s.state = SubState::Closed;
        let control = s.control;
        self.subs.swap_remove(i);
        if reject {
            let _ = ep.reject_flow(now, self.session, control, 0);
        }
    }

    /// Feeds an engine event. Returns whether it belonged to this publisher:
    /// events of other sessions and flows associated to one of our sending
    /// flows (a [`PeerPlayer`]'s) are not taken.
    pub fn on_event(&mut self, ep: &mut Endpoint, now: Instant, event: &Event) -> bool {
        match *event {
            Event::IncomingFlow {
                session,
                flow,
                ref metadata,
                association,
            } if session == self.session && association.is_none() => {
                match FlowMetadata::decode(metadata) {
                    Ok(md)
                        if md.stream_id != 0
                            && !self.closed
                            && self.subs.len() < MAX_PEER_SUBSCRIBERS
                            && self.index(flow).is_none() =>
                    {
                        self.subs.push(Subscriber {
                            control: flow,
                            stream: md.stream_id,
                            state: SubState::Idle,
                            data: Slot::None,
                            audio: Slot::None,
                            video: Slot::None,
                        });
                    }
                    _ => {
                        let _ = ep.reject_flow(now, session, flow, 0);
                    }
                }
                true
            }
            Event::Readable { session, flow } if session == self.session => {
                if self.index(flow).is_none() {
                    return false;
                }
                self.drain(ep, now, flow);
                true
            }
            Event::RecvFlowComplete { session, flow } if session == self.session => {
                let Some(i) = self.index(flow) else {
                    return false;
                };
                let was = self.subs[i].state;
                self.drop_subscriber(ep, now, i, false);
                if was != SubState::Refusing {
                    self.push(PeerEvent::Closed { subscriber: flow });
                }
                true
            }
            Event::SendFlowException { session, flow, .. } if session == self.session => {
                self.on_send(ep, now, flow, true)
            }
            Event::SendFlowComplete { session, flow } if session == self.session => {
                self.on_send(ep, now, flow, false)
            }
            Event::SessionClosed { session, .. } | Event::SessionFailed { session, .. }
                if session == self.session =>
            {
                self.closed = true;
                for s in std::mem::take(&mut self.subs) {
                    if !matches!(s.state, SubState::Refusing | SubState::Closed) {
                        self.push(PeerEvent::Closed {
                            subscriber: s.control,
                        });
                    }
                }
                true
            }
            _ => false,
        }
    }

    fn on_send(&mut self, ep: &mut Endpoint, now: Instant, flow: u64, exception: bool) -> bool {
        let Some(i) = self
            .subs
            .iter()
            .position(|s| s.slots().contains(&Slot::Open(flow)))
        else {
            return false;
        };
        if self.subs[i].state == SubState::Refusing {
            // the refusal was delivered (or refused): reject the control flow
            self.drop_subscriber(ep, now, i, true);
            return true;
        }
        if exception {
            let s = &mut self.subs[i];
            for slot in [&mut s.data, &mut s.audio, &mut s.video] {
                if *slot == Slot::Open(flow) {
                    *slot = Slot::Refused;
                }
            }
        }
        true
    }

    fn drain(&mut self, ep: &mut Endpoint, now: Instant, flow: u64) {
        while let Some(m) = ep.read(now, self.session, flow) {
            let Some(i) = self.index(flow) else {
                continue; // dropped meanwhile: discard
            };
            if m.data.len() > MAX_COMMAND_SIZE + 5 {
                continue;
            }
            let Ok(msg) = RtmpMessage::decode(&m.data) else {
                continue;
            };
            if msg.is_chunk_control() {
                continue;
            }
            if let Ok(Body::Command { command, .. }) = msg.body() {
                self.on_command(ep, now, i, command);
            }
        }
    }

    fn on_command(&mut self, ep: &mut Endpoint, now: Instant, i: usize, c: Command) {
        let subscriber = self.subs[i].control;
        let stream = self.subs[i].stream;
        match c.name.as_str() {
            "play" => {
                let name = match c.arguments.first().cloned().map(Value::into_unwrapped) {
                    Some(Value::String(n)) | Some(Value::LongString(n)) => n,
                    _ => {
                        self.close_subscriber(ep, now, subscriber);
                        return;
                    }
                };
                if self.subs[i].state != SubState::Idle {
                    return; // one play per P2P NetStream
                }
                self.subs[i].state = SubState::Pending;
                self.push(PeerEvent::PlayRequest {
                    session: self.session,
                    subscriber,
                    stream,
                    name,
                });
            }
            "closeStream" | "deleteStream" => self.close_subscriber(ep, now, subscriber),
            _ if self.subs[i].state == SubState::Playing => self.push(PeerEvent::Command {
                subscriber,
                name: c.name,
                args: c.arguments,
            }),
            _ => {}
        }
    }
}

/// What a [`PeerPlayer`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PlayerEvent {
    /// The publisher sent Stream Begin.
    StreamBegin {
        /// Stream ID.
        stream: u32,
    },
    /// An `onStatus` (`NetStream.Play.Start`, `NetStream.Connect.Rejected`…).
    Status {
        /// Stream ID.
        stream: u32,
        /// The status.
        status: Status,
    },
    /// Audio (FLV AUDIODATA body).
    Audio {
        /// Stream ID.
        stream: u32,
        /// Timestamp (ms).
        timestamp: u32,
        /// Payload.
        payload: Bytes,
    },
    /// Video (FLV VIDEODATA body).
    Video {
        /// Stream ID.
        stream: u32,
        /// Timestamp (ms).
        timestamp: u32,
        /// Payload.
        payload: Bytes,
    },
    /// A data message (`onMetaData`, `NetStream.send` handlers…).
    Data {
        /// Stream ID.
        stream: u32,
        /// Timestamp (ms).
        timestamp: u32,
        /// The message.
        message: DataMessage,
    },
    /// The stream is closed: by us, by the publisher (refused or stopped:
    /// `rejected`), or the session ended.
    Closed {
        /// Stream ID.
        stream: u32,
        /// The publisher rejected our control flow.
        rejected: bool,
    },
}

#[derive(Debug)]
struct PlayStream {
    stream: u32,
    control: u64,
    recv: Vec<u64>,
}

/// The subscriber side of P2P NetStreams over a session the application
/// opened to the publisher's peer ID (Flash's `new NetStream(nc, peerID)`).
#[derive(Debug)]
pub struct PeerPlayer {
    session: SessionId,
    streams: Vec<PlayStream>,
    next_stream: u32,
    events: VecDeque<PlayerEvent>,
}

impl PeerPlayer {
    /// A player over `session` (open, see [`play`](Self::play)).
    pub fn new(session: SessionId) -> Self {
        PeerPlayer {
            session,
            streams: Vec::new(),
            next_stream: 1,
            events: VecDeque::new(),
        }
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PlayerEvent> {
        self.events.pop_front()
    }

    fn push(&mut self, e: PlayerEvent) {
        if self.events.len() >= MAX_PEER_EVENTS && !matches!(e, PlayerEvent::Closed { .. }) {
            return;
        }
        self.events.push_back(e);
    }

    /// Opens a P2P NetStream's control flow (TC, a new non-zero stream ID, no
    /// association) and sends `play(name)` on it; returns the stream ID.
    pub fn play(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        name: &str,
    ) -> Result<u32, rtmfp::Error> {
        if self.streams.len() >= MAX_PEER_STREAMS {
            return Err(rtmfp::Error::TooLarge);
        }
        let stream = self.next_stream;
        self.next_stream = self.next_stream.checked_add(1).unwrap_or(1);
        let m = encode(
            0,
            &Body::command(Command::new("play", 0.0, Value::Null).with_arg(name)),
        )?;
        let md = FlowMetadata::new(stream).encode();
        let f = ep.open_flow(now, self.session, &md, None, Priority::IMMEDIATE)?;
        ep.send(now, self.session, f, m, None)?;
        self.streams.push(PlayStream {
            stream,
            control: f,
            recv: Vec::new(),
        });
        Ok(stream)
    }

    /// Stops playing: closes the stream's control flow (§5.4.3). Reports
    /// [`PlayerEvent::Closed`].
    pub fn close(&mut self, ep: &mut Endpoint, now: Instant, stream: u32) {
        if let Some(i) = self.streams.iter().position(|s| s.stream == stream) {
            let s = self.streams.swap_remove(i);
            let _ = ep.close_flow(now, self.session, s.control);
            self.push(PlayerEvent::Closed {
                stream,
                rejected: false,
            });
        }
    }

    fn by_recv(&self, flow: u64) -> Option<u32> {
        self.streams
            .iter()
            .find(|s| s.recv.contains(&flow))
            .map(|s| s.stream)
    }

    /// Feeds an engine event. Returns whether it belonged to this player
    /// (flows associated to one of its control flows, its control flows).
    pub fn on_event(&mut self, ep: &mut Endpoint, now: Instant, event: &Event) -> bool {
        match *event {
            Event::IncomingFlow {
                session,
                flow,
                ref metadata,
                association: Some(assoc),
            } if session == self.session => {
                let Some(i) = self.streams.iter().position(|s| s.control == assoc) else {
                    return false;
                };
                let md = FlowMetadata::decode(metadata).ok();
                let ok = md.is_some_and(|md| md.stream_id == self.streams[i].stream)
                    && self.streams[i].recv.len() < 8;
                if ok {
                    if md.is_some_and(|md| md.receive_intent == ReceiveIntent::Network) {
                        // live media: deliver in arrival order, never wait for a gap
                        let _ = ep.set_recv_flow_options(session, flow, Some(false), None, None);
                    }
                    self.streams[i].recv.push(flow);
                } else {
                    let _ = ep.reject_flow(now, session, flow, 0);
                }
                true
            }
            Event::Readable { session, flow } if session == self.session => {
                let Some(stream) = self.by_recv(flow) else {
                    return false;
                };
                while let Some(m) = ep.read(now, session, flow) {
                    if let Ok(msg) = RtmpMessage::decode(&m.data) {
                        self.on_message(stream, msg);
                    }
                }
                true
            }
            Event::RecvFlowComplete { session, flow } if session == self.session => {
                if self.by_recv(flow).is_none() {
                    return false;
                }
                for s in &mut self.streams {
                    s.recv.retain(|f| *f != flow);
                }
                true
            }
            Event::SendFlowException { session, flow, .. } if session == self.session => {
                let Some(i) = self.streams.iter().position(|s| s.control == flow) else {
                    return false;
                };
                let s = self.streams.swap_remove(i);
                let _ = ep.close_flow(now, session, s.control);
                self.push(PlayerEvent::Closed {
                    stream: s.stream,
                    rejected: true,
                });
                true
            }
            Event::SendFlowComplete { session, flow } if session == self.session => {
                self.streams.iter().any(|s| s.control == flow)
            }
            Event::SessionClosed { session, .. } | Event::SessionFailed { session, .. }
                if session == self.session =>
            {
                for s in std::mem::take(&mut self.streams) {
                    self.push(PlayerEvent::Closed {
                        stream: s.stream,
                        rejected: false,
                    });
                }
                true
            }
            _ => false,
        }
    }

    fn on_message(&mut self, stream: u32, msg: RtmpMessage) {
        let media = matches!(msg.message_type, MSG_AUDIO | MSG_VIDEO);
        if msg.is_chunk_control() || (!media && msg.payload.len() > MAX_COMMAND_SIZE) {
            return;
        }
        let timestamp = msg.timestamp;
        let e = match msg.body() {
            Ok(Body::Audio(payload)) => PlayerEvent::Audio {
                stream,
                timestamp,
                payload,
            },
            Ok(Body::Video(payload)) => PlayerEvent::Video {
                stream,
                timestamp,
                payload,
            },
            Ok(Body::Data { message, .. }) => PlayerEvent::Data {
                stream,
                timestamp,
                message,
            },
            Ok(Body::UserControl(UserControl::StreamBegin(_))) => {
                PlayerEvent::StreamBegin { stream }
            }
            Ok(Body::Command { command, .. }) if command.name == "onStatus" => {
                let info = command.arguments.into_iter().next().unwrap_or(Value::Null);
                PlayerEvent::Status {
                    stream,
                    status: Status::from_value(info),
                }
            }
            _ => return,
        };
        self.push(e);
    }
}
