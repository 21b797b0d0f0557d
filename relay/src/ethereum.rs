//! The Ethereum rail wired in: the node and escrow check at startup, and the loop that follows the
//! escrow's logs, turns them into invoice changes, and captures or voids each deposit once it is
//! final — storing the watcher's cursor, its deposits and the operator's transactions in the same
//! transaction as the invoices they change.

use crate::config::Config;
use anyhow::{bail, Context, Result};
use relay_core::invoice::InvoiceInput;
use relay_core::operator;
use relay_core::{
    Amount, Clock, Invoice, InvoiceId, Method, PaymentRef, PaymentStatus, RefundStatus,
    SettlementStatus, Timestamp,
};
use relay_engine::{Engine, EthereumRail};
use relay_ethereum::alloy::primitives::{Address, Bytes, B256, U256};
use relay_ethereum::alloy::sol_types::SolCall;
use relay_ethereum::bindings::PaymentEscrow;
use relay_ethereum::{
    ClosingKind, Cursor, Deposit, EthNode, Observation, OpTx, OperatorKey, Purpose, Sender,
    SenderConfig, TxState, Update, Watcher, WatcherConfig,
};
use relay_store::{ChainWrite, Commit, PayoutKind, Store, TrackedRecord};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

mod operate;
use operate::{step_sender, Failures};

/// The name of the Ethereum rail's state in the store.
const CHAIN: &str = "ethereum";
/// Refusals of one operation before the relay stops trying (and says so loudly).
const MAX_FAILURES: u32 = operator::MAX_REFUSALS;

/// The running rail: the node, the operator key, and what the API needs.
pub struct Ethereum {
    pub node: EthNode,
    pub key: OperatorKey,
    pub rail: EthereumRail,
    pub ws_url: Option<String>,
    pub poll: Duration,
    pub fee_bps: u16,
    pub start_block: u64,
    /// Gas caps, the fee ceiling and the replacement limit of the operator's transactions.
    pub sender: SenderConfig,
    /// Below this balance (wei) the operator key is reported low.
    pub low_balance: U256,
    /// Ether deposits worth at most this are not voided (`None`: the void's own gas cost).
    pub void_min: Option<U256>,
    /// The ERC-20 contracts the relay knows (configured tokens): only their deposits are
    /// voided; any other token's transfer is a call into a contract nobody vetted.
    pub tokens: Vec<Address>,
}

/// Reads the operator key from the file (preferred) or the environment setting.
fn operator_key(config: &Config) -> Result<OperatorKey> {
    let text = match (&config.operator_key_file, &config.operator_key) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the operator key file {}", path.display()))?,
        (None, Some(k)) => k.clone(),
        (None, None) => bail!("no operator key: set operator_key_file or RELAY_OPERATOR_KEY"),
    };
    OperatorKey::parse(&text).map_err(|e| anyhow::anyhow!("operator key: {e}"))
}

/// Connects to the node (waiting up to `wait`), and checks that the escrow exists and that the
/// key is its operator, so a misconfiguration stops the relay at startup rather than at the first
/// payment.
pub async fn connect(config: &Config, wait: Duration) -> Result<Option<Ethereum>> {
    let (Some(url), Some(escrow)) = (&config.eth_rpc_url, &config.escrow_address) else {
        return Ok(None);
    };
    let escrow: Address = escrow
        .parse()
        .with_context(|| format!("escrow_address {escrow} is not an address"))?;
    let key = operator_key(config)?;
    let node = EthNode::new(url, escrow)?;
    let start = std::time::Instant::now();
    let chain_id = loop {
        match node.chain_id().await {
            Ok(id) => break id,
            Err(e) if e.retryable && start.elapsed() < wait => {
                tracing::warn!(target: "relay::eth", node = node.public_url(), error = %e, "waiting for the Ethereum node");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot reach the Ethereum node at {}", node.public_url())
                })
            }
        }
    };
    if !node.escrow_deployed().await? {
        bail!("no contract at escrow_address {escrow:#x} on chain {chain_id}");
    }
    let contract = PaymentEscrow::new(escrow, node.provider().clone());
    let operator = contract
        .operator()
        .call()
        .await
        .context("reading the escrow's operator")?;
    if operator != key.address() {
        bail!(
            "the operator key ({:#x}) is not the escrow's operator ({operator:#x})",
            key.address()
        );
    }
    let max_fee_bps = contract
        .maxFeeBps()
        .call()
        .await
        .context("reading the escrow's fee cap")?;
    if config.eth_fee_bps > max_fee_bps {
        bail!(
            "eth_fee_bps ({}) is above the escrow's fee cap ({max_fee_bps} bps): every capture would fail",
            config.eth_fee_bps
        );
    }
    tracing::info!(target: "relay::eth", node = node.public_url(), chain_id, escrow = %escrow, operator = %key.address(), "ethereum rail ready");
    let reserves_node = node.clone();
    Ok(Some(Ethereum {
        node,
        key,
        rail: EthereumRail {
            chain_id,
            escrow,
            capture_window_secs: config.eth_capture_window_secs,
            settlement_min_confirmations: config.settlement_min_confirmations,
            reserves: Arc::new(EscrowReserves {
                node: reserves_node,
                escrow,
            }),
        },
        ws_url: config.eth_ws_url.clone(),
        poll: Duration::from_millis(config.eth_poll_ms),
        fee_bps: config.eth_fee_bps,
        start_block: config.eth_start_block,
        sender: SenderConfig {
            gas_caps: relay_ethereum::GasCaps {
                capture: config.eth_gas_cap_capture,
                void: config.eth_gas_cap_void,
                refund: config.eth_gas_cap_refund,
                settle: config.eth_gas_cap_settle,
            },
            max_fee_per_gas: u128::from(config.eth_max_fee_gwei) * 1_000_000_000,
            max_replacements: usize::try_from(config.eth_max_replacements).unwrap_or(usize::MAX),
            ..SenderConfig::default()
        },
        low_balance: U256::from(config.eth_operator_low_balance_wei),
        void_min: config.eth_void_min_wei.map(U256::from),
        tokens: config
            .tokens
            .iter()
            .filter_map(|t| t.contract.parse().ok())
            .collect(),
    }))
}

/// Reads merchants' refund reserves from the escrow (`refundReserve(merchant, token)`).
struct EscrowReserves {
    node: EthNode,
    escrow: Address,
}

impl relay_engine::RefundReserves for EscrowReserves {
    fn reserve(
        &self,
        merchant: Address,
        token: Address,
    ) -> relay_engine::gateway::BoxFuture<'_, Result<U256, String>> {
        Box::pin(async move {
            PaymentEscrow::new(self.escrow, self.node.provider().clone())
                .refundReserve(merchant, token)
                .call()
                .await
                .map_err(|e| e.to_string())
        })
    }
}

fn deposit_key(id: &B256) -> Vec<u8> {
    let mut k = b"d".to_vec();
    k.extend_from_slice(id.as_slice());
    k
}

fn tx_key(nonce: u64) -> Vec<u8> {
    let mut k = b"o".to_vec();
    k.extend_from_slice(&nonce.to_be_bytes());
    k
}

/// Rebuilds the watcher and the sender from the store.
async fn load<S: Store>(store: &S, eth: &Ethereum) -> Result<(Watcher, Sender)> {
    let cursor: Option<Cursor> = store
        .chain_cursor(CHAIN)
        .await?
        .map(|b| serde_json::from_slice(&b))
        .transpose()
        .context("stored ethereum cursor")?;
    let (mut deposits, mut txs) = (Vec::new(), Vec::new());
    for (k, v) in store.chain_tracked(CHAIN).await? {
        match k.first() {
            Some(b'd') => deposits.push(serde_json::from_slice::<Deposit>(&v)?),
            Some(b'o') => txs.push(serde_json::from_slice::<OpTx>(&v)?),
            _ => tracing::error!(target: "relay::eth", "unknown record in the ethereum state"),
        }
    }
    let watcher = Watcher::new(
        WatcherConfig {
            start_block: eth.start_block,
            ..WatcherConfig::default()
        },
        cursor,
        deposits,
    );
    let sender = Sender::new(eth.key.clone(), eth.rail.chain_id, eth.sender.clone(), txs);
    Ok((watcher, sender))
}

/// The invoice a deposit names (by its salt), if any.
async fn invoice_of<S: Store>(store: &S, d: &Deposit) -> Result<Option<Invoice>> {
    let reference = relay_core::Lookup::eth_salt(&format!("{:#x}", d.salt));
    let Some(id) = store.invoice_by_lookup(&reference).await? else {
        return Ok(None);
    };
    Ok(store.invoice(&id).await?)
}

/// How a deposit relates to its invoice.
enum Match {
    /// The invoice's own payment id: the deposit pays it.
    Exact,
    /// The invoice's salt with other terms, in the invoice's asset.
    SameAsset,
    /// Nothing to record on the invoice.
    Unrelated,
}

fn match_of(invoice: &Invoice, d: &Deposit) -> Match {
    let Some(pay_to) = invoice
        .quote_for(Method::Ethereum)
        .and_then(|q| q.ethereum.as_ref())
    else {
        return Match::Unrelated;
    };
    if pay_to.payment_id == d.id {
        return Match::Exact;
    }
    let expected = pay_to.token.unwrap_or(Address::ZERO);
    if expected == d.token {
        Match::SameAsset
    } else {
        Match::Unrelated
    }
}

/// What an observation means for its invoice, if anything: the deposit's, or (for refunds and
/// settlements, which need no deposit) the invoice of the refund or settlement.
fn input_for(item: &Item<'_>, invoice: &Invoice) -> Option<InvoiceInput> {
    let (obs, d) = (item.obs, item.deposit);
    match obs {
        Observation::Refunded { id, amount, tx } => {
            // The refund whose operator transaction this is (found by its hash).
            let key = item.refund?;
            let reference = PaymentRef::eth(*id);
            let r = invoice.refunds.iter().find(|r| {
                r.payment == reference && refund_key(&r.id) == key && r.amount == Amount(*amount)
            })?;
            return Some(InvoiceInput::RefundPaid {
                id: r.id.clone(),
                tx: Some(format!("{tx:#x}")),
                gateway_refund: None,
            });
        }
        Observation::Settled { id, tx, .. } => {
            return Some(InvoiceInput::SettlementPaid {
                id: relay_core::SettlementId(*id),
                tx: format!("{tx:#x}"),
            })
        }
        _ => {}
    }
    let d = d?;
    let how = match_of(invoice, d);
    let quote = invoice.quote_for(Method::Ethereum)?;
    let reference = PaymentRef::eth(d.id);
    let asset = quote.due.asset.code.clone();
    let seen_at = Some(Timestamp(i64::try_from(d.block_time).unwrap_or(i64::MAX)));
    match (obs, how) {
        (Observation::Seen { confirmations, .. }, Match::Exact) => Some(InvoiceInput::Observe {
            reference,
            method: Method::Ethereum,
            asset,
            amount: Amount(d.amount),
            confirmed: *confirmations >= invoice.confirmations_required(Method::Ethereum),
            confirmations: *confirmations,
            seen_at,
        }),
        (Observation::Reverted { .. }, Match::Exact) => invoice
            .payments
            .iter()
            .any(|p| p.reference == reference)
            .then_some(InvoiceInput::Drop {
                reference,
                status: PaymentStatus::Reverted,
            }),
        (Observation::Closed { kind, tx, fee, .. }, Match::Exact | Match::SameAsset) => {
            match kind {
                ClosingKind::Captured => Some(InvoiceInput::Captured {
                    reference,
                    tx: format!("{tx:#x}"),
                    fee: Amount(*fee),
                }),
                ClosingKind::Voided | ClosingKind::Reclaimed => Some(InvoiceInput::Return {
                    reference,
                    method: Method::Ethereum,
                    asset,
                    amount: Amount(d.amount),
                    seen_at,
                    status: if *kind == ClosingKind::Voided {
                        PaymentStatus::Voided
                    } else {
                        PaymentStatus::Reclaimed
                    },
                }),
            }
        }
        _ => None,
    }
}

/// One observation with what it concerns: its deposit, or (escrow refunds) the key of the refund
/// whose operator transaction logged it.
struct Item<'a> {
    obs: &'a Observation,
    deposit: Option<&'a Deposit>,
    refund: Option<B256>,
}

/// The key an escrow refund's operator transaction carries (`Purpose::Refund`).
fn refund_key(refund_id: &str) -> B256 {
    relay_ethereum::alloy::primitives::keccak256(refund_id.as_bytes())
}

/// Stores one watcher step: its cursor, deposits and the invoice changes of its observations, in
/// one transaction.
async fn commit_update<S: Store>(
    engine: &Engine<S>,
    watcher: &Watcher,
    sender: &Sender,
    update: &Update,
) -> Result<usize> {
    let store = &engine.store;
    let mut put: Vec<TrackedRecord> = Vec::new();
    for id in &update.changed {
        if let Some(d) = watcher.deposit(id) {
            put.push((deposit_key(id), serde_json::to_vec(d)?));
        }
    }
    let mut by_invoice: BTreeMap<InvoiceId, Vec<Item<'_>>> = BTreeMap::new();
    let item = |obs, deposit, refund| Item {
        obs,
        deposit,
        refund,
    };
    for o in &update.observations {
        let id = match o {
            Observation::Seen { id, .. }
            | Observation::Reverted { id }
            | Observation::Closed { id, .. } => id,
            Observation::Refunded { id, tx, .. } => {
                // Only the relay's own refund transactions pay its refunds.
                let key = sender.for_payment(*id).find_map(|t| match t.purpose {
                    Purpose::Refund(_, key) if t.attempts.iter().any(|a| a.hash == *tx) => {
                        Some(key)
                    }
                    _ => None,
                });
                let found = match key {
                    Some(key) => {
                        payout_invoice(store, PayoutKind::EthRefund, |_, record| {
                            refund_key(record) == key
                        })
                        .await?
                    }
                    None => None,
                };
                match found {
                    Some(inv) => by_invoice.entry(inv).or_default().push(item(o, None, key)),
                    None => {
                        tracing::info!(target: "relay::eth", payment_id = %id, %tx, "escrow refund not sent by this relay, or already recorded")
                    }
                }
                continue;
            }
            Observation::Settled { id, .. } => {
                let sid = relay_core::SettlementId(*id);
                let is_it = |_: &Invoice, record: &str| record.parse() == Ok(sid);
                match payout_invoice(store, PayoutKind::Settlement, is_it).await? {
                    Some(inv) => by_invoice.entry(inv).or_default().push(item(o, None, None)),
                    None => {
                        tracing::info!(target: "relay::eth", settlement_id = %id, "settlement not pending (already recorded)")
                    }
                }
                continue;
            }
        };
        let Some(d) = watcher.deposit(id) else {
            continue;
        };
        match invoice_of(store, d).await? {
            Some(inv) => by_invoice
                .entry(inv.id)
                .or_default()
                .push(item(o, Some(d), None)),
            None => {
                tracing::info!(target: "relay::eth", payment_id = %d.id, salt = %d.salt, "deposit for no known invoice")
            }
        }
    }
    let write = ChainWrite {
        cursor: serde_json::to_vec(watcher.cursor())?,
        put,
        delete: update.forgotten.iter().map(deposit_key).collect(),
        invoices: Vec::new(),
    };
    Ok(engine
        .commit_chain_step(
            CHAIN,
            write,
            &by_invoice,
            input_for,
            |i| {
                let sender = i.deposit.map(|d| format!("{:#x}", d.payer));
                relay_engine::risk::Payer {
                    addresses: sender.iter().cloned().collect(),
                    eth_sender: sender,
                    ..Default::default()
                }
            },
            |i| format!("{:?}", i.obs),
        )
        .await?)
}

/// The invoice with payout work of `kind` that `matches` (given the invoice and the record id).
async fn payout_invoice<S: Store>(
    store: &S,
    kind: PayoutKind,
    matches: impl Fn(&Invoice, &str) -> bool,
) -> Result<Option<InvoiceId>> {
    for w in store.payouts(kind).await? {
        if let Some(inv) = store.invoice(&w.invoice).await? {
            if matches(&inv, &w.record) {
                return Ok(Some(inv.id));
            }
        }
    }
    Ok(None)
}

/// Stores operator transactions and forgets pruned ones (alone: no invoice changes with them).
async fn store_txs<S: Store>(
    store: &S,
    watcher: &Watcher,
    txs: &[OpTx],
    forget: &[u64],
) -> Result<()> {
    let write = ChainWrite {
        cursor: serde_json::to_vec(watcher.cursor())?,
        put: txs
            .iter()
            .map(|t| Ok((tx_key(t.nonce), serde_json::to_vec(t)?)))
            .collect::<Result<_>>()?,
        delete: forget.iter().map(|n| tx_key(*n)).collect(),
        invoices: Vec::new(),
    };
    match store.commit_chain(CHAIN, &write).await? {
        Commit::Done => Ok(()),
        other => bail!("storing operator transactions: {other:?}"),
    }
}

/// Follows the chain and acts on it until the task is dropped. After any store error everything
/// is rebuilt from the store, so memory never runs ahead of what was stored.
pub async fn watch_loop<S: Store + Clone>(engine: Engine<S>, eth: Arc<Ethereum>) {
    let store = &engine.store;
    let wake = Arc::new(tokio::sync::Notify::new());
    let _heads = AbortOnDrop(
        eth.ws_url
            .clone()
            .map(|url| tokio::spawn(relay_ethereum::node::follow_heads(url, wake.clone()))),
    );
    'rebuild: loop {
        let (mut watcher, mut sender) = match load(store, &eth).await {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(target: "relay::eth", error = %e, "cannot load the ethereum state");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let mut failures = Failures::default();
        // Whatever was stored but maybe never sent (a crash between the two) goes out now.
        for nonce in sender.pending().map(|t| t.nonce).collect::<Vec<_>>() {
            if let Err(e) = sender.broadcast(&eth.node, nonce).await {
                tracing::warn!(target: "relay::eth", nonce, error = %e, "rebroadcast failed");
            }
        }
        tracing::info!(target: "relay::eth", next_block = watcher.cursor().next, deposits = watcher.deposits().count(), pending_txs = sender.pending().count(), "ethereum watcher started");
        loop {
            let update = match watcher.poll(&eth.node).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(target: "relay::eth", error = %e, retryable = e.retryable, "poll failed");
                    tokio::time::sleep(eth.poll).await;
                    continue 'rebuild;
                }
            };
            if !update.is_empty() {
                if let Err(e) = commit_update(&engine, &watcher, &sender, &update).await {
                    tracing::error!(target: "relay::eth", error = %e, "storing the watcher's step failed; reloading");
                    tokio::time::sleep(eth.poll).await;
                    continue 'rebuild;
                }
                if update.blocks_dropped > 0 {
                    metrics::counter!("relay_eth_reorgs_total").increment(1);
                    tracing::warn!(target: "relay::eth", dropped = update.blocks_dropped, "reorg");
                }
                metrics::counter!("relay_eth_blocks_read_total").increment(update.blocks_read);
                if let Some(h) = watcher.head() {
                    metrics::gauge!("relay_eth_head_block").set(h as f64);
                }
            }
            if update.more {
                continue;
            }
            if let Err(e) = step_sender(&engine, &eth, &watcher, &mut sender, &mut failures).await {
                tracing::warn!(target: "relay::eth", error = %e, "operator step failed; reloading");
                tokio::time::sleep(eth.poll).await;
                continue 'rebuild;
            }
            tokio::select! {
                _ = tokio::time::sleep(eth.poll) => {}
                _ = wake.notified() => {}
                // A refund or settlement to send: act without waiting for the next block.
                _ = store.subscribe(relay_store::Wake::Payouts).notified() => {}
            }
        }
    }
}

/// Stops the head subscription when the watch loop is dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}
