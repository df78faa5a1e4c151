//! A sick or absent auth service: the filter answers 503 and Envoy keeps serving.
//! None of these errors may be cached: the same key works once the service is back.

mod e2e;

use std::time::Duration;

use e2e::clients::*;
use e2e::stack::*;
use hokusai_devstack::Fault;

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";

async fn assert_unavailable(stack: &Stack) {
    let resp = plain_client()
        .get(stack.envoy.plain_url(SEARCH))
        .header("authorization", bearer(READWRITE_KEY))
        .header("x-request-id", "e2e-unavailable")
        .send()
        .await
        .unwrap();
    let (status, headers, body) = filter_reply(resp).await;
    assert_eq!(status, 503);
    assert_eq!(body["detail"], "Authentication service unavailable");
    assert_eq!(body["error_code"], "TEMPORARILY_UNAVAILABLE");
    assert_eq!(body["message"], "Authentication service unavailable");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-request-id"], "e2e-unavailable");
}

async fn assert_serving(stack: &mut Stack) {
    stack.envoy.assert_running();
    let resp = plain_client()
        .get(stack.envoy.plain_url(SEARCH))
        .header("authorization", bearer(READWRITE_KEY))
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.header("x-api-key-id"), Some("key-rw-0001"));
    assert_eq!(got.header("x-auth-stale"), None);
}

/// Injects `fault`, expects a 503 after `calls` auth calls (2: the call and its one
/// retry), clears it, expects the same key to pass.
async fn fault_then_recovery(fault: Fault, calls: u64) {
    let mut stack = Stack::start().await;
    stack.auth().set_fault(fault);
    assert_unavailable(&stack).await;
    assert_eq!(stack.auth().validate_calls(), calls);
    stack.auth().set_fault(Fault::None);
    assert_serving(&mut stack).await;
    assert_eq!(
        stack.auth().validate_calls(),
        calls + 1,
        "the error was not cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening() {
    let mut stack = Stack::start_with(StackOptions {
        auth: AuthMode::Down,
        ..StackOptions::default()
    })
    .await;
    assert_unavailable(&stack).await;
    stack.start_auth_now().await;
    assert_serving(&mut stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slower_than_timeout_ms() {
    // envoy.yaml sets timeout_ms 2000.
    fault_then_recovery(Fault::Slow(Duration::from_secs(5)), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error() {
    fault_then_recovery(Fault::Status(500), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_reply() {
    fault_then_recovery(Fault::Garbage, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped() {
    // A connection closed before the reply is retried once (issue 9).
    fault_then_recovery(Fault::CloseConnection, 2).await;
}
