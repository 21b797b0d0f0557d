//! The bitcoin rail against a real regtest node (bcoin from the harness, or Bitcoin Core when
//! `BITCOIND_EXE` is set): payments built and signed by the test's own wallet, competing blocks
//! built by the test and handed to `submitblock`, and the relay as users run it.

use crate::card::wait_for;
use crate::{create_invoice, get_invoice, merchant_create_with, Server, RELAY};
use relay_bitcoin::bitcoin::bip32::{Xpriv, Xpub};
use relay_bitcoin::bitcoin::secp256k1::Secp256k1;
use relay_bitcoin::bitcoin::{Address, Network, ScriptBuf, Transaction};
use relay_testnet::btc_wallet::{block_at, broadcast, build_block, submit_block, TestWallet};
use relay_testnet::{BitcoinImpl, BitcoinNode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A merchant's receive descriptor (a regtest tpub; the relay never sees the private key).
pub(crate) fn descriptor(seed: u8, kind: &str) -> String {
    let secp = Secp256k1::new();
    let xprv = Xpriv::new_master(Network::Regtest, &[seed; 32]).unwrap();
    let xpub = Xpub::from_priv(&secp, &xprv);
    match kind {
        "sh-wpkh" => format!("sh(wpkh({xpub}/0/*))"),
        "tr" => format!("tr({xpub}/0/*)"),
        _ => format!("wpkh({xpub}/0/*)"),
    }
}

/// Where and how much to pay for an invoice as the API shows it: the output script of its
/// bitcoin address and the amount in satoshis.
pub(crate) fn pay_to(inv: &Value) -> (ScriptBuf, u64) {
    let btc = &inv["payment_methods"]["bitcoin"];
    (
        regtest_script(btc["address"].as_str().unwrap()),
        btc["amount_sat"].as_str().unwrap().parse().unwrap(),
    )
}

/// The output script of a regtest address.
pub(crate) fn regtest_script(address: &str) -> ScriptBuf {
    Address::from_str(address)
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap()
        .script_pubkey()
}

pub(crate) struct BtcEnv {
    pub node: BitcoinNode,
    pub wallet: TestWallet,
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub key: String,
    /// A second shop's API key (its own descriptor), when the test asked for one.
    pub other_key: Option<String>,
    pub client: reqwest::Client,
    env: Vec<(&'static str, String)>,
}

impl BtcEnv {
    pub(crate) async fn start(confirmations: u32, kind: &str) -> BtcEnv {
        Self::start_shops(confirmations, kind, false).await
    }

    async fn start_shops(confirmations: u32, kind: &str, two: bool) -> BtcEnv {
        let node = BitcoinNode::spawn().unwrap();
        let mut wallet = TestWallet::new(41);
        wallet.fund(&node, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let m = merchant_create_with(
            dir.path(),
            "btc shop",
            &[
                "--btc-descriptor",
                &descriptor(7, kind),
                "--btc-confirmations",
                &confirmations.to_string(),
            ],
        );
        let other_key = two.then(|| {
            merchant_create_with(
                dir.path(),
                "other shop",
                &["--btc-descriptor", &descriptor(8, kind)],
            )["api_key"]
                .as_str()
                .unwrap()
                .to_owned()
        });
        let env = vec![
            ("RELAY_BTC_RPC_URL", node.rpc_url_with_auth()),
            ("RELAY_BTC_POLL_MS", "100".to_owned()),
        ];
        let server = Server::start_with(dir.path(), crate::free_port(), &env).await;
        BtcEnv {
            node,
            wallet,
            dir,
            server,
            key: m["api_key"].as_str().unwrap().to_owned(),
            other_key,
            client: reqwest::Client::new(),
            env,
        }
    }

    /// A new bitcoin invoice: (id, the script to pay, sat due).
    pub(crate) async fn invoice(&self, amount: &str, expires_in: i64) -> (String, ScriptBuf, u64) {
        let (status, inv) = create_invoice(
            &self.client,
            &self.server.url,
            &self.key,
            &format!("btc-{}", rand_id()),
            &json!({"amount": amount, "currency": "USD", "payment_methods": ["bitcoin"], "expires_in": expires_in}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{inv}");
        let btc = &inv["payment_methods"]["bitcoin"];
        let address = Address::from_str(btc["address"].as_str().unwrap())
            .unwrap()
            .require_network(Network::Regtest)
            .unwrap();
        assert_eq!(
            btc["uri"],
            format!(
                "bitcoin:{address}?amount={}",
                btc["amount"].as_str().unwrap().trim_end_matches('0')
            )
        );
        let sat = btc["amount_sat"].as_str().unwrap().parse().unwrap();
        (
            inv["id"].as_str().unwrap().to_owned(),
            address.script_pubkey(),
            sat,
        )
    }

    pub(crate) fn pay(&mut self, outputs: &[(ScriptBuf, u64)]) -> Transaction {
        let tx = self.wallet.pay(outputs).unwrap();
        broadcast(&self.node, &tx).unwrap();
        tx
    }

    pub(crate) fn mine(&self, n: u32) {
        self.node.mine(n, &[0xee; 20]).unwrap();
    }

    async fn get(&self, id: &str) -> Value {
        get_invoice(&self.client, &self.server.url, &self.key, id).await
    }

    pub(crate) async fn until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_for(&self.client, &self.server.url, &self.key, id, done).await
    }

    /// Every event of the merchant, newest first (all pages).
    async fn all_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/events?limit=100", self.server.url);
            if let Some(a) = &after {
                url.push_str(&format!("&starting_after={a}"));
            }
            let page: Value = self
                .client
                .get(url)
                .bearer_auth(&self.key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let data = page["data"].as_array().unwrap();
            after = data.last().map(|e| e["id"].as_str().unwrap().to_owned());
            out.extend(data.iter().cloned());
            if page["has_more"] != true {
                break;
            }
        }
        out
    }

    /// Event types of one invoice, oldest first.
    async fn events_of(&self, id: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .all_events()
            .await
            .iter()
            .filter(|e| e["data"]["object"]["id"] == id)
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        out.reverse();
        out
    }
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn status(inv: &Value) -> (&str, Option<&str>) {
    (inv["status"].as_str().unwrap(), inv["exception"].as_str())
}

fn payments(inv: &Value) -> Vec<(String, u64)> {
    inv["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["status"].as_str().unwrap().to_owned(),
                p["confirmations"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn count(events: &[String], kind: &str) -> usize {
    events.iter().filter(|e| *e == kind).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_payment_is_processing_from_the_mempool_and_settles_at_the_merchants_depth() {
    let mut env = BtcEnv::start(2, "wpkh").await;
    let (id, script, sat) = env.invoice("25.00", 900).await;
    assert_eq!(sat, 41667);
    env.pay(&[(script, sat)]);
    let inv = env.until(&id, |i| i["status"] == "processing").await;
    assert_eq!(payments(&inv), vec![("pending".to_owned(), 0)]);
    assert_eq!(inv["payments"][0]["amount_minor"], "41667");
    assert!(inv["payments"][0]["reference"]
        .as_str()
        .unwrap()
        .starts_with("btc:"));

    env.mine(1);
    let inv = env
        .until(&id, |i| i["payments"][0]["confirmations"] == 1)
        .await;
    assert_eq!(
        status(&inv),
        ("processing", None),
        "one block is not enough for this merchant"
    );
    env.mine(1);
    let inv = env.until(&id, |i| i["status"] == "settled").await;
    assert_eq!(status(&inv), ("settled", None));
    assert_eq!(payments(&inv), vec![("confirmed".to_owned(), 2)]);
    let events = env.events_of(&id).await;
    assert_eq!(
        events,
        [
            "invoice.created",
            "payment.pending",
            "invoice.processing",
            "payment.confirmed",
            "invoice.settled"
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn partial_top_up_over_and_late_payments_set_status_and_exception() {
    let mut env = BtcEnv::start(1, "sh-wpkh").await;
    // Created first, so that it has expired by the time the others are done.
    let (late_id, late_script, late_sat) = env.invoice("5.00", 60).await;
    let created = Instant::now();

    let (part_id, part_script, part_sat) = env.invoice("25.00", 900).await;
    let (over_id, over_script, over_sat) = env.invoice("10.00", 900).await;
    env.pay(&[
        (part_script.clone(), part_sat / 2),
        (over_script, over_sat * 2),
    ]);
    env.mine(1);
    let inv = env
        .until(&part_id, |i| i["payments"][0]["confirmations"] == 1)
        .await;
    assert_eq!(status(&inv), ("processing", Some("paid_partial")));
    let inv = env.until(&over_id, |i| i["status"] == "settled").await;
    assert_eq!(status(&inv), ("settled", Some("paid_over")));

    // The payer tops up what is missing: two payments add up to exactly the price.
    env.pay(&[(part_script, part_sat - part_sat / 2)]);
    env.mine(1);
    let inv = env.until(&part_id, |i| i["status"] == "settled").await;
    assert_eq!(status(&inv), ("settled", None));
    assert_eq!(payments(&inv).len(), 2);

    // After expiry, a full payment is recorded but is late: the invoice stays expired.
    let wait = Duration::from_secs(62).saturating_sub(created.elapsed());
    tokio::time::sleep(wait).await;
    env.until(&late_id, |i| i["status"] == "expired").await;
    env.pay(&[(late_script, late_sat)]);
    env.mine(1);
    let inv = env
        .until(&late_id, |i| i["payments"][0]["confirmations"] == 1)
        .await;
    assert_eq!(status(&inv), ("expired", Some("paid_late")));
}

/// Builds `len` blocks on top of the block at `fork_height`, the first holding `txs`, and gives
/// them to the node.
pub(crate) fn compete(
    node: &BitcoinNode,
    fork_height: u64,
    txs: Vec<Transaction>,
    len: usize,
    salt: u32,
) {
    let mut parent = block_at(node, fork_height).unwrap();
    let mut height = fork_height;
    let payout = ScriptBuf::new_p2wpkh(&relay_bitcoin::bitcoin::WPubkeyHash::from_byte_array(
        [0xdd; 20],
    ));
    let mut txs = Some(txs);
    for _ in 0..len {
        let block = build_block(
            &parent,
            height,
            txs.take().unwrap_or_default(),
            &payout,
            salt,
        )
        .unwrap();
        submit_block(node, &block).unwrap();
        parent = block;
        height += 1;
    }
    let tip = node.block_count().unwrap();
    assert_eq!(
        tip, height,
        "the node did not switch to the competing branch"
    );
}

use relay_bitcoin::bitcoin::hashes::Hash as _;

#[tokio::test(flavor = "multi_thread")]
async fn reorgs_revert_dropped_payments_and_reincluded_ones_are_confirmed_once() {
    let mut env = BtcEnv::start(1, "wpkh").await;
    let elsewhere = TestWallet::new(99).script();

    // 1-block reorg: the competing block holds a double spend of the payment.
    let (id, script, sat) = env.invoice("25.00", 900).await;
    let tx = env.pay(&[(script, sat)]);
    let fork = env.node.block_count().unwrap();
    env.mine(1);
    env.until(&id, |i| i["status"] == "settled").await;
    let double = env
        .wallet
        .double_spend(&tx, &[(elsewhere.clone(), sat)], 500)
        .unwrap();
    compete(&env.node, fork, vec![double], 2, 1);
    let inv = env
        .until(&id, |i| i["payments"][0]["status"] == "reverted")
        .await;
    assert_eq!(status(&inv), ("new", None), "{inv}");
    let events = env.events_of(&id).await;
    assert_eq!(count(&events, "payment.reverted"), 1, "{events:?}");

    // 3-block reorg, the same way.
    let (id3, script3, sat3) = env.invoice("30.00", 900).await;
    let tx3 = env.pay(&[(script3, sat3)]);
    let fork3 = env.node.block_count().unwrap();
    env.mine(3);
    env.until(&id3, |i| i["payments"][0]["confirmations"] == 3)
        .await;
    let double3 = env
        .wallet
        .double_spend(&tx3, &[(elsewhere, sat3)], 500)
        .unwrap();
    compete(&env.node, fork3, vec![double3], 4, 2);
    let inv = env
        .until(&id3, |i| i["payments"][0]["status"] == "reverted")
        .await;
    assert_eq!(status(&inv), ("new", None));

    // A reorg whose new branch re-includes the payment: confirmed again, credited once.
    let (id_re, script_re, sat_re) = env.invoice("12.00", 900).await;
    let tx_re = env.pay(&[(script_re, sat_re)]);
    let fork_re = env.node.block_count().unwrap();
    env.mine(1);
    env.until(&id_re, |i| i["status"] == "settled").await;
    compete(&env.node, fork_re, vec![tx_re], 2, 3);
    let inv = env
        .until(&id_re, |i| i["payments"][0]["confirmations"] == 2)
        .await;
    assert_eq!(status(&inv), ("settled", None));
    assert_eq!(payments(&inv), vec![("confirmed".to_owned(), 2)]);
    let events = env.events_of(&id_re).await;
    assert_eq!(count(&events, "payment.confirmed"), 1, "{events:?}");
    assert_eq!(count(&events, "invoice.settled"), 1, "{events:?}");
    assert_eq!(count(&events, "payment.reverted"), 0, "{events:?}");
}

/// One transaction with 3,000 outputs to one invoice address — 2,900 of 1,000 sat and 100 of
/// 600 sat dust — mined in the same block as another shop's invoice payment. The dust is
/// ignored, the invoice records its first 100 payments and is flagged, each step writes each
/// event kind once, and the other shop's invoice settles as usual. The figures (time to the other invoice's settlement,
/// the relay's memory) are printed for the benchmark notes.
#[tokio::test(flavor = "multi_thread")]
async fn an_output_flood_to_one_address_stays_bounded_and_other_invoices_settle() {
    let mut env = BtcEnv::start_shops(1, "wpkh", true).await;
    let (flood_id, flood_script, _) = env.invoice("25.00", 900).await;
    let other_key = env.other_key.clone().unwrap();
    let (code, other) = create_invoice(
        &env.client,
        &env.server.url,
        &other_key,
        "other-1",
        &json!({"amount": "10.00", "currency": "USD", "payment_methods": ["bitcoin"]}),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{other}");
    let other_id = other["id"].as_str().unwrap().to_owned();
    let (other_script, other_sat) = pay_to(&other);
    let mut outputs: Vec<(ScriptBuf, u64)> =
        (0..2900).map(|_| (flood_script.clone(), 1_000)).collect();
    outputs.extend((0..100).map(|_| (flood_script.clone(), 600)));
    let rss_before = env.server.rss_kib();
    env.pay(&outputs);
    env.pay(&[(other_script, other_sat)]);
    let start = std::time::Instant::now();
    env.mine(1);
    wait_for(&env.client, &env.server.url, &other_key, &other_id, |i| {
        i["status"] == "settled"
    })
    .await;
    let to_settle = start.elapsed();
    let flood = env.until(&flood_id, |i| i["payments_capped"] == true).await;
    let payments = flood["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 100, "the invoice recorded every output");
    assert!(payments.iter().all(|p| p["amount_minor"] == "1000"));
    assert_eq!(status(&flood), ("settled", Some("paid_over")));
    // Deeper blocks report new depths for the tracked outputs: still bounded.
    env.mine(5);
    env.until(&flood_id, |i| i["payments"][99]["confirmations"] == 6)
        .await;
    let events = env.events_of(&flood_id).await;
    assert!(events.len() <= 20, "{} events: {events:?}", events.len());
    assert_eq!(count(&events, "payment.pending"), 1, "{events:?}");
    let rss_after = env.server.rss_kib();
    eprintln!(
        "output flood: other invoice settled {to_settle:?} after its block; relay RSS {} MiB -> {} MiB",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after < rss_before + 200 * 1024,
        "memory grew by {} MiB",
        (rss_after - rss_before) / 1024
    );
    // The relay still answers, and new invoices still settle.
    let (id, script, sat) = env.invoice("5.00", 900).await;
    env.pay(&[(script, sat)]);
    env.mine(1);
    env.until(&id, |i| i["status"] == "settled").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_invoices_over_fifty_blocks_with_a_crash_are_each_credited_once() {
    let mut env = BtcEnv::start(1, "wpkh").await;
    let mut invoices = Vec::new();
    for chunk in 0..50 {
        let futs = (0..20).map(|i| {
            let amount = format!("{}.{:02}", 1 + chunk, i);
            let env = &env;
            async move { env.invoice(&amount, 3600).await }
        });
        invoices.extend(futures_join(futs).await);
    }
    assert_eq!(invoices.len(), 1000);
    for (block, chunk) in invoices.chunks(20).enumerate() {
        let outputs: Vec<_> = chunk.iter().map(|(_, s, sat)| (s.clone(), *sat)).collect();
        env.pay(&outputs);
        env.mine(1);
        if block == 24 {
            // SIGKILL while the watcher is working through blocks and the mempool.
            tokio::time::sleep(Duration::from_millis(150)).await;
            env.server.kill9();
        }
        if block == 34 {
            env.server = Server::start_with(env.dir.path(), crate::free_port(), &env.env).await;
        }
    }
    let start = Instant::now();
    let mut unsettled: BTreeMap<String, Value> = BTreeMap::new();
    for (id, _, _) in &invoices {
        loop {
            let inv = env.get(id).await;
            if inv["status"] == "settled" {
                assert_eq!(payments(&inv).len(), 1, "{inv}");
                assert_eq!(inv["exception"], Value::Null, "{inv}");
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                unsettled.insert(id.clone(), inv);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        unsettled.is_empty(),
        "{} invoices not settled, e.g. {:?}",
        unsettled.len(),
        unsettled.iter().next()
    );
    // Every payment confirmed exactly once across the crash.
    let confirmed = env
        .all_events()
        .await
        .iter()
        .filter(|e| e["type"] == "payment.confirmed")
        .count();
    assert_eq!(confirmed, 1000);
}

async fn futures_join<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    // Sequential awaits of already-created futures would not overlap; poll them together.
    let mut pending: Vec<_> = futs.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, f) in pending.iter_mut().enumerate() {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *f = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().map(Option::unwrap));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn replacement_and_taproot_need_bitcoin_core() {
    if std::env::var_os("BITCOIND_EXE").is_none_or(|v| v.is_empty()) {
        eprintln!(
            "SKIPPED replacement_and_taproot_need_bitcoin_core: bcoin 1.0.2 has neither RBF nor \
             taproot; set BITCOIND_EXE to a Bitcoin Core bitcoind to run it"
        );
        return;
    }
    let mut env = BtcEnv::start(1, "tr").await;
    assert_eq!(env.node.kind(), BitcoinImpl::BitcoinCore);
    // A payment to a taproot address settles.
    let (id, script, sat) = env.invoice("25.00", 900).await;
    assert!(script.is_p2tr());
    env.pay(&[(script, sat)]);
    env.mine(1);
    env.until(&id, |i| i["status"] == "settled").await;
    // A mempool payment replaced by a higher-fee conflicting transaction is `replaced`.
    let (id2, script2, sat2) = env.invoice("20.00", 900).await;
    let tx = env.pay(&[(script2, sat2)]);
    env.until(&id2, |i| i["status"] == "processing").await;
    let elsewhere = TestWallet::new(98).script();
    let replacement = env
        .wallet
        .double_spend(&tx, &[(elsewhere, sat2)], 5_000)
        .unwrap();
    broadcast(&env.node, &replacement).unwrap();
    let inv = env
        .until(&id2, |i| i["payments"][0]["status"] == "replaced")
        .await;
    assert_eq!(status(&inv), ("new", None));
}

#[test]
fn merchant_create_refuses_unusable_descriptors_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    // `merchant create` with these arguments fails; what it says.
    let refused = |args: &[&str]| {
        let out = Command::new(RELAY)
            .args(["merchant", "create", "--name", "x"])
            .args(args)
            .env("RELAY_DATA_DIR", dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for (descriptor, why) in [
        ("wpkh(xpub-nonsense/0/*)", "--btc-descriptor"),
        (
            &format!(
                "wpkh({})",
                descriptor(7, "wpkh")
                    .trim_start_matches("wpkh(")
                    .trim_end_matches("/0/*)")
            ) as &str,
            "not ranged",
        ),
    ] {
        let err = refused(&["--btc-descriptor", descriptor]);
        assert!(err.contains(why), "{descriptor}: {err}");
    }
    let err = refused(&[
        "--btc-descriptor",
        &descriptor(7, "wpkh"),
        "--btc-confirmations",
        "3",
    ]);
    assert!(err.contains("0, 1, 2 or 6"), "{err}");
    // The operator's liquidity pays a merchant paid on Ethereum: never on 0 confirmations.
    let err = refused(&[
        "--eth-payout",
        "0x00000000000000000000000000000000000000aa",
        "--settle-on-ethereum",
        "ETH",
        "--btc-confirmations",
        "0",
    ]);
    assert!(err.contains("0 confirmations"), "{err}");
}

/// Two merchants owe the same payer address a refund. One output to that address cannot say
/// whose wallet paid it (before: it paid the older refund, the other merchant's): neither is
/// marked paid until the merchant that paid names its transaction. A reorg that takes the
/// payment out puts the refund back to pending, and the transaction is gone from the chain.
#[tokio::test(flavor = "multi_thread")]
async fn a_refund_output_pays_the_merchant_that_names_it_and_a_reorg_takes_it_back() {
    use relay_core::ReceiveAddresses;
    let node = BitcoinNode::spawn().unwrap();
    let mut wallet = TestWallet::new(61);
    wallet.fund(&node, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shop = |name: &str, seed: u8| {
        merchant_create_with(
            dir.path(),
            name,
            &["--btc-descriptor", &descriptor(seed, "wpkh")],
        )["api_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (key_a, key_b) = (shop("shop a", 11), shop("shop b", 12));
    let env = vec![
        ("RELAY_BTC_RPC_URL", node.rpc_url_with_auth()),
        ("RELAY_BTC_POLL_MS", "100".to_owned()),
    ];
    let server = Server::start_with(dir.path(), crate::free_port(), &env).await;
    let client = reqwest::Client::new();
    let mut invoices = Vec::new();
    for key in [&key_a, &key_b] {
        let (status, inv) = create_invoice(
            &client,
            &server.url,
            key,
            &format!("r-{}", rand_id()),
            &json!({"amount": "25.00", "currency": "USD", "payment_methods": ["bitcoin"]}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        let tx = wallet.pay(&[pay_to(&inv)]).unwrap();
        broadcast(&node, &tx).unwrap();
        invoices.push(inv["id"].as_str().unwrap().to_owned());
    }
    node.mine(1, &[0xee; 20]).unwrap();
    for (key, id) in [(&key_a, &invoices[0]), (&key_b, &invoices[1])] {
        wait_for(&client, &server.url, key, id, |i| i["status"] == "settled").await;
    }
    let payer = relay_bitcoin::DescriptorAddresses::new(Network::Regtest)
        .derive(&descriptor(79, "wpkh"), 0)
        .unwrap();
    let refund = |key: &str, id: &str| {
        let (client, url) = (client.clone(), server.url.clone());
        let (key, id, address) = (key.to_owned(), id.to_owned(), payer.address.clone());
        async move {
            let r: Value = client
                .post(format!("{url}/v1/invoices/{id}/refunds"))
                .bearer_auth(&key)
                .header("Idempotency-Key", format!("rf-{id}"))
                .json(&json!({"amount": "0.0002", "bitcoin_address": address}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(r["status"], "pending", "{r}");
            r["id"].as_str().unwrap().to_owned()
        }
    };
    // Shop A asks first: before, any output to the address paid A's refund.
    let _refund_a = refund(&key_a, &invoices[0]).await;
    let refund_b = refund(&key_b, &invoices[1]).await;

    // Shop B's wallet pays its refund.
    let fork = node.block_count().unwrap();
    let payer_script = ScriptBuf::from_bytes(payer.script_pubkey.as_bytes().to_vec());
    let paid = wallet.pay(&[(payer_script, 20_000)]).unwrap();
    broadcast(&node, &paid).unwrap();
    let txid = paid.compute_txid().to_string();
    node.mine(1, &[0xee; 20]).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (key, id) in [(&key_a, &invoices[0]), (&key_b, &invoices[1])] {
        let inv = get_invoice(&client, &server.url, key, id).await;
        assert_eq!(inv["refunds"][0]["status"], "pending", "{inv}");
    }
    // Shop B names its transaction: its refund is paid, shop A's still owed.
    let r: Value = client
        .post(format!(
            "{}/v1/invoices/{}/refunds/{refund_b}/paid",
            server.url, invoices[1]
        ))
        .bearer_auth(&key_b)
        .json(&json!({"txid": txid}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["claimed_tx"], txid.as_str(), "{r}");
    node.mine(1, &[0xee; 20]).unwrap();
    let b = wait_for(&client, &server.url, &key_b, &invoices[1], |i| {
        i["refunds"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(b["refunds"][0]["tx"], txid.as_str());
    assert_eq!(b["payments"][0]["refunded_minor"], "20000");
    let a = get_invoice(&client, &server.url, &key_a, &invoices[0]).await;
    assert_eq!(a["refunds"][0]["status"], "pending", "{a}");
    assert!(node
        .rpc("gettxout", json!([txid, 0]))
        .is_ok_and(|o| !o.is_null()));

    // A reorg replaces the refund payment with a double spend elsewhere.
    let elsewhere = TestWallet::new(98).script();
    let double = wallet
        .double_spend(&paid, &[(elsewhere, 20_000)], 500)
        .unwrap();
    compete(&node, fork, vec![double], 4, 7);
    let b = wait_for(&client, &server.url, &key_b, &invoices[1], |i| {
        i["refunds"][0]["status"] == "pending"
    })
    .await;
    assert!(b["refunds"][0]["tx"].is_null(), "{b}");
    assert_eq!(b["payments"][0]["refunded_minor"], "0");
    assert!(node
        .rpc("gettxout", json!([txid, 0]))
        .is_ok_and(|o| o.is_null()));
}
