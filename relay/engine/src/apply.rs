//! One invoice change outside a request's own write: apply an input to a fresh copy and store it
//! with its events, redone when the invoice changed meanwhile (optimistic concurrency). Used by
//! the refund routes and by the binary's operator and reconciliation loops.

use crate::IdSource;
use relay_core::invoice::InvoiceInput;
use relay_core::{Clock, CoreError, Event, InvoiceId};
use relay_store::{Commit, Store, StoreError};
use std::fmt;

/// How many times the retry loop reads, decides and writes before it gives up.
pub const MAX_ATTEMPTS: usize = 16;

/// What one attempt of [`retry`] did.
#[derive(Debug)]
pub enum Attempt<T> {
    /// It wrote (or found nothing to write): the loop ends with this.
    Done(T),
    /// Its write met a newer version of what it read: read again.
    Conflict,
}

/// The one loop of optimistic concurrency: `attempt` reads, decides and writes under the version
/// it read; on a conflict it runs again, up to [`MAX_ATTEMPTS`] times. `None`: every attempt met a
/// conflict.
///
/// Write `attempt` as `|| async move { … }` over references: each attempt's future then owns
/// copies of the references and borrows nothing from the closure.
pub async fn retry<T, E, F, Fut>(mut attempt: F) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Attempt<T>, E>>,
{
    for _ in 0..MAX_ATTEMPTS {
        if let Attempt::Done(t) = attempt().await? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

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

impl<S: Store> crate::Engine<S> {
    /// Applies `input` to invoice `id` as it is now and stores the result with its events.
    /// Returns whether the invoice changed (`false` too when there is no such invoice). Not
    /// flushed: callers that answer someone call `durable` first.
    pub async fn apply(&self, id: &InvoiceId, input: &InvoiceInput) -> Result<bool, ApplyError> {
        apply_inputs(
            &self.store,
            self.clock.as_ref(),
            &self.ids,
            id,
            std::slice::from_ref(input),
        )
        .await
    }

    /// Applies `inputs` in order to invoice `id` and stores the result in one write (all or none
    /// of them: the first input the invoice refuses refuses the write).
    pub async fn apply_all(
        &self,
        id: &InvoiceId,
        inputs: &[InvoiceInput],
    ) -> Result<bool, ApplyError> {
        apply_inputs(&self.store, self.clock.as_ref(), &self.ids, id, inputs).await
    }
}

async fn apply_inputs<S: Store>(
    store: &S,
    clock: &dyn Clock,
    ids: &IdSource,
    id: &InvoiceId,
    inputs: &[InvoiceInput],
) -> Result<bool, ApplyError> {
    retry::<_, ApplyError, _, _>(|| async move {
        let Some(mut invoice) = store.invoice(id).await? else {
            return Ok(Attempt::Done(false));
        };
        let version = invoice.version;
        let now = clock.now();
        let mut kinds = Vec::new();
        for input in inputs {
            let t = invoice
                .apply(input.clone(), now)
                .map_err(ApplyError::Refused)?;
            kinds.extend(t.events);
        }
        if invoice.version == version {
            return Ok(Attempt::Done(false));
        }
        let events = Event::for_invoice(&invoice, &kinds, now, || ids.event_id());
        Ok(
            match store
                .update_invoice(version, &invoice, &events, None)
                .await?
            {
                Commit::Conflict => Attempt::Conflict,
                _ => Attempt::Done(true),
            },
        )
    })
    .await?
    .ok_or_else(|| ApplyError::Busy(id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_retry_loop_reads_again_on_a_conflict_and_gives_up_after_its_attempts() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let calls = &calls;
        let got: Result<Option<u32>, ()> = retry(|| async move {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Ok(if n < 3 {
                Attempt::Conflict
            } else {
                Attempt::Done(n)
            })
        })
        .await;
        assert_eq!(got, Ok(Some(3)));
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let calls = &calls;
        let got: Result<Option<()>, ()> = retry(|| async move {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Attempt::Conflict)
        })
        .await;
        let calls = calls.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!((got, calls), (Ok(None), MAX_ATTEMPTS));
        let got: Result<Option<()>, &str> = retry(|| async { Err("store down") }).await;
        assert_eq!(got, Err("store down"));
    }
}
