//! Webhook secrets sealed at rest (see `relay_store::sealed`): endpoints' signing secrets and the
//! merchant's first secret are sealed when written and opened when read; the store records the
//! key's fingerprint (`secrets_key` in the default tree) so it is never opened without it, or
//! with another key.

use super::SledStore;
use crate::codec::{decode, encode};
use relay_core::{Merchant, Secret, WebhookEndpoint};
use relay_store::sealed::{open_with, seal_with};
use relay_store::StoreError;

const MARKER: &str = "secrets_key";

impl SledStore {
    fn seal(&self, owner: &str, secret: &Secret) -> Secret {
        seal_with(self.inner.secrets_key.as_ref(), owner, secret)
    }

    fn open_secret(&self, owner: &str, stored: &Secret) -> Result<Secret, StoreError> {
        open_with(self.inner.secrets_key.as_ref(), owner, stored)
    }

    pub(super) fn seal_endpoint(&self, e: &WebhookEndpoint) -> WebhookEndpoint {
        WebhookEndpoint {
            secret: self.seal(&e.id, &e.secret),
            ..e.clone()
        }
    }

    pub(super) fn open_endpoint(&self, e: WebhookEndpoint) -> Result<WebhookEndpoint, StoreError> {
        Ok(WebhookEndpoint {
            secret: self.open_secret(&e.id, &e.secret)?,
            ..e
        })
    }

    pub(super) fn seal_merchant(&self, m: &Merchant) -> Merchant {
        Merchant {
            webhook_secret: self.seal(m.id.as_str(), &m.webhook_secret),
            ..m.clone()
        }
    }

    pub(super) fn open_merchant(&self, m: Merchant) -> Result<Merchant, StoreError> {
        Ok(Merchant {
            webhook_secret: self.open_secret(m.id.as_str(), &m.webhook_secret)?,
            ..m
        })
    }

    /// Refuses a key other than the one the secrets are sealed with (or none when they are
    /// sealed); with a key, seals what is still in plain text and records the key.
    pub(super) fn check_sealing(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        let marker = i.db.get(MARKER)?;
        let Some(key) = &i.secrets_key else {
            return match marker {
                Some(_) => Err(StoreError::SecretsKey {
                    reason: "this store's webhook secrets are sealed: give its secrets_key_file"
                        .into(),
                }),
                None => Ok(()),
            };
        };
        if let Some(m) = &marker {
            if m.as_ref() != key.fingerprint() {
                return Err(StoreError::SecretsKey {
                    reason: "secrets_key_file is not the key this store's secrets are sealed with"
                        .into(),
                });
            }
            return Ok(());
        }
        // First opened with a key: seal every secret stored in plain text, then mark the store.
        let _gate = self.write_gate();
        for kv in i.webhook_endpoints.iter() {
            let (k, v) = kv?;
            let e: WebhookEndpoint = decode("webhook endpoint", &v)?;
            i.webhook_endpoints
                .insert(k, encode(&self.seal_endpoint(&e)))?;
        }
        for kv in i.merchants.iter() {
            let (k, v) = kv?;
            let m: Merchant = decode("merchant", &v)?;
            i.merchants.insert(k, encode(&self.seal_merchant(&m)))?;
        }
        i.db.insert(MARKER, key.fingerprint().as_slice())?;
        i.db.flush()?;
        Ok(())
    }
}
