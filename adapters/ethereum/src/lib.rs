//! The Ethereum rail: escrow bindings, log watching with reorg handling, and the operator's
//! transaction sender. It turns the chain into plain observations for `relay-core`.
//!
//! Not built yet: this crate marks its place in the workspace; the rail is tracked as its own issue.
