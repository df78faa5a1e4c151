//! The real thing: MLflow 3.17's Python client talking to a real MLflow server through
//! Envoy and the filter, on both the external (API key) and internal (mTLS) paths.

mod e2e;

use e2e::clients::*;
use e2e::mlflow::{run_client_flow, Mlflow};
use e2e::paths;
use e2e::stack::*;

fn assert_full_flow(out: &serde_json::Value, label: &str) {
    assert_eq!(out["status"], "FINISHED", "{label}: {out}");
    assert_eq!(out["params"]["alpha"], "0.5", "{label}: {out}");
    assert_eq!(out["metrics"]["loss"], 0.3, "{label}: {out}");
    assert_eq!(
        out["history"],
        serde_json::json!([[0, 0.9], [1, 0.6], [2, 0.3]]),
        "{label}: {out}"
    );
    assert_eq!(
        out["artifacts"],
        serde_json::json!(["notes.txt"]),
        "{label}: {out}"
    );
    assert_eq!(out["artifact_roundtrip"], true, "{label}: {out}");
    // Proxied artifacts: the bytes went through Envoy, not straight to a local dir.
    assert!(
        out["artifact_uri"]
            .as_str()
            .unwrap_or_default()
            .starts_with("mlflow-artifacts:"),
        "{label}: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_client_through_envoy_on_both_paths() {
    let mlflow = Mlflow::start().await;
    let stack = Stack::start_with(StackOptions {
        upstream_port: Some(mlflow.port),
        ..StackOptions::default()
    })
    .await;

    // External: API key via MLFLOW_TRACKING_TOKEN, prefixed tracking URI.
    let external = run_client_flow(
        &["full", "external"],
        &[
            ("MLFLOW_TRACKING_URI", stack.envoy.plain_url("/api/mlflow")),
            ("MLFLOW_TRACKING_TOKEN", READWRITE_KEY.to_owned()),
        ],
    )
    .await;
    assert_full_flow(&external.json, "external");
    assert_eq!(stack.auth().validate_calls(), 1, "one callout, then cached");
    let run_id = external.json["run_id"].as_str().unwrap().to_owned();
    let exp_id = external.json["experiment_id"].as_str().unwrap().to_owned();
    let stored = mlflow
        .artifacts_dir()
        .join(&exp_id)
        .join(&run_id)
        .join("artifacts/notes.txt");
    assert!(
        stored.exists(),
        "artifact not stored at {}",
        stored.display()
    );

    // Internal: client certificate on the TLS listener, no key, no callout.
    stack.auth().reset_counts();
    let internal = run_client_flow(
        &["full", "internal"],
        &[
            ("MLFLOW_TRACKING_URI", stack.envoy.tls_url("")),
            (
                "MLFLOW_TRACKING_CLIENT_CERT_PATH",
                paths::cert("client.pem").display().to_string(),
            ),
            (
                "MLFLOW_TRACKING_SERVER_CERT_PATH",
                paths::cert("ca.crt").display().to_string(),
            ),
        ],
    )
    .await;
    assert_full_flow(&internal.json, "internal");
    assert_eq!(
        stack.auth().validate_calls(),
        0,
        "internal path makes no callout"
    );

    // Read-only key: reads work, log_metric is refused by the filter.
    let readonly = run_client_flow(
        &["readonly", &run_id],
        &[
            ("MLFLOW_TRACKING_URI", stack.envoy.plain_url("/api/mlflow")),
            ("MLFLOW_TRACKING_TOKEN", READONLY_KEY.to_owned()),
        ],
    )
    .await;
    let out = &readonly.json;
    assert_eq!(out["read_ok"], true, "{out}");
    assert_eq!(
        out["write_endpoint"], "/api/2.0/mlflow/runs/log-metric",
        "{out}"
    );
    assert_eq!(out["write_status"], 403, "{out}");
    assert_eq!(
        out["write_error"]["detail"], "Insufficient permissions",
        "{out}"
    );
}
