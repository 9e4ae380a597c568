//! # nimbus-cluster: the state layer of a cluster of Nimbus servers
//!
//! Several `nimbus server` processes (nodes) act as one service by sharing
//! what each knows in Redis (or Valkey) and by passing messages to each
//! other over Redis pub/sub. This crate is that layer, on its own: the
//! server does not use it yet (see `docs/cluster.md`).
//!
//! **Owns:** the key layout in Redis and its lifetimes, the node's
//! heartbeat and load, the registration of the node's peers, user names,
//! published streams and NetGroup memberships (from a local copy, written
//! again after Redis comes back), the lookups of everyone's, and the typed
//! messages between nodes ([`message`]) with their bounds.
//!
//! **Must not touch:** RTMFP, sessions, sockets: what a node does with a
//! lookup or a message is the server's business.
//!
//! ## Keys (prefix `nimbus:` by default)
//!
//! | key | type | content | lifetime |
//! | --- | --- | --- | --- |
//! | `nimbus:nodes` | sorted set | node names | names gone for an hour are removed |
//! | `nimbus:node:NODE` | string | the node's [`NodeInfo`] (address, load) | TTL, refreshed by each heartbeat |
//! | `nimbus:node:NODE:peers` | hash | hex peer ID → [`PeerRecord`] | same TTL |
//! | `nimbus:node:NODE:users` | hash | lowercased name → [`UserRecord`] | same TTL |
//! | `nimbus:node:NODE:streams` | hash | `app/name` → [`StreamRecord`] | same TTL |
//! | `nimbus:node:NODE:groups` | hash | `app/hex(group ID)` → JSON list of hex peer IDs | same TTL |
//!
//! A node's state lives under its name, so it all expires with its
//! heartbeat and the heartbeat costs a handful of commands whatever the
//! node holds. Lookups read, in one transaction, every live node's
//! heartbeat key with its entry, and believe an entry only next to a live
//! heartbeat.
//!
//! ```no_run
//! # async fn f() -> Result<(), nimbus_cluster::ClusterError> {
//! use nimbus_cluster::{Cluster, ClusterConfig};
//! let cfg = ClusterConfig::new("redis://127.0.0.1:6379", "node-1", "192.0.2.1:1935".parse().unwrap());
//! let (cluster, mut incoming) = Cluster::start(cfg)?;
//! cluster.wait_up(std::time::Duration::from_secs(2)).await;
//! cluster.set_sessions(42);
//! if let Some(node) = cluster.least_loaded().await? {
//!     println!("least loaded: {} at {}", node.name, node.addr);
//! }
//! while let Some(envelope) = incoming.recv().await {
//!     println!("from {}: {:?}", envelope.from, envelope.msg);
//! }
//! # Ok(()) }
//! ```

mod cluster;
pub mod message;
pub mod metrics;
pub mod model;

pub use cluster::{Cluster, ClusterConfig, ClusterError, ConnState, Incoming};
pub use message::{Envelope, Malformed, Message, B64};
pub use metrics::ClusterMetrics;
pub use model::{
    hex, parse_id, GroupMember, Id32, InvalidInput, NodeInfo, PeerLocation, PeerRecord,
    StreamLocation, StreamRecord, UserLocation, UserRecord,
};
