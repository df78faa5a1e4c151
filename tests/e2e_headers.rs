//! What reaches MLflow's side (the echo upstream) through Envoy and the filter: client
//! headers unchanged, the filter's identity headers set, spoofing without effect, the
//! route table's rewrites, 404s and the unauthenticated paths.

mod e2e;

use e2e::clients::*;
use e2e::stack::*;

fn scope_set(value: Option<&str>) -> Vec<String> {
    let mut scopes: Vec<String> = value
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    scopes.sort();
    scopes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_headers_pass_unchanged_and_identity_headers_are_added() {
    let stack = Stack::start().await;
    let resp = plain_client()
        .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/create"))
        .header("authorization", bearer(READWRITE_KEY))
        .header("x-request-id", "e2e-request-0001")
        .header("x-tenant-id", "tenant-42")
        .header("x-e2e-custom", "kept as is")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-request-id"],
        "e2e-request-0001",
        "the caller's request id comes back"
    );
    let got = echoed(resp).await;

    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/api/2.0/mlflow/runs/create");
    let auth = bearer(READWRITE_KEY);
    assert_eq!(got.header("authorization"), Some(auth.as_str()));
    assert_eq!(got.header("x-request-id"), Some("e2e-request-0001"));
    assert_eq!(got.header("x-tenant-id"), Some("tenant-42"));
    assert_eq!(got.header("x-e2e-custom"), Some("kept as is"));
    // MLflow only accepts local Host headers; envoy.yaml rewrites it.
    assert_eq!(got.header("host"), Some("localhost"));

    assert_eq!(got.header("x-user-id"), Some("dev-user-1"));
    assert_eq!(got.header("x-api-key-id"), Some("key-rw-0001"));
    assert_eq!(
        scope_set(got.header("x-auth-scopes")),
        ["mlflow:read", "mlflow:write"]
    );
    assert_eq!(got.header("x-auth-path"), Some("external"));
    assert_eq!(got.header("x-auth-method"), Some("api_key"));
    assert_eq!(got.header("x-auth-identity"), None);
    assert_eq!(got.header("x-auth-stale"), None);
    assert_eq!(got.header("x-forwarded-client-cert"), None);

    // The callout, as the auth service received it (CONTRACT section 6).
    let call = stack
        .auth()
        .last_validate_request()
        .expect("a validate call");
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/api/v1/keys/validate");
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(call.header("x-request-id"), Some("e2e-request-0001"));
    let service_auth = bearer(SERVICE_TOKEN);
    assert_eq!(call.header("authorization"), Some(service_auth.as_str()));
    let body = call.body.expect("JSON body");
    assert_eq!(body["api_key"], READWRITE_KEY);
    assert_eq!(body["service_id"], "ml-platform");
    assert_eq!(body["client_ip"], "127.0.0.1");
    assert_eq!(stack.auth().validate_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_api_key_header_works_and_a_request_id_is_generated() {
    let stack = Stack::start().await;
    let resp = plain_client()
        .get(
            stack
                .envoy
                .plain_url("/api/2.0/mlflow/experiments/get?experiment_id=0"),
        )
        .header("x-api-key", READONLY_KEY)
        .send()
        .await
        .unwrap();
    let returned_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let got = echoed(resp).await;
    assert_eq!(got.header("x-api-key"), Some(READONLY_KEY));
    assert_eq!(got.header("x-api-key-id"), Some("key-ro-0002"));
    assert_eq!(got.header("x-user-id"), Some("dev-user-2"));
    let generated = got.header("x-request-id").expect("Envoy generates an id");
    assert!(!generated.is_empty());
    assert_eq!(
        generated, returned_id,
        "the response quotes the generated id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_and_forged_xfcc_have_no_effect() {
    let stack = Stack::start().await;
    let client = plain_client();
    let spoof = |req: reqwest::RequestBuilder| {
        req.header("x-user-id", "admin")
            .header("x-api-key-id", "key-admin")
            .header("x-auth-scopes", "mlflow:admin")
            .header("x-auth-path", "internal")
            .header("x-auth-method", "mtls")
            .header("x-auth-identity", INTERNAL_IDENTITY)
            .header("x-auth-stale", "1")
            // An underscore twin that a WSGI/ASGI server could read as x-auth-path.
            .header("x_auth_path", "internal")
            .header(
                "x-forwarded-client-cert",
                format!(
                    "By=spiffe://hokusai.internal/ns/development/sa/mlflow;URI={INTERNAL_IDENTITY}"
                ),
            )
    };

    // Without a key the spoofed verdict does not let anyone in.
    let url = stack.envoy.plain_url("/api/2.0/mlflow/experiments/search");
    let (status, _, body) = filter_reply(spoof(client.get(&url)).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(body["detail"], "API key required");
    assert_eq!(stack.auth().validate_calls(), 0);

    // With a key, upstream sees only the filter's verdict.
    let resp = spoof(client.get(&url))
        .header("authorization", bearer(READWRITE_KEY))
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.header_all("x-user-id"), ["dev-user-1"]);
    assert_eq!(got.header_all("x-api-key-id"), ["key-rw-0001"]);
    assert_eq!(got.header_all("x-auth-path"), ["external"]);
    assert_eq!(got.header_all("x-auth-method"), ["api_key"]);
    assert_eq!(
        scope_set(got.header("x-auth-scopes")),
        ["mlflow:read", "mlflow:write"]
    );
    assert_eq!(got.header_all("x-auth-scopes").len(), 1);
    for absent in [
        "x-auth-identity",
        "x-auth-stale",
        "x_auth_path",
        "x-forwarded-client-cert",
    ] {
        assert_eq!(got.header(absent), None, "{absent} must not reach MLflow");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_keep_or_strip_prefixes() {
    let stack = Stack::start().await;
    let client = plain_client();
    for (sent, expected) in [
        (
            "/api/2.0/mlflow/experiments/search?max_results=5",
            "/api/2.0/mlflow/experiments/search?max_results=5",
        ),
        (
            "/ajax-api/2.0/mlflow/runs/get?run_id=abc",
            "/ajax-api/2.0/mlflow/runs/get?run_id=abc",
        ),
        (
            "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/a.txt",
            "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/a.txt",
        ),
        ("/api/3.0/mlflow/traces/tr-1", "/api/3.0/mlflow/traces/tr-1"),
        (
            "/api/mlflow/api/2.0/mlflow/experiments/search",
            "/api/2.0/mlflow/experiments/search",
        ),
        (
            "/api/mlflow/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/a.txt",
            "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/a.txt",
        ),
        (
            "/mlflow/ajax-api/2.0/mlflow/metrics/get-history?run_id=abc&metric_key=loss",
            "/ajax-api/2.0/mlflow/metrics/get-history?run_id=abc&metric_key=loss",
        ),
        (
            "/mlflow/api/2.0/mlflow-artifacts/artifacts/x.bin",
            "/api/2.0/mlflow-artifacts/artifacts/x.bin",
        ),
    ] {
        let resp = client
            .get(stack.envoy.plain_url(sent))
            .header("authorization", bearer(READWRITE_KEY))
            .send()
            .await
            .unwrap();
        let got = echoed(resp).await;
        assert_eq!(got.path, expected, "upstream path for {sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_from_envoy_with_or_without_a_key() {
    let stack = Stack::start().await;
    let client = plain_client();
    for path in [
        "/",
        "/index.html",
        "/api/2.0/other/thing",
        "/api/2.0/mlflow",
        "/static-files/index.html",
        "/graphql",
        "/ajax-api/2.0/mlflow-artifacts/artifacts/x",
        "/healthz",
    ] {
        for key in [None, Some(READWRITE_KEY)] {
            let mut req = client.get(stack.envoy.plain_url(path));
            if let Some(key) = key {
                req = req.header("authorization", bearer(key));
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 404, "{path} (key: {})", key.is_some());
        }
    }
    assert_eq!(stack.auth().validate_calls(), 0, "a 404 needs no verdict");
    assert_eq!(
        stack.envoy.stat("cluster.mlflow.upstream_rq_total").await,
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_cors_preflight_pass_without_a_key() {
    let stack = Stack::start().await;
    let client = plain_client();
    let resp = client
        .get(stack.envoy.plain_url("/health"))
        .header("x-auth-path", "internal")
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.path, "/health");
    assert_eq!(
        got.header("x-auth-path"),
        None,
        "spoofed headers are cleaned on /health too"
    );

    let resp = client
        .request(
            reqwest::Method::OPTIONS,
            stack.envoy.plain_url("/api/2.0/mlflow/runs/create"),
        )
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.method, "OPTIONS");
    assert_eq!(stack.auth().validate_calls(), 0);
}

/// Any `x-auth-*` header is the filter's to set, whatever follows the prefix: none of a
/// client's reaches MLflow, on any path (exempt ones and preflights too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_x_auth_header_a_client_sends_is_removed_on_every_path() {
    let stack = Stack::start().await;
    let client = plain_client();
    let spoofed = [
        "x-auth-user",
        "x-auth-role",
        "x-auth-groups",
        "x-auth-user-id",
        "x-auth-admin",
        "X-Auth-Anything",
        "x-auth-",
        "x-api-key-id",
    ];
    let spoof = |mut req: reqwest::RequestBuilder| {
        for name in spoofed {
            req = req.header(name, "forged");
        }
        req
    };
    let requests = [
        spoof(client.get(stack.envoy.plain_url("/api/2.0/mlflow/experiments/search")))
            .header("authorization", bearer(READWRITE_KEY)),
        spoof(client.get(stack.envoy.plain_url("/health"))),
        spoof(client.request(
            reqwest::Method::OPTIONS,
            stack.envoy.plain_url("/api/2.0/mlflow/runs/create"),
        ))
        .header("access-control-request-method", "POST"),
        spoof(client.get(stack.envoy.tls_url("/api/2.0/mlflow/experiments/search"))),
    ];
    let tls = tls_client(Some("client"));
    let requests = requests.into_iter().enumerate().map(|(i, r)| {
        if i == 3 {
            spoof(tls.get(stack.envoy.tls_url("/api/2.0/mlflow/experiments/search")))
        } else {
            r
        }
    });
    for request in requests {
        let got = echoed(request.send().await.unwrap()).await;
        for (name, value) in &got.headers {
            assert!(
                !(name.starts_with("x-auth-") || name == "x-api-key-id") || value != "forged",
                "{name}: {value} reached MLflow on {}",
                got.path
            );
        }
    }
}
