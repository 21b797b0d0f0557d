//! The store API's conformance suite, on a real PostgreSQL: every check on a fresh database, and
//! a reopen of the same database where a check asks for one.

mod common;
use relay_store_pg::PgStore;
use relay_testnet::Postgres;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_backend_passes_the_conformance_suite() {
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    // The admin connection, once the server takes connections.
    drop(common::store(&pg, None).await);
    // Each directory the suite hands out names one database.
    let databases: Mutex<HashMap<PathBuf, String>> = Mutex::default();
    let open = |dir: &Path| -> PgStore {
        let (name, new) = {
            let mut dbs = databases.lock().unwrap();
            let n = dbs.len();
            match dbs.get(dir) {
                Some(name) => (name.clone(), false),
                None => {
                    let name = format!("conformance_{n}");
                    dbs.insert(dir.to_owned(), name.clone());
                    (name, true)
                }
            }
        };
        let url = pg.url_of(&name);
        let admin = pg.url();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                if new {
                    use sqlx::Connection;
                    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                    sqlx::query(&format!("CREATE DATABASE {name}"))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
                PgStore::connect(&url, None).await.unwrap()
            })
        })
    };
    relay_store::conformance::check_all(open).await;
}
