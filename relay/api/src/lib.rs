//! Relay's HTTP API: an axum [`Router`] built by [`app`] over any [`Store`].
//!
//! Conventions (Stripe's and BTCPay Greenfield's): JSON under `/v1`, `Authorization: Bearer` API
//! keys stored hashed, `Idempotency-Key` on every POST, errors as
//! `{"error":{"type","code","message","param"}}`, cursor pagination, an OpenAPI document generated
//! from the handlers at `/openapi.json`, `/healthz`, `/readyz` and Prometheus `/metrics`.
//! No request can make a handler panic; should one anyway, the client gets a JSON 500.

pub mod error;
pub mod extract;
pub mod idempotency;
pub mod routes;
pub mod throttle;

// The application layer's pieces the handlers use, at the paths they always had.
pub use relay_engine::{apply as update, gateway as card, view};
pub use relay_engine::{
    BitcoinRail, Engine, EthereumRail, IdSource, RefundReserves, SystemClock, WatchRefund,
};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use relay_store::Store;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use utoipa::OpenApi;

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// The largest body of `PUT /v1/risk/rules`: its lists may hold 50,000 entries.
pub const RULES_BODY_LIMIT_BYTES: usize = 4 * 1024 * 1024;

/// What every handler shares: the engine (through `Deref`, so `state.store`, `state.clock` …
/// are the engine's) and the HTTP layer's own settings.
pub struct AppState<S> {
    pub engine: Engine<S>,
    pub request_timeout: Duration,
    pub metrics: PrometheusHandle,
    /// Webhook endpoints may point at private addresses (`relay dev`, tests); never in
    /// production.
    pub allow_private_webhooks: bool,
    /// When set, `/metrics` answers only requests bearing this token.
    pub metrics_token: Option<String>,
    /// Requests per second each merchant's keys may make (none: unlimited).
    pub throttle: Option<Arc<throttle::Throttle>>,
    /// Invalid API keys each client address may send a minute (none: unlimited).
    pub auth_failures: Option<Arc<throttle::AuthFailures>>,
    /// Requests served at once; past it, 503 `overloaded` (none: unlimited).
    pub in_flight: Option<Arc<tokio::sync::Semaphore>>,
    /// Serialises changes to API keys, so "the last key that can manage keys" stays true.
    pub key_changes: Arc<tokio::sync::Mutex<()>>,
    /// How checkout pages are served: who may frame them, the card form, card attempt limits.
    pub checkout: Arc<routes::checkout::CheckoutSettings>,
    /// The live rates, when providers are configured (for `GET /v1/rates`).
    pub live_rates: Option<Arc<relay_rates::LiveRates>>,
    /// The configured table of fixed rates (overriding the live ones pair by pair).
    pub fixed_rates: Arc<relay_core::FixedRates>,
}

impl<S> std::ops::Deref for AppState<S> {
    type Target = Engine<S>;

    fn deref(&self) -> &Engine<S> {
        &self.engine
    }
}

impl<S: Clone> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            engine: self.engine.clone(),
            request_timeout: self.request_timeout,
            metrics: self.metrics.clone(),
            allow_private_webhooks: self.allow_private_webhooks,
            metrics_token: self.metrics_token.clone(),
            throttle: self.throttle.clone(),
            auth_failures: self.auth_failures.clone(),
            in_flight: self.in_flight.clone(),
            key_changes: self.key_changes.clone(),
            checkout: self.checkout.clone(),
            live_rates: self.live_rates.clone(),
            fixed_rates: self.fixed_rates.clone(),
        }
    }
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Relay API", description = "Cross-chain payment relay: invoices payable by card, bitcoin and Ethereum."),
    paths(
        routes::invoices::create,
        routes::invoices::retrieve,
        routes::invoices::list,
        routes::invoices::cancel,
        routes::refunds::create,
        routes::refunds::cancel,
        routes::refunds::paid,
        routes::refunds::balances,
        routes::settlements::release,
        routes::events::list,
        routes::gateway::stripe_webhook,
        routes::webhooks::create,
        routes::webhooks::list,
        routes::webhooks::disable,
        routes::webhooks::deliveries,
        routes::webhooks::redeliver,
        healthz,
        readyz,
        render_metrics,
        routes::keys::create,
        routes::keys::list,
        routes::keys::roll,
        routes::keys::revoke,
        routes::checkout::payment_request,
        routes::checkout::stream::events,
        routes::checkout::card::pay,
        routes::checkout::choose::choose,
        routes::checkout::choose::refresh,
        routes::invoices::refresh_quote,
        routes::links::create,
        routes::links::retrieve,
        routes::links::list,
        routes::links::deactivate,
        routes::links::visit,
        routes::rates::list,
        routes::risk::get_rules,
        routes::risk::put_rules,
        routes::risk::list,
        routes::risk::approve,
        routes::risk::reject,
    ),
    components(schemas(error::ErrorBody, view::InvoiceView, view::PaymentLinkView, view::EventView, view::RefundView, view::BalancesView, view::RefundReserveView)),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        common_responses(openapi);
    }
}

/// Adds to every operation the answers any of its kind can get, where the operation does not
/// say more itself: the gate's (401 no or bad key, 403 missing scope, 429 with `Retry-After`
/// from the key's or the address's bucket), the server's (503 overloaded, timed out or storage
/// unavailable, with `Retry-After` when it is known), and the parser's (400 for a path or body
/// that does not parse, 413 for a body over 64 KiB).
fn common_responses(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str, retry_after: bool| {
        let mut r = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        );
        if retry_after {
            r = r.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(1)),
                    )
                    .description(Some("Seconds to wait before trying again"))
                    .build(),
            );
        }
        r.build()
    };
    for item in openapi.paths.paths.values_mut() {
        let ops = [
            (false, item.get.as_mut()),
            (true, item.post.as_mut()),
            (true, item.put.as_mut()),
            (false, item.delete.as_mut()),
            (true, item.patch.as_mut()),
        ];
        for (with_body, op) in ops {
            let Some(op) = op else { continue };
            let keyed = op.security.as_ref().is_some_and(|s| {
                let text = serde_json::to_string(s).unwrap_or_default();
                text.contains("api_key")
            });
            let has_path = op.parameters.as_ref().is_some_and(|ps| {
                ps.iter()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Path))
            });
            // A POST may carry a body even where it declares none (an optional empty one).
            let has_body = with_body || op.request_body.is_some();
            let r = &mut op.responses.responses;
            let mut add = |status: &str, description: &str, retry_after: bool| {
                r.entry(status.to_owned())
                    .or_insert_with(|| error(description, retry_after).into());
            };
            if keyed {
                add(
                    "401",
                    "No API key, or one that is not valid (revoked, rolled)",
                    false,
                );
                add(
                    "403",
                    "The API key lacks the scope this needs (`scope_missing`)",
                    false,
                );
                add(
                    "429",
                    "Too many requests for this key (`rate_limited`), or too many invalid keys from this address (`too_many_auth_failures`)",
                    true,
                );
            }
            add(
                "503",
                "Overloaded, timed out or storage unavailable: retry (with the same Idempotency-Key)",
                true,
            );
            if has_path || has_body {
                add("400", "The path, parameters or body are not valid", false);
            }
            if has_body {
                add("413", "The body is over 64 KiB (`body_too_large`)", false);
            }
        }
    }
}

/// The whole HTTP application.
pub fn app<S: Store + Clone>(state: AppState<S>) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/invoices",
            post(routes::invoices::create::<S>).get(routes::invoices::list::<S>),
        )
        .route("/v1/invoices/{id}", get(routes::invoices::retrieve::<S>))
        .route(
            "/v1/invoices/{id}/cancel",
            post(routes::invoices::cancel::<S>),
        )
        .route(
            "/v1/invoices/{id}/quote",
            post(routes::invoices::refresh_quote::<S>),
        )
        .route(
            "/v1/invoices/{id}/refunds",
            post(routes::refunds::create::<S>),
        )
        .route(
            "/v1/invoices/{id}/refunds/{refund}/cancel",
            post(routes::refunds::cancel::<S>),
        )
        .route(
            "/v1/invoices/{id}/refunds/{refund}/paid",
            post(routes::refunds::paid::<S>),
        )
        .route(
            "/v1/invoices/{id}/settlements/{settlement}/release",
            post(routes::settlements::release::<S>),
        )
        .route("/v1/balances", get(routes::refunds::balances::<S>))
        .route("/v1/rates", get(routes::rates::list::<S>))
        .route(
            "/v1/risk/rules",
            get(routes::risk::get_rules::<S>)
                .put(routes::risk::put_rules::<S>)
                .layer(DefaultBodyLimit::max(RULES_BODY_LIMIT_BYTES)),
        )
        .route("/v1/reviews", get(routes::risk::list::<S>))
        .route("/v1/reviews/{id}/approve", post(routes::risk::approve::<S>))
        .route("/v1/reviews/{id}/reject", post(routes::risk::reject::<S>))
        .route("/v1/events", get(routes::events::list::<S>))
        .route(
            "/v1/events/{id}/deliveries",
            get(routes::webhooks::deliveries::<S>),
        )
        .route(
            "/v1/events/{id}/redeliver",
            post(routes::webhooks::redeliver::<S>),
        )
        .route(
            "/v1/webhook_endpoints",
            post(routes::webhooks::create::<S>).get(routes::webhooks::list::<S>),
        )
        .route(
            "/v1/webhook_endpoints/{id}/disable",
            post(routes::webhooks::disable::<S>),
        )
        .route(
            "/v1/api_keys",
            post(routes::keys::create::<S>).get(routes::keys::list::<S>),
        )
        .route("/v1/api_keys/{id}/roll", post(routes::keys::roll::<S>))
        .route("/v1/api_keys/{id}/revoke", post(routes::keys::revoke::<S>))
        .route(
            "/v1/gateways/stripe/webhook",
            post(routes::gateway::stripe_webhook::<S>),
        )
        .route(
            "/v1/payment_links",
            post(routes::links::create::<S>).get(routes::links::list::<S>),
        )
        .route("/v1/payment_links/{id}", get(routes::links::retrieve::<S>))
        .route(
            "/v1/payment_links/{id}/deactivate",
            post(routes::links::deactivate::<S>),
        )
        .route("/link/{token}", get(routes::links::visit::<S>))
        .route("/pay/{token}", get(routes::checkout::page::<S>))
        .route(
            "/pay/{token}/payment_request",
            get(routes::checkout::payment_request::<S>),
        )
        .route(
            "/pay/{token}/events",
            get(routes::checkout::stream::events::<S>),
        )
        .route("/pay/{token}/card", post(routes::checkout::card::pay::<S>))
        .route(
            "/pay/{token}/methods/{method}",
            post(routes::checkout::choose::choose::<S>),
        )
        .route(
            "/pay/{token}/quote",
            post(routes::checkout::choose::refresh::<S>),
        )
        .route("/checkout-assets/{file}", get(routes::checkout::asset));
    Router::new()
        .merge(v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(render_metrics::<S>))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            timeout_and_metrics::<S>,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

/// A health answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HealthView {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = HealthView))
)]
async fn healthz() -> Json<HealthView> {
    Json(HealthView { status: "ok" })
}

/// Readiness: the store answers.
#[utoipa::path(
    get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthView),
        (status = 503, description = "Storage unavailable (`not_ready`)", body = error::ErrorBody),
    )
)]
async fn readyz<S: Store>(State(state): State<AppState<S>>) -> Response {
    match state.store.merchant_count().await {
        Ok(_) => Json(HealthView { status: "ready" }).into_response(),
        Err(e) => {
            tracing::warn!(target: "relay::api", error = %e, "not ready");
            ApiError::unavailable("not_ready", "storage is not available").into_response()
        }
    }
}

/// Whether two secrets are equal, in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Prometheus metrics, in the text format.
#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "`metrics_token` is set and was not given (`metrics_token_invalid`)", body = error::ErrorBody),
    ),
    security((), ("metrics_token" = []))
)]
async fn render_metrics<S: Store>(
    State(state): State<AppState<S>>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(token) = &state.metrics_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same_secret(given.as_bytes(), token.as_bytes()) {
            return ApiError::invalid("metrics_token_invalid", "/metrics needs its bearer token")
                .with_status(StatusCode::UNAUTHORIZED)
                .into_response();
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Json<serde_json::Value> {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    Json(DOC.get_or_init(openapi_json).clone())
}

/// The OpenAPI document as served. utoipa 5 writes the fields of a response link in snake case
/// (`operation_id`); OpenAPI names them in camel case, so they are renamed here.
pub fn openapi_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for op in paths.values_mut().filter_map(|i| i.as_object_mut()) {
            for o in op.values_mut() {
                let Some(responses) = o.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                    continue;
                };
                for r in responses.values_mut() {
                    let Some(links) = r.get_mut("links").and_then(|l| l.as_object_mut()) else {
                        continue;
                    };
                    for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                        for (from, to) in [
                            ("operation_id", "operationId"),
                            ("operation_ref", "operationRef"),
                            ("request_body", "requestBody"),
                        ] {
                            if let Some(v) = link.remove(from) {
                                link.insert(to.to_owned(), v);
                            }
                        }
                    }
                }
            }
        }
    }
    doc
}

async fn not_found() -> ApiError {
    ApiError::invalid("route_not_found", "no such route").with_status(StatusCode::NOT_FOUND)
}

/// The metric label of a request method: the standard ones by name, anything made up as
/// `other`, so a client cannot grow the metrics without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::invalid(
        "method_not_allowed",
        "this route does not accept that method",
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!(target: "relay::api", "a request handler panicked");
    ApiError::internal().into_response()
}

/// Bounds each request's time and records its count and latency by route and status.
async fn timeout_and_metrics<S: Store>(
    State(state): State<AppState<S>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let started = Instant::now();
    // Health and metrics answer even when the relay is at its limit.
    let _slot = match (&state.in_flight, route.as_str()) {
        (None, _) | (_, "/healthz" | "/readyz" | "/metrics") => None,
        (Some(slots), _) => match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                metrics::counter!("relay_http_overloaded_total").increment(1);
                return ApiError::overloaded().into_response();
            }
        },
    };
    let response = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::unavailable(
            "request_timeout",
            "the request took too long; retry with the same Idempotency-Key",
        )
        .into_response(),
    };
    let status = response.status().as_u16().to_string();
    metrics::counter!("relay_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("relay_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
