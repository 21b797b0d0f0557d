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
}

impl StoreError {
    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(sled::Error::Io(_)))
    }
}
