//! The operator's step on the Ethereum rail: receipts and replacements of its transactions, then
//! captures and voids of final deposits, escrow refunds and cross-rail settlements, each decided
//! by `relay_core::operator` and each stored before it is broadcast.

use super::*;

/// Failed attempts at preparing operator transactions, by deposit (or refund key). Only a
/// deterministic refusal — the escrow reverting the call in an `eth_call` — counts toward giving
/// up; a node that cannot be reached, rate-limits, or fails to estimate fees or nonces is retried
/// with a growing pause for as long as it takes.
#[derive(Default)]
pub(super) struct Failures {
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
async fn act<S: Store>(
    store: &S,
    eth: &Ethereum,
    watcher: &Watcher,
    sender: &mut Sender,
    failures: &mut Failures,
) -> Result<()> {
    let chain_time = if watcher.cursor().time > 0 {
        watcher.cursor().time
    } else {
        u64::try_from(relay_engine::SystemClock.now().0).unwrap_or(0)
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
        let invoice = invoice_of(store, &d).await?;
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
        store_txs(store, watcher, std::slice::from_ref(&tx), &[]).await?;
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

/// Receipts and replacements of sent transactions, then new captures and voids.
pub(super) async fn step_sender<S: Store>(
    engine: &Engine<S>,
    eth: &Ethereum,
    watcher: &Watcher,
    sender: &mut Sender,
    failures: &mut Failures,
) -> Result<()> {
    let store = &engine.store;
    let (outcomes, changed) = sender.poll(&eth.node).await?;
    if !changed.is_empty() {
        store_txs(store, watcher, &changed, &[]).await?;
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
    refund(engine, eth, watcher, sender, failures).await?;
    settle(engine, eth, watcher, sender).await?;
    // Finished transactions of deposits the watcher has forgotten (closed, deeper than its
    // window) are no longer needed; the chain keeps their nonces used.
    let head = watcher.head().unwrap_or(0);
    let gone = sender.prune(|t| {
        let recent = matches!(t.state, TxState::Mined { block, .. } if block + 64 > head);
        recent || watcher.deposit(&t.purpose.payment_id()).is_some()
    });
    if !gone.is_empty() {
        store_txs(store, watcher, &[], &gone).await?;
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
async fn send<S: Store>(
    store: &S,
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
        .await
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
async fn refund<S: Store>(
    engine: &Engine<S>,
    eth: &Ethereum,
    watcher: &Watcher,
    sender: &mut Sender,
    failures: &mut Failures,
) -> Result<()> {
    let store = &engine.store;
    for w in store.payouts(PayoutKind::EthRefund).await? {
        let Some(inv) = store.invoice(&w.invoice).await? else {
            continue;
        };
        let Some(r) = inv
            .refunds
            .iter()
            .find(|r| r.id == w.record && r.status == RefundStatus::Pending)
        else {
            continue;
        };
        let Some(id) = r.payment.payment_id() else {
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
            engine.apply(&inv.id, &input).await?;
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
    let (merchant, token) = (terms.merchant, terms.token.unwrap_or(Address::ZERO));
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
async fn settle<S: Store>(
    engine: &Engine<S>,
    eth: &Ethereum,
    watcher: &Watcher,
    sender: &mut Sender,
) -> Result<()> {
    let store = &engine.store;
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
    for w in store.payouts(PayoutKind::Settlement).await? {
        let Some(inv) = store.invoice(&w.invoice).await? else {
            continue;
        };
        let (Some(s), Some(to)) = (
            inv.settlements.iter().find(|s| {
                w.record.parse() == Ok(s.id)
                    && matches!(
                        s.status,
                        SettlementStatus::Pending | SettlementStatus::Queued
                    )
            }),
            inv.settle_to.as_ref(),
        ) else {
            continue;
        };
        let sid = s.id.0;
        let Ok(merchant) = to.payout.parse::<Address>() else {
            tracing::error!(target: "relay::eth", settlement = %s.id, "unreadable payout address");
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
                let input = InvoiceInput::SettlementQueued { id: s.id };
                engine.apply(&inv.id, &input).await?;
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
