//! The machine behind the session and flow handles: the engine plus the
//! per-session state the handles see, run on a [`Host`](crate::Host).
//!
//! See the crate documentation for the handles' guarantees.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtmfp::{CloseReason, Event, Machine, Priority, RecvMessage, Role, SessionId, SessionInfo};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, trace};

use crate::config::DriverConfig;
use crate::error::Error;
use crate::host::{HostHandle, WeakHostHandle};
use crate::EndpointEvent;

/// Accounting overhead of one queued message, so that floods of tiny
/// messages are bounded too.
pub(crate) const MESSAGE_OVERHEAD: usize = 64;

/// Most messages moved from the engine to one flow handle per pump.
const READS_PER_PUMP: usize = 1024;
/// Most flows pumped from the backlog per turn.
const BACKLOG_BUDGET: usize = 256;

/// A request from a handle to the driver.
pub(crate) enum Command {
    Connect {
        epd: Vec<u8>,
        candidates: Vec<SocketAddr>,
        reply: oneshot::Sender<Result<SessionParts, Error>>,
    },
    OpenFlow {
        session: SessionId,
        metadata: Bytes,
        association: Option<u64>,
        priority: Priority,
        reply: oneshot::Sender<Result<u64, Error>>,
    },
    Send {
        session: SessionId,
        flow: u64,
        data: Bytes,
        lifetime: Option<Duration>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Orderly close of a sending flow; the reply (if any) is sent once
    /// every message was acknowledged.
    CloseFlow {
        session: SessionId,
        flow: u64,
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    },
    /// The receiving flow's handle is gone or rejected it.
    RejectFlow {
        session: SessionId,
        flow: u64,
        /// `None`: the configured default code.
        code: Option<u64>,
        shared: Arc<RecvShared>,
    },
    /// A receiving flow's handle drained below its budget.
    ResumeRead {
        session: SessionId,
        flow: u64,
    },
    CloseSession {
        session: SessionId,
    },
    AbortSession {
        session: SessionId,
    },
    /// Every handle of the session is gone.
    SessionDropped {
        session: SessionId,
    },
    Info {
        session: SessionId,
        reply: oneshot::Sender<Option<SessionInfo>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Command::Connect { .. } => "Connect",
            Command::OpenFlow { .. } => "OpenFlow",
            Command::Send { .. } => "Send",
            Command::CloseFlow { .. } => "CloseFlow",
            Command::RejectFlow { .. } => "RejectFlow",
            Command::ResumeRead { .. } => "ResumeRead",
            Command::CloseSession { .. } => "CloseSession",
            Command::AbortSession { .. } => "AbortSession",
            Command::SessionDropped { .. } => "SessionDropped",
            Command::Info { .. } => "Info",
            Command::Shutdown { .. } => "Shutdown",
        };
        f.write_str(name)
    }
}

/// What a session handle observes of its session.
#[derive(Debug, Clone)]
pub(crate) struct SessionStatus {
    pub(crate) peer: SocketAddr,
    pub(crate) closed: Option<CloseReason>,
}

/// Everything a [`Session`](crate::Session) handle is built from.
#[derive(Debug)]
pub(crate) struct SessionParts {
    pub(crate) id: SessionId,
    pub(crate) role: Role,
    pub(crate) status: watch::Receiver<SessionStatus>,
    pub(crate) incoming: mpsc::Receiver<RecvParts>,
    pub(crate) closer: SessionCloser,
}

/// Closes a session when dropped: the last owner of a session's handles
/// (or its undelivered parts, e.g. when a `connect` future was dropped)
/// holds it.
#[derive(Debug)]
pub(crate) struct SessionCloser {
    id: SessionId,
    cmd: HostHandle<Driver>,
}

impl Drop for SessionCloser {
    fn drop(&mut self) {
        // Fails only when the driver is gone, which closed the session anyway.
        let _ = self
            .cmd
            .send_soon(Command::SessionDropped { session: self.id });
    }
}

/// Everything a [`RecvFlow`](crate::RecvFlow) handle is built from.
#[derive(Debug)]
pub(crate) struct RecvParts {
    pub(crate) session: SessionId,
    pub(crate) flow: u64,
    pub(crate) metadata: Bytes,
    pub(crate) association: Option<u64>,
    pub(crate) rx: mpsc::UnboundedReceiver<RecvMessage>,
    pub(crate) shared: Arc<RecvShared>,
}

/// State of a receiving flow shared between the driver and its handle.
#[derive(Debug)]
pub(crate) struct RecvShared {
    /// Bytes (plus per-message overhead) queued toward the handle.
    pub(crate) buffered: AtomicUsize,
    /// The budget of `buffered`.
    pub(crate) limit: usize,
    /// The far end finished the flow and everything was delivered.
    pub(crate) finished: AtomicBool,
}

#[derive(Debug)]
struct RecvState {
    tx: mpsc::UnboundedSender<RecvMessage>,
    shared: Arc<RecvShared>,
}

#[derive(Debug)]
struct PendingSend {
    data: Bytes,
    lifetime: Option<Duration>,
    reply: oneshot::Sender<Result<(), Error>>,
}

#[derive(Debug, Default)]
struct SendState {
    /// Messages the engine refused (send buffer full), in order.
    pending: VecDeque<PendingSend>,
    exception: Option<u64>,
    close_requested: bool,
    close_issued: bool,
    close_waiters: Vec<oneshot::Sender<Result<(), Error>>>,
}

#[derive(Debug)]
struct SessionState {
    status: watch::Sender<SessionStatus>,
    incoming: mpsc::Sender<RecvParts>,
    recv: HashMap<u64, RecvState>,
    send: HashMap<u64, SendState>,
}

#[derive(Debug)]
struct ShutdownState {
    deadline: Instant,
    waiters: Vec<oneshot::Sender<()>>,
    /// Sessions we asked to close.
    closing: Vec<SessionId>,
}

/// The handle API's machine: owns the engine and the per-session state
/// behind the handles; runs on a [`Host`](crate::Host).
pub(crate) struct Driver {
    engine: rtmfp::Endpoint,
    cfg: DriverConfig,
    /// To ourselves, weak, so that the channel closes when every handle is
    /// gone; session closers hold strong ones.
    me: WeakHostHandle<Driver>,
    accept_tx: mpsc::Sender<SessionParts>,
    events_tx: broadcast::Sender<EndpointEvent>,
    sessions: HashMap<SessionId, SessionState>,
    connecting: HashMap<SessionId, oneshot::Sender<Result<SessionParts, Error>>>,
    /// Receiving flows whose pump ran out of budget.
    read_backlog: VecDeque<(SessionId, u64)>,
    shutdown: Option<ShutdownState>,
    /// The shutdown is over: the host may stop.
    done: bool,
    /// The time of the last input.
    last_now: Instant,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("sessions", &self.sessions.len())
            .field("connecting", &self.connecting.len())
            .field("shutting_down", &self.shutdown.is_some())
            .finish_non_exhaustive()
    }
}

impl Machine for Driver {
    type Command = Command;
    /// Events go to the handles, not to the host's owner.
    type Event = std::convert::Infallible;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.engine.handle_datagram(now, from, data);
        self.after_input(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        self.after_input(now);
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        self.on_command(now, command);
        self.after_input(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.engine.poll_transmit(now, buf)
    }

    fn poll_event(&mut self) -> Option<std::convert::Infallible> {
        None
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let engine = self.engine.poll_timeout();
        // A backlog of reads is worked off on the next turn.
        let pending = (!self.read_backlog.is_empty()).then_some(self.last_now);
        let shutdown = self.shutdown.as_ref().map(|s| s.deadline);
        [engine, pending, shutdown].into_iter().flatten().min()
    }

    fn handle_close(&mut self, now: Instant) {
        debug!("all handles dropped; shutting down");
        self.begin_shutdown(now, None);
        self.after_input(now);
    }

    fn is_done(&self) -> Option<bool> {
        Some(self.done)
    }
}

impl Driver {
    pub(crate) fn new(
        engine: rtmfp::Endpoint,
        engine_now: Instant,
        cfg: DriverConfig,
        me: WeakHostHandle<Driver>,
        accept_tx: mpsc::Sender<SessionParts>,
        events_tx: broadcast::Sender<EndpointEvent>,
    ) -> Self {
        Self {
            engine,
            cfg,
            me,
            accept_tx,
            events_tx,
            sessions: HashMap::new(),
            connecting: HashMap::new(),
            read_backlog: VecDeque::new(),
            shutdown: None,
            done: false,
            last_now: engine_now,
        }
    }

    /// The engine, for calls the handles do not wrap.
    pub(crate) fn engine_mut(&mut self) -> &mut rtmfp::Endpoint {
        &mut self.engine
    }

    /// After every input: engine events to the handles, the read backlog,
    /// and the end of a shutdown.
    pub(crate) fn after_input(&mut self, now: Instant) {
        self.last_now = now;
        self.drain_events(now);
        self.drain_read_backlog(now);
        if !self.done {
            self.done = self.shutdown_complete(now);
        }
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(event) = self.engine.poll_event() {
            self.on_event(now, event);
        }
    }

    fn drain_read_backlog(&mut self, now: Instant) {
        for _ in 0..BACKLOG_BUDGET {
            match self.read_backlog.pop_front() {
                Some((session, flow)) => self.pump_recv(now, session, flow),
                None => return,
            }
        }
    }

    fn broadcast(&self, event: EndpointEvent) {
        // No subscriber is not an error.
        let _ = self.events_tx.send(event);
    }

    fn on_event(&mut self, now: Instant, event: Event) {
        trace!(?event, "engine event");
        match event {
            Event::SessionOpened {
                session,
                role,
                peer,
            } => self.on_session_opened(now, session, role, peer),
            Event::SessionFailed { session, error } => {
                if let Some(reply) = self.connecting.remove(&session) {
                    let _ = reply.send(Err(Error::Open(error.clone())));
                }
                self.broadcast(EndpointEvent::SessionFailed { session, error });
            }
            Event::SessionClosed { session, reason } => {
                if let Some(reply) = self.connecting.remove(&session) {
                    let _ = reply.send(Err(Error::SessionClosed));
                }
                if let Some(state) = self.sessions.remove(&session) {
                    close_session_state(state, reason.clone());
                }
                self.broadcast(EndpointEvent::SessionClosed { session, reason });
            }
            Event::IncomingFlow {
                session,
                flow,
                metadata,
                association,
            } => self.on_incoming_flow(now, session, flow, metadata, association),
            Event::Readable { session, flow } => self.pump_recv(now, session, flow),
            Event::RecvFlowComplete { session, flow } => {
                if let Some(state) = self
                    .sessions
                    .get_mut(&session)
                    .and_then(|s| s.recv.remove(&flow))
                {
                    state.shared.finished.store(true, Ordering::Release);
                    // Dropping the sender ends the handle's stream once it
                    // has taken every queued message.
                }
            }
            Event::SendFlowException {
                session,
                flow,
                code,
            } => {
                let Some(sess) = self.sessions.get_mut(&session) else {
                    return;
                };
                if let Some(state) = sess.send.get_mut(&flow) {
                    state.exception = Some(code);
                    for p in state.pending.drain(..) {
                        let _ = p.reply.send(Err(Error::FlowRejected(code)));
                    }
                    for w in state.close_waiters.drain(..) {
                        let _ = w.send(Err(Error::FlowRejected(code)));
                    }
                    if state.close_requested {
                        // The handle is closing or gone: nothing more will
                        // be asked of this flow.
                        sess.send.remove(&flow);
                    }
                }
            }
            Event::SendFlowComplete { session, flow } => {
                if let Some(state) = self
                    .sessions
                    .get_mut(&session)
                    .and_then(|s| s.send.remove(&flow))
                {
                    let result = match state.exception {
                        Some(code) => Err(Error::FlowRejected(code)),
                        None => Ok(()),
                    };
                    for p in state.pending {
                        let _ = p.reply.send(Err(Error::FlowClosed));
                    }
                    for w in state.close_waiters {
                        let _ = w.send(result.clone());
                    }
                }
            }
            Event::Writable { session, flow } => self.retry_sends(now, session, flow),
            Event::AddressChanged { session, old, new } => {
                if let Some(state) = self.sessions.get(&session) {
                    state.status.send_modify(|s| s.peer = new);
                }
                self.broadcast(EndpointEvent::AddressChanged { session, old, new });
            }
            Event::IHelloForOther { from, epd, tag } => {
                self.broadcast(EndpointEvent::IHelloForOther { from, epd, tag });
            }
            other => trace!(?other, "unhandled engine event"),
        }
    }

    fn on_session_opened(
        &mut self,
        now: Instant,
        session: SessionId,
        role: Role,
        peer: SocketAddr,
    ) {
        self.broadcast(EndpointEvent::SessionOpened {
            session,
            role,
            peer,
        });
        // No strong sender left means no handle is left: nobody could use
        // the session (and the driver is about to shut down).
        let cmd = match self.me.upgrade() {
            Some(cmd) if self.shutdown.is_none() => cmd,
            _ => {
                if let Some(reply) = self.connecting.remove(&session) {
                    let _ = reply.send(Err(Error::EndpointClosed));
                }
                self.engine.close_session(now, session);
                if let Some(s) = self.shutdown.as_mut() {
                    s.closing.push(session);
                }
                return;
            }
        };
        let (status_tx, status_rx) = watch::channel(SessionStatus { peer, closed: None });
        let (in_tx, in_rx) = mpsc::channel(self.cfg.incoming_flow_backlog.max(1));
        self.sessions.insert(
            session,
            SessionState {
                status: status_tx,
                incoming: in_tx,
                recv: HashMap::new(),
                send: HashMap::new(),
            },
        );
        let parts = SessionParts {
            id: session,
            role,
            status: status_rx,
            incoming: in_rx,
            closer: SessionCloser { id: session, cmd },
        };
        // If the parts cannot be delivered they are dropped, and their
        // closer asks us to close the session.
        if let Some(reply) = self.connecting.remove(&session) {
            if reply.send(Ok(parts)).is_err() {
                debug!(?session, "connect caller went away; closing the session");
            }
            return;
        }
        // An incoming session (or one begun through `with_engine`).
        if let Err(e) = self.accept_tx.try_send(parts) {
            debug!(
                ?session,
                "cannot queue the incoming session ({e}); closing it"
            );
        }
    }

    fn on_incoming_flow(
        &mut self,
        now: Instant,
        session: SessionId,
        flow: u64,
        metadata: Bytes,
        association: Option<u64>,
    ) {
        let Some(state) = self.sessions.get_mut(&session) else {
            let _ = self
                .engine
                .reject_flow(now, session, flow, self.cfg.reject_code);
            return;
        };
        let shared = Arc::new(RecvShared {
            buffered: AtomicUsize::new(0),
            limit: self.cfg.recv_flow_buffer.max(1),
            finished: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let parts = RecvParts {
            session,
            flow,
            metadata,
            association,
            rx,
            shared: shared.clone(),
        };
        match state.incoming.try_send(parts) {
            Ok(()) => {
                state.recv.insert(flow, RecvState { tx, shared });
            }
            Err(e) => {
                debug!(
                    ?session,
                    flow, "cannot queue the incoming flow ({e}); rejecting it"
                );
                let _ = self
                    .engine
                    .reject_flow(now, session, flow, self.cfg.reject_code);
            }
        }
    }

    /// Moves messages of one receiving flow from the engine to its handle
    /// while the handle's budget allows.
    fn pump_recv(&mut self, now: Instant, session: SessionId, flow: u64) {
        let Some(sess) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(state) = sess.recv.get_mut(&flow) else {
            return;
        };
        for _ in 0..READS_PER_PUMP {
            if state.shared.buffered.load(Ordering::Acquire) >= state.shared.limit {
                // The handle will send ResumeRead when it drains.
                return;
            }
            let Some(msg) = self.engine.read(now, session, flow) else {
                return;
            };
            let cost = msg.data.len() + MESSAGE_OVERHEAD;
            state.shared.buffered.fetch_add(cost, Ordering::AcqRel);
            if state.tx.send(msg).is_err() {
                // Nobody will ever read this flow.
                debug!(
                    ?session,
                    flow, "receiving flow handle gone; rejecting the flow"
                );
                sess.recv.remove(&flow);
                let _ = self
                    .engine
                    .reject_flow(now, session, flow, self.cfg.reject_code);
                return;
            }
        }
        self.read_backlog.push_back((session, flow));
    }

    /// Retries the sends of a flow the engine refused earlier.
    fn retry_sends(&mut self, now: Instant, session: SessionId, flow: u64) {
        let Some(state) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.send.get_mut(&flow))
        else {
            return;
        };
        let n = state.pending.len();
        for _ in 0..n {
            let Some(p) = state.pending.pop_front() else {
                break;
            };
            if p.reply.is_closed() {
                // The caller gave up on this message (its future was dropped).
                continue;
            }
            match self
                .engine
                .send(now, session, flow, p.data.clone(), p.lifetime)
            {
                Ok(()) => {
                    let _ = p.reply.send(Ok(()));
                }
                Err(rtmfp::Error::WouldBlock) => {
                    state.pending.push_front(p);
                    return;
                }
                Err(e) => {
                    let _ = p.reply.send(Err(Error::from_engine(e)));
                }
            }
        }
        if state.close_requested && !state.close_issued {
            state.close_issued = true;
            if let Err(e) = self.engine.close_flow(now, session, flow) {
                let e = Error::from_engine(e);
                for w in state.close_waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
            }
        }
    }

    fn on_command(&mut self, now: Instant, cmd: Command) {
        trace!(?cmd, "command");
        match cmd {
            Command::Connect {
                epd,
                candidates,
                reply,
            } => {
                if self.shutdown.is_some() {
                    let _ = reply.send(Err(Error::EndpointClosed));
                    return;
                }
                match self.engine.connect(now, &epd, &candidates) {
                    Ok(session) => {
                        self.connecting.insert(session, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::from_engine(e)));
                    }
                }
            }
            Command::OpenFlow {
                session,
                metadata,
                association,
                priority,
                reply,
            } => {
                let Some(state) = self.sessions.get_mut(&session) else {
                    let _ = reply.send(Err(Error::SessionClosed));
                    return;
                };
                let result = self
                    .engine
                    .open_flow(now, session, &metadata, association, priority)
                    .map_err(Error::from_engine);
                if let Ok(flow) = result {
                    state.send.insert(flow, SendState::default());
                }
                let _ = reply.send(result);
            }
            Command::Send {
                session,
                flow,
                data,
                lifetime,
                reply,
            } => self.on_send(now, session, flow, data, lifetime, reply),
            Command::CloseFlow {
                session,
                flow,
                reply,
            } => self.on_close_flow(now, session, flow, reply),
            Command::RejectFlow {
                session,
                flow,
                code,
                shared,
            } => {
                let Some(sess) = self.sessions.get_mut(&session) else {
                    return;
                };
                if sess
                    .recv
                    .get(&flow)
                    .is_some_and(|s| Arc::ptr_eq(&s.shared, &shared))
                {
                    sess.recv.remove(&flow);
                    let code = code.unwrap_or(self.cfg.reject_code);
                    let _ = self.engine.reject_flow(now, session, flow, code);
                }
            }
            Command::ResumeRead { session, flow } => self.pump_recv(now, session, flow),
            Command::CloseSession { session } | Command::SessionDropped { session } => {
                if self.sessions.contains_key(&session) {
                    self.engine.close_session(now, session);
                }
            }
            Command::AbortSession { session } => {
                if self.sessions.contains_key(&session) {
                    self.engine.abort_session(now, session);
                }
            }
            Command::Info { session, reply } => {
                let _ = reply.send(self.engine.session_info(session));
            }
            Command::Shutdown { reply } => self.begin_shutdown(now, Some(reply)),
        }
    }

    fn on_send(
        &mut self,
        now: Instant,
        session: SessionId,
        flow: u64,
        data: Bytes,
        lifetime: Option<Duration>,
        reply: oneshot::Sender<Result<(), Error>>,
    ) {
        let Some(sess) = self.sessions.get_mut(&session) else {
            let _ = reply.send(Err(Error::SessionClosed));
            return;
        };
        let Some(state) = sess.send.get_mut(&flow) else {
            let _ = reply.send(Err(Error::FlowClosed));
            return;
        };
        if let Some(code) = state.exception {
            let _ = reply.send(Err(Error::FlowRejected(code)));
            return;
        }
        if state.close_requested {
            let _ = reply.send(Err(Error::FlowClosed));
            return;
        }
        if !state.pending.is_empty() {
            state.pending.push_back(PendingSend {
                data,
                lifetime,
                reply,
            });
            return;
        }
        match self.engine.send(now, session, flow, data.clone(), lifetime) {
            Ok(()) => {
                let _ = reply.send(Ok(()));
            }
            Err(rtmfp::Error::WouldBlock) => {
                // Answered when the engine reports the flow writable.
                state.pending.push_back(PendingSend {
                    data,
                    lifetime,
                    reply,
                });
            }
            Err(e) => {
                let _ = reply.send(Err(Error::from_engine(e)));
            }
        }
    }

    fn on_close_flow(
        &mut self,
        now: Instant,
        session: SessionId,
        flow: u64,
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    ) {
        let Some(sess) = self.sessions.get_mut(&session) else {
            if let Some(r) = reply {
                let _ = r.send(Err(Error::SessionClosed));
            }
            return;
        };
        let Some(state) = sess.send.get_mut(&flow) else {
            // Already complete.
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        };
        if let Some(code) = state.exception {
            if let Some(r) = reply {
                let _ = r.send(Err(Error::FlowRejected(code)));
            }
            if state.pending.is_empty() && state.close_waiters.is_empty() {
                // Nothing more can happen on this flow; forget it.
                sess.send.remove(&flow);
                let _ = self.engine.close_flow(now, session, flow);
            }
            return;
        }
        if let Some(r) = reply {
            state.close_waiters.push(r);
        }
        if state.close_requested {
            return;
        }
        state.close_requested = true;
        if state.pending.is_empty() {
            state.close_issued = true;
            if let Err(e) = self.engine.close_flow(now, session, flow) {
                let e = Error::from_engine(e);
                for w in state.close_waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant, reply: Option<oneshot::Sender<()>>) {
        if let Some(s) = self.shutdown.as_mut() {
            s.waiters.extend(reply);
            return;
        }
        debug!(sessions = self.sessions.len(), "shutting down");
        let mut closing: Vec<SessionId> = self.sessions.keys().copied().collect();
        for &session in &closing {
            self.engine.close_session(now, session);
        }
        for (session, reply) in self.connecting.drain() {
            let _ = reply.send(Err(Error::EndpointClosed));
            self.engine.abort_session(now, session);
            closing.push(session);
        }
        self.shutdown = Some(ShutdownState {
            deadline: now + self.cfg.shutdown_timeout,
            waiters: reply.into_iter().collect(),
            closing,
        });
    }

    /// Whether a shutdown in progress is over: every session we closed is
    /// gone from the engine, or the deadline passed (then the rest are
    /// aborted).
    fn shutdown_complete(&mut self, now: Instant) -> bool {
        let Some(s) = self.shutdown.as_ref() else {
            return false;
        };
        let all_closed = s
            .closing
            .iter()
            .all(|&id| self.engine.session_info(id).is_none());
        if !all_closed && now < s.deadline {
            return false;
        }
        let closing = s.closing.clone();
        for id in closing {
            if self.engine.session_info(id).is_some() {
                self.engine.abort_session(now, id);
            }
        }
        self.drain_events(now);
        true
    }
}

impl Drop for Driver {
    /// Once the host has stopped: every handle learns that the endpoint is
    /// gone.
    fn drop(&mut self) {
        for (_, reply) in self.connecting.drain() {
            let _ = reply.send(Err(Error::EndpointClosed));
        }
        for (_, state) in self.sessions.drain() {
            close_session_state(state, CloseReason::Aborted);
        }
        if let Some(s) = self.shutdown.take() {
            for w in s.waiters {
                let _ = w.send(());
            }
        }
        debug!("endpoint driver stopped");
    }
}

/// Tells the handles of a closed session that it is closed.
fn close_session_state(state: SessionState, reason: CloseReason) {
    for (_, s) in state.send {
        for p in s.pending {
            let _ = p.reply.send(Err(Error::SessionClosed));
        }
        for w in s.close_waiters {
            let _ = w.send(Err(Error::SessionClosed));
        }
    }
    // Dropping the receiving flows' senders ends their streams.
    drop(state.recv);
    state.status.send_modify(|s| {
        if s.closed.is_none() {
            s.closed = Some(reason);
        }
    });
}
