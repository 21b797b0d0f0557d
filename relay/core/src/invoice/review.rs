//! Risk on an invoice: each payment's assessment, its review, and what a review holds.
//!
//! The rules:
//! - a payment is assessed once, when it is first seen; anything but `allow` opens a review;
//! - an open or rejected review holds its payment: it counts as underway, never as final, so the
//!   invoice does not settle on it, its escrow deposit is not captured and no settlement pays it;
//! - a sanctioned payment is held for good: no reviewer may approve it;
//! - bitcoin paid to the merchant's own wallet is already the merchant's: its review flags it
//!   (and offers a refund) but holds nothing.

use super::*;
use crate::risk::{Assessment, Review, ReviewStatus, RiskAction, CARD_REVIEW_SECS};

impl Invoice {
    /// Whether `p` is held by its review (see the module's rules).
    pub fn held(&self, p: &Payment) -> bool {
        if p.method == Method::Bitcoin && !self.settles_cross_rail(Method::Bitcoin) {
            return false;
        }
        let sanctioned = p.risk.as_ref().is_some_and(|r| r.sanctioned);
        let under_review = p
            .review
            .as_ref()
            .is_some_and(|r| r.status != ReviewStatus::Approved);
        sanctioned || under_review
    }

    /// The payment whose review is `id`.
    pub fn payment_under_review(&self, id: &str) -> Option<&Payment> {
        self.payments
            .iter()
            .find(|p| p.review.as_ref().is_some_and(|r| r.id == id))
    }

    /// Whether any review of this invoice is open.
    pub fn in_review(&self) -> bool {
        self.payments.iter().any(|p| {
            p.review
                .as_ref()
                .is_some_and(|r| r.status == ReviewStatus::Open)
        })
    }

    pub(super) fn assess(
        &mut self,
        reference: &PaymentRef,
        assessment: Assessment,
        deadline: Option<Timestamp>,
        now: Timestamp,
        events: &mut Vec<EventType>,
    ) -> Result<bool, CoreError> {
        let invoice_id = self.id.to_string();
        let p = self
            .payments
            .iter_mut()
            .find(|p| p.reference == *reference)
            .ok_or_else(|| CoreError::UnknownPayment {
                reference: reference.to_string(),
            })?;
        if p.risk.is_some() {
            return Ok(false);
        }
        if assessment.action != RiskAction::Allow {
            p.review = Some(Review {
                id: crate::risk::review_id(&invoice_id, &reference.to_string()),
                status: ReviewStatus::Open,
                opened_at: now,
                closed_at: None,
                // A sanctioned payment is never released by the clock either.
                deadline: deadline.filter(|_| !assessment.sanctioned),
            });
            events.push(EventType::ReviewOpened);
        }
        p.risk = Some(assessment);
        Ok(true)
    }

    /// A card payment recorded for the first time takes the assessment the checkout page made
    /// of its card (a review of an authorization waits at most [`CARD_REVIEW_SECS`]).
    pub(super) fn take_card_assessment(
        &mut self,
        reference: &PaymentRef,
        now: Timestamp,
        events: &mut Vec<EventType>,
    ) -> Result<bool, CoreError> {
        let Some(assessment) = self.card_assessment.clone() else {
            return Ok(false);
        };
        let deadline = Some(Timestamp(now.0.saturating_add(CARD_REVIEW_SECS)));
        self.assess(reference, assessment, deadline, now, events)
    }

    pub(super) fn close_review(
        &mut self,
        id: &str,
        approve: bool,
        now: Timestamp,
        events: &mut Vec<EventType>,
    ) -> Result<bool, CoreError> {
        let p = self
            .payments
            .iter_mut()
            .find(|p| p.review.as_ref().is_some_and(|r| r.id == id))
            .ok_or_else(|| CoreError::UnknownRecord { id: id.to_owned() })?;
        let sanctioned = p.risk.as_ref().is_some_and(|r| r.sanctioned);
        let Some(review) = p.review.as_mut() else {
            return Ok(false);
        };
        let wanted = if approve {
            ReviewStatus::Approved
        } else {
            ReviewStatus::Rejected
        };
        if review.status == wanted {
            return Ok(false);
        }
        if review.status != ReviewStatus::Open {
            return Err(CoreError::ReviewClosed {
                id: id.to_owned(),
                status: review.status.as_str(),
            });
        }
        if approve && sanctioned {
            return Err(CoreError::Sanctioned { id: id.to_owned() });
        }
        review.status = wanted;
        review.closed_at = Some(now);
        events.push(EventType::ReviewClosed);
        Ok(true)
    }
}
