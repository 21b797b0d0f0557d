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
