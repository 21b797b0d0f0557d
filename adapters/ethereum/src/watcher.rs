//! Follows the escrow's logs and turns them into observations: deposits seen (with their depth),
//! deposits whose block was orphaned, and deposits closed (captured, voided, reclaimed).
//!
//! Far from the tip it reads logs by block range; within `window` blocks of the tip it reads block
//! by block, keeping each block's hash, and checks every new block's parent against the last one
//! it read. A mismatch (or a head the node no longer has) is a reorg: the watcher steps back one
//! block at a time, marking the deposits of orphaned blocks reverted, until it stands on a block the
//! node still has, then reads the new branch. A deposit that reappears on the new branch is seen
//! again; the invoice state machine credits it once.
//!
//! The watcher is pure state plus a [`ChainSource`]; the caller stores its cursor and deposits
//! in the same transaction as the invoice changes they cause.

use crate::node::{ChainSource, EscrowEvent, EscrowLog, EthError, Header};
use alloy::primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// Recent blocks remembered for reorg detection (the deepest reorg handled).
    pub window: usize,
    /// Depth up to which confirmations are reported.
    pub horizon: u32,
    /// Blocks per `eth_getLogs` range while catching up.
    pub range: u64,
    /// The first block to read when nothing was read before (the escrow's deployment block).
    pub start_block: u64,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            window: 64,
            horizon: 64,
            range: 2000,
            start_block: 0,
        }
    }
}

/// Where the watcher is: the next block to read and the recent blocks it read, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub next: u64,
    pub recent: VecDeque<(u64, B256)>,
    /// Timestamp of the newest block read block by block (0 before the first).
    pub time: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClosingKind {
    Captured,
    Voided,
    Reclaimed,
}

/// How a deposit was closed on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closing {
    pub kind: ClosingKind,
    pub tx: B256,
    pub block: (u64, B256),
}

/// A deposit the escrow logged, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    pub id: B256,
    pub payer: Address,
    pub merchant: Address,
    pub token: Address,
    pub amount: U256,
    pub expiry: u64,
    pub salt: B256,
    pub tx: B256,
    /// `(number, hash)` of its block; `None` once that block was orphaned and until it reappears.
    pub block: Option<(u64, B256)>,
    pub block_time: u64,
    /// Confirmations last reported (0: none since it was last seen).
    pub reported: u32,
    pub closed: Option<Closing>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The deposit is in a block `confirmations` deep (capped at the horizon).
    Seen { id: B256, confirmations: u32 },
    /// The deposit's block was orphaned.
    Reverted { id: B256 },
    /// The escrow closed the deposit.
    Closed {
        id: B256,
        kind: ClosingKind,
        tx: B256,
        /// A capture's fee (zero otherwise).
        fee: U256,
    },
    /// The operator refunded `amount` of a captured payment (whether or not the watcher still
    /// follows its deposit).
    Refunded { id: B256, amount: U256, tx: B256 },
    /// The escrow paid a cross-rail settlement.
    Settled {
        id: B256,
        merchant: Address,
        amount: U256,
        source_ref: String,
        tx: B256,
    },
}

/// What one poll changed.
#[derive(Debug, Default)]
pub struct Update {
    pub observations: Vec<Observation>,
    /// Deposits to store again.
    pub changed: BTreeSet<B256>,
    /// Deposits to forget (closed, deeper than the window).
    pub forgotten: Vec<B256>,
    pub blocks_read: u64,
    pub blocks_dropped: u64,
    /// More blocks are waiting; poll again without pausing.
    pub more: bool,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        self.observations.is_empty()
            && self.changed.is_empty()
            && self.forgotten.is_empty()
            && self.blocks_read == 0
            && self.blocks_dropped == 0
    }
}

pub struct Watcher {
    config: WatcherConfig,
    cursor: Cursor,
    deposits: BTreeMap<B256, Deposit>,
}

impl Watcher {
    pub fn new(config: WatcherConfig, cursor: Option<Cursor>, deposits: Vec<Deposit>) -> Watcher {
        let cursor = cursor.unwrap_or(Cursor {
            next: config.start_block,
            ..Cursor::default()
        });
        Watcher {
            config,
            cursor,
            deposits: deposits.into_iter().map(|d| (d.id, d)).collect(),
        }
    }

    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    pub fn deposit(&self, id: &B256) -> Option<&Deposit> {
        self.deposits.get(id)
    }

    pub fn deposits(&self) -> impl Iterator<Item = &Deposit> {
        self.deposits.values()
    }

    /// The newest block read.
    pub fn head(&self) -> Option<u64> {
        self.cursor.next.checked_sub(1)
    }

    /// How deep a deposit is now (0 when it is in no block).
    pub fn depth(&self, d: &Deposit) -> u32 {
        match (d.block, self.head()) {
            (Some((n, _)), Some(head)) if head >= n => {
                u32::try_from(head - n + 1).unwrap_or(u32::MAX)
            }
            _ => 0,
        }
    }

    /// Reads what is new since the last poll: at most one range of blocks while catching up, or
    /// every block up to the tip near it.
    pub async fn poll<S: ChainSource>(&mut self, src: &S) -> Result<Update, EthError> {
        let mut up = Update::default();
        let tip = src.tip().await?;
        // Is the block we stand on still the node's? If not, step back until one is.
        while let Some(&(n, hash)) = self.cursor.recent.back() {
            match src.header(n).await? {
                Some(h) if h.hash == hash => break,
                _ => self.unwind(&mut up),
            }
        }
        while self.cursor.next <= tip {
            let from = self.cursor.next;
            let window = self.config.window as u64;
            if tip - from >= window {
                let to = (from + self.config.range.max(1) - 1).min(tip - window);
                self.read_range(src, from, to, &mut up).await?;
                up.more = to < tip;
                break;
            }
            let Some(header) = src.header(from).await? else {
                break;
            };
            if let Some(&(n, hash)) = self.cursor.recent.back() {
                if n + 1 == from && header.parent != hash {
                    self.unwind(&mut up);
                    continue;
                }
            }
            let logs = src.logs_in(header.hash).await?;
            for log in &logs {
                self.apply(log, &header, &mut up);
            }
            self.cursor.recent.push_back((from, header.hash));
            while self.cursor.recent.len() > self.config.window {
                self.cursor.recent.pop_front();
            }
            self.cursor.next = from + 1;
            self.cursor.time = header.time;
            up.blocks_read += 1;
        }
        self.report_depths(&mut up);
        Ok(up)
    }

    /// Catch-up: logs of `from..=to` in one request, headers only for blocks holding deposits.
    async fn read_range<S: ChainSource>(
        &mut self,
        src: &S,
        from: u64,
        to: u64,
        up: &mut Update,
    ) -> Result<(), EthError> {
        let logs = src.logs_between(from, to).await?;
        let mut headers: HashMap<u64, Header> = HashMap::new();
        for log in &logs {
            if let std::collections::hash_map::Entry::Vacant(e) = headers.entry(log.block) {
                let h = src.header(log.block).await?.ok_or_else(|| {
                    EthError::retry(format!("block {} vanished while reading logs", log.block))
                })?;
                e.insert(h);
            }
            let header = headers[&log.block];
            if header.hash != log.block_hash {
                return Err(EthError::retry(format!(
                    "block {} changed while reading logs",
                    log.block
                )));
            }
        }
        for log in &logs {
            let header = headers[&log.block];
            self.apply(log, &header, up);
        }
        self.cursor.recent.clear();
        self.cursor.next = to + 1;
        up.blocks_read += to - from + 1;
        Ok(())
    }

    fn apply(&mut self, log: &EscrowLog, header: &Header, up: &mut Update) {
        let at = (header.number, header.hash);
        match &log.event {
            EscrowEvent::Deposited {
                id,
                payer,
                merchant,
                token,
                amount,
                expiry,
                salt,
            } => {
                let d = self.deposits.entry(*id).or_insert_with(|| Deposit {
                    id: *id,
                    payer: *payer,
                    merchant: *merchant,
                    token: *token,
                    amount: *amount,
                    expiry: *expiry,
                    salt: *salt,
                    tx: log.tx,
                    block: None,
                    block_time: header.time,
                    reported: 0,
                    closed: None,
                });
                if d.block != Some(at) {
                    d.block = Some(at);
                    d.block_time = header.time;
                    d.tx = log.tx;
                    d.payer = *payer;
                    d.reported = 0;
                    up.changed.insert(*id);
                }
            }
            EscrowEvent::Captured { id, .. }
            | EscrowEvent::Voided { id, .. }
            | EscrowEvent::Reclaimed { id, .. } => {
                let (kind, fee) = match log.event {
                    EscrowEvent::Captured { fee, .. } => (ClosingKind::Captured, fee),
                    EscrowEvent::Voided { .. } => (ClosingKind::Voided, U256::ZERO),
                    _ => (ClosingKind::Reclaimed, U256::ZERO),
                };
                let Some(d) = self.deposits.get_mut(id) else {
                    tracing::debug!(target: "relay::eth", payment_id = %id, "closing of a deposit not followed");
                    return;
                };
                let closing = Closing {
                    kind,
                    tx: log.tx,
                    block: at,
                };
                if d.closed != Some(closing) {
                    d.closed = Some(closing);
                    up.changed.insert(*id);
                    up.observations.push(Observation::Closed {
                        id: *id,
                        kind,
                        tx: log.tx,
                        fee,
                    });
                }
            }
            EscrowEvent::Refunded { id, amount } => up.observations.push(Observation::Refunded {
                id: *id,
                amount: *amount,
                tx: log.tx,
            }),
            EscrowEvent::Settled {
                id,
                merchant,
                amount,
                source_ref,
                ..
            } => up.observations.push(Observation::Settled {
                id: *id,
                merchant: *merchant,
                amount: *amount,
                source_ref: source_ref.clone(),
                tx: log.tx,
            }),
        }
    }

    /// Drops the newest block read: its deposits and closings no longer happened.
    fn unwind(&mut self, up: &mut Update) {
        let Some((n, hash)) = self.cursor.recent.pop_back() else {
            return;
        };
        for d in self.deposits.values_mut() {
            if d.closed.is_some_and(|c| c.block == (n, hash)) {
                d.closed = None;
                up.changed.insert(d.id);
            }
            if d.block == Some((n, hash)) {
                d.block = None;
                if d.reported > 0 {
                    up.observations.push(Observation::Reverted { id: d.id });
                }
                d.reported = 0;
                up.changed.insert(d.id);
            }
        }
        self.cursor.next = n;
        up.blocks_dropped += 1;
    }

    fn report_depths(&mut self, up: &mut Update) {
        let Some(head) = self.head() else {
            return;
        };
        let horizon = self.config.horizon;
        let window = self.config.window as u64;
        let mut forget = Vec::new();
        for d in self.deposits.values_mut() {
            if let Some(c) = d.closed {
                if c.block.0 + window <= head && !up.changed.contains(&d.id) {
                    forget.push(d.id);
                }
                continue;
            }
            let Some((n, _)) = d.block else { continue };
            let depth = u32::try_from(head.saturating_sub(n) + 1)
                .unwrap_or(u32::MAX)
                .min(horizon);
            if head >= n && depth > d.reported {
                d.reported = depth;
                up.changed.insert(d.id);
                up.observations.push(Observation::Seen {
                    id: d.id,
                    confirmations: depth,
                });
            }
        }
        for id in forget {
            self.deposits.remove(&id);
            up.changed.remove(&id);
            up.forgotten.push(id);
        }
    }
}

#[cfg(test)]
mod tests;
