//! Call signalling: the state machine that sets up and tears down one call at a
//! time, compatible with Adobe's 2011 (Cirrus era) VideoPhone sample.
//!
//! Pure logic: no I/O and no clock of its own. Every method takes the current
//! time as an [`Instant`] and returns the [`Action`]s the caller must carry out
//! (relay messages to send, [`Event`]s to show in the UI). Timers are exposed
//! through [`CallMachine::poll_timeout`] / [`CallMachine::handle_timeout`].
//!
//! # Wire layout
//!
//! Signalling goes through the rendezvous server: the phone calls
//! `nc.call("relay", null, targetPeerID, action, myUserName)` and the server
//! delivers it to the target as `client.onRelay(senderPeerID, action, name)`.
//! [`Action::SendRelay`] carries `to_peer` (the `targetPeerID`) and `args`, the
//! strings that follow it; [`CallMachine::on_relay`] takes `senderPeerID` and
//! the strings that follow it. Every message has exactly two string args:
//!
//! | message | `args` | sent by |
//! |---|---|---|
//! | invite | `["invite", callerName]` | caller, to start a call |
//! | cancel | `["cancel", callerName]` | caller, giving up before an answer (hang-up or no answer) |
//! | accept | `["accept", calleeName]` | callee, answering |
//! | reject | `["reject", calleeName]` | callee, declining, or anyone busy with another call |
//! | busy | `["busy", name]` | (Nimbus) a phone busy with another call, just before its `reject` |
//! | bye | `["bye", name]` | either side, hanging up an established call |
//! | ok | `["ok", name]` | answer to `cancel` and `bye` |
//!
//! Flows (as in the sample's comments): invite→cancel→ok, invite→reject,
//! invite→accept … bye→ok.
//!
//! Choices where the notes are silent (documented here on purpose):
//!
//! * **Busy** is signalled with a plain `reject` (the sample's `onRelay` has a
//!   fixed `(id, action, name)` signature, so an extra "busy" argument would
//!   make ActionScript throw). The busy phone's UI gets [`Event::Busy`].
//!   So that a Nimbus caller can tell "busy" from "declined", the busy
//!   phone first sends a `busy` message (an action the sample ignores); a
//!   caller that gets it reports [`Event::PeerBusy`] and ends the call (the
//!   `reject` that follows finds it idle and is ignored). Against the sample
//!   the caller sees [`Event::Rejected`].
//! * An incoming `invite` without a name argument is malformed and ignored;
//!   the name of any other message is optional. Extra args are ignored.
//!   Actions are matched case-sensitively; unknown actions are ignored.
//! * We never answer `ok` or `reject` (no message loops), and only `invite` from
//!   a third peer gets an answer (the busy `reject`).
//! * Glare (both phones invite each other at once): the invite that arrives
//!   while `Calling` is answered busy, so both sides see [`Event::Rejected`].
//! * The callee rings for [`CallConfig::ring_timeout`] (default 35 s, a bit
//!   longer than the caller's 30 s, so the caller's `cancel` normally arrives
//!   first); when it expires it sends `reject` and reports [`Event::NoAnswer`].
//! * After sending `cancel` or `bye` the machine is `Ending` until the peer's
//!   `ok` (or its `bye`/`cancel`/`reject`) arrives, or [`CallConfig::ending_timeout`]
//!   (default 5 s) passes. A `cancel` arriving while in the call (the caller
//!   timed out just as we accepted) is treated like `bye`.
//! * [`CallMachine::relay_failed`] takes the peer ID the failed relay was sent
//!   to, so that a failed busy-`reject` to a third peer does not end our call.
//!
//! # Events
//!
//! Every call that begins (a [`CallMachine::call`] or an [`Event::Incoming`])
//! finishes with exactly one [`Event::Ended`], emitted when the machine returns
//! to [`CallState::Idle`]; the event just before it (or the one that put the
//! machine into `Ending`) says why.
//!
//! ```
//! use nimbus_phone::call::{Action, CallMachine, CallState, Event};
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let mut alice = CallMachine::new("alice");
//! let mut bob = CallMachine::new("bob");
//! let out = alice.call(now, "alice", "BOB-ID");
//! let Action::SendRelay { args, .. } = &out[0] else { unreachable!() };
//! assert_eq!(args, &["invite", "alice"]);
//! let ev = bob.on_relay(now, "ALICE-ID", args);
//! assert!(matches!(&ev[0], Action::Event(Event::Incoming { from_name, .. }) if from_name == "alice"));
//! let out = bob.accept(now);
//! let Action::SendRelay { args, .. } = &out[0] else { unreachable!() };
//! alice.on_relay(now, "BOB-ID", args);
//! assert_eq!(alice.state(), CallState::InCall);
//! assert_eq!(bob.state(), CallState::InCall);
//! ```

use std::time::{Duration, Instant};

/// Default time the caller waits for an answer before cancelling.
pub const DEFAULT_INVITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time the callee rings before giving up on its own.
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(35);
/// Default time to wait for the peer's `ok` after `cancel` or `bye`.
pub const DEFAULT_ENDING_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeouts of a [`CallMachine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallConfig {
    /// Caller: no `accept`/`reject` within this → `cancel` + [`Event::NoAnswer`].
    pub invite_timeout: Duration,
    /// Callee: still ringing after this → `reject` + [`Event::NoAnswer`].
    pub ring_timeout: Duration,
    /// `Ending`: no `ok` within this → [`Event::Ended`] anyway.
    pub ending_timeout: Duration,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            invite_timeout: DEFAULT_INVITE_TIMEOUT,
            ring_timeout: DEFAULT_RING_TIMEOUT,
            ending_timeout: DEFAULT_ENDING_TIMEOUT,
        }
    }
}

/// The signalling messages (the first relay argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message {
    /// `invite`: start a call.
    Invite,
    /// `cancel`: the caller gives up before an answer.
    Cancel,
    /// `accept`: the callee answers.
    Accept,
    /// `reject`: the callee declines, or is busy.
    Reject,
    /// `bye`: hang up an established call.
    Bye,
    /// `ok`: acknowledges `cancel` or `bye`.
    Ok,
    /// `busy` (Nimbus): the callee is in another call; a `reject` follows.
    Busy,
}

impl Message {
    /// The wire string of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Message::Invite => "invite",
            Message::Cancel => "cancel",
            Message::Accept => "accept",
            Message::Reject => "reject",
            Message::Bye => "bye",
            Message::Ok => "ok",
            Message::Busy => "busy",
        }
    }

    /// Parses a wire action (case-sensitive); `None` for anything else.
    pub fn parse(s: &str) -> Option<Message> {
        Some(match s {
            "invite" => Message::Invite,
            "cancel" => Message::Cancel,
            "accept" => Message::Accept,
            "reject" => Message::Reject,
            "bye" => Message::Bye,
            "ok" => Message::Ok,
            "busy" => Message::Busy,
            _ => return None,
        })
    }

    /// The relay args for this message sent by `user_name`: `[action, user_name]`.
    pub fn to_args(self, user_name: &str) -> Vec<String> {
        vec![self.as_str().to_owned(), user_name.to_owned()]
    }
}

/// Parses `onRelay` args (after the sender's peer ID) into the message and the
/// optional sender name. `None` if the first arg is missing or unknown.
pub fn parse_relay_args<S: AsRef<str>>(args: &[S]) -> Option<(Message, Option<&str>)> {
    let msg = Message::parse(args.first()?.as_ref())?;
    Some((msg, args.get(1).map(AsRef::as_ref)))
}

/// The state of the (single) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallState {
    /// No call.
    Idle,
    /// We sent `invite` and wait for `accept`/`reject`.
    Calling,
    /// We received `invite`; the UI should ring and offer accept/reject.
    Ringing,
    /// The call is established.
    InCall,
    /// We sent `cancel` or `bye` and wait for the peer's `ok`.
    Ending,
}

/// What the UI shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Someone is calling us.
    Incoming {
        /// The caller's user name.
        from_name: String,
        /// The caller's peer ID.
        from_peer: String,
    },
    /// The call is established (the peer accepted, or we did).
    Accepted,
    /// The call was declined (`by_peer`: the peer rejected our invite; else we did).
    Rejected {
        /// True if the peer rejected.
        by_peer: bool,
    },
    /// The peer we call is in another call (a Nimbus phone's `busy`).
    PeerBusy,
    /// An invite arrived while we were busy; it was answered with `reject`.
    Busy {
        /// The would-be caller's name.
        from_name: String,
        /// The would-be caller's peer ID.
        from_peer: String,
    },
    /// Nobody answered in time (caller: `cancel` sent; callee: stopped ringing).
    NoAnswer,
    /// The server could not relay to the peer (not connected, or empty peer ID).
    Offline,
    /// The call was cancelled before an answer (`by_peer`: the caller cancelled; else we did).
    Cancelled {
        /// True if the peer cancelled.
        by_peer: bool,
    },
    /// An established call was hung up.
    HungUp {
        /// True if the peer hung up.
        by_peer: bool,
    },
    /// The call is over; the machine is idle again.
    Ended,
}

/// Output of the machine, in the order to carry it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Call `nc.call("relay", null, to_peer, args...)` (all args are AMF strings).
    SendRelay {
        /// Target peer ID.
        to_peer: String,
        /// `[action, our user name]`, see the module docs.
        args: Vec<String>,
    },
    /// Show this to the user.
    Event(Event),
}

/// The call-signalling state machine; one per phone, at most one call at a time.
#[derive(Debug, Clone)]
pub struct CallMachine {
    config: CallConfig,
    user_name: String,
    state: CallState,
    /// The call's peer ID (set iff not Idle).
    peer: Option<String>,
    /// The call's peer name, when known.
    peer_name: Option<String>,
    /// Timer of Calling / Ringing / Ending.
    deadline: Option<Instant>,
}

impl CallMachine {
    /// A machine with the default timeouts, sending `user_name` in its messages.
    pub fn new(user_name: impl Into<String>) -> Self {
        Self::with_config(user_name, CallConfig::default())
    }

    /// A machine with the given timeouts.
    pub fn with_config(user_name: impl Into<String>, config: CallConfig) -> Self {
        CallMachine {
            config,
            user_name: user_name.into(),
            state: CallState::Idle,
            peer: None,
            peer_name: None,
            deadline: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> CallState {
        self.state
    }

    /// Peer ID of the current call (None when idle).
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    /// Peer's user name, when known (from its invite or accept).
    pub fn peer_name(&self) -> Option<&str> {
        self.peer_name.as_deref()
    }

    /// Our user name, sent with every message.
    pub fn user_name(&self) -> &str {
        &self.user_name
    }

    /// The timeouts.
    pub fn config(&self) -> &CallConfig {
        &self.config
    }

    /// Calls `peer_id` (found by the registry lookup) as `user_name`.
    ///
    /// Sends `invite` and enters `Calling`. An empty `peer_id` (a registry miss)
    /// gives `[Offline, Ended]` at once. Does nothing (returns nothing) unless idle.
    pub fn call(&mut self, now: Instant, user_name: &str, peer_id: &str) -> Vec<Action> {
        if self.state != CallState::Idle {
            return Vec::new();
        }
        self.user_name = user_name.to_owned();
        if peer_id.is_empty() {
            return vec![Action::Event(Event::Offline), Action::Event(Event::Ended)];
        }
        self.enter(CallState::Calling, peer_id, None);
        self.deadline = Some(now + self.config.invite_timeout);
        vec![self.send(Message::Invite)]
    }

    /// Accepts the ringing call: sends `accept`, enters `InCall`, emits
    /// [`Event::Accepted`]. Does nothing unless ringing.
    pub fn accept(&mut self, _now: Instant) -> Vec<Action> {
        if self.state != CallState::Ringing {
            return Vec::new();
        }
        self.state = CallState::InCall;
        self.deadline = None;
        vec![self.send(Message::Accept), Action::Event(Event::Accepted)]
    }

    /// Declines the ringing call: sends `reject`, emits
    /// `[Rejected{by_peer: false}, Ended]`. Does nothing unless ringing.
    pub fn reject(&mut self, _now: Instant) -> Vec<Action> {
        if self.state != CallState::Ringing {
            return Vec::new();
        }
        let send = self.send(Message::Reject);
        let mut out = vec![send, Action::Event(Event::Rejected { by_peer: false })];
        self.finish(&mut out);
        out
    }

    /// Hangs up: while `Calling` sends `cancel` (emits `Cancelled{by_peer: false}`),
    /// while `InCall` sends `bye` (emits `HungUp{by_peer: false}`), both entering
    /// `Ending`; while `Ringing` it is [`reject`](Self::reject). Otherwise nothing.
    pub fn hangup(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            CallState::Calling => {
                self.start_ending(now, Message::Cancel, Event::Cancelled { by_peer: false })
            }
            CallState::InCall => {
                self.start_ending(now, Message::Bye, Event::HungUp { by_peer: false })
            }
            CallState::Ringing => self.reject(now),
            CallState::Idle | CallState::Ending => Vec::new(),
        }
    }

    /// The server answered a relay to `to_peer` with `_error` (peer not
    /// connected). Ends the call if `to_peer` is its peer: `[Offline, Ended]`
    /// (only `[Ended]` if already `Ending`). Ignored otherwise.
    pub fn relay_failed(&mut self, _now: Instant, to_peer: &str) -> Vec<Action> {
        if self.peer.as_deref() != Some(to_peer) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.state != CallState::Ending {
            out.push(Action::Event(Event::Offline));
        }
        self.finish(&mut out);
        out
    }

    /// The direct session to the call's peer was closed by the peer (it hung
    /// up without a `bye` reaching us, e.g. while the server was away). While
    /// `InCall` this ends the call as a hang-up by the peer:
    /// `[HungUp{by_peer: true}, Ended]`; while `Ending` it ends it: `[Ended]`.
    /// Ignored in other states (a session may close before the call starts).
    pub fn peer_gone(&mut self, _now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            CallState::InCall => {
                out.push(Action::Event(Event::HungUp { by_peer: true }));
                self.finish(&mut out);
            }
            CallState::Ending => self.finish(&mut out),
            _ => {}
        }
        out
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Handles an expired timer (does nothing before the deadline):
    /// `Calling` → sends `cancel`, emits `NoAnswer`, enters `Ending`;
    /// `Ringing` → sends `reject`, emits `[NoAnswer, Ended]`;
    /// `Ending` → emits `Ended`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline {
            Some(d) if now >= d => {}
            _ => return Vec::new(),
        }
        match self.state {
            CallState::Calling => self.start_ending(now, Message::Cancel, Event::NoAnswer),
            CallState::Ringing => {
                let mut out = vec![self.send(Message::Reject), Action::Event(Event::NoAnswer)];
                self.finish(&mut out);
                out
            }
            CallState::Ending => {
                let mut out = Vec::new();
                self.finish(&mut out);
                out
            }
            CallState::Idle | CallState::InCall => {
                self.deadline = None;
                Vec::new()
            }
        }
    }

    /// Handles `onRelay(from_peer, args...)`. Unknown or malformed messages, and
    /// messages that do not fit the state, are ignored.
    pub fn on_relay<S: AsRef<str>>(
        &mut self,
        now: Instant,
        from_peer: &str,
        args: &[S],
    ) -> Vec<Action> {
        let Some((msg, name)) = parse_relay_args(args) else {
            return Vec::new();
        };
        if self.state == CallState::Idle || self.peer.as_deref() != Some(from_peer) {
            return self.on_stranger(now, from_peer, msg, name);
        }
        match (self.state, msg) {
            // Our peer re-invites while a call with it is already set up (glare, or
            // it lost its state): busy. A repeated invite while ringing is ignored.
            (CallState::Calling | CallState::InCall | CallState::Ending, Message::Invite) => {
                let name = name.unwrap_or_default();
                self.busy(from_peer, name)
            }
            (CallState::Calling, Message::Accept) => {
                self.state = CallState::InCall;
                self.deadline = None;
                if let Some(n) = name {
                    self.peer_name = Some(n.to_owned());
                }
                vec![Action::Event(Event::Accepted)]
            }
            (CallState::Calling, Message::Reject) => {
                let mut out = vec![Action::Event(Event::Rejected { by_peer: true })];
                self.finish(&mut out);
                out
            }
            (CallState::Calling, Message::Busy) => {
                let mut out = vec![Action::Event(Event::PeerBusy)];
                self.finish(&mut out);
                out
            }
            (CallState::Ringing, Message::Cancel) => {
                let mut out = vec![
                    self.send(Message::Ok),
                    Action::Event(Event::Cancelled { by_peer: true }),
                ];
                self.finish(&mut out);
                out
            }
            (CallState::InCall, Message::Bye | Message::Cancel) => {
                let mut out = vec![
                    self.send(Message::Ok),
                    Action::Event(Event::HungUp { by_peer: true }),
                ];
                self.finish(&mut out);
                out
            }
            (CallState::Ending, Message::Bye | Message::Cancel) => {
                let mut out = vec![self.send(Message::Ok)];
                self.finish(&mut out);
                out
            }
            (CallState::Ending, Message::Ok | Message::Reject) => {
                let mut out = Vec::new();
                self.finish(&mut out);
                out
            }
            _ => Vec::new(),
        }
    }

    /// A message from a peer that is not the call's peer (or any peer while idle).
    fn on_stranger(
        &mut self,
        now: Instant,
        from_peer: &str,
        msg: Message,
        name: Option<&str>,
    ) -> Vec<Action> {
        // An invite needs a name; everything else from a stranger is ignored.
        let (Message::Invite, Some(name)) = (msg, name) else {
            return Vec::new();
        };
        if from_peer.is_empty() {
            return Vec::new();
        }
        if self.state != CallState::Idle {
            return self.busy(from_peer, name);
        }
        self.enter(CallState::Ringing, from_peer, Some(name));
        self.deadline = Some(now + self.config.ring_timeout);
        vec![Action::Event(Event::Incoming {
            from_name: name.to_owned(),
            from_peer: from_peer.to_owned(),
        })]
    }

    fn busy(&self, from_peer: &str, name: &str) -> Vec<Action> {
        vec![
            Action::SendRelay {
                to_peer: from_peer.to_owned(),
                args: Message::Busy.to_args(&self.user_name),
            },
            Action::SendRelay {
                to_peer: from_peer.to_owned(),
                args: Message::Reject.to_args(&self.user_name),
            },
            Action::Event(Event::Busy {
                from_name: name.to_owned(),
                from_peer: from_peer.to_owned(),
            }),
        ]
    }

    fn enter(&mut self, state: CallState, peer: &str, name: Option<&str>) {
        self.state = state;
        self.peer = Some(peer.to_owned());
        self.peer_name = name.map(str::to_owned);
    }

    fn start_ending(&mut self, now: Instant, msg: Message, ev: Event) -> Vec<Action> {
        let out = vec![self.send(msg), Action::Event(ev)];
        self.state = CallState::Ending;
        self.deadline = Some(now + self.config.ending_timeout);
        out
    }

    /// Back to Idle, pushing `Ended`.
    fn finish(&mut self, out: &mut Vec<Action>) {
        if self.state != CallState::Idle {
            out.push(Action::Event(Event::Ended));
        }
        self.state = CallState::Idle;
        self.peer = None;
        self.peer_name = None;
        self.deadline = None;
    }

    fn send(&self, msg: Message) -> Action {
        Action::SendRelay {
            to_peer: self.peer.clone().unwrap_or_default(),
            args: msg.to_args(&self.user_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOB: &str = "BOB-ID";
    const EVE: &str = "EVE-ID";

    fn t0() -> Instant {
        Instant::now()
    }

    fn relay(to: &str, action: &str, name: &str) -> Action {
        Action::SendRelay {
            to_peer: to.to_owned(),
            args: vec![action.to_owned(), name.to_owned()],
        }
    }

    fn ev(e: Event) -> Action {
        Action::Event(e)
    }

    /// Alice calling Bob.
    fn calling(now: Instant) -> CallMachine {
        let mut m = CallMachine::new("alice");
        assert_eq!(
            m.call(now, "alice", BOB),
            vec![relay(BOB, "invite", "alice")]
        );
        assert_eq!(m.state(), CallState::Calling);
        assert_eq!(m.peer(), Some(BOB));
        m
    }

    /// Alice ringing, called by Bob.
    fn ringing(now: Instant) -> CallMachine {
        let mut m = CallMachine::new("alice");
        let out = m.on_relay(now, BOB, &["invite", "bob"]);
        assert_eq!(
            out,
            vec![ev(Event::Incoming {
                from_name: "bob".into(),
                from_peer: BOB.into()
            })]
        );
        assert_eq!(m.state(), CallState::Ringing);
        assert_eq!(m.peer_name(), Some("bob"));
        m
    }

    fn in_call(now: Instant) -> CallMachine {
        let mut m = calling(now);
        assert_eq!(
            m.on_relay(now, BOB, &["accept", "bob"]),
            vec![ev(Event::Accepted)]
        );
        assert_eq!(m.state(), CallState::InCall);
        assert_eq!(m.peer_name(), Some("bob"));
        assert_eq!(m.poll_timeout(), None);
        m
    }

    fn assert_idle(m: &CallMachine) {
        assert_eq!(m.state(), CallState::Idle);
        assert_eq!(m.peer(), None);
        assert_eq!(m.peer_name(), None);
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn message_wire_strings() {
        for m in [
            Message::Invite,
            Message::Cancel,
            Message::Accept,
            Message::Reject,
            Message::Bye,
            Message::Ok,
            Message::Busy,
        ] {
            assert_eq!(Message::parse(m.as_str()), Some(m));
            assert_eq!(m.to_args("n"), vec![m.as_str().to_string(), "n".into()]);
        }
        assert_eq!(Message::parse("INVITE"), None);
        assert_eq!(parse_relay_args::<&str>(&[]), None);
        assert_eq!(parse_relay_args(&["bye"]), Some((Message::Bye, None)));
        assert_eq!(
            parse_relay_args(&["bye", "x", "extra"]),
            Some((Message::Bye, Some("x")))
        );
    }

    #[test]
    fn call_sends_invite_and_sets_timer() {
        let now = t0();
        let m = calling(now);
        assert_eq!(m.poll_timeout(), Some(now + DEFAULT_INVITE_TIMEOUT));
        assert_eq!(m.user_name(), "alice");
    }

    #[test]
    fn call_with_empty_peer_is_offline() {
        let mut m = CallMachine::new("alice");
        assert_eq!(
            m.call(t0(), "alice", ""),
            vec![ev(Event::Offline), ev(Event::Ended)]
        );
        assert_idle(&m);
    }

    #[test]
    fn call_when_busy_is_noop() {
        let now = t0();
        let mut m = calling(now);
        assert!(m.call(now, "alice", EVE).is_empty());
        assert_eq!(m.peer(), Some(BOB));
        let mut r = ringing(now);
        assert!(r.call(now, "alice", EVE).is_empty());
        assert_eq!(r.state(), CallState::Ringing);
    }

    #[test]
    fn caller_accepted() {
        in_call(t0());
    }

    #[test]
    fn caller_rejected() {
        let now = t0();
        let mut m = calling(now);
        assert_eq!(
            m.on_relay(now, BOB, &["reject", "bob"]),
            vec![ev(Event::Rejected { by_peer: true }), ev(Event::Ended)]
        );
        assert_idle(&m);
    }

    #[test]
    fn caller_no_answer_then_ok() {
        let now = t0();
        let mut m = calling(now);
        assert!(m.handle_timeout(now + Duration::from_secs(29)).is_empty());
        assert_eq!(m.state(), CallState::Calling);
        let t = now + DEFAULT_INVITE_TIMEOUT;
        assert_eq!(
            m.handle_timeout(t),
            vec![relay(BOB, "cancel", "alice"), ev(Event::NoAnswer)]
        );
        assert_eq!(m.state(), CallState::Ending);
        assert_eq!(m.poll_timeout(), Some(t + DEFAULT_ENDING_TIMEOUT));
        assert_eq!(m.on_relay(t, BOB, &["ok", "bob"]), vec![ev(Event::Ended)]);
        assert_idle(&m);
    }

    #[test]
    fn configurable_timeout() {
        let now = t0();
        let cfg = CallConfig {
            invite_timeout: Duration::from_secs(3),
            ..CallConfig::default()
        };
        let mut m = CallMachine::with_config("alice", cfg);
        assert_eq!(m.config(), &cfg);
        m.call(now, "alice", BOB);
        assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(3)));
        let out = m.handle_timeout(now + Duration::from_secs(3));
        assert_eq!(out[1], ev(Event::NoAnswer));
    }

    #[test]
    fn caller_cancels_ok_timeout() {
        let now = t0();
        let mut m = calling(now);
        assert_eq!(
            m.hangup(now),
            vec![
                relay(BOB, "cancel", "alice"),
                ev(Event::Cancelled { by_peer: false })
            ]
        );
        assert_eq!(m.state(), CallState::Ending);
        assert!(m.hangup(now).is_empty());
        // no ok: the ending timer ends the call
        assert!(m.handle_timeout(now).is_empty());
        assert_eq!(
            m.handle_timeout(now + DEFAULT_ENDING_TIMEOUT),
            vec![ev(Event::Ended)]
        );
        assert_idle(&m);
    }

    #[test]
    fn ending_accepts_accept_race() {
        // Bob accepted while our cancel was in flight: ignore accept, wait for ok.
        let now = t0();
        let mut m = calling(now);
        m.hangup(now);
        assert!(m.on_relay(now, BOB, &["accept", "bob"]).is_empty());
        assert_eq!(m.state(), CallState::Ending);
        assert_eq!(
            m.on_relay(now, BOB, &["reject", "bob"]),
            vec![ev(Event::Ended)]
        );
        assert_idle(&m);
    }

    #[test]
    fn callee_accepts() {
        let now = t0();
        let mut m = ringing(now);
        assert_eq!(m.poll_timeout(), Some(now + DEFAULT_RING_TIMEOUT));
        assert_eq!(
            m.accept(now),
            vec![relay(BOB, "accept", "alice"), ev(Event::Accepted)]
        );
        assert_eq!(m.state(), CallState::InCall);
        assert_eq!(m.poll_timeout(), None);
        assert!(m.accept(now).is_empty());
    }

    #[test]
    fn callee_rejects() {
        let now = t0();
        let mut m = ringing(now);
        assert_eq!(
            m.reject(now),
            vec![
                relay(BOB, "reject", "alice"),
                ev(Event::Rejected { by_peer: false }),
                ev(Event::Ended)
            ]
        );
        assert_idle(&m);
        assert!(m.reject(now).is_empty());
    }

    #[test]
    fn callee_hangup_while_ringing_rejects() {
        let now = t0();
        let mut m = ringing(now);
        let out = m.hangup(now);
        assert_eq!(out[0], relay(BOB, "reject", "alice"));
        assert_idle(&m);
    }

    #[test]
    fn callee_cancelled() {
        let now = t0();
        let mut m = ringing(now);
        assert_eq!(
            m.on_relay(now, BOB, &["cancel", "bob"]),
            vec![
                relay(BOB, "ok", "alice"),
                ev(Event::Cancelled { by_peer: true }),
                ev(Event::Ended)
            ]
        );
        assert_idle(&m);
    }

    #[test]
    fn callee_ring_timeout() {
        let now = t0();
        let mut m = ringing(now);
        assert!(m.handle_timeout(now + DEFAULT_INVITE_TIMEOUT).is_empty());
        assert_eq!(
            m.handle_timeout(now + DEFAULT_RING_TIMEOUT),
            vec![
                relay(BOB, "reject", "alice"),
                ev(Event::NoAnswer),
                ev(Event::Ended)
            ]
        );
        assert_idle(&m);
    }

    #[test]
    fn duplicate_invite_while_ringing_ignored() {
        let now = t0();
        let mut m = ringing(now);
        assert!(m.on_relay(now, BOB, &["invite", "bob"]).is_empty());
        assert_eq!(m.state(), CallState::Ringing);
    }

    #[test]
    fn hangup_in_call_then_ok() {
        let now = t0();
        let mut m = in_call(now);
        assert_eq!(
            m.hangup(now),
            vec![
                relay(BOB, "bye", "alice"),
                ev(Event::HungUp { by_peer: false })
            ]
        );
        assert_eq!(m.state(), CallState::Ending);
        assert_eq!(m.on_relay(now, BOB, &["ok"]), vec![ev(Event::Ended)]);
        assert_idle(&m);
    }

    #[test]
    fn peer_hangs_up() {
        let now = t0();
        let mut m = in_call(now);
        assert_eq!(
            m.on_relay(now, BOB, &["bye", "bob"]),
            vec![
                relay(BOB, "ok", "alice"),
                ev(Event::HungUp { by_peer: true }),
                ev(Event::Ended)
            ]
        );
        assert_idle(&m);
        // the late ok of nobody is ignored
        assert!(m.on_relay(now, BOB, &["ok", "bob"]).is_empty());
    }

    #[test]
    fn cancel_in_call_is_hangup() {
        let now = t0();
        let mut m = in_call(now);
        let out = m.on_relay(now, BOB, &["cancel", "bob"]);
        assert_eq!(out[1], ev(Event::HungUp { by_peer: true }));
        assert_idle(&m);
    }

    #[test]
    fn both_hang_up_at_once() {
        let now = t0();
        let mut m = in_call(now);
        m.hangup(now);
        assert_eq!(
            m.on_relay(now, BOB, &["bye", "bob"]),
            vec![relay(BOB, "ok", "alice"), ev(Event::Ended)]
        );
        assert_idle(&m);
    }

    #[test]
    fn peer_gone_ends_only_established_or_ending_calls() {
        let now = t0();
        let mut m = calling(now);
        assert!(m.peer_gone(now).is_empty());
        assert_eq!(m.state(), CallState::Calling);
        m.on_relay(now, BOB, &["accept", "bob"]);
        assert_eq!(m.state(), CallState::InCall);
        assert_eq!(
            m.peer_gone(now),
            vec![ev(Event::HungUp { by_peer: true }), ev(Event::Ended)]
        );
        assert_eq!(m.state(), CallState::Idle);
        assert!(m.peer_gone(now).is_empty());
        let mut m = calling(now);
        m.on_relay(now, BOB, &["accept", "bob"]);
        m.hangup(now);
        assert_eq!(m.state(), CallState::Ending);
        assert_eq!(m.peer_gone(now), vec![ev(Event::Ended)]);
    }

    #[test]
    fn busy_for_third_party_in_every_state() {
        let now = t0();
        let mut ending = in_call(now);
        ending.hangup(now);
        for mut m in [calling(now), ringing(now), in_call(now), ending] {
            let state = m.state();
            assert_eq!(
                m.on_relay(now, EVE, &["invite", "eve"]),
                vec![
                    relay(EVE, "busy", "alice"),
                    relay(EVE, "reject", "alice"),
                    ev(Event::Busy {
                        from_name: "eve".into(),
                        from_peer: EVE.into()
                    })
                ]
            );
            assert_eq!(m.state(), state);
            assert_eq!(m.peer(), Some(BOB));
            // other messages from a third party are ignored
            for a in ["cancel", "accept", "reject", "bye", "ok", "busy"] {
                assert!(m.on_relay(now, EVE, &[a, "eve"]).is_empty());
                assert_eq!(m.state(), state);
            }
            // a failed busy reject does not end our call
            assert!(m.relay_failed(now, EVE).is_empty());
            assert_eq!(m.state(), state);
        }
    }

    #[test]
    fn glare_invite_from_peer_while_calling_is_busy() {
        let now = t0();
        let mut m = calling(now);
        let out = m.on_relay(now, BOB, &["invite", "bob"]);
        assert_eq!(out[0], relay(BOB, "busy", "alice"));
        assert_eq!(out[1], relay(BOB, "reject", "alice"));
        assert_eq!(m.state(), CallState::Calling);
    }

    #[test]
    fn a_busy_callee_is_told_apart_from_a_refusal() {
        let now = t0();
        let mut m = calling(now);
        assert_eq!(
            m.on_relay(now, BOB, &["busy", "bob"]),
            vec![ev(Event::PeerBusy), ev(Event::Ended)]
        );
        assert_idle(&m);
        // the reject that follows finds the machine idle
        assert!(m.on_relay(now, BOB, &["reject", "bob"]).is_empty());
        assert_idle(&m);
        // busy means nothing in other states
        let mut m = in_call(now);
        assert!(m.on_relay(now, BOB, &["busy", "bob"]).is_empty());
        assert_eq!(m.state(), CallState::InCall);
    }

    #[test]
    fn offline() {
        let now = t0();
        let mut m = calling(now);
        assert!(m.relay_failed(now, EVE).is_empty());
        assert_eq!(
            m.relay_failed(now, BOB),
            vec![ev(Event::Offline), ev(Event::Ended)]
        );
        assert_idle(&m);
        assert!(m.relay_failed(now, BOB).is_empty());

        let mut m = in_call(now);
        assert_eq!(m.relay_failed(now, BOB)[0], ev(Event::Offline));
        assert_idle(&m);

        let mut m = in_call(now);
        m.hangup(now);
        assert_eq!(m.relay_failed(now, BOB), vec![ev(Event::Ended)]);
        assert_idle(&m);
    }

    #[test]
    fn idle_ignores_everything_but_named_invites() {
        let now = t0();
        let mut m = CallMachine::new("alice");
        for args in [
            vec![],
            vec!["invite"],
            vec!["bogus", "x"],
            vec!["cancel", "bob"],
            vec!["accept", "bob"],
            vec!["reject", "bob"],
            vec!["bye", "bob"],
            vec!["ok", "bob"],
            vec!["Invite", "bob"],
        ] {
            assert!(m.on_relay(now, BOB, &args).is_empty(), "{args:?}");
            assert_idle(&m);
        }
        assert!(m.on_relay(now, "", &["invite", "x"]).is_empty());
        assert!(m.accept(now).is_empty());
        assert!(m.reject(now).is_empty());
        assert!(m.hangup(now).is_empty());
        assert!(m.handle_timeout(now).is_empty());
        assert!(m.relay_failed(now, BOB).is_empty());
        assert_idle(&m);
    }

    #[test]
    fn two_machines_talk() {
        let now = t0();
        let mut a = CallMachine::new("alice");
        let mut b = CallMachine::new("bob");
        let ids = ["A", "B"];
        let mut pending: Vec<(usize, Action)> = a
            .call(now, "alice", "B")
            .into_iter()
            .map(|x| (0, x))
            .collect();
        let deliver =
            |pending: &mut Vec<(usize, Action)>, a: &mut CallMachine, b: &mut CallMachine| {
                while let Some((from, act)) = pending.pop() {
                    if let Action::SendRelay { to_peer, args } = act {
                        let (m, to) = if to_peer == "A" {
                            (&mut *a, 0)
                        } else {
                            (&mut *b, 1)
                        };
                        assert_ne!(from, to);
                        let out = m.on_relay(now, ids[from], &args);
                        pending.extend(out.into_iter().map(|x| (to, x)));
                    }
                }
            };
        deliver(&mut pending, &mut a, &mut b);
        assert_eq!(b.state(), CallState::Ringing);
        pending.extend(b.accept(now).into_iter().map(|x| (1, x)));
        deliver(&mut pending, &mut a, &mut b);
        assert_eq!(a.state(), CallState::InCall);
        assert_eq!(a.peer_name(), Some("bob"));
        pending.extend(b.hangup(now).into_iter().map(|x| (1, x)));
        deliver(&mut pending, &mut a, &mut b);
        assert_idle(&a);
        assert_idle(&b);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Call(usize),
        Relay(usize, Vec<String>),
        Accept,
        Reject,
        Hangup,
        Failed(usize),
        Advance(u64),
    }

    const PEERS: [&str; 3] = ["", "P1", "P2"];

    fn arg() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "invite", "cancel", "accept", "reject", "bye", "ok", "busy"
            ])
            .prop_map(str::to_owned),
            ".{0,6}",
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0..3usize).prop_map(Op::Call),
            4 => ((0..3usize), prop::collection::vec(arg(), 0..4))
                .prop_map(|(p, a)| Op::Relay(p, a)),
            1 => Just(Op::Accept),
            1 => Just(Op::Reject),
            1 => Just(Op::Hangup),
            1 => (0..3usize).prop_map(Op::Failed),
            1 => (0..40_000u64).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn random_sequences_stay_consistent(ops in prop::collection::vec(op(), 0..60)) {
            let mut now = Instant::now();
            let mut m = CallMachine::new("me");
            let mut open_calls = 0i32;
            for op in ops {
                let before = m.state();
                let before_peer = m.peer().map(str::to_owned);
                let out = match &op {
                    Op::Call(p) => m.call(now, "me", PEERS[*p]),
                    Op::Relay(p, a) => m.on_relay(now, PEERS[*p], a),
                    Op::Accept => m.accept(now),
                    Op::Reject => m.reject(now),
                    Op::Hangup => m.hangup(now),
                    Op::Failed(p) => m.relay_failed(now, PEERS[*p]),
                    Op::Advance(ms) => {
                        now += Duration::from_millis(*ms);
                        m.handle_timeout(now)
                    }
                };
                let after = m.state();
                // state/peer/timer consistency
                prop_assert_eq!(after == CallState::Idle, m.peer().is_none());
                prop_assert_eq!(
                    m.poll_timeout().is_some(),
                    matches!(after, CallState::Calling | CallState::Ringing | CallState::Ending)
                );
                if let Some(p) = m.peer() {
                    prop_assert!(!p.is_empty());
                }
                // one call at a time: the peer never changes without passing through Idle
                if before != CallState::Idle && after != CallState::Idle {
                    prop_assert_eq!(before_peer.as_deref(), m.peer());
                }
                let mut ended = 0;
                for a in &out {
                    match a {
                        Action::SendRelay { to_peer, args } => {
                            prop_assert_eq!(args.len(), 2);
                            prop_assert!(Message::parse(&args[0]).is_some());
                            prop_assert_eq!(&args[1], "me");
                            prop_assert!(!to_peer.is_empty());
                            if before_peer.as_deref() != Some(to_peer.as_str()) {
                                // only a new call's invite or a busy reject go elsewhere
                                prop_assert!(args[0] == "invite" || args[0] == "reject" || args[0] == "busy");
                            }
                        }
                        Action::Event(Event::Ended) => ended += 1,
                        Action::Event(Event::Incoming { .. }) => {
                            prop_assert_eq!(before, CallState::Idle);
                            open_calls += 1;
                        }
                        Action::Event(_) => {}
                    }
                }
                if matches!(op, Op::Call(_)) && before == CallState::Idle {
                    open_calls += 1;
                }
                prop_assert!(ended <= 1);
                open_calls -= ended;
                prop_assert_eq!(open_calls, i32::from(after != CallState::Idle));
                if ended == 1 {
                    prop_assert_eq!(after, CallState::Idle);
                }
            }
        }
    }
}
