//! Outbound merchant webhooks against a receiver run by the test: signed, retried until the
//! receiver is back, in order per invoice, redelivered on request, and not lost to a SIGKILL.

use crate::{create_invoice, merchant_create_with, Server};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    signature: String,
    pub(crate) event_id_header: String,
    pub(crate) body: String,
    pub(crate) answered: u16,
}

#[derive(Default)]
pub(crate) struct Receiver {
    pub(crate) got: Mutex<Vec<Received>>,
    /// Answer 503 to this many requests first.
    fail_first: AtomicUsize,
    /// Answer every request with this status (0: 200 after the failures).
    always: AtomicUsize,
    /// Wait this long before answering.
    delay_ms: AtomicUsize,
    /// Requests that arrived (counted before any delay).
    arrivals: AtomicUsize,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Arc<Receiver>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    r.arrivals.fetch_add(1, Ordering::SeqCst);
    let delay = r.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    let answered = match r.always.load(Ordering::SeqCst) {
        0 => {
            if r.fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                503
            } else {
                200
            }
        }
        s => s as u16,
    };
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    r.got.lock().unwrap().push(Received {
        signature: h("relay-signature"),
        event_id_header: h("relay-event-id"),
        body,
        answered,
    });
    axum::http::StatusCode::from_u16(answered).unwrap()
}

pub(crate) async fn start_receiver(r: Arc<Receiver>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(r);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Checks `Relay-Signature: t=…,v1=…` the way the README tells merchants to.
fn verify(secret: &str, header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_owned()),
            Some(("v1", x)) => v1.push(x.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    v1.contains(&expected)
}

struct Env {
    _rail: crate::ethereum::EthRail,
    dir: tempfile::TempDir,
    server: Server,
    key: String,
    client: reqwest::Client,
    env: Vec<(&'static str, String)>,
}

impl Env {
    async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let rail = crate::ethereum::eth_rail(dir.path()).await;
        let m = merchant_create_with(
            dir.path(),
            "hooks shop",
            &["--eth-payout", &rail.eth.merchant_payout],
        );
        let mut env = rail.env.clone();
        env.push(("RELAY_WEBHOOK_RETRY_BASE_MS", "200".to_owned()));
        // Its receiver fails on purpose: its circuit may open, briefly.
        env.push(("RELAY_WEBHOOK_BREAKER_COOLDOWN_MS", "300".to_owned()));
        let server = Server::start_with(dir.path(), crate::free_port(), &env).await;
        Env {
            _rail: rail,
            dir,
            server,
            key: m["api_key"].as_str().unwrap().to_owned(),
            client: reqwest::Client::new(),
            env,
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.server.url))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.server.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn invoice(&self, n: usize) -> String {
        let (status, inv) = create_invoice(
            &self.client,
            &self.server.url,
            &self.key,
            &format!("hook-{n}"),
            &json!({"amount": format!("{}.00", 10 + n), "currency": "USD"}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{inv}");
        inv["id"].as_str().unwrap().to_owned()
    }
}

/// Waits until `done` holds for what the receiver got.
pub(crate) async fn until(
    r: &Receiver,
    secs: u64,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let start = Instant::now();
    loop {
        let got = r.got.lock().unwrap().clone();
        if done(&got) {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "receiver never got what was expected: {} requests",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn delivered_ids(got: &[Received]) -> Vec<String> {
    got.iter()
        .filter(|g| g.answered == 200)
        .map(|g| g.event_id_header.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_and_in_order_once_the_receiver_is_back() {
    let env = Env::start().await;
    let receiver = Arc::new(Receiver::default());
    receiver.fail_first.store(6, Ordering::SeqCst);
    let url = start_receiver(receiver.clone()).await;
    let (status, ep) = env.post("/v1/webhook_endpoints", json!({"url": url})).await;
    assert_eq!(status, 200, "{ep}");
    let secret = ep["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    // The secret is shown once: never in the list.
    let list = env.get("/v1/webhook_endpoints").await;
    assert_eq!(list["data"][0]["id"], ep["id"]);
    assert!(list["data"][0].get("secret").is_none(), "{list}");
    // The same URL twice is refused; a bad URL or event type too.
    let (status, _) = env.post("/v1/webhook_endpoints", json!({"url": url})).await;
    assert_eq!(status, 409);
    let (status, err) = env
        .post("/v1/webhook_endpoints", json!({"url": "ftp://x"}))
        .await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("url")));
    let (status, err) = env
        .post(
            "/v1/webhook_endpoints",
            json!({"url": "http://127.0.0.1:1/x", "event_types": ["invoice.nope"]}),
        )
        .await;
    assert_eq!(status, 400, "{err}");

    // Three invoices, two canceled: five events, the first six attempts refused.
    let mut invoices = Vec::new();
    for n in 0..3 {
        invoices.push(env.invoice(n).await);
    }
    for id in &invoices[..2] {
        let (status, _) = env
            .post(&format!("/v1/invoices/{id}/cancel"), json!({}))
            .await;
        assert_eq!(status, 200);
    }
    let got = until(&receiver, 60, |g| {
        let ids: std::collections::BTreeSet<_> = delivered_ids(g).into_iter().collect();
        ids.len() == 5
    })
    .await;
    assert!(got.iter().filter(|g| g.answered == 503).count() >= 6);
    for g in &got {
        assert!(
            verify(&secret, &g.signature, &g.body),
            "bad signature: {g:?}"
        );
        let body: Value = serde_json::from_str(&g.body).unwrap();
        assert_eq!(body["id"], g.event_id_header.as_str());
    }
    // Per invoice, in order: created, then invalid.
    for id in &invoices {
        let types: Vec<String> = got
            .iter()
            .filter(|g| g.answered == 200)
            .map(|g| serde_json::from_str::<Value>(&g.body).unwrap())
            .filter(|b| b["data"]["object"]["id"] == id.as_str())
            .map(|b| b["type"].as_str().unwrap().to_owned())
            .collect();
        let expected: &[&str] = if id == &invoices[2] {
            &["invoice.created"]
        } else {
            &["invoice.created", "invoice.invalid"]
        };
        assert_eq!(types, expected, "{id}");
    }
    // The attempts are recorded: the refused ones, then the delivery.
    let first = got[0].event_id_header.clone();
    let attempts = env.get(&format!("/v1/events/{first}/deliveries")).await;
    let attempts = attempts["data"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[0]["outcome"], "retrying");
    assert_eq!(attempts.last().unwrap()["outcome"], "delivered");

    // Redelivery sends it again.
    let before = delivered_ids(&got).iter().filter(|i| **i == first).count();
    let (status, r) = env
        .post(&format!("/v1/events/{first}/redeliver"), json!({}))
        .await;
    assert_eq!((status, r["queued"].as_u64()), (200, Some(1)), "{r}");
    until(&receiver, 20, |g| {
        delivered_ids(g).iter().filter(|i| **i == first).count() == before + 1
    })
    .await;
    let (status, _) = env
        .post(
            "/v1/events/evt_00000000000000000000000000/redeliver",
            json!({}),
        )
        .await;
    assert_eq!(status, 404);

    // A receiver answering 410 gets its endpoint disabled, and nothing more.
    let gone = Arc::new(Receiver::default());
    gone.always.store(410, Ordering::SeqCst);
    let gone_url = start_receiver(gone.clone()).await;
    let (_, gone_ep) = env
        .post(
            "/v1/webhook_endpoints",
            json!({"url": gone_url, "event_types": ["invoice.created"]}),
        )
        .await;
    env.invoice(10).await;
    until(&gone, 20, |g| !g.is_empty()).await;
    let start = Instant::now();
    loop {
        let list = env.get("/v1/webhook_endpoints").await;
        let e = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == gone_ep["id"])
            .unwrap()
            .clone();
        if e["enabled"] == false {
            assert!(e["disabled_reason"].as_str().unwrap().contains("410"));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.invoice(11).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(gone.got.lock().unwrap().len(), 1, "nothing more after 410");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_during_delivery_loses_no_event() {
    let mut env = Env::start().await;
    let receiver = Arc::new(Receiver::default());
    receiver.delay_ms.store(300, Ordering::SeqCst);
    let url = start_receiver(receiver.clone()).await;
    let (status, ep) = env.post("/v1/webhook_endpoints", json!({"url": url})).await;
    assert_eq!(status, 200);
    let secret = ep["secret"].as_str().unwrap().to_owned();
    let mut invoices = Vec::new();
    for n in 0..20 {
        invoices.push(env.invoice(n).await);
    }
    // Deliveries are in flight (the receiver is slow to answer): kill the relay now.
    let start = Instant::now();
    while receiver.arrivals.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nothing was sent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    env.server.kill9();
    let before = delivered_ids(&receiver.got.lock().unwrap()).len();
    assert!(before < 20, "the kill came too late to test anything");
    receiver.delay_ms.store(0, Ordering::SeqCst);
    env.server = Server::start_with(env.dir.path(), crate::free_port(), &env.env).await;
    let got = until(&receiver, 30, |g| {
        let ids: std::collections::BTreeSet<_> = delivered_ids(g).into_iter().collect();
        ids.len() == 20
    })
    .await;
    for g in &got {
        assert!(verify(&secret, &g.signature, &g.body));
    }
}

/// A webhook endpoint whose name resolves to a private address when the relay connects (as a
/// name registered while it was public could, by DNS rebinding) is never connected to: the
/// receiver on loopback gets nothing, and the attempt records why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_a_private_address_is_never_connected_to() {
    let dir = tempfile::tempdir().unwrap();
    let m = merchant_create_with(dir.path(), "rebinding shop", &[]);
    let receiver = Arc::new(Receiver::default());
    let url = start_receiver(receiver.clone()).await;
    // "localhost" resolves to loopback: stored as if it had passed the check at registration.
    let by_name = url.replace("127.0.0.1", "localhost");
    {
        let store = relay_store_sled::SledStore::open(dir.path()).unwrap();
        let mid = relay_core::MerchantId::parse(m["id"].as_str().unwrap()).unwrap();
        let merchant = relay_store::Merchants::merchant(&store, &mid)
            .await
            .unwrap()
            .unwrap();
        let endpoint = relay_engine::endpoints::new_endpoint(
            &merchant,
            &by_name,
            Vec::new(),
            relay_core::Secret::from_entropy("whsec_", [7; 32]),
            [3; 12],
            relay_core::Timestamp(1_900_000_000),
        )
        .unwrap();
        relay_store::Outbox::insert_endpoint(&store, &endpoint)
            .await
            .unwrap();
        relay_store::Store::durable(&store).await.unwrap();
    }
    let gateway = relay_testnet::LocalStripe::spawn().unwrap();
    let server = Server::start_with(
        dir.path(),
        crate::free_port(),
        &[
            ("RELAY_WEBHOOK_ALLOW_PRIVATE", "false".to_owned()),
            ("RELAY_WEBHOOK_RETRY_BASE_MS", "100".to_owned()),
            ("RELAY_STRIPE_API_BASE", gateway.url()),
            (
                "RELAY_STRIPE_SECRET_KEY",
                relay_testnet::LocalStripe::SECRET_KEY.to_owned(),
            ),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let key = m["api_key"].as_str().unwrap();
    let (status, inv) = create_invoice(
        &client,
        &server.url,
        key,
        "rebind-1",
        &json!({"amount": "5.00", "currency": "USD", "payment_methods": ["card"]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{inv}");
    // Registering the private destination directly is refused too.
    let r = crate::post_json(
        &client,
        &server.url,
        key,
        "/v1/webhook_endpoints",
        &json!({ "url": url }),
    )
    .await;
    assert_eq!(r["error"]["code"], "webhook_url_forbidden", "{r}");
    let events = crate::get_json(&client, &server.url, key, "/v1/events").await;
    let event = events["data"][0]["id"].as_str().unwrap().to_owned();
    let deliveries = format!("/v1/events/{event}/deliveries");
    let start = Instant::now();
    let attempts = loop {
        let a = crate::get_json(&client, &server.url, key, &deliveries).await;
        if a["data"].as_array().is_some_and(|d| d.len() >= 2) {
            break a;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no attempt: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(attempts["data"][0]["status"].is_null(), "{attempts}");
    assert_eq!(attempts["data"][0]["outcome"], "retrying");
    assert_eq!(receiver.arrivals.load(Ordering::SeqCst), 0);
}

/// Two merchants on one relay with the card gateway: each registers an endpoint at `url_of`.
struct TwoShops {
    _dir: tempfile::TempDir,
    _gateway: relay_testnet::LocalStripe,
    server: Server,
    keys: [String; 2],
    client: reqwest::Client,
}

impl TwoShops {
    async fn start(urls: [&str; 2], env: &[(&'static str, String)]) -> TwoShops {
        let dir = tempfile::tempdir().unwrap();
        let a = merchant_create_with(dir.path(), "stalled shop", &[]);
        let b = merchant_create_with(dir.path(), "busy shop", &[]);
        let gateway = relay_testnet::LocalStripe::spawn().unwrap();
        let mut env = env.to_vec();
        env.push(("RELAY_STRIPE_API_BASE", gateway.url()));
        env.push((
            "RELAY_STRIPE_SECRET_KEY",
            relay_testnet::LocalStripe::SECRET_KEY.to_owned(),
        ));
        let server = Server::start_with(dir.path(), crate::free_port(), &env).await;
        let keys = [a, b].map(|m| m["api_key"].as_str().unwrap().to_owned());
        let client = reqwest::Client::new();
        for (key, url) in keys.iter().zip(urls) {
            let r = client
                .post(format!("{}/v1/webhook_endpoints", server.url))
                .bearer_auth(key)
                .json(&json!({ "url": url }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
        TwoShops {
            _dir: dir,
            _gateway: gateway,
            server,
            keys,
            client,
        }
    }

    /// Creates a card invoice for shop `shop` (0 or 1); returns its id.
    async fn invoice(&self, shop: usize, n: usize) -> String {
        let (status, inv) = create_invoice(
            &self.client,
            &self.server.url,
            &self.keys[shop],
            &format!("fair-{shop}-{n}"),
            &json!({"amount": "5.00", "currency": "USD", "payment_methods": ["card"]}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{inv}");
        inv["id"].as_str().unwrap().to_owned()
    }
}

/// A receiver that accepts connections and never answers; counts the connections it holds.
async fn never_answers() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (url, accepted)
}

/// One merchant's receiver that never answers (the relay waits up to 60 s for an answer) holds
/// only that endpoint's four delivery slots: with 70 of its invoices' events due, more than the
/// relay's 64 slots, another merchant's event is still delivered while every stalled delivery is
/// still waiting for its answer — well within 30 s, where a relay that waits for its whole batch
/// takes the full 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_hold_up_another_merchants_webhooks() {
    let (stalled, accepted) = never_answers().await;
    let receiver = Arc::new(Receiver::default());
    let fine = start_receiver(receiver.clone()).await;
    let shops = TwoShops::start(
        [&stalled, &fine],
        &[("RELAY_WEBHOOK_TIMEOUT_SECS", "60".to_owned())],
    )
    .await;
    for n in 0..70 {
        shops.invoice(0, n).await;
    }
    crate::eventually(20, "no delivery started", || {
        accepted.load(Ordering::SeqCst) >= 4
    })
    .await;
    let asked = Instant::now();
    let id = shops.invoice(1, 0).await;
    let got = until(&receiver, 30, |got| !got.is_empty()).await;
    assert!(got[0].body.contains(&id), "{}", got[0].body);
    assert!(
        asked.elapsed() < Duration::from_secs(60),
        "delivered only after the stalled deliveries timed out"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        4,
        "the stalled endpoint holds four connections, no more"
    );
    // Nothing of the stalled merchant's has an outcome yet: its deliveries are still waiting.
    let events = crate::get_json(
        &shops.client,
        &shops.server.url,
        &shops.keys[0],
        "/v1/events",
    )
    .await;
    let first = events["data"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let attempts = crate::get_json(
        &shops.client,
        &shops.server.url,
        &shops.keys[0],
        &format!("/v1/events/{first}/deliveries"),
    )
    .await;
    assert_eq!(attempts["data"].as_array().unwrap().len(), 0, "{attempts}");
}

/// An endpoint that fails every delivery has its circuit opened after five failures in a row:
/// its other deliveries wait for the cool-down (30 s) instead of being tried, while another
/// merchant's endpoint is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_keeps_failing_is_left_alone_for_a_cool_down() {
    let failing = Arc::new(Receiver::default());
    failing.always.store(500, Ordering::SeqCst);
    let failing_url = start_receiver(failing.clone()).await;
    let receiver = Arc::new(Receiver::default());
    let fine = start_receiver(receiver.clone()).await;
    let shops = TwoShops::start(
        [&failing_url, &fine],
        &[("RELAY_WEBHOOK_RETRY_BASE_MS", "100".to_owned())],
    )
    .await;
    for n in 0..20 {
        shops.invoice(0, n).await;
    }
    crate::eventually(20, "no deliveries", || {
        failing.arrivals.load(Ordering::SeqCst) >= 5
    })
    .await;
    // 20 invoices retried every ~100-400 ms would make dozens of attempts in three seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tried = failing.arrivals.load(Ordering::SeqCst);
    assert!(
        tried <= 8,
        "{tried} attempts: five failures and at most three already in flight"
    );
    let id = shops.invoice(1, 0).await;
    let got = until(&receiver, 20, |got| !got.is_empty()).await;
    assert!(got[0].body.contains(&id));
    assert_eq!(
        crate::metric(
            &shops.client,
            &shops.server.url,
            "relay_webhook_circuits_opened_total"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(failing.arrivals.load(Ordering::SeqCst), tried);
}

/// With `secrets_key_file`, the relay signs its webhooks with secrets that never reach the disk
/// in plain text: a copy of the data directory cannot forge them, and the relay will not start
/// on it without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secrets_are_sealed_at_rest_and_the_store_needs_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_file = dir.path().join("secrets.key");
    std::fs::write(&key_file, format!("{}\n", hex::encode([42u8; 32]))).unwrap();
    let sealed = ("RELAY_SECRETS_KEY_FILE", key_file.display().to_string());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["merchant", "create", "--name", "sealed shop"])
        .env("RELAY_DATA_DIR", &data)
        .env(sealed.0, &sealed.1)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first_secret = m["webhook_secret"].as_str().unwrap().to_owned();
    let receiver = Arc::new(Receiver::default());
    let url = start_receiver(receiver.clone()).await;
    let gateway = relay_testnet::LocalStripe::spawn().unwrap();
    let server = Server::start_with(
        &data,
        crate::free_port(),
        &[
            sealed.clone(),
            ("RELAY_STRIPE_API_BASE", gateway.url()),
            (
                "RELAY_STRIPE_SECRET_KEY",
                relay_testnet::LocalStripe::SECRET_KEY.to_owned(),
            ),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let key = m["api_key"].as_str().unwrap();
    let endpoint = crate::post_json(
        &client,
        &server.url,
        key,
        "/v1/webhook_endpoints",
        &json!({ "url": url }),
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let (status, inv) = create_invoice(
        &client,
        &server.url,
        key,
        "sealed-1",
        &json!({"amount": "4.00", "currency": "USD", "payment_methods": ["card"]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{inv}");
    let got = until(&receiver, 20, |g| !g.is_empty()).await;
    assert!(
        verify(&secret, &got[0].signature, &got[0].body),
        "signed with the real secret"
    );
    drop(server);
    let mut disk = Vec::new();
    for entry in walk(&data) {
        disk.extend(std::fs::read(entry).unwrap());
    }
    for s in [&secret, &first_secret] {
        assert!(
            !disk.windows(s.len()).any(|w| w == s.as_bytes()),
            "a webhook secret is on disk in plain text"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg("serve")
        .env("RELAY_DATA_DIR", &data)
        .env("RELAY_LISTEN", format!("127.0.0.1:{}", crate::free_port()))
        .env("RELAY_RATES", "BTC/USD=60000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sealed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
