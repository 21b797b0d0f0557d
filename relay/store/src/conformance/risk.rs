//! Risk rules are replaced only at the version read; velocity signals count once per id and are
//! pruned by age.

use super::{add_merchant, merchant};
use crate::Store;
use relay_core::Timestamp;
use std::path::Path;

pub(super) async fn risk_rules_versioned_and_signals_counted_once<S: Store>(
    dir: &Path,
    open: &dyn Fn(&Path) -> S,
) {
    use crate::Signal;
    use relay_core::risk::{RiskAction, Rule};
    let s = open(dir);
    let (m, other) = (merchant(1), merchant(2));
    add_merchant(&s, &m).await;
    add_merchant(&s, &other).await;
    assert_eq!(s.risk_rules(&m.id).await.unwrap().version, 0, "none yet");
    let v1 = relay_core::RiskRules {
        version: 1,
        updated_at: Some(Timestamp(1)),
        rules: vec![Rule::Declines {
            id: "d".into(),
            window_secs: 60,
            max: 3,
            action: RiskAction::Block,
        }],
    };
    assert!(s.put_risk_rules(&m.id, 0, &v1).await.unwrap());
    assert!(
        !s.put_risk_rules(&m.id, 0, &v1).await.unwrap(),
        "a second first version is refused"
    );
    let v2 = relay_core::RiskRules {
        version: 2,
        rules: vec![],
        ..v1.clone()
    };
    assert!(!s.put_risk_rules(&m.id, 5, &v2).await.unwrap(), "stale");
    assert_eq!(s.risk_rules(&m.id).await.unwrap(), v1);
    assert!(s.put_risk_rules(&m.id, 1, &v2).await.unwrap());
    assert_eq!(s.risk_rules(&m.id).await.unwrap(), v2);
    assert_eq!(s.risk_rules(&other.id).await.unwrap().version, 0);

    let signal = |id: &str, at: i64, amount: u128| Signal {
        key: "ip:203.0.113.9".into(),
        id: id.into(),
        at: Timestamp(at),
        currency: "USD".into(),
        amount,
    };
    for (id, at, amount) in [
        ("a", 100, 500),
        ("b", 200, 700),
        ("a", 300, 999),
        ("c", 50, 1),
    ] {
        s.record_signal(&m.id, &signal(id, at, amount))
            .await
            .unwrap();
    }
    s.record_signal(&other.id, &signal("z", 250, 5))
        .await
        .unwrap();
    let mut found = s
        .signals_since(&m.id, "ip:203.0.113.9", Timestamp(100))
        .await
        .unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        found,
        vec![signal("a", 100, 500), signal("b", 200, 700)],
        "a counted once, as first recorded; c is older"
    );
    let all = s
        .signals_since(&m.id, "ip:203.0.113.9", Timestamp(0))
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let none = s
        .signals_since(&m.id, "ip:203.0.113.", Timestamp(0))
        .await
        .unwrap();
    assert!(none.is_empty(), "a key is not a prefix of another");
    // Pruning drops what is older than the cut, for every merchant, and keeps the rest.
    assert_eq!(s.prune_signals(Timestamp(200)).await.unwrap(), 2);
    let left = s
        .signals_since(&m.id, "ip:203.0.113.9", Timestamp(0))
        .await
        .unwrap();
    assert_eq!(left, vec![signal("b", 200, 700)]);
    assert_eq!(
        s.signals_since(&other.id, "ip:203.0.113.9", Timestamp(0))
            .await
            .unwrap()
            .len(),
        1
    );
}
