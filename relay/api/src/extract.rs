//! Request extractors whose rejections are [`ApiError`]s: the authenticated merchant, and the raw
//! body parsed as JSON with the failing field named.

use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use relay_core::access::required_scope;
use relay_core::{ApiKey, KeyRecord, Merchant};
use relay_store::Store;
use serde::de::DeserializeOwned;

/// The merchant whose API key authorised the request. Extracting it checks that the key has
/// the scope the route needs (403 `scope_missing` otherwise).
pub struct AuthMerchant(pub Merchant);

/// The merchant and the key that authorised the request (with its scope checked, as for
/// [`AuthMerchant`]).
pub struct AuthKey(pub Merchant, pub KeyRecord);

impl<S: Store> FromRequestParts<AppState<S>> for AuthMerchant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Self, Self::Rejection> {
        let AuthKey(merchant, _) = AuthKey::from_request_parts(parts, state).await?;
        Ok(AuthMerchant(merchant))
    }
}

impl<S: Store> FromRequestParts<AppState<S>> for AuthKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let peer = match (&state.auth_failures, peer) {
            (Some(guard), Some(ip)) => Some(guard.client(ip, &parts.headers)),
            _ => peer,
        };
        if let (Some(guard), Some(ip)) = (&state.auth_failures, peer) {
            guard.check(ip)?;
        }
        let failed = |e: ApiError| match (&state.auth_failures, peer) {
            (Some(guard), Some(ip)) => guard.failed(ip).err().unwrap_or(e),
            _ => e,
        };
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "api_key_missing",
                    "send your API key as `Authorization: Bearer <key>`",
                )
            })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 128)
            .ok_or_else(|| {
                failed(ApiError::unauthorized(
                    "api_key_invalid",
                    "the Authorization header must be `Bearer <key>`",
                ))
            })?;
        let hash = ApiKey::from_presented(key).hash();
        let Some((merchant, record)) = state.store.key_by_hash(&hash).await? else {
            return Err(failed(ApiError::unauthorized(
                "api_key_invalid",
                "the API key is not valid",
            )));
        };
        if let Some(t) = &state.throttle {
            t.check(&merchant.id)?;
        }
        let route = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(|p| p.as_str())
            .unwrap_or_default();
        let needed = required_scope(parts.method.as_str(), route);
        if !record.allows(needed) {
            let what = needed.map_or("every scope".to_owned(), |s| {
                format!("the `{}` scope", s.as_str())
            });
            return Err(ApiError::invalid(
                "scope_missing",
                format!("this API key does not have {what}"),
            )
            .with_status(StatusCode::FORBIDDEN));
        }
        Ok(AuthKey(merchant, record))
    }
}

/// The client's address, for limits on what payers may do without a key: the TCP peer's, or
/// behind a trusted proxy the one it names (see [`crate::throttle::AuthFailures::client`]);
/// `None` where the listener gives no peer (tests calling the router directly).
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl<S: Store> FromRequestParts<AppState<S>> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddress(peer.map(|ip| match &state.auth_failures {
            Some(guard) => guard.client(ip, &parts.headers),
            None => ip,
        })))
    }
}

/// Path parameters; a path that does not decode (e.g. invalid UTF-8) gets the JSON 400
/// `path_invalid` like every other error, not axum's plain-text one.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::invalid(
                "path_invalid",
                format!("the path is not valid: {}", rejection.body_text()),
            )),
        }
    }
}

/// The request body as bytes, limited in size (413 `body_too_large` beyond the limit).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(
                ApiError::invalid("body_too_large", "the request body is too large")
                    .with_status(StatusCode::PAYLOAD_TOO_LARGE),
            ),
            Err(rejection) => Err(ApiError::invalid(
                "body_unreadable",
                format!("the request body could not be read: {rejection}"),
            )),
        }
    }
}

/// Parses JSON, naming the parameter at fault: `invalid_json` for syntax, `parameter_missing`,
/// `parameter_unknown` and `parameter_invalid` for shape.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid(
                "invalid_json",
                format!("the body is not valid JSON: {inner}"),
            );
        }
        let msg = inner.to_string();
        let (code, param) = if let Some(rest) = msg.strip_prefix("missing field `") {
            (
                "parameter_missing",
                rest.split('`').next().unwrap_or("").to_owned(),
            )
        } else if let Some(rest) = msg.strip_prefix("unknown field `") {
            (
                "parameter_unknown",
                rest.split('`').next().unwrap_or("").to_owned(),
            )
        } else {
            ("parameter_invalid", path)
        };
        let err = ApiError::invalid(code, msg);
        if param.is_empty() || param == "." {
            err
        } else {
            err.with_param(param)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::invalid("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        amount: String,
        n: Option<u32>,
    }

    #[test]
    fn json_errors_name_the_parameter() {
        let e = parse_json::<Req>(b"{").unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let e = parse_json::<Req>(b"{}").unwrap_err();
        assert_eq!(
            (e.code, e.param.as_deref()),
            ("parameter_missing", Some("amount"))
        );
        let e = parse_json::<Req>(br#"{"amount":"1","x":1}"#).unwrap_err();
        assert_eq!(
            (e.code, e.param.as_deref()),
            ("parameter_unknown", Some("x"))
        );
        let e = parse_json::<Req>(br#"{"amount":25.5}"#).unwrap_err();
        assert_eq!(
            (e.code, e.param.as_deref()),
            ("parameter_invalid", Some("amount"))
        );
        let e = parse_json::<Req>(br#"{"amount":"1","n":-1}"#).unwrap_err();
        assert_eq!(
            (e.code, e.param.as_deref()),
            ("parameter_invalid", Some("n"))
        );
        let e = parse_json::<Req>(br#"{"amount":"1"} trailing"#).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        assert!(parse_json::<Req>(br#"{"amount":"1"}"#).is_ok());
    }
}
