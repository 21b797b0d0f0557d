//! The card rail: a Stripe-compatible gateway client and verification of the gateway's webhooks.
//! It turns gateway events into plain observations for `relay-core`.
//!
//! Not built yet: this crate marks its place in the workspace; the rail is tracked as its own issue.
