//! The HTTP handlers, one module per resource.

pub mod checkout;
pub mod events;
pub mod gateway;
pub mod invoices;
pub mod keys;
pub mod links;
pub mod rates;
pub mod refunds;
pub mod risk;
pub mod settlements;
pub mod webhooks;
