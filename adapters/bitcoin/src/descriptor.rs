//! Merchants' receive descriptors: validated once, then turned into one address per invoice.
//!
//! The relay holds only public keys. A descriptor must be ranged (`…/*`), so that every invoice
//! gets an address no other invoice has, and must describe addresses (not bare scripts).

use crate::BitcoinError;
use bitcoin::{Address, Network, NetworkKind, ScriptBuf};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey, Wildcard};
use miniscript::{ForEachKey, TranslatePk};
use std::str::FromStr;

/// A validated, watch-only, ranged output descriptor.
#[derive(Debug, Clone)]
pub struct ReceiveDescriptor {
    descriptor: Descriptor<DescriptorPublicKey>,
    /// The same descriptor with each extended key already derived down to its wildcard, so that
    /// an address costs one child derivation per key instead of the whole path.
    prederived: Descriptor<DescriptorPublicKey>,
    /// Main or test keys (`xpub` or `tpub`), if the descriptor uses extended keys.
    network: Option<NetworkKind>,
}

/// One derived receive address and the script it pays to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub index: u32,
    pub script_pubkey: ScriptBuf,
    pub address: Address,
}

fn invalid(reason: impl Into<String>) -> BitcoinError {
    BitcoinError::Descriptor {
        reason: reason.into(),
    }
}

impl ReceiveDescriptor {
    /// Parses and checks `text` (with or without its `#checksum`, which is verified when given).
    pub fn parse(text: &str) -> Result<ReceiveDescriptor, BitcoinError> {
        let text = text.trim();
        if text.is_empty() || text.len() > 4096 {
            return Err(invalid(
                "expected an output descriptor such as wpkh(xpub…/0/*)",
            ));
        }
        let secp = bitcoin::secp256k1::Secp256k1::signing_only();
        let (descriptor, secrets) =
            Descriptor::parse_descriptor(&secp, text).map_err(|e| invalid(e.to_string()))?;
        if !secrets.is_empty() {
            return Err(invalid(
                "it contains a private key; give the relay only the public (xpub/tpub) form",
            ));
        }
        if descriptor.is_multipath() {
            return Err(invalid(
                "multipath descriptors (<0;1>) are not supported; give the receive branch, e.g. …/0/*",
            ));
        }
        if !descriptor.has_wildcard() {
            return Err(invalid(
                "it is not ranged: end the key path with /* so each invoice gets its own address",
            ));
        }
        let mut network = None;
        let mut mixed = false;
        let mut hardened = false;
        descriptor.for_each_key(|k| {
            let kind = match k {
                DescriptorPublicKey::XPub(x) => {
                    hardened |= x.wildcard == Wildcard::Hardened
                        || x.derivation_path.into_iter().any(|c| c.is_hardened());
                    Some(x.xkey.network)
                }
                DescriptorPublicKey::MultiXPub(x) => Some(x.xkey.network),
                DescriptorPublicKey::Single(_) => None,
            };
            if let Some(kind) = kind {
                mixed |= network.is_some_and(|n| n != kind);
                network = Some(kind);
            }
            true
        });
        // Checked before deriving: miniscript panics on hardened steps below a public key.
        if hardened {
            return Err(invalid(
                "it has hardened derivation steps after the xpub, which need the private key; \
                 use an unhardened path such as …/0/*",
            ));
        }
        if mixed {
            return Err(invalid("it mixes mainnet (xpub) and test (tpub) keys"));
        }
        let prederived = descriptor
            .translate_pk(&mut Prederive(
                bitcoin::secp256k1::Secp256k1::verification_only(),
            ))
            .map_err(|e| match e {
                miniscript::TranslateErr::TranslatorErr(e) => invalid(e),
                miniscript::TranslateErr::OuterError(e) => invalid(e.to_string()),
            })?;
        let parsed = ReceiveDescriptor {
            descriptor,
            prederived,
            network,
        };
        // Hardened wildcards cannot be derived from public keys; bare scripts have no address.
        parsed.derive(0, Network::Regtest)?;
        Ok(parsed)
    }

    /// The descriptor in its canonical form, with checksum.
    pub fn to_canonical(&self) -> String {
        self.descriptor.to_string()
    }

    /// Checks that the descriptor's keys are meant for `network` (xpub for mainnet, tpub for the
    /// test networks).
    pub fn check_network(&self, network: Network) -> Result<(), BitcoinError> {
        match self.network {
            Some(kind) if kind != NetworkKind::from(network) => Err(invalid(format!(
                "its keys are for {}, but the node runs {network}",
                if kind == NetworkKind::Main {
                    "mainnet"
                } else {
                    "a test network"
                }
            ))),
            _ => Ok(()),
        }
    }

    /// The address at `index`, encoded for `network`.
    pub fn derive(&self, index: u32, network: Network) -> Result<Derived, BitcoinError> {
        Self::derive_from(&self.prederived, index, network)
    }

    fn derive_from(
        descriptor: &Descriptor<DescriptorPublicKey>,
        index: u32,
        network: Network,
    ) -> Result<Derived, BitcoinError> {
        // One shared context: miniscript's own helpers create one per call, which costs as much
        // as the derivation itself.
        static SECP: std::sync::LazyLock<
            bitcoin::secp256k1::Secp256k1<bitcoin::secp256k1::VerifyOnly>,
        > = std::sync::LazyLock::new(bitcoin::secp256k1::Secp256k1::verification_only);
        let definite = descriptor
            .at_derivation_index(index)
            .map_err(|e| invalid(e.to_string()))?
            .derived_descriptor(&SECP)
            .map_err(|e| invalid(e.to_string()))?;
        // The script is derived once and the address read from it.
        let script_pubkey = definite.script_pubkey();
        let address = Address::from_script(&script_pubkey, network)
            .map_err(|e| invalid(format!("it has no address form: {e}")))?;
        Ok(Derived {
            index,
            script_pubkey,
            address,
        })
    }
}

/// Replaces `xpub/path/*` by `xpub'/*`, where `xpub'` is the key at `path`.
struct Prederive(bitcoin::secp256k1::Secp256k1<bitcoin::secp256k1::VerifyOnly>);

impl miniscript::Translator<DescriptorPublicKey, DescriptorPublicKey, String> for Prederive {
    fn pk(&mut self, pk: &DescriptorPublicKey) -> Result<DescriptorPublicKey, String> {
        match pk {
            DescriptorPublicKey::XPub(x) if !x.derivation_path.is_empty() => {
                let xkey = x
                    .xkey
                    .derive_pub(&self.0, &x.derivation_path)
                    .map_err(|e| e.to_string())?;
                Ok(DescriptorPublicKey::XPub(
                    miniscript::descriptor::DescriptorXKey {
                        origin: None,
                        xkey,
                        derivation_path: bitcoin::bip32::DerivationPath::master(),
                        wildcard: x.wildcard,
                    },
                ))
            }
            other => Ok(other.clone()),
        }
    }

    miniscript::translate_hash_clone!(DescriptorPublicKey, DescriptorPublicKey, String);
}

impl FromStr for ReceiveDescriptor {
    type Err = BitcoinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReceiveDescriptor::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // BIP84's test vector account key (mnemonic "abandon … about"), m/84'/0'/0'.
    const ZPUB_AS_XPUB: &str = "xpub6CatWdiZiodmUeTDp8LT5or8nmbKNcuyvz7WyksVFkKB4RHwCD3XyuvPEbvqAQY3rAPshWcMLoP2fMFMKHPJ4ZeZXYVUhLv1VMrjPC7PW6V";

    /// A test-network key pair from a fixed seed: (tprv, tpub).
    fn test_keys() -> (String, String) {
        use bitcoin::bip32::{Xpriv, Xpub};
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let xprv = Xpriv::new_master(Network::Regtest, &[7u8; 32]).unwrap();
        (xprv.to_string(), Xpub::from_priv(&secp, &xprv).to_string())
    }

    #[test]
    fn bip84_vector_derives_the_published_first_address() {
        let d = ReceiveDescriptor::parse(&format!("wpkh({ZPUB_AS_XPUB}/0/*)")).unwrap();
        let a = d.derive(0, Network::Bitcoin).unwrap();
        assert_eq!(
            a.address.to_string(),
            "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
        );
        let b = d.derive(1, Network::Bitcoin).unwrap();
        assert_eq!(
            b.address.to_string(),
            "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
        );
        assert!(d.check_network(Network::Bitcoin).is_ok());
        assert!(d.check_network(Network::Regtest).is_err());
    }

    #[test]
    fn supported_kinds_give_distinct_addresses_per_index() {
        let (_, tpub) = test_keys();
        let tpub = tpub.as_str();
        for (desc, prefix) in [
            (format!("wpkh({tpub}/0/*)"), "bcrt1q"),
            (format!("sh(wpkh({tpub}/0/*))"), "2"),
            (format!("tr({tpub}/0/*)"), "bcrt1p"),
        ] {
            let d = ReceiveDescriptor::parse(&desc).unwrap();
            let a = d.derive(7, Network::Regtest).unwrap();
            let b = d.derive(8, Network::Regtest).unwrap();
            assert!(
                a.address.to_string().starts_with(prefix),
                "{desc}: {}",
                a.address
            );
            assert_ne!(a.script_pubkey, b.script_pubkey);
            // The canonical form (with checksum) parses back to the same addresses.
            let again = ReceiveDescriptor::parse(&d.to_canonical()).unwrap();
            assert_eq!(again.derive(7, Network::Regtest).unwrap(), a);
            // The pre-derived fast path gives exactly what deriving the whole path gives.
            for i in [0, 1, 7, 1000, (1 << 31) - 1] {
                assert_eq!(
                    d.derive(i, Network::Regtest).unwrap(),
                    ReceiveDescriptor::derive_from(&d.descriptor, i, Network::Regtest).unwrap()
                );
            }
        }
    }

    #[test]
    fn unusable_descriptors_are_refused_with_a_reason() {
        let (tprv, tpub) = test_keys();
        let with_secret = format!("wpkh({tprv}/0/*)");
        let cases = [
            ("", "expected an output descriptor"),
            ("wpkh(nonsense)", ""),
            (&format!("wpkh({tpub}/0/1)") as &str, "not ranged"),
            (&format!("wpkh({tpub}/0/*')"), "ardened"),
            (&format!("wpkh({tpub}/<0;1>/*)"), "multipath"),
            (&with_secret, "private key"),
            (&format!("wpkh({tpub}/0/*)#00000000"), ""),
        ];
        for (text, why) in cases {
            let err = ReceiveDescriptor::parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}
