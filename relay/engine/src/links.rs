//! Payment links: a merchant makes one with its key; anyone with its URL who opens it gets an
//! invoice for its price and is sent to that invoice's checkout page.
//!
//! Who can trigger what: only the merchant's key makes, lists or deactivates a link. A visitor
//! can only make invoices of the link's own price for the link's own merchant — never move money —
//! and each visit of a reusable link makes one; the API limits visits per client address. An
//! invoice made by a link always derives its bitcoin address on demand, so visits nobody pays in
//! bitcoin use no address of the merchant's descriptor (the gap limit stays safe from a flood of
//! visits).

use crate::invoices::{to_json, InvoiceError, InvoiceOrder};
use crate::view::PaymentLinkView;
use crate::{Answering, Decided, Engine};
use relay_core::{Invoice, LinkId, Merchant, Method, Money, PaymentLink};
use relay_store::{Commit, Store, StoreError};
use sha2::{Digest, Sha256};

/// What a merchant asks of a new link.
#[derive(Debug, Clone)]
pub struct LinkOrder {
    pub price: Money,
    pub description: Option<String>,
    pub reusable: bool,
    pub methods: Option<Vec<Method>>,
    pub redirect_url: Option<String>,
    /// How long each invoice made from it is payable, in seconds.
    pub expires_in: i64,
}

impl LinkOrder {
    fn invoice_order(&self) -> InvoiceOrder {
        InvoiceOrder {
            price: self.price.clone(),
            order_id: None,
            description: self.description.clone(),
            metadata: Default::default(),
            expires_in: self.expires_in,
            methods: self.methods.clone(),
            eth_asset: None,
            redirect_url: self.redirect_url.clone(),
            bitcoin_on_demand: true,
        }
    }

    fn of(link: &PaymentLink) -> LinkOrder {
        LinkOrder {
            price: link.price.clone(),
            description: link.description.clone(),
            reusable: link.reusable,
            methods: link.methods.clone(),
            redirect_url: link.redirect_url.clone(),
            expires_in: link.expires_in,
        }
    }
}

/// Why a visit made no invoice.
#[derive(Debug, thiserror::Error)]
pub enum VisitError {
    #[error("no such payment link")]
    NotFound,
    #[error("the payment link was deactivated")]
    Inactive,
    #[error(transparent)]
    Failed(#[from] InvoiceError),
}

impl From<StoreError> for VisitError {
    fn from(e: StoreError) -> Self {
        VisitError::Failed(InvoiceError::Store(e))
    }
}

/// Whether `token` has the shape of a link token (`pl_` and 32 hex digits).
pub fn is_link_token(token: &str) -> bool {
    token.len() == 35
        && token.starts_with("pl_")
        && token[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl<S: Store> Engine<S> {
    /// Makes a payment link for `merchant`. The order is checked as an invoice would be now (the
    /// currency, the amount, the methods, the expiry), so a link that could make no invoice is
    /// refused at once.
    pub async fn create_link(
        &self,
        merchant: &Merchant,
        order: LinkOrder,
        answering: Option<Answering<'_>>,
    ) -> Result<Decided<PaymentLink>, InvoiceError> {
        let now = answering.map_or_else(|| self.clock.now(), |a| a.at);
        self.draft(merchant, order.invoice_order(), now)?;
        let base = self.checkout_base.as_deref().unwrap_or("");
        let token = format!("pl_{}", hex::encode(rand::random::<[u8; 16]>()));
        let link = PaymentLink {
            id: LinkId::from_entropy(self.ids.next()),
            merchant_id: merchant.id.clone(),
            url: format!("{}/link/{token}", base.trim_end_matches('/')),
            token,
            price: order.price,
            description: order.description,
            reusable: order.reusable,
            methods: order.methods,
            redirect_url: order.redirect_url,
            expires_in: order.expires_in,
            active: true,
            created_at: now,
            invoice: None,
            made: 0,
            version: 0,
        };
        let body = to_json(&PaymentLinkView::of(&link));
        let commit = self
            .store
            .create_link(&link, answering.map(|a| a.record(&body)))
            .await?;
        if commit == Commit::Done {
            metrics::counter!("relay_payment_links_created_total").increment(1);
        }
        Ok(Decided {
            commit,
            body,
            value: link,
        })
    }

    /// `merchant`'s link `id`: another merchant's is answered exactly like a missing one.
    pub async fn owned_link(
        &self,
        merchant: &Merchant,
        id: &str,
    ) -> Result<PaymentLink, InvoiceError> {
        let found = match LinkId::parse(id) {
            Some(id) => self.store.link(&id).await?,
            None => None,
        };
        found
            .filter(|l| l.merchant_id == merchant.id)
            .ok_or(InvoiceError::NotFound)
    }

    /// Deactivates `merchant`'s link `id`: it makes no more invoices (those it made stay payable).
    pub async fn deactivate_link(
        &self,
        merchant: &Merchant,
        id: &str,
    ) -> Result<PaymentLink, InvoiceError> {
        for _ in 0..16 {
            let link = self.owned_link(merchant, id).await?;
            if !link.active {
                return Ok(link);
            }
            let off = PaymentLink {
                active: false,
                version: link.version + 1,
                ..link.clone()
            };
            if self.store.update_link(link.version, &off).await? == Commit::Done {
                self.store.durable().await?;
                return Ok(off);
            }
        }
        Err(InvoiceError::Busy)
    }

    /// A payer opened the link of `token`: the invoice to send them to. A reusable link makes a
    /// new one; a single-use link makes one, and sends later visitors back to it (two first
    /// visitors at once get the same invoice: its creation is keyed by the link and its count),
    /// unless it expired or was canceled with nothing paid, when this visit makes the next.
    pub async fn visit_link(&self, token: &str) -> Result<Invoice, VisitError> {
        if !is_link_token(token) {
            return Err(VisitError::NotFound);
        }
        for _ in 0..16 {
            let link = self
                .store
                .link_by_token(token)
                .await?
                .ok_or(VisitError::NotFound)?;
            if !link.active {
                return Err(VisitError::Inactive);
            }
            let merchant = self
                .store
                .merchant(&link.merchant_id)
                .await?
                .ok_or(VisitError::NotFound)?;
            let order = LinkOrder::of(&link).invoice_order();
            if link.reusable {
                let created = self.create_invoice(&merchant, order, None).await?;
                self.store.durable().await?;
                return Ok(created.invoice);
            }
            let now = self.clock.now();
            if let Some(id) = &link.invoice {
                if let Some(inv) = self.store.invoice(id).await? {
                    if PaymentLink::keeps(&inv, now) {
                        return Ok(inv);
                    }
                }
            }
            // The next invoice of this link, the same for every visitor who gets here at once.
            let key = format!("link:{}:{}", link.id, link.made);
            let answering = Answering {
                merchant: &merchant.id,
                key: &key,
                fingerprint: Sha256::digest(key.as_bytes()).into(),
                at: now,
            };
            let created = self
                .create_invoice(&merchant, order, Some(answering))
                .await?;
            let id = match &created.commit {
                Commit::IdempotencyHit(record) => {
                    let made: serde_json::Value =
                        serde_json::from_str(&record.body).map_err(|e| StoreError::Corrupt {
                            what: "payment link's invoice",
                            reason: e.to_string(),
                        })?;
                    made["id"]
                        .as_str()
                        .and_then(relay_core::InvoiceId::parse)
                        .ok_or_else(|| StoreError::Corrupt {
                            what: "payment link's invoice",
                            reason: "no invoice id in the stored answer".into(),
                        })?
                }
                _ => created.invoice.id.clone(),
            };
            // Another visitor may have recorded it first: then the next look finds it.
            self.store
                .update_link(link.version, &link.made(&id))
                .await?;
            self.store.durable().await?;
            if let Some(inv) = self.store.invoice(&id).await? {
                return Ok(inv);
            }
        }
        Err(VisitError::Failed(InvoiceError::Busy))
    }
}
