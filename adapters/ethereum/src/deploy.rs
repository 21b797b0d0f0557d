//! Deploys the escrow (and the test token) from the compiled artifacts: used by `relay dev` and
//! the integration tests, never by a running relay.

use crate::bindings::{PaymentEscrow, TestToken};
use crate::node::EthError;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::ProviderBuilder;
use alloy::signers::local::PrivateKeySigner;

/// A provider that signs with `key` (deployments here; payers' own calls in the bench).
pub fn wallet_provider(
    url: &str,
    key: &PrivateKeySigner,
) -> Result<impl alloy::providers::Provider + Clone, EthError> {
    let url = url
        .parse()
        .map_err(|e| EthError::fatal(format!("bad RPC URL: {e}")))?;
    Ok(ProviderBuilder::new()
        .wallet(EthereumWallet::from(key.clone()))
        .connect_http(url))
}

/// Who may do what with a new escrow, fixed at deployment.
#[derive(Debug, Clone, Copy)]
pub struct EscrowRoles {
    pub owner: Address,
    /// The relay's key: captures, voids, refunds (from merchants' reserves), settlements.
    pub operator: Address,
    pub fee_recipient: Address,
    /// Where the operator's liquidity can be withdrawn to, and nowhere else.
    pub treasury: Address,
    /// The most a capture's fee may take, in basis points of the captured amount.
    pub max_fee_bps: u16,
    /// Seconds between the owner proposing a new operator, fee recipient or treasury and the
    /// change taking effect.
    pub change_delay_secs: u64,
}

/// Deploys `PaymentEscrow` with `roles` from `key`'s account.
pub async fn deploy_escrow(
    url: &str,
    key: &PrivateKeySigner,
    roles: EscrowRoles,
) -> Result<Address, EthError> {
    let provider = wallet_provider(url, key)?;
    let escrow = PaymentEscrow::deploy(
        provider,
        roles.owner,
        roles.operator,
        roles.fee_recipient,
        roles.treasury,
        roles.max_fee_bps,
        roles.change_delay_secs,
    )
    .await
    .map_err(|e| EthError::fatal(format!("deploying the escrow: {e}")))?;
    Ok(*escrow.address())
}

/// Deploys a mintable ERC-20 test token and mints `supply` to each of `holders`.
pub async fn deploy_test_token(
    url: &str,
    key: &PrivateKeySigner,
    name: &str,
    symbol: &str,
    decimals: u8,
    holders: &[(Address, U256)],
) -> Result<Address, EthError> {
    let provider = wallet_provider(url, key)?;
    let token = TestToken::deploy(provider, name.to_owned(), symbol.to_owned(), decimals)
        .await
        .map_err(|e| EthError::fatal(format!("deploying the test token: {e}")))?;
    for (to, amount) in holders {
        token
            .mint(*to, *amount)
            .send()
            .await
            .map_err(|e| EthError::fatal(format!("minting: {e}")))?
            .get_receipt()
            .await
            .map_err(|e| EthError::fatal(format!("minting: {e}")))?;
    }
    Ok(*token.address())
}

/// The operator adds `amount` of ether to the escrow's liquidity (what cross-rail settlements are
/// paid from). For `relay dev` and tests; in production the operator funds it with its own tools.
pub async fn fund_ether_liquidity(
    url: &str,
    operator: &PrivateKeySigner,
    escrow: Address,
    amount: U256,
) -> Result<(), EthError> {
    let provider = wallet_provider(url, operator)?;
    PaymentEscrow::new(escrow, provider)
        .fund(Address::ZERO, amount)
        .value(amount)
        .send()
        .await
        .map_err(|e| EthError::fatal(format!("funding liquidity: {e}")))?
        .get_receipt()
        .await
        .map_err(|e| EthError::fatal(format!("funding liquidity: {e}")))?;
    Ok(())
}
