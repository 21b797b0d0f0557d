//! Each real component starts on a loopback port and answers. These fail — never skip — when a
//! tool is missing: `scripts/setup.sh` installs them.

use relay_testnet::{forge_build, repo_root, Anvil, BitcoinImpl, BitcoinNode, LocalStripe};
use serde_json::json;

#[test]
fn anvil_answers_chain_id_and_dies_on_drop() {
    let anvil = Anvil::spawn().unwrap();
    assert_eq!(anvil.chain_id().unwrap(), 31337);
    let url = anvil.url();
    drop(anvil);
    assert!(relay_testnet::json_rpc(&url, None, "eth_chainId", json!([])).is_err());
}

#[test]
fn bitcoin_node_answers_and_mines_a_block() {
    let node = BitcoinNode::spawn().unwrap();
    let info = node.rpc("getblockchaininfo", json!([])).unwrap();
    assert_eq!(info["chain"], "regtest");
    let before = node.block_count().unwrap();
    let hashes = node.mine(1, &[7u8; 20]).unwrap();
    assert_eq!(hashes.len(), 1);
    assert_eq!(node.block_count().unwrap(), before + 1);
    // The block is really there: its header comes back by hash.
    let hash = node.rpc("getblockhash", json!([before + 1])).unwrap();
    assert_eq!(hash.as_str().unwrap(), hashes[0]);
    if node.kind() == BitcoinImpl::Bcoin {
        let raw = node.rpc("getblock", json!([hashes[0], 0])).unwrap();
        assert!(raw.as_str().unwrap().len() > 160, "raw block hex");
    }
}

#[test]
fn localstripe_creates_a_payment_intent() {
    let gw = LocalStripe::spawn().unwrap();
    let pi = gw
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "2500"),
                ("currency", "usd"),
                ("metadata[invoice]", "inv_x"),
            ],
        )
        .unwrap();
    assert!(pi["id"].as_str().unwrap().starts_with("pi_"));
    assert_eq!(pi["amount"], 2500);
    assert_eq!(pi["currency"], "usd");
    assert!(pi["client_secret"].as_str().unwrap().contains("_secret_"));
}

#[test]
fn forge_builds_a_contract_with_solc_js() {
    let contracts = repo_root().join("contracts");
    let artifact = contracts.join("out/Smoke.sol/Smoke.json");
    let _ = std::fs::remove_file(&artifact);
    forge_build(&contracts).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&artifact).unwrap()).unwrap();
    let code = json["bytecode"]["object"].as_str().unwrap();
    assert!(
        code.starts_with("0x") && code.len() > 10,
        "bytecode: {code}"
    );
}
