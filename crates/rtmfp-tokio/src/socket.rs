//! One UDP socket of a host: batched receive (recvmmsg / GRO) and batched
//! send (GSO) through `quinn-udp`, with reusable buffers.
//!
//! Nothing here knows about RTMFP or machines: it moves opaque datagrams
//! between the socket and the host.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tracing::{debug, trace};

/// Size of one receive slot when the kernel coalesces datagrams (GRO): the
/// largest UDP payload, which is also the largest super-datagram.
const RX_SLOT_GRO: usize = 64 * 1024;

/// Size of one receive slot without GRO: more than any RTMFP datagram
/// (larger ones are truncated, and then fail authentication).
const RX_SLOT_PLAIN: usize = 4096;

/// Largest number of bytes put in one GSO send (the segments of one
/// `sendmsg` must fit an IP datagram).
const MAX_GSO_BYTES: usize = 64_000;

/// Largest number of segments in one GSO send (`UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = 64;

/// Counters of a host's sockets. Read them at any time from
/// [`HostHandle::stats`](crate::HostHandle::stats).
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
    /// "would block" (unreachable destination, message too big, an address
    /// family no socket of the host can reach...).
    pub send_errors: u64,
    /// Times a socket was full and the host waited for it to drain.
    pub send_blocked: u64,
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
    /// Received datagrams the impairment stage dropped.
    pub impaired_drops: u64,
    /// Received datagrams the impairment stage delayed.
    pub impaired_delays: u64,
    /// Receive calls that failed with an error other than "would block"
    /// (ICMP errors surfaced by the kernel, mostly).
    pub recv_errors: u64,
}

impl std::ops::AddAssign for IoStats {
    /// Sums the counters of several hosts (the largest batches are maxima).
    fn add_assign(&mut self, o: IoStats) {
        self.datagrams_sent += o.datagrams_sent;
        self.bytes_sent += o.bytes_sent;
        self.send_calls += o.send_calls;
        self.send_errors += o.send_errors;
        self.send_blocked += o.send_blocked;
        self.datagrams_received += o.datagrams_received;
        self.bytes_received += o.bytes_received;
        self.recv_calls += o.recv_calls;
        self.max_send_batch = self.max_send_batch.max(o.max_send_batch);
        self.max_recv_batch = self.max_recv_batch.max(o.max_recv_batch);
        self.impaired_drops += o.impaired_drops;
        self.impaired_delays += o.impaired_delays;
        self.recv_errors += o.recv_errors;
    }
}

impl IoStats {
    /// Datagrams per send system call (1.0 when nothing was batched).
    pub fn datagrams_per_send(&self) -> f64 {
        self.datagrams_sent as f64 / self.send_calls.max(1) as f64
    }

    /// Datagrams per receive system call.
    pub fn datagrams_per_recv(&self) -> f64 {
        self.datagrams_received as f64 / self.recv_calls.max(1) as f64
    }
}

/// The live counters behind [`IoStats`], shared between a host and its
/// handles (updated once per batch, not per datagram).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    datagrams_sent: AtomicU64,
    bytes_sent: AtomicU64,
    send_calls: AtomicU64,
    send_errors: AtomicU64,
    send_blocked: AtomicU64,
    datagrams_received: AtomicU64,
    bytes_received: AtomicU64,
    recv_calls: AtomicU64,
    max_send_batch: AtomicU64,
    max_recv_batch: AtomicU64,
    pub(crate) impaired_drops: AtomicU64,
    pub(crate) impaired_delays: AtomicU64,
    recv_errors: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> IoStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IoStats {
            datagrams_sent: g(&self.datagrams_sent),
            bytes_sent: g(&self.bytes_sent),
            send_calls: g(&self.send_calls),
            send_errors: g(&self.send_errors),
            send_blocked: g(&self.send_blocked),
            datagrams_received: g(&self.datagrams_received),
            bytes_received: g(&self.bytes_received),
            recv_calls: g(&self.recv_calls),
            max_send_batch: g(&self.max_send_batch),
            max_recv_batch: g(&self.max_recv_batch),
            impaired_drops: g(&self.impaired_drops),
            impaired_delays: g(&self.impaired_delays),
            recv_errors: g(&self.recv_errors),
        }
    }

    pub(crate) fn add_send_error(&self, n: u64) {
        add(&self.send_errors, n);
    }

    pub(crate) fn add_recv_error(&self) {
        add(&self.recv_errors, 1);
    }

    pub(crate) fn add_blocked(&self) {
        add(&self.send_blocked, 1);
    }
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

/// A socket with its batching state and reusable buffers.
#[derive(Debug)]
pub(crate) struct UdpIo {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    rx_buf: Box<[u8]>,
    rx_slot: usize,
    rx_meta: Box<[RecvMeta]>,
    tx: TxBatch,
    /// A datagram that did not fit the batch while the socket was full;
    /// sent first once the socket is writable again.
    carry: Option<(SocketAddr, Vec<u8>)>,
    max_segments: usize,
}

impl UdpIo {
    /// Wraps a bound std socket (it is switched to non-blocking mode).
    /// Must be called inside a tokio runtime. `recv_batch` is the number
    /// of datagrams (or GRO super-datagrams) one receive call can take.
    pub(crate) fn new(
        socket: std::net::UdpSocket,
        buffer_size: Option<usize>,
        recv_batch: usize,
    ) -> io::Result<Self> {
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
        let batch = recv_batch.clamp(1, BATCH_SIZE);
        let rx_slot = if state.gro_segments() > 1 {
            RX_SLOT_GRO
        } else {
            RX_SLOT_PLAIN
        };
        let max_segments = state.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS);
        debug!(
            %local,
            gso_segments = max_segments,
            gro_segments = state.gro_segments(),
            batch,
            "socket ready"
        );
        Ok(Self {
            socket,
            state,
            local,
            rx_buf: vec![0u8; rx_slot * batch].into_boxed_slice(),
            rx_slot,
            rx_meta: vec![RecvMeta::default(); batch].into_boxed_slice(),
            tx: TxBatch {
                buf: Vec::with_capacity(if max_segments > 1 {
                    MAX_GSO_BYTES + 2048
                } else {
                    2048
                }),
                dest: local,
                segment: 0,
                count: 0,
                sealed: false,
            },
            carry: None,
            max_segments,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Polls for read readiness (registers the waker when not ready).
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_recv_ready(cx)
    }

    /// Polls for write readiness.
    pub(crate) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_send_ready(cx)
    }

    /// Whether this socket has datagrams waiting to go out.
    pub(crate) fn has_pending(&self) -> bool {
        self.tx.count > 0 || self.carry.is_some()
    }

    /// Receives one batch of datagrams without blocking and hands each one
    /// (GRO super-datagrams split into their segments) to `deliver`.
    /// Returns the number of datagrams delivered; `WouldBlock` when there
    /// was nothing to read.
    pub(crate) fn try_recv(
        &mut self,
        counters: &Counters,
        mut deliver: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let Self {
            socket,
            state,
            rx_buf,
            rx_meta,
            rx_slot,
            ..
        } = self;
        let mut slots = rx_buf.chunks_mut(*rx_slot);
        let mut bufs: Vec<IoSliceMut<'_>> = Vec::with_capacity(rx_meta.len());
        for _ in 0..rx_meta.len() {
            bufs.push(IoSliceMut::new(slots.next().unwrap_or_default()));
        }
        let n = socket.try_io(Interest::READABLE, || {
            state.recv((&*socket).into(), &mut bufs, rx_meta)
        })?;
        let mut delivered = 0u64;
        let mut bytes = 0u64;
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
            bytes += len as u64;
        }
        add(&counters.recv_calls, 1);
        add(&counters.datagrams_received, delivered);
        add(&counters.bytes_received, bytes);
        counters
            .max_recv_batch
            .fetch_max(delivered, Ordering::Relaxed);
        Ok(delivered as usize)
    }

    /// Queues one datagram, sending the assembled batch first when the
    /// datagram cannot join it. Returns false when the socket is full: the
    /// datagram is then kept and goes first once the socket drains
    /// ([`drain`](Self::drain)); nothing is dropped.
    pub(crate) fn push(&mut self, dest: SocketAddr, data: &[u8], counters: &Counters) -> bool {
        debug_assert!(self.carry.is_none());
        if self.tx.count > 0
            && !self.tx.can_append(dest, data.len(), self.max_segments)
            && !self.send_batch(counters)
        {
            self.carry = Some((dest, data.to_vec()));
            return false;
        }
        self.tx.append(dest, data);
        if self.tx.count >= self.max_segments || self.max_segments == 1 {
            // Full batch (or no GSO): send now; a full socket keeps it.
            let _ = self.send_batch(counters);
        }
        true
    }

    /// Sends what is queued (the batch, then a carried datagram). Returns
    /// false while the socket is full.
    pub(crate) fn drain(&mut self, counters: &Counters) -> bool {
        if self.tx.count > 0 && !self.send_batch(counters) {
            return false;
        }
        if let Some((dest, data)) = self.carry.take() {
            self.tx.append(dest, &data);
            if !self.send_batch(counters) {
                return false;
            }
        }
        true
    }

    /// Sends the assembled batch. Returns false when the socket would block
    /// (the batch is kept); any other outcome consumes the batch.
    fn send_batch(&mut self, counters: &Counters) -> bool {
        if self.tx.count == 0 {
            return true;
        }
        let count = self.tx.count as u64;
        let dest = self.socket_addr_for(self.tx.dest);
        let Some(dest) = dest else {
            trace!(dest = %self.tx.dest, "dropping datagrams for an address family this socket cannot reach");
            counters.add_send_error(count);
            self.tx.reset();
            return true;
        };
        let transmit = Transmit {
            destination: dest,
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
                add(&counters.send_calls, 1);
                add(&counters.datagrams_sent, count);
                add(&counters.bytes_sent, self.tx.buf.len() as u64);
                counters.max_send_batch.fetch_max(count, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                // UDP is unreliable anyway: the engine retransmits.
                debug!(%dest, count, "send failed: {e}");
                counters.add_send_error(count);
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

    /// Whether this socket can send to `dest`.
    pub(crate) fn reaches(&self, dest: SocketAddr) -> bool {
        self.socket_addr_for(dest).is_some()
    }
}

/// Peer addresses are reported in canonical form: IPv4-mapped IPv6
/// addresses (seen on dual-stack sockets) become plain IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::V4(SocketAddrV4::new(ip, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Binds a UDP socket for a host: `SO_REUSEPORT` when asked (so that
/// several hosts, one per thread, share a port and the kernel spreads
/// peers over them), IPv6 sockets IPv6-only (bind `0.0.0.0` and `[::]`
/// side by side), kernel buffers of `buffer` bytes where allowed.
///
/// # Errors
/// When the socket cannot be created, configured or bound.
pub fn bind_udp(
    addr: SocketAddr,
    reuse_port: bool,
    buffer: Option<usize>,
) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse_port {
        #[cfg(unix)]
        s.set_reuse_port(true)?;
    }
    if let Some(size) = buffer {
        // Best effort: the kernel clamps to its limits.
        let _ = s.set_recv_buffer_size(size);
        let _ = s.set_send_buffer_size(size);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
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
