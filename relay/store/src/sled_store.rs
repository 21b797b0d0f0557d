//! The sled implementation of [`Store`].
//!
//! Layout (every key family in its own tree; numbers big-endian so byte order is numeric order):
//! - `merchants`: merchant id → merchant; `api_keys`: key hash → merchant id
//! - `invoices`: invoice id → invoice; `invoice_seq`: invoice id → creation sequence number
//! - `invoices_by_merchant`: merchant id · 0 · seq → invoice id (newest-first listing)
//! - `invoices_by_order`: merchant id · 0 · len(order id) · order id · seq → invoice id
//! - `expiries`: expires_at · invoice id → () for invoices whose expiry has not been handled
//! - `events`: seq → event; `event_seq`: event id → seq; `events_by_merchant`: merchant · 0 · seq
//! - `idempotency`: merchant id · 0 · key → stored response
//! - `meta`: `format` → layout version

use crate::codec::{decode, encode};
use crate::{Commit, IdempotencyRecord, IdempotencyWrite, InvoiceQuery, Page, Store, StoreError};
use relay_core::{
    ApiKeyHash, Event, EventId, Invoice, InvoiceId, InvoiceStatus, Merchant, MerchantId, Timestamp,
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
    invoices: Tree,
    invoice_seq: Tree,
    invoices_by_merchant: Tree,
    invoices_by_order: Tree,
    expiries: Tree,
    events: Tree,
    event_seq: Tree,
    events_by_merchant: Tree,
    idempotency: Tree,
    // Group commit: `written` counts writes that have returned; `flushed` is the value of
    // `written` that the last completed disk sync covered.
    written: AtomicU64,
    flushed: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
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

fn seq_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn expiry_key(at: Timestamp, id: &InvoiceId) -> Vec<u8> {
    // Offset so negative timestamps still sort before positive ones.
    let biased = (at.0 as u64) ^ (1 << 63);
    let mut k = biased.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn seq_of(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Decode {
        what: "sequence number",
        reason: format!("{} bytes", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

fn idem_key(m: &MerchantId, key: &str) -> Vec<u8> {
    let mut k = merchant_prefix(m);
    k.extend_from_slice(key.as_bytes());
    k
}

fn awaits_expiry(status: InvoiceStatus) -> bool {
    matches!(status, InvoiceStatus::New | InvoiceStatus::Processing)
}

/// Why a transaction closure gave up without writing.
enum Abort {
    Idempotent(IdempotencyRecord),
    Conflict,
    Decode(StoreError),
}

fn abort(a: Abort) -> ConflictableTransactionError<Abort> {
    ConflictableTransactionError::Abort(a)
}

impl SledStore {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore, StoreError> {
        let path = path.as_ref();
        let db = sled::Config::new()
            .path(path)
            // sled's default page cache is 1 GiB; hot invoices are few, so keep memory small.
            .cache_capacity(CACHE_BYTES)
            // We flush explicitly before acknowledging; sled's own timer is a backstop.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Locked {
                        path: path.display().to_string(),
                    }
                }
                sled::Error::Io(ref io) if io.to_string().contains("lock") => StoreError::Locked {
                    path: path.display().to_string(),
                },
                other => StoreError::Backend(other),
            })?;
        match db.get("format")? {
            None => {
                db.insert("format", LAYOUT_VERSION)?;
            }
            Some(v) if v.as_ref() == LAYOUT_VERSION => {}
            Some(v) => {
                return Err(StoreError::Decode {
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
            invoices: tree("invoices")?,
            invoice_seq: tree("invoice_seq")?,
            invoices_by_merchant: tree("invoices_by_merchant")?,
            invoices_by_order: tree("invoices_by_order")?,
            expiries: tree("expiries")?,
            events: tree("events")?,
            event_seq: tree("event_seq")?,
            events_by_merchant: tree("events_by_merchant")?,
            idempotency: tree("idempotency")?,
            db,
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
        };
        Ok(SledStore {
            inner: Arc::new(inner),
        })
    }

    /// Marks an invoice's expiry as handled, so the expiry sweep does not return it again.
    pub fn expiry_handled(&self, invoice: &Invoice) -> Result<(), StoreError> {
        self.inner
            .expiries
            .remove(expiry_key(invoice.expires_at, &invoice.id))?;
        self.inner.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Bytes on disk, for metrics.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.generate_id()?)
    }

    fn write_events(
        events_tx: &TransactionalTree,
        event_seq_tx: &TransactionalTree,
        by_merchant_tx: &TransactionalTree,
        events: &[(u64, Event)],
    ) -> Result<(), ConflictableTransactionError<Abort>> {
        for (seq, ev) in events {
            events_tx.insert(&seq.to_be_bytes(), encode(ev))?;
            event_seq_tx.insert(ev.id.as_str().as_bytes(), &seq.to_be_bytes())?;
            by_merchant_tx.insert(
                seq_key(&merchant_prefix(&ev.merchant_id), *seq),
                ev.id.as_str().as_bytes(),
            )?;
        }
        Ok(())
    }

    fn check_idempotency(
        idem_tx: &TransactionalTree,
        idem: &Option<IdempotencyWrite<'_>>,
    ) -> Result<(), ConflictableTransactionError<Abort>> {
        if let Some(w) = idem {
            let key = idem_key(w.merchant_id, w.key);
            if let Some(existing) = idem_tx.get(&key)? {
                let rec =
                    decode("idempotency record", &existing).map_err(|e| abort(Abort::Decode(e)))?;
                return Err(abort(Abort::Idempotent(rec)));
            }
            idem_tx.insert(key, encode(&w.record))?;
        }
        Ok(())
    }

    fn finish(&self, result: Result<(), TransactionError<Abort>>) -> Result<Commit, StoreError> {
        match result {
            Ok(()) => {
                self.inner.written.fetch_add(1, Ordering::SeqCst);
                Ok(Commit::Done)
            }
            Err(TransactionError::Abort(Abort::Idempotent(rec))) => Ok(Commit::IdempotencyHit(rec)),
            Err(TransactionError::Abort(Abort::Conflict)) => Ok(Commit::Conflict),
            Err(TransactionError::Abort(Abort::Decode(e))) => Err(e),
            Err(TransactionError::Storage(e)) => Err(StoreError::Backend(e)),
        }
    }

    fn page_by_index<T>(
        &self,
        index: &Tree,
        prefix: &[u8],
        before_seq: Option<u64>,
        limit: usize,
        mut load: impl FnMut(&[u8]) -> Result<Option<T>, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        let start = prefix.to_vec();
        let end = match before_seq {
            Some(seq) => seq_key(prefix, seq),
            None => seq_key(prefix, u64::MAX),
        };
        let mut items = Vec::with_capacity(limit.min(100));
        let mut has_more = false;
        for entry in index.range(start..end).rev() {
            let (_, id) = entry?;
            if items.len() == limit {
                has_more = true;
                break;
            }
            if let Some(item) = load(&id)? {
                items.push(item);
            }
        }
        Ok(Page { items, has_more })
    }
}

impl Store for SledStore {
    fn insert_merchant(&self, merchant: &Merchant, key: &ApiKeyHash) -> Result<(), StoreError> {
        let i = &self.inner;
        let result = (&i.merchants, &i.api_keys).transaction(|(m, k)| {
            m.insert(merchant.id.as_str().as_bytes(), encode(merchant))?;
            k.insert(&key.0, merchant.id.as_str().as_bytes())?;
            Ok::<_, ConflictableTransactionError<Abort>>(())
        });
        self.finish(result).map(|_| ())
    }

    fn merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError> {
        self.inner
            .merchants
            .get(id.as_str().as_bytes())?
            .map(|v| decode("merchant", &v))
            .transpose()
    }

    fn merchant_by_key(&self, key: &ApiKeyHash) -> Result<Option<Merchant>, StoreError> {
        let Some(id) = self.inner.api_keys.get(key.0)? else {
            return Ok(None);
        };
        self.inner
            .merchants
            .get(&id)?
            .map(|v| decode("merchant", &v))
            .transpose()
    }

    fn merchant_count(&self) -> Result<usize, StoreError> {
        Ok(self.inner.merchants.len())
    }

    fn create_invoice(
        &self,
        invoice: &Invoice,
        events: &[Event],
        idempotency: Option<IdempotencyWrite<'_>>,
    ) -> Result<Commit, StoreError> {
        let i = &self.inner;
        let seq = self.next_seq()?;
        let events: Vec<(u64, Event)> = events
            .iter()
            .map(|e| Ok((self.next_seq()?, e.clone())))
            .collect::<Result<_, StoreError>>()?;
        let id = invoice.id.as_str().as_bytes();
        let value = encode(invoice);
        let by_merchant = seq_key(&merchant_prefix(&invoice.merchant_id), seq);
        let by_order = invoice
            .order_id
            .as_ref()
            .map(|o| seq_key(&order_prefix(&invoice.merchant_id, o), seq));
        let result = (
            &i.invoices,
            &i.invoice_seq,
            &i.invoices_by_merchant,
            &i.invoices_by_order,
            &i.expiries,
            &i.idempotency,
            &i.events,
            &i.event_seq,
            &i.events_by_merchant,
        )
            .transaction(|(inv, inv_seq, by_m, by_o, exp, idem, ev, ev_seq, ev_m)| {
                Self::check_idempotency(idem, &idempotency)?;
                inv.insert(id, value.as_slice())?;
                inv_seq.insert(id, &seq.to_be_bytes())?;
                by_m.insert(by_merchant.as_slice(), id)?;
                if let Some(k) = &by_order {
                    by_o.insert(k.as_slice(), id)?;
                }
                if awaits_expiry(invoice.status) {
                    exp.insert(expiry_key(invoice.expires_at, &invoice.id), &[])?;
                }
                Self::write_events(ev, ev_seq, ev_m, &events)?;
                Ok(())
            });
        self.finish(result)
    }

    fn update_invoice(
        &self,
        expected_version: u64,
        invoice: &Invoice,
        events: &[Event],
        idempotency: Option<IdempotencyWrite<'_>>,
    ) -> Result<Commit, StoreError> {
        let i = &self.inner;
        let events: Vec<(u64, Event)> = events
            .iter()
            .map(|e| Ok((self.next_seq()?, e.clone())))
            .collect::<Result<_, StoreError>>()?;
        let id = invoice.id.as_str().as_bytes();
        let value = encode(invoice);
        let result = (
            &i.invoices,
            &i.expiries,
            &i.idempotency,
            &i.events,
            &i.event_seq,
            &i.events_by_merchant,
        )
            .transaction(|(inv, exp, idem, ev, ev_seq, ev_m)| {
                Self::check_idempotency(idem, &idempotency)?;
                let Some(current) = inv.get(id)? else {
                    return Err(abort(Abort::Conflict));
                };
                let current: Invoice =
                    decode("invoice", &current).map_err(|e| abort(Abort::Decode(e)))?;
                if current.version != expected_version {
                    return Err(abort(Abort::Conflict));
                }
                inv.insert(id, value.as_slice())?;
                if !awaits_expiry(invoice.status) {
                    exp.remove(expiry_key(invoice.expires_at, &invoice.id))?;
                }
                Self::write_events(ev, ev_seq, ev_m, &events)?;
                Ok(())
            });
        self.finish(result)
    }

    fn invoice(&self, id: &InvoiceId) -> Result<Option<Invoice>, StoreError> {
        self.inner
            .invoices
            .get(id.as_str().as_bytes())?
            .map(|v| decode("invoice", &v))
            .transpose()
    }

    fn list_invoices(
        &self,
        merchant: &MerchantId,
        query: &InvoiceQuery,
    ) -> Result<Page<Invoice>, StoreError> {
        let i = &self.inner;
        let (index, prefix) = match &query.order_id {
            Some(order) => (&i.invoices_by_order, order_prefix(merchant, order)),
            None => (&i.invoices_by_merchant, merchant_prefix(merchant)),
        };
        let before = match &query.starting_after {
            Some(id) => match i.invoice_seq.get(id.as_str().as_bytes())? {
                Some(seq) => Some(seq_of(&seq)?),
                // An unknown cursor yields an empty page rather than restarting from the top.
                None => {
                    return Ok(Page {
                        items: vec![],
                        has_more: false,
                    })
                }
            },
            None => None,
        };
        self.page_by_index(index, &prefix, before, query.limit, |id| {
            i.invoices
                .get(id)?
                .map(|v| decode("invoice", &v))
                .transpose()
        })
    }

    fn invoices_due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<InvoiceId>, StoreError> {
        let end = expiry_key(now.plus_seconds(1), &InvoiceId::from_entropy([0; 12]));
        let mut out = Vec::new();
        for entry in self.inner.expiries.range(..end).take(limit) {
            let (k, _) = entry?;
            let id = std::str::from_utf8(&k[8..])
                .ok()
                .and_then(InvoiceId::parse)
                .ok_or_else(|| StoreError::Decode {
                    what: "expiry index",
                    reason: "bad invoice id".into(),
                })?;
            out.push(id);
        }
        Ok(out)
    }

    fn idempotency(
        &self,
        merchant: &MerchantId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner
            .idempotency
            .get(idem_key(merchant, key))?
            .map(|v| decode("idempotency record", &v))
            .transpose()
    }

    fn list_events(
        &self,
        merchant: &MerchantId,
        starting_after: Option<&EventId>,
        limit: usize,
    ) -> Result<Page<Event>, StoreError> {
        let i = &self.inner;
        let before = match starting_after {
            Some(id) => match i.event_seq.get(id.as_str().as_bytes())? {
                Some(seq) => Some(seq_of(&seq)?),
                None => {
                    return Ok(Page {
                        items: vec![],
                        has_more: false,
                    })
                }
            },
            None => None,
        };
        self.page_by_index(
            &i.events_by_merchant,
            &merchant_prefix(merchant),
            before,
            limit,
            |id| {
                let Some(seq) = i.event_seq.get(id)? else {
                    return Ok(None);
                };
                i.events.get(seq)?.map(|v| decode("event", &v)).transpose()
            },
        )
    }

    fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        let i = &self.inner;
        let Some(seq) = i.event_seq.get(id.as_str().as_bytes())? else {
            return Ok(None);
        };
        i.events.get(seq)?.map(|v| decode("event", &v)).transpose()
    }

    async fn durable(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        let target = i.written.load(Ordering::SeqCst);
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

#[cfg(test)]
mod tests;
