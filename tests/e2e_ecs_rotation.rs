//! Certificate rotation without a restart: the ECS sidecar (envoy/ecs/envoy.yaml) reads its
//! server certificate and CA bundle through file-based SDS from a watched directory; a new
//! set written there by the entrypoint's `write-certs` (as a rotation job would) applies to
//! new handshakes while the same Envoy process keeps running.

mod e2e;

use std::path::Path;

use e2e::clients::{echoed, INTERNAL_IDENTITY};
use e2e::ecs::*;
use e2e::paths::{self, TempDir};
use e2e::pki::{serial_and_subject, Ca, Pair};

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";

/// A fresh handshake (no client certificate) and the certificate the server presented.
async fn served(stack: &EcsStack, trust: &[&Path]) -> Result<Vec<u8>, String> {
    let resp = mtls_client(trust, None, stack.mtls_addr())
        .get(stack.mtls_url("/health"))
        .send()
        .await
        .map_err(|e| format!("handshake or request failed: {e:?}"))?;
    Ok(served_cert(&resp))
}

/// A fresh handshake presenting `client`; Ok(x-auth-path) when the request got through.
async fn call_as(stack: &EcsStack, trust: &[&Path], client: &Pair) -> Result<String, String> {
    let resp = mtls_client(trust, Some(client), stack.mtls_addr())
        .get(stack.mtls_url(SEARCH))
        .send()
        .await
        .map_err(|e| format!("refused: {e:?}"))?;
    let got = echoed(resp).await;
    Ok(got.header("x-auth-path").unwrap_or_default().to_owned())
}

/// Polls until new handshakes present `want`; prints its serial and subject.
async fn await_served(stack: &EcsStack, trust: &[&Path], want: &Pair) {
    let want = want.der();
    poll(
        "new handshakes present the new server certificate",
        || async {
            let der = served(stack, trust).await?;
            if der == want {
                Ok(())
            } else {
                Err(format!("still {}", describe(&der)))
            }
        },
    )
    .await;
    eprintln!("rotation: now serving {}", describe(&want));
}

fn describe(der: &[u8]) -> String {
    let (serial, subject) = serial_and_subject(der);
    format!("serial {serial}, subject {subject}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_server_certificate_and_ca_bundle_apply_without_a_restart() {
    let pki = TempDir::new("rotation-pki");
    let ca1 = paths::cert("ca.crt");
    let server1 = Pair::dev("server");
    let client1 = Pair::dev("client");
    // The next generation: a new CA, a server certificate and a client certificate from it,
    // same names and identity as today's.
    let ca2 = Ca::new(pki.path(), "ca2", "Hokusai MLflow CA 2");
    let server2 = ca2.server("server2", SERVER_NAME, &[SERVER_NAME, "localhost"]);
    let client2 = ca2.client("client2", "hokusai-api-client", INTERNAL_IDENTITY);
    let trust_both: &[&Path] = &[&ca1, &ca2.pair.cert];

    let mut stack = EcsStack::start(&Secrets::server(&server1, &[&ca1])).await;
    let pid = stack.sidecar.pid();
    let verify_failures = format!(
        "listener.127.0.0.1_{}.ssl.fail_verify_error",
        stack.ports.mtls
    );

    // Before: today's server certificate; today's client passes, the new CA is unknown.
    let der = served(&stack, trust_both).await.expect("handshake");
    assert_eq!(der, server1.der(), "served: {}", describe(&der));
    assert_eq!(
        call_as(&stack, trust_both, &client1).await.as_deref(),
        Ok("internal")
    );
    assert!(
        call_as(&stack, trust_both, &client2).await.is_err(),
        "a client of the not-yet-trusted CA must be refused"
    );
    assert_eq!(stack.sidecar.stat(&verify_failures).await, 1);

    // Each step below is what a rotation job does: the full set, written by the
    // entrypoint's `write-certs`, swapped in atomically. Each changes one secret only, so
    // each proves that secret's own directory watch.

    // Step 1: a new server certificate from the same CA; the bundle is unchanged.
    let server1b = Ca::dev(pki.path()).server("server1b", SERVER_NAME, &[SERVER_NAME, "localhost"]);
    write_certs(
        &stack.layout.tls_dir(),
        &Secrets::server(&server1b, &[&ca1]),
    );
    await_served(&stack, trust_both, &server1b).await;

    // Step 2: the bundle gains the new CA (old + new); a client of the new CA gets in.
    write_certs(
        &stack.layout.tls_dir(),
        &Secrets::server(&server1b, &[&ca1, &ca2.pair.cert]),
    );
    let path = poll("a client of the new CA is accepted", || {
        call_as(&stack, trust_both, &client2)
    })
    .await;
    assert_eq!(path, "internal", "same identity, so the same internal path");
    assert_eq!(
        call_as(&stack, trust_both, &client1).await.as_deref(),
        Ok("internal"),
        "during the overlap both CAs are trusted"
    );

    // Step 3: the server certificate from the new CA.
    write_certs(
        &stack.layout.tls_dir(),
        &Secrets::server(&server2, &[&ca1, &ca2.pair.cert]),
    );
    await_served(&stack, &[&ca2.pair.cert], &server2).await;
    let (_, subject) = serial_and_subject(&server2.der());
    assert_eq!(subject, format!("CN={SERVER_NAME}"));

    // Step 4: the old CA leaves the bundle; its clients are refused from then on.
    write_certs(
        &stack.layout.tls_dir(),
        &Secrets::server(&server2, &[&ca2.pair.cert]),
    );
    poll("a client of the old CA is refused", || async {
        match call_as(&stack, trust_both, &client1).await {
            Err(_) => Ok(()),
            Ok(path) => Err(format!("still accepted ({path})")),
        }
    })
    .await;
    assert_eq!(
        call_as(&stack, trust_both, &client2).await.as_deref(),
        Ok("internal")
    );
    assert!(stack.sidecar.stat(&verify_failures).await >= 2);

    // The same process all along, and Envoy saw no failed reload on the way.
    stack.sidecar.assert_running();
    assert_eq!(stack.sidecar.pid(), pid);
    for secret in ["server_cert", "ca_bundle"] {
        assert_eq!(
            stack
                .sidecar
                .stat(&format!("sds.{secret}.key_rotation_failed"))
                .await,
            0,
            "{secret}: a rotation was rejected\n{}",
            stack.sidecar.log()
        );
    }
    assert_eq!(stack.auth.validate_calls(), 0, "mTLS calls need no callout");
}
