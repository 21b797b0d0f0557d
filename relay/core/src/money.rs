//! Exact money: an [`Amount`] is a non-negative integer count of an [`Asset`]'s minor unit
//! (cent, satoshi, wei, token base unit). Decimal strings are parsed and printed without ever
//! passing through a float, and arithmetic is checked.

use crate::error::CoreError;
use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A count of minor units. `U256` so that wei and 18-decimal tokens fit without a second type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub U256);

impl Amount {
    pub const ZERO: Amount = Amount(U256::ZERO);

    pub fn from_minor(units: u128) -> Amount {
        Amount(U256::from(units))
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    /// Parses an integer count of minor units (`"41234"`): digits only, no sign, no exponent.
    pub fn parse_minor(s: &str) -> Option<Amount> {
        if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        U256::from_str_radix(s, 10).ok().map(Amount)
    }

    /// Parses a decimal string in major units (`"25.00"`, `"0.0004"`) for an asset with `decimals`
    /// fraction digits. More fraction digits than the asset has is an error, not a rounding.
    pub fn parse_decimal(s: &str, asset: &Asset) -> Result<Amount, CoreError> {
        let invalid = |reason| CoreError::InvalidAmount {
            asset: asset.code.clone(),
            input: s.chars().take(64).collect(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.starts_with('-') {
            return Err(invalid("negative amounts are not allowed"));
        }
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
            return Err(invalid(
                "expected digits with an optional decimal point, like \"25.00\"",
            ));
        }
        if frac.len() > usize::from(asset.decimals) {
            return Err(invalid("more decimal places than the asset has"));
        }
        let overflow = || CoreError::AmountOverflow {
            asset: asset.code.clone(),
        };
        let int = int.trim_start_matches('0');
        if int.len() > 78 {
            return Err(overflow());
        }
        let int_part = if int.is_empty() {
            U256::ZERO
        } else {
            U256::from_str_radix(int, 10).map_err(|_| overflow())?
        };
        let mut frac_padded = frac.to_owned();
        while frac_padded.len() < usize::from(asset.decimals) {
            frac_padded.push('0');
        }
        let frac_part = if frac_padded.is_empty() {
            U256::ZERO
        } else {
            U256::from_str_radix(&frac_padded, 10).map_err(|_| overflow())?
        };
        int_part
            .checked_mul(pow10(asset.decimals).ok_or_else(overflow)?)
            .and_then(|v| v.checked_add(frac_part))
            .map(Amount)
            .ok_or_else(overflow)
    }

    /// Formats in major units with exactly the asset's number of fraction digits.
    pub fn to_decimal_string(self, decimals: u8) -> String {
        let digits = self.0.to_string();
        let d = usize::from(decimals);
        if d == 0 {
            return digits;
        }
        let padded = format!("{digits:0>width$}", width = d + 1);
        let (int, frac) = padded.split_at(padded.len() - d);
        format!("{int}.{frac}")
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

// Minor units travel as decimal strings: JSON numbers lose precision above 2^53.
impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Amount::parse_minor(&s)
            .ok_or_else(|| serde::de::Error::custom("expected an integer amount in minor units"))
    }
}

pub(crate) fn pow10(exp: u8) -> Option<U256> {
    U256::from(10u8).checked_pow(U256::from(exp))
}

/// What kind of thing an asset is, which decides the rail that can carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AssetKind {
    Fiat,
    Bitcoin,
    Ether,
    Erc20 {
        /// The token contract, `0x`-prefixed lowercase hex.
        contract: String,
    },
}

/// A currency or token: its code (`USD`, `BTC`, `ETH`, `USDC`), its number of decimals and its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Asset {
    pub code: String,
    pub decimals: u8,
    #[serde(flatten)]
    pub kind: AssetKind,
}

impl Asset {
    pub fn fiat(code: &str, decimals: u8) -> Asset {
        Asset {
            code: code.to_owned(),
            decimals,
            kind: AssetKind::Fiat,
        }
    }

    pub fn btc() -> Asset {
        Asset {
            code: "BTC".into(),
            decimals: 8,
            kind: AssetKind::Bitcoin,
        }
    }

    pub fn eth() -> Asset {
        Asset {
            code: "ETH".into(),
            decimals: 18,
            kind: AssetKind::Ether,
        }
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)
    }
}

/// An amount together with its asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub asset: Asset,
    pub amount: Amount,
}

impl Money {
    pub fn to_decimal_string(&self) -> String {
        self.amount.to_decimal_string(self.asset.decimals)
    }
}

/// The assets this deployment knows, by code. Every ISO 4217 currency (from the `iso_currency`
/// table, with its minor-unit exponent), BTC and ETH, plus whatever ERC-20 tokens the operator
/// configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetBook {
    assets: BTreeMap<String, Asset>,
}

impl Default for AssetBook {
    fn default() -> Self {
        let mut assets = BTreeMap::new();
        // Every ISO 4217 currency with a minor unit, with its exponent (JPY 0, KWD 3, EUR 2);
        // the codes without one (gold, SDR, test codes: XAU, XDR, XTS, …) are not prices.
        for currency in <iso_currency::Currency as iso_currency::IntoEnumIterator>::iter() {
            if let Some(exponent) = currency.exponent().and_then(|e| u8::try_from(e).ok()) {
                let code = currency.code();
                assets.insert(code.to_owned(), Asset::fiat(code, exponent));
            }
        }
        assets.insert("BTC".into(), Asset::btc());
        assets.insert("ETH".into(), Asset::eth());
        AssetBook { assets }
    }
}

impl AssetBook {
    /// Looks an asset up by code, case-insensitively (`usd` is `USD`).
    pub fn get(&self, code: &str) -> Result<&Asset, CoreError> {
        if code.len() > 16 {
            return Err(CoreError::UnknownAsset {
                code: code.chars().take(16).collect(),
            });
        }
        self.assets
            .get(&code.to_ascii_uppercase())
            .ok_or_else(|| CoreError::UnknownAsset { code: code.into() })
    }

    /// Ether and every ERC-20 token, in code order: the assets the escrow holds.
    pub fn ethereum_assets(&self) -> impl Iterator<Item = &Asset> {
        self.assets
            .values()
            .filter(|a| matches!(a.kind, AssetKind::Ether | AssetKind::Erc20 { .. }))
    }

    /// Adds an ERC-20 token. Its code must not shadow a built-in asset.
    pub fn add_token(&mut self, code: &str, decimals: u8, contract: &str) -> Result<(), CoreError> {
        let code = code.to_ascii_uppercase();
        if self.assets.contains_key(&code) {
            return Err(CoreError::InvalidField {
                field: "token code",
                reason: format!("{code} is already defined"),
            });
        }
        if decimals > 36 {
            return Err(CoreError::InvalidField {
                field: "token decimals",
                reason: "at most 36".into(),
            });
        }
        let contract = contract.to_ascii_lowercase();
        let valid = contract.len() == 42
            && contract.starts_with("0x")
            && contract[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(CoreError::InvalidField {
                field: "token contract",
                reason: "expected a 0x-prefixed 20-byte hex address".into(),
            });
        }
        self.assets.insert(
            code.clone(),
            Asset {
                code,
                decimals,
                kind: AssetKind::Erc20 { contract },
            },
        );
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Asset> {
        self.assets.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd() -> Asset {
        Asset::fiat("USD", 2)
    }

    #[test]
    fn parses_decimal_exactly() {
        assert_eq!(
            Amount::parse_decimal("25.00", &usd()).unwrap(),
            Amount::from_minor(2500)
        );
        assert_eq!(
            Amount::parse_decimal("25.5", &usd()).unwrap(),
            Amount::from_minor(2550)
        );
        assert_eq!(
            Amount::parse_decimal("0.00041234", &Asset::btc()).unwrap(),
            Amount::from_minor(41234)
        );
        assert_eq!(
            Amount::parse_decimal("1", &Asset::eth()).unwrap(),
            Amount::from_minor(1_000_000_000_000_000_000)
        );
        assert_eq!(
            Amount::parse_decimal("0007", &Asset::fiat("JPY", 0)).unwrap(),
            Amount::from_minor(7)
        );
    }

    #[test]
    fn rejects_malformed_negative_and_too_precise_amounts() {
        for bad in [
            "", "-1", "+1", "1e3", "1.", ".5", "1.2.3", " 1", "1,00", "NaN", "inf", "0x10",
            "25.001",
        ] {
            assert!(
                Amount::parse_decimal(bad, &usd()).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn rejects_overflow_instead_of_wrapping() {
        let huge = "9".repeat(80);
        assert!(matches!(
            Amount::parse_decimal(&huge, &usd()),
            Err(CoreError::AmountOverflow { .. })
        ));
        // Just over U256::MAX once scaled by 10^18.
        let near_max = format!("{}", U256::MAX / U256::from(10u64.pow(17)));
        assert!(Amount::parse_decimal(&near_max, &Asset::eth()).is_err());
    }

    #[test]
    fn formats_with_the_assets_decimals() {
        assert_eq!(Amount::from_minor(2500).to_decimal_string(2), "25.00");
        assert_eq!(Amount::from_minor(5).to_decimal_string(2), "0.05");
        assert_eq!(Amount::from_minor(41234).to_decimal_string(8), "0.00041234");
        assert_eq!(Amount::from_minor(7).to_decimal_string(0), "7");
    }

    #[test]
    fn asset_book_knows_builtins_and_rejects_unknown() {
        let book = AssetBook::default();
        assert_eq!(book.get("usd").unwrap().decimals, 2);
        assert_eq!(book.get("JPY").unwrap().decimals, 0);
        assert!(matches!(
            book.get("XYZ"),
            Err(CoreError::UnknownAsset { .. })
        ));
    }

    proptest! {
        #[test]
        fn decimal_round_trips(minor in any::<u128>(), decimals in 0u8..=18) {
            let asset = Asset { code: "T".into(), decimals, kind: AssetKind::Fiat };
            let s = Amount::from_minor(minor).to_decimal_string(decimals);
            prop_assert_eq!(Amount::parse_decimal(&s, &asset).unwrap(), Amount::from_minor(minor));
        }
    }
}

#[cfg(test)]
mod iso_tests {
    use super::*;

    #[test]
    fn every_iso_4217_currency_has_its_minor_unit() {
        let book = AssetBook::default();
        for (code, decimals) in [
            ("USD", 2),
            ("EUR", 2),
            ("CNY", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("KWD", 3),
            ("BHD", 3),
            ("CLF", 4),
        ] {
            let a = book.get(code).unwrap();
            assert_eq!(
                (a.decimals, &a.kind),
                (decimals, &AssetKind::Fiat),
                "{code}"
            );
        }
        assert!(book.get("XAU").is_err(), "gold has no minor unit");
        assert!(book.iter().filter(|a| a.kind == AssetKind::Fiat).count() > 150);
        assert_eq!(book.get("BTC").unwrap().decimals, 8);
    }
}
