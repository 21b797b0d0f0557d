//! Risk controls: a merchant's rules, what they make of one payment, and the screening of payer
//! addresses against sanctions lists. Pure: the engine gathers the payment's [`Signals`] and the
//! payer's recent [`History`], and [`CompiledRules::assess`] returns an [`Assessment`] — a score,
//! the reasons behind it, and what to do (allow, review, block).
//!
//! The rules:
//! - every rule that matches adds a reason; the outcome is the most severe action among them
//!   (block over review over allow);
//! - an allow-list match lets the payment through whatever other rules say — except a sanctions
//!   hit, which nothing overrides: the funds are held and never captured or settled;
//! - amount limits compare the invoice's price, and velocity sums what the payer paid, in the
//!   rule's currency: a rule in USD says nothing of a EUR invoice;
//! - velocity counts include the payment being assessed: `max_count: 3` lets three through and
//!   acts on the fourth.

use crate::invoice::Method;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Rules a merchant may have at most.
pub const MAX_RULES: usize = 200;
/// Entries of all of a merchant's lists together.
pub const MAX_LIST_ENTRIES: usize = 50_000;
/// The longest window a velocity or decline rule may look back over: 90 days.
pub const MAX_WINDOW_SECS: u64 = 90 * 24 * 3600;
const MAX_ENTRY_LEN: usize = 128;
const MAX_RULE_ID_LEN: usize = 64;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskAction {
    Allow,
    Review,
    Block,
}

impl RiskAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskAction::Allow => "allow",
            RiskAction::Review => "review",
            RiskAction::Block => "block",
        }
    }
}

/// Who a payer is, as far as one rail can tell: what velocity is counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayerKey {
    /// The card's fingerprint at the gateway (the same card gives the same one).
    CardFingerprint,
    /// The address that made an escrow deposit.
    EthSender,
    /// The scripts a bitcoin payment's inputs spent from.
    BtcInput,
    /// The client address of a checkout's card attempt.
    Ip,
}

impl PayerKey {
    pub fn as_str(self) -> &'static str {
        match self {
            PayerKey::CardFingerprint => "card_fingerprint",
            PayerKey::EthSender => "eth_sender",
            PayerKey::BtcInput => "btc_input",
            PayerKey::Ip => "ip",
        }
    }
}

/// What a list matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListField {
    /// A payer's address on a chain: the escrow deposit's sender, a bitcoin input's address.
    Address,
    CardFingerprint,
    /// The payer's email (the invoice's `metadata.email`).
    Email,
    Ip,
    /// The card's issuing country (ISO 3166 alpha-2), where the gateway gives it.
    CardCountry,
}

impl ListField {
    pub fn as_str(self) -> &'static str {
        match self {
            ListField::Address => "address",
            ListField::CardFingerprint => "card_fingerprint",
            ListField::Email => "email",
            ListField::Ip => "ip",
            ListField::CardCountry => "card_country",
        }
    }
}

/// One rule, as the merchant writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// The invoice's price is above `max` (minor units of `currency`).
    AmountLimit {
        id: String,
        currency: String,
        max: String,
        action: RiskAction,
    },
    /// The payer (by `key`) made more than `max_count` payments, or paid more than `max_amount`
    /// (minor units of `currency`), within `window_secs`, this one included.
    Velocity {
        id: String,
        key: PayerKey,
        window_secs: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_count: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_amount: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        currency: Option<String>,
        action: RiskAction,
    },
    /// The card was declined `max` times or more within `window_secs` (across every invoice of
    /// the merchant).
    Declines {
        id: String,
        window_secs: u64,
        max: u64,
        action: RiskAction,
    },
    /// The payment's `field` is one of `values`.
    List {
        id: String,
        field: ListField,
        values: Vec<String>,
        action: RiskAction,
    },
}

impl Rule {
    pub fn id(&self) -> &str {
        match self {
            Rule::AmountLimit { id, .. }
            | Rule::Velocity { id, .. }
            | Rule::Declines { id, .. }
            | Rule::List { id, .. } => id,
        }
    }

    pub fn action(&self) -> RiskAction {
        match self {
            Rule::AmountLimit { action, .. }
            | Rule::Velocity { action, .. }
            | Rule::Declines { action, .. }
            | Rule::List { action, .. } => *action,
        }
    }
}

/// A merchant's rules. `version` grows by one with every change (0: never set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskRules {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    pub rules: Vec<Rule>,
}

/// Why a set of rules was refused: the rule (by its place in the list) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rules[{index}].{field}: {reason}")]
pub struct RuleError {
    pub index: usize,
    pub field: &'static str,
    pub reason: String,
}

fn rule_error(index: usize, field: &'static str, reason: impl Into<String>) -> RuleError {
    RuleError {
        index,
        field,
        reason: reason.into(),
    }
}

/// A positive amount in minor units, as a string of digits.
fn minor_units(s: &str, index: usize, field: &'static str) -> Result<u128, RuleError> {
    if s.is_empty() || s.len() > 38 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(rule_error(
            index,
            field,
            "must be a whole number of minor units, as a string of digits",
        ));
    }
    s.parse()
        .map_err(|_| rule_error(index, field, "out of range"))
}

fn currency(s: &str, index: usize) -> Result<String, RuleError> {
    if s.len() < 3 || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(rule_error(index, "currency", "must be an asset code"));
    }
    Ok(s.to_ascii_uppercase())
}

fn window(secs: u64, index: usize) -> Result<u64, RuleError> {
    if secs == 0 || secs > MAX_WINDOW_SECS {
        return Err(rule_error(
            index,
            "window_secs",
            format!("must be between 1 and {MAX_WINDOW_SECS}"),
        ));
    }
    Ok(secs)
}

/// A list entry as it is compared: addresses that are hex or bech32 and emails compare without
/// case; countries in upper case; base58 addresses and fingerprints as they are.
pub fn normalize(field: ListField, value: &str) -> String {
    let v = value.trim();
    match field {
        ListField::Address => normalize_address(v),
        ListField::Email => v.to_ascii_lowercase(),
        ListField::CardCountry => v.to_ascii_uppercase(),
        ListField::CardFingerprint | ListField::Ip => v.to_owned(),
    }
}

/// An address as it is compared: `0x` hex and bech32 (case-insensitive by their formats) in
/// lower case, anything else (base58, case-sensitive) as it is.
pub fn normalize_address(v: &str) -> String {
    let lower = v.to_ascii_lowercase();
    let bech32 = ["bc1", "tb1", "bcrt1"].iter().any(|p| lower.starts_with(p));
    if lower.starts_with("0x") || bech32 {
        lower
    } else {
        v.to_owned()
    }
}

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

/// What is known of one payment (or one attempt to pay) when it is assessed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals {
    pub method: Option<Method>,
    /// The invoice's price: currency code and minor units.
    pub price_currency: String,
    pub price_minor: u128,
    pub card_fingerprint: Option<String>,
    pub card_country: Option<String>,
    /// The escrow deposit's sender (`0x` lowercase).
    pub eth_sender: Option<String>,
    /// The output scripts (hex) a bitcoin payment's inputs spent from, where they could be told.
    pub btc_inputs: Vec<String>,
    /// Addresses of the payer on its chain (the sender; the inputs' addresses).
    pub addresses: Vec<String>,
    pub ip: Option<String>,
    pub email: Option<String>,
}

impl Signals {
    /// The payer's keys of one kind (a bitcoin payment may have several input scripts).
    pub fn keys(&self, key: PayerKey) -> Vec<String> {
        let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
        let values = match key {
            PayerKey::CardFingerprint => one(&self.card_fingerprint),
            PayerKey::EthSender => one(&self.eth_sender),
            PayerKey::BtcInput => self.btc_inputs.clone(),
            PayerKey::Ip => one(&self.ip),
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
                .addresses
                .iter()
                .map(|a| normalize_address(a))
                .collect(),
            ListField::CardFingerprint => one(&self.card_fingerprint),
            ListField::Email => one(&self.email),
            ListField::Ip => one(&self.ip),
            ListField::CardCountry => one(&self.card_country),
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

/// Addresses on sanctions lists, one list per asset (the OFAC SDN digital currency address lists:
/// one address per line).
#[derive(Debug, Clone, Default)]
pub struct Sanctions {
    lists: BTreeMap<String, HashSet<String>>,
}

impl Sanctions {
    /// Parses one list of `asset` in the published format: an address per line; blank lines and
    /// lines starting with `#` are skipped.
    pub fn add_list(&mut self, asset: &str, text: &str) {
        let list = self.lists.entry(asset.to_ascii_uppercase()).or_default();
        for line in text.lines() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                list.insert(normalize_address(line));
            }
        }
    }

    /// The asset of the first list `address` is on.
    pub fn hit(&self, address: &str) -> Option<&str> {
        let a = normalize_address(address);
        self.lists
            .iter()
            .find(|(_, l)| l.contains(&a))
            .map(|(asset, _)| asset.as_str())
    }

    /// Each list's asset and how many addresses it holds.
    pub fn sizes(&self) -> Vec<(String, usize)> {
        self.lists
            .iter()
            .map(|(a, l)| (a.clone(), l.len()))
            .collect()
    }
}

/// A merchant's rules made ready to evaluate: lists as hash sets, amounts parsed.
#[derive(Debug, Clone, Default)]
pub struct CompiledRules {
    pub version: u64,
    rules: Vec<Compiled>,
}

#[derive(Debug, Clone)]
enum Compiled {
    AmountLimit {
        id: String,
        currency: String,
        max: u128,
        action: RiskAction,
    },
    Velocity {
        id: String,
        key: PayerKey,
        window: u64,
        max_count: Option<u64>,
        max_amount: Option<(String, u128)>,
        action: RiskAction,
    },
    Declines {
        id: String,
        window: u64,
        max: u64,
        action: RiskAction,
    },
    List {
        id: String,
        field: ListField,
        values: HashSet<String>,
        action: RiskAction,
    },
}

impl RiskRules {
    /// Checks every rule and prepares them for evaluation; the first mistake found is refused.
    pub fn compile(&self) -> Result<CompiledRules, RuleError> {
        if self.rules.len() > MAX_RULES {
            return Err(rule_error(
                MAX_RULES,
                "rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        let mut ids = HashSet::new();
        let mut entries = 0usize;
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let id = rule.id();
            if id.is_empty()
                || id.len() > MAX_RULE_ID_LEN
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(rule_error(i, "id", "1 to 64 letters, digits, '_' or '-'"));
            }
            if !ids.insert(id) {
                return Err(rule_error(i, "id", format!("{id:?} is used twice")));
            }
            rules.push(match rule {
                Rule::AmountLimit {
                    id,
                    currency: c,
                    max,
                    action,
                } => Compiled::AmountLimit {
                    id: id.clone(),
                    currency: currency(c, i)?,
                    max: minor_units(max, i, "max")?,
                    action: *action,
                },
                Rule::Velocity {
                    id,
                    key,
                    window_secs,
                    max_count,
                    max_amount,
                    currency: c,
                    action,
                } => {
                    let max_amount = match (max_amount, c) {
                        (Some(m), Some(c)) => {
                            Some((currency(c, i)?, minor_units(m, i, "max_amount")?))
                        }
                        (None, None) => None,
                        (Some(_), None) => {
                            return Err(rule_error(i, "currency", "max_amount needs a currency"))
                        }
                        (None, Some(_)) => {
                            return Err(rule_error(i, "max_amount", "a currency needs max_amount"))
                        }
                    };
                    if max_count.is_none() && max_amount.is_none() {
                        return Err(rule_error(
                            i,
                            "max_count",
                            "give max_count, max_amount, or both",
                        ));
                    }
                    Compiled::Velocity {
                        id: id.clone(),
                        key: *key,
                        window: window(*window_secs, i)?,
                        max_count: *max_count,
                        max_amount,
                        action: *action,
                    }
                }
                Rule::Declines {
                    id,
                    window_secs,
                    max,
                    action,
                } => {
                    if *max == 0 {
                        return Err(rule_error(i, "max", "must be at least 1"));
                    }
                    Compiled::Declines {
                        id: id.clone(),
                        window: window(*window_secs, i)?,
                        max: *max,
                        action: *action,
                    }
                }
                Rule::List {
                    id,
                    field,
                    values,
                    action,
                } => {
                    entries = entries.saturating_add(values.len());
                    if entries > MAX_LIST_ENTRIES {
                        return Err(rule_error(
                            i,
                            "values",
                            format!("at most {MAX_LIST_ENTRIES} list entries in all"),
                        ));
                    }
                    if values.is_empty() {
                        return Err(rule_error(i, "values", "a list needs at least one value"));
                    }
                    if let Some(bad) = values
                        .iter()
                        .find(|v| v.trim().is_empty() || v.len() > MAX_ENTRY_LEN)
                    {
                        return Err(rule_error(
                            i,
                            "values",
                            format!("{bad:?}: entries are 1 to {MAX_ENTRY_LEN} characters"),
                        ));
                    }
                    Compiled::List {
                        id: id.clone(),
                        field: *field,
                        values: values.iter().map(|v| normalize(*field, v)).collect(),
                        action: *action,
                    }
                }
            });
        }
        Ok(CompiledRules {
            version: self.version,
            rules,
        })
    }
}

impl CompiledRules {
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
                    out.extend(signals.card_fingerprint.iter().map(|f| Window {
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
        let sanctioned = signals.addresses.iter().find_map(|a| {
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

/// The state of a payment's review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    Open,
    Approved,
    Rejected,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Open => "open",
            ReviewStatus::Approved => "approved",
            ReviewStatus::Rejected => "rejected",
        }
    }
}

/// A payment held (or flagged) for a person to look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// `rvw_` and 24 hex digits, derived from the invoice and the payment.
    pub id: String,
    pub status: ReviewStatus,
    pub opened_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Timestamp>,
    /// When an open review is rejected by itself (an escrow deposit before its payer may
    /// reclaim it; a card authorization before it lapses). None: it waits (bitcoin, which is
    /// already at the merchant; a sanctioned payment, which is never released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
}

/// The id of the review of `payment` on `invoice`: the same every time, so a retried write opens
/// the same review.
pub fn review_id(invoice: &str, payment: &str) -> String {
    let h = alloy_primitives::keccak256(format!("{invoice}/{payment}").as_bytes());
    format!("rvw_{}", hex::encode(&h[..12]))
}

/// Whether `id` has the shape of a review id (anything else is not looked up).
pub fn is_review_id(id: &str) -> bool {
    id.len() == 28 && id.starts_with("rvw_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests;
