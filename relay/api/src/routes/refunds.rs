//! `POST /v1/invoices/{id}/refunds`, a bitcoin refund's cancel and paid, and `GET /v1/balances`.
//! What a refund does is the engine's (`relay_engine::refunds`).

use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiPath, AuthMerchant, RawBody};
use crate::routes::invoices::Idempotent;
use crate::view::{BalancesView, RefundReserveView, RefundView};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use relay_engine::refunds::RefundOrder;
use relay_store::Store;
use serde::Deserialize;
use utoipa::ToSchema;

/// Parameters of a refund.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    /// In major units of the payment's asset, e.g. `"10.00"` or `"0.0002"`. Default: all that is
    /// left to refund of the payment.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", max_length = 100)]
    pub amount: Option<String>,
    /// The payment's reference. Default: the invoice's first final payment with something left
    /// to refund.
    pub payment: Option<String>,
    /// Bitcoin payments: the payer's address the merchant's wallet refunds to.
    pub bitcoin_address: Option<String>,
}

/// Refund (part of) a payment of an invoice.
#[utoipa::path(
    post, path = "/v1/invoices/{id}/refunds", operation_id = "create_refund", tag = "refunds",
    request_body = CreateRefundRequest,
    params(
        ("id" = String, Path, description = "Invoice id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: one refund per key"),
    ),
    responses(
        (status = 200, description = "The refund (pending until its rail carries it out)", body = RefundView, links(
            ("CancelRefund" = (operation_id = "cancel_refund", parameters(("id" = "$request.path.id"), ("refund" = "$response.body#/id")))),
            ("RefundPaid" = (operation_id = "refund_paid", parameters(("id" = "$request.path.id"), ("refund" = "$response.body#/id"))))
        )),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 404, description = "No such invoice or payment", body = ErrorBody),
        (status = 409, description = "Nothing to refund (not final, disputed, refunded in full), or an escrow refund the merchant's refund reserve does not cover (`refund_not_covered`)", body = ErrorBody),
        (status = 422, description = "More than is left to refund", body = ErrorBody),
        (status = 502, description = "The card gateway refused the refund; it is failed", body = ErrorBody),
        (status = 503, description = "The card gateway could not be reached; the refund stays reserved and is asked for again", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
    method: Method,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let path = format!("/v1/invoices/{id}/refunds");
    let idem = match Idempotent::begin(&state, &merchant, &headers, &method, &path, &body).await? {
        Ok(idem) => idem,
        Err(replay) => return Ok(replay),
    };
    let req: CreateRefundRequest = parse_json(&body)?;
    let order = RefundOrder {
        amount: req.amount,
        payment: req.payment,
        bitcoin_address: req.bitcoin_address,
    };
    let done = state
        .request_refund(&merchant, &id, &order, idem.answering(&merchant))
        .await?;
    idem.finish(&state, done.commit, StatusCode::OK, done.body)
        .await
}

/// Cancel a pending bitcoin refund the merchant will not pay after all: it becomes `failed` and
/// its amount is refundable again. Card and escrow refunds are in the gateway's and the
/// operator's hands once requested, so they cannot be canceled.
#[utoipa::path(
    post, path = "/v1/invoices/{id}/refunds/{refund}/cancel", operation_id = "cancel_refund", tag = "refunds",
    params(
        ("id" = String, Path, description = "Invoice id"),
        ("refund" = String, Path, description = "Refund id, `re_…`"),
    ),
    responses(
        (status = 200, description = "The canceled refund", body = RefundView),
        (status = 404, description = "No such invoice or refund", body = ErrorBody),
        (status = 409, description = "Not a pending bitcoin refund", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn cancel<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath((id, refund)): ApiPath<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Json<RefundView>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParams {}
    let _: NoParams = parse_json(&body)?;
    let (invoice, refund) = state.cancel_refund(&merchant, &id, &refund).await?;
    Ok(Json(RefundView::of(&invoice, &refund)))
}

/// What `POST /v1/invoices/{id}/refunds/{refund}/paid` takes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundPaidRequest {
    /// The id of the transaction in which the merchant's wallet paid the refund (64 hex digits).
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub txid: String,
}

/// Name the transaction that paid a pending bitcoin refund. The relay marks the refund paid
/// when it sees an output of that transaction of at least the refund's amount to the payer's
/// address, as deep as the invoice's payments must be. Needed only when several merchants owe
/// the same address a refund (an output cannot tell whose wallet paid it); otherwise the relay
/// matches the payment by itself. Name it before it is 6 blocks deep.
#[utoipa::path(
    post, path = "/v1/invoices/{id}/refunds/{refund}/paid", operation_id = "refund_paid", tag = "refunds",
    request_body = RefundPaidRequest,
    params(
        ("id" = String, Path, description = "Invoice id"),
        ("refund" = String, Path, description = "Refund id, `re_…`"),
    ),
    responses(
        (status = 200, description = "The refund, with the named transaction", body = RefundView),
        (status = 400, description = "Not a transaction id", body = ErrorBody),
        (status = 404, description = "No such invoice or refund", body = ErrorBody),
        (status = 409, description = "Not a pending bitcoin refund", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn paid<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath((id, refund)): ApiPath<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Json<RefundView>, ApiError> {
    let req: RefundPaidRequest = parse_json(&body)?;
    let txid = req.txid.trim().to_ascii_lowercase();
    if txid.len() != 64 || !txid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            ApiError::invalid("parameter_invalid", "txid must be 64 hex digits").with_param("txid"),
        );
    }
    let (invoice, refund) = state
        .claim_refund_paid(&merchant, &id, &refund, txid)
        .await?;
    Ok(Json(RefundView::of(&invoice, &refund)))
}

/// The merchant's ledger balances, per asset and account.
#[utoipa::path(
    get, path = "/v1/balances", operation_id = "balances", tag = "refunds",
    responses(
        (status = 200, description = "Balances, and the merchant's refund reserves in the escrow", body = BalancesView),
        (status = 503, description = "The Ethereum node could not be asked for the refund reserves", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn balances<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
) -> Result<Json<BalancesView>, ApiError> {
    let mut view = BalancesView::of(&state.store.balances(&merchant.id).await?);
    let payout = merchant
        .eth_payout
        .as_deref()
        .and_then(|a| a.parse::<alloy_primitives::Address>().ok());
    if let (Some(_), Some(payout)) = (state.ethereum.as_ref(), payout) {
        for asset in state.assets.ethereum_assets() {
            let token = match &asset.kind {
                relay_core::AssetKind::Erc20 { contract } => {
                    match contract.parse::<alloy_primitives::Address>() {
                        Ok(t) => t,
                        Err(_) => continue,
                    }
                }
                _ => alloy_primitives::Address::ZERO,
            };
            let reserve = state.refund_reserve(payout, token).await?;
            let pending = state.pending_on_reserve(payout, token, "").await?;
            view.refund_reserves.push(RefundReserveView {
                asset: asset.code.clone(),
                reserve_minor: reserve.to_string(),
                pending_minor: pending.to_string(),
                available_minor: reserve.saturating_sub(pending).to_string(),
            });
        }
    }
    Ok(Json(view))
}
