//! Shared parts of the examples: the engine on `rtmfp-tokio`'s host, a
//! [`Recorder`] that keeps the first datagrams in and out of any machine
//! (for test vectors), the key recorder and the test-vector writer.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand_core::SeedableRng;
use rtmfp::{CryptoProfile, Endpoint, EndpointConfig, Machine};
use rtmfp_flash::{hex_encode, KeyLogEntry, KeyLogFn};

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
