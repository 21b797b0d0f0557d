//! Block scanning speed: a synthetic block of 4,000 transactions against 1,000,000 watched
//! scripts, with the relay's `ScriptIndex` and, in the same run, bdk_chain's `SpkTxOutIndex`.
//!
//! Run: `cargo bench -p relay-bitcoin --bench scan` (one thread; prints medians).
#![allow(clippy::print_stdout)]

use bdk_chain::spk_txout::SpkTxOutIndex;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::{
    absolute, transaction, Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxMerkleNode, TxOut, Txid, WPubkeyHash, Witness,
};
use relay_bitcoin::ScriptIndex;
use std::time::{Duration, Instant};

const WATCHED: u32 = 1_000_000;
const TXS: u32 = 4_000;
const ROUNDS: usize = 30;

/// The P2WPKH script of watched address `i`.
fn script(i: u32) -> ScriptBuf {
    let h = sha256::Hash::hash(&i.to_le_bytes());
    ScriptBuf::new_p2wpkh(&WPubkeyHash::from_slice(&h[..20]).unwrap())
}

/// 4,000 transactions of 2 inputs and 2 outputs; one output in 50 pays a watched script.
fn block() -> Block {
    let txs = (0..TXS)
        .map(|t| {
            let input = (0..2)
                .map(|i| TxIn {
                    previous_output: OutPoint {
                        txid: Txid::from_byte_array(
                            sha256::Hash::hash(&[t.to_le_bytes(), [i; 4]].concat()).to_byte_array(),
                        ),
                        vout: 0,
                    },
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::from_slice(&[vec![0u8; 72], vec![2u8; 33]]),
                })
                .collect();
            let output = (0..2u32)
                .map(|o| TxOut {
                    value: Amount::from_sat(10_000 + u64::from(t)),
                    script_pubkey: if (t * 2 + o) % 50 == 0 {
                        script((t * 2 + o) * 97 % WATCHED)
                    } else {
                        script(WATCHED + t * 2 + o)
                    },
                })
                .collect();
            Transaction {
                version: transaction::Version::TWO,
                lock_time: absolute::LockTime::ZERO,
                input,
                output,
            }
        })
        .collect();
    Block {
        header: bitcoin::block::Header {
            version: bitcoin::block::Version::TWO,
            prev_blockhash: BlockHash::all_zeros(),
            merkle_root: TxMerkleNode::all_zeros(),
            time: 0,
            bits: CompactTarget::from_consensus(0x207fffff),
            nonce: 0,
        },
        txdata: txs,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Time to derive one invoice address from a wpkh(tpub/0/*) descriptor.
fn derivation() {
    use relay_core::ReceiveAddresses;
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let xprv = bitcoin::bip32::Xpriv::new_master(bitcoin::Network::Regtest, &[3; 32]).unwrap();
    let desc = format!(
        "wpkh({}/0/*)",
        bitcoin::bip32::Xpub::from_priv(&secp, &xprv)
    );
    let addresses = relay_bitcoin::DescriptorAddresses::new(bitcoin::Network::Regtest);
    let n = 2000;
    let start = Instant::now();
    for i in 0..n {
        addresses.derive(&desc, i).unwrap();
    }
    println!(
        "derive one invoice address:  {:?} (mean of {n})",
        start.elapsed() / n
    );
    let xpub = bitcoin::bip32::Xpub::from_priv(&secp, &xprv);
    let vsecp = bitcoin::secp256k1::Secp256k1::verification_only();
    let start = Instant::now();
    for i in 0..n {
        xpub.ckd_pub(
            &vsecp,
            bitcoin::bip32::ChildNumber::from_normal_idx(i).unwrap(),
        )
        .unwrap();
    }
    println!("  of which one BIP32 step:  {:?}", start.elapsed() / n);
    let start = Instant::now();
    for _ in 0..n {
        let _ = bitcoin::secp256k1::Secp256k1::verification_only();
    }
    println!("  a secp256k1 context:      {:?}", start.elapsed() / n);
}

fn main() {
    derivation();
    let block = block();
    let raw = bitcoin::consensus::serialize(&block);
    println!(
        "block: {} transactions, {} outputs, {} bytes; {} watched scripts",
        block.txdata.len(),
        block.txdata.iter().map(|t| t.output.len()).sum::<usize>(),
        raw.len(),
        WATCHED
    );

    let start = Instant::now();
    let mut ours = ScriptIndex::with_capacity(WATCHED as usize);
    for i in 0..WATCHED {
        ours.insert(script(i), i);
    }
    println!("relay ScriptIndex: built in {:?}", start.elapsed());
    let start = Instant::now();
    let mut bdk = SpkTxOutIndex::<u32>::default();
    for i in 0..WATCHED {
        bdk.insert_spk(i, script(i));
    }
    println!("bdk_chain SpkTxOutIndex: built in {:?}", start.elapsed());

    let (mut t_ours, mut t_bdk, mut t_decode) = (Vec::new(), Vec::new(), Vec::new());
    let mut found = 0;
    for _ in 0..ROUNDS {
        let s = Instant::now();
        let b: Block = bitcoin::consensus::deserialize(&raw).unwrap();
        t_decode.push(s.elapsed());

        let s = Instant::now();
        found = ours.scan_block(&b).len();
        t_ours.push(s.elapsed());

        let s = Instant::now();
        let mut hits = 0;
        for tx in &b.txdata {
            hits += bdk.scan(tx).len();
        }
        t_bdk.push(s.elapsed());
        assert_eq!(hits, found, "both indexes find the same outputs");
    }
    let (ours_m, bdk_m) = (median(t_ours), median(t_bdk));
    println!("matched outputs per block: {found}");
    println!("decode block:              median {:?}", median(t_decode));
    println!("relay ScriptIndex scan:    median {ours_m:?} per block (target <= 5 ms)");
    println!("bdk_chain SpkTxOutIndex:   median {bdk_m:?} per block");
    println!(
        "ratio bdk_chain / relay:   {:.2}",
        bdk_m.as_secs_f64() / ours_m.as_secs_f64()
    );
}
