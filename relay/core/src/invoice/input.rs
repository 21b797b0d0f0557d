//! What the outside world says about an invoice: the inputs [`Invoice::apply`] decides on, and
//! what each one did.

use super::*;

/// What the outside world says about a payment. Adapters produce these; `Invoice::apply` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceInput {
    /// A payment seen (or seen again) on a rail, pending or confirmed.
    Observe {
        reference: PaymentRef,
        method: Method,
        asset: String,
        amount: Amount,
        confirmed: bool,
        confirmations: u32,
        /// When the payment happened, if earlier than now (a block found while catching up).
        /// Decides whether it was in time; `None` means now.
        seen_at: Option<Timestamp>,
    },
    /// The payment is gone: reorged out, replaced, failed, or disputed.
    Drop {
        reference: PaymentRef,
        status: PaymentStatus,
    },
    /// An attempt to pay that failed (a declined card). The invoice stays payable; a failure
    /// reported after the same payment succeeded changes nothing.
    Fail {
        reference: PaymentRef,
        method: Method,
        asset: String,
        amount: Amount,
    },
    /// The payer disputes a payment (a chargeback). Implies the payment had succeeded, so it is
    /// recorded as such if this is the first word of it (events may arrive out of order).
    Dispute {
        reference: PaymentRef,
        method: Method,
        asset: String,
        amount: Amount,
    },
    /// `total_refunded` of the payment has been refunded so far. Implies the payment had
    /// succeeded. Totals only grow: a stale, smaller total changes nothing.
    Refund {
        reference: PaymentRef,
        method: Method,
        asset: String,
        amount: Amount,
        total_refunded: Amount,
    },
    /// An escrow deposit went back to its payer (`Voided` or `Reclaimed`). A deposit never
    /// credited to the invoice (its terms did not match) is recorded here for the first time.
    Return {
        reference: PaymentRef,
        method: Method,
        asset: String,
        amount: Amount,
        seen_at: Option<Timestamp>,
        status: PaymentStatus,
    },
    /// An escrow deposit was captured to the merchant by transaction `tx`, less `fee`.
    Captured {
        reference: PaymentRef,
        tx: String,
        fee: Amount,
    },
    /// The merchant asks to refund `amount` (default: all that is left) of `payment` (default:
    /// the first final payment with something left to refund). Bitcoin refunds name the payer's
    /// address. A known `id` changes nothing.
    RequestRefund {
        id: String,
        payment: Option<PaymentRef>,
        amount: Option<Amount>,
        to: Option<RefundAddress>,
    },
    /// The gateway took refund `id` under its own id (its webhook confirms it later).
    RefundSubmitted { id: String, gateway_refund: String },
    /// The rail paid refund `id` (by transaction `tx`, or as the gateway's refund).
    RefundPaid {
        id: String,
        tx: Option<String>,
        gateway_refund: Option<String>,
    },
    /// Output `vout` of bitcoin transaction `txid` paid refund `id` (one output pays one
    /// refund; another output of the same transaction may pay another).
    BitcoinRefundPaid { id: String, txid: String, vout: u32 },
    /// Refund `id` could not be carried out; its amount is refundable again.
    RefundFailed { id: String, reason: String },
    /// The merchant wants held settlement `id` paid, worth `amount` at the current rate.
    ReleaseSettlement { id: SettlementId, amount: Amount },
    /// The merchant says its wallet paid bitcoin refund `id` in transaction `tx`: an output of
    /// that transaction to the refund's address pays it (also when another merchant owes the
    /// same address a refund).
    RefundClaimed { id: String, tx: String },
    /// The transaction `tx` that paid bitcoin refund `id` left the chain: it is pending again.
    RefundReverted { id: String, tx: String },
    /// The card PaymentIntent was canceled at the gateway (or can no longer be charged).
    IntentClosed,
    /// Settlement `id` waits for the operator's liquidity.
    SettlementQueued { id: SettlementId },
    /// The escrow paid settlement `id` in transaction `tx`.
    SettlementPaid { id: SettlementId, tx: String },
    /// Payment `reference` arrived after its method's quote expired: it is worth what it was
    /// worth at `rate` (the price of one of its asset in the invoice's currency when it came).
    Reprice { reference: PaymentRef, rate: Rate },
    /// What the merchant's risk rules made of payment `reference`, assessed when it was first
    /// seen. The first assessment stays. Anything but `allow` opens its review (closed by itself
    /// at `deadline`, if any).
    Assess {
        reference: PaymentRef,
        assessment: crate::risk::Assessment,
        deadline: Option<Timestamp>,
    },
    /// What the risk rules made of the card about to be confirmed from the checkout page (none:
    /// forget it, the card was declined). The card payment takes it when it is recorded.
    CardAssessed {
        assessment: Option<crate::risk::Assessment>,
    },
    /// A reviewer approves (or rejects) review `id`. Closing it again the same way changes
    /// nothing; the other way, or approving a sanctioned payment, is refused.
    CloseReview { id: String, approve: bool },
    /// Re-evaluate against the clock (expiry).
    Tick,
    /// The merchant cancels a still-unpaid invoice.
    Cancel,
}

impl InvoiceInput {
    /// The payment an input may record for the first time.
    pub(super) fn payment_reference(&self) -> Option<&PaymentRef> {
        match self {
            InvoiceInput::Observe { reference, .. }
            | InvoiceInput::Fail { reference, .. }
            | InvoiceInput::Dispute { reference, .. }
            | InvoiceInput::Refund { reference, .. }
            | InvoiceInput::Return { reference, .. } => Some(reference),
            _ => None,
        }
    }
}

/// What an input did: whether anything changed, and the events to emit (in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transition {
    pub changed: bool,
    pub events: Vec<EventType>,
}
