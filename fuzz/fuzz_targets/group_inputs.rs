//! NetGroup: every group codec fed arbitrary bytes (what parses is
//! re-encoded and parsed again), then (by the first byte) a whole
//! [`NetGroup`] member on a real RTMFP endpoint, joined through a minimal
//! rendezvous server, facing a hostile peer that opens group flows
//! (`GR 1C`, `GR 11`, `GR 12`, `NG 01`, and others) and sends
//! fuzzer-chosen messages (raw bytes, or well-formed ones carrying
//! fuzzer-chosen values, including a valid group connect), while the
//! member's own API is called and time advances. The member must never
//! panic, and its timer must move forward.
#![no_main]

mod input;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use input::Input;
use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;
use rtmfp::wire::{Address, AddressOrigin};
use rtmfp::{Endpoint, EndpointConfig, Event, Priority, SessionId};
use rtmfp_flash::{fingerprint, DhGroup, DhKeyPair, Epd, FlashProfile, PeerId};
use rtmfp_netgroup::p2p::{
    self, connect_key, encode_map, split_media, FragmentHeader, FragmentMap, GroupConnect,
    MediaAnnounce, NimbusMessage, Report, ReportEntry, StreamParams,
};
use rtmfp_netgroup::wire::{self, group_address};
use rtmfp_netgroup::{GroupConfig, GroupSpec, GroupSpecifier, NetGroup};
use sha2::{Digest, Sha256};

// ------------------------------------------------------------------ parsers

fn parsers(data: &[u8]) {
    if let Ok(id) = wire::parse_join(data) {
        // re-encoded as the modern form, it parses to the same ID
        assert_eq!(wire::parse_join(&wire::encode_join(&id)), Ok(id));
    }
    if let Ok(p) = wire::parse_introduction(data) {
        assert_eq!(
            wire::parse_introduction(&wire::encode_introduction(&p)),
            Ok(p)
        );
    }
    if let Ok(c) = GroupConnect::parse(data) {
        let e = c.encode();
        assert_eq!(GroupConnect::parse(&e).as_ref(), Ok(&c));
    }
    if let Ok(r) = Report::parse(data) {
        assert!(r.entries.len() <= p2p::MAX_REPORT_ENTRIES);
        assert!(r.sender_addresses.len() <= p2p::MAX_ENTRY_ADDRESSES);
        let e = r.encode();
        assert_eq!(Report::parse(&e).as_ref(), Ok(&r));
    }
    if let Ok(a) = MediaAnnounce::parse(data) {
        let e = a.encode();
        if let MediaAnnounce::Stream { name, .. } = &a {
            // names longer than 255 bytes are cut by the encoder
            if name.len() <= 255 {
                assert_eq!(MediaAnnounce::parse(&e).as_ref(), Ok(&a));
            }
        } else {
            assert_eq!(MediaAnnounce::parse(&e).as_ref(), Ok(&a));
        }
    }
    if let Ok(m) = FragmentMap::parse(data) {
        assert!(m.bitmap.len() <= p2p::MAX_MAP_BYTES);
        // probe ids around the edges and re-encode what the map describes
        let last = m.last;
        let probes = [
            0,
            1,
            last.saturating_sub(1),
            last,
            last.saturating_add(1),
            last / 2,
            u64::MAX,
        ];
        for id in probes {
            let _ = m.has(id);
        }
        assert!(!m.has(0));
        assert_eq!(m.has(last), last != 0);
        let span = (m.bitmap.len() as u64 * 8).min(last);
        let first = last - span;
        let e = encode_map(last, first, |id| m.has(id));
        let back = FragmentMap::parse(&e).expect("encode_map parses");
        assert_eq!(back.last, last);
        for id in first.max(1)..last {
            assert_eq!(back.has(id), m.has(id), "id {id} of {last}");
        }
    }
    if let Ok(h) = FragmentHeader::parse(data) {
        assert!(h.payload_at <= data.len());
        assert_ne!(h.id, 0);
    }
    let b = Bytes::copy_from_slice(data);
    if let Ok(m) = NimbusMessage::parse(&b) {
        let e = Bytes::from(m.encode());
        assert_eq!(NimbusMessage::parse(&e).as_ref(), Ok(&m));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = GroupSpec::parse(text);
    }
}

// -------------------------------------------------------------------- input

impl Input<'_> {
    fn name(&mut self) -> String {
        match self.b() % 4 {
            0 | 1 => "cam".into(),
            2 => "live".into(),
            _ => String::from_utf8_lossy(self.bytes(300, false)).into_owned(),
        }
    }

    fn address(&mut self) -> Address {
        let f = self.b();
        let origin = match f & 3 {
            0 => AddressOrigin::Unknown,
            1 => AddressOrigin::Local,
            2 => AddressOrigin::Public,
            _ => AddressOrigin::Relay,
        };
        let addr = match f >> 2 & 3 {
            0 => M_ADDR,
            1 => H_ADDR,
            2 => S_ADDR,
            _ if f & 0x40 != 0 => SocketAddr::from((
                [0x20, 1, 0xdb, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, self.b()],
                self.u16(),
            )),
            _ => SocketAddr::from(([10, 9, self.b(), self.b()], self.u16())),
        };
        Address { addr, origin }
    }
}

// -------------------------------------------------------------------- world

const S_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    1935,
);
const M_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
    40000,
);
const H_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3)),
    40000,
);

/// Static DH keys of the server, member and hostile peer, generated once
/// per process (generating them costs far more than an iteration).
fn static_keys() -> &'static [DhKeyPair; 3] {
    static KEYS: OnceLock<[DhKeyPair; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        [0, 1, 2].map(|_| DhKeyPair::generate(DhGroup::Modp1024, &mut rng))
    })
}

fn endpoint(who: usize, now: Instant) -> Endpoint {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + who as u64);
    let b = if who == 0 {
        FlashProfile::server(None)
    } else {
        FlashProfile::client()
    };
    let p = b
        .groups(&[DhGroup::Modp1024])
        .static_key(static_keys()[who].clone())
        .build(&mut rng)
        .expect("profile");
    let cfg = EndpointConfig {
        report_foreign_ihello: who == 0,
        ihello_rate_per_source: 1000,
        ..EndpointConfig::default()
    };
    Endpoint::new(cfg, Box::new(p), Box::new(rng), now)
}

fn peer_id(ep: &Endpoint) -> [u8; 32] {
    fingerprint(ep.profile().certificate()).0
}

const META: [&[u8]; 7] = [
    p2p::META_REPORT,
    p2p::META_MEDIA,
    p2p::META_FRAGMENTS,
    p2p::NIMBUS_METADATA,
    wire::GC_METADATA,
    b"GR\x1d",
    b"",
];

struct World {
    now: Instant,
    s: Endpoint,
    m: Endpoint,
    h: Endpoint,
    group: Option<NetGroup>,
    spec: String,
    group_text: String,
    group_id: [u8; 32],
    m_id: [u8; 32],
    h_id: [u8; 32],
    /// The member's server session (at the member).
    m_server: Option<SessionId>,
    /// The server's sessions and GC flows: (session, flow from the member).
    s_gc_in: Option<(SessionId, u64)>,
    /// The server's introduction flow.
    s_gc_out: Option<(SessionId, u64)>,
    /// The hostile peer's session with the member.
    h_session: Option<SessionId>,
    /// Flows the hostile peer opened.
    h_out: Vec<u64>,
    /// Flows the member opened to the hostile peer, with their metadata.
    h_in: Vec<(u64, Bytes)>,
    /// Fragment ids the hostile peer sends next.
    next_frag: u64,
    buf: Vec<u8>,
    m_events: usize,
}

impl World {
    fn new(now: Instant) -> Self {
        let s = endpoint(0, now);
        let m = endpoint(1, now);
        let h = endpoint(2, now);
        let spec = GroupSpecifier::new("fuzz")
            .expect("spec")
            .multicast_enabled(true)
            .posting_enabled(true)
            .object_replication_enabled(true)
            .group_spec_with_authorizations();
        let parsed = GroupSpec::parse(&spec).expect("spec parses");
        World {
            now,
            m_id: peer_id(&m),
            h_id: peer_id(&h),
            group_text: parsed.hashed_text().to_owned(),
            group_id: parsed.group_id(),
            spec,
            s,
            m,
            h,
            group: None,
            m_server: None,
            s_gc_in: None,
            s_gc_out: None,
            h_session: None,
            h_out: Vec::new(),
            h_in: Vec::new(),
            next_frag: 1,
            buf: Vec::new(),
            m_events: 0,
        }
    }

    /// Moves datagrams and events until quiet.
    fn pump(&mut self) {
        for _ in 0..64 {
            let mut moved = 0;
            for from in 0..3 {
                let mut n = 0;
                loop {
                    let (src, to) = {
                        let ep = match from {
                            0 => &mut self.s,
                            1 => &mut self.m,
                            _ => &mut self.h,
                        };
                        let Some(to) = ep.poll_transmit(self.now, &mut self.buf) else {
                            break;
                        };
                        ([S_ADDR, M_ADDR, H_ADDR][from], to)
                    };
                    n += 1;
                    assert!(n < 100_000, "poll_transmit does not stop");
                    moved += 1;
                    let dst = if to == S_ADDR {
                        &mut self.s
                    } else if to == M_ADDR {
                        &mut self.m
                    } else if to == H_ADDR {
                        &mut self.h
                    } else {
                        continue;
                    };
                    dst.handle_datagram(self.now, src, &self.buf);
                }
            }
            let events = self.events();
            self.group_timer();
            if moved == 0 && !events {
                break;
            }
        }
    }

    fn group_timer(&mut self) {
        let now = self.now;
        if let Some(g) = self.group.as_mut() {
            if g.poll_timeout().is_some_and(|t| t <= now) {
                g.handle_timeout(&mut self.m, now);
                assert!(
                    g.poll_timeout().is_none_or(|t| t > now),
                    "handle_timeout leaves the group timer due"
                );
            }
        }
    }

    /// Drains every endpoint's events; whether there were any.
    fn events(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        // the member
        for _ in 0..100_000 {
            let Some(ev) = self.m.poll_event() else { break };
            any = true;
            if let Some(g) = self.group.as_mut() {
                if g.on_event(&mut self.m, now, &ev) {
                    continue;
                }
            }
            match ev {
                Event::SessionOpened { session, peer, .. } if peer == S_ADDR => {
                    self.m_server.get_or_insert(session);
                }
                Event::IncomingFlow { session, flow, .. } => {
                    let _ = self.m.reject_flow(now, session, flow, 0);
                }
                Event::Readable { session, flow } => {
                    while self.m.read(now, session, flow).is_some() {}
                }
                _ => {}
            }
        }
        if let Some(g) = self.group.as_mut() {
            let mut n = 0;
            while g.poll_event().is_some() {
                n += 1;
                assert!(n <= 1_000_000, "poll_event does not stop");
            }
            self.m_events += n;
        }
        // the server
        for _ in 0..100_000 {
            let Some(ev) = self.s.poll_event() else { break };
            any = true;
            match ev {
                Event::IncomingFlow {
                    session,
                    flow,
                    ref metadata,
                    ..
                } if wire::is_gc_metadata(metadata) => {
                    self.s_gc_in = Some((session, flow));
                }
                Event::Readable { session, flow } => {
                    while let Some(m) = self.s.read(now, session, flow) {
                        let _ = wire::parse_join(&m.data);
                    }
                }
                Event::IHelloForOther {
                    from,
                    ref epd,
                    ref tag,
                } => {
                    // introduce the hostile peer to whoever looks for it
                    let fp = Epd::parse(epd).ok().and_then(|e| e.fingerprint);
                    if fp.is_some_and(|p| p.0 == self.h_id) {
                        self.s.send_redirect(
                            from,
                            tag,
                            &[Address {
                                addr: H_ADDR,
                                origin: AddressOrigin::Public,
                            }],
                        );
                    }
                }
                _ => {}
            }
        }
        // the hostile peer
        for _ in 0..100_000 {
            let Some(ev) = self.h.poll_event() else { break };
            any = true;
            match ev {
                Event::SessionOpened { session, .. }
                    if self
                        .h_session
                        .is_none_or(|s| self.h.session_info(s).is_none()) =>
                {
                    self.h_session = Some(session);
                    self.h_out.clear();
                    self.h_in.clear();
                }
                Event::IncomingFlow {
                    session,
                    flow,
                    metadata,
                    ..
                } if Some(session) == self.h_session && self.h_in.len() < 64 => {
                    self.h_in.push((flow, metadata));
                }
                Event::Readable { session, flow } => {
                    while self.h.read(now, session, flow).is_some() {}
                }
                Event::SessionClosed { session, .. } | Event::SessionFailed { session, .. }
                    if Some(session) == self.h_session =>
                {
                    self.h_session = None;
                    self.h_out.clear();
                    self.h_in.clear();
                }
                _ => {}
            }
        }
        any
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for ep in [&mut self.s, &mut self.m, &mut self.h] {
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
        }
        self.group_timer();
        self.pump();
    }

    fn start(&mut self) -> bool {
        let epd = Epd::server(b"rtmfp://10.0.0.1/app".to_vec()).encode();
        if self.m.connect(self.now, &epd, &[S_ADDR]).is_err() {
            return false;
        }
        self.pump();
        let Some(server) = self.m_server else {
            return false;
        };
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let cfg = GroupConfig::default();
        let mut g = NetGroup::new(
            &self.spec,
            PeerId(self.m_id),
            server,
            None,
            vec![S_ADDR],
            cfg,
            Box::new(rng),
        )
        .expect("group");
        g.join(&mut self.m, self.now).expect("join");
        self.group = Some(g);
        self.pump();
        true
    }

    fn h_dial(&mut self) {
        if self.h_session.is_some() {
            return;
        }
        let epd = Epd::peer(PeerId(self.m_id)).encode();
        let _ = self.h.connect(self.now, &epd, &[M_ADDR]);
        self.pump();
    }

    /// The server introduces `msg` on its GC flow.
    fn introduce(&mut self, msg: Vec<u8>) {
        let now = self.now;
        if self.s_gc_out.is_none() {
            let Some((s, f)) = self.s_gc_in else { return };
            let Ok(out) = self
                .s
                .open_flow(now, s, wire::GC_METADATA, Some(f), Priority::IMMEDIATE)
            else {
                return;
            };
            self.s_gc_out = Some((s, out));
        }
        if let Some((s, f)) = self.s_gc_out {
            let _ = self.s.send(now, s, f, Bytes::from(msg), None);
        }
    }

    fn h_send(&mut self, idx: u8, msg: Vec<u8>) {
        let (Some(s), Some(f)) = (
            self.h_session,
            self.h_out.get(usize::from(idx) % self.h_out.len().max(1)),
        ) else {
            return;
        };
        let _ = self.h.send(self.now, s, *f, Bytes::from(msg), None);
    }

    fn valid_connect(&self) -> Option<Vec<u8>> {
        let info = self.h.session_info(self.h_session?)?;
        Some(
            GroupConnect {
                group_id: self.group_id,
                key: connect_key(&self.group_text, &info.far_nonce),
                receiver: self.m_id,
            }
            .encode(),
        )
    }

    fn peer_ids(&self, inp: &mut Input<'_>) -> [u8; 32] {
        match inp.b() % 5 {
            0 => self.m_id,
            1 => self.h_id,
            2 => group_address(&self.m_id),
            3 => [inp.b(); 32],
            _ => {
                let mut p = [0u8; 32];
                p[0] = inp.b();
                p[31] = inp.b();
                p
            }
        }
    }

    /// A well-formed message with fuzzer-chosen values.
    fn structured(&mut self, inp: &mut Input<'_>) -> Vec<u8> {
        match inp.b() % 14 {
            0 | 1 => self.valid_connect().unwrap_or_default(),
            2 => {
                // a connect with one field wrong (or right)
                let mut c = GroupConnect {
                    group_id: self.group_id,
                    key: [inp.b(); 32],
                    receiver: self.m_id,
                };
                if inp.b() & 1 == 0 {
                    c.receiver = self.peer_ids(inp);
                }
                c.encode()
            }
            3 => vec![*inp
                .pick(&[
                    p2p::MSG_BEGIN,
                    p2p::MSG_BEGIN_NEAREST,
                    p2p::MSG_DATA,
                    p2p::MSG_ASK_CLOSE,
                ])
                .get_or_insert(0)],
            4 | 5 => {
                let n = usize::from(inp.b() % 12);
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = usize::from(inp.b() % 4);
                    entries.push(ReportEntry {
                        peer: self.peer_ids(inp),
                        seconds: u64::from(inp.u16() % 400),
                        addresses: (0..k).map(|_| inp.address()).collect(),
                    });
                }
                let k = usize::from(inp.b() % 4);
                Report {
                    seen: (inp.b() & 1 == 0).then(|| inp.address()),
                    sender_addresses: (0..k).map(|_| inp.address()).collect(),
                    entries,
                }
                .encode()
            }
            6 => {
                let f = inp.b();
                MediaAnnounce::Stream {
                    name: inp.name(),
                    key: [f & 3; 32],
                    params: StreamParams {
                        send_to_all: f & 4 != 0,
                        window_ms: inp.u64(),
                        update_period_ms: inp.u64(),
                        fetch_period_ms: inp.u64(),
                    },
                }
                .encode()
            }
            7 => MediaAnnounce::End(inp.u64()).encode(),
            8 => {
                let last = match inp.b() % 3 {
                    0 => self.next_frag,
                    1 => u64::from(inp.u16()),
                    _ => inp.u64(),
                };
                let first = last.saturating_sub(u64::from(inp.u16()));
                let bits = inp.bytes(64, false).to_vec();
                encode_map(last, first, |id| {
                    let off = (last - id) as usize;
                    bits.get(off / 8 % bits.len().max(1))
                        .is_some_and(|b| b >> (off % 8) & 1 != 0)
                })
            }
            9 => vec![p2p::MSG_PUSH, inp.b()],
            10 => {
                let mut m = vec![p2p::MSG_PULL];
                rtmfp::wire::put_vlu(&mut m, inp.u64());
                m
            }
            11 => {
                let payload = Bytes::copy_from_slice(inp.bytes(300, false));
                match inp.b() % 7 {
                    0 => NimbusMessage::Post {
                        id: Sha256::digest(&payload).into(),
                        payload,
                    },
                    1 => NimbusMessage::Route {
                        dest: self.peer_ids(inp),
                        hops: inp.b(),
                        origin: self.peer_ids(inp),
                        payload,
                    },
                    2 => NimbusMessage::Neighbor {
                        origin: self.peer_ids(inp),
                        payload,
                    },
                    3 => {
                        let n = usize::from(inp.b() % 8);
                        NimbusMessage::Have(
                            (0..n)
                                .map(|_| {
                                    let a = inp.u64();
                                    (a, a.saturating_add(inp.u64()))
                                })
                                .collect(),
                        )
                    }
                    4 => NimbusMessage::Want(inp.u64()),
                    5 => NimbusMessage::Object {
                        index: inp.u64(),
                        object: payload,
                    },
                    _ => NimbusMessage::Deny(inp.u64()),
                }
                .encode()
            }
            _ => {
                // media fragments: handled by the caller (several messages)
                Vec::new()
            }
        }
    }

    fn op(&mut self, op: u8, inp: &mut Input<'_>) {
        let now = self.now;
        match op % 16 {
            0 | 1 => {
                // the hostile peer opens a group flow
                let Some(s) = self.h_session else {
                    self.h_dial();
                    return;
                };
                let k = inp.b();
                let meta: Vec<u8> = if k & 7 == 7 {
                    inp.bytes(16, false).to_vec()
                } else {
                    META[usize::from(k & 7) % META.len()].to_vec()
                };
                let assoc = match inp.b() % 4 {
                    0 | 1 => None,
                    2 => inp.pick(&self.h_in).map(|(f, _)| f),
                    _ => Some(inp.u64()),
                };
                // a fragments flow answers the member's media flow
                let assoc = if meta == p2p::META_FRAGMENTS && k & 8 == 0 {
                    self.h_in
                        .iter()
                        .rev()
                        .find(|(_, m)| m.as_ref() == p2p::META_MEDIA)
                        .map(|(f, _)| *f)
                        .or(assoc)
                } else if meta == p2p::META_MEDIA && k & 8 == 0 {
                    self.h_in
                        .iter()
                        .find(|(_, m)| m.as_ref() == p2p::META_REPORT)
                        .map(|(f, _)| *f)
                        .or(assoc)
                } else {
                    assoc
                };
                if let Ok(f) = self.h.open_flow(now, s, &meta, assoc, Priority::PRIORITY) {
                    if self.h_out.len() < 32 {
                        self.h_out.push(f);
                    }
                    if meta == p2p::META_REPORT && k & 0x10 == 0 {
                        // the usual opening: connect and begin
                        if let Some(c) = self.valid_connect() {
                            let _ = self.h.send(now, s, f, Bytes::from(c), None);
                            let _ =
                                self.h
                                    .send(now, s, f, Bytes::from_static(&[p2p::MSG_BEGIN]), None);
                        }
                    }
                }
            }
            2 | 3 => {
                let idx = inp.b();
                let msg = inp.bytes(2048, idx & 0x80 != 0).to_vec();
                self.h_send(idx, msg);
            }
            4..=6 => {
                let idx = inp.b();
                let msg = self.structured(inp);
                if !msg.is_empty() {
                    self.h_send(idx, msg);
                }
            }
            7 => {
                // media: one message split into fragments, some left out
                let idx = inp.b();
                // (split_media numbers parts with `first + i`: stay below the top)
                let first = match inp.b() % 4 {
                    0 => inp.u64(),
                    _ => self.next_frag,
                }
                .min(u64::MAX - 300);
                let size = usize::from(inp.u16() % 12_000);
                let drop = inp.b();
                let parts = split_media(first, inp.b(), u32::from(inp.u16()), &vec![0x27; size]);
                self.next_frag = first.saturating_add(parts.len() as u64);
                for (i, p) in parts.into_iter().enumerate() {
                    if drop != 0 && i % 8 == usize::from(drop % 8) {
                        continue;
                    }
                    self.h_send(idx, p);
                }
            }
            8 => {
                // the hostile peer closes or refuses something
                let Some(s) = self.h_session else { return };
                match inp.b() % 5 {
                    0 => {
                        if let Some(&f) = self
                            .h_out
                            .get(usize::from(inp.b()) % self.h_out.len().max(1))
                        {
                            let _ = self.h.close_flow(now, s, f);
                        }
                    }
                    1 => {
                        if let Some((f, _)) = inp.pick(&self.h_in.clone()) {
                            let _ = self.h.reject_flow(now, s, f, inp.u64());
                        }
                    }
                    2 => self.h.close_session(now, s),
                    3 => self.h.abort_session(now, s),
                    _ => {
                        if let Some(g) = self.group.as_mut() {
                            g.leave(&mut self.m, now);
                        }
                    }
                }
            }
            9 | 10 => {
                let ms = match inp.b() % 4 {
                    0 => u64::from(inp.u16()) * 10,
                    _ => u64::from(inp.u16() % 3000),
                };
                self.advance(Duration::from_millis(ms));
                return;
            }
            11 => {
                // the server introduces someone
                let msg = match inp.b() % 4 {
                    0 | 1 => wire::encode_introduction(&self.h_id),
                    2 => wire::encode_introduction(&self.peer_ids(inp)),
                    _ => inp.bytes(64, false).to_vec(),
                };
                self.introduce(msg);
            }
            _ => self.api(inp),
        }
        self.pump();
    }

    /// The member's own API.
    fn api(&mut self, inp: &mut Input<'_>) {
        let now = self.now;
        let Some(g) = self.group.as_mut() else { return };
        let ep = &mut self.m;
        match inp.b() % 16 {
            0 | 1 => {
                let _ = g.play(&inp.name());
            }
            2 => {
                let _ = g.publish(ep, now, &inp.name());
            }
            3 | 4 => {
                let size = usize::from(inp.u16() % 6000);
                let name = inp.name();
                let _ = g.send_media(
                    ep,
                    now,
                    &name,
                    inp.b(),
                    u32::from(inp.u16()),
                    &vec![0x17; size],
                );
            }
            5 => {
                let _ = g.unpublish(ep, now, &inp.name());
            }
            6 => g.stop_play(&inp.name()),
            7 => {
                let _ = g.post(ep, now, Bytes::copy_from_slice(inp.bytes(100, false)));
            }
            8 => {
                let dest = match inp.b() % 3 {
                    0 => group_address(&self.h_id),
                    1 => group_address(&self.m_id),
                    _ => [inp.b(); 32],
                };
                let _ = g.send_to_nearest(ep, now, dest, Bytes::from_static(b"near"));
            }
            9 => {
                let _ = g.send_to_neighbor(ep, now, PeerId(self.h_id), Bytes::from_static(b"hi"));
            }
            10 => {
                let _ = g.send_to_all_neighbors(ep, now, Bytes::from_static(b"all"));
            }
            11 => {
                let a = inp.u64();
                let _ = g.add_have_objects(ep, now, a, a.saturating_add(inp.u64()));
            }
            12 => {
                let a = inp.u64();
                g.remove_have_objects(ep, now, a, a.saturating_add(inp.u64()));
            }
            13 => {
                let a = inp.u64();
                let _ = g.add_want_objects(a, a.saturating_add(inp.u64()));
            }
            14 => {
                let a = inp.u64();
                g.remove_want_objects(a, a.saturating_add(inp.u64()));
            }
            _ => {
                let request = u64::from(inp.b() % 8);
                if inp.b() & 1 == 0 {
                    let _ = g.write_requested_object(ep, now, request, Bytes::from_static(b"obj"));
                } else {
                    g.deny_requested_object(ep, now, request);
                }
            }
        }
        let _ = g.stats();
        let _ = g.neighbors();
        let _ = g.estimated_member_count();
    }
}

/// A fixed clock so that runs reproduce.
fn epoch() -> Instant {
    static T: OnceLock<Instant> = OnceLock::new();
    *T.get_or_init(Instant::now)
}

fn member(mut inp: Input<'_>) {
    let mut w = World::new(epoch());
    if !w.start() {
        return;
    }
    // the hostile peer: dials the member itself, or is introduced by the
    // server (the member dials it through the server)
    if inp.b() & 1 == 0 {
        w.h_dial();
    } else {
        let intro = wire::encode_introduction(&w.h_id);
        w.introduce(intro);
        w.pump();
        w.advance(Duration::from_millis(10));
    }
    let mut steps = 0;
    while let Some(op) = inp.byte() {
        steps += 1;
        if steps > 96 {
            break;
        }
        w.op(op, &mut inp);
    }
    w.advance(Duration::from_secs(3));
    w.advance(Duration::from_secs(30));
    let _ = w.m_events;
}

fuzz_target!(|data: &[u8]| {
    parsers(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 3 != 0 {
        member(Input(rest));
    }
});
