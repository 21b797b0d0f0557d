//! Scoped API keys: what each key of a merchant may do, and which scope each API operation
//! needs. A merchant's first key has every scope; the keys it makes may have fewer (like Stripe's
//! restricted keys), never more than the key that makes them.

use crate::id::MerchantId;
use crate::merchant::{ApiKey, ApiKeyHash, Merchant};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// One permission of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every `GET` (invoices, events, deliveries, balances, webhook endpoints).
    #[serde(rename = "read")]
    Read,
    /// Create and cancel invoices, and make and deactivate payment links.
    #[serde(rename = "invoices:write")]
    InvoicesWrite,
    /// Ask for refunds and record bitcoin refunds as paid.
    #[serde(rename = "refunds:write")]
    RefundsWrite,
    /// Release held cross-rail settlements.
    #[serde(rename = "settlements:write")]
    SettlementsWrite,
    /// Create and disable webhook endpoints, redeliver events.
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    /// List, create, roll and revoke API keys.
    #[serde(rename = "keys:write")]
    KeysWrite,
    /// Change the risk rules, approve and reject reviews.
    #[serde(rename = "risk:write")]
    RiskWrite,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Read,
        Scope::InvoicesWrite,
        Scope::RefundsWrite,
        Scope::SettlementsWrite,
        Scope::WebhooksWrite,
        Scope::KeysWrite,
        Scope::RiskWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::InvoicesWrite => "invoices:write",
            Scope::RefundsWrite => "refunds:write",
            Scope::SettlementsWrite => "settlements:write",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::KeysWrite => "keys:write",
            Scope::RiskWrite => "risk:write",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// What an API operation needs. `None`: every scope (an operation no rule names is refused to
/// any restricted key).
pub fn required_scope(method: &str, route: &str) -> Option<Scope> {
    if route == "/v1/api_keys" || route.starts_with("/v1/api_keys/") {
        return Some(Scope::KeysWrite);
    }
    if matches!(method, "GET" | "HEAD") {
        return Some(Scope::Read);
    }
    if route.starts_with("/v1/invoices/{id}/refunds") {
        Some(Scope::RefundsWrite)
    } else if route.starts_with("/v1/invoices/{id}/settlements") {
        Some(Scope::SettlementsWrite)
    } else if route == "/v1/invoices"
        || route.starts_with("/v1/invoices/")
        || route.starts_with("/v1/payment_links")
    {
        Some(Scope::InvoicesWrite)
    } else if route.starts_with("/v1/webhook_endpoints") || route == "/v1/events/{id}/redeliver" {
        Some(Scope::WebhooksWrite)
    } else if route.starts_with("/v1/risk/") || route.starts_with("/v1/reviews/") {
        Some(Scope::RiskWrite)
    } else {
        None
    }
}

/// The most keys a merchant may have in use at once.
pub const MAX_KEYS: usize = 50;

/// A merchant's API key as the store keeps it: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// `key_…`
    pub id: String,
    pub merchant_id: MerchantId,
    pub name: String,
    /// Sorted, without repeats.
    pub scopes: Vec<Scope>,
    pub hash: ApiKeyHash,
    /// The secret's last four characters, to tell keys apart (`None` for keys made before keys
    /// had records).
    pub last4: Option<String>,
    pub created_at: Timestamp,
    pub rolled_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl KeyRecord {
    /// Scopes sorted and without repeats.
    pub fn normalize(scopes: &[Scope]) -> Vec<Scope> {
        let mut s = scopes.to_vec();
        s.sort();
        s.dedup();
        s
    }

    /// Whether this key may do what `needed` asks (`None`: everything).
    pub fn allows(&self, needed: Option<Scope>) -> bool {
        if self.revoked_at.is_some() {
            return false;
        }
        match needed {
            Some(s) => self.scopes.contains(&s),
            None => Scope::ALL.iter().all(|s| self.scopes.contains(s)),
        }
    }

    /// Whether a key with `scopes` would have nothing this key lacks.
    pub fn covers(&self, scopes: &[Scope]) -> bool {
        scopes.iter().all(|s| self.scopes.contains(s))
    }

    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// The record of a merchant's first key (every scope), or of a key stored before keys had
/// records: its id comes from its hash, so it is the same every time it is derived.
pub fn first_key(
    merchant: &MerchantId,
    hash: ApiKeyHash,
    last4: Option<String>,
    at: Timestamp,
) -> KeyRecord {
    KeyRecord {
        id: format!("key_{}", hex::encode(&hash.0[..12])),
        merchant_id: merchant.clone(),
        name: "default".to_owned(),
        scopes: Scope::ALL.to_vec(),
        hash,
        last4,
        created_at: at,
        rolled_at: None,
        revoked_at: None,
    }
}

/// The record of `merchant`'s first key, `key` (every scope).
pub fn first_key_of(merchant: &Merchant, key: &ApiKey) -> KeyRecord {
    first_key(
        &merchant.id,
        key.hash(),
        Some(last4(key)),
        merchant.created_at,
    )
}

/// The last four characters of a key's secret, which may be shown.
pub fn last4(key: &ApiKey) -> String {
    let s = key.expose_secret();
    s[s.len().saturating_sub(4)..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scopes: &[Scope]) -> KeyRecord {
        KeyRecord {
            scopes: KeyRecord::normalize(scopes),
            ..first_key(
                &MerchantId::from_entropy([1; 12]),
                ApiKeyHash([2; 32]),
                None,
                Timestamp(0),
            )
        }
    }

    #[test]
    fn each_route_needs_its_scope_and_unknown_writes_need_all() {
        let cases = [
            ("GET", "/v1/invoices", Some(Scope::Read)),
            ("GET", "/v1/balances", Some(Scope::Read)),
            ("POST", "/v1/invoices", Some(Scope::InvoicesWrite)),
            (
                "POST",
                "/v1/invoices/{id}/cancel",
                Some(Scope::InvoicesWrite),
            ),
            (
                "POST",
                "/v1/invoices/{id}/refunds",
                Some(Scope::RefundsWrite),
            ),
            (
                "POST",
                "/v1/invoices/{id}/refunds/{rid}/paid",
                Some(Scope::RefundsWrite),
            ),
            (
                "POST",
                "/v1/invoices/{id}/settlements/{sid}/release",
                Some(Scope::SettlementsWrite),
            ),
            ("POST", "/v1/webhook_endpoints", Some(Scope::WebhooksWrite)),
            (
                "POST",
                "/v1/events/{id}/redeliver",
                Some(Scope::WebhooksWrite),
            ),
            ("GET", "/v1/api_keys", Some(Scope::KeysWrite)),
            ("POST", "/v1/api_keys/{id}/revoke", Some(Scope::KeysWrite)),
            ("POST", "/v1/something_new", None),
        ];
        for (method, route, want) in cases {
            assert_eq!(required_scope(method, route), want, "{method} {route}");
        }
    }

    #[test]
    fn a_restricted_key_does_only_what_its_scopes_say() {
        let read = key(&[Scope::Read]);
        assert!(read.allows(Some(Scope::Read)));
        assert!(!read.allows(Some(Scope::InvoicesWrite)));
        assert!(!read.allows(None));
        let full = key(&Scope::ALL);
        assert!(full.allows(None));
        let mut revoked = full.clone();
        revoked.revoked_at = Some(Timestamp(1));
        assert!(!revoked.allows(Some(Scope::Read)));
        assert!(full.covers(&[Scope::Read, Scope::KeysWrite]));
        assert!(!read.covers(&[Scope::Read, Scope::RefundsWrite]));
    }

    #[test]
    fn scopes_have_stable_names() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(Scope::parse("admin"), None);
        assert_eq!(
            KeyRecord::normalize(&[Scope::KeysWrite, Scope::Read, Scope::KeysWrite]),
            vec![Scope::Read, Scope::KeysWrite]
        );
    }
}
