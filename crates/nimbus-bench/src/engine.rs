//! `nimbus bench transfer | handshake`: figures measured over real loopback
//! UDP and through the simulator.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rtmfp::{EndpointConfig, Event, PlainProfile, Priority};
use serde_json::{json, Map, Value};

use crate::udp::UdpNode;

/// Result of one bulk transfer.
#[derive(Debug, Clone, Copy)]
pub struct TransferResult {
    pub bytes: u64,
    pub seconds: f64,
    pub packets: u64,
    pub retransmitted: u64,
}

impl TransferResult {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal")
}

/// Moves `total` bytes over `flows` flows from one endpoint to another over
/// loopback UDP, each endpoint in its own thread.
pub fn udp_transfer(total: usize, flows: usize, msg_size: usize) -> Result<TransferResult> {
    let config = EndpointConfig {
        recv_buffer: 4 << 20,
        send_buffer: 8 << 20,
        max_datagram_size: 1200,
        ..EndpointConfig::default()
    };
    let mut rx = UdpNode::bind(
        loopback(),
        config.clone(),
        Box::new(PlainProfile::new("receiver")),
        2,
    )?;
    let rx_addr = rx.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_rx = stop.clone();
    let per_flow = total / flows;
    let receiver = std::thread::spawn(move || -> Result<(u64, f64, u64)> {
        let mut got = 0u64;
        let mut first: Option<Instant> = None;
        let mut done_flows = 0usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        while done_flows < flows && Instant::now() < deadline && !stop_rx.load(Ordering::Relaxed) {
            rx.turn(Duration::from_millis(5))?;
            while let Some(e) = rx.ep.poll_event() {
                match e {
                    Event::Readable { session, flow } => {
                        while let Some(m) = rx.ep.read(Instant::now(), session, flow) {
                            first.get_or_insert_with(Instant::now);
                            got += m.data.len() as u64;
                        }
                    }
                    Event::RecvFlowComplete { .. } => done_flows += 1,
                    _ => {}
                }
            }
        }
        // let the final acknowledgements out
        let end = Instant::now();
        for _ in 0..20 {
            rx.turn(Duration::from_millis(1))?;
        }
        let secs = end.duration_since(first.unwrap_or(end)).as_secs_f64();
        Ok((got, secs, rx.received))
    });
    let mut tx = UdpNode::bind(loopback(), config, Box::new(PlainProfile::new("sender")), 1)?;
    let now = Instant::now();
    let sid = tx.ep.connect(now, b"receiver", &[rx_addr])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut open = false;
    while !open {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            bail!("session did not open");
        }
        tx.turn(Duration::from_millis(5))?;
        while let Some(e) = tx.ep.poll_event() {
            if matches!(e, Event::SessionOpened { .. }) {
                open = true;
            }
        }
    }
    let mut ids = Vec::new();
    for i in 0..flows {
        ids.push(tx.ep.open_flow(
            Instant::now(),
            sid,
            format!("flow{i}").as_bytes(),
            None,
            Priority::BULK,
        )?);
    }
    let payload = Bytes::from(vec![0x5au8; msg_size]);
    let mut sent = vec![0usize; flows];
    let mut closed = vec![false; flows];
    let deadline = Instant::now() + Duration::from_secs(120);
    while closed.iter().any(|c| !c) && Instant::now() < deadline {
        let now = Instant::now();
        for (i, &f) in ids.iter().enumerate() {
            while sent[i] < per_flow {
                let n = msg_size.min(per_flow - sent[i]);
                match tx.ep.send(now, sid, f, payload.slice(..n), None) {
                    Ok(()) => sent[i] += n,
                    Err(rtmfp::Error::WouldBlock) => break,
                    Err(e) => bail!("send: {e}"),
                }
            }
            if sent[i] >= per_flow && !closed[i] {
                tx.ep.close_flow(now, sid, f)?;
                closed[i] = true;
            }
        }
        tx.turn(Duration::from_millis(1))?;
        while tx.ep.poll_event().is_some() {}
    }
    // keep serving acknowledgements until the receiver is done
    let mut rx_done = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !rx_done && Instant::now() < deadline {
        tx.turn(Duration::from_millis(1))?;
        while tx.ep.poll_event().is_some() {}
        rx_done = receiver.is_finished();
    }
    stop.store(true, Ordering::Relaxed);
    let (got, secs, packets) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let retransmitted = tx
        .ep
        .session_info(sid)
        .map(|i| i.stats.fragments_retransmitted)
        .unwrap_or(0);
    if got as usize != per_flow * flows {
        bail!("received {got} of {} bytes", per_flow * flows);
    }
    Ok(TransferResult {
        bytes: got,
        seconds: secs.max(1e-9),
        packets,
        retransmitted,
    })
}

/// Bulk transfer through the simulator at a given loss rate.
pub fn sim_transfer(
    total: usize,
    loss: f64,
    delay_ms: u64,
    bandwidth_bps: u64,
) -> Result<(f64, f64, u64)> {
    use rtmfp_sim::{Datagram, LinkConfig, Node, Sim};
    struct P {
        ep: rtmfp::Endpoint,
        addr: SocketAddr,
        buf: Vec<u8>,
        next: Option<Instant>,
    }
    impl Node for P {
        fn handle_datagram(&mut self, now: Instant, src: SocketAddr, _: SocketAddr, data: &[u8]) {
            self.ep.handle_datagram(now, src, data);
            self.next = self.ep.poll_timeout();
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.ep.handle_timeout(now);
            self.next = self.ep.poll_timeout();
        }
        fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
            let d = self.ep.poll_transmit(now, &mut self.buf)?;
            self.next = self.ep.poll_timeout();
            Some(Datagram::new(self.addr, d, self.buf.clone()))
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.next
        }
    }
    use rand_core::SeedableRng;
    let mut sim: Sim<P> = Sim::new(1);
    sim.net.set_default_link(
        LinkConfig::default()
            .with_delay(Duration::from_millis(delay_ms))
            .with_loss(loss)
            .with_bandwidth(bandwidth_bps)
            .with_queue_bytes(256 * 1024),
    );
    let now = sim.now();
    let config = EndpointConfig {
        recv_buffer: 8 << 20,
        send_buffer: 8 << 20,
        ..EndpointConfig::default()
    };
    let (a, b): (SocketAddr, SocketAddr) = ("198.18.0.1:1".parse()?, "198.18.0.2:2".parse()?);
    for (i, (name, addr)) in [("a", a), ("b", b)].into_iter().enumerate() {
        let ep = rtmfp::Endpoint::new(
            config.clone(),
            Box::new(PlainProfile::new(name)),
            Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(i as u64)),
            now,
        );
        sim.add_node(
            P {
                ep,
                addr,
                buf: Vec::new(),
                next: None,
            },
            &[addr],
        );
    }
    let sid = sim.node_mut(0).ep.connect(now, b"b", &[b])?;
    if !sim.run_until(Duration::from_secs(30), |s| {
        s.node(0).ep.session_info(sid).is_some()
    }) {
        bail!("simulated session did not open");
    }
    let now = sim.now();
    let flow = sim
        .node_mut(0)
        .ep
        .open_flow(now, sid, b"bulk", None, Priority::BULK)?;
    let wall = Instant::now();
    let t0 = sim.now();
    let mut sent = 0usize;
    let mut got = 0usize;
    let chunk = Bytes::from(vec![1u8; 16 * 1024]);
    let limit = Duration::from_secs(3600);
    while got < total && sim.elapsed() < limit {
        let now = sim.now();
        while sent < total {
            let n = chunk.len().min(total - sent);
            if sim
                .node_mut(0)
                .ep
                .send(now, sid, flow, chunk.slice(..n), None)
                .is_err()
            {
                break;
            }
            sent += n;
        }
        sim.run_for(Duration::from_millis(5));
        let now = sim.now();
        let node = sim.node_mut(1);
        while let Some(e) = node.ep.poll_event() {
            if let Event::Readable { session, flow } = e {
                while let Some(m) = node.ep.read(now, session, flow) {
                    got += m.data.len();
                }
            }
        }
        while sim.node_mut(0).ep.poll_event().is_some() {}
    }
    if got < total {
        bail!("simulated transfer incomplete");
    }
    let virt = (sim.now() - t0).as_secs_f64();
    let retrans = sim
        .node(0)
        .ep
        .session_info(sid)
        .map(|i| i.stats.fragments_retransmitted)
        .unwrap_or(0);
    Ok((
        total as f64 / 1e6 / virt,
        wall.elapsed().as_secs_f64(),
        retrans,
    ))
}

/// Opens `n` sessions at once from `n` client endpoints (each on its own
/// socket) to one responder; returns (seconds until all opened, opened).
pub fn handshake_burst(n: usize, crypto: &Crypto) -> Result<(f64, usize)> {
    let config = EndpointConfig {
        max_startup_queue: 1 << 16,
        ..EndpointConfig::default()
    };
    let mut server = UdpNode::bind(loopback(), config.clone(), crypto.server()?, 7)?;
    let server_addr = server.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let srv = std::thread::spawn(move || -> Result<u64> {
        while !stop2.load(Ordering::Relaxed) {
            server.turn(Duration::from_millis(2))?;
            while server.ep.poll_event().is_some() {}
        }
        Ok(server.ep.stats().sessions_accepted)
    });
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(
            UdpNode::bind(
                loopback(),
                config.clone(),
                crypto.client(i)?,
                1000 + i as u64,
            )
            .context("binding client socket")?,
        );
    }
    let start = Instant::now();
    let mut pending: HashSet<usize> = (0..n).collect();
    for c in clients.iter_mut() {
        c.ep.connect(Instant::now(), &crypto.epd(), &[server_addr])?;
        c.flush()?;
    }
    let deadline = start + Duration::from_secs(60);
    while !pending.is_empty() && Instant::now() < deadline {
        let mut done = Vec::new();
        for &i in &pending {
            let c = &mut clients[i];
            c.turn(Duration::ZERO)?;
            while let Some(e) = c.ep.poll_event() {
                if matches!(e, Event::SessionOpened { .. }) {
                    done.push(i);
                }
            }
        }
        for i in done {
            pending.remove(&i);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = srv.join();
    Ok((secs, n - pending.len()))
}

/// Sessions opened one after another (each waits for the previous).
pub fn handshake_sequential(n: usize, crypto: &Crypto) -> Result<f64> {
    let config = EndpointConfig::default();
    let mut server = UdpNode::bind(loopback(), config.clone(), crypto.server()?, 9)?;
    let server_addr = server.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let srv = std::thread::spawn(move || -> Result<()> {
        while !stop2.load(Ordering::Relaxed) {
            server.turn(Duration::from_millis(2))?;
            while server.ep.poll_event().is_some() {}
        }
        Ok(())
    });
    let start = Instant::now();
    // keep every client (and so its port) alive: a reused address would
    // belong to a still-open session of another identity (RFC 7016 §3.5.1.1.2)
    let mut keep = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = UdpNode::bind(loopback(), config.clone(), crypto.client(i)?, i as u64)?;
        c.ep.connect(Instant::now(), &crypto.epd(), &[server_addr])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut open = false;
        while !open && Instant::now() < deadline {
            c.turn(Duration::from_millis(1))?;
            while let Some(e) = c.ep.poll_event() {
                open |= matches!(e, Event::SessionOpened { .. });
            }
        }
        if !open {
            bail!("sequential open {i} failed");
        }
        keep.push(c);
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = srv.join();
    Ok(n as f64 / secs)
}

fn print(json_out: bool, fields: Vec<(&str, Value)>, human: &str) {
    if json_out {
        let mut m = Map::new();
        for (k, v) in fields {
            m.insert(k.to_string(), v);
        }
        println!("{}", Value::Object(m));
    } else {
        println!("{human}");
        for (k, v) in fields {
            println!("  {k:<34} {v}");
        }
    }
}

pub fn run_transfer(json_out: bool, megabytes: usize, flows: usize, loss: f64) -> Result<()> {
    let total = megabytes * 1_000_000;
    let one = udp_transfer(total, 1, 64 * 1024)?;
    let many = udp_transfer(total, flows, 16 * 1024)?;
    let t_one = tokio_transfer(total, 1, 64 * 1024)?;
    let t_many = tokio_transfer(total, flows, 16 * 1024)?;
    let (sim_mb, sim_wall, sim_retx) =
        sim_transfer(20_000_000.min(total), loss, 10, 1_000_000_000)?;
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    print(
        json_out,
        vec![
            ("udp_one_flow_mb_per_s", json!(r2(one.mb_per_s()))),
            ("udp_one_flow_packets_per_s", json!((one.packets as f64 / one.seconds).round())),
            ("udp_one_flow_retransmitted", json!(one.retransmitted)),
            ("udp_many_flows_count", json!(flows)),
            ("udp_many_flows_mb_per_s", json!(r2(many.mb_per_s()))),
            ("udp_many_flows_packets_per_s", json!((many.packets as f64 / many.seconds).round())),
            ("tokio_one_flow_mb_per_s", json!(r2(t_one.mb_per_s()))),
            ("tokio_one_flow_packets_per_s", json!((t_one.packets as f64 / t_one.seconds).round())),
            ("tokio_many_flows_mb_per_s", json!(r2(t_many.mb_per_s()))),
            ("transfer_bytes", json!(total)),
            ("sim_loss", json!(loss)),
            ("sim_mb_per_s", json!(r2(sim_mb))),
            ("sim_wall_s", json!(r2(sim_wall))),
            ("sim_retransmitted", json!(sim_retx)),
        ],
        "bulk transfer (plain crypto, 1200-byte datagrams, loopback UDP; simulator: 1 Gbit/s, 10 ms, given loss)",
    );
    Ok(())
}

/// Which crypto profile the handshake benchmark uses.
#[derive(Debug, Clone, Copy)]
pub enum Crypto {
    /// `PlainProfile` (no cryptography).
    Plain,
    /// RFC 7425 with one DH group; clients use ephemeral keys, the server
    /// reuses its ephemeral key pair for a while (its default).
    Flash(rtmfp_flash::DhGroup),
}

impl Crypto {
    fn server(&self) -> Result<Box<dyn rtmfp::CryptoProfile>> {
        Ok(match self {
            Crypto::Plain => Box::new(PlainProfile::new("server")),
            Crypto::Flash(g) => {
                let mut rng =
                    <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(77);
                Box::new(
                    rtmfp_flash::FlashProfile::server(None)
                        .groups(&[*g])
                        .build(&mut rng)?,
                )
            }
        })
    }
    fn client(&self, i: usize) -> Result<Box<dyn rtmfp::CryptoProfile>> {
        Ok(match self {
            Crypto::Plain => Box::new(PlainProfile::new(format!("client{i}"))),
            Crypto::Flash(g) => {
                let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(
                    1000 + i as u64,
                );
                Box::new(
                    rtmfp_flash::FlashProfile::client()
                        .groups(&[*g])
                        .ephemeral_keys()
                        .build(&mut rng)?,
                )
            }
        })
    }
    fn epd(&self) -> Vec<u8> {
        match self {
            Crypto::Plain => b"server".to_vec(),
            Crypto::Flash(_) => rtmfp_flash::Epd::server("rtmfp://127.0.0.1/bench").encode(),
        }
    }
}

pub fn run_handshake(json_out: bool, burst: usize, sequential: usize, crypto: &str) -> Result<()> {
    match crypto {
        "plain" => {
            let (secs, opened) = handshake_burst(burst, &Crypto::Plain)?;
            let seq = handshake_sequential(sequential, &Crypto::Plain)?;
            print(
                json_out,
                vec![
                    ("burst_sessions", json!(burst)),
                    ("burst_opened", json!(opened)),
                    ("burst_ms", json!((secs * 1000.0 * 10.0).round() / 10.0)),
                    (
                        "burst_handshakes_per_s",
                        json!((opened as f64 / secs).round()),
                    ),
                    ("sequential_handshakes_per_s", json!(seq.round())),
                ],
                "session opens against one responder (plain crypto, loopback UDP)",
            );
        }
        "flash" => {
            use rtmfp_flash::DhGroup;
            let mut fields = Vec::new();
            for (name, g) in [
                ("group2", DhGroup::Modp1024),
                ("group14", DhGroup::Modp2048),
                ("group16", DhGroup::Modp4096),
            ] {
                let c = Crypto::Flash(g);
                let n_burst = burst.min(if matches!(g, DhGroup::Modp4096) {
                    100
                } else {
                    500
                });
                let n_seq = sequential.min(if matches!(g, DhGroup::Modp4096) {
                    30
                } else {
                    100
                });
                let (secs, opened) = handshake_burst(n_burst, &c)?;
                let seq = handshake_sequential(n_seq, &c)?;
                let key =
                    |k: &str| -> &'static str { Box::leak(format!("{name}_{k}").into_boxed_str()) };
                fields.push((key("burst_sessions"), json!(n_burst)));
                fields.push((key("burst_opened"), json!(opened)));
                fields.push((key("burst_ms"), json!((secs * 1000.0).round())));
                fields.push((
                    key("burst_handshakes_per_s"),
                    json!((opened as f64 / secs).round()),
                ));
                fields.push((
                    key("sequential_handshakes_per_s"),
                    json!((seq * 10.0).round() / 10.0),
                ));
            }
            print(
                json_out,
                fields,
                "Flash-crypto (RFC 7425) session opens against one responder, per DH group (clients generate ephemeral keys)",
            );
        }
        other => bail!("unknown crypto {other:?} (plain or flash)"),
    }
    Ok(())
}

/// The same bulk transfer through the async driver (`rtmfp-tokio`, batched
/// socket I/O), both endpoints in one process on a 2-thread runtime.
pub fn tokio_transfer(total: usize, flows: usize, msg_size: usize) -> Result<TransferResult> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let config = EndpointConfig {
            recv_buffer: 4 << 20,
            send_buffer: 8 << 20,
            ..EndpointConfig::default()
        };
        let mut driver = rtmfp_tokio::DriverConfig::default();
        driver.recv_flow_buffer = 4 << 20;
        driver.socket_buffer = Some(4 << 20);
        let rx = rtmfp_tokio::Endpoint::bind_with(
            loopback(),
            config.clone(),
            Box::new(PlainProfile::new("receiver")),
            driver.clone(),
        )?;
        let tx = rtmfp_tokio::Endpoint::bind_with(
            loopback(),
            config,
            Box::new(PlainProfile::new("sender")),
            driver,
        )?;
        let rx_addr = rx.local_addr();
        let per_flow = total / flows;
        let receiver = tokio::spawn(async move {
            let session = rx.accept().await.context("no session")?;
            let mut tasks = Vec::new();
            for _ in 0..flows {
                let mut flow = session.accept_flow().await.context("no flow")?;
                tasks.push(tokio::spawn(async move {
                    let mut got = 0u64;
                    let mut first = None;
                    while let Some(m) = flow.recv().await {
                        first.get_or_insert_with(Instant::now);
                        got += m.data.len() as u64;
                    }
                    (got, first, Instant::now())
                }));
            }
            let mut got = 0;
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            for t in tasks {
                let (g, f, l) = t.await?;
                got += g;
                if let Some(f) = f {
                    first = Some(first.map_or(f, |x: Instant| x.min(f)));
                }
                last = l;
            }
            let stats = rx.io_stats().await.ok();
            anyhow::Ok((
                got,
                last.duration_since(first.unwrap_or(last)).as_secs_f64(),
                stats,
            ))
        });
        let session = tx.connect(b"receiver", &[rx_addr]).await?;
        let payload = Bytes::from(vec![0x5au8; msg_size]);
        let mut senders = Vec::new();
        for i in 0..flows {
            let mut flow = session
                .open_flow(format!("flow{i}").as_bytes(), None, Priority::BULK)
                .await?;
            let payload = payload.clone();
            senders.push(tokio::spawn(async move {
                let mut sent = 0;
                while sent < per_flow {
                    let n = msg_size.min(per_flow - sent);
                    flow.send(payload.slice(..n)).await?;
                    sent += n;
                }
                flow.close().await?;
                anyhow::Ok(())
            }));
        }
        for s in senders {
            s.await??;
        }
        let (got, secs, stats) =
            tokio::time::timeout(Duration::from_secs(120), receiver).await???;
        let retransmitted = session
            .info()
            .await
            .map(|i| i.stats.fragments_retransmitted)
            .unwrap_or(0);
        let _ = stats;
        if got as usize != per_flow * flows {
            bail!("received {got} of {} bytes", per_flow * flows);
        }
        let packets = session
            .info()
            .await
            .map(|i| i.stats.packets_sent)
            .unwrap_or(0);
        tx.shutdown().await;
        Ok(TransferResult {
            bytes: got,
            seconds: secs.max(1e-9),
            packets,
            retransmitted,
        })
    })
}
