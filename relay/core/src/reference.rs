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

/// A cross-rail settlement's id, as the escrow records it: keccak256 of its invoice and the
/// payments it pays for (see [`crate::settlement_id`]), so the escrow pays one id once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SettlementId(pub B256);

impl fmt::Display for SettlementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl FromStr for SettlementId {
    type Err = ParseReferenceError;

    /// `0x` and 64 hex digits, any case (one id, however it is written).
    fn from_str(s: &str) -> Result<SettlementId, ParseReferenceError> {
        s.strip_prefix("0x")
            .filter(|h| h.len() == 64)
            .and_then(|h| h.parse::<B256>().ok())
            .map(SettlementId)
            .ok_or_else(|| ParseReferenceError(s.to_owned()))
    }
}

impl Serialize for SettlementId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SettlementId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SettlementId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An output script (a bitcoin `scriptPubKey`): what an address stands for, and what the watcher
/// matches outputs on. Hex in storage and JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Script(Vec<u8>);

impl Script {
    pub fn from_bytes(bytes: Vec<u8>) -> Script {
        Script(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl FromStr for Script {
    type Err = ParseReferenceError;

    /// Hex, not empty.
    fn from_str(s: &str) -> Result<Script, ParseReferenceError> {
        match hex::decode(s) {
            Ok(bytes) if !bytes.is_empty() => Ok(Script(bytes)),
            _ => Err(ParseReferenceError(s.to_owned())),
        }
    }
}

impl Serialize for Script {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Script {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Script, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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

/// Serde of an address as `0x`-prefixed lowercase hex (any case is read), the form the relay has
/// always stored and shown.
pub mod lower_hex {
    use alloy_primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{a:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// [`lower_hex`] for an optional address.
pub mod lower_hex_opt {
    use alloy_primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Option<Address>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.collect_str(&format_args!("{a:#x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
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
        let script: Script = "0014AB".parse().unwrap();
        assert_eq!(script.to_string(), "0014ab");
        assert!("".parse::<Script>().is_err() && "0x00".parse::<Script>().is_err());
        let sid = format!("0x{}", "Ef".repeat(32));
        let parsed: SettlementId = sid.parse().unwrap();
        assert_eq!(parsed.to_string(), sid.to_ascii_lowercase());
        assert!(
            "ef".repeat(32).parse::<SettlementId>().is_err(),
            "needs its 0x"
        );
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
