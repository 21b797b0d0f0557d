//! The sender against an in-memory chain: nonces, the gas cap, the fee ceiling, replacements.

use super::*;
use crate::node::Receipt;
use alloy::consensus::Transaction;
use alloy::eips::eip2718::Decodable2718;
use std::collections::HashMap;
use std::sync::Mutex;

/// One account's view of a chain: a pool keyed by nonce, blocks that mine the next nonce when
/// its fee covers the base fee, receipts by hash.
struct MemChain {
    state: Mutex<MemState>,
}

struct MemState {
    block: u64,
    mined_nonce: u64,
    base_fee: u128,
    tip: u128,
    gas: u64,
    /// nonce -> (hash, max fee) of the transaction the pool holds.
    pool: BTreeMap<u64, (B256, u128)>,
    receipts: HashMap<B256, Receipt>,
    sent: usize,
}

impl MemChain {
    fn new(base_fee: u128, gas: u64) -> MemChain {
        MemChain {
            state: Mutex::new(MemState {
                block: 100,
                mined_nonce: 0,
                base_fee,
                tip: 1_000_000_000,
                gas,
                pool: BTreeMap::new(),
                receipts: HashMap::new(),
                sent: 0,
            }),
        }
    }

    /// One block: mines the pool's transactions in nonce order while their fee covers the base.
    fn mine(&self) {
        let mut s = self.state.lock().unwrap();
        s.block += 1;
        loop {
            let next = s.mined_nonce;
            let Some(&(hash, max_fee)) = s.pool.get(&next) else {
                break;
            };
            if max_fee < s.base_fee {
                break;
            }
            s.pool.remove(&next);
            let block = s.block;
            s.receipts.insert(
                hash,
                Receipt {
                    block,
                    success: true,
                },
            );
            s.mined_nonce += 1;
        }
    }
}

impl OperatorNode for MemChain {
    async fn nonce(&self, _who: Address, pending: bool) -> Result<u64, EthError> {
        let s = self.state.lock().unwrap();
        let pooled = s.pool.keys().next_back().map_or(0, |n| n + 1);
        Ok(if pending {
            s.mined_nonce.max(pooled)
        } else {
            s.mined_nonce
        })
    }

    async fn fees(&self) -> Result<(u128, u128), EthError> {
        let s = self.state.lock().unwrap();
        Ok((s.base_fee * 2 + s.tip, s.tip))
    }

    async fn estimate_gas(
        &self,
        _from: Address,
        _to: Address,
        _input: &Bytes,
        _value: U256,
    ) -> Result<u64, EthError> {
        Ok(self.state.lock().unwrap().gas)
    }

    async fn block_number(&self) -> Result<u64, EthError> {
        Ok(self.state.lock().unwrap().block)
    }

    async fn send_raw(&self, raw: &[u8]) -> Result<B256, EthError> {
        let tx = TxEnvelope::decode_2718(&mut &raw[..]).unwrap();
        let (hash, nonce, max_fee) = (*tx.tx_hash(), tx.nonce(), tx.max_fee_per_gas());
        let mut s = self.state.lock().unwrap();
        s.sent += 1;
        if nonce < s.mined_nonce {
            return Err(EthError::fatal("nonce too low"));
        }
        match s.pool.get(&nonce) {
            Some((h, _)) if *h == hash => return Err(EthError::fatal("already known")),
            Some((_, old)) if max_fee * 100 < old * 110 => {
                return Err(EthError::fatal("replacement transaction underpriced"))
            }
            _ => {}
        }
        s.pool.insert(nonce, (hash, max_fee));
        Ok(hash)
    }

    async fn receipt(&self, hash: B256) -> Result<Option<Receipt>, EthError> {
        Ok(self.state.lock().unwrap().receipts.get(&hash).copied())
    }
}

fn key() -> OperatorKey {
    OperatorKey::parse(&"11".repeat(32)).unwrap()
}

fn sender(config: SenderConfig) -> Sender {
    Sender::new(key(), 31337, config, Vec::new())
}

const GWEI: u128 = 1_000_000_000;

async fn send(s: &mut Sender, chain: &MemChain, purpose: Purpose) -> Result<u64, EthError> {
    let tx = s
        .prepare(chain, purpose, Address::ZERO, Bytes::new(), U256::ZERO)
        .await?;
    let nonce = tx.nonce;
    s.adopt(tx);
    s.broadcast(chain, nonce).await?;
    Ok(nonce)
}

#[tokio::test]
async fn nonces_follow_each_other_and_receipts_finish_them() {
    let chain = MemChain::new(10 * GWEI, 60_000);
    let mut s = sender(SenderConfig::default());
    let a = send(&mut s, &chain, Purpose::Capture(B256::repeat_byte(1)))
        .await
        .unwrap();
    let b = send(&mut s, &chain, Purpose::Void(B256::repeat_byte(2)))
        .await
        .unwrap();
    assert_eq!((a, b), (0, 1));
    // Broadcasting again (a restart) sends the same bytes: the node already has them.
    s.broadcast(&chain, a).await.unwrap();
    chain.mine();
    let (outcomes, _) = s.poll(&chain).await.unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o.state, TxState::Mined { success: true, .. })));
    assert_eq!(s.pending().count(), 0);
}

#[tokio::test]
async fn a_call_above_its_gas_cap_is_refused_before_a_nonce_is_used() {
    let chain = MemChain::new(10 * GWEI, 140_000);
    let mut s = sender(SenderConfig::default());
    // 140,000 + 20 % headroom is above the void's cap of 150,000 but within the capture's.
    let e = send(&mut s, &chain, Purpose::Void(B256::repeat_byte(1)))
        .await
        .unwrap_err();
    assert!(e.over_limit, "{e}");
    assert_eq!(chain.state.lock().unwrap().sent, 0);
    let n = send(&mut s, &chain, Purpose::Capture(B256::repeat_byte(2)))
        .await
        .unwrap();
    assert_eq!(n, 0, "the refused call used no nonce");
}

#[tokio::test]
async fn replacements_stop_at_the_fee_ceiling_and_the_transaction_is_reported_stuck() {
    // The base fee is above what the operator will ever pay: nothing can be mined.
    let ceiling = 100 * GWEI;
    let chain = MemChain::new(20 * GWEI, 60_000);
    let mut s = sender(SenderConfig {
        max_fee_per_gas: ceiling,
        ..SenderConfig::default()
    });
    send(&mut s, &chain, Purpose::Capture(B256::repeat_byte(1)))
        .await
        .unwrap();
    chain.state.lock().unwrap().base_fee = 1_000 * GWEI;
    for _ in 0..60 {
        chain.mine();
        let (_, changed) = s.poll(&chain).await.unwrap();
        for t in changed {
            s.broadcast(&chain, t.nonce).await.unwrap();
        }
    }
    let tx = s.pending().next().unwrap();
    assert!(tx.attempts.iter().all(|a| a.max_fee <= ceiling));
    assert!(tx.attempts.len() > 1, "it was replaced while it could be");
    assert_eq!(s.stuck().count(), 1);
    let attempts = tx.attempts.len();
    chain.mine();
    s.poll(&chain).await.unwrap();
    assert_eq!(s.pending().next().unwrap().attempts.len(), attempts);
}

#[tokio::test]
async fn replacements_stop_after_the_allowed_number() {
    let chain = MemChain::new(GWEI, 60_000);
    let mut s = sender(SenderConfig {
        max_replacements: 3,
        ..SenderConfig::default()
    });
    send(&mut s, &chain, Purpose::Settle(B256::repeat_byte(1)))
        .await
        .unwrap();
    // No block mines it (they only pass): every few blocks the sender may replace it again.
    for _ in 0..40 {
        chain.state.lock().unwrap().block += 1;
        let (_, changed) = s.poll(&chain).await.unwrap();
        for t in changed {
            s.broadcast(&chain, t.nonce).await.unwrap();
        }
    }
    assert_eq!(s.pending().next().unwrap().attempts.len(), 4);
    assert_eq!(s.stuck().count(), 1);
}
