//! Outbound merchant webhooks: fans newly stored events out to the merchants' endpoints and
//! delivers the queue, signed with `Relay-Signature`, retrying with exponential backoff and jitter
//! for up to three days. The schedule lives in the store, so deliveries survive restarts; a
//! delivery interrupted by a crash is sent again (receivers dedupe on the event id).

use relay_core::webhook::{retry_delay_ms, signature_header};
use relay_core::{DeliveryAttempt, DeliveryOutcome, Timestamp};
use relay_store::{DueDelivery, Pick, Store};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// The first retry's delay; each further one doubles (capped at six hours).
    pub retry_base_ms: u64,
    /// How long a receiver has to answer.
    pub timeout: Duration,
    /// Deliveries in flight at once, over all endpoints.
    pub concurrency: usize,
    /// Deliveries in flight at once to one endpoint.
    pub per_endpoint: usize,
    /// Consecutive failed attempts after which an endpoint's circuit opens: its deliveries wait
    /// for the cool-down instead of taking delivery slots.
    pub breaker_after: u32,
    /// The first cool-down; each time a trial delivery fails it doubles, to ten minutes.
    pub breaker_cooldown: Duration,
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
            per_endpoint: 4,
            breaker_after: 5,
            breaker_cooldown: Duration::from_secs(30),
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
    let body = serde_json::to_vec(&relay_engine::view::EventView::of(&d.event)).unwrap_or_default();
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

/// Records what an attempt got and schedules what follows. Returns whether it was delivered.
async fn finish<S: Store>(store: &S, d: &DueDelivery, sent: Sent, retry_base_ms: u64) -> bool {
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
    if let Err(e) = store
        .finish_delivery(d, &attempt, now, retry_at, disable)
        .await
    {
        tracing::error!(target: "relay::webhooks", error = %e, "cannot record a delivery attempt; it will be sent again");
    }
    outcome == DeliveryOutcome::Delivered
}

/// An endpoint's circuit: closed while it answers; open (its deliveries wait) after
/// `breaker_after` failures in a row; after the cool-down one trial delivery decides.
#[derive(Debug, Default)]
struct Circuit {
    failures: u32,
    open_until_ms: Option<u64>,
    cooldown_ms: u64,
}

const MAX_COOLDOWN_MS: u64 = 10 * 60 * 1000;

/// What the dispatcher knows about deliveries in flight and endpoints' health. Pure: the loop
/// feeds it outcomes and asks it what to pick.
#[derive(Debug)]
struct Lanes {
    per_endpoint: usize,
    breaker_after: u32,
    first_cooldown_ms: u64,
    in_flight: HashSet<Vec<u8>>,
    busy: HashMap<String, usize>,
    circuits: HashMap<String, Circuit>,
}

impl Lanes {
    fn new(config: &DispatchConfig) -> Lanes {
        Lanes {
            per_endpoint: config.per_endpoint.max(1),
            breaker_after: config.breaker_after.max(1),
            first_cooldown_ms: u64::try_from(config.breaker_cooldown.as_millis())
                .unwrap_or(MAX_COOLDOWN_MS)
                .clamp(1, MAX_COOLDOWN_MS),
            in_flight: HashSet::new(),
            busy: HashMap::new(),
            circuits: HashMap::new(),
        }
    }

    /// What to do with a due head of `lane` for `endpoint` at `now_ms`.
    fn pick(&self, endpoint: &str, lane: &[u8], now_ms: u64) -> Pick {
        if self.in_flight.contains(lane) {
            return Pick::Skip;
        }
        let busy = self.busy.get(endpoint).copied().unwrap_or(0);
        match self.circuits.get(endpoint) {
            Some(Circuit {
                open_until_ms: Some(until),
                ..
            }) => {
                if now_ms < *until {
                    // Spread the waiting deliveries over a second after the cool-down.
                    Pick::Defer(until + u64::from(rand::random::<u16>() % 1000))
                } else if busy == 0 {
                    Pick::Take // the trial delivery
                } else {
                    Pick::Skip
                }
            }
            _ if busy >= self.per_endpoint => Pick::Skip,
            _ => Pick::Take,
        }
    }

    fn start(&mut self, d: &DueDelivery) {
        self.in_flight.insert(d.lane.to_vec());
        *self.busy.entry(d.endpoint.id.clone()).or_default() += 1;
    }

    /// Records the end of a delivery. Returns true when this failure opened the circuit.
    fn done(&mut self, lane: &[u8], endpoint: &str, delivered: bool, now_ms: u64) -> bool {
        self.in_flight.remove(lane);
        if let Some(n) = self.busy.get_mut(endpoint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.busy.remove(endpoint);
            }
        }
        if delivered {
            self.circuits.remove(endpoint);
            return false;
        }
        let c = self.circuits.entry(endpoint.to_owned()).or_default();
        c.failures = c.failures.saturating_add(1);
        let trial_failed = c.open_until_ms.is_some_and(|until| now_ms >= until);
        if trial_failed {
            c.cooldown_ms = (c.cooldown_ms.saturating_mul(2)).min(MAX_COOLDOWN_MS);
            c.open_until_ms = Some(now_ms + c.cooldown_ms);
            false
        } else if c.open_until_ms.is_none() && c.failures >= self.breaker_after {
            c.cooldown_ms = self.first_cooldown_ms;
            c.open_until_ms = Some(now_ms + c.cooldown_ms);
            true
        } else {
            false
        }
    }
}

fn client(config: &DispatchConfig) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if !config.allow_private {
        builder = builder.dns_resolver(std::sync::Arc::new(PublicOnly));
    }
    builder.build()
}

/// Fans out and delivers until the task is dropped. Deliveries start as slots free up (no
/// batch waits for its slowest receiver); one endpoint has at most `per_endpoint` in flight, and
/// an endpoint that keeps failing has its circuit opened, so a receiver that never answers holds
/// only its own slots.
pub async fn dispatch_loop<S: Store + Clone>(store: S, config: DispatchConfig) {
    let client = match client(&config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target: "relay::webhooks", error = %e, "cannot build the webhook HTTP client");
            return;
        }
    };
    let concurrency = config.concurrency.max(1);
    let mut lanes = Lanes::new(&config);
    let mut tasks: tokio::task::JoinSet<bool> = tokio::task::JoinSet::new();
    // Lane and endpoint of each task, so a task that fails still frees its slots.
    let mut running: HashMap<tokio::task::Id, (Vec<u8>, String)> = HashMap::new();
    let mut rounds: u64 = 0;
    // Where the last look at the queue stopped (it goes round, so no busy endpoint's backlog
    // keeps the others' heads from being reached).
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let now = now_ms();
        loop {
            match store.fan_out(now, 1000).await {
                Ok(1000) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(target: "relay::webhooks", error = %e, "fan-out failed");
                    break;
                }
            }
        }
        let free = concurrency.saturating_sub(tasks.len());
        let due = if free == 0 {
            Vec::new()
        } else {
            match store
                .due_deliveries(now, free, cursor.as_deref(), |endpoint, lane| {
                    lanes.pick(endpoint, lane, now)
                })
                .await
            {
                Ok((due, next)) => {
                    cursor = next;
                    due
                }
                Err(e) => {
                    tracing::error!(target: "relay::webhooks", error = %e, "reading the delivery queue failed");
                    Vec::new()
                }
            }
        };
        // Counting the queue walks it: every 50th round is often enough for a gauge.
        rounds += 1;
        if rounds % 50 == 1 {
            metrics::gauge!("relay_webhook_backlog")
                .set(store.deliveries_pending().await.unwrap_or(0) as f64);
        }
        if !due.is_empty() {
            // Deliver only what is on disk: an event a crash could still take back must not
            // reach a merchant (concurrent writers share the flush). This also flushes the
            // records of finished attempts.
            if let Err(e) = store.durable().await {
                tracing::error!(target: "relay::webhooks", error = %e, "flushing before delivery failed");
                tokio::time::sleep(config.idle).await;
                continue;
            }
            for d in due {
                lanes.start(&d);
                let (client, store, base) = (client.clone(), store.clone(), config.retry_base_ms);
                let allow_private = config.allow_private;
                let key = (d.lane.to_vec(), d.endpoint.id.clone());
                let task = tasks.spawn(async move {
                    let sent = send(&client, &d, allow_private).await;
                    finish(&store, &d, sent, base).await
                });
                running.insert(task.id(), key);
            }
        }
        // Wait for a slot to free up, new events, or retries falling due.
        let finished = tokio::select! {
            Some(r) = tasks.join_next_with_id(), if !tasks.is_empty() => Some(r),
            _ = tokio::time::sleep(config.idle) => None,
            _ = store.subscribe(relay_store::Wake::Fanout).notified() => None,
        };
        let mut finished: Vec<_> = finished.into_iter().collect();
        while let Some(r) = tasks.try_join_next_with_id() {
            finished.push(r);
        }
        let now = now_ms();
        for r in finished {
            let (id, delivered) = match r {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(target: "relay::webhooks", error = %e, "a delivery task failed");
                    (e.id(), false)
                }
            };
            let Some((lane, endpoint)) = running.remove(&id) else {
                continue;
            };
            if lanes.done(&lane, &endpoint, delivered, now) {
                metrics::counter!("relay_webhook_circuits_opened_total").increment(1);
                tracing::warn!(target: "relay::webhooks", endpoint = %endpoint, "endpoint keeps failing: its deliveries wait for a cool-down");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes() -> Lanes {
        Lanes::new(&DispatchConfig {
            per_endpoint: 2,
            breaker_after: 3,
            breaker_cooldown: Duration::from_secs(10),
            ..Default::default()
        })
    }

    fn busy(l: &mut Lanes, endpoint: &str, lane: &[u8]) {
        l.in_flight.insert(lane.to_vec());
        *l.busy.entry(endpoint.to_owned()).or_default() += 1;
    }

    #[test]
    fn a_lane_in_flight_is_never_picked_twice_and_an_endpoint_gets_its_share_only() {
        let mut l = lanes();
        busy(&mut l, "we_a", b"a1");
        assert_eq!(l.pick("we_a", b"a1", 0), Pick::Skip);
        assert_eq!(l.pick("we_a", b"a2", 0), Pick::Take);
        busy(&mut l, "we_a", b"a2");
        assert_eq!(l.pick("we_a", b"a3", 0), Pick::Skip, "at its limit of 2");
        assert_eq!(
            l.pick("we_b", b"b1", 0),
            Pick::Take,
            "others are not held up"
        );
        assert!(!l.done(b"a1", "we_a", true, 0));
        assert_eq!(l.pick("we_a", b"a3", 0), Pick::Take);
        assert_eq!(
            l.pick("we_a", b"a1", 0),
            Pick::Take,
            "its lane is free again"
        );
    }

    #[test]
    fn failures_in_a_row_open_the_circuit_and_one_trial_decides_after_the_cool_down() {
        let mut l = lanes();
        for (i, lane) in [b"a1", b"a2"].iter().enumerate() {
            busy(&mut l, "we_a", *lane);
            assert!(!l.done(*lane, "we_a", false, i as u64), "not yet");
        }
        // A success in between starts the count again.
        busy(&mut l, "we_a", b"a1");
        l.done(b"a1", "we_a", true, 2);
        for n in 0..2 {
            busy(&mut l, "we_a", b"a1");
            assert!(!l.done(b"a1", "we_a", false, 3 + n));
        }
        busy(&mut l, "we_a", b"a1");
        assert!(
            l.done(b"a1", "we_a", false, 1_000),
            "third failure in a row opens it"
        );
        // Open: due deliveries move past the cool-down without an attempt.
        match l.pick("we_a", b"a9", 5_000) {
            Pick::Defer(at) => assert!((11_000..12_000).contains(&at), "{at}"),
            p => panic!("{p:?}"),
        }
        assert_eq!(l.pick("we_b", b"b1", 5_000), Pick::Take);
        // After it: one trial at a time.
        assert_eq!(l.pick("we_a", b"a9", 11_000), Pick::Take);
        busy(&mut l, "we_a", b"a9");
        assert_eq!(l.pick("we_a", b"a8", 11_000), Pick::Skip);
        // The trial fails: open again for twice as long.
        assert!(!l.done(b"a9", "we_a", false, 12_000));
        match l.pick("we_a", b"a9", 12_001) {
            Pick::Defer(at) => assert!((32_000..33_000).contains(&at), "{at}"),
            p => panic!("{p:?}"),
        }
        // A trial that succeeds closes it.
        busy(&mut l, "we_a", b"a9");
        l.done(b"a9", "we_a", true, 33_000);
        assert_eq!(l.pick("we_a", b"a8", 33_000), Pick::Take);
        busy(&mut l, "we_a", b"a8");
        assert_eq!(
            l.pick("we_a", b"a7", 33_000),
            Pick::Take,
            "back to two at once"
        );
    }

    #[test]
    fn the_cool_down_stops_doubling_at_ten_minutes() {
        let mut l = lanes();
        let mut now = 0;
        for _ in 0..3 {
            busy(&mut l, "we_a", b"a1");
            l.done(b"a1", "we_a", false, now);
        }
        for _ in 0..20 {
            now = l.circuits["we_a"].open_until_ms.unwrap();
            busy(&mut l, "we_a", b"a1");
            l.done(b"a1", "we_a", false, now);
        }
        assert_eq!(l.circuits["we_a"].cooldown_ms, MAX_COOLDOWN_MS);
    }
}
