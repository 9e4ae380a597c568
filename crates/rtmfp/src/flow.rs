//! Sending and receiving flows (RFC 7016 §3.6).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use crate::session::release_if_empty;
use crate::wire::Fragmentation;

/// Flow priority. Flows at [`Priority::PRIORITY`] and above are time
/// critical: their packets carry the TC flag and they are served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Priority(pub u8);

impl Priority {
    /// Background traffic.
    pub const BACKGROUND: Priority = Priority(0);
    /// Bulk data.
    pub const BULK: Priority = Priority(1);
    /// Routine data (the default).
    pub const ROUTINE: Priority = Priority(2);
    /// Time-critical (e.g. video).
    pub const PRIORITY: Priority = Priority(4);
    /// Most urgent time-critical traffic (e.g. audio).
    pub const IMMEDIATE: Priority = Priority(6);
    /// Whether flows of this priority are time critical.
    pub fn is_time_critical(self) -> bool {
        self >= Self::PRIORITY
    }
}

/// Sending flow states (§3.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendState {
    Open,
    Closing,
    CompleteLinger(Instant),
}

#[derive(Debug, Clone)]
pub(crate) struct SendEntry {
    pub data: Bytes,
    pub fra: Fragmentation,
    pub abandoned: bool,
    pub sent_abandoned: bool,
    pub ever_sent: bool,
    pub in_flight: bool,
    pub acked: bool,
    pub tsn: u64,
    pub transmit_size: u32,
    /// Sequence number of the first fragment of this entry's message.
    pub msg_first: u64,
    pub deadline: Option<Instant>,
}

impl SendEntry {
    fn new(
        data: Bytes,
        fra: Fragmentation,
        msg_first: u64,
        deadline: Option<Instant>,
        abandoned: bool,
    ) -> Self {
        Self {
            data,
            fra,
            abandoned,
            sent_abandoned: false,
            ever_sent: false,
            in_flight: false,
            acked: false,
            tsn: 0,
            transmit_size: 0,
            msg_first,
            deadline,
        }
    }
}

/// A sending flow context (§3.6.2).
#[derive(Debug)]
pub(crate) struct SendFlow {
    pub id: u64,
    pub state: SendState,
    pub metadata: Bytes,
    pub association: Option<u64>,
    /// Startup options still to be sent (cleared on first ack).
    pub startup_options: bool,
    pub priority: Priority,
    /// Entries with sequence numbers `base_seq..next_sn`.
    pub queue: VecDeque<SendEntry>,
    pub base_seq: u64,
    pub next_sn: u64,
    pub final_sn: Option<u64>,
    pub exception: bool,
    pub rx_buffer_size: u64,
    pub outstanding_bytes: u64,
    /// User data bytes queued and not yet acknowledged or abandoned.
    pub buffered_bytes: usize,
    /// Lost fragments waiting for retransmission.
    pub retransmit: BTreeSet<u64>,
    /// Lowest sequence number never sent.
    pub next_new: u64,
    pub writable_blocked: bool,
    pub probe_at: Option<Instant>,
    pub probe_interval: std::time::Duration,
    pub earliest_deadline: Option<Instant>,
}

impl SendFlow {
    pub(crate) fn new(
        id: u64,
        metadata: Bytes,
        association: Option<u64>,
        priority: Priority,
    ) -> Self {
        Self {
            id,
            state: SendState::Open,
            metadata,
            association,
            startup_options: true,
            priority,
            queue: VecDeque::new(),
            base_seq: 1,
            next_sn: 1,
            final_sn: None,
            exception: false,
            rx_buffer_size: 65536,
            outstanding_bytes: 0,
            buffered_bytes: 0,
            retransmit: BTreeSet::new(),
            next_new: 1,
            writable_blocked: false,
            probe_at: None,
            probe_interval: std::time::Duration::from_secs(1),
            earliest_deadline: None,
        }
    }

    pub(crate) fn entry(&self, seq: u64) -> Option<&SendEntry> {
        let i = seq.checked_sub(self.base_seq)?;
        self.queue.get(usize::try_from(i).ok()?)
    }

    pub(crate) fn entry_mut(&mut self, seq: u64) -> Option<&mut SendEntry> {
        let i = seq.checked_sub(self.base_seq)?;
        self.queue.get_mut(usize::try_from(i).ok()?)
    }

    /// Queues a message as fragments of at most `frag_size` bytes (§3.6.2.2).
    pub(crate) fn enqueue(&mut self, data: Bytes, frag_size: usize, deadline: Option<Instant>) {
        let first = self.next_sn;
        let len = data.len();
        self.buffered_bytes += len;
        let n = len.div_ceil(frag_size).max(1);
        for i in 0..n {
            let start = i * frag_size;
            let end = (start + frag_size).min(len);
            let fra = match (n, i) {
                (1, _) => Fragmentation::Whole,
                (_, 0) => Fragmentation::Begin,
                (_, i) if i == n - 1 => Fragmentation::End,
                _ => Fragmentation::Middle,
            };
            self.queue.push_back(SendEntry::new(
                data.slice(start..end),
                fra,
                first,
                deadline,
                false,
            ));
            self.next_sn += 1;
        }
        if let Some(d) = deadline {
            self.earliest_deadline = Some(self.earliest_deadline.map_or(d, |e| e.min(d)));
        }
    }

    /// Closes the flow (§3.6.2.11).
    pub(crate) fn close(&mut self) {
        if self.state != SendState::Open {
            return;
        }
        self.state = SendState::Closing;
        match self.queue.back() {
            Some(e) if !e.ever_sent && !e.acked => {
                self.final_sn = Some(self.next_sn - 1);
            }
            _ => {
                let e =
                    SendEntry::new(Bytes::new(), Fragmentation::Whole, self.next_sn, None, true);
                self.queue.push_back(e);
                self.final_sn = Some(self.next_sn);
                self.next_sn += 1;
            }
        }
    }

    /// Abandons the message containing `seq` (all of its fragments).
    pub(crate) fn abandon_message(&mut self, seq: u64) {
        let Some(first) = self.entry(seq).map(|e| e.msg_first) else {
            return;
        };
        let mut s = first;
        while let Some(e) = self.entry_mut(s) {
            if e.msg_first != first {
                break;
            }
            if !e.abandoned && !e.acked {
                e.abandoned = true;
                let n = e.data.len();
                self.buffered_bytes -= n;
            }
            s += 1;
        }
    }

    /// Abandons every queued message whose deadline has passed.
    pub(crate) fn abandon_expired(&mut self, now: Instant) {
        match self.earliest_deadline {
            Some(d) if d <= now => {}
            _ => return,
        }
        let mut earliest: Option<Instant> = None;
        let mut to_abandon = Vec::new();
        for (i, e) in self.queue.iter().enumerate() {
            if e.acked || e.abandoned {
                continue;
            }
            if let Some(d) = e.deadline {
                if d <= now {
                    to_abandon.push(self.base_seq + i as u64);
                } else {
                    earliest = Some(earliest.map_or(d, |x| x.min(d)));
                }
            }
        }
        for s in to_abandon {
            self.abandon_message(s);
        }
        self.earliest_deadline = earliest;
    }

    /// Abandons everything (on exception, §3.6.2.10).
    pub(crate) fn abandon_all(&mut self) {
        for e in self.queue.iter_mut() {
            if !e.abandoned && !e.acked {
                e.abandoned = true;
            }
        }
        self.buffered_bytes = 0;
    }

    /// Trims acknowledged entries, and abandoned entries that are not in
    /// flight while at least two entries remain, from the front (§3.6.2.3).
    pub(crate) fn trim(&mut self) {
        while let Some(e) = self.queue.front() {
            let removable = e.acked || (self.queue.len() >= 2 && !e.in_flight && e.abandoned);
            if !removable {
                break;
            }
            self.queue.pop_front();
            self.base_seq += 1;
        }
        if self.next_new < self.base_seq {
            self.next_new = self.base_seq;
        }
        while self.retransmit.first().is_some_and(|&s| s < self.base_seq) {
            self.retransmit.pop_first();
        }
    }

    /// The Forward Sequence Number (§3.6.2.3).
    pub(crate) fn fsn(&self) -> u64 {
        match self.queue.front() {
            None => self.next_sn - 1,
            Some(e) => {
                if !e.abandoned || (e.in_flight && !e.sent_abandoned) {
                    self.base_seq - 1
                } else {
                    self.base_seq
                }
            }
        }
    }

    fn eligible(&self, seq: u64) -> bool {
        match self.entry(seq) {
            Some(e) => {
                !e.in_flight
                    && !e.acked
                    && (!e.abandoned || seq == self.base_seq || Some(seq) == self.final_sn)
            }
            None => false,
        }
    }

    /// Whether the flow may put data into the network now (§3.6.2.3, §3.6.2.9).
    pub(crate) fn window_open(&self) -> bool {
        self.exception || self.rx_buffer_size > self.outstanding_bytes
    }

    /// The next fragment to transmit, if any (lost fragments first).
    pub(crate) fn next_eligible(&mut self) -> Option<u64> {
        while let Some(&s) = self.retransmit.first() {
            if self.eligible(s) {
                return Some(s);
            }
            self.retransmit.pop_first();
        }
        while self.next_new < self.next_sn {
            let s = self.next_new;
            if self.eligible(s) {
                return Some(s);
            }
            // skipped: abandoned and not first/final, or already in flight
            let skip = match self.entry(s) {
                Some(e) => e.abandoned || e.acked || e.in_flight,
                None => true,
            };
            if !skip {
                return None;
            }
            self.next_new += 1;
        }
        None
    }

    /// Whether the flow has something to send.
    pub(crate) fn has_eligible(&mut self) -> bool {
        self.next_eligible().is_some()
    }

    /// Frees the buffers of empty queues.
    pub(crate) fn compact(&mut self) {
        release_if_empty(&mut self.queue);
        if self.retransmit.is_empty() {
            // an emptied B-tree may keep its root node
            self.retransmit = BTreeSet::new();
        }
    }

    /// Whether the sending flow is complete (§3.6.2.11).
    pub(crate) fn is_complete(&self) -> bool {
        self.state == SendState::Closing && self.queue.is_empty()
    }
}

/// A set of `u64` as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default)]
pub(crate) struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    pub(crate) fn contains(&self, x: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 < x);
        self.ranges.get(i).is_some_and(|r| r.0 <= x)
    }

    pub(crate) fn insert(&mut self, lo: u64, hi: u64) {
        // fast path: extend or append at the end
        if let Some(last) = self.ranges.last_mut() {
            if lo > last.1.saturating_add(1) {
                self.ranges.push((lo, hi));
                return;
            }
            if lo >= last.0 {
                last.1 = last.1.max(hi);
                return;
            }
        } else {
            self.ranges.push((lo, hi));
            return;
        }
        // general case
        let i = self.ranges.partition_point(|r| r.1.saturating_add(1) < lo);
        let mut j = i;
        let mut nlo = lo;
        let mut nhi = hi;
        while j < self.ranges.len() && self.ranges[j].0 <= hi.saturating_add(1) {
            nlo = nlo.min(self.ranges[j].0);
            nhi = nhi.max(self.ranges[j].1);
            j += 1;
        }
        self.ranges.splice(i..j, std::iter::once((nlo, nhi)));
    }

    /// Highest number of the contiguous range starting at 0, if any.
    pub(crate) fn cumulative(&self) -> Option<u64> {
        match self.ranges.first() {
            Some(&(0, hi)) => Some(hi),
            _ => None,
        }
    }

    pub(crate) fn has_gaps(&self) -> bool {
        self.ranges.len() > 1 || self.ranges.first().is_some_and(|r| r.0 != 0)
    }

    pub(crate) fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Drops spare capacity once there are no gaps (one range), so that
    /// lossy transfers do not reallocate back and forth.
    pub(crate) fn compact(&mut self) {
        if self.ranges.len() <= 1 && self.ranges.capacity() > self.ranges.len() {
            self.ranges.shrink_to_fit();
        }
    }
}

/// Receiving flow states (§3.6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvState {
    Open,
    Rejected(u64),
    CompleteLinger(Instant),
}

/// A complete message read from a receiving flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvMessage {
    /// The message bytes.
    pub data: Bytes,
    /// Some earlier messages of the flow were abandoned by the sender and
    /// will never arrive (a gap, §3.6.1.2).
    pub after_gap: bool,
}

/// A receiving flow context (§3.6.3).
#[derive(Debug)]
pub(crate) struct RecvFlow {
    pub id: u64,
    pub state: RecvState,
    pub metadata: Bytes,
    #[allow(dead_code)]
    pub association: Option<u64>,
    pub seqs: RangeSet,
    pub final_sn: Option<u64>,
    /// Fragments not yet delivered, keyed by sequence number.
    pub buffer: BTreeMap<u64, (Fragmentation, Bytes)>,
    pub buffered_bytes: usize,
    pub capacity: usize,
    pub prev_rwnd: Option<u64>,
    pub should_ack: bool,
    pub ordered: bool,
    pub paused: bool,
    /// Complete messages waiting for the user.
    pub ready: VecDeque<RecvMessage>,
    pub gap_pending: bool,
    pub announced: bool,
    pub complete_reported: bool,
}

/// Result of receiving a fragment.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RecvOutcome {
    pub ack_now: bool,
    pub became_readable: bool,
}

impl RecvFlow {
    pub(crate) fn new(id: u64, metadata: Bytes, association: Option<u64>, capacity: usize) -> Self {
        Self {
            id,
            state: RecvState::Open,
            metadata,
            association,
            seqs: RangeSet::default(),
            final_sn: None,
            buffer: BTreeMap::new(),
            buffered_bytes: 0,
            capacity,
            prev_rwnd: None,
            should_ack: false,
            ordered: true,
            paused: false,
            ready: VecDeque::new(),
            gap_pending: false,
            announced: false,
            complete_reported: false,
        }
    }

    pub(crate) fn csn(&self) -> u64 {
        self.seqs.cumulative().unwrap_or(0)
    }

    /// Processes a User Data fragment (§3.6.3.2 steps 3-16).
    pub(crate) fn receive(
        &mut self,
        seq: u64,
        fsn: u64,
        fra: Fragmentation,
        abandon: bool,
        fin: bool,
        data: &[u8],
        bytes_of: impl FnOnce(&[u8]) -> Bytes,
    ) -> RecvOutcome {
        let mut out = RecvOutcome::default();
        self.should_ack = true;
        if self.state != RecvState::Open {
            out.ack_now = true;
        }
        if self.prev_rwnd.is_some_and(|p| p < 2) || abandon || self.seqs.has_gaps() {
            out.ack_now = true;
        }
        let dup = self.seqs.contains(seq);
        if dup {
            out.ack_now = true;
        }
        if !dup && fin && self.final_sn.is_none() {
            self.final_sn = Some(seq);
            out.ack_now = true;
        }
        let before_csn = self.csn();
        if fsn > before_csn {
            // sequence numbers in (csn, fsn] that we never saw were abandoned
            let mut missing = false;
            let mut cursor = before_csn + 1;
            for &(lo, hi) in self.seqs.ranges() {
                if hi < cursor {
                    continue;
                }
                if lo > cursor {
                    missing = true;
                    break;
                }
                cursor = hi + 1;
                if cursor > fsn {
                    break;
                }
            }
            if cursor <= fsn {
                missing = true;
            }
            if missing {
                self.gap_pending = true;
            }
        }
        let open = self.state == RecvState::Open;
        if open && !dup && !abandon {
            let csn_after_fsn = before_csn.max(fsn);
            // fast path: next in order, whole message, nothing buffered
            if self.ordered
                && !self.paused
                && fra == Fragmentation::Whole
                && seq == csn_after_fsn + 1
                && self.buffer.is_empty()
            {
                self.ready.push_back(RecvMessage {
                    data: bytes_of(data),
                    after_gap: std::mem::take(&mut self.gap_pending),
                });
                self.buffered_bytes += data.len();
                out.became_readable = true;
            } else {
                self.buffered_bytes += data.len();
                self.buffer.insert(seq, (fra, bytes_of(data)));
            }
        }
        self.seqs.insert(0, fsn);
        self.seqs.insert(seq, seq);
        if self.seqs.has_gaps() {
            out.ack_now = true;
        }
        if self.capacity < self.buffered_bytes + 1024 {
            out.ack_now = true;
        }
        if open && !self.buffer.is_empty() && self.deliver() {
            out.became_readable = true;
        }
        out
    }

    /// Moves complete messages from the reassembly buffer to `ready`
    /// (§3.6.3.3). Returns whether anything became ready.
    pub(crate) fn deliver(&mut self) -> bool {
        if self.paused {
            return false;
        }
        let mut any = false;
        if !self.ordered {
            any |= self.deliver_unordered();
        }
        let csn = self.csn();
        while let Some((&seq, &(fra, _))) = self.buffer.first_key_value() {
            if seq > csn {
                break;
            }
            match fra {
                Fragmentation::Whole => {
                    let (_, (_, d)) = self.buffer.pop_first().expect("non-empty");
                    self.ready.push_back(RecvMessage {
                        data: d,
                        after_gap: std::mem::take(&mut self.gap_pending),
                    });
                    any = true;
                }
                Fragmentation::End | Fragmentation::Middle => {
                    let (_, (_, d)) = self.buffer.pop_first().expect("non-empty");
                    self.buffered_bytes -= d.len();
                    self.gap_pending = true;
                }
                Fragmentation::Begin => {
                    // find the segment's last entry
                    let mut last = seq;
                    let mut last_fra = fra;
                    for (&s, &(f, _)) in self.buffer.range(seq + 1..) {
                        if s != last + 1 || f == Fragmentation::Begin || f == Fragmentation::Whole {
                            break;
                        }
                        last = s;
                        last_fra = f;
                        if f == Fragmentation::End {
                            break;
                        }
                    }
                    if last_fra == Fragmentation::End {
                        let mut msg = Vec::new();
                        for s in seq..=last {
                            let (_, d) = self.buffer.remove(&s).expect("present");
                            msg.extend_from_slice(&d);
                        }
                        self.ready.push_back(RecvMessage {
                            data: Bytes::from(msg),
                            after_gap: std::mem::take(&mut self.gap_pending),
                        });
                        any = true;
                    } else if last < csn {
                        for s in seq..=last {
                            let (_, d) = self.buffer.remove(&s).expect("present");
                            self.buffered_bytes -= d.len();
                        }
                        self.gap_pending = true;
                    } else {
                        break;
                    }
                }
            }
        }
        any
    }

    /// Unordered delivery: any complete message in the buffer is delivered
    /// at once, whatever comes before it.
    fn deliver_unordered(&mut self) -> bool {
        let mut any = false;
        let mut complete: Vec<(u64, u64)> = Vec::new();
        let mut start: Option<u64> = None;
        let mut prev: Option<u64> = None;
        for (&s, &(f, _)) in &self.buffer {
            if prev.is_some_and(|p| p + 1 != s) {
                start = None;
            }
            match f {
                Fragmentation::Whole => {
                    complete.push((s, s));
                    start = None;
                }
                Fragmentation::Begin => start = Some(s),
                Fragmentation::Middle => {}
                Fragmentation::End => {
                    if let Some(b) = start.take() {
                        complete.push((b, s));
                    }
                }
            }
            prev = Some(s);
        }
        for (a, b) in complete {
            let mut msg = Vec::new();
            for s in a..=b {
                if let Some((_, d)) = self.buffer.remove(&s) {
                    if a == b {
                        self.ready.push_back(RecvMessage {
                            data: d,
                            after_gap: false,
                        });
                        any = true;
                        continue;
                    }
                    msg.extend_from_slice(&d);
                }
            }
            if a != b {
                self.ready.push_back(RecvMessage {
                    data: Bytes::from(msg),
                    after_gap: false,
                });
                any = true;
            }
        }
        any
    }

    /// Reads one message; the buffer space is released.
    pub(crate) fn read(&mut self) -> Option<RecvMessage> {
        let m = self.ready.pop_front()?;
        self.buffered_bytes -= m.data.len();
        Some(m)
    }

    /// The receive window advertisement in blocks (§3.6.3.5).
    pub(crate) fn advertise_blocks(&self) -> u64 {
        if matches!(self.state, RecvState::Rejected(_)) {
            // keep the sender moving so it learns of the rejection
            return (self.capacity.max(1024) / 1024) as u64;
        }
        let bytes = self.capacity.saturating_sub(self.buffered_bytes);
        let mut blocks = bytes.div_ceil(1024) as u64;
        if blocks == 0 && self.capacity > 0 && !self.paused {
            blocks = 1;
        }
        blocks
    }

    /// Rejects the flow (§3.6.3.7).
    pub(crate) fn reject(&mut self, code: u64) {
        if self.state != RecvState::Open {
            return;
        }
        self.state = RecvState::Rejected(code);
        self.buffer.clear();
        self.ready.clear();
        self.buffered_bytes = 0;
        self.should_ack = true;
    }

    /// Frees the buffers of empty queues and spare range capacity.
    pub(crate) fn compact(&mut self) {
        release_if_empty(&mut self.ready);
        if self.buffer.is_empty() {
            // an emptied B-tree may keep its root node
            self.buffer = BTreeMap::new();
        }
        self.seqs.compact();
    }

    /// Whether every sequence number through the final one was received
    /// (§3.6.3.8).
    pub(crate) fn is_complete(&self) -> bool {
        self.final_sn
            .is_some_and(|f| self.seqs.cumulative().is_some_and(|c| c >= f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rangeset_basics() {
        let mut r = RangeSet::default();
        r.insert(0, 3);
        r.insert(5, 6);
        assert_eq!(r.cumulative(), Some(3));
        assert!(r.has_gaps());
        r.insert(4, 4);
        assert_eq!(r.ranges(), &[(0, 6)]);
        r.insert(10, 12);
        r.insert(8, 8);
        r.insert(7, 9);
        assert_eq!(r.ranges(), &[(0, 12)]);
    }

    proptest! {
        #[test]
        fn rangeset_matches_model(ops in proptest::collection::vec((0u64..200, 0u64..10), 0..100)) {
            let mut r = RangeSet::default();
            let mut model = std::collections::BTreeSet::new();
            for (lo, n) in ops {
                r.insert(lo, lo + n);
                for x in lo..=lo + n { model.insert(x); }
            }
            for x in 0..220 { prop_assert_eq!(r.contains(x), model.contains(&x)); }
            for w in r.ranges().windows(2) { prop_assert!(w[0].1 + 1 < w[1].0); }
        }

        #[test]
        fn reassembly_delivers_each_message_once(order in Just((1u64..=30).collect::<Vec<_>>()).prop_shuffle()) {
            // 10 messages of 3 fragments each
            let mut f = RecvFlow::new(1, Bytes::new(), None, 1 << 20);
            for s in order {
                let i = (s - 1) % 3;
                let fra = match i { 0 => Fragmentation::Begin, 1 => Fragmentation::Middle, _ => Fragmentation::End };
                let d = [s as u8];
                f.receive(s, 0, fra, false, false, &d, Bytes::copy_from_slice);
            }
            let mut msgs = Vec::new();
            while let Some(m) = f.read() { msgs.push(m.data.to_vec()); }
            let want: Vec<Vec<u8>> = (0..10u8).map(|m| vec![3*m+1, 3*m+2, 3*m+3]).collect();
            prop_assert_eq!(msgs, want);
            prop_assert_eq!(f.buffered_bytes, 0);
        }
    }
}

/// The flows of one session by flow ID: a sorted vector of boxed flows.
/// Sessions have few flows, so this holds one flow in 16 bytes besides
/// the flow itself (a hash map allocates at least four buckets), looks up
/// in O(log n), and inserts or removes in O(n) moves of 16 bytes (n is
/// bounded by `max_flows_per_session`).
#[derive(Debug)]
pub(crate) struct FlowMap<T> {
    entries: Vec<(u64, Box<T>)>,
}

impl<T> Default for FlowMap<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<T> FlowMap<T> {
    fn find(&self, id: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&id, |e| e.0)
    }

    pub(crate) fn get(&self, id: &u64) -> Option<&T> {
        self.find(*id).ok().map(|i| &*self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, id: &u64) -> Option<&mut T> {
        match self.find(*id) {
            Ok(i) => Some(&mut *self.entries[i].1),
            Err(_) => None,
        }
    }

    pub(crate) fn contains_key(&self, id: &u64) -> bool {
        self.find(*id).is_ok()
    }

    /// Inserts or replaces.
    pub(crate) fn insert(&mut self, id: u64, flow: Box<T>) {
        match self.find(id) {
            Ok(i) => self.entries[i].1 = flow,
            Err(i) => {
                if self.entries.capacity() == 0 {
                    self.entries.reserve_exact(1);
                }
                self.entries.insert(i, (id, flow));
            }
        }
    }

    pub(crate) fn remove(&mut self, id: &u64) -> Option<Box<T>> {
        let i = self.find(*id).ok()?;
        let (_, f) = self.entries.remove(i);
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
        Some(f)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn clear(&mut self) {
        self.entries = Vec::new();
    }

    /// Flows in flow ID order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|e| &*e.1)
    }

    /// Flows in flow ID order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().map(|e| &mut *e.1)
    }
}

#[cfg(test)]
mod flow_map_tests {
    use super::FlowMap;

    #[test]
    fn behaves_like_a_map() {
        let mut m: FlowMap<u32> = FlowMap::default();
        let mut model = std::collections::BTreeMap::new();
        let mut x = 7u64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = (x >> 33) % 50;
            if x % 3 == 0 {
                assert_eq!(m.remove(&id).map(|b| *b), model.remove(&id));
            } else {
                m.insert(id, Box::new(x as u32));
                model.insert(id, x as u32);
            }
            assert_eq!(m.len(), model.len());
            assert_eq!(m.contains_key(&id), model.contains_key(&id));
            assert_eq!(m.get(&id), model.get(&id));
        }
        assert!(m.values().copied().eq(model.values().copied()));
        for v in m.values_mut() {
            *v = 1;
        }
        assert!(m.values().all(|v| *v == 1));
        m.clear();
        assert_eq!(m.len(), 0);
    }
}
