//! The gateway client against a real localstripe.

use relay_card::{GatewayClient, GatewayError};
use relay_testnet::LocalStripe;

#[tokio::test]
async fn creates_retrieves_cancels_and_refunds_payment_intents() {
    let gw = LocalStripe::spawn().unwrap();
    let client = GatewayClient::new(&gw.url(), LocalStripe::SECRET_KEY).unwrap();

    let pi = client
        .create_payment_intent("inv_1", 2500, "USD")
        .await
        .unwrap();
    assert_eq!((pi.amount, pi.currency.as_str()), (2500, "usd"));
    assert!(pi.client_secret.as_deref().unwrap().starts_with(&pi.id));
    let at_gateway = gw.get(&format!("/v1/payment_intents/{}", pi.id)).unwrap();
    assert_eq!(at_gateway["metadata"]["relay_invoice"], "inv_1");
    assert_eq!(
        client.retrieve_payment_intent(&pi.id).await.unwrap().status,
        "requires_payment_method"
    );
    assert!(pi.as_event().is_none(), "an unpaid intent is no payment");

    let canceled = client.cancel_payment_intent(&pi.id).await.unwrap();
    assert_eq!(canceled.status, "canceled");

    // A paid intent, then a partial refund through the client.
    let paid = client
        .create_payment_intent("inv_2", 1000, "usd")
        .await
        .unwrap();
    gw.post(
        &format!("/v1/payment_intents/{}", paid.id),
        &[("payment_method", "pm_card_visa")],
    )
    .unwrap();
    gw.post(&format!("/v1/payment_intents/{}/confirm", paid.id), &[])
        .unwrap();
    let paid = client.retrieve_payment_intent(&paid.id).await.unwrap();
    assert_eq!(paid.status, "succeeded");
    assert!(paid.as_event().is_some());
    let refund = client.refund(&paid.id, 400, "refund-1").await.unwrap();
    assert_eq!(
        (refund["amount"].as_u64(), refund["status"].as_str()),
        (Some(400), Some("succeeded"))
    );

    // Errors are classified: an unknown intent is final, not retried forever.
    match client.retrieve_payment_intent("pi_nope").await {
        Err(e @ GatewayError::Rejected { status: 404, .. }) => assert!(!e.is_retryable()),
        other => panic!("expected a 404, got {other:?}"),
    }
    // An unreachable gateway is a retryable transport error.
    let down = GatewayClient::new(
        &format!("http://127.0.0.1:{}", relay_testnet::free_port().unwrap()),
        "sk_test_x",
    )
    .unwrap();
    let err = down.retrieve_payment_intent("pi_x").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}
