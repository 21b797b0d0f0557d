//! `/v1/invoices`: create, retrieve, list, cancel.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiPath, AuthMerchant, RawBody};
use crate::idempotency;
use crate::view::{InvoiceView, ListView};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use relay_core::{Amount, Invoice, InvoiceId, Merchant, Money};
use relay_engine::invoices::InvoiceOrder;
use relay_engine::Answering;
use relay_store::{Commit, InvoiceQuery, Store};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

pub use relay_engine::invoices::DEFAULT_EXPIRY_SECS;

/// Parameters of a new invoice.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvoiceRequest {
    /// The price in major units as a decimal string, e.g. `"25.00"`. JSON numbers are refused so
    /// that no amount passes through a float.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", max_length = 100, example = "25.00")]
    pub amount: String,
    /// A supported currency code: `USD`, `EUR`, …, `BTC`, `ETH`.
    #[schema(max_length = 16, example = "USD")]
    pub currency: String,
    /// The merchant's own reference; invoices can be listed by it.
    #[schema(min_length = 1, max_length = 128)]
    pub order_id: Option<String>,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// Up to 20 string keys (1 to 40 characters) and values (up to 500), returned as given.
    #[schema(schema_with = metadata_map)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Seconds until the invoice expires: 60 to 2592000, default 900.
    #[schema(minimum = 60, maximum = 2592000)]
    pub expires_in: Option<i64>,
    /// Subset of `bitcoin`, `ethereum`, `card`; default: the merchant's methods.
    #[schema(schema_with = method_list)]
    pub payment_methods: Option<Vec<String>>,
    /// What an Ethereum payment is made in: `ETH` or a configured ERC-20 token code. Default:
    /// the price's token if the price is in one, else `ETH`.
    #[schema(max_length = 16)]
    pub ethereum_asset: Option<String>,
    /// Where the checkout page sends the payer back once the invoice is paid: an `http` or
    /// `https` URL without credentials, up to 2048 characters.
    #[schema(max_length = 2048, example = "https://shop.example.com/orders/A-1001")]
    pub redirect_url: Option<String>,
    /// When the bitcoin address is derived: `at_creation` (the default), or `on_demand`: only
    /// when the payer chooses bitcoin on the checkout page or through its public API
    /// (`POST /pay/{token}/methods/bitcoin`), so that invoices nobody pays in bitcoin use no
    /// address of the descriptor.
    pub bitcoin_address: Option<BitcoinAddressTiming>,
}

/// When an invoice's bitcoin address is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BitcoinAddressTiming {
    AtCreation,
    OnDemand,
}

/// The schema of `metadata`: up to 20 strings of up to 500 characters by key.
fn metadata_map() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(relay_core::invoice::MAX_METADATA_KEYS))
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(relay_core::invoice::MAX_METADATA_VALUE_LEN))
                .into(),
        )))
        .build()
}

/// The schema of `payment_methods`: names of methods (any other string is refused with
/// `payment_method_unsupported`).
fn method_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["bitcoin", "ethereum", "card"])),
        )
        .max_items(Some(3))
        .build()
}

pub(crate) fn parse_methods(names: &[String]) -> Result<Vec<relay_core::Method>, ApiError> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            relay_core::Method::parse(name).ok_or_else(|| {
                ApiError::invalid(
                    "payment_method_unsupported",
                    format!("{name:?} is not one of bitcoin, ethereum, card"),
                )
                .with_param(format!("payment_methods[{i}]"))
            })
        })
        .collect()
}

/// An in-flight write under an optional `Idempotency-Key`.
pub(crate) struct Idempotent {
    key: Option<String>,
    fingerprint: [u8; 32],
    now: relay_core::Timestamp,
}

impl Idempotent {
    /// Replays a previous answer for the same request (`Err(response)`), refuses the key for
    /// another request, or lets the caller go on.
    pub(crate) async fn begin<S: Store>(
        state: &AppState<S>,
        merchant: &Merchant,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Result<Result<Idempotent, Response>, ApiError> {
        let key = idempotency::key(headers)?;
        let fingerprint = idempotency::fingerprint(method, path, body);
        if let Some(k) = &key {
            if let Some(rec) = state.store.idempotency(&merchant.id, k).await? {
                // The record may belong to a write not yet on disk: answer only once it is.
                state.store.durable().await?;
                return Ok(Err(idempotency::replay(&rec, &fingerprint)));
            }
        }
        Ok(Ok(Idempotent {
            key,
            fingerprint,
            now: state.clock.now(),
        }))
    }

    /// The request as the engine records its answer, if it carried a key.
    pub(crate) fn answering<'a>(&'a self, merchant: &'a Merchant) -> Option<Answering<'a>> {
        self.key.as_deref().map(|key| Answering {
            merchant: &merchant.id,
            key,
            fingerprint: self.fingerprint,
            at: self.now,
        })
    }

    /// Answers once the decision is durable.
    pub(crate) async fn finish<S: Store>(
        &self,
        state: &AppState<S>,
        commit: Commit,
        status: StatusCode,
        body: String,
    ) -> Result<Response, ApiError> {
        match commit {
            Commit::Done => {
                state.store.durable().await?;
                Ok((
                    status,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response())
            }
            Commit::IdempotencyHit(rec) => {
                state.store.durable().await?;
                Ok(idempotency::replay(&rec, &self.fingerprint))
            }
            Commit::Conflict => Err(ApiError::invalid(
                "concurrent_update",
                "the object changed while this request ran; retry it",
            )
            .with_status(StatusCode::CONFLICT)),
        }
    }
}

/// Create an invoice.
#[utoipa::path(
    post, path = "/v1/invoices", operation_id = "create_invoice", tag = "invoices",
    request_body = CreateInvoiceRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe")),
    responses(
        (status = 200, description = "The new invoice", body = InvoiceView, links(
            ("RetrieveInvoice" = (operation_id = "retrieve_invoice", parameters(("id" = "$response.body#/id")))),
            ("CancelInvoice" = (operation_id = "cancel_invoice", parameters(("id" = "$response.body#/id")))),
            ("RefundInvoice" = (operation_id = "create_refund", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 422, description = "No rate for a requested method", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    method: Method,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let idem = match Idempotent::begin(&state, &merchant, &headers, &method, "/v1/invoices", &body)
        .await?
    {
        Ok(idem) => idem,
        Err(replay) => return Ok(replay),
    };
    let req: CreateInvoiceRequest = parse_json(&body)?;
    let order = order_of(&state, req)?;
    let created = state
        .create_invoice(&merchant, order, idem.answering(&merchant))
        .await?;
    idem.finish(&state, created.commit, StatusCode::OK, created.body)
        .await
}

/// The order a create request asks for, its fields checked.
pub(crate) fn order_of<S>(
    state: &AppState<S>,
    req: CreateInvoiceRequest,
) -> Result<InvoiceOrder, ApiError> {
    let asset = state.assets.get(&req.currency)?.clone();
    let amount = Amount::parse_decimal(&req.amount, &asset)?;
    let methods = req
        .payment_methods
        .map(|names| parse_methods(&names))
        .transpose()?;
    check_redirect_url(req.redirect_url.as_deref())?;
    Ok(InvoiceOrder {
        price: Money { asset, amount },
        order_id: req.order_id,
        description: req.description,
        metadata: req.metadata.unwrap_or_default(),
        expires_in: req.expires_in.unwrap_or(DEFAULT_EXPIRY_SECS),
        methods,
        eth_asset: req.ethereum_asset,
        redirect_url: req.redirect_url,
        bitcoin_on_demand: req.bitcoin_address == Some(BitcoinAddressTiming::OnDemand),
    })
}

/// A request's `redirect_url`, if any, is one a payer may be sent to (400 `redirect_url_invalid`
/// otherwise).
pub(crate) fn check_redirect_url(url: Option<&str>) -> Result<(), ApiError> {
    match url {
        Some(url) if !redirect_url_ok(url) => Err(ApiError::invalid(
            "redirect_url_invalid",
            "redirect_url must be an http or https URL without credentials, up to 2048 characters",
        )
        .with_param("redirect_url")),
        _ => Ok(()),
    }
}

/// A return address a payer may be sent to: http(s), a host, no user or password, not too long.
fn redirect_url_ok(text: &str) -> bool {
    text.len() <= 2048
        && url::Url::parse(text).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
        })
}

pub(crate) async fn owned_invoice<S: Store>(
    state: &AppState<S>,
    merchant: &Merchant,
    id: &str,
) -> Result<Invoice, ApiError> {
    Ok(state.engine.owned_invoice(merchant, id).await?)
}

/// Retrieve an invoice.
#[utoipa::path(
    get, path = "/v1/invoices/{id}", operation_id = "retrieve_invoice", tag = "invoices",
    params(("id" = String, Path, description = "Invoice id, `inv_…`")),
    responses(
        (status = 200, description = "The invoice", body = InvoiceView),
        (status = 404, description = "No such invoice for this merchant", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn retrieve<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<InvoiceView>, ApiError> {
    let invoice = owned_invoice(&state, &merchant, &id).await?;
    Ok(Json(InvoiceView::of(&invoice)))
}

pub(crate) fn page_limit(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(10),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "parameter_invalid",
                    "limit must be an integer from 1 to 100",
                )
                .with_param("limit")
            }),
    }
}

/// An optional query parameter parsed by `parse`; a value it rejects is 400 `parameter_invalid`.
pub(crate) fn query_param<T>(
    params: &HashMap<String, String>,
    name: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    params
        .get(name)
        .map(|v| {
            parse(v).ok_or_else(|| {
                ApiError::invalid("parameter_invalid", format!("{name} must be {expected}"))
                    .with_param(name)
            })
        })
        .transpose()
}

pub(crate) fn only_params(
    params: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<(), ApiError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid(
            "parameter_unknown",
            format!("unknown query parameter {k:?}"),
        )
        .with_param(k.clone())),
        None => Ok(()),
    }
}

/// List invoices, newest first.
#[utoipa::path(
    get, path = "/v1/invoices", operation_id = "list_invoices", tag = "invoices",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 10"),
        ("starting_after" = Option<String>, Query, description = "Cursor: the last id of the previous page"),
        ("order_id" = Option<String>, Query, description = "Only invoices with this order id"),
    ),
    responses(
        (status = 200, description = "A page of invoices", body = ListView<InvoiceView>, links(
            ("RetrieveFirst" = (operation_id = "retrieve_invoice", parameters(("id" = "$response.body#/data/0/id"))))
        )),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ListView<InvoiceView>>, ApiError> {
    only_params(&params, &["limit", "starting_after", "order_id"])?;
    let limit = page_limit(&params)?;
    let starting_after = query_param(&params, "starting_after", InvoiceId::parse, "an invoice id")?;
    let page = state
        .store
        .list_invoices(
            &merchant.id,
            &InvoiceQuery {
                order_id: params.get("order_id").cloned(),
                starting_after,
                limit,
            },
        )
        .await?;
    Ok(Json(ListView {
        object: "list",
        data: page.items.iter().map(InvoiceView::of).collect(),
        has_more: page.has_more,
    }))
}

/// Cancel an unpaid invoice (it becomes `invalid`).
#[utoipa::path(
    post, path = "/v1/invoices/{id}/cancel", operation_id = "cancel_invoice", tag = "invoices",
    params(
        ("id" = String, Path, description = "Invoice id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe"),
    ),
    responses(
        (status = 200, description = "The canceled invoice", body = InvoiceView, links(
            ("RetrieveInvoice" = (operation_id = "retrieve_invoice", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 404, description = "No such invoice", body = ErrorBody),
        (status = 409, description = "The invoice is not cancelable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn cancel<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
    method: Method,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let path = format!("/v1/invoices/{id}/cancel");
    let idem = match Idempotent::begin(&state, &merchant, &headers, &method, &path, &body).await? {
        Ok(idem) => idem,
        Err(replay) => return Ok(replay),
    };
    let _: NoParams = parse_json(&body)?;
    let done = state
        .cancel_invoice(&merchant, &id, idem.answering(&merchant))
        .await?;
    let answer = idem
        .finish(&state, done.commit, StatusCode::OK, done.body)
        .await;
    state.close_card_intent(&done.value).await;
    answer
}

/// Quote an unpaid invoice again at the current rates, for a new quote lifetime.
#[utoipa::path(
    post, path = "/v1/invoices/{id}/quote", operation_id = "refresh_invoice_quote", tag = "invoices",
    params(("id" = String, Path, description = "Invoice id")),
    responses(
        (status = 200, description = "The invoice with its new quotes", body = InvoiceView),
        (status = 404, description = "No such invoice", body = ErrorBody),
        (status = 409, description = "Something was paid already, or it can no longer be paid (`quote_not_refreshable`)", body = ErrorBody),
        (status = 422, description = "No rate for one of its methods (`rate_unavailable`)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn refresh_quote<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
    RawBody(body): RawBody,
) -> Result<Json<InvoiceView>, ApiError> {
    let _: NoParams = parse_json(&body)?;
    let invoice = owned_invoice(&state, &merchant, &id).await?;
    let invoice = state.refresh_quote(&invoice.id).await?;
    Ok(Json(InvoiceView::of(&invoice)))
}

/// An empty JSON object (or an empty body).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParams {}
