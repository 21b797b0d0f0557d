//! `GET /v1/rates`: the rates the relay prices invoices at now, each with its sources and age,
//! the pairs it cannot price and why, and each provider's health.

use crate::error::ApiError;
use crate::extract::AuthMerchant;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use relay_core::{Rate, RateError};
use relay_engine::view::rfc3339;
use relay_store::Store;
use serde::Serialize;
use utoipa::ToSchema;

/// One pair's rate, or why there is none.
#[derive(Serialize, ToSchema)]
pub struct RateView {
    /// `BTC/USD`: the price of one BTC in USD.
    pub pair: String,
    /// The rate (decimal string), when it is usable now.
    pub rate: Option<String>,
    /// The providers whose prices made it (`fixed`: the configured table).
    pub sources: Vec<String>,
    /// When its oldest price was made (RFC 3339), for live rates.
    pub as_of: Option<String>,
    /// Seconds since then.
    pub age_secs: Option<i64>,
    /// Why there is no usable rate now (every price too old, the providers disagreeing, no
    /// provider quoting the pair).
    pub unavailable: Option<String>,
}

/// A rate provider's health.
#[derive(Serialize, ToSchema)]
pub struct ProviderView {
    pub name: String,
    /// When it last answered with prices (RFC 3339).
    pub last_success: Option<String>,
    /// Its last failure since then, if any.
    pub last_error: Option<String>,
    /// Failures since the relay started.
    pub errors: u64,
}

/// The rates.
#[derive(Serialize, ToSchema)]
pub struct RatesView {
    pub object: &'static str,
    pub data: Vec<RateView>,
    /// The live providers (empty: the fixed table alone).
    pub providers: Vec<ProviderView>,
    /// Past this age (seconds), a price is not used.
    pub max_age_secs: Option<i64>,
}

fn view(rate: &Rate, now: i64) -> RateView {
    RateView {
        pair: format!("{}/{}", rate.base, rate.quote),
        rate: Some(rate.price.normalize().to_string()),
        sources: rate.sources.clone(),
        as_of: rate.as_of.map(rfc3339),
        age_secs: rate.as_of.map(|t| now - t.0),
        unavailable: None,
    }
}

/// The rates invoices are priced at now, with their sources and age.
#[utoipa::path(
    get, path = "/v1/rates", operation_id = "list_rates", tag = "rates",
    responses((status = 200, description = "The rates, the pairs without one, and the providers", body = RatesView)),
    security(("api_key" = []))
)]
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(_merchant): AuthMerchant,
) -> Result<Json<RatesView>, ApiError> {
    let now = state.clock.now().0;
    let mut data: Vec<RateView> = state
        .fixed_rates
        .all()
        .iter()
        .map(|r| view(r, now))
        .collect();
    let mut providers = Vec::new();
    let mut max_age = None;
    if let Some(live) = &state.live_rates {
        max_age = Some(live.settings().max_age_secs);
        for entry in live.all() {
            match entry {
                // The fixed table's pairs are listed already.
                Ok(r) if r.sources == ["fixed"] => {}
                Ok(r) => data.push(view(&r, now)),
                Err((_, RateError::NoPair)) => {}
                Err(((base, quote), RateError::Unavailable(reason))) => data.push(RateView {
                    pair: format!("{base}/{quote}"),
                    rate: None,
                    sources: Vec::new(),
                    as_of: None,
                    age_secs: None,
                    unavailable: Some(reason),
                }),
            }
        }
        providers = live
            .health()
            .into_iter()
            .map(|(name, h)| ProviderView {
                name: name.to_owned(),
                last_success: h.last_success.map(rfc3339),
                last_error: h.last_error,
                errors: h.errors,
            })
            .collect();
    }
    Ok(Json(RatesView {
        object: "rates",
        data,
        providers,
        max_age_secs: max_age,
    }))
}
