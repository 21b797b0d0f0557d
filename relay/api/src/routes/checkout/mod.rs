//! The payer's side: `GET /pay/{token}`, the checkout page of an invoice, and
//! `GET /pay/{token}/payment_request`, the same as JSON for wallet apps. No key: the token, 128
//! random bits that are not the invoice id, is what lets a payer in. Nothing the merchant keeps
//! secret (keys, webhook secrets, metadata, order ids) is on either.
//!
//! The page is rendered on the server (minijinja, auto-escaped), so the crypto rails work
//! without JavaScript; its small script adds copy buttons, the countdown and a status kept
//! current by polling the JSON. Every string comes from a locale file (`checkout/locales`),
//! chosen by `?lang=` or `Accept-Language`.

pub mod card;
pub mod choose;
mod policy;
pub mod stream;

use policy::page_csp;
pub use policy::{frame_ancestors, CardForm, CheckoutSettings};
pub(crate) use policy::{guard, public_json, JSON_CSP};

use crate::error::{ApiError, ErrorBody};
use crate::extract::ClientAddress;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use relay_core::{Invoice, InvoiceException, InvoiceStatus, Money, Timestamp};
use relay_engine::view::{InvoiceView, MethodView};
use relay_store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::LazyLock;
use utoipa::ToSchema;

/// The locales the page speaks: (tag, its strings).
static LOCALES: LazyLock<Vec<(&'static str, BTreeMap<String, String>)>> = LazyLock::new(|| {
    [
        ("en", include_str!("../../../checkout/locales/en.toml")),
        (
            "zh-CN",
            include_str!("../../../checkout/locales/zh-CN.toml"),
        ),
    ]
    .into_iter()
    .map(|(tag, text)| {
        // The files are ours and checked by a test: one that does not parse is a build mistake.
        let strings: BTreeMap<String, String> =
            toml::from_str(text).expect("a locale file is a table of strings");
        (tag, strings)
    })
    .collect()
});

static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    env.add_template("page.html", include_str!("../../../checkout/page.html"))
        .expect("the checkout template parses");
    env
});

/// The locale files, for the test that every locale has every string.
pub fn locales() -> Vec<(&'static str, Vec<String>)> {
    LOCALES
        .iter()
        .map(|(tag, s)| (*tag, s.keys().cloned().collect()))
        .collect()
}

/// One locale's strings, falling back to English for a missing one.
struct Strings(&'static BTreeMap<String, String>);

impl Strings {
    fn of(tag: &str) -> Strings {
        let found = LOCALES
            .iter()
            .find(|(t, _)| *t == tag)
            .unwrap_or(&LOCALES[0]);
        Strings(&found.1)
    }

    /// The string `key`, its `{placeholders}` filled in from `args`.
    fn t(&self, key: &str, args: &[(&str, &str)]) -> String {
        let mut s = self
            .0
            .get(key)
            .or_else(|| LOCALES[0].1.get(key))
            .cloned()
            .unwrap_or_else(|| key.to_owned());
        for (name, value) in args {
            s = s.replace(&format!("{{{name}}}"), value);
        }
        s
    }
}

/// `?lang=` first, then the first language of `Accept-Language` (by weight) the page speaks,
/// then English.
fn pick_lang(asked: Option<&str>, accept: Option<&str>) -> &'static str {
    let speak = |tag: &str| -> Option<&'static str> {
        let tag = tag.trim().to_ascii_lowercase();
        if tag.starts_with("zh") {
            Some("zh-CN")
        } else if tag == "en" || tag.starts_with("en-") {
            Some("en")
        } else {
            None
        }
    };
    if let Some(lang) = asked.and_then(speak) {
        return lang;
    }
    let mut wanted: Vec<(f32, &str)> = accept
        .unwrap_or_default()
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let tag = it.next()?.trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse().ok())
                .unwrap_or(1.0);
            Some((q, tag))
        })
        .collect();
    wanted.sort_by(|a, b| b.0.total_cmp(&a.0));
    wanted
        .iter()
        .filter(|(q, _)| *q > 0.0)
        .find_map(|(_, tag)| speak(tag))
        .unwrap_or("en")
}

#[derive(Deserialize)]
pub struct PageQuery {
    lang: Option<String>,
}

impl PageQuery {
    /// The language asked for in the query, if any.
    pub(crate) fn lang(&self) -> Option<&str> {
        self.lang.as_deref()
    }

    /// The language of the answer: `?lang=`, else the request's `Accept-Language`.
    pub(crate) fn lang_with(&self, headers: &HeaderMap) -> &'static str {
        let accept = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        pick_lang(self.lang.as_deref(), accept)
    }
}

/// What the payer sees of an invoice: its state, in words of their language.
struct State_ {
    class: &'static str,
    text: String,
    open: bool,
}

fn state_of(inv: &Invoice, s: &Strings, now: Timestamp) -> State_ {
    let (status, exception) = inv.evaluate(now);
    let currency = inv.price.asset.code.as_str();
    match status {
        InvoiceStatus::Settled => State_ {
            class: "settled",
            text: s.t("status_settled", &[]),
            open: false,
        },
        InvoiceStatus::Expired => State_ {
            class: "expired",
            text: s.t("status_expired", &[]),
            open: false,
        },
        InvoiceStatus::Invalid => State_ {
            class: "invalid",
            text: s.t("status_invalid", &[]),
            open: false,
        },
        // Less than the price has arrived (seen or confirmed): what is still due.
        InvoiceStatus::New | InvoiceStatus::Processing
            if exception == Some(InvoiceException::PaidPartial) =>
        {
            let due = Money {
                asset: inv.price.asset.clone(),
                amount: inv.still_due(),
            };
            State_ {
                class: "partial",
                text: s.t(
                    "status_partial",
                    &[("due", &due.to_decimal_string()), ("currency", currency)],
                ),
                open: true,
            }
        }
        InvoiceStatus::Processing => {
            let pending = inv
                .payments
                .iter()
                .filter(|p| p.status.is_live() && !p.status.is_final())
                .max_by_key(|p| p.seen_at);
            let (conf, req) = pending.map_or((0, 1), |p| {
                (p.confirmations, inv.confirmations_required(p.method))
            });
            State_ {
                class: "processing",
                text: s.t(
                    "status_processing",
                    &[
                        ("confirmations", &conf.to_string()),
                        ("required", &req.to_string()),
                    ],
                ),
                open: true,
            }
        }
        InvoiceStatus::New => State_ {
            class: "new",
            text: s.t("status_new", &[]),
            open: true,
        },
    }
}

/// The public JSON of a payment request: what to pay on each rail, the state and the expiry.
#[derive(Serialize, ToSchema)]
pub struct PaymentRequestView {
    pub object: &'static str,
    /// The merchant's name.
    pub merchant: String,
    pub description: Option<String>,
    /// The price in major units, e.g. `"25.00"`.
    pub amount: String,
    pub currency: String,
    /// `new`, `processing`, `settled`, `expired` or `invalid`.
    pub status: String,
    /// `paid_partial`, `paid_over`, `paid_late` or null.
    pub exception: Option<String>,
    /// `new`, `partial`, `processing`, `settled`, `expired` or `invalid`, for display.
    pub status_class: String,
    /// The state in words, in the language asked for (`?lang=` or `Accept-Language`).
    pub status_text: String,
    /// Whether the request can still be paid.
    pub open: bool,
    /// What is still due, in the price's currency.
    pub amount_due: String,
    pub expires_at: String,
    /// What to pay on each offered rail (bitcoin: address, amount, BIP21 URI; ethereum: the
    /// escrow call and its EIP-681 URI; card: the PaymentIntent's client secret for Stripe.js).
    pub payment_methods: BTreeMap<String, MethodView>,
    /// A QR code (inline SVG) of each crypto method's `uri`, for display. On bitcoin, once part
    /// is paid, the `uri` and its code are for what is still due.
    pub qr_codes: BTreeMap<String, String>,
    /// Where the merchant sends the payer once paid; present once the invoice is settled.
    pub redirect_url: Option<String>,
    /// The words of the link back to the merchant, in the language asked for.
    pub redirect_text: Option<String>,
}

/// The merchant's return address, once the invoice is paid.
fn return_link<'a>(inv: &'a Invoice, st: &State_) -> Option<&'a str> {
    (st.class == "settled")
        .then_some(inv.redirect_url.as_deref())
        .flatten()
}

/// Turns away a payer the merchant's block lists name (its address, the invoice's email), before
/// it is shown how to pay: 403 `payment_blocked`.
pub(crate) async fn door<S: Store>(
    state: &AppState<S>,
    inv: &Invoice,
    client: Option<std::net::IpAddr>,
) -> Result<(), ApiError> {
    let address = client.map(|c| c.to_string());
    match state.turned_away(inv, address.as_deref()).await? {
        None => Ok(()),
        Some(rule) => {
            tracing::info!(target: "relay::risk", invoice = %inv.id, %rule, "payer turned away at the checkout page");
            Err(blocked())
        }
    }
}

/// What a payer the merchant's rules refuse is told (never which rule).
pub(crate) fn blocked() -> ApiError {
    ApiError::invalid(
        "payment_blocked",
        "this payment cannot be accepted; nothing was charged",
    )
    .with_status(StatusCode::FORBIDDEN)
}

/// Finds the invoice of a checkout token and its merchant's name.
async fn load<S: Store>(
    state: &AppState<S>,
    token: &str,
) -> Result<Option<(Invoice, String)>, ApiError> {
    let Some(inv) = state.checkout_invoice(token).await? else {
        return Ok(None);
    };
    let merchant = state
        .store
        .merchant(&inv.merchant_id)
        .await?
        .map(|m| m.name)
        .unwrap_or_default();
    Ok(Some((inv, merchant)))
}

fn request_view(
    inv: &Invoice,
    merchant: String,
    s: &Strings,
    now: Timestamp,
    rates: &dyn relay_core::RateSource,
) -> PaymentRequestView {
    let st = state_of(inv, s, now);
    let back = return_link(inv, &st).map(|url| {
        (
            url.to_owned(),
            s.t("return_to_merchant", &[("merchant", &merchant)]),
        )
    });
    let view = InvoiceView::for_payer(inv, now, rates);
    let due = Money {
        asset: inv.price.asset.clone(),
        amount: inv.still_due(),
    };
    PaymentRequestView {
        object: "payment_request",
        merchant,
        description: inv.description.clone(),
        amount: view.amount,
        currency: view.currency,
        status: view.status,
        exception: view.exception,
        status_class: st.class.to_owned(),
        status_text: st.text,
        open: st.open,
        amount_due: due.to_decimal_string(),
        expires_at: view.expires_at,
        qr_codes: view
            .payment_methods
            .iter()
            .filter_map(|(id, m)| Some((id.clone(), qr_svg(m.uri.as_deref()?))))
            .collect(),
        payment_methods: view.payment_methods,
        redirect_url: back.as_ref().map(|b| b.0.clone()),
        redirect_text: back.map(|b| b.1),
    }
}

/// A QR code of `text` as inline SVG.
fn qr_svg(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color>()
                .min_dimensions(240, 240)
                .quiet_zone(true)
                .build();
            // Inline in HTML: without the XML declaration.
            match svg.find("<svg") {
                Some(at) => svg[at..].to_owned(),
                None => svg,
            }
        }
        Err(_) => String::new(),
    }
}

/// The checkout page of an invoice (HTML).
pub async fn page<S: Store>(
    State(state): State<AppState<S>>,
    Path(token): Path<String>,
    Query(q): Query<PageQuery>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lang = q.lang_with(&headers);
    let s = Strings::of(lang);
    let now = state.clock.now();
    let Some((inv, merchant)) = load(&state, &token).await? else {
        return Ok(message_page(
            &state,
            lang,
            StatusCode::NOT_FOUND,
            "not_found_title",
            "not_found",
        ));
    };
    if door(&state, &inv, client).await.is_err() {
        return Ok(message_page(
            &state,
            lang,
            StatusCode::FORBIDDEN,
            "blocked_title",
            "blocked",
        ));
    }
    let st = state_of(&inv, &s, now);
    let view = InvoiceView::for_payer(&inv, now, state.rates.as_ref());
    let currency = view.currency.clone();
    let methods: Vec<serde_json::Value> = ["bitcoin", "ethereum"]
        .into_iter()
        .filter_map(|id| {
            let m = view.payment_methods.get(id)?;
            let name = s.t(&format!("method_{id}"), &[]);
            if m.address_on_demand == Some(true) {
                // The address is derived when the payer asks for it: a form, no script needed.
                return Some(serde_json::json!({
                    "id": id,
                    "name": name,
                    "asset_amount": s.t("asset_amount", &[("amount", &m.amount), ("asset", &m.asset)]),
                    "rate": s.t("rate", &[("asset", &m.asset), ("rate", &m.rate), ("currency", &currency)]),
                    "choose_url": format!("/pay/{token}/methods/{id}?lang={lang}"),
                }));
            }
            let uri = m.uri.clone()?;
            Some(serde_json::json!({
                "id": id,
                "name": name,
                "asset_amount": s.t("asset_amount", &[("amount", &m.amount), ("asset", &m.asset)]),
                "rate": s.t("rate", &[("asset", &m.asset), ("rate", &m.rate), ("currency", &currency)]),
                "amount": m.amount,
                "address": m.address.clone().or_else(|| m.escrow.clone()),
                "uri": uri,
                "qr": qr_svg(&uri),
                "note": (id == "ethereum").then(|| s.t("escrow_note", &[])),
            }))
        })
        .collect();
    // The card form: where the relay has a gateway with a publishable key, and the invoice takes
    // a card now (nothing paid yet, still open).
    let card = state
        .checkout
        .card
        .as_ref()
        .filter(|_| inv.card_payable(now).is_ok())
        .map(|c| {
            serde_json::json!({
                "js_url": c.js_url,
                "key": c.publishable_key,
                "pay_url": format!("/pay/{token}/card"),
                "name": s.t("method_card", &[]),
            })
        });
    let strings: BTreeMap<&str, String> = [
        "card_details",
        "card_pay",
        "card_declined",
        "card_failed",
        "card_sent",
        "card_needs_js",
        "show_address",
        "address_on_demand",
        "amount_due",
        "pay_with",
        "scan",
        "address",
        "amount",
        "uri",
        "copy",
        "copied",
        "open_wallet",
        "qr_label",
        "expires_in",
        "status",
        "language",
    ]
    .into_iter()
    .map(|k| (k, s.t(k, &[])))
    .collect();
    let left = (inv.expires_at.0 - now.0).max(0);
    let ctx = serde_json::json!({
        "lang": lang,
        "t": strings,
        "title": s.t("title", &[("merchant", &merchant)]),
        "description": inv.description,
        "amount": view.amount,
        "currency": currency,
        "status_class": st.class,
        "status_text": st.text,
        "open": st.open,
        "expires_at": view.expires_at,
        "expires_unix": inv.expires_at.0,
        "expires_text": format!("{}:{:02}", left / 60, left % 60),
        "status_url": format!("/pay/{token}/payment_request"),
        "events_url": format!("/pay/{token}/events"),
        "return_url": return_link(&inv, &st),
        "return_text": s.t("return_to_merchant", &[("merchant", &merchant)]),
        "methods": methods,
        "card": card,
    });
    let body = TEMPLATES
        .get_template("page.html")
        .and_then(|t| t.render(ctx))
        .map_err(|e| {
            tracing::error!(target: "relay::checkout", error = %e, "rendering the checkout page");
            ApiError::internal()
        })?;
    let mut r = html(body).into_response();
    guard(r.headers_mut(), &page_csp(&state.checkout, card.is_some()));
    Ok(r)
}

/// A short page that only says something (a payment request or link not found, a link
/// deactivated), in the payer's language.
pub(crate) fn message_page<S>(
    state: &AppState<S>,
    lang: &'static str,
    status: StatusCode,
    title: &str,
    text: &str,
) -> Response {
    let s = Strings::of(lang);
    let t = minijinja::HtmlEscape(&s.t(title, &[])).to_string();
    let m = minijinja::HtmlEscape(&s.t(text, &[])).to_string();
    let body = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t}</title><link rel=\"stylesheet\" href=\"/checkout-assets/checkout.css\"></head><body><main><header><h1>{t}</h1><p>{m}</p></header></main></body></html>"
    );
    let mut r = (status, html(body)).into_response();
    guard(r.headers_mut(), &page_csp(&state.checkout, false));
    r
}

fn html(body: String) -> ([(header::HeaderName, &'static str); 1], String) {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body)
}

/// The payment request of a checkout page, for wallet apps: what to pay on each rail, the state
/// (in words of `?lang=` or `Accept-Language`) and the expiry. Public: no key, any origin.
#[utoipa::path(
    get, path = "/pay/{token}/payment_request", operation_id = "get_payment_request", tag = "checkout",
    params(
        ("token" = String, Path, description = "The checkout token, from the invoice's `checkout_url`"),
        ("lang" = Option<String>, Query, description = "`en` or `zh-CN`"),
    ),
    responses(
        (status = 200, description = "The payment request", body = PaymentRequestView,
            headers(("Access-Control-Allow-Origin" = String, description = "`*`: any wallet app may read it"))),
        (status = 403, description = "The merchant's rules turn this payer away (`payment_blocked`)", body = ErrorBody,
            headers(("Access-Control-Allow-Origin" = String, description = "`*`"))),
        (status = 404, description = "No payment request has this token (`resource_missing`)", body = ErrorBody,
            headers(("Access-Control-Allow-Origin" = String, description = "`*`"))),
    ),
    security(())
)]
pub async fn payment_request<S: Store>(
    State(state): State<AppState<S>>,
    Path(token): Path<String>,
    Query(q): Query<PageQuery>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
) -> Response {
    let s = Strings::of(q.lang_with(&headers));
    let r = match load(&state, &token).await {
        Ok(Some((inv, merchant))) => match door(&state, &inv, client).await {
            Ok(()) => Json(request_view(
                &inv,
                merchant,
                &s,
                state.clock.now(),
                state.rates.as_ref(),
            ))
            .into_response(),
            Err(e) => e.into_response(),
        },
        Ok(None) => ApiError::not_found("payment request").into_response(),
        Err(e) => e.into_response(),
    };
    public_json(r)
}

/// The page's stylesheet and script: fixed files, cached for a day.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "checkout.css" => (
            include_str!("../../../checkout/checkout.css"),
            "text/css; charset=utf-8",
        ),
        "checkout.js" => (
            include_str!("../../../checkout/checkout.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return ApiError::not_found("file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_comes_from_the_query_then_accept_language_then_english() {
        assert_eq!(pick_lang(Some("zh-CN"), Some("en")), "zh-CN");
        assert_eq!(pick_lang(Some("xx"), Some("zh-Hans-CN,zh;q=0.9")), "zh-CN");
        assert_eq!(pick_lang(None, Some("fr;q=1, zh;q=0.8, en;q=0.5")), "zh-CN");
        assert_eq!(pick_lang(None, Some("zh;q=0.2, en-GB;q=0.9")), "en");
        assert_eq!(pick_lang(None, Some("de, fr")), "en");
        assert_eq!(pick_lang(None, Some("zh;q=0")), "en");
        assert_eq!(pick_lang(None, None), "en");
    }

    #[test]
    fn every_locale_has_every_string_and_placeholders_are_filled() {
        let all = locales();
        let (_, en) = &all[0];
        for (tag, keys) in &all {
            assert_eq!(keys, en, "{tag} has other strings than en");
        }
        let zh = Strings::of("zh-CN");
        assert_eq!(zh.t("title", &[("merchant", "店")]), "向 店 付款");
        assert!(!Strings::of("en")
            .t("status_partial", &[("due", "1.00"), ("currency", "USD")])
            .contains('{'));
    }

    #[test]
    fn a_qr_code_is_inline_svg() {
        let svg = qr_svg("bitcoin:bcrt1qexample?amount=0.001");
        assert!(svg.starts_with("<svg"), "{svg}");
    }
}
