//! The JSON shapes the API returns. Amounts are strings: a decimal for people (`"25.00"`) and an
//! integer count of minor units for machines (`"2500"`), never a JSON number.

use relay_core::{Event, Invoice, Method, Payment, Timestamp};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub fn rfc3339(t: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(t.0)
        .ok()
        .and_then(|dt| {
            dt.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.0.to_string())
}

#[derive(Serialize, ToSchema)]
pub struct InvoiceView {
    /// `inv_…`
    pub id: String,
    pub object: &'static str,
    /// `new`, `processing`, `settled`, `expired` or `invalid`.
    pub status: String,
    /// `paid_partial`, `paid_over`, `paid_late` or null.
    pub exception: Option<String>,
    /// The price in major units, e.g. `"25.00"`.
    pub amount: String,
    /// The price in the currency's minor units, e.g. `"2500"`.
    pub amount_minor: String,
    pub currency: String,
    pub order_id: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: String,
    pub expires_at: String,
    pub canceled_at: Option<String>,
    /// What to pay on each offered rail, at the rate locked in at creation.
    pub payment_methods: BTreeMap<String, MethodView>,
    pub payments: Vec<PaymentView>,
}

#[derive(Serialize, ToSchema)]
pub struct MethodView {
    pub asset: String,
    /// Due in major units.
    pub amount: String,
    /// Due in minor units (satoshi, wei, cents).
    pub amount_minor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_sat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_wei: Option<String>,
    /// The locked rate: the price of one `asset` in the invoice's currency.
    pub rate: String,
    /// Bitcoin: the address of this invoice alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Bitcoin: a BIP21 URI with the address and amount, for wallets and QR codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Bitcoin: confirmations a payment needs before the invoice is settled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmations_required: Option<u32>,
    /// Card: the gateway (`stripe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Card: the gateway's PaymentIntent for this invoice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<String>,
    /// Card: what the payer's browser confirms the PaymentIntent with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PaymentView {
    pub reference: String,
    pub method: String,
    pub asset: String,
    pub amount: String,
    pub amount_minor: String,
    /// `pending`, `confirmed`, `reverted`, `replaced`, `failed` or `disputed`.
    pub status: String,
    pub confirmations: u32,
    pub seen_at: String,
    /// Refunded so far, minor units.
    pub refunded_minor: String,
}

/// BIP21 amounts are decimal BTC; trailing zeros are dropped (`0.0004` rather than `0.00040000`).
fn bip21_amount(due: &relay_core::Money) -> String {
    let s = due.to_decimal_string();
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl InvoiceView {
    pub fn of(inv: &Invoice) -> InvoiceView {
        let payment_methods =
            inv.methods
                .iter()
                .map(|q| {
                    let minor = q.due.amount.to_string();
                    let view = MethodView {
                        asset: q.due.asset.code.clone(),
                        amount: q.due.to_decimal_string(),
                        amount_sat: (q.method == Method::Bitcoin).then(|| minor.clone()),
                        amount_wei: (q.method == Method::Ethereum).then(|| minor.clone()),
                        amount_minor: minor,
                        rate: q.rate.price.normalize().to_string(),
                        address: q.bitcoin.as_ref().map(|b| b.address.clone()),
                        uri: q.bitcoin.as_ref().map(|b| {
                            format!("bitcoin:{}?amount={}", b.address, bip21_amount(&q.due))
                        }),
                        confirmations_required: q.bitcoin.as_ref().map(|b| b.confirmations),
                        gateway: q.card.as_ref().map(|c| c.gateway.clone()),
                        payment_intent: q.card.as_ref().map(|c| c.payment_intent.clone()),
                        client_secret: q.card.as_ref().map(|c| c.client_secret.clone()),
                    };
                    (q.method.as_str().to_owned(), view)
                })
                .collect();
        InvoiceView {
            id: inv.id.to_string(),
            object: "invoice",
            status: inv.status.as_str().to_owned(),
            exception: inv.exception.as_ref().map(enum_str),
            amount: inv.price.to_decimal_string(),
            amount_minor: inv.price.amount.to_string(),
            currency: inv.price.asset.code.clone(),
            order_id: inv.order_id.clone(),
            description: inv.description.clone(),
            metadata: inv.metadata.clone(),
            created_at: rfc3339(inv.created_at),
            expires_at: rfc3339(inv.expires_at),
            canceled_at: inv.canceled_at.map(rfc3339),
            payment_methods,
            payments: inv
                .payments
                .iter()
                .map(|p| PaymentView::of(inv, p))
                .collect(),
        }
    }
}

impl PaymentView {
    fn of(inv: &Invoice, p: &Payment) -> PaymentView {
        let asset = inv.quote_for(p.method).map(|q| &q.due.asset);
        PaymentView {
            reference: p.reference.clone(),
            method: p.method.as_str().to_owned(),
            asset: asset.map(|a| a.code.clone()).unwrap_or_default(),
            amount: p
                .amount
                .to_decimal_string(asset.map(|a| a.decimals).unwrap_or(0)),
            amount_minor: p.amount.to_string(),
            status: enum_str(&p.status),
            confirmations: p.confirmations,
            seen_at: rfc3339(p.seen_at),
            refunded_minor: p.refunded.to_string(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventView {
    /// `evt_…`; receivers dedupe on it.
    pub id: String,
    pub object: &'static str,
    /// e.g. `invoice.created`, `payment.confirmed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: String,
    pub data: EventData,
}

#[derive(Serialize, ToSchema)]
pub struct EventData {
    /// The invoice as it was right after the event.
    pub object: InvoiceView,
}

impl EventView {
    pub fn of(e: &Event) -> EventView {
        EventView {
            id: e.id.to_string(),
            object: "event",
            kind: e.kind.as_str().to_owned(),
            created_at: rfc3339(e.created_at),
            data: EventData {
                object: InvoiceView::of(&e.invoice),
            },
        }
    }
}

/// A page of a list.
#[derive(Serialize, ToSchema)]
pub struct ListView<T: ToSchema> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
}
