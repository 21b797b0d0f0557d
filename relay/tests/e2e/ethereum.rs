//! The Ethereum rail against a real anvil: the escrow deployed from the compiled artifact, payers'
//! transactions sent with `cast` (never through relay code), and the relay as users run it.

use crate::card::wait_for;
use crate::{create_invoice, get_invoice, merchant_create_with, Server};
use relay_testnet::Anvil;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An anvil with the escrow and the test token deployed, and the settings that give a relay
/// its Ethereum rail (the operator key in a file under `dir`, as in production).
pub(crate) struct EthRail {
    pub anvil: Anvil,
    pub eth: relay::dev::DevEthereum,
    pub env: Vec<(&'static str, String)>,
}

pub(crate) async fn eth_rail(dir: &std::path::Path) -> EthRail {
    let anvil = Anvil::spawn().unwrap();
    let eth = relay::dev::deploy_dev_contracts(&anvil).await.unwrap();
    let key_file = dir.join("operator.key");
    std::fs::write(&key_file, &eth.operator_key).unwrap();
    let env = vec![
        ("RELAY_ETH_RPC_URL", anvil.url()),
        ("RELAY_ESCROW_ADDRESS", eth.escrow.clone()),
        (
            "RELAY_OPERATOR_KEY_FILE",
            key_file.to_string_lossy().into_owned(),
        ),
        ("RELAY_ETH_POLL_MS", "100".to_owned()),
        ("RELAY_TOKENS", format!("DUSD:6:{}", eth.token)),
    ];
    EthRail { anvil, eth, env }
}

/// How many of the escrow's logs of `event` (its signature) have `id` as their first indexed
/// argument, on the current chain.
pub(crate) fn escrow_logs(
    anvil: &Anvil,
    eth: &relay::dev::DevEthereum,
    event: &str,
    id: &str,
) -> usize {
    let topic = relay_testnet::cast(&["keccak", event]).unwrap();
    let logs = anvil
        .rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "latest", "address": eth.escrow, "topics": [topic, id]}]),
        )
        .unwrap();
    logs.as_array().unwrap().len()
}

pub(crate) struct EthEnv {
    pub anvil: Anvil,
    pub eth: relay::dev::DevEthereum,
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub key: String,
    pub client: reqwest::Client,
    pub env: Vec<(&'static str, String)>,
    pub operator: String,
}

impl EthEnv {
    pub(crate) async fn start(confirmations: u32, extra: &[(&'static str, &str)]) -> EthEnv {
        let dir = tempfile::tempdir().unwrap();
        let rail = eth_rail(dir.path()).await;
        let m = merchant_create_with(
            dir.path(),
            "eth shop",
            &[
                "--eth-payout",
                &rail.eth.merchant_payout,
                "--eth-confirmations",
                &confirmations.to_string(),
            ],
        );
        let mut env = rail.env;
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let server = Server::start_with(dir.path(), crate::free_port(), &env).await;
        let operator = rail.eth.operator.clone();
        EthEnv {
            anvil: rail.anvil,
            eth: rail.eth,
            dir,
            server,
            key: m["api_key"].as_str().unwrap().to_owned(),
            client: reqwest::Client::new(),
            env,
            operator,
        }
    }

    pub(crate) async fn restart(&mut self) {
        self.server = Server::start_with(self.dir.path(), crate::free_port(), &self.env).await;
    }

    pub(crate) async fn invoice(&self, body: Value) -> Value {
        let (status, inv) = create_invoice(
            &self.client,
            &self.server.url,
            &self.key,
            &format!("eth-{}", rand_id()),
            &body,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{inv}");
        inv
    }

    async fn get(&self, id: &str) -> Value {
        get_invoice(&self.client, &self.server.url, &self.key, id).await
    }

    pub(crate) async fn until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_for(&self.client, &self.server.url, &self.key, id, done).await
    }

    /// Sends one of the invoice's calls (`call` or `approve`) from the payer with `cast`, with
    /// the arguments changed by `edit`; returns the transaction hash.
    fn send(&self, call: &Value, edit: impl Fn(&mut Vec<String>, &mut String)) -> String {
        let mut args: Vec<String> = call["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let mut value = call["value"].as_str().unwrap().to_owned();
        edit(&mut args, &mut value);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.anvil
            .send(
                &self.eth.payer_key,
                call["to"].as_str().unwrap(),
                call["function"].as_str().unwrap(),
                &args,
                &value,
            )
            .unwrap()
    }

    pub(crate) fn pay(&self, inv: &Value) -> String {
        self.send(&inv["payment_methods"]["ethereum"]["call"], |_, _| {})
    }

    fn token_balance(&self, who: &str) -> u128 {
        let out = self
            .anvil
            .call(&self.eth.token, "balanceOf(address)(uint256)", &[who])
            .unwrap();
        out.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// The escrow's record of a payment: (payer, captured, refunded, closed).
    pub(crate) fn escrow_payment(&self, id: &str) -> (String, u128, bool) {
        let out = self
            .anvil
            .call(
                &self.eth.escrow,
                "payments(bytes32)(address,address,address,uint256,uint64,uint256,uint256,bool)",
                &[id],
            )
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let num = |s: &str| {
            s.split_whitespace()
                .next()
                .unwrap()
                .parse::<u128>()
                .unwrap()
        };
        (
            lines[0].to_lowercase(),
            num(lines[5]),
            lines[7].trim() == "true",
        )
    }

    /// How many of the escrow's logs of this event name this payment id, on the current chain.
    pub(crate) fn logs_of(&self, event: &str, id: &str) -> usize {
        escrow_logs(&self.anvil, &self.eth, event, id)
    }

    /// What a mined transaction cost its sender in gas (wei).
    fn gas_cost(&self, tx: &str) -> u128 {
        let start = Instant::now();
        loop {
            let r = self
                .anvil
                .rpc("eth_getTransactionReceipt", json!([tx]))
                .unwrap();
            if !r.is_null() {
                let h = |v: &Value| relay_testnet::hex_quantity(v).unwrap();
                return h(&r["gasUsed"]) * h(&r["effectiveGasPrice"]);
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{tx} not mined");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Event types of one invoice, oldest first.
    pub(crate) async fn events_of(&self, id: &str) -> Vec<String> {
        crate::invoice_event_types(&self.client, &self.server.url, &self.key, id).await
    }
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn payment(inv: &Value) -> &Value {
    let p = inv["payments"].as_array().unwrap();
    assert_eq!(p.len(), 1, "{inv}");
    &p[0]
}

fn captured(inv: &Value) -> bool {
    inv["payments"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["capture_tx"].is_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_deposit_goes_pending_confirmed_captured_less_the_fee() {
    let env = EthEnv::start(2, &[("RELAY_ETH_FEE_BPS", "100")]).await;
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["ethereum"]}))
        .await;
    let id = inv["id"].as_str().unwrap();
    let e = &inv["payment_methods"]["ethereum"];
    // 25 USD at 2500 USD/ETH.
    assert_eq!(e["amount_wei"], "10000000000000000");
    assert_eq!(e["chain_id"], 31337);
    assert_eq!(e["escrow"], env.eth.escrow.as_str());
    assert_eq!(e["call"]["function"], "deposit(address,uint64,bytes32)");
    let args = e["call"]["args"].as_array().unwrap();
    assert_eq!(args[0], env.eth.merchant_payout.as_str());
    assert_eq!(
        e["uri"],
        format!(
            "ethereum:{}@31337/deposit?address={}&uint64={}&bytes32={}&value=10000000000000000",
            env.eth.escrow,
            env.eth.merchant_payout,
            args[1].as_str().unwrap(),
            args[2].as_str().unwrap()
        )
    );
    // The payment id the relay computed is the one the contract computes from the same terms.
    let on_chain = env
        .anvil
        .call(
            &env.eth.escrow,
            "paymentId(address,address,uint256,uint64,bytes32)(bytes32)",
            &[
                env.eth.merchant_payout.as_str(),
                "0x0000000000000000000000000000000000000000",
                "10000000000000000",
                args[1].as_str().unwrap(),
                args[2].as_str().unwrap(),
            ],
        )
        .unwrap();
    assert_eq!(e["payment_id"], on_chain.as_str());
    let payment_id = on_chain;

    env.pay(&inv);
    // Mined at once (depth 1): the merchant wants 2 confirmations.
    let inv = env.until(id, |i| i["status"] == "processing").await;
    assert_eq!(payment(&inv)["status"], "pending");
    assert_eq!(payment(&inv)["reference"], format!("eth:{payment_id}"));
    env.anvil.mine(1).unwrap();
    let inv = env.until(id, captured).await;
    assert_eq!(inv["status"], "settled");
    assert_eq!(inv["exception"], Value::Null);
    let p = payment(&inv);
    assert_eq!(p["status"], "confirmed");
    assert_eq!(p["amount_minor"], "10000000000000000");
    // 1 % fee: the merchant gets 99 %, the fee recipient 1 %.
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap(),
        9_900_000_000_000_000
    );
    assert_eq!(
        env.anvil.balance(&env.eth.fee_recipient).unwrap(),
        100_000_000_000_000
    );
    let (_, captured_amount, closed) = env.escrow_payment(&payment_id);
    assert_eq!((captured_amount, closed), (10_000_000_000_000_000, true));
    assert_eq!(
        env.logs_of("PaymentCaptured(bytes32,uint256,uint256)", &payment_id),
        1
    );
    assert_eq!(
        env.events_of(id).await,
        [
            "invoice.created",
            "payment.pending",
            "invoice.processing",
            "payment.confirmed",
            "invoice.settled",
            "payment.captured"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erc20_deposit_is_captured_to_the_merchant() {
    let env = EthEnv::start(1, &[]).await;
    let inv = env
        .invoice(json!({"amount": "12.50", "currency": "DUSD", "payment_methods": ["ethereum"]}))
        .await;
    let id = inv["id"].as_str().unwrap();
    let e = &inv["payment_methods"]["ethereum"];
    assert_eq!(e["asset"], "DUSD");
    assert_eq!(e["amount_minor"], "12500000");
    assert_eq!(e["token"], env.eth.token.as_str());
    assert_eq!(e["approve"]["function"], "approve(address,uint256)");
    let before = env.token_balance(&env.eth.payer);
    env.send(&e["approve"], |_, _| {});
    env.send(&e["call"], |_, _| {});
    let inv = env.until(id, captured).await;
    assert_eq!(inv["status"], "settled");
    assert_eq!(env.token_balance(&env.eth.merchant_payout), 12_500_000);
    assert_eq!(env.token_balance(&env.eth.payer), before - 12_500_000);
    assert_eq!(env.token_balance(&env.eth.escrow), 0);

    // An ETH invoice priced in USD can also ask for the token, at the configured rate… which
    // this relay does not have: a clear 422, nothing created.
    let (status, err) = create_invoice(
        &env.client,
        &env.server.url,
        &env.key,
        "no-rate",
        &json!({"amount": "5.00", "currency": "USD", "payment_methods": ["ethereum"], "ethereum_asset": "DUSD"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 422, "{err}");
    let (status, err) = create_invoice(
        &env.client,
        &env.server.url,
        &env.key,
        "not-onchain",
        &json!({"amount": "5.00", "currency": "USD", "payment_methods": ["ethereum"], "ethereum_asset": "EUR"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["param"], "ethereum_asset", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_with_the_wrong_amount_is_voided_back_to_the_payer() {
    let env = EthEnv::start(1, &[]).await;
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["ethereum"]}))
        .await;
    let id = inv["id"].as_str().unwrap();
    let before = env.anvil.balance(&env.eth.payer).unwrap();
    // One wei short: the escrow derives another payment id, which the relay does not know.
    let tx = env.send(&inv["payment_methods"]["ethereum"]["call"], |_, value| {
        *value = (value.parse::<u128>().unwrap() - 1).to_string();
    });
    let inv = env
        .until(id, |i| !i["payments"].as_array().unwrap().is_empty())
        .await;
    let p = payment(&inv);
    assert_eq!(p["status"], "voided");
    assert_eq!(p["amount_minor"], "9999999999999999");
    assert_eq!(inv["status"], "new", "the invoice can still be paid");
    assert_eq!(inv["exception"], "paid_partial");
    // Every wei came back: the payer is down only the deposit's gas.
    let start = Instant::now();
    while env.anvil.balance(&env.eth.payer).unwrap() != before - env.gas_cost(&tx) {
        assert!(start.elapsed() < Duration::from_secs(20), "not refunded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.anvil.balance(&env.eth.escrow).unwrap(), 0);
    assert_eq!(env.anvil.balance(&env.eth.merchant_payout).unwrap(), 0);
    assert_eq!(
        env.events_of(id).await,
        ["invoice.created", "payment.voided"]
    );

    // A deposit naming another payout address (the payer's own) is not the invoice's either:
    // the relay never captures it, so nobody but the merchant can be paid for this invoice.
    let payer = env.eth.payer.clone();
    env.send(
        &inv["payment_methods"]["ethereum"]["call"],
        move |args, _| {
            args[0] = payer.clone();
        },
    );
    let inv = env
        .until(id, |i| {
            let p = i["payments"].as_array().unwrap();
            p.len() == 2 && p.iter().all(|p| p["status"] == "voided")
        })
        .await;
    assert_eq!(inv["status"], "new");
    assert_eq!(env.anvil.balance(&env.eth.merchant_payout).unwrap(), 0);

    // The right deposit still pays it.
    env.pay(&inv);
    let inv = env.until(id, captured).await;
    assert_eq!(inv["status"], "settled");
    assert_eq!(inv["exception"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_after_the_invoice_expired_is_voided_as_paid_late() {
    let env = EthEnv::start(1, &[]).await;
    let inv = env
        .invoice(json!({"amount": "10.00", "currency": "USD", "payment_methods": ["ethereum"], "expires_in": 60}))
        .await;
    let id = inv["id"].as_str().unwrap();
    // The escrow still takes it (its expiry is later by the capture window) but the invoice
    // has expired.
    wait_until_expired(&env, id).await;
    let before = env.anvil.balance(&env.eth.payer).unwrap();
    let tx = env.pay(&inv);
    let inv = env
        .until(id, |i| {
            i["payments"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["status"] == "voided"))
        })
        .await;
    assert_eq!(inv["status"], "expired");
    assert_eq!(inv["exception"], "paid_late");
    let start = Instant::now();
    while env.anvil.balance(&env.eth.payer).unwrap() != before - env.gas_cost(&tx) {
        assert!(start.elapsed() < Duration::from_secs(20), "not refunded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.anvil.balance(&env.eth.merchant_payout).unwrap(), 0);
}

/// Waits (up to 70 s) for an invoice created with `expires_in: 60` to expire.
async fn wait_until_expired(env: &EthEnv, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let inv = env.get(id).await;
        if inv["status"] == "expired" {
            return inv;
        }
        assert!(
            start.elapsed() < Duration::from_secs(70),
            "never expired: {inv}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payer_reclaims_after_expiry_while_the_relay_is_stopped() {
    let mut env = EthEnv::start(1, &[("RELAY_ETH_CAPTURE_WINDOW_SECS", "60")]).await;
    let inv = env
        .invoice(json!({"amount": "10.00", "currency": "USD", "payment_methods": ["ethereum"], "expires_in": 600}))
        .await;
    let id = inv["id"].as_str().unwrap();
    let payment_id = inv["payment_methods"]["ethereum"]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.server.kill9();
    let operator_nonce = env.anvil.nonce(&env.operator).unwrap();
    let before = env.anvil.balance(&env.eth.payer).unwrap();
    let deposit = env.pay(&inv);
    // Before the escrow's expiry the payer cannot take it back…
    let early = env.anvil.send(
        &env.eth.payer_key,
        &env.eth.escrow,
        "reclaim(bytes32)",
        &[&payment_id],
        "0",
    );
    assert!(early.is_err(), "reclaim before expiry must revert");
    // …after it (invoice expiry + the 60 s window, here reached by moving the chain's clock),
    // they can, with no relay running.
    env.anvil.increase_time(700).unwrap();
    env.anvil.mine(1).unwrap();
    let reclaim = env
        .anvil
        .send(
            &env.eth.payer_key,
            &env.eth.escrow,
            "reclaim(bytes32)",
            &[&payment_id],
            "0",
        )
        .unwrap();
    assert_eq!(env.anvil.receipt_status(&reclaim).unwrap(), Some(true));
    assert_eq!(
        env.anvil.balance(&env.eth.payer).unwrap(),
        before - env.gas_cost(&deposit) - env.gas_cost(&reclaim)
    );
    // The relay, restarted, records what happened and sends nothing.
    env.restart().await;
    let inv = env
        .until(id, |i| {
            i["payments"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["status"] == "reclaimed"))
        })
        .await;
    assert_eq!(inv["status"], "new");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.anvil.nonce(&env.operator).unwrap(), operator_nonce);
    assert_eq!(env.anvil.balance(&env.eth.merchant_payout).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorged_deposit_is_reverted_then_confirmed_and_captured_once() {
    let env = EthEnv::start(1, &[]).await;
    let inv = env
        .invoice(json!({"amount": "20.00", "currency": "USD", "payment_methods": ["ethereum"]}))
        .await;
    let id = inv["id"].as_str().unwrap();
    let payment_id = inv["payment_methods"]["ethereum"]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = &inv["payment_methods"]["ethereum"]["call"];
    // The payer's signed deposit, kept so the test can publish it again after the reorg.
    let mut mktx = vec![
        "mktx",
        "--private-key",
        &env.eth.payer_key,
        call["to"].as_str().unwrap(),
        call["function"].as_str().unwrap(),
    ];
    let args: Vec<&str> = call["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    mktx.extend(args);
    mktx.extend(["--value", call["value"].as_str().unwrap()]);
    let raw = env.anvil.cast(&mktx).unwrap();
    let snapshot = env.anvil.snapshot().unwrap();
    env.anvil.cast(&["publish", &raw]).unwrap();
    let inv = env.until(id, captured).await;
    assert_eq!(inv["status"], "settled");

    // The deposit's block (and the capture's) leave the chain: a longer branch without them.
    env.anvil.revert_to(&snapshot).unwrap();
    env.anvil.mine(3).unwrap();
    let inv = env.until(id, |i| payment(i)["status"] == "reverted").await;
    assert_eq!(inv["status"], "new");

    // Published again, it is confirmed again and captured — once, on the chain that counts.
    env.anvil.cast(&["publish", &raw]).unwrap();
    let inv = env
        .until(id, |i| {
            i["status"] == "settled"
                && payment(i)["status"] == "confirmed"
                && env.logs_of("PaymentCaptured(bytes32,uint256,uint256)", &payment_id) == 1
        })
        .await;
    assert_eq!(inv["payments"].as_array().unwrap().len(), 1);
    let start = Instant::now();
    while env.anvil.balance(&env.eth.merchant_payout).unwrap() != 8_000_000_000_000_000 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "merchant not paid once"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more blocks change nothing.
    env.anvil.mine(3).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.logs_of("PaymentCaptured(bytes32,uint256,uint256)", &payment_id),
        1
    );
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap(),
        8_000_000_000_000_000
    );
    let events = env.events_of(id).await;
    assert_eq!(
        events.iter().filter(|e| *e == "payment.reverted").count(),
        1,
        "{events:?}"
    );
}

/// The operator's first transaction waiting in the node's pool, if any.
fn operator_pending_tx(env: &EthEnv) -> Option<Value> {
    let pool = env.anvil.rpc("txpool_content", json!([])).unwrap();
    pool["pending"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.to_lowercase() == env.operator)?
        .1
        .as_object()?
        .values()
        .next()
        .cloned()
}

/// Waits until the operator has a transaction in the node's pool; returns its hash.
async fn operator_tx_in_pool(env: &EthEnv) -> String {
    let start = Instant::now();
    loop {
        if let Some(tx) = operator_pending_tx(env) {
            return tx["hash"].as_str().unwrap().to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the relay sent nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_capture_sent_and_receipt_captures_exactly_once() {
    let mut env = EthEnv::start(1, &[]).await;
    let inv = env
        .invoice(json!({"amount": "15.00", "currency": "USD", "payment_methods": ["ethereum"]}))
        .await;
    let id = inv["id"].as_str().unwrap();
    let payment_id = inv["payment_methods"]["ethereum"]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let operator_nonce = env.anvil.nonce(&env.operator).unwrap();
    env.anvil.set_automine(false).unwrap();
    env.pay(&inv);
    env.anvil.mine(1).unwrap();
    env.until(id, |i| i["status"] == "settled").await;
    // The capture is signed, stored and broadcast, but not mined: kill the relay now.
    operator_tx_in_pool(&env).await;
    env.server.kill9();
    env.anvil.mine(1).unwrap();
    env.restart().await;
    let inv = env.until(id, captured).await;
    assert_eq!(inv["status"], "settled");
    env.anvil.mine(5).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        env.anvil.nonce(&env.operator).unwrap(),
        operator_nonce + 1,
        "one operator transaction in all"
    );
    assert_eq!(
        env.logs_of("PaymentCaptured(bytes32,uint256,uint256)", &payment_id),
        1
    );
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap(),
        6_000_000_000_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmined_capture_is_replaced_with_higher_fees() {
    let env = EthEnv::start(1, &[]).await;
    let inv = env
        .invoice(json!({"amount": "15.00", "currency": "USD", "payment_methods": ["ethereum"]}))
        .await;
    let id = inv["id"].as_str().unwrap();
    let operator_nonce = env.anvil.nonce(&env.operator).unwrap();
    env.anvil.set_automine(false).unwrap();
    env.pay(&inv);
    env.anvil.mine(1).unwrap();
    let first = operator_tx_in_pool(&env).await;
    let first_fee = env
        .anvil
        .rpc("eth_getTransactionByHash", json!([first]))
        .unwrap()["maxFeePerGas"]
        .clone();
    // The node loses it (as a node under load drops a low-fee transaction).
    env.anvil
        .rpc("anvil_dropTransaction", json!([first]))
        .unwrap();
    // Blocks pass without it; the relay signs a replacement with the same nonce, higher fees.
    let start = Instant::now();
    let second = loop {
        env.anvil.mine(1).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(tx) = operator_pending_tx(&env) {
            break tx;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never replaced");
    };
    assert_ne!(second["hash"].as_str().unwrap(), first);
    let fee = |v: &Value| relay_testnet::hex_quantity(v).unwrap();
    assert!(
        fee(&second["maxFeePerGas"]) > fee(&first_fee),
        "{second} vs {first_fee}"
    );
    assert_eq!(
        relay_testnet::hex_quantity(&second["nonce"]).unwrap(),
        u128::from(operator_nonce)
    );
    env.anvil.mine(1).unwrap();
    let inv = env.until(id, captured).await;
    assert_eq!(inv["status"], "settled");
    assert_eq!(env.anvil.nonce(&env.operator).unwrap(), operator_nonce + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_needs_a_payout_address_and_the_relay_checks_its_operator_key() {
    let env = EthEnv::start(1, &[]).await;
    // A merchant without a payout address cannot be offered ethereum.
    let dir = env.dir.path();
    drop(env.server);
    let other = merchant_create_with(dir, "no payout", &[]);
    let server = Server::start_with(dir, crate::free_port(), &env.env).await;
    let (status, err) = create_invoice(
        &env.client,
        &server.url,
        other["api_key"].as_str().unwrap(),
        "x",
        &json!({"amount": "5.00", "currency": "USD", "payment_methods": ["ethereum"]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "payment_method_unavailable");
    drop(server);
    // A key that is not the escrow's operator stops the relay at startup, saying why, and the
    // key itself is never printed.
    let wrong = "0x1111111111111111111111111111111111111111111111111111111111111111";
    let key_file = dir.join("wrong.key");
    std::fs::write(&key_file, wrong).unwrap();
    let out = std::process::Command::new(crate::RELAY)
        .arg("serve")
        .envs(env.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RELAY_OPERATOR_KEY_FILE", &key_file)
        .env("RELAY_DATA_DIR", dir)
        .env("RELAY_LISTEN", format!("127.0.0.1:{}", crate::free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not the escrow's operator"), "{stderr}");
    assert!(!stderr.contains(&wrong[2..]), "{stderr}");
    // And a merchant with a bad payout address is refused at creation.
    let out = std::process::Command::new(crate::RELAY)
        .args([
            "merchant",
            "create",
            "--name",
            "bad",
            "--eth-payout",
            "0x1234",
        ])
        .env("RELAY_DATA_DIR", dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
