//! Derivation indexes allocated in PostgreSQL: relays on one database never hand out the same
//! index (so never the same address), and each descriptor counts on its own.

mod common;
use common::store;
use relay_core::MerchantId;
use relay_testnet::Postgres;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_never_hand_out_the_same_index() {
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    let relays = [store(&pg, None).await, store(&pg, None).await];
    let shop = MerchantId::from_entropy([1; 12]);
    let mut tasks = Vec::new();
    for r in &relays {
        for _ in 0..4 {
            let (r, shop) = (r.clone(), shop.clone());
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..25 {
                    got.push(r.allocate_derivation_index(&shop).await.unwrap());
                }
                got
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<u32> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "an index was handed out twice");
    assert_eq!(
        distinct,
        (0..200).collect(),
        "indexes are used without gaps"
    );
    // Another descriptor counts from zero; this one goes on after a reconnect.
    let other = MerchantId::from_entropy([2; 12]);
    assert_eq!(
        relays[0].allocate_derivation_index(&other).await.unwrap(),
        0
    );
    let again = store(&pg, None).await;
    assert_eq!(again.allocate_derivation_index(&shop).await.unwrap(), 200);

    // Unhardened BIP32 indexes stop below 2^31: past the last one, a clear refusal.
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
        sqlx::query("UPDATE derivation_indexes SET next_index = 2147483647 WHERE owner = $1")
            .bind(other.as_str())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(
        again.allocate_derivation_index(&other).await.unwrap(),
        2_147_483_647
    );
    assert!(matches!(
        again.allocate_derivation_index(&other).await,
        Err(relay_store::StoreError::Exhausted { .. })
    ));
}

/// An address given after creation (the payer chose bitcoin on an invoice whose address is made
/// on demand) reaches the watcher on whichever relay watches, as a new invoice's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_made_on_demand_reaches_the_watching_relay() {
    use relay_core::{Lookup, LookupKind};
    use relay_store::conformance::{add_merchant, invoice, merchant, with_script};
    use relay_store::prelude::*;
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    let (api, watcher) = (store(&pg, None).await, store(&pg, None).await);
    let m = merchant(1);
    add_merchant(&api, &m).await;
    let (inv, ev) = invoice(&m, 1, None);
    api.create_invoice(&inv, &ev, None).await.unwrap();
    assert!(watcher
        .take_new_lookups(LookupKind::BtcScript)
        .await
        .unwrap()
        .is_empty());
    let mut given = with_script(inv.clone(), "0014cc");
    given.version += 1;
    api.update_invoice(inv.version, &given, &[], None)
        .await
        .unwrap();
    let script = Lookup::BtcScript("0014cc".parse().unwrap());
    assert_eq!(
        watcher
            .take_new_lookups(LookupKind::BtcScript)
            .await
            .unwrap(),
        vec![(script, inv.id.clone())]
    );
    assert!(watcher
        .take_new_lookups(LookupKind::BtcScript)
        .await
        .unwrap()
        .is_empty());
}
