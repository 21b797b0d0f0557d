//! Inbound events and API answers kept for replay, on a real PostgreSQL: a replayed webhook
//! changes nothing, from any relay, and records past their retention are pruned.

mod common;
use common::store;
use relay_store::conformance::{add_merchant, idem, invoice, merchant, T0};
use relay_store::prelude::*;
use relay_store::{Commit, IdempotencyRecord};
use relay_testnet::Postgres;

fn record(fp: u8, at: relay_core::Timestamp) -> IdempotencyRecord {
    IdempotencyRecord {
        fingerprint: [fp; 32],
        status: 200,
        body: format!("{fp}"),
        created_at: at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_event_counts_once_across_relays_and_old_records_are_pruned() {
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    let (a, b) = (store(&pg, None).await, store(&pg, None).await);
    let m = merchant(1);
    add_merchant(&a, &m).await;
    let (inv, ev) = invoice(&m, 1, None);
    a.create_invoice(&inv, &ev, Some(idem(&m.id, "create-1", 1)))
        .await
        .unwrap();

    // The same gateway event reaches two relays: the first records it with its change, the
    // second finds it and writes nothing (its change was built on the same version).
    let mut canceled = inv.clone();
    canceled
        .apply(
            relay_core::invoice::InvoiceInput::Cancel,
            T0.plus_seconds(1),
        )
        .unwrap();
    let first = record(1, T0);
    assert_eq!(
        a.record_inbound("stripe:evt_1", &first, Some((inv.version, &canceled, &[])))
            .await
            .unwrap(),
        Commit::Done
    );
    assert_eq!(
        b.record_inbound(
            "stripe:evt_1",
            &record(2, T0),
            Some((inv.version, &canceled, &[]))
        )
        .await
        .unwrap(),
        Commit::IdempotencyHit(first)
    );
    assert_eq!(b.invoice(&inv.id).await.unwrap(), Some(canceled));

    // A newer record survives a prune that removes the older ones.
    b.record_inbound("stripe:evt_2", &record(3, T0.plus_seconds(100)), None)
        .await
        .unwrap();
    let (requests, inbound) = a
        .prune_records(T0.plus_seconds(50), T0.plus_seconds(50))
        .await
        .unwrap();
    assert_eq!((requests, inbound), (1, 1));
    assert!(a.idempotency(&m.id, "create-1").await.unwrap().is_none());
    assert_eq!(
        a.record_inbound("stripe:evt_1", &record(4, T0.plus_seconds(200)), None)
            .await
            .unwrap(),
        Commit::Done,
        "an event id past its retention is new again"
    );
    assert!(matches!(
        a.record_inbound("stripe:evt_2", &record(5, T0), None)
            .await
            .unwrap(),
        Commit::IdempotencyHit(_)
    ));
}
