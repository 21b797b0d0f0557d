use super::*;
use crate::event::EventType;
use crate::id::{InvoiceId, MerchantId};
use crate::invoice::{InvoiceInput, InvoiceStatus, NewInvoice};
use crate::money::{Asset, AssetBook, Money};
use crate::payout::{RefundAddress, RefundStatus, SettleTo};
use crate::rate::{FixedRates, Rate};
use crate::reference::PaymentRef;
use crate::time::Timestamp;
use proptest::prelude::*;

const T0: Timestamp = Timestamp(1_800_000_000);
const PRICE: u128 = 2500;
// What the price is worth on each rail at the test rates.
const SAT: u128 = 41_667;
const WEI: u128 = 10_000_000_000_000_000;
const CENTS: u128 = 2500;

fn invoice(cross_rail: bool) -> Invoice {
    let rates = FixedRates::from_pairs([("BTC/USD", "60000"), ("ETH/USD", "2500")]).unwrap();
    let params = NewInvoice {
        merchant_id: MerchantId::from_entropy([1; 12]),
        price: Money {
            asset: Asset::fiat("USD", 2),
            amount: Amount::from_minor(PRICE),
        },
        order_id: None,
        description: None,
        metadata: Default::default(),
        expires_at: T0.plus_seconds(900),
        methods: vec![Method::Bitcoin, Method::Ethereum, Method::Card],
        tolerance_bps: 0,
        eth_asset: None,
    };
    let quotes = params.quote(&AssetBook::default(), &rates).unwrap();
    let (mut inv, _) =
        Invoice::create(InvoiceId::from_entropy([2; 12]), params, quotes, T0).unwrap();
    if cross_rail {
        inv.settle_to = Some(SettleTo {
            due: Money {
                asset: Asset::eth(),
                amount: Amount::from_minor(WEI),
            },
            rate: Rate {
                base: "ETH".into(),
                quote: "USD".into(),
                price: "2500".parse().unwrap(),
                spread_bps: 0,
                sources: Vec::new(),
                as_of: None,
            },
            payout: format!("0x{}", "aa".repeat(20)),
            token: None,
            min_confirmations: 1,
        });
    }
    inv
}

fn method(i: u8) -> (Method, &'static str, u128) {
    match i % 3 {
        0 => (Method::Bitcoin, "BTC", SAT),
        1 => (Method::Ethereum, "ETH", WEI),
        _ => (Method::Card, "USD", CENTS),
    }
}

fn reference(m: Method, n: u8) -> PaymentRef {
    let label = match m {
        Method::Bitcoin => format!("btc:{:064x}:{n}", n),
        Method::Ethereum => format!("eth:0x{:064x}", n),
        Method::Card => format!("pi_{n}"),
    };
    label.parse().expect("a payment reference")
}

/// One thing that can happen to an invoice: payments, reorgs, captures, refunds, settlements.
#[derive(Debug, Clone)]
enum Op {
    Observe {
        m: u8,
        n: u8,
        half: bool,
        confirmed: bool,
    },
    Revert {
        m: u8,
        n: u8,
    },
    Dispute {
        n: u8,
    },
    Capture {
        n: u8,
        fee_bps: u16,
    },
    Void {
        n: u8,
    },
    RequestRefund {
        m: u8,
        n: u8,
        amount: Option<u64>,
    },
    RefundPaid {
        k: u8,
    },
    RefundFailed {
        k: u8,
    },
    RefundReverted {
        k: u8,
    },
    GatewayRefund {
        n: u8,
        total: u64,
    },
    SettlementQueued {
        k: u8,
    },
    SettlementPaid {
        k: u8,
    },
    ReleaseSettlement {
        k: u8,
    },
    Tick {
        secs: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0u8..3;
    prop_oneof![
        4 => (any::<u8>(), n.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(m, n, half, confirmed)| Op::Observe { m, n, half, confirmed }),
        2 => (any::<u8>(), n.clone()).prop_map(|(m, n)| Op::Revert { m, n }),
        1 => n.clone().prop_map(|n| Op::Dispute { n }),
        2 => (n.clone(), 0u16..2000).prop_map(|(n, fee_bps)| Op::Capture { n, fee_bps }),
        1 => n.clone().prop_map(|n| Op::Void { n }),
        3 => (any::<u8>(), n.clone(), proptest::option::of(1u64..50_000))
            .prop_map(|(m, n, amount)| Op::RequestRefund { m, n, amount }),
        2 => any::<u8>().prop_map(|k| Op::RefundPaid { k }),
        1 => any::<u8>().prop_map(|k| Op::RefundFailed { k }),
        1 => any::<u8>().prop_map(|k| Op::RefundReverted { k }),
        1 => (n.clone(), 0u64..3000).prop_map(|(n, total)| Op::GatewayRefund { n, total }),
        1 => any::<u8>().prop_map(|k| Op::SettlementQueued { k }),
        2 => any::<u8>().prop_map(|k| Op::SettlementPaid { k }),
        1 => any::<u8>().prop_map(|k| Op::ReleaseSettlement { k }),
        1 => (0u16..1200).prop_map(|secs| Op::Tick { secs }),
    ]
}

fn input(inv: &Invoice, op: &Op) -> Option<InvoiceInput> {
    let pick = |k: u8, len: usize| (len > 0).then(|| usize::from(k) % len);
    Some(match *op {
        Op::Observe {
            m,
            n,
            half,
            confirmed,
        } => {
            let (method, asset, full) = method(m);
            InvoiceInput::Observe {
                reference: reference(method, n),
                method,
                asset: asset.into(),
                amount: Amount::from_minor(if half { full / 2 } else { full }),
                confirmed,
                confirmations: u32::from(confirmed),
                seen_at: None,
            }
        }
        Op::Revert { m, n } => InvoiceInput::Drop {
            reference: reference(method(m).0, n),
            status: PaymentStatus::Reverted,
        },
        Op::Dispute { n } => InvoiceInput::Dispute {
            reference: reference(Method::Card, n),
            method: Method::Card,
            asset: "USD".into(),
            amount: Amount::from_minor(CENTS),
        },
        Op::Capture { n, fee_bps } => {
            let reference = reference(Method::Ethereum, n);
            let p = inv.payments.iter().find(|p| p.reference == reference)?;
            InvoiceInput::Captured {
                fee: Amount(
                    p.amount.0 * alloy_primitives::U256::from(fee_bps)
                        / alloy_primitives::U256::from(10_000),
                ),
                reference,
                tx: format!("0xc{n}"),
            }
        }
        Op::Void { n } => InvoiceInput::Return {
            reference: reference(Method::Ethereum, n),
            method: Method::Ethereum,
            asset: "ETH".into(),
            amount: Amount::from_minor(WEI),
            seen_at: None,
            status: PaymentStatus::Voided,
        },
        Op::RequestRefund { m, n, amount } => {
            let (method, _, _) = method(m);
            InvoiceInput::RequestRefund {
                id: format!("re_{}", inv.refunds.len()),
                payment: Some(reference(method, n)),
                amount: amount.map(|a| Amount::from_minor(u128::from(a))),
                to: Some(RefundAddress {
                    address: "bcrt1qpayer".into(),
                    script_pubkey: "0014aa".parse().unwrap(),
                }),
            }
        }
        Op::RefundPaid { k } => InvoiceInput::RefundPaid {
            id: inv.refunds[pick(k, inv.refunds.len())?].id.clone(),
            tx: Some("0xr".into()),
            gateway_refund: None,
        },
        Op::RefundFailed { k } => InvoiceInput::RefundFailed {
            id: inv.refunds[pick(k, inv.refunds.len())?].id.clone(),
            reason: "declined".into(),
        },
        // The transaction that paid a refund left the chain.
        Op::RefundReverted { k } => InvoiceInput::RefundReverted {
            id: inv.refunds[pick(k, inv.refunds.len())?].id.clone(),
            tx: "0xr".into(),
        },
        Op::GatewayRefund { n, total } => InvoiceInput::Refund {
            reference: reference(Method::Card, n),
            method: Method::Card,
            asset: "USD".into(),
            amount: Amount::from_minor(CENTS),
            total_refunded: Amount::from_minor(u128::from(total)),
        },
        Op::SettlementQueued { k } => InvoiceInput::SettlementQueued {
            id: inv.settlements[pick(k, inv.settlements.len())?].id,
        },
        // The operator sends only settlements that are pending or queued: only those get paid.
        Op::SettlementPaid { k } => {
            let sendable: Vec<_> = inv
                .settlements
                .iter()
                .filter(|s| s.status != SettlementStatus::Held)
                .collect();
            InvoiceInput::SettlementPaid {
                id: sendable[pick(k, sendable.len())?].id,
                tx: "0xs".into(),
            }
        }
        // The merchant releases a held settlement at a rate 10 % above the locked one.
        Op::ReleaseSettlement { k } => {
            let s = &inv.settlements[pick(k, inv.settlements.len())?];
            InvoiceInput::ReleaseSettlement {
                id: s.id,
                amount: Amount(s.amount.0 + s.amount.0 / alloy_primitives::U256::from(10)),
            }
        }
        Op::Tick { .. } => InvoiceInput::Tick,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random payments, reorgs, disputes, captures, voids, refunds and settlements: the entries
    /// written at each step add up to the invoice's position, every asset sums to zero, no account
    /// is on the wrong side, and no payment is ever refunded beyond what was paid.
    #[test]
    fn entries_stay_balanced_and_never_refund_more_than_paid(
        cross_rail in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut inv = invoice(cross_rail);
        let mut books = Balances::default();
        let mut now = T0;
        for op in &ops {
            if let Op::Tick { secs } = op {
                now = now.plus_seconds(i64::from(*secs));
            }
            let Some(input) = input(&inv, op) else { continue };
            let before = inv.clone();
            match inv.apply(input, now) {
                Ok(t) => {
                    prop_assert_eq!(t.changed, inv != before);
                    books.apply(&entry_lines(Some(&before), &inv));
                }
                Err(_) => {
                    prop_assert_eq!(&inv, &before, "a refused input changed the invoice");
                }
            }
            prop_assert_eq!(&books, &position(&inv));
            prop_assert!(books.unbalanced_assets().is_empty(), "{:?}", books);
            prop_assert!(books.violations().is_empty(), "{:?} after {:?}", books.violations(), op);
            for p in &inv.payments {
                prop_assert!(p.refunded <= p.amount);
                let reserved = inv
                    .refunds
                    .iter()
                    .filter(|r| r.payment == p.reference && r.status != RefundStatus::Failed)
                    .fold(alloy_primitives::U256::ZERO, |s, r| s + r.amount.0);
                prop_assert!(reserved <= p.amount.0, "refunds {} exceed payment {}", reserved, p.amount);
            }
            // A settlement is planned at most once per payment, and only for cross-rail ones.
            let mut ids: Vec<_> = inv.settlements.iter().map(|s| &s.id).collect();
            ids.dedup();
            prop_assert_eq!(ids.len(), inv.settlements.len());
            prop_assert!(cross_rail || inv.settlements.is_empty());
            // The operator's liquidity never pays an invoice more than it was due, and never for
            // a payment made after the invoice stopped being payable.
            if let Some(to) = &inv.settle_to {
                let committed = inv
                    .settlements
                    .iter()
                    .filter(|s| s.status != SettlementStatus::Held && !s.released)
                    .fold(alloy_primitives::U256::ZERO, |sum, s| sum + s.amount.0);
                prop_assert!(committed <= to.due.amount.0, "settlements {} exceed due {}", committed, to.due.amount);
                // (A released hold is the merchant's explicit choice, at a new rate.)
                for s in inv.settlements.iter().filter(|s| s.status != SettlementStatus::Held && !s.released) {
                    let p = inv.payments.iter().find(|p| p.reference == s.payment).unwrap();
                    prop_assert!(inv.in_time(p), "settled a late payment: {:?}", s);
                }
            }
        }
    }
}

fn apply(inv: &mut Invoice, books: &mut Balances, input: InvoiceInput) -> Vec<EventType> {
    let before = inv.clone();
    let t = inv.apply(input, T0.plus_seconds(60)).unwrap();
    books.apply(&entry_lines(Some(&before), inv));
    t.events
}

fn step(inv: &mut Invoice, books: &mut Balances, op: &Op) -> Vec<EventType> {
    let input = input(inv, op).unwrap();
    apply(inv, books, input)
}

fn net(books: &Balances, asset: &str, account: Account) -> Option<u128> {
    books
        .get(asset, account)
        .on_normal_side(account)
        .map(|a| u128::try_from(a.0).unwrap())
}

#[test]
fn a_captured_deposit_is_paid_out_less_the_fee_and_refunded_later() {
    let mut inv = invoice(false);
    let mut books = Balances::default();
    let eth = reference(Method::Ethereum, 1);
    step(
        &mut inv,
        &mut books,
        &Op::Observe {
            m: 1,
            n: 1,
            half: false,
            confirmed: true,
        },
    );
    assert_eq!(net(&books, "ETH", Account::Available), Some(WEI));
    apply(
        &mut inv,
        &mut books,
        InvoiceInput::Captured {
            reference: eth.clone(),
            tx: "0xc".into(),
            fee: Amount::from_minor(WEI / 100),
        },
    );
    assert_eq!(net(&books, "ETH", Account::Available), Some(0));
    assert_eq!(net(&books, "ETH", Account::PaidOut), Some(WEI - WEI / 100));
    assert_eq!(net(&books, "ETH", Account::Fees), Some(WEI / 100));
    let events = apply(
        &mut inv,
        &mut books,
        InvoiceInput::RequestRefund {
            id: "re_1".into(),
            payment: None,
            amount: Some(Amount::from_minor(WEI / 4)),
            to: None,
        },
    );
    assert_eq!(events, vec![EventType::RefundPending]);
    // Reserved, not yet paid: the books do not move until the chain says so.
    assert_eq!(net(&books, "ETH", Account::Refunded), Some(0));
    let events = apply(
        &mut inv,
        &mut books,
        InvoiceInput::RefundPaid {
            id: "re_1".into(),
            tx: Some("0xr".into()),
            gateway_refund: None,
        },
    );
    assert_eq!(events, vec![EventType::RefundSucceeded]);
    // Paid from the merchant's own refund reserve in the escrow: nothing is owed to the operator.
    assert_eq!(net(&books, "ETH", Account::Liability), Some(0));
    assert_eq!(net(&books, "ETH", Account::Refunded), Some(WEI / 4));
    assert_eq!(net(&books, "ETH", Account::Payers), Some(WEI - WEI / 4));
    let err = inv
        .apply(
            InvoiceInput::RequestRefund {
                id: "re_2".into(),
                payment: None,
                amount: Some(Amount::from_minor(WEI)),
                to: None,
            },
            T0.plus_seconds(70),
        )
        .unwrap_err();
    assert!(
        matches!(err, crate::CoreError::RefundTooLarge { .. }),
        "{err}"
    );
    assert!(books.unbalanced_assets().is_empty());
}

#[test]
fn a_card_payment_settled_on_ethereum_moves_to_treasury_and_a_dispute_becomes_a_liability() {
    let mut inv = invoice(true);
    let mut books = Balances::default();
    let events = step(
        &mut inv,
        &mut books,
        &Op::Observe {
            m: 2,
            n: 7,
            half: false,
            confirmed: true,
        },
    );
    assert!(events.contains(&EventType::InvoiceSettled));
    assert_eq!(events.last(), Some(&EventType::SettlementPending));
    assert_eq!(inv.status, InvoiceStatus::Settled);
    let s = inv.settlements[0].clone();
    assert_eq!(s.source_ref, "pi_7");
    assert_eq!(s.amount, Amount::from_minor(WEI));
    assert_eq!(s.id, crate::payout::settlement_id(inv.id.as_str(), "pi_7"));
    assert_eq!(net(&books, "USD", Account::Available), Some(CENTS));
    // Replaying the payment plans nothing new.
    let again = step(
        &mut inv,
        &mut books,
        &Op::Observe {
            m: 2,
            n: 7,
            half: false,
            confirmed: true,
        },
    );
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(inv.settlements.len(), 1);
    apply(
        &mut inv,
        &mut books,
        InvoiceInput::SettlementPaid {
            id: s.id,
            tx: "0xs".into(),
        },
    );
    assert_eq!(net(&books, "USD", Account::Available), Some(0));
    assert_eq!(net(&books, "USD", Account::Treasury), Some(CENTS));
    assert_eq!(net(&books, "ETH", Account::PaidOut), Some(WEI));
    assert_eq!(net(&books, "ETH", Account::Liquidity), Some(WEI));
    step(&mut inv, &mut books, &Op::Dispute { n: 7 });
    assert_eq!(net(&books, "USD", Account::Treasury), Some(0));
    assert_eq!(net(&books, "ETH", Account::Liability), Some(WEI));
    assert_eq!(net(&books, "ETH", Account::Liquidity), Some(0));
    assert!(books.unbalanced_assets().is_empty());
    assert!(books.violations().is_empty());
}

#[test]
fn a_settlement_not_yet_paid_is_held_while_its_payment_is_not_final_and_whole() {
    let mut inv = invoice(true);
    let mut books = Balances::default();
    step(
        &mut inv,
        &mut books,
        &Op::Observe {
            m: 2,
            n: 3,
            half: false,
            confirmed: true,
        },
    );
    assert_eq!(
        inv.settlements[0].status,
        crate::payout::SettlementStatus::Pending
    );
    let events = step(&mut inv, &mut books, &Op::Dispute { n: 3 });
    assert!(events.contains(&EventType::SettlementHeld), "{events:?}");
    assert_eq!(
        inv.settlements[0].status,
        crate::payout::SettlementStatus::Held
    );
    // Still held: a liquidity shortage does not revive it.
    let id = inv.settlements[0].id;
    apply(&mut inv, &mut books, InvoiceInput::SettlementQueued { id });
    assert_eq!(
        inv.settlements[0].status,
        crate::payout::SettlementStatus::Held
    );
    // A transaction already on its way is still recorded when it lands, as a liability.
    apply(
        &mut inv,
        &mut books,
        InvoiceInput::SettlementPaid {
            id,
            tx: "0xs".into(),
        },
    );
    assert_eq!(net(&books, "ETH", Account::Liability), Some(WEI));
    assert!(books.unbalanced_assets().is_empty());

    // A bitcoin payment reorged out before its settlement: held, then pending again once the
    // payment is confirmed again — still one settlement.
    let mut inv = invoice(true);
    let mut books = Balances::default();
    step(
        &mut inv,
        &mut books,
        &Op::Observe {
            m: 0,
            n: 1,
            half: false,
            confirmed: true,
        },
    );
    step(&mut inv, &mut books, &Op::Revert { m: 0, n: 1 });
    assert_eq!(
        inv.settlements[0].status,
        crate::payout::SettlementStatus::Held
    );
    step(
        &mut inv,
        &mut books,
        &Op::Observe {
            m: 0,
            n: 1,
            half: false,
            confirmed: true,
        },
    );
    assert_eq!(
        inv.settlements[0].status,
        crate::payout::SettlementStatus::Pending
    );
    assert_eq!(inv.settlements.len(), 1);
}

#[test]
fn a_bitcoin_refund_needs_an_address_and_is_counted_once_paid() {
    let mut inv = invoice(false);
    let mut books = Balances::default();
    step(
        &mut inv,
        &mut books,
        &Op::Observe {
            m: 0,
            n: 1,
            half: false,
            confirmed: true,
        },
    );
    assert_eq!(net(&books, "BTC", Account::PaidOut), Some(SAT));
    let err = inv
        .apply(
            InvoiceInput::RequestRefund {
                id: "re_1".into(),
                payment: None,
                amount: None,
                to: None,
            },
            T0.plus_seconds(70),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        crate::CoreError::InvalidField {
            field: "bitcoin_address",
            ..
        }
    ));
    apply(
        &mut inv,
        &mut books,
        InvoiceInput::RequestRefund {
            id: "re_1".into(),
            payment: None,
            amount: None,
            to: Some(RefundAddress {
                address: "bcrt1qpayer".into(),
                script_pubkey: "0014bb".parse().unwrap(),
            }),
        },
    );
    assert_eq!(inv.refunds[0].amount, Amount::from_minor(SAT));
    assert!(inv
        .apply(
            InvoiceInput::RequestRefund {
                id: "re_2".into(),
                payment: None,
                amount: Some(Amount::from_minor(1)),
                to: None
            },
            T0.plus_seconds(70),
        )
        .is_err());
    apply(
        &mut inv,
        &mut books,
        InvoiceInput::RefundPaid {
            id: "re_1".into(),
            tx: Some("ab".into()),
            gateway_refund: None,
        },
    );
    assert_eq!(net(&books, "BTC", Account::Refunded), Some(SAT));
    assert_eq!(net(&books, "BTC", Account::Payers), Some(0));
    assert!(books.unbalanced_assets().is_empty());
}

// ---- The operator's liquidity pays cross-rail settlements only by rule.

/// Releasing settlement `id` is refused, and changes nothing.
fn release_refused(inv: &mut Invoice, id: &crate::SettlementId, t: Timestamp) {
    let before = inv.clone();
    let err = inv
        .apply(
            InvoiceInput::ReleaseSettlement {
                id: *id,
                amount: Amount::from_minor(WEI),
            },
            t,
        )
        .unwrap_err();
    assert!(
        matches!(err, crate::CoreError::NotReleasable { .. }),
        "{err}"
    );
    assert_eq!(inv, &before);
}

/// Payment `n` of `amount` on `method`, confirmed and seen at `t`.
fn confirmed(method: Method, n: u8, amount: u128, t: Timestamp) -> InvoiceInput {
    InvoiceInput::Observe {
        reference: reference(method, n),
        method,
        asset: match method {
            Method::Bitcoin => "BTC",
            Method::Ethereum => "ETH",
            Method::Card => "USD",
        }
        .into(),
        amount: Amount::from_minor(amount),
        confirmed: true,
        confirmations: 1,
        seen_at: Some(t),
    }
}

fn btc_seen(n: u8, sat: u128, confirmations: u32, at: Timestamp) -> InvoiceInput {
    InvoiceInput::Observe {
        reference: reference(Method::Bitcoin, n),
        method: Method::Bitcoin,
        asset: "BTC".into(),
        amount: Amount::from_minor(sat),
        confirmed: confirmations > 0,
        confirmations,
        seen_at: Some(at),
    }
}

/// (status, hold reason, amount) of each settlement, in order.
fn settlements(inv: &Invoice) -> Vec<(SettlementStatus, Option<crate::HoldReason>, u128)> {
    inv.settlements
        .iter()
        .map(|s| {
            (
                s.status,
                s.hold_reason(),
                u128::try_from(s.amount.0).unwrap(),
            )
        })
        .collect()
}

fn cross_rail_invoice(depth: u32) -> Invoice {
    let mut inv = invoice(true);
    inv.settle_to.as_mut().unwrap().min_confirmations = depth;
    inv
}

#[test]
fn a_settlement_waits_for_the_operators_depth_whatever_the_merchants_policy() {
    let mut inv = cross_rail_invoice(3);
    let t = T0.plus_seconds(10);
    inv.apply(btc_seen(1, SAT, 1, t), t).unwrap();
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert!(
        inv.settlements.is_empty(),
        "paid from the operator at depth 1"
    );
    inv.apply(btc_seen(1, SAT, 2, t), t).unwrap();
    assert!(inv.settlements.is_empty());
    let events = inv.apply(btc_seen(1, SAT, 3, t), t).unwrap().events;
    assert_eq!(events, vec![EventType::SettlementPending]);
    assert_eq!(
        settlements(&inv),
        vec![(SettlementStatus::Pending, None, WEI)]
    );
}

#[test]
fn a_late_payment_and_one_after_cancel_are_held_never_planned() {
    let mut inv = cross_rail_invoice(1);
    let late = T0.plus_seconds(901);
    let events = inv.apply(btc_seen(1, SAT, 1, late), late).unwrap().events;
    assert!(events.contains(&EventType::SettlementHeld), "{events:?}");
    assert_eq!(
        settlements(&inv),
        vec![(SettlementStatus::Held, Some(crate::HoldReason::Late), WEI)]
    );

    let mut inv = cross_rail_invoice(1);
    inv.apply(InvoiceInput::Cancel, T0.plus_seconds(5)).unwrap();
    let t = T0.plus_seconds(6);
    inv.apply(btc_seen(1, SAT, 1, t), t).unwrap();
    assert_eq!(inv.status, InvoiceStatus::Invalid);
    assert_eq!(
        settlements(&inv),
        vec![(
            SettlementStatus::Held,
            Some(crate::HoldReason::AfterCancel),
            WEI
        )]
    );
    // More blocks, a restart's replay: still held.
    inv.apply(btc_seen(1, SAT, 6, t), T0.plus_seconds(2000))
        .unwrap();
    assert_eq!(inv.settlements[0].status, SettlementStatus::Held);
}

#[test]
fn an_invoice_paid_three_times_is_settled_once_at_its_locked_amount() {
    // One payment of three times the price.
    let mut inv = cross_rail_invoice(1);
    let t = T0.plus_seconds(10);
    inv.apply(btc_seen(1, 3 * SAT, 1, t), t).unwrap();
    assert_eq!(
        settlements(&inv),
        vec![
            (SettlementStatus::Pending, None, WEI),
            (
                SettlementStatus::Held,
                Some(crate::HoldReason::OverPayment),
                2 * WEI
            ),
        ]
    );
    assert_ne!(inv.settlements[0].id, inv.settlements[1].id);
    // Three payments of the price.
    let mut inv = cross_rail_invoice(1);
    for n in 1..=3 {
        inv.apply(btc_seen(n, SAT, 1, t), t).unwrap();
    }
    let paid: Vec<_> = settlements(&inv)
        .into_iter()
        .filter(|s| s.0 != SettlementStatus::Held)
        .collect();
    assert_eq!(paid, vec![(SettlementStatus::Pending, None, WEI)]);
    assert_eq!(inv.settlements.len(), 3);
}

/// A double-spend: payment 1 is settled and paid, then replaced; payment 2 confirms instead.
fn settled_then_replaced(t: Timestamp) -> Invoice {
    let mut inv = cross_rail_invoice(1);
    inv.apply(btc_seen(1, SAT, 1, t), t).unwrap();
    let id = inv.settlements[0].id;
    inv.apply(
        InvoiceInput::SettlementPaid {
            id,
            tx: "0xs".into(),
        },
        t,
    )
    .unwrap();
    inv.apply(
        InvoiceInput::Drop {
            reference: reference(Method::Bitcoin, 1),
            status: PaymentStatus::Replaced,
        },
        t,
    )
    .unwrap();
    inv.apply(btc_seen(2, SAT, 1, t), t).unwrap();
    inv
}

#[test]
fn a_payment_replacing_one_already_settled_is_held_as_a_replacement() {
    let t = T0.plus_seconds(10);
    let inv = settled_then_replaced(t);
    assert_eq!(
        settlements(&inv)[1],
        (
            SettlementStatus::Held,
            Some(crate::HoldReason::Replacement),
            WEI
        )
    );
}

#[test]
fn a_settlement_held_while_its_payment_is_not_final_still_counts_against_the_cap() {
    let mut inv = cross_rail_invoice(1);
    let t = T0.plus_seconds(10);
    inv.apply(btc_seen(1, SAT, 1, t), t).unwrap();
    inv.apply(
        InvoiceInput::Drop {
            reference: reference(Method::Bitcoin, 1),
            status: PaymentStatus::Reverted,
        },
        t,
    )
    .unwrap();
    assert_eq!(
        settlements(&inv),
        vec![(
            SettlementStatus::Held,
            Some(crate::HoldReason::PaymentNotFinal),
            WEI
        )]
    );
    // Another payment arrives: the first's settlement may already be on its way to the chain,
    // so the second is held, and cannot be released while the first may still be paid.
    inv.apply(btc_seen(2, SAT, 1, t), t).unwrap();
    assert_eq!(
        inv.settlements[1].hold_reason(),
        Some(crate::HoldReason::OverPayment)
    );
    let second = inv.settlements[1].id;
    release_refused(&mut inv, &second, t);
    // The first comes back in a reorg: it is due again; the invoice gets one settlement.
    inv.apply(btc_seen(1, SAT, 1, t), t).unwrap();
    assert_eq!(inv.settlements[0].status, SettlementStatus::Pending);
    assert_eq!(inv.settlements[1].status, SettlementStatus::Held);
}

#[test]
fn the_merchant_releases_an_over_payment_at_a_new_rate_but_never_a_replacement() {
    let mut inv = cross_rail_invoice(1);
    let t = T0.plus_seconds(10);
    inv.apply(btc_seen(1, 2 * SAT, 1, t), t).unwrap();
    let excess = inv.settlements[1].clone();
    assert_eq!(excess.hold_reason(), Some(crate::HoldReason::OverPayment));
    assert_eq!(u128::try_from(excess.source_amount.0).unwrap(), SAT);
    let events = inv
        .apply(
            InvoiceInput::ReleaseSettlement {
                id: excess.id,
                amount: Amount::from_minor(WEI / 2),
            },
            t,
        )
        .unwrap()
        .events;
    assert_eq!(events, vec![EventType::SettlementPending]);
    assert_eq!(
        settlements(&inv)[1],
        (SettlementStatus::Pending, None, WEI / 2)
    );
    // Paid: the books show both parts paid out of the operator's liquidity.
    let mut books = Balances::default();
    let before = inv.clone();
    for id in [inv.settlements[0].id, excess.id] {
        inv.apply(
            InvoiceInput::SettlementPaid {
                id,
                tx: "0xs".into(),
            },
            t,
        )
        .unwrap();
    }
    books.apply(&entry_lines(Some(&before), &inv));
    assert_eq!(net(&books, "ETH", Account::PaidOut), Some(WEI + WEI / 2));
    assert_eq!(net(&books, "ETH", Account::Liquidity), Some(WEI + WEI / 2));

    // A replacement stays held.
    let mut inv = settled_then_replaced(t);
    let held = inv.settlements[1].id;
    release_refused(&mut inv, &held, t);
}

#[test]
fn no_release_while_a_paid_for_payment_is_taken_back() {
    let mut inv = cross_rail_invoice(1);
    let t = T0.plus_seconds(10);
    // Card payment A is settled and paid; bitcoin B pays the price again and is held.
    inv.apply(confirmed(Method::Card, 1, CENTS, t), t).unwrap();
    let a = inv.settlements[0].id;
    inv.apply(
        InvoiceInput::SettlementPaid {
            id: a,
            tx: "0xs".into(),
        },
        t,
    )
    .unwrap();
    inv.apply(btc_seen(2, SAT, 1, t), t).unwrap();
    let b = inv.settlements[1].id;
    assert_eq!(
        inv.settlements[1].hold_reason(),
        Some(crate::HoldReason::OverPayment)
    );
    // The payer charges A back: the operator paid for money it no longer holds.
    inv.apply(
        InvoiceInput::Dispute {
            reference: reference(Method::Card, 1),
            method: Method::Card,
            asset: "USD".into(),
            amount: Amount::from_minor(CENTS),
        },
        t,
    )
    .unwrap();
    release_refused(&mut inv, &b, t);
}

#[test]
fn an_escrow_payment_counts_against_what_the_operator_settles() {
    let mut inv = cross_rail_invoice(1);
    let t = T0.plus_seconds(10);
    // Half the price paid into the escrow (the merchant gets it by capture)...
    inv.apply(confirmed(Method::Ethereum, 1, WEI / 2, t), t)
        .unwrap();
    // ...and the whole price in bitcoin: the operator pays only the half still due.
    inv.apply(btc_seen(2, SAT, 1, t), t).unwrap();
    let paid: Vec<_> = settlements(&inv)
        .into_iter()
        .filter(|s| s.0 != SettlementStatus::Held)
        .collect();
    assert_eq!(paid, vec![(SettlementStatus::Pending, None, WEI / 2)]);
}

#[test]
fn an_invoice_paid_in_many_outputs_is_settled_by_one_settlement() {
    let mut inv = cross_rail_invoice(1);
    let mut books = Balances::default();
    let t = T0.plus_seconds(10);
    for n in 0..10u8 {
        let before = inv.clone();
        inv.apply(btc_seen(n, SAT / 10 + 1, 1, t), t).unwrap();
        books.apply(&entry_lines(Some(&before), &inv));
    }
    assert_eq!(inv.status, InvoiceStatus::Settled);
    let open: Vec<_> = inv
        .settlements
        .iter()
        .filter(|s| s.status == SettlementStatus::Pending)
        .collect();
    assert_eq!(open.len(), 1, "{:?}", inv.settlements);
    assert_eq!(open[0].parts.len(), 10);
    assert!(open[0].source_ref.ends_with("+9 more"));
    let id = open[0].id;
    let before = inv.clone();
    inv.apply(
        InvoiceInput::SettlementPaid {
            id,
            tx: "0xs".into(),
        },
        t,
    )
    .unwrap();
    books.apply(&entry_lines(Some(&before), &inv));
    assert_eq!(books, position(&inv));
    assert!(books.unbalanced_assets().is_empty());
    assert!(net(&books, "ETH", Account::PaidOut).unwrap() <= WEI);
}

#[test]
fn a_payment_after_its_quote_expired_is_never_settled_at_the_locked_rate() {
    let mut inv = cross_rail_invoice(1);
    let q = inv
        .methods
        .iter_mut()
        .find(|q| q.method == Method::Bitcoin)
        .unwrap();
    q.expires_at = Some(T0.plus_seconds(60));
    let t = T0.plus_seconds(120);
    inv.apply(btc_seen(1, SAT, 1, t), t).unwrap();
    // Awaiting its rate: nothing planned.
    assert!(inv.settlements.is_empty());
    let reference = inv.payments[0].reference.clone();
    let rate = inv.quote_for(Method::Bitcoin).unwrap().rate.clone();
    let events = inv
        .apply(InvoiceInput::Reprice { reference, rate }, t)
        .unwrap()
        .events;
    // Priced at the same rate, it pays the invoice, but its settlement is held for the
    // merchant to release at the rate of the day: the locked rate no longer holds.
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert!(events.contains(&EventType::SettlementHeld), "{events:?}");
    assert_eq!(
        settlements(&inv),
        vec![(SettlementStatus::Held, Some(crate::HoldReason::Late), WEI)]
    );
}

#[test]
fn an_invoice_settled_on_ethereum_keeps_its_first_quotes() {
    let mut inv = cross_rail_invoice(1);
    let err = inv
        .refresh_quotes(
            |q| Ok(q.rate.clone()),
            T0.plus_seconds(600),
            T0.plus_seconds(10),
        )
        .unwrap_err();
    assert!(err.to_string().contains("keeps its first quotes"), "{err}");
}
