//! The expiry sweep: invoices whose expiry passed are re-evaluated against the clock, so that an
//! unpaid invoice becomes `expired` (with its event) even when nothing else happens to it.

use crate::apply::{retry, Attempt};
use crate::Engine;
use relay_core::invoice::InvoiceInput;
use relay_core::{Event, InvoiceStatus};
use relay_store::{Commit, Store, StoreError};

impl<S: Store> Engine<S> {
    /// Handles every invoice due for expiry at the clock's "now"; returns how many changed.
    pub async fn expire_due(&self) -> Result<usize, StoreError> {
        let (store, clock, ids) = (&self.store, self.clock.as_ref(), self.ids.as_ref());
        let now = clock.now();
        let mut changed = 0;
        for id in store.invoices_due_for_expiry(now, 1000).await? {
            // Again on a concurrent update (a payment arriving at the same moment).
            let id = &id;
            let handled = retry(|| async move {
                let Some(mut invoice) = store.invoice(id).await? else {
                    return Ok(Attempt::Done(false));
                };
                let version = invoice.version;
                let Ok(transition) = invoice.apply(InvoiceInput::Tick, now) else {
                    return Ok(Attempt::Done(false));
                };
                if transition.changed {
                    let events =
                        Event::for_invoice(&invoice, &transition.events, now, || ids.event_id());
                    if store
                        .update_invoice(version, &invoice, &events, None)
                        .await?
                        == Commit::Conflict
                    {
                        return Ok(Attempt::Conflict);
                    }
                }
                // A paid invoice still processing past its expiry needs no further sweep.
                if matches!(
                    invoice.status,
                    InvoiceStatus::New | InvoiceStatus::Processing
                ) {
                    store.expiry_handled(&invoice).await?;
                }
                Ok::<_, StoreError>(Attempt::Done(transition.changed))
            })
            .await?;
            if handled == Some(true) {
                changed += 1;
            }
        }
        store.durable().await?;
        Ok(changed)
    }
}
