//! Throughput, latency and memory of the relay, measured against the real `relay serve` process
//! on a loopback port: `cargo bench -p relay --bench throughput` (or `make bench`).
//!
//! 1. Raw store: sled transactions + flush, one at a time and with 64 concurrent writers sharing
//!    group commits — the ceiling the API can reach.
//! 2. `POST /v1/invoices` (durable before the answer) at 64 concurrent connections.
//! 3. `GET /v1/invoices/{id}` at 64 concurrent connections.
//! 4. Verified and persisted gateway webhooks (`POST /v1/gateways/stripe/webhook`, each a fresh
//!    signed event) at 64 concurrent connections.
//! 5. Resident memory of a relay serving a store of 100,000 invoices.
//! 6. Bitcoin: time from a block being mined on the regtest node (bcoin) to the invoice it pays
//!    reading `settled`, with the watcher polling every 1000 ms (the default) and every 100 ms.
//! 7. Ethereum: time from the block holding an escrow deposit being mined on anvil to the invoice
//!    reading `settled` (1 confirmation: `processing` and `settled` are reached in the same step),
//!    polling every 1000 ms, with WebSocket new heads, and polling every 100 ms.
//! 8. Ethereum catch-up: a relay started after 10,000 blocks holding 1,000 deposits, timed until
//!    its watcher reaches the tip with every invoice settled.
//! 9. Merchant webhooks: a relay started with 20,000 undelivered events, timed until a local
//!    receiver has every one (`RELAY_BENCH_WEBHOOKS`).
//! 10. Card to merchant: a card payment confirmed at localstripe, its signed
//!     `payment_intent.succeeded` delivered to the relay, timed until the merchant's endpoint
//!     has `invoice.settled` and, for a merchant paid on Ethereum, `settlement.paid` (the
//!     escrow's `settle` mined on anvil, WebSocket heads).
//! 12. Checkout: the page's weight (HTML + CSS + JS), against a 100 KB aim, and the time from a
//!     bitcoin block being mined to the open page's event stream saying `settled`.
//! 11. PostgreSQL: the server's own single-row insert + commit rate (the limit), `POST` and `GET
//!     /v1/invoices` with 1, 2 and 3 relays on one database beside one on sled, and failover (the
//!     leader SIGKILLed, timed until the next block's payment is settled by another relay).
//!
//! Bounded: each load phase runs for a fixed time (`RELAY_BENCH_SECS`, default 10).

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

// The same allocator as the relay binary, so the raw store figures compare like with like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use relay_core::{
    Amount, Asset, AssetBook, Event, FixedRates, Invoice, Method, Money, NewInvoice, Timestamp,
};
use relay_store::prelude::*;
use relay_store_sled::SledStore;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
const CONCURRENCY: usize = 64;
static IDS: std::sync::LazyLock<relay_engine::IdSource> =
    std::sync::LazyLock::new(Default::default);

fn secs() -> Duration {
    Duration::from_secs(
        std::env::var("RELAY_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    )
}

fn sample_invoice(merchant: &relay_core::MerchantId, n: u64) -> (Invoice, Vec<Event>) {
    let params = NewInvoice {
        merchant_id: merchant.clone(),
        price: Money {
            asset: Asset::fiat("USD", 2),
            amount: Amount::from_minor(2500 + u128::from(n % 1000)),
        },
        order_id: Some(format!("order-{n}")),
        description: None,
        metadata: Default::default(),
        expires_at: Timestamp(1_900_000_900),
        methods: vec![Method::Bitcoin, Method::Ethereum, Method::Card],
        tolerance_bps: 0,
        eth_asset: None,
    };
    let rates = FixedRates::from_pairs([("BTC/USD", "60000"), ("ETH/USD", "2500")]).unwrap();
    let quotes = params.quote(&AssetBook::default(), &rates).unwrap();
    let (inv, kinds) =
        Invoice::create(IDS.invoice_id(), params, quotes, Timestamp(1_900_000_000)).unwrap();
    let events = Event::for_invoice(&inv, &kinds, inv.created_at, || IDS.event_id());
    (inv, events)
}

fn bench_descriptor() -> String {
    use relay_bitcoin::bitcoin::bip32::{Xpriv, Xpub};
    let xprv = Xpriv::new_master(relay_bitcoin::bitcoin::Network::Regtest, &[3; 32]).unwrap();
    let secp = relay_bitcoin::bitcoin::secp256k1::Secp256k1::new();
    format!("wpkh({}/0/*)", Xpub::from_priv(&secp, &xprv))
}

/// Where the bench merchant's Ethereum captures go.
const BENCH_PAYOUT: &str = "0x00000000000000000000000000000000000b0b00";

async fn merchant_in<S: relay_store::Store>(store: &S) -> (relay_core::MerchantId, String) {
    let created = relay::merchant::create(
        store,
        &relay_engine::SystemClock,
        relay::merchant::NewMerchant {
            name: "bench".into(),
            btc_descriptor: Some(bench_descriptor()),
            eth_payout: Some(BENCH_PAYOUT.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (
        relay_core::MerchantId::parse(&created.id).unwrap(),
        created.api_key,
    )
}

/// Gives the merchant a webhook endpoint at `url` for `types` (all when empty).
async fn add_endpoint(store: &SledStore, mid: &relay_core::MerchantId, url: &str, types: &[&str]) {
    let merchant = store.merchant(mid).await.unwrap().unwrap();
    let endpoint = relay_engine::endpoints::new_endpoint(
        &merchant,
        url,
        types.iter().map(|t| (*t).to_owned()).collect(),
        relay_core::Secret::from_entropy("whsec_", [9; 32]),
        rand::random(),
        Timestamp(1_900_000_000),
    )
    .unwrap();
    store.insert_endpoint(&endpoint).await.unwrap();
}

async fn raw_store(rt_secs: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let (mid, _) = merchant_in(&store).await;
    // One transaction + one flush at a time.
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < rt_secs / 2 {
        let (inv, ev) = sample_invoice(&mid, n);
        store.create_invoice(&inv, &ev, None).await.unwrap();
        store.durable().await.unwrap();
        n += 1;
    }
    let serial = n as f64 / start.elapsed().as_secs_f64();
    // 64 concurrent writers, flushes grouped.
    let store = Arc::new(store);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY as u64 {
        let (store, mid) = (store.clone(), mid.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while start.elapsed() < rt_secs / 2 {
                let (inv, ev) = sample_invoice(&mid, w * 1_000_000 + k);
                store.create_invoice(&inv, &ev, None).await.unwrap();
                store.durable().await.unwrap();
                k += 1;
            }
            k
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let grouped = total as f64 / start.elapsed().as_secs_f64();
    println!("raw sled: create_invoice tx + flush, serial      {serial:>9.0} /s");
    println!("raw sled: create_invoice tx + flush, 64 writers  {grouped:>9.0} /s  (group commit)");
    RAW_GROUPED.with(|c| c.set(grouped));
}

thread_local!(static RAW_GROUPED: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) });

struct Relay {
    child: Child,
    url: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

const WEBHOOK_SECRET: &str = "whsec_bench";

/// Settings giving a relay the Ethereum rail of a bench anvil.
fn eth_env(
    anvil: &relay_testnet::Anvil,
    eth: &relay::dev::DevEthereum,
    poll_ms: u64,
    ws: bool,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("RELAY_ETH_RPC_URL".to_owned(), anvil.url()),
        ("RELAY_ESCROW_ADDRESS".to_owned(), eth.escrow.clone()),
        ("RELAY_OPERATOR_KEY".to_owned(), eth.operator_key.clone()),
        ("RELAY_ETH_POLL_MS".to_owned(), poll_ms.to_string()),
    ];
    if ws {
        env.push(("RELAY_ETH_WS_URL".to_owned(), anvil.ws_url()));
    }
    env
}

async fn start_relay(
    data_dir: &std::path::Path,
    btc_rpc: &str,
    btc_poll_ms: u64,
    extra: &[(String, String)],
) -> Relay {
    start_relay_bin(RELAY, data_dir, btc_rpc, btc_poll_ms, extra).await
}

/// [`start_relay`] with another relay binary (the A/B comparison's baseline).
async fn start_relay_bin(
    bin: &str,
    data_dir: &std::path::Path,
    btc_rpc: &str,
    btc_poll_ms: u64,
    extra: &[(String, String)],
) -> Relay {
    let port = relay_testnet::free_port().unwrap();
    // A gateway base that is never called: the bench only receives webhooks.
    let unused = relay_testnet::free_port().unwrap();
    let child = Command::new(bin)
        .arg("serve")
        .env(
            "RELAY_STRIPE_API_BASE",
            format!("http://127.0.0.1:{unused}"),
        )
        .env("RELAY_STRIPE_SECRET_KEY", "sk_test_bench")
        .env("RELAY_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("RELAY_CARD_RECONCILE_SECS", "3600")
        .env("RELAY_BTC_RPC_URL", btc_rpc)
        .env("RELAY_BTC_POLL_MS", btc_poll_ms.to_string())
        .env("RELAY_DATA_DIR", data_dir)
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_RATES", "BTC/USD=60000,ETH/USD=2500")
        // The bench's webhook receivers are on loopback.
        .env("RELAY_WEBHOOK_ALLOW_PRIVATE", "true")
        // The bench measures the relay's own capacity, not the per-key limit.
        .env("RELAY_RATE_LIMIT_PER_SEC", "0")
        .env("RELAY_LOG", "warn")
        .envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    while client.get(format!("{url}/readyz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Relay { child, url }
}

/// `GET url` with the merchant's key, as JSON.
async fn get_json(client: &reqwest::Client, url: &str, key: &str) -> Value {
    client
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `POST /v1/invoices` (bitcoin and Ethereum offered) then `GET /v1/invoices/{id}` against a
/// fresh relay run from `bin`.
async fn post_then_get(
    bin: &str,
    btc_rpc: &str,
    extra: &[(String, String)],
    dur: Duration,
) -> (Load, Load) {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let store = SledStore::open(dir.path()).unwrap();
        let (_, key) = merchant_in(&store).await;
        store.durable().await.unwrap();
        key
    };
    let relay = start_relay_bin(bin, dir.path(), btc_rpc, 1000, extra).await;
    let loads = post_and_get(std::slice::from_ref(&relay.url), &key, "ab", dur).await;
    drop(relay);
    loads
}

/// `POST /v1/invoices` (bitcoin and Ethereum offered, keys and order ids tagged `tag`) then `GET
/// /v1/invoices/{id}` of the newest hundred, the connections spread over the relays at `urls`.
async fn post_and_get(urls: &[String], key: &str, tag: &str, dur: Duration) -> (Load, Load) {
    let addrs: Vec<String> = urls
        .iter()
        .map(|u| u.trim_start_matches("http://").to_owned())
        .collect();
    let (k, tag) = (key.to_owned(), tag.to_owned());
    let post = load_spread(&addrs, dur, move |conn, i| {
        let body = json!({"amount": "25.00", "currency": "USD", "order_id": format!("{tag}-{conn}-{i}"), "payment_methods": ["bitcoin", "ethereum"]}).to_string();
        request("POST", "/v1/invoices", &k, &format!("Idempotency-Key: {tag}-{conn}-{i}\r\n"), &body)
    })
    .await;
    let page = get_json(
        &reqwest::Client::new(),
        &format!("{}/v1/invoices?limit=100", urls[0]),
        key,
    )
    .await;
    let gets: Arc<Vec<Vec<u8>>> = Arc::new(
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                request(
                    "GET",
                    &format!("/v1/invoices/{}", i["id"].as_str().unwrap()),
                    key,
                    "",
                    "",
                )
            })
            .collect(),
    );
    let get = load_spread(&addrs, dur, move |conn, i| {
        gets[(conn + i as usize) % gets.len()].clone()
    })
    .await;
    (post, get)
}

struct Load {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// A minimal HTTP/1.1 keep-alive client: writes a prepared request, reads one response. It keeps
/// the load generator's own CPU use small, since it shares the machine with the relay.
struct Conn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: tokio::io::BufReader::new(stream),
        })
    }

    /// Sends `request` and returns the status code and body.
    async fn call(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        self.stream.get_mut().write_all(request).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

fn request(method: &str, path: &str, key: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Runs `CONCURRENCY` connections for `dur`, each sending `make(conn, i)` requests back to back.
async fn load<F>(addr: &str, dur: Duration, make: F) -> Load
where
    F: Fn(usize, u64) -> Vec<u8> + Send + Sync + 'static,
{
    load_spread(&[addr.to_owned()], dur, make).await
}

/// [`load`] with the connections spread over several relays (connection `c` to `addrs[c % n]`).
async fn load_spread<F>(addrs: &[String], dur: Duration, make: F) -> Load
where
    F: Fn(usize, u64) -> Vec<u8> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONCURRENCY {
        let (make, addr) = (make.clone(), addrs[c % addrs.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await.unwrap();
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            let mut i = 0u64;
            while start.elapsed() < dur {
                let req = make(c, i);
                let t = Instant::now();
                match conn.call(&req).await {
                    Ok((200, _)) => lat.push(t.elapsed()),
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        conn = Conn::open(&addr).await.unwrap();
                    }
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    Load {
        rate: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Median and worst time from `generatetoaddress` returning to the invoice reading `settled`.
async fn btc_block_to_settled(
    node: &relay_testnet::BitcoinNode,
    wallet: &mut relay_testnet::btc_wallet::TestWallet,
    poll_ms: u64,
    rounds: usize,
    eth: &[(String, String)],
) {
    use std::str::FromStr;
    // The merchant's webhook receiver: when each invoice's `invoice.settled` arrived.
    let settled_at: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> =
        Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let seen = settled_at.clone();
    let receiver = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |body: String| {
                let seen = seen.clone();
                async move {
                    let v: Value = serde_json::from_str(&body).unwrap_or_default();
                    if v["type"] == "invoice.settled" {
                        if let Some(id) = v["data"]["object"]["id"].as_str() {
                            seen.lock().unwrap().insert(id.to_owned(), Instant::now());
                        }
                    }
                    "ok"
                }
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let store = SledStore::open(dir.path()).unwrap();
        let (mid, key) = merchant_in(&store).await;
        add_endpoint(&store, &mid, &hook_url, &["invoice.settled"]).await;
        store.durable().await.unwrap();
        key
    };
    let relay = start_relay(dir.path(), &node.rpc_url_with_auth(), poll_ms, eth).await;
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    let mut hook_times = Vec::new();
    for i in 0..rounds {
        let inv: Value = client.post(format!("{}/v1/invoices", relay.url)).bearer_auth(&key)
            .json(&json!({"amount": format!("{}.00", 10 + i), "currency": "USD", "payment_methods": ["bitcoin"]}))
            .send().await.unwrap().json().await.unwrap();
        let btc = &inv["payment_methods"]["bitcoin"];
        let script = relay_bitcoin::bitcoin::Address::from_str(btc["address"].as_str().unwrap())
            .unwrap()
            .assume_checked()
            .script_pubkey();
        let sat: u64 = btc["amount_sat"].as_str().unwrap().parse().unwrap();
        let tx = wallet.pay(&[(script, sat)]).unwrap();
        relay_testnet::btc_wallet::broadcast(node, &tx).unwrap();
        let url = format!("{}/v1/invoices/{}", relay.url, inv["id"].as_str().unwrap());
        // Polls the invoice until it reads `status`.
        let until = |status: &'static str, every: u64| {
            let (client, url, key) = (&client, &url, &key);
            async move {
                loop {
                    let v: Value = client
                        .get(url)
                        .bearer_auth(key)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    if v["status"] == status {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(every)).await;
                }
            }
        };
        // Seen in the mempool first, as in real use.
        until("processing", 5).await;
        node.mine(1, &[0xee; 20]).unwrap();
        let mined = Instant::now();
        until("settled", 2).await;
        times.push(mined.elapsed());
        let id = inv["id"].as_str().unwrap().to_owned();
        loop {
            if let Some(at) = settled_at.lock().unwrap().get(&id) {
                hook_times.push(at.duration_since(mined));
                break;
            }
            assert!(
                mined.elapsed() < Duration::from_secs(30),
                "no webhook for {id}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    receiver.abort();
    hook_times.sort();
    println!("bitcoin block mined -> merchant's invoice.settled webhook, poll {:>4} ms: median {:>7.1} ms  max {:>7.1} ms",
        poll_ms, hook_times[hook_times.len() / 2].as_secs_f64() * 1e3, hook_times[hook_times.len() - 1].as_secs_f64() * 1e3);
    times.sort();
    println!("bitcoin block mined -> settled, poll {:>4} ms: median {:>7.1} ms  max {:>7.1} ms  ({} rounds)",
        poll_ms, times[times.len() / 2].as_secs_f64() * 1e3, times[times.len() - 1].as_secs_f64() * 1e3, rounds);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dur = secs();
        println!("relay throughput bench: {CONCURRENCY} concurrent connections, {}s per phase, {} cores", dur.as_secs(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        // `RELAY_BENCH_ONLY=ethereum` runs phases 7 and 8 alone, `=webhooks` phase 9, `=card`
        // phase 10, `=postgres` phase 11, `=checkout` phase 12.
        let only = std::env::var("RELAY_BENCH_ONLY").unwrap_or_default();
        let only_eth = !only.is_empty();
        // Invoices offer bitcoin, so creating one derives an address: the relay needs its node.
        let node = relay_testnet::BitcoinNode::spawn().unwrap();
        let rounds: usize = std::env::var("RELAY_BENCH_BTC_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
        if !only_eth {
        raw_store(dur).await;
        let raw = RAW_GROUPED.with(|c| c.get());
        let anvil = relay_testnet::Anvil::spawn().unwrap();
        let eth = relay::dev::deploy_dev_contracts(&anvil).await.unwrap();
        let eth_default = eth_env(&anvil, &eth, 1000, false);

        // HTTP phases against a real `relay serve`.
        let dir = tempfile::tempdir().unwrap();
        let key = {
            let store = SledStore::open(dir.path()).unwrap();
            let (_, key) = merchant_in(&store).await;
            store.durable().await.unwrap();
            key
        };
        let relay = start_relay(dir.path(), &node.rpc_url_with_auth(), 1000, &eth_default).await;
        let addr = relay.url.trim_start_matches("http://").to_owned();
        // With bitcoin (an address derived and claimed per invoice), then without it: the
        // difference is what the bitcoin rail costs invoice creation.
        for (label, tag, methods) in [
            ("POST /v1/invoices (durable)  ", "b", json!(["bitcoin", "ethereum"])),
            ("POST /v1/invoices, no bitcoin", "e", json!(["ethereum"])),
        ] {
            let k = key.clone();
            let post = load(&addr, dur, move |conn, i| {
                let body = json!({"amount": "25.00", "currency": "USD", "order_id": format!("{tag}-{conn}-{i}"), "payment_methods": methods}).to_string();
                request("POST", "/v1/invoices", &k, &format!("Idempotency-Key: {tag}-{conn}-{i}\r\n"), &body)
            }).await;
            println!("{label} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  ratio to raw sled {:.2}",
                post.rate, post.p50.as_secs_f64() * 1e3, post.p99.as_secs_f64() * 1e3, post.errors, post.rate / raw);
        }

        let client = reqwest::Client::new();
        let page = get_json(&client, &format!("{}/v1/invoices?limit=100", relay.url), &key).await;
        let ids: Vec<String> = page["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
        let k = key.clone();
        let gets: Arc<Vec<Vec<u8>>> = Arc::new(ids.iter().map(|id| request("GET", &format!("/v1/invoices/{id}"), &k, "", "")).collect());
        let get = load(&addr, dur, move |conn, i| gets[(conn + i as usize) % gets.len()].clone()).await;
        println!("GET /v1/invoices/{{id}}         {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
            get.rate, get.p50.as_secs_f64() * 1e3, get.p99.as_secs_f64() * 1e3, get.errors);
        // Gateway webhooks: each a distinct event, signed now (the tolerance is 300 s).
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let hooks = load(&addr, dur, move |conn, i| {
            use hmac::Mac;
            let body = json!({"id": format!("evt_bench_{conn}_{i}"), "object": "event", "type": "payment_intent.succeeded",
                "data": {"object": {"id": format!("pi_bench_{conn}_{i}"), "amount": 2500, "amount_received": 2500, "currency": "usd", "status": "succeeded"}}}).to_string();
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
            mac.update(format!("{t}.{body}").as_bytes());
            let sig = hex::encode(mac.finalize().into_bytes());
            format!(
                "POST /v1/gateways/stripe/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nStripe-Signature: t={t},v1={sig}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }).await;
        println!("POST gateway webhook (verify + durable record) {:>6.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
            hooks.rate, hooks.p50.as_secs_f64() * 1e3, hooks.p99.as_secs_f64() * 1e3, hooks.errors);
        drop(relay);

        // A/B: another relay binary (`RELAY_BENCH_BASELINE`, e.g. one built from an older
        // commit) and this one, back to back on fresh stores, under the same load.
        if let Ok(baseline) = std::env::var("RELAY_BENCH_BASELINE") {
            let (bp, bg) = post_then_get(&baseline, &node.rpc_url_with_auth(), &eth_default, dur).await;
            let (cp, cg) = post_then_get(RELAY, &node.rpc_url_with_auth(), &eth_default, dur).await;
            for (label, b, c) in [("POST /v1/invoices (durable)", &bp, &cp), ("GET /v1/invoices/{id}     ", &bg, &cg)] {
                println!("A/B {label}  baseline {:>8.0} req/s (p99 {:>6.2} ms, errors {})  this build {:>8.0} req/s (p99 {:>6.2} ms, errors {})  ratio {:.2}",
                    b.rate, b.p99.as_secs_f64() * 1e3, b.errors, c.rate, c.p99.as_secs_f64() * 1e3, c.errors, c.rate / b.rate);
            }
        }

        // Memory with 100,000 stored invoices.
        let dir = tempfile::tempdir().unwrap();
        let (key, ids) = {
            let store = SledStore::open(dir.path()).unwrap();
            let (mid, key) = merchant_in(&store).await;
            let mut ids = Vec::new();
            for n in 0..100_000u64 {
                let (inv, ev) = sample_invoice(&mid, n);
                if n % 1000 == 0 {
                    ids.push(inv.id.to_string());
                }
                store.create_invoice(&inv, &ev, None).await.unwrap();
            }
            store.durable().await.unwrap();
            (key, ids)
        };
        let relay = start_relay(dir.path(), &node.rpc_url_with_auth(), 1000, &eth_default).await;
        let (idle, _) = rss_kib(relay.child.id());
        let client = reqwest::Client::new();
        for id in &ids {
            let r = client.get(format!("{}/v1/invoices/{id}", relay.url)).bearer_auth(&key).send().await.unwrap();
            assert!(r.status().is_success());
        }
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut u = format!("{}/v1/invoices?limit=100", relay.url);
            if let Some(c) = &cursor { u.push_str(&format!("&starting_after={c}")); }
            let page = get_json(&client, &u, &key).await;
            cursor = page["data"].as_array().unwrap().last().map(|i| i["id"].as_str().unwrap().to_owned());
        }
        let (rss, hwm) = rss_kib(relay.child.id());
        println!("memory, 100,000 invoices stored: RSS at start {:.1} MB, after 100 GETs + 10,000 listed {:.1} MB, peak {:.1} MB",
            idle as f64 / 1024.0, rss as f64 / 1024.0, hwm as f64 / 1024.0);
        drop(relay);

        // Bitcoin: block mined -> invoice settled (1 confirmation).
        let mut wallet = relay_testnet::btc_wallet::TestWallet::new(77);
        wallet.fund(&node, 2).unwrap();
        for poll in [1000, 100] {
            btc_block_to_settled(&node, &mut wallet, poll, rounds, &eth_default).await;
        }
        }

        if only.is_empty() || only == "ethereum" {
        // Ethereum: deposit block mined -> settled, polling vs. WebSocket heads (each on a fresh
        // anvil and escrow, so no relay sees another's deposits).
        for (poll, ws) in [(1000, false), (1000, true), (100, false)] {
            let anvil = relay_testnet::Anvil::spawn().unwrap();
            let eth = relay::dev::deploy_dev_contracts(&anvil).await.unwrap();
            anvil.set_automine(false).unwrap();
            eth_block_to_settled(&node, &anvil, &eth, poll, ws, rounds).await;
        }
        eth_catch_up(&node).await;
        }
        if only.is_empty() || only == "webhooks" {
            webhook_throughput(&node).await;
        }
        if only.is_empty() || only == "card" {
            card_to_merchant(&node, rounds).await;
        }
        if only.is_empty() || only == "postgres" {
            postgres_phase(&node, dur).await;
        }
        if only.is_empty() || only == "checkout" {
            checkout_phase(&node, rounds).await;
        }
    });
}

/// Phase 11: PostgreSQL. Its own single-row insert + commit rate (the limit), `POST` and `GET
/// /v1/invoices` with 1, 2 and 3 relays on one database beside one relay on sled, and failover:
/// the leader SIGKILLed with a deposit about to be mined, timed until the next block's payment
/// is settled by another relay.
async fn postgres_phase(node: &relay_testnet::BitcoinNode, dur: Duration) {
    let pg = relay_testnet::Postgres::spawn().unwrap();
    let store = loop {
        match relay_store_pg::PgStore::connect(&pg.url(), None).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let limit = pg_insert_rate(&pg, dur).await;
    let anvil = relay_testnet::Anvil::spawn().unwrap();
    let eth = relay::dev::deploy_dev_contracts(&anvil).await.unwrap();
    let eth_default = eth_env(&anvil, &eth, 1000, false);
    let btc = node.rpc_url_with_auth();

    let (sp, sg) = post_then_get(RELAY, &btc, &eth_default, dur).await;
    let (_, key) = merchant_in(&store).await;
    let mut db_env = eth_default.clone();
    db_env.push(("RELAY_DATABASE_URL".to_owned(), pg.url()));
    let mut relays: Vec<Relay> = Vec::new();
    let mut rows = vec![("sled, 1 relay      ", sp, sg)];
    for n in 1..=3 {
        while relays.len() < n {
            let dir = tempfile::tempdir().unwrap();
            relays.push(start_relay(dir.path(), &btc, 1000, &db_env).await);
        }
        let urls: Vec<String> = relays.iter().map(|r| r.url.clone()).collect();
        let (post, get) = post_and_get(&urls, &key, &format!("pg{n}"), dur).await;
        rows.push((
            [
                "PostgreSQL, 1 relay",
                "PostgreSQL, 2 relays",
                "PostgreSQL, 3 relays",
            ][n - 1],
            post,
            get,
        ));
    }
    drop(relays);
    for (label, post, get) in &rows {
        println!("{label}  POST {:>7.0} req/s (p99 {:>6.2} ms, errors {}, ratio to the PostgreSQL limit {:.2})  GET {:>7.0} req/s (p99 {:>6.2} ms, errors {})",
            post.rate, post.p99.as_secs_f64() * 1e3, post.errors, post.rate / limit,
            get.rate, get.p99.as_secs_f64() * 1e3, get.errors);
    }
    for ttl in [8u64, 2] {
        failover(&pg, &btc, ttl).await;
    }
}

/// Phase 12: the checkout page's weight, and block mined -> the page's event stream says settled.
async fn checkout_phase(node: &relay_testnet::BitcoinNode, rounds: usize) {
    use std::str::FromStr;
    let mut wallet = relay_testnet::btc_wallet::TestWallet::new(78);
    wallet.fund(node, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let store = SledStore::open(dir.path()).unwrap();
        let (_, key) = merchant_in(&store).await;
        store.durable().await.unwrap();
        key
    };
    let relay = start_relay(dir.path(), &node.rpc_url_with_auth(), 100, &[]).await;
    let client = reqwest::Client::new();
    let invoice = |i: usize| {
        let (client, url, key) = (&client, &relay.url, &key);
        async move {
            let v: Value = client.post(format!("{url}/v1/invoices")).bearer_auth(key)
                .json(&json!({"amount": format!("{}.00", 10 + i), "currency": "USD", "description": "Bench order", "payment_methods": ["bitcoin"]}))
                .send().await.unwrap().json().await.unwrap();
            v
        }
    };
    let first = invoice(0).await;
    let page_url = first["checkout_url"].as_str().unwrap();
    let mut bytes = 0usize;
    for url in [
        page_url.to_owned(),
        format!("{}/checkout-assets/checkout.css", relay.url),
        format!("{}/checkout-assets/checkout.js", relay.url),
    ] {
        bytes += client
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len();
    }
    println!("checkout page weight: HTML + CSS + JS {:.1} KB (uncompressed, one crypto rail with its QR code)  ratio to the 100 KB aim {:.2}",
        bytes as f64 / 1024.0, bytes as f64 / 102_400.0);
    let mut times = Vec::new();
    for i in 0..rounds {
        let inv = invoice(i + 1).await;
        let btc = &inv["payment_methods"]["bitcoin"];
        let script = relay_bitcoin::bitcoin::Address::from_str(btc["address"].as_str().unwrap())
            .unwrap()
            .assume_checked()
            .script_pubkey();
        let sat: u64 = btc["amount_sat"].as_str().unwrap().parse().unwrap();
        // The open page's stream: what the payer's browser listens to.
        let mut stream = client
            .get(format!("{}/events", inv["checkout_url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        let tx = wallet.pay(&[(script, sat)]).unwrap();
        relay_testnet::btc_wallet::broadcast(node, &tx).unwrap();
        let mut seen = String::new();
        // Seen in the mempool first, as in real use.
        while !seen.contains("\"status_class\":\"processing\"") {
            seen.push_str(&String::from_utf8_lossy(
                &stream.chunk().await.unwrap().unwrap(),
            ));
        }
        node.mine(1, &[0xee; 20]).unwrap();
        let mined = Instant::now();
        seen.clear();
        while !seen.contains("\"status_class\":\"settled\"") {
            seen.push_str(&String::from_utf8_lossy(
                &stream.chunk().await.unwrap().unwrap(),
            ));
        }
        times.push(mined.elapsed());
    }
    times.sort();
    println!("bitcoin block mined -> the open checkout page's stream says settled (watcher poll 100 ms, stream looks every 500 ms): median {:>7.1} ms  max {:>7.1} ms  ({} rounds)",
        times[times.len() / 2].as_secs_f64() * 1e3, times[times.len() - 1].as_secs_f64() * 1e3, rounds);
}

/// PostgreSQL's own rate of single-row inserts, each committed on its own, from 64 connections.
async fn pg_insert_rate(pg: &relay_testnet::Postgres, dur: Duration) -> f64 {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(CONCURRENCY as u32)
        .connect(&pg.url())
        .await
        .unwrap();
    sqlx::query("CREATE TABLE bench_rows (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let body = "x".repeat(1500); // about an invoice's size
    let start = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..CONCURRENCY as i64 {
        let (pool, body, done) = (pool.clone(), body.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0i64;
            while start.elapsed() < dur {
                sqlx::query("INSERT INTO bench_rows (id, body) VALUES ($1, $2)")
                    .bind(c << 40 | i)
                    .bind(&body)
                    .execute(&pool)
                    .await
                    .unwrap();
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate =
        done.load(std::sync::atomic::Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("PostgreSQL limit: single-row INSERT + COMMIT, 64 connections  {rate:>9.0} /s");
    rate
}

/// Two relays on `pg` with leases of `ttl_secs`; the leader is SIGKILLed with a deposit in the
/// node's mempool, the block is mined at once, and the time until the invoice reads settled on
/// the other relay is reported (rounds on fresh anvils).
async fn failover(pg: &relay_testnet::Postgres, btc: &str, ttl_secs: u64) {
    let mut times = Vec::new();
    for round in 0..3 {
        let anvil = relay_testnet::Anvil::spawn().unwrap();
        let eth = relay::dev::deploy_dev_contracts(&anvil).await.unwrap();
        // A fresh database per round: the chain watchers' positions belong to the old anvil.
        let db = format!("failover_{ttl_secs}_{round}");
        {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let url = pg.url_of(&db);
        let store = relay_store_pg::PgStore::connect(&url, None).await.unwrap();
        let (_, key) = merchant_in(&store).await;
        let mut env = eth_env(&anvil, &eth, 100, false);
        env.push(("RELAY_DATABASE_URL".to_owned(), url));
        env.push(("RELAY_LEASE_TTL_SECS".to_owned(), ttl_secs.to_string()));
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = start_relay(d1.path(), btc, 1000, &env).await;
        // The first relay takes the roles before the second starts.
        let leases = pool_of(pg, &db).await;
        loop {
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM leases WHERE role = 'ethereum' AND expires_at > now()",
            )
            .fetch_one(&leases)
            .await
            .unwrap();
            if held == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let standby = start_relay(d2.path(), btc, 1000, &env).await;
        let client = reqwest::Client::new();
        let inv: Value = client
            .post(format!("{}/v1/invoices", standby.url))
            .bearer_auth(&key)
            .json(&json!({"amount": "25.00", "currency": "USD", "payment_methods": ["ethereum"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = inv["id"].as_str().unwrap().to_owned();
        anvil.set_automine(false).unwrap();
        let (merchant, expiry, salt, value) = deposit_args(&inv);
        // In the node's pool, not yet mined.
        let _pending = payer_escrow(&anvil, &eth)
            .deposit(merchant, expiry, salt)
            .value(value)
            .send()
            .await
            .unwrap();
        let killed = Instant::now();
        leader.child.kill().unwrap(); // SIGKILL
        leader.child.wait().unwrap();
        anvil.mine(1).unwrap();
        loop {
            let now = get_json(&client, &format!("{}/v1/invoices/{id}", standby.url), &key).await;
            if now["status"] == "settled" {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "never settled: {now}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        times.push(killed.elapsed());
        // Already killed and reaped: its Drop would signal a process that is gone.
        std::mem::forget(leader);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!("failover, lease {ttl_secs} s: leader SIGKILLed -> next block's payment settled by another relay  median {:.2} s  max {:.2} s  ratio to the lease {:.2}",
        median.as_secs_f64(), times.last().unwrap().as_secs_f64(), median.as_secs_f64() / ttl_secs as f64);
}

async fn pool_of(pg: &relay_testnet::Postgres, db: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url_of(db))
        .await
        .unwrap()
}

/// Phase 10: gateway webhook -> merchant webhook, and -> the merchant paid on Ethereum.
async fn card_to_merchant(node: &relay_testnet::BitcoinNode, rounds: usize) {
    type Seen = Arc<std::sync::Mutex<std::collections::HashMap<(String, String), Instant>>>;
    let gw = relay_testnet::LocalStripe::spawn().unwrap();
    let anvil = relay_testnet::Anvil::spawn().unwrap();
    let eth = relay::dev::deploy_dev_contracts(&anvil).await.unwrap();
    relay_ethereum::deploy::fund_ether_liquidity(
        &anvil.url(),
        &eth.operator_key.parse().unwrap(),
        eth.escrow.parse().unwrap(),
        relay_ethereum::alloy::primitives::U256::from(10u64.pow(18))
            * relay_ethereum::alloy::primitives::U256::from(100u64),
    )
    .await
    .unwrap();
    // The merchant's receiver: when each (invoice, event type) arrived.
    let seen: Seen = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let s2 = seen.clone();
    let receiver = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |body: String| {
                let seen = s2.clone();
                async move {
                    let v: Value = serde_json::from_str(&body).unwrap_or_default();
                    if let (Some(t), Some(id)) =
                        (v["type"].as_str(), v["data"]["object"]["id"].as_str())
                    {
                        seen.lock()
                            .unwrap()
                            .insert((id.to_owned(), t.to_owned()), Instant::now());
                    }
                    "ok"
                }
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let store = SledStore::open(dir.path()).unwrap();
        let created = relay::merchant::create(
            &store,
            &relay_engine::SystemClock,
            relay::merchant::NewMerchant {
                name: "bench bridge".into(),
                eth_payout: Some(BENCH_PAYOUT.into()),
                settle_on_ethereum: Some("ETH".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mid = relay_core::MerchantId::parse(&created.id).unwrap();
        add_endpoint(
            &store,
            &mid,
            &hook_url,
            &["invoice.settled", "settlement.paid"],
        )
        .await;
        store.durable().await.unwrap();
        created.api_key
    };
    let mut env = eth_env(&anvil, &eth, 1000, true);
    env.push(("RELAY_STRIPE_API_BASE".into(), gw.url()));
    env.push((
        "RELAY_STRIPE_SECRET_KEY".into(),
        relay_testnet::LocalStripe::SECRET_KEY.into(),
    ));
    let relay = start_relay(dir.path(), &node.rpc_url_with_auth(), 1000, &env).await;
    let client = reqwest::Client::new();
    let (mut to_settled, mut to_paid) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let inv: Value = client.post(format!("{}/v1/invoices", relay.url)).bearer_auth(&key)
            .json(&json!({"amount": format!("{}.00", 10 + i), "currency": "USD", "payment_methods": ["card"]}))
            .send().await.unwrap().json().await.unwrap();
        let id = inv["id"].as_str().unwrap().to_owned();
        let pi = inv["payment_methods"]["card"]["payment_intent"]
            .as_str()
            .unwrap()
            .to_owned();
        // The payer pays at the gateway; its event is then delivered as the gateway would.
        gw.post(
            &format!("/v1/payment_intents/{pi}"),
            &[("payment_method", "pm_card_visa")],
        )
        .unwrap();
        gw.post(&format!("/v1/payment_intents/{pi}/confirm"), &[])
            .unwrap();
        let intent = gw.get(&format!("/v1/payment_intents/{pi}")).unwrap();
        let body = json!({"id": format!("evt_card_{i}_{pi}"), "object": "event", "type": "payment_intent.succeeded",
            "data": {"object": intent}}).to_string();
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        use hmac::Mac;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        let sig = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        let sent = Instant::now();
        let r = client
            .post(format!("{}/v1/gateways/stripe/webhook", relay.url))
            .header("Stripe-Signature", sig)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        for (kind, out) in [
            ("invoice.settled", &mut to_settled),
            ("settlement.paid", &mut to_paid),
        ] {
            loop {
                if let Some(at) = seen.lock().unwrap().get(&(id.clone(), kind.to_owned())) {
                    out.push(at.duration_since(sent));
                    break;
                }
                assert!(
                    sent.elapsed() < Duration::from_secs(30),
                    "no {kind} for {id}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    receiver.abort();
    for (label, mut v) in [
        ("invoice.settled", to_settled),
        ("settlement.paid", to_paid),
    ] {
        v.sort();
        println!("gateway webhook -> merchant's {label:<15} webhook: median {:>7.1} ms  max {:>7.1} ms  ({} rounds)",
            v[v.len() / 2].as_secs_f64() * 1e3, v[v.len() - 1].as_secs_f64() * 1e3, v.len());
    }
}

/// A payer's escrow client on a bench anvil (the payer's own transactions, signed here).
fn payer_escrow(
    anvil: &relay_testnet::Anvil,
    eth: &relay::dev::DevEthereum,
) -> relay_ethereum::bindings::PaymentEscrow::PaymentEscrowInstance<
    impl relay_ethereum::alloy::providers::Provider + Clone,
> {
    let signer = eth.payer_key.parse().unwrap();
    let provider = relay_ethereum::deploy::wallet_provider(&anvil.url(), &signer).unwrap();
    relay_ethereum::bindings::PaymentEscrow::new(eth.escrow.parse().unwrap(), provider)
}

/// The deposit call of an invoice's `payment_methods.ethereum.call`.
fn deposit_args(
    inv: &Value,
) -> (
    relay_ethereum::alloy::primitives::Address,
    u64,
    relay_ethereum::alloy::primitives::B256,
    relay_ethereum::alloy::primitives::U256,
) {
    let call = &inv["payment_methods"]["ethereum"]["call"];
    let arg = |i: usize| call["args"][i].as_str().unwrap().to_owned();
    (
        arg(0).parse().unwrap(),
        arg(1).parse().unwrap(),
        arg(2).parse().unwrap(),
        call["value"].as_str().unwrap().parse().unwrap(),
    )
}

/// Median and worst time from `anvil_mine` returning (the deposit's block) to `settled`.
async fn eth_block_to_settled(
    node: &relay_testnet::BitcoinNode,
    anvil: &relay_testnet::Anvil,
    eth: &relay::dev::DevEthereum,
    poll_ms: u64,
    ws: bool,
    rounds: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let store = SledStore::open(dir.path()).unwrap();
        let (_, key) = merchant_in(&store).await;
        store.durable().await.unwrap();
        key
    };
    let relay = start_relay(
        dir.path(),
        &node.rpc_url_with_auth(),
        1000,
        &eth_env(anvil, eth, poll_ms, ws),
    )
    .await;
    let client = reqwest::Client::new();
    let escrow = payer_escrow(anvil, eth);
    let mut times = Vec::new();
    for i in 0..rounds {
        let inv: Value = client.post(format!("{}/v1/invoices", relay.url)).bearer_auth(&key)
            .json(&json!({"amount": format!("{}.00", 10 + i), "currency": "USD", "payment_methods": ["ethereum"]}))
            .send().await.unwrap().json().await.unwrap();
        let (merchant, expiry, salt, value) = deposit_args(&inv);
        // In the node's pool, not yet mined (automine is off).
        let _pending = escrow
            .deposit(merchant, expiry, salt)
            .value(value)
            .send()
            .await
            .unwrap();
        let url = format!("{}/v1/invoices/{}", relay.url, inv["id"].as_str().unwrap());
        anvil.mine(1).unwrap();
        let mined = Instant::now();
        loop {
            let v = get_json(&client, &url, &key).await;
            if v["status"] == "settled" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(mined.elapsed());
    }
    times.sort();
    let how = if ws {
        "WebSocket heads".to_owned()
    } else {
        format!("poll {poll_ms:>4} ms")
    };
    println!("ethereum deposit block mined -> settled, {how:<16}: median {:>7.1} ms  max {:>7.1} ms  ({} rounds)",
        times[times.len() / 2].as_secs_f64() * 1e3, times[times.len() - 1].as_secs_f64() * 1e3, rounds);
}

/// A relay started after 10,000 blocks holding 1,000 deposits: time until its watcher is at the
/// tip (every deposit's invoice change is stored with the cursor), then every invoice is checked.
async fn eth_catch_up(node: &relay_testnet::BitcoinNode) {
    let deposits: usize = std::env::var("RELAY_BENCH_ETH_DEPOSITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let blocks: u64 = 10 * deposits as u64;
    let anvil = relay_testnet::Anvil::spawn().unwrap();
    let eth = relay::dev::deploy_dev_contracts(&anvil).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let store = SledStore::open(dir.path()).unwrap();
        let (_, key) = merchant_in(&store).await;
        store.durable().await.unwrap();
        key
    };
    let env = eth_env(&anvil, &eth, 1000, false);
    let relay = start_relay(dir.path(), &node.rpc_url_with_auth(), 1000, &env).await;
    let client = reqwest::Client::new();
    let mut invoices = Vec::new();
    for i in 0..deposits {
        let inv: Value = client.post(format!("{}/v1/invoices", relay.url)).bearer_auth(&key)
            .json(&json!({"amount": format!("{}.{:02}", 1 + i / 100, i % 100), "currency": "USD", "payment_methods": ["ethereum"], "expires_in": 86400}))
            .send().await.unwrap().json().await.unwrap();
        invoices.push(inv);
    }
    drop(relay);
    let escrow = payer_escrow(&anvil, &eth);
    for inv in &invoices {
        let (merchant, expiry, salt, value) = deposit_args(inv);
        escrow
            .deposit(merchant, expiry, salt)
            .value(value)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        // One deposit every 10 blocks (anvil slows down badly when asked for thousands at once).
        anvil.mine(9).unwrap();
    }
    while anvil.block_number().unwrap() < blocks {
        anvil
            .mine((blocks - anvil.block_number().unwrap()).min(500))
            .unwrap();
    }
    let tip = anvil.block_number().unwrap();
    let started = Instant::now();
    let relay = start_relay(dir.path(), &node.rpc_url_with_auth(), 1000, &env).await;
    loop {
        let m = client
            .get(format!("{}/metrics", relay.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let head = m
            .lines()
            .find_map(|l| l.strip_prefix("relay_eth_head_block "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if head.is_some_and(|h| h as u64 >= tip) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let mut settled = 0;
    let mut after: Option<String> = None;
    loop {
        let mut u = format!("{}/v1/invoices?limit=100", relay.url);
        if let Some(a) = &after {
            u.push_str(&format!("&starting_after={a}"));
        }
        let page = get_json(&client, &u, &key).await;
        let data = page["data"].as_array().unwrap();
        settled += data.iter().filter(|i| i["status"] == "settled").count();
        after = data.last().map(|i| i["id"].as_str().unwrap().to_owned());
        if page["has_more"] != true {
            break;
        }
    }
    assert_eq!(settled, deposits, "every deposit's invoice is settled");
    println!("ethereum catch-up: {tip} blocks holding {deposits} deposits read in {:.2} s (relay start included), {settled} invoices settled",
        took.as_secs_f64());
}

/// Deliveries per second: a relay started with `n` stored, undelivered events and one endpoint, a
/// local receiver answering 200 to each.
async fn webhook_throughput(node: &relay_testnet::BitcoinNode) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n: usize = std::env::var("RELAY_BENCH_WEBHOOKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let count = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let c = count.clone();
    let receiver = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |_body: String| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        let (mid, _) = merchant_in(&store).await;
        add_endpoint(&store, &mid, &url, &[]).await;
        for i in 0..n as u64 {
            let (inv, ev) = sample_invoice(&mid, i);
            store.create_invoice(&inv, &ev, None).await.unwrap();
        }
        store.durable().await.unwrap();
    }
    let started = Instant::now();
    let relay = start_relay(dir.path(), &node.rpc_url_with_auth(), 1000, &[]).await;
    while count.load(Ordering::SeqCst) < n {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "deliveries stalled at {}",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    println!("merchant webhooks: {n} events delivered, signed, to a local receiver in {:.2} s (relay start included): {:.0} deliveries/s",
        took.as_secs_f64(), n as f64 / took.as_secs_f64());
    drop(relay);
    receiver.abort();
}
