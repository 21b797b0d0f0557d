//! Which payment a rail reports, typed across crates: a card PaymentIntent, a bitcoin output, an
//! escrow deposit. It becomes a string only in storage and JSON (`pi_…`, `btc:<txid>:<vout>`,
//! `eth:0x<payment id>`), where it has always had these forms.

use alloy_primitives::B256;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A bitcoin transaction id as bitcoin shows it (the hex of the byte-reversed hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Txid(pub B256);

impl fmt::Display for Txid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for Txid {
    type Err = ParseReferenceError;

    /// 64 hex digits, any case (shown lowercase).
    fn from_str(s: &str) -> Result<Txid, ParseReferenceError> {
        let mut bytes = [0u8; 32];
        if s.len() != 64 || s.starts_with("0x") {
            return Err(ParseReferenceError(s.to_owned()));
        }
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseReferenceError(s.to_owned()))?;
        Ok(Txid(B256::from(bytes)))
    }
}

/// The escrow's id of a deposit (see [`crate::eth_payment_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentId(pub B256);

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A reference that is none of the forms a rail gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a payment reference")]
pub struct ParseReferenceError(pub String);

/// Which payment: what its rail calls it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PaymentRef {
    /// A card payment: its PaymentIntent id at the gateway (`pi_…`).
    Card(String),
    /// One output of a bitcoin transaction.
    Bitcoin { txid: Txid, vout: u32 },
    /// An escrow deposit, by its payment id (one deposit per id).
    Ethereum(PaymentId),
}

impl PaymentRef {
    /// The reference of an escrow deposit.
    pub fn eth(payment_id: B256) -> PaymentRef {
        PaymentRef::Ethereum(PaymentId(payment_id))
    }

    /// The transaction id, for a bitcoin output.
    pub fn txid(&self) -> Option<Txid> {
        match self {
            PaymentRef::Bitcoin { txid, .. } => Some(*txid),
            _ => None,
        }
    }

    /// The escrow payment id, for a deposit.
    pub fn payment_id(&self) -> Option<B256> {
        match self {
            PaymentRef::Ethereum(id) => Some(id.0),
            _ => None,
        }
    }
}

impl fmt::Display for PaymentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaymentRef::Card(intent) => f.write_str(intent),
            PaymentRef::Bitcoin { txid, vout } => write!(f, "btc:{txid}:{vout}"),
            PaymentRef::Ethereum(id) => write!(f, "eth:{id}"),
        }
    }
}

impl FromStr for PaymentRef {
    type Err = ParseReferenceError;

    fn from_str(s: &str) -> Result<PaymentRef, ParseReferenceError> {
        let bad = || ParseReferenceError(s.to_owned());
        if let Some(rest) = s.strip_prefix("btc:") {
            let (txid, vout) = rest.rsplit_once(':').ok_or_else(bad)?;
            return Ok(PaymentRef::Bitcoin {
                txid: txid.parse().map_err(|_| bad())?,
                vout: vout.parse().map_err(|_| bad())?,
            });
        }
        if let Some(id) = s.strip_prefix("eth:") {
            let id = id
                .strip_prefix("0x")
                .filter(|h| h.len() == 64)
                .and_then(|h| h.parse::<B256>().ok())
                .ok_or_else(bad)?;
            return Ok(PaymentRef::eth(id));
        }
        // A gateway's id: printable, no spaces, not empty.
        if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad());
        }
        Ok(PaymentRef::Card(s.to_owned()))
    }
}

impl Serialize for PaymentRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PaymentRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PaymentRef, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_keep_their_stored_forms_and_refuse_others() {
        let txid = "ab".repeat(32);
        let id = format!("0x{}", "cd".repeat(32));
        for s in [
            "pi_3Nabc".to_owned(),
            format!("btc:{txid}:7"),
            format!("eth:{id}"),
        ] {
            let r: PaymentRef = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<PaymentRef>(&json).unwrap(), r);
        }
        // Any case in, lowercase out: one payment has one reference.
        let upper: PaymentRef = format!("eth:0x{}", "CD".repeat(32)).parse().unwrap();
        assert_eq!(upper.to_string(), format!("eth:{id}"));
        for bad in [
            "btc:zz:0",
            "btc:ab:0",
            &format!("btc:{txid}"),
            &format!("btc:{txid}:-1"),
            "eth:0xa",
            "eth:cdcd",
            "",
            "pi with space",
        ] {
            assert!(bad.parse::<PaymentRef>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            PaymentRef::Bitcoin {
                txid: txid.parse().unwrap(),
                vout: 7
            }
            .txid()
            .map(|t| t.to_string()),
            Some(txid)
        );
    }
}
