//! `/v1/events`: the merchant's events, newest first.

use crate::error::{ApiError, ErrorBody};
use crate::extract::AuthMerchant;
use crate::routes::invoices::{only_params, page_limit, query_param};
use crate::view::{EventView, ListView};
use crate::AppState;
use axum::extract::{Query, State};
use axum::Json;
use relay_core::{EventId, EventType};
use relay_store::Store;
use std::collections::HashMap;

/// List events, newest first.
#[utoipa::path(
    get, path = "/v1/events", tag = "events",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 100, default 10"),
        ("starting_after" = Option<String>, Query, description = "Cursor: the last id of the previous page"),
        ("type" = Option<String>, Query, description = "Only events of this type, e.g. `invoice.settled`"),
    ),
    responses(
        (status = 200, description = "A page of events", body = ListView<EventView>),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ListView<EventView>>, ApiError> {
    only_params(&params, &["limit", "starting_after", "type"])?;
    let limit = page_limit(&params)?;
    let kind = query_param(&params, "type", EventType::parse, "an event type")?;
    let mut cursor = query_param(&params, "starting_after", EventId::parse, "an event id")?;
    // With a type filter, keep reading pages until one more than `limit` matching events is found
    // (which is what `has_more` means) or the events run out.
    let mut data = Vec::new();
    loop {
        let page = state
            .store
            .list_events(&merchant.id, cursor.as_ref(), 100)?;
        for e in &page.items {
            if kind.is_some_and(|k| k != e.kind) {
                continue;
            }
            if data.len() == limit {
                return Ok(Json(ListView {
                    object: "list",
                    data,
                    has_more: true,
                }));
            }
            data.push(EventView::of(e));
        }
        if !page.has_more {
            return Ok(Json(ListView {
                object: "list",
                data,
                has_more: false,
            }));
        }
        cursor = page.items.last().map(|e| e.id.clone());
    }
}
