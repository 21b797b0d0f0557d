//! Live rates: the providers asked in the background, every `refresh` interval, each answer
//! recorded in the [`Book`]; the relay's [`RateSource`] reads the book (and the fixed table the
//! operator configured, which overrides it pair by pair).

use crate::book::{Book, Unavailable};
use crate::providers::{Provider, ProviderError};
use relay_core::{Clock, FixedRates, Rate, RateError, RateSource, Timestamp};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// What the relay asks the providers for.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Each provider and its base URL.
    pub providers: Vec<(Provider, String)>,
    /// The assets priced (BTC, ETH, tokens).
    pub bases: Vec<String>,
    /// The currencies they are priced in (fiat codes).
    pub quotes: Vec<String>,
    /// Past this age (seconds) a price is not used.
    pub max_age_secs: i64,
    /// How long one provider may take to answer.
    pub timeout: Duration,
}

/// A pair (base, quote) without a usable rate, and why.
pub type Missing = ((String, String), RateError);

/// A provider's health, for `GET /v1/rates` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    pub errors: u64,
}

pub struct LiveRates {
    settings: Settings,
    overrides: FixedRates,
    book: RwLock<Book>,
    health: Mutex<BTreeMap<&'static str, Health>>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
}

impl std::fmt::Debug for LiveRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRates")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LiveRates {
    pub fn new(
        settings: Settings,
        overrides: FixedRates,
        clock: Arc<dyn Clock>,
    ) -> Result<LiveRates, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent("relay-rates")
            .build()
            .map_err(|e| e.to_string())?;
        let health = settings
            .providers
            .iter()
            .map(|(p, _)| (p.name(), Health::default()))
            .collect();
        Ok(LiveRates {
            settings,
            overrides,
            book: RwLock::new(Book::default()),
            health: Mutex::new(health),
            clock,
            http,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Asks every provider at once and records what each answered.
    pub async fn refresh(&self) {
        let asks = self.settings.providers.iter().map(|(p, url)| async move {
            // One slow provider holds up none of the others, and no round lasts longer than
            // the timeout.
            let fetched = tokio::time::timeout(self.settings.timeout, self.fetch(*p, url))
                .await
                .unwrap_or_else(|_| Err("no answer within the timeout".into()));
            (*p, fetched)
        });
        for (provider, result) in futures_util::future::join_all(asks).await {
            let now = self.clock.now();
            let name = provider.name();
            let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            let h = health.entry(name).or_default();
            match result {
                Ok(quoted) => {
                    self.book
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(name, &quoted, now);
                    h.last_success = Some(now);
                    h.last_error = None;
                    metrics::gauge!("relay_rate_provider_last_success_seconds", "provider" => name)
                        .set(now.0 as f64);
                    metrics::gauge!("relay_rate_provider_prices", "provider" => name)
                        .set(quoted.len() as f64);
                }
                Err(e) => {
                    tracing::warn!(target: "relay::rates", provider = name, error = %e, "rate provider failed");
                    h.errors += 1;
                    h.last_error = Some(e);
                    metrics::counter!("relay_rate_provider_errors_total", "provider" => name)
                        .increment(1);
                }
            }
        }
    }

    /// One provider's prices, from all the requests it needs. A request it refuses (an asset
    /// it does not know) costs only that request's prices; the provider fails only when none
    /// of its requests gave any.
    async fn fetch(
        &self,
        provider: Provider,
        url: &str,
    ) -> Result<Vec<crate::providers::Quoted>, String> {
        let s = &self.settings;
        let mut out = Vec::new();
        let mut failed = None;
        let mut answered = false;
        for request in provider.requests(&s.bases, &s.quotes) {
            match self.ask(provider, url, &request).await {
                Ok(quoted) => {
                    answered = true;
                    out.extend(quoted);
                }
                Err(e) => {
                    tracing::debug!(target: "relay::rates", provider = provider.name(), path = %request.path, error = %e, "request refused");
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) if !answered => Err(e),
            _ => Ok(out),
        }
    }

    async fn ask(
        &self,
        provider: Provider,
        url: &str,
        request: &crate::providers::Request,
    ) -> Result<Vec<crate::providers::Quoted>, String> {
        let target = format!("{}{}", url.trim_end_matches('/'), request.path);
        let resp = self
            .http
            .get(&target)
            .send()
            .await
            .map_err(|e| format!("unreachable: {}", e.without_url()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("answer cut off: {}", e.without_url()))?;
        match provider.parse(request, &body, &self.settings.quotes) {
            Ok(quoted) if status.is_success() => Ok(quoted),
            Ok(_) => Err(format!("HTTP {status}")),
            Err(ProviderError::Refused(m)) => Err(format!("HTTP {status}: {m}")),
            Err(e) => Err(format!("HTTP {status}: {e}")),
        }
    }

    /// Each provider's health.
    pub fn health(&self) -> BTreeMap<&'static str, Health> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The rate of every pair the relay prices (each base in each quote), or why there is none.
    pub fn all(&self) -> Vec<Result<Rate, Missing>> {
        let s = &self.settings;
        let mut out = Vec::new();
        for base in &s.bases {
            for quote in &s.quotes {
                out.push(
                    self.quote_rate(base, quote)
                        .map_err(|e| ((base.clone(), quote.clone()), e)),
                );
            }
        }
        out
    }
}

impl RateSource for LiveRates {
    fn rate(&self, base: &str, quote: &str) -> Option<Rate> {
        self.quote_rate(base, quote).ok()
    }

    fn quote_rate(&self, base: &str, quote: &str) -> Result<Rate, RateError> {
        if let Some(fixed) = self.overrides.rate(base, quote) {
            return Ok(fixed);
        }
        let now = self.clock.now();
        self.book
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .rate(base, quote, now, self.settings.max_age_secs)
            .map_err(|e| match e {
                Unavailable::NoPair(_) => RateError::NoPair,
                other => RateError::Unavailable(other.to_string()),
            })
    }
}

/// Refreshes `rates` every `every`, for as long as the task runs (the relay aborts it at
/// shutdown).
pub async fn refresh_loop(rates: Arc<LiveRates>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        rates.refresh().await;
    }
}
