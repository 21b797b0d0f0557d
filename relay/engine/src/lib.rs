//! Relay's application layer, between the HTTP API and the binary's loops on one side and the
//! domain (`relay-core`) and the store on the other: applying an input to an invoice with the
//! one retry loop ([`apply`]), what the relay does with a card gateway's event ([`gateway`]), the
//! rails as the relay sees them, id and clock sources, and the JSON views an event travels in (the
//! API's answers and the webhooks' bodies are the same [`view`]s).

pub mod apply;
pub mod endpoints;
pub mod gateway;
pub mod view;

use relay_core::{Clock, Timestamp};
use std::sync::Arc;

/// What the bitcoin rail is told of each refund it should see paid.
pub type WatchRefund = dyn Fn(&relay_core::InvoiceId, &relay_core::Refund) + Send + Sync;

/// The bitcoin rail as the API sees it.
#[derive(Clone)]
pub struct BitcoinRail {
    /// Derives each invoice's address from the merchant's descriptor.
    pub addresses: Arc<dyn relay_core::ReceiveAddresses>,
    /// Called with each invoice stored with a bitcoin address, so the watcher matches payments to
    /// it from then on (the watcher also loads every address from the store when it starts).
    pub watch: Arc<dyn Fn(&relay_core::Invoice) + Send + Sync>,
    /// Called with each bitcoin refund stored, so the watcher sees the merchant's wallet pay it.
    pub watch_refund: Arc<WatchRefund>,
    /// The operator's watch-only treasury descriptor: where bitcoin invoices of merchants paid on
    /// Ethereum are paid (the relay settles them from its liquidity).
    pub treasury_descriptor: Option<String>,
}

/// The Ethereum rail as the API sees it: where deposits go.
#[derive(Clone)]
pub struct EthereumRail {
    pub chain_id: u64,
    pub escrow: alloy_primitives::Address,
    /// How long after the invoice's expiry the escrow keeps a deposit before the payer may
    /// reclaim it: the relay's time to confirm and capture an in-time deposit.
    pub capture_window_secs: u64,
    /// How deep a bitcoin payment must be before a cross-rail settlement pays for it.
    pub settlement_min_confirmations: u32,
    /// Reads merchants' refund reserves in the escrow (what refunds after a capture are paid
    /// from).
    pub reserves: Arc<dyn RefundReserves>,
}

impl std::fmt::Debug for EthereumRail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthereumRail")
            .field("chain_id", &self.chain_id)
            .field("escrow", &self.escrow)
            .field("capture_window_secs", &self.capture_window_secs)
            .finish_non_exhaustive()
    }
}

/// The escrow's per-merchant refund reserves, as the chain holds them now.
///
/// A refund of a captured escrow payment is paid out of the reserve its merchant funded in the
/// escrow (`fundRefunds`), never out of the operator's money: the escrow itself refuses to pay
/// more than the reserve holds. The API reads it to refuse a refund that is not covered before
/// reserving anything.
pub trait RefundReserves: Send + Sync + 'static {
    /// The reserve of `merchant` in `token` (`Address::ZERO` for ether), in base units.
    fn reserve(
        &self,
        merchant: alloy_primitives::Address,
        token: alloy_primitives::Address,
    ) -> gateway::BoxFuture<'_, Result<alloy_primitives::U256, String>>;
}

/// Time-ordered invoice and event ids for this process (wall clock + OS randomness).
#[derive(Default)]
pub struct IdSource(std::sync::Mutex<relay_core::OrderedIds>);

impl IdSource {
    pub fn next(&self) -> [u8; 12] {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let random: u64 = rand::random();
        // A poisoned lock only means another thread panicked mid-`next`; the state is a plain
        // integer and still valid.
        let mut ids = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ids.next(now_ms, random)
    }

    pub fn invoice_id(&self) -> relay_core::InvoiceId {
        relay_core::InvoiceId::from_entropy(self.next())
    }

    pub fn event_id(&self) -> relay_core::EventId {
        relay_core::EventId::from_entropy(self.next())
    }
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Timestamp(secs)
    }
}
