//! Risk controls as the engine runs them: a merchant's rules (read, replaced under their version),
//! the sanctions lists the binary loads and reloads, and the assessment of one payment or card
//! attempt — its signals recorded for velocity, its history read back, the rules applied
//! (`relay_core::risk`).

use crate::Engine;
use relay_core::risk::{
    Assessment, CompiledRules, History, Rule, RuleError, Sanctions, Signals, Totals,
};
use relay_core::{Invoice, MerchantId, Method, RiskRules, Timestamp};
use relay_store::{Signal, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// How long a relay uses the rules it read before it reads them again (another relay may have
/// changed them; a change made through this relay is seen at once).
const RULES_FRESH_SECS: i64 = 2;
/// How long before the payer may reclaim an escrow deposit its open review is rejected by
/// itself: time for the void to be mined.
pub const REVIEW_MARGIN_SECS: u64 = 600;
pub use relay_core::risk::CARD_REVIEW_SECS;

/// The sanctions lists in use and each merchant's compiled rules.
#[derive(Default)]
pub struct RiskScreen {
    sanctions: RwLock<Arc<Sanctions>>,
    rules: Mutex<HashMap<MerchantId, (Timestamp, Arc<CompiledRules>)>>,
}

impl RiskScreen {
    /// Puts new sanctions lists in use (a reload).
    pub fn set_sanctions(&self, lists: Sanctions) {
        *self.sanctions.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(lists);
    }

    pub fn sanctions(&self) -> Arc<Sanctions> {
        self.sanctions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn forget(&self, merchant: &MerchantId) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(merchant);
    }
}

/// Why new rules were not stored.
#[derive(Debug)]
pub enum RulesError {
    Invalid(RuleError),
    /// The rules changed since the version the caller read.
    VersionMismatch {
        current: u64,
    },
    Store(StoreError),
}

impl From<StoreError> for RulesError {
    fn from(e: StoreError) -> Self {
        RulesError::Store(e)
    }
}

pub use relay_core::risk::Payer;

impl<S: Store> Engine<S> {
    /// The merchant's rules as stored (version 0: none yet).
    pub async fn risk_rules(&self, merchant: &MerchantId) -> Result<RiskRules, StoreError> {
        self.store.risk_rules(merchant).await
    }

    /// Replaces the merchant's rules, if they are still at `expected_version` (none: whatever
    /// they are). Returns the stored rules, at their new version.
    pub async fn put_risk_rules(
        &self,
        merchant: &MerchantId,
        expected_version: Option<u64>,
        rules: Vec<Rule>,
    ) -> Result<RiskRules, RulesError> {
        let current = self.store.risk_rules(merchant).await?.version;
        let expected = expected_version.unwrap_or(current);
        if expected != current {
            return Err(RulesError::VersionMismatch { current });
        }
        let new = RiskRules {
            version: current + 1,
            updated_at: Some(self.clock.now()),
            rules,
        };
        new.compile().map_err(RulesError::Invalid)?;
        if !self.store.put_risk_rules(merchant, expected, &new).await? {
            let current = self.store.risk_rules(merchant).await?.version;
            return Err(RulesError::VersionMismatch { current });
        }
        self.store.durable().await?;
        self.risk.forget(merchant);
        Ok(new)
    }

    async fn compiled_rules(
        &self,
        merchant: &MerchantId,
    ) -> Result<Arc<CompiledRules>, StoreError> {
        let now = self.clock.now();
        if let Some((at, rules)) = self
            .risk
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(merchant)
        {
            if now.0 - at.0 < RULES_FRESH_SECS {
                return Ok(rules.clone());
            }
        }
        let stored = self.store.risk_rules(merchant).await?;
        let compiled = Arc::new(stored.compile().unwrap_or_else(|e| {
            // Only validated rules are stored; a rule this version cannot read is left out.
            tracing::error!(target: "relay::risk", merchant = %merchant, error = %e, "stored risk rules do not compile; assessing without them");
            CompiledRules::default()
        }));
        self.risk
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(merchant.clone(), (now, compiled.clone()));
        Ok(compiled)
    }

    /// Assesses what `signals` describe, on the merchant's rules and the sanctions lists. The
    /// thing assessed (`id`: a payment reference, a card token) is first recorded under each of
    /// the payer's keys, worth `worth` minor units of the invoice's currency, so velocity counts
    /// it (once, however often it is assessed).
    pub async fn assess(
        &self,
        merchant: &MerchantId,
        signals: &Signals,
        id: &str,
        worth: u128,
    ) -> Result<Assessment, StoreError> {
        let now = self.clock.now();
        for key in signals.all_keys() {
            let signal = Signal {
                key,
                id: id.to_owned(),
                at: now,
                currency: signals.price_currency.clone(),
                amount: worth,
            };
            self.store.record_signal(merchant, &signal).await?;
        }
        let rules = self.compiled_rules(merchant).await?;
        // One read per payer key, over its longest window; each window counted from it.
        let windows = rules.windows(signals);
        let mut longest: HashMap<String, u64> = HashMap::new();
        for w in &windows {
            let l = longest.entry(w.key.clone()).or_default();
            *l = (*l).max(w.secs);
        }
        let mut read = HashMap::new();
        for (key, secs) in longest {
            let since = Timestamp(now.0.saturating_sub(secs as i64));
            let found = self.store.signals_since(merchant, &key, since).await?;
            read.insert(key, found);
        }
        let mut history = History::new();
        for w in windows {
            let since = now.0.saturating_sub(w.secs as i64);
            let mut totals = Totals::default();
            for s in read.get(w.key.as_str()).into_iter().flatten() {
                if s.at.0 >= since {
                    totals.count += 1;
                    let sum = totals.sums.entry(s.currency.clone()).or_default();
                    *sum = sum.saturating_add(s.amount);
                }
            }
            history.insert(w, totals);
        }
        let assessment = rules.assess(signals, &history, &self.risk.sanctions());
        metrics::counter!("relay_risk_assessments_total", "action" => assessment.action.as_str())
            .increment(1);
        Ok(assessment)
    }

    /// Whether the merchant's block lists turn the payer of `invoice` (by its client address and
    /// the invoice's email) away at the checkout page: the rule's id if so.
    pub async fn turned_away(
        &self,
        invoice: &Invoice,
        client: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let rules = self.compiled_rules(&invoice.merchant_id).await?;
        let payer = Payer {
            ip: client.map(str::to_owned),
            ..Payer::default()
        };
        let signals = Signals::of(invoice, Method::Card, payer);
        Ok(rules.listed_block(&signals).map(str::to_owned))
    }

    /// Records a declined card, for the rules that count declines.
    pub async fn record_decline(
        &self,
        merchant: &MerchantId,
        fingerprint: &str,
        attempt: &str,
    ) -> Result<(), StoreError> {
        let signal = Signal {
            key: relay_core::risk::decline_key(fingerprint),
            id: attempt.to_owned(),
            at: self.clock.now(),
            currency: String::new(),
            amount: 0,
        };
        self.store.record_signal(merchant, &signal).await
    }
}

/// When an open review of a payment on `method` is rejected by itself: an escrow deposit before
/// its payer may reclaim it, a card authorization before it lapses; bitcoin waits.
pub fn review_deadline(invoice: &Invoice, method: Method, now: Timestamp) -> Option<Timestamp> {
    match method {
        Method::Ethereum => invoice
            .quote_for(Method::Ethereum)
            .and_then(|q| q.ethereum.as_ref())
            .map(|e| Timestamp(e.expiry.saturating_sub(REVIEW_MARGIN_SECS) as i64)),
        Method::Card => Some(Timestamp(now.0 + CARD_REVIEW_SECS)),
        Method::Bitcoin => None,
    }
}
