//! Messages between nodes, carried by Redis pub/sub.
//!
//! Each node listens on its own channel (`PREFIX msg:NODE`) and on the
//! broadcast channel (`PREFIX msg:*`). A message is one JSON object (an
//! [`Envelope`]); byte strings (AMF payloads, tags, endpoint
//! discriminators) are base64. Anything on a channel is untrusted input:
//! [`Envelope::decode`] bounds every size and never panics; what it
//! refuses is counted and dropped.

use std::net::SocketAddr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::model::{check_app, check_node_name, check_stream, check_user_name, parse_id, Id32};

/// Largest encoded message accepted (bytes).
pub const MAX_MESSAGE: usize = 96 * 1024;
/// Largest AMF payload of a relay or sendToUser (bytes).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest IHello tag (bytes).
pub const MAX_TAG: usize = 64;
/// Largest endpoint discriminator (bytes).
pub const MAX_EPD: usize = 256;
/// Version of the message format.
pub const VERSION: u8 = 1;

/// A message and its addressing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version ([`VERSION`]).
    pub v: u8,
    /// The sending node.
    pub from: String,
    /// The sender's incarnation ([`crate::NodeInfo::incarnation`]).
    #[serde(default)]
    pub incarnation: u64,
    /// What it says.
    pub msg: Message,
}

/// What one node asks of another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// An IHello reached the sending node for a peer the receiving node
    /// holds: the sender answered the initiator with a Redirect; the
    /// receiver sends the target peer a Forwarded IHello (RFC 7016
    /// §3.5.1.5) so both sides punch holes.
    ForwardIHello {
        /// Target peer ID (hexadecimal).
        target: String,
        /// The initiator's address as the sending node saw it.
        initiator: SocketAddr,
        /// The IHello's endpoint discriminator (base64, ≤ [`MAX_EPD`]).
        epd: B64,
        /// The IHello's tag (base64, ≤ [`MAX_TAG`]).
        tag: B64,
    },
    /// `relay(targetPeerID, args...)`: call `onRelay(sender, args...)` on
    /// the target peer.
    Relay {
        /// Target peer ID (hexadecimal).
        target: String,
        /// Sender peer ID (hexadecimal).
        sender: String,
        /// The call's arguments after the first, AMF0-encoded (base64,
        /// ≤ [`MAX_PAYLOAD`]).
        args: B64,
    },
    /// `sendToUser(name, args...)`: call `onMessage(sender, args...)` on
    /// the user's peer.
    SendToUser {
        /// Target user name.
        user: String,
        /// Sender (its user name, or its peer ID in hexadecimal).
        sender: String,
        /// AMF0-encoded arguments after the first (base64, ≤ [`MAX_PAYLOAD`]).
        args: B64,
    },
    /// Ask whether the receiver holds a user (answered by
    /// [`Message::LookupReply`] with the same `id`).
    Lookup {
        /// Request number, chosen by the asker.
        id: u64,
        /// User name.
        user: String,
    },
    /// The answer to a [`Message::Lookup`].
    LookupReply {
        /// The request's number.
        id: u64,
        /// The user's peer ID (hexadecimal), if the receiver holds it.
        peer: Option<String>,
    },
    /// A player on the sending node wants a stream published on the
    /// receiving node: pull it (over RTMFP) from `pull_from`.
    StreamPull {
        /// App.
        app: String,
        /// Stream name.
        name: String,
        /// Where the requesting node takes the stream from it.
        pull_from: SocketAddr,
    },
    /// The sending node no longer wants a stream it pulled.
    StreamRelease {
        /// App.
        app: String,
        /// Stream name.
        name: String,
    },
}

/// Bytes carried as base64 text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct B64(pub Vec<u8>);

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() > MAX_MESSAGE {
            return Err(serde::de::Error::custom("base64 too long"));
        }
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

/// Why a message was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Larger than [`MAX_MESSAGE`].
    #[error("message too large")]
    TooLarge,
    /// Not a JSON envelope of a known message.
    #[error("not a message: {0}")]
    Syntax(String),
    /// A version this node does not speak.
    #[error("unknown version {0}")]
    Version(u8),
    /// A field out of bounds or badly formed.
    #[error("bad field: {0}")]
    Field(&'static str),
}

impl Envelope {
    /// Encodes the envelope (never fails for the types here).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() > MAX_MESSAGE {
            return Err(Malformed::TooLarge);
        }
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|e| Malformed::Syntax(e.to_string()))?;
        env.check()?;
        Ok(env)
    }

    /// Checks every field's bounds.
    pub fn check(&self) -> Result<(), Malformed> {
        if self.v != VERSION {
            return Err(Malformed::Version(self.v));
        }
        check_node_name(&self.from).map_err(|_| Malformed::Field("from"))?;
        let peer = |s: &str, what| parse_id(s).map(|_| ()).ok_or(Malformed::Field(what));
        match &self.msg {
            Message::ForwardIHello {
                target, epd, tag, ..
            } => {
                peer(target, "target")?;
                if epd.0.is_empty() || epd.0.len() > MAX_EPD {
                    return Err(Malformed::Field("epd"));
                }
                if tag.0.len() > MAX_TAG {
                    return Err(Malformed::Field("tag"));
                }
            }
            Message::Relay {
                target,
                sender,
                args,
            } => {
                peer(target, "target")?;
                peer(sender, "sender")?;
                if args.0.len() > MAX_PAYLOAD {
                    return Err(Malformed::Field("args"));
                }
            }
            Message::SendToUser { user, sender, args } => {
                check_user_name(user).map_err(|_| Malformed::Field("user"))?;
                // a user name, or a peer ID's 64 hexadecimal digits
                check_user_name(sender).map_err(|_| Malformed::Field("sender"))?;
                if args.0.len() > MAX_PAYLOAD {
                    return Err(Malformed::Field("args"));
                }
            }
            Message::Lookup { user, .. } => {
                check_user_name(user).map_err(|_| Malformed::Field("user"))?;
            }
            Message::LookupReply { peer: p, .. } => {
                if let Some(p) = p {
                    peer(p, "peer")?;
                }
            }
            Message::StreamPull { app, name, .. } | Message::StreamRelease { app, name } => {
                check_app(app).map_err(|_| Malformed::Field("app"))?;
                check_stream(name).map_err(|_| Malformed::Field("name"))?;
            }
        }
        Ok(())
    }
}

/// The peer ID a message's `target` names, when it names one.
pub fn target_peer(msg: &Message) -> Option<Id32> {
    match msg {
        Message::ForwardIHello { target, .. } | Message::Relay { target, .. } => parse_id(target),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(msg: Message) -> Envelope {
        Envelope {
            v: VERSION,
            from: "n1".into(),
            incarnation: 7,
            msg,
        }
    }

    #[test]
    fn round_trip() {
        let m = env(Message::ForwardIHello {
            target: crate::model::hex(&[1; 32]),
            initiator: "192.0.2.1:1935".parse().unwrap(),
            epd: B64(vec![0x0f, 1, 2]),
            tag: B64(vec![9; 16]),
        });
        assert_eq!(Envelope::decode(&m.encode()).unwrap(), m);
        let m = env(Message::SendToUser {
            user: "bob".into(),
            sender: "alice".into(),
            args: B64(vec![2, 0, 2, b'h', b'i']),
        });
        assert_eq!(Envelope::decode(&m.encode()).unwrap(), m);
    }

    /// What the fuzz target checks, over mutations of valid messages.
    #[test]
    fn mutations_never_panic_and_what_parses_round_trips() {
        let seeds = [
            env(Message::ForwardIHello {
                target: crate::model::hex(&[1; 32]),
                initiator: "[2001:db8::1]:1935".parse().unwrap(),
                epd: B64(vec![0x0f, 1, 2]),
                tag: B64(vec![9; 16]),
            }),
            env(Message::StreamPull {
                app: "live".into(),
                name: "cam é".into(),
                pull_from: "192.0.2.1:1935".parse().unwrap(),
            }),
            env(Message::LookupReply {
                id: u64::MAX,
                peer: Some(crate::model::hex(&[3; 32])),
            }),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seed in &seeds {
            let bytes = seed.encode();
            for _ in 0..3000 {
                let mut m = bytes.clone();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() % m.len() as u64) as usize;
                    match next() % 3 {
                        0 => m[i] = next() as u8,
                        1 => m.truncate(i),
                        _ => m.insert(i, b"\"{}[],:0aZ"[(next() % 10) as usize]),
                    }
                    if m.is_empty() {
                        break;
                    }
                }
                if let Ok(e) = Envelope::decode(&m) {
                    assert!(e.check().is_ok());
                    assert_eq!(Envelope::decode(&e.encode()), Ok(e));
                }
            }
        }
    }

    #[test]
    fn malformed_is_refused() {
        assert!(matches!(
            Envelope::decode(b"not json"),
            Err(Malformed::Syntax(_))
        ));
        assert!(matches!(
            Envelope::decode(&vec![b' '; MAX_MESSAGE + 1]),
            Err(Malformed::TooLarge)
        ));
        let bad = env(Message::Relay {
            target: "abc".into(),
            sender: crate::model::hex(&[2; 32]),
            args: B64(vec![]),
        });
        assert_eq!(
            Envelope::decode(&bad.encode()),
            Err(Malformed::Field("target"))
        );
        let mut v2 = env(Message::Lookup {
            id: 1,
            user: "x".into(),
        });
        v2.v = 2;
        assert_eq!(Envelope::decode(&v2.encode()), Err(Malformed::Version(2)));
        let big = env(Message::Relay {
            target: crate::model::hex(&[1; 32]),
            sender: crate::model::hex(&[2; 32]),
            args: B64(vec![0; MAX_PAYLOAD + 1]),
        });
        assert!(Envelope::decode(&big.encode()).is_err());
    }
}
