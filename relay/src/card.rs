//! The card rail in the binary: the Stripe-compatible adapter behind the engine's `CardGateway`
//! seam (reconciliation itself is the engine's: `relay_engine::reconcile`).

use relay_card::{GatewayClient, SignatureError};
use relay_core::{CardIntent, GatewayEvent, Timestamp};
use relay_engine::gateway::{
    BoxFuture, CardAttempt, CardDetails, CardGateway, GatewayError, WebhookRejection,
};

pub struct StripeGateway {
    pub client: GatewayClient,
    /// Accepted webhook secrets: more than one while rotating.
    pub webhook_secrets: Vec<String>,
    /// Refunds this process got the gateway to take, by refund id, held while one is asked for:
    /// the API and the reconciliation pass never ask twice for the same refund, even with a
    /// gateway that ignores idempotency keys (localstripe does).
    pub refunds_taken: tokio::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl CardGateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn create_intent<'a>(
        &'a self,
        invoice_id: &'a str,
        amount_minor: u64,
        currency: &'a str,
    ) -> BoxFuture<'a, Result<CardIntent, String>> {
        Box::pin(async move {
            let pi = self
                .client
                .create_payment_intent(invoice_id, amount_minor, currency)
                .await
                .map_err(|e| e.to_string())?;
            Ok(CardIntent {
                gateway: "stripe".into(),
                client_secret: pi.client_secret.clone().unwrap_or_default(),
                payment_intent: pi.id,
            })
        })
    }

    fn cancel_intent<'a>(
        &'a self,
        payment_intent: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            self.client
                .cancel_payment_intent(payment_intent)
                .await
                .map(|_| ())
                .map_err(|e| GatewayError {
                    refused: e.is_refusal(),
                    message: e.to_string(),
                })
        })
    }

    fn inspect_card<'a>(
        &'a self,
        card_token: &'a str,
    ) -> BoxFuture<'a, Result<CardDetails, GatewayError>> {
        Box::pin(async move {
            let card = self
                .client
                .card_of_token(card_token)
                .await
                .map_err(refusal)?;
            Ok(CardDetails {
                card: card.id,
                fingerprint: card.fingerprint,
                country: card.country,
            })
        })
    }

    fn capture_intent<'a>(
        &'a self,
        payment_intent: &'a str,
    ) -> BoxFuture<'a, Result<Option<GatewayEvent>, GatewayError>> {
        Box::pin(async move {
            let pi = match self.client.capture_payment_intent(payment_intent).await {
                Ok(pi) => pi,
                // Captured before (a repeated approval): read it back.
                Err(e) if e.is_refusal() => self
                    .client
                    .retrieve_payment_intent(payment_intent)
                    .await
                    .map_err(refusal)?,
                Err(e) => return Err(refusal(e)),
            };
            Ok(pi.as_event())
        })
    }

    fn pay_with_card<'a>(
        &'a self,
        payment_intent: &'a str,
        card_token: &'a str,
        card: &'a CardDetails,
        manual_capture: bool,
    ) -> BoxFuture<'a, Result<CardAttempt, GatewayError>> {
        Box::pin(async move {
            let token_card = relay_card::TokenCard {
                id: card.card.clone(),
                fingerprint: card.fingerprint.clone(),
                country: card.country.clone(),
            };
            match self
                .client
                .pay_with_card(payment_intent, card_token, &token_card, manual_capture)
                .await
            {
                Ok(pi) => Ok(match (pi.status.as_str(), pi.as_event()) {
                    ("succeeded", Some(event)) => CardAttempt::Paid(event),
                    ("requires_capture", Some(event)) => CardAttempt::Authorized(event),
                    ("requires_action", _) => CardAttempt::NeedsAction {
                        client_secret: pi.client_secret.unwrap_or_default(),
                    },
                    ("processing", _) => CardAttempt::Processing,
                    (other, _) => {
                        return Err(GatewayError::unreachable(format!(
                            "the payment intent is {other} after its confirmation"
                        )))
                    }
                }),
                Err(relay_card::GatewayError::Rejected {
                    status: 402,
                    code,
                    message,
                }) => Ok(CardAttempt::Declined { code, message }),
                Err(e) => Err(refusal(e)),
            }
        })
    }

    fn retrieve_intent<'a>(
        &'a self,
        payment_intent: &'a str,
    ) -> BoxFuture<'a, Result<Option<GatewayEvent>, String>> {
        Box::pin(async move {
            let pi = self
                .client
                .retrieve_payment_intent(payment_intent)
                .await
                .map_err(|e| e.to_string())?;
            Ok(pi.as_event())
        })
    }

    fn refund<'a>(
        &'a self,
        payment_intent: &'a str,
        amount_minor: u64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(async move {
            let mut taken = self.refunds_taken.lock().await;
            if let Some(id) = taken.get(key) {
                return Ok(id.clone());
            }
            let ambiguous = |e: relay_card::GatewayError| GatewayError {
                refused: e.is_refusal(),
                message: e.to_string(),
            };
            // Asked before, and the answer lost (a crash, a 5xx, a cut-off body): the gateway
            // may hold it already. Only a refund it does not have is asked for.
            if let Some(id) = self
                .client
                .find_refund(payment_intent, key)
                .await
                .map_err(|e| GatewayError::unreachable(e.to_string()))?
            {
                taken.insert(key.to_owned(), id.clone());
                return Ok(id);
            }
            let refund = self
                .client
                .refund(payment_intent, amount_minor, key)
                .await
                .map_err(ambiguous)?;
            let id = refund["id"].as_str().unwrap_or_default().to_owned();
            taken.insert(key.to_owned(), id.clone());
            Ok(id)
        })
    }

    fn verify(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: Timestamp,
    ) -> Result<GatewayEvent, WebhookRejection> {
        let secrets: Vec<&str> = self.webhook_secrets.iter().map(String::as_str).collect();
        relay_card::verify_signature(
            signature,
            body,
            &secrets,
            now.0,
            relay_card::DEFAULT_TOLERANCE_SECS,
        )
        .map_err(|e| match e {
            SignatureError::Missing => WebhookRejection::SignatureMissing,
            SignatureError::Stale { .. } => WebhookRejection::SignatureExpired,
            _ => WebhookRejection::SignatureInvalid,
        })?;
        relay_card::parse_event(body).ok_or(WebhookRejection::NotAnEvent)
    }
}

fn refusal(e: relay_card::GatewayError) -> GatewayError {
    GatewayError {
        refused: e.is_refusal(),
        message: e.to_string(),
    }
}
