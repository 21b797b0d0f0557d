//! `POST /v1/invoices/{id}/refunds` and `GET /v1/balances`.
//!
//! A refund is first **reserved** on the invoice (its amount counted against the payment in the
//! same optimistic-concurrency write as any other change, so concurrent requests can never refund
//! more than was paid), then carried out by its rail: the card gateway is asked here; the
//! Ethereum operator voids or refunds the escrow deposit; a bitcoin refund waits for the
//! merchant's wallet to pay the payer's address, which the watcher sees.

use crate::card::GatewayError;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiPath, AuthMerchant, RawBody};
use crate::routes::invoices::{owned_invoice, to_json, Idempotent};
use crate::view::{BalancesView, RefundReserveView, RefundView};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use relay_core::invoice::InvoiceInput;
use relay_core::{Amount, Event, Invoice, Merchant, RefundAddress, RefundStatus};
use relay_store::{Commit, Store};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// Parameters of a refund.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    /// In major units of the payment's asset, e.g. `"10.00"` or `"0.0002"`. Default: all that is
    /// left to refund of the payment.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", max_length = 100)]
    pub amount: Option<String>,
    /// The payment's reference. Default: the invoice's first final payment with something left
    /// to refund.
    pub payment: Option<String>,
    /// Bitcoin payments: the payer's address the merchant's wallet refunds to.
    pub bitcoin_address: Option<String>,
}

/// The refund id: derived from the `Idempotency-Key` when there is one, so a retry after a crash
/// finds the refund it reserved instead of reserving a second one.
fn refund_id<S: Store>(state: &AppState<S>, merchant: &Merchant, key: Option<&str>) -> String {
    match key {
        Some(k) => {
            let mut h = Sha256::new();
            h.update(merchant.id.as_str().as_bytes());
            h.update([0]);
            h.update(k.as_bytes());
            format!("re_{}", hex::encode(&h.finalize()[..12]))
        }
        None => format!("re_{}", hex::encode(state.ids.next())),
    }
}

/// The payment a request refunds: the named one, or the first final one with something left.
fn target(invoice: &Invoice, named: Option<&str>) -> Result<relay_core::Payment, ApiError> {
    let found = match named {
        Some(r) => invoice.payments.iter().find(|p| p.reference == r),
        None => invoice.default_refund_payment(),
    };
    match (found, named) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(r)) => Err(ApiError::invalid(
            "payment_unknown",
            format!("the invoice has no payment {r:?}"),
        )
        .with_param("payment")
        .with_status(StatusCode::NOT_FOUND)),
        (None, None) => Err(ApiError::invalid(
            "refund_not_possible",
            "the invoice has no final payment left to refund",
        )
        .with_status(StatusCode::CONFLICT)),
    }
}

/// Refund (part of) a payment of an invoice.
#[utoipa::path(
    post, path = "/v1/invoices/{id}/refunds", operation_id = "create_refund", tag = "refunds",
    request_body = CreateRefundRequest,
    params(
        ("id" = String, Path, description = "Invoice id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes retries safe: one refund per key"),
    ),
    responses(
        (status = 200, description = "The refund (pending until its rail carries it out)", body = RefundView, links(
            ("CancelRefund" = (operation_id = "cancel_refund", parameters(("id" = "$request.path.id"), ("refund" = "$response.body#/id")))),
            ("RefundPaid" = (operation_id = "refund_paid", parameters(("id" = "$request.path.id"), ("refund" = "$response.body#/id"))))
        )),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 404, description = "No such invoice or payment", body = ErrorBody),
        (status = 409, description = "Nothing to refund (not final, disputed, refunded in full), or an escrow refund the merchant's refund reserve does not cover (`refund_not_covered`)", body = ErrorBody),
        (status = 422, description = "More than is left to refund", body = ErrorBody),
        (status = 502, description = "The card gateway refused the refund; it is failed", body = ErrorBody),
        (status = 503, description = "The card gateway could not be reached; the refund stays reserved and is asked for again", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath(id): ApiPath<String>,
    method: Method,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let path = format!("/v1/invoices/{id}/refunds");
    let idem = match Idempotent::begin(&state, &merchant, &headers, &method, &path, &body).await? {
        Ok(idem) => idem,
        Err(replay) => return Ok(replay),
    };
    let req: CreateRefundRequest = parse_json(&body)?;
    let refund_id = refund_id(&state, &merchant, idem.key());
    // 1. Reserve the refund on the invoice (redone on a concurrent change).
    let mut reserved = None;
    // The retry loop by hand: checking the escrow reserve waits on the chain.
    for _ in 0..crate::update::MAX_ATTEMPTS {
        let mut invoice = owned_invoice(&state, &merchant, &id).await?;
        if invoice.refunds.iter().any(|r| r.id == refund_id) {
            reserved = Some(invoice);
            break;
        }
        let payment = target(&invoice, req.payment.as_deref())?;
        let asset = invoice
            .quote_for(payment.method)
            .map(|q| q.due.asset.clone())
            .ok_or_else(ApiError::internal)?;
        let amount = req
            .amount
            .as_deref()
            .map(|a| Amount::parse_decimal(a, &asset))
            .transpose()?;
        let to = match (&req.bitcoin_address, payment.method) {
            (Some(address), relay_core::Method::Bitcoin) => {
                let rail = state.bitcoin.as_ref().ok_or_else(|| {
                    ApiError::invalid(
                        "payment_method_unavailable",
                        "no bitcoin node is configured",
                    )
                    .with_status(StatusCode::UNPROCESSABLE_ENTITY)
                })?;
                let script = rail.addresses.script_of(address).map_err(|why| {
                    ApiError::invalid("bitcoin_address_invalid", why).with_param("bitcoin_address")
                })?;
                // An invoice's own address would be watched for that invoice: never a refund's.
                if state
                    .store
                    .invoice_by_lookup(&relay_core::Lookup::BtcScript(script.clone()))
                    .await?
                    .is_some()
                {
                    return Err(ApiError::invalid(
                        "bitcoin_address_invalid",
                        "this address receives payments for an invoice; refund to the payer's own address",
                    )
                    .with_param("bitcoin_address"));
                }
                Some(RefundAddress {
                    address: address.clone(),
                    script_pubkey: script,
                })
            }
            (Some(_), _) => {
                return Err(ApiError::invalid(
                    "parameter_invalid",
                    "bitcoin_address is only for refunds of bitcoin payments",
                )
                .with_param("bitcoin_address"))
            }
            (None, _) => None,
        };
        if payment.method == relay_core::Method::Ethereum {
            let left = invoice.refundable(&payment.reference);
            let wanted = amount.unwrap_or(left);
            // More than is left is refused below for that reason (422), whatever the reserve.
            if wanted <= left && needs_reserve(&payment, wanted) {
                check_reserve(&state, &invoice, &refund_id, wanted).await?;
            }
        }
        let version = invoice.version;
        let now = state.clock.now();
        let transition = invoice.apply(
            InvoiceInput::RequestRefund {
                id: refund_id.clone(),
                payment: Some(payment.reference.clone()),
                amount,
                to,
            },
            now,
        )?;
        let events = Event::for_invoice(&invoice, &transition.events, now, || state.ids.event_id());
        match state
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
    let invoice = reserved.ok_or_else(|| {
        ApiError::invalid("concurrent_update", "the invoice keeps changing; retry")
            .with_status(StatusCode::CONFLICT)
    })?;
    state.store.durable().await?;
    let refund = invoice
        .refunds
        .iter()
        .find(|r| r.id == refund_id)
        .cloned()
        .ok_or_else(ApiError::internal)?;
    // 2. Hand it to its rail.
    let mut gateway_error = None;
    if refund.status == RefundStatus::Pending {
        match refund.method {
            // Taken by the gateway already (a retry of this request): not asked again.
            relay_core::Method::Card if refund.gateway_refund.is_some() => {}
            relay_core::Method::Card => match card_refund(&state, &invoice, &refund).await {
                Ok(gateway_refund) => {
                    let input = InvoiceInput::RefundSubmitted {
                        id: refund.id.clone(),
                        gateway_refund,
                    };
                    apply(&state, &merchant, &id, input).await?;
                }
                Err(e) if e.refused => {
                    tracing::warn!(target: "relay::card", refund = %refund.id, error = %e.message, "the gateway refused the refund");
                    let input = InvoiceInput::RefundFailed {
                        id: refund.id.clone(),
                        reason: format!("the card gateway refused it: {}", e.message),
                    };
                    apply(&state, &merchant, &id, input).await?;
                    gateway_error = Some(e.message);
                }
                Err(e) => {
                    // The gateway may have taken it: the refund stays reserved, and a retry with
                    // the same key asks again under the same refund id (refunded once).
                    tracing::warn!(target: "relay::card", refund = %refund.id, error = %e.message, "the gateway could not be reached for a refund");
                    return Err(ApiError::unavailable(
                        "gateway_unavailable",
                        "the card gateway could not be reached; the refund is reserved: retry with the same Idempotency-Key",
                    ));
                }
            },
            relay_core::Method::Bitcoin => {
                if let Some(rail) = &state.bitcoin {
                    (rail.watch_refund)(&invoice.id, &refund);
                }
            }
            // The operator's loop voids or refunds the deposit (the store lists the work).
            relay_core::Method::Ethereum => {}
        }
    }
    metrics::counter!("relay_refunds_requested_total", "method" => refund.method.as_str())
        .increment(1);
    if let Some(e) = gateway_error {
        return Err(ApiError::invalid(
            "gateway_refund_failed",
            format!("the card gateway did not take the refund ({e}); it is marked failed"),
        )
        .with_status(StatusCode::BAD_GATEWAY));
    }
    // 3. Answer with the refund as it now stands; the answer is stored under the key.
    let (state_, merchant_, id_, idem_, refund_id_) = (&state, &merchant, &id, &idem, &refund_id);
    let done = crate::update::retry(|| async move {
        let (state, merchant, id, idem, refund_id) = (state_, merchant_, id_, idem_, refund_id_);
        let invoice = owned_invoice(state, merchant, id).await?;
        let Some(r) = invoice.refunds.iter().find(|r| &r.id == refund_id) else {
            return Err(ApiError::internal());
        };
        let response = to_json(&RefundView::of(&invoice, r));
        let commit = state
            .store
            .update_invoice(
                invoice.version,
                &invoice,
                &[],
                idem.record(merchant, StatusCode::OK, &response),
            )
            .await?;
        Ok(match commit {
            Commit::Conflict => crate::update::Attempt::Conflict,
            commit => crate::update::Attempt::Done((commit, response)),
        })
    })
    .await?;
    let Some((commit, response)) = done else {
        return Err(crate::routes::invoices::busy());
    };
    idem.finish(&state, commit, StatusCode::OK, response).await
}

/// Whether refunding `amount` of an escrow payment draws on the merchant's refund reserve: every
/// refund except one of a whole deposit not captured yet (that one is a void: the payer's own
/// deposit goes back).
fn needs_reserve(payment: &relay_core::Payment, amount: Amount) -> bool {
    payment.capture_tx.is_some() || amount < payment.amount
}

/// Refuses (409 `refund_not_covered`) a refund the merchant's refund reserve in the escrow does
/// not cover, counting the merchant's other refunds that are pending on it. The escrow refuses an
/// uncovered refund anyway; this answers the merchant before anything is reserved.
async fn check_reserve<S: Store>(
    state: &AppState<S>,
    invoice: &Invoice,
    refund_id: &str,
    amount: Amount,
) -> Result<(), ApiError> {
    let Some(terms) = invoice
        .quote_for(relay_core::Method::Ethereum)
        .and_then(|q| q.ethereum.as_ref())
    else {
        return Err(ApiError::internal());
    };
    let rail = state.ethereum.as_ref().ok_or_else(|| {
        ApiError::invalid(
            "payment_method_unavailable",
            "the Ethereum rail is not configured",
        )
        .with_status(StatusCode::UNPROCESSABLE_ENTITY)
    })?;
    let parse = |a: &str| a.parse::<alloy_primitives::Address>().ok();
    let (Some(payout), Some(token)) = (
        parse(&terms.merchant),
        terms
            .token
            .as_deref()
            .map_or(Some(alloy_primitives::Address::ZERO), parse),
    ) else {
        return Err(ApiError::internal());
    };
    let reserve = rail.reserves.reserve(payout, token).await.map_err(|e| {
        tracing::warn!(target: "relay::eth", error = %e, "reading the refund reserve");
        ApiError::unavailable(
            "node_unavailable",
            "the Ethereum node could not be asked for the merchant's refund reserve; retry",
        )
    })?;
    let promised = pending_on_reserve(state, payout, token, refund_id).await?;
    let free = reserve.saturating_sub(promised);
    if free < amount.0 {
        return Err(ApiError::invalid(
            "refund_not_covered",
            format!(
                "a refund after capture is paid from the merchant's refund reserve in the escrow, which holds {reserve} base units ({promised} promised to pending refunds); fund it with fundRefunds({payout:#x}, {token:#x}, amount) and retry"
            ),
        )
        .with_param("amount")
        .with_status(StatusCode::CONFLICT));
    }
    Ok(())
}

/// What pending escrow refunds of the payout address `payout` in `token` will take from its
/// reserve (all but `except`).
async fn pending_on_reserve<S: Store>(
    state: &AppState<S>,
    payout: alloy_primitives::Address,
    token: alloy_primitives::Address,
    except: &str,
) -> Result<alloy_primitives::U256, ApiError> {
    let mut sum = alloy_primitives::U256::ZERO;
    for w in state
        .store
        .payouts(relay_store::PayoutKind::EthRefund)
        .await?
    {
        if w.record == except {
            continue;
        }
        let Some(inv) = state.store.invoice(&w.invoice).await? else {
            continue;
        };
        let Some(terms) = inv
            .quote_for(relay_core::Method::Ethereum)
            .and_then(|q| q.ethereum.as_ref())
        else {
            continue;
        };
        let same_token = match terms.token.as_deref() {
            None => token.is_zero(),
            Some(t) => t.parse::<alloy_primitives::Address>().ok() == Some(token),
        };
        if terms.merchant.parse::<alloy_primitives::Address>().ok() != Some(payout) || !same_token {
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

async fn card_refund<S: Store>(
    state: &AppState<S>,
    invoice: &Invoice,
    refund: &relay_core::Refund,
) -> Result<String, GatewayError> {
    let refused = |m: &str| GatewayError {
        message: m.to_owned(),
        refused: true,
    };
    let gateway = state
        .card
        .as_ref()
        .ok_or_else(|| refused("no card gateway is configured"))?;
    let intent = invoice
        .payment_intent()
        .ok_or_else(|| refused("the invoice has no PaymentIntent"))?;
    let amount = u64::try_from(refund.amount.0).map_err(|_| refused("amount too large"))?;
    gateway.refund(intent, amount, &refund.id).await
}

/// Applies `input` to the merchant's invoice and stores it durably.
async fn apply<S: Store>(
    state: &AppState<S>,
    merchant: &Merchant,
    invoice_id: &str,
    input: InvoiceInput,
) -> Result<(), ApiError> {
    let id = owned_invoice(state, merchant, invoice_id).await?.id;
    state.apply(&id, &input).await?;
    state.store.durable().await?;
    Ok(())
}

/// Applies `input` to a pending bitcoin refund of the merchant's invoice (refused with `code`
/// otherwise) and answers with the refund as stored.
async fn change_bitcoin_refund<S: Store>(
    state: &AppState<S>,
    merchant: &Merchant,
    (id, refund): (&str, &str),
    (code, message): (&'static str, &'static str),
    input: InvoiceInput,
) -> Result<Json<RefundView>, ApiError> {
    let find = |invoice: &Invoice| invoice.refunds.iter().find(|r| r.id == refund).cloned();
    let invoice = owned_invoice(state, merchant, id).await?;
    let r = find(&invoice).ok_or_else(|| ApiError::not_found("refund").with_param("refund"))?;
    if r.method != relay_core::Method::Bitcoin || r.status != RefundStatus::Pending {
        return Err(ApiError::invalid(code, message).with_status(StatusCode::CONFLICT));
    }
    apply(state, merchant, id, input).await?;
    let invoice = owned_invoice(state, merchant, id).await?;
    let r = find(&invoice).ok_or_else(ApiError::internal)?;
    Ok(Json(RefundView::of(&invoice, &r)))
}

/// Cancel a pending bitcoin refund the merchant will not pay after all: it becomes `failed` and
/// its amount is refundable again. Card and escrow refunds are in the gateway's and the
/// operator's hands once requested, so they cannot be canceled.
#[utoipa::path(
    post, path = "/v1/invoices/{id}/refunds/{refund}/cancel", operation_id = "cancel_refund", tag = "refunds",
    params(
        ("id" = String, Path, description = "Invoice id"),
        ("refund" = String, Path, description = "Refund id, `re_…`"),
    ),
    responses(
        (status = 200, description = "The canceled refund", body = RefundView),
        (status = 404, description = "No such invoice or refund", body = ErrorBody),
        (status = 409, description = "Not a pending bitcoin refund", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn cancel<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath((id, refund)): ApiPath<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Json<RefundView>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParams {}
    let _: NoParams = parse_json(&body)?;
    let input = InvoiceInput::RefundFailed {
        id: refund.clone(),
        reason: "canceled by the merchant".into(),
    };
    change_bitcoin_refund(
        &state,
        &merchant,
        (&id, &refund),
        (
            "refund_not_cancelable",
            "only a pending bitcoin refund (paid by the merchant's own wallet) can be canceled",
        ),
        input,
    )
    .await
}

/// What `POST /v1/invoices/{id}/refunds/{refund}/paid` takes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundPaidRequest {
    /// The id of the transaction in which the merchant's wallet paid the refund (64 hex digits).
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub txid: String,
}

/// Name the transaction that paid a pending bitcoin refund. The relay marks the refund paid
/// when it sees an output of that transaction of at least the refund's amount to the payer's
/// address, as deep as the invoice's payments must be. Needed only when several merchants owe
/// the same address a refund (an output cannot tell whose wallet paid it); otherwise the relay
/// matches the payment by itself. Name it before it is 6 blocks deep.
#[utoipa::path(
    post, path = "/v1/invoices/{id}/refunds/{refund}/paid", operation_id = "refund_paid", tag = "refunds",
    request_body = RefundPaidRequest,
    params(
        ("id" = String, Path, description = "Invoice id"),
        ("refund" = String, Path, description = "Refund id, `re_…`"),
    ),
    responses(
        (status = 200, description = "The refund, with the named transaction", body = RefundView),
        (status = 400, description = "Not a transaction id", body = ErrorBody),
        (status = 404, description = "No such invoice or refund", body = ErrorBody),
        (status = 409, description = "Not a pending bitcoin refund", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn paid<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
    ApiPath((id, refund)): ApiPath<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Json<RefundView>, ApiError> {
    let req: RefundPaidRequest = parse_json(&body)?;
    let txid = req.txid.trim().to_ascii_lowercase();
    if txid.len() != 64 || !txid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            ApiError::invalid("parameter_invalid", "txid must be 64 hex digits").with_param("txid"),
        );
    }
    let input = InvoiceInput::RefundClaimed {
        id: refund.clone(),
        tx: txid,
    };
    change_bitcoin_refund(
        &state,
        &merchant,
        (&id, &refund),
        (
            "refund_not_claimable",
            "only a pending bitcoin refund can be named paid",
        ),
        input,
    )
    .await
}

/// The merchant's ledger balances, per asset and account.
#[utoipa::path(
    get, path = "/v1/balances", operation_id = "balances", tag = "refunds",
    responses(
        (status = 200, description = "Balances, and the merchant's refund reserves in the escrow", body = BalancesView),
        (status = 503, description = "The Ethereum node could not be asked for the refund reserves", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn balances<S: Store>(
    State(state): State<AppState<S>>,
    AuthMerchant(merchant): AuthMerchant,
) -> Result<Json<BalancesView>, ApiError> {
    let mut view = BalancesView::of(&state.store.balances(&merchant.id).await?);
    let payout = merchant
        .eth_payout
        .as_deref()
        .and_then(|a| a.parse::<alloy_primitives::Address>().ok());
    if let (Some(rail), Some(payout)) = (state.ethereum.as_ref(), payout) {
        for asset in state.assets.ethereum_assets() {
            let token = match &asset.kind {
                relay_core::AssetKind::Erc20 { contract } => {
                    match contract.parse::<alloy_primitives::Address>() {
                        Ok(t) => t,
                        Err(_) => continue,
                    }
                }
                _ => alloy_primitives::Address::ZERO,
            };
            let reserve = rail.reserves.reserve(payout, token).await.map_err(|e| {
                tracing::warn!(target: "relay::eth", error = %e, "reading the refund reserve");
                ApiError::unavailable(
                    "node_unavailable",
                    "the Ethereum node could not be asked for the merchant's refund reserve; retry",
                )
            })?;
            let pending = pending_on_reserve(&state, payout, token, "").await?;
            view.refund_reserves.push(RefundReserveView {
                asset: asset.code.clone(),
                reserve_minor: reserve.to_string(),
                pending_minor: pending.to_string(),
                available_minor: reserve.saturating_sub(pending).to_string(),
            });
        }
    }
    Ok(Json(view))
}
