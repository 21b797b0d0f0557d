//! The ledger and the payout work list: the [`Posting`] core computes for each invoice change,
//! written in the transaction that writes the invoice.

use crate::{db, decode, encode, invoices::big, PgStore, Stop};
use relay_core::ledger::{Line, PayoutKind, PayoutWork, Posting};
use relay_core::{Account, Balances, InvoiceId, MerchantId, Net};
use relay_store::{Ledger, StoreError};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;

/// Writes `posting` (of `merchant`'s invoice `invoice`) in the caller's transaction: the entry,
/// the new balances and the payout changes. Balances are locked in one order (asset, account),
/// so two postings of one merchant wait for each other instead of deadlocking.
pub(crate) async fn write_posting(
    conn: &mut PgConnection,
    merchant: &MerchantId,
    invoice: &InvoiceId,
    posting: &Posting,
) -> Result<(), Stop> {
    if !posting.lines.is_empty() {
        sqlx::query(
            "INSERT INTO ledger_entries (merchant_id, invoice_id, version, lines) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (merchant_id, invoice_id, version) DO UPDATE SET lines = excluded.lines",
        )
        .bind(merchant.as_str())
        .bind(invoice.as_str())
        .bind(big(posting.version))
        .bind(encode(&posting.lines))
        .execute(&mut *conn)
        .await?;
        let mut moves: BTreeMap<(&str, &str), Net> = BTreeMap::new();
        for line in &posting.lines {
            let net = moves
                .entry((line.asset.as_str(), line.account.as_str()))
                .or_default();
            *net = net.plus(line.net);
        }
        for ((asset, account), net) in moves {
            sqlx::query(
                "INSERT INTO ledger_balances (merchant_id, asset, account, net) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(merchant.as_str())
            .bind(asset)
            .bind(account)
            .bind(encode(&Net::default()))
            .execute(&mut *conn)
            .await?;
            let current: String = sqlx::query_scalar(
                "SELECT net FROM ledger_balances \
                 WHERE merchant_id = $1 AND asset = $2 AND account = $3 FOR UPDATE",
            )
            .bind(merchant.as_str())
            .bind(asset)
            .bind(account)
            .fetch_one(&mut *conn)
            .await?;
            let current: Net = decode("balance", &current)?;
            sqlx::query(
                "UPDATE ledger_balances SET net = $4 \
                 WHERE merchant_id = $1 AND asset = $2 AND account = $3",
            )
            .bind(merchant.as_str())
            .bind(asset)
            .bind(account)
            .bind(encode(&current.plus(net)))
            .execute(&mut *conn)
            .await?;
        }
    }
    for at in &posting.payouts_removed {
        sqlx::query("DELETE FROM payouts WHERE kind = $1 AND invoice_id = $2 AND record = $3")
            .bind(at.kind.as_str())
            .bind(at.invoice.as_str())
            .bind(&at.record)
            .execute(&mut *conn)
            .await?;
    }
    for (at, value) in &posting.payouts_added {
        sqlx::query(
            "INSERT INTO payouts (kind, invoice_id, record, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, invoice_id, record) DO UPDATE SET value = excluded.value",
        )
        .bind(at.kind.as_str())
        .bind(at.invoice.as_str())
        .bind(&at.record)
        .bind(value.as_slice())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl Ledger for PgStore {
    async fn balances(&self, merchant: &MerchantId) -> Result<Balances, StoreError> {
        let rows =
            sqlx::query("SELECT asset, account, net FROM ledger_balances WHERE merchant_id = $1")
                .bind(merchant.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let mut b = Balances::default();
        for r in &rows {
            let Some(account) = Account::parse(r.get("account")) else {
                continue;
            };
            let net: Net = decode("balance", r.get("net"))?;
            // A balance back at zero is no balance (as on sled, which deletes it).
            if !net.is_zero() {
                b.0.insert((r.get::<String, _>("asset"), account), net);
            }
        }
        Ok(b)
    }

    async fn ledger_entries(
        &self,
        merchant: &MerchantId,
        invoice: &InvoiceId,
    ) -> Result<Vec<(u64, Vec<Line>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, lines FROM ledger_entries \
             WHERE merchant_id = $1 AND invoice_id = $2 ORDER BY version",
        )
        .bind(merchant.as_str())
        .bind(invoice.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let version = u64::try_from(r.get::<i64, _>("version")).unwrap_or(0);
                Ok((version, decode("ledger entry", r.get("lines"))?))
            })
            .collect()
    }

    async fn payouts(&self, kind: PayoutKind) -> Result<Vec<PayoutWork>, StoreError> {
        let rows = sqlx::query(
            "SELECT invoice_id, record, value FROM payouts WHERE kind = $1 \
             ORDER BY invoice_id, record",
        )
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let invoice: &str = r.get("invoice_id");
                Ok(PayoutWork {
                    invoice: InvoiceId::parse(invoice).ok_or_else(|| StoreError::Corrupt {
                        what: "payout key",
                        reason: format!("{invoice:?} is not an invoice id"),
                    })?,
                    record: r.get("record"),
                    value: r.get("value"),
                })
            })
            .collect()
    }
}
