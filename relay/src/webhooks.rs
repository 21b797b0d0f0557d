//! Outbound merchant webhooks: fans newly stored events out to the merchants' endpoints and
//! delivers the queue, signed with `Relay-Signature`, retrying with exponential backoff and jitter
//! for up to three days. The schedule lives in the store, so deliveries survive restarts; a
//! delivery interrupted by a crash is sent again (receivers dedupe on the event id).

use relay_core::webhook::{retry_delay_ms, signature_header};
use relay_core::{DeliveryAttempt, DeliveryOutcome, Timestamp};
use relay_store::{DueDelivery, SledStore, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// The first retry's delay; each further one doubles (capped at six hours).
    pub retry_base_ms: u64,
    /// How long a receiver has to answer.
    pub timeout: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Pause when nothing is due.
    pub idle: Duration,
    /// Deliver to private addresses too (`relay dev`, tests).
    pub allow_private: bool,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            retry_base_ms: 10_000,
            timeout: Duration::from_secs(10),
            concurrency: 64,
            idle: Duration::from_millis(100),
            allow_private: false,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What one HTTP attempt got.
struct Sent {
    status: Option<u16>,
    error: Option<String>,
    duration: Duration,
}

/// Resolves webhook hosts and keeps only public addresses, so the client connects only to an
/// address that was checked (a name that resolved to a public address at registration and to a
/// private one now gets nowhere).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> = all
                .into_iter()
                .filter(|a| relay_core::destination::is_public(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a delivery may go to `url` before anything is resolved: an address in the URL must
/// be public (names are checked address by address by [`PublicOnly`]).
fn destination_allowed(url: &str, allow_private: bool) -> bool {
    allow_private || relay_core::destination::check_webhook_url(url, false).is_ok()
}

async fn send(client: &reqwest::Client, d: &DueDelivery, allow_private: bool) -> Sent {
    if !destination_allowed(&d.endpoint.url, allow_private) {
        return Sent {
            status: None,
            error: Some("destination not allowed (not a public address)".to_owned()),
            duration: Duration::ZERO,
        };
    }
    let body = serde_json::to_vec(&relay_api::view::EventView::of(&d.event)).unwrap_or_default();
    let t = i64::try_from(now_ms() / 1000).unwrap_or(0);
    let signature = signature_header(d.endpoint.secret.expose_secret(), t, &body);
    let started = Instant::now();
    let result = client
        .post(&d.endpoint.url)
        .header("Content-Type", "application/json")
        .header("Relay-Signature", signature)
        .header("Relay-Event-Id", d.event.id.as_str())
        .header("User-Agent", concat!("relay/", env!("CARGO_PKG_VERSION")))
        .body(body)
        .send()
        .await;
    let duration = started.elapsed();
    match result {
        Ok(r) => Sent {
            status: Some(r.status().as_u16()),
            error: None,
            duration,
        },
        Err(e) => Sent {
            status: None,
            error: Some(if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                "connection failed".to_owned()
            } else {
                "request failed".to_owned()
            }),
            duration,
        },
    }
}

/// Records what an attempt got and schedules what follows.
fn finish(store: &SledStore, d: &DueDelivery, sent: Sent, retry_base_ms: u64) {
    let now = now_ms();
    let at = Timestamp(i64::try_from(now / 1000).unwrap_or(0));
    let outcome = DeliveryOutcome::of(sent.status, d.first_at, at);
    let attempt = DeliveryAttempt {
        endpoint_id: d.endpoint.id.clone(),
        event_id: d.event.id.to_string(),
        attempt: d.attempt,
        at,
        status: sent.status,
        error: sent.error,
        duration_ms: u64::try_from(sent.duration.as_millis()).unwrap_or(u64::MAX),
        outcome,
    };
    let (retry_at, disable) = match outcome {
        DeliveryOutcome::Retrying => (
            Some(now + retry_delay_ms(d.attempt, retry_base_ms, rand::random::<u16>() % 400)),
            None,
        ),
        DeliveryOutcome::EndpointGone => (None, Some("the receiver answered 410 Gone")),
        DeliveryOutcome::Delivered | DeliveryOutcome::GaveUp => (None, None),
    };
    let label = match outcome {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::Retrying => "retrying",
        DeliveryOutcome::EndpointGone => "endpoint_gone",
        DeliveryOutcome::GaveUp => "gave_up",
    };
    metrics::counter!("relay_webhook_attempts_total", "outcome" => label).increment(1);
    if outcome == DeliveryOutcome::GaveUp {
        tracing::warn!(target: "relay::webhooks", endpoint = %d.endpoint.id, event = %d.event.id, "gave up after three days of failed deliveries");
    }
    if let Err(e) = store.finish_delivery(d, &attempt, now, retry_at, disable) {
        tracing::error!(target: "relay::webhooks", error = %e, "cannot record a delivery attempt; it will be sent again");
    }
}

/// Fans out and delivers until the task is dropped.
pub async fn dispatch_loop(store: SledStore, config: DispatchConfig) {
    let mut builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if !config.allow_private {
        builder = builder.dns_resolver(std::sync::Arc::new(PublicOnly));
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target: "relay::webhooks", error = %e, "cannot build the webhook HTTP client");
            return;
        }
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let mut rounds: u64 = 0;
    loop {
        let now = now_ms();
        loop {
            match store.webhook_fanout(now, 1000) {
                Ok(1000) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(target: "relay::webhooks", error = %e, "fan-out failed");
                    break;
                }
            }
        }
        let due = match store.due_deliveries(now, 4 * config.concurrency.max(1)) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(target: "relay::webhooks", error = %e, "reading the delivery queue failed");
                Vec::new()
            }
        };
        // Counting the queue walks it: every 50th round is often enough for a gauge.
        rounds += 1;
        if rounds % 50 == 1 {
            metrics::gauge!("relay_webhook_backlog").set(store.webhook_backlog() as f64);
        }
        if due.is_empty() {
            // A write that queues events wakes the dispatcher at once; the timer covers retries
            // falling due.
            tokio::select! {
                _ = tokio::time::sleep(config.idle) => {}
                _ = store.fanout_wake().notified() => {}
            }
            continue;
        }
        // Deliver only what is on disk: an event a crash could still take back must not reach a
        // merchant (concurrent writers share the flush).
        if let Err(e) = store.durable().await {
            tracing::error!(target: "relay::webhooks", error = %e, "flushing before delivery failed");
            tokio::time::sleep(config.idle).await;
            continue;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for d in due {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (client, store, base) = (client.clone(), store.clone(), config.retry_base_ms);
            let allow_private = config.allow_private;
            tasks.spawn(async move {
                let sent = send(&client, &d, allow_private).await;
                finish(&store, &d, sent, base);
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
        if let Err(e) = store.durable().await {
            tracing::error!(target: "relay::webhooks", error = %e, "flushing delivery records failed");
        }
    }
}
