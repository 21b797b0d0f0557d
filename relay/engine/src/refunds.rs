//! Refunds. A refund is first **reserved** on the invoice (its amount counted against the payment
//! in the same optimistic-concurrency write as any other change, so concurrent requests can never
//! refund more than was paid), then carried out by its rail: the card gateway is asked at once;
//! the Ethereum operator voids or refunds the escrow deposit out of the merchant's refund reserve
//! (checked first, so an uncovered refund is refused before anything is reserved); a bitcoin
//! refund waits for the merchant's wallet to pay the payer's address, which the watcher sees.

use crate::apply::{retry, Attempt, MAX_ATTEMPTS};
use crate::gateway::GatewayError;
use crate::invoices::{to_json, InvoiceError};
use crate::view::RefundView;
use crate::{Answering, Decided, Engine};
use alloy_primitives::{Address, U256};
use relay_core::invoice::InvoiceInput;
use relay_core::{
    Amount, CoreError, Event, Invoice, Merchant, Method, Payment, PaymentRef, Refund,
    RefundAddress, RefundStatus,
};
use relay_store::{Commit, PayoutKind, Store, StoreError};
use sha2::{Digest, Sha256};

/// What a merchant asks to refund.
#[derive(Debug, Clone, Default)]
pub struct RefundOrder {
    /// In major units of the payment's asset; `None`: all that is left of the payment.
    pub amount: Option<String>,
    /// The payment's reference; `None`: the invoice's first final payment with something left.
    pub payment: Option<String>,
    /// Bitcoin payments: the payer's address the merchant's wallet refunds to.
    pub bitcoin_address: Option<String>,
}

/// Why a refund was not reserved, carried out or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefundError {
    /// The invoice's own rules refused it (nothing left, more than is left, a bad amount).
    #[error(transparent)]
    Refused(#[from] CoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such invoice (or another merchant's).
    #[error("no such invoice")]
    InvoiceNotFound,
    /// No such refund on the invoice.
    #[error("no such refund")]
    RefundNotFound,
    /// The invoice has no payment with the named reference.
    #[error("the invoice has no payment {0:?}")]
    PaymentUnknown(String),
    /// The invoice has no final payment left to refund.
    #[error("the invoice has no final payment left to refund")]
    NothingToRefund,
    /// The payment's rail is not configured on this relay.
    #[error("{0}")]
    RailUnavailable(&'static str),
    /// The payer's bitcoin address cannot be refunded to.
    #[error("{0}")]
    AddressInvalid(String),
    /// A bitcoin address was given for a refund of another rail's payment.
    #[error("bitcoin_address is only for refunds of bitcoin payments")]
    AddressNotForBitcoin,
    /// An escrow refund the merchant's refund reserve does not cover.
    #[error("a refund after capture is paid from the merchant's refund reserve in the escrow, which holds {reserve} base units ({promised} promised to pending refunds); fund it with fundRefunds({payout:#x}, {token:#x}, amount) and retry")]
    NotCovered {
        reserve: U256,
        promised: U256,
        payout: Address,
        token: Address,
    },
    /// The Ethereum node could not be asked for the refund reserve.
    #[error("the Ethereum node could not be asked for the merchant's refund reserve; retry")]
    NodeUnavailable,
    /// The card gateway could not be reached: the refund stays reserved, and a retry with the same
    /// idempotency key asks again under the same refund id (refunded once).
    #[error("the card gateway could not be reached; the refund is reserved: retry with the same Idempotency-Key")]
    GatewayUnavailable,
    /// The card gateway refused the refund; it is marked failed.
    #[error("the card gateway did not take the refund ({0}); it is marked failed")]
    GatewayRefused(String),
    /// The refund is not in a state this change applies to (`code` names the change).
    #[error("{message}")]
    WrongState {
        code: &'static str,
        message: &'static str,
    },
    /// The invoice kept changing under every attempt.
    #[error("the invoice keeps changing")]
    Busy,
    /// What was just stored cannot be found again (a bug, or a store that lost a write).
    #[error("the refund was not found after it was stored")]
    Lost,
}

impl From<InvoiceError> for RefundError {
    fn from(e: InvoiceError) -> RefundError {
        match e {
            InvoiceError::NotFound => RefundError::InvoiceNotFound,
            InvoiceError::Store(e) => RefundError::Store(e),
            InvoiceError::Refused(e) => RefundError::Refused(e),
            InvoiceError::Busy => RefundError::Busy,
            _ => RefundError::Lost,
        }
    }
}

/// The refund id: derived from the request's idempotency key when there is one, so a retry after
/// a crash finds the refund it reserved instead of reserving a second one.
fn refund_id(merchant: &Merchant, key: Option<&str>, fresh: [u8; 12]) -> String {
    match key {
        Some(k) => {
            let mut h = Sha256::new();
            h.update(merchant.id.as_str().as_bytes());
            h.update([0]);
            h.update(k.as_bytes());
            format!("re_{}", hex::encode(&h.finalize()[..12]))
        }
        None => format!("re_{}", hex::encode(fresh)),
    }
}

/// The payment a request refunds: the named one, or the first final one with something left.
fn target(invoice: &Invoice, named: Option<&str>) -> Result<Payment, RefundError> {
    let found = match named {
        // A name that is no payment reference at all names no payment of the invoice either.
        Some(r) => r
            .parse::<PaymentRef>()
            .ok()
            .and_then(|r| invoice.payments.iter().find(|p| p.reference == r)),
        None => invoice.default_refund_payment(),
    };
    match (found, named) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(r)) => Err(RefundError::PaymentUnknown(r.to_owned())),
        (None, None) => Err(RefundError::NothingToRefund),
    }
}

/// Whether refunding `amount` of an escrow payment draws on the merchant's refund reserve: every
/// refund except one of a whole deposit not captured yet (that one is a void: the payer's own
/// deposit goes back).
fn needs_reserve(payment: &Payment, amount: Amount) -> bool {
    payment.capture_tx.is_some() || amount < payment.amount
}

impl<S: Store> Engine<S> {
    /// Reserves a refund of `merchant`'s invoice `id` and hands it to its rail, then stores the
    /// refund's view as the answer under the request's idempotency key. A retried request (the
    /// same key) finds the refund it reserved and asks its rail again only if the rail has not
    /// taken it.
    pub async fn request_refund(
        &self,
        merchant: &Merchant,
        id: &str,
        order: &RefundOrder,
        answering: Option<Answering<'_>>,
    ) -> Result<Decided<Refund>, RefundError> {
        let refund_id = refund_id(merchant, answering.map(|a| a.key), self.ids.next());
        // 1. Reserve the refund on the invoice (redone on a concurrent change).
        let mut reserved = None;
        // The retry loop by hand: checking the escrow reserve waits on the chain.
        for _ in 0..MAX_ATTEMPTS {
            let mut invoice = self.owned_invoice(merchant, id).await?;
            if invoice.refunds.iter().any(|r| r.id == refund_id) {
                reserved = Some(invoice);
                break;
            }
            let payment = target(&invoice, order.payment.as_deref())?;
            let asset = invoice
                .quote_for(payment.method)
                .map(|q| q.due.asset.clone())
                .ok_or(RefundError::Lost)?;
            let amount = order
                .amount
                .as_deref()
                .map(|a| Amount::parse_decimal(a, &asset))
                .transpose()?;
            let to = match (&order.bitcoin_address, payment.method) {
                (Some(address), Method::Bitcoin) => Some(self.refund_address(address).await?),
                (Some(_), _) => return Err(RefundError::AddressNotForBitcoin),
                (None, _) => None,
            };
            if payment.method == Method::Ethereum {
                let left = invoice.refundable(&payment.reference);
                let wanted = amount.unwrap_or(left);
                // More than is left is refused by the invoice for that reason, whatever the
                // reserve.
                if wanted <= left && needs_reserve(&payment, wanted) {
                    self.check_reserve(&invoice, &refund_id, wanted).await?;
                }
            }
            let version = invoice.version;
            let now = self.clock.now();
            let transition = invoice.apply(
                InvoiceInput::RequestRefund {
                    id: refund_id.clone(),
                    payment: Some(payment.reference.clone()),
                    amount,
                    to,
                },
                now,
            )?;
            let events =
                Event::for_invoice(&invoice, &transition.events, now, || self.ids.event_id());
            match self
                .store
                .update_invoice(version, &invoice, &events, None)
                .await?
            {
                Commit::Conflict => continue,
                _ => {
                    reserved = Some(invoice);
                    break;
                }
            }
        }
        let invoice = reserved.ok_or(RefundError::Busy)?;
        self.store.durable().await?;
        let refund = invoice
            .refunds
            .iter()
            .find(|r| r.id == refund_id)
            .cloned()
            .ok_or(RefundError::Lost)?;
        // 2. Hand it to its rail.
        let handed = if refund.status == RefundStatus::Pending {
            self.hand_to_rail(&invoice, &refund).await
        } else {
            Ok(())
        };
        if !matches!(handed, Err(RefundError::GatewayUnavailable)) {
            metrics::counter!("relay_refunds_requested_total", "method" => refund.method.as_str())
                .increment(1);
        }
        handed?;
        // 3. The refund as it now stands is the answer, stored under the key.
        let refund_id = &refund_id;
        let done = retry(|| async move {
            let invoice = self.owned_invoice(merchant, id).await?;
            let r = invoice
                .refunds
                .iter()
                .find(|r| &r.id == refund_id)
                .ok_or(RefundError::Lost)?;
            let body = to_json(&RefundView::of(&invoice, r));
            let record = answering.map(|a| a.record(&body));
            let commit = self
                .store
                .update_invoice(invoice.version, &invoice, &[], record)
                .await?;
            Ok::<_, RefundError>(match commit {
                Commit::Conflict => Attempt::Conflict,
                commit => Attempt::Done(Decided {
                    commit,
                    body,
                    value: r.clone(),
                }),
            })
        })
        .await?;
        done.ok_or(RefundError::Busy)
    }

    /// Gives a reserved, pending refund to its rail: the card gateway now (its answer stored);
    /// the bitcoin watcher (to see the merchant's wallet pay it); nothing for an escrow refund
    /// (the operator's loop finds it in the store's payout work).
    async fn hand_to_rail(&self, invoice: &Invoice, refund: &Refund) -> Result<(), RefundError> {
        match refund.method {
            // Taken by the gateway already (a retry of this request): not asked again.
            Method::Card if refund.gateway_refund.is_some() => Ok(()),
            Method::Card => match self.card_refund(invoice, refund).await {
                Ok(gateway_refund) => {
                    let input = InvoiceInput::RefundSubmitted {
                        id: refund.id.clone(),
                        gateway_refund,
                    };
                    self.apply_durably(invoice, input).await
                }
                Err(e) if e.refused => {
                    tracing::warn!(target: "relay::card", refund = %refund.id, error = %e.message, "the gateway refused the refund");
                    let input = InvoiceInput::RefundFailed {
                        id: refund.id.clone(),
                        reason: format!("the card gateway refused it: {}", e.message),
                    };
                    self.apply_durably(invoice, input).await?;
                    Err(RefundError::GatewayRefused(e.message))
                }
                Err(e) => {
                    // The gateway may have taken it: the refund stays reserved.
                    tracing::warn!(target: "relay::card", refund = %refund.id, error = %e.message, "the gateway could not be reached for a refund");
                    Err(RefundError::GatewayUnavailable)
                }
            },
            Method::Bitcoin => {
                if let Some(rail) = &self.bitcoin {
                    (rail.watch_refund)(&invoice.id, refund);
                }
                Ok(())
            }
            Method::Ethereum => Ok(()),
        }
    }

    async fn apply_durably(
        &self,
        invoice: &Invoice,
        input: InvoiceInput,
    ) -> Result<(), RefundError> {
        self.apply(&invoice.id, &input).await.map_err(|e| match e {
            crate::apply::ApplyError::Store(e) => RefundError::Store(e),
            crate::apply::ApplyError::Refused(e) => RefundError::Refused(e),
            crate::apply::ApplyError::Busy(_) => RefundError::Busy,
        })?;
        Ok(self.store.durable().await?)
    }

    /// The payer's address as a refund destination: a valid address of the node's network that
    /// does not receive payments for an invoice (such an address is watched for its invoice).
    async fn refund_address(&self, address: &str) -> Result<RefundAddress, RefundError> {
        let rail = self.bitcoin.as_ref().ok_or(RefundError::RailUnavailable(
            "no bitcoin node is configured",
        ))?;
        let script = rail
            .addresses
            .script_of(address)
            .map_err(RefundError::AddressInvalid)?;
        if self
            .store
            .invoice_by_lookup(&relay_core::Lookup::BtcScript(script.clone()))
            .await?
            .is_some()
        {
            return Err(RefundError::AddressInvalid(
                "this address receives payments for an invoice; refund to the payer's own address"
                    .into(),
            ));
        }
        Ok(RefundAddress {
            address: address.to_owned(),
            script_pubkey: script,
        })
    }

    async fn card_refund(
        &self,
        invoice: &Invoice,
        refund: &Refund,
    ) -> Result<String, GatewayError> {
        let refused = |m: &str| GatewayError {
            message: m.to_owned(),
            refused: true,
        };
        let gateway = self
            .card
            .as_ref()
            .ok_or_else(|| refused("no card gateway is configured"))?;
        let intent = invoice
            .payment_intent()
            .ok_or_else(|| refused("the invoice has no PaymentIntent"))?;
        let amount = u64::try_from(refund.amount.0).map_err(|_| refused("amount too large"))?;
        gateway.refund(intent, amount, &refund.id).await
    }

    /// Refuses a refund the merchant's refund reserve in the escrow does not cover, counting the
    /// merchant's other refunds pending on it. The escrow refuses an uncovered refund anyway; this
    /// answers the merchant before anything is reserved.
    async fn check_reserve(
        &self,
        invoice: &Invoice,
        refund_id: &str,
        amount: Amount,
    ) -> Result<(), RefundError> {
        let terms = invoice
            .quote_for(Method::Ethereum)
            .and_then(|q| q.ethereum.as_ref())
            .ok_or(RefundError::Lost)?;
        let (payout, token) = (terms.merchant, terms.token.unwrap_or(Address::ZERO));
        let reserve = self.refund_reserve(payout, token).await?;
        let promised = self.pending_on_reserve(payout, token, refund_id).await?;
        if reserve.saturating_sub(promised) < amount.0 {
            return Err(RefundError::NotCovered {
                reserve,
                promised,
                payout,
                token,
            });
        }
        Ok(())
    }

    /// The refund reserve of `payout` in `token` (`Address::ZERO`: ether) as the escrow holds it.
    pub async fn refund_reserve(
        &self,
        payout: Address,
        token: Address,
    ) -> Result<U256, RefundError> {
        let rail = self.ethereum.as_ref().ok_or(RefundError::RailUnavailable(
            "the Ethereum rail is not configured",
        ))?;
        rail.reserves.reserve(payout, token).await.map_err(|e| {
            tracing::warn!(target: "relay::eth", error = %e, "reading the refund reserve");
            RefundError::NodeUnavailable
        })
    }

    /// What pending escrow refunds of the payout address `payout` in `token` will take from its
    /// reserve (all but `except`).
    pub async fn pending_on_reserve(
        &self,
        payout: Address,
        token: Address,
        except: &str,
    ) -> Result<U256, StoreError> {
        let mut sum = U256::ZERO;
        for w in self.store.payouts(PayoutKind::EthRefund).await? {
            if w.record == except {
                continue;
            }
            let Some(inv) = self.store.invoice(&w.invoice).await? else {
                continue;
            };
            let Some(terms) = inv
                .quote_for(Method::Ethereum)
                .and_then(|q| q.ethereum.as_ref())
            else {
                continue;
            };
            if terms.merchant != payout || terms.token.unwrap_or(Address::ZERO) != token {
                continue;
            }
            for r in inv
                .refunds
                .iter()
                .filter(|r| r.id == w.record && r.status == RefundStatus::Pending)
            {
                let Some(p) = inv.payments.iter().find(|p| p.reference == r.payment) else {
                    continue;
                };
                if needs_reserve(p, r.amount) {
                    sum = sum.saturating_add(r.amount.0);
                }
            }
        }
        Ok(sum)
    }

    /// Cancels a pending bitcoin refund the merchant will not pay after all: it becomes `failed`
    /// and its amount is refundable again. Card and escrow refunds are in the gateway's and the
    /// operator's hands once requested, so they cannot be canceled.
    pub async fn cancel_refund(
        &self,
        merchant: &Merchant,
        id: &str,
        refund: &str,
    ) -> Result<(Invoice, Refund), RefundError> {
        let input = InvoiceInput::RefundFailed {
            id: refund.to_owned(),
            reason: "canceled by the merchant".into(),
        };
        let refused = RefundError::WrongState {
            code: "refund_not_cancelable",
            message:
                "only a pending bitcoin refund (paid by the merchant's own wallet) can be canceled",
        };
        self.change_bitcoin_refund(merchant, (id, refund), refused, input)
            .await
    }

    /// Names `txid` as the transaction that paid a pending bitcoin refund (when several merchants
    /// owe the same address, an output cannot tell whose wallet paid it).
    pub async fn claim_refund_paid(
        &self,
        merchant: &Merchant,
        id: &str,
        refund: &str,
        txid: String,
    ) -> Result<(Invoice, Refund), RefundError> {
        let input = InvoiceInput::RefundClaimed {
            id: refund.to_owned(),
            tx: txid,
        };
        let refused = RefundError::WrongState {
            code: "refund_not_claimable",
            message: "only a pending bitcoin refund can be named paid",
        };
        self.change_bitcoin_refund(merchant, (id, refund), refused, input)
            .await
    }

    /// Applies `input` to a pending bitcoin refund of the merchant's invoice (refused with
    /// `refused` otherwise) and returns the refund as stored.
    async fn change_bitcoin_refund(
        &self,
        merchant: &Merchant,
        (id, refund): (&str, &str),
        refused: RefundError,
        input: InvoiceInput,
    ) -> Result<(Invoice, Refund), RefundError> {
        let find = |invoice: &Invoice| invoice.refunds.iter().find(|r| r.id == refund).cloned();
        let invoice = self.owned_invoice(merchant, id).await?;
        let r = find(&invoice).ok_or(RefundError::RefundNotFound)?;
        if r.method != Method::Bitcoin || r.status != RefundStatus::Pending {
            return Err(refused);
        }
        self.apply_durably(&invoice, input).await?;
        let invoice = self.owned_invoice(merchant, id).await?;
        let r = find(&invoice).ok_or(RefundError::Lost)?;
        Ok((invoice, r))
    }
}
