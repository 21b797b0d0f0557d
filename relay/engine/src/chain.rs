//! What both chain watchers do with one step: apply its observations to fresh copies of their
//! invoices and store those with the watcher's own records and cursor, in one transaction, redone
//! when an invoice changed concurrently.

use crate::apply::{retry, Attempt};
use crate::risk::{review_deadline, Payer};
use crate::Engine;
use relay_core::invoice::InvoiceInput;
use relay_core::{Event, Invoice, InvoiceId};
use relay_store::{ChainWrite, Commit, Store, StoreError};
use std::collections::BTreeMap;

/// Why a watcher step was not stored; the watcher redoes it from its last stored cursor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainStepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Invoices kept changing under every attempt.
    #[error("invoices kept changing while the {chain} watcher wrote; will retry")]
    Busy { chain: String },
}

impl<S: Store> Engine<S> {
    /// Stores `write` (cursor and tracking records; its `invoices` are filled here) with the changes
    /// `input_for` derives from each invoice's observations. `describe` names an observation in logs.
    /// A payment seen for the first time is assessed on its merchant's risk rules, as its payer
    /// (`payer_of` the observation) stands, in the same write. Returns how many invoices changed.
    pub async fn commit_chain_step<O>(
        &self,
        chain: &str,
        write: ChainWrite,
        by_invoice: &BTreeMap<InvoiceId, Vec<O>>,
        input_for: impl Fn(&O, &Invoice) -> Option<InvoiceInput>,
        payer_of: impl Fn(&O) -> Payer,
        describe: impl Fn(&O) -> String,
    ) -> Result<usize, ChainStepError> {
        let (store, clock, ids) = (&self.store, self.clock.as_ref(), self.ids.as_ref());
        let rates = self.rates.as_ref();
        let (write, input_for, describe) = (&write, &input_for, &describe);
        let payer_of = &payer_of;
        let changed = retry(|| async move {
            let now = clock.now();
            let mut write = write.clone();
            write.invoices.clear();
            for (id, observations) in by_invoice {
                let Some(mut invoice) = store.invoice(id).await? else {
                    tracing::error!(target: "relay::chain", chain, invoice = %id, "watched invoice is missing");
                    continue;
                };
                let version = invoice.version;
                let mut kinds = Vec::new();
                for o in observations {
                    let Some(input) = input_for(o, &invoice) else {
                        continue;
                    };
                    let observed = match &input {
                        InvoiceInput::Observe { reference, .. } => Some(reference.clone()),
                        _ => None,
                    };
                    match invoice.apply(input, now) {
                        Ok(t) => kinds.extend(t.events),
                        Err(e) => {
                            tracing::warn!(target: "relay::chain", chain, invoice = %id, observation = %describe(o), error = %e, "observation not applied")
                        }
                    }
                    if let Some(reference) = observed {
                        self.assess_payment(&mut invoice, &reference, &payer_of(o), &mut kinds)
                            .await?;
                    }
                }
                price_arrivals(&mut invoice, rates, now, &mut kinds);
                if invoice.version != version {
                    let events = Event::for_invoice(&invoice, &kinds, now, || ids.event_id());
                    write.invoices.push((version, invoice, events));
                }
            }
            Ok::<_, StoreError>(match store.commit_chain(chain, &write).await? {
                Commit::Conflict => Attempt::Conflict,
                // Chain writes carry no idempotency key: anything else is done.
                _ => Attempt::Done(write.invoices.len()),
            })
        }).await?;
        changed.ok_or_else(|| ChainStepError::Busy {
            chain: chain.to_owned(),
        })
    }
}

impl<S: Store> Engine<S> {
    /// Assesses payment `reference` of `invoice` by `payer`, if it is live and was never
    /// assessed, and applies the assessment (opening its review if the rules ask for one).
    pub async fn assess_payment(
        &self,
        invoice: &mut Invoice,
        reference: &relay_core::PaymentRef,
        payer: &Payer,
        kinds: &mut Vec<relay_core::EventType>,
    ) -> Result<(), StoreError> {
        let Some(p) = invoice.payments.iter().find(|p| p.reference == *reference) else {
            return Ok(());
        };
        if p.risk.is_some() || !p.status.is_live() {
            return Ok(());
        }
        let method = p.method;
        // A card already charged (without the page's door) is held until someone decides: no
        // clock refunds it.
        let charged_card = method == relay_core::Method::Card && p.status.is_final();
        let worth = invoice.credit(method, p.amount);
        let worth = u128::try_from(worth).unwrap_or(u128::MAX);
        let signals = relay_core::risk::Signals::of(invoice, method, payer.clone());
        let assessment = self
            .assess(
                &invoice.merchant_id,
                &signals,
                &reference.to_string(),
                worth,
            )
            .await?;
        let now = self.clock.now();
        let input = InvoiceInput::Assess {
            reference: reference.clone(),
            deadline: review_deadline(invoice, method, now).filter(|_| !charged_card),
            assessment,
        };
        match invoice.apply(input, now) {
            Ok(t) => kinds.extend(t.events),
            Err(e) => {
                tracing::warn!(target: "relay::risk", invoice = %invoice.id, %reference, error = %e, "assessment not applied")
            }
        }
        Ok(())
    }
}

/// Prices the payments of `invoice` that arrived after their quote expired, at the current rate
/// (with the merchant's spread, as its quote had): what they are worth decides the invoice. With
/// no usable rate now, they wait (counting for nothing, the invoice processing) and are priced at
/// the watcher's next look at them.
pub fn price_arrivals(
    invoice: &mut Invoice,
    rates: &dyn relay_core::RateSource,
    now: relay_core::Timestamp,
    kinds: &mut Vec<relay_core::EventType>,
) {
    let waiting: Vec<_> = invoice
        .awaiting_rate()
        .filter_map(|p| {
            let q = invoice.quote_for(p.method)?;
            Some((
                p.reference.clone(),
                q.due.asset.code.clone(),
                q.rate.spread_bps,
            ))
        })
        .collect();
    for (reference, asset, spread) in waiting {
        match rates.quote_rate(&asset, &invoice.price.asset.code) {
            Ok(rate) => {
                let rate = rate.with_spread(spread);
                match invoice.apply(InvoiceInput::Reprice { reference, rate }, now) {
                    Ok(t) => kinds.extend(t.events),
                    Err(e) => {
                        tracing::warn!(target: "relay::rates", invoice = %invoice.id, error = %e, "pricing a payment failed")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(target: "relay::rates", invoice = %invoice.id, %reference, error = ?e, "no rate now for a payment that arrived after its quote expired; it waits")
            }
        }
    }
}
