//! Card reconciliation: what the relay asks the gateway on its own, so that a webhook that never
//! arrived (gateway down, endpoint unreachable) never leaves a paid invoice unpaid, a refund the
//! gateway never took is asked for again, and an invoice no longer payable cannot be charged.

use crate::apply::ApplyError;
use crate::gateway::Handled;
use crate::Engine;
use relay_core::invoice::InvoiceInput;
use relay_core::{Invoice, InvoiceId, MerchantId, PaymentRef, PaymentStatus};
use relay_store::{PayoutKind, Store, StoreError};
use std::collections::HashMap;

/// The invoice's PaymentIntent, if it has one without a final card payment.
fn unsettled_intent(invoice: &Invoice) -> Option<&str> {
    let intent = invoice.payment_intent()?;
    let settled = invoice.payments.iter().any(|p| {
        matches!(&p.reference, PaymentRef::Card(pi) if pi == intent)
            && matches!(p.status, PaymentStatus::Confirmed | PaymentStatus::Disputed)
    });
    (!settled).then_some(intent)
}

impl<S: Store> Engine<S> {
    /// The invoices of `open` (soonest expiry first) whose card payment reconciliation should
    /// look at this pass: those with a PaymentIntent and no final card payment, at most
    /// `per_merchant` of each merchant's, so one merchant's many invoices cannot starve the
    /// others'.
    pub async fn reconcile_share(
        &self,
        open: &[InvoiceId],
        per_merchant: usize,
    ) -> Result<Vec<InvoiceId>, StoreError> {
        let mut taken: HashMap<MerchantId, usize> = HashMap::new();
        let mut out = Vec::new();
        for id in open {
            let Some(invoice) = self.store.invoice(id).await? else {
                continue;
            };
            if unsettled_intent(&invoice).is_none() {
                continue;
            }
            let n = taken.entry(invoice.merchant_id.clone()).or_default();
            if *n < per_merchant {
                *n += 1;
                out.push(invoice.id);
            }
        }
        metrics::gauge!("relay_card_reconcile_pass_size").set(out.len() as f64);
        Ok(out)
    }

    /// Retrieves the PaymentIntent of each invoice in `invoices` that has one and no final card
    /// payment yet, and applies what the gateway says. Returns how many invoices changed.
    pub async fn reconcile_cards(&self, invoices: &[InvoiceId]) -> Result<usize, StoreError> {
        let Some(gateway) = &self.card else {
            return Ok(0);
        };
        let mut changed = 0;
        for id in invoices {
            let Some(invoice) = self.store.invoice(id).await? else {
                continue;
            };
            let Some(intent) = unsettled_intent(&invoice).map(str::to_owned) else {
                continue;
            };
            metrics::counter!("relay_card_intents_retrieved_total").increment(1);
            let event = match gateway.retrieve_intent(&intent).await {
                Ok(Some(event)) => event,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(target: "relay::card", %intent, error = %e, "reconciliation could not retrieve the intent");
                    continue;
                }
            };
            if self.record_fetched_event(gateway.name(), &event).await? == Handled::Applied {
                tracing::info!(target: "relay::card", %intent, invoice = %invoice.id, "payment found by reconciliation (its webhook never came)");
                changed += 1;
            }
        }
        if changed > 0 {
            self.store.durable().await?;
        }
        Ok(changed)
    }

    /// Asks the gateway again for every card refund it has not accepted (the relay crashed, or
    /// the gateway could not be reached, when the refund was requested) and older than
    /// `min_age_secs`. The gateway's idempotency key is the refund id, so it refunds once however
    /// often it is asked. Returns how many it accepted or refused.
    pub async fn resume_card_refunds(&self, min_age_secs: i64) -> Result<usize, StoreError> {
        let Some(gateway) = &self.card else {
            return Ok(0);
        };
        let mut done = 0;
        for w in self.store.payouts(PayoutKind::CardRefund).await? {
            let Some(invoice) = self.store.invoice(&w.invoice).await? else {
                continue;
            };
            let Some(r) = invoice.refunds.iter().find(|r| r.id == w.record) else {
                continue;
            };
            if r.created_at.0 > self.clock.now().0 - min_age_secs {
                continue;
            }
            let (Some(intent), Ok(amount)) = (
                invoice.payment_intent().map(str::to_owned),
                u64::try_from(r.amount.0),
            ) else {
                continue;
            };
            let input = match gateway.refund(&intent, amount, &r.id).await {
                Ok(gateway_refund) => InvoiceInput::RefundSubmitted {
                    id: r.id.clone(),
                    gateway_refund,
                },
                Err(e) if e.refused => InvoiceInput::RefundFailed {
                    id: r.id.clone(),
                    reason: format!("the card gateway refused it: {}", e.message),
                },
                Err(e) => {
                    tracing::warn!(target: "relay::card", refund = %r.id, error = %e.message, "the gateway is still unreachable for a refund");
                    continue;
                }
            };
            tracing::info!(target: "relay::card", refund = %r.id, "refund handed to the gateway again");
            match self.apply(&w.invoice, &input).await {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(ApplyError::Store(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(target: "relay::card", refund = %r.id, error = %e, "the refund's outcome could not be recorded")
                }
            }
        }
        if done > 0 {
            self.store.durable().await?;
        }
        Ok(done)
    }

    /// Cancels at the gateway the PaymentIntent of every invoice that expired or was canceled
    /// unpaid by card (the store's `card-cancel` work), so that a payer can no longer be charged
    /// for it; a cancel the gateway could not be asked for is asked again next pass. A payer who
    /// confirmed at the last moment makes the gateway refuse: that invoice is reconciled at once
    /// (the gateway's own charge time decides whether the payment was in time), and its intent
    /// is closed either way. Returns how many intents were closed.
    pub async fn close_card_intents(&self) -> Result<usize, StoreError> {
        let Some(gateway) = &self.card else {
            return Ok(0);
        };
        let mut closed = 0;
        for w in self.store.payouts(PayoutKind::CardCancel).await? {
            let Some(invoice) = self.store.invoice(&w.invoice).await? else {
                continue;
            };
            let Some(intent) = invoice.intent_to_close().map(str::to_owned) else {
                continue;
            };
            match gateway.cancel_intent(&intent).await {
                Ok(()) => {
                    tracing::info!(target: "relay::card", invoice = %invoice.id, %intent, "canceled the PaymentIntent of an invoice no longer payable")
                }
                Err(e) if e.refused => {
                    tracing::warn!(target: "relay::card", invoice = %invoice.id, %intent, error = %e.message, "the gateway would not cancel the PaymentIntent of an invoice no longer payable; reconciling it");
                    self.reconcile_cards(std::slice::from_ref(&invoice.id))
                        .await?;
                }
                Err(e) => {
                    tracing::warn!(target: "relay::card", invoice = %invoice.id, %intent, error = %e.message, "could not cancel the PaymentIntent of an invoice no longer payable; will ask again");
                    continue;
                }
            }
            match self.apply(&w.invoice, &InvoiceInput::IntentClosed).await {
                Ok(_) => closed += 1,
                Err(ApplyError::Store(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(target: "relay::card", invoice = %invoice.id, error = %e, "recording the closed intent failed")
                }
            }
        }
        if closed > 0 {
            self.store.durable().await?;
        }
        Ok(closed)
    }
}
