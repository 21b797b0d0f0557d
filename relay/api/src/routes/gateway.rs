//! `POST /v1/gateways/stripe/webhook`: the card gateway's signed events.

use crate::card::{Handled, WebhookRejection};
use crate::error::{ApiError, ErrorBody};
use crate::extract::RawBody;
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use relay_store::Store;
use sha2::{Digest, Sha256};

/// What a gateway webhook got.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReceivedView {
    pub received: bool,
    /// `applied` (it changed an invoice), `recorded` (for no known invoice) or `duplicate`.
    pub outcome: &'static str,
}

/// Receive a gateway webhook. Verified before anything is parsed; duplicates answer 200 and
/// change nothing; events for unknown payment intents are recorded and answered 200.
#[utoipa::path(
    post, path = "/v1/gateways/stripe/webhook", operation_id = "stripe_webhook", tag = "gateways",
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256>")),
    request_body(content = Object, content_type = "application/json", description = "The gateway's event, verified byte for byte against `Stripe-Signature`"),
    responses(
        (status = 200, description = "Received (applied, recorded, or a duplicate)", body = ReceivedView),
        (status = 400, description = "Bad or stale signature, or not an event", body = ErrorBody),
        (status = 404, description = "No card gateway is configured", body = ErrorBody),
    )
)]
pub async fn stripe_webhook<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<ReceivedView>, ApiError> {
    let gateway = state.card.clone().ok_or_else(|| {
        ApiError::invalid("gateway_not_configured", "no card gateway is configured")
            .with_status(StatusCode::NOT_FOUND)
    })?;
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let event = gateway
        .verify(signature, &body, state.clock.now())
        .map_err(|r| {
            let (code, message) = match r {
                WebhookRejection::SignatureMissing => (
                    "signature_missing",
                    "the Stripe-Signature header is missing",
                ),
                WebhookRejection::SignatureInvalid => {
                    ("signature_invalid", "the signature does not match")
                }
                WebhookRejection::SignatureExpired => (
                    "signature_expired",
                    "the signature's timestamp is outside the tolerance",
                ),
                WebhookRejection::NotAnEvent => {
                    ("event_invalid", "the body is not a gateway event")
                }
            };
            metrics::counter!("relay_gateway_webhooks_rejected_total", "code" => code).increment(1);
            ApiError::invalid(code, message).with_param("Stripe-Signature")
        })?;
    let fingerprint: [u8; 32] = Sha256::digest(&body).into();
    let handled = state
        .record_gateway_event(gateway.name(), &event, fingerprint)
        .await?;
    state.store.durable().await?;
    let outcome = match handled {
        Handled::Applied => "applied",
        Handled::Recorded => "recorded",
        Handled::Duplicate => "duplicate",
    };
    metrics::counter!("relay_gateway_webhooks_total", "outcome" => outcome).increment(1);
    Ok(Json(ReceivedView {
        received: true,
        outcome,
    }))
}
