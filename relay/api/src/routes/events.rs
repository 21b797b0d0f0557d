//! `/v1/events`: the merchant's events, newest first.

use crate::error::{ApiError, ErrorBody};
use crate::extract::AuthMerchant;
use crate::routes::invoices::{only_params, page_limit, query_param};
use crate::view::EventView;
use crate::AppState;
use axum::extract::{Query, State};
use axum::Json;
use relay_core::{EventId, EventType};
use relay_store::Store;
use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;

/// The most events one request reads to find those of the asked type: a merchant with millions
/// of events gets a bounded answer, and a cursor to go on from.
pub const MAX_EVENTS_SCANNED: usize = 10_000;

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventListView {
    pub object: &'static str,
    pub data: Vec<EventView>,
    pub has_more: bool,
    /// Where to go on from (as `starting_after`) when a `type` filter stopped after reading
    /// 10,000 events: it may be past the last event in `data`. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_starting_after: Option<String>,
}

/// List events, newest first.
#[utoipa::path(
    get, path = "/v1/events", operation_id = "list_events", tag = "events",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 10"),
        ("starting_after" = Option<String>, Query, description = "Cursor: the last id of the previous page (or its `next_starting_after`)"),
        ("type" = Option<String>, Query, description = "Only events of this type, e.g. `invoice.settled`; at most 10,000 events are read per request"),
    ),
    responses(
        (status = 200, description = "A page of events", body = EventListView, links(
            ("Deliveries" = (operation_id = "event_deliveries", parameters(("id" = "$response.body#/data/0/id")))),
            ("Redeliver" = (operation_id = "redeliver_event", parameters(("id" = "$response.body#/data/0/id"))))
        )),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<EventListView>, ApiError> {
    only_params(&params, &["limit", "starting_after", "type"])?;
    let limit = page_limit(&params)?;
    let kind = query_param(&params, "type", EventType::parse, "an event type")?;
    let mut cursor = query_param(&params, "starting_after", EventId::parse, "an event id")?;
    // With a type filter, keep reading pages until one more than `limit` matching events is found
    // (which is what `has_more` means), the events run out, or the scan budget is spent.
    let mut data = Vec::new();
    let mut scanned = 0;
    let page = |data, has_more, next: Option<&EventId>| {
        Ok(Json(EventListView {
            object: "list",
            data,
            has_more,
            next_starting_after: next.map(|id| id.as_str().to_owned()),
        }))
    };
    loop {
        let batch = state
            .store
            .list_events(&merchant.id, cursor.as_ref(), 100)
            .await?;
        for e in &batch.items {
            scanned += 1;
            if kind.is_some_and(|k| k != e.kind) {
                if scanned >= MAX_EVENTS_SCANNED {
                    return page(data, true, Some(&e.id));
                }
                continue;
            }
            if data.len() == limit {
                return page(data, true, None);
            }
            data.push(EventView::of(e));
        }
        if !batch.has_more {
            return page(data, false, None);
        }
        cursor = batch.items.last().map(|e| e.id.clone());
    }
}
