//! Merchants and their API keys.

use crate::error::CoreError;
use crate::id::MerchantId;
use crate::invoice::Method;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// A merchant as the relay stores it. Secrets are not here: the API key is kept only as a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    pub id: MerchantId,
    pub name: String,
    pub created_at: Timestamp,
    /// Watch-only receive descriptor for bitcoin invoices (the relay never holds the keys).
    pub btc_descriptor: Option<String>,
    /// Where Ethereum captures and settlements are paid, `0x`-prefixed lowercase hex.
    pub eth_payout: Option<String>,
    /// The methods offered when an invoice does not name its own.
    pub methods: Vec<Method>,
    /// Where the merchant's signed webhooks go, if it gave an address at creation.
    pub webhook_url: Option<String>,
    /// The key that signs the merchant's webhooks. Shown once at creation, never again.
    pub webhook_secret: Secret,
    /// Blocks a bitcoin payment needs before it counts as final (0, 1, 2 or 6; 0 accepts a
    /// payment as soon as it is in the mempool). Copied into each invoice at creation.
    #[serde(default = "default_btc_confirmations")]
    pub btc_confirmations: u32,
    /// How far short of the price an on-chain payment may fall and still settle the invoice, in
    /// basis points of the price (it keeps the `paid_partial` exception). Fixed per invoice at
    /// creation.
    #[serde(default)]
    pub payment_tolerance_bps: u16,
    /// The spread on crypto conversions, in basis points: the rate a bitcoin or Ethereum payer is
    /// quoted is the market's less this (they pay this much more), shown in each quote. Card
    /// payments, in the price's own currency, have none.
    #[serde(default)]
    pub rate_spread_bps: u16,
    /// How long an invoice's crypto quotes hold, in seconds (at most the invoice's own expiry):
    /// a payment that arrives later is worth what it is worth at the rate of its arrival.
    #[serde(default = "default_quote_ttl")]
    pub quote_ttl_secs: u32,
    /// Blocks an escrow deposit needs before it counts as final (1 to 64; 1 is the block that
    /// includes it). Copied into each invoice at creation.
    #[serde(default = "default_eth_confirmations")]
    pub eth_confirmations: u32,
    /// Settlement preference: the asset (`ETH` or a configured ERC-20 code) in which the merchant
    /// is paid on Ethereum for card and bitcoin payments, or `None` to be paid on each payment's
    /// own rail. Needs `eth_payout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_on_ethereum: Option<String>,
}

/// Who the operator's treasury addresses are counted for: derivation indexes of the treasury
/// descriptor are allocated under this id (no merchant has it: merchant ids are random).
pub fn treasury_index_owner() -> MerchantId {
    MerchantId::from_entropy([0; 12])
}

/// How long quotes hold when the merchant does not say: 15 minutes.
pub const DEFAULT_QUOTE_TTL_SECS: u32 = 900;

fn default_quote_ttl() -> u32 {
    DEFAULT_QUOTE_TTL_SECS
}

/// The largest spread a merchant may put on crypto conversions (10 %).
pub const MAX_RATE_SPREAD_BPS: u16 = 1000;

/// The most confirmations a merchant may ask of an Ethereum deposit.
pub const MAX_ETH_CONFIRMATIONS: u32 = 64;

fn default_eth_confirmations() -> u32 {
    1
}

/// The bitcoin confirmation policies a merchant may choose from.
pub const BTC_CONFIRMATION_POLICIES: [u32; 4] = [0, 1, 2, 6];

/// Payment tolerance is capped at 10 %: beyond that an under-payment is a partial payment.
pub const MAX_PAYMENT_TOLERANCE_BPS: u16 = 1000;

fn default_btc_confirmations() -> u32 {
    1
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// `prefix` followed by 32 random bytes (hex) supplied by the caller.
    pub fn from_entropy(prefix: &str, bytes: [u8; 32]) -> Secret {
        Secret(format!("{prefix}{}", hex::encode(bytes)))
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// A secret as a store gives it back.
    pub fn from_stored(s: String) -> Secret {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Merchant {
    pub fn validate_eth_confirmations(n: u32) -> Result<(), CoreError> {
        if !(1..=MAX_ETH_CONFIRMATIONS).contains(&n) {
            return Err(CoreError::InvalidField {
                field: "eth_confirmations",
                reason: format!("{n} is not between 1 and {MAX_ETH_CONFIRMATIONS}"),
            });
        }
        Ok(())
    }

    pub fn validate_btc_confirmations(n: u32) -> Result<(), CoreError> {
        if !BTC_CONFIRMATION_POLICIES.contains(&n) {
            return Err(CoreError::InvalidField {
                field: "btc_confirmations",
                reason: format!("{n} is not one of 0, 1, 2 or 6"),
            });
        }
        Ok(())
    }

    pub fn validate_payment_tolerance(bps: u16) -> Result<(), CoreError> {
        if bps > MAX_PAYMENT_TOLERANCE_BPS {
            return Err(CoreError::InvalidField {
                field: "payment_tolerance_bps",
                reason: format!("{bps} is above the maximum of {MAX_PAYMENT_TOLERANCE_BPS} (10 %)"),
            });
        }
        Ok(())
    }

    pub fn validate_rate_spread(bps: u16) -> Result<(), CoreError> {
        if bps > MAX_RATE_SPREAD_BPS {
            return Err(CoreError::InvalidField {
                field: "rate_spread_bps",
                reason: format!("{bps} is above the maximum of {MAX_RATE_SPREAD_BPS} (10 %)"),
            });
        }
        Ok(())
    }

    pub fn validate_quote_ttl(secs: u32) -> Result<(), CoreError> {
        if !(10..=30 * 86_400).contains(&secs) {
            return Err(CoreError::InvalidField {
                field: "quote_ttl_secs",
                reason: format!("{secs} is not between 10 s and 30 days"),
            });
        }
        Ok(())
    }

    pub fn validate_name(name: &str) -> Result<(), CoreError> {
        let len = name.chars().count();
        if len == 0 || len > 200 || name.chars().any(char::is_control) {
            return Err(CoreError::InvalidField {
                field: "name",
                reason: "1 to 200 printable characters".into(),
            });
        }
        Ok(())
    }

    /// Accepts an absolute http(s) URL of reasonable length.
    pub fn validate_webhook_url(url: &str, allow_private: bool) -> Result<(), CoreError> {
        crate::destination::check_webhook_url(url, allow_private)
    }

    /// Normalises an Ethereum address to lowercase hex, rejecting anything else.
    pub fn parse_eth_address(addr: &str) -> Result<String, CoreError> {
        let lower = addr.to_ascii_lowercase();
        let ok = lower.len() == 42
            && lower.starts_with("0x")
            && lower[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(CoreError::InvalidField {
                field: "eth_payout",
                reason: format!("{addr:?} is not a 0x-prefixed 20-byte hex address"),
            });
        }
        Ok(lower)
    }
}

/// A secret API key as handed to the merchant once (`rk_…`). Its `Debug` and `Display` never show
/// the secret, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub const PREFIX: &'static str = "rk_";

    /// A new key from 32 random bytes supplied by the caller.
    pub fn from_entropy(bytes: [u8; 32]) -> ApiKey {
        ApiKey(format!("{}{}", Self::PREFIX, hex::encode(bytes)))
    }

    pub fn from_presented(s: &str) -> ApiKey {
        ApiKey(s.to_owned())
    }

    /// The secret itself, for the one place that shows it to the merchant.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// What the store keeps. Keys carry 256 bits of entropy, so a plain SHA-256 is enough (no
    /// password-style stretching is needed to resist guessing).
    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// SHA-256 of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ApiKeyHash(pub [u8; 32]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_never_prints_its_secret() {
        let key = ApiKey::from_entropy([7; 32]);
        assert!(!format!("{key:?}").contains("0707"));
        assert_eq!(
            key.hash(),
            ApiKey::from_presented(key.expose_secret()).hash()
        );
        assert_ne!(key.hash(), ApiKey::from_entropy([8; 32]).hash());
    }

    #[test]
    fn eth_address_is_validated_and_lowercased() {
        assert_eq!(
            Merchant::parse_eth_address("0xABCDEF0123456789abcdef0123456789ABCDEF01").unwrap(),
            "0xabcdef0123456789abcdef0123456789abcdef01"
        );
        assert!(Merchant::parse_eth_address("0x1234").is_err());
        assert!(Merchant::parse_eth_address("abcdef0123456789abcdef0123456789abcdef0123").is_err());
    }
}
