//! The conformance suite: what every [`Store`] backend must do, checked through the trait only.
//! A backend's tests call [`check_all`] with a way to open its store on a directory (a backend
//! that keeps its data elsewhere uses the directory to name a fresh database). It runs on sled
//! (`sled_store::tests`); a new backend passes it before it is used.
//!
//! Covered: atomicity (a refused write leaves nothing), version conflicts, idempotency races,
//! event order, unique derivation indexes under concurrency, the webhook outbox (no event stored
//! without its delivery queued), the ledger staying empty until money moves, and durability
//! through `durable()` and a reopen.

use crate::{Commit, IdempotencyRecord, IdempotencyWrite, InvoiceQuery, Store, StoreError};
use relay_core::invoice::{InvoiceInput, NewInvoice};
use relay_core::{
    Amount, Asset, Event, EventId, Invoice, InvoiceId, Merchant, MerchantId, Method, Money,
    Timestamp, WebhookEndpoint,
};
use std::collections::BTreeMap;
use std::path::Path;

/// The suite's clock.
pub const T0: Timestamp = Timestamp(1_800_000_000);

/// Merchant number `n`, paid by card.
pub fn merchant(n: u8) -> Merchant {
    Merchant {
        id: MerchantId::from_entropy([n; 12]),
        name: format!("m{n}"),
        created_at: T0,
        btc_descriptor: None,
        eth_payout: None,
        methods: vec![Method::Card],
        webhook_url: None,
        webhook_secret: relay_core::Secret::from_entropy("whsec_", [5; 32]),
        btc_confirmations: 1,
        payment_tolerance_bps: 0,
        eth_confirmations: 1,
        settle_on_ethereum: None,
    }
}

/// Invoice number `n` of `m` (ids ordered by `n`), with its `invoice.created` event.
pub fn invoice(m: &Merchant, n: u32, order: Option<&str>) -> (Invoice, Vec<Event>) {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    bytes[4] = m.id.as_str().as_bytes()[4];
    let params = NewInvoice {
        merchant_id: m.id.clone(),
        price: Money {
            asset: Asset::fiat("USD", 2),
            amount: Amount::from_minor(100 + u128::from(n)),
        },
        order_id: order.map(str::to_owned),
        description: None,
        metadata: BTreeMap::new(),
        expires_at: T0.plus_seconds(900 + i64::from(n)),
        methods: vec![Method::Card],
        tolerance_bps: 0,
        eth_asset: None,
    };
    let quotes = params
        .quote(
            &relay_core::AssetBook::default(),
            &relay_core::FixedRates::default(),
        )
        .expect("a card quote in the price's own currency");
    let (inv, kinds) = Invoice::create(InvoiceId::from_entropy(bytes), params, quotes, T0)
        .expect("a valid invoice");
    let mut k = 0u8;
    let events = Event::for_invoice(&inv, &kinds, T0, || {
        k += 1;
        let mut b = bytes;
        b[11] = k;
        EventId::from_entropy(b)
    });
    (inv, events)
}

/// An idempotency record to write with a decision.
pub fn idem<'a>(m: &'a MerchantId, key: &'a str, fp: u8) -> IdempotencyWrite<'a> {
    IdempotencyWrite {
        merchant_id: m,
        key,
        record: IdempotencyRecord {
            fingerprint: [fp; 32],
            status: 200,
            body: format!("{fp}"),
            created_at: T0,
        },
    }
}

/// `inv` receiving bitcoin at `script` (a reference only one invoice may hold).
pub fn with_script(mut inv: Invoice, script: &str) -> Invoice {
    inv.methods[0].bitcoin = Some(relay_core::BitcoinPayTo {
        address: format!("addr-{script}"),
        script_pubkey: script.into(),
        derivation_index: 0,
        confirmations: 1,
        treasury: false,
    });
    inv
}

fn add_merchant<S: Store>(s: &S, m: &Merchant) {
    s.insert_merchant(
        m,
        &relay_core::access::first_key_of(
            m,
            &relay_core::ApiKey::from_entropy([m.id.as_str().as_bytes()[4]; 32]),
        ),
    )
    .expect("a merchant is stored");
}

/// One check: a directory of its own, and how to open a store there (again, for a reopen).
type Check<S> = fn(&Path, &dyn Fn(&Path) -> S);

/// Runs every check, each on a fresh store opened by `open` in its own directory.
pub fn check_all<S: Store + Clone>(open: impl Fn(&Path) -> S) {
    let checks: [(&str, Check<S>); 8] = [
        (
            "a refused write leaves nothing",
            refused_write_leaves_nothing,
        ),
        ("a stale version is a conflict", stale_version_is_a_conflict),
        (
            "an idempotency race writes once",
            idempotency_race_writes_once,
        ),
        ("events are listed in commit order", events_in_commit_order),
        (
            "derivation indexes are unique",
            derivation_indexes_are_unique,
        ),
        (
            "no event without its delivery",
            no_event_without_its_delivery,
        ),
        ("the ledger follows the money", ledger_follows_the_money),
        (
            "durable writes survive a reopen",
            durable_writes_survive_reopen,
        ),
    ];
    for (name, check) in checks {
        let dir = tempfile::tempdir().expect("a temporary directory");
        eprintln!("conformance: {name}");
        check(dir.path(), &open);
    }
}

fn refused_write_leaves_nothing<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m);
    let (a, ev_a) = invoice(&m, 1, None);
    let (b, ev_b) = invoice(&m, 2, Some("order-b"));
    assert_eq!(
        s.create_invoice(&with_script(a, "0014aa"), &ev_a, None)
            .unwrap(),
        Commit::Done
    );
    let err = s
        .create_invoice(
            &with_script(b.clone(), "0014aa"),
            &ev_b,
            Some(idem(&m.id, "kb", 2)),
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateReference { .. }),
        "{err}"
    );
    assert!(s.invoice(&b.id).unwrap().is_none(), "no invoice");
    assert!(s.event(&ev_b[0].id).unwrap().is_none(), "no event");
    assert!(
        s.idempotency(&m.id, "kb").unwrap().is_none(),
        "no idempotency record"
    );
    let by_order = s
        .list_invoices(
            &m.id,
            &InvoiceQuery {
                order_id: Some("order-b".into()),
                starting_after: None,
                limit: 10,
            },
        )
        .unwrap();
    assert!(by_order.items.is_empty(), "no index entry");
}

fn stale_version_is_a_conflict<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m);
    let (mut inv, ev) = invoice(&m, 1, None);
    s.create_invoice(&inv, &ev, None).unwrap();
    let v = inv.version;
    inv.apply(InvoiceInput::Cancel, T0.plus_seconds(1)).unwrap();
    assert_eq!(s.update_invoice(v, &inv, &[], None).unwrap(), Commit::Done);
    let mut other = inv.clone();
    other.description = Some("written from a stale copy".into());
    assert_eq!(
        s.update_invoice(v, &other, &[], None).unwrap(),
        Commit::Conflict
    );
    assert_eq!(s.invoice(&inv.id).unwrap(), Some(inv));
}

fn idempotency_race_writes_once<S: Store + Clone>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m);
    let outcomes: Vec<Commit> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8u32)
            .map(|n| {
                let (s, m) = (s.clone(), m.clone());
                scope.spawn(move || {
                    let (inv, ev) = invoice(&m, 10 + n, None);
                    s.create_invoice(&inv, &ev, Some(idem(&m.id, "same", n as u8)))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let done = outcomes.iter().filter(|c| **c == Commit::Done).count();
    assert_eq!(done, 1, "{outcomes:?}");
    let stored = s.idempotency(&m.id, "same").unwrap().unwrap();
    for c in &outcomes {
        if let Commit::IdempotencyHit(rec) = c {
            assert_eq!(rec, &stored, "every loser gets the winner's record");
        }
    }
    let all = s
        .list_invoices(
            &m.id,
            &InvoiceQuery {
                order_id: None,
                starting_after: None,
                limit: 100,
            },
        )
        .unwrap();
    assert_eq!(all.items.len(), 1, "one invoice");
}

fn events_in_commit_order<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m);
    let mut ids = Vec::new();
    for n in 1..=5 {
        let (inv, ev) = invoice(&m, n, None);
        s.create_invoice(&inv, &ev, None).unwrap();
        ids.extend(ev.iter().map(|e| e.id.clone()));
    }
    let page = s.list_events(&m.id, None, 100).unwrap();
    let listed: Vec<EventId> = page.items.iter().map(|e| e.id.clone()).collect();
    ids.reverse();
    assert_eq!(
        listed, ids,
        "newest first, in the order they were committed"
    );
    let after = s.list_events(&m.id, Some(&ids[1]), 100).unwrap();
    assert_eq!(
        after.items.len(),
        ids.len() - 2,
        "a cursor goes on after it"
    );
}

fn derivation_indexes_are_unique<S: Store + Clone>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    let mut all: Vec<u32> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (s, id) = (s.clone(), m.id.clone());
                scope.spawn(move || {
                    (0..50)
                        .map(|_| s.next_derivation_index(&id).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 200, "no index handed out twice");
}

fn no_event_without_its_delivery<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m);
    s.insert_endpoint(&WebhookEndpoint {
        id: "we_conformance".into(),
        merchant_id: m.id.clone(),
        url: "https://example.com/hooks".into(),
        event_types: Vec::new(),
        secret: relay_core::Secret::from_entropy("whsec_", [1; 32]),
        enabled: true,
        disabled_reason: None,
        created_at: T0,
    })
    .unwrap();
    let quiet = merchant(2);
    add_merchant(&s, &quiet);
    let (other, other_ev) = invoice(&quiet, 2, None);
    s.create_invoice(&other, &other_ev, None).unwrap();
    assert_eq!(
        s.deliveries_pending().unwrap(),
        0,
        "no endpoint, nothing to deliver"
    );
    let (inv, ev) = invoice(&m, 1, None);
    s.create_invoice(&inv, &ev, None).unwrap();
    assert_eq!(
        s.deliveries_pending().unwrap(),
        ev.len(),
        "queued in the event's own transaction"
    );
    assert!(s.delivery_attempts(&ev[0].id).unwrap().is_empty());
}

fn ledger_follows_the_money<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m);
    let (mut inv, ev) = invoice(&m, 1, None);
    s.create_invoice(&inv, &ev, None).unwrap();
    assert!(
        s.ledger_entries(&m.id, &inv.id).unwrap().is_empty(),
        "no money, no entry"
    );
    let v = inv.version;
    inv.apply(
        InvoiceInput::Observe {
            reference: "pi_conformance".into(),
            method: Method::Card,
            asset: "USD".into(),
            amount: Amount::from_minor(101),
            confirmed: true,
            confirmations: 1,
            seen_at: None,
        },
        T0.plus_seconds(10),
    )
    .unwrap();
    assert_eq!(s.update_invoice(v, &inv, &[], None).unwrap(), Commit::Done);
    let entries = s.ledger_entries(&m.id, &inv.id).unwrap();
    assert_eq!(entries.len(), 1, "one posting, in the update's transaction");
    assert_eq!(entries[0].0, inv.version);
    let balances = s.balances(&m.id).unwrap();
    assert_ne!(
        balances,
        relay_core::Balances::default(),
        "the balances moved"
    );
}

fn durable_writes_survive_reopen<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let m = merchant(1);
    let (inv, ev) = invoice(&m, 1, Some("kept"));
    {
        let s = open(dir);
        add_merchant(&s, &m);
        s.create_invoice(&inv, &ev, Some(idem(&m.id, "k", 1)))
            .unwrap();
        futures_lite_block_on(s.durable()).unwrap();
    }
    let s = open(dir);
    assert_eq!(s.invoice(&inv.id).unwrap(), Some(inv));
    assert!(s.event(&ev[0].id).unwrap().is_some());
    assert!(s.idempotency(&m.id, "k").unwrap().is_some());
    assert_eq!(s.merchant(&m.id).unwrap(), Some(m));
}

/// Runs a future to completion on a throwaway runtime (the suite itself is synchronous).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}
