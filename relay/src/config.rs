//! Settings: a TOML file (optional), each key overridable by a `RELAY_*` environment variable.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the sled store lives (`RELAY_DATA_DIR`), when no database is configured.
    pub data_dir: PathBuf,
    /// `postgres://user:password@host:port/database`: keep the store in PostgreSQL instead of
    /// sled, so several relays can share it (`RELAY_DATABASE_URL`). Never logged.
    pub database_url: Option<String>,
    /// Seconds a relay holds a singleton role's lease (a chain watcher, the expiry sweep, card
    /// reconciliation, webhook dispatch) without renewing it; a relay that dies is replaced within
    /// about this time (`RELAY_LEASE_TTL_SECS`, 2 to 60). Only with `database_url`.
    pub lease_ttl_secs: u64,
    /// Address of the HTTP API (`RELAY_LISTEN`).
    pub listen: SocketAddr,
    /// Where payers and wallets reach this relay, `https://pay.example.com` (`RELAY_PUBLIC_URL`):
    /// checkout pages are under it. Default: `http://` and the listening address.
    pub public_url: Option<String>,
    /// Who may show checkout pages in a frame, as a modal on the shop's own site
    /// (`RELAY_CHECKOUT_FRAME_ANCESTORS`): origins such as `https://shop.example.com`, separated
    /// by spaces or commas, or `none` (the default).
    pub checkout_frame_ancestors: String,
    /// `text` or `json` (`RELAY_LOG_FORMAT`).
    pub log_format: String,
    /// Seconds before a request is cut off (`RELAY_REQUEST_TIMEOUT_SECS`).
    pub request_timeout_secs: u64,
    /// Serve HTTPS with this certificate chain and key (PEM files; `RELAY_TLS_CERT_FILE`,
    /// `RELAY_TLS_KEY_FILE`), read again when they change.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Seconds a connection may take to send a request's headers, and may stay idle between
    /// requests, before it is closed (`RELAY_HEADER_TIMEOUT_SECS`).
    pub header_timeout_secs: u64,
    /// Requests per second one merchant's keys may make, on average (`RELAY_RATE_LIMIT_PER_SEC`;
    /// 0: no limit), and the burst above it (`RELAY_RATE_LIMIT_BURST`).
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// Requests with an invalid API key one client address may send a minute; past it, 429
    /// `too_many_auth_failures` for all its keyed requests until its bucket refills (0: no limit).
    pub auth_failures_per_min: u32,
    /// Requests served at once; past it, 503 `overloaded` at once (0: no limit). `/healthz`,
    /// `/readyz` and `/metrics` are not counted.
    pub max_requests_in_flight: usize,
    /// Open connections served at once; more are closed at once, with a log line
    /// (`RELAY_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Fixed exchange rates, `"BTC/USD" = "60000.00"` (`RELAY_RATES="BTC/USD=60000,ETH/USD=2500"`).
    /// With live providers, each overrides the providers' rate of its pair.
    pub rates: BTreeMap<String, String>,
    /// Live rate providers: `coinbase`, `kraken`, `coingecko`, each optionally `name=URL` to
    /// reach it elsewhere (`RELAY_RATE_PROVIDERS="coinbase,kraken,coingecko"`). None: the fixed
    /// table only.
    pub rate_providers: Vec<String>,
    /// Seconds between two rounds of asking the providers (`RELAY_RATE_REFRESH_SECS`).
    pub rate_refresh_secs: u64,
    /// Past this age (seconds), a provider's price is not used (`RELAY_RATE_MAX_AGE_SECS`).
    pub rate_max_age_secs: u64,
    /// How long one provider may take to answer, in seconds (`RELAY_RATE_TIMEOUT_SECS`).
    pub rate_timeout_secs: u64,
    /// A folder of sanctions lists in the OFAC SDN digital currency address format, one file per
    /// asset (`sanctioned_addresses_ETH.txt`, `…_XBT.txt`: one address per line)
    /// (`RELAY_SANCTIONS_DIR`). A payer's address on one is held, never captured or settled.
    pub sanctions_dir: Option<PathBuf>,
    /// Seconds between two looks for changed lists (`RELAY_SANCTIONS_RELOAD_SECS`).
    pub sanctions_reload_secs: u64,
    /// ERC-20 tokens accepted besides ETH.
    pub tokens: Vec<TokenConfig>,
    pub btc_rpc_url: Option<String>,
    /// The operator's watch-only descriptor for bitcoin invoices of merchants paid on Ethereum
    /// (`RELAY_TREASURY_DESCRIPTOR`).
    pub treasury_descriptor: Option<String>,
    pub eth_rpc_url: Option<String>,
    pub escrow_address: Option<String>,
    pub operator_key_file: Option<PathBuf>,
    /// A file holding 64 hex digits (e.g. `openssl rand -hex 32`), kept outside the data
    /// directory: webhook signing secrets are sealed with it at rest. Once given, the store cannot
    /// be opened without it.
    pub secrets_key_file: Option<PathBuf>,
    pub stripe_api_base: Option<String>,
    pub stripe_secret_key: Option<String>,
    /// One secret, or several separated by commas while rotating.
    pub stripe_webhook_secret: Option<String>,
    /// The gateway's publishable key (`pk_…`), given to Stripe.js on checkout pages: with it the
    /// page has a card form (`RELAY_STRIPE_PUBLISHABLE_KEY`).
    pub stripe_publishable_key: Option<String>,
    /// Where checkout pages load Stripe.js from (`RELAY_STRIPE_JS_URL`):
    /// `https://js.stripe.com/v3/`, or a test gateway's shim such as localstripe's
    /// `http://127.0.0.1:8420/js.stripe.com/v3/`.
    pub stripe_js_url: String,
    /// Seconds between reconciliation passes over payable card invoices
    /// (`RELAY_CARD_RECONCILE_SECS`).
    pub card_reconcile_secs: u64,
    /// How long an `Idempotency-Key` is remembered (its answer replayed), in hours; at least 24.
    pub idempotency_retention_hours: u64,
    /// How long a received gateway event id is remembered (a replay of it ignored), in days. The
    /// gateway's signatures expire after 5 minutes, so an older replay is refused anyway.
    pub inbound_retention_days: u64,
    /// How long `relay serve` waits at start for the bitcoin and Ethereum nodes to answer.
    pub node_wait_secs: u64,
    /// PaymentIntents of one merchant's invoices retrieved per reconciliation pass at most (those
    /// expiring soonest first), so one merchant's invoices cannot use up the gateway rate limit
    /// every merchant shares.
    pub card_reconcile_per_merchant: usize,
    /// Milliseconds between polls of the bitcoin node's tip and mempool (`RELAY_BTC_POLL_MS`).
    pub btc_poll_ms: u64,
    /// Outputs to invoice addresses below this many satoshis are dust: ignored, never credited
    /// (`RELAY_BTC_MIN_PAYMENT_SAT`).
    pub btc_min_payment_sat: u64,
    /// Height to start scanning at on a fresh store, instead of the node's tip
    /// (`RELAY_BTC_START_HEIGHT`).
    pub btc_start_height: Option<u32>,
    /// The operator key itself (hex), for deployments that pass secrets in the environment;
    /// `operator_key_file` is preferred. Never printed.
    pub operator_key: Option<String>,
    /// WebSocket endpoint of the Ethereum node; when set, new heads wake the watcher at once.
    pub eth_ws_url: Option<String>,
    /// How often the Ethereum watcher polls (also the fallback when WebSocket heads are on).
    pub eth_poll_ms: u64,
    /// First block the watcher reads on a fresh data directory (the escrow's deployment block).
    pub eth_start_block: u64,
    /// The relay's fee on each capture, in basis points of the deposit (paid to the escrow's fee
    /// recipient).
    pub eth_fee_bps: u16,
    /// Seconds after an invoice's expiry before the payer may reclaim an uncaptured deposit.
    pub eth_capture_window_secs: u64,
    /// How deep a bitcoin payment must be before the operator's liquidity pays its cross-rail
    /// settlement, whatever the merchant's own policy (1 to 6).
    pub settlement_min_confirmations: u32,
    /// The most gas the operator spends on one capture, void, refund or settlement.
    pub eth_gas_cap_capture: u64,
    pub eth_gas_cap_void: u64,
    pub eth_gas_cap_refund: u64,
    pub eth_gas_cap_settle: u64,
    /// The highest `max_fee_per_gas` the operator ever offers, in gwei (replacements included).
    pub eth_max_fee_gwei: u64,
    /// Fee-bumped replacements of one transaction before the relay stops and alerts.
    pub eth_max_replacements: u32,
    /// Below this operator balance (wei) the relay logs an error every minute.
    pub eth_operator_low_balance_wei: u128,
    /// An ether deposit for no invoice (or the wrong terms) is voided back only if it is worth
    /// more than this many wei; unset: more than the void's own gas. Smaller ones stay in the
    /// escrow for their payer to reclaim.
    pub eth_void_min_wei: Option<u128>,
    /// The first webhook retry's delay in milliseconds; each further one doubles (to 6 hours).
    pub webhook_retry_base_ms: u64,
    /// How long a merchant's endpoint has to answer a delivery.
    pub webhook_timeout_secs: u64,
    /// Deliveries in flight at once to one endpoint.
    pub webhook_endpoint_concurrency: usize,
    /// Failed deliveries in a row after which an endpoint's circuit opens.
    pub webhook_breaker_after: u32,
    /// The first cool-down of an open circuit, in milliseconds (doubling to ten minutes).
    pub webhook_breaker_cooldown_ms: u64,
    /// Webhook endpoints may be private addresses (loopback, private networks): for `relay dev`
    /// and tests only (`RELAY_WEBHOOK_ALLOW_PRIVATE`).
    pub webhook_allow_private: bool,
    /// When set, `/metrics` needs `Authorization: Bearer <token>` (`RELAY_METRICS_TOKEN`). Never
    /// printed.
    pub metrics_token: Option<String>,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client, for
    /// the failed-key throttle (`RELAY_TRUSTED_PROXIES`, comma-separated). Empty: the TCP peer.
    pub trusted_proxies: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub code: String,
    pub decimals: u8,
    pub contract: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./relay-data"),
            database_url: None,
            lease_ttl_secs: 8,
            public_url: None,
            checkout_frame_ancestors: "none".into(),
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            log_format: "text".into(),
            request_timeout_secs: 30,
            tls_cert_file: None,
            tls_key_file: None,
            header_timeout_secs: 10,
            max_connections: 512,
            rate_limit_per_sec: 100,
            rate_limit_burst: 200,
            auth_failures_per_min: 60,
            max_requests_in_flight: 256,
            rates: BTreeMap::new(),
            rate_providers: Vec::new(),
            rate_refresh_secs: 30,
            rate_max_age_secs: 300,
            rate_timeout_secs: 10,
            sanctions_dir: None,
            sanctions_reload_secs: 60,
            tokens: Vec::new(),
            btc_rpc_url: None,
            treasury_descriptor: None,
            eth_rpc_url: None,
            escrow_address: None,
            operator_key_file: None,
            secrets_key_file: None,
            stripe_api_base: None,
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_publishable_key: None,
            stripe_js_url: "https://js.stripe.com/v3/".into(),
            card_reconcile_secs: 60,
            node_wait_secs: 30,
            idempotency_retention_hours: 72,
            inbound_retention_days: 30,
            card_reconcile_per_merchant: 100,
            btc_poll_ms: 1000,
            btc_min_payment_sat: relay_bitcoin::DEFAULT_MIN_SAT,
            btc_start_height: None,
            operator_key: None,
            eth_ws_url: None,
            eth_poll_ms: 1000,
            eth_start_block: 0,
            eth_fee_bps: 0,
            eth_capture_window_secs: 3600,
            settlement_min_confirmations: relay_core::payout::DEFAULT_SETTLEMENT_DEPTH,
            eth_gas_cap_capture: 200_000,
            eth_gas_cap_void: 150_000,
            eth_gas_cap_refund: 150_000,
            eth_gas_cap_settle: 250_000,
            eth_max_fee_gwei: 500,
            eth_max_replacements: 8,
            eth_operator_low_balance_wei: 100_000_000_000_000_000,
            eth_void_min_wei: None,
            webhook_retry_base_ms: 10_000,
            webhook_timeout_secs: 10,
            webhook_endpoint_concurrency: 4,
            webhook_breaker_after: 5,
            webhook_breaker_cooldown_ms: 30_000,
            webhook_allow_private: false,
            metrics_token: None,
            trusted_proxies: Vec::new(),
        }
    }
}

// Secrets and URLs that may carry credentials are never printed.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("database_url", &set(&self.database_url))
            .field("lease_ttl_secs", &self.lease_ttl_secs)
            .field("public_url", &self.public_url)
            .field("checkout_frame_ancestors", &self.checkout_frame_ancestors)
            .field("listen", &self.listen)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file.is_some())
            .field("header_timeout_secs", &self.header_timeout_secs)
            .field("max_connections", &self.max_connections)
            .field("rate_limit_per_sec", &self.rate_limit_per_sec)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .field("auth_failures_per_min", &self.auth_failures_per_min)
            .field("max_requests_in_flight", &self.max_requests_in_flight)
            .field("log_format", &self.log_format)
            .field("rates", &self.rates)
            .field("rate_providers", &self.rate_providers)
            .field("rate_refresh_secs", &self.rate_refresh_secs)
            .field("rate_max_age_secs", &self.rate_max_age_secs)
            .field("sanctions_dir", &self.sanctions_dir)
            .field("sanctions_reload_secs", &self.sanctions_reload_secs)
            .field("tokens", &self.tokens)
            .field("btc_rpc_url", &set(&self.btc_rpc_url))
            .field("treasury_descriptor", &self.treasury_descriptor.is_some())
            .field("eth_rpc_url", &set(&self.eth_rpc_url))
            .field("escrow_address", &self.escrow_address)
            .field("stripe_api_base", &self.stripe_api_base)
            .field("stripe_secret_key", &set(&self.stripe_secret_key))
            .field("stripe_webhook_secret", &set(&self.stripe_webhook_secret))
            .field("stripe_publishable_key", &self.stripe_publishable_key)
            .field("stripe_js_url", &self.stripe_js_url)
            .field("card_reconcile_secs", &self.card_reconcile_secs)
            .field("node_wait_secs", &self.node_wait_secs)
            .field(
                "idempotency_retention_hours",
                &self.idempotency_retention_hours,
            )
            .field("inbound_retention_days", &self.inbound_retention_days)
            .field(
                "card_reconcile_per_merchant",
                &self.card_reconcile_per_merchant,
            )
            .field("btc_poll_ms", &self.btc_poll_ms)
            .field("btc_min_payment_sat", &self.btc_min_payment_sat)
            .field("btc_start_height", &self.btc_start_height)
            .field("operator_key_file", &self.operator_key_file)
            .field("secrets_key_file", &self.secrets_key_file)
            .field("operator_key", &set(&self.operator_key))
            .field("eth_ws_url", &set(&self.eth_ws_url))
            .field("eth_poll_ms", &self.eth_poll_ms)
            .field("eth_start_block", &self.eth_start_block)
            .field("eth_fee_bps", &self.eth_fee_bps)
            .field("eth_capture_window_secs", &self.eth_capture_window_secs)
            .field(
                "settlement_min_confirmations",
                &self.settlement_min_confirmations,
            )
            .field("eth_gas_cap_capture", &self.eth_gas_cap_capture)
            .field("eth_gas_cap_void", &self.eth_gas_cap_void)
            .field("eth_gas_cap_refund", &self.eth_gas_cap_refund)
            .field("eth_gas_cap_settle", &self.eth_gas_cap_settle)
            .field("eth_max_fee_gwei", &self.eth_max_fee_gwei)
            .field("eth_max_replacements", &self.eth_max_replacements)
            .field(
                "eth_operator_low_balance_wei",
                &self.eth_operator_low_balance_wei,
            )
            .field("eth_void_min_wei", &self.eth_void_min_wei)
            .field("webhook_retry_base_ms", &self.webhook_retry_base_ms)
            .field("webhook_timeout_secs", &self.webhook_timeout_secs)
            .field(
                "webhook_endpoint_concurrency",
                &self.webhook_endpoint_concurrency,
            )
            .field("webhook_breaker_after", &self.webhook_breaker_after)
            .field(
                "webhook_breaker_cooldown_ms",
                &self.webhook_breaker_cooldown_ms,
            )
            .field("webhook_allow_private", &self.webhook_allow_private)
            .field("metrics_token", &set(&self.metrics_token))
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// `trusted_proxies` parsed: each an address (a /32 or /128) or a CIDR block.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .with_context(|| {
                        format!("trusted_proxies: {p:?} is not an address or a CIDR block")
                    })
            })
            .collect()
    }

    /// The live rate providers and where each is reached.
    pub fn rate_providers(&self) -> Result<Vec<(relay_rates::Provider, String)>> {
        let mut out: Vec<(relay_rates::Provider, String)> = Vec::new();
        for entry in &self.rate_providers {
            let (name, url) = match entry.split_once('=') {
                Some((n, u)) => (n.trim(), Some(u.trim())),
                None => (entry.trim(), None),
            };
            let Some(provider) = relay_rates::Provider::parse_name(name) else {
                bail!("rate_providers: {name:?} is not one of coinbase, kraken, coingecko");
            };
            let url = url.unwrap_or(provider.default_url());
            let ok = url::Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.username().is_empty()
            });
            if !ok {
                bail!("rate_providers: {url:?} is not an http(s) URL");
            }
            if out.iter().any(|(p, _)| *p == provider) {
                bail!("rate_providers: {name} is named twice");
            }
            out.push((provider, url.to_owned()));
        }
        Ok(out)
    }

    /// The checkout pages' card form: with a gateway and its publishable key.
    pub fn card_form(&self) -> Result<Option<relay_api::routes::checkout::CardForm>> {
        let Some(key) = &self.stripe_publishable_key else {
            return Ok(None);
        };
        if self.stripe_secret_key.is_none() {
            bail!("stripe_publishable_key needs the gateway (stripe_api_base, stripe_secret_key)");
        }
        relay_api::routes::checkout::CardForm::new(&self.stripe_js_url, key)
            .map(Some)
            .map_err(anyhow::Error::msg)
    }

    pub fn stripe_gateway(&self) -> Result<Option<crate::card::StripeGateway>> {
        let (Some(base), Some(key)) = (&self.stripe_api_base, &self.stripe_secret_key) else {
            return Ok(None);
        };
        let webhook_secrets: Vec<String> = self
            .stripe_webhook_secret
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if webhook_secrets.is_empty() {
            tracing::warn!(target: "relay", "no stripe_webhook_secret: gateway webhooks will be refused; reconciliation still finds payments");
        }
        Ok(Some(crate::card::StripeGateway {
            client: relay_card::GatewayClient::new(base, key)?,
            webhook_secrets,
            refunds_taken: Default::default(),
        }))
    }

    pub fn validate(&self) -> Result<()> {
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format must be \"text\" or \"json\"");
        }
        if !(2..=60).contains(&self.lease_ttl_secs) {
            bail!("lease_ttl_secs must be 2 to 60");
        }
        relay_api::routes::checkout::frame_ancestors(&self.checkout_frame_ancestors)
            .map_err(anyhow::Error::msg)?;
        if let Some(url) = &self.public_url {
            let ok = url::Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
            });
            if !ok {
                bail!("public_url must be an http(s) URL like https://pay.example.com, without credentials, query or fragment");
            }
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bail!("database_url must be a postgres:// URL");
            }
        }
        if self.card_reconcile_secs == 0 {
            bail!("card_reconcile_secs must be at least 1");
        }
        if !(24..=87_600).contains(&self.idempotency_retention_hours) {
            bail!("idempotency_retention_hours must be 24 to 87600");
        }
        if !(1..=3650).contains(&self.inbound_retention_days) {
            bail!("inbound_retention_days must be 1 to 3650");
        }
        self.trusted_proxy_nets()?;
        if !(1..=3600).contains(&self.node_wait_secs) {
            bail!("node_wait_secs must be 1 to 3600");
        }
        if !(1..=10_000).contains(&self.card_reconcile_per_merchant) {
            bail!("card_reconcile_per_merchant must be 1 to 10000");
        }
        if self.stripe_api_base.is_some() != self.stripe_secret_key.is_some() {
            bail!("stripe_api_base and stripe_secret_key go together");
        }
        self.card_form()?;
        self.rate_providers()?;
        if !(1..=3600).contains(&self.rate_refresh_secs) {
            bail!("rate_refresh_secs must be 1 to 3600");
        }
        if self.sanctions_reload_secs == 0 {
            bail!("sanctions_reload_secs must be at least 1");
        }
        if !(self.rate_refresh_secs..=86_400).contains(&self.rate_max_age_secs) {
            bail!("rate_max_age_secs must be at least rate_refresh_secs and at most 86400");
        }
        if !(1..=120).contains(&self.rate_timeout_secs) {
            bail!("rate_timeout_secs must be 1 to 120");
        }
        if !(10..=600_000).contains(&self.btc_poll_ms) {
            bail!("btc_poll_ms must be 10 to 600000");
        }
        if !(10..=600_000).contains(&self.eth_poll_ms) {
            bail!("eth_poll_ms must be 10 to 600000");
        }
        if !(10..=3_600_000).contains(&self.webhook_retry_base_ms) {
            bail!("webhook_retry_base_ms must be 10 to 3600000");
        }
        if !(1..=60).contains(&self.webhook_timeout_secs) {
            bail!("webhook_timeout_secs must be 1 to 60");
        }
        if !(1..=64).contains(&self.webhook_endpoint_concurrency) {
            bail!("webhook_endpoint_concurrency must be 1 to 64");
        }
        if !(1..=1000).contains(&self.webhook_breaker_after) {
            bail!("webhook_breaker_after must be 1 to 1000");
        }
        if !(100..=600_000).contains(&self.webhook_breaker_cooldown_ms) {
            bail!("webhook_breaker_cooldown_ms must be 100 to 600000");
        }
        if self.eth_fee_bps > 10_000 {
            bail!("eth_fee_bps must be at most 10000");
        }
        if self.eth_max_fee_gwei == 0 {
            bail!("eth_max_fee_gwei must be at least 1");
        }
        if [
            self.eth_gas_cap_capture,
            self.eth_gas_cap_void,
            self.eth_gas_cap_refund,
            self.eth_gas_cap_settle,
        ]
        .contains(&0)
        {
            bail!("eth_gas_cap_* must be at least 1");
        }
        if !(1..=6).contains(&self.settlement_min_confirmations) {
            // The bitcoin watcher reports depths up to 6.
            bail!("settlement_min_confirmations must be 1 to 6");
        }
        if !(60..=30 * 24 * 3600).contains(&self.eth_capture_window_secs) {
            bail!("eth_capture_window_secs must be 60 to 2592000");
        }
        if self.eth_rpc_url.is_some() != self.escrow_address.is_some() {
            bail!("eth_rpc_url and escrow_address go together");
        }
        if self.eth_rpc_url.is_some()
            && self.operator_key_file.is_none()
            && self.operator_key.is_none()
        {
            bail!("the Ethereum rail needs the operator key: set operator_key_file (or RELAY_OPERATOR_KEY)");
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            bail!("tls_cert_file and tls_key_file go together");
        }
        if !(1..=600).contains(&self.header_timeout_secs) {
            bail!("header_timeout_secs must be 1 to 600");
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            bail!("max_connections must be 1 to 1000000");
        }
        if self.request_timeout_secs == 0 || self.request_timeout_secs > 600 {
            bail!("request_timeout_secs must be 1 to 600");
        }
        Ok(())
    }
}
mod load;

#[cfg(test)]
mod tests;
