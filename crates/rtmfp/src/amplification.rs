//! Anti-amplification ledger: before an address is proven (by an IIKeying
//! that echoes our cookie), the bytes we send it are limited to a factor of
//! the bytes it sent us (counted over all its startup datagrams, as QUIC
//! does), so a spoofed IHello cannot make us a traffic amplifier.
//!
//! Bytes are counted **on the wire**: each datagram's UDP payload plus its
//! UDP and IP headers ([`wire_overhead`]: 28 bytes over IPv4, 48 over IPv6),
//! which is what a flood costs the victim's link and what the attacker
//! pays. A 36-byte IHello (librtmfp's) is 64 bytes on the wire over IPv4,
//! so at factor 3 it may be answered with 192 wire bytes: an RHello of up
//! to 164 bytes of payload, enough for the RFC 7425 profile's server
//! certificate (see `EndpointConfig::amplification_factor`).
//!
//! **The bound.** Every byte sent to an unproven address is charged to that
//! address's entry and is only sent while the entry's sent bytes stay
//! within `factor` times its received bytes; an entry that is forgotten
//! (the table is full) takes its unspent allowance with it, and a new entry
//! for the same address starts from what arrives next. So for any set of
//! addresses — one, or ten thousand spoofed ones — the total we send to
//! addresses that never proved themselves is at most `factor` times the
//! total they (or a spoofer in their name) sent us. Nothing is sent
//! unprompted, and an address is proven only by echoing a cookie that
//! reached it, so a spoofer who cannot receive at the victim's address
//! cannot raise the victim's allowance beyond `factor` times its own
//! spending.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rustc_hash::FxHashMap;

/// UDP and IP header bytes of a datagram to or from `addr` (an
/// IPv4-mapped IPv6 address travels as IPv4).
pub(crate) fn wire_overhead(addr: SocketAddr) -> usize {
    match addr.ip() {
        std::net::IpAddr::V4(_) => 28,
        std::net::IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => 28,
        std::net::IpAddr::V6(_) => 48,
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    received: u64,
    sent: u64,
}

/// Wire bytes received from and sent to unproven addresses, in a bounded
/// table.
#[derive(Debug)]
pub(crate) struct AmpLedger {
    factor: u64,
    cap: usize,
    map: FxHashMap<SocketAddr, Entry>,
    order: VecDeque<SocketAddr>,
}

impl AmpLedger {
    /// `factor` 0 disables the limit; at most `cap` addresses are tracked
    /// (the oldest are forgotten, which only ever lowers an allowance).
    pub(crate) fn new(factor: usize, cap: usize) -> Self {
        Self {
            factor: factor as u64,
            cap: cap.max(1),
            map: FxHashMap::default(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.factor != 0
    }

    /// Counts a datagram of `n` wire bytes from `from` (or forwarded on its
    /// behalf).
    pub(crate) fn received(&mut self, from: SocketAddr, n: usize) {
        if !self.enabled() {
            return;
        }
        if let Some(e) = self.map.get_mut(&from) {
            e.received = e.received.saturating_add(n as u64);
            return;
        }
        while self.map.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        if self.order.len() >= self.cap.saturating_mul(2) {
            // drop keys of entries already removed (proven addresses)
            let map = &self.map;
            self.order.retain(|a| map.contains_key(a));
        }
        self.map.insert(
            from,
            Entry {
                received: n as u64,
                sent: 0,
            },
        );
        self.order.push_back(from);
    }

    /// How many more wire bytes may be sent to `to` now.
    pub(crate) fn allowance(&self, to: SocketAddr) -> usize {
        if !self.enabled() {
            return usize::MAX;
        }
        self.map
            .get(&to)
            .map(|e| {
                e.received
                    .saturating_mul(self.factor)
                    .saturating_sub(e.sent)
                    .min(usize::MAX as u64) as usize
            })
            .unwrap_or(0)
    }

    /// Counts `n` wire bytes sent to `to`.
    pub(crate) fn spent(&mut self, to: SocketAddr, n: usize) {
        if let Some(e) = self.map.get_mut(&to) {
            e.sent = e.sent.saturating_add(n as u64);
        }
    }

    /// `addr` echoed our cookie: it is proven and no longer limited here.
    pub(crate) fn proven(&mut self, addr: SocketAddr) {
        self.map.remove(&addr);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 1], p))
    }

    #[test]
    fn cumulative_three_times() {
        let mut l = AmpLedger::new(3, 16);
        assert_eq!(l.allowance(a(1)), 0);
        l.received(a(1), 52);
        assert_eq!(l.allowance(a(1)), 156);
        l.received(a(1), 52);
        assert_eq!(l.allowance(a(1)), 312);
        l.spent(a(1), 180);
        assert_eq!(l.allowance(a(1)), 132);
        l.proven(a(1));
        assert_eq!(l.allowance(a(1)), 0);
        let off = AmpLedger::new(0, 16);
        assert_eq!(off.allowance(a(1)), usize::MAX);
    }

    #[test]
    fn header_bytes() {
        assert_eq!(wire_overhead(a(1)), 28);
        assert_eq!(wire_overhead("[2001:db8::1]:5".parse().unwrap()), 48);
        assert_eq!(wire_overhead("[::ffff:198.18.0.1]:5".parse().unwrap()), 28);
    }

    #[test]
    fn bounded_under_a_spoofed_flood() {
        let mut l = AmpLedger::new(3, 100);
        for p in 0..10_000u16 {
            l.received(a(p), 40);
            if p % 3 == 0 {
                l.proven(a(p));
            }
        }
        assert!(l.len() <= 100);
        assert!(l.order.len() <= 200);
        // the most recent addresses are still known
        assert_eq!(l.allowance(a(9_998)), 120);
    }
}
