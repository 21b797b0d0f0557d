//! The webhook delivery queue.
//!
//! - `webhook_endpoints`: merchant · endpoint id → endpoint.
//! - `webhook_fanout`: event id → (), written in the event's own transaction (see
//!   `write_events`); fan-out turns each into queue entries and removes it.
//! - `webhook_queue`: endpoint · invoice · event id → entry. One *lane* per endpoint and invoice;
//!   event ids are time-ordered, so a lane lists an invoice's events in order, and only its head is
//!   ever attempted: events of one invoice reach an endpoint in order.
//! - `webhook_due`: when (ms, big-endian) · lane → the head's queue key.
//! - `webhook_attempts`: event · endpoint · attempt number → what it got.
//!
//! Writers of these trees hold `webhook_lock`, so they may read outside their transaction; each
//! writes its changes in one transaction.

use super::{SledStore, LANE_SEP};
use crate::codec::{decode, encode};
use relay_core::{DeliveryAttempt, Event, EventId, MerchantId, Timestamp, WebhookEndpoint};
use relay_store::{
    due_key, lane_key, DueDelivery, Outbox, Pick, StoreError, Wake, MAX_DUE_WALK, MAX_SKIPS,
};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use std::collections::HashSet;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct QueueEntry {
    merchant_id: MerchantId,
    /// Attempts made so far.
    attempts: u32,
    first_at: Option<Timestamp>,
    next_at_ms: u64,
}

fn endpoint_key(merchant: &MerchantId, id: &str) -> Vec<u8> {
    let mut k = merchant.as_str().as_bytes().to_vec();
    k.push(LANE_SEP);
    k.extend_from_slice(id.as_bytes());
    k
}

fn attempt_key(event: &str, endpoint: &str, n: u32) -> Vec<u8> {
    let mut k = event.as_bytes().to_vec();
    k.push(LANE_SEP);
    k.extend_from_slice(endpoint.as_bytes());
    k.push(LANE_SEP);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Writes collected under the lock and applied in one transaction.
#[derive(Default)]
struct Writes {
    queue: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    due: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    fanout_done: Vec<Vec<u8>>,
    attempts: Vec<(Vec<u8>, Vec<u8>)>,
    endpoints: Vec<(Vec<u8>, Vec<u8>)>,
}

impl SledStore {
    fn lock_webhooks(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .webhook_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `w` in one transaction. `counted`: whether [`Store::durable`] must sync it. The
    /// dispatcher's own bookkeeping (fan-out, scheduling, attempt records) is not counted: it is
    /// flushed with the next sync, and losing it in a crash only means deliveries are made again
    /// (receivers dedupe on the event id) — so delivering does not cost a disk sync per round.
    fn apply_webhook_writes(&self, w: Writes, counted: bool) -> Result<(), StoreError> {
        let _gate = self.write_gate();
        let i = &self.inner;
        (
            &i.webhook_queue,
            &i.webhook_due,
            &i.webhook_fanout,
            &i.webhook_attempts,
            &i.webhook_endpoints,
        )
            .transaction(|(q, d, f, a, e)| {
                for (k, v) in &w.queue {
                    match v {
                        Some(v) => q.insert(k.as_slice(), v.as_slice())?,
                        None => q.remove(k.as_slice())?,
                    };
                }
                for (k, v) in &w.due {
                    match v {
                        Some(v) => d.insert(k.as_slice(), v.as_slice())?,
                        None => d.remove(k.as_slice())?,
                    };
                }
                for k in &w.fanout_done {
                    f.remove(k.as_slice())?;
                }
                for (k, v) in &w.attempts {
                    a.insert(k.as_slice(), v.as_slice())?;
                }
                for (k, v) in &w.endpoints {
                    e.insert(k.as_slice(), v.as_slice())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::from(e),
                sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
                    what: "webhook queue",
                    reason: "aborted".into(),
                },
            })?;
        if counted {
            self.inner
                .written
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }

    /// Loads which merchants have endpoints (at open).
    pub(crate) fn load_hooked_merchants(&self) -> Result<(), StoreError> {
        let mut set = std::collections::HashSet::new();
        for kv in self.inner.webhook_endpoints.iter() {
            let e: WebhookEndpoint = decode("webhook endpoint", &kv?.1)?;
            set.insert(e.merchant_id.as_str().to_owned());
        }
        *self
            .inner
            .hooked_merchants
            .write()
            .unwrap_or_else(|p| p.into_inner()) = set;
        Ok(())
    }

    pub(crate) fn insert_endpoint_impl(&self, e: &WebhookEndpoint) -> Result<(), StoreError> {
        let _gate = self.write_gate();
        // Marked first: every event written from now on is queued for this merchant.
        self.inner
            .hooked_merchants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(e.merchant_id.as_str().to_owned());
        self.inner.webhook_endpoints.insert(
            endpoint_key(&e.merchant_id, &e.id),
            encode(&self.seal_endpoint(e)),
        )?;
        self.inner
            .written
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    pub(crate) fn endpoints_impl(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let mut prefix = merchant.as_str().as_bytes().to_vec();
        prefix.push(LANE_SEP);
        self.inner
            .webhook_endpoints
            .scan_prefix(prefix)
            .map(|kv| self.open_endpoint(decode("webhook endpoint", &kv?.1)?))
            .collect()
    }

    pub(crate) fn attempts_impl(
        &self,
        event: &EventId,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let mut prefix = event.as_str().as_bytes().to_vec();
        prefix.push(LANE_SEP);
        self.inner
            .webhook_attempts
            .scan_prefix(prefix)
            .map(|kv| decode("delivery attempt", &kv?.1))
            .collect()
    }

    /// Queues `event` for each of `endpoints` that wants it and has no delivery of it pending.
    fn enqueue(
        &self,
        event: &Event,
        endpoints: &[WebhookEndpoint],
        now_ms: u64,
        started: &mut HashSet<Vec<u8>>,
        w: &mut Writes,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for e in endpoints.iter().filter(|e| e.wants(event.kind.as_str())) {
            let lane = lane_key(&e.id, event.invoice.id.as_str());
            let mut qk = lane.clone();
            qk.extend_from_slice(event.id.as_str().as_bytes());
            if self.inner.webhook_queue.get(&qk)?.is_some() {
                continue;
            }
            let empty = !started.contains(&lane)
                && self.inner.webhook_queue.scan_prefix(&lane).next().is_none();
            let entry = QueueEntry {
                merchant_id: event.merchant_id.clone(),
                attempts: 0,
                first_at: None,
                next_at_ms: now_ms,
            };
            w.queue.push((qk.clone(), Some(encode(&entry))));
            if empty {
                w.due.push((due_key(now_ms, &lane), Some(qk)));
                started.insert(lane);
            }
            n += 1;
        }
        Ok(n)
    }

    /// Turns up to `limit` newly written events into queued deliveries. Returns how many events
    /// it looked at.
    pub(crate) fn fan_out_impl(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let _guard = self.lock_webhooks();
        let mut w = Writes::default();
        let mut started = HashSet::new();
        // The merchant's endpoints, by the merchant id each marker carries: looked up once per
        // merchant, and an event is read only when its merchant has an endpoint.
        let mut endpoints: std::collections::HashMap<Vec<u8>, Vec<WebhookEndpoint>> =
            Default::default();
        let mut seen = 0;
        for kv in self.inner.webhook_fanout.iter().take(limit) {
            let (id, merchant) = kv?;
            seen += 1;
            w.fanout_done.push(id.to_vec());
            if !endpoints.contains_key(merchant.as_ref()) {
                let list = match std::str::from_utf8(&merchant)
                    .ok()
                    .and_then(MerchantId::parse)
                {
                    Some(m) => self.endpoints_impl(&m)?,
                    None => Vec::new(),
                };
                endpoints.insert(merchant.to_vec(), list);
            }
            let list = &endpoints[merchant.as_ref()];
            if list.is_empty() {
                continue;
            }
            let Some(raw) = self.inner.events.get(&id)? else {
                continue;
            };
            let event: Event = decode("event", &raw)?;
            self.enqueue(&event, list, now_ms, &mut started, &mut w)?;
        }
        if seen > 0 {
            self.apply_webhook_writes(w, false)?;
        }
        Ok(seen)
    }

    /// Queues `event` again for the merchant's endpoints that want it (a delivery of it already
    /// pending is left as it is). Returns how many deliveries were queued.
    pub(crate) fn redeliver_impl(&self, event: &Event, now_ms: u64) -> Result<usize, StoreError> {
        let _guard = self.lock_webhooks();
        let list = self.endpoints_impl(&event.merchant_id)?;
        let mut w = Writes::default();
        let n = self.enqueue(event, &list, now_ms, &mut HashSet::new(), &mut w)?;
        if n > 0 {
            self.apply_webhook_writes(w, true)?;
        }
        Ok(n)
    }

    /// Lane heads due at `now_ms`, as `pick` decides for each (by endpoint id and lane, before
    /// anything is decoded): taken, passed over, or deferred to a later time without an attempt.
    /// The walk starts after `cursor` (oldest first without one) and wraps around, so heads passed
    /// over are reached again on a later call; it stops after [`MAX_DUE_WALK`] entries, or
    /// [`MAX_SKIPS`] passed over in a row. Returns the heads taken and where to go on from (`None`
    /// when the walk went all the way round). Lanes of disabled or deleted endpoints are dropped
    /// on the way.
    pub(crate) fn due_deliveries_impl(
        &self,
        now_ms: u64,
        limit: usize,
        cursor: Option<&[u8]>,
        mut pick: impl FnMut(&str, &[u8]) -> Pick,
    ) -> Result<(Vec<DueDelivery>, Option<Vec<u8>>), StoreError> {
        use std::ops::Bound;
        let _guard = self.lock_webhooks();
        let mut out = Vec::new();
        let mut writes = Writes::default();
        let upper = (now_ms + 1).to_be_bytes().to_vec();
        let due = &self.inner.webhook_due;
        let (after, before) = match cursor {
            Some(c) => (
                due.range::<&[u8], _>((Bound::Excluded(c), Bound::Excluded(upper.as_slice()))),
                due.range::<&[u8], _>((Bound::Unbounded, Bound::Included(c.min(upper.as_slice())))),
            ),
            None => (
                due.range::<&[u8], _>((Bound::Unbounded, Bound::Excluded(upper.as_slice()))),
                due.range::<&[u8], _>((Bound::Excluded(&[][..]), Bound::Excluded(&[][..]))),
            ),
        };
        let mut skipped = 0;
        let mut last: Option<Vec<u8>> = None;
        let mut stopped = false;
        for (walked, kv) in after.chain(before).enumerate() {
            if out.len() >= limit || walked >= MAX_DUE_WALK || skipped >= MAX_SKIPS {
                stopped = true;
                break;
            }
            let (dk, qk) = kv?;
            last = Some(dk.to_vec());
            let lane = dk[8..].to_vec();
            let endpoint_id =
                std::str::from_utf8(lane.split(|b| *b == LANE_SEP).next().unwrap_or_default())
                    .unwrap_or_default()
                    .to_owned();
            match pick(&endpoint_id, &lane) {
                Pick::Take => skipped = 0,
                Pick::Skip => {
                    skipped += 1;
                    continue;
                }
                Pick::Defer(at_ms) => {
                    writes.due.push((dk.to_vec(), None));
                    writes.due.push((due_key(at_ms, &lane), Some(qk.to_vec())));
                    continue;
                }
            }
            let Some(raw) = self.inner.webhook_queue.get(&qk)? else {
                writes.due.push((dk.to_vec(), None));
                continue;
            };
            let entry: QueueEntry = decode("webhook queue entry", &raw)?;
            let event_id = &qk[lane.len()..];
            let endpoint: Option<WebhookEndpoint> = self
                .inner
                .webhook_endpoints
                .get(endpoint_key(&entry.merchant_id, &endpoint_id))?
                .map(|v| self.open_endpoint(decode("webhook endpoint", &v)?))
                .transpose()?;
            let event: Option<Event> = self
                .inner
                .events
                .get(event_id)?
                .map(|v| decode("event", &v))
                .transpose()?;
            match (endpoint, event) {
                (Some(endpoint), Some(event)) if endpoint.enabled => out.push(DueDelivery {
                    receipt: dk.to_vec(),
                    lane,
                    event,
                    endpoint,
                    attempt: entry.attempts + 1,
                    first_at: entry.first_at.unwrap_or(Timestamp((now_ms / 1000) as i64)),
                }),
                _ => {
                    writes.due.push((dk.to_vec(), None));
                    for k in self.inner.webhook_queue.scan_prefix(&lane).keys() {
                        writes.queue.push((k?.to_vec(), None));
                    }
                }
            }
        }
        if !writes.due.is_empty() {
            self.apply_webhook_writes(writes, false)?;
        }
        Ok((out, if stopped { last } else { None }))
    }

    /// Records an attempt. `retry_at_ms`: when to try again; `None` when the delivery is over
    /// (delivered, given up, or the endpoint is gone — then `disable` says why, and the endpoint
    /// is disabled). A finished head hands its lane to the next event.
    pub(crate) fn finish_delivery_impl(
        &self,
        d: &DueDelivery,
        attempt: &DeliveryAttempt,
        now_ms: u64,
        retry_at_ms: Option<u64>,
        disable: Option<&str>,
    ) -> Result<(), StoreError> {
        let _guard = self.lock_webhooks();
        // The receipt is the head's due key; its queue key is the lane and the event id.
        let queue_key = [d.lane.as_slice(), d.event.id.as_str().as_bytes()].concat();
        let mut w = Writes::default();
        w.attempts.push((
            attempt_key(d.event.id.as_str(), &d.endpoint.id, attempt.attempt),
            encode(attempt),
        ));
        w.due.push((d.receipt.clone(), None));
        match retry_at_ms {
            Some(at) => {
                let entry = QueueEntry {
                    merchant_id: d.event.merchant_id.clone(),
                    attempts: attempt.attempt,
                    first_at: Some(d.first_at),
                    next_at_ms: at,
                };
                w.queue.push((queue_key.clone(), Some(encode(&entry))));
                w.due.push((due_key(at, &d.lane), Some(queue_key.clone())));
            }
            None => {
                w.queue.push((queue_key.clone(), None));
                let next = self
                    .inner
                    .webhook_queue
                    .scan_prefix(&d.lane)
                    .keys()
                    .find(|k| {
                        k.as_ref()
                            .map_or(true, |k| k.as_ref() != queue_key.as_slice())
                    })
                    .transpose()?;
                if let Some(next) = next {
                    w.due.push((due_key(now_ms, &d.lane), Some(next.to_vec())));
                }
            }
        }
        if let Some(reason) = disable {
            let mut e = d.endpoint.clone();
            e.enabled = false;
            e.disabled_reason = Some(reason.to_owned());
            w.endpoints.push((
                endpoint_key(&e.merchant_id, &e.id),
                encode(&self.seal_endpoint(&e)),
            ));
        }
        self.apply_webhook_writes(w, false)
    }

    /// Deliveries waiting (queued, including lane heads) plus events not yet fanned out, for tests
    /// and metrics. Walks both trees: not for every request.
    pub fn webhook_backlog(&self) -> usize {
        self.inner.webhook_queue.len() + self.inner.webhook_fanout.len()
    }
}

impl Outbox for SledStore {
    async fn insert_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        self.insert_endpoint_impl(endpoint)
    }

    async fn endpoints(&self, merchant: &MerchantId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.endpoints_impl(merchant)
    }

    async fn delivery_attempts(&self, event: &EventId) -> Result<Vec<DeliveryAttempt>, StoreError> {
        self.attempts_impl(event)
    }

    async fn redeliver(&self, event: &Event, now_ms: u64) -> Result<usize, StoreError> {
        self.redeliver_impl(event, now_ms)
    }

    async fn deliveries_pending(&self) -> Result<usize, StoreError> {
        Ok(self.webhook_backlog())
    }

    async fn fan_out(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.fan_out_impl(now_ms, limit)
    }

    async fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        cursor: Option<&[u8]>,
        pick: impl FnMut(&str, &[u8]) -> Pick + Send,
    ) -> Result<(Vec<DueDelivery>, Option<Vec<u8>>), StoreError> {
        self.due_deliveries_impl(now_ms, limit, cursor, pick)
    }

    async fn finish_delivery(
        &self,
        delivery: &DueDelivery,
        attempt: &DeliveryAttempt,
        now_ms: u64,
        retry_at_ms: Option<u64>,
        disable: Option<&str>,
    ) -> Result<(), StoreError> {
        self.finish_delivery_impl(delivery, attempt, now_ms, retry_at_ms, disable)
    }

    fn subscribe(&self, what: Wake) -> &tokio::sync::Notify {
        match what {
            Wake::Fanout => &self.inner.fanout_wake,
            Wake::Payouts => &self.inner.payout_wake,
        }
    }
}
