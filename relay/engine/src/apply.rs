//! One invoice change outside a request's own write: apply an input to a fresh copy and store it
//! with its events, redone when the invoice changed meanwhile (optimistic concurrency). Used by
//! the refund routes and by the binary's operator and reconciliation loops.

use crate::IdSource;
use relay_core::invoice::InvoiceInput;
use relay_core::{Clock, CoreError, Event, InvoiceId};
use relay_store::{Commit, Store, StoreError};
use std::fmt;

/// Why [`apply_input`] stored nothing.
#[derive(Debug)]
pub enum ApplyError {
    Store(StoreError),
    /// The invoice refused the input.
    Refused(CoreError),
    /// The invoice kept changing under every attempt.
    Busy(InvoiceId),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Store(e) => write!(f, "{e}"),
            ApplyError::Refused(e) => write!(f, "{e}"),
            ApplyError::Busy(id) => write!(f, "invoice {id} kept changing"),
        }
    }
}

impl std::error::Error for ApplyError {}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> ApplyError {
        ApplyError::Store(e)
    }
}

/// Applies `input` to invoice `id` as it is now and stores the result with its events. Returns
/// whether the invoice changed (`false` too when there is no such invoice). Not flushed: callers
/// that answer someone call `durable` first.
pub fn apply_input<S: Store>(
    store: &S,
    clock: &dyn Clock,
    ids: &IdSource,
    id: &InvoiceId,
    input: &InvoiceInput,
) -> Result<bool, ApplyError> {
    for _ in 0..16 {
        let Some(mut invoice) = store.invoice(id)? else {
            return Ok(false);
        };
        let version = invoice.version;
        let now = clock.now();
        let t = invoice
            .apply(input.clone(), now)
            .map_err(ApplyError::Refused)?;
        if !t.changed {
            return Ok(false);
        }
        let events = Event::for_invoice(&invoice, &t.events, now, || ids.event_id());
        if store.update_invoice(version, &invoice, &events, None)? != Commit::Conflict {
            return Ok(true);
        }
    }
    Err(ApplyError::Busy(id.clone()))
}
