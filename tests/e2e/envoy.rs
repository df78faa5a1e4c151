//! Envoy from `envoy/envoy.yaml`, with only its ports and file paths changed.

use std::process::Command;

use super::admin::Admin;
use super::paths::{self, TempDir};
use super::procs::ProcessGroup;

/// Where the rendered Envoy sends its clusters.
#[derive(Debug, Clone, Copy)]
pub struct Upstreams {
    pub auth_port: u16,
    pub mlflow_port: u16,
}

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub plain: u16,
    pub tls: u16,
    pub admin: u16,
}

/// Test-only departures from the committed config. Each is an exact-count text
/// substitution like `render`'s.
#[derive(Debug, Clone, Copy)]
pub struct EnvoyOptions {
    /// `--concurrency`: 2 by default; 1 pins every request to one worker and so one VM.
    pub workers: u16,
    /// Runs the test build of the filter (`paths::testing_wasm`) with
    /// `"testing": {"trap_path": ...}` in the plugin JSON: a request to that path traps the
    /// VM. The artifact `make build` writes has no such switch and refuses the field.
    pub trap_path: Option<&'static str>,
    /// Swaps the `failure_policy`/`reload_config` stanza for the legacy `fail_open: false`.
    pub legacy_fail_open_false: bool,
    /// Filter settings instead of the committed ones (timeouts, TTLs, the in-flight cap).
    pub tuning: Tuning,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            workers: 2,
            trap_path: None,
            legacy_fail_open_false: false,
            tuning: Tuning::default(),
        }
    }
}

/// Filter settings a test needs instead of envoy.yaml's, e.g. short TTLs so the expiry of
/// a verdict happens within the test. Each becomes an exact edit of the plugin
/// configuration's JSON (`max_pending_callouts`, absent from envoy.yaml, is added next to
/// `timeout_ms`); `None` keeps the committed value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuning {
    pub timeout_ms: Option<u64>,
    pub max_pending_callouts: Option<u32>,
    pub ttl_s: Option<u64>,
    pub negative_ttl_s: Option<u64>,
    pub stale_if_error_s: Option<u64>,
    pub max_entries: Option<u32>,
}

impl Tuning {
    /// (committed text, replacement) pairs; each committed text occurs once in envoy.yaml.
    fn edits(&self) -> Vec<(&'static str, String)> {
        let mut edits = Vec::new();
        if self.timeout_ms.is_some() || self.max_pending_callouts.is_some() {
            let mut to = format!(r#""timeout_ms": {},"#, self.timeout_ms.unwrap_or(2000));
            if let Some(n) = self.max_pending_callouts {
                to.push_str(&format!(r#" "max_pending_callouts": {n},"#));
            }
            edits.push((r#""timeout_ms": 2000,"#, to));
        }
        for (from, field, value) in [
            (r#""ttl_s": 300,"#, "ttl_s", self.ttl_s),
            (
                r#""negative_ttl_s": 30,"#,
                "negative_ttl_s",
                self.negative_ttl_s,
            ),
            (
                r#""stale_if_error_s": 300,"#,
                "stale_if_error_s",
                self.stale_if_error_s,
            ),
        ] {
            if let Some(value) = value {
                edits.push((from, format!(r#""{field}": {value},"#)));
            }
        }
        if let Some(n) = self.max_entries {
            edits.push((r#""max_entries": 10000"#, format!(r#""max_entries": {n}"#)));
        }
        edits
    }
}

/// The lines of envoy.yaml the options rewrite, spelled exactly as committed.
const EXEMPT_PATHS_LINE: &str = "\"exempt_paths\": [\"/health\"],\n";
const FAILURE_POLICY_LINES: &str = "failure_policy: FAIL_RELOAD\n                reload_config: { backoff: { base_interval: 1s } }\n";

/// Replaces `from` with `to`, insisting it occurs exactly `times` times, so a change to
/// envoy.yaml that breaks the substitution fails here instead of testing the wrong thing.
fn replace_exact(text: &str, from: &str, to: &str, times: usize) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, times,
        "e2e: envoy/envoy.yaml should contain {from:?} {times} time(s), found {found}; \
         the suite rewrites it textually (see the note at the top of the file)"
    );
    text.replace(from, to)
}

/// The repo's envoy.yaml with test ports and absolute paths; nothing else changes.
/// Ports are matched with their closing ` }` so a new port can never be re-matched.
pub fn render(ports: Ports, up: Upstreams) -> String {
    let yaml = std::fs::read_to_string(paths::envoy_yaml()).expect("read envoy/envoy.yaml");
    let port = |n: u16| format!("port_value: {n} }}");
    let mut out = yaml;
    for (from, to) in [
        (10000, ports.plain),
        (10443, ports.tls),
        (9901, ports.admin),
        (8000, up.auth_port),
        (5000, up.mlflow_port),
    ] {
        out = replace_exact(&out, &port(from), &port(to), 1);
    }
    out = replace_exact(
        &out,
        "\"127.0.0.1:8000\"",
        &format!("\"127.0.0.1:{}\"", up.auth_port),
        1,
    );
    out = replace_exact(
        &out,
        &format!("filename: {}", paths::WASM_REL),
        &format!("filename: {}", paths::wasm().display()),
        1,
    );
    let certs = format!("{}/", paths::certs_dir().display());
    // Server cert and key, the CA and its CRL, and jwt_authn's JWKS.
    out = replace_exact(&out, "filename: certs/", &format!("filename: {certs}"), 5);
    out
}

/// `render` plus the options' departures from the committed file.
pub fn render_with(ports: Ports, up: Upstreams, opts: EnvoyOptions) -> String {
    let mut out = render(ports, up);
    if let Some(trap) = opts.trap_path {
        let testing = paths::testing_wasm();
        paths::require(&testing, "make build-testing");
        out = replace_exact(
            &out,
            &format!("filename: {}", paths::wasm().display()),
            &format!("filename: {}", testing.display()),
            1,
        );
        let testing = serde_json::json!({ "trap_path": trap });
        out = replace_exact(
            &out,
            EXEMPT_PATHS_LINE,
            &format!("{EXEMPT_PATHS_LINE}                      \"testing\": {testing},\n"),
            1,
        );
    }
    if opts.legacy_fail_open_false {
        out = replace_exact(&out, FAILURE_POLICY_LINES, "fail_open: false\n", 1);
    }
    for (from, to) in opts.tuning.edits() {
        out = replace_exact(&out, from, &to, 1);
    }
    out
}

pub struct Envoy {
    // Field order is drop order: stop the process before its directory goes.
    proc: ProcessGroup,
    pub ports: Ports,
    admin: Admin,
    dir: TempDir,
}

impl Envoy {
    /// Renders the config, starts Envoy and waits until its admin says it is ready.
    /// `service_token` becomes HOKUSAI_AUTH_SERVICE_TOKEN in Envoy's environment, which
    /// envoy.yaml passes into the wasm VM.
    pub async fn start(up: Upstreams, service_token: Option<&str>) -> Envoy {
        Self::start_with(up, service_token, EnvoyOptions::default(), &[]).await
    }

    /// As [`Envoy::start`], with extra command-line arguments (e.g. log levels).
    pub async fn start_with_args(
        up: Upstreams,
        service_token: Option<&str>,
        extra_args: &[&str],
    ) -> Envoy {
        Self::start_with(up, service_token, EnvoyOptions::default(), extra_args).await
    }

    /// `start` with test-only config departures, a worker count and extra arguments.
    pub async fn start_with(
        up: Upstreams,
        service_token: Option<&str>,
        opts: EnvoyOptions,
        extra_args: &[&str],
    ) -> Envoy {
        paths::require_envoy_inputs();
        let dir = TempDir::new("envoy");
        let [plain, tls, admin] = paths::free_ports::<3>();
        let ports = Ports { plain, tls, admin };
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, render_with(ports, up, opts)).expect("write rendered envoy.yaml");

        let mut cmd = Command::new(paths::venv_bin("envoy"));
        cmd.arg("-c")
            .arg(&config)
            .args(["--concurrency", &opts.workers.to_string()])
            // The access log reaches its file within 0.1 s (default 10 s), for tests
            // that read it.
            .args(["--file-flush-interval-msec", "100"])
            // Unique per running Envoy (the admin port is ours while it runs). Hot restart
            // is off as well, so no shared-memory segment is left behind in /dev/shm.
            .args(["--base-id", &admin.to_string(), "--disable-hot-restart"])
            .args(extra_args)
            .current_dir(dir.path())
            .env_remove("HOKUSAI_AUTH_SERVICE_TOKEN");
        if let Some(token) = service_token {
            cmd.env("HOKUSAI_AUTH_SERVICE_TOKEN", token);
        }
        let proc = ProcessGroup::spawn(
            "envoy",
            cmd,
            &dir.join("access.log"),
            &dir.join("envoy.log"),
        );
        let mut envoy = Envoy {
            proc,
            ports,
            admin: Admin::new(admin),
            dir,
        };
        envoy.admin.wait_ready(&mut envoy.proc).await;
        envoy
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn plain_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.plain)
    }

    pub fn tls_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.ports.tls)
    }

    /// A counter or gauge from the admin endpoint; 0 when Envoy has not created it yet.
    pub async fn stat(&self, name: &str) -> u64 {
        self.admin.stat(name).await
    }

    /// Every stat whose name matches the regex `filter` (Envoy's admin syntax), as
    /// (name, value) pairs in Envoy's order; histograms come with their summary text.
    pub async fn stats_matching(&self, filter: &str) -> Vec<(String, String)> {
        self.admin.stats_matching(filter).await
    }

    /// Resident set size of the Envoy process, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<envoy>/status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<envoy>/status");
        kb * 1024
    }

    /// Envoy's own log (stderr), e.g. to look for a filter's log line.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The access log (Envoy's stdout).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// The access log as records: one JSON object per line (envoy.yaml's `json_format`), or
    /// the test fails naming the line that is not one.
    pub fn access_records(&self) -> Vec<serde_json::Value> {
        self.access_log()
            .lines()
            .map(|line| {
                let record: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("an access-log line is not JSON ({e}): {line}"));
                assert!(record.is_object(), "not one object: {line}");
                record
            })
            .collect()
    }

    /// Waits (bounded, ~20 s: Envoy flushes its log on a timer) for the access-log record
    /// whose `request_id` is `id`.
    pub async fn access_record(&self, id: &str) -> serde_json::Value {
        for _ in 0..200 {
            if let Some(record) = self
                .access_records()
                .into_iter()
                .find(|r| r["request_id"] == id)
            {
                return record;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "no access-log record for request id {id:?}:\n{}",
            self.access_log()
        )
    }

    /// `/stats/prometheus` as text.
    pub async fn prometheus(&self) -> String {
        self.admin.prometheus().await
    }

    pub fn assert_running(&mut self) {
        self.proc.assert_running();
    }
}
