//! Typed identifiers with a readable prefix (`inv_…`, `mer_…`, `evt_…`), made from entropy the
//! caller supplies so that the core stays deterministic.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new identifier from 12 random bytes (96 bits: collisions are not a concern).
            pub fn from_entropy(bytes: [u8; 12]) -> Self {
                Self(format!("{}{}", $prefix, hex::encode(bytes)))
            }

            /// Accepts only strings this type could have produced, so a malformed id from a URL
            /// never reaches the store.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                let ok = rest.len() == 24
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                ok.then(|| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(InvoiceId, "inv_");
prefixed_id!(MerchantId, "mer_");
prefixed_id!(EventId, "evt_");
prefixed_id!(LinkId, "plink_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_foreign_strings() {
        let id = InvoiceId::from_entropy([0xab; 12]);
        assert_eq!(InvoiceId::parse(id.as_str()), Some(id.clone()));
        assert!(InvoiceId::parse("inv_123").is_none());
        assert!(InvoiceId::parse(&id.as_str().replace("inv_", "mer_")).is_none());
        assert!(InvoiceId::parse("inv_ABABABABABABABABABABABAB").is_none());
        assert!(MerchantId::parse("../../etc/passwd").is_none());
    }
}

impl InvoiceId {
    /// When the id was made (unix milliseconds), as [`OrderedIds`] wrote it into its first 48
    /// bits. Ids made otherwise (random entropy) give a meaningless time.
    pub fn made_at_ms(&self) -> u64 {
        let hex = &self.0[Self::PREFIX.len()..Self::PREFIX.len() + 12];
        u64::from_str_radix(hex, 16).unwrap_or(0)
    }
}

/// Makes identifiers that sort in the order they were made: 48 bits of milliseconds, then 48
/// random bits, forced strictly above the previous one. The store lists and pages by id, so
/// "newest first" needs no separate sequence number, and the events of one change keep their order.
/// Time and randomness are the caller's.
#[derive(Debug, Default, Clone)]
pub struct OrderedIds {
    last: u128,
}

impl OrderedIds {
    pub fn next(&mut self, now_ms: u64, random: u64) -> [u8; 12] {
        let candidate =
            (u128::from(now_ms & 0xffff_ffff_ffff) << 48) | u128::from(random & 0xffff_ffff_ffff);
        let value = candidate.max(self.last + 1) & ((1u128 << 96) - 1);
        self.last = value;
        let bytes = value.to_be_bytes();
        bytes[4..].try_into().expect("16 - 4 = 12 bytes")
    }
}

#[cfg(test)]
mod ordered_tests {
    use super::*;

    #[test]
    fn an_invoice_id_tells_when_it_was_made() {
        let mut ids = OrderedIds::default();
        let id = InvoiceId::from_entropy(ids.next(1_800_000_000_123, 77));
        assert_eq!(id.made_at_ms(), 1_800_000_000_123);
    }

    #[test]
    fn ids_sort_in_creation_order_even_within_a_millisecond() {
        let mut gen = OrderedIds::default();
        let mut ids: Vec<InvoiceId> = Vec::new();
        for (ms, r) in [(5, 900), (5, 3), (5, 0), (6, 1), (6, 0), (4, 7)] {
            ids.push(InvoiceId::from_entropy(gen.next(ms, r)));
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
    }
}
