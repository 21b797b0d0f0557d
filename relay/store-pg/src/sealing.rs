//! Webhook secrets sealed at rest (see `relay_store::sealed`), as on sled: merchants' first
//! secrets and endpoints' signing secrets are sealed when written and opened when read, and the
//! key's fingerprint is recorded in `store_meta`, so the store is never opened without its key or
//! with another one.

use crate::{db, decode, encode, PgStore};
use relay_core::{Merchant, Secret, WebhookEndpoint};
use relay_store::sealed::{open_with, seal_with};
use relay_store::StoreError;
use sqlx::Row;

const MARKER: &str = "secrets_key";

impl PgStore {
    fn seal(&self, owner: &str, secret: &Secret) -> Secret {
        seal_with(self.secrets_key.as_deref(), owner, secret)
    }

    fn open_secret(&self, owner: &str, stored: &Secret) -> Result<Secret, StoreError> {
        open_with(self.secrets_key.as_deref(), owner, stored)
    }

    pub(crate) fn seal_merchant(&self, m: &Merchant) -> Merchant {
        Merchant {
            webhook_secret: self.seal(m.id.as_str(), &m.webhook_secret),
            ..m.clone()
        }
    }

    pub(crate) fn open_merchant(&self, body: &str) -> Result<Merchant, StoreError> {
        let m: Merchant = decode("merchant", body)?;
        Ok(Merchant {
            webhook_secret: self.open_secret(m.id.as_str(), &m.webhook_secret)?,
            ..m
        })
    }

    pub(crate) fn seal_endpoint(&self, e: &WebhookEndpoint) -> WebhookEndpoint {
        WebhookEndpoint {
            secret: self.seal(&e.id, &e.secret),
            ..e.clone()
        }
    }

    pub(crate) fn open_endpoint(&self, body: &str) -> Result<WebhookEndpoint, StoreError> {
        let e: WebhookEndpoint = decode("webhook endpoint", body)?;
        Ok(WebhookEndpoint {
            secret: self.open_secret(&e.id, &e.secret)?,
            ..e
        })
    }

    /// Refuses a key other than the one the secrets are sealed with (or none when they are
    /// sealed); with a key, seals what is still in plain text and records the key. Of relays
    /// starting at once, the one whose marker insert wins seals, in that transaction; the others
    /// wait for it and then find the marker.
    pub(crate) async fn check_sealing(&self) -> Result<(), StoreError> {
        let marker: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE name = $1")
                .bind(MARKER)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        let Some(key) = &self.secrets_key else {
            return match marker {
                Some(_) => Err(StoreError::SecretsKey {
                    reason: "this store's webhook secrets are sealed: give its secrets_key_file"
                        .into(),
                }),
                None => Ok(()),
            };
        };
        let refuse_other = |m: &[u8]| {
            if m == key.fingerprint() {
                Ok(())
            } else {
                Err(StoreError::SecretsKey {
                    reason: "secrets_key_file is not the key this store's secrets are sealed with"
                        .into(),
                })
            }
        };
        if let Some(m) = &marker {
            return refuse_other(m);
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        let claimed = sqlx::query(
            "INSERT INTO store_meta (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(MARKER)
        .bind(key.fingerprint().to_vec())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        if !claimed {
            tx.rollback().await.map_err(db)?;
            let m: Vec<u8> = sqlx::query_scalar("SELECT value FROM store_meta WHERE name = $1")
                .bind(MARKER)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
            return refuse_other(&m);
        }
        for row in sqlx::query("SELECT id, body FROM merchants")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
        {
            let m: Merchant = decode("merchant", row.get("body"))?;
            sqlx::query("UPDATE merchants SET body = $1 WHERE id = $2")
                .bind(encode(&self.seal_merchant(&m)))
                .bind(row.get::<String, _>("id"))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        for row in sqlx::query("SELECT merchant_id, id, body FROM webhook_endpoints")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
        {
            let e: WebhookEndpoint = decode("webhook endpoint", row.get("body"))?;
            sqlx::query(
                "UPDATE webhook_endpoints SET body = $1 WHERE merchant_id = $2 AND id = $3",
            )
            .bind(encode(&self.seal_endpoint(&e)))
            .bind(row.get::<String, _>("merchant_id"))
            .bind(row.get::<String, _>("id"))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }
}
