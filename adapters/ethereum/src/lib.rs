//! The Ethereum rail: escrow bindings, log watching with reorg handling, and the operator's
//! transaction sender. It turns the chain into plain observations for `relay-core`.

pub mod deploy;
pub mod node;
pub mod sender;
pub mod watcher;

pub use alloy;
pub use node::{
    ChainSource, EscrowEvent, EscrowLog, EthError, EthNode, Header, OperatorNode, Receipt,
};
pub use sender::{GasCaps, OpTx, OperatorKey, Outcome, Purpose, Sender, SenderConfig, TxState};
pub use watcher::{
    Closing, ClosingKind, Cursor, Deposit, Observation, Update, Watcher, WatcherConfig,
};

/// Contract bindings generated from the compiled artifacts in `artifacts/` (kept in step with
/// `contracts/` by `scripts/export-artifacts.sh`; `make test` fails when they are stale).
pub mod bindings {
    alloy::sol!(
        #[allow(missing_docs)]
        #[sol(rpc)]
        #[derive(Debug)]
        PaymentEscrow,
        "artifacts/PaymentEscrow.json"
    );
    alloy::sol!(
        #[allow(missing_docs)]
        #[sol(rpc)]
        TestToken,
        "artifacts/TestToken.json"
    );
}
