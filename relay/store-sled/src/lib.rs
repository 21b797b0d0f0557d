//! The sled implementation of Relay's [`Store`]: one embedded database, so one binary is a whole
//! deployment.
//!
//! Layout (every key family in its own tree; numbers big-endian so byte order is numeric order):
//! - `merchants`: merchant id → merchant; `api_keys`: key hash → key record; `merchant_keys`:
//!   merchant id · key id → key record (see `keys.rs`)
//! - `invoices`: invoice id → invoice
//! - `invoices_by_merchant`: merchant id · 0 · invoice id → () (newest-first listing)
//! - `invoices_by_order`: merchant id · 0 · len(order id) · order id · invoice id → ()
//! - `expiries`: expires_at · invoice id → () for invoices whose expiry has not been handled
//! - `events`: event id → event; `events_by_merchant`: merchant id · 0 · event id → ()
//!
//! Invoice and event ids are time-ordered (see `relay_core::OrderedIds`), so an index keyed by id
//! is in creation order and a page cursor is just the last id seen.
//! - `idempotency`: merchant id · 0 · key → stored response
//! - `references`: a rail's lookup key (`Lookup::key`: `card:pi_…`, `btcs:<script>`) → invoice id
//! - `inbound`: `source:event id` → record of a received webhook (duplicates are ignored)
//! - `counters`: `btc_index` · merchant id → next derivation index (u32, big-endian)
//! - `chains`: chain · `/cursor` → watcher cursor; chain · `/t/` · key → watcher tracking record
//! - `meta`: `format` → layout version

mod codec;

use crate::codec::{decode, encode};
use relay_core::ledger::Posting;
use relay_core::{
    Event, EventId, Invoice, InvoiceId, InvoiceStatus, Lookup, LookupKind, MerchantId, Timestamp,
};
use relay_store::{
    ChainState, ChainWrite, Commit, Idempotency, IdempotencyRecord, IdempotencyWrite, InvoiceQuery,
    Invoices, Page, Store, StoreError,
};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const LAYOUT_VERSION: &[u8] = b"1";
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The embedded store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    merchants: Tree,
    api_keys: Tree,
    merchant_keys: Tree,
    /// Seals webhook secrets at rest (see `sealed`), when the operator gave a key.
    secrets_key: Option<relay_store::sealed::SecretsKey>,
    invoices: Tree,
    invoices_by_merchant: Tree,
    invoices_by_order: Tree,
    expiries: Tree,
    events: Tree,
    events_by_merchant: Tree,
    idempotency: Tree,
    references: Tree,
    inbound: Tree,
    counters: Tree,
    chains: Tree,
    webhook_endpoints: Tree,
    webhook_fanout: Tree,
    webhook_queue: Tree,
    webhook_due: Tree,
    webhook_attempts: Tree,
    ledger: Tree,
    ledger_entries: Tree,
    payouts: Tree,
    payment_links: Tree,
    link_tokens: Tree,
    links_by_merchant: Tree,
    risk_rules: Tree,
    risk_signals: Tree,
    /// Serializes the writers of the webhook queue (fan-out, delivery results, redelivery), so
    /// they may read it outside their transactions.
    webhook_lock: std::sync::Mutex<()>,
    /// Woken when a write queued events for webhook fan-out.
    fanout_wake: tokio::sync::Notify,
    /// Woken when a write added payout work (a refund or settlement for the operator).
    payout_wake: tokio::sync::Notify,
    /// Merchants with at least one webhook endpoint: only their events are queued for delivery.
    hooked_merchants: std::sync::RwLock<std::collections::HashSet<String>>,
    // Group commit: `written` counts writes that have returned; `flushed` is the value of
    // `written` that the last completed disk sync covered.
    written: AtomicU64,
    /// Held (shared) by every write from before its commit until it is counted in `written`;
    /// `durable` takes it alone to read `written`, so it never misses a write whose effect a
    /// reader may already have seen (an idempotency replay, a due delivery).
    commit_gate: std::sync::RwLock<()>,
    /// Tests: a write blocks right after its commit until this is released.
    #[cfg(test)]
    pub(crate) pause_after_commit: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    flushed: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    /// Next derivation index per merchant, seeded from `counters` on first use.
    next_index: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

fn with_sep(a: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 9);
    k.extend_from_slice(a);
    k.push(0);
    k
}

fn merchant_prefix(m: &MerchantId) -> Vec<u8> {
    with_sep(m.as_str().as_bytes())
}

fn order_prefix(m: &MerchantId, order: &str) -> Vec<u8> {
    let mut k = merchant_prefix(m);
    let len = u16::try_from(order.len()).unwrap_or(u16::MAX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(order.as_bytes());
    k
}

fn id_key(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn expiry_key(at: Timestamp, id: &InvoiceId) -> Vec<u8> {
    // Offset so negative timestamps still sort before positive ones.
    let biased = (at.0 as u64) ^ (1 << 63);
    let mut k = biased.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn idem_key(m: &MerchantId, key: &str) -> Vec<u8> {
    let mut k = merchant_prefix(m);
    k.extend_from_slice(key.as_bytes());
    k
}

fn index_key(merchant: &MerchantId) -> Vec<u8> {
    with_sep(format!("btc_index{}", merchant.as_str()).as_bytes())
}

fn decode_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// `a` followed by `b` (chain keys: `chain` · `/cursor`, `chain/t/` · record key).
fn concat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len());
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k
}

fn awaits_expiry(status: InvoiceStatus) -> bool {
    matches!(status, InvoiceStatus::New | InvoiceStatus::Processing)
}

/// An event ready to be written: its key, its by-merchant index key, its merchant, its value.
struct EncodedEvent {
    id: Vec<u8>,
    by_merchant: Vec<u8>,
    merchant: Vec<u8>,
    value: Vec<u8>,
    /// Whether the merchant had a webhook endpoint when the event was written.
    fan_out: bool,
}

/// An invoice change ready to be written: encoded outside the transaction closure, which sled may
/// run more than once.
struct EncodedChange<'a> {
    expected_version: u64,
    invoice: &'a Invoice,
    value: Vec<u8>,
    events: Vec<EncodedEvent>,
}

/// The trees an invoice change writes, inside one transaction.
struct ChangeTrees<'t> {
    inv: &'t TransactionalTree,
    exp: &'t TransactionalTree,
    ev: &'t TransactionalTree,
    ev_m: &'t TransactionalTree,
    fan: &'t TransactionalTree,
    led: &'t TransactionalTree,
    led_e: &'t TransactionalTree,
    pay: &'t TransactionalTree,
    refs: &'t TransactionalTree,
    counters: &'t TransactionalTree,
}

impl ChangeTrees<'_> {
    /// Writes one change under its version check: the invoice, its expiry index, its events
    /// (marked for fan-out) and its posting. Returns whether it added payout work.
    fn write(&self, c: &EncodedChange<'_>) -> Result<bool, ConflictableTransactionError<Abort>> {
        let invoice = c.invoice;
        let id = invoice.id.as_str().as_bytes();
        let Some(current) = self.inv.get(id)? else {
            return Err(abort(Abort::Conflict));
        };
        let current: Invoice = decode("invoice", &current).map_err(|e| abort(Abort::Decode(e)))?;
        if current.version != c.expected_version {
            return Err(abort(Abort::Conflict));
        }
        // A reference the invoice did not have (a bitcoin address derived when the payer chose
        // bitcoin) is claimed with the change, or the change is refused.
        let before = current.lookups();
        for r in invoice.lookups().iter().filter(|r| !before.contains(r)) {
            match self.refs.insert(r.key().as_bytes(), id)? {
                Some(other) if other.as_ref() != id => {
                    return Err(abort(Abort::DuplicateReference(r.clone())))
                }
                _ => {}
            }
        }
        if let Some((key, next)) = derivation_counter(invoice) {
            let stored = self
                .counters
                .get(key.as_slice())?
                .map_or(0, |b| decode_u64(&b));
            if next > stored {
                self.counters.insert(key.as_slice(), &next.to_be_bytes())?;
            }
        }
        self.inv.insert(id, c.value.as_slice())?;
        if !awaits_expiry(invoice.status) {
            self.exp
                .remove(expiry_key(invoice.expires_at, &invoice.id))?;
        }
        SledStore::write_events(self.ev, self.ev_m, self.fan, &c.events)?;
        let posting = Posting::of(Some(&current), invoice);
        ledger::write_posting(
            &invoice.merchant_id,
            &invoice.id,
            &posting,
            self.led,
            self.led_e,
            self.pay,
        )?;
        Ok(posting.adds_payouts())
    }
}

/// The derivation counter an invoice's bitcoin address moves (its owner's key, and the index
/// after the address's), so that no later invoice is given the same address.
fn derivation_counter(invoice: &Invoice) -> Option<(Vec<u8>, u64)> {
    invoice
        .methods
        .iter()
        .filter_map(|q| q.bitcoin.as_ref())
        .map(|b| {
            let owner = if b.treasury {
                relay_core::merchant::treasury_index_owner()
            } else {
                invoice.merchant_id.clone()
            };
            (index_key(&owner), u64::from(b.derivation_index) + 1)
        })
        .max_by_key(|(_, next)| *next)
}

/// Why a transaction closure gave up without writing.
enum Abort {
    Idempotent(IdempotencyRecord),
    Conflict,
    DuplicateReference(Lookup),
    Decode(StoreError),
}

fn abort(a: Abort) -> ConflictableTransactionError<Abort> {
    ConflictableTransactionError::Abort(a)
}

impl SledStore {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore, StoreError> {
        Self::open_sealed(path, None)
    }

    /// Opens sled's database in `path`. A store this process dropped a moment ago may still hold
    /// its file lock while sled's background flush winds down: the lock is asked for again for up
    /// to a second before the directory counts as in use by another relay.
    fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let opened = sled::Config::new()
                .path(path)
                // sled's default page cache is 1 GiB; hot invoices are few, so keep memory small.
                .cache_capacity(CACHE_BYTES)
                // We flush explicitly before acknowledging; sled's own timer is a backstop.
                .flush_every_ms(Some(1000))
                .open();
            let locked = |io: &std::io::Error| {
                io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock")
            };
            match opened {
                Ok(db) => return Ok(db),
                Err(sled::Error::Io(ref io)) if locked(io) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked {
                            path: path.display().to_string(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(other) => return Err(StoreError::from(other)),
            }
        }
    }

    /// Opens the store; with `secrets_key`, webhook secrets are sealed at rest (those stored in
    /// plain text before are sealed now). A store whose secrets are sealed cannot be opened
    /// without its key, or with another one.
    pub fn open_sealed(
        path: impl AsRef<Path>,
        secrets_key: Option<relay_store::sealed::SecretsKey>,
    ) -> Result<SledStore, StoreError> {
        let path = path.as_ref();
        let db = Self::open_db(path)?;
        match db.get("format")? {
            None => {
                db.insert("format", LAYOUT_VERSION)?;
            }
            Some(v) if v.as_ref() == LAYOUT_VERSION => {}
            Some(v) => {
                return Err(StoreError::Corrupt {
                    what: "store layout",
                    reason: format!(
                        "version {:?} is not supported by this relay",
                        String::from_utf8_lossy(&v)
                    ),
                })
            }
        }
        let tree = |name: &str| db.open_tree(name);
        let inner = Inner {
            merchants: tree("merchants")?,
            api_keys: tree("api_keys")?,
            merchant_keys: tree("merchant_keys")?,
            secrets_key,
            invoices: tree("invoices")?,
            invoices_by_merchant: tree("invoices_by_merchant")?,
            invoices_by_order: tree("invoices_by_order")?,
            expiries: tree("expiries")?,
            events: tree("events")?,
            events_by_merchant: tree("events_by_merchant")?,
            idempotency: tree("idempotency")?,
            references: tree("references")?,
            inbound: tree("inbound")?,
            counters: tree("counters")?,
            chains: tree("chains")?,
            webhook_endpoints: tree("webhook_endpoints")?,
            webhook_fanout: tree("webhook_fanout")?,
            webhook_queue: tree("webhook_queue")?,
            webhook_due: tree("webhook_due")?,
            webhook_attempts: tree("webhook_attempts")?,
            ledger: tree("ledger")?,
            ledger_entries: tree("ledger_entries")?,
            payment_links: tree("payment_links")?,
            link_tokens: tree("link_tokens")?,
            links_by_merchant: tree("links_by_merchant")?,
            risk_rules: tree("risk_rules")?,
            risk_signals: tree("risk_signals")?,
            payouts: tree("payouts")?,
            webhook_lock: std::sync::Mutex::new(()),
            hooked_merchants: Default::default(),
            fanout_wake: tokio::sync::Notify::new(),
            payout_wake: tokio::sync::Notify::new(),
            db,
            written: AtomicU64::new(0),
            commit_gate: std::sync::RwLock::new(()),
            #[cfg(test)]
            pause_after_commit: std::sync::Mutex::new(None),
            flushed: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            next_index: Default::default(),
        };
        let store = SledStore {
            inner: Arc::new(inner),
        };
        store.load_hooked_merchants()?;
        store.migrate_legacy_keys()?;
        store.check_sealing()?;
        Ok(store)
    }

    /// After a committed write: wakes the dispatcher if it queued events for fan-out, and the
    /// operator if it added payout work.
    fn wake(&self, events: &[EncodedEvent], payouts_added: bool) {
        if events.iter().any(|e| e.fan_out) {
            self.inner.fanout_wake.notify_one();
        }
        if payouts_added {
            self.inner.payout_wake.notify_one();
        }
    }

    fn encode_change<'a>(
        &self,
        expected_version: u64,
        invoice: &'a Invoice,
        events: &[Event],
    ) -> EncodedChange<'a> {
        EncodedChange {
            expected_version,
            invoice,
            value: encode(invoice),
            events: self.encode_events(events),
        }
    }

    /// Pre-encodes events as (id key, by-merchant key, value) outside the transaction closure,
    /// which sled may run more than once.
    fn encode_events(&self, events: &[Event]) -> Vec<EncodedEvent> {
        let hooked = self
            .inner
            .hooked_merchants
            .read()
            .unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .map(|e| EncodedEvent {
                id: e.id.as_str().as_bytes().to_vec(),
                by_merchant: id_key(&merchant_prefix(&e.merchant_id), e.id.as_str()),
                merchant: e.merchant_id.as_str().as_bytes().to_vec(),
                value: encode(e),
                fan_out: hooked.contains(e.merchant_id.as_str()),
            })
            .collect()
    }

    /// Writes events and marks each for webhook fan-out, in the caller's transaction: an event is
    /// never stored without being queued for the merchant's endpoints.
    fn write_events(
        events_tx: &TransactionalTree,
        by_merchant_tx: &TransactionalTree,
        fanout_tx: &TransactionalTree,
        events: &[EncodedEvent],
    ) -> Result<(), ConflictableTransactionError<Abort>> {
        for e in events {
            events_tx.insert(e.id.as_slice(), e.value.as_slice())?;
            by_merchant_tx.insert(e.by_merchant.as_slice(), &[])?;
            // Marked only for merchants with an endpoint; the merchant rides along, so fan-out
            // finds endpoints without reading the event.
            if e.fan_out {
                fanout_tx.insert(e.id.as_slice(), e.merchant.as_slice())?;
            }
        }
        Ok(())
    }

    /// Inserts `record` under `key` unless the key exists, in which case the transaction is
    /// aborted with the stored record.
    fn claim(
        tree_tx: &TransactionalTree,
        key: &[u8],
        record: &IdempotencyRecord,
    ) -> Result<(), ConflictableTransactionError<Abort>> {
        if let Some(existing) = tree_tx.get(key)? {
            let rec =
                decode("idempotency record", &existing).map_err(|e| abort(Abort::Decode(e)))?;
            return Err(abort(Abort::Idempotent(rec)));
        }
        tree_tx.insert(key, encode(record))?;
        Ok(())
    }

    /// One transaction: claim `dedupe` (if any) in `dedupe_tree`, then apply `change` (if any)
    /// with an optimistic version check.
    fn write_update(
        &self,
        dedupe_tree: &Tree,
        dedupe: Option<(Vec<u8>, &IdempotencyRecord)>,
        change: Option<(u64, &Invoice, &[Event])>,
    ) -> Result<Commit, StoreError> {
        let i = &self.inner;
        let encoded =
            change.map(|(version, invoice, events)| self.encode_change(version, invoice, events));
        let added = std::sync::atomic::AtomicBool::new(false);
        let _gate = self.write_gate();
        let result = (
            &i.invoices,
            &i.expiries,
            dedupe_tree,
            &i.events,
            &i.events_by_merchant,
            &i.webhook_fanout,
            &i.ledger,
            &i.ledger_entries,
            &i.payouts,
            &i.references,
            &i.counters,
        )
            .transaction(
                |(inv, exp, dedupe_tx, ev, ev_m, fan, led, led_e, pay, refs, counters)| {
                    if let Some((key, record)) = &dedupe {
                        Self::claim(dedupe_tx, key, record)?;
                    }
                    let Some(change) = &encoded else {
                        return Ok(());
                    };
                    let t = ChangeTrees {
                        inv,
                        exp,
                        ev,
                        ev_m,
                        fan,
                        led,
                        led_e,
                        pay,
                        refs,
                        counters,
                    };
                    // Only the attempt that commits counts: an aborted one is redone from scratch.
                    added.store(t.write(change)?, Ordering::SeqCst);
                    Ok(())
                },
            );
        let done = self.finish(result);
        if matches!(done, Ok(Commit::Done)) {
            if let Some(change) = &encoded {
                self.wake(&change.events, added.load(Ordering::SeqCst));
            }
        }
        done
    }

    /// Taken by a write before its commit and kept until it is counted (see `commit_gate`).
    pub(crate) fn write_gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.inner
            .commit_gate
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the records of `tree` (idempotency or inbound) made before `before`, each only if
    /// it is still the record read (so nothing written meanwhile is lost).
    fn prune_tree(&self, tree: &Tree, before: Timestamp) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in tree.iter() {
            let (k, v) = kv?;
            let record: IdempotencyRecord = decode("idempotency record", &v)?;
            if record.created_at < before {
                let _gate = self.write_gate();
                if tree.compare_and_swap(&k, Some(&v), None::<&[u8]>)?.is_ok() {
                    n += 1;
                    self.inner.written.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        Ok(n)
    }

    fn finish(&self, result: Result<(), TransactionError<Abort>>) -> Result<Commit, StoreError> {
        match result {
            Ok(()) => {
                #[cfg(test)]
                if let Some(pause) = self
                    .inner
                    .pause_after_commit
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                {
                    let _ = pause.recv();
                }
                self.inner.written.fetch_add(1, Ordering::SeqCst);
                Ok(Commit::Done)
            }
            Err(TransactionError::Abort(Abort::Idempotent(rec))) => Ok(Commit::IdempotencyHit(rec)),
            Err(TransactionError::Abort(Abort::Conflict)) => Ok(Commit::Conflict),
            Err(TransactionError::Abort(Abort::DuplicateReference(reference))) => {
                Err(StoreError::DuplicateReference { reference })
            }
            Err(TransactionError::Abort(Abort::Decode(e))) => Err(e),
            Err(TransactionError::Storage(e)) => Err(StoreError::from(e)),
        }
    }

    /// Newest-first page of an index whose keys are `prefix · id`, strictly below `before`.
    fn page_by_index<T>(
        index: &Tree,
        prefix: &[u8],
        before: Option<&str>,
        limit: usize,
        mut load: impl FnMut(&[u8]) -> Result<Option<T>, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        let start = prefix.to_vec();
        let end = match before {
            Some(id) => id_key(prefix, id),
            // Ids are lowercase ASCII letters, digits and `_`; 0x7f sorts after all of them.
            None => id_key(prefix, "\u{7f}"),
        };
        let mut items = Vec::with_capacity(limit.min(100));
        let mut has_more = false;
        for entry in index.range(start..end).rev() {
            let (key, _) = entry?;
            if items.len() == limit {
                has_more = true;
                break;
            }
            if let Some(item) = load(&key[prefix.len()..])? {
                items.push(item);
            }
        }
        Ok(Page { items, has_more })
    }
}

/// One process holds the directory's lock, so it plays every role and nothing needs fencing.
impl relay_store::Leases for SledStore {
    async fn hold(
        &self,
        _role: relay_store::Role,
        _ttl: std::time::Duration,
    ) -> Result<Option<u64>, StoreError> {
        Ok(Some(1))
    }

    async fn release(&self, _role: relay_store::Role) -> Result<(), StoreError> {
        Ok(())
    }

    fn fenced(&self, _role: relay_store::Role) -> SledStore {
        self.clone()
    }
}

impl Store for SledStore {
    async fn durable(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        // Alone on the gate: every write already visible to this caller has been counted.
        let target = {
            let _all = i.commit_gate.write().unwrap_or_else(|p| p.into_inner());
            i.written.load(Ordering::SeqCst)
        };
        if i.flushed.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        // Whoever holds the lock syncs everything written so far; those queued behind it usually
        // find their writes covered and return without a sync of their own.
        let _guard = i.flush_lock.lock().await;
        if i.flushed.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let upto = i.written.load(Ordering::SeqCst);
        i.db.flush_async().await?;
        i.flushed.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }
}

mod chain;
mod invoices;
mod keys;
mod ledger;
mod links;
mod risk;
mod sealing;
mod webhooks;

/// Separates the parts of webhook keys (ids never contain a zero byte).
const LANE_SEP: u8 = 0;

#[cfg(test)]
mod tests;
