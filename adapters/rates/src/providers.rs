//! The public exchange APIs, each in its own documented format: which requests fetch the wanted
//! pairs, and how an answer becomes prices. Pure: no I/O here (see [`crate::live`]).
//!
//! Every price is "1 base = price quote" (1 BTC = 60000 USD), a positive decimal read from the
//! provider's text; one that is not (zero, negative, absurdly large, not a number) is dropped and
//! counted as garbage, never used.

use relay_core::Timestamp;
use rust_decimal::Decimal;
use serde_json::Value;
use std::str::FromStr;

/// A rate provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Provider {
    /// `GET /v2/exchange-rates?currency=BTC`: one base against every currency, prices as strings.
    Coinbase,
    /// `GET /0/public/Ticker?pair=XBTUSD,…`: its own pair names, the last trade price.
    Kraken,
    /// `GET /api/v3/simple/price?ids=…&vs_currencies=…`: prices as JSON numbers.
    CoinGecko,
}

/// One price a provider gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    pub base: String,
    pub quote: String,
    pub price: Decimal,
    /// When the provider says the price was made, if it says (else: when it was fetched).
    pub at: Option<Timestamp>,
}

/// Why an answer gave no prices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Not JSON, or not the provider's shape (an HTML error page, a proxy's answer).
    #[error("not the provider's format: {0}")]
    Garbage(String),
    /// The provider's own error (unknown pair, rate limited, …).
    #[error("the provider refused: {0}")]
    Refused(String),
}

/// A request to make: a path and query under the provider's base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    /// Coinbase: the base currency this request asks about.
    pub base: Option<String>,
}

/// The fiat currencies Kraken trades bitcoin and ether against.
const KRAKEN_FIAT: [&str; 7] = ["USD", "EUR", "GBP", "JPY", "CAD", "CHF", "AUD"];
/// The assets Kraken is asked about (an unknown pair fails its whole request).
const KRAKEN_BASES: [(&str, &str); 4] = [
    ("BTC", "XBT"),
    ("ETH", "ETH"),
    ("USDC", "USDC"),
    ("USDT", "USDT"),
];

/// CoinGecko's ids of the assets it is asked about.
const COINGECKO_IDS: [(&str, &str); 5] = [
    ("BTC", "bitcoin"),
    ("ETH", "ethereum"),
    ("USDC", "usd-coin"),
    ("USDT", "tether"),
    ("DAI", "dai"),
];
/// The fiat currencies CoinGecko prices in (its `vs_currencies`).
const COINGECKO_FIAT: [&str; 45] = [
    "USD", "AED", "ARS", "AUD", "BDT", "BHD", "BMD", "BRL", "CAD", "CHF", "CLP", "CNY", "CZK",
    "DKK", "EUR", "GBP", "GEL", "HKD", "HUF", "IDR", "ILS", "INR", "JPY", "KRW", "KWD", "LKR",
    "MMK", "MXN", "MYR", "NGN", "NOK", "NZD", "PHP", "PKR", "PLN", "SAR", "SEK", "SGD", "THB",
    "TRY", "TWD", "UAH", "VND", "ZAR", "XDR",
];

/// The largest price believed (10^15 of the quote per base): anything above is garbage.
fn sane(price: Decimal) -> Option<Decimal> {
    (price > Decimal::ZERO && price < Decimal::from(1_000_000_000_000_000u64)).then_some(price)
}

fn json(body: &[u8]) -> Result<Value, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        let start = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        ProviderError::Garbage(format!("{e} (the answer starts {start:?})"))
    })
}

/// A decimal from a JSON string or number (CoinGecko's are numbers: read from their text, never
/// through arithmetic on a float).
fn decimal(v: &Value) -> Option<Decimal> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
        .and_then(sane)
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Coinbase, Provider::Kraken, Provider::CoinGecko];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Coinbase => "coinbase",
            Provider::Kraken => "kraken",
            Provider::CoinGecko => "coingecko",
        }
    }

    pub fn parse_name(s: &str) -> Option<Provider> {
        Provider::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The provider's public API.
    pub fn default_url(self) -> &'static str {
        match self {
            Provider::Coinbase => "https://api.coinbase.com",
            Provider::Kraken => "https://api.kraken.com",
            Provider::CoinGecko => "https://api.coingecko.com",
        }
    }

    /// The requests that fetch `bases` (asset codes) against `quotes` (fiat codes), as far as
    /// this provider knows them.
    pub fn requests(self, bases: &[String], quotes: &[String]) -> Vec<Request> {
        match self {
            // One request per base, answering every currency at once. USD is asked too: its
            // answer is the fiat cross rates.
            Provider::Coinbase => bases
                .iter()
                .map(String::as_str)
                .chain(std::iter::once("USD"))
                .map(|b| Request {
                    path: format!("/v2/exchange-rates?currency={b}"),
                    base: Some(b.to_owned()),
                })
                .collect(),
            Provider::Kraken => {
                let pairs: Vec<String> = KRAKEN_BASES
                    .iter()
                    .filter(|(code, _)| bases.iter().any(|b| b == code))
                    .flat_map(|(_, k)| {
                        KRAKEN_FIAT
                            .iter()
                            .filter(|q| quotes.iter().any(|w| w == *q))
                            .map(move |q| format!("{k}{q}"))
                    })
                    .collect();
                if pairs.is_empty() {
                    return Vec::new();
                }
                vec![Request {
                    path: format!("/0/public/Ticker?pair={}", pairs.join(",")),
                    base: None,
                }]
            }
            Provider::CoinGecko => {
                let ids: Vec<&str> = COINGECKO_IDS
                    .iter()
                    .filter(|(code, _)| bases.iter().any(|b| b == code))
                    .map(|(_, id)| *id)
                    .collect();
                let vs: Vec<String> = COINGECKO_FIAT
                    .iter()
                    .filter(|q| quotes.iter().any(|w| w == *q))
                    .map(|q| q.to_ascii_lowercase())
                    .collect();
                if ids.is_empty() || vs.is_empty() {
                    return Vec::new();
                }
                vec![Request {
                    path: format!(
                        "/api/v3/simple/price?ids={}&vs_currencies={}&include_last_updated_at=true&precision=full",
                        ids.join(","),
                        vs.join(",")
                    ),
                    base: None,
                }]
            }
        }
    }

    /// The prices in an answer to `request`, keeping only `quotes` (and, for Coinbase's USD
    /// answer, the fiat cross rates against them).
    pub fn parse(
        self,
        request: &Request,
        body: &[u8],
        quotes: &[String],
    ) -> Result<Vec<Quoted>, ProviderError> {
        let v = json(body)?;
        let wanted = |q: &str| quotes.iter().any(|w| w.eq_ignore_ascii_case(q));
        match self {
            Provider::Coinbase => {
                if let Some(errors) = v.get("errors").and_then(Value::as_array) {
                    let message = errors
                        .iter()
                        .filter_map(|e| e.get("message").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(ProviderError::Refused(message));
                }
                let data = v
                    .get("data")
                    .ok_or_else(|| ProviderError::Garbage("no data".into()))?;
                let base = data
                    .get("currency")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ProviderError::Garbage("no data.currency".into()))?
                    .to_ascii_uppercase();
                if request
                    .base
                    .as_deref()
                    .is_some_and(|b| !b.eq_ignore_ascii_case(&base))
                {
                    return Err(ProviderError::Garbage(format!(
                        "asked for {:?}, answered {base}",
                        request.base
                    )));
                }
                let rates = data
                    .get("rates")
                    .and_then(Value::as_object)
                    .ok_or_else(|| ProviderError::Garbage("no data.rates".into()))?;
                Ok(rates
                    .iter()
                    .filter(|(code, _)| wanted(code) && !code.eq_ignore_ascii_case(&base))
                    .filter_map(|(code, price)| {
                        Some(Quoted {
                            base: base.clone(),
                            quote: code.to_ascii_uppercase(),
                            price: decimal(price)?,
                            at: None,
                        })
                    })
                    .collect())
            }
            Provider::Kraken => {
                let errors: Vec<&str> = v
                    .get("error")
                    .and_then(Value::as_array)
                    .map(|e| e.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if !errors.is_empty() {
                    return Err(ProviderError::Refused(errors.join("; ")));
                }
                let result = v
                    .get("result")
                    .and_then(Value::as_object)
                    .ok_or_else(|| ProviderError::Garbage("no result".into()))?;
                Ok(result
                    .iter()
                    .filter_map(|(key, ticker)| {
                        let (base, quote) = kraken_pair(key)?;
                        if !wanted(&quote) {
                            return None;
                        }
                        Some(Quoted {
                            base,
                            quote,
                            price: decimal(ticker.get("c")?.get(0)?)?,
                            at: None,
                        })
                    })
                    .collect())
            }
            Provider::CoinGecko => {
                if let Some(status) = v.get("status") {
                    let message = status
                        .get("error_message")
                        .and_then(Value::as_str)
                        .unwrap_or("an error");
                    return Err(ProviderError::Refused(message.to_owned()));
                }
                let coins = v
                    .as_object()
                    .ok_or_else(|| ProviderError::Garbage("not an object".into()))?;
                let mut out = Vec::new();
                for (id, prices) in coins {
                    let Some((code, _)) = COINGECKO_IDS.iter().find(|(_, i)| i == id) else {
                        continue;
                    };
                    let Some(prices) = prices.as_object() else {
                        continue;
                    };
                    let at = prices
                        .get("last_updated_at")
                        .and_then(Value::as_i64)
                        .map(Timestamp);
                    for (vs, price) in prices {
                        let quote = vs.to_ascii_uppercase();
                        if vs == "last_updated_at" || !wanted(&quote) {
                            continue;
                        }
                        if let Some(price) = decimal(price) {
                            out.push(Quoted {
                                base: (*code).to_owned(),
                                quote,
                                price,
                                at,
                            });
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Kraken's pair name as (base, quote): `XXBTZUSD` → (BTC, USD), `XETHZEUR` → (ETH, EUR),
/// `USDCUSD` → (USDC, USD). Only the fiat quotes it is asked about are read.
fn kraken_pair(key: &str) -> Option<(String, String)> {
    let key = key.to_ascii_uppercase();
    let quote = KRAKEN_FIAT.iter().find(|q| key.ends_with(*q))?;
    let mut base = &key[..key.len() - quote.len()];
    // Legacy names: an X before a crypto code of three letters, a Z before a fiat one.
    if base.len() == 5 && base.ends_with('Z') {
        base = &base[..4];
    }
    if base.len() == 4 && base.starts_with('X') {
        base = &base[1..];
    }
    let base = match base {
        "XBT" => "BTC",
        "XDG" => "DOGE",
        other => other,
    };
    (!base.is_empty()).then(|| (base.to_owned(), (*quote).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotes() -> Vec<String> {
        ["USD", "EUR", "JPY", "KWD", "BHD"]
            .map(String::from)
            .to_vec()
    }

    fn price(out: &[Quoted], base: &str, quote: &str) -> Option<Decimal> {
        out.iter()
            .find(|q| q.base == base && q.quote == quote)
            .map(|q| q.price)
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn coinbase_gives_one_base_in_every_currency_from_strings() {
        let p = Provider::Coinbase;
        let reqs = p.requests(&["BTC".into(), "ETH".into()], &quotes());
        assert_eq!(reqs[0].path, "/v2/exchange-rates?currency=BTC");
        assert_eq!(reqs[2].path, "/v2/exchange-rates?currency=USD");
        let out = p
            .parse(
                &reqs[0],
                include_bytes!("../fixtures/coinbase-btc.json"),
                &quotes(),
            )
            .unwrap();
        assert_eq!(price(&out, "BTC", "USD"), Some(d("60000.00")));
        assert_eq!(price(&out, "BTC", "JPY"), Some(d("9000000")));
        assert_eq!(price(&out, "BTC", "KWD"), Some(d("18450.000")));
        assert_eq!(price(&out, "BTC", "GBP"), None, "not wanted");
        // An answer for another base than asked is not believed.
        assert!(p
            .parse(
                &reqs[1],
                include_bytes!("../fixtures/coinbase-btc.json"),
                &quotes()
            )
            .is_err());
        assert!(matches!(
            p.parse(&reqs[0], include_bytes!("../fixtures/coinbase-error.json"), &quotes()),
            Err(ProviderError::Refused(m)) if m.contains("Invalid currency")
        ));
    }

    #[test]
    fn kraken_pairs_are_its_own_names_and_errors_come_with_200() {
        let p = Provider::Kraken;
        let reqs = p.requests(&["BTC".into(), "ETH".into(), "DUSD".into()], &quotes());
        assert_eq!(
            reqs,
            vec![Request {
                path: "/0/public/Ticker?pair=XBTUSD,XBTEUR,XBTJPY,ETHUSD,ETHEUR,ETHJPY".into(),
                base: None
            }]
        );
        let out = p
            .parse(
                &reqs[0],
                include_bytes!("../fixtures/kraken-ticker.json"),
                &quotes(),
            )
            .unwrap();
        assert_eq!(price(&out, "BTC", "USD"), Some(d("60030.00000")));
        assert_eq!(price(&out, "BTC", "EUR"), Some(d("55515.00000")));
        assert_eq!(price(&out, "ETH", "USD"), Some(d("3001.00000")));
        assert!(matches!(
            p.parse(&reqs[0], include_bytes!("../fixtures/kraken-error.json"), &quotes()),
            Err(ProviderError::Refused(m)) if m.contains("Unknown asset pair")
        ));
        assert_eq!(kraken_pair("XXBTZUSD"), Some(("BTC".into(), "USD".into())));
        assert_eq!(kraken_pair("XETHZEUR"), Some(("ETH".into(), "EUR".into())));
        assert_eq!(kraken_pair("USDCUSD"), Some(("USDC".into(), "USD".into())));
        assert_eq!(kraken_pair("XBTCHF"), Some(("BTC".into(), "CHF".into())));
    }

    #[test]
    fn coingecko_prices_are_numbers_read_from_their_text_with_their_time() {
        let p = Provider::CoinGecko;
        let reqs = p.requests(&["BTC".into(), "ETH".into()], &quotes());
        assert!(
            reqs[0].path.starts_with(
                "/api/v3/simple/price?ids=bitcoin,ethereum&vs_currencies=usd,bhd,eur,jpy,kwd"
            ),
            "{}",
            reqs[0].path
        );
        let out = p
            .parse(
                &reqs[0],
                include_bytes!("../fixtures/coingecko-simple.json"),
                &quotes(),
            )
            .unwrap();
        assert_eq!(price(&out, "BTC", "USD"), Some(d("59970.12")));
        assert_eq!(price(&out, "ETH", "KWD"), Some(d("922.1")));
        assert_eq!(price(&out, "BTC", "JPY"), Some(d("8995000")));
        assert!(out.iter().all(|q| q.at == Some(Timestamp(1_800_000_000))));
        assert!(matches!(
            p.parse(&reqs[0], include_bytes!("../fixtures/coingecko-429.json"), &quotes()),
            Err(ProviderError::Refused(m)) if m.contains("Rate Limit")
        ));
    }

    #[test]
    fn garbage_is_refused_and_absurd_prices_are_dropped() {
        let req = Request {
            path: String::new(),
            base: Some("BTC".into()),
        };
        for p in Provider::ALL {
            assert!(matches!(
                p.parse(
                    &req,
                    b"<html><body>502 Bad Gateway</body></html>",
                    &quotes()
                ),
                Err(ProviderError::Garbage(_))
            ));
        }
        let body = br#"{"data":{"currency":"BTC","rates":{"USD":"0","EUR":"-5","JPY":"1e40","KWD":"abc","BHD":"22620.000"}}}"#;
        let out = Provider::Coinbase.parse(&req, body, &quotes()).unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(price(&out, "BTC", "BHD"), Some(d("22620.000")));
    }
}
