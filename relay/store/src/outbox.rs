//! The webhook outbox: events queued for merchants' endpoints, delivered in order per invoice.
//!
//! Contract, for every backend:
//! - **Fan-out in the event's transaction.** An event of a merchant with a webhook endpoint is
//!   never stored without being marked for delivery in the same transaction; [`Outbox::fan_out`]
//!   later turns each mark into one queued delivery per endpoint that wants the event.
//! - **Lanes.** Deliveries are queued per endpoint and invoice (a *lane*). Only a lane's head is
//!   ever due, so the events of one invoice reach an endpoint in the order they were stored, while
//!   other lanes go on.
//! - **Wake-ups.** A write that marks events for fan-out wakes [`Wake::Fanout`]; a write that adds
//!   payout work wakes [`Wake::Payouts`]. A wake-up with nobody waiting is kept for the next
//!   waiter, so none is lost between a look at the store and the wait.
//! - **At least once.** A crash may repeat a delivery (the dispatcher's bookkeeping is not made
//!   durable on its own), never lose one.

use crate::StoreError;
use relay_core::{DeliveryAttempt, Event, EventId, Timestamp, WebhookEndpoint};
use std::future::Future;

/// How many due entries one look at the queue walks at most: entries passed over (lanes in
/// flight, saturated endpoints) count, so a long queue for one endpoint costs a bounded walk.
pub const MAX_DUE_WALK: usize = 10_000;

/// How many due entries passed over in a row end a look at the queue (the next look goes on from
/// there): a busy endpoint's backlog costs each look little, and is walked past over a few looks.
pub const MAX_SKIPS: usize = 256;

/// The lane of an endpoint and an invoice, as both backends spell it: `endpoint · 0 · invoice · 0`
/// (ids never contain a zero byte). Its keys start with it, so a lane's entries sort together.
pub fn lane_key(endpoint: &str, invoice: &str) -> Vec<u8> {
    let mut k = endpoint.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(invoice.as_bytes());
    k.push(0);
    k
}

/// A place in the due order: the time (ms, big-endian) then the lane, so byte order is time
/// order. Both backends' receipts and cursors are these.
pub fn due_key(at_ms: u64, lane: &[u8]) -> Vec<u8> {
    let mut k = at_ms.to_be_bytes().to_vec();
    k.extend_from_slice(lane);
    k
}

/// What to do with a due lane head (see [`Outbox::due_deliveries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Deliver it now.
    Take,
    /// Leave it due (its lane is in flight, or its endpoint busy).
    Skip,
    /// Move it to this time (ms) without an attempt (its endpoint's circuit is open).
    Defer(u64),
}

/// What a waiter is woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Events were marked for webhook fan-out.
    Fanout,
    /// Payout work was added (a refund or settlement for the operator).
    Payouts,
}

/// A lane head whose time has come.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub event: Event,
    pub endpoint: WebhookEndpoint,
    /// The number of the attempt about to be made (1 for the first).
    pub attempt: u32,
    /// When the first attempt was made (now, for the first).
    pub first_at: Timestamp,
    /// The lane (endpoint · invoice) this head leads, opaque: one delivery per lane is in flight
    /// at once.
    pub lane: Vec<u8>,
    /// The backend's own handle on this queue entry, handed back with the attempt's result.
    pub receipt: Vec<u8>,
}

/// The webhook endpoints, the delivery queue and the record of attempts.
pub trait Outbox: Send + Sync + 'static {
    /// Adds or replaces a webhook endpoint (replacing is how one is disabled).
    fn insert_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The merchant's webhook endpoints, oldest first.
    fn endpoints(
        &self,
        merchant: &relay_core::MerchantId,
    ) -> impl Future<Output = Result<Vec<WebhookEndpoint>, StoreError>> + Send;
    /// Every delivery attempt of an event, by endpoint then attempt number.
    fn delivery_attempts(
        &self,
        event: &EventId,
    ) -> impl Future<Output = Result<Vec<DeliveryAttempt>, StoreError>> + Send;
    /// Queues an event again for the merchant's endpoints that want it (a delivery of it already
    /// pending is left as it is); returns how many deliveries were queued. Made durable by the
    /// next [`crate::Store::durable`].
    fn redeliver(
        &self,
        event: &Event,
        now_ms: u64,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
    /// Deliveries not yet made: an event of a merchant with an endpoint is counted from the
    /// transaction that stores it, until its delivery ends. May walk the whole queue: for tests
    /// and metrics, not for every request.
    fn deliveries_pending(&self) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Turns up to `limit` events marked for fan-out into queued deliveries, due at `now_ms`.
    /// Returns how many marks it took (0: none left).
    fn fan_out(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Lane heads due at `now_ms`, as `pick` decides for each (by endpoint id and lane, before
    /// anything is decoded): taken, passed over, or deferred to a later time without an attempt.
    /// The walk starts after `cursor` (oldest first without one) and wraps around, so heads passed
    /// over are reached again on a later call; it stops after `limit` taken, [`MAX_DUE_WALK`]
    /// entries, or [`MAX_SKIPS`] passed over in a row. Returns the heads taken and where to go on
    /// from (`None` when the walk went all the way round). Lanes of disabled or deleted endpoints
    /// are dropped on the way.
    fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        cursor: Option<&[u8]>,
        pick: impl FnMut(&str, &[u8]) -> Pick + Send,
    ) -> impl Future<Output = Result<(Vec<DueDelivery>, Option<Vec<u8>>), StoreError>> + Send;

    /// Records an attempt. `retry_at_ms`: when to try again; `None` when the delivery is over
    /// (delivered, given up, or the endpoint is gone — then `disable` says why, and the endpoint
    /// is disabled). A finished head hands its lane to the next event, due at `now_ms`.
    fn finish_delivery(
        &self,
        delivery: &DueDelivery,
        attempt: &DeliveryAttempt,
        now_ms: u64,
        retry_at_ms: Option<u64>,
        disable: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The wake-up for `what`: wait on it with `notified()` between looks at the store.
    fn subscribe(&self, what: Wake) -> &tokio::sync::Notify;
}
