//! Leases with fencing tokens on a real PostgreSQL: one holder at a time, a lapsed lease passes
//! to another holder with a higher token, and a holder that was paused past its lease writes
//! nothing.

mod common;
use common::store;
use relay_store_pg::PgStore;
use relay_testnet::Postgres;
use std::time::Duration;

/// A fenced write of the role: appends `who` to the scratch table if the fence still holds.
async fn fenced_write(s: &PgStore, fence: &relay_store_pg::Fence, who: &str) -> bool {
    let Some(mut tx) = s.begin_fenced(fence).await.unwrap() else {
        return false;
    };
    sqlx::query("INSERT INTO writes (who) VALUES ($1)")
        .bind(who)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    true
}

async fn writes(pg: &Postgres) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query_scalar("SELECT who FROM writes ORDER BY n")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_and_a_paused_former_holder_writes_nothing() {
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    // Two relays on one database.
    let (a, b) = (store(&pg, None).await, store(&pg, None).await);
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
        sqlx::query("CREATE TABLE writes (n BIGSERIAL PRIMARY KEY, who TEXT NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let ttl = Duration::from_millis(400);
    let fa = a
        .acquire_lease("btc-watcher", "relay-a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fa.token, 1);
    assert_eq!(
        b.acquire_lease("btc-watcher", "relay-b", ttl)
            .await
            .unwrap(),
        None,
        "held by a: b does not get it"
    );
    // Another role is free.
    assert!(b
        .acquire_lease("expiry", "relay-b", ttl)
        .await
        .unwrap()
        .is_some());
    // Renewing keeps the token.
    let renewed = a
        .acquire_lease("btc-watcher", "relay-a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.token, fa.token);
    assert!(fenced_write(&a, &fa, "a while leader").await);

    // a stalls past its lease (a long GC pause, a SIGSTOP); b takes over with a higher token.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let fb = b
        .acquire_lease("btc-watcher", "relay-b", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fb.token, fa.token + 1);
    assert!(fenced_write(&b, &fb, "b while leader").await);
    // a wakes up and goes on as if it still led: nothing it writes is stored.
    assert!(!fenced_write(&a, &fa, "a after its lease").await);
    assert_eq!(
        a.acquire_lease("btc-watcher", "relay-a", ttl)
            .await
            .unwrap(),
        None,
        "and it cannot take the lease back while b holds it"
    );
    assert_eq!(writes(&pg).await, vec!["a while leader", "b while leader"]);

    // b shuts down: the lease is free at once, and the next holder's token is higher again.
    b.release_lease(&fb).await.unwrap();
    assert!(!fenced_write(&b, &fb, "b after release").await);
    let fa2 = a
        .acquire_lease("btc-watcher", "relay-a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fa2.token, fb.token + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_cannot_change_hands_while_a_fenced_write_is_under_way() {
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    let (a, b) = (store(&pg, None).await, store(&pg, None).await);
    let ttl = Duration::from_millis(300);
    let fa = a
        .acquire_lease("sweep", "relay-a", ttl)
        .await
        .unwrap()
        .unwrap();
    let tx = a
        .begin_fenced(&fa)
        .await
        .unwrap()
        .expect("a holds the lease");
    // The lease lapses while a's write is open: b's take waits for the write's lock.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let taking = tokio::spawn(async move {
        b.acquire_lease("sweep", "relay-b", Duration::from_secs(5))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !taking.is_finished(),
        "the lease changed hands under an open fenced write"
    );
    tx.commit().await.unwrap();
    let fb = taking
        .await
        .unwrap()
        .expect("b takes the lapsed lease once a's write ends");
    assert_eq!(fb.token, fa.token + 1);
}

/// A holder that stops in the middle of a write (paused, cut off) keeps that write's lock on its
/// lease row; another relay's bid for the role never waits on it for long, and the server ends
/// the stalled session, so the role passes on within seconds instead of never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stalled_mid_write_does_not_keep_its_role() {
    let pg = Postgres::spawn().expect("PostgreSQL starts");
    let (a, b) = (store(&pg, None).await, store(&pg, None).await);
    let fence = a
        .acquire_lease("webhooks", "a/1/x", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    // A's write begins (its lease row locked) and never ends.
    let stalled = a
        .begin_fenced(&fence)
        .await
        .unwrap()
        .expect("A holds the role");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = std::time::Instant::now();
    let taken = loop {
        let bid = tokio::time::timeout(
            Duration::from_secs(3),
            b.acquire_lease("webhooks", "b/2/y", Duration::from_secs(8)),
        )
        .await
        .expect("a bid for the role never hangs");
        if let Ok(Some(f)) = bid {
            break f;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the role never passed on: {bid:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(taken.token > fence.token);
    drop(stalled);
}
