//! What one invoice change posts beside the invoice: its ledger entry and the change of its payout
//! work. Every store writes a [`Posting`] in the transaction that writes the invoice; none
//! computes one itself, so every backend keeps the same books.

use super::{entry_lines, Line};
use crate::invoice::{Invoice, Method};
use crate::payout::SettlementStatus;
use crate::{InvoiceId, RefundStatus};
use std::collections::BTreeMap;

/// Kinds of payout work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PayoutKind {
    /// A pending refund of an escrow payment (a void or an escrow refund to send).
    EthRefund,
    /// A cross-rail settlement to send (pending or queued for liquidity).
    Settlement,
    /// A bitcoin refund the merchant's wallet pays, pending or paid (a paid one stays watched: a
    /// reorg can take its payment out again); `value` is the script to watch (hex).
    BtcRefund,
    /// A pending card refund the gateway has not accepted yet (asked again until it does).
    CardRefund,
    /// The PaymentIntent of an expired or canceled invoice, to cancel at the gateway
    /// (`record` is its id).
    CardCancel,
}

impl PayoutKind {
    pub const ALL: [PayoutKind; 5] = [
        PayoutKind::EthRefund,
        PayoutKind::Settlement,
        PayoutKind::BtcRefund,
        PayoutKind::CardRefund,
        PayoutKind::CardCancel,
    ];

    /// The kind's name in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutKind::EthRefund => "eth-refund",
            PayoutKind::Settlement => "settlement",
            PayoutKind::BtcRefund => "btc-refund",
            PayoutKind::CardRefund => "card-refund",
            PayoutKind::CardCancel => "card-cancel",
        }
    }

    pub fn parse(s: &str) -> Option<PayoutKind> {
        PayoutKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Which piece of payout work: its kind, its invoice and the record (a refund, settlement or
/// PaymentIntent id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PayoutRef {
    pub kind: PayoutKind,
    pub invoice: InvoiceId,
    pub record: String,
}

/// One record of payout work: the invoice, the refund or settlement id, and a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutWork {
    pub invoice: InvoiceId,
    pub record: String,
    pub value: Vec<u8>,
}

/// The payout work an invoice stands for.
pub fn payout_work(invoice: &Invoice) -> BTreeMap<PayoutRef, Vec<u8>> {
    let mut work = BTreeMap::new();
    let mut add = |kind, record: &str, value: Vec<u8>| {
        let at = PayoutRef {
            kind,
            invoice: invoice.id.clone(),
            record: record.to_owned(),
        };
        work.insert(at, value);
    };
    for r in &invoice.refunds {
        let script = || {
            r.script_pubkey
                .as_ref()
                .map(|s| s.to_string().into_bytes())
                .unwrap_or_default()
        };
        match (r.method, r.status) {
            // Bitcoin refunds stay watched once paid: a reorg can take their payment out again.
            (Method::Bitcoin, RefundStatus::Succeeded | RefundStatus::Pending) => {
                add(PayoutKind::BtcRefund, &r.id, script())
            }
            (Method::Ethereum, RefundStatus::Pending) => add(PayoutKind::EthRefund, &r.id, vec![]),
            // Until the gateway has accepted it (its refund id is recorded): to ask it again
            // after a crash or a gateway outage. Its webhook finishes it.
            (Method::Card, RefundStatus::Pending) if r.gateway_refund.is_none() => {
                add(PayoutKind::CardRefund, &r.id, vec![])
            }
            _ => {}
        }
    }
    for s in &invoice.settlements {
        if s.status != SettlementStatus::Paid {
            add(PayoutKind::Settlement, &s.id.to_string(), vec![]);
        }
    }
    if let Some(intent) = invoice.intent_to_close() {
        add(PayoutKind::CardCancel, intent, vec![]);
    }
    work
}

/// What one invoice change posts: the entry `position(after) − position(before)` and the change
/// of the invoice's payout work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// The invoice version the entry is posted under.
    pub version: u64,
    pub lines: Vec<Line>,
    pub payouts_removed: Vec<PayoutRef>,
    /// New or changed work, with its value.
    pub payouts_added: Vec<(PayoutRef, Vec<u8>)>,
}

impl Posting {
    /// The posting of a change from `before` (none: a new invoice) to `after`.
    pub fn of(before: Option<&Invoice>, after: &Invoice) -> Posting {
        let old = before.map(payout_work).unwrap_or_default();
        let new = payout_work(after);
        Posting {
            version: after.version,
            lines: entry_lines(before, after),
            payouts_removed: old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .cloned()
                .collect(),
            payouts_added: new
                .into_iter()
                .filter(|(k, v)| old.get(k) != Some(v))
                .collect(),
        }
    }

    /// Whether the change gives the operator or a watcher something new to do.
    pub fn adds_payouts(&self) -> bool {
        !self.payouts_added.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.payouts_removed.is_empty() && self.payouts_added.is_empty()
    }
}
