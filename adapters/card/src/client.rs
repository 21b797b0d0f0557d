//! A client for a Stripe-compatible gateway. Form-encoded requests, `Authorization: Bearer` with
//! the secret key, a timeout on every call, and retries only where the gateway's semantics make
//! them safe: every write carries an `Idempotency-Key`, and only transport failures, 409 (a
//! concurrent request with the same key), 429 and 5xx answers are retried.

use relay_core::{Amount, GatewayEvent, GatewayEventKind};
use serde::Deserialize;
use std::time::Duration;

const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("gateway unreachable: {0}")]
    Transport(String),
    #[error("gateway answered {status}: {code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected gateway answer: {0}")]
    Decode(String),
    /// A non-2xx answer that is not the gateway's own JSON error (a proxy's page, a body cut
    /// off): nobody can tell whether the gateway acted.
    #[error("unclear gateway answer {status}: {message}")]
    Unclear { status: u16, message: String },
}

impl GatewayError {
    /// The gateway said no, and will say no again: its own JSON error with a 4xx status other
    /// than 409 (a concurrent request with the same key) and 429. Anything else — a 5xx, a
    /// proxy's page (whatever its status), an answer cut off, no answer — leaves open whether it
    /// acted.
    pub fn is_refusal(&self) -> bool {
        matches!(self, GatewayError::Rejected { status, .. }
            if (400..500).contains(status) && *status != 409 && *status != 429)
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            GatewayError::Transport(_) => true,
            GatewayError::Rejected { status, .. } => {
                *status == 409 || *status == 429 || *status >= 500
            }
            GatewayError::Decode(_) => false,
            GatewayError::Unclear { .. } => true,
        }
    }
}

/// The fields of a PaymentIntent the relay uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub amount: u64,
    #[serde(default)]
    pub amount_received: u64,
    pub currency: String,
    pub status: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The intent's charges, where the gateway lists them (kept as JSON: only their times are
    /// read, and a gateway that shapes them otherwise must not make the intent unreadable).
    #[serde(default)]
    pub charges: Option<serde_json::Value>,
}

impl PaymentIntent {
    /// When its successful charge was made, by the gateway's clock.
    pub fn charged_at(&self) -> Option<relay_core::Timestamp> {
        self.charges
            .as_ref()?
            .get("data")?
            .as_array()?
            .iter()
            .filter(|c| c.get("status").and_then(|s| s.as_str()) == Some("succeeded"))
            .filter_map(|c| c.get("created")?.as_i64())
            .max()
            .map(relay_core::Timestamp)
    }

    /// What the intent's current state means, as the event a webhook would have carried.
    /// `None` while the payer has not finished.
    pub fn as_event(&self) -> Option<GatewayEvent> {
        let amount = Amount::from_minor(u128::from(if self.amount_received > 0 {
            self.amount_received
        } else {
            self.amount
        }));
        let kind = match self.status.as_str() {
            "succeeded" => GatewayEventKind::PaymentSucceeded {
                intent: self.id.clone(),
                amount,
                currency: self.currency.clone(),
                // The successful charge's time, not the time the relay asked.
                at: self.charged_at(),
            },
            // Authorized with manual capture (held for review): not charged yet.
            "requires_capture" => GatewayEventKind::PaymentAuthorized {
                intent: self.id.clone(),
                amount: Amount::from_minor(u128::from(self.amount)),
                currency: self.currency.clone(),
            },
            _ => return None,
        };
        Some(GatewayEvent {
            id: format!("reconcile:{}:{}", self.id, self.status),
            kind,
        })
    }
}

/// A tokenized card as the gateway describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCard {
    pub id: String,
    pub fingerprint: Option<String>,
    /// Issuing country, ISO 3166 alpha-2.
    pub country: Option<String>,
}

#[derive(Clone)]
pub struct GatewayClient {
    base: String,
    secret_key: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl GatewayClient {
    pub fn new(base: &str, secret_key: &str) -> Result<GatewayClient, GatewayError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| GatewayError::Transport(e.without_url().to_string()))?;
        Ok(GatewayClient {
            base: base.trim_end_matches('/').to_owned(),
            secret_key: secret_key.to_owned(),
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: Option<&str>,
    ) -> Result<serde_json::Value, GatewayError> {
        self.call_with(method, path, form, idempotency_key, ATTEMPTS)
            .await
    }

    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: Option<&str>,
        attempts: u32,
    ) -> Result<serde_json::Value, GatewayError> {
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&self.secret_key);
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            if !form.is_empty() {
                req = req.form(form);
            }
            let result = match req.send().await {
                Err(e) => Err(GatewayError::Transport(e.without_url().to_string())),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await;
                    let body = text.as_deref().map_err(|e| e.to_string()).and_then(|t| {
                        serde_json::from_str::<serde_json::Value>(t).map_err(|e| e.to_string())
                    });
                    match body {
                        Ok(body) if (200..300).contains(&status) => Ok(body),
                        // Only the gateway's own JSON error is an answer to the request.
                        Ok(body) if body["error"].is_object() => {
                            let err = &body["error"];
                            Err(GatewayError::Rejected {
                                status,
                                code: err["code"]
                                    .as_str()
                                    .or(err["type"].as_str())
                                    .unwrap_or("unknown")
                                    .to_owned(),
                                message: err["message"].as_str().unwrap_or("").to_owned(),
                            })
                        }
                        // A proxy's error page, or an answer cut off: the request may or may not
                        // have been carried out. Never a refusal.
                        Ok(_) => Err(GatewayError::Unclear {
                            status,
                            message: "not the gateway's error object".into(),
                        }),
                        Err(e) if (200..300).contains(&status) => Err(GatewayError::Decode(e)),
                        Err(e) => Err(GatewayError::Unclear { status, message: e }),
                    }
                }
            };
            match result {
                Err(e) if e.is_retryable() => {
                    tracing::warn!(target: "relay::card", %path, attempt, error = %e, "gateway call failed, retrying");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| GatewayError::Transport("no attempt made".into())))
    }

    fn intent(v: serde_json::Value) -> Result<PaymentIntent, GatewayError> {
        serde_json::from_value(v).map_err(|e| GatewayError::Decode(e.to_string()))
    }

    /// Creates the PaymentIntent of an invoice. The idempotency key is derived from the invoice,
    /// so a retry can never create a second intent for it.
    pub async fn create_payment_intent(
        &self,
        invoice_id: &str,
        amount_minor: u64,
        currency: &str,
    ) -> Result<PaymentIntent, GatewayError> {
        let form = [
            ("amount", amount_minor.to_string()),
            ("currency", currency.to_ascii_lowercase()),
            ("metadata[relay_invoice]", invoice_id.to_owned()),
            ("payment_method_types[]", "card".to_owned()),
        ];
        let key = format!("relay-pi-{invoice_id}");
        let v = self
            .call(
                reqwest::Method::POST,
                "/v1/payment_intents",
                &form,
                Some(&key),
            )
            .await?;
        Self::intent(v)
    }

    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<PaymentIntent, GatewayError> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/payment_intents/{id}"),
                &[],
                None,
            )
            .await?;
        Self::intent(v)
    }

    /// Charges the card a payer's browser tokenized (`tok_…`, from the gateway's Stripe.js) on
    /// the PaymentIntent `id`: the token's card (`card`, from [`GatewayClient::card_of_token`])
    /// becomes the intent's payment method, then the intent is confirmed. The amount is the intent's own, which the payer cannot change, and a
    /// PaymentIntent charges at most once however often it is confirmed.
    ///
    /// `Ok` is the intent after the attempt (`succeeded`, `requires_action` for 3-D Secure,
    /// `processing`); a declined card is `Err(Rejected { status: 402, .. })`. When the confirmation's
    /// answer is unclear (cut off, a 5xx, or a refusal because an earlier try went through), the
    /// intent is read back and returned as it stands.
    pub async fn pay_with_card(
        &self,
        id: &str,
        card_token: &str,
        card: &TokenCard,
        manual_capture: bool,
    ) -> Result<PaymentIntent, GatewayError> {
        let mut form = vec![("payment_method", card.id.clone())];
        if manual_capture {
            // Authorized only: captured when a reviewer approves, canceled when one rejects.
            form.push(("capture_method", "manual".to_owned()));
        }
        self.call(
            reqwest::Method::POST,
            &format!("/v1/payment_intents/{id}"),
            &form,
            Some(&format!("relay-pm-{id}-{card_token}")),
        )
        .await?;
        let confirmed = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/payment_intents/{id}/confirm"),
                &[],
                Some(&format!("relay-confirm-{id}-{card_token}")),
            )
            .await;
        match confirmed {
            Ok(v) => Self::intent(v),
            Err(e @ GatewayError::Rejected { status: 402, .. }) => Err(e),
            Err(e) => {
                tracing::warn!(target: "relay::card", intent = %id, error = %e, "confirmation unclear, reading the intent back");
                self.retrieve_payment_intent(id).await
            }
        }
    }

    /// The card behind an unused card token (`tok_…`): its id, and what the gateway says of it
    /// (fingerprint, issuing country) where it does.
    pub async fn card_of_token(&self, card_token: &str) -> Result<TokenCard, GatewayError> {
        let token = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/tokens/{card_token}"),
                &[],
                None,
            )
            .await?;
        let card = &token["card"];
        let id = card["id"]
            .as_str()
            .filter(|_| token["object"] == "token" && token["used"].as_bool() != Some(true));
        let Some(id) = id else {
            return Err(GatewayError::Rejected {
                status: 400,
                code: "card_token_invalid".into(),
                message: "not an unused card token".into(),
            });
        };
        let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(TokenCard {
            id: id.to_owned(),
            fingerprint: text(&card["fingerprint"]),
            country: text(&card["country"]),
        })
    }

    /// Captures an authorized PaymentIntent (manual capture) in full. Safe to repeat.
    pub async fn capture_payment_intent(&self, id: &str) -> Result<PaymentIntent, GatewayError> {
        let key = format!("relay-capture-{id}");
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/payment_intents/{id}/capture"),
                &[],
                Some(&key),
            )
            .await?;
        Self::intent(v)
    }

    pub async fn cancel_payment_intent(&self, id: &str) -> Result<PaymentIntent, GatewayError> {
        let key = format!("relay-cancel-{id}");
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/payment_intents/{id}/cancel"),
                &[],
                Some(&key),
            )
            .await?;
        Self::intent(v)
    }

    /// Refunds `amount` of a PaymentIntent; `key` must identify this refund: it is the
    /// idempotency key and the refund's `relay_refund` metadata (see [`GatewayClient::find_refund`]).
    pub async fn refund(
        &self,
        payment_intent: &str,
        amount_minor: u64,
        key: &str,
    ) -> Result<serde_json::Value, GatewayError> {
        let form = [
            ("payment_intent", payment_intent.to_owned()),
            ("amount", amount_minor.to_string()),
            ("metadata[relay_refund]", key.to_owned()),
        ];
        // Asked once: after an unclear answer the caller looks the refund up by its metadata
        // before asking again, which is safe even at a gateway that ignores idempotency keys.
        self.call_with(reqwest::Method::POST, "/v1/refunds", &form, Some(key), 1)
            .await
    }

    /// The id of the refund of `payment_intent` made under `key` (its `relay_refund` metadata),
    /// if the gateway has one: how a refund whose answer was lost is found again without asking
    /// twice, even at a gateway that ignores idempotency keys.
    pub async fn find_refund(
        &self,
        payment_intent: &str,
        key: &str,
    ) -> Result<Option<String>, GatewayError> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/refunds?payment_intent={payment_intent}&limit=100"),
                &[],
                None,
            )
            .await?;
        let found = v["data"].as_array().and_then(|refunds| {
            refunds
                .iter()
                .find(|r| r["metadata"]["relay_refund"].as_str() == Some(key))
                .and_then(|r| r["id"].as_str())
                .map(str::to_owned)
        });
        Ok(found)
    }
}
