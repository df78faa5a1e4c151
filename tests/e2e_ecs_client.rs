//! The internal path end to end as deployed: the application's plain HTTP call → the
//! caller's egress sidecar (envoy/ecs/client-sidecar.yaml), which originates mTLS to
//! mlflow.hokusai-development.local → the MLflow sidecar (envoy/ecs/envoy.yaml) → the filter's
//! internal path → MLflow (the echo upstream). Plus the ALB listener's external path, with
//! its callout over TLS to "auth.hokus.ai", the health checks ECS and the ALB use, the
//! metrics the alerts and dashboard read, and the real MLflow client against a real MLflow
//! behind both sidecars.

mod e2e;

use std::time::Duration;

use e2e::clients::{bearer, echoed, plain_client, INTERNAL_IDENTITY, READWRITE_KEY};
use e2e::ecs::*;
use e2e::mlflow::{run_client_flow, Mlflow};
use e2e::paths::{self, TempDir};
use e2e::pki::{Ca, Pair};

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";

fn dev_client_secrets() -> Secrets {
    Secrets::client(&Pair::dev("client"), &[&paths::cert("ca.crt")])
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

    // The MLflow sidecar's ECS check: a real mTLS request through its TLS listener, to
    // /health and on to MLflow. One more handshake, and it carried a client certificate.
    let listener = format!("listener.127.0.0.1_{}", stack.ports.mtls);
    let handshakes = stack
        .sidecar
        .stat(&format!("{listener}.ssl.handshake"))
        .await;
    let without_cert = stack
        .sidecar
        .stat(&format!("{listener}.ssl.no_certificate"))
        .await;
    let upstream = stack.echo.as_ref().unwrap().requests();
    let (ok, said) = healthcheck_mtls(&stack.layout.tls_dir(), stack.ports.mtls);
    assert!(ok, "{said}");
    assert_eq!(
        stack
            .sidecar
            .stat(&format!("{listener}.ssl.handshake"))
            .await,
        handshakes + 1
    );
    assert_eq!(
        stack
            .sidecar
            .stat(&format!("{listener}.ssl.no_certificate"))
            .await,
        without_cert,
        "the check presents the sidecar's own certificate"
    );
    assert_eq!(stack.echo.as_ref().unwrap().requests(), upstream + 1);
    assert_eq!(stack.auth.validate_calls(), 0);
    // The callers' sidecar's check stays with its own admin: its health must not hang on
    // MLflow's (docs/deployment.md, "Health checks and start order").
    assert!(healthcheck_ready(client.envoy.admin_port));
    let nobody = paths::free_ports::<1>()[0];
    assert!(
        !healthcheck_ready(nobody),
        "nothing listening must be unhealthy"
    );
    assert!(!healthcheck_mtls(&stack.layout.tls_dir(), nobody).0);
}

/// An Envoy whose TLS listener has no certificate still reports ready (admin `/ready` is
/// 200: the old container check passed) while it refuses every TLS connection. The mTLS
/// health check fails, even with a good client identity of its own, and passes once the
/// certificate is there: same process, after a `write-certs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_health_check_fails_while_the_tls_listener_has_no_certificate() {
    // The MLflow sidecar given a caller's secrets by mistake: no server pair at all.
    let ca = paths::cert("ca.crt");
    let stack = EcsStack::start(&Secrets::client(&Pair::dev("client"), &[&ca])).await;
    let pid = stack.sidecar.pid();
    assert!(
        healthcheck_ready(stack.sidecar.admin_port),
        "Envoy says it is ready"
    );
    let (ok, said) = healthcheck_mtls(&stack.layout.tls_dir(), stack.ports.mtls);
    assert!(!ok, "passed without a server certificate: {said}");
    assert!(said.contains("no server.crt"), "{said}");

    // The check's own identity is not the problem: from a full set elsewhere, it fails too,
    // and so does a real caller, at the handshake.
    let elsewhere = TempDir::new("health-identity");
    write_certs(
        &elsewhere.join("tls"),
        &Secrets::server(&Pair::dev("server"), &[&ca]),
    );
    let (ok, said) = healthcheck_mtls(&elsewhere.join("tls"), stack.ports.mtls);
    assert!(!ok, "passed against a listener with no certificate: {said}");
    let caller = mtls_client(&[&ca], Some(&Pair::dev("client")), stack.mtls_addr())
        .get(stack.mtls_url("/health"))
        .send()
        .await;
    assert!(caller.is_err(), "{caller:?}");
    assert!(
        stack
            .sidecar
            .stat(&format!(
                "listener.127.0.0.1_{}.server_ssl_socket_factory.downstream_context_secrets_not_ready",
                stack.ports.mtls
            ))
            .await
            >= 2,
        "refused for want of a certificate"
    );

    // The server pair arrives (a rotation job, or the fixed secrets): the listener serves
    // again without a restart, and the check passes.
    write_certs(
        &stack.layout.tls_dir(),
        &Secrets::server(&Pair::dev("server"), &[&ca]),
    );
    let mut said = String::new();
    for _ in 0..100 {
        let (ok, out) = healthcheck_mtls(&stack.layout.tls_dir(), stack.ports.mtls);
        if ok {
            said.clear();
            break;
        }
        said = out;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        said.is_empty(),
        "still failing: {said}\n{}",
        stack.sidecar.log()
    );
    assert_eq!(stack.sidecar.pid(), pid);
}

/// Every Envoy metric of docs/observability/metrics.yml (what the alerts and the dashboard
/// may use) is on a live sidecar, with each label value listed there: the MLflow sidecar's
/// for the listener, the callers' for their cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_envoy_metric_the_alerts_and_dashboard_use_is_on_a_live_sidecar() {
    let stack = EcsStack::start_dev(None).await;
    let client = ClientSidecar::start(stack.ports.mtls, &dev_client_secrets()).await;
    // Traffic on both listeners and through the caller, so that latency histograms fill.
    let app = plain_client();
    echoed(app.get(client.url(SEARCH)).send().await.unwrap()).await;
    let external = app
        .get(stack.alb_url(SEARCH))
        .header("authorization", bearer(READWRITE_KEY));
    echoed(external.send().await.unwrap()).await;

    let spec = yaml_to_json(&paths::repo_root().join("docs/observability/metrics.yml"));
    let metrics = spec["envoy"].as_object().expect("an `envoy` section");
    // (series as Prometheus names it, label, value) that must appear.
    let mut wanted: Vec<(String, Option<(String, String)>)> = Vec::new();
    for (name, info) in metrics {
        let series = if info["type"] == "histogram" {
            format!("{name}_bucket")
        } else {
            name.clone()
        };
        wanted.push((series.clone(), None));
        if let Some(labels) = info["labels"].as_object() {
            for (label, values) in labels {
                for value in values.as_array().into_iter().flatten() {
                    let value = value.as_str().expect("label values are strings").to_owned();
                    wanted.push((series.clone(), Some((label.clone(), value))));
                }
            }
        }
    }
    assert!(wanted.len() > 20, "{wanted:?}");
    let present = |text: &str, (series, label): &(String, Option<(String, String)>)| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{series}{{")))
            .any(|l| match label {
                None => true,
                Some((k, v)) => l.contains(&format!("{k}=\"{v}\"")),
            })
    };
    // Histograms reach /stats/prometheus at Envoy's stats flush (every 5 s): bounded wait.
    let mut missing = Vec::new();
    for _ in 0..100 {
        let texts = [
            stack.sidecar.prometheus().await,
            client.envoy.prometheus().await,
        ];
        missing = wanted
            .iter()
            .filter(|w| !texts.iter().any(|t| present(t, w)))
            .collect::<Vec<_>>();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(missing.is_empty(), "not on a live sidecar: {missing:#?}");
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
        serde_json::json!({"detail": "Invalid or expired token"})
    );
    assert_eq!(stack.auth.validate_calls(), 0);
    assert_eq!(
        stack.auth_cluster_requests().await,
        0,
        "the JWKS has its own cluster"
    );
}
