//! [`Session`], [`SendFlow`] and [`RecvFlow`] handles.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtmfp::{CloseReason, Priority, RecvMessage, Role, SessionId, SessionInfo};
use tokio::sync::{mpsc, watch};

use crate::endpoint::{Endpoint, EndpointInner};
use crate::error::Error;
use crate::handles::{
    Command, RecvParts, RecvShared, SessionCloser, SessionParts, SessionStatus, MESSAGE_OVERHEAD,
};

/// Shared by a session's handles; closes the session when the last one is
/// dropped (through its closer).
#[derive(Debug)]
struct SessionGuard {
    ep: Arc<EndpointInner>,
    _closer: SessionCloser,
}

#[derive(Debug)]
struct SessionInner {
    id: SessionId,
    role: Role,
    status: watch::Receiver<SessionStatus>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<RecvParts>>,
    guard: Arc<SessionGuard>,
}

/// An open RTMFP session: a cheap, cloneable handle.
///
/// The session is closed in an orderly way when the last handle referring
/// to it (this, its clones, and its [`SendFlow`]s and [`RecvFlow`]s) is
/// dropped.
#[derive(Debug, Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl Session {
    pub(crate) fn new(ep: Arc<EndpointInner>, parts: SessionParts) -> Self {
        Self {
            inner: Arc::new(SessionInner {
                id: parts.id,
                role: parts.role,
                status: parts.status,
                incoming: tokio::sync::Mutex::new(parts.incoming),
                guard: Arc::new(SessionGuard {
                    ep,
                    _closer: parts.closer,
                }),
            }),
        }
    }

    fn ep(&self) -> &Arc<EndpointInner> {
        &self.inner.guard.ep
    }

    /// The engine's identifier of this session.
    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    /// Whether we opened the session or answered it.
    pub fn role(&self) -> Role {
        self.inner.role
    }

    /// The endpoint this session belongs to.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_inner(self.ep().clone())
    }

    /// The far end's current address (it follows address changes).
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.status.borrow().peer
    }

    /// Opens a sending flow carrying the user's `metadata`, optionally in
    /// return to one of the far end's flows (`association`, the receiving
    /// flow's [`RecvFlow::id`]).
    ///
    /// # Errors
    /// [`Error::SessionClosed`], [`Error::EndpointClosed`], or
    /// [`Error::Engine`] (too many flows, metadata too large...).
    pub async fn open_flow(
        &self,
        metadata: &[u8],
        association: Option<u64>,
        priority: Priority,
    ) -> Result<SendFlow, Error> {
        let flow = self
            .ep()
            .request(|reply| Command::OpenFlow {
                session: self.inner.id,
                metadata: Bytes::copy_from_slice(metadata),
                association,
                priority,
                reply,
            })
            .await??;
        Ok(SendFlow {
            session: self.inner.id,
            id: flow,
            guard: self.inner.guard.clone(),
            done: false,
        })
    }

    /// Waits for the next flow the far end opens toward us. Returns `None`
    /// once the session is closed.
    pub async fn accept_flow(&self) -> Option<RecvFlow> {
        let parts = self.inner.incoming.lock().await.recv().await?;
        Some(RecvFlow {
            session: parts.session,
            id: parts.flow,
            metadata: parts.metadata,
            association: parts.association,
            rx: parts.rx,
            shared: parts.shared,
            guard: self.inner.guard.clone(),
            done: false,
        })
    }

    /// A snapshot of the session's state (RTT, congestion window, buffered
    /// bytes, counters...).
    ///
    /// # Errors
    /// [`Error::SessionClosed`] once the engine forgot the session,
    /// [`Error::EndpointClosed`].
    pub async fn info(&self) -> Result<SessionInfo, Error> {
        self.ep()
            .request(|reply| Command::Info {
                session: self.inner.id,
                reply,
            })
            .await?
            .ok_or(Error::SessionClosed)
    }

    /// Closes the session in an orderly way (the engine goes on exchanging
    /// Close / Close Ack in the background) and returns why it closed
    /// (normally [`CloseReason::Local`]; another reason if it was already
    /// closed).
    pub async fn close(&self) -> CloseReason {
        let _ = self.ep().command(Command::CloseSession {
            session: self.inner.id,
        });
        self.closed().await
    }

    /// Closes the session abruptly.
    pub async fn abort(&self) -> CloseReason {
        let _ = self.ep().command(Command::AbortSession {
            session: self.inner.id,
        });
        self.closed().await
    }

    /// Waits until the session is closed, for whatever reason.
    pub async fn closed(&self) -> CloseReason {
        let mut status = self.inner.status.clone();
        let reason = match status.wait_for(|s| s.closed.is_some()).await {
            Ok(s) => s.closed.clone(),
            // The driver stopped without a word: the session is gone.
            Err(_) => None,
        };
        reason.unwrap_or(CloseReason::Aborted)
    }

    /// Whether the session is closed, and why.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.status.borrow().closed.clone()
    }
}

/// A flow on which we send messages to the far end.
///
/// Dropping it closes the flow in an orderly way (what was accepted by
/// [`send`](Self::send) is still delivered).
#[derive(Debug)]
pub struct SendFlow {
    session: SessionId,
    id: u64,
    guard: Arc<SessionGuard>,
    done: bool,
}

impl SendFlow {
    /// Our flow ID (the far end may associate its return flows with it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The session the flow belongs to.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// Queues a reliable message. Waits while the flow's send buffer is
    /// full (backpressure), so a loop of sends runs at the pace of the
    /// network.
    ///
    /// If the future is dropped before it completes, the message may or
    /// may not be sent.
    ///
    /// # Errors
    /// [`Error::FlowRejected`] when the far end rejected the flow,
    /// [`Error::SessionClosed`], [`Error::EndpointClosed`].
    pub async fn send(&mut self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.send_inner(data.into(), None).await
    }

    /// Like [`send`](Self::send), but the message is abandoned if it is not
    /// delivered within `lifetime` (partial reliability, e.g. for live
    /// media).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_with_lifetime(
        &mut self,
        data: impl Into<Bytes>,
        lifetime: Duration,
    ) -> Result<(), Error> {
        self.send_inner(data.into(), Some(lifetime)).await
    }

    async fn send_inner(&mut self, data: Bytes, lifetime: Option<Duration>) -> Result<(), Error> {
        self.guard
            .ep
            .request(|reply| Command::Send {
                session: self.session,
                flow: self.id,
                data,
                lifetime,
                reply,
            })
            .await?
    }

    /// Closes the flow and waits until every message was acknowledged by
    /// the far end (or abandoned).
    ///
    /// # Errors
    /// [`Error::FlowRejected`] when the far end rejected the flow,
    /// [`Error::SessionClosed`] when the session closed first,
    /// [`Error::EndpointClosed`].
    pub async fn close(mut self) -> Result<(), Error> {
        self.done = true;
        self.guard
            .ep
            .request(|reply| Command::CloseFlow {
                session: self.session,
                flow: self.id,
                reply: Some(reply),
            })
            .await?
    }
}

impl Drop for SendFlow {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.guard.ep.command(Command::CloseFlow {
                session: self.session,
                flow: self.id,
                reply: None,
            });
        }
    }
}

/// A flow on which the far end sends us messages.
///
/// The driver moves messages from the engine to this handle only while
/// fewer than [`DriverConfig::recv_flow_buffer`](crate::DriverConfig::recv_flow_buffer)
/// bytes wait here, so a slow reader shrinks the flow's receive window and
/// slows the sender down instead of using memory.
///
/// Dropping it before the flow is finished rejects the flow.
#[derive(Debug)]
pub struct RecvFlow {
    session: SessionId,
    id: u64,
    metadata: Bytes,
    association: Option<u64>,
    rx: mpsc::UnboundedReceiver<RecvMessage>,
    shared: Arc<RecvShared>,
    guard: Arc<SessionGuard>,
    done: bool,
}

impl RecvFlow {
    /// The far end's flow ID.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The session the flow belongs to.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// The far end's metadata for the flow.
    pub fn metadata(&self) -> &Bytes {
        &self.metadata
    }

    /// Our sending flow this flow answers, if any.
    pub fn association(&self) -> Option<u64> {
        self.association
    }

    /// The next message. Returns `None` when the flow is finished (see
    /// [`is_finished`](Self::is_finished)), or when the session or the
    /// endpoint closed.
    pub async fn recv(&mut self) -> Option<RecvMessage> {
        let msg = self.rx.recv().await?;
        let cost = msg.data.len() + MESSAGE_OVERHEAD;
        let before = self.shared.buffered.fetch_sub(cost, Ordering::AcqRel);
        let limit = self.shared.limit;
        if before >= limit && before.saturating_sub(cost) < limit {
            // The driver may have stopped reading this flow: let it resume.
            let _ = self.guard.ep.command(Command::ResumeRead {
                session: self.session,
                flow: self.id,
            });
        }
        Some(msg)
    }

    /// Whether the far end finished the flow and every message was handed
    /// to this handle (after [`recv`](Self::recv) returned `None`, this
    /// tells a finished flow from a closed session).
    pub fn is_finished(&self) -> bool {
        self.shared.finished.load(Ordering::Acquire)
    }

    /// Bytes (plus a small per-message overhead) waiting in this handle.
    pub fn buffered(&self) -> usize {
        self.shared.buffered.load(Ordering::Acquire)
    }

    /// Rejects the flow with an exception code; the far end sees
    /// [`Error::FlowRejected`].
    pub fn reject(mut self, code: u64) {
        self.done = true;
        let _ = self.guard.ep.command(Command::RejectFlow {
            session: self.session,
            flow: self.id,
            code: Some(code),
            shared: self.shared.clone(),
        });
    }
}

impl Drop for RecvFlow {
    fn drop(&mut self) {
        if !self.done && !self.is_finished() {
            let _ = self.guard.ep.command(Command::RejectFlow {
                session: self.session,
                flow: self.id,
                code: None,
                shared: self.shared.clone(),
            });
        }
    }
}
