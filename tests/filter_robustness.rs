//! Bad input of every kind gets a documented answer, the VM survives, keys stay secret.

mod filter_support;
mod harness;

use filter_support::*;
use harness::{CalloutReply, Host, Request};

#[test]
fn broken_auth_replies_are_503_and_the_vm_keeps_serving() {
    let host = Host::new();
    let mut vm = vm(&host);
    let huge = format!(
        r#"{{"valid": true, "key_id": "k", "user_id": "u", "pad": "{}"}}"#,
        "x".repeat(200_000)
    );
    let replies = [
        CalloutReply::timeout(),
        CalloutReply::new(500),
        CalloutReply::new(502).body("<html>bad gateway</html>"),
        CalloutReply::new(404),
        CalloutReply::json(200, "this is not json"),
        CalloutReply::json(200, r#"{"valid": true, "key_id": "k", "us"#),
        CalloutReply::json(200, &huge),
        CalloutReply::new(200).body(b"\xff\xfe\x00\x80garbage".as_slice()),
        CalloutReply::json(200, r#"{"valid": true}"#),
        CalloutReply::json(200, r#"{"valid": "yes", "key_id": "k", "user_id": "u"}"#),
        CalloutReply::json(200, r#"{"key_id": "k", "user_id": "u\nx-admin: true"}"#),
        CalloutReply::json(
            200,
            r#"{"key_id": "k", "user_id": "u", "expires_at": "soon"}"#,
        ),
        CalloutReply::new(200).header(":status", "banana"),
        CalloutReply::new(0),
    ];
    for (i, reply) in replies.into_iter().enumerate() {
        let request = keyed_get().set_header("authorization", format!("Bearer hk_broken_{i}"));
        let outcome = through_callout(&mut vm, request, reply);
        assert!(
            !outcome.is_crashed(),
            "reply {i} crashed the VM: {outcome:?}"
        );
        assert_reply(&outcome, 503, "Authentication service unavailable");
        assert_eq!(
            outcome.header("retry-after").as_deref(),
            Some("1"),
            "reply {i}"
        );
    }
    vm.assert_alive();
    through_callout(&mut vm, keyed_get(), read_write()).assert_forwarded();
}

#[test]
fn an_undispatchable_callout_is_503() {
    let host = Host::new();
    host.fail_dispatch(true);
    let mut vm = vm(&host);
    let outcome = vm.complete(keyed_get());
    assert_reply(&outcome, 503, "Authentication service unavailable");
    assert_eq!(outcome.header("retry-after").as_deref(), Some("1"));
    vm.assert_alive();
}

const RUNS_GET: &str = "/api/2.0/mlflow/runs/get";
const GARBAGE_XFCC: &str = "Cert=\"%ZZ\";;;,,,\"\"\"";

#[test]
fn hostile_request_headers_get_the_contracts_401() {
    let host = Host::new();
    let mut vm = vm(&host);
    let get = || Request::get(RUNS_GET);
    let cases = [
        (
            "binary x-user-id",
            get().header_bytes("x-user-id", b"\xff\xfe"),
            "API key required",
        ),
        (
            "binary x-request-id",
            get().header_bytes("x-request-id", b"\xc3\x28"),
            "API key required",
        ),
        (
            "binary :path",
            get().header_bytes(":path", b"/api/2.0/mlflow/\xff"),
            "API key required",
        ),
        (
            "no :method",
            get().without_header(":method"),
            "API key required",
        ),
        (
            "no :path",
            get().without_header(":path"),
            "API key required",
        ),
        (
            "bare Bearer",
            get().header("authorization", "Bearer"),
            "Invalid API key format",
        ),
        // A verified connection with no identity at all is no internal caller.
        (
            "mtls, no identity",
            get().property("connection.mtls", [1u8]),
            "API key required",
        ),
        (
            "mtls, garbage XFCC",
            get().mtls_peer(None, None, Some("CN=")).xfcc(GARBAGE_XFCC),
            "API key required",
        ),
        (
            "mtls, binary XFCC",
            get()
                .mtls_peer(Some("spiffe://x/binary"), None, None)
                .header_bytes("x-forwarded-client-cert", b"\xff"),
            "API key required",
        ),
        // An allow-listed peer whose XFCC cannot be read is not let in on the internal path.
        (
            "allow-listed peer, garbage XFCC",
            get()
                .mtls_peer(Some(API_IDENTITY), None, None)
                .xfcc(GARBAGE_XFCC),
            "API key required",
        ),
        (
            "garbage source.address",
            get().source_address("garbage"),
            "API key required",
        ),
    ];
    for (label, request, detail) in cases {
        let outcome = vm.complete(request);
        assert!(!outcome.is_crashed(), "{label}: {outcome:?}");
        assert_reply(&outcome, 401, detail);
        assert!(vm.callout_history().is_empty(), "{label} made a callout");
    }
    vm.assert_alive();
}

#[test]
fn hostile_requests_with_a_key_take_the_external_path() {
    let host = Host::new();
    let mut vm = vm(&host);
    let get = || Request::get(RUNS_GET);
    // A POST without :path names no endpoint, so no read: the write scope is needed.
    let outcome = through_callout(
        &mut vm,
        Request::post(RUNS_GET)
            .without_header(":path")
            .bearer("hk_hostile_1"),
        allow(&["mlflow:read"]),
    );
    let body = assert_reply(&outcome, 403, "Insufficient permissions");
    assert_eq!(body["required_scope"], "mlflow:write");
    // Verified mTLS but no identity, or an unreadable XFCC: the key decides, externally.
    for (i, request) in [
        get().property("connection.mtls", [1u8]),
        get().mtls_peer(None, None, Some("CN=")).xfcc(GARBAGE_XFCC),
        get().source_address("garbage"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("hk_hostile_ok_{i}");
        let upstream = through_callout(&mut vm, request.bearer(&key), read_write());
        upstream.assert_forwarded();
        assert_eq!(upstream.header("x-auth-path").as_deref(), Some("external"));
        assert_eq!(upstream.header("x-auth-method").as_deref(), Some("api_key"));
        assert_eq!(upstream.header("x-auth-identity"), None);
    }
    // ...and when the auth service is down, the contract's 503.
    let outcome = through_callout(
        &mut vm,
        get()
            .mtls_peer(None, None, Some("CN="))
            .xfcc(GARBAGE_XFCC)
            .bearer("hk_hostile_2"),
        CalloutReply::new(500),
    );
    assert_reply(&outcome, 503, "Authentication service unavailable");
    assert_eq!(outcome.header("retry-after").as_deref(), Some("1"));
    vm.assert_alive();
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    let host = Host::new();
    let cases = [
        (r#"{"cache": {"ttl_s": "300"}}"#, "cache.ttl_s"),
        (r#"{"cache": {"tll_s": 300}}"#, "tll_s"),
        (r#"{"timeout_ms": 0}"#, "timeout_ms"),
        (
            r#"{"credential_transport": "header"}"#,
            "credential_transport",
        ),
        (
            r#"{"internal": {"allowed_identities": "spiffe://x"}}"#,
            "internal.allowed_identities",
        ),
        ("not json", "(root)"),
        // The crash switch exists only in the test build; the artifact refuses it.
        (r#"{"testing": {"trap_path": "/x"}}"#, "testing"),
    ];
    for (config, field) in cases {
        assert!(host.vm(config).is_err(), "{config} was accepted");
        assert!(
            host.logs().iter().any(|l| l.message.contains(field)),
            "no log line names {field}"
        );
        host.clear_logs();
    }
    assert!(host
        .vm(r#"{"auth_service_token_env": "BAD_TOKEN"}"#)
        .is_ok());
    host.set_env("BAD_TOKEN", "has space");
    assert!(host
        .vm(r#"{"auth_service_token_env": "BAD_TOKEN"}"#)
        .is_err());
}

#[test]
fn keys_and_tokens_never_reach_the_logs() {
    let host = Host::new();
    host.set_env("AUTH_TOKEN", "svc-token-secret-77");
    let config = r#"{"auth_service_token_env": "AUTH_TOKEN",
        "internal": {"allowed_identities": ["spiffe://hokusai.internal/ns/development/sa/hokusai-api"]}}"#;
    let mut vm = host.vm(config).unwrap();
    let secret = "hk_live_do_not_log_me_31337";
    let with_key = || Request::post("/api/2.0/mlflow/runs/create").bearer(secret);
    through_callout(&mut vm, with_key(), CalloutReply::new(401));
    through_callout(
        &mut vm,
        with_key().set_header("authorization", "Bearer hk_other"),
        CalloutReply::new(500),
    );
    through_callout(
        &mut vm,
        Request::get("/x").api_key("hk_limited_secret"),
        allow_with(&["mlflow:read"], "0", "null"),
    );
    vm.complete(with_key().mtls_peer(Some(NOTEBOOK_IDENTITY), None, None));
    host.advance(std::time::Duration::from_secs(31));
    through_callout(&mut vm, with_key(), read_write());

    let logs = host.logs();
    assert!(
        logs.iter().any(|l| l.message.contains("sha256:")),
        "denials are logged by fingerprint"
    );
    for line in &logs {
        for secret in [
            secret,
            "hk_other",
            "hk_limited_secret",
            "svc-token-secret-77",
        ] {
            assert!(
                !line.message.contains(secret),
                "secret in log: {}",
                line.message
            );
        }
    }
}
