//! Following the chain: which watched outputs are in which block, how deep they are, and what a
//! reorg or a conflicting spend undid.
//!
//! The [`Watcher`] remembers the last `window` blocks as (height, hash) and every payment it still
//! tracks (in the mempool, in a recent block, or reverted). Each poll returns an [`Update`]: the
//! observations for the caller to apply to invoices, and the watcher's new cursor and tracking
//! records, which the caller stores in the same transaction as the invoices. After a crash the
//! watcher is rebuilt from what was stored and resumes from that cursor; observations are
//! idempotent, so a step redone after a crash changes nothing twice.
//!
//! A reorg is handled in one update: payments in orphaned blocks are reverted and the new branch is
//! scanned up to the node's tip, so a payment that the new branch re-includes is reported as seen
//! (at its new depth) and never as reverted.

use crate::payer::payer_scripts;
use crate::rpc::BlockSource;
use crate::scan::{Found, ScriptIndex};
use crate::BitcoinError;
use bitcoin::{Block, BlockHash, OutPoint, ScriptBuf, Transaction, Txid};
use relay_core::InvoiceId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// What a watched script is watched for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchTarget {
    /// Payments to an invoice's address.
    Invoice(InvoiceId),
    /// Payments to a refund's destination: a payer's address that one or more merchants owe a
    /// refund (the caller knows which refunds).
    RefundTo(ScriptBuf),
}

impl From<InvoiceId> for WatchTarget {
    fn from(id: InvoiceId) -> WatchTarget {
        WatchTarget::Invoice(id)
    }
}

impl WatchTarget {
    /// The target as stored: the invoice id, or `refund:` and the script's hex.
    pub fn key(&self) -> String {
        match self {
            WatchTarget::Invoice(id) => id.as_str().to_owned(),
            WatchTarget::RefundTo(script) => format!("refund:{}", script.to_hex_string()),
        }
    }

    /// A stored target back (see [`WatchTarget::key`]).
    pub fn parse(key: &str) -> Option<WatchTarget> {
        match key.strip_prefix("refund:") {
            Some(hex) => ScriptBuf::from_hex(hex).ok().map(WatchTarget::RefundTo),
            None => InvoiceId::parse(key).map(WatchTarget::Invoice),
        }
    }

    /// The invoice, for an invoice's address.
    pub fn invoice(&self) -> Option<&InvoiceId> {
        match self {
            WatchTarget::Invoice(id) => Some(id),
            WatchTarget::RefundTo(_) => None,
        }
    }
}

impl Serialize for WatchTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.key())
    }
}

impl<'de> Deserialize<'de> for WatchTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WatchTarget, D::Error> {
        let key = String::deserialize(d)?;
        WatchTarget::parse(&key)
            .ok_or_else(|| serde::de::Error::custom(format!("{key:?} is not a watch target")))
    }
}

/// How the watcher follows the chain.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// Blocks remembered for reorg detection. A payment deeper than this is final and no longer
    /// tracked.
    pub window: usize,
    /// Confirmations after which a payment's depth is no longer reported (final for every policy).
    pub horizon: u32,
    /// Most new blocks connected in one update while catching up.
    pub batch: u32,
    /// Where to start on a fresh store: `None` is the node's tip at first start.
    pub start_height: Option<u32>,
    /// Blocks after which a payment still unconfirmed (dropped from mempools) stops being tracked.
    pub mempool_expiry_blocks: u32,
    /// Polls to wait when the node's best chain looks no longer than ours but forks from it: a
    /// node switching branches disconnects before it connects, and answers in between would make
    /// a payment the new branch keeps look reverted for a moment.
    pub reorg_settle_polls: u32,
    /// Outputs below this many satoshis are not payments: they are counted
    /// ([`Update::dust_ignored`]) and never tracked or credited, so a flood of dust to an
    /// invoice address costs the relay nothing.
    pub min_sat: u64,
}

/// The smallest output credited by default: above the network's dust limits (546 sat for the
/// largest standard output), so that dust floods are ignored.
pub const DEFAULT_MIN_SAT: u64 = 1000;

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            window: 144,
            horizon: 6,
            batch: 1,
            start_height: None,
            mempool_expiry_blocks: 2016,
            reorg_settle_polls: 3,
            min_sat: DEFAULT_MIN_SAT,
        }
    }
}

/// The recent best chain as the watcher last stored it, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCursor {
    pub blocks: Vec<(u32, BlockHash)>,
}

impl ChainCursor {
    pub fn tip(&self) -> Option<(u32, BlockHash)> {
        self.blocks.last().copied()
    }
}

/// Where a tracked payment is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TrackedState {
    /// In the node's mempool since the chain was at `since` (height).
    Mempool { since: u32 },
    /// In the best chain.
    Block {
        height: u32,
        hash: BlockHash,
        /// The block header's time (unix seconds).
        time: u32,
    },
    /// Its block was orphaned when the chain was at `since`; it may come back.
    Reverted { since: u32 },
}

/// A payment the watcher follows until it is final or gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    /// Records from before targets were typed name it `invoice` (a refund address under a
    /// stand-in invoice id, which the caller maps back when it loads them).
    #[serde(alias = "invoice")]
    pub target: WatchTarget,
    pub sat: u64,
    #[serde(flatten)]
    pub state: TrackedState,
    /// What the paying transaction spends: another transaction spending any of it is a conflict.
    pub spends: Vec<OutPoint>,
    /// The depth last reported (capped at the horizon); `None` before the first report.
    pub reported: Option<u32>,
    /// The output scripts the paying transaction's inputs spent from, where the inputs show them
    /// (P2WPKH, P2PKH and P2SH-P2WPKH spends): who paid, as far as the chain tells.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payer: Vec<ScriptBuf>,
}

/// What the chain says about one payment output. The caller turns it into an invoice input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Paid, with `confirmations` (0: in the mempool). `block_time` is the time of its block.
    Seen {
        target: WatchTarget,
        outpoint: OutPoint,
        sat: u64,
        confirmations: u32,
        block_time: Option<u32>,
    },
    /// Its block left the best chain, and the new branch does not contain it (yet).
    Reverted {
        target: WatchTarget,
        outpoint: OutPoint,
    },
    /// A conflicting transaction (a replacement, a double spend) took its place.
    Replaced {
        target: WatchTarget,
        outpoint: OutPoint,
    },
}

impl Observation {
    pub fn outpoint(&self) -> OutPoint {
        match self {
            Observation::Seen { outpoint, .. }
            | Observation::Reverted { outpoint, .. }
            | Observation::Replaced { outpoint, .. } => *outpoint,
        }
    }

    pub fn target(&self) -> &WatchTarget {
        match self {
            Observation::Seen { target, .. }
            | Observation::Reverted { target, .. }
            | Observation::Replaced { target, .. } => target,
        }
    }
}

/// One step of the watcher: apply the observations, then store the rest with them atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub observations: Vec<Observation>,
    pub cursor: ChainCursor,
    pub put: Vec<(OutPoint, Tracked)>,
    pub delete: Vec<OutPoint>,
    /// Blocks connected by this step (for metrics and logs).
    pub blocks_connected: u32,
    /// Blocks disconnected by a reorg in this step.
    pub blocks_disconnected: u32,
    /// Outputs to watched scripts below the minimum, ignored in this step.
    pub dust_ignored: u64,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        self.observations.is_empty() && self.put.is_empty() && self.delete.is_empty()
    }
}

/// Scripts to start watching, fetched by the watcher after it read a block or the mempool and
/// before it scans them: an invoice stored before the payer could see its address is therefore
/// always matched.
pub trait ScriptFeed: Send {
    fn drain(&mut self) -> Vec<(ScriptBuf, WatchTarget)>;
}

impl<F: FnMut() -> Vec<(ScriptBuf, WatchTarget)> + Send> ScriptFeed for F {
    fn drain(&mut self) -> Vec<(ScriptBuf, WatchTarget)> {
        self()
    }
}

/// Follows one node's best chain and mempool for the watched scripts.
pub struct Watcher {
    config: WatcherConfig,
    cursor: ChainCursor,
    tracked: BTreeMap<OutPoint, Tracked>,
    /// Spent outpoint → tracked payments whose transaction spends it.
    spent_by: HashMap<OutPoint, Vec<OutPoint>>,
    index: ScriptIndex<WatchTarget>,
    /// Mempool transactions already looked at (not persisted: rescanned after a restart).
    mempool_seen: HashSet<Txid>,
    /// Tracking records changed by the step being built.
    dirty: BTreeSet<OutPoint>,
    /// Polls spent waiting for a reorg in progress to finish (see `reorg_settle_polls`).
    settling: u32,
}

impl Watcher {
    /// A watcher resuming from a stored cursor and tracking records (empty on first start).
    pub fn new(
        config: WatcherConfig,
        cursor: ChainCursor,
        tracked: impl IntoIterator<Item = (OutPoint, Tracked)>,
    ) -> Watcher {
        let mut w = Watcher {
            config,
            cursor,
            tracked: BTreeMap::new(),
            spent_by: HashMap::new(),
            index: ScriptIndex::default(),
            mempool_seen: HashSet::new(),
            dirty: BTreeSet::new(),
            settling: 0,
        };
        for (op, t) in tracked {
            w.track(op, t);
        }
        w
    }

    /// Starts watching `script` for `target` (an invoice id is an invoice's target).
    pub fn watch(&mut self, script: ScriptBuf, target: impl Into<WatchTarget>) {
        self.index.insert(script, target.into());
    }

    pub fn watched(&self) -> usize {
        self.index.len()
    }

    pub fn cursor(&self) -> &ChainCursor {
        &self.cursor
    }

    pub fn tracked(&self) -> &BTreeMap<OutPoint, Tracked> {
        &self.tracked
    }

    fn track(&mut self, op: OutPoint, t: Tracked) {
        if let Some(old) = self.tracked.get(&op) {
            if old.spends != t.spends {
                self.unlink(op);
            }
        }
        for s in &t.spends {
            let v = self.spent_by.entry(*s).or_default();
            if !v.contains(&op) {
                v.push(op);
            }
        }
        self.tracked.insert(op, t);
    }

    fn unlink(&mut self, op: OutPoint) {
        let Some(t) = self.tracked.get(&op) else {
            return;
        };
        for s in &t.spends {
            if let Some(v) = self.spent_by.get_mut(s) {
                v.retain(|o| *o != op);
                if v.is_empty() {
                    self.spent_by.remove(s);
                }
            }
        }
    }

    fn untrack(&mut self, op: OutPoint) {
        self.unlink(op);
        if self.tracked.remove(&op).is_some() {
            self.dirty.insert(op);
        }
    }

    fn put(&mut self, op: OutPoint, t: Tracked) {
        self.track(op, t);
        self.dirty.insert(op);
    }

    /// Completes a step: the records it changed and the cursor.
    fn finish(&mut self, mut update: Update) -> Update {
        for op in std::mem::take(&mut self.dirty) {
            match self.tracked.get(&op) {
                Some(t) => update.put.push((op, t.clone())),
                None => update.delete.push(op),
            }
        }
        update.cursor = self.cursor.clone();
        update
    }

    /// The outputs of `tx` paying watched scripts, owned (so the caller may change `self`), less
    /// the dust (counted in `update`).
    fn matches(
        &self,
        tx: &Transaction,
        txid: Option<Txid>,
        update: &mut Update,
    ) -> Vec<(OutPoint, u64, WatchTarget)> {
        let mut found = Vec::new();
        self.index.scan_tx(tx, txid, &mut found);
        let all = found.len();
        let kept: Vec<_> = found
            .into_iter()
            .filter(|f: &Found<'_, WatchTarget>| f.sat >= self.config.min_sat)
            .map(|f| (f.outpoint, f.sat, f.owner.clone()))
            .collect();
        update.dust_ignored += (all - kept.len()) as u64;
        kept
    }

    fn tip_height(&self) -> u32 {
        self.cursor.tip().map_or(0, |(h, _)| h)
    }

    /// Reads new blocks. `None` when the watcher is at the node's tip; otherwise one step: a reorg
    /// (disconnect, then the new branch up to the tip) or up to `batch` new blocks.
    pub async fn poll_blocks<S: BlockSource>(
        &mut self,
        source: &S,
        feed: &mut dyn ScriptFeed,
    ) -> Result<Option<Update>, BitcoinError> {
        let tip = source.tip_height().await?;
        let Some((height, hash)) = self.cursor.tip() else {
            let start = self.config.start_height.unwrap_or(tip).min(tip);
            let hash = Self::hash_at(source, start).await?;
            self.cursor.blocks.push((start, hash));
            return Ok(Some(Update {
                cursor: self.cursor.clone(),
                ..Update::default()
            }));
        };
        // Read everything first: an error leaves the watcher as it was.
        let node_hash = source.block_hash(height).await?;
        let reorg = node_hash != Some(hash);
        if reorg && tip <= height && self.settling < self.config.reorg_settle_polls {
            self.settling += 1;
            return Ok(None);
        }
        self.settling = 0;
        let (fork, rebase) = if reorg {
            self.find_fork(source).await?
        } else if tip <= height {
            return Ok(None);
        } else {
            (height, None)
        };
        let to = if reorg {
            tip
        } else {
            tip.min(height.saturating_add(self.config.batch.max(1)))
        };
        let mut blocks = Vec::new();
        for h in fork + 1..=to {
            let Some(hash) = source.block_hash(h).await? else {
                break; // the node's tip moved down meanwhile; the next poll sees the reorg
            };
            blocks.push((h, source.block(&hash).await?));
        }
        for (w, i) in feed.drain() {
            self.watch(w, i);
        }
        let mut update = Update::default();
        if let Some(base) = rebase {
            self.cursor.blocks.insert(0, base);
        }
        if reorg {
            self.disconnect_above(fork, &mut update);
        }
        for (h, block) in &blocks {
            let parent = self.cursor.tip().map(|(_, hash)| hash);
            if Some(block.header.prev_blockhash) != parent {
                break; // a reorg raced our reads: stop here, the next poll rewinds
            }
            self.connect(*h, block, &mut update);
        }
        self.report_depths(&mut update);
        self.expire();
        Self::drop_undone_reverts(&mut update);
        Ok(Some(self.finish(update)))
    }

    /// Reads the mempool: new payments (0 confirmations) and replacements of tracked ones.
    pub async fn poll_mempool<S: BlockSource>(
        &mut self,
        source: &S,
        feed: &mut dyn ScriptFeed,
    ) -> Result<Update, BitcoinError> {
        let txids = source.mempool().await?;
        let current: HashSet<Txid> = txids.iter().copied().collect();
        let mut fresh = Vec::new();
        for txid in txids {
            if self.mempool_seen.contains(&txid) {
                continue;
            }
            if let Some(tx) = source.transaction(&txid).await? {
                fresh.push((txid, tx));
            }
        }
        for (w, i) in feed.drain() {
            self.watch(w, i);
        }
        let mut update = Update::default();
        let since = self.tip_height();
        for (txid, tx) in &fresh {
            self.conflicts(*txid, tx, &mut update);
            for (op, sat, target) in self.matches(tx, Some(*txid), &mut update) {
                match self.tracked.get(&op).map(|t| &t.state) {
                    // Already in a block (the mempool answer lagged), or already known.
                    Some(TrackedState::Block { .. } | TrackedState::Mempool { .. }) => continue,
                    Some(TrackedState::Reverted { .. }) | None => {}
                }
                let t = Tracked {
                    target: target.clone(),
                    sat,
                    state: TrackedState::Mempool { since },
                    spends: spends(tx),
                    reported: Some(0),
                    payer: payer_scripts(tx),
                };
                self.put(op, t);
                update.observations.push(Observation::Seen {
                    target,
                    outpoint: op,
                    sat,
                    confirmations: 0,
                    block_time: None,
                });
            }
        }
        self.mempool_seen.retain(|t| current.contains(t));
        self.mempool_seen.extend(fresh.iter().map(|(t, _)| *t));
        Ok(self.finish(update))
    }

    async fn hash_at<S: BlockSource>(source: &S, height: u32) -> Result<BlockHash, BitcoinError> {
        source
            .block_hash(height)
            .await?
            .ok_or_else(|| BitcoinError::Decode {
                method: "getblockhash",
                reason: format!("no block at height {height} below the tip"),
            })
    }

    /// The highest remembered block still in the node's best chain; beyond the window, the node's
    /// block just below it, to be added to the cursor as the new base.
    async fn find_fork<S: BlockSource>(
        &self,
        source: &S,
    ) -> Result<(u32, Option<(u32, BlockHash)>), BitcoinError> {
        for &(h, hash) in self.cursor.blocks.iter().rev() {
            if source.block_hash(h).await? == Some(hash) {
                return Ok((h, None));
            }
        }
        let lowest = self.cursor.blocks.first().map_or(0, |(h, _)| *h);
        // Deeper than the window: the blocks below are unknown to us. Restart the window at the
        // node's block just below it; payments in the orphaned part of the window are reverted.
        let err = BitcoinError::ReorgTooDeep {
            window: self.config.window,
            lowest,
        };
        tracing::error!(target: "relay::btc", error = %err, "rewinding to below the window");
        let base = lowest.saturating_sub(1);
        let hash = Self::hash_at(source, base).await?;
        Ok((base, Some((base, hash))))
    }

    fn disconnect_above(&mut self, fork: u32, update: &mut Update) {
        let before = self.cursor.blocks.len();
        self.cursor.blocks.retain(|(h, _)| *h <= fork);
        update.blocks_disconnected += (before - self.cursor.blocks.len()) as u32;
        let orphaned: Vec<OutPoint> = self
            .tracked
            .iter()
            .filter(|(_, t)| matches!(t.state, TrackedState::Block { height, .. } if height > fork))
            .map(|(op, _)| *op)
            .collect();
        for op in orphaned {
            let mut t = self.tracked[&op].clone();
            t.state = TrackedState::Reverted { since: fork };
            t.reported = None;
            update.observations.push(Observation::Reverted {
                target: t.target.clone(),
                outpoint: op,
            });
            self.put(op, t);
        }
    }

    fn connect(&mut self, height: u32, block: &Block, update: &mut Update) {
        let hash = block.block_hash();
        for tx in &block.txdata {
            // Hashing every transaction would cost more than the whole scan: only those that
            // spend what a tracked payment spends, or pay a watched script, are hashed.
            let mut txid = None;
            if !tx.is_coinbase()
                && tx
                    .input
                    .iter()
                    .any(|i| self.spent_by.contains_key(&i.previous_output))
            {
                let id = tx.compute_txid();
                txid = Some(id);
                self.conflicts(id, tx, update);
            }
            for (op, sat, target) in self.matches(tx, txid, update) {
                let reported = self.tracked.get(&op).and_then(|t| t.reported);
                let t = Tracked {
                    target,
                    sat,
                    state: TrackedState::Block {
                        height,
                        hash,
                        time: block.header.time,
                    },
                    spends: spends(tx),
                    // Depth 0 (mempool) is below any block depth, so the block is reported.
                    reported: reported.filter(|r| *r > 0),
                    payer: payer_scripts(tx),
                };
                self.put(op, t);
            }
        }
        self.cursor.blocks.push((height, hash));
        update.blocks_connected += 1;
    }

    /// A transaction `txid` spending what a tracked unconfirmed payment spends replaces it.
    fn conflicts(&mut self, txid: Txid, tx: &Transaction, update: &mut Update) {
        let mut replaced = Vec::new();
        for input in &tx.input {
            if let Some(payments) = self.spent_by.get(&input.previous_output) {
                replaced.extend(payments.iter().copied().filter(|p| p.txid != txid));
            }
        }
        for op in replaced {
            let Some(t) = self.tracked.get(&op) else {
                continue;
            };
            match t.state {
                TrackedState::Mempool { .. } => {
                    update.observations.push(Observation::Replaced {
                        target: t.target.clone(),
                        outpoint: op,
                    });
                    self.untrack(op);
                }
                // Already reported reverted; the double spend means it can never come back.
                TrackedState::Reverted { .. } => self.untrack(op),
                // A confirmed payment cannot be conflicted without a reorg, handled above.
                TrackedState::Block { .. } => {}
            }
        }
    }

    /// Reports the depth of every tracked payment in a block whose depth (capped at the horizon)
    /// changed since it was last reported.
    fn report_depths(&mut self, update: &mut Update) {
        let tip = self.tip_height();
        let horizon = self.config.horizon;
        let mut changed = Vec::new();
        for (op, t) in &self.tracked {
            if let TrackedState::Block { height, time, .. } = t.state {
                let depth = tip.saturating_sub(height) + 1;
                if t.reported != Some(depth.min(horizon)) {
                    changed.push((*op, depth, time));
                }
            }
        }
        for (op, depth, time) in changed {
            let mut t = self.tracked[&op].clone();
            t.reported = Some(depth.min(horizon));
            update.observations.push(Observation::Seen {
                target: t.target.clone(),
                outpoint: op,
                sat: t.sat,
                confirmations: depth,
                block_time: Some(time),
            });
            self.put(op, t);
        }
    }

    /// Trims the cursor to the window and stops tracking what is final or long gone.
    fn expire(&mut self) {
        let tip = self.tip_height();
        let window = self.config.window.max(2);
        if self.cursor.blocks.len() > window {
            let cut = self.cursor.blocks.len() - window;
            self.cursor.blocks.drain(..cut);
        }
        let window = window as u32;
        let done: Vec<OutPoint> = self
            .tracked
            .iter()
            .filter(|(_, t)| match t.state {
                TrackedState::Block { height, .. } => tip.saturating_sub(height) + 1 > window,
                TrackedState::Reverted { since } => tip.saturating_sub(since) > window,
                TrackedState::Mempool { since } => {
                    tip.saturating_sub(since) > self.config.mempool_expiry_blocks
                }
            })
            .map(|(op, _)| *op)
            .collect();
        for op in done {
            self.untrack(op);
        }
    }

    /// Within one step, a payment reverted and then found again in the new branch was never gone
    /// from the merchant's point of view: keep only what it ends as.
    fn drop_undone_reverts(update: &mut Update) {
        let seen_later: HashSet<OutPoint> = update
            .observations
            .iter()
            .filter(|o| matches!(o, Observation::Seen { .. }))
            .map(Observation::outpoint)
            .collect();
        update.observations.retain(
            |o| !matches!(o, Observation::Reverted { outpoint, .. } if seen_later.contains(outpoint)),
        );
    }
}

fn spends(tx: &Transaction) -> Vec<OutPoint> {
    if tx.is_coinbase() {
        return Vec::new();
    }
    tx.input.iter().map(|i| i.previous_output).collect()
}

#[cfg(test)]
mod tests;
