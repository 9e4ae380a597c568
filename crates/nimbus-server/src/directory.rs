//! The server-wide index of connected peers, shared by every shard.
//!
//! Peer IDs (and user names) map to the shard and session that hold the
//! peer, with the addresses introductions hand out. It is consulted on
//! connects, introductions (IHello for a peer ID) and relays, never for
//! ordinary packets; it is split into independently locked parts so shards
//! rarely wait for each other.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};

use rtmfp::SessionId;
use rustc_hash::FxHashMap;

const PARTS: usize = 32;

/// Where a connected peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// Shard holding the session.
    pub shard: usize,
    /// The session on that shard.
    pub session: SessionId,
    /// The address the server sees (first candidate of introductions).
    pub public: SocketAddr,
    /// Addresses the client reported with `setPeerInfo`.
    pub reported: Vec<SocketAddr>,
    /// Whether the app allows introductions to this peer.
    pub introducible: bool,
}

impl PeerEntry {
    /// The addresses to list in a Redirect: the observed one first, then
    /// the reported ones, without duplicates, at most `max`.
    pub fn redirect_addresses(&self, max: usize) -> Vec<SocketAddr> {
        let mut out = Vec::with_capacity(1 + self.reported.len());
        for a in std::iter::once(&self.public).chain(&self.reported) {
            if out.len() >= max {
                break;
            }
            if !out.contains(a) && a.port() != 0 && !a.ip().is_unspecified() {
                out.push(*a);
            }
        }
        out
    }
}

/// A user name bound to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// Peer ID.
    pub peer: [u8; 32],
    /// Shard.
    pub shard: usize,
    /// Session.
    pub session: SessionId,
}

/// The index.
#[derive(Debug)]
pub struct Directory {
    peers: Vec<Mutex<FxHashMap<[u8; 32], PeerEntry>>>,
    names: Vec<Mutex<HashMap<String, NameEntry>>>,
    per_address: Vec<Mutex<FxHashMap<IpAddr, u32>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn part_of(bytes: &[u8]) -> usize {
    // FNV-1a over a few bytes: peer IDs are already uniform
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes.iter().take(16) {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    h as usize % PARTS
}

/// The per-address limit key: the IPv4 address, or the /64 of an IPv6 one.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self {
            peers: (0..PARTS).map(|_| Mutex::default()).collect(),
            names: (0..PARTS).map(|_| Mutex::default()).collect(),
            per_address: (0..PARTS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Indexes a connected peer (replacing an older session of the same ID).
    pub fn insert(&self, peer: [u8; 32], entry: PeerEntry) {
        lock(&self.peers[part_of(&peer)]).insert(peer, entry);
    }

    /// Finds a peer.
    pub fn get(&self, peer: &[u8; 32]) -> Option<PeerEntry> {
        lock(&self.peers[part_of(peer)]).get(peer).cloned()
    }

    /// Updates a peer's reported addresses (if that session still owns it).
    pub fn set_reported(
        &self,
        peer: &[u8; 32],
        shard: usize,
        session: SessionId,
        addrs: Vec<SocketAddr>,
    ) {
        if let Some(e) = lock(&self.peers[part_of(peer)]).get_mut(peer) {
            if e.shard == shard && e.session == session {
                e.reported = addrs;
            }
        }
    }

    /// Updates a peer's observed address after a move.
    pub fn set_public(&self, peer: &[u8; 32], shard: usize, session: SessionId, addr: SocketAddr) {
        if let Some(e) = lock(&self.peers[part_of(peer)]).get_mut(peer) {
            if e.shard == shard && e.session == session {
                e.public = addr;
            }
        }
    }

    /// Removes a peer if `shard`/`session` still own it.
    pub fn remove(&self, peer: &[u8; 32], shard: usize, session: SessionId) {
        let mut m = lock(&self.peers[part_of(peer)]);
        if m.get(peer)
            .is_some_and(|e| e.shard == shard && e.session == session)
        {
            m.remove(peer);
        }
    }

    /// Number of indexed peers.
    pub fn len(&self) -> usize {
        self.peers.iter().map(|m| lock(m).len()).sum()
    }

    /// True when no peer is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claims a user name (case-insensitive) for a session. Fails if another
    /// live session holds it, unless it is the same peer (a reconnection).
    pub fn claim_name(&self, name: &str, entry: NameEntry) -> bool {
        let key = name.to_lowercase();
        let mut m = lock(&self.names[part_of(key.as_bytes())]);
        match m.get(&key) {
            Some(e) if e.peer != entry.peer => false,
            _ => {
                m.insert(key, entry);
                true
            }
        }
    }

    /// Looks up a name.
    pub fn name(&self, name: &str) -> Option<NameEntry> {
        let key = name.to_lowercase();
        lock(&self.names[part_of(key.as_bytes())])
            .get(&key)
            .cloned()
    }

    /// Releases a name held by `shard`/`session`.
    pub fn release_name(&self, name: &str, shard: usize, session: SessionId) {
        let key = name.to_lowercase();
        let mut m = lock(&self.names[part_of(key.as_bytes())]);
        if m.get(&key)
            .is_some_and(|e| e.shard == shard && e.session == session)
        {
            m.remove(&key);
        }
    }

    /// Counts a session from `ip`; false (and nothing counted) when that
    /// address already has `limit`.
    pub fn add_address(&self, ip: IpAddr, limit: usize) -> bool {
        let key = address_key(ip);
        let mut m = lock(&self.per_address[part_of_ip(key)]);
        let n = m.entry(key).or_insert(0);
        if *n as usize >= limit {
            if *n == 0 {
                m.remove(&key);
            }
            return false;
        }
        *n += 1;
        true
    }

    /// Uncounts a session from `ip`.
    pub fn remove_address(&self, ip: IpAddr) {
        let key = address_key(ip);
        let mut m = lock(&self.per_address[part_of_ip(key)]);
        if let Some(n) = m.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&key);
            }
        }
    }
}

fn part_of_ip(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(a) => part_of(&a.octets()),
        IpAddr::V6(a) => part_of(&a.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(shard: usize, s: u32) -> PeerEntry {
        PeerEntry {
            shard,
            session: SessionId(s),
            public: "198.18.0.1:1000".parse().unwrap(),
            reported: vec![
                "10.0.0.1:1000".parse().unwrap(),
                "198.18.0.1:1000".parse().unwrap(),
                "0.0.0.0:5".parse().unwrap(),
            ],
            introducible: true,
        }
    }

    #[test]
    fn peers_are_replaced_and_removed_only_by_their_owner() {
        let d = Directory::new();
        let p = [7u8; 32];
        d.insert(p, entry(0, 1));
        d.insert(p, entry(1, 2)); // reconnection elsewhere
        d.remove(&p, 0, SessionId(1)); // the old session's end: no effect
        assert_eq!(d.get(&p).unwrap().session, SessionId(2));
        d.remove(&p, 1, SessionId(2));
        assert!(d.get(&p).is_none());
        assert!(d.is_empty());
    }

    #[test]
    fn redirect_addresses_dedup_and_cap() {
        let e = entry(0, 1);
        let a = e.redirect_addresses(8);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], e.public);
        assert_eq!(e.redirect_addresses(1).len(), 1);
    }

    #[test]
    fn names_are_unique_case_insensitively() {
        let d = Directory::new();
        let n = |p: u8, s: u32| NameEntry {
            peer: [p; 32],
            shard: 0,
            session: SessionId(s),
        };
        assert!(d.claim_name("Alice", n(1, 1)));
        assert!(!d.claim_name("alice", n(2, 2)));
        assert!(d.claim_name("ALICE", n(1, 3))); // same peer reconnecting
        d.release_name("alice", 0, SessionId(1)); // stale owner
        assert_eq!(d.name("alice").unwrap().session, SessionId(3));
        d.release_name("alice", 0, SessionId(3));
        assert!(d.name("alice").is_none());
    }

    #[test]
    fn per_address_limits() {
        let d = Directory::new();
        let ip: IpAddr = "198.18.0.9".parse().unwrap();
        assert!(d.add_address(ip, 2));
        assert!(d.add_address(ip, 2));
        assert!(!d.add_address(ip, 2));
        d.remove_address(ip);
        assert!(d.add_address(ip, 2));
        // IPv6 counts per /64
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(d.add_address(a, 1));
        assert!(!d.add_address(b, 1));
    }
}
