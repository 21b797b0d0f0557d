//! A payment's review: held (or flagged) for a person to look at.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

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
