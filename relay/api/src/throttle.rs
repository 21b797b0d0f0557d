//! Per-merchant request rates: a token bucket per merchant (GCRA, from `governor`), so one
//! merchant's traffic — or a leaked key's — cannot take the relay's capacity from the others.
//! Over its rate a request gets 429 `rate_limited` with `Retry-After`.

use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use relay_core::MerchantId;
use std::num::NonZeroU32;

pub struct Throttle {
    limiter: DefaultKeyedRateLimiter<String>,
    per_sec: u32,
}

impl Throttle {
    /// `per_sec` requests a second on average, bursts of `burst`. `None` when `per_sec` is 0
    /// (no limit).
    pub fn new(per_sec: u32, burst: u32) -> Option<Throttle> {
        let rate = NonZeroU32::new(per_sec)?;
        let burst = NonZeroU32::new(burst.max(per_sec)).unwrap_or(rate);
        Some(Throttle {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            per_sec,
        })
    }

    /// Takes one request from the merchant's bucket, or refuses it with 429.
    pub fn check(&self, merchant: &MerchantId) -> Result<(), ApiError> {
        match self.limiter.check_key(&merchant.as_str().to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                metrics::counter!("relay_http_rate_limited_total").increment(1);
                Err(ApiError::rate_limited(secs.max(1), self.per_sec))
            }
        }
    }
}
