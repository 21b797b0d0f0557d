//! The relay's singleton roles on a real PostgreSQL, through the store API: a role's writes are
//! fenced by its lease, and new bitcoin scripts reach whichever relay watches.

mod common;
use common::store;
use relay_core::LookupKind;
use relay_store::conformance::{add_merchant, invoice, merchant, with_script};
use relay_store::prelude::*;
use relay_store::{ChainWrite, Commit, Role, StoreError};
use relay_testnet::Postgres;
use std::time::Duration;

fn step(cursor: &str) -> ChainWrite {
    ChainWrite {
        cursor: cursor.as_bytes().to_vec(),
        ..ChainWrite::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_writes_only_while_its_relay_holds_the_lease() {
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    let (a, b) = (store(&pg, None).await, store(&pg, None).await);
    let ttl = Duration::from_millis(800);

    // Neither relay holds the role yet: a fenced handle writes nothing.
    let a_watcher = a.fenced(Role::Bitcoin);
    assert!(matches!(
        a_watcher.commit_chain("bitcoin", &step("a0")).await,
        Err(StoreError::Fenced { role: "bitcoin" })
    ));

    let first = a
        .hold(Role::Bitcoin, ttl)
        .await
        .unwrap()
        .expect("a takes the role");
    assert_eq!(
        b.hold(Role::Bitcoin, ttl).await.unwrap(),
        None,
        "one holder"
    );
    assert_eq!(
        a.hold(Role::Bitcoin, ttl).await.unwrap(),
        Some(first),
        "renewing keeps the token"
    );
    assert_eq!(
        a_watcher
            .commit_chain("bitcoin", &step("a1"))
            .await
            .unwrap(),
        Commit::Done
    );

    // `a` stalls past its lease; `b` takes the role over.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let second = b
        .hold(Role::Bitcoin, ttl)
        .await
        .unwrap()
        .expect("b takes it");
    assert!(second > first, "the token went up");
    assert!(matches!(
        a_watcher.commit_chain("bitcoin", &step("a2")).await,
        Err(StoreError::Fenced { .. })
    ));
    let b_watcher = b.fenced(Role::Bitcoin);
    assert_eq!(
        b_watcher
            .commit_chain("bitcoin", &step("b1"))
            .await
            .unwrap(),
        Commit::Done
    );
    assert_eq!(
        a.chain_cursor("bitcoin").await.unwrap(),
        Some(b"b1".to_vec())
    );
    assert_eq!(
        a.hold(Role::Bitcoin, ttl).await.unwrap(),
        None,
        "a cannot take it back"
    );

    // Other roles, and the API's own writes, are not held up by the bitcoin role.
    let m = merchant(1);
    add_merchant(&a, &m).await;
    let (inv, ev) = invoice(&m, 1, None);
    assert_eq!(
        a.create_invoice(&inv, &ev, None).await.unwrap(),
        Commit::Done
    );
    let a_sweep = a.fenced(Role::Expiry);
    assert!(matches!(
        a_sweep.expiry_handled(&inv).await,
        Err(StoreError::Fenced { role: "expiry" })
    ));
    a.hold(Role::Expiry, ttl).await.unwrap().expect("a sweeps");
    a_sweep.expiry_handled(&inv).await.unwrap();

    // Released at shutdown: the other relay takes the role at once.
    b.release(Role::Bitcoin).await.unwrap();
    assert!(a.hold(Role::Bitcoin, ttl).await.unwrap().is_some());
    assert!(matches!(
        b_watcher.commit_chain("bitcoin", &step("b2")).await,
        Err(StoreError::Fenced { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_of_invoices_made_on_one_relay_reach_the_watcher_on_another_once() {
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    let (api, watcher) = (store(&pg, None).await, store(&pg, None).await);
    let m = merchant(1);
    add_merchant(&api, &m).await;
    let (card_only, ev) = invoice(&m, 1, None);
    api.create_invoice(&card_only, &ev, None).await.unwrap();
    let (paid_in_btc, ev) = invoice(&m, 2, None);
    let paid_in_btc = with_script(paid_in_btc, "0014bb");
    api.create_invoice(&paid_in_btc, &ev, None).await.unwrap();

    let new = watcher
        .take_new_lookups(LookupKind::BtcScript)
        .await
        .unwrap();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].1, paid_in_btc.id);
    assert!(
        watcher
            .take_new_lookups(LookupKind::BtcScript)
            .await
            .unwrap()
            .is_empty(),
        "told once"
    );
    assert_eq!(
        watcher
            .lookups_of(LookupKind::BtcScript)
            .await
            .unwrap()
            .len(),
        1,
        "and still found by a watcher that starts afresh"
    );
}
