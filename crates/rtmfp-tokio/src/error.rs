//! Errors of the async API.

/// An error from an [`Endpoint`](crate::Endpoint), [`Session`](crate::Session)
/// or flow handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint's driver has stopped (after
    /// [`shutdown`](crate::Endpoint::shutdown), or when every handle was dropped).
    #[error("the endpoint is closed")]
    EndpointClosed,
    /// The session is closed (see [`Session::closed`](crate::Session::closed)
    /// for the reason).
    #[error("the session is closed")]
    SessionClosed,
    /// The session could not be opened.
    #[error("the session could not be opened: {0}")]
    Open(#[from] rtmfp::OpenError),
    /// The far end rejected the sending flow with this exception code.
    #[error("the far end rejected the flow (exception code {0})")]
    FlowRejected(u64),
    /// The flow is closed or unknown.
    #[error("the flow is closed")]
    FlowClosed,
    /// The engine refused the operation.
    #[error("engine error: {0}")]
    Engine(rtmfp::Error),
}

impl Error {
    /// Maps an engine error to the error the handles report.
    pub(crate) fn from_engine(e: rtmfp::Error) -> Self {
        match e {
            rtmfp::Error::NoSession | rtmfp::Error::SessionClosed => Error::SessionClosed,
            rtmfp::Error::NoFlow | rtmfp::Error::FlowClosed => Error::FlowClosed,
            other => Error::Engine(other),
        }
    }
}
