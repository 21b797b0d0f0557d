//! The harness's PostgreSQL is a real server: it takes connections, keeps what is committed, and
//! is gone when its handle is dropped.

use relay_testnet::Postgres;
use sqlx::Connection;

#[tokio::test]
async fn postgres_starts_on_loopback_keeps_commits_and_stops_on_drop() {
    let pg = Postgres::spawn().expect("PostgreSQL starts (run scripts/setup.sh if it is missing)");
    let port = pg.port();
    // The server may still be starting when it first accepts a connection: retry briefly.
    let mut conn = None;
    for _ in 0..100 {
        match sqlx::PgConnection::connect(&pg.url()).await {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let mut conn = conn.unwrap_or_else(|| panic!("no connection:\n{}", pg.output_tail()));
    sqlx::query("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO t VALUES (1, 'kept')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO t VALUES (2, 'rolled back')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, v FROM t ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, vec![(1, "kept".to_owned())]);
    // A second write of the same key is refused by the database itself.
    let dup = sqlx::query("INSERT INTO t VALUES (1, 'again')")
        .execute(&mut conn)
        .await;
    assert!(dup.is_err(), "a duplicate primary key was accepted");
    conn.close().await.unwrap();

    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens after its handle was dropped"
    );
}
