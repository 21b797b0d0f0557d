//! `POST /pay/{token}/card`: the checkout page's card form. The page tokenizes the card with the
//! gateway's own Stripe.js (the card number goes to the gateway, never to the relay), and sends
//! the token here; the relay puts it on the invoice's PaymentIntent and confirms it with its
//! secret key. When the bank asks for 3-D Secure, the page finishes it with Stripe.js and the
//! intent's client secret. The amount is the intent's own: the payer cannot change it.

use super::guard;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ClientAddress, RawBody};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use relay_core::CardRefusal;
use relay_engine::checkout::{is_card_token, CardPaid, CardPayError};
use relay_store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A card to charge, as the gateway's Stripe.js tokenized it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardPayment {
    /// The token from Stripe.js `createToken` (`tok_…`).
    pub card_token: String,
}

/// What became of the card.
#[derive(Serialize, ToSchema)]
pub struct CardPaymentView {
    /// `paid` (the invoice has it), `processing` (the gateway's webhook will say),
    /// `requires_action` (finish 3-D Secure with Stripe.js `confirmCardPayment(client_secret)`)
    /// or `in_review` (authorized only: the merchant reviews it before it is captured).
    pub status: &'static str,
    /// The PaymentIntent's client secret, with `requires_action` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// Pay a payment request by card. Public: the checkout token is the only credential, so the
/// attempts of each token and each client address are limited.
#[utoipa::path(
    post, path = "/pay/{token}/card", operation_id = "pay_by_card", tag = "checkout",
    params(("token" = String, Path, description = "The checkout token, from the invoice's `checkout_url`")),
    request_body = CardPayment,
    responses(
        (status = 200, description = "Charged, being charged, or waiting for the payer's bank", body = CardPaymentView),
        (status = 400, description = "Not a card token (`card_token_invalid`), or one the gateway does not know or has used", body = ErrorBody),
        (status = 402, description = "The card was declined (`card_declined`); another may be tried", body = ErrorBody),
        (status = 403, description = "The merchant's risk rules refuse this payment (`payment_blocked`); nothing was charged", body = ErrorBody),
        (status = 404, description = "No payment request has this token (`resource_missing`)", body = ErrorBody),
        (status = 409, description = "The payment request takes no card now: `card_not_offered`, `invoice_not_open` (paid, expired, canceled) or `payment_underway` (something was paid already)", body = ErrorBody),
        (status = 429, description = "Too many card attempts for this payment request or from this address (`too_many_card_attempts`)", body = ErrorBody),
    ),
    security(())
)]
pub async fn pay<S: Store>(
    State(state): State<AppState<S>>,
    Path(token): Path<String>,
    ClientAddress(client): ClientAddress,
    RawBody(body): RawBody,
) -> Response {
    let mut r = match attempt(&state, &token, client, &body).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    };
    guard(r.headers_mut(), super::JSON_CSP);
    r
}

async fn attempt<S: Store>(
    state: &AppState<S>,
    token: &str,
    client: Option<std::net::IpAddr>,
    body: &[u8],
) -> Result<CardPaymentView, ApiError> {
    let req: CardPayment = parse_json(body)?;
    if !is_card_token(&req.card_token) {
        return Err(ApiError::invalid(
            "card_token_invalid",
            "card_token must be a token from the gateway's Stripe.js (tok_…)",
        )
        .with_param("card_token"));
    }
    state.checkout.card_attempts.check(token, client)?;
    let conflict = |code, message: &str| {
        ApiError::invalid(code, message.to_owned()).with_status(StatusCode::CONFLICT)
    };
    let address = client.map(|c| c.to_string());
    match state
        .pay_by_card(token, &req.card_token, address.as_deref())
        .await
    {
        Ok(CardPaid::Paid) => Ok(CardPaymentView {
            status: "paid",
            client_secret: None,
        }),
        Ok(CardPaid::Processing) => Ok(CardPaymentView {
            status: "processing",
            client_secret: None,
        }),
        Ok(CardPaid::NeedsAction { client_secret }) => Ok(CardPaymentView {
            status: "requires_action",
            client_secret: Some(client_secret),
        }),
        Ok(CardPaid::InReview) => Ok(CardPaymentView {
            status: "in_review",
            client_secret: None,
        }),
        Err(CardPayError::Blocked { reasons }) => {
            let rules: Vec<_> = reasons.iter().map(|r| r.rule.as_str()).collect();
            tracing::info!(target: "relay::risk", ?rules, "card payment blocked at the door");
            // The payer is not told which rule: that would teach a fraudster the limits.
            Err(super::blocked())
        }
        Err(CardPayError::NotFound) => Err(ApiError::not_found("payment request")),
        Err(CardPayError::NoGateway) | Err(CardPayError::Refused(CardRefusal::NotOffered)) => {
            Err(conflict(
                "card_not_offered",
                "this payment request cannot be paid by card",
            ))
        }
        Err(CardPayError::Refused(CardRefusal::NotOpen)) => Err(conflict(
            "invoice_not_open",
            "this payment request is paid, expired or canceled",
        )),
        Err(CardPayError::Refused(CardRefusal::PaymentUnderway)) => Err(conflict(
            "payment_underway",
            "a payment for this request is already underway; pay the rest with the same method",
        )),
        Err(CardPayError::Declined { code, .. }) => {
            tracing::info!(target: "relay::checkout", %code, "card declined");
            Err(ApiError::invalid("card_declined", "the card was declined")
                .with_status(StatusCode::PAYMENT_REQUIRED))
        }
        Err(CardPayError::Gateway(e)) if e.refused => {
            tracing::info!(target: "relay::checkout", error = %e.message, "the gateway refused a card token");
            Err(ApiError::invalid(
                "card_token_invalid",
                "the gateway does not accept this card token (unknown or used)",
            )
            .with_param("card_token"))
        }
        Err(CardPayError::Gateway(e)) => {
            tracing::warn!(target: "relay::checkout", error = %e.message, "the card gateway could not be reached");
            Err(ApiError::unavailable(
                "gateway_unavailable",
                "the card gateway could not be reached; try again",
            ))
        }
        Err(CardPayError::Store(e)) => Err(e.into()),
    }
}
