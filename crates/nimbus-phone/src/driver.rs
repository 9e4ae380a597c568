//! The async driver: one UDP socket, timers, the media source and sink, and
//! the registry (reg.cgi) client around a [`PhoneCore`].
//!
//! [`spawn`] starts a phone on the current tokio runtime and returns a
//! [`PhoneHandle`] to send it [`Command`]s and read its [`PhoneEvent`]s.
//! Media sources run on their own thread (they pace themselves on the wall
//! clock and may block on standard input); everything else runs on the
//! phone's task.

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::{RngCore, SeedableRng};
use rtmfp_flash::FlashProfile;
use tokio::sync::{mpsc, oneshot};

use crate::phone::{PhoneConfig, PhoneCore, PhoneEvent, PhoneStatus};
use crate::registry::{RegistryClient, REFRESH_INTERVAL};
use nimbus_media::{
    FlvFileSource, FlvSink, MediaSource, MediaTag, Pacer, TestSource, TestSourceConfig,
};

/// Where the phone's outgoing media comes from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// No media (chat only).
    None,
    /// The built-in live test source (H.264 test pattern with a running
    /// clock, and a tone), started afresh for each call.
    Test(TestSourceConfig),
    /// An FLV file, played from its start for each call.
    File(PathBuf),
    /// FLV on standard input (e.g. `ffmpeg … -f flv -`), read once for the
    /// whole run; tags outside a call are dropped.
    Stdin,
}

/// Where the peer's media goes.
#[derive(Debug, Clone)]
pub enum SinkSpec {
    /// Nowhere (only counted).
    None,
    /// An FLV file; the second call of a run writes `NAME.2.flv`, and so on.
    File(PathBuf),
    /// FLV on standard output (e.g. into `ffplay -`).
    Stdout,
}

/// Loss and delay applied to datagrams the phone receives from peers (not
/// from the server): our impairing relay for latency benchmarks. Apply it to
/// both phones to impair both directions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Probability (0..1) that a datagram is dropped.
    pub loss: f64,
    /// Added one-way delay.
    pub delay: Duration,
    /// Added uniform jitter (0..jitter).
    pub jitter: Duration,
    /// Seed of the loss and jitter decisions.
    pub seed: u64,
}

/// Settings of the driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The reg.cgi service to register with and look names up in.
    pub registry: Option<String>,
    /// Outgoing media.
    pub source: SourceSpec,
    /// Incoming media.
    pub sink: SinkSpec,
    /// Impair what comes from peers.
    pub impair: Option<Impairment>,
    /// Identity seed (tests); `None` draws one from the OS.
    pub seed: Option<u64>,
    /// How long `quit` waits for sessions to close.
    pub quit_grace: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            registry: None,
            source: SourceSpec::Test(TestSourceConfig::default()),
            sink: SinkSpec::None,
            impair: None,
            seed: None,
            quit_grace: Duration::from_secs(2),
        }
    }
}

/// What the user asks the phone to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Call a user by name (or a peer ID).
    Call(String),
    /// Accept the ringing call.
    Accept,
    /// Reject the ringing call.
    Reject,
    /// Hang up.
    Hangup,
    /// Send a chat line.
    Say(String),
    /// A status snapshot.
    Status(oneshot::Sender<PhoneStatus>),
    /// Hang up, unregister, close, and end the task.
    Quit,
}

/// What a phone's task returns when it ends.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The final status (figures of the last call).
    pub status: PhoneStatus,
    /// FLV files written, one per call.
    pub recordings: Vec<PathBuf>,
    /// Status at the end of each call (in order).
    pub calls: Vec<PhoneStatus>,
}

/// A running phone.
#[derive(Debug)]
pub struct PhoneHandle {
    /// Commands in.
    pub commands: mpsc::UnboundedSender<Command>,
    /// Events out (media events are not forwarded; they go to the sink).
    pub events: mpsc::UnboundedReceiver<PhoneEvent>,
    /// The phone's task.
    pub task: tokio::task::JoinHandle<anyhow::Result<RunReport>>,
    /// Our peer ID.
    pub peer_id: String,
    /// The socket's local address.
    pub local_addr: SocketAddr,
}

impl PhoneHandle {
    /// Sends a command (ignored if the phone has ended).
    pub fn send(&self, c: Command) {
        let _ = self.commands.send(c);
    }

    /// A status snapshot (`None` if the phone has ended).
    pub async fn status(&self) -> Option<PhoneStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).ok()?;
        rx.await.ok()
    }

    /// Waits for an event matching `f`, up to `timeout`; other events are
    /// passed to `seen`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&PhoneEvent) -> bool,
    ) -> Option<PhoneEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if f(&e) => return Some(e),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }

    /// Quits and waits for the task.
    pub async fn quit(self) -> anyhow::Result<RunReport> {
        let _ = self.commands.send(Command::Quit);
        self.task.await?
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Builds a phone with a new Flash identity (static key: a stable peer ID
/// for the run).
pub fn new_core(cfg: PhoneConfig, seed: Option<u64>) -> anyhow::Result<PhoneCore> {
    let seed = seed.unwrap_or_else(|| rand_core::OsRng.next_u64());
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let profile = FlashProfile::client()
        .build(&mut rng)
        .map_err(|e| anyhow::anyhow!("cannot build the phone's identity: {e:?}"))?;
    let engine_rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(rng.next_u64()));
    Ok(PhoneCore::new(
        cfg,
        profile,
        engine_rng,
        Instant::now(),
        unix_ms(),
    ))
}

/// Starts a phone on the current tokio runtime, on `socket` (bound
/// already: in a test's network namespace, say).
pub fn spawn(
    mut cfg: PhoneConfig,
    socket: std::net::UdpSocket,
    dcfg: DriverConfig,
) -> anyhow::Result<PhoneHandle> {
    socket.set_nonblocking(true)?;
    let local_addr = socket.local_addr()?;
    if cfg.local_addresses.is_empty() && !local_addr.ip().is_unspecified() {
        cfg.local_addresses = vec![local_addr];
    }
    if dcfg.registry.is_some() {
        cfg.registry_lookup = true;
    }
    let registry = dcfg
        .registry
        .as_deref()
        .map(RegistryClient::new)
        .transpose()?;
    let core = new_core(cfg, dcfg.seed)?;
    let peer_id = core.peer_id().to_string();
    let (ctx, crx) = mpsc::unbounded_channel();
    let (etx, erx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let sock = tokio::net::UdpSocket::from_std(socket)?;
        Driver::new(core, sock, dcfg, registry, etx).run(crx).await
    });
    Ok(PhoneHandle {
        commands: ctx,
        events: erx,
        task,
        peer_id,
        local_addr,
    })
}

/// A datagram held by the impairment.
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

/// Most datagrams held by the impairment (beyond: dropped).
const MAX_DELAYED: usize = 16_384;

#[derive(Debug)]
struct MediaThread {
    stop: Arc<AtomicBool>,
}

impl Drop for MediaThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Driver {
    core: PhoneCore,
    sock: tokio::net::UdpSocket,
    cfg: DriverConfig,
    registry: Option<RegistryClient>,
    events: mpsc::UnboundedSender<PhoneEvent>,
    out: Vec<u8>,
    media_tx: mpsc::Sender<(MediaTag, Instant)>,
    media_rx: mpsc::Receiver<(MediaTag, Instant)>,
    media_thread: Option<MediaThread>,
    stdin_started: bool,
    source_started: bool,
    sink: Option<FlvSink<Box<dyn std::io::Write + Send>>>,
    recordings: Vec<PathBuf>,
    calls: Vec<PhoneStatus>,
    was_in_call: bool,
    delayed: BinaryHeap<Delayed>,
    seq: u64,
    rng: rand_chacha::ChaCha8Rng,
    reg_tx: mpsc::UnboundedSender<(String, Option<String>)>,
    reg_rx: mpsc::UnboundedReceiver<(String, Option<String>)>,
    registered: bool,
    refresh_at: Option<Instant>,
    servers: Vec<SocketAddr>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Driver {
    fn new(
        core: PhoneCore,
        sock: tokio::net::UdpSocket,
        cfg: DriverConfig,
        registry: Option<RegistryClient>,
        events: mpsc::UnboundedSender<PhoneEvent>,
    ) -> Self {
        let (media_tx, media_rx) = mpsc::channel(256);
        let (reg_tx, reg_rx) = mpsc::unbounded_channel();
        let seed = cfg.impair.map_or(0, |i| i.seed);
        let servers = core.config().servers.clone();
        Driver {
            core,
            sock,
            registry,
            events,
            out: Vec::with_capacity(2048),
            media_tx,
            media_rx,
            media_thread: None,
            stdin_started: false,
            source_started: false,
            sink: None,
            recordings: Vec::new(),
            calls: Vec::new(),
            was_in_call: false,
            delayed: BinaryHeap::new(),
            seq: 0,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            reg_tx,
            reg_rx,
            registered: false,
            refresh_at: None,
            servers,
            cfg,
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> anyhow::Result<RunReport> {
        let mut rbuf = vec![0u8; 65_536];
        // a Nimbus registry in its `authenticated` legacy mode wants a token
        // with reg.cgi requests: log in with the phone's password first
        let (user, password) = (
            self.core.config().user.clone(),
            self.core.config().password.clone(),
        );
        if let (Some(r), Some(pw)) = (self.registry.as_mut(), password) {
            if !r.has_token() {
                if let Err(e) = r.log_in(&user, &pw).await {
                    let _ = self.events.send(PhoneEvent::Notice(format!(
                        "registry log-in failed ({e}); reg.cgi requests go without a token"
                    )));
                }
            }
        }
        self.core.start(Instant::now());
        let mut quit_deadline: Option<Instant> = None;
        let mut commands_open = true;
        loop {
            self.flush();
            self.dispatch();
            self.media_lifecycle();
            if let Some(d) = quit_deadline {
                if self.core.closed() || Instant::now() >= d {
                    break;
                }
            }
            let mut wake = self.core.poll_timeout();
            let mut min = |x: Option<Instant>| {
                if let Some(x) = x {
                    wake = Some(wake.map_or(x, |w| w.min(x)));
                }
            };
            min(self.delayed.peek().map(|d| d.due));
            min(self.refresh_at);
            min(quit_deadline);
            let sleep_until = wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                r = self.sock.recv_from(&mut rbuf) => {
                    let now = Instant::now();
                    match r {
                        Ok((n, from)) => self.receive(now, from, &rbuf[..n]),
                        Err(e) => tracing::debug!("recv: {e}"),
                    }
                    // drain what else is queued without waiting
                    for _ in 0..64 {
                        match self.sock.try_recv_from(&mut rbuf) {
                            Ok((n, from)) => self.receive(now, from, &rbuf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(sleep_until.into()) => {
                    let now = Instant::now();
                    self.release_delayed(now);
                    self.core.handle_timeout(now);
                    if self.refresh_at.is_some_and(|t| t <= now) {
                        self.refresh_at = Some(now + REFRESH_INTERVAL);
                        self.register();
                    }
                }
                c = commands.recv(), if commands_open => {
                    let now = Instant::now();
                    match c {
                        Some(Command::Call(n)) => self.core.call(now, &n),
                        Some(Command::Accept) => self.core.accept(now),
                        Some(Command::Reject) => self.core.reject(now),
                        Some(Command::Hangup) => self.core.hangup(now),
                        Some(Command::Say(t)) => self.core.say(now, &t),
                        Some(Command::Status(tx)) => { let _ = tx.send(self.core.status(now)); }
                        Some(Command::Quit) | None => {
                            commands_open = false;
                            if quit_deadline.is_none() {
                                self.core.quit(now);
                                quit_deadline = Some(now + self.cfg.quit_grace);
                            }
                        }
                    }
                }
                Some((tag, at)) = self.media_rx.recv() => {
                    let now = Instant::now();
                    self.core.send_media(now, &tag, at);
                    // take whatever else is ready, in order
                    while let Ok((tag, at)) = self.media_rx.try_recv() {
                        self.core.send_media(now, &tag, at);
                    }
                }
                Some((name, id)) = self.reg_rx.recv() => {
                    self.core.registry_lookup_result(Instant::now(), &name, id.as_deref());
                }
            }
        }
        self.flush();
        self.dispatch();
        self.end_call_recording();
        self.media_thread = None;
        if let (Some(r), true) = (self.registry.clone(), self.registered) {
            let user = self.core.config().user.clone();
            if let Err(e) = r.unregister(&user).await {
                let _ = self
                    .events
                    .send(PhoneEvent::Notice(format!("unregister: {e}")));
            }
        }
        let status = self.core.status(Instant::now());
        Ok(RunReport {
            status,
            recordings: self.recordings,
            calls: self.calls,
        })
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        match self.cfg.impair {
            Some(imp) if !self.servers.contains(&from) => {
                let x = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                if x < imp.loss || self.delayed.len() >= MAX_DELAYED {
                    return;
                }
                let jitter = if imp.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    Duration::from_nanos(self.rng.next_u64() % imp.jitter.as_nanos().max(1) as u64)
                };
                if imp.delay.is_zero() && jitter.is_zero() {
                    self.core.handle_datagram(now, from, data);
                    return;
                }
                self.seq += 1;
                self.delayed.push(Delayed {
                    due: now + imp.delay + jitter,
                    seq: self.seq,
                    from,
                    data: data.to_vec(),
                });
            }
            _ => self.core.handle_datagram(now, from, data),
        }
    }

    fn release_delayed(&mut self, now: Instant) {
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.delayed.pop() {
                self.core.handle_datagram(now, d.from, &d.data);
            }
        }
    }

    fn flush(&mut self) {
        let now = Instant::now();
        while let Some(dst) = self.core.poll_transmit(now, &mut self.out) {
            // UDP: a full socket buffer drops, the protocol recovers
            let _ = self.sock.try_send_to(&self.out, dst);
        }
    }

    fn dispatch(&mut self) {
        while let Some(e) = self.core.poll_event() {
            match e {
                PhoneEvent::Media(tag) => self.record(&tag),
                PhoneEvent::LoggedIn { .. } => {
                    if self.registry.is_some() {
                        self.register();
                        self.refresh_at = Some(Instant::now() + REFRESH_INTERVAL);
                    }
                    let _ = self.events.send(e);
                }
                PhoneEvent::RegistryLookup { name } => match self.registry.clone() {
                    Some(r) => {
                        let tx = self.reg_tx.clone();
                        let evs = self.events.clone();
                        tokio::spawn(async move {
                            let id = match r.lookup(&name).await {
                                Ok(id) => id,
                                Err(e) => {
                                    let _ = evs.send(PhoneEvent::Notice(format!(
                                        "registry look-up of {name}: {e}"
                                    )));
                                    None
                                }
                            };
                            let _ = tx.send((name, id));
                        });
                    }
                    None => self
                        .core
                        .registry_lookup_result(Instant::now(), &name, None),
                },
                other => {
                    let _ = self.events.send(other);
                }
            }
        }
    }

    fn register(&mut self) {
        let Some(r) = self.registry.clone() else {
            return;
        };
        self.registered = true;
        let user = self.core.config().user.clone();
        let id = self.core.peer_id().to_string();
        let evs = self.events.clone();
        tokio::spawn(async move {
            let msg = match r.register(&user, &id).await {
                Ok(()) => format!("registered as {user} in the registry"),
                Err(e) => format!("registry registration failed: {e}"),
            };
            let _ = evs.send(PhoneEvent::Notice(msg));
        });
    }

    /// Starts the source when a call is established, stops it after.
    fn media_lifecycle(&mut self) {
        let in_call = self.core.in_call();
        // start the source once the peer receives: its first picture is then
        // a key frame the peer can decode at once
        if in_call && !self.source_started && self.core.media_ready() {
            self.source_started = true;
            if let Err(e) = self.start_source() {
                // the call goes on without our media
                let _ = self
                    .events
                    .send(PhoneEvent::Notice(format!("media source: {e:#}")));
            }
        }
        if !in_call && self.was_in_call {
            self.source_started = false;
            self.media_thread = None;
            self.end_call_recording();
            // drop what the source left queued
            while self.media_rx.try_recv().is_ok() {}
        }
        self.was_in_call = in_call;
    }

    fn start_source(&mut self) -> anyhow::Result<()> {
        // per call: a fresh source; stdin: read once, for the whole run
        let (source, per_call): (Box<dyn MediaSource + Send>, bool) = match &self.cfg.source {
            SourceSpec::None => return Ok(()),
            SourceSpec::Test(c) => (Box::new(TestSource::new(c.clone())?), true),
            SourceSpec::File(p) => (Box::new(FlvFileSource::open(p)?), true),
            SourceSpec::Stdin if self.stdin_started => return Ok(()),
            SourceSpec::Stdin => {
                self.stdin_started = true;
                (Box::new(FlvFileSource::open("-")?), false)
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, flag) = (self.media_tx.clone(), stop.clone());
        std::thread::Builder::new()
            .name(
                if per_call {
                    "phone-media"
                } else {
                    "phone-stdin"
                }
                .into(),
            )
            .spawn(move || pump_source(source, tx, flag))?;
        if per_call {
            self.media_thread = Some(MediaThread { stop });
        }
        Ok(())
    }

    fn record(&mut self, tag: &MediaTag) {
        if self.sink.is_none() {
            let path = match &self.cfg.sink {
                SinkSpec::None => return,
                SinkSpec::Stdout => PathBuf::from("-"),
                SinkSpec::File(p) => {
                    let n = self.recordings.len() + 1;
                    if n == 1 {
                        p.clone()
                    } else {
                        let stem = p
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        p.with_file_name(format!("{stem}.{n}.flv"))
                    }
                }
            };
            match FlvSink::open(&path, true, true) {
                Ok(s) => {
                    self.sink = Some(s);
                    self.recordings.push(path);
                }
                Err(e) => {
                    let _ = self.events.send(PhoneEvent::Notice(format!(
                        "cannot record to {}: {e}",
                        path.display()
                    )));
                    self.cfg.sink = SinkSpec::None;
                    return;
                }
            }
        }
        if let Some(s) = self.sink.as_mut() {
            if let Err(e) = s.write(tag) {
                let _ = self
                    .events
                    .send(PhoneEvent::Notice(format!("recording: {e}")));
                self.sink = None;
                self.cfg.sink = SinkSpec::None;
            }
        }
    }

    fn end_call_recording(&mut self) {
        if let Some(s) = self.sink.take() {
            if let Err(e) = s.finish() {
                let _ = self
                    .events
                    .send(PhoneEvent::Notice(format!("recording: {e}")));
            }
        }
        let st = self.core.status(Instant::now());
        if st.calls as usize > self.calls.len() && self.was_in_call {
            self.calls.push(st);
        }
    }
}

/// Feeds a source's tags, on the wall clock, to the phone until `stop`.
/// Each tag goes with the instant it was due (its capture time), from which
/// the phone derives its media clock.
fn pump_source(
    mut source: Box<dyn MediaSource + Send>,
    tx: mpsc::Sender<(MediaTag, Instant)>,
    stop: Arc<AtomicBool>,
) {
    let mut pacer = Pacer::new();
    while !stop.load(Ordering::Relaxed) {
        match source.next_tag() {
            Ok(Some(tag)) => {
                let now = Instant::now();
                let due = pacer.due(tag.timestamp, now);
                if due > now {
                    std::thread::sleep(due - now);
                }
                if stop.load(Ordering::Relaxed) || tx.blocking_send((tag, due)).is_err() {
                    return;
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
}
