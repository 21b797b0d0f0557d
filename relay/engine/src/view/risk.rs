//! Risk as the merchant sees it: a payment's score and reasons, its review, the review queue and
//! the rules.

use super::{rfc3339, InvoiceView, PaymentView};
use crate::reviews::ReviewOf;
use relay_core::risk::{Assessment, Reason, Review};
use relay_core::RiskRules;
use serde::Serialize;
use utoipa::ToSchema;

/// What the rules made of one payment.
#[derive(Serialize, ToSchema)]
pub struct RiskView {
    /// 0 (nothing against it) to 100 (blocked).
    pub score: u8,
    /// `allow`, `review` or `block`.
    pub action: &'static str,
    pub reasons: Vec<ReasonView>,
    /// The version of the rules that decided.
    pub rules_version: u64,
    /// An address of the payer is on a sanctions list.
    pub sanctioned: bool,
}

/// One rule that matched.
#[derive(Serialize, ToSchema)]
pub struct ReasonView {
    /// The rule's id, or `sanctions`.
    pub rule: String,
    /// `amount_limit`, `velocity_count`, `velocity_amount`, `declines`, `listed`,
    /// `allow_listed` or `sanctioned`.
    pub code: String,
    pub action: &'static str,
    pub message: String,
}

impl ReasonView {
    fn of(r: &Reason) -> ReasonView {
        ReasonView {
            rule: r.rule.clone(),
            code: r.code.clone(),
            action: r.action.as_str(),
            message: r.message.clone(),
        }
    }
}

impl RiskView {
    pub fn of(a: &Assessment) -> RiskView {
        RiskView {
            score: a.score,
            action: a.action.as_str(),
            reasons: a.reasons.iter().map(ReasonView::of).collect(),
            rules_version: a.rules_version,
            sanctioned: a.sanctioned,
        }
    }
}

/// A payment's review.
#[derive(Serialize, ToSchema)]
pub struct ReviewStateView {
    /// `rvw_…`
    pub id: String,
    /// `open`, `approved` or `rejected`.
    pub status: &'static str,
    pub opened_at: String,
    pub closed_at: Option<String>,
    /// When an open review is rejected by itself (escrow deposits, card authorizations).
    pub deadline: Option<String>,
}

impl ReviewStateView {
    pub fn of(r: &Review) -> ReviewStateView {
        ReviewStateView {
            id: r.id.clone(),
            status: r.status.as_str(),
            opened_at: rfc3339(r.opened_at),
            closed_at: r.closed_at.map(rfc3339),
            deadline: r.deadline.map(rfc3339),
        }
    }
}

/// A review in the queue: the payment held, and its invoice.
#[derive(Serialize, ToSchema)]
pub struct ReviewView {
    /// `rvw_…`
    pub id: String,
    pub object: &'static str,
    /// `open`, `approved` or `rejected`.
    pub status: &'static str,
    pub opened_at: String,
    pub closed_at: Option<String>,
    pub deadline: Option<String>,
    /// `card`, `bitcoin` or `ethereum`.
    pub method: String,
    /// What approving and rejecting do for this payment: `capture_or_void` (escrow),
    /// `capture_or_cancel` (card authorization), `flag_or_refund` (bitcoin, already paid).
    pub decision: &'static str,
    pub payment: PaymentView,
    pub invoice: InvoiceView,
}

impl ReviewView {
    pub fn of(found: &ReviewOf) -> Option<ReviewView> {
        let p = found
            .invoice
            .payments
            .iter()
            .find(|p| p.reference == found.payment)?;
        let r = p.review.as_ref()?;
        Some(ReviewView {
            id: r.id.clone(),
            object: "review",
            status: r.status.as_str(),
            opened_at: rfc3339(r.opened_at),
            closed_at: r.closed_at.map(rfc3339),
            deadline: r.deadline.map(rfc3339),
            method: p.method.as_str().to_owned(),
            decision: match p.method {
                relay_core::Method::Ethereum => "capture_or_void",
                relay_core::Method::Card => "capture_or_cancel",
                relay_core::Method::Bitcoin => "flag_or_refund",
            },
            payment: PaymentView::of(&found.invoice, p),
            invoice: InvoiceView::of(&found.invoice),
        })
    }
}

/// A merchant's risk rules.
#[derive(Serialize, ToSchema)]
pub struct RiskRulesView {
    pub object: &'static str,
    /// Grows by one with every change; 0: never set. Send it back as `version` to change them.
    pub version: u64,
    pub updated_at: Option<String>,
    /// The rules as they were given (see `PUT /v1/risk/rules`).
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<serde_json::Value>,
    /// The sanctions lists in use on this relay: asset and number of addresses.
    pub sanctions_lists: Vec<SanctionsListView>,
}

#[derive(Serialize, ToSchema)]
pub struct SanctionsListView {
    pub asset: String,
    pub addresses: usize,
}

impl RiskRulesView {
    pub fn of(rules: &RiskRules, sanctions: &relay_core::Sanctions) -> RiskRulesView {
        RiskRulesView {
            object: "risk_rules",
            version: rules.version,
            updated_at: rules.updated_at.map(rfc3339),
            rules: rules
                .rules
                .iter()
                .filter_map(|r| serde_json::to_value(r).ok())
                .collect(),
            sanctions_lists: sanctions
                .sizes()
                .into_iter()
                .map(|(asset, addresses)| SanctionsListView { asset, addresses })
                .collect(),
        }
    }
}
