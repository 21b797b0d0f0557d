use super::*;
use crate::money::Asset;
use crate::rate::FixedRates;
use proptest::prelude::*;

const T0: Timestamp = Timestamp(1_800_000_000);

fn rates() -> FixedRates {
    FixedRates::from_pairs([("BTC/USD", "60000"), ("ETH/USD", "2500")]).unwrap()
}

fn new_invoice(cents: u128, methods: Vec<Method>) -> Invoice {
    let params = NewInvoice {
        merchant_id: MerchantId::from_entropy([1; 12]),
        price: Money {
            asset: Asset::fiat("USD", 2),
            amount: Amount::from_minor(cents),
        },
        order_id: Some("A-1".into()),
        description: None,
        metadata: BTreeMap::new(),
        expires_at: T0.plus_seconds(900),
        methods,
        tolerance_bps: 0,
        eth_asset: None,
    };
    let quotes = params.quote(&AssetBook::default(), &rates()).unwrap();
    Invoice::create(InvoiceId::from_entropy([2; 12]), params, quotes, T0)
        .unwrap()
        .0
}

/// A test payment's reference on `method`'s rail, named by `label`: a reference of that rail is
/// taken as it is, any other label is hashed into one.
fn reference_of(method: Method, label: &str) -> PaymentRef {
    let parsed = label.parse::<PaymentRef>().ok();
    let h = alloy_primitives::keccak256(label.as_bytes());
    match (method, parsed) {
        (Method::Card, Some(r @ PaymentRef::Card(_)))
        | (Method::Bitcoin, Some(r @ PaymentRef::Bitcoin { .. }))
        | (Method::Ethereum, Some(r @ PaymentRef::Ethereum(_))) => r,
        (Method::Card, _) => PaymentRef::Card(label.to_owned()),
        (Method::Bitcoin, _) => PaymentRef::Bitcoin {
            txid: crate::Txid(h),
            vout: 0,
        },
        (Method::Ethereum, _) => PaymentRef::eth(h),
    }
}

fn observe(
    reference: &str,
    method: Method,
    asset: &str,
    amount: u128,
    confirmed: bool,
) -> InvoiceInput {
    InvoiceInput::Observe {
        reference: reference_of(method, reference),
        method,
        asset: asset.into(),
        amount: Amount::from_minor(amount),
        confirmed,
        confirmations: u32::from(confirmed),
        seen_at: None,
    }
}

fn btc(reference: &str, sat: u128, confirmed: bool) -> InvoiceInput {
    observe(reference, Method::Bitcoin, "BTC", sat, confirmed)
}

#[test]
fn quotes_lock_rates_per_method() {
    let inv = new_invoice(2500, vec![Method::Bitcoin, Method::Ethereum, Method::Card]);
    let btc = inv.quote_for(Method::Bitcoin).unwrap();
    assert_eq!(btc.due.amount, Amount::from_minor(41667));
    assert_eq!(btc.rate.price, "60000".parse().unwrap());
    let eth = inv.quote_for(Method::Ethereum).unwrap();
    assert_eq!(eth.due.amount, Amount::from_minor(10_000_000_000_000_000));
    let card = inv.quote_for(Method::Card).unwrap();
    assert_eq!(card.due, inv.price);
}

#[test]
fn exact_payment_goes_processing_then_settled() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    let t = inv
        .apply(btc("tx:0", 41667, false), T0.plus_seconds(10))
        .unwrap();
    assert_eq!(
        t.events,
        vec![EventType::PaymentPending, EventType::InvoiceProcessing]
    );
    assert_eq!(inv.status, InvoiceStatus::Processing);
    assert_eq!(inv.exception, None);
    let t = inv
        .apply(btc("tx:0", 41667, true), T0.plus_seconds(600))
        .unwrap();
    assert_eq!(
        t.events,
        vec![EventType::PaymentConfirmed, EventType::InvoiceSettled]
    );
    assert_eq!(inv.status, InvoiceStatus::Settled);
}

#[test]
fn duplicate_observation_changes_nothing() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    inv.apply(btc("tx:0", 41667, true), T0.plus_seconds(10))
        .unwrap();
    let before = inv.clone();
    let t = inv
        .apply(btc("tx:0", 41667, true), T0.plus_seconds(20))
        .unwrap();
    assert_eq!(t, Transition::default());
    assert_eq!(inv, before);
}

#[test]
fn partial_then_top_up_settles_and_partial_alone_expires() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    inv.apply(btc("a:0", 20000, true), T0.plus_seconds(10))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Processing);
    assert_eq!(inv.exception, Some(InvoiceException::PaidPartial));
    let mut expired = inv.clone();
    inv.apply(btc("b:0", 21667, true), T0.plus_seconds(20))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert_eq!(inv.exception, None);

    let t = expired
        .apply(InvoiceInput::Tick, T0.plus_seconds(900))
        .unwrap();
    assert_eq!(t.events, vec![EventType::InvoiceExpired]);
    assert_eq!(expired.status, InvoiceStatus::Expired);
    assert_eq!(expired.exception, Some(InvoiceException::PaidPartial));
}

#[test]
fn over_and_late_payments_are_exceptions() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    inv.apply(btc("a:0", 50000, true), T0.plus_seconds(10))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert_eq!(inv.exception, Some(InvoiceException::PaidOver));

    let mut late = new_invoice(2500, vec![Method::Bitcoin]);
    late.apply(InvoiceInput::Tick, T0.plus_seconds(901))
        .unwrap();
    assert_eq!(late.status, InvoiceStatus::Expired);
    let t = late
        .apply(btc("a:0", 41667, true), T0.plus_seconds(1000))
        .unwrap();
    assert_eq!(late.status, InvoiceStatus::Expired);
    assert_eq!(late.exception, Some(InvoiceException::PaidLate));
    assert!(t.events.contains(&EventType::PaymentConfirmed));
}

#[test]
fn payment_seen_in_time_may_confirm_after_expiry() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    inv.apply(btc("a:0", 41667, false), T0.plus_seconds(899))
        .unwrap();
    inv.apply(InvoiceInput::Tick, T0.plus_seconds(2000))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Processing);
    inv.apply(btc("a:0", 41667, true), T0.plus_seconds(3000))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert_eq!(inv.exception, None);
}

#[test]
fn reorg_reverts_and_reinclusion_credits_once() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    inv.apply(btc("a:0", 41667, true), T0.plus_seconds(10))
        .unwrap();
    let t = inv
        .apply(
            InvoiceInput::Drop {
                reference: reference_of(Method::Bitcoin, "a:0"),
                status: PaymentStatus::Reverted,
            },
            T0.plus_seconds(20),
        )
        .unwrap();
    assert_eq!(t.events, vec![EventType::PaymentReverted]);
    // Nothing live any more, not expired: processing falls back to new.
    assert_eq!(inv.status, InvoiceStatus::New);
    inv.apply(btc("a:0", 41667, true), T0.plus_seconds(30))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert_eq!(inv.payments.len(), 1);
    assert_eq!(
        inv.exception, None,
        "re-inclusion must not count as over-payment"
    );
}

#[test]
fn cancel_only_unpaid_new_invoices() {
    let mut inv = new_invoice(2500, vec![Method::Card]);
    let t = inv.apply(InvoiceInput::Cancel, T0.plus_seconds(5)).unwrap();
    assert_eq!(t.events, vec![EventType::InvoiceInvalid]);
    assert_eq!(inv.status, InvoiceStatus::Invalid);
    assert!(matches!(
        inv.apply(InvoiceInput::Cancel, T0.plus_seconds(6)),
        Err(CoreError::NotCancelable { .. })
    ));

    let mut paid = new_invoice(2500, vec![Method::Card]);
    paid.apply(observe("pi_1", Method::Card, "USD", 2500, false), T0)
        .unwrap();
    assert!(paid
        .apply(InvoiceInput::Cancel, T0.plus_seconds(5))
        .is_err());
}

#[test]
fn rejects_payments_on_methods_or_assets_not_offered() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    let before = inv.clone();
    assert!(matches!(
        inv.apply(observe("x", Method::Ethereum, "ETH", 1, true), T0),
        Err(CoreError::MethodNotOffered { .. })
    ));
    assert!(matches!(
        inv.apply(observe("x", Method::Bitcoin, "ETH", 1, true), T0),
        Err(CoreError::WrongPaymentAsset { .. })
    ));
    assert_eq!(inv, before);
}

#[test]
fn creation_validates_parameters() {
    let base = || NewInvoice {
        merchant_id: MerchantId::from_entropy([1; 12]),
        price: Money {
            asset: Asset::fiat("USD", 2),
            amount: Amount::from_minor(100),
        },
        order_id: None,
        description: None,
        metadata: BTreeMap::new(),
        expires_at: T0.plus_seconds(900),
        methods: vec![Method::Card],
        tolerance_bps: 0,
        eth_asset: None,
    };
    let create = |p: NewInvoice| Invoice::create(InvoiceId::from_entropy([2; 12]), p, vec![], T0);
    assert!(create(base()).is_ok());
    let mut zero = base();
    zero.price.amount = Amount::ZERO;
    assert!(create(zero).is_err());
    let mut absurd = base();
    absurd.expires_at = T0.plus_seconds(MAX_EXPIRY_SECS + 1);
    assert!(create(absurd).is_err());
    let mut past = base();
    past.expires_at = T0.plus_seconds(-5);
    assert!(create(past).is_err());
    let mut long_order = base();
    long_order.order_id = Some("x".repeat(MAX_ORDER_ID_LEN + 1));
    assert!(create(long_order).is_err());
    let mut no_methods = base();
    no_methods.methods.clear();
    assert!(create(no_methods).is_err());
}

#[test]
fn card_needs_a_fiat_price() {
    let params = NewInvoice {
        merchant_id: MerchantId::from_entropy([1; 12]),
        price: Money {
            asset: Asset::btc(),
            amount: Amount::from_minor(1000),
        },
        order_id: None,
        description: None,
        metadata: BTreeMap::new(),
        expires_at: T0.plus_seconds(900),
        methods: vec![Method::Card],
        tolerance_bps: 0,
        eth_asset: None,
    };
    assert!(matches!(
        params.quote(&AssetBook::default(), &rates()),
        Err(CoreError::NoRate { .. })
    ));
}

// ---- property test against a naive model -------------------------------------------------------

/// Amounts (in sat) of the five possible payments; the price is 41667 sat worth (25.00 USD).
const AMOUNTS: [u128; 5] = [41667, 20000, 21667, 100, 60000];

#[derive(Debug, Clone)]
enum Op {
    Observe { idx: usize, confirmed: bool },
    Revert { idx: usize },
    Advance { secs: i64 },
    Tick,
    Cancel,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..AMOUNTS.len(), any::<bool>()).prop_map(|(idx, confirmed)| Op::Observe { idx, confirmed }),
        2 => (0..AMOUNTS.len()).prop_map(|idx| Op::Revert { idx }),
        2 => (1i64..400).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Tick),
        1 => Just(Op::Cancel),
    ]
}

/// The naive model: a list of payments with their first-seen time and a liveness flag, and the
/// status rules written as plainly as possible over integer totals.
#[derive(Default)]
struct Model {
    seen: [Option<(i64, bool, bool)>; 5], // (seen_at, live, confirmed)
    canceled_at: Option<i64>,
}

impl Model {
    fn status(&self, now: i64) -> (InvoiceStatus, Option<InvoiceException>) {
        let price: u128 = 2500;
        let expires = T0.0 + 900;
        let deadline = self.canceled_at.map_or(expires, |c| c.min(expires));
        let (mut live_sat, mut conf_sat, mut late) = (0u128, 0u128, false);
        for (i, s) in self.seen.iter().enumerate() {
            if let Some((at, true, c)) = s {
                if *at >= deadline {
                    late = true;
                    continue;
                }
                live_sat += AMOUNTS[i];
                if *c {
                    conf_sat += AMOUNTS[i];
                }
            }
        }
        let (live, conf) = (live_sat * price / 41667, conf_sat * price / 41667);
        let status = if self.canceled_at.is_some() {
            InvoiceStatus::Invalid
        } else if conf >= price {
            InvoiceStatus::Settled
        } else if live >= price || (live > 0 && now < expires) {
            InvoiceStatus::Processing
        } else if now >= expires {
            InvoiceStatus::Expired
        } else {
            InvoiceStatus::New
        };
        let exc = if late {
            Some(InvoiceException::PaidLate)
        } else if live > price {
            Some(InvoiceException::PaidOver)
        } else if live > 0 && live < price {
            Some(InvoiceException::PaidPartial)
        } else {
            None
        };
        (status, exc)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn state_machine_matches_naive_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
        let mut model = Model::default();
        let mut now = T0;
        let mut settled_events = 0usize;
        let mut settles_observed = 0usize;
        for op in ops {
            let was_settled = inv.status == InvoiceStatus::Settled;
            let input = match &op {
                Op::Observe { idx, confirmed } => Some(btc(&format!("tx{idx}:0"), AMOUNTS[*idx], *confirmed)),
                Op::Revert { idx } => Some(InvoiceInput::Drop { reference: reference_of(Method::Bitcoin, &format!("tx{idx}:0")), status: PaymentStatus::Reverted }),
                Op::Tick => Some(InvoiceInput::Tick),
                Op::Cancel => Some(InvoiceInput::Cancel),
                Op::Advance { secs } => { now = now.plus_seconds(*secs); None }
            };
            let Some(input) = input else { continue };
            let before = inv.clone();
            let outcome = inv.apply(input.clone(), now);
            let accepted = outcome.is_ok();
            match outcome {
                Ok(t) => {
                    // Model the accepted input.
                    match op {
                        Op::Observe { idx, confirmed } => {
                            let at = model.seen[idx].map_or(now.0, |s| s.0);
                            model.seen[idx] = Some((at, true, confirmed));
                        }
                        Op::Revert { idx } => {
                            if let Some(s) = model.seen[idx].as_mut() { s.1 = false; s.2 = false; }
                        }
                        Op::Cancel => model.canceled_at = Some(now.0),
                        _ => {}
                    }
                    settled_events += t.events.iter().filter(|e| **e == EventType::InvoiceSettled).count();
                    // Replaying the same input at once is a no-op.
                    let again = inv.clone();
                    if !matches!(input, InvoiceInput::Cancel) {
                        let t2 = inv.apply(input, now).unwrap();
                        prop_assert_eq!(t2, Transition::default());
                        prop_assert_eq!(&inv, &again);
                    }
                    prop_assert_eq!(t.changed, inv != before || t.changed && inv.version == before.version + 1);
                }
                Err(e) => {
                    // Only two inputs may be refused here, and a refusal changes nothing.
                    let refused_ok = matches!(e, CoreError::NotCancelable { .. } | CoreError::UnknownPayment { .. });
                    prop_assert!(refused_ok, "unexpected error {e:?}");
                    prop_assert_eq!(&inv, &before);
                }
            }
            if !was_settled && inv.status == InvoiceStatus::Settled {
                settles_observed += 1;
            }
            // An accepted input re-evaluates the invoice at `now`; a refused one leaves it as it was.
            if accepted {
                prop_assert_eq!((inv.status, inv.exception), model.status(now.0));
            }
            // No reference is ever credited twice.
            let mut refs: Vec<_> = inv.payments.iter().map(|p| p.reference.clone()).collect();
            refs.sort();
            refs.dedup();
            prop_assert_eq!(refs.len(), inv.payments.len());
        }
        prop_assert_eq!(settled_events, settles_observed, "one invoice.settled per transition into settled");
    }
}

#[test]
fn tolerance_settles_a_slight_underpayment_and_keeps_the_exception() {
    let mut inv = new_invoice(10_000, vec![Method::Bitcoin]);
    inv.tolerance_bps = 100; // 1 %
    let due = inv
        .quote_for(Method::Bitcoin)
        .unwrap()
        .due
        .amount
        .0
        .to::<u128>();
    // 98.9 % of what is due: outside the tolerance.
    inv.apply(btc("a:0", due * 989 / 1000, true), T0.plus_seconds(5))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Processing);
    assert_eq!(inv.exception, Some(InvoiceException::PaidPartial));

    let mut inv = new_invoice(10_000, vec![Method::Bitcoin]);
    inv.tolerance_bps = 100;
    let t = inv
        .apply(btc("a:0", due * 991 / 1000, true), T0.plus_seconds(5))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert_eq!(inv.exception, Some(InvoiceException::PaidPartial));
    assert!(t.events.contains(&EventType::InvoiceSettled));
}

#[test]
fn a_payment_found_late_but_made_in_time_is_not_late() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    let due = inv.quote_for(Method::Bitcoin).unwrap().due.amount;
    let input = InvoiceInput::Observe {
        reference: reference_of(Method::Bitcoin, "aa"),
        method: Method::Bitcoin,
        asset: "BTC".into(),
        amount: due,
        confirmed: true,
        confirmations: 3,
        seen_at: Some(T0.plus_seconds(100)),
    };
    // Processed after expiry (the relay was catching up), but mined before it.
    inv.apply(input, T0.plus_seconds(5000)).unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert_eq!(inv.exception, None);
    assert_eq!(inv.payments[0].seen_at, T0.plus_seconds(100));
}

const WEI_DUE: u128 = 10_000_000_000_000_000; // 25.00 USD at 2500 USD/ETH

fn eth(reference: &str, wei: u128, confirmed: bool) -> InvoiceInput {
    observe(reference, Method::Ethereum, "ETH", wei, confirmed)
}

fn returned(reference: &str, wei: u128, status: PaymentStatus) -> InvoiceInput {
    InvoiceInput::Return {
        reference: reference_of(Method::Ethereum, reference),
        method: Method::Ethereum,
        asset: "ETH".into(),
        amount: Amount::from_minor(wei),
        seen_at: None,
        status,
    }
}

#[test]
fn a_voided_wrong_deposit_leaves_the_invoice_payable_with_an_exception() {
    let mut inv = new_invoice(2500, vec![Method::Ethereum]);
    let t = inv
        .apply(
            returned("eth:0xa", WEI_DUE - 1, PaymentStatus::Voided),
            T0.plus_seconds(10),
        )
        .unwrap();
    assert_eq!(t.events, vec![EventType::PaymentVoided]);
    assert_eq!(inv.status, InvoiceStatus::New);
    assert_eq!(inv.exception, Some(InvoiceException::PaidPartial));
    // The same report again changes nothing.
    let v = inv.version;
    let t = inv
        .apply(
            returned("eth:0xa", WEI_DUE - 1, PaymentStatus::Voided),
            T0.plus_seconds(11),
        )
        .unwrap();
    assert!(t.events.is_empty() && inv.version == v);
    // The right deposit pays it; the exception describes what the merchant keeps.
    inv.apply(eth("eth:0xb", WEI_DUE, true), T0.plus_seconds(20))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert_eq!(inv.exception, None);
}

#[test]
fn a_late_deposit_voided_stays_paid_late_and_expired() {
    let mut inv = new_invoice(2500, vec![Method::Ethereum]);
    let late = T0.plus_seconds(1000);
    inv.apply(eth("eth:0xa", WEI_DUE, true), late).unwrap();
    assert_eq!(inv.status, InvoiceStatus::Expired);
    assert_eq!(inv.exception, Some(InvoiceException::PaidLate));
    let t = inv
        .apply(returned("eth:0xa", WEI_DUE, PaymentStatus::Voided), late)
        .unwrap();
    assert_eq!(t.events, vec![EventType::PaymentVoided]);
    assert_eq!(inv.payments[0].status, PaymentStatus::Voided);
    assert_eq!(inv.status, InvoiceStatus::Expired);
    assert_eq!(inv.exception, Some(InvoiceException::PaidLate));
}

#[test]
fn a_reclaimed_deposit_no_longer_settles_the_invoice() {
    let mut inv = new_invoice(2500, vec![Method::Ethereum]);
    inv.apply(eth("eth:0xa", WEI_DUE, true), T0.plus_seconds(10))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    let t = inv
        .apply(
            returned("eth:0xa", WEI_DUE, PaymentStatus::Reclaimed),
            T0.plus_seconds(20),
        )
        .unwrap();
    assert_eq!(t.events, vec![EventType::PaymentReclaimed]);
    assert_eq!(inv.status, InvoiceStatus::New);
    assert_eq!(inv.exception, None);
    // A returned payment cannot be reported as live through this input.
    assert!(inv
        .apply(
            returned("eth:0xa", WEI_DUE, PaymentStatus::Confirmed),
            T0.plus_seconds(30)
        )
        .is_err());
}

#[test]
fn a_capture_is_recorded_once_and_needs_a_known_payment() {
    let mut inv = new_invoice(2500, vec![Method::Ethereum]);
    let capture = |tx: &str| InvoiceInput::Captured {
        fee: Amount::ZERO,
        reference: reference_of(Method::Ethereum, "eth:0xa"),
        tx: tx.into(),
    };
    assert!(inv.apply(capture("0x1"), T0.plus_seconds(5)).is_err());
    inv.apply(eth("eth:0xa", WEI_DUE, true), T0.plus_seconds(10))
        .unwrap();
    let t = inv.apply(capture("0x1"), T0.plus_seconds(11)).unwrap();
    assert_eq!(t.events, vec![EventType::PaymentCaptured]);
    let t = inv.apply(capture("0x1"), T0.plus_seconds(12)).unwrap();
    assert!(t.events.is_empty());
    assert_eq!(inv.payments[0].capture_tx.as_deref(), Some("0x1"));
}

#[test]
fn ethereum_quotes_in_the_price_token_or_the_asked_asset() {
    let mut book = AssetBook::default();
    book.add_token("DUSD", 6, "0x00000000000000000000000000000000000000d1")
        .unwrap();
    let params = |price: &str, eth_asset: Option<&str>| NewInvoice {
        merchant_id: MerchantId::from_entropy([1; 12]),
        price: Money {
            asset: book.get(price).unwrap().clone(),
            amount: Amount::from_minor(12_500_000),
        },
        order_id: None,
        description: None,
        metadata: BTreeMap::new(),
        expires_at: T0.plus_seconds(900),
        methods: vec![Method::Ethereum],
        tolerance_bps: 0,
        eth_asset: eth_asset.map(str::to_owned),
    };
    let q = params("DUSD", None).quote(&book, &rates()).unwrap();
    assert_eq!(q[0].due.asset.code, "DUSD");
    assert_eq!(q[0].due.amount, Amount::from_minor(12_500_000));
    let err = params("USD", Some("EUR"))
        .quote(&book, &rates())
        .unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::InvalidField {
                field: "ethereum_asset",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn the_payment_id_matches_the_escrow_encoding() {
    // keccak256(abi.encode(1, 0x…01, 0x…02, 0x0, 1000, 2000, 0x…03)), computed independently
    // with `cast keccak $(cast abi-encode 'f(uint256,address,address,address,uint256,uint64,bytes32)' …)`.
    let id = eth_payment_id(
        1,
        alloy_primitives::Address::with_last_byte(1),
        alloy_primitives::Address::with_last_byte(2),
        alloy_primitives::Address::ZERO,
        U256::from(1000u32),
        2000,
        alloy_primitives::B256::with_last_byte(3),
    );
    assert_eq!(format!("{id:#x}"), EXPECTED_ID);
}

const EXPECTED_ID: &str = "0xc16ae797d381acddcc6108260e3fc95b58aa62c973596dd8554529701edf1f83";

#[test]
fn an_invoice_records_at_most_max_payments_and_is_flagged_once() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    let now = T0.plus_seconds(10);
    for n in 0..MAX_PAYMENTS {
        inv.apply(btc(&format!("btc:{n:064x}:0"), 1000, true), now)
            .unwrap();
    }
    let version = inv.version;
    let t = inv
        .apply(btc(&format!("btc:{:064x}:1", 7), 1000, true), now)
        .unwrap();
    assert!(t.changed && t.events.is_empty());
    assert!(inv.payments_capped);
    assert_eq!(inv.payments.len(), MAX_PAYMENTS);
    assert_eq!(inv.version, version + 1);
    // More of the flood: nothing changes, nothing is written.
    let t = inv
        .apply(btc(&format!("btc:{:064x}:2", 7), 1000, true), now)
        .unwrap();
    assert!(!t.changed);
    assert_eq!(inv.version, version + 1);
    // Payments it already holds still get deeper.
    let t = inv
        .apply(
            InvoiceInput::Observe {
                reference: format!("btc:{:064x}:0", 0).parse().unwrap(),
                method: Method::Bitcoin,
                asset: "BTC".into(),
                amount: Amount::from_minor(1000),
                confirmed: true,
                confirmations: 3,
                seen_at: None,
            },
            now,
        )
        .unwrap();
    assert!(t.changed);
}

#[test]
fn a_step_writes_each_event_kind_once() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    let now = T0.plus_seconds(10);
    let mut kinds = Vec::new();
    for n in 0..50 {
        let t = inv
            .apply(btc(&format!("btc:{n:064x}:0"), 1000, false), now)
            .unwrap();
        kinds.extend(t.events);
    }
    assert!(kinds.len() >= 50);
    let mut n = 0;
    let events = crate::Event::for_invoice(&inv, &kinds, now, || {
        n += 1;
        crate::EventId::from_entropy([n; 12])
    });
    let types: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        types,
        vec![EventType::PaymentPending, EventType::InvoiceProcessing]
    );
}

#[test]
fn the_intent_of_an_invoice_no_longer_payable_is_to_be_closed_once() {
    let mut inv = new_invoice(2500, vec![Method::Card]);
    inv.methods[0].card = Some(CardIntent {
        gateway: "stripe".into(),
        payment_intent: "pi_1".into(),
        client_secret: "pi_1_secret".into(),
    });
    assert_eq!(inv.intent_to_close(), None, "still payable");
    inv.apply(InvoiceInput::Tick, T0.plus_seconds(901)).unwrap();
    assert_eq!(inv.status, InvoiceStatus::Expired);
    assert_eq!(inv.intent_to_close(), Some("pi_1"));
    let t = inv
        .apply(InvoiceInput::IntentClosed, T0.plus_seconds(902))
        .unwrap();
    assert!(t.changed);
    assert_eq!(inv.intent_to_close(), None);

    // Paid by card (late): nothing to cancel.
    let mut paid = new_invoice(2500, vec![Method::Card]);
    paid.methods[0].card = inv.methods[0].card.clone();
    paid.apply(InvoiceInput::Cancel, T0.plus_seconds(5))
        .unwrap();
    assert_eq!(paid.intent_to_close(), Some("pi_1"));
    paid.apply(
        observe("pi_1", Method::Card, "USD", 2500, true),
        T0.plus_seconds(6),
    )
    .unwrap();
    assert_eq!(paid.intent_to_close(), None);
}

#[test]
fn a_card_is_taken_only_while_nothing_is_paid_and_the_invoice_is_open() {
    let intent = CardIntent {
        gateway: "stripe".into(),
        payment_intent: "pi_1".into(),
        client_secret: "pi_1_secret".into(),
    };
    let with_card = |methods: Vec<Method>| {
        let mut inv = new_invoice(2500, methods);
        for q in &mut inv.methods {
            if q.method == Method::Card {
                q.card = Some(intent.clone());
            }
        }
        inv
    };
    let open = with_card(vec![Method::Card, Method::Bitcoin]);
    assert_eq!(open.card_payable(T0), Ok(&intent));
    assert_eq!(
        new_invoice(2500, vec![Method::Bitcoin]).card_payable(T0),
        Err(CardRefusal::NotOffered)
    );
    // Expired by the clock, even before the sweep has marked it.
    assert_eq!(
        open.card_payable(T0.plus_seconds(900)),
        Err(CardRefusal::NotOpen)
    );
    // Partly paid in bitcoin: a card for the whole price would overpay.
    let mut partly = open.clone();
    partly
        .apply(btc("a", 10_000, false), T0.plus_seconds(1))
        .unwrap();
    assert_eq!(
        partly.card_payable(T0.plus_seconds(2)),
        Err(CardRefusal::PaymentUnderway)
    );
    let mut canceled = open.clone();
    canceled
        .apply(InvoiceInput::Cancel, T0.plus_seconds(1))
        .unwrap();
    assert_eq!(
        canceled.card_payable(T0.plus_seconds(2)),
        Err(CardRefusal::NotOpen)
    );
    let mut paid = open.clone();
    paid.apply(
        observe("pi_1", Method::Card, "USD", 2500, true),
        T0.plus_seconds(1),
    )
    .unwrap();
    assert_eq!(
        paid.card_payable(T0.plus_seconds(2)),
        Err(CardRefusal::NotOpen)
    );
}

#[test]
fn what_is_still_due_on_a_rail_settles_the_invoice_when_paid() {
    for (cents, first) in [(2500u128, 10_001u128), (2500, 1), (1999, 33_333), (3, 1)] {
        let mut inv = new_invoice(cents, vec![Method::Bitcoin]);
        let quoted = inv.quote_for(Method::Bitcoin).unwrap().due.amount;
        assert_eq!(
            inv.still_due_on(Method::Bitcoin).unwrap().amount,
            quoted,
            "nothing paid: the quote"
        );
        inv.apply(btc("a", first, true), T0.plus_seconds(1))
            .unwrap();
        let rest = inv.still_due_on(Method::Bitcoin).unwrap().amount;
        assert!(rest.0 <= quoted.0, "{cents}: {rest:?}");
        inv.apply(btc("b", rest.0.to::<u128>(), true), T0.plus_seconds(2))
            .unwrap();
        assert_eq!(inv.status, InvoiceStatus::Settled, "{cents} after {first}");
        assert_eq!(
            inv.exception, None,
            "not over- or underpaid: {cents} after {first}"
        );
    }
    assert!(new_invoice(2500, vec![Method::Card])
        .still_due_on(Method::Bitcoin)
        .is_none());
}

#[test]
fn a_spread_is_taken_off_crypto_rates_only_and_the_payer_pays_it() {
    let inv = new_invoice(2500, vec![Method::Bitcoin, Method::Card]);
    let mut quotes = inv.methods.clone();
    crate::invoice::apply_spread(&mut quotes, &inv.price, 150).unwrap();
    let btc = quotes.iter().find(|q| q.method == Method::Bitcoin).unwrap();
    assert_eq!(btc.rate.price.to_string(), "59100");
    assert_eq!(btc.rate.spread_bps, 150);
    // 25 USD at 59,100 USD/BTC = 42,301.18… sat, rounded up.
    assert_eq!(btc.due.amount, Amount::from_minor(42_302));
    let card = quotes.iter().find(|q| q.method == Method::Card).unwrap();
    assert_eq!(
        card.due.amount,
        Amount::from_minor(2500),
        "no spread on a card"
    );
    assert_eq!(card.rate.spread_bps, 0);
}

#[test]
fn a_payment_after_its_quote_expired_is_worth_what_its_rate_of_arrival_says() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    inv.methods[0].expires_at = Some(T0.plus_seconds(300));
    assert_eq!(inv.quote_expires_at(Method::Bitcoin), T0.plus_seconds(300));
    assert_eq!(inv.methods[0].due.amount, Amount::from_minor(41_667));
    // Half, while the quote holds: at the locked rate.
    let mut early = btc("a", 20_834, true);
    if let InvoiceInput::Observe { seen_at, .. } = &mut early {
        *seen_at = Some(T0.plus_seconds(100));
    }
    inv.apply(early, T0.plus_seconds(100)).unwrap();
    assert_eq!(inv.still_due(), Amount::from_minor(1250));
    // The other half, after the quote expired: nothing until it is priced, and the invoice
    // waits (processing), never settled at the old rate.
    inv.apply(btc("b", 20_833, true), T0.plus_seconds(400))
        .unwrap();
    assert_eq!(inv.awaiting_rate().count(), 1);
    assert_eq!(inv.status, InvoiceStatus::Processing);
    assert_eq!(inv.still_due(), Amount::from_minor(1250));
    // Bitcoin halved meanwhile: the late half is worth a quarter of the price.
    let b = inv.payments[1].reference.clone();
    let rate = |price: &str| Rate {
        base: "BTC".into(),
        quote: "USD".into(),
        price: price.parse().unwrap(),
        spread_bps: 0,
        sources: vec!["coinbase".into()],
        as_of: Some(T0.plus_seconds(400)),
    };
    let t = inv
        .apply(
            InvoiceInput::Reprice {
                reference: b.clone(),
                rate: rate("30000"),
            },
            T0.plus_seconds(401),
        )
        .unwrap();
    assert!(t.changed);
    assert_eq!(inv.awaiting_rate().count(), 0);
    // 20,833 sat at 30,000 USD/BTC = 6.2499 USD, rounded down: 624 cents.
    assert_eq!(inv.still_due(), Amount::from_minor(2500 - 1250 - 624));
    assert_eq!(inv.exception, Some(InvoiceException::PaidPartial));
    assert_eq!(inv.status, InvoiceStatus::Processing);
    // Priced once: a later rate changes nothing.
    let t = inv
        .apply(
            InvoiceInput::Reprice {
                reference: b,
                rate: rate("90000"),
            },
            T0.plus_seconds(402),
        )
        .unwrap();
    assert!(!t.changed);
    // The early payment is not re-priced; a rate of the wrong pair is refused.
    let a = inv.payments[0].reference.clone();
    assert!(inv
        .apply(
            InvoiceInput::Reprice {
                reference: a,
                rate: rate("30000"),
            },
            T0.plus_seconds(403),
        )
        .is_err());
    let mut eth_rate = rate("2500");
    eth_rate.base = "ETH".into();
    let c_input = btc("c", 1000, false);
    inv.apply(c_input, T0.plus_seconds(500)).unwrap();
    let c = inv.payments[2].reference.clone();
    assert!(inv
        .apply(
            InvoiceInput::Reprice {
                reference: c,
                rate: eth_rate,
            },
            T0.plus_seconds(501),
        )
        .is_err());
}

#[test]
fn a_payment_worth_more_at_its_rate_of_arrival_is_an_over_payment() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin]);
    inv.methods[0].expires_at = Some(T0.plus_seconds(60));
    inv.apply(btc("a", 41_667, true), T0.plus_seconds(120))
        .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Processing, "awaiting its rate");
    let a = inv.payments[0].reference.clone();
    inv.apply(
        InvoiceInput::Reprice {
            reference: a,
            rate: Rate {
                base: "BTC".into(),
                quote: "USD".into(),
                price: "66000".parse().unwrap(),
                spread_bps: 0,
                sources: Vec::new(),
                as_of: None,
            },
        },
        T0.plus_seconds(121),
    )
    .unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert_eq!(inv.exception, Some(InvoiceException::PaidOver));
}

#[test]
fn an_unpaid_invoice_is_quoted_again_and_a_paid_one_is_not() {
    let mut inv = new_invoice(2500, vec![Method::Bitcoin, Method::Card]);
    inv.methods[0].expires_at = Some(T0.plus_seconds(60));
    let version = inv.version;
    let rate = |q: &MethodQuote| {
        Ok(Rate {
            base: q.due.asset.code.clone(),
            quote: "USD".into(),
            price: "50000".parse().unwrap(),
            spread_bps: 0,
            sources: vec!["kraken".into()],
            as_of: None,
        })
    };
    inv.refresh_quotes(rate, T0.plus_seconds(400), T0.plus_seconds(100))
        .unwrap();
    let quote = inv.quote_for(Method::Bitcoin).unwrap();
    assert_eq!(
        quote.due.amount,
        Amount::from_minor(50_000),
        "25 USD at 50,000"
    );
    assert_eq!(quote.expires_at, Some(T0.plus_seconds(400)));
    assert_eq!(
        inv.quote_for(Method::Card).unwrap().due.amount,
        Amount::from_minor(2500)
    );
    assert_eq!(inv.version, version + 1);
    // Never past the invoice's expiry.
    inv.refresh_quotes(rate, T0.plus_seconds(5000), T0.plus_seconds(101))
        .unwrap();
    assert_eq!(inv.quote_expires_at(Method::Bitcoin), T0.plus_seconds(900));
    // Once something is paid, its quote stands.
    inv.apply(btc("a", 1000, false), T0.plus_seconds(102))
        .unwrap();
    assert!(inv
        .refresh_quotes(rate, T0.plus_seconds(500), T0.plus_seconds(103))
        .is_err());
}
