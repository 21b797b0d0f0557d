//! The operator's decisions: what the relay does with its own key on the Ethereum rail — capture
//! or void an escrow deposit, pay a refund out of a merchant's reserve, send or queue a
//! cross-rail settlement — as pure functions of the invoice, what the chain shows, the chain's
//! time, the liquidity and the history of attempts. The binary only encodes, signs and sends
//! what these return.
//!
//! The rules, each property-tested below:
//! - an exact deposit made in time is captured, never voided automatically: a capture that keeps
//!   being refused is given up for the operator to look at, not turned into a void;
//! - a deposit with an operation under way (or done) gets no other: one deposit is never both
//!   captured and voided;
//! - a capture takes the whole deposit and at most the configured fee;
//! - a refund after capture is sent only when the merchant's refund reserve covers it: the
//!   operator's own money never pays a merchant's refund;
//! - a settlement is sent only while it is pending or queued and the liquidity covers it;
//! - a deposit under review waits, uncaptured, until a reviewer approves it (then it is
//!   captured) or rejects it (voided); an open review past its deadline, which falls before the
//!   payer may reclaim, is voided; a sanctioned deposit is never captured.

use crate::invoice::{Invoice, Method};
use crate::payout::{Refund, RefundStatus, Settlement, SettlementStatus};
use crate::reference::PaymentRef;
use crate::risk::ReviewStatus;
use alloy_primitives::{Address, B256, U256};

/// Refusals (escrow reverts, the operator's own caps) of one operation before it is given up.
pub const MAX_REFUSALS: u32 = 3;

/// An escrow deposit as the chain shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositView {
    pub id: B256,
    pub token: Address,
    pub amount: U256,
    /// From when the payer may reclaim it (unix seconds).
    pub expiry: u64,
    /// The time of the block it was made in.
    pub block_time: u64,
    /// Its confirmations now.
    pub depth: u32,
}

/// What was done for a deposit (or a refund, or a settlement) before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    /// An operation is pending, or was mined successfully.
    pub live: bool,
    /// How often one was refused for good (a revert, a cap).
    pub refused: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositAction {
    /// Not final yet, or an operation is under way.
    Wait,
    /// `capture(id, amount, fee)` of the whole deposit.
    Capture { fee: U256 },
    /// `void(id)`: the deposit goes back to its payer — if it is worth the gas
    /// ([`void_is_worth`]).
    Void,
    /// Refused too often: the operator must look at it. Nothing is sent.
    GiveUp,
}

/// Whether `d` is the deposit `invoice` asked for, made in time, still capturable at
/// `chain_time`, and not refunded in full before its capture.
pub fn capturable(invoice: &Invoice, d: &DepositView, chain_time: u64) -> bool {
    let Some(terms) = invoice
        .quote_for(Method::Ethereum)
        .and_then(|q| q.ethereum.as_ref())
    else {
        return false;
    };
    let exact = terms.payment_id == d.id;
    let deadline = match invoice.canceled_at {
        Some(c) => c.0.min(invoice.expires_at.0),
        None => invoice.expires_at.0,
    };
    let in_time = i64::try_from(d.block_time).unwrap_or(i64::MAX) < deadline;
    let reference = PaymentRef::eth(d.id);
    let refunded_in_full = invoice.refunds.iter().any(|r| {
        r.payment == reference && r.status == RefundStatus::Pending && r.amount.0 >= d.amount
    });
    exact && in_time && chain_time < d.expiry && !refunded_in_full
}

/// What to do with an open deposit (`invoice`: the one its salt names, if any).
pub fn deposit_action(
    invoice: Option<&Invoice>,
    d: &DepositView,
    chain_time: u64,
    attempts: Attempts,
    fee_bps: u16,
) -> DepositAction {
    let required = invoice.map_or(1, |i| i.confirmations_required(Method::Ethereum).max(1));
    if attempts.live || d.depth < required {
        return DepositAction::Wait;
    }
    if attempts.refused >= MAX_REFUSALS {
        return DepositAction::GiveUp;
    }
    let reference = PaymentRef::eth(d.id);
    let payment = invoice.and_then(|i| i.payments.iter().find(|p| p.reference == reference));
    if let Some(p) = payment {
        let sanctioned = p.risk.as_ref().is_some_and(|r| r.sanctioned);
        match &p.review {
            Some(r) if r.status == ReviewStatus::Rejected => return DepositAction::Void,
            Some(r) if r.status == ReviewStatus::Open => {
                let due = r
                    .deadline
                    .is_some_and(|t| i64::try_from(chain_time).unwrap_or(i64::MAX) >= t.0);
                return if due {
                    DepositAction::Void
                } else {
                    DepositAction::Wait
                };
            }
            _ if sanctioned => return DepositAction::Wait,
            _ => {}
        }
    }
    if invoice.is_some_and(|inv| capturable(inv, d, chain_time)) {
        let fee = d.amount.saturating_mul(U256::from(fee_bps.min(10_000))) / U256::from(10_000u32);
        DepositAction::Capture { fee }
    } else {
        DepositAction::Void
    }
}

/// Whether voiding a deposit is worth it: a token the relay does not know is never called (its
/// transfer is code nobody vetted), and ether worth no more than `floor` (the void's own gas, or
/// the operator's minimum) is left for its payer to reclaim after the expiry.
pub fn void_is_worth(d: &DepositView, known_token: bool, floor: U256) -> bool {
    if d.token != Address::ZERO {
        return known_token;
    }
    d.amount > floor
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundAction {
    /// Nothing to send now: not an escrow refund, not pending, or under way.
    Wait,
    /// A refund of the whole deposit before its capture: the deposit's void carries it out.
    ByVoid,
    /// `refund(id, amount)`, paid from the merchant's refund reserve.
    Send,
    /// The merchant's reserve no longer covers it (withdrawn meanwhile): it fails, nothing is
    /// sent, its amount is refundable again.
    NotCovered,
    /// Refused too often: it fails.
    GiveUp,
}

/// What to do with an escrow refund. `reserve_free` is the merchant's refund reserve less what
/// its other refunds under way will take.
pub fn refund_action(
    invoice: &Invoice,
    refund: &Refund,
    reserve_free: U256,
    attempts: Attempts,
) -> RefundAction {
    if refund.method != Method::Ethereum || refund.status != RefundStatus::Pending || attempts.live
    {
        return RefundAction::Wait;
    }
    let Some(p) = invoice
        .payments
        .iter()
        .find(|p| p.reference == refund.payment)
    else {
        return RefundAction::Wait;
    };
    if p.capture_tx.is_none() {
        // A whole refund is the void; a part waits for the capture.
        return if refund.amount >= p.amount {
            RefundAction::ByVoid
        } else {
            RefundAction::Wait
        };
    }
    if attempts.refused >= MAX_REFUSALS {
        return RefundAction::GiveUp;
    }
    if reserve_free < refund.amount.0 {
        return RefundAction::NotCovered;
    }
    RefundAction::Send
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementAction {
    /// Held, paid, under way, or given up.
    Skip,
    /// `settle(...)` from the liquidity.
    Send,
    /// Wait for the operator's liquidity (`settlement.queued`).
    Queue,
}

/// What to do with a settlement, given the liquidity not yet promised to settlements under way.
pub fn settlement_action(
    s: &Settlement,
    liquidity_free: U256,
    attempts: Attempts,
) -> SettlementAction {
    if !matches!(
        s.status,
        SettlementStatus::Pending | SettlementStatus::Queued
    ) || attempts.live
        || attempts.refused >= MAX_REFUSALS
    {
        return SettlementAction::Skip;
    }
    if liquidity_free < s.amount.0 {
        SettlementAction::Queue
    } else {
        SettlementAction::Send
    }
}

#[cfg(test)]
mod tests;
