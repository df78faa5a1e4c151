//! The real thing: MLflow 3.17's Python client talking to a real MLflow server through
//! Envoy and the filter, on both the external (API key) and internal (mTLS) paths.

mod e2e;

use std::path::Path;

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

    // Read-only key and read-only user token: reads work, every write is refused, and the
    // client reports each refusal in MLflow's own terms (CONTRACT section 5).
    let readonly_jwt = stack.mint("e2e-reader", &["mlflow:read"]);
    for (label, token) in [("key", READONLY_KEY.to_owned()), ("jwt", readonly_jwt)] {
        let readonly = run_client_flow(
            &["readonly", &run_id],
            &[
                ("MLFLOW_TRACKING_URI", stack.envoy.plain_url("/api/mlflow")),
                ("MLFLOW_TRACKING_TOKEN", token),
            ],
        )
        .await;
        assert_read_only_refusals(&readonly.json, label);
    }

    // No credential at all: UNAUTHENTICATED, not a server error.
    let nokey = run_client_flow(
        &["nokey"],
        &[("MLFLOW_TRACKING_URI", stack.envoy.plain_url("/api/mlflow"))],
    )
    .await;
    let err = &nokey.json["error"];
    assert_eq!(err["error_code"], "UNAUTHENTICATED", "{}", nokey.json);
    assert_eq!(
        err["str"], "UNAUTHENTICATED: API key required",
        "{}",
        nokey.json
    );
    assert_eq!(nokey.json["reply"][1], 401, "{}", nokey.json);

    let run = RunArtifacts {
        experiment_id: &exp_id,
        run_id: &run_id,
        store: &mlflow.artifacts_dir(),
    };
    let started = std::time::Instant::now();
    read_only_key_cannot_write_artifacts_whatever_their_name(&stack, &run).await;
    read_only_key_reads_artifacts_and_searches(&stack, &run).await;
    read_only_key_uses_the_ui_and_graphql_and_writes_nothing(&stack, &run).await;
    eprintln!(
        "e2e: read/write by endpoint checks took {:?}",
        started.elapsed()
    );
}

/// The `readonly` flow's output: the read worked, and each of its three writes was refused
/// by the filter with 403 and shown by the client as `PERMISSION_DENIED: ...`.
fn assert_read_only_refusals(out: &serde_json::Value, label: &str) {
    assert_eq!(out["read_ok"], true, "{label}: {out}");
    assert_eq!(
        out["write_endpoint"], "/api/2.0/mlflow/runs/log-metric",
        "{label}: {out}"
    );
    assert_eq!(
        out["write_error"]["detail"], "Insufficient permissions",
        "{label}: {out}"
    );
    for write in ["log_metric", "create_experiment", "set_tag"] {
        let err = &out["write_errors"][write];
        assert_eq!(
            out["write_replies"][write][1], 403,
            "{label} {write}: {out}"
        );
        assert_eq!(
            err["error_code"], "PERMISSION_DENIED",
            "{label} {write}: {out}"
        );
        assert_eq!(
            err["str"], "PERMISSION_DENIED: Insufficient permissions (requires mlflow:write)",
            "{label} {write}: {out}"
        );
        assert_eq!(
            err["json"]["required_scope"], "mlflow:write",
            "{label} {write}: {out}"
        );
    }
}

/// A run's place in MLflow's proxied artifact store.
struct RunArtifacts<'a> {
    experiment_id: &'a str,
    run_id: &'a str,
    store: &'a Path,
}

impl RunArtifacts<'_> {
    /// The artifact API path below `prefix` (one of the routes Envoy forwards to MLflow).
    fn api(&self, prefix: &str, kind: &str, name: &str) -> String {
        let (exp, run) = (self.experiment_id, self.run_id);
        format!("{prefix}/api/2.0/mlflow-artifacts/{kind}/{exp}/{run}/artifacts/{name}")
    }

    fn stored(&self, name: &str) -> std::path::PathBuf {
        self.store
            .join(self.experiment_id)
            .join(self.run_id)
            .join("artifacts")
            .join(name)
    }
}

/// Names the old last-segment heuristic took for reads (issue 7).
const HOSTILE_NAMES: [&str; 4] = [
    "get_model.pkl",
    "listing.csv",
    "search_results.txt",
    "download.bin",
];

async fn send(
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: &'static str,
) -> reqwest::Response {
    plain_client()
        .request(method.clone(), stack.envoy.plain_url(path))
        .header("authorization", bearer(key))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn assert_refused_as_write(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), 403, "{what} must be refused as a write");
    let (_, _, json) = filter_reply(resp).await;
    assert_eq!(json["detail"], "Insufficient permissions", "{what}: {json}");
    assert_eq!(json["required_scope"], "mlflow:write", "{what}: {json}");
}

async fn read_only_key_cannot_write_artifacts_whatever_their_name(
    stack: &Stack,
    run: &RunArtifacts<'_>,
) {
    use reqwest::Method;
    // The read-write key stores one hostile name, so the refused DELETE below has a
    // real file to aim at and the 403 cannot come from a missing one.
    let victim = HOSTILE_NAMES[0];
    let put = send(
        stack,
        Method::PUT,
        &run.api("", "artifacts", victim),
        READWRITE_KEY,
        "owned by the read-write key\n",
    )
    .await;
    assert_eq!(put.status(), 200, "read-write PUT {victim}");
    assert!(run.stored(victim).exists(), "read-write upload not stored");

    for name in HOSTILE_NAMES {
        for prefix in ["", "/api/mlflow", "/mlflow"] {
            let path = run.api(prefix, "artifacts", name);
            for method in [Method::PUT, Method::DELETE, Method::POST] {
                let resp = send(stack, method.clone(), &path, READONLY_KEY, "x").await;
                assert_refused_as_write(resp, &format!("read-only {method} {path}")).await;
            }
            let path = run.api(prefix, "mpu/create", name);
            let resp = send(stack, Method::POST, &path, READONLY_KEY, "{}").await;
            assert_refused_as_write(resp, &format!("read-only POST {path}")).await;
        }
        if name != victim {
            assert!(
                !run.stored(name).exists(),
                "a read-only upload landed in the store: {name}"
            );
        }
    }
    let kept = std::fs::read_to_string(run.stored(victim)).expect("victim artifact");
    assert_eq!(
        kept, "owned by the read-write key\n",
        "refused DELETE removed it"
    );
}

async fn read_only_key_reads_artifacts_and_searches(stack: &Stack, run: &RunArtifacts<'_>) {
    use reqwest::Method;
    // The artifact the MLflow client uploaded with the read-write key, and a hostile name.
    for (name, body) in [
        ("notes.txt", "written through Envoy by the e2e suite\n"),
        (HOSTILE_NAMES[0], "owned by the read-write key\n"),
    ] {
        for prefix in ["", "/api/mlflow"] {
            let path = run.api(prefix, "artifacts", name);
            let resp = send(stack, Method::GET, &path, READONLY_KEY, "").await;
            assert_eq!(resp.status(), 200, "read-only GET {path}");
            assert_eq!(resp.text().await.expect("body"), body, "GET {path}");
        }
    }
    let listing = format!(
        "/api/2.0/mlflow-artifacts/artifacts?path={}/{}/artifacts",
        run.experiment_id, run.run_id
    );
    let resp = send(stack, Method::GET, &listing, READONLY_KEY, "").await;
    assert_eq!(resp.status(), 200, "read-only listing");
    let files: serde_json::Value = resp.json().await.expect("listing JSON");
    let names: Vec<&str> = files["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(names.contains(&"notes.txt"), "listing: {files}");

    let search = plain_client()
        .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/search"))
        .header("authorization", bearer(READONLY_KEY))
        .json(&serde_json::json!({ "experiment_ids": [run.experiment_id] }))
        .send()
        .await
        .expect("runs/search");
    assert_eq!(search.status(), 200, "read-only runs/search");
    let found: serde_json::Value = search.json().await.expect("runs JSON");
    assert_eq!(
        found["runs"][0]["info"]["run_id"], run.run_id,
        "runs/search: {found}"
    );
    for (method, path) in [
        (Method::POST, "/api/2.0/mlflow/experiments/search"),
        (
            Method::GET,
            "/api/2.0/mlflow/experiments/search?max_results=5",
        ),
        (Method::POST, "/mlflow/api/2.0/mlflow/experiments/search"),
    ] {
        let mut req = plain_client()
            .request(method.clone(), stack.envoy.plain_url(path))
            .header("authorization", bearer(READONLY_KEY));
        if method == Method::POST {
            req = req.json(&serde_json::json!({ "max_results": 5 }));
        }
        let resp = req.send().await.expect("experiments/search");
        assert_eq!(resp.status(), 200, "read-only {method} {path}");
        let body: serde_json::Value = resp.json().await.expect("experiments JSON");
        assert!(body["experiments"].is_array(), "{method} {path}: {body}");
    }
}

/// MLflow's web UI routes are reads for a read-only key under both UI prefixes, GraphQL
/// included, and none of them opens a way to a write: GraphQL has no writing field (a
/// mutation that would delete is unknown to MLflow), and a UI route in front of an API
/// write is resolved by Envoy to that write.
async fn read_only_key_uses_the_ui_and_graphql_and_writes_nothing(
    stack: &Stack,
    run: &RunArtifacts<'_>,
) {
    use reqwest::Method;
    let run_id = run.run_id;
    for prefix in ["/mlflow", "/api/mlflow"] {
        let resp = send(stack, Method::GET, &format!("{prefix}/"), READONLY_KEY, "").await;
        assert_eq!(resp.status(), 200, "{prefix}/ shell");
        assert!(resp.text().await.unwrap().contains("<title>MLflow</title>"));
        let favicon = format!("{prefix}/static-files/favicon.ico");
        let resp = send(stack, Method::GET, &favicon, READONLY_KEY, "").await;
        assert_eq!(resp.status(), 200, "{favicon}");
        let artifact = format!("{prefix}/get-artifact?path=notes.txt&run_uuid={run_id}");
        let resp = send(stack, Method::GET, &artifact, READONLY_KEY, "").await;
        assert_eq!(resp.status(), 200, "{artifact}");
        assert_eq!(
            resp.text().await.unwrap(),
            "written through Envoy by the e2e suite\n"
        );

        let graphql = |query: String| {
            plain_client()
                .post(stack.envoy.plain_url(&format!("{prefix}/graphql")))
                .header("authorization", bearer(READONLY_KEY))
                .json(&serde_json::json!({ "query": query }))
                .send()
        };
        let read = format!(
            "query {{ mlflowGetRun(input: {{runId: \"{run_id}\"}}) {{ run {{ info {{ runId }} }} }} }}"
        );
        let resp = graphql(read).await.unwrap();
        assert_eq!(resp.status(), 200, "{prefix}/graphql read");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            body["data"]["mlflowGetRun"]["run"]["info"]["runId"], run_id,
            "{body}"
        );
        // What MLflow's Mutation type holds: a search, passed as the read it is.
        let search =
            "mutation { mlflowSearchRuns(input: {experimentIds: [\"0\"]}) { __typename } }";
        let resp = graphql(search.to_owned()).await.unwrap();
        assert_eq!(resp.status(), 200, "{prefix}/graphql Mutation search");
        // A mutation that would delete, as MLflow might add one: MLflow knows no such field.
        let delete = format!(
            "mutation {{ mlflowDeleteRun(input: {{runId: \"{run_id}\"}}) {{ __typename }} }}"
        );
        let resp = graphql(delete).await.unwrap();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert!(
            body["errors"].is_array() && body["data"]["mlflowDeleteRun"].is_null(),
            "{prefix}: {body}"
        );
    }

    // UI routes in front of writes: Envoy resolves the dot segments first, so the filter
    // judges the write they lead to.
    let delete_body = r#"{"run_id": "x"}"#;
    for (method, path) in [
        (
            Method::POST,
            "/mlflow/static-files/../api/2.0/mlflow/runs/delete",
        ),
        (
            Method::POST,
            "/mlflow/static-files/%2e%2e/api/2.0/mlflow/runs/delete",
        ),
        (
            Method::POST,
            "/mlflow/graphql/../ajax-api/2.0/mlflow/runs/delete",
        ),
        (
            Method::POST,
            "/api/mlflow/get-artifact/../api/2.0/mlflow/runs/delete",
        ),
        (
            Method::GET,
            "/mlflow/static-files/../ajax-api/2.0/mlflow/webhooks",
        ),
        (Method::PUT, "/mlflow/graphql"),
        (Method::DELETE, "/mlflow/get-artifact?path=notes.txt"),
    ] {
        let resp = send(stack, method.clone(), path, READONLY_KEY, delete_body).await;
        assert_refused_as_write(resp, &format!("read-only {method} {path}")).await;
    }
    let resp = plain_client()
        .post(stack.envoy.plain_url("/mlflow/graphql"))
        .header("authorization", bearer(READONLY_KEY))
        .header("x-http-method-override", "DELETE")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_refused_as_write(resp, "graphql with a method override").await;

    // The run is still there, untouched.
    let resp = send(
        stack,
        Method::GET,
        &format!("/api/2.0/mlflow/runs/get?run_id={run_id}"),
        READONLY_KEY,
        "",
    )
    .await;
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["run"]["info"]["lifecycle_stage"], "active", "{body}");
}
