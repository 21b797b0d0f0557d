//! The PostgreSQL backend's merchants and API keys, against a real server from the harness.

mod common;
use common::store;
use relay_core::{ApiKey, ApiKeyHash, KeyRecord, Timestamp};
use relay_store::conformance::merchant;
use relay_store::sealed::SecretsKey;
use relay_store::{Commit, Merchants, StoreError};
use relay_store_pg::PgStore;
use relay_testnet::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_found_by_hash_rolled_and_revoked_at_once_and_never_from_a_stale_view() {
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    let s = store(&pg, None).await;
    let m = merchant(1);
    let secret = ApiKey::from_entropy([1; 32]);
    let first = relay_core::access::first_key_of(&m, &secret);
    s.insert_merchant(&m, &first).await.unwrap();
    assert_eq!(s.merchant(&m.id).await.unwrap(), Some(m.clone()));
    assert_eq!(s.merchant_count().await.unwrap(), 1);
    let (found, key) = s.key_by_hash(&secret.hash()).await.unwrap().unwrap();
    assert_eq!((found.id, key.id.clone()), (m.id.clone(), first.id.clone()));

    // A second key; its id or its hash taken again is refused.
    let second = KeyRecord {
        id: "key_second".into(),
        hash: ApiKeyHash([2; 32]),
        ..first.clone()
    };
    assert_eq!(s.insert_api_key(&second).await.unwrap(), Commit::Done);
    let same_hash = KeyRecord {
        id: "key_third".into(),
        ..second.clone()
    };
    assert_eq!(
        s.insert_api_key(&same_hash).await.unwrap(),
        Commit::Conflict
    );
    assert_eq!(s.insert_api_key(&second).await.unwrap(), Commit::Conflict);
    assert_eq!(s.api_keys(&m.id).await.unwrap().len(), 2);

    // Rolled: the old secret is refused from that write on, the new one found.
    let rolled = KeyRecord {
        hash: ApiKeyHash([3; 32]),
        rolled_at: Some(Timestamp(1)),
        ..second.clone()
    };
    assert_eq!(
        s.replace_api_key(&second, &rolled).await.unwrap(),
        Commit::Done
    );
    assert!(s.key_by_hash(&ApiKeyHash([2; 32])).await.unwrap().is_none());
    assert!(s.key_by_hash(&ApiKeyHash([3; 32])).await.unwrap().is_some());
    // From a stale view (the record before the roll) nothing changes.
    let stale = KeyRecord {
        revoked_at: Some(Timestamp(2)),
        ..second.clone()
    };
    assert_eq!(
        s.replace_api_key(&second, &stale).await.unwrap(),
        Commit::Conflict
    );
    assert!(s.key_by_hash(&ApiKeyHash([3; 32])).await.unwrap().is_some());
    // Rolled onto another key's secret: refused.
    let onto_first = KeyRecord {
        hash: first.hash,
        ..rolled.clone()
    };
    assert_eq!(
        s.replace_api_key(&rolled, &onto_first).await.unwrap(),
        Commit::Conflict
    );
    // Revoked: refused at once, still listed.
    let revoked = KeyRecord {
        revoked_at: Some(Timestamp(2)),
        ..rolled.clone()
    };
    assert_eq!(
        s.replace_api_key(&rolled, &revoked).await.unwrap(),
        Commit::Done
    );
    assert!(s.key_by_hash(&ApiKeyHash([3; 32])).await.unwrap().is_none());
    let listed = s.api_keys(&m.id).await.unwrap();
    assert!(listed
        .iter()
        .any(|k| k.id == "key_second" && k.revoked_at.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secrets_are_sealed_in_the_database_and_need_their_key() {
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    let s = store(&pg, Some([7; 32])).await;
    let m = merchant(2);
    let secret = ApiKey::from_entropy([2; 32]);
    s.insert_merchant(&m, &relay_core::access::first_key_of(&m, &secret))
        .await
        .unwrap();
    assert_eq!(
        s.merchant(&m.id).await.unwrap(),
        Some(m.clone()),
        "read back in the clear"
    );

    // What the database holds does not contain the secret.
    let plain = m.webhook_secret.expose_secret().to_owned();
    // A relay without the key, or with another one, is refused at the door.
    let refused = |r: Result<PgStore, StoreError>| matches!(r, Err(StoreError::SecretsKey { .. }));
    assert!(
        refused(PgStore::connect(&pg.url(), None).await),
        "a store with sealed secrets opened without its key"
    );
    assert!(
        refused(PgStore::connect(&pg.url(), Some(SecretsKey::new([8; 32]))).await),
        "and with another key"
    );
    let again = store(&pg, Some([7; 32])).await;
    assert_eq!(again.merchant(&m.id).await.unwrap(), Some(m.clone()));
    let raw = sqlx_body(&pg, m.id.as_str()).await;
    assert!(
        !raw.contains(&plain),
        "the secret is in the database in the clear"
    );
}

/// The merchant's row as stored.
async fn sqlx_body(pg: &Postgres, id: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query_scalar("SELECT body FROM merchants WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}
