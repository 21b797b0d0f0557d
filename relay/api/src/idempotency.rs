//! `Idempotency-Key` handling: the first response to a key is stored in the same transaction as the
//! decision it reports, and replayed for every retry with the same request. The same key with a
//! different request is refused with 409 `idempotency_key_reused`.

use crate::error::ApiError;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use relay_store::IdempotencyRecord;
use sha2::{Digest, Sha256};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The key sent by the client, validated: 1 to 255 visible ASCII characters.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic()));
    match s {
        Some(s) => Ok(Some(s.to_owned())),
        None => Err(ApiError::invalid(
            "idempotency_key_invalid",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
        .with_param("Idempotency-Key")),
    }
}

pub fn fingerprint(method: &Method, path: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

/// The answer for a key that was used before.
pub fn replay(record: &IdempotencyRecord, fingerprint: &[u8; 32]) -> Response {
    if &record.fingerprint != fingerprint {
        return ApiError::invalid(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request",
        )
        .with_status(StatusCode::CONFLICT)
        .into_response();
    }
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    let mut resp = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        record.body.clone(),
    )
        .into_response();
    resp.headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    resp
}
