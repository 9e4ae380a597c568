//! The registry's error type.

/// An error from the registry's library API. The HTTP layer maps each variant to a
/// status code and a JSON (or, on the legacy endpoint, XML) body.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A user name is empty, too long or has a control character.
    #[error("invalid user name: {0}")]
    InvalidName(&'static str),
    /// A peer ID is not 64 hexadecimal digits.
    #[error("invalid peer ID: it must be 64 hexadecimal digits")]
    InvalidPeerId,
    /// A password does not meet the rules.
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    /// Sign-up with a name that is taken (case-insensitively).
    #[error("that user name is already taken")]
    NameTaken,
    /// Log-in or authentication failed. Unknown names and wrong passwords give the
    /// same error, so callers cannot tell which names exist.
    #[error("invalid user name or password")]
    BadCredentials,
    /// A bearer token is missing, unknown or expired.
    #[error("missing, invalid or expired token")]
    BadToken,
    /// An operation for the server (session binding) named a user without an
    /// account.
    #[error("unknown user")]
    UnknownUser,
    /// The caller is authenticated but not allowed to do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Nothing is registered under that name (only told to authenticated callers).
    #[error("no live registration under that name")]
    NotFound,
    /// The database URL could not be used.
    #[error("database configuration: {0}")]
    Config(String),
    /// The database failed. (The cause is in the message, not also a `source()`, so
    /// that error chains do not print it twice.)
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The registry is shutting down.
    #[error("the registry is shutting down")]
    ShuttingDown,
    /// Something that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        RegistryError::Database(e)
    }
}
