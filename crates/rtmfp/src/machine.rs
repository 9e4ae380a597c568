//! The [`Machine`] trait: the one shape every sans-IO state machine of the
//! system has, so that one host (`rtmfp-tokio`'s `Host`, or the test kit's
//! simulator node) can drive any of them.

use std::net::SocketAddr;
use std::time::Instant;

/// A sans-IO state machine driven by a host: datagrams, commands and `now`
/// in; datagrams, events and the next deadline out.
///
/// The engine's [`Endpoint`](crate::Endpoint) is one; so are the Flash
/// layer's applications built on it (a phone, a server shard, a NetGroup
/// member, a load-generating client, a WebRTC bridge). A machine owns no
/// socket, reads no clock, starts no thread and draws no randomness it was
/// not given.
///
/// ## Host contract
///
/// After **every** input (`handle_datagram`, `handle_timeout`,
/// `handle_command`, or any direct call the host makes on the machine's
/// behalf), the host:
///
/// 1. drains [`poll_transmit`](Self::poll_transmit) until it returns `None`
///    (or until the socket is full: then it waits for the socket to become
///    writable and calls again; it never drops a datagram the machine
///    produced, except for a destination it cannot reach);
/// 2. drains [`poll_event`](Self::poll_event) (when whoever consumes events
///    is slow, the host stops polling and the machine's own bounded queues
///    take the strain);
/// 3. re-reads [`poll_timeout`](Self::poll_timeout) and calls
///    [`handle_timeout`](Self::handle_timeout) once that instant is reached
///    (a spurious or late call is harmless).
///
/// A machine may produce output at any time: hosts loop until all three
/// are exhausted for the moment. Commands come in order; what a command
/// results in comes back as events.
pub trait Machine {
    /// What the owner asks of the machine.
    type Command;
    /// What the machine reports to its owner.
    type Event;

    /// A UDP payload `data` arrived from `from`.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]);

    /// The deadline of [`poll_timeout`](Self::poll_timeout) was reached
    /// (or not: spurious calls are no-ops).
    fn handle_timeout(&mut self, now: Instant);

    /// A command from the owner.
    fn handle_command(&mut self, now: Instant, command: Self::Command);

    /// The next datagram to send: fills `buf` (cleared first) and returns
    /// its destination, or `None` when there is nothing to send now.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr>;

    /// The next event for the owner.
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// When [`handle_timeout`](Self::handle_timeout) must next be called
    /// (`None`: only after some other input).
    fn poll_timeout(&mut self) -> Option<Instant>;

    /// The owner is gone: no command will come again. The machine winds
    /// down (closes its sessions) and reports [`is_done`](Self::is_done)
    /// when it has. By default nothing happens and the host stops at once.
    fn handle_close(&mut self, now: Instant) {
        let _ = now;
    }

    /// Whether the machine has finished its work; its host flushes what is
    /// left to send and stops. `None` (the default) means "only when its
    /// owner is gone" (after [`handle_close`](Self::handle_close)).
    fn is_done(&self) -> Option<bool> {
        None
    }
}

/// The bare engine as a machine. A host drives only the contract above: it
/// knows nothing of keying jobs, so leave
/// [`deferred_keying`](crate::EndpointConfig::deferred_keying) off here (the
/// default: the endpoint runs keyings itself). A machine that wraps an
/// endpoint with deferred keying (a server shard) drains
/// [`poll_keying`](crate::Endpoint::poll_keying) after every input, sends
/// the jobs to its worker pool, and feeds the results back as an input
/// ([`handle_keying`](crate::Endpoint::handle_keying)), e.g. as a command.
impl Machine for crate::Endpoint {
    /// The bare engine takes its commands as closures over itself: its API
    /// ([`connect`](crate::Endpoint::connect),
    /// [`send`](crate::Endpoint::send), …) is richer than one enum.
    type Command = EndpointCommand;
    type Event = crate::Event;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        crate::Endpoint::handle_datagram(self, now, from, data);
    }

    fn handle_timeout(&mut self, now: Instant) {
        crate::Endpoint::handle_timeout(self, now);
    }

    fn handle_command(&mut self, now: Instant, command: EndpointCommand) {
        (command.0)(self, now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        crate::Endpoint::poll_transmit(self, now, buf)
    }

    fn poll_event(&mut self) -> Option<crate::Event> {
        crate::Endpoint::poll_event(self)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        crate::Endpoint::poll_timeout(self)
    }
}

/// A command for a bare [`Endpoint`](crate::Endpoint) run as a
/// [`Machine`]: a call on the engine, made by the host at `now`.
pub struct EndpointCommand(pub Box<dyn FnOnce(&mut crate::Endpoint, Instant) + Send>);

impl EndpointCommand {
    /// Wraps a call on the engine.
    pub fn new(f: impl FnOnce(&mut crate::Endpoint, Instant) + Send + 'static) -> Self {
        Self(Box::new(f))
    }
}

impl std::fmt::Debug for EndpointCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointCommand")
    }
}
