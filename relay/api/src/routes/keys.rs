//! `/v1/api_keys`: a merchant's API keys, each with scopes (like Stripe's restricted keys). A
//! key's secret is in the response that creates or rolls it, and nowhere after: the relay keeps
//! only its hash. A revoked or rolled secret is refused from the moment the answer is sent.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiPath, AuthKey, RawBody};
use crate::view::{rfc3339, ListView};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use relay_core::access::{last4, MAX_KEYS};
use relay_core::{ApiKey, KeyRecord, Scope};
use relay_store::{Commit, Store};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// What the key is for (1 to 100 printable characters).
    pub name: String,
    /// Any of `read`, `invoices:write`, `refunds:write`, `settlements:write`, `webhooks:write`, `risk:write`,
    /// `keys:write`; none beyond the scopes of the key making it.
    pub scopes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    /// `key_…`
    pub id: String,
    pub object: &'static str,
    pub name: String,
    pub scopes: Vec<&'static str>,
    /// The secret's last four characters (null for keys made before keys had names).
    pub last4: Option<String>,
    pub created_at: String,
    pub rolled_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The key itself (`rk_…`): only in the answer that creates or rolls it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl KeyView {
    fn of(k: &KeyRecord, secret: Option<&ApiKey>) -> KeyView {
        KeyView {
            id: k.id.clone(),
            object: "api_key",
            name: k.name.clone(),
            scopes: k.scopes.iter().map(|s| s.as_str()).collect(),
            last4: k.last4.clone(),
            created_at: rfc3339(k.created_at),
            rolled_at: k.rolled_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            secret: secret.map(|s| s.expose_secret().to_owned()),
        }
    }
}

fn parse_scopes(given: &[String]) -> Result<Vec<Scope>, ApiError> {
    if given.is_empty() {
        return Err(
            ApiError::invalid("parameter_invalid", "a key needs at least one scope")
                .with_param("scopes"),
        );
    }
    let mut scopes = Vec::new();
    for (i, s) in given.iter().enumerate() {
        let scope = Scope::parse(s).ok_or_else(|| {
            ApiError::invalid("parameter_invalid", format!("{s:?} is not a scope"))
                .with_param(format!("scopes[{i}]"))
        })?;
        scopes.push(scope);
    }
    Ok(KeyRecord::normalize(&scopes))
}

fn conflict() -> ApiError {
    ApiError::invalid(
        "api_key_changed",
        "the key was changed by another request; read it again",
    )
    .with_status(StatusCode::CONFLICT)
}

/// Create an API key with some or all of the scopes of the key making it. The secret is in this
/// answer only.
#[utoipa::path(
    post, path = "/v1/api_keys", operation_id = "create_api_key", tag = "api_keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 200, description = "The key, with its secret", body = KeyView, links(
            ("RollKey" = (operation_id = "roll_api_key", parameters(("id" = "$response.body#/id")))),
            ("RevokeKey" = (operation_id = "revoke_api_key", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 403, description = "A scope the key making it does not have", body = ErrorBody),
        (status = 409, description = "Too many keys", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create<S: Store>(
    State(state): State<AppState<S>>,
    AuthKey(merchant, caller): AuthKey,
    RawBody(body): RawBody,
) -> Result<Json<KeyView>, ApiError> {
    let req: CreateKeyRequest = parse_json(&body)?;
    let name_len = req.name.chars().count();
    if name_len == 0 || name_len > 100 || req.name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "a name of 1 to 100 printable characters",
        )
        .with_param("name"));
    }
    let scopes = parse_scopes(&req.scopes)?;
    if !caller.covers(&scopes) {
        return Err(ApiError::invalid(
            "scope_exceeds_key",
            "a key can only make keys with scopes it has itself",
        )
        .with_param("scopes")
        .with_status(StatusCode::FORBIDDEN));
    }
    let _changing = state.key_changes.lock().await;
    let active = state
        .store
        .api_keys(&merchant.id)
        .await?
        .iter()
        .filter(|k| k.is_active())
        .count();
    if active >= MAX_KEYS {
        return Err(ApiError::invalid(
            "too_many_api_keys",
            format!("at most {MAX_KEYS} keys in use; revoke one first"),
        )
        .with_status(StatusCode::CONFLICT));
    }
    let secret = ApiKey::from_entropy(rand::random());
    let record = KeyRecord {
        id: format!("key_{}", hex::encode(state.ids.next())),
        merchant_id: merchant.id.clone(),
        name: req.name,
        scopes,
        hash: secret.hash(),
        last4: Some(last4(&secret)),
        created_at: state.clock.now(),
        rolled_at: None,
        revoked_at: None,
    };
    match state.store.insert_api_key(&record).await? {
        Commit::Done => {}
        _ => return Err(conflict()),
    }
    state.store.durable().await?;
    Ok(Json(KeyView::of(&record, Some(&secret))))
}

/// List the merchant's keys, revoked ones included (never their secrets).
#[utoipa::path(
    get, path = "/v1/api_keys", operation_id = "list_api_keys", tag = "api_keys",
    responses((status = 200, description = "Every key", body = ListView<KeyView>)),
    security(("api_key" = []))
)]
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    AuthKey(merchant, _): AuthKey,
) -> Result<Json<ListView<KeyView>>, ApiError> {
    let data = state
        .store
        .api_keys(&merchant.id)
        .await?
        .iter()
        .map(|k| KeyView::of(k, None))
        .collect();
    Ok(Json(ListView {
        object: "list",
        data,
        has_more: false,
    }))
}

/// Looks up a key of the merchant's that is in use.
async fn active_key<S: Store>(
    state: &AppState<S>,
    merchant: &relay_core::MerchantId,
    id: &str,
) -> Result<KeyRecord, ApiError> {
    let key = state
        .store
        .api_keys(merchant)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::not_found("API key"))?;
    if !key.is_active() {
        return Err(ApiError::invalid("api_key_revoked", "the key is revoked")
            .with_status(StatusCode::CONFLICT));
    }
    Ok(key)
}

/// Give a key a new secret, with the same id and scopes; the old secret stops working at once.
/// The new secret is in this answer only.
#[utoipa::path(
    post, path = "/v1/api_keys/{id}/roll", operation_id = "roll_api_key", tag = "api_keys",
    params(("id" = String, Path, description = "`key_…`")),
    responses(
        (status = 200, description = "The key, with its new secret", body = KeyView),
        (status = 403, description = "The key has scopes the caller's key does not", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key is revoked, or changed meanwhile", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn roll<S: Store>(
    State(state): State<AppState<S>>,
    AuthKey(merchant, caller): AuthKey,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<KeyView>, ApiError> {
    let _changing = state.key_changes.lock().await;
    let old = active_key(&state, &merchant.id, &id).await?;
    if !caller.covers(&old.scopes) {
        return Err(ApiError::invalid(
            "scope_exceeds_key",
            "a key can only roll keys whose scopes it has itself",
        )
        .with_status(StatusCode::FORBIDDEN));
    }
    let secret = ApiKey::from_entropy(rand::random());
    let new = KeyRecord {
        hash: secret.hash(),
        last4: Some(last4(&secret)),
        rolled_at: Some(state.clock.now()),
        ..old.clone()
    };
    match state.store.replace_api_key(&old, &new).await? {
        Commit::Done => {}
        _ => return Err(conflict()),
    }
    state.store.durable().await?;
    Ok(Json(KeyView::of(&new, Some(&secret))))
}

/// Revoke a key: from this answer on, it gets 401. The merchant's last key that can manage keys
/// cannot be revoked.
#[utoipa::path(
    post, path = "/v1/api_keys/{id}/revoke", operation_id = "revoke_api_key", tag = "api_keys",
    params(("id" = String, Path, description = "`key_…`")),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key is revoked already, or it is the last one that can manage keys", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn revoke<S: Store>(
    State(state): State<AppState<S>>,
    AuthKey(merchant, _): AuthKey,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<KeyView>, ApiError> {
    let _changing = state.key_changes.lock().await;
    let old = active_key(&state, &merchant.id, &id).await?;
    let managers = state
        .store
        .api_keys(&merchant.id)
        .await?
        .iter()
        .filter(|k| k.is_active() && k.scopes.contains(&Scope::KeysWrite))
        .count();
    if old.scopes.contains(&Scope::KeysWrite) && managers <= 1 {
        return Err(ApiError::invalid(
            "last_key_manager",
            "this is the last key that can manage keys: create another one first",
        )
        .with_status(StatusCode::CONFLICT));
    }
    let new = KeyRecord {
        revoked_at: Some(state.clock.now()),
        ..old.clone()
    };
    match state.store.replace_api_key(&old, &new).await? {
        Commit::Done => {}
        _ => return Err(conflict()),
    }
    state.store.durable().await?;
    Ok(Json(KeyView::of(&new, None)))
}
