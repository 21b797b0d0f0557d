//! The operator's rules, by example and as properties over random invoices, deposits, clocks
//! and histories.

use super::*;
use crate::id::{InvoiceId, MerchantId};
use crate::invoice::{EthereumPayTo, InvoiceInput, NewInvoice};
use crate::money::{Amount, Asset, AssetBook, Money};
use crate::rate::FixedRates;
use crate::time::Timestamp;
use proptest::prelude::*;

const T0: i64 = 1_800_000_000;
const WEI: u128 = 10_000_000_000_000_000;
const CAPTURE_WINDOW: u64 = 3600;

fn id_of(n: u8) -> B256 {
    B256::repeat_byte(n)
}

/// An invoice asking for deposit `id_of(1)` of `WEI`, payable until T0 + 900.
fn invoice(confirmations: u32) -> Invoice {
    let params = NewInvoice {
        merchant_id: MerchantId::from_entropy([1; 12]),
        price: Money {
            asset: Asset::fiat("USD", 2),
            amount: Amount::from_minor(2500),
        },
        order_id: None,
        description: None,
        metadata: Default::default(),
        expires_at: Timestamp(T0 + 900),
        methods: vec![Method::Ethereum],
        tolerance_bps: 0,
        eth_asset: None,
    };
    let rates = FixedRates::from_pairs([("ETH/USD", "2500")]).unwrap();
    let mut quotes = params.quote(&AssetBook::default(), &rates).unwrap();
    quotes[0].ethereum = Some(EthereumPayTo {
        chain_id: 31337,
        escrow: alloy_primitives::Address::repeat_byte(0xee),
        merchant: alloy_primitives::Address::repeat_byte(0xaa),
        token: None,
        expiry: (T0 + 900) as u64 + CAPTURE_WINDOW,
        salt: id_of(9),
        payment_id: id_of(1),
        confirmations,
    });
    Invoice::create(
        InvoiceId::from_entropy([2; 12]),
        params,
        quotes,
        Timestamp(T0),
    )
    .unwrap()
    .0
}

fn deposit(id: u8, amount: u128, block_time: i64, depth: u32) -> DepositView {
    DepositView {
        id: id_of(id),
        token: Address::ZERO,
        amount: U256::from(amount),
        expiry: (T0 + 900) as u64 + CAPTURE_WINDOW,
        block_time: block_time as u64,
        depth,
    }
}

fn fresh() -> Attempts {
    Attempts::default()
}

#[test]
fn an_exact_in_time_deposit_is_captured_with_the_fee_once_final() {
    let inv = invoice(3);
    let d = deposit(1, WEI, T0 + 10, 2);
    let now = (T0 + 20) as u64;
    assert_eq!(
        deposit_action(Some(&inv), &d, now, fresh(), 100),
        DepositAction::Wait
    );
    let d = deposit(1, WEI, T0 + 10, 3);
    assert_eq!(
        deposit_action(Some(&inv), &d, now, fresh(), 100),
        DepositAction::Capture {
            fee: U256::from(WEI / 100)
        }
    );
}

#[test]
fn late_foreign_and_unknown_deposits_are_voided() {
    let inv = invoice(1);
    let now = (T0 + 2000) as u64;
    // Made after the invoice expired.
    let late = deposit(1, WEI, T0 + 901, 1);
    assert_eq!(
        deposit_action(Some(&inv), &late, now, fresh(), 0),
        DepositAction::Void
    );
    // Another payment id under the invoice's salt (a changed amount).
    let wrong = deposit(2, WEI / 2, T0 + 10, 1);
    assert_eq!(
        deposit_action(Some(&inv), &wrong, now, fresh(), 0),
        DepositAction::Void
    );
    // No invoice at all.
    assert_eq!(
        deposit_action(None, &wrong, now, fresh(), 0),
        DepositAction::Void
    );
}

#[test]
fn a_refused_capture_is_given_up_never_voided() {
    let inv = invoice(1);
    let d = deposit(1, WEI, T0 + 10, 1);
    let refused = Attempts {
        live: false,
        refused: MAX_REFUSALS,
    };
    assert_eq!(
        deposit_action(Some(&inv), &d, (T0 + 20) as u64, refused, 0),
        DepositAction::GiveUp
    );
}

#[test]
fn dust_and_unknown_tokens_are_not_worth_a_void() {
    let mut d = deposit(3, 1000, T0, 1);
    assert!(!void_is_worth(&d, false, U256::from(50_000u64)));
    d.amount = U256::from(WEI);
    assert!(void_is_worth(&d, false, U256::from(50_000u64)));
    d.token = Address::repeat_byte(7);
    assert!(!void_is_worth(&d, false, U256::ZERO));
    assert!(void_is_worth(&d, true, U256::ZERO));
}

fn captured_invoice() -> Invoice {
    let mut inv = invoice(1);
    let reference = crate::PaymentRef::eth(id_of(1));
    let now = Timestamp(T0 + 10);
    inv.apply(
        InvoiceInput::Observe {
            reference: reference.clone(),
            method: Method::Ethereum,
            asset: "ETH".into(),
            amount: Amount::from_minor(WEI),
            confirmed: true,
            confirmations: 1,
            seen_at: None,
        },
        now,
    )
    .unwrap();
    inv.apply(
        InvoiceInput::Captured {
            reference: reference.clone(),
            tx: "0xc".into(),
            fee: Amount::ZERO,
        },
        now,
    )
    .unwrap();
    inv.apply(
        InvoiceInput::RequestRefund {
            id: "re_1".into(),
            payment: Some(reference),
            amount: Some(Amount::from_minor(WEI / 4)),
            to: None,
        },
        now,
    )
    .unwrap();
    inv
}

#[test]
fn a_refund_after_capture_is_sent_only_when_the_reserve_covers_it() {
    let inv = captured_invoice();
    let r = &inv.refunds[0];
    assert_eq!(
        refund_action(&inv, r, U256::from(WEI / 4 - 1), fresh()),
        RefundAction::NotCovered
    );
    assert_eq!(
        refund_action(&inv, r, U256::from(WEI / 4), fresh()),
        RefundAction::Send
    );
    let live = Attempts {
        live: true,
        refused: 0,
    };
    assert_eq!(
        refund_action(&inv, r, U256::from(WEI), live),
        RefundAction::Wait
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Whatever the deposit, the clock and the history: an exact, in-time, capturable deposit is
    /// never voided; a deposit with an operation under way gets nothing else; a capture takes at
    /// most the fee; nothing happens before the invoice's depth.
    #[test]
    fn deposit_decisions_keep_the_operators_rules(
        exact in any::<bool>(),
        amount in 1u128..=10 * WEI,
        made in -100i64..2000,
        now in 0u64..6000,
        depth in 0u32..8,
        required in 1u32..6,
        live in any::<bool>(),
        refused in 0u32..6,
        fee_bps in 0u16..=20_000,
        canceled in proptest::option::of(0i64..1000),
        with_invoice in any::<bool>(),
    ) {
        let mut inv = invoice(required);
        inv.canceled_at = canceled.map(|c| Timestamp(T0 + c));
        let d = deposit(if exact { 1 } else { 2 }, amount, T0 + made, depth);
        let chain_time = (T0 as u64) + now;
        let attempts = Attempts { live, refused };
        let invoice = with_invoice.then_some(&inv);
        let action = deposit_action(invoice, &d, chain_time, attempts, fee_bps);
        let required = if with_invoice { required } else { 1 };
        if live || depth < required {
            prop_assert_eq!(action, DepositAction::Wait);
        }
        if with_invoice && capturable(&inv, &d, chain_time) {
            prop_assert!(action != DepositAction::Void, "voided an exact in-time deposit");
        }
        if let DepositAction::Capture { fee } = action {
            prop_assert!(with_invoice && capturable(&inv, &d, chain_time));
            prop_assert!(fee <= d.amount);
            prop_assert!(fee * U256::from(10_000u32) <= d.amount * U256::from(fee_bps));
        }
    }

    /// A refund after capture is sent only when the reserve covers all of it.
    #[test]
    fn refunds_are_sent_only_with_cover(
        reserve in 0u128..=WEI,
        refused in 0u32..6,
        live in any::<bool>(),
    ) {
        let inv = captured_invoice();
        let r = &inv.refunds[0];
        let action = refund_action(&inv, r, U256::from(reserve), Attempts { live, refused });
        if action == RefundAction::Send {
            prop_assert!(U256::from(reserve) >= r.amount.0);
            prop_assert!(!live && refused < MAX_REFUSALS);
        }
    }

    /// Settlements are sent only when pending or queued, not while one is under way, and only
    /// when the free liquidity covers them.
    #[test]
    fn settlements_are_sent_only_when_due_and_covered(
        status in 0u8..4,
        amount in 1u128..=WEI,
        liquidity in 0u128..=2 * WEI,
        live in any::<bool>(),
        refused in 0u32..6,
    ) {
        let status = [
            SettlementStatus::Pending,
            SettlementStatus::Queued,
            SettlementStatus::Held,
            SettlementStatus::Paid,
        ][usize::from(status)];
        let s = Settlement {
            id: crate::SettlementId(id_of(4)),
            payment: crate::PaymentRef::Card("pi_1".into()),
            source_ref: "pi_1".into(),
            amount: Amount::from_minor(amount),
            asset: "ETH".into(),
            status,
            tx: None,
            hold: None,
            source_amount: Amount::from_minor(amount),
            released: false,
            parts: Vec::new(),
            created_at: Timestamp(T0),
        };
        let action = settlement_action(&s, U256::from(liquidity), Attempts { live, refused });
        if action == SettlementAction::Send {
            prop_assert!(matches!(status, SettlementStatus::Pending | SettlementStatus::Queued));
            prop_assert!(liquidity >= amount && !live);
        }
        if matches!(status, SettlementStatus::Held | SettlementStatus::Paid) {
            prop_assert_eq!(action, SettlementAction::Skip);
        }
    }
}

fn assessed(inv: &mut Invoice, action: crate::risk::RiskAction, sanctioned: bool) -> String {
    let reference = PaymentRef::eth(id_of(1));
    inv.apply(
        InvoiceInput::Observe {
            reference: reference.clone(),
            method: Method::Ethereum,
            asset: "ETH".into(),
            amount: Amount(U256::from(WEI)),
            confirmed: true,
            confirmations: 3,
            seen_at: Some(Timestamp(T0 + 10)),
        },
        Timestamp(T0 + 20),
    )
    .unwrap();
    let t = inv
        .apply(
            InvoiceInput::Assess {
                reference,
                assessment: crate::risk::Assessment {
                    action,
                    sanctioned,
                    ..crate::risk::Assessment::clean(1)
                },
                deadline: Some(Timestamp(T0 + 900 + CAPTURE_WINDOW as i64 - 600)),
            },
            Timestamp(T0 + 20),
        )
        .unwrap();
    assert_eq!(
        t.events.contains(&crate::EventType::ReviewOpened),
        action != crate::risk::RiskAction::Allow
    );
    inv.payments[0]
        .review
        .as_ref()
        .map(|r| r.id.clone())
        .unwrap_or_default()
}

#[test]
fn a_deposit_under_review_is_held_uncaptured_until_a_reviewer_decides() {
    use crate::invoice::InvoiceStatus;
    use crate::risk::RiskAction;
    let d = deposit(1, WEI, T0 + 10, 3);
    let now = (T0 + 30) as u64;
    // Approved: captured, and the invoice settles only then.
    let mut inv = invoice(3);
    let id = assessed(&mut inv, RiskAction::Review, false);
    assert_eq!(inv.status, InvoiceStatus::Processing);
    assert!(inv.in_review());
    let held = crate::ledger::position(&inv);
    assert!(!held.get("ETH", crate::Account::Held).is_zero());
    assert_eq!(
        deposit_action(Some(&inv), &d, now, fresh(), 0),
        DepositAction::Wait
    );
    let t = inv
        .apply(
            InvoiceInput::CloseReview {
                id: id.clone(),
                approve: true,
            },
            Timestamp(T0 + 40),
        )
        .unwrap();
    assert!(t.events.contains(&crate::EventType::ReviewClosed));
    assert_eq!(inv.status, InvoiceStatus::Settled);
    assert!(matches!(
        deposit_action(Some(&inv), &d, now, fresh(), 0),
        DepositAction::Capture { .. }
    ));
    // Rejecting it now is refused; approving again changes nothing.
    assert!(inv
        .apply(
            InvoiceInput::CloseReview {
                id: id.clone(),
                approve: false
            },
            Timestamp(T0 + 50)
        )
        .is_err());
    assert!(
        !inv.apply(
            InvoiceInput::CloseReview { id, approve: true },
            Timestamp(T0 + 50)
        )
        .unwrap()
        .changed
    );

    // Rejected: voided.
    let mut inv = invoice(3);
    let id = assessed(&mut inv, RiskAction::Review, false);
    inv.apply(
        InvoiceInput::CloseReview { id, approve: false },
        Timestamp(T0 + 40),
    )
    .unwrap();
    assert_eq!(
        deposit_action(Some(&inv), &d, now, fresh(), 0),
        DepositAction::Void
    );
    assert_ne!(inv.status, InvoiceStatus::Settled);

    // Nobody decided by the deadline, before the payer could reclaim: voided.
    let mut inv = invoice(3);
    assessed(&mut inv, RiskAction::Review, false);
    let late = (T0 + 900) as u64 + CAPTURE_WINDOW - 600;
    assert_eq!(
        deposit_action(Some(&inv), &d, late - 1, fresh(), 0),
        DepositAction::Wait
    );
    assert_eq!(
        deposit_action(Some(&inv), &d, late, fresh(), 0),
        DepositAction::Void
    );

    // Allowed: no review, captured as any deposit.
    let mut inv = invoice(3);
    assessed(&mut inv, RiskAction::Allow, false);
    assert!(matches!(
        deposit_action(Some(&inv), &d, now, fresh(), 0),
        DepositAction::Capture { .. }
    ));
}

#[test]
fn a_sanctioned_deposit_is_never_captured_nor_approved() {
    use crate::risk::RiskAction;
    let d = deposit(1, WEI, T0 + 10, 3);
    let mut inv = invoice(3);
    let id = assessed(&mut inv, RiskAction::Block, true);
    assert_eq!(
        inv.payments[0].review.as_ref().unwrap().deadline,
        None,
        "no deadline frees it"
    );
    let late = (T0 + 900) as u64 + CAPTURE_WINDOW - 1;
    assert_eq!(
        deposit_action(Some(&inv), &d, late, fresh(), 0),
        DepositAction::Wait
    );
    assert!(matches!(
        inv.apply(
            InvoiceInput::CloseReview {
                id: id.clone(),
                approve: true
            },
            Timestamp(T0 + 40)
        ),
        Err(crate::CoreError::Sanctioned { .. })
    ));
    inv.apply(
        InvoiceInput::CloseReview { id, approve: false },
        Timestamp(T0 + 40),
    )
    .unwrap();
    assert_eq!(
        deposit_action(Some(&inv), &d, late, fresh(), 0),
        DepositAction::Void
    );
}
