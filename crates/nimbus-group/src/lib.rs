//! # nimbus-group — the NetGroup member application
//!
//! [`GroupMember::spawn`] runs one NetGroup member — the sans-IO
//! [`rtmfp_netgroup::Member`]: its engine, its `NetConnection` to the
//! rendezvous server, its `NetGroup` and the routing of their events — on
//! `rtmfp-tokio`'s [`Host`], and adds what is I/O around it:
//!
//! * **the identity**: a Flash (RFC 7425) profile with the configured DH
//!   groups, from a seed (tests) or the OS;
//! * **media sources** of published streams ([`SourceSpec`]: the built-in
//!   test source, an FLV file or FLV on stdin), one thread each, paced on the
//!   wall clock and started once the member has a neighbour (so that its
//!   first picture is a key frame someone receives); each tag goes to the
//!   host as a [`MemberCommand::SendMedia`];
//! * **FLV sinks** of played streams ([`SinkSpec`]), written from the
//!   member's media events; video from the first key frame on, so that the
//!   file starts at a decodable point; `onMetaData` and other data messages
//!   (type 18) become script-data tags. Tags written are counted in the
//!   member's [`PlayedStream::written`];
//! * **status and quit**: [`GroupHandle::status`] is the member's own
//!   [`GroupStatus`]; [`GroupHandle::quit`] takes a last snapshot, leaves,
//!   waits for the host to stop (at most
//!   [`quit_grace`](GroupMemberConfig::quit_grace)) and returns it.
//!
//! It owns this application task and the sources and sinks (`nimbus group`,
//! in the `nimbus` binary, is its command line). It must not touch sockets, timers or the protocol (the host's
//! and `rtmfp-netgroup`'s), nor route engine events (the member does).
//!
//! ## The application task
//!
//! One task per member sits between its [`GroupHandle`], its host and the
//! receiver of its events. It takes the handle's [`GroupCommand`]s in order
//! (publish and play need it for sources and sinks; every other
//! [`MemberCommand`] goes straight on to the host, still in order), and the
//! host's [`MemberEvent`]s: media to the sinks, a first neighbour to the
//! waiting sources, and every event (media only with
//! [`forward_media`](GroupMemberConfig::forward_media)) to the receiver.
//! The receiver is bounded: **read it, or drop it**. While it is full the
//! task keeps taking commands but stops taking the host's events, so the
//! host and then the member hold them (the member drops media first beyond
//! its bounds); sinks are written only as fast as the receiver is read.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use nimbus_group::{GroupCommand, GroupMember, GroupMemberConfig, MemberCommand};
//! let spec = GroupMemberConfig::spec_for("my-group")?;
//! let cfg = GroupMemberConfig::new("rtmfp://127.0.0.1:1935/app", &spec)?;
//! let (handle, mut events) = GroupMember::spawn(cfg, None)?;
//! handle.send(GroupCommand::Play { name: "cam".into(), sink: Default::default() }).await?;
//! handle.send(MemberCommand::Post(nimbus_group::encode_post_text("hi"))).await?;
//! while let Some(e) = events.recv().await {
//!     println!("{e:?}");
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flash_amf::{amf0, Value};
use rand_core::{RngCore, SeedableRng};
use rtmfp::Machine as _;
use rtmfp_flash::message::parse_connect_url;
use rtmfp_flash::{DhGroup, FlashProfile};
use rtmfp_netgroup::{GroupConfig, GroupSpecifier, Member, MemberConfig};
use rtmfp_tokio::{Host, HostClosed, HostConfig, HostHandle};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use nimbus_media::{
    FlvFileSource, FlvSink, MediaKind, MediaSource, MediaTag, Pacer, TestSource, TestSourceConfig,
};

pub use rtmfp_netgroup::{
    GroupEvent, MemberCommand, MemberEvent, MemberStatus as GroupStatus, PlayedStream,
};

/// Commands waiting for a member's application task; senders wait beyond.
const COMMAND_CAPACITY: usize = 256;
/// Most host events the application task takes per wake-up.
const EVENT_BATCH: usize = 256;
/// How much longer than `quit_grace` a quit waits for the host to stop
/// (the host stops by itself at `quit_grace`: this is scheduling slack).
const QUIT_SLACK: Duration = Duration::from_millis(200);

/// Where a published stream's media comes from.
#[derive(Debug, Clone, Default)]
pub enum SourceSpec {
    /// No source: media is sent with [`MemberCommand::SendMedia`].
    #[default]
    None,
    /// The built-in live test source (H.264 test pattern with a clock, a tone).
    Test(TestSourceConfig),
    /// An FLV file, played once from its start.
    File(PathBuf),
    /// FLV on standard input (`ffmpeg … -f flv -`).
    Stdin,
}

impl SourceSpec {
    /// `test`, `-` (stdin) or a file path.
    pub fn parse(s: &str) -> Self {
        match s {
            "test" => SourceSpec::Test(TestSourceConfig::default()),
            "-" => SourceSpec::Stdin,
            "none" | "" => SourceSpec::None,
            p => SourceSpec::File(PathBuf::from(p)),
        }
    }

    /// Opens the source.
    fn open(self) -> Result<Box<dyn MediaSource + Send>, String> {
        fn boxed(s: impl MediaSource + Send + 'static) -> Box<dyn MediaSource + Send> {
            Box::new(s)
        }
        match self {
            SourceSpec::None => Err("no source".into()),
            SourceSpec::Test(c) => TestSource::new(c).map(boxed).map_err(|e| e.to_string()),
            SourceSpec::File(p) => FlvFileSource::open(&p)
                .map(boxed)
                .map_err(|e| format!("{}: {e}", p.display())),
            SourceSpec::Stdin => FlvFileSource::open("-")
                .map(boxed)
                .map_err(|e| format!("stdin: {e}")),
        }
    }
}

/// Where a played stream's media goes (besides the counters).
#[derive(Debug, Clone, Default)]
pub enum SinkSpec {
    /// Nowhere: only counted.
    #[default]
    None,
    /// An FLV file.
    File(PathBuf),
    /// FLV on standard output (`ffplay -`).
    Stdout,
}

impl SinkSpec {
    /// `-` (stdout) or a file path.
    pub fn parse(s: &str) -> Self {
        match s {
            "-" => SinkSpec::Stdout,
            "" | "none" => SinkSpec::None,
            p => SinkSpec::File(PathBuf::from(p)),
        }
    }

    /// Opens the sink (`None` for [`SinkSpec::None`]).
    fn open(self) -> Result<Option<Sink>, String> {
        let flv = match self {
            SinkSpec::None => return Ok(None),
            SinkSpec::Stdout => FlvSink::open("-", true, true).map_err(|e| format!("stdout: {e}")),
            SinkSpec::File(p) => {
                FlvSink::open(&p, true, true).map_err(|e| format!("{}: {e}", p.display()))
            }
        }?;
        Ok(Some(Sink {
            flv,
            video_started: false,
        }))
    }
}

/// Settings of a member.
#[derive(Debug, Clone)]
pub struct GroupMemberConfig {
    /// Connect URL, `rtmfp://host:port/app`.
    pub url: String,
    /// Server addresses (default: resolved from the URL, port 1935).
    pub servers: Vec<SocketAddr>,
    /// The groupspec (`G:…`).
    pub spec: String,
    /// Group tuning (its `local_addresses` default to the socket's address).
    pub group: GroupConfig,
    /// DH groups of our identity (default: the phone's, 16, 14 and 2; use
    /// group 2 alone to be accepted by librtmfp peers).
    pub dh_groups: Option<Vec<DhGroup>>,
    /// Identity and randomness seed (tests); `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Addresses sent with `setPeerInfo` and advertised to members (default:
    /// the socket's address, or 127.0.0.1:port when bound to an unspecified
    /// address).
    pub local_addresses: Vec<SocketAddr>,
    /// Forward [`GroupEvent::Media`] to the event receiver (off: media is
    /// only counted and recorded).
    pub forward_media: bool,
    /// Longest [`GroupHandle::quit`] waits for the member to leave (its
    /// sessions to close) before its host stops; the host's
    /// `close_timeout`.
    pub quit_grace: Duration,
    /// The host's tunables (its event capacity is also the event
    /// receiver's).
    pub host: HostConfig,
}

impl GroupMemberConfig {
    /// A member of the group `spec` through the server at `url` (resolved).
    pub fn new(url: &str, spec: &str) -> anyhow::Result<Self> {
        Ok(GroupMemberConfig {
            url: url.to_owned(),
            servers: vec![server_addr(url)?],
            spec: spec.to_owned(),
            group: GroupConfig::default(),
            dh_groups: None,
            seed: None,
            local_addresses: Vec::new(),
            forward_media: false,
            quit_grace: Duration::from_millis(300),
            host: HostConfig::default(),
        })
    }

    /// The groupspec for a group name: multicast, posting and object
    /// replication enabled.
    pub fn spec_for(name: &str) -> anyhow::Result<String> {
        Ok(GroupSpecifier::new(name)
            .map_err(|e| anyhow::anyhow!("group name: {e}"))?
            .multicast_enabled(true)
            .posting_enabled(true)
            .object_replication_enabled(true)
            .group_spec_with_authorizations())
    }
}

/// The server address of a connect URL (port 1935 when none is given).
pub fn server_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let u = parse_connect_url(url);
    let host = u
        .host
        .ok_or_else(|| anyhow::anyhow!("no host in {url:?}"))?;
    let port = u.port.unwrap_or(1935);
    (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {host}"))
}

/// A post's bytes for a text: an AMF0 string, as Flash's `NetGroup.post("…")`.
pub fn encode_post_text(text: &str) -> Bytes {
    Bytes::from(amf0::encode(&Value::from(text)).unwrap_or_default())
}

/// The text of a post: its AMF0 string (or a description of what it is).
pub fn decode_post_text(message: &[u8]) -> String {
    match amf0::decode(message) {
        Ok(Value::String(s) | Value::LongString(s)) => s,
        Ok(other) => format!("{other:?}"),
        Err(_) => format!("<{} bytes>", message.len()),
    }
}

/// What the user asks a member to do: publishing and playing with their
/// media I/O, or any other [`MemberCommand`] (`MemberCommand`s convert:
/// publish without a source, play without a sink).
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupCommand {
    /// Publish a multicast stream (`NetStream.publish` on a group stream),
    /// fed by `source` (with [`SourceSpec::None`], by
    /// [`MemberCommand::SendMedia`]).
    Publish {
        /// Stream name.
        name: String,
        /// Media source.
        source: SourceSpec,
    },
    /// Stop publishing (and the stream's source).
    Unpublish(String),
    /// Play a multicast stream into `sink` (a sink given before is closed).
    Play {
        /// Stream name.
        name: String,
        /// Where its media goes.
        sink: SinkSpec,
    },
    /// Anything else: post, send to nearest / neighbours, objects, media of
    /// a stream published without a source, leave.
    Member(MemberCommand),
}

impl From<MemberCommand> for GroupCommand {
    fn from(c: MemberCommand) -> Self {
        match c {
            MemberCommand::Publish(name) => GroupCommand::Publish {
                name,
                source: SourceSpec::None,
            },
            MemberCommand::Unpublish(name) => GroupCommand::Unpublish(name),
            MemberCommand::Play(name) => GroupCommand::Play {
                name,
                sink: SinkSpec::None,
            },
            other => GroupCommand::Member(other),
        }
    }
}

impl GroupCommand {
    /// The same command with publish / unpublish / play in their own
    /// variants.
    fn normalise(self) -> Self {
        match self {
            GroupCommand::Member(c) => c.into(),
            c => c,
        }
    }
}

/// A running member.
#[derive(Debug)]
pub struct GroupHandle {
    commands: mpsc::Sender<GroupCommand>,
    host: HostHandle<Member>,
    task: JoinHandle<anyhow::Result<GroupStatus>>,
    /// Our peer ID (hex).
    pub peer_id: String,
    /// Our group address (hex).
    pub group_address: String,
    /// The socket's address.
    pub local_addr: SocketAddr,
}

impl GroupHandle {
    /// Sends a command, waiting while the member's command queue is full.
    ///
    /// # Errors
    /// [`HostClosed`] once the member has ended.
    pub async fn send(&self, c: impl Into<GroupCommand>) -> Result<(), HostClosed> {
        self.commands.send(c.into()).await.map_err(|_| HostClosed)
    }

    /// The member's host: its counters ([`HostHandle::stats`]) and direct
    /// calls on the member ([`HostHandle::with`]). Commands sent there do
    /// not wait for those sent with [`send`](Self::send).
    pub fn host(&self) -> &HostHandle<Member> {
        &self.host
    }

    /// A status snapshot (`None` once the member has ended).
    pub async fn status(&self) -> Option<GroupStatus> {
        self.host.with(|m, now| m.status(now)).await.ok()
    }

    /// Leaves, and returns the status as it was just before leaving (with
    /// every tag written to the sinks counted). Dropping the handle leaves
    /// too.
    ///
    /// # Errors
    /// When the member's host failed (or was gone before the last snapshot
    /// and could not be waited for).
    pub async fn quit(self) -> anyhow::Result<GroupStatus> {
        let GroupHandle { commands, task, .. } = self;
        // the application task quits when its command queue closes
        drop(commands);
        task.await?
    }
}

/// A NetGroup member on `rtmfp-tokio`'s host, with its media I/O.
#[derive(Debug)]
pub struct GroupMember;

impl GroupMember {
    /// Starts a member on the current tokio runtime, on `socket` (bound
    /// already; `None`: 0.0.0.0:0). Returns its handle and the receiver of
    /// its events (bounded: read it or drop it).
    ///
    /// # Errors
    /// When the socket, the server address, the groupspec or the identity
    /// is unusable.
    pub fn spawn(
        mut cfg: GroupMemberConfig,
        socket: Option<std::net::UdpSocket>,
    ) -> anyhow::Result<(GroupHandle, mpsc::Receiver<MemberEvent>)> {
        let socket = match socket {
            Some(s) => s,
            None => std::net::UdpSocket::bind("0.0.0.0:0")?,
        };
        let local_addr = socket.local_addr()?;
        if cfg.servers.is_empty() {
            cfg.servers = vec![server_addr(&cfg.url)?];
        }
        if cfg.local_addresses.is_empty() {
            let ip = if local_addr.ip().is_unspecified() {
                match local_addr {
                    SocketAddr::V4(_) => "127.0.0.1".parse()?,
                    SocketAddr::V6(_) => "::1".parse()?,
                }
            } else {
                local_addr.ip()
            };
            cfg.local_addresses = vec![SocketAddr::new(ip, local_addr.port())];
        }
        let seed = cfg.seed.unwrap_or_else(|| rand_core::OsRng.next_u64());
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let mut builder = FlashProfile::client();
        if let Some(g) = &cfg.dh_groups {
            builder = builder.groups(g);
        }
        let profile = builder
            .build(&mut rng)
            .map_err(|e| anyhow::anyhow!("cannot build an identity: {e:?}"))?;
        let me = profile.peer_id();
        let now = rtmfp_tokio::now();
        let ep = Member::new_endpoint(profile, &mut rng, now);
        let member_cfg = MemberConfig {
            url: cfg.url.clone(),
            servers: cfg.servers.clone(),
            spec: cfg.spec.clone(),
            local_addresses: cfg.local_addresses.clone(),
            group: cfg.group.clone(),
            // the sinks are fed from media events, and a stream may be
            // played into one at any time
            forward_media: true,
            group_seed: rng.next_u64(),
        };
        let member = Member::new(ep, me, member_cfg, now).map_err(anyhow::Error::msg)?;
        let group_address = member.group_address().to_hex();
        let mut host_cfg = cfg.host.clone();
        host_cfg.close_timeout = cfg.quit_grace;
        let (host, events, host_task) = Host::spawn(member, vec![socket], host_cfg)?;
        let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (user, user_rx) = mpsc::channel(cfg.host.event_capacity.max(1));
        let app = App {
            host: host.clone(),
            host_task,
            events,
            user: Some(user),
            forward_media: cfg.forward_media,
            quit_grace: cfg.quit_grace,
            waiting: BTreeMap::new(),
            running: BTreeMap::new(),
            sinks: BTreeMap::new(),
            written: BTreeMap::new(),
        };
        let task = tokio::spawn(app.run(command_rx));
        Ok((
            GroupHandle {
                commands,
                host,
                task,
                peer_id: me.to_hex(),
                group_address,
                local_addr,
            },
            user_rx,
        ))
    }
}

/// A played stream's FLV sink.
struct Sink {
    flv: FlvSink<Box<dyn std::io::Write + Send>>,
    /// A video key frame (or AVC sequence header) was seen: video is
    /// written from there, so the file starts at a decodable point.
    video_started: bool,
}

/// Stops its media thread when dropped.
struct MediaThread {
    stop: Arc<AtomicBool>,
}

impl Drop for MediaThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The application task of one member (see the crate documentation).
struct App {
    host: HostHandle<Member>,
    host_task: JoinHandle<Member>,
    /// The host's events.
    events: mpsc::Receiver<MemberEvent>,
    /// The owner's events; `None` once its receiver is gone.
    user: Option<mpsc::Sender<MemberEvent>>,
    forward_media: bool,
    quit_grace: Duration,
    /// Sources of published streams waiting for the first neighbour.
    waiting: BTreeMap<String, SourceSpec>,
    /// Sources of published streams running.
    running: BTreeMap<String, MediaThread>,
    sinks: BTreeMap<String, Sink>,
    /// Tags written per stream that the member has not counted yet.
    written: BTreeMap<String, u64>,
}

impl App {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<GroupCommand>,
    ) -> anyhow::Result<GroupStatus> {
        // an event waiting for room in the owner's receiver
        let mut held: Option<MemberEvent> = None;
        let mut host_running = true;
        loop {
            let waiting = held.is_some();
            let user = if waiting { self.user.clone() } else { None };
            tokio::select! {
                c = commands.recv() => match c {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                permit = async move {
                    match user {
                        Some(tx) => tx.reserve_owned().await.ok(),
                        None => None,
                    }
                }, if waiting => match (permit, held.take()) {
                    (Some(p), Some(e)) => {
                        p.send(e);
                    }
                    // the receiver is gone: events are dropped from now on
                    _ => self.user = None,
                },
                e = self.events.recv(), if !waiting && host_running => match e {
                    Some(e) => held = self.on_events(e).await,
                    // the host stopped (the member left): commands are
                    // refused from now on, quit gives the last status
                    None => host_running = false,
                },
            }
        }
        self.quit(held).await
    }

    /// Handles `first` and the host's other waiting events (at most
    /// [`EVENT_BATCH`]); returns the one the owner's receiver had no room
    /// for, if any.
    async fn on_events(&mut self, first: MemberEvent) -> Option<MemberEvent> {
        let mut e = first;
        let mut held = None;
        let mut neighbour = false;
        for taken in 1.. {
            neighbour |= matches!(e, MemberEvent::Group(GroupEvent::NeighborConnect { .. }));
            if let Some(e) = self.on_event(e) {
                if let Err(e) = self.deliver(e) {
                    held = Some(e);
                    break;
                }
            }
            if taken >= EVENT_BATCH {
                break;
            }
            match self.events.try_recv() {
                Ok(next) => e = next,
                Err(_) => break,
            }
        }
        if neighbour {
            self.start_sources().await;
        }
        self.count_written().await;
        held
    }

    /// Writes media to its sink; returns the event if it is for the owner.
    fn on_event(&mut self, e: MemberEvent) -> Option<MemberEvent> {
        let MemberEvent::Group(GroupEvent::Media {
            name,
            message_type,
            timestamp,
            payload,
        }) = &e
        else {
            return Some(e);
        };
        if let Some(s) = self.sinks.get_mut(name) {
            let kind = MediaKind::from_message_type(*message_type);
            let tag = MediaTag::new(kind, *timestamp, payload.clone());
            s.video_started |= tag.is_keyframe();
            if kind != MediaKind::Video || s.video_started {
                match s.flv.write(&tag).and_then(|()| s.flv.flush()) {
                    Ok(()) => *self.written.entry(name.clone()).or_default() += 1,
                    Err(err) => {
                        let failed = format!("recording {name}: {err}");
                        self.sinks.remove(name.as_str());
                        self.report(failed);
                    }
                }
            }
        }
        self.forward_media.then_some(e)
    }

    /// Passes an event to the owner; gives it back when there is no room.
    fn deliver(&mut self, e: MemberEvent) -> Result<(), MemberEvent> {
        let Some(tx) = &self.user else { return Ok(()) };
        match tx.try_send(e) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(e)) => Err(e),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.user = None;
                Ok(())
            }
        }
    }

    /// Reports an error of the application (dropped, and logged, when the
    /// owner's receiver is full).
    fn report(&mut self, error: String) {
        if let Err(e) = self.deliver(MemberEvent::Error(error)) {
            tracing::warn!("event dropped (the receiver is full): {e:?}");
        }
    }

    /// Has the member count the tags written since last time.
    async fn count_written(&mut self) {
        if self.written.is_empty() {
            return;
        }
        let written = std::mem::take(&mut self.written);
        let _ = self
            .host
            .with(move |m, _| {
                for (name, n) in written {
                    m.count_written(&name, n);
                }
            })
            .await;
    }

    async fn command(&mut self, c: GroupCommand) {
        let r = match c.normalise() {
            GroupCommand::Publish { name, source } => self.publish(name, source).await,
            GroupCommand::Unpublish(name) => {
                self.waiting.remove(&name);
                self.running.remove(&name);
                self.host.send(MemberCommand::Unpublish(name)).await
            }
            GroupCommand::Play { name, sink } => self.play(name, sink).await,
            GroupCommand::Member(c) => self.host.send(c).await,
        };
        if r.is_err() {
            self.report("the member has stopped".into());
        }
    }

    async fn publish(&mut self, name: String, source: SourceSpec) -> Result<(), HostClosed> {
        if matches!(source, SourceSpec::None) {
            return self.host.send(MemberCommand::Publish(name)).await;
        }
        if self.waiting.contains_key(&name) || self.running.contains_key(&name) {
            self.report(format!("already publishing {name}"));
            return Ok(());
        }
        let n = name.clone();
        let (accepted, neighbours) = self
            .host
            .with(move |m, now| {
                let before = m.status(now).publishing.contains_key(&n);
                m.handle_command(now, MemberCommand::Publish(n.clone()));
                let after = m.status(now).publishing.contains_key(&n);
                // (refusals are reported by the member)
                (!before && after, m.neighbor_count())
            })
            .await?;
        if !accepted {
            return Ok(());
        }
        if neighbours == 0 {
            self.waiting.insert(name, source);
        } else if let Some(t) = self.start_source(&name, source) {
            self.running.insert(name, t);
        }
        Ok(())
    }

    async fn play(&mut self, name: String, sink: SinkSpec) -> Result<(), HostClosed> {
        let n = name.clone();
        let accepted = self
            .host
            .with(move |m, now| {
                m.handle_command(now, MemberCommand::Play(n.clone()));
                m.status(now).playing.contains_key(&n)
            })
            .await?;
        if !accepted {
            // the member reported why
            return Ok(());
        }
        if let Some(old) = self.sinks.remove(&name) {
            if let Err(e) = old.flv.finish() {
                self.report(format!("recording {name}: {e}"));
            }
        }
        match sink.open() {
            Ok(Some(s)) => {
                self.sinks.insert(name, s);
            }
            Ok(None) => {}
            Err(e) => self.report(format!("recording {name}: {e}")),
        }
        Ok(())
    }

    /// Starts the waiting sources of the streams still published (a
    /// neighbour is there).
    async fn start_sources(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let Ok(published) = self
            .host
            .with(|m, now| {
                m.status(now)
                    .publishing
                    .into_keys()
                    .collect::<BTreeSet<_>>()
            })
            .await
        else {
            return;
        };
        for (name, spec) in std::mem::take(&mut self.waiting) {
            // (not published: the group refused it when joining, and the
            // member said so)
            if published.contains(&name) {
                if let Some(t) = self.start_source(&name, spec) {
                    self.running.insert(name, t);
                }
            }
        }
    }

    /// Opens a source and starts its thread.
    fn start_source(&mut self, name: &str, spec: SourceSpec) -> Option<MediaThread> {
        let source = match spec.open() {
            Ok(s) => s,
            Err(e) => {
                self.report(format!("source of {name}: {e}"));
                return None;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (host, flag, n) = (self.host.clone(), stop.clone(), name.to_owned());
        let spawned = std::thread::Builder::new()
            .name("group-media".into())
            .spawn(move || pump_source(n, source, host, flag));
        match spawned {
            Ok(_) => Some(MediaThread { stop }),
            Err(e) => {
                self.report(format!("media thread: {e}"));
                None
            }
        }
    }

    /// The last snapshot, then leave: sources stop, sinks are closed, the
    /// member leaves, and its host stops (at most `quit_grace` later);
    /// meanwhile its events (but media) still reach the owner if there is
    /// room.
    async fn quit(mut self, held: Option<MemberEvent>) -> anyhow::Result<GroupStatus> {
        self.waiting.clear();
        self.running.clear();
        let written = std::mem::take(&mut self.written);
        let counted = written.clone();
        let snapshot = self
            .host
            .with(move |m, now| {
                for (name, n) in counted {
                    m.count_written(&name, n);
                }
                m.status(now)
            })
            .await
            .ok();
        for (name, s) in std::mem::take(&mut self.sinks) {
            if let Err(e) = s.flv.finish() {
                self.report(format!("recording {name}: {e}"));
            }
        }
        self.host.close().await;
        if let Some(e) = held {
            let _ = self.deliver(e);
        }
        let grace = tokio::time::sleep(self.quit_grace + QUIT_SLACK);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                e = self.events.recv() => match e {
                    Some(MemberEvent::Group(GroupEvent::Media { .. })) => {}
                    Some(e) => {
                        let _ = self.deliver(e);
                    }
                    // the host has stopped
                    None => break,
                },
                () = &mut grace => break,
            }
        }
        let member = if self.host_task.is_finished() {
            self.host_task.await.ok()
        } else {
            tracing::warn!("the member's host did not stop in time");
            self.host_task.abort();
            None
        };
        match (snapshot, member) {
            (Some(s), _) => Ok(s),
            // the host had stopped already (the member left): its last state
            (None, Some(mut m)) => {
                for (name, n) in written {
                    m.count_written(&name, n);
                }
                Ok(m.status(rtmfp_tokio::now()))
            }
            (None, None) => anyhow::bail!("the member's host failed"),
        }
    }
}

/// Feeds a source's tags, on the wall clock, to the member until `stop`
/// (or the end of the source, or the host's).
fn pump_source(
    name: String,
    mut source: Box<dyn MediaSource + Send>,
    host: HostHandle<Member>,
    stop: Arc<AtomicBool>,
) {
    let mut pacer = Pacer::new();
    while !stop.load(Ordering::Relaxed) {
        let tag = match source.next_tag() {
            Ok(Some(tag)) => tag,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("source of {name}: {e}");
                return;
            }
        };
        let now = Instant::now();
        let due = pacer.due(tag.timestamp, now);
        if due > now {
            std::thread::sleep(due - now);
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let media = MemberCommand::SendMedia {
            name: name.clone(),
            message_type: tag.kind.message_type(),
            timestamp: tag.timestamp,
            payload: tag.data,
        };
        if host.blocking_send(media).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_text_round_trips_as_amf0() {
        let b = encode_post_text("hello group");
        assert_eq!(b[0], 0x02); // AMF0 string marker
        assert_eq!(decode_post_text(&b), "hello group");
        assert_eq!(decode_post_text(&[0xff, 0x00]), "<2 bytes>");
    }

    #[test]
    fn spec_for_enables_everything() {
        let s = GroupMemberConfig::spec_for("nimbus").unwrap();
        let p = rtmfp_netgroup::GroupSpec::parse(&s).unwrap();
        assert!(p.multicast_enabled() && p.posting_enabled() && p.object_replication_enabled());
        // the example of docs/netgroup.md
        assert_eq!(
            GroupMemberConfig::spec_for("party").unwrap(),
            "G:027f02010101020103060e706172747900"
        );
    }

    #[test]
    fn server_addr_defaults_to_1935() {
        assert_eq!(
            server_addr("rtmfp://127.0.0.1/app").unwrap(),
            "127.0.0.1:1935".parse().unwrap()
        );
        assert_eq!(
            server_addr("rtmfp://127.0.0.1:2000/app").unwrap(),
            "127.0.0.1:2000".parse().unwrap()
        );
    }

    #[test]
    fn member_commands_become_group_commands() {
        let c = GroupCommand::Member(MemberCommand::Unpublish("cam".into())).normalise();
        assert!(matches!(c, GroupCommand::Unpublish(n) if n == "cam"));
        let c = GroupCommand::from(MemberCommand::Play("cam".into()));
        assert!(matches!(
            c,
            GroupCommand::Play {
                sink: SinkSpec::None,
                ..
            }
        ));
        let c = GroupCommand::from(MemberCommand::Post(Bytes::from_static(b"x")));
        assert!(matches!(c, GroupCommand::Member(MemberCommand::Post(_))));
    }
}
