//! Configuration of the driver (the protocol itself is configured with
//! [`rtmfp::EndpointConfig`]).

use std::time::Duration;

/// Tunables of the tokio driver. Protocol behaviour (timeouts, windows,
/// buffer limits inside the engine) lives in [`rtmfp::EndpointConfig`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DriverConfig {
    /// Bytes of received messages the driver moves from the engine to one
    /// [`RecvFlow`](crate::RecvFlow) handle before it stops reading that
    /// flow (each message also counts a small fixed overhead). While the
    /// handle is not drained the engine keeps the data and its advertised
    /// receive window shrinks, which slows the sender down.
    pub recv_flow_buffer: usize,
    /// Incoming sessions waiting for [`Endpoint::accept`](crate::Endpoint::accept);
    /// further incoming sessions are closed.
    pub accept_backlog: usize,
    /// Incoming flows per session waiting for
    /// [`Session::accept_flow`](crate::Session::accept_flow); further ones
    /// are rejected.
    pub incoming_flow_backlog: usize,
    /// Capacity of the endpoint event broadcast channel
    /// ([`Endpoint::events`](crate::Endpoint::events)); slow subscribers
    /// miss events beyond it.
    pub event_capacity: usize,
    /// Longest time [`Endpoint::shutdown`](crate::Endpoint::shutdown) waits
    /// for the orderly close of every session before aborting the rest.
    pub shutdown_timeout: Duration,
    /// Requested kernel socket send and receive buffer size (best effort).
    /// `None` keeps the system default.
    pub socket_buffer: Option<usize>,
    /// Commands from the handles waiting for the driver; callers wait
    /// beyond it.
    pub command_capacity: usize,
    /// Loss, delay and jitter applied to what the endpoint receives (tests
    /// and benchmarks).
    pub impairment: Option<crate::Impairment>,
    /// Exception code sent when a [`RecvFlow`](crate::RecvFlow) is dropped
    /// before its flow completed, or an incoming flow cannot be queued.
    pub reject_code: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            recv_flow_buffer: 256 * 1024,
            accept_backlog: 256,
            incoming_flow_backlog: 256,
            event_capacity: 1024,
            shutdown_timeout: Duration::from_secs(3),
            socket_buffer: Some(2 * 1024 * 1024),
            command_capacity: 4096,
            impairment: None,
            reject_code: 0,
        }
    }
}
