//! User tokens through the real .wasm: admitted from jwt_authn's verified payload in Envoy's
//! dynamic metadata, refused without it, never sent to the auth service.

mod filter_support;
mod harness;

use serde_json::json;

use base64::Engine;
use filter_support::*;
use harness::{Host, Request};

fn token(claims: &str) -> String {
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2lnbmF0dXJl",
        enc(r#"{"alg":"RS256","kid":"dev"}"#),
        enc(claims)
    )
}

#[test]
fn a_verified_token_is_admitted_with_its_claims_and_no_callout() {
    let host = Host::new();
    let mut vm = vm(&host);
    let jwt = token(r#"{"sub":"user_123","scope":"mlflow:read mlflow:write","exp":4102444800}"#);
    let request = Request::post("/api/2.0/mlflow/runs/create")
        .bearer(&jwt)
        .header("x-auth-method", "api_key")
        .header("x-user-id", "mallory")
        .verified_jwt(&[("sub", "user_123"), ("scope", "mlflow:read mlflow:write")]);
    let upstream = vm.complete(request);
    upstream.assert_forwarded();
    assert_eq!(upstream.header("x-user-id").as_deref(), Some("user_123"));
    assert_eq!(
        upstream.header("x-auth-scopes").as_deref(),
        Some("mlflow:read mlflow:write")
    );
    assert_eq!(upstream.header("x-auth-method").as_deref(), Some("jwt"));
    assert_eq!(upstream.header("x-auth-path").as_deref(), Some("external"));
    assert_eq!(upstream.header("x-api-key-id"), None);
    assert_eq!(
        upstream.header("authorization"),
        Some(format!("Bearer {jwt}")),
        "the original Authorization reaches MLflow"
    );
    assert!(vm.callout_history().is_empty());
}

#[test]
fn a_read_only_token_cannot_write() {
    let host = Host::new();
    let mut vm = vm(&host);
    let jwt = token(r#"{"sub":"user_9","scope":"mlflow:read"}"#);
    let verified = [("sub", "user_9"), ("scope", "mlflow:read")];
    let write = Request::post("/api/2.0/mlflow/runs/create")
        .bearer(&jwt)
        .verified_jwt(&verified);
    let body = assert_reply(&vm.complete(write), 403, "Insufficient permissions");
    assert_eq!(body["required_scope"], "mlflow:write");
    let read = Request::get("/api/2.0/mlflow/experiments/get")
        .bearer(&jwt)
        .verified_jwt(&verified);
    vm.complete(read).assert_forwarded();
}

#[test]
fn a_token_without_verified_metadata_is_refused() {
    let host = Host::new();
    let mut vm = vm(&host);
    let jwt = token(r#"{"sub":"user_123","scope":"mlflow:read"}"#);
    let unverified = Request::get("/api/2.0/mlflow/experiments/get").bearer(&jwt);
    assert_reply(&vm.complete(unverified), 401, "Invalid or expired token");
    // A client header cannot stand in for the metadata.
    let header_only = Request::get("/api/2.0/mlflow/experiments/get")
        .bearer(&jwt)
        .header("x-jwt-payload-sub", "user_123");
    assert_reply(&vm.complete(header_only), 401, "Invalid or expired token");
    assert!(
        vm.callout_history().is_empty(),
        "a token is never sent as a key"
    );
}

#[test]
fn identity_and_scopes_come_from_the_verified_payload_never_the_token_text() {
    let host = Host::new();
    let mut vm = vm(&host);
    // The text claims write access and another user; what jwt_authn verified says read.
    let jwt = token(r#"{"sub":"admin","scope":"mlflow:read mlflow:write"}"#);
    let verified = [("sub", "user_7"), ("scope", "mlflow:read")];
    let write = Request::post("/api/2.0/mlflow/runs/create")
        .bearer(&jwt)
        .verified_jwt(&verified);
    let body = assert_reply(&vm.complete(write), 403, "Insufficient permissions");
    assert_eq!(body["required_scope"], "mlflow:write");
    let read = vm.complete(
        Request::get("/api/2.0/mlflow/experiments/get")
            .bearer(&jwt)
            .verified_jwt(&verified),
    );
    assert_eq!(read.header("x-user-id").as_deref(), Some("user_7"));
    // A verified scope claim is split on single spaces only (RFC 6749): a newline or a tab
    // does not separate two scopes, it makes one unusable token.
    for scope in ["mlflow:read\nmlflow:write", "mlflow:read\tmlflow:write"] {
        let write = Request::post("/api/2.0/mlflow/runs/create")
            .bearer(&jwt)
            .verified_jwt(&[("sub", "user_7"), ("scope", scope)]);
        assert_reply(&vm.complete(write), 403, "Insufficient permissions");
    }
}

/// Envoy hands metadata over untyped (a list or map as pairs, a number as 8 bytes): claims
/// that are not what the contract reads grant nothing, however their bytes split.
#[test]
fn verified_claims_of_the_wrong_type_grant_no_scope() {
    let host = Host::new();
    let mut vm = vm(&host);
    let jwt = token(r#"{"sub":"u"}"#);
    let write = |payload: serde_json::Value| {
        Request::post("/api/2.0/mlflow/runs/create")
            .bearer(&jwt)
            .verified_jwt_json(payload)
    };
    for payload in [
        // A permissions map where a list was expected: its keys are no scopes.
        json!({"sub": "u", "scopes": {"mlflow:write": false}}),
        json!({"sub": "u", "scopes": {"mlflow:write": ""}}),
        json!({"sub": "u", "scopes": {"mlflow:access": "no"}}),
        // A list or map where a string was expected: its bytes, split on spaces, would
        // hold a clean `mlflow:write`.
        json!({"sub": "u", "scope": ["x mlflow:write y"]}),
        json!({"sub": "u", "scope": {"k": "x mlflow:write y"}}),
        json!({"sub": "u", "scopes": [["mlflow:write"]]}),
    ] {
        let body = assert_reply(
            &vm.complete(write(payload.clone())),
            403,
            "Insufficient permissions",
        );
        assert_eq!(body["required_scope"], "mlflow:write", "{payload}");
    }
    // The same claims, well typed, do grant; a null claim elsewhere does not get in the way.
    for payload in [
        json!({"sub": "u", "scopes": ["mlflow:write"], "email": null}),
        json!({"sub": "u", "scope": "mlflow:read mlflow:write", "groups": [1, {"a": null}]}),
    ] {
        vm.complete(write(payload)).assert_forwarded();
    }
}

#[test]
fn api_keys_and_x_api_key_tokens_keep_the_key_path() {
    let host = Host::new();
    let mut vm = vm(&host);
    through_callout(&mut vm, keyed_get(), read_write()).assert_forwarded();
    // In x-api-key a JWT-shaped value is an API key: it goes to the auth service.
    let jwt = token(r#"{"sub":"user_123"}"#);
    let id = vm.send(Request::get("/api/2.0/mlflow/experiments/get").api_key(&jwt));
    vm.outcome(id).assert_paused();
    assert_eq!(vm.callouts_for(id)[0].json()["api_key"], jwt.as_str());
}
