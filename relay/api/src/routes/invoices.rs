//! `/v1/invoices`: create, retrieve, list, cancel.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiPath, AuthMerchant, RawBody};
use crate::idempotency;
use crate::view::{InvoiceView, ListView};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use relay_core::invoice::{InvoiceInput, NewInvoice};
use relay_core::{Amount, Event, Invoice, InvoiceId, Merchant, Money};
use relay_store::{Commit, IdempotencyRecord, IdempotencyWrite, InvoiceQuery, Store};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

pub const DEFAULT_EXPIRY_SECS: i64 = 15 * 60;

/// Parameters of a new invoice.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvoiceRequest {
    /// The price in major units as a decimal string, e.g. `"25.00"`. JSON numbers are refused so
    /// that no amount passes through a float.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", max_length = 100, example = "25.00")]
    pub amount: String,
    /// A supported currency code: `USD`, `EUR`, …, `BTC`, `ETH`.
    #[schema(max_length = 16, example = "USD")]
    pub currency: String,
    /// The merchant's own reference; invoices can be listed by it.
    #[schema(min_length = 1, max_length = 128)]
    pub order_id: Option<String>,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// Up to 20 string keys (1 to 40 characters) and values (up to 500), returned as given.
    #[schema(schema_with = metadata_map)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Seconds until the invoice expires: 60 to 2592000, default 900.
    #[schema(minimum = 60, maximum = 2592000)]
    pub expires_in: Option<i64>,
    /// Subset of `bitcoin`, `ethereum`, `card`; default: the merchant's methods.
    #[schema(schema_with = method_list)]
    pub payment_methods: Option<Vec<String>>,
    /// What an Ethereum payment is made in: `ETH` or a configured ERC-20 token code. Default:
    /// the price's token if the price is in one, else `ETH`.
    #[schema(max_length = 16)]
    pub ethereum_asset: Option<String>,
}

/// The schema of `metadata`: up to 20 strings of up to 500 characters by key.
fn metadata_map() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(relay_core::invoice::MAX_METADATA_KEYS))
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(relay_core::invoice::MAX_METADATA_VALUE_LEN))
                .into(),
        )))
        .build()
}

/// The schema of `payment_methods`: names of methods (any other string is refused with
/// `payment_method_unsupported`).
fn method_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["bitcoin", "ethereum", "card"])),
        )
        .max_items(Some(3))
        .build()
}

fn parse_methods(
    merchant: &Merchant,
    requested: Option<Vec<String>>,
) -> Result<Vec<relay_core::Method>, ApiError> {
    let Some(names) = requested else {
        return Ok(merchant.methods.clone());
    };
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            relay_core::Method::parse(name).ok_or_else(|| {
                ApiError::invalid(
                    "payment_method_unsupported",
                    format!("{name:?} is not one of bitcoin, ethereum, card"),
                )
                .with_param(format!("payment_methods[{i}]"))
            })
        })
        .collect()
}

/// An in-flight write under an optional `Idempotency-Key`.
pub(crate) struct Idempotent {
    key: Option<String>,
    fingerprint: [u8; 32],
    now: relay_core::Timestamp,
}

impl Idempotent {
    /// Replays a previous answer for the same request (`Err(response)`), refuses the key for
    /// another request, or lets the caller go on.
    pub(crate) async fn begin<S: Store>(
        state: &AppState<S>,
        merchant: &Merchant,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Result<Result<Idempotent, Response>, ApiError> {
        let key = idempotency::key(headers)?;
        let fingerprint = idempotency::fingerprint(method, path, body);
        if let Some(k) = &key {
            if let Some(rec) = state.store.idempotency(&merchant.id, k).await? {
                // The record may belong to a write not yet on disk: answer only once it is.
                state.store.durable().await?;
                return Ok(Err(idempotency::replay(&rec, &fingerprint)));
            }
        }
        Ok(Ok(Idempotent {
            key,
            fingerprint,
            now: state.clock.now(),
        }))
    }

    /// The request's `Idempotency-Key`, if it has one.
    pub(crate) fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The record to store with the decision, if the request carried a key.
    pub(crate) fn record<'a>(
        &'a self,
        merchant: &'a Merchant,
        status: StatusCode,
        body: &str,
    ) -> Option<IdempotencyWrite<'a>> {
        self.key.as_deref().map(|k| IdempotencyWrite {
            merchant_id: &merchant.id,
            key: k,
            record: IdempotencyRecord {
                fingerprint: self.fingerprint,
                status: status.as_u16(),
                body: body.to_owned(),
                created_at: self.now,
            },
        })
    }

    /// Answers once the decision is durable.
    pub(crate) async fn finish<S: Store>(
        &self,
        state: &AppState<S>,
        commit: Commit,
        status: StatusCode,
        body: String,
    ) -> Result<Response, ApiError> {
        match commit {
            Commit::Done => {
                state.store.durable().await?;
                Ok((
                    status,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response())
            }
            Commit::IdempotencyHit(rec) => {
                state.store.durable().await?;
                Ok(idempotency::replay(&rec, &self.fingerprint))
            }
            Commit::Conflict => Err(ApiError::invalid(
                "concurrent_update",
                "the object changed while this request ran; retry it",
            )
            .with_status(StatusCode::CONFLICT)),
        }
    }
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Create an invoice.
#[utoipa::path(
    post, path = "/v1/invoices", operation_id = "create_invoice", tag = "invoices",
    request_body = CreateInvoiceRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe")),
    responses(
        (status = 200, description = "The new invoice", body = InvoiceView, links(
            ("RetrieveInvoice" = (operation_id = "retrieve_invoice", parameters(("id" = "$response.body#/id")))),
            ("CancelInvoice" = (operation_id = "cancel_invoice", parameters(("id" = "$response.body#/id")))),
            ("RefundInvoice" = (operation_id = "create_refund", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 422, description = "No rate for a requested method", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    method: Method,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let idem = match Idempotent::begin(&state, &merchant, &headers, &method, "/v1/invoices", &body)
        .await?
    {
        Ok(idem) => idem,
        Err(replay) => return Ok(replay),
    };
    let req: CreateInvoiceRequest = parse_json(&body)?;
    let req_names: Vec<String> = req.payment_methods.clone().unwrap_or_default();
    let asset = state.assets.get(&req.currency)?.clone();
    let amount = Amount::parse_decimal(&req.amount, &asset)?;
    let now = idem.now;
    let mut params = NewInvoice {
        merchant_id: merchant.id.clone(),
        price: Money { asset, amount },
        order_id: req.order_id,
        description: req.description,
        metadata: req.metadata.unwrap_or_default(),
        expires_at: now.plus_seconds(req.expires_in.unwrap_or(DEFAULT_EXPIRY_SECS)),
        methods: parse_methods(&merchant, req.payment_methods)?,
        tolerance_bps: merchant.payment_tolerance_bps,
        eth_asset: req.ethereum_asset,
    };
    offer_only_available(&state, &merchant, &mut params, &req_names)?;
    let quotes = params.quote(&state.assets, state.rates.as_ref())?;
    let (mut invoice, kinds) = Invoice::create(state.ids.invoice_id(), params, quotes, now)?;
    attach_settlement(&state, &merchant, &mut invoice)?;
    attach_ethereum_deposit(&state, &merchant, &mut invoice)?;
    attach_card_intent(&state, &mut invoice).await?;
    // An address is claimed in the same transaction as the invoice; should it already belong to
    // another invoice (never expected: indexes only grow), the next index is taken.
    let mut attempts = 0;
    let (commit, response) = loop {
        attach_bitcoin_address(&state, &merchant, &mut invoice).await?;
        let events = Event::for_invoice(&invoice, &kinds, now, || state.ids.event_id());
        let response = to_json(&InvoiceView::of(&invoice));
        match state
            .store
            .create_invoice(
                &invoice,
                &events,
                idem.record(&merchant, StatusCode::OK, &response),
            )
            .await
        {
            Err(relay_store::StoreError::DuplicateReference {
                reference: reference @ relay_core::Lookup::BtcScript(_),
            }) if attempts < 3 => {
                tracing::warn!(target: "relay::btc", %reference, "address already used; taking the next index");
                attempts += 1;
            }
            other => break (other?, response),
        }
    };
    if commit == Commit::Done {
        if let Some(rail) = &state.bitcoin {
            if invoice.quote_for(relay_core::Method::Bitcoin).is_some() {
                (rail.watch)(&invoice);
            }
        }
        metrics::counter!("relay_invoices_created_total").increment(1);
    }
    idem.finish(&state, commit, StatusCode::OK, response).await
}

/// Drops the rails that cannot take a payment for this merchant; naming one explicitly is an error.
fn offer_only_available<S: Store>(
    state: &AppState<S>,
    merchant: &Merchant,
    params: &mut NewInvoice,
    named: &[String],
) -> Result<(), ApiError> {
    use relay_core::Method as M;
    let unavailable = |m: M| -> Option<&'static str> {
        match m {
            M::Card if state.card.is_none() => {
                Some("card payments need a card gateway, and none is configured")
            }
            M::Bitcoin if state.bitcoin.is_none() => {
                Some("bitcoin payments need a bitcoin node, and none is configured")
            }
            M::Card | M::Bitcoin
                if merchant.settle_on_ethereum.is_some() && state.ethereum.is_none() =>
            {
                Some("the merchant is paid on Ethereum, and no Ethereum node and escrow is configured")
            }
            M::Bitcoin
                if merchant.settle_on_ethereum.is_some()
                    && state
                        .bitcoin
                        .as_ref()
                        .is_some_and(|b| b.treasury_descriptor.is_none()) =>
            {
                Some("bitcoin payments for a merchant paid on Ethereum go to the operator's treasury descriptor, and none is configured")
            }
            M::Bitcoin
                if merchant.settle_on_ethereum.is_none() && merchant.btc_descriptor.is_none() =>
            {
                Some("bitcoin payments need the merchant's receive descriptor, and none was given")
            }
            M::Ethereum if state.ethereum.is_none() => {
                Some("ethereum payments need an Ethereum node and escrow, and none is configured")
            }
            M::Ethereum if merchant.eth_payout.is_none() => {
                Some("ethereum payments need the merchant's payout address, and none was given")
            }
            _ => None,
        }
    };
    for (i, name) in named.iter().enumerate() {
        if let Some(why) = M::parse(name).and_then(unavailable) {
            return Err(ApiError::invalid("payment_method_unavailable", why)
                .with_param(format!("payment_methods[{i}]"))
                .with_status(StatusCode::UNPROCESSABLE_ENTITY));
        }
    }
    let asked = params.methods.len();
    params.methods.retain(|m| unavailable(*m).is_none());
    // (An empty list is refused by the invoice's own validation.)
    if asked > 0 && params.methods.is_empty() {
        return Err(ApiError::invalid(
            "payment_method_unavailable",
            "none of the merchant's payment methods is available",
        )
        .with_param("payment_methods")
        .with_status(StatusCode::UNPROCESSABLE_ENTITY));
    }
    Ok(())
}

/// Gives the invoice the next unused address of the merchant's descriptor.
async fn attach_bitcoin_address<S: Store>(
    state: &AppState<S>,
    merchant: &Merchant,
    invoice: &mut Invoice,
) -> Result<(), ApiError> {
    // A merchant paid on Ethereum is paid from the relay's liquidity; the bitcoin goes to the
    // operator's treasury, or the merchant would be paid twice.
    let treasury = merchant.settle_on_ethereum.is_some();
    let descriptor = match (treasury, state.bitcoin.as_ref()) {
        (true, Some(rail)) => rail.treasury_descriptor.as_deref(),
        _ => merchant.btc_descriptor.as_deref(),
    };
    let (Some(rail), Some(descriptor), Some(quote)) = (
        state.bitcoin.as_ref(),
        descriptor,
        invoice
            .methods
            .iter_mut()
            .find(|q| q.method == relay_core::Method::Bitcoin),
    ) else {
        return Ok(());
    };
    let owner = if treasury {
        relay_core::merchant::treasury_index_owner()
    } else {
        merchant.id.clone()
    };
    let index = state.store.next_derivation_index(&owner).await?;
    let derived = rail.addresses.derive(descriptor, index).map_err(|why| {
        ApiError::invalid(
            "bitcoin_descriptor_unusable",
            format!("the merchant's bitcoin descriptor cannot give an address: {why}"),
        )
        .with_status(StatusCode::UNPROCESSABLE_ENTITY)
    })?;
    quote.bitcoin = Some(relay_core::BitcoinPayTo {
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
    });
    Ok(())
}

/// For a merchant paid on Ethereum: locks what the price is worth in the settlement asset.
fn attach_settlement<S: Store>(
    state: &AppState<S>,
    merchant: &Merchant,
    invoice: &mut Invoice,
) -> Result<(), ApiError> {
    let Some(code) = &merchant.settle_on_ethereum else {
        return Ok(());
    };
    if !invoice.methods.iter().any(|q| {
        matches!(
            q.method,
            relay_core::Method::Card | relay_core::Method::Bitcoin
        )
    }) {
        return Ok(());
    }
    let unusable = |why: String| {
        ApiError::invalid("settlement_unavailable", why)
            .with_status(StatusCode::UNPROCESSABLE_ENTITY)
    };
    let asset = state
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
    let rate = state
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
    let min_confirmations = state
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

/// Fixes the invoice's escrow deposit: the merchant's payout address, the asset, the amount, the
/// escrow expiry (the invoice's plus the capture window), a fresh random salt, and the payment id
/// the escrow will derive from them.
fn attach_ethereum_deposit<S: Store>(
    state: &AppState<S>,
    merchant: &Merchant,
    invoice: &mut Invoice,
) -> Result<(), ApiError> {
    use alloy_primitives::{Address, B256};
    let (Some(rail), Some(payout), Some(quote)) = (
        state.ethereum.as_ref(),
        merchant.eth_payout.as_deref(),
        invoice
            .methods
            .iter_mut()
            .find(|q| q.method == relay_core::Method::Ethereum),
    ) else {
        return Ok(());
    };
    let unusable = |why: String| {
        ApiError::invalid("ethereum_payout_unusable", why)
            .with_status(StatusCode::UNPROCESSABLE_ENTITY)
    };
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
        escrow: format!("{:#x}", rail.escrow),
        merchant: format!("{merchant_addr:#x}"),
        token: token.map(|t| format!("{t:#x}")),
        expiry,
        salt: format!("{salt:#x}"),
        payment_id: format!("{id:#x}"),
        confirmations: merchant.eth_confirmations,
    });
    Ok(())
}

/// Creates the invoice's PaymentIntent at the gateway (after every parameter was validated, so an
/// invalid request never reaches it). A gateway failure fails the request; nothing is stored.
async fn attach_card_intent<S: Store>(
    state: &AppState<S>,
    invoice: &mut Invoice,
) -> Result<(), ApiError> {
    let (Some(gateway), Some(quote)) = (
        state.card.as_ref(),
        invoice
            .methods
            .iter_mut()
            .find(|q| q.method == relay_core::Method::Card),
    ) else {
        return Ok(());
    };
    let amount = u64::try_from(quote.due.amount.0).map_err(|_| {
        ApiError::invalid(
            "amount_too_large",
            "the amount is too large for the card gateway",
        )
        .with_param("amount")
    })?;
    let intent = gateway
        .create_intent(invoice.id.as_str(), amount, &quote.due.asset.code)
        .await
        .map_err(|e| {
            tracing::warn!(target: "relay::card", error = %e, "creating the PaymentIntent failed");
            ApiError::unavailable(
                "gateway_unavailable",
                "the card gateway could not be reached; retry with the same Idempotency-Key",
            )
        })?;
    quote.card = Some(intent);
    Ok(())
}

pub(crate) async fn owned_invoice<S: Store>(
    state: &AppState<S>,
    merchant: &Merchant,
    id: &str,
) -> Result<Invoice, ApiError> {
    // Another merchant's invoice is answered exactly like a missing one.
    let found = match InvoiceId::parse(id) {
        Some(id) => state.store.invoice(&id).await?,
        None => None,
    };
    found
        .filter(|inv| inv.merchant_id == merchant.id)
        .ok_or_else(|| ApiError::not_found("invoice").with_param("id"))
}

/// Retrieve an invoice.
#[utoipa::path(
    get, path = "/v1/invoices/{id}", operation_id = "retrieve_invoice", tag = "invoices",
    params(("id" = String, Path, description = "Invoice id, `inv_…`")),
    responses(
        (status = 200, description = "The invoice", body = InvoiceView),
        (status = 404, description = "No such invoice for this merchant", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn retrieve<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<InvoiceView>, ApiError> {
    let invoice = owned_invoice(&state, &merchant, &id).await?;
    Ok(Json(InvoiceView::of(&invoice)))
}

pub(crate) fn page_limit(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(10),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "parameter_invalid",
                    "limit must be an integer from 1 to 100",
                )
                .with_param("limit")
            }),
    }
}

/// An optional query parameter parsed by `parse`; a value it rejects is 400 `parameter_invalid`.
pub(crate) fn query_param<T>(
    params: &HashMap<String, String>,
    name: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    params
        .get(name)
        .map(|v| {
            parse(v).ok_or_else(|| {
                ApiError::invalid("parameter_invalid", format!("{name} must be {expected}"))
                    .with_param(name)
            })
        })
        .transpose()
}

pub(crate) fn only_params(
    params: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<(), ApiError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid(
            "parameter_unknown",
            format!("unknown query parameter {k:?}"),
        )
        .with_param(k.clone())),
        None => Ok(()),
    }
}

/// List invoices, newest first.
#[utoipa::path(
    get, path = "/v1/invoices", operation_id = "list_invoices", tag = "invoices",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 10"),
        ("starting_after" = Option<String>, Query, description = "Cursor: the last id of the previous page"),
        ("order_id" = Option<String>, Query, description = "Only invoices with this order id"),
    ),
    responses(
        (status = 200, description = "A page of invoices", body = ListView<InvoiceView>, links(
            ("RetrieveFirst" = (operation_id = "retrieve_invoice", parameters(("id" = "$response.body#/data/0/id"))))
        )),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ListView<InvoiceView>>, ApiError> {
    only_params(&params, &["limit", "starting_after", "order_id"])?;
    let limit = page_limit(&params)?;
    let starting_after = query_param(&params, "starting_after", InvoiceId::parse, "an invoice id")?;
    let page = state
        .store
        .list_invoices(
            &merchant.id,
            &InvoiceQuery {
                order_id: params.get("order_id").cloned(),
                starting_after,
                limit,
            },
        )
        .await?;
    Ok(Json(ListView {
        object: "list",
        data: page.items.iter().map(InvoiceView::of).collect(),
        has_more: page.has_more,
    }))
}

/// Cancel an unpaid invoice (it becomes `invalid`).
#[utoipa::path(
    post, path = "/v1/invoices/{id}/cancel", operation_id = "cancel_invoice", tag = "invoices",
    params(
        ("id" = String, Path, description = "Invoice id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe"),
    ),
    responses(
        (status = 200, description = "The canceled invoice", body = InvoiceView, links(
            ("RetrieveInvoice" = (operation_id = "retrieve_invoice", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 404, description = "No such invoice", body = ErrorBody),
        (status = 409, description = "The invoice is not cancelable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn cancel<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
    method: Method,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let path = format!("/v1/invoices/{id}/cancel");
    let idem = match Idempotent::begin(&state, &merchant, &headers, &method, &path, &body).await? {
        Ok(idem) => idem,
        Err(replay) => return Ok(replay),
    };
    let _: NoParams = parse_json(&body)?;
    // Optimistic concurrency: re-read and re-apply if a watcher changed the invoice meanwhile.
    let (state_, merchant_, id_, idem_) = (&state, &merchant, &id, &idem);
    let done = crate::update::retry(|| async move {
        let (state, merchant, id, idem) = (state_, merchant_, id_, idem_);
        let mut invoice = owned_invoice(state, merchant, id).await?;
        let version = invoice.version;
        let now = state.clock.now();
        let transition = invoice.apply(InvoiceInput::Cancel, now)?;
        let events = Event::for_invoice(&invoice, &transition.events, now, || state.ids.event_id());
        let response = to_json(&InvoiceView::of(&invoice));
        let commit = state
            .store
            .update_invoice(
                version,
                &invoice,
                &events,
                idem.record(merchant, StatusCode::OK, &response),
            )
            .await?;
        Ok::<_, ApiError>(match commit {
            Commit::Conflict => crate::update::Attempt::Conflict,
            commit => crate::update::Attempt::Done((commit, response, invoice)),
        })
    })
    .await?;
    let Some((commit, response, invoice)) = done else {
        return Err(busy());
    };
    let answer = idem.finish(&state, commit, StatusCode::OK, response).await;
    cancel_card_intent(&state, &invoice).await;
    answer
}

/// 409 `concurrent_update`: the invoice kept changing under every attempt.
pub(crate) fn busy() -> ApiError {
    ApiError::invalid("concurrent_update", "the invoice keeps changing; retry")
        .with_status(StatusCode::CONFLICT)
}

/// Closes a canceled invoice's PaymentIntent at the gateway, so that nobody can be charged for
/// it any more. If the payer was faster, the gateway refuses and its webhook (or reconciliation)
/// records the payment as made after the cancel.
async fn cancel_card_intent<S: Store>(state: &AppState<S>, invoice: &Invoice) {
    let (Some(gateway), Some(intent)) = (state.card.as_ref(), invoice.payment_intent()) else {
        return;
    };
    match gateway.cancel_intent(intent).await {
        Ok(()) => {
            let closed = crate::update::apply_input(
                &state.store,
                state.clock.as_ref(),
                &state.ids,
                &invoice.id,
                &InvoiceInput::IntentClosed,
            )
            .await;
            if let Err(e) = closed {
                tracing::warn!(target: "relay::card", invoice = %invoice.id, error = %e, "recording the closed intent failed");
            }
        }
        // The relay's card pass asks again (or reconciles a payment made meanwhile).
        Err(e) => {
            tracing::warn!(target: "relay::card", invoice = %invoice.id, %intent, error = %e, "the gateway did not cancel the canceled invoice's PaymentIntent")
        }
    }
}

/// An empty JSON object (or an empty body).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}
