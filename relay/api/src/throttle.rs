//! Per-merchant request rates: a token bucket per merchant (GCRA, from `governor`), so one
//! merchant's traffic — or a leaked key's — cannot take the relay's capacity from the others.
//! Over its rate a request gets 429 `rate_limited` with `Retry-After`.
//!
//! Failed authentication is throttled per client address ([`AuthFailures`]): past its allowance
//! an address gets 429 `too_many_auth_failures` for every keyed request, valid key or not, until
//! its bucket refills, so guessing keys from one address is slow and costs the relay little.

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

/// Invalid API keys allowed per client address: a bucket per address (an IPv6 address counts by
/// its /64, which one client usually holds whole).
pub struct AuthFailures {
    /// Proxies whose `X-Forwarded-For` names the client (see [`client_address`]).
    trusted: Vec<ipnet::IpNet>,
    limiter: DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Addresses over their allowance, until when.
    blocked: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, std::time::Instant>>,
    failures: std::sync::atomic::AtomicU64,
}

/// The most addresses remembered as blocked; past it, expired entries are dropped first and new
/// ones are not remembered (their bucket still refuses them on their next failure).
const MAX_BLOCKED: usize = 100_000;

fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(o))
            }
        },
        v4 => v4,
    }
}

impl AuthFailures {
    /// `per_min` failures a minute on average, in bursts of as many. `None` when 0 (no limit).
    /// Behind `trusted` proxies, the client is the one they name (see [`client_address`]).
    pub fn new(per_min: u32, trusted: Vec<ipnet::IpNet>) -> Option<AuthFailures> {
        let rate = NonZeroU32::new(per_min)?;
        Some(AuthFailures {
            trusted,
            limiter: RateLimiter::keyed(Quota::per_minute(rate)),
            blocked: Default::default(),
            failures: Default::default(),
        })
    }

    /// The address a request counts against: see [`client_address`].
    pub fn client(
        &self,
        peer: std::net::IpAddr,
        headers: &axum::http::HeaderMap,
    ) -> std::net::IpAddr {
        if self.trusted.is_empty() {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        client_address(peer, &forwarded.join(","), &self.trusted)
    }

    /// Refuses a request from an address that is over its allowance.
    pub fn check(&self, ip: std::net::IpAddr) -> Result<(), ApiError> {
        let ip = client_key(ip);
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(&ip) {
            Some(until) => {
                let now = std::time::Instant::now();
                if *until > now {
                    let wait = *until - now;
                    metrics::counter!("relay_http_auth_throttled_total").increment(1);
                    Err(ApiError::auth_failures(
                        wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                    ))
                } else {
                    blocked.remove(&ip);
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// Counts a failed authentication; refuses (and blocks the address) past its allowance.
    pub fn failed(&self, ip: std::net::IpAddr) -> Result<(), ApiError> {
        let ip = client_key(ip);
        let n = self
            .failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 1024 == 1023 {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&ip) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
                if blocked.len() >= MAX_BLOCKED {
                    let now = std::time::Instant::now();
                    blocked.retain(|_, until| *until > now);
                }
                if blocked.len() < MAX_BLOCKED {
                    blocked.insert(ip, std::time::Instant::now() + wait);
                }
                metrics::counter!("relay_http_auth_throttled_total").increment(1);
                Err(ApiError::auth_failures(
                    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
                ))
            }
        }
    }
}

/// The client behind a request: the TCP peer; or, when the peer is one of the `trusted` proxies,
/// the nearest address in `X-Forwarded-For` (read from the right) that is not a trusted proxy.
/// Anyone else's `X-Forwarded-For` is ignored, so a client cannot choose the address it is
/// counted under.
pub fn client_address(
    peer: std::net::IpAddr,
    forwarded_for: &str,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for part in forwarded_for
        .rsplit(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.parse::<std::net::IpAddr>() {
            Ok(ip) if is_trusted(&ip) => client = ip,
            Ok(ip) => return ip,
            // Not an address: what is left of it cannot be trusted either.
            Err(_) => return client,
        }
    }
    client
}

/// What payers may do without a key, limited per thing (a checkout token, a payment link) and per
/// client address, in bursts that refill one every `every`. Past either, 429 with `code`.
/// Counted per relay process.
///
/// - Card attempts ([`PayerLimit::cards`]), against card testing (trying stolen card numbers one
///   after another on a page that needs no key): 10 per payment request, 40 per address, one more
///   every six minutes.
/// - Payment link visits ([`PayerLimit::links`]), each of which may make an invoice (and a
///   PaymentIntent at the gateway): 30 per address, one more every 6 seconds; 600 per link, ten
///   more a second.
pub struct PayerLimit {
    by_key: DefaultKeyedRateLimiter<String>,
    by_client: DefaultKeyedRateLimiter<std::net::IpAddr>,
    code: &'static str,
    message: &'static str,
}

impl PayerLimit {
    fn new(
        (per_key, key_every): (u32, std::time::Duration),
        (per_client, client_every): (u32, std::time::Duration),
        code: &'static str,
        message: &'static str,
    ) -> PayerLimit {
        let quota = |burst: u32, every| {
            Quota::with_period(every)
                .unwrap_or(Quota::per_second(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
        };
        PayerLimit {
            by_key: RateLimiter::keyed(quota(per_key, key_every)),
            by_client: RateLimiter::keyed(quota(per_client, client_every)),
            code,
            message,
        }
    }

    pub fn cards() -> PayerLimit {
        let every = std::time::Duration::from_secs(360);
        PayerLimit::new(
            (10, every),
            (40, every),
            "too_many_card_attempts",
            "too many card attempts for this payment request; try again later",
        )
    }

    pub fn links() -> PayerLimit {
        PayerLimit::new(
            (600, std::time::Duration::from_millis(100)),
            (30, std::time::Duration::from_secs(6)),
            "too_many_link_visits",
            "too many payment links opened; try again later",
        )
    }

    /// Takes one from the key's and the client's allowance, or refuses it.
    pub fn check(&self, key: &str, client: Option<std::net::IpAddr>) -> Result<(), ApiError> {
        let refused = |not_until: governor::NotUntil<_>| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("relay_payer_throttled_total", "code" => self.code).increment(1);
            let mut e = ApiError::invalid(self.code, self.message)
                .with_status(axum::http::StatusCode::TOO_MANY_REQUESTS);
            e.retry_after = Some(wait.as_secs().max(1));
            e
        };
        if let Some(ip) = client {
            self.by_client.check_key(&client_key(ip)).map_err(refused)?;
        }
        self.by_key.check_key(&key.to_owned()).map_err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // A client's own header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), "198.51.100.1", &trusted),
            ip("203.0.113.9")
        );
        // Through the proxy: the nearest untrusted address, whatever the client put before it.
        assert_eq!(
            client_address(ip("10.0.0.2"), "198.51.100.1, 203.0.113.7", &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), "203.0.113.7, 10.1.1.1", &trusted),
            ip("203.0.113.7"),
            "two proxies"
        );
        assert_eq!(client_address(ip("10.0.0.2"), "", &trusted), ip("10.0.0.2"));
        assert_eq!(
            client_address(ip("10.0.0.2"), "junk, 10.1.1.1", &trusted),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn an_address_past_its_failures_is_refused_even_with_a_valid_key_and_others_are_not() {
        let guard = AuthFailures::new(3, Vec::new()).unwrap();
        let bad: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        let other: std::net::IpAddr = "203.0.113.8".parse().unwrap();
        for _ in 0..3 {
            guard.check(bad).unwrap();
            guard.failed(bad).unwrap();
        }
        let e = guard.failed(bad).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (429, "too_many_auth_failures"));
        // Blocked before any key is looked at.
        assert_eq!(guard.check(bad).unwrap_err().code, "too_many_auth_failures");
        guard.check(other).unwrap();
        guard.failed(other).unwrap();
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let guard = AuthFailures::new(1, Vec::new()).unwrap();
        guard.failed("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(guard.failed("2001:db8:1:2::ffff".parse().unwrap()).is_err());
        assert!(guard
            .check("2001:db8:1:2:aaaa::1".parse().unwrap())
            .is_err());
        guard.check("2001:db8:1:3::1".parse().unwrap()).unwrap();
    }
}
