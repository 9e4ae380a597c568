//! NetGroup members ([`NetGroup`]) in the simulator, with a minimal
//! rendezvous server (NetConnection accept, group joins with ring-neighbour
//! introductions, peer introductions by Redirect + Forwarded IHello).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flash_amf::Object;
use rand_core::SeedableRng;
use rtmfp::wire::{Address, AddressOrigin};
use rtmfp::{Endpoint, EndpointConfig, Event, SessionId};
use rtmfp_flash::message::{NcEvent, NetConnection, ServerConnection, ServerEvent};
use rtmfp_flash::{fingerprint, DhGroup, Epd, FlashProfile};
use rtmfp_netgroup::wire::group_address;
use rtmfp_netgroup::{GroupConfig, GroupEvent, GroupSpecifier, NetGroup};
use rtmfp_sim::{Datagram, LinkConfig, Node, Sim};

const SERVER: &str = "10.0.0.1:1935";

#[derive(Default)]
struct Rendezvous {
    conns: HashMap<SessionId, (ServerConnection, [u8; 32], SocketAddr)>,
    peers: HashMap<[u8; 32], (SessionId, SocketAddr)>,
    /// group address → (peer, session)
    ring: BTreeMap<[u8; 32], ([u8; 32], SessionId)>,
}

struct Member {
    nc: NetConnection,
    group: Option<NetGroup>,
    spec: String,
    events: Vec<GroupEvent>,
    cfg: GroupConfig,
    seed: u64,
}

impl Member {
    /// A membership of the test group over this member's NetConnection.
    fn new_group(&self, me: rtmfp_flash::PeerId) -> NetGroup {
        NetGroup::new(
            &self.spec,
            me,
            self.nc.session(),
            self.nc.control_flow_id(),
            vec![SERVER.parse().unwrap()],
            self.cfg.clone(),
            Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(self.seed)),
        )
        .unwrap()
    }
}

struct Peer {
    ep: Endpoint,
    addr: SocketAddr,
    server: Option<Rendezvous>,
    member: Option<Member>,
    buf: Vec<u8>,
    up: bool,
    next: Option<Instant>,
}

fn profile(server: bool, seed: u64) -> (FlashProfile, rand_chacha::ChaCha8Rng) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let b = if server {
        FlashProfile::server(None)
    } else {
        FlashProfile::client()
    };
    let p = b
        .groups(&[DhGroup::Modp1024])
        .reuse_ephemeral_keys(1_000_000)
        .build(&mut rng)
        .unwrap();
    (p, rng)
}

impl Peer {
    fn new(addr: SocketAddr, server: bool, seed: u64, now: Instant) -> Self {
        let (p, rng) = profile(server, seed);
        let cfg = EndpointConfig {
            report_foreign_ihello: server,
            ihello_rate_per_source: 1000,
            ..Default::default()
        };
        let ep = Endpoint::new(cfg, Box::new(p), Box::new(rng), now);
        Peer {
            ep,
            addr,
            server: server.then(Rendezvous::default),
            member: None,
            buf: Vec::new(),
            up: true,
            next: None,
        }
    }

    fn peer_id(&self) -> [u8; 32] {
        fingerprint(self.ep.profile().certificate()).0
    }

    fn pump(&mut self, now: Instant) {
        for _ in 0..100_000 {
            let Some(ev) = self.ep.poll_event() else {
                break;
            };
            if self.server.is_some() {
                self.server_event(now, &ev);
            } else {
                self.member_event(now, &ev);
            }
        }
        if let Some(m) = self.member.as_mut() {
            if let Some(g) = m.group.as_mut() {
                while let Some(e) = g.poll_event() {
                    m.events.push(e);
                }
            }
        }
        let g = self
            .member
            .as_ref()
            .and_then(|m| m.group.as_ref())
            .and_then(|g| g.poll_timeout());
        self.next = match (self.ep.poll_timeout(), g) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn member_event(&mut self, now: Instant, ev: &Event) {
        let Some(m) = self.member.as_mut() else {
            return;
        };
        if let Some(g) = m.group.as_mut() {
            if g.on_event(&mut self.ep, now, ev) {
                return;
            }
        }
        if m.nc.on_event(&mut self.ep, now, ev) {
            while let Some(e) = m.nc.poll_event() {
                if let NcEvent::Connected(_) = e {
                    let mut g = m.new_group(fingerprint(self.ep.profile().certificate()));
                    g.join(&mut self.ep, now).unwrap();
                    m.group = Some(g);
                }
            }
            return;
        }
        if let Event::IncomingFlow { session, flow, .. } = ev {
            let _ = self.ep.reject_flow(now, *session, *flow, 0);
        }
    }

    fn server_event(&mut self, now: Instant, ev: &Event) {
        let r = self.server.as_mut().unwrap();
        match ev {
            Event::SessionOpened { session, peer, .. } => {
                let info = self.ep.session_info(*session).unwrap();
                let id = fingerprint(&info.far_certificate).0;
                r.conns
                    .insert(*session, (ServerConnection::new(*session), id, *peer));
                r.peers.insert(id, (*session, *peer));
            }
            Event::IHelloForOther { from, epd, tag } => {
                let Some(fp) = Epd::parse(epd).ok().and_then(|e| e.fingerprint) else {
                    return;
                };
                let Some(&(s, addr)) = r.peers.get(&fp.0) else {
                    return;
                };
                self.ep.send_redirect(
                    *from,
                    tag,
                    &[Address {
                        addr,
                        origin: AddressOrigin::Public,
                    }],
                );
                let _ = self.ep.forward_ihello(now, s, epd, *from, tag);
                return;
            }
            _ => {}
        }
        let Some(sid) = ev.session() else { return };
        let Some((c, id, _)) = r.conns.get_mut(&sid) else {
            return;
        };
        let id = *id;
        c.on_event(&mut self.ep, now, ev);
        let mut evs = Vec::new();
        while let Some(e) = c.poll_event() {
            evs.push(e);
        }
        for e in evs {
            match e {
                ServerEvent::Connect { .. } => {
                    let c = &mut r.conns.get_mut(&sid).unwrap().0;
                    c.accept_connect(&mut self.ep, now, Vec::new()).unwrap();
                }
                ServerEvent::GroupJoin { .. } => {
                    let a = group_address(&id);
                    // tell 3 + 3 ring neighbours about the newcomer and it about them
                    let keys: Vec<[u8; 32]> = r.ring.keys().copied().collect();
                    let n = keys.len();
                    let mut near = Vec::new();
                    if n > 0 {
                        let pos = keys.partition_point(|k| *k < a);
                        for k in 0..3.min(n) {
                            near.push(keys[(pos + k) % n]);
                            near.push(keys[(pos + n - 1 - k) % n]);
                        }
                        near.sort_unstable();
                        near.dedup();
                    }
                    for k in near {
                        let (p, s) = r.ring[&k];
                        if let Some((c, _, _)) = r.conns.get_mut(&s) {
                            let g = c.groups().next().unwrap();
                            c.introduce_group_peers(&mut self.ep, now, &g, &[id]);
                        }
                        let c = &mut r.conns.get_mut(&sid).unwrap().0;
                        let g = c.groups().next().unwrap();
                        c.introduce_group_peers(&mut self.ep, now, &g, &[p]);
                    }
                    r.ring.insert(a, (id, sid));
                }
                ServerEvent::GroupLeave { .. } | ServerEvent::Closed => {
                    r.ring.remove(&group_address(&id));
                }
                _ => {}
            }
        }
        if matches!(
            ev,
            Event::SessionClosed { .. } | Event::SessionFailed { .. }
        ) {
            r.conns.remove(&sid);
            r.ring.remove(&group_address(&id));
            if r.peers.get(&id).is_some_and(|(s, _)| *s == sid) {
                r.peers.remove(&id);
            }
        }
    }

    fn group(&mut self) -> (&mut NetGroup, &mut Endpoint) {
        (
            self.member.as_mut().unwrap().group.as_mut().unwrap(),
            &mut self.ep,
        )
    }
}

impl Node for Peer {
    fn handle_datagram(&mut self, now: Instant, src: SocketAddr, _dst: SocketAddr, data: &[u8]) {
        if !self.up {
            return;
        }
        self.ep.handle_datagram(now, src, data);
        self.pump(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        if !self.up {
            return;
        }
        self.ep.handle_timeout(now);
        if let Some(g) = self.member.as_mut().and_then(|m| m.group.as_mut()) {
            if g.poll_timeout().is_some_and(|t| t <= now) {
                g.handle_timeout(&mut self.ep, now);
            }
        }
        self.pump(now);
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        if !self.up {
            return None;
        }
        self.buf.clear();
        let to = self.ep.poll_transmit(now, &mut self.buf)?;
        Some(Datagram::new(self.addr, to, self.buf.clone()))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        if !self.up {
            return None;
        }
        self.next
    }
}

/// Runs `f` on member `i`'s group, then lets the member catch up.
fn act<R>(
    sim: &mut Sim<Peer>,
    i: usize,
    f: impl FnOnce(&mut NetGroup, &mut Endpoint, Instant) -> R,
) -> R {
    let now = sim.now();
    let p = sim.node_mut(i);
    let (g, ep) = p.group();
    let r = f(g, ep, now);
    p.pump(now);
    r
}

fn spec() -> String {
    GroupSpecifier::new("simgroup")
        .unwrap()
        .multicast_enabled(true)
        .posting_enabled(true)
        .object_replication_enabled(true)
        .group_spec_with_authorizations()
}

fn member_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            10,
            1 + (i / 250) as u8,
            (i % 250) as u8,
            2,
        )),
        40000,
    )
}

fn setup(seed: u64, members: usize, link: LinkConfig, stagger: Duration) -> Sim<Peer> {
    let mut sim: Sim<Peer> = Sim::new(seed);
    sim.net.set_default_link(link);
    let now = sim.now();
    let b: SocketAddr = SERVER.parse().unwrap();
    sim.add_node(Peer::new(b, true, seed ^ 2, now), &[b]);
    for i in 0..members {
        sim.run_for(stagger);
        add_member(&mut sim, seed, i);
    }
    sim
}

fn add_member(sim: &mut Sim<Peer>, seed: u64, i: usize) -> usize {
    let now = sim.now();
    let a = member_addr(i);
    let b: SocketAddr = SERVER.parse().unwrap();
    let mut p = Peer::new(a, false, seed ^ (1000 + i as u64), now);
    let nc = NetConnection::connect(&mut p.ep, now, "rtmfp://10.0.0.1/app", &[b], Object::new())
        .unwrap();
    p.member = Some(Member {
        nc,
        group: None,
        spec: spec(),
        events: Vec::new(),
        cfg: GroupConfig::default(),
        seed: seed ^ (7000 + i as u64),
    });
    p.pump(now);
    sim.add_node(p, &[a])
}

fn neighbors(sim: &Sim<Peer>, i: usize) -> Vec<[u8; 32]> {
    sim.node(i)
        .member
        .as_ref()
        .and_then(|m| m.group.as_ref())
        .map(|g| g.neighbors().into_iter().map(|p| p.0).collect())
        .unwrap_or_default()
}

/// Whether every live member reaches every other over neighbour links.
fn connected(sim: &Sim<Peer>, nodes: &[usize]) -> bool {
    let ids: HashMap<[u8; 32], usize> = nodes.iter().map(|&i| (sim.node(i).peer_id(), i)).collect();
    let mut seen = vec![nodes[0]];
    let mut stack = vec![nodes[0]];
    while let Some(i) = stack.pop() {
        for p in neighbors(sim, i) {
            if let Some(&j) = ids.get(&p) {
                if !seen.contains(&j) {
                    seen.push(j);
                    stack.push(j);
                }
            }
        }
    }
    seen.len() == nodes.len()
}

#[test]
fn members_meet_multicast_post_route_and_replicate() {
    let mut sim = setup(
        7,
        6,
        LinkConfig::wan(Duration::from_millis(10)),
        Duration::from_millis(300),
    );
    sim.run_for(Duration::from_secs(6));
    let members: Vec<usize> = (1..=6).collect();
    for &i in &members {
        let n = neighbors(&sim, i);
        assert_eq!(n.len(), 5, "member {i} has neighbours {n:?}");
    }
    // multicast: member 1 publishes, the others play
    for &i in &members[1..] {
        act(&mut sim, i, |g, _, _| g.play("cam").unwrap());
    }
    act(&mut sim, 1, |g, ep, now| g.publish(ep, now, "cam").unwrap());
    let frames = 200u32;
    for f in 0..frames {
        let size = if f % 25 == 0 { 5000 } else { 700 };
        let mut payload = vec![(f % 251) as u8; size];
        payload[0] = if f % 25 == 0 { 0x17 } else { 0x27 };
        payload[1] = 1;
        act(&mut sim, 1, |g, ep, now| {
            g.send_media(ep, now, "cam", 9, f * 40, &payload).unwrap()
        });
        sim.run_for(Duration::from_millis(40));
    }
    sim.run_for(Duration::from_secs(4));
    for &i in &members[1..] {
        let m = sim.node(i).member.as_ref().unwrap();
        let got: Vec<u32> = m
            .events
            .iter()
            .filter_map(|e| match e {
                GroupEvent::Media {
                    timestamp, payload, ..
                } => {
                    let f = timestamp / 40;
                    let size = if f % 25 == 0 { 5000 } else { 700 };
                    assert_eq!(payload.len(), size);
                    Some(f)
                }
                _ => None,
            })
            .collect();
        assert!(
            m.events
                .iter()
                .any(|e| matches!(e, GroupEvent::PublishNotify { name } if name == "cam")),
            "member {i}: no PublishNotify"
        );
        assert!(
            got.len() as u32 >= frames - 30,
            "member {i} got {} frames",
            got.len()
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
        let last = *got.last().unwrap();
        assert_eq!(last, frames - 1, "member {i}");
        let first = got[0];
        assert_eq!(got.len() as u32, last - first + 1, "member {i}: holes");
    }
    // posting: each member gets it once
    act(&mut sim, 3, |g, ep, now| {
        g.post(ep, now, Bytes::from_static(b"hello group"))
            .unwrap()
            .unwrap()
    });
    sim.run_for(Duration::from_secs(2));
    for &i in &members {
        let n = sim.node(i).member.as_ref().unwrap().events.iter().filter(|e| matches!(e, GroupEvent::PostingNotify { message, .. } if message.as_ref() == b"hello group")).count();
        assert_eq!(n, usize::from(i != 3), "member {i}");
    }
    // routing: to member 5's address from member 2
    let dest = group_address(&sim.node(5).peer_id());
    assert!(act(&mut sim, 2, |g, ep, now| g.send_to_nearest(
        ep,
        now,
        dest,
        Bytes::from_static(b"to five")
    )));
    sim.run_for(Duration::from_secs(1));
    let got5 = sim.node(5).member.as_ref().unwrap().events.iter().any(|e| matches!(e, GroupEvent::SendToNotify { message, from_local: false, .. } if message.as_ref() == b"to five"));
    assert!(got5);
    // replication: member 4 has 0..=9, member 6 wants 3..=5
    act(&mut sim, 4, |g, ep, now| {
        g.add_have_objects(ep, now, 0, 9).unwrap()
    });
    sim.run_for(Duration::from_millis(500));
    act(&mut sim, 6, |g, _, _| g.add_want_objects(3, 5).unwrap());
    for _ in 0..40 {
        sim.run_for(Duration::from_millis(100));
        let reqs: Vec<(u64, u64)> = {
            let m = sim.node_mut(4).member.as_mut().unwrap();
            let r = m
                .events
                .iter()
                .filter_map(|e| match e {
                    GroupEvent::ReplicationRequest { index, request } => Some((*index, *request)),
                    _ => None,
                })
                .collect();
            m.events
                .retain(|e| !matches!(e, GroupEvent::ReplicationRequest { .. }));
            r
        };
        for (index, request) in reqs {
            assert!(act(&mut sim, 4, |g, ep, now| g.write_requested_object(
                ep,
                now,
                request,
                Bytes::from(format!("object {index}"))
            )));
        }
    }
    let got: Vec<u64> = sim
        .node(6)
        .member
        .as_ref()
        .unwrap()
        .events
        .iter()
        .filter_map(|e| match e {
            GroupEvent::ReplicationFetchResult { index, object } => {
                assert_eq!(object.as_ref(), format!("object {index}").as_bytes());
                Some(*index)
            }
            _ => None,
        })
        .collect();
    let mut got = got;
    got.sort_unstable();
    assert_eq!(got, vec![3, 4, 5]);
    assert!(connected(&sim, &members));
}

fn post_count(sim: &Sim<Peer>, i: usize, text: &[u8]) -> usize {
    sim.node(i)
        .member
        .as_ref()
        .unwrap()
        .events
        .iter()
        .filter(
            |e| matches!(e, GroupEvent::PostingNotify { message, .. } if message.as_ref() == text),
        )
        .count()
}

/// A large group stays connected (every member reachable over neighbour
/// links) with bounded neighbour counts, and a post reaches every member
/// exactly once.
fn large_group(members: usize, seed: u64) {
    let mut sim = setup(
        seed,
        members,
        LinkConfig::wan(Duration::from_millis(15)),
        Duration::from_millis(20),
    );
    sim.run_for(Duration::from_secs(20));
    let nodes: Vec<usize> = (1..=members).collect();
    let degrees: Vec<usize> = nodes.iter().map(|&i| neighbors(&sim, i).len()).collect();
    let max = *degrees.iter().max().unwrap();
    let min = *degrees.iter().min().unwrap();
    let mean = degrees.iter().sum::<usize>() as f64 / members as f64;
    eprintln!("{members} members: neighbours min {min} mean {mean:.1} max {max}");
    assert!(min >= 3, "a member with {min} neighbours");
    assert!(connected(&sim, &nodes), "the group is split");
    act(&mut sim, members / 2, |g, ep, now| {
        g.post(ep, now, Bytes::from_static(b"to all"))
            .unwrap()
            .unwrap()
    });
    sim.run_for(Duration::from_secs(5));
    for &i in &nodes {
        assert_eq!(
            post_count(&sim, i, b"to all"),
            usize::from(i != members / 2),
            "member {i}"
        );
    }
}

#[test]
fn group_of_100_stays_connected_and_posts_reach_everyone_once() {
    large_group(100, 11);
}

/// About 6 minutes in the test profile on 2 cores (4.5 in release).
#[test]
fn group_of_1000_stays_connected_and_posts_reach_everyone_once() {
    large_group(1000, 12);
}

/// Leaves the group and joins again with a new membership.
fn rejoin(sim: &mut Sim<Peer>, i: usize, play: &str) {
    let now = sim.now();
    let p = sim.node_mut(i);
    let m = p.member.as_mut().unwrap();
    m.seed ^= 0x5555;
    let mut g = m.new_group(fingerprint(p.ep.profile().certificate()));
    g.play(play).unwrap();
    g.join(&mut p.ep, now).unwrap();
    m.group = Some(g);
    p.pump(now);
}

fn totals(sim: &Sim<Peer>, i: usize, acc: &mut (u64, u64)) {
    if let Some(g) = sim.node(i).member.as_ref().and_then(|m| m.group.as_ref()) {
        let s = g.stats();
        acc.0 += s.fragments_played;
        acc.1 += s.fragments_missed;
    }
}

/// 30 members play one multicast stream while a third of them leave and
/// join again: fewer than 1 % of the fragments in their play spans are
/// missing.
#[test]
fn multicast_to_30_members_with_a_third_leaving_and_rejoining() {
    let n = 30;
    let mut sim = setup(
        21,
        n,
        LinkConfig::wan(Duration::from_millis(10)).with_loss(0.01),
        Duration::from_millis(50),
    );
    sim.run_for(Duration::from_secs(2));
    for i in 2..=n {
        act(&mut sim, i, |g, _, _| g.play("live").unwrap());
    }
    sim.run_for(Duration::from_secs(2));
    act(&mut sim, 1, |g, ep, now| {
        g.publish(ep, now, "live").unwrap()
    });
    let churn: Vec<usize> = (2..=n).filter(|i| i % 3 == 0).collect();
    let mut done = (0u64, 0u64);
    for tick in 0..(25 * 30u32) {
        // 25 frames/s of ~1.2 kB video (key frame every 2 s) and audio
        let ts = tick * 40;
        let size = if tick % 50 == 0 { 12_000 } else { 1200 };
        let mut video = vec![(tick % 251) as u8; size];
        video[0] = if tick % 50 == 0 { 0x17 } else { 0x27 };
        video[1] = 1;
        act(&mut sim, 1, |g, ep, now| {
            g.send_media(ep, now, "live", 9, ts, &video).unwrap();
            g.send_media(ep, now, "live", 8, ts, &[0x2e; 90]).unwrap();
        });
        sim.run_for(Duration::from_millis(20));
        act(&mut sim, 1, |g, ep, now| {
            g.send_media(ep, now, "live", 8, ts + 20, &[0x2e; 90])
                .unwrap()
        });
        sim.run_for(Duration::from_millis(20));
        // at 8 s a third leaves (one every 200 ms), rejoining 3 s later
        let t = tick as usize;
        for (k, &i) in churn.iter().enumerate() {
            if t == 200 + 5 * k {
                totals(&sim, i, &mut done);
                act(&mut sim, i, |g, ep, now| g.leave(ep, now));
            }
            if t == 275 + 5 * k {
                rejoin(&mut sim, i, "live");
            }
        }
    }
    sim.run_for(Duration::from_secs(5));
    let mut acc = done;
    for i in 2..=n {
        totals(&sim, i, &mut acc);
    }
    let (played, missed) = acc;
    let ratio = missed as f64 / (played + missed) as f64;
    eprintln!(
        "30 members with churn: {played} fragments played, {missed} missed ({:.3} %)",
        ratio * 100.0
    );
    assert!(played > 29 * 2000, "played {played}");
    assert!(ratio < 0.01, "missed {missed} of {}", played + missed);
    let nodes: Vec<usize> = (1..=n).collect();
    assert!(connected(&sim, &nodes));
}
