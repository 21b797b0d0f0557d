//! The keys under which the rails find an invoice (a card PaymentIntent, a watched bitcoin script,
//! an Ethereum salt), typed across crates and turned into strings only at the storage edge.

use std::fmt;

/// A key under which a rail finds an invoice. Each belongs to one invoice: the store refuses a
/// second invoice with the same one. It becomes a string only at the storage edge ([`Lookup::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lookup {
    /// A gateway PaymentIntent id (`pi_…`).
    CardIntent(String),
    /// A watched bitcoin output script.
    BtcScript(crate::Script),
    /// An Ethereum invoice's salt, `0x`-hex lowercase: every deposit names its salt, so the watcher
    /// finds the invoice even when the deposit's other terms are wrong.
    EthSalt(String),
    /// The unguessable token of the invoice's checkout page (`/pay/{token}`).
    Checkout(String),
    /// The review of one of its payments: `<merchant id>/<review id>`, so one merchant's
    /// reviews are told apart from the key alone ([`Lookup::review`]).
    Review(String),
}

/// The kinds of [`Lookup`], for listing every key of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    CardIntent,
    BtcScript,
    EthSalt,
    Checkout,
    Review,
}

impl LookupKind {
    /// What every stored key of this kind starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            LookupKind::CardIntent => "card:",
            LookupKind::BtcScript => "btcs:",
            LookupKind::EthSalt => "eths:",
            LookupKind::Checkout => "pay:",
            LookupKind::Review => "rvw:",
        }
    }
}

impl Lookup {
    /// The lookup of review `id` (`rvw_…`) of one of `merchant`'s invoices.
    pub fn review(merchant: &crate::MerchantId, id: &str) -> Lookup {
        Lookup::Review(format!("{merchant}/{id}"))
    }

    /// The merchant and review id of a review's lookup.
    pub fn review_parts(&self) -> Option<(&str, &str)> {
        match self {
            Lookup::Review(v) => v.split_once('/'),
            _ => None,
        }
    }

    /// An Ethereum salt's lookup, whatever the case of its hex.
    pub fn eth_salt(salt: &str) -> Lookup {
        Lookup::EthSalt(salt.to_ascii_lowercase())
    }

    pub fn kind(&self) -> LookupKind {
        match self {
            Lookup::CardIntent(_) => LookupKind::CardIntent,
            Lookup::BtcScript(_) => LookupKind::BtcScript,
            Lookup::EthSalt(_) => LookupKind::EthSalt,
            Lookup::Checkout(_) => LookupKind::Checkout,
            Lookup::Review(_) => LookupKind::Review,
        }
    }

    /// The stored key: the kind's prefix, then the value (a script in hex).
    pub fn key(&self) -> String {
        let prefix = self.kind().prefix();
        match self {
            Lookup::CardIntent(v)
            | Lookup::EthSalt(v)
            | Lookup::Checkout(v)
            | Lookup::Review(v) => {
                format!("{prefix}{v}")
            }
            Lookup::BtcScript(script) => format!("{prefix}{script}"),
        }
    }

    /// A stored key back as a lookup.
    pub fn parse(key: &str) -> Option<Lookup> {
        [
            LookupKind::CardIntent,
            LookupKind::BtcScript,
            LookupKind::EthSalt,
            LookupKind::Checkout,
            LookupKind::Review,
        ]
        .into_iter()
        .find_map(|kind| {
            let value = key.strip_prefix(kind.prefix())?.to_owned();
            Some(match kind {
                LookupKind::CardIntent => Lookup::CardIntent(value),
                LookupKind::BtcScript => Lookup::BtcScript(value.parse().ok()?),
                LookupKind::EthSalt => Lookup::EthSalt(value),
                LookupKind::Checkout => Lookup::Checkout(value),
                LookupKind::Review => Lookup::Review(value),
            })
        })
    }
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_become_strings_only_at_the_edge_and_come_back() {
        for l in [
            Lookup::CardIntent("pi_1".into()),
            Lookup::BtcScript("0014ab".parse().unwrap()),
            Lookup::eth_salt("0xABcd"),
        ] {
            assert_eq!(Lookup::parse(&l.key()), Some(l.clone()));
            assert!(l.key().starts_with(l.kind().prefix()));
        }
        assert_eq!(Lookup::eth_salt("0xAB").key(), "eths:0xab");
        assert_eq!(
            Lookup::parse("btc:ab:0"),
            None,
            "a payment reference is not a lookup"
        );
    }
}
