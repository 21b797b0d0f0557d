//! Webhook endpoints as the relay makes them: from the API and from `relay merchant create
//! --webhook-url`.

use relay_core::{EventType, Merchant, Secret, Timestamp, WebhookEndpoint};

/// A request field that is not valid, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub param: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.param, self.message)
    }
}

/// Builds an endpoint for a merchant. Whether its destination may be private is the caller's to
/// check (`webhook_url_forbidden`): tests and `relay dev` may allow it.
pub fn new_endpoint(
    merchant: &Merchant,
    url: &str,
    event_types: Vec<String>,
    secret: Secret,
    id_entropy: [u8; 12],
    now: Timestamp,
) -> Result<WebhookEndpoint, FieldError> {
    Merchant::validate_webhook_url(url, true).map_err(|e| FieldError {
        param: "url".into(),
        message: e.to_string(),
    })?;
    for (i, t) in event_types.iter().enumerate() {
        if EventType::parse(t).is_none() {
            return Err(FieldError {
                param: format!("event_types[{i}]"),
                message: format!("{t:?} is not an event type"),
            });
        }
    }
    Ok(WebhookEndpoint {
        id: format!("we_{}", hex::encode(id_entropy)),
        merchant_id: merchant.id.clone(),
        url: url.to_owned(),
        event_types,
        secret,
        enabled: true,
        disabled_reason: None,
        created_at: now,
    })
}
