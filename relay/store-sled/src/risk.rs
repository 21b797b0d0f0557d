//! Risk rules and velocity signals.
//!
//! - `risk_rules`: merchant id → the merchant's rules (versioned).
//! - `risk_signals`: merchant id · key · 0 · signal id → (time, currency, amount). One entry per
//!   id under a key, so a signal recorded again is counted once.

use super::{abort, merchant_prefix, Abort, SledStore};
use crate::codec::{decode, encode};
use relay_core::{MerchantId, RiskRules, Timestamp};
use relay_store::{Risk, Signal, StoreError};

fn signal_prefix(merchant: &MerchantId, key: &str) -> Vec<u8> {
    let mut k = merchant_prefix(merchant);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k
}

impl Risk for SledStore {
    async fn risk_rules(&self, merchant: &MerchantId) -> Result<RiskRules, StoreError> {
        Ok(self
            .inner
            .risk_rules
            .get(merchant.as_str().as_bytes())?
            .map(|v| decode("risk rules", &v))
            .transpose()?
            .unwrap_or_default())
    }

    async fn put_risk_rules(
        &self,
        merchant: &MerchantId,
        expected_version: u64,
        rules: &RiskRules,
    ) -> Result<bool, StoreError> {
        let key = merchant.as_str().as_bytes();
        let value = encode(rules);
        let _gate = self.write_gate();
        let result = self.inner.risk_rules.transaction(|tree| {
            let stored = match tree.get(key)? {
                Some(v) => {
                    decode::<RiskRules>("risk rules", &v)
                        .map_err(|e| abort(Abort::Decode(e)))?
                        .version
                }
                None => 0,
            };
            if stored != expected_version {
                return Err(abort(Abort::Conflict));
            }
            tree.insert(key, value.as_slice())?;
            Ok(())
        });
        Ok(matches!(self.finish(result)?, relay_store::Commit::Done))
    }

    async fn record_signal(
        &self,
        merchant: &MerchantId,
        signal: &Signal,
    ) -> Result<(), StoreError> {
        let mut key = signal_prefix(merchant, &signal.key);
        key.extend_from_slice(signal.id.as_bytes());
        let value = encode(&(signal.at.0, &signal.currency, signal.amount.to_string()));
        let _gate = self.write_gate();
        // Only the first record of an id stands.
        let _ =
            self.inner
                .risk_signals
                .compare_and_swap(key, None as Option<&[u8]>, Some(value))?;
        Ok(())
    }

    async fn prune_signals(&self, before: Timestamp) -> Result<usize, StoreError> {
        let tree = &self.inner.risk_signals;
        let mut old = Vec::new();
        for entry in tree.iter() {
            let (k, v) = entry?;
            let (at, ..): (i64, String, String) = decode("risk signal", &v)?;
            if at < before.0 {
                old.push(k);
            }
        }
        let _gate = self.write_gate();
        for k in &old {
            tree.remove(k)?;
        }
        Ok(old.len())
    }

    async fn signals_since(
        &self,
        merchant: &MerchantId,
        key: &str,
        since: Timestamp,
    ) -> Result<Vec<Signal>, StoreError> {
        let prefix = signal_prefix(merchant, key);
        let mut out = Vec::new();
        for entry in self.inner.risk_signals.scan_prefix(&prefix) {
            let (k, v) = entry?;
            let (at, currency, amount): (i64, String, String) = decode("risk signal", &v)?;
            if at < since.0 {
                continue;
            }
            out.push(Signal {
                key: key.to_owned(),
                id: String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                at: Timestamp(at),
                currency,
                amount: amount.parse().map_err(|_| StoreError::Corrupt {
                    what: "risk signal",
                    reason: "amount".into(),
                })?,
            });
        }
        Ok(out)
    }
}
