//! The webhook outbox (see `relay_store::outbox` for the contract, and the migration for the
//! tables).
//!
//! A lane is one endpoint and one invoice. `webhook_lanes` holds each non-empty lane's head and
//! when it is due; its row is the lane's lock: a writer that adds to a lane upserts the row, and
//! one that ends a delivery locks it before it looks for the next head, so a lane is never left
//! without its head nor a head without its lane, whichever relay writes.
//!
//! The opaque handles are those of sled: a lane is `endpoint · 0 · invoice · 0`, a receipt and a
//! cursor are the due time (ms, big-endian) followed by the lane.

use crate::{db, decode, encode, PgStore};
use relay_core::{DeliveryAttempt, Event, EventId, MerchantId, Timestamp, WebhookEndpoint};
use relay_store::{
    due_key, lane_key, DueDelivery, Outbox, Pick, StoreError, Wake, MAX_DUE_WALK, MAX_SKIPS,
};
use sqlx::{PgConnection, Row};
use std::collections::HashMap;

const SEP: u8 = 0;

/// A position in the due order: (due ms, endpoint, invoice), from a cursor.
fn position(cursor: &[u8]) -> Option<(i64, String, String)> {
    let at = i64::try_from(u64::from_be_bytes(cursor.get(..8)?.try_into().ok()?)).ok()?;
    let mut parts = cursor[8..].split(|b| *b == SEP);
    let endpoint = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let invoice = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((at, endpoint, invoice))
}

fn ms(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Queues `event` for each of `endpoints` that wants it and has no delivery of it pending, in the
/// caller's transaction. Returns how many deliveries it queued.
async fn enqueue(
    conn: &mut PgConnection,
    event: &Event,
    endpoints: &[WebhookEndpoint],
    now_ms: u64,
) -> Result<usize, sqlx::Error> {
    let mut n = 0;
    for e in endpoints.iter().filter(|e| e.wants(event.kind.as_str())) {
        let queued = sqlx::query(
            "INSERT INTO webhook_queue \
             (endpoint_id, invoice_id, event_id, merchant_id, attempts, first_at) \
             VALUES ($1, $2, $3, $4, 0, NULL) ON CONFLICT DO NOTHING",
        )
        .bind(&e.id)
        .bind(event.invoice.id.as_str())
        .bind(event.id.as_str())
        .bind(event.merchant_id.as_str())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if queued == 0 {
            continue;
        }
        // A new lane starts with this event as its head; an existing one keeps its head (the
        // upsert takes the lane's lock, so a delivery ending meanwhile sees this event).
        sqlx::query(
            "INSERT INTO webhook_lanes (endpoint_id, invoice_id, head_event, due_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (endpoint_id, invoice_id) \
             DO UPDATE SET due_at_ms = webhook_lanes.due_at_ms",
        )
        .bind(&e.id)
        .bind(event.invoice.id.as_str())
        .bind(event.id.as_str())
        .bind(ms(now_ms))
        .execute(&mut *conn)
        .await?;
        n += 1;
    }
    Ok(n)
}

/// Hands a lane to its next queued event, due at `now_ms`, or removes it when none is left; the
/// caller holds the lane's row lock.
async fn next_head(
    conn: &mut PgConnection,
    endpoint: &str,
    invoice: &str,
    now_ms: u64,
) -> Result<(), sqlx::Error> {
    let next: Option<String> = sqlx::query_scalar(
        "SELECT event_id FROM webhook_queue WHERE endpoint_id = $1 AND invoice_id = $2 \
         ORDER BY event_id LIMIT 1",
    )
    .bind(endpoint)
    .bind(invoice)
    .fetch_optional(&mut *conn)
    .await?;
    match next {
        Some(next) => {
            sqlx::query(
                "UPDATE webhook_lanes SET head_event = $3, due_at_ms = $4 \
                 WHERE endpoint_id = $1 AND invoice_id = $2",
            )
            .bind(endpoint)
            .bind(invoice)
            .bind(next)
            .bind(ms(now_ms))
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM webhook_lanes WHERE endpoint_id = $1 AND invoice_id = $2")
                .bind(endpoint)
                .bind(invoice)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// How many due lanes one query reads.
const DUE_PAGE: i64 = 256;

impl PgStore {
    /// Drops a lane and everything queued in it (its endpoint is disabled or gone).
    async fn drop_lane(&self, endpoint: &str, invoice: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for table in ["webhook_lanes", "webhook_queue"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE endpoint_id = $1 AND invoice_id = $2"
            ))
            .bind(endpoint)
            .bind(invoice)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Loads a taken head: its queue entry, event and endpoint. `None` when its lane was dropped
    /// or repaired on the way (nothing to deliver now).
    async fn load_head(
        &self,
        endpoint_id: &str,
        invoice_id: &str,
        event_id: &str,
        now_ms: u64,
    ) -> Result<Option<(Event, WebhookEndpoint, i32, Option<i64>)>, StoreError> {
        let row = sqlx::query(
            "SELECT q.attempts, q.first_at, e.body AS event, w.body AS endpoint \
             FROM webhook_queue q \
             LEFT JOIN events e ON e.id = q.event_id \
             LEFT JOIN webhook_endpoints w ON w.merchant_id = q.merchant_id AND w.id = q.endpoint_id \
             WHERE q.endpoint_id = $1 AND q.invoice_id = $2 AND q.event_id = $3",
        )
        .bind(endpoint_id)
        .bind(invoice_id)
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            // A head without its entry (not written by this backend): hand the lane on.
            let mut tx = self.begin().await?;
            sqlx::query(
                "SELECT 1 FROM webhook_lanes WHERE endpoint_id = $1 AND invoice_id = $2 FOR UPDATE",
            )
            .bind(endpoint_id)
            .bind(invoice_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            next_head(&mut tx, endpoint_id, invoice_id, now_ms)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Ok(None);
        };
        let event: Option<&str> = row.get("event");
        let endpoint: Option<&str> = row.get("endpoint");
        let (Some(event), Some(endpoint)) = (event, endpoint) else {
            self.drop_lane(endpoint_id, invoice_id).await?;
            return Ok(None);
        };
        let endpoint = self.open_endpoint(endpoint)?;
        if !endpoint.enabled {
            self.drop_lane(endpoint_id, invoice_id).await?;
            return Ok(None);
        }
        Ok(Some((
            decode("event", event)?,
            endpoint,
            row.get("attempts"),
            row.get("first_at"),
        )))
    }

    /// One page of due lanes after `from` (exclusive) and up to `through` (inclusive), both
    /// positions in the due order, all due at `now_ms`.
    async fn due_page(
        &self,
        now_ms: u64,
        from: Option<&(i64, String, String)>,
        through: Option<&(i64, String, String)>,
    ) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let lowest = (i64::MIN, String::new(), String::new());
        let from = from.unwrap_or(&lowest);
        let mut q = String::from(
            "SELECT due_at_ms, endpoint_id, invoice_id, head_event FROM webhook_lanes \
             WHERE due_at_ms <= $1 AND (due_at_ms, endpoint_id, invoice_id) > ($2, $3, $4)",
        );
        if through.is_some() {
            q.push_str(" AND (due_at_ms, endpoint_id, invoice_id) <= ($5, $6, $7)");
        }
        q.push_str(" ORDER BY due_at_ms, endpoint_id, invoice_id LIMIT ");
        q.push_str(&DUE_PAGE.to_string());
        let mut query = sqlx::query(&q)
            .bind(ms(now_ms))
            .bind(from.0)
            .bind(&from.1)
            .bind(&from.2);
        if let Some(t) = through {
            query = query.bind(t.0).bind(&t.1).bind(&t.2);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get("due_at_ms"),
                    r.get("endpoint_id"),
                    r.get("invoice_id"),
                    r.get("head_event"),
                )
            })
            .collect())
    }
}

impl Outbox for PgStore {
    async fn insert_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (merchant_id, id, body) VALUES ($1, $2, $3) \
             ON CONFLICT (merchant_id, id) DO UPDATE SET body = excluded.body",
        )
        .bind(endpoint.merchant_id.as_str())
        .bind(&endpoint.id)
        .bind(encode(&self.seal_endpoint(endpoint)))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn endpoints(&self, merchant: &MerchantId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM webhook_endpoints WHERE merchant_id = $1 ORDER BY id",
        )
        .bind(merchant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        bodies.iter().map(|b| self.open_endpoint(b)).collect()
    }

    async fn delivery_attempts(&self, event: &EventId) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM webhook_attempts WHERE event_id = $1 ORDER BY endpoint_id, attempt",
        )
        .bind(event.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        bodies
            .iter()
            .map(|b| decode("delivery attempt", b))
            .collect()
    }

    async fn redeliver(&self, event: &Event, now_ms: u64) -> Result<usize, StoreError> {
        let endpoints = self.endpoints(&event.merchant_id).await?;
        let mut tx = self.begin().await?;
        let n = enqueue(&mut tx, event, &endpoints, now_ms)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(n)
    }

    async fn deliveries_pending(&self) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM webhook_queue) + (SELECT count(*) FROM webhook_fanout)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn fan_out(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut tx = self.begin().await?;
        // Marks another relay is fanning out are passed over, not waited for.
        let rows = sqlx::query(
            "SELECT f.event_id, f.merchant_id, e.body FROM webhook_fanout f \
             LEFT JOIN events e ON e.id = f.event_id \
             ORDER BY f.event_id LIMIT $1 FOR UPDATE OF f SKIP LOCKED",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut endpoints: HashMap<String, Vec<WebhookEndpoint>> = HashMap::new();
        let mut done = Vec::with_capacity(rows.len());
        for row in &rows {
            let event_id: String = row.get("event_id");
            let merchant: String = row.get("merchant_id");
            let body: Option<&str> = row.get("body");
            done.push(event_id);
            let Some(body) = body else {
                continue;
            };
            if !endpoints.contains_key(&merchant) {
                let list = match MerchantId::parse(&merchant) {
                    Some(m) => self.endpoints(&m).await?,
                    None => Vec::new(),
                };
                endpoints.insert(merchant.clone(), list);
            }
            let event: Event = decode("event", body)?;
            enqueue(&mut tx, &event, &endpoints[&merchant], now_ms)
                .await
                .map_err(db)?;
        }
        if !done.is_empty() {
            sqlx::query("DELETE FROM webhook_fanout WHERE event_id = ANY($1)")
                .bind(&done)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(done.len())
    }

    async fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        cursor: Option<&[u8]>,
        mut pick: impl FnMut(&str, &[u8]) -> Pick + Send,
    ) -> Result<(Vec<DueDelivery>, Option<Vec<u8>>), StoreError> {
        let start = cursor.and_then(position);
        let mut out = Vec::new();
        let (mut walked, mut skipped) = (0, 0);
        let mut last: Option<Vec<u8>> = None;
        // After the cursor to the end, then from the start through the cursor (the wrap-around).
        let legs = [(start.clone(), None), (None, start.clone())];
        for (leg, (from, through)) in legs.into_iter().enumerate() {
            if leg == 1 && through.is_none() {
                break;
            }
            let mut from = from;
            loop {
                let page = self
                    .due_page(now_ms, from.as_ref(), through.as_ref())
                    .await?;
                let full = page.len() as i64 == DUE_PAGE;
                for (at, endpoint_id, invoice_id, head) in page {
                    if out.len() >= limit || walked >= MAX_DUE_WALK || skipped >= MAX_SKIPS {
                        return Ok((out, last));
                    }
                    walked += 1;
                    let lane = lane_key(&endpoint_id, &invoice_id);
                    let at_ms = u64::try_from(at).unwrap_or(0);
                    last = Some(due_key(at_ms, &lane));
                    from = Some((at, endpoint_id.clone(), invoice_id.clone()));
                    match pick(&endpoint_id, &lane) {
                        Pick::Take => skipped = 0,
                        Pick::Skip => {
                            skipped += 1;
                            continue;
                        }
                        Pick::Defer(to_ms) => {
                            let mut tx = self.begin().await?;
                            sqlx::query(
                                "UPDATE webhook_lanes SET due_at_ms = $3 \
                                 WHERE endpoint_id = $1 AND invoice_id = $2",
                            )
                            .bind(&endpoint_id)
                            .bind(&invoice_id)
                            .bind(ms(to_ms))
                            .execute(&mut *tx)
                            .await
                            .map_err(db)?;
                            tx.commit().await.map_err(db)?;
                            continue;
                        }
                    }
                    let Some((event, endpoint, attempts, first_at)) = self
                        .load_head(&endpoint_id, &invoice_id, &head, now_ms)
                        .await?
                    else {
                        continue;
                    };
                    out.push(DueDelivery {
                        receipt: due_key(at_ms, &lane),
                        lane,
                        event,
                        endpoint,
                        attempt: u32::try_from(attempts).unwrap_or(0) + 1,
                        first_at: first_at.map_or(Timestamp((now_ms / 1000) as i64), Timestamp),
                    });
                }
                if !full {
                    break;
                }
            }
        }
        Ok((out, None))
    }

    async fn finish_delivery(
        &self,
        d: &DueDelivery,
        attempt: &DeliveryAttempt,
        now_ms: u64,
        retry_at_ms: Option<u64>,
        disable: Option<&str>,
    ) -> Result<(), StoreError> {
        let (endpoint, invoice, event) = (
            d.endpoint.id.as_str(),
            d.event.invoice.id.as_str(),
            d.event.id.as_str(),
        );
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (event_id, endpoint_id, attempt, body) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (event_id, endpoint_id, attempt) \
             DO UPDATE SET body = excluded.body",
        )
        .bind(event)
        .bind(endpoint)
        .bind(i32::try_from(attempt.attempt).unwrap_or(i32::MAX))
        .bind(encode(attempt))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "SELECT 1 FROM webhook_lanes WHERE endpoint_id = $1 AND invoice_id = $2 FOR UPDATE",
        )
        .bind(endpoint)
        .bind(invoice)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        match retry_at_ms {
            Some(at) => {
                sqlx::query(
                    "UPDATE webhook_queue SET attempts = $4, first_at = $5 \
                     WHERE endpoint_id = $1 AND invoice_id = $2 AND event_id = $3",
                )
                .bind(endpoint)
                .bind(invoice)
                .bind(event)
                .bind(i32::try_from(attempt.attempt).unwrap_or(i32::MAX))
                .bind(d.first_at.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                sqlx::query(
                    "UPDATE webhook_lanes SET due_at_ms = $3 \
                     WHERE endpoint_id = $1 AND invoice_id = $2",
                )
                .bind(endpoint)
                .bind(invoice)
                .bind(ms(at))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            None => {
                sqlx::query(
                    "DELETE FROM webhook_queue \
                     WHERE endpoint_id = $1 AND invoice_id = $2 AND event_id = $3",
                )
                .bind(endpoint)
                .bind(invoice)
                .bind(event)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                next_head(&mut tx, endpoint, invoice, now_ms)
                    .await
                    .map_err(db)?;
            }
        }
        if let Some(reason) = disable {
            let mut e = d.endpoint.clone();
            e.enabled = false;
            e.disabled_reason = Some(reason.to_owned());
            sqlx::query(
                "UPDATE webhook_endpoints SET body = $3 WHERE merchant_id = $1 AND id = $2",
            )
            .bind(e.merchant_id.as_str())
            .bind(&e.id)
            .bind(encode(&self.seal_endpoint(&e)))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    fn subscribe(&self, what: Wake) -> &tokio::sync::Notify {
        match what {
            Wake::Fanout => &self.wakes.fanout,
            Wake::Payouts => &self.wakes.payouts,
        }
    }
}
