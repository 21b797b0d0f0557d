//! What the rules make of one payment: its signals, the payer's history in each window, and the
//! assessment (score, reasons, action).

use super::{
    normalize, normalize_address, Compiled, CompiledRules, ListField, PayerKey, RiskAction,
    Sanctions,
};
use crate::invoice::Method;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A velocity question the engine answers from the store: how many payments (or declines) the
/// payer made under `key` since `since`, and their sum per currency.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// The signal key: `<kind>:<value>` (see [`signal_key`]).
    pub key: String,
    pub secs: u64,
}

/// What the store knows of one payer key in one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub count: u64,
    /// Minor units per currency.
    pub sums: BTreeMap<String, u128>,
}

/// The key a payer's signals are stored under: what kind of key, and its value.
pub fn signal_key(kind: &str, value: &str) -> String {
    format!("{kind}:{value}")
}

/// The key of a card's declines.
pub fn decline_key(fingerprint: &str) -> String {
    signal_key("decline", fingerprint)
}

/// The answers to the [`Window`]s [`CompiledRules::windows`] asked for.
pub type History = HashMap<Window, Totals>;

/// Who paid, as far as its rail tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payer {
    pub card_fingerprint: Option<String>,
    pub card_country: Option<String>,
    /// The escrow deposit's sender (`0x` lowercase).
    pub eth_sender: Option<String>,
    /// The output scripts (hex) a bitcoin payment's inputs spent from, where they could be told.
    pub btc_inputs: Vec<String>,
    /// Addresses of the payer on its chain (the sender; the inputs' addresses).
    pub addresses: Vec<String>,
    /// The client address of a card attempt at the checkout page.
    pub ip: Option<String>,
}

/// What is known of one payment (or one attempt to pay) when it is assessed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals {
    pub method: Option<Method>,
    /// The invoice's price: currency code and minor units.
    pub price_currency: String,
    pub price_minor: u128,
    /// The invoice's `metadata.email`.
    pub email: Option<String>,
    pub payer: Payer,
}

impl Signals {
    /// The signals of a payment on `method` of `invoice` by `payer`.
    pub fn of(invoice: &crate::Invoice, method: Method, payer: Payer) -> Signals {
        Signals {
            method: Some(method),
            price_currency: invoice.price.asset.code.clone(),
            price_minor: u128::try_from(invoice.price.amount.0).unwrap_or(u128::MAX),
            email: invoice.metadata.get("email").cloned(),
            payer,
        }
    }

    /// The payer's keys of one kind (a bitcoin payment may have several input scripts).
    pub fn keys(&self, key: PayerKey) -> Vec<String> {
        let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
        let values = match key {
            PayerKey::CardFingerprint => one(&self.payer.card_fingerprint),
            PayerKey::EthSender => one(&self.payer.eth_sender),
            PayerKey::BtcInput => self.payer.btc_inputs.clone(),
            PayerKey::Ip => one(&self.payer.ip),
        };
        values
            .into_iter()
            .map(|v| signal_key(key.as_str(), &v))
            .collect()
    }

    /// Every signal key this payment is counted under.
    pub fn all_keys(&self) -> Vec<String> {
        [
            PayerKey::CardFingerprint,
            PayerKey::EthSender,
            PayerKey::BtcInput,
            PayerKey::Ip,
        ]
        .into_iter()
        .flat_map(|k| self.keys(k))
        .collect()
    }

    fn field(&self, field: ListField) -> Vec<String> {
        let one = |v: &Option<String>| v.iter().map(|s| normalize(field, s)).collect();
        match field {
            ListField::Address => self
                .payer
                .addresses
                .iter()
                .map(|a| normalize_address(a))
                .collect(),
            ListField::CardFingerprint => one(&self.payer.card_fingerprint),
            ListField::Email => one(&self.email),
            ListField::Ip => one(&self.payer.ip),
            ListField::CardCountry => one(&self.payer.card_country),
        }
    }
}

/// Why a payment scored what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The rule's id, or `sanctions`.
    pub rule: String,
    /// `amount_limit`, `velocity_count`, `velocity_amount`, `declines`, `listed`,
    /// `allow_listed` or `sanctioned`.
    pub code: String,
    pub action: RiskAction,
    pub message: String,
}

/// What the rules made of one payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// 0 (nothing against it) to 100 (blocked).
    pub score: u8,
    pub action: RiskAction,
    pub reasons: Vec<Reason>,
    /// The version of the rules that decided.
    pub rules_version: u64,
    /// An address of the payer is on a sanctions list: held, never captured or settled, and no
    /// reviewer may approve it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sanctioned: bool,
}

impl Assessment {
    /// Nothing against the payment.
    pub fn clean(rules_version: u64) -> Assessment {
        Assessment {
            score: 0,
            action: RiskAction::Allow,
            reasons: Vec::new(),
            rules_version,
            sanctioned: false,
        }
    }
}

impl CompiledRules {
    /// The block list that turns a payer with `signals` away before anything is paid (the
    /// checkout page), if one does and no allow list lets it through. Nothing is counted.
    pub fn listed_block(&self, signals: &Signals) -> Option<&str> {
        let mut blocked = None;
        for rule in &self.rules {
            if let Compiled::List {
                id,
                field,
                values,
                action,
            } = rule
            {
                if !signals.field(*field).iter().any(|v| values.contains(v)) {
                    continue;
                }
                match action {
                    RiskAction::Allow => return None,
                    RiskAction::Block => blocked = blocked.or(Some(id.as_str())),
                    RiskAction::Review => {}
                }
            }
        }
        blocked
    }

    /// The velocity questions a payment with `signals` needs answered before it is assessed.
    pub fn windows(&self, signals: &Signals) -> Vec<Window> {
        let mut out = Vec::new();
        for rule in &self.rules {
            match rule {
                Compiled::Velocity { key, window, .. } => out.extend(
                    signals
                        .keys(*key)
                        .into_iter()
                        .map(|key| Window { key, secs: *window }),
                ),
                Compiled::Declines { window, .. } => {
                    out.extend(signals.payer.card_fingerprint.iter().map(|f| Window {
                        key: decline_key(f),
                        secs: *window,
                    }))
                }
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// What the rules make of a payment, given the answers to [`CompiledRules::windows`] (a
    /// window missing from `history` counts nothing) and the sanctions lists.
    pub fn assess(
        &self,
        signals: &Signals,
        history: &History,
        sanctions: &Sanctions,
    ) -> Assessment {
        let mut reasons = Vec::new();
        let mut allowed = false;
        for rule in &self.rules {
            match rule {
                Compiled::AmountLimit {
                    id,
                    currency,
                    max,
                    action,
                } if *currency == signals.price_currency && signals.price_minor > *max => reasons
                    .push(Reason {
                        rule: id.clone(),
                        code: "amount_limit".into(),
                        action: *action,
                        message: format!(
                            "the price, {} {currency} (minor units), is over the limit of {max}",
                            signals.price_minor
                        ),
                    }),
                Compiled::Velocity {
                    id,
                    key,
                    window,
                    max_count,
                    max_amount,
                    action,
                } => {
                    for k in signals.keys(*key) {
                        let Some(t) = history.get(&Window {
                            key: k.clone(),
                            secs: *window,
                        }) else {
                            continue;
                        };
                        if let Some(max) = max_count.filter(|m| t.count > *m) {
                            reasons.push(Reason {
                                rule: id.clone(),
                                code: "velocity_count".into(),
                                action: *action,
                                message: format!(
                                    "{} payments by {} in {window} s, over the limit of {max}",
                                    t.count,
                                    key.as_str()
                                ),
                            });
                        }
                        if let Some((c, max)) = max_amount {
                            let sum = t.sums.get(c).copied().unwrap_or(0);
                            if sum > *max {
                                reasons.push(Reason {
                                    rule: id.clone(),
                                    code: "velocity_amount".into(),
                                    action: *action,
                                    message: format!(
                                        "{sum} {c} (minor units) paid by {} in {window} s, over the limit of {max}",
                                        key.as_str()
                                    ),
                                });
                            }
                        }
                    }
                }
                Compiled::Declines {
                    id,
                    window,
                    max,
                    action,
                } => {
                    let declines = signals
                        .payer
                        .card_fingerprint
                        .as_ref()
                        .and_then(|f| {
                            history.get(&Window {
                                key: decline_key(f),
                                secs: *window,
                            })
                        })
                        .map_or(0, |t| t.count);
                    if declines >= *max {
                        reasons.push(Reason {
                            rule: id.clone(),
                            code: "declines".into(),
                            action: *action,
                            message: format!(
                                "the card was declined {declines} times in {window} s (limit {max})"
                            ),
                        });
                    }
                }
                Compiled::List {
                    id,
                    field,
                    values,
                    action,
                } => {
                    if let Some(v) = signals
                        .field(*field)
                        .into_iter()
                        .find(|v| values.contains(v))
                    {
                        if *action == RiskAction::Allow {
                            allowed = true;
                        }
                        reasons.push(Reason {
                            rule: id.clone(),
                            code: if *action == RiskAction::Allow {
                                "allow_listed"
                            } else {
                                "listed"
                            }
                            .into(),
                            action: *action,
                            message: format!("{} {v:?} is on the list", field.as_str()),
                        });
                    }
                }
                _ => {}
            }
        }
        let sanctioned = signals.payer.addresses.iter().find_map(|a| {
            sanctions.hit(a).map(|asset| Reason {
                rule: "sanctions".into(),
                code: "sanctioned".into(),
                action: RiskAction::Block,
                message: format!("address {a} is on the {asset} sanctions list"),
            })
        });
        let is_sanctioned = sanctioned.is_some();
        reasons.extend(sanctioned);
        let worst = reasons
            .iter()
            .map(|r| r.action)
            .max()
            .unwrap_or(RiskAction::Allow);
        let action = if is_sanctioned {
            RiskAction::Block
        } else if allowed {
            RiskAction::Allow
        } else {
            worst
        };
        let score = match action {
            RiskAction::Block => 100,
            RiskAction::Review => 60u32,
            RiskAction::Allow => 0,
        };
        // Each reason that did not decide still adds to the score, short of the next action.
        let extra = reasons
            .iter()
            .filter(|r| r.action != RiskAction::Allow)
            .count() as u32
            * 10;
        let cap = match action {
            RiskAction::Block => 100,
            RiskAction::Review => 95,
            RiskAction::Allow => 50,
        };
        Assessment {
            score: (score + extra).min(cap) as u8,
            action,
            reasons,
            rules_version: self.version,
            sanctioned: is_sanctioned,
        }
    }
}
