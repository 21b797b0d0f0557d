//! Invoices, their events and indexes, and the idempotency and inbound records written with them.

use super::*;

impl Invoices for SledStore {
    async fn create_invoice(
        &self,
        invoice: &Invoice,
        events: &[Event],
        idempotency: Option<IdempotencyWrite<'_>>,
    ) -> Result<Commit, StoreError> {
        let i = &self.inner;
        // A new invoice has no payments, refunds or settlements: nothing for the ledger yet.
        debug_assert!(Posting::of(None, invoice).is_empty());
        let events = self.encode_events(events);
        let id = invoice.id.as_str().as_bytes();
        let value = encode(invoice);
        let by_merchant = id_key(&merchant_prefix(&invoice.merchant_id), invoice.id.as_str());
        let by_order = invoice
            .order_id
            .as_ref()
            .map(|o| id_key(&order_prefix(&invoice.merchant_id, o), invoice.id.as_str()));
        let references = invoice.lookups();
        let btc_index = derivation_counter(invoice);
        let idem = idempotency
            .as_ref()
            .map(|w| (idem_key(w.merchant_id, w.key), &w.record));
        let _gate = self.write_gate();
        let result = (
            &i.invoices,
            &i.invoices_by_merchant,
            &i.invoices_by_order,
            &i.expiries,
            &i.idempotency,
            &i.events,
            &i.events_by_merchant,
            &i.references,
            &i.counters,
            &i.webhook_fanout,
        )
            .transaction(
                |(inv, by_m, by_o, exp, idem_tx, ev, ev_m, refs, counters, fan)| {
                    if let Some((key, record)) = &idem {
                        Self::claim(idem_tx, key, record)?;
                    }
                    if let Some((key, next)) = &btc_index {
                        let stored = counters.get(key.as_slice())?.map_or(0, |b| decode_u64(&b));
                        if *next > stored {
                            counters.insert(key.as_slice(), &next.to_be_bytes())?;
                        }
                    }
                    for r in &references {
                        if refs.insert(r.key().as_bytes(), id)?.is_some() {
                            return Err(abort(Abort::DuplicateReference(r.clone())));
                        }
                    }
                    inv.insert(id, value.as_slice())?;
                    by_m.insert(by_merchant.as_slice(), &[])?;
                    if let Some(k) = &by_order {
                        by_o.insert(k.as_slice(), &[])?;
                    }
                    if awaits_expiry(invoice.status) {
                        exp.insert(expiry_key(invoice.expires_at, &invoice.id), &[])?;
                    }
                    Self::write_events(ev, ev_m, fan, &events)?;
                    Ok(())
                },
            );
        let done = self.finish(result);
        if matches!(done, Ok(Commit::Done)) {
            self.wake(&events, false);
        }
        done
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
            .map(|w| (idem_key(w.merchant_id, w.key), &w.record));
        self.write_update(
            &self.inner.idempotency,
            dedupe,
            Some((expected_version, invoice, events)),
        )
    }

    async fn invoice(&self, id: &InvoiceId) -> Result<Option<Invoice>, StoreError> {
        self.inner
            .invoices
            .get(id.as_str().as_bytes())?
            .map(|v| decode("invoice", &v))
            .transpose()
    }

    async fn invoice_by_lookup(&self, lookup: &Lookup) -> Result<Option<InvoiceId>, StoreError> {
        let Some(id) = self.inner.references.get(lookup.key().as_bytes())? else {
            return Ok(None);
        };
        std::str::from_utf8(&id)
            .ok()
            .and_then(InvoiceId::parse)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                what: "reference index",
                reason: "bad invoice id".into(),
            })
    }

    async fn lookups_of(&self, kind: LookupKind) -> Result<Vec<(Lookup, InvoiceId)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.references.scan_prefix(kind.prefix().as_bytes()) {
            let (k, v) = kv?;
            let corrupt = || StoreError::Corrupt {
                what: "lookup index",
                reason: format!("bad entry {}", String::from_utf8_lossy(&k)),
            };
            let id = std::str::from_utf8(&v)
                .ok()
                .and_then(InvoiceId::parse)
                .ok_or_else(corrupt)?;
            let lookup = std::str::from_utf8(&k)
                .ok()
                .and_then(Lookup::parse)
                .ok_or_else(corrupt)?;
            out.push((lookup, id));
        }
        Ok(out)
    }

    /// A sled store is open in one process only: its watcher hears of new invoices from the
    /// process, so there is never anything here.
    async fn take_new_lookups(
        &self,
        _kind: LookupKind,
    ) -> Result<Vec<(Lookup, InvoiceId)>, StoreError> {
        Ok(Vec::new())
    }

    async fn list_invoices(
        &self,
        merchant: &MerchantId,
        query: &InvoiceQuery,
    ) -> Result<Page<Invoice>, StoreError> {
        let i = &self.inner;
        let (index, prefix) = match &query.order_id {
            Some(order) => (&i.invoices_by_order, order_prefix(merchant, order)),
            None => (&i.invoices_by_merchant, merchant_prefix(merchant)),
        };
        let before = query.starting_after.as_ref().map(InvoiceId::as_str);
        Self::page_by_index(index, &prefix, before, query.limit, |id| {
            i.invoices
                .get(id)?
                .map(|v| decode("invoice", &v))
                .transpose()
        })
    }

    async fn invoices_due_for_expiry(
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
                .ok_or_else(|| StoreError::Corrupt {
                    what: "expiry index",
                    reason: "bad invoice id".into(),
                })?;
            out.push(id);
        }
        Ok(out)
    }

    async fn expiry_handled(&self, invoice: &Invoice) -> Result<(), StoreError> {
        let _gate = self.write_gate();
        self.inner
            .expiries
            .remove(expiry_key(invoice.expires_at, &invoice.id))?;
        self.inner.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn list_events(
        &self,
        merchant: &MerchantId,
        starting_after: Option<&EventId>,
        limit: usize,
    ) -> Result<Page<Event>, StoreError> {
        let i = &self.inner;
        Self::page_by_index(
            &i.events_by_merchant,
            &merchant_prefix(merchant),
            starting_after.map(EventId::as_str),
            limit,
            |id| i.events.get(id)?.map(|v| decode("event", &v)).transpose(),
        )
    }

    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        self.inner
            .events
            .get(id.as_str().as_bytes())?
            .map(|v| decode("event", &v))
            .transpose()
    }

    async fn next_derivation_index(&self, merchant: &MerchantId) -> Result<u32, StoreError> {
        // In memory: a write per allocation would cost as much as the invoice itself. The stored
        // counter moves in `create_invoice`'s transaction.
        let mut next = self
            .inner
            .next_index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = match next.get(merchant.as_str()) {
            Some(n) => *n,
            None => self
                .inner
                .counters
                .get(index_key(merchant))?
                .map_or(0, |b| decode_u64(&b)),
        };
        // Unhardened BIP32 indexes stop at 2^31.
        if n >= 1u64 << 31 {
            return Err(StoreError::Exhausted {
                what: "the descriptor's derivation indexes",
            });
        }
        next.insert(merchant.as_str().to_owned(), n + 1);
        Ok(n as u32)
    }
}

impl Idempotency for SledStore {
    async fn idempotency(
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

    async fn record_inbound(
        &self,
        key: &str,
        record: &IdempotencyRecord,
        change: Option<(u64, &Invoice, &[Event])>,
    ) -> Result<Commit, StoreError> {
        self.write_update(
            &self.inner.inbound,
            Some((key.as_bytes().to_vec(), record)),
            change,
        )
    }

    async fn prune_records(
        &self,
        idempotency_before: Timestamp,
        inbound_before: Timestamp,
    ) -> Result<(usize, usize), StoreError> {
        // A walk of two whole trees: off the async runtime.
        let s = self.clone();
        tokio::task::spawn_blocking(move || {
            Ok((
                s.prune_tree(&s.inner.idempotency, idempotency_before)?,
                s.prune_tree(&s.inner.inbound, inbound_before)?,
            ))
        })
        .await
        .map_err(|e| StoreError::Unavailable {
            reason: format!("the pruning task failed: {e}"),
            retryable: true,
        })?
    }
}
