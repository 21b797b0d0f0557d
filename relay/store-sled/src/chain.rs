//! The chain watchers' cursors and tracking records, written with the invoice changes of a step.

use super::*;

impl ChainState for SledStore {
    async fn chain_cursor(&self, chain: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .inner
            .chains
            .get(concat(chain.as_bytes(), b"/cursor"))?
            .map(|v| v.to_vec()))
    }

    async fn chain_tracked(
        &self,
        chain: &str,
    ) -> Result<Vec<relay_store::TrackedRecord>, StoreError> {
        let prefix = concat(chain.as_bytes(), b"/t/");
        self.inner
            .chains
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k[prefix.len()..].to_vec(), v.to_vec()))
            })
            .collect()
    }

    async fn commit_chain(&self, chain: &str, write: &ChainWrite) -> Result<Commit, StoreError> {
        let i = &self.inner;
        let prefix = concat(chain.as_bytes(), b"/t/");
        let cursor_key = concat(chain.as_bytes(), b"/cursor");
        let invoices: Vec<EncodedChange> = write
            .invoices
            .iter()
            .map(|(version, invoice, events)| self.encode_change(*version, invoice, events))
            .collect();
        let added = std::sync::atomic::AtomicBool::new(false);
        let _gate = self.write_gate();
        let result = (
            &i.invoices,
            &i.expiries,
            &i.events,
            &i.events_by_merchant,
            &i.chains,
            &i.webhook_fanout,
            &i.ledger,
            &i.ledger_entries,
            &i.payouts,
            &i.references,
            &i.counters,
        )
            .transaction(
                |(inv, exp, ev, ev_m, chains, fan, led, led_e, pay, refs, counters)| {
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
                    let mut any = false;
                    for change in &invoices {
                        any |= t.write(change)?;
                    }
                    added.store(any, Ordering::SeqCst);
                    for key in &write.delete {
                        chains.remove(concat(&prefix, key))?;
                    }
                    for (key, value) in &write.put {
                        chains.insert(concat(&prefix, key), value.as_slice())?;
                    }
                    chains.insert(cursor_key.as_slice(), write.cursor.as_slice())?;
                    Ok(())
                },
            );
        let done = self.finish(result);
        if matches!(done, Ok(Commit::Done)) {
            let events: Vec<EncodedEvent> = invoices.into_iter().flat_map(|c| c.events).collect();
            self.wake(&events, added.load(Ordering::SeqCst));
        }
        done
    }
}
