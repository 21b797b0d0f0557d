//! Risk rules (a row per merchant, its version checked on every edit) and velocity signals (a
//! row per signal, counted by key and time).

use crate::invoices::big;
use crate::{db, decode, encode, PgStore};
use relay_core::{MerchantId, RiskRules, Timestamp};
use relay_store::{Risk, Signal, StoreError};
use sqlx::Row;

impl Risk for PgStore {
    async fn risk_rules(&self, merchant: &MerchantId) -> Result<RiskRules, StoreError> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM risk_rules WHERE merchant_id = $1")
                .bind(merchant.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(body
            .map(|b| decode("risk rules", &b))
            .transpose()?
            .unwrap_or_default())
    }

    async fn put_risk_rules(
        &self,
        merchant: &MerchantId,
        expected_version: u64,
        rules: &RiskRules,
    ) -> Result<bool, StoreError> {
        // One statement: the first version is an insert that finds no row, a later one an update
        // of the row at the expected version.
        let n = if expected_version == 0 {
            sqlx::query(
                "INSERT INTO risk_rules (merchant_id, version, body) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(merchant.as_str())
            .bind(big(rules.version))
            .bind(encode(rules))
            .execute(&self.pool)
            .await
        } else {
            sqlx::query(
                "UPDATE risk_rules SET version = $2, body = $3 \
                 WHERE merchant_id = $1 AND version = $4",
            )
            .bind(merchant.as_str())
            .bind(big(rules.version))
            .bind(encode(rules))
            .bind(big(expected_version))
            .execute(&self.pool)
            .await
        }
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn record_signal(
        &self,
        merchant: &MerchantId,
        signal: &Signal,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO risk_signals (merchant_id, key, id, at, currency, amount) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(merchant.as_str())
        .bind(&signal.key)
        .bind(&signal.id)
        .bind(signal.at.0)
        .bind(&signal.currency)
        .bind(signal.amount.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn prune_signals(&self, before: Timestamp) -> Result<usize, StoreError> {
        let n = sqlx::query("DELETE FROM risk_signals WHERE at < $1")
            .bind(before.0)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn signals_since(
        &self,
        merchant: &MerchantId,
        key: &str,
        since: Timestamp,
    ) -> Result<Vec<Signal>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, currency, amount FROM risk_signals \
             WHERE merchant_id = $1 AND key = $2 AND at >= $3",
        )
        .bind(merchant.as_str())
        .bind(key)
        .bind(since.0)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|row| {
                let amount: String = row.try_get("amount").map_err(db)?;
                Ok(Signal {
                    key: key.to_owned(),
                    id: row.try_get("id").map_err(db)?,
                    at: Timestamp(row.try_get("at").map_err(db)?),
                    currency: row.try_get("currency").map_err(db)?,
                    amount: amount.parse().map_err(|_| StoreError::Corrupt {
                        what: "risk signal",
                        reason: "amount".into(),
                    })?,
                })
            })
            .collect()
    }
}
