//! # rtmfp-tokio — the tokio driver for the `rtmfp` engine
//!
//! [`rtmfp`] is a sans-IO implementation of RTMFP (RFC 7016): a state
//! machine with no sockets, no clock and no threads. This crate runs it on
//! tokio and gives it an async API:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rtmfp::{EndpointConfig, PlainProfile, Priority};
//! use rtmfp_tokio::Endpoint;
//!
//! let server = Endpoint::bind("127.0.0.1:0".parse()?, EndpointConfig::default(), Box::new(PlainProfile::new("server")))?;
//! let client = Endpoint::bind("127.0.0.1:0".parse()?, EndpointConfig::default(), Box::new(PlainProfile::new("client")))?;
//!
//! let session = client.connect(b"server", &[server.local_addr()]).await?;
//! let mut flow = session.open_flow(b"chat", None, Priority::ROUTINE).await?;
//! flow.send(&b"hello"[..]).await?;
//!
//! let incoming = server.accept().await.expect("a session");
//! let mut rx = incoming.accept_flow().await.expect("a flow");
//! let msg = rx.recv().await.expect("a message");
//! assert_eq!(&msg.data[..], b"hello");
//!
//! flow.close().await?;
//! session.close().await;
//! client.shutdown().await;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## What this crate owns
//!
//! * **The socket.** One UDP socket per [`Endpoint`] (IPv4 or IPv6), shared
//!   by any number of sessions. Datagrams are received in batches
//!   (`recvmmsg`, and GRO where the kernel offers it) and sent in batches
//!   (GSO: runs of datagrams to the same address in one `sendmsg`) through
//!   `quinn-udp`, which falls back to one datagram per call where the OS
//!   cannot do better. Buffers are allocated once and reused.
//! * **Time.** The engine's `poll_timeout` deadline becomes a tokio timer;
//!   every engine call gets tokio's current time.
//! * **The task.** One driver task per endpoint, spawned on the runtime the
//!   endpoint is created in, is the only owner of the engine and the socket.
//!   Handles talk to it over an unbounded command channel; answers come
//!   back on oneshot channels.
//! * **Randomness.** The engine gets a CSPRNG seeded from the OS.
//!
//! ## What it must not touch
//!
//! Protocol logic: handshakes, cryptography, flow control, acknowledgement,
//! congestion control, retransmission, keepalive and close all live in
//! `rtmfp`. The driver only moves datagrams, calls the engine, and routes
//! the engine's events to handles. Anything the handles do not wrap is
//! reachable through [`Endpoint::with_engine`].
//!
//! ## The driver loop
//!
//! Each turn of the loop:
//!
//! 1. calls `handle_timeout` if the engine's deadline has passed;
//! 2. drains `poll_event` (bounded per turn), routing each event: opened
//!    sessions answer [`Endpoint::connect`] or queue for
//!    [`Endpoint::accept`], incoming flows queue for
//!    [`Session::accept_flow`], `Readable` moves messages to the flow's
//!    handle, `Writable` retries sends that were refused, and
//!    endpoint-level events go to [`Endpoint::events`];
//! 3. drains `poll_transmit` into GSO batches and sends them, until the
//!    engine has nothing more, the socket would block (then it waits for
//!    writability), or a budget runs out;
//! 4. sleeps until the first of: a command from a handle, the socket
//!    becoming readable (then it reads a few batches and feeds every
//!    datagram to `handle_datagram`), the socket becoming writable again,
//!    or the engine's next deadline.
//!
//! Every loop inside a turn has a fixed budget, so one busy session, a
//! flood of datagrams or of commands cannot starve the rest.
//!
//! ## Backpressure and memory
//!
//! * Sending: [`SendFlow::send`] resolves once the engine accepted the
//!   message. When the flow's send buffer is full the engine refuses it;
//!   the driver keeps the message and retries it on the engine's
//!   `Writable` event, so the caller waits.
//! * Receiving: the driver calls the engine's `read` for a flow only while
//!   that flow's handle holds fewer than
//!   [`DriverConfig::recv_flow_buffer`] bytes. Unread data stays in the
//!   engine, whose advertised receive window shrinks, so the sender backs
//!   off; when the handle drains below the budget it asks the driver to
//!   resume. Memory per receiving flow is thus bounded by the engine's
//!   receive buffer plus this budget.
//!
//! ## Shutdown
//!
//! [`Endpoint::shutdown`] (or dropping every handle) closes all sessions
//! in an orderly way, waits for their Close Ack at most
//! [`DriverConfig::shutdown_timeout`], aborts what is left, and stops the
//! driver, which releases the socket. Dropping every handle of one session
//! closes that session; dropping a [`SendFlow`] closes the flow in an
//! orderly way; dropping an unfinished [`RecvFlow`] rejects the flow.

mod config;
mod endpoint;
mod error;
mod handles;
mod host;
mod session;
mod socket;

pub use config::DriverConfig;
pub use endpoint::{Endpoint, EndpointEvent};
pub use error::Error;
pub use host::{
    now, Host, HostChannel, HostClosed, HostConfig, HostHandle, Impairment, TrySendError,
    WeakHostHandle,
};
pub use session::{RecvFlow, SendFlow, Session};
pub use socket::{bind_udp, IoStats};

pub use rtmfp;
