//! Attempts to steer the verdict with what a caller controls: the method, override headers,
//! header case, repeated headers, the path and query, and a body sent while the verdict is
//! still pending. Each must fail through a real Envoy.

mod e2e;

use std::time::Duration;

use e2e::clients::*;
use e2e::stack::*;
use hokusai_devstack::Fault;

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";

async fn upstream_requests(stack: &Stack) -> u64 {
    stack.envoy.stat("cluster.mlflow.upstream_rq_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_override_header_makes_a_read_a_write() {
    let stack = Stack::start().await;
    let client = plain_client();
    let read = || {
        client
            .get(stack.envoy.plain_url(SEARCH))
            .header("x-api-key", READONLY_KEY)
    };
    assert_eq!(read().send().await.unwrap().status(), 200);
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        let resp = read().header(name, "DELETE").send().await.unwrap();
        let (status, _, body) = filter_reply(resp).await;
        assert_eq!(
            (status, body["required_scope"].as_str()),
            (403, Some("mlflow:write")),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_credential_headers_are_refused_without_a_callout() {
    let stack = Stack::start().await;
    let client = plain_client();
    let cases = [
        ("authorization", bearer(READWRITE_KEY), bearer(READONLY_KEY)),
        (
            "authorization",
            bearer(READWRITE_KEY),
            bearer(READWRITE_KEY),
        ),
        (
            "x-api-key",
            READONLY_KEY.to_string(),
            READWRITE_KEY.to_string(),
        ),
    ];
    for (name, first, second) in cases {
        let resp = client
            .get(stack.envoy.plain_url(SEARCH))
            .header(name, first)
            .header(name, second)
            .send()
            .await
            .unwrap();
        let (status, headers, body) = filter_reply(resp).await;
        assert_eq!(
            (status, body["detail"].as_str()),
            (401, Some("Invalid API key format")),
            "{name}"
        );
        assert_eq!(headers["www-authenticate"], "Bearer realm=\"hokusai\"");
    }
    assert_eq!(stack.auth().validate_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_case_and_repeats_never_smuggle_a_verdict() {
    let stack = Stack::start().await;
    let client = plain_client();
    let resp = client
        .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/search"))
        .header("AUTHORIZATION", bearer(READONLY_KEY))
        .header("X-Auth-Path", "internal")
        .header("x-auth-path", "internal")
        .header("X-AUTH-SCOPES", "mlflow:write")
        .header(
            "x-auth-identity",
            "spiffe://hokusai.internal/ns/development/sa/hokusai-api",
        )
        .header("x-auth-method", "mtls")
        .header("x-api-key-id", "forged")
        .header("x-auth-stale", "1")
        .body("{}")
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.header_all("x-auth-path"), ["external"]);
    assert_eq!(got.header_all("x-auth-scopes"), ["mlflow:read"]);
    assert_eq!(got.header_all("x-auth-method"), ["api_key"]);
    assert_eq!(got.header_all("x-api-key-id"), ["key-ro-0002"]);
    assert!(got.header_all("x-auth-identity").is_empty());
    assert!(got.header_all("x-auth-stale").is_empty());
    // The forged scope header did not lend the read-only key a write.
    let resp = client
        .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/create"))
        .header("AUTHORIZATION", bearer(READONLY_KEY))
        .header("X-Auth-Scopes", "mlflow:write")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_refused(resp, 403, "Insufficient permissions", Some("mlflow:write")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_and_queries_never_turn_a_write_into_a_read() {
    let stack = Stack::start().await;
    let client = plain_client();
    let writes = [
        "/api/2.0/mlflow/runs/create?x=/runs/search",
        "/api/2.0/mlflow/runs/create?get=1&search=1",
        "/api/2.0/mlflow/runs/search/../create",
        "/api/2.0/mlflow//runs/create",
        "/api/2.0/mlflow/runs/%63reate",
        "/api/2.0/mlflow/runs/delete;search",
        "/api/mlflow/api/2.0/mlflow/runs/create",
        "/mlflow/ajax-api/2.0/mlflow/runs/update",
        "/api/2.0/mlflow/experiments/search/../delete",
    ];
    for path in writes {
        let resp = client
            .post(stack.envoy.plain_url(path))
            .header("x-api-key", READONLY_KEY)
            .body("{}")
            .send()
            .await
            .unwrap();
        let got = filter_reply(resp).await;
        assert_refusal(&got, 403, "Insufficient permissions", Some("mlflow:write"));
    }
    // A credential in the query is not a credential.
    let resp = client
        .get(
            stack
                .envoy
                .plain_url(&format!("{SEARCH}?api_key={READWRITE_KEY}")),
        )
        .send()
        .await
        .unwrap();
    assert_refused(resp, 401, "API key required", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_while_the_verdict_is_pending_waits_for_it() {
    let stack = Stack::start().await;
    // The verdict takes a while; the client sends its whole body meanwhile.
    stack
        .auth()
        .set_fault(Fault::Slow(Duration::from_millis(400)));
    let before = upstream_requests(&stack).await;
    let client = plain_client();
    let body = "x".repeat(200_000);
    for (key, status, detail, scope) in [
        (
            "hk_not_a_real_key_0009",
            401,
            "Invalid or expired API key",
            None,
        ),
        (
            READONLY_KEY,
            403,
            "Insufficient permissions",
            Some("mlflow:write"),
        ),
    ] {
        let resp = client
            .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/create"))
            .header("x-api-key", key)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_refused(resp, status, detail, scope).await;
    }
    assert_eq!(
        upstream_requests(&stack).await,
        before,
        "nothing reached MLflow before (or without) its verdict"
    );
    // The same request with a key allowed to write does go through, body intact.
    let resp = client
        .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/create"))
        .header("x-api-key", READWRITE_KEY)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.body_bytes, body.len() as u64);
}
