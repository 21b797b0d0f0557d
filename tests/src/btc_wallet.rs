//! A payer's wallet for tests: one P2WPKH key, funded by mining, that builds and signs payments
//! with the `bitcoin` crate (never with relay code), and builds competing blocks for reorg tests.

use crate::BitcoinNode;
use anyhow::{anyhow, bail, Context, Result};
use bitcoin::block::{Header, Version};
use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::hashes::Hash;
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, transaction, Amount, Block, BlockHash, CompressedPublicKey, OutPoint, ScriptBuf,
    Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use serde_json::json;
use std::str::FromStr;

/// bcoin activates segwit at this height on regtest; witness spends before it are rejected.
pub const SEGWIT_HEIGHT: u64 = 432;

pub struct TestWallet {
    secp: Secp256k1<bitcoin::secp256k1::All>,
    key: SecretKey,
    pubkey: CompressedPublicKey,
    utxos: Vec<(OutPoint, TxOut)>,
    /// The coin each payment spent, for building a double spend of it.
    spent: std::collections::HashMap<Txid, (OutPoint, TxOut)>,
}

impl TestWallet {
    /// A wallet whose key is derived from `seed` (distinct seeds, distinct wallets).
    pub fn new(seed: u8) -> TestWallet {
        let secp = Secp256k1::new();
        let key = SecretKey::from_slice(&[seed.max(1); 32]).expect("valid key");
        let pubkey = CompressedPublicKey(key.public_key(&secp));
        TestWallet {
            secp,
            key,
            pubkey,
            utxos: Vec::new(),
            spent: Default::default(),
        }
    }

    pub fn program(&self) -> [u8; 20] {
        self.pubkey.wpubkey_hash().to_byte_array()
    }

    pub fn script(&self) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&self.pubkey.wpubkey_hash())
    }

    pub fn balance(&self) -> u64 {
        self.utxos.iter().map(|(_, o)| o.value.to_sat()).sum()
    }

    /// Mines `coins` blocks to this wallet past segwit activation, then 100 more so their
    /// coinbases are spendable, and records those coinbases as spendable outputs.
    pub fn fund(&mut self, node: &BitcoinNode, coins: u32) -> Result<()> {
        let burn = [0xee; 20];
        let height = node.block_count()?;
        if height < SEGWIT_HEIGHT {
            node.mine((SEGWIT_HEIGHT - height) as u32, &burn)?;
        }
        let mine = node.mine(coins, &self.program())?;
        node.mine(100, &burn)?;
        for hash in mine {
            let block = get_block(node, &BlockHash::from_str(&hash)?)?;
            let cb = &block.txdata[0];
            for (vout, out) in cb.output.iter().enumerate() {
                if out.script_pubkey == self.script() {
                    self.utxos.push((
                        OutPoint {
                            txid: cb.compute_txid(),
                            vout: vout as u32,
                        },
                        out.clone(),
                    ));
                }
            }
        }
        if self.utxos.is_empty() {
            bail!("mining did not fund the test wallet");
        }
        Ok(())
    }

    /// A signed transaction paying `outputs` from one coin, change back to the wallet. The coin
    /// and the change are updated as if it was broadcast.
    pub fn pay(&mut self, outputs: &[(ScriptBuf, u64)]) -> Result<Transaction> {
        let want: u64 = outputs.iter().map(|(_, s)| s).sum();
        let fee = fee_for(outputs.len());
        let i = self
            .utxos
            .iter()
            .position(|(_, o)| o.value.to_sat() >= want + fee + 1000)
            .ok_or_else(|| anyhow!("the test wallet has no coin of {want} sat"))?;
        let (op, coin) = self.utxos.remove(i);
        let tx = self.spend(op, &coin, outputs, fee, 0)?;
        self.spent.insert(tx.compute_txid(), (op, coin));
        self.keep_change(&tx);
        Ok(tx)
    }

    /// Another signed transaction spending the same coin as `tx` (a double spend), paying
    /// `outputs` with `extra_fee` more fee. The wallet's change follows the new transaction.
    pub fn double_spend(
        &mut self,
        tx: &Transaction,
        outputs: &[(ScriptBuf, u64)],
        extra_fee: u64,
    ) -> Result<Transaction> {
        let (op, coin) = self
            .spent
            .get(&tx.compute_txid())
            .cloned()
            .ok_or_else(|| anyhow!("not a payment of this wallet"))?;
        let fee = fee_for(outputs.len()) + extra_fee;
        let new = self.spend(op, &coin, outputs, fee, 1)?;
        let old = tx.compute_txid();
        self.utxos.retain(|(o, _)| o.txid != old);
        self.keep_change(&new);
        Ok(new)
    }

    /// Records the change output (always the last) of a transaction the wallet built.
    fn keep_change(&mut self, tx: &Transaction) {
        let vout = tx.output.len() - 1;
        self.utxos.push((
            OutPoint {
                txid: tx.compute_txid(),
                vout: vout as u32,
            },
            tx.output[vout].clone(),
        ));
    }

    fn spend(
        &self,
        op: OutPoint,
        coin: &TxOut,
        outputs: &[(ScriptBuf, u64)],
        fee: u64,
        variant: u32,
    ) -> Result<Transaction> {
        let want: u64 = outputs.iter().map(|(_, s)| s).sum();
        let change = coin
            .value
            .to_sat()
            .checked_sub(want + fee)
            .ok_or_else(|| anyhow!("coin too small"))?;
        let mut out: Vec<TxOut> = outputs
            .iter()
            .map(|(s, v)| TxOut {
                value: Amount::from_sat(*v),
                script_pubkey: s.clone(),
            })
            .collect();
        out.push(TxOut {
            value: Amount::from_sat(change),
            script_pubkey: self.script(),
        });
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::from_consensus(variant),
            input: vec![TxIn {
                previous_output: op,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: out,
        };
        let sighash = SighashCache::new(&tx)
            .p2wpkh_signature_hash(0, &coin.script_pubkey, coin.value, EcdsaSighashType::All)
            .context("sighash")?;
        let sig = self
            .secp
            .sign_ecdsa(&Message::from_digest(sighash.to_byte_array()), &self.key);
        let sig = bitcoin::ecdsa::Signature::sighash_all(sig);
        tx.input[0].witness = Witness::p2wpkh(&sig, &self.pubkey.0);
        Ok(tx)
    }
}

/// A generous fee: about 20 sat/vB for one P2WPKH input and `outputs` outputs plus change.
pub fn fee_for(outputs: usize) -> u64 {
    20 * (11 + 68 + 31 * (outputs as u64 + 1))
}

pub fn get_block(node: &BitcoinNode, hash: &BlockHash) -> Result<Block> {
    let hex = node.rpc("getblock", json!([hash.to_string(), 0]))?;
    deserialize_hex(hex.as_str().context("getblock hex")?).context("decoding block")
}

/// Hands `tx` to the node and checks that it really is in the mempool (bcoin answers
/// `sendrawtransaction` with the txid even when it rejects the transaction).
pub fn broadcast(node: &BitcoinNode, tx: &Transaction) -> Result<Txid> {
    let txid = tx.compute_txid();
    let answer = node.rpc("sendrawtransaction", json!([serialize_hex(tx)]));
    // bcoin may answer before the transaction is in its mempool: give it a moment.
    let start = std::time::Instant::now();
    loop {
        let mempool = node.rpc("getrawmempool", json!([]))?;
        let there = mempool
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t.as_str() == Some(&txid.to_string())));
        if there {
            return Ok(txid);
        }
        if start.elapsed() > std::time::Duration::from_secs(30) {
            bail!("the node did not accept {txid}: {answer:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Builds a valid block on top of `parent` (a block of the node's chain or of a branch the test
/// built) holding `txs`, with a coinbase to `payout`, and solves its proof of work.
pub fn build_block(
    parent: &Block,
    parent_height: u64,
    txs: Vec<Transaction>,
    payout: &ScriptBuf,
    salt: u32,
) -> Result<Block> {
    let height = parent_height + 1;
    let mut height_push = Builder::new()
        .push_int(height as i64)
        .into_script()
        .into_bytes();
    height_push.extend_from_slice(&salt.to_le_bytes());
    // Regtest halves the subsidy every 150 blocks. The test's fees go unclaimed (a coinbase may
    // claim less than it could).
    let subsidy = 50_0000_0000u64
        .checked_shr((height / 150) as u32)
        .unwrap_or(0);
    let mut coinbase = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(height_push),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(subsidy),
            script_pubkey: payout.clone(),
        }],
    };
    let mut txdata = vec![coinbase.clone()];
    txdata.extend(txs);
    let mut block = Block {
        header: Header {
            version: Version::from_consensus(0x2000_0000),
            prev_blockhash: parent.block_hash(),
            merkle_root: TxMerkleNode::all_zeros(),
            time: parent.header.time + 1,
            bits: parent.header.bits,
            nonce: 0,
        },
        txdata,
    };
    if block
        .txdata
        .iter()
        .skip(1)
        .any(|t| t.input.iter().any(|i| !i.witness.is_empty()))
    {
        let root = block.witness_root().context("witness root")?;
        let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
        let mut data = vec![0xaa, 0x21, 0xa9, 0xed];
        data.extend_from_slice(commitment.as_byte_array());
        let push = PushBytesBuf::try_from(data).map_err(|_| anyhow!("commitment push"))?;
        // The commitment's reserved value goes in the coinbase's witness.
        coinbase.input[0].witness = Witness::from_slice(&[[0u8; 32]]);
        coinbase.output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: Builder::new()
                .push_opcode(bitcoin::opcodes::all::OP_RETURN)
                .push_slice(push)
                .into_script(),
        });
        block.txdata[0] = coinbase;
    }
    block.header.merkle_root = block.compute_merkle_root().context("merkle root")?;
    let target = block.header.target();
    while !target.is_met_by(block.header.block_hash()) {
        block.header.nonce += 1;
    }
    Ok(block)
}

/// Gives a block to the node (`submitblock`); fails with the node's reason if it refuses it.
pub fn submit_block(node: &BitcoinNode, block: &Block) -> Result<()> {
    let answer = node.rpc("submitblock", json!([serialize_hex(block)]))?;
    match answer.as_str() {
        None => Ok(()),
        // Accepted on a side branch (not yet the best chain) is fine too.
        Some("inconclusive") => Ok(()),
        Some(reason) => bail!("submitblock refused the block: {reason}"),
    }
}

/// The node's block at `height` on its best chain.
pub fn block_at(node: &BitcoinNode, height: u64) -> Result<Block> {
    let hash = node.rpc("getblockhash", json!([height]))?;
    get_block(
        node,
        &BlockHash::from_str(hash.as_str().context("getblockhash")?)?,
    )
}
