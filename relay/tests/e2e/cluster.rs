//! Several `relay serve` processes on one PostgreSQL, as a shop that outgrew one machine runs
//! them: any relay answers any request, each singleton role runs on one relay under a lease,
//! and a leader that dies (SIGKILL) or stalls (SIGSTOP) is replaced without a payment lost or
//! paid twice. Everything real: PostgreSQL, anvil with the escrow, localstripe, a bitcoin node.

use crate::webhooks::{start_receiver, Receiver};
use crate::{create_invoice, get_invoice, merchant_create_env, Server};
use relay_bitcoin::bitcoin::{Address, Network, ScriptBuf};
use relay_testnet::btc_wallet::{broadcast, TestWallet};
use relay_testnet::{Anvil, BitcoinNode, LocalStripe, Postgres};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GATEWAY_SECRET: &str = "whsec_e2e_cluster";
/// 25.00 USD at 2,500 USD/ETH.
const WEI_25_USD: u128 = 10_000_000_000_000_000;
/// Short leases keep the test quick: a dead leader is replaced within about this.
const LEASE_TTL_SECS: &str = "2";

/// Which relay (by process id) holds each role now, from the database.
async fn leaders(pg: &Postgres) -> BTreeMap<String, u32> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT role, holder FROM leases WHERE expires_at > now()")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(role, holder)| {
            // `host/pid/nonce`
            let pid = holder.split('/').nth(1).unwrap().parse().unwrap();
            (role, pid)
        })
        .collect()
}

/// Waits until every role in `roles` is held by a relay in `alive` (by pid).
async fn wait_for_leaders(pg: &Postgres, roles: &[&str], alive: &[u32]) -> BTreeMap<String, u32> {
    let start = Instant::now();
    loop {
        let held = leaders(pg).await;
        if roles
            .iter()
            .all(|r| held.get(*r).is_some_and(|pid| alive.contains(pid)))
        {
            return held;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "roles not taken over: {held:?} (alive {alive:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Cluster {
    pg: Postgres,
    anvil: Anvil,
    eth: relay::dev::DevEthereum,
    gw: LocalStripe,
    node: BitcoinNode,
    wallet: TestWallet,
    relays: Vec<Option<Server>>,
    key: String,
    client: reqwest::Client,
    receiver: Arc<Receiver>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` relays on one fresh database, with every rail, and one merchant paid on Ethereum
    /// (card and bitcoin payments settled there from the operator's liquidity) whose webhooks go
    /// to a receiver run by the test.
    async fn start(n: usize, roles: &[&str]) -> Cluster {
        let pg = Postgres::spawn().expect("PostgreSQL starts");
        let dir = tempfile::tempdir().unwrap();
        let rail = crate::ethereum::eth_rail(dir.path()).await;
        let gw = LocalStripe::spawn().unwrap();
        let node = BitcoinNode::spawn().unwrap();
        let mut wallet = TestWallet::new(61);
        wallet.fund(&node, 3).unwrap();
        let receiver = Arc::new(Receiver::default());
        let hooks = start_receiver(receiver.clone()).await;
        let mut env = rail.env;
        env.extend([
            ("RELAY_DATABASE_URL", pg.url()),
            ("RELAY_LEASE_TTL_SECS", LEASE_TTL_SECS.to_owned()),
            ("RELAY_STRIPE_API_BASE", gw.url()),
            (
                "RELAY_STRIPE_SECRET_KEY",
                LocalStripe::SECRET_KEY.to_owned(),
            ),
            ("RELAY_STRIPE_WEBHOOK_SECRET", GATEWAY_SECRET.to_owned()),
            ("RELAY_CARD_RECONCILE_SECS", "2".to_owned()),
            ("RELAY_BTC_RPC_URL", node.rpc_url_with_auth()),
            ("RELAY_BTC_POLL_MS", "100".to_owned()),
            (
                "RELAY_TREASURY_DESCRIPTOR",
                crate::bitcoin::descriptor(98, "wpkh"),
            ),
            ("RELAY_SETTLEMENT_MIN_CONFIRMATIONS", "1".to_owned()),
            ("RELAY_WEBHOOK_RETRY_BASE_MS", "200".to_owned()),
        ]);
        let m = merchant_create_env(
            dir.path(),
            "cluster shop",
            &[
                "--eth-payout",
                &rail.eth.merchant_payout,
                "--settle-on-ethereum",
                "ETH",
                "--webhook-url",
                &hooks,
            ],
            &env,
        );
        let mut relays = Vec::new();
        for i in 0..n {
            let data = dir.path().join(format!("relay-{i}"));
            let server = Server::start_with(&data, crate::free_port(), &env).await;
            // The gateway tells every relay; whichever records an event first, the others see it
            // was recorded (idempotency across relays).
            gw.register_webhook(
                &format!("relay-{i}"),
                &format!("{}/v1/gateways/stripe/webhook", server.url),
                GATEWAY_SECRET,
            )
            .unwrap();
            relays.push(Some(server));
            if i == 0 {
                // The first relay up takes every role.
                wait_for_leaders(&pg, roles, &[relays[0].as_ref().unwrap().pid()]).await;
            }
        }
        let c = Cluster {
            pg,
            anvil: rail.anvil,
            eth: rail.eth,
            gw,
            node,
            wallet,
            relays,
            key: m["api_key"].as_str().unwrap().to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            receiver,
            _dir: dir,
        };
        // The operator's liquidity for the settlements.
        crate::payouts::fund_escrow(&c.anvil, &c.eth, 20 * WEI_25_USD);
        c
    }

    fn alive(&self) -> Vec<&Server> {
        self.relays.iter().flatten().collect()
    }

    fn pids(&self) -> Vec<u32> {
        self.alive().iter().map(|s| s.pid()).collect()
    }

    /// SIGKILLs the relay with process id `pid`.
    fn kill(&mut self, pid: u32) {
        for slot in &mut self.relays {
            if slot.as_ref().is_some_and(|s| s.pid() == pid) {
                slot.take().unwrap().kill9();
                return;
            }
        }
        panic!("no relay {pid}");
    }

    /// A new invoice of `method`, created on the `n`-th live relay (round-robin).
    async fn invoice(&self, n: usize, method: &str) -> Value {
        let alive = self.alive();
        let server = alive[n % alive.len()];
        let (status, inv) = create_invoice(
            &self.client,
            &server.url,
            &self.key,
            &format!(
                "cluster-{n}-{method}-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ),
            &json!({"amount": "25.00", "currency": "USD", "payment_methods": [method]}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{inv}");
        inv
    }

    /// The payer pays `inv` on its one rail (through the gateway, anvil or the bitcoin node).
    fn pay(&mut self, inv: &Value) {
        let methods = &inv["payment_methods"];
        if let Some(pi) = methods["card"]["payment_intent"].as_str() {
            self.gw
                .post(
                    &format!("/v1/payment_intents/{pi}"),
                    &[("payment_method", "pm_card_visa")],
                )
                .unwrap();
            let paid = self
                .gw
                .post(&format!("/v1/payment_intents/{pi}/confirm"), &[])
                .unwrap();
            assert_eq!(paid["status"], "succeeded");
        } else if methods["bitcoin"].is_object() {
            let btc = &methods["bitcoin"];
            let script: ScriptBuf = Address::from_str(btc["address"].as_str().unwrap())
                .unwrap()
                .require_network(Network::Regtest)
                .unwrap()
                .script_pubkey();
            let sat = btc["amount_sat"].as_str().unwrap().parse().unwrap();
            let tx = self.wallet.pay(&[(script, sat)]).unwrap();
            broadcast(&self.node, &tx).unwrap();
            self.node.mine(1, &[0xee; 20]).unwrap();
        } else {
            let call = &methods["ethereum"]["call"];
            let args: Vec<&str> = call["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            self.anvil
                .send(
                    &self.eth.payer_key,
                    call["to"].as_str().unwrap(),
                    call["function"].as_str().unwrap(),
                    &args,
                    call["value"].as_str().unwrap(),
                )
                .unwrap();
        }
    }

    /// The invoice as any live relay shows it.
    async fn get(&self, id: &str) -> Value {
        get_invoice(&self.client, &self.alive()[0].url, &self.key, id).await
    }

    /// Waits until `inv` is settled and paid out: its deposit captured (Ethereum), or its
    /// settlement paid on Ethereum (card, bitcoin).
    async fn until_done(&self, inv: &Value) -> Value {
        let id = inv["id"].as_str().unwrap();
        let on_chain = inv["payment_methods"]["ethereum"].is_object();
        let start = Instant::now();
        loop {
            let now = self.get(id).await;
            let paid_out = if on_chain {
                now["payments"][0]["capture_tx"].is_string()
            } else {
                now["settlement"]["settlements"][0]["status"] == "paid"
            };
            if now["status"] == "settled" && paid_out {
                return now;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not settled: {now}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs_of(&self, event: &str, topic1: &str) -> usize {
        crate::ethereum::escrow_logs(&self.anvil, &self.eth, event, topic1)
    }

    /// Every event of the merchant, oldest first, from any live relay.
    async fn events(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/events?limit=100", self.alive()[0].url);
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
            all.extend(data.iter().cloned());
            if page["has_more"] != true {
                break;
            }
            after = data.last().map(|e| e["id"].as_str().unwrap().to_owned());
        }
        all.reverse();
        all
    }
}

/// Exactly once: each payment credited once, each Ethereum deposit captured once, each card and
/// bitcoin payment settled on Ethereum once.
fn assert_paid_once(c: &Cluster, done: &[Value]) {
    for inv in done {
        assert_eq!(inv["payments"].as_array().unwrap().len(), 1, "{inv}");
        if let Some(pid) = inv["payment_methods"]["ethereum"]["payment_id"].as_str() {
            assert_eq!(
                c.logs_of("PaymentCaptured(bytes32,uint256,uint256)", pid),
                1,
                "{inv}"
            );
        } else {
            let settlements = inv["settlement"]["settlements"].as_array().unwrap();
            assert_eq!(settlements.len(), 1, "{inv}");
            let sid = settlements[0]["id"].as_str().unwrap();
            assert_eq!(
                c.logs_of("Settled(bytes32,address,address,uint256,string)", sid),
                1,
                "{inv}"
            );
        }
    }
}

const ROLES: [&str; 5] = ["bitcoin", "ethereum", "expiry", "cards", "webhooks"];

/// Three relays take invoices round-robin, paid on all three rails; the relay leading the roles is
/// SIGKILLed just after the payments of a round are sent, and later the next leader too. Every
/// acknowledged invoice is intact, each payment is credited, captured or settled exactly once,
/// and every webhook reaches the merchant, in order per invoice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_relays_on_one_database_survive_two_leaders_killed() {
    let mut c = Cluster::start(3, &ROLES).await;
    // One Idempotency-Key sent to every relay at once: one invoice, the same answer everywhere.
    let body = json!({"amount": "9.99", "currency": "USD", "payment_methods": ["card"]});
    let sent: Vec<_> = c
        .alive()
        .iter()
        .map(|s| {
            let (client, url, key, body) =
                (c.client.clone(), s.url.clone(), c.key.clone(), body.clone());
            tokio::spawn(async move {
                create_invoice(&client, &url, &key, "same-key-everywhere", &body)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for s in sent {
        answers.push(s.await.unwrap());
    }
    let first = &answers[0].1;
    for (status, inv) in &answers {
        assert_eq!(*status, 200, "{inv}");
        assert_eq!(inv, first, "every relay replays the one invoice");
    }
    let mut created: Vec<Value> = vec![first.clone()];
    let mut done: Vec<Value> = Vec::new();
    let mut n = 0;
    for round in 0..3 {
        let mut invoices = Vec::new();
        for method in ["card", "bitcoin", "ethereum"] {
            invoices.push(c.invoice(n, method).await);
            n += 1;
        }
        for inv in &invoices {
            c.pay(inv);
        }
        if round > 0 {
            // The relay that leads (the Ethereum role's holder, and with it whatever else it
            // holds) dies with the payments in flight.
            let held = leaders(&c.pg).await;
            let leader = held["ethereum"];
            for (role, pid) in &held {
                if *pid == leader {
                    eprintln!("round {round}: killing relay {pid}, leader of {role}");
                }
            }
            c.kill(leader);
            let alive = c.pids();
            wait_for_leaders(&c.pg, &ROLES, &alive).await;
        }
        for inv in &invoices {
            done.push(c.until_done(inv).await);
        }
        created.extend(invoices);
    }
    assert_eq!(c.alive().len(), 1, "two relays were killed");

    // Every acknowledged invoice is there as acknowledged (its identity and terms).
    for inv in &created {
        let now = c.get(inv["id"].as_str().unwrap()).await;
        for field in ["id", "amount", "currency", "created_at", "payment_methods"] {
            assert_eq!(now[field], inv[field], "{field} of {}", inv["id"]);
        }
    }
    assert_paid_once(&c, &done);

    // Every event reaches the receiver, in order per invoice (a delivery cut off by a kill may
    // come twice: at least once, never out of order).
    let events = c.events().await;
    let start = Instant::now();
    let delivered = loop {
        let got = c.receiver.got.lock().unwrap().clone();
        let ids: BTreeSet<String> = got
            .iter()
            .filter(|g| g.answered == 200)
            .map(|g| g.event_id_header.clone())
            .collect();
        if events
            .iter()
            .all(|e| ids.contains(e["id"].as_str().unwrap()))
        {
            break got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of {} events delivered",
            ids.len(),
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stored: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &events {
        let invoice = e["data"]["object"]["id"].as_str().unwrap().to_owned();
        stored
            .entry(invoice)
            .or_default()
            .push(e["id"].as_str().unwrap().to_owned());
    }
    let mut arrived: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in delivered.iter().filter(|g| g.answered == 200) {
        let body: Value = serde_json::from_str(&g.body).unwrap();
        let invoice = body["data"]["object"]["id"].as_str().unwrap().to_owned();
        let list = arrived.entry(invoice).or_default();
        if !list.contains(&g.event_id_header) {
            list.push(g.event_id_header.clone());
        }
    }
    assert_eq!(arrived, stored, "webhooks in order per invoice");
}

/// A leader stopped (SIGSTOP) past its lease is replaced; the payments that arrive meanwhile are
/// settled by the new leader; woken up (SIGCONT), the old one writes nothing: no second capture,
/// and the chain watchers' positions stay where the new leader left them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_writes_nothing_once_it_lost_its_lease() {
    let mut c = Cluster::start(2, &ROLES).await;
    let first = c.invoice(0, "ethereum").await;
    c.pay(&first);
    let first = c.until_done(&first).await;
    let old = c.relays[0].as_ref().unwrap().pid();
    let new = c.relays[1].as_ref().unwrap().pid();
    assert_eq!(leaders(&c.pg).await["ethereum"], old);

    // Stopped, it is out of the rotation (it would not answer).
    let paused = c.relays[0].take().unwrap();
    paused.signal("STOP");
    wait_for_leaders(&c.pg, &ROLES, &[new]).await;
    // Empty blocks on both chains, read by the new leader: the old one, woken, would find the
    // block after its stale position empty and store that position, moving its watcher back.
    let before = chain_cursors(&c.pg).await;
    c.anvil.mine(2).unwrap();
    c.node.mine(2, &[0xee; 20]).unwrap();
    let start = Instant::now();
    while chain_cursors(&c.pg)
        .await
        .iter()
        .zip(&before)
        .any(|(now, then)| now == then)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new leader reads no blocks"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Payments the old leader never saw: settled by the new one.
    let mut late = Vec::new();
    for (n, method) in ["ethereum", "card", "bitcoin"].into_iter().enumerate() {
        let inv = c.invoice(n, method).await;
        c.pay(&inv);
        late.push(inv);
    }
    let mut done = vec![first];
    for inv in &late {
        done.push(c.until_done(inv).await);
    }
    let cursors = chain_cursors(&c.pg).await;

    // The old leader wakes up with its state from before the pause.
    paused.signal("CONT");
    c.relays[0] = Some(paused);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        chain_cursors(&c.pg).await,
        cursors,
        "the old leader moved a watcher back"
    );
    for inv in &done {
        let now = c.get(inv["id"].as_str().unwrap()).await;
        assert_eq!(&now, inv, "the old leader changed an invoice");
    }
    assert_paid_once(&c, &done);
    let held = leaders(&c.pg).await;
    assert!(held.values().all(|pid| *pid == new), "{held:?}");
    // And it still answers requests, as any relay does.
    let again = get_invoice(
        &c.client,
        &c.relays[0].as_ref().unwrap().url,
        &c.key,
        done[0]["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(again["status"], "settled");
}

async fn chain_cursors(pg: &Postgres) -> Vec<(String, Vec<u8>)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query_as("SELECT chain, cursor FROM chain_cursors ORDER BY chain")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}
