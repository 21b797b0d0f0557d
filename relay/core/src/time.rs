//! Time as a value: the core never reads a clock.

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch, UTC. The caller supplies "now" to every decision.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn seconds(self) -> i64 {
        self.0
    }

    /// `self + secs`, saturating instead of wrapping for absurd inputs.
    pub fn plus_seconds(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs))
    }
}

/// Where "now" comes from. The binary uses the system clock; tests may pin it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}
