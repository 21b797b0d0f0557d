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

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// How long a card authorization under review waits for a reviewer before it is released
/// (authorizations lapse after about seven days).
pub const CARD_REVIEW_SECS: i64 = 6 * 24 * 3600;
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

mod assess;
mod review;
mod sanctions;
pub use assess::{
    decline_key, signal_key, Assessment, History, Payer, Reason, Signals, Totals, Window,
};
pub use review::{is_review_id, review_id, Review, ReviewStatus};
pub use sanctions::Sanctions;

#[cfg(test)]
mod tests;
