//! The singleton roles: work only one relay may do at a time when several share a store.

use crate::StoreError;
use std::future::Future;
use std::time::Duration;

/// A role one relay plays at a time on a store several relays share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The bitcoin watcher.
    Bitcoin,
    /// The Ethereum watcher with the operator's transaction sender.
    Ethereum,
    /// The sweep that expires unpaid invoices.
    Expiry,
    /// Card reconciliation with the gateway.
    Cards,
    /// Webhook fan-out and delivery.
    Webhooks,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Bitcoin,
        Role::Ethereum,
        Role::Expiry,
        Role::Cards,
        Role::Webhooks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bitcoin => "bitcoin",
            Role::Ethereum => "ethereum",
            Role::Expiry => "expiry",
            Role::Cards => "cards",
            Role::Webhooks => "webhooks",
        }
    }
}

/// Leases of the singleton roles, with fencing.
///
/// Contract: at most one process holds a role's lease at a time, for a time-to-live it renews.
/// A handle from [`Leases::fenced`] checks, in the transaction of each of its writes, that its
/// process still holds the role under the same lease: once the lease lapsed or passed to another
/// process, every write of the old holder is refused with [`StoreError::Fenced`], however long it
/// was paused. A store only one process can open (sled) grants every role at once and fences
/// nothing.
pub trait Leases: Send + Sync + Sized + 'static {
    /// Takes or renews `role` for this process until `ttl` from now (by the store's clock), and
    /// returns the lease's token: the same while this process keeps the role, higher each time
    /// the role changes hands (so a holder sees when it lost the role and took it back between
    /// two renewals). `None`: another process holds it.
    fn hold(
        &self,
        role: Role,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    /// Gives `role` up at once, if this process holds it (a relay shutting down).
    fn release(&self, role: Role) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A handle on the same store whose writes are fenced by `role`'s lease.
    fn fenced(&self, role: Role) -> Self;
}
