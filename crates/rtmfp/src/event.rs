//! What the engine reports to its user.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

/// Handle of a session (opening or open): this end's receive session ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u32);

/// Which end began the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This end sent the IHello.
    Initiator,
    /// This end answered it.
    Responder,
}

/// Why an opening session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// No responder answered before the ultimate open timeout (§3.5.1.1.1).
    #[error("open timed out")]
    Timeout,
    /// An S_OPEN session with the same identity already exists (§3.5.1.1.1).
    #[error("duplicate of session {0:?}")]
    Duplicate(SessionId),
    /// The crypto profile refused the responder or its keying.
    #[error("keying failed: {0}")]
    Keying(String),
    /// The user cancelled it.
    #[error("cancelled")]
    Cancelled,
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// This end closed it (orderly).
    Local,
    /// This end aborted it.
    Aborted,
    /// The far end closed it.
    Remote,
    /// Nothing was received for the idle timeout.
    IdleTimeout,
    /// A new session from the same identity replaced it (§3.5.1.1.2).
    Overridden,
    /// The endpoint ran out of a resource limit.
    Limit,
}

/// An event from the engine; drain with [`Endpoint::poll_event`](crate::Endpoint::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A session reached S_OPEN.
    SessionOpened {
        /// The session.
        session: SessionId,
        /// Our role in it.
        role: Role,
        /// The far end's address.
        peer: SocketAddr,
    },
    /// An opening session failed (S_OPEN_FAILED).
    SessionFailed {
        /// The session.
        session: SessionId,
        /// Why.
        error: OpenError,
    },
    /// An open session is closed; its flows are gone.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// The far end began a new flow to us.
    IncomingFlow {
        /// The session.
        session: SessionId,
        /// The far end's flow ID.
        flow: u64,
        /// The user's per-flow metadata.
        metadata: Bytes,
        /// Our sending flow this flow answers, if any.
        association: Option<u64>,
    },
    /// A receiving flow has messages; call `read` until it returns `None`.
    Readable {
        /// The session.
        session: SessionId,
        /// The receiving flow.
        flow: u64,
    },
    /// The far end finished a receiving flow and every message was read.
    RecvFlowComplete {
        /// The session.
        session: SessionId,
        /// The receiving flow.
        flow: u64,
    },
    /// The far end rejected one of our sending flows.
    SendFlowException {
        /// The session.
        session: SessionId,
        /// The sending flow.
        flow: u64,
        /// Exception code.
        code: u64,
    },
    /// A closed sending flow was completely acknowledged.
    SendFlowComplete {
        /// The session.
        session: SessionId,
        /// The sending flow.
        flow: u64,
    },
    /// A sending flow that refused data can take more.
    Writable {
        /// The session.
        session: SessionId,
        /// The sending flow.
        flow: u64,
    },
    /// The far end moved to a new address (§3.5.4.2).
    AddressChanged {
        /// The session.
        session: SessionId,
        /// Previous address.
        old: SocketAddr,
        /// New address.
        new: SocketAddr,
    },
    /// An IHello whose EPD does not select us arrived (only with
    /// `report_foreign_ihello`): answer it with
    /// [`send_redirect`](crate::Endpoint::send_redirect) and/or
    /// [`forward_ihello`](crate::Endpoint::forward_ihello).
    IHelloForOther {
        /// Source of the IHello.
        from: SocketAddr,
        /// The endpoint discriminator asked for.
        epd: Bytes,
        /// The initiator's tag.
        tag: Bytes,
    },
}

impl Event {
    /// The session the event is about (`None` for
    /// [`Event::IHelloForOther`], which precedes any session).
    pub fn session(&self) -> Option<SessionId> {
        match *self {
            Event::SessionOpened { session, .. }
            | Event::SessionFailed { session, .. }
            | Event::SessionClosed { session, .. }
            | Event::IncomingFlow { session, .. }
            | Event::Readable { session, .. }
            | Event::RecvFlowComplete { session, .. }
            | Event::SendFlowException { session, .. }
            | Event::SendFlowComplete { session, .. }
            | Event::Writable { session, .. }
            | Event::AddressChanged { session, .. } => Some(session),
            Event::IHelloForOther { .. } => None,
        }
    }
}

/// Counters of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Datagrams received and accepted.
    pub packets_received: u64,
    /// Bytes of datagrams sent.
    pub bytes_sent: u64,
    /// Bytes of datagrams received.
    pub bytes_received: u64,
    /// User data fragments sent for the first time.
    pub fragments_sent: u64,
    /// Fragments retransmitted.
    pub fragments_retransmitted: u64,
    /// Fragments declared lost.
    pub fragments_lost: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
}

/// A snapshot of a session's state.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Our role.
    pub role: Role,
    /// Far end's current address.
    pub peer: SocketAddr,
    /// Far end's certificate.
    pub far_certificate: Bytes,
    /// Our session nonce.
    pub near_nonce: Bytes,
    /// Far end's session nonce.
    pub far_nonce: Bytes,
    /// Smoothed RTT, if measured.
    pub srtt: Option<Duration>,
    /// Effective retransmission timeout.
    pub erto: Duration,
    /// Congestion window (bytes).
    pub cwnd: u64,
    /// Bytes in flight.
    pub outstanding: u64,
    /// Bytes queued on sending flows and not yet acknowledged.
    pub send_buffered: usize,
    /// Bytes held in receive buffers (not yet read).
    pub recv_buffered: usize,
    /// Open sending flows.
    pub send_flows: usize,
    /// Open receiving flows.
    pub recv_flows: usize,
    /// Counters.
    pub stats: SessionStats,
    /// Whether the session is open (not closing).
    pub open: bool,
}
