//! Internal callers: Envoy-validated mTLS peers on the allow-list pass with no callout.

mod filter_support;
mod harness;

use filter_support::*;
use harness::{Host, Request};

#[test]
fn allow_listed_peer_passes_with_internal_identity_and_no_callout() {
    let host = Host::new();
    let mut vm = vm(&host);
    let request = Request::post("/api/2.0/mlflow/runs/create")
        .mtls_peer(Some(API_IDENTITY), None, Some("CN=hokusai-api-client"))
        .header("x-auth-path", "external")
        .header("x-api-key-id", "forged");
    let upstream = vm.complete(request);
    upstream.assert_forwarded();
    assert_eq!(upstream.header("x-auth-path").as_deref(), Some("internal"));
    assert_eq!(upstream.header("x-auth-method").as_deref(), Some("mtls"));
    assert_eq!(
        upstream.header("x-auth-identity").as_deref(),
        Some(API_IDENTITY)
    );
    assert_eq!(
        upstream.header("x-auth-scopes").as_deref(),
        Some("mlflow:read mlflow:write")
    );
    assert_eq!(
        upstream.header("x-user-id").as_deref(),
        Some("internal_service")
    );
    assert_eq!(upstream.header("x-api-key-id"), None);
    assert!(vm.callout_history().is_empty());
    vm.tick();
    assert_eq!(host.metric("hokusai_auth.requests.path=internal"), Some(1));
    assert_eq!(host.metric("hokusai_auth.decisions.outcome=allow"), Some(1));
}

#[test]
fn internal_callers_keep_the_end_users_id() {
    let host = Host::new();
    let mut vm = vm(&host);
    let upstream = vm.complete(
        Request::get("/api/2.0/mlflow/experiments/get")
            .mtls_peer(Some(API_IDENTITY), None, None)
            .header("x-user-id", "end-user-9"),
    );
    assert_eq!(upstream.header_all("x-user-id"), vec!["end-user-9"]);
}

#[test]
fn unlisted_peer_is_logged_and_needs_a_key() {
    let host = Host::new();
    let mut vm = vm(&host);
    let peer = |r: Request| r.mtls_peer(Some(NOTEBOOK_IDENTITY), None, Some("CN=hokusai-notebook"));
    let outcome = vm.complete(peer(Request::get("/api/2.0/mlflow/runs/get")));
    assert_reply(&outcome, 401, "API key required");
    assert!(
        host.logged(NOTEBOOK_IDENTITY),
        "the unlisted identity is logged"
    );

    let upstream = through_callout(&mut vm, peer(keyed_get()), read_write());
    assert_eq!(upstream.header("x-auth-path").as_deref(), Some("external"));
}

#[test]
fn identity_properties_on_a_plain_connection_are_not_trusted() {
    let host = Host::new();
    let mut vm = vm(&host);
    let request = Request::get("/api/2.0/mlflow/runs/get")
        .property("connection.uri_san_peer_certificate", API_IDENTITY)
        .property("connection.mtls", [0u8]);
    assert_reply(&vm.complete(request), 401, "API key required");
}

#[test]
fn a_later_san_in_envoys_xfcc_can_match() {
    let host = Host::new();
    let batch = "spiffe://hokusai.internal/ns/development/sa/batch";
    let config = format!(r#"{{"internal": {{"allowed_identities": ["{batch}"]}}}}"#);
    let mut vm = host.vm(&config).unwrap();
    let pem = include_str!("../src/core/testdata/multi-san.crt");
    let encoded: String = pem
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    // Envoy writes one URI= field per URI SAN of the certificate.
    let request = Request::get("/api/2.0/mlflow/runs/get")
        .mtls_peer(
            Some("spiffe://hokusai.internal/ns/development/sa/first"),
            None,
            None,
        )
        .xfcc(&format!(
            "Hash=00;Cert=\"{encoded}\";URI=spiffe://hokusai.internal/ns/development/sa/first;URI={batch}"
        ));
    let upstream = vm.complete(request);
    upstream.assert_forwarded();
    assert_eq!(upstream.header("x-auth-identity").as_deref(), Some(batch));
}
