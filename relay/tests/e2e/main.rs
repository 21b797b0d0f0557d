//! End-to-end tests of the `relay` binary as users run it: real processes, real sockets, a real
//! data directory, SIGKILL for the crash test, and `relay dev` on the real testnet.

mod bitcoin;
mod card;
mod checkout;
mod cluster;
mod ethereum;
mod operator;
mod payouts;
mod rates;
mod risk;
mod webhooks;

use relay_core::{Clock, InvoiceStatus, Timestamp};
use relay_store::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");

pub(crate) fn free_port() -> u16 {
    relay_testnet::free_port().unwrap()
}

pub(crate) fn merchant_create(data_dir: &Path, name: &str) -> Value {
    merchant_create_with(data_dir, name, &[])
}

pub(crate) fn merchant_create_with(data_dir: &Path, name: &str, args: &[&str]) -> Value {
    merchant_create_env(data_dir, name, args, &[])
}

/// `relay merchant create` with settings (`RELAY_DATABASE_URL`, …) in its environment.
pub(crate) fn merchant_create_env(
    data_dir: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> Value {
    let out = Command::new(RELAY)
        .args(["merchant", "create", "--name", name])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RELAY_DATA_DIR", data_dir)
        .env("RELAY_WEBHOOK_ALLOW_PRIVATE", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
}

impl Server {
    pub(crate) async fn start_with(data_dir: &Path, port: u16, env: &[(&str, String)]) -> Server {
        let child = Command::new(RELAY)
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RELAY_DATA_DIR", data_dir)
            .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("RELAY_RATES", "BTC/USD=60000,ETH/USD=2500")
            // The tests' webhook receivers are on loopback; some tests burst thousands of
            // requests from one key.
            .env("RELAY_WEBHOOK_ALLOW_PRIVATE", "true")
            .env("RELAY_RATE_LIMIT_PER_SEC", "0")
            // A test's own settings win (applied again after the defaults).
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env(
                "RELAY_LOG",
                std::env::var("RELAY_E2E_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let start = Instant::now();
        while client.get(format!("{url}/readyz")).send().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "relay did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server { child, url }
    }

    /// The relay's resident memory, in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`) to the relay.
    pub(crate) fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub(crate) fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn create_invoice(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    idem: &str,
    body: &Value,
) -> reqwest::Result<(u16, Value)> {
    let r = client
        .post(format!("{url}/v1/invoices"))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .json(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

/// Event types of one invoice, oldest first (from the merchant's newest 100 events).
pub(crate) async fn invoice_event_types(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    id: &str,
) -> Vec<String> {
    let page: Value = client
        .get(format!("{url}/v1/events?limit=100"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["object"]["id"] == id)
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    out.reverse();
    out
}

/// The relay's Prometheus metric `name`, summed over its labels; `None` when it is not there.
pub(crate) async fn metric(client: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// `POST {url}{path}` with the merchant's key and a JSON body; the answer as JSON.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    path: &str,
    body: &Value,
) -> Value {
    client
        .post(format!("{url}{path}"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until `done` holds, checking every 50 ms; fails the test after `secs` naming `what`.
pub(crate) async fn eventually(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET {url}{path}` with the merchant's key, as JSON.
pub(crate) async fn get_json(client: &reqwest::Client, url: &str, key: &str, path: &str) -> Value {
    client
        .get(format!("{url}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) async fn get_invoice(client: &reqwest::Client, url: &str, key: &str, id: &str) -> Value {
    client
        .get(format!("{url}/v1/invoices/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn order_body(n: usize) -> Value {
    json!({"amount": format!("{}.{:02}", 1 + n / 100, n % 100), "currency": "USD", "order_id": format!("crash-{n}")})
}

/// SIGKILL while answering a stream of creations: everything acknowledged survives intact, and
/// retrying every request with its Idempotency-Key creates each invoice exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_invoice_and_retries_create_once() {
    sigkill_during_creations(Vec::new()).await;
}

/// The same crash, with the store in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_sigkill_loses_no_acknowledged_invoice_and_retries_create_once() {
    let pg = relay_testnet::Postgres::spawn().expect("PostgreSQL starts");
    sigkill_during_creations(vec![("RELAY_DATABASE_URL", pg.url())]).await;
}

/// `store`: settings that choose the store (none: sled in the data directory).
async fn sigkill_during_creations(store: Vec<(&'static str, String)>) {
    let dir = tempfile::tempdir().unwrap();
    // Invoices need a rail that can take a payment: Ethereum, on a local anvil.
    let rail = ethereum::eth_rail(dir.path()).await;
    let mut env = rail.env.clone();
    env.extend(store);
    let m = merchant_create_env(
        dir.path(),
        "crash shop",
        &["--eth-payout", &rail.eth.merchant_payout],
        &env,
    );
    let key = m["api_key"].as_str().unwrap().to_owned();
    let port = free_port();
    let mut server = Server::start_with(dir.path(), port, &env).await;

    let acked: Arc<std::sync::Mutex<BTreeMap<usize, Value>>> = Default::default();
    let attempted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut workers = Vec::new();
    for w in 0..16usize {
        let (client, url, key, acked, attempted) = (
            client.clone(),
            server.url.clone(),
            key.clone(),
            acked.clone(),
            attempted.clone(),
        );
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let n = w * 100_000 + i;
                attempted.fetch_max(i + 1, std::sync::atomic::Ordering::SeqCst);
                match create_invoice(&client, &url, &key, &format!("k-{n}"), &order_body(n)).await {
                    Ok((200, inv)) => {
                        acked.lock().unwrap().insert(n, inv);
                    }
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    Err(_) => return i + 1, // the relay died under us
                }
            }
            unreachable!()
        }));
    }
    // Let the stream run until enough creations are acknowledged, then kill -9 mid-stream.
    let start = Instant::now();
    while acked.lock().unwrap().len() < 300 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "too slow to acknowledge"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    let mut sent_per_worker = Vec::new();
    for w in workers {
        sent_per_worker.push(w.await.unwrap());
    }
    let acked = acked.lock().unwrap().clone();

    let server = Server::start_with(dir.path(), port, &env).await;
    // Every acknowledged invoice is there, exactly as it was acknowledged.
    for inv in acked.values() {
        let id = inv["id"].as_str().unwrap();
        assert_eq!(&get_invoice(&client, &server.url, &key, id).await, inv);
    }
    // Retrying every request that was sent (acknowledged or not) yields one invoice per key.
    let mut ids = std::collections::BTreeSet::new();
    let mut total = 0;
    for (w, sent) in sent_per_worker.iter().enumerate() {
        for i in 0..*sent {
            let n = w * 100_000 + i;
            let (status, inv) = create_invoice(
                &client,
                &server.url,
                &key,
                &format!("k-{n}"),
                &order_body(n),
            )
            .await
            .unwrap();
            assert_eq!(status, 200, "{inv}");
            if let Some(first) = acked.get(&n) {
                assert_eq!(&inv, first, "retry of an acknowledged request replays it");
            }
            assert_eq!(inv["order_id"], format!("crash-{n}"));
            ids.insert(inv["id"].as_str().unwrap().to_owned());
            total += 1;
        }
    }
    assert_eq!(ids.len(), total, "one invoice per idempotency key");
    // And the store holds exactly those invoices: walk the whole list.
    let mut listed = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/invoices?limit=100", server.url);
        if let Some(c) = &cursor {
            url.push_str(&format!("&starting_after={c}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for inv in page["data"].as_array().unwrap() {
            listed.insert(inv["id"].as_str().unwrap().to_owned());
        }
        if page["has_more"] != true {
            break;
        }
        cursor = page["data"]
            .as_array()
            .unwrap()
            .last()
            .map(|i| i["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(listed, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn merchant_cli_serve_and_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rail = ethereum::eth_rail(dir.path()).await;
    let m = merchant_create_with(
        dir.path(),
        "Corner shop",
        &["--eth-payout", &rail.eth.merchant_payout],
    );
    assert!(m["id"].as_str().unwrap().starts_with("mer_"));
    assert!(m["api_key"].as_str().unwrap().starts_with("rk_"));
    assert!(m["webhook_secret"].as_str().unwrap().starts_with("whsec_"));

    let bad = Command::new(RELAY)
        .args(["merchant", "create", "--name", "x", "--eth-payout", "0x123"])
        .env("RELAY_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("eth_payout"));

    let port = free_port();
    let mut server = Server::start_with(dir.path(), port, &rail.env).await;
    // A second process cannot open the same data directory while the relay runs.
    let locked = Command::new(RELAY)
        .args(["merchant", "create", "--name", "y"])
        .env("RELAY_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!locked.status.success());
    assert!(
        String::from_utf8_lossy(&locked.stderr).contains("another relay"),
        "{}",
        String::from_utf8_lossy(&locked.stderr)
    );

    let client = reqwest::Client::new();
    let key = m["api_key"].as_str().unwrap();
    let (status, inv) = create_invoice(&client, &server.url, key, "one", &order_body(1))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let status = server.terminate();
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );

    let server = Server::start_with(dir.path(), port, &rail.env).await;
    let got = get_invoice(&client, &server.url, key, inv["id"].as_str().unwrap()).await;
    assert_eq!(got, inv);
}

struct FixedClock(i64);
impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0)
    }
}

#[tokio::test]
async fn expiry_sweep_expires_unpaid_invoices_once() {
    let ids = std::sync::Arc::new(relay_engine::IdSource::default());
    let dir = tempfile::tempdir().unwrap();
    let store = relay_store_sled::SledStore::open(dir.path()).unwrap();
    // The engine as the sweep sees it at time `t`.
    let at = |t: i64| relay_engine::Engine {
        store: store.clone(),
        ids: ids.clone(),
        clock: std::sync::Arc::new(FixedClock(t)),
        assets: Default::default(),
        rates: std::sync::Arc::new(relay_core::FixedRates::default()),
        card: None,
        bitcoin: None,
        ethereum: None,
        checkout_base: None,
        risk: Default::default(),
    };
    let created = relay::merchant::create(
        &store,
        &FixedClock(1_000),
        relay::merchant::NewMerchant {
            name: "s".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let merchant = store
        .merchant_by_key(&relay_core::ApiKey::from_presented(&created.api_key).hash())
        .await
        .unwrap()
        .unwrap();
    let params = relay_core::NewInvoice {
        merchant_id: merchant.id.clone(),
        price: relay_core::Money {
            asset: relay_core::Asset::fiat("USD", 2),
            amount: relay_core::Amount::from_minor(500),
        },
        order_id: None,
        description: None,
        metadata: Default::default(),
        expires_at: Timestamp(1_000 + 60),
        methods: vec![relay_core::Method::Card],
        tolerance_bps: 0,
        eth_asset: None,
    };
    let quotes = params
        .quote(
            &relay_core::AssetBook::default(),
            &relay_core::FixedRates::default(),
        )
        .unwrap();
    let (inv, kinds) = relay_core::Invoice::create(
        relay_core::InvoiceId::from_entropy([3; 12]),
        params,
        quotes,
        Timestamp(1_000),
    )
    .unwrap();
    let events = relay_core::Event::for_invoice(&inv, &kinds, Timestamp(1_000), || {
        relay_core::EventId::from_entropy(rand_bytes())
    });
    store.create_invoice(&inv, &events, None).await.unwrap();

    assert_eq!(at(1_059).expire_due().await.unwrap(), 0);
    assert_eq!(
        store.invoice(&inv.id).await.unwrap().unwrap().status,
        InvoiceStatus::New
    );
    assert_eq!(at(1_060).expire_due().await.unwrap(), 1);
    assert_eq!(
        store.invoice(&inv.id).await.unwrap().unwrap().status,
        InvoiceStatus::Expired
    );
    assert_eq!(at(2_000).expire_due().await.unwrap(), 0);
    let events = store
        .list_events(&merchant.id, None, 10)
        .await
        .unwrap()
        .items;
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["invoice.expired", "invoice.created"]);
}

fn rand_bytes() -> [u8; 12] {
    use std::sync::atomic::{AtomicU8, Ordering};
    static N: AtomicU8 = AtomicU8::new(0);
    let mut b = [9u8; 12];
    b[0] = N.fetch_add(1, Ordering::SeqCst);
    b
}

/// Confirms a PaymentIntent with a test card at the dev gateway, as the banner tells.
async fn pay_by_card(client: &reqwest::Client, stripe: &str, pi: &str) {
    for (path, form) in [
        (
            format!("/v1/payment_intents/{pi}"),
            vec![("payment_method", "pm_card_visa")],
        ),
        (format!("/v1/payment_intents/{pi}/confirm"), vec![]),
    ] {
        let r = client
            .post(format!("{stripe}{path}"))
            .basic_auth("sk_test_relay", Some(""))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
}

/// `relay dev` brings up the testnet and a relay that creates invoices; SIGINT stops it all.
#[tokio::test(flavor = "multi_thread")]
async fn relay_dev_serves_invoices_and_stops_its_nodes() {
    let help = Command::new(RELAY)
        .args(["dev", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("127.0.0.1:8080"),
        "--listen's default: {help}"
    );
    // Port 0: the relay binds a port nobody else can be handed meanwhile and prints it.
    let mut child = Command::new(RELAY)
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("RELAY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Keep what the relay says on stderr, so a failure to come up is explained.
    let stderr_text = Arc::new(std::sync::Mutex::new(String::new()));
    {
        let stderr = child.stderr.take().unwrap();
        let text = stderr_text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                text.lock().unwrap().push_str(&line);
                text.lock().unwrap().push('\n');
            }
        });
    }
    let banner = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            text.push_str(&line);
            text.push('\n');
            if line.contains("payment_methods.ethereum.call the same way") {
                break;
            }
        }
        text
    });
    let banner = tokio::time::timeout(Duration::from_secs(120), banner)
        .await
        .expect("banner")
        .unwrap();
    let field = |label: &str| -> String {
        banner
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| {
                std::thread::sleep(Duration::from_millis(500));
                panic!(
                    "{label} in {banner}\nrelay dev's stderr:\n{}",
                    stderr_text.lock().unwrap()
                )
            })
            .split_whitespace()
            .find(|w| w.starts_with("http") || w.starts_with("rk_"))
            .unwrap()
            .to_owned()
    };
    let url = field("relay API");
    let key = field("API key");
    let anvil = field("anvil");
    let stripe = field("card gateway");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(!url.ends_with(":0"), "{url}");
    assert!(banner.contains("curl -s"), "{banner}");

    let client = reqwest::Client::new();
    let (status, inv) = create_invoice(
        &client,
        &url,
        &key,
        "dev-1",
        &json!({"amount": "25.00", "currency": "USD"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{inv}");
    assert_eq!(inv["payment_methods"]["bitcoin"]["amount_sat"], "41667");
    assert!(relay_testnet::json_rpc(&anvil, None, "eth_chainId", json!([])).is_ok());

    // Pay it by card exactly as the banner says; the gateway's webhook settles it.
    let pi = inv["payment_methods"]["card"]["payment_intent"]
        .as_str()
        .unwrap();
    pay_by_card(&client, &stripe, pi).await;
    let id = inv["id"].as_str().unwrap();
    card::wait_for(&client, &url, &key, id, |inv| inv["status"] == "settled").await;

    // The bridge merchant is paid on Ethereum: its card payment is settled on anvil.
    let bridge_key = field("bridge API key");
    let payout = banner
        .lines()
        .find(|l| l.contains(" balance 0x"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("0x")))
        .unwrap_or_else(|| panic!("bridge payout in {banner}"))
        .to_owned();
    let (status, bridge_inv) = create_invoice(
        &client,
        &url,
        &bridge_key,
        "dev-bridge-1",
        &json!({"amount": "30.00", "currency": "USD", "payment_methods": ["card"]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{bridge_inv}");
    let bridge_pi = bridge_inv["payment_methods"]["card"]["payment_intent"]
        .as_str()
        .unwrap();
    pay_by_card(&client, &stripe, bridge_pi).await;
    let bridge_id = bridge_inv["id"].as_str().unwrap();
    let settled = card::wait_for(&client, &url, &bridge_key, bridge_id, |inv| {
        inv["settlement"]["settlements"][0]["status"] == "paid"
    })
    .await;
    let s = &settled["settlement"]["settlements"][0];
    assert_eq!(s["source_ref"], bridge_pi);
    // 30.00 USD at the dev rate of 3,000 USD/ETH.
    assert_eq!(s["amount_minor"], "10000000000000000");
    let balance =
        relay_testnet::json_rpc(&anvil, None, "eth_getBalance", json!([payout, "latest"])).unwrap();
    assert_eq!(
        relay_testnet::hex_quantity(&balance).unwrap(),
        10_000_000_000_000_000
    );

    // Pay another invoice in bitcoin with the two printed faucet lines.
    let faucet = banner
        .lines()
        .find(|l| l.contains("/bitcoin/pay"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http")))
        .unwrap_or_else(|| panic!("faucet line in {banner}"))
        .trim_end_matches("/bitcoin/pay")
        .to_owned();
    let (status, btc_inv) = create_invoice(
        &client,
        &url,
        &key,
        "dev-2",
        &json!({"amount": "12.00", "currency": "USD", "payment_methods": ["bitcoin"]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{btc_inv}");
    let uri = btc_inv["payment_methods"]["bitcoin"]["uri"]
        .as_str()
        .unwrap();
    assert!(uri.starts_with("bitcoin:bcrt1q"), "{uri}");
    for (path, body) in [
        ("/bitcoin/pay", uri.to_owned()),
        ("/bitcoin/mine", "1".to_owned()),
    ] {
        let r = client
            .post(format!("{faucet}{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    let btc_id = btc_inv["id"].as_str().unwrap();
    let paid = card::wait_for(&client, &url, &key, btc_id, |inv| {
        inv["status"] == "settled"
    })
    .await;
    assert_eq!(paid["payments"][0]["confirmations"], 1);

    // Pay a third in ether with the printed `cast send` line, its placeholders filled in from the
    // invoice's payment_methods.ethereum.call.
    let (status, eth_inv) = create_invoice(
        &client,
        &url,
        &key,
        "dev-3",
        &json!({"amount": "30.00", "currency": "USD", "payment_methods": ["ethereum"]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{eth_inv}");
    let call = &eth_inv["payment_methods"]["ethereum"]["call"];
    let args: Vec<&str> = call["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let lines: Vec<&str> = banner.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(" send ") && l.contains("deposit(address,uint64,bytes32)"))
        .unwrap_or_else(|| panic!("cast send line in {banner}"));
    let command = format!(
        "{} {}",
        lines[at].trim().trim_end_matches('\\'),
        lines[at + 1].trim()
    )
    .replace("MERCHANT", args[0])
    .replace("EXPIRY", args[1])
    .replace("SALT", args[2])
    .replace("AMOUNT_WEI", call["value"].as_str().unwrap());
    let out = Command::new("sh").args(["-c", &command]).output().unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eth_id = eth_inv["id"].as_str().unwrap();
    let paid = card::wait_for(&client, &url, &key, eth_id, |inv| {
        inv["status"] == "settled" && inv["payments"][0]["capture_tx"].is_string()
    })
    .await;
    assert_eq!(paid["payments"][0]["status"], "confirmed");

    // What a newcomer needs is printed: the node's RPC URL with its password works as given,
    // and the operator's address is the escrow's operator.
    let btc_rpc = field("bitcoin regtest");
    let (user, rest) = btc_rpc
        .trim_start_matches("http://")
        .split_once(':')
        .unwrap();
    let (pass, host) = rest.split_once('@').unwrap();
    let height = relay_testnet::json_rpc(
        &format!("http://{host}"),
        Some((user, pass)),
        "getblockcount",
        json!([]),
    )
    .unwrap();
    assert!(height.as_u64().unwrap() > 100, "{height}");
    let operator = banner
        .lines()
        .find(|l| l.trim_start().starts_with("operator"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("0x")))
        .unwrap_or_else(|| panic!("operator in {banner}"));
    let escrow = banner
        .lines()
        .find(|l| l.trim_start().starts_with("anvil"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("0x")))
        .unwrap();
    let on_chain =
        relay_testnet::cast(&["call", escrow, "operator()(address)", "--rpc-url", &anvil]).unwrap();
    assert_eq!(on_chain.trim().to_lowercase(), operator.to_lowercase());
    // The demo invoice's checkout page opens, without a key.
    let checkout = field("checkout page");
    assert!(
        checkout.starts_with(&format!("{url}/pay/cs_")),
        "{checkout}"
    );
    let page = client.get(&checkout).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("Pay Demo shop") && page.contains("25.00 USD"),
        "{page}"
    );
    // With a card form on localstripe's Stripe.js, and a payment link that opens a new page.
    assert!(
        page.contains("id=\"card-form\"") && page.contains("&#x2f;js.stripe.com&#x2f;v3&#x2f;"),
        "{page}"
    );
    let link = field("payment link");
    assert!(link.starts_with(&format!("{url}/link/pl_")), "{link}");
    let manual = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let opened = manual.get(&link).send().await.unwrap();
    assert_eq!(opened.status(), 303);
    let to = opened.headers()["location"].to_str().unwrap();
    assert!(to.starts_with(&format!("{url}/pay/cs_")), "{to}");
    // No webhook secret that matches nothing: the banner says how to add an endpoint.
    assert!(!banner.contains("webhook secret"), "{banner}");
    assert!(banner.contains("/v1/webhook_endpoints"), "{banner}");
    // The faucet mines to an address of the user's own, spelled bcrt1q… as the relay shows it:
    // here an invoice's, whose watcher then sees the coinbase pay it.
    let (status, mined_inv) = create_invoice(
        &client,
        &url,
        &key,
        "dev-4",
        &json!({"amount": "5.00", "currency": "USD", "payment_methods": ["bitcoin"]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{mined_inv}");
    let address = mined_inv["payment_methods"]["bitcoin"]["address"]
        .as_str()
        .unwrap();
    let r = client
        .post(format!("{faucet}/bitcoin/mine"))
        .body(format!("1 {address}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let refused = client
        .post(format!("{faucet}/bitcoin/mine"))
        .body("1 rb1qnotanaddress")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    card::wait_for(
        &client,
        &url,
        &key,
        mined_inv["id"].as_str().unwrap(),
        |inv| !inv["payments"].as_array().unwrap().is_empty(),
    )
    .await;

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "relay dev exits cleanly on Ctrl-C: {exit:?}"
    );
    assert!(
        relay_testnet::json_rpc(&anvil, None, "eth_chainId", json!([])).is_err(),
        "anvil stopped"
    );
    assert!(
        client
            .get(format!("{stripe}/v1/payment_intents"))
            .send()
            .await
            .is_err(),
        "localstripe stopped"
    );
}

/// Connections that send nothing, or half a header, are cut off after the header timeout, and
/// connections beyond the limit are closed at once: a few silent clients cannot take the relay
/// down (before, they were kept open forever until the process ran out of file descriptors).
#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_are_cut_off_and_their_number_is_limited() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start_with(
        dir.path(),
        port,
        &[
            ("RELAY_HEADER_TIMEOUT_SECS", "1".to_owned()),
            ("RELAY_MAX_CONNECTIONS", "4".to_owned()),
        ],
    )
    .await;
    // Let the start-up probe's pooled connection go.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let addr = format!("127.0.0.1:{port}");
    let mut silent = Vec::new();
    for i in 0..4 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")
                .await
                .unwrap();
        }
        silent.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The fifth is closed without an answer.
    let mut fifth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await;
    let mut buf = [0u8; 256];
    let got = tokio::time::timeout(Duration::from_secs(2), fifth.read(&mut buf))
        .await
        .expect("a connection beyond the limit was kept open");
    assert!(
        matches!(got, Ok(0) | Err(_)),
        "a connection beyond the limit was served: {:?}",
        got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    // The silent ones are cut off by the header timeout.
    for s in &mut silent {
        let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a silent connection was never closed");
        if let Ok(n) = got {
            assert!(
                n == 0 || buf.starts_with(b"HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }
    // And the relay serves again.
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The data directory is the owner's alone, and `/metrics` answers only with its token when one
/// is set.
#[tokio::test(flavor = "multi_thread")]
async fn the_data_directory_is_private_and_metrics_need_their_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay-data");
    merchant_create(&data, "private shop");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    let server = Server::start_with(
        &data,
        free_port(),
        &[("RELAY_METRICS_TOKEN", "m3trics-t0ken".to_owned())],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/metrics", server.url);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(&url)
        .bearer_auth("m3trics-t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("relay_"));
}

/// `relay serve` with `tls_cert_file` / `tls_key_file` serves HTTPS with that certificate (a
/// real TLS client trusting only it), nothing in plain HTTP, and picks up a renewed certificate
/// without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn serves_https_with_its_certificate_and_reloads_a_renewed_one() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let issue = || rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let first = issue();
    std::fs::write(&cert_file, first.cert.pem()).unwrap();
    std::fs::write(&key_file, first.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let mut child = Command::new(RELAY)
        .arg("serve")
        .env("RELAY_DATA_DIR", dir.path().join("data"))
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_TLS_CERT_FILE", &cert_file)
        .env("RELAY_TLS_KEY_FILE", &key_file)
        .env("RELAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    let trusting = |pem: String| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let https = format!("https://localhost:{port}/healthz");
    let old = trusting(first.cert.pem());
    let start = Instant::now();
    while old.get(&https).send().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "no HTTPS answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(old.get(&https).send().await.unwrap().status(), 200);
    // Plain HTTP gets no answer on the TLS port.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // A renewed certificate (a new key): new connections get it, without a restart.
    let second = issue();
    let new = trusting(second.cert.pem());
    assert!(new.get(&https).send().await.is_err());
    std::fs::write(&key_file, second.signing_key.serialize_pem()).unwrap();
    std::fs::write(&cert_file, second.cert.pem()).unwrap();
    let start = Instant::now();
    while new.get(&https).send().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the renewed certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(old.get(&https).send().await.is_err());
}

/// Guessing keys from one address: past `auth_failures_per_min` invalid keys, that address gets
/// 429 for every keyed request — its next guess is not even looked at, and a valid key from it
/// is refused too — while another address is served. And past `max_requests_in_flight`, requests
/// get 503 `overloaded` at once while health checks still answer.
#[tokio::test(flavor = "multi_thread")]
async fn key_guessing_is_throttled_per_address_and_excess_requests_are_shed() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let m = merchant_create(dir.path(), "guarded shop");
    let key = m["api_key"].as_str().unwrap();
    let port = free_port();
    let server = Server::start_with(
        dir.path(),
        port,
        &[
            ("RELAY_AUTH_FAILURES_PER_MIN", "5".to_owned()),
            ("RELAY_MAX_REQUESTS_IN_FLIGHT", "2".to_owned()),
        ],
    )
    .await;
    let url = format!("{}/v1/invoices", server.url);
    let client = reqwest::Client::new();
    for n in 0..5 {
        let r = client
            .get(&url)
            .bearer_auth(format!("rk_guess{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "guess {n}");
    }
    let r = client
        .get(&url)
        .bearer_auth("rk_guess5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_auth_failures");
    let r = client.get(&url).bearer_auth(key).send().await.unwrap();
    assert_eq!(r.status(), 429, "a valid key from the throttled address");
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = elsewhere
        .get(format!("http://127.0.0.1:{port}/v1/invoices"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "another address is served");

    // Requests whose bodies never finish hold both slots. One that got an answer at once was
    // shed (it raced another request for a slot): it holds nothing, so it is replaced.
    let mut held = Vec::new();
    while held.len() < 2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        s.write_all(
            format!(
                "POST /v1/invoices HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"amount\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 64];
        let answered = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await
        .is_ok();
        if !answered {
            held.push(s);
        }
    }
    let start = std::time::Instant::now();
    let shed = loop {
        let r = elsewhere
            .get(format!("http://127.0.0.1:{port}/v1/invoices"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never shed: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    let r = elsewhere
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(held);
}

/// Node URLs carry credentials, or API keys in their path: while the relay waits for nodes that
/// do not answer, and when it gives up, its logs and its error name the nodes by host and port
/// only.
#[tokio::test(flavor = "multi_thread")]
async fn node_credentials_and_api_keys_never_reach_the_logs() {
    let (btc, eth) = (free_port(), free_port());
    let btc_url = format!("http://rpcuser:Hunter2Secret@127.0.0.1:{btc}/wallet/BtcWalletKey77");
    let eth_url = format!("http://127.0.0.1:{eth}/v3/EthApiKey0123456789?key=QueryKey99");
    let rails: [(&[(&str, &str)], u16); 2] = [
        (&[("RELAY_BTC_RPC_URL", &btc_url)], btc),
        (
            &[
                ("RELAY_ETH_RPC_URL", &eth_url),
                (
                    "RELAY_ESCROW_ADDRESS",
                    "0x5fbdb2315678afecb367f032d93f642f64180aa3",
                ),
                (
                    "RELAY_OPERATOR_KEY",
                    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d2bf4f2ff80",
                ),
            ],
            eth,
        ),
    ];
    for (env, port) in rails {
        let dir = tempfile::tempdir().unwrap();
        let child = tokio::process::Command::new(RELAY)
            .arg("serve")
            .env("RELAY_DATA_DIR", dir.path())
            .env("RELAY_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("RELAY_RATES", "BTC/USD=60000,ETH/USD=2500")
            .env("RELAY_NODE_WAIT_SECS", "2")
            .envs(env.iter().copied())
            .env("RELAY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the relay kept waiting for a node that does not answer")
            .unwrap();
        assert!(!out.status.success());
        let logs = String::from_utf8_lossy(&out.stderr);
        assert!(
            logs.contains(&format!("127.0.0.1:{port}")) && logs.contains("waiting for the"),
            "the logs do not name the node: {logs}"
        );
        for secret in [
            "Hunter2Secret",
            "rpcuser",
            "BtcWalletKey77",
            "EthApiKey0123456789",
            "QueryKey99",
            "ac0974bec",
        ] {
            assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
        }
    }
}

/// Behind a reverse proxy named in `trusted_proxies`, each client is counted under the address
/// the proxy gives in `X-Forwarded-For`: one client guessing keys is refused, another client
/// behind the same proxy is not (without the setting, the proxy itself would be locked out for
/// everyone behind it).
#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_each_client_is_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let m = merchant_create(dir.path(), "proxied shop");
    let key = m["api_key"].as_str().unwrap();
    let server = Server::start_with(
        dir.path(),
        free_port(),
        &[
            ("RELAY_AUTH_FAILURES_PER_MIN", "3".to_owned()),
            ("RELAY_TRUSTED_PROXIES", "127.0.0.0/8".to_owned()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let get = |key: String, forwarded: &'static str| {
        let (client, url) = (client.clone(), format!("{}/v1/invoices", server.url));
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .header("X-Forwarded-For", forwarded)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for n in 0..3 {
        assert_eq!(get(format!("rk_guess{n}"), "203.0.113.5").await, 401);
    }
    assert_eq!(get("rk_guess3".into(), "203.0.113.5").await, 429);
    assert_eq!(
        get(key.into(), "203.0.113.5").await,
        429,
        "the guessing client"
    );
    assert_eq!(
        get(key.into(), "203.0.113.6").await,
        200,
        "another client, same proxy"
    );
}
