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
    /// allows) is at most this many times what it sent us, counted in wire
    /// bytes (UDP payload plus 28 bytes of UDP/IPv4 headers, 48 with IPv6)
    /// over all its startup datagrams, per address in a bounded table (like
    /// QUIC's limit); 0 = no limit (the default, for peers).
    ///
    /// The bound holds in total, not only per address: nothing is sent to
    /// an unproven address beyond this factor times what arrived from it,
    /// so a flood of spoofed IHellos from any number of addresses gets at
    /// most this factor times its own wire bytes back.
    ///
    /// Servers should use 3. Sizes with the RFC 7425 profile
    /// (`rtmfp_flash::FlashProfile::server`, 32 bytes of certificate
    /// randomness): the server certificate is 45 bytes without a hostname
    /// (47 + *h* with one) and an RHello 148 bytes (176 on the wire over
    /// IPv4), at most 164 (192) with a hostname of up to 23 bytes; the
    /// smallest IHello with a 16-byte tag is 36 bytes (librtmfp's; 64 on
    /// the wire), which allows 192. So at factor 3 every client's first
    /// IHello is answered at once, over IPv4 and IPv6. (With the 77-byte
    /// certificates of rtmfp-cpp and MonaServer the RHello is 180 bytes:
    /// a 36-byte IHello would be answered at its retransmission.)
    pub amplification_factor: usize,
    /// IHellos accepted per second from one source (an IPv4 address or an
    /// IPv6 /64), as a token bucket refilled at this rate; 0 = unlimited
    /// (the default). Excess IHellos are dropped silently
    /// ([`EndpointStats::ihello_rate_drops`](crate::EndpointStats)).
    ///
    /// Off by default because one address may be a carrier-grade NAT with
    /// thousands of honest clients, and an IHello costs little: its answer
    /// is a stateless cookie (two HMACs), bounded by
    /// [`amplification_factor`](Self::amplification_factor). The expensive
    /// step, keying, is bounded globally and shared fairly between sources
    /// instead ([`max_keyings_in_flight`](Self::max_keyings_in_flight)).
    pub ihello_rate_per_source: u32,
    /// Size of each source's IHello token bucket (burst).
    pub ihello_burst_per_source: u32,
    /// Take responder keyings (the Diffie-Hellman work of each IIKeying
    /// whose cookie is valid) out with
    /// [`Endpoint::poll_keying`](crate::Endpoint::poll_keying) and back with
    /// [`Endpoint::handle_keying`](crate::Endpoint::handle_keying), to run
    /// them off the packet path (a worker pool); off (the default), the
    /// endpoint runs each itself inside the input that brought it. Either
    /// way a retransmitted IIKeying does not make a second keying.
    pub deferred_keying: bool,
    /// With `deferred_keying`: most keyings out at once (taken with
    /// `poll_keying` and not handed back). Jobs beyond it wait in one queue
    /// per source (an IPv4 address or an IPv6 /64), served round-robin, so
    /// a source with many IIKeyings (a NAT, or a flood from an address that
    /// answered our cookies) gets its share and others still get theirs.
    pub max_keyings_in_flight: usize,
    /// With `deferred_keying`: most keyings waiting (and waiting keyings
    /// hold at most 2 KB each on average of the IIKeyings they answer).
    /// When full, the source
    /// with the most waiting gives up its newest for a newcomer from a
    /// lighter source (a newcomer from the heaviest source is dropped); the
    /// initiator retransmits its IIKeying. Counted in
    /// [`EndpointStats::keyings_dropped`](crate::EndpointStats).
    pub max_keyings_waiting: usize,
    /// A keying waiting longer than this is dropped unrun, and one taken
    /// with `poll_keying` whose result has not come back within this is
    /// forgotten (its slot freed, a late result ignored): the initiator
    /// has retransmitted by then, or given up.
    pub keying_max_wait: Duration,
    /// The secret that makes and checks responder cookies; several endpoints
    /// given the same secret and created with the same `now` accept each
    /// other's cookies (server shards behind one address). `None`: drawn
    /// from the RNG.
    pub cookie_secret: Option<[u8; 32]>,
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
            ihello_rate_per_source: 0,
            ihello_burst_per_source: 40,
            max_rate_limit_entries: 65536,
            deferred_keying: false,
            max_keyings_in_flight: 64,
            max_keyings_waiting: 4096,
            keying_max_wait: Duration::from_secs(10),
            cookie_secret: None,
        }
    }
}
