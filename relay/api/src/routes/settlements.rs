//! `POST /v1/invoices/{id}/settlements/{settlement}/release`: the merchant has a held
//! cross-rail settlement paid at the current rate.
//!
//! A settlement is held when its payment came late, after the cancel, or beyond what the invoice
//! was due: the rate locked at creation no longer holds, so the operator's liquidity never pays
//! it automatically. The operator did receive that money (in its treasury or gateway account), so
//! the merchant may have it paid at today's rate, rounded down. A settlement held because its
//! payment replaced one the merchant was already paid for, or because the payment is not final,
//! is never released.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiPath, AuthMerchant, RawBody};
use crate::routes::invoices::owned_invoice;
use crate::view::InvoiceView;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use relay_core::invoice::InvoiceInput;
use relay_core::rate::convert_down;
use relay_core::Invoice;
use relay_store::Store;
use serde::Deserialize;

/// What the settlement's part of its payment is worth now, in the settlement asset.
fn worth_now<S: Store>(
    state: &AppState<S>,
    invoice: &Invoice,
    settlement: &str,
) -> Result<relay_core::Amount, ApiError> {
    let missing = || ApiError::not_found("settlement").with_param("settlement");
    let s = invoice
        .settlements
        .iter()
        .find(|s| s.id.eq_ignore_ascii_case(settlement))
        .ok_or_else(missing)?;
    let to = invoice.settle_to.as_ref().ok_or_else(missing)?;
    let p = invoice
        .payments
        .iter()
        .find(|p| p.reference == s.payment)
        .ok_or_else(ApiError::internal)?;
    let from = invoice
        .quote_for(p.method)
        .map(|q| q.due.asset.clone())
        .ok_or_else(ApiError::internal)?;
    let source = if s.source_amount.is_zero() {
        p.amount
    } else {
        s.source_amount
    };
    let currency = &invoice.price.asset.code;
    let unavailable = |code: &str| {
        ApiError::invalid(
            "rate_unavailable",
            format!("no current rate from {code} to {currency}"),
        )
        .with_status(StatusCode::UNPROCESSABLE_ENTITY)
    };
    let from_rate = state
        .rates
        .rate(&from.code, currency)
        .ok_or_else(|| unavailable(&from.code))?;
    let to_rate = state
        .rates
        .rate(&to.due.asset.code, currency)
        .ok_or_else(|| unavailable(&to.due.asset.code))?;
    Ok(convert_down(
        source,
        &from,
        &from_rate,
        &to.due.asset,
        &to_rate,
    )?)
}

/// Have a held settlement paid at the current rate.
#[utoipa::path(
    post, path = "/v1/invoices/{id}/settlements/{settlement}/release", operation_id = "release_settlement", tag = "refunds",
    params(
        ("id" = String, Path, description = "Invoice id"),
        ("settlement" = String, Path, description = "Settlement id, `0x…`"),
    ),
    responses(
        (status = 200, description = "The invoice, the settlement pending at its new amount", body = InvoiceView),
        (status = 404, description = "No such invoice or settlement", body = ErrorBody),
        (status = 409, description = "Not a releasable hold (`settlement_not_releasable`)", body = ErrorBody),
        (status = 422, description = "No current rate (`rate_unavailable`)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn release<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath((id, settlement)): ApiPath<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Json<InvoiceView>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParams {}
    let _: NoParams = parse_json(&body)?;
    let invoice = owned_invoice(&state, &merchant, &id).await?;
    let amount = worth_now(&state, &invoice, &settlement)?;
    let input = InvoiceInput::ReleaseSettlement {
        id: settlement,
        amount,
    };
    state.apply(&invoice.id, &input).await?;
    state.store.durable().await?;
    let invoice = owned_invoice(&state, &merchant, &id).await?;
    Ok(Json(InvoiceView::of(&invoice)))
}
