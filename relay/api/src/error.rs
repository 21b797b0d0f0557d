//! The one error type of the HTTP API: `{"error":{"type","code","message","param"}}` with the
//! right status. Internal failures are logged with their detail and answered with a generic message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use relay_core::CoreError;
use relay_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// Seconds after which a retry may succeed (429): sent as `Retry-After`.
    pub retry_after: Option<u64>,
    /// The request rate that was exceeded (requests a second), sent with a 429 as
    /// `RateLimit-Limit` (with `RateLimit-Remaining: 0` and `RateLimit-Reset`).
    pub rate_limit: Option<u32>,
}

/// The error body every failed request gets.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `authentication_error`, `idempotency_error` or `api_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Stable, machine-readable code, e.g. `amount_invalid`.
    pub code: &'static str,
    pub message: String,
    /// The request parameter at fault, if any.
    pub param: Option<String>,
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: None,
            retry_after: None,
            rate_limit: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::invalid("resource_missing", format!("no such {what}"))
            .with_status(StatusCode::NOT_FOUND)
    }

    pub fn unauthorized(code: &'static str, message: &str) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            code,
            message: message.into(),
            param: None,
            retry_after: None,
            rate_limit: None,
        }
    }

    /// 409 `concurrent_update`: the invoice kept changing under every attempt.
    pub fn busy() -> ApiError {
        ApiError::invalid("concurrent_update", "the invoice keeps changing; retry")
            .with_status(StatusCode::CONFLICT)
    }

    pub fn internal() -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "api_error",
            code: "internal_error",
            message: "an internal error occurred; retry with the same Idempotency-Key".into(),
            param: None,
            retry_after: None,
            rate_limit: None,
        }
    }

    pub fn unavailable(code: &'static str, message: &str) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "api_error",
            code,
            message: message.into(),
            param: None,
            retry_after: None,
            rate_limit: None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                code: self.code,
                message: self.message.clone(),
                param: self.param.clone(),
            },
        }
    }
}

impl ApiError {
    /// 429 `rate_limited`: the key sent more requests than its rate allows.
    pub fn rate_limited(retry_after_secs: u64, per_sec: u32) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate_limit_error",
            code: "rate_limited",
            message: format!(
                "too many requests for this API key (at most {per_sec} per second); retry after {retry_after_secs} s"
            ),
            param: None,
            retry_after: Some(retry_after_secs),
            rate_limit: Some(per_sec),
        }
    }
}

impl ApiError {
    /// 429 `too_many_auth_failures`: this client address sent too many invalid API keys.
    pub fn auth_failures(retry_after_secs: u64) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate_limit_error",
            code: "too_many_auth_failures",
            message: format!(
                "too many requests with an invalid API key from this address; retry after {retry_after_secs} s"
            ),
            param: None,
            retry_after: Some(retry_after_secs),
            rate_limit: None,
        }
    }

    /// 503 `overloaded`: the relay is serving as many requests as it may at once.
    pub fn overloaded() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "api_error",
            code: "overloaded",
            message: "the relay is serving as many requests as it can; retry in a moment"
                .to_owned(),
            param: None,
            retry_after: Some(1),
            rate_limit: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(axum::http::header::RETRY_AFTER, secs.into());
            if let Some(limit) = self.rate_limit {
                headers.insert("ratelimit-limit", limit.into());
                headers.insert("ratelimit-remaining", 0u32.into());
                headers.insert("ratelimit-reset", secs.into());
            }
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(target: "relay::api", error = %e, "store failure");
        ApiError::unavailable(
            "storage_unavailable",
            "the relay could not reach its storage; retry with the same Idempotency-Key",
        )
    }
}

impl From<crate::update::ApplyError> for ApiError {
    fn from(e: crate::update::ApplyError) -> ApiError {
        match e {
            crate::update::ApplyError::Store(e) => e.into(),
            crate::update::ApplyError::Refused(e) => e.into(),
            crate::update::ApplyError::Busy(_) => ApiError::busy(),
        }
    }
}

impl From<relay_engine::invoices::InvoiceError> for ApiError {
    fn from(e: relay_engine::invoices::InvoiceError) -> ApiError {
        use relay_engine::invoices::InvoiceError as E;
        let unprocessable = |code, why: String| {
            ApiError::invalid(code, why).with_status(StatusCode::UNPROCESSABLE_ENTITY)
        };
        let message = e.to_string();
        match e {
            E::Refused(e) => e.into(),
            E::Store(e) => e.into(),
            E::MethodUnavailable { index, .. } => {
                unprocessable("payment_method_unavailable", message).with_param(match index {
                    Some(i) => format!("payment_methods[{i}]"),
                    None => "payment_methods".into(),
                })
            }
            E::DescriptorUnusable(_) => unprocessable("bitcoin_descriptor_unusable", message),
            E::SettlementUnavailable(_) => unprocessable("settlement_unavailable", message),
            E::PayoutUnusable(_) => unprocessable("ethereum_payout_unusable", message),
            E::AmountTooLarge => {
                ApiError::invalid("amount_too_large", message).with_param("amount")
            }
            E::GatewayUnavailable => ApiError::unavailable(
                "gateway_unavailable",
                "the card gateway could not be reached; retry with the same Idempotency-Key",
            ),
            E::NotFound => ApiError::not_found("invoice").with_param("id"),
            E::Busy => ApiError::busy(),
            _ => ApiError::internal(),
        }
    }
}

impl From<relay_engine::refunds::RefundError> for ApiError {
    fn from(e: relay_engine::refunds::RefundError) -> ApiError {
        use relay_engine::refunds::RefundError as E;
        let message = e.to_string();
        match e {
            E::Refused(e) => e.into(),
            E::Store(e) => e.into(),
            E::InvoiceNotFound => ApiError::not_found("invoice").with_param("id"),
            E::RefundNotFound => ApiError::not_found("refund").with_param("refund"),
            E::PaymentUnknown(_) => ApiError::invalid("payment_unknown", message)
                .with_param("payment")
                .with_status(StatusCode::NOT_FOUND),
            E::NothingToRefund => {
                ApiError::invalid("refund_not_possible", message).with_status(StatusCode::CONFLICT)
            }
            E::RailUnavailable(_) => ApiError::invalid("payment_method_unavailable", message)
                .with_status(StatusCode::UNPROCESSABLE_ENTITY),
            E::AddressInvalid(_) => {
                ApiError::invalid("bitcoin_address_invalid", message).with_param("bitcoin_address")
            }
            E::AddressNotForBitcoin => {
                ApiError::invalid("parameter_invalid", message).with_param("bitcoin_address")
            }
            E::NotCovered { .. } => ApiError::invalid("refund_not_covered", message)
                .with_param("amount")
                .with_status(StatusCode::CONFLICT),
            E::NodeUnavailable => ApiError::unavailable("node_unavailable", &message),
            E::GatewayUnavailable => ApiError::unavailable("gateway_unavailable", &message),
            E::GatewayRefused(_) => ApiError::invalid("gateway_refund_failed", message)
                .with_status(StatusCode::BAD_GATEWAY),
            E::WrongState { code, .. } => {
                ApiError::invalid(code, message).with_status(StatusCode::CONFLICT)
            }
            E::Busy => ApiError::busy(),
            _ => ApiError::internal(),
        }
    }
}

impl From<relay_engine::settlements::ReleaseError> for ApiError {
    fn from(e: relay_engine::settlements::ReleaseError) -> ApiError {
        use relay_engine::settlements::ReleaseError as E;
        let message = e.to_string();
        match e {
            E::Refused(e) => e.into(),
            E::Store(e) => e.into(),
            E::InvoiceNotFound => ApiError::not_found("invoice").with_param("id"),
            E::SettlementNotFound => ApiError::not_found("settlement").with_param("settlement"),
            E::RateUnavailable { .. } => ApiError::invalid("rate_unavailable", message)
                .with_status(StatusCode::UNPROCESSABLE_ENTITY),
            E::Busy => ApiError::busy(),
            _ => ApiError::internal(),
        }
    }
}

impl From<relay_engine::reviews::ReviewError> for ApiError {
    fn from(e: relay_engine::reviews::ReviewError) -> ApiError {
        use relay_engine::reviews::ReviewError as E;
        let message = e.to_string();
        match e {
            E::NotFound => ApiError::not_found("review").with_param("id"),
            E::Refused(e) => e.into(),
            E::RefundAddressMissing => {
                ApiError::invalid("refund_address_required", message).with_param("refund_address")
            }
            E::Refund(e) => e.into(),
            E::Gateway(_) => ApiError::unavailable(
                "gateway_unavailable",
                "the card gateway did not act on the review's card; retry",
            ),
            E::Store(e) => e.into(),
            E::Busy => ApiError::busy(),
            _ => ApiError::internal(),
        }
    }
}

impl From<relay_engine::risk::RulesError> for ApiError {
    fn from(e: relay_engine::risk::RulesError) -> ApiError {
        use relay_engine::risk::RulesError as E;
        match e {
            E::Invalid(e) => ApiError::invalid("rule_invalid", e.to_string())
                .with_param(format!("rules[{}].{}", e.index, e.field)),
            E::VersionMismatch { current } => ApiError::invalid(
                "version_conflict",
                format!("the rules changed: they are at version {current}; read them again"),
            )
            .with_param("version")
            .with_status(StatusCode::CONFLICT),
            E::Store(e) => e.into(),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let message = e.to_string();
        match e {
            CoreError::InvalidAmount { .. } => {
                ApiError::invalid("amount_invalid", message).with_param("amount")
            }
            CoreError::AmountOverflow { .. } => {
                ApiError::invalid("amount_too_large", message).with_param("amount")
            }
            CoreError::UnknownAsset { .. } => {
                ApiError::invalid("currency_unsupported", message).with_param("currency")
            }
            CoreError::NoRate { .. } => ApiError::invalid("rate_unavailable", message)
                .with_param("payment_methods")
                .with_status(StatusCode::UNPROCESSABLE_ENTITY),
            // Known but unusable now (every source down for too long, or disagreeing): retry.
            CoreError::RateUnavailable { .. } => {
                let mut e = ApiError::unavailable("rate_unavailable", &message);
                e.retry_after = Some(30);
                e
            }
            CoreError::NotCancelable { .. } => ApiError::invalid("invoice_not_cancelable", message)
                .with_status(StatusCode::CONFLICT),
            CoreError::InvalidField {
                field: "expires_in",
                ..
            } => ApiError::invalid("expiry_invalid", message).with_param("expires_in"),
            CoreError::InvalidField { field: "quote", .. } => {
                ApiError::invalid("quote_not_refreshable", message)
                    .with_status(StatusCode::CONFLICT)
            }
            CoreError::InvalidField { field, .. } => {
                ApiError::invalid("parameter_invalid", message).with_param(field)
            }
            CoreError::NotRefundable { .. } => {
                ApiError::invalid("refund_not_possible", message).with_status(StatusCode::CONFLICT)
            }
            CoreError::NotReleasable { .. } => {
                ApiError::invalid("settlement_not_releasable", message)
                    .with_status(StatusCode::CONFLICT)
            }
            CoreError::UnknownRecord { .. } => ApiError::not_found("settlement"),
            CoreError::RefundTooLarge { .. } => {
                ApiError::invalid("refund_exceeds_payment", message)
                    .with_param("amount")
                    .with_status(StatusCode::UNPROCESSABLE_ENTITY)
            }
            CoreError::UnknownPayment { .. } => ApiError::invalid("payment_unknown", message)
                .with_param("payment")
                .with_status(StatusCode::NOT_FOUND),
            CoreError::ReviewClosed { .. } => {
                ApiError::invalid("review_closed", message).with_status(StatusCode::CONFLICT)
            }
            CoreError::Sanctioned { .. } => {
                ApiError::invalid("review_sanctioned", message).with_status(StatusCode::CONFLICT)
            }
            _ => ApiError::invalid("parameter_invalid", message),
        }
    }
}
