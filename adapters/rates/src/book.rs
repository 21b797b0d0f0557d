//! What the providers said, and the rate the relay uses: for each pair, each provider's latest
//! price with its time; the rate is the median of the fresh ones with absurd outliers left out.
//! Pure: the clock and the prices come in as values.

use crate::providers::Quoted;
use relay_core::{Rate, Timestamp};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// How far from the median (a fraction of it) a price may be and still count: further is an
/// outlier, left out. Two sources further apart than this agree on nothing: no rate.
pub const OUTLIER: Decimal = Decimal::from_parts(5, 0, 0, false, 2); // 0.05

/// Significant digits a derived rate (an inverse, a cross rate) is rounded to, half to even.
pub const DERIVED_DIGITS: u32 = 16;

/// The currency cross rates go through when no provider quotes a pair directly.
pub const PIVOT: &str = "USD";

/// One provider's latest price of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub price: Decimal,
    pub at: Timestamp,
}

/// Why there is no rate for a pair now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("no provider quotes {0}")]
    NoPair(String),
    #[error("every price of {pair} is older than {max_age} s (the newest is {age} s old)")]
    Stale {
        pair: String,
        age: i64,
        max_age: i64,
    },
    #[error("the providers disagree on {0} by more than 5 %")]
    Disagree(String),
}

/// Every provider's latest price of every pair.
#[derive(Debug, Clone, Default)]
pub struct Book {
    pairs: BTreeMap<(String, String), BTreeMap<&'static str, Sample>>,
}

impl Book {
    /// Records what `provider` answered at `fetched_at` (a price with its own older time keeps
    /// that time).
    pub fn record(&mut self, provider: &'static str, quoted: &[Quoted], fetched_at: Timestamp) {
        for q in quoted {
            let at =
                q.at.map_or(fetched_at, |t| Timestamp(t.0.min(fetched_at.0)));
            self.pairs
                .entry((q.base.clone(), q.quote.clone()))
                .or_default()
                .insert(provider, Sample { price: q.price, at });
        }
    }

    /// The pairs some provider quotes.
    pub fn pairs(&self) -> impl Iterator<Item = &(String, String)> {
        self.pairs.keys()
    }

    /// The rate of `base` in `quote` now: quoted directly, else the inverse of the reverse pair,
    /// else crossed through [`PIVOT`] (each leg found the same way), rounded to
    /// [`DERIVED_DIGITS`] significant digits.
    pub fn rate(
        &self,
        base: &str,
        quote: &str,
        now: Timestamp,
        max_age: i64,
    ) -> Result<Rate, Unavailable> {
        match self.leg(base, quote, now, max_age) {
            Err(Unavailable::NoPair(_)) if base != PIVOT && quote != PIVOT => {
                let first = self.leg(base, PIVOT, now, max_age)?;
                let second = self.leg(PIVOT, quote, now, max_age)?;
                let price = first
                    .price
                    .checked_mul(second.price)
                    .ok_or_else(|| Unavailable::NoPair(format!("{base}/{quote}")))?
                    .round_sf(DERIVED_DIGITS)
                    .unwrap_or_default()
                    .normalize();
                let mut sources = first.sources;
                for s in second.sources {
                    if !sources.contains(&s) {
                        sources.push(s);
                    }
                }
                Ok(Rate {
                    base: base.into(),
                    quote: quote.into(),
                    price,
                    spread_bps: 0,
                    sources,
                    as_of: older(first.as_of, second.as_of),
                })
            }
            other => other,
        }
    }

    /// A pair quoted directly, or the inverse of its reverse.
    fn leg(
        &self,
        base: &str,
        quote: &str,
        now: Timestamp,
        max_age: i64,
    ) -> Result<Rate, Unavailable> {
        let key = |b: &str, q: &str| (b.to_owned(), q.to_owned());
        match self.pairs.get(&key(base, quote)) {
            Some(samples) => aggregate(base, quote, samples, now, max_age),
            None => match self.pairs.get(&key(quote, base)) {
                Some(samples) => {
                    let reverse = aggregate(quote, base, samples, now, max_age)?;
                    let price = (Decimal::ONE / reverse.price)
                        .round_sf(DERIVED_DIGITS)
                        .unwrap_or_default()
                        .normalize();
                    Ok(Rate {
                        base: base.into(),
                        quote: quote.into(),
                        price,
                        ..reverse
                    })
                }
                None => Err(Unavailable::NoPair(format!("{base}/{quote}"))),
            },
        }
    }
}

fn older(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The median of the fresh samples, absurd outliers left out; its sources are the providers whose
/// prices counted, its time the oldest of them.
pub fn aggregate(
    base: &str,
    quote: &str,
    samples: &BTreeMap<&'static str, Sample>,
    now: Timestamp,
    max_age: i64,
) -> Result<Rate, Unavailable> {
    let pair = format!("{base}/{quote}");
    let fresh: Vec<(&'static str, Sample)> = samples
        .iter()
        .filter(|(_, s)| s.price > Decimal::ZERO && now.0 - s.at.0 <= max_age)
        .map(|(p, s)| (*p, *s))
        .collect();
    if fresh.is_empty() {
        let newest = samples.values().map(|s| s.at.0).max().unwrap_or(0);
        return Err(Unavailable::Stale {
            pair,
            age: now.0 - newest,
            max_age,
        });
    }
    let all: Vec<Decimal> = fresh.iter().map(|(_, s)| s.price).collect();
    let m = median(&all).ok_or_else(|| Unavailable::Disagree(pair.clone()))?;
    let kept: Vec<(&'static str, Sample)> = fresh
        .into_iter()
        .filter(|(_, s)| (s.price - m).abs() <= m * OUTLIER)
        .collect();
    let prices: Vec<Decimal> = kept.iter().map(|(_, s)| s.price).collect();
    let price = median(&prices).ok_or(Unavailable::Disagree(pair))?;
    Ok(Rate {
        base: base.into(),
        quote: quote.into(),
        price: price.normalize(),
        spread_bps: 0,
        sources: kept.iter().map(|(p, _)| (*p).to_owned()).collect(),
        as_of: kept.iter().map(|(_, s)| s.at).min_by_key(|t| t.0),
    })
}

/// The median: the middle price, or the mean of the two middle ones.
pub fn median(prices: &[Decimal]) -> Option<Decimal> {
    let mut sorted = prices.to_vec();
    sorted.sort();
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / Decimal::TWO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_800_000_000);

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn quoted(base: &str, quote: &str, price: &str) -> Quoted {
        Quoted {
            base: base.into(),
            quote: quote.into(),
            price: d(price),
            at: None,
        }
    }

    #[test]
    fn the_median_of_fresh_prices_with_outliers_left_out() {
        let mut book = Book::default();
        book.record("coinbase", &[quoted("BTC", "USD", "60000")], NOW);
        book.record("kraken", &[quoted("BTC", "USD", "60030")], NOW);
        book.record("coingecko", &[quoted("BTC", "USD", "59970")], NOW);
        let r = book.rate("BTC", "USD", NOW, 300).unwrap();
        assert_eq!(r.price, d("60000"));
        assert_eq!(r.sources, ["coinbase", "coingecko", "kraken"]);
        assert_eq!(r.as_of, Some(NOW));
        // An absurd price from one: left out, the others carry (their mean).
        book.record("kraken", &[quoted("BTC", "USD", "6003")], NOW);
        let r = book.rate("BTC", "USD", NOW, 300).unwrap();
        assert_eq!(r.price, d("59985"));
        assert_eq!(r.sources, ["coinbase", "coingecko"]);
        // Old prices do not count; past the age, none is used.
        book.record("kraken", &[quoted("BTC", "USD", "60030")], NOW);
        book.record(
            "coinbase",
            &[quoted("BTC", "USD", "61000")],
            Timestamp(NOW.0 - 400),
        );
        let r = book.rate("BTC", "USD", NOW, 300).unwrap();
        assert_eq!(r.sources, ["coingecko", "kraken"]);
        assert_eq!(r.price, d("60000"));
        assert_eq!(
            book.rate("BTC", "USD", Timestamp(NOW.0 + 301), 300),
            Err(Unavailable::Stale {
                pair: "BTC/USD".into(),
                age: 301,
                max_age: 300
            })
        );
    }

    #[test]
    fn two_sources_far_apart_give_no_rate() {
        let mut book = Book::default();
        book.record("coinbase", &[quoted("ETH", "USD", "3000")], NOW);
        book.record("kraken", &[quoted("ETH", "USD", "3400")], NOW);
        assert_eq!(
            book.rate("ETH", "USD", NOW, 300),
            Err(Unavailable::Disagree("ETH/USD".into()))
        );
    }

    #[test]
    fn a_pair_nobody_quotes_is_inverted_or_crossed_through_usd() {
        let mut book = Book::default();
        book.record(
            "coinbase",
            &[
                quoted("BTC", "USD", "60000"),
                quoted("USD", "KWD", "0.3075"),
            ],
            NOW,
        );
        book.record(
            "kraken",
            &[quoted("USDC", "USD", "1.0001")],
            Timestamp(NOW.0 - 10),
        );
        // Inverse.
        let r = book.rate("USD", "BTC", NOW, 300).unwrap();
        assert_eq!(r.price, d("0.00001666666666666667"));
        // Cross: USDC/KWD = USDC/USD × USD/KWD, rounded to 16 significant digits.
        let r = book.rate("USDC", "KWD", NOW, 300).unwrap();
        assert_eq!(r.price, d("0.30753075"));
        assert_eq!(r.sources, ["kraken", "coinbase"]);
        assert_eq!(r.as_of, Some(Timestamp(NOW.0 - 10)), "the older leg's time");
        assert!(matches!(
            book.rate("DOGE", "KWD", NOW, 300),
            Err(Unavailable::NoPair(_))
        ));
    }

    #[test]
    fn a_price_keeps_the_providers_own_older_time() {
        let mut book = Book::default();
        let mut q = quoted("BTC", "EUR", "55500");
        q.at = Some(Timestamp(NOW.0 - 200));
        book.record("coingecko", &[q], NOW);
        assert_eq!(
            book.rate("BTC", "EUR", NOW, 300).unwrap().as_of,
            Some(Timestamp(NOW.0 - 200))
        );
        assert!(book
            .rate("BTC", "EUR", Timestamp(NOW.0 + 101), 300)
            .is_err());
    }
}
