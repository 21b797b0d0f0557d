//! `relay serve`: the store, the rates and the API wired into one server, with the background
//! tasks, until a shutdown signal.

use crate::config::Config;
use anyhow::{Context, Result};
use relay_api::{app, metrics_handle, AppState};
use relay_core::{AssetBook, Clock, FixedRates};
use relay_engine::{Engine, IdSource, SystemClock};
use relay_store::{Role, Store};
use relay_store_pg::PgStore;
use relay_store_sled::SledStore;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The store the configuration names.
pub enum Opened {
    /// sled in `data_dir`: one relay.
    Sled(SledStore),
    /// PostgreSQL at `database_url`: any number of relays.
    Postgres(PgStore),
}

/// Opens PostgreSQL when `database_url` is set (waiting up to `node_wait_secs` for it to take
/// connections), else sled in `data_dir`.
pub async fn open(config: &Config) -> Result<Opened> {
    let Some(url) = &config.database_url else {
        return Ok(Opened::Sled(open_store(config)?));
    };
    let wait = Duration::from_secs(config.node_wait_secs);
    let start = std::time::Instant::now();
    loop {
        match PgStore::connect(url, secrets_key(config)?).await {
            Ok(store) => return Ok(Opened::Postgres(store)),
            Err(e) if e.is_retryable() && start.elapsed() < wait => {
                tracing::warn!(target: "relay", error = %e, "waiting for the database");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // The error names neither the URL nor its password.
            Err(e) => {
                return Err(e).context("cannot open the store in the database at database_url")
            }
        }
    }
}

fn secrets_key(config: &Config) -> Result<Option<relay_store::sealed::SecretsKey>> {
    config
        .secrets_key_file
        .as_deref()
        .map(relay_store::sealed::SecretsKey::from_file)
        .transpose()
        .map_err(anyhow::Error::msg)
}

/// Opens the store in the configured data directory, with a clear message when another relay
/// holds it.
pub fn open_store(config: &Config) -> Result<SledStore> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let secrets_key = secrets_key(config)?;
    let store = SledStore::open_sealed(&config.data_dir, secrets_key).with_context(|| {
        format!(
            "cannot open the store in {} (is another relay running on it?)",
            config.data_dir.display()
        )
    })?;
    make_private(&config.data_dir).with_context(|| {
        format!(
            "cannot restrict the data directory {} to its owner",
            config.data_dir.display()
        )
    })?;
    Ok(store)
}

/// The data directory holds merchants' key hashes and webhook secrets: only its owner may enter
/// it (0700), and its files are readable by the owner alone (0600).
#[cfg(unix)]
fn make_private(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            make_private(&path)?;
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_dir: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

pub fn asset_book(config: &Config) -> Result<AssetBook> {
    let mut assets = AssetBook::default();
    for t in &config.tokens {
        assets
            .add_token(&t.code, t.decimals, &t.contract)
            .with_context(|| format!("invalid token {}", t.code))?;
    }
    Ok(assets)
}

/// Live rates from the configured providers (none: `None`, the fixed table alone), for BTC, ETH
/// and every configured token, in every fiat currency of `assets`; the fixed table overrides
/// them pair by pair.
pub fn live_rates(
    config: &Config,
    assets: &AssetBook,
    fixed: &FixedRates,
    clock: &Arc<dyn Clock>,
) -> Result<Option<Arc<relay_rates::LiveRates>>> {
    let providers = config.rate_providers()?;
    if providers.is_empty() {
        return Ok(None);
    }
    let bases = assets
        .iter()
        .filter(|a| a.kind != relay_core::AssetKind::Fiat)
        .map(|a| a.code.clone())
        .collect();
    let quotes = assets
        .iter()
        .filter(|a| a.kind == relay_core::AssetKind::Fiat)
        .map(|a| a.code.clone())
        .collect();
    let settings = relay_rates::Settings {
        providers,
        bases,
        quotes,
        max_age_secs: i64::try_from(config.rate_max_age_secs).unwrap_or(i64::MAX),
        timeout: Duration::from_secs(config.rate_timeout_secs),
    };
    relay_rates::LiveRates::new(settings, fixed.clone(), clock.clone())
        .map(|l| Some(Arc::new(l)))
        .map_err(anyhow::Error::msg)
}

pub fn rates(config: &Config) -> Result<FixedRates> {
    FixedRates::from_pairs(config.rates.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .context("invalid rates")
}

/// Serves the API on `listener` until `shutdown` completes, then drains requests and flushes.
pub async fn serve<S: Store + Clone>(
    config: &Config,
    store: S,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gateway = config.stripe_gateway()?.map(Arc::new);
    let wait = Duration::from_secs(config.node_wait_secs);
    let bitcoin = crate::bitcoin::connect(config, wait).await?;
    let ethereum = crate::ethereum::connect(config, wait).await?;
    let assets = asset_book(config)?;
    let fixed = Arc::new(rates(config)?);
    let live = live_rates(config, &assets, &fixed, &clock)?;
    if let Some(live) = &live {
        // The first prices before the first invoice.
        live.refresh().await;
    }
    let rate_source: Arc<dyn relay_core::RateSource> = match &live {
        Some(live) => live.clone(),
        None => fixed.clone(),
    };
    let engine = Engine {
        store: store.clone(),
        ids: Arc::new(IdSource::default()),
        card: gateway
            .clone()
            .map(|g| g as Arc<dyn relay_engine::gateway::CardGateway>),
        bitcoin: bitcoin.as_ref().map(|b| b.rail.clone()),
        ethereum: ethereum.as_ref().map(|e| e.rail.clone()),
        assets: Arc::new(assets),
        rates: rate_source,
        clock: clock.clone(),
        checkout_base: Some(
            config
                .public_url
                .clone()
                .unwrap_or_else(|| {
                    format!("http://{}", listener.local_addr().unwrap_or(config.listen))
                })
                .into(),
        ),
        risk: Default::default(),
    };
    let mut jobs = Vec::new();
    if let Some(dir) = &config.sanctions_dir {
        // Every relay screens with its own copy of the lists.
        jobs.push(crate::sanctions::start(
            engine.risk.clone(),
            dir,
            Duration::from_secs(config.sanctions_reload_secs),
        )?);
    }
    let state = AppState {
        engine: engine.clone(),
        request_timeout: Duration::from_secs(config.request_timeout_secs),
        metrics: metrics_handle(),
        allow_private_webhooks: config.webhook_allow_private,
        metrics_token: config.metrics_token.clone(),
        throttle: relay_api::throttle::Throttle::new(
            config.rate_limit_per_sec,
            config.rate_limit_burst,
        )
        .map(Arc::new),
        auth_failures: relay_api::throttle::AuthFailures::new(
            config.auth_failures_per_min,
            config.trusted_proxy_nets()?,
        )
        .map(Arc::new),
        in_flight: (config.max_requests_in_flight > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(config.max_requests_in_flight))),
        key_changes: Default::default(),
        checkout: Arc::new(relay_api::routes::checkout::CheckoutSettings::new(
            relay_api::routes::checkout::frame_ancestors(&config.checkout_frame_ancestors)
                .map_err(anyhow::Error::msg)?,
            config.card_form()?,
        )),
        live_rates: live.clone(),
        fixed_rates: fixed.clone(),
    };
    let pruner = tokio::spawn(prune_loop(
        store.clone(),
        clock.clone(),
        Duration::from_secs(config.idempotency_retention_hours * 3600),
        Duration::from_secs(config.inbound_retention_days * 86_400),
    ));
    // Each job only one relay may run at a time runs under its role's lease (always granted
    // on sled), on an engine whose store is fenced by it.
    let ttl = Duration::from_secs(config.lease_ttl_secs);
    let fenced = {
        let engine = engine.clone();
        move |store: S| Engine {
            store,
            ..engine.clone()
        }
    };
    if let Some(live) = &live {
        // Every relay keeps its own rates fresh: nothing here writes to the store.
        jobs.push(tokio::spawn(relay_rates::refresh_loop(
            live.clone(),
            Duration::from_secs(config.rate_refresh_secs),
        )));
    }
    jobs.push(tokio::spawn(crate::roles::lead(
        store.clone(),
        Role::Expiry,
        ttl,
        {
            let fenced = fenced.clone();
            move |s| expiry_loop(fenced(s))
        },
    )));
    if let Some(b) = bitcoin {
        let (client, watch, refunds) = (b.client, b.scripts, b.refunds);
        let watcher = relay_bitcoin::WatcherConfig {
            start_height: config.btc_start_height,
            min_sat: config.btc_min_payment_sat,
            ..relay_bitcoin::WatcherConfig::default()
        };
        let poll = Duration::from_millis(config.btc_poll_ms);
        let fenced = fenced.clone();
        jobs.push(tokio::spawn(crate::roles::lead(
            store.clone(),
            Role::Bitcoin,
            ttl,
            move |s| {
                crate::bitcoin::watch_loop(
                    fenced(s),
                    client.clone(),
                    (watch.clone(), refunds.clone()),
                    watcher.clone(),
                    poll,
                )
            },
        )));
    }
    if let Some(e) = ethereum {
        let (e, fenced) = (Arc::new(e), fenced.clone());
        jobs.push(tokio::spawn(crate::roles::lead(
            store.clone(),
            Role::Ethereum,
            ttl,
            move |s| crate::ethereum::watch_loop(fenced(s), e.clone()),
        )));
    }
    let dispatch = crate::webhooks::DispatchConfig {
        retry_base_ms: config.webhook_retry_base_ms,
        timeout: Duration::from_secs(config.webhook_timeout_secs),
        per_endpoint: config.webhook_endpoint_concurrency,
        breaker_after: config.webhook_breaker_after,
        breaker_cooldown: Duration::from_millis(config.webhook_breaker_cooldown_ms),
        allow_private: config.webhook_allow_private,
        ..Default::default()
    };
    jobs.push(tokio::spawn(crate::roles::lead(
        store.clone(),
        Role::Webhooks,
        ttl,
        move |s| crate::webhooks::dispatch_loop(s, dispatch.clone()),
    )));
    if gateway.is_some() {
        let (every, per_merchant) = (
            Duration::from_secs(config.card_reconcile_secs),
            config.card_reconcile_per_merchant,
        );
        jobs.push(tokio::spawn(crate::roles::lead(
            store.clone(),
            Role::Cards,
            ttl,
            move |s| reconcile_loop(fenced(s), every, per_merchant),
        )));
    }
    tracing::info!(target: "relay", addr = %listener.local_addr()?, "listening");
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(Arc::new(crate::listen::Tls::load(cert, key)?)),
        _ => None,
    };
    crate::listen::serve(
        listener,
        app(state),
        crate::listen::Limits {
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            max_connections: config.max_connections,
        },
        tls,
        shutdown,
    )
    .await;
    pruner.abort();
    for job in jobs {
        job.abort();
    }
    // Handed over at once: another relay on the database need not wait for the leases to lapse.
    for role in Role::ALL {
        if let Err(e) = store.release(role).await {
            tracing::warn!(target: "relay", role = role.as_str(), error = %e, "could not release the lease");
        }
    }
    store.durable().await.context("final flush failed")?;
    tracing::info!(target: "relay", "stopped");
    Ok(())
}

async fn expiry_loop<S: Store + Clone>(engine: Engine<S>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        // Reviews nobody decided in time send their payments back (once a minute).
        if ticks % 60 == 1 {
            if let Err(e) = engine.lapse_reviews().await {
                tracing::warn!(target: "relay::risk", error = %e, "rejecting lapsed reviews failed");
            }
        }
        // Before an invoice expires, ask the gateway whether its card payment went through.
        if engine.card.is_some() {
            let due = engine
                .store
                .invoices_due_for_expiry(engine.clock.now(), 1000)
                .await
                .unwrap_or_default();
            if let Err(e) = engine.reconcile_cards(&due).await {
                tracing::warn!(target: "relay::card", error = %e, "reconciliation before expiry failed");
            }
        }
        match engine.expire_due().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(target: "relay::expiry", expired = n, "invoices expired"),
            Err(e) => tracing::warn!(target: "relay::expiry", error = %e, "expiry sweep failed"),
        }
        // No one may be charged for an invoice no longer payable (asked again while it fails).
        if let Err(e) = engine.close_card_intents().await {
            tracing::warn!(target: "relay::card", error = %e, "closing PaymentIntents failed");
        }
    }
}

/// Every hour, deletes idempotency and inbound event records past their retention (off the
/// runtime: it walks both trees).
async fn prune_loop<S: Store + Clone>(
    store: S,
    clock: Arc<dyn Clock>,
    idempotency: Duration,
    inbound: Duration,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let now = clock.now();
        let before = |keep: Duration| {
            relay_core::Timestamp(now.0 - i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2))
        };
        match store
            .prune_records(before(idempotency), before(inbound))
            .await
        {
            Ok((0, 0)) => {}
            Ok((keys, events)) => {
                tracing::info!(target: "relay", idempotency_records = keys, inbound_records = events, "pruned records past their retention")
            }
            Err(e) => tracing::warn!(target: "relay", error = %e, "pruning old records failed"),
        }
        // Velocity signals older than any window may look back.
        let window = Duration::from_secs(relay_core::risk::MAX_WINDOW_SECS);
        match store.prune_signals(before(window)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(target: "relay::risk", signals = n, "pruned old risk signals"),
            Err(e) => {
                tracing::warn!(target: "relay::risk", error = %e, "pruning risk signals failed")
            }
        }
    }
}

/// Periodically reconciles every payable invoice's card payment with the gateway.
async fn reconcile_loop<S: Store + Clone>(engine: Engine<S>, every: Duration, per_merchant: usize) {
    let store = &engine.store;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        // Every invoice still awaiting expiry is payable (new or processing).
        let open = store
            .invoices_due_for_expiry(relay_core::Timestamp(i64::MAX - 1), 10_000)
            .await
            .unwrap_or_default();
        let open = engine
            .reconcile_share(&open, per_merchant)
            .await
            .unwrap_or_default();
        match engine.reconcile_cards(&open).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(target: "relay::card", found = n, "reconciliation found card payments")
            }
            Err(e) => tracing::warn!(target: "relay::card", error = %e, "reconciliation failed"),
        }
        // Refunds a crash or an outage kept from the gateway (asked once the request is a few
        // seconds old, so not while its own request is still asking).
        if let Err(e) = engine.resume_card_refunds(5).await {
            tracing::warn!(target: "relay::card", error = %e, "resuming card refunds failed");
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!(target: "relay", "shutting down");
}
