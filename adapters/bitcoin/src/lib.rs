//! The bitcoin rail: descriptors and address derivation, a block source speaking Bitcoin Core's
//! JSON-RPC, block and mempool scanning, and reorg handling. It turns the chain into plain
//! observations for `relay-core` and never decides an invoice's state itself.
//!
//! Not built yet: this crate marks its place in the workspace; the rail is tracked as its own issue.
