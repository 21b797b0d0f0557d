//! The bitcoin adapter's error type.

/// Why a bitcoin operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BitcoinError {
    /// The descriptor cannot be used to receive payments; `reason` says what to change.
    #[error("invalid receive descriptor: {reason}")]
    Descriptor { reason: String },
    /// The node could not be reached, or answered with something other than JSON-RPC.
    #[error("bitcoin node unreachable: {0}")]
    Transport(String),
    /// The node answered the call with a JSON-RPC error.
    #[error("bitcoin node refused {method}: {message} (code {code})")]
    Rpc {
        method: &'static str,
        code: i64,
        message: String,
    },
    /// The node's answer did not have the expected shape.
    #[error("unexpected answer to {method}: {reason}")]
    Decode {
        method: &'static str,
        reason: String,
    },
    /// The chain forked deeper than the blocks the watcher remembers. Payments in the orphaned
    /// blocks may not have been reverted; the operator must look (and may widen the window).
    #[error(
        "reorg deeper than the {window} remembered blocks (the fork is below height {lowest})"
    )]
    ReorgTooDeep { window: usize, lowest: u32 },
}

impl BitcoinError {
    /// Whether the same call may succeed later (the node is restarting, busy, or catching up).
    pub fn is_retryable(&self) -> bool {
        match self {
            BitcoinError::Transport(_) => true,
            // -28: warming up; -1/-32603: internal errors that pass; -5 after a race with a reorg.
            BitcoinError::Rpc { code, .. } => matches!(code, -28 | -1 | -5 | -32603),
            _ => false,
        }
    }
}
