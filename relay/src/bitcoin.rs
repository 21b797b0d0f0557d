//! The bitcoin rail wired in: the node client, address derivation for the API, and the watcher
//! loop that turns the watcher's updates into invoice changes stored with its cursor.

use crate::config::Config;
use anyhow::{Context, Result};
use relay_bitcoin::bitcoin::consensus::{deserialize, serialize};
use relay_bitcoin::bitcoin::hashes::Hash;
use relay_bitcoin::bitcoin::{Network, OutPoint, ScriptBuf};
use relay_bitcoin::{
    BlockSource, ChainCursor, DescriptorAddresses, Observation, RpcClient, Tracked, Update,
    WatchTarget, Watcher, WatcherConfig,
};
use relay_core::invoice::InvoiceInput;
use relay_core::{Amount, InvoiceId, Method, PaymentRef, PaymentStatus, Timestamp};
use relay_engine::{BitcoinRail, Engine};
use relay_store::{ChainWrite, PayoutKind, Store};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The name of the bitcoin watcher's state in the store.
const CHAIN: &str = "bitcoin";

mod feed;
use feed::news_from_the_store;
pub use feed::{NewScripts, RefundWatch};

/// The running rail: what the API needs, and the receiving end of new scripts for the watcher.
pub struct Bitcoin {
    pub client: RpcClient,
    pub network: Network,
    pub rail: BitcoinRail,
    pub scripts: NewScripts,
    pub refunds: RefundWatch,
}

/// The stand-in invoice id under which relays before typed watch targets followed a refund
/// address's script (hex): tracking records they wrote name it, and are mapped back at load.
fn legacy_refund_key(script_hex: &str) -> InvoiceId {
    let digest = relay_bitcoin::bitcoin::hashes::sha256::Hash::hash(
        format!("relay.refund\0{script_hex}").as_bytes(),
    );
    let mut entropy = [0u8; 12];
    entropy.copy_from_slice(&digest.as_byte_array()[..12]);
    InvoiceId::from_entropy(entropy)
}

/// Connects to the configured node (waiting up to `wait` for it to answer) and learns its network.
pub async fn connect(config: &Config, wait: Duration) -> Result<Option<Bitcoin>> {
    let Some(url) = &config.btc_rpc_url else {
        return Ok(None);
    };
    let client = RpcClient::new(url)?;
    let start = std::time::Instant::now();
    let network = loop {
        match client.network().await {
            Ok(n) => break n,
            Err(e) if e.is_retryable() && start.elapsed() < wait => {
                tracing::warn!(target: "relay::btc", node = client.public_url(), error = %e, "waiting for the bitcoin node");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot reach the bitcoin node at {}", client.public_url())
                })
            }
        }
    };
    let treasury_descriptor = config
        .treasury_descriptor
        .as_deref()
        .map(validate_descriptor)
        .transpose()
        .context("treasury_descriptor")?;
    let scripts = NewScripts::new();
    let refunds = RefundWatch::default();
    let watch_refund = {
        let (scripts, refunds) = (scripts.clone(), refunds.clone());
        move |invoice: &InvoiceId, refund: &relay_core::Refund| {
            let Some(script) = refund.script_pubkey.as_ref().map(script_buf) else {
                return;
            };
            if scripts.listening() {
                refunds.insert(script.clone(), invoice.clone(), refund.id.clone());
                scripts.send((script.clone(), WatchTarget::RefundTo(script)));
            }
        }
    };
    let watch = {
        let scripts = scripts.clone();
        move |invoice: &relay_core::Invoice| {
            for pay_to in invoice.methods.iter().filter_map(|q| q.bitcoin.as_ref()) {
                let script = script_buf(&pay_to.script_pubkey);
                scripts.send((script, WatchTarget::Invoice(invoice.id.clone())));
            }
        }
    };
    tracing::info!(target: "relay::btc", node = client.public_url(), %network, "bitcoin rail ready");
    Ok(Some(Bitcoin {
        client,
        network,
        rail: BitcoinRail {
            addresses: Arc::new(DescriptorAddresses::new(network)),
            watch: Arc::new(watch),
            watch_refund: Arc::new(watch_refund),
            treasury_descriptor,
        },
        scripts,
        refunds,
    }))
}

/// Rebuilds the watcher from the store: its cursor, its tracked payments and every watched script.
async fn load_watcher<S: Store>(
    store: &S,
    config: WatcherConfig,
    refunds: &RefundWatch,
) -> Result<Watcher> {
    let cursor: ChainCursor = match store.chain_cursor(CHAIN).await? {
        Some(bytes) => serde_json::from_slice(&bytes).context("stored bitcoin cursor")?,
        None => ChainCursor::default(),
    };
    // Refund addresses first: records written before typed targets name them by a stand-in id.
    let mut refund_scripts = Vec::new();
    for w in store.payouts(PayoutKind::BtcRefund).await? {
        let hex = String::from_utf8_lossy(&w.value).into_owned();
        match ScriptBuf::from_hex(&hex) {
            Ok(script) => {
                refunds.insert(script.clone(), w.invoice, w.record);
                refund_scripts.push((legacy_refund_key(&hex), script));
            }
            Err(e) => {
                tracing::error!(target: "relay::btc", refund = %w.record, error = %e, "unreadable refund script")
            }
        }
    }
    let legacy: HashMap<InvoiceId, ScriptBuf> = refund_scripts.iter().cloned().collect();
    let mut tracked = Vec::new();
    let mut migrated = Vec::new();
    for (k, v) in store.chain_tracked(CHAIN).await? {
        let op: OutPoint = deserialize(&k).context("stored outpoint")?;
        let mut t: Tracked = serde_json::from_slice(&v).context("stored tracked payment")?;
        if let Some(script) = t.target.invoice().and_then(|id| legacy.get(id)) {
            t.target = WatchTarget::RefundTo(script.clone());
            migrated.push((k, serde_json::to_vec(&t)?));
        }
        tracked.push((op, t));
    }
    if !migrated.is_empty() {
        // Written once, with the cursor as stored: the records now name their refund address.
        let write = ChainWrite {
            cursor: serde_json::to_vec(&cursor)?,
            put: migrated,
            ..ChainWrite::default()
        };
        store.commit_chain(CHAIN, &write).await?;
        tracing::info!(target: "relay::btc", records = write.put.len(), "tracked refund payments now name their refund address");
    }
    let mut watcher = Watcher::new(config, cursor, tracked);
    for (reference, invoice) in store.lookups_of(relay_core::LookupKind::BtcScript).await? {
        if let relay_core::Lookup::BtcScript(script) = &reference {
            watcher.watch(script_buf(script), WatchTarget::Invoice(invoice));
        }
    }
    for (_, script) in refund_scripts {
        watcher.watch(script.clone(), WatchTarget::RefundTo(script));
    }
    Ok(watcher)
}

/// A script as the bitcoin library holds it.
fn script_buf(script: &relay_core::Script) -> ScriptBuf {
    ScriptBuf::from_bytes(script.as_bytes().to_vec())
}

/// The payment reference of a bitcoin output (its txid as bitcoin shows it: byte-reversed).
fn payment_ref(outpoint: &OutPoint) -> PaymentRef {
    let mut shown = outpoint.txid.to_byte_array();
    shown.reverse();
    PaymentRef::Bitcoin {
        txid: relay_core::Txid(shown.into()),
        vout: outpoint.vout,
    }
}

/// What an observation means for its invoice.
fn input_for(obs: &Observation, invoice: &relay_core::Invoice) -> InvoiceInput {
    let outpoint = obs.outpoint();
    let reference = payment_ref(&outpoint);
    match obs {
        Observation::Seen {
            sat,
            confirmations,
            block_time,
            ..
        } => InvoiceInput::Observe {
            reference,
            method: Method::Bitcoin,
            asset: "BTC".into(),
            amount: Amount::from_minor(u128::from(*sat)),
            confirmed: *confirmations >= invoice.confirmations_required(Method::Bitcoin),
            confirmations: *confirmations,
            seen_at: block_time.map(|t| Timestamp(i64::from(t))),
        },
        Observation::Reverted { .. } => InvoiceInput::Drop {
            reference,
            status: PaymentStatus::Reverted,
        },
        Observation::Replaced { .. } => InvoiceInput::Drop {
            reference,
            status: PaymentStatus::Replaced,
        },
    }
}

/// The refund an observation of an output to a refund address concerns.
///
/// Seen: none if the output's transaction already paid one of the candidates (it is seen again
/// as it gets deeper); else the oldest pending refund it covers whose merchant named this
/// transaction (`refunds/{id}/paid`); else, if every pending refund it covers is owed by one
/// merchant, that merchant's oldest — an output cannot tell which wallet paid it, so when two
/// merchants owe the address, neither is marked paid until one names its transaction.
/// Reverted or replaced: the refund this transaction had paid, to be put back to pending.
async fn refund_paid_by<S: Store>(
    store: &S,
    obs: &Observation,
    candidates: &[(InvoiceId, String)],
) -> Result<Option<(InvoiceId, String)>> {
    let outpoint = obs.outpoint();
    let txid = outpoint.txid.to_string();
    let mut refunds = Vec::new();
    for (invoice, refund) in candidates {
        let Some(inv) = store.invoice(invoice).await? else {
            continue;
        };
        if let Some(r) = inv.refunds.iter().find(|r| r.id == *refund) {
            refunds.push((inv.merchant_id.clone(), invoice.clone(), r.clone()));
        }
    }
    // Paid by this output (a refund recorded before outputs were, by this transaction).
    let paid_by_this = refunds.iter().find(|(_, _, r)| {
        r.tx.as_deref() == Some(txid.as_str()) && r.vout.is_none_or(|v| v == outpoint.vout)
    });
    let Observation::Seen { sat, .. } = obs else {
        return Ok(paid_by_this.map(|(_, i, r)| (i.clone(), r.id.clone())));
    };
    if paid_by_this.is_some() {
        return Ok(None);
    }
    let covered: Vec<_> = refunds
        .iter()
        .filter(|(_, _, r)| {
            r.status == relay_core::RefundStatus::Pending
                && Amount::from_minor(u128::from(*sat)) >= r.amount
        })
        .collect();
    let claimed: Vec<_> = covered
        .iter()
        .filter(|(_, _, r)| r.claimed_tx.as_deref() == Some(txid.as_str()))
        .collect();
    // Named by its merchant; or, when nobody named it, owed by one merchant only.
    let pool: Vec<_> = if claimed.is_empty() {
        covered.iter().collect()
    } else {
        claimed
    };
    let Some((merchant, i, r)) = pool.first().map(|c| &***c) else {
        return Ok(None);
    };
    if pool.iter().any(|(m, _, _)| m != merchant) {
        tracing::warn!(target: "relay::btc", %txid, refunds = pool.len(), "an output pays an address that several merchants owe a refund (or that several named): none is marked paid until one merchant names the transaction");
        return Ok(None);
    }
    Ok(Some((i.clone(), r.id.clone())))
}

/// A refund is paid once an output of at least its amount to the payer's address is as deep as
/// the invoice's own payments must be (at least one block); a reorg that takes that output out
/// makes it pending again.
fn refund_input(
    obs: &Observation,
    invoice: &relay_core::Invoice,
    refund: &str,
) -> Option<InvoiceInput> {
    let r = invoice.refunds.iter().find(|r| r.id == refund)?;
    let txid = obs.outpoint().txid.to_string();
    let Observation::Seen {
        sat, confirmations, ..
    } = obs
    else {
        return Some(InvoiceInput::RefundReverted {
            id: refund.to_owned(),
            tx: txid,
        });
    };
    let deep = *confirmations >= invoice.confirmations_required(Method::Bitcoin).max(1);
    (deep && Amount::from_minor(u128::from(*sat)) >= r.amount).then(|| {
        InvoiceInput::BitcoinRefundPaid {
            id: refund.to_owned(),
            txid,
            vout: obs.outpoint().vout,
        }
    })
}

/// Stores an update: its observations' invoice changes, tracking records and cursor, in one
/// transaction.
pub async fn commit<S: Store>(
    engine: &Engine<S>,
    update: &Update,
    refunds: &RefundWatch,
    network: Option<Network>,
) -> Result<usize> {
    // Who paid each output first seen in this step (its tracking record is stored with it).
    let payers: std::collections::HashMap<OutPoint, relay_engine::risk::Payer> = update
        .put
        .iter()
        .filter(|(_, t)| !t.payer.is_empty())
        .map(|(op, t)| {
            let payer = relay_engine::risk::Payer {
                btc_inputs: t.payer.iter().map(|s| s.to_hex_string()).collect(),
                addresses: network
                    .iter()
                    .flat_map(|n| {
                        t.payer.iter().filter_map(|s| {
                            relay_bitcoin::bitcoin::Address::from_script(s, *n)
                                .ok()
                                .map(|a| a.to_string())
                        })
                    })
                    .collect(),
                ..Default::default()
            };
            (*op, payer)
        })
        .collect();
    let store = &engine.store;
    // An output to a refund address pays the oldest pending refund to it that it covers, once;
    // two outputs of one step never pay the same refund.
    let mut by_invoice: BTreeMap<InvoiceId, Vec<(&Observation, Option<String>)>> = BTreeMap::new();
    let mut taken = std::collections::HashSet::new();
    for o in &update.observations {
        match o.target() {
            WatchTarget::RefundTo(script) => {
                let candidates = refunds.get(script).unwrap_or_default();
                let free: Vec<_> = candidates
                    .into_iter()
                    .filter(|(_, r)| !taken.contains(r))
                    .collect();
                if let Some((invoice, refund)) = refund_paid_by(store, o, &free).await? {
                    if matches!(o, Observation::Seen { .. }) {
                        taken.insert(refund.clone());
                    }
                    by_invoice
                        .entry(invoice)
                        .or_default()
                        .push((o, Some(refund)));
                }
            }
            WatchTarget::Invoice(id) => by_invoice.entry(id.clone()).or_default().push((o, None)),
        }
    }
    let write = ChainWrite {
        cursor: serde_json::to_vec(&update.cursor)?,
        put: update
            .put
            .iter()
            .map(|(op, t)| Ok((serialize(op), serde_json::to_vec(t)?)))
            .collect::<Result<_>>()?,
        delete: update.delete.iter().map(serialize).collect(),
        invoices: Vec::new(),
    };
    Ok(engine
        .commit_chain_step(
            CHAIN,
            write,
            &by_invoice,
            |(o, refund), invoice| match refund {
                Some(refund) => refund_input(o, invoice, refund),
                None => Some(input_for(o, invoice)),
            },
            |(o, _)| payers.get(&o.outpoint()).cloned().unwrap_or_default(),
            |(o, _)| o.outpoint().to_string(),
        )
        .await?)
}

/// Follows the node until the task is dropped: blocks first (catching up block by block), then
/// the mempool, then a pause. Errors are logged and retried; after a failed write the watcher is
/// rebuilt from the store, so memory never runs ahead of what was stored.
pub async fn watch_loop<S: Store + Clone>(
    engine: Engine<S>,
    client: RpcClient,
    (scripts, refunds): (NewScripts, RefundWatch),
    config: WatcherConfig,
    poll: Duration,
) {
    let store = &engine.store;
    // What this relay's API added, and what other relays on the store added (asked for before
    // each look at the node, so a script stored before a block is watched when the block is read).
    let from_others = std::sync::Mutex::new(Vec::new());
    let _listening = scripts.listen();
    let mut feed = || {
        let mut out = std::mem::take(&mut *from_others.lock().unwrap_or_else(|p| p.into_inner()));
        out.extend(scripts.drain());
        out
    };
    // For the payers' addresses on sanctions lists (scripts alone serve velocity).
    let network = client.network().await.ok();
    'rebuild: loop {
        let mut watcher = match load_watcher(store, config.clone(), &refunds).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(target: "relay::btc", error = %e, "cannot load the watcher's state");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        tracing::info!(target: "relay::btc", watched = watcher.watched(), tracked = watcher.tracked().len(), tip = ?watcher.cursor().tip().map(|t| t.0), "bitcoin watcher started");
        loop {
            match news_from_the_store(store, &refunds).await {
                Ok(news) => from_others
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(news),
                Err(e) => {
                    tracing::warn!(target: "relay::btc", error = %e, "cannot read new scripts from the store");
                    tokio::time::sleep(poll).await;
                    continue;
                }
            }
            let step = match watcher.poll_blocks(&client, &mut feed).await {
                Ok(Some(update)) => Some(update),
                Ok(None) => match watcher.poll_mempool(&client, &mut feed).await {
                    Ok(update) if update.is_empty() => None,
                    Ok(update) => Some(update),
                    Err(e) => {
                        tracing::warn!(target: "relay::btc", error = %e, "mempool poll failed");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(target: "relay::btc", error = %e, retryable = e.is_retryable(), "block poll failed");
                    tokio::time::sleep(poll).await;
                    continue;
                }
            };
            let Some(update) = step else {
                tokio::time::sleep(poll).await;
                continue;
            };
            match commit(&engine, &update, &refunds, network).await {
                Ok(changed) => {
                    metrics::counter!("relay_btc_blocks_connected_total")
                        .increment(u64::from(update.blocks_connected));
                    if update.dust_ignored > 0 {
                        metrics::counter!("relay_btc_dust_outputs_total")
                            .increment(update.dust_ignored);
                        tracing::info!(target: "relay::btc", outputs = update.dust_ignored, "dust outputs to watched addresses ignored");
                    }
                    if update.blocks_disconnected > 0 {
                        metrics::counter!("relay_btc_reorgs_total").increment(1);
                        tracing::warn!(target: "relay::btc", disconnected = update.blocks_disconnected, "reorg");
                    }
                    if let Some((h, _)) = update.cursor.tip() {
                        metrics::gauge!("relay_btc_tip_height").set(f64::from(h));
                    }
                    if changed > 0 {
                        tracing::debug!(target: "relay::btc", invoices = changed, observations = update.observations.len(), "payments recorded");
                    }
                }
                Err(e) => {
                    tracing::error!(target: "relay::btc", error = %e, "storing the watcher's step failed; reloading");
                    tokio::time::sleep(poll).await;
                    continue 'rebuild;
                }
            }
        }
    }
}

/// Validates a merchant's descriptor for `relay merchant create`, returning its canonical form.
pub fn validate_descriptor(text: &str) -> Result<String> {
    let d = relay_bitcoin::ReceiveDescriptor::parse(text).context("--btc-descriptor")?;
    Ok(d.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::invoice::NewInvoice;
    use relay_core::{Asset, AssetBook, Event, FixedRates, Invoice, Money, RefundAddress};
    use relay_store::prelude::*;
    use relay_store_sled::SledStore;

    const T0: Timestamp = Timestamp(1_800_000_000);
    const PAY_TO: &str = "0014aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const REFUND_TO: &str = "0014bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// A paid bitcoin invoice with a pending refund to `REFUND_TO`, stored.
    async fn refunded_invoice(store: &SledStore) -> Invoice {
        let params = NewInvoice {
            merchant_id: relay_core::MerchantId::from_entropy([1; 12]),
            price: Money {
                asset: Asset::fiat("USD", 2),
                amount: Amount::from_minor(2_500),
            },
            order_id: None,
            description: None,
            metadata: Default::default(),
            expires_at: T0.plus_seconds(900),
            methods: vec![Method::Bitcoin],
            tolerance_bps: 0,
            eth_asset: None,
        };
        let rates = FixedRates::from_pairs([("BTC/USD", "60000")]).unwrap();
        let quotes = params.quote(&AssetBook::default(), &rates).unwrap();
        let id = InvoiceId::from_entropy([2; 12]);
        let (mut inv, kinds) = Invoice::create(id, params, quotes, T0).unwrap();
        inv.methods[0].bitcoin = Some(relay_core::BitcoinPayTo {
            address: "bcrt1qpayto".into(),
            script_pubkey: PAY_TO.parse().unwrap(),
            derivation_index: 0,
            confirmations: 1,
            treasury: false,
        });
        let events = Event::for_invoice(&inv, &kinds, T0, || {
            relay_core::EventId::from_entropy([3; 12])
        });
        store.create_invoice(&inv, &events, None).await.unwrap();
        let due = inv.methods[0].due.amount;
        for input in [
            InvoiceInput::Observe {
                reference: format!("btc:{}:0", "cd".repeat(32)).parse().unwrap(),
                method: Method::Bitcoin,
                asset: "BTC".into(),
                amount: due,
                confirmed: true,
                confirmations: 1,
                seen_at: None,
            },
            InvoiceInput::RequestRefund {
                id: "re_legacy".into(),
                payment: None,
                amount: None,
                to: Some(RefundAddress {
                    address: "bcrt1qrefund".into(),
                    script_pubkey: REFUND_TO.parse().unwrap(),
                }),
            },
        ] {
            let v = inv.version;
            inv.apply(input, T0.plus_seconds(10)).unwrap();
            store.update_invoice(v, &inv, &[], None).await.unwrap();
        }
        inv
    }

    /// A relay from before typed watch targets tracked a refund's payment under a stand-in
    /// invoice id: loading it now gives the record its refund address, in memory and in the
    /// store, so the payment is matched to the refund and never to a missing invoice.
    #[tokio::test]
    async fn tracked_refund_payments_from_before_typed_targets_name_their_refund_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let inv = refunded_invoice(&store).await;
        let op = OutPoint {
            txid: relay_bitcoin::bitcoin::Txid::from_byte_array([9; 32]),
            vout: 1,
        };
        let old = Tracked {
            target: WatchTarget::Invoice(legacy_refund_key(REFUND_TO)),
            sat: 10_000,
            state: relay_bitcoin::TrackedState::Mempool { since: 100 },
            spends: Vec::new(),
            reported: Some(0),
            payer: Vec::new(),
        };
        let write = ChainWrite {
            cursor: serde_json::to_vec(&ChainCursor::default()).unwrap(),
            put: vec![(serialize(&op), serde_json::to_vec(&old).unwrap())],
            ..ChainWrite::default()
        };
        store.commit_chain(CHAIN, &write).await.unwrap();

        let refunds = RefundWatch::default();
        let watcher = load_watcher(&store, WatcherConfig::default(), &refunds)
            .await
            .unwrap();
        let script = ScriptBuf::from_hex(REFUND_TO).unwrap();
        let want = WatchTarget::RefundTo(script.clone());
        assert_eq!(watcher.tracked()[&op].target, want);
        assert_eq!(
            refunds.get(&script),
            Some(vec![(inv.id.clone(), "re_legacy".to_owned())]),
            "the address leads to the refund owed to it"
        );
        let stored = store.chain_tracked(CHAIN).await.unwrap();
        let t: Tracked = serde_json::from_slice(&stored[0].1).unwrap();
        assert_eq!(t.target, want, "the migration was stored");
        assert_eq!(
            watcher.watched(),
            2,
            "the invoice's address and the refund's"
        );
    }
}
