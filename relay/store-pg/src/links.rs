//! Payment links: a row per link, found by id or by its public token.

use crate::invoices::{big, claim, Dedupe, Wrote};
use crate::{db, decode, encode, transact, PgStore, Refusal, Stop};
use relay_core::{LinkId, MerchantId, PaymentLink};
use relay_store::{Commit, IdempotencyWrite, Page, PaymentLinks, StoreError};
use sqlx::Row;

impl PaymentLinks for PgStore {
    async fn create_link(
        &self,
        link: &PaymentLink,
        idempotency: Option<IdempotencyWrite<'_>>,
    ) -> Result<Commit, StoreError> {
        let body = &encode(link);
        let idempotency = idempotency.as_ref();
        let done = transact(|| async move {
            let mut tx = self.begin().await?;
            if let Some(w) = idempotency {
                claim(&mut tx, Dedupe::Request(w.merchant_id, w.key), &w.record).await?;
            }
            let n = sqlx::query(
                "INSERT INTO payment_links (id, merchant_id, token, version, body) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(link.id.as_str())
            .bind(link.merchant_id.as_str())
            .bind(&link.token)
            .bind(big(link.version))
            .bind(body)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(Stop::Refused(Refusal::Conflict));
            }
            tx.commit().await?;
            Ok(Wrote::default())
        })
        .await?;
        Ok(self.committed(done))
    }

    async fn link(&self, id: &LinkId) -> Result<Option<PaymentLink>, StoreError> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM payment_links WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        body.map(|b| decode("payment link", &b)).transpose()
    }

    async fn link_by_token(&self, token: &str) -> Result<Option<PaymentLink>, StoreError> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM payment_links WHERE token = $1")
                .bind(token)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        body.map(|b| decode("payment link", &b)).transpose()
    }

    async fn update_link(
        &self,
        expected_version: u64,
        link: &PaymentLink,
    ) -> Result<Commit, StoreError> {
        let body = &encode(link);
        let done = transact(|| async move {
            let mut tx = self.begin().await?;
            let n = sqlx::query(
                "UPDATE payment_links SET version = $3, body = $4 \
                 WHERE id = $1 AND version = $2 AND token = $5",
            )
            .bind(link.id.as_str())
            .bind(big(expected_version))
            .bind(big(link.version))
            .bind(body)
            .bind(&link.token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(Stop::Refused(Refusal::Conflict));
            }
            tx.commit().await?;
            Ok(Wrote::default())
        })
        .await?;
        Ok(self.committed(done))
    }

    async fn list_links(
        &self,
        merchant: &MerchantId,
        starting_after: Option<&LinkId>,
        limit: usize,
    ) -> Result<Page<PaymentLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM payment_links WHERE merchant_id = $1 AND ($2::TEXT IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(merchant.as_str())
        .bind(starting_after.map(LinkId::as_str))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let has_more = rows.len() > limit;
        let items = rows
            .iter()
            .take(limit)
            .map(|r| decode("payment link", r.get("body")))
            .collect::<Result<_, _>>()?;
        Ok(Page { items, has_more })
    }
}
