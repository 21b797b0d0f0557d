//! Card gateway events as plain values, and what each means for an invoice.
//!
//! The card adapter verifies and parses the gateway's webhooks (or retrieves a PaymentIntent when a
//! webhook was missed) into a [`GatewayEvent`]; [`GatewayEvent::input`] turns it into the
//! [`InvoiceInput`] the invoice state machine applies. Every mapping is idempotent and tolerates
//! any delivery order, because gateways retry and reorder webhooks.

use crate::invoice::{InvoiceInput, Method};
use crate::money::Amount;
use crate::reference::PaymentRef;
use crate::time::Timestamp;

/// One event from the card gateway, already verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEvent {
    /// The gateway's event id (`evt_…`), the key for ignoring duplicates.
    pub id: String,
    pub kind: GatewayEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayEventKind {
    /// The PaymentIntent succeeded: `amount` (minor units of `currency`) was charged.
    PaymentSucceeded {
        intent: String,
        amount: Amount,
        currency: String,
        /// When the gateway says the charge was made (its own clock): what decides whether the
        /// payment was in time, however late its webhook arrives.
        at: Option<Timestamp>,
    },
    /// The PaymentIntent (with manual capture) is authorized: `amount` is held on the card,
    /// not charged until it is captured.
    PaymentAuthorized {
        intent: String,
        amount: Amount,
        currency: String,
    },
    /// An attempt on the PaymentIntent failed (declined card); the payer may try again.
    PaymentFailed {
        intent: String,
        amount: Amount,
        currency: String,
    },
    /// A charge of the PaymentIntent was refunded, `amount_refunded` in total so far.
    Refunded {
        intent: String,
        amount: Amount,
        amount_refunded: Amount,
        currency: String,
    },
    /// The payer opened a dispute on the charge.
    DisputeCreated {
        intent: String,
        amount: Amount,
        currency: String,
    },
    /// An event type the relay does not act on (recorded, answered, ignored).
    Other { kind: String },
}

impl GatewayEvent {
    /// The PaymentIntent the event is about, which finds the invoice.
    pub fn intent(&self) -> Option<&str> {
        match &self.kind {
            GatewayEventKind::PaymentSucceeded { intent, .. }
            | GatewayEventKind::PaymentAuthorized { intent, .. }
            | GatewayEventKind::PaymentFailed { intent, .. }
            | GatewayEventKind::Refunded { intent, .. }
            | GatewayEventKind::DisputeCreated { intent, .. } => Some(intent),
            GatewayEventKind::Other { .. } => None,
        }
    }

    /// What the event means for the invoice of its PaymentIntent. The payment's reference is the
    /// PaymentIntent id: one intent is one payment, however many attempts it takes.
    pub fn input(&self) -> Option<InvoiceInput> {
        let method = Method::Card;
        Some(match &self.kind {
            GatewayEventKind::PaymentSucceeded {
                intent,
                amount,
                currency,
                at,
            } => InvoiceInput::Observe {
                reference: PaymentRef::Card(intent.clone()),
                method,
                asset: currency.to_ascii_uppercase(),
                amount: *amount,
                confirmed: true,
                confirmations: 1,
                seen_at: *at,
            },
            GatewayEventKind::PaymentAuthorized {
                intent,
                amount,
                currency,
            } => InvoiceInput::Observe {
                reference: PaymentRef::Card(intent.clone()),
                method,
                asset: currency.to_ascii_uppercase(),
                amount: *amount,
                confirmed: false,
                confirmations: 0,
                seen_at: None,
            },
            GatewayEventKind::PaymentFailed {
                intent,
                amount,
                currency,
            } => InvoiceInput::Fail {
                reference: PaymentRef::Card(intent.clone()),
                method,
                asset: currency.to_ascii_uppercase(),
                amount: *amount,
            },
            GatewayEventKind::Refunded {
                intent,
                amount,
                amount_refunded,
                currency,
            } => InvoiceInput::Refund {
                reference: PaymentRef::Card(intent.clone()),
                method,
                asset: currency.to_ascii_uppercase(),
                amount: *amount,
                total_refunded: *amount_refunded,
            },
            GatewayEventKind::DisputeCreated {
                intent,
                amount,
                currency,
            } => InvoiceInput::Dispute {
                reference: PaymentRef::Card(intent.clone()),
                method,
                asset: currency.to_ascii_uppercase(),
                amount: *amount,
            },
            GatewayEventKind::Other { .. } => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoice::{Invoice, InvoiceStatus, NewInvoice, PaymentStatus};
    use crate::{AssetBook, EventType, FixedRates, InvoiceId, MerchantId, Money, Timestamp};
    use proptest::prelude::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

    fn card_invoice() -> Invoice {
        let params = NewInvoice {
            merchant_id: MerchantId::from_entropy([1; 12]),
            price: Money {
                asset: crate::Asset::fiat("USD", 2),
                amount: Amount::from_minor(2500),
            },
            order_id: None,
            description: None,
            metadata: Default::default(),
            expires_at: T0.plus_seconds(900),
            methods: vec![Method::Card],
            tolerance_bps: 0,
            eth_asset: None,
        };
        let quotes = params
            .quote(&AssetBook::default(), &FixedRates::default())
            .unwrap();
        Invoice::create(InvoiceId::from_entropy([2; 12]), params, quotes, T0)
            .unwrap()
            .0
    }

    fn ev(kind: u8) -> GatewayEvent {
        let (intent, amount, currency) = (
            "pi_1".to_owned(),
            Amount::from_minor(2500),
            "usd".to_owned(),
        );
        let kind = match kind {
            0 => GatewayEventKind::PaymentSucceeded {
                intent,
                amount,
                currency,
                at: None,
            },
            1 => GatewayEventKind::PaymentFailed {
                intent,
                amount,
                currency,
            },
            2 => GatewayEventKind::Refunded {
                intent,
                amount,
                amount_refunded: Amount::from_minor(1000),
                currency,
            },
            _ => GatewayEventKind::DisputeCreated {
                intent,
                amount,
                currency,
            },
        };
        GatewayEvent {
            id: format!("evt_{kind:?}"),
            kind,
        }
    }

    fn apply(inv: &mut Invoice, e: &GatewayEvent) -> Vec<EventType> {
        inv.apply(e.input().unwrap(), T0.plus_seconds(5))
            .unwrap()
            .events
    }

    #[test]
    fn success_settles_and_failure_keeps_the_invoice_payable() {
        let mut inv = card_invoice();
        assert_eq!(apply(&mut inv, &ev(1)), vec![EventType::PaymentFailed]);
        assert_eq!(inv.status, InvoiceStatus::New);
        let events = apply(&mut inv, &ev(0));
        assert_eq!(
            events,
            vec![EventType::PaymentConfirmed, EventType::InvoiceSettled]
        );
        assert_eq!(inv.status, InvoiceStatus::Settled);
        // A failure reported late for the same intent cannot undo the success.
        assert!(apply(&mut inv, &ev(1)).is_empty());
        assert_eq!(inv.status, InvoiceStatus::Settled);
    }

    #[test]
    fn refund_before_success_ends_settled_and_refunded() {
        let mut inv = card_invoice();
        let events = apply(&mut inv, &ev(2));
        assert!(events.contains(&EventType::RefundSucceeded));
        assert!(events.contains(&EventType::InvoiceSettled));
        assert!(
            apply(&mut inv, &ev(0)).is_empty(),
            "success after the refund changes nothing"
        );
        assert_eq!(inv.payments[0].refunded, Amount::from_minor(1000));
        assert_eq!(inv.payments[0].status, PaymentStatus::Confirmed);
    }

    #[test]
    fn dispute_marks_the_payment_and_keeps_the_invoice_settled() {
        let mut inv = card_invoice();
        apply(&mut inv, &ev(0));
        assert_eq!(apply(&mut inv, &ev(3)), vec![EventType::PaymentDisputed]);
        assert_eq!(inv.payments[0].status, PaymentStatus::Disputed);
        assert_eq!(inv.status, InvoiceStatus::Settled);
        assert!(
            apply(&mut inv, &ev(0)).is_empty(),
            "a repeated success does not clear a dispute"
        );
    }

    proptest! {
        /// Any order and any repetition of the same four events ends in the same state.
        #[test]
        fn delivery_order_does_not_matter(order in proptest::collection::vec(0u8..4, 1..12)) {
            let mut inv = card_invoice();
            for k in &order {
                inv.apply(ev(*k).input().unwrap(), T0.plus_seconds(5)).unwrap();
            }
            let mut all = order.clone();
            all.sort();
            all.dedup();
            let mut reference = card_invoice();
            for k in [0u8, 1, 2, 3] {
                if all.contains(&k) {
                    reference.apply(ev(k).input().unwrap(), T0.plus_seconds(5)).unwrap();
                }
            }
            prop_assert_eq!(inv.status, reference.status);
            prop_assert_eq!(inv.exception, reference.exception);
            prop_assert_eq!(&inv.payments, &reference.payments);
        }
    }
}
