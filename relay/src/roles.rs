//! The singleton roles (see `relay_store::Role`): each background job that only one relay may run
//! at a time runs under its role's lease, on a store handle fenced by it.

use relay_store::{Role, Store};
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a relay that does not hold a role asks for it again.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// Runs the job `start` makes while this relay holds `role`'s lease, for ever: takes the lease
/// (asking again every second while another relay holds it), renews it every third of `ttl`,
/// and stops the job as soon as the lease is lost, or changed hands and came back between two
/// renewals (the job's state may be stale: it starts afresh). The job's store handle is fenced by
/// the lease, so a job that runs on after its relay lost the role (paused, cut off) writes
/// nothing. On a store only one process opens, the lease is always granted and the job runs once.
pub async fn lead<S, F, Fut>(store: S, role: Role, ttl: Duration, mut start: F)
where
    S: Store + Clone,
    F: FnMut(S) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let renew_every = ttl / 3;
    let gauge = metrics::gauge!("relay_role_held", "role" => role.as_str());
    loop {
        let token = match store.hold(role, ttl).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                tokio::time::sleep(STANDBY_POLL).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(target: "relay::roles", role = role.as_str(), error = %e, "cannot ask for the lease");
                tokio::time::sleep(STANDBY_POLL).await;
                continue;
            }
        };
        let mut held_until = Instant::now() + ttl;
        tracing::info!(target: "relay::roles", role = role.as_str(), token, "took the role");
        gauge.set(1.0);
        let mut job = AbortOnDrop(tokio::spawn(start(store.fenced(role))));
        let why = loop {
            tokio::select! {
                _ = tokio::time::sleep(renew_every) => {}
                ended = &mut job.0 => break format!("the job ended: {ended:?}"),
            }
            match store.hold(role, ttl).await {
                Ok(Some(t)) if t == token => held_until = Instant::now() + ttl,
                Ok(Some(_)) => break "the lease changed hands meanwhile".to_owned(),
                Ok(None) => break "another relay holds the lease".to_owned(),
                // The database is out of reach: the lease may still be ours until it lapses (and
                // the job's writes are refused after that anyway).
                Err(e) if Instant::now() + renew_every < held_until => {
                    tracing::warn!(target: "relay::roles", role = role.as_str(), error = %e, "cannot renew the lease");
                }
                Err(e) => break format!("the lease could not be renewed: {e}"),
            }
        };
        drop(job);
        gauge.set(0.0);
        tracing::warn!(target: "relay::roles", role = role.as_str(), reason = %why, "gave up the role");
        tokio::time::sleep(STANDBY_POLL).await;
    }
}

/// Stops the job when its leader stops: when the relay shuts down and aborts `lead`, the job
/// does not run on by itself.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
