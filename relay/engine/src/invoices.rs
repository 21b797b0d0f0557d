//! Creating and canceling invoices: which rails an invoice offers, what each is paid to (a
//! derived bitcoin address, an escrow deposit, a PaymentIntent), the settlement locked for a
//! merchant paid on Ethereum, and the one write that stores it all.

use crate::apply::{retry, Attempt};
use crate::view::InvoiceView;
use crate::{Answering, Decided, Engine};
use relay_core::invoice::{InvoiceInput, NewInvoice};
use relay_core::{CoreError, Event, Invoice, InvoiceId, Merchant, Method, Money};
use relay_store::{Commit, Store, StoreError};
use std::collections::BTreeMap;

/// Seconds an invoice is payable when the request does not say.
pub const DEFAULT_EXPIRY_SECS: i64 = 15 * 60;

/// What a merchant asks for: the API's request, parsed.
#[derive(Debug, Clone)]
pub struct InvoiceOrder {
    pub price: Money,
    pub order_id: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Seconds until the invoice expires.
    pub expires_in: i64,
    /// The methods named in the request, in its order; `None`: the merchant's methods.
    pub methods: Option<Vec<Method>>,
    /// `ETH` or a token code; `None`: the price's token, else ether.
    pub eth_asset: Option<String>,
    /// Where the checkout page sends the payer back once paid (already checked: http(s)).
    pub redirect_url: Option<String>,
    /// Derive the bitcoin address only when the payer chooses bitcoin on the checkout page (or
    /// through its public API), so that invoices nobody pays in bitcoin use no address.
    pub bitcoin_on_demand: bool,
}

/// Why an invoice was not created or changed. Nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvoiceError {
    /// The invoice's own rules refused it (amount, currency, rate, state).
    #[error(transparent)]
    Refused(#[from] CoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A method cannot be offered for this merchant. `index`: its place in the request's list,
    /// when the request named it; `None` when none of the merchant's methods is available.
    #[error("{reason}")]
    MethodUnavailable {
        index: Option<usize>,
        reason: &'static str,
    },
    /// The merchant's bitcoin descriptor gives no address.
    #[error("the merchant's bitcoin descriptor cannot give an address: {0}")]
    DescriptorUnusable(String),
    /// A merchant paid on Ethereum cannot have this invoice settled.
    #[error("{0}")]
    SettlementUnavailable(String),
    /// The merchant's payout address or the token cannot receive an escrow deposit.
    #[error("{0}")]
    PayoutUnusable(String),
    /// The amount does not fit the card gateway's integer.
    #[error("the amount is too large for the card gateway")]
    AmountTooLarge,
    /// The card gateway could not create the PaymentIntent; retrying may work.
    #[error("the card gateway could not be reached")]
    GatewayUnavailable,
    /// No such invoice (or another merchant's).
    #[error("no such invoice")]
    NotFound,
    /// The invoice kept changing under every attempt.
    #[error("the invoice keeps changing")]
    Busy,
}

/// A created invoice and the answer stored with it.
#[derive(Debug)]
pub struct Created {
    pub commit: Commit,
    pub invoice: Invoice,
    /// The invoice's JSON view, as answered (and stored under the idempotency key).
    pub body: String,
}

/// A new checkout page under `base`: 128 random bits, so the page of an invoice cannot be found
/// from anything but its URL (not from the invoice id, not by counting).
fn checkout_page(base: &str) -> relay_core::Checkout {
    let token = format!("cs_{}", hex::encode(rand::random::<[u8; 16]>()));
    relay_core::Checkout {
        url: format!("{}/pay/{token}", base.trim_end_matches('/')),
        token,
    }
}

impl<S: Store> Engine<S> {
    /// Creates an invoice for `merchant`: the rails it can be paid on, a quote for each, what each
    /// is paid to, all stored with its `invoice.created` event in one write (and the answer under
    /// the request's idempotency key, if any).
    pub async fn create_invoice(
        &self,
        merchant: &Merchant,
        order: InvoiceOrder,
        answering: Option<Answering<'_>>,
    ) -> Result<Created, InvoiceError> {
        let now = answering.map_or_else(|| self.clock.now(), |a| a.at);
        let bitcoin_on_demand = order.bitcoin_on_demand;
        let (mut invoice, kinds) = self.draft(merchant, order, now)?;
        self.attach_settlement(merchant, &mut invoice)?;
        self.attach_ethereum_deposit(merchant, &mut invoice)?;
        self.attach_card_intent(&mut invoice).await?;
        // An address is claimed in the same transaction as the invoice; should it already belong
        // to another invoice (never expected: indexes only grow), the next index is taken.
        let mut attempts = 0;
        let (commit, body) = loop {
            if !bitcoin_on_demand {
                self.attach_bitcoin_address(merchant, &mut invoice).await?;
            }
            let events = Event::for_invoice(&invoice, &kinds, now, || self.ids.event_id());
            let body = to_json(&InvoiceView::of(&invoice));
            let record = answering.map(|a| a.record(&body));
            match self.store.create_invoice(&invoice, &events, record).await {
                Err(StoreError::DuplicateReference {
                    reference: reference @ relay_core::Lookup::BtcScript(_),
                }) if attempts < 3 => {
                    tracing::warn!(target: "relay::btc", %reference, "address already used; taking the next index");
                    attempts += 1;
                }
                other => break (other?, body),
            }
        };
        if commit == Commit::Done {
            if let Some(rail) = &self.bitcoin {
                if invoice
                    .quote_for(Method::Bitcoin)
                    .is_some_and(|q| q.bitcoin.is_some())
                {
                    (rail.watch)(&invoice);
                }
            }
            metrics::counter!("relay_invoices_created_total").increment(1);
        }
        Ok(Created {
            commit,
            invoice,
            body,
        })
    }

    /// The invoice `order` asks for, quoted and checked, before anything is attached to it (no
    /// address, deposit or PaymentIntent yet) and before anything is stored.
    pub(crate) fn draft(
        &self,
        merchant: &Merchant,
        order: InvoiceOrder,
        now: relay_core::Timestamp,
    ) -> Result<(Invoice, Vec<relay_core::EventType>), InvoiceError> {
        let named = order.methods.clone();
        let mut params = NewInvoice {
            merchant_id: merchant.id.clone(),
            price: order.price,
            order_id: order.order_id,
            description: order.description,
            metadata: order.metadata,
            expires_at: now.plus_seconds(order.expires_in),
            methods: order.methods.unwrap_or_else(|| merchant.methods.clone()),
            tolerance_bps: merchant.payment_tolerance_bps,
            eth_asset: order.eth_asset,
        };
        self.offer_only_available(merchant, &mut params, named.as_deref().unwrap_or(&[]))?;
        let mut quotes = params.quote(&self.assets, self.rates.as_ref())?;
        if merchant.rate_spread_bps > 0 {
            relay_core::invoice::apply_spread(
                &mut quotes,
                &params.price,
                merchant.rate_spread_bps,
            )?;
        }
        // A conversion's quote holds for the merchant's quote lifetime, at most the invoice's.
        let quote_ends = now
            .plus_seconds(i64::from(merchant.quote_ttl_secs))
            .0
            .min(params.expires_at.0);
        for q in quotes
            .iter_mut()
            .filter(|q| q.due.asset != params.price.asset)
        {
            q.expires_at = Some(relay_core::Timestamp(quote_ends));
        }
        let (mut invoice, kinds) = Invoice::create(self.ids.invoice_id(), params, quotes, now)?;
        invoice.checkout = self.checkout_base.as_deref().map(checkout_page);
        invoice.redirect_url = order.redirect_url;
        Ok((invoice, kinds))
    }

    /// Quotes invoice `id` again at the current rates (with its merchant's spread), for a new
    /// quote lifetime, while nobody has paid anything (see [`Invoice::refresh_quotes`]).
    pub async fn refresh_quote(&self, id: &InvoiceId) -> Result<Invoice, InvoiceError> {
        let done = retry(|| async move {
            let mut invoice = self
                .store
                .invoice(id)
                .await?
                .ok_or(InvoiceError::NotFound)?;
            let merchant = self
                .store
                .merchant(&invoice.merchant_id)
                .await?
                .ok_or(InvoiceError::NotFound)?;
            let version = invoice.version;
            let now = self.clock.now();
            let price = invoice.price.asset.code.clone();
            invoice.refresh_quotes(
                |q| {
                    self.rates
                        .quote_rate(&q.due.asset.code, &price)
                        .map(|r| r.with_spread(q.rate.spread_bps))
                        .map_err(|e| match e {
                            relay_core::RateError::NoPair => CoreError::NoRate {
                                from: price.clone(),
                                to: q.due.asset.code.clone(),
                            },
                            relay_core::RateError::Unavailable(reason) => {
                                CoreError::RateUnavailable {
                                    from: price.clone(),
                                    to: q.due.asset.code.clone(),
                                    reason,
                                }
                            }
                        })
                },
                now.plus_seconds(i64::from(merchant.quote_ttl_secs)),
                now,
            )?;
            Ok::<_, InvoiceError>(
                match self
                    .store
                    .update_invoice(version, &invoice, &[], None)
                    .await?
                {
                    Commit::Conflict => Attempt::Conflict,
                    _ => Attempt::Done(invoice),
                },
            )
        })
        .await?;
        let invoice = done.ok_or(InvoiceError::Busy)?;
        self.store.durable().await?;
        Ok(invoice)
    }

    /// Cancels `merchant`'s unpaid invoice `id` (it becomes `invalid`), redone when a watcher
    /// changed it meanwhile. The caller closes its PaymentIntent ([`Engine::close_card_intent`])
    /// once the answer is durable.
    pub async fn cancel_invoice(
        &self,
        merchant: &Merchant,
        id: &str,
        answering: Option<Answering<'_>>,
    ) -> Result<Decided<Invoice>, InvoiceError> {
        let done = retry(|| async move {
            let mut invoice = self.owned_invoice(merchant, id).await?;
            let version = invoice.version;
            let now = self.clock.now();
            let transition = invoice.apply(InvoiceInput::Cancel, now)?;
            let events =
                Event::for_invoice(&invoice, &transition.events, now, || self.ids.event_id());
            let body = to_json(&InvoiceView::of(&invoice));
            let record = answering.map(|a| a.record(&body));
            let commit = self
                .store
                .update_invoice(version, &invoice, &events, record)
                .await?;
            Ok::<_, InvoiceError>(match commit {
                Commit::Conflict => Attempt::Conflict,
                commit => Attempt::Done(Decided {
                    commit,
                    body,
                    value: invoice,
                }),
            })
        })
        .await?;
        done.ok_or(InvoiceError::Busy)
    }

    /// `merchant`'s invoice `id`: another merchant's is answered exactly like a missing one.
    pub async fn owned_invoice(
        &self,
        merchant: &Merchant,
        id: &str,
    ) -> Result<Invoice, InvoiceError> {
        let found = match InvoiceId::parse(id) {
            Some(id) => self.store.invoice(&id).await?,
            None => None,
        };
        found
            .filter(|inv| inv.merchant_id == merchant.id)
            .ok_or(InvoiceError::NotFound)
    }

    /// Closes a canceled invoice's PaymentIntent at the gateway, so that nobody can be charged
    /// for it any more. If the payer was faster, the gateway refuses and its webhook (or
    /// reconciliation) records the payment as made after the cancel.
    pub async fn close_card_intent(&self, invoice: &Invoice) {
        let (Some(gateway), Some(intent)) = (self.card.as_ref(), invoice.payment_intent()) else {
            return;
        };
        match gateway.cancel_intent(intent).await {
            Ok(()) => {
                if let Err(e) = self.apply(&invoice.id, &InvoiceInput::IntentClosed).await {
                    tracing::warn!(target: "relay::card", invoice = %invoice.id, error = %e, "recording the closed intent failed");
                }
            }
            // The relay's card pass asks again (or reconciles a payment made meanwhile).
            Err(e) => {
                tracing::warn!(target: "relay::card", invoice = %invoice.id, %intent, error = %e.message, "the gateway did not cancel the canceled invoice's PaymentIntent")
            }
        }
    }

    /// Drops the rails that cannot take a payment for this merchant; naming one explicitly is an
    /// error.
    fn offer_only_available(
        &self,
        merchant: &Merchant,
        params: &mut NewInvoice,
        named: &[Method],
    ) -> Result<(), InvoiceError> {
        let unavailable = |m: Method| -> Option<&'static str> {
            match m {
                Method::Card if self.card.is_none() => {
                    Some("card payments need a card gateway, and none is configured")
                }
                Method::Bitcoin if self.bitcoin.is_none() => {
                    Some("bitcoin payments need a bitcoin node, and none is configured")
                }
                Method::Card | Method::Bitcoin
                    if merchant.settle_on_ethereum.is_some() && self.ethereum.is_none() =>
                {
                    Some("the merchant is paid on Ethereum, and no Ethereum node and escrow is configured")
                }
                Method::Bitcoin
                    if merchant.settle_on_ethereum.is_some()
                        && self
                            .bitcoin
                            .as_ref()
                            .is_some_and(|b| b.treasury_descriptor.is_none()) =>
                {
                    Some("bitcoin payments for a merchant paid on Ethereum go to the operator's treasury descriptor, and none is configured")
                }
                Method::Bitcoin
                    if merchant.settle_on_ethereum.is_none()
                        && merchant.btc_descriptor.is_none() =>
                {
                    Some("bitcoin payments need the merchant's receive descriptor, and none was given")
                }
                Method::Ethereum if self.ethereum.is_none() => {
                    Some("ethereum payments need an Ethereum node and escrow, and none is configured")
                }
                Method::Ethereum if merchant.eth_payout.is_none() => {
                    Some("ethereum payments need the merchant's payout address, and none was given")
                }
                _ => None,
            }
        };
        for (index, m) in named.iter().enumerate() {
            if let Some(reason) = unavailable(*m) {
                return Err(InvoiceError::MethodUnavailable {
                    index: Some(index),
                    reason,
                });
            }
        }
        let asked = params.methods.len();
        params.methods.retain(|m| unavailable(*m).is_none());
        // (An empty list is refused by the invoice's own validation.)
        if asked > 0 && params.methods.is_empty() {
            return Err(InvoiceError::MethodUnavailable {
                index: None,
                reason: "none of the merchant's payment methods is available",
            });
        }
        Ok(())
    }

    /// Gives the invoice the next unused address of the merchant's descriptor (of the operator's
    /// treasury descriptor, for a merchant paid on Ethereum).
    async fn attach_bitcoin_address(
        &self,
        merchant: &Merchant,
        invoice: &mut Invoice,
    ) -> Result<(), InvoiceError> {
        let Some(quote) = invoice
            .methods
            .iter_mut()
            .find(|q| q.method == Method::Bitcoin)
        else {
            return Ok(());
        };
        if let Some(pay_to) = self.next_bitcoin_address(merchant).await? {
            quote.bitcoin = Some(pay_to);
        }
        Ok(())
    }

    /// The next unused address of the merchant's descriptor (of the operator's treasury
    /// descriptor, for a merchant paid on Ethereum); `None` without a bitcoin rail or descriptor.
    pub(crate) async fn next_bitcoin_address(
        &self,
        merchant: &Merchant,
    ) -> Result<Option<relay_core::BitcoinPayTo>, InvoiceError> {
        // A merchant paid on Ethereum is paid from the relay's liquidity; the bitcoin goes to the
        // operator's treasury, or the merchant would be paid twice.
        let treasury = merchant.settle_on_ethereum.is_some();
        let descriptor = match (treasury, self.bitcoin.as_ref()) {
            (true, Some(rail)) => rail.treasury_descriptor.as_deref(),
            _ => merchant.btc_descriptor.as_deref(),
        };
        let (Some(rail), Some(descriptor)) = (self.bitcoin.as_ref(), descriptor) else {
            return Ok(None);
        };
        let owner = if treasury {
            relay_core::merchant::treasury_index_owner()
        } else {
            merchant.id.clone()
        };
        let index = self.store.next_derivation_index(&owner).await?;
        let derived = rail
            .addresses
            .derive(descriptor, index)
            .map_err(InvoiceError::DescriptorUnusable)?;
        Ok(Some(relay_core::BitcoinPayTo {
            address: derived.address,
            script_pubkey: derived.script_pubkey,
            derivation_index: index,
            // The operator's money pays for treasury payments: never on 0 confirmations.
            confirmations: if treasury {
                merchant.btc_confirmations.max(1)
            } else {
                merchant.btc_confirmations
            },
            treasury,
        }))
    }

    /// For a merchant paid on Ethereum: locks what the price is worth in the settlement asset.
    fn attach_settlement(
        &self,
        merchant: &Merchant,
        invoice: &mut Invoice,
    ) -> Result<(), InvoiceError> {
        let Some(code) = &merchant.settle_on_ethereum else {
            return Ok(());
        };
        if !invoice
            .methods
            .iter()
            .any(|q| matches!(q.method, Method::Card | Method::Bitcoin))
        {
            return Ok(());
        }
        let unusable = InvoiceError::SettlementUnavailable;
        let asset = self
            .assets
            .get(code)
            .map_err(|_| {
                unusable(format!(
                    "the merchant's settlement asset {code} is not configured"
                ))
            })?
            .clone();
        let token = match &asset.kind {
            relay_core::AssetKind::Erc20 { contract } => Some(contract.clone()),
            relay_core::AssetKind::Ether => None,
            _ => return Err(unusable(format!("{code} is not paid on Ethereum"))),
        };
        let rate = self
            .rates
            .rate(&asset.code, &invoice.price.asset.code)
            .ok_or_else(|| {
                unusable(format!(
                    "no rate from {} to {code}",
                    invoice.price.asset.code
                ))
            })?;
        let due = rate.quote_to_base(invoice.price.amount, &invoice.price.asset, &asset)?;
        let payout = merchant
            .eth_payout
            .clone()
            .ok_or_else(|| unusable("the merchant has no payout address".into()))?;
        let min_confirmations = self
            .ethereum
            .as_ref()
            .map_or(relay_core::payout::DEFAULT_SETTLEMENT_DEPTH, |rail| {
                rail.settlement_min_confirmations
            });
        invoice.settle_to = Some(relay_core::SettleTo {
            due: Money { asset, amount: due },
            rate,
            payout,
            token,
            min_confirmations,
        });
        Ok(())
    }

    /// Fixes the invoice's escrow deposit: the merchant's payout address, the asset, the amount,
    /// the escrow expiry (the invoice's plus the capture window), a fresh random salt, and the
    /// payment id the escrow will derive from them.
    fn attach_ethereum_deposit(
        &self,
        merchant: &Merchant,
        invoice: &mut Invoice,
    ) -> Result<(), InvoiceError> {
        use alloy_primitives::{Address, B256};
        let (Some(rail), Some(payout), Some(quote)) = (
            self.ethereum.as_ref(),
            merchant.eth_payout.as_deref(),
            invoice
                .methods
                .iter_mut()
                .find(|q| q.method == Method::Ethereum),
        ) else {
            return Ok(());
        };
        let unusable = InvoiceError::PayoutUnusable;
        let merchant_addr: Address = payout.parse().map_err(|_| {
            unusable(format!(
                "the merchant's payout address {payout} is not valid"
            ))
        })?;
        let token = match &quote.due.asset.kind {
            relay_core::AssetKind::Erc20 { contract } => Some(
                contract
                    .parse::<Address>()
                    .map_err(|_| unusable(format!("token contract {contract} is not valid")))?,
            ),
            _ => None,
        };
        let expiry = u64::try_from(invoice.expires_at.0)
            .unwrap_or(0)
            .saturating_add(rail.capture_window_secs);
        let salt = B256::from(rand::random::<[u8; 32]>());
        let id = relay_core::eth_payment_id(
            rail.chain_id,
            rail.escrow,
            merchant_addr,
            token.unwrap_or(Address::ZERO),
            quote.due.amount.0,
            expiry,
            salt,
        );
        quote.ethereum = Some(relay_core::EthereumPayTo {
            chain_id: rail.chain_id,
            escrow: rail.escrow,
            merchant: merchant_addr,
            token,
            expiry,
            salt,
            payment_id: id,
            confirmations: merchant.eth_confirmations,
        });
        Ok(())
    }

    /// Creates the invoice's PaymentIntent at the gateway (after every parameter was validated,
    /// so an invalid request never reaches it). A gateway failure fails the creation; nothing is
    /// stored.
    async fn attach_card_intent(&self, invoice: &mut Invoice) -> Result<(), InvoiceError> {
        let (Some(gateway), Some(quote)) = (
            self.card.as_ref(),
            invoice
                .methods
                .iter_mut()
                .find(|q| q.method == Method::Card),
        ) else {
            return Ok(());
        };
        let amount = u64::try_from(quote.due.amount.0).map_err(|_| InvoiceError::AmountTooLarge)?;
        let intent = gateway
            .create_intent(invoice.id.as_str(), amount, &quote.due.asset.code)
            .await
            .map_err(|e| {
                tracing::warn!(target: "relay::card", error = %e, "creating the PaymentIntent failed");
                InvoiceError::GatewayUnavailable
            })?;
        quote.card = Some(intent);
        Ok(())
    }
}

/// A view as JSON text (views always serialize).
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
