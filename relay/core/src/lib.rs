//! The domain of Relay, with no I/O: what an amount of money is, how a price converts into what a
//! payer owes on each rail, what an invoice and a payment are, and the state machine that decides an
//! invoice's status from the payments observed for it.
//!
//! Everything here is deterministic. Time arrives as a [`Timestamp`] value and randomness as bytes
//! (for identifiers), so the same inputs always produce the same decisions. Adapters turn the outside
//! world into plain values; this crate applies them and returns what changed (new states and the
//! [`Event`]s to emit), and the store writes both in one atomic step.

pub mod access;
pub mod destination;
pub mod error;
pub mod event;
pub mod gateway;
pub mod id;
pub mod invoice;
pub mod ledger;
pub mod link;
pub mod lookup;
pub mod merchant;
pub mod money;
pub mod operator;
pub mod payout;
pub mod rate;
pub mod reference;
pub mod risk;
pub mod time;
pub mod webhook;

pub use access::{KeyRecord, Scope};
pub use error::CoreError;
pub use event::{Event, EventType};
pub use gateway::{GatewayEvent, GatewayEventKind};
pub use id::{EventId, InvoiceId, LinkId, MerchantId, OrderedIds};
pub use invoice::{
    eth_payment_id, BitcoinPayTo, CardIntent, CardRefusal, Checkout, EthereumPayTo, Invoice,
    InvoiceException, InvoiceStatus, Lookup, LookupKind, Method, MethodQuote, NewInvoice, Payment,
    PaymentStatus, ReceiveAddress, ReceiveAddresses,
};
pub use ledger::{Account, Balances, Line, Net};
pub use link::PaymentLink;
pub use merchant::{ApiKey, ApiKeyHash, Merchant, Secret};
pub use money::{Amount, Asset, AssetBook, AssetKind, Money};
pub use payout::{
    excess_settlement_id, settlement_id, HoldReason, Refund, RefundAddress, RefundStatus, SettleTo,
    Settlement, SettlementStatus,
};
pub use rate::{FixedRates, Rate, RateError, RateSource};
pub use reference::{PaymentId, PaymentRef, Script, SettlementId, Txid};
pub use risk::{Assessment, Review, ReviewStatus, RiskAction, RiskRules, Sanctions};
pub use time::{Clock, Timestamp};
pub use webhook::{DeliveryAttempt, DeliveryOutcome, WebhookEndpoint};
