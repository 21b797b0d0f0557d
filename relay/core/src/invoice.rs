//! Invoices, the payments observed for them, and the state machine that derives an invoice's status.
//!
//! An invoice's status and exception are a pure function of its price, expiry, cancellation and the
//! set of payments observed for it (keyed by their rail reference). Inputs are idempotent: observing
//! the same payment twice changes nothing, and a payment that is reverted and re-observed is
//! credited once. Every input returns the events it caused, which the caller stores atomically with
//! the new state.
//!
//! The rules:
//! - a payment counts toward the price if it was first seen before the invoice expired (or was
//!   canceled); it is credited at the rate locked into its method's quote, rounded down;
//! - `settled` when the confirmed, in-time credit covers the price;
//! - `processing` while in-time payments exist that do not yet settle it, except that an invoice
//!   whose in-time payments (pending or confirmed) fall short of the price is `expired` once its
//!   expiry passes — the payer cannot top it up any more;
//! - `expired` when the expiry passes with nothing paid, `invalid` when the merchant cancels;
//! - exceptions: `paid_late` if any payment arrived after expiry or cancellation, else `paid_over`
//!   if in-time payments exceed the price, else `paid_partial` if they fall short of it.

use crate::error::CoreError;
use crate::event::EventType;
use crate::id::{InvoiceId, MerchantId};
use crate::money::{Amount, AssetBook, AssetKind, Money};
use crate::payout::{Refund, RefundAddress, SettleTo, Settlement};
use crate::rate::{Rate, RateSource};
use crate::reference::{PaymentRef, Script, SettlementId};
use crate::time::Timestamp;
use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub use crate::lookup::{Lookup, LookupKind};

mod apply;
mod input;
mod new;
mod review;
mod worth;
pub use input::{InvoiceInput, Transition};
pub use new::{apply_spread, eth_payment_id, NewInvoice, ReceiveAddress, ReceiveAddresses};

fn invalid(field: &'static str, reason: impl Into<String>) -> CoreError {
    CoreError::InvalidField {
        field,
        reason: reason.into(),
    }
}

/// Shortest and longest time an invoice may stay payable.
pub const MIN_EXPIRY_SECS: i64 = 60;
pub const MAX_EXPIRY_SECS: i64 = 30 * 24 * 3600;
pub const MAX_ORDER_ID_LEN: usize = 128;
pub const MAX_DESCRIPTION_LEN: usize = 1000;
pub const MAX_METADATA_KEYS: usize = 20;
pub const MAX_METADATA_KEY_LEN: usize = 40;
pub const MAX_METADATA_VALUE_LEN: usize = 500;
/// Live payments (pending, confirmed, disputed) one invoice records. Beyond it the invoice is
/// flagged (`payments_capped`) and more payments are neither recorded nor credited: a flood of
/// outputs to one address cannot make an invoice (and every event that carries it) grow without
/// bound. The invoice's own escrow deposit is always recorded.
pub const MAX_PAYMENTS: usize = 100;
/// Payment records of any status (replaced, reverted, voided ones included) one invoice keeps.
pub const MAX_PAYMENT_RECORDS: usize = 1000;

/// A way to pay: one rail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Bitcoin,
    Ethereum,
    Card,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Bitcoin, Method::Ethereum, Method::Card];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Bitcoin => "bitcoin",
            Method::Ethereum => "ethereum",
            Method::Card => "card",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a payer owes on one rail, fixed when the invoice is created: the asset, the rate locked in
/// and the amount in the asset's minor units. Rails add their payment instructions beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodQuote {
    pub method: Method,
    pub due: Money,
    pub rate: Rate,
    /// When the locked rate stops holding (a conversion's quote; none for a method paid in the
    /// price's own asset, or for invoices made before quotes expired: then the invoice's expiry).
    /// A payment that arrives later is worth what it is worth at the rate of its arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// For `card`: the PaymentIntent created at the gateway for this invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardIntent>,
    /// For `bitcoin`: the address derived for this invoice alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitcoin: Option<BitcoinPayTo>,
    /// For `ethereum`: the escrow deposit this invoice alone accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethereum: Option<EthereumPayTo>,
}

/// How an Ethereum invoice is paid: one deposit into the escrow with exactly these terms. The
/// escrow derives the payment id from them, so a deposit with any term changed has another id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EthereumPayTo {
    pub chain_id: u64,
    /// The escrow contract (stored, like every address here, as `0x`-prefixed lowercase hex).
    #[serde(with = "crate::reference::lower_hex")]
    pub escrow: Address,
    /// The merchant's payout address the deposit is for.
    #[serde(with = "crate::reference::lower_hex")]
    pub merchant: Address,
    /// The ERC-20 contract, or `None` for ether.
    #[serde(with = "crate::reference::lower_hex_opt")]
    pub token: Option<Address>,
    /// When the payer may reclaim an uncaptured deposit (unix seconds); later than the invoice's
    /// own expiry by the capture window, so an in-time deposit can always be captured.
    pub expiry: u64,
    /// 32 random bytes: nobody else can produce this invoice's payment id.
    pub salt: B256,
    /// `keccak256(abi.encode(chain_id, escrow, merchant, token, amount, expiry, salt))`.
    pub payment_id: B256,
    /// Blocks a deposit needs before it counts as final.
    pub confirmations: u32,
}

/// Where a bitcoin invoice is paid: one address of the merchant's descriptor, never handed out for
/// another invoice, and the confirmations its payments need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitcoinPayTo {
    pub address: String,
    /// The output script the address stands for, hex. The watcher matches outputs on it.
    pub script_pubkey: Script,
    /// The descriptor's derivation index the address comes from.
    pub derivation_index: u32,
    /// The merchant's confirmation policy when the invoice was created.
    pub confirmations: u32,
    /// The address is the operator's treasury (the merchant is paid on Ethereum instead).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub treasury: bool,
}

/// A card payment's handle at the gateway, fixed when the invoice is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardIntent {
    /// Which gateway (`stripe`).
    pub gateway: String,
    pub payment_intent: String,
    /// Handed to the payer's browser to confirm the payment (Stripe.js); not an API secret.
    pub client_secret: String,
}

/// Why a card cannot be charged for an invoice now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardRefusal {
    /// The invoice offers no card payment.
    NotOffered,
    /// Paid, expired, canceled, or its PaymentIntent closed.
    NotOpen,
    /// A payment on another rail (or a card payment) is already underway.
    PaymentUnderway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    New,
    Processing,
    Settled,
    Expired,
    Invalid,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::New => "new",
            InvoiceStatus::Processing => "processing",
            InvoiceStatus::Settled => "settled",
            InvoiceStatus::Expired => "expired",
            InvoiceStatus::Invalid => "invalid",
        }
    }

    pub fn parse(s: &str) -> Option<InvoiceStatus> {
        [
            InvoiceStatus::New,
            InvoiceStatus::Processing,
            InvoiceStatus::Settled,
            InvoiceStatus::Expired,
            InvoiceStatus::Invalid,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    fn event(self) -> Option<EventType> {
        match self {
            InvoiceStatus::New => None,
            InvoiceStatus::Processing => Some(EventType::InvoiceProcessing),
            InvoiceStatus::Settled => Some(EventType::InvoiceSettled),
            InvoiceStatus::Expired => Some(EventType::InvoiceExpired),
            InvoiceStatus::Invalid => Some(EventType::InvoiceInvalid),
        }
    }
}

impl fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceException {
    PaidPartial,
    PaidOver,
    PaidLate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Confirmed,
    Reverted,
    Replaced,
    Failed,
    Disputed,
    /// An escrow deposit the relay sent back to the payer (it did not match the invoice, or came
    /// too late).
    Voided,
    /// An escrow deposit the payer took back after the escrow's expiry, uncaptured.
    Reclaimed,
}

impl PaymentStatus {
    /// Whether the payment's money is (still) on its way to or with the merchant. A disputed
    /// payment still is, until the dispute is lost.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            PaymentStatus::Pending | PaymentStatus::Confirmed | PaymentStatus::Disputed
        )
    }

    /// Whether the payment went back to its payer without being credited.
    fn is_returned(self) -> bool {
        matches!(self, PaymentStatus::Voided | PaymentStatus::Reclaimed)
    }

    /// Whether the payment is final enough to settle an invoice.
    pub fn is_final(self) -> bool {
        matches!(self, PaymentStatus::Confirmed | PaymentStatus::Disputed)
    }

    fn event(self) -> EventType {
        match self {
            PaymentStatus::Pending => EventType::PaymentPending,
            PaymentStatus::Confirmed => EventType::PaymentConfirmed,
            PaymentStatus::Reverted => EventType::PaymentReverted,
            PaymentStatus::Replaced => EventType::PaymentReplaced,
            PaymentStatus::Failed => EventType::PaymentFailed,
            PaymentStatus::Disputed => EventType::PaymentDisputed,
            PaymentStatus::Voided => EventType::PaymentVoided,
            PaymentStatus::Reclaimed => EventType::PaymentReclaimed,
        }
    }
}

/// One observed transfer on one rail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Unique on its rail: a bitcoin output, an escrow payment id, a PaymentIntent.
    pub reference: PaymentRef,
    pub method: Method,
    pub amount: Amount,
    pub status: PaymentStatus,
    pub confirmations: u32,
    /// When the payment was first seen; kept when it is reverted and seen again.
    pub seen_at: Timestamp,
    /// How much of it has been refunded to the payer so far.
    #[serde(default)]
    pub refunded: Amount,
    /// Escrow payments: the transaction that captured it to the merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_tx: Option<String>,
    /// Escrow payments: the relay's fee taken at capture.
    #[serde(default, skip_serializing_if = "zero")]
    pub fee: Amount,
    /// A payment that arrived after its method's quote expired: the rate it was priced at when
    /// it came (none yet: it counts for nothing until it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// What the merchant's risk rules made of it (assessed when it was first seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<crate::risk::Assessment>,
    /// Its review, if the rules (or a sanctions list) asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<crate::risk::Review>,
}

pub(crate) fn zero(a: &Amount) -> bool {
    a.is_zero()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: InvoiceId,
    pub merchant_id: MerchantId,
    pub status: InvoiceStatus,
    pub exception: Option<InvoiceException>,
    pub price: Money,
    pub order_id: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub canceled_at: Option<Timestamp>,
    pub methods: Vec<MethodQuote>,
    pub payments: Vec<Payment>,
    /// How far short of the price (basis points) confirmed payments may fall and still settle it.
    #[serde(default)]
    pub tolerance_bps: u16,
    /// For a merchant paid on Ethereum: how its card and bitcoin payments are settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_to: Option<SettleTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settlements: Vec<Settlement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<Refund>,
    /// More than [`MAX_PAYMENTS`] payments were seen: the rest were not recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payments_capped: bool,
    /// The card PaymentIntent can no longer be charged (canceled at the gateway, or finished).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intent_closed: bool,
    /// What the risk rules made of the card being confirmed on the PaymentIntent from the
    /// checkout page: the card payment takes it when it is recorded, however that news comes
    /// (the page's own answer, a webhook, reconciliation after 3-D Secure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_assessment: Option<crate::risk::Assessment>,
    /// The payer's page: its unguessable token (not the invoice id) and its full URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<Checkout>,
    /// Where the checkout page sends the payer back once the invoice is paid (an http(s) URL the
    /// merchant gave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// Incremented on every change, for optimistic concurrency in the store.
    pub version: u64,
}

/// An invoice's checkout page, `GET /pay/{token}`, which the payer may open without any key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub token: String,
    pub url: String,
}

impl Invoice {
    /// Creates an invoice, validating every parameter and locking the rates.
    pub fn create(
        id: InvoiceId,
        params: NewInvoice,
        quotes: Vec<MethodQuote>,
        now: Timestamp,
    ) -> Result<(Invoice, Vec<EventType>), CoreError> {
        params.validate(now)?;
        let invoice = Invoice {
            id,
            merchant_id: params.merchant_id,
            status: InvoiceStatus::New,
            exception: None,
            price: params.price,
            order_id: params.order_id,
            description: params.description,
            metadata: params.metadata,
            created_at: now,
            expires_at: params.expires_at,
            canceled_at: None,
            methods: quotes,
            payments: Vec::new(),
            tolerance_bps: params.tolerance_bps,
            settle_to: None,
            settlements: Vec::new(),
            refunds: Vec::new(),
            payments_capped: false,
            intent_closed: false,
            card_assessment: None,
            checkout: None,
            redirect_url: None,
            version: 1,
        };
        Ok((invoice, vec![EventType::InvoiceCreated]))
    }

    pub fn quote_for(&self, method: Method) -> Option<&MethodQuote> {
        self.methods.iter().find(|q| q.method == method)
    }

    /// Whether `reference` is the escrow deposit this invoice asked for (exact terms).
    fn is_own_deposit(&self, reference: &PaymentRef) -> bool {
        self.quote_for(Method::Ethereum)
            .and_then(|q| q.ethereum.as_ref())
            .is_some_and(|e| PaymentRef::eth(e.payment_id) == *reference)
    }

    /// The PaymentIntent to cancel at the gateway: the invoice expired or was canceled, nobody
    /// paid by card, and the intent is not closed yet. A payer must never be charged for an
    /// invoice that is no longer payable.
    pub fn intent_to_close(&self) -> Option<&str> {
        let payable = matches!(self.status, InvoiceStatus::New | InvoiceStatus::Processing)
            && self.canceled_at.is_none();
        let card_paid = self
            .payments
            .iter()
            .any(|p| p.method == Method::Card && p.status != PaymentStatus::Failed);
        if payable || card_paid || self.intent_closed {
            return None;
        }
        self.payment_intent()
    }

    /// The PaymentIntent a payer may confirm now, from the checkout page, or why not. Only an
    /// open invoice nobody has paid anything yet (on any rail) takes a card: the intent is for
    /// the whole price, and a card charged after a partial crypto payment would overpay it.
    pub fn card_payable(&self, now: Timestamp) -> Result<&CardIntent, CardRefusal> {
        let intent = self
            .quote_for(Method::Card)
            .and_then(|q| q.card.as_ref())
            .ok_or(CardRefusal::NotOffered)?;
        if self.intent_closed || self.canceled_at.is_some() {
            return Err(CardRefusal::NotOpen);
        }
        match self.evaluate(now).0 {
            InvoiceStatus::New if !self.payments.iter().any(|p| p.status.is_live()) => Ok(intent),
            InvoiceStatus::New | InvoiceStatus::Processing => Err(CardRefusal::PaymentUnderway),
            _ => Err(CardRefusal::NotOpen),
        }
    }

    /// Whether the invoice offers bitcoin but has no address yet: one is derived when the payer
    /// chooses bitcoin (addresses on demand).
    pub fn awaits_bitcoin_address(&self) -> bool {
        self.quote_for(Method::Bitcoin)
            .is_some_and(|q| q.bitcoin.is_none())
    }

    /// Gives the invoice the bitcoin address its payer asked for (derived on demand). Refused
    /// once it can no longer be paid; `Ok(false)` when it has one already (kept: the payer may be
    /// paying to it).
    pub fn give_bitcoin_address(
        &mut self,
        pay_to: BitcoinPayTo,
        now: Timestamp,
    ) -> Result<bool, CoreError> {
        let status = self.evaluate(now).0;
        let quote = self
            .methods
            .iter_mut()
            .find(|q| q.method == Method::Bitcoin)
            .ok_or_else(|| CoreError::MethodNotOffered {
                method: "bitcoin".into(),
            })?;
        if quote.bitcoin.is_some() {
            return Ok(false);
        }
        if !matches!(status, InvoiceStatus::New | InvoiceStatus::Processing)
            || now >= self.expires_at
        {
            return Err(CoreError::InvalidField {
                field: "payment_method",
                reason: format!(
                    "the invoice is {} and takes no new payment",
                    status.as_str()
                ),
            });
        }
        quote.bitcoin = Some(pay_to);
        self.version += 1;
        Ok(true)
    }

    /// The card gateway's PaymentIntent of this invoice, if it offers card.
    pub fn payment_intent(&self) -> Option<&str> {
        self.quote_for(Method::Card)
            .and_then(|q| q.card.as_ref())
            .map(|c| c.payment_intent.as_str())
    }

    /// The keys under which rails find this invoice. Each is unique to one invoice: the store
    /// refuses a second invoice with the same one.
    pub fn lookups(&self) -> Vec<Lookup> {
        let cards = self
            .methods
            .iter()
            .filter_map(|q| q.card.as_ref())
            .map(|c| Lookup::CardIntent(c.payment_intent.clone()));
        let scripts = self
            .methods
            .iter()
            .filter_map(|q| q.bitcoin.as_ref())
            .map(|b| Lookup::BtcScript(b.script_pubkey.clone()));
        let salts = self
            .methods
            .iter()
            .filter_map(|q| q.ethereum.as_ref())
            .map(|e| Lookup::eth_salt(&format!("{:#x}", e.salt)));
        let checkout = self
            .checkout
            .iter()
            .map(|c| Lookup::Checkout(c.token.clone()));
        let reviews = self
            .payments
            .iter()
            .filter_map(|p| p.review.as_ref())
            .map(|r| Lookup::review(&self.merchant_id, &r.id));
        cards
            .chain(scripts)
            .chain(salts)
            .chain(checkout)
            .chain(reviews)
            .collect()
    }

    /// The confirmations a payment on `method` needs to be final: the bitcoin or Ethereum policy
    /// locked in at creation; one for card (the gateway decides).
    pub fn confirmations_required(&self, method: Method) -> u32 {
        let quote = self.quote_for(method);
        match method {
            Method::Ethereum => quote
                .and_then(|q| q.ethereum.as_ref())
                .map_or(1, |e| e.confirmations),
            _ => quote
                .and_then(|q| q.bitcoin.as_ref())
                .map_or(1, |b| b.confirmations),
        }
    }
}

#[cfg(test)]
mod tests;
