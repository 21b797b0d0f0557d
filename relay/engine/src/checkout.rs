//! What a payer may do from the checkout page, with nothing but the page's token: find the
//! invoice, and pay it by card. Who can trigger this: anyone holding the link. What they can do
//! with it: charge *their own* card the invoice's price on the invoice's own PaymentIntent, and
//! only while nothing has been paid and the invoice is open — never another amount, another
//! invoice's intent, or a second charge.

use crate::apply::{retry, Attempt};
use crate::gateway::{CardAttempt, GatewayError};
use crate::invoices::InvoiceError;
use crate::risk::Payer;
use relay_core::invoice::InvoiceInput;
use relay_core::risk::RiskAction;
use relay_core::{CardRefusal, Invoice, Lookup, Method};
use relay_store::{Commit, Store, StoreError};

/// Whether `token` has the shape of a checkout token (`cs_` and 32 hex digits): anything else is
/// not looked up.
pub fn is_checkout_token(token: &str) -> bool {
    token.len() == 35
        && token.starts_with("cs_")
        && token[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `token` has the shape of a gateway card token (`tok_` and up to 251 letters, digits
/// or `_`): it goes into the gateway's URL, so nothing else does.
pub fn is_card_token(token: &str) -> bool {
    token.len() <= 255
        && token.strip_prefix("tok_").is_some_and(|t| {
            !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// A card charged from the checkout page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardPaid {
    /// Charged, and the invoice knows it.
    Paid,
    /// The gateway is still working; its webhook will say.
    Processing,
    /// The payer must authenticate with their bank: hand `client_secret` to Stripe.js.
    NeedsAction { client_secret: String },
    /// Authorized only, held for the merchant's review: captured if approved, released if not.
    InReview,
}

/// Why a card was not charged.
#[derive(Debug)]
pub enum CardPayError {
    /// No invoice has this checkout token.
    NotFound,
    /// The relay has no card gateway.
    NoGateway,
    /// The invoice takes no card now (see [`CardRefusal`]).
    Refused(CardRefusal),
    /// The card was declined.
    Declined {
        code: String,
        message: String,
    },
    /// The merchant's risk rules (or a sanctions list) block this payment: nothing was charged.
    Blocked {
        reasons: Vec<relay_core::risk::Reason>,
    },
    /// The gateway refused the request (a used or unknown card token) or could not be reached.
    Gateway(GatewayError),
    Store(StoreError),
}

impl From<StoreError> for CardPayError {
    fn from(e: StoreError) -> Self {
        CardPayError::Store(e)
    }
}

impl<S: Store> crate::Engine<S> {
    /// The invoice whose checkout page has `token`.
    pub async fn checkout_invoice(&self, token: &str) -> Result<Option<Invoice>, StoreError> {
        if !is_checkout_token(token) {
            return Ok(None);
        }
        let lookup = Lookup::Checkout(token.to_owned());
        let Some(id) = self.store.invoice_by_lookup(&lookup).await? else {
            return Ok(None);
        };
        self.store.invoice(&id).await
    }

    /// Charges the card the payer's browser tokenized on the invoice of checkout `token`, if it
    /// takes a card now and the merchant's risk rules let it: blocked, nothing is charged;
    /// to review, the card is only authorized (manual capture) and the payment held for the
    /// merchant. A charge that went through is applied at once, as its webhook would be (which
    /// then finds it done). `client` is the payer's address (velocity, lists).
    pub async fn pay_by_card(
        &self,
        token: &str,
        card_token: &str,
        client: Option<&str>,
    ) -> Result<CardPaid, CardPayError> {
        let invoice = self
            .checkout_invoice(token)
            .await?
            .ok_or(CardPayError::NotFound)?;
        let gateway = self.card.as_ref().ok_or(CardPayError::NoGateway)?;
        let intent = invoice
            .card_payable(self.clock.now())
            .map_err(CardPayError::Refused)?
            .payment_intent
            .clone();
        let card = gateway
            .inspect_card(card_token)
            .await
            .map_err(CardPayError::Gateway)?;
        let payer = Payer {
            card_fingerprint: card.fingerprint.clone(),
            card_country: card.country.clone(),
            ip: client.map(str::to_owned),
            ..Payer::default()
        };
        let signals = relay_core::risk::Signals::of(&invoice, Method::Card, payer);
        let worth = u128::try_from(invoice.price.amount.0).unwrap_or(u128::MAX);
        let merchant = &invoice.merchant_id;
        let assessment = self.assess(merchant, &signals, card_token, worth).await?;
        if assessment.action == RiskAction::Block {
            metrics::counter!("relay_checkout_card_blocked_total").increment(1);
            return Err(CardPayError::Blocked {
                reasons: assessment.reasons,
            });
        }
        let review = assessment.action == RiskAction::Review;
        metrics::counter!("relay_checkout_card_attempts_total").increment(1);
        // Stored before the card is confirmed: the card payment takes it when it is recorded,
        // whichever way the news comes (this answer, a webhook, reconciliation after 3-D Secure).
        let assessed = InvoiceInput::CardAssessed {
            assessment: Some(assessment),
        };
        self.apply(&invoice.id, &assessed)
            .await
            .map_err(apply_error)?;
        let recorded = match gateway
            .pay_with_card(&intent, card_token, &card, review)
            .await
            .map_err(CardPayError::Gateway)?
        {
            CardAttempt::Paid(event) => (event, CardPaid::Paid),
            CardAttempt::Authorized(event) => (event, CardPaid::InReview),
            CardAttempt::Processing => return Ok(CardPaid::Processing),
            CardAttempt::NeedsAction { client_secret } => {
                return Ok(CardPaid::NeedsAction { client_secret })
            }
            CardAttempt::Declined { code, message } => {
                metrics::counter!("relay_checkout_card_declines_total").increment(1);
                let forget = InvoiceInput::CardAssessed { assessment: None };
                self.apply(&invoice.id, &forget)
                    .await
                    .map_err(apply_error)?;
                if let Some(fingerprint) = &card.fingerprint {
                    self.record_decline(merchant, fingerprint, card_token)
                        .await?;
                }
                return Err(CardPayError::Declined { code, message });
            }
        };
        // Applied at once, as its webhook would be (which then finds it done).
        let (event, paid) = recorded;
        self.record_fetched_event(gateway.name(), &event).await?;
        self.store.durable().await?;
        Ok(paid)
    }
}

fn apply_error(e: crate::apply::ApplyError) -> CardPayError {
    match e {
        crate::apply::ApplyError::Store(e) => CardPayError::Store(e),
        other => CardPayError::Gateway(GatewayError::unreachable(other.to_string())),
    }
}

/// Why a payer's choice of method was refused.
#[derive(Debug)]
pub enum ChooseError {
    /// No invoice has this checkout token.
    NotFound,
    /// The invoice does not offer this method.
    NotOffered,
    /// The invoice can no longer be paid.
    NotOpen,
    /// Deriving or storing the address failed.
    Failed(InvoiceError),
}

impl From<StoreError> for ChooseError {
    fn from(e: StoreError) -> Self {
        ChooseError::Failed(InvoiceError::Store(e))
    }
}

impl<S: Store> crate::Engine<S> {
    /// The payer of checkout `token` chose `method`. For bitcoin on an invoice whose address is
    /// derived on demand, this is when it is derived and stored (indexed in the same write, and
    /// watched from then on); a second choice finds it there. Returns the invoice as it stands.
    pub async fn choose_method(&self, token: &str, method: Method) -> Result<Invoice, ChooseError> {
        let found = self
            .checkout_invoice(token)
            .await?
            .ok_or(ChooseError::NotFound)?;
        if found.quote_for(method).is_none() {
            return Err(ChooseError::NotOffered);
        }
        if !(method == Method::Bitcoin && found.awaits_bitcoin_address()) {
            return Ok(found);
        }
        let merchant = self
            .store
            .merchant(&found.merchant_id)
            .await?
            .ok_or(ChooseError::NotFound)?;
        let id = found.id.clone();
        let (merchant, id) = (&merchant, &id);
        let taken = &std::sync::atomic::AtomicU32::new(0);
        let done = retry(|| async move {
            let Some(mut invoice) = self.store.invoice(id).await? else {
                return Ok(Attempt::Done(Err(ChooseError::NotFound)));
            };
            let version = invoice.version;
            let Some(pay_to) = self
                .next_bitcoin_address(merchant)
                .await
                .map_err(ChooseError::Failed)?
            else {
                return Ok(Attempt::Done(Err(ChooseError::NotOffered)));
            };
            match invoice.give_bitcoin_address(pay_to, self.clock.now()) {
                Ok(true) => {}
                Ok(false) => return Ok(Attempt::Done(Ok(invoice))),
                Err(_) => return Ok(Attempt::Done(Err(ChooseError::NotOpen))),
            }
            match self.store.update_invoice(version, &invoice, &[], None).await {
                Ok(Commit::Conflict) => Ok(Attempt::Conflict),
                Ok(_) => Ok(Attempt::Done(Ok(invoice))),
                // Never expected (indexes only grow): the next index is taken.
                Err(StoreError::DuplicateReference { reference })
                    if taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 =>
                {
                    tracing::warn!(target: "relay::btc", %reference, "address already used; taking the next index");
                    Ok(Attempt::Conflict)
                }
                Err(e) => Err(ChooseError::from(e)),
            }
        })
        .await?;
        let invoice = done.ok_or(ChooseError::Failed(InvoiceError::Busy))??;
        self.store.durable().await?;
        if let Some(rail) = &self.bitcoin {
            (rail.watch)(&invoice);
        }
        metrics::counter!("relay_bitcoin_addresses_on_demand_total").increment(1);
        Ok(invoice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_are_used() {
        assert!(is_checkout_token(&format!("cs_{}", "a1".repeat(16))));
        assert!(!is_checkout_token("cs_../../v1/merchants"));
        assert!(is_card_token("tok_1AbC_x"));
        for bad in [
            "tok_",
            "tok_a/b",
            "tok_a?x=1",
            "pm_card_visa",
            "tok_a b",
            "tok_é",
        ] {
            assert!(!is_card_token(bad), "{bad}");
        }
        assert!(!is_card_token(&format!("tok_{}", "a".repeat(252))));
    }
}
