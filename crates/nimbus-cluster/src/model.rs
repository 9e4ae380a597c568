//! What the cluster shares: the records kept in Redis, their bounds and
//! their validation.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Longest node name (bytes; `[A-Za-z0-9._-]` only).
pub const MAX_NODE_NAME: usize = 64;
/// Longest user name (bytes, before lowercasing).
pub const MAX_USER_NAME: usize = 128;
/// Longest app name (bytes).
pub const MAX_APP_NAME: usize = 128;
/// Longest stream name (bytes).
pub const MAX_STREAM_NAME: usize = 256;
/// Most addresses kept for one peer.
pub const MAX_PEER_ADDRESSES: usize = 8;
/// Most nodes a lookup looks at (the rest of a larger cluster is ignored).
pub const MAX_NODES: usize = 256;
/// Most members of one group one node registers (more are refused).
pub const MAX_GROUP_MEMBERS_PER_NODE: usize = 1024;
/// Most members one group lookup returns (all nodes together).
pub const MAX_GROUP_MEMBERS_RETURNED: usize = 4096;

/// A 32-byte RTMFP peer ID (SHA-256 of the peer's certificate), or a
/// 32-byte NetGroup ID.
pub type Id32 = [u8; 32];

/// Lowercase hexadecimal of an ID.
pub fn hex(id: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(id.len() * 2);
    for b in id {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Parses 64 hexadecimal digits (either case) into an ID.
pub fn parse_id(text: &str) -> Option<Id32> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let d = |c: u8| char::from(c).to_digit(16);
        out[i] = u8::try_from(d(pair[0])? * 16 + d(pair[1])?).ok()?;
    }
    Some(out)
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// A node name that is empty, too long, or has other characters than
    /// `[A-Za-z0-9._-]`.
    #[error("bad node name (1 to 64 of A-Z a-z 0-9 . _ -)")]
    NodeName,
    /// An empty or too long user name.
    #[error("bad user name (1 to 128 bytes, no control characters)")]
    UserName,
    /// An empty or too long app name.
    #[error("bad app name (1 to 128 bytes, no control characters)")]
    AppName,
    /// An empty or too long stream name.
    #[error("bad stream name (1 to 256 bytes, no control characters)")]
    StreamName,
    /// A local table is full.
    #[error("local limit reached: {0}")]
    Limit(&'static str),
}

/// Checks a node name.
pub fn check_node_name(name: &str) -> Result<(), InvalidInput> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NODE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(()).ok_or(InvalidInput::NodeName)
}

fn check_text(text: &str, max: usize, err: InvalidInput) -> Result<(), InvalidInput> {
    let ok = !text.is_empty() && text.len() <= max && !text.chars().any(char::is_control);
    ok.then_some(()).ok_or(err)
}

/// Checks a user name.
pub fn check_user_name(name: &str) -> Result<(), InvalidInput> {
    check_text(name, MAX_USER_NAME, InvalidInput::UserName)
}

/// Checks an app name.
pub fn check_app(app: &str) -> Result<(), InvalidInput> {
    check_text(app, MAX_APP_NAME, InvalidInput::AppName)
}

/// Checks a stream name.
pub fn check_stream(name: &str) -> Result<(), InvalidInput> {
    check_text(name, MAX_STREAM_NAME, InvalidInput::StreamName)
}

/// A live node as it advertises itself (the value of its heartbeat key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name (`--node`).
    pub name: String,
    /// The address clients (and other nodes) reach it at (`--advertise`).
    pub addr: SocketAddr,
    /// Sessions it holds now (its load).
    pub sessions: u64,
    /// Random per process start: tells a restarted node from its previous
    /// life, and two processes wrongly given one name from each other.
    pub incarnation: u64,
    /// Unix time of this heartbeat (milliseconds, the node's clock; for
    /// operators only, never compared across nodes).
    pub heartbeat_ms: u64,
}

/// A connected peer, as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The address the node sees (first candidate of introductions).
    pub public: SocketAddr,
    /// Addresses the client reported (`setPeerInfo`), at most
    /// [`MAX_PEER_ADDRESSES`].
    #[serde(default)]
    pub reported: Vec<SocketAddr>,
    /// Whether the peer's app allows introductions to it.
    #[serde(default = "yes")]
    pub introducible: bool,
    /// Unix time (ms, the node's clock) of the registration: when a peer
    /// that reconnected elsewhere is briefly on two nodes, the newest wins.
    #[serde(default)]
    pub since_ms: u64,
}

fn yes() -> bool {
    true
}

/// Where a peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLocation {
    /// The node holding the peer's session.
    pub node: NodeInfo,
    /// The peer's record.
    pub record: PeerRecord,
}

/// A user name's owner (the value kept under the lowercased name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The name as the user gave it.
    pub name: String,
    /// The peer holding it (hexadecimal peer ID).
    pub peer: String,
    /// Unix time (ms) of the claim.
    #[serde(default)]
    pub since_ms: u64,
}

/// Who holds a user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLocation {
    /// The node.
    pub node: NodeInfo,
    /// The peer.
    pub peer: Id32,
    /// The name as given.
    pub name: String,
}

/// A published stream (the value kept under `app/name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// App.
    pub app: String,
    /// Stream name.
    pub name: String,
    /// The publishing peer (hexadecimal peer ID).
    pub peer: String,
    /// Unix time (ms) of the claim.
    #[serde(default)]
    pub since_ms: u64,
}

/// Where a stream is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLocation {
    /// The node whose client publishes it.
    pub node: NodeInfo,
    /// The publishing peer.
    pub peer: Id32,
}

/// A member of a NetGroup, on some node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member's peer ID.
    pub peer: Id32,
    /// The node holding its session.
    pub node: String,
}

/// The field of a user name: lowercase (names are case-insensitive).
pub(crate) fn user_field(name: &str) -> String {
    name.to_lowercase()
}

/// The field of a stream: `app/name` (the app cannot hold a `/`-free
/// ambiguity: app names are single URL segments).
pub(crate) fn stream_field(app: &str, name: &str) -> String {
    format!("{app}/{name}")
}

/// The field of a group: `app/hex(group ID)`.
pub(crate) fn group_field(app: &str, group: &Id32) -> String {
    format!("{app}/{}", hex(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = [0xa5u8; 32];
        assert_eq!(parse_id(&hex(&id)), Some(id));
        assert_eq!(parse_id(&hex(&id).to_uppercase()), Some(id));
        assert_eq!(parse_id("zz"), None);
        assert_eq!(parse_id(&"g".repeat(64)), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_node_name("node-1.eu_west").is_ok());
        assert!(check_node_name("").is_err());
        assert!(check_node_name("a b").is_err());
        assert!(check_node_name(&"a".repeat(65)).is_err());
        assert!(check_user_name("Alice").is_ok());
        assert!(check_user_name("a\nb").is_err());
        assert!(check_stream(&"s".repeat(257)).is_err());
    }
}
