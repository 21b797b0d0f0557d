//! Outbound webhooks: the merchant's endpoints, the `Relay-Signature` scheme, and the retry
//! schedule. Delivery itself (HTTP, the queue in the store) lives in the binary and the store.

use crate::id::MerchantId;
use crate::merchant::Secret;
use crate::time::Timestamp;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long an event is retried before delivery to an endpoint is given up.
pub const MAX_DELIVERY_AGE_SECS: i64 = 3 * 24 * 3600;
/// The longest pause between two attempts.
pub const MAX_RETRY_DELAY_SECS: u64 = 6 * 3600;
/// Endpoints per merchant.
pub const MAX_ENDPOINTS: usize = 16;

/// Where a merchant receives events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// `we_…`
    pub id: String,
    pub merchant_id: MerchantId,
    pub url: String,
    /// Event types delivered (`invoice.settled`, …); empty means every type.
    pub event_types: Vec<String>,
    /// Signs every delivery. Shown once, when the endpoint is created.
    pub secret: Secret,
    pub enabled: bool,
    /// Why the endpoint was disabled (`disabled by the merchant`, `the receiver answered 410`).
    pub disabled_reason: Option<String>,
    pub created_at: Timestamp,
}

impl WebhookEndpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

/// The `Relay-Signature` header for `body` sent at unix time `t`:
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Seconds to wait after failed attempt number `attempt` (1 for the first): `base · 2^(attempt−1)`
/// capped at six hours, scaled by `jitter` in [0.8, 1.2) so that many failing deliveries do not
/// retry in lockstep. `base_ms` is the first delay in milliseconds.
pub fn retry_delay_ms(attempt: u32, base_ms: u64, jitter_permille: u16) -> u64 {
    let exp = attempt.saturating_sub(1).min(32);
    let raw = base_ms.saturating_mul(1u64 << exp.min(40));
    let capped = raw.min(MAX_RETRY_DELAY_SECS * 1000);
    let jitter = 800 + u64::from(jitter_permille.min(399));
    capped.saturating_mul(jitter) / 1000
}

/// What one attempt got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub endpoint_id: String,
    pub event_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: Timestamp,
    /// The HTTP status, if the receiver answered.
    pub status: Option<u16>,
    /// A transport error or timeout, if it did not.
    pub error: Option<String>,
    pub duration_ms: u64,
    pub outcome: DeliveryOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// 2xx: delivered.
    Delivered,
    /// Another answer or no answer: tried again later.
    Retrying,
    /// 410: the endpoint is disabled.
    EndpointGone,
    /// Still failing three days after the first attempt.
    GaveUp,
}

impl DeliveryOutcome {
    /// What an answer (or its absence) means for attempt number `attempt` of an event first
    /// attempted at `first`.
    pub fn of(status: Option<u16>, first: Timestamp, now: Timestamp) -> DeliveryOutcome {
        match status {
            Some(s) if (200..300).contains(&s) => DeliveryOutcome::Delivered,
            Some(410) => DeliveryOutcome::EndpointGone,
            _ if now.0.saturating_sub(first.0) >= MAX_DELIVERY_AGE_SECS => DeliveryOutcome::GaveUp,
            _ => DeliveryOutcome::Retrying,
        }
    }

    pub fn is_final(self) -> bool {
        self != DeliveryOutcome::Retrying
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: &str = "45705be2a45ab5acdd1395cc695e9e7073125385ec24194921c401dff44176f8";

    #[test]
    fn signature_matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test", b"1800000000.{\"id\":\"evt_1\"}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature_header("whsec_test", 1_800_000_000, br#"{"id":"evt_1"}"#),
            format!("t=1800000000,v1={EXPECTED}")
        );
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_a_cap() {
        let d: Vec<u64> = (1..=20).map(|n| retry_delay_ms(n, 10_000, 200)).collect();
        assert_eq!(d[0], 10_000);
        assert_eq!(d[1], 20_000);
        assert!(d.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*d.last().unwrap(), MAX_RETRY_DELAY_SECS * 1000);
        assert_eq!(retry_delay_ms(1, 10_000, 0), 8_000);
        assert_eq!(retry_delay_ms(1, 10_000, 999), 11_990);
        // With the default base, three days hold about 20 attempts.
        let mut total = 0;
        let mut n = 0;
        while total < MAX_DELIVERY_AGE_SECS as u64 * 1000 {
            n += 1;
            total += retry_delay_ms(n, 10_000, 200);
        }
        assert!((15..=25).contains(&n), "{n} attempts in three days");
    }

    #[test]
    fn outcomes() {
        let t0 = Timestamp(1_000);
        assert_eq!(
            DeliveryOutcome::of(Some(204), t0, t0),
            DeliveryOutcome::Delivered
        );
        assert_eq!(
            DeliveryOutcome::of(Some(410), t0, t0),
            DeliveryOutcome::EndpointGone
        );
        assert_eq!(
            DeliveryOutcome::of(Some(500), t0, t0),
            DeliveryOutcome::Retrying
        );
        assert_eq!(DeliveryOutcome::of(None, t0, t0), DeliveryOutcome::Retrying);
        let late = Timestamp(1_000 + MAX_DELIVERY_AGE_SECS);
        assert_eq!(
            DeliveryOutcome::of(Some(500), t0, late),
            DeliveryOutcome::GaveUp
        );
    }
}
