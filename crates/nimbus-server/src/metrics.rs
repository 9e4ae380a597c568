//! Counters and gauges, rendered in the Prometheus text format at
//! `GET /metrics` (see `docs/server.md` for the list).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

macro_rules! metrics {
    ($( $(#[$doc:meta])* $kind:ident $name:ident : $help:literal ),* $(,)?) => {
        /// The server's metrics (shared by every shard; relaxed atomics).
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[$doc])* pub $name: metrics!(@ty $kind), )*
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
    /// Datagrams in.
    counter datagrams_received_total: "UDP datagrams received",
    /// Datagrams out.
    counter datagrams_sent_total: "UDP datagrams sent",
    /// Bytes in.
    counter bytes_received_total: "UDP payload bytes received",
    /// Bytes out.
    counter bytes_sent_total: "UDP payload bytes sent",
    /// Datagrams handed to another shard.
    counter datagrams_rerouted_total: "datagrams that arrived on one shard's socket for another shard's session",
    /// Socket errors.
    counter socket_errors_total: "UDP send/receive errors",
    /// Protocol errors.
    counter protocol_errors_total: "malformed messages and refused flows or commands",
    /// Answers withheld by the anti-amplification limit.
    counter amplification_drops_total: "RHellos / Redirects not sent because the client's address was not proven and the answer would exceed the amplification limit",
    /// IHellos over the per-source rate.
    counter handshake_rate_drops_total: "IHellos dropped by the per-source handshake rate limit",
    /// Sessions refused for limits.
    counter limit_refusals_total: "sessions or requests refused by a limit",
}

impl Metrics {
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
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, v) = line.split_once(' ').unwrap();
            assert!(name.starts_with("nimbus_"));
            v.parse::<i64>().unwrap();
        }
    }
}
