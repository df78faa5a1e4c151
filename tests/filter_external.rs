//! External callers: an API key, one callout, identity headers upstream (CONTRACT 4-7).

mod filter_support;
mod harness;

use filter_support::*;
use harness::{CalloutReply, Host, Request};

#[test]
fn no_key_is_401_with_challenge_and_request_id_and_no_callout() {
    let host = Host::new();
    let mut vm = vm(&host);
    let request =
        Request::get("/api/2.0/mlflow/experiments/get").set_header("x-request-id", "rid-1");
    let outcome = vm.complete(request);
    assert_reply(&outcome, 401, "API key required");
    assert_eq!(outcome.header("x-request-id").as_deref(), Some("rid-1"));
    assert!(vm.callout_history().is_empty());
}

#[test]
fn malformed_keys_are_401_without_callout() {
    let host = Host::new();
    let mut vm = vm(&host);
    let long = "k".repeat(257);
    for request in [
        Request::get("/api/2.0/mlflow/runs/get").header("authorization", "Bearer "),
        Request::get("/api/2.0/mlflow/runs/get").api_key("two words"),
        Request::get("/api/2.0/mlflow/runs/get").api_key(&long),
        Request::get("/api/2.0/mlflow/runs/get").header_bytes("x-api-key", b"caf\xe9"),
        Request::get("/api/2.0/mlflow/runs/get").header_bytes("authorization", b"Bearer \xff\xfe"),
    ] {
        assert_reply(&vm.complete(request), 401, "Invalid API key format");
    }
    assert!(vm.callout_history().is_empty());
    vm.assert_alive();
}

#[test]
fn valid_key_makes_one_contract_callout_and_forwards_identity() {
    let host = Host::new();
    let mut vm = vm(&host);
    let request = Request::post("/api/mlflow/api/2.0/mlflow/runs/create")
        .bearer(KEY)
        .set_header("x-request-id", "rid-42")
        .header("x-tenant-id", "tenant-7")
        .header("x-custom", "kept")
        .source_address("198.51.100.23:51234");
    let id = vm.send(request);
    vm.outcome(id).assert_paused();

    let callout = vm.answer_only(read_write());
    assert_eq!(callout.upstream, "auth_service");
    assert_eq!(callout.header(":method").as_deref(), Some("POST"));
    assert_eq!(
        callout.header(":path").as_deref(),
        Some("/api/v1/keys/validate")
    );
    assert_eq!(
        callout.header(":authority").as_deref(),
        Some("auth_service")
    );
    assert_eq!(
        callout.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(callout.header("x-request-id").as_deref(), Some("rid-42"));
    assert_eq!(
        callout.header("authorization"),
        None,
        "no service token configured"
    );
    assert_eq!(callout.timeout_ms, 2000);
    assert_eq!(
        callout.json(),
        serde_json::json!({"api_key": KEY, "service_id": "ml-platform", "client_ip": "198.51.100.23"})
    );

    let upstream = vm.outcome(id);
    upstream.assert_forwarded();
    assert_eq!(upstream.header("x-user-id").as_deref(), Some("alice"));
    assert_eq!(upstream.header("x-api-key-id").as_deref(), Some("key-0001"));
    assert_eq!(
        upstream.header("x-auth-scopes").as_deref(),
        Some("mlflow:read mlflow:write")
    );
    assert_eq!(upstream.header("x-auth-path").as_deref(), Some("external"));
    assert_eq!(upstream.header("x-auth-method").as_deref(), Some("api_key"));
    assert_eq!(upstream.header("x-auth-identity"), None);
    assert_eq!(upstream.header("x-auth-stale"), None);
    // Everything else reaches MLflow unchanged.
    assert_eq!(
        upstream.header("authorization"),
        Some(format!("Bearer {KEY}"))
    );
    assert_eq!(upstream.header("x-request-id").as_deref(), Some("rid-42"));
    assert_eq!(upstream.header("x-tenant-id").as_deref(), Some("tenant-7"));
    assert_eq!(upstream.header("x-custom").as_deref(), Some("kept"));
    assert_eq!(
        upstream.header(":path").as_deref(),
        Some("/api/mlflow/api/2.0/mlflow/runs/create")
    );
    vm.tick();
    assert_eq!(host.metric("hokusai_auth.decisions.outcome=allow"), Some(1));
    assert_eq!(host.metric("hokusai_auth.cache.result=miss"), Some(1));
    assert_eq!(host.metric("hokusai_auth.callouts"), Some(1));
}

#[test]
fn spoofed_identity_headers_are_stripped_or_overwritten() {
    let host = Host::new();
    let mut vm = vm(&host);
    let request = keyed_get()
        .header("x-user-id", "admin")
        .header("x-api-key-id", "forged")
        .header("x-auth-path", "internal")
        .header("x-auth-method", "mtls")
        .header("x-auth-identity", API_IDENTITY)
        .header("x-auth-scopes", "mlflow:admin")
        .header("x-auth-stale", "0");
    let upstream = through_callout(&mut vm, request, allow(&["mlflow:read"]));
    assert_eq!(upstream.header_all("x-user-id"), vec!["alice"]);
    assert_eq!(upstream.header_all("x-api-key-id"), vec!["key-0001"]);
    assert_eq!(upstream.header_all("x-auth-path"), vec!["external"]);
    assert_eq!(upstream.header_all("x-auth-method"), vec!["api_key"]);
    assert_eq!(upstream.header_all("x-auth-scopes"), vec!["mlflow:read"]);
    assert!(upstream.header_all("x-auth-identity").is_empty());
    assert!(upstream.header_all("x-auth-stale").is_empty());
}

#[test]
fn x_api_key_is_used_when_authorization_is_not_bearer() {
    let host = Host::new();
    let mut vm = vm(&host);
    let id = vm.send(
        Request::get("/api/2.0/mlflow/runs/get")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .api_key(KEY),
    );
    assert_eq!(vm.callouts_for(id)[0].json()["api_key"], KEY);
}

#[test]
fn scope_is_decided_by_endpoint() {
    let host = Host::new();
    let mut vm = vm(&host);
    // Warm the cache with a read-only verdict, then ask for each kind of call.
    through_callout(&mut vm, keyed_get(), allow(&["mlflow:read"]));
    let cases = [
        ("POST", "/api/2.0/mlflow/runs/search", true),
        ("POST", "/api/2.0/mlflow/runs/create", false),
        (
            "GET",
            "/api/2.0/mlflow/experiments/get?experiment_id=0",
            true,
        ),
        ("POST", "/api/2.0/mlflow/brand-new/endpoint", false),
        ("GET", "/ajax-api/2.0/mlflow/metrics/get-history", true),
        // MLflow serves it as GET only: a POST is no known read.
        ("POST", "/ajax-api/2.0/mlflow/metrics/get-history", false),
        // A caller-chosen artifact name never makes an upload a read.
        (
            "PUT",
            "/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/get_model.pkl",
            false,
        ),
        (
            "GET",
            "/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/m.pkl",
            true,
        ),
        (
            "PUT",
            "/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/m.pkl",
            false,
        ),
    ];
    for (method, path, allowed) in cases {
        let outcome = vm.complete(Request::method(method, path).bearer(KEY));
        if allowed {
            outcome.assert_forwarded();
        } else {
            let body = assert_reply(&outcome, 403, "Insufficient permissions");
            assert_eq!(body["required_scope"], "mlflow:write", "{method} {path}");
        }
    }
    assert_eq!(vm.callout_history().len(), 1, "all served from the cache");
}

#[test]
fn auth_service_verdicts_map_to_contract_statuses() {
    let host = Host::new();
    let mut vm = vm(&host);
    let cases = [
        (
            CalloutReply::json(401, r#"{"detail":"Invalid or expired API key"}"#),
            401,
            "Invalid or expired API key",
        ),
        (
            CalloutReply::json(200, r#"{"valid": false}"#),
            401,
            "Invalid or expired API key",
        ),
        (
            CalloutReply::json(403, r#"{"detail":"nope"}"#),
            403,
            "Insufficient permissions",
        ),
    ];
    for (i, (reply, status, detail)) in cases.into_iter().enumerate() {
        let request = Request::get("/api/2.0/mlflow/runs/get").bearer(&format!("hk_case_{i}"));
        let outcome = through_callout(&mut vm, request, reply);
        let body = assert_reply(&outcome, status, detail);
        assert!(body.get("required_scope").is_none());
    }
}

#[test]
fn auth_service_429_passes_on_its_retry_after() {
    let host = Host::new();
    let mut vm = vm(&host);
    let reply = CalloutReply::json(429, r#"{"detail":"slow down"}"#).header("retry-after", "17");
    let outcome = through_callout(&mut vm, keyed_get(), reply);
    assert_reply(&outcome, 429, "Rate limit exceeded");
    assert_eq!(outcome.header("retry-after").as_deref(), Some("17"));
}

#[test]
fn the_keys_own_rate_limit_is_enforced_from_the_cache() {
    let host = Host::new();
    // Mid-hour, so the seconds left in the window are not a whole hour.
    host.advance(std::time::Duration::from_secs(1234));
    let mut vm = vm(&host);
    through_callout(
        &mut vm,
        keyed_get(),
        allow_with(&["mlflow:read"], "3", "null"),
    );
    vm.complete(keyed_get()).assert_forwarded();
    vm.complete(keyed_get()).assert_forwarded();
    let outcome = vm.complete(keyed_get());
    assert_reply(&outcome, 429, "Rate limit exceeded");
    let retry: u64 = outcome.header("retry-after").unwrap().parse().unwrap();
    // The seconds left in the clock-aligned hour.
    assert_eq!(retry, 3600 - host.now_unix() % 3600);
    assert_eq!(retry, 3600 - 1234);
    // A new window: the key works again (revalidated if the wait outlived the TTL).
    host.advance(std::time::Duration::from_secs(retry));
    let id = vm.send(keyed_get());
    if vm.outcome(id).is_paused() {
        vm.answer_only(allow_with(&["mlflow:read"], "3", "null"));
    }
    vm.outcome(id).assert_forwarded();
}

#[test]
fn service_token_and_bearer_transport() {
    let host = Host::new();
    host.set_env("AUTH_TOKEN", "svc-token-123");
    let config = r#"{"auth_service_token_env": "AUTH_TOKEN", "auth_authority": "auth.internal"}"#;
    let mut vm = host.vm(config).unwrap();
    let id = vm.send(keyed_get());
    let callout = &vm.callouts_for(id)[0];
    assert_eq!(
        callout.header("authorization").as_deref(),
        Some("Bearer svc-token-123")
    );
    assert_eq!(
        callout.header(":authority").as_deref(),
        Some("auth.internal")
    );
    assert_eq!(callout.json()["api_key"], KEY);

    let mut vm = host.vm(r#"{"credential_transport": "bearer"}"#).unwrap();
    let id = vm.send(keyed_get());
    let callout = &vm.callouts_for(id)[0];
    assert_eq!(
        callout.header("authorization"),
        Some(format!("Bearer {KEY}"))
    );
    assert!(callout.json().get("api_key").is_none());
}

#[test]
fn exempt_paths_and_cors_preflight_pass_without_a_key() {
    let host = Host::new();
    let mut vm = vm(&host);
    let health = vm.complete(Request::get("/health").header("x-auth-path", "internal"));
    health.assert_forwarded();
    assert!(
        health.header("x-auth-path").is_none(),
        "stripped even when exempt"
    );
    vm.complete(
        Request::method("OPTIONS", "/api/2.0/mlflow/runs/create")
            .header("origin", "https://notebooks.example")
            .header("access-control-request-method", "POST"),
    )
    .assert_forwarded();
    assert_reply(
        &vm.complete(Request::method("OPTIONS", "/api/2.0/mlflow/runs/create")),
        401,
        "API key required",
    );
    assert!(vm.callout_history().is_empty());
}
