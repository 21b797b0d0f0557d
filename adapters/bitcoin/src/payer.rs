//! Who paid a bitcoin transaction, as far as the chain tells: the output scripts its inputs
//! spent from, where an input shows its public key. The risk rules count a payer's payments by
//! them (`btc_input`) and screen their addresses.

use bitcoin::{ScriptBuf, Transaction};

/// The scripts `tx`'s inputs spent from, where an input shows its public key: a P2WPKH spend
/// (witness: signature, key), P2SH-P2WPKH (the same witness under a one-push script), P2PKH
/// (script: signature, key). Others (scripts, taproot) say nothing here.
pub fn payer_scripts(tx: &Transaction) -> Vec<ScriptBuf> {
    use bitcoin::{CompressedPublicKey, PublicKey};
    let mut out: Vec<ScriptBuf> = Vec::new();
    for input in tx.input.iter().filter(|_| !tx.is_coinbase()) {
        let script = if input.witness.len() == 2 {
            let Ok(key) = CompressedPublicKey::from_slice(&input.witness[1]) else {
                continue;
            };
            let p2wpkh = ScriptBuf::new_p2wpkh(&key.wpubkey_hash());
            if input.script_sig.is_empty() {
                p2wpkh
            } else {
                ScriptBuf::new_p2sh(&p2wpkh.script_hash())
            }
        } else if input.witness.is_empty() {
            let pushes: Vec<_> = input
                .script_sig
                .instructions()
                .filter_map(|i| i.ok()?.push_bytes().map(|b| b.as_bytes().to_vec()))
                .collect();
            let [_, key] = pushes.as_slice() else {
                continue;
            };
            let Ok(key) = PublicKey::from_slice(key) else {
                continue;
            };
            ScriptBuf::new_p2pkh(&key.pubkey_hash())
        } else {
            continue;
        };
        if !out.contains(&script) {
            out.push(script);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payers_scripts_are_read_from_its_inputs_where_they_show_a_key() {
        use bitcoin::{PublicKey, Sequence, TxIn, Witness};
        let key = PublicKey::from_slice(
            &hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
                .unwrap(),
        )
        .unwrap();
        let sig = vec![0x30u8; 71];
        let input = |script_sig: ScriptBuf, witness: Witness| TxIn {
            previous_output: bitcoin::OutPoint::null(),
            script_sig,
            sequence: Sequence::MAX,
            witness,
        };
        let p2wpkh = input(
            ScriptBuf::new(),
            Witness::from_slice(&[sig.clone(), key.to_bytes()]),
        );
        let p2pkh = input(
            bitcoin::script::Builder::new()
                .push_slice(<&bitcoin::script::PushBytes>::try_from(sig.as_slice()).unwrap())
                .push_key(&key)
                .into_script(),
            Witness::new(),
        );
        let other = input(ScriptBuf::new(), Witness::from_slice(&[vec![1u8; 64]]));
        let tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![p2wpkh.clone(), p2pkh, other, p2wpkh],
            output: vec![],
        };
        let wpkh = key.wpubkey_hash().unwrap();
        assert_eq!(
            payer_scripts(&tx),
            vec![
                ScriptBuf::new_p2wpkh(&wpkh),
                ScriptBuf::new_p2pkh(&key.pubkey_hash())
            ],
            "each script once; a taproot key spend says nothing"
        );
    }
}
