//! The double-entry ledger, per merchant and asset.
//!
//! An invoice's **position** is the set of balances its payments, captures, fees, refunds and
//! settlements stand for, as a pure function of the invoice. Every position is balanced: in each
//! asset, debits equal credits. When an invoice changes, the store writes the **entry**
//! `position(after) − position(before)` in the same transaction as the invoice, so the ledger can
//! never disagree with the invoices, and each entry is balanced because both positions are.
//!
//! Accounts (all per merchant and asset):
//!
//! | account | normal side | holds |
//! | --- | --- | --- |
//! | `payers` | debit | what payers paid, net of what went back to them |
//! | `pending` | credit | payments seen, not final yet |
//! | `held` | credit | payments held by a risk review (or a sanctions hit): in the escrow uncaptured, authorized on a card, or awaiting their settlement |
//! | `available` | credit | final payments held for the merchant (in the escrow until captured, in the operator's gateway account for cards, or awaiting a cross-rail settlement) |
//! | `paid_out` | credit | what reached the merchant: captures to its payout address, bitcoin paid to its own wallet, settlements on Ethereum |
//! | `refunded` | debit | refunds paid back to payers out of money held for the merchant, out of the merchant's own wallet, or out of its refund reserve in the escrow |
//! | `liability` | debit | what the merchant owes the relay: payments disputed or reorged out after they were settled to the merchant |
//! | `fees` | credit | the relay's capture fees |
//! | `treasury` | credit | card and bitcoin money the relay kept because it paid the merchant on Ethereum instead |
//! | `liquidity` | debit | the operator's liquidity paid out in settlements |
//!
//! A balance on the wrong side of its normal side is a bug; [`Balances::violations`] finds them.

mod posting;
pub use posting::{payout_work, PayoutKind, PayoutRef, PayoutWork, Posting};

use crate::invoice::{Invoice, Method, Payment, PaymentStatus};
use crate::money::Amount;
use crate::payout::SettlementStatus;
use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    Payers,
    Pending,
    Held,
    Available,
    PaidOut,
    Refunded,
    Liability,
    Fees,
    Treasury,
    Liquidity,
}

impl Account {
    pub const ALL: [Account; 10] = [
        Account::Payers,
        Account::Pending,
        Account::Held,
        Account::Available,
        Account::PaidOut,
        Account::Refunded,
        Account::Liability,
        Account::Fees,
        Account::Treasury,
        Account::Liquidity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Account::Payers => "payers",
            Account::Pending => "pending",
            Account::Held => "held",
            Account::Available => "available",
            Account::PaidOut => "paid_out",
            Account::Refunded => "refunded",
            Account::Liability => "liability",
            Account::Fees => "fees",
            Account::Treasury => "treasury",
            Account::Liquidity => "liquidity",
        }
    }

    pub fn parse(s: &str) -> Option<Account> {
        Account::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether the account's balance is normally a credit (else a debit).
    pub fn credit_normal(self) -> bool {
        matches!(
            self,
            Account::Pending
                | Account::Held
                | Account::Available
                | Account::PaidOut
                | Account::Fees
                | Account::Treasury
        )
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signed amount as a debit and a credit, at most one of them non-zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net {
    pub debit: Amount,
    pub credit: Amount,
}

impl Net {
    pub fn debit(a: Amount) -> Net {
        Net {
            debit: a,
            credit: Amount::ZERO,
        }
    }

    pub fn credit(a: Amount) -> Net {
        Net {
            debit: Amount::ZERO,
            credit: a,
        }
    }

    fn normalized(debit: U256, credit: U256) -> Net {
        if debit >= credit {
            Net::debit(Amount(debit - credit))
        } else {
            Net::credit(Amount(credit - debit))
        }
    }

    pub fn plus(self, other: Net) -> Net {
        Net::normalized(
            self.debit.0.saturating_add(other.debit.0),
            self.credit.0.saturating_add(other.credit.0),
        )
    }

    pub fn minus(self, other: Net) -> Net {
        Net::normalized(
            self.debit.0.saturating_add(other.credit.0),
            self.credit.0.saturating_add(other.debit.0),
        )
    }

    pub fn is_zero(self) -> bool {
        self.debit.is_zero() && self.credit.is_zero()
    }

    /// The balance on the account's normal side; `None` if it is on the other side.
    pub fn on_normal_side(self, account: Account) -> Option<Amount> {
        match (
            account.credit_normal(),
            self.debit.is_zero(),
            self.credit.is_zero(),
        ) {
            (true, true, _) => Some(self.credit),
            (false, _, true) => Some(self.debit),
            _ => None,
        }
    }
}

/// One line of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub asset: String,
    pub account: Account,
    #[serde(flatten)]
    pub net: Net,
}

/// Balances by (asset, account).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balances(pub BTreeMap<(String, Account), Net>);

impl Balances {
    fn post(&mut self, asset: &str, account: Account, net: Net) {
        if net.is_zero() {
            return;
        }
        let slot = self.0.entry((asset.to_owned(), account)).or_default();
        *slot = slot.plus(net);
        if slot.is_zero() {
            self.0.remove(&(asset.to_owned(), account));
        }
    }

    pub fn apply(&mut self, lines: &[Line]) {
        for l in lines {
            self.post(&l.asset, l.account, l.net);
        }
    }

    pub fn get(&self, asset: &str, account: Account) -> Net {
        self.0
            .get(&(asset.to_owned(), account))
            .copied()
            .unwrap_or_default()
    }

    /// The assets whose accounts do not sum to zero (never, if every entry is balanced).
    pub fn unbalanced_assets(&self) -> Vec<String> {
        let mut sums: BTreeMap<&str, Net> = BTreeMap::new();
        for ((asset, _), net) in &self.0 {
            let s = sums.entry(asset.as_str()).or_default();
            *s = s.plus(*net);
        }
        sums.into_iter()
            .filter(|(_, n)| !n.is_zero())
            .map(|(a, _)| a.to_owned())
            .collect()
    }

    /// Accounts whose balance is on the wrong side (a credit where only debits make sense, or
    /// the reverse).
    pub fn violations(&self) -> Vec<(String, Account, Net)> {
        self.0
            .iter()
            .filter(|((_, account), net)| net.on_normal_side(*account).is_none())
            .map(|((asset, account), net)| (asset.clone(), *account, *net))
            .collect()
    }

    /// The lines that take `before` to `self`.
    pub fn diff(&self, before: &Balances) -> Vec<Line> {
        let mut keys: Vec<&(String, Account)> = self.0.keys().chain(before.0.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| {
                let net = self
                    .0
                    .get(k)
                    .copied()
                    .unwrap_or_default()
                    .minus(before.0.get(k).copied().unwrap_or_default());
                (!net.is_zero()).then(|| Line {
                    asset: k.0.clone(),
                    account: k.1,
                    net,
                })
            })
            .collect()
    }
}

fn sub(a: Amount, b: Amount) -> Amount {
    a.saturating_sub(b)
}

/// `amount × part / whole`, rounded up, at most `amount`.
fn share_up(amount: Amount, part: Amount, whole: Amount) -> Amount {
    if whole.is_zero() || part >= whole {
        return amount;
    }
    let Some(n) = amount.0.checked_mul(part.0) else {
        return amount;
    };
    Amount(n.div_ceil(whole.0)).min(amount)
}

/// The balances `invoice` stands for. Balanced in every asset.
pub fn position(invoice: &Invoice) -> Balances {
    let mut b = Balances::default();
    for p in &invoice.payments {
        post_payment(invoice, p, &mut b);
    }
    b
}

fn post_payment(invoice: &Invoice, p: &Payment, b: &mut Balances) {
    let Some(asset) = invoice
        .quote_for(p.method)
        .map(|q| q.due.asset.code.as_str())
    else {
        return;
    };
    let a = p.amount;
    let refunded = p.refunded.min(a);
    // What the merchant was paid on Ethereum for this payment (its due part, and any part
    // released from a hold).
    let settled = invoice
        .settlements
        .iter()
        .filter(|s| s.status == SettlementStatus::Paid && s.covers(&p.reference))
        .fold(None, |sum: Option<Amount>, s| {
            let share = s.share_of(&p.reference);
            Some(Amount(
                sum.unwrap_or(Amount::ZERO).0.saturating_add(share.0),
            ))
        });
    // A payment paid out to the merchant on Ethereum for a card or bitcoin payment: the relay
    // keeps the source money; what the payer took back (refund, dispute, reorg) the merchant owes.
    if let (Some(paid), Some(to)) = (settled, &invoice.settle_to) {
        let lost = match p.status {
            PaymentStatus::Confirmed => refunded,
            _ => a,
        };
        let kept = sub(a, lost);
        b.post(asset, Account::Payers, Net::debit(kept));
        b.post(asset, Account::Treasury, Net::credit(kept));
        let s_asset = to.due.asset.code.as_str();
        let owed = share_up(paid, lost, a);
        b.post(s_asset, Account::Liquidity, Net::debit(sub(paid, owed)));
        b.post(s_asset, Account::Liability, Net::debit(owed));
        b.post(s_asset, Account::PaidOut, Net::credit(paid));
        return;
    }
    let merchant_holds = p.method == Method::Bitcoin && !invoice.settles_cross_rail(p.method);
    if p.status.is_live() && p.capture_tx.is_none() && !merchant_holds && invoice.held(p) {
        b.post(asset, Account::Payers, Net::debit(sub(a, refunded)));
        b.post(asset, Account::Refunded, Net::debit(refunded));
        b.post(asset, Account::Held, Net::credit(a));
        return;
    }
    match p.status {
        PaymentStatus::Pending => {
            b.post(asset, Account::Payers, Net::debit(a));
            b.post(asset, Account::Pending, Net::credit(a));
        }
        PaymentStatus::Confirmed | PaymentStatus::Disputed => {
            b.post(asset, Account::Payers, Net::debit(sub(a, refunded)));
            // Refunds come out of money held for the merchant, out of the merchant's own wallet,
            // or (after a capture) out of the refund reserve the merchant funded in the escrow:
            // never out of the operator's money.
            b.post(asset, Account::Refunded, Net::debit(refunded));
            if p.capture_tx.is_some() {
                let fee = p.fee.min(a);
                b.post(asset, Account::PaidOut, Net::credit(sub(a, fee)));
                b.post(asset, Account::Fees, Net::credit(fee));
            } else if merchant_holds {
                b.post(asset, Account::PaidOut, Net::credit(a));
            } else {
                b.post(asset, Account::Available, Net::credit(a));
            }
        }
        // Gone back to the payer, or never made: nothing stands.
        PaymentStatus::Reverted
        | PaymentStatus::Replaced
        | PaymentStatus::Failed
        | PaymentStatus::Voided
        | PaymentStatus::Reclaimed => {}
    }
}

/// The entry for a change of an invoice from `before` (none: a new invoice) to `after`.
pub fn entry_lines(before: Option<&Invoice>, after: &Invoice) -> Vec<Line> {
    let old = before.map(position).unwrap_or_default();
    position(after).diff(&old)
}

#[cfg(test)]
mod tests;
