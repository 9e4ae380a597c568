//! A blocking test client: one RTMFP endpoint (Flash profile, its own
//! identity) on one UDP socket, with an optional NetConnection to the server.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use flash_amf::{Object, Value};
use nimbus_server::{Server, ServerConfig};
use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointConfig, Event};
use rtmfp_flash::message::{NcEvent, NetConnection};
use rtmfp_flash::{DhGroup, FlashProfile, PeerId};

pub struct Client {
    pub ep: Endpoint,
    pub sock: UdpSocket,
    out: Vec<u8>,
    rbuf: Vec<u8>,
    pub nc: Option<NetConnection>,
    pub nc_events: Vec<NcEvent>,
    /// Engine events not consumed by the NetConnection (direct sessions).
    pub events: Vec<Event>,
    pub peer_id: PeerId,
    /// Datagrams are dropped instead of sent while set (to fake a dead path).
    pub mute: bool,
    /// NetGroup introduction flows the server opened to us ("GC").
    pub gc_flows: Vec<(rtmfp::SessionId, u64)>,
    /// Peer IDs the server introduced to us as group members (`0B`), with
    /// the flow they came on, in order.
    pub introductions: Vec<(u64, [u8; 32])>,
    /// The receive session ID of the far end of the last datagram we sent
    /// to the server (its top bits name the server's shard).
    pub server_session_id: Option<u32>,
}

impl Client {
    pub fn new(seed: u64) -> Self {
        Self::bind("127.0.0.1:0".parse().unwrap(), seed)
    }

    pub fn bind(addr: SocketAddr, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let profile = FlashProfile::client()
            .groups(&[DhGroup::Modp1024])
            .build(&mut rng)
            .unwrap();
        let peer_id = profile.peer_id();
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_nonblocking(true).unwrap();
        let ep = Endpoint::new(
            EndpointConfig::default(),
            Box::new(profile),
            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ 0x5555)),
            Instant::now(),
        );
        Self {
            ep,
            sock,
            out: Vec::with_capacity(2048),
            rbuf: vec![0; 65536],
            nc: None,
            nc_events: Vec::new(),
            events: Vec::new(),
            peer_id,
            mute: false,
            gc_flows: Vec::new(),
            introductions: Vec::new(),
            server_session_id: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn connect(&mut self, url: &str, server: SocketAddr, args: Vec<Value>) {
        let nc =
            NetConnection::connect(&mut self.ep, Instant::now(), url, &[server], Object::new())
                .unwrap()
                .with_connect_args(args);
        self.nc = Some(nc);
    }

    /// Receives, runs timers, sends; dispatches events.
    pub fn turn(&mut self) {
        let now = Instant::now();
        while let Ok((n, from)) = self.sock.recv_from(&mut self.rbuf) {
            if !self.mute {
                self.ep.handle_datagram(now, from, &self.rbuf[..n]);
            }
        }
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        while let Some(e) = self.ep.poll_event() {
            if self.on_group_event(now, &e) {
                continue;
            }
            let used = match self.nc.as_mut() {
                Some(nc) => nc.on_event(&mut self.ep, now, &e),
                None => false,
            };
            if !used {
                self.events.push(e);
            }
        }
        if let Some(nc) = self.nc.as_mut() {
            while let Some(e) = nc.poll_event() {
                self.nc_events.push(e);
            }
        }
        while let Some(dst) = self.ep.poll_transmit(now, &mut self.out) {
            if let Some((sid, _)) = rtmfp::wire::demultiplex(&self.out) {
                if sid != 0
                    && self.nc.as_ref().is_some_and(|nc| {
                        self.ep
                            .session_info(nc.session())
                            .is_some_and(|i| i.peer == dst)
                    })
                {
                    self.server_session_id = Some(sid);
                }
            }
            if !self.mute {
                let _ = self.sock.send_to(&self.out, dst);
            }
        }
    }

    /// Takes NetGroup "GC" flows (which the NetConnection would reject) and
    /// reads the introductions on them.
    fn on_group_event(&mut self, now: Instant, e: &Event) -> bool {
        use rtmfp_netgroup::wire::{is_gc_metadata, parse_introduction};
        match e {
            Event::IncomingFlow {
                session,
                flow,
                metadata,
                ..
            } if is_gc_metadata(metadata) => {
                self.gc_flows.push((*session, *flow));
                true
            }
            Event::Readable { session, flow } if self.gc_flows.contains(&(*session, *flow)) => {
                for _ in 0..10_000 {
                    let Some(m) = self.ep.read(now, *session, *flow) else {
                        break;
                    };
                    if let Ok(p) = parse_introduction(&m.data) {
                        self.introductions.push((*flow, p));
                    }
                }
                true
            }
            Event::RecvFlowComplete { session, flow }
                if self.gc_flows.contains(&(*session, *flow)) =>
            {
                true
            }
            _ => false,
        }
    }

    /// Joins a NetGroup: opens a "GC" flow on the server session and sends
    /// the join. Returns the flow (close it to leave).
    pub fn join_group(&mut self, group: &[u8; 32]) -> u64 {
        let now = Instant::now();
        let session = self.nc.as_ref().expect("connected").session();
        let flow = self
            .ep
            .open_flow(
                now,
                session,
                rtmfp_netgroup::wire::GC_METADATA,
                None,
                rtmfp::Priority::IMMEDIATE,
            )
            .unwrap();
        let msg = rtmfp_netgroup::wire::encode_join(group);
        self.ep
            .send(now, session, flow, bytes::Bytes::from(msg), None)
            .unwrap();
        flow
    }

    /// Leaves a group by closing its join flow.
    pub fn leave_group(&mut self, flow: u64) {
        let now = Instant::now();
        let session = self.nc.as_ref().expect("connected").session();
        let _ = self.ep.close_flow(now, session, flow);
    }

    /// The distinct peers introduced to us as group members.
    pub fn introduced(&self) -> std::collections::BTreeSet<[u8; 32]> {
        self.introductions.iter().map(|(_, p)| *p).collect()
    }

    pub fn connected(&self) -> bool {
        self.nc_events
            .iter()
            .any(|e| matches!(e, NcEvent::Connected(_)))
    }

    pub fn connect_failed(&self) -> Option<String> {
        self.nc_events.iter().find_map(|e| match e {
            NcEvent::ConnectFailed(s) => Some(format!("{} {}", s.code, s.description)),
            _ => None,
        })
    }

    pub fn call_result(&self, txn: f64) -> Option<(bool, Vec<Value>)> {
        self.nc_events.iter().find_map(|e| match e {
            NcEvent::CallResult {
                transaction_id,
                ok,
                values,
            } if *transaction_id == txn => Some((*ok, values.clone())),
            _ => None,
        })
    }

    pub fn commands(&self, name: &str) -> Vec<Vec<Value>> {
        self.nc_events
            .iter()
            .filter_map(|e| match e {
                NcEvent::Command { command, .. } if command.name == name => {
                    Some(command.arguments.clone())
                }
                _ => None,
            })
            .collect()
    }

    pub fn statuses(&self, stream: u32) -> Vec<String> {
        self.nc_events
            .iter()
            .filter_map(|e| match e {
                NcEvent::Status { stream: s, status } if *s == stream => Some(status.code.clone()),
                _ => None,
            })
            .collect()
    }

    /// Opens a flow on the direct session `sid` and sends `data` on it.
    pub fn send_direct(&mut self, sid: rtmfp::SessionId, data: bytes::Bytes) {
        let now = Instant::now();
        let flow = self
            .ep
            .open_flow(now, sid, b"direct", None, Default::default())
            .unwrap();
        self.ep.send(now, sid, flow, data, None).unwrap();
    }

    /// The flows engine events said have data to read, as (session, flow).
    pub fn readable(&self) -> Vec<(rtmfp::SessionId, u64)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Readable { session, flow } => Some((*session, *flow)),
                _ => None,
            })
            .collect()
    }

    /// Whether the server sent status `code` on `stream`.
    pub fn has_status(&self, stream: u32, code: &str) -> bool {
        self.statuses(stream).iter().any(|s| s == code)
    }

    /// Whether the NetConnection is closed.
    pub fn closed(&self) -> bool {
        self.nc_events.iter().any(|e| matches!(e, NcEvent::Closed))
    }

    /// Calls `method` on the server; returns the transaction ID.
    pub fn call(&mut self, method: &str, args: Vec<Value>) -> f64 {
        self.with_nc(|nc, ep, now| nc.call(ep, now, method, args).unwrap())
    }

    /// Runs `f` with the NetConnection and endpoint.
    pub fn with_nc<R>(
        &mut self,
        f: impl FnOnce(&mut NetConnection, &mut Endpoint, Instant) -> R,
    ) -> R {
        let nc = self.nc.as_mut().expect("connected");
        f(nc, &mut self.ep, Instant::now())
    }
}

/// Turns every client until `done` or the timeout; returns whether `done` held.
pub fn pump(
    clients: &mut [&mut Client],
    timeout: Duration,
    mut done: impl FnMut(&mut [&mut Client]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for c in clients.iter_mut() {
            c.turn();
        }
        if done(clients) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Pumps until every client is connected; fails with their refusals.
pub fn connect_all(clients: &mut [&mut Client], timeout: Duration) {
    assert!(
        pump(clients, timeout, |cs| cs.iter().all(|c| c.connected())),
        "connect failed: {:?}",
        clients
            .iter()
            .map(|c| c.connect_failed())
            .collect::<Vec<_>>()
    );
}

/// A server on loopback with `shards` shards, DH group 2 only, a short
/// shutdown grace.
pub fn loopback_config(shards: usize) -> ServerConfig {
    ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        shards,
        dh_groups: vec![2],
        shutdown_grace_secs: 1,
        ..ServerConfig::default()
    }
}

/// Starts a server on a runtime of its own: the runtime, the server and
/// its first address.
pub fn start(config: ServerConfig) -> (tokio::runtime::Runtime, Server, SocketAddr) {
    let rt = runtime();
    let server = rt.block_on(Server::start(config)).unwrap();
    let addr = server.local_addrs()[0];
    (rt, server, addr)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
