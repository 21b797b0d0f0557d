//! Reading the chain from a node that speaks Bitcoin Core's JSON-RPC: bitcoind, or bcoin.
//!
//! Only calls both implementations answer the same way are used, with the forms bcoin needs:
//! `getblockhash` with an integer, `getblock <hash> 0` for the raw block (bcoin has no verbosity 2),
//! `getrawtransaction <txid> 0` for raw transactions. Blocks and transactions are decoded here with
//! the `bitcoin` crate rather than trusting either node's JSON rendering of them.

use crate::BitcoinError;
use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Block, BlockHash, Network, Transaction, Txid};
use serde_json::{json, Value};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

/// Where the watcher reads the chain from.
///
/// Contract: answers reflect the node's current best chain; two calls may straddle a reorg, so the
/// watcher re-checks hashes instead of assuming consistency between calls. Errors that
/// [`BitcoinError::is_retryable`] are retried by the caller on its next poll.
pub trait BlockSource: Send + Sync {
    /// The network the node runs.
    fn network(&self) -> impl Future<Output = Result<Network, BitcoinError>> + Send;
    /// Height of the best block.
    fn tip_height(&self) -> impl Future<Output = Result<u32, BitcoinError>> + Send;
    /// Hash of the best-chain block at `height`, `None` above the tip.
    fn block_hash(
        &self,
        height: u32,
    ) -> impl Future<Output = Result<Option<BlockHash>, BitcoinError>> + Send;
    fn block(&self, hash: &BlockHash) -> impl Future<Output = Result<Block, BitcoinError>> + Send;
    /// Txids in the node's mempool.
    fn mempool(&self) -> impl Future<Output = Result<Vec<Txid>, BitcoinError>> + Send;
    /// A transaction by id, `None` when the node does not know it (any more).
    fn transaction(
        &self,
        txid: &Txid,
    ) -> impl Future<Output = Result<Option<Transaction>, BitcoinError>> + Send;
}

/// A JSON-RPC client. The URL may carry credentials (`http://user:password@127.0.0.1:18443`);
/// they are sent as HTTP basic auth and never logged.
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    url: reqwest::Url,
    auth: Option<(String, String)>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// Bitcoin Core's "invalid address or key" / "not found" code.
const RPC_NOT_FOUND: i64 = -5;
/// Bitcoin Core's "block height out of range".
const RPC_OUT_OF_RANGE: i64 = -8;

impl RpcClient {
    pub fn new(url: &str) -> Result<RpcClient, BitcoinError> {
        let mut url = reqwest::Url::parse(url)
            .map_err(|e| BitcoinError::Transport(format!("bad RPC URL: {e}")))?;
        let auth = (!url.username().is_empty() || url.password().is_some()).then(|| {
            let user = percent_decode(url.username());
            let pass = percent_decode(url.password().unwrap_or_default());
            (user, pass)
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| BitcoinError::Transport(e.to_string()))?;
        Ok(RpcClient { http, url, auth })
    }

    /// The URL without credentials, path or query, for logs.
    pub fn public_url(&self) -> String {
        relay_core::destination::redact_url(self.url.as_str())
    }

    /// One JSON-RPC call.
    pub async fn call(&self, method: &'static str, params: Value) -> Result<Value, BitcoinError> {
        let body = json!({"jsonrpc": "1.0", "id": "relay", "method": method, "params": params});
        let mut req = self.http.post(self.url.clone()).json(&body);
        if let Some((user, pass)) = &self.auth {
            req = req.basic_auth(user, Some(pass));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| BitcoinError::Transport(e.without_url().to_string()))?;
        let status = resp.status();
        // Bitcoin Core answers RPC errors with HTTP 500 and a JSON body; read the body either way.
        let text = resp
            .text()
            .await
            .map_err(|e| BitcoinError::Transport(e.without_url().to_string()))?;
        let v: Value = serde_json::from_str(&text).map_err(|_| {
            BitcoinError::Transport(format!(
                "HTTP {status} with a non-JSON body{}",
                if status.as_u16() == 401 {
                    " (wrong RPC credentials?)"
                } else {
                    ""
                }
            ))
        })?;
        match v.get("error") {
            Some(e) if !e.is_null() => Err(BitcoinError::Rpc {
                method,
                code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned(),
            }),
            _ => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Hands a signed transaction to the node. Returns nothing: bcoin answers with the txid even
    /// for a transaction it rejects, so acceptance is only ever confirmed through the mempool or a
    /// block.
    pub async fn broadcast(&self, tx_hex: &str) -> Result<(), BitcoinError> {
        self.call("sendrawtransaction", json!([tx_hex])).await?;
        Ok(())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode_err(method: &'static str, reason: impl Into<String>) -> BitcoinError {
    BitcoinError::Decode {
        method,
        reason: reason.into(),
    }
}

fn as_str<'a>(method: &'static str, v: &'a Value) -> Result<&'a str, BitcoinError> {
    v.as_str()
        .ok_or_else(|| decode_err(method, format!("expected a string, got {v}")))
}

impl BlockSource for RpcClient {
    async fn network(&self) -> Result<Network, BitcoinError> {
        let info = self.call("getblockchaininfo", json!([])).await?;
        let chain = as_str("getblockchaininfo", &info["chain"])?;
        Ok(match chain {
            "main" | "mainnet" | "bitcoin" => Network::Bitcoin,
            "test" | "testnet" | "testnet3" => Network::Testnet,
            "testnet4" => Network::Testnet4,
            "signet" => Network::Signet,
            "regtest" => Network::Regtest,
            other => {
                return Err(decode_err(
                    "getblockchaininfo",
                    format!("unknown chain {other:?}"),
                ))
            }
        })
    }

    async fn tip_height(&self) -> Result<u32, BitcoinError> {
        let v = self.call("getblockcount", json!([])).await?;
        v.as_u64()
            .and_then(|h| u32::try_from(h).ok())
            .ok_or_else(|| decode_err("getblockcount", format!("not a height: {v}")))
    }

    async fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, BitcoinError> {
        match self.call("getblockhash", json!([height])).await {
            Ok(Value::Null) => Ok(None),
            Ok(v) => BlockHash::from_str(as_str("getblockhash", &v)?)
                .map(Some)
                .map_err(|e| decode_err("getblockhash", e.to_string())),
            Err(BitcoinError::Rpc { code, .. })
                if code == RPC_OUT_OF_RANGE || code == RPC_NOT_FOUND =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn block(&self, hash: &BlockHash) -> Result<Block, BitcoinError> {
        let v = self.call("getblock", json!([hash.to_string(), 0])).await?;
        let block: Block = deserialize_hex(as_str("getblock", &v)?)
            .map_err(|e| decode_err("getblock", e.to_string()))?;
        if block.block_hash() != *hash {
            return Err(decode_err("getblock", "the block has another hash"));
        }
        Ok(block)
    }

    async fn mempool(&self) -> Result<Vec<Txid>, BitcoinError> {
        let v = self.call("getrawmempool", json!([])).await?;
        let list = v
            .as_array()
            .ok_or_else(|| decode_err("getrawmempool", "expected an array"))?;
        list.iter()
            .map(|t| {
                Txid::from_str(as_str("getrawmempool", t)?)
                    .map_err(|e| decode_err("getrawmempool", e.to_string()))
            })
            .collect()
    }

    async fn transaction(&self, txid: &Txid) -> Result<Option<Transaction>, BitcoinError> {
        match self
            .call("getrawtransaction", json!([txid.to_string(), 0]))
            .await
        {
            Ok(Value::Null) => Ok(None),
            Ok(v) => {
                let tx: Transaction = deserialize_hex(as_str("getrawtransaction", &v)?)
                    .map_err(|e| decode_err("getrawtransaction", e.to_string()))?;
                if tx.compute_txid() != *txid {
                    return Err(decode_err(
                        "getrawtransaction",
                        "the transaction has another id",
                    ));
                }
                Ok(Some(tx))
            }
            Err(BitcoinError::Rpc { code, message, .. })
                if code == RPC_NOT_FOUND || message.to_ascii_lowercase().contains("not found") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_are_decoded() {
        let c = RpcClient::new("http://us%40r:p%3Ass@127.0.0.1:18443/").unwrap();
        assert_eq!(c.public_url(), "http://127.0.0.1:18443/");
        assert_eq!(c.auth, Some(("us@r".into(), "p:ss".into())));
        assert!(!format!("{c:?}").contains("p:ss"));
    }
}
