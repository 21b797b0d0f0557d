//! The ledger and the payout work list, both derived from each invoice change and written in the
//! transaction that writes the invoice.
//!
//! - `ledger`: merchant · 0 · asset · 0 · account → [`Net`] (the balance)
//! - `ledger_entries`: merchant · 0 · invoice · 0 · version (u64 BE) → lines of the entry
//! - `payouts`: kind · 0 · invoice · 0 · record id → value: the work the operator and the
//!   watchers still have to do for an invoice (`eth-refund`, `settlement`, `btc-refund` with the
//!   script to watch, `card-refund` not yet accepted by the gateway). A record leaves the list in
//!   the transaction that finishes it.

use super::{abort, Abort, SledStore};
use crate::codec::{decode, encode};
use relay_core::ledger::{entry_lines, Line};
use relay_core::{
    Account, Balances, Invoice, InvoiceId, MerchantId, Method, Net, RefundStatus, SettlementStatus,
};
use relay_store::{PayoutWork, StoreError};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use std::collections::BTreeMap;

pub(super) const ETH_REFUND: &str = "eth-refund";
pub(super) const SETTLEMENT: &str = "settlement";
pub(super) const BTC_REFUND: &str = "btc-refund";
pub(super) const CARD_REFUND: &str = "card-refund";
pub(super) const CARD_CANCEL: &str = "card-cancel";

fn balance_key(merchant: &MerchantId, asset: &str, account: Account) -> Vec<u8> {
    let mut k = merchant.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(asset.as_bytes());
    k.push(0);
    k.extend_from_slice(account.as_str().as_bytes());
    k
}

fn payout_key(kind: &str, invoice: &InvoiceId, record: &str) -> Vec<u8> {
    let mut k = kind.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(invoice.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(record.as_bytes());
    k
}

/// The payout work an invoice stands for, by key.
fn payout_work(invoice: &Invoice) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut work = BTreeMap::new();
    // Bitcoin refunds stay watched once paid: a reorg can take their payment out again.
    for r in invoice
        .refunds
        .iter()
        .filter(|r| r.method == Method::Bitcoin && r.status == RefundStatus::Succeeded)
    {
        let script = r.script_pubkey.clone().unwrap_or_default();
        work.insert(
            payout_key(BTC_REFUND, &invoice.id, &r.id),
            script.into_bytes(),
        );
    }
    for r in invoice
        .refunds
        .iter()
        .filter(|r| r.status == RefundStatus::Pending)
    {
        match r.method {
            Method::Ethereum => {
                work.insert(payout_key(ETH_REFUND, &invoice.id, &r.id), Vec::new());
            }
            Method::Bitcoin => {
                let script = r.script_pubkey.clone().unwrap_or_default();
                work.insert(
                    payout_key(BTC_REFUND, &invoice.id, &r.id),
                    script.into_bytes(),
                );
            }
            // Until the gateway has accepted it (its refund id is recorded): to ask it again
            // after a crash or a gateway outage. Its webhook finishes it.
            Method::Card if r.gateway_refund.is_none() => {
                work.insert(payout_key(CARD_REFUND, &invoice.id, &r.id), Vec::new());
            }
            Method::Card => {}
        }
    }
    for s in invoice
        .settlements
        .iter()
        .filter(|s| s.status != SettlementStatus::Paid)
    {
        work.insert(payout_key(SETTLEMENT, &invoice.id, &s.id), Vec::new());
    }
    if let Some(intent) = invoice.intent_to_close() {
        work.insert(payout_key(CARD_CANCEL, &invoice.id, intent), Vec::new());
    }
    work
}

/// What one invoice change writes beside the invoice: its ledger entry and the change of its
/// payout work. Computed outside the transaction when the previous state is known.
pub(super) struct Derived {
    merchant: MerchantId,
    entry_key: Vec<u8>,
    lines: Vec<Line>,
    payouts_removed: Vec<Vec<u8>>,
    payouts_added: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Derived {
    pub(super) fn of(before: Option<&Invoice>, after: &Invoice) -> Derived {
        let lines = entry_lines(before, after);
        let old = before.map(payout_work).unwrap_or_default();
        let new = payout_work(after);
        let mut entry_key = after.merchant_id.as_str().as_bytes().to_vec();
        entry_key.push(0);
        entry_key.extend_from_slice(after.id.as_str().as_bytes());
        entry_key.push(0);
        entry_key.extend_from_slice(&after.version.to_be_bytes());
        Derived {
            merchant: after.merchant_id.clone(),
            entry_key,
            lines,
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
    pub(super) fn adds_payouts(&self) -> bool {
        !self.payouts_added.is_empty()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.payouts_removed.is_empty() && self.payouts_added.is_empty()
    }

    /// Writes the entry, the new balances and the payout changes in the caller's transaction.
    pub(super) fn write(
        &self,
        ledger: &TransactionalTree,
        entries: &TransactionalTree,
        payouts: &TransactionalTree,
    ) -> Result<(), ConflictableTransactionError<Abort>> {
        if !self.lines.is_empty() {
            entries.insert(self.entry_key.as_slice(), encode(&self.lines))?;
            for line in &self.lines {
                let key = balance_key(&self.merchant, &line.asset, line.account);
                let current: Net = match ledger.get(&key)? {
                    Some(v) => decode("balance", &v).map_err(|e| abort(Abort::Decode(e)))?,
                    None => Net::default(),
                };
                let next = current.plus(line.net);
                if next.is_zero() {
                    ledger.remove(key)?;
                } else {
                    ledger.insert(key, encode(&next))?;
                }
            }
        }
        for k in &self.payouts_removed {
            payouts.remove(k.as_slice())?;
        }
        for (k, v) in &self.payouts_added {
            payouts.insert(k.as_slice(), v.as_slice())?;
        }
        Ok(())
    }
}

impl SledStore {
    pub(super) fn read_balances(&self, merchant: &MerchantId) -> Result<Balances, StoreError> {
        let mut prefix = merchant.as_str().as_bytes().to_vec();
        prefix.push(0);
        let mut b = Balances::default();
        for kv in self.inner.ledger.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let rest = &k[prefix.len()..];
            let Some(sep) = rest.iter().position(|&c| c == 0) else {
                continue;
            };
            let asset = String::from_utf8_lossy(&rest[..sep]).into_owned();
            let Some(account) = std::str::from_utf8(&rest[sep + 1..])
                .ok()
                .and_then(Account::parse)
            else {
                continue;
            };
            b.0.insert((asset, account), decode("balance", &v)?);
        }
        Ok(b)
    }

    pub(super) fn read_entries(
        &self,
        merchant: &MerchantId,
        invoice: &InvoiceId,
    ) -> Result<Vec<(u64, Vec<Line>)>, StoreError> {
        let mut prefix = merchant.as_str().as_bytes().to_vec();
        prefix.push(0);
        prefix.extend_from_slice(invoice.as_str().as_bytes());
        prefix.push(0);
        self.inner
            .ledger_entries
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let mut version = [0u8; 8];
                version.copy_from_slice(&k[k.len() - 8..]);
                Ok((u64::from_be_bytes(version), decode("ledger entry", &v)?))
            })
            .collect()
    }

    pub(super) fn read_payouts(&self, kind: &str) -> Result<Vec<PayoutWork>, StoreError> {
        let mut prefix = kind.as_bytes().to_vec();
        prefix.push(0);
        self.inner
            .payouts
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let (invoice, record) = rest.split_once('\0').unwrap_or((rest.as_str(), ""));
                Ok(PayoutWork {
                    invoice: InvoiceId::parse(invoice).ok_or_else(|| StoreError::Corrupt {
                        what: "payout key",
                        reason: format!("{invoice:?} is not an invoice id"),
                    })?,
                    record: record.to_owned(),
                    value: v.to_vec(),
                })
            })
            .collect()
    }
}
