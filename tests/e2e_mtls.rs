//! The TLS listener: allow-listed client certificates take the internal path, other
//! valid ones fall back to API keys, invalid ones never complete a handshake.

mod e2e;

use e2e::clients::*;
use e2e::stack::*;

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_listed_certificate_takes_the_internal_path_without_a_callout() {
    let stack = Stack::start().await;
    let client = tls_client(Some("client"));

    let got = echoed(
        client
            .get(stack.envoy.tls_url(SEARCH))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.header("x-auth-path"), Some("internal"));
    assert_eq!(got.header("x-auth-method"), Some("mtls"));
    assert_eq!(got.header("x-auth-identity"), Some(INTERNAL_IDENTITY));
    assert_eq!(got.header("x-user-id"), Some("internal_service"));
    let mut scopes: Vec<&str> = got
        .header("x-auth-scopes")
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["mlflow:read", "mlflow:write"]);
    assert_eq!(got.header("x-api-key-id"), None);
    // Envoy's own XFCC, carrying the verified identity.
    let xfcc = got
        .header("x-forwarded-client-cert")
        .expect("Envoy sets XFCC on mTLS");
    assert!(xfcc.contains(&format!("URI={INTERNAL_IDENTITY}")), "{xfcc}");

    // An internal service forwards the end user's id, and may write.
    let resp = client
        .post(stack.envoy.tls_url("/api/2.0/mlflow/runs/create"))
        .header("x-user-id", "alice")
        .header("x-auth-path", "external")
        .body("{}")
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.header("x-user-id"), Some("alice"));
    assert_eq!(got.header_all("x-auth-path"), ["internal"]);

    assert_eq!(
        stack.auth().validate_calls(),
        0,
        "no callout on the internal path"
    );
    assert_eq!(stack.auth_cluster_requests().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_certificate_falls_back_to_the_api_key() {
    let stack = Stack::start().await;
    let client = tls_client(Some("unlisted-client"));
    let (status, _, body) = filter_reply(
        client
            .get(stack.envoy.tls_url(SEARCH))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("API key required"))
    );

    let resp = client
        .get(stack.envoy.tls_url(SEARCH))
        .header("authorization", bearer(READWRITE_KEY))
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.header("x-auth-path"), Some("external"));
    assert_eq!(got.header("x-auth-method"), Some("api_key"));
    assert_eq!(got.header("x-api-key-id"), Some("key-rw-0001"));
    assert_eq!(got.header("x-auth-identity"), None);
    assert_eq!(stack.auth().validate_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_uses_the_api_key_over_tls() {
    let stack = Stack::start().await;
    let client = tls_client(None);
    let forged = format!("Hash=00;URI={INTERNAL_IDENTITY}");
    let resp = client
        .get(stack.envoy.tls_url(SEARCH))
        .header("x-forwarded-client-cert", &forged)
        .send()
        .await
        .unwrap();
    let (status, _, _) = filter_reply(resp).await;
    assert_eq!(status, 401, "a forged XFCC is not a client certificate");

    let resp = client
        .get(stack.envoy.tls_url(SEARCH))
        .header("x-api-key", READWRITE_KEY)
        .header("x-forwarded-client-cert", &forged)
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.header("x-auth-path"), Some("external"));
    assert_eq!(got.header("x-forwarded-client-cert"), None);
    assert_eq!(got.header("x-forwarded-proto"), Some("https"));
}

/// Another CA's certificate, an expired one, and one certs/ca.crl revokes (the
/// allow-listed identity, so revocation is all that keeps it out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_expired_and_revoked_certificates_are_refused_at_the_handshake() {
    let stack = Stack::start().await;
    let verify_errors = format!(
        "listener.127.0.0.1_{}.ssl.fail_verify_error",
        stack.envoy.ports.tls
    );
    for (n, stem) in ["rogue-client", "expired-client", "revoked-client"]
        .into_iter()
        .enumerate()
    {
        let result = tls_client(Some(stem))
            .get(stack.envoy.tls_url(SEARCH))
            .header("authorization", bearer(READWRITE_KEY))
            .send()
            .await;
        assert!(
            result.is_err(),
            "{stem}: expected a TLS failure, got {result:?}"
        );
        assert_eq!(
            stack.envoy.stat(&verify_errors).await,
            n as u64 + 1,
            "{stem}: Envoy counts a failed verification"
        );
    }
    assert_eq!(
        stack.envoy.stat("cluster.mlflow.upstream_rq_total").await,
        0
    );
    assert_eq!(stack.auth().validate_calls(), 0);
}
