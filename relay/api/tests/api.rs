//! The API as a client uses it, through the router (no socket) on a real sled store.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use relay_api::{app, metrics_handle, AppState};
use relay_bitcoin::bitcoin::bip32::{Xpriv, Xpub};
use relay_bitcoin::bitcoin::secp256k1::Secp256k1;
use relay_bitcoin::bitcoin::Network;
use relay_core::{ApiKey, AssetBook, Clock, FixedRates, Merchant, MerchantId, Method, Timestamp};
use relay_store::prelude::*;
use relay_store_sled::SledStore;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct TestClock(AtomicI64);
impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

struct Env {
    _dir: tempfile::TempDir,
    store: SledStore,
    engine: relay_api::Engine<SledStore>,
    router: axum::Router,
    key: String,
    other_key: String,
    clock: Arc<TestClock>,
}

const T0: i64 = 1_800_000_000;

/// A regtest wpkh descriptor from a fixed seed.
fn test_descriptor() -> String {
    let secp = Secp256k1::new();
    let xprv = Xpriv::new_master(Network::Regtest, &[9u8; 32]).unwrap();
    format!("wpkh({}/0/*)", Xpub::from_priv(&secp, &xprv))
}

/// The address the descriptor gives at `index`.
fn address_at(index: u32) -> String {
    relay_bitcoin::ReceiveDescriptor::parse(&test_descriptor())
        .unwrap()
        .derive(index, Network::Regtest)
        .unwrap()
        .address
        .to_string()
}

const ESCROW: &str = "0x5fbdb2315678afecb367f032d93f642f64180aa3";

async fn env() -> Env {
    env_throttled(None).await
}

/// [`env`], with a per-merchant request rate.
async fn env_throttled(throttle: Option<relay_api::throttle::Throttle>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let mut keys = Vec::new();
    for n in 1..=2u8 {
        let m = Merchant {
            id: MerchantId::from_entropy([n; 12]),
            name: format!("shop {n}"),
            created_at: Timestamp(T0),
            // Shop 1 receives bitcoin at its own descriptor's addresses; shop 2 has none.
            btc_descriptor: (n == 1).then(test_descriptor),
            eth_payout: Some(format!("0x{:040x}", 0xabcd_u32 + u32::from(n))),
            methods: vec![Method::Bitcoin, Method::Ethereum, Method::Card],
            webhook_url: None,
            webhook_secret: relay_core::Secret::from_entropy("whsec_", [5; 32]),
            btc_confirmations: 2,
            eth_confirmations: 1,
            payment_tolerance_bps: 0,
            // Shop 2 quotes crypto 1.5 % under the market.
            rate_spread_bps: if n == 2 { 150 } else { 0 },
            quote_ttl_secs: 900,
            settle_on_ethereum: None,
        };
        let key = ApiKey::from_entropy([n; 32]);
        store
            .insert_merchant(&m, &relay_core::access::first_key_of(&m, &key))
            .await
            .unwrap();
        keys.push(key.expose_secret().to_owned());
    }
    let clock = Arc::new(TestClock(AtomicI64::new(T0)));
    let engine = relay_api::Engine {
        risk: Default::default(),
        store: store.clone(),
        ids: Arc::new(relay_api::IdSource::default()),
        card: None,
        ethereum: Some(relay_api::EthereumRail {
            chain_id: 31337,
            escrow: ESCROW.parse().unwrap(),
            capture_window_secs: 3600,
            settlement_min_confirmations: 3,
            reserves: Arc::new(EmptyReserves),
        }),
        bitcoin: Some(relay_api::BitcoinRail {
            addresses: Arc::new(relay_bitcoin::DescriptorAddresses::new(Network::Regtest)),
            watch: Arc::new(|_| {}),
            watch_refund: Arc::new(|_, _| {}),
            treasury_descriptor: None,
        }),
        assets: Arc::new(AssetBook::default()),
        rates: Arc::new(
            FixedRates::from_pairs([("BTC/USD", "60000"), ("ETH/USD", "2500")]).unwrap(),
        ),
        clock: clock.clone(),
        checkout_base: Some("http://pay.test".into()),
    };
    let state = AppState {
        engine: engine.clone(),
        request_timeout: Duration::from_secs(10),
        allow_private_webhooks: false,
        metrics_token: None,
        throttle: throttle.map(Arc::new),
        auth_failures: None,
        in_flight: None,
        key_changes: Default::default(),
        checkout: Arc::new(relay_api::routes::checkout::CheckoutSettings::new(
            "https://shop.example.com".into(),
            None,
        )),
        live_rates: None,
        fixed_rates: Arc::new(
            FixedRates::from_pairs([("BTC/USD", "60000"), ("ETH/USD", "2500")]).unwrap(),
        ),
        metrics: metrics_handle(),
    };
    Env {
        _dir: dir,
        store,
        engine,
        router: app(state),
        key: keys[0].clone(),
        other_key: keys[1].clone(),
        clock,
    }
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
    raw: Vec<u8>,
}

impl Env {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        for (h, v) in headers {
            req = req.header(*h, *v);
        }
        let req = req
            .header("content-type", "application/json")
            .body(
                body.map(|b| Body::from(b.to_vec()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let json = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            json,
            raw,
        }
    }

    async fn post(&self, uri: &str, body: Value) -> Resp {
        self.call(
            "POST",
            uri,
            Some(&self.key),
            Some(body.to_string().as_bytes()),
            &[],
        )
        .await
    }

    async fn get(&self, uri: &str) -> Resp {
        self.call("GET", uri, Some(&self.key), None, &[]).await
    }

    async fn call_with_key(
        &self,
        method: &str,
        uri: &str,
        idempotency_key: Option<&str>,
        body: Value,
        key: &str,
    ) -> Resp {
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|k| vec![("idempotency-key", k)])
            .unwrap_or_default();
        self.call(
            method,
            uri,
            Some(key),
            Some(body.to_string().as_bytes()),
            &headers,
        )
        .await
    }

    async fn invoice_count_of(&self, key: &str) -> usize {
        let page = self
            .call("GET", "/v1/invoices?limit=100", Some(key), None, &[])
            .await;
        page.json["data"].as_array().unwrap().len()
    }

    async fn invoice_count(&self) -> usize {
        let page = self.get("/v1/invoices?limit=100").await;
        page.json["data"].as_array().unwrap().len()
    }
}

fn body() -> Value {
    json!({"amount": "25.00", "currency": "USD", "order_id": "A-1001"})
}

#[tokio::test]
async fn creates_and_retrieves_an_invoice_with_locked_rates() {
    let env = env().await;
    let r = env
        .post(
            "/v1/invoices",
            json!({
                "amount": "25.00", "currency": "usd", "order_id": "A-1001",
                "metadata": {"customer": "c-7"}, "expires_in": 600,
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let inv = &r.json;
    assert!(inv["id"].as_str().unwrap().starts_with("inv_"));
    assert_eq!(inv["status"], "new");
    assert_eq!(inv["exception"], Value::Null);
    assert_eq!(inv["amount"], "25.00");
    assert_eq!(inv["amount_minor"], "2500");
    assert_eq!(inv["currency"], "USD");
    assert_eq!(inv["metadata"]["customer"], "c-7");
    assert_eq!(inv["expires_at"], "2027-01-15T08:10:00Z");
    let btc = &inv["payment_methods"]["bitcoin"];
    assert_eq!(btc["amount_sat"], "41667");
    assert_eq!(btc["amount"], "0.00041667");
    assert_eq!(btc["rate"], "60000");
    assert_eq!(btc["address"], address_at(0));
    assert_eq!(btc["confirmations_required"], 2);
    assert_eq!(
        btc["uri"],
        format!("bitcoin:{}?amount=0.00041667", address_at(0))
    );
    let eth = &inv["payment_methods"]["ethereum"];
    assert_eq!(eth["amount_wei"], "10000000000000000");
    assert_eq!(eth["chain_id"], 31337);
    assert_eq!(eth["escrow"], ESCROW);
    assert_eq!(eth["confirmations_required"], 1);
    // The escrow may be reclaimed from the invoice's expiry plus the capture window.
    assert_eq!(eth["reclaimable_at"], "2027-01-15T09:10:00Z");
    let args = eth["call"]["args"].as_array().unwrap();
    assert_eq!(args[0], format!("0x{:040x}", 0xabcd_u32 + 1));
    assert_eq!(args[1], "1800004200");
    let salt = args[2].as_str().unwrap();
    assert_eq!(salt.len(), 66);
    // The payment id commits to every term (checked against the contract in the e2e tests).
    let id = relay_core::eth_payment_id(
        31337,
        ESCROW.parse().unwrap(),
        args[0].as_str().unwrap().parse().unwrap(),
        Default::default(),
        alloy_primitives::U256::from(10_000_000_000_000_000u64),
        1_800_004_200,
        salt.parse().unwrap(),
    );
    assert_eq!(eth["payment_id"], format!("{id:#x}"));
    assert_eq!(eth["call"]["value"], "10000000000000000");
    // Without a card gateway configured, card is not offered.
    assert_eq!(inv["payment_methods"]["card"], Value::Null);

    let id = inv["id"].as_str().unwrap();
    let got = env.get(&format!("/v1/invoices/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json, r.json);

    let events = env.get("/v1/events").await;
    assert_eq!(events.json["data"][0]["type"], "invoice.created");
    assert_eq!(events.json["data"][0]["data"]["object"]["id"], id);
}

#[tokio::test]
async fn bad_input_gets_a_stable_code_and_changes_nothing() {
    let env = env().await;
    let cases: Vec<(Vec<u8>, StatusCode, &str, Option<&str>)> = vec![
        (b"{".to_vec(), StatusCode::BAD_REQUEST, "invalid_json", None),
        (
            b"[1,2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            None,
        ),
        (
            b"null".to_vec(),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            None,
        ),
        (
            br#"{"currency":"USD"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "parameter_missing",
            Some("amount"),
        ),
        (
            br#"{"amount":"1.00"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "parameter_missing",
            Some("currency"),
        ),
        (
            br#"{"amount":25,"currency":"USD"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            Some("amount"),
        ),
        (
            br#"{"amount":"-5.00","currency":"USD"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "amount_invalid",
            Some("amount"),
        ),
        (
            br#"{"amount":"0","currency":"USD"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "amount_invalid",
            Some("amount"),
        ),
        (
            br#"{"amount":"1.001","currency":"USD"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "amount_invalid",
            Some("amount"),
        ),
        (
            br#"{"amount":"1e3","currency":"USD"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "amount_invalid",
            Some("amount"),
        ),
        (
            format!(r#"{{"amount":"{}","currency":"USD"}}"#, "9".repeat(90)).into_bytes(),
            StatusCode::BAD_REQUEST,
            "amount_too_large",
            Some("amount"),
        ),
        (
            br#"{"amount":"1.00","currency":"XYZ"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "currency_unsupported",
            Some("currency"),
        ),
        (
            br#"{"amount":"1.00","currency":"USD","expires_in":5}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "expiry_invalid",
            Some("expires_in"),
        ),
        (
            br#"{"amount":"1.00","currency":"USD","expires_in":999999999999}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "expiry_invalid",
            Some("expires_in"),
        ),
        (
            br#"{"amount":"1.00","currency":"USD","expires_in":-60}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "expiry_invalid",
            Some("expires_in"),
        ),
        (
            br#"{"amount":"1.00","currency":"USD","expires_in":1e40}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            Some("expires_in"),
        ),
        (
            br#"{"amount":"1.00","currency":"USD","surprise":true}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "parameter_unknown",
            Some("surprise"),
        ),
        (
            br#"{"amount":"1.00","currency":"USD","payment_methods":["paypal"]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "payment_method_unsupported",
            Some("payment_methods[0]"),
        ),
        (
            br#"{"amount":"1.00","currency":"USD","payment_methods":[]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            Some("payment_methods"),
        ),
        (
            br#"{"amount":"1.00","currency":"EUR","payment_methods":["bitcoin"]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "rate_unavailable",
            Some("payment_methods"),
        ),
        (
            br#"{"amount":"1.00","currency":"BTC","payment_methods":["card"]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "payment_method_unavailable",
            Some("payment_methods[0]"),
        ),
        (
            br#"{"amount":"1.00","currency":"USD","payment_methods":["card"]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "payment_method_unavailable",
            Some("payment_methods[0]"),
        ),
        (
            br#"{"amount":"1.00","currency":"USD","order_id":""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            Some("order_id"),
        ),
        (
            br#"{"amount":"1.00","currency":"USD","metadata":{"k":1}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            Some("metadata.k"),
        ),
        (
            vec![b'x'; relay_api::BODY_LIMIT_BYTES + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
        ),
    ];
    for (body, status, code, param) in cases {
        let r = env
            .call("POST", "/v1/invoices", Some(&env.key), Some(&body), &[])
            .await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        assert_eq!(r.status, status, "{shown}: {}", r.json);
        assert_eq!(r.json["error"]["code"], code, "{shown}");
        assert!(r.json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(r.json["error"]["type"].is_string());
        if let Some(p) = param {
            assert_eq!(r.json["error"]["param"], p, "{shown}");
        }
    }
    assert_eq!(env.invoice_count().await, 0);
    assert!(env.get("/v1/events").await.json["data"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn api_keys_are_required_and_merchants_are_isolated() {
    let env = env().await;
    let r = env
        .call(
            "POST",
            "/v1/invoices",
            None,
            Some(body().to_string().as_bytes()),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("api_key_missing"))
    );
    let r = env
        .call("GET", "/v1/invoices", Some("rk_nope"), None, &[])
        .await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("api_key_invalid"))
    );
    let r = env
        .call(
            "GET",
            "/v1/invoices",
            None,
            None,
            &[("authorization", "Basic abc")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(env.invoice_count().await, 0);

    let mine = env.post("/v1/invoices", body()).await;
    let id = mine.json["id"].as_str().unwrap();
    // The other merchant cannot see, list or cancel it: 404 exactly like a missing id.
    let theirs = env
        .call(
            "GET",
            &format!("/v1/invoices/{id}"),
            Some(&env.other_key),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (theirs.status, theirs.json["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("resource_missing"))
    );
    let cancel = env
        .call(
            "POST",
            &format!("/v1/invoices/{id}/cancel"),
            Some(&env.other_key),
            None,
            &[],
        )
        .await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND);
    let list = env
        .call("GET", "/v1/invoices", Some(&env.other_key), None, &[])
        .await;
    assert!(list.json["data"].as_array().unwrap().is_empty());
    let events = env
        .call("GET", "/v1/events", Some(&env.other_key), None, &[])
        .await;
    assert!(events.json["data"].as_array().unwrap().is_empty());
    assert_eq!(
        env.get(&format!("/v1/invoices/{id}")).await.json["status"],
        "new"
    );
    for bad in ["inv_x", "../../etc", "inv_000000000000000000000000"] {
        let r = env.get(&format!("/v1/invoices/{bad}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_reuse() {
    let env = env().await;
    let b = body().to_string();
    let first = env
        .call(
            "POST",
            "/v1/invoices",
            Some(&env.key),
            Some(b.as_bytes()),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let again = env
        .call(
            "POST",
            "/v1/invoices",
            Some(&env.key),
            Some(b.as_bytes()),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.raw, first.raw,
        "the replay is byte-for-byte the first answer"
    );
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(env.invoice_count().await, 1);

    let other = json!({"amount": "30.00", "currency": "USD"}).to_string();
    let reused = env
        .call(
            "POST",
            "/v1/invoices",
            Some(&env.key),
            Some(other.as_bytes()),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!(
        (reused.status, reused.json["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_key_reused"))
    );
    assert_eq!(env.invoice_count().await, 1);

    // Keys belong to a merchant: the other merchant may use the same key.
    let theirs = env
        .call(
            "POST",
            "/v1/invoices",
            Some(&env.other_key),
            Some(b.as_bytes()),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::OK);
    assert_ne!(theirs.json["id"], first.json["id"]);

    let bad_key = env
        .call(
            "POST",
            "/v1/invoices",
            Some(&env.key),
            Some(b.as_bytes()),
            &[("idempotency-key", "has space")],
        )
        .await;
    assert_eq!(bad_key.json["error"]["code"], "idempotency_key_invalid");
    assert_eq!(env.invoice_count().await, 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_invoice() {
    let env = Arc::new(env().await);
    let b = body().to_string();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let env = env.clone();
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            env.call(
                "POST",
                "/v1/invoices",
                Some(&env.key),
                Some(b.as_bytes()),
                &[("idempotency-key", "race")],
            )
            .await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        ids.insert(r.json["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(env.invoice_count().await, 1);
}

#[tokio::test]
async fn lists_paginate_newest_first_and_filter_by_order() {
    let env = env().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let r = env
            .post(
                "/v1/invoices",
                json!({"amount": "1.00", "currency": "USD", "order_id": format!("o-{}", n % 2)}),
            )
            .await;
        ids.push(r.json["id"].as_str().unwrap().to_owned());
    }
    let p1 = env.get("/v1/invoices?limit=2").await;
    let got: Vec<_> = p1.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, vec![ids[4].clone(), ids[3].clone()]);
    assert_eq!(p1.json["has_more"], true);
    let p2 = env
        .get(&format!("/v1/invoices?limit=2&starting_after={}", ids[3]))
        .await;
    let got: Vec<_> = p2.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, vec![ids[2].clone(), ids[1].clone()]);
    let o0 = env.get("/v1/invoices?order_id=o-0").await;
    assert_eq!(o0.json["data"].as_array().unwrap().len(), 3);
    for (q, code) in [
        ("limit=0", "parameter_invalid"),
        ("limit=101", "parameter_invalid"),
        ("limit=x", "parameter_invalid"),
        ("starting_after=zzz", "parameter_invalid"),
        ("colour=red", "parameter_unknown"),
    ] {
        let r = env.get(&format!("/v1/invoices?{q}")).await;
        assert_eq!(
            (r.status, r.json["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{q}"
        );
    }
    let ev = env.get("/v1/events?type=invoice.created&limit=3").await;
    assert_eq!(ev.json["data"].as_array().unwrap().len(), 3);
    assert_eq!(ev.json["has_more"], true);
    let bad = env.get("/v1/events?type=invoice.exploded").await;
    assert_eq!(bad.json["error"]["code"], "parameter_invalid");
}

#[tokio::test]
async fn cancel_invalidates_once_and_emits_an_event() {
    let env = env().await;
    let r = env.post("/v1/invoices", body()).await;
    let id = r.json["id"].as_str().unwrap();
    let c = env
        .call(
            "POST",
            &format!("/v1/invoices/{id}/cancel"),
            Some(&env.key),
            None,
            &[("idempotency-key", "c1")],
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.json);
    assert_eq!(c.json["status"], "invalid");
    let replay = env
        .call(
            "POST",
            &format!("/v1/invoices/{id}/cancel"),
            Some(&env.key),
            None,
            &[("idempotency-key", "c1")],
        )
        .await;
    assert_eq!(replay.raw, c.raw);
    let again = env
        .call(
            "POST",
            &format!("/v1/invoices/{id}/cancel"),
            Some(&env.key),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (again.status, again.json["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("invoice_not_cancelable"))
    );
    let ev = env.get("/v1/events?type=invoice.invalid").await;
    assert_eq!(ev.json["data"].as_array().unwrap().len(), 1);
    let bad_body = env
        .call(
            "POST",
            &format!("/v1/invoices/{id}/cancel"),
            Some(&env.key),
            Some(br#"{"reason":1}"#),
            &[],
        )
        .await;
    assert_eq!(bad_body.json["error"]["code"], "parameter_unknown");
}

#[tokio::test]
async fn expiry_is_decided_from_the_clock() {
    let env = env().await;
    let r = env
        .post(
            "/v1/invoices",
            json!({"amount": "1.00", "currency": "USD", "expires_in": 60}),
        )
        .await;
    let id = relay_core::InvoiceId::parse(r.json["id"].as_str().unwrap()).unwrap();
    env.clock.0.fetch_add(61, Ordering::SeqCst);
    let due = env
        .store
        .invoices_due_for_expiry(env.clock.now(), 10)
        .await
        .unwrap();
    assert_eq!(due, vec![id]);
}

#[tokio::test]
async fn service_endpoints_answer() {
    let env = env().await;
    assert_eq!(
        env.call("GET", "/healthz", None, None, &[]).await.json["status"],
        "ok"
    );
    assert_eq!(
        env.call("GET", "/readyz", None, None, &[]).await.json["status"],
        "ready"
    );
    env.post("/v1/invoices", body()).await;
    let m = env.call("GET", "/metrics", None, None, &[]).await;
    let text = String::from_utf8(m.raw).unwrap();
    assert!(text.contains("relay_http_requests_total"), "{text}");
    let doc = env.call("GET", "/openapi.json", None, None, &[]).await.json;
    assert!(doc["paths"]["/v1/invoices"]["post"].is_object());
    assert!(doc["paths"]["/v1/invoices/{id}/cancel"]["post"].is_object());
    assert!(doc["paths"]["/v1/events"]["get"].is_object());
    assert!(doc["components"]["schemas"]["InvoiceView"].is_object());
    let nf = env.call("GET", "/v2/nothing", None, None, &[]).await;
    assert_eq!(
        (nf.status, nf.json["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("route_not_found"))
    );
    let na = env
        .call("DELETE", "/v1/invoices", Some(&env.key), None, &[])
        .await;
    assert_eq!(na.status, StatusCode::METHOD_NOT_ALLOWED);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[ -~]{0,12}".prop_map(Value::from),
            prop_oneof![
                Just("25.00"),
                Just("-1"),
                Just("1e9"),
                Just("0.000000001"),
                Just("USD"),
                Just("BTC"),
                Just("card")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("amount".to_owned()),
                        Just("currency".to_owned()),
                        Just("expires_in".to_owned()),
                        Just("metadata".to_owned()),
                        Just("payment_methods".to_owned()),
                        Just("order_id".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the body, the answer is a success or a 4xx with an error code — never a 5xx.
        #[test]
        fn random_bodies_never_cause_server_errors(v in json_value(), raw in prop::collection::vec(any::<u8>(), 0..64), use_raw in any::<bool>()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let env = rt.block_on(env());
            let body = if use_raw { raw } else { v.to_string().into_bytes() };
            let r = rt.block_on(env.call("POST", "/v1/invoices", Some(&env.key), Some(&body), &[]));
            prop_assert!(r.status.is_success() || r.status.is_client_error(), "{} for {}", r.status, String::from_utf8_lossy(&body));
            if r.status.is_client_error() {
                prop_assert!(r.json["error"]["code"].is_string());
                let count = rt.block_on(env.invoice_count());
                prop_assert_eq!(count, 0);
            }
        }
    }
}

#[tokio::test]
async fn each_invoice_gets_the_next_unused_address_and_bitcoin_needs_a_descriptor() {
    let env = env().await;
    let mut addresses = Vec::new();
    for i in 0..5 {
        let r = env
            .post(
                "/v1/invoices",
                json!({"amount": format!("{}.00", i + 1), "currency": "USD", "payment_methods": ["bitcoin"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        addresses.push(
            r.json["payment_methods"]["bitcoin"]["address"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // A replayed request gets the same invoice and address; no index is spent on it twice.
    let (a, b) = (
        env.call_with_key(
            "POST",
            "/v1/invoices",
            Some("k-1"),
            json!({"amount": "9.00", "currency": "USD"}),
            &env.key,
        )
        .await,
        env.call_with_key(
            "POST",
            "/v1/invoices",
            Some("k-1"),
            json!({"amount": "9.00", "currency": "USD"}),
            &env.key,
        )
        .await,
    );
    assert_eq!(a.json, b.json);
    addresses.push(
        a.json["payment_methods"]["bitcoin"]["address"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let expected: Vec<String> = (0..6).map(address_at).collect();
    assert_eq!(addresses, expected);

    // Shop 2 has no descriptor: bitcoin is left out by default and refused when asked for.
    let r = env
        .call_with_key(
            "POST",
            "/v1/invoices",
            None,
            json!({"amount": "1.00", "currency": "USD"}),
            &env.other_key,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["payment_methods"]["bitcoin"], Value::Null);
    let before = env.invoice_count_of(&env.other_key).await;
    let r = env
        .call_with_key(
            "POST",
            "/v1/invoices",
            None,
            json!({"amount": "1.00", "currency": "USD", "payment_methods": ["bitcoin"]}),
            &env.other_key,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["error"]["code"], "payment_method_unavailable");
    assert_eq!(r.json["error"]["param"], "payment_methods[0]");
    assert_eq!(env.invoice_count_of(&env.other_key).await, before);
}

/// Records a final payment on an invoice, as a chain watcher would.
async fn pay(env: &Env, id: &str, input: relay_core::invoice::InvoiceInput) {
    let id = relay_core::InvoiceId::parse(id).unwrap();
    let mut inv = env.store.invoice(&id).await.unwrap().unwrap();
    let v = inv.version;
    inv.apply(input, relay_core::Timestamp(T0 + 5)).unwrap();
    assert_eq!(
        env.store.update_invoice(v, &inv, &[], None).await.unwrap(),
        relay_store::Commit::Done
    );
}

/// Refunds are reserved under the invoice's version check: many concurrent requests, each for
/// 60 % of the payment, get exactly one refund; the others are told there is not enough left.
/// Bad refund requests change nothing, and the balances show what the ledger holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_never_exceed_the_payment() {
    let env = Arc::new(env().await);
    let inv = env
        .post(
            "/v1/invoices",
            json!({"amount": "25.00", "currency": "USD", "payment_methods": ["bitcoin"]}),
        )
        .await;
    assert_eq!(inv.status, StatusCode::OK, "{}", inv.json);
    let id = inv.json["id"].as_str().unwrap().to_owned();
    let uri = format!("/v1/invoices/{id}/refunds");
    let payer = address_at(7);

    // Nothing to refund yet.
    let early = env.post(&uri, json!({"bitcoin_address": payer})).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.json);
    assert_eq!(early.json["error"]["code"], "refund_not_possible");

    pay(
        &env,
        &id,
        relay_core::invoice::InvoiceInput::Observe {
            reference: format!("btc:{}:0", "aa".repeat(32)).parse().unwrap(),
            method: Method::Bitcoin,
            asset: "BTC".into(),
            amount: relay_core::Amount::from_minor(41_667),
            confirmed: true,
            confirmations: 2,
            seen_at: None,
        },
    )
    .await;
    let balances = env.get("/v1/balances").await;
    assert_eq!(balances.status, StatusCode::OK);
    assert_eq!(balances.json["balances"][0]["asset"], "BTC");
    assert_eq!(
        balances.json["balances"][0]["accounts"]["paid_out"],
        "41667"
    );
    assert_eq!(balances.json["balances"][0]["balanced"], true);

    // Bad requests: no address, a mainnet address, an amount too large, negative, malformed.
    for (body, code) in [
        (json!({}), "parameter_invalid"),
        (
            json!({"bitcoin_address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"}),
            "bitcoin_address_invalid",
        ),
        (
            json!({"bitcoin_address": payer, "amount": "1"}),
            "refund_exceeds_payment",
        ),
        (
            json!({"bitcoin_address": payer, "amount": "-0.0001"}),
            "amount_invalid",
        ),
        (
            json!({"bitcoin_address": payer, "amount": 0.0001}),
            "parameter_invalid",
        ),
        (
            json!({"bitcoin_address": payer, "payment": "btc:bb:0"}),
            "payment_unknown",
        ),
        // The invoice's own address is watched for the invoice: never a refund address.
        (
            json!({"bitcoin_address": address_at(0)}),
            "bitcoin_address_invalid",
        ),
    ] {
        let r = env.post(&uri, body.clone()).await;
        assert!(r.status.is_client_error(), "{body}: {}", r.json);
        assert_eq!(r.json["error"]["code"], code, "{body}: {}", r.json);
    }
    assert!(env.get(&format!("/v1/invoices/{id}")).await.json["refunds"]
        .as_array()
        .unwrap()
        .is_empty());

    let mut tasks = Vec::new();
    for _ in 0..12 {
        let env = env.clone();
        let uri = uri.clone();
        let payer = payer.clone();
        tasks.push(tokio::spawn(async move {
            env.post(&uri, json!({"bitcoin_address": payer, "amount": "0.00025"}))
                .await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(r.json["status"], "pending");
                assert_eq!(r.json["amount_minor"], "25000");
                assert_eq!(r.json["address"], payer.as_str());
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                refused += 1;
                assert_eq!(r.json["error"]["code"], "refund_exceeds_payment");
            }
            other => panic!("unexpected {other}: {}", r.json),
        }
    }
    assert_eq!((ok, refused), (1, 11));
    let view = env.get(&format!("/v1/invoices/{id}")).await.json;
    assert_eq!(view["refunds"].as_array().unwrap().len(), 1);

    // The rest can still be refunded, once: the same Idempotency-Key replays the same refund.
    let rest = |k: &'static str| {
        let env = env.clone();
        let uri = uri.clone();
        let payer = payer.clone();
        async move {
            env.call_with_key(
                "POST",
                &uri,
                Some(k),
                json!({"bitcoin_address": payer}),
                &env.key,
            )
            .await
        }
    };
    let a = rest("rest-1").await;
    let b = rest("rest-1").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["amount_minor"], "16667");
    assert_eq!(a.json, b.json);
    let c = rest("rest-2").await;
    assert_eq!(c.status, StatusCode::CONFLICT, "{}", c.json);
    // Refunds are reserved, not paid: the ledger moves only when the chain shows the payment.
    let balances = env.get("/v1/balances").await;
    assert_eq!(balances.json["balances"][0]["accounts"]["refunded"], "0");

    // The merchant will not pay the first one after all: canceled, its amount is free again.
    let first = view["refunds"][0]["id"].as_str().unwrap().to_owned();
    let cancel = format!("{uri}/{first}/cancel");
    let c = env.post(&cancel, json!({})).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.json);
    assert_eq!(c.json["status"], "failed");
    assert_eq!(c.json["failure"], "canceled by the merchant");
    let again = env.post(&cancel, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json["error"]["code"], "refund_not_cancelable");
    let missing = env.post(&format!("{uri}/re_nope/cancel"), json!({})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let r = env
        .post(&uri, json!({"bitcoin_address": payer, "amount": "0.00025"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

/// No merchant has funded a refund reserve (these tests never refund a captured deposit).
struct EmptyReserves;

impl relay_api::RefundReserves for EmptyReserves {
    fn reserve(
        &self,
        _merchant: alloy_primitives::Address,
        _token: alloy_primitives::Address,
    ) -> relay_api::card::BoxFuture<'_, Result<alloy_primitives::U256, String>> {
        Box::pin(async { Ok(alloy_primitives::U256::ZERO) })
    }
}

/// The SSRF attempts of a merchant with its own key: every private, loopback, metadata or
/// malformed destination is refused with a code, and no endpoint is stored.
#[tokio::test]
async fn webhook_endpoints_refuse_non_public_destinations() {
    let env = env().await;
    for url in [
        "http://127.0.0.1:8080/",
        "http://localhost/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://100.64.0.1/",
        // Parsed as the single-label host `nohost`: a name only a private resolver answers.
        "http:///nohost",
    ] {
        let r = env
            .post("/v1/webhook_endpoints", json!({ "url": url }))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.json);
        assert_eq!(r.json["error"]["code"], "webhook_url_forbidden", "{url}");
    }
    for url in [
        "http://user:pass@127.0.0.1/",
        "http://%zz/",
        "ftp://example.com/",
    ] {
        let r = env
            .post("/v1/webhook_endpoints", json!({ "url": url }))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.json);
        assert_eq!(r.json["error"]["code"], "parameter_invalid", "{url}");
    }
    let list = env.get("/v1/webhook_endpoints").await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(0));
    let ok = env
        .post(
            "/v1/webhook_endpoints",
            json!({ "url": "https://shop.example.com/hooks" }),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.json);
}

/// Made-up request methods do not become metric labels: the metrics cannot be grown without
/// bound by a client.
#[tokio::test]
async fn made_up_methods_share_one_metric_label() {
    let env = env().await;
    for n in 0..20 {
        let method = format!("X-INVENTED-{n}");
        let r = env.call(&method, "/v1/invoices", None, None, &[]).await;
        assert!(r.status.is_client_error(), "{method}: {}", r.status);
    }
    let metrics = env.call("GET", "/metrics", None, None, &[]).await;
    let text = String::from_utf8(metrics.raw).unwrap();
    assert!(!text.contains("X-INVENTED"), "{text}");
    assert!(text.contains("method=\"other\""), "{text}");
}

/// Each merchant's keys have their own token bucket: over it, 429 `rate_limited` with
/// `Retry-After`; another merchant is not slowed down.
#[tokio::test]
async fn a_merchant_over_its_rate_gets_429_and_others_do_not() {
    let env = env_throttled(relay_api::throttle::Throttle::new(5, 5)).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(env.get("/v1/invoices").await.status);
    }
    assert_eq!(statuses[..5], [StatusCode::OK; 5]);
    let refused = env.get("/v1/invoices").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json["error"]["code"], "rate_limited");
    assert_eq!(refused.headers["ratelimit-limit"], "5");
    assert_eq!(refused.headers["ratelimit-remaining"], "0");
    assert!(refused.headers.contains_key("ratelimit-reset"));
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let other = env
        .call("GET", "/v1/invoices", Some(&env.other_key), None, &[])
        .await;
    assert_eq!(other.status, StatusCode::OK);
}

/// Makes a key with `scopes` using `with`; returns (id, secret).
async fn make_key(env: &Env, with: &str, scopes: &[&str]) -> (String, String) {
    let r = env
        .call_with_key(
            "POST",
            "/v1/api_keys",
            None,
            json!({"name": format!("{scopes:?}"), "scopes": scopes}),
            with,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    (
        r.json["id"].as_str().unwrap().to_owned(),
        r.json["secret"].as_str().unwrap().to_owned(),
    )
}

/// A restricted key does only what its scopes name: a read-only key (say, a dashboard's) reads
/// but cannot create invoices, ask for refunds, register webhooks or manage keys; a key for a
/// point of sale creates invoices but cannot refund them. Nothing it is refused changes anything.
#[tokio::test]
async fn a_restricted_key_does_only_what_its_scopes_name() {
    let env = env().await;
    let inv = env
        .post(
            "/v1/invoices",
            json!({"amount": "10.00", "currency": "USD"}),
        )
        .await;
    assert_eq!(inv.status, 200, "{}", inv.json);
    let id = inv.json["id"].as_str().unwrap().to_owned();
    let (_, read) = make_key(&env, &env.key.clone(), &["read"]).await;
    assert!(read.starts_with("rk_"));
    let (_, pos) = make_key(&env, &env.key.clone(), &["invoices:write", "read"]).await;
    let get = env
        .call("GET", &format!("/v1/invoices/{id}"), Some(&read), None, &[])
        .await;
    assert_eq!(get.status, 200);
    let refused = [
        (
            "POST",
            "/v1/invoices".to_owned(),
            json!({"amount": "1.00", "currency": "USD"}),
            "invoices:write",
        ),
        (
            "POST",
            format!("/v1/invoices/{id}/cancel"),
            json!({}),
            "invoices:write",
        ),
        (
            "POST",
            format!("/v1/invoices/{id}/refunds"),
            json!({"amount": "1.00"}),
            "refunds:write",
        ),
        (
            "POST",
            "/v1/webhook_endpoints".to_owned(),
            json!({"url": "https://example.com/h"}),
            "webhooks:write",
        ),
        ("GET", "/v1/api_keys".to_owned(), json!({}), "keys:write"),
        (
            "POST",
            "/v1/api_keys".to_owned(),
            json!({"name": "x", "scopes": ["read"]}),
            "keys:write",
        ),
    ];
    for (method, path, body, scope) in &refused {
        let r = env
            .call_with_key(method, path, None, body.clone(), &read)
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.json);
        assert_eq!(r.json["error"]["code"], "scope_missing");
        assert!(
            r.json["error"]["message"].as_str().unwrap().contains(scope),
            "{}",
            r.json
        );
    }
    // The point-of-sale key creates invoices, but refunds need their own scope.
    let created = env
        .call_with_key(
            "POST",
            "/v1/invoices",
            None,
            json!({"amount": "2.00", "currency": "USD"}),
            &pos,
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.json);
    let r = env
        .call_with_key(
            "POST",
            &format!("/v1/invoices/{id}/refunds"),
            None,
            json!({"amount": "1.00"}),
            &pos,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    // What was refused left no trace: two invoices (one per allowed create), no refund, no
    // endpoint.
    let list = env.get("/v1/invoices").await;
    assert_eq!(
        list.json["data"].as_array().unwrap().len(),
        2,
        "{}",
        list.json
    );
    let first = env.get(&format!("/v1/invoices/{id}")).await;
    assert_eq!(first.json["status"], "new");
    assert_eq!(first.json["refunds"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(
        env.get("/v1/webhook_endpoints").await.json["data"],
        json!([])
    );
}

/// A key can make, roll and see only keys within its own scopes, so a leaked restricted key
/// cannot raise itself to a full one; another merchant's key ids are not found.
#[tokio::test]
async fn a_key_cannot_make_or_roll_a_key_with_more_than_it_has() {
    let env = env().await;
    let (_, manager) = make_key(&env, &env.key.clone(), &["keys:write", "read"]).await;
    let r = env
        .call_with_key(
            "POST",
            "/v1/api_keys",
            None,
            json!({"name": "more", "scopes": ["read", "refunds:write"]}),
            &manager,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json["error"]["code"].as_str()),
        (403, Some("scope_exceeds_key"))
    );
    let keys = env
        .call("GET", "/v1/api_keys", Some(&manager), None, &[])
        .await;
    assert_eq!(keys.status, 200);
    let full = keys.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scopes"].as_array().unwrap().len() == relay_core::Scope::ALL.len())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = env
        .call_with_key(
            "POST",
            &format!("/v1/api_keys/{full}/roll"),
            None,
            json!({}),
            &manager,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    // The full key still works: nothing was rolled.
    assert_eq!(env.get("/v1/invoices").await.status, 200);
    // Another merchant cannot see or touch these keys.
    let r = env
        .call_with_key(
            "POST",
            &format!("/v1/api_keys/{full}/revoke"),
            None,
            json!({}),
            &env.other_key,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.json);
    let r = env
        .call_with_key(
            "POST",
            "/v1/api_keys",
            None,
            json!({"name": "x", "scopes": ["admin"]}),
            &env.key,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json["error"]["param"].as_str()),
        (400, Some("scopes[0]"))
    );
    let r = env
        .call_with_key(
            "POST",
            "/v1/api_keys",
            None,
            json!({"name": "x", "scopes": []}),
            &env.key,
        )
        .await;
    assert_eq!(r.status, 400);
}

/// A revoked key gets 401 from the very next request, a rolled key's old secret too; the
/// secret is shown once and never listed; the last key that can manage keys stays.
#[tokio::test]
async fn revoked_and_rolled_secrets_are_refused_at_once_and_secrets_are_shown_once() {
    let env = env().await;
    let (id, secret) = make_key(&env, &env.key.clone(), &["read"]).await;
    assert_eq!(
        env.call("GET", "/v1/invoices", Some(&secret), None, &[])
            .await
            .status,
        200
    );
    let rolled = env
        .post(&format!("/v1/api_keys/{id}/roll"), json!({}))
        .await;
    assert_eq!(rolled.status, 200, "{}", rolled.json);
    let new_secret = rolled.json["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(rolled.json["id"], id.as_str());
    assert_eq!(rolled.json["scopes"], json!(["read"]));
    let old = env
        .call("GET", "/v1/invoices", Some(&secret), None, &[])
        .await;
    assert_eq!(
        (old.status.as_u16(), old.json["error"]["code"].as_str()),
        (401, Some("api_key_invalid"))
    );
    assert_eq!(
        env.call("GET", "/v1/invoices", Some(&new_secret), None, &[])
            .await
            .status,
        200
    );
    let revoked = env
        .post(&format!("/v1/api_keys/{id}/revoke"), json!({}))
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.json);
    assert!(revoked.json["revoked_at"].is_string());
    assert!(revoked.json.get("secret").is_none());
    assert_eq!(
        env.call("GET", "/v1/invoices", Some(&new_secret), None, &[])
            .await
            .status,
        401
    );
    let again = env
        .post(&format!("/v1/api_keys/{id}/revoke"), json!({}))
        .await;
    assert_eq!(again.json["error"]["code"], "api_key_revoked");
    // The list shows both keys and no secret.
    let list = env.get("/v1/api_keys").await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 2);
    let text = String::from_utf8(list.raw.clone()).unwrap();
    assert!(
        !text.contains(&new_secret) && !text.contains(&env.key) && !text.contains("\"secret\"")
    );
    // The full key is the last that can manage keys: it stays.
    let full = list.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] != id.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let last = env
        .post(&format!("/v1/api_keys/{full}/revoke"), json!({}))
        .await;
    assert_eq!(
        (last.status.as_u16(), last.json["error"]["code"].as_str()),
        (409, Some("last_key_manager"))
    );
    assert_eq!(env.get("/v1/invoices").await.status, 200);
    // With a second manager, the first can go, and is refused at once.
    let (_, second) = make_key(&env, &env.key.clone(), &["keys:write", "read"]).await;
    let gone = env
        .call_with_key(
            "POST",
            &format!("/v1/api_keys/{full}/revoke"),
            None,
            json!({}),
            &second,
        )
        .await;
    assert_eq!(gone.status, 200, "{}", gone.json);
    assert_eq!(env.get("/v1/invoices").await.status, 401);
}

/// `GET /v1/events?type=` over a merchant with more events than one request may read: the
/// answer comes after at most 10,000 events with a cursor to go on from, and following it
/// reaches the end.
#[tokio::test]
async fn a_type_filter_reads_a_bounded_number_of_events_per_request() {
    let env = env().await;
    let created = env
        .post("/v1/invoices", json!({"amount": "1.00", "currency": "USD"}))
        .await;
    let id = relay_core::InvoiceId::parse(created.json["id"].as_str().unwrap()).unwrap();
    let mut invoice = env.store.invoice(&id).await.unwrap().unwrap();
    let ids = relay_api::IdSource::default();
    // 15,000 more events of one type, written straight to the store.
    for _ in 0..15 {
        let events: Vec<_> = (0..1000)
            .flat_map(|_| {
                relay_core::Event::for_invoice(
                    &invoice,
                    &[relay_core::EventType::InvoiceCreated],
                    Timestamp(T0),
                    || ids.event_id(),
                )
            })
            .collect();
        let v = invoice.version;
        invoice.version += 1;
        env.store
            .update_invoice(v, &invoice, &events, None)
            .await
            .unwrap();
    }
    let first = env.get("/v1/events?type=invoice.settled&limit=10").await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(first.json["data"], json!([]));
    assert_eq!(first.json["has_more"], true);
    let next = first.json["next_starting_after"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = env
        .get(&format!(
            "/v1/events?type=invoice.settled&limit=10&starting_after={next}"
        ))
        .await;
    assert_eq!(second.json["data"], json!([]));
    assert_eq!(second.json["has_more"], false, "{}", second.json);
    assert!(second.json.get("next_starting_after").is_none());
    // Without a filter, pages are as before.
    let plain = env.get("/v1/events?limit=3").await;
    assert_eq!(plain.json["data"].as_array().unwrap().len(), 3);
    assert!(plain.json.get("next_starting_after").is_none());
}

/// The OpenAPI document says what the API does: every route is in it with a unique operation id,
/// every keyed operation documents 401, 403 and 429 (with `Retry-After`), every operation 503,
/// `limit` starts at 1, and a path that does not decode gets the JSON 400 like any other error.
#[tokio::test]
async fn the_openapi_document_covers_every_answer_and_bad_paths_get_json() {
    let env = env().await;
    let doc = env.call("GET", "/openapi.json", None, None, &[]).await.json;
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/api_keys",
        "/v1/api_keys/{id}/roll",
    ] {
        assert!(paths.contains_key(p), "{p} is missing");
    }
    let mut ids = std::collections::HashSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "{id} twice");
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("503"), "{method} {path}: no 503");
            let keyed = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()));
            if keyed {
                for status in ["401", "403", "429"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
                assert!(responses["429"]["headers"]["Retry-After"].is_object());
            }
            if path.contains('{') || method == "post" {
                assert!(responses.contains_key("400"), "{method} {path}: no 400");
            }
        }
    }
    let limit = doc["paths"]["/v1/invoices"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 100);
    let link =
        &doc["paths"]["/v1/invoices"]["post"]["responses"]["200"]["links"]["RetrieveInvoice"];
    assert_eq!(link["operationId"], "retrieve_invoice", "{link}");
    let gateway = &doc["paths"]["/v1/gateways/stripe/webhook"]["post"];
    assert!(gateway["requestBody"]["content"]["application/json"].is_object());
    let bad = env
        .call("GET", "/v1/invoices/%FF%FE", Some(&env.key), None, &[])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.headers["content-type"], "application/json");
    assert_eq!(bad.json["error"]["code"], "path_invalid");
}

/// The page of a checkout URL, as a browser asks for it (no key), and its text with HTML's
/// escapes undone.
async fn open_page(env: &Env, path: &str, headers: &[(&str, &str)]) -> (Resp, String) {
    let r = env.call("GET", path, None, None, headers).await;
    let text = String::from_utf8(r.raw.clone())
        .unwrap()
        .replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    (r, text)
}

/// Every invoice gets a checkout URL whose token is neither its id nor guessable; the page and
/// its JSON need no key, show what to pay on each rail with a QR code, keep every merchant secret
/// out, speak English or Chinese, follow the invoice's state, and carry a strict policy.
#[tokio::test]
async fn the_checkout_page_shows_what_to_pay_without_any_key_or_secret() {
    let env = env().await;
    let r = env
        .post(
            "/v1/invoices",
            json!({"amount": "25.00", "currency": "USD", "description": "Two coffees",
                "order_id": "private-order-7", "metadata": {"customer": "private-meta"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let inv = r.json;
    let id = inv["id"].as_str().unwrap();
    let url = inv["checkout_url"].as_str().unwrap();
    let path = url.strip_prefix("http://pay.test").unwrap();
    let token = path.strip_prefix("/pay/").unwrap();
    assert!(token.starts_with("cs_") && token.len() == 35, "{token}");
    assert!(
        !url.contains(id.trim_start_matches("inv_")),
        "the token is not the invoice id"
    );
    let other = env.post("/v1/invoices", body()).await.json;
    assert_ne!(other["checkout_url"], inv["checkout_url"]);

    let (page, html) = open_page(&env, path, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers["cache-control"], "no-store");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.ends_with("frame-ancestors https://shop.example.com"),
        "{csp}"
    );
    assert!(
        html.contains("Pay shop 1") && html.contains("Two coffees"),
        "{html}"
    );
    assert!(html.contains("25.00 USD"));
    let btc = &inv["payment_methods"]["bitcoin"];
    let eth = &inv["payment_methods"]["ethereum"];
    for shown in [
        btc["address"].as_str().unwrap(),
        btc["amount"].as_str().unwrap(),
        eth["amount"].as_str().unwrap(),
    ] {
        assert!(html.contains(shown), "{shown} not on the page");
    }
    assert!(html.contains(eth["uri"].as_str().unwrap()));
    assert!(html.contains(btc["uri"].as_str().unwrap()));
    assert_eq!(html.matches("<svg").count(), 2, "a QR code per crypto rail");
    assert!(html.contains("Awaiting payment") && html.contains("Expires in"));
    for secret in [
        env.key.as_str(),
        "whsec_",
        "private-order-7",
        "private-meta",
    ] {
        assert!(!html.contains(secret), "{secret} is on the page");
    }

    // Chinese, by query or by the browser's languages.
    let (_, zh) = open_page(&env, &format!("{path}?lang=zh-CN"), &[]).await;
    assert!(
        zh.contains("lang=\"zh-CN\"") && zh.contains("等待付款") && zh.contains("向 shop 1 付款")
    );
    let (_, zh) = open_page(
        &env,
        path,
        &[("accept-language", "zh-CN,zh;q=0.9,en;q=0.8")],
    )
    .await;
    assert!(zh.contains("等待付款"));

    // The wallet apps' JSON: the same request, any origin may read it.
    let j = env
        .call("GET", &format!("{path}/payment_request"), None, None, &[])
        .await;
    assert_eq!(j.status, StatusCode::OK);
    assert_eq!(j.headers["access-control-allow-origin"], "*");
    assert_eq!(j.json["merchant"], "shop 1");
    assert_eq!(j.json["amount_due"], "25.00");
    assert_eq!(j.json["payment_methods"]["bitcoin"]["uri"], btc["uri"]);
    assert!(j.json.get("order_id").is_none() && j.json.get("metadata").is_none());

    // Half paid in bitcoin: what is still due, in the page's words and in the JSON.
    let half: u64 = btc["amount_sat"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        .div_ceil(2);
    pay(
        &env,
        id,
        relay_core::invoice::InvoiceInput::Observe {
            reference: relay_core::PaymentRef::Bitcoin {
                txid: "ab".repeat(32).parse().unwrap(),
                vout: 0,
            },
            method: Method::Bitcoin,
            asset: "BTC".into(),
            amount: relay_core::Amount::from_minor(u128::from(half)),
            confirmed: true,
            confirmations: 2,
            seen_at: None,
        },
    )
    .await;
    let j = env
        .call(
            "GET",
            &format!("{path}/payment_request?lang=en"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(j.json["status_class"], "partial", "{}", j.json);
    assert_eq!(j.json["amount_due"], "12.50");
    let (_, html) = open_page(&env, path, &[]).await;
    assert!(html.contains("12.50 USD still due"), "{html}");

    // Canceled: no longer payable, and the page says so instead of showing addresses.
    let other_id = other["id"].as_str().unwrap();
    let c = env
        .post(&format!("/v1/invoices/{other_id}/cancel"), json!({}))
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.json);
    let other_path = other["checkout_url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://pay.test")
        .unwrap();
    let (_, html) = open_page(&env, other_path, &[]).await;
    assert!(
        html.contains("no longer valid") && !html.contains("<svg"),
        "{html}"
    );

    // A token nobody was given: 404, for the page and the JSON; malformed ones are not looked up.
    for bad in [
        "/pay/cs_00000000000000000000000000000000",
        "/pay/inv_x",
        &format!("/pay/{id}"),
    ] {
        let (r, _) = open_page(&env, bad, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
        let j = env
            .call("GET", &format!("{bad}/payment_request"), None, None, &[])
            .await;
        assert_eq!(j.status, StatusCode::NOT_FOUND);
        assert_eq!(j.json["error"]["code"], "resource_missing");
    }
    // Live status: an event stream whose first event is the payment request as it stands.
    let req = Request::builder()
        .uri(format!("{path}/events?lang=en"))
        .body(Body::empty())
        .unwrap();
    let resp = env.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let frame = String::from_utf8(frame.to_vec()).unwrap();
    assert!(frame.starts_with("event: status\ndata: "), "{frame}");
    let data: Value =
        serde_json::from_str(frame.lines().nth(1).unwrap().trim_start_matches("data: ")).unwrap();
    assert_eq!(data["status_class"], "partial");
    let none = env
        .call(
            "GET",
            "/pay/cs_00000000000000000000000000000000/events",
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    // Past its expiry, an unpaid invoice's page says so and offers nothing to pay.
    let late = env
        .post(
            "/v1/invoices",
            json!({"amount": "3.00", "currency": "USD", "expires_in": 60}),
        )
        .await
        .json;
    let late_path = late["checkout_url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://pay.test")
        .unwrap()
        .to_owned();
    env.clock.0.fetch_add(61, Ordering::SeqCst);
    let (_, html) = open_page(&env, &late_path, &[]).await;
    assert!(
        html.contains("This payment request has expired") && !html.contains("<svg"),
        "{html}"
    );
    let css = env
        .call("GET", "/checkout-assets/checkout.css", None, None, &[])
        .await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
}

/// A merchant's return address: only http(s) without credentials is taken, and the checkout page
/// links back to it once the invoice is paid, not before.
#[tokio::test]
async fn the_checkout_page_links_back_to_the_merchant_once_paid() {
    let env = env().await;
    for hostile in [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "ftp://shop.example.com/",
        "https://user:pass@shop.example.com/",
        "not a url",
    ] {
        let r = env
            .post(
                "/v1/invoices",
                json!({"amount": "5.00", "currency": "USD", "redirect_url": hostile}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{hostile}");
        assert_eq!(r.json["error"]["code"], "redirect_url_invalid");
        assert_eq!(r.json["error"]["param"], "redirect_url");
    }
    let back = "https://shop.example.com/orders/A-7?paid=1";
    let inv = env
        .post(
            "/v1/invoices",
            json!({"amount": "5.00", "currency": "USD", "redirect_url": back,
                "payment_methods": ["ethereum"]}),
        )
        .await
        .json;
    assert_eq!(inv["redirect_url"], back);
    let path = inv["checkout_url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://pay.test")
        .unwrap()
        .to_owned();
    let (_, html) = open_page(&env, &path, &[]).await;
    assert!(!html.contains(back), "a return link before payment");
    let eth = &inv["payment_methods"]["ethereum"];
    pay(
        &env,
        inv["id"].as_str().unwrap(),
        relay_core::invoice::InvoiceInput::Observe {
            reference: relay_core::PaymentRef::Ethereum(relay_core::PaymentId(
                eth["payment_id"].as_str().unwrap().parse().unwrap(),
            )),
            method: Method::Ethereum,
            asset: "ETH".into(),
            amount: relay_core::Amount::from_minor(
                eth["amount_minor"].as_str().unwrap().parse().unwrap(),
            ),
            confirmed: true,
            confirmations: 1,
            seen_at: None,
        },
    )
    .await;
    let (_, html) = open_page(&env, &path, &[]).await;
    assert!(
        html.contains(&format!("href=\"{back}\"")) && html.contains("Return to shop 1"),
        "{html}"
    );
    let j = env
        .call("GET", &format!("{path}/payment_request"), None, None, &[])
        .await;
    assert_eq!(j.json["status_class"], "settled");
    assert_eq!(j.json["redirect_url"], back);
}

/// The checkout page's card route takes nothing but a gateway card token, answers with a code
/// for each refusal, and limits how many cards one payment request may try (card testing).
#[tokio::test]
async fn the_card_route_refuses_bad_input_and_limits_attempts() {
    let env = env().await;
    let inv = env.post("/v1/invoices", body()).await.json;
    let path = inv["checkout_url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://pay.test")
        .unwrap()
        .to_owned();
    let pay = |path: String, body: &'static str| {
        let env = &env;
        async move {
            env.call(
                "POST",
                &format!("{path}/card"),
                None,
                Some(body.as_bytes()),
                &[],
            )
            .await
        }
    };
    for (body, code) in [
        ("{", "invalid_json"),
        ("{}", "parameter_missing"),
        (r#"{"card_token": 5}"#, "parameter_invalid"),
        (
            r#"{"card_token": "tok_1", "amount": 1}"#,
            "parameter_unknown",
        ),
        (r#"{"card_token": "pm_card_visa"}"#, "card_token_invalid"),
        (
            r#"{"card_token": "tok_../../v1/refunds"}"#,
            "card_token_invalid",
        ),
    ] {
        let r = pay(path.clone(), body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.json);
        assert_eq!(r.json["error"]["code"], code, "{body}");
    }
    let r = pay(
        "/pay/cs_00000000000000000000000000000000".into(),
        r#"{"card_token": "tok_visa"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // This relay has no card gateway: the request takes no card, ten times; the eleventh attempt
    // on the same request is throttled before anything is looked up.
    for _ in 0..10 {
        let r = pay(path.clone(), r#"{"card_token": "tok_visa"}"#).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
        assert_eq!(r.json["error"]["code"], "card_not_offered");
    }
    let r = pay(path.clone(), r#"{"card_token": "tok_visa"}"#).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
    assert_eq!(r.json["error"]["code"], "too_many_card_attempts");
    assert!(r.headers.contains_key("retry-after"));
    // The page offers no card form without a gateway.
    let (_, html) = open_page(&env, &path, &[]).await;
    assert!(!html.contains("card-form"), "{html}");
}

/// An invoice whose bitcoin address is derived on demand uses no address of the descriptor until
/// its payer chooses bitcoin (on the page's form, without JavaScript, or through the public API);
/// then it gets the next one, indexed for the watcher, the same however often it is asked.
#[tokio::test]
async fn a_bitcoin_address_is_derived_only_when_the_payer_chooses_bitcoin() {
    let env = env().await;
    let at_creation = |n: &str| json!({"amount": "10.00", "currency": "USD", "order_id": n});
    let first = env.post("/v1/invoices", at_creation("first")).await.json;
    assert_eq!(
        first["payment_methods"]["bitcoin"]["address"],
        address_at(0)
    );
    let lazy = env
        .post(
            "/v1/invoices",
            json!({"amount": "10.00", "currency": "USD", "bitcoin_address": "on_demand"}),
        )
        .await;
    assert_eq!(lazy.status, StatusCode::OK, "{}", lazy.json);
    let lazy = lazy.json;
    let btc = &lazy["payment_methods"]["bitcoin"];
    assert_eq!(btc["address_on_demand"], true, "{btc}");
    assert!(btc["address"].is_null() && btc["uri"].is_null(), "{btc}");
    assert!(btc["amount_sat"].is_string(), "the amount is quoted: {btc}");
    // The next invoice takes the very next address: the lazy one used none.
    let second = env.post("/v1/invoices", at_creation("second")).await.json;
    assert_eq!(
        second["payment_methods"]["bitcoin"]["address"],
        address_at(1)
    );

    // Its page offers a form for the address, not a QR code.
    let path = lazy["checkout_url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://pay.test")
        .unwrap()
        .to_owned();
    let (page, html) = open_page(&env, &path, &[]).await;
    assert!(
        html.contains(&format!("action=\"{path}/methods/bitcoin?lang=en\""))
            && html.contains("Show the address"),
        "{html}"
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("form-action 'self'"), "{csp}");
    // The form's post (no script): back to the page, at the bitcoin section, which now has it.
    let form = env
        .call(
            "POST",
            &format!("{path}/methods/bitcoin?lang=en"),
            None,
            Some(b""),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(form.status, StatusCode::SEE_OTHER);
    assert_eq!(form.headers["location"], format!("{path}?lang=en#bitcoin"));
    let (_, html) = open_page(&env, &path, &[]).await;
    assert!(
        html.contains(&address_at(2)) && html.contains("<svg"),
        "{html}"
    );
    // A wallet app asking again (JSON, any origin) gets the same address.
    let again = env
        .call("POST", &format!("{path}/methods/bitcoin"), None, None, &[])
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);
    assert_eq!(again.headers["access-control-allow-origin"], "*");
    assert_eq!(
        again.json["payment_methods"]["bitcoin"]["address"],
        address_at(2)
    );
    let merchant_view = env
        .get(&format!("/v1/invoices/{}", lazy["id"].as_str().unwrap()))
        .await
        .json;
    assert_eq!(
        merchant_view["payment_methods"]["bitcoin"]["address"],
        address_at(2)
    );
    // Indexed: a payment to it finds this invoice.
    let script = relay_bitcoin::ReceiveDescriptor::parse(&test_descriptor())
        .unwrap()
        .derive(2, Network::Regtest)
        .unwrap()
        .script_pubkey;
    let found = env
        .store
        .invoice_by_lookup(&relay_core::Lookup::BtcScript(
            relay_core::Script::from_bytes(script.to_bytes()),
        ))
        .await
        .unwrap();
    assert_eq!(
        found.map(|i| i.to_string()),
        lazy["id"].as_str().map(str::to_owned)
    );
    let third = env.post("/v1/invoices", at_creation("third")).await.json;
    assert_eq!(
        third["payment_methods"]["bitcoin"]["address"],
        address_at(3)
    );

    // Choosing what is not offered, or not a method, or on a request past its expiry.
    for (method, status, code) in [
        ("card", StatusCode::CONFLICT, "payment_method_not_offered"),
        (
            "dogecoin",
            StatusCode::BAD_REQUEST,
            "payment_method_unsupported",
        ),
    ] {
        let r = env
            .call("POST", &format!("{path}/methods/{method}"), None, None, &[])
            .await;
        assert_eq!(r.status, status, "{method}: {}", r.json);
        assert_eq!(r.json["error"]["code"], code);
    }
    let late = env
        .post(
            "/v1/invoices",
            json!({"amount": "10.00", "currency": "USD", "bitcoin_address": "on_demand", "expires_in": 60}),
        )
        .await
        .json;
    env.clock.0.fetch_add(61, Ordering::SeqCst);
    let late_path = late["checkout_url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://pay.test")
        .unwrap()
        .to_owned();
    let r = env
        .call(
            "POST",
            &format!("{late_path}/methods/bitcoin"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    assert_eq!(r.json["error"]["code"], "invoice_not_open");
    let r = env
        .post(
            "/v1/invoices",
            json!({"amount": "10.00", "currency": "USD", "bitcoin_address": "later"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"]["param"], "bitcoin_address");
}

/// A payment link makes invoices for its price: a single-use one makes one (two first visitors at
/// once get the same), sends later visitors back to it, and makes another only once it expired
/// unpaid; a reusable one makes one per visit; a deactivated one makes none. Invoices it makes
/// use no bitcoin address until the payer chooses bitcoin.
#[tokio::test]
async fn payment_links_make_invoices_once_or_per_visit() {
    let env = env().await;
    let made = env
        .call_with_key(
            "POST",
            "/v1/payment_links",
            Some("link-1"),
            json!({"amount": "12.50", "currency": "USD", "description": "Guitar lesson",
                "reusable": false, "payment_methods": ["bitcoin", "ethereum"]}),
            &env.key,
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.json);
    let link = made.json;
    assert_eq!(link["object"], "payment_link");
    assert_eq!(link["amount"], "12.50");
    let url = link["url"].as_str().unwrap();
    let path = url.strip_prefix("http://pay.test").unwrap().to_owned();
    assert!(path.starts_with("/link/pl_"), "{url}");
    // The same request again: the same link.
    let again = env
        .call_with_key(
            "POST",
            "/v1/payment_links",
            Some("link-1"),
            json!({"amount": "12.50", "currency": "USD", "description": "Guitar lesson",
                "reusable": false, "payment_methods": ["bitcoin", "ethereum"]}),
            &env.key,
        )
        .await;
    assert_eq!(again.json["id"], link["id"]);

    let visit = |path: String| {
        let env = &env;
        async move {
            let r = env.call("GET", &path, None, None, &[]).await;
            assert_eq!(
                r.status,
                StatusCode::SEE_OTHER,
                "{path}: {}",
                String::from_utf8_lossy(&r.raw)
            );
            r.headers["location"].to_str().unwrap().to_owned()
        }
    };
    let invoice_at = |checkout: String| {
        let env = &env;
        async move {
            let token = checkout.rsplit('/').next().unwrap().to_owned();
            let found = env
                .store
                .invoice_by_lookup(&relay_core::Lookup::Checkout(token))
                .await
                .unwrap()
                .expect("the checkout page's invoice");
            env.get(&format!("/v1/invoices/{found}")).await.json
        }
    };
    // Eight first visitors at once: one invoice.
    let firsts = futures_util::future::join_all((0..8).map(|_| visit(path.clone()))).await;
    assert!(firsts.iter().all(|l| *l == firsts[0]), "{firsts:?}");
    let inv = invoice_at(firsts[0].clone()).await;
    assert_eq!(inv["amount"], "12.50");
    assert_eq!(inv["description"], "Guitar lesson");
    assert_eq!(inv["payment_methods"]["bitcoin"]["address_on_demand"], true);
    assert_eq!(env.invoice_count().await, 1);
    let shown = env
        .get(&format!(
            "/v1/payment_links/{}",
            link["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(shown.json["invoice"], inv["id"]);
    // Later: back to it. Once it expired unpaid: a new one.
    assert_eq!(visit(path.clone()).await, firsts[0]);
    env.clock.0.fetch_add(901, Ordering::SeqCst);
    let next = visit(path.clone()).await;
    assert_ne!(next, firsts[0]);
    assert_eq!(env.invoice_count().await, 2);

    // Reusable: an invoice per visit.
    let shop = env
        .post(
            "/v1/payment_links",
            json!({"amount": "3.00", "currency": "USD", "reusable": true}),
        )
        .await
        .json;
    let shop_path = shop["url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://pay.test")
        .unwrap()
        .to_owned();
    let (a, b) = (
        visit(shop_path.clone()).await,
        visit(shop_path.clone()).await,
    );
    assert_ne!(a, b);
    assert_eq!(invoice_at(a).await["amount"], "3.00");

    // Listed newest first; another merchant sees none of them.
    let list = env.get("/v1/payment_links?limit=1").await.json;
    assert_eq!(list["data"][0]["id"], shop["id"]);
    assert_eq!(list["has_more"], true);
    let theirs = env
        .call(
            "GET",
            &format!("/v1/payment_links/{}", link["id"].as_str().unwrap()),
            Some(&env.other_key),
            None,
            &[],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);

    // Deactivated: no more invoices, a page that says so.
    let off = env
        .post(
            &format!(
                "/v1/payment_links/{}/deactivate",
                shop["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.json);
    assert_eq!(off.json["active"], false);
    let count = env.invoice_count().await;
    let (gone, html) = open_page(&env, &shop_path, &[]).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert!(html.contains("no longer takes payments"), "{html}");
    assert_eq!(env.invoice_count().await, count);
    for bad in [
        "/link/pl_00000000000000000000000000000000",
        "/link/nothing",
        "/link/pl_..%2F..%2Fv1",
    ] {
        let (r, _) = open_page(&env, bad, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
    }

    // Bad input: a 4xx with a code, and no link.
    for (body, code) in [
        (
            json!({"amount": "5.00", "currency": "USD"}),
            "parameter_missing",
        ),
        (
            json!({"amount": "-5", "currency": "USD", "reusable": true}),
            "amount_invalid",
        ),
        (
            json!({"amount": "5.00", "currency": "XXX", "reusable": true}),
            "currency_unsupported",
        ),
        (
            json!({"amount": "5.00", "currency": "USD", "reusable": "yes"}),
            "parameter_invalid",
        ),
        (
            json!({"amount": "5.00", "currency": "USD", "reusable": true, "payment_methods": ["card"]}),
            "payment_method_unavailable",
        ),
        (
            json!({"amount": "5.00", "currency": "USD", "reusable": true, "redirect_url": "javascript:alert(1)"}),
            "redirect_url_invalid",
        ),
        (
            json!({"amount": "5.00", "currency": "USD", "reusable": true, "expires_in": 5}),
            "expiry_invalid",
        ),
    ] {
        let r = env.post("/v1/payment_links", body.clone()).await;
        assert!(r.status.is_client_error(), "{body}: {}", r.json);
        assert_eq!(r.json["error"]["code"], code, "{body}: {}", r.json);
    }
    let all = env.get("/v1/payment_links?limit=100").await.json;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
}

/// `GET /v1/rates` shows the rates invoices are priced at, with their sources: here the fixed
/// table alone (no providers configured).
#[tokio::test]
async fn the_rates_are_listed_with_their_sources() {
    let env = env().await;
    let r = env.get("/v1/rates").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["object"], "rates");
    let btc = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pair"] == "BTC/USD")
        .unwrap()
        .clone();
    assert_eq!(btc["rate"], "60000");
    assert_eq!(btc["sources"], json!(["fixed"]));
    assert!(r.json["providers"].as_array().unwrap().is_empty());
    // An invoice's quote says where its rate came from.
    let inv = env.post("/v1/invoices", body()).await.json;
    assert_eq!(
        inv["payment_methods"]["bitcoin"]["rate_sources"],
        json!(["fixed"])
    );
    let anonymous = env.call("GET", "/v1/rates", None, None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

/// A merchant's spread on crypto conversions is in its quotes: the rate is the market's less the
/// spread, and the payer owes that much more.
#[tokio::test]
async fn a_merchants_spread_is_shown_in_its_quotes() {
    let env = env().await;
    let r = env
        .call_with_key(
            "POST",
            "/v1/invoices",
            None,
            json!({"amount": "25.00", "currency": "USD", "payment_methods": ["ethereum"]}),
            &env.other_key,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let eth = &r.json["payment_methods"]["ethereum"];
    assert_eq!(eth["rate"], "2462.5", "2500 less 1.5 %");
    assert_eq!(eth["rate_spread_bps"], 150);
    let wei: u128 = eth["amount_wei"].as_str().unwrap().parse().unwrap();
    // The least wei worth 25 USD at 2462.5 USD/ETH.
    assert!(wei * 24625 >= 25 * 10u128.pow(18) * 10, "{wei}");
    assert!((wei - 1) * 24625 < 25 * 10u128.pow(18) * 10, "{wei}");
    // Shop 1 has none: the market rate.
    let plain = env.post("/v1/invoices", body()).await.json;
    assert_eq!(plain["payment_methods"]["ethereum"]["rate"], "2500");
}

/// The rules API: bad rules get a 400 naming the rule and field and change nothing; edits are
/// versioned (a stale version is a 409); a read-only key cannot change them.
#[tokio::test]
async fn risk_rules_are_validated_and_versioned() {
    let env = env().await;
    let put = |body: Value| env.call_with_key("PUT", "/v1/risk/rules", None, body, &env.key);
    let r = env.get("/v1/risk/rules").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["version"], 0);
    let bad = [
        (
            json!({"rules": [{"type": "velocity", "id": "v", "key": "ip", "window_secs": 0, "max_count": 3, "action": "review"}]}),
            "rule_invalid",
            "rules[0].window_secs",
        ),
        (
            json!({"rules": [{"type": "amount_limit", "id": "a", "currency": "USD", "max": "-1", "action": "block"}]}),
            "rule_invalid",
            "rules[0].max",
        ),
        (
            json!({"rules": [{"type": "amount_limit", "id": "a", "currency": "USD", "max": 100, "action": "block"}]}),
            "parameter_invalid",
            "rules[0]",
        ),
        (
            json!({"rules": [{"type": "list", "id": "l", "field": "ip", "values": ["1.2.3.4"], "action": "perhaps"}]}),
            "parameter_invalid",
            "rules[0]",
        ),
        (
            json!({"rules": [{"type": "list", "id": "l", "field": "ip", "values": ["1.2.3.4"], "action": "block"},
                          {"type": "list", "id": "l", "field": "email", "values": ["a@b.c"], "action": "block"}]}),
            "rule_invalid",
            "rules[1].id",
        ),
        (json!({"rules": "none"}), "parameter_invalid", "rules"),
        (
            json!({"rules": [], "extra": 1}),
            "parameter_unknown",
            "extra",
        ),
    ];
    for (body, code, param) in bad {
        let r = put(body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.json);
        assert_eq!(r.json["error"]["code"], code, "{body}: {}", r.json);
        assert!(
            r.json["error"]["param"]
                .as_str()
                .unwrap_or("")
                .starts_with(param),
            "{body}: {}",
            r.json
        );
    }
    let r = env
        .call(
            "PUT",
            "/v1/risk/rules",
            Some(&env.key),
            Some(b"{not json"),
            &[],
        )
        .await;
    assert_eq!(r.json["error"]["code"], "invalid_json");
    assert_eq!(
        env.get("/v1/risk/rules").await.json["version"],
        0,
        "nothing stored"
    );

    let rules = json!([
        {"type": "velocity", "id": "cards", "key": "card_fingerprint", "window_secs": 3600, "max_count": 3, "action": "review"},
        {"type": "list", "id": "bad_mail", "field": "email", "values": ["Fraud@Example.com"], "action": "block"}
    ]);
    let r = put(json!({"version": 0, "rules": rules})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["version"], 1);
    assert_eq!(r.json["rules"], rules);
    // Lists of thousands of entries fit (past the 64 KiB of other bodies).
    let many: Vec<String> = (0..10_000)
        .map(|n| format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256))
        .collect();
    let big = json!({"version": 1, "rules": [{"type": "list", "id": "ips", "field": "ip", "values": many, "action": "block"}]});
    assert!(big.to_string().len() > 64 * 1024);
    let r = put(big).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        r.json["rules"][0]["values"].as_array().unwrap().len(),
        10_000
    );
    let r = put(json!({"version": 2, "rules": rules})).await;
    assert_eq!(r.json["version"], 3);
    let r = put(json!({"version": 0, "rules": []})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["error"]["code"], "version_conflict");
    assert_eq!(env.get("/v1/risk/rules").await.json["rules"], rules);
    // Another merchant's rules are its own.
    let r = env
        .call("GET", "/v1/risk/rules", Some(&env.other_key), None, &[])
        .await;
    assert_eq!(r.json["version"], 0);
    // A read-only key reads them and cannot change them.
    let (_, reader) = make_key(&env, &env.key.clone(), &["read"]).await;
    assert_eq!(
        env.call("GET", "/v1/risk/rules", Some(&reader), None, &[])
            .await
            .status,
        StatusCode::OK
    );
    let r = env
        .call_with_key("PUT", "/v1/risk/rules", None, json!({"rules": []}), &reader)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["error"]["code"], "scope_missing");
}

/// A bitcoin payment the rules flagged is listed for review (to its merchant only); rejecting
/// it needs the payer's address and refunds the payment to it; deciding again the other way is
/// refused.
#[tokio::test]
async fn a_flagged_bitcoin_payment_is_reviewed_and_rejected_with_a_refund() {
    use relay_core::invoice::InvoiceInput;
    use relay_core::risk::{Assessment, RiskAction};
    let env = env().await;
    let r = env
        .post(
            "/v1/invoices",
            json!({"amount": "10.00", "currency": "USD", "payment_methods": ["bitcoin"]}),
        )
        .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let sat: u128 = r.json["payment_methods"]["bitcoin"]["amount_sat"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let reference: relay_core::PaymentRef = format!("btc:{}:0", "ab".repeat(32)).parse().unwrap();
    pay(
        &env,
        &id,
        InvoiceInput::Observe {
            reference: reference.clone(),
            method: relay_core::Method::Bitcoin,
            asset: "BTC".into(),
            amount: relay_core::Amount::from_minor(sat),
            confirmed: true,
            confirmations: 1,
            seen_at: None,
        },
    )
    .await;
    let assessment = Assessment {
        score: 60,
        action: RiskAction::Review,
        ..Assessment::clean(1)
    };
    pay(
        &env,
        &id,
        InvoiceInput::Assess {
            reference: reference.clone(),
            assessment,
            deadline: None,
        },
    )
    .await;
    let inv = env.get(&format!("/v1/invoices/{id}")).await.json;
    assert_eq!(inv["in_review"], true);
    // Already the merchant's: flagged, not held.
    assert_eq!(inv["status"], "settled");
    assert_eq!(inv["payments"][0]["risk"]["score"], 60);
    let list = env.get("/v1/reviews").await.json;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    let review = list["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["data"][0]["decision"], "flag_or_refund");
    let other = env
        .call("GET", "/v1/reviews", Some(&env.other_key), None, &[])
        .await;
    assert_eq!(other.json["data"].as_array().unwrap().len(), 0);
    let r = env
        .call_with_key(
            "POST",
            &format!("/v1/reviews/{review}/approve"),
            None,
            json!({}),
            &env.other_key,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "another merchant's review");
    for bad in ["rvw_nope", "../v1/invoices"] {
        let r = env
            .post(&format!("/v1/reviews/{bad}/approve"), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
    }

    let reject = format!("/v1/reviews/{review}/reject");
    let r = env.post(&reject, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"]["code"], "refund_address_required");
    let r = env
        .post(&reject, json!({"refund_address": address_at(40)}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["status"], "rejected");
    assert_eq!(r.json["invoice"]["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["invoice"]["in_review"], false);
    // Again: nothing new; approving now is refused.
    let r = env
        .post(&reject, json!({"refund_address": address_at(40)}))
        .await;
    assert_eq!(r.json["invoice"]["refunds"].as_array().unwrap().len(), 1);
    let r = env
        .post(&format!("/v1/reviews/{review}/approve"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["error"]["code"], "review_closed");
    assert_eq!(
        env.get("/v1/reviews").await.json["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let all = env.get("/v1/reviews?status=all").await.json;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
    let types: Vec<String> = env.get("/v1/events?limit=100").await.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    // (The payment was recorded here without its events; the watcher writes them.)
    assert!(types.contains(&"review.closed".to_owned()), "{types:?}");
}

/// A review nobody decides is rejected by itself at its deadline, which falls before the payer
/// could reclaim the escrow deposit; one not yet due stays open.
#[tokio::test]
async fn an_escrow_review_left_open_is_rejected_at_its_deadline() {
    use relay_core::invoice::InvoiceInput;
    use relay_core::risk::{Assessment, RiskAction};
    let env = env().await;
    let r = env
        .post(
            "/v1/invoices",
            json!({"amount": "25.00", "currency": "USD", "payment_methods": ["ethereum"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let payment_id = r.json["payment_methods"]["ethereum"]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reference: relay_core::PaymentRef = format!("eth:{payment_id}").parse().unwrap();
    pay(
        &env,
        &id,
        InvoiceInput::Observe {
            reference: reference.clone(),
            method: relay_core::Method::Ethereum,
            asset: "ETH".into(),
            amount: relay_core::Amount::from_minor(10_000_000_000_000_000),
            confirmed: true,
            confirmations: 1,
            seen_at: None,
        },
    )
    .await;
    let invoice = env
        .store
        .invoice(&relay_core::InvoiceId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let now = relay_core::Timestamp(T0 + 5);
    let deadline =
        relay_engine::risk::review_deadline(&invoice, relay_core::Method::Ethereum, now).unwrap();
    let reclaim = invoice
        .quote_for(relay_core::Method::Ethereum)
        .unwrap()
        .ethereum
        .as_ref()
        .unwrap()
        .expiry;
    assert_eq!(
        deadline.0 as u64,
        reclaim - 600,
        "ten minutes before the payer may reclaim"
    );
    pay(
        &env,
        &id,
        InvoiceInput::Assess {
            reference,
            assessment: Assessment {
                action: RiskAction::Review,
                ..Assessment::clean(1)
            },
            deadline: Some(deadline),
        },
    )
    .await;
    assert_eq!(env.engine.lapse_reviews().await.unwrap(), 0, "not due yet");
    env.clock
        .0
        .store(deadline.0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(env.engine.lapse_reviews().await.unwrap(), 1);
    assert_eq!(env.engine.lapse_reviews().await.unwrap(), 0, "once");
    let inv = env.get(&format!("/v1/invoices/{id}")).await.json;
    assert_eq!(inv["payments"][0]["review"]["status"], "rejected", "{inv}");
    assert_eq!(inv["in_review"], false);
    assert_eq!(
        inv["payments"][0]["held"], true,
        "held until the operator voids it"
    );
}

/// A payer the merchant's block lists name is turned away at the checkout page, before it is
/// shown an address or derives one; an allow list lets it through, and other payers see the page.
#[tokio::test]
async fn a_block_listed_payer_is_turned_away_at_the_checkout_page() {
    let env = env().await;
    let put = |rules: Value| {
        env.call_with_key(
            "PUT",
            "/v1/risk/rules",
            None,
            json!({ "rules": rules }),
            &env.key,
        )
    };
    let r = put(
        json!([{"type": "list", "id": "fraudsters", "field": "email",
                        "values": ["Mallory@Example.com"], "action": "block"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let invoice = |email: &str| {
        env.post(
            "/v1/invoices",
            json!({"amount": "5.00", "currency": "USD", "payment_methods": ["bitcoin"],
                   "bitcoin_address": "on_demand", "metadata": {"email": email}}),
        )
    };
    let bad = invoice("mallory@example.com").await.json;
    let good = invoice("alice@example.com").await.json;
    let path = |inv: &Value| {
        let url = inv["checkout_url"].as_str().unwrap();
        url[url.find("/pay/").unwrap()..].to_owned()
    };
    let (page, text) = open_page(&env, &path(&bad), &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(text.contains("cannot be accepted"), "{text}");
    assert!(!text.contains("bitcoin:"), "no way to pay is shown");
    let json = env
        .call(
            "GET",
            &format!("{}/payment_request", path(&bad)),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(json.status, StatusCode::FORBIDDEN);
    assert_eq!(json.json["error"]["code"], "payment_blocked");
    let chose = env
        .call(
            "POST",
            &format!("{}/methods/bitcoin", path(&bad)),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(chose.status, StatusCode::FORBIDDEN);
    let id = relay_core::InvoiceId::parse(bad["id"].as_str().unwrap()).unwrap();
    let stored = env.store.invoice(&id).await.unwrap().unwrap();
    assert!(
        stored.awaits_bitcoin_address(),
        "no address was derived for it"
    );
    // Another payer sees the page.
    assert_eq!(
        open_page(&env, &path(&good), &[]).await.0.status,
        StatusCode::OK
    );
    // An allow list naming the payer wins over the block list.
    put(json!([
        {"type": "list", "id": "fraudsters", "field": "email", "values": ["mallory@example.com"], "action": "block"},
        {"type": "list", "id": "reformed", "field": "email", "values": ["mallory@example.com"], "action": "allow"}
    ]))
    .await;
    let json = env
        .call(
            "GET",
            &format!("{}/payment_request", path(&bad)),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(json.status, StatusCode::OK, "{}", json.json);
}
