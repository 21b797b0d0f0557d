//! Exchange-rate providers served from loopback, answering in each provider's documented format
//! (the shapes of `adapters/rates/fixtures`): Coinbase's exchange rates, Kraken's ticker and
//! CoinGecko's simple price. Each provider's bitcoin price in USD is set by the test, the rest
//! follows from it (ETH = BTC / 20; EUR, JPY, KWD at fixed ratios to USD); or the provider is
//! made to fail: a 500, an HTML page, no answer at all (a hang past the relay's timeout). Stopped
//! on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a provider answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// Prices, with this bitcoin price in USD (a decimal string).
    Btc(String),
    /// HTTP 500 with a plain body.
    Down,
    /// HTTP 200 with an HTML page (a proxy's, a maintenance page).
    Html,
    /// No answer for 30 s.
    Hang,
}

/// The fiat currencies the feeds price in, as (code, units per USD).
const FIAT: [(&str, &str); 4] = [
    ("USD", "1"),
    ("EUR", "0.925"),
    ("JPY", "150"),
    ("KWD", "0.3075"),
];

pub struct RateFeeds {
    port: u16,
    feeds: Arc<Mutex<BTreeMap<String, Feed>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RateFeeds {
    /// Serves the three providers on a free loopback port, each at `Btc(price)` from `prices`
    /// (coinbase, kraken, coingecko).
    pub fn spawn(prices: [&str; 3]) -> anyhow::Result<RateFeeds> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let feeds: BTreeMap<String, Feed> = ["coinbase", "kraken", "coingecko"]
            .iter()
            .zip(prices)
            .map(|(n, p)| ((*n).to_owned(), Feed::Btc(p.to_owned())))
            .collect();
        let feeds = Arc::new(Mutex::new(feeds));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (feeds, stop) = (feeds.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let feeds = feeds.clone();
                            std::thread::spawn(move || {
                                let _ = answer(conn, &feeds);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Ok(RateFeeds {
            port,
            feeds,
            stop,
            thread: Some(thread),
        })
    }

    /// `RELAY_RATE_PROVIDERS` for a relay that asks these feeds.
    pub fn providers_setting(&self) -> String {
        ["coinbase", "kraken", "coingecko"]
            .iter()
            .map(|n| format!("{n}=http://127.0.0.1:{}/{n}", self.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How `provider` answers from now on.
    pub fn set(&self, provider: &str, feed: Feed) {
        self.feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(provider.to_owned(), feed);
    }
}

impl Drop for RateFeeds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `a × b`, both decimal strings, to 8 decimal places, by integer arithmetic on their digits.
fn mul(a: &str, b: &str) -> String {
    let scaled = |s: &str| -> (i128, u32) {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        (
            format!("{int}{frac}").parse().unwrap_or(0),
            u32::try_from(frac.len()).unwrap_or(0),
        )
    };
    let ((x, xs), (y, ys)) = (scaled(a), scaled(b));
    let (product, scale) = (x * y, xs + ys);
    let value = if scale >= 8 {
        product / 10i128.pow(scale - 8)
    } else {
        product * 10i128.pow(8 - scale)
    };
    format!("{}.{:08}", value / 100_000_000, value % 100_000_000)
}

fn body_for(provider: &str, query: &str, btc_usd: &str) -> String {
    let eth_usd = mul(btc_usd, "0.05");
    let in_fiat = |usd: &str| -> BTreeMap<&str, String> {
        FIAT.iter()
            .map(|(c, per_usd)| (*c, mul(usd, per_usd)))
            .collect()
    };
    match provider {
        "coinbase" => {
            let base = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("currency="))
                .unwrap_or("USD");
            let rates: BTreeMap<&str, String> = match base {
                "BTC" => in_fiat(btc_usd),
                "ETH" => in_fiat(&eth_usd),
                "USD" => in_fiat("1"),
                _ => {
                    return format!(
                        r#"{{"errors":[{{"id":"invalid_request","message":"Invalid currency ({base})"}}]}}"#
                    )
                }
            };
            serde_json::json!({"data": {"currency": base, "rates": rates}}).to_string()
        }
        "kraken" => {
            let ticker = |price: &str| {
                serde_json::json!({"a": [price, "1", "1.000"], "b": [price, "1", "1.000"],
                    "c": [price, "0.00100000"], "v": ["1.0", "1.0"], "p": [price, price],
                    "t": [1, 1], "l": [price, price], "h": [price, price], "o": price})
            };
            let btc = in_fiat(btc_usd);
            let eth = in_fiat(&eth_usd);
            serde_json::json!({"error": [], "result": {
                "XXBTZUSD": ticker(&btc["USD"]), "XXBTZEUR": ticker(&btc["EUR"]),
                "XXBTZJPY": ticker(&btc["JPY"]), "XETHZUSD": ticker(&eth["USD"]),
                "XETHZEUR": ticker(&eth["EUR"]), "XETHZJPY": ticker(&eth["JPY"])}})
            .to_string()
        }
        _ => {
            // CoinGecko: numbers, not strings, with the time of the price.
            let coin = |usd: &str| {
                let mut m = serde_json::Map::new();
                for (c, v) in in_fiat(usd) {
                    let n: serde_json::Number = v.parse().unwrap_or_else(|_| 0.into());
                    m.insert(c.to_ascii_lowercase(), serde_json::Value::Number(n));
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                m.insert("last_updated_at".into(), now.into());
                serde_json::Value::Object(m)
            };
            serde_json::json!({"bitcoin": coin(btc_usd), "ethereum": coin(&eth_usd)}).to_string()
        }
    }
}

fn answer(mut conn: TcpStream, feeds: &Mutex<BTreeMap<String, Feed>>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Drain the headers.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let provider = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let feed = feeds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(provider)
        .cloned();
    let (status, kind, body) = match feed {
        Some(Feed::Btc(price)) => (
            "200 OK",
            "application/json",
            body_for(provider, query, &price),
        ),
        Some(Feed::Down) => (
            "500 Internal Server Error",
            "text/plain",
            "upstream down".into(),
        ),
        Some(Feed::Html) => (
            "200 OK",
            "text/html",
            "<html><body><h1>Under maintenance</h1></body></html>".into(),
        ),
        Some(Feed::Hang) => {
            std::thread::sleep(Duration::from_secs(30));
            return Ok(());
        }
        None => ("404 Not Found", "text/plain", "no such provider".into()),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_exact_to_eight_places() {
        assert_eq!(mul("60000", "0.925"), "55500.00000000");
        assert_eq!(mul("60000", "0.05"), "3000.00000000");
        assert_eq!(mul("3000", "0.3075"), "922.50000000");
    }
}
