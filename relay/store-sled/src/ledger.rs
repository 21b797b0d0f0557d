//! The ledger and the payout work list: the [`Posting`] core computes for each invoice change,
//! written in the transaction that writes the invoice.
//!
//! - `ledger`: merchant · 0 · asset · 0 · account → [`Net`] (the balance)
//! - `ledger_entries`: merchant · 0 · invoice · 0 · version (u64 BE) → lines of the entry
//! - `payouts`: kind · 0 · invoice · 0 · record id → value: the work the operator and the
//!   watchers still have to do for an invoice (`eth-refund`, `settlement`, `btc-refund` with the
//!   script to watch, `card-refund` not yet accepted by the gateway). A record leaves the list in
//!   the transaction that finishes it.

use super::{abort, Abort, SledStore};
use crate::codec::{decode, encode};
use relay_core::ledger::{Line, PayoutKind, PayoutRef, PayoutWork, Posting};
use relay_core::{Account, Balances, InvoiceId, MerchantId, Net};
use relay_store::{Ledger, StoreError};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

fn balance_key(merchant: &MerchantId, asset: &str, account: Account) -> Vec<u8> {
    let mut k = merchant.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(asset.as_bytes());
    k.push(0);
    k.extend_from_slice(account.as_str().as_bytes());
    k
}

fn payout_key(at: &PayoutRef) -> Vec<u8> {
    let mut k = at.kind.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(at.invoice.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(at.record.as_bytes());
    k
}

fn entry_key(merchant: &MerchantId, invoice: &InvoiceId, version: u64) -> Vec<u8> {
    let mut k = merchant.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(invoice.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Writes `posting` (of `merchant`'s invoice `invoice`) in the caller's transaction: the entry,
/// the new balances and the payout changes.
pub(super) fn write_posting(
    merchant: &MerchantId,
    invoice: &InvoiceId,
    posting: &Posting,
    ledger: &TransactionalTree,
    entries: &TransactionalTree,
    payouts: &TransactionalTree,
) -> Result<(), ConflictableTransactionError<Abort>> {
    if !posting.lines.is_empty() {
        entries.insert(
            entry_key(merchant, invoice, posting.version),
            encode(&posting.lines),
        )?;
        for line in &posting.lines {
            let key = balance_key(merchant, &line.asset, line.account);
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
    for at in &posting.payouts_removed {
        payouts.remove(payout_key(at))?;
    }
    for (at, v) in &posting.payouts_added {
        payouts.insert(payout_key(at), v.as_slice())?;
    }
    Ok(())
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

    pub(super) fn read_payouts(&self, kind: PayoutKind) -> Result<Vec<PayoutWork>, StoreError> {
        let mut prefix = kind.as_str().as_bytes().to_vec();
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

impl Ledger for SledStore {
    async fn balances(&self, merchant: &MerchantId) -> Result<relay_core::Balances, StoreError> {
        self.read_balances(merchant)
    }

    async fn ledger_entries(
        &self,
        merchant: &MerchantId,
        invoice: &InvoiceId,
    ) -> Result<Vec<(u64, Vec<relay_core::Line>)>, StoreError> {
        self.read_entries(merchant, invoice)
    }

    async fn payouts(&self, kind: PayoutKind) -> Result<Vec<PayoutWork>, StoreError> {
        self.read_payouts(kind)
    }
}
