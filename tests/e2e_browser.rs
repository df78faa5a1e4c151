//! A real browser through the gateway (CONTRACT section 9): headless Chromium, driven over
//! WebDriver by Selenium (tests/e2e/browser_flow.py), signs in to MLflow's web UI on the dev
//! provider's form, against real Envoy, the filter and a real MLflow.
//!
//! A read-write user sees the experiment list, opens a run and its artifact, signs out and
//! lands on the sign-in form; a read-only user sees the same, and renaming the experiment
//! from the UI is refused with MLflow's own error shown in the dialog. Each step leaves a
//! screenshot in `target/e2e-browser/` (kept after the run, to look at).
//!
//! Needs Debian's `chromium` and `chromium-driver` and the venv's pinned `selenium`;
//! `make test` installs them.

mod e2e;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::clients::*;
use e2e::mlflow::{run_client_flow, Mlflow};
use e2e::paths;
use e2e::procs::ProcessGroup;
use e2e::stack::*;

fn tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    paths::require(
        &path,
        "apt-get install chromium chromium-driver` (or `make test`, which installs them",
    );
    path
}

/// Where the screenshots go: fresh for each run, kept afterwards.
fn output_dir() -> PathBuf {
    let dir = paths::target_dir_for(std::env::var_os("CARGO_TARGET_DIR")).join("e2e-browser");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create target/e2e-browser");
    dir
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| b.len() > 1000 && b.starts_with(b"\x89PNG\r\n\x1a\n"))
        .unwrap_or(false)
}

/// Runs the browser flow in its own process group (Chromium and its driver go with it)
/// and returns its JSON, or fails with its output.
fn run_browser_flow(args: &[String], out: &Path) -> serde_json::Value {
    let python = paths::venv_bin("python");
    paths::require(&python, "make venv");
    let (chromium, driver) = (
        tool("CHROMIUM", "/usr/bin/chromium"),
        tool("CHROMEDRIVER", "/usr/bin/chromedriver"),
    );
    let mut cmd = Command::new(python);
    cmd.arg(paths::repo_root().join("tests/e2e/browser_flow.py"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", out)
        .env("LANG", "C.UTF-8")
        .env("CHROMIUM", chromium)
        .env("CHROMEDRIVER", driver)
        .current_dir(out);
    let (stdout, stderr) = (out.join("flow.out"), out.join("flow.err"));
    let mut proc = ProcessGroup::spawn("browser flow", cmd, &stdout, &stderr);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = proc.exited() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the browser flow took over 5 minutes\n{}",
            proc.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("e2e: browser flow took {:?}", started.elapsed());
    let text = std::fs::read_to_string(&stdout).unwrap_or_default();
    assert!(
        status.success(),
        "browser flow failed ({status})\n{}",
        proc.log_tail(60)
    );
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("flow output is not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_use_mlflows_ui_through_the_gateway_and_readers_change_nothing() {
    let mlflow = Mlflow::start().await;
    let stack = Stack::start_with(StackOptions {
        upstream_port: Some(mlflow.port),
        ..StackOptions::default()
    })
    .await;
    // Something to look at: an experiment with a run and an artifact, made with a key.
    let seeded = run_client_flow(
        &["full", "browser"],
        &[
            ("MLFLOW_TRACKING_URI", stack.envoy.plain_url("/api/mlflow")),
            ("MLFLOW_TRACKING_TOKEN", READWRITE_KEY.to_owned()),
        ],
    )
    .await
    .json;
    let field = |k: &str| {
        seeded[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k}: {seeded}"))
            .to_owned()
    };
    let (exp_id, exp_name) = (field("experiment_id"), field("experiment_name"));
    let (run_id, run_name) = (field("run_id"), field("run_name"));

    let out = output_dir();
    let args = [
        stack.envoy.plain_url(""),
        exp_id.clone(),
        exp_name.clone(),
        run_id,
        run_name,
        out.display().to_string(),
    ];
    let flow = tokio::task::spawn_blocking(move || run_browser_flow(&args, &out))
        .await
        .expect("browser flow thread");

    // Both users met the provider's form, and each sign-out led back to it.
    let authorize = format!("{}/oauth2/authorize?", stack.auth().base_url());
    for key in [
        "writer_form_url",
        "writer_signed_out_to",
        "reader_form_url",
        "reader_signed_out_to",
    ] {
        let url = flow[key].as_str().unwrap_or_default();
        assert!(url.starts_with(&authorize), "{key}: {url}");
    }
    assert_eq!(
        flow["reader_rename_error"],
        "PERMISSION_DENIED: Insufficient permissions (requires mlflow:write)",
        "the UI shows the refusal in MLflow's terms"
    );
    let steps: Vec<&str> = flow["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert_eq!(
        steps,
        [
            "01-sign-in-form",
            "02-writer-experiments",
            "03-writer-run",
            "04-writer-artifact",
            "05-writer-signed-out",
            "06-reader-experiments",
            "07-reader-run",
            "08-reader-artifact",
            "09-reader-rename-refused",
            "10-reader-signed-out",
        ]
    );
    for step in flow["steps"].as_array().unwrap() {
        let shot = Path::new(step["screenshot"].as_str().unwrap_or_default());
        assert!(
            is_png(shot),
            "screenshot {} missing or empty",
            shot.display()
        );
    }

    // The refused rename changed nothing in MLflow.
    let resp = plain_client()
        .get(stack.envoy.plain_url(&format!(
            "/api/2.0/mlflow/experiments/get?experiment_id={exp_id}"
        )))
        .header("authorization", bearer(READWRITE_KEY))
        .send()
        .await
        .unwrap();
    let got: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(got["experiment"]["name"], exp_name.as_str(), "{got}");
    // The refusal came from the filter, for the reader's verified token.
    let refused: Vec<serde_json::Value> = stack
        .envoy
        .access_records()
        .into_iter()
        .filter(|r| r["path"] == "/mlflow/ajax-api/2.0/mlflow/experiments/update")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["status"], 403);
    let auth: serde_json::Value =
        serde_json::from_str(refused[0]["auth"].as_str().unwrap_or("{}")).unwrap();
    assert_eq!(
        (&auth["method"], &auth["outcome"]),
        (&"jwt".into(), &"403".into()),
        "{auth}"
    );
    assert_eq!(
        stack.auth().validate_calls(),
        1,
        "only the seeding key was looked up"
    );
}
