//! `relay`: the cross-chain payment relay. `relay serve` runs it, `relay merchant create` adds a
//! merchant, `relay dev` brings up a local testnet with a relay on it.

use anyhow::Result;

// The relay allocates many short-lived buffers per request (JSON, sled nodes); mimalloc handles
// that pattern with less CPU and less fragmentation than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use relay::config::Config;
use relay::{merchant, server};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "relay", version, about = "Cross-chain payment relay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (settings from --config and RELAY_* variables).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage merchants.
    Merchant {
        #[command(subcommand)]
        command: MerchantCommand,
    },
    /// Start a local testnet (anvil, bitcoin regtest, card gateway) and a relay on it.
    Dev {
        /// Address of the relay's API (default: 127.0.0.1:8080, or a free loopback port when 8080
        /// is taken).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Keep data here instead of a fresh temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MerchantCommand {
    /// Create a merchant; prints its id, API key and webhook secret once, as JSON.
    Create {
        #[arg(long)]
        name: String,
        /// Watch-only receive descriptor, e.g. `wpkh(xpub…/0/*)`; each invoice gets the next address.
        #[arg(long)]
        btc_descriptor: Option<String>,
        /// Confirmations a bitcoin payment needs: 0, 1, 2 or 6.
        #[arg(long, default_value_t = 1)]
        btc_confirmations: u32,
        /// How far short of the price an on-chain payment may fall and still settle, in basis
        /// points (0 to 1000).
        #[arg(long, default_value_t = 0)]
        payment_tolerance_bps: u16,
        /// The spread on crypto conversions, in basis points (0 to 1000): bitcoin and Ethereum
        /// payers are quoted the market rate less this.
        #[arg(long, default_value_t = 0)]
        rate_spread_bps: u16,
        /// How long an invoice's crypto quotes hold, in seconds (10 s to 30 days, at most the
        /// invoice's expiry): a payment arriving later is priced at the rate of its arrival.
        #[arg(long, default_value_t = relay_core::merchant::DEFAULT_QUOTE_TTL_SECS)]
        quote_ttl_secs: u32,
        /// Where Ethereum deposits are captured to: a 0x address the merchant controls.
        #[arg(long)]
        eth_payout: Option<String>,
        /// Blocks an Ethereum deposit needs before it is final and captured (1 to 64).
        #[arg(long, default_value_t = 1)]
        eth_confirmations: u32,
        #[arg(long)]
        webhook_url: Option<String>,
        /// Be paid on Ethereum for card and bitcoin payments too, in this asset (`ETH` or a
        /// configured token code), at `--eth-payout`, from the operator's liquidity.
        #[arg(long)]
        settle_on_ethereum: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs `$body` with `$store` bound to the opened store, whichever backend it is.
macro_rules! on_store {
    ($opened:expr, |$store:ident| $body:expr) => {
        match $opened {
            server::Opened::Sled($store) => $body,
            server::Opened::Postgres($store) => $body,
        }
    };
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    let config = Config::load(path, std::env::vars())?;
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = load_config(config.as_deref())?;
            init_tracing(config.log_format == "json");
            tracing::info!(target: "relay", ?config, "starting");
            let opened = server::open(&config).await?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
            on_store!(opened, |store| {
                server::serve(&config, store, listener, server::shutdown_signal()).await
            })
        }
        Command::Merchant {
            command:
                MerchantCommand::Create {
                    name,
                    btc_descriptor,
                    btc_confirmations,
                    payment_tolerance_bps,
                    rate_spread_bps,
                    quote_ttl_secs,
                    eth_payout,
                    eth_confirmations,
                    webhook_url,
                    settle_on_ethereum,
                    config,
                },
        } => {
            let config = load_config(config.as_deref())?;
            let opened = server::open(&config).await?;
            let new = merchant::NewMerchant {
                name,
                btc_descriptor,
                btc_confirmations,
                eth_confirmations,
                payment_tolerance_bps,
                rate_spread_bps,
                quote_ttl_secs,
                eth_payout,
                webhook_url,
                settle_on_ethereum,
                allow_private_webhooks: config.webhook_allow_private,
            };
            let created = on_store!(opened, |store| {
                let created = merchant::create(&store, &relay_engine::SystemClock, new).await?;
                relay_store::Store::durable(&store).await?;
                created
            });
            #[allow(clippy::print_stdout)]
            {
                println!("{}", serde_json::to_string_pretty(&created)?);
            }
            Ok(())
        }
        #[cfg(feature = "dev")]
        Command::Dev { listen, data_dir } => {
            init_tracing(false);
            relay::dev::run(listen, data_dir).await
        }
        #[cfg(not(feature = "dev"))]
        Command::Dev { .. } => anyhow::bail!(
            "this relay was built without `relay dev` (it links the test harness): run `make run`, or build with `cargo build -p relay --features dev`"
        ),
    }
}
