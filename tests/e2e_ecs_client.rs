//! The internal path end to end as deployed: the application's plain HTTP call → the
//! caller's egress sidecar (envoy/ecs/client-sidecar.yaml), which originates mTLS to
//! mlflow.hokusai-development.local → the MLflow sidecar (envoy/ecs/envoy.yaml) → the filter's
//! internal path → MLflow (the echo upstream). Plus the ALB listener's external path, with
//! its callout over TLS to "auth.hokus.ai", the health checks ECS and the ALB use, and the
//! real MLflow client against a real MLflow behind both sidecars.

mod e2e;

use std::process::Command;

use e2e::clients::{bearer, echoed, plain_client, INTERNAL_IDENTITY, READWRITE_KEY};
use e2e::ecs::*;
use e2e::mlflow::{run_client_flow, Mlflow};
use e2e::paths::{self, TempDir};
use e2e::pki::{Ca, Pair};

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";

fn dev_client_secrets() -> Secrets {
    Secrets::client(&Pair::dev("client"), &[&paths::cert("ca.crt")])
}

fn healthcheck(port: u16) -> bool {
    Command::new("bash")
        .arg(entrypoint())
        .args(["healthcheck", &port.to_string()])
        .output()
        .expect("run entrypoint.sh healthcheck")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_calls_plain_http_and_takes_the_internal_path_without_an_auth_call() {
    let stack = EcsStack::start_dev(None).await;
    let client = ClientSidecar::start(stack.ports.mtls, &dev_client_secrets()).await;
    let app = plain_client();

    // A read, as the application would make it: plain HTTP to loopback, no credentials.
    let got = echoed(app.get(client.url(SEARCH)).send().await.unwrap()).await;
    assert_eq!(got.path, SEARCH);
    assert_eq!(got.header("x-auth-path"), Some("internal"));
    assert_eq!(got.header("x-auth-method"), Some("mtls"));
    assert_eq!(got.header("x-auth-identity"), Some(INTERNAL_IDENTITY));
    assert_eq!(got.header("x-user-id"), Some("internal_service"));
    let xfcc = got
        .header("x-forwarded-client-cert")
        .expect("the MLflow sidecar sets XFCC for the verified peer");
    assert!(xfcc.contains(&format!("URI={INTERNAL_IDENTITY}")), "{xfcc}");
    // MLflow sees the Host its guard accepts; the name the caller used is kept aside.
    assert_eq!(got.header("host"), Some("localhost"));
    assert_eq!(got.header("x-envoy-original-host"), Some(SERVER_NAME));

    // A write carrying the end user's id, which internal callers forward.
    let resp = app
        .post(client.url("/api/2.0/mlflow/runs/create"))
        .header("x-user-id", "alice")
        .header("x-auth-path", "external")
        .body("{}")
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.header("x-user-id"), Some("alice"));
    assert_eq!(got.header_all("x-auth-path"), ["internal"]);

    // Neither the dev auth service nor Envoy's auth cluster saw a call.
    assert_eq!(stack.auth.validate_calls(), 0);
    assert_eq!(stack.auth_cluster_requests().await, 0);
    // Both calls were new TLS sessions or reused ones, but all over the mTLS listener.
    assert!(
        stack
            .sidecar
            .stat(&format!(
                "listener.127.0.0.1_{}.ssl.handshake",
                stack.ports.mtls
            ))
            .await
            >= 1
    );

    // The counter is live: an external call through the ALB listener does reach the auth
    // service, over TLS with SNI auth.hokus.ai (the TLS front has no other filter chain),
    // and the client address sent along is the one the ALB appended to x-forwarded-for.
    let resp = app
        .get(stack.alb_url(SEARCH))
        .header("authorization", bearer(READWRITE_KEY))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.header("x-auth-path"), Some("external"));
    assert_eq!(got.header("x-forwarded-client-cert"), None);
    assert_eq!(stack.auth.validate_calls(), 1);
    let call = stack.auth.last_validate_request().expect("a validate call");
    assert_eq!(call.header("host"), Some(AUTH_HOST));
    assert_eq!(
        call.header("authorization"),
        Some(bearer(e2e::stack::SERVICE_TOKEN).as_str()),
        "the service token reached the VM through the entrypoint's exec"
    );
    let body = call.body.expect("JSON body");
    assert_eq!(body["client_ip"], "203.0.113.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_route_and_container_health_checks() {
    let stack = EcsStack::start_dev(None).await;
    let client = ClientSidecar::start(stack.ports.mtls, &dev_client_secrets()).await;

    // The ALB's target-group check: no key, through the filter to MLflow's /health.
    let resp = plain_client()
        .get(stack.alb_url("/health"))
        .header("x-auth-path", "internal")
        .send()
        .await
        .unwrap();
    let got = echoed(resp).await;
    assert_eq!(got.path, "/health");
    assert_eq!(
        got.header("x-auth-path"),
        None,
        "spoofed headers are stripped"
    );
    assert_eq!(stack.auth.validate_calls(), 0);

    // The ECS container checks: the entrypoint's healthcheck against each admin port.
    assert!(healthcheck(stack.sidecar.admin_port));
    assert!(healthcheck(client.envoy.admin_port));
    let nobody = paths::free_ports::<1>()[0];
    assert!(!healthcheck(nobody), "nothing listening must be unhealthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sidecar_refuses_a_server_without_the_mlflow_name() {
    // A server certificate from the trusted CA, but for another name: the client sidecar's
    // SAN check must refuse it, and no request reaches MLflow.
    let pki = TempDir::new("ecs-wrong-name");
    let other = Ca::dev(pki.path()).server(
        "other",
        "other.hokusai-development.local",
        &["other.hokusai-development.local"],
    );
    let stack = EcsStack::start(&Secrets::server(&other, &[&paths::cert("ca.crt")])).await;
    let client = ClientSidecar::start(stack.ports.mtls, &dev_client_secrets()).await;

    let resp = plain_client().get(client.url(SEARCH)).send().await.unwrap();
    assert_eq!(resp.status(), 503, "{:?}", resp.text().await);
    assert!(
        client
            .envoy
            .stat("cluster.mlflow_internal.ssl.fail_verify_san")
            .await
            >= 1,
        "refused for the name, not for something else"
    );
    assert_eq!(
        stack.sidecar.stat("cluster.mlflow.upstream_rq_total").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_client_over_plain_http_through_both_sidecars() {
    // MLflow as the task runs it: loopback only, default Host guard, no --allowed-hosts;
    // artifacts proxied, so uploads and downloads stream through both sidecars.
    let mlflow = Mlflow::start().await;
    let stack = EcsStack::start_dev(Some(mlflow.port)).await;
    let client = ClientSidecar::start(stack.ports.mtls, &dev_client_secrets()).await;

    // The application's whole configuration: a plain-HTTP tracking URI. No token, no
    // certificate paths.
    let out = run_client_flow(&["full", "ecs"], &[("MLFLOW_TRACKING_URI", client.url(""))])
        .await
        .json;
    assert_eq!(out["status"], "FINISHED", "{out}");
    assert_eq!(out["metrics"]["loss"], 0.3, "{out}");
    assert_eq!(out["artifacts"], serde_json::json!(["notes.txt"]), "{out}");
    assert_eq!(out["artifact_roundtrip"], true, "{out}");
    assert!(
        out["artifact_uri"]
            .as_str()
            .unwrap_or_default()
            .starts_with("mlflow-artifacts:"),
        "{out}"
    );
    let stored = mlflow
        .artifacts_dir()
        .join(out["experiment_id"].as_str().unwrap())
        .join(out["run_id"].as_str().unwrap())
        .join("artifacts/notes.txt");
    assert!(stored.exists(), "artifact not at {}", stored.display());
    assert_eq!(
        stack.auth.validate_calls(),
        0,
        "all of it on the internal path"
    );
    assert_eq!(stack.auth_cluster_requests().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alb_listener_verifies_user_jwts_with_the_fetched_jwks() {
    let stack = EcsStack::start_dev(None).await;
    // jwt_authn fetches the JWKS from "auth.hokus.ai" in the background (fast_listener);
    // wait for that event, bounded, before the first token.
    let fetched = "http.hokusai_alb.jwt_authn.jwks_fetch_success";
    for _ in 0..100 {
        if stack.sidecar.stat(fetched).await >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        stack.sidecar.stat(fetched).await >= 1,
        "{}",
        stack.sidecar.log()
    );
    let login = e2e::stack::dev_login();
    let app = plain_client();

    let token = login.mint("user_123", &["mlflow:read"]);
    let got = echoed(
        app.get(stack.alb_url(SEARCH))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.header("x-auth-method"), Some("jwt"));
    assert_eq!(got.header("x-user-id"), Some("user_123"));

    // Signed by another key: refused by Envoy with the contract's body, no callout.
    let other = hokusai_devstack::DevLogin::new(hokusai_devstack::JwtKey::generate());
    let forged = other.mint("user_123", &["mlflow:read"]);
    let resp = app
        .get(stack.alb_url(SEARCH))
        .header("authorization", format!("Bearer {forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({
            "detail": "Invalid or expired token",
            "error_code": "UNAUTHENTICATED",
            "message": "Invalid or expired token",
        })
    );
    assert_eq!(stack.auth.validate_calls(), 0);
    assert_eq!(
        stack.auth_cluster_requests().await,
        0,
        "the JWKS has its own cluster"
    );
}

/// The sign-in on the ALB listener: the browser is sent to the login service's form with a
/// callback on the public name it used and the scheme the ALB saw (`x-forwarded-proto`),
/// and API clients on the same listener are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alb_listener_signs_browsers_in_at_the_login_service_over_https() {
    let stack = EcsStack::start_dev(None).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(stack.alb_url("/mlflow/"))
        .header("host", "mlflow.hokus.ai")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("https://{AUTH_HOST}/oauth2/authorize?")),
        "{location}"
    );
    assert!(
        location
            .contains("redirect_uri=https%3A%2F%2Fmlflow.hokus.ai%2Fmlflow%2Foauth2%2Fcallback"),
        "the callback the login service must have registered: {location}"
    );
    for line in resp.headers().get_all("set-cookie") {
        let line = line.to_str().unwrap();
        assert!(
            line.contains("secure") && line.contains("HttpOnly"),
            "{line}"
        );
    }
    // An API key on the same listener never meets the sign-in.
    let resp = client
        .get(stack.alb_url("/mlflow/api/2.0/mlflow/experiments/search"))
        .header("authorization", bearer(READWRITE_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
