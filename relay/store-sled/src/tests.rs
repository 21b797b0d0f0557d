use super::*;
use relay_core::invoice::InvoiceInput;
use relay_core::{Amount, Asset, EventType, Method, Money};
use relay_core::{ApiKeyHash, DeliveryAttempt, Merchant, WebhookEndpoint};
use relay_store::prelude::*;
use relay_store::{DueDelivery, PayoutKind};

use relay_store::conformance::{idem, invoice, merchant, with_script, T0};

fn store() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    (dir, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchants_are_found_by_key_hash_only() {
    let (_d, s) = store();
    let m = merchant(1);
    let key = relay_core::ApiKey::from_entropy([9; 32]);
    s.insert_merchant(&m, &relay_core::access::first_key_of(&m, &key))
        .await
        .unwrap();
    assert_eq!(
        s.merchant_by_key(&key.hash()).await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        s.merchant_by_key(&relay_core::ApiKey::from_entropy([8; 32]).hash())
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.merchant(&m.id).await.unwrap(), Some(m));
}

/// A rolled or revoked secret is refused from the moment the change is stored; a change made
/// from a stale view of the key is refused, so two rolls cannot leave two live secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_roll_and_revoke_at_once_and_never_from_a_stale_view() {
    let (_d, s) = store();
    let m = merchant(1);
    let first = relay_core::ApiKey::from_entropy([1; 32]);
    s.insert_merchant(&m, &relay_core::access::first_key_of(&m, &first))
        .await
        .unwrap();
    let keys = s.api_keys(&m.id).await.unwrap();
    assert_eq!(keys.len(), 1);
    let old = keys[0].clone();
    let second = relay_core::ApiKey::from_entropy([2; 32]);
    let rolled = relay_core::KeyRecord {
        hash: second.hash(),
        rolled_at: Some(T0),
        ..old.clone()
    };
    assert_eq!(
        s.replace_api_key(&old, &rolled).await.unwrap(),
        Commit::Done
    );
    assert!(s.key_by_hash(&first.hash()).await.unwrap().is_none());
    assert_eq!(
        s.key_by_hash(&second.hash()).await.unwrap().unwrap().1,
        rolled
    );
    // A second roll from the same (now stale) view changes nothing.
    let third = relay_core::ApiKey::from_entropy([3; 32]);
    let stale = relay_core::KeyRecord {
        hash: third.hash(),
        ..old.clone()
    };
    assert_eq!(
        s.replace_api_key(&old, &stale).await.unwrap(),
        Commit::Conflict
    );
    assert!(s.key_by_hash(&third.hash()).await.unwrap().is_none());
    let revoked = relay_core::KeyRecord {
        revoked_at: Some(T0),
        ..rolled.clone()
    };
    assert_eq!(
        s.replace_api_key(&rolled, &revoked).await.unwrap(),
        Commit::Done
    );
    assert!(s.key_by_hash(&second.hash()).await.unwrap().is_none());
    assert_eq!(s.api_keys(&m.id).await.unwrap(), vec![revoked]);
}

/// Keys stored as a bare merchant id by an older relay keep working, with every scope, and are
/// listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_before_records_are_migrated_at_open() {
    let (dir, s) = store();
    let m = merchant(1);
    let key = relay_core::ApiKey::from_entropy([4; 32]);
    s.insert_merchant(&m, &relay_core::access::first_key_of(&m, &key))
        .await
        .unwrap();
    // As an older relay wrote it.
    s.inner.merchant_keys.clear().unwrap();
    s.inner
        .api_keys
        .insert(key.hash().0, m.id.as_str().as_bytes())
        .unwrap();
    drop(s);
    let s = SledStore::open(dir.path()).unwrap();
    let (found, record) = s.key_by_hash(&key.hash()).await.unwrap().unwrap();
    assert_eq!(found, m);
    assert_eq!(record.scopes, relay_core::Scope::ALL.to_vec());
    assert_eq!(s.api_keys(&m.id).await.unwrap(), vec![record]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_create_writes_once() {
    let (_d, s) = store();
    let m = merchant(1);
    let (a, ev_a) = invoice(&m, 1, None);
    let (b, ev_b) = invoice(&m, 2, None);
    assert_eq!(
        s.create_invoice(&a, &ev_a, Some(idem(&m.id, "k1", 1)))
            .await
            .unwrap(),
        Commit::Done
    );
    // Same key, another invoice: nothing of `b` is written, the first record comes back.
    match s
        .create_invoice(&b, &ev_b, Some(idem(&m.id, "k1", 2)))
        .await
        .unwrap()
    {
        Commit::IdempotencyHit(rec) => assert_eq!(rec.fingerprint, [1; 32]),
        other => panic!("expected a hit, got {other:?}"),
    }
    assert!(s.invoice(&b.id).await.unwrap().is_none());
    assert!(s.event(&ev_b[0].id).await.unwrap().is_none());
    // Keys are per merchant.
    let other = merchant(2);
    let (c, ev_c) = invoice(&other, 3, None);
    assert_eq!(
        s.create_invoice(&c, &ev_c, Some(idem(&other.id, "k1", 3)))
            .await
            .unwrap(),
        Commit::Done
    );
}

/// Idempotency and inbound records older than their retention are pruned (a key that old is
/// new again); younger ones, and everything else, stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_idempotency_and_inbound_records_are_pruned_and_young_ones_stay() {
    let (_d, s) = store();
    let m = merchant(1);
    let (a, ev_a) = invoice(&m, 1, None);
    s.create_invoice(&a, &ev_a, Some(idem(&m.id, "old", 1)))
        .await
        .unwrap();
    let young = IdempotencyRecord {
        created_at: T0.plus_seconds(100),
        ..idem(&m.id, "young", 2).record
    };
    let (b, ev_b) = invoice(&m, 2, None);
    s.create_invoice(
        &b,
        &ev_b,
        Some(IdempotencyWrite {
            merchant_id: &m.id,
            key: "young",
            record: young,
        }),
    )
    .await
    .unwrap();
    s.record_inbound("stripe:evt_old", &idem(&m.id, "x", 3).record, None)
        .await
        .unwrap();
    assert_eq!(
        s.prune_records(T0.plus_seconds(50), T0.plus_seconds(50))
            .await
            .unwrap(),
        (1, 1)
    );
    // The old key is new again; the young one still replays.
    let (c, ev_c) = invoice(&m, 3, None);
    assert_eq!(
        s.create_invoice(&c, &ev_c, Some(idem(&m.id, "old", 4)))
            .await
            .unwrap(),
        Commit::Done
    );
    let (d, ev_d) = invoice(&m, 4, None);
    assert!(matches!(
        s.create_invoice(&d, &ev_d, Some(idem(&m.id, "young", 5)))
            .await
            .unwrap(),
        Commit::IdempotencyHit(_)
    ));
    assert!(matches!(
        s.record_inbound("stripe:evt_old", &idem(&m.id, "x", 3).record, None)
            .await
            .unwrap(),
        Commit::Done
    ));
    assert!(s.invoice(&a.id).await.unwrap().is_some(), "invoices stay");
    assert_eq!(s.prune_records(T0, T0).await.unwrap(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_updates_are_refused() {
    let (_d, s) = store();
    let m = merchant(1);
    let (mut inv, ev) = invoice(&m, 1, None);
    s.create_invoice(&inv, &ev, None).await.unwrap();
    let v = inv.version;
    inv.apply(InvoiceInput::Cancel, T0.plus_seconds(1)).unwrap();
    assert_eq!(
        s.update_invoice(v, &inv, &[], None).await.unwrap(),
        Commit::Done
    );
    assert_eq!(
        s.update_invoice(v, &inv, &[], None).await.unwrap(),
        Commit::Conflict
    );
    assert_eq!(
        s.invoice(&inv.id).await.unwrap().unwrap().status,
        InvoiceStatus::Invalid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_newest_first_with_cursor_and_order_filter() {
    let (_d, s) = store();
    let m = merchant(1);
    let other = merchant(2);
    let mut ids = Vec::new();
    for n in 0..7 {
        let (inv, ev) = invoice(&m, n, Some(if n % 2 == 0 { "even" } else { "odd" }));
        s.create_invoice(&inv, &ev, None).await.unwrap();
        ids.push(inv.id);
    }
    let (x, ev) = invoice(&other, 100, Some("even"));
    s.create_invoice(&x, &ev, None).await.unwrap();

    let q = |starting_after, order_id: Option<&str>| InvoiceQuery {
        order_id: order_id.map(str::to_owned),
        starting_after,
        limit: 3,
    };
    let p1 = s.list_invoices(&m.id, &q(None, None)).await.unwrap();
    let got: Vec<_> = p1.items.iter().map(|i| i.id.clone()).collect();
    assert_eq!(got, vec![ids[6].clone(), ids[5].clone(), ids[4].clone()]);
    assert!(p1.has_more);
    let p3 = s
        .list_invoices(&m.id, &q(Some(ids[1].clone()), None))
        .await
        .unwrap();
    assert_eq!(p3.items.len(), 1);
    assert_eq!(p3.items[0].id, ids[0]);
    assert!(!p3.has_more);
    let evens = s
        .list_invoices(
            &m.id,
            &InvoiceQuery {
                limit: 10,
                ..q(None, Some("even"))
            },
        )
        .await
        .unwrap();
    assert_eq!(evens.items.len(), 4);
    assert!(evens.items.iter().all(|i| i.merchant_id == m.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_index_follows_status() {
    let (_d, s) = store();
    let m = merchant(1);
    let (a, ev) = invoice(&m, 1, None);
    s.create_invoice(&a, &ev, None).await.unwrap();
    assert!(s.invoices_due_for_expiry(T0, 10).await.unwrap().is_empty());
    let due = s.invoices_due_for_expiry(a.expires_at, 10).await.unwrap();
    assert_eq!(due, vec![a.id.clone()]);
    let mut expired = a.clone();
    let t = expired.apply(InvoiceInput::Tick, a.expires_at).unwrap();
    assert_eq!(t.events, vec![EventType::InvoiceExpired]);
    s.update_invoice(a.version, &expired, &[], None)
        .await
        .unwrap();
    assert!(s
        .invoices_due_for_expiry(a.expires_at, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let m = merchant(1);
    let (a, ev) = invoice(&m, 1, Some("A-1"));
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.create_invoice(&a, &ev, None).await.unwrap();
        s.durable().await.unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.invoice(&a.id).await.unwrap(), Some(a));
    let events = s.list_events(&m.id, None, 10).await.unwrap();
    assert_eq!(events.items, ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_list_newest_first_per_merchant() {
    let (_d, s) = store();
    let m = merchant(1);
    let mut all = Vec::new();
    for n in 0..4 {
        let (inv, ev) = invoice(&m, n, None);
        s.create_invoice(&inv, &ev, None).await.unwrap();
        all.extend(ev);
    }
    let page = s.list_events(&m.id, None, 2).await.unwrap();
    assert_eq!(page.items, vec![all[3].clone(), all[2].clone()]);
    assert!(page.has_more);
    let rest = s.list_events(&m.id, Some(&all[2].id), 10).await.unwrap();
    assert_eq!(rest.items, vec![all[1].clone(), all[0].clone()]);
    assert!(s
        .list_events(&merchant(2).id, None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_can_belong_to_one_invoice_only() {
    let (_d, s) = store();
    let m = merchant(1);
    let (a, ev_a) = invoice(&m, 1, None);
    let (b, ev_b) = invoice(&m, 2, None);
    let a = with_script(a, "0014aa");
    let b = with_script(b, "0014aa");
    assert_eq!(
        s.create_invoice(&a, &ev_a, None).await.unwrap(),
        Commit::Done
    );
    let err = s.create_invoice(&b, &ev_b, None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateReference { .. }),
        "{err}"
    );
    assert!(s.invoice(&b.id).await.unwrap().is_none());
    assert_eq!(
        s.lookups_of(relay_core::LookupKind::BtcScript)
            .await
            .unwrap(),
        vec![(
            relay_core::Lookup::BtcScript("0014aa".parse().unwrap()),
            a.id.clone()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derivation_indexes_are_never_handed_out_twice_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (m1, m2) = (merchant(1), merchant(2));
    {
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.next_derivation_index(&m1.id).await.unwrap(), 0);
        assert_eq!(s.next_derivation_index(&m1.id).await.unwrap(), 1);
        assert_eq!(s.next_derivation_index(&m2.id).await.unwrap(), 0);
        // The invoice holding index 1 is stored; index 0's request never was.
        let (inv, ev) = invoice(&m1, 1, None);
        let mut inv = with_script(inv, "0014bb");
        inv.methods[0].bitcoin.as_mut().unwrap().derivation_index = 1;
        s.create_invoice(&inv, &ev, None).await.unwrap();
        s.inner.db.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    // Above every stored address, after a restart.
    assert_eq!(s.next_derivation_index(&m1.id).await.unwrap(), 2);
    let handed: std::collections::BTreeSet<u32> =
        relay_store::conformance::take_indexes(&s, &m2.id, 4, 50)
            .await
            .into_iter()
            .collect();
    assert_eq!(handed.len(), 200, "concurrent callers got the same index");
    assert_eq!(handed.iter().next_back(), Some(&199));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_step_is_written_whole_or_not_at_all() {
    let (_d, s) = store();
    let m = merchant(1);
    let (a, ev) = invoice(&m, 1, None);
    s.create_invoice(&a, &ev, None).await.unwrap();
    let mut paid = a.clone();
    paid.version += 1;
    let write = ChainWrite {
        cursor: b"h=5".to_vec(),
        put: vec![(b"out1".to_vec(), b"v1".to_vec())],
        delete: vec![],
        invoices: vec![(a.version, paid.clone(), vec![])],
    };
    assert_eq!(
        s.commit_chain("bitcoin", &write).await.unwrap(),
        Commit::Done
    );
    assert_eq!(
        s.chain_cursor("bitcoin").await.unwrap(),
        Some(b"h=5".to_vec())
    );
    assert_eq!(s.chain_cursor("ethereum").await.unwrap(), None);
    assert_eq!(
        s.invoice(&a.id).await.unwrap().unwrap().version,
        paid.version
    );

    // Stale version: nothing of the step is written, not even the cursor.
    let stale = ChainWrite {
        cursor: b"h=6".to_vec(),
        put: vec![(b"out2".to_vec(), b"v2".to_vec())],
        delete: vec![b"out1".to_vec()],
        invoices: vec![(a.version, paid, vec![])],
    };
    assert_eq!(
        s.commit_chain("bitcoin", &stale).await.unwrap(),
        Commit::Conflict
    );
    assert_eq!(
        s.chain_cursor("bitcoin").await.unwrap(),
        Some(b"h=5".to_vec())
    );
    assert_eq!(
        s.chain_tracked("bitcoin").await.unwrap(),
        vec![(b"out1".to_vec(), b"v1".to_vec())]
    );
}

fn endpoint(m: &Merchant, id: &str, types: &[&str]) -> WebhookEndpoint {
    WebhookEndpoint {
        id: id.into(),
        merchant_id: m.id.clone(),
        url: "http://127.0.0.1:9/hooks".into(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        secret: relay_core::Secret::from_entropy("whsec_", [1; 32]),
        enabled: true,
        disabled_reason: None,
        created_at: T0,
    }
}

/// Every lane head due at `now_ms`, up to `limit`.
async fn due_at(s: &SledStore, now_ms: u64, limit: usize) -> Vec<DueDelivery> {
    s.due_deliveries(now_ms, limit, None, |_, _| relay_store::Pick::Take)
        .await
        .map(|(taken, _)| taken)
        .unwrap_or_else(|e| panic!("the queue is readable: {e}"))
}

fn attempt(d: &DueDelivery, outcome: relay_core::DeliveryOutcome) -> DeliveryAttempt {
    DeliveryAttempt {
        endpoint_id: d.endpoint.id.clone(),
        event_id: d.event.id.to_string(),
        attempt: d.attempt,
        at: T0,
        status: Some(if outcome == relay_core::DeliveryOutcome::Delivered {
            200
        } else {
            500
        }),
        error: None,
        duration_ms: 1,
        outcome,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_lanes_deliver_an_invoices_events_in_order_and_survive_reopen() {
    let (dir, s) = store();
    let m = merchant(1);
    s.insert_merchant(
        &m,
        &relay_core::access::first_key_of(&m, &relay_core::ApiKey::from_entropy([1; 32])),
    )
    .await
    .unwrap();
    s.insert_endpoint(&endpoint(&m, "we_all", &[]))
        .await
        .unwrap();
    s.insert_endpoint(&endpoint(&m, "we_none", &["refund.succeeded"]))
        .await
        .unwrap();
    let (mut inv, events) = invoice(&m, 1, None);
    s.create_invoice(&inv, &events, None).await.unwrap();
    let v = inv.version;
    let t = inv.apply(InvoiceInput::Cancel, T0.plus_seconds(1)).unwrap();
    let later = Event::for_invoice(&inv, &t.events, T0, || EventId::from_entropy([9; 12]));
    s.update_invoice(v, &inv, &later, None).await.unwrap();
    // Two events, one endpoint that wants them: only the first is due.
    assert_eq!(s.fan_out(1_000, 100).await.unwrap(), 2);
    assert_eq!(s.fan_out(1_000, 100).await.unwrap(), 0, "fanned out once");
    let due = due_at(&s, 1_000, 10).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].event.kind, EventType::InvoiceCreated);
    assert_eq!(due[0].attempt, 1);
    // It fails: retried at 5,000, and the second event still waits behind it.
    s.finish_delivery(
        &due[0],
        &attempt(&due[0], relay_core::DeliveryOutcome::Retrying),
        1_000,
        Some(5_000),
        None,
    )
    .await
    .unwrap();
    assert!(due_at(&s, 4_999, 10).await.is_empty());
    drop(s);
    let s = SledStore::open(dir.path()).unwrap();
    let due = due_at(&s, 5_000, 10).await;
    assert_eq!((due.len(), due[0].attempt), (1, 2));
    assert_eq!(due[0].event.kind, EventType::InvoiceCreated);
    s.finish_delivery(
        &due[0],
        &attempt(&due[0], relay_core::DeliveryOutcome::Delivered),
        5_001,
        None,
        None,
    )
    .await
    .unwrap();
    let due = due_at(&s, 5_001, 10).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].event.kind, EventType::InvoiceInvalid);
    s.finish_delivery(
        &due[0],
        &attempt(&due[0], relay_core::DeliveryOutcome::Delivered),
        5_002,
        None,
        None,
    )
    .await
    .unwrap();
    assert!(due_at(&s, u64::MAX - 1, 10).await.is_empty());
    assert_eq!(s.deliveries_pending().await.unwrap(), 0);
    let attempts = s.delivery_attempts(&events[0].id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    // Redelivery queues it again, once however often it is asked.
    assert_eq!(s.redeliver(&events[0], 6_000).await.unwrap(), 1);
    assert_eq!(s.redeliver(&events[0], 6_000).await.unwrap(), 0);
    assert_eq!(due_at(&s, 6_000, 10).await.len(), 1);
}

/// The dispatcher's picks: a skipped head stays due, a deferred one moves later without an
/// attempt, and other endpoints' heads are still found behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_heads_can_be_skipped_or_deferred_without_an_attempt() {
    let (_d, s) = store();
    let m = merchant(1);
    s.insert_merchant(
        &m,
        &relay_core::access::first_key_of(&m, &relay_core::ApiKey::from_entropy([1; 32])),
    )
    .await
    .unwrap();
    s.insert_endpoint(&endpoint(&m, "we_slow", &[]))
        .await
        .unwrap();
    s.insert_endpoint(&endpoint(&m, "we_fine", &[]))
        .await
        .unwrap();
    for n in 1..=3 {
        let (inv, events) = invoice(&m, n, None);
        s.create_invoice(&inv, &events, None).await.unwrap();
    }
    s.fan_out(1_000, 100).await.unwrap();
    assert_eq!(due_at(&s, 1_000, 100).await.len(), 6);
    let (picked, _) = s
        .due_deliveries(1_000, 100, None, |endpoint, _| match endpoint {
            "we_slow" => relay_store::Pick::Defer(9_000),
            _ => relay_store::Pick::Take,
        })
        .await
        .unwrap();
    assert_eq!(picked.len(), 3);
    assert!(picked.iter().all(|d| d.endpoint.id == "we_fine"));
    let (skipped, cursor) = s
        .due_deliveries(1_000, 100, None, |_, _| relay_store::Pick::Skip)
        .await
        .unwrap();
    assert!(skipped.is_empty());
    assert!(
        cursor.is_none(),
        "three skipped: the walk went all the way round"
    );
    assert_eq!(due_at(&s, 8_999, 100).await.len(), 3, "deferred");
    let later = due_at(&s, 9_000, 100).await;
    assert_eq!(later.len(), 6);
    let slow: Vec<_> = later
        .iter()
        .filter(|d| d.endpoint.id == "we_slow")
        .collect();
    assert!(
        slow.iter().all(|d| d.attempt == 1),
        "no attempt was counted"
    );
}

/// Every invoice change posts its ledger entry in its own transaction, whichever write path it
/// takes: the stored balances are always the sum of the invoices' positions, and payout work
/// appears and disappears with the records it stands for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_follows_every_write_path_and_payout_work_follows_the_records() {
    let (_d, s) = store();
    let m = merchant(1);
    let card = |n: u32| InvoiceInput::Observe {
        reference: relay_core::PaymentRef::Card(format!("pi_{n}")),
        method: Method::Card,
        asset: "USD".into(),
        amount: Amount::from_minor(100 + u128::from(n)),
        confirmed: true,
        confirmations: 1,
        seen_at: None,
    };
    let mut invoices = Vec::new();
    for n in 1..=3u32 {
        let (mut inv, ev) = invoice(&m, n, None);
        if n == 3 {
            inv.settle_to = Some(relay_core::SettleTo {
                due: Money {
                    asset: Asset::eth(),
                    amount: Amount::from_minor(5),
                },
                rate: relay_core::Rate {
                    base: "ETH".into(),
                    quote: "USD".into(),
                    price: "2500".parse().unwrap(),
                    spread_bps: 0,
                    sources: Vec::new(),
                    as_of: None,
                },
                payout: format!("0x{}", "ab".repeat(20)),
                token: None,
                min_confirmations: 1,
            });
        }
        assert_eq!(
            s.create_invoice(&inv, &ev, None).await.unwrap(),
            Commit::Done
        );
        invoices.push(inv);
    }
    let now = T0.plus_seconds(10);
    // 1: through update_invoice, then a refund request and its gateway confirmation.
    let mut a = invoices[0].clone();
    a.apply(card(1), now).unwrap();
    assert_eq!(
        s.update_invoice(1, &a, &[], None).await.unwrap(),
        Commit::Done
    );
    let v = a.version;
    a.apply(
        InvoiceInput::RequestRefund {
            id: "re_1".into(),
            payment: None,
            amount: Some(Amount::from_minor(40)),
            to: None,
        },
        now,
    )
    .unwrap();
    assert_eq!(
        s.update_invoice(v, &a, &[], None).await.unwrap(),
        Commit::Done
    );
    // 2: through record_inbound (a gateway webhook).
    let mut b = invoices[1].clone();
    b.apply(card(2), now).unwrap();
    let rec = IdempotencyRecord {
        fingerprint: [0; 32],
        status: 200,
        body: String::new(),
        created_at: now,
    };
    assert_eq!(
        s.record_inbound("stripe:evt_1", &rec, Some((1, &b, &[])))
            .await
            .unwrap(),
        Commit::Done
    );
    // 3: through commit_chain; it plans a settlement, which becomes payout work.
    let mut c = invoices[2].clone();
    c.apply(card(3), now).unwrap();
    let write = ChainWrite {
        cursor: b"c".to_vec(),
        invoices: vec![(1, c.clone(), Vec::new())],
        ..Default::default()
    };
    assert_eq!(s.commit_chain("t", &write).await.unwrap(), Commit::Done);
    let work = s.payouts(PayoutKind::Settlement).await.unwrap();
    assert_eq!(work.len(), 1);
    assert_eq!(work[0].invoice, c.id);
    assert_eq!(work[0].record, c.settlements[0].id.to_string());

    let sum = |invs: &[&Invoice]| {
        let mut b = relay_core::Balances::default();
        for inv in invs {
            b.apply(&relay_core::ledger::position(inv).diff(&Default::default()));
        }
        b
    };
    assert_eq!(s.balances(&m.id).await.unwrap(), sum(&[&a, &b, &c]));
    let usd = s.balances(&m.id).await.unwrap();
    assert_eq!(
        usd.get("USD", relay_core::Account::Available).credit,
        Amount::from_minor(101 + 102 + 103)
    );
    assert!(usd.unbalanced_assets().is_empty());

    // The settlement is paid: its work is gone, and the ledger moves it to Ethereum.
    let v = c.version;
    let id = c.settlements[0].id;
    c.apply(
        InvoiceInput::SettlementPaid {
            id,
            tx: "0x1".into(),
        },
        now,
    )
    .unwrap();
    assert_eq!(
        s.update_invoice(v, &c, &[], None).await.unwrap(),
        Commit::Done
    );
    assert!(s.payouts(PayoutKind::Settlement).await.unwrap().is_empty());
    let after = s.balances(&m.id).await.unwrap();
    assert_eq!(after, sum(&[&a, &b, &c]));
    assert_eq!(
        after.get("ETH", relay_core::Account::PaidOut).credit,
        Amount::from_minor(5)
    );
    // A stale write is refused and posts nothing.
    assert_eq!(
        s.update_invoice(v, &c, &[], None).await.unwrap(),
        Commit::Conflict
    );
    assert_eq!(s.balances(&m.id).await.unwrap(), after);
    assert_eq!(s.ledger_entries(&m.id, &c.id).await.unwrap().len(), 2);
}

/// A reader that sees a write between its commit and its count, and asks for durability, waits
/// for that write to be counted and flushed: `durable` never returns while something the caller
/// may have read is not covered (before, it returned at once without a flush).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_covers_a_write_the_caller_has_already_seen() {
    let (_dir, s) = store();
    let (release, pause) = std::sync::mpsc::channel();
    *s.inner.pause_after_commit.lock().unwrap() = Some(pause);
    let m = merchant(9);
    let writer = {
        let (s, m) = (s.clone(), m.clone());
        // Its own thread: the write blocks after its commit until released.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(s.insert_merchant(
                &m,
                &relay_core::access::first_key(&m.id, ApiKeyHash([9; 32]), None, m.created_at),
            ))
            .unwrap()
        })
    };
    // The write is committed (visible) but not counted yet.
    let start = std::time::Instant::now();
    while s.merchant(&m.id).await.unwrap().is_none() {
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader = {
        let s = s.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(s.durable()).unwrap();
            done_tx.send(()).unwrap();
        })
    };
    assert!(
        done_rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "durable returned before the write it could see was counted"
    );
    release.send(()).unwrap();
    writer.join().unwrap();
    done_rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    reader.join().unwrap();
    assert!(
        s.inner.flushed.load(Ordering::SeqCst) >= s.inner.written.load(Ordering::SeqCst),
        "the write was not flushed"
    );
}

/// Every byte under a directory, for looking for secrets on disk.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// With a secrets key, no webhook secret reaches the disk in plain text, the relay still reads
/// them, and the store cannot be opened without that key or with another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secrets_are_sealed_on_disk_and_need_their_key() {
    use relay_store::sealed::SecretsKey;
    let dir = tempfile::tempdir().unwrap();
    let m = merchant(1);
    let e = endpoint(&m, "we_sealed", &[]);
    let (merchant_secret, endpoint_secret) = (
        m.webhook_secret.expose_secret().to_owned(),
        e.secret.expose_secret().to_owned(),
    );
    {
        let s = SledStore::open_sealed(dir.path(), Some(SecretsKey::new([3; 32]))).unwrap();
        s.insert_merchant(
            &m,
            &relay_core::access::first_key_of(&m, &relay_core::ApiKey::from_entropy([1; 32])),
        )
        .await
        .unwrap();
        s.insert_endpoint(&e).await.unwrap();
        assert_eq!(s.endpoints(&m.id).await.unwrap(), vec![e.clone()]);
        assert_eq!(s.merchant(&m.id).await.unwrap(), Some(m.clone()));
        s.inner.db.flush().unwrap();
    }
    let disk = all_bytes(dir.path());
    assert!(!contains(&disk, &endpoint_secret) && !contains(&disk, &merchant_secret));
    assert!(matches!(
        SledStore::open(dir.path()),
        Err(StoreError::SecretsKey { .. })
    ));
    assert!(matches!(
        SledStore::open_sealed(dir.path(), Some(SecretsKey::new([4; 32]))),
        Err(StoreError::SecretsKey { .. })
    ));
    let s = SledStore::open_sealed(dir.path(), Some(SecretsKey::new([3; 32]))).unwrap();
    assert_eq!(s.endpoints(&m.id).await.unwrap(), vec![e]);
}

/// A store written without a key has its plain secrets sealed the first time it is opened with
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_secrets_are_sealed_when_a_key_is_first_given() {
    use relay_store::sealed::SecretsKey;
    let (dir, s) = store();
    let m = merchant(1);
    let e = endpoint(&m, "we_plain", &[]);
    s.insert_merchant(
        &m,
        &relay_core::access::first_key_of(&m, &relay_core::ApiKey::from_entropy([1; 32])),
    )
    .await
    .unwrap();
    s.insert_endpoint(&e).await.unwrap();
    drop(s);
    let s = SledStore::open_sealed(dir.path(), Some(SecretsKey::new([3; 32]))).unwrap();
    for kv in s
        .inner
        .webhook_endpoints
        .iter()
        .chain(s.inner.merchants.iter())
    {
        let v = kv.unwrap().1;
        assert!(!contains(&v, e.secret.expose_secret()));
        assert!(!contains(&v, m.webhook_secret.expose_secret()));
    }
    assert_eq!(s.endpoints(&m.id).await.unwrap(), vec![e]);
    assert_eq!(s.merchant(&m.id).await.unwrap(), Some(m));
}

/// A long run of heads passed over ends a look at the queue, and the next look goes on after
/// it, wrapping round: every head is reached within a bounded walk per look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_due_walk_goes_on_where_it_stopped_and_wraps_round() {
    let (_d, s) = store();
    let m = merchant(1);
    s.insert_merchant(
        &m,
        &relay_core::access::first_key_of(&m, &relay_core::ApiKey::from_entropy([1; 32])),
    )
    .await
    .unwrap();
    s.insert_endpoint(&endpoint(&m, "we_busy", &[]))
        .await
        .unwrap();
    let n = relay_store::MAX_SKIPS as u32 + 10;
    for i in 1..=n {
        let (inv, events) = invoice(&m, i, None);
        s.create_invoice(&inv, &events, None).await.unwrap();
    }
    s.fan_out(1_000, 10_000).await.unwrap();
    let all = due_at(&s, 1_000, 10_000).await;
    assert_eq!(all.len(), n as usize);
    // Everything is passed over: the look stops after MAX_SKIPS, with a cursor.
    let (got, cursor) = s
        .due_deliveries(1_000, 100, None, |_, _| relay_store::Pick::Skip)
        .await
        .unwrap();
    assert!(got.is_empty());
    let cursor = cursor.expect("stopped early");
    // The next look goes on after it, and round to the oldest heads again.
    let (got, _) = s
        .due_deliveries(1_000, 20, Some(&cursor), |_, _| relay_store::Pick::Take)
        .await
        .unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(
        got[0].lane,
        all[relay_store::MAX_SKIPS].lane,
        "went on after the cursor"
    );
    assert_eq!(got[10].lane, all[0].lane, "wrapped round to the oldest");
}

/// sled passes the conformance suite every backend must pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_passes_the_conformance_suite() {
    relay_store::conformance::check_all(|dir| SledStore::open(dir).unwrap()).await;
}

/// A directory a live store holds is refused to a second one (after a short wait for a store
/// being dropped), and free again once the first is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_in_use_is_refused_and_free_once_its_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = SledStore::open(dir.path()).unwrap();
    assert!(matches!(
        SledStore::open(dir.path()),
        Err(StoreError::Locked { .. })
    ));
    first.durable().await.unwrap();
    drop(first);
    assert!(SledStore::open(dir.path()).is_ok());
}
