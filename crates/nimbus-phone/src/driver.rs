//! The phone on its host: a [`PhoneCore`] run by [`rtmfp_tokio::Host`]
//! (the socket, the clock, batched I/O, the impairment of what peers send),
//! and around it one application task with what the core must not do
//! itself: the media source and sink, the registry (reg.cgi) client, and
//! the user's commands and events.
//!
//! [`spawn`] starts a phone on the current tokio runtime and returns a
//! [`PhoneHandle`] to send it [`Command`]s and read its [`PhoneEvent`]s.
//!
//! # The application task
//!
//! * **Commands** from the [`PhoneHandle`] become [`PhoneCommand`]s for the
//!   host; a status snapshot is a call on the core inside the host
//!   ([`HostHandle::with`]); `Quit` (or dropping the handle) closes the
//!   host, which quits the core and runs until every session is closed, at
//!   most [`DriverConfig::quit_grace`].
//! * **Events** of the core: received media goes to the FLV sink;
//!   [`PhoneEvent::StartSource`] / [`PhoneEvent::StopSource`] start and
//!   stop the media source thread of each call (and close its recording);
//!   [`PhoneEvent::RegistryLookup`] starts a reg.cgi look-up whose answer
//!   comes back as a [`PhoneCommand::RegistryLookupResult`]; logging in
//!   registers the name (refreshed every 30 minutes). Everything else goes
//!   to the user.
//! * **Media sources** run on their own thread (they pace themselves on
//!   the wall clock and may block on standard input) and hand each tag to
//!   the host with [`HostHandle::blocking_send`]: when the host is behind,
//!   the source waits (no queue of its own). A
//!   [`PhoneEvent::KeyframeRequested`] makes the running source encode an
//!   IDR next (the test source can; files ignore it).
//! * **Media from the application** ([`SourceSpec::External`]): the driver
//!   starts no source; it hands the application
//!   [`PhoneEvent::StartSource`], [`PhoneEvent::StopSource`] and
//!   [`PhoneEvent::KeyframeRequested`], and the application sends its tags
//!   through [`PhoneHandle::media_sender`] (the host's bounded command
//!   channel: a sender waits when the phone is behind). [`spawn_source`]
//!   runs any [`MediaSource`] on a thread into such a sender.
//! * **Media to the application** ([`SinkSpec::Events`]): received tags go
//!   to [`PhoneHandle::events`] as [`PhoneEvent::Media`]; when the
//!   application does not keep up they are dropped and counted
//!   ([`PhoneHandle::media_events_dropped`]), never queued without bound.
//!
//! Every queue is bounded except the user's commands (typed or scripted,
//! as fast as the user sends them): the host's commands
//! ([`HOST_COMMANDS`]) and events, the events for the user
//! ([`USER_EVENTS`]: when the user does not read them, the task stops
//! taking the core's events, whose own queue then drops received media
//! first), and the core's queue ([`crate::phone::MAX_PENDING_EVENTS`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::{RngCore, SeedableRng};
use rtmfp_flash::FlashProfile;
use rtmfp_tokio::{
    Host, HostClosed, HostConfig, HostHandle, TrySendError as HostTrySendError, WeakHostHandle,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::phone::{PhoneCommand, PhoneConfig, PhoneCore, PhoneEvent, PhoneStatus};
use crate::registry::{RegistryClient, REFRESH_INTERVAL};
use nimbus_media::{
    FlvFileSource, FlvSink, MediaSource, MediaTag, Pacer, TestSource, TestSourceConfig,
};

/// Commands waiting for the core (media tags from the source thread, the
/// user's commands, registry answers); the source waits beyond it.
pub const HOST_COMMANDS: usize = 64;
/// Events of the core waiting for the application task.
const HOST_EVENTS: usize = 1024;
/// Events waiting for the user in [`PhoneHandle::events`].
pub const USER_EVENTS: usize = 1024;

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
    /// The application's own media (a web page's camera, say), sent with
    /// [`PhoneHandle::media_sender`]; the driver forwards
    /// [`PhoneEvent::StartSource`], [`PhoneEvent::StopSource`] and
    /// [`PhoneEvent::KeyframeRequested`] to the application.
    External,
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
    /// [`PhoneEvent::Media`] on [`PhoneHandle::events`], for the application
    /// (dropped and counted when it falls behind).
    Events,
}

/// Loss and delay applied to datagrams the phone receives from peers (not
/// from the server): our impairing relay for latency benchmarks. Apply it to
/// both phones to impair both directions. The phone's host applies it
/// ([`rtmfp_tokio::Impairment`], with the server's addresses exempt).
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

impl Impairment {
    /// The host's impairment: this one, on what comes from anywhere but
    /// `servers`.
    fn sparing(self, servers: &[SocketAddr]) -> rtmfp_tokio::Impairment {
        rtmfp_tokio::Impairment {
            loss: self.loss,
            delay: self.delay,
            jitter: self.jitter,
            seed: self.seed,
            exempt: servers.to_vec(),
        }
    }
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
    /// Ask the peer for a key frame (our decoder lost its picture).
    RequestKeyframe,
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
    /// Events out (at most [`USER_EVENTS`] waiting; media events are not
    /// forwarded, they go to the sink).
    pub events: mpsc::Receiver<PhoneEvent>,
    /// The phone's task.
    pub task: tokio::task::JoinHandle<anyhow::Result<RunReport>>,
    /// Our peer ID.
    pub peer_id: String,
    /// The socket's local address.
    pub local_addr: SocketAddr,
    media: MediaSender,
    media_dropped: Arc<AtomicU64>,
}

/// Sends the application's media to a phone ([`SourceSpec::External`]):
/// each tag is a [`PhoneCommand::SendMedia`] on the phone's host, whose
/// command channel is bounded, so a sender waits (or, with
/// [`try_send`](Self::try_send), is refused) when the phone is behind. It
/// does not keep the phone running.
#[derive(Debug, Clone)]
pub struct MediaSender {
    host: WeakHostHandle<PhoneCore>,
}

impl MediaSender {
    /// Sends a tag captured at `captured` (its time on our media clock),
    /// waiting while the phone is behind.
    ///
    /// # Errors
    /// [`HostClosed`] once the phone has stopped.
    pub async fn send(&self, tag: MediaTag, captured: Instant) -> Result<(), HostClosed> {
        let host = self.host.upgrade().ok_or(HostClosed)?;
        host.send(PhoneCommand::SendMedia { tag, captured }).await
    }

    /// Sends a tag unless the phone is behind; `Ok(false)`: refused (the
    /// caller drops it).
    ///
    /// # Errors
    /// [`HostClosed`] once the phone has stopped.
    pub fn try_send(&self, tag: MediaTag, captured: Instant) -> Result<bool, HostClosed> {
        let host = self.host.upgrade().ok_or(HostClosed)?;
        match host.try_send(PhoneCommand::SendMedia { tag, captured }) {
            Ok(()) => Ok(true),
            Err(HostTrySendError::Full(_)) => Ok(false),
            Err(HostTrySendError::Closed(_)) => Err(HostClosed),
        }
    }

    /// Sends a tag from a thread outside the runtime, blocking while the
    /// phone is behind.
    ///
    /// # Errors
    /// [`HostClosed`] once the phone has stopped.
    pub fn blocking_send(&self, tag: MediaTag, captured: Instant) -> Result<(), HostClosed> {
        let host = self.host.upgrade().ok_or(HostClosed)?;
        host.blocking_send(PhoneCommand::SendMedia { tag, captured })
    }
}

/// A media source running on its own thread (see [`spawn_source`]):
/// stopped when dropped.
#[derive(Debug)]
pub struct SourceThread {
    stop: Arc<AtomicBool>,
    keyframe: Arc<AtomicBool>,
}

impl SourceThread {
    /// The source's next video frame should be a key frame.
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }
}

impl Drop for SourceThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `source` on a thread named `name`, paced on the wall clock, into
/// `media` until the returned [`SourceThread`] is dropped, the source ends,
/// or the phone stops. `ts_offset` (ms) is added to every timestamp, so
/// that a source started in the middle of a call continues the call's
/// media clock.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn_source(
    source: Box<dyn MediaSource + Send>,
    media: MediaSender,
    ts_offset: u32,
    name: &str,
) -> std::io::Result<SourceThread> {
    let stop = Arc::new(AtomicBool::new(false));
    let keyframe = Arc::new(AtomicBool::new(false));
    let (s, k) = (stop.clone(), keyframe.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || pump_source(source, media, ts_offset, s, k))?;
    Ok(SourceThread { stop, keyframe })
}

impl PhoneHandle {
    /// Where the application's media goes ([`SourceSpec::External`]).
    pub fn media_sender(&self) -> MediaSender {
        self.media.clone()
    }

    /// Received media dropped because the application did not read
    /// [`events`](Self::events) fast enough ([`SinkSpec::Events`]).
    pub fn media_events_dropped(&self) -> u64 {
        self.media_dropped.load(Ordering::Relaxed)
    }

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

    /// Waits for an event matching `f`, up to `timeout`; `f` sees every
    /// event, the others are dropped.
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
/// for the run), its clocks read now (tokio's clock, as its host's).
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
        rtmfp_tokio::now(),
        unix_ms(),
    ))
}

/// Starts a phone on the current tokio runtime, on `socket` (bound
/// already: in a test's network namespace, say).
///
/// # Errors
/// When the registry URL is malformed, the identity cannot be built, or
/// the socket cannot be registered with the runtime.
pub fn spawn(
    mut cfg: PhoneConfig,
    socket: std::net::UdpSocket,
    dcfg: DriverConfig,
) -> anyhow::Result<PhoneHandle> {
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
    let user = core.config().user.clone();
    let password = core.config().password.clone();
    let impairment = dcfg.impair.map(|i| i.sparing(&core.config().servers));
    let mut hcfg = HostConfig::default()
        .capacity(HOST_COMMANDS, HOST_EVENTS)
        .impairment(impairment);
    hcfg.close_timeout = dcfg.quit_grace;
    let (host, handle, host_events) = Host::new(core, vec![socket], hcfg)?;
    let host_task = tokio::spawn(host.run());
    let (ctx, crx) = mpsc::unbounded_channel();
    let (etx, erx) = mpsc::channel(USER_EVENTS);
    let media = MediaSender {
        host: handle.downgrade(),
    };
    let media_dropped = Arc::new(AtomicU64::new(0));
    let driver = Driver {
        media_dropped: media_dropped.clone(),
        host: handle,
        cfg: dcfg,
        registry,
        user,
        peer_id: peer_id.clone(),
        events: etx,
        held: None,
        media_thread: None,
        stdin_thread: None,
        stdin_started: false,
        sink: None,
        recordings: Vec::new(),
        calls: Vec::new(),
        registered: false,
        refresh_at: None,
    };
    let task = tokio::spawn(driver.run(password, crx, host_events, host_task));
    Ok(PhoneHandle {
        commands: ctx,
        events: erx,
        task,
        peer_id,
        local_addr,
        media,
        media_dropped,
    })
}

/// Why the application task woke up.
enum Wake {
    /// The host has stopped and gives the core back.
    Stopped(Result<PhoneCore, tokio::task::JoinError>),
    /// An event of the core (`None`: the host is stopping).
    Event(Option<PhoneEvent>),
    /// A command of the user (`None`: the user is gone).
    Command(Option<Command>),
    /// Time to refresh the registration.
    Refresh,
}

/// The application task around the host (see the module documentation).
struct Driver {
    host: HostHandle<PhoneCore>,
    cfg: DriverConfig,
    registry: Option<RegistryClient>,
    user: String,
    peer_id: String,
    /// Events for the user.
    events: mpsc::Sender<PhoneEvent>,
    /// An event for the user that found the channel full: no event of the
    /// core is taken until it is delivered.
    held: Option<PhoneEvent>,
    /// Received media not delivered to the application ([`SinkSpec::Events`]).
    media_dropped: Arc<AtomicU64>,
    /// The call's source thread.
    media_thread: Option<SourceThread>,
    /// The standard-input source (the whole run).
    stdin_thread: Option<SourceThread>,
    stdin_started: bool,
    sink: Option<FlvSink<Box<dyn std::io::Write + Send>>>,
    recordings: Vec<PathBuf>,
    calls: Vec<PhoneStatus>,
    registered: bool,
    refresh_at: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Driver {
    async fn run(
        mut self,
        password: Option<String>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut host_events: mpsc::Receiver<PhoneEvent>,
        mut host_task: tokio::task::JoinHandle<PhoneCore>,
    ) -> anyhow::Result<RunReport> {
        // a Nimbus registry in its `authenticated` legacy mode wants a token
        // with reg.cgi requests: log in with the phone's password first
        if let (Some(r), Some(pw)) = (self.registry.as_mut(), password) {
            if !r.has_token() {
                if let Err(e) = r.log_in(&self.user, &pw).await {
                    self.forward(PhoneEvent::Notice(format!(
                        "registry log-in failed ({e}); reg.cgi requests go without a token"
                    )));
                }
            }
        }
        let _ = self.host.send(PhoneCommand::Start).await;
        let mut commands_open = true;
        let core = loop {
            let refresh = self.refresh_at;
            let wake = tokio::select! {
                core = &mut host_task => Wake::Stopped(core),
                e = host_events.recv(), if self.held.is_none() => Wake::Event(e),
                permit = self.events.reserve(), if self.held.is_some() => {
                    // (an error: the user is gone, and so are its events)
                    if let (Ok(permit), Some(e)) = (permit, self.held.take()) {
                        permit.send(e);
                    }
                    continue;
                }
                c = commands.recv(), if commands_open => Wake::Command(c),
                () = tokio::time::sleep_until(refresh.unwrap_or_else(tokio::time::Instant::now)), if refresh.is_some() => Wake::Refresh,
            };
            match wake {
                Wake::Stopped(core) => break core?,
                Wake::Event(Some(e)) => {
                    if let Some(e) = self.on_event(e).await {
                        self.forward(e);
                    }
                }
                Wake::Event(None) => break (&mut host_task).await?,
                Wake::Command(c) => commands_open = self.on_command(c).await,
                Wake::Refresh => {
                    self.refresh_at = Some(tokio::time::Instant::now() + REFRESH_INTERVAL);
                    self.register();
                }
            }
        };
        // the host has stopped: what it reported last; the user's events
        // without waiting (nobody may be reading any more)
        if let Some(e) = self.held.take() {
            let _ = self.events.try_send(e);
        }
        while let Ok(e) = host_events.try_recv() {
            if let Some(e) = self.on_event(e).await {
                let _ = self.events.try_send(e);
            }
        }
        self.media_thread = None;
        if let Some(e) = self.finish_recording() {
            let _ = self.events.try_send(e);
        }
        if let (Some(r), true) = (self.registry.as_ref(), self.registered) {
            if let Err(e) = r.unregister(&self.user).await {
                let _ = self
                    .events
                    .try_send(PhoneEvent::Notice(format!("unregister: {e}")));
            }
        }
        let mut core = core;
        Ok(RunReport {
            status: core.status(rtmfp_tokio::now()),
            recordings: self.recordings,
            calls: self.calls,
        })
    }

    /// Carries out a command of the user; `false` once the user has quit
    /// (or is gone): the host then winds the core down.
    async fn on_command(&mut self, c: Option<Command>) -> bool {
        let c = match c {
            Some(Command::Status(reply)) => {
                if let Ok(s) = self.host.with(|core, now| core.status(now)).await {
                    let _ = reply.send(s);
                }
                return true;
            }
            Some(Command::Quit) | None => {
                self.host.close().await;
                return false;
            }
            Some(Command::Call(name)) => PhoneCommand::Call(name),
            Some(Command::Accept) => PhoneCommand::Accept,
            Some(Command::Reject) => PhoneCommand::Reject,
            Some(Command::Hangup) => PhoneCommand::Hangup,
            Some(Command::Say(text)) => PhoneCommand::Say(text),
            Some(Command::RequestKeyframe) => PhoneCommand::RequestKeyframe,
        };
        let _ = self.host.send(c).await;
        true
    }

    /// Hands an event to the user; holds it when the user's channel is
    /// full (call only with nothing held).
    fn forward(&mut self, e: PhoneEvent) {
        match self.events.try_send(e) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(e)) => self.held = Some(e),
        }
    }

    /// Acts on an event of the core; returns what goes to the user.
    async fn on_event(&mut self, e: PhoneEvent) -> Option<PhoneEvent> {
        let external = matches!(self.cfg.source, SourceSpec::External);
        match e {
            PhoneEvent::Media { tag, received } => {
                if matches!(self.cfg.sink, SinkSpec::Events) {
                    self.deliver_media(PhoneEvent::Media { tag, received });
                    None
                } else {
                    self.record(&tag)
                }
            }
            PhoneEvent::StartSource if external => Some(PhoneEvent::StartSource),
            PhoneEvent::StartSource => self
                .start_source()
                .err()
                .map(|e| PhoneEvent::Notice(format!("media source: {e:#}"))),
            PhoneEvent::StopSource { call } => {
                self.media_thread = None;
                self.calls.push((*call).clone());
                let notice = self.finish_recording();
                if external {
                    // StopSource is what the application needs; a recording
                    // notice goes first if there is room
                    if let Some(n) = notice {
                        let _ = self.events.try_send(n);
                    }
                    return Some(PhoneEvent::StopSource { call });
                }
                notice
            }
            e @ PhoneEvent::KeyframeRequested { .. } => {
                for t in self.media_thread.iter().chain(&self.stdin_thread) {
                    t.request_keyframe();
                }
                external.then_some(e)
            }
            PhoneEvent::RegistryLookup { name } => {
                self.look_up(name).await;
                None
            }
            e @ PhoneEvent::LoggedIn { .. } => {
                if let PhoneEvent::LoggedIn { peer_id, .. } = &e {
                    // the Flash profile may have fallen back to another
                    // certificate for this server (MonaServer2)
                    self.peer_id.clone_from(peer_id);
                }
                if self.registry.is_some() {
                    self.register();
                    self.refresh_at = Some(tokio::time::Instant::now() + REFRESH_INTERVAL);
                }
                Some(e)
            }
            e => Some(e),
        }
    }

    /// Looks `name` up in the registry on a task that answers the core.
    async fn look_up(&mut self, name: String) {
        let Some(r) = self.registry.clone() else {
            let _ = self
                .host
                .send(PhoneCommand::RegistryLookupResult {
                    name,
                    peer_id: None,
                })
                .await;
            return;
        };
        let (host, events) = (self.host.clone(), self.events.clone());
        tokio::spawn(async move {
            let peer_id = match r.lookup(&name).await {
                Ok(id) => id,
                Err(e) => {
                    let msg = format!("registry look-up of {name}: {e}");
                    let _ = events.send(PhoneEvent::Notice(msg)).await;
                    None
                }
            };
            let _ = host
                .send(PhoneCommand::RegistryLookupResult { name, peer_id })
                .await;
        });
    }

    /// Registers our name and peer ID on a task.
    fn register(&mut self) {
        let Some(r) = self.registry.clone() else {
            return;
        };
        self.registered = true;
        let (user, id) = (self.user.clone(), self.peer_id.clone());
        let events = self.events.clone();
        tokio::spawn(async move {
            let msg = match r.register(&user, &id).await {
                Ok(()) => format!("registered as {user} in the registry"),
                Err(e) => format!("registry registration failed: {e}"),
            };
            let _ = events.send(PhoneEvent::Notice(msg)).await;
        });
    }

    /// Hands received media to the application: dropped and counted when
    /// it does not keep up (never held: media is only worth it now).
    fn deliver_media(&mut self, e: PhoneEvent) {
        if self.held.is_some() {
            self.media_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.events.try_send(e) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.media_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts the source thread of a call (stdin: once, for the whole run).
    fn start_source(&mut self) -> anyhow::Result<()> {
        let (source, per_call): (Box<dyn MediaSource + Send>, bool) = match &self.cfg.source {
            SourceSpec::None | SourceSpec::External => return Ok(()),
            SourceSpec::Test(c) => (Box::new(TestSource::new(c.clone())?), true),
            SourceSpec::File(p) => (Box::new(FlvFileSource::open(p)?), true),
            SourceSpec::Stdin if self.stdin_started => return Ok(()),
            SourceSpec::Stdin => {
                self.stdin_started = true;
                (Box::new(FlvFileSource::open("-")?), false)
            }
        };
        let media = MediaSender {
            host: self.host.downgrade(),
        };
        if per_call {
            self.media_thread = Some(spawn_source(source, media, 0, "phone-media")?);
        } else {
            self.stdin_thread = Some(spawn_source(source, media, 0, "phone-stdin")?);
        }
        Ok(())
    }

    /// Writes received media to the call's recording (opened with its
    /// first tag); returns a notice when that fails.
    fn record(&mut self, tag: &MediaTag) -> Option<PhoneEvent> {
        if self.sink.is_none() {
            let path = match &self.cfg.sink {
                SinkSpec::None | SinkSpec::Events => return None,
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
                    self.cfg.sink = SinkSpec::None;
                    return Some(PhoneEvent::Notice(format!(
                        "cannot record to {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        let s = self.sink.as_mut()?;
        match s.write(tag) {
            Ok(()) => None,
            Err(e) => {
                self.sink = None;
                self.cfg.sink = SinkSpec::None;
                Some(PhoneEvent::Notice(format!("recording: {e}")))
            }
        }
    }

    /// Closes the call's recording; returns a notice when that fails.
    fn finish_recording(&mut self) -> Option<PhoneEvent> {
        let e = self.sink.take()?.finish().err()?;
        Some(PhoneEvent::Notice(format!("recording: {e}")))
    }
}

/// Feeds a source's tags, on the wall clock, to the phone until `stop` or
/// until the phone is gone. Each tag goes with the instant it was due (its
/// capture time), from which the phone derives its media clock; when the
/// host's command channel is full, the source waits.
fn pump_source(
    mut source: Box<dyn MediaSource + Send>,
    media: MediaSender,
    ts_offset: u32,
    stop: Arc<AtomicBool>,
    keyframe: Arc<AtomicBool>,
) {
    let mut pacer = Pacer::new();
    while !stop.load(Ordering::Relaxed) {
        if keyframe.swap(false, Ordering::Relaxed) {
            source.request_keyframe();
        }
        match source.next_tag() {
            Ok(Some(mut tag)) => {
                let now = Instant::now();
                let due = pacer.due(tag.timestamp, now);
                if due > now {
                    std::thread::sleep(due - now);
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tag.timestamp = tag.timestamp.wrapping_add(ts_offset);
                if media.blocking_send(tag, due).is_err() {
                    return;
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
}
