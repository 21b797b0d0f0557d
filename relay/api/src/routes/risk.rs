//! `/v1/risk/rules` (read and replace the merchant's risk rules, versioned) and `/v1/reviews`
//! (the payments the rules held, approved or rejected by the merchant). The rules and what each
//! decision moves are the engine's (`relay_engine::risk`, `relay_engine::reviews`).

use super::invoices::{only_params, page_limit};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiPath, AuthMerchant, RawBody};
use crate::view::ListView;
use crate::AppState;
use axum::extract::{Query, State};
use axum::Json;
use relay_core::risk::Rule;
use relay_engine::view::risk::{ReviewView, RiskRulesView};
use relay_store::Store;
use serde::Deserialize;
use std::collections::HashMap;
use utoipa::ToSchema;

/// New rules for the merchant: they replace the old ones whole.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRulesRequest {
    /// The version read (`GET /v1/risk/rules`): the change is refused (409) if they changed
    /// since. Omit it to replace whatever is there.
    #[serde(default)]
    pub version: Option<u64>,
    /// At most 200 rules; each is one of (every amount in minor units, as a string of digits;
    /// `action` is `allow`, `review` or `block`):
    /// `{"type":"amount_limit","id","currency","max","action"}`;
    /// `{"type":"velocity","id","key":"card_fingerprint"|"eth_sender"|"btc_input"|"ip",
    /// "window_secs","max_count"?,"max_amount"?,"currency"?,"action"}`;
    /// `{"type":"declines","id","window_secs","max","action"}`;
    /// `{"type":"list","id","field":"address"|"card_fingerprint"|"email"|"ip"|"card_country",
    /// "values":[…],"action"}`.
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<Rule>,
}

/// The merchant's risk rules.
#[utoipa::path(
    get, path = "/v1/risk/rules", operation_id = "get_risk_rules", tag = "risk",
    responses((status = 200, description = "The rules and their version", body = RiskRulesView)),
    security(("api_key" = []))
)]
pub async fn get_rules<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
) -> Result<Json<RiskRulesView>, ApiError> {
    let rules = state.risk_rules(&merchant.id).await?;
    Ok(Json(RiskRulesView::of(&rules, &state.risk.sanctions())))
}

/// Replace the merchant's risk rules.
#[utoipa::path(
    put, path = "/v1/risk/rules", operation_id = "put_risk_rules", tag = "risk",
    request_body = PutRulesRequest,
    responses(
        (status = 200, description = "The rules stored, at their new version", body = RiskRulesView),
        (status = 400, description = "A rule is not valid (`rule_invalid`, `param` names it: `rules[2].window_secs`), or the body does not parse", body = ErrorBody),
        (status = 409, description = "The rules changed since `version` (`version_conflict`)", body = ErrorBody),
        (status = 413, description = "The body is over 4 MiB (`body_too_large`)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn put_rules<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    RawBody(body): RawBody,
) -> Result<Json<RiskRulesView>, ApiError> {
    let req: PutRulesRequest = parse_json(&body)?;
    let rules = state
        .put_risk_rules(&merchant.id, req.version, req.rules)
        .await?;
    Ok(Json(RiskRulesView::of(&rules, &state.risk.sanctions())))
}

/// The merchant's reviews, newest first.
#[utoipa::path(
    get, path = "/v1/reviews", operation_id = "list_reviews", tag = "risk",
    params(
        ("status" = Option<String>, Query, description = "`open` (default) or `all`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 10"),
    ),
    responses(
        (status = 200, description = "Reviews", body = ListView<ReviewView>),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ListView<ReviewView>>, ApiError> {
    only_params(&params, &["status", "limit"])?;
    let limit = page_limit(&params)?;
    let all = match params.get("status").map(String::as_str) {
        None | Some("open") => false,
        Some("all") => true,
        Some(_) => {
            return Err(
                ApiError::invalid("parameter_invalid", "status is `open` or `all`")
                    .with_param("status"),
            )
        }
    };
    let found = state.list_reviews(&merchant, all, limit + 1).await?;
    let has_more = found.len() > limit;
    Ok(Json(ListView {
        object: "list",
        data: found
            .iter()
            .take(limit)
            .filter_map(ReviewView::of)
            .collect(),
        has_more,
    }))
}

/// What a rejection may say.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Bitcoin payments (already paid): the payer's address the refund goes to. Required for
    /// them, refused for the others.
    #[serde(default)]
    pub refund_address: Option<String>,
}

/// Approve a review: an escrow deposit is captured, a card authorization captured, a bitcoin
/// payment's flag cleared.
#[utoipa::path(
    post, path = "/v1/reviews/{id}/approve", operation_id = "approve_review", tag = "risk",
    params(("id" = String, Path, description = "Review id, `rvw_…`")),
    responses(
        (status = 200, description = "The review, approved", body = ReviewView),
        (status = 404, description = "No such review for this merchant", body = ErrorBody),
        (status = 409, description = "Rejected already (`review_closed`), or a payer on a sanctions list (`review_sanctioned`)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn approve<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
    RawBody(body): RawBody,
) -> Result<Json<ReviewView>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParams {}
    let _: NoParams = parse_json(&body)?;
    let found = state.approve_review(&merchant, &id).await?;
    ReviewView::of(&found)
        .map(Json)
        .ok_or_else(ApiError::internal)
}

/// Reject a review: an escrow deposit is voided back to its payer, a card authorization
/// canceled (nothing charged), a bitcoin payment refunded to `refund_address`.
#[utoipa::path(
    post, path = "/v1/reviews/{id}/reject", operation_id = "reject_review", tag = "risk",
    params(("id" = String, Path, description = "Review id, `rvw_…`")),
    request_body(content = Option<RejectRequest>),
    responses(
        (status = 200, description = "The review, rejected", body = ReviewView),
        (status = 400, description = "A bitcoin payment needs `refund_address` (`refund_address_required`), or it is not a valid address", body = ErrorBody),
        (status = 404, description = "No such review for this merchant", body = ErrorBody),
        (status = 409, description = "Approved already (`review_closed`)", body = ErrorBody),
        (status = 422, description = "The payment's rail is not configured here", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn reject<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
    RawBody(body): RawBody,
) -> Result<Json<ReviewView>, ApiError> {
    let req: RejectRequest = parse_json(&body)?;
    let found = state
        .reject_review(&merchant, &id, req.refund_address.as_deref())
        .await?;
    ReviewView::of(&found)
        .map(Json)
        .ok_or_else(ApiError::internal)
}
