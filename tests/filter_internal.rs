//! Internal callers: Envoy-validated mTLS peers on the allow-list pass with no callout.

mod filter_support;
mod harness;

use filter_support::*;
use harness::{Host, PeerCert, Request};

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
fn a_later_san_of_the_certificate_can_match() {
    let host = Host::new();
    let batch = "spiffe://hokusai.internal/ns/development/sa/batch";
    let config = format!(r#"{{"internal": {{"allowed_identities": ["{batch}"]}}}}"#);
    let mut vm = host.vm(&config).unwrap();
    let cert = PeerCert::new(
        &["spiffe://hokusai.internal/ns/development/sa/first", batch],
        &["batch.local"],
        Some("batch"),
    );
    let upstream = vm.complete(Request::get("/api/2.0/mlflow/runs/get").mtls_cert(&cert));
    upstream.assert_forwarded();
    assert_eq!(upstream.header("x-auth-identity").as_deref(), Some(batch));
}

/// Characters that mean something in Envoy's XFCC, and its field names.
const XFCC_SPECIALS: [&str; 10] = [
    ";", ",", "\"", "=", "URI=", "DNS=", "Cert=", "Hash=", "By=", "Subject=",
];

/// Certificates whose one SAN or CN holds an allow-listed identity next to XFCC syntax, as
/// a private CA that signs the SANs a CSR asks for would issue them.
fn posers() -> Vec<PeerCert> {
    let mut certs = Vec::new();
    for special in XFCC_SPECIALS {
        for (before, after) in [
            (format!("{NOTEBOOK_IDENTITY}{special}"), String::new()),
            (format!("{NOTEBOOK_IDENTITY};{special}"), String::new()),
            (String::new(), format!("{special}x")),
            (format!("x{special}"), format!(";{special}")),
        ] {
            let id = format!("{before}{API_IDENTITY}{after}");
            certs.push(PeerCert::new(&[&id], &[], Some("hokusai-notebook")));
            certs.push(PeerCert::new(&[NOTEBOOK_IDENTITY], &[&id], None));
            certs.push(PeerCert::new(&[], &[], Some(&id)));
        }
    }
    certs
}

#[test]
fn a_san_or_cn_that_only_carries_an_allow_listed_id_gets_the_key_path() {
    let host = Host::new();
    let mut vm = vm(&host);
    for cert in posers() {
        assert!(
            cert.xfcc().contains(API_IDENTITY),
            "the XFCC text names the listed id"
        );
        let write = Request::post("/api/2.0/mlflow/runs/create").mtls_cert(&cert);
        let outcome = vm.complete(write);
        assert_reply(&outcome, 401, "API key required");
    }
    assert!(vm.callout_history().is_empty());
    // With a key, such a peer is an external caller like any other.
    let cert = &posers()[0];
    let upstream = through_callout(&mut vm, keyed_get().mtls_cert(cert), read_write());
    assert_eq!(upstream.header("x-auth-path").as_deref(), Some("external"));
    assert_eq!(upstream.header("x-auth-identity"), None);
    vm.assert_alive();
}

#[test]
fn the_certificate_in_the_header_must_be_the_connections() {
    let host = Host::new();
    let mut vm = vm(&host);
    let listed = PeerCert::new(&[API_IDENTITY], &[], Some("hokusai-api-client"));
    let unlisted = PeerCert::new(&[NOTEBOOK_IDENTITY], &[], None);
    // The unlisted peer's connection, with the listed certificate's XFCC: Envoy never writes
    // this, but nothing but the digest may be trusted to say whose certificate it is.
    let swapped = Request::get("/api/2.0/mlflow/runs/get")
        .mtls_cert(&unlisted)
        .xfcc(&listed.xfcc());
    assert_reply(&vm.complete(swapped), 401, "API key required");
    // A SAN whose text appends the listed certificate as a second Cert= field.
    let appended = Request::get("/api/2.0/mlflow/runs/get")
        .mtls_cert(&unlisted)
        .xfcc(&format!("{};{}", unlisted.xfcc(), listed.xfcc()));
    assert_reply(&vm.complete(appended), 401, "API key required");
    // No digest from Envoy: no internal path.
    let no_digest = Request::get("/api/2.0/mlflow/runs/get")
        .mtls_cert(&listed)
        .without_property("connection.sha256_peer_certificate_digest");
    assert_reply(&vm.complete(no_digest), 401, "API key required");
    vm.complete(Request::get("/api/2.0/mlflow/runs/get").mtls_cert(&listed))
        .assert_forwarded();
}
