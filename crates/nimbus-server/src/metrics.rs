//! Counters and gauges, rendered in the Prometheus text format at
//! `GET /metrics` (see `docs/server.md` for the list).
//!
//! The shards count what they do in [`Metrics`]' atomics; the UDP traffic
//! (datagrams, bytes, system calls, send errors) is what the shards' hosts
//! count in their sockets ([`IoStats`]), summed when read.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;

use rtmfp_tokio::{HostHandle, IoStats};

use crate::shard::ShardCore;

macro_rules! metrics {
    ($( $(#[$doc:meta])* $kind:ident $name:ident : $help:literal ),* $(,)?) => {
        /// The server's metrics (shared by every shard; relaxed atomics).
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[$doc])* pub $name: metrics!(@ty $kind), )*
            traffic: Traffic,
        }

        impl Metrics {
            /// Prometheus text exposition format.
            pub fn render(&self) -> String {
                let mut out = String::with_capacity(4096);
                $(
                    let _ = writeln!(out, "# HELP nimbus_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE nimbus_{} {}", stringify!($name), metrics!(@kind $kind));
                    let _ = writeln!(out, "nimbus_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )*
                let io = self.io();
                for (name, help, value) in [
                    ("datagrams_received_total", "UDP datagrams received", io.datagrams_received),
                    ("datagrams_sent_total", "UDP datagrams sent", io.datagrams_sent),
                    ("bytes_received_total", "UDP payload bytes received", io.bytes_received),
                    ("bytes_sent_total", "UDP payload bytes sent", io.bytes_sent),
                    ("recv_calls_total", "receive system calls that returned datagrams (datagrams_received_total / recv_calls_total = datagrams per call)", io.recv_calls),
                    ("send_calls_total", "send system calls (datagrams_sent_total / send_calls_total = datagrams per call)", io.send_calls),
                    ("send_blocked_total", "times a full socket made a shard wait before sending more", io.send_blocked),
                    ("socket_errors_total", "UDP send and receive errors (refused sends, ICMP errors)", io.send_errors + io.recv_errors),
                ] {
                    let _ = writeln!(out, "# HELP nimbus_{name} {help}");
                    let _ = writeln!(out, "# TYPE nimbus_{name} counter");
                    let _ = writeln!(out, "nimbus_{name} {value}");
                }
                out
            }
        }
    };
    (@ty counter) => { AtomicU64 };
    (@ty gauge) => { AtomicI64 };
    (@kind counter) => { "counter" };
    (@kind gauge) => { "gauge" };
}

metrics! {
    /// Sessions open now.
    gauge sessions: "RTMFP sessions open now",
    /// Keyings waiting or running.
    gauge keyings_pending: "handshake keyings waiting or running now",
    /// Connected NetConnections now.
    gauge connections: "NetConnections accepted and open now",
    /// Streams being published now.
    gauge streams_published: "streams being published through the server now",
    /// Players now.
    gauge stream_players: "players of relayed streams now",
    /// NetGroups now.
    gauge groups: "NetGroups with at least one member now",
    /// NetGroup memberships now.
    gauge group_members: "NetGroup members now (a client in two groups counts twice)",
    /// Sessions opened.
    counter sessions_opened_total: "RTMFP sessions opened (handshakes completed)",
    /// Sessions closed.
    counter sessions_closed_total: "RTMFP sessions closed",
    /// Connects accepted.
    counter connects_accepted_total: "NetConnection connects accepted",
    /// Connects rejected.
    counter connects_rejected_total: "NetConnection connects rejected by policy or limits",
    /// IHellos answered with an introduction.
    counter introductions_total: "introductions (Redirect and Forwarded IHello) to a connected peer",
    /// IHellos for unknown peers.
    counter introductions_unknown_total: "IHellos naming a peer ID that is not connected (not answered)",
    /// Group joins accepted.
    counter group_joins_total: "NetGroup joins accepted",
    /// Group leaves.
    counter group_leaves_total: "NetGroup members removed (join flow closed or session ended)",
    /// Group joins refused.
    counter group_join_refusals_total: "NetGroup joins refused by the app's group_join rule or a group limit",
    /// Group introductions sent.
    counter group_introductions_total: "NetGroup member introductions sent (0B messages)",
    /// Calls.
    counter calls_total: "NetConnection calls to the server",
    /// Relays delivered.
    counter relays_total: "relay / sendToUser messages delivered",
    /// Relays failed.
    counter relays_failed_total: "relay / sendToUser messages whose target was not connected",
    /// Media messages relayed.
    counter media_messages_relayed_total: "media messages sent to players",
    /// Media bytes relayed.
    counter media_bytes_relayed_total: "media bytes sent to players",
    /// Media dropped for slow players.
    counter media_dropped_total: "media messages dropped because a player was too slow",
    /// Datagrams handed to another shard.
    counter datagrams_rerouted_total: "datagrams that arrived on one shard's socket for another shard's session",
    /// Protocol errors.
    counter protocol_errors_total: "malformed messages and refused flows or commands",
    /// Answers withheld by the anti-amplification limit.
    counter amplification_drops_total: "RHellos / Redirects not sent because the client's address was not proven and the answer would exceed the amplification limit",
    /// IHellos over the per-source rate.
    counter handshake_rate_drops_total: "IHellos dropped by the per-source handshake rate limit",
    /// Keyings queued by the shards' engines.
    counter keyings_queued_total: "handshake keyings (Diffie-Hellman work) queued for the keying workers",
    /// Keyings completed.
    counter keyings_done_total: "handshake keyings completed",
    /// Keyings dropped: queue full, evicted, or too old.
    counter keyings_dropped_total: "handshake keyings dropped (queue full, evicted from the busiest source, or waited too long); their clients retransmit",
    /// Sessions refused for limits.
    counter limit_refusals_total: "sessions or requests refused by a limit",
}

/// The hosts whose socket counters are the server's UDP traffic.
#[derive(Debug, Default)]
struct Traffic(OnceLock<Vec<HostHandle<ShardCore>>>);

impl Metrics {
    /// Counts the traffic of these hosts (the shards') from now on; once.
    pub(crate) fn count_traffic_of(&self, hosts: Vec<HostHandle<ShardCore>>) {
        let _ = self.traffic.0.set(hosts);
    }

    /// The UDP traffic of every shard's sockets, summed (zero for metrics
    /// of no server).
    pub fn io(&self) -> IoStats {
        let mut sum = IoStats::default();
        for h in self.traffic.0.get().into_iter().flatten() {
            sum += h.stats();
        }
        sum
    }

    /// Adds to a counter.
    pub fn inc(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Moves a gauge.
    pub fn add(g: &AtomicI64, n: i64) {
        g.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::inc(&m.sessions_opened_total, 3);
        Metrics::add(&m.sessions, 2);
        let t = m.render();
        assert!(t.contains("# TYPE nimbus_sessions gauge\nnimbus_sessions 2\n"));
        assert!(t.contains("nimbus_sessions_opened_total 3\n"));
        // the traffic of no host: zero, under the names it always had
        for name in [
            "datagrams_received_total",
            "bytes_sent_total",
            "socket_errors_total",
        ] {
            assert!(t.contains(&format!("# TYPE nimbus_{name} counter\nnimbus_{name} 0\n")));
        }
        assert!(t.contains("nimbus_send_calls_total 0\n"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, v) = line.split_once(' ').unwrap();
            assert!(name.starts_with("nimbus_"));
            v.parse::<i64>().unwrap();
        }
    }
}
