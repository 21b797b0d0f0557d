//! Matching transaction outputs against the scripts the relay watches.
//!
//! One hash lookup per output: the cost of scanning a block grows with its outputs, not with the
//! number of watched scripts.

use bitcoin::{Block, OutPoint, Script, ScriptBuf, Transaction, Txid};
use std::collections::HashMap;

/// The watched output scripts, each with what it belongs to (an invoice).
#[derive(Debug, Clone)]
pub struct ScriptIndex<T> {
    scripts: HashMap<ScriptBuf, T>,
}

impl<T> Default for ScriptIndex<T> {
    fn default() -> Self {
        ScriptIndex {
            scripts: HashMap::new(),
        }
    }
}

/// An output paying a watched script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a, T> {
    pub outpoint: OutPoint,
    pub sat: u64,
    pub owner: &'a T,
}

impl<T> ScriptIndex<T> {
    pub fn with_capacity(n: usize) -> Self {
        ScriptIndex {
            scripts: HashMap::with_capacity(n),
        }
    }

    /// Watches `script` for `owner`; returns the previous owner if it was already watched.
    pub fn insert(&mut self, script: ScriptBuf, owner: T) -> Option<T> {
        self.scripts.insert(script, owner)
    }

    pub fn get(&self, script: &Script) -> Option<&T> {
        self.scripts.get(script)
    }

    pub fn len(&self) -> usize {
        self.scripts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }

    /// Every output of `tx` that pays a watched script. The txid (a double SHA-256 of the whole
    /// transaction, most of the cost of a scan) is computed only for a transaction that matches,
    /// unless the caller already has it.
    pub fn scan_tx<'a>(
        &'a self,
        tx: &Transaction,
        mut txid: Option<Txid>,
        found: &mut Vec<Found<'a, T>>,
    ) {
        if self.scripts.is_empty() {
            return;
        }
        for (vout, out) in tx.output.iter().enumerate() {
            if let Some(owner) = self.scripts.get(out.script_pubkey.as_script()) {
                let txid = *txid.get_or_insert_with(|| tx.compute_txid());
                found.push(Found {
                    outpoint: OutPoint {
                        txid,
                        vout: vout as u32,
                    },
                    sat: out.value.to_sat(),
                    owner,
                });
            }
        }
    }

    /// Every output of the block's transactions that pays a watched script, in block order.
    pub fn scan_block(&self, block: &Block) -> Vec<Found<'_, T>> {
        let mut found = Vec::new();
        for tx in &block.txdata {
            self.scan_tx(tx, None, &mut found);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::{absolute, transaction, Amount, TxOut};

    fn tx(outputs: &[(u8, u64)]) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![],
            output: outputs
                .iter()
                .map(|&(s, v)| TxOut {
                    value: Amount::from_sat(v),
                    script_pubkey: ScriptBuf::from_bytes(vec![0, 20, s]),
                })
                .collect(),
        }
    }

    #[test]
    fn finds_each_output_to_a_watched_script_with_its_vout() {
        let mut idx = ScriptIndex::default();
        idx.insert(ScriptBuf::from_bytes(vec![0, 20, 1]), "inv_a");
        idx.insert(ScriptBuf::from_bytes(vec![0, 20, 2]), "inv_b");
        let t = tx(&[(9, 5), (1, 1000), (2, 7), (1, 3)]);
        let mut found = Vec::new();
        idx.scan_tx(&t, None, &mut found);
        assert!(found.iter().all(|f| f.outpoint.txid == t.compute_txid()));
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.outpoint.vout, f.sat, *f.owner))
            .collect();
        assert_eq!(
            got,
            vec![(1, 1000, "inv_a"), (2, 7, "inv_b"), (3, 3, "inv_a")]
        );
    }
}
