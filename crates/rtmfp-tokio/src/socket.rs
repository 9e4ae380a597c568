//! The UDP socket owned by the driver: batched receive (recvmmsg / GRO) and
//! batched send (GSO) through `quinn-udp`, with reusable buffers.
//!
//! Nothing here knows about RTMFP: it moves opaque datagrams between the
//! socket and closures supplied by the driver.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tracing::{debug, trace};

/// Size of one receive slot: the largest UDP payload, which is also the
/// largest GRO super-datagram the kernel hands out.
const RX_SLOT: usize = 64 * 1024;

/// Largest number of bytes put in one GSO send (the segments of one
/// `sendmsg` must fit an IP datagram).
const MAX_GSO_BYTES: usize = 64_000;

/// Largest number of segments in one GSO send (`UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = 64;

/// Scratch capacity for one datagram produced by the engine.
const SCRATCH_CAPACITY: usize = 2048;

/// Counters of the socket layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStats {
    /// Datagrams handed to the kernel (one GSO send counts its segments).
    pub datagrams_sent: u64,
    /// Payload bytes handed to the kernel.
    pub bytes_sent: u64,
    /// Send system calls (`sendmsg`), each carrying one or more datagrams.
    pub send_calls: u64,
    /// Datagrams dropped because sending failed with an error other than
    /// "would block" (unreachable destination, message too big, ...).
    pub send_errors: u64,
    /// Datagrams received (GRO super-datagrams count their segments).
    pub datagrams_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Receive system calls (`recvmmsg`) that returned data.
    pub recv_calls: u64,
    /// Largest number of datagrams moved by one send call so far.
    pub max_send_batch: u64,
    /// Largest number of datagrams moved by one receive call so far.
    pub max_recv_batch: u64,
}

/// Outcome of [`UdpIo::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// The producer has nothing more to send.
    Drained,
    /// The socket buffer is full: wait for writability and call again.
    Blocked,
    /// The per-call budget ran out; call again soon.
    Budget,
}

/// A datagram batch being assembled for one GSO send.
#[derive(Debug)]
struct TxBatch {
    buf: Vec<u8>,
    dest: SocketAddr,
    segment: usize,
    count: usize,
    /// The last segment was shorter than `segment`: nothing may follow it.
    sealed: bool,
}

impl TxBatch {
    fn can_append(&self, dest: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.count > 0
            && !self.sealed
            && dest == self.dest
            && len <= self.segment
            && self.count < max_segments
            && self.buf.len() + len <= MAX_GSO_BYTES
    }

    fn append(&mut self, dest: SocketAddr, data: &[u8]) {
        if self.count == 0 {
            self.buf.clear();
            self.dest = dest;
            self.segment = data.len();
            self.sealed = false;
        } else if data.len() < self.segment {
            self.sealed = true;
        }
        self.buf.extend_from_slice(data);
        self.count += 1;
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.sealed = false;
    }
}

/// The driver's socket with its batching state and reusable buffers.
#[derive(Debug)]
pub(crate) struct UdpIo {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    rx_buf: Box<[u8]>,
    rx_meta: [RecvMeta; BATCH_SIZE],
    tx: TxBatch,
    /// A datagram taken from the producer that did not fit the blocked
    /// batch; sent first once the socket is writable again.
    carry: Option<SocketAddr>,
    scratch: Vec<u8>,
    stats: IoStats,
}

impl UdpIo {
    /// Wraps a bound std socket (it is switched to non-blocking mode).
    /// Must be called inside a tokio runtime.
    pub(crate) fn new(socket: std::net::UdpSocket, buffer_size: Option<usize>) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let state = UdpSocketState::new((&socket).into())?;
        if let Some(size) = buffer_size {
            // Best effort: the kernel clamps to its limits.
            if let Err(e) = state.set_recv_buffer_size((&socket).into(), size) {
                debug!("could not set the socket receive buffer: {e}");
            }
            if let Err(e) = state.set_send_buffer_size((&socket).into(), size) {
                debug!("could not set the socket send buffer: {e}");
            }
        }
        let local = socket.local_addr()?;
        debug!(
            %local,
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            batch = BATCH_SIZE,
            "socket ready"
        );
        Ok(Self {
            socket,
            state,
            local,
            rx_buf: vec![0u8; RX_SLOT * BATCH_SIZE].into_boxed_slice(),
            rx_meta: [RecvMeta::default(); BATCH_SIZE],
            tx: TxBatch {
                buf: Vec::with_capacity(MAX_GSO_BYTES + SCRATCH_CAPACITY),
                dest: local,
                segment: 0,
                count: 0,
                sealed: false,
            },
            carry: None,
            scratch: Vec::with_capacity(SCRATCH_CAPACITY),
            stats: IoStats::default(),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn stats(&self) -> IoStats {
        self.stats
    }

    /// Waits until the socket may be readable.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Waits until the socket may be writable.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.socket.writable().await
    }

    /// Receives one batch of datagrams without blocking and hands each one
    /// (GRO super-datagrams split into their segments) to `deliver`.
    /// Returns the number of datagrams delivered; `WouldBlock` when there
    /// was nothing to read.
    pub(crate) fn try_recv(
        &mut self,
        mut deliver: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let Self {
            socket,
            state,
            rx_buf,
            rx_meta,
            stats,
            ..
        } = self;
        let mut slots = rx_buf.chunks_mut(RX_SLOT);
        let mut bufs: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
        let n = socket.try_io(Interest::READABLE, || {
            state.recv((&*socket).into(), &mut bufs, rx_meta)
        })?;
        stats.recv_calls += 1;
        let mut delivered = 0usize;
        for (meta, buf) in rx_meta.iter().zip(bufs.iter()).take(n) {
            let len = meta.len.min(buf.len());
            let data = &buf[..len];
            let stride = if meta.stride == 0 {
                len.max(1)
            } else {
                meta.stride
            };
            let from = canonical(meta.addr);
            for segment in data.chunks(stride) {
                deliver(from, segment);
                delivered += 1;
            }
            stats.bytes_received += len as u64;
        }
        stats.datagrams_received += delivered as u64;
        stats.max_recv_batch = stats.max_recv_batch.max(delivered as u64);
        Ok(delivered)
    }

    /// Sends datagrams pulled from `produce` (which fills the buffer it is
    /// given and returns the destination, like the engine's
    /// `poll_transmit`), coalescing runs of same-destination, same-size
    /// datagrams into GSO sends. Pulls at most `budget` datagrams.
    pub(crate) fn flush(
        &mut self,
        budget: usize,
        mut produce: impl FnMut(&mut Vec<u8>) -> Option<SocketAddr>,
    ) -> Flush {
        // Finish what an earlier call left behind.
        if self.tx.count > 0 && !self.send_batch() {
            return Flush::Blocked;
        }
        if let Some(dest) = self.carry.take() {
            self.tx.append(dest, &self.scratch);
        }
        let max_segments = self.state.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS);
        for _ in 0..budget {
            let Some(dest) = produce(&mut self.scratch) else {
                return if self.tx.count > 0 && !self.send_batch() {
                    Flush::Blocked
                } else {
                    Flush::Drained
                };
            };
            if self.scratch.is_empty() {
                continue;
            }
            let Some(dest) = self.socket_addr_for(dest) else {
                trace!(%dest, "dropping datagram for an address family this socket cannot reach");
                self.stats.send_errors += 1;
                continue;
            };
            if self.tx.count > 0
                && !self.tx.can_append(dest, self.scratch.len(), max_segments)
                && !self.send_batch()
            {
                self.carry = Some(dest);
                return Flush::Blocked;
            }
            self.tx.append(dest, &self.scratch);
        }
        if self.tx.count > 0 && !self.send_batch() {
            return Flush::Blocked;
        }
        Flush::Budget
    }

    /// Sends the assembled batch. Returns false when the socket would block
    /// (the batch is kept); any other outcome consumes the batch.
    fn send_batch(&mut self) -> bool {
        let count = self.tx.count;
        let transmit = Transmit {
            destination: self.tx.dest,
            ecn: None,
            contents: &self.tx.buf,
            segment_size: (count > 1).then_some(self.tx.segment),
            src_ip: None,
        };
        let result = self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.socket).into(), &transmit)
        });
        match result {
            Ok(()) => {
                self.stats.send_calls += 1;
                self.stats.datagrams_sent += count as u64;
                self.stats.bytes_sent += self.tx.buf.len() as u64;
                self.stats.max_send_batch = self.stats.max_send_batch.max(count as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                // UDP is unreliable anyway: the engine retransmits.
                debug!(dest = %self.tx.dest, count, "send failed: {e}");
                self.stats.send_errors += count as u64;
            }
        }
        self.tx.reset();
        true
    }

    /// The address to hand the kernel for `dest`: IPv4 destinations become
    /// IPv4-mapped IPv6 on an IPv6 socket; IPv4-mapped destinations become
    /// plain IPv4 on an IPv4 socket.
    fn socket_addr_for(&self, dest: SocketAddr) -> Option<SocketAddr> {
        match (self.local, dest) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => Some(SocketAddr::V6(SocketAddrV6::new(
                v4.ip().to_ipv6_mapped(),
                v4.port(),
                0,
                0,
            ))),
            (SocketAddr::V4(_), SocketAddr::V6(v6)) => v6
                .ip()
                .to_ipv4_mapped()
                .map(|ip| SocketAddr::V4(SocketAddrV4::new(ip, v6.port()))),
            _ => Some(dest),
        }
    }
}

/// Peer addresses are reported in canonical form: IPv4-mapped IPv6
/// addresses (seen on dual-stack sockets) become plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::V4(SocketAddrV4::new(ip, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_unmaps_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(
            canonical(mapped),
            "127.0.0.1:5000".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn batch_rules() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut t = TxBatch {
            buf: Vec::new(),
            dest: a,
            segment: 0,
            count: 0,
            sealed: false,
        };
        assert!(!t.can_append(a, 10, 64));
        t.append(a, &[0; 100]);
        assert!(t.can_append(a, 100, 64));
        assert!(t.can_append(a, 50, 64));
        assert!(!t.can_append(a, 101, 64));
        assert!(!t.can_append(b, 100, 64));
        assert!(!t.can_append(a, 100, 1));
        t.append(a, &[0; 50]);
        assert!(t.sealed);
        assert!(!t.can_append(a, 10, 64));
        t.reset();
        assert_eq!(t.count, 0);
    }
}
