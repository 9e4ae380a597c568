//! The [`Endpoint`] handle.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use rtmfp::{CloseReason, CryptoProfile, EndpointConfig, OpenError, Role, SessionId};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::DriverConfig;
use crate::error::Error;
use crate::handles::{Command, Driver, SessionParts};
use crate::host::{Host, HostChannel, HostConfig, HostHandle};
use crate::session::Session;
use crate::socket::IoStats;

/// Something that happened on the endpoint as a whole, broadcast to every
/// subscriber of [`Endpoint::events`].
///
/// Session and flow data go through the [`Session`] handles; these events
/// are for monitoring and for servers that need to see the endpoint-level
/// protocol (for example to implement introductions with
/// [`Endpoint::with_engine`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// A session reached the open state.
    SessionOpened {
        /// The session.
        session: SessionId,
        /// Our role in it.
        role: Role,
        /// The far end's address.
        peer: SocketAddr,
    },
    /// An opening session failed.
    SessionFailed {
        /// The session.
        session: SessionId,
        /// Why.
        error: OpenError,
    },
    /// An open session closed.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// The far end of a session moved to a new address.
    AddressChanged {
        /// The session.
        session: SessionId,
        /// Previous address.
        old: SocketAddr,
        /// New address.
        new: SocketAddr,
    },
    /// An IHello for another endpoint arrived (only when
    /// [`EndpointConfig::report_foreign_ihello`] is set): answer it with
    /// `send_redirect` / `forward_ihello` through [`Endpoint::with_engine`].
    IHelloForOther {
        /// Source of the IHello.
        from: SocketAddr,
        /// The endpoint discriminator asked for.
        epd: Bytes,
        /// The initiator's tag.
        tag: Bytes,
    },
}

/// Shared by every handle of one endpoint.
#[derive(Debug)]
pub(crate) struct EndpointInner {
    cmd: HostHandle<Driver>,
    local_addr: SocketAddr,
    accept: tokio::sync::Mutex<mpsc::Receiver<SessionParts>>,
    events: broadcast::Sender<EndpointEvent>,
}

impl EndpointInner {
    /// Sends a command to the driver from synchronous code.
    pub(crate) fn command(&self, cmd: Command) -> Result<(), Error> {
        self.cmd.send_soon(cmd).map_err(|_| Error::EndpointClosed)
    }

    /// Sends a command and waits for the driver's answer.
    pub(crate) async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| Error::EndpointClosed)?;
        rx.await.map_err(|_| Error::EndpointClosed)
    }
}

/// An RTMFP endpoint bound to one UDP socket: a cheap, cloneable handle to
/// the driver task that owns the socket and the protocol engine.
///
/// The driver stops after [`shutdown`](Self::shutdown), or once every
/// handle (endpoints, sessions and flows) has been dropped; in both cases
/// open sessions are closed in an orderly way first (bounded by
/// [`DriverConfig::shutdown_timeout`]).
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: Arc<EndpointInner>,
}

impl Endpoint {
    /// Binds a UDP socket to `addr` (IPv4 or IPv6) and starts the driver on
    /// the current tokio runtime.
    ///
    /// # Errors
    /// Fails when the socket cannot be bound or configured, when the OS has
    /// no randomness, or when called outside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        config: EndpointConfig,
        profile: Box<dyn CryptoProfile>,
    ) -> io::Result<Self> {
        Self::bind_with(addr, config, profile, DriverConfig::default())
    }

    /// [`bind`](Self::bind) with driver tunables.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn bind_with(
        addr: SocketAddr,
        config: EndpointConfig,
        profile: Box<dyn CryptoProfile>,
        driver: DriverConfig,
    ) -> io::Result<Self> {
        let socket = std::net::UdpSocket::bind(addr)?;
        Self::from_std_with(socket, config, profile, driver)
    }

    /// Starts an endpoint on an already bound UDP socket (for example one
    /// created with special options). The socket is made non-blocking.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn from_std(
        socket: std::net::UdpSocket,
        config: EndpointConfig,
        profile: Box<dyn CryptoProfile>,
    ) -> io::Result<Self> {
        Self::from_std_with(socket, config, profile, DriverConfig::default())
    }

    /// [`from_std`](Self::from_std) with driver tunables.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn from_std_with(
        socket: std::net::UdpSocket,
        config: EndpointConfig,
        profile: Box<dyn CryptoProfile>,
        driver: DriverConfig,
    ) -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(io::Error::other)?;
        let now = crate::host::now();
        let engine = rtmfp::Endpoint::new(config, profile, Box::new(rng), now);
        let channel = HostChannel::new(driver.command_capacity.max(1));
        let cmd = channel.handle();
        let (accept_tx, accept_rx) = mpsc::channel(driver.accept_backlog.max(1));
        let (events_tx, _) = broadcast::channel(driver.event_capacity.max(1));
        let machine = Driver::new(
            engine,
            now,
            driver.clone(),
            cmd.downgrade(),
            accept_tx,
            events_tx.clone(),
        );
        let host_config = HostConfig::default()
            .socket_buffer(driver.socket_buffer)
            .impairment(driver.impairment.clone());
        let (host, _events) = Host::with_channel(machine, vec![socket], host_config, channel)?;
        let local_addr = cmd.local_addr();
        runtime.spawn(host.run());
        Ok(Self {
            inner: Arc::new(EndpointInner {
                cmd,
                local_addr,
                accept: tokio::sync::Mutex::new(accept_rx),
                events: events_tx,
            }),
        })
    }

    pub(crate) fn from_inner(inner: Arc<EndpointInner>) -> Self {
        Self { inner }
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Opens a session to the endpoint selected by the Endpoint
    /// Discriminator `epd`, trying every candidate address at once.
    /// Resolves when the session is open.
    ///
    /// # Errors
    /// [`Error::Open`] when the session cannot be opened (after the
    /// engine's open timeout at most), [`Error::EndpointClosed`] after
    /// shutdown, [`Error::Engine`] for invalid arguments.
    ///
    /// The arguments are copied before the future is created, so it
    /// borrows nothing and can be spawned.
    pub fn connect(
        &self,
        epd: &[u8],
        candidates: &[SocketAddr],
    ) -> impl Future<Output = Result<Session, Error>> + Send + 'static {
        let inner = self.inner.clone();
        let epd = epd.to_vec();
        let candidates = candidates.to_vec();
        async move {
            let parts = inner
                .request(|reply| Command::Connect {
                    epd,
                    candidates,
                    reply,
                })
                .await??;
            Ok(Session::new(inner, parts))
        }
    }

    /// Waits for the next incoming session. Returns `None` once the
    /// endpoint is shut down.
    ///
    /// Sessions opened directly on the engine through
    /// [`with_engine`](Self::with_engine) are delivered here too.
    pub async fn accept(&self) -> Option<Session> {
        let parts = self.inner.accept.lock().await.recv().await?;
        Some(Session::new(self.inner.clone(), parts))
    }

    /// Subscribes to endpoint-level events (only those that happen after
    /// this call). A subscriber that falls more than
    /// [`DriverConfig::event_capacity`] events behind misses some and is
    /// told so by the receiver.
    pub fn events(&self) -> broadcast::Receiver<EndpointEvent> {
        self.inner.events.subscribe()
    }

    /// Runs `f` on the engine inside the driver, with the driver's current
    /// time, and returns its result: an escape hatch for engine APIs this
    /// crate does not wrap (redirects, forwarded IHellos, flow options,
    /// statistics...). Datagrams and events the call produces are handled
    /// by the driver afterwards as usual.
    ///
    /// `f` must not call `poll_transmit`, `poll_event` or `handle_timeout`,
    /// nor `read` flows that have a [`RecvFlow`](crate::RecvFlow) handle:
    /// that would steal the driver's work.
    ///
    /// # Errors
    /// [`Error::EndpointClosed`] when the driver has stopped.
    pub async fn with_engine<F, R>(&self, f: F) -> Result<R, Error>
    where
        F: FnOnce(&mut rtmfp::Endpoint, Instant) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.inner
            .cmd
            .with(move |driver, now| {
                let r = f(driver.engine_mut(), now);
                driver.after_input(now);
                r
            })
            .await
            .map_err(|_| Error::EndpointClosed)
    }

    /// Counters of the socket layer (datagrams, bytes, system calls,
    /// batching).
    ///
    /// # Errors
    /// [`Error::EndpointClosed`] when the driver has stopped.
    pub async fn io_stats(&self) -> Result<IoStats, Error> {
        if self.is_closed() {
            return Err(Error::EndpointClosed);
        }
        Ok(self.inner.cmd.stats())
    }

    /// Closes every session in an orderly way (Close / Close Ack, waiting
    /// at most [`DriverConfig::shutdown_timeout`], then aborting the rest),
    /// stops the driver and releases the socket. Resolves when the driver
    /// has stopped; afterwards every handle reports
    /// [`Error::EndpointClosed`]. Calling it again is harmless.
    pub async fn shutdown(&self) {
        // An error means the driver is already gone.
        let _ = self
            .inner
            .request(|reply| Command::Shutdown { reply })
            .await;
    }

    /// Whether the driver has stopped.
    pub fn is_closed(&self) -> bool {
        self.inner.cmd.is_closed()
    }
}
