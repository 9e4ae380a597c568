//! # rtmfp-tokio — the one I/O host under every RTMFP state machine
//!
//! Every state machine of Nimbus is sans-IO and implements
//! [`rtmfp::Machine`]: the engine's `Endpoint`, a server shard, the phone,
//! a NetGroup member, the bench clients, the web phone's WebRTC bridge.
//! [`Host<M>`](Host) runs one of them on tokio: it is the only code in the
//! workspace (tests aside) that touches UDP sockets.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use rtmfp::Endpoint;
//! use rtmfp_tokio::{bind_udp, Host, HostConfig};
//! # let ep: Endpoint = todo!();
//! let socket = bind_udp("127.0.0.1:0".parse().unwrap(), false, None)?;
//! let (handle, mut events, task) = Host::spawn(ep, vec![socket], HostConfig::default())?;
//! // commands in (bounded: `send` waits for room) ...
//! // handle.send(EndpointCommand::...).await;
//! // ... events out
//! while let Some(event) = events.recv().await { /* rtmfp::Event */ }
//! handle.close().await;
//! let _endpoint = task.await; // the machine comes back when the host stops
//! # Ok(()) }
//! ```
//!
//! ## What the host owns
//!
//! * **Sockets.** Any number (IPv4 and IPv6; one set per server shard with
//!   `SO_REUSEPORT`, see [`bind_udp`]). Datagrams are received in batches
//!   (`recvmmsg`, GRO where the kernel has it) and sent in batches (GSO:
//!   runs of datagrams to one address in one `sendmsg`) through `quinn-udp`,
//!   which falls back to one datagram per call where the OS cannot do
//!   better. Buffers are allocated once and reused. A full socket makes the
//!   host wait for writability; a datagram the machine produced is never
//!   dropped by the host.
//! * **Time.** The machine's `poll_timeout` becomes a tokio timer and every
//!   call gets [`now()`], tokio's clock, so `tokio::time::pause()` drives a
//!   host in tests.
//! * **Commands and events.** Commands arrive on a bounded channel
//!   ([`HostHandle::send`] waits for room, [`HostHandle::try_send`] says
//!   `Full`); events leave on a bounded channel, and when the consumer falls
//!   behind the host stops polling the machine's events (the machine keeps
//!   them, bounded by its own rules) instead of dropping them.
//!   [`HostHandle::with`] runs a closure on the machine inside the host.
//! * **Counters.** [`IoStats`]: datagrams and bytes each way, receive and
//!   send system calls (so datagrams per call), receive errors, times the
//!   socket was full.
//! * **Impairment.** An optional seeded stage ([`Impairment`]: loss, delay,
//!   jitter, exempt addresses) on what the host receives, for every
//!   benchmark and test that wants a worse network than loopback.
//!
//! ## The loop
//!
//! Each turn: release impaired datagrams that are due; call
//! `handle_timeout` if the machine's deadline has passed; handle waiting
//! commands (bounded per turn); forward events (bounded); flush
//! `poll_transmit` into GSO batches until the machine has nothing more, the
//! socket is full, or a budget runs out; then sleep until a command, a
//! readable socket (a few batches are read and each datagram goes to
//! `handle_datagram`), a writable socket, or the next deadline. Every inner
//! loop has a fixed budget, so one busy peer, a flood of datagrams or of
//! commands cannot starve the rest. [`HostHandle::close`] calls the
//! machine's `handle_close` and runs it until it says it is done (at most
//! [`HostConfig::close_timeout`]); the machine is then given back.
//!
//! ## What it must not touch
//!
//! Protocol logic: handshakes, cryptography, flows, acknowledgement,
//! congestion control, keepalive and close live in `rtmfp`; applications
//! live in their own crates. The host only moves datagrams, time, commands
//! and events.
//!
//! ## The session and flow handles
//!
//! [`Endpoint`], [`Session`], [`SendFlow`] and [`RecvFlow`] are an async API
//! for programs that want one: they are one more machine on the host (the
//! engine plus the per-session state the handles see), driven by commands
//! from the handles; answers come back on oneshot channels.
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
//! The engine gets a CSPRNG seeded from the OS. Anything the handles do
//! not wrap is reachable through [`Endpoint::with_engine`].
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
