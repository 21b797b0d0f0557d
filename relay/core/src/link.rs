//! Payment links: a URL a merchant shares (in a chat, on a poster, in an email) that makes an
//! invoice for a fixed price each time a payer opens it, and sends the payer to its checkout page.
//! A reusable link makes one per visit; a single-use link makes one, and sends later visitors back
//! to it, unless it expired or was canceled with nothing paid, when the next visit makes another.

use crate::{Invoice, InvoiceId, InvoiceStatus, LinkId, MerchantId, Method, Money, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentLink {
    pub id: LinkId,
    pub merchant_id: MerchantId,
    /// The public part of its URL (`pl_` and 32 hex digits: 128 random bits, not the id).
    pub token: String,
    pub url: String,
    pub price: Money,
    pub description: Option<String>,
    /// One invoice per visit (true), or one payment in all (false).
    pub reusable: bool,
    /// The methods each invoice offers (`None`: the merchant's).
    pub methods: Option<Vec<Method>>,
    /// Where each invoice's checkout page sends the payer once paid.
    pub redirect_url: Option<String>,
    /// How long each invoice made from it is payable, in seconds.
    pub expires_in: i64,
    /// A deactivated link makes no more invoices.
    pub active: bool,
    pub created_at: Timestamp,
    /// Single-use: the invoice it made last, where a visit goes back to.
    pub invoice: Option<InvoiceId>,
    /// Single-use: how many invoices it has made (each visit that makes one uses the next number
    /// in its idempotency key, so two first visitors at once get the same invoice).
    pub made: u64,
    pub version: u64,
}

impl PaymentLink {
    /// Whether a single-use link's invoice still stands for it: a visit goes back to it, unless it
    /// expired or was canceled with nothing paid.
    pub fn keeps(invoice: &Invoice, now: Timestamp) -> bool {
        match invoice.evaluate(now).0 {
            InvoiceStatus::New | InvoiceStatus::Processing | InvoiceStatus::Settled => true,
            InvoiceStatus::Expired | InvoiceStatus::Invalid => {
                invoice.payments.iter().any(|p| p.status.is_live())
            }
        }
    }

    /// The link once it made `invoice`.
    pub fn made(&self, invoice: &InvoiceId) -> PaymentLink {
        PaymentLink {
            invoice: Some(invoice.clone()),
            made: self.made + 1,
            version: self.version + 1,
            ..self.clone()
        }
    }
}
