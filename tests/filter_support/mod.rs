//! What the filter story tests share: a config, canned auth-service replies, one-liners.
#![allow(dead_code)]

use crate::harness::{CalloutReply, Host, Outcome, Request, Vm};

pub const API_IDENTITY: &str = "spiffe://hokusai.internal/ns/development/sa/hokusai-api";
pub const NOTEBOOK_IDENTITY: &str = "spiffe://hokusai.internal/ns/development/sa/notebook";
pub const KEY: &str = "hk_live_story_key_0001";

/// The config the stories run under: contract defaults plus an allow-listed service.
pub const CONFIG: &str = r#"{
    "auth_cluster": "auth_service",
    "internal": {"allowed_identities": ["spiffe://hokusai.internal/ns/development/sa/hokusai-api"]},
    "cache": {"ttl_s": 300, "negative_ttl_s": 30, "stale_if_error_s": 60}
}"#;

pub fn vm(host: &Host) -> Vm {
    host.vm(CONFIG).expect("story config is accepted")
}

/// An allow reply for a key with these scopes and no rate limit or expiry.
pub fn allow(scopes: &[&str]) -> CalloutReply {
    allow_with(scopes, "null", "null")
}

pub fn allow_with(scopes: &[&str], rate_limit: &str, expires_at: &str) -> CalloutReply {
    let scopes = serde_json::to_string(scopes).unwrap();
    CalloutReply::json(
        200,
        &format!(
            r#"{{"valid": true, "key_id": "key-0001", "user_id": "alice", "service_id": "ml-platform",
                "scopes": {scopes}, "rate_limit_per_hour": {rate_limit}, "expires_at": {expires_at}}}"#
        ),
    )
}

pub fn read_write() -> CalloutReply {
    allow(&["mlflow:read", "mlflow:write"])
}

/// A read call carrying `KEY`.
pub fn keyed_get() -> Request {
    Request::get("/api/2.0/mlflow/experiments/get?experiment_id=1").bearer(KEY)
}

/// Sends a request that must miss the cache, answers its one callout, returns the outcome.
pub fn through_callout(vm: &mut Vm, request: Request, reply: CalloutReply) -> Outcome {
    let id = vm.send(request);
    vm.outcome(id).assert_paused();
    vm.answer_only(reply);
    let outcome = vm.outcome(id);
    vm.finish(id);
    outcome
}

/// Asserts the contract's local-reply shape and returns the parsed body.
#[track_caller]
pub fn assert_reply(outcome: &Outcome, status: u32, detail: &str) -> serde_json::Value {
    outcome.assert_replied(status);
    assert_eq!(
        outcome.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = outcome.json_body();
    assert_eq!(body["detail"], detail, "body: {body}");
    if status == 401 {
        assert_eq!(
            outcome.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"hokusai\"")
        );
    }
    body
}
