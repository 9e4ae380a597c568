//! The driver task: the single owner of the engine and the socket.
//!
//! See the crate documentation for the shape of the loop.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtmfp::{CloseReason, Event, Priority, RecvMessage, Role, SessionId, SessionInfo};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, trace, warn};

use crate::config::DriverConfig;
use crate::error::Error;
use crate::socket::{Flush, IoStats, UdpIo};
use crate::EndpointEvent;

/// Accounting overhead of one queued message, so that floods of tiny
/// messages are bounded too.
pub(crate) const MESSAGE_OVERHEAD: usize = 64;

/// Most datagrams pulled from the engine per flush.
const TRANSMIT_BUDGET: usize = 1024;
/// Most receive batches per socket wake-up.
const RECV_BATCHES_PER_WAKE: usize = 8;
/// Most engine events handled per turn.
const EVENT_BUDGET: usize = 4096;
/// Most commands handled per wake-up.
const COMMAND_BUDGET: usize = 256;
/// Most messages moved from the engine to one flow handle per pump.
const READS_PER_PUMP: usize = 1024;
/// Most flows pumped from the backlog per turn.
const BACKLOG_BUDGET: usize = 256;

/// A closure run on the engine inside the driver.
pub(crate) type EngineFn = Box<dyn FnOnce(&mut rtmfp::Endpoint, Instant) + Send>;

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
    Stats {
        reply: oneshot::Sender<IoStats>,
    },
    WithEngine(EngineFn),
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
            Command::Stats { .. } => "Stats",
            Command::WithEngine(_) => "WithEngine",
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
    cmd: mpsc::UnboundedSender<Command>,
}

impl Drop for SessionCloser {
    fn drop(&mut self) {
        // Fails only when the driver is gone, which closed the session anyway.
        let _ = self.cmd.send(Command::SessionDropped { session: self.id });
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

/// Why the driver woke up.
enum Wake {
    Command(Option<Command>),
    Readable(std::io::Result<()>),
    Writable(std::io::Result<()>),
    Timer,
    Yield,
}

/// The driver: owns the engine, the socket and the per-session state
/// behind the handles.
pub(crate) struct Driver {
    engine: rtmfp::Endpoint,
    io: UdpIo,
    cfg: DriverConfig,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    /// Weak, so that the channel closes when every handle is gone.
    cmd_tx: mpsc::WeakUnboundedSender<Command>,
    cmd_open: bool,
    accept_tx: mpsc::Sender<SessionParts>,
    events_tx: broadcast::Sender<EndpointEvent>,
    sessions: HashMap<SessionId, SessionState>,
    connecting: HashMap<SessionId, oneshot::Sender<Result<SessionParts, Error>>>,
    /// Receiving flows whose pump ran out of budget.
    read_backlog: VecDeque<(SessionId, u64)>,
    /// More engine events are waiting (the event budget ran out).
    events_pending: bool,
    /// The transmit budget ran out: flush again without waiting.
    transmit_pending: bool,
    /// The socket refused data: wait for writability before flushing.
    tx_blocked: bool,
    shutdown: Option<ShutdownState>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("local", &self.io.local_addr())
            .field("sessions", &self.sessions.len())
            .field("connecting", &self.connecting.len())
            .field("shutting_down", &self.shutdown.is_some())
            .finish_non_exhaustive()
    }
}

/// The current time on tokio's clock, as the engine wants it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    pub(crate) fn new(
        engine: rtmfp::Endpoint,
        io: UdpIo,
        cfg: DriverConfig,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        cmd_tx: mpsc::WeakUnboundedSender<Command>,
        accept_tx: mpsc::Sender<SessionParts>,
        events_tx: broadcast::Sender<EndpointEvent>,
    ) -> Self {
        Self {
            engine,
            io,
            cfg,
            cmd_rx,
            cmd_tx,
            cmd_open: true,
            accept_tx,
            events_tx,
            sessions: HashMap::new(),
            connecting: HashMap::new(),
            read_backlog: VecDeque::new(),
            events_pending: false,
            transmit_pending: false,
            tx_blocked: false,
            shutdown: None,
        }
    }

    /// Runs until shut down (explicitly, or because every handle is gone).
    pub(crate) async fn run(mut self) {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let now = now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            self.drain_events(now);
            self.drain_read_backlog(now);
            self.flush(now);
            if self.shutdown_complete(now) {
                break;
            }

            let deadline = match (self.engine.poll_timeout(), self.shutdown.as_ref()) {
                (Some(t), Some(s)) => Some(t.min(s.deadline)),
                (t, s) => t.or(s.map(|s| s.deadline)),
            };
            if deadline != armed {
                if let Some(d) = deadline {
                    sleep.as_mut().reset(tokio::time::Instant::from_std(d));
                }
                armed = deadline;
            }
            let busy =
                self.events_pending || self.transmit_pending || !self.read_backlog.is_empty();

            let wake = tokio::select! {
                cmd = self.cmd_rx.recv(), if self.cmd_open => Wake::Command(cmd),
                r = self.io.readable() => Wake::Readable(r),
                r = self.io.writable(), if self.tx_blocked => Wake::Writable(r),
                () = &mut sleep, if armed.is_some() => Wake::Timer,
                () = tokio::task::yield_now(), if busy => Wake::Yield,
            };

            let now = self::now();
            match wake {
                Wake::Command(Some(cmd)) => {
                    self.on_command(now, cmd);
                    for _ in 0..COMMAND_BUDGET {
                        match self.cmd_rx.try_recv() {
                            Ok(cmd) => self.on_command(now, cmd),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Command(None) => {
                    // Every handle is gone: nobody can use the endpoint.
                    debug!("all handles dropped; shutting down");
                    self.cmd_open = false;
                    self.begin_shutdown(now, None);
                }
                Wake::Readable(Ok(())) => self.receive(now),
                Wake::Readable(Err(e)) | Wake::Writable(Err(e)) => {
                    warn!("socket readiness error: {e}");
                }
                Wake::Writable(Ok(())) => self.tx_blocked = false,
                Wake::Timer => armed = None,
                Wake::Yield => {}
            }
        }
        self.finish();
    }

    /// Reads a few batches of datagrams and feeds them to the engine.
    fn receive(&mut self, now: Instant) {
        let engine = &mut self.engine;
        for _ in 0..RECV_BATCHES_PER_WAKE {
            match self
                .io
                .try_recv(|from, data| engine.handle_datagram(now, from, data))
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // e.g. ICMP errors surfaced on some platforms; not fatal.
                    debug!("receive failed: {e}");
                    break;
                }
            }
        }
    }

    /// Moves the engine's datagrams to the socket until it has no more, the
    /// socket is full, or the budget runs out.
    fn flush(&mut self, now: Instant) {
        if self.tx_blocked {
            return;
        }
        let engine = &mut self.engine;
        let outcome = self
            .io
            .flush(TRANSMIT_BUDGET, |buf| engine.poll_transmit(now, buf));
        self.tx_blocked = outcome == Flush::Blocked;
        self.transmit_pending = outcome == Flush::Budget;
    }

    fn drain_events(&mut self, now: Instant) {
        self.events_pending = false;
        for _ in 0..EVENT_BUDGET {
            match self.engine.poll_event() {
                Some(event) => self.on_event(now, event),
                None => return,
            }
        }
        self.events_pending = true;
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
        let cmd = match self.cmd_tx.upgrade() {
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
            Command::Stats { reply } => {
                let _ = reply.send(self.io.stats());
            }
            Command::WithEngine(f) => f(&mut self.engine, now),
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
        self.tx_blocked = false;
        self.flush(now);
        true
    }

    /// Final cleanup once the loop is over: every handle learns that the
    /// endpoint is gone.
    fn finish(self) {
        let Driver {
            engine,
            io,
            sessions,
            connecting,
            shutdown,
            ..
        } = self;
        for (_, reply) in connecting {
            let _ = reply.send(Err(Error::EndpointClosed));
        }
        for (_, state) in sessions {
            close_session_state(state, CloseReason::Aborted);
        }
        drop(io);
        drop(engine);
        if let Some(s) = shutdown {
            for w in s.waiters {
                let _ = w.send(());
            }
        }
        debug!("driver stopped");
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
