//! Where settings come from: the TOML file, then each `RELAY_*` environment variable over it.

use super::{Config, TokenConfig};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

impl Config {
    /// Reads `path` (if given), then applies `RELAY_*` overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", p.display()))?
            }
            None => Config::default(),
        };
        for (key, value) in env {
            let Some(name) = key.strip_prefix("RELAY_") else {
                continue;
            };
            config
                .apply_env(name, value)
                .with_context(|| format!("invalid {key}"))?;
        }
        Ok(config)
    }

    fn apply_env(&mut self, name: &str, value: String) -> Result<()> {
        let opt = |v: String| if v.is_empty() { None } else { Some(v) };
        match name {
            "DATA_DIR" => self.data_dir = PathBuf::from(value),
            "DATABASE_URL" => self.database_url = opt(value),
            "PUBLIC_URL" => self.public_url = opt(value),
            "CHECKOUT_FRAME_ANCESTORS" => self.checkout_frame_ancestors = value,
            "LEASE_TTL_SECS" => self.lease_ttl_secs = value.parse().context("expected seconds")?,
            "LISTEN" => {
                self.listen = value
                    .parse()
                    .context("expected an address like 127.0.0.1:8080")?
            }
            "LOG_FORMAT" => self.log_format = value,
            "REQUEST_TIMEOUT_SECS" => {
                self.request_timeout_secs = value.parse().context("expected seconds")?
            }
            "METRICS_TOKEN" => self.metrics_token = opt(value),
            "TRUSTED_PROXIES" => {
                self.trusted_proxies = value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "TLS_CERT_FILE" => self.tls_cert_file = opt(value).map(PathBuf::from),
            "TLS_KEY_FILE" => self.tls_key_file = opt(value).map(PathBuf::from),
            "WEBHOOK_ALLOW_PRIVATE" => {
                self.webhook_allow_private = match value.trim() {
                    "1" | "true" | "yes" => true,
                    "" | "0" | "false" | "no" => false,
                    other => bail!("expected true or false, got {other:?}"),
                }
            }
            "HEADER_TIMEOUT_SECS" => {
                self.header_timeout_secs = value.parse().context("expected seconds")?
            }
            "RATE_LIMIT_PER_SEC" => {
                self.rate_limit_per_sec = value.parse().context("expected a rate")?
            }
            "RATE_LIMIT_BURST" => {
                self.rate_limit_burst = value.parse().context("expected a count")?
            }
            "AUTH_FAILURES_PER_MIN" => {
                self.auth_failures_per_min = value.parse().context("expected a count")?
            }
            "MAX_REQUESTS_IN_FLIGHT" => {
                self.max_requests_in_flight = value.parse().context("expected a count")?
            }
            "MAX_CONNECTIONS" => {
                self.max_connections = value.parse().context("expected a count")?
            }
            "RATES" => {
                self.rates.clear();
                for entry in value.split(',').filter(|e| !e.trim().is_empty()) {
                    let Some((pair, price)) = entry.split_once('=') else {
                        bail!("expected BASE/QUOTE=PRICE entries separated by commas");
                    };
                    self.rates
                        .insert(pair.trim().to_owned(), price.trim().to_owned());
                }
            }
            "RATE_PROVIDERS" => {
                self.rate_providers = value
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "RATE_REFRESH_SECS" => {
                self.rate_refresh_secs = value.parse().context("expected seconds")?
            }
            "RATE_MAX_AGE_SECS" => {
                self.rate_max_age_secs = value.parse().context("expected seconds")?
            }
            "RATE_TIMEOUT_SECS" => {
                self.rate_timeout_secs = value.parse().context("expected seconds")?
            }
            "SANCTIONS_DIR" => self.sanctions_dir = opt(value).map(PathBuf::from),
            "SANCTIONS_RELOAD_SECS" => {
                self.sanctions_reload_secs = value.parse().context("expected seconds")?
            }
            "BTC_RPC_URL" => self.btc_rpc_url = opt(value),
            "TREASURY_DESCRIPTOR" => self.treasury_descriptor = opt(value),
            "ETH_RPC_URL" => self.eth_rpc_url = opt(value),
            "ESCROW_ADDRESS" => self.escrow_address = opt(value),
            "OPERATOR_KEY_FILE" => self.operator_key_file = opt(value).map(PathBuf::from),
            "SECRETS_KEY_FILE" => self.secrets_key_file = opt(value).map(PathBuf::from),
            "STRIPE_API_BASE" => self.stripe_api_base = opt(value),
            "STRIPE_SECRET_KEY" => self.stripe_secret_key = opt(value),
            "STRIPE_WEBHOOK_SECRET" => self.stripe_webhook_secret = opt(value),
            "STRIPE_PUBLISHABLE_KEY" => self.stripe_publishable_key = opt(value),
            "STRIPE_JS_URL" => self.stripe_js_url = value,
            "CARD_RECONCILE_SECS" => {
                self.card_reconcile_secs = value.parse().context("expected seconds")?
            }
            "NODE_WAIT_SECS" => self.node_wait_secs = value.parse().context("expected seconds")?,
            "CARD_RECONCILE_PER_MERCHANT" => {
                self.card_reconcile_per_merchant = value.parse().context("expected a count")?
            }
            "BTC_POLL_MS" => self.btc_poll_ms = value.parse().context("expected milliseconds")?,
            "BTC_MIN_PAYMENT_SAT" => {
                self.btc_min_payment_sat = value.parse().context("expected satoshis")?
            }
            "BTC_START_HEIGHT" => {
                self.btc_start_height = opt(value)
                    .map(|v| v.parse())
                    .transpose()
                    .context("expected a block height")?
            }
            "WEBHOOK_RETRY_BASE_MS" => {
                self.webhook_retry_base_ms = value.parse().context("expected milliseconds")?
            }
            "WEBHOOK_TIMEOUT_SECS" => {
                self.webhook_timeout_secs = value.parse().context("expected seconds")?
            }
            "WEBHOOK_ENDPOINT_CONCURRENCY" => {
                self.webhook_endpoint_concurrency = value.parse().context("expected a count")?
            }
            "WEBHOOK_BREAKER_AFTER" => {
                self.webhook_breaker_after = value.parse().context("expected a count")?
            }
            "WEBHOOK_BREAKER_COOLDOWN_MS" => {
                self.webhook_breaker_cooldown_ms = value.parse().context("expected milliseconds")?
            }
            "TOKENS" => {
                self.tokens.clear();
                for entry in value.split(',').filter(|e| !e.trim().is_empty()) {
                    let parts: Vec<&str> = entry.trim().split(':').collect();
                    let [code, decimals, contract] = parts[..] else {
                        bail!("expected CODE:DECIMALS:CONTRACT entries separated by commas");
                    };
                    self.tokens.push(TokenConfig {
                        code: code.to_owned(),
                        decimals: decimals.parse().context("token decimals")?,
                        contract: contract.to_owned(),
                    });
                }
            }
            "OPERATOR_KEY" => self.operator_key = opt(value),
            "ETH_WS_URL" => self.eth_ws_url = opt(value),
            "ETH_POLL_MS" => self.eth_poll_ms = value.parse().context("expected milliseconds")?,
            "ETH_START_BLOCK" => {
                self.eth_start_block = value.parse().context("expected a block number")?
            }
            "ETH_FEE_BPS" => self.eth_fee_bps = value.parse().context("expected basis points")?,
            "ETH_CAPTURE_WINDOW_SECS" => {
                self.eth_capture_window_secs = value.parse().context("expected seconds")?
            }
            "ETH_GAS_CAP_CAPTURE" => {
                self.eth_gas_cap_capture = value.parse().context("expected gas")?
            }
            "ETH_GAS_CAP_VOID" => self.eth_gas_cap_void = value.parse().context("expected gas")?,
            "ETH_GAS_CAP_REFUND" => {
                self.eth_gas_cap_refund = value.parse().context("expected gas")?
            }
            "ETH_GAS_CAP_SETTLE" => {
                self.eth_gas_cap_settle = value.parse().context("expected gas")?
            }
            "ETH_MAX_FEE_GWEI" => self.eth_max_fee_gwei = value.parse().context("expected gwei")?,
            "ETH_MAX_REPLACEMENTS" => {
                self.eth_max_replacements = value.parse().context("expected a count")?
            }
            "ETH_OPERATOR_LOW_BALANCE_WEI" => {
                self.eth_operator_low_balance_wei = value.parse().context("expected wei")?
            }
            "ETH_VOID_MIN_WEI" => {
                self.eth_void_min_wei = match value.trim() {
                    "" => None,
                    v => Some(v.parse().context("expected wei")?),
                }
            }
            "SETTLEMENT_MIN_CONFIRMATIONS" => {
                self.settlement_min_confirmations = value.parse().context("expected a depth")?
            }
            // Other RELAY_* variables (e.g. the harness's own) are not settings of the relay.
            _ => {}
        }
        Ok(())
    }
}
