//! The review queue: payments the risk rules (or a sanctions list) held for a person to look at.
//!
//! Who can act: the merchant, with its own key, on its own invoices' reviews only. What each
//! decision moves, by rail:
//! - **Ethereum**: nothing here. The review's state is the operator's input: approved, the
//!   deposit is captured; rejected (or left open past its deadline), it is voided back to its
//!   payer. The funds stay in the escrow until then, in no one's custody.
//! - **Card**: through the checkout page, the card was only authorized: approve captures it at
//!   the gateway, reject cancels the authorization (the payer is never charged). A card charged
//!   without the page (the merchant's own front end, with the client secret) is held from the
//!   merchant's balance instead: approve releases it, reject refunds it.
//! - **Bitcoin**: already paid. Approve clears the flag; reject refunds the payer to the address
//!   given, through the merchant's refunds.
//!
//! A sanctioned payment cannot be approved. Deciding the same way twice changes nothing.

use crate::apply::ApplyError;
use crate::invoices::InvoiceError;
use crate::refunds::{RefundError, RefundOrder};
use crate::Engine;
use relay_core::invoice::InvoiceInput;
use relay_core::risk::{is_review_id, ReviewStatus};
use relay_core::{
    CoreError, Invoice, Lookup, LookupKind, Merchant, Method, PaymentRef, PaymentStatus,
};
use relay_store::{Store, StoreError};

/// Why a review was not decided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    #[error("no such review")]
    NotFound,
    /// Already closed the other way, or a sanctioned payment to approve.
    #[error(transparent)]
    Refused(#[from] CoreError),
    /// Rejecting a bitcoin payment refunds it: the payer's address is needed.
    #[error("rejecting a bitcoin payment refunds it: give refund_address")]
    RefundAddressMissing,
    /// The refund could not be reserved.
    #[error(transparent)]
    Refund(#[from] RefundError),
    /// The gateway did not capture or cancel the card (it may later: try again).
    #[error("the card gateway: {0}")]
    Gateway(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the invoice keeps changing")]
    Busy,
}

impl From<ApplyError> for ReviewError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Store(e) => ReviewError::Store(e),
            ApplyError::Refused(e) => ReviewError::Refused(e),
            ApplyError::Busy(_) => ReviewError::Busy,
        }
    }
}

impl From<InvoiceError> for ReviewError {
    fn from(e: InvoiceError) -> Self {
        match e {
            InvoiceError::Store(e) => ReviewError::Store(e),
            _ => ReviewError::NotFound,
        }
    }
}

/// A review and the invoice it is on.
#[derive(Debug, Clone)]
pub struct ReviewOf {
    pub invoice: Invoice,
    pub payment: PaymentRef,
}

impl<S: Store> Engine<S> {
    /// The merchant's reviews, newest first: open ones only unless `all`.
    pub async fn list_reviews(
        &self,
        merchant: &Merchant,
        all: bool,
        limit: usize,
    ) -> Result<Vec<ReviewOf>, StoreError> {
        let mut found = Vec::new();
        let mut invoices: Vec<_> = self
            .store
            .lookups_of(LookupKind::Review)
            .await?
            .into_iter()
            .filter(|(l, _)| {
                l.review_parts()
                    .is_some_and(|(m, _)| m == merchant.id.as_str())
            })
            .map(|(_, id)| id)
            .collect();
        invoices.sort();
        invoices.dedup();
        let mut loaded = Vec::new();
        for id in invoices {
            let Some(invoice) = self.store.invoice(&id).await? else {
                continue;
            };
            if invoice.merchant_id != merchant.id {
                continue;
            }
            for p in &invoice.payments {
                if let Some(r) = &p.review {
                    if all || r.status == ReviewStatus::Open {
                        found.push((r.opened_at, r.id.clone(), p.reference.clone(), loaded.len()));
                    }
                }
            }
            loaded.push(invoice);
        }
        found.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        found.truncate(limit);
        let out = found
            .into_iter()
            .map(|(_, _, payment, i)| ReviewOf {
                invoice: loaded[i].clone(),
                payment,
            })
            .collect();
        Ok(out)
    }

    /// The merchant's review `id`.
    pub async fn review(&self, merchant: &Merchant, id: &str) -> Result<ReviewOf, ReviewError> {
        if !is_review_id(id) {
            return Err(ReviewError::NotFound);
        }
        let invoice_id = self
            .store
            .invoice_by_lookup(&Lookup::review(&merchant.id, id))
            .await?
            .ok_or(ReviewError::NotFound)?;
        let invoice = self
            .store
            .invoice(&invoice_id)
            .await?
            .filter(|i| i.merchant_id == merchant.id)
            .ok_or(ReviewError::NotFound)?;
        let payment = invoice
            .payment_under_review(id)
            .ok_or(ReviewError::NotFound)?
            .reference
            .clone();
        Ok(ReviewOf { invoice, payment })
    }

    /// Approves review `id`: the payment is released (captured, for an escrow deposit by the
    /// operator, for a card here).
    pub async fn approve_review(
        &self,
        merchant: &Merchant,
        id: &str,
    ) -> Result<ReviewOf, ReviewError> {
        let found = self.review(merchant, id).await?;
        self.close(&found, id, true).await?;
        if paid_how(&found) == Some((Method::Card, PaymentStatus::Pending)) {
            self.capture_card(&found).await?;
        }
        self.review(merchant, id).await
    }

    /// Rejects review `id`: the payment goes back to its payer (voided from the escrow by the
    /// operator; the card's authorization canceled here; bitcoin refunded to `refund_address`).
    pub async fn reject_review(
        &self,
        merchant: &Merchant,
        id: &str,
        refund_address: Option<&str>,
    ) -> Result<ReviewOf, ReviewError> {
        let found = self.review(merchant, id).await?;
        let how = paid_how(&found);
        let method = how.map(|(m, _)| m);
        if method == Some(Method::Bitcoin) && refund_address.is_none() {
            return Err(ReviewError::RefundAddressMissing);
        }
        self.close(&found, id, false).await?;
        let captured = how.is_some_and(|(_, status)| status.is_final());
        match method {
            // Charged already (confirmed without the page's door): refunded in full.
            Some(Method::Card) if captured => self.refund_whole(merchant, &found, None).await?,
            Some(Method::Card) => self.void_card(&found).await?,
            Some(Method::Bitcoin) => self.refund_whole(merchant, &found, refund_address).await?,
            _ => {}
        }
        self.review(merchant, id).await
    }

    /// Closes review `id` one way, durably (the same way again changes nothing).
    async fn close(&self, found: &ReviewOf, id: &str, approve: bool) -> Result<(), ReviewError> {
        let close = InvoiceInput::CloseReview {
            id: id.to_owned(),
            approve,
        };
        self.apply(&found.invoice.id, &close).await?;
        self.store.durable().await?;
        Ok(())
    }

    /// Refunds all of a rejected review's payment (to `address`, for bitcoin), unless a refund of
    /// it was asked for already (a repeated rejection).
    async fn refund_whole(
        &self,
        merchant: &Merchant,
        found: &ReviewOf,
        address: Option<&str>,
    ) -> Result<(), ReviewError> {
        let invoice = self.store.invoice(&found.invoice.id).await?;
        let invoice = invoice.ok_or(ReviewError::NotFound)?;
        if invoice.refunds.iter().any(|r| r.payment == found.payment) {
            return Ok(());
        }
        let order = RefundOrder {
            amount: None,
            payment: Some(found.payment.to_string()),
            bitcoin_address: address.map(str::to_owned),
        };
        self.request_refund(merchant, invoice.id.as_str(), &order, None)
            .await?;
        Ok(())
    }

    /// Rejects every open review whose deadline has passed (an escrow deposit before its payer
    /// may reclaim it, a card authorization before it lapses): the payment goes back to its
    /// payer. Returns how many were rejected.
    pub async fn lapse_reviews(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        // A deadline falls at most this long after its invoice was made (its longest expiry,
        // the escrow's capture window, a card's review time), and 60 days more are looked at
        // (a relay down for weeks catches up): older invoices are not read. Past that, the
        // operator still voids a deposit at its deadline by itself, and the gateway lets a card
        // authorization lapse.
        let window = self.ethereum.as_ref().map_or(0, |e| e.capture_window_secs);
        let reach = relay_core::invoice::MAX_EXPIRY_SECS
            .saturating_add(i64::try_from(window).unwrap_or(i64::MAX / 4))
            .saturating_add(relay_core::risk::CARD_REVIEW_SECS)
            .saturating_add(60 * 86_400);
        let oldest_ms = now.0.saturating_sub(reach).saturating_mul(1000);
        let mut lapsed = 0;
        for (lookup, invoice) in self.store.lookups_of(LookupKind::Review).await? {
            let Some((_, id)) = lookup.review_parts() else {
                continue;
            };
            let id = id.to_owned();
            if i64::try_from(invoice.made_at_ms()).unwrap_or(i64::MAX) < oldest_ms {
                continue;
            }
            let Some(invoice) = self.store.invoice(&invoice).await? else {
                continue;
            };
            let due = invoice
                .payment_under_review(&id)
                .and_then(|p| p.review.as_ref())
                .is_some_and(|r| {
                    r.status == ReviewStatus::Open && r.deadline.is_some_and(|d| now >= d)
                });
            if !due {
                continue;
            }
            let Some(merchant) = self.store.merchant(&invoice.merchant_id).await? else {
                continue;
            };
            match self.reject_review(&merchant, &id, None).await {
                Ok(_) => {
                    lapsed += 1;
                    tracing::info!(target: "relay::risk", review = %id, invoice = %invoice.id, "review left open past its deadline: rejected")
                }
                Err(ReviewError::Store(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(target: "relay::risk", review = %id, error = %e, "could not reject a review past its deadline; will try again")
                }
            }
        }
        Ok(lapsed)
    }

    /// Captures the authorized card of an approved review and records the charge.
    async fn capture_card(&self, found: &ReviewOf) -> Result<(), ReviewError> {
        let gateway = self
            .card
            .as_ref()
            .ok_or_else(|| ReviewError::Gateway("no card gateway".into()))?;
        let PaymentRef::Card(intent) = &found.payment else {
            return Ok(());
        };
        let event = gateway
            .capture_intent(intent)
            .await
            .map_err(|e| ReviewError::Gateway(e.message))?;
        if let Some(event) = event {
            self.record_fetched_event(gateway.name(), &event).await?;
            self.store.durable().await?;
        }
        Ok(())
    }

    /// Cancels the authorized card of a rejected review and records it as gone back.
    async fn void_card(&self, found: &ReviewOf) -> Result<(), ReviewError> {
        let gateway = self
            .card
            .as_ref()
            .ok_or_else(|| ReviewError::Gateway("no card gateway".into()))?;
        let PaymentRef::Card(intent) = &found.payment else {
            return Ok(());
        };
        let Some(p) = found
            .invoice
            .payments
            .iter()
            .find(|p| p.reference == found.payment)
        else {
            return Ok(());
        };
        if let Err(e) = gateway.cancel_intent(intent).await {
            // Canceled before (a repeated rejection) is done; anything else is tried again.
            if !e.refused {
                return Err(ReviewError::Gateway(e.message));
            }
        }
        let asset = found
            .invoice
            .quote_for(Method::Card)
            .map(|q| q.due.asset.code.clone())
            .unwrap_or_default();
        let back = InvoiceInput::Return {
            reference: found.payment.clone(),
            method: Method::Card,
            asset,
            amount: p.amount,
            seen_at: Some(p.seen_at),
            status: PaymentStatus::Voided,
        };
        self.apply_all(&found.invoice.id, &[back, InvoiceInput::IntentClosed])
            .await?;
        self.store.durable().await?;
        Ok(())
    }
}

/// The rail and status of the payment under review.
fn paid_how(found: &ReviewOf) -> Option<(Method, PaymentStatus)> {
    found
        .invoice
        .payments
        .iter()
        .find(|p| p.reference == found.payment)
        .map(|p| (p.method, p.status))
}
