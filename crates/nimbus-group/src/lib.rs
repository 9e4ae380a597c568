//! A NetGroup member on a tokio task: one UDP socket, one engine with a
//! Flash identity, a `NetConnection` to the rendezvous server and the
//! sans-IO [`NetGroup`] of `rtmfp_netgroup`.
//!
//! [`GroupMember::spawn`] starts a member on the current tokio runtime and
//! returns a [`GroupHandle`] to send it [`GroupCommand`]s and the receiver of
//! its [`MemberEvent`]s. The member connects to the server, sends
//! `setPeerInfo` with its local addresses, then joins the group with its
//! join flow associated to the NetConnection's control flow (as Flash does).
//!
//! Every engine event is offered to the [`NetGroup`] first, then to the
//! `NetConnection`; incoming flows nobody claims are rejected. The task wakes
//! at the earliest of the engine's and the group's timers.
//!
//! Publishing takes a [`SourceSpec`] (the built-in test source, an FLV file or
//! FLV on stdin), paced on the wall clock by a media thread and started once
//! the member has a neighbour (so its first picture is a key frame someone
//! receives). Played streams can be written to FLV files ([`SinkSpec`]);
//! `onMetaData` and other data messages (type 18) become script-data tags.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use nimbus_group::{GroupCommand, GroupMember, GroupMemberConfig};
//! let cfg = GroupMemberConfig::new("rtmfp://127.0.0.1:1935/app", &GroupMemberConfig::spec_for("my-group")?)?;
//! let (handle, mut events) = GroupMember::spawn(cfg, None)?;
//! handle.send(GroupCommand::Play { name: "cam".into(), sink: Default::default() });
//! while let Some(e) = events.recv().await {
//!     println!("{e:?}");
//! }
//! # Ok(()) }
//! ```

pub mod cli;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flash_amf::{amf0, Object, Value};
use rand_core::{RngCore, SeedableRng};
use rtmfp::{Endpoint, EndpointConfig, Event};
use rtmfp_flash::message::{parse_connect_url, NcEvent, NetConnection};
use rtmfp_flash::{DhGroup, FlashProfile, PeerId};
use rtmfp_netgroup::{GroupConfig, GroupEvent, GroupSpecifier, GroupStats, NetGroup};
use tokio::sync::{mpsc, oneshot};

use nimbus_media::{
    FlvFileSource, FlvSink, MediaKind, MediaSource, MediaTag, Pacer, TestSource, TestSourceConfig,
};

/// Where a published stream's media comes from.
#[derive(Debug, Clone, Default)]
pub enum SourceSpec {
    /// No source: media is sent with [`GroupCommand::SendMedia`].
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
    /// Forward [`GroupEvent::Media`] as events (off: media is only counted
    /// and recorded).
    pub forward_media: bool,
    /// How long `Quit` waits for the leave to go out.
    pub quit_grace: Duration,
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

/// What the user asks a member to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupCommand {
    /// Publish a multicast stream (`NetStream.publish` on a group stream),
    /// fed by `source` (with [`SourceSpec::None`], by `SendMedia`).
    Publish {
        /// Stream name.
        name: String,
        /// Media source.
        source: SourceSpec,
    },
    /// One media message on a stream we publish.
    SendMedia {
        /// Stream name.
        name: String,
        /// RTMP message type (8, 9, 18).
        message_type: u8,
        /// Timestamp (ms).
        timestamp: u32,
        /// FLV tag body.
        payload: Bytes,
    },
    /// Stop publishing.
    Unpublish(String),
    /// Play a multicast stream into `sink`.
    Play {
        /// Stream name.
        name: String,
        /// Where its media goes.
        sink: SinkSpec,
    },
    /// Post to every member (bytes; see [`encode_post_text`]).
    Post(Bytes),
    /// Route a message to the member nearest a group address.
    SendToNearest {
        /// Group address.
        address: [u8; 32],
        /// The message.
        message: Bytes,
    },
    /// Send to one neighbour.
    SendToNeighbor {
        /// Its peer ID.
        peer: PeerId,
        /// The message.
        message: Bytes,
    },
    /// Send to every neighbour.
    SendToAllNeighbors(Bytes),
    /// Serve objects `start..=end`.
    AddHaveObjects(u64, u64),
    /// Fetch objects `start..=end`.
    AddWantObjects(u64, u64),
    /// Answer a replication request with the object.
    WriteRequestedObject {
        /// Request ID (from [`GroupEvent::ReplicationRequest`]).
        request: u64,
        /// The object.
        object: Bytes,
    },
    /// Refuse a replication request.
    DenyRequestedObject(u64),
    /// A status snapshot.
    Status(oneshot::Sender<GroupStatus>),
    /// Leave the group, close the connection and end the task.
    Quit,
}

/// What a member reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MemberEvent {
    /// Connected to the server (`NetConnection.Connect.Success`).
    Connected,
    /// The connection failed or was refused.
    ConnectFailed(String),
    /// The server connection closed.
    Disconnected,
    /// The join went to the server.
    Joined,
    /// An event of the group (media only with `forward_media`).
    Group(GroupEvent),
    /// A command was refused or failed.
    Error(String),
    /// Something worth telling.
    Notice(String),
}

/// Counters of one played stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlayedStream {
    /// Video messages.
    pub video: u64,
    /// Audio messages.
    pub audio: u64,
    /// Data messages (`onMetaData`…).
    pub data: u64,
    /// Tags written to the sink (video from the first key frame on).
    pub written: u64,
    /// Join → first media message of this stream.
    pub first_media_after_join: Option<Duration>,
    /// Join → first video message of this stream.
    pub first_video_after_join: Option<Duration>,
}

/// A status snapshot.
#[derive(Debug, Clone, Default)]
pub struct GroupStatus {
    /// Our peer ID (hex).
    pub peer_id: String,
    /// Our group address (hex).
    pub group_address: String,
    /// The group ID (hex).
    pub group_id: String,
    /// Connected to the server.
    pub connected: bool,
    /// Joined.
    pub joined: bool,
    /// Connected neighbours (peer IDs, hex).
    pub neighbors: Vec<String>,
    /// Estimated member count.
    pub estimated_members: usize,
    /// The group's counters.
    pub stats: GroupStats,
    /// Streams we publish, and media messages sent on each.
    pub publishing: BTreeMap<String, u64>,
    /// Streams we play.
    pub playing: BTreeMap<String, PlayedStream>,
    /// Posts received.
    pub posts_received: u64,
    /// Join → first media message of any played stream.
    pub first_media_after_join: Option<Duration>,
    /// Start → join sent (the server connection took this long).
    pub joined_after: Option<Duration>,
    /// Since the member started.
    pub uptime: Duration,
}

/// A running member.
#[derive(Debug)]
pub struct GroupHandle {
    /// Commands in.
    pub commands: mpsc::UnboundedSender<GroupCommand>,
    /// The member's task; it returns the status as it was when asked to
    /// quit (before leaving).
    pub task: tokio::task::JoinHandle<anyhow::Result<GroupStatus>>,
    /// Our peer ID (hex).
    pub peer_id: String,
    /// Our group address (hex).
    pub group_address: String,
    /// The socket's address.
    pub local_addr: SocketAddr,
}

impl GroupHandle {
    /// Sends a command (ignored once the member has ended).
    pub fn send(&self, c: GroupCommand) {
        let _ = self.commands.send(c);
    }

    /// A status snapshot (`None` once the member has ended).
    pub async fn status(&self) -> Option<GroupStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(GroupCommand::Status(tx)).ok()?;
        rx.await.ok()
    }

    /// Leaves, and waits for the task's final status.
    pub async fn quit(self) -> anyhow::Result<GroupStatus> {
        let _ = self.commands.send(GroupCommand::Quit);
        self.task.await?
    }
}

/// A NetGroup member driven on tokio.
#[derive(Debug)]
pub struct GroupMember;

impl GroupMember {
    /// Starts a member on the current tokio runtime, on `socket` (bound
    /// already; `None`: 0.0.0.0:0).
    pub fn spawn(
        mut cfg: GroupMemberConfig,
        socket: Option<std::net::UdpSocket>,
    ) -> anyhow::Result<(GroupHandle, mpsc::UnboundedReceiver<MemberEvent>)> {
        let socket = match socket {
            Some(s) => s,
            None => std::net::UdpSocket::bind("0.0.0.0:0")?,
        };
        socket.set_nonblocking(true)?;
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
        if cfg.group.local_addresses.is_empty() {
            cfg.group.local_addresses = cfg.local_addresses.clone();
        }
        // check the groupspec now rather than after connecting
        rtmfp_netgroup::GroupSpec::parse(&cfg.spec)
            .map_err(|e| anyhow::anyhow!("groupspec: {e}"))?;
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
        let group_address = PeerId(rtmfp_netgroup::wire::group_address(&me.0)).to_hex();
        let ep = Endpoint::new(
            EndpointConfig::default(),
            Box::new(profile),
            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(rng.next_u64())),
            Instant::now(),
        );
        let (ctx, crx) = mpsc::unbounded_channel();
        let (etx, erx) = mpsc::unbounded_channel();
        let (media_tx, media_rx) = mpsc::channel(256);
        let mut driver = Driver {
            ep,
            nc: None,
            group: None,
            me,
            group_seed: rng.next_u64(),
            cfg,
            events: etx,
            out: Vec::with_capacity(2048),
            started: Instant::now(),
            joined_at: None,
            connected: false,
            publishing: BTreeMap::new(),
            pending_sources: Vec::new(),
            media_tx,
            media_rx,
            media_threads: Vec::new(),
            playing: BTreeMap::new(),
            posts_received: 0,
            first_media: None,
        };
        let task = tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::from_std(socket)?;
            driver.run(sock, crx).await
        });
        Ok((
            GroupHandle {
                commands: ctx,
                task,
                peer_id: me.to_hex(),
                group_address,
                local_addr,
            },
            erx,
        ))
    }
}

struct Played {
    counters: PlayedStream,
    sink: Option<FlvSink<Box<dyn std::io::Write + Send>>>,
    /// A video key frame (or AVC sequence header) was seen: video is
    /// written from there, so the file starts at a decodable point.
    video_started: bool,
}

/// Stops its media thread when dropped.
struct MediaThread {
    stop: Arc<AtomicBool>,
    name: String,
}

impl Drop for MediaThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Driver {
    ep: Endpoint,
    nc: Option<NetConnection>,
    group: Option<NetGroup>,
    me: PeerId,
    group_seed: u64,
    cfg: GroupMemberConfig,
    events: mpsc::UnboundedSender<MemberEvent>,
    out: Vec<u8>,
    started: Instant,
    joined_at: Option<Instant>,
    connected: bool,
    /// Published streams and media messages sent on each.
    publishing: BTreeMap<String, u64>,
    /// Sources waiting for the first neighbour.
    pending_sources: Vec<(String, SourceSpec)>,
    media_tx: mpsc::Sender<(String, MediaTag)>,
    media_rx: mpsc::Receiver<(String, MediaTag)>,
    media_threads: Vec<MediaThread>,
    playing: BTreeMap<String, Played>,
    posts_received: u64,
    first_media: Option<Duration>,
}

impl Driver {
    fn emit(&self, e: MemberEvent) {
        let _ = self.events.send(e);
    }

    async fn run(
        &mut self,
        sock: tokio::net::UdpSocket,
        mut commands: mpsc::UnboundedReceiver<GroupCommand>,
    ) -> anyhow::Result<GroupStatus> {
        let now = Instant::now();
        let mut nc = NetConnection::connect(
            &mut self.ep,
            now,
            &self.cfg.url,
            &self.cfg.servers,
            Object::new(),
        )?;
        // sent as `setPeerInfo` once connected
        nc.set_peer_addresses(&self.cfg.local_addresses);
        self.nc = Some(nc);
        let mut rbuf = vec![0u8; 65_536];
        let mut quit_deadline: Option<Instant> = None;
        let mut final_status: Option<GroupStatus> = None;
        let mut commands_open = true;
        loop {
            let now = Instant::now();
            self.process(now);
            self.flush(&sock);
            if let Some(d) = quit_deadline {
                if now >= d {
                    break;
                }
            }
            let mut wake = self.ep.poll_timeout();
            for t in [
                self.group.as_ref().and_then(NetGroup::poll_timeout),
                quit_deadline,
            ]
            .into_iter()
            .flatten()
            {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
            let sleep_until = wake.unwrap_or_else(|| now + Duration::from_secs(3600));
            tokio::select! {
                r = sock.recv_from(&mut rbuf) => {
                    let now = Instant::now();
                    if let Ok((n, from)) = r {
                        self.ep.handle_datagram(now, from, &rbuf[..n]);
                    }
                    for _ in 0..256 {
                        match sock.try_recv_from(&mut rbuf) {
                            Ok((n, from)) => self.ep.handle_datagram(now, from, &rbuf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(sleep_until.into()) => {}
                c = commands.recv(), if commands_open => {
                    let now = Instant::now();
                    match c {
                        Some(GroupCommand::Quit) | None => {
                            commands_open = false;
                            if quit_deadline.is_none() {
                                // the figures as they were in the group
                                final_status = Some(self.status(now));
                                self.leave(now);
                                quit_deadline = Some(now + self.cfg.quit_grace);
                            }
                        }
                        Some(c) => self.command(now, c),
                    }
                }
                Some((name, tag)) = self.media_rx.recv() => {
                    let now = Instant::now();
                    self.send_tag(now, &name, &tag);
                    while let Ok((name, tag)) = self.media_rx.try_recv() {
                        self.send_tag(now, &name, &tag);
                    }
                }
            }
        }
        self.flush(&sock);
        self.media_threads.clear();
        for p in self.playing.values_mut() {
            if let Some(s) = p.sink.take() {
                let _ = s.finish();
            }
        }
        let mut status = final_status.unwrap_or_else(|| self.status(Instant::now()));
        // tags written after the snapshot (the sinks' final flush)
        for (name, p) in &self.playing {
            if let Some(c) = status.playing.get_mut(name) {
                *c = p.counters.clone();
            }
        }
        Ok(status)
    }

    /// Timers and events.
    fn process(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        if let Some(g) = self.group.as_mut() {
            if g.poll_timeout().is_some_and(|t| t <= now) {
                g.handle_timeout(&mut self.ep, now);
            }
        }
        while let Some(ev) = self.ep.poll_event() {
            if let Some(g) = self.group.as_mut() {
                if g.on_event(&mut self.ep, now, &ev) {
                    continue;
                }
            }
            if let Some(nc) = self.nc.as_mut() {
                if nc.on_event(&mut self.ep, now, &ev) {
                    continue;
                }
            }
            if let Event::IncomingFlow { session, flow, .. } = ev {
                let _ = self.ep.reject_flow(now, session, flow, 0);
            }
        }
        self.connection_events(now);
        self.group_events(now);
        self.start_pending_sources();
    }

    fn connection_events(&mut self, now: Instant) {
        let Some(nc) = self.nc.as_mut() else { return };
        let mut evs = Vec::new();
        while let Some(e) = nc.poll_event() {
            evs.push(e);
        }
        for e in evs {
            match e {
                NcEvent::Connected(_) => {
                    self.connected = true;
                    self.emit(MemberEvent::Connected);
                    if self.group.is_none() {
                        self.join(now);
                    }
                }
                NcEvent::ConnectFailed(s) => {
                    self.emit(MemberEvent::ConnectFailed(format!(
                        "{} {}",
                        s.code, s.description
                    )));
                }
                NcEvent::Closed => {
                    if self.connected {
                        self.emit(MemberEvent::Disconnected);
                    }
                    self.connected = false;
                }
                _ => {}
            }
        }
    }

    fn join(&mut self, now: Instant) {
        let Some(nc) = self.nc.as_ref() else { return };
        let g = NetGroup::new(
            &self.cfg.spec,
            self.me,
            nc.session(),
            nc.control_flow_id(),
            self.cfg.servers.clone(),
            self.cfg.group.clone(),
            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(self.group_seed)),
        );
        let mut g = match g {
            Ok(g) => g,
            Err(e) => {
                self.emit(MemberEvent::Error(format!("group: {e}")));
                return;
            }
        };
        if let Err(e) = g.join(&mut self.ep, now) {
            self.emit(MemberEvent::Error(format!("join: {e}")));
            return;
        }
        // streams asked for before the join
        for name in self.playing.keys() {
            let _ = g.play(name);
        }
        let mut failed = Vec::new();
        for name in self.publishing.keys() {
            if let Err(e) = g.publish(&mut self.ep, now, name) {
                failed.push(format!("publish {name}: {e}"));
            }
        }
        self.group = Some(g);
        self.joined_at = Some(now);
        self.emit(MemberEvent::Joined);
        for f in failed {
            self.emit(MemberEvent::Error(f));
        }
    }

    fn group_events(&mut self, now: Instant) {
        let Some(g) = self.group.as_mut() else { return };
        let mut evs = Vec::new();
        while let Some(e) = g.poll_event() {
            evs.push(e);
        }
        for e in evs {
            match e {
                GroupEvent::Media {
                    ref name,
                    message_type,
                    timestamp,
                    ref payload,
                } => {
                    let since_join = self.joined_at.map(|j| now.saturating_duration_since(j));
                    if self.first_media.is_none() {
                        self.first_media = since_join;
                    }
                    if let Some(p) = self.playing.get_mut(name) {
                        let kind = match message_type {
                            8 => {
                                p.counters.audio += 1;
                                MediaKind::Audio
                            }
                            9 => {
                                p.counters.video += 1;
                                if p.counters.first_video_after_join.is_none() {
                                    p.counters.first_video_after_join = since_join;
                                }
                                MediaKind::Video
                            }
                            _ => {
                                p.counters.data += 1;
                                MediaKind::Data
                            }
                        };
                        if p.counters.first_media_after_join.is_none() {
                            p.counters.first_media_after_join = since_join;
                        }
                        let mut failed = None;
                        let tag = MediaTag::new(kind, timestamp, payload.clone());
                        p.video_started |= tag.is_keyframe();
                        let skip = kind == MediaKind::Video && !p.video_started;
                        if let (Some(s), false) = (p.sink.as_mut(), skip) {
                            match s.write(&tag).and_then(|()| s.flush()) {
                                Ok(()) => p.counters.written += 1,
                                Err(err) => failed = Some(format!("recording {name}: {err}")),
                            }
                        }
                        if let Some(f) = failed {
                            p.sink = None;
                            self.emit(MemberEvent::Error(f));
                        }
                    }
                    if self.cfg.forward_media {
                        self.emit(MemberEvent::Group(e));
                    }
                }
                GroupEvent::PostingNotify { .. } => {
                    self.posts_received += 1;
                    self.emit(MemberEvent::Group(e));
                }
                other => self.emit(MemberEvent::Group(other)),
            }
        }
    }

    fn command(&mut self, now: Instant, c: GroupCommand) {
        let r: Result<(), String> = match c {
            GroupCommand::Publish { name, source } => self.publish(now, name, source),
            GroupCommand::SendMedia {
                name,
                message_type,
                timestamp,
                payload,
            } => match self.group.as_mut() {
                Some(g) => {
                    let r =
                        g.send_media(&mut self.ep, now, &name, message_type, timestamp, &payload);
                    if r.is_ok() {
                        *self.publishing.entry(name).or_default() += 1;
                    }
                    r.map_err(|e| e.to_string())
                }
                None => Err("not joined yet".into()),
            },
            GroupCommand::Unpublish(name) => {
                self.media_threads.retain(|t| t.name != name);
                self.pending_sources.retain(|(n, _)| *n != name);
                self.publishing.remove(&name);
                match self.group.as_mut() {
                    Some(g) => g
                        .unpublish(&mut self.ep, now, &name)
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
            GroupCommand::Play { name, sink } => self.play(name, sink),
            GroupCommand::Post(message) => match self.group.as_mut() {
                Some(g) => match g.post(&mut self.ep, now, message) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("not posted: the same message was posted recently".into()),
                    Err(e) => Err(e.to_string()),
                },
                None => Err("not joined yet".into()),
            },
            GroupCommand::SendToNearest { address, message } => match self.group.as_mut() {
                Some(g) => {
                    if g.send_to_nearest(&mut self.ep, now, address, message) {
                        Ok(())
                    } else {
                        Err("sendToNearest: not sent".into())
                    }
                }
                None => Err("not joined yet".into()),
            },
            GroupCommand::SendToNeighbor { peer, message } => match self.group.as_mut() {
                Some(g) => {
                    if g.send_to_neighbor(&mut self.ep, now, peer, message) {
                        Ok(())
                    } else {
                        Err(format!("sendToNeighbor: {peer} is not a neighbour"))
                    }
                }
                None => Err("not joined yet".into()),
            },
            GroupCommand::SendToAllNeighbors(message) => match self.group.as_mut() {
                Some(g) => {
                    let n = g.send_to_all_neighbors(&mut self.ep, now, message);
                    self.emit(MemberEvent::Notice(format!("sent to {n} neighbours")));
                    Ok(())
                }
                None => Err("not joined yet".into()),
            },
            GroupCommand::AddHaveObjects(a, b) => match self.group.as_mut() {
                Some(g) => g
                    .add_have_objects(&mut self.ep, now, a, b)
                    .map_err(|e| e.to_string()),
                None => Err("not joined yet".into()),
            },
            GroupCommand::AddWantObjects(a, b) => match self.group.as_mut() {
                Some(g) => g.add_want_objects(a, b).map_err(|e| e.to_string()),
                None => Err("not joined yet".into()),
            },
            GroupCommand::WriteRequestedObject { request, object } => match self.group.as_mut() {
                Some(g) => {
                    if g.write_requested_object(&mut self.ep, now, request, object) {
                        Ok(())
                    } else {
                        Err(format!("no replication request {request}"))
                    }
                }
                None => Err("not joined yet".into()),
            },
            GroupCommand::DenyRequestedObject(request) => {
                if let Some(g) = self.group.as_mut() {
                    g.deny_requested_object(&mut self.ep, now, request);
                }
                Ok(())
            }
            GroupCommand::Status(tx) => {
                let _ = tx.send(self.status(now));
                Ok(())
            }
            GroupCommand::Quit => Ok(()),
        };
        if let Err(e) = r {
            self.emit(MemberEvent::Error(e));
        }
    }

    fn publish(&mut self, now: Instant, name: String, source: SourceSpec) -> Result<(), String> {
        if self.publishing.contains_key(&name) {
            return Err(format!("already publishing {name}"));
        }
        if let Some(g) = self.group.as_mut() {
            g.publish(&mut self.ep, now, &name)
                .map_err(|e| e.to_string())?;
        }
        self.publishing.insert(name.clone(), 0);
        if !matches!(source, SourceSpec::None) {
            self.pending_sources.push((name, source));
        }
        Ok(())
    }

    fn play(&mut self, name: String, sink: SinkSpec) -> Result<(), String> {
        if let Some(g) = self.group.as_mut() {
            g.play(&name).map_err(|e| e.to_string())?;
        }
        let sink = match sink {
            SinkSpec::None => None,
            SinkSpec::Stdout => {
                Some(FlvSink::open("-", true, true).map_err(|e| format!("stdout: {e}"))?)
            }
            SinkSpec::File(p) => {
                Some(FlvSink::open(&p, true, true).map_err(|e| format!("{}: {e}", p.display()))?)
            }
        };
        let counters = self
            .playing
            .remove(&name)
            .map(|p| p.counters)
            .unwrap_or_default();
        self.playing.insert(
            name,
            Played {
                counters,
                sink,
                video_started: false,
            },
        );
        Ok(())
    }

    /// Starts the sources of published streams once we have a neighbour.
    fn start_pending_sources(&mut self) {
        if self.pending_sources.is_empty()
            || self.group.as_ref().is_none_or(|g| g.neighbor_count() == 0)
        {
            return;
        }
        for (name, spec) in std::mem::take(&mut self.pending_sources) {
            let source: Result<Box<dyn MediaSource + Send>, String> = match spec {
                SourceSpec::None => continue,
                SourceSpec::Test(c) => TestSource::new(c)
                    .map(|s| Box::new(s) as Box<dyn MediaSource + Send>)
                    .map_err(|e| e.to_string()),
                SourceSpec::File(p) => FlvFileSource::open(&p)
                    .map(|s| Box::new(s) as Box<dyn MediaSource + Send>)
                    .map_err(|e| format!("{}: {e}", p.display())),
                SourceSpec::Stdin => FlvFileSource::open("-")
                    .map(|s| Box::new(s) as Box<dyn MediaSource + Send>)
                    .map_err(|e| format!("stdin: {e}")),
            };
            let source = match source {
                Ok(s) => s,
                Err(e) => {
                    self.emit(MemberEvent::Error(format!("source of {name}: {e}")));
                    continue;
                }
            };
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, flag, n) = (self.media_tx.clone(), stop.clone(), name.clone());
            let spawned = std::thread::Builder::new()
                .name("group-media".into())
                .spawn(move || pump_source(n, source, tx, flag));
            match spawned {
                Ok(_) => self.media_threads.push(MediaThread { stop, name }),
                Err(e) => self.emit(MemberEvent::Error(format!("media thread: {e}"))),
            }
        }
    }

    fn send_tag(&mut self, now: Instant, name: &str, tag: &MediaTag) {
        let Some(g) = self.group.as_mut() else { return };
        let t = tag.kind.message_type();
        if g.send_media(&mut self.ep, now, name, t, tag.timestamp, &tag.data)
            .is_ok()
        {
            if let Some(n) = self.publishing.get_mut(name) {
                *n += 1;
            }
        }
    }

    fn leave(&mut self, now: Instant) {
        self.media_threads.clear();
        if let Some(g) = self.group.as_mut() {
            g.leave(&mut self.ep, now);
        }
        if let Some(nc) = self.nc.as_mut() {
            nc.close(&mut self.ep, now);
        }
    }

    fn flush(&mut self, sock: &tokio::net::UdpSocket) {
        let now = Instant::now();
        while let Some(dst) = self.ep.poll_transmit(now, &mut self.out) {
            // a full socket buffer (or another address family) drops: the
            // protocol recovers
            let _ = sock.try_send_to(&self.out, dst);
        }
    }

    fn status(&self, now: Instant) -> GroupStatus {
        let g = self.group.as_ref();
        GroupStatus {
            peer_id: self.me.to_hex(),
            group_address: PeerId(rtmfp_netgroup::wire::group_address(&self.me.0)).to_hex(),
            group_id: rtmfp_netgroup::GroupSpec::parse(&self.cfg.spec)
                .map(|s| s.group_id_hex())
                .unwrap_or_default(),
            connected: self.connected,
            joined: g.is_some(),
            neighbors: g
                .map(|g| g.neighbors().iter().map(PeerId::to_hex).collect())
                .unwrap_or_default(),
            estimated_members: g.map_or(0, NetGroup::estimated_member_count),
            stats: g.map(NetGroup::stats).unwrap_or_default(),
            publishing: self.publishing.clone(),
            playing: self
                .playing
                .iter()
                .map(|(k, v)| (k.clone(), v.counters.clone()))
                .collect(),
            posts_received: self.posts_received,
            first_media_after_join: self.first_media,
            joined_after: self
                .joined_at
                .map(|j| j.saturating_duration_since(self.started)),
            uptime: now.saturating_duration_since(self.started),
        }
    }
}

/// Feeds a source's tags, on the wall clock, to the member until `stop`.
fn pump_source(
    name: String,
    mut source: Box<dyn MediaSource + Send>,
    tx: mpsc::Sender<(String, MediaTag)>,
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
                if stop.load(Ordering::Relaxed) || tx.blocking_send((name.clone(), tag)).is_err() {
                    return;
                }
            }
            Ok(None) | Err(_) => return,
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
}
