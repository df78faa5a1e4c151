//! A real MLflow tracking server from the project venv, and the Python client flow
//! (tests/e2e/mlflow_client_flow.py) that drives it through Envoy.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::paths::{self, TempDir};
use super::procs::ProcessGroup;

pub struct Mlflow {
    proc: ProcessGroup,
    pub port: u16,
    dir: TempDir,
}

impl Mlflow {
    /// `mlflow server` on a free port with sqlite and proxied artifacts in a temp dir;
    /// returns once `/health` answers (7-15 s is normal).
    pub async fn start() -> Mlflow {
        let bin = paths::venv_bin("mlflow");
        paths::require(&bin, "make venv");
        let dir = TempDir::new("mlflow");
        let port = paths::free_ports::<1>()[0];
        let mut cmd = Command::new(&bin);
        cmd.args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            // Proxied artifacts: uploads go through Envoy like every other call.
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .current_dir(dir.path())
            // Two processes instead of ~9; the suite needs no MLflow jobs.
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false");
        let log = dir.join("mlflow.log");
        let proc = ProcessGroup::spawn("mlflow", cmd, &log, &log);
        let mut mlflow = Mlflow { proc, port, dir };
        let started = std::time::Instant::now();
        mlflow.wait_healthy().await;
        eprintln!("e2e: MLflow healthy after {:?}", started.elapsed());
        mlflow
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let url = format!("http://127.0.0.1:{}/health", self.port);
        for _ in 0..600 {
            self.proc.assert_running();
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "e2e: MLflow not healthy after 120 s\n{}",
            self.proc.log_tail(40)
        );
    }

    /// Where the server stores proxied artifacts.
    pub fn artifacts_dir(&self) -> PathBuf {
        self.dir.join("artifacts")
    }
}

/// What one run of the Python flow printed (its last stdout line, JSON).
pub struct FlowOutput {
    pub json: serde_json::Value,
    pub stderr: String,
}

/// Runs `mlflow_client_flow.py <args>` with a clean environment plus `env`.
/// Panics with the script's output when it fails.
pub async fn run_client_flow(args: &[&str], env: &[(&str, String)]) -> FlowOutput {
    let python = paths::venv_bin("python");
    paths::require(&python, "make venv");
    let script = paths::repo_root().join("tests/e2e/mlflow_client_flow.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script)
        .args(args)
        // Nothing from the developer's shell (an MLFLOW_TRACKING_URI, a proxy) may leak in.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("LANG", "C.UTF-8")
        // Fail fast instead of retrying with backoff.
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        .current_dir(paths::repo_root())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("MLflow client flow took over 5 minutes")
        .expect("run python");
    eprintln!(
        "e2e: mlflow_client_flow.py {args:?} took {:?}",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "mlflow_client_flow.py {args:?} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let json = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("flow output is not JSON ({e}):\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    FlowOutput { json, stderr }
}
