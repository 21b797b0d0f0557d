//! The rules by example: validation, each kind of rule, allow lists, sanctions, the score.

use super::*;
use crate::invoice::Method;

fn rules(json: &str) -> Result<CompiledRules, RuleError> {
    let rules: Vec<Rule> = serde_json::from_str(json).expect("rules parse");
    RiskRules {
        version: 7,
        updated_at: None,
        rules,
    }
    .compile()
}

fn card(fingerprint: &str, price: u128) -> Signals {
    Signals {
        method: Some(Method::Card),
        price_currency: "USD".into(),
        price_minor: price,
        email: Some("Payer@Example.com".into()),
        payer: Payer {
            card_fingerprint: Some(fingerprint.into()),
            card_country: Some("us".into()),
            ip: Some("203.0.113.9".into()),
            ..Payer::default()
        },
    }
}

fn history(entries: &[(&str, u64, u64, u128)]) -> History {
    entries
        .iter()
        .map(|(key, secs, count, sum)| {
            (
                Window {
                    key: (*key).into(),
                    secs: *secs,
                },
                Totals {
                    count: *count,
                    sums: [("USD".to_owned(), *sum)].into(),
                },
            )
        })
        .collect()
}

#[test]
fn mistakes_in_rules_are_refused_with_the_rule_and_field() {
    let cases = [
        (
            r#"[{"type":"amount_limit","id":"a","currency":"USD","max":"-5","action":"block"}]"#,
            "max",
        ),
        (
            r#"[{"type":"amount_limit","id":"a","currency":"USD","max":"1.5","action":"block"}]"#,
            "max",
        ),
        (
            r#"[{"type":"velocity","id":"v","key":"ip","window_secs":0,"max_count":3,"action":"review"}]"#,
            "window_secs",
        ),
        (
            r#"[{"type":"velocity","id":"v","key":"ip","window_secs":60,"action":"review"}]"#,
            "max_count",
        ),
        (
            r#"[{"type":"velocity","id":"v","key":"ip","window_secs":60,"max_amount":"100","action":"review"}]"#,
            "currency",
        ),
        (
            r#"[{"type":"declines","id":"d","window_secs":60,"max":0,"action":"block"}]"#,
            "max",
        ),
        (
            r#"[{"type":"list","id":"l","field":"email","values":[],"action":"block"}]"#,
            "values",
        ),
        (
            r#"[{"type":"list","id":"l","field":"ip","values":["1.2.3.4"],"action":"block"},
            {"type":"list","id":"l","field":"ip","values":["1.2.3.5"],"action":"block"}]"#,
            "id",
        ),
        (
            r#"[{"type":"list","id":"bad id!","field":"ip","values":["1.2.3.4"],"action":"block"}]"#,
            "id",
        ),
    ];
    for (json, field) in cases {
        let e = rules(json).expect_err(json);
        assert_eq!(e.field, field, "{json}: {e}");
    }
    // Unknown fields and kinds are refused when parsed.
    for json in [
        r#"[{"type":"velocity","id":"v","key":"ip","window_secs":60,"max_count":3,"action":"review","extra":1}]"#,
        r#"[{"type":"teleport","id":"t","action":"block"}]"#,
        r#"[{"type":"list","id":"l","field":"shoe_size","values":["9"],"action":"block"}]"#,
        r#"[{"type":"list","id":"l","field":"ip","values":["9"],"action":"maybe"}]"#,
    ] {
        assert!(serde_json::from_str::<Vec<Rule>>(json).is_err(), "{json}");
    }
}

#[test]
fn velocity_counts_the_payment_itself_and_acts_past_the_limit() {
    let r = rules(
        r#"[{"type":"velocity","id":"fast","key":"card_fingerprint","window_secs":3600,
             "max_count":3,"max_amount":"10000","currency":"USD","action":"review"}]"#,
    )
    .unwrap();
    let s = card("fp1", 2000);
    assert_eq!(
        r.windows(&s),
        vec![Window {
            key: "card_fingerprint:fp1".into(),
            secs: 3600
        }]
    );
    let none = Sanctions::default();
    let third = r.assess(
        &s,
        &history(&[("card_fingerprint:fp1", 3600, 3, 6000)]),
        &none,
    );
    assert_eq!(third.action, RiskAction::Allow);
    assert_eq!(third.score, 0);
    let fourth = r.assess(
        &s,
        &history(&[("card_fingerprint:fp1", 3600, 4, 8000)]),
        &none,
    );
    assert_eq!(fourth.action, RiskAction::Review);
    assert_eq!(fourth.reasons[0].code, "velocity_count");
    assert_eq!(fourth.rules_version, 7);
    let big = r.assess(
        &s,
        &history(&[("card_fingerprint:fp1", 3600, 2, 12000)]),
        &none,
    );
    assert_eq!(big.action, RiskAction::Review);
    assert_eq!(big.reasons[0].code, "velocity_amount");
    // Another card is not counted with it.
    let other = r.assess(
        &card("fp2", 2000),
        &history(&[("card_fingerprint:fp1", 3600, 9, 0)]),
        &none,
    );
    assert_eq!(other.action, RiskAction::Allow);
}

#[test]
fn declines_amounts_and_lists_each_add_their_reason_and_the_worst_action_wins() {
    let r = rules(
        r#"[{"type":"declines","id":"testing","window_secs":86400,"max":3,"action":"block"},
            {"type":"amount_limit","id":"big","currency":"USD","max":"50000","action":"review"},
            {"type":"amount_limit","id":"big_eur","currency":"EUR","max":"1","action":"block"},
            {"type":"list","id":"mails","field":"email","values":["payer@example.COM"],"action":"review"},
            {"type":"list","id":"countries","field":"card_country","values":["US"],"action":"review"}]"#,
    )
    .unwrap();
    let none = Sanctions::default();
    let s = card("fp1", 60_000);
    let a = r.assess(&s, &history(&[("decline:fp1", 86400, 3, 0)]), &none);
    assert_eq!(a.action, RiskAction::Block);
    assert_eq!(a.score, 100);
    let codes: Vec<_> = a.reasons.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["declines", "amount_limit", "listed", "listed"]);
    // Two declines: the price and the lists ask for a review; the EUR limit says nothing of USD.
    let b = r.assess(&s, &history(&[("decline:fp1", 86400, 2, 0)]), &none);
    assert_eq!(b.action, RiskAction::Review);
    assert!(b.score >= 60 && b.score < 100, "{}", b.score);
}

#[test]
fn an_allow_list_overrides_the_rules_but_never_a_sanctions_list() {
    let r = rules(
        r#"[{"type":"list","id":"bad_ips","field":"ip","values":["203.0.113.9"],"action":"block"},
            {"type":"list","id":"vip","field":"address","values":["0xAbCd000000000000000000000000000000000001"],"action":"allow"}]"#,
    )
    .unwrap();
    let s = Signals {
        price_currency: "USD".into(),
        price_minor: 100,
        payer: Payer {
            eth_sender: Some("0xabcd000000000000000000000000000000000001".into()),
            addresses: vec!["0xabcd000000000000000000000000000000000001".into()],
            ip: Some("203.0.113.9".into()),
            ..Payer::default()
        },
        ..Signals::default()
    };
    let none = Sanctions::default();
    let a = r.assess(&s, &History::new(), &none);
    assert_eq!(a.action, RiskAction::Allow);
    assert_eq!(a.reasons.len(), 2, "both reasons are shown: {a:?}");
    let mut ofac = Sanctions::default();
    ofac.add_list(
        "eth",
        "# SDN digital currency addresses\n\n0xABCD000000000000000000000000000000000001\n",
    );
    let b = r.assess(&s, &History::new(), &ofac);
    assert_eq!(b.action, RiskAction::Block);
    assert!(b.sanctioned);
    assert_eq!(b.reasons.last().unwrap().code, "sanctioned");
    assert_eq!(ofac.sizes(), vec![("ETH".to_owned(), 1)]);
}

#[test]
fn sanctions_lists_compare_addresses_by_their_format() {
    let mut s = Sanctions::default();
    s.add_list(
        "XBT",
        "bc1qa5wkgaew2dkv56kfvj49j0av5nml45x9ek9hz6\n1BbQbM4rS8BmLpRwkwNfEXSYoT9XXx7hE8\n",
    );
    assert_eq!(
        s.hit("BC1QA5WKGAEW2DKV56KFVJ49J0AV5NML45X9EK9HZ6"),
        Some("XBT")
    );
    assert_eq!(s.hit("1BbQbM4rS8BmLpRwkwNfEXSYoT9XXx7hE8"), Some("XBT"));
    // base58 is case-sensitive: another case is another address.
    assert_eq!(s.hit("1bbqbm4rs8bmlprwkwnfexsyot9xxx7he8"), None);
}

#[test]
fn review_ids_are_stable_and_well_formed() {
    let a = review_id("inv_1", "eth:0x01");
    assert_eq!(a, review_id("inv_1", "eth:0x01"));
    assert_ne!(a, review_id("inv_1", "eth:0x02"));
    assert!(is_review_id(&a), "{a}");
    assert!(!is_review_id("rvw_../../x"));
}

#[test]
fn the_door_turns_away_block_listed_payers_unless_an_allow_list_names_them() {
    let r = rules(
        r#"[{"type":"list","id":"bad_ips","field":"ip","values":["203.0.113.9"],"action":"block"},
            {"type":"list","id":"watch","field":"email","values":["payer@example.com"],"action":"review"}]"#,
    )
    .unwrap();
    let s = card("fp", 100);
    assert_eq!(r.listed_block(&s), Some("bad_ips"));
    let mut elsewhere = s.clone();
    elsewhere.payer.ip = Some("198.51.100.1".into());
    assert_eq!(
        r.listed_block(&elsewhere),
        None,
        "a review list does not turn anyone away"
    );
    let allowed = rules(
        r#"[{"type":"list","id":"bad_ips","field":"ip","values":["203.0.113.9"],"action":"block"},
            {"type":"list","id":"vip","field":"email","values":["PAYER@example.com"],"action":"allow"}]"#,
    )
    .unwrap();
    assert_eq!(allowed.listed_block(&s), None);
}
