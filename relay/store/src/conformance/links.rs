//! Payment links are found by id and by token, replaced only at the version read, and listed
//! per merchant.

use super::*;

/// Link number `n` of `m` (ids ordered by `n`).
pub fn link(m: &Merchant, n: u8, reusable: bool) -> relay_core::PaymentLink {
    let mut bytes = [0u8; 12];
    bytes[0] = n;
    relay_core::PaymentLink {
        id: relay_core::LinkId::from_entropy(bytes),
        merchant_id: m.id.clone(),
        token: format!("pl_{}", hex::encode([n; 16])),
        url: format!("https://pay.example.com/link/pl_{n}"),
        price: Money {
            asset: Asset::fiat("USD", 2),
            amount: Amount::from_minor(500),
        },
        description: Some(format!("link {n}")),
        reusable,
        methods: None,
        redirect_url: None,
        expires_in: 900,
        active: true,
        created_at: T0,
        invoice: None,
        made: 0,
        version: 0,
    }
}

pub(super) async fn payment_links_are_found_versioned_and_listed<S: Store>(
    dir: &Path,
    open: &dyn Fn(&Path) -> S,
) {
    let s = open(dir);
    let (m, other) = (merchant(1), merchant(2));
    add_merchant(&s, &m).await;
    add_merchant(&s, &other).await;
    let first = link(&m, 1, false);
    assert_eq!(
        s.create_link(&first, Some(idem(&m.id, "link-1", 1)))
            .await
            .unwrap(),
        Commit::Done
    );
    // The same request again: its answer, and no second link.
    let again = s
        .create_link(&link(&m, 9, false), Some(idem(&m.id, "link-1", 1)))
        .await
        .unwrap();
    assert!(matches!(again, Commit::IdempotencyHit(_)), "{again:?}");
    assert!(s.link(&link(&m, 9, false).id).await.unwrap().is_none());
    // A second link with a token already taken writes nothing.
    let mut clash = link(&m, 3, true);
    clash.token = first.token.clone();
    assert_eq!(s.create_link(&clash, None).await.unwrap(), Commit::Conflict);
    assert!(s.link(&clash.id).await.unwrap().is_none());
    assert_eq!(s.link(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(
        s.link_by_token(&first.token).await.unwrap(),
        Some(first.clone())
    );
    assert!(s.link_by_token("pl_nobody").await.unwrap().is_none());
    // Versioned: of two writers from one version, one wins.
    let (inv, _) = invoice(&m, 1, None);
    let made = first.made(&inv.id);
    assert_eq!(s.update_link(0, &made).await.unwrap(), Commit::Done);
    let mut stale = first.made(&InvoiceId::from_entropy([7; 12]));
    stale.description = None;
    assert_eq!(s.update_link(0, &stale).await.unwrap(), Commit::Conflict);
    assert_eq!(s.link(&first.id).await.unwrap(), Some(made.clone()));
    // Listed newest first, per merchant, in pages.
    let second = link(&m, 2, true);
    s.create_link(&second, None).await.unwrap();
    s.create_link(&link(&other, 4, true), None).await.unwrap();
    let page = s.list_links(&m.id, None, 1).await.unwrap();
    assert_eq!(page.items, vec![second.clone()]);
    assert!(page.has_more);
    let rest = s.list_links(&m.id, Some(&second.id), 10).await.unwrap();
    assert_eq!(rest.items, vec![made]);
    assert!(!rest.has_more);
}
