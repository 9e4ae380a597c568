//! [`Host`]: the one I/O loop under every [`Machine`].
//!
//! See the crate documentation for the loop and its guarantees.

use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rtmfp::Machine;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace, warn};

use crate::socket::{canonical, Counters, IoStats, UdpIo};

/// Most datagrams pulled from the machine per flush.
const TRANSMIT_BUDGET: usize = 1024;
/// Most receive batches per socket wake-up.
const RECV_BATCHES_PER_WAKE: usize = 8;
/// Most machine events forwarded per turn.
const EVENT_BUDGET: usize = 4096;
/// Most commands handled per wake-up.
const COMMAND_BUDGET: usize = 256;
/// Most datagrams held by the impairment stage (beyond: dropped).
const MAX_DELAYED: usize = 16_384;

/// The current time on tokio's clock (so that `tokio::time::pause()` drives
/// hosts in tests), as machines want it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Loss, delay and jitter applied to datagrams a host receives, before its
/// machine sees them: the same seeded impairment for every benchmark and
/// test that wants a worse network than loopback.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairment {
    /// Probability (0..1) that a datagram is dropped.
    pub loss: f64,
    /// Added one-way delay.
    pub delay: Duration,
    /// Added uniform jitter (0..jitter): datagrams may be reordered.
    pub jitter: Duration,
    /// Seed of the loss and jitter decisions.
    pub seed: u64,
    /// Datagrams from these addresses pass untouched (a phone impairs what
    /// comes from peers, not from its server).
    pub exempt: Vec<SocketAddr>,
}

impl Impairment {
    /// Loss only.
    pub fn loss(loss: f64, seed: u64) -> Self {
        Self {
            loss,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            seed,
            exempt: Vec::new(),
        }
    }
}

/// Tunables of a [`Host`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostConfig {
    /// Commands waiting for the machine; senders wait beyond it.
    pub command_capacity: usize,
    /// Events waiting for their consumer; beyond it the host stops polling
    /// the machine's events until the consumer catches up.
    pub event_capacity: usize,
    /// Requested kernel send and receive buffer of each socket (best
    /// effort). `None` keeps the system default.
    pub socket_buffer: Option<usize>,
    /// Datagrams (or GRO super-datagrams) one receive call takes; smaller
    /// saves memory in processes that run many hosts.
    pub recv_batch: usize,
    /// Impair what the host receives.
    pub impairment: Option<Impairment>,
    /// Longest the host keeps running a closing machine that does not say
    /// it is done.
    pub close_timeout: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            command_capacity: 1024,
            event_capacity: 1024,
            socket_buffer: Some(2 * 1024 * 1024),
            recv_batch: quinn_udp::BATCH_SIZE,
            impairment: None,
            close_timeout: Duration::from_secs(10),
        }
    }
}

impl HostConfig {
    /// With this impairment of received datagrams.
    pub fn impairment(mut self, impairment: Option<Impairment>) -> Self {
        self.impairment = impairment;
        self
    }

    /// With this number of datagrams per receive call.
    pub fn recv_batch(mut self, n: usize) -> Self {
        self.recv_batch = n;
        self
    }

    /// With this kernel buffer size per socket.
    pub fn socket_buffer(mut self, bytes: Option<usize>) -> Self {
        self.socket_buffer = bytes;
        self
    }

    /// With room for this many commands and events.
    pub fn capacity(mut self, commands: usize, events: usize) -> Self {
        self.command_capacity = commands;
        self.event_capacity = events;
        self
    }
}

/// A call made on the machine inside its host.
type MachineFn<M> = Box<dyn FnOnce(&mut M, Instant) + Send>;

/// What a handle sends its host.
enum HostMsg<M: Machine> {
    Command(M::Command),
    With(MachineFn<M>),
    Close,
}

/// State shared by a host and its handles.
#[derive(Debug, Default)]
struct HostShared {
    local: OnceLock<Vec<SocketAddr>>,
    counters: Counters,
}

/// A cheap, cloneable handle to a [`Host`]: sends its machine commands and
/// calls, reads its counters.
pub struct HostHandle<M: Machine> {
    tx: mpsc::Sender<HostMsg<M>>,
    shared: Arc<HostShared>,
}

impl<M: Machine> Clone for HostHandle<M> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<M: Machine> std::fmt::Debug for HostHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostHandle")
            .field("local", &self.shared.local.get())
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

/// The host has stopped: nothing can reach its machine any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the host has stopped")]
pub struct HostClosed;

/// Why [`HostHandle::try_send`] failed; the command comes back.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// The command channel is full.
    #[error("the host's command channel is full")]
    Full(T),
    /// The host has stopped.
    #[error("the host has stopped")]
    Closed(T),
}

impl<T> std::fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<M: Machine> HostHandle<M> {
    /// Sends a command, waiting while the host's channel is full.
    ///
    /// # Errors
    /// [`HostClosed`] when the host has stopped.
    pub async fn send(&self, command: M::Command) -> Result<(), HostClosed> {
        self.tx
            .send(HostMsg::Command(command))
            .await
            .map_err(|_| HostClosed)
    }

    /// Sends a command unless the channel is full.
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Closed`].
    pub fn try_send(&self, command: M::Command) -> Result<(), TrySendError<M::Command>> {
        let unwrap = |m: HostMsg<M>| match m {
            HostMsg::Command(c) => c,
            _ => unreachable!("only commands are sent here"),
        };
        self.tx
            .try_send(HostMsg::Command(command))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(m) => TrySendError::Full(unwrap(m)),
                mpsc::error::TrySendError::Closed(m) => TrySendError::Closed(unwrap(m)),
            })
    }

    /// Sends a command from synchronous code (a `Drop`, say): at once when
    /// the channel has room, otherwise from a task that waits for room (or
    /// not at all outside a runtime). Commands sent this way may overtake
    /// each other when the channel is full.
    ///
    /// # Errors
    /// [`HostClosed`] when the host has stopped.
    pub fn send_soon(&self, command: M::Command) -> Result<(), HostClosed>
    where
        M::Command: Send + 'static,
        M: 'static,
    {
        match self.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(HostClosed),
            Err(TrySendError::Full(c)) => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let tx = self.tx.clone();
                    rt.spawn(async move {
                        let _ = tx.send(HostMsg::Command(c)).await;
                    });
                }
                Ok(())
            }
        }
    }

    /// Sends a command from a thread outside the runtime, blocking while
    /// the channel is full (must not be called from async code).
    ///
    /// # Errors
    /// [`HostClosed`] when the host has stopped.
    pub fn blocking_send(&self, command: M::Command) -> Result<(), HostClosed> {
        self.tx
            .blocking_send(HostMsg::Command(command))
            .map_err(|_| HostClosed)
    }

    /// Runs `f` on the machine inside the host, at the host's `now`, and
    /// returns its result. Whatever the call makes the machine send or
    /// report is handled afterwards as after any input.
    ///
    /// # Errors
    /// [`HostClosed`] when the host has stopped.
    pub async fn with<R, F>(&self, f: F) -> Result<R, HostClosed>
    where
        F: FnOnce(&mut M, Instant) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let call: MachineFn<M> = Box::new(move |m, now| {
            let _ = reply.send(f(m, now));
        });
        self.tx
            .send(HostMsg::With(call))
            .await
            .map_err(|_| HostClosed)?;
        rx.await.map_err(|_| HostClosed)
    }

    /// Asks the machine to wind down ([`Machine::handle_close`]); the host
    /// stops when the machine is done. Resolves once the request is queued.
    pub async fn close(&self) {
        let _ = self.tx.send(HostMsg::Close).await;
    }

    /// Waits until the host has stopped.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Whether the host has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The host's socket addresses (empty until the host is built).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shared.local.get().cloned().unwrap_or_default()
    }

    /// The host's first socket address.
    ///
    /// # Panics
    /// Never for a handle returned with its host: a host has at least one
    /// socket. A handle from [`HostChannel::handle`] whose host is not built
    /// yet returns the unspecified IPv4 address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Counters of the host's sockets.
    pub fn stats(&self) -> IoStats {
        self.shared.counters.snapshot()
    }

    /// A handle that does not keep the host's command channel open.
    pub fn downgrade(&self) -> WeakHostHandle<M> {
        WeakHostHandle {
            tx: self.tx.downgrade(),
            shared: self.shared.clone(),
        }
    }
}

/// A [`HostHandle`] that does not keep the host's channel open (a machine
/// may hold one to itself).
pub struct WeakHostHandle<M: Machine> {
    tx: mpsc::WeakSender<HostMsg<M>>,
    shared: Arc<HostShared>,
}

impl<M: Machine> Clone for WeakHostHandle<M> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<M: Machine> std::fmt::Debug for WeakHostHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakHostHandle")
    }
}

impl<M: Machine> WeakHostHandle<M> {
    /// The handle, while some strong handle exists.
    pub fn upgrade(&self) -> Option<HostHandle<M>> {
        Some(HostHandle {
            tx: self.tx.upgrade()?,
            shared: self.shared.clone(),
        })
    }
}

/// The command channel of a host not built yet, so that handles can exist
/// before their host (machines that know each other, like server shards).
pub struct HostChannel<M: Machine> {
    handle: HostHandle<M>,
    rx: mpsc::Receiver<HostMsg<M>>,
}

impl<M: Machine> std::fmt::Debug for HostChannel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostChannel")
    }
}

impl<M: Machine> HostChannel<M> {
    /// A channel with room for `capacity` commands.
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Self {
            handle: HostHandle {
                tx,
                shared: Arc::new(HostShared::default()),
            },
            rx,
        }
    }

    /// A handle to the host that will be built on this channel.
    pub fn handle(&self) -> HostHandle<M> {
        self.handle.clone()
    }
}

/// A datagram held by the impairment stage.
#[derive(Debug, PartialEq, Eq)]
struct Delayed {
    due: Instant,
    seq: u64,
    from: SocketAddr,
    data: Vec<u8>,
}

impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// The impairment stage's state.
#[derive(Debug)]
struct Impair {
    cfg: Impairment,
    rng: rand::rngs::StdRng,
    delayed: BinaryHeap<Delayed>,
    seq: u64,
}

impl Impair {
    fn new(cfg: Impairment) -> Self {
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(cfg.seed),
            cfg,
            delayed: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Decides the fate of a received datagram: `true` to deliver it now.
    fn admit(&mut self, now: Instant, from: SocketAddr, data: &[u8], counters: &Counters) -> bool {
        if self.cfg.exempt.contains(&from) {
            return true;
        }
        use std::sync::atomic::Ordering::Relaxed;
        if self.cfg.loss > 0.0 && self.rng.gen::<f64>() < self.cfg.loss {
            counters.impaired_drops.fetch_add(1, Relaxed);
            return false;
        }
        let jitter = if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(
                self.rng
                    .gen_range(0..self.cfg.jitter.as_nanos().clamp(1, u64::MAX as u128) as u64),
            )
        };
        let delay = self.cfg.delay + jitter;
        if delay.is_zero() {
            return true;
        }
        if self.delayed.len() >= MAX_DELAYED {
            counters.impaired_drops.fetch_add(1, Relaxed);
            return false;
        }
        counters.impaired_delays.fetch_add(1, Relaxed);
        self.seq += 1;
        self.delayed.push(Delayed {
            due: now + delay,
            seq: self.seq,
            from,
            data: data.to_vec(),
        });
        false
    }
}

/// Why the host woke up.
enum Wake<M: Machine> {
    Msg(Option<HostMsg<M>>),
    Readable(usize),
    Writable,
    EventRoom(Option<mpsc::OwnedPermit<M::Event>>),
    Timer,
    Yield,
}

/// What a host's events go to.
enum Events<E> {
    Channel(mpsc::Sender<E>),
    Discard,
}

/// The I/O loop of one [`Machine`]: its UDP sockets (batched receive and
/// send), its clock, its commands and its events.
pub struct Host<M: Machine> {
    machine: M,
    socks: Vec<UdpIo>,
    shared: Arc<HostShared>,
    rx: mpsc::Receiver<HostMsg<M>>,
    rx_open: bool,
    events: Events<M::Event>,
    /// An event taken from the machine that found the channel full.
    held_event: Option<M::Event>,
    impair: Option<Impair>,
    scratch: Vec<u8>,
    /// Some socket is full: wait for it before pulling more datagrams.
    tx_blocked: bool,
    /// The transmit or event budget ran out: go round again without waiting.
    busy: bool,
    closing: Option<Instant>,
    close_timeout: Duration,
    /// Rotates the socket read first, so that one busy socket cannot
    /// starve the others.
    rx_turn: usize,
}

impl<M: Machine> std::fmt::Debug for Host<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("local", &self.shared.local.get())
            .field("closing", &self.closing.is_some())
            .finish_non_exhaustive()
    }
}

impl<M> Host<M>
where
    M: Machine + Send + 'static,
    M::Command: Send + 'static,
    M::Event: Send + 'static,
{
    /// Builds a host for `machine` on `sockets` (bound already; made
    /// non-blocking). Returns the host (run it with [`run`](Self::run)),
    /// a handle, and the receiver of the machine's events (drop it when
    /// nobody wants them: events are then discarded).
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When a socket cannot be registered with the runtime, or none is given.
    pub fn new(
        machine: M,
        sockets: Vec<std::net::UdpSocket>,
        config: HostConfig,
    ) -> io::Result<(Self, HostHandle<M>, mpsc::Receiver<M::Event>)> {
        let channel = HostChannel::new(config.command_capacity);
        let handle = channel.handle();
        let (host, events) = Self::with_channel(machine, sockets, config, channel)?;
        Ok((host, handle, events))
    }

    /// [`new`](Self::new) on a channel made beforehand.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_channel(
        machine: M,
        sockets: Vec<std::net::UdpSocket>,
        config: HostConfig,
        channel: HostChannel<M>,
    ) -> io::Result<(Self, mpsc::Receiver<M::Event>)> {
        if sockets.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a host needs at least one socket",
            ));
        }
        let socks = sockets
            .into_iter()
            .map(|s| UdpIo::new(s, config.socket_buffer, config.recv_batch))
            .collect::<io::Result<Vec<_>>>()?;
        let shared = channel.handle.shared.clone();
        let _ = shared
            .local
            .set(socks.iter().map(UdpIo::local_addr).collect());
        let (etx, erx) = mpsc::channel(config.event_capacity.max(1));
        let HostChannel { handle, rx } = channel;
        drop(handle);
        Ok((
            Self {
                machine,
                socks,
                shared,
                rx,
                rx_open: true,
                events: Events::Channel(etx),
                held_event: None,
                impair: config.impairment.map(Impair::new),
                scratch: Vec::with_capacity(2048),
                tx_blocked: false,
                busy: false,
                closing: None,
                close_timeout: config.close_timeout,
                rx_turn: 0,
            },
            erx,
        ))
    }

    /// Spawns [`new`](Self::new)'s host on the current runtime. The join
    /// handle gives the machine back when the host stops.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn spawn(
        machine: M,
        sockets: Vec<std::net::UdpSocket>,
        config: HostConfig,
    ) -> io::Result<(
        HostHandle<M>,
        mpsc::Receiver<M::Event>,
        tokio::task::JoinHandle<M>,
    )> {
        let (host, handle, events) = Self::new(machine, sockets, config)?;
        Ok((handle, events, tokio::spawn(host.run())))
    }

    /// The machine.
    pub fn machine(&mut self) -> &mut M {
        &mut self.machine
    }

    /// Runs the machine until it is done (or closed and timed out), then
    /// returns it.
    pub async fn run(mut self) -> M {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let now = now();
            self.release_delayed(now);
            if self.machine.poll_timeout().is_some_and(|t| t <= now) {
                self.machine.handle_timeout(now);
            }
            self.turn(now);
            if self.finished(now) {
                break;
            }

            let mut deadline = self.machine.poll_timeout();
            let mut earliest = |t: Option<Instant>| {
                if let Some(t) = t {
                    deadline = Some(deadline.map_or(t, |d| d.min(t)));
                }
            };
            earliest(
                self.impair
                    .as_ref()
                    .and_then(|i| i.delayed.peek().map(|d| d.due)),
            );
            earliest(self.closing.map(|t| t + self.close_timeout));
            if deadline != armed {
                if let Some(d) = deadline {
                    sleep.as_mut().reset(tokio::time::Instant::from_std(d));
                }
                armed = deadline;
            }
            let busy = self.busy;
            let permit = match (&self.events, self.held_event.is_some()) {
                (Events::Channel(tx), true) => Some(tx.clone()),
                _ => None,
            };
            let waiting_for_room = permit.is_some();
            self.rx_turn = self.rx_turn.wrapping_add(1);
            let start = self.rx_turn;
            let wake: Wake<M> = tokio::select! {
                msg = self.rx.recv(), if self.rx_open => Wake::Msg(msg),
                i = readable(&self.socks, start) => Wake::Readable(i),
                () = writable(&self.socks), if self.tx_blocked => Wake::Writable,
                p = async move { match permit { Some(tx) => tx.reserve_owned().await.ok(), None => None } }, if waiting_for_room => Wake::EventRoom(p),
                () = &mut sleep, if armed.is_some() => Wake::Timer,
                () = tokio::task::yield_now(), if busy => Wake::Yield,
            };
            let now = self::now();
            match wake {
                Wake::Msg(Some(msg)) => {
                    self.on_msg(now, msg);
                    for _ in 0..COMMAND_BUDGET {
                        match self.rx.try_recv() {
                            Ok(msg) => self.on_msg(now, msg),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Msg(None) => {
                    // Every handle is gone: nobody can drive the machine.
                    self.rx_open = false;
                    self.begin_close(now);
                }
                Wake::Readable(i) => self.receive(now, i),
                Wake::Writable => self.tx_blocked = false,
                Wake::EventRoom(Some(permit)) => {
                    if let Some(e) = self.held_event.take() {
                        permit.send(e);
                    }
                }
                Wake::EventRoom(None) => {
                    // The consumer is gone: events are discarded from now on.
                    self.events = Events::Discard;
                    self.held_event = None;
                }
                Wake::Timer => armed = None,
                Wake::Yield => {}
            }
        }
        debug!(local = ?self.shared.local.get(), "host stopped");
        self.machine
    }

    fn on_msg(&mut self, now: Instant, msg: HostMsg<M>) {
        match msg {
            HostMsg::Command(c) => self.machine.handle_command(now, c),
            HostMsg::With(f) => f(&mut self.machine, now),
            HostMsg::Close => self.begin_close(now),
        }
    }

    fn begin_close(&mut self, now: Instant) {
        if self.closing.is_none() {
            self.closing = Some(now);
            self.machine.handle_close(now);
        }
    }

    /// Whether the host stops now: the machine is done (or, closing, it
    /// says nothing or took too long) and everything it sent is out.
    fn finished(&mut self, now: Instant) -> bool {
        let done = match (self.machine.is_done(), self.closing) {
            (Some(true), _) => true,
            (None, Some(_)) => true,
            (Some(false), Some(t)) => now >= t + self.close_timeout,
            (Some(false) | None, None) => false,
        };
        if !done {
            return false;
        }
        // Last words: flush without waiting (a full socket loses them).
        self.tx_blocked = false;
        self.flush(now);
        self.forward_events();
        true
    }

    /// After an input: datagrams out, events out.
    fn turn(&mut self, now: Instant) {
        self.busy = false;
        self.flush(now);
        self.forward_events();
    }

    fn forward_events(&mut self) {
        if self.held_event.is_some() {
            return;
        }
        for _ in 0..EVENT_BUDGET {
            let Some(e) = self.machine.poll_event() else {
                return;
            };
            match &self.events {
                Events::Discard => {}
                Events::Channel(tx) => match tx.try_send(e) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(e)) => {
                        self.held_event = Some(e);
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => self.events = Events::Discard,
                },
            }
        }
        self.busy = true;
    }

    /// Moves the machine's datagrams to the sockets until it has no more,
    /// a socket is full, or the budget runs out.
    fn flush(&mut self, now: Instant) {
        if self.tx_blocked {
            return;
        }
        let counters = &self.shared.counters;
        for s in &mut self.socks {
            if !s.drain(counters) {
                counters.add_blocked();
                self.tx_blocked = true;
                return;
            }
        }
        for _ in 0..TRANSMIT_BUDGET {
            let Some(dest) = self.machine.poll_transmit(now, &mut self.scratch) else {
                for s in &mut self.socks {
                    if !s.drain(counters) {
                        counters.add_blocked();
                        self.tx_blocked = true;
                    }
                }
                return;
            };
            if self.scratch.is_empty() {
                continue;
            }
            let Some(sock) = pick_socket(&mut self.socks, dest) else {
                trace!(%dest, "no socket reaches this address family; dropping");
                counters.add_send_error(1);
                continue;
            };
            if !sock.push(dest, &self.scratch, counters) {
                counters.add_blocked();
                self.tx_blocked = true;
                return;
            }
        }
        for s in &mut self.socks {
            if !s.drain(counters) {
                counters.add_blocked();
                self.tx_blocked = true;
                return;
            }
        }
        self.busy = true;
    }

    /// Reads a few batches from socket `i` and feeds them to the machine.
    fn receive(&mut self, now: Instant, i: usize) {
        let Self {
            machine,
            socks,
            shared,
            impair,
            ..
        } = self;
        let counters = &shared.counters;
        let Some(sock) = socks.get_mut(i) else {
            return;
        };
        for _ in 0..RECV_BATCHES_PER_WAKE {
            let r = sock.try_recv(counters, |from, data| {
                let admit = match impair.as_mut() {
                    Some(imp) => imp.admit(now, from, data, counters),
                    None => true,
                };
                if admit {
                    machine.handle_datagram(now, from, data);
                }
            });
            match r {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here on Linux; not fatal.
                    trace!("receive failed: {e}");
                    counters.add_recv_error();
                    break;
                }
            }
        }
    }

    fn release_delayed(&mut self, now: Instant) {
        let Some(imp) = self.impair.as_mut() else {
            return;
        };
        while imp.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = imp.delayed.pop() {
                self.machine.handle_datagram(now, d.from, &d.data);
            }
        }
    }
}

/// The socket to send to `dest` from: the first of its address family
/// (IPv4 destinations may also go out of an IPv6 socket, as mapped
/// addresses).
fn pick_socket(socks: &mut [UdpIo], dest: SocketAddr) -> Option<&mut UdpIo> {
    let dest = canonical(dest);
    let same_family = socks
        .iter()
        .position(|s| s.local_addr().is_ipv4() == dest.is_ipv4());
    let i = same_family.or_else(|| socks.iter().position(|s| s.reaches(dest)))?;
    socks.get_mut(i)
}

/// Resolves with the index of a socket that may be readable, looking at
/// them in turn from `start`.
async fn readable(socks: &[UdpIo], start: usize) -> usize {
    poll_fn(|cx| {
        let n = socks.len();
        for k in 0..n {
            let i = (start + k) % n;
            let s = &socks[i];
            match s.poll_readable(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(i),
                Poll::Ready(Err(e)) => {
                    warn!("socket readiness error: {e}");
                    return Poll::Ready(i);
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// Resolves when every socket with pending datagrams may be writable.
async fn writable(socks: &[UdpIo]) {
    poll_fn(|cx| {
        let mut ready = true;
        for s in socks.iter().filter(|s| s.has_pending()) {
            if s.poll_writable(cx).is_pending() {
                ready = false;
            }
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
