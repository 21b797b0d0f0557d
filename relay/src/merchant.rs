//! `relay merchant create`: adds a merchant and shows its secrets once.

use anyhow::{Context, Result};
use relay_core::{ApiKey, Clock, Merchant, MerchantId, Method, Secret};
use relay_store::Store;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct NewMerchant {
    pub name: String,
    pub btc_descriptor: Option<String>,
    pub btc_confirmations: u32,
    pub eth_confirmations: u32,
    pub payment_tolerance_bps: u16,
    /// The spread on crypto conversions, in basis points (0 to 1000).
    pub rate_spread_bps: u16,
    /// How long crypto quotes hold, in seconds.
    pub quote_ttl_secs: u32,
    pub eth_payout: Option<String>,
    pub webhook_url: Option<String>,
    /// Be paid on Ethereum, in this asset, for card and bitcoin payments.
    pub settle_on_ethereum: Option<String>,
    /// The webhook URL may be a private address (`webhook_allow_private`).
    pub allow_private_webhooks: bool,
}

impl Default for NewMerchant {
    fn default() -> Self {
        NewMerchant {
            name: String::new(),
            btc_descriptor: None,
            btc_confirmations: 1,
            eth_confirmations: 1,
            payment_tolerance_bps: 0,
            rate_spread_bps: 0,
            quote_ttl_secs: relay_core::merchant::DEFAULT_QUOTE_TTL_SECS,
            eth_payout: None,
            webhook_url: None,
            settle_on_ethereum: None,
            allow_private_webhooks: false,
        }
    }
}

/// What `merchant create` prints: the only time the API key is ever shown.
#[derive(Serialize)]
pub struct CreatedMerchant {
    pub id: String,
    pub name: String,
    pub api_key: String,
    pub webhook_secret: String,
    pub webhook_url: Option<String>,
    /// The descriptor in canonical form (with checksum), as the relay will derive from it.
    pub btc_descriptor: Option<String>,
    pub btc_confirmations: u32,
    pub eth_payout: Option<String>,
    pub eth_confirmations: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_on_ethereum: Option<String>,
}

pub async fn create<S: Store>(
    store: &S,
    clock: &dyn Clock,
    new: NewMerchant,
) -> Result<CreatedMerchant> {
    Merchant::validate_name(&new.name)?;
    let eth_payout = new
        .eth_payout
        .as_deref()
        .map(Merchant::parse_eth_address)
        .transpose()?;
    if let Some(url) = &new.webhook_url {
        Merchant::validate_webhook_url(url, new.allow_private_webhooks)?;
    }
    Merchant::validate_btc_confirmations(new.btc_confirmations)?;
    Merchant::validate_eth_confirmations(new.eth_confirmations)?;
    Merchant::validate_payment_tolerance(new.payment_tolerance_bps)?;
    Merchant::validate_rate_spread(new.rate_spread_bps)?;
    Merchant::validate_quote_ttl(new.quote_ttl_secs)?;
    let btc_descriptor = new
        .btc_descriptor
        .as_deref()
        .map(crate::bitcoin::validate_descriptor)
        .transpose()?;
    let settle_on_ethereum = new
        .settle_on_ethereum
        .map(|a| a.trim().to_ascii_uppercase());
    if settle_on_ethereum.is_some() && new.btc_confirmations == 0 {
        anyhow::bail!(
            "a merchant paid on Ethereum cannot take bitcoin on 0 confirmations: the operator's liquidity pays for those payments"
        );
    }
    if settle_on_ethereum.is_some() && eth_payout.is_none() {
        anyhow::bail!("--settle-on-ethereum needs --eth-payout: settlements are paid there");
    }
    let key = ApiKey::from_entropy(rand::random());
    let merchant = Merchant {
        id: MerchantId::from_entropy(rand::random()),
        name: new.name,
        created_at: clock.now(),
        btc_descriptor,
        eth_payout,
        methods: Method::ALL.to_vec(),
        webhook_url: new.webhook_url,
        webhook_secret: Secret::from_entropy("whsec_", rand::random()),
        btc_confirmations: new.btc_confirmations,
        eth_confirmations: new.eth_confirmations,
        payment_tolerance_bps: new.payment_tolerance_bps,
        rate_spread_bps: new.rate_spread_bps,
        quote_ttl_secs: new.quote_ttl_secs,
        settle_on_ethereum,
    };
    store
        .insert_merchant(
            &merchant,
            &relay_core::access::first_key_of(&merchant, &key),
        )
        .await
        .context("cannot store the merchant")?;
    // The URL given at creation is the merchant's first webhook endpoint, signed with the
    // merchant's webhook secret.
    if let Some(url) = &merchant.webhook_url {
        let endpoint = relay_engine::endpoints::new_endpoint(
            &merchant,
            url,
            Vec::new(),
            merchant.webhook_secret.clone(),
            rand::random(),
            merchant.created_at,
        )
        .map_err(|e| anyhow::anyhow!("webhook_url: {e}"))?;
        store
            .insert_endpoint(&endpoint)
            .await
            .context("cannot store the webhook endpoint")?;
    }
    Ok(CreatedMerchant {
        id: merchant.id.to_string(),
        name: merchant.name.clone(),
        api_key: key.expose_secret().to_owned(),
        webhook_secret: merchant.webhook_secret.expose_secret().to_owned(),
        webhook_url: merchant.webhook_url.clone(),
        btc_descriptor: merchant.btc_descriptor.clone(),
        btc_confirmations: merchant.btc_confirmations,
        eth_payout: merchant.eth_payout.clone(),
        eth_confirmations: merchant.eth_confirmations,
        settle_on_ethereum: merchant.settle_on_ethereum.clone(),
    })
}
