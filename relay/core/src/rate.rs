//! Exchange rates and conversion of a price into what a payer owes in another asset.
//!
//! Rounding rule: a converted amount is rounded **up** to the payer's minor unit, so paying the
//! quoted amount never gives the merchant less than the price. The conversion is exact integer
//! arithmetic on the rate's decimal mantissa; no float is involved.

use crate::error::CoreError;
use crate::money::{pow10, Amount, Asset};
use alloy_primitives::U256;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `1 base = price quote`, e.g. `1 BTC = 60000.00 USD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub base: String,
    pub quote: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    /// The merchant's spread taken off the market rate, in basis points (0: the market rate).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spread_bps: u16,
    /// Where it came from: the providers whose prices made it (`coinbase`, `kraken`, …), or
    /// `fixed` for the configured table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// When its oldest price was made (live rates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<crate::time::Timestamp>,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl Rate {
    /// This rate less a spread of `bps` basis points (exact: a decimal times an integer ratio),
    /// so that a payer converting at it pays that much more of `base`.
    pub fn with_spread(&self, bps: u16) -> Rate {
        let keep = Decimal::from(10_000u32 - u32::from(bps.min(10_000))) / Decimal::from(10_000u32);
        Rate {
            price: (self.price * keep).normalize(),
            spread_bps: bps,
            ..self.clone()
        }
    }

    /// A rate from the configured table.
    pub fn fixed(base: &str, quote: &str, price: Decimal) -> Rate {
        Rate {
            base: base.into(),
            quote: quote.into(),
            price,
            spread_bps: 0,
            sources: vec!["fixed".into()],
            as_of: None,
        }
    }

    /// How much of `base` (minor units) pays `amount` of `quote` (minor units), rounded up.
    pub fn quote_to_base(
        &self,
        amount: Amount,
        quote: &Asset,
        base: &Asset,
    ) -> Result<Amount, CoreError> {
        debug_assert_eq!(self.base, base.code);
        debug_assert_eq!(self.quote, quote.code);
        if self.price <= Decimal::ZERO {
            return Err(CoreError::NoRate {
                from: quote.code.clone(),
                to: base.code.clone(),
            });
        }
        let overflow = || CoreError::AmountOverflow {
            asset: base.code.clone(),
        };
        let mantissa = U256::from(self.price.mantissa().unsigned_abs());
        let scale = u8::try_from(self.price.scale()).map_err(|_| overflow())?;
        let num_scale = base.decimals.checked_add(scale).ok_or_else(overflow)?;
        let numerator = amount
            .0
            .checked_mul(pow10(num_scale).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
        let denominator = pow10(quote.decimals)
            .ok_or_else(overflow)?
            .checked_mul(mantissa)
            .ok_or_else(overflow)?;
        let (q, r) = numerator.div_rem(denominator);
        let rounded = if r.is_zero() { q } else { q + U256::from(1u8) };
        Ok(Amount(rounded))
    }
}

impl Rate {
    /// What `amount` of `base` (minor units) is worth in `quote` (minor units) at this rate,
    /// rounded down.
    pub fn base_to_quote_down(
        &self,
        amount: Amount,
        base: &Asset,
        quote: &Asset,
    ) -> Result<Amount, CoreError> {
        let overflow = || CoreError::AmountOverflow {
            asset: quote.code.clone(),
        };
        if self.price <= Decimal::ZERO {
            return Err(CoreError::NoRate {
                from: base.code.clone(),
                to: quote.code.clone(),
            });
        }
        // amount × mantissa × 10^quote.decimals / 10^(base.decimals + scale)
        let mantissa = U256::from(self.price.mantissa().unsigned_abs());
        let scale = u8::try_from(self.price.scale()).map_err(|_| overflow())?;
        let numerator = amount
            .0
            .checked_mul(mantissa)
            .and_then(|n| n.checked_mul(pow10(quote.decimals)?))
            .ok_or_else(overflow)?;
        let denominator =
            pow10(base.decimals.checked_add(scale).ok_or_else(overflow)?).ok_or_else(overflow)?;
        Ok(Amount(numerator / denominator))
    }
}

/// What `amount` of `from` is worth in `to` at current rates, both quoted in the same currency
/// (`from_rate`: 1 `from` = x, `to_rate`: 1 `to` = y), rounded **down**: what the operator pays
/// for money it holds never exceeds its worth.
pub fn convert_down(
    amount: Amount,
    from: &Asset,
    from_rate: &Rate,
    to: &Asset,
    to_rate: &Rate,
) -> Result<Amount, CoreError> {
    let overflow = || CoreError::AmountOverflow {
        asset: to.code.clone(),
    };
    if from_rate.quote != to_rate.quote
        || from_rate.price <= Decimal::ZERO
        || to_rate.price <= Decimal::ZERO
    {
        return Err(CoreError::NoRate {
            from: from.code.clone(),
            to: to.code.clone(),
        });
    }
    let mantissa = |d: Decimal| U256::from(d.mantissa().unsigned_abs());
    let scale = |d: Decimal| u8::try_from(d.scale()).map_err(|_| overflow());
    // amount × price_from × 10^(to.decimals + scale_to)
    //   / (price_to × 10^(from.decimals + scale_from))
    let up = to
        .decimals
        .checked_add(scale(to_rate.price)?)
        .ok_or_else(overflow)?;
    let down = from
        .decimals
        .checked_add(scale(from_rate.price)?)
        .ok_or_else(overflow)?;
    let numerator = amount
        .0
        .checked_mul(mantissa(from_rate.price))
        .and_then(|n| n.checked_mul(pow10(up)?))
        .ok_or_else(overflow)?;
    let denominator = mantissa(to_rate.price)
        .checked_mul(pow10(down).ok_or_else(overflow)?)
        .ok_or_else(overflow)?;
    Ok(Amount(numerator / denominator))
}

/// Why a source gives no rate for a pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateError {
    /// It does not know the pair at all.
    NoPair,
    /// It knows the pair but has no usable price now (every price too old, sources disagreeing):
    /// trying later may work.
    Unavailable(String),
}

/// Where rates come from. The rate used for an invoice is read once, at creation, and locked into
/// the invoice; implementations may therefore be slow or change over time.
pub trait RateSource: Send + Sync {
    /// The price of one `base` in `quote`, or `None` when this source has no usable one.
    fn rate(&self, base: &str, quote: &str) -> Option<Rate>;

    /// The same, saying why there is none.
    fn quote_rate(&self, base: &str, quote: &str) -> Result<Rate, RateError> {
        self.rate(base, quote).ok_or(RateError::NoPair)
    }
}

/// A fixed table of rates from the configuration (what `relay dev` and the tests use).
#[derive(Debug, Clone, Default)]
pub struct FixedRates {
    table: BTreeMap<(String, String), Decimal>,
}

impl FixedRates {
    /// Parses entries like `("BTC/USD", "60000.00")`.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, CoreError> {
        let mut table = BTreeMap::new();
        for (pair, price) in pairs {
            let (base, quote) = pair
                .split_once('/')
                .ok_or_else(|| CoreError::InvalidField {
                    field: "rate pair",
                    reason: format!("{pair:?} is not of the form BASE/QUOTE"),
                })?;
            let price: Decimal = price.parse().map_err(|_| CoreError::InvalidField {
                field: "rate",
                reason: format!("{price:?} is not a decimal number"),
            })?;
            if price <= Decimal::ZERO {
                return Err(CoreError::InvalidField {
                    field: "rate",
                    reason: format!("{pair} must be positive"),
                });
            }
            table.insert(
                (base.to_ascii_uppercase(), quote.to_ascii_uppercase()),
                price,
            );
        }
        Ok(FixedRates { table })
    }
}

impl FixedRates {
    /// Every rate of the table, in pair order.
    pub fn all(&self) -> Vec<Rate> {
        self.table
            .iter()
            .map(|((b, q), p)| Rate::fixed(b, q, *p))
            .collect()
    }
}

impl RateSource for FixedRates {
    fn rate(&self, base: &str, quote: &str) -> Option<Rate> {
        if base == quote {
            return Some(Rate::fixed(base, quote, Decimal::ONE));
        }
        self.table
            .get(&(base.to_owned(), quote.to_owned()))
            .map(|price| Rate::fixed(base, quote, *price))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rate(base: &str, quote: &str, price: &str) -> Rate {
        Rate {
            base: base.into(),
            quote: quote.into(),
            price: price.parse().unwrap(),
            spread_bps: 0,
            sources: Vec::new(),
            as_of: None,
        }
    }

    #[test]
    fn converts_usd_to_sat_rounding_up() {
        // 25.00 USD at 60000 USD/BTC = 0.000416666… BTC → 41667 sat (rounded up).
        let r = rate("BTC", "USD", "60000");
        let sat = r
            .quote_to_base(
                Amount::from_minor(2500),
                &Asset::fiat("USD", 2),
                &Asset::btc(),
            )
            .unwrap();
        assert_eq!(sat, Amount::from_minor(41667));
    }

    #[test]
    fn exact_conversion_is_not_rounded() {
        let r = rate("ETH", "USD", "2500.00");
        let wei = r
            .quote_to_base(
                Amount::from_minor(2500),
                &Asset::fiat("USD", 2),
                &Asset::eth(),
            )
            .unwrap();
        assert_eq!(wei, Amount::from_minor(10_000_000_000_000_000)); // 0.01 ETH
    }

    #[test]
    fn identity_rate_keeps_the_amount() {
        let rates = FixedRates::default();
        let r = rates.rate("BTC", "BTC").unwrap();
        let sat = r
            .quote_to_base(Amount::from_minor(1234), &Asset::btc(), &Asset::btc())
            .unwrap();
        assert_eq!(sat, Amount::from_minor(1234));
    }

    #[test]
    fn fixed_table_rejects_bad_entries() {
        assert!(FixedRates::from_pairs([("BTCUSD", "1")]).is_err());
        assert!(FixedRates::from_pairs([("BTC/USD", "abc")]).is_err());
        assert!(FixedRates::from_pairs([("BTC/USD", "-5")]).is_err());
        let ok = FixedRates::from_pairs([("btc/usd", "60000.5")]).unwrap();
        assert_eq!(
            ok.rate("BTC", "USD").unwrap().price,
            "60000.5".parse().unwrap()
        );
        assert!(ok.rate("ETH", "USD").is_none());
    }

    #[test]
    fn convert_down_values_one_asset_in_another() {
        let btc = Rate {
            base: "BTC".into(),
            quote: "USD".into(),
            price: "60000".parse().unwrap(),
            spread_bps: 0,
            sources: Vec::new(),
            as_of: None,
        };
        let eth = Rate {
            base: "ETH".into(),
            quote: "USD".into(),
            price: "2500.5".parse().unwrap(),
            spread_bps: 0,
            sources: Vec::new(),
            as_of: None,
        };
        // 0.01 BTC = 600 USD = 0.23995... ETH, rounded down to the wei.
        let wei = convert_down(
            Amount::from_minor(1_000_000),
            &Asset::btc(),
            &btc,
            &Asset::eth(),
            &eth,
        )
        .unwrap();
        assert_eq!(wei, Amount::from_minor(239_952_009_598_080_383));
        let other = Rate {
            quote: "EUR".into(),
            ..eth
        };
        assert!(convert_down(
            Amount::from_minor(1),
            &Asset::btc(),
            &btc,
            &Asset::eth(),
            &other
        )
        .is_err());
    }

    proptest! {
        /// Paying the converted amount is always worth at least the price, and one minor unit less
        /// is worth less than the price (the rounding never overcharges by a whole unit).
        #[test]
        fn conversion_covers_price_and_is_tight(cents in 1u64..10_000_000_000, price_cents in 1u64..10_000_000_000) {
            let price: Decimal = Decimal::new(price_cents as i64, 2);
            let r = Rate { base: "BTC".into(), quote: "USD".into(), price, spread_bps: 0, sources: Vec::new(), as_of: None };
            let usd = Asset::fiat("USD", 2);
            let sat = r.quote_to_base(Amount::from_minor(cents as u128), &usd, &Asset::btc()).unwrap();
            // value of sat in cent·1e8 units: sat * price_cents  >=  cents * 1e8
            let value = sat.0 * U256::from(price_cents);
            let owed = U256::from(cents) * U256::from(100_000_000u64);
            prop_assert!(value >= owed);
            prop_assert!((sat.0 - U256::from(1u8)) * U256::from(price_cents) < owed);
        }
    }
}
