//! User JWTs next to API keys and mTLS (issue 12), through a real Envoy 1.40: Envoy's
//! `jwt_authn` verifies a JWT-shaped bearer locally (no callout) and refuses one that
//! does not verify with the contract's JSON reply; everything else reaches the filter
//! as before; a verified token reaches MLflow as its user, with no callout.

mod e2e;

use e2e::clients::*;
use e2e::mlflow::{run_client_flow, Mlflow};
use e2e::paths;
use e2e::stack::*;
use hokusai_devstack::jwt::{self, JwtKey, Kid, MintOptions, ScopeClaim, Signing};
use serde_json::json;

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";
const LOG_METRIC: &str = "/api/2.0/mlflow/runs/log-metric";

/// The contract's reply for a JWT that did not verify.
const INVALID_TOKEN: &str = "Invalid or expired token";

fn signing_key() -> JwtKey {
    dev_login().key
}

/// A valid dev token's options, to break one thing at a time.
fn opts(sub: &str) -> MintOptions {
    dev_login().mint_options(sub, &["mlflow:read", "mlflow:write"])
}

/// Every way a present JWT can fail; each must be refused by Envoy.
fn broken_tokens() -> Vec<(&'static str, String)> {
    let key = signing_key();
    let other = JwtKey::generate();
    let now = jwt::now_unix();
    let with = |f: &dyn Fn(&mut MintOptions)| {
        let mut o = opts("user_broken");
        f(&mut o);
        o
    };
    vec![
        (
            // Well past jwt_authn's 60 s clock skew.
            "expired",
            jwt::mint(
                &key,
                &with(&|o| {
                    o.issued_at = Some(now - 7200);
                    o.ttl_s = 3600;
                }),
            ),
        ),
        (
            "not yet valid",
            jwt::mint(&key, &with(&|o| o.not_before = Some(now + 3600))),
        ),
        (
            "wrong issuer",
            jwt::mint(&key, &with(&|o| o.iss = "https://login.example.com".into())),
        ),
        (
            "wrong audience",
            jwt::mint(&key, &with(&|o| o.aud = vec!["other-service".into()])),
        ),
        (
            "no audience",
            jwt::mint(&key, &with(&|o| o.aud = Vec::new())),
        ),
        (
            "bad signature",
            jwt::mint(&key, &with(&|o| o.signing = Signing::Corrupted)),
        ),
        (
            "alg none",
            jwt::mint(&key, &with(&|o| o.signing = Signing::AlgNone)),
        ),
        (
            // Another key posing under the dev key's kid...
            "other key, our kid",
            jwt::mint(&other, &with(&|o| o.kid = Kid::Named(key.kid().into()))),
        ),
        // ... under its own kid, and under none.
        (
            "other key, its kid",
            jwt::mint(&other, &opts("user_broken")),
        ),
        (
            "other key, no kid",
            jwt::mint(&other, &with(&|o| o.kid = Kid::Absent)),
        ),
        (
            "not JSON inside",
            "eyJub3QganNvbg.eyJub3QganNvbg.c2ln".into(),
        ),
    ]
}

async fn assert_refused_by_envoy(resp: reqwest::Response, request_id: &str, label: &str) {
    let (status, headers, body) = filter_reply(resp).await;
    assert_eq!(status, 401, "{label}: {body}");
    assert_eq!(
        body,
        json!({
            "detail": INVALID_TOKEN,
            "error_code": "UNAUTHENTICATED",
            "message": INVALID_TOKEN,
        }),
        "{label}"
    );
    assert_eq!(headers["content-type"], "application/json", "{label}");
    let challenges: Vec<_> = headers.get_all("www-authenticate").iter().collect();
    assert_eq!(challenges, ["Bearer realm=\"hokusai\""], "{label}");
    assert_eq!(headers["x-request-id"], request_id, "{label}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_token_is_refused_by_envoy_with_the_contract_reply_and_no_callout() {
    let stack = Stack::start().await;
    let client = plain_client();
    // Reads, writes, artifacts and the prefixed entry point: jwt_authn guards them all.
    let urls = [
        ("GET", SEARCH),
        ("POST", LOG_METRIC),
        (
            "PUT",
            "/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/model.pkl",
        ),
        ("GET", "/api/mlflow/api/2.0/mlflow/experiments/search"),
    ];
    let mut cases = broken_tokens()
        .into_iter()
        .map(|(label, token)| (label, format!("Bearer {token}")))
        .collect::<Vec<_>>();
    // The scheme in another case or after a tab: still a JWT to the filter, but not one
    // Envoy can extract, so it is refused rather than passed on unverified.
    let valid = stack.mint("user_shape", &["mlflow:read"]);
    cases.push(("BEARER scheme", format!("BEARER {valid}")));
    cases.push(("tab after scheme", format!("Bearer\t{valid}")));
    let expired = broken_tokens()[0].1.clone();
    cases.push(("lowercase scheme, expired", format!("bearer {expired}")));

    for (i, (label, authorization)) in cases.iter().enumerate() {
        let (method, path) = urls[i % urls.len()];
        let request_id = format!("e2e-jwt-refusal-{i}");
        let resp = client
            .request(method.parse().unwrap(), stack.envoy.plain_url(path))
            .header("authorization", authorization)
            .header("x-request-id", &request_id)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_refused_by_envoy(resp, &request_id, label).await;
    }
    // The TLS listener without a client certificate is no different.
    let resp = tls_client(None)
        .get(stack.envoy.tls_url(SEARCH))
        .header("authorization", &cases[0].1)
        .header("x-request-id", "e2e-jwt-tls")
        .send()
        .await
        .unwrap();
    assert_refused_by_envoy(resp, "e2e-jwt-tls", "TLS, no client cert").await;

    assert_eq!(stack.auth().total_calls(), 0, "no callout for any of them");
    assert_eq!(stack.auth_cluster_requests().await, 0);
    assert_eq!(
        stack.envoy.stat("http.hokusai.jwt_authn.denied").await,
        cases.len() as u64 + 1,
        "each one refused by jwt_authn itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_in_either_header_still_reach_the_filter() {
    let stack = Stack::start().await;
    let client = plain_client();
    let url = stack.envoy.plain_url(SEARCH);

    for (label, name, value) in [
        ("bearer", "authorization", bearer(READWRITE_KEY)),
        (
            "lowercase bearer",
            "authorization",
            format!("bearer {READWRITE_KEY}"),
        ),
        ("x-api-key", "x-api-key", READWRITE_KEY.to_owned()),
    ] {
        let got = echoed(client.get(&url).header(name, &value).send().await.unwrap()).await;
        assert_eq!(got.header("x-auth-method"), Some("api_key"), "{label}");
        assert_eq!(got.header("x-user-id"), Some("dev-user-1"), "{label}");
        assert_eq!(got.header(name), Some(value.as_str()), "{label}: unchanged");
    }
    // A JWT in x-api-key is an API key like any other value there (one too long to be a
    // key, so the filter refuses it without a callout): jwt_authn ignores it. Basic
    // credentials in Authorization leave x-api-key to speak.
    let token = stack.mint("user_in_x_api_key", &["mlflow:read"]);
    let (status, _, body) = filter_reply(
        client
            .get(&url)
            .header("x-api-key", &token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_ne!(
        body["detail"], INVALID_TOKEN,
        "the filter answered, not jwt_authn"
    );
    let got = echoed(
        client
            .get(&url)
            .header("authorization", "Basic dXNlcjpwYXNz")
            .header("x-api-key", READWRITE_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.header("x-auth-method"), Some("api_key"));

    // A key with dots that is not JWT-shaped is still a key: the auth service refuses it.
    let (status, _, body) = filter_reply(
        client
            .get(&url)
            .header("authorization", "Bearer hk_live.abc.def")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("Invalid or expired API key"))
    );
    // The filter's own refusals keep their words.
    let (status, _, body) = filter_reply(client.get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("API key required"))
    );

    assert_eq!(stack.envoy.stat("http.hokusai.jwt_authn.denied").await, 0);
    // One callout per distinct well-formed key: the dev key (then cached), the dotted key.
    assert_eq!(stack.auth().validate_calls(), 2);
    assert_eq!(stack.auth().token_validate_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_peers_keep_their_path_whatever_user_token_they_forward() {
    let stack = Stack::start().await;
    let internal = tls_client(Some("client"));
    let expired = broken_tokens()[0].1.clone();
    let wrong_audience = broken_tokens()[3].1.clone();
    let valid = stack.mint("user_forwarded", &["mlflow:read"]);

    // Internal services forward their user's Authorization; a stale or foreign token
    // there must not cost them the internal path.
    for (label, token) in [
        ("expired", &expired),
        ("wrong audience", &wrong_audience),
        ("valid", &valid),
    ] {
        let authorization = format!("Bearer {token}");
        let got = echoed(
            internal
                .post(stack.envoy.tls_url("/api/2.0/mlflow/runs/create"))
                .header("authorization", &authorization)
                .header("x-user-id", "alice")
                .body("{}")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got.header("x-auth-path"), Some("internal"), "{label}");
        assert_eq!(got.header("x-auth-method"), Some("mtls"), "{label}");
        assert_eq!(got.header("x-user-id"), Some("alice"), "{label}");
        assert_eq!(
            got.header("authorization"),
            Some(authorization.as_str()),
            "{label}"
        );
    }

    // A peer that is not on the allow-list gets no such favour: its broken token is
    // refused, without a callout.
    let (status, headers, body) = filter_reply(
        tls_client(Some("unlisted-client"))
            .get(stack.envoy.tls_url(SEARCH))
            .header("authorization", format!("Bearer {expired}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"hokusai\"");

    assert_eq!(stack.auth().total_calls(), 0);
    assert_eq!(stack.auth_cluster_requests().await, 0);
    assert_eq!(stack.envoy.stat("http.hokusai.jwt_authn.denied").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_health_and_preflights_ignore_tokens() {
    let stack = Stack::start().await;
    let client = plain_client();
    let expired = format!("Bearer {}", broken_tokens()[0].1);

    let resp = client
        .get(stack.envoy.plain_url("/nope"))
        .header("authorization", &expired)
        .send()
        .await
        .unwrap();
    let (status, _, body) = filter_reply(resp).await;
    assert_eq!((status, body), (404, json!({"detail": "Not found"})));

    let got = echoed(
        client
            .get(stack.envoy.plain_url("/health"))
            .header("authorization", &expired)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.path, "/health");

    let got = echoed(
        client
            .request(reqwest::Method::OPTIONS, stack.envoy.plain_url(SEARCH))
            .header("origin", "http://localhost:3000")
            .header("access-control-request-method", "POST")
            .header("authorization", &expired)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.method, "OPTIONS");

    assert_eq!(stack.envoy.stat("http.hokusai.jwt_authn.denied").await, 0);
    assert_eq!(stack.auth().total_calls(), 0);
}

#[test]
fn the_jwks_envoy_loads_holds_the_dev_signing_key() {
    paths::require(&paths::cert("jwks.json"), "make certs");
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(paths::cert("jwks.json")).unwrap()).unwrap();
    // The kid certs/generate.sh computed with openssl is the one the Rust side computes.
    assert_eq!(file, signing_key().jwks());
}

// ---- The final behaviour: these need the filter to read jwt_authn's metadata. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_reaches_mlflow_as_its_user_without_a_callout() {
    let stack = Stack::start().await;
    let client = plain_client();
    let key = signing_key();
    let mut as_array = opts("user_array");
    as_array.scope_claim = ScopeClaim::Scopes;
    let cases = [
        (
            "scope claim",
            "user_123",
            stack.mint("user_123", &["mlflow:read", "mlflow:write"]),
            "Bearer",
        ),
        (
            "scopes array",
            "user_array",
            jwt::mint(&key, &as_array),
            "Bearer",
        ),
        (
            "lowercase scheme",
            "user_lower",
            stack.mint("user_lower", &["mlflow:read", "mlflow:write"]),
            "bearer",
        ),
    ];
    for (label, sub, token, scheme) in cases {
        let authorization = format!("{scheme} {token}");
        let got = echoed(
            client
                .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/create"))
                .header("authorization", &authorization)
                // Nothing a client sends may pose as the verdict.
                .header("x-user-id", "mallory")
                .header("x-auth-method", "mtls")
                .header("x-auth-scopes", "mlflow:admin")
                .body("{}")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got.header("x-user-id"), Some(sub), "{label}");
        assert_eq!(got.header_all("x-auth-method"), ["jwt"], "{label}");
        assert_eq!(got.header_all("x-auth-path"), ["external"], "{label}");
        assert_eq!(
            got.header_all("x-auth-scopes"),
            ["mlflow:read mlflow:write"],
            "{label}"
        );
        assert_eq!(
            got.header("authorization"),
            Some(authorization.as_str()),
            "{label}: MLflow gets the original Authorization"
        );
    }
    assert_eq!(
        stack.auth().total_calls(),
        0,
        "verified locally, no callout"
    );
    assert_eq!(stack.auth_cluster_requests().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_reads_but_gets_403_on_a_write_endpoint() {
    let stack = Stack::start().await;
    let client = plain_client();
    let token = stack.mint("user_reader", &["mlflow:read"]);
    let resp = client
        .post(stack.envoy.plain_url(LOG_METRIC))
        .header("authorization", bearer(&token))
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, _, body) = filter_reply(resp).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["detail"], "Insufficient permissions");
    assert_eq!(body["required_scope"], "mlflow:write");
    // Reads sent as POST are reads for tokens too.
    let got = echoed(
        client
            .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/search"))
            .header("authorization", bearer(&token))
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.header("x-user-id"), Some("user_reader"));
    assert_eq!(stack.auth().total_calls(), 0);
}

/// Signed tokens whose scope claims are not what the contract reads (a permissions map, a
/// list where a string belongs): Envoy hands metadata over untyped, and such claims once
/// granted write (a red-team finding). Each is refused the write; the well-typed claims, and
/// a null claim elsewhere in the payload, still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_claims_of_the_wrong_type_grant_no_write() {
    let stack = Stack::start().await;
    let client = plain_client();
    let write = |token: String| {
        client
            .post(stack.envoy.plain_url(LOG_METRIC))
            .header("authorization", bearer(&token))
            .body("{}")
            .send()
    };
    let signed = |claims: serde_json::Value| {
        let mut o = opts("user_typed");
        o.scopes = Vec::new();
        o.extra = claims.as_object().expect("claims").clone();
        jwt::mint(&signing_key(), &o)
    };
    for claims in [
        json!({"scope": null, "scopes": {"mlflow:write": false}}),
        json!({"scope": null, "scopes": {"mlflow:write": ""}}),
        json!({"scope": null, "scopes": {"mlflow:access": "no"}}),
        json!({"scope": ["x mlflow:write y"]}),
        json!({"scope": {"k": "x mlflow:write y"}}),
    ] {
        let resp = write(signed(claims.clone())).await.unwrap();
        let body =
            assert_refused(resp, 403, "Insufficient permissions", Some("mlflow:write")).await;
        assert_eq!(body["error_code"], "PERMISSION_DENIED", "{claims}");
    }
    for claims in [
        json!({"scope": null, "scopes": ["mlflow:read", "mlflow:write"], "email": null}),
        json!({"scope": "mlflow:read mlflow:write", "groups": [1, {"a": null}]}),
    ] {
        let got = echoed(write(signed(claims)).await.unwrap()).await;
        assert_eq!(got.header("x-user-id"), Some("user_typed"));
    }
    assert_eq!(stack.auth().total_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mlflow_client_works_with_a_dev_jwt() {
    let mlflow = Mlflow::start().await;
    let stack = Stack::start_with(StackOptions {
        upstream_port: Some(mlflow.port),
        ..StackOptions::default()
    })
    .await;
    let token = stack.mint("user_mlflow", &["mlflow:read", "mlflow:write"]);
    let out = run_client_flow(
        &["full", "jwt"],
        &[
            ("MLFLOW_TRACKING_URI", stack.envoy.plain_url("/api/mlflow")),
            ("MLFLOW_TRACKING_TOKEN", token),
        ],
    )
    .await;
    let out = &out.json;
    assert_eq!(out["status"], "FINISHED", "{out}");
    assert_eq!(out["metrics"]["loss"], 0.3, "{out}");
    assert_eq!(out["artifacts"], json!(["notes.txt"]), "{out}");
    assert_eq!(out["artifact_roundtrip"], true, "{out}");
    assert_eq!(stack.auth().total_calls(), 0, "no callout for a JWT");

    // Read-only user: reads work, log_metric is refused by the filter.
    let run_id = out["run_id"].as_str().unwrap().to_owned();
    let readonly = run_client_flow(
        &["readonly", &run_id],
        &[
            ("MLFLOW_TRACKING_URI", stack.envoy.plain_url("/api/mlflow")),
            (
                "MLFLOW_TRACKING_TOKEN",
                stack.mint("user_ro", &["mlflow:read"]),
            ),
        ],
    )
    .await;
    let out = &readonly.json;
    assert_eq!(out["read_ok"], true, "{out}");
    assert_eq!(out["write_status"], 403, "{out}");
}
