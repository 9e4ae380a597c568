//! [`Member`]: one NetGroup member as a whole, sans-IO — its engine, its
//! `NetConnection` to the rendezvous server and its [`NetGroup`], with the
//! event routing between them written once, as a [`Machine`].
//!
//! The member connects to the server, sends `setPeerInfo` with its local
//! addresses, then joins the group with its join flow associated to the
//! NetConnection's control flow (as Flash does). Every engine event is
//! offered to the group first, then to the NetConnection; incoming flows
//! nobody claims are rejected. Streams asked to be played or published
//! before the join are played or published once joined.
//!
//! It keeps the counters a member reports ([`MemberStatus`]); media sources
//! and sinks, files and threads are its host application's.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flash_amf::Object;
use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointConfig, Event, Machine};
use rtmfp_flash::message::{NcEvent, NetConnection};
use rtmfp_flash::{FlashProfile, PeerId};

use crate::{GroupConfig, GroupEvent, GroupSpec, GroupStats, NetGroup};

/// Most media events waiting for the owner; beyond it, media events are
/// dropped (and counted) rather than memory growing. Other events (fewer,
/// and not to be lost: a neighbour, a post) have as many places again.
const MAX_EVENTS: usize = 4096;

/// Settings of a [`Member`].
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// Connect URL, `rtmfp://host:port/app`.
    pub url: String,
    /// The server's addresses.
    pub servers: Vec<SocketAddr>,
    /// The groupspec (`G:…`).
    pub spec: String,
    /// Addresses sent with `setPeerInfo` and advertised to members.
    pub local_addresses: Vec<SocketAddr>,
    /// Group tuning (its `local_addresses` default to the ones above).
    pub group: GroupConfig,
    /// Report [`GroupEvent::Media`] as events (off: media is only counted).
    pub forward_media: bool,
    /// Seed of the group's randomness (topology choices).
    pub group_seed: u64,
}

/// What the owner asks a member to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum MemberCommand {
    /// Publish a multicast stream (`NetStream.publish` on a group stream).
    Publish(String),
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
    /// Play a multicast stream.
    Play(String),
    /// Post to every member.
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
    /// Leave the group and close the connection; the member is done once
    /// the server session has closed.
    Leave,
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
    /// An event of the group (media only with
    /// [`MemberConfig::forward_media`]).
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
    /// Tags the application wrote to its sink (it fills this in).
    pub written: u64,
    /// Join → first media message of this stream.
    pub first_media_after_join: Option<Duration>,
    /// Join → first video message of this stream.
    pub first_video_after_join: Option<Duration>,
}

/// A status snapshot.
#[derive(Debug, Clone, Default)]
pub struct MemberStatus {
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
    /// Events dropped because the owner did not take events fast enough
    /// (media first: other events only once twice as many wait).
    pub events_dropped: u64,
}

/// One NetGroup member: engine, server connection and group membership.
pub struct Member {
    ep: Endpoint,
    nc: NetConnection,
    group: Option<NetGroup>,
    me: PeerId,
    cfg: MemberConfig,
    started: Instant,
    joined_at: Option<Instant>,
    connected: bool,
    leaving: bool,
    publishing: BTreeMap<String, u64>,
    playing: BTreeMap<String, PlayedStream>,
    posts_received: u64,
    first_media: Option<Duration>,
    events: VecDeque<MemberEvent>,
    events_dropped: u64,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("me", &self.me)
            .field("connected", &self.connected)
            .field("joined", &self.group.is_some())
            .finish_non_exhaustive()
    }
}

impl Member {
    /// An endpoint for a member whose identity is `profile`: default engine
    /// settings, its randomness a ChaCha20 generator seeded from `rng`.
    pub fn new_endpoint(
        profile: FlashProfile,
        rng: &mut impl rand_core::RngCore,
        now: Instant,
    ) -> Endpoint {
        Endpoint::new(
            EndpointConfig::default(),
            Box::new(profile),
            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(rng.next_u64())),
            now,
        )
    }

    /// A member on `ep` (whose crypto profile holds the identity `me`);
    /// starts connecting to the server at once.
    ///
    /// # Errors
    /// When the groupspec does not parse or the connect cannot start.
    pub fn new(
        mut ep: Endpoint,
        me: PeerId,
        mut cfg: MemberConfig,
        now: Instant,
    ) -> Result<Self, String> {
        GroupSpec::parse(&cfg.spec).map_err(|e| format!("groupspec: {e}"))?;
        if cfg.group.local_addresses.is_empty() {
            cfg.group.local_addresses = cfg.local_addresses.clone();
        }
        let mut nc = NetConnection::connect(&mut ep, now, &cfg.url, &cfg.servers, Object::new())
            .map_err(|e| format!("connect: {e}"))?;
        // sent as `setPeerInfo` once connected
        nc.set_peer_addresses(&cfg.local_addresses);
        Ok(Self {
            ep,
            nc,
            group: None,
            me,
            cfg,
            started: now,
            joined_at: None,
            connected: false,
            leaving: false,
            publishing: BTreeMap::new(),
            playing: BTreeMap::new(),
            posts_received: 0,
            first_media: None,
            events: VecDeque::new(),
            events_dropped: 0,
        })
    }

    /// Our peer ID.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// Our group address.
    pub fn group_address(&self) -> PeerId {
        PeerId(crate::wire::group_address(&self.me.0))
    }

    /// The group, once joined.
    pub fn group(&self) -> Option<&NetGroup> {
        self.group.as_ref()
    }

    /// The engine.
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// Connected neighbours.
    pub fn neighbor_count(&self) -> usize {
        self.group.as_ref().map_or(0, NetGroup::neighbor_count)
    }

    /// A status snapshot.
    pub fn status(&self, now: Instant) -> MemberStatus {
        let g = self.group.as_ref();
        MemberStatus {
            peer_id: self.me.to_hex(),
            group_address: self.group_address().to_hex(),
            group_id: GroupSpec::parse(&self.cfg.spec)
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
            playing: self.playing.clone(),
            posts_received: self.posts_received,
            first_media_after_join: self.first_media,
            joined_after: self
                .joined_at
                .map(|j| j.saturating_duration_since(self.started)),
            uptime: now.saturating_duration_since(self.started),
            events_dropped: self.events_dropped,
        }
    }

    /// Adds `n` to a played stream's `written` counter (the application's
    /// sink wrote tags).
    pub fn count_written(&mut self, name: &str, n: u64) {
        if let Some(p) = self.playing.get_mut(name) {
            p.written += n;
        }
    }

    fn emit(&mut self, e: MemberEvent) {
        let limit = match e {
            MemberEvent::Group(GroupEvent::Media { .. }) => MAX_EVENTS,
            _ => 2 * MAX_EVENTS,
        };
        if self.events.len() >= limit {
            self.events_dropped += 1;
            return;
        }
        self.events.push_back(e);
    }

    /// After every input: engine events routed, the connection's and the
    /// group's events turned into ours.
    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.ep.poll_event() {
            if let Some(g) = self.group.as_mut() {
                if g.on_event(&mut self.ep, now, &ev) {
                    continue;
                }
            }
            if self.nc.on_event(&mut self.ep, now, &ev) {
                continue;
            }
            if let Event::IncomingFlow { session, flow, .. } = ev {
                let _ = self.ep.reject_flow(now, session, flow, 0);
            }
        }
        while let Some(e) = self.nc.poll_event() {
            match e {
                NcEvent::Connected(_) => {
                    self.connected = true;
                    // our identity is the certificate the engine uses now: a
                    // Flash profile may have fallen back to its group 2
                    // certificate for a server like MonaServer2
                    let me = rtmfp_flash::fingerprint(self.ep.profile().certificate());
                    if me != self.me {
                        self.emit(MemberEvent::Notice(format!(
                            "the server needed our group 2 certificate: our peer ID is now {}",
                            me.to_hex()
                        )));
                        self.me = me;
                    }
                    self.emit(MemberEvent::Connected);
                    if self.group.is_none() && !self.leaving {
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
        self.group_events(now);
    }

    fn join(&mut self, now: Instant) {
        let rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(self.cfg.group_seed));
        let g = NetGroup::new(
            &self.cfg.spec,
            self.me,
            self.nc.session(),
            self.nc.control_flow_id(),
            self.cfg.servers.clone(),
            self.cfg.group.clone(),
            rng,
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
        // streams asked for before the join; those the group refuses are
        // reported and forgotten
        let mut failed = Vec::new();
        self.playing.retain(|name, _| match g.play(name) {
            Ok(()) => true,
            Err(e) => {
                failed.push(format!("play {name}: {e}"));
                false
            }
        });
        let ep = &mut self.ep;
        self.publishing
            .retain(|name, _| match g.publish(ep, now, name) {
                Ok(()) => true,
                Err(e) => {
                    failed.push(format!("publish {name}: {e}"));
                    false
                }
            });
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
                    ..
                } => {
                    let since_join = self.joined_at.map(|j| now.saturating_duration_since(j));
                    if self.first_media.is_none() {
                        self.first_media = since_join;
                    }
                    if let Some(p) = self.playing.get_mut(name) {
                        match message_type {
                            8 => p.audio += 1,
                            9 => {
                                p.video += 1;
                                if p.first_video_after_join.is_none() {
                                    p.first_video_after_join = since_join;
                                }
                            }
                            _ => p.data += 1,
                        }
                        if p.first_media_after_join.is_none() {
                            p.first_media_after_join = since_join;
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

    fn command(&mut self, now: Instant, c: MemberCommand) -> Result<(), String> {
        const NOT_JOINED: &str = "not joined yet";
        let ep = &mut self.ep;
        match c {
            MemberCommand::Publish(name) => {
                if self.publishing.contains_key(&name) {
                    return Err(format!("already publishing {name}"));
                }
                if let Some(g) = self.group.as_mut() {
                    g.publish(ep, now, &name).map_err(|e| e.to_string())?;
                }
                self.publishing.insert(name, 0);
                Ok(())
            }
            MemberCommand::SendMedia {
                name,
                message_type,
                timestamp,
                payload,
            } => {
                let g = self.group.as_mut().ok_or(NOT_JOINED)?;
                g.send_media(ep, now, &name, message_type, timestamp, &payload)
                    .map_err(|e| e.to_string())?;
                if let Some(n) = self.publishing.get_mut(&name) {
                    *n += 1;
                }
                Ok(())
            }
            MemberCommand::Unpublish(name) => {
                self.publishing.remove(&name);
                match self.group.as_mut() {
                    Some(g) => g.unpublish(ep, now, &name).map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
            MemberCommand::Play(name) => {
                if let Some(g) = self.group.as_mut() {
                    g.play(&name).map_err(|e| e.to_string())?;
                }
                self.playing.entry(name).or_default();
                Ok(())
            }
            MemberCommand::Post(message) => {
                let g = self.group.as_mut().ok_or(NOT_JOINED)?;
                match g.post(ep, now, message) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("not posted: the same message was posted recently".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
            MemberCommand::SendToNearest { address, message } => {
                let g = self.group.as_mut().ok_or(NOT_JOINED)?;
                g.send_to_nearest(ep, now, address, message)
                    .then_some(())
                    .ok_or_else(|| "sendToNearest: not sent".to_string())
            }
            MemberCommand::SendToNeighbor { peer, message } => {
                let g = self.group.as_mut().ok_or(NOT_JOINED)?;
                g.send_to_neighbor(ep, now, peer, message)
                    .then_some(())
                    .ok_or_else(|| format!("sendToNeighbor: {peer} is not a neighbour"))
            }
            MemberCommand::SendToAllNeighbors(message) => {
                let g = self.group.as_mut().ok_or(NOT_JOINED)?;
                let n = g.send_to_all_neighbors(ep, now, message);
                self.emit(MemberEvent::Notice(format!("sent to {n} neighbours")));
                Ok(())
            }
            MemberCommand::AddHaveObjects(a, b) => {
                let g = self.group.as_mut().ok_or(NOT_JOINED)?;
                g.add_have_objects(ep, now, a, b).map_err(|e| e.to_string())
            }
            MemberCommand::AddWantObjects(a, b) => {
                let g = self.group.as_mut().ok_or(NOT_JOINED)?;
                g.add_want_objects(a, b).map_err(|e| e.to_string())
            }
            MemberCommand::WriteRequestedObject { request, object } => {
                let g = self.group.as_mut().ok_or(NOT_JOINED)?;
                g.write_requested_object(ep, now, request, object)
                    .then_some(())
                    .ok_or_else(|| format!("no replication request {request}"))
            }
            MemberCommand::DenyRequestedObject(request) => {
                if let Some(g) = self.group.as_mut() {
                    g.deny_requested_object(ep, now, request);
                }
                Ok(())
            }
            MemberCommand::Leave => {
                self.leave(now);
                Ok(())
            }
        }
    }

    fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        if let Some(g) = self.group.as_mut() {
            g.leave(&mut self.ep, now);
        }
        self.nc.close(&mut self.ep, now);
    }
}

impl Machine for Member {
    type Command = MemberCommand;
    type Event = MemberEvent;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.ep.handle_datagram(now, from, data);
        self.process(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        if let Some(g) = self.group.as_mut() {
            if g.poll_timeout().is_some_and(|t| t <= now) {
                g.handle_timeout(&mut self.ep, now);
            }
        }
        self.process(now);
    }

    fn handle_command(&mut self, now: Instant, command: MemberCommand) {
        if let Err(e) = self.command(now, command) {
            self.emit(MemberEvent::Error(e));
        }
        self.process(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.ep.poll_transmit(now, buf)
    }

    fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let g = self.group.as_ref().and_then(NetGroup::poll_timeout);
        match (self.ep.poll_timeout(), g) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_close(&mut self, now: Instant) {
        self.leave(now);
        self.process(now);
    }

    /// Done once it has left and its sessions have closed.
    fn is_done(&self) -> Option<bool> {
        Some(self.leaving && self.ep.session_count() == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GroupSpecifier;
    use rtmfp::{EndpointConfig, PlainProfile};

    fn member(now: Instant) -> Member {
        let ep = Endpoint::new(
            EndpointConfig::default(),
            Box::new(PlainProfile::new("member")),
            Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(1)),
            now,
        );
        let spec = GroupSpecifier::new("t")
            .unwrap()
            .multicast_enabled(true)
            .group_spec_with_authorizations();
        let server = SocketAddr::from(([127, 0, 0, 1], 1935));
        let cfg = MemberConfig {
            url: "rtmfp://127.0.0.1:1935/app".into(),
            servers: vec![server],
            spec,
            local_addresses: vec![SocketAddr::from(([127, 0, 0, 1], 5000))],
            group: GroupConfig::default(),
            forward_media: true,
            group_seed: 2,
        };
        Member::new(ep, PeerId([7; 32]), cfg, now).unwrap()
    }

    fn media() -> MemberEvent {
        MemberEvent::Group(GroupEvent::Media {
            name: "cam".into(),
            message_type: 9,
            timestamp: 0,
            payload: Bytes::from_static(&[0x17, 1]),
        })
    }

    #[test]
    fn a_slow_owner_loses_media_before_anything_else() {
        let now = Instant::now();
        let mut m = member(now);
        // not joined yet: every post is refused with an error event
        let post = || MemberCommand::Post(Bytes::from_static(b"x"));
        for _ in 0..MAX_EVENTS {
            m.handle_command(now, post());
        }
        m.emit(media());
        assert_eq!(m.status(now).events_dropped, 1, "media is dropped first");
        for _ in 0..MAX_EVENTS + 3 {
            m.handle_command(now, post());
        }
        assert_eq!(m.status(now).events_dropped, 4, "then the rest, bounded");
        let mut n = 0;
        while let Some(e) = m.poll_event() {
            assert!(matches!(e, MemberEvent::Error(_)), "{e:?}");
            n += 1;
        }
        assert_eq!(n, 2 * MAX_EVENTS);
    }
}
