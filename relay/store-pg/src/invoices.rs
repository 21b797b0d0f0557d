//! Invoices, their events and references, and the idempotency and inbound records written with
//! them: one transaction per decision.

use crate::{db, decode, encode, ledger, transact, PgStore, Refusal, Stop};
use relay_core::ledger::Posting;
use relay_core::{
    Event, EventId, Invoice, InvoiceId, InvoiceStatus, Lookup, LookupKind, MerchantId, Timestamp,
};
use relay_store::{
    Commit, Idempotency, IdempotencyRecord, IdempotencyWrite, InvoiceQuery, Invoices, Page,
    StoreError,
};
use sqlx::{PgConnection, Row};

/// What a committed write asks to wake (see [`PgStore::wake`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wrote {
    pub fan_out: bool,
    pub payouts: bool,
}

impl Wrote {
    pub(crate) fn and(self, other: Wrote) -> Wrote {
        Wrote {
            fan_out: self.fan_out || other.fan_out,
            payouts: self.payouts || other.payouts,
        }
    }
}

fn awaits_expiry(status: InvoiceStatus) -> bool {
    matches!(status, InvoiceStatus::New | InvoiceStatus::Processing)
}

/// An unsigned counter as a BIGINT (versions stay far below 2^63).
pub(crate) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The table a dedupe key is claimed in.
#[derive(Clone, Copy)]
pub(crate) enum Dedupe<'a> {
    /// An API request's Idempotency-Key, per merchant.
    Request(&'a MerchantId, &'a str),
    /// An inbound webhook's `source:event id`.
    Inbound(&'a str),
}

impl Dedupe<'_> {
    /// The table, the scope and the key.
    fn place(&self) -> (&'static str, &str, &str) {
        match *self {
            Dedupe::Request(merchant, key) => ("idempotency", merchant.as_str(), key),
            Dedupe::Inbound(key) => ("inbound", "", key),
        }
    }
}

/// Claims a dedupe key in the caller's transaction; a key already stored refuses the decision
/// with the stored record. Of two writers racing for one key, the second waits for the first's
/// commit and then finds its record.
pub(crate) async fn claim(
    conn: &mut PgConnection,
    dedupe: Dedupe<'_>,
    record: &IdempotencyRecord,
) -> Result<(), Stop> {
    let (table, scope, key) = dedupe.place();
    let inserted = sqlx::query(&format!(
        "INSERT INTO {table} (scope, key, created_at, body) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(scope)
    .bind(key)
    .bind(record.created_at.0)
    .bind(encode(record))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(());
    }
    let stored: Option<String> = sqlx::query_scalar(&format!(
        "SELECT body FROM {table} WHERE scope = $1 AND key = $2"
    ))
    .bind(scope)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    match stored {
        Some(body) => Err(Stop::Refused(Refusal::Idempotent(decode(
            "idempotency record",
            &body,
        )?))),
        // Pruned between the two statements: as if it raced; run the decision again.
        None => Err(Stop::Contention(StoreError::Unavailable {
            reason: "an idempotency record vanished while it was read".into(),
            retryable: true,
        })),
    }
}

/// Writes events, each marked for webhook fan-out in the same statement when its merchant has an
/// endpoint. Returns whether any was marked.
pub(crate) async fn write_events(conn: &mut PgConnection, events: &[Event]) -> Result<bool, Stop> {
    let mut marked = false;
    for e in events {
        let n = sqlx::query(
            "WITH stored AS (INSERT INTO events (id, merchant_id, body) VALUES ($1, $2, $3)) \
             INSERT INTO webhook_fanout (event_id, merchant_id) \
             SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE merchant_id = $2)",
        )
        .bind(e.id.as_str())
        .bind(e.merchant_id.as_str())
        .bind(encode(e))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        marked |= n > 0;
    }
    Ok(marked)
}

/// Indexes `invoice` under `r` (a new bitcoin script is marked fresh, for the watcher), or
/// refuses the write when another invoice holds it.
async fn insert_lookup(conn: &mut PgConnection, r: &Lookup, invoice: &Invoice) -> Result<(), Stop> {
    let n = sqlx::query(
        "INSERT INTO lookups (key, kind, invoice_id, fresh) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(r.key())
    .bind(r.kind().prefix())
    .bind(invoice.id.as_str())
    .bind(r.kind() == LookupKind::BtcScript)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Stop::Refused(Refusal::DuplicateReference(r.clone())));
    }
    Ok(())
}

/// Replaces an invoice stored at `expected_version`, in the caller's transaction: the row is
/// locked and its version checked, then the invoice, its events and its posting are written.
pub(crate) async fn write_change(
    conn: &mut PgConnection,
    expected_version: u64,
    invoice: &Invoice,
    events: &[Event],
) -> Result<Wrote, Stop> {
    let row = sqlx::query("SELECT version, body FROM invoices WHERE id = $1 FOR UPDATE")
        .bind(invoice.id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Err(Stop::Refused(Refusal::Conflict));
    };
    if row.get::<i64, _>("version") != big(expected_version) {
        return Err(Stop::Refused(Refusal::Conflict));
    }
    let current: Invoice = decode("invoice", row.get("body"))?;
    // A reference the invoice did not have (a bitcoin address derived when the payer chose
    // bitcoin) is claimed with the change, or the change is refused.
    let before = current.lookups();
    for r in invoice.lookups().iter().filter(|r| !before.contains(r)) {
        insert_lookup(conn, r, invoice).await?;
    }
    sqlx::query(
        "UPDATE invoices SET version = $2, body = $3, \
         expiry_due = CASE WHEN $4 THEN expiry_due ELSE NULL END WHERE id = $1",
    )
    .bind(invoice.id.as_str())
    .bind(big(invoice.version))
    .bind(encode(invoice))
    .bind(awaits_expiry(invoice.status))
    .execute(&mut *conn)
    .await?;
    let fan_out = write_events(conn, events).await?;
    let posting = Posting::of(Some(&current), invoice);
    ledger::write_posting(conn, &invoice.merchant_id, &invoice.id, &posting).await?;
    Ok(Wrote {
        fan_out,
        payouts: posting.adds_payouts(),
    })
}

impl PgStore {
    /// One transaction: claim `dedupe` (if any), then apply `change` (if any).
    async fn write_update(
        &self,
        dedupe: Option<(Dedupe<'_>, &IdempotencyRecord)>,
        change: Option<(u64, &Invoice, &[Event])>,
    ) -> Result<Commit, StoreError> {
        let done = transact(|| async move {
            let mut tx = self.begin().await?;
            if let Some((key, record)) = dedupe {
                claim(&mut tx, key, record).await?;
            }
            let mut wrote = Wrote::default();
            if let Some((version, invoice, events)) = change {
                wrote = write_change(&mut tx, version, invoice, events).await?;
            }
            tx.commit().await?;
            Ok(wrote)
        })
        .await?;
        Ok(self.committed(done))
    }
}

/// A page of `limit` records from `rows` (fetched with [`limit_plus_one`]).
fn page_of<T: serde::de::DeserializeOwned>(
    rows: Vec<sqlx::postgres::PgRow>,
    limit: usize,
    what: &'static str,
) -> Result<Page<T>, StoreError> {
    let has_more = rows.len() > limit;
    let items = rows
        .iter()
        .take(limit)
        .map(|r| decode(what, r.get("body")))
        .collect::<Result<_, _>>()?;
    Ok(Page { items, has_more })
}

/// References and their invoices, from rows of `key, invoice_id`.
fn lookup_rows(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<(Lookup, InvoiceId)>, StoreError> {
    rows.iter()
        .map(|r| {
            let (key, id): (&str, &str) = (r.get("key"), r.get("invoice_id"));
            match (Lookup::parse(key), InvoiceId::parse(id)) {
                (Some(l), Some(i)) => Ok((l, i)),
                _ => Err(StoreError::Corrupt {
                    what: "lookup index",
                    reason: format!("bad entry {key}"),
                }),
            }
        })
        .collect()
}

/// A page size as a LIMIT, one more than asked to tell whether there are more.
fn limit_plus_one(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1
}

impl Invoices for PgStore {
    async fn create_invoice(
        &self,
        invoice: &Invoice,
        events: &[Event],
        idempotency: Option<IdempotencyWrite<'_>>,
    ) -> Result<Commit, StoreError> {
        // A new invoice has no payments, refunds or settlements: nothing for the ledger yet.
        debug_assert!(Posting::of(None, invoice).is_empty());
        let references = invoice.lookups();
        let body = encode(invoice);
        let idempotency = idempotency.as_ref();
        let (references, body) = (&references, &body);
        let done = transact(|| async move {
            let mut tx = self.begin().await?;
            if let Some(w) = idempotency {
                claim(&mut tx, Dedupe::Request(w.merchant_id, w.key), &w.record).await?;
            }
            for r in references {
                insert_lookup(&mut tx, r, invoice).await?;
            }
            sqlx::query(
                "INSERT INTO invoices (id, merchant_id, order_id, version, expiry_due, body) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(invoice.id.as_str())
            .bind(invoice.merchant_id.as_str())
            .bind(invoice.order_id.as_deref())
            .bind(big(invoice.version))
            .bind(awaits_expiry(invoice.status).then_some(invoice.expires_at.0))
            .bind(body)
            .execute(&mut *tx)
            .await?;
            let fan_out = write_events(&mut tx, events).await?;
            tx.commit().await?;
            Ok(Wrote {
                fan_out,
                payouts: false,
            })
        })
        .await?;
        Ok(self.committed(done))
    }

    async fn update_invoice(
        &self,
        expected_version: u64,
        invoice: &Invoice,
        events: &[Event],
        idempotency: Option<IdempotencyWrite<'_>>,
    ) -> Result<Commit, StoreError> {
        let dedupe = idempotency
            .as_ref()
            .map(|w| (Dedupe::Request(w.merchant_id, w.key), &w.record));
        self.write_update(dedupe, Some((expected_version, invoice, events)))
            .await
    }

    async fn invoice(&self, id: &InvoiceId) -> Result<Option<Invoice>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM invoices WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        body.map(|b| decode("invoice", &b)).transpose()
    }

    async fn invoice_by_lookup(&self, lookup: &Lookup) -> Result<Option<InvoiceId>, StoreError> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT invoice_id FROM lookups WHERE key = $1")
                .bind(lookup.key())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        id.map(|id| {
            InvoiceId::parse(&id).ok_or_else(|| StoreError::Corrupt {
                what: "reference index",
                reason: "bad invoice id".into(),
            })
        })
        .transpose()
    }

    async fn lookups_of(&self, kind: LookupKind) -> Result<Vec<(Lookup, InvoiceId)>, StoreError> {
        let rows = sqlx::query("SELECT key, invoice_id FROM lookups WHERE kind = $1 ORDER BY key")
            .bind(kind.prefix())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        lookup_rows(&rows)
    }

    async fn take_new_lookups(
        &self,
        kind: LookupKind,
    ) -> Result<Vec<(Lookup, InvoiceId)>, StoreError> {
        let rows = transact(|| async move {
            let mut tx = self.begin().await?;
            let rows = sqlx::query(
                "UPDATE lookups SET fresh = false WHERE kind = $1 AND fresh \
                 RETURNING key, invoice_id",
            )
            .bind(kind.prefix())
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(rows)
        })
        .await?
        .unwrap_or_default();
        lookup_rows(&rows)
    }

    async fn list_invoices(
        &self,
        merchant: &MerchantId,
        query: &InvoiceQuery,
    ) -> Result<Page<Invoice>, StoreError> {
        let before = query.starting_after.as_ref().map(InvoiceId::as_str);
        let rows = match &query.order_id {
            Some(order) => sqlx::query(
                "SELECT body FROM invoices WHERE merchant_id = $1 AND order_id = $2 \
                 AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
            )
            .bind(merchant.as_str())
            .bind(order),
            None => sqlx::query(
                "SELECT body FROM invoices WHERE merchant_id = $1 \
                 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            )
            .bind(merchant.as_str()),
        }
        .bind(before)
        .bind(limit_plus_one(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        page_of(rows, query.limit, "invoice")
    }

    async fn invoices_due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<InvoiceId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM invoices WHERE expiry_due IS NOT NULL AND expiry_due <= $1 \
             ORDER BY expiry_due, id LIMIT $2",
        )
        .bind(now.0)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        ids.iter()
            .map(|id| {
                InvoiceId::parse(id).ok_or_else(|| StoreError::Corrupt {
                    what: "expiry index",
                    reason: "bad invoice id".into(),
                })
            })
            .collect()
    }

    async fn expiry_handled(&self, invoice: &Invoice) -> Result<(), StoreError> {
        transact(|| async move {
            let mut tx = self.begin().await?;
            sqlx::query("UPDATE invoices SET expiry_due = NULL WHERE id = $1")
                .bind(invoice.id.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await?
        .ok();
        Ok(())
    }

    async fn list_events(
        &self,
        merchant: &MerchantId,
        starting_after: Option<&EventId>,
        limit: usize,
    ) -> Result<Page<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM events WHERE merchant_id = $1 \
             AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(merchant.as_str())
        .bind(starting_after.map(EventId::as_str))
        .bind(limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        page_of(rows, limit, "event")
    }

    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM events WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        body.map(|b| decode("event", &b)).transpose()
    }

    /// Allocated in the database (see [`PgStore::allocate_derivation_index`]): unique across every
    /// relay on it, and never handed out again, even after a crash.
    async fn next_derivation_index(&self, merchant: &MerchantId) -> Result<u32, StoreError> {
        self.allocate_derivation_index(merchant).await
    }
}

impl Idempotency for PgStore {
    async fn idempotency(
        &self,
        merchant: &MerchantId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM idempotency WHERE scope = $1 AND key = $2")
                .bind(merchant.as_str())
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        body.map(|b| decode("idempotency record", &b)).transpose()
    }

    async fn record_inbound(
        &self,
        key: &str,
        record: &IdempotencyRecord,
        change: Option<(u64, &Invoice, &[Event])>,
    ) -> Result<Commit, StoreError> {
        self.write_update(Some((Dedupe::Inbound(key), record)), change)
            .await
    }

    async fn prune_records(
        &self,
        idempotency_before: Timestamp,
        inbound_before: Timestamp,
    ) -> Result<(usize, usize), StoreError> {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let requests = sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
            .bind(idempotency_before.0)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        let inbound = sqlx::query("DELETE FROM inbound WHERE created_at < $1")
            .bind(inbound_before.0)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok((count(requests), count(inbound)))
    }
}
