//! The store's error type.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be read or written (disk full, I/O error, corruption).
    #[error("storage failure: {0}")]
    Backend(#[from] sled::Error),
    /// The data directory is locked by another running relay.
    #[error("the data directory {path} is in use by another process")]
    Locked { path: String },
    /// A stored value could not be decoded: written by a newer relay, or corrupt.
    #[error("cannot decode stored {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    /// A new invoice would share a rail reference with an existing one; nothing was written.
    #[error("the reference {reference} already belongs to another invoice")]
    DuplicateReference { reference: String },
    /// The store's webhook secrets are sealed with a key that was not given, or another key.
    #[error("webhook secrets: {reason}")]
    SecretsKey { reason: String },
    /// A counter ran out of values.
    #[error("{what} is exhausted")]
    Exhausted { what: &'static str },
}

impl StoreError {
    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(sled::Error::Io(_)))
    }
}
