//! Responder keying: the Diffie-Hellman work an IIKeying calls for, queued
//! fairly between sources, bounded in flight, and optionally done off the
//! packet path.
//!
//! An IIKeying whose cookie is valid becomes a [`KeyingJob`]. Jobs wait in
//! one FIFO per source (an IPv4 address or an IPv6 /64) and are taken out
//! round-robin across sources, at most
//! [`max_keyings_in_flight`](crate::EndpointConfig::max_keyings_in_flight)
//! at once, so a source sending many IIKeyings (a large NAT, or a flood from
//! a real address that answered our cookies) gets its share and never more
//! while others wait. When the queue is full, the newest job of the source
//! with the most waiting is dropped (the initiator retransmits); a job
//! waiting longer than the initiator would is dropped too.
//!
//! With [`deferred_keying`](crate::EndpointConfig::deferred_keying) the
//! owner takes jobs with [`Endpoint::poll_keying`](crate::Endpoint::poll_keying),
//! runs them anywhere (a worker thread: [`KeyingJob::run`] is the expensive
//! part), and hands the results back with
//! [`Endpoint::handle_keying`](crate::Endpoint::handle_keying); otherwise
//! the endpoint runs them itself, in the same order, inside the input that
//! queued them.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::RngCore;
use rustc_hash::FxHashMap;

use crate::crypto::{CryptoError, CryptoProfile, IIKeyingInput, ResponderHandshake};

/// Identifies a keying job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyingId(pub u64);

/// The responder's Diffie-Hellman work for one IIKeying (RFC 7016
/// §3.5.1.2): everything needed to compute the session keys, owned, so that
/// it can run on another thread.
pub struct KeyingJob {
    id: KeyingId,
    profile: Arc<dyn CryptoProfile>,
    certificate: Bytes,
    skic: Bytes,
    signed: Bytes,
    signature: Bytes,
    seed: [u8; 32],
}

impl std::fmt::Debug for KeyingJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyingJob")
            .field("id", &self.id)
            .field("certificate_len", &self.certificate.len())
            .finish_non_exhaustive()
    }
}

impl KeyingJob {
    pub(crate) fn new(
        id: KeyingId,
        profile: Arc<dyn CryptoProfile>,
        certificate: Bytes,
        skic: Bytes,
        signed: Bytes,
        signature: Bytes,
        seed: [u8; 32],
    ) -> Self {
        Self {
            id,
            profile,
            certificate,
            skic,
            signed,
            signature,
            seed,
        }
    }

    /// The job's identifier, to hand back with the result.
    pub fn id(&self) -> KeyingId {
        self.id
    }

    /// Randomness for the job, drawn from the endpoint's generator: seed the
    /// generator you pass to [`run`](Self::run) with it to keep a seeded
    /// endpoint deterministic.
    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// Computes the responder's keying (the Diffie-Hellman exponentiation
    /// and key derivation). Call it on any thread.
    pub fn run(&self, rng: &mut dyn RngCore) -> KeyingResult {
        let input = IIKeyingInput {
            certificate: &self.certificate,
            skic: &self.skic,
            signed: &self.signed,
            signature: &self.signature,
        };
        KeyingResult {
            id: self.id,
            outcome: self.profile.respond(input, rng),
        }
    }
}

/// The outcome of a [`KeyingJob`], for
/// [`Endpoint::handle_keying`](crate::Endpoint::handle_keying).
pub struct KeyingResult {
    id: KeyingId,
    outcome: Result<Box<dyn ResponderHandshake>, CryptoError>,
}

impl std::fmt::Debug for KeyingResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyingResult")
            .field("id", &self.id)
            .field("ok", &self.outcome.is_ok())
            .finish()
    }
}

impl KeyingResult {
    /// The job it answers.
    pub fn id(&self) -> KeyingId {
        self.id
    }

    /// A job that could not be run (a worker pool shutting down): the
    /// endpoint forgets it and the initiator retransmits.
    pub fn abandoned(id: KeyingId) -> Self {
        Self {
            id,
            outcome: Err(CryptoError::Abandoned),
        }
    }

    pub(crate) fn into_parts(self) -> (KeyingId, Result<Box<dyn ResponderHandshake>, CryptoError>) {
        (self.id, self.outcome)
    }
}

/// What the endpoint keeps about a queued or running job until its result.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) from: SocketAddr,
    pub(crate) isid: u32,
    pub(crate) digest: [u8; 32],
    pub(crate) certificate: Bytes,
    pub(crate) skic: Bytes,
    pub(crate) signed: Bytes,
    pub(crate) signature: Bytes,
    pub(crate) queued: Instant,
}

impl Pending {
    /// Bytes held for the job (what the initiator sent).
    pub(crate) fn size(&self) -> usize {
        self.certificate.len() + self.skic.len() + self.signed.len() + self.signature.len()
    }
}

/// Bytes of waiting jobs allowed per job of `max_waiting`: IIKeyings are
/// about 0.3 to 2 KB (a Flash certificate with three static keys and a
/// group-16 ephemeral key), but can be reassembled from fragments up to
/// 64 KB; the byte budget keeps large ones from multiplying the memory.
pub(crate) const BYTES_PER_WAITING_JOB: usize = 2048;

/// Fair queue of keying jobs and the bound on jobs in flight.
///
/// Memory: at most `max_waiting` jobs wait, holding at most
/// `max_waiting` × [`BYTES_PER_WAITING_JOB`] bytes of IIKeying (or one
/// job, however large), and `max_in_flight` run; the hand-out log holds one
/// entry per job handed out in the last `max_wait`.
#[derive(Debug)]
pub(crate) struct KeyingQueue {
    /// Waiting jobs per source, oldest first.
    waiting: FxHashMap<u64, VecDeque<KeyingId>>,
    /// Sources by number of waiting jobs (finds the heaviest in O(log n)).
    by_len: BTreeSet<(usize, u64)>,
    /// Sources with waiting jobs, in service order (each at most once).
    turn: VecDeque<u64>,
    /// Every job not yet answered (waiting or in flight), with the time it
    /// was handed out.
    jobs: FxHashMap<KeyingId, (Pending, Option<Instant>)>,
    /// The same jobs by initiator address and IIKeying digest (to ignore
    /// retransmissions). Keyed by what initiators choose: SipHash.
    index: std::collections::HashMap<(SocketAddr, [u8; 32]), KeyingId>,
    /// Jobs handed out, in order (entries of answered jobs are skipped).
    handed_out: VecDeque<(Instant, KeyingId)>,
    /// Jobs handed out and not answered.
    in_flight: usize,
    waiting_count: usize,
    /// Bytes held by waiting jobs ([`Pending::size`]).
    waiting_bytes: usize,
    next_id: u64,
    max_in_flight: usize,
    max_waiting: usize,
    max_wait: Duration,
}

/// What a finished job's bookkeeping says.
#[derive(Debug)]
pub(crate) enum Finished {
    /// The job was in flight: here is what it was for.
    Done(Pending),
    /// The job was in flight longer than the queue's `max_wait`: its result
    /// comes too late (the initiator has retransmitted or given up).
    Expired,
    /// Not a job in flight (answered already, never handed out, expired
    /// and forgotten, or another endpoint's).
    Unknown,
}

/// What happened to an IIKeying offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued.
    Queued,
    /// A job for the same IIKeying is already queued or running.
    Duplicate,
    /// Dropped: the queue is full and this source has its share.
    Full,
}

impl KeyingQueue {
    pub(crate) fn new(max_in_flight: usize, max_waiting: usize, max_wait: Duration) -> Self {
        Self {
            waiting: FxHashMap::default(),
            by_len: BTreeSet::new(),
            turn: VecDeque::new(),
            jobs: FxHashMap::default(),
            index: std::collections::HashMap::new(),
            handed_out: VecDeque::new(),
            in_flight: 0,
            waiting_count: 0,
            waiting_bytes: 0,
            next_id: 1,
            max_in_flight: max_in_flight.max(1),
            max_waiting: max_waiting.max(1),
            max_wait,
        }
    }

    /// Jobs waiting plus in flight.
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Jobs handed out and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Jobs waiting to be handed out.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting_count
    }

    fn set_len(&mut self, source: u64, old: usize, new: usize) {
        if old > 0 {
            self.by_len.remove(&(old, source));
        }
        if new > 0 {
            self.by_len.insert((new, source));
        }
    }

    fn full(&self, more: usize) -> bool {
        self.waiting_count > 0
            && (self.waiting_count >= self.max_waiting
                || self.waiting_bytes.saturating_add(more)
                    > self.max_waiting.saturating_mul(BYTES_PER_WAITING_JOB))
    }

    /// Queues a job from `source`, dropping by fairness when full (in jobs
    /// or bytes): returns what became of it and how many jobs were evicted
    /// to make room.
    pub(crate) fn offer(&mut self, source: u64, p: Pending) -> (Offer, usize) {
        if self.index.contains_key(&(p.from, p.digest)) {
            return (Offer::Duplicate, 0);
        }
        let size = p.size();
        let mut evicted = 0;
        while self.full(size) {
            // the source with the most waiting gives one up (its newest),
            // unless that would leave the newcomer's source the heaviest
            let Some(&(n, heaviest)) = self.by_len.last() else {
                break;
            };
            let mine = self.waiting.get(&source).map_or(0, VecDeque::len);
            if mine + 1 >= n {
                return (Offer::Full, evicted);
            }
            // n >= 2: the heaviest keeps at least one job and its turn
            let Some(id) = self.waiting.get_mut(&heaviest).and_then(VecDeque::pop_back) else {
                break;
            };
            self.waiting_count -= 1;
            self.set_len(heaviest, n, n - 1);
            if let Some((gone, _)) = self.remove(id) {
                self.waiting_bytes -= gone.size();
                evicted += 1;
            }
        }
        let id = KeyingId(self.next_id);
        self.next_id += 1;
        let q = self.waiting.entry(source).or_default();
        q.push_back(id);
        let len = q.len();
        if len == 1 {
            self.turn.push_back(source);
        }
        self.set_len(source, len - 1, len);
        self.waiting_count += 1;
        self.waiting_bytes += size;
        self.index.insert((p.from, p.digest), id);
        self.jobs.insert(id, (p, None));
        (Offer::Queued, evicted)
    }

    /// Forgets jobs handed out more than `max_wait` ago and never answered
    /// (a lost result must not hold a slot for ever); returns how many.
    fn expire_in_flight(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&(t, id)) = self.handed_out.front() {
            let live = self.jobs.get(&id).is_some_and(|(_, s)| *s == Some(t));
            if live && now.saturating_duration_since(t) <= self.max_wait {
                break;
            }
            self.handed_out.pop_front();
            if live {
                self.remove(id);
                self.in_flight = self.in_flight.saturating_sub(1);
                n += 1;
            }
        }
        if self.handed_out.is_empty() && self.handed_out.capacity() > 1024 {
            self.handed_out = VecDeque::new();
        }
        n
    }

    /// The next job to run, round-robin across sources, while fewer than
    /// the bound are in flight; it counts as in flight until
    /// [`finish`](Self::finish). Jobs that waited too long, and jobs in
    /// flight too long, are dropped on the way (counted in `expired`).
    pub(crate) fn next(
        &mut self,
        now: Instant,
        expired: &mut usize,
    ) -> Option<(KeyingId, &Pending)> {
        *expired += self.expire_in_flight(now);
        let id = self.take_next(now, expired)?;
        self.jobs.get(&id).map(|(p, _)| (id, p))
    }

    fn take_next(&mut self, now: Instant, expired: &mut usize) -> Option<KeyingId> {
        while self.in_flight < self.max_in_flight {
            let source = self.turn.pop_front()?;
            let Some(q) = self.waiting.get_mut(&source) else {
                continue;
            };
            let Some(id) = q.pop_front() else {
                self.waiting.remove(&source);
                continue;
            };
            let len = q.len();
            if len == 0 {
                self.waiting.remove(&source);
            } else {
                self.turn.push_back(source);
            }
            self.set_len(source, len + 1, len);
            self.waiting_count -= 1;
            self.waiting_bytes -= self.jobs.get(&id).map_or(0, |(p, _)| p.size());
            let stale = self
                .jobs
                .get(&id)
                .is_some_and(|(p, _)| now.saturating_duration_since(p.queued) > self.max_wait);
            if stale {
                self.remove(id);
                *expired += 1;
                continue;
            }
            let Some((_, started)) = self.jobs.get_mut(&id) else {
                continue;
            };
            *started = Some(now);
            self.in_flight += 1;
            self.handed_out.push_back((now, id));
            return Some(id);
        }
        None
    }

    /// The job `id` is answered: its bookkeeping, if it is in flight (not
    /// answered already, nor forgotten after `max_wait` in flight).
    pub(crate) fn finish(&mut self, now: Instant, id: KeyingId) -> Finished {
        let Some(started) = self.jobs.get(&id).and_then(|(_, s)| *s) else {
            return Finished::Unknown;
        };
        let Some((p, _)) = self.remove(id) else {
            return Finished::Unknown;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        if now.saturating_duration_since(started) > self.max_wait {
            return Finished::Expired;
        }
        Finished::Done(p)
    }

    fn remove(&mut self, id: KeyingId) -> Option<(Pending, Option<Instant>)> {
        let (p, s) = self.jobs.remove(&id)?;
        self.index.remove(&(p.from, p.digest));
        Some((p, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(port: u16, d: u8, now: Instant) -> Pending {
        Pending {
            from: SocketAddr::from(([198, 18, 0, 1], port)),
            isid: 1,
            digest: [d; 32],
            certificate: Bytes::new(),
            skic: Bytes::new(),
            signed: Bytes::new(),
            signature: Bytes::new(),
            queued: now,
        }
    }

    fn done(f: Finished) -> bool {
        matches!(f, Finished::Done(_))
    }

    #[test]
    fn sources_take_turns_and_the_bound_holds() {
        let now = Instant::now();
        let mut q = KeyingQueue::new(2, 100, Duration::from_secs(5));
        // source 1 floods, source 2 sends one
        for i in 0..10 {
            assert_eq!(q.offer(1, pending(i, i as u8, now)).0, Offer::Queued);
        }
        assert_eq!(q.offer(2, pending(500, 200, now)).0, Offer::Queued);
        let mut expired = 0;
        let (a, _) = q.next(now, &mut expired).unwrap();
        let (b, p) = q.next(now, &mut expired).unwrap();
        // the second job handed out is source 2's, though it came last
        assert_eq!(p.from.port(), 500);
        assert!(q.next(now, &mut expired).is_none(), "bound of 2 in flight");
        assert!(done(q.finish(now, a)));
        assert!(done(q.finish(now, b)));
        assert!(
            matches!(q.finish(now, b), Finished::Unknown),
            "answered twice"
        );
        assert_eq!(q.in_flight(), 0);
        assert_eq!(q.len(), 9);
        assert_eq!(q.waiting(), 9);
    }

    #[test]
    fn a_full_queue_drops_from_the_heaviest_source() {
        let now = Instant::now();
        let mut q = KeyingQueue::new(1, 4, Duration::from_secs(5));
        for i in 0..4 {
            q.offer(1, pending(i, i as u8, now));
        }
        // the flooder cannot add more
        assert_eq!(q.offer(1, pending(9, 9, now)).0, Offer::Full);
        // another source can, at the flooder's expense
        let (o, evicted) = q.offer(2, pending(500, 100, now));
        assert_eq!((o, evicted), (Offer::Queued, 1));
        assert!(!q.index.contains_key(&(pending(3, 3, now).from, [3; 32])));
        assert_eq!(q.len(), 4);
        // and a third, until the flooder is down to the others' share
        assert_eq!(q.offer(3, pending(600, 101, now)).0, Offer::Queued);
        assert_eq!(q.offer(2, pending(501, 102, now)).0, Offer::Full);
        assert_eq!(q.len(), 4);
        // service goes round: 1, 2, 3, 1
        let mut expired = 0;
        let mut order = Vec::new();
        while let Some((id, p)) = q.next(now, &mut expired) {
            order.push(p.from.port());
            q.finish(now, id);
        }
        assert_eq!(order, [0, 500, 600, 1]);
        assert_eq!(q.len(), 0);
        assert!(q.by_len.is_empty() && q.waiting.is_empty());
        assert_eq!(q.waiting_bytes, 0);
    }

    #[test]
    fn large_jobs_are_bounded_in_bytes() {
        let now = Instant::now();
        let big = |port: u16, d: u8| Pending {
            certificate: Bytes::from(vec![0; 8000]),
            ..pending(port, d, now)
        };
        // 10 jobs of 2 KB each: 20 KB of budget
        let mut q = KeyingQueue::new(1, 10, Duration::from_secs(5));
        assert_eq!(q.offer(1, big(1, 1)).0, Offer::Queued);
        assert_eq!(q.offer(1, big(2, 2)).0, Offer::Queued);
        assert_eq!(q.offer(1, big(3, 3)).0, Offer::Full);
        assert_eq!(q.waiting_bytes, 16000);
        // another source gets room at the big source's expense
        assert_eq!(q.offer(2, big(4, 4)), (Offer::Queued, 1));
        // a small job from a third source still fits
        assert_eq!(q.offer(3, pending(5, 5, now)), (Offer::Queued, 0));
        let mut expired = 0;
        while let Some((id, _)) = q.next(now, &mut expired) {
            q.finish(now, id);
        }
        assert_eq!((q.len(), q.waiting_bytes), (0, 0));
        // a single job larger than the whole budget is still taken alone
        let mut q = KeyingQueue::new(1, 1, Duration::from_secs(5));
        assert_eq!(q.offer(1, big(1, 1)).0, Offer::Queued);
    }

    #[test]
    fn duplicates_and_stale_jobs() {
        let now = Instant::now();
        let mut q = KeyingQueue::new(4, 10, Duration::from_secs(2));
        assert_eq!(q.offer(1, pending(1, 1, now)).0, Offer::Queued);
        assert_eq!(q.offer(1, pending(1, 1, now)).0, Offer::Duplicate);
        let mut expired = 0;
        assert!(q.next(now + Duration::from_secs(3), &mut expired).is_none());
        assert_eq!(expired, 1);
        assert_eq!(q.len(), 0);
        // a job in flight too long is forgotten; its late result is refused
        assert_eq!(q.offer(1, pending(1, 1, now)).0, Offer::Queued);
        let (id, _) = q.next(now, &mut expired).unwrap();
        assert!(matches!(
            q.finish(now + Duration::from_secs(3), id),
            Finished::Expired
        ));
        assert_eq!(q.in_flight(), 0);
        // or swept without a result at all, freeing its slot
        assert_eq!(q.offer(1, pending(1, 1, now)).0, Offer::Queued);
        let (id, _) = q.next(now, &mut expired).unwrap();
        expired = 0;
        assert!(q.next(now + Duration::from_secs(3), &mut expired).is_none());
        assert_eq!(expired, 1);
        assert_eq!((q.in_flight(), q.len()), (0, 0));
        assert!(matches!(q.finish(now, id), Finished::Unknown));
    }
}
