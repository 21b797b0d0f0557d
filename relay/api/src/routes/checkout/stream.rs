//! `GET /pay/{token}/events`: the payment request's state as it changes, over Server-Sent Events.

use super::{guard, load, request_view, PageQuery, Strings, JSON_CSP};
use crate::error::{ApiError, ErrorBody};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use relay_store::Store;

/// How often a live status stream looks at the invoice.
const STREAM_LOOK: std::time::Duration = std::time::Duration::from_millis(500);
/// How long one stream lasts; the browser's EventSource connects again by itself.
const STREAM_LIFE: std::time::Duration = std::time::Duration::from_secs(300);

/// The state of a checkout page as it changes, over Server-Sent Events: a `status` event with the
/// payment request at once, then each time its state changes, until it can no longer be paid (or
/// after five minutes; the browser reconnects). Public, like the page.
#[utoipa::path(
    get, path = "/pay/{token}/events", operation_id = "stream_payment_request", tag = "checkout",
    params(
        ("token" = String, Path, description = "The checkout token, from the invoice's `checkout_url`"),
        ("lang" = Option<String>, Query, description = "`en` or `zh-CN`"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `event: status`, `data:` a payment request (as `GET /pay/{token}/payment_request`), at once and on every change", content_type = "text/event-stream", body = String),
        (status = 404, description = "No payment request has this token (`resource_missing`)", body = ErrorBody),
    ),
    security(())
)]
pub async fn events<S: Store>(
    State(state): State<AppState<S>>,
    Path(token): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let lang = q.lang_with(&headers);
    match load(&state, &token).await {
        Ok(Some(_)) => {}
        Ok(None) => return ApiError::not_found("payment request").into_response(),
        Err(e) => return e.into_response(),
    }
    let started = std::time::Instant::now();
    // (state, token, what was last sent, whether the stream is over)
    let seed = (state, token, None::<String>, false);
    let stream = futures_util::stream::unfold(seed, move |(state, token, last, over)| async move {
        if over {
            return None;
        }
        loop {
            if started.elapsed() > STREAM_LIFE {
                return None;
            }
            let s = Strings::of(lang);
            let view = match load(&state, &token).await {
                Ok(Some((inv, merchant))) => {
                    request_view(&inv, merchant, &s, state.clock.now(), state.rates.as_ref())
                }
                // Gone or unreadable for now: try again at the next look.
                _ => {
                    tokio::time::sleep(STREAM_LOOK).await;
                    continue;
                }
            };
            let key = format!(
                "{}|{}|{}",
                view.status_class, view.status_text, view.amount_due
            );
            if last.as_deref() != Some(key.as_str()) {
                let done = !view.open;
                let event = Event::default().event("status").json_data(&view);
                return Some((event, (state, token, Some(key), done)));
            }
            tokio::time::sleep(STREAM_LOOK).await;
        }
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response();
    guard(r.headers_mut(), JSON_CSP);
    r
}
