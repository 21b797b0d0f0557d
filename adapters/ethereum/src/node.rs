//! The Ethereum node as the rail needs it: block headers, the escrow's logs (by range or by block
//! hash), and what the operator's transaction sender asks (nonces, fees, gas, receipts, raw sends).

use crate::bindings::PaymentEscrow;
use alloy::eips::BlockNumberOrTag;
use alloy::network::Ethereum;
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::{Filter, Log, TransactionRequest};
use alloy::sol_types::SolEvent;
use alloy::transports::{RpcError, TransportError};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// A failed node call. `retryable` when the node could not be reached or answered garbage; an
/// error the node returned (a revert, a refused transaction) is not. `over_limit` when the
/// relay itself refused to sign: the transaction would pass one of the operator's caps (gas,
/// fees) — retrying cannot help until the operator changes them.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EthError {
    pub message: String,
    pub retryable: bool,
    pub over_limit: bool,
}

impl EthError {
    pub fn fatal(message: impl Into<String>) -> EthError {
        EthError {
            message: message.into(),
            retryable: false,
            over_limit: false,
        }
    }

    pub fn retry(message: impl Into<String>) -> EthError {
        EthError {
            message: message.into(),
            retryable: true,
            over_limit: false,
        }
    }

    pub fn over_limit(message: impl Into<String>) -> EthError {
        EthError {
            message: message.into(),
            retryable: false,
            over_limit: true,
        }
    }

    fn from_transport(what: &str, e: TransportError) -> EthError {
        let retryable = !matches!(e, RpcError::ErrorResp(_));
        EthError {
            // Transport errors print the URL called: an API key in its path must not reach logs.
            message: relay_core::destination::redact_urls_in(&format!("{what}: {e}")),
            retryable,
            over_limit: false,
        }
    }
}

/// One block's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub number: u64,
    pub hash: B256,
    pub parent: B256,
    pub time: u64,
}

/// What the escrow logged, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EscrowEvent {
    Deposited {
        id: B256,
        payer: Address,
        merchant: Address,
        token: Address,
        amount: U256,
        expiry: u64,
        salt: B256,
    },
    Captured {
        id: B256,
        amount: U256,
        fee: U256,
    },
    Voided {
        id: B256,
        amount: U256,
    },
    Reclaimed {
        id: B256,
        amount: U256,
    },
    Refunded {
        id: B256,
        amount: U256,
    },
    Settled {
        id: B256,
        merchant: Address,
        token: Address,
        amount: U256,
        source_ref: String,
    },
}

/// One escrow log with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowLog {
    pub block: u64,
    pub block_hash: B256,
    pub tx: B256,
    pub index: u64,
    pub event: EscrowEvent,
}

/// Decodes the escrow events the rail follows; others (liquidity, admin) give `None`.
pub fn decode_log(log: &Log) -> Option<EscrowLog> {
    use PaymentEscrow as E;
    let topic = *log.topic0()?;
    let event = if topic == E::PaymentDeposited::SIGNATURE_HASH {
        let d = log.log_decode::<E::PaymentDeposited>().ok()?.inner.data;
        EscrowEvent::Deposited {
            id: d.paymentId,
            payer: d.payer,
            merchant: d.merchant,
            token: d.token,
            amount: d.amount,
            expiry: d.expiry,
            salt: d.salt,
        }
    } else if topic == E::PaymentCaptured::SIGNATURE_HASH {
        let d = log.log_decode::<E::PaymentCaptured>().ok()?.inner.data;
        EscrowEvent::Captured {
            id: d.paymentId,
            amount: d.amount,
            fee: d.fee,
        }
    } else if topic == E::PaymentVoided::SIGNATURE_HASH {
        let d = log.log_decode::<E::PaymentVoided>().ok()?.inner.data;
        EscrowEvent::Voided {
            id: d.paymentId,
            amount: d.amount,
        }
    } else if topic == E::PaymentReclaimed::SIGNATURE_HASH {
        let d = log.log_decode::<E::PaymentReclaimed>().ok()?.inner.data;
        EscrowEvent::Reclaimed {
            id: d.paymentId,
            amount: d.amount,
        }
    } else if topic == E::PaymentRefunded::SIGNATURE_HASH {
        let d = log.log_decode::<E::PaymentRefunded>().ok()?.inner.data;
        EscrowEvent::Refunded {
            id: d.paymentId,
            amount: d.amount,
        }
    } else if topic == E::Settled::SIGNATURE_HASH {
        let d = log.log_decode::<E::Settled>().ok()?.inner.data;
        EscrowEvent::Settled {
            id: d.settlementId,
            merchant: d.merchant,
            token: d.token,
            amount: d.amount,
            source_ref: d.sourceRef,
        }
    } else {
        return None;
    };
    Some(EscrowLog {
        block: log.block_number?,
        block_hash: log.block_hash?,
        tx: log.transaction_hash?,
        index: log.log_index?,
        event,
    })
}

/// Where the watcher reads the chain. The node implements it; unit tests use an in-memory chain.
pub trait ChainSource {
    /// The number of the newest block.
    fn tip(&self) -> impl Future<Output = Result<u64, EthError>> + Send;
    /// The block at `number` on the node's current chain, if it has one.
    fn header(&self, number: u64) -> impl Future<Output = Result<Option<Header>, EthError>> + Send;
    /// The escrow's logs in blocks `from..=to`.
    fn logs_between(
        &self,
        from: u64,
        to: u64,
    ) -> impl Future<Output = Result<Vec<EscrowLog>, EthError>> + Send;
    /// The escrow's logs in the block with this hash (consistent even during a reorg).
    fn logs_in(&self, block: B256)
        -> impl Future<Output = Result<Vec<EscrowLog>, EthError>> + Send;
}

/// What the operator's [`crate::Sender`] asks of a node: nonces, fees, gas, the tip, raw sends and
/// receipts. [`EthNode`] is the real one; the sender's tests use an in-memory chain.
///
/// Contract: `send_raw` of a transaction the node already has, or whose nonce is used, fails
/// with a message naming it ("already known", "nonce too low"); `receipt` is `None` for a
/// transaction not (or no longer) in the chain.
pub trait OperatorNode: Sync {
    /// The account's nonce: the next unused one counting the node's pool (`pending`), or mined
    /// transactions only.
    fn nonce(
        &self,
        who: Address,
        pending: bool,
    ) -> impl Future<Output = Result<u64, EthError>> + Send;
    /// `(max_fee_per_gas, max_priority_fee_per_gas)` to offer now.
    fn fees(&self) -> impl Future<Output = Result<(u128, u128), EthError>> + Send;
    /// Gas for a call; an error when it would revert.
    fn estimate_gas(
        &self,
        from: Address,
        to: Address,
        input: &Bytes,
        value: U256,
    ) -> impl Future<Output = Result<u64, EthError>> + Send;
    /// The number of the newest block.
    fn block_number(&self) -> impl Future<Output = Result<u64, EthError>> + Send;
    fn send_raw(&self, raw: &[u8]) -> impl Future<Output = Result<B256, EthError>> + Send;
    fn receipt(&self, hash: B256)
        -> impl Future<Output = Result<Option<Receipt>, EthError>> + Send;
}

impl OperatorNode for EthNode {
    async fn nonce(&self, who: Address, pending: bool) -> Result<u64, EthError> {
        EthNode::nonce(self, who, pending).await
    }

    async fn fees(&self) -> Result<(u128, u128), EthError> {
        EthNode::fees(self).await
    }

    async fn estimate_gas(
        &self,
        from: Address,
        to: Address,
        input: &Bytes,
        value: U256,
    ) -> Result<u64, EthError> {
        EthNode::estimate_gas(self, from, to, input, value).await
    }

    async fn block_number(&self) -> Result<u64, EthError> {
        ChainSource::tip(self).await
    }

    async fn send_raw(&self, raw: &[u8]) -> Result<B256, EthError> {
        EthNode::send_raw(self, raw).await
    }

    async fn receipt(&self, hash: B256) -> Result<Option<Receipt>, EthError> {
        EthNode::receipt(self, hash).await
    }
}

/// A receipt, reduced to what the sender needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub block: u64,
    pub success: bool,
}

/// A JSON-RPC connection to an Ethereum node, watching one escrow.
#[derive(Clone)]
pub struct EthNode {
    provider: RootProvider<Ethereum>,
    escrow: Address,
    url: String,
}

impl EthNode {
    pub fn new(url: &str, escrow: Address) -> Result<EthNode, EthError> {
        let parsed = url
            .parse()
            .map_err(|e| EthError::fatal(format!("bad Ethereum RPC URL: {e}")))?;
        Ok(EthNode {
            provider: RootProvider::new_http(parsed),
            escrow,
            url: url.to_owned(),
        })
    }

    /// The URL without credentials, path or query (where providers put API keys), for logs.
    pub fn public_url(&self) -> String {
        relay_core::destination::redact_url(&self.url)
    }

    pub fn provider(&self) -> &RootProvider<Ethereum> {
        &self.provider
    }

    pub fn escrow(&self) -> Address {
        self.escrow
    }

    pub async fn chain_id(&self) -> Result<u64, EthError> {
        self.provider
            .get_chain_id()
            .await
            .map_err(|e| EthError::from_transport("eth_chainId", e))
    }

    /// Whether the escrow address holds code.
    pub async fn escrow_deployed(&self) -> Result<bool, EthError> {
        let code = self
            .provider
            .get_code_at(self.escrow)
            .await
            .map_err(|e| EthError::from_transport("eth_getCode", e))?;
        Ok(!code.is_empty())
    }

    pub async fn nonce(&self, who: Address, pending: bool) -> Result<u64, EthError> {
        let call = self.provider.get_transaction_count(who);
        let call = if pending {
            call.pending()
        } else {
            call.latest()
        };
        call.await
            .map_err(|e| EthError::from_transport("eth_getTransactionCount", e))
    }

    /// `(max fee, priority fee)` per gas for a transaction to be mined soon: twice the latest base
    /// fee plus the node's suggested tip.
    pub async fn fees(&self) -> Result<(u128, u128), EthError> {
        let tip = self
            .provider
            .get_max_priority_fee_per_gas()
            .await
            .map_err(|e| EthError::from_transport("eth_maxPriorityFeePerGas", e))?;
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| EthError::from_transport("eth_getBlockByNumber", e))?
            .ok_or_else(|| EthError::fatal("the node has no latest block"))?;
        let base = u128::from(block.header.inner.base_fee_per_gas.unwrap_or(0));
        Ok((base.saturating_mul(2).saturating_add(tip), tip))
    }

    /// Gas for a call; an error (not retryable) when the call would revert.
    pub async fn estimate_gas(
        &self,
        from: Address,
        to: Address,
        input: &Bytes,
        value: U256,
    ) -> Result<u64, EthError> {
        let tx = TransactionRequest::default()
            .from(from)
            .to(to)
            .input(input.clone().into())
            .value(value);
        self.provider
            .estimate_gas(tx)
            .await
            .map_err(|e| EthError::from_transport("eth_estimateGas", e))
    }

    /// Runs a call with `eth_call` and says whether it reverts deterministically: `Ok(None)` when
    /// it would succeed, `Ok(Some(reason))` when the contract itself refuses it (its error,
    /// decoded where it is the escrow's), `Err` when the node could not tell (unreachable, rate
    /// limited, any error without revert data) — which must never be taken for a refusal.
    pub async fn simulate(
        &self,
        from: Address,
        to: Address,
        input: &Bytes,
        value: U256,
    ) -> Result<Option<String>, EthError> {
        let tx = TransactionRequest::default()
            .from(from)
            .to(to)
            .input(input.clone().into())
            .value(value);
        match self.provider.call(tx).await {
            Ok(_) => Ok(None),
            Err(RpcError::ErrorResp(payload)) => match payload.as_revert_data() {
                Some(data) => Ok(Some(revert_reason(&data))),
                None => Err(EthError::retry(format!("eth_call: {payload}"))),
            },
            Err(e) => Err(EthError::from_transport("eth_call", e)),
        }
    }

    /// The account's ether balance, in wei.
    pub async fn balance(&self, who: Address) -> Result<U256, EthError> {
        self.provider
            .get_balance(who)
            .await
            .map_err(|e| EthError::from_transport("eth_getBalance", e))
    }

    pub async fn send_raw(&self, raw: &[u8]) -> Result<B256, EthError> {
        self.provider
            .send_raw_transaction(raw)
            .await
            .map(|p| *p.tx_hash())
            .map_err(|e| EthError::from_transport("eth_sendRawTransaction", e))
    }

    pub async fn receipt(&self, hash: B256) -> Result<Option<Receipt>, EthError> {
        let r = self
            .provider
            .get_transaction_receipt(hash)
            .await
            .map_err(|e| EthError::from_transport("eth_getTransactionReceipt", e))?;
        Ok(r.and_then(|r| {
            Some(Receipt {
                block: r.block_number?,
                success: r.status(),
            })
        }))
    }

    async fn logs(&self, filter: Filter) -> Result<Vec<EscrowLog>, EthError> {
        let logs = self
            .provider
            .get_logs(&filter.address(self.escrow))
            .await
            .map_err(|e| EthError::from_transport("eth_getLogs", e))?;
        Ok(logs.iter().filter_map(decode_log).collect())
    }
}

impl ChainSource for EthNode {
    async fn tip(&self) -> Result<u64, EthError> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| EthError::from_transport("eth_blockNumber", e))
    }

    async fn header(&self, number: u64) -> Result<Option<Header>, EthError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(|e| EthError::from_transport("eth_getBlockByNumber", e))?;
        Ok(block.map(|b| Header {
            number,
            hash: b.header.hash,
            parent: b.header.inner.parent_hash,
            time: b.header.inner.timestamp,
        }))
    }

    async fn logs_between(&self, from: u64, to: u64) -> Result<Vec<EscrowLog>, EthError> {
        self.logs(Filter::new().from_block(from).to_block(to)).await
    }

    async fn logs_in(&self, block: B256) -> Result<Vec<EscrowLog>, EthError> {
        self.logs(Filter::new().at_block_hash(block)).await
    }
}

/// Subscribes to new heads over WebSocket and wakes `wake` on each, reconnecting after a pause
/// when the connection drops. Runs until the task is dropped.
pub async fn follow_heads(url: String, wake: std::sync::Arc<tokio::sync::Notify>) {
    loop {
        match RootProvider::<Ethereum>::connect(&url).await {
            Ok(provider) => match provider.subscribe_blocks().await {
                Ok(mut sub) => {
                    tracing::info!(target: "relay::eth", "following new heads over WebSocket");
                    while sub.recv().await.is_ok() {
                        wake.notify_one();
                    }
                    tracing::warn!(target: "relay::eth", "WebSocket head subscription ended");
                }
                Err(e) => {
                    tracing::warn!(target: "relay::eth", error = %relay_core::destination::redact_in(&e.to_string(), &url), "cannot subscribe to new heads")
                }
            },
            Err(e) => {
                tracing::warn!(target: "relay::eth", error = %relay_core::destination::redact_in(&e.to_string(), &url), "cannot open the WebSocket")
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// A revert's reason: the escrow's custom error by name, else the raw data in hex.
pub fn revert_reason(data: &[u8]) -> String {
    use alloy::sol_types::SolInterface;
    match PaymentEscrow::PaymentEscrowErrors::abi_decode(data) {
        Ok(e) => format!("{e:?}"),
        Err(_) => format!("0x{}", alloy::hex::encode(data)),
    }
}
