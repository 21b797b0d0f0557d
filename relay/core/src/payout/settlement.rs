//! Cross-rail settlements: how a merchant paid on Ethereum is paid for its card and bitcoin
//! payments out of the operator's liquidity in the escrow — what is due, when, and what is held.

use crate::error::CoreError;
use crate::event::EventType;
use crate::invoice::{Invoice, InvoiceStatus, Method, Payment, PaymentStatus};
use crate::money::{Amount, Money};
use crate::rate::Rate;
use crate::reference::{PaymentRef, SettlementId};
use crate::time::Timestamp;
use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

/// How a merchant that wants Ethereum is paid for card and bitcoin payments, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleTo {
    /// The settlement asset (ETH or an ERC-20) and what the whole price is worth in it, at the
    /// rate locked when the invoice was created.
    pub due: Money,
    pub rate: Rate,
    /// The merchant's payout address, `0x` hex.
    pub payout: String,
    /// The ERC-20 contract, or `None` for ether.
    pub token: Option<String>,
    /// How deep a bitcoin payment must be before the operator's liquidity pays for it: the
    /// operator's `settlement_min_confirmations`, whatever the merchant's own policy, fixed at
    /// creation.
    #[serde(default = "default_settlement_depth")]
    pub min_confirmations: u32,
}

/// The operator's default depth before a cross-rail settlement is paid.
pub const DEFAULT_SETTLEMENT_DEPTH: u32 = 3;

fn default_settlement_depth() -> u32 {
    DEFAULT_SETTLEMENT_DEPTH
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementStatus {
    /// Planned; the operator sends it.
    Pending,
    /// Waiting for the operator's liquidity to cover it (it is sent when it does).
    Queued,
    /// Not to be sent automatically; [`Settlement::hold`] says why. Held for
    /// [`HoldReason::PaymentNotFinal`] it goes back to `pending` if the payment is final and whole
    /// again (and the invoice's cap still allows it); any other hold is never paid automatically.
    Held,
    /// The escrow's `Settled` log was seen.
    Paid,
}

/// Why a settlement is held instead of paid from the operator's liquidity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// The payment is no longer final and whole (reorged out, disputed, refunded at the gateway).
    PaymentNotFinal,
    /// The payment arrived after the invoice expired: its locked rate no longer holds.
    Late,
    /// The payment arrived after the merchant canceled the invoice.
    AfterCancel,
    /// Beyond what the invoice was due: the invoice's settlements already add up to it.
    OverPayment,
    /// It replaces a payment that was reverted or replaced after the merchant was paid for it.
    Replacement,
}

impl HoldReason {
    /// Whether the merchant may have it paid at the current rate: the operator received the
    /// money it stands for (a late payment, one after the cancel, more than was due). A
    /// replacement is never released: the payment it replaces was paid for already.
    pub fn releasable(self) -> bool {
        matches!(
            self,
            HoldReason::Late | HoldReason::AfterCancel | HoldReason::OverPayment
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::PaymentNotFinal => "payment_not_final",
            HoldReason::Late => "late",
            HoldReason::AfterCancel => "after_cancel",
            HoldReason::OverPayment => "over_payment",
            HoldReason::Replacement => "replacement",
        }
    }
}

/// One payment paid out to the merchant on Ethereum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// [`settlement_id`] of the invoice and the payment.
    pub id: SettlementId,
    /// The payment's reference on the invoice.
    pub payment: PaymentRef,
    /// What the escrow records as the source: the gateway's PaymentIntent id or the bitcoin txid.
    pub source_ref: String,
    /// In the settlement asset's minor units.
    pub amount: Amount,
    pub asset: String,
    pub status: SettlementStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    /// Why it is held (`status == held`; a held settlement stored without a reason was held
    /// because its payment stopped being final).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldReason>,
    /// The part of the payment it stands for, in the payment's own minor units.
    #[serde(default, skip_serializing_if = "crate::invoice::zero")]
    pub source_amount: Amount,
    /// Released from a hold by the merchant, at the rate of that moment (not counted against the
    /// invoice's locked amount: the operator holds the money it pays for).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
    /// The payments it pays for, with their shares of `amount`, when it pays for several (an
    /// invoice's payments made together are settled by one `settle`); empty when it pays for
    /// `payment` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<SettlementPart>,
    pub created_at: Timestamp,
}

/// One payment's share of a settlement that pays for several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementPart {
    pub payment: PaymentRef,
    pub amount: Amount,
}

impl Settlement {
    /// The payments it pays for, with their shares.
    pub fn shares(&self) -> Vec<(&PaymentRef, Amount)> {
        if self.parts.is_empty() {
            vec![(&self.payment, self.amount)]
        } else {
            self.parts.iter().map(|p| (&p.payment, p.amount)).collect()
        }
    }

    /// Whether it pays (in part) for the payment `reference`.
    pub fn covers(&self, reference: &PaymentRef) -> bool {
        self.shares().iter().any(|(r, _)| *r == reference)
    }

    /// Its share for the payment `reference` (zero if it does not pay for it). A released
    /// settlement was re-quoted, so its shares are scaled to its amount now.
    pub fn share_of(&self, reference: &PaymentRef) -> Amount {
        let shares = self.shares();
        let total = shares
            .iter()
            .fold(U256::ZERO, |sum, (_, a)| sum.saturating_add(a.0));
        let mine = shares
            .iter()
            .filter(|(r, _)| *r == reference)
            .fold(U256::ZERO, |sum, (_, a)| sum.saturating_add(a.0));
        if total.is_zero() || total == self.amount.0 {
            return Amount(mine);
        }
        match self.amount.0.checked_mul(mine) {
            Some(n) => Amount(n / total),
            None => Amount(mine),
        }
    }

    /// The reason it is held, if it is.
    pub fn hold_reason(&self) -> Option<HoldReason> {
        (self.status == SettlementStatus::Held)
            .then(|| self.hold.unwrap_or(HoldReason::PaymentNotFinal))
    }

    /// Whether it counts against the invoice's settlement cap: paid, on its way to be, or held
    /// only because its payment is not final right now (it may already be on its way to the
    /// chain, and comes back if the payment does). A released hold is paid for money beyond the
    /// cap, so it does not count.
    fn committed(&self) -> bool {
        !self.released
            && (matches!(
                self.status,
                SettlementStatus::Pending | SettlementStatus::Queued | SettlementStatus::Paid
            ) || self.hold_reason() == Some(HoldReason::PaymentNotFinal))
    }
}

/// The settlement id of `payment` on `invoice`: keccak256 of both, so the same payment always
/// gets the same id (and the escrow pays an id once).
pub fn settlement_id(invoice: &str, payment: &str) -> SettlementId {
    let mut buf = b"relay.settlement\0".to_vec();
    buf.extend_from_slice(invoice.as_bytes());
    buf.push(0);
    buf.extend_from_slice(payment.as_bytes());
    SettlementId(alloy_primitives::keccak256(buf))
}

/// The id of the part of `payment` beyond what its invoice was due (held, never paid
/// automatically): distinct from [`settlement_id`], so paying the due part cannot pay it.
pub fn excess_settlement_id(invoice: &str, payment: &str) -> SettlementId {
    settlement_id(invoice, &format!("{payment}#excess"))
}

/// The source reference recorded on chain for a payment: the PaymentIntent id for a card, the
/// transaction id for bitcoin (`btc:<txid>:<vout>` → `<txid>`).
pub fn source_ref(p: &Payment) -> String {
    match &p.reference {
        PaymentRef::Bitcoin { txid, .. } => txid.to_string(),
        other => other.to_string(),
    }
}

impl Invoice {
    /// Settlement ids are hex: any case names the same one.
    fn settlement_mut(&mut self, id: &SettlementId) -> Result<&mut Settlement, CoreError> {
        self.settlements
            .iter_mut()
            .find(|s| s.id == *id)
            .ok_or_else(|| CoreError::UnknownRecord { id: id.to_string() })
    }

    /// The settlement amount of `p`: its amount converted at the locked rates (the settlement
    /// quote over the method's quote), rounded down.
    pub fn settlement_amount(&self, p: &Payment) -> Amount {
        let (Some(to), Some(q)) = (&self.settle_to, self.quote_for(p.method)) else {
            return Amount::ZERO;
        };
        if q.due.amount.is_zero() {
            return Amount::ZERO;
        }
        match p.amount.0.checked_mul(to.due.amount.0) {
            Some(n) => Amount(n / q.due.amount.0),
            None => Amount(U256::MAX),
        }
    }

    /// What the invoice's settlements already take of its cap (all but the one at `except`).
    fn committed_settlements(&self, except: Option<usize>) -> U256 {
        self.settlements
            .iter()
            .enumerate()
            .filter(|(i, s)| Some(*i) != except && s.committed())
            .fold(U256::ZERO, |sum, (_, s)| sum.saturating_add(s.amount.0))
    }

    /// The most the operator's liquidity pays this invoice at the locked rate: what it was due
    /// in the settlement asset, less the part of the price already paid to the merchant directly
    /// (an escrow deposit in time), converted at the locked rates.
    fn settlement_cap(&self) -> U256 {
        let Some(to) = &self.settle_to else {
            return U256::ZERO;
        };
        let mut direct = U256::ZERO;
        for method in Method::ALL
            .into_iter()
            .filter(|m| !self.settles_cross_rail(*m))
        {
            let paid = self
                .payments
                .iter()
                .filter(|p| p.method == method && self.in_time(p))
                .filter(|p| matches!(p.status, PaymentStatus::Confirmed | PaymentStatus::Disputed));
            direct = direct.saturating_add(self.worth(method, paid));
        }
        let price = self.price.amount.0;
        if price.is_zero() || direct >= price {
            return U256::ZERO;
        }
        match to.due.amount.0.checked_mul(price - direct) {
            Some(n) => n / price,
            None => to.due.amount.0,
        }
    }

    /// Whether a payment the merchant was paid for on Ethereum was taken back since (reorged,
    /// double-spent, disputed, refunded): the operator holds less than it paid.
    fn paid_then_lost(&self) -> bool {
        self.payments.iter().any(|p| {
            !(p.status == PaymentStatus::Confirmed && p.refunded.is_zero())
                && self
                    .settlements
                    .iter()
                    .any(|s| s.covers(&p.reference) && s.status == SettlementStatus::Paid)
        })
    }

    /// Why a payment beyond the cap is held: it replaces one the merchant was paid for, or it
    /// is simply more than was due.
    fn excess_reason(&self) -> HoldReason {
        if self.paid_then_lost() {
            HoldReason::Replacement
        } else {
            HoldReason::OverPayment
        }
    }

    /// Whether every payment `s` pays for is confirmed and not refunded.
    fn whole(&self, s: &Settlement) -> bool {
        s.shares().iter().all(|(r, _)| {
            self.payments.iter().any(|p| {
                p.reference == **r
                    && p.status == PaymentStatus::Confirmed
                    && p.refunded.is_zero()
                    && !self.held(p)
            })
        })
    }

    /// One settlement record for `parts` (payment, settlement amount, source amount), all of one
    /// method: one `settle` for them all.
    fn settlement_for(
        &self,
        parts: &[(&Payment, U256, Amount)],
        excess: bool,
        hold: Option<HoldReason>,
        now: Timestamp,
    ) -> Option<Settlement> {
        let (first, ..) = parts.first()?;
        let to = self.settle_to.as_ref()?;
        let key = parts
            .iter()
            .map(|(p, ..)| p.reference.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let id = if excess {
            excess_settlement_id(self.id.as_str(), &key)
        } else {
            settlement_id(self.id.as_str(), &key)
        };
        let amount = parts
            .iter()
            .fold(U256::ZERO, |sum, (_, a, _)| sum.saturating_add(*a));
        let source = parts.iter().fold(Amount::ZERO, |sum, (_, _, s)| {
            Amount(sum.0.saturating_add(s.0))
        });
        let source_ref = match parts.len() {
            1 => source_ref(first),
            n => format!("{} +{} more", source_ref(first), n - 1),
        };
        Some(Settlement {
            id,
            payment: first.reference.clone(),
            source_ref,
            amount: Amount(amount),
            asset: to.due.asset.code.clone(),
            status: if hold.is_some() {
                SettlementStatus::Held
            } else {
                SettlementStatus::Pending
            },
            tx: None,
            hold,
            source_amount: source,
            released: false,
            parts: if parts.len() > 1 {
                parts
                    .iter()
                    .map(|(p, a, _)| SettlementPart {
                        payment: p.reference.clone(),
                        amount: Amount(*a),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            created_at: now,
        })
    }

    /// Plans the settlement of the final cross-rail payments that have none, once the invoice is
    /// no longer waiting for payments and the payments are as deep as the operator requires.
    ///
    /// The operator's money moves only by these rules: payments made in time are paid at the
    /// locked rate up to what the invoice was due, all its settlements together never more; the
    /// rest of them, and every payment made after the expiry or the cancel, is recorded `held`
    /// with its reason and never paid automatically. Payments are settled together — the in-time
    /// ones once all of them are deep enough — so an invoice paid in many outputs costs one
    /// `settle`, not one per output.
    pub(crate) fn plan_settlements(&mut self, now: Timestamp, events: &mut Vec<EventType>) {
        let Some(to) = &self.settle_to else {
            return;
        };
        if matches!(self.status, InvoiceStatus::New | InvoiceStatus::Processing) {
            return;
        }
        let cap = self.settlement_cap();
        let depth = to.min_confirmations.max(1);
        let unsettled: Vec<Payment> = self
            .payments
            .iter()
            .filter(|p| {
                p.status == PaymentStatus::Confirmed
                    && self.settles_cross_rail(p.method)
                    && !self.held(p)
            })
            .filter(|p| !self.settlements.iter().any(|s| s.covers(&p.reference)))
            .filter(|p| p.refunded.is_zero())
            .cloned()
            .collect();
        let deep = |p: &Payment| p.method == Method::Card || p.confirmations >= depth;
        // In-time payments wait for each other: settled together once all are deep enough.
        let in_time_waits = unsettled.iter().any(|p| self.in_time(p) && !deep(p));
        let mut planned = Vec::new();
        let mut budget = cap.saturating_sub(self.committed_settlements(None));
        for method in [Method::Bitcoin, Method::Card] {
            let of_method: Vec<&Payment> = unsettled
                .iter()
                .filter(|p| p.method == method && deep(p))
                .collect();
            // Late: after the invoice's expiry, or after its quote's (its locked rates no longer
            // hold; the merchant has it paid at the rate of the day).
            for reason in [HoldReason::Late, HoldReason::AfterCancel] {
                let parts: Vec<_> = of_method
                    .iter()
                    .filter(|p| !self.in_time(p) || self.priced_on_arrival(p))
                    .filter(|p| {
                        let after_cancel = self.canceled_at.is_some_and(|c| p.seen_at >= c);
                        after_cancel == (reason == HoldReason::AfterCancel)
                    })
                    .map(|p| (*p, self.settlement_amount(p).0, p.amount))
                    .filter(|(_, a, _)| !a.is_zero())
                    .collect();
                planned.extend(self.settlement_for(&parts, false, Some(reason), now));
            }
            if in_time_waits {
                continue;
            }
            let (mut pay, mut rest) = (Vec::new(), Vec::new());
            for p in of_method
                .iter()
                .filter(|p| self.in_time(p) && !self.priced_on_arrival(p))
            {
                let amount = self.settlement_amount(p).0;
                if amount.is_zero() {
                    continue;
                }
                // The part of the payment a settlement of `part` stands for.
                let source_of = |part: U256| match p.amount.0.checked_mul(part) {
                    Some(n) => Amount(n / amount),
                    None => p.amount,
                };
                let paid = amount.min(budget);
                budget -= paid;
                let held = amount - paid;
                let held_source = source_of(held);
                if !paid.is_zero() {
                    pay.push((*p, paid, p.amount.saturating_sub(held_source)));
                }
                if !held.is_zero() {
                    rest.push((*p, held, held_source));
                }
            }
            planned.extend(self.settlement_for(&pay, false, None, now));
            let reason = self.excess_reason();
            planned.extend(self.settlement_for(&rest, true, Some(reason), now));
        }
        for s in planned {
            events.push(if s.status == SettlementStatus::Held {
                EventType::SettlementHeld
            } else {
                EventType::SettlementPending
            });
            self.settlements.push(s);
        }
    }

    /// Holds unpaid settlements whose payment stopped being final and whole, and releases those
    /// held for that reason whose payment is again, if the invoice's cap still allows them.
    pub(crate) fn hold_settlements(&mut self, events: &mut Vec<EventType>) {
        let cap = self.settlement_cap();
        for i in 0..self.settlements.len() {
            let s = &self.settlements[i];
            if s.status == SettlementStatus::Paid
                || s.hold_reason()
                    .is_some_and(|r| r != HoldReason::PaymentNotFinal)
            {
                continue;
            }
            let whole = self.whole(s);
            let fits = s.released
                || self
                    .committed_settlements(Some(i))
                    .saturating_add(s.amount.0)
                    <= cap;
            let reason = self.excess_reason();
            let s = &mut self.settlements[i];
            match (whole, s.status) {
                (false, SettlementStatus::Held) => {}
                (false, _) => {
                    s.status = SettlementStatus::Held;
                    s.hold = Some(HoldReason::PaymentNotFinal);
                    events.push(EventType::SettlementHeld);
                }
                (true, SettlementStatus::Held) if fits => {
                    s.status = SettlementStatus::Pending;
                    s.hold = None;
                    events.push(EventType::SettlementPending);
                }
                (true, SettlementStatus::Held) => {
                    // Final again, but another payment took its place under the cap.
                    s.hold = Some(reason);
                    events.push(EventType::SettlementHeld);
                }
                (true, _) => {}
            }
        }
    }

    /// Releases a held settlement the merchant wants paid at the current rate: `amount` is what
    /// its part of the payment is worth now. Only a late payment, one after the cancel, or one
    /// beyond what was due, whose payment is final and whole.
    pub(crate) fn release_settlement(
        &mut self,
        id: &SettlementId,
        amount: Amount,
        events: &mut Vec<EventType>,
    ) -> Result<(), CoreError> {
        let not = |reason: &str| CoreError::NotReleasable {
            reason: reason.into(),
        };
        let s = self
            .settlements
            .iter()
            .find(|s| s.id == *id)
            .ok_or_else(|| CoreError::UnknownRecord { id: id.to_string() })?;
        match s.hold_reason() {
            Some(r) if r.releasable() => {}
            Some(HoldReason::Replacement) => {
                return Err(not(
                    "it replaces a payment the merchant was already paid for",
                ))
            }
            Some(_) => return Err(not("its payment is not final")),
            None => return Err(not("it is not held")),
        }
        if !self.whole(s) {
            return Err(not("its payment is not final and whole"));
        }
        if amount.is_zero() {
            return Err(not("it is worth nothing at the current rate"));
        }
        // The operator holds less than it paid for this invoice, or may yet pay a held
        // settlement whose payment comes back: nothing more goes out until that is settled.
        if self.paid_then_lost() {
            return Err(not(
                "a payment the merchant was paid for was taken back (reorged, disputed or refunded)",
            ));
        }
        if self
            .settlements
            .iter()
            .any(|o| o.hold_reason() == Some(HoldReason::PaymentNotFinal))
        {
            return Err(not(
                "another settlement of the invoice waits for its payment to be final again",
            ));
        }
        let s = self.settlement_mut(id)?;
        s.amount = amount;
        s.status = SettlementStatus::Pending;
        s.hold = None;
        s.released = true;
        events.push(EventType::SettlementPending);
        Ok(())
    }

    pub(crate) fn settlement_queued(
        &mut self,
        id: &SettlementId,
        events: &mut Vec<EventType>,
    ) -> Result<(), CoreError> {
        let s = self.settlement_mut(id)?;
        if s.status == SettlementStatus::Pending {
            s.status = SettlementStatus::Queued;
            events.push(EventType::SettlementQueued);
        }
        Ok(())
    }

    pub(crate) fn settlement_paid(
        &mut self,
        id: &SettlementId,
        tx: String,
        events: &mut Vec<EventType>,
    ) -> Result<(), CoreError> {
        let s = self.settlement_mut(id)?;
        if s.status != SettlementStatus::Paid {
            s.status = SettlementStatus::Paid;
            s.tx = Some(tx);
            events.push(EventType::SettlementPaid);
        }
        Ok(())
    }
}
