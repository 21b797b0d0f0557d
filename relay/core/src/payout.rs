//! Money leaving the relay after a payment: refunds to payers and cross-rail settlements to
//! merchants. Both are records on the invoice, so they change in the same atomic write as the rest
//! of it, and the ledger follows them.
//!
//! - A **refund** reserves its amount when it is requested (`pending`): the sum of a payment's
//!   pending and succeeded refunds never exceeds the payment, so two concurrent requests cannot
//!   together refund more than was paid (the store's version check serialises them). The rail then
//!   carries it out: an escrow void or refund, a gateway refund, or the merchant's own bitcoin
//!   wallet; the relay marks it `succeeded` when it sees that happen.
//! - A **settlement** pays a merchant who wants to be paid on Ethereum for a card or bitcoin
//!   payment, out of the operator's liquidity in the escrow. One per payment, planned once the
//!   payment is final and the invoice is no longer in progress; its id is derived from the invoice
//!   and the payment, and the escrow refuses a settlement id twice, so a retry or a replay can never
//!   pay twice. Settlements live in `payout/settlement.rs`; this file holds refunds.

use crate::error::CoreError;
use crate::event::EventType;
use crate::invoice::{Invoice, Method, Payment, PaymentStatus};
use crate::money::Amount;
use crate::reference::{PaymentRef, Script};
use crate::time::Timestamp;
use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

mod settlement;
pub use settlement::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

/// A refund of (part of) one payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// `re_…`
    pub id: String,
    /// The refunded payment's reference.
    pub payment: PaymentRef,
    pub method: Method,
    pub amount: Amount,
    pub asset: String,
    pub status: RefundStatus,
    /// Bitcoin: where the merchant's wallet pays the refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Bitcoin: the address's output script, hex (the watcher matches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_pubkey: Option<Script>,
    /// The transaction that paid it (escrow refund or void, bitcoin payment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    /// Bitcoin: the output of `tx` that paid it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vout: Option<u32>,
    /// Card: the gateway's refund id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_refund: Option<String>,
    /// Bitcoin: the transaction the merchant says paid it (see [`crate::InvoiceInput`]'s
    /// `RefundClaimed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_tx: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub created_at: Timestamp,
}

/// Where a bitcoin refund goes: the payer's address and its output script (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAddress {
    pub address: String,
    pub script_pubkey: Script,
}

impl Invoice {
    /// Whether payments on `method` are paid to the merchant by cross-rail settlement.
    pub fn settles_cross_rail(&self, method: Method) -> bool {
        self.settle_to.is_some() && matches!(method, Method::Card | Method::Bitcoin)
    }

    /// Whether a refund of `p` may be asked now: a final payment, or an escrow deposit not yet
    /// captured (it is voided back once final).
    pub fn may_refund(&self, p: &Payment) -> bool {
        p.status == PaymentStatus::Confirmed
            || (p.status == PaymentStatus::Pending
                && p.method == Method::Ethereum
                && p.capture_tx.is_none())
    }

    /// The payment a refund that names none refunds: the first that may be refunded and has
    /// something left.
    pub fn default_refund_payment(&self) -> Option<&Payment> {
        self.payments
            .iter()
            .find(|p| self.may_refund(p) && !self.refundable(&p.reference).is_zero())
    }

    /// What is left to refund of the payment `reference`: its amount less every refund not
    /// failed (and less what the gateway reports refunded, which may include refunds made there).
    pub fn refundable(&self, reference: &PaymentRef) -> Amount {
        let Some(p) = self.payments.iter().find(|p| p.reference == *reference) else {
            return Amount::ZERO;
        };
        let requested = self
            .refunds
            .iter()
            .filter(|r| r.payment == *reference && r.status != RefundStatus::Failed)
            .fold(U256::ZERO, |s, r| s.saturating_add(r.amount.0));
        p.amount.saturating_sub(Amount(requested.max(p.refunded.0)))
    }

    /// Records a refund request (`refund.pending`), reserving its amount.
    pub(crate) fn request_refund(
        &mut self,
        id: String,
        payment: Option<PaymentRef>,
        amount: Option<Amount>,
        to: Option<RefundAddress>,
        now: Timestamp,
        events: &mut Vec<EventType>,
    ) -> Result<(), CoreError> {
        if self.refunds.iter().any(|r| r.id == id) {
            return Ok(());
        }
        let not = |reason: &str| CoreError::NotRefundable {
            reason: reason.into(),
        };
        let p = match &payment {
            Some(reference) => self
                .payments
                .iter()
                .find(|p| &p.reference == reference)
                .ok_or_else(|| CoreError::UnknownPayment {
                    reference: reference.to_string(),
                })?,
            None => self
                .default_refund_payment()
                .ok_or_else(|| not("the invoice has no final payment left to refund"))?,
        };
        if !self.may_refund(p) {
            return Err(not(match p.status {
                PaymentStatus::Pending => "the payment is not final yet",
                PaymentStatus::Disputed => "the payment is disputed",
                _ => "the payment did not reach the merchant",
            }));
        }
        let refundable = self.refundable(&p.reference);
        let asset = self
            .quote_for(p.method)
            .map(|q| q.due.asset.clone())
            .ok_or_else(|| CoreError::MethodNotOffered {
                method: p.method.to_string(),
            })?;
        if refundable.is_zero() {
            return Err(not("the payment is already refunded in full"));
        }
        let amount = amount.unwrap_or(refundable);
        if amount.is_zero() {
            return Err(CoreError::InvalidAmount {
                asset: asset.code.clone(),
                input: "0".into(),
                reason: "a refund must be greater than zero",
            });
        }
        if amount > refundable {
            return Err(CoreError::RefundTooLarge {
                refundable: refundable.to_decimal_string(asset.decimals),
                asset: asset.code,
            });
        }
        if p.method == Method::Bitcoin && to.is_none() {
            return Err(CoreError::InvalidField {
                field: "bitcoin_address",
                reason: "a bitcoin refund needs the payer's address".into(),
            });
        }
        if self.settles_cross_rail(p.method) {
            return Err(not(
                "the payment is settled to the merchant on Ethereum; refund it from there",
            ));
        }
        let (address, script_pubkey) = match (p.method, to) {
            (Method::Bitcoin, Some(t)) => (Some(t.address), Some(t.script_pubkey)),
            _ => (None, None),
        };
        self.refunds.push(Refund {
            id,
            payment: p.reference.clone(),
            method: p.method,
            amount,
            asset: asset.code,
            status: RefundStatus::Pending,
            address,
            script_pubkey,
            tx: None,
            gateway_refund: None,
            vout: None,
            claimed_tx: None,
            failure: None,
            created_at: now,
        });
        events.push(EventType::RefundPending);
        Ok(())
    }

    fn refund_mut(&mut self, id: &str) -> Result<&mut Refund, CoreError> {
        self.refunds
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| CoreError::UnknownRecord { id: id.to_owned() })
    }

    /// Marks a pending refund paid (`refund.succeeded`) and counts it on its payment.
    pub(crate) fn refund_paid(
        &mut self,
        id: &str,
        tx: Option<String>,
        gateway_refund: Option<String>,
        events: &mut Vec<EventType>,
    ) -> Result<(), CoreError> {
        let r = self.refund_mut(id)?;
        // Only a pending refund can be paid: a failed one released its amount, which another
        // refund may have taken since.
        if r.status != RefundStatus::Pending {
            return Ok(());
        }
        r.status = RefundStatus::Succeeded;
        r.failure = None;
        if tx.is_some() {
            r.tx = tx;
        }
        if gateway_refund.is_some() {
            r.gateway_refund = gateway_refund;
        }
        let (reference, amount) = (r.payment.clone(), r.amount);
        if let Some(p) = self.payments.iter_mut().find(|p| p.reference == reference) {
            p.refunded = p
                .refunded
                .checked_add(amount)
                .unwrap_or(p.amount)
                .min(p.amount);
        }
        events.push(EventType::RefundSucceeded);
        Ok(())
    }

    /// Records the transaction a merchant says paid a pending bitcoin refund.
    pub(crate) fn refund_claimed(&mut self, id: &str, tx: String) -> Result<bool, CoreError> {
        let r = self.refund_mut(id)?;
        if r.method != Method::Bitcoin || r.status != RefundStatus::Pending {
            return Err(CoreError::NotRefundable {
                reason: "only a pending bitcoin refund can be claimed paid".into(),
            });
        }
        let tx = tx.to_ascii_lowercase();
        if r.claimed_tx.as_deref() == Some(tx.as_str()) {
            return Ok(false);
        }
        r.claimed_tx = Some(tx);
        Ok(true)
    }

    /// The transaction that paid a refund was reorged out: the refund is pending again
    /// (`refund.pending`), and no longer counted on its payment.
    pub(crate) fn refund_reverted(
        &mut self,
        id: &str,
        tx: &str,
        events: &mut Vec<EventType>,
    ) -> Result<(), CoreError> {
        let r = self.refund_mut(id)?;
        if r.status != RefundStatus::Succeeded || r.tx.as_deref() != Some(tx) {
            return Ok(());
        }
        r.status = RefundStatus::Pending;
        r.tx = None;
        r.vout = None;
        let (reference, amount) = (r.payment.clone(), r.amount);
        if let Some(p) = self.payments.iter_mut().find(|p| p.reference == reference) {
            p.refunded = p.refunded.saturating_sub(amount);
        }
        events.push(EventType::RefundPending);
        Ok(())
    }

    /// Marks a pending refund failed (`refund.failed`); its amount is refundable again.
    pub(crate) fn refund_failed(
        &mut self,
        id: &str,
        reason: String,
        events: &mut Vec<EventType>,
    ) -> Result<(), CoreError> {
        let r = self.refund_mut(id)?;
        if r.status != RefundStatus::Pending {
            return Ok(());
        }
        r.status = RefundStatus::Failed;
        r.failure = Some(reason);
        events.push(EventType::RefundFailed);
        Ok(())
    }

    /// A gateway reports `total` refunded of a card payment: its pending refunds, oldest first,
    /// are succeeded as far as the total covers them.
    pub(crate) fn gateway_refunded(&mut self, reference: &PaymentRef, events: &mut Vec<EventType>) {
        let Some(total) = self
            .payments
            .iter()
            .find(|p| p.reference == *reference)
            .map(|p| p.refunded.0)
        else {
            return;
        };
        let mut covered = self
            .refunds
            .iter()
            .filter(|r| r.payment == *reference && r.status == RefundStatus::Succeeded)
            .fold(U256::ZERO, |s, r| s.saturating_add(r.amount.0));
        for r in self
            .refunds
            .iter_mut()
            .filter(|r| r.payment == *reference && r.status == RefundStatus::Pending)
        {
            let next = covered.saturating_add(r.amount.0);
            if next > total {
                break;
            }
            covered = next;
            r.status = RefundStatus::Succeeded;
            events.push(EventType::RefundSucceeded);
        }
    }

    /// An escrow deposit went back to its payer: pending refunds of it are done.
    pub(crate) fn returned(&mut self, reference: &PaymentRef, events: &mut Vec<EventType>) {
        for r in self
            .refunds
            .iter_mut()
            .filter(|r| r.payment == *reference && r.status == RefundStatus::Pending)
        {
            r.status = RefundStatus::Succeeded;
            events.push(EventType::RefundSucceeded);
        }
    }
}
