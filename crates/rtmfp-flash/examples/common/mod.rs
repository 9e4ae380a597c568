//! Shared parts of the examples: the engine on `rtmfp-tokio`'s host, a
//! [`Recorder`] that keeps the first datagrams in and out of any machine
//! (for test vectors), the key recorder and the test-vector writer.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand_core::SeedableRng;
use rtmfp::{CryptoProfile, Endpoint, EndpointConfig, Machine, SessionInfo};
use rtmfp_flash::{
    fingerprint, hex_encode, DhGroup, FlashProfile, FlashProfileBuilder, KeyLogEntry, KeyLogFn,
};

/// What an example runs beside its [`Endpoint`] in a [`Driven`] machine.
pub trait EndpointApp {
    type Event;

    /// Reacts to what the engine did; runs after every datagram and timeout.
    fn pump(&mut self, ep: &mut Endpoint, now: Instant);

    /// The next event for the machine's owner.
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// As [`Machine::handle_close`]: by default nothing happens.
    fn handle_close(&mut self, ep: &mut Endpoint, now: Instant) {
        let _ = (ep, now);
    }

    /// As [`Machine::is_done`].
    fn is_done(&self, ep: &Endpoint) -> Option<bool> {
        let _ = ep;
        None
    }
}

/// An engine with an [`EndpointApp`], as a [`Machine`] without commands
/// (everything else is called on it through the host's `with`).
#[derive(Debug)]
pub struct Driven<A> {
    pub ep: Endpoint,
    pub app: A,
}

impl<A: EndpointApp> Machine for Driven<A> {
    type Command = std::convert::Infallible;
    type Event = A::Event;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.ep.handle_datagram(now, from, data);
        self.app.pump(&mut self.ep, now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        self.app.pump(&mut self.ep, now);
    }

    fn handle_command(&mut self, _now: Instant, command: Self::Command) {
        match command {}
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.ep.poll_transmit(now, buf)
    }

    fn poll_event(&mut self) -> Option<A::Event> {
        self.app.poll_event()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.ep.poll_timeout()
    }

    fn handle_close(&mut self, now: Instant) {
        self.app.handle_close(&mut self.ep, now);
    }

    fn is_done(&self) -> Option<bool> {
        self.app.is_done(&self.ep)
    }
}

/// A datagram seen by a [`Recorder`]: `out` when its machine sent it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub out: bool,
    pub peer: SocketAddr,
    pub data: Vec<u8>,
}

/// Wraps a machine and keeps copies of the first `limit` datagrams it
/// receives and sends (nothing when `limit` is 0).
#[derive(Debug)]
pub struct Recorder<M> {
    pub inner: M,
    limit: usize,
    seen: Vec<Recorded>,
}

impl<M> Recorder<M> {
    pub fn new(inner: M, limit: usize) -> Self {
        Self {
            inner,
            limit,
            seen: Vec::with_capacity(limit),
        }
    }

    /// The datagrams recorded so far, in order.
    pub fn recorded(&self) -> &[Recorded] {
        &self.seen
    }

    fn keep(&mut self, out: bool, peer: SocketAddr, data: &[u8]) {
        if self.seen.len() < self.limit {
            self.seen.push(Recorded {
                out,
                peer,
                data: data.to_vec(),
            });
        }
    }
}

impl<M: Machine> Machine for Recorder<M> {
    type Command = M::Command;
    type Event = M::Event;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.keep(false, from, data);
        self.inner.handle_datagram(now, from, data);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
    }

    fn handle_command(&mut self, now: Instant, command: M::Command) {
        self.inner.handle_command(now, command);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let dest = self.inner.poll_transmit(now, buf)?;
        self.keep(true, dest, buf);
        Some(dest)
    }

    fn poll_event(&mut self) -> Option<M::Event> {
        self.inner.poll_event()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn handle_close(&mut self, now: Instant) {
        self.inner.handle_close(now);
    }

    fn is_done(&self) -> Option<bool> {
        self.inner.is_done()
    }
}

/// An engine seeded with `seed`, created at the host's clock.
pub fn engine(config: EndpointConfig, profile: Box<dyn CryptoProfile>, seed: u64) -> Endpoint {
    Endpoint::new(
        config,
        profile,
        Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed)),
        rtmfp_tokio::now(),
    )
}

/// A UDP socket for a host on `addr`.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    rtmfp_tokio::bind_udp(addr, false, None)
}

/// The key agreement of the first handshake, as JSON (for test vectors).
pub type KeyRecord = Arc<Mutex<Option<serde_json::Value>>>;

/// A key log callback that keeps the first handshake's details.
pub fn key_recorder() -> (KeyLogFn, KeyRecord) {
    let rec: KeyRecord = Arc::new(Mutex::new(None));
    let r2 = rec.clone();
    let f: KeyLogFn = Arc::new(move |e: &KeyLogEntry<'_>| {
        let Ok(mut g) = r2.lock() else { return };
        if g.is_none() {
            let k = e.keys;
            *g = Some(serde_json::json!({
                "role": format!("{:?}", e.role),
                "group": e.group.id(),
                "near_private_key": hex_encode(e.near_private_key),
                "near_public_key": hex_encode(e.near_public_key),
                "far_public_key": hex_encode(e.far_public_key),
                "dh_secret": hex_encode(e.dh_secret),
                "skic": hex_encode(e.skic),
                "skrc": hex_encode(e.skrc),
                "encrypt_key": hex_encode(&k.encrypt_key),
                "decrypt_key": hex_encode(&k.decrypt_key),
                "hmac_send_key": hex_encode(&k.hmac_send_key),
                "hmac_recv_key": hex_encode(&k.hmac_recv_key),
                "send_hmac_len": k.send_hmac_len,
                "recv_hmac_len": k.recv_hmac_len,
                "send_sseq": k.send_sseq,
                "recv_sseq": k.recv_sseq,
                "near_nonce": hex_encode(&k.near_nonce),
                "far_nonce": hex_encode(&k.far_nonce),
            }));
        }
    });
    (f, rec)
}

/// The first handshake's keys, if recorded.
pub fn keys_of(keys: &KeyRecord) -> Option<serde_json::Value> {
    keys.lock().ok().and_then(|g| g.clone())
}

/// Prints an opened session's details: the far end's peer ID (`far` names it),
/// the nonces and, if recorded, the negotiated keys.
pub fn print_session(far: &str, info: &SessionInfo, keys: &KeyRecord) {
    println!("  {far} peer ID: {}", fingerprint(&info.far_certificate));
    println!("  near nonce: {}", hex_encode(&info.near_nonce));
    println!("  far nonce:  {}", hex_encode(&info.far_nonce));
    if let Some(k) = keys_of(keys) {
        println!(
            "  group {}, send HMAC {} / recv HMAC {}, send SSEQ {} / recv SSEQ {}",
            k["group"], k["send_hmac_len"], k["recv_hmac_len"], k["send_sseq"], k["recv_sseq"]
        );
    }
}

/// Writes a test vector: the recorded datagrams and the keys.
pub fn write_vector(
    path: &str,
    description: &str,
    datagrams: &[Recorded],
    keys: &KeyRecord,
) -> io::Result<()> {
    let datagrams: Vec<serde_json::Value> = datagrams
        .iter()
        .map(|d| {
            serde_json::json!({
                "dir": if d.out { "out" } else { "in" },
                "data": hex_encode(&d.data),
            })
        })
        .collect();
    let v = serde_json::json!({
        "description": description,
        "keys": keys_of(keys),
        "datagrams": datagrams,
    });
    std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
}

/// An example's command line; a mistake prints its usage line and exits.
#[derive(Debug)]
pub struct Args {
    args: std::iter::Skip<std::env::Args>,
    usage: &'static str,
}

impl Args {
    /// The arguments after the program name; `usage` lists the options.
    pub fn new(usage: &'static str) -> Self {
        Args {
            args: std::env::args().skip(1),
            usage,
        }
    }

    /// The next argument.
    pub fn next_arg(&mut self) -> Option<String> {
        self.args.next()
    }

    /// The value after an option (the usage line when there is none).
    pub fn value(&mut self) -> String {
        self.next_arg().unwrap_or_else(|| self.usage())
    }

    /// Prints the usage line and exits with status 2.
    pub fn usage(&self) -> ! {
        eprintln!("usage: {}", self.usage);
        std::process::exit(2)
    }
}

/// The server address of an `rtmfp://HOST:PORT/…` URI, resolved.
pub fn resolve_rtmfp_uri(uri: &str) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let authority = uri["rtmfp://".len()..]
        .split('/')
        .next()
        .unwrap_or_default();
    let server = authority
        .to_socket_addrs()?
        .next()
        .ok_or("cannot resolve the server address")?;
    Ok(server)
}

/// The any-address of `server`'s family, port 0: where a client binds.
pub fn any_address_for(server: SocketAddr) -> SocketAddr {
    if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// Builds a profile with the example's `--group` choice and, with `key_log`,
/// recording the session keys; prints its peer ID. Returns the random
/// generator too, for the engine's seed.
pub fn build_profile(
    mut builder: FlashProfileBuilder,
    groups: Option<&[DhGroup]>,
    key_log: Option<KeyLogFn>,
) -> Result<(FlashProfile, rand_chacha::ChaCha20Rng), Box<dyn std::error::Error>> {
    if let Some(g) = groups {
        builder = builder.groups(g);
    }
    if let Some(f) = key_log {
        builder = builder.key_log(f);
    }
    let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
    let profile = builder.build(&mut rng)?;
    println!("my peer ID: {}", profile.peer_id());
    Ok((profile, rng))
}
