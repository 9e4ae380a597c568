//! The page's WebSocket protocol: JSON text messages with a `type` field.
//!
//! Page → phone ([`PageMsg`], parsed by [`PageMsg::parse`], which checks
//! every size and never panics):
//!
//! | `type` | fields | what |
//! |---|---|---|
//! | `login` | `user`, `password`? | log in (a new phone for that name) |
//! | `logout` | | quit the phone |
//! | `call` | `peer` | call a user by name (or a 64-hex peer ID) |
//! | `accept`, `reject`, `hangup` | | the ringing or current call |
//! | `chat` | `text` | a chat line |
//! | `media` | `audio`, `video` | the page's microphone / camera are on (shown in status) |
//! | `offer` | `id`, `sdp` | the page's WebRTC offer; answered by `answer` or `offerError` |
//!
//! Phone → page ([`PhoneMsg`]): `hello` (once), `state` (whenever it
//! changes), `line` (a line for the call log: every outcome), `chat`,
//! `status` (each second in a call), `answer` / `offerError`, `replaced`
//! (another page took over).

use serde::{Deserialize, Serialize};

use crate::bridge::MAX_SDP;

/// Largest message from the page (an offer with room to spare).
pub const MAX_MESSAGE: usize = MAX_SDP + 4096;
/// Longest chat line, in characters.
pub const MAX_CHAT: usize = 4000;
/// Longest password or token.
pub const MAX_PASSWORD: usize = 1024;

/// A message from the page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
#[non_exhaustive]
pub enum PageMsg {
    /// Log in as `user`.
    Login {
        /// The name.
        user: String,
        /// Password or registry token (servers with the `registry` policy).
        #[serde(default)]
        password: Option<String>,
    },
    /// Log out (quit the phone).
    Logout,
    /// Call `peer`.
    Call {
        /// A user name or a peer ID.
        peer: String,
    },
    /// Accept the ringing call.
    Accept,
    /// Reject the ringing call.
    Reject,
    /// Hang up.
    Hangup,
    /// A chat line.
    Chat {
        /// The text.
        text: String,
    },
    /// What the page sends: microphone and camera on or off.
    Media {
        /// Microphone on.
        audio: bool,
        /// Camera (or screen) on.
        video: bool,
    },
    /// The page's SDP offer.
    Offer {
        /// The page's number for it.
        id: u64,
        /// The offer.
        sdp: String,
    },
}

/// Why a page message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Larger than [`MAX_MESSAGE`].
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
    /// Not JSON, or not a known message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A field out of bounds.
    #[error("{0}")]
    Invalid(&'static str),
}

impl PageMsg {
    /// Parses one text message from the page.
    ///
    /// # Errors
    /// [`ProtocolError`] for anything too large, malformed or out of bounds.
    pub fn parse(text: &str) -> Result<PageMsg, ProtocolError> {
        if text.len() > MAX_MESSAGE {
            return Err(ProtocolError::TooLarge(text.len()));
        }
        let msg: PageMsg = serde_json::from_str(text).map_err(|e| {
            let mut s = e.to_string();
            s.truncate(200);
            ProtocolError::Malformed(s)
        })?;
        match &msg {
            PageMsg::Login { user, password } => {
                if !nimbus_phone::cli::valid_user(user) {
                    return Err(ProtocolError::Invalid(
                        "user names are 1-64 characters without spaces, '&', '?', '#', '%' or '/'",
                    ));
                }
                if password.as_ref().is_some_and(|p| p.len() > MAX_PASSWORD) {
                    return Err(ProtocolError::Invalid("password too long"));
                }
            }
            PageMsg::Call { peer } if !nimbus_phone::cli::valid_user(peer) => {
                return Err(ProtocolError::Invalid("no such name"));
            }
            PageMsg::Chat { text } => {
                if text.trim().is_empty() {
                    return Err(ProtocolError::Invalid("empty chat line"));
                }
                if text.chars().count() > MAX_CHAT {
                    return Err(ProtocolError::Invalid("chat line too long"));
                }
            }
            PageMsg::Offer { sdp, .. } if sdp.len() > MAX_SDP => {
                return Err(ProtocolError::Invalid("offer too large"));
            }
            _ => {}
        }
        Ok(msg)
    }
}

/// The call as the page shows it (and `window.nimbusPhone.state()`
/// reports it).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    /// `calling`, `ringing`, `incall` or `ended`.
    pub state: &'static str,
    /// The peer's name.
    pub peer: Option<String>,
    /// `connecting`, `direct` or `relay` (in a call).
    pub path: Option<String>,
}

/// The phone as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateView {
    /// Logged in to the server now.
    pub logged_in: bool,
    /// Our name (once a login was asked for).
    pub user: Option<String>,
    /// Connected to the server (false while reconnecting).
    pub online: bool,
    /// A login is under way.
    pub logging_in: bool,
    /// The server refused a login without a password: show the field.
    pub password_wanted: bool,
    /// The current (or last) call; `None` before the first.
    pub call: Option<CallView>,
}

/// Call figures pushed each second.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// `connecting`, `direct` or `relay`.
    pub path: Option<String>,
    /// The peer's address on the direct path.
    pub peer_address: Option<String>,
    /// Round-trip time of the media session.
    pub rtt_ms: Option<f64>,
    /// Bit rate received from the peer (kbit/s).
    pub rx_kbps: f64,
    /// Bit rate sent to the peer (kbit/s).
    pub tx_kbps: f64,
    /// Estimated loss of what we receive (0..1): audio.
    pub loss_in_audio: f64,
    /// Estimated loss of what we receive (0..1): video.
    pub loss_in_video: f64,
    /// Loss on the way out (RTMFP fragments declared lost, 0..1).
    pub loss_out: f64,
    /// Video frames and audio packets received from the peer.
    pub video_frames_received: u64,
    /// Audio packets received from the peer.
    pub audio_packets_received: u64,
    /// Video frames and audio packets sent to the peer.
    pub video_frames_sent: u64,
    /// Audio packets sent to the peer.
    pub audio_packets_sent: u64,
    /// What the page is shown while it has no picture of its own: the
    /// test source stands in.
    pub test_source: bool,
}

/// A message to the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
#[non_exhaustive]
pub enum PhoneMsg {
    /// The first message on a connection.
    #[serde(rename_all = "camelCase")]
    Hello {
        /// The server the phone logs in to.
        server: String,
        /// nimbus' version.
        version: &'static str,
    },
    /// The phone's state (after every change).
    State(StateView),
    /// One line of the call log.
    #[serde(rename_all = "camelCase")]
    Line {
        /// `info`, `call` (an outcome) or `error`.
        kind: &'static str,
        /// The text.
        text: String,
        /// Unix milliseconds.
        unix_ms: u64,
    },
    /// A chat line.
    #[serde(rename_all = "camelCase")]
    Chat {
        /// The sender's name.
        from: String,
        /// The text.
        text: String,
        /// Unix milliseconds.
        unix_ms: u64,
        /// Ours.
        local: bool,
    },
    /// Call figures.
    Status(StatusView),
    /// The answer to the page's offer.
    Answer {
        /// The offer's `id`.
        id: u64,
        /// The SDP answer.
        sdp: String,
    },
    /// The page's offer was refused.
    OfferError {
        /// The offer's `id`.
        id: u64,
        /// Why.
        message: String,
    },
    /// Another page of this phone took over; this one stops.
    Replaced,
}

impl PhoneMsg {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_messages_parse() {
        assert_eq!(
            PageMsg::parse(r#"{"type":"login","user":"alice"}"#),
            Ok(PageMsg::Login {
                user: "alice".into(),
                password: None
            })
        );
        assert_eq!(
            PageMsg::parse(r#"{"type":"login","user":"bob","password":"pw","extra":1}"#),
            Ok(PageMsg::Login {
                user: "bob".into(),
                password: Some("pw".into())
            })
        );
        assert_eq!(PageMsg::parse(r#"{"type":"accept"}"#), Ok(PageMsg::Accept));
        assert_eq!(
            PageMsg::parse(r#"{"type":"call","peer":"bob"}"#),
            Ok(PageMsg::Call { peer: "bob".into() })
        );
        assert_eq!(
            PageMsg::parse(r#"{"type":"offer","id":3,"sdp":"v=0"}"#),
            Ok(PageMsg::Offer {
                id: 3,
                sdp: "v=0".into()
            })
        );
        assert_eq!(
            PageMsg::parse(r#"{"type":"media","audio":false,"video":true}"#),
            Ok(PageMsg::Media {
                audio: false,
                video: true
            })
        );
    }

    #[test]
    fn bad_page_messages_are_refused() {
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"type":"nope"}"#,
            r#"{"type":"login"}"#,
            r#"{"type":"login","user":""}"#,
            r#"{"type":"login","user":"a b"}"#,
            r#"{"type":"login","user":"x?y"}"#,
            r#"{"type":"call","peer":"a/b"}"#,
            r#"{"type":"chat","text":"   "}"#,
            r#"{"type":"offer","id":-1,"sdp":""}"#,
            r#"{"type":"media","audio":1,"video":true}"#,
        ] {
            assert!(PageMsg::parse(bad).is_err(), "{bad}");
        }
        let long = format!(r#"{{"type":"chat","text":"{}"}}"#, "x".repeat(MAX_CHAT + 1));
        assert_eq!(
            PageMsg::parse(&long),
            Err(ProtocolError::Invalid("chat line too long"))
        );
        let huge = format!(
            r#"{{"type":"offer","id":1,"sdp":"{}"}}"#,
            "a".repeat(MAX_MESSAGE)
        );
        assert!(matches!(
            PageMsg::parse(&huge),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn phone_messages_are_tagged_json() {
        let m = PhoneMsg::Chat {
            from: "bob".into(),
            text: "hi".into(),
            unix_ms: 5,
            local: false,
        };
        assert_eq!(
            m.to_json(),
            r#"{"type":"chat","from":"bob","text":"hi","unixMs":5,"local":false}"#
        );
        let s = PhoneMsg::State(StateView {
            logged_in: true,
            user: Some("a".into()),
            online: true,
            logging_in: false,
            password_wanted: false,
            call: Some(CallView {
                state: "incall",
                peer: Some("b".into()),
                path: Some("direct".into()),
            }),
        });
        let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(v["type"], "state");
        assert_eq!(v["loggedIn"], true);
        assert_eq!(v["call"]["state"], "incall");
        assert_eq!(PhoneMsg::Replaced.to_json(), r#"{"type":"replaced"}"#);
    }
}
