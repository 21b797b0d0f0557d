//! `relay dev`: a whole local deployment in one command — anvil, a bitcoin regtest node and the
//! localstripe card gateway on free loopback ports, a demo merchant, and the relay serving on them.
//! Ctrl-C stops the relay and every process it started.

use crate::config::Config;
use crate::{merchant, server};
use anyhow::{Context, Result};
use relay_testnet::btc_wallet::{broadcast, TestWallet};
use relay_testnet::Testnet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// The demo merchant's receive descriptor: a fixed regtest key (its private half is not used by
/// the relay, which only derives addresses from the public key).
fn demo_descriptor() -> String {
    use relay_bitcoin::bitcoin::bip32::{Xpriv, Xpub};
    use relay_bitcoin::bitcoin::secp256k1::Secp256k1;
    let xprv = Xpriv::new_master(
        relay_bitcoin::bitcoin::Network::Regtest,
        b"relay dev demo merchant seed....",
    )
    .expect("a valid seed");
    format!("wpkh({}/0/*)", Xpub::from_priv(&Secp256k1::new(), &xprv))
}

/// The operator's treasury descriptor in dev: where bitcoin invoices of merchants paid on
/// Ethereum are paid (watch-only, like a merchant's).
fn dev_treasury_descriptor() -> String {
    use relay_bitcoin::bitcoin::bip32::{Xpriv, Xpub};
    use relay_bitcoin::bitcoin::secp256k1::Secp256k1;
    let xprv = Xpriv::new_master(
        relay_bitcoin::bitcoin::Network::Regtest,
        b"relay dev operator treasury seed",
    )
    .expect("a valid seed");
    format!("wpkh({}/0/*)", Xpub::from_priv(&Secp256k1::new(), &xprv))
}

/// The dev escrow's cap on capture fees (10 %).
pub const DEV_MAX_FEE_BPS: u16 = 1000;

/// Ether the dev operator puts into the escrow's liquidity for cross-rail settlements.
const DEV_LIQUIDITY_ETH: u64 = 100;

/// The dev faucet: a funded payer wallet on the regtest node, reachable over loopback HTTP, so a
/// developer can pay an invoice's BIP21 URI with one `curl` (bcoin runs without a wallet).
struct Faucet {
    testnet: Arc<Testnet>,
    wallet: Mutex<TestWallet>,
}

async fn faucet_pay(
    axum::extract::State(f): axum::extract::State<Arc<Faucet>>,
    body: String,
) -> Result<String, (axum::http::StatusCode, String)> {
    let bad = |m: String| (axum::http::StatusCode::BAD_REQUEST, m + "\n");
    let uri = body.trim().trim_matches('\'').to_owned();
    let rest = uri
        .strip_prefix("bitcoin:")
        .ok_or_else(|| bad("expected a bitcoin: URI".into()))?;
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    let amount = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("amount="))
        .ok_or_else(|| bad("the URI has no amount".into()))?;
    let btc = relay_core::AssetBook::default()
        .get("BTC")
        .map_err(|e| bad(e.to_string()))?
        .clone();
    let sat = relay_core::Amount::parse_decimal(amount, &btc).map_err(|e| bad(e.to_string()))?;
    let sat = u64::try_from(sat.0).map_err(|_| bad("amount too large".into()))?;
    let script = relay_bitcoin::bitcoin::Address::from_str(address)
        .map_err(|e| bad(format!("bad address: {e}")))?
        .assume_checked()
        .script_pubkey();
    let f2 = f.clone();
    tokio::task::spawn_blocking(move || {
        let tx = f2
            .wallet
            .lock()
            .map_err(|_| anyhow::anyhow!("faucet poisoned"))?
            .pay(&[(script, sat)])?;
        broadcast(&f2.testnet.bitcoin, &tx)
    })
    .await
    .map_err(|e| bad(e.to_string()))?
    .map(|txid| format!("{{\"txid\":\"{txid}\",\"amount_sat\":{sat}}}\n"))
    .map_err(|e| bad(format!("{e:#}")))
}

async fn faucet_mine(
    axum::extract::State(f): axum::extract::State<Arc<Faucet>>,
    body: String,
) -> Result<String, (axum::http::StatusCode, String)> {
    let (n, to) = mine_request(&body).map_err(|e| (axum::http::StatusCode::BAD_REQUEST, e))?;
    tokio::task::spawn_blocking(move || {
        f.testnet.bitcoin.mine(n, &to)?;
        f.testnet.bitcoin.block_count()
    })
    .await
    .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map(|h| format!("{{\"height\":{h}}}\n"))
    .map_err(|e| {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e:#}"),
        )
    })
}

/// A faucet mining request, `N` or `N ADDRESS`: how many blocks (1 to 100), and the witness
/// program their coinbase pays — a regtest P2WPKH address as the relay and Bitcoin Core spell it
/// (`bcrt1q…`; bcoin's own RPC wants its `rb1q…` form), or the faucet's own.
fn mine_request(body: &str) -> Result<(u32, [u8; 20]), String> {
    let mut words = body.split_whitespace();
    let n = match words.next() {
        None => 1,
        Some(w) => w
            .parse::<u32>()
            .map_err(|_| format!("{w:?} is not a number of blocks"))?
            .clamp(1, 100),
    };
    let Some(address) = words.next() else {
        return Ok((n, [0xee; 20]));
    };
    let script = address
        .parse::<relay_bitcoin::bitcoin::Address<_>>()
        .ok()
        .and_then(|a| {
            a.require_network(relay_bitcoin::bitcoin::Network::Regtest)
                .ok()
        })
        .map(|a| a.script_pubkey())
        .ok_or_else(|| format!("{address:?} is not a regtest address"))?;
    if !script.is_p2wpkh() {
        return Err(format!(
            "{address:?} is not a P2WPKH address (bcrt1q…, 20-byte program): the faucet mines to those only"
        ));
    }
    let mut program = [0u8; 20];
    program.copy_from_slice(&script.as_bytes()[2..22]);
    Ok((n, program))
}

/// Rates `relay dev` uses unless `RELAY_RATES` says otherwise.
pub const DEV_RATES: &str =
    "BTC/USD=60000,ETH/USD=3000,BTC/EUR=55000,ETH/EUR=2750,DUSD/USD=1,DUSD/EUR=0.92";

/// The Ethereum side of the dev testnet: the deployed escrow and test token, the relay's operator
/// key, and a funded payer account for `cast send`.
pub struct DevEthereum {
    pub escrow: String,
    pub token: String,
    pub operator_key: String,
    pub operator: String,
    pub fee_recipient: String,
    pub payer_key: String,
    pub payer: String,
    pub merchant_payout: String,
    /// The payout address of `relay dev`'s second merchant, paid on Ethereum for everything.
    pub bridge_payout: String,
}

fn random_key() -> relay_ethereum::alloy::signers::local::PrivateKeySigner {
    relay_ethereum::alloy::signers::local::PrivateKeySigner::random()
}

/// Deploys the escrow (operated by a fresh key) and a 6-decimal test dollar, funds a payer with
/// ether and test dollars, on the given anvil.
pub async fn deploy_dev_contracts(anvil: &relay_testnet::Anvil) -> Result<DevEthereum> {
    use relay_ethereum::alloy::primitives::U256;
    let operator = random_key();
    let payer = random_key();
    let fee_recipient = random_key().address();
    let merchant = random_key().address();
    let bridge = random_key().address();
    let ether = 10u128.pow(18);
    for who in [operator.address(), payer.address()] {
        anvil.set_balance(&format!("{who:#x}"), 1000 * ether)?;
    }
    let url = anvil.url();
    let escrow = relay_ethereum::deploy::deploy_escrow(
        &url,
        &operator,
        relay_ethereum::deploy::EscrowRoles {
            owner: operator.address(),
            operator: operator.address(),
            fee_recipient,
            treasury: operator.address(),
            max_fee_bps: DEV_MAX_FEE_BPS,
            change_delay_secs: 2 * 24 * 3600,
        },
    )
    .await?;
    let token = relay_ethereum::deploy::deploy_test_token(
        &url,
        &operator,
        "Dev Dollar",
        "DUSD",
        6,
        &[(
            payer.address(),
            U256::from(1_000_000u64) * U256::from(1_000_000u64),
        )],
    )
    .await?;
    let hex_key = |k: &relay_ethereum::alloy::signers::local::PrivateKeySigner| {
        format!("0x{}", relay_ethereum::alloy::hex::encode(k.to_bytes()))
    };
    Ok(DevEthereum {
        escrow: format!("{escrow:#x}"),
        token: format!("{token:#x}"),
        operator_key: hex_key(&operator),
        operator: format!("{:#x}", operator.address()),
        fee_recipient: format!("{fee_recipient:#x}"),
        payer_key: hex_key(&payer),
        payer: format!("{:#x}", payer.address()),
        merchant_payout: format!("{merchant:#x}"),
        bridge_payout: format!("{bridge:#x}"),
    })
}

/// Creates the demo invoice and a demo payment link through the relay's own API, once it
/// answers, and returns the invoice's checkout URL and the link's URL.
async fn demo_checkout(
    url: &str,
    key: &str,
    serving: &tokio::task::JoinHandle<Result<()>>,
) -> Result<(String, String)> {
    let client = reqwest::Client::new();
    let start = std::time::Instant::now();
    while client.get(format!("{url}/readyz")).send().await.is_err() {
        if serving.is_finished() || start.elapsed() > std::time::Duration::from_secs(30) {
            anyhow::bail!("the relay did not start");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let inv: serde_json::Value = client
        .post(format!("{url}/v1/invoices"))
        .bearer_auth(key)
        .header("Idempotency-Key", "dev-demo-invoice")
        .json(
            &serde_json::json!({"amount": "25.00", "currency": "USD", "description": "Demo order"}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let link: serde_json::Value = client
        .post(format!("{url}/v1/payment_links"))
        .bearer_auth(key)
        .header("Idempotency-Key", "dev-demo-link")
        .json(&serde_json::json!({"amount": "4.50", "currency": "USD",
            "description": "Demo coffee", "reusable": true}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let checkout = inv["checkout_url"]
        .as_str()
        .map(str::to_owned)
        .context("the demo invoice has no checkout URL")?;
    let link = link["url"]
        .as_str()
        .map(str::to_owned)
        .context("the demo payment link has no URL")?;
    Ok((checkout, link))
}

pub async fn run(listen: Option<SocketAddr>, data_dir: Option<PathBuf>) -> Result<()> {
    let testnet = tokio::task::spawn_blocking(Testnet::start)
        .await?
        .context("cannot start the local testnet (run `make run`, which installs the tools)")?;
    let testnet = Arc::new(testnet);
    let faucet_wallet = {
        let t = testnet.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = TestWallet::new(0x5a);
            w.fund(&t.bitcoin, 5).map(|()| w)
        })
        .await?
        .context("funding the dev faucet on the regtest node")?
    };
    let faucet = Arc::new(Faucet {
        testnet: testnet.clone(),
        wallet: Mutex::new(faucet_wallet),
    });
    let faucet_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let faucet_url = format!("http://{}", faucet_listener.local_addr()?);
    let faucet_task = tokio::spawn(async move {
        let router = axum::Router::new()
            .route("/bitcoin/pay", axum::routing::post(faucet_pay))
            .route("/bitcoin/mine", axum::routing::post(faucet_mine))
            .with_state(faucet);
        let _ = axum::serve(faucet_listener, router).await;
    });
    let scratch = tempfile::tempdir()?;
    let mut env: Vec<(String, String)> = vec![("RELAY_RATES".into(), DEV_RATES.into())];
    env.extend(std::env::vars());
    let mut config = Config::load(None, env)?;
    config.data_dir = data_dir.unwrap_or_else(|| scratch.path().join("relay-data"));
    config.btc_rpc_url = Some(testnet.bitcoin.rpc_url_with_auth());
    let eth = deploy_dev_contracts(&testnet.anvil)
        .await
        .context("deploying the escrow on anvil")?;
    // Liquidity for the bridge merchant's settlements, from the operator.
    relay_ethereum::deploy::fund_ether_liquidity(
        &testnet.anvil.url(),
        &eth.operator_key.parse().context("dev operator key")?,
        eth.escrow.parse().context("dev escrow")?,
        relay_ethereum::alloy::primitives::U256::from(DEV_LIQUIDITY_ETH)
            * relay_ethereum::alloy::primitives::U256::from(10u64.pow(18)),
    )
    .await
    .context("funding the escrow's liquidity")?;
    config.treasury_descriptor = Some(dev_treasury_descriptor());
    config.eth_rpc_url = Some(testnet.anvil.url());
    config.eth_ws_url = Some(testnet.anvil.ws_url());
    config.escrow_address = Some(eth.escrow.clone());
    config.operator_key = Some(eth.operator_key.clone());
    if !config.tokens.iter().any(|t| t.code == "DUSD") {
        config.tokens.push(crate::config::TokenConfig {
            code: "DUSD".into(),
            decimals: 6,
            contract: eth.token.clone(),
        });
    }
    config.stripe_api_base = Some(testnet.stripe.url());
    config.stripe_secret_key = Some(relay_testnet::LocalStripe::SECRET_KEY.into());
    // The checkout page's card form, with localstripe's own Stripe.js.
    config.stripe_publishable_key = Some("pk_test_relay_dev".into());
    config.stripe_js_url = format!("{}/js.stripe.com/v3/", testnet.stripe.url());
    let webhook_secret = format!("whsec_dev_{:016x}", rand::random::<u64>());
    config.stripe_webhook_secret = Some(webhook_secret.clone());
    // A developer's webhook receiver is on this machine.
    config.webhook_allow_private = true;
    config.validate()?;

    let explicit = listen.or_else(|| std::env::var_os("RELAY_LISTEN").map(|_| config.listen));
    let listener = match explicit {
        Some(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?,
        None => match tokio::net::TcpListener::bind("127.0.0.1:8080").await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        },
    };
    let url = format!("http://{}", listener.local_addr()?);
    // The local gateway sends its signed webhooks to this relay.
    testnet
        .stripe
        .register_webhook(
            "relay",
            &format!("{url}/v1/gateways/stripe/webhook"),
            &webhook_secret,
        )
        .context("registering the relay's webhook at localstripe")?;
    let store = server::open_store(&config)?;
    let demo = merchant::create(
        &store,
        &relay_engine::SystemClock,
        merchant::NewMerchant {
            name: "Demo shop".into(),
            btc_descriptor: Some(demo_descriptor()),
            btc_confirmations: 1,
            eth_payout: Some(eth.merchant_payout.clone()),
            ..Default::default()
        },
    )
    .await?;
    let bridge = merchant::create(
        &store,
        &relay_engine::SystemClock,
        merchant::NewMerchant {
            name: "Bridge shop".into(),
            eth_payout: Some(eth.bridge_payout.clone()),
            settle_on_ethereum: Some("ETH".into()),
            ..Default::default()
        },
    )
    .await?;
    relay_store::Store::durable(&store).await?;
    config.public_url = Some(url.clone());
    let serving = {
        let config = config.clone();
        tokio::spawn(async move {
            server::serve(&config, store, listener, server::shutdown_signal()).await
        })
    };
    let (checkout, link) = demo_checkout(&url, &demo.api_key, &serving).await?;

    #[allow(clippy::print_stdout)]
    {
        println!(
            r#"
Relay dev is up. Ctrl-C stops everything.

  relay API        {url}   (OpenAPI: {url}/openapi.json, metrics: {url}/metrics)
  data directory   {data}
  anvil (ETH)      {anvil}   chain id 31337, escrow {escrow}
  bitcoin regtest  {btc}   ({kind:?} JSON-RPC, with its user and password)
  operator         {operator}   (the escrow's operator: the relay's key, funded by anvil)
  card gateway     {stripe}   (localstripe, key {sk})

Demo merchant {mid}
  API key          {key}
  checkout page    {checkout}
                   (a demo invoice of 25.00 USD: open it in a browser and pay it on any rail;
                    by card with 4242424242424242, any future expiry and any 3-digit code;
                    4000000000000341 is declined, 4000002500003155 asks for 3-D Secure)
  payment link     {link}
                   (4.50 USD, reusable: each visit makes an invoice and opens its checkout page)

Receive its webhooks: add an endpoint (its signing secret is in the answer, shown once):
  curl -s {url}/v1/webhook_endpoints -H 'Authorization: Bearer {key}' \
    -H 'Content-Type: application/json' -d '{{"url":"http://127.0.0.1:9000/hooks"}}'

Create an invoice:
  curl -s {url}/v1/invoices -H 'Authorization: Bearer {key}' \
    -H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' \
    -d '{{"amount":"25.00","currency":"USD","order_id":"A-1001"}}'

List invoices:
  curl -s {url}/v1/invoices -H 'Authorization: Bearer {key}'

The invoice shows what is due on each rail at the locked rates ({rates}).

Pay it by card on the local gateway: take payment_methods.card.payment_intent (pi_…) and run
  curl -s -u {sk}: {stripe}/v1/payment_intents/PI -d payment_method=pm_card_visa
  curl -s -u {sk}: -X POST {stripe}/v1/payment_intents/PI/confirm
The gateway's signed webhook reaches the relay and the invoice turns "settled" (GET it again).
A declined card: use payment_method=pm_card_chargeCustomerFail instead.

Bridge merchant {bid}: paid on Ethereum, in ETH at {bridge_payout}, for card and
bitcoin payments too (the relay settles them from the escrow's liquidity, {liquidity} ETH here).
  bridge API key   {bkey}
Create an invoice with this key and pay it by card exactly as above: once it is "settled", the
relay calls the escrow's settle() with the PaymentIntent id as sourceRef; the invoice's
settlement.settlements[0] turns "paid" with its tx, and the merchant's ether arrives:
  {cast} balance {bridge_payout} --rpc-url {anvil}
Its bitcoin invoices pay the operator's treasury addresses; they are settled the same way.

Pay it in bitcoin: the dev faucet (a funded wallet on the regtest node) pays the invoice's
payment_methods.bitcoin.uri; then mine a block:
  curl -s {faucet}/bitcoin/pay -d 'bitcoin:bcrt1…?amount=…'
  curl -s {faucet}/bitcoin/mine -d 1
The invoice is "processing" once the payment is in the mempool and "settled" at 1 confirmation.
Addresses are shown as the relay and Bitcoin Core spell regtest ones (bcrt1…); bcoin's own RPC
(above) spells them rb1… and refuses bcrt1…. To mine to a wallet of your own, give the faucet its
bcrt1q… address: curl -s {faucet}/bitcoin/mine -d '101 bcrt1q…'

Pay it in ether: payment_methods.ethereum.call is the escrow call to make. With cast, as the
dev payer {payer} (funded with ether and DUSD), fill in its args and value:
  {cast} send {escrow} 'deposit(address,uint64,bytes32)' MERCHANT EXPIRY SALT \
    --value AMOUNT_WEI --private-key {payer_key} --rpc-url {anvil}
The deposit is mined at once; the invoice is "settled" at 1 confirmation and the relay captures
the deposit to the merchant's payout address {payout} (payment "capture_tx").
In the dev dollar token ({token}, 6 decimals): create the invoice with
"ethereum_asset":"DUSD" (or price it in DUSD), then send payment_methods.ethereum.approve and
payment_methods.ethereum.call the same way.
"#,
            faucet = faucet_url,
            data = config.data_dir.display(),
            anvil = testnet.anvil.url(),
            btc = testnet.bitcoin.rpc_url_with_auth(),
            operator = eth.operator,
            kind = testnet.bitcoin.kind(),
            stripe = testnet.stripe.url(),
            sk = relay_testnet::LocalStripe::SECRET_KEY,
            mid = demo.id,
            bid = bridge.id,
            bkey = bridge.api_key,
            bridge_payout = eth.bridge_payout,
            liquidity = DEV_LIQUIDITY_ETH,
            key = demo.api_key,
            checkout = checkout,
            link = link,
            rates = DEV_RATES,
            cast = relay_testnet::cast_exe()?.display(),
            escrow = eth.escrow,
            payer = eth.payer,
            payer_key = eth.payer_key,
            payout = eth.merchant_payout,
            token = eth.token,
        );
    }
    let result = serving.await.context("the relay task failed")?;
    faucet_task.abort();
    let _ = faucet_task.await;
    drop(testnet);
    result
}
