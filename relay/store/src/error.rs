//! The store's error type.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be read or written now (disk full, an I/O error, a network
    /// database out of reach). `retryable`: the same operation may succeed later.
    #[error("storage unavailable: {reason}")]
    Unavailable { reason: String, retryable: bool },
    /// The data directory is locked by another running relay.
    #[error("the data directory {path} is in use by another process")]
    Locked { path: String },
    /// A stored value could not be decoded: written by a newer relay, or corrupt.
    #[error("cannot decode stored {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// A new invoice would share a rail reference with an existing one; nothing was written.
    #[error("the reference {reference} already belongs to another invoice")]
    DuplicateReference { reference: relay_core::Lookup },
    /// The store's webhook secrets are sealed with a key that was not given, or another key.
    #[error("webhook secrets: {reason}")]
    SecretsKey { reason: String },
    /// A counter ran out of values.
    #[error("{what} is exhausted")]
    Exhausted { what: &'static str },
    /// A write of a singleton role from a relay that no longer holds the role's lease (it lapsed
    /// while the relay was stopped or cut off, or another relay took it); nothing was written.
    #[error("this relay no longer holds the lease of the {role} role")]
    Fenced { role: &'static str },
}

/// The kind of a [`StoreError`], the same for every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The backend cannot be used now; the operation may succeed later.
    Unavailable,
    /// What is stored cannot be read (a newer format, damage) or the store will not open.
    Corrupt,
    /// The write would break a rule of the store (a reference owned twice, a counter exhausted).
    Refused,
}

impl StoreError {
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Unavailable { .. } | StoreError::Locked { .. } => ErrorClass::Unavailable,
            StoreError::Corrupt { .. } | StoreError::SecretsKey { .. } => ErrorClass::Corrupt,
            StoreError::DuplicateReference { .. }
            | StoreError::Exhausted { .. }
            | StoreError::Fenced { .. } => ErrorClass::Refused,
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable {
                retryable: true,
                ..
            }
        )
    }
}

/// sled's errors in the store's neutral terms: I/O may pass, anything else will not. (Here, behind
/// the feature `sled`, because the sled backend's `?` needs it and only this crate may write it.)
#[cfg(feature = "sled")]
impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        let retryable = matches!(e, sled::Error::Io(_));
        match e {
            sled::Error::Corruption { .. } => StoreError::Corrupt {
                what: "database",
                reason: e.to_string(),
            },
            other => StoreError::Unavailable {
                reason: other.to_string(),
                retryable,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_backend_neutral_class() {
        let down = StoreError::Unavailable {
            reason: "disk".into(),
            retryable: true,
        };
        assert_eq!(
            (down.class(), down.is_retryable()),
            (ErrorClass::Unavailable, true)
        );
        let bad = StoreError::Corrupt {
            what: "invoice",
            reason: "format 9".into(),
        };
        assert_eq!(
            (bad.class(), bad.is_retryable()),
            (ErrorClass::Corrupt, false)
        );
        let dup = StoreError::DuplicateReference {
            reference: relay_core::Lookup::CardIntent("pi_1".into()),
        };
        assert_eq!(dup.class(), ErrorClass::Refused);
    }

    #[cfg(feature = "sled")]
    #[test]
    fn sled_errors_are_classed() {
        let io = StoreError::from(sled::Error::Io(std::io::Error::other("gone")));
        assert!(io.is_retryable(), "{io}");
        let broken = StoreError::from(sled::Error::Unsupported("x".into()));
        assert_eq!(broken.class(), ErrorClass::Unavailable);
        assert!(!broken.is_retryable());
    }
}
