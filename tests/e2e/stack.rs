//! The usual test rig: Envoy in front of the in-process dev auth service and echo
//! upstream (or a given upstream port, e.g. a real MLflow).

use std::net::SocketAddr;

use hokusai_devstack::{
    DevAuth, DevAuthConfig, DevLogin, Echo, EchoHandle, KeyStore, OidcClient, OidcSettings,
    ServeOptions, DEV_CLIENT_ID,
};

use super::envoy::{Envoy, EnvoyOptions, Ports, Tuning, Upstreams};
use super::paths;

/// The token the dev auth service demands and the filter forwards (via Envoy's env).
pub const SERVICE_TOKEN: &str = "e2e-service-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The dev auth service with the dev keys.
    Dev,
    /// Nothing listens on the auth cluster's port.
    Down,
}

#[derive(Debug, Clone, Copy)]
pub struct StackOptions {
    pub auth: AuthMode,
    /// `None`: the in-process echo upstream.
    pub upstream_port: Option<u16>,
    /// Worker count and test-only config departures.
    pub envoy: EnvoyOptions,
    /// The login service (and so the sign-in provider) signs with this key instead of the
    /// one Envoy trusts, and its tokens live this long instead of an hour.
    pub login: LoginOptions,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoginOptions {
    /// Sign with a freshly generated key, which jwt_authn does not trust.
    pub foreign_key: bool,
    pub token_ttl_s: Option<i64>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            auth: AuthMode::Dev,
            upstream_port: None,
            envoy: EnvoyOptions::default(),
            login: LoginOptions::default(),
        }
    }
}

impl StackOptions {
    /// The default stack with the plugin configuration tuned (limits, timeouts).
    pub fn tuned(tuning: Tuning) -> StackOptions {
        StackOptions {
            envoy: EnvoyOptions {
                tuning,
                ..EnvoyOptions::default()
            },
            ..StackOptions::default()
        }
    }
}

pub struct Stack {
    // Envoy first: dropped (killed) before the servers behind it.
    pub envoy: Envoy,
    pub auth: Option<DevAuth>,
    pub echo: Option<EchoHandle>,
    /// The auth cluster's port, listened on or not.
    pub auth_port: u16,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(opts: StackOptions) -> Stack {
        Self::start_with_envoy_args(opts, &[]).await
    }

    /// As [`Stack::start_with`], passing extra command-line arguments to Envoy.
    pub async fn start_with_envoy_args(opts: StackOptions, envoy_args: &[&str]) -> Stack {
        // Check before starting anything, so a missing input reads as such.
        paths::require_envoy_inputs();
        let [plain, tls, admin] = paths::free_ports::<3>();
        let ports = Ports { plain, tls, admin };
        let (auth, auth_port) = match opts.auth {
            AuthMode::Dev => {
                let auth =
                    start_dev_auth_with("127.0.0.1:0".parse().unwrap(), Some(ports), opts.login)
                        .await;
                let port = auth.addr().port();
                (Some(auth), port)
            }
            AuthMode::Down => (None, paths::free_ports::<1>()[0]),
        };
        let (echo, mlflow_port) = match opts.upstream_port {
            Some(port) => (None, port),
            None => {
                let echo = Echo::start("127.0.0.1:0".parse().unwrap())
                    .await
                    .expect("start echo upstream");
                let port = echo.addr().port();
                (Some(echo), port)
            }
        };
        let envoy = Envoy::start_at(
            ports,
            Upstreams {
                auth_port,
                mlflow_port,
            },
            Some(SERVICE_TOKEN),
            opts.envoy,
            envoy_args,
        )
        .await;
        Stack {
            envoy,
            auth,
            echo,
            auth_port,
        }
    }

    pub fn auth(&self) -> &DevAuth {
        self.auth
            .as_ref()
            .expect("this stack has no dev auth service")
    }

    /// Brings the dev auth service up on the auth cluster's port (after `AuthMode::Down`).
    pub async fn start_auth_now(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.auth_port));
        self.auth = Some(start_dev_auth_with(addr, None, LoginOptions::default()).await);
    }

    /// One of the filter's counters as Envoy exports it, by the name the filter defines
    /// (`hokusai_auth.callouts` is read as `wasmcustom.hokusai_auth.callouts`). Each worker
    /// flushes its counts on its tick (1 s), so a fresh count may lag: see
    /// [`Stack::await_filter_counter`].
    pub async fn filter_counter(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.{name}")).await
    }

    /// Waits (bounded, ~6 s: a few ticks on a loaded machine) for a filter counter to reach
    /// `want`, then asserts it is exactly `want`; a counter that overshoots or never gets
    /// there fails.
    pub async fn await_filter_counter(&self, name: &str, want: u64) {
        let mut got = 0;
        for _ in 0..120 {
            got = self.filter_counter(name).await;
            if got >= want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(got, want, "filter counter {name}");
    }

    /// Drops `clients` (open requests: their connections close) and waits until Envoy has
    /// reset `n` more downstream streams.
    pub async fn hang_up<T>(&self, clients: T, n: u64) {
        let stat = "http.hokusai.downstream_rq_rx_reset";
        let before = self.envoy.stat(stat).await;
        drop(clients);
        until("Envoy saw the clients go", || async {
            self.envoy.stat(stat).await >= before + n
        })
        .await;
    }

    /// A valid dev token (the login service's issuer, audience and key) for `sub`.
    pub fn mint(&self, sub: &str, scopes: &[&str]) -> String {
        self.auth()
            .login()
            .expect("the e2e dev auth service plays the login service")
            .mint(sub, scopes)
    }

    /// Callouts as counted by Envoy's auth cluster, independent of the service's own count.
    pub async fn auth_cluster_requests(&self) -> u64 {
        self.envoy
            .stat("cluster.auth_service.upstream_rq_total")
            .await
    }
}

/// Envoy's own failure signals for the wasm VM, to compare before and after a run:
/// reload counters (non-zero only after a crash) and the VMs V8 has created.
pub const WASM_FAILURE_STATS: [&str; 5] = [
    "wasm.hokusai_auth.vm_reload",
    "wasm.hokusai_auth.vm_reload_success",
    "wasm.hokusai_auth.vm_reload_failure",
    "wasm.hokusai_auth.vm_reload_backoff",
    "wasm.envoy.wasm.runtime.v8.created",
];

impl Stack {
    /// [`WASM_FAILURE_STATS`] as they are now.
    pub async fn wasm_failure_stats(&self) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        for name in WASM_FAILURE_STATS {
            out.push((name, self.envoy.stat(name).await));
        }
        out
    }
}

/// The login service's side, with the key whose public half Envoy loads from certs/jwks.json.
pub fn dev_login() -> DevLogin {
    DevLogin::from_key_file(paths::cert("jwt-signing.key"))
        .unwrap_or_else(|e| panic!("e2e: {e}; run `make certs`"))
}

/// The sign-in client Envoy is registered as, with its callback on both of `ports`'
/// listeners and the UI (where a signed-out browser is sent) as post-logout URI.
pub fn oidc_settings(auth: SocketAddr, ports: Ports) -> OidcSettings {
    let secret = std::fs::read_to_string(paths::cert("oauth-client-secret"))
        .unwrap_or_else(|e| panic!("e2e: certs/oauth-client-secret: {e}; run `make certs`"));
    OidcSettings {
        base_url: format!("http://{auth}"),
        client: OidcClient {
            client_id: DEV_CLIENT_ID.to_owned(),
            client_secret: secret.trim().to_owned(),
            redirect_uris: vec![
                format!("http://127.0.0.1:{}/mlflow/oauth2/callback", ports.plain),
                format!("https://127.0.0.1:{}/mlflow/oauth2/callback", ports.tls),
            ],
            post_logout_redirect_uris: vec![format!("http://127.0.0.1:{}/mlflow/", ports.plain)],
        },
    }
}

async fn start_dev_auth_with(
    listen: SocketAddr,
    envoy: Option<Ports>,
    login: LoginOptions,
) -> DevAuth {
    // Bind first so the provider's own URL is known; the OIDC settings need it.
    let listen = if listen.port() == 0 {
        SocketAddr::from(([127, 0, 0, 1], paths::free_ports::<1>()[0]))
    } else {
        listen
    };
    let mut dev_login = dev_login();
    if login.foreign_key {
        dev_login.key = hokusai_devstack::JwtKey::generate();
    }
    if let Some(ttl) = login.token_ttl_s {
        dev_login.token_ttl_s = ttl;
    }
    DevAuth::start_with(
        DevAuthConfig {
            listen,
            keys: KeyStore::dev_keys(),
            service_token: Some(SERVICE_TOKEN.to_owned()),
        },
        ServeOptions {
            // One stderr line per call would drown test output.
            log_requests: false,
            login: Some(dev_login),
            oidc: envoy.map(|ports| oidc_settings(listen, ports)),
            ..ServeOptions::default()
        },
    )
    .await
    .expect("start dev auth service")
}

/// Polls `ready` (bounded: about 10 s) and fails with `what` when it never holds.
pub async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut ready: impl FnMut() -> F,
) {
    for _ in 0..2000 {
        if ready().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}
