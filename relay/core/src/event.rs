//! Events: what happened, for the merchant. Each is written in the same atomic step as the change
//! that caused it (the transactional outbox), carries a snapshot of its subject at that instant, and
//! is later listed by the API and delivered as a signed webhook.

use crate::id::{EventId, MerchantId};
use crate::invoice::Invoice;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventType {
    #[serde(rename = "invoice.created")]
    InvoiceCreated,
    #[serde(rename = "invoice.processing")]
    InvoiceProcessing,
    #[serde(rename = "invoice.settled")]
    InvoiceSettled,
    #[serde(rename = "invoice.expired")]
    InvoiceExpired,
    #[serde(rename = "invoice.invalid")]
    InvoiceInvalid,
    #[serde(rename = "payment.pending")]
    PaymentPending,
    #[serde(rename = "payment.confirmed")]
    PaymentConfirmed,
    #[serde(rename = "payment.reverted")]
    PaymentReverted,
    #[serde(rename = "payment.replaced")]
    PaymentReplaced,
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[serde(rename = "payment.disputed")]
    PaymentDisputed,
    #[serde(rename = "payment.captured")]
    PaymentCaptured,
    #[serde(rename = "payment.voided")]
    PaymentVoided,
    #[serde(rename = "payment.reclaimed")]
    PaymentReclaimed,
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[serde(rename = "refund.pending")]
    RefundPending,
    #[serde(rename = "refund.failed")]
    RefundFailed,
    #[serde(rename = "settlement.pending")]
    SettlementPending,
    #[serde(rename = "settlement.queued")]
    SettlementQueued,
    #[serde(rename = "settlement.paid")]
    SettlementPaid,
    #[serde(rename = "settlement.held")]
    SettlementHeld,
    #[serde(rename = "review.opened")]
    ReviewOpened,
    #[serde(rename = "review.closed")]
    ReviewClosed,
}

impl EventType {
    pub const ALL: [EventType; 23] = [
        EventType::InvoiceCreated,
        EventType::InvoiceProcessing,
        EventType::InvoiceSettled,
        EventType::InvoiceExpired,
        EventType::InvoiceInvalid,
        EventType::PaymentPending,
        EventType::PaymentConfirmed,
        EventType::PaymentReverted,
        EventType::PaymentReplaced,
        EventType::PaymentFailed,
        EventType::PaymentDisputed,
        EventType::PaymentCaptured,
        EventType::PaymentVoided,
        EventType::PaymentReclaimed,
        EventType::RefundSucceeded,
        EventType::RefundPending,
        EventType::RefundFailed,
        EventType::SettlementPending,
        EventType::SettlementQueued,
        EventType::SettlementPaid,
        EventType::SettlementHeld,
        EventType::ReviewOpened,
        EventType::ReviewClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::InvoiceCreated => "invoice.created",
            EventType::InvoiceProcessing => "invoice.processing",
            EventType::InvoiceSettled => "invoice.settled",
            EventType::InvoiceExpired => "invoice.expired",
            EventType::InvoiceInvalid => "invoice.invalid",
            EventType::PaymentPending => "payment.pending",
            EventType::PaymentConfirmed => "payment.confirmed",
            EventType::PaymentReverted => "payment.reverted",
            EventType::PaymentReplaced => "payment.replaced",
            EventType::PaymentFailed => "payment.failed",
            EventType::PaymentDisputed => "payment.disputed",
            EventType::PaymentCaptured => "payment.captured",
            EventType::PaymentVoided => "payment.voided",
            EventType::PaymentReclaimed => "payment.reclaimed",
            EventType::RefundSucceeded => "refund.succeeded",
            EventType::RefundPending => "refund.pending",
            EventType::RefundFailed => "refund.failed",
            EventType::SettlementPending => "settlement.pending",
            EventType::SettlementQueued => "settlement.queued",
            EventType::SettlementPaid => "settlement.paid",
            EventType::SettlementHeld => "settlement.held",
            EventType::ReviewOpened => "review.opened",
            EventType::ReviewClosed => "review.closed",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub merchant_id: MerchantId,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub created_at: Timestamp,
    /// The invoice as it was right after the change.
    pub invoice: Invoice,
}

impl Event {
    /// Builds the events of one step; `ids` supplies one fresh id per event. Each kind is
    /// emitted once per step, however many times the step caused it: every event carries the
    /// same snapshot of the invoice, so a repeat would say nothing new (and a step with thousands
    /// of payments would otherwise write thousands of copies of a large invoice).
    pub fn for_invoice(
        invoice: &Invoice,
        kinds: &[EventType],
        now: Timestamp,
        mut ids: impl FnMut() -> EventId,
    ) -> Vec<Event> {
        let mut seen = Vec::with_capacity(kinds.len().min(16));
        kinds
            .iter()
            .filter(|k| {
                let first = !seen.contains(*k);
                if first {
                    seen.push(**k);
                }
                first
            })
            .map(|&kind| Event {
                id: ids(),
                merchant_id: invoice.merchant_id.clone(),
                kind,
                created_at: now,
                invoice: invoice.clone(),
            })
            .collect()
    }
}
