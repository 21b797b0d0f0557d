//! The invoice as its payer sees it on the checkout page and its JSON: the amounts each rail
//! still asks for, at the current rate once a quote expired.

use super::*;

impl InvoiceView {
    /// The invoice as its payer is shown it: on bitcoin, once part is paid, what is still due
    /// (and a BIP21 link for that), so that a second scan pays the rest, not the whole price
    /// again. An escrow deposit is one exact amount, and a card the whole price: those stay.
    pub fn for_payer(
        inv: &Invoice,
        now: Timestamp,
        rates: &dyn relay_core::RateSource,
    ) -> InvoiceView {
        let mut view = InvoiceView::of(inv);
        let Some(q) = inv.quote_for(Method::Bitcoin) else {
            return view;
        };
        // Once the quote expired, a payment is worth what it is at its arrival: ask for what is
        // still due at the current rate (with the merchant's spread), not the old one.
        let current = (now >= inv.quote_expires_at(Method::Bitcoin) && q.expires_at.is_some())
            .then(|| {
                rates
                    .quote_rate(&q.due.asset.code, &inv.price.asset.code)
                    .ok()
            })
            .flatten()
            .map(|r| r.with_spread(q.rate.spread_bps));
        let rest = match &current {
            Some(rate) => rate
                .quote_to_base(inv.still_due(), &inv.price.asset, &q.due.asset)
                .ok()
                .map(|amount| relay_core::Money {
                    asset: q.due.asset.clone(),
                    amount,
                }),
            None => inv.still_due_on(Method::Bitcoin),
        };
        if let (Some(rest), Some(m)) = (rest, view.payment_methods.get_mut("bitcoin")) {
            if let Some(rate) = &current {
                m.rate = rate.price.normalize().to_string();
                m.rate_sources = rate.sources.clone();
                m.rate_as_of = rate.as_of.map(rfc3339);
            }
            if rest.amount != q.due.amount && !rest.amount.is_zero() {
                let minor = rest.amount.to_string();
                m.amount = rest.to_decimal_string();
                m.amount_sat = Some(minor.clone());
                m.amount_minor = minor;
                if let Some(address) = &m.address {
                    m.uri = Some(format!("bitcoin:{address}?amount={}", bip21_amount(&rest)));
                }
            }
        }
        Self::ethereum_at_current_rate(inv, now, rates, &mut view);
        view
    }

    /// An escrow deposit is one exact amount: once its quote expired and while nothing is paid,
    /// the payer is asked for the price at the current rate (the deposit is worth what it is at
    /// its arrival), with the call and link to make for it.
    fn ethereum_at_current_rate(
        inv: &Invoice,
        now: Timestamp,
        rates: &dyn relay_core::RateSource,
        view: &mut InvoiceView,
    ) {
        let Some(q) = inv.quote_for(Method::Ethereum) else {
            return;
        };
        let (Some(e), Some(_)) = (q.ethereum.as_ref(), q.expires_at) else {
            return;
        };
        let paid = inv.payments.iter().any(|p| p.status.is_live());
        if paid || now < inv.quote_expires_at(Method::Ethereum) {
            return;
        }
        let Ok(rate) = rates.quote_rate(&q.due.asset.code, &inv.price.asset.code) else {
            return;
        };
        let rate = rate.with_spread(q.rate.spread_bps);
        let Ok(amount) = rate.quote_to_base(inv.price.amount, &inv.price.asset, &q.due.asset)
        else {
            return;
        };
        let Some(m) = view.payment_methods.get_mut("ethereum") else {
            return;
        };
        let minor = amount.to_string();
        let call = EthereumCallView::for_deposit(e, &minor);
        m.amount = amount.to_decimal_string(q.due.asset.decimals);
        m.amount_minor = minor.clone();
        m.amount_wei = Some(minor.clone());
        m.rate = rate.price.normalize().to_string();
        m.rate_sources = rate.sources.clone();
        m.rate_as_of = rate.as_of.map(rfc3339);
        m.uri = Some(call.eip681(e.chain_id));
        m.approve = EthereumCallView::for_approve(e, &minor);
        m.call = Some(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::invoice::{InvoiceInput, NewInvoice};
    use relay_core::{Amount, AssetBook, FixedRates, InvoiceId, MerchantId, Money};

    const T0: Timestamp = Timestamp(1_800_000_000);

    /// A 25 USD invoice payable in bitcoin and ether at 60,000 and 2,500, quotes holding 60 s.
    fn invoice() -> Invoice {
        let params = NewInvoice {
            merchant_id: MerchantId::from_entropy([1; 12]),
            price: Money {
                asset: relay_core::Asset::fiat("USD", 2),
                amount: Amount::from_minor(2500),
            },
            order_id: None,
            description: None,
            metadata: Default::default(),
            expires_at: T0.plus_seconds(3600),
            methods: vec![Method::Bitcoin, Method::Ethereum],
            tolerance_bps: 0,
            eth_asset: None,
        };
        let rates = FixedRates::from_pairs([("BTC/USD", "60000"), ("ETH/USD", "2500")]).unwrap();
        let mut quotes = params.quote(&AssetBook::default(), &rates).unwrap();
        for q in &mut quotes {
            q.expires_at = Some(T0.plus_seconds(60));
        }
        quotes[0].bitcoin = Some(relay_core::BitcoinPayTo {
            address: "bcrt1qexample".into(),
            script_pubkey: "0014aa".parse().unwrap(),
            derivation_index: 0,
            confirmations: 1,
            treasury: false,
        });
        quotes[1].ethereum = Some(relay_core::EthereumPayTo {
            chain_id: 31337,
            escrow: alloy_primitives::Address::repeat_byte(0x11),
            merchant: alloy_primitives::Address::repeat_byte(0x22),
            token: None,
            expiry: 1_800_007_200,
            salt: alloy_primitives::B256::repeat_byte(0x33),
            payment_id: alloy_primitives::B256::repeat_byte(0x44),
            confirmations: 1,
        });
        Invoice::create(InvoiceId::from_entropy([2; 12]), params, quotes, T0)
            .unwrap()
            .0
    }

    #[test]
    fn once_its_quote_expired_the_payer_is_asked_at_the_current_rate() {
        let inv = invoice();
        let now_rates =
            FixedRates::from_pairs([("BTC/USD", "50000"), ("ETH/USD", "2000")]).unwrap();
        // While the quotes hold: the locked amounts.
        let view = InvoiceView::for_payer(&inv, T0.plus_seconds(30), &now_rates);
        assert_eq!(
            view.payment_methods["bitcoin"].amount_sat.as_deref(),
            Some("41667")
        );
        assert_eq!(view.payment_methods["ethereum"].rate, "2500");
        // After: the price at today's rates, with the deposit call and links for that amount.
        let view = InvoiceView::for_payer(&inv, T0.plus_seconds(61), &now_rates);
        let btc = &view.payment_methods["bitcoin"];
        assert_eq!(btc.amount_sat.as_deref(), Some("50000"));
        assert_eq!(
            btc.uri.as_deref(),
            Some("bitcoin:bcrt1qexample?amount=0.0005")
        );
        let eth = &view.payment_methods["ethereum"];
        assert_eq!(eth.rate, "2000");
        assert_eq!(eth.amount_wei.as_deref(), Some("12500000000000000"));
        assert!(
            eth.uri
                .as_deref()
                .unwrap()
                .contains("value=12500000000000000"),
            "{:?}",
            eth.uri
        );
        assert_eq!(eth.call.as_ref().unwrap().value, "12500000000000000");
        // The merchant's own view keeps the quote the invoice locked.
        assert_eq!(
            InvoiceView::of(&inv).payment_methods["ethereum"].rate,
            "2500"
        );
        // Once something is paid on Ethereum, the deposit's quote stands on the page.
        let mut paid = inv.clone();
        paid.apply(
            InvoiceInput::Observe {
                reference: relay_core::PaymentRef::eth(alloy_primitives::B256::repeat_byte(0x44)),
                method: Method::Ethereum,
                asset: "ETH".into(),
                amount: Amount::from_minor(5_000_000_000_000_000),
                confirmed: false,
                confirmations: 0,
                seen_at: None,
            },
            T0.plus_seconds(10),
        )
        .unwrap();
        let view = InvoiceView::for_payer(&paid, T0.plus_seconds(61), &now_rates);
        assert_eq!(view.payment_methods["ethereum"].rate, "2500");
    }
}
