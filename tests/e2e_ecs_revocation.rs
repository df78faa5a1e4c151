//! Revocation on the ECS sidecars: the CRL travels with the CA bundle through file-based
//! SDS (envoy/ecs/sds/ca-bundle.yaml), so a new CRL written by the entrypoint's
//! `write-certs` (one rename into the watched directory) applies to new handshakes while
//! the same Envoy keeps running. Both directions: the MLflow sidecar refuses a revoked
//! client certificate, the callers' sidecar a revoked server certificate.

mod e2e;

use std::path::Path;

use e2e::clients::{echoed, plain_client, INTERNAL_IDENTITY};
use e2e::ecs::*;
use e2e::paths::{self, TempDir};
use e2e::pki::{Ca, Pair};

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";

/// A fresh handshake presenting `client`: Ok(x-auth-path) when the request got through,
/// Err when the connection failed.
async fn call_as(stack: &EcsStack, client: &Pair) -> Result<String, String> {
    let resp = mtls_client(&[&paths::cert("ca.crt")], Some(client), stack.mtls_addr())
        .get(stack.mtls_url(SEARCH))
        .send()
        .await
        .map_err(|e| format!("refused: {e:?}"))?;
    let got = echoed(resp).await;
    Ok(got.header("x-auth-path").unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_clients_are_refused_and_a_new_crl_applies_without_a_restart() {
    let pki = TempDir::new("revocation-pki");
    // Three services of the dev CA with the allow-listed identity: one whose key leaked
    // before the task started, one whose key leaks later, one that stays good.
    let ca = Ca::dev(pki.path());
    let leaked = ca.client("leaked", "hokusai-api-client", INTERNAL_IDENTITY);
    let leaks_later = ca.client("leaks-later", "hokusai-api-client", INTERNAL_IDENTITY);
    let good = ca.client("good", "hokusai-api-client", INTERNAL_IDENTITY);
    let first_crl = ca.crl("ca-first", &[&leaked]);

    let secrets =
        Secrets::server(&Pair::dev("server"), &[&paths::cert("ca.crt")]).with_crls(&[&first_crl]);
    let mut stack = EcsStack::start(&secrets).await;
    let pid = stack.sidecar.pid();
    let listener = format!("listener.127.0.0.1_{}", stack.ports.mtls);
    let verify_errors = format!("{listener}.ssl.fail_verify_error");

    // The revoked certificate never completes a handshake; the others take the internal
    // path. Envoy counts the refusal as a failed verification.
    let refused = call_as(&stack, &leaked).await;
    assert!(
        refused.is_err(),
        "a revoked certificate got through: {refused:?}"
    );
    assert_eq!(stack.sidecar.stat(&verify_errors).await, 1);
    assert_eq!(
        call_as(&stack, &leaks_later).await.as_deref(),
        Ok("internal")
    );
    assert_eq!(call_as(&stack, &good).await.as_deref(), Ok("internal"));
    let updates = stack
        .sidecar
        .stat(&format!(
            "{listener}.server_ssl_socket_factory.ssl_context_update_by_sds"
        ))
        .await;

    // A second key leaks: the next CRL revokes both, written the way a rotation job does
    // (the full set, renamed into the watched directory in one step).
    let second_crl = ca.crl("ca-second", &[&leaked, &leaks_later]);
    write_certs(&stack.layout.tls_dir(), &secrets.with_crls(&[&second_crl]));
    poll("the newly revoked certificate is refused", || async {
        match call_as(&stack, &leaks_later).await {
            Err(_) => Ok(()),
            Ok(path) => Err(format!("still accepted ({path})")),
        }
    })
    .await;
    assert!(call_as(&stack, &leaked).await.is_err(), "still revoked");
    assert_eq!(
        call_as(&stack, &good).await.as_deref(),
        Ok("internal"),
        "an unrevoked certificate still works"
    );

    // The same process took the new CRL as a context update, not a failed reload.
    stack.sidecar.assert_running();
    assert_eq!(stack.sidecar.pid(), pid);
    assert!(
        stack
            .sidecar
            .stat(&format!(
                "{listener}.server_ssl_socket_factory.ssl_context_update_by_sds"
            ))
            .await
            > updates
    );
    assert_eq!(stack.sidecar.stat(&verify_errors).await, 3);
    assert_eq!(
        stack
            .sidecar
            .stat("sds.ca_bundle.key_rotation_failed")
            .await,
        0,
        "{}",
        stack.sidecar.log()
    );
    assert_eq!(stack.auth.validate_calls(), 0, "mTLS calls need no callout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_sidecar_refuses_a_revoked_server_certificate() {
    let pki = TempDir::new("revocation-server");
    let ca = Ca::dev(pki.path());
    let server = ca.server("server", SERVER_NAME, &[SERVER_NAME]);
    let stack = EcsStack::start(&Secrets::server(&server, &[&paths::cert("ca.crt")])).await;
    // The caller's copy of the CRL already lists the server's certificate (its key leaked,
    // the MLflow service has not been redeployed yet): the caller must not talk to it.
    let crl = ca.crl("ca-server-revoked", &[&server]);
    let caller = ClientSidecar::start(
        stack.ports.mtls,
        &Secrets::client(&Pair::dev("client"), &[&paths::cert("ca.crt")]).with_crls(&[&crl]),
    )
    .await;

    let resp = plain_client().get(caller.url(SEARCH)).send().await.unwrap();
    assert_eq!(resp.status(), 503, "{:?}", resp.text().await);
    assert!(
        caller
            .envoy
            .stat("cluster.mlflow_internal.ssl.fail_verify_error")
            .await
            >= 1,
        "refused for the certificate, not for something else"
    );
    assert_eq!(
        stack.sidecar.stat("cluster.mlflow.upstream_rq_total").await,
        0,
        "nothing reached MLflow"
    );
}

/// The entrypoint writes the CRL next to the bundle, where the SDS resource points.
#[test]
fn the_crl_lands_next_to_the_bundle_that_the_sds_resource_names() {
    let sds = yaml_to_json(&ecs_dir().join("sds/ca-bundle.yaml"));
    let context = &sds["resources"][0]["validation_context"];
    assert_eq!(
        context["crl"]["filename"],
        format!("{IMAGE_TLS_DIR}/ca.crl")
    );
    assert!(
        context.get("only_verify_leaf_cert_crl").is_none(),
        "every CA of a chain is checked against its CRL (docs/deployment.md)"
    );
    let dir = TempDir::new("revocation-layout");
    let tls = dir.join("tls");
    write_certs(
        &tls,
        &Secrets::server(&Pair::dev("server"), &[&paths::cert("ca.crt")]),
    );
    assert_eq!(
        std::fs::read_to_string(tls.join("ca.crl")).unwrap(),
        std::fs::read_to_string(paths::cert("ca.crl")).unwrap()
    );
    assert_eq!(
        std::fs::read_link(tls.join("ca.crl")).unwrap(),
        Path::new("..data/ca.crl")
    );
}
