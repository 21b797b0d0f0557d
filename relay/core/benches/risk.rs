//! The cost of the risk rules per payment: 100 rules (velocity, amount limits, declines, and
//! lists holding 10,000 entries in all) plus a sanctions list of 10,000 addresses, assessed for
//! 10,000 different payments; also what compiling the rules costs (done once per change).
//!
//! Run: `cargo bench -p relay-core --bench risk` (one thread; prints medians).
#![allow(clippy::print_stdout)]

use relay_core::invoice::Method;
use relay_core::risk::{History, ListField, Payer, PayerKey, Rule, Sanctions, Signals, Totals};
use relay_core::{RiskAction, RiskRules};
use std::time::{Duration, Instant};

const PAYMENTS: usize = 10_000;
const ROUNDS: usize = 15;

fn rules() -> RiskRules {
    let mut rules = Vec::new();
    let keys = [
        PayerKey::CardFingerprint,
        PayerKey::EthSender,
        PayerKey::BtcInput,
        PayerKey::Ip,
    ];
    for i in 0..40 {
        rules.push(Rule::Velocity {
            id: format!("v{i}"),
            key: keys[i % 4],
            window_secs: 60 * (i as u64 + 1),
            max_count: Some(5 + i as u64),
            max_amount: Some("1000000".into()),
            currency: Some("USD".into()),
            action: RiskAction::Review,
        });
    }
    for i in 0..20 {
        rules.push(Rule::AmountLimit {
            id: format!("a{i}"),
            currency: if i % 2 == 0 { "USD" } else { "EUR" }.into(),
            max: (100_000 * (i + 1)).to_string(),
            action: RiskAction::Review,
        });
    }
    for i in 0..10 {
        rules.push(Rule::Declines {
            id: format!("d{i}"),
            window_secs: 3600 * (i as u64 + 1),
            max: 3 + i as u64,
            action: RiskAction::Block,
        });
    }
    // 30 lists, 10,000 entries in all.
    let fields = [
        ListField::Address,
        ListField::CardFingerprint,
        ListField::Email,
        ListField::Ip,
        ListField::CardCountry,
    ];
    for i in 0..30 {
        let field = fields[i % 5];
        let values = (0..334)
            .map(|n| match field {
                ListField::Address => format!("0x{:040x}", i * 1000 + n),
                ListField::CardFingerprint => format!("fp{i}x{n}"),
                ListField::Email => format!("user{i}x{n}@example.com"),
                ListField::Ip => format!("10.{i}.{}.{}", n / 256, n % 256),
                ListField::CardCountry => format!("C{}", n % 100),
            })
            .take(if i == 29 { 10_000 - 334 * 29 } else { 334 })
            .collect();
        rules.push(Rule::List {
            id: format!("l{i}"),
            field,
            values,
            action: if i % 3 == 0 {
                RiskAction::Block
            } else {
                RiskAction::Review
            },
        });
    }
    assert_eq!(rules.len(), 100);
    RiskRules {
        version: 1,
        updated_at: None,
        rules,
    }
}

fn signals(n: usize) -> Signals {
    Signals {
        method: Some(Method::Card),
        price_currency: "USD".into(),
        price_minor: 500 + n as u128 * 7,
        email: Some(format!("user{}x{}@example.com", n % 40, n % 400)),
        payer: Payer {
            card_fingerprint: Some(format!("fp{}x{}", n % 40, n % 500)),
            card_country: Some("US".into()),
            eth_sender: None,
            btc_inputs: Vec::new(),
            addresses: vec![format!("0x{:040x}", n * 3)],
            ip: Some(format!("10.{}.{}.{}", n % 40, n % 3, n % 256)),
        },
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rules = rules();
    let entries: usize = rules
        .rules
        .iter()
        .map(|r| match r {
            Rule::List { values, .. } => values.len(),
            _ => 0,
        })
        .sum();
    let mut sanctions = Sanctions::default();
    let list: String = (0..10_000)
        .map(|n| format!("0x{:040x}\n", n * 5 + 1))
        .collect();
    sanctions.add_list("ETH", &list);

    let compile = median(
        (0..ROUNDS)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(rules.compile().unwrap());
                t.elapsed()
            })
            .collect(),
    );
    let compiled = rules.compile().unwrap();
    let inputs: Vec<(Signals, History)> = (0..PAYMENTS)
        .map(|n| {
            let s = signals(n);
            let history = compiled
                .windows(&s)
                .into_iter()
                .map(|w| {
                    let t = Totals {
                        count: (n % 9) as u64,
                        sums: [("USD".to_owned(), (n * 100) as u128)].into(),
                    };
                    (w, t)
                })
                .collect();
            (s, history)
        })
        .collect();
    let mut actions = [0usize; 3];
    let per_payment = median(
        (0..ROUNDS)
            .map(|_| {
                let t = Instant::now();
                for (s, h) in &inputs {
                    let a = compiled.assess(s, h, &sanctions);
                    actions[a.action as usize] += 1;
                }
                t.elapsed() / PAYMENTS as u32
            })
            .collect(),
    );
    let windows = median(
        (0..ROUNDS)
            .map(|_| {
                let t = Instant::now();
                for (s, _) in &inputs {
                    std::hint::black_box(compiled.windows(s));
                }
                t.elapsed() / PAYMENTS as u32
            })
            .collect(),
    );
    println!(
        "risk rules: {} rules, {entries} list entries, 10000 sanctioned addresses",
        rules.rules.len()
    );
    println!(
        "assess one payment: {:.2} µs (median of {ROUNDS} rounds of {PAYMENTS} payments; outcomes allow/review/block {}/{}/{})",
        per_payment.as_secs_f64() * 1e6,
        actions[0] / ROUNDS,
        actions[1] / ROUNDS,
        actions[2] / ROUNDS
    );
    println!(
        "velocity windows to ask the store for, one payment: {:.2} µs",
        windows.as_secs_f64() * 1e6
    );
    println!(
        "compile the rules (once per change): {:.2} ms",
        compile.as_secs_f64() * 1e3
    );
}
