//! `relay dev`: a whole local deployment in one command — anvil, a bitcoin regtest node and the
//! localstripe card gateway on free loopback ports, a demo merchant, and the relay serving on them.
//! Ctrl-C stops the relay and every process it started.

use crate::config::Config;
use crate::{merchant, server};
use anyhow::{Context, Result};
use relay_testnet::Testnet;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Rates `relay dev` uses unless `RELAY_RATES` says otherwise.
pub const DEV_RATES: &str = "BTC/USD=60000,ETH/USD=3000,BTC/EUR=55000,ETH/EUR=2750";

pub async fn run(listen: Option<SocketAddr>, data_dir: Option<PathBuf>) -> Result<()> {
    let testnet = tokio::task::spawn_blocking(Testnet::start)
        .await?
        .context("cannot start the local testnet (run `make run`, which installs the tools)")?;
    let scratch = tempfile::tempdir()?;
    let mut env: Vec<(String, String)> = vec![("RELAY_RATES".into(), DEV_RATES.into())];
    env.extend(std::env::vars());
    let mut config = Config::load(None, env)?;
    config.data_dir = data_dir.unwrap_or_else(|| scratch.path().join("relay-data"));
    config.btc_rpc_url = Some(testnet.bitcoin.rpc_url_with_auth());
    config.eth_rpc_url = Some(testnet.anvil.url());
    config.stripe_api_base = Some(testnet.stripe.url());
    config.stripe_secret_key = Some(relay_testnet::LocalStripe::SECRET_KEY.into());
    let webhook_secret = format!("whsec_dev_{:016x}", rand::random::<u64>());
    config.stripe_webhook_secret = Some(webhook_secret.clone());
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
        &relay_api::SystemClock,
        merchant::NewMerchant {
            name: "Demo shop".into(),
            ..Default::default()
        },
    )?;
    relay_store::Store::durable(&store).await?;

    #[allow(clippy::print_stdout)]
    {
        println!(
            r#"
Relay dev is up. Ctrl-C stops everything.

  relay API        {url}   (OpenAPI: {url}/openapi.json, metrics: {url}/metrics)
  data directory   {data}
  anvil (ETH)      {anvil}   chain id 31337
  bitcoin regtest  {btc}   ({kind:?}; user relay, password in RELAY_BTC_RPC_URL)
  card gateway     {stripe}   (localstripe, key {sk})

Demo merchant {mid}
  API key          {key}
  webhook secret   {whsec}

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

Paying on the chains arrives with the bitcoin and Ethereum rails; until then the nodes above run
for exploring them directly.
"#,
            data = config.data_dir.display(),
            anvil = testnet.anvil.url(),
            btc = testnet.bitcoin.rpc_url(),
            kind = testnet.bitcoin.kind(),
            stripe = testnet.stripe.url(),
            sk = relay_testnet::LocalStripe::SECRET_KEY,
            mid = demo.id,
            key = demo.api_key,
            whsec = demo.webhook_secret,
            rates = DEV_RATES,
        );
    }
    let result = server::serve(&config, store, listener, server::shutdown_signal()).await;
    drop(testnet);
    result
}
