//! The Ethereum rail wired in: the node and escrow check at startup, and the loop that follows the
//! escrow's logs, turns them into invoice changes, and captures or voids each deposit once it is
//! final — storing the watcher's cursor, its deposits and the operator's transactions in the same
//! transaction as the invoices they change.

use crate::config::Config;
use anyhow::{bail, Context, Result};
use relay_api::{EthereumRail, IdSource};
use relay_core::invoice::InvoiceInput;
use relay_core::operator;
use relay_core::{
    eth_payment_reference, eth_salt_reference, Amount, Clock, Invoice, InvoiceId, Method,
    PaymentStatus, RefundStatus, SettlementStatus, Timestamp,
};
use relay_ethereum::alloy::primitives::{Address, Bytes, B256, U256};
use relay_ethereum::alloy::sol_types::SolCall;
use relay_ethereum::bindings::PaymentEscrow;
use relay_ethereum::{
    ClosingKind, Cursor, Deposit, EthNode, Observation, OpTx, OperatorKey, Purpose, Sender,
    SenderConfig, TxState, Update, Watcher, WatcherConfig,
};
use relay_store::{ChainWrite, Commit, PayoutKind, SledStore, Store, TrackedRecord};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

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

impl relay_api::RefundReserves for EscrowReserves {
    fn reserve(
        &self,
        merchant: Address,
        token: Address,
    ) -> relay_api::card::BoxFuture<'_, Result<U256, String>> {
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
fn load(store: &SledStore, eth: &Ethereum) -> Result<(Watcher, Sender)> {
    let cursor: Option<Cursor> = store
        .chain_cursor(CHAIN)?
        .map(|b| serde_json::from_slice(&b))
        .transpose()
        .context("stored ethereum cursor")?;
    let (mut deposits, mut txs) = (Vec::new(), Vec::new());
    for (k, v) in store.chain_tracked(CHAIN)? {
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
fn invoice_of(store: &SledStore, d: &Deposit) -> Result<Option<Invoice>> {
    let reference = eth_salt_reference(&format!("{:#x}", d.salt));
    let Some(id) = store.invoice_by_reference(&reference)? else {
        return Ok(None);
    };
    Ok(store.invoice(&id)?)
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
    if pay_to
        .payment_id
        .eq_ignore_ascii_case(&format!("{:#x}", d.id))
    {
        return Match::Exact;
    }
    let expected = pay_to
        .token
        .as_deref()
        .and_then(|t| t.parse::<Address>().ok())
        .unwrap_or(Address::ZERO);
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
            let reference = eth_payment_reference(&format!("{id:#x}"));
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
                id: format!("{id:#x}"),
                tx: format!("{tx:#x}"),
            })
        }
        _ => {}
    }
    let d = d?;
    let how = match_of(invoice, d);
    let quote = invoice.quote_for(Method::Ethereum)?;
    let reference = eth_payment_reference(&format!("{:#x}", d.id));
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
fn commit_update(
    store: &SledStore,
    clock: &dyn Clock,
    ids: &IdSource,
    watcher: &Watcher,
    sender: &Sender,
    update: &Update,
) -> Result<usize> {
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
                    Some(key) => payout_invoice(store, PayoutKind::EthRefund, |_, record| {
                        refund_key(record) == key
                    })?,
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
                let sid = format!("{id:#x}");
                match payout_invoice(store, PayoutKind::Settlement, |_, record| record == sid)? {
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
        match invoice_of(store, d)? {
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
    crate::chain::commit_step(
        store,
        CHAIN,
        clock,
        ids,
        write,
        &by_invoice,
        input_for,
        |i| format!("{:?}", i.obs),
    )
}

/// The invoice with payout work of `kind` that `matches` (given the invoice and the record id).
fn payout_invoice(
    store: &SledStore,
    kind: PayoutKind,
    matches: impl Fn(&Invoice, &str) -> bool,
) -> Result<Option<InvoiceId>> {
    for w in store.payouts(kind)? {
        if let Some(inv) = store.invoice(&w.invoice)? {
            if matches(&inv, &w.record) {
                return Ok(Some(inv.id));
            }
        }
    }
    Ok(None)
}

/// Stores operator transactions and forgets pruned ones (alone: no invoice changes with them).
fn store_txs(store: &SledStore, watcher: &Watcher, txs: &[OpTx], forget: &[u64]) -> Result<()> {
    let write = ChainWrite {
        cursor: serde_json::to_vec(watcher.cursor())?,
        put: txs
            .iter()
            .map(|t| Ok((tx_key(t.nonce), serde_json::to_vec(t)?)))
            .collect::<Result<_>>()?,
        delete: forget.iter().map(|n| tx_key(*n)).collect(),
        invoices: Vec::new(),
    };
    match store.commit_chain(CHAIN, &write)? {
        Commit::Done => Ok(()),
        other => bail!("storing operator transactions: {other:?}"),
    }
}

/// Failed attempts at preparing operator transactions, by deposit (or refund key). Only a
/// deterministic refusal — the escrow reverting the call in an `eth_call` — counts toward giving
/// up; a node that cannot be reached, rate-limits, or fails to estimate fees or nonces is retried
/// with a growing pause for as long as it takes.
#[derive(Default)]
struct Failures {
    refused: HashMap<B256, u32>,
    transient: HashMap<B256, (u32, std::time::Instant)>,
    /// Deposits left to their payers (not worth a void), until the relay restarts.
    left: std::collections::HashSet<B256>,
    low_balance_logged: Option<std::time::Instant>,
}

impl Failures {
    fn count(&self, key: B256) -> u32 {
        self.refused.get(&key).copied().unwrap_or(0)
    }

    fn forget(&mut self, key: B256) {
        self.refused.remove(&key);
        self.transient.remove(&key);
    }

    /// Whether the key is pausing after a transient failure.
    fn waiting(&self, key: B256) -> bool {
        self.transient
            .get(&key)
            .is_some_and(|(_, until)| std::time::Instant::now() < *until)
    }

    /// Asks the node whether the failed call reverts, and counts the failure accordingly.
    #[allow(clippy::too_many_arguments)]
    async fn classify(
        &mut self,
        node: &EthNode,
        from: Address,
        to: Address,
        key: B256,
        purpose: Purpose,
        input: &Bytes,
        error: &relay_ethereum::EthError,
    ) {
        let verdict = if error.over_limit {
            // The relay's own cap refused it: as final as a revert until the operator acts.
            Ok(Some(error.message.clone()))
        } else {
            node.simulate(from, to, input, U256::ZERO).await
        };
        match verdict {
            Ok(Some(reason)) => {
                let n = self.refused.entry(key).or_default();
                *n += 1;
                self.transient.remove(&key);
                if *n >= MAX_FAILURES {
                    tracing::error!(target: "relay::eth", payment_id = %purpose.payment_id(), ?purpose, %reason, "this operation is refused (the escrow reverts it, or it passes the operator's caps): giving up on it, the operator must look at it");
                } else {
                    tracing::warn!(target: "relay::eth", payment_id = %purpose.payment_id(), ?purpose, %reason, "this operation is refused (the escrow reverts it, or it passes the operator's caps)");
                }
            }
            // It would go through now (the failure was the node's), or the node cannot say.
            _ => {
                let slot = self
                    .transient
                    .entry(key)
                    .or_insert((0, std::time::Instant::now()));
                slot.0 = slot.0.saturating_add(1);
                let pause = Duration::from_millis(250u64 << slot.0.min(8));
                slot.1 = std::time::Instant::now() + pause;
                metrics::counter!("relay_eth_operator_retries_total", "purpose" => purpose.name())
                    .increment(1);
                tracing::warn!(target: "relay::eth", payment_id = %purpose.payment_id(), ?purpose, error = %error, attempt = slot.0, ?pause, "operator transaction could not be prepared (node error); retrying");
            }
        }
    }
}

/// The deposit as the operator's rules see it.
fn deposit_view(d: &Deposit, depth: u32) -> operator::DepositView {
    operator::DepositView {
        id: d.id,
        token: d.token,
        amount: d.amount,
        expiry: d.expiry,
        block_time: d.block_time,
        depth,
    }
}

/// The history of `purpose`'s operations (a deposit's: any purpose on its payment id).
fn attempts_of(
    sender: &Sender,
    failures: &Failures,
    key: B256,
    same: impl Fn(&OpTx) -> bool,
) -> operator::Attempts {
    let mut attempts = operator::Attempts {
        live: false,
        refused: failures.count(key),
    };
    for t in sender.for_payment(key).filter(|t| same(t)) {
        match t.state {
            TxState::Pending | TxState::Mined { success: true, .. } => attempts.live = true,
            TxState::Mined { success: false, .. } => attempts.refused += 1,
            TxState::Displaced => {}
        }
    }
    attempts
}

/// Captures or voids every final, open deposit that has no operation under way. Each
/// transaction is stored before it is broadcast.
async fn act(
    store: &SledStore,
    eth: &Ethereum,
    watcher: &Watcher,
    sender: &mut Sender,
    failures: &mut Failures,
) -> Result<()> {
    let chain_time = if watcher.cursor().time > 0 {
        watcher.cursor().time
    } else {
        u64::try_from(relay_api::SystemClock.now().0).unwrap_or(0)
    };
    let due: Vec<Deposit> = watcher
        .deposits()
        .filter(|d| d.closed.is_none() && d.block.is_some())
        .cloned()
        .collect();
    for d in due {
        if failures.waiting(d.id) || failures.left.contains(&d.id) {
            continue;
        }
        let invoice = invoice_of(store, &d)?;
        let attempts = attempts_of(sender, failures, d.id, |_| true);
        let view = deposit_view(&d, watcher.depth(&d));
        let action =
            operator::deposit_action(invoice.as_ref(), &view, chain_time, attempts, eth.fee_bps);
        let (purpose, input) = match action {
            operator::DepositAction::Wait | operator::DepositAction::GiveUp => continue,
            operator::DepositAction::Capture { fee } => {
                let call = PaymentEscrow::captureCall {
                    id: d.id,
                    amount: d.amount,
                    fee,
                };
                (Purpose::Capture(d.id), Bytes::from(call.abi_encode()))
            }
            operator::DepositAction::Void => {
                let call = PaymentEscrow::voidCall { id: d.id };
                (Purpose::Void(d.id), Bytes::from(call.abi_encode()))
            }
        };
        if matches!(purpose, Purpose::Void(_)) {
            match worth_voiding(eth, &view, &input).await {
                Some(true) => {}
                // The gas could not be priced now: decide again next step.
                None => continue,
                Some(false) => {
                    tracing::info!(target: "relay::eth", payment_id = %d.id, amount = %d.amount, token = %d.token, "not voiding a deposit worth less than the void (or of an unknown token): its payer can reclaim it after its expiry");
                    metrics::counter!("relay_eth_deposits_left_total").increment(1);
                    failures.left.insert(d.id);
                    continue;
                }
            }
        }
        let tx = match sender
            .prepare(
                &eth.node,
                purpose,
                eth.rail.escrow,
                input.clone(),
                U256::ZERO,
            )
            .await
        {
            Ok(tx) => tx,
            Err(e) => {
                failures
                    .classify(
                        &eth.node,
                        eth.key.address(),
                        eth.rail.escrow,
                        d.id,
                        purpose,
                        &input,
                        &e,
                    )
                    .await;
                continue;
            }
        };
        store_txs(store, watcher, std::slice::from_ref(&tx), &[])?;
        store.durable().await?;
        let nonce = tx.nonce;
        tracing::info!(target: "relay::eth", payment_id = %d.id, ?purpose, nonce, tx = %tx.latest().hash, "sending");
        let stored = tx.clone();
        sender.adopt(tx);
        metrics::counter!("relay_eth_operator_txs_total", "purpose" => purpose.name()).increment(1);
        if let Err(e) = sender.broadcast(&eth.node, nonce).await {
            broadcast_failed(&stored, &e);
        }
    }
    Ok(())
}

/// Follows the chain and acts on it until the task is dropped. After any store error everything
/// is rebuilt from the store, so memory never runs ahead of what was stored.
pub async fn watch_loop(
    store: SledStore,
    eth: Ethereum,
    clock: Arc<dyn Clock>,
    ids: Arc<IdSource>,
) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let _heads = AbortOnDrop(
        eth.ws_url
            .clone()
            .map(|url| tokio::spawn(relay_ethereum::node::follow_heads(url, wake.clone()))),
    );
    'rebuild: loop {
        let (mut watcher, mut sender) = match load(&store, &eth) {
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
                if let Err(e) =
                    commit_update(&store, clock.as_ref(), &ids, &watcher, &sender, &update)
                {
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
            if let Err(e) = step_sender(
                &store,
                &eth,
                &watcher,
                &mut sender,
                &mut failures,
                (clock.as_ref(), &ids),
            )
            .await
            {
                tracing::warn!(target: "relay::eth", error = %e, "operator step failed; reloading");
                tokio::time::sleep(eth.poll).await;
                continue 'rebuild;
            }
            tokio::select! {
                _ = tokio::time::sleep(eth.poll) => {}
                _ = wake.notified() => {}
                // A refund or settlement to send: act without waiting for the next block.
                _ = store.payout_wake().notified() => {}
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

/// Receipts and replacements of sent transactions, then new captures and voids.
async fn step_sender(
    store: &SledStore,
    eth: &Ethereum,
    watcher: &Watcher,
    sender: &mut Sender,
    failures: &mut Failures,
    (clock, ids): (&dyn Clock, &IdSource),
) -> Result<()> {
    let (outcomes, changed) = sender.poll(&eth.node).await?;
    if !changed.is_empty() {
        store_txs(store, watcher, &changed, &[])?;
        store.durable().await?;
        for t in &changed {
            if t.state == TxState::Pending {
                // A transaction the node refuses (no funds for gas, a fee below the base fee)
                // must not stop the rest of the step: it is retried next time, loudly.
                if let Err(e) = sender.broadcast(&eth.node, t.nonce).await {
                    broadcast_failed(t, &e);
                }
            }
        }
    }
    metrics::gauge!("relay_eth_stuck_txs").set(sender.stuck().count() as f64);
    operator_balance(eth, failures).await;
    for o in outcomes {
        match o.state {
            TxState::Mined { success: true, .. } => {
                tracing::info!(target: "relay::eth", nonce = o.nonce, purpose = ?o.purpose, "mined")
            }
            other => {
                tracing::warn!(target: "relay::eth", nonce = o.nonce, purpose = ?o.purpose, state = ?other, "operator transaction failed")
            }
        }
    }
    act(store, eth, watcher, sender, failures).await?;
    refund(store, eth, watcher, sender, failures, (clock, ids)).await?;
    settle(store, eth, watcher, sender, (clock, ids)).await?;
    // Finished transactions of deposits the watcher has forgotten (closed, deeper than its
    // window) are no longer needed; the chain keeps their nonces used.
    let head = watcher.head().unwrap_or(0);
    let gone = sender.prune(|t| {
        let recent = matches!(t.state, TxState::Mined { block, .. } if block + 64 > head);
        recent || watcher.deposit(&t.purpose.payment_id()).is_some()
    });
    if !gone.is_empty() {
        store_txs(store, watcher, &[], &gone)?;
    }
    Ok(())
}

fn broadcast_failed(t: &OpTx, e: &relay_ethereum::EthError) {
    metrics::counter!("relay_eth_broadcast_failures_total", "purpose" => t.purpose.name())
        .increment(1);
    tracing::error!(target: "relay::eth", nonce = t.nonce, purpose = ?t.purpose, error = %e, "the node refuses an operator transaction; later ones wait behind its nonce: retrying");
}

/// Reports the operator's ether balance (the `relay_eth_operator_balance_wei` gauge), and logs
/// an error at most once a minute while it is below the configured threshold.
async fn operator_balance(eth: &Ethereum, failures: &mut Failures) {
    let Ok(balance) = eth.node.balance(eth.key.address()).await else {
        return;
    };
    metrics::gauge!("relay_eth_operator_balance_wei").set(f64::from(balance));
    if balance < eth.low_balance {
        let due = failures
            .low_balance_logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            failures.low_balance_logged = Some(std::time::Instant::now());
            tracing::error!(target: "relay::eth", operator = %eth.key.address(), %balance, threshold = %eth.low_balance, "the operator key is low on ether: captures, voids, refunds and settlements will stop when it cannot pay their gas");
        }
    }
}

/// Whether voiding a deposit gives its payer more than it costs the operator
/// ([`operator::void_is_worth`], with the void's gas priced now unless a minimum is set);
/// `None` when the node cannot price it now.
async fn worth_voiding(eth: &Ethereum, d: &operator::DepositView, input: &Bytes) -> Option<bool> {
    let known = eth.tokens.contains(&d.token);
    let floor = match eth.void_min {
        Some(v) => v,
        None if d.token != Address::ZERO => U256::ZERO,
        None => {
            let (Ok(gas), Ok((max_fee, _))) = (
                eth.node
                    .estimate_gas(eth.key.address(), eth.rail.escrow, input, U256::ZERO)
                    .await,
                eth.node.fees().await,
            ) else {
                return None;
            };
            U256::from(gas).saturating_mul(U256::from(max_fee))
        }
    };
    Some(operator::void_is_worth(d, known, floor))
}

/// Signs, stores (flushed) and then broadcasts one operator transaction.
async fn send(
    store: &SledStore,
    eth: &Ethereum,
    watcher: &Watcher,
    sender: &mut Sender,
    purpose: Purpose,
    input: Bytes,
    value: U256,
) -> Result<(), relay_ethereum::EthError> {
    let tx = sender
        .prepare(&eth.node, purpose, eth.rail.escrow, input, value)
        .await?;
    store_txs(store, watcher, std::slice::from_ref(&tx), &[])
        .map_err(|e| relay_ethereum::EthError::retry(e.to_string()))?;
    store
        .durable()
        .await
        .map_err(|e| relay_ethereum::EthError::retry(e.to_string()))?;
    let nonce = tx.nonce;
    tracing::info!(target: "relay::eth", ?purpose, nonce, tx = %tx.latest().hash, "sending");
    let stored = tx.clone();
    sender.adopt(tx);
    metrics::counter!("relay_eth_operator_txs_total", "purpose" => purpose.name()).increment(1);
    if let Err(e) = sender.broadcast(&eth.node, nonce).await {
        broadcast_failed(&stored, &e);
    }
    Ok(())
}

fn live(sender: &Sender, purpose: Purpose) -> bool {
    sender.for_payment(purpose.payment_id()).any(|t| {
        t.purpose == purpose
            && match t.state {
                TxState::Pending => true,
                TxState::Mined { success, .. } => success,
                TxState::Displaced => false,
            }
    })
}

fn failed(sender: &Sender, purpose: Purpose) -> u32 {
    let n = sender
        .for_payment(purpose.payment_id())
        .filter(|t| {
            t.purpose == purpose && matches!(t.state, TxState::Mined { success: false, .. })
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Refunds of captured escrow payments: `refund(id, amount)`, which the escrow pays out of the
/// merchant's own refund reserve (never out of the operator's money; the operator only pays the
/// gas). A refund of the whole deposit before capture is a void, decided in [`act`]; a partial
/// one waits for the capture. After repeated failures the refund is marked failed.
async fn refund(
    store: &SledStore,
    eth: &Ethereum,
    watcher: &Watcher,
    sender: &mut Sender,
    failures: &mut Failures,
    ctx: (&dyn Clock, &IdSource),
) -> Result<()> {
    for w in store.payouts(PayoutKind::EthRefund)? {
        let Some(inv) = store.invoice(&w.invoice)? else {
            continue;
        };
        let Some(r) = inv
            .refunds
            .iter()
            .find(|r| r.id == w.record && r.status == RefundStatus::Pending)
        else {
            continue;
        };
        let Some(id) = r
            .payment
            .strip_prefix("eth:")
            .and_then(|h| h.parse::<B256>().ok())
        else {
            continue;
        };
        let purpose = Purpose::Refund(id, refund_key(&r.id));
        let key = purpose.payment_id() ^ refund_key(&r.id);
        if failures.waiting(key) {
            continue;
        }
        let attempts = operator::Attempts {
            live: live(sender, purpose),
            refused: failed(sender, purpose) + failures.count(key),
        };
        // The reserve is read only for a refund that would otherwise be sent.
        let action = match operator::refund_action(&inv, r, U256::MAX, attempts) {
            operator::RefundAction::Send => {
                let (reserve, promised) = reserve_of(eth, &inv, sender, purpose).await?;
                match operator::refund_action(&inv, r, reserve.saturating_sub(promised), attempts) {
                    // Other refunds of the merchant are under way: judge once they are mined.
                    operator::RefundAction::NotCovered if !promised.is_zero() => continue,
                    action => action,
                }
            }
            other => other,
        };
        let failure = match action {
            operator::RefundAction::Wait | operator::RefundAction::ByVoid => continue,
            operator::RefundAction::Send => None,
            operator::RefundAction::NotCovered => {
                Some("the merchant's refund reserve in the escrow no longer covers it")
            }
            operator::RefundAction::GiveUp => Some(
                "the escrow refund keeps failing (does the merchant's refund reserve cover it?)",
            ),
        };
        if let Some(reason) = failure {
            tracing::error!(target: "relay::eth", refund = %r.id, reason, "escrow refund failed");
            let input = InvoiceInput::RefundFailed {
                id: r.id.clone(),
                reason: reason.into(),
            };
            relay_api::update::apply_input(store, ctx.0, ctx.1, &inv.id, &input)?;
            failures.forget(key);
            continue;
        }
        let call = PaymentEscrow::refundCall {
            id,
            amount: r.amount.0,
        };
        let input = Bytes::from(call.abi_encode());
        if let Err(e) = send(
            store,
            eth,
            watcher,
            sender,
            purpose,
            input.clone(),
            U256::ZERO,
        )
        .await
        {
            failures
                .classify(
                    &eth.node,
                    eth.key.address(),
                    eth.rail.escrow,
                    key,
                    purpose,
                    &input,
                    &e,
                )
                .await;
        }
    }
    Ok(())
}

/// The refund reserve of `inv`'s merchant in its asset, and what the relay's other escrow
/// refunds under way may take from it (any refund under way whose merchant is not known here is
/// counted: the reserve is never overestimated).
async fn reserve_of(
    eth: &Ethereum,
    inv: &Invoice,
    sender: &Sender,
    except: Purpose,
) -> Result<(U256, U256)> {
    let terms = inv
        .quote_for(Method::Ethereum)
        .and_then(|q| q.ethereum.as_ref())
        .context("an escrow refund of an invoice without escrow terms")?;
    let merchant: Address = terms.merchant.parse()?;
    let token: Address = match &terms.token {
        Some(t) => t.parse()?,
        None => Address::ZERO,
    };
    let reserve = PaymentEscrow::new(eth.rail.escrow, eth.node.provider().clone())
        .refundReserve(merchant, token)
        .call()
        .await?;
    let mut promised = U256::ZERO;
    for t in sender.pending() {
        if !matches!(t.purpose, Purpose::Refund(..)) || t.purpose == except {
            continue;
        }
        if let Ok(call) = PaymentEscrow::refundCall::abi_decode(&t.input) {
            promised = promised.saturating_add(call.amount);
        }
    }
    Ok((reserve, promised))
}

/// Cross-rail settlements: `settle(settlementId, merchant, token, amount, sourceRef)` from the
/// operator's liquidity. One that the liquidity does not cover stays queued (`settlement.queued`,
/// and the `relay_settlements_queued` gauge) and is sent once it does.
async fn settle(
    store: &SledStore,
    eth: &Ethereum,
    watcher: &Watcher,
    sender: &mut Sender,
    ctx: (&dyn Clock, &IdSource),
) -> Result<()> {
    let contract = PaymentEscrow::new(eth.rail.escrow, eth.node.provider().clone());
    // Liquidity already promised to settlements sent and not yet mined.
    let mut in_flight: HashMap<Address, U256> = HashMap::new();
    for t in sender.pending() {
        if let Purpose::Settle(_) = t.purpose {
            if let Ok(call) = PaymentEscrow::settleCall::abi_decode(&t.input) {
                let slot = in_flight.entry(call.token).or_default();
                *slot = slot.saturating_add(call.amount);
            }
        }
    }
    let mut liquidity: HashMap<Address, U256> = HashMap::new();
    let mut queued = 0u64;
    for w in store.payouts(PayoutKind::Settlement)? {
        let Some(inv) = store.invoice(&w.invoice)? else {
            continue;
        };
        let (Some(s), Some(to)) = (
            inv.settlements.iter().find(|s| {
                s.id == w.record
                    && matches!(
                        s.status,
                        SettlementStatus::Pending | SettlementStatus::Queued
                    )
            }),
            inv.settle_to.as_ref(),
        ) else {
            continue;
        };
        let (Ok(sid), Ok(merchant)) = (s.id.parse::<B256>(), to.payout.parse::<Address>()) else {
            tracing::error!(target: "relay::eth", settlement = %s.id, "unreadable settlement");
            continue;
        };
        let token = match to.token.as_deref().map(str::parse::<Address>) {
            None => Address::ZERO,
            Some(Ok(t)) => t,
            Some(Err(_)) => {
                tracing::error!(target: "relay::eth", settlement = %s.id, "unreadable token address");
                continue;
            }
        };
        let purpose = Purpose::Settle(sid);
        let attempts = operator::Attempts {
            live: live(sender, purpose),
            refused: failed(sender, purpose),
        };
        if operator::settlement_action(s, U256::MAX, attempts) == operator::SettlementAction::Skip {
            if attempts.refused >= operator::MAX_REFUSALS {
                tracing::error!(target: "relay::eth", settlement = %s.id, "the settlement keeps failing: the operator must look at it");
            }
            continue;
        }
        // Paid already (its log is on its way to the watcher): never send it again.
        if contract.settlementUsed(sid).call().await? {
            continue;
        }
        let available = match liquidity.get(&token) {
            Some(a) => *a,
            None => {
                let a = contract
                    .liquidity(token)
                    .call()
                    .await?
                    .saturating_sub(in_flight.get(&token).copied().unwrap_or_default());
                liquidity.insert(token, a);
                a
            }
        };
        if operator::settlement_action(s, available, attempts) == operator::SettlementAction::Queue
        {
            queued += 1;
            if s.status == SettlementStatus::Pending {
                tracing::warn!(target: "relay::eth", settlement = %s.id, amount = %s.amount, %available, "not enough liquidity in the escrow: settlement queued");
                let id = s.id.clone();
                let input = InvoiceInput::SettlementQueued { id };
                relay_api::update::apply_input(store, ctx.0, ctx.1, &inv.id, &input)?;
            }
            continue;
        }
        let call = PaymentEscrow::settleCall {
            settlementId: sid,
            merchant,
            token,
            amount: s.amount.0,
            sourceRef: s.source_ref.clone(),
        };
        match send(
            store,
            eth,
            watcher,
            sender,
            purpose,
            Bytes::from(call.abi_encode()),
            U256::ZERO,
        )
        .await
        {
            Ok(()) => {
                liquidity.insert(token, available - s.amount.0);
            }
            Err(e) => {
                tracing::warn!(target: "relay::eth", settlement = %s.id, error = %e, "settlement would fail; will retry")
            }
        }
    }
    metrics::gauge!("relay_settlements_queued").set(queued as f64);
    Ok(())
}
