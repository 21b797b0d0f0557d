//! `POST /v1/invoices/{id}/settlements/{settlement}/release`: the merchant has a held
//! cross-rail settlement paid at the current rate (the rules are the engine's:
//! `relay_engine::settlements`).

use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiPath, AuthMerchant, RawBody};
use crate::view::InvoiceView;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use relay_store::Store;
use serde::Deserialize;

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
    let invoice = state
        .release_settlement(&merchant, &id, &settlement)
        .await?;
    Ok(Json(InvoiceView::of(&invoice)))
}
