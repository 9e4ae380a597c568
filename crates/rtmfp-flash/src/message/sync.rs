//! Flow Synchronization barriers (RFC 7425 §5.2).
//!
//! On receipt of a Flow Synchronization message (User Control event 34) a
//! receiver suspends that flow until `count` Flow Synchronization messages
//! with the same syncID have arrived on flows of the same association tree.
//! [`SyncBarriers`] keeps that bookkeeping for one tree; the caller suspends
//! and resumes reading the flows (with the engine's suspended delivery, so a
//! suspended flow's window closes and memory stays bounded).

use std::collections::{HashMap, VecDeque};

/// Most barriers waiting at once; beyond it the oldest is released so a
/// hostile sender cannot grow the table.
pub const MAX_PENDING_BARRIERS: usize = 256;

/// Flow Synchronization state for one flow association tree.
#[derive(Debug, Default)]
pub struct SyncBarriers {
    /// Flow → the syncID it is suspended at.
    suspended: HashMap<u64, u32>,
    /// syncID → (count wanted, flows that reached it).
    arrivals: HashMap<u32, (u32, Vec<u64>)>,
    order: VecDeque<u32>,
}

impl SyncBarriers {
    /// An empty set of barriers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether messages on `flow` must not be delivered now.
    pub fn is_suspended(&self, flow: u64) -> bool {
        self.suspended.contains_key(&flow)
    }

    /// A Flow Synchronization message `(sync_id, count)` arrived on `flow`.
    /// Returns the flows to resume: empty when `flow` must now wait, or
    /// every flow of the barrier (this one included) when it is complete.
    pub fn on_sync(&mut self, flow: u64, sync_id: u32, count: u32) -> Vec<u64> {
        let entry = self.arrivals.entry(sync_id).or_insert_with(|| {
            self.order.push_back(sync_id);
            (count.max(1), Vec::new())
        });
        if !entry.1.contains(&flow) {
            entry.1.push(flow);
        }
        let mut released = Vec::new();
        if entry.1.len() as u64 >= u64::from(entry.0) {
            released = self.release(sync_id);
        } else {
            self.suspended.insert(flow, sync_id);
        }
        while self.arrivals.len() > MAX_PENDING_BARRIERS {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            released.extend(self.release(oldest));
        }
        released
    }

    fn release(&mut self, sync_id: u32) -> Vec<u64> {
        self.order.retain(|&s| s != sync_id);
        let Some((_, flows)) = self.arrivals.remove(&sync_id) else {
            return Vec::new();
        };
        for f in &flows {
            if self.suspended.get(f) == Some(&sync_id) {
                self.suspended.remove(f);
            }
        }
        flows
    }

    /// A flow ended: it can no longer arrive at a barrier. Barriers it was
    /// part of keep their count (the sender must still complete them), but
    /// the flow is no longer suspended.
    pub fn forget_flow(&mut self, flow: u64) {
        self.suspended.remove(&flow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7425_figure_2() {
        // F1: M1 M2 M4 Sync(8,2) | Sync(13,2) | M7 ; F2: M3 Sync(8,2) | M5 Sync(13,2) | M6
        let mut b = SyncBarriers::new();
        assert!(b.on_sync(1, 8, 2).is_empty());
        assert!(b.is_suspended(1));
        let r = b.on_sync(2, 8, 2);
        assert_eq!(r, vec![1, 2]);
        assert!(!b.is_suspended(1) && !b.is_suspended(2));
        assert!(b.on_sync(1, 13, 2).is_empty());
        assert!(
            b.is_suspended(1),
            "M7 waits behind barrier 13 while M5 is delivered"
        );
        assert!(!b.is_suspended(2));
        assert_eq!(b.on_sync(2, 13, 2), vec![1, 2]);
        assert!(!b.is_suspended(1));
    }

    #[test]
    fn count_one_never_suspends_and_table_is_bounded() {
        let mut b = SyncBarriers::new();
        assert_eq!(b.on_sync(5, 1, 1), vec![5]);
        for i in 0..10_000u32 {
            b.on_sync(u64::from(i), i + 10, 3);
        }
        assert!(b.arrivals.len() <= MAX_PENDING_BARRIERS);
        assert!(b.suspended.len() <= MAX_PENDING_BARRIERS);
    }
}
