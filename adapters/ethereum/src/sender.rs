//! The operator's transaction sender: one signing key, its own nonce bookkeeping, EIP-1559 fees,
//! receipts, and fee-bumped replacement of transactions that are not mined.
//!
//! Crash safety: [`Sender::prepare`] signs a transaction without sending it; the caller stores the
//! returned [`OpTx`] and only then calls [`Sender::broadcast`]. After a restart every stored,
//! unfinished transaction is broadcast again as signed — the same nonce and the same bytes — so a
//! crash anywhere can delay an operation but never send it twice. A replacement reuses the nonce,
//! so at most one of a transaction's attempts is ever mined.
//!
//! Spending is bounded: each purpose has a gas cap (a call that needs more is refused before it
//! is signed), every fee offered is at most the operator's ceiling, and a transaction replaced
//! `max_replacements` times, or already at the ceiling, is not replaced again: it is reported
//! stuck ([`Sender::stuck`]) for the operator to look at.

use crate::node::{EthError, OperatorNode};
use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, Bytes, TxKind, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    Capture(B256),
    Void(B256),
    /// Refund of a captured payment: (payment id, key of the relay's refund record).
    Refund(B256, B256),
    /// A cross-rail settlement, by settlement id.
    Settle(B256),
}

impl Purpose {
    /// The escrow payment the transaction acts on (for a settlement: its settlement id).
    pub fn payment_id(&self) -> B256 {
        match self {
            Purpose::Capture(id) | Purpose::Void(id) | Purpose::Refund(id, _) => *id,
            Purpose::Settle(id) => *id,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Purpose::Capture(_) => "capture",
            Purpose::Void(_) => "void",
            Purpose::Refund(..) => "refund",
            Purpose::Settle(_) => "settle",
        }
    }
}

/// One signed version of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub hash: B256,
    pub raw: Bytes,
    pub max_fee: u128,
    pub priority_fee: u128,
    /// The chain tip when it was signed.
    pub signed_at_block: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxState {
    Pending,
    /// Mined; `success` is false for a reverted transaction.
    Mined {
        hash: B256,
        block: u64,
        success: bool,
    },
    /// Its nonce was used by a transaction that is not one of its attempts.
    Displaced,
}

/// An operator transaction, stored before it is first broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpTx {
    pub nonce: u64,
    pub purpose: Purpose,
    pub to: Address,
    pub input: Bytes,
    pub value: U256,
    pub gas: u64,
    pub attempts: Vec<Attempt>,
    pub state: TxState,
}

impl OpTx {
    pub fn latest(&self) -> &Attempt {
        self.attempts
            .last()
            .expect("a transaction is stored with its first attempt")
    }
}

/// The operator key, read from a file or the environment. Its `Debug` shows the address only.
#[derive(Clone)]
pub struct OperatorKey(PrivateKeySigner);

impl OperatorKey {
    /// Parses a 32-byte hex private key (`0x` optional, surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<OperatorKey, String> {
        let t = text.trim();
        let t = t.strip_prefix("0x").unwrap_or(t);
        let bytes = hex::decode(t).map_err(|_| "the operator key is not hex".to_owned())?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the operator key is not 32 bytes".to_owned())?;
        PrivateKeySigner::from_bytes(&B256::from(bytes))
            .map(OperatorKey)
            .map_err(|_| "the operator key is not a valid secp256k1 key".to_owned())
    }

    pub fn address(&self) -> Address {
        self.0.address()
    }
}

impl fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OperatorKey({})", self.address())
    }
}

/// The most gas the operator spends on one transaction of each purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GasCaps {
    pub capture: u64,
    pub void: u64,
    pub refund: u64,
    pub settle: u64,
}

impl Default for GasCaps {
    /// Well above what the escrow's calls use (about 60,000 to 110,000 with an ERC-20), far
    /// below what a call made expensive on purpose (a hostile token) would burn.
    fn default() -> Self {
        GasCaps {
            capture: 200_000,
            void: 150_000,
            refund: 150_000,
            settle: 250_000,
        }
    }
}

impl GasCaps {
    pub fn of(&self, purpose: Purpose) -> u64 {
        match purpose {
            Purpose::Capture(_) => self.capture,
            Purpose::Void(_) => self.void,
            Purpose::Refund(..) => self.refund,
            Purpose::Settle(_) => self.settle,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Blocks an attempt may wait unmined before it is replaced with higher fees.
    pub bump_after_blocks: u64,
    /// Each replacement multiplies both fees by at least this many percent (nodes want ≥ 110).
    pub bump_percent: u128,
    /// Mined transactions younger than this many blocks are checked for reorgs.
    pub recheck_blocks: u64,
    pub gas_caps: GasCaps,
    /// The highest `max_fee_per_gas` ever offered, in wei, replacements included.
    pub max_fee_per_gas: u128,
    /// Replacements of one transaction before the sender stops and reports it stuck.
    pub max_replacements: usize,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            bump_after_blocks: 3,
            bump_percent: 125,
            recheck_blocks: 64,
            gas_caps: GasCaps::default(),
            max_fee_per_gas: 500_000_000_000,
            max_replacements: 8,
        }
    }
}

/// What became of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub nonce: u64,
    pub purpose: Purpose,
    pub state: TxState,
}

pub struct Sender {
    key: OperatorKey,
    chain_id: u64,
    config: SenderConfig,
    txs: BTreeMap<u64, OpTx>,
    next_nonce: Option<u64>,
    /// Nonces whose latest attempt already offers the fee ceiling.
    at_ceiling: std::collections::BTreeSet<u64>,
}

impl Sender {
    /// A sender with the transactions stored before (finished ones included: they keep their
    /// nonces used).
    pub fn new(key: OperatorKey, chain_id: u64, config: SenderConfig, stored: Vec<OpTx>) -> Sender {
        let next_nonce = stored.iter().map(|t| t.nonce + 1).max();
        Sender {
            key,
            chain_id,
            config,
            txs: stored.into_iter().map(|t| (t.nonce, t)).collect(),
            next_nonce,
            at_ceiling: Default::default(),
        }
    }

    pub fn address(&self) -> Address {
        self.key.address()
    }

    pub fn txs(&self) -> impl Iterator<Item = &OpTx> {
        self.txs.values()
    }

    pub fn pending(&self) -> impl Iterator<Item = &OpTx> {
        self.txs.values().filter(|t| t.state == TxState::Pending)
    }

    /// Transactions for this payment, oldest first.
    pub fn for_payment(&self, id: B256) -> impl Iterator<Item = &OpTx> {
        self.txs
            .values()
            .filter(move |t| t.purpose.payment_id() == id)
    }

    /// Forgets finished transactions (their nonces stay used: the next nonce only grows).
    pub fn prune(&mut self, keep: impl Fn(&OpTx) -> bool) -> Vec<u64> {
        let gone: Vec<u64> = self
            .txs
            .values()
            .filter(|t| t.state != TxState::Pending && !keep(t))
            .map(|t| t.nonce)
            .collect();
        for n in &gone {
            self.txs.remove(n);
        }
        gone
    }

    /// Signs a call to `to` for `purpose` with the next nonce. Nothing is sent and nothing is
    /// remembered: the caller stores the result, then calls [`Sender::adopt`] and
    /// [`Sender::broadcast`]. Fails without using a nonce when the call would revert now.
    pub async fn prepare<N: OperatorNode>(
        &self,
        node: &N,
        purpose: Purpose,
        to: Address,
        input: Bytes,
        value: U256,
    ) -> Result<OpTx, EthError> {
        let gas = node.estimate_gas(self.address(), to, &input, value).await?;
        // 20 % headroom: state can change between the estimate and the block.
        let gas = gas.saturating_add(gas / 5);
        let cap = self.config.gas_caps.of(purpose);
        if gas > cap {
            return Err(EthError::over_limit(format!(
                "{} needs {gas} gas, above its cap of {cap}",
                purpose.name()
            )));
        }
        let on_chain = node.nonce(self.address(), true).await?;
        let nonce = self.next_nonce.map_or(on_chain, |n| n.max(on_chain));
        let (max_fee, priority_fee) = node.fees().await?;
        let max_fee = max_fee.min(self.config.max_fee_per_gas);
        let priority_fee = priority_fee.min(max_fee);
        let tip = node.block_number().await?;
        let mut tx = OpTx {
            nonce,
            purpose,
            to,
            input,
            value,
            gas,
            attempts: Vec::new(),
            state: TxState::Pending,
        };
        let attempt = self.sign(&tx, max_fee, priority_fee, tip)?;
        tx.attempts.push(attempt);
        Ok(tx)
    }

    fn sign(
        &self,
        tx: &OpTx,
        max_fee: u128,
        priority_fee: u128,
        tip: u64,
    ) -> Result<Attempt, EthError> {
        let mut unsigned = TxEip1559 {
            chain_id: self.chain_id,
            nonce: tx.nonce,
            gas_limit: tx.gas,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority_fee.min(max_fee),
            to: TxKind::Call(tx.to),
            value: tx.value,
            input: tx.input.clone(),
            ..Default::default()
        };
        let signature = self
            .key
            .0
            .sign_transaction_sync(&mut unsigned)
            .map_err(|e| EthError::fatal(format!("signing failed: {e}")))?;
        let envelope = TxEnvelope::from(unsigned.into_signed(signature));
        Ok(Attempt {
            hash: *envelope.tx_hash(),
            raw: Bytes::from(envelope.encoded_2718()),
            max_fee,
            priority_fee,
            signed_at_block: tip,
        })
    }

    /// Takes a prepared (and stored) transaction into the sender's bookkeeping.
    pub fn adopt(&mut self, tx: OpTx) {
        self.next_nonce = Some(self.next_nonce.unwrap_or(0).max(tx.nonce + 1));
        self.txs.insert(tx.nonce, tx);
    }

    /// Sends the latest attempt. A node that already has it, or already mined the nonce, is not
    /// an error: receipts decide.
    pub async fn broadcast<N: OperatorNode>(&self, node: &N, nonce: u64) -> Result<(), EthError> {
        let Some(tx) = self.txs.get(&nonce) else {
            return Ok(());
        };
        match node.send_raw(&tx.latest().raw).await {
            Ok(_) => Ok(()),
            Err(e) if !e.retryable && benign_send_error(&e.message) => {
                tracing::debug!(target: "relay::eth", nonce, error = %e, "broadcast not needed");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Checks every pending transaction: records receipts, notices nonces taken by others, and
    /// replaces attempts left unmined for too long. Returns what finished and the transactions
    /// that changed (to be stored before they are broadcast again: see [`Sender::broadcast`]).
    pub async fn poll<N: OperatorNode>(
        &mut self,
        node: &N,
    ) -> Result<(Vec<Outcome>, Vec<OpTx>), EthError> {
        let mut outcomes = Vec::new();
        let mut changed = Vec::new();
        let tip = node.block_number().await?;
        // A reorg can take a mined transaction out of the chain: recently mined ones are checked
        // again, and one whose receipt is gone is pending again (and broadcast again).
        let recent: Vec<(u64, B256)> = self
            .txs
            .values()
            .filter_map(|t| match t.state {
                TxState::Mined { hash, block, .. } if block + self.config.recheck_blocks > tip => {
                    Some((t.nonce, hash))
                }
                _ => None,
            })
            .collect();
        for (nonce, hash) in recent {
            if node.receipt(hash).await?.is_none() {
                tracing::warn!(target: "relay::eth", nonce, tx = %hash, "a mined operator transaction left the chain; sending it again");
                let t = self.txs.get_mut(&nonce).expect("listed above");
                t.state = TxState::Pending;
                changed.push(t.clone());
            }
        }
        let pending: Vec<u64> = self.pending().map(|t| t.nonce).collect();
        if pending.is_empty() {
            return Ok((outcomes, changed));
        }
        let mined_nonce = node.nonce(self.address(), false).await?;
        for nonce in pending {
            let tx = self.txs.get(&nonce).cloned().expect("listed above");
            let mut state = None;
            for a in tx.attempts.iter().rev() {
                if let Some(r) = node.receipt(a.hash).await? {
                    state = Some(TxState::Mined {
                        hash: a.hash,
                        block: r.block,
                        success: r.success,
                    });
                    break;
                }
            }
            if state.is_none() && mined_nonce > nonce {
                // The nonce is used, yet none of our attempts has a receipt: another transaction
                // from this key took it (or a receipt raced us: look again next poll first).
                if tip > tx.latest().signed_at_block + self.config.bump_after_blocks {
                    state = Some(TxState::Displaced);
                }
            }
            if let Some(state) = state {
                let t = self.txs.get_mut(&nonce).expect("listed above");
                t.state = state.clone();
                changed.push(t.clone());
                outcomes.push(Outcome {
                    nonce,
                    purpose: t.purpose,
                    state,
                });
                continue;
            }
            if mined_nonce <= nonce
                && tip >= tx.latest().signed_at_block + self.config.bump_after_blocks
            {
                if self.is_stuck(&tx) {
                    continue;
                }
                let (fee_now, tip_now) = node.fees().await?;
                let pct = self.config.bump_percent.max(110);
                let bumped = |old: u128| old.saturating_mul(pct).div_ceil(100).saturating_add(1);
                let ceiling = self.config.max_fee_per_gas;
                let max_fee = bumped(tx.latest().max_fee).max(fee_now).min(ceiling);
                let priority = bumped(tx.latest().priority_fee).max(tip_now).min(max_fee);
                // A node takes a replacement only if it raises both fees by 10 %.
                let enough =
                    |new: u128, old: u128| new.saturating_mul(100) >= old.saturating_mul(110);
                if !enough(max_fee, tx.latest().max_fee)
                    || !enough(priority, tx.latest().priority_fee)
                {
                    tracing::error!(target: "relay::eth", nonce, purpose = ?tx.purpose, max_fee = tx.latest().max_fee, ceiling, "an unmined operator transaction is at the fee ceiling and cannot be replaced: the operator must look at it");
                    self.at_ceiling.insert(nonce);
                    continue;
                }
                let attempt = self.sign(&tx, max_fee, priority, tip)?;
                tracing::info!(target: "relay::eth", nonce, purpose = ?tx.purpose, max_fee, priority, "replacing an unmined transaction with higher fees");
                let t = self.txs.get_mut(&nonce).expect("listed above");
                t.attempts.push(attempt);
                if t.attempts.len() > self.config.max_replacements {
                    tracing::error!(target: "relay::eth", nonce, purpose = ?t.purpose, replacements = self.config.max_replacements, "an operator transaction was replaced as often as allowed and is still not mined: the operator must look at it");
                }
                changed.push(t.clone());
            }
        }
        Ok((outcomes, changed))
    }

    /// Whether a pending transaction will not be replaced again: replaced as often as allowed,
    /// or already offering the fee ceiling.
    fn is_stuck(&self, tx: &OpTx) -> bool {
        tx.attempts.len() > self.config.max_replacements || self.at_ceiling.contains(&tx.nonce)
    }

    /// Pending transactions the sender has stopped replacing (each one holds back every later
    /// nonce of the operator): what the `relay_eth_stuck_txs` gauge counts.
    pub fn stuck(&self) -> impl Iterator<Item = &OpTx> {
        self.pending().filter(|t| self.is_stuck(t))
    }
}

/// Errors a node gives for a transaction it already has or no longer needs.
fn benign_send_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "already known",
        "nonce too low",
        "already imported",
        "known transaction",
    ]
    .iter()
    .any(|s| m.contains(s))
}

#[cfg(test)]
mod tests;
