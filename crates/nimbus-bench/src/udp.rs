//! A minimal blocking UDP driver for one engine on one socket, used by the
//! benchmarks and the demo to measure the engine itself over real loopback
//! UDP (the production async driver is `rtmfp-tokio`).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use rtmfp::{CryptoProfile, Endpoint, EndpointConfig};

/// An engine bound to a UDP socket.
#[derive(Debug)]
pub(crate) struct UdpNode {
    pub(crate) ep: Endpoint,
    sock: UdpSocket,
    out: Vec<u8>,
    rbuf: Vec<u8>,
    pub(crate) sent: u64,
    pub(crate) received: u64,
}

impl UdpNode {
    pub(crate) fn bind(
        addr: SocketAddr,
        config: EndpointConfig,
        profile: Box<dyn CryptoProfile>,
        seed: u64,
    ) -> io::Result<Self> {
        let sock = UdpSocket::bind(addr)?;
        // large buffers: a burst of handshakes must not overflow the socket
        let s2 = socket2::SockRef::from(&sock);
        let _ = s2.set_recv_buffer_size(4 << 20);
        let _ = s2.set_send_buffer_size(4 << 20);
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
            sent: 0,
            received: 0,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Sends everything the engine has to send.
    pub(crate) fn flush(&mut self) -> io::Result<usize> {
        let mut n = 0;
        let now = Instant::now();
        while let Some(dst) = self.ep.poll_transmit(now, &mut self.out) {
            loop {
                match self.sock.send_to(&self.out, dst) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                    Err(e) => return Err(e),
                }
            }
            n += 1;
        }
        self.sent += n as u64;
        Ok(n)
    }

    /// One turn of the run loop: receive a batch, run timers, transmit.
    /// Waits up to `max_wait` when there was nothing to do.
    pub(crate) fn turn(&mut self, max_wait: Duration) -> io::Result<bool> {
        let mut got = 0;
        let now = Instant::now();
        while got < 64 {
            match self.sock.recv_from(&mut self.rbuf) {
                Ok((n, from)) => {
                    self.ep.handle_datagram(now, from, &self.rbuf[..n]);
                    got += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
        self.received += got as u64;
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
                        self.ep
                            .handle_datagram(Instant::now(), from, &self.rbuf[..n]);
                        self.received += 1;
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
