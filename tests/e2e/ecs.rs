//! The ECS sidecar configs (`envoy/ecs/`) run on this machine: rendered with test ports
//! and paths by exact text substitution (nothing else changes), certificates written by
//! the real entrypoint script from "ECS-injected" environment variables, and Envoy started
//! through that same script, as the container would start it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hokusai_devstack::{DevAuth, DevAuthConfig, Echo, EchoHandle, KeyStore, ServeOptions};

use super::admin::Admin;
use super::paths::{self, TempDir};
use super::pki::{Ca, Pair};
use super::procs::ProcessGroup;
use super::stack::{dev_login, SERVICE_TOKEN};

/// The name internal callers use (Cloud Map), the SNI and the SAN the client checks.
pub const SERVER_NAME: &str = "mlflow.hokusai-development.local";
/// The auth service's public name: the callout's authority, SNI and verified SAN.
pub const AUTH_HOST: &str = "auth.hokus.ai";

/// Where the image keeps things, as written in the configs (see envoy/ecs/Dockerfile).
pub const IMAGE_SDS_DIR: &str = "/etc/envoy/sds";
pub const IMAGE_TLS_DIR: &str = "/etc/envoy/tls";
pub const IMAGE_WASM: &str = "/usr/local/lib/envoy/hokusai_auth_filter.wasm";
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Polls `check` until it returns Ok, at most 100 times 100 ms apart; panics with the last
/// error otherwise. Envoy applies a renamed-in SDS file within milliseconds; 10 s is slack.
pub async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for _ in 0..100 {
        match check().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: still not true after 100 tries; last: {last}");
}

pub fn ecs_dir() -> PathBuf {
    paths::repo_root().join("envoy/ecs")
}

pub fn entrypoint() -> PathBuf {
    ecs_dir().join("entrypoint.sh")
}

/// Replaces `from` with `to`, insisting on exactly `times` occurrences, so an edit to a
/// config that breaks the rendering fails loudly instead of testing something else.
pub fn replace_exact(file: &str, text: &str, from: &str, to: &str, times: usize) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, times,
        "e2e: {file} should contain {from:?} {times} time(s), found {found}; the tests \
         rewrite it textually (see the note at the top of the file)"
    );
    text.replace(from, to)
}

fn read_ecs(name: &str) -> String {
    std::fs::read_to_string(ecs_dir().join(name))
        .unwrap_or_else(|e| panic!("read envoy/ecs/{name}: {e}"))
}

/// A sidecar's directories: `sds/` (the SDS resources, rendered) and `tls/` (the watched
/// certificate directory the entrypoint writes).
pub struct Layout {
    dir: TempDir,
}

impl Layout {
    pub fn new(label: &str) -> Layout {
        let dir = TempDir::new(label);
        let sds = dir.join("sds");
        std::fs::create_dir_all(&sds).expect("create sds dir");
        let tls = dir.join("tls");
        for (file, times) in [
            ("server-cert.yaml", 3),
            ("client-cert.yaml", 3),
            ("ca-bundle.yaml", 3),
            ("oauth-client-secret.yaml", 1),
            ("oauth-hmac.yaml", 1),
        ] {
            let text = read_ecs(&format!("sds/{file}"));
            let out = replace_exact(
                &format!("envoy/ecs/sds/{file}"),
                &text,
                IMAGE_TLS_DIR,
                tls.to_str().expect("UTF-8 temp path"),
                times,
            );
            std::fs::write(sds.join(file), out).expect("write SDS resource");
        }
        Layout { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn sds_dir(&self) -> PathBuf {
        self.dir.join("sds")
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    fn sds_prefix(&self) -> String {
        format!("path: {}/", self.sds_dir().display())
    }
}

/// What ECS would inject from Secrets Manager: the variables envoy/ecs/entrypoint.sh reads.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub vars: Vec<(&'static str, String)>,
}

impl Secrets {
    /// The MLflow sidecar's set: server pair, CA bundle (one or more PEM files), the CRL of
    /// each of those CAs (see [`crl_pem`]), and the browser sign-in's client secret (the dev
    /// one) and cookie key.
    pub fn server(server: &Pair, bundle: &[&Path]) -> Secrets {
        let client_secret = std::fs::read_to_string(paths::cert("oauth-client-secret"))
            .expect("certs/oauth-client-secret (make certs)");
        Secrets {
            vars: vec![
                ("HOKUSAI_TLS_SERVER_CERT", server.cert_pem()),
                ("HOKUSAI_TLS_SERVER_KEY", server.key_pem()),
                ("HOKUSAI_TLS_CA_BUNDLE", bundle_pem(bundle)),
                ("HOKUSAI_TLS_CRL", crl_pem(bundle)),
                (
                    "HOKUSAI_OAUTH_CLIENT_SECRET",
                    client_secret.trim().to_owned(),
                ),
                (
                    "HOKUSAI_OAUTH_HMAC_SECRET",
                    "e2e-ecs-cookie-key-0123456789".to_owned(),
                ),
            ],
        }
    }

    /// A calling service's set: client pair, CA bundle and CRLs.
    pub fn client(client: &Pair, bundle: &[&Path]) -> Secrets {
        Secrets {
            vars: vec![
                ("HOKUSAI_TLS_CLIENT_CERT", client.cert_pem()),
                ("HOKUSAI_TLS_CLIENT_KEY", client.key_pem()),
                ("HOKUSAI_TLS_CA_BUNDLE", bundle_pem(bundle)),
                ("HOKUSAI_TLS_CRL", crl_pem(bundle)),
            ],
        }
    }

    /// The same set with `var` set to `value` (added, or replacing the current value).
    pub fn with(mut self, var: &'static str, value: String) -> Secrets {
        self.vars.retain(|(k, _)| *k != var);
        self.vars.push((var, value));
        self
    }

    /// The same set with these CRL files as HOKUSAI_TLS_CRL.
    pub fn with_crls(self, crls: &[&Path]) -> Secrets {
        self.with("HOKUSAI_TLS_CRL", bundle_pem(crls))
    }
}

/// Several PEM files in one text, as a bundle (or CRL) secret holds them.
pub fn bundle_pem(files: &[&Path]) -> String {
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display())))
        .collect::<Vec<_>>()
        .join("")
}

/// The CRLs of the CAs in a bundle: `x.crl` next to each `x.crt`, as `make certs` writes the
/// dev CA's (`certs/ca.crl`) and [`Ca::new`](super::pki::Ca::new) a test CA's.
pub fn crl_pem(bundle: &[&Path]) -> String {
    let crls: Vec<PathBuf> = bundle.iter().map(|ca| ca.with_extension("crl")).collect();
    bundle_pem(&crls.iter().map(PathBuf::as_path).collect::<Vec<_>>())
}

/// The entrypoint with a clean environment plus `secrets`, writing into `tls_dir`.
pub fn entrypoint_command(tls_dir: &Path, secrets: &Secrets) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(entrypoint())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOKUSAI_TLS_DIR", tls_dir)
        // The test runs as whoever runs it; there is no `envoy` user to hand files to.
        .env("HOKUSAI_TLS_OWNER", "");
    for (k, v) in &secrets.vars {
        cmd.env(k, v);
    }
    cmd
}

/// `entrypoint.sh healthcheck-mtls <port> <SERVER_NAME>` against certificates in `tls_dir`:
/// (passed, what it printed).
pub fn healthcheck_mtls(tls_dir: &Path, port: u16) -> (bool, String) {
    let out = Command::new("bash")
        .arg(entrypoint())
        .args(["healthcheck-mtls", &port.to_string(), SERVER_NAME])
        .env("HOKUSAI_TLS_DIR", tls_dir)
        .output()
        .expect("run entrypoint.sh healthcheck-mtls");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), said)
}

/// `entrypoint.sh healthcheck <admin port>`: admin `/ready` answers 200.
pub fn healthcheck_ready(admin_port: u16) -> bool {
    Command::new("bash")
        .arg(entrypoint())
        .args(["healthcheck", &admin_port.to_string()])
        .output()
        .expect("run entrypoint.sh healthcheck")
        .status
        .success()
}

/// `entrypoint.sh write-certs`, as a rotation job would run it. Panics unless it succeeds.
pub fn write_certs(tls_dir: &Path, secrets: &Secrets) -> Output {
    let out = entrypoint_command(tls_dir, secrets)
        .arg("write-certs")
        .output()
        .expect("run entrypoint.sh");
    assert!(
        out.status.success(),
        "entrypoint.sh write-certs failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[derive(Debug, Clone, Copy)]
pub struct SidecarPorts {
    pub alb: u16,
    pub mtls: u16,
    pub admin: u16,
}

#[derive(Debug, Clone)]
pub struct SidecarUpstreams {
    pub mlflow_port: u16,
    pub auth_port: u16,
    /// Stands in for the system CA bundle, to verify the auth service.
    pub auth_ca: PathBuf,
}

/// envoy/ecs/envoy.yaml with loopback test ports, the layout's paths, the repo's .wasm and
/// the auth service on 127.0.0.1. Names (SNI, SANs, authorities) stay as they are.
pub fn render_sidecar(layout: &Layout, ports: SidecarPorts, up: &SidecarUpstreams) -> String {
    let file = "envoy/ecs/envoy.yaml";
    let mut out = read_ecs("envoy.yaml");
    let listener = |p: u16| format!("address: 0.0.0.0, port_value: {p} }}");
    let local = |p: u16| format!("address: 127.0.0.1, port_value: {p} }}");
    out = replace_exact(file, &out, &listener(8080), &local(ports.alb), 1);
    out = replace_exact(file, &out, &listener(8443), &local(ports.mtls), 1);
    out = replace_exact(file, &out, &local(9901), &local(ports.admin), 1);
    out = replace_exact(file, &out, &local(5000), &local(up.mlflow_port), 1);
    out = replace_exact(
        file,
        &out,
        &format!("address: {AUTH_HOST}, port_value: 443 }}"),
        &local(up.auth_port),
        1,
    );
    out = replace_exact(
        file,
        &out,
        &format!("filename: {SYSTEM_CA_BUNDLE}"),
        &format!("filename: {}", up.auth_ca.display()),
        1,
    );
    out = replace_exact(
        file,
        &out,
        &format!("filename: {IMAGE_WASM}"),
        &format!("filename: {}", paths::wasm().display()),
        1,
    );
    out = replace_exact(
        file,
        &out,
        &format!("path: {IMAGE_SDS_DIR}/"),
        &layout.sds_prefix(),
        4,
    );
    assert!(
        !out.contains("address: 0.0.0.0"),
        "{file}: a listener left unrendered"
    );
    out
}

#[derive(Debug, Clone, Copy)]
pub struct ClientPorts {
    pub egress: u16,
    pub admin: u16,
}

/// envoy/ecs/client-sidecar.yaml with test ports and paths, and the MLflow sidecar's
/// address resolved to 127.0.0.1 (the name stays the SNI and the verified SAN).
pub fn render_client(layout: &Layout, ports: ClientPorts, mtls_port: u16) -> String {
    let file = "envoy/ecs/client-sidecar.yaml";
    let mut out = read_ecs("client-sidecar.yaml");
    let local = |p: u16| format!("address: 127.0.0.1, port_value: {p} }}");
    out = replace_exact(file, &out, &local(15000), &local(ports.egress), 1);
    out = replace_exact(file, &out, &local(9902), &local(ports.admin), 1);
    out = replace_exact(
        file,
        &out,
        &format!("address: {SERVER_NAME}, port_value: 8443 }}"),
        &local(mtls_port),
        1,
    );
    out = replace_exact(
        file,
        &out,
        &format!("path: {IMAGE_SDS_DIR}/"),
        &layout.sds_prefix(),
        2,
    );
    out
}

/// A TLS front for the dev auth service, standing in for https://auth.hokus.ai: its only
/// filter chain matches SNI `auth.hokus.ai`, with a certificate from a test "public" CA.
fn render_auth_front(port: u16, admin: u16, dev_auth_port: u16, cert: &Pair) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: auth_tls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}
    filter_chains:
    - filter_chain_match: {{ server_names: ["{AUTH_HOST}"] }}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: auth_front
          cluster: dev_auth
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: {cert} }}
              private_key: {{ filename: {key} }}
  clusters:
  - name: dev_auth
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: dev_auth
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {dev_auth_port} }} }} }}
"#,
        cert = cert.cert.display(),
        key = cert.key.display(),
    )
}

/// How a test Envoy is launched.
pub enum Launch<'a> {
    /// `entrypoint.sh <envoy> ...` with these secrets in its environment, and
    /// HOKUSAI_ADMIN_PORT set to the admin port (for its graceful stop).
    Entrypoint {
        tls_dir: &'a Path,
        secrets: &'a Secrets,
    },
    /// Envoy itself.
    Direct,
}

/// Command-line arguments for Envoy after the usual ones (e.g. `--drain-time-s`) and
/// environment for the entrypoint (e.g. `HOKUSAI_STOP_SECONDS`).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// One Envoy from a rendered config, stopped (with its process group) on drop.
pub struct EcsEnvoy {
    // Field order is drop order: the process before its directory.
    proc: ProcessGroup,
    pub admin_port: u16,
    admin: Admin,
    dir: TempDir,
}

impl EcsEnvoy {
    /// Writes `config`, starts Envoy and waits for admin `/ready`.
    pub async fn start(label: &str, config: &str, admin_port: u16, launch: Launch<'_>) -> EcsEnvoy {
        Self::start_with(label, config, admin_port, launch, &RunOptions::default()).await
    }

    /// As [`EcsEnvoy::start`], with extra Envoy arguments and entrypoint environment.
    pub async fn start_with(
        label: &str,
        config: &str,
        admin_port: u16,
        launch: Launch<'_>,
        opts: &RunOptions,
    ) -> EcsEnvoy {
        let dir = TempDir::new(label);
        let path = dir.join("envoy.yaml");
        std::fs::write(&path, config).expect("write rendered config");
        let envoy = paths::venv_bin("envoy");
        let mut cmd = match launch {
            Launch::Entrypoint { tls_dir, secrets } => {
                let mut cmd = entrypoint_command(tls_dir, secrets);
                cmd.env("HOKUSAI_ADMIN_PORT", admin_port.to_string())
                    .envs(opts.env.iter().map(|(k, v)| (k, v)))
                    .arg(&envoy);
                cmd
            }
            Launch::Direct => {
                let mut cmd = Command::new(&envoy);
                cmd.env_remove("HOKUSAI_AUTH_SERVICE_TOKEN");
                cmd
            }
        };
        cmd.arg("-c")
            .arg(&path)
            .args(["--concurrency", "2"])
            // Unique while it runs (the admin port is ours), and no shared memory left over.
            .args([
                "--base-id",
                &admin_port.to_string(),
                "--disable-hot-restart",
            ])
            .args(&opts.args)
            .current_dir(dir.path());
        let proc = ProcessGroup::spawn(label, cmd, &dir.join("access.log"), &dir.join("envoy.log"));
        let mut envoy = EcsEnvoy {
            proc,
            admin_port,
            admin: Admin::new(admin_port),
            dir,
        };
        envoy.admin.wait_ready(&mut envoy.proc).await;
        envoy
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn assert_running(&mut self) {
        self.proc.assert_running();
    }

    /// SIGTERM to the process ECS would signal: the group's leader (the entrypoint, when
    /// launched through it) and nothing else.
    pub fn terminate(&self) {
        self.proc.signal_leader("TERM");
    }

    /// Waits at most `within` for the leader to exit; its status, or None if it has not.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.proc.exited() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Admin `/ready`'s status code, or None when nothing answers.
    pub async fn ready_status(&self) -> Option<u16> {
        self.admin.ready_status().await
    }

    /// `/stats/prometheus` as text.
    pub async fn prometheus(&self) -> String {
        self.admin.prometheus().await
    }

    /// A counter or gauge from admin `/stats`; 0 when Envoy has not created it yet.
    pub async fn stat(&self, name: &str) -> u64 {
        self.admin.stat(name).await
    }

    /// Envoy's stderr (and the entrypoint's).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

/// The MLflow sidecar with everything it talks to: echo upstream as MLflow, the dev auth
/// service behind a TLS front named auth.hokus.ai, certificates through the entrypoint.
pub struct EcsStack {
    // Envoys first (dropped, so stopped, before the servers behind them).
    pub sidecar: EcsEnvoy,
    pub auth_front: EcsEnvoy,
    pub auth: DevAuth,
    /// `None` when the stack fronts another upstream (a real MLflow).
    pub echo: Option<EchoHandle>,
    pub ports: SidecarPorts,
    pub layout: Layout,
    /// The test "public" CA and the auth front's certificate.
    pub pki: TempDir,
}

impl EcsStack {
    /// In front of the echo upstream.
    pub async fn start(secrets: &Secrets) -> EcsStack {
        Self::start_with(secrets, None).await
    }

    /// In front of `mlflow_port` (a real MLflow), or the echo upstream when `None`.
    pub async fn start_with(secrets: &Secrets, mlflow_port: Option<u16>) -> EcsStack {
        Self::start_opts(secrets, mlflow_port, &RunOptions::default()).await
    }

    /// As [`EcsStack::start_with`], the sidecar run with `opts`.
    pub async fn start_opts(
        secrets: &Secrets,
        mlflow_port: Option<u16>,
        opts: &RunOptions,
    ) -> EcsStack {
        paths::require_envoy_inputs();
        let pki = TempDir::new("ecs-pki");
        let public_ca = Ca::new(pki.path(), "public-ca", "Test Public Root CA");
        let auth_cert = public_ca.server("auth-hokus-ai", AUTH_HOST, &[AUTH_HOST]);

        // Also the login service, whose JWKS the sidecar's jwt_authn fetches.
        let options = ServeOptions {
            login: Some(dev_login()),
            ..ServeOptions::default()
        };
        let config = DevAuthConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            keys: KeyStore::dev_keys(),
            service_token: Some(SERVICE_TOKEN.to_owned()),
        };
        let auth = DevAuth::start_with(config, options)
            .await
            .expect("start dev auth service");
        auth.set_request_logging(false);
        let echo = match mlflow_port {
            Some(_) => None,
            None => Some(
                Echo::start("127.0.0.1:0".parse().unwrap())
                    .await
                    .expect("start echo upstream"),
            ),
        };
        let mlflow_port = mlflow_port.unwrap_or_else(|| echo.as_ref().unwrap().addr().port());

        let [front_port, front_admin, alb, mtls, admin] = paths::free_ports::<5>();
        let auth_front = EcsEnvoy::start(
            "ecs-auth-front",
            &render_auth_front(front_port, front_admin, auth.addr().port(), &auth_cert),
            front_admin,
            Launch::Direct,
        )
        .await;

        let layout = Layout::new("ecs-sidecar");
        let ports = SidecarPorts { alb, mtls, admin };
        let config = render_sidecar(
            &layout,
            ports,
            &SidecarUpstreams {
                mlflow_port,
                auth_port: front_port,
                auth_ca: public_ca.pair.cert.clone(),
            },
        );
        let mut with_token = secrets.clone();
        with_token
            .vars
            .push(("HOKUSAI_AUTH_SERVICE_TOKEN", SERVICE_TOKEN.to_owned()));
        let sidecar = EcsEnvoy::start_with(
            "ecs-sidecar-envoy",
            &config,
            admin,
            Launch::Entrypoint {
                tls_dir: &layout.tls_dir(),
                secrets: &with_token,
            },
            opts,
        )
        .await;
        EcsStack {
            sidecar,
            auth_front,
            auth,
            echo,
            ports,
            layout,
            pki,
        }
    }

    /// With the dev certificates (`make certs`): server pair and the dev CA.
    pub async fn start_dev(mlflow_port: Option<u16>) -> EcsStack {
        Self::start_with(
            &Secrets::server(&Pair::dev("server"), &[&paths::cert("ca.crt")]),
            mlflow_port,
        )
        .await
    }

    pub fn alb_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.alb)
    }

    /// The internal listener by its Cloud Map name (resolve it with [`Self::mtls_addr`]).
    pub fn mtls_url(&self, path: &str) -> String {
        format!("https://{SERVER_NAME}:{}{path}", self.ports.mtls)
    }

    pub fn mtls_addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.ports.mtls).into()
    }

    /// Callouts as Envoy's auth cluster counts them.
    pub async fn auth_cluster_requests(&self) -> u64 {
        self.sidecar
            .stat("cluster.auth_service.upstream_rq_total")
            .await
    }
}

/// A calling service's egress sidecar in front of `stack`'s internal listener.
pub struct ClientSidecar {
    pub envoy: EcsEnvoy,
    pub ports: ClientPorts,
    pub layout: Layout,
}

impl ClientSidecar {
    pub async fn start(mtls_port: u16, secrets: &Secrets) -> ClientSidecar {
        let layout = Layout::new("ecs-client");
        let [egress, admin] = paths::free_ports::<2>();
        let ports = ClientPorts { egress, admin };
        let envoy = EcsEnvoy::start(
            "ecs-client-envoy",
            &render_client(&layout, ports, mtls_port),
            admin,
            Launch::Entrypoint {
                tls_dir: &layout.tls_dir(),
                secrets,
            },
        )
        .await;
        ClientSidecar {
            envoy,
            ports,
            layout,
        }
    }

    /// What the application calls: plain HTTP on loopback.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.egress)
    }
}

/// A client for the internal listener that trusts `cas`, presents `identity` if given,
/// resolves the Cloud Map name to `addr` and reports the server's certificate. Each call
/// builds a new client, so each request is a new handshake.
pub fn mtls_client(
    cas: &[&Path],
    identity: Option<&Pair>,
    addr: std::net::SocketAddr,
) -> reqwest::Client {
    mtls_client_timeout(cas, identity, addr, Duration::from_secs(10))
}

/// [`mtls_client`] with another bound on each request.
pub fn mtls_client_timeout(
    cas: &[&Path],
    identity: Option<&Pair>,
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .resolve(SERVER_NAME, addr);
    for ca in cas {
        let pem = std::fs::read(ca).expect("read CA");
        for cert in reqwest::Certificate::from_pem_bundle(&pem).expect("CA PEM") {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(pair) = identity {
        b = b.identity(pair.identity());
    }
    b.build().expect("mTLS client")
}

/// The DER of the certificate the server presented on this response's connection.
pub fn served_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info with the peer certificate")
        .to_vec()
}

/// A YAML file as JSON, through PyYAML in the project venv (anchors and aliases expanded).
pub fn yaml_to_json(path: &Path) -> serde_json::Value {
    let python = paths::venv_bin("python");
    paths::require(&python, "make venv");
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "cannot parse {} as YAML:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML's JSON")
}

/// Every value under a key named `key`, anywhere in `v`.
pub fn find_all<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                if k == key {
                    out.push(child);
                }
                find_all(child, key, out);
            }
        }
        serde_json::Value::Array(items) => {
            for child in items {
                find_all(child, key, out);
            }
        }
        _ => {}
    }
}

/// The files and directories a config (or SDS resource) names: every `filename`, and the
/// `path` of each `path_config_source` and `watched_directory` (not route `path`s).
pub fn file_refs(v: &serde_json::Value) -> Vec<String> {
    let mut hits = Vec::new();
    find_all(v, "filename", &mut hits);
    let mut out: Vec<String> = hits
        .iter()
        .filter_map(|h| h.as_str().map(str::to_owned))
        .collect();
    for key in ["path_config_source", "watched_directory"] {
        let mut objs = Vec::new();
        find_all(v, key, &mut objs);
        out.extend(
            objs.iter()
                .filter_map(|o| o["path"].as_str().map(str::to_owned)),
        );
    }
    out
}
