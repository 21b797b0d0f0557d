//! What an invoice's payments are worth, and the status that follows: which payments count (in
//! time), at which rate each is valued (its quote's, or the rate of its arrival once the quote
//! expired), what is still due on each rail, fresh quotes, and [`Invoice::evaluate`].

use super::*;

impl Invoice {
    /// When a payment counts: first seen before the invoice stopped being payable.
    pub(crate) fn in_time(&self, p: &Payment) -> bool {
        let deadline = match self.canceled_at {
            Some(c) => c.min(self.expires_at),
            None => self.expires_at,
        };
        p.seen_at < deadline
    }

    /// What `amount` of `method`'s asset is worth in the price's minor units, at the method's locked
    /// rate, rounded down. Payments are summed per method before converting, so that several
    /// payments adding up to the quoted amount are worth exactly the price.
    pub fn credit(&self, method: Method, amount: Amount) -> U256 {
        let Some(q) = self.quote_for(method) else {
            return U256::ZERO;
        };
        if q.due.amount.is_zero() {
            return U256::ZERO;
        }
        // amount * price / due, saturating: a payment so large it overflows is "more than enough".
        match amount.0.checked_mul(self.price.amount.0) {
            Some(n) => n / q.due.amount.0,
            None => U256::MAX,
        }
    }

    /// Quotes again every conversion of an invoice nobody has paid anything yet: `rate_of` gives
    /// each method's current rate (already with the merchant's spread), and the new quotes hold
    /// until `quote_ends` (at most the invoice's expiry). Refused once anything is paid (what was
    /// paid stays worth what its quote said) or the invoice can no longer be paid.
    pub fn refresh_quotes(
        &mut self,
        mut rate_of: impl FnMut(&MethodQuote) -> Result<Rate, CoreError>,
        quote_ends: Timestamp,
        now: Timestamp,
    ) -> Result<(), CoreError> {
        if self.evaluate(now).0 != InvoiceStatus::New || self.canceled_at.is_some() {
            return Err(CoreError::InvalidField {
                field: "quote",
                reason: "the invoice takes no new payment".into(),
            });
        }
        if self.payments.iter().any(|p| p.status.is_live()) {
            return Err(CoreError::InvalidField {
                field: "quote",
                reason: "a payment is underway: its quote stands".into(),
            });
        }
        // Its settlement on Ethereum was priced with the first quotes: a fresh quote would have
        // later payments settled at that older rate.
        if self.settle_to.is_some() {
            return Err(CoreError::InvalidField {
                field: "quote",
                reason: "an invoice settled on Ethereum keeps its first quotes (a payment after \
                         they expire is priced at its arrival, and its settlement held)"
                    .into(),
            });
        }
        let ends = Timestamp(quote_ends.0.min(self.expires_at.0));
        let mut fresh = Vec::new();
        for q in self
            .methods
            .iter()
            .filter(|q| q.due.asset != self.price.asset)
        {
            let rate = rate_of(q)?;
            let due = rate.quote_to_base(self.price.amount, &self.price.asset, &q.due.asset)?;
            fresh.push((q.method, rate, due));
        }
        for (method, rate, due) in fresh {
            if let Some(q) = self.methods.iter_mut().find(|q| q.method == method) {
                q.rate = rate;
                q.due.amount = due;
                q.expires_at = Some(ends);
            }
        }
        self.version += 1;
        Ok(())
    }

    /// When `method`'s locked rate stops holding: its quote's expiry, else the invoice's.
    pub fn quote_expires_at(&self, method: Method) -> Timestamp {
        self.quote_for(method)
            .and_then(|q| q.expires_at)
            .map_or(self.expires_at, |t| Timestamp(t.0.min(self.expires_at.0)))
    }

    /// Whether `p` arrived after its method's quote expired, so that it is worth what its own
    /// rate of arrival says rather than the locked rate (a method paid in the price's own asset
    /// has no rate to expire).
    pub fn priced_on_arrival(&self, p: &Payment) -> bool {
        self.quote_for(p.method)
            .is_some_and(|q| q.expires_at.is_some() && q.due.asset != self.price.asset)
            && p.seen_at >= self.quote_expires_at(p.method)
    }

    /// Payments that arrived after their quote expired and have no rate yet: the relay prices
    /// them at the current rate as soon as it has one.
    pub fn awaiting_rate(&self) -> impl Iterator<Item = &Payment> {
        self.payments
            .iter()
            .filter(|p| p.rate.is_none() && p.status.is_live() && self.priced_on_arrival(p))
    }

    /// What `payments` of `method` are worth in the price's minor units: those that came while
    /// the quote held at its locked rate (summed first, see [`Invoice::credit`]), each later one
    /// at its own rate of arrival, rounded down (nothing while it awaits one).
    pub fn worth<'a>(
        &self,
        method: Method,
        payments: impl IntoIterator<Item = &'a Payment>,
    ) -> U256 {
        let mut locked = Amount::ZERO;
        let mut own = U256::ZERO;
        for p in payments {
            if !self.priced_on_arrival(p) {
                locked = locked.checked_add(p.amount).unwrap_or(Amount(U256::MAX));
                continue;
            }
            let (Some(rate), Some(q)) = (&p.rate, self.quote_for(method)) else {
                continue;
            };
            let value = rate
                .base_to_quote_down(p.amount, &q.due.asset, &self.price.asset)
                .map_or(U256::MAX, |a| a.0);
            own = own.saturating_add(value);
        }
        self.credit(method, locked).saturating_add(own)
    }

    /// What is still due, in the price's minor units: the price less what the live payments made
    /// in time are worth (zero once they cover it).
    pub fn still_due(&self) -> Amount {
        let mut paid = U256::ZERO;
        for method in Method::ALL {
            paid = paid.saturating_add(
                self.worth(
                    method,
                    self.payments
                        .iter()
                        .filter(|p| p.method == method && p.status.is_live() && self.in_time(p)),
                ),
            );
        }
        Amount(self.price.amount.0.saturating_sub(paid))
    }

    /// What is still due on `method`, in its asset, at its locked rate, rounded up so that paying
    /// it settles the invoice (the quote itself while nothing is paid); `None` if not offered.
    pub fn still_due_on(&self, method: Method) -> Option<Money> {
        let q = self.quote_for(method)?;
        let due = self.still_due();
        if due == self.price.amount || self.price.amount.is_zero() {
            return Some(q.due.clone());
        }
        let scaled = due.0.checked_mul(q.due.amount.0)?;
        let price = self.price.amount.0;
        let amount = scaled / price + U256::from(u8::from(!(scaled % price).is_zero()));
        Some(Money {
            asset: q.due.asset.clone(),
            amount: Amount(amount),
        })
    }

    /// The status and exception that the current payments, clock and cancellation imply.
    pub fn evaluate(&self, now: Timestamp) -> (InvoiceStatus, Option<InvoiceException>) {
        let mut late = false;
        let (mut confirmed, mut live, mut returned) = (U256::ZERO, U256::ZERO, U256::ZERO);
        for method in Method::ALL {
            let (mut m_confirmed, mut m_live, mut m_returned) =
                (Vec::new(), Vec::new(), Vec::new());
            for p in self
                .payments
                .iter()
                .filter(|p| p.method == method && (p.status.is_live() || p.status.is_returned()))
            {
                if !self.in_time(p) {
                    late = true;
                    continue;
                }
                if p.status.is_returned() {
                    m_returned.push(p);
                    continue;
                }
                m_live.push(p);
                if p.status.is_final() && !self.held(p) {
                    m_confirmed.push(p);
                }
            }
            confirmed = confirmed.saturating_add(self.worth(method, m_confirmed));
            live = live.saturating_add(self.worth(method, m_live));
            returned = returned.saturating_add(self.worth(method, m_returned));
        }
        // A payment in time that awaits its rate keeps the invoice processing, never settled.
        let awaiting = self.awaiting_rate().any(|p| self.in_time(p));
        let price = self.price.amount.0;
        // price × (1 − tolerance), rounded up so that the tolerance never exceeds what was stated.
        let shortfall =
            price.saturating_mul(U256::from(self.tolerance_bps)) / U256::from(10_000u32);
        let enough = price - shortfall;
        let expired = now >= self.expires_at;
        let status = if self.canceled_at.is_some() {
            InvoiceStatus::Invalid
        } else if confirmed >= enough {
            InvoiceStatus::Settled
        } else if live >= enough || awaiting || (!live.is_zero() && !expired) {
            InvoiceStatus::Processing
        } else if expired {
            InvoiceStatus::Expired
        } else {
            InvoiceStatus::New
        };
        // Exceptions describe the payments the merchant keeps; with none, the ones sent back
        // (so the merchant sees why a payer's money was returned).
        let kept = if live.is_zero() { returned } else { live };
        let exception = if late {
            Some(InvoiceException::PaidLate)
        } else if kept > price {
            Some(InvoiceException::PaidOver)
        } else if !kept.is_zero() && kept < price {
            Some(InvoiceException::PaidPartial)
        } else {
            None
        };
        (status, exception)
    }
}
