//! Endpoint configuration.

use std::time::Duration;

/// Tunables of an [`Endpoint`](crate::Endpoint). `Default` follows the
/// RFC 7016 recommendations.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Largest UDP payload we send (bytes). Packets are assembled to fit.
    pub max_datagram_size: usize,
    /// Largest startup datagram (IHello, RHello, IIKeying, RIKeying...)
    /// sent whole; larger startup packets are split with Packet Fragment
    /// chunks (§3.4). Kept above `max_datagram_size` because several
    /// implementations do not reassemble fragments and certificates with
    /// static keys make IIKeying large.
    pub max_startup_datagram_size: usize,
    /// Ultimate open timeout for an opening session (§3.5.1.1.1; 95 s).
    pub open_timeout: Duration,
    /// First IHello / IIKeying retransmission interval (§3.5.1.1.1).
    pub handshake_retry: Duration,
    /// How long a responder cookie stays valid (at least 95 s, §3.5.1.1.2).
    pub cookie_lifetime: Duration,
    /// Most candidate addresses of an opening session (REDIRECT_THRESHOLD).
    pub redirect_threshold: usize,
    /// Send a keepalive Ping after this long without receiving anything.
    pub keepalive_interval: Duration,
    /// Close a session abruptly after this long without receiving anything.
    pub idle_timeout: Duration,
    /// Default receive buffer capacity of a new receiving flow (bytes).
    pub recv_buffer: usize,
    /// Most bytes of unacknowledged messages queued on one sending flow
    /// before [`send`](crate::Endpoint::send) refuses more.
    pub send_buffer: usize,
    /// Pace packets at the congestion window's rate instead of the RFC's
    /// fixed six-packet burst limit (§3.5.2.3).
    pub pacing: bool,
    /// Most packets with user data sent between acknowledgements when not
    /// pacing (§3.5.2.3 recommends 6).
    pub max_burst_packets: u32,
    /// Most sending flows plus receiving flows per session.
    pub max_flows_per_session: usize,
    /// Most sessions (open or opening) at once.
    pub max_sessions: usize,
    /// Most startup packets queued for sending (excess is dropped).
    pub max_startup_queue: usize,
    /// Session IDs are `(shard << (32 - shard_bits)) | random`, so a packet
    /// can be routed to the shard that owns its session with
    /// [`datagram_shard`](crate::datagram_shard). 0 = no sharding; at most
    /// [`MAX_SHARD_BITS`](crate::MAX_SHARD_BITS) (16) bits are used. Each
    /// shard has 2^(32 - `shard_bits`) - 1 session IDs, which also bounds
    /// its sessions.
    pub shard_bits: u8,
    /// This endpoint's shard number (less than `1 << shard_bits`; higher
    /// bits are ignored).
    pub shard: u32,
    /// Report IHellos whose EPD does not select this endpoint as
    /// [`Event::IHelloForOther`](crate::Event::IHelloForOther) (for
    /// redirectors and forwarders). When false they are ignored.
    pub report_foreign_ihello: bool,
    /// Answer Forwarded IHellos (§3.5.1.5) so NAT hole punching works.
    pub accept_forwarded_ihello: bool,
    /// Accept incoming sessions (act as a responder).
    pub accept_sessions: bool,
    /// Anti-amplification limit: before an address is proven (by an
    /// IIKeying echoing our cookie), everything sent to it in answer (RHello,
    /// RHello Cookie Change, Redirect; not RIKeying, which the cookie
    /// allows) is at most this many times the bytes of all the startup
    /// datagrams it sent us (counted per address in a bounded table, like
    /// QUIC's limit); 0 = no limit (the default, for peers).
    ///
    /// Servers should use 3. Sizes with the RFC 7425 profile
    /// (`rtmfp_flash::FlashProfile::server`): the server certificate is 77
    /// bytes without a hostname (79 + *h* with one), an RHello 180 bytes; a
    /// Flash IHello is 52 bytes for server URIs of up to 21 bytes, 68 up to
    /// 37 bytes, 100 for 57 bytes. So at factor 3 a client whose EPD is
    /// very short (librtmfp sends the bare app name) is answered at its
    /// first IHello retransmission, every other client at once.
    pub amplification_factor: usize,
    /// IHellos accepted per second from one source (an IPv4 address or an
    /// IPv6 /64), as a token bucket refilled at this rate; 0 = unlimited.
    /// Excess IHellos are dropped silently
    /// ([`EndpointStats::ihello_rate_drops`](crate::EndpointStats)).
    pub ihello_rate_per_source: u32,
    /// Size of each source's IHello token bucket (burst).
    pub ihello_burst_per_source: u32,
    /// Most sources tracked by the IHello rate limiter; when full, the
    /// least recently active source is forgotten (second-chance eviction,
    /// O(1) per packet).
    pub max_rate_limit_entries: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            max_datagram_size: 1200,
            max_startup_datagram_size: 1472,
            open_timeout: Duration::from_secs(95),
            handshake_retry: Duration::from_millis(1500),
            cookie_lifetime: Duration::from_secs(120),
            redirect_threshold: 24,
            keepalive_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            recv_buffer: 1 << 20,
            send_buffer: 4 << 20,
            pacing: true,
            max_burst_packets: 6,
            max_flows_per_session: 4096,
            max_sessions: 1 << 20,
            max_startup_queue: 4096,
            shard_bits: 0,
            shard: 0,
            report_foreign_ihello: false,
            accept_forwarded_ihello: true,
            accept_sessions: true,
            amplification_factor: 0,
            ihello_rate_per_source: 20,
            ihello_burst_per_source: 40,
            max_rate_limit_entries: 65536,
        }
    }
}
