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
    /// Ethereum: the chain to pay on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    /// Ethereum: the escrow contract that takes the deposit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escrow: Option<String>,
    /// Ethereum: the escrow's id of the one deposit that pays this invoice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// Ethereum: the ERC-20 contract, when the asset is a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Ethereum: the exact call to make (with ERC-20, after `approve`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<EthereumCallView>,
    /// Ethereum, ERC-20 only: the allowance the payer grants the escrow first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approve: Option<EthereumCallView>,
    /// Ethereum: when the payer may reclaim a deposit the relay did not capture (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reclaimable_at: Option<String>,
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

/// One contract call: `cast send <to> '<function>' <args…> --value <value>` makes it.
#[derive(Serialize, ToSchema)]
pub struct EthereumCallView {
    pub to: String,
    /// The function signature, e.g. `deposit(address,uint64,bytes32)`.
    pub function: String,
    pub args: Vec<String>,
    /// Wei sent with the call, decimal.
    pub value: String,
}

impl EthereumCallView {
    fn for_deposit(e: &relay_core::EthereumPayTo, amount: &str) -> EthereumCallView {
        match &e.token {
            None => EthereumCallView {
                to: e.escrow.clone(),
                function: "deposit(address,uint64,bytes32)".into(),
                args: vec![e.merchant.clone(), e.expiry.to_string(), e.salt.clone()],
                value: amount.to_owned(),
            },
            Some(token) => EthereumCallView {
                to: e.escrow.clone(),
                function: "depositToken(address,address,uint256,uint64,bytes32)".into(),
                args: vec![
                    e.merchant.clone(),
                    token.clone(),
                    amount.to_owned(),
                    e.expiry.to_string(),
                    e.salt.clone(),
                ],
                value: "0".into(),
            },
        }
    }

    fn for_approve(e: &relay_core::EthereumPayTo, amount: &str) -> Option<EthereumCallView> {
        e.token.as_ref().map(|token| EthereumCallView {
            to: token.clone(),
            function: "approve(address,uint256)".into(),
            args: vec![e.escrow.clone(), amount.to_owned()],
            value: "0".into(),
        })
    }

    /// The call as an EIP-681 URI (parameters named by their type, in order; value in wei).
    fn eip681(&self, chain_id: u64) -> String {
        let name = self.function.split('(').next().unwrap_or_default();
        let types = self
            .function
            .trim_end_matches(')')
            .split_once('(')
            .map_or("", |(_, t)| t);
        let mut query: Vec<String> = types
            .split(',')
            .zip(&self.args)
            .map(|(t, a)| format!("{t}={a}"))
            .collect();
        if self.value != "0" {
            query.push(format!("value={}", self.value));
        }
        format!("ethereum:{}@{chain_id}/{name}?{}", self.to, query.join("&"))
    }
}

#[derive(Serialize, ToSchema)]
pub struct PaymentView {
    pub reference: String,
    pub method: String,
    pub asset: String,
    pub amount: String,
    pub amount_minor: String,
    /// `pending`, `confirmed`, `reverted`, `replaced`, `failed`, `disputed`, `voided` (an escrow
    /// deposit sent back to the payer) or `reclaimed` (taken back by the payer after expiry).
    pub status: String,
    pub confirmations: u32,
    pub seen_at: String,
    /// Refunded so far, minor units.
    pub refunded_minor: String,
    /// Escrow payments: the transaction that captured the deposit to the merchant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_tx: Option<String>,
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
        let payment_methods = inv
            .methods
            .iter()
            .map(|q| {
                let minor = q.due.amount.to_string();
                let eth = q.ethereum.as_ref();
                let call = eth.map(|e| EthereumCallView::for_deposit(e, &minor));
                let uri = match (&q.bitcoin, eth, &call) {
                    (Some(b), _, _) => Some(format!(
                        "bitcoin:{}?amount={}",
                        b.address,
                        bip21_amount(&q.due)
                    )),
                    (None, Some(e), Some(c)) => Some(c.eip681(e.chain_id)),
                    _ => None,
                };
                let view = MethodView {
                    asset: q.due.asset.code.clone(),
                    amount: q.due.to_decimal_string(),
                    amount_sat: (q.method == Method::Bitcoin).then(|| minor.clone()),
                    amount_wei: (q.method == Method::Ethereum).then(|| minor.clone()),
                    amount_minor: minor.clone(),
                    rate: q.rate.price.normalize().to_string(),
                    address: q.bitcoin.as_ref().map(|b| b.address.clone()),
                    uri,
                    confirmations_required: q
                        .bitcoin
                        .as_ref()
                        .map(|b| b.confirmations)
                        .or(eth.map(|e| e.confirmations)),
                    chain_id: eth.map(|e| e.chain_id),
                    escrow: eth.map(|e| e.escrow.clone()),
                    payment_id: eth.map(|e| e.payment_id.clone()),
                    token: eth.and_then(|e| e.token.clone()),
                    approve: eth.and_then(|e| EthereumCallView::for_approve(e, &minor)),
                    call,
                    reclaimable_at: eth
                        .map(|e| rfc3339(Timestamp(i64::try_from(e.expiry).unwrap_or(i64::MAX)))),
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
            capture_tx: p.capture_tx.clone(),
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
