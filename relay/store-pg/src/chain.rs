//! The chain watchers' cursors and tracking records, written with the invoice changes of a step.

use crate::invoices::{write_change, Wrote};
use crate::{db, transact, PgStore};
use relay_store::{ChainState, ChainWrite, Commit, StoreError, TrackedRecord};
use sqlx::Row;

impl ChainState for PgStore {
    async fn chain_cursor(&self, chain: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT cursor FROM chain_cursors WHERE chain = $1")
            .bind(chain)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn chain_tracked(&self, chain: &str) -> Result<Vec<TrackedRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT key, value FROM chain_tracked WHERE chain = $1 ORDER BY key")
                .bind(chain)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| (r.get("key"), r.get("value")))
            .collect())
    }

    async fn commit_chain(&self, chain: &str, write: &ChainWrite) -> Result<Commit, StoreError> {
        // Invoices are locked in id order, so two steps touching the same invoices (the bitcoin
        // and the Ethereum watcher) wait for each other instead of deadlocking.
        let mut changes: Vec<_> = write.invoices.iter().collect();
        changes.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        let changes = &changes;
        let done = transact(|| async move {
            let mut tx = self.begin().await?;
            let mut wrote = Wrote::default();
            for (version, invoice, events) in changes.iter().copied() {
                wrote = wrote.and(write_change(&mut tx, *version, invoice, events).await?);
            }
            for key in &write.delete {
                sqlx::query("DELETE FROM chain_tracked WHERE chain = $1 AND key = $2")
                    .bind(chain)
                    .bind(key.as_slice())
                    .execute(&mut *tx)
                    .await?;
            }
            for (key, value) in &write.put {
                sqlx::query(
                    "INSERT INTO chain_tracked (chain, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (chain, key) DO UPDATE SET value = excluded.value",
                )
                .bind(chain)
                .bind(key.as_slice())
                .bind(value.as_slice())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO chain_cursors (chain, cursor) VALUES ($1, $2) \
                 ON CONFLICT (chain) DO UPDATE SET cursor = excluded.cursor",
            )
            .bind(chain)
            .bind(write.cursor.as_slice())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(wrote)
        })
        .await?;
        Ok(self.committed(done))
    }
}
