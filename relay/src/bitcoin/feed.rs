//! What the bitcoin watcher is told to watch as it runs: the scripts this relay's API hands it
//! ([`NewScripts`]), the refunds owed to refund addresses ([`RefundWatch`]), and what relays
//! sharing the store added since its last look ([`news_from_the_store`]).

use super::script_buf;
use anyhow::Result;
use relay_bitcoin::bitcoin::ScriptBuf;
use relay_bitcoin::WatchTarget;
use relay_core::InvoiceId;
use relay_store::{PayoutKind, Store};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A script to watch, and for what.
type Watch = (ScriptBuf, WatchTarget);

/// The scripts this relay's API hands its own watcher. They are passed on only while the watcher
/// runs in this relay: one that does not hold the bitcoin role keeps nothing (the watcher that
/// starts later, here or on another relay, loads every script from the store, and one running on
/// another relay reads them from the store as it goes).
#[derive(Clone)]
pub struct NewScripts(Arc<ScriptFeed>);

struct ScriptFeed {
    tx: mpsc::UnboundedSender<Watch>,
    rx: std::sync::Mutex<mpsc::UnboundedReceiver<Watch>>,
    listening: std::sync::atomic::AtomicBool,
}

impl NewScripts {
    pub(super) fn new() -> NewScripts {
        let (tx, rx) = mpsc::unbounded_channel();
        NewScripts(Arc::new(ScriptFeed {
            tx,
            rx: std::sync::Mutex::new(rx),
            listening: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Whether the watcher runs here. The API calls in after its write is committed, and the
    /// watcher starts listening before it loads the store: a script is either loaded or sent.
    pub(super) fn listening(&self) -> bool {
        self.0.listening.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn send(&self, watch: Watch) {
        if self.listening() {
            let _ = self.0.tx.send(watch);
        }
    }

    /// The watcher listens until the returned guard is dropped.
    pub(super) fn listen(&self) -> Listening<'_> {
        self.0
            .listening
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Listening(self)
    }

    pub(super) fn drain(&self) -> Vec<Watch> {
        let mut rx = self.0.rx.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        while let Ok(w) = rx.try_recv() {
            out.push(w);
        }
        out
    }
}

/// Stops passing scripts on, and drops those not taken, when the watcher stops.
pub(super) struct Listening<'a>(&'a NewScripts);

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.0
             .0
            .listening
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.0.drain();
    }
}

/// Bitcoin refunds the watcher looks for: a refund address's script is watched as
/// `WatchTarget::RefundTo`, and this map turns it into the refunds (invoice, refund id) owed to
/// that address, oldest first.
#[derive(Clone, Default)]
pub struct RefundWatch(Arc<std::sync::Mutex<HashMap<ScriptBuf, Vec<RefundOf>>>>);

/// A refund, by its invoice and its id.
type RefundOf = (InvoiceId, String);

impl RefundWatch {
    /// Adds a refund owed to `key`; false if it was there already.
    pub(super) fn insert(&self, key: ScriptBuf, invoice: InvoiceId, refund: String) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(key).or_default();
        let new = !list.iter().any(|(_, r)| *r == refund);
        if new {
            list.push((invoice, refund));
        }
        new
    }

    pub(super) fn get(&self, key: &ScriptBuf) -> Option<Vec<(InvoiceId, String)>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}

/// Scripts that relays sharing the store added since the last look: invoices' addresses, and the
/// refund addresses of bitcoin refunds still owed (a short list, read whole). On sled, only the
/// refunds, which the relay itself also sent.
pub(super) async fn news_from_the_store<S: Store>(
    store: &S,
    refunds: &RefundWatch,
) -> Result<Vec<(ScriptBuf, WatchTarget)>> {
    let mut out = Vec::new();
    for (reference, invoice) in store
        .take_new_lookups(relay_core::LookupKind::BtcScript)
        .await?
    {
        if let relay_core::Lookup::BtcScript(script) = &reference {
            out.push((script_buf(script), WatchTarget::Invoice(invoice)));
        }
    }
    for w in store.payouts(PayoutKind::BtcRefund).await? {
        let Ok(script) = ScriptBuf::from_hex(&String::from_utf8_lossy(&w.value)) else {
            continue;
        };
        if refunds.insert(script.clone(), w.invoice, w.record) {
            out.push((script.clone(), WatchTarget::RefundTo(script)));
        }
    }
    Ok(out)
}
