//! The conformance suite: what every [`Store`] backend must do, checked through the trait only.
//! A backend's tests call [`check_all`] with a way to open its store on a directory (a backend
//! that keeps its data elsewhere uses the directory to name a fresh database). It runs on sled
//! (`sled_store::tests`); a new backend passes it before it is used.
//!
//! Covered: atomicity (a refused write leaves nothing), version conflicts, idempotency races,
//! event order, unique derivation indexes under concurrency, the webhook outbox (no event stored
//! without its delivery queued), the ledger staying empty until money moves, and durability
//! through `durable()` and a reopen, payment links (`links`), and risk rules and signals (`risk`).

use crate::{
    Commit, IdempotencyRecord, IdempotencyWrite, InvoiceQuery, PayoutKind, PayoutWork, Store,
    StoreError,
};
use relay_core::invoice::{InvoiceInput, NewInvoice};
use relay_core::{
    Amount, Asset, Event, EventId, Invoice, InvoiceId, Merchant, MerchantId, Method, Money,
    Timestamp, WebhookEndpoint,
};
use std::collections::BTreeMap;
use std::path::Path;

mod links;
mod risk;
pub use links::link;
use links::payment_links_are_found_versioned_and_listed;
use risk::risk_rules_versioned_and_signals_counted_once;

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
        rate_spread_bps: 0,
        quote_ttl_secs: 900,
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
        script_pubkey: script.parse().expect("a script in hex"),
        derivation_index: 0,
        confirmations: 1,
        treasury: false,
    });
    inv
}

/// Adds `m` with a first API key of its own (every merchant's key differs: a backend may refuse
/// two keys with one hash).
pub async fn add_merchant<S: Store>(s: &S, m: &Merchant) {
    let mut entropy = [0u8; 32];
    let id = m.id.as_str().as_bytes();
    entropy[..id.len().min(32)].copy_from_slice(&id[..id.len().min(32)]);
    s.insert_merchant(
        m,
        &relay_core::access::first_key_of(m, &relay_core::ApiKey::from_entropy(entropy)),
    )
    .await
    .expect("a merchant is stored");
}

/// Runs every check, each on a fresh store opened by `open` in its own directory. Call it on a
/// multi-threaded runtime: the races run their writers on several threads at once.
pub async fn check_all<S: Store + Clone>(open: impl Fn(&Path) -> S) {
    let open: &dyn Fn(&Path) -> S = &open;
    macro_rules! check {
        ($name:literal, $check:ident) => {{
            let dir = tempfile::tempdir().expect("a temporary directory");
            eprintln!("conformance: {}", $name);
            $check(dir.path(), open).await;
        }};
    }
    check!(
        "a refused write leaves nothing",
        refused_write_leaves_nothing
    );
    check!("a stale version is a conflict", stale_version_is_a_conflict);
    check!(
        "an update claims the invoice's new references",
        an_update_claims_new_references
    );
    check!(
        "an idempotency race writes once",
        idempotency_race_writes_once
    );
    check!("events are listed in commit order", events_in_commit_order);
    check!(
        "derivation indexes are unique",
        derivation_indexes_are_unique
    );
    check!(
        "no event without its delivery",
        no_event_without_its_delivery
    );
    check!("one lane per invoice, in order", outbox_lanes_keep_order);
    check!("the ledger follows the money", ledger_follows_the_money);
    check!(
        "payout work follows the invoice",
        payout_work_follows_the_invoice
    );
    check!(
        "durable writes survive a reopen",
        durable_writes_survive_reopen
    );
    check!(
        "payment links are found, versioned and listed",
        payment_links_are_found_versioned_and_listed
    );
    check!(
        "risk rules are versioned and signals counted once",
        risk_rules_versioned_and_signals_counted_once
    );
}

async fn refused_write_leaves_nothing<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m).await;
    let (a, ev_a) = invoice(&m, 1, None);
    let (b, ev_b) = invoice(&m, 2, Some("order-b"));
    assert_eq!(
        s.create_invoice(&with_script(a, "0014aa"), &ev_a, None)
            .await
            .unwrap(),
        Commit::Done
    );
    let err = s
        .create_invoice(
            &with_script(b.clone(), "0014aa"),
            &ev_b,
            Some(idem(&m.id, "kb", 2)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateReference { .. }),
        "{err}"
    );
    assert!(s.invoice(&b.id).await.unwrap().is_none(), "no invoice");
    assert!(s.event(&ev_b[0].id).await.unwrap().is_none(), "no event");
    assert!(
        s.idempotency(&m.id, "kb").await.unwrap().is_none(),
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
        .await
        .unwrap();
    assert!(by_order.items.is_empty(), "no index entry");
}

/// A bitcoin address given to an invoice after its creation (the payer chose bitcoin) is indexed
/// by the update that adds it; one another invoice holds refuses the whole update.
async fn an_update_claims_new_references<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m).await;
    let (a, ev_a) = invoice(&m, 1, None);
    let (b, ev_b) = invoice(&m, 2, None);
    s.create_invoice(&a, &ev_a, None).await.unwrap();
    s.create_invoice(&with_script(b.clone(), "0014bb"), &ev_b, None)
        .await
        .unwrap();
    let script = |hex: &str| relay_core::Lookup::BtcScript(hex.parse().expect("a script"));
    // Taken by b: refused, and nothing of the update is written.
    let mut taken = with_script(a.clone(), "0014bb");
    taken.version += 1;
    let err = s
        .update_invoice(a.version, &taken, &[], Some(idem(&m.id, "k-taken", 1)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateReference { .. }),
        "{err}"
    );
    assert_eq!(s.invoice(&a.id).await.unwrap(), Some(a.clone()));
    assert!(s.idempotency(&m.id, "k-taken").await.unwrap().is_none());
    assert_eq!(
        s.invoice_by_lookup(&script("0014bb")).await.unwrap(),
        Some(b.id.clone())
    );
    // A free one: claimed with the update.
    let mut given = with_script(a.clone(), "0014aa");
    given.version += 1;
    assert_eq!(
        s.update_invoice(a.version, &given, &[], None)
            .await
            .unwrap(),
        Commit::Done
    );
    assert_eq!(
        s.invoice_by_lookup(&script("0014aa")).await.unwrap(),
        Some(a.id.clone())
    );
    // Written again unchanged: still its own.
    let mut again = given.clone();
    again.version += 1;
    assert_eq!(
        s.update_invoice(given.version, &again, &[], None)
            .await
            .unwrap(),
        Commit::Done
    );
}

async fn stale_version_is_a_conflict<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m).await;
    let (mut inv, ev) = invoice(&m, 1, None);
    s.create_invoice(&inv, &ev, None).await.unwrap();
    let v = inv.version;
    inv.apply(InvoiceInput::Cancel, T0.plus_seconds(1)).unwrap();
    assert_eq!(
        s.update_invoice(v, &inv, &[], None).await.unwrap(),
        Commit::Done
    );
    let mut other = inv.clone();
    other.description = Some("written from a stale copy".into());
    assert_eq!(
        s.update_invoice(v, &other, &[], None).await.unwrap(),
        Commit::Conflict
    );
    assert_eq!(s.invoice(&inv.id).await.unwrap(), Some(inv));
}

async fn idempotency_race_writes_once<S: Store + Clone>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m).await;
    let writers: Vec<_> = (0..8u32)
        .map(|n| {
            let (s, m) = (s.clone(), m.clone());
            tokio::spawn(async move {
                let (inv, ev) = invoice(&m, 10 + n, None);
                s.create_invoice(&inv, &ev, Some(idem(&m.id, "same", n as u8)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for w in writers {
        outcomes.push(w.await.expect("a writer finishes"));
    }
    let done = outcomes.iter().filter(|c| **c == Commit::Done).count();
    assert_eq!(done, 1, "{outcomes:?}");
    let stored = s.idempotency(&m.id, "same").await.unwrap().unwrap();
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
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1, "one invoice");
}

async fn events_in_commit_order<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m).await;
    let mut ids = Vec::new();
    for n in 1..=5 {
        let (inv, ev) = invoice(&m, n, None);
        s.create_invoice(&inv, &ev, None).await.unwrap();
        ids.extend(ev.iter().map(|e| e.id.clone()));
    }
    let page = s.list_events(&m.id, None, 100).await.unwrap();
    let listed: Vec<EventId> = page.items.iter().map(|e| e.id.clone()).collect();
    ids.reverse();
    assert_eq!(
        listed, ids,
        "newest first, in the order they were committed"
    );
    let after = s.list_events(&m.id, Some(&ids[1]), 100).await.unwrap();
    assert_eq!(
        after.items.len(),
        ids.len() - 2,
        "a cursor goes on after it"
    );
}

/// The derivation indexes `tasks` concurrent tasks get for `merchant`, `each` apiece.
pub async fn take_indexes<S: Store + Clone>(
    s: &S,
    merchant: &MerchantId,
    tasks: usize,
    each: usize,
) -> Vec<u32> {
    let takers: Vec<_> = (0..tasks)
        .map(|_| {
            let (s, id) = (s.clone(), merchant.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..each {
                    got.push(s.next_derivation_index(&id).await.unwrap());
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in takers {
        all.extend(t.await.expect("a taker finishes"));
    }
    all
}

async fn derivation_indexes_are_unique<S: Store + Clone>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    let mut all = take_indexes(&s, &m.id, 4, 50).await;
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 200, "no index handed out twice");
}

async fn no_event_without_its_delivery<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m).await;
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
    .await
    .unwrap();
    let quiet = merchant(2);
    add_merchant(&s, &quiet).await;
    let (other, other_ev) = invoice(&quiet, 2, None);
    s.create_invoice(&other, &other_ev, None).await.unwrap();
    assert_eq!(
        s.deliveries_pending().await.unwrap(),
        0,
        "no endpoint, nothing to deliver"
    );
    let (inv, ev) = invoice(&m, 1, None);
    s.create_invoice(&inv, &ev, None).await.unwrap();
    assert_eq!(
        s.deliveries_pending().await.unwrap(),
        ev.len(),
        "queued in the event's own transaction"
    );
    assert!(s.delivery_attempts(&ev[0].id).await.unwrap().is_empty());
}

/// A final card payment of an invoice of [`invoice`] (it asks 101 cents at the least).
fn card_paid(intent: &str) -> InvoiceInput {
    InvoiceInput::Observe {
        reference: relay_core::PaymentRef::Card(intent.into()),
        method: Method::Card,
        asset: "USD".into(),
        amount: Amount::from_minor(101),
        confirmed: true,
        confirmations: 1,
        seen_at: None,
    }
}

/// An endpoint of `m` that wants every event.
fn endpoint_of(m: &Merchant) -> WebhookEndpoint {
    WebhookEndpoint {
        id: format!("we_{}", m.name),
        merchant_id: m.id.clone(),
        url: "https://example.com/hooks".into(),
        event_types: Vec::new(),
        secret: relay_core::Secret::from_entropy("whsec_", [1; 32]),
        enabled: true,
        disabled_reason: None,
        created_at: T0,
    }
}

async fn outbox_lanes_keep_order<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m).await;
    s.insert_endpoint(&endpoint_of(&m)).await.unwrap();
    // Two invoices; the first gets a second event.
    let (mut a, ev_a) = invoice(&m, 1, None);
    let (b, ev_b) = invoice(&m, 2, None);
    s.create_invoice(&a, &ev_a, None).await.unwrap();
    s.create_invoice(&b, &ev_b, None).await.unwrap();
    let v = a.version;
    let t = a.apply(InvoiceInput::Cancel, T0.plus_seconds(1)).unwrap();
    let canceled = Event::for_invoice(&a, &t.events, T0.plus_seconds(1), || {
        EventId::from_entropy([9; 12])
    });
    s.update_invoice(v, &a, &canceled, None).await.unwrap();
    let now_ms = (T0.0 as u64 + 10) * 1000;
    let mut marks = 0;
    loop {
        let n = s.fan_out(now_ms, 1).await.unwrap();
        if n == 0 {
            break;
        }
        marks += n;
    }
    assert_eq!(
        marks,
        ev_a.len() + ev_b.len() + canceled.len(),
        "every mark fanned out"
    );
    let take = |_: &str, _: &[u8]| crate::Pick::Take;
    let (due, _) = s.due_deliveries(now_ms, 100, None, take).await.unwrap();
    let mut heads: Vec<&EventId> = due.iter().map(|d| &d.event.id).collect();
    heads.sort();
    assert_eq!(
        heads,
        vec![&ev_a[0].id, &ev_b[0].id],
        "one head per invoice: the second event of `a` waits for the first"
    );
    let first = due
        .iter()
        .find(|d| d.event.id == ev_a[0].id)
        .expect("a's head is due");
    let attempt = relay_core::DeliveryAttempt {
        event_id: first.event.id.to_string(),
        endpoint_id: first.endpoint.id.clone(),
        attempt: first.attempt,
        at: T0.plus_seconds(10),
        status: Some(200),
        error: None,
        outcome: relay_core::DeliveryOutcome::Delivered,
        duration_ms: 1,
    };
    s.finish_delivery(first, &attempt, now_ms, None, None)
        .await
        .unwrap();
    let (due, _) = s.due_deliveries(now_ms, 100, None, take).await.unwrap();
    let mut heads: Vec<&EventId> = due.iter().map(|d| &d.event.id).collect();
    heads.sort();
    let mut want = vec![&ev_b[0].id, &canceled[0].id];
    want.sort();
    assert_eq!(
        heads, want,
        "a delivered head hands its lane to the next event"
    );
    assert_eq!(
        s.delivery_attempts(&ev_a[0].id).await.unwrap(),
        vec![attempt]
    );
}

async fn payout_work_follows_the_invoice<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m).await;
    let (mut inv, ev) = invoice(&m, 1, None);
    s.create_invoice(&inv, &ev, None).await.unwrap();
    let v = inv.version;
    inv.apply(card_paid("pi_payout"), T0.plus_seconds(10))
        .unwrap();
    s.update_invoice(v, &inv, &[], None).await.unwrap();
    assert!(s.payouts(PayoutKind::CardRefund).await.unwrap().is_empty());
    let v = inv.version;
    let refund = InvoiceInput::RequestRefund {
        id: "re_conformance".into(),
        payment: None,
        amount: Some(Amount::from_minor(50)),
        to: None,
    };
    inv.apply(refund, T0.plus_seconds(20)).unwrap();
    s.update_invoice(v, &inv, &[], None).await.unwrap();
    let work = s.payouts(PayoutKind::CardRefund).await.unwrap();
    assert_eq!(
        work,
        vec![PayoutWork {
            invoice: inv.id.clone(),
            record: "re_conformance".into(),
            value: Vec::new(),
        }],
        "a refund the gateway has not taken is work, written with the invoice"
    );
    let v = inv.version;
    let t = T0.plus_seconds(30);
    inv.apply(
        InvoiceInput::RefundSubmitted {
            id: "re_conformance".into(),
            gateway_refund: "re_gw".into(),
        },
        t,
    )
    .unwrap();
    s.update_invoice(v, &inv, &[], None).await.unwrap();
    assert!(
        s.payouts(PayoutKind::CardRefund).await.unwrap().is_empty(),
        "taken by the gateway: no longer work, removed with the invoice's change"
    );
}

async fn ledger_follows_the_money<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let s = open(dir);
    let m = merchant(1);
    add_merchant(&s, &m).await;
    let (mut inv, ev) = invoice(&m, 1, None);
    s.create_invoice(&inv, &ev, None).await.unwrap();
    assert!(
        s.ledger_entries(&m.id, &inv.id).await.unwrap().is_empty(),
        "no money, no entry"
    );
    let v = inv.version;
    inv.apply(card_paid("pi_conformance"), T0.plus_seconds(10))
        .unwrap();
    assert_eq!(
        s.update_invoice(v, &inv, &[], None).await.unwrap(),
        Commit::Done
    );
    let entries = s.ledger_entries(&m.id, &inv.id).await.unwrap();
    assert_eq!(entries.len(), 1, "one posting, in the update's transaction");
    assert_eq!(entries[0].0, inv.version);
    let balances = s.balances(&m.id).await.unwrap();
    assert_ne!(
        balances,
        relay_core::Balances::default(),
        "the balances moved"
    );
}

async fn durable_writes_survive_reopen<S: Store>(dir: &Path, open: &dyn Fn(&Path) -> S) {
    let m = merchant(1);
    let (inv, ev) = invoice(&m, 1, Some("kept"));
    {
        let s = open(dir);
        add_merchant(&s, &m).await;
        s.create_invoice(&inv, &ev, Some(idem(&m.id, "k", 1)))
            .await
            .unwrap();
        s.durable().await.unwrap();
    }
    let s = open(dir);
    assert_eq!(s.invoice(&inv.id).await.unwrap(), Some(inv));
    assert!(s.event(&ev[0].id).await.unwrap().is_some());
    assert!(s.idempotency(&m.id, "k").await.unwrap().is_some());
    assert_eq!(s.merchant(&m.id).await.unwrap(), Some(m));
}
