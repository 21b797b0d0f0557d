//! Leases with fencing tokens, for the roles only one relay may play at a time.
//!
//! A relay takes a role's lease for a time-to-live and renews it while it plays the role. When a
//! lease expires (its holder died, or stalled), another relay takes it, and the role's token goes
//! up by one. Every write of the role starts with [`PgStore::begin_fenced`], which checks, inside
//! the write's own transaction, that its token still holds the lease, and locks the lease row
//! until the transaction ends: the lease cannot change hands while a fenced write is under way,
//! and a holder that lost its lease writes nothing, however long it was paused.

use crate::{db, PgStore};
use relay_store::{Leases, Role, StoreError};
use sqlx::postgres::Postgres;
use sqlx::{PgConnection, Transaction};
use std::time::Duration;

/// A held lease: the role, who holds it, and the token its writes are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub role: String,
    pub holder: String,
    pub token: i64,
}

impl PgStore {
    /// Takes or renews `role`'s lease for `holder` until `ttl` from now (the database's clock).
    /// `None`: another holder has it and it has not expired. Renewing a lease still held keeps
    /// its token; taking it (first, after another holder, or after it lapsed) raises the token.
    pub async fn acquire_lease(
        &self,
        role: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        // Never wait long on the lease row (a writer of the old holder may hold it): the caller
        // asks again in a moment.
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (role, holder, token, expires_at) \
             VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond') \
             ON CONFLICT (role) DO UPDATE SET \
                 holder = excluded.holder, \
                 token = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > now() \
                              THEN leases.token ELSE leases.token + 1 END, \
                 expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= now() \
             RETURNING token",
        )
        .bind(role)
        .bind(holder)
        .bind(ttl_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(token.map(|token| Fence {
            role: role.to_owned(),
            holder: holder.to_owned(),
            token,
        }))
    }

    /// Gives the lease up at once (a relay shutting down), if `fence` still holds it.
    pub async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE leases SET expires_at = now() \
             WHERE role = $1 AND holder = $2 AND token = $3",
        )
        .bind(&fence.role)
        .bind(&fence.holder)
        .bind(fence.token)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Begins a write of `fence`'s role: a transaction in which the lease is checked and locked.
    /// `None`: the lease is no longer `fence`'s (expired, or taken by another holder); nothing
    /// may be written.
    pub async fn begin_fenced(
        &self,
        fence: &Fence,
    ) -> Result<Option<Transaction<'static, Postgres>>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !fence_holds(&mut tx, fence, Lock::Exclusive).await? {
            tx.rollback().await.map_err(db)?;
            return Ok(None);
        }
        Ok(Some(tx))
    }

    /// Begins a write: a transaction, in which a handle fenced by a role (see
    /// [`Leases::fenced`]) first checks and share-locks its lease, so the lease cannot change
    /// hands until the write commits. [`StoreError::Fenced`] when this process does not hold it.
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(role) = self.role {
            let fence = self
                .fences
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&role)
                .cloned();
            let held = match &fence {
                Some(f) => fence_holds(&mut tx, f, Lock::Shared).await?,
                None => false,
            };
            if !held {
                tx.rollback().await.map_err(db)?;
                return Err(StoreError::Fenced {
                    role: role.as_str(),
                });
            }
        }
        Ok(tx)
    }
}

/// How a fenced write locks its lease row: alone (the lease tests), or shared with the role's
/// other writes (the relay's own, which may run side by side).
#[derive(Clone, Copy)]
enum Lock {
    Exclusive,
    Shared,
}

/// Whether `fence` still holds its lease, checked in the caller's transaction (and the lease row
/// locked until it ends).
async fn fence_holds(
    conn: &mut PgConnection,
    fence: &Fence,
    lock: Lock,
) -> Result<bool, StoreError> {
    let query = match lock {
        Lock::Exclusive => {
            "SELECT token FROM leases \
             WHERE role = $1 AND holder = $2 AND token = $3 AND expires_at > now() FOR UPDATE"
        }
        Lock::Shared => {
            "SELECT token FROM leases \
             WHERE role = $1 AND holder = $2 AND token = $3 AND expires_at > now() FOR SHARE"
        }
    };
    let held: Option<i64> = sqlx::query_scalar(query)
        .bind(&fence.role)
        .bind(&fence.holder)
        .bind(fence.token)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    Ok(held.is_some())
}

impl Leases for PgStore {
    async fn hold(&self, role: Role, ttl: Duration) -> Result<Option<u64>, StoreError> {
        let fence = self.acquire_lease(role.as_str(), &self.holder, ttl).await?;
        let token = fence.as_ref().map(|f| u64::try_from(f.token).unwrap_or(0));
        let mut fences = self
            .fences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fence {
            Some(f) => fences.insert(role, f),
            None => fences.remove(&role),
        };
        Ok(token)
    }

    async fn release(&self, role: Role) -> Result<(), StoreError> {
        let fence = self
            .fences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&role);
        match fence {
            Some(f) => self.release_lease(&f).await,
            None => Ok(()),
        }
    }

    fn fenced(&self, role: Role) -> PgStore {
        PgStore {
            role: Some(role),
            ..self.clone()
        }
    }
}
