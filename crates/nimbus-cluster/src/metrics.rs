//! The cluster layer's counters and gauges (`nimbus_cluster_*`), for the
//! server to render with its own metrics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

macro_rules! cluster_metrics {
    ($( $(#[$doc:meta])* $kind:ident $name:ident : $help:literal ),* $(,)?) => {
        /// Counters and gauges of one node's cluster layer (relaxed atomics).
        #[derive(Debug, Default)]
        pub struct ClusterMetrics {
            $( $(#[$doc])* pub $name: cluster_metrics!(@ty $kind), )*
        }

        impl ClusterMetrics {
            /// Prometheus text exposition format, each name prefixed with
            /// `nimbus_cluster_`.
            pub fn render(&self) -> String {
                let mut out = String::with_capacity(2048);
                $(
                    let _ = writeln!(out, "# HELP nimbus_cluster_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE nimbus_cluster_{} {}", stringify!($name), cluster_metrics!(@kind $kind));
                    let _ = writeln!(out, "nimbus_cluster_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )*
                out
            }
        }
    };
    (@ty counter) => { AtomicU64 };
    (@ty gauge) => { AtomicI64 };
    (@kind counter) => { "counter" };
    (@kind gauge) => { "gauge" };
}

cluster_metrics! {
    /// 1 while the node's Redis connection works, else 0.
    gauge redis_up: "1 while this node reaches Redis, 0 while it does not",
    /// Times the connection was lost.
    counter redis_losses_total: "times this node lost its Redis connection",
    /// Full re-registrations of the node's state after Redis came back.
    counter resyncs_total: "full re-registrations of this node's state in Redis (after a loss)",
    /// Heartbeats written.
    counter heartbeats_total: "heartbeats written to Redis",
    /// Heartbeats that failed.
    counter heartbeat_failures_total: "heartbeats that failed",
    /// State changes written to Redis.
    counter writes_total: "state changes written to Redis",
    /// State changes not written (Redis lost: the resync writes them).
    counter writes_deferred_total: "state changes not written while Redis was lost (the resync writes them)",
    /// Lookups asked of Redis.
    counter lookups_total: "lookups (peer, user, stream, group, nodes) asked of Redis",
    /// Lookups that failed (Redis lost or slow).
    counter lookup_failures_total: "lookups that failed because Redis was lost or too slow",
    /// Claims (user names, streams) refused because another node holds them.
    counter claims_refused_total: "user-name and stream claims refused because another node holds them",
    /// Messages published to other nodes.
    counter messages_sent_total: "messages published to other nodes",
    /// Messages that no node was listening for.
    counter messages_unheard_total: "messages published that no node received",
    /// Messages that could not be sent (queue full, Redis lost).
    counter messages_send_dropped_total: "messages not sent: queue full or Redis lost",
    /// Messages received and handed to the server.
    counter messages_received_total: "messages received from other nodes",
    /// Messages dropped because they were malformed.
    counter messages_malformed_total: "messages dropped because they were malformed",
    /// Messages dropped because the receive queue was full.
    counter messages_receive_dropped_total: "messages dropped because the receive queue was full",
    /// Another process wrote this node's heartbeat key.
    counter name_conflicts_total: "times another process held this node's name",
    /// Live nodes seen at the last heartbeat.
    gauge nodes: "live nodes seen at the last heartbeat (this one included)",
    /// Peers this node registers.
    gauge peers: "peers this node registers",
    /// User names this node registers.
    gauge users: "user names this node registers",
    /// Streams this node registers.
    gauge streams: "published streams this node registers",
    /// Group memberships this node registers.
    gauge group_members: "NetGroup memberships this node registers",
}

impl ClusterMetrics {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set(g: &AtomicI64, v: usize) {
        g.store(i64::try_from(v).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names() {
        let m = ClusterMetrics::default();
        ClusterMetrics::inc(&m.messages_malformed_total);
        let text = m.render();
        assert!(text.contains("nimbus_cluster_messages_malformed_total 1\n"));
        assert!(text.contains("# TYPE nimbus_cluster_redis_up gauge\n"));
    }
}
