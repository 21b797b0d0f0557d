//! Relay's store on PostgreSQL, for shops that run several relays on one database.
//!
//! The whole store API ([`relay_store::Store`]) on one database, with versioned migrations
//! applied when the store opens; the singleton roles' leases with fencing tokens ([`Fence`]); and
//! derivation indexes allocated in the database, so relays sharing it never hand out one address
//! twice.
//!
//! Every decision is one transaction at READ COMMITTED: the invoice row is locked (`FOR UPDATE`)
//! and its version checked, so a stale writer gets [`relay_store::Commit::Conflict`]; unique keys
//! (idempotency keys, inbound event ids, rail references) are claimed with `ON CONFLICT DO
//! NOTHING`, so of two racing writers one wins and the other sees its record. A transaction the
//! server aborts for a deadlock or a serialization failure is run again.
//!
//! SQL is kept to what PostgreSQL, CockroachDB and YugabyteDB share (no stored procedures, no
//! advisory locks, no LISTEN/NOTIFY); ids are compared byte by byte (`COLLATE "C"`, which is
//! PostgreSQL's spelling). Values are the domain records as JSON text.

mod chain;
mod invoices;
mod lease;
mod ledger;
mod links;
mod outbox;
mod risk;
mod sealing;
pub use lease::Fence;

use relay_core::{ApiKeyHash, KeyRecord, Merchant, MerchantId};
use relay_store::sealed::SecretsKey;
use relay_store::{Commit, IdempotencyRecord, Merchants, Role, Store, StoreError};
use serde::{de::DeserializeOwned, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The store on one PostgreSQL database. Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    secrets_key: Option<Arc<SecretsKey>>,
    wakes: Arc<Wakes>,
    /// Who this process is, as a lease holder (unique per connect).
    holder: Arc<str>,
    /// The leases this process holds, by role (shared by every handle of the connection).
    fences: Arc<std::sync::Mutex<std::collections::HashMap<Role, Fence>>>,
    /// The role whose lease fences this handle's writes (see [`Leases::fenced`]).
    role: Option<Role>,
}

/// This process's wake-ups (see [`relay_store::Wake`]); relays on other machines see new work by
/// looking at the database again (every waiter also wakes on a timer).
#[derive(Default)]
struct Wakes {
    fanout: tokio::sync::Notify,
    payouts: tokio::sync::Notify,
}

/// Why a transaction stopped before its commit.
pub(crate) enum Stop {
    /// The decision is refused: nothing is written, and the caller is told why.
    Refused(Refusal),
    /// The server aborted the transaction for contention (deadlock, serialization): run it again.
    Contention(StoreError),
    Failed(StoreError),
}

pub(crate) enum Refusal {
    Idempotent(IdempotencyRecord),
    Conflict,
    DuplicateReference(relay_core::Lookup),
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Stop {
        let contention = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c.starts_with("40"));
        if contention {
            Stop::Contention(db(e))
        } else {
            Stop::Failed(db(e))
        }
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Failed(e)
    }
}

/// How many times a transaction aborted for contention is run again.
const CONTENTION_RETRIES: u32 = 8;

/// Runs `attempt` (one transaction) until it commits, is refused, or fails otherwise; an attempt
/// aborted for contention is run again after a short pause. A refusal becomes its [`Commit`].
pub(crate) async fn transact<T, F, Fut>(mut attempt: F) -> Result<Result<T, Commit>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Stop>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(v) => return Ok(Ok(v)),
            Err(Stop::Refused(Refusal::Idempotent(r))) => {
                return Ok(Err(Commit::IdempotencyHit(r)))
            }
            Err(Stop::Refused(Refusal::Conflict)) => return Ok(Err(Commit::Conflict)),
            Err(Stop::Refused(Refusal::DuplicateReference(reference))) => {
                return Err(StoreError::DuplicateReference { reference })
            }
            Err(Stop::Contention(e)) if tries >= CONTENTION_RETRIES => return Err(e),
            Err(Stop::Contention(_)) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(2 << tries.min(6))).await;
            }
            Err(Stop::Failed(e)) => return Err(e),
        }
    }
}

/// The database's errors in the store's neutral terms: the connection and the server's own
/// trouble may pass; anything else will not.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    let retryable = matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        // Class 40 (serialization failure, deadlock) and 57P01 (the server shut down).
        .is_some_and(|c| c.starts_with("40") || c == "57P01");
    StoreError::Unavailable {
        reason: e.to_string(),
        retryable,
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> String {
    // Our own plain data types always serialize.
    serde_json::to_string(value).expect("domain values serialize to JSON")
}

pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

impl PgStore {
    /// Connects to `url`, applies the migrations this relay knows, and opens the store.
    /// `secrets_key` seals webhook secrets at rest, as with sled.
    pub async fn connect(
        url: &str,
        secrets_key: Option<SecretsKey>,
    ) -> Result<PgStore, StoreError> {
        // A transaction left open by a relay that stopped answering (paused, cut off mid-write)
        // would keep its locks, the lease rows' among them, and no other relay could take its
        // roles over: the server ends such a session after a few seconds.
        let options = url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(db)?
            .options([("idle_in_transaction_session_timeout", "4s")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options)
            .await
            .map_err(db)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable {
                reason: format!("applying the schema migrations: {e}"),
                retryable: false,
            })?;
        let store = PgStore {
            pool,
            secrets_key: secrets_key.map(Arc::new),
            wakes: Arc::default(),
            holder: holder_name().into(),
            fences: Arc::default(),
            role: None,
        };
        store.check_sealing().await?;
        Ok(store)
    }

    /// What a decision's transaction did: [`Commit::Done`], after the wake-ups it asks for, or the
    /// refusal.
    pub(crate) fn committed(&self, done: Result<invoices::Wrote, Commit>) -> Commit {
        match done {
            Ok(wrote) => {
                self.wake(wrote);
                Commit::Done
            }
            Err(refused) => refused,
        }
    }

    /// After a commit: wakes this process's dispatcher if events were marked for fan-out, and
    /// its operator if payout work was added.
    pub(crate) fn wake(&self, wrote: invoices::Wrote) {
        if wrote.fan_out {
            self.wakes.fanout.notify_one();
        }
        if wrote.payouts {
            self.wakes.payouts.notify_one();
        }
    }
}

/// A lease holder's name: the host, the process and a random part (two connects in one process
/// are two holders).
fn holder_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let nonce: u64 = rand::random();
    format!("{host}/{}/{nonce:016x}", std::process::id())
}

/// Unhardened BIP32 indexes stop below 2^31.
const MAX_DERIVATION_INDEX: i64 = 1 << 31;

impl PgStore {
    /// The next unused derivation index of `owner`'s descriptor, allocated in the database: every
    /// call, from any relay on the database, gets another index, and an index is never handed out
    /// again (not even after a crash: it is committed before it is returned).
    pub async fn allocate_derivation_index(&self, owner: &MerchantId) -> Result<u32, StoreError> {
        let index: Option<i64> = sqlx::query_scalar(
            "INSERT INTO derivation_indexes (owner, next_index) VALUES ($1, 1) \
             ON CONFLICT (owner) DO UPDATE SET next_index = derivation_indexes.next_index + 1 \
             WHERE derivation_indexes.next_index < $2 \
             RETURNING next_index - 1",
        )
        .bind(owner.as_str())
        .bind(MAX_DERIVATION_INDEX)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        index
            .and_then(|i| u32::try_from(i).ok())
            .ok_or(StoreError::Exhausted {
                what: "the descriptor's derivation indexes",
            })
    }
}

/// The hash column of a key: set only while the key is in use.
fn active_hash(key: &KeyRecord) -> Option<Vec<u8>> {
    key.is_active().then(|| key.hash.0.to_vec())
}

impl Merchants for PgStore {
    async fn insert_merchant(
        &self,
        merchant: &Merchant,
        key: &KeyRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO merchants (id, body) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        )
        .bind(merchant.id.as_str())
        .bind(encode(&self.seal_merchant(merchant)))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO api_keys (merchant_id, key_id, hash, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (merchant_id, key_id) DO UPDATE SET hash = excluded.hash, body = excluded.body",
        )
        .bind(key.merchant_id.as_str())
        .bind(&key.id)
        .bind(active_hash(key))
        .bind(encode(key))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError> {
        let row = sqlx::query("SELECT body FROM merchants WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| self.open_merchant(r.get("body"))).transpose()
    }

    async fn key_by_hash(
        &self,
        key: &ApiKeyHash,
    ) -> Result<Option<(Merchant, KeyRecord)>, StoreError> {
        let row = sqlx::query(
            "SELECT k.body AS key, m.body AS merchant FROM api_keys k \
             JOIN merchants m ON m.id = k.merchant_id WHERE k.hash = $1",
        )
        .bind(key.0.to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record: KeyRecord = decode("api key", row.get("key"))?;
        if !record.is_active() {
            return Ok(None);
        }
        Ok(Some((self.open_merchant(row.get("merchant"))?, record)))
    }

    async fn api_keys(&self, merchant: &MerchantId) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT body FROM api_keys WHERE merchant_id = $1 ORDER BY key_id")
            .bind(merchant.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| decode("api key", r.get("body")))
            .collect()
    }

    async fn insert_api_key(&self, key: &KeyRecord) -> Result<Commit, StoreError> {
        // A taken id or hash inserts nothing (every unique constraint counts).
        let done = sqlx::query(
            "INSERT INTO api_keys (merchant_id, key_id, hash, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(key.merchant_id.as_str())
        .bind(&key.id)
        .bind(active_hash(key))
        .bind(encode(key))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(if done.rows_affected() == 1 {
            Commit::Done
        } else {
            Commit::Conflict
        })
    }

    async fn replace_api_key(
        &self,
        old: &KeyRecord,
        new: &KeyRecord,
    ) -> Result<Commit, StoreError> {
        // Compare and set: only if the stored record is still `old`.
        let done = sqlx::query(
            "UPDATE api_keys SET hash = $1, body = $2 \
             WHERE merchant_id = $3 AND key_id = $4 AND body = $5",
        )
        .bind(active_hash(new))
        .bind(encode(new))
        .bind(old.merchant_id.as_str())
        .bind(&old.id)
        .bind(encode(old))
        .execute(&self.pool)
        .await;
        match done {
            Ok(d) if d.rows_affected() == 1 => Ok(Commit::Done),
            Ok(_) => Ok(Commit::Conflict),
            // The new secret's hash is another key's: refused like a stale record.
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                Ok(Commit::Conflict)
            }
            Err(e) => Err(db(e)),
        }
    }

    async fn merchant_count(&self) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM merchants")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

impl Store for PgStore {
    /// A commit is on disk when it returns (PostgreSQL's `synchronous_commit`, on by default):
    /// nothing is left to wait for.
    async fn durable(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
