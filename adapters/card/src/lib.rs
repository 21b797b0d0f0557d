//! The card rail: a client for a Stripe-compatible gateway (create, retrieve, cancel and refund
//! PaymentIntents) and the verification and parsing of the gateway's signed webhooks into
//! [`relay_core::GatewayEvent`]s. It never decides an invoice's state itself.

mod client;
mod webhook;

pub use client::{GatewayClient, GatewayError, PaymentIntent, TokenCard};
pub use webhook::{parse_event, verify_signature, SignatureError, DEFAULT_TOLERANCE_SECS};
