//! The one error type of the domain crate.

use crate::invoice::InvoiceStatus;

/// Why the domain refused an input. Every variant is the caller's mistake or a rule of the business;
/// none is retryable, because the same input gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    #[error("amount {input:?} is not a valid {asset} amount: {reason}")]
    InvalidAmount {
        asset: String,
        input: String,
        reason: &'static str,
    },
    #[error("amount overflows the range of {asset}")]
    AmountOverflow { asset: String },
    #[error("unknown or unsupported asset {code:?}")]
    UnknownAsset { code: String },
    #[error("no rate to convert {from} into {to}")]
    NoRate { from: String, to: String },
    /// The rate is known but unusable now (every source too old or disagreeing).
    #[error("no usable rate to convert {from} into {to} now: {reason}")]
    RateUnavailable {
        from: String,
        to: String,
        reason: String,
    },
    #[error("invoice is {status} and cannot be canceled")]
    NotCancelable { status: InvoiceStatus },
    #[error(
        "payment {reference:?} is in {asset}, but the invoice's {method} method expects {expected}"
    )]
    WrongPaymentAsset {
        reference: String,
        method: String,
        asset: String,
        expected: String,
    },
    #[error("the invoice does not offer the {method} method")]
    MethodNotOffered { method: String },
    #[error("unknown payment {reference:?}")]
    UnknownPayment { reference: String },
    #[error("{field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("nothing to refund: {reason}")]
    NotRefundable { reason: String },
    #[error("the refund exceeds what is left to refund of the payment ({refundable} {asset})")]
    RefundTooLarge { refundable: String, asset: String },
    #[error("unknown refund or settlement {id:?}")]
    UnknownRecord { id: String },
    #[error("the settlement cannot be released: {reason}")]
    NotReleasable { reason: String },
    #[error("review {id} is already {status}")]
    ReviewClosed { id: String, status: &'static str },
    #[error("review {id} is of a payer on a sanctions list: it cannot be approved")]
    Sanctioned { id: String },
}
