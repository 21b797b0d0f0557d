//! Versioned value encoding: a one-byte format version, then JSON. A reader refuses a version it
//! does not know instead of misreading it, so the format can evolve with explicit migrations.

use crate::StoreError;
use serde::{de::DeserializeOwned, Serialize};

pub(crate) const FORMAT_V1: u8 = 1;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.push(FORMAT_V1);
    // Serializing our own plain data types to JSON cannot fail (no maps with non-string keys).
    serde_json::to_writer(&mut out, value).expect("domain values serialize to JSON");
    out
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => serde_json::from_slice(rest).map_err(|e| StoreError::Corrupt {
            what,
            reason: e.to_string(),
        }),
        Some((v, _)) => Err(StoreError::Corrupt {
            what,
            reason: format!("unknown format version {v}"),
        }),
        None => Err(StoreError::Corrupt {
            what,
            reason: "empty value".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_versions() {
        let mut bytes = encode(&42u32);
        assert_eq!(decode::<u32>("n", &bytes).unwrap(), 42);
        bytes[0] = 9;
        assert!(decode::<u32>("n", &bytes).is_err());
        assert!(decode::<u32>("n", &[]).is_err());
    }
}
