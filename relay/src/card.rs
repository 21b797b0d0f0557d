//! The card rail in the binary: the Stripe-compatible adapter behind the API's `CardGateway`
//! seam, and reconciliation — retrieving the PaymentIntents of payable invoices so that a webhook
//! that never arrived (gateway down, endpoint unreachable) never leaves a paid invoice unpaid.

use relay_card::{GatewayClient, SignatureError};
use relay_core::invoice::InvoiceInput;
use relay_core::{CardIntent, Clock, GatewayEvent, InvoiceId, PaymentStatus, Timestamp};
use relay_engine::gateway::{
    apply_gateway_event, BoxFuture, CardGateway, Handled, WebhookRejection,
};
use relay_engine::IdSource;
use relay_store::{Store, StoreError};
use sha2::{Digest, Sha256};

pub struct StripeGateway {
    pub client: GatewayClient,
    /// Accepted webhook secrets: more than one while rotating.
    pub webhook_secrets: Vec<String>,
    /// Refunds this process got the gateway to take, by refund id, held while one is asked for:
    /// the API and the reconciliation pass never ask twice for the same refund, even with a
    /// gateway that ignores idempotency keys (localstripe does).
    pub refunds_taken: tokio::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl CardGateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn create_intent<'a>(
        &'a self,
        invoice_id: &'a str,
        amount_minor: u64,
        currency: &'a str,
    ) -> BoxFuture<'a, Result<CardIntent, String>> {
        Box::pin(async move {
            let pi = self
                .client
                .create_payment_intent(invoice_id, amount_minor, currency)
                .await
                .map_err(|e| e.to_string())?;
            Ok(CardIntent {
                gateway: "stripe".into(),
                client_secret: pi.client_secret.clone().unwrap_or_default(),
                payment_intent: pi.id,
            })
        })
    }

    fn cancel_intent<'a>(&'a self, payment_intent: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.client
                .cancel_payment_intent(payment_intent)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn refund<'a>(
        &'a self,
        payment_intent: &'a str,
        amount_minor: u64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<String, relay_engine::gateway::RefundError>> {
        Box::pin(async move {
            let mut taken = self.refunds_taken.lock().await;
            if let Some(id) = taken.get(key) {
                return Ok(id.clone());
            }
            let ambiguous = |e: relay_card::GatewayError| relay_engine::gateway::RefundError {
                refused: e.is_refusal(),
                message: e.to_string(),
            };
            // Asked before, and the answer lost (a crash, a 5xx, a cut-off body): the gateway
            // may hold it already. Only a refund it does not have is asked for.
            if let Some(id) = self
                .client
                .find_refund(payment_intent, key)
                .await
                .map_err(|e| relay_engine::gateway::RefundError {
                    refused: false,
                    message: e.to_string(),
                })?
            {
                taken.insert(key.to_owned(), id.clone());
                return Ok(id);
            }
            let refund = self
                .client
                .refund(payment_intent, amount_minor, key)
                .await
                .map_err(ambiguous)?;
            let id = refund["id"].as_str().unwrap_or_default().to_owned();
            taken.insert(key.to_owned(), id.clone());
            Ok(id)
        })
    }

    fn verify(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: Timestamp,
    ) -> Result<GatewayEvent, WebhookRejection> {
        let secrets: Vec<&str> = self.webhook_secrets.iter().map(String::as_str).collect();
        relay_card::verify_signature(
            signature,
            body,
            &secrets,
            now.0,
            relay_card::DEFAULT_TOLERANCE_SECS,
        )
        .map_err(|e| match e {
            SignatureError::Missing => WebhookRejection::SignatureMissing,
            SignatureError::Stale { .. } => WebhookRejection::SignatureExpired,
            _ => WebhookRejection::SignatureInvalid,
        })?;
        relay_card::parse_event(body).ok_or(WebhookRejection::NotAnEvent)
    }
}

/// Asks the gateway again for every card refund it has not accepted (the relay crashed, or the
/// gateway could not be reached, when the refund was requested) and older than `min_age_secs`.
/// The gateway's idempotency key is the refund id, so it refunds once however often it is asked.
/// Returns how many it accepted or refused.
pub async fn resume_refunds<S: Store>(
    store: &S,
    gateway: &StripeGateway,
    clock: &dyn Clock,
    ids: &IdSource,
    min_age_secs: i64,
) -> Result<usize, StoreError> {
    let mut done = 0;
    for w in store.payouts(relay_store::PayoutKind::CardRefund).await? {
        let Some(invoice) = store.invoice(&w.invoice).await? else {
            continue;
        };
        let Some(r) = invoice.refunds.iter().find(|r| r.id == w.record) else {
            continue;
        };
        if r.created_at.0 > clock.now().0 - min_age_secs {
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
        match relay_engine::apply::apply_input(store, clock, ids, &w.invoice, &input).await {
            Ok(true) => done += 1,
            Ok(false) => {}
            Err(relay_engine::apply::ApplyError::Store(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(target: "relay::card", refund = %r.id, error = %e, "the refund's outcome could not be recorded")
            }
        }
    }
    if done > 0 {
        store.durable().await?;
    }
    Ok(done)
}

/// The invoices of `open` (soonest expiry first) whose card payment reconciliation should look
/// at this pass: those with a PaymentIntent and no final card payment, at most `per_merchant`
/// of each merchant's.
pub async fn fair_share<S: Store>(
    store: &S,
    open: &[InvoiceId],
    per_merchant: usize,
) -> Result<Vec<InvoiceId>, StoreError> {
    let mut taken: std::collections::HashMap<relay_core::MerchantId, usize> = Default::default();
    let mut out = Vec::new();
    for id in open {
        let Some(invoice) = store.invoice(id).await? else {
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

/// The invoice's PaymentIntent, if it has one without a final card payment.
fn unsettled_intent(invoice: &relay_core::Invoice) -> Option<&str> {
    let intent = invoice.payment_intent()?;
    let settled = invoice.payments.iter().any(|p| {
        p.reference == intent
            && matches!(p.status, PaymentStatus::Confirmed | PaymentStatus::Disputed)
    });
    (!settled).then_some(intent)
}

/// Retrieves the PaymentIntent of each invoice in `invoices` that has one and no final card
/// payment yet, and applies what the gateway says. Returns how many invoices changed.
pub async fn reconcile<S: Store>(
    store: &S,
    gateway: &StripeGateway,
    clock: &dyn Clock,
    ids: &IdSource,
    invoices: &[InvoiceId],
) -> Result<usize, StoreError> {
    let mut changed = 0;
    for id in invoices {
        let Some(invoice) = store.invoice(id).await? else {
            continue;
        };
        let Some(intent) = unsettled_intent(&invoice).map(str::to_owned) else {
            continue;
        };
        metrics::counter!("relay_card_intents_retrieved_total").increment(1);
        let pi = match gateway.client.retrieve_payment_intent(&intent).await {
            Ok(pi) => pi,
            Err(e) => {
                tracing::warn!(target: "relay::card", %intent, error = %e, "reconciliation could not retrieve the intent");
                continue;
            }
        };
        let Some(event) = pi.as_event() else {
            continue;
        };
        let fingerprint: [u8; 32] = Sha256::digest(event.id.as_bytes()).into();
        if apply_gateway_event(store, clock, ids, "stripe", &event, fingerprint).await?
            == Handled::Applied
        {
            tracing::info!(target: "relay::card", %intent, invoice = %invoice.id, "payment found by reconciliation (its webhook never came)");
            changed += 1;
        }
    }
    if changed > 0 {
        store.durable().await?;
    }
    Ok(changed)
}

/// Cancels at the gateway the PaymentIntent of every invoice that expired or was canceled
/// unpaid by card (the store's `card-cancel` work), so that a payer can no longer be charged for
/// it; a cancel the gateway could not be asked for is asked again next pass. A payer who
/// confirmed at the last moment makes the gateway refuse: that invoice is reconciled at once
/// (the gateway's own charge time decides whether the payment was in time), and its intent is
/// closed either way. Returns how many intents were closed.
pub async fn close_intents<S: Store>(
    store: &S,
    gateway: &StripeGateway,
    clock: &dyn Clock,
    ids: &IdSource,
) -> Result<usize, StoreError> {
    let mut closed = 0;
    for w in store.payouts(relay_store::PayoutKind::CardCancel).await? {
        let Some(invoice) = store.invoice(&w.invoice).await? else {
            continue;
        };
        let Some(intent) = invoice.intent_to_close().map(str::to_owned) else {
            continue;
        };
        match gateway.client.cancel_payment_intent(&intent).await {
            Ok(_) => {
                tracing::info!(target: "relay::card", invoice = %invoice.id, %intent, "canceled the PaymentIntent of an invoice no longer payable")
            }
            Err(e) if e.is_refusal() => {
                tracing::warn!(target: "relay::card", invoice = %invoice.id, %intent, error = %e, "the gateway would not cancel the PaymentIntent of an invoice no longer payable; reconciling it");
                reconcile(
                    store,
                    gateway,
                    clock,
                    ids,
                    std::slice::from_ref(&invoice.id),
                )
                .await?;
            }
            Err(e) => {
                tracing::warn!(target: "relay::card", invoice = %invoice.id, %intent, error = %e, "could not cancel the PaymentIntent of an invoice no longer payable; will ask again");
                continue;
            }
        }
        match relay_engine::apply::apply_input(
            store,
            clock,
            ids,
            &w.invoice,
            &InvoiceInput::IntentClosed,
        )
        .await
        {
            Ok(_) => closed += 1,
            Err(relay_engine::apply::ApplyError::Store(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(target: "relay::card", invoice = %invoice.id, error = %e, "recording the closed intent failed")
            }
        }
    }
    if closed > 0 {
        store.durable().await?;
    }
    Ok(closed)
}
