//! The `relay` binary's pieces, as a library so the end-to-end tests can drive them: configuration,
//! wiring of the store, rates and API into a server, the expiry sweep, merchant creation and the
//! `relay dev` testnet.

pub mod bitcoin;
pub mod card;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
pub mod ethereum;
pub mod listen;
pub mod merchant;
pub mod roles;
pub mod sanctions;
pub mod server;
pub mod webhooks;
