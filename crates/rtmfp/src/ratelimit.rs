//! Per-source token buckets against handshake floods, in a bounded table.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

/// Second chances given before the front of the eviction queue is evicted
/// regardless (bounds the work per insertion).
const MAX_SECOND_CHANCES: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a token.
    millitokens: u64,
    /// Milliseconds since the limiter's epoch at the last refill.
    last_ms: u64,
    /// Used since it last went around the eviction queue.
    referenced: bool,
}

/// Token buckets keyed by source: an IPv4 address (also when seen as an
/// IPv4-mapped IPv6 address on a dual-stack socket) or an IPv6 /64.
///
/// The table holds at most `max_entries` sources. When it is full, the
/// least recently used source is forgotten with the CLOCK (second chance)
/// algorithm: sources sit in insertion order in a queue; a source used
/// since it last reached the front is moved to the back once more, at most
/// [`MAX_SECOND_CHANCES`] times per insertion, so each packet costs O(1).
/// A forgotten source starts again with a full bucket.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Tokens per second (0 = unlimited).
    rate: u64,
    burst_milli: u64,
    max_entries: usize,
    epoch: Instant,
    // keyed by attacker-chosen addresses: keep SipHash
    buckets: HashMap<u64, Bucket>,
    queue: VecDeque<u64>,
}

/// The source an address belongs to: an IPv4 address (also IPv4-mapped)
/// or an IPv6 /64.
pub(crate) fn source_key(ip: IpAddr) -> u64 {
    let v4 = |a: std::net::Ipv4Addr| 0xffff_ffff_0000_0000 | u64::from(u32::from(a));
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(m) => v4(m),
            // the /64 prefix
            None => (u128::from(a) >> 64) as u64,
        },
    }
}

impl RateLimiter {
    pub(crate) fn new(rate: u32, burst: u32, max_entries: usize, epoch: Instant) -> Self {
        Self {
            rate: u64::from(rate),
            burst_milli: u64::from(burst.max(1)) * 1000,
            max_entries: max_entries.max(1),
            epoch,
            buckets: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// Takes one token from `ip`'s bucket; false when it is empty.
    pub(crate) fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let key = source_key(ip);
        if let Some(b) = self.buckets.get_mut(&key) {
            let elapsed = now_ms.saturating_sub(b.last_ms);
            b.millitokens = b
                .millitokens
                .saturating_add(elapsed.saturating_mul(self.rate))
                .min(self.burst_milli);
            b.last_ms = b.last_ms.max(now_ms);
            b.referenced = true;
            if b.millitokens >= 1000 {
                b.millitokens -= 1000;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= self.max_entries {
            self.evict_one();
        }
        self.buckets.insert(
            key,
            Bucket {
                millitokens: self.burst_milli - 1000,
                last_ms: now_ms,
                referenced: false,
            },
        );
        self.queue.push_back(key);
        true
    }

    fn evict_one(&mut self) {
        let mut chances = 0;
        while let Some(k) = self.queue.pop_front() {
            let Some(b) = self.buckets.get_mut(&k) else {
                continue;
            };
            if b.referenced && chances < MAX_SECOND_CHANCES {
                b.referenced = false;
                chances += 1;
                self.queue.push_back(k);
                continue;
            }
            self.buckets.remove(&k);
            return;
        }
    }

    /// Sources tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(20, 40, 16, t0);
        let a = ip("192.0.2.1");
        assert_eq!((0..100).filter(|_| r.allow(t0, a)).count(), 40);
        // 20 tokens per second: 5 after 250 ms
        let t = t0 + Duration::from_millis(250);
        assert_eq!((0..100).filter(|_| r.allow(t, a)).count(), 5);
        // refill is capped at the burst
        let t = t + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| r.allow(t, a)).count(), 40);
        // other sources are independent
        assert!(r.allow(t, ip("192.0.2.2")));
        // time going backwards is harmless
        assert!(!r.allow(t0, a));
    }

    #[test]
    fn ipv6_by_prefix_and_mapped_ipv4_by_address() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1, 2, 16, t0);
        assert!(r.allow(t0, ip("2001:db8:1:2::1")));
        assert!(r.allow(t0, ip("2001:db8:1:2:ffff::9")));
        assert!(!r.allow(t0, ip("2001:db8:1:2::77")), "same /64");
        assert!(r.allow(t0, ip("2001:db8:1:3::1")), "another /64");
        // IPv4 clients on a dual-stack socket are not lumped together
        assert!(r.allow(t0, ip("::ffff:192.0.2.1")));
        assert!(r.allow(t0, ip("192.0.2.1")));
        assert!(!r.allow(t0, ip("::ffff:192.0.2.1")));
        assert!(r.allow(t0, ip("::ffff:192.0.2.2")));
    }

    #[test]
    fn unlimited_when_rate_is_zero() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(0, 1, 1, t0);
        assert!((0..1000).all(|_| r.allow(t0, ip("192.0.2.1"))));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn table_is_bounded_and_keeps_active_sources() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1, 3, 64, t0);
        let hot = ip("198.51.100.1");
        // the hot source empties its bucket
        while r.allow(t0, hot) {}
        // a flood of spoofed sources, the hot one still sending
        for i in 0..100_000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            r.allow(t0, a);
            if i % 4 == 0 {
                assert!(!r.allow(t0, hot), "hot source forgotten at {i}");
            }
            assert!(r.len() <= 64);
            assert!(r.queue.len() <= 64);
        }
    }
}
