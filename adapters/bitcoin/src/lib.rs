//! The bitcoin rail: merchants' descriptors and per-invoice addresses, a block source speaking
//! Bitcoin Core's JSON-RPC (bitcoind and bcoin), and a watcher that follows the chain and the
//! mempool, matches outputs against watched scripts and rewinds on reorgs.
//!
//! Like the other adapters it never decides an invoice's state: the [`Watcher`] turns the chain
//! into [`Observation`]s and a cursor, and the caller applies them to invoices (with
//! `relay-core`) and stores everything in one write. The library never spawns tasks; the binary
//! drives it.

mod addresses;
mod descriptor;
mod error;
mod payer;
pub mod rpc;
mod scan;
mod watcher;

pub use addresses::DescriptorAddresses;
pub use bitcoin;
pub use descriptor::{Derived, ReceiveDescriptor};
pub use error::BitcoinError;
pub use payer::payer_scripts;
pub use rpc::{BlockSource, RpcClient};
pub use scan::{Found, ScriptIndex};
pub use watcher::{
    ChainCursor, Observation, ScriptFeed, Tracked, TrackedState, Update, WatchTarget, Watcher,
    WatcherConfig, DEFAULT_MIN_SAT,
};
