//! Shared parts of the examples: a minimal blocking UDP driver for one
//! engine on one std socket (after `nimbus`'s `udp.rs`), a datagram
//! recorder and the test-vector writer.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use rtmfp::{CryptoProfile, Endpoint, EndpointConfig};
use rtmfp_flash::{hex_encode, KeyLogEntry, KeyLogFn};

/// An engine bound to a UDP socket.
pub struct UdpNode {
    pub ep: Endpoint,
    sock: UdpSocket,
    out: Vec<u8>,
    rbuf: Vec<u8>,
    /// Datagrams seen (`out` = sent by us), when recording.
    pub record: Option<Vec<(bool, SocketAddr, Vec<u8>)>>,
    pub record_limit: usize,
}

impl UdpNode {
    pub fn bind(
        addr: SocketAddr,
        config: EndpointConfig,
        profile: Box<dyn CryptoProfile>,
        seed: u64,
    ) -> io::Result<Self> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_nonblocking(true)?;
        let ep = Endpoint::new(
            config,
            profile,
            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed)),
            Instant::now(),
        );
        Ok(Self {
            ep,
            sock,
            out: Vec::with_capacity(2048),
            rbuf: vec![0; 65536],
            record: None,
            record_limit: 10,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    fn log(&mut self, out: bool, peer: SocketAddr, data: &[u8]) {
        if let Some(r) = self.record.as_mut() {
            if r.len() < self.record_limit {
                r.push((out, peer, data.to_vec()));
            }
        }
    }

    /// Sends everything the engine has to send.
    pub fn flush(&mut self) -> io::Result<usize> {
        let mut n = 0;
        let now = Instant::now();
        while let Some(dst) = self.ep.poll_transmit(now, &mut self.out) {
            let d = std::mem::take(&mut self.out);
            self.log(true, dst, &d);
            loop {
                match self.sock.send_to(&d, dst) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                    // a destination this socket cannot reach (e.g. an IPv6
                    // candidate on an IPv4 socket): that datagram is lost
                    Err(e)
                        if e.raw_os_error() == Some(97)
                            || matches!(
                                e.kind(),
                                io::ErrorKind::NetworkUnreachable
                                    | io::ErrorKind::HostUnreachable
                                    | io::ErrorKind::InvalidInput
                            ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e),
                }
            }
            self.out = d;
            n += 1;
        }
        Ok(n)
    }

    fn received(&mut self, n: usize, from: SocketAddr) {
        let data = self.rbuf[..n].to_vec();
        self.log(false, from, &data);
        self.ep.handle_datagram(Instant::now(), from, &data);
    }

    /// One turn of the run loop: receive a batch, run timers, transmit.
    /// Waits up to `max_wait` when there was nothing to do.
    pub fn turn(&mut self, max_wait: Duration) -> io::Result<bool> {
        let mut got = 0;
        while got < 64 {
            match self.sock.recv_from(&mut self.rbuf) {
                Ok((n, from)) => {
                    self.received(n, from);
                    got += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
        if self.ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            self.ep.handle_timeout(Instant::now());
        }
        let sent = self.flush()?;
        if got == 0 && sent == 0 && !max_wait.is_zero() {
            let wait = match self.ep.poll_timeout() {
                Some(t) => t.saturating_duration_since(Instant::now()).min(max_wait),
                None => max_wait,
            };
            if !wait.is_zero() {
                self.sock.set_nonblocking(false)?;
                self.sock.set_read_timeout(Some(wait))?;
                let r = self.sock.recv_from(&mut self.rbuf);
                self.sock.set_nonblocking(true)?;
                match r {
                    Ok((n, from)) => {
                        self.received(n, from);
                        got = 1;
                        self.flush()?;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::ConnectionRefused
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(got > 0 || sent > 0)
    }
}

/// The key agreement of the first handshake, as JSON (for test vectors).
pub type KeyRecord = Arc<Mutex<Option<serde_json::Value>>>;

/// A key log callback that keeps the first handshake's details.
pub fn key_recorder() -> (KeyLogFn, KeyRecord) {
    let rec: KeyRecord = Arc::new(Mutex::new(None));
    let r2 = rec.clone();
    let f: KeyLogFn = Arc::new(move |e: &KeyLogEntry<'_>| {
        let mut g = r2.lock().unwrap();
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

/// Writes a test vector: the recorded datagrams and the keys.
pub fn write_vector(
    path: &str,
    description: &str,
    node: &UdpNode,
    keys: &KeyRecord,
) -> io::Result<()> {
    let datagrams: Vec<serde_json::Value> = node
        .record
        .iter()
        .flatten()
        .map(|(out, _, d)| {
            serde_json::json!({
                "dir": if *out { "out" } else { "in" },
                "data": hex_encode(d),
            })
        })
        .collect();
    let v = serde_json::json!({
        "description": description,
        "keys": keys.lock().unwrap().clone(),
        "datagrams": datagrams,
    });
    std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
}
