//! `/v1/payment_links`: the merchant makes, lists and deactivates payment links; and
//! `GET /link/{token}`, where a payer who opens one is given an invoice and sent to its checkout
//! page. Visits need no key, so each client address may make only so many invoices a minute.

use super::checkout::{message_page, PageQuery};
use super::invoices::{
    check_redirect_url, only_params, page_limit, parse_methods, query_param, Idempotent, NoParams,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiPath, AuthMerchant, ClientAddress, RawBody};
use crate::view::{ListView, PaymentLinkView};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use relay_core::{Amount, LinkId, Money};
use relay_engine::invoices::DEFAULT_EXPIRY_SECS;
use relay_engine::links::{LinkOrder, VisitError};
use relay_store::Store;
use serde::Deserialize;
use std::collections::HashMap;
use utoipa::ToSchema;

/// Parameters of a new payment link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentLinkRequest {
    /// The price in major units as a decimal string, e.g. `"25.00"`.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", max_length = 100, example = "25.00")]
    pub amount: String,
    /// A supported currency code: `USD`, `EUR`, …, `BTC`, `ETH`.
    #[schema(max_length = 16, example = "USD")]
    pub currency: String,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// `true`: every visit makes a new invoice (a price list, a donation page). `false`: one
    /// payment in all; later visitors are sent back to the invoice the first one made (a new one
    /// only if it expired or was canceled with nothing paid).
    pub reusable: bool,
    /// Subset of `bitcoin`, `ethereum`, `card`; default: the merchant's methods.
    pub payment_methods: Option<Vec<String>>,
    /// Where each invoice's checkout page sends the payer once paid (http or https).
    #[schema(max_length = 2048)]
    pub redirect_url: Option<String>,
    /// Seconds each invoice made from the link is payable: 60 to 2592000, default 900.
    #[schema(minimum = 60, maximum = 2592000)]
    pub expires_in: Option<i64>,
}

/// Create a payment link. Invoices made from it derive their bitcoin address only when the payer
/// chooses bitcoin.
#[utoipa::path(
    post, path = "/v1/payment_links", operation_id = "create_payment_link", tag = "payment links",
    request_body = CreatePaymentLinkRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe")),
    responses(
        (status = 200, description = "The new link", body = PaymentLinkView, links(
            ("RetrieveLink" = (operation_id = "retrieve_payment_link", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 400, description = "Invalid parameters (the same codes as an invoice's)", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 422, description = "A method cannot be offered, or no rate for it", body = ErrorBody),
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
    let idem = match Idempotent::begin(
        &state,
        &merchant,
        &headers,
        &method,
        "/v1/payment_links",
        &body,
    )
    .await?
    {
        Ok(idem) => idem,
        Err(replay) => return Ok(replay),
    };
    let req: CreatePaymentLinkRequest = parse_json(&body)?;
    let asset = state.assets.get(&req.currency)?.clone();
    let amount = Amount::parse_decimal(&req.amount, &asset)?;
    check_redirect_url(req.redirect_url.as_deref())?;
    let order = LinkOrder {
        price: Money { asset, amount },
        description: req.description,
        reusable: req.reusable,
        methods: req
            .payment_methods
            .map(|names| parse_methods(&names))
            .transpose()?,
        redirect_url: req.redirect_url,
        expires_in: req.expires_in.unwrap_or(DEFAULT_EXPIRY_SECS),
    };
    let done = state
        .create_link(&merchant, order, idem.answering(&merchant))
        .await?;
    idem.finish(&state, done.commit, StatusCode::OK, done.body)
        .await
}

/// Retrieve a payment link.
#[utoipa::path(
    get, path = "/v1/payment_links/{id}", operation_id = "retrieve_payment_link", tag = "payment links",
    params(("id" = String, Path, description = "Link id, `plink_…`")),
    responses(
        (status = 200, description = "The link", body = PaymentLinkView),
        (status = 404, description = "No such link for this merchant", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn retrieve<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PaymentLinkView>, ApiError> {
    let link = state.owned_link(&merchant, &id).await?;
    Ok(Json(PaymentLinkView::of(&link)))
}

/// List payment links, newest first.
#[utoipa::path(
    get, path = "/v1/payment_links", operation_id = "list_payment_links", tag = "payment links",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 10"),
        ("starting_after" = Option<String>, Query, description = "Cursor: the last id of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of links", body = ListView<PaymentLinkView>),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ListView<PaymentLinkView>>, ApiError> {
    only_params(&params, &["limit", "starting_after"])?;
    let limit = page_limit(&params)?;
    let after = query_param(&params, "starting_after", LinkId::parse, "a link id")?;
    let page = state
        .store
        .list_links(&merchant.id, after.as_ref(), limit)
        .await?;
    Ok(Json(ListView {
        object: "list",
        data: page.items.iter().map(PaymentLinkView::of).collect(),
        has_more: page.has_more,
    }))
}

/// Deactivate a payment link: it makes no more invoices (those it made stay payable).
#[utoipa::path(
    post, path = "/v1/payment_links/{id}/deactivate", operation_id = "deactivate_payment_link", tag = "payment links",
    params(("id" = String, Path, description = "Link id, `plink_…`")),
    responses(
        (status = 200, description = "The deactivated link", body = PaymentLinkView),
        (status = 404, description = "No such link for this merchant", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn deactivate<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
    RawBody(body): RawBody,
) -> Result<Json<PaymentLinkView>, ApiError> {
    let _: NoParams = parse_json(&body)?;
    let link = state.deactivate_link(&merchant, &id).await?;
    Ok(Json(PaymentLinkView::of(&link)))
}

/// Open a payment link: an invoice for its price (or, single-use, the one it made), and a
/// redirect to its checkout page. Public.
#[utoipa::path(
    get, path = "/link/{token}", operation_id = "open_payment_link", tag = "payment links",
    params(
        ("token" = String, Path, description = "The public part of the link's `url`"),
        ("lang" = Option<String>, Query, description = "`en` or `zh-CN`, passed on to the checkout page"),
    ),
    responses(
        (status = 303, description = "To the invoice's checkout page (`Location`)"),
        (status = 404, description = "No link has this token (an HTML page)"),
        (status = 410, description = "The link was deactivated (an HTML page)"),
        (status = 422, description = "The link's invoice cannot be made now (a method or rate no longer available)", body = ErrorBody),
        (status = 429, description = "Too many links opened from this address (`too_many_link_visits`)", body = ErrorBody),
    ),
    security(())
)]
pub async fn visit<S: Store>(
    State(state): State<AppState<S>>,
    Path(token): Path<String>,
    Query(q): Query<PageQuery>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
) -> Response {
    let lang = q.lang_with(&headers);
    if let Err(e) = state.checkout.link_visits.check(&token, client) {
        return e.into_response();
    }
    match state.visit_link(&token).await {
        Ok(invoice) => match invoice.checkout {
            Some(c) => {
                let to = match q.lang() {
                    Some(_) => format!("{}?lang={lang}", c.url),
                    None => c.url,
                };
                (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, to),
                        (header::CACHE_CONTROL, "no-store".into()),
                    ],
                )
                    .into_response()
            }
            None => ApiError::internal().into_response(),
        },
        Err(VisitError::NotFound) => message_page(
            &state,
            lang,
            StatusCode::NOT_FOUND,
            "link_not_found_title",
            "link_not_found",
        ),
        Err(VisitError::Inactive) => message_page(
            &state,
            lang,
            StatusCode::GONE,
            "link_inactive_title",
            "link_inactive",
        ),
        Err(VisitError::Failed(e)) => ApiError::from(e).into_response(),
    }
}
