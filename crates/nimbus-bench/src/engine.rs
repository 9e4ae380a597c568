//! `nimbus bench transfer | handshake`: figures measured over real loopback
//! UDP and through the simulator.
//!
//! Over UDP every engine runs on an `rtmfp-tokio` [`Host`] (batched receive,
//! GSO send, timers on tokio's clock): the bulk transfer's two ends are
//! [`Bulk`] machines, each on a current-thread runtime of its own thread;
//! the handshake benchmarks open sessions from [`Opener`] machines (one
//! host and socket per client) to a bare responder engine on its own
//! thread.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use rand_core::SeedableRng;
use rtmfp::SessionId;
use rtmfp::{CryptoProfile, Endpoint, EndpointConfig, Event, Machine, PlainProfile, Priority};
use rtmfp_tokio::{bind_udp, Host, HostConfig, HostHandle};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

/// Result of one bulk transfer.
#[derive(Debug, Clone, Copy)]
pub struct TransferResult {
    pub bytes: u64,
    pub seconds: f64,
    pub packets: u64,
    pub retransmitted: u64,
    /// Datagrams per send system call at the sender.
    pub datagrams_per_send: f64,
    /// Datagrams per receive system call at the receiver.
    pub datagrams_per_recv: f64,
}

impl TransferResult {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal")
}

/// Kernel buffers of the transfer's and the responder's sockets: a burst
/// of handshakes or a full congestion window must not overflow them.
const BIG_SOCKET_BUFFER: usize = 4 << 20;

/// Most events a bench machine keeps for its owner.
const MAX_BENCH_EVENTS: usize = 16;

/// A current-thread runtime (one per thread that runs hosts).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")
}

/// An engine for the bench, seeded, created at the hosts' clock.
fn engine(config: EndpointConfig, profile: Box<dyn CryptoProfile>, seed: u64) -> Endpoint {
    Endpoint::new(
        config,
        profile,
        Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed)),
        rtmfp_tokio::now(),
    )
}

/// The next event, or `None` at `deadline` (or when the host stopped).
async fn next_event<E>(
    events: &mut mpsc::Receiver<E>,
    deadline: tokio::time::Instant,
) -> Option<E> {
    tokio::time::timeout_at(deadline, events.recv())
        .await
        .ok()
        .flatten()
}

/// What a [`Bulk`] end reports.
#[derive(Debug)]
enum BulkEvent {
    /// The sender's session opened and its flows are open.
    Opened,
    /// The session or a flow failed.
    Failed(String),
    /// The receiver read every flow to its end: `bytes` from the first
    /// message read to the last flow's completion.
    Received { bytes: u64, seconds: f64 },
}

/// One sending flow of the bulk sender.
#[derive(Debug)]
struct SendFlow {
    id: u64,
    sent: usize,
    closed: bool,
}

/// The sending end's application: `flow_count` flows of `per_flow` bytes
/// each, in messages of `payload`'s size, opened once the session is.
#[derive(Debug)]
struct Sender {
    session: SessionId,
    flow_count: usize,
    flows: Vec<SendFlow>,
    per_flow: usize,
    payload: Bytes,
}

impl Sender {
    fn on_event(&mut self, ep: &mut Endpoint, now: Instant, e: Event, out: &mut Events) {
        match e {
            Event::SessionOpened { session, .. } if session == self.session => {
                for i in 0..self.flow_count {
                    let meta = format!("flow{i}");
                    match ep.open_flow(now, session, meta.as_bytes(), None, Priority::BULK) {
                        Ok(id) => self.flows.push(SendFlow {
                            id,
                            sent: 0,
                            closed: false,
                        }),
                        Err(e) => out.emit(BulkEvent::Failed(format!("open_flow: {e}"))),
                    }
                }
                out.emit(BulkEvent::Opened);
                for i in 0..self.flows.len() {
                    self.fill(ep, now, i, out);
                }
            }
            Event::Writable { flow, .. } => {
                if let Some(i) = self.flows.iter().position(|f| f.id == flow) {
                    self.fill(ep, now, i, out);
                }
            }
            Event::SessionFailed { error, .. } => {
                out.emit(BulkEvent::Failed(format!("session failed: {error}")));
            }
            Event::SessionClosed { reason, .. } => {
                out.emit(BulkEvent::Failed(format!("session closed: {reason:?}")));
            }
            _ => {}
        }
    }

    /// Queues messages on flow `i` until it is full or has its share, then
    /// closes it.
    fn fill(&mut self, ep: &mut Endpoint, now: Instant, i: usize, out: &mut Events) {
        let Some(f) = self.flows.get_mut(i).filter(|f| !f.closed) else {
            return;
        };
        while f.sent < self.per_flow {
            let n = self.payload.len().min(self.per_flow - f.sent);
            match ep.send(now, self.session, f.id, self.payload.slice(..n), None) {
                Ok(()) => f.sent += n,
                Err(rtmfp::Error::WouldBlock) => return,
                Err(e) => {
                    out.emit(BulkEvent::Failed(format!("send: {e}")));
                    f.closed = true;
                    return;
                }
            }
        }
        f.closed = true;
        if let Err(e) = ep.close_flow(now, self.session, f.id) {
            out.emit(BulkEvent::Failed(format!("close_flow: {e}")));
        }
    }
}

/// The receiving end's application: reads and counts until `flows` flows
/// are complete.
#[derive(Debug, Default)]
struct Receiver {
    flows: usize,
    complete: usize,
    bytes: u64,
    first: Option<Instant>,
}

impl Receiver {
    fn on_event(&mut self, ep: &mut Endpoint, now: Instant, e: Event, out: &mut Events) {
        match e {
            Event::Readable { session, flow } => {
                while let Some(m) = ep.read(now, session, flow) {
                    self.first.get_or_insert(now);
                    self.bytes += m.data.len() as u64;
                }
            }
            Event::RecvFlowComplete { .. } => {
                self.complete += 1;
                if self.complete == self.flows {
                    let seconds = self
                        .first
                        .map_or(0.0, |f| now.duration_since(f).as_secs_f64());
                    out.emit(BulkEvent::Received {
                        bytes: self.bytes,
                        seconds,
                    });
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug)]
enum BulkRole {
    Sender(Sender),
    Receiver(Receiver),
}

/// A bench machine's events for its owner (a handful: at most
/// [`MAX_BENCH_EVENTS`] are kept).
#[derive(Debug, Default)]
struct Events(VecDeque<BulkEvent>);

impl Events {
    fn emit(&mut self, e: BulkEvent) {
        if self.0.len() < MAX_BENCH_EVENTS {
            self.0.push_back(e);
        }
    }
}

/// One end of the bulk transfer: the engine plus the application that keeps
/// the sending flows full (refilled on `Writable`) or reads and counts what
/// arrives, inside the host, so that no event costs the owner a round trip.
#[derive(Debug)]
struct Bulk {
    ep: Endpoint,
    role: BulkRole,
    events: Events,
}

impl Bulk {
    /// The sending end: opens a session to `to` at once, then `flows`
    /// flows of `per_flow` bytes each in messages of `msg_size` bytes.
    fn sender(
        mut ep: Endpoint,
        to: SocketAddr,
        flows: usize,
        per_flow: usize,
        msg_size: usize,
    ) -> Result<Self> {
        let session = ep.connect(rtmfp_tokio::now(), b"receiver", &[to])?;
        Ok(Self {
            ep,
            role: BulkRole::Sender(Sender {
                session,
                flow_count: flows,
                flows: Vec::with_capacity(flows),
                per_flow,
                payload: Bytes::from(vec![0x5au8; msg_size]),
            }),
            events: Events::default(),
        })
    }

    /// The receiving end, expecting `flows` flows.
    fn receiver(ep: Endpoint, flows: usize) -> Self {
        Self {
            ep,
            role: BulkRole::Receiver(Receiver {
                flows,
                ..Receiver::default()
            }),
            events: Events::default(),
        }
    }

    /// After every input: the engine's events, answered.
    fn pump(&mut self, now: Instant) {
        while let Some(e) = self.ep.poll_event() {
            match &mut self.role {
                BulkRole::Sender(s) => s.on_event(&mut self.ep, now, e, &mut self.events),
                BulkRole::Receiver(r) => r.on_event(&mut self.ep, now, e, &mut self.events),
            }
        }
    }

    /// Fragments the sender retransmitted (0 at the receiver).
    fn retransmitted(&self) -> u64 {
        match &self.role {
            BulkRole::Sender(s) => self
                .ep
                .session_info(s.session)
                .map_or(0, |i| i.stats.fragments_retransmitted),
            BulkRole::Receiver(_) => 0,
        }
    }
}

impl Machine for Bulk {
    type Command = Infallible;
    type Event = BulkEvent;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.ep.handle_datagram(now, from, data);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        self.pump(now);
    }

    fn handle_command(&mut self, _now: Instant, command: Infallible) {
        match command {}
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.ep.poll_transmit(now, buf)
    }

    fn poll_event(&mut self) -> Option<BulkEvent> {
        self.events.0.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.ep.poll_timeout()
    }
}

fn transfer_host() -> HostConfig {
    HostConfig::default().socket_buffer(Some(BIG_SOCKET_BUFFER))
}

/// What [`host_thread`] starts: the socket's address, the host's handle and
/// events, the thread.
type HostThread<M> = (
    SocketAddr,
    HostHandle<M>,
    mpsc::Receiver<<M as Machine>::Event>,
    std::thread::JoinHandle<()>,
);

/// A machine on a host with a loopback socket of its own, run on a thread
/// (and runtime) of its own, `bench-{role}`.
fn host_thread<M>(role: &str, machine: M) -> Result<HostThread<M>>
where
    M: Machine + Send + 'static,
    M::Command: Send,
    M::Event: Send,
{
    let rt = runtime()?;
    let sock = bind_udp(loopback(), false, Some(BIG_SOCKET_BUFFER))?;
    let addr = sock.local_addr()?;
    let (host, handle, events) = {
        let _rt = rt.enter();
        Host::new(machine, vec![sock], transfer_host())?
    };
    let thread = std::thread::Builder::new()
        .name(format!("bench-{role}"))
        .spawn(move || {
            rt.block_on(host.run());
        })
        .with_context(|| format!("cannot start the {role} thread"))?;
    Ok((addr, handle, events, thread))
}

/// Moves `total` bytes over `flows` flows from one endpoint to another over
/// loopback UDP, each endpoint on its own host, runtime and thread.
pub fn udp_transfer(total: usize, flows: usize, msg_size: usize) -> Result<TransferResult> {
    let config = EndpointConfig {
        recv_buffer: 4 << 20,
        send_buffer: 8 << 20,
        max_datagram_size: 1200,
        ..EndpointConfig::default()
    };
    let per_flow = total / flows;

    // the receiver, on a thread of its own
    let receiver = Bulk::receiver(
        engine(config.clone(), Box::new(PlainProfile::new("receiver")), 2),
        flows,
    );
    let (rx_addr, rx, mut rx_events, rx_thread) = host_thread("receiver", receiver)?;

    // the sender, on this one
    let result = runtime()?.block_on(async {
        let sender = Bulk::sender(
            engine(config, Box::new(PlainProfile::new("sender")), 1),
            rx_addr,
            flows,
            per_flow,
            msg_size,
        )?;
        let tx_sock = bind_udp(loopback(), false, Some(BIG_SOCKET_BUFFER))?;
        let (tx, mut tx_events, tx_task) = Host::spawn(sender, vec![tx_sock], transfer_host())?;
        let open_by = tokio::time::Instant::now() + Duration::from_secs(10);
        match next_event(&mut tx_events, open_by).await {
            Some(BulkEvent::Opened) => {}
            Some(BulkEvent::Failed(why)) => bail!("{why}"),
            _ => bail!("session did not open"),
        }
        let done_by = tokio::time::Instant::now() + Duration::from_secs(120);
        let (got, secs) = loop {
            tokio::select! {
                e = next_event(&mut rx_events, done_by) => match e {
                    Some(BulkEvent::Received { bytes, seconds }) => break (bytes, seconds),
                    Some(BulkEvent::Failed(why)) => bail!("receiver: {why}"),
                    Some(BulkEvent::Opened) => {}
                    None => bail!("the transfer did not finish in time"),
                },
                Some(BulkEvent::Failed(why)) = tx_events.recv() => bail!("sender: {why}"),
            }
        };
        // let the final acknowledgements out
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rx_io = rx.stats();
        let tx_io = tx.stats();
        let retransmitted = tx.with(|m, _| m.retransmitted()).await?;
        drop(tx);
        let _ = tx_task.await;
        anyhow::Ok((got, secs, rx_io, tx_io, retransmitted))
    });
    drop(rx);
    drop(rx_events);
    rx_thread
        .join()
        .map_err(|_| anyhow!("the receiver thread panicked"))?;
    let (got, secs, rx_io, tx_io, retransmitted) = result?;
    if got as usize != per_flow * flows {
        bail!("received {got} of {} bytes", per_flow * flows);
    }
    Ok(TransferResult {
        bytes: got,
        seconds: secs.max(1e-9),
        packets: rx_io.datagrams_received,
        retransmitted,
        datagrams_per_send: tx_io.datagrams_per_send(),
        datagrams_per_recv: rx_io.datagrams_per_recv(),
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

/// The responder's settings: `config` without the per-source IHello rate
/// limit (every client of the bench comes from 127.0.0.1; the limiter,
/// 20 IHellos per second per source by default, would be what is measured).
fn responder_config(config: EndpointConfig) -> EndpointConfig {
    EndpointConfig {
        ihello_rate_per_source: 0,
        ..config
    }
}

/// A responder engine on a host of its own runtime and thread; stops when
/// dropped.
#[derive(Debug)]
struct Responder {
    addr: SocketAddr,
    handle: Option<HostHandle<Endpoint>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(config: EndpointConfig, profile: Box<dyn CryptoProfile>, seed: u64) -> Result<Self> {
        // its events are not wanted: the host discards them
        let (addr, handle, _events, thread) =
            host_thread("responder", engine(config, profile, seed))?;
        Ok(Self {
            addr,
            handle: Some(handle),
            thread: Some(thread),
        })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // the last handle gone, the host stops
        self.handle = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Open a session to `to` with this endpoint discriminator.
#[derive(Debug)]
struct Open {
    epd: Bytes,
    to: SocketAddr,
}

/// A client engine that opens one session when told and reports whether
/// it opened.
#[derive(Debug)]
struct Opener {
    ep: Endpoint,
    session: Option<SessionId>,
    outcome: Option<Result<(), String>>,
}

impl Opener {
    fn pump(&mut self) {
        while let Some(e) = self.ep.poll_event() {
            match e {
                Event::SessionOpened { session, .. } if Some(session) == self.session => {
                    self.outcome = Some(Ok(()));
                }
                Event::SessionFailed { session, error } if Some(session) == self.session => {
                    self.outcome = Some(Err(error.to_string()));
                }
                _ => {}
            }
        }
    }
}

impl Machine for Opener {
    type Command = Open;
    type Event = Result<(), String>;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.ep.handle_datagram(now, from, data);
        self.pump();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        self.pump();
    }

    fn handle_command(&mut self, now: Instant, open: Open) {
        match self.ep.connect(now, &open.epd, &[open.to]) {
            Ok(s) => self.session = Some(s),
            Err(e) => self.outcome = Some(Err(format!("connect: {e}"))),
        }
        self.pump();
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.ep.poll_transmit(now, buf)
    }

    fn poll_event(&mut self) -> Option<Result<(), String>> {
        self.outcome.take()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.ep.poll_timeout()
    }
}

/// A client on a host of its own (own socket) on the current runtime.
fn spawn_opener(
    config: EndpointConfig,
    profile: Box<dyn CryptoProfile>,
    seed: u64,
) -> Result<(HostHandle<Opener>, mpsc::Receiver<Result<(), String>>)> {
    let opener = Opener {
        ep: engine(config, profile, seed),
        session: None,
        outcome: None,
    };
    let sock = bind_udp(loopback(), false, None).context("binding client socket")?;
    // a client receives a few datagrams: small receive batches
    let cfg = HostConfig::default().recv_batch(1).capacity(4, 4);
    let (handle, events, _task) = Host::spawn(opener, vec![sock], cfg)?;
    Ok((handle, events))
}

/// Opens `n` sessions at once from `n` client endpoints (each on its own
/// host and socket, all on this thread) to one responder (on its own
/// thread); returns (seconds until all opened, opened).
pub fn handshake_burst(n: usize, crypto: &Crypto) -> Result<(f64, usize)> {
    let config = EndpointConfig {
        max_startup_queue: 1 << 16,
        ..EndpointConfig::default()
    };
    let server = Responder::start(responder_config(config.clone()), crypto.server()?, 7)?;
    let epd = Bytes::from(crypto.epd());
    runtime()?.block_on(async {
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            clients.push(spawn_opener(
                config.clone(),
                crypto.client(i)?,
                1000 + i as u64,
            )?);
        }
        let start = Instant::now();
        let mut waiting = tokio::task::JoinSet::new();
        // the handles keep every client alive until the end
        let mut keep = Vec::with_capacity(n);
        for (handle, mut events) in clients {
            handle
                .send(Open {
                    epd: epd.clone(),
                    to: server.addr,
                })
                .await?;
            keep.push(handle);
            waiting.spawn(async move { matches!(events.recv().await, Some(Ok(()))) });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut opened = 0;
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, waiting.join_next()).await {
            if matches!(r, Ok(true)) {
                opened += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        drop(keep);
        Ok((secs, opened))
    })
}

/// What the sequential handshake run measured.
#[derive(Debug, Clone)]
pub struct Sequential {
    /// Sessions opened per second over the whole run (client set-up
    /// included).
    pub per_s: f64,
    /// Each connect's latency, microseconds, sorted: from the client being
    /// told to open to its session being open, one connect at a time.
    pub latencies_us: Vec<u64>,
}

impl Sequential {
    /// The `q` quantile of the single-connect latency (nearest rank), in
    /// milliseconds to the microsecond.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        crate::stats::percentile(&self.latencies_us, q).map(|us| us as f64 / 1000.0)
    }
}

/// Sessions opened one after another (each waits for the previous): the
/// rate and each connect's latency.
pub fn handshake_sequential(n: usize, crypto: &Crypto) -> Result<Sequential> {
    let config = EndpointConfig::default();
    let server = Responder::start(responder_config(config.clone()), crypto.server()?, 9)?;
    let epd = Bytes::from(crypto.epd());
    runtime()?.block_on(async {
        let start = Instant::now();
        let mut latencies_us = Vec::with_capacity(n);
        // keep every client (and so its port) alive: a reused address would
        // belong to a still-open session of another identity (RFC 7016 §3.5.1.1.2)
        let mut keep = Vec::with_capacity(n);
        for i in 0..n {
            let (handle, mut events) = spawn_opener(config.clone(), crypto.client(i)?, i as u64)?;
            let opening = Instant::now();
            handle
                .send(Open {
                    epd: epd.clone(),
                    to: server.addr,
                })
                .await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            match next_event(&mut events, deadline).await {
                Some(Ok(())) => latencies_us.push(opening.elapsed().as_micros() as u64),
                Some(Err(why)) => bail!("sequential open {i} failed: {why}"),
                None => bail!("sequential open {i} failed: timeout"),
            }
            keep.push(handle);
        }
        let per_s = n as f64 / start.elapsed().as_secs_f64();
        latencies_us.sort_unstable();
        Ok(Sequential {
            per_s,
            latencies_us,
        })
    })
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
            println!("  {k:<40} {v}");
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
            ("udp_one_flow_datagrams_per_send_call", json!(r2(one.datagrams_per_send))),
            ("udp_one_flow_datagrams_per_recv_call", json!(r2(one.datagrams_per_recv))),
            ("udp_many_flows_count", json!(flows)),
            ("udp_many_flows_mb_per_s", json!(r2(many.mb_per_s()))),
            ("udp_many_flows_packets_per_s", json!((many.packets as f64 / many.seconds).round())),
            ("tokio_one_flow_mb_per_s", json!(r2(t_one.mb_per_s()))),
            ("tokio_one_flow_packets_per_s", json!((t_one.packets as f64 / t_one.seconds).round())),
            ("tokio_one_flow_datagrams_per_send_call", json!(r2(t_one.datagrams_per_send))),
            ("tokio_one_flow_datagrams_per_recv_call", json!(r2(t_one.datagrams_per_recv))),
            ("tokio_many_flows_mb_per_s", json!(r2(t_many.mb_per_s()))),
            ("transfer_bytes", json!(total)),
            ("sim_loss", json!(loss)),
            ("sim_mb_per_s", json!(r2(sim_mb))),
            ("sim_wall_s", json!(r2(sim_wall))),
            ("sim_retransmitted", json!(sim_retx)),
        ],
        "bulk transfer (plain crypto, loopback UDP; udp_*: engines on the host, one thread each, 1200-byte datagrams; \
         tokio_*: rtmfp-tokio's session and flow handles; simulator: 1 Gbit/s, 10 ms, given loss)",
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

/// The DH groups `--crypto flash` measures, with the most sessions each
/// opens in its burst and one after another (group 16's keying costs
/// about 6 ms a side).
const FLASH_GROUPS: [(&str, rtmfp_flash::DhGroup, usize, usize); 3] = [
    ("group2", rtmfp_flash::DhGroup::Modp1024, usize::MAX, 100),
    ("group14", rtmfp_flash::DhGroup::Modp2048, usize::MAX, 100),
    ("group16", rtmfp_flash::DhGroup::Modp4096, 100, 30),
];

/// One crypto profile's handshake figures as `(field, value)` pairs, each
/// field name prefixed with `prefix`: the burst of `burst` opens at once,
/// then `sequential` opens one at a time (the rate and the single-connect
/// latency p50/p99).
fn handshake_fields(
    prefix: &str,
    crypto: &Crypto,
    burst: usize,
    sequential: usize,
) -> Result<Vec<(String, Value)>> {
    let (secs, opened) = handshake_burst(burst, crypto)?;
    let seq = handshake_sequential(sequential, crypto)?;
    let round = |x: f64, places: i32| {
        let f = 10f64.powi(places);
        (x * f).round() / f
    };
    let ms = |q: f64| {
        seq.latency_ms(q)
            .map_or(Value::Null, |v| json!(round(v, 3)))
    };
    Ok([
        ("burst_sessions", json!(burst)),
        ("burst_opened", json!(opened)),
        ("burst_ms", json!(round(secs * 1000.0, 1))),
        (
            "burst_handshakes_per_s",
            json!((opened as f64 / secs).round()),
        ),
        ("sequential_sessions", json!(sequential)),
        ("sequential_handshakes_per_s", json!(round(seq.per_s, 1))),
        ("sequential_connect_p50_ms", ms(0.50)),
        ("sequential_connect_p99_ms", ms(0.99)),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{prefix}{k}"), v))
    .collect())
}

pub fn run_handshake(json_out: bool, burst: usize, sequential: usize, crypto: &str) -> Result<()> {
    let (fields, title) = match crypto {
        "plain" => (
            handshake_fields("", &Crypto::Plain, burst, sequential)?,
            "session opens against one responder (plain crypto, loopback UDP)",
        ),
        "flash" => {
            let mut fields = Vec::new();
            for (name, g, most_burst, most_sequential) in FLASH_GROUPS {
                fields.extend(handshake_fields(
                    &format!("{name}_"),
                    &Crypto::Flash(g),
                    burst.min(most_burst),
                    sequential.min(most_sequential),
                )?);
            }
            (
                fields,
                "Flash-crypto (RFC 7425) session opens against one responder, per DH group (clients generate ephemeral keys)",
            )
        }
        other => bail!("unknown crypto {other:?} (plain or flash)"),
    };
    print(
        json_out,
        fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect(),
        title,
    );
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
            let stats = rx.io_stats().await.unwrap_or_default();
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
        let (got, secs, rx_io) =
            tokio::time::timeout(Duration::from_secs(120), receiver).await???;
        let retransmitted = session
            .info()
            .await
            .map(|i| i.stats.fragments_retransmitted)
            .unwrap_or(0);
        if got as usize != per_flow * flows {
            bail!("received {got} of {} bytes", per_flow * flows);
        }
        let packets = session
            .info()
            .await
            .map(|i| i.stats.packets_sent)
            .unwrap_or(0);
        let tx_io = tx.io_stats().await.unwrap_or_default();
        tx.shutdown().await;
        Ok(TransferResult {
            bytes: got,
            seconds: secs.max(1e-9),
            packets,
            retransmitted,
            datagrams_per_send: tx_io.datagrams_per_send(),
            datagrams_per_recv: rx_io.datagrams_per_recv(),
        })
    })
}
