//! Stripe-style webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, where each
//! `v1` is HMAC-SHA256 over `"{t}.{raw body}"` keyed with the endpoint secret. Verification comes
//! before any parsing, compares in constant time, accepts any of several `v1` values and any of
//! several secrets (rotation), and refuses timestamps outside the tolerance.

use hmac::{Hmac, Mac};
use relay_core::{Amount, GatewayEvent, GatewayEventKind, Timestamp};
use serde_json::Value;
use sha2::Sha256;

/// Stripe's default: five minutes either way.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("no v1 signature matches")]
    Mismatch,
    #[error("timestamp outside the {tolerance}s tolerance")]
    Stale { tolerance: i64 },
}

/// The longest `Stripe-Signature` header looked at; a longer one is malformed.
pub const MAX_HEADER_LEN: usize = 4096;
/// The most `v1` values compared (Stripe sends one per active secret, so two while rolling).
pub const MAX_SIGNATURES: usize = 8;

/// Checks `header` against `body` for any of `secrets`, at time `now` (unix seconds).
///
/// The cheap checks come first, so an unauthenticated caller cannot make the relay hash: the
/// header's size, its shape, a `v1` present, the timestamp within `tolerance` (computed without
/// overflow for any `t`). Then one MAC per secret over `"{t}.{body}"`, compared in constant time
/// with at most [`MAX_SIGNATURES`] `v1` values.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[&str],
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<[u8; 32]> = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" => timestamp = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" if signatures.len() < MAX_SIGNATURES => {
                let mut sig = [0u8; 32];
                // A v1 that is not 32 bytes of hex can never match; skip it like other schemes.
                if hex::decode_to_slice(v, &mut sig).is_ok() {
                    signatures.push(sig);
                }
            }
            _ => {} // v0, future schemes and v1 values beyond the bound are ignored
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    if (i128::from(now) - i128::from(t)).abs() > i128::from(tolerance) {
        return Err(SignatureError::Stale { tolerance });
    }
    let matches = secrets.iter().any(|secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // The body is hashed once per secret; each comparison only finishes a copy.
        signatures
            .iter()
            .any(|sig| mac.clone().verify_slice(sig).is_ok())
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    Ok(())
}

fn amount_of(obj: &Value, field: &str) -> Option<Amount> {
    obj.get(field)?
        .as_u64()
        .map(|n| Amount::from_minor(u128::from(n)))
}

fn str_of(obj: &Value, field: &str) -> Option<String> {
    obj.get(field)?.as_str().map(str::to_owned)
}

/// The PaymentIntent id an object refers to: a `payment_intent` field (charges, disputes), given
/// as an id or an expanded object.
fn intent_of(obj: &Value) -> Option<String> {
    match obj.get("payment_intent")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Parses a verified event body. `None` for a body that is not an event at all.
pub fn parse_event(body: &[u8]) -> Option<GatewayEvent> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let id = str_of(&v, "id")?;
    let kind = str_of(&v, "type")?;
    let obj = v.get("data")?.get("object")?;
    let parsed = match kind.as_str() {
        "payment_intent.succeeded" => Some(GatewayEventKind::PaymentSucceeded {
            intent: str_of(obj, "id")?,
            amount: amount_of(obj, "amount_received")
                .filter(|a| !a.is_zero())
                .or_else(|| amount_of(obj, "amount"))?,
            currency: str_of(obj, "currency")?,
            at: v.get("created").and_then(Value::as_i64).map(Timestamp),
        }),
        // Authorized with manual capture (a card held for review), not charged yet.
        "payment_intent.amount_capturable_updated" => Some(GatewayEventKind::PaymentAuthorized {
            intent: str_of(obj, "id")?,
            amount: amount_of(obj, "amount_capturable")
                .filter(|a| !a.is_zero())
                .or_else(|| amount_of(obj, "amount"))?,
            currency: str_of(obj, "currency")?,
        }),
        "payment_intent.payment_failed" => Some(GatewayEventKind::PaymentFailed {
            intent: str_of(obj, "id")?,
            amount: amount_of(obj, "amount")?,
            currency: str_of(obj, "currency")?,
        }),
        "charge.refunded" => Some(GatewayEventKind::Refunded {
            intent: intent_of(obj)?,
            amount: amount_of(obj, "amount")?,
            amount_refunded: amount_of(obj, "amount_refunded")?,
            currency: str_of(obj, "currency")?,
        }),
        "charge.dispute.created" => Some(GatewayEventKind::DisputeCreated {
            intent: intent_of(obj)?,
            amount: amount_of(obj, "amount")?,
            currency: str_of(obj, "currency")?,
        }),
        _ => None,
    };
    Some(GatewayEvent {
        id,
        kind: parsed.unwrap_or(GatewayEventKind::Other { kind }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn accepts_any_listed_secret_and_signature() {
        let body = br#"{"id":"evt_1"}"#;
        let h = format!(
            "t=100,v1={},v1={}",
            sign("old", 100, body),
            sign("new", 100, body)
        );
        assert_eq!(verify_signature(Some(&h), body, &["new"], 100, 300), Ok(()));
        assert_eq!(
            verify_signature(Some(&h), body, &["other", "old"], 100, 300),
            Ok(())
        );
        assert_eq!(
            verify_signature(Some(&h), body, &["x"], 100, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn hostile_headers_are_refused_cheaply_and_never_overflow() {
        let body = br#"{"id":"evt_1"}"#;
        // A signed timestamp at the edge of i64 is stale, not a panic.
        for t in [i64::MIN, i64::MAX] {
            let h = format!("t={t},v1={}", sign("s", t, body));
            assert_eq!(
                verify_signature(Some(&h), body, &["s"], 100, 300),
                Err(SignatureError::Stale { tolerance: 300 })
            );
        }
        // Thousands of v1 values: refused by size before any MAC is computed.
        let many = format!("t=100{}", ",v1=00".repeat(5000));
        assert_eq!(
            verify_signature(Some(&many), body, &["s"], 100, 300),
            Err(SignatureError::Malformed)
        );
        // The valid signature after the first eight values is not looked at.
        let fill = ",v1=".to_owned() + &"0".repeat(64);
        let h = format!("t=100{}{},v1={}", fill.repeat(8), "", sign("s", 100, body));
        assert_eq!(
            verify_signature(Some(&h), body, &["s"], 100, 300),
            Err(SignatureError::Mismatch)
        );
        let h = format!("t=100{},v1={}", fill.repeat(7), sign("s", 100, body));
        assert_eq!(verify_signature(Some(&h), body, &["s"], 100, 300), Ok(()));
    }

    #[test]
    fn parses_the_four_mapped_events_and_keeps_others() {
        let succeeded = br#"{"id":"evt_a","type":"payment_intent.succeeded","created":1700000000,"data":{"object":{"id":"pi_1","amount":2500,"amount_received":2500,"currency":"usd"}}}"#;
        assert_eq!(
            parse_event(succeeded).unwrap().kind,
            GatewayEventKind::PaymentSucceeded {
                intent: "pi_1".into(),
                amount: Amount::from_minor(2500),
                currency: "usd".into(),
                at: Some(Timestamp(1_700_000_000)),
            }
        );
        let authorized = br#"{"id":"evt_e","type":"payment_intent.amount_capturable_updated","data":{"object":{"id":"pi_2","amount":9000,"amount_capturable":9000,"currency":"usd"}}}"#;
        assert_eq!(
            parse_event(authorized).unwrap().kind,
            GatewayEventKind::PaymentAuthorized {
                intent: "pi_2".into(),
                amount: Amount::from_minor(9000),
                currency: "usd".into(),
            }
        );
        let refunded = br#"{"id":"evt_b","type":"charge.refunded","data":{"object":{"id":"ch_1","payment_intent":"pi_1","amount":2500,"amount_refunded":500,"currency":"usd"}}}"#;
        assert_eq!(parse_event(refunded).unwrap().intent(), Some("pi_1"));
        let dispute = br#"{"id":"evt_c","type":"charge.dispute.created","data":{"object":{"id":"dp_1","charge":"ch_1","payment_intent":{"id":"pi_1"},"amount":2500,"currency":"usd"}}}"#;
        assert!(matches!(
            parse_event(dispute).unwrap().kind,
            GatewayEventKind::DisputeCreated { .. }
        ));
        let other = br#"{"id":"evt_d","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
        assert_eq!(
            parse_event(other).unwrap().kind,
            GatewayEventKind::Other {
                kind: "customer.created".into()
            }
        );
        assert!(parse_event(b"[]").is_none());
        assert!(parse_event(b"not json").is_none());
    }
}
