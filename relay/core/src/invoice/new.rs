//! A new invoice: its parameters, their validation and the rates locked per method, and what
//! each rail is paid to (a derived bitcoin address, an escrow deposit's payment id).

use super::*;
use crate::rate::RateError;

/// The parameters of a new invoice, already parsed into domain values.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    pub merchant_id: MerchantId,
    pub price: Money,
    pub order_id: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub expires_at: Timestamp,
    pub methods: Vec<Method>,
    /// See [`Invoice::tolerance_bps`].
    pub tolerance_bps: u16,
    /// The asset an Ethereum payment is made in (`ETH` or a configured ERC-20 code). `None`: the
    /// price's own token if it is priced in one, else ETH.
    pub eth_asset: Option<String>,
}

impl NewInvoice {
    pub(super) fn validate(&self, now: Timestamp) -> Result<(), CoreError> {
        if self.price.amount.is_zero() {
            return Err(CoreError::InvalidAmount {
                asset: self.price.asset.code.clone(),
                input: "0".into(),
                reason: "the price must be greater than zero",
            });
        }
        let lifetime = self.expires_at.0.saturating_sub(now.0);
        if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&lifetime) {
            return Err(invalid(
                "expires_in",
                format!("must be between {MIN_EXPIRY_SECS} and {MAX_EXPIRY_SECS} seconds"),
            ));
        }
        if let Some(order) = &self.order_id {
            if order.is_empty() || order.chars().count() > MAX_ORDER_ID_LEN {
                return Err(invalid(
                    "order_id",
                    format!("1 to {MAX_ORDER_ID_LEN} characters"),
                ));
            }
        }
        if let Some(desc) = &self.description {
            if desc.chars().count() > MAX_DESCRIPTION_LEN {
                return Err(invalid(
                    "description",
                    format!("at most {MAX_DESCRIPTION_LEN} characters"),
                ));
            }
        }
        if self.metadata.len() > MAX_METADATA_KEYS {
            return Err(invalid(
                "metadata",
                format!("at most {MAX_METADATA_KEYS} keys"),
            ));
        }
        for (k, v) in &self.metadata {
            if k.is_empty() || k.chars().count() > MAX_METADATA_KEY_LEN {
                return Err(invalid(
                    "metadata",
                    format!("keys are 1 to {MAX_METADATA_KEY_LEN} characters"),
                ));
            }
            if v.chars().count() > MAX_METADATA_VALUE_LEN {
                return Err(invalid(
                    "metadata",
                    format!("values are at most {MAX_METADATA_VALUE_LEN} characters"),
                ));
            }
        }
        if self.methods.is_empty() {
            return Err(invalid(
                "payment_methods",
                "at least one payment method is required",
            ));
        }
        Ok(())
    }

    /// Locks the rate of every requested method. Each method's asset is fixed by its rail (bitcoin
    /// pays BTC, ethereum pays ETH, card pays the price's own fiat currency).
    pub fn quote(
        &self,
        assets: &AssetBook,
        rates: &dyn RateSource,
    ) -> Result<Vec<MethodQuote>, CoreError> {
        let mut quotes: Vec<MethodQuote> = Vec::new();
        for &method in &self.methods {
            if quotes.iter().any(|q| q.method == method) {
                continue;
            }
            let asset = match method {
                Method::Bitcoin => assets.get("BTC")?.clone(),
                Method::Ethereum => {
                    let asset = match &self.eth_asset {
                        Some(code) => assets.get(code)?.clone(),
                        None if matches!(self.price.asset.kind, AssetKind::Erc20 { .. }) => {
                            self.price.asset.clone()
                        }
                        None => assets.get("ETH")?.clone(),
                    };
                    if !matches!(asset.kind, AssetKind::Ether | AssetKind::Erc20 { .. }) {
                        return Err(invalid(
                            "ethereum_asset",
                            format!("{} is not paid on Ethereum; use ETH or a token", asset.code),
                        ));
                    }
                    asset
                }
                Method::Card => {
                    if self.price.asset.kind != AssetKind::Fiat {
                        return Err(CoreError::NoRate {
                            from: self.price.asset.code.clone(),
                            to: "a card currency (card payments need a fiat price)".into(),
                        });
                    }
                    self.price.asset.clone()
                }
            };
            let rate = rates
                .quote_rate(&asset.code, &self.price.asset.code)
                .map_err(|e| match e {
                    RateError::NoPair => CoreError::NoRate {
                        from: self.price.asset.code.clone(),
                        to: asset.code.clone(),
                    },
                    RateError::Unavailable(reason) => CoreError::RateUnavailable {
                        from: self.price.asset.code.clone(),
                        to: asset.code.clone(),
                        reason,
                    },
                })?;
            let amount = rate.quote_to_base(self.price.amount, &self.price.asset, &asset)?;
            quotes.push(MethodQuote {
                method,
                due: Money { asset, amount },
                rate,
                expires_at: None,
                card: None,
                bitcoin: None,
                ethereum: None,
            });
        }
        Ok(quotes)
    }
}

/// Derives bitcoin receive addresses from merchants' descriptors. The bitcoin adapter implements
/// it; the API asks it for one new address per invoice.
///
/// Contract: deterministic (the same descriptor and index always give the same address), and
/// distinct indexes give distinct scripts.
pub trait ReceiveAddresses: Send + Sync {
    /// The address at `index` of `descriptor`, or why there is none (as a sentence for the
    /// merchant: a descriptor for another network, a key that cannot derive).
    fn derive(&self, descriptor: &str, index: u32) -> Result<ReceiveAddress, String>;

    /// The output script (hex) of an address on the relay's network, or why it is not one.
    fn script_of(&self, address: &str) -> Result<Script, String>;
}

/// One derived address and its output script (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveAddress {
    pub address: String,
    pub script_pubkey: Script,
}

/// The escrow's payment id for these terms, as the contract computes it:
/// `keccak256(abi.encode(chainid, escrow, merchant, token, amount, expiry, salt))`.
pub fn eth_payment_id(
    chain_id: u64,
    escrow: alloy_primitives::Address,
    merchant: alloy_primitives::Address,
    token: alloy_primitives::Address,
    amount: U256,
    expiry: u64,
    salt: alloy_primitives::B256,
) -> alloy_primitives::B256 {
    let mut buf = [0u8; 7 * 32];
    buf[..32].copy_from_slice(&U256::from(chain_id).to_be_bytes::<32>());
    buf[32 + 12..64].copy_from_slice(escrow.as_slice());
    buf[64 + 12..96].copy_from_slice(merchant.as_slice());
    buf[96 + 12..128].copy_from_slice(token.as_slice());
    buf[128..160].copy_from_slice(&amount.to_be_bytes::<32>());
    buf[160..192].copy_from_slice(&U256::from(expiry).to_be_bytes::<32>());
    buf[192..224].copy_from_slice(salt.as_slice());
    alloy_primitives::keccak256(buf)
}

/// Takes a merchant's spread of `bps` basis points off the rate of every crypto conversion among
/// `quotes` (bitcoin, and Ethereum in an asset other than the price's), and quotes again what the
/// payer owes at it, rounded up as always. A card, or a token priced in itself, has none.
pub fn apply_spread(quotes: &mut [MethodQuote], price: &Money, bps: u16) -> Result<(), CoreError> {
    for q in quotes.iter_mut() {
        if q.method == Method::Card || q.due.asset == price.asset {
            continue;
        }
        q.rate = q.rate.with_spread(bps);
        q.due.amount = q
            .rate
            .quote_to_base(price.amount, &price.asset, &q.due.asset)?;
    }
    Ok(())
}
