//! Live exchange rates end to end: a relay asking three providers served on loopback in their own
//! documented formats (`relay_testnet::RateFeeds`), with a real bitcoin node for the rail priced.
//! The rate is the median of the fresh prices; an outlier, a provider answering HTML or failing
//! is carried by the others; when every provider is down, the last good rates are used until
//! their maximum age, and then invoices get 503 `rate_unavailable` until a provider is back.

use crate::{create_invoice, merchant_create_with, Server};
use relay_testnet::{BitcoinNode, Feed, RateFeeds};
use serde_json::{json, Value};
use std::time::Duration;

async fn rates(client: &reqwest::Client, url: &str, key: &str) -> Value {
    client
        .get(format!("{url}/v1/rates"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn pair<'a>(all: &'a Value, name: &str) -> &'a Value {
    all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pair"] == name)
        .unwrap_or_else(|| panic!("{name} in {all}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_are_priced_at_the_median_of_live_rates_until_every_price_is_too_old() {
    let feeds = RateFeeds::spawn(["60000", "60030", "59970"]).unwrap();
    let node = BitcoinNode::spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = merchant_create_with(
        dir.path(),
        "rates shop",
        &["--btc-descriptor", &crate::bitcoin::descriptor(23, "wpkh")],
    );
    let key = m["api_key"].as_str().unwrap().to_owned();
    let env = [
        ("RELAY_RATES", String::new()),
        ("RELAY_RATE_PROVIDERS", feeds.providers_setting()),
        ("RELAY_RATE_REFRESH_SECS", "1".to_owned()),
        ("RELAY_RATE_MAX_AGE_SECS", "4".to_owned()),
        ("RELAY_RATE_TIMEOUT_SECS", "1".to_owned()),
        ("RELAY_BTC_RPC_URL", node.rpc_url_with_auth()),
        // A token no provider knows: Coinbase refuses that one request, and its other prices
        // still count.
        (
            "RELAY_TOKENS",
            "DUSD:6:0x00000000000000000000000000000000000000d5".to_owned(),
        ),
    ];
    let server = Server::start_with(dir.path(), crate::free_port(), &env).await;
    let client = reqwest::Client::new();
    let mut n = 0;
    let mut invoice = |currency: &'static str, amount: &'static str| {
        n += 1;
        let (client, url, key) = (client.clone(), server.url.clone(), key.clone());
        async move {
            create_invoice(
                &client,
                &url,
                &key,
                &format!("rates-{n}"),
                &json!({"amount": amount, "currency": currency, "payment_methods": ["bitcoin"]}),
            )
            .await
            .unwrap()
        }
    };

    // All three agree: the median, with its sources and age, locked into the invoice.
    let (status, inv) = invoice("USD", "25.00").await;
    assert_eq!(status, 200, "{inv}");
    let btc = &inv["payment_methods"]["bitcoin"];
    assert_eq!(btc["rate"], "60000");
    assert_eq!(
        btc["rate_sources"],
        json!(["coinbase", "coingecko", "kraken"])
    );
    assert!(btc["rate_as_of"].is_string(), "{btc}");
    assert_eq!(btc["amount_sat"], "41667", "25 USD at 60000, rounded up");
    let all = rates(&client, &server.url, &key).await;
    assert_eq!(pair(&all, "BTC/USD")["rate"], "60000");
    assert_eq!(pair(&all, "BTC/JPY")["rate"], "9000000");
    assert!(pair(&all, "BTC/USD")["age_secs"].as_i64().unwrap() <= 4);
    assert_eq!(all["providers"].as_array().unwrap().len(), 3);
    // A currency only two providers quote (Kraken has no KWD): their median, in fils (3 places).
    let (status, kwd) = invoice("KWD", "10.000").await;
    assert_eq!(status, 200, "{kwd}");
    assert_eq!(
        kwd["payment_methods"]["bitcoin"]["rate_sources"],
        json!(["coinbase", "coingecko"])
    );

    // An absurd price from one provider: left out, the other two carry the median.
    feeds.set("coingecko", Feed::Btc("6000".into()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, inv) = invoice("USD", "25.00").await;
    let btc = &inv["payment_methods"]["bitcoin"];
    assert_eq!(btc["rate"], "60015", "{btc}");
    assert_eq!(btc["rate_sources"], json!(["coinbase", "kraken"]));

    // One answers an HTML page, another fails: once their prices are too old, the third carries.
    feeds.set("kraken", Feed::Html);
    feeds.set("coingecko", Feed::Down);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, inv) = invoice("USD", "25.00").await;
    assert_eq!(status, 200, "{inv}");
    assert_eq!(
        inv["payment_methods"]["bitcoin"]["rate_sources"],
        json!(["coinbase"])
    );
    let all = rates(&client, &server.url, &key).await;
    let health = |name: &str| -> Value {
        all["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert!(
        health("kraken")["last_error"]
            .as_str()
            .unwrap()
            .contains("not the provider's format"),
        "{all}"
    );
    assert!(
        health("coingecko")["last_error"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{all}"
    );
    assert!(health("coinbase")["last_error"].is_null());

    // Every provider down (the last one stops answering at all): the last good rates are used
    // until they are too old, then 503 `rate_unavailable`; never a wrong price.
    feeds.set("coinbase", Feed::Hang);
    let (status, inv) = invoice("USD", "25.00").await;
    assert_eq!(status, 200, "still within the maximum age: {inv}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let resp = client
        .post(format!("{}/v1/invoices", server.url))
        .bearer_auth(&key)
        .json(&json!({"amount": "25.00", "currency": "USD", "payment_methods": ["bitcoin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_unavailable", "{body}");
    let all = rates(&client, &server.url, &key).await;
    let usd = pair(&all, "BTC/USD");
    assert!(usd["rate"].is_null(), "{usd}");
    assert!(
        usd["unavailable"].as_str().unwrap().contains("older than"),
        "{usd}"
    );

    // Back: priced again.
    feeds.set("kraken", Feed::Btc("60030".into()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, inv) = invoice("USD", "25.00").await;
    assert_eq!(status, 200, "{inv}");
    assert_eq!(inv["payment_methods"]["bitcoin"]["rate"], "60030");
}

/// A payment that arrives after its quote expired is worth what it is worth at the rate of its
/// arrival: bitcoin halved meanwhile, so the quoted amount now pays half the price, and the
/// invoice says so (`paid_partial`) instead of settling at the old rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_after_its_quote_expired_is_repriced_at_the_rate_of_its_arrival() {
    use relay_bitcoin::bitcoin::{Address, Network};
    use relay_testnet::btc_wallet::{broadcast, TestWallet};
    use std::str::FromStr;
    let feeds = RateFeeds::spawn(["60000", "60000", "60000"]).unwrap();
    let node = BitcoinNode::spawn().unwrap();
    let mut wallet = TestWallet::new(73);
    wallet.fund(&node, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = merchant_create_with(
        dir.path(),
        "quote shop",
        &[
            "--btc-descriptor",
            &crate::bitcoin::descriptor(29, "wpkh"),
            "--quote-ttl-secs",
            "10",
        ],
    );
    let key = m["api_key"].as_str().unwrap().to_owned();
    let env = [
        ("RELAY_RATES", String::new()),
        ("RELAY_RATE_PROVIDERS", feeds.providers_setting()),
        ("RELAY_RATE_REFRESH_SECS", "1".to_owned()),
        ("RELAY_RATE_MAX_AGE_SECS", "30".to_owned()),
        ("RELAY_BTC_RPC_URL", node.rpc_url_with_auth()),
        ("RELAY_BTC_POLL_MS", "100".to_owned()),
    ];
    let server = Server::start_with(dir.path(), crate::free_port(), &env).await;
    let client = reqwest::Client::new();
    let (status, inv) = create_invoice(
        &client,
        &server.url,
        &key,
        "quote-1",
        &json!({"amount": "25.00", "currency": "USD", "payment_methods": ["bitcoin"],
            "expires_in": 600}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{inv}");
    let btc = &inv["payment_methods"]["bitcoin"];
    assert_eq!(btc["rate"], "60000");
    let quote_ends = btc["quote_expires_at"].as_str().expect("a quote expiry");
    assert!(quote_ends < inv["expires_at"].as_str().unwrap(), "{inv}");
    let sat: u64 = btc["amount_sat"].as_str().unwrap().parse().unwrap();
    let script = Address::from_str(btc["address"].as_str().unwrap())
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap()
        .script_pubkey();

    let (_, other) = create_invoice(
        &client,
        &server.url,
        &key,
        "quote-2",
        &json!({"amount": "25.00", "currency": "USD", "payment_methods": ["bitcoin"],
            "expires_in": 600}),
    )
    .await
    .unwrap();

    // Bitcoin halves, and the payer pays the old quote after it expired.
    for p in ["coinbase", "kraken", "coingecko"] {
        feeds.set(p, Feed::Btc("30000".into()));
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    // Another payer's wallet asks for a fresh quote first: the current rate, for a new lifetime.
    let fresh: Value = client
        .post(format!("{}/quote", other["checkout_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fresh_btc = &fresh["payment_methods"]["bitcoin"];
    assert_eq!(fresh_btc["rate"], "30000", "{fresh}");
    assert_eq!(
        fresh_btc["amount_sat"], "83334",
        "25 USD at 30000, rounded up"
    );
    assert!(
        fresh_btc["quote_expires_at"].as_str().unwrap() > quote_ends,
        "{fresh}"
    );
    let tx = wallet.pay(&[(script, sat)]).unwrap();
    broadcast(&node, &tx).unwrap();
    node.mine(1, &[0xee; 20]).unwrap();
    let id = inv["id"].as_str().unwrap();
    let start = std::time::Instant::now();
    let paid = loop {
        let now = crate::get_invoice(&client, &server.url, &key, id).await;
        let p = &now["payments"][0];
        if p["repricing"] == "priced" && p["status"] == "confirmed" {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never priced: {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let p = &paid["payments"][0];
    assert_eq!(p["rate"], "30000", "{paid}");
    assert_eq!(p["worth"], "12.50", "{paid}");
    assert_eq!(paid["exception"], "paid_partial", "{paid}");
    assert_eq!(
        paid["status"], "processing",
        "not settled at the old rate: {paid}"
    );
    // Once something is paid, its quote stands: no fresh quote, from the merchant either.
    let refused = client
        .post(format!("{}/v1/invoices/{id}/quote", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quote_not_refreshable");

    // The payer's page asks for the rest at the current rate, and paying it settles the invoice.
    let request: Value = client
        .get(format!(
            "{}/payment_request",
            inv["checkout_url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now_btc = &request["payment_methods"]["bitcoin"];
    assert_eq!(request["amount_due"], "12.50", "{request}");
    assert_eq!(now_btc["rate"], "30000", "{request}");
    assert_eq!(
        now_btc["amount_sat"], "41667",
        "12.50 USD at 30000, rounded up"
    );
    let rest: u64 = now_btc["amount_sat"].as_str().unwrap().parse().unwrap();
    let script = Address::from_str(now_btc["address"].as_str().unwrap())
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap()
        .script_pubkey();
    let tx = wallet.pay(&[(script, rest)]).unwrap();
    broadcast(&node, &tx).unwrap();
    node.mine(1, &[0xee; 20]).unwrap();
    let settled =
        crate::card::wait_for(&client, &server.url, &key, id, |i| i["status"] == "settled").await;
    assert!(settled["exception"].is_null(), "{settled}");
}
