//! The operator's own money on the Ethereum rail, attacked: a flaky node, deposits not worth a
//! void, transactions above the operator's caps. Every test checks balances and nonces on anvil.

use crate::ethereum::EthEnv;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A JSON-RPC proxy in front of anvil that, while `flaky` is on, answers `eth_estimateGas` with
/// HTTP 429 (a rate-limited node) and passes everything else through.
struct FlakyNode {
    url: String,
    flaky: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FlakyNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn flaky_node(target: String) -> FlakyNode {
    use axum::http::StatusCode;
    let flaky = Arc::new(AtomicBool::new(false));
    let on = flaky.clone();
    let client = reqwest::Client::new();
    let handler = move |body: String| {
        let (client, target, on) = (client.clone(), target.clone(), on.clone());
        async move {
            let limited = on.load(Ordering::SeqCst) && body.contains("\"eth_estimateGas\"");
            if limited {
                return (StatusCode::TOO_MANY_REQUESTS, "rate limited".to_owned());
            }
            let resp = client
                .post(&target)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (StatusCode::OK, resp.text().await.unwrap())
        }
    };
    let app = axum::Router::new().fallback(axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FlakyNode { url, flaky, task }
}

async fn metric(env: &EthEnv, name: &str) -> f64 {
    crate::metric(&env.client, &env.server.url, name)
        .await
        .unwrap_or(0.0)
}

fn payment_id(inv: &Value) -> String {
    inv["payment_methods"]["ethereum"]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A node that rate-limits the operator's gas estimates (before: three such errors turned the
/// capture into a void, sending the merchant's sale back to the payer). The exact, in-time
/// deposit stays in the escrow untouched while the node misbehaves, and is captured to the
/// merchant once it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_node_errors_never_void_an_exact_in_time_deposit() {
    let mut env = EthEnv::start(1, &[]).await;
    // The relay reaches anvil only through the proxy from now on.
    let proxy = flaky_node(env.anvil.url()).await;
    env.env.push(("RELAY_ETH_RPC_URL", proxy.url.clone()));
    env.server.kill9();
    env.restart().await;

    proxy.flaky.store(true, Ordering::SeqCst);
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["ethereum"]}))
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    let pid = payment_id(&inv);
    let operator_nonce = env.anvil.nonce(&env.operator).unwrap();
    let merchant_before = env.anvil.balance(&env.eth.merchant_payout).unwrap();
    env.pay(&inv);
    env.anvil.mine(2).unwrap();
    env.until(&id, |i| i["status"] == "settled").await;
    // Many operator steps with a node that keeps failing.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        env.anvil.mine(1).unwrap();
    }
    let (_, captured, closed) = env.escrow_payment(&pid);
    assert_eq!((captured, closed), (0, false), "the deposit was touched");
    assert_eq!(env.logs_of("PaymentVoided(bytes32,uint256)", &pid), 0);
    assert_eq!(env.anvil.nonce(&env.operator).unwrap(), operator_nonce);
    assert!(metric(&env, "relay_eth_operator_retries_total").await >= 1.0);

    proxy.flaky.store(false, Ordering::SeqCst);
    env.anvil.mine(1).unwrap();
    let done = env
        .until(&id, |i| i["payments"][0]["capture_tx"].is_string())
        .await;
    assert_eq!(done["payments"][0]["status"], "confirmed");
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap() - merchant_before,
        10_000_000_000_000_000
    );
    assert_eq!(env.logs_of("PaymentVoided(bytes32,uint256)", &pid), 0);
}

/// Deposits the operator should not pay to send back: 1,000 wei for no invoice (its void costs
/// far more gas than it returns) stays in the escrow for its payer to reclaim; and an exact
/// deposit whose capture needs more gas than the operator's cap is neither captured nor voided.
/// The operator key sends nothing and spends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_spends_nothing_on_dust_or_above_its_gas_cap() {
    let env = EthEnv::start(1, &[("RELAY_ETH_GAS_CAP_CAPTURE", "30000")]).await;
    let operator_before = env.anvil.balance(&env.operator).unwrap();
    let operator_nonce = env.anvil.nonce(&env.operator).unwrap();

    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["ethereum"]}))
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    let pid = payment_id(&inv);
    let expiry = inv["payment_methods"]["ethereum"]["call"]["args"][1]
        .as_str()
        .unwrap()
        .to_owned();
    env.pay(&inv);
    // Dust for nobody: the invoice's merchant and expiry, a salt no invoice has.
    let salt = format!("0x{}", "5a".repeat(32));
    let tx = env
        .anvil
        .send(
            &env.eth.payer_key,
            &env.eth.escrow,
            "deposit(address,uint64,bytes32)",
            &[&env.eth.merchant_payout, &expiry, &salt],
            "1000",
        )
        .unwrap();
    let escrow_before = env.anvil.balance(&env.eth.escrow).unwrap();
    env.anvil.mine(2).unwrap();
    env.until(&id, |i| i["status"] == "settled").await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        env.anvil.mine(1).unwrap();
    }
    assert_eq!(
        env.anvil.receipt_status(&tx).unwrap(),
        Some(true),
        "the dust deposit was made"
    );
    assert_eq!(env.anvil.nonce(&env.operator).unwrap(), operator_nonce);
    assert_eq!(env.anvil.balance(&env.operator).unwrap(), operator_before);
    assert_eq!(env.anvil.balance(&env.eth.escrow).unwrap(), escrow_before);
    let (_, captured, closed) = env.escrow_payment(&pid);
    assert_eq!((captured, closed), (0, false));
    assert_eq!(env.logs_of("PaymentVoided(bytes32,uint256)", &pid), 0);
    assert!(metric(&env, "relay_eth_deposits_left_total").await >= 1.0);
    assert!(metric(&env, "relay_eth_operator_balance_wei").await > 0.0);
    let inv = env.until(&id, |_| true).await;
    assert!(inv["payments"][0]["capture_tx"].is_null(), "{inv}");
}
