//! `nimbus bench server`: a load harness for the rendezvous server
//! (`nimbus server`, or any RTMFP / Flash server with `--server`).
//!
//! The parent process starts `nimbus server` as a child (unless `--server`
//! names a running one) and re-executes itself as hidden
//! `nimbus bench server-worker` processes, each driving up to
//! `--clients-per-worker` simulated Flash clients. Every client is a real,
//! distinct RTMFP endpoint: its own [`rtmfp::Endpoint`] with its own
//! [`rtmfp_flash::FlashProfile`] (one certificate, hence one peer ID) and
//! NetConnection, a [`Machine`] on an `rtmfp-tokio` [`Host`] of its own with
//! its own UDP socket, bound to one of several loopback addresses. A worker
//! runs all its clients' hosts on one tokio current-thread runtime; the
//! worker's commands reach a client as host commands, its reports come back
//! as the machine's events.
//!
//! Parent and workers talk in JSON lines: commands on the worker's stdin
//! (`connect`, `intro`, `status`, `quit`), answers on its stdout (`ready`,
//! `connect_done`, `intro_done`, `status`, `error`, `bye`). A worker exits
//! when its stdin closes, so workers never outlive the parent.
//!
//! Phases:
//! 1. **burst**: `--burst` clients connect at once (split over the workers);
//!    time until every one got `NetConnection.Connect.Success`, latencies.
//! 2. **ramp + hold**: the remaining clients connect at `--rate` per second
//!    up to `--sessions`; then every session idles for `--hold-secs`
//!    (keepalives flowing), and the server's RSS growth per idle session is
//!    read from `/proc`.
//! 3. **introductions**: `--pairs` clients call `lookup(name)` for another
//!    client and open a direct session to the returned peer ID through the
//!    server (Redirect + Forwarded IHello).
//!
//! Server CPU is read from `/proc/<pid>/stat` (utime + stime) around the
//! phases; Prometheus counters from the server's metrics endpoint; the
//! clients' datagrams per system call from their hosts' `IoStats`.

use crate::stats::percentile;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as smpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use flash_amf::{Object, Value};
use rand_core::{RngCore, SeedableRng};
use rtmfp::{Endpoint, EndpointConfig, Event, Machine, Role, SessionId};
use rtmfp_flash::message::{NcEvent, NetConnection, UserControl};
use rtmfp_flash::{DhGroup, Epd, FlashProfile, PeerId};
use rtmfp_tokio::{bind_udp, Host, HostConfig, IoStats};
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;

/// Largest number of clients one worker process may drive (each needs a
/// file descriptor; the hard limit here is 20,000 per process).
const MAX_CLIENTS_PER_WORKER: usize = 19_000;
/// Per-session limits given to a server spawned by the bench, so that the
/// per-address limits (meant against abuse) do not throttle the load.
const BENCH_SESSIONS_PER_ADDRESS: usize = 1_000_000;
const BENCH_HANDSHAKES_PER_SECOND_PER_ADDRESS: u32 = 1_000_000;
/// Linux reports process times in USER_HZ ticks, 100 per second on every
/// mainstream architecture.
const USER_HZ: f64 = 100.0;
/// Most failed client indices and distinct error messages a worker reports.
const MAX_REPORTED_FAILURES: usize = 2000;
const MAX_ERROR_KINDS: usize = 16;
/// Reports one client keeps for its worker (it has one per command).
const MAX_CLIENT_REPORTS: usize = 4;
/// Reports waiting in a worker for its command loop.
const REPORT_CAPACITY: usize = 1024;
/// Command lines from the parent waiting for the worker.
const COMMAND_LINES: usize = 16;

/// Arguments of `nimbus bench server`.
#[derive(Debug, Clone)]
pub struct BenchServerArgs {
    /// Print one JSON object instead of text.
    pub json: bool,
    /// Total sessions to open and hold (burst included).
    pub sessions: usize,
    /// Clients connecting simultaneously in the burst phase.
    pub burst: usize,
    /// Seconds to hold every session idle before measuring memory.
    pub hold_secs: u64,
    /// Lookup + introduction pairs (0 = skip; needs the nimbus `lookup` call).
    pub pairs: usize,
    /// Engine shards of the spawned server (0 = one per core).
    pub shards: usize,
    /// Connects per second in the ramp phase (at most).
    pub rate: u32,
    /// Most connects outstanding at once in the ramp phase, over all
    /// workers (0 = no limit: an open loop at --rate).
    pub ramp_inflight: usize,
    /// Diffie-Hellman group the spawned server offers (2 = 1024-bit, 14 =
    /// 2048-bit); clients offer groups 2 and 14.
    pub dh_group: u8,
    /// Client DH keys: "ephemeral" (a fresh key per handshake, as Flash
    /// Player) or "static" (generated before the timed phases).
    pub client_keys: String,
    /// Clients per worker process (each client has its own UDP socket).
    pub clients_per_worker: usize,
    /// Loopback source addresses the clients are spread over (127.0.0.2 and
    /// up).
    pub source_addresses: u8,
    /// Seconds a client waits for Connect.Success (and for a direct session).
    pub connect_timeout_secs: u64,
    /// Bench a server that is already running at this UDP address instead
    /// of spawning `nimbus server`.
    pub server: Option<SocketAddr>,
    /// With --server: its process ID, to read its memory and CPU.
    pub server_pid: Option<u32>,
    /// With --server: its Prometheus endpoint (nimbus metrics) host:port.
    pub server_metrics: Option<SocketAddr>,
    /// Application in the connect URL (rtmfp://ADDR/APP?user=cN).
    pub app: String,
}

/// Arguments of the hidden `nimbus bench server-worker`.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// Server UDP address.
    pub server: SocketAddr,
    /// Connect URL without the query (rtmfp://ADDR/APP).
    pub url: String,
    /// Global index of the first client.
    pub first: usize,
    /// Clients in this worker.
    pub count: usize,
    /// Loopback source addresses.
    pub source_addresses: u8,
    /// Server DH group (2 or 14).
    pub dh_group: u8,
    /// "ephemeral" or "static".
    pub client_keys: String,
}

// ===========================================================================
// worker
// ===========================================================================

/// Entry point of `nimbus bench server-worker`: JSON lines on stdin/stdout.
pub fn run_worker(args: WorkerArgs) -> Result<()> {
    let (line_tx, line_rx) = mpsc::channel::<String>(COMMAND_LINES);
    // std thread: tokio's stdin needs a blocking pool; EOF drops the sender
    std::thread::Builder::new()
        .name("bench-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                match line {
                    Ok(l) => {
                        if line_tx.blocking_send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        })
        .context("cannot start the stdin reader")?;
    let out = |v: Json| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the worker runtime")?;
    let r = rt.block_on(worker_loop(args, line_rx, out));
    if let Err(e) = &r {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{}", json!({"ev": "error", "message": format!("{e:#}")}));
        let _ = o.flush();
    }
    r
}

/// A clock pairing a monotonic instant with the Unix time, to put instants
/// of several processes on one axis (microseconds).
#[derive(Debug, Clone, Copy)]
struct Clock {
    inst: Instant,
    unix_us: u64,
}

impl Clock {
    fn now() -> Self {
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock {
            inst: Instant::now(),
            unix_us,
        }
    }

    fn unix_us(&self, t: Instant) -> u64 {
        if t >= self.inst {
            self.unix_us + t.duration_since(self.inst).as_micros() as u64
        } else {
            self.unix_us
                .saturating_sub(self.inst.duration_since(t).as_micros() as u64)
        }
    }
}

/// Counters of a worker's clients, kept by their machines.
#[derive(Debug, Default)]
struct Counters {
    /// Clients with a connected NetConnection now.
    connected: AtomicU64,
    /// Connected NetConnections that closed afterwards.
    lost: AtomicU64,
    /// Direct sessions accepted from other clients (introduction targets).
    direct_in: AtomicU64,
    /// Set Keepalive Timers received from the server.
    keepalive_set: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn dec(c: &AtomicU64) {
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(1))
    });
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// What the worker asks of a client.
#[derive(Debug)]
enum Cmd {
    Connect { timeout: Duration },
    Intro { name: String, timeout: Duration },
}

/// What a client reports: the outcome of a command.
#[derive(Debug)]
enum Report {
    Connect {
        idx: usize,
        started: Instant,
        result: Result<Instant, String>,
    },
    Intro {
        started: Instant,
        looked_up: Option<Instant>,
        lookup_null: bool,
        result: Result<(Instant, SocketAddr), String>,
    },
}

#[derive(Debug)]
struct Intro {
    name: String,
    started: Instant,
    deadline: Instant,
    tid: Option<f64>,
    looked_up: Option<Instant>,
    lookup_null: bool,
    session: Option<SessionId>,
}

/// One simulated Flash client, as a [`Machine`] on a host of its own: its
/// engine, its NetConnection to the server, the connect and
/// lookup-then-introduction it is told to do, and their deadlines.
struct Client {
    idx: usize,
    ep: Endpoint,
    server: SocketAddr,
    url: String,
    nc: Option<NetConnection>,
    connect_started: Option<Instant>,
    connect_deadline: Option<Instant>,
    connected: bool,
    intro: Option<Intro>,
    /// Reports for the worker (one per command: a handful at most).
    reports: VecDeque<Report>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("idx", &self.idx)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl Machine for Client {
    type Command = Cmd;
    type Event = Report;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.ep.handle_datagram(now, from, data);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        self.pump(now);
        self.check_deadlines(now);
    }

    fn handle_command(&mut self, now: Instant, cmd: Cmd) {
        match cmd {
            Cmd::Connect { timeout } => self.start_connect(now, timeout),
            Cmd::Intro { name, timeout } => self.start_intro(now, name, timeout),
        }
        self.pump(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.ep.poll_transmit(now, buf)
    }

    fn poll_event(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.ep.poll_timeout(),
            self.connect_deadline,
            self.intro.as_ref().map(|i| i.deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The worker quits: close the connection (the host sends the close
    /// and stops).
    fn handle_close(&mut self, now: Instant) {
        if let Some(nc) = self.nc.as_mut() {
            nc.close(&mut self.ep, now);
        }
    }
}

impl Client {
    /// Engine and NetConnection events.
    fn pump(&mut self, now: Instant) {
        while let Some(e) = self.ep.poll_event() {
            self.on_event(now, e);
        }
        self.drain_nc(now);
    }

    fn report(&mut self, r: Report) {
        if self.reports.len() < MAX_CLIENT_REPORTS {
            self.reports.push_back(r);
        }
    }

    fn start_connect(&mut self, now: Instant, timeout: Duration) {
        if self.nc.is_some() {
            self.report(Report::Connect {
                idx: self.idx,
                started: now,
                result: Err("already connecting or connected".into()),
            });
            return;
        }
        let url = format!("{}?user=c{}", self.url, self.idx);
        match NetConnection::connect(&mut self.ep, now, &url, &[self.server], Object::new()) {
            Ok(nc) => {
                self.nc = Some(nc);
                self.connect_started = Some(now);
                self.connect_deadline = Some(now + timeout);
            }
            Err(e) => self.report(Report::Connect {
                idx: self.idx,
                started: now,
                result: Err(format!("connect: {e}")),
            }),
        }
    }

    fn start_intro(&mut self, now: Instant, name: String, timeout: Duration) {
        let fail = |s: &mut Self, why: String| {
            s.report(Report::Intro {
                started: now,
                looked_up: None,
                lookup_null: false,
                result: Err(why),
            })
        };
        if self.intro.is_some() {
            return fail(self, "an introduction is already running".into());
        }
        let Some(nc) = self.nc.as_mut().filter(|_| self.connected) else {
            return fail(self, "not connected to the server".into());
        };
        match nc.call(
            &mut self.ep,
            now,
            "lookup",
            vec![Value::from(name.as_str())],
        ) {
            Ok(tid) => {
                self.intro = Some(Intro {
                    name,
                    started: now,
                    deadline: now + timeout,
                    tid: Some(tid),
                    looked_up: None,
                    lookup_null: false,
                    session: None,
                })
            }
            Err(e) => fail(self, format!("lookup call: {e}")),
        }
    }

    fn finish_intro(&mut self, result: Result<(Instant, SocketAddr), String>) {
        if let Some(i) = self.intro.take() {
            self.report(Report::Intro {
                started: i.started,
                looked_up: i.looked_up,
                lookup_null: i.lookup_null,
                result,
            });
        }
    }

    fn check_deadlines(&mut self, now: Instant) {
        if self.connect_deadline.is_some_and(|d| now >= d) {
            self.connect_deadline = None;
            let state = self.nc.as_ref().map(|n| format!("{:?}", n.state()));
            self.report(Report::Connect {
                idx: self.idx,
                started: self.connect_started.unwrap_or(now),
                result: Err(format!(
                    "timeout (NetConnection {})",
                    state.as_deref().unwrap_or("none")
                )),
            });
        }
        if let Some(i) = &self.intro {
            if now >= i.deadline {
                let stage = if i.session.is_some() {
                    "direct session did not open"
                } else {
                    "no lookup answer"
                };
                let why = format!("timeout: {stage} (looking for {})", i.name);
                self.finish_intro(Err(why));
            }
        }
    }

    fn on_event(&mut self, now: Instant, e: Event) {
        if let Some(nc) = self.nc.as_mut() {
            if nc.on_event(&mut self.ep, now, &e) {
                return;
            }
        }
        let intro_session = self.intro.as_ref().and_then(|i| i.session);
        match e {
            Event::SessionOpened {
                role: Role::Responder,
                ..
            } => inc(&self.counters.direct_in),
            Event::SessionOpened {
                session,
                role: Role::Initiator,
                peer,
            } if Some(session) == intro_session => self.finish_intro(Ok((now, peer))),
            Event::SessionFailed { session, error } if Some(session) == intro_session => {
                self.finish_intro(Err(format!("direct session failed: {error}")))
            }
            Event::SessionClosed { session, reason } if Some(session) == intro_session => {
                self.finish_intro(Err(format!("direct session closed: {reason:?}")))
            }
            _ => {}
        }
    }

    fn drain_nc(&mut self, now: Instant) {
        let Some(mut nc) = self.nc.take() else {
            return;
        };
        while let Some(ev) = nc.poll_event() {
            match ev {
                NcEvent::Connected(_) => {
                    if !self.connected {
                        self.connected = true;
                        inc(&self.counters.connected);
                    }
                    if self.connect_deadline.take().is_some() {
                        let started = self.connect_started.unwrap_or(now);
                        self.report(Report::Connect {
                            idx: self.idx,
                            started,
                            result: Ok(now),
                        });
                    }
                }
                NcEvent::ConnectFailed(s) if self.connect_deadline.take().is_some() => {
                    let started = self.connect_started.unwrap_or(now);
                    self.report(Report::Connect {
                        idx: self.idx,
                        started,
                        result: Err(format!("{}: {}", s.code, s.description)),
                    });
                }
                NcEvent::UserControl {
                    event: UserControl::SetKeepalive { server_ms, .. },
                    ..
                } => {
                    // as Flash Player: ping the server at the period it asks
                    let period = Duration::from_millis(u64::from(server_ms.max(1000)));
                    let _ = self.ep.set_keepalive(nc.session(), period);
                    inc(&self.counters.keepalive_set);
                }
                NcEvent::CallResult {
                    transaction_id,
                    ok,
                    values,
                } => self.on_call_result(now, transaction_id, ok, values),
                NcEvent::Closed if self.connected => {
                    self.connected = false;
                    dec(&self.counters.connected);
                    inc(&self.counters.lost);
                }
                _ => {}
            }
        }
        self.nc = Some(nc);
    }

    fn on_call_result(&mut self, now: Instant, tid: f64, ok: bool, values: Vec<Value>) {
        let Some(intro) = self.intro.as_mut().filter(|i| i.tid == Some(tid)) else {
            return;
        };
        intro.tid = None;
        intro.looked_up = Some(now);
        if !ok {
            return self.finish_intro(Err("lookup answered _error".into()));
        }
        let Some(hex) = values.get(1).and_then(Value::as_str) else {
            intro.lookup_null = true;
            let why = format!("lookup({}) returned no peer ID", intro.name);
            return self.finish_intro(Err(why));
        };
        let Ok(peer) = hex.parse::<PeerId>() else {
            return self.finish_intro(Err(format!("lookup returned a bad peer ID {hex:?}")));
        };
        let epd = Epd::peer(peer).encode();
        match self.ep.connect(now, &epd, &[self.server]) {
            Ok(sid) => intro.session = Some(sid),
            Err(e) => self.finish_intro(Err(format!("opening the direct session: {e}"))),
        }
    }
}

fn client_groups(dh_group: u8) -> Vec<DhGroup> {
    match dh_group {
        2 => vec![DhGroup::Modp1024],
        _ => vec![DhGroup::Modp1024, DhGroup::Modp2048],
    }
}

fn client_config() -> EndpointConfig {
    EndpointConfig {
        // until the server's Set Keepalive Timers arrives
        keepalive_interval: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(120),
        recv_buffer: 64 << 10,
        send_buffer: 64 << 10,
        max_sessions: 64,
        max_startup_queue: 64,
        max_rate_limit_entries: 64,
        ..EndpointConfig::default()
    }
}

fn source_ip(global_idx: usize, addresses: u8) -> Ipv4Addr {
    let n = usize::from(addresses.clamp(1, 253));
    Ipv4Addr::new(127, 0, 0, 2 + (global_idx % n) as u8)
}

#[derive(Debug, Default)]
struct PhaseAgg {
    ok: u64,
    failed: u64,
    lat_us: Vec<u64>,
    start: Option<Instant>,
    last_start: Option<Instant>,
    end: Option<Instant>,
    errors: BTreeMap<String, u64>,
    failed_idx: Vec<usize>,
}

impl PhaseAgg {
    fn started(&mut self, t: Instant) {
        self.start = Some(self.start.map_or(t, |s| s.min(t)));
        self.last_start = Some(self.last_start.map_or(t, |s| s.max(t)));
    }

    fn connect_report(&mut self, r: Report, got: &mut usize) {
        let Report::Connect {
            idx,
            started,
            result,
        } = r
        else {
            return;
        };
        *got += 1;
        self.started(started);
        match result {
            Ok(done) => self.succeeded(started, done),
            Err(why) => {
                self.error(why);
                if self.failed_idx.len() < MAX_REPORTED_FAILURES {
                    self.failed_idx.push(idx);
                }
            }
        }
    }

    fn done(&mut self, t: Instant) {
        self.end = Some(self.end.map_or(t, |e| e.max(t)));
    }

    /// One success: started at `started`, done at `done`.
    fn succeeded(&mut self, started: Instant, done: Instant) {
        self.ok += 1;
        self.done(done);
        self.lat_us
            .push(done.duration_since(started).as_micros() as u64);
    }

    /// Counts the reports that never came (`got` of `total`) as failures.
    fn missing(&mut self, got: usize, total: usize) {
        for _ in got..total {
            self.error("no report from the client".into());
        }
    }

    /// The worker's line at the end of phase `ev`: counts, latencies, the
    /// time span and the errors (the caller adds what is particular to it).
    fn summary(&self, ev: &str, clock: &Clock) -> Json {
        json!({
            "ev": ev,
            "ok": self.ok,
            "failed": self.failed,
            "lat_us": self.lat_us,
            "start_us": self.start.map(|t| clock.unix_us(t)),
            "end_us": self.end.map(|t| clock.unix_us(t)),
            "errors": self.errors,
        })
    }

    fn error(&mut self, why: String) {
        self.failed += 1;
        if self.errors.len() < MAX_ERROR_KINDS || self.errors.contains_key(&why) {
            *self.errors.entry(why).or_insert(0) += 1;
        } else {
            *self.errors.entry("(other errors)".into()).or_insert(0) += 1;
        }
    }
}

/// Host settings of one bench client: it moves a few datagrams, so one per
/// receive call, the system's socket buffers and tiny channels.
fn client_host() -> HostConfig {
    HostConfig::default()
        .recv_batch(1)
        .socket_buffer(None)
        .capacity(4, 4)
}

/// The worker's command loop: `lines` in, JSON values out through `out`.
async fn worker_loop(
    args: WorkerArgs,
    mut lines: mpsc::Receiver<String>,
    out: impl Fn(Json),
) -> Result<()> {
    let setup = Instant::now();
    let clock = Clock::now();
    if args.count == 0 || args.count > MAX_CLIENTS_PER_WORKER {
        bail!("--count {} (1 to {MAX_CLIENTS_PER_WORKER})", args.count);
    }
    let groups = client_groups(args.dh_group);
    let static_keys = args.client_keys == "static";
    let counters = Arc::new(Counters::default());
    let (rep_tx, mut rep_rx) = mpsc::channel::<Report>(REPORT_CAPACITY);
    let mut clients = Vec::with_capacity(args.count);
    let mut hosts = Vec::with_capacity(args.count);
    let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
    for i in 0..args.count {
        let g = args.first + i;
        let builder = FlashProfile::client().groups(&groups);
        let builder = if static_keys {
            builder.static_keys()
        } else {
            builder.ephemeral_keys()
        };
        let profile = builder
            .build(&mut rng)
            .map_err(|e| anyhow!("client crypto profile: {e}"))?;
        let ip = source_ip(g, args.source_addresses);
        let sock = bind_udp(SocketAddr::new(ip.into(), 0), false, None)
            .with_context(|| format!("client {g}: cannot bind a UDP socket on {ip}"))?;
        let ep = Endpoint::new(
            client_config(),
            Box::new(profile),
            Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(rng.next_u64())),
            rtmfp_tokio::now(),
        );
        let client = Client {
            idx: g,
            ep,
            server: args.server,
            url: args.url.clone(),
            nc: None,
            connect_started: None,
            connect_deadline: None,
            connected: false,
            intro: None,
            reports: VecDeque::new(),
            counters: counters.clone(),
        };
        let (handle, mut reports, host) = Host::spawn(client, vec![sock], client_host())
            .with_context(|| format!("client {g}: cannot start its host"))?;
        // every client's reports into the worker's one channel
        let tx = rep_tx.clone();
        tokio::spawn(async move {
            while let Some(r) = reports.recv().await {
                if tx.send(r).await.is_err() {
                    break;
                }
            }
        });
        clients.push(handle);
        hosts.push(host);
    }
    drop(rep_tx);
    out(json!({
        "ev": "ready",
        "clients": args.count,
        "setup_ms": setup.elapsed().as_millis() as u64,
    }));

    let local = |g: u64| -> Option<usize> {
        let g = usize::try_from(g).ok()?;
        (g >= args.first && g < args.first + args.count).then(|| g - args.first)
    };
    while let Some(line) = lines.recv().await {
        let cmd: Json = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                out(json!({"ev": "error", "message": format!("bad command {line:?}: {e}")}));
                continue;
            }
        };
        let timeout = Duration::from_millis(cmd["timeout_ms"].as_u64().unwrap_or(10_000));
        match cmd["cmd"].as_str().unwrap_or("") {
            "connect" => {
                let (Some(from), Some(to)) = (
                    cmd["from"].as_u64().and_then(local),
                    cmd["to"].as_u64().and_then(|t| local(t.saturating_sub(1))),
                ) else {
                    out(
                        json!({"ev": "error", "message": format!("connect range out of this worker: {line}")}),
                    );
                    continue;
                };
                let to = to + 1;
                let rate = cmd["rate"].as_f64().unwrap_or(0.0);
                // most connects outstanding at once (0 = no limit)
                let cap = match cmd["inflight"].as_u64().unwrap_or(0) {
                    0 => usize::MAX,
                    n => n as usize,
                };
                let total = to.saturating_sub(from);
                let t0 = Instant::now();
                let mut agg = PhaseAgg::default();
                let (mut sent, mut got) = (0usize, 0usize);
                let mut last_sent = t0;
                while got < total {
                    if sent < total && sent - got < cap {
                        let at = if rate > 0.0 {
                            t0 + Duration::from_secs_f64(sent as f64 / rate)
                        } else {
                            t0
                        };
                        if at <= Instant::now() {
                            if clients[from + sent]
                                .send(Cmd::Connect { timeout })
                                .await
                                .is_err()
                            {
                                agg.error("the client's host stopped".into());
                                got += 1;
                            }
                            sent += 1;
                            last_sent = Instant::now();
                            continue;
                        }
                        // wait for the pacing time, or a report meanwhile
                        match tokio::time::timeout_at(at.into(), rep_rx.recv()).await {
                            Ok(Some(r)) => agg.connect_report(r, &mut got),
                            Ok(None) => break,
                            Err(_) => {}
                        }
                        continue;
                    }
                    let safety = last_sent + timeout + Duration::from_secs(5);
                    match tokio::time::timeout_at(safety.into(), rep_rx.recv()).await {
                        Ok(Some(r)) => agg.connect_report(r, &mut got),
                        Ok(None) | Err(_) => break,
                    }
                }
                agg.missing(got, total);
                let mut done = agg.summary("connect_done", &clock);
                done["last_start_us"] = json!(agg.last_start.map(|t| clock.unix_us(t)));
                done["failed_idx"] = json!(agg.failed_idx);
                out(done);
            }
            "intro" => {
                let pairs = cmd["pairs"].as_array().cloned().unwrap_or_default();
                let mut total = 0usize;
                let mut got = 0usize;
                let mut agg = PhaseAgg::default();
                for p in &pairs {
                    let (Some(a), Some(b)) = (p[0].as_u64().and_then(local), p[1].as_u64()) else {
                        agg.error(format!("bad pair {p}"));
                        continue;
                    };
                    total += 1;
                    let intro = Cmd::Intro {
                        name: format!("c{b}"),
                        timeout,
                    };
                    if clients[a].send(intro).await.is_err() {
                        agg.error("the client's host stopped".into());
                        got += 1;
                    }
                }
                let mut lookup_ok = 0u64;
                let mut lookup_null = 0u64;
                let mut lookup_us = Vec::new();
                let mut via_server = 0u64;
                let safety = Instant::now() + timeout + Duration::from_secs(5);
                while got < total {
                    match tokio::time::timeout_at(safety.into(), rep_rx.recv()).await {
                        Ok(Some(Report::Intro {
                            started,
                            looked_up,
                            lookup_null: null,
                            result,
                        })) => {
                            got += 1;
                            agg.started(started);
                            if let Some(l) = looked_up {
                                if null {
                                    lookup_null += 1;
                                } else {
                                    lookup_ok += 1;
                                    lookup_us.push(l.duration_since(started).as_micros() as u64);
                                }
                            }
                            match result {
                                Ok((done, peer)) => {
                                    agg.succeeded(started, done);
                                    if peer == args.server {
                                        via_server += 1;
                                    }
                                }
                                Err(why) => agg.error(why),
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
                agg.missing(got, total);
                let mut done = agg.summary("intro_done", &clock);
                done["lookup_ok"] = json!(lookup_ok);
                done["lookup_null"] = json!(lookup_null);
                done["via_server"] = json!(via_server);
                done["lookup_us"] = json!(lookup_us);
                out(done);
            }
            "status" => {
                let mut io = IoStats::default();
                for c in &clients {
                    io += c.stats();
                }
                out(json!({
                    "ev": "status",
                    "connected": get(&counters.connected),
                    "lost": get(&counters.lost),
                    "direct_in": get(&counters.direct_in),
                    "keepalive_set": get(&counters.keepalive_set),
                    "io": io_to_json(&io),
                }))
            }
            "quit" => break,
            other => out(json!({"ev": "error", "message": format!("unknown command {other:?}")})),
        }
    }
    // every client closes its connection; its host sends the close and stops
    for c in &clients {
        c.close().await;
    }
    drop(clients);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        for h in hosts {
            let _ = h.await;
        }
    })
    .await;
    out(json!({"ev": "bye"}));
    Ok(())
}

/// The counters of clients' sockets a worker reports (their hosts'
/// [`IoStats`], summed), as JSON.
fn io_to_json(io: &IoStats) -> Json {
    json!({
        "datagrams_sent": io.datagrams_sent,
        "send_calls": io.send_calls,
        "send_blocked": io.send_blocked,
        "datagrams_received": io.datagrams_received,
        "recv_calls": io.recv_calls,
    })
}

/// [`io_to_json`]'s counters back (the others stay zero).
fn io_from_json(v: &Json) -> IoStats {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let mut io = IoStats::default();
    io.datagrams_sent = n("datagrams_sent");
    io.send_calls = n("send_calls");
    io.send_blocked = n("send_blocked");
    io.datagrams_received = n("datagrams_received");
    io.recv_calls = n("recv_calls");
    io
}

// ===========================================================================
// parent
// ===========================================================================

/// A line from a child's stdout, or its end.
#[derive(Debug)]
struct WorkerLine {
    worker: usize,
    line: Option<String>,
}

#[derive(Debug)]
struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    first: usize,
    count: usize,
}

/// Every child process; killed on drop (also on errors and panics).
#[derive(Debug, Default)]
struct Children {
    server: Option<Child>,
    workers: Vec<WorkerProc>,
    config_file: Option<PathBuf>,
}

impl Children {
    fn shutdown(&mut self) {
        for w in &mut self.workers {
            if let Some(mut s) = w.stdin.take() {
                let _ = writeln!(s, "{}", json!({"cmd": "quit"}));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for w in &mut self.workers {
            while Instant::now() < deadline {
                match w.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            if matches!(w.child.try_wait(), Ok(None)) {
                let _ = w.child.kill();
            }
            let _ = w.child.wait();
        }
        self.workers.clear();
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        if let Some(f) = self.config_file.take() {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The last lines the server wrote on stderr.
#[derive(Debug, Default)]
struct ServerLog {
    lines: Mutex<VecDeque<String>>,
}

impl ServerLog {
    fn push(&self, l: String) {
        if let Ok(mut v) = self.lines.lock() {
            if v.len() >= 50 {
                v.pop_front();
            }
            v.push_back(l);
        }
    }

    fn tail(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A connected harness: the server under test and the workers.
#[derive(Debug)]
struct Harness {
    kids: Children,
    rx: smpsc::Receiver<WorkerLine>,
    server: SocketAddr,
    server_pid: Option<u32>,
    metrics: Option<SocketAddr>,
    log: Arc<ServerLog>,
}

fn proc_rss(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmRSS:").map(|k| k * 1024)
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// utime + stime of a process (all its threads), seconds.
fn proc_cpu(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of stat(5); `rest` starts at field 3
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `GET /metrics` of a Prometheus endpoint, as name → value.
fn scrape(addr: SocketAddr) -> Result<HashMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("cannot reach the metrics endpoint {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    s.take(8 << 20)
        .read_to_end(&mut body)
        .context("reading the metrics")?;
    let text = String::from_utf8_lossy(&body);
    let mut m = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((k, v)) = line.split_once(' ') {
            if let Ok(v) = v.trim().parse::<f64>() {
                m.insert(k.to_string(), v);
            }
        }
    }
    Ok(m)
}

fn ms(us: Option<u64>) -> Json {
    match us {
        Some(u) => json!((u as f64 / 1000.0 * 10.0).round() / 10.0),
        None => Json::Null,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Merged `connect_done` / `intro_done` answers of several workers.
#[derive(Debug, Default)]
struct Merged {
    ok: u64,
    failed: u64,
    lat_us: Vec<u64>,
    lookup_us: Vec<u64>,
    lookup_ok: u64,
    lookup_null: u64,
    via_server: u64,
    start_us: Option<u64>,
    last_start_us: Option<u64>,
    end_us: Option<u64>,
    errors: BTreeMap<String, u64>,
    failed_idx: HashSet<usize>,
}

impl Merged {
    fn add(&mut self, v: &Json) {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        self.ok += n("ok");
        self.failed += n("failed");
        self.lookup_ok += n("lookup_ok");
        self.lookup_null += n("lookup_null");
        self.via_server += n("via_server");
        let list = |k: &str| -> Vec<u64> {
            v[k].as_array()
                .map(|a| a.iter().filter_map(Json::as_u64).collect())
                .unwrap_or_default()
        };
        self.lat_us.extend(list("lat_us"));
        self.lookup_us.extend(list("lookup_us"));
        self.failed_idx
            .extend(list("failed_idx").into_iter().map(|i| i as usize));
        if let Some(s) = v["start_us"].as_u64() {
            self.start_us = Some(self.start_us.map_or(s, |x| x.min(s)));
        }
        if let Some(s) = v["last_start_us"].as_u64() {
            self.last_start_us = Some(self.last_start_us.map_or(s, |x| x.max(s)));
        }
        if let Some(e) = v["end_us"].as_u64() {
            self.end_us = Some(self.end_us.map_or(e, |x| x.max(e)));
        }
        if let Some(o) = v["errors"].as_object() {
            for (k, c) in o {
                *self.errors.entry(k.clone()).or_insert(0) += c.as_u64().unwrap_or(0);
            }
        }
    }

    fn finish(&mut self) {
        self.lat_us.sort_unstable();
        self.lookup_us.sort_unstable();
    }

    fn span_us(&self) -> Option<u64> {
        Some(self.end_us?.saturating_sub(self.start_us?))
    }

    fn per_second(&self) -> Option<f64> {
        let s = self.span_us()? as f64 / 1e6;
        (s > 0.0).then(|| round2(self.ok as f64 / s))
    }

    fn latency_json(&self) -> Json {
        json!({
            "p50_ms": ms(percentile(&self.lat_us, 0.50)),
            "p99_ms": ms(percentile(&self.lat_us, 0.99)),
            "max_ms": ms(self.lat_us.last().copied()),
        })
    }
}

impl Harness {
    fn send(&mut self, w: usize, cmd: &Json) -> Result<()> {
        let p = self
            .kids
            .workers
            .get_mut(w)
            .ok_or_else(|| anyhow!("no worker {w}"))?;
        let s = p
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("worker {w} is closed"))?;
        writeln!(s, "{cmd}")
            .and_then(|_| s.flush())
            .with_context(|| format!("cannot command worker {w}"))
    }

    /// Waits for one `ev` answer from each of `workers`.
    fn await_all(
        &mut self,
        ev: &str,
        workers: &[usize],
        timeout: Duration,
    ) -> Result<HashMap<usize, Json>> {
        let deadline = Instant::now() + timeout;
        let mut got = HashMap::new();
        while got.len() < workers.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match self.rx.recv_timeout(left) {
                Ok(m) => m,
                Err(smpsc::RecvTimeoutError::Timeout) => {
                    bail!("workers did not answer {ev} within {timeout:?}")
                }
                Err(smpsc::RecvTimeoutError::Disconnected) => bail!("every worker is gone"),
            };
            let Some(line) = m.line else {
                let status = self
                    .kids
                    .workers
                    .get_mut(m.worker)
                    .and_then(|w| w.child.wait().ok())
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                bail!("worker {} exited ({status})", m.worker);
            };
            let v: Json = serde_json::from_str(&line)
                .with_context(|| format!("worker {} said {line:?}", m.worker))?;
            match v["ev"].as_str() {
                Some("error") => bail!(
                    "worker {}: {}",
                    m.worker,
                    v["message"].as_str().unwrap_or("?")
                ),
                Some(e) if e == ev && workers.contains(&m.worker) => {
                    got.insert(m.worker, v);
                }
                _ => {}
            }
        }
        Ok(got)
    }

    fn server_cpu(&self) -> Option<f64> {
        proc_cpu(self.server_pid?)
    }

    fn workers_cpu(&self) -> Option<f64> {
        let mut t = 0.0;
        for w in &self.kids.workers {
            t += proc_cpu(w.child.id())?;
        }
        Some(t)
    }

    fn metrics(&self) -> Option<HashMap<String, f64>> {
        scrape(self.metrics?).ok()
    }

    /// Runs `connect` over `ranges` (worker, from, to) at `rate` per second
    /// in total (0 = all at once).
    fn connect_phase(
        &mut self,
        ranges: &[(usize, usize, usize)],
        rate: f64,
        inflight: usize,
        timeout: Duration,
    ) -> Result<Merged> {
        let total: usize = ranges.iter().map(|r| r.2 - r.1).sum();
        let mut ws = Vec::new();
        for &(w, from, to) in ranges {
            if to <= from {
                continue;
            }
            let frac = (to - from) as f64 / total.max(1) as f64;
            let share = if rate > 0.0 { rate * frac } else { 0.0 };
            let cap = if inflight > 0 {
                ((inflight as f64 * frac).round() as usize).max(1)
            } else {
                0
            };
            self.send(
                w,
                &json!({"cmd": "connect", "from": from, "to": to, "rate": share, "inflight": cap,
                        "timeout_ms": timeout.as_millis() as u64}),
            )?;
            ws.push(w);
        }
        let pacing = if rate > 0.0 {
            Duration::from_secs_f64(total as f64 / rate)
        } else {
            Duration::ZERO
        };
        let answers = self.await_all(
            "connect_done",
            &ws,
            pacing + timeout + Duration::from_secs(30),
        )?;
        let mut m = Merged::default();
        for v in answers.values() {
            m.add(v);
        }
        m.finish();
        Ok(m)
    }

    fn status(&mut self) -> Result<Status> {
        let ws: Vec<usize> = (0..self.kids.workers.len()).collect();
        for &w in &ws {
            self.send(w, &json!({"cmd": "status"}))?;
        }
        let a = self.await_all("status", &ws, Duration::from_secs(20))?;
        let sum = |k: &str| a.values().map(|v| v[k].as_u64().unwrap_or(0)).sum::<u64>();
        let mut io = IoStats::default();
        for v in a.values() {
            io += io_from_json(&v["io"]);
        }
        Ok(Status {
            connected: sum("connected"),
            lost: sum("lost"),
            direct_in: sum("direct_in"),
            keepalive_set: sum("keepalive_set"),
            io,
        })
    }
}

/// The workers' `status` answers, summed.
#[derive(Debug, Clone, Copy)]
struct Status {
    connected: u64,
    lost: u64,
    direct_in: u64,
    keepalive_set: u64,
    io: IoStats,
}

fn spawn_server(
    args: &BenchServerArgs,
    kids: &mut Children,
    log: &Arc<ServerLog>,
) -> Result<(SocketAddr, Option<SocketAddr>, u32)> {
    let exe = std::env::current_exe().context("cannot find the nimbus executable")?;
    let cfg = std::env::temp_dir().join(format!("nimbus-bench-server-{}.toml", std::process::id()));
    let max_sessions = (args.sessions * 2).max(200_000);
    std::fs::write(
        &cfg,
        format!(
            "# written by nimbus bench server\n[limits]\nmax_sessions = {max_sessions}\n\
             sessions_per_address = {BENCH_SESSIONS_PER_ADDRESS}\n\
             handshakes_per_second_per_address = {BENCH_HANDSHAKES_PER_SECOND_PER_ADDRESS}\n"
        ),
    )
    .with_context(|| format!("cannot write {}", cfg.display()))?;
    kids.config_file = Some(cfg.clone());
    let mut child = Command::new(&exe)
        .arg("server")
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--shards", &args.shards.to_string()])
        .args(["--dh-groups", &args.dh_group.to_string()])
        .arg("--config")
        .arg(&cfg)
        .args(["--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {} server", exe.display()))?;
    let pid = child.id();
    let stderr = child.stderr.take();
    kids.server = Some(child);
    let stderr = stderr.ok_or_else(|| anyhow!("no server stderr"))?;
    let (tx, rx) = smpsc::channel::<(bool, SocketAddr)>();
    let log2 = log.clone();
    std::thread::Builder::new()
        .name("server-stderr".into())
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("nimbus server: rtmfp://") {
                    if let Ok(a) = a.trim_end_matches('/').parse() {
                        let _ = tx.send((false, a));
                    }
                } else if let Some(a) = line.strip_prefix("nimbus server: metrics at http://") {
                    if let Ok(a) = a.trim_end_matches("/metrics").parse() {
                        let _ = tx.send((true, a));
                    }
                }
                log2.push(line);
            }
        })
        .context("cannot start the server log reader")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut addr, mut metrics) = (None, None);
    while addr.is_none() || metrics.is_none() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((false, a)) => addr = Some(a),
            Ok((true, a)) => metrics = Some(a),
            Err(_) => bail!(
                "the server did not report its addresses; its output:\n{}",
                log.tail().join("\n")
            ),
        }
    }
    let addr = addr.ok_or_else(|| anyhow!("no server address"))?;
    Ok((addr, metrics, pid))
}

fn spawn_workers(
    args: &BenchServerArgs,
    server: SocketAddr,
    kids: &mut Children,
) -> Result<smpsc::Receiver<WorkerLine>> {
    let exe = std::env::current_exe().context("cannot find the nimbus executable")?;
    let per = args.clients_per_worker;
    let nworkers = args.sessions.div_ceil(per);
    let (tx, rx) = smpsc::channel();
    let url = format!("rtmfp://{server}/{}", args.app);
    for w in 0..nworkers {
        let first = w * per;
        let count = per.min(args.sessions - first);
        let mut child = Command::new(&exe)
            .args(["bench", "server-worker"])
            .args(["--server", &server.to_string(), "--url", &url])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--source-addresses", &args.source_addresses.to_string()])
            .args(["--dh-group", &args.dh_group.to_string()])
            .args(["--client-keys", &args.client_keys])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start worker {w}"))?;
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        kids.workers.push(WorkerProc {
            child,
            stdin,
            first,
            count,
        });
        let stdout = stdout.ok_or_else(|| anyhow!("no worker stdout"))?;
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("worker-{w}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx
                        .send(WorkerLine {
                            worker: w,
                            line: Some(line),
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = tx.send(WorkerLine {
                    worker: w,
                    line: None,
                });
            })
            .context("cannot start a worker reader")?;
    }
    Ok(rx)
}

/// Splits `burst` clients over the workers: (worker, from, to) for the
/// burst and for the rest.
fn plan(
    workers: &[(usize, usize)],
    burst: usize,
) -> (Vec<(usize, usize, usize)>, Vec<(usize, usize, usize)>) {
    let n = workers.len().max(1);
    let mut take = vec![0usize; workers.len()];
    let mut left = burst;
    // even shares, capped by each worker's size, the remainder round-robin
    while left > 0 {
        let mut moved = false;
        for (i, &(_, count)) in workers.iter().enumerate() {
            if left == 0 {
                break;
            }
            let want = (burst / n).max(1);
            let room = count - take[i];
            let t = want.min(room).min(left);
            if t > 0 {
                take[i] += t;
                left -= t;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let mut b = Vec::new();
    let mut r = Vec::new();
    for (i, &(first, count)) in workers.iter().enumerate() {
        b.push((i, first, first + take[i]));
        r.push((i, first + take[i], first + count));
    }
    (b, r)
}

/// Entry point of `nimbus bench server`.
pub fn run(args: BenchServerArgs) -> Result<()> {
    if args.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    if args.burst > args.sessions {
        bail!(
            "--burst {} is more than --sessions {}",
            args.burst,
            args.sessions
        );
    }
    if args.clients_per_worker == 0 || args.clients_per_worker > MAX_CLIENTS_PER_WORKER {
        bail!("--clients-per-worker must be 1 to {MAX_CLIENTS_PER_WORKER} (one socket each)");
    }
    if args.pairs * 2 > args.sessions {
        bail!(
            "--pairs {} needs at least {} sessions",
            args.pairs,
            args.pairs * 2
        );
    }
    if args.source_addresses == 0 || args.source_addresses > 253 {
        bail!("--source-addresses must be 1 to 253");
    }
    if args.rate == 0 {
        bail!("--rate must be at least 1");
    }
    let report = run_bench(&args)?;
    if args.json {
        println!("{report}");
    } else {
        print_text(&report);
    }
    Ok(())
}

fn run_bench(args: &BenchServerArgs) -> Result<Json> {
    let load_start = loadavg();
    let mut kids = Children::default();
    let log = Arc::new(ServerLog::default());
    let (server, metrics, server_pid, spawned) = match args.server {
        Some(s) => (s, args.server_metrics, args.server_pid, false),
        None => {
            let (a, m, pid) = spawn_server(args, &mut kids, &log)?;
            (a, m, Some(pid), true)
        }
    };
    let rx = spawn_workers(args, server, &mut kids)?;
    let mut h = Harness {
        kids,
        rx,
        server,
        server_pid,
        metrics,
        log,
    };
    let r = phases(args, &mut h, spawned, load_start);
    if r.is_err() && spawned {
        let tail = h.log.tail();
        if !tail.is_empty() {
            eprintln!("nimbus bench server: the server's last log lines:");
            for l in tail {
                eprintln!("  {l}");
            }
        }
    }
    h.kids.shutdown();
    r
}

fn phases(
    args: &BenchServerArgs,
    h: &mut Harness,
    spawned: bool,
    load_start: Option<f64>,
) -> Result<Json> {
    let nworkers = h.kids.workers.len();
    let all: Vec<usize> = (0..nworkers).collect();
    let setup = Instant::now();
    let ready = h.await_all("ready", &all, Duration::from_secs(300))?;
    let setup_s = setup.elapsed().as_secs_f64();
    let max_setup_ms = ready
        .values()
        .filter_map(|v| v["setup_ms"].as_u64())
        .max()
        .unwrap_or(0);
    let timeout = Duration::from_secs(args.connect_timeout_secs.max(1));

    // baseline
    std::thread::sleep(Duration::from_millis(500));
    let rss_base = h.server_pid.and_then(proc_rss);
    let m0 = h.metrics();

    let sizes: Vec<(usize, usize)> = h.kids.workers.iter().map(|w| (w.first, w.count)).collect();
    let (burst_ranges, ramp_ranges) = plan(&sizes, args.burst);

    // phase 1: burst
    let cpu0 = h.server_cpu();
    let wcpu0 = h.workers_cpu();
    let burst = if args.burst > 0 {
        Some(h.connect_phase(&burst_ranges, 0.0, 0, timeout)?)
    } else {
        None
    };
    let cpu1 = h.server_cpu();
    let wcpu1 = h.workers_cpu();

    // phase 2: ramp
    let ramp_n = args.sessions - args.burst;
    let ramp = if ramp_n > 0 {
        Some(h.connect_phase(
            &ramp_ranges,
            f64::from(args.rate),
            args.ramp_inflight,
            timeout,
        )?)
    } else {
        None
    };
    let cpu2 = h.server_cpu();
    let wcpu2 = h.workers_cpu();
    let m_after_connect = h.metrics();

    // hold
    let hold_start = Instant::now();
    let mut min_server_sessions: Option<f64> = None;
    while hold_start.elapsed() < Duration::from_secs(args.hold_secs) {
        let left = Duration::from_secs(args.hold_secs).saturating_sub(hold_start.elapsed());
        std::thread::sleep(left.min(Duration::from_secs(5)));
        if let Some(s) = h
            .metrics()
            .and_then(|m| m.get("nimbus_connections").copied())
        {
            min_server_sessions = Some(min_server_sessions.map_or(s, |x| x.min(s)));
        }
    }
    let cpu_hold = h.server_cpu();
    let Status {
        connected: held,
        lost: lost_hold,
        keepalive_set,
        ..
    } = h.status()?;
    let rss_idle = h.server_pid.and_then(proc_rss);
    let hwm = h
        .server_pid
        .and_then(|p| proc_status_kb(p, "VmHWM:"))
        .map(|k| k * 1024);
    let m_idle = h.metrics();

    // phase 3: lookups + introductions
    let failed_idx: HashSet<usize> = burst
        .iter()
        .chain(ramp.iter())
        .flat_map(|m| m.failed_idx.iter().copied())
        .collect();
    let mut intro = None;
    let mut intro_skipped = 0usize;
    let cpu3 = h.server_cpu();
    let m3 = h.metrics();
    if args.pairs > 0 {
        let mut by_worker: BTreeMap<usize, Vec<Json>> = BTreeMap::new();
        for k in 0..args.pairs {
            let (a, b) = (k, args.sessions - 1 - k);
            if failed_idx.contains(&a) || failed_idx.contains(&b) {
                intro_skipped += 1;
                continue;
            }
            let w = a / args.clients_per_worker;
            by_worker.entry(w).or_default().push(json!([a, b]));
        }
        let ws: Vec<usize> = by_worker.keys().copied().collect();
        for (w, pairs) in by_worker {
            h.send(
                w,
                &json!({"cmd": "intro", "pairs": pairs, "timeout_ms": timeout.as_millis() as u64}),
            )?;
        }
        let answers = h.await_all("intro_done", &ws, timeout + Duration::from_secs(30))?;
        let mut m = Merged::default();
        for v in answers.values() {
            m.add(v);
        }
        m.finish();
        intro = Some(m);
    }
    let cpu4 = h.server_cpu();
    let m4 = h.metrics();
    let Status {
        connected: connected_end,
        lost: lost_total,
        direct_in,
        io: client_io,
        ..
    } = h.status()?;
    let load_end = loadavg();

    // ----- figures -----
    let metric = |m: &Option<HashMap<String, f64>>, k: &str| -> Option<f64> {
        m.as_ref().and_then(|m| m.get(k).copied())
    };
    let delta = |a: Option<f64>, b: Option<f64>| -> Option<f64> { Some(b? - a?) };
    let per_ms = |cpu: Option<f64>, n: u64| -> Json {
        match cpu {
            Some(c) if n > 0 => json!(round2(c * 1000.0 / n as f64)),
            _ => Json::Null,
        }
    };
    let burst_ok = burst.as_ref().map_or(0, |b| b.ok);
    let ramp_ok = ramp.as_ref().map_or(0, |r| r.ok);
    let connects = burst_ok + ramp_ok;
    let server_cpu_connect = delta(cpu0, cpu2);
    let client_cpu_connect = delta(wcpu0, wcpu2);

    let burst_json = burst.as_ref().map(|b| {
        json!({
            "clients": args.burst,
            "ok": b.ok,
            "failed": b.failed,
            "all_connected_ms": if b.failed == 0 { ms(b.span_us()) } else { Json::Null },
            "start_spread_ms": ms(b.last_start_us.zip(b.start_us).map(|(l, s)| l.saturating_sub(s))),
            "server_cpu_ms": delta(cpu0, cpu1).map(|c| round2(c * 1000.0)),
            "client_cpu_ms": delta(wcpu0, wcpu1).map(|c| round2(c * 1000.0)),
            "last_success_ms": ms(b.span_us()),
            "latency": b.latency_json(),
            "handshakes_per_s": b.per_second(),
            "server_cpu_ms_per_connect": per_ms(delta(cpu0, cpu1), b.ok),
            "client_cpu_ms_per_connect": per_ms(delta(wcpu0, wcpu1), b.ok),
            "errors": b.errors,
        })
    });
    let ramp_json = ramp.as_ref().map(|r| {
        json!({
            "clients": ramp_n,
            "target_rate_per_s": args.rate,
            "inflight_cap": args.ramp_inflight,
            "ok": r.ok,
            "failed": r.failed,
            "span_s": r.span_us().map(|u| round2(u as f64 / 1e6)),
            "handshakes_per_s": r.per_second(),
            "latency": r.latency_json(),
            "server_cpu_ms_per_connect": per_ms(delta(cpu1, cpu2), r.ok),
            "client_cpu_ms_per_connect": per_ms(delta(wcpu1, wcpu2), r.ok),
            "errors": r.errors,
        })
    });
    let server_connections = metric(&m_idle, "nimbus_connections");
    let server_sessions = metric(&m_idle, "nimbus_sessions");
    let idle_sessions = server_connections.map(|c| c as u64).unwrap_or(held);
    let bytes_per_session = match (rss_base, rss_idle) {
        (Some(a), Some(b)) if idle_sessions > 0 => {
            Some(b.saturating_sub(a) as f64 / idle_sessions as f64)
        }
        _ => None,
    };
    let hold_json = json!({
        "secs": args.hold_secs,
        "sessions_held": held,
        "lost_so_far": lost_hold,
        "keepalive_timers_received": keepalive_set,
        "server_sessions": server_sessions,
        "server_connections": server_connections,
        "server_connections_min_during_hold": min_server_sessions,
        "server_rss_before_bytes": rss_base,
        "server_rss_idle_bytes": rss_idle,
        "server_rss_peak_bytes": hwm,
        "bytes_per_idle_session": bytes_per_session.map(|b| b.round()),
        "server_cpu_us_per_idle_session_per_s": match delta(cpu2, cpu_hold) {
            Some(c) if held > 0 && args.hold_secs > 0 => json!(round2(c * 1e6 / held as f64 / args.hold_secs as f64)),
            _ => Json::Null,
        },
    });
    let intro_json = intro.as_ref().map(|m| {
        let intros = delta(
            metric(&m3, "nimbus_introductions_total"),
            metric(&m4, "nimbus_introductions_total"),
        );
        json!({
            "pairs": args.pairs,
            "skipped_failed_clients": intro_skipped,
            "lookup_ok": m.lookup_ok,
            "lookup_null": m.lookup_null,
            "direct_sessions": m.ok,
            "via_server_address": m.via_server,
            "failed": m.failed,
            "span_ms": ms(m.span_us()),
            "introductions_per_s": m.per_second(),
            "lookup_latency": {
                "p50_ms": ms(percentile(&m.lookup_us, 0.5)),
                "p99_ms": ms(percentile(&m.lookup_us, 0.99)),
            },
            "time_to_direct_session": m.latency_json(),
            "server_introductions": intros,
            "server_cpu_ms_per_lookup_and_introduction": per_ms(delta(cpu3, cpu4), m.ok),
            "targets_accepting_direct_sessions": direct_in,
            "errors": m.errors,
        })
    });

    let burst_pass = burst
        .as_ref()
        .map(|b| b.failed == 0 && b.span_us().is_some_and(|s| s <= 1_000_000));
    let targets = json!({
        "sessions_20000": if args.sessions >= 20_000 { json!(held >= 20_000 && server_connections.is_none_or(|c| c >= 20_000.0)) } else { Json::Null },
        "idle_session_at_most_4KiB": bytes_per_session.filter(|_| idle_sessions >= 1000).map(|b| b <= 4096.0),
        "burst_1000_within_1s": if args.burst >= 1000 { json!(burst_pass) } else { Json::Null },
    });

    let server_desc = if spawned {
        json!({
            "kind": "nimbus server (spawned)",
            "address": h.server.to_string(),
            "pid": h.server_pid,
            "shards": args.shards,
            "dh_groups": [args.dh_group],
            "raised_limits": {
                "sessions_per_address": BENCH_SESSIONS_PER_ADDRESS,
                "handshakes_per_second_per_address": BENCH_HANDSHAKES_PER_SECOND_PER_ADDRESS,
                "max_sessions": (args.sessions * 2).max(200_000),
            },
            "packet_auth": "on-request (server default)",
        })
    } else {
        json!({
            "kind": "external",
            "address": h.server.to_string(),
            "pid": h.server_pid,
            "metrics": h.metrics.map(|m| m.to_string()),
        })
    };
    let groups: Vec<u64> = client_groups(args.dh_group)
        .iter()
        .map(|g| g.id())
        .collect();
    let report = json!({
        "bench": "nimbus bench server",
        "config": {
            "sessions": args.sessions,
            "burst": args.burst,
            "hold_secs": args.hold_secs,
            "pairs": args.pairs,
            "ramp_rate_per_s": args.rate,
            "connect_timeout_s": args.connect_timeout_secs,
            "workers": nworkers,
            "clients_per_worker": args.clients_per_worker,
            "worker_setup_s": round2(setup_s),
            "worker_setup_max_ms": max_setup_ms,
            "source_addresses": format!("127.0.0.2-127.0.0.{}", 1 + args.source_addresses),
            "client": {
                "identity": "one rtmfp::Endpoint, FlashProfile::client() certificate (peer ID), NetConnection and UDP socket per client, each client a machine on its own rtmfp-tokio host",
                "dh_keys": args.client_keys,
                "dh_groups_offered": groups,
                "hmac_sseq": "client default (preferred); the server answers on request, so HMAC and session sequence numbers are used",
                "keepalive": "as told by the server's Set Keepalive Timers (20 s before that)",
            },
            "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "load_average_start": load_start,
            "load_average_end": load_end,
        },
        "server": server_desc,
        "burst": burst_json,
        "ramp": ramp_json,
        "hold": hold_json,
        "introductions": intro_json,
        "server_cpu_ms_per_handshake_connect": per_ms(server_cpu_connect, connects),
        "client_cpu_ms_per_handshake_connect": per_ms(client_cpu_connect, connects),
        "client_io": {
            "datagrams_sent": client_io.datagrams_sent,
            "send_calls": client_io.send_calls,
            "datagrams_per_send_call": round2(client_io.datagrams_per_send()),
            "send_blocked": client_io.send_blocked,
            "datagrams_received": client_io.datagrams_received,
            "recv_calls": client_io.recv_calls,
            "datagrams_per_recv_call": round2(client_io.datagrams_per_recv()),
        },
        "sessions_connected_at_end": connected_end,
        "sessions_lost_total": lost_total,
        "server_metrics": {
            "sessions_opened_total": delta(metric(&m0, "nimbus_sessions_opened_total"), metric(&m4, "nimbus_sessions_opened_total")),
            "connects_accepted_total": delta(metric(&m0, "nimbus_connects_accepted_total"), metric(&m4, "nimbus_connects_accepted_total")),
            "connects_rejected_total": delta(metric(&m0, "nimbus_connects_rejected_total"), metric(&m4, "nimbus_connects_rejected_total")),
            "limit_refusals_total": delta(metric(&m0, "nimbus_limit_refusals_total"), metric(&m4, "nimbus_limit_refusals_total")),
            "sessions_closed_total": delta(metric(&m0, "nimbus_sessions_closed_total"), metric(&m4, "nimbus_sessions_closed_total")),
            "protocol_errors_total": delta(metric(&m0, "nimbus_protocol_errors_total"), metric(&m4, "nimbus_protocol_errors_total")),
            "socket_errors_total": delta(metric(&m0, "nimbus_socket_errors_total"), metric(&m4, "nimbus_socket_errors_total")),
            "sessions_after_connects": metric(&m_after_connect, "nimbus_sessions"),
        },
        "targets": targets,
        "reference": {
            "tcserver_bytes_per_idle_session": 19_000,
            "monaserver2_bytes_per_idle_session": "21000-22000",
            "server_cpu_ms_per_handshake_connect": "0.6-0.9 (1.8-2.6 with 1024-bit DH)",
        },
    });
    Ok(report)
}

fn fmt_num(v: &Json) -> String {
    match v {
        Json::Null => "n/a".into(),
        Json::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                format!("{f:.2}")
            }
        }
        other => other.to_string(),
    }
}

fn fmt_errors(v: &Json) -> String {
    match v.as_object() {
        Some(o) if !o.is_empty() => o
            .iter()
            .map(|(k, c)| format!("\n            {} × {k}", fmt_num(c)))
            .collect(),
        _ => String::new(),
    }
}

fn pass(v: &Json) -> &'static str {
    match v {
        Json::Bool(true) => "PASS",
        Json::Bool(false) => "FAIL",
        _ => "n/a (needs the full-size run)",
    }
}

/// One line of the text report: each `{}` of `template` takes, in order, the
/// value of `v` at the slash-separated path in `paths` (`"latency/p50_ms"`),
/// printed by [`fmt_num`].
fn report_line(template: &str, v: &Json, paths: &[&str]) -> String {
    let mut values = paths.iter().map(|path| {
        let at = path
            .split('/')
            .fold(v, |v, key| match key.parse::<usize>() {
                Ok(i) => &v[i],
                Err(_) => &v[key],
            });
        fmt_num(at)
    });
    let mut pieces = template.split("{}");
    let mut out = pieces.next().unwrap_or_default().to_string();
    for piece in pieces {
        out.push_str(&values.next().unwrap_or_else(|| "?".into()));
        out.push_str(piece);
    }
    out
}

fn print_text(r: &Json) {
    let c = &r["config"];
    let s = &r["server"];
    let text = |v: &Json| v.as_str().unwrap_or("?").to_string();
    println!(
        "{}",
        report_line(
            "nimbus bench server: {} sessions, burst {}, hold {} s, {} pairs",
            c,
            &["sessions", "burst", "hold_secs", "pairs"],
        )
    );
    if s["kind"] == "external" {
        println!(
            "server    external at {} (pid {})",
            text(&s["address"]),
            fmt_num(&s["pid"])
        );
    } else {
        println!(
            "server    nimbus server at {}, pid {}, {} shards, DH group {}, packet auth {}",
            text(&s["address"]),
            fmt_num(&s["pid"]),
            fmt_num(&s["shards"]),
            fmt_num(&s["dh_groups"][0]),
            text(&s["packet_auth"]),
        );
        println!(
            "{}",
            report_line(
                "          limits raised for the bench: sessions_per_address = {}, handshakes_per_second_per_address = {}, max_sessions = {}",
                &s["raised_limits"],
                &["sessions_per_address", "handshakes_per_second_per_address", "max_sessions"],
            )
        );
    }
    let cl = &c["client"];
    println!(
        "{}{}",
        report_line(
            "clients   {} worker processes (≤ {} clients each, set up in {} s), sources ",
            c,
            &["workers", "clients_per_worker", "worker_setup_s"],
        ),
        text(&c["source_addresses"])
    );
    println!(
        "          each: own Endpoint + FlashProfile::client() identity + UDP socket on its own host; {} DH keys, groups {}; HMAC/SSEQ {}",
        text(&cl["dh_keys"]),
        cl["dh_groups_offered"],
        text(&cl["hmac_sseq"])
    );
    println!(
        "{}",
        report_line(
            "machine   {} cores, load average {} at start, {} at end (the clients share the cores)",
            c,
            &["cores", "load_average_start", "load_average_end"],
        )
    );
    println!();
    let b = &r["burst"];
    if !b.is_null() {
        println!(
            "{}",
            report_line(
                "burst     {} simultaneous connects (started within {} ms): {} ok, {} failed; all connected in {} ms (last success {} ms)",
                b,
                &["clients", "start_spread_ms", "ok", "failed", "all_connected_ms", "last_success_ms"],
            )
        );
        println!(
            "{}",
            report_line(
                "          CPU used meanwhile: server {} ms, clients {} ms (same {} cores)",
                r,
                &["burst/server_cpu_ms", "burst/client_cpu_ms", "config/cores"],
            )
        );
        println!(
            "{}{}",
            report_line(
                "          connect latency p50 {} ms, p99 {} ms, max {} ms; {} handshakes/s; server CPU {} ms per connect, clients {} ms",
                b,
                &[
                    "latency/p50_ms",
                    "latency/p99_ms",
                    "latency/max_ms",
                    "handshakes_per_s",
                    "server_cpu_ms_per_connect",
                    "client_cpu_ms_per_connect",
                ],
            ),
            fmt_errors(&b["errors"]),
        );
    }
    let m = &r["ramp"];
    if !m.is_null() {
        println!(
            "{}",
            report_line(
                "ramp      {} connects at ≤ {}/s, ≤ {} outstanding: {} ok, {} failed in {} s = {} handshakes/s",
                m,
                &["clients", "target_rate_per_s", "inflight_cap", "ok", "failed", "span_s", "handshakes_per_s"],
            )
        );
        println!(
            "{}{}",
            report_line(
                "          connect latency p50 {} ms, p99 {} ms, max {} ms; server CPU {} ms per connect, clients {} ms",
                m,
                &[
                    "latency/p50_ms",
                    "latency/p99_ms",
                    "latency/max_ms",
                    "server_cpu_ms_per_connect",
                    "client_cpu_ms_per_connect",
                ],
            ),
            fmt_errors(&m["errors"]),
        );
    }
    let hd = &r["hold"];
    println!(
        "{}",
        report_line(
            "hold      {} s: {} sessions held by the clients ({} lost), server reports {} sessions / {} connections (min {} during the hold)",
            hd,
            &[
                "secs",
                "sessions_held",
                "lost_so_far",
                "server_sessions",
                "server_connections",
                "server_connections_min_during_hold",
            ],
        )
    );
    let mib = |v: &Json| {
        v.as_f64()
            .map(|b| format!("{:.1} MiB", b / 1048576.0))
            .unwrap_or("n/a".into())
    };
    println!(
        "memory    server RSS {} before, {} with the sessions idle (peak {}): {} bytes per idle session",
        mib(&hd["server_rss_before_bytes"]),
        mib(&hd["server_rss_idle_bytes"]),
        mib(&hd["server_rss_peak_bytes"]),
        fmt_num(&hd["bytes_per_idle_session"]),
    );
    println!(
        "{}",
        report_line(
            "client io {} datagrams sent in {} calls ({} per call), {} received in {} calls ({} per call)",
            &r["client_io"],
            &[
                "datagrams_sent",
                "send_calls",
                "datagrams_per_send_call",
                "datagrams_received",
                "recv_calls",
                "datagrams_per_recv_call",
            ],
        )
    );
    println!(
        "{}",
        report_line(
            "cpu       server {} ms per handshake + connect (clients {} ms); idle: {} µs server CPU per session per second",
            r,
            &[
                "server_cpu_ms_per_handshake_connect",
                "client_cpu_ms_per_handshake_connect",
                "hold/server_cpu_us_per_idle_session_per_s",
            ],
        )
    );
    let i = &r["introductions"];
    if !i.is_null() {
        println!(
            "{}",
            report_line(
                "intro     {} pairs: {} lookups ok ({} null), {} direct sessions ({} via the server's address), {} failed; {} introductions/s",
                i,
                &[
                    "pairs",
                    "lookup_ok",
                    "lookup_null",
                    "direct_sessions",
                    "via_server_address",
                    "failed",
                    "introductions_per_s",
                ],
            )
        );
        println!(
            "{}{}",
            report_line(
                "          lookup p50 {} ms, p99 {} ms; lookup → direct session p50 {} ms, p99 {} ms, max {} ms; server introductions {}, server CPU {} ms each",
                i,
                &[
                    "lookup_latency/p50_ms",
                    "lookup_latency/p99_ms",
                    "time_to_direct_session/p50_ms",
                    "time_to_direct_session/p99_ms",
                    "time_to_direct_session/max_ms",
                    "server_introductions",
                    "server_cpu_ms_per_lookup_and_introduction",
                ],
            ),
            fmt_errors(&i["errors"]),
        );
    }
    println!(
        "{}",
        report_line(
            "metrics   server: {} sessions opened, {} connects accepted, {} rejected, {} limit refusals, {} closed, {} protocol errors, {} socket errors",
            &r["server_metrics"],
            &[
                "sessions_opened_total",
                "connects_accepted_total",
                "connects_rejected_total",
                "limit_refusals_total",
                "sessions_closed_total",
                "protocol_errors_total",
                "socket_errors_total",
            ],
        )
    );
    let t = &r["targets"];
    println!();
    println!(
        "targets   ≥ 20,000 sessions: {}; ≤ 4 KiB per idle session: {}; 1,000-connect burst within 1 s: {}",
        pass(&t["sessions_20000"]),
        pass(&t["idle_session_at_most_4KiB"]),
        pass(&t["burst_1000_within_1s"]),
    );
    println!("reference tcserver ~19 kB, MonaServer2 ~21-22 kB per idle session; their server CPU per handshake + connect 0.6-0.9 ms (1.8-2.6 ms with 1024-bit DH)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_splits_the_burst_over_workers() {
        let (b, r) = plan(&[(0, 5000), (5000, 5000), (10000, 3)], 1000);
        let burst: usize = b.iter().map(|x| x.2 - x.1).sum();
        assert_eq!(burst, 1000);
        assert_eq!(b[2], (2, 10000, 10003));
        for (x, y) in b.iter().zip(&r) {
            assert_eq!(x.2, y.1);
        }
        let (b, _) = plan(&[(0, 10)], 10);
        assert_eq!(b[0], (0, 0, 10));
        let (b, _) = plan(&[(0, 3), (3, 3)], 5);
        assert_eq!(b.iter().map(|x| x.2 - x.1).sum::<usize>(), 5);
    }

    #[test]
    fn report_line_fills_the_paths_in_order() {
        let v = json!({"a": 3, "b": {"c": 1.5, "d": [7]}});
        assert_eq!(
            report_line("{} and {} / {}, {}", &v, &["a", "b/c", "b/d/0", "missing"]),
            "3 and 1.50 / 7, n/a"
        );
    }

    #[test]
    fn proc_readers_work_on_ourselves() {
        let pid = std::process::id();
        assert!(proc_rss(pid).unwrap_or(0) > 0);
        assert!(proc_cpu(pid).is_some());
    }
}
