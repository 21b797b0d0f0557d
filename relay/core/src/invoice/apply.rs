//! The state machine: what one input does to an invoice (the rules are in the module above),
//! and how a payment is first recorded.

use super::*;

impl Invoice {
    /// Applies one input at time `now`, returning what changed.
    pub fn apply(&mut self, input: InvoiceInput, now: Timestamp) -> Result<Transition, CoreError> {
        if let Some(reference) = input.payment_reference() {
            let known = self.payments.iter().any(|p| p.reference == *reference);
            let live = self.payments.iter().filter(|p| p.status.is_live()).count();
            let full = live >= MAX_PAYMENTS || self.payments.len() >= MAX_PAYMENT_RECORDS;
            if !known && full && !self.is_own_deposit(reference) {
                // Flagged once; the payment itself is not recorded (no event, no credit).
                let changed = !self.payments_capped;
                if changed {
                    self.payments_capped = true;
                    self.version += 1;
                }
                return Ok(Transition {
                    changed,
                    events: Vec::new(),
                });
            }
        }
        let mut events = Vec::new();
        let mut changed = false;
        match input {
            InvoiceInput::Observe {
                reference,
                method,
                asset,
                amount,
                confirmed,
                confirmations,
                seen_at,
            } => {
                let seen_at = seen_at.map_or(now, |t| t.min(now));
                let status = if confirmed {
                    PaymentStatus::Confirmed
                } else {
                    PaymentStatus::Pending
                };
                let (p, new) = self.payment_entry(
                    reference.clone(),
                    method,
                    &asset,
                    amount,
                    status,
                    seen_at,
                    &mut events,
                )?;
                // A dispute outranks a (late or repeated) confirmation of the same payment.
                let keep = p.status == PaymentStatus::Disputed && confirmed;
                if !new && p.status != status && !keep {
                    p.status = status;
                    events.push(status.event());
                }
                if p.confirmations != confirmations {
                    p.confirmations = confirmations;
                    changed = true;
                }
                changed |= !events.is_empty();
                if method == Method::Card && new {
                    changed |= self.take_card_assessment(&reference, now, &mut events)?;
                }
            }
            InvoiceInput::Drop { reference, status } => {
                if matches!(status, PaymentStatus::Pending | PaymentStatus::Confirmed) {
                    return Err(invalid("status", "a dropped payment cannot be live"));
                }
                let p = self
                    .payments
                    .iter_mut()
                    .find(|p| p.reference == reference)
                    .ok_or_else(|| CoreError::UnknownPayment {
                        reference: reference.to_string(),
                    })?;
                if p.status != status {
                    p.status = status;
                    p.confirmations = 0;
                    events.push(status.event());
                    changed = true;
                }
            }
            InvoiceInput::Fail {
                reference,
                method,
                asset,
                amount,
            } => {
                let (p, _) = self.payment_entry(
                    reference,
                    method,
                    &asset,
                    amount,
                    PaymentStatus::Failed,
                    now,
                    &mut events,
                )?;
                if p.status == PaymentStatus::Pending {
                    p.status = PaymentStatus::Failed;
                    events.push(EventType::PaymentFailed);
                }
                changed = !events.is_empty();
            }
            InvoiceInput::Dispute {
                reference,
                method,
                asset,
                amount,
            } => {
                let (p, _) = self.payment_entry(
                    reference,
                    method,
                    &asset,
                    amount,
                    PaymentStatus::Confirmed,
                    now,
                    &mut events,
                )?;
                if p.status != PaymentStatus::Disputed {
                    p.status = PaymentStatus::Disputed;
                    p.confirmations = p.confirmations.max(1);
                    events.push(EventType::PaymentDisputed);
                }
                changed = !events.is_empty();
            }
            InvoiceInput::Refund {
                reference,
                method,
                asset,
                amount,
                total_refunded,
            } => {
                let (p, _) = self.payment_entry(
                    reference.clone(),
                    method,
                    &asset,
                    amount,
                    PaymentStatus::Confirmed,
                    now,
                    &mut events,
                )?;
                if !p.status.is_final() && p.status != PaymentStatus::Reverted {
                    // A refund proves the charge went through.
                    p.status = PaymentStatus::Confirmed;
                    p.confirmations = p.confirmations.max(1);
                    events.push(EventType::PaymentConfirmed);
                }
                let total = total_refunded.min(p.amount);
                if total > p.refunded {
                    p.refunded = total;
                    let before = events.len();
                    self.gateway_refunded(&reference, &mut events);
                    // A refund made at the gateway itself, not through the relay.
                    if events.len() == before {
                        events.push(EventType::RefundSucceeded);
                    }
                }
                changed = !events.is_empty();
            }
            InvoiceInput::Return {
                reference,
                method,
                asset,
                amount,
                seen_at,
                status,
            } => {
                if !status.is_returned() {
                    return Err(invalid(
                        "status",
                        "a returned payment is voided or reclaimed",
                    ));
                }
                let seen_at = seen_at.map_or(now, |t| t.min(now));
                let (p, new) = self.payment_entry(
                    reference.clone(),
                    method,
                    &asset,
                    amount,
                    status,
                    seen_at,
                    &mut events,
                )?;
                if !new && p.status != status {
                    p.status = status;
                    events.push(status.event());
                }
                // Voided or reclaimed, the payer has the deposit back: its refunds are done.
                self.returned(&reference, &mut events);
                changed = !events.is_empty();
            }
            InvoiceInput::Captured { reference, tx, fee } => {
                let p = self
                    .payments
                    .iter_mut()
                    .find(|p| p.reference == reference)
                    .ok_or_else(|| CoreError::UnknownPayment {
                        reference: reference.to_string(),
                    })?;
                if p.capture_tx.is_none() {
                    p.capture_tx = Some(tx);
                    p.fee = fee.min(p.amount);
                    events.push(EventType::PaymentCaptured);
                    changed = true;
                }
            }
            InvoiceInput::RequestRefund {
                id,
                payment,
                amount,
                to,
            } => {
                self.request_refund(id, payment, amount, to, now, &mut events)?;
                changed = !events.is_empty();
            }
            InvoiceInput::RefundPaid {
                id,
                tx,
                gateway_refund,
            } => {
                self.refund_paid(&id, tx, gateway_refund, &mut events)?;
                changed = !events.is_empty();
            }
            InvoiceInput::BitcoinRefundPaid { id, txid, vout } => {
                self.refund_paid(&id, Some(txid), None, &mut events)?;
                if let Some(r) = self.refunds.iter_mut().find(|r| r.id == id) {
                    changed |= r.vout != Some(vout);
                    r.vout = Some(vout);
                }
                changed |= !events.is_empty();
            }
            InvoiceInput::RefundSubmitted { id, gateway_refund } => {
                if let Some(r) = self.refunds.iter_mut().find(|r| r.id == id) {
                    if r.gateway_refund.as_deref() != Some(gateway_refund.as_str()) {
                        r.gateway_refund = Some(gateway_refund);
                        changed = true;
                    }
                }
            }
            InvoiceInput::RefundFailed { id, reason } => {
                self.refund_failed(&id, reason, &mut events)?;
                changed = !events.is_empty();
            }
            InvoiceInput::ReleaseSettlement { id, amount } => {
                self.release_settlement(&id, amount, &mut events)?;
                changed = !events.is_empty();
            }
            InvoiceInput::RefundClaimed { id, tx } => {
                changed = self.refund_claimed(&id, tx)?;
            }
            InvoiceInput::RefundReverted { id, tx } => {
                self.refund_reverted(&id, &tx, &mut events)?;
                changed = !events.is_empty();
            }
            InvoiceInput::SettlementQueued { id } => {
                self.settlement_queued(&id, &mut events)?;
                changed = !events.is_empty();
            }
            InvoiceInput::SettlementPaid { id, tx } => {
                self.settlement_paid(&id, tx, &mut events)?;
                changed = !events.is_empty();
            }
            InvoiceInput::IntentClosed => {
                changed = !self.intent_closed;
                self.intent_closed = true;
            }
            InvoiceInput::Reprice { reference, rate } => {
                let price_code = self.price.asset.code.clone();
                let p = self
                    .payments
                    .iter()
                    .find(|p| p.reference == reference)
                    .ok_or_else(|| CoreError::UnknownPayment {
                        reference: reference.to_string(),
                    })?;
                let asset = self
                    .quote_for(p.method)
                    .map(|q| q.due.asset.code.clone())
                    .unwrap_or_default();
                if !self.priced_on_arrival(p) {
                    return Err(CoreError::InvalidField {
                        field: "rate",
                        reason: "the payment came before its quote expired".into(),
                    });
                }
                if rate.base != asset
                    || rate.quote != price_code
                    || rate.price <= rust_decimal::Decimal::ZERO
                {
                    return Err(CoreError::InvalidField {
                        field: "rate",
                        reason: format!("expected a positive {asset}/{price_code} rate"),
                    });
                }
                // The first rate of its arrival stays: a later look does not re-price it again.
                if p.rate.is_none() {
                    if let Some(p) = self.payments.iter_mut().find(|p| p.reference == reference) {
                        p.rate = Some(rate);
                        changed = true;
                    }
                }
            }
            InvoiceInput::Assess {
                reference,
                assessment,
                deadline,
            } => {
                changed = self.assess(&reference, assessment, deadline, now, &mut events)?;
            }
            InvoiceInput::CardAssessed { assessment } => {
                changed = self.card_assessment != assessment;
                self.card_assessment = assessment;
            }
            InvoiceInput::CloseReview { id, approve } => {
                changed = self.close_review(&id, approve, now, &mut events)?;
            }
            InvoiceInput::Tick => {}
            InvoiceInput::Cancel => {
                let has_live = self.payments.iter().any(|p| p.status.is_live());
                if self.status != InvoiceStatus::New || has_live {
                    return Err(CoreError::NotCancelable {
                        status: self.status,
                    });
                }
                self.canceled_at = Some(now);
                changed = true;
            }
        }
        let (status, exception) = self.evaluate(now);
        if status != self.status {
            self.status = status;
            events.extend(status.event());
            changed = true;
        }
        if exception != self.exception {
            self.exception = exception;
            changed = true;
        }
        let before = events.len();
        self.plan_settlements(now, &mut events);
        self.hold_settlements(&mut events);
        changed |= events.len() > before;
        if changed {
            self.version += 1;
        }
        Ok(Transition { changed, events })
    }

    /// The payment with `reference`, checked against the method's asset and the amount seen before;
    /// if it is new, it is recorded with `initial` status and its events (a payment first seen
    /// final is announced as pending, then confirmed). Returns whether it was new.
    #[allow(clippy::too_many_arguments)]
    fn payment_entry(
        &mut self,
        reference: PaymentRef,
        method: Method,
        asset: &str,
        amount: Amount,
        initial: PaymentStatus,
        now: Timestamp,
        events: &mut Vec<EventType>,
    ) -> Result<(&mut Payment, bool), CoreError> {
        let quote = self
            .quote_for(method)
            .ok_or_else(|| CoreError::MethodNotOffered {
                method: method.to_string(),
            })?;
        if quote.due.asset.code != asset {
            return Err(CoreError::WrongPaymentAsset {
                reference: reference.to_string(),
                method: method.to_string(),
                asset: asset.to_owned(),
                expected: quote.due.asset.code.clone(),
            });
        }
        match self.payments.iter().position(|p| p.reference == reference) {
            Some(i) => {
                let p = &mut self.payments[i];
                if p.amount != amount || p.method != method {
                    return Err(invalid(
                        "payment",
                        format!("{reference} was observed before with another amount"),
                    ));
                }
                Ok((p, false))
            }
            None => {
                match initial {
                    PaymentStatus::Failed => events.push(EventType::PaymentFailed),
                    PaymentStatus::Pending => events.push(EventType::PaymentPending),
                    PaymentStatus::Voided | PaymentStatus::Reclaimed => {
                        events.push(initial.event())
                    }
                    _ => {
                        events.push(EventType::PaymentPending);
                        events.push(EventType::PaymentConfirmed);
                    }
                }
                self.payments.push(Payment {
                    reference,
                    method,
                    amount,
                    status: initial,
                    confirmations: u32::from(initial.is_final()),
                    seen_at: now,
                    refunded: Amount::ZERO,
                    capture_tx: None,
                    fee: Amount::ZERO,
                    rate: None,
                    risk: None,
                    review: None,
                });
                let last = self.payments.len() - 1;
                Ok((&mut self.payments[last], true))
            }
        }
    }
}
