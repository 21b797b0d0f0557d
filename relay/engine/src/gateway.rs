//! The card gateway seam and what the relay does with a gateway event.
//!
//! The API does not know the gateway's wire format: the binary supplies a [`CardGateway`] (the
//! Stripe-compatible adapter) that creates PaymentIntents and turns a signed webhook into a
//! verified [`GatewayEvent`]. [`Engine::record_gateway_event`](crate::Engine::record_gateway_event) is shared by the webhook route and the
//! reconciliation pass, so a missed webhook and a delivered one have the same effect, once.

use crate::apply::Attempt;
use relay_core::{CardIntent, Event, GatewayEvent, Lookup, Timestamp};
use relay_store::{Commit, IdempotencyRecord, Store, StoreError};
use sha2::Digest;
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a webhook was refused (400, nothing recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookRejection {
    SignatureMissing,
    SignatureInvalid,
    SignatureExpired,
    NotAnEvent,
}

/// A card gateway.
///
/// Contract: `create_intent` is safe to call again for the same invoice (the implementation
/// derives an idempotency key from the invoice id); `verify` checks the signature before it
/// parses anything.
pub trait CardGateway: Send + Sync + 'static {
    /// The gateway's name in the invoice JSON and in inbound event keys (`stripe`).
    fn name(&self) -> &'static str;

    fn create_intent<'a>(
        &'a self,
        invoice_id: &'a str,
        amount_minor: u64,
        currency: &'a str,
    ) -> BoxFuture<'a, Result<CardIntent, String>>;

    fn verify(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: Timestamp,
    ) -> Result<GatewayEvent, WebhookRejection>;

    /// Cancels a PaymentIntent nobody paid, so that it can no longer be confirmed. An error when
    /// the gateway refused (`refused`: the payer already paid it) or could not be reached.
    fn cancel_intent<'a>(
        &'a self,
        payment_intent: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// What the gateway says of the card behind `card_token` (its fingerprint and issuing
    /// country, where it gives them), before anything is charged: what the risk rules look at.
    fn inspect_card<'a>(
        &'a self,
        card_token: &'a str,
    ) -> BoxFuture<'a, Result<CardDetails, GatewayError>>;

    /// Charges the card the payer's browser tokenized (`card_token`, `tok_…` from the gateway's
    /// Stripe.js) on `payment_intent`, for the intent's own amount. With `manual_capture` the
    /// card is only authorized ([`CardAttempt::Authorized`]), for a reviewer to capture.
    fn pay_with_card<'a>(
        &'a self,
        payment_intent: &'a str,
        card_token: &'a str,
        card: &'a CardDetails,
        manual_capture: bool,
    ) -> BoxFuture<'a, Result<CardAttempt, GatewayError>>;

    /// Captures an authorized PaymentIntent in full; the gateway's webhook (or the returned event)
    /// says it succeeded. Safe to repeat.
    fn capture_intent<'a>(
        &'a self,
        payment_intent: &'a str,
    ) -> BoxFuture<'a, Result<Option<GatewayEvent>, GatewayError>>;

    /// What the gateway says of a PaymentIntent now, as the event its state stands for (`None`:
    /// nothing the relay acts on yet). Reconciliation applies it like a webhook.
    fn retrieve_intent<'a>(
        &'a self,
        payment_intent: &'a str,
    ) -> BoxFuture<'a, Result<Option<GatewayEvent>, String>>;

    /// Refunds `amount_minor` of a PaymentIntent; `key` (the relay's refund id) makes a retry
    /// refund once. Returns the gateway's refund id; the gateway's webhook confirms it.
    fn refund<'a>(
        &'a self,
        payment_intent: &'a str,
        amount_minor: u64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<String, GatewayError>>;
}

/// What became of a card charged from the checkout page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardAttempt {
    /// Charged: the event the gateway's webhook will also carry.
    Paid(GatewayEvent),
    /// The gateway is still working on it; its webhook will say.
    Processing,
    /// The card's bank asks the payer to authenticate (3-D Secure): the page hands the client
    /// secret to the gateway's Stripe.js, which finishes it.
    NeedsAction { client_secret: String },
    /// The card was declined; the payer may try another.
    Declined { code: String, message: String },
    /// Authorized, not captured (manual capture): the event (`PaymentAuthorized`) its webhook
    /// or reconciliation will also carry.
    Authorized(GatewayEvent),
}

/// A card as the gateway describes it before a charge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardDetails {
    /// The gateway's own id of the card (what the PaymentIntent is charged with).
    pub card: String,
    pub fingerprint: Option<String>,
    /// ISO 3166 alpha-2.
    pub country: Option<String>,
}

/// Why a gateway call did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub message: String,
    /// The gateway said no (it will say no again). Otherwise it could not be reached or failed
    /// on its side, and may have done it: retry (with the same key, for a refund).
    pub refused: bool,
}

impl GatewayError {
    /// The gateway could not be reached or failed on its side.
    pub fn unreachable(message: impl Into<String>) -> GatewayError {
        GatewayError {
            message: message.into(),
            refused: false,
        }
    }
}

/// What handling an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The invoice changed (events written).
    Applied,
    /// Recorded without effect: unknown intent, an event type the relay ignores, nothing new, or
    /// an event the invoice refused (logged).
    Recorded,
    /// Seen before: nothing written.
    Duplicate,
}

impl<S: Store> crate::Engine<S> {
    /// Records an event the relay learnt by asking the gateway itself (reconciliation, a charge
    /// or capture it just made), not from a signed webhook: its fingerprint is its id's.
    pub async fn record_fetched_event(
        &self,
        source: &str,
        event: &GatewayEvent,
    ) -> Result<Handled, StoreError> {
        let fingerprint: [u8; 32] = sha2::Sha256::digest(event.id.as_bytes()).into();
        self.record_gateway_event(source, event, fingerprint).await
    }

    /// Records `event` (keyed `{source}:{event id}`) and applies it to its invoice in one transaction.
    /// Shared by the webhook route and reconciliation: a missed webhook and a delivered one have the
    /// same effect, once.
    pub async fn record_gateway_event(
        &self,
        source: &str,
        event: &GatewayEvent,
        fingerprint: [u8; 32],
    ) -> Result<Handled, StoreError> {
        let (store, clock, ids) = (&self.store, self.clock.as_ref(), self.ids.as_ref());
        let key = &format!("{source}:{}", event.id);
        // Conflicts mean a watcher or another webhook changed the invoice meanwhile: re-read, re-apply.
        let handled = crate::apply::retry(|| async move {
        let now = clock.now();
        let mut outcome = "no invoice for this payment intent";
        let mut change = None;
        // `intent` and `input` are both present for the four acted-on event types, absent otherwise.
        let target = match (event.intent(), event.input()) {
            (Some(intent), Some(input)) => {
                match store.invoice_by_lookup(&Lookup::CardIntent(intent.to_owned())).await? {
                    Some(id) => store.invoice(&id).await?.map(|inv| (inv, input)),
                    None => None,
                }
            }
            _ => {
                outcome = "event type not acted on";
                None
            }
        };
        if let Some((mut invoice, input)) = target {
            let version = invoice.version;
            let observed = match &input {
                relay_core::invoice::InvoiceInput::Observe { reference, .. } => Some(reference.clone()),
                _ => None,
            };
            match invoice.apply(input, now) {
                Ok(mut t) if t.changed => {
                    outcome = "applied";
                    // A card charged without the checkout page (the merchant's own front end
                    // with the client secret): assessed on what the invoice tells.
                    if let Some(reference) = observed {
                        let payer = crate::risk::Payer::default();
                        self.assess_payment(&mut invoice, &reference, &payer, &mut t.events)
                            .await?;
                    }
                    let events = Event::for_invoice(&invoice, &t.events, now, || ids.event_id());
                    change = Some((version, invoice, events));
                }
                Ok(_) => outcome = "no change",
                Err(e) => {
                    tracing::warn!(target: "relay::card", event = %event.id, invoice = %invoice.id, error = %e, "gateway event refused by the invoice");
                    outcome = "refused by the invoice";
                }
            }
        }
        let record = IdempotencyRecord {
            fingerprint,
            status: 200,
            body: outcome.to_owned(),
            created_at: now,
        };
        let commit = store.record_inbound(
            key,
            &record,
            change.as_ref().map(|(v, inv, ev)| (*v, inv, ev.as_slice())),
        ).await?;
        Ok::<_, StoreError>(match commit {
            Commit::Done if change.is_some() => Attempt::Done(Handled::Applied),
            Commit::Done => Attempt::Done(Handled::Recorded),
            Commit::IdempotencyHit(_) => Attempt::Done(Handled::Duplicate),
            Commit::Conflict => Attempt::Conflict,
        })
    }).await?;
        handled.ok_or_else(|| StoreError::Unavailable {
            reason: "the invoice kept changing while a gateway event was applied".into(),
            retryable: true,
        })
    }
}
