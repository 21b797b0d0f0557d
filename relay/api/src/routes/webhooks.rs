//! `/v1/webhook_endpoints` and the delivery side of `/v1/events/{id}`: where a merchant's events
//! go, what each delivery attempt got, and sending an event again.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiPath, AuthMerchant, RawBody};
use crate::view::{rfc3339, ListView};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use relay_core::webhook::MAX_ENDPOINTS;
use relay_core::{EventId, EventType, Merchant, Secret, WebhookEndpoint};
use relay_store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// Absolute `http(s)` URL that receives `POST`s of events; a public address.
    #[schema(max_length = 2048, example = "https://example.com/hooks")]
    pub url: String,
    /// Event types to deliver (e.g. `invoice.settled`); omitted or empty: every type.
    #[schema(schema_with = event_type_list)]
    pub event_types: Option<Vec<String>>,
}

/// The schema of a list of event types.
pub(crate) fn event_type_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(EventType::ALL.iter().map(|t| t.as_str()))),
        )
        .build()
}

#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    /// `we_…`
    pub id: String,
    pub object: &'static str,
    pub url: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: String,
    /// Signs deliveries (`Relay-Signature`). Returned only when the endpoint is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl EndpointView {
    fn of(e: &WebhookEndpoint, with_secret: bool) -> EndpointView {
        EndpointView {
            id: e.id.clone(),
            object: "webhook_endpoint",
            url: e.url.clone(),
            event_types: e.event_types.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            created_at: rfc3339(e.created_at),
            secret: with_secret.then(|| e.secret.expose_secret().to_owned()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    pub object: &'static str,
    pub endpoint_id: String,
    pub event_id: String,
    pub attempt: u32,
    pub at: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// `delivered`, `retrying`, `endpoint_gone` or `gave_up`.
    pub outcome: String,
}

#[derive(Serialize, ToSchema)]
pub struct RedeliverView {
    pub object: &'static str,
    pub event_id: String,
    /// Deliveries queued (one per endpoint that wants the event and has none pending).
    pub queued: usize,
}

/// Create a webhook endpoint; its signing secret is in this response only.
#[utoipa::path(
    post, path = "/v1/webhook_endpoints", operation_id = "create_webhook_endpoint", tag = "webhooks",
    request_body = CreateEndpointRequest,
    responses(
        (status = 200, description = "The endpoint, with its secret", body = EndpointView, links(
            ("Disable" = (operation_id = "disable_webhook_endpoint", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 409, description = "An enabled endpoint with this URL exists, or too many endpoints", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    RawBody(body): RawBody,
) -> Result<Json<EndpointView>, ApiError> {
    let req: CreateEndpointRequest = parse_json(&body)?;
    let existing = state.store.endpoints(&merchant.id).await?;
    if existing.iter().any(|e| e.enabled && e.url == req.url) {
        return Err(ApiError::invalid(
            "webhook_endpoint_exists",
            "an enabled endpoint with this URL exists; disable it first",
        )
        .with_param("url")
        .with_status(StatusCode::CONFLICT));
    }
    if existing.iter().filter(|e| e.enabled).count() >= MAX_ENDPOINTS {
        return Err(ApiError::invalid(
            "too_many_webhook_endpoints",
            format!("at most {MAX_ENDPOINTS} enabled endpoints"),
        )
        .with_status(StatusCode::CONFLICT));
    }
    if Merchant::validate_webhook_url(&req.url, true).is_ok()
        && Merchant::validate_webhook_url(&req.url, state.allow_private_webhooks).is_err()
    {
        return Err(ApiError::invalid(
            "webhook_url_forbidden",
            "webhooks go to public internet addresses only (not loopback, private, link-local, CGNAT, multicast or localhost names)",
        )
        .with_param("url"));
    }
    let endpoint = relay_engine::endpoints::new_endpoint(
        &merchant,
        &req.url,
        req.event_types.unwrap_or_default(),
        Secret::from_entropy("whsec_", rand::random()),
        rand::random(),
        state.clock.now(),
    )
    .map_err(|e| ApiError::invalid("parameter_invalid", e.message).with_param(e.param))?;
    state.store.insert_endpoint(&endpoint).await?;
    state.store.durable().await?;
    Ok(Json(EndpointView::of(&endpoint, true)))
}

/// List the merchant's webhook endpoints (without secrets).
#[utoipa::path(
    get, path = "/v1/webhook_endpoints", operation_id = "list_webhook_endpoints", tag = "webhooks",
    responses((status = 200, description = "Every endpoint", body = ListView<EndpointView>)),
    security(("api_key" = []))
)]
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
) -> Result<Json<ListView<EndpointView>>, ApiError> {
    let data = state
        .store
        .endpoints(&merchant.id)
        .await?
        .iter()
        .map(|e| EndpointView::of(e, false))
        .collect();
    Ok(Json(ListView {
        object: "list",
        data,
        has_more: false,
    }))
}

/// Disable an endpoint: nothing more is delivered to it.
#[utoipa::path(
    post, path = "/v1/webhook_endpoints/{id}/disable", operation_id = "disable_webhook_endpoint", tag = "webhooks",
    params(("id" = String, Path, description = "`we_…`")),
    responses(
        (status = 200, description = "The disabled endpoint", body = EndpointView),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn disable<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EndpointView>, ApiError> {
    let mut endpoint = state
        .store
        .endpoints(&merchant.id)
        .await?
        .into_iter()
        .find(|e| e.id == id)
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    if endpoint.enabled {
        endpoint.enabled = false;
        endpoint.disabled_reason = Some("disabled by the merchant".into());
        state.store.insert_endpoint(&endpoint).await?;
        state.store.durable().await?;
    }
    Ok(Json(EndpointView::of(&endpoint, false)))
}

async fn own_event<S: Store>(
    state: &AppState<S>,
    merchant: &Merchant,
    id: &str,
) -> Result<relay_core::Event, ApiError> {
    let found = match EventId::parse(id) {
        Some(id) => state.store.event(&id).await?,
        None => None,
    };
    found
        .filter(|e| e.merchant_id == merchant.id)
        .ok_or_else(|| ApiError::not_found("event"))
}

/// Every delivery attempt of an event.
#[utoipa::path(
    get, path = "/v1/events/{id}/deliveries", operation_id = "event_deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "`evt_…`")),
    responses(
        (status = 200, description = "Attempts, by endpoint then attempt number", body = ListView<AttemptView>),
        (status = 404, description = "No such event", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn deliveries<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ListView<AttemptView>>, ApiError> {
    let event = own_event(&state, &merchant, &id).await?;
    let data = state
        .store
        .delivery_attempts(&event.id)
        .await?
        .into_iter()
        .map(|a| AttemptView {
            object: "delivery_attempt",
            endpoint_id: a.endpoint_id,
            event_id: a.event_id,
            attempt: a.attempt,
            at: rfc3339(a.at),
            status: a.status,
            error: a.error,
            duration_ms: a.duration_ms,
            outcome: serde_json::to_value(a.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        })
        .collect();
    Ok(Json(ListView {
        object: "list",
        data,
        has_more: false,
    }))
}

/// Send an event again to the merchant's endpoints that want it.
#[utoipa::path(
    post, path = "/v1/events/{id}/redeliver", operation_id = "redeliver_event", tag = "webhooks",
    params(("id" = String, Path, description = "`evt_…`")),
    responses(
        (status = 200, description = "How many deliveries were queued", body = RedeliverView, links(
            ("Deliveries" = (operation_id = "event_deliveries", parameters(("id" = "$response.body#/event_id"))))
        )),
        (status = 404, description = "No such event", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn redeliver<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RedeliverView>, ApiError> {
    let event = own_event(&state, &merchant, &id).await?;
    let now_ms = u64::try_from(state.clock.now().0).unwrap_or(0) * 1000;
    let queued = state.store.redeliver(&event, now_ms).await?;
    state.store.durable().await?;
    Ok(Json(RedeliverView {
        object: "redelivery",
        event_id: event.id.to_string(),
        queued,
    }))
}
