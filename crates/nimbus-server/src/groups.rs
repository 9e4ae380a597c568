//! The server-wide NetGroup table, shared by every shard: who is in which
//! group, ordered on the group's ring, and whom to introduce to whom.
//!
//! A Flash `NetGroup` member joins a group by sending the group ID to the
//! server on a `"GC"` flow; the server's only job is rendezvous: it tells
//! members about a few other members (`0B <peer ID>` messages, sent by
//! `rtmfp_flash::message::ServerConnection::introduce_group_peers`), and the
//! members dial each other (through the server's ordinary introductions) and
//! build the mesh themselves.
//!
//! # Introduction policy
//!
//! Members sit on a ring ordered by their group address
//! (`rtmfp_netgroup::wire::group_address`, SHA-256(`21 0F` ‖ peer ID),
//! compared byte-wise). A group is keyed by (app, group ID): the same group ID
//! in two apps is two groups.
//!
//! * **Join**: the newcomer is told about up to [`RING_NEIGHBOURS`] members on
//!   each side of its ring position (wrapping around), and those neighbours
//!   are told about the newcomer (as MonaServer2 does). When the group, with
//!   the newcomer, has at least [`LONG_RANGE_MIN_MEMBERS`] (8) members, the
//!   newcomer also gets [`LONG_RANGE_HINTS`] random other members (long-range
//!   links: the member following a random ring position, so members after
//!   larger gaps are a little likelier).
//! * **Leave**: the departed member's nearest left and right neighbours are
//!   introduced to each other, so the ring stays closed.
//!
//! Invariant: every two members adjacent on the ring have been introduced to
//! each other (a join introduces the newcomer to both of its adjacent
//! members; a leave introduces the two members that become adjacent). So the
//! graph of introductions among present members always contains the ring and
//! is connected. Every join or leave costs O(log N) work and O(1) messages
//! (at most `2 × RING_NEIGHBOURS + LONG_RANGE_HINTS` peers for the newcomer,
//! one for each neighbour; two on a leave).
//!
//! Members whose app does not allow introductions (`introductions = false`)
//! are never handed out.
//!
//! # Limits
//!
//! At most `max_groups` groups on the server and `max_group_members` members
//! per group (a join beyond them is refused: [`JoinError`]). A group is
//! forgotten with its last member. A connection joins at most
//! `rtmfp_flash::message::MAX_GROUPS` groups, so the table never holds more
//! than that many entries per session.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rand_core::RngCore;
use rtmfp::SessionId;
use rtmfp_netgroup::wire::group_address;
use rtmfp_netgroup::GroupSpec;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::{AppConfig, GroupJoin};

/// Ring neighbours on each side introduced on a join.
pub const RING_NEIGHBOURS: usize = 3;
/// Random long-range members given to a newcomer in a large group.
pub const LONG_RANGE_HINTS: usize = 2;
/// Group size (with the newcomer) from which long-range hints are given.
pub const LONG_RANGE_MIN_MEMBERS: usize = 2 * RING_NEIGHBOURS + 2;
/// Random probes tried per long-range hint before giving up on it.
const PROBES_PER_HINT: usize = 4;

const PARTS: usize = 32;

/// A group: the app it belongs to and its 32-byte group ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    /// The app: the connect URL's first path segment, lowercased (so two
    /// apps served by one `"*"` entry are still two apps).
    pub app: Box<str>,
    /// The group ID (what the member sends in its join).
    pub id: [u8; 32],
}

/// A member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Peer ID.
    pub peer: [u8; 32],
    /// Shard holding the member's session.
    pub shard: usize,
    /// The session on that shard.
    pub session: SessionId,
    /// Whether the member may be handed out to others (its app allows
    /// introductions).
    pub introducible: bool,
}

/// "Tell `to` about `peers`" (one `0B` message per peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introduction {
    /// The member to tell.
    pub to: Member,
    /// Peer IDs to introduce to it.
    pub peers: Vec<[u8; 32]>,
}

/// What a join did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joined {
    /// The join created the group.
    pub new_group: bool,
    /// The peer was already a member (another session of the same peer ID,
    /// e.g. a reconnection) and its entry was replaced: the member count did
    /// not change.
    pub replaced: bool,
    /// Introductions to send.
    pub introductions: Vec<Introduction>,
}

/// What a leave did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Left {
    /// The group lost its last member and is gone.
    pub group_removed: bool,
    /// Introductions to send (the departed member's neighbours to each other).
    pub introductions: Vec<Introduction>,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The server already has `max_groups` groups.
    #[error("too many groups on the server")]
    TooManyGroups,
    /// The group already has `max_group_members` members.
    #[error("the group is full")]
    GroupFull,
}

/// Who may join which groups in an app (`group_join` / `groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupAccess {
    /// Any connected client may join any group.
    Open,
    /// Only these group IDs.
    Listed(FxHashSet<[u8; 32]>),
    /// No groups.
    Closed,
}

impl GroupAccess {
    /// The access rule of an app (groupspecs hashed into group IDs).
    pub fn from_app(app: &AppConfig) -> Result<Self, String> {
        Ok(match app.group_join {
            GroupJoin::Open => GroupAccess::Open,
            GroupJoin::None => GroupAccess::Closed,
            GroupJoin::Listed => {
                let mut ids = FxHashSet::default();
                for g in &app.groups {
                    ids.insert(parse_group(g)?);
                }
                GroupAccess::Listed(ids)
            }
        })
    }

    /// Whether group `id` may be joined.
    pub fn allows(&self, id: &[u8; 32]) -> bool {
        match self {
            GroupAccess::Open => true,
            GroupAccess::Listed(ids) => ids.contains(id),
            GroupAccess::Closed => false,
        }
    }
}

/// A configured group: a `G:` groupspec (hashed into its group ID) or a
/// group ID as 64 hex digits.
pub fn parse_group(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    if t.starts_with("G:") {
        return GroupSpec::parse(t)
            .map(|s| s.group_id())
            .map_err(|e| format!("groupspec {t:?}: {e}"));
    }
    if t.len() == 64 {
        if let Some(id) = rtmfp_flash::hex_decode(t).and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            return Ok(id);
        }
    }
    Err(format!(
        "group {t:?} is neither a G: groupspec nor a 64-hex-digit group ID"
    ))
}

/// One group: members by ring position.
#[derive(Debug, Default)]
struct Ring {
    members: BTreeMap<[u8; 32], Member>,
}

impl Ring {
    /// Members after `at` on the ring (clockwise, wrapping), `at` excluded.
    fn after<'a>(&'a self, at: &'a [u8; 32]) -> impl Iterator<Item = &'a Member> + 'a {
        self.members
            .range((Bound::Excluded(*at), Bound::Unbounded))
            .chain(self.members.range(..*at))
            .map(|(_, m)| m)
    }

    /// Members before `at` on the ring (counter-clockwise, wrapping), `at`
    /// excluded.
    fn before<'a>(&'a self, at: &'a [u8; 32]) -> impl Iterator<Item = &'a Member> + 'a {
        self.members
            .range(..*at)
            .rev()
            .chain(
                self.members
                    .range((Bound::Excluded(*at), Bound::Unbounded))
                    .rev(),
            )
            .map(|(_, m)| m)
    }

    /// The first member at or after `probe` (wrapping).
    fn successor(&self, probe: &[u8; 32]) -> Option<&Member> {
        self.members
            .range(*probe..)
            .chain(self.members.iter())
            .map(|(_, m)| m)
            .next()
    }

    /// Up to `n` neighbours on each side of `at` (`at` itself excluded),
    /// nearest first, alternating sides, without duplicates.
    fn neighbours(&self, at: &[u8; 32], n: usize) -> Vec<Member> {
        let mut out: Vec<Member> = Vec::with_capacity(2 * n);
        let right: Vec<&Member> = self.after(at).take(n).collect();
        let left: Vec<&Member> = self.before(at).take(n).collect();
        for i in 0..n {
            for m in [right.get(i), left.get(i)].into_iter().flatten() {
                if !out.iter().any(|o| o.peer == m.peer) {
                    out.push(**m);
                }
            }
        }
        out
    }
}

/// The table.
#[derive(Debug)]
pub struct GroupTable {
    parts: Vec<Mutex<FxHashMap<GroupKey, Ring>>>,
    groups: AtomicUsize,
    max_groups: usize,
    max_members: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn part_of(key: &GroupKey) -> usize {
    // group IDs are hashes: a few bytes and the app are enough
    let mut h: u32 = 0x811c_9dc5;
    for b in key
        .id
        .iter()
        .take(8)
        .chain(key.app.as_bytes().iter().take(16))
    {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    h as usize % PARTS
}

impl GroupTable {
    /// An empty table holding at most `max_groups` groups of at most
    /// `max_members` members each.
    pub fn new(max_groups: usize, max_members: usize) -> Self {
        Self {
            parts: (0..PARTS).map(|_| Mutex::default()).collect(),
            groups: AtomicUsize::new(0),
            max_groups,
            max_members,
        }
    }

    /// Number of groups.
    pub fn group_count(&self) -> usize {
        self.groups.load(Ordering::Relaxed)
    }

    /// Number of members of a group (0 if it does not exist).
    pub fn member_count(&self, key: &GroupKey) -> usize {
        lock(&self.parts[part_of(key)])
            .get(key)
            .map_or(0, |r| r.members.len())
    }

    /// The members of a group in ring order (for tests and diagnostics).
    pub fn members(&self, key: &GroupKey) -> Vec<Member> {
        lock(&self.parts[part_of(key)])
            .get(key)
            .map(|r| r.members.values().copied().collect())
            .unwrap_or_default()
    }

    /// Adds `member` to group `key` and chooses the introductions (see the
    /// [module documentation](self)). A member with the same peer ID
    /// already in the group is replaced (a reconnection).
    pub fn join(
        &self,
        key: GroupKey,
        member: Member,
        rng: &mut dyn RngCore,
    ) -> Result<Joined, JoinError> {
        let addr = group_address(&member.peer);
        let mut part = lock(&self.parts[part_of(&key)]);
        let mut new_group = false;
        if !part.contains_key(&key) {
            if self.max_members == 0 {
                return Err(JoinError::GroupFull);
            }
            // reserve a group slot; the part lock keeps the key unique
            self.groups
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < self.max_groups).then_some(n + 1)
                })
                .map_err(|_| JoinError::TooManyGroups)?;
            new_group = true;
        }
        let ring = part.entry(key).or_default();
        let replaced = ring.members.contains_key(&addr);
        if !replaced && ring.members.len() >= self.max_members {
            return Err(JoinError::GroupFull);
        }
        ring.members.insert(addr, member);

        let mut introductions = Vec::new();
        let neighbours = ring.neighbours(&addr, RING_NEIGHBOURS);
        let mut chosen: Vec<[u8; 32]> = neighbours
            .iter()
            .filter(|m| m.introducible)
            .map(|m| m.peer)
            .collect();
        if ring.members.len() >= LONG_RANGE_MIN_MEMBERS {
            for _ in 0..LONG_RANGE_HINTS {
                for _ in 0..PROBES_PER_HINT {
                    let mut probe = [0u8; 32];
                    rng.fill_bytes(&mut probe);
                    let Some(m) = ring.successor(&probe) else {
                        break;
                    };
                    if m.peer != member.peer && m.introducible && !chosen.contains(&m.peer) {
                        chosen.push(m.peer);
                        break;
                    }
                }
            }
        }
        if member.introducible {
            for n in &neighbours {
                introductions.push(Introduction {
                    to: *n,
                    peers: vec![member.peer],
                });
            }
        }
        if !chosen.is_empty() {
            introductions.push(Introduction {
                to: member,
                peers: chosen,
            });
        }
        Ok(Joined {
            new_group,
            replaced,
            introductions,
        })
    }

    /// Removes `peer` from group `key` if `shard`/`session` still own its
    /// entry, and introduces its former left and right neighbours to each
    /// other. `None` when it was not a member (a refused join, or an entry
    /// already taken over by a newer session).
    pub fn leave(
        &self,
        key: &GroupKey,
        peer: &[u8; 32],
        shard: usize,
        session: SessionId,
    ) -> Option<Left> {
        let addr = group_address(peer);
        let mut part = lock(&self.parts[part_of(key)]);
        let ring = part.get_mut(key)?;
        match ring.members.get(&addr) {
            Some(m) if m.shard == shard && m.session == session => {}
            _ => return None,
        }
        ring.members.remove(&addr);
        if ring.members.is_empty() {
            part.remove(key);
            self.groups.fetch_sub(1, Ordering::Relaxed);
            return Some(Left {
                group_removed: true,
                introductions: Vec::new(),
            });
        }
        let mut introductions = Vec::new();
        let left = ring.before(&addr).next().copied();
        let right = ring.after(&addr).next().copied();
        if let (Some(l), Some(r)) = (left, right) {
            if l.peer != r.peer {
                if r.introducible {
                    introductions.push(Introduction {
                        to: l,
                        peers: vec![r.peer],
                    });
                }
                if l.introducible {
                    introductions.push(Introduction {
                        to: r,
                        peers: vec![l.peer],
                    });
                }
            }
        }
        Some(Left {
            group_removed: false,
            introductions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::SeedableRng;
    use std::collections::{BTreeSet, HashSet};

    fn key(app: &str, id: u8) -> GroupKey {
        GroupKey {
            app: app.into(),
            id: [id; 32],
        }
    }

    fn peer(i: u32) -> [u8; 32] {
        let mut p = [0u8; 32];
        p[..4].copy_from_slice(&i.to_be_bytes());
        p[31] = 0xaa;
        p
    }

    fn member(i: u32) -> Member {
        Member {
            peer: peer(i),
            shard: (i % 3) as usize,
            session: SessionId(i),
            introducible: true,
        }
    }

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(7)
    }

    /// Peers in ring order.
    fn ring_order(t: &GroupTable, key: &GroupKey) -> Vec<[u8; 32]> {
        t.members(key).iter().map(|m| m.peer).collect()
    }

    /// Who each peer was told about, as (told, about) pairs.
    fn pairs(intros: &[Introduction]) -> Vec<([u8; 32], [u8; 32])> {
        intros
            .iter()
            .flat_map(|i| i.peers.iter().map(move |p| (i.to.peer, *p)))
            .collect()
    }

    #[test]
    fn two_members_learn_each_other() {
        let t = GroupTable::new(10, 10);
        let j = t.join(key("a", 9), member(1), &mut rng()).unwrap();
        assert!(j.new_group && j.introductions.is_empty());
        let j = t.join(key("a", 9), member(2), &mut rng()).unwrap();
        assert!(!j.new_group);
        let mut p = pairs(&j.introductions);
        p.sort();
        let mut want = vec![(peer(1), peer(2)), (peer(2), peer(1))];
        want.sort();
        assert_eq!(p, want);
        assert_eq!(t.group_count(), 1);
    }

    #[test]
    fn small_groups_introduce_everyone_once() {
        let t = GroupTable::new(10, 100);
        for i in 0..6 {
            t.join(key("a", 9), member(i), &mut rng()).unwrap();
        }
        // 7th member: 6 others, all neighbours, no duplicates, no long-range
        let j = t.join(key("a", 9), member(6), &mut rng()).unwrap();
        let to_new = j
            .introductions
            .iter()
            .find(|i| i.to.peer == peer(6))
            .unwrap();
        assert_eq!(to_new.peers.len(), 6);
        let set: HashSet<_> = to_new.peers.iter().collect();
        assert_eq!(set.len(), 6);
        assert_eq!(j.introductions.len(), 7);
    }

    #[test]
    fn neighbours_wrap_around_the_ring() {
        let t = GroupTable::new(10, 100);
        for i in 0..20 {
            t.join(key("a", 9), member(i), &mut rng()).unwrap();
        }
        let order = ring_order(&t, &key("a", 9));
        // the member with the lowest address: its left neighbours are the
        // highest ones
        let first = order[0];
        let i = (0..20).find(|i| peer(*i) == first).unwrap();
        t.leave(&key("a", 9), &first, member(i).shard, member(i).session)
            .unwrap();
        let j = t.join(key("a", 9), member(i), &mut rng()).unwrap();
        let to_new = &j
            .introductions
            .iter()
            .find(|x| x.to.peer == first)
            .unwrap()
            .peers;
        let neighbours = [
            order[1], order[2], order[3], order[19], order[18], order[17],
        ];
        for want in neighbours {
            assert!(to_new.contains(&want));
        }
        // plus two long-range hints from the middle
        assert_eq!(to_new.len(), 6 + LONG_RANGE_HINTS);
        // the six neighbours are told about the newcomer, nobody else
        let told: BTreeSet<_> = j
            .introductions
            .iter()
            .filter(|x| x.to.peer != first)
            .map(|x| x.to.peer)
            .collect();
        assert_eq!(told, BTreeSet::from(neighbours));
        assert!(j
            .introductions
            .iter()
            .filter(|x| x.to.peer != first)
            .all(|x| x.peers == vec![first]));
    }

    #[test]
    fn leave_heals_the_ring() {
        let t = GroupTable::new(10, 100);
        for i in 0..10 {
            t.join(key("a", 9), member(i), &mut rng()).unwrap();
        }
        let order = ring_order(&t, &key("a", 9));
        let gone = order[4];
        let gi = (0..10).find(|i| peer(*i) == gone).unwrap();
        // a stale session does not remove the member
        assert!(t.leave(&key("a", 9), &gone, 0, SessionId(999)).is_none());
        let l = t
            .leave(&key("a", 9), &gone, member(gi).shard, member(gi).session)
            .unwrap();
        assert!(!l.group_removed);
        let mut p = pairs(&l.introductions);
        p.sort();
        let mut want = vec![(order[3], order[5]), (order[5], order[3])];
        want.sort();
        assert_eq!(p, want);
        // leaving at the wrap point: the last and the first are introduced
        let last = order[9];
        let li = (0..10).find(|i| peer(*i) == last).unwrap();
        let l = t
            .leave(&key("a", 9), &last, member(li).shard, member(li).session)
            .unwrap();
        let mut p = pairs(&l.introductions);
        p.sort();
        let mut want = vec![(order[8], order[0]), (order[0], order[8])];
        want.sort();
        assert_eq!(p, want);
        assert_eq!(t.member_count(&key("a", 9)), 8);
    }

    #[test]
    fn two_and_one_members_leave_without_self_introductions() {
        let t = GroupTable::new(10, 10);
        for i in 0..3 {
            t.join(key("a", 9), member(i), &mut rng()).unwrap();
        }
        let l = t.leave(&key("a", 9), &peer(0), 0, SessionId(0)).unwrap();
        // the two remaining ones are each other's left and right neighbour
        assert_eq!(pairs(&l.introductions).len(), 2);
        let l = t.leave(&key("a", 9), &peer(1), 1, SessionId(1)).unwrap();
        assert!(l.introductions.is_empty() && !l.group_removed);
        let l = t.leave(&key("a", 9), &peer(2), 2, SessionId(2)).unwrap();
        assert!(l.group_removed);
        assert_eq!(t.group_count(), 0);
        assert!(t.leave(&key("a", 9), &peer(2), 2, SessionId(2)).is_none());
    }

    #[test]
    fn limits_refuse_joins() {
        let t = GroupTable::new(2, 3);
        let k = |b: u8| key("a", b);
        t.join(k(1), member(1), &mut rng()).unwrap();
        t.join(k(2), member(1), &mut rng()).unwrap();
        assert_eq!(
            t.join(k(3), member(1), &mut rng()),
            Err(JoinError::TooManyGroups)
        );
        t.join(k(1), member(2), &mut rng()).unwrap();
        t.join(k(1), member(3), &mut rng()).unwrap();
        assert_eq!(
            t.join(k(1), member(4), &mut rng()),
            Err(JoinError::GroupFull)
        );
        // a reconnection of a member replaces it even in a full group
        let mut again = member(3);
        again.session = SessionId(77);
        assert!(t.join(k(1), again, &mut rng()).unwrap().replaced);
        assert_eq!(t.member_count(&k(1)), 3);
        // apps separate groups
        let other = key("b", 1);
        assert_eq!(
            t.join(other.clone(), member(1), &mut rng()),
            Err(JoinError::TooManyGroups)
        );
        t.leave(&k(2), &peer(1), 1, SessionId(1)).unwrap();
        t.join(other.clone(), member(1), &mut rng()).unwrap();
        assert_eq!(t.member_count(&other), 1);
        assert_eq!(t.group_count(), 2);
    }

    #[test]
    fn uninteresting_members_are_not_handed_out() {
        let t = GroupTable::new(10, 10);
        let mut hidden = member(1);
        hidden.introducible = false;
        t.join(key("a", 9), hidden, &mut rng()).unwrap();
        let j = t.join(key("a", 9), member(2), &mut rng()).unwrap();
        // member 2 is told nothing about 1; 1 is told about 2
        assert_eq!(pairs(&j.introductions), vec![(peer(1), peer(2))]);
    }

    #[test]
    fn access_rules() {
        let spec = "G:027f0201010103010c050e74657374011b00";
        let id = parse_group(spec).unwrap();
        assert_eq!(
            rtmfp_flash::hex_encode(&id)[..8].to_string(),
            "763f90e4".to_string()
        );
        let hex = rtmfp_flash::hex_encode(&[5u8; 32]);
        assert_eq!(parse_group(&hex).unwrap(), [5u8; 32]);
        assert!(parse_group("nonsense").is_err());
        assert!(parse_group("G:zz").is_err());
        assert!(parse_group(&"g".repeat(64)).is_err());
        let app = AppConfig {
            group_join: GroupJoin::Listed,
            groups: vec![spec.into(), hex],
            ..AppConfig::default()
        };
        let a = GroupAccess::from_app(&app).unwrap();
        assert!(a.allows(&id) && a.allows(&[5; 32]) && !a.allows(&[6; 32]));
        let none = AppConfig {
            group_join: GroupJoin::None,
            ..AppConfig::default()
        };
        assert!(!GroupAccess::from_app(&none).unwrap().allows(&id));
        assert!(GroupAccess::from_app(&AppConfig::default())
            .unwrap()
            .allows(&id));
    }

    /// Whether the undirected graph `edges` connects every peer of `nodes`.
    fn connected(nodes: &[[u8; 32]], edges: &HashSet<([u8; 32], [u8; 32])>) -> bool {
        let Some(first) = nodes.first() else {
            return true;
        };
        let mut seen: HashSet<[u8; 32]> = HashSet::from([*first]);
        let mut stack = vec![*first];
        while let Some(n) = stack.pop() {
            for (a, b) in edges {
                let other = if *a == n {
                    b
                } else if *b == n {
                    a
                } else {
                    continue;
                };
                if seen.insert(*other) {
                    stack.push(*other);
                }
            }
        }
        nodes.iter().all(|n| seen.contains(n))
    }

    proptest! {
        /// After any sequence of joins and leaves, the introductions the
        /// server handed out (among members still present; a departed
        /// member's links go with it) connect every present member, and no
        /// operation introduces more than O(1) peers.
        #[test]
        fn hint_graph_stays_connected(
            ops in proptest::collection::vec((any::<bool>(), 0u32..40), 1..200),
            seed in any::<u64>(),
        ) {
            let t = GroupTable::new(4, 1000);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut edges: HashSet<([u8; 32], [u8; 32])> = HashSet::new();
            let mut present: BTreeSet<u32> = BTreeSet::new();
            for (join, i) in ops {
                let intros = if join {
                    let j = t.join(key("a", 9), member(i), &mut rng).unwrap();
                    prop_assert_eq!(j.replaced, present.contains(&i));
                    present.insert(i);
                    j.introductions
                } else {
                    let m = member(i);
                    match t.leave(&key("a", 9), &m.peer, m.shard, m.session) {
                        Some(l) => {
                            prop_assert!(present.remove(&i));
                            edges.retain(|(a, b)| *a != m.peer && *b != m.peer);
                            prop_assert_eq!(l.group_removed, present.is_empty());
                            l.introductions
                        }
                        None => {
                            prop_assert!(!present.contains(&i));
                            Vec::new()
                        }
                    }
                };
                let p = pairs(&intros);
                prop_assert!(p.len() <= 2 * (2 * RING_NEIGHBOURS) + LONG_RANGE_HINTS);
                for (a, b) in p {
                    prop_assert!(a != b, "a member was introduced to itself");
                    prop_assert!(present.contains(&u32::from_be_bytes(a[..4].try_into().unwrap())));
                    edges.insert((a, b));
                }
                let nodes: Vec<[u8; 32]> = present.iter().map(|i| peer(*i)).collect();
                prop_assert_eq!(t.member_count(&key("a", 9)), nodes.len());
                prop_assert!(connected(&nodes, &edges));
            }
        }
    }
}
