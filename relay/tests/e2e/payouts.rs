//! Money going out, end to end against the real parts: cross-rail settlements paid by the escrow
//! on anvil for card payments (localstripe) and bitcoin payments (regtest), and refunds on every
//! rail. Payers, the operator's funding and the merchant's wallet act through `cast`, the
//! gateway's API and the test's own bitcoin wallet — never through relay code.

use crate::card::wait_for;
use crate::ethereum::eth_rail;
use crate::{create_invoice, merchant_create_with, Server};
use hmac::{Hmac, Mac};
use relay_bitcoin::bitcoin::{Network, ScriptBuf};
use relay_core::ReceiveAddresses;
use relay_testnet::btc_wallet::{broadcast, TestWallet};
use relay_testnet::{Anvil, BitcoinNode, LocalStripe};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_e2e_payouts";
/// 25.00 USD at 2,500 USD/ETH.
const WEI_25_USD: u128 = 10_000_000_000_000_000;

struct Env {
    anvil: Anvil,
    eth: relay::dev::DevEthereum,
    gw: Option<LocalStripe>,
    btc: Option<(BitcoinNode, TestWallet)>,
    treasury: Option<String>,
    server: Server,
    key: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

/// A relay on anvil (escrow deployed), with the card gateway and/or a bitcoin node, and one
/// merchant created with `merchant_args` (its payout address is added here).
async fn start(card: bool, bitcoin: bool, merchant_args: &[&str]) -> Env {
    start_with(card, bitcoin, merchant_args, |_| Vec::new()).await
}

/// [`start`], with settings added last (they win), made from the gateway's URL.
async fn start_with(
    card: bool,
    bitcoin: bool,
    merchant_args: &[&str],
    extra: impl FnOnce(&str) -> Vec<(&'static str, String)>,
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let rail = eth_rail(dir.path()).await;
    let mut env = rail.env;
    let gw = card.then(|| LocalStripe::spawn().unwrap());
    if let Some(gw) = &gw {
        env.push(("RELAY_STRIPE_API_BASE", gw.url()));
        env.push((
            "RELAY_STRIPE_SECRET_KEY",
            LocalStripe::SECRET_KEY.to_owned(),
        ));
        env.push(("RELAY_STRIPE_WEBHOOK_SECRET", SECRET.to_owned()));
    }
    let mut treasury = None;
    let btc = bitcoin.then(|| {
        let node = BitcoinNode::spawn().unwrap();
        let mut wallet = TestWallet::new(51);
        wallet.fund(&node, 3).unwrap();
        (node, wallet)
    });
    if let Some((node, _)) = &btc {
        let t = crate::bitcoin::descriptor(99, "wpkh");
        env.push(("RELAY_BTC_RPC_URL", node.rpc_url_with_auth()));
        env.push(("RELAY_BTC_POLL_MS", "100".to_owned()));
        env.push(("RELAY_TREASURY_DESCRIPTOR", t.clone()));
        treasury = Some(t);
    }
    env.extend(extra(
        &gw.as_ref().map(LocalStripe::url).unwrap_or_default(),
    ));
    let mut args = vec!["--eth-payout", rail.eth.merchant_payout.as_str()];
    args.extend_from_slice(merchant_args);
    let m = merchant_create_with(dir.path(), "payout shop", &args);
    let server = Server::start_with(dir.path(), crate::free_port(), &env).await;
    if let Some(gw) = &gw {
        gw.register_webhook(
            "relay",
            &format!("{}/v1/gateways/stripe/webhook", server.url),
            SECRET,
        )
        .unwrap();
    }
    Env {
        anvil: rail.anvil,
        eth: rail.eth,
        gw,
        btc,
        treasury,
        server,
        key: m["api_key"].as_str().unwrap().to_owned(),
        client: reqwest::Client::new(),
        dir,
        env,
    }
}

impl Env {
    async fn invoice(&self, body: Value) -> Value {
        let (status, inv) = create_invoice(
            &self.client,
            &self.server.url,
            &self.key,
            &format!("p-{}", nanos()),
            &body,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{inv}");
        inv
    }

    async fn until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_for(&self.client, &self.server.url, &self.key, id, done).await
    }

    async fn refund(&self, id: &str, key: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/invoices/{id}/refunds", self.server.url))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn balances(&self) -> Value {
        self.client
            .get(format!("{}/v1/balances", self.server.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        crate::metric(&self.client, &self.server.url, name).await
    }

    /// Event types of one invoice, oldest first.
    async fn events_of(&self, id: &str) -> Vec<String> {
        crate::invoice_event_types(&self.client, &self.server.url, &self.key, id).await
    }

    /// The operator adds `wei` of ether liquidity to the escrow.
    fn fund(&self, wei: u128) {
        fund_escrow(&self.anvil, &self.eth, wei);
    }

    fn settled_logs(&self, settlement_id: &str) -> Vec<Value> {
        let topic =
            relay_testnet::cast(&["keccak", "Settled(bytes32,address,address,uint256,string)"])
                .unwrap();
        let logs = self
            .anvil
            .rpc(
                "eth_getLogs",
                json!([{"fromBlock": "0x0", "toBlock": "latest", "address": self.eth.escrow,
                    "topics": [topic, settlement_id]}]),
            )
            .unwrap();
        logs.as_array().unwrap().clone()
    }

    /// The payer confirms the invoice's PaymentIntent with a card, as Stripe.js does.
    fn pay_card(&self, inv: &Value) -> String {
        let gw = self.gw.as_ref().unwrap();
        let pi = inv["payment_methods"]["card"]["payment_intent"]
            .as_str()
            .unwrap()
            .to_owned();
        gw.post(
            &format!("/v1/payment_intents/{pi}"),
            &[("payment_method", "pm_card_visa")],
        )
        .unwrap();
        let paid = gw
            .post(&format!("/v1/payment_intents/{pi}/confirm"), &[])
            .unwrap();
        assert_eq!(paid["status"], "succeeded");
        pi
    }

    async fn post_gateway_event(&self, body: &str) -> u16 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        let sig = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        self.client
            .post(format!("{}/v1/gateways/stripe/webhook", self.server.url))
            .header("Stripe-Signature", sig)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The PaymentIntent's charge as the gateway holds it, delivered to the relay as a signed
    /// `charge.refunded` event (localstripe records refunds but does not emit that event).
    async fn charge_refunded(&self, pi: &str) -> Value {
        let gw = self.gw.as_ref().unwrap();
        let intent = gw.get(&format!("/v1/payment_intents/{pi}")).unwrap();
        let charge_id = intent["charges"]["data"][0]["id"]
            .as_str()
            .or_else(|| intent["latest_charge"].as_str())
            .unwrap()
            .to_owned();
        let charge = gw.get(&format!("/v1/charges/{charge_id}")).unwrap();
        let body = json!({"id": format!("evt_ref_{}", nanos()), "object": "event",
            "type": "charge.refunded", "data": {"object": charge}})
        .to_string();
        assert_eq!(self.post_gateway_event(&body).await, 200);
        charge
    }

    /// Kills the relay (SIGKILL) and starts it again on the same data.
    async fn restart(&mut self) {
        self.server.kill9();
        self.server = Server::start_with(self.dir.path(), crate::free_port(), &self.env).await;
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The operator adds `wei` of ether liquidity to the escrow, and waits for it to be mined.
pub(crate) fn fund_escrow(anvil: &Anvil, eth: &relay::dev::DevEthereum, wei: u128) {
    let tx = anvil
        .send(
            &eth.operator_key,
            &eth.escrow,
            "fund(address,uint256)",
            &[
                "0x0000000000000000000000000000000000000000",
                &wei.to_string(),
            ],
            &wei.to_string(),
        )
        .unwrap();
    wait_mined(anvil, &tx);
}

pub(crate) fn wait_mined(anvil: &Anvil, tx: &str) {
    let start = Instant::now();
    loop {
        match anvil.receipt_status(tx).unwrap() {
            Some(ok) => {
                assert!(ok, "{tx} reverted");
                return;
            }
            None => {
                assert!(start.elapsed() < Duration::from_secs(20), "{tx} not mined");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// `(token, amount, sourceRef)` of a `Settled` log.
fn decode_settled(log: &Value) -> (String, u128, String) {
    let out = relay_testnet::cast(&[
        "abi-decode",
        "f()(address,uint256,string)",
        log["data"].as_str().unwrap(),
    ])
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    (
        lines[0].trim().to_lowercase(),
        lines[1].split_whitespace().next().unwrap().parse().unwrap(),
        lines[2].trim().trim_matches('"').to_owned(),
    )
}

/// The row of `asset` in `GET /v1/balances`'s refund reserves.
fn reserve_row(balances: &Value, asset: &str) -> Value {
    balances["refund_reserves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["asset"] == asset)
        .cloned()
        .unwrap_or_else(|| panic!("no {asset} reserve in {balances}"))
}

fn settlement(inv: &Value) -> &Value {
    &inv["settlement"]["settlements"][0]
}

/// A merchant paid on Ethereum: its card payment is settled by the escrow from the operator's
/// liquidity, with the PaymentIntent id on chain. Without enough liquidity the settlement waits,
/// queued, with an event and a metric; a replayed gateway webhook and a restart pay nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_payment_is_settled_on_ethereum_once_with_the_payment_intent_as_source() {
    let mut env = start(true, false, &["--settle-on-ethereum", "ETH"]).await;
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["card"]}))
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    assert_eq!(inv["settlement"]["asset"], "ETH");
    assert_eq!(inv["settlement"]["amount_minor"], WEI_25_USD.to_string());
    assert_eq!(
        inv["settlement"]["payout"],
        env.eth.merchant_payout.as_str()
    );

    // Liquidity for less than one settlement.
    env.fund(WEI_25_USD / 2);
    let before = env.anvil.balance(&env.eth.merchant_payout).unwrap();
    let pi = env.pay_card(&inv);
    let queued = env
        .until(&id, |i| settlement(i)["status"] == "queued")
        .await;
    assert_eq!(queued["status"], "settled");
    let s = settlement(&queued).clone();
    assert_eq!(s["source_ref"], pi.as_str());
    assert_eq!(s["amount_minor"], WEI_25_USD.to_string());
    assert_eq!(env.metric("relay_settlements_queued").await, Some(1.0));
    assert_eq!(env.anvil.balance(&env.eth.merchant_payout).unwrap(), before);

    // The operator tops up: the queued settlement goes out.
    env.fund(WEI_25_USD);
    let paid = env.until(&id, |i| settlement(i)["status"] == "paid").await;
    let sid = settlement(&paid)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap(),
        before + WEI_25_USD
    );
    let logs = env.settled_logs(&sid);
    assert_eq!(logs.len(), 1);
    assert_eq!(
        decode_settled(&logs[0]),
        (
            "0x0000000000000000000000000000000000000000".to_owned(),
            WEI_25_USD,
            pi.clone()
        )
    );
    assert_eq!(
        logs[0]["transactionHash"].as_str().unwrap(),
        settlement(&paid)["tx"].as_str().unwrap()
    );
    let events = env.events_of(&id).await;
    for kind in ["settlement.pending", "settlement.queued", "settlement.paid"] {
        assert_eq!(
            events.iter().filter(|e| *e == kind).count(),
            1,
            "{kind}: {events:?}"
        );
    }

    // The gateway's success webhook again (a replay with a new event id), then a restart.
    let intent = env
        .gw
        .as_ref()
        .unwrap()
        .get(&format!("/v1/payment_intents/{pi}"))
        .unwrap();
    let body = json!({"id": format!("evt_replay_{}", nanos()), "object": "event",
        "type": "payment_intent.succeeded", "data": {"object": intent}})
    .to_string();
    assert_eq!(env.post_gateway_event(&body).await, 200);
    env.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.settled_logs(&sid).len(), 1);
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap(),
        before + WEI_25_USD
    );
    // The escrow itself refuses the id again.
    let used = env
        .anvil
        .call(&env.eth.escrow, "settlementUsed(bytes32)(bool)", &[&sid])
        .unwrap();
    assert_eq!(used.trim(), "true");

    // The ledger: the card money stays with the relay, the merchant was paid in ETH from
    // liquidity.
    let balances = env.balances().await;
    let rows = balances["balances"].as_array().unwrap();
    let row = |asset: &str| rows.iter().find(|r| r["asset"] == asset).unwrap().clone();
    assert_eq!(row("USD")["accounts"]["treasury"], "2500");
    assert_eq!(row("USD")["accounts"]["available"], "0");
    assert_eq!(row("ETH")["accounts"]["paid_out"], WEI_25_USD.to_string());
    assert_eq!(row("ETH")["accounts"]["liquidity"], WEI_25_USD.to_string());
    assert!(rows.iter().all(|r| r["balanced"] == true), "{balances}");

    // The payer disputes the card payment after the merchant was paid on Ethereum: the relay no
    // longer holds the card money, and the merchant owes the settlement back.
    let dispute = json!({"id": format!("evt_dispute_{}", nanos()), "object": "event",
        "type": "charge.dispute.created", "data": {"object": {"id": "dp_1", "object": "dispute",
        "charge": "ch_1", "payment_intent": pi, "amount": 2500, "currency": "usd"}}})
    .to_string();
    assert_eq!(env.post_gateway_event(&dispute).await, 200);
    env.until(&id, |i| i["payments"][0]["status"] == "disputed")
        .await;
    let balances = env.balances().await;
    let rows = balances["balances"].as_array().unwrap();
    let row = |asset: &str| rows.iter().find(|r| r["asset"] == asset).unwrap().clone();
    // Nothing is left in USD: the asset's row is gone.
    assert!(rows.iter().all(|r| r["asset"] != "USD"), "{balances}");
    assert_eq!(row("ETH")["accounts"]["liability"], WEI_25_USD.to_string());
    assert_eq!(row("ETH")["accounts"]["liquidity"], "0");
    assert_eq!(row("ETH")["accounts"]["paid_out"], WEI_25_USD.to_string());
    assert!(rows.iter().all(|r| r["balanced"] == true), "{balances}");
    assert_eq!(env.settled_logs(&sid).len(), 1);
}

/// A merchant paid on Ethereum gets bitcoin invoices at the operator's treasury addresses; a
/// payment there is settled on Ethereum with the bitcoin txid as the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitcoin_payment_to_the_treasury_is_settled_on_ethereum_with_its_txid() {
    let mut env = start(false, true, &["--settle-on-ethereum", "ETH"]).await;
    env.fund(3 * WEI_25_USD);
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["bitcoin"]}))
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    // The address is the treasury descriptor's first, not the merchant's (it has none).
    let treasury = relay_bitcoin::DescriptorAddresses::new(Network::Regtest)
        .derive(env.treasury.as_deref().unwrap(), 0)
        .unwrap();
    let btc = &inv["payment_methods"]["bitcoin"];
    assert_eq!(btc["address"], treasury.address.as_str());
    let sat: u64 = btc["amount_sat"].as_str().unwrap().parse().unwrap();
    let script = crate::bitcoin::regtest_script(&treasury.address);
    let before = env.anvil.balance(&env.eth.merchant_payout).unwrap();
    let (node, wallet) = env.btc.as_mut().unwrap();
    let tx = wallet.pay(&[(script, sat)]).unwrap();
    broadcast(node, &tx).unwrap();
    node.mine(1, &[0xee; 20]).unwrap();
    // Settled for the merchant at its depth of 1, but the operator's money waits for its own
    // depth of 3 (a payment this shallow can still be double-spent in a reorg).
    env.until(&id, |i| i["status"] == "settled").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let one_deep = env.until(&id, |_| true).await;
    assert!(
        one_deep["settlement"]["settlements"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{one_deep}"
    );
    assert_eq!(env.anvil.balance(&env.eth.merchant_payout).unwrap(), before);
    let (node, _) = env.btc.as_mut().unwrap();
    node.mine(2, &[0xee; 20]).unwrap();
    let paid = env.until(&id, |i| settlement(i)["status"] == "paid").await;
    assert_eq!(paid["status"], "settled");
    let txid = tx.compute_txid().to_string();
    assert_eq!(settlement(&paid)["source_ref"], txid.as_str());
    let sid = settlement(&paid)["id"].as_str().unwrap().to_owned();
    let logs = env.settled_logs(&sid);
    assert_eq!(logs.len(), 1);
    assert_eq!(decode_settled(&logs[0]).2, txid);
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap(),
        before + WEI_25_USD
    );
    // Refunds of a payment the merchant was paid for on Ethereum are refused, not guessed at.
    let payer = relay_bitcoin::DescriptorAddresses::new(Network::Regtest)
        .derive(&crate::bitcoin::descriptor(78, "wpkh"), 0)
        .unwrap();
    let (status, body) = env
        .refund(&id, "r-1", json!({"bitcoin_address": payer.address}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "refund_not_possible");

    env.restart().await;
    env.btc.as_ref().unwrap().0.mine(2, &[0xee; 20]).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.settled_logs(&sid).len(), 1);
    let balances = env.balances().await;
    let btc_row = balances["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["asset"] == "BTC")
        .unwrap()
        .clone();
    assert_eq!(btc_row["accounts"]["treasury"], sat.to_string());
    assert_eq!(btc_row["accounts"]["paid_out"], "0");
}

/// Escrow refunds: the whole deposit refunded before capture is voided back; part of a captured
/// deposit is refunded from the merchant's refund reserve in the escrow — refused while the
/// reserve does not cover it, and never paid with the operator's money.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escrow_refunds_void_before_capture_and_refund_after() {
    let env = start(false, false, &["--eth-confirmations", "3"]).await;
    let body = json!({"amount": "25.00", "currency": "USD", "payment_methods": ["ethereum"]});

    // Before capture: a full refund turns the capture into a void once the deposit is final.
    let a = env.invoice(body.clone()).await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    let pay = |inv: &Value| {
        let call = &inv["payment_methods"]["ethereum"]["call"];
        let args: Vec<&str> = call["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let tx = env
            .anvil
            .send(
                &env.eth.payer_key,
                call["to"].as_str().unwrap(),
                call["function"].as_str().unwrap(),
                &args,
                call["value"].as_str().unwrap(),
            )
            .unwrap();
        wait_mined(&env.anvil, &tx);
    };
    let (status, early) = env.refund(&a_id, "a-0", json!({})).await;
    assert_eq!(status, 409, "nothing paid yet: {early}");
    pay(&a);
    env.until(&a_id, |i| i["payments"][0]["status"] == "pending")
        .await;
    let (status, r) = env.refund(&a_id, "a-1", json!({})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "pending");
    assert_eq!(r["amount_minor"], WEI_25_USD.to_string());
    let payer_before = env.anvil.balance(&env.eth.payer).unwrap();
    env.anvil.mine(2).unwrap();
    let a_done = env
        .until(&a_id, |i| i["refunds"][0]["status"] == "succeeded")
        .await;
    assert_eq!(a_done["payments"][0]["status"], "voided");
    assert!(a_done["payments"][0]["capture_tx"].is_null());
    assert_eq!(
        env.anvil.balance(&env.eth.payer).unwrap() - payer_before,
        WEI_25_USD
    );

    // After capture the merchant has the money: a refund is paid from the refund reserve the
    // merchant funded in the escrow, never by the operator.
    let b = env.invoice(body).await;
    let b_id = b["id"].as_str().unwrap().to_owned();
    pay(&b);
    env.anvil.mine(2).unwrap();
    let captured = env
        .until(&b_id, |i| i["payments"][0]["capture_tx"].is_string())
        .await;
    let reference = captured["payments"][0]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let payer_before = env.anvil.balance(&env.eth.payer).unwrap();
    let operator_before = env.anvil.balance(&env.eth.operator).unwrap();
    let escrow_before = env.anvil.balance(&env.eth.escrow).unwrap();

    // The attack: a merchant refunding its own captured payment to a wallet of its own, with
    // nothing put up for it. Refused, and nothing moves on chain.
    let (status, refused) = env
        .refund(
            &b_id,
            "b-0",
            json!({"amount": "0.004", "payment": reference}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "refund_not_covered");
    env.anvil.mine(2).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let unchanged = env.until(&b_id, |_| true).await;
    assert!(
        unchanged["refunds"].as_array().unwrap().is_empty(),
        "{unchanged}"
    );
    assert_eq!(
        env.anvil.balance(&env.eth.operator).unwrap(),
        operator_before
    );
    assert_eq!(env.anvil.balance(&env.eth.payer).unwrap(), payer_before);
    assert_eq!(env.anvil.balance(&env.eth.escrow).unwrap(), escrow_before);

    // The merchant funds its reserve (anyone may; here the merchant's own wallet).
    let wallet = relay_ethereum::alloy::signers::local::PrivateKeySigner::random();
    let wallet_addr = format!("{:#x}", wallet.address());
    let wallet_key = format!(
        "0x{}",
        relay_ethereum::alloy::hex::encode(wallet.to_bytes())
    );
    env.anvil.set_balance(&wallet_addr, 10u128.pow(18)).unwrap();
    let tx = env
        .anvil
        .send(
            &wallet_key,
            &env.eth.escrow,
            "fundRefunds(address,address,uint256)",
            &[
                &env.eth.merchant_payout,
                "0x0000000000000000000000000000000000000000",
                "5000000000000000",
            ],
            "5000000000000000",
        )
        .unwrap();
    wait_mined(&env.anvil, &tx);
    let reserve = || {
        env.anvil
            .call(
                &env.eth.escrow,
                "refundReserve(address,address)(uint256)",
                &[
                    &env.eth.merchant_payout,
                    "0x0000000000000000000000000000000000000000",
                ],
            )
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u128>()
            .unwrap()
    };
    assert_eq!(reserve(), 5_000_000_000_000_000);
    let balances = env.balances().await;
    assert_eq!(
        reserve_row(&balances, "ETH")["available_minor"],
        "5000000000000000",
        "{balances}"
    );
    let operator_before = env.anvil.balance(&env.eth.operator).unwrap();

    let (status, r) = env
        .refund(
            &b_id,
            "b-1",
            json!({"amount": "0.004", "payment": reference}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    // The same key again: the same refund, not a second one.
    let (status, again) = env
        .refund(
            &b_id,
            "b-1",
            json!({"amount": "0.004", "payment": reference}),
        )
        .await;
    assert_eq!((status, &again["id"]), (200, &r["id"]));
    // More than the payment has left.
    let (status, too_much) = env.refund(&b_id, "b-2", json!({"amount": "0.007"})).await;
    assert_eq!(status, 422, "{too_much}");
    // Within the payment, beyond what the reserve has left once the pending refund is counted.
    let (status, uncovered) = env.refund(&b_id, "b-3", json!({"amount": "0.002"})).await;
    assert_eq!(status, 409, "{uncovered}");
    assert_eq!(uncovered["error"]["code"], "refund_not_covered");
    let done = env
        .until(&b_id, |i| i["refunds"][0]["status"] == "succeeded")
        .await;
    assert_eq!(
        env.anvil.balance(&env.eth.payer).unwrap() - payer_before,
        4_000_000_000_000_000
    );
    assert_eq!(reserve(), 1_000_000_000_000_000);
    // The operator paid the gas of its refund transaction and nothing else.
    let receipt = env
        .anvil
        .rpc(
            "eth_getTransactionReceipt",
            json!([done["refunds"][0]["tx"].as_str().unwrap()]),
        )
        .unwrap();
    let gas = relay_testnet::hex_quantity(&receipt["gasUsed"]).unwrap()
        * relay_testnet::hex_quantity(&receipt["effectiveGasPrice"]).unwrap();
    assert_eq!(
        operator_before - env.anvil.balance(&env.eth.operator).unwrap(),
        gas
    );
    assert_eq!(done["payments"][0]["refunded_minor"], "4000000000000000");
    assert_eq!(done["refunds"].as_array().unwrap().len(), 1);
    let topic = relay_testnet::cast(&["keccak", "PaymentRefunded(bytes32,uint256)"]).unwrap();
    let id = captured["payment_methods"]["ethereum"]["payment_id"]
        .as_str()
        .unwrap();
    let logs = env
        .anvil
        .rpc("eth_getLogs", json!([{"fromBlock": "0x0", "toBlock": "latest", "address": env.eth.escrow, "topics": [topic, id]}]))
        .unwrap();
    assert_eq!(logs.as_array().unwrap().len(), 1);
    assert_eq!(done["refunds"][0]["tx"], logs[0]["transactionHash"]);
    let events = env.events_of(&b_id).await;
    assert_eq!(events.iter().filter(|e| *e == "refund.pending").count(), 1);
    assert_eq!(
        events.iter().filter(|e| *e == "refund.succeeded").count(),
        1
    );
    let balances = env.balances().await;
    let eth = balances["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["asset"] == "ETH")
        .unwrap()
        .clone();
    // Paid from the merchant's own reserve: the merchant owes the operator nothing.
    assert_eq!(eth["accounts"]["liability"], "0");
    assert_eq!(eth["accounts"]["refunded"], "4000000000000000");
    assert_eq!(eth["accounts"]["paid_out"], WEI_25_USD.to_string());
    assert_eq!(eth["balanced"], true);
    assert_eq!(
        reserve_row(&balances, "ETH")["available_minor"],
        "1000000000000000"
    );
}

/// Card refunds go to the gateway (once per refund, whatever the retries) and succeed when the
/// gateway says so in its webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_refund_goes_to_the_gateway_once_and_succeeds_on_its_webhook() {
    let env = start(true, false, &[]).await;
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["card"]}))
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    let pi = env.pay_card(&inv);
    env.until(&id, |i| i["status"] == "settled").await;
    let (status, r) = env.refund(&id, "c-1", json!({"amount": "10.00"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "pending");
    let (_, again) = env.refund(&id, "c-1", json!({"amount": "10.00"})).await;
    assert_eq!(again["id"], r["id"]);
    // The gateway refunded exactly once.
    let charge = env.charge_refunded(&pi).await;
    assert_eq!(charge["amount_refunded"], 1000, "{charge}");
    let done = env
        .until(&id, |i| i["refunds"][0]["status"] == "succeeded")
        .await;
    assert_eq!(done["payments"][0]["refunded_minor"], "1000");
    // What is left can be refunded; more cannot.
    let (status, _) = env.refund(&id, "c-2", json!({"amount": "15.01"})).await;
    assert_eq!(status, 422);
    let balances = env.balances().await;
    let usd = &balances["balances"][0];
    assert_eq!(usd["asset"], "USD");
    assert_eq!(usd["accounts"]["refunded"], "1000");
    assert_eq!(usd["accounts"]["available"], "2500");
    assert_eq!(usd["accounts"]["payers"], "1500");
}

/// A bitcoin refund is a request the merchant's own wallet pays; the relay marks it paid when it
/// sees that payment on chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitcoin_refund_is_marked_paid_when_the_merchants_wallet_pays_it() {
    let mut env = start(
        false,
        true,
        &["--btc-descriptor", &crate::bitcoin::descriptor(8, "wpkh")],
    )
    .await;
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["bitcoin"]}))
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    let btc = &inv["payment_methods"]["bitcoin"];
    let (script, sat) = crate::bitcoin::pay_to(&inv);
    {
        let (node, wallet) = env.btc.as_mut().unwrap();
        let tx = wallet.pay(&[(script, sat)]).unwrap();
        broadcast(node, &tx).unwrap();
        node.mine(1, &[0xee; 20]).unwrap();
    }
    env.until(&id, |i| i["status"] == "settled").await;
    // An invoice's own address is never a refund address (the watcher follows it for the invoice).
    let (status, body) = env
        .refund(&id, "b-0", json!({"bitcoin_address": btc["address"]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bitcoin_address_invalid");
    // The payer's refund address.
    let payer = relay_bitcoin::DescriptorAddresses::new(Network::Regtest)
        .derive(&crate::bitcoin::descriptor(77, "wpkh"), 3)
        .unwrap();
    let (status, r) = env
        .refund(
            &id,
            "b-1",
            json!({"amount": "0.0002", "bitcoin_address": payer.address}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "pending");
    assert_eq!(r["uri"], format!("bitcoin:{}?amount=0.0002", payer.address));
    // The relay restarts before the merchant pays: it still watches the refund address.
    env.restart().await;
    let refund_script = ScriptBuf::from_bytes(payer.script_pubkey.as_bytes().to_vec());
    let txid = {
        let (node, wallet) = env.btc.as_mut().unwrap();
        let tx = wallet.pay(&[(refund_script, 20_000)]).unwrap();
        broadcast(node, &tx).unwrap();
        node.mine(1, &[0xee; 20]).unwrap();
        tx.compute_txid().to_string()
    };
    let done = env
        .until(&id, |i| i["refunds"][0]["status"] == "succeeded")
        .await;
    assert_eq!(done["refunds"][0]["tx"], txid.as_str());
    assert_eq!(done["payments"][0]["refunded_minor"], "20000");
    // The payment to the refund address is not taken for a payment of the invoice.
    assert_eq!(done["payments"].as_array().unwrap().len(), 1);
    let balances = env.balances().await;
    let row = &balances["balances"][0];
    assert_eq!(row["asset"], "BTC");
    assert_eq!(row["accounts"]["refunded"], "20000");
    assert_eq!(row["accounts"]["paid_out"], sat.to_string());

    // Two more refunds to the same address, paid by one transaction with two outputs: each
    // output pays one of them.
    for key in ["b-2", "b-3"] {
        let (status, r) = env
            .refund(
                &id,
                key,
                json!({"amount": "0.0001", "bitcoin_address": payer.address}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
    }
    let refund_script = ScriptBuf::from_bytes(payer.script_pubkey.as_bytes().to_vec());
    let batch = {
        let (node, wallet) = env.btc.as_mut().unwrap();
        let tx = wallet
            .pay(&[(refund_script.clone(), 10_000), (refund_script, 10_000)])
            .unwrap();
        broadcast(node, &tx).unwrap();
        node.mine(1, &[0xee; 20]).unwrap();
        tx.compute_txid().to_string()
    };
    let done = env
        .until(&id, |i| {
            i["refunds"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "succeeded")
        })
        .await;
    assert_eq!(done["refunds"][1]["tx"], batch.as_str());
    assert_eq!(done["refunds"][2]["tx"], batch.as_str());
    assert_eq!(done["payments"][0]["refunded_minor"], "40000");
}

/// A TCP proxy to the gateway that can be switched off: while off, it accepts connections and
/// closes them at once, as a gateway in an outage would look to the relay.
struct Switch {
    url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pipes: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Switch {
    /// Off: open connections are cut and new ones closed at once.
    fn off(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for p in self.pipes.lock().unwrap().drain(..) {
            p.abort();
        }
    }

    fn on(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn switch_to(target: String) -> Switch {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let target = target
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let on = up.clone();
    let pipes: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
        Default::default();
    let open = pipes.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if !on.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let target = target.clone();
            let pipe = tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
            open.lock().unwrap().push(pipe);
        }
    });
    Switch {
        url,
        up,
        pipes,
        task,
    }
}

/// A card refund the gateway could not take (an outage) stays reserved; the relay asks again
/// once the gateway is back, and the gateway refunds once, however often it is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_refund_the_gateway_could_not_take_is_resumed_and_made_once() {
    let (env, switch, id, pi) = paid_card_behind(switch_to, |s| s.url.clone()).await;
    let switch = switch.get().unwrap();

    switch.off();
    let (status, body) = env.refund(&id, "c-out", json!({"amount": "10.00"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "gateway_unavailable");
    let held = env
        .until(&id, |i| i["refunds"][0]["status"] == "pending")
        .await;
    assert!(held["refunds"][0]["gateway_refund"].is_null(), "{held}");
    // Reserved: the rest is all that can be refunded meanwhile.
    let (status, _) = env.refund(&id, "c-more", json!({"amount": "15.01"})).await;
    assert_eq!(status, 422);

    switch.on();
    let taken = env
        .until(&id, |i| i["refunds"][0]["gateway_refund"].is_string())
        .await;
    let refund_id = taken["refunds"][0]["id"].clone();
    // The merchant retries its request with the same key: the same refund, not a second one.
    let (status, again) = env.refund(&id, "c-out", json!({"amount": "10.00"})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], refund_id);
    let charge = env.charge_refunded(&pi).await;
    assert_eq!(charge["amount_refunded"], 1000, "{charge}");
    let done = env
        .until(&id, |i| i["refunds"][0]["status"] == "succeeded")
        .await;
    assert_eq!(done["payments"][0]["refunded_minor"], "1000");
    assert_eq!(done["refunds"].as_array().unwrap().len(), 1);
}

/// A relay that reaches the gateway only through the proxy `make` puts in front of it
/// (reconciling every second; the payer and the test reach the gateway directly), and a card
/// invoice paid and settled: the environment, the proxy, the invoice id and its PaymentIntent.
async fn paid_card_behind<P, F>(
    make: impl FnOnce(String) -> F,
    url: fn(&P) -> String,
) -> (
    Env,
    std::sync::Arc<tokio::sync::OnceCell<P>>,
    String,
    String,
)
where
    P: Send + Sync + 'static,
    F: std::future::Future<Output = P>,
{
    let (env, proxy) = card_behind(make, url).await;
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["card"]}))
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    let pi = env.pay_card(&inv);
    env.until(&id, |i| i["status"] == "settled").await;
    (env, proxy, id, pi)
}

/// A relay that reaches the gateway only through the proxy `make` puts in front of it
/// (reconciling every second; the payer and the test reach the gateway directly).
async fn card_behind<P, F>(
    make: impl FnOnce(String) -> F,
    url: fn(&P) -> String,
) -> (Env, std::sync::Arc<tokio::sync::OnceCell<P>>)
where
    P: Send + Sync + 'static,
    F: std::future::Future<Output = P>,
{
    let proxy = std::sync::Arc::new(tokio::sync::OnceCell::<P>::new());
    let slot = proxy.clone();
    let env = start_with(true, false, &[], move |gw_url| {
        let p = futures_block_on(make(gw_url.to_owned()));
        let base = url(&p);
        let _ = slot.set(p);
        vec![
            ("RELAY_STRIPE_API_BASE", base),
            ("RELAY_CARD_RECONCILE_SECS", "1".to_owned()),
        ]
    })
    .await;
    (env, proxy)
}

/// Runs a future to completion from synchronous code inside the test runtime.
fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// A merchant paid in the dev dollar token: the operator funds token liquidity (approve, then
/// `fund`), and a card payment is settled in token units to the merchant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_payment_is_settled_in_an_erc20_token() {
    let env = start_with(true, false, &["--settle-on-ethereum", "DUSD"], |_| {
        vec![(
            "RELAY_RATES",
            "BTC/USD=60000,ETH/USD=2500,DUSD/USD=1".to_owned(),
        )]
    })
    .await;
    // 100 DUSD (6 decimals) from the dev payer to the operator, then into the escrow.
    let amount = "100000000";
    let send = |key: &str, to: &str, sig: &str, args: &[&str]| {
        let tx = env.anvil.send(key, to, sig, args, "0").unwrap();
        wait_mined(&env.anvil, &tx);
    };
    send(
        &env.eth.payer_key,
        &env.eth.token,
        "transfer(address,uint256)",
        &[&env.eth.operator, amount],
    );
    send(
        &env.eth.operator_key,
        &env.eth.token,
        "approve(address,uint256)",
        &[&env.eth.escrow, amount],
    );
    send(
        &env.eth.operator_key,
        &env.eth.escrow,
        "fund(address,uint256)",
        &[&env.eth.token, amount],
    );
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["card"]}))
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    assert_eq!(inv["settlement"]["asset"], "DUSD");
    assert_eq!(inv["settlement"]["amount"], "25.000000");
    let balance = |who: &str| -> u128 {
        let out = env
            .anvil
            .call(&env.eth.token, "balanceOf(address)(uint256)", &[who])
            .unwrap();
        out.split_whitespace().next().unwrap().parse().unwrap()
    };
    let before = balance(&env.eth.merchant_payout);
    let pi = env.pay_card(&inv);
    let paid = env.until(&id, |i| settlement(i)["status"] == "paid").await;
    assert_eq!(settlement(&paid)["amount_minor"], "25000000");
    assert_eq!(balance(&env.eth.merchant_payout) - before, 25_000_000);
    let sid = settlement(&paid)["id"].as_str().unwrap().to_owned();
    let logs = env.settled_logs(&sid);
    assert_eq!(logs.len(), 1);
    assert_eq!(
        decode_settled(&logs[0]),
        (env.eth.token.to_lowercase(), 25_000_000, pi)
    );
    // What is left in the escrow's liquidity for this token.
    let left = env
        .anvil
        .call(
            &env.eth.escrow,
            "liquidity(address)(uint256)",
            &[&env.eth.token],
        )
        .unwrap();
    assert_eq!(left.split_whitespace().next().unwrap(), "75000000");
}

/// The escrow's ether liquidity, read from the chain.
fn liquidity(env: &Env) -> u128 {
    env.anvil
        .call(
            &env.eth.escrow,
            "liquidity(address)(uint256)",
            &["0x0000000000000000000000000000000000000000"],
        )
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Bitcoin paid to a merchant paid on Ethereum after it canceled the invoice, and three times
/// what another invoice asked: the operator's liquidity pays the second invoice's locked amount
/// once, and nothing for the first; the rest is held with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_rail_settlements_never_pay_canceled_invoices_or_more_than_was_due() {
    let mut env = start(false, true, &["--settle-on-ethereum", "ETH"]).await;
    env.fund(5 * WEI_25_USD);
    let merchant_before = env.anvil.balance(&env.eth.merchant_payout).unwrap();
    let liquidity_before = liquidity(&env);
    let body = json!({"amount": "25.00", "currency": "USD", "payment_methods": ["bitcoin"]});
    let canceled = env.invoice(body.clone()).await;
    let canceled_id = canceled["id"].as_str().unwrap().to_owned();
    let r = env
        .client
        .post(format!(
            "{}/v1/invoices/{canceled_id}/cancel",
            env.server.url
        ))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tripled = env.invoice(body).await;
    let tripled_id = tripled["id"].as_str().unwrap().to_owned();
    let (a, sat_a) = crate::bitcoin::pay_to(&canceled);
    let (b, sat_b) = crate::bitcoin::pay_to(&tripled);
    let (node, wallet) = env.btc.as_mut().unwrap();
    let tx = wallet.pay(&[(a, sat_a)]).unwrap();
    broadcast(node, &tx).unwrap();
    let tx = wallet
        .pay(&[(b.clone(), sat_b), (b.clone(), sat_b), (b, sat_b)])
        .unwrap();
    broadcast(node, &tx).unwrap();
    node.mine(4, &[0xee; 20]).unwrap();

    let held = env
        .until(&canceled_id, |i| settlement(i)["status"] == "held")
        .await;
    assert_eq!(settlement(&held)["hold_reason"], "after_cancel", "{held}");
    let paid = env
        .until(&tripled_id, |i| {
            i["settlement"]["settlements"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["status"] == "paid")
        })
        .await;
    let settlements = paid["settlement"]["settlements"]
        .as_array()
        .unwrap()
        .clone();
    let paid_sum: u128 = settlements
        .iter()
        .filter(|s| s["status"] != "held")
        .map(|s| s["amount_minor"].as_str().unwrap().parse::<u128>().unwrap())
        .sum();
    assert_eq!(paid_sum, WEI_25_USD, "{paid}");
    assert!(settlements
        .iter()
        .filter(|s| s["status"] == "held")
        .all(|s| s["hold_reason"] == "over_payment"));

    // More blocks and a restart pay nothing more.
    env.restart().await;
    env.btc.as_ref().unwrap().0.mine(3, &[0xee; 20]).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap() - merchant_before,
        WEI_25_USD
    );
    assert_eq!(liquidity_before - liquidity(&env), WEI_25_USD);
    let held_again = env.until(&canceled_id, |_| true).await;
    assert_eq!(settlement(&held_again)["status"], "held");
    let events = env.events_of(&canceled_id).await;
    assert!(events.iter().any(|e| e == "settlement.held"), "{events:?}");
    assert!(!events.iter().any(|e| e == "settlement.paid"), "{events:?}");

    // The merchant has one over-payment paid at today's rate: the operator holds that bitcoin.
    let held = settlements
        .iter()
        .find(|s| s["status"] == "held")
        .unwrap()
        .clone();
    let sid = held["id"].as_str().unwrap();
    let released: Value = env
        .client
        .post(format!(
            "{}/v1/invoices/{tripled_id}/settlements/{sid}/release",
            env.server.url
        ))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = released["settlement"]["settlements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == sid)
        .unwrap()
        .clone();
    assert_eq!(now["status"], "pending", "{released}");
    let amount: u128 = now["amount_minor"].as_str().unwrap().parse().unwrap();
    // The over-payment is held as one record for the two extra outputs, worth today (60,000
    // USD/BTC, 2,500 USD/ETH: 24 ETH per BTC):
    assert_eq!(amount, 2 * u128::from(sat_b) * 24 * 10u128.pow(10));
    assert_eq!(now["payments"].as_array().map(Vec::len), Some(2), "{now}");
    env.until(&tripled_id, |i| {
        i["settlement"]["settlements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == sid && s["status"] == "paid")
    })
    .await;
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap() - merchant_before,
        WEI_25_USD + amount
    );
    assert_eq!(liquidity_before - liquidity(&env), WEI_25_USD + amount);
}

/// A card invoice's PaymentIntent is canceled at the gateway when the merchant cancels the
/// invoice or it expires — also when the gateway cannot be reached at that moment: the payer
/// can no longer be charged for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_or_expired_card_invoice_cannot_be_charged_at_the_gateway() {
    let (env, switch) = card_behind(switch_to, |s| s.url.clone()).await;
    let switch = switch.get().unwrap();
    let gw = env.gw.as_ref().unwrap();
    let charge_attempt = |pi: &str| {
        gw.post(
            &format!("/v1/payment_intents/{pi}"),
            &[("payment_method", "pm_card_visa")],
        )
        .and_then(|_| gw.post(&format!("/v1/payment_intents/{pi}/confirm"), &[]))
    };
    let pi_of = |inv: &Value| {
        inv["payment_methods"]["card"]["payment_intent"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let canceled = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["card"]}))
        .await;
    let r = env
        .client
        .post(format!(
            "{}/v1/invoices/{}/cancel",
            env.server.url,
            canceled["id"].as_str().unwrap()
        ))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pi = pi_of(&canceled);
    assert_eq!(
        gw.get(&format!("/v1/payment_intents/{pi}")).unwrap()["status"],
        "canceled"
    );
    assert!(
        charge_attempt(&pi).is_err(),
        "a canceled invoice was charged"
    );

    let expiring = env
        .invoice(
            json!({"amount": "25.00", "currency": "USD", "payment_methods": ["card"],
            "expires_in": 60}),
        )
        .await;
    let id = expiring["id"].as_str().unwrap().to_owned();
    // The gateway cannot be reached when the invoice expires: its intent is canceled once it
    // can be.
    switch.off();
    let start = Instant::now();
    loop {
        let inv = env.until(&id, |_| true).await;
        if inv["status"] == "expired" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "never expired: {inv}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pi = pi_of(&expiring);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(
        gw.get(&format!("/v1/payment_intents/{pi}")).unwrap()["status"],
        "canceled"
    );
    switch.on();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.get(&format!("/v1/payment_intents/{pi}")).unwrap()["status"] != "canceled" {
        assert!(
            Instant::now() < deadline,
            "the expired invoice's intent is still open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        charge_attempt(&pi).is_err(),
        "an expired invoice was charged"
    );
    let intent = gw.get(&format!("/v1/payment_intents/{pi}")).unwrap();
    assert_eq!(
        intent["amount_received"].as_u64().unwrap_or(0),
        0,
        "{intent}"
    );
}

/// A gateway proxy for the relay: every call is forwarded; while `garble` is on, a refund is
/// forwarded (the gateway makes it) and then answered with a proxy's 502 page, so the relay
/// cannot tell whether it was made.
struct GarblingProxy {
    url: String,
    garble: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GarblingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn garbling_proxy(target: String) -> GarblingProxy {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use std::sync::atomic::Ordering;
    let garble = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on = garble.clone();
    let target = target.trim_end_matches('/').to_owned();
    let client = reqwest::Client::new();
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (client, target, on) = (client.clone(), target.clone(), on.clone());
        async move {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let mut req = client.request(method.clone(), format!("{target}{path}"));
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    req = req.header(name, value);
                }
            }
            let resp = req.body(body).send().await.unwrap();
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let text = resp.text().await.unwrap();
            if on.load(Ordering::SeqCst) && method == Method::POST && uri.path() == "/v1/refunds" {
                return (
                    StatusCode::BAD_GATEWAY,
                    "<html><body><h1>502 Bad Gateway</h1></body></html>".to_owned(),
                );
            }
            (status, text)
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    GarblingProxy { url, garble, task }
}

/// The gateway makes a refund but its answer reaches the relay as a 502 page: the refund stays
/// reserved (never released to be asked again), and when the relay asks again it finds the
/// gateway's refund instead of making a second one. The payer is refunded once, at the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_refund_answered_by_a_5xx_page_is_kept_and_made_once() {
    let (env, proxy, id, pi) = paid_card_behind(garbling_proxy, |p| p.url.clone()).await;
    let proxy = proxy.get().unwrap();
    let gw = env.gw.as_ref().unwrap();
    let refunded_at_gateway = || {
        let intent = gw.get(&format!("/v1/payment_intents/{pi}")).unwrap();
        let charge = intent["charges"]["data"][0]["id"]
            .as_str()
            .or_else(|| intent["latest_charge"].as_str())
            .unwrap()
            .to_owned();
        gw.get(&format!("/v1/charges/{charge}")).unwrap()["amount_refunded"]
            .as_u64()
            .unwrap()
    };

    proxy
        .garble
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = env.refund(&id, "g-1", json!({"amount": "10.00"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "gateway_unavailable");
    assert_eq!(refunded_at_gateway(), 1000);
    let held = env.until(&id, |_| true).await;
    assert_eq!(held["refunds"][0]["status"], "pending", "{held}");
    // The 10.00 stays reserved: a second refund can take only the 15.00 left.
    let (status, _) = env.refund(&id, "g-2", json!({"amount": "15.01"})).await;
    assert_eq!(status, 422);

    proxy
        .garble
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let found = env
        .until(&id, |i| i["refunds"][0]["gateway_refund"].is_string())
        .await;
    // The merchant's retry with the same key: the same refund, not a second one.
    let (status, again) = env.refund(&id, "g-1", json!({"amount": "10.00"})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], found["refunds"][0]["id"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(refunded_at_gateway(), 1000, "refunded twice at the gateway");
    env.charge_refunded(&pi).await;
    let done = env
        .until(&id, |i| i["refunds"][0]["status"] == "succeeded")
        .await;
    assert_eq!(done["payments"][0]["refunded_minor"], "1000");
    assert_eq!(done["refunds"].as_array().unwrap().len(), 1);
}

/// A double spend against a merchant paid on Ethereum: payment A to the treasury address is one
/// block deep (the merchant's policy, so the invoice reads settled), then a competing branch
/// replaces it with B, paying the same invoice. Before, A was settled from the operator's
/// liquidity at once and B again after the reorg; now nothing is paid before the operator's
/// depth of 3, and the invoice is settled once, for B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_spend_of_a_shallow_payment_is_settled_once() {
    let mut env = start(false, true, &["--settle-on-ethereum", "ETH"]).await;
    env.fund(3 * WEI_25_USD);
    let merchant_before = env.anvil.balance(&env.eth.merchant_payout).unwrap();
    let liquidity_before = liquidity(&env);
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["bitcoin"]}))
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    let (script, sat) = crate::bitcoin::pay_to(&inv);
    let (fork, a, b) = {
        let (node, wallet) = env.btc.as_mut().unwrap();
        let a = wallet.pay(&[(script.clone(), sat)]).unwrap();
        broadcast(node, &a).unwrap();
        let fork = node.block_count().unwrap();
        node.mine(1, &[0xee; 20]).unwrap();
        let b = wallet.double_spend(&a, &[(script, sat)], 700).unwrap();
        (fork, a, b)
    };
    env.until(&id, |i| i["status"] == "settled").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap(),
        merchant_before,
        "paid from the operator's liquidity one block deep"
    );
    crate::bitcoin::compete(&env.btc.as_ref().unwrap().0, fork, vec![b.clone()], 3, 9);
    let done = env
        .until(&id, |i| {
            i["settlement"]["settlements"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["status"] == "paid")
        })
        .await;
    let a_ref = format!("btc:{}:0", a.compute_txid());
    let b_txid = b.compute_txid().to_string();
    let a_payment = done["payments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["reference"] == a_ref.as_str())
        .unwrap()
        .clone();
    assert_ne!(a_payment["status"], "confirmed", "{done}");
    let paid: Vec<&Value> = done["settlement"]["settlements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "paid")
        .collect();
    assert_eq!(paid.len(), 1, "{done}");
    assert_eq!(paid[0]["source_ref"], b_txid.as_str());
    env.btc.as_ref().unwrap().0.mine(3, &[0xee; 20]).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap() - merchant_before,
        WEI_25_USD
    );
    assert_eq!(liquidity_before - liquidity(&env), WEI_25_USD);
}

/// A bitcoin payment that arrives after its quote expired, for a merchant paid on Ethereum: the
/// invoice counts it at the rate of its arrival, and the operator's liquidity does not pay its
/// settlement at the locked rate; it is held, and paid at the rate of the day once the merchant
/// releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_after_its_quote_expired_is_not_settled_at_the_old_rate() {
    let mut env = start(
        false,
        true,
        &["--settle-on-ethereum", "ETH", "--quote-ttl-secs", "10"],
    )
    .await;
    env.fund(3 * WEI_25_USD);
    let inv = env
        .invoice(
            json!({"amount": "25.00", "currency": "USD", "payment_methods": ["bitcoin"],
            "expires_in": 600}),
        )
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    let btc = &inv["payment_methods"]["bitcoin"];
    let sat: u64 = btc["amount_sat"].as_str().unwrap().parse().unwrap();
    let address = btc["address"].as_str().unwrap().to_owned();
    let script = crate::bitcoin::regtest_script(&address);
    let before = env.anvil.balance(&env.eth.merchant_payout).unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (node, wallet) = env.btc.as_mut().unwrap();
    let tx = wallet.pay(&[(script, sat)]).unwrap();
    broadcast(node, &tx).unwrap();
    node.mine(3, &[0xee; 20]).unwrap();
    let held = env
        .until(&id, |i| {
            i["status"] == "settled" && settlement(i)["status"] == "held"
        })
        .await;
    let p = &held["payments"][0];
    assert_eq!(p["repricing"], "priced", "{held}");
    assert_eq!(settlement(&held)["hold_reason"], "late", "{held}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap(),
        before,
        "nothing paid at the locked rate"
    );
    // Released by the merchant: paid at today's rate (the fixed table's here).
    let sid = settlement(&held)["id"].as_str().unwrap().to_owned();
    let released: Value = env
        .client
        .post(format!(
            "{}/v1/invoices/{id}/settlements/{sid}/release",
            env.server.url
        ))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settlement(&released)["status"], "pending", "{released}");
    let amount: u128 = settlement(&released)["amount_minor"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    env.until(&id, |i| settlement(i)["status"] == "paid").await;
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap() - before,
        amount
    );
}
