//! Relay's application layer, between the HTTP API and the binary's loops on one side and the
//! domain (`relay-core`) and the store on the other. [`Engine`] holds what every operation needs
//! (the store, the rails, rates, ids and the clock) and offers the operations: create and cancel
//! an invoice ([`invoices`]), request and cancel a refund ([`refunds`]), release a held settlement ([`settlements`]), apply an input with the one retry loop ([`apply`]), store a chain
//! watcher's step ([`chain`]), record a card gateway's event ([`gateway`]), find and pay an invoice from its checkout page ([`checkout`]), make invoices from payment links ([`links`]), expire invoices
//! ([`expiry`]) and reconcile with the card gateway ([`reconcile`]). The API parses a request,
//! calls the engine and renders a [`view`]; the binary's loops call the engine. Neither holds a
//! business rule of its own.

pub mod apply;
pub mod chain;
pub mod checkout;
pub mod endpoints;
pub mod expiry;
pub mod gateway;
pub mod invoices;
pub mod links;
pub mod reconcile;
pub mod refunds;
pub mod reviews;
pub mod risk;
pub mod settlements;
pub mod view;

use relay_core::{AssetBook, Clock, MerchantId, RateSource, Timestamp};
use relay_store::{Commit, IdempotencyRecord, IdempotencyWrite, Store};
use std::sync::Arc;

/// The relay's operations over a store `S`. Cheap to clone: the API's handlers and each loop hold
/// one.
pub struct Engine<S> {
    pub store: S,
    pub ids: Arc<IdSource>,
    pub clock: Arc<dyn Clock>,
    pub assets: Arc<AssetBook>,
    pub rates: Arc<dyn RateSource>,
    /// The card gateway, when one is configured (without it, card is not offered).
    pub card: Option<Arc<dyn gateway::CardGateway>>,
    /// The bitcoin rail, when a node is configured (without it, bitcoin is not offered).
    pub bitcoin: Option<BitcoinRail>,
    /// The Ethereum rail, when a node and an escrow are configured.
    pub ethereum: Option<EthereumRail>,
    /// Where payers reach the relay (`https://pay.example.com`): each new invoice gets a checkout
    /// page under it, `/pay/{token}`. None: invoices have none.
    pub checkout_base: Option<Arc<str>>,
    /// The sanctions lists in use and the merchants' rules, shared by every clone.
    pub risk: Arc<risk::RiskScreen>,
}

impl<S: Clone> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            store: self.store.clone(),
            ids: self.ids.clone(),
            clock: self.clock.clone(),
            assets: self.assets.clone(),
            rates: self.rates.clone(),
            card: self.card.clone(),
            bitcoin: self.bitcoin.clone(),
            ethereum: self.ethereum.clone(),
            checkout_base: self.checkout_base.clone(),
            risk: self.risk.clone(),
        }
    }
}

impl<S: Store> Engine<S> {
    /// Completes once every decision made so far is on disk (see [`Store::durable`]).
    pub async fn durable(&self) -> Result<(), relay_store::StoreError> {
        self.store.durable().await
    }
}

/// The API request a decision answers: its merchant's idempotency key, the request's fingerprint
/// and when it arrived. The decision's answer is stored under the key in the decision's own
/// write, so a retried request gets the same answer and changes nothing.
#[derive(Debug, Clone, Copy)]
pub struct Answering<'a> {
    pub merchant: &'a MerchantId,
    pub key: &'a str,
    pub fingerprint: [u8; 32],
    pub at: Timestamp,
}

impl<'a> Answering<'a> {
    /// The record of `body` (a 200 answer) to write with the decision.
    pub fn record(&self, body: &str) -> IdempotencyWrite<'a> {
        IdempotencyWrite {
            merchant_id: self.merchant,
            key: self.key,
            record: IdempotencyRecord {
                fingerprint: self.fingerprint,
                status: 200,
                body: body.to_owned(),
                created_at: self.at,
            },
        }
    }
}

/// A decision written (or found already written under the request's idempotency key).
#[derive(Debug)]
pub struct Decided<T> {
    pub commit: Commit,
    /// The answer's JSON, as stored under the key.
    pub body: String,
    pub value: T,
}

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
