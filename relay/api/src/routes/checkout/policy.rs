//! How checkout answers are served: the settings (who may frame the page, the card form, the
//! limits on what payers may do without a key) and the headers every answer carries (its content
//! security policy, no caching, no referrer).

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

/// How the checkout pages are served.
pub struct CheckoutSettings {
    /// Who may show the page in a frame: CSP `frame-ancestors` sources (see [`frame_ancestors`]).
    pub frame_ancestors: String,
    /// The card form, when a card gateway is configured with a publishable key.
    pub card: Option<CardForm>,
    /// Card attempts per checkout token and client address.
    pub card_attempts: crate::throttle::PayerLimit,
    /// Payment link visits (each may make an invoice) per link and client address.
    pub link_visits: crate::throttle::PayerLimit,
}

impl CheckoutSettings {
    /// Pages framed by nobody, without a card form.
    pub fn new(frame_ancestors: String, card: Option<CardForm>) -> CheckoutSettings {
        CheckoutSettings {
            frame_ancestors,
            card,
            card_attempts: crate::throttle::PayerLimit::cards(),
            link_visits: crate::throttle::PayerLimit::links(),
        }
    }
}

/// The gateway's Stripe.js on the page: where it is loaded from, and the publishable key it is
/// given (never the secret key).
pub struct CardForm {
    pub js_url: String,
    pub publishable_key: String,
    /// The origins the page's policy lets the script talk to and frame.
    origins: String,
}

impl CardForm {
    /// `js_url` must be an http(s) URL (Stripe's `https://js.stripe.com/v3/`, or a test gateway's
    /// shim) and `publishable_key` a `pk_…` key.
    pub fn new(js_url: &str, publishable_key: &str) -> Result<CardForm, String> {
        let url = url::Url::parse(js_url).map_err(|e| format!("stripe_js_url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("stripe_js_url must be an http(s) URL".into());
        }
        let key_ok = publishable_key.starts_with("pk_")
            && publishable_key.len() <= 255
            && publishable_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err("stripe_publishable_key must be a publishable key (pk_…)".into());
        }
        let origin = url.origin().ascii_serialization();
        // Stripe.js itself talks to Stripe's API and frames its 3-D Secure pages.
        let origins = if url.host_str() == Some("js.stripe.com") {
            format!("{origin} https://api.stripe.com https://hooks.stripe.com")
        } else {
            origin
        };
        Ok(CardForm {
            js_url: url.to_string(),
            publishable_key: publishable_key.to_owned(),
            origins,
        })
    }
}

/// The CSP `frame-ancestors` sources of a setting: empty or `none` → `'none'`; `self` → `'self'`;
/// else space- or comma-separated origins (`https://shop.example.com`, `http://127.0.0.1:3000`),
/// each an http(s) scheme and host with an optional port, nothing else.
pub fn frame_ancestors(setting: &str) -> Result<String, String> {
    let items: Vec<&str> = setting
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() || items == ["none"] || items == ["'none'"] {
        return Ok("'none'".into());
    }
    let mut out = Vec::new();
    for item in items {
        if item == "self" || item == "'self'" {
            out.push("'self'".to_owned());
            continue;
        }
        let (scheme, rest) = item.split_once("://").unwrap_or(("", item));
        let host_ok = !rest.is_empty()
            && rest.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*' | '[' | ']')
            });
        if !matches!(scheme, "http" | "https") || !host_ok {
            return Err(format!(
                "checkout_frame_ancestors: {item:?} is not an origin like https://shop.example.com"
            ));
        }
        out.push(item.to_owned());
    }
    Ok(out.join(" "))
}

/// Headers every checkout answer carries: never stored by a cache (the state changes), no
/// referrer, no sniffing, and who may frame it.
pub(crate) fn guard(headers: &mut HeaderMap, csp: &str) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
}

/// The page's policy: its own script and style only, inline SVG, requests to itself, framed only
/// by the configured origins; with a card form, the gateway's Stripe.js may also run, call its
/// gateway and show its frames.
pub(super) fn page_csp(settings: &CheckoutSettings, with_card: bool) -> String {
    let card = settings.card.as_ref().filter(|_| with_card);
    let extra = card.map_or(String::new(), |c| format!(" {}", c.origins));
    let frames = card.map_or("".to_owned(), |c| format!(" frame-src {};", c.origins));
    format!("default-src 'none'; script-src 'self'{extra}; style-src 'self'; img-src 'self' data:; connect-src 'self'{extra};{frames} base-uri 'none'; form-action 'self'; frame-ancestors {fa}", fa = settings.frame_ancestors)
}
pub(crate) const JSON_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// A public JSON answer (the payment request, a choice, a fresh quote): the JSON policy, and
/// readable by any origin (wallet apps).
pub(crate) fn public_json(mut r: Response) -> Response {
    guard(r.headers_mut(), JSON_CSP);
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ancestors_are_origins_or_none() {
        assert_eq!(frame_ancestors("").unwrap(), "'none'");
        assert_eq!(frame_ancestors("none").unwrap(), "'none'");
        assert_eq!(
            frame_ancestors("https://shop.example.com, http://127.0.0.1:3000 self").unwrap(),
            "https://shop.example.com http://127.0.0.1:3000 'self'"
        );
        for bad in [
            "shop.example.com",
            "javascript:alert(1)",
            "https://a.example; script-src *",
            "https://",
            "*",
        ] {
            assert!(frame_ancestors(bad).is_err(), "{bad}");
        }
    }
}
