//! The watcher's logic against an in-memory chain (the real-node tests are in the e2e suite).

use super::*;
use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{
    absolute, transaction, Amount, CompactTarget, Network, Sequence, TxIn, TxMerkleNode, TxOut,
    Witness,
};
use std::sync::Mutex;

#[derive(Default)]
struct FakeNode {
    chain: Mutex<Vec<Block>>,
    mempool: Mutex<Vec<Transaction>>,
}

impl FakeNode {
    fn new() -> FakeNode {
        let node = FakeNode::default();
        node.mine(vec![], 0);
        node
    }

    /// Appends a block on top of the block at `parent` height (dropping anything above it).
    fn mine_on(&self, parent: Option<usize>, txs: Vec<Transaction>, salt: u32) -> BlockHash {
        let mut chain = self.chain.lock().unwrap();
        if let Some(p) = parent {
            chain.truncate(p + 1);
        }
        let prev = chain
            .last()
            .map_or(BlockHash::all_zeros(), |b| b.block_hash());
        let height = chain.len() as u32;
        let coinbase = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(
                    [height.to_le_bytes(), salt.to_le_bytes()].concat(),
                ),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(50),
                script_pubkey: ScriptBuf::new(),
            }],
        };
        let mut txdata = vec![coinbase];
        txdata.extend(txs);
        let block = Block {
            header: Header {
                version: Version::TWO,
                prev_blockhash: prev,
                merkle_root: TxMerkleNode::all_zeros(),
                time: 1_700_000_000 + height,
                bits: CompactTarget::from_consensus(0x207fffff),
                nonce: salt,
            },
            txdata,
        };
        let hash = block.block_hash();
        let mined: HashSet<Txid> = block.txdata.iter().map(|t| t.compute_txid()).collect();
        chain.push(block);
        self.mempool
            .lock()
            .unwrap()
            .retain(|t| !mined.contains(&t.compute_txid()));
        hash
    }

    fn mine(&self, txs: Vec<Transaction>, salt: u32) -> BlockHash {
        self.mine_on(None, txs, salt)
    }

    fn height(&self) -> usize {
        self.chain.lock().unwrap().len() - 1
    }
}

impl BlockSource for FakeNode {
    async fn network(&self) -> Result<Network, BitcoinError> {
        Ok(Network::Regtest)
    }
    async fn tip_height(&self) -> Result<u32, BitcoinError> {
        Ok(self.height() as u32)
    }
    async fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, BitcoinError> {
        Ok(self
            .chain
            .lock()
            .unwrap()
            .get(height as usize)
            .map(Block::block_hash))
    }
    async fn block(&self, hash: &BlockHash) -> Result<Block, BitcoinError> {
        let chain = self.chain.lock().unwrap();
        Ok(chain
            .iter()
            .find(|b| b.block_hash() == *hash)
            .unwrap()
            .clone())
    }
    async fn mempool(&self) -> Result<Vec<Txid>, BitcoinError> {
        Ok(self
            .mempool
            .lock()
            .unwrap()
            .iter()
            .map(Transaction::compute_txid)
            .collect())
    }
    async fn transaction(&self, txid: &Txid) -> Result<Option<Transaction>, BitcoinError> {
        Ok(self
            .mempool
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.compute_txid() == *txid)
            .cloned())
    }
}

fn script(n: u8) -> ScriptBuf {
    ScriptBuf::from_bytes(vec![0, 20, n, n, n])
}

fn invoice(n: u8) -> InvoiceId {
    InvoiceId::from_entropy([n; 12])
}

/// A transaction spending `(funding, vout)` and paying `sat` to each script in `to`.
fn pay(funding: u8, to: &[(u8, u64)]) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array([funding; 32]),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: to
            .iter()
            .map(|&(s, sat)| TxOut {
                value: Amount::from_sat(sat),
                script_pubkey: script(s),
            })
            .collect(),
    }
}

fn no_feed() -> impl FnMut() -> Vec<(ScriptBuf, WatchTarget)> + Send {
    Vec::new
}

fn watcher() -> Watcher {
    let mut w = Watcher::new(
        WatcherConfig {
            window: 10,
            ..WatcherConfig::default()
        },
        ChainCursor::default(),
        [],
    );
    w.watch(script(1), invoice(1));
    w.watch(script(2), invoice(2));
    w
}

/// Polls blocks until the watcher is at the tip; all observations in order.
async fn sync(w: &mut Watcher, node: &FakeNode) -> Vec<Observation> {
    let mut out = Vec::new();
    while let Some(u) = w.poll_blocks(node, &mut no_feed()).await.unwrap() {
        out.extend(u.observations);
    }
    out
}

fn depths(obs: &[Observation]) -> Vec<(u8, u32)> {
    obs.iter()
        .filter_map(|o| match o {
            Observation::Seen {
                target,
                confirmations,
                ..
            } => Some((
                (0..=9)
                    .find(|n| WatchTarget::Invoice(invoice(*n)) == *target)
                    .unwrap(),
                *confirmations,
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn mempool_then_block_then_depth_up_to_the_horizon() {
    let node = FakeNode::new();
    let mut w = watcher();
    assert!(sync(&mut w, &node).await.is_empty());
    let tx = pay(9, &[(1, 1000), (7, 5)]);
    node.mempool.lock().unwrap().push(tx.clone());
    let u = w.poll_mempool(&node, &mut no_feed()).await.unwrap();
    assert_eq!(u.observations.len(), 1);
    assert!(matches!(
        &u.observations[0],
        Observation::Seen {
            sat: 1000,
            confirmations: 0,
            block_time: None,
            ..
        }
    ));
    // Polling again reports nothing new.
    assert!(w
        .poll_mempool(&node, &mut no_feed())
        .await
        .unwrap()
        .observations
        .is_empty());
    node.mine(vec![tx], 0);
    let mut all = Vec::new();
    for _ in 0..9 {
        all.extend(sync(&mut w, &node).await);
        node.mine(vec![], 0);
    }
    let got: Vec<u32> = all
        .iter()
        .map(|o| match o {
            Observation::Seen {
                confirmations,
                block_time,
                ..
            } => {
                assert!(block_time.is_some());
                *confirmations
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![1, 2, 3, 4, 5, 6],
        "depth is reported up to the horizon, once each"
    );
}

#[tokio::test]
async fn a_reorg_that_drops_the_payment_reverts_it_and_one_that_keeps_it_does_not() {
    let node = FakeNode::new();
    let mut w = watcher();
    sync(&mut w, &node).await;
    let fork = node.height();
    let tx = pay(9, &[(1, 1000)]);
    node.mine(vec![tx.clone()], 0);
    assert_eq!(depths(&sync(&mut w, &node).await), vec![(1, 1)]);

    // A competing branch of two blocks without it: reverted.
    node.mine_on(Some(fork), vec![], 1);
    node.mine(vec![], 1);
    let obs = sync(&mut w, &node).await;
    assert!(
        matches!(obs.as_slice(), [Observation::Reverted { .. }]),
        "{obs:?}"
    );
    assert!(matches!(
        w.tracked().values().next().unwrap().state,
        TrackedState::Reverted { .. }
    ));

    // A third branch re-includes it: seen again at its new depth, and nothing reverted.
    node.mine_on(Some(fork), vec![], 2);
    node.mine(vec![tx.clone()], 2);
    node.mine(vec![], 2);
    let obs = sync(&mut w, &node).await;
    assert_eq!(depths(&obs), vec![(1, 2)]);
    assert_eq!(obs.len(), 1, "{obs:?}");

    // A 1-block reorg whose new block holds the same payment: no revert reported at all.
    let below_tip = node.height() - 1;
    node.mine_on(Some(below_tip - 1), vec![tx], 3);
    node.mine(vec![], 3);
    node.mine(vec![], 3);
    let obs = sync(&mut w, &node).await;
    assert!(
        obs.iter().all(|o| matches!(o, Observation::Seen { .. })),
        "{obs:?}"
    );
    assert_eq!(depths(&obs), vec![(1, 3)]);
}

#[tokio::test]
async fn a_conflicting_spend_replaces_a_mempool_payment() {
    let node = FakeNode::new();
    let mut w = watcher();
    sync(&mut w, &node).await;
    node.mempool.lock().unwrap().push(pay(9, &[(1, 1000)]));
    w.poll_mempool(&node, &mut no_feed()).await.unwrap();
    // The payer double-spends the same coin to somewhere else, and it is mined.
    let mut other = pay(9, &[(8, 990)]);
    other.lock_time = absolute::LockTime::from_consensus(1);
    node.mempool.lock().unwrap().clear();
    node.mine(vec![other], 0);
    let obs = sync(&mut w, &node).await;
    assert!(
        matches!(obs.as_slice(), [Observation::Replaced { .. }]),
        "{obs:?}"
    );
    assert!(w.tracked().is_empty());
}

#[tokio::test]
async fn restarting_from_the_stored_step_reports_nothing_twice() {
    let node = FakeNode::new();
    let mut w = watcher();
    let mut stored_cursor = ChainCursor::default();
    let mut stored: BTreeMap<OutPoint, Tracked> = BTreeMap::new();
    let mut store = |u: &Update| {
        stored_cursor = u.cursor.clone();
        for op in &u.delete {
            stored.remove(op);
        }
        for (op, t) in &u.put {
            stored.insert(*op, t.clone());
        }
    };
    while let Some(u) = w.poll_blocks(&node, &mut no_feed()).await.unwrap() {
        store(&u);
    }
    node.mine(vec![pay(9, &[(1, 1000), (2, 2000)])], 0);
    node.mine(vec![], 0);
    let mut first = Vec::new();
    while let Some(u) = w.poll_blocks(&node, &mut no_feed()).await.unwrap() {
        store(&u);
        first.extend(u.observations);
    }
    // A new watcher built from what was stored carries on from there.
    let mut w2 = Watcher::new(w.config.clone(), stored_cursor.clone(), stored.clone());
    w2.watch(script(1), invoice(1));
    w2.watch(script(2), invoice(2));
    assert!(w2
        .poll_blocks(&node, &mut no_feed())
        .await
        .unwrap()
        .is_none());
    node.mine(vec![], 0);
    let next = sync(&mut w2, &node).await;
    assert_eq!(depths(&next), vec![(1, 3), (2, 3)]);
    assert_eq!(depths(&first), vec![(1, 1), (2, 1), (1, 2), (2, 2)]);
}

#[tokio::test]
async fn scripts_fed_after_the_block_was_read_are_still_matched() {
    let node = FakeNode::new();
    let mut w = Watcher::new(WatcherConfig::default(), ChainCursor::default(), []);
    sync(&mut w, &node).await;
    node.mine(vec![pay(9, &[(5, 7000)])], 0);
    let mut feed = || vec![(script(5), WatchTarget::Invoice(invoice(5)))];
    let u = w.poll_blocks(&node, &mut feed).await.unwrap().unwrap();
    assert_eq!(depths(&u.observations), vec![(5, 1)]);
}

#[tokio::test]
async fn dust_outputs_are_counted_not_tracked() {
    let node = FakeNode::new();
    let mut w = Watcher::new(WatcherConfig::default(), ChainCursor::default(), []);
    w.watch(script(5), invoice(5));
    w.watch(script(6), invoice(6));
    sync(&mut w, &node).await;
    let mut outputs: Vec<(u8, u64)> = (0..500).map(|_| (5, 600)).collect();
    outputs.push((6, 1000));
    node.mine(vec![pay(9, &outputs)], 0);
    let u = w.poll_blocks(&node, &mut no_feed()).await.unwrap().unwrap();
    assert_eq!(u.dust_ignored, 500);
    assert_eq!(depths(&u.observations), vec![(6, 1)]);
    assert_eq!(w.tracked().len(), 1);
}

#[tokio::test]
async fn a_node_midway_through_a_reorg_is_given_time_before_anything_is_reverted() {
    let node = FakeNode::new();
    let mut w = watcher();
    sync(&mut w, &node).await;
    let fork = node.height();
    let tx = pay(9, &[(1, 1000)]);
    node.mine(vec![tx.clone()], 0);
    sync(&mut w, &node).await;
    // The node has disconnected our block but not yet connected the new branch.
    node.chain.lock().unwrap().truncate(fork + 1);
    for _ in 0..3 {
        assert!(w
            .poll_blocks(&node, &mut no_feed())
            .await
            .unwrap()
            .is_none());
    }
    // It finishes, and the new branch keeps the payment: nothing was ever reverted.
    node.mine(vec![tx], 5);
    node.mine(vec![], 5);
    let obs = sync(&mut w, &node).await;
    assert_eq!(depths(&obs), vec![(1, 2)]);
    assert!(
        obs.iter().all(|o| matches!(o, Observation::Seen { .. })),
        "{obs:?}"
    );
}

#[test]
fn targets_are_stored_as_strings_and_old_records_still_load() {
    for target in [
        WatchTarget::Invoice(invoice(3)),
        WatchTarget::RefundTo(script(4)),
    ] {
        assert_eq!(WatchTarget::parse(&target.key()), Some(target.clone()));
    }
    assert!(WatchTarget::RefundTo(script(4))
        .key()
        .starts_with("refund:"));
    assert_eq!(WatchTarget::parse("refund:zz"), None);
    // A record written before targets were typed names its invoice under `invoice`.
    let old = serde_json::json!({
        "invoice": invoice(3).as_str(),
        "sat": 5_000,
        "state": "mempool",
        "since": 100,
        "spends": [],
        "reported": 0,
    });
    let t: Tracked = serde_json::from_value(old).unwrap();
    assert_eq!(t.target, WatchTarget::Invoice(invoice(3)));
    let again: Tracked = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
    assert_eq!(again, t);
}
