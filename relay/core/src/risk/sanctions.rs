//! Sanctions lists: addresses per asset, compared by their format.

use super::normalize_address;
use std::collections::{BTreeMap, HashSet};

/// Addresses on sanctions lists, one list per asset (the OFAC SDN digital currency address lists:
/// one address per line).
#[derive(Debug, Clone, Default)]
pub struct Sanctions {
    lists: BTreeMap<String, HashSet<String>>,
}

impl Sanctions {
    /// Parses one list of `asset` in the published format: an address per line; blank lines and
    /// lines starting with `#` are skipped.
    pub fn add_list(&mut self, asset: &str, text: &str) {
        let list = self.lists.entry(asset.to_ascii_uppercase()).or_default();
        for line in text.lines() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                list.insert(normalize_address(line));
            }
        }
    }

    /// The asset of the first list `address` is on.
    pub fn hit(&self, address: &str) -> Option<&str> {
        let a = normalize_address(address);
        self.lists
            .iter()
            .find(|(_, l)| l.contains(&a))
            .map(|(asset, _)| asset.as_str())
    }

    /// Each list's asset and how many addresses it holds.
    pub fn sizes(&self) -> Vec<(String, usize)> {
        self.lists
            .iter()
            .map(|(a, l)| (a.clone(), l.len()))
            .collect()
    }
}
