//! Risk controls against the real rails: a deposit from a sanctioned address held in the escrow
//! and voided back on rejection; a payer over a velocity limit held until approved, then
//! captured; declined cards blocked at the door; a card in review authorized only, then captured
//! or released at the gateway. Balances are read on anvil and at localstripe, never from the
//! relay alone.

use crate::card::card_env;
use crate::ethereum::EthEnv;
use crate::get_json;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn put_rules(client: &reqwest::Client, url: &str, key: &str, rules: Value) -> Value {
    let r = client
        .put(format!("{url}/v1/risk/rules"))
        .bearer_auth(key)
        .json(&json!({ "rules": rules }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn only_payment(inv: &Value) -> &Value {
    let p = inv["payments"].as_array().unwrap();
    assert_eq!(p.len(), 1, "{inv}");
    &p[0]
}

fn review_of(inv: &Value) -> String {
    only_payment(inv)["review"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no review: {inv}"))
        .to_owned()
}

/// `POST /v1/reviews/{review}/{verb}` with an empty body: the status and the answer.
async fn decide(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    review: &str,
    verb: &str,
) -> (u16, Value) {
    let r = client
        .post(format!("{url}/v1/reviews/{review}/{verb}"))
        .bearer_auth(key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A 25 USD Ethereum invoice paid by the payer, once its payment's review is open: its id, its
/// escrow payment id and the invoice.
async fn pay_into_review(env: &EthEnv) -> (String, String, Value) {
    let inv = env
        .invoice(json!({"amount": "25.00", "currency": "USD", "payment_methods": ["ethereum"]}))
        .await;
    let id = inv["id"].as_str().unwrap().to_owned();
    let payment_id = inv["payment_methods"]["ethereum"]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.pay(&inv);
    let inv = env
        .until(&id, |i| {
            i["payments"]
                .as_array()
                .is_some_and(|p| p.len() == 1 && p[0]["review"].is_object())
        })
        .await;
    (id, payment_id, inv)
}

/// Mines a few blocks and gives the operator time to act, then checks it did nothing.
async fn left_in_escrow(env: &EthEnv, payment_id: &str) {
    env.anvil.mine(3).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, captured, closed) = env.escrow_payment(payment_id);
    assert_eq!(
        (captured, closed),
        (0, false),
        "the deposit stays in the escrow"
    );
    assert_eq!(env.anvil.balance(&env.eth.merchant_payout).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_from_a_sanctioned_address_is_held_and_voided_back_when_rejected() {
    let lists = tempfile::tempdir().unwrap();
    let list = lists.path().join("sanctioned_addresses_ETH.txt");
    std::fs::write(&list, "0x1da5821544e25c636c1417ba96ade4cf6d2f9b5a\n").unwrap();
    let dir = lists.path().to_string_lossy().into_owned();
    let env = EthEnv::start(
        1,
        &[
            ("RELAY_SANCTIONS_DIR", dir.as_str()),
            ("RELAY_SANCTIONS_RELOAD_SECS", "1"),
        ],
    )
    .await;
    let (url, key, client) = (&env.server.url, &env.key, &env.client);
    let rules = get_json(client, url, key, "/v1/risk/rules").await;
    assert_eq!(
        rules["sanctions_lists"],
        json!([{"asset": "ETH", "addresses": 1}])
    );
    // The list is published again with the payer on it: the running relay reloads it.
    std::fs::write(
        &list,
        format!(
            "0x1da5821544e25c636c1417ba96ade4cf6d2f9b5a\n{}\n",
            env.eth.payer.to_uppercase().replace("0X", "0x")
        ),
    )
    .unwrap();
    let start = Instant::now();
    while get_json(client, url, key, "/v1/risk/rules").await["sanctions_lists"][0]["addresses"] != 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "list not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let before = env.anvil.balance(&env.eth.payer).unwrap();
    let (id, payment_id, inv) = pay_into_review(&env).await;
    let id = id.as_str();
    let p = only_payment(&inv);
    assert_eq!(p["risk"]["sanctioned"], true, "{p}");
    assert_eq!(p["risk"]["action"], "block");
    assert_eq!(p["risk"]["score"], 100);
    assert_eq!(p["risk"]["reasons"][0]["code"], "sanctioned");
    assert_eq!(p["held"], true);
    assert_eq!(
        p["review"]["deadline"],
        Value::Null,
        "never released by the clock"
    );
    assert_eq!(inv["in_review"], true);
    assert_ne!(inv["status"], "settled");
    left_in_escrow(&env, &payment_id).await;
    // The ledger shows the money held, not available to the merchant.
    let balances = get_json(client, url, key, "/v1/balances").await;
    let eth = balances["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "ETH")
        .unwrap();
    assert_eq!(eth["accounts"]["held"], "10000000000000000", "{eth}");
    assert_eq!(eth["accounts"]["available"], "0");
    assert_eq!(eth["balanced"], true);

    let review = review_of(&inv);
    let (status, body) = decide(client, url, key, &review, "approve").await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "review_sanctioned");
    left_in_escrow(&env, &payment_id).await;

    let rejected = decide(client, url, key, &review, "reject").await.1;
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    let inv = env
        .until(id, |i| only_payment(i)["status"] == "voided")
        .await;
    assert_eq!(inv["in_review"], false);
    // The payer has every wei back (less the gas of its own deposit); the merchant got nothing.
    let (_, captured, closed) = env.escrow_payment(&payment_id);
    assert_eq!((captured, closed), (0, true));
    assert_eq!(
        env.logs_of("PaymentVoided(bytes32,uint256)", &payment_id),
        1
    );
    assert_eq!(
        env.logs_of("PaymentCaptured(bytes32,uint256,uint256)", &payment_id),
        0
    );
    assert_eq!(env.anvil.balance(&env.eth.merchant_payout).unwrap(), 0);
    assert_eq!(env.anvil.balance(&env.eth.escrow).unwrap(), 0);
    let after = env.anvil.balance(&env.eth.payer).unwrap();
    assert!(
        before - after < 1_000_000_000_000_000,
        "the payer is down only gas: {before} -> {after}"
    );
    let events = env.events_of(id).await;
    assert!(events.contains(&"review.opened".to_owned()), "{events:?}");
    assert!(events.contains(&"review.closed".to_owned()), "{events:?}");
    assert!(events.contains(&"payment.voided".to_owned()), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_over_its_velocity_limit_is_held_until_approved_then_captured() {
    let env = EthEnv::start(1, &[]).await;
    let (url, key, client) = (&env.server.url, &env.key, &env.client);
    put_rules(
        client,
        url,
        key,
        json!([{"type": "velocity", "id": "one_a_day", "key": "eth_sender", "window_secs": 86400,
                "max_count": 1, "action": "review"}]),
    )
    .await;
    let body = json!({"amount": "25.00", "currency": "USD", "payment_methods": ["ethereum"]});
    // The first deposit is within the limit: captured as usual.
    let first = env.invoice(body.clone()).await;
    env.pay(&first);
    let first = env
        .until(first["id"].as_str().unwrap(), |i| {
            i["payments"][0]["capture_tx"].is_string()
        })
        .await;
    assert_eq!(only_payment(&first)["risk"]["action"], "allow");
    assert_eq!(only_payment(&first)["risk"]["score"], 0);
    let paid_once = env.anvil.balance(&env.eth.merchant_payout).unwrap();
    assert_eq!(paid_once, 10_000_000_000_000_000);

    // The second from the same sender goes to review, held in the escrow.
    let (id, payment_id, inv) = pay_into_review(&env).await;
    let id = id.as_str();
    let p = only_payment(&inv);
    assert_eq!(p["risk"]["action"], "review");
    assert_eq!(p["risk"]["reasons"][0]["rule"], "one_a_day");
    assert_eq!(p["risk"]["reasons"][0]["code"], "velocity_count");
    assert!(p["review"]["deadline"].is_string(), "{p}");
    assert_eq!(inv["status"], "processing");
    env.anvil.mine(3).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, captured, closed) = env.escrow_payment(&payment_id);
    assert_eq!((captured, closed), (0, false));
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap(),
        paid_once
    );
    let queue = get_json(client, url, key, "/v1/reviews").await;
    assert_eq!(queue["data"].as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(queue["data"][0]["decision"], "capture_or_void");

    let review = review_of(&inv);
    let approved = decide(client, url, key, &review, "approve").await.1;
    assert_eq!(approved["status"], "approved", "{approved}");
    let inv = env
        .until(id, |i| i["payments"][0]["capture_tx"].is_string())
        .await;
    assert_eq!(inv["status"], "settled");
    assert_eq!(inv["in_review"], false);
    let (_, captured, closed) = env.escrow_payment(&payment_id);
    assert_eq!((captured, closed), (10_000_000_000_000_000, true));
    assert_eq!(
        env.anvil.balance(&env.eth.merchant_payout).unwrap(),
        2 * paid_once
    );
    assert_eq!(
        get_json(client, url, key, "/v1/reviews").await["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// A card token for `number` at the gateway, as Stripe.js makes one.
fn card_token(gw: &relay_testnet::LocalStripe, number: &str) -> String {
    let token = gw
        .post(
            "/v1/tokens",
            &[
                ("card[number]", number),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2030"),
                ("card[cvc]", "123"),
            ],
        )
        .unwrap();
    token["id"].as_str().unwrap().to_owned()
}

/// The intent's charges at the gateway: (amount, captured).
fn charges(intent: &Value) -> Vec<(u64, bool)> {
    intent["charges"]["data"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| (c["amount"].as_u64().unwrap(), c["captured"] == true))
                .collect()
        })
        .unwrap_or_default()
}

async fn pay_on_page(client: &reqwest::Client, checkout: &str, token: &str) -> (u16, Value) {
    let r = client
        .post(format!("{checkout}/card"))
        .json(&json!({ "card_token": token }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_declines_from_one_card_block_the_fourth_attempt_at_the_door() {
    let env = card_env(true, 3600).await;
    let (url, key, client) = (&env.server.url, &env.key, &env.client);
    put_rules(
        client,
        url,
        key,
        json!([{"type": "declines", "id": "card_testing", "window_secs": 3600, "max": 3,
                "action": "block"}]),
    )
    .await;
    const DECLINED: &str = "4000000000000341";
    for n in 0..3 {
        let (id, _) = env.card_invoice("5.00").await;
        let inv = env.invoice(&id).await;
        let checkout = inv["checkout_url"].as_str().unwrap();
        let (status, body) = pay_on_page(client, checkout, &card_token(&env.gw, DECLINED)).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (402, &json!("card_declined")),
            "{n}: {body}"
        );
    }
    // The fourth attempt with the same card (a new token: the same fingerprint) never reaches
    // the gateway's confirmation.
    let (id, pi) = env.card_invoice("5.00").await;
    let inv = env.invoice(&id).await;
    let checkout = inv["checkout_url"].as_str().unwrap();
    let (status, body) = pay_on_page(client, checkout, &card_token(&env.gw, DECLINED)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "payment_blocked");
    let intent = env.gw.get(&format!("/v1/payment_intents/{pi}")).unwrap();
    assert_eq!(intent["status"], "requires_payment_method", "{intent}");
    assert!(intent["payment_method"].is_null(), "{intent}");
    assert_eq!(charges(&intent), vec![], "nothing was charged");
    // Another card pays the same invoice.
    let (status, body) =
        pay_on_page(client, checkout, &card_token(&env.gw, "4242424242424242")).await;
    assert_eq!((status, &body["status"]), (200, &json!("paid")), "{body}");
    let inv = env.invoice(&id).await;
    assert_eq!(inv["status"], "settled");
    assert_eq!(only_payment(&inv)["risk"]["action"], "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_in_review_is_authorized_only_then_captured_or_released() {
    // Reconciliation every second: how an authorization finished with 3-D Secure is learnt.
    let env = card_env(true, 1).await;
    let (url, key, client) = (&env.server.url, &env.key, &env.client);
    put_rules(
        client,
        url,
        key,
        json!([{"type": "amount_limit", "id": "big", "currency": "USD", "max": "10000",
                "action": "review"}]),
    )
    .await;
    const GOOD: &str = "4242424242424242";
    // Approved: captured at the gateway, the invoice settles.
    let (id, pi) = env.card_invoice("250.00").await;
    let checkout = env.invoice(&id).await["checkout_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = pay_on_page(client, &checkout, &card_token(&env.gw, GOOD)).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("in_review")),
        "{body}"
    );
    let intent = env.gw.get(&format!("/v1/payment_intents/{pi}")).unwrap();
    assert_eq!(intent["status"], "requires_capture", "{intent}");
    assert_eq!(intent["capture_method"], "manual");
    let inv = env.invoice(&id).await;
    assert_eq!(inv["status"], "processing");
    assert_eq!(inv["in_review"], true);
    let p = only_payment(&inv);
    assert_eq!(
        (&p["status"], &p["held"]),
        (&json!("pending"), &json!(true))
    );
    assert_eq!(p["risk"]["reasons"][0]["code"], "amount_limit");
    let review = review_of(&inv);
    let approved = decide(client, url, key, &review, "approve").await.1;
    assert_eq!(approved["status"], "approved", "{approved}");
    let intent = env.gw.get(&format!("/v1/payment_intents/{pi}")).unwrap();
    assert_eq!(intent["status"], "succeeded", "{intent}");
    assert_eq!(
        charges(&intent),
        vec![(25000, true)],
        "captured once, in full"
    );
    let inv = crate::card::wait_for(client, url, key, &id, |i| i["status"] == "settled").await;
    assert_eq!(only_payment(&inv)["status"], "confirmed");
    assert_eq!(inv["in_review"], false);

    // Rejected: the authorization is canceled, nothing is charged.
    let (id, pi) = env.card_invoice("300.00").await;
    let checkout = env.invoice(&id).await["checkout_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = pay_on_page(client, &checkout, &card_token(&env.gw, GOOD)).await;
    assert_eq!(status, 200);
    let review = review_of(&env.invoice(&id).await);
    let rejected = decide(client, url, key, &review, "reject").await.1;
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    let intent = env.gw.get(&format!("/v1/payment_intents/{pi}")).unwrap();
    assert_eq!(intent["status"], "canceled", "{intent}");
    assert_eq!(
        charges(&intent),
        vec![(30000, false)],
        "authorized, never captured"
    );
    let inv = env.invoice(&id).await;
    assert_eq!(only_payment(&inv)["status"], "voided");
    assert_ne!(inv["status"], "settled");
    // Approving it now is refused: nothing can capture a released authorization.
    let (status, _) = decide(client, url, key, &review, "approve").await;
    assert_eq!(status, 409);

    // A card whose bank asks for 3-D Secure: the page finishes it with Stripe.js; the
    // authorization, learnt from the gateway afterwards, is held for review with what the page's
    // door made of the card, and captured when approved.
    let (id, pi) = env.card_invoice("350.00").await;
    let checkout = env.invoice(&id).await["checkout_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) =
        pay_on_page(client, &checkout, &card_token(&env.gw, "4000002500003155")).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("requires_action")),
        "{body}"
    );
    let secret = body["client_secret"].as_str().unwrap();
    env.gw
        .post(
            &format!("/v1/payment_intents/{pi}/_authenticate"),
            &[("client_secret", secret), ("success", "true")],
        )
        .unwrap();
    let inv = crate::card::wait_for(client, url, key, &id, |i| i["in_review"] == true).await;
    let p = only_payment(&inv);
    assert_eq!(p["status"], "pending", "{p}");
    assert_eq!(p["risk"]["reasons"][0]["rule"], "big");
    let review = review_of(&inv);
    let (status, _) = decide(client, url, key, &review, "approve").await;
    assert_eq!(status, 200);
    let intent = env.gw.get(&format!("/v1/payment_intents/{pi}")).unwrap();
    assert_eq!(charges(&intent), vec![(35000, true)]);
    crate::card::wait_for(client, url, key, &id, |i| i["status"] == "settled").await;

    // A card charged without the page (straight at the gateway with the intent) is assessed
    // when the gateway reports it: held from the merchant, and refunded when rejected.
    let (id, pi) = env.card_invoice("400.00").await;
    env.pay(&pi, "pm_card_visa").unwrap();
    let inv = crate::card::wait_for(client, url, key, &id, |i| i["in_review"] == true).await;
    let p = only_payment(&inv);
    assert_eq!(
        (&p["status"], &p["held"]),
        (&json!("confirmed"), &json!(true))
    );
    assert_eq!(inv["status"], "processing", "not settled while held");
    let review = review_of(&inv);
    let rejected = decide(client, url, key, &review, "reject").await.1;
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    // (localstripe sends no `charge.refunded`: the gateway's own charge shows the refund.)
    let refunds = rejected["invoice"]["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{rejected}");
    assert_eq!(refunds[0]["amount_minor"], "40000");
    assert!(refunds[0]["gateway_refund"].is_string(), "{rejected}");
    let charge = &env.gw.get(&format!("/v1/payment_intents/{pi}")).unwrap()["charges"]["data"][0];
    assert_eq!(charge["amount_refunded"], 40000, "{charge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitcoin_payer_is_known_by_its_inputs_flagged_and_refunded_on_rejection() {
    use relay_bitcoin::bitcoin::{Address, Network};
    let mut env = crate::bitcoin::BtcEnv::start(1, "wpkh").await;
    let (url, key) = (env.server.url.clone(), env.key.clone());
    let client = env.client.clone();
    // The payer's address as the relay encodes it for the node's network (its inputs spend it).
    let payer = Address::from_script(&env.wallet.script(), Network::Regtest)
        .unwrap()
        .to_string();
    put_rules(
        &client,
        &url,
        &key,
        json!([
            {"type": "list", "id": "watched", "field": "address", "values": [payer.to_uppercase()], "action": "review"},
            {"type": "velocity", "id": "two_a_day", "key": "btc_input", "window_secs": 86400, "max_count": 1, "action": "review"}
        ]),
    )
    .await;
    let (first, script, sat) = env.invoice("10.00", 900).await;
    env.pay(&[(script, sat)]);
    env.mine(1);
    let inv = env.until(&first, |i| i["status"] == "settled").await;
    let p = only_payment(&inv);
    assert_eq!(p["risk"]["action"], "review", "{p}");
    assert_eq!(p["risk"]["reasons"][0]["rule"], "watched");
    assert_ne!(p["held"], true, "already the merchant's: flagged, not held");
    assert_eq!(inv["in_review"], true);
    // The second payment from the same inputs is over the velocity limit too.
    let (second, script, sat) = env.invoice("5.00", 900).await;
    env.pay(&[(script, sat)]);
    env.mine(1);
    let inv = env.until(&second, |i| i["status"] == "settled").await;
    let rules: Vec<&str> = only_payment(&inv)["risk"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["watched", "two_a_day"]);
    let queue = get_json(&client, &url, &key, "/v1/reviews").await;
    assert_eq!(queue["data"].as_array().unwrap().len(), 2, "{queue}");
    assert_eq!(queue["data"][0]["decision"], "flag_or_refund");

    // Rejected: a refund of the whole payment to the payer's address, for the merchant's wallet.
    let review = review_of(&inv);
    let (status, body) = decide(&client, &url, &key, &review, "reject").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("refund_address_required"))
    );
    let r = client
        .post(format!("{url}/v1/reviews/{review}/reject"))
        .bearer_auth(&key)
        .json(&json!({ "refund_address": payer }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let refunds = body["invoice"]["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{body}");
    assert_eq!(
        refunds[0]["amount_minor"],
        only_payment(&inv)["amount_minor"]
    );
    assert_eq!(refunds[0]["address"], payer.as_str());
    // Approving the first clears its flag.
    let first_review = review_of(&env.until(&first, |_| true).await);
    let (status, body) = decide(&client, &url, &key, &first_review, "approve").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("approved")),
        "{body}"
    );
    assert_eq!(
        get_json(&client, &url, &key, "/v1/reviews").await["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}
