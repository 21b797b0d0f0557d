//! Persistence for Relay: the [`Store`] trait the rest of the relay programs against, its
//! backend-neutral error, the conformance suite every backend passes, and sealing of secrets at
//! rest. The sled implementation is the crate `relay-store-sled`.
//!
//! Every decision is written in one atomic multi-tree transaction: the new state of an invoice, the
//! index entries that find it, the events it emits (the outbox) and the idempotency record of the
//! API request that caused it. Either all of it is stored or none of it.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
pub mod sealed;

pub use error::{ErrorClass, StoreError};
pub use relay_core::ledger::{PayoutKind, PayoutWork};

use relay_core::{
    ApiKeyHash, Balances, Event, EventId, Invoice, InvoiceId, KeyRecord, Line, Lookup, LookupKind,
    Merchant, MerchantId, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::future::Future;

mod lease;
pub use lease::{Leases, Role};
mod outbox;
pub use outbox::{due_key, lane_key, DueDelivery, Outbox, Pick, Wake, MAX_DUE_WALK, MAX_SKIPS};

/// A stored API response, replayed for a retried request with the same `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 of the request (method, path, body): the same key with another request is refused.
    #[serde(with = "hex_bytes")]
    pub fingerprint: [u8; 32],
    pub status: u16,
    /// The response body. Responses are JSON, so UTF-8 text (stored as a string, not as an array of
    /// numbers four times its size).
    pub body: String,
    pub created_at: Timestamp,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// An idempotency record to write together with a decision.
#[derive(Debug, Clone)]
pub struct IdempotencyWrite<'a> {
    pub merchant_id: &'a MerchantId,
    pub key: &'a str,
    pub record: IdempotencyRecord,
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Written.
    Done,
    /// Not written: the idempotency key was already used; here is what was stored under it.
    IdempotencyHit(IdempotencyRecord),
    /// Not written: the invoice changed since it was read (expected version was stale).
    Conflict,
}

/// What a chain watcher writes in one step: the invoices its observations changed (each with the
/// version it was read at and its events), its own tracking records and its cursor, all in one
/// transaction, so that a restart resumes exactly after the last step whose effects were stored.
#[derive(Debug, Clone, Default)]
pub struct ChainWrite {
    /// The watcher's position (opaque to the store).
    pub cursor: Vec<u8>,
    /// Tracking records to insert or replace, by key (opaque to the store).
    pub put: Vec<TrackedRecord>,
    /// Tracking records to delete.
    pub delete: Vec<Vec<u8>>,
    /// `(expected version, new invoice, its events)`.
    pub invoices: Vec<(u64, Invoice, Vec<Event>)>,
}

/// A watcher's tracking record: key and value, both opaque to the store.
pub type TrackedRecord = (Vec<u8>, Vec<u8>);

/// One page of a newest-first listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

/// Filter for invoice listings.
#[derive(Debug, Clone, Default)]
pub struct InvoiceQuery {
    pub order_id: Option<String>,
    /// Newest-first cursor: only invoices created before this one.
    pub starting_after: Option<InvoiceId>,
    pub limit: usize,
}

/// The relay's persistence: every part a backend implements, plus durability.
///
/// Contract, for every implementation (checked by [`conformance`] where it can be):
/// - **Atomicity.** Each write method stores everything it is given or nothing (one transaction).
/// - **Durability is explicit.** A write is visible to readers when it returns, but may be lost in
///   a crash until [`Store::durable`] has completed after it. Anything acknowledged to the outside
///   world (an HTTP answer, a webhook) must wait for `durable` first. Implementations should group
///   concurrent callers into one disk sync. The webhook dispatcher's own bookkeeping (fan-out,
///   scheduling and attempt records) is the one exception: it is flushed with the next sync but
///   does not call for one, since losing it in a crash only means deliveries are made again.
/// - **Idempotency.** A write carrying an [`IdempotencyWrite`] whose key already exists writes
///   nothing and returns the stored record, also when two such writes race.
/// - **Ordering.** Events are listed in the order they were committed.
/// - **The outbox.** No event is stored without being queued, in the same transaction, for the
///   webhook endpoints its merchant has (see [`Outbox`]).
/// - **The ledger.** Every invoice change posts its ledger lines and payout work in the same
///   transaction, as [`relay_core::ledger`] computes them from the invoice before and after (see
///   [`Ledger`]).
/// - **Async, never blocking.** Every method returns a future that may be awaited on the async
///   runtime: a backend that talks to a network database awaits it, and one that blocks for
///   longer than a memory access moves that work off the runtime.
///
/// [`conformance`]: crate::conformance
pub trait Store:
    Merchants + Invoices + Idempotency + ChainState + Outbox + Ledger + Leases + PaymentLinks + Risk
{
    /// Completes once every write that returned before this call is on disk.
    fn durable(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// One thing a payer did that velocity counts: a payment (or a declined card) under one payer
/// key (`card_fingerprint:…`, `eth_sender:0x…`, `decline:…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub key: String,
    /// What happened (a payment reference, a card token): the same `id` under the same key is
    /// counted once.
    pub id: String,
    pub at: Timestamp,
    /// The invoice's currency and what it was worth there, minor units.
    pub currency: String,
    pub amount: u128,
}

/// A merchant's risk rules and the signals that velocity is counted from.
///
/// Contract: `put_risk_rules` replaces the rules only when the stored version is the expected
/// one (0 when none were ever stored), so two reviewers' edits never silently overwrite each
/// other; `record_signal` is idempotent by (merchant, key, id), so an assessment redone after a
/// conflict counts its payment once; `signal_totals` counts signals at or after `since`.
pub trait Risk: Send + Sync + 'static {
    /// The merchant's rules (none yet: version 0, no rules).
    fn risk_rules(
        &self,
        merchant: &MerchantId,
    ) -> impl Future<Output = Result<relay_core::RiskRules, StoreError>> + Send;
    /// Stores `rules` (whose version is `expected_version + 1`) if the stored version is
    /// `expected_version`; `false` when it changed meanwhile.
    fn put_risk_rules(
        &self,
        merchant: &MerchantId,
        expected_version: u64,
        rules: &relay_core::RiskRules,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn record_signal(
        &self,
        merchant: &MerchantId,
        signal: &Signal,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes the signals of every merchant older than `before` (no window looks back that far).
    /// Returns how many went.
    fn prune_signals(
        &self,
        before: Timestamp,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
    /// The signals recorded under `key` at or after `since` (one per id), in no order: the
    /// caller counts each of its windows from one read.
    fn signals_since(
        &self,
        merchant: &MerchantId,
        key: &str,
        since: Timestamp,
    ) -> impl Future<Output = Result<Vec<Signal>, StoreError>> + Send;
}

/// Payment links ([`relay_core::PaymentLink`]): found by id (the merchant's API) or by token
/// (a payer's visit).
pub trait PaymentLinks: Send + Sync + 'static {
    /// Stores a new link, with the answer under the request's idempotency key if any (a key used
    /// before writes nothing and returns its record).
    fn create_link(
        &self,
        link: &relay_core::PaymentLink,
        idempotency: Option<IdempotencyWrite<'_>>,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;
    fn link(
        &self,
        id: &relay_core::LinkId,
    ) -> impl Future<Output = Result<Option<relay_core::PaymentLink>, StoreError>> + Send;
    fn link_by_token(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Option<relay_core::PaymentLink>, StoreError>> + Send;
    /// Replaces the link stored at `expected_version` ([`Commit::Conflict`] if it changed).
    fn update_link(
        &self,
        expected_version: u64,
        link: &relay_core::PaymentLink,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;
    /// A merchant's links, newest first, after `starting_after` if given.
    fn list_links(
        &self,
        merchant: &MerchantId,
        starting_after: Option<&relay_core::LinkId>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<relay_core::PaymentLink>, StoreError>> + Send;
}

/// Merchants and their API keys.
pub trait Merchants: Send + Sync + 'static {
    /// Adds a merchant with the record of its first API key.
    fn insert_merchant(
        &self,
        merchant: &Merchant,
        key: &KeyRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn merchant(
        &self,
        id: &MerchantId,
    ) -> impl Future<Output = Result<Option<Merchant>, StoreError>> + Send;
    /// The merchant and key whose secret hashes to `key`, if that key is in use (a revoked or
    /// rolled secret is not found from the moment its change is stored).
    fn key_by_hash(
        &self,
        key: &ApiKeyHash,
    ) -> impl Future<Output = Result<Option<(Merchant, KeyRecord)>, StoreError>> + Send;
    fn merchant_by_key(
        &self,
        key: &ApiKeyHash,
    ) -> impl Future<Output = Result<Option<Merchant>, StoreError>> + Send {
        async move { Ok(self.key_by_hash(key).await?.map(|(m, _)| m)) }
    }
    /// A merchant's keys, revoked ones included, by id.
    fn api_keys(
        &self,
        merchant: &MerchantId,
    ) -> impl Future<Output = Result<Vec<KeyRecord>, StoreError>> + Send;
    /// Adds a key; [`Commit::Conflict`] if its id or hash is taken.
    fn insert_api_key(
        &self,
        key: &KeyRecord,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;
    /// Replaces `old` by `new` (a roll: a new hash; a revocation: `revoked_at` set), the old hash
    /// no longer found from then on; [`Commit::Conflict`] if the stored key is no longer `old`.
    fn replace_api_key(
        &self,
        old: &KeyRecord,
        new: &KeyRecord,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;
    fn merchant_count(&self) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// Invoices, their events, the indexes that find them and the derivation counters.
pub trait Invoices: Send + Sync + 'static {
    /// Stores a new invoice with its events, unless the idempotency key was already used. Fails
    /// with [`StoreError::DuplicateReference`] if one of its references (an address, a
    /// PaymentIntent) already belongs to another invoice.
    fn create_invoice(
        &self,
        invoice: &Invoice,
        events: &[Event],
        idempotency: Option<IdempotencyWrite<'_>>,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;

    /// Replaces an invoice whose stored version is `expected_version`, with its events.
    fn update_invoice(
        &self,
        expected_version: u64,
        invoice: &Invoice,
        events: &[Event],
        idempotency: Option<IdempotencyWrite<'_>>,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;

    fn invoice(
        &self,
        id: &InvoiceId,
    ) -> impl Future<Output = Result<Option<Invoice>, StoreError>> + Send;
    /// The invoice a rail reference (`card:pi_…`) belongs to.
    fn invoice_by_lookup(
        &self,
        lookup: &Lookup,
    ) -> impl Future<Output = Result<Option<InvoiceId>, StoreError>> + Send;
    /// Every reference of one kind and its invoice (the watched bitcoin scripts).
    fn lookups_of(
        &self,
        kind: LookupKind,
    ) -> impl Future<Output = Result<Vec<(Lookup, InvoiceId)>, StoreError>> + Send;
    /// Bitcoin scripts ([`LookupKind::BtcScript`], the one kind a watcher follows) stored since
    /// the last call, by any relay on the store: how the watcher learns of invoices another relay
    /// created (it loads every reference with [`Invoices::lookups_of`] when it starts, then asks
    /// for these as it goes). A store only one process can open returns none: its watcher hears
    /// of new invoices from the process itself.
    fn take_new_lookups(
        &self,
        kind: LookupKind,
    ) -> impl Future<Output = Result<Vec<(Lookup, InvoiceId)>, StoreError>> + Send;

    fn list_invoices(
        &self,
        merchant: &MerchantId,
        query: &InvoiceQuery,
    ) -> impl Future<Output = Result<Page<Invoice>, StoreError>> + Send;
    /// Ids of invoices that were still payable and whose expiry is at or before `now`.
    fn invoices_due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<InvoiceId>, StoreError>> + Send;
    /// Marks an invoice's expiry as handled, so [`Invoices::invoices_due_for_expiry`] does not
    /// return it again.
    fn expiry_handled(
        &self,
        invoice: &Invoice,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Newest-first events of one merchant.
    fn list_events(
        &self,
        merchant: &MerchantId,
        starting_after: Option<&EventId>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<Event>, StoreError>> + Send;
    fn event(&self, id: &EventId)
        -> impl Future<Output = Result<Option<Event>, StoreError>> + Send;

    /// The next unused derivation index of a merchant's bitcoin descriptor. Each call in a process
    /// returns a new index; the highest index of a stored invoice is persisted in that invoice's
    /// own transaction, so after a restart or a crash indexing resumes above every address that
    /// was ever stored (and so ever shown). An index whose invoice was never stored may be handed
    /// out again after a restart: nobody saw it.
    fn next_derivation_index(
        &self,
        merchant: &MerchantId,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
}

/// API responses kept for retried requests, and inbound events seen once.
pub trait Idempotency: Send + Sync + 'static {
    fn idempotency(
        &self,
        merchant: &MerchantId,
        key: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// Records an inbound event (a gateway webhook, keyed `source:event id`) and, in the same
    /// transaction, the change it causes, if any. A key seen before writes nothing and returns
    /// [`Commit::IdempotencyHit`] with the first record: replayed webhooks change nothing.
    fn record_inbound(
        &self,
        key: &str,
        record: &IdempotencyRecord,
        change: Option<(u64, &Invoice, &[Event])>,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;

    /// Deletes idempotency records made before `idempotency_before` and inbound event records
    /// made before `inbound_before` (a key or event id older than that is new again). Returns
    /// how many of each it deleted.
    fn prune_records(
        &self,
        idempotency_before: Timestamp,
        inbound_before: Timestamp,
    ) -> impl Future<Output = Result<(usize, usize), StoreError>> + Send;
}

/// What the chain watchers keep: a cursor and tracking records per chain, written with the
/// invoice changes of the same step.
pub trait ChainState: Send + Sync + 'static {
    /// The stored cursor of a chain watcher (`chain` names it: `bitcoin`, `ethereum`).
    fn chain_cursor(
        &self,
        chain: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Every tracking record of a chain watcher, in key order.
    fn chain_tracked(
        &self,
        chain: &str,
    ) -> impl Future<Output = Result<Vec<TrackedRecord>, StoreError>> + Send;
    /// Writes one watcher step atomically. [`Commit::Conflict`] (nothing written) when an invoice
    /// changed since it was read: reload and redo the step.
    fn commit_chain(
        &self,
        chain: &str,
        write: &ChainWrite,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;
}

/// The ledger and the payout work, as every invoice write posted them.
///
/// A backend stores what [`relay_core::ledger::Posting::of`] computes from the invoice before and
/// after each write, in that write's transaction; it decides nothing itself.
pub trait Ledger: Send + Sync + 'static {
    /// The merchant's ledger balances by asset and account.
    fn balances(
        &self,
        merchant: &MerchantId,
    ) -> impl Future<Output = Result<Balances, StoreError>> + Send;
    /// The ledger entries of one invoice, by the invoice version that posted them.
    fn ledger_entries(
        &self,
        merchant: &MerchantId,
        invoice: &InvoiceId,
    ) -> impl Future<Output = Result<Vec<(u64, Vec<Line>)>, StoreError>> + Send;
    /// Payout work still to do, of one kind (kept in step with the invoices).
    fn payouts(
        &self,
        kind: PayoutKind,
    ) -> impl Future<Output = Result<Vec<PayoutWork>, StoreError>> + Send;
}

/// Every part of the store API, for code that calls a concrete backend's methods.
pub mod prelude {
    pub use crate::{
        ChainState, Idempotency, Invoices, Leases, Ledger, Merchants, Outbox, PaymentLinks, Store,
    };
}
