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
    /// Refunds requested, oldest first.
    pub refunds: Vec<RefundView>,
    /// True when more payments arrived than one invoice records (100): those beyond were not
    /// recorded or credited. Look at the invoice's address on chain.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub payments_capped: bool,
    /// A payment of it is held for the merchant's review (see each payment's `review`).
    pub in_review: bool,
    /// Merchants paid on Ethereum: how the card and bitcoin payments reach them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<SettlementPlanView>,
    /// The payer's page: send the payer here (no key needed). Its token is unguessable and is
    /// not the invoice id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
    /// Where the checkout page sends the payer back once the invoice is paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RefundView {
    /// `re_…`
    pub id: String,
    pub object: &'static str,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// The refunded payment's reference.
    pub payment: String,
    pub method: String,
    pub asset: String,
    pub amount: String,
    pub amount_minor: String,
    /// Bitcoin: the payer's address, which the merchant's wallet pays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Bitcoin: a BIP21 URI for the merchant's wallet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The transaction that paid it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    /// Bitcoin: the transaction the merchant named as its payment (`…/refunds/{id}/paid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_tx: Option<String>,
    /// Card: the gateway's refund id, once the gateway took it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_refund: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub created_at: String,
}

impl RefundView {
    pub fn of(inv: &Invoice, r: &relay_core::Refund) -> RefundView {
        let decimals = inv
            .quote_for(r.method)
            .map(|q| q.due.asset.decimals)
            .unwrap_or(0);
        let amount = r.amount.to_decimal_string(decimals);
        RefundView {
            id: r.id.clone(),
            object: "refund",
            status: enum_str(&r.status),
            payment: r.payment.to_string(),
            method: r.method.as_str().to_owned(),
            asset: r.asset.clone(),
            uri: r.address.as_ref().map(|a| {
                let s = amount.trim_end_matches('0').trim_end_matches('.');
                format!("bitcoin:{a}?amount={s}")
            }),
            amount,
            amount_minor: r.amount.to_string(),
            address: r.address.clone(),
            tx: r.tx.clone(),
            claimed_tx: r.claimed_tx.clone(),
            gateway_refund: r.gateway_refund.clone(),
            failure: r.failure.clone(),
            created_at: rfc3339(r.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SettlementPlanView {
    /// What the whole price is worth in the settlement asset, at the rate locked at creation.
    pub asset: String,
    pub amount: String,
    pub amount_minor: String,
    pub rate: String,
    /// The merchant's payout address.
    pub payout: String,
    pub settlements: Vec<SettlementView>,
}

#[derive(Serialize, ToSchema)]
pub struct SettlementView {
    /// The escrow's settlement id (`0x…`), derived from the invoice and the payment.
    pub id: String,
    /// `pending`, `queued` (waiting for the operator's liquidity), `held` or `paid`.
    pub status: String,
    /// Why it is held: `payment_not_final`, `late`, `after_cancel`, `over_payment` or
    /// `replacement`. Only `payment_not_final` is released by itself (when the payment is final
    /// again); the others are never paid automatically.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_reason: Option<String>,
    /// Every payment it pays for, when it pays for several (one `settle` for them all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub payments: Vec<String>,
    pub payment: String,
    /// Recorded on chain: the PaymentIntent id or the bitcoin txid.
    pub source_ref: String,
    pub amount: String,
    pub amount_minor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
}

/// A merchant's ledger balances (`GET /v1/balances`).
#[derive(Serialize, ToSchema)]
pub struct BalancesView {
    pub object: &'static str,
    /// One row per asset the merchant has seen money in.
    pub balances: Vec<AssetBalanceView>,
    /// The merchant's refund reserves in the escrow, one row per Ethereum asset (empty without an
    /// Ethereum rail or a payout address): what refunds after a capture are paid from.
    pub refund_reserves: Vec<RefundReserveView>,
}

/// One asset of a merchant's refund reserve in the escrow, in base units.
#[derive(Serialize, ToSchema)]
pub struct RefundReserveView {
    pub asset: String,
    /// What the escrow holds for the merchant's refunds now.
    pub reserve_minor: String,
    /// What pending refunds will take from it.
    pub pending_minor: String,
    /// What a new refund may use: the reserve less the pending refunds.
    pub available_minor: String,
}

/// Balances of one asset, in minor units. Each account's balance is on its normal side; the
/// merchant's share is `pending + held + available + paid_out − refunded − liability`.
#[derive(Serialize, ToSchema)]
pub struct AssetBalanceView {
    pub asset: String,
    /// Every account in minor units: `payers`, `pending`, `held` (payments held by a risk
    /// review), `available`, `paid_out`, `refunded`, `liability`, `fees`, `treasury`,
    /// `liquidity`. A value on the account's unusual side is prefixed with `-`.
    pub accounts: BTreeMap<String, String>,
    /// The accounts sum to zero (every entry is balanced).
    pub balanced: bool,
}

impl BalancesView {
    pub fn of(b: &relay_core::Balances) -> BalancesView {
        let mut assets: Vec<&str> = b.0.keys().map(|(a, _)| a.as_str()).collect();
        assets.dedup();
        let unbalanced = b.unbalanced_assets();
        BalancesView {
            object: "balances",
            refund_reserves: Vec::new(),
            balances: assets
                .into_iter()
                .map(|asset| AssetBalanceView {
                    asset: asset.to_owned(),
                    accounts: relay_core::Account::ALL
                        .into_iter()
                        .map(|acc| {
                            let net = b.get(asset, acc);
                            let value = match net.on_normal_side(acc) {
                                Some(a) => a.to_string(),
                                None if acc.credit_normal() => format!("-{}", net.debit),
                                None => format!("-{}", net.credit),
                            };
                            (acc.as_str().to_owned(), value)
                        })
                        .collect(),
                    balanced: !unbalanced.iter().any(|u| u == asset),
                })
                .collect(),
        }
    }
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
    /// The merchant's spread taken off the market rate, in basis points (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_spread_bps: Option<u16>,
    /// When the locked rate stops holding (RFC 3339): a payment arriving later is priced at the
    /// rate of its arrival. Absent for a method paid in the price's own asset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote_expires_at: Option<String>,
    /// Where the rate came from: the providers whose prices made it, or `fixed` (the configured
    /// table).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rate_sources: Vec<String>,
    /// When the rate's oldest price was made (RFC 3339), for live rates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_as_of: Option<String>,
    /// Bitcoin: the address of this invoice alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Bitcoin: `true` while the address waits to be derived until the payer chooses bitcoin
    /// (`POST /pay/{token}/methods/bitcoin`); absent once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_on_demand: Option<bool>,
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
        let hex = |a: &dyn std::fmt::LowerHex| format!("{a:#x}");
        match &e.token {
            None => EthereumCallView {
                to: hex(&e.escrow),
                function: "deposit(address,uint64,bytes32)".into(),
                args: vec![hex(&e.merchant), e.expiry.to_string(), hex(&e.salt)],
                value: amount.to_owned(),
            },
            Some(token) => EthereumCallView {
                to: hex(&e.escrow),
                function: "depositToken(address,address,uint256,uint64,bytes32)".into(),
                args: vec![
                    hex(&e.merchant),
                    hex(token),
                    amount.to_owned(),
                    e.expiry.to_string(),
                    hex(&e.salt),
                ],
                value: "0".into(),
            },
        }
    }

    fn for_approve(e: &relay_core::EthereumPayTo, amount: &str) -> Option<EthereumCallView> {
        e.token.as_ref().map(|token| EthereumCallView {
            to: format!("{token:#x}"),
            function: "approve(address,uint256)".into(),
            args: vec![format!("{:#x}", e.escrow), amount.to_owned()],
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
    /// Escrow payments: the relay's fee taken at capture, minor units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_minor: Option<String>,
    /// It arrived after its quote expired: `priced` (at `rate`, the rate of its arrival) or
    /// `awaiting_rate` (no usable rate yet: it counts for nothing until it has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repricing: Option<&'static str>,
    /// The rate it was priced at, when it arrived after its quote expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// What it is worth in the invoice's currency (major units): at the locked rate, or at its
    /// own rate of arrival.
    pub worth: String,
    /// What the merchant's risk rules made of it: its score and the reasons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<risk::RiskView>,
    /// Its review, when the rules (or a sanctions list) asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<risk::ReviewStateView>,
    /// Held by its review (uncaptured in the escrow, authorized on the card, or its
    /// settlement waiting): not counted toward the price until approved.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
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
                    rate_spread_bps: (q.rate.spread_bps > 0).then_some(q.rate.spread_bps),
                    quote_expires_at: q
                        .expires_at
                        .map(|_| rfc3339(inv.quote_expires_at(q.method))),
                    rate_sources: q.rate.sources.clone(),
                    rate_as_of: q.rate.as_of.map(rfc3339),
                    address: q.bitcoin.as_ref().map(|b| b.address.clone()),
                    address_on_demand: (q.method == Method::Bitcoin && q.bitcoin.is_none())
                        .then_some(true),
                    uri,
                    confirmations_required: q
                        .bitcoin
                        .as_ref()
                        .map(|b| b.confirmations)
                        .or(eth.map(|e| e.confirmations)),
                    chain_id: eth.map(|e| e.chain_id),
                    escrow: eth.map(|e| format!("{:#x}", e.escrow)),
                    payment_id: eth.map(|e| format!("{:#x}", e.payment_id)),
                    token: eth.and_then(|e| e.token.map(|t| format!("{t:#x}"))),
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
            checkout_url: inv.checkout.as_ref().map(|c| c.url.clone()),
            redirect_url: inv.redirect_url.clone(),
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
            refunds: inv.refunds.iter().map(|r| RefundView::of(inv, r)).collect(),
            payments_capped: inv.payments_capped,
            in_review: inv.in_review(),
            settlement: inv.settle_to.as_ref().map(|to| SettlementPlanView {
                asset: to.due.asset.code.clone(),
                amount: to.due.to_decimal_string(),
                amount_minor: to.due.amount.to_string(),
                rate: to.rate.price.normalize().to_string(),
                payout: to.payout.clone(),
                settlements: inv
                    .settlements
                    .iter()
                    .map(|s| SettlementView {
                        id: s.id.to_string(),
                        status: enum_str(&s.status),
                        hold_reason: s.hold_reason().map(|r| r.as_str().to_owned()),
                        payments: s.parts.iter().map(|p| p.payment.to_string()).collect(),
                        payment: s.payment.to_string(),
                        source_ref: s.source_ref.clone(),
                        amount: s.amount.to_decimal_string(to.due.asset.decimals),
                        amount_minor: s.amount.to_string(),
                        tx: s.tx.clone(),
                    })
                    .collect(),
            }),
        }
    }
}

impl PaymentView {
    pub fn of(inv: &Invoice, p: &Payment) -> PaymentView {
        let asset = inv.quote_for(p.method).map(|q| &q.due.asset);
        PaymentView {
            reference: p.reference.to_string(),
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
            fee_minor: p.capture_tx.as_ref().map(|_| p.fee.to_string()),
            repricing: inv.priced_on_arrival(p).then_some(if p.rate.is_some() {
                "priced"
            } else {
                "awaiting_rate"
            }),
            rate: p.rate.as_ref().map(|r| r.price.normalize().to_string()),
            worth: relay_core::Amount(
                inv.worth(p.method, [p])
                    .min(alloy_primitives::U256::from(u128::MAX)),
            )
            .to_decimal_string(inv.price.asset.decimals),
            risk: p.risk.as_ref().map(risk::RiskView::of),
            review: p.review.as_ref().map(risk::ReviewStateView::of),
            held: inv.held(p),
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

/// A payment link, as the merchant's API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentLinkView {
    /// `plink_…`
    pub id: String,
    /// `payment_link`
    pub object: &'static str,
    /// The URL to share: each visit makes an invoice (or, single-use, goes back to the one it
    /// made) and sends the payer to its checkout page.
    pub url: String,
    /// The price in major units, e.g. `"25.00"`.
    pub amount: String,
    pub currency: String,
    pub description: Option<String>,
    /// One invoice per visit (`true`), or one payment in all (`false`).
    pub reusable: bool,
    /// The methods each invoice offers (absent: the merchant's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_methods: Option<Vec<String>>,
    pub redirect_url: Option<String>,
    /// Seconds each invoice made from it is payable.
    pub expires_in: i64,
    /// A deactivated link makes no more invoices.
    pub active: bool,
    /// Single-use: the invoice it made last (`inv_…`).
    pub invoice: Option<String>,
    pub created_at: String,
}

impl PaymentLinkView {
    pub fn of(link: &relay_core::PaymentLink) -> PaymentLinkView {
        PaymentLinkView {
            id: link.id.to_string(),
            object: "payment_link",
            url: link.url.clone(),
            amount: link.price.to_decimal_string(),
            currency: link.price.asset.code.clone(),
            description: link.description.clone(),
            reusable: link.reusable,
            payment_methods: link
                .methods
                .as_ref()
                .map(|ms| ms.iter().map(|m| m.as_str().to_owned()).collect()),
            redirect_url: link.redirect_url.clone(),
            expires_in: link.expires_in,
            active: link.active,
            invoice: link.invoice.as_ref().map(ToString::to_string),
            created_at: rfc3339(link.created_at),
        }
    }
}

mod payer;
pub mod risk;
