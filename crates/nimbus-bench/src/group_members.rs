//! Many NetGroup members in one thread, for `nimbus bench group`.
//!
//! One thread drives many members (each its own socket, endpoint,
//! NetConnection and [`NetGroup`]): join a group through a rendezvous
//! server, publish a multicast stream (built-in test source or an FLV file),
//! play one into an FLV file, post. The `nimbus group` command itself is
//! `nimbus_group::cli` (one member on the tokio driver).

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use flash_amf::{amf0, Object, Value};
use nimbus_media::{
    FlvFileSource, FlvSink, MediaKind, MediaSource, MediaTag, TestSource, TestSourceConfig,
};
use rand_core::{RngCore, SeedableRng};
use rtmfp::{Endpoint, EndpointConfig, Event};
use rtmfp_flash::message::{NcEvent, NetConnection};
use rtmfp_flash::{fingerprint, DhGroup, FlashProfile};
use rtmfp_netgroup::{GroupConfig, GroupEvent, GroupSpecifier, GroupStats, NetGroup};

/// Counters of one member's run.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemberReport {
    /// Neighbours at the end.
    pub neighbors: usize,
    /// Group counters.
    pub stats: GroupStats,
    /// Media messages received (played).
    pub media_received: u64,
    /// Join sent → first media message played.
    pub first_media: Option<Duration>,
    /// Posts received (text).
    pub posts: Vec<String>,
    /// UDP bytes sent / received by the member's socket.
    pub udp_sent: u64,
    /// UDP bytes received.
    pub udp_received: u64,
}

/// What one member does.
#[derive(Debug, Clone)]
pub(crate) struct MemberPlan {
    /// Server address.
    pub server: SocketAddr,
    /// Connect URL.
    pub url: String,
    /// Groupspec.
    pub spec: String,
    /// Publish (stream name, source).
    pub publish: Option<(String, String)>,
    /// Play (stream name).
    pub play: Option<String>,
    /// Record to (path or `-`).
    pub record: Option<String>,
    /// Posts to send once connected.
    pub posts: Vec<String>,
    /// Bind address.
    pub bind: SocketAddr,
    /// Start this long after the run starts.
    pub start_after: Duration,
    /// Leave this long after the run starts (and stop).
    pub leave_after: Option<Duration>,
    /// Print events.
    pub verbose: bool,
}

struct Member {
    plan: MemberPlan,
    sock: UdpSocket,
    ep: Endpoint,
    nc: Option<NetConnection>,
    group: Option<NetGroup>,
    me: rtmfp_flash::PeerId,
    seed: u64,
    source: Option<Box<dyn MediaSource>>,
    pending: Option<MediaTag>,
    media_t0: Option<Instant>,
    sink: Option<FlvSink<Box<dyn Write>>>,
    report: MemberReport,
    joined: Option<Instant>,
    posted: bool,
    done: bool,
    /// Recording waits for a decodable start: AVC / AAC sequence headers
    /// (when the codec has them) and a key frame.
    avc_header: bool,
    aac_header: bool,
    keyframe: bool,
    out: Vec<u8>,
}

/// The groupspec for a group name: multicast, posting, object replication.
pub(crate) fn spec_for(name: &str) -> Result<String> {
    Ok(GroupSpecifier::new(name)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .multicast_enabled(true)
        .posting_enabled(true)
        .object_replication_enabled(true)
        .group_spec_with_authorizations())
}

impl Member {
    fn new(plan: MemberPlan, seed: u64) -> Result<Self> {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        // librtmfp accepts only a certificate made of one 1024-bit static
        // DH key: group members use DH group 2
        let profile = FlashProfile::client()
            .groups(&[DhGroup::Modp1024])
            .build(&mut rng)
            .map_err(|e| anyhow::anyhow!("cannot build an identity: {e:?}"))?;
        let me = fingerprint(rtmfp::CryptoProfile::certificate(&profile));
        let sock = UdpSocket::bind(plan.bind).with_context(|| format!("bind {}", plan.bind))?;
        sock.set_nonblocking(true)?;
        let ep = Endpoint::new(
            EndpointConfig::default(),
            Box::new(profile),
            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(rng.next_u64())),
            Instant::now(),
        );
        let source: Option<Box<dyn MediaSource>> = match &plan.publish {
            None => None,
            Some((_, s)) if s == "test" => {
                Some(Box::new(TestSource::new(TestSourceConfig::default())?))
            }
            Some((_, path)) => Some(Box::new(FlvFileSource::open(path)?)),
        };
        let sink = match &plan.record {
            None => None,
            Some(p) => {
                let w: Box<dyn Write> = if p == "-" {
                    Box::new(std::io::stdout())
                } else {
                    Box::new(std::io::BufWriter::new(
                        File::create(p).with_context(|| format!("create {p}"))?,
                    ))
                };
                Some(FlvSink::new(w, true, true)?)
            }
        };
        let report = MemberReport::default();
        Ok(Member {
            plan,
            sock,
            ep,
            nc: None,
            group: None,
            me,
            seed: rng.next_u64(),
            source,
            pending: None,
            media_t0: None,
            sink,
            report,
            joined: None,
            posted: false,
            done: false,
            avc_header: false,
            aac_header: false,
            keyframe: false,
            out: Vec::with_capacity(2048),
        })
    }

    fn start(&mut self, now: Instant) -> Result<()> {
        let mut nc = NetConnection::connect(
            &mut self.ep,
            now,
            &self.plan.url,
            &[self.plan.server],
            Object::new(),
        )?;
        let local = self.sock.local_addr()?;
        if local.ip().is_unspecified() {
            nc.set_peer_addresses(&[SocketAddr::new(
                "127.0.0.1".parse().expect("ip"),
                local.port(),
            )]);
        } else {
            nc.set_peer_addresses(&[local]);
        }
        self.nc = Some(nc);
        Ok(())
    }

    /// One turn: receive, timers, events, media, transmit.
    fn turn(&mut self, now: Instant, buf: &mut [u8]) -> Result<()> {
        for _ in 0..256 {
            match self.sock.recv_from(buf) {
                Ok((n, from)) => {
                    self.report.udp_received += n as u64;
                    self.ep.handle_datagram(now, from, &buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => continue,
            }
        }
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        if let Some(g) = self.group.as_mut() {
            if g.poll_timeout().is_some_and(|t| t <= now) {
                g.handle_timeout(&mut self.ep, now);
            }
        }
        self.events(now)?;
        self.feed_media(now)?;
        self.flush();
        Ok(())
    }

    fn flush(&mut self) {
        let now = Instant::now();
        while let Some(dst) = self.ep.poll_transmit(now, &mut self.out) {
            // unreachable destinations (another address family…) are lost datagrams
            if self.sock.send_to(&self.out, dst).is_ok() {
                self.report.udp_sent += self.out.len() as u64;
            }
        }
    }

    fn events(&mut self, now: Instant) -> Result<()> {
        while let Some(ev) = self.ep.poll_event() {
            if let Some(g) = self.group.as_mut() {
                if g.on_event(&mut self.ep, now, &ev) {
                    continue;
                }
            }
            let Some(nc) = self.nc.as_mut() else { continue };
            if nc.on_event(&mut self.ep, now, &ev) {
                continue;
            }
            if let Event::IncomingFlow { session, flow, .. } = ev {
                let _ = self.ep.reject_flow(now, session, flow, 0);
            }
        }
        if let Some(nc) = self.nc.as_mut() {
            while let Some(e) = nc.poll_event() {
                match e {
                    NcEvent::Connected(_) if self.group.is_none() => {
                        let mut g = NetGroup::new(
                            &self.plan.spec,
                            self.me,
                            nc.session(),
                            nc.control_flow_id(),
                            vec![self.plan.server],
                            GroupConfig::default(),
                            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(self.seed)),
                        )?;
                        g.join(&mut self.ep, now)?;
                        if let Some((name, _)) = &self.plan.publish {
                            g.publish(&mut self.ep, now, name)?;
                        }
                        if let Some(name) = &self.plan.play {
                            g.play(name)?;
                        }
                        self.joined = Some(now);
                        self.group = Some(g);
                    }
                    NcEvent::ConnectFailed(s) => {
                        bail!("NetConnection failed: {} {}", s.code, s.description)
                    }
                    NcEvent::Status { status, .. }
                        if status.code == "NetConnection.Connect.Closed" =>
                    {
                        bail!("the server closed the connection")
                    }
                    _ => {}
                }
            }
        }
        let verbose = self.plan.verbose;
        let Some(g) = self.group.as_mut() else {
            return Ok(());
        };
        if !self.posted && g.neighbor_count() > 0 {
            self.posted = true;
            for p in self.plan.posts.clone() {
                let b = amf0::encode(&Value::String(p.clone())).unwrap_or_default();
                let line = match g.post(&mut self.ep, now, Bytes::from(b)) {
                    Ok(Some(_)) => format!("posted: {p}"),
                    Ok(None) => format!("not posted (duplicate): {p}"),
                    Err(e) => format!("not posted: {e}"),
                };
                if verbose {
                    println!("{line}");
                }
            }
        }
        while let Some(e) = g.poll_event() {
            match e {
                GroupEvent::Media {
                    message_type,
                    timestamp,
                    payload,
                    ..
                } => {
                    self.report.media_received += 1;
                    if self.report.first_media.is_none() {
                        self.report.first_media = self.joined.map(|j| now - j);
                    }
                    // like Flash's player, start recording where a decoder can
                    let ok = match (
                        message_type,
                        payload.first().copied(),
                        payload.get(1).copied(),
                    ) {
                        (9, Some(b), second) => {
                            let avc = b & 0x0f == 7;
                            if avc && second == Some(0) {
                                self.avc_header = true;
                            }
                            if b >> 4 == 1 && (!avc || self.avc_header) {
                                self.keyframe = true;
                            }
                            self.keyframe && (!avc || self.avc_header)
                        }
                        (8, Some(b), second) => {
                            let aac = b >> 4 == 10;
                            if aac && second == Some(0) {
                                self.aac_header = true;
                            }
                            !aac || self.aac_header
                        }
                        _ => true,
                    };
                    if let (Some(s), true) = (self.sink.as_mut(), ok) {
                        let kind = MediaKind::from_message_type(message_type);
                        s.write(&MediaTag::new(kind, timestamp, payload))?;
                    }
                }
                GroupEvent::PostingNotify { message, .. } => {
                    let text = match amf0::decode(&message) {
                        Ok(Value::String(s)) | Ok(Value::LongString(s)) => s,
                        _ => format!("{} bytes", message.len()),
                    };
                    if verbose {
                        println!("NetGroup.Posting.Notify {text}");
                    }
                    self.report.posts.push(text);
                }
                GroupEvent::NeighborConnect { peer, .. }
                | GroupEvent::NeighborDisconnect { peer, .. } => {
                    if verbose {
                        println!("{} {peer}", e.code().unwrap_or_default());
                    }
                }
                GroupEvent::PublishNotify { ref name }
                | GroupEvent::UnpublishNotify { ref name } => {
                    if verbose {
                        println!("{} {name}", e.code().unwrap_or_default());
                    }
                }
                other => {
                    if verbose {
                        println!("{}", other.code().unwrap_or("event"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Publishes due media (paced by timestamps, from the first neighbour).
    fn feed_media(&mut self, now: Instant) -> Result<()> {
        let (Some(g), Some(src), Some((name, _))) = (
            self.group.as_mut(),
            self.source.as_mut(),
            self.plan.publish.as_ref(),
        ) else {
            return Ok(());
        };
        if self.media_t0.is_none() {
            if g.neighbor_count() == 0 {
                return Ok(());
            }
            self.media_t0 = Some(now);
        }
        let t0 = self.media_t0.expect("set");
        for _ in 0..1000 {
            if self.pending.is_none() {
                self.pending = src.next_tag()?;
            }
            let Some(tag) = self.pending.as_ref() else {
                break;
            };
            if t0 + Duration::from_millis(u64::from(tag.timestamp)) > now {
                break;
            }
            let t = tag.kind.message_type();
            g.send_media(&mut self.ep, now, name, t, tag.timestamp, &tag.data)?;
            self.pending = None;
        }
        Ok(())
    }

    fn next_wake(&mut self) -> Option<Instant> {
        let a = self.ep.poll_timeout();
        let b = self.group.as_ref().and_then(|g| g.poll_timeout());
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn finish(&mut self) {
        if let Some(g) = self.group.as_mut() {
            self.report.stats = g.stats();
            self.report.neighbors = g.neighbor_count();
            g.leave(&mut self.ep, Instant::now());
        }
        if let Some(nc) = self.nc.as_mut() {
            nc.close(&mut self.ep, Instant::now());
        }
        self.flush();
        if let Some(s) = self.sink.as_mut() {
            let _ = s.flush();
        }
        self.done = true;
    }
}

/// Runs members until `until` (or until `stop` says so); returns their reports.
pub(crate) fn run_members(plans: Vec<MemberPlan>, until: Duration) -> Result<Vec<MemberReport>> {
    let started = Instant::now();
    let mut members = Vec::with_capacity(plans.len());
    for (i, p) in plans.into_iter().enumerate() {
        let seed = u64::from(std::process::id()) << 20 ^ (i as u64) ^ rand::random::<u64>();
        members.push(Member::new(p, seed)?);
    }
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        let elapsed = now - started;
        if elapsed >= until {
            break;
        }
        let mut wake = now + Duration::from_millis(10);
        for m in members.iter_mut().filter(|m| !m.done) {
            if m.nc.is_none() {
                if elapsed >= m.plan.start_after {
                    m.start(now)?;
                } else {
                    continue;
                }
            }
            if m.plan.leave_after.is_some_and(|t| elapsed >= t) {
                m.finish();
                continue;
            }
            m.turn(now, &mut buf)?;
            if let Some(t) = m.next_wake() {
                wake = wake.min(t);
            }
        }
        let d = wake
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(2));
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }
    finish_all(members)
}

fn finish_all(mut members: Vec<Member>) -> Result<Vec<MemberReport>> {
    for m in members.iter_mut().filter(|m| !m.done) {
        m.finish();
    }
    std::thread::sleep(Duration::from_millis(50));
    for m in members.iter_mut() {
        m.flush();
    }
    Ok(members.into_iter().map(|m| m.report).collect())
}
