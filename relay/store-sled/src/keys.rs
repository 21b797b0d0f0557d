//! API keys.
//!
//! - `api_keys`: key hash → the key's record, for keys in use (a revoked or rolled secret's hash
//!   is removed in the same transaction that records the change, so it is refused at once).
//!   Stores made before keys had records hold the merchant id here instead: [`SledStore::open`]
//!   turns those into records.
//! - `merchant_keys`: merchant id · key id → the key's record, revoked ones included.

use super::{abort, Abort, SledStore, LANE_SEP};
use crate::codec::{decode, encode, FORMAT_V1};
use relay_core::access::first_key;
use relay_core::{ApiKeyHash, KeyRecord, Merchant, MerchantId};
use relay_store::{Commit, Merchants, StoreError};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

pub(super) fn merchant_key(merchant: &MerchantId, id: &str) -> Vec<u8> {
    let mut k = merchant.as_str().as_bytes().to_vec();
    k.push(LANE_SEP);
    k.extend_from_slice(id.as_bytes());
    k
}

impl SledStore {
    /// Gives every key stored as a bare merchant id (before keys had records) a record with
    /// every scope, as that key had.
    pub(super) fn migrate_legacy_keys(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        for kv in i.api_keys.iter() {
            let (hash, value) = kv?;
            if value.first() == Some(&FORMAT_V1) {
                continue;
            }
            let Some(merchant) = std::str::from_utf8(&value).ok().and_then(MerchantId::parse)
            else {
                continue;
            };
            let Ok(hash) = <[u8; 32]>::try_from(hash.as_ref()) else {
                continue;
            };
            let created_at = match i.merchants.get(merchant.as_str().as_bytes())? {
                Some(m) => decode::<Merchant>("merchant", &m)?.created_at,
                None => continue,
            };
            let record = first_key(&merchant, ApiKeyHash(hash), None, created_at);
            let value = encode(&record);
            (&i.api_keys, &i.merchant_keys)
                .transaction(|(a, m)| {
                    a.insert(&hash, value.as_slice())?;
                    m.insert(merchant_key(&merchant, &record.id), value.as_slice())?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Storage(e) => StoreError::from(e),
                    sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
                        what: "api key",
                        reason: "migration aborted".into(),
                    },
                })?;
        }
        Ok(())
    }

    pub(super) fn insert_merchant_impl(
        &self,
        merchant: &Merchant,
        key: &KeyRecord,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        let _gate = self.write_gate();
        let value = encode(key);
        let sealed = self.seal_merchant(merchant);
        let result = (&i.merchants, &i.api_keys, &i.merchant_keys).transaction(|(m, a, k)| {
            m.insert(merchant.id.as_str().as_bytes(), encode(&sealed))?;
            a.insert(&key.hash.0, value.as_slice())?;
            k.insert(merchant_key(&merchant.id, &key.id), value.as_slice())?;
            Ok::<_, ConflictableTransactionError<Abort>>(())
        });
        self.finish(result).map(|_| ())
    }

    pub(super) fn key_by_hash_impl(
        &self,
        hash: &ApiKeyHash,
    ) -> Result<Option<(Merchant, KeyRecord)>, StoreError> {
        let Some(raw) = self.inner.api_keys.get(hash.0)? else {
            return Ok(None);
        };
        let key: KeyRecord = decode("api key", &raw)?;
        if !key.is_active() {
            return Ok(None);
        }
        let merchant = self
            .inner
            .merchants
            .get(key.merchant_id.as_str().as_bytes())?
            .map(|v| self.open_merchant(decode("merchant", &v)?))
            .transpose()?;
        Ok(merchant.map(|m| (m, key)))
    }

    pub(super) fn api_keys_impl(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut prefix = merchant.as_str().as_bytes().to_vec();
        prefix.push(LANE_SEP);
        self.inner
            .merchant_keys
            .scan_prefix(prefix)
            .map(|kv| decode("api key", &kv?.1))
            .collect()
    }

    pub(super) fn insert_api_key_impl(&self, key: &KeyRecord) -> Result<Commit, StoreError> {
        let i = &self.inner;
        let _gate = self.write_gate();
        let value = encode(key);
        let mk = merchant_key(&key.merchant_id, &key.id);
        let result = (&i.api_keys, &i.merchant_keys).transaction(|(a, k)| {
            if k.get(&mk)?.is_some() || a.get(key.hash.0)?.is_some() {
                return Err(abort(Abort::Conflict));
            }
            a.insert(&key.hash.0, value.as_slice())?;
            k.insert(mk.as_slice(), value.as_slice())?;
            Ok(())
        });
        self.finish(result)
    }

    pub(super) fn replace_api_key_impl(
        &self,
        old: &KeyRecord,
        new: &KeyRecord,
    ) -> Result<Commit, StoreError> {
        let i = &self.inner;
        let _gate = self.write_gate();
        let (old_value, new_value) = (encode(old), encode(new));
        let mk = merchant_key(&old.merchant_id, &old.id);
        let result = (&i.api_keys, &i.merchant_keys).transaction(|(a, k)| {
            if k.get(&mk)?.as_deref() != Some(old_value.as_slice()) {
                return Err(abort(Abort::Conflict));
            }
            a.remove(&old.hash.0)?;
            if new.is_active() {
                a.insert(&new.hash.0, new_value.as_slice())?;
            }
            k.insert(mk.as_slice(), new_value.as_slice())?;
            Ok(())
        });
        self.finish(result)
    }
}

impl Merchants for SledStore {
    async fn insert_merchant(
        &self,
        merchant: &Merchant,
        key: &KeyRecord,
    ) -> Result<(), StoreError> {
        self.insert_merchant_impl(merchant, key)
    }

    async fn merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError> {
        self.inner
            .merchants
            .get(id.as_str().as_bytes())?
            .map(|v| self.open_merchant(decode("merchant", &v)?))
            .transpose()
    }

    async fn key_by_hash(
        &self,
        key: &ApiKeyHash,
    ) -> Result<Option<(Merchant, KeyRecord)>, StoreError> {
        self.key_by_hash_impl(key)
    }

    async fn api_keys(&self, merchant: &MerchantId) -> Result<Vec<KeyRecord>, StoreError> {
        self.api_keys_impl(merchant)
    }

    async fn insert_api_key(&self, key: &KeyRecord) -> Result<Commit, StoreError> {
        self.insert_api_key_impl(key)
    }

    async fn replace_api_key(
        &self,
        old: &KeyRecord,
        new: &KeyRecord,
    ) -> Result<Commit, StoreError> {
        self.replace_api_key_impl(old, new)
    }

    async fn merchant_count(&self) -> Result<usize, StoreError> {
        Ok(self.inner.merchants.len())
    }
}
