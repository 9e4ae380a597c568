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
    /// Anti-amplification limit: before an initiator's address is proven
    /// (by an IIKeying echoing our cookie), an answer to it (RHello, RHello
    /// Cookie Change, Redirect) is not sent when it is larger than this many
    /// times the datagram that triggered it; 0 = no limit. RIKeying is not
    /// limited: the cookie proved the address.
    ///
    /// Default 0 (off) so that existing configurations keep working:
    /// a server whose certificate carries static Diffie-Hellman keys
    /// (RFC 7425 §4.3.3.5) sends RHellos of several hundred bytes (a
    /// 128 to 512-byte public key per group), more than any small factor
    /// of a 52-byte IHello allows. **Servers with ephemeral keys should set
    /// 4** (not 3): with the RFC 7425 profile
    /// (`rtmfp_flash::FlashProfile::server`) the server certificate is 77
    /// bytes without a hostname (hostname of *h* bytes: 79 + *h*), so an
    /// RHello datagram is 180 bytes (196 with a 17-byte hostname, 228 with
    /// a 40-byte one), while a Flash-profile IHello (16-byte tag, EPD
    /// with the server URI as Ancillary Data) is 52 bytes for URIs of up to
    /// 21 bytes (`rtmfp://10.0.0.1/live`), 68 bytes up to 37 bytes
    /// (`rtmfp://127.0.0.1:1935/live`), 100 bytes for a 57-byte URI.
    /// AES-CBC padding makes 52 bytes the smallest IHello a Flash client
    /// sends, so a factor of 3 (156 bytes) would refuse clients with short
    /// URIs; 4 (208 bytes) answers every client of a server whose
    /// certificate is at most 102 bytes (hostname up to 23 bytes) and
    /// still refuses the 20 to 36-byte IHellos an attacker would spoof.
    /// Servers with a longer hostname should use 5 (hostname up to 87
    /// bytes).
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
