//! Handshake limits (issue 14): deferred keying, fairness between sources,
//! bounded keying queues, first-RTT answers under the anti-amplification
//! limit, and many clients behind one NAT address.
//!
//! A small deterministic network: one server and many clients exchange
//! datagrams in rounds of one virtual millisecond (so a round trip takes
//! two rounds); a server with deferred keying gets a "worker pool" that
//! runs at most a given number of keyings per round.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nimbus_testkit::identity;
use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointConfig, KeyingJob, KeyingResult, SessionId};

const TICK: Duration = Duration::from_millis(1);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn drain(ep: &mut Endpoint, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(d) = ep.poll_transmit(now, &mut buf) {
        out.push((d, buf.clone()));
    }
    out
}

fn wire(a: SocketAddr, payload: usize) -> usize {
    payload
        + match a {
            SocketAddr::V4(_) => 28,
            SocketAddr::V6(_) => 48,
        }
}

fn run(job: &KeyingJob) -> KeyingResult {
    job.run(&mut rand_chacha::ChaCha8Rng::from_seed(job.seed()))
}

struct Client {
    ep: Endpoint,
    addr: SocketAddr,
    session: Option<SessionId>,
    opened: Option<Instant>,
}

struct Net {
    now: Instant,
    start: Instant,
    server: Endpoint,
    saddr: SocketAddr,
    clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Keyings the server's worker pool runs per round (deferred keying).
    workers_per_tick: usize,
    /// Jobs taken and not yet run (the pool's backlog).
    backlog: Vec<KeyingJob>,
    /// Most keyings pending at the server at any time.
    max_pending: usize,
}

impl Net {
    fn new(config: EndpointConfig, workers_per_tick: usize) -> Self {
        let now = Instant::now();
        let saddr = addr("192.0.2.10:1935");
        Self {
            now,
            start: now,
            server: identity::plain_with(b"server".to_vec(), config, 7, now),
            saddr,
            clients: Vec::new(),
            by_addr: HashMap::new(),
            workers_per_tick,
            backlog: Vec::new(),
            max_pending: 0,
        }
    }

    /// Adds a client at `a` and has it connect to the server now.
    fn connect(&mut self, a: SocketAddr) -> usize {
        let i = self.clients.len();
        let name = format!("client-{i}").into_bytes();
        let mut ep =
            identity::plain_with(name, EndpointConfig::default(), 1000 + i as u64, self.now);
        let session = ep.connect(self.now, b"server", &[self.saddr]).ok();
        assert!(session.is_some());
        self.clients.push(Client {
            ep,
            addr: a,
            session,
            opened: None,
        });
        self.by_addr.insert(a, i);
        i
    }

    fn opened(&self, i: usize) -> bool {
        self.clients[i].opened.is_some()
    }

    fn all_opened(&self, range: std::ops::Range<usize>) -> bool {
        range.into_iter().all(|i| self.opened(i))
    }

    /// One round: clients send, the server answers (and its pool works),
    /// clients receive, the clock advances one tick.
    fn step(&mut self) {
        let now = self.now;
        for c in &mut self.clients {
            for (dst, d) in drain(&mut c.ep, now) {
                assert_eq!(dst, self.saddr);
                self.server.handle_datagram(now, c.addr, &d);
            }
        }
        if self.server.config().deferred_keying {
            while let Some(job) = self.server.poll_keying() {
                self.backlog.push(job);
            }
            self.max_pending = self.max_pending.max(self.server.keyings_pending());
            let n = self.workers_per_tick.min(self.backlog.len());
            for job in self.backlog.drain(..n).collect::<Vec<_>>() {
                self.server.handle_keying(now, run(&job));
            }
        }
        self.max_pending = self.max_pending.max(self.server.keyings_pending());
        for (dst, d) in drain(&mut self.server, now) {
            if let Some(&i) = self.by_addr.get(&dst) {
                self.clients[i].ep.handle_datagram(now, self.saddr, &d);
            }
        }
        while self.server.poll_event().is_some() {}
        for c in &mut self.clients {
            while c.ep.poll_event().is_some() {}
            if c.opened.is_none()
                && c.session
                    .and_then(|s| c.ep.session_info(s))
                    .is_some_and(|i| i.open)
            {
                c.opened = Some(now);
            }
        }
        self.now += TICK;
        let now = self.now;
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        for c in &mut self.clients {
            if c.ep.poll_timeout().is_some_and(|t| t <= now) {
                c.ep.handle_timeout(now);
            }
        }
    }

    /// Steps until `done` or until `limit` of virtual time from now.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    fn elapsed(&self, i: usize) -> Option<Duration> {
        self.clients[i].opened.map(|t| t - self.start)
    }
}

fn deferred(max_in_flight: usize) -> EndpointConfig {
    EndpointConfig {
        deferred_keying: true,
        max_keyings_in_flight: max_in_flight,
        amplification_factor: 3,
        ..EndpointConfig::default()
    }
}

/// The first datagrams of a handshake between `a` and `b`, shuttled by
/// hand: returns the client's IIKeying after the IHello / RHello exchange.
fn until_iikeying(
    a: &mut Endpoint,
    aa: SocketAddr,
    b: &mut Endpoint,
    ba: SocketAddr,
    now: Instant,
) {
    a.connect(now, b"server", &[ba]).unwrap();
    for (_, d) in drain(a, now) {
        b.handle_datagram(now, aa, &d); // IHello
    }
    for (_, d) in drain(b, now) {
        a.handle_datagram(now, ba, &d); // RHello
    }
    for (_, d) in drain(a, now) {
        b.handle_datagram(now, aa, &d); // IIKeying
    }
}

fn shuttle(a: &mut Endpoint, aa: SocketAddr, b: &mut Endpoint, ba: SocketAddr, now: Instant) {
    for _ in 0..10 {
        let x = drain(a, now);
        let y = drain(b, now);
        if x.is_empty() && y.is_empty() {
            return;
        }
        for (_, d) in x {
            b.handle_datagram(now, aa, &d);
        }
        for (_, d) in y {
            a.handle_datagram(now, ba, &d);
        }
    }
}

fn is_open(ep: &Endpoint) -> bool {
    ep.sessions().next().is_some()
}

// ------------------------------------------------------------- deferred

#[test]
fn deferred_keyings_run_on_worker_threads_and_open_sessions() {
    let now = Instant::now();
    let ba = addr("192.0.2.10:1935");
    // jobs go to two worker threads and come back over a channel
    let (job_tx, job_rx) = mpsc::channel::<KeyingJob>();
    let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
    let (res_tx, res_rx) = mpsc::channel::<KeyingResult>();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let rx = job_rx.clone();
            let tx = res_tx.clone();
            std::thread::spawn(move || loop {
                let job = match rx.lock().unwrap().recv() {
                    Ok(j) => j,
                    Err(_) => return,
                };
                let _ = tx.send(run(&job));
            })
        })
        .collect();
    drop(res_tx);

    let mut server = identity::plain_with(b"server".to_vec(), deferred(64), 7, now);
    let mut clients: Vec<(Endpoint, SocketAddr)> = (0..8)
        .map(|i| {
            let a = SocketAddr::from(([198, 51, 100, 1], 1000 + i));
            (identity::plain(&format!("c{i}"), u64::from(i), now), a)
        })
        .collect();
    for (c, a) in &mut clients {
        until_iikeying(c, *a, &mut server, ba, now);
    }
    // nothing is keyed inside the input: the jobs wait for the owner
    assert_eq!(server.session_count(), 0);
    assert_eq!(server.keyings_pending(), 8);
    assert!(drain(&mut server, now).is_empty());
    let mut sent = 0;
    while let Some(job) = server.poll_keying() {
        job_tx.send(job).unwrap();
        sent += 1;
    }
    assert_eq!(sent, 8);
    assert_eq!(server.keyings_in_flight(), 8);
    for _ in 0..8 {
        let r = res_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        server.handle_keying(now, r);
    }
    drop(job_tx);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(server.keyings_pending(), 0);
    let st = server.stats();
    assert_eq!(
        (st.keyings_queued, st.keyings_done, st.keyings_dropped),
        (8, 8, 0)
    );
    assert_eq!(st.sessions_accepted, 8);
    let out = drain(&mut server, now); // the RIKeyings
    assert_eq!(out.len(), 8);
    for (dst, d) in out {
        let (c, _) = clients.iter_mut().find(|(_, a)| *a == dst).unwrap();
        c.handle_datagram(now, ba, &d);
    }
    for (c, a) in &mut clients {
        shuttle(c, *a, &mut server, ba, now);
        assert!(is_open(c));
    }
    assert_eq!(server.sessions().count(), 8);
}

#[test]
fn shards_sharing_a_profile_and_cookie_secret_accept_each_others_cookies() {
    let now = Instant::now();
    let (aa, ba) = (addr("198.51.100.1:1000"), addr("192.0.2.10:1935"));
    let profile: std::sync::Arc<dyn rtmfp::CryptoProfile> =
        std::sync::Arc::new(rtmfp::PlainProfile::new("server"));
    let config = EndpointConfig {
        cookie_secret: Some([9; 32]),
        ..EndpointConfig::default()
    };
    let rng = |s| Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(s));
    let mut shard0 = Endpoint::with_shared_profile(config.clone(), profile.clone(), rng(1), now);
    let mut shard1 = Endpoint::with_shared_profile(config, profile, rng(2), now);
    let mut c = identity::plain("c", 1, now);
    c.connect(now, b"server", &[ba]).unwrap();
    for (_, d) in drain(&mut c, now) {
        shard0.handle_datagram(now, aa, &d); // IHello to shard 0
    }
    for (_, d) in drain(&mut shard0, now) {
        c.handle_datagram(now, ba, &d);
    }
    // the IIKeying lands on shard 1, which opens the session
    shuttle(&mut c, aa, &mut shard1, ba, now);
    assert!(is_open(&c) && is_open(&shard1));
}

#[test]
fn without_deferred_keying_poll_keying_is_empty_and_keying_is_inline() {
    let now = Instant::now();
    let (aa, ba) = (addr("198.51.100.1:1000"), addr("192.0.2.10:1935"));
    let mut server = identity::plain_with(b"server".to_vec(), EndpointConfig::default(), 7, now);
    let mut c = identity::plain("c", 1, now);
    until_iikeying(&mut c, aa, &mut server, ba, now);
    assert!(server.poll_keying().is_none());
    assert_eq!(server.keyings_pending(), 0);
    assert_eq!(server.stats().keyings_done, 1);
    shuttle(&mut c, aa, &mut server, ba, now);
    assert!(is_open(&c) && is_open(&server));
}

#[test]
fn a_retransmitted_iikeying_makes_no_second_job() {
    let now = Instant::now();
    let (aa, ba) = (addr("198.51.100.1:1000"), addr("192.0.2.10:1935"));
    let mut server = identity::plain_with(b"server".to_vec(), deferred(64), 7, now);
    let mut c = identity::plain("c", 1, now);
    until_iikeying(&mut c, aa, &mut server, ba, now);
    assert_eq!(server.keyings_pending(), 1);
    // the client retransmits its IIKeying before the job is even taken...
    let later = now + Duration::from_secs(2);
    c.handle_timeout(later);
    let again = drain(&mut c, later);
    assert_eq!(again.len(), 1);
    server.handle_datagram(later, aa, &again[0].1);
    assert_eq!(server.keyings_pending(), 1);
    let job = server.poll_keying().unwrap();
    assert!(server.poll_keying().is_none());
    // ... and while it runs
    server.handle_datagram(later, aa, &again[0].1);
    assert!(server.poll_keying().is_none());
    assert_eq!(server.keyings_pending(), 1);
    server.handle_keying(later, run(&job));
    // a stale or repeated result is ignored
    server.handle_keying(later, run(&job));
    server.handle_keying(later, KeyingResult::abandoned(job.id()));
    let st = server.stats();
    assert_eq!((st.keyings_queued, st.keyings_done), (1, 1));
    assert_eq!(st.sessions_accepted, 1);
    // after the session opened, a retransmission gets the same RIKeying
    // back, without a job
    let rik = drain(&mut server, later);
    assert_eq!(rik.len(), 1);
    server.handle_datagram(later, aa, &again[0].1);
    assert!(server.poll_keying().is_none());
    let rik2 = drain(&mut server, later);
    assert_eq!(rik2.len(), 1);
    assert_eq!(server.stats().keyings_queued, 1);
    c.handle_datagram(later, ba, &rik[0].1);
    shuttle(&mut c, aa, &mut server, ba, later);
    assert!(is_open(&c));
    assert_eq!(server.sessions().count(), 1);
}

#[test]
fn a_result_after_the_maximum_wait_is_dropped_and_the_retry_succeeds() {
    let now = Instant::now();
    let (aa, ba) = (addr("198.51.100.1:1000"), addr("192.0.2.10:1935"));
    let config = EndpointConfig {
        keying_max_wait: Duration::from_secs(1),
        ..deferred(64)
    };
    let mut server = identity::plain_with(b"server".to_vec(), config, 7, now);
    let mut c = identity::plain("c", 1, now);
    until_iikeying(&mut c, aa, &mut server, ba, now);
    let job = server.poll_keying().unwrap();
    let result = run(&job);
    // the worker takes too long: its result is refused, nothing opens
    let late = now + Duration::from_millis(1200);
    server.handle_keying(late, result);
    assert!(drain(&mut server, late).is_empty());
    assert_eq!(server.session_count(), 0);
    assert_eq!(
        (server.keyings_pending(), server.keyings_in_flight()),
        (0, 0)
    );
    let st = server.stats();
    assert_eq!((st.keyings_dropped, st.keyings_done), (1, 0));
    while server.poll_event().is_some() {}
    // the initiator's retransmission makes a fresh job, which completes
    let retry = now + Duration::from_millis(1500);
    c.handle_timeout(retry);
    for (_, d) in drain(&mut c, retry) {
        server.handle_datagram(retry, aa, &d);
    }
    let job = server.poll_keying().unwrap();
    server.handle_keying(retry, run(&job));
    shuttle(&mut c, aa, &mut server, ba, retry);
    assert!(is_open(&c));

    // a job whose result never comes back frees its slot after the wait
    let config = EndpointConfig {
        keying_max_wait: Duration::from_secs(1),
        ..deferred(1)
    };
    let mut server = identity::plain_with(b"server".to_vec(), config, 7, now);
    let mut c1 = identity::plain("c1", 1, now);
    let mut c2 = identity::plain("c2", 2, now);
    let a2 = addr("198.51.100.2:1000");
    until_iikeying(&mut c1, aa, &mut server, ba, now);
    let lost = server.poll_keying().unwrap();
    let t = now + Duration::from_millis(900);
    until_iikeying(&mut c2, a2, &mut server, ba, t);
    assert!(server.poll_keying().is_none(), "one in flight at most");
    let t = now + Duration::from_millis(1100);
    server.handle_timeout(t);
    let job = server
        .poll_keying()
        .expect("the lost job's slot is free again");
    server.handle_keying(t, run(&job));
    shuttle(&mut c2, a2, &mut server, ba, t);
    assert!(is_open(&c2));
    server.handle_keying(t, run(&lost));
    assert_eq!(server.stats().keyings_dropped, 1);
    assert_eq!(server.sessions().count(), 1);
}

// ------------------------------------------------------------- fairness

#[test]
fn a_flooding_address_does_not_starve_another() {
    // 3,000 clients behind 198.51.100.7 start at once; the pool keys 8
    // per millisecond, so they need about 375 ms. A client from another
    // address starting 5 ms later is served at its first turn.
    let mut net = Net::new(deferred(8), 8);
    for i in 0..3000u16 {
        net.connect(SocketAddr::from(([198, 51, 100, 7], 10_000 + i)));
    }
    for _ in 0..5 {
        net.step();
    }
    assert!(
        net.server.keyings_pending() > 2900,
        "{}",
        net.server.keyings_pending()
    );
    let honest = net.connect(addr("203.0.113.5:4000"));
    assert!(net.run_until(Duration::from_millis(50), |n| n.opened(honest)));
    let took = net.elapsed(honest).unwrap() - Duration::from_millis(5);
    assert!(took <= Duration::from_millis(8), "{took:?}");
    let flooders_done = (0..3000).filter(|&i| net.opened(i)).count();
    assert!(flooders_done < 200, "{flooders_done}");
    // and the flood itself is served in full, without retransmissions
    assert!(net.run_until(Duration::from_secs(1), |n| n.all_opened(0..3000)));
    let st = net.server.stats();
    assert_eq!(st.keyings_dropped, 0);
    assert_eq!(st.keyings_done, 3001);
    assert_eq!(st.amplification_drops, 0);
    assert!(net.max_pending <= 4096 + 8);
}

#[test]
fn full_keying_queues_drop_from_the_heaviest_source_and_memory_stays_bounded() {
    let config = EndpointConfig {
        max_keyings_waiting: 500,
        ..deferred(8)
    };
    // the pool is stuck for now: 8 jobs out, none coming back
    let mut net = Net::new(config, 0);
    for i in 0..3000u16 {
        net.connect(SocketAddr::from(([198, 51, 100, 7], 10_000 + i)));
    }
    for _ in 0..5 {
        net.step();
    }
    // 500 queued (8 of them now in flight), the rest dropped
    assert_eq!(net.max_pending, 500);
    assert_eq!(net.server.stats().keyings_dropped, 2500);
    // a second wave refills the 8 free places
    for i in 3000..3100u16 {
        net.connect(SocketAddr::from(([198, 51, 100, 7], 10_000 + i)));
    }
    for _ in 0..3 {
        net.step();
    }
    assert_eq!(net.max_pending, 508);
    let dropped = net.server.stats().keyings_dropped;
    assert_eq!(dropped, 2500 + 92);
    // the queue is full of the flood, yet another address gets in: one of
    // the flood's jobs makes room
    let honest = net.connect(addr("203.0.113.5:4000"));
    for _ in 0..3 {
        net.step();
    }
    assert_eq!(net.server.stats().keyings_dropped, dropped + 1);
    assert_eq!(net.max_pending, 508);
    // the pool works again: the honest client is served at its first turn
    net.workers_per_tick = 8;
    let t = net.now;
    assert!(net.run_until(Duration::from_millis(50), |n| n.opened(honest)));
    assert!(net.now - t <= Duration::from_millis(4), "{:?}", net.now - t);
    // the dropped initiators retransmit (at 1.5 s, then 4.5 s, ...) and
    // get in by waves of a queue's worth
    net.run_until(Duration::from_secs(5), |_| false);
    let opened = (0..3100).filter(|&i| net.opened(i)).count();
    assert!(opened >= 1500, "{opened}");
    assert!(net.max_pending <= 508);
    let st = net.server.stats();
    assert_eq!(st.sessions_accepted as usize, opened + 1);
    assert_eq!(st.keyings_done, st.sessions_accepted);
    assert_eq!(
        st.keyings_queued,
        st.keyings_done + net.server.keyings_pending() as u64 + 1,
        "queued = done + pending + the one evicted for the honest client"
    );
}

// --------------------------------------------------------- one NAT address

#[test]
fn a_thousand_clients_behind_one_address_connect_within_two_seconds() {
    for (name, config, per_tick) in [
        ("engine defaults", EndpointConfig::default(), 0),
        (
            "amplification limit 3",
            EndpointConfig {
                amplification_factor: 3,
                ..EndpointConfig::default()
            },
            0,
        ),
        ("deferred keying, 4 per ms", deferred(64), 4),
    ] {
        let mut net = Net::new(config, per_tick);
        for i in 0..1000u16 {
            net.connect(SocketAddr::from(([100, 64, 0, 1], 20_000 + i)));
        }
        assert!(
            net.run_until(Duration::from_secs(2), |n| n.all_opened(0..1000)),
            "{name}: {} of 1000 opened",
            (0..1000).filter(|&i| net.opened(i)).count()
        );
        let st = net.server.stats();
        assert_eq!(st.ihello_rate_drops, 0, "{name}");
        assert_eq!(st.amplification_drops, 0, "{name}");
        assert_eq!(st.sessions_accepted, 1000, "{name}");
        // every client connected at its first attempt
        assert_eq!(st.rhellos_sent, 1000, "{name}");
    }
}

// ------------------------------------------------------- amplification

#[test]
fn a_small_ihello_is_answered_at_once() {
    let now = Instant::now();
    let (aa, ba) = (addr("198.51.100.1:1000"), addr("192.0.2.10:1935"));
    let config = EndpointConfig {
        amplification_factor: 3,
        ..EndpointConfig::default()
    };
    let mut server = identity::plain_with(b"server".to_vec(), config, 7, now);
    let mut c = identity::plain("c", 1, now);
    c.connect(now, b"server", &[ba]).unwrap();
    let ih = drain(&mut c, now);
    assert_eq!(ih.len(), 1);
    server.handle_datagram(now, aa, &ih[0].1);
    let rh = drain(&mut server, now);
    assert_eq!(rh.len(), 1, "answered at the first IHello");
    assert!(wire(aa, rh[0].1.len()) <= 3 * wire(aa, ih[0].1.len()));
    c.handle_datagram(now, ba, &rh[0].1);
    shuttle(&mut c, aa, &mut server, ba, now);
    assert!(is_open(&c));
    // all at the same instant: no retransmission was needed
    assert_eq!(server.stats().amplification_drops, 0);
    assert_eq!(server.stats().rhellos_sent, 1);
}

#[test]
fn a_spoofed_ihello_flood_gets_at_most_three_times_its_wire_bytes() {
    let now = Instant::now();
    // a real IHello, replayed from 10,000 spoofed addresses (a tenth IPv6),
    // three times each, with a ledger too small to remember them all
    let mut c = identity::plain("c", 1, now);
    c.connect(now, b"server", &[addr("192.0.2.10:1935")])
        .unwrap();
    let ih = drain(&mut c, now).pop().unwrap().1;
    // and a short one: an empty tag
    // and a shorter one, crafted: an empty tag
    let short = {
        let mut plain = Vec::new();
        rtmfp::wire::PacketHeader {
            timestamp: Some(0),
            ..rtmfp::wire::PacketHeader::startup()
        }
        .encode(&mut plain);
        rtmfp::wire::Chunk::IHello {
            epd: b"server",
            tag: &[],
        }
        .encode(&mut plain)
        .unwrap();
        let mut d = vec![0u8; 4];
        d.extend_from_slice(&plain);
        let mut pc = rtmfp::PlainPacketCrypto::default();
        rtmfp::PacketCrypto::encrypt(&mut pc, &mut d, 4);
        let ssid = rtmfp::wire::scramble_session_id(0, &d[4..]);
        d[..4].copy_from_slice(&ssid.to_be_bytes());
        d
    };
    assert!(short.len() < ih.len());
    for factor in [3usize, 1] {
        let config = EndpointConfig {
            amplification_factor: factor,
            max_rate_limit_entries: 1024,
            ..EndpointConfig::default()
        };
        let mut server = identity::plain_with(b"server".to_vec(), config, 7, now);
        let (mut inb, mut outb) = (0usize, 0usize);
        let spoofed = |i: u32| -> SocketAddr {
            if i % 10 == 0 {
                SocketAddr::from((
                    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16),
                    1000,
                ))
            } else {
                SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 1000))
            }
        };
        let mut t = now;
        for round in 0..3 {
            for i in 0..10_000u32 {
                let a = spoofed(i);
                let d = if (i + round) % 4 == 0 { &short } else { &ih };
                server.handle_datagram(t, a, d);
                inb += wire(a, d.len());
                for (dst, out) in drain(&mut server, t) {
                    assert_eq!(dst, a, "answers go only to the asking address");
                    outb += wire(dst, out.len());
                }
            }
            t += Duration::from_millis(100);
        }
        assert!(
            outb <= factor * inb,
            "factor {factor}: sent {outb} wire bytes for {inb} received"
        );
        let st = server.stats();
        if factor == 3 {
            // every IHello was answered, at its first datagram
            assert_eq!(st.amplification_drops, 0);
            assert_eq!(st.rhellos_sent, 30_000);
        } else {
            assert!(st.amplification_drops > 0);
        }
        assert_eq!(server.session_count(), 0, "no state for unproven addresses");
    }
}
