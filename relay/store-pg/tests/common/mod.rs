//! What the PostgreSQL backend's tests share.

use relay_store::sealed::SecretsKey;
use relay_store_pg::PgStore;
use relay_testnet::Postgres;
use std::time::Duration;

/// A store on `pg` (a fresh server may refuse connections for a moment after it first accepts
/// them). `key`: the bytes of the secrets key, if any.
pub async fn store(pg: &Postgres, key: Option<[u8; 32]>) -> PgStore {
    let mut last = None;
    for _ in 0..100 {
        match PgStore::connect(&pg.url(), key.map(SecretsKey::new)).await {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no store: {last:?}\n{}", pg.output_tail());
}
