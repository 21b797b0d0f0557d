//! `POST /pay/{token}/methods/{method}`: the payer chose a method. For bitcoin on an invoice
//! whose address is derived on demand, this derives it. From the page's form (no JavaScript
//! needed) the answer is a redirect back to the page, showing the address; from a wallet app it
//! is the payment request as JSON. Public, like the page: any origin may call it.

use super::{load, public_json, request_view, PageQuery, Strings};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ClientAddress;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use relay_core::Method;
use relay_engine::checkout::ChooseError;
use relay_store::Store;

/// Choose how to pay a payment request. Choosing bitcoin on a request whose address is derived
/// on demand (`address_on_demand`) derives it; choosing again gives the same address.
#[utoipa::path(
    post, path = "/pay/{token}/methods/{method}", operation_id = "choose_payment_method", tag = "checkout",
    params(
        ("token" = String, Path, description = "The checkout token, from the invoice's `checkout_url`"),
        ("method" = String, Path, description = "`bitcoin`, `ethereum` or `card`"),
        ("lang" = Option<String>, Query, description = "`en` or `zh-CN`"),
    ),
    responses(
        (status = 200, description = "The payment request, with what to pay on the chosen method", body = super::PaymentRequestView,
            headers(("Access-Control-Allow-Origin" = String, description = "`*`: any wallet app may call it"))),
        (status = 303, description = "From the page's own form (`application/x-www-form-urlencoded`): back to the page, at the method"),
        (status = 400, description = "Not a method (`payment_method_unsupported`)", body = ErrorBody),
        (status = 403, description = "The merchant's rules turn this payer away (`payment_blocked`)", body = ErrorBody),
        (status = 404, description = "No payment request has this token (`resource_missing`)", body = ErrorBody),
        (status = 409, description = "The request does not offer this method (`payment_method_not_offered`) or can no longer be paid (`invoice_not_open`)", body = ErrorBody),
        (status = 422, description = "The merchant's descriptor gives no address", body = ErrorBody),
    ),
    security(())
)]
pub async fn choose<S: Store>(
    State(state): State<AppState<S>>,
    Path((token, method)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
) -> Response {
    let lang = q.lang_with(&headers);
    let from_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let r = match chosen(&state, &token, &method, client).await {
        Ok(()) if from_form => {
            let to = format!("/pay/{token}?lang={lang}#{method}");
            (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
        }
        Ok(()) => match load(&state, &token).await {
            Ok(Some((inv, merchant))) => Json(request_view(
                &inv,
                merchant,
                &Strings::of(lang),
                state.clock.now(),
                state.rates.as_ref(),
            ))
            .into_response(),
            Ok(None) => ApiError::not_found("payment request").into_response(),
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    };
    public_json(r)
}

async fn chosen<S: Store>(
    state: &AppState<S>,
    token: &str,
    method: &str,
    client: Option<std::net::IpAddr>,
) -> Result<(), ApiError> {
    let method = Method::parse(method).ok_or_else(|| {
        ApiError::invalid(
            "payment_method_unsupported",
            "the method must be bitcoin, ethereum or card",
        )
        .with_param("method")
    })?;
    let conflict = |code, message: &str| {
        ApiError::invalid(code, message.to_owned()).with_status(StatusCode::CONFLICT)
    };
    // Turned away before an address is derived for the payer.
    if let Some(inv) = state.checkout_invoice(token).await? {
        super::door(state, &inv, client).await?;
    }
    match state.choose_method(token, method).await {
        Ok(_) => Ok(()),
        Err(ChooseError::NotFound) => Err(ApiError::not_found("payment request")),
        Err(ChooseError::NotOffered) => Err(conflict(
            "payment_method_not_offered",
            "this payment request does not offer that method",
        )),
        Err(ChooseError::NotOpen) => Err(conflict(
            "invoice_not_open",
            "this payment request is paid, expired or canceled",
        )),
        Err(ChooseError::Failed(e)) => Err(e.into()),
    }
}

/// Quote a payment request again at the current rates, for a new quote lifetime (see
/// `quote_expires_at`), while nothing has been paid. Public, like the page.
#[utoipa::path(
    post, path = "/pay/{token}/quote", operation_id = "refresh_payment_request_quote", tag = "checkout",
    params(
        ("token" = String, Path, description = "The checkout token, from the invoice's `checkout_url`"),
        ("lang" = Option<String>, Query, description = "`en` or `zh-CN`"),
    ),
    responses(
        (status = 200, description = "The payment request with its new quotes", body = super::PaymentRequestView,
            headers(("Access-Control-Allow-Origin" = String, description = "`*`"))),
        (status = 404, description = "No payment request has this token (`resource_missing`)", body = ErrorBody),
        (status = 409, description = "Something was paid already, or it can no longer be paid (`quote_not_refreshable`)", body = ErrorBody),
        (status = 422, description = "No rate for one of its methods (`rate_unavailable`)", body = ErrorBody),
    ),
    security(())
)]
pub async fn refresh<S: Store>(
    State(state): State<AppState<S>>,
    Path(token): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = q.lang_with(&headers);
    let refreshed = async {
        let (inv, merchant) = load(&state, &token)
            .await?
            .ok_or_else(|| ApiError::not_found("payment request"))?;
        let inv = state.refresh_quote(&inv.id).await?;
        Ok::<_, ApiError>(request_view(
            &inv,
            merchant,
            &Strings::of(lang),
            state.clock.now(),
            state.rates.as_ref(),
        ))
    }
    .await;
    let r = match refreshed {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    };
    public_json(r)
}
