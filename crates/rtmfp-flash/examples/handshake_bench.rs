//! Flash-crypto handshakes per second per DH group, over the `rtmfp-sim`
//! simulator (both ends in this thread; CPU time is measured per end).
//!
//! ```text
//! cargo run --release -p rtmfp-flash --example handshake_bench [-- N]
//! ```
//!
//! Each handshake is a fresh client endpoint (static DH key shared by all
//! clients, as a client process would keep it; HMAC and sequence numbers
//! required both ways) opening a session to one server endpoint (ephemeral
//! DH), through IHello, RHello, IIKeying and RIKeying. Printed per group:
//! the end-to-end rate with both ends on one core, the CPU time each end
//! spends per handshake (hence the rate one core sustains as a server), for
//! the server's default ephemeral key reuse window and without reuse.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointConfig, Event};
use rtmfp_flash::{DhGroup, DhKeyPair, Epd, FlashProfile, FlashProfileBuilder};
use rtmfp_sim::{Datagram, Node, Sim};

struct Peer {
    ep: Endpoint,
    addr: SocketAddr,
    opened: bool,
    cpu: Duration,
    next_timeout: Option<Instant>,
    buf: Vec<u8>,
}

impl Peer {
    fn new(addr: SocketAddr, builder: FlashProfileBuilder, seed: u64, now: Instant) -> Self {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let t = Instant::now();
        let profile = builder.build(&mut rng).expect("valid profile");
        let ep = Endpoint::new(
            EndpointConfig::default(),
            Box::new(profile),
            Box::new(rng),
            now,
        );
        Self {
            ep,
            addr,
            opened: false,
            cpu: t.elapsed(),
            next_timeout: None,
            buf: Vec::new(),
        }
    }

    fn pump(&mut self) {
        while let Some(e) = self.ep.poll_event() {
            if matches!(e, Event::SessionOpened { .. }) {
                self.opened = true;
            }
        }
        self.next_timeout = self.ep.poll_timeout();
    }
}

impl Node for Peer {
    fn handle_datagram(&mut self, now: Instant, src: SocketAddr, _dst: SocketAddr, data: &[u8]) {
        let t = Instant::now();
        self.ep.handle_datagram(now, src, data);
        self.pump();
        self.cpu += t.elapsed();
    }
    fn handle_timeout(&mut self, now: Instant) {
        let t = Instant::now();
        self.ep.handle_timeout(now);
        self.pump();
        self.cpu += t.elapsed();
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        let t = Instant::now();
        let dst = self.ep.poll_transmit(now, &mut self.buf);
        self.cpu += t.elapsed();
        let d = Datagram::new(self.addr, dst?, self.buf.clone());
        Some(d)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }
}

struct Result {
    rate: f64,
    server_ms: f64,
    client_ms: f64,
}

fn run(group: DhGroup, n: usize, reuse: u32) -> Result {
    let mut sim: Sim<Peer> = Sim::new(7);
    let now = sim.now();
    let server_addr: SocketAddr = "198.18.0.1:1935".parse().unwrap();
    let server = FlashProfile::server(None)
        .groups(&[group])
        .require_hmac(true)
        .require_sseq(true)
        .reuse_ephemeral_keys(reuse);
    sim.add_node(Peer::new(server_addr, server, 1, now), &[server_addr]);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    let client_key = DhKeyPair::generate(group, &mut rng);
    let epd = Epd::server("rtmfp://198.18.0.1/app").encode();
    let mut client_cpu = Duration::ZERO;
    let started = Instant::now();
    for i in 0..n {
        let ip = IpAddr::V4(Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8));
        let addr = SocketAddr::new(ip, 5000);
        let client = FlashProfile::client()
            .groups(&[group])
            .static_key(client_key.clone())
            .require_hmac(true)
            .require_sseq(true);
        let now = sim.now();
        let idx = sim.add_node(Peer::new(addr, client, 100 + i as u64, now), &[addr]);
        let c = sim.node_mut(idx);
        c.ep.connect(now, &epd, &[server_addr]).expect("connect");
        c.pump();
        let ok = sim.run_until(Duration::from_secs(10), |s| s.node(idx).opened);
        assert!(ok, "handshake {i} did not complete");
        client_cpu += sim.node(idx).cpu;
    }
    let wall = started.elapsed();
    Result {
        rate: n as f64 / wall.as_secs_f64(),
        server_ms: sim.node(0).cpu.as_secs_f64() * 1e3 / n as f64,
        client_ms: client_cpu.as_secs_f64() * 1e3 / n as f64,
    }
}

fn main() {
    let scale: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("Flash-crypto handshakes over rtmfp-sim (HMAC + SSEQ required, static-key clients)");
    println!(
        "{:<26} {:>5}  {:>12}  {:>10}  {:>10}  {:>12}",
        "group", "reuse", "e2e hs/s", "server ms", "client ms", "server hs/s"
    );
    for g in DhGroup::ALL.into_iter().rev() {
        let n = scale
            * match g {
                DhGroup::Modp4096 => 60,
                DhGroup::Modp2048 => 150,
                _ => 300,
            };
        for reuse in [32, 0] {
            let r = run(g, n, reuse);
            println!(
                "{:<26} {:>5}  {:>12.1}  {:>10.3}  {:>10.3}  {:>12.1}",
                g.to_string(),
                reuse,
                r.rate,
                r.server_ms,
                r.client_ms,
                1e3 / r.server_ms
            );
        }
    }
}
