//! The checkout page in a real browser: Chromium driven over WebDriver (Debian's chromium and
//! chromedriver), against a real relay with a real bitcoin node. The page's QR code is decoded
//! from a screenshot, payments made by the test's own wallet turn the open page from partly paid
//! to processing to paid without a reload, it fits a phone's width, and it can be used with the
//! keyboard alone. Screenshots are kept in
//! `target/checkout-screenshots/`.

use crate::{create_invoice, merchant_create_with, Server};
use fantoccini::{Client, ClientBuilder, Locator};
use relay_bitcoin::bitcoin::{Address, Network, ScriptBuf};
use relay_testnet::browser::ChromeDriver;
use relay_testnet::btc_wallet::{broadcast, TestWallet};
use relay_testnet::BitcoinNode;
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

/// The text of the page's status line, once it satisfies `done`.
async fn status_until(page: &Client, what: &str, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = text_of(page, Locator::Id("status")).await;
        if done(&text) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
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
            "payment_methods": ["bitcoin"]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{inv}");
    let btc = &inv["payment_methods"]["bitcoin"];
    let uri = btc["uri"].as_str().unwrap().to_owned();
    let sat: u64 = btc["amount_sat"].as_str().unwrap().parse().unwrap();
    let script: ScriptBuf = Address::from_str(btc["address"].as_str().unwrap())
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap()
        .script_pubkey();

    // A phone: 390 × 844.
    let page = browser(&driver, 390, 844).await;
    page.goto(inv["checkout_url"].as_str().unwrap())
        .await
        .unwrap();
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

    // The rest: processing until it is confirmed, then paid.
    let tx = wallet.pay(&[(script.clone(), sat - half)]).unwrap();
    broadcast(&node, &tx).unwrap();
    status_until(&page, "confirmations", |t| {
        t.contains("0 of 1 confirmations")
    })
    .await;
    shot(&page, "processing.png").await;
    node.mine(1, &[0xee; 20]).unwrap();
    status_until(&page, "paid", |t| t.contains("Paid")).await;
    shot(&page, "settled.png").await;
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
