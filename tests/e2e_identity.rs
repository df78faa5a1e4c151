//! The internal path's trust boundary, through real Envoy: a client certificate from the
//! trusted CA passes as an allow-listed service only when one of its own SANs is that
//! service's id exactly. Envoy 1.40 writes SANs into `x-forwarded-client-cert` unescaped,
//! so each certificate minted here reads, in that header's text, as if it also carried the
//! allow-listed id (`URI=notebook;URI=<id>`); each one must get the API-key path, and MLflow
//! must see none of its writes.

mod e2e;

use e2e::clients::*;
use e2e::mlflow::Mlflow;
use e2e::paths::TempDir;
use e2e::pki::{Ca, Pair};
use e2e::stack::*;

const NOTEBOOK: &str = "spiffe://hokusai.internal/ns/development/sa/notebook";
/// What means something in XFCC, and its field names.
const XFCC_SPECIALS: [&str; 10] = [
    ";", ",", "\"", "=", "URI=", "DNS=", "Cert=", "Hash=", "By=", "Subject=",
];

/// (what it poses with, certificate): URI SANs, DNS SANs and CNs holding the allow-listed
/// id next to XFCC syntax, signed by the dev CA.
fn posers(ca: &Ca) -> Vec<(String, Pair)> {
    let mut out = Vec::new();
    for (i, special) in XFCC_SPECIALS.iter().enumerate() {
        let id = INTERNAL_IDENTITY;
        for (j, uri) in [
            format!("{NOTEBOOK}{special}{id}"),
            format!("{NOTEBOOK};{special}{id}"),
        ]
        .iter()
        .enumerate()
        {
            let cert = ca.client_with_names(
                &format!("uri-{i}-{j}"),
                Some("hokusai-notebook"),
                &[uri],
                &[],
            );
            out.push((format!("URI SAN {uri}"), cert));
        }
        let dns = format!("notebook.local;{special}{id}");
        let cert = ca.client_with_names(&format!("dns-{i}"), None, &[NOTEBOOK], &[&dns]);
        out.push((format!("DNS SAN {dns}"), cert));
        // A CN holds 64 characters at most: the id and one special fit.
        let cn = format!("{special}{id}");
        let cert = ca.client_with_names(&format!("cn-{i}"), Some(&cn), &[NOTEBOOK], &[]);
        out.push((format!("CN {cn}"), cert));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_only_carries_the_listed_id_gets_the_key_path() {
    let stack = Stack::start().await;
    let dir = TempDir::new("posers");
    let ca = Ca::dev(dir.path());
    let posers = posers(&ca);
    for (what, cert) in &posers {
        let client = tls_client_with(cert.identity());
        let write = client
            .post(stack.envoy.tls_url("/api/2.0/mlflow/experiments/create"))
            .body(r#"{"name":"posed"}"#)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (status, _, body) = filter_reply(write).await;
        assert_eq!(
            (status, &body["detail"]),
            (401, &serde_json::json!("API key required")),
            "{what}"
        );
        // With a key it is an external caller like any other, with the key's identity.
        let read = client
            .get(stack.envoy.tls_url("/api/2.0/mlflow/experiments/search"))
            .header("authorization", bearer(READONLY_KEY))
            .send()
            .await
            .unwrap();
        let got = echoed(read).await;
        assert_eq!(got.header("x-auth-path"), Some("external"), "{what}");
        assert_eq!(got.header("x-auth-identity"), None, "{what}");
        assert_eq!(got.header("x-api-key-id"), Some("key-ro-0002"), "{what}");
    }
    let echo = stack.echo.as_ref().expect("echo upstream");
    assert_eq!(
        echo.requests(),
        posers.len() as u64,
        "only the keyed reads went upstream"
    );
    // The control: the same CA's certificate whose SAN is the id exactly, among others.
    let real = ca.client_with_names(
        "real",
        Some("x"),
        &[NOTEBOOK, INTERNAL_IDENTITY],
        &["a.local"],
    );
    let got = echoed(
        tls_client_with(real.identity())
            .post(stack.envoy.tls_url("/api/2.0/mlflow/experiments/create"))
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.header("x-auth-identity"), Some(INTERNAL_IDENTITY));
}

/// The attack the review ran, against real MLflow: no experiment created, no artifact
/// written, none deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posing_certificate_writes_nothing_to_mlflow() {
    let mlflow = Mlflow::start().await;
    let stack = Stack::start_with(StackOptions {
        upstream_port: Some(mlflow.port),
        ..StackOptions::default()
    })
    .await;
    let internal = tls_client(Some("client"));
    let url = |path: &str| stack.envoy.tls_url(path);
    let created: serde_json::Value = internal
        .post(url("/api/2.0/mlflow/experiments/create"))
        .json(&serde_json::json!({"name": "kept"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kept = created["experiment_id"]
        .as_str()
        .expect("experiment id")
        .to_owned();
    let artifact = format!("/api/2.0/mlflow-artifacts/artifacts/{kept}/notes.txt");
    let put = internal
        .put(url(&artifact))
        .body("original")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    let dir = TempDir::new("poser");
    let ca = Ca::dev(dir.path());
    let uri = format!("{NOTEBOOK};URI={INTERNAL_IDENTITY}");
    let poser = tls_client_with(
        ca.client_with_names("poser", Some("hokusai-notebook"), &[&uri], &[])
            .identity(),
    );
    let attempts = [
        poser
            .post(url("/api/2.0/mlflow/experiments/create"))
            .json(&serde_json::json!({"name": "posed"})),
        poser.put(url(&artifact)).body("overwritten"),
        poser
            .post(url("/api/2.0/mlflow/experiments/delete"))
            .json(&serde_json::json!({"experiment_id": kept})),
        poser.delete(url(&artifact)),
    ];
    for attempt in attempts {
        let (status, _, body) = filter_reply(attempt.send().await.unwrap()).await;
        assert_eq!(
            (status, body["detail"].as_str()),
            (401, Some("API key required"))
        );
    }
    // MLflow, asked directly: as it was.
    let direct = plain_client();
    let search: serde_json::Value = direct
        .get(format!(
            "http://127.0.0.1:{}/api/2.0/mlflow/experiments/search?max_results=100",
            mlflow.port
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = search["experiments"]
        .as_array()
        .expect("experiments")
        .iter()
        .filter(|e| e["lifecycle_stage"] == "active")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        names.contains(&"kept") && !names.contains(&"posed"),
        "{names:?}"
    );
    let body = direct
        .get(format!("http://127.0.0.1:{}{artifact}", mlflow.port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "original");
}
