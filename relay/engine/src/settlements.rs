//! Releasing a held cross-rail settlement at the current rate.
//!
//! A settlement is held when its payment came late, after the cancel, or beyond what the invoice
//! was due: the rate locked at creation no longer holds, so the operator's liquidity never pays
//! it automatically. The operator did receive that money (in its treasury or gateway account), so
//! the merchant may have it paid at today's rate, rounded down. A settlement held because its
//! payment replaced one the merchant was already paid for, or because the payment is not final,
//! is never released (the invoice refuses).

use crate::apply::ApplyError;
use crate::invoices::InvoiceError;
use crate::Engine;
use relay_core::invoice::InvoiceInput;
use relay_core::rate::convert_down;
use relay_core::{Amount, CoreError, Invoice, Merchant};
use relay_store::{Store, StoreError};

/// Why a settlement was not released. Nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The invoice refused (not a releasable hold), or the amount would not convert.
    #[error(transparent)]
    Refused(#[from] CoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no such invoice")]
    InvoiceNotFound,
    #[error("no such settlement")]
    SettlementNotFound,
    /// No current rate from `from` to the invoice's currency.
    #[error("no current rate from {from} to {to}")]
    RateUnavailable { from: String, to: String },
    /// The invoice kept changing under every attempt.
    #[error("the invoice keeps changing")]
    Busy,
    /// The invoice does not hold what its settlement names (a bug).
    #[error("the settlement's payment or quote is missing")]
    Lost,
}

impl From<InvoiceError> for ReleaseError {
    fn from(e: InvoiceError) -> ReleaseError {
        match e {
            InvoiceError::NotFound => ReleaseError::InvoiceNotFound,
            InvoiceError::Store(e) => ReleaseError::Store(e),
            InvoiceError::Refused(e) => ReleaseError::Refused(e),
            _ => ReleaseError::Lost,
        }
    }
}

impl From<ApplyError> for ReleaseError {
    fn from(e: ApplyError) -> ReleaseError {
        match e {
            ApplyError::Store(e) => ReleaseError::Store(e),
            ApplyError::Refused(e) => ReleaseError::Refused(e),
            ApplyError::Busy(_) => ReleaseError::Busy,
        }
    }
}

impl<S: Store> Engine<S> {
    /// Has `merchant`'s held settlement `settlement` of invoice `id` paid at what its part of its
    /// payment is worth now; returns the invoice as stored (durably).
    pub async fn release_settlement(
        &self,
        merchant: &Merchant,
        id: &str,
        settlement: &str,
    ) -> Result<Invoice, ReleaseError> {
        let invoice = self.owned_invoice(merchant, id).await?;
        let amount = self.worth_now(&invoice, settlement)?;
        let sid = settlement
            .parse()
            .map_err(|_| ReleaseError::SettlementNotFound)?;
        let input = InvoiceInput::ReleaseSettlement { id: sid, amount };
        self.apply(&invoice.id, &input).await?;
        self.store.durable().await?;
        Ok(self.owned_invoice(merchant, id).await?)
    }

    /// What the settlement's part of its payment is worth now, in the settlement asset.
    fn worth_now(&self, invoice: &Invoice, settlement: &str) -> Result<Amount, ReleaseError> {
        let s = invoice
            .settlements
            .iter()
            .find(|s| settlement.parse() == Ok(s.id))
            .ok_or(ReleaseError::SettlementNotFound)?;
        let to = invoice
            .settle_to
            .as_ref()
            .ok_or(ReleaseError::SettlementNotFound)?;
        let p = invoice
            .payments
            .iter()
            .find(|p| p.reference == s.payment)
            .ok_or(ReleaseError::Lost)?;
        let from = invoice
            .quote_for(p.method)
            .map(|q| q.due.asset.clone())
            .ok_or(ReleaseError::Lost)?;
        let source = if s.source_amount.is_zero() {
            p.amount
        } else {
            s.source_amount
        };
        let currency = &invoice.price.asset.code;
        let rate = |code: &str| {
            self.rates
                .rate(code, currency)
                .ok_or_else(|| ReleaseError::RateUnavailable {
                    from: code.to_owned(),
                    to: currency.clone(),
                })
        };
        let from_rate = rate(&from.code)?;
        let to_rate = rate(&to.due.asset.code)?;
        Ok(convert_down(
            source,
            &from,
            &from_rate,
            &to.due.asset,
            &to_rate,
        )?)
    }
}
