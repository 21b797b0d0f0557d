//! [`relay_core::ReceiveAddresses`] over miniscript descriptors, for one network.

use crate::ReceiveDescriptor;
use bitcoin::Network;
use relay_core::{ReceiveAddress, ReceiveAddresses};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Derives addresses for `network`, keeping parsed descriptors for reuse.
pub struct DescriptorAddresses {
    network: Network,
    parsed: Mutex<HashMap<String, Arc<ReceiveDescriptor>>>,
}

impl DescriptorAddresses {
    pub fn new(network: Network) -> DescriptorAddresses {
        DescriptorAddresses {
            network,
            parsed: Mutex::new(HashMap::new()),
        }
    }

    pub fn network(&self) -> Network {
        self.network
    }

    fn descriptor(&self, text: &str) -> Result<Arc<ReceiveDescriptor>, String> {
        if let Some(d) = self.parsed.lock().map_err(|_| "poisoned")?.get(text) {
            return Ok(d.clone());
        }
        let d = Arc::new(ReceiveDescriptor::parse(text).map_err(|e| e.to_string())?);
        d.check_network(self.network).map_err(|e| e.to_string())?;
        let mut cache = self.parsed.lock().map_err(|_| "poisoned")?;
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(text.to_owned(), d.clone());
        Ok(d)
    }
}

impl ReceiveAddresses for DescriptorAddresses {
    fn derive(&self, descriptor: &str, index: u32) -> Result<ReceiveAddress, String> {
        let d = self.descriptor(descriptor)?;
        let derived = d.derive(index, self.network).map_err(|e| e.to_string())?;
        Ok(ReceiveAddress {
            address: derived.address.to_string(),
            script_pubkey: relay_core::Script::from_bytes(derived.script_pubkey.to_bytes()),
        })
    }

    fn script_of(&self, address: &str) -> Result<relay_core::Script, String> {
        let parsed: bitcoin::Address<bitcoin::address::NetworkUnchecked> =
            address.parse().map_err(|e| format!("{e}"))?;
        let checked = parsed.require_network(self.network).map_err(|_| {
            format!(
                "{address} is not an address of the {} network",
                self.network
            )
        })?;
        Ok(relay_core::Script::from_bytes(
            checked.script_pubkey().to_bytes(),
        ))
    }
}
