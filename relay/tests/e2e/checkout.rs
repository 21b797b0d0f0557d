//! The checkout page in a real browser: Chromium driven over WebDriver (Debian's chromium and
//! chromedriver), against a real relay with a real bitcoin node. The page's QR code is decoded
//! from a screenshot, payments made by the test's own wallet turn the open page from partly paid
//! to processing to paid without a reload, it fits a phone's width, and it can be used with the
//! keyboard alone. Screenshots are kept in
//! `target/checkout-screenshots/`.

use crate::{create_invoice, get_invoice, merchant_create, merchant_create_with, Server};
use fantoccini::{Client, ClientBuilder, Locator};
use relay_bitcoin::bitcoin::{Address, Network, ScriptBuf};
use relay_testnet::browser::ChromeDriver;
use relay_testnet::btc_wallet::{broadcast, TestWallet};
use relay_testnet::{BitcoinNode, LocalStripe};
use serde_json::{json, Value};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Where the screenshots go: kept after the run, as artifacts.
fn shots() -> std::path::PathBuf {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/checkout-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn browser(driver: &ChromeDriver, width: u32, height: u32) -> Client {
    ClientBuilder::native()
        .capabilities(driver.capabilities(width, height, "en-US"))
        .connect(&driver.url())
        .await
        .expect("a Chromium session")
}

async fn shot(page: &Client, name: &str) {
    let png = page.screenshot().await.unwrap();
    std::fs::write(shots().join(name), png).unwrap();
}

/// The text of an element of the page.
async fn text_of(page: &Client, at: Locator<'_>) -> String {
    page.find(at).await.unwrap().text().await.unwrap()
}

/// The text of the page's status line, once it satisfies `done` (within 30 s).
async fn status_until(page: &Client, what: &str, done: impl Fn(&str) -> bool) -> String {
    status_within(page, what, Duration::from_secs(30), done).await
}

/// The text of the page's status line, once it satisfies `done` (within `limit`).
async fn status_within(
    page: &Client,
    what: &str,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let text = text_of(page, Locator::Id("status")).await;
        if done(&text) {
            return text;
        }
        assert!(
            start.elapsed() < limit,
            "the page never showed {what}: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Decodes the QR code in a PNG screenshot.
fn decode_qr(png_bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let luma = |x: usize, y: usize| -> u8 {
        let at = (y * w + x) * channels;
        match channels {
            1 | 2 => buf[at],
            _ => ((u16::from(buf[at]) + u16::from(buf[at + 1]) + u16::from(buf[at + 2])) / 3) as u8,
        }
    };
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, luma);
    let grids = img.detect_grids();
    assert!(!grids.is_empty(), "no QR code in the screenshot");
    grids[0].decode().expect("a readable QR code").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_page_follows_a_bitcoin_payment_in_a_browser_without_a_reload() {
    let driver = ChromeDriver::spawn().expect("chromedriver starts (scripts/setup.sh installs it)");
    let node = BitcoinNode::spawn().unwrap();
    let mut wallet = TestWallet::new(71);
    wallet.fund(&node, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = merchant_create_with(
        dir.path(),
        "Tea house",
        &["--btc-descriptor", &crate::bitcoin::descriptor(17, "wpkh")],
    );
    let key = m["api_key"].as_str().unwrap().to_owned();
    let env = [
        ("RELAY_BTC_RPC_URL", node.rpc_url_with_auth()),
        ("RELAY_BTC_POLL_MS", "100".to_owned()),
    ];
    let server = Server::start_with(dir.path(), crate::free_port(), &env).await;
    let client = reqwest::Client::new();
    let (status, inv) = create_invoice(
        &client,
        &server.url,
        &key,
        "checkout-1",
        &json!({"amount": "25.00", "currency": "USD", "description": "Oolong, 100 g",
            "payment_methods": ["bitcoin"], "bitcoin_address": "on_demand"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{inv}");
    assert_eq!(inv["payment_methods"]["bitcoin"]["address_on_demand"], true);

    // A phone: 390 × 844.
    let page = browser(&driver, 390, 844).await;
    page.goto(inv["checkout_url"].as_str().unwrap())
        .await
        .unwrap();
    // The address is made when the payer asks for it.
    page.find(Locator::Css("button.choose"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page.wait()
        .for_element(Locator::Css("#bitcoin figure.qr svg"))
        .await
        .unwrap();
    let inv = get_invoice(&client, &server.url, &key, inv["id"].as_str().unwrap()).await;
    // Opened afresh (the form brought the payer back at the bitcoin section).
    page.goto(inv["checkout_url"].as_str().unwrap())
        .await
        .unwrap();
    let btc = &inv["payment_methods"]["bitcoin"];
    let uri = btc["uri"].as_str().unwrap().to_owned();
    let sat: u64 = btc["amount_sat"].as_str().unwrap().parse().unwrap();
    let script: ScriptBuf = Address::from_str(btc["address"].as_str().unwrap())
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap()
        .script_pubkey();
    let h1 = text_of(&page, Locator::Css("h1")).await;
    assert_eq!(h1, "Pay Tea house");
    let fits: Value = page
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits[1], 390, "the page is 390 px wide");
    assert!(
        fits[0].as_u64().unwrap() <= 390,
        "horizontal scroll at 390 px: {fits}"
    );
    // The QR code, read back from the pixels, is the invoice's BIP21 link.
    let qr = page
        .find(Locator::Css("#bitcoin figure.qr"))
        .await
        .unwrap()
        .screenshot()
        .await
        .unwrap();
    std::fs::write(shots().join("qr.png"), &qr).unwrap();
    assert_eq!(decode_qr(&qr), uri);
    shot(&page, "fresh.png").await;
    // With the keyboard alone: Tab walks the rail's tab, then its copy buttons and the wallet
    // link; Enter on the tab goes to the rail's section. For a screen reader, the state is a
    // polite live region and the QR code an image with a name.
    let mut reached = Vec::new();
    for _ in 0..8 {
        page.active_element()
            .await
            .unwrap()
            .send_keys(&fantoccini::key::Key::Tab)
            .await
            .unwrap();
        let focused = page.active_element().await.unwrap();
        reached.push(focused.text().await.unwrap());
    }
    assert_eq!(reached[0], "Bitcoin", "{reached:?}");
    assert_eq!(
        reached.iter().filter(|t| *t == "Copy").count(),
        3,
        "{reached:?}"
    );
    assert!(
        reached.contains(&"Open in wallet".to_owned()),
        "{reached:?}"
    );
    let a11y: Value = page
        .execute(
            "return [document.querySelector('.state').getAttribute('aria-live'), \
             document.querySelector('figure.qr').getAttribute('role'), \
             document.querySelector('figure.qr').getAttribute('aria-label'), \
             document.documentElement.lang];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        a11y,
        json!(["polite", "img", "QR code of the payment link", "en"])
    );
    page.find(Locator::Css(".tabs a"))
        .await
        .unwrap()
        .send_keys(&fantoccini::key::Key::Enter)
        .await
        .unwrap();
    let hash: Value = page.execute("return location.hash;", vec![]).await.unwrap();
    assert_eq!(hash, json!("#bitcoin"));
    // A mark in the page's own memory: still there at the end means no reload happened.
    page.execute("window.relayMark = 42; return true;", vec![])
        .await
        .unwrap();

    // Half now: the page says what is still due.
    let half = sat.div_ceil(2);
    let tx = wallet.pay(&[(script.clone(), half)]).unwrap();
    broadcast(&node, &tx).unwrap();
    let partial = status_until(&page, "what is still due", |t| t.contains("still due")).await;
    assert!(partial.contains("12.50 USD"), "{partial}");
    shot(&page, "partial.png").await;

    // The page now asks for the rest on bitcoin: its amount, link and QR code, without a reload.
    let start = Instant::now();
    let rest_text = loop {
        let t = text_of(&page, Locator::Id("bitcoin-amount")).await;
        if t != btc["amount"].as_str().unwrap() {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the amount never changed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rest: u64 = relay_core::Amount::parse_decimal(&rest_text, &relay_core::Asset::btc())
        .unwrap()
        .0
        .to::<u64>();
    assert!(
        rest.abs_diff(sat - half) <= 1,
        "{rest} of {sat} after {half}"
    );
    let rest_uri = text_of(&page, Locator::Id("bitcoin-uri")).await;
    assert!(
        rest_uri.ends_with(&format!("amount={}", rest_text.trim_end_matches('0'))),
        "{rest_uri}"
    );
    let qr = page
        .find(Locator::Css("#bitcoin figure.qr"))
        .await
        .unwrap()
        .screenshot()
        .await
        .unwrap();
    assert_eq!(decode_qr(&qr), rest_uri);

    // The rest, as the page asks: processing until it is confirmed, then paid, exactly.
    let tx = wallet.pay(&[(script.clone(), rest)]).unwrap();
    broadcast(&node, &tx).unwrap();
    status_until(&page, "confirmations", |t| {
        t.contains("0 of 1 confirmations")
    })
    .await;
    shot(&page, "processing.png").await;
    node.mine(1, &[0xee; 20]).unwrap();
    status_until(&page, "paid", |t| t.contains("Paid")).await;
    shot(&page, "settled.png").await;
    let paid = get_invoice(&client, &server.url, &key, inv["id"].as_str().unwrap()).await;
    assert_eq!(paid["status"], "settled", "{paid}");
    assert!(paid["exception"].is_null(), "paid exactly: {paid}");
    let mark: Value = page
        .execute("return window.relayMark || null;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, json!(42), "the page was reloaded");
    // It heard over Server-Sent Events, without falling back to polling.
    let requests = |route: &str| {
        let (client, url) = (client.clone(), server.url.clone());
        let route = route.to_owned();
        async move {
            let text = client
                .get(format!("{url}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .filter(|l| {
                    l.starts_with("relay_http_requests_total")
                        && l.contains(&format!("route=\"{route}\""))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    assert!(requests("/pay/{token}/events").await >= 1.0);
    assert_eq!(requests("/pay/{token}/payment_request").await, 0.0);

    // In Simplified Chinese.
    page.goto(&format!(
        "{}?lang=zh-CN",
        inv["checkout_url"].as_str().unwrap()
    ))
    .await
    .unwrap();
    let h1 = text_of(&page, Locator::Css("h1")).await;
    assert_eq!(h1, "向 Tea house 付款");
    let status = text_of(&page, Locator::Id("status")).await;
    assert_eq!(status, "付款完成，谢谢！");
    shot(&page, "settled-zh-CN.png").await;
    page.close().await.unwrap();
}

/// Types a card into the form localstripe's Stripe.js mounted on the page, and sends it.
async fn pay_with_card(page: &Client, number: &str) {
    for (field, value) in [
        ("number", number),
        ("exp_month", "12"),
        ("exp_year", "30"),
        ("cvc", "123"),
        ("postal_code", "75001"),
    ] {
        let input = page
            .find(Locator::Css(&format!(
                "#card-element input[placeholder={field}]"
            )))
            .await
            .unwrap();
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
    }
    page.find(Locator::Id("card-pay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The card message under the form, once there is one.
async fn card_message(page: &Client) -> String {
    let start = Instant::now();
    loop {
        let text = text_of(page, Locator::Id("card-message")).await;
        if !text.is_empty() {
            return text;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no card message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_link_leads_to_a_card_paid_on_the_checkout_page_and_an_unpaid_page_expires() {
    const SECRET: &str = "whsec_e2e_checkout";
    let driver = ChromeDriver::spawn().expect("chromedriver starts (scripts/setup.sh installs it)");
    let gw = LocalStripe::spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = merchant_create(dir.path(), "Card café");
    let key = m["api_key"].as_str().unwrap().to_owned();
    let env = [
        ("RELAY_STRIPE_API_BASE", gw.url()),
        (
            "RELAY_STRIPE_SECRET_KEY",
            LocalStripe::SECRET_KEY.to_owned(),
        ),
        ("RELAY_STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("RELAY_STRIPE_PUBLISHABLE_KEY", "pk_test_e2e".to_owned()),
        (
            "RELAY_STRIPE_JS_URL",
            format!("{}/js.stripe.com/v3/", gw.url()),
        ),
    ];
    let server = Server::start_with(dir.path(), crate::free_port(), &env).await;
    gw.register_webhook(
        "relay",
        &format!("{}/v1/gateways/stripe/webhook", server.url),
        SECRET,
    )
    .unwrap();
    let client = reqwest::Client::new();
    let create = |idem: &'static str, body: Value| {
        let (client, url, key) = (client.clone(), server.url.clone(), key.clone());
        async move {
            let (status, inv) = create_invoice(&client, &url, &key, idem, &body)
                .await
                .unwrap();
            assert_eq!(status, 200, "{inv}");
            inv
        }
    };
    // One that nobody will pay, expiring in a minute; its page is looked at last.
    let soon = create(
        "soon",
        json!({"amount": "3.00", "currency": "USD", "expires_in": 60, "payment_methods": ["card"]}),
    )
    .await;
    // The paid one comes from a single-use payment link the merchant shared.
    let link: Value = client
        .post(format!("{}/v1/payment_links", server.url))
        .bearer_auth(&key)
        .json(
            &json!({"amount": "25.00", "currency": "USD", "description": "Flat white",
            "payment_methods": ["card"], "reusable": false}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let link_url = link["url"].as_str().expect("a link url").to_owned();
    let refused = create(
        "card-declined",
        json!({"amount": "4.00", "currency": "USD", "payment_methods": ["card"]}),
    )
    .await;

    // A declined card: the payer is told, nothing is charged. (localstripe cannot confirm a
    // PaymentIntent again after a decline, as Stripe can, so the next card is tried on another
    // invoice.)
    let page = browser(&driver, 390, 844).await;
    page.goto(refused["checkout_url"].as_str().unwrap())
        .await
        .unwrap();
    // localstripe's Stripe.js mounts its fields into the page's form.
    page.wait()
        .for_element(Locator::Css("#card-element input[placeholder=number]"))
        .await
        .unwrap();
    let fits: Value = page
        .execute("return document.documentElement.scrollWidth;", vec![])
        .await
        .unwrap();
    assert!(fits.as_u64().unwrap() <= 390, "horizontal scroll: {fits}");
    shot(&page, "card-form.png").await;
    pay_with_card(&page, "4000000000000341").await;
    let said = card_message(&page).await;
    assert!(said.contains("declined"), "{said}");
    let after = get_invoice(&client, &server.url, &key, refused["id"].as_str().unwrap()).await;
    assert_eq!(after["status"], "new", "{after}");
    assert_eq!(
        after["payments"].as_array().map_or(0, Vec::len),
        0,
        "{after}"
    );
    shot(&page, "card-declined.png").await;

    // Opening the link: an invoice, and its checkout page.
    page.goto(&link_url).await.unwrap();
    let checkout = page.current_url().await.unwrap().to_string();
    assert!(checkout.contains("/pay/cs_"), "{checkout}");
    page.wait()
        .for_element(Locator::Css("#card-element input[placeholder=number]"))
        .await
        .unwrap();
    let newest: Value = client
        .get(format!("{}/v1/invoices?limit=1", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let inv = &newest["data"][0];
    assert_eq!(inv["checkout_url"], checkout.as_str());
    assert_eq!(inv["description"], "Flat white");
    let id = inv["id"].as_str().unwrap();
    let intent = inv["payment_methods"]["card"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_owned();
    // A card whose bank asks for 3-D Secure: Stripe.js shows the challenge, the payer completes
    // it, and the open page turns to paid without a reload.
    pay_with_card(&page, "4000002500003155").await;
    let complete = page
        .wait()
        .for_element(Locator::XPath("//button[text()='Complete authentication']"))
        .await
        .unwrap();
    complete.click().await.unwrap();
    status_until(&page, "paid", |t| t.contains("Paid")).await;
    shot(&page, "card-paid.png").await;

    // Charged once, the invoice's amount, on the invoice's own PaymentIntent.
    let pi = gw.get(&format!("/v1/payment_intents/{intent}")).unwrap();
    assert_eq!(pi["status"], "succeeded", "{pi}");
    assert_eq!(pi["amount"], 2500);
    // (localstripe lists an intent's charges on the intent, not by a filter on /v1/charges.)
    let charges = &pi["charges"];
    let succeeded = charges["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "succeeded")
        .count();
    assert_eq!(succeeded, 1, "{charges}");
    let paid = get_invoice(&client, &server.url, &key, id).await;
    assert_eq!(paid["status"], "settled", "{paid}");
    assert_eq!(paid["payments"].as_array().unwrap().len(), 1, "{paid}");

    // The single-use link, opened again, goes back to the paid invoice: no second invoice.
    page.goto(&link_url).await.unwrap();
    assert_eq!(page.current_url().await.unwrap().as_str(), checkout);
    status_until(&page, "paid", |t| t.contains("Paid")).await;

    // Once paid, a second card for the same page is refused before the gateway is asked: the
    // payer cannot pay twice.
    let token = gw
        .post(
            "/v1/tokens",
            &[
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2030"),
                ("card[cvc]", "123"),
            ],
        )
        .unwrap();
    let again = client
        .post(format!("{checkout}/card"))
        .json(&json!({"card_token": token["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invoice_not_open");
    let pi = gw.get(&format!("/v1/payment_intents/{intent}")).unwrap();
    assert_eq!(pi["amount"], 2500);

    // The page nobody paid turns to expired by itself, and offers nothing to pay any more.
    page.goto(soon["checkout_url"].as_str().unwrap())
        .await
        .unwrap();
    let status = status_within(&page, "expired", Duration::from_secs(90), |t| {
        t.contains("expired")
    })
    .await;
    assert_eq!(status, "This payment request has expired");
    let form_hidden: Value = page
        .execute(
            "var f = document.getElementById('card-form'); return !f || f.offsetParent === null;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(form_hidden, json!(true));
    shot(&page, "expired.png").await;
    page.close().await.unwrap();
}
