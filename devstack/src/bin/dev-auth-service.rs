//! dev-auth-service: the local stand-in for Hokusai's API-key service.
//! See devstack/README.md.

use std::net::SocketAddr;
use std::process::ExitCode;

use hokusai_devstack::jwt::{self, JwtKey, DEV_AUDIENCE, DEV_ISSUER, DEV_SIGNING_KEY_PATH};
use hokusai_devstack::{
    sha256_hex, DevAuth, DevAuthConfig, DevLogin, KeyStore, OidcClient, OidcSettings, ServeOptions,
    DEV_CLIENT_ID,
};

const USAGE: &str = "\
usage: dev-auth-service [--listen ADDR] [--keys FILE] [--service-token-env NAME]
                        [--jwt-key FILE [--jwt-issuer ISS] [--jwt-audience AUD]]
                        [--oidc-client-secret-file FILE [--oidc-client-id ID]
                         --oidc-redirect-uri URI... [--oidc-post-logout-uri URI...]
                         [--public-url URL]]
                        [--control] [--quiet]
       dev-auth-service mint --sub SUB [--scopes \"S1 S2\"] [--ttl SECONDS]
                        [--aud AUD] [--iss ISS] [--key FILE]
       dev-auth-service --hash KEY

  --listen ADDR             address to bind (default 127.0.0.1:8000)
  --keys FILE               key file of SHA-256 hashes (default: the built-in
                            devstack/dev-keys.json)
  --service-token-env NAME  require `Authorization: Bearer $NAME` when the key
                            comes in the body
  --jwt-key FILE            also play the login service with this ES256 key
                            (certs/jwt-signing.key): GET /.well-known/jwks.json,
                            POST /api/v1/login, /api/v1/validate
  --jwt-issuer ISS          the issuer tokens must name (default https://login.hokus.ai)
  --jwt-audience AUD        the audience tokens must name (default mlflow)
  --oidc-client-secret-file FILE
                            with --jwt-key, also a minimal OpenID Connect provider
                            for browser sign-in (devstack/README.md): one client,
                            whose secret is this file's content (certs/oauth-client-secret)
  --oidc-client-id ID       that client's id (default hokusai-mlflow-ui)
  --oidc-redirect-uri URI   a redirect URI registered for it (repeatable, exact match)
  --oidc-post-logout-uri URI
                            a URI the end-session endpoint may send a browser to
                            (repeatable; asked for exactly, or as its origin's bare root,
                            which is what Envoy's oauth2 filter asks for)
  --public-url URL          where browsers reach this service (default http://ADDR)
  --control                 serve the dev-only /__dev/{fault,stats,reset} API
  --quiet                   no per-request log lines
  --hash KEY                print the key_sha256 for KEY (to add keys) and exit

  mint                      print a dev JWT signed with --key (default
                            certs/jwt-signing.key) and exit: --sub (required),
                            --scopes (space-separated, default none), --ttl
                            (default 3600; negative: already expired),
                            --aud (default mlflow), --iss (default
                            https://login.hokus.ai)";

struct Args {
    listen: SocketAddr,
    keys: Option<String>,
    service_token_env: Option<String>,
    jwt_key: Option<String>,
    jwt_issuer: String,
    jwt_audience: String,
    oidc_secret_file: Option<String>,
    oidc_client_id: String,
    oidc_redirect_uris: Vec<String>,
    oidc_post_logout_uris: Vec<String>,
    public_url: Option<String>,
    control: bool,
    quiet: bool,
}

struct MintArgs {
    sub: Option<String>,
    scopes: String,
    ttl_s: i64,
    aud: String,
    iss: String,
    key: String,
}

enum Command {
    Serve(Args),
    Mint(MintArgs),
    Hash(String),
    Help,
}

fn parse(argv: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut argv = argv.peekable();
    if argv.peek().map(String::as_str) == Some("mint") {
        argv.next();
        return parse_mint(argv);
    }
    let mut args = Args {
        listen: "127.0.0.1:8000".parse().expect("valid default"),
        keys: None,
        service_token_env: None,
        jwt_key: None,
        jwt_issuer: DEV_ISSUER.to_owned(),
        jwt_audience: DEV_AUDIENCE.to_owned(),
        oidc_secret_file: None,
        oidc_client_id: DEV_CLIENT_ID.to_owned(),
        oidc_redirect_uris: Vec::new(),
        oidc_post_logout_uris: Vec::new(),
        public_url: None,
        control: false,
        quiet: false,
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                args.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--keys" => args.keys = Some(value()?),
            "--service-token-env" => args.service_token_env = Some(value()?),
            "--jwt-key" => args.jwt_key = Some(value()?),
            "--jwt-issuer" => args.jwt_issuer = value()?,
            "--jwt-audience" => args.jwt_audience = value()?,
            "--oidc-client-secret-file" => args.oidc_secret_file = Some(value()?),
            "--oidc-client-id" => args.oidc_client_id = value()?,
            "--oidc-redirect-uri" => args.oidc_redirect_uris.push(value()?),
            "--oidc-post-logout-uri" => args.oidc_post_logout_uris.push(value()?),
            "--public-url" => args.public_url = Some(value()?),
            "--control" => args.control = true,
            "--quiet" => args.quiet = true,
            "--hash" => return Ok(Command::Hash(value()?)),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Command::Serve(args))
}

fn parse_mint(mut argv: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut args = MintArgs {
        sub: None,
        scopes: String::new(),
        ttl_s: jwt::DEFAULT_TTL_S,
        aud: DEV_AUDIENCE.to_owned(),
        iss: DEV_ISSUER.to_owned(),
        key: DEV_SIGNING_KEY_PATH.to_owned(),
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--sub" => args.sub = Some(value()?),
            "--scopes" => args.scopes = value()?,
            "--ttl" => {
                let v = value()?;
                args.ttl_s = v.parse().map_err(|e| format!("--ttl {v}: {e}"))?;
            }
            "--aud" => args.aud = value()?,
            "--iss" => args.iss = value()?,
            "--key" => args.key = value()?,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("mint: unknown argument {other}")),
        }
    }
    Ok(Command::Mint(args))
}

/// Prints the token (and only the token) on stdout.
fn mint(args: MintArgs) -> Result<(), String> {
    let sub = args
        .sub
        .filter(|s| !s.is_empty())
        .ok_or("mint: --sub is required")?;
    let key = JwtKey::from_pem_file(&args.key).map_err(|e| format!("{e} (run `make certs`)"))?;
    let scopes: Vec<&str> = args.scopes.split_whitespace().collect();
    let mut opts = jwt::MintOptions::new(&sub, &scopes);
    opts.ttl_s = args.ttl_s;
    opts.aud = vec![args.aud];
    opts.iss = args.iss;
    println!("{}", jwt::mint(&key, &opts));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Command::Serve(args)) => args,
        Ok(Command::Mint(args)) => {
            return match mint(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => {
                    eprintln!("dev-auth-service: {msg}");
                    ExitCode::FAILURE
                }
            };
        }
        Ok(Command::Hash(key)) => {
            println!("{}", sha256_hex(&key));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("dev-auth-service: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("dev-auth-service: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let keys = match &args.keys {
        Some(path) => KeyStore::from_file(path).map_err(|e| format!("{path}: {e}"))?,
        None => KeyStore::dev_keys(),
    };
    let service_token =
        match &args.service_token_env {
            // Asked for a token but none is set: refuse rather than run open.
            Some(name) => Some(std::env::var(name).ok().filter(|t| !t.is_empty()).ok_or(
                format!("--service-token-env {name}: variable is unset or empty"),
            )?),
            None => None,
        };
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "dev-auth-service: WARNING: listening on {} (not loopback); these keys are public",
            args.listen
        );
    }
    let login = match &args.jwt_key {
        Some(path) => {
            let mut login = DevLogin::from_key_file(path).map_err(|e| e.to_string())?;
            login.expect.issuer = args.jwt_issuer.clone();
            login.expect.audiences = vec![args.jwt_audience.clone()];
            Some(login)
        }
        None => None,
    };
    let oidc = match &args.oidc_secret_file {
        Some(path) => {
            if login.is_none() {
                return Err("--oidc-client-secret-file needs --jwt-key (tokens are signed)".into());
            }
            if args.oidc_redirect_uris.is_empty() {
                return Err(
                    "--oidc-client-secret-file needs at least one --oidc-redirect-uri".into(),
                );
            }
            let secret = std::fs::read_to_string(path)
                .map_err(|e| format!("{path}: {e} (run `make certs`)"))?
                .trim()
                .to_owned();
            if secret.len() < 16 {
                return Err(format!("{path}: a client secret of 16 bytes at least"));
            }
            Some(OidcSettings {
                base_url: args
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", args.listen)),
                client: OidcClient {
                    client_id: args.oidc_client_id.clone(),
                    client_secret: secret,
                    redirect_uris: args.oidc_redirect_uris.clone(),
                    post_logout_redirect_uris: args.oidc_post_logout_uris.clone(),
                },
            })
        }
        None => None,
    };
    let oidc_note = match &oidc {
        Some(o) => format!(", OIDC provider on for client {}", o.client.client_id),
        None => String::new(),
    };
    let login_note = match &login {
        Some(login) => format!("login service on, kid {}", login.key.kid()),
        None => "login service off".to_owned(),
    };
    let key_count = keys.len();
    let token_note = if service_token.is_some() {
        "required"
    } else {
        "off"
    };
    let auth = DevAuth::start_with(
        DevAuthConfig {
            listen: args.listen,
            keys,
            service_token,
        },
        ServeOptions {
            control_api: args.control,
            log_requests: !args.quiet,
            login,
            oidc,
        },
    )
    .await
    .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "dev-auth-service: listening on {} ({key_count} keys, service token {token_note}, {login_note}{oidc_note}, control API {})",
        auth.base_url(),
        if args.control { "on" } else { "off" },
    );
    wait_for_stop_signal().await;
    eprintln!("dev-auth-service: stopping");
    auth.shutdown().await;
    Ok(())
}

async fn wait_for_stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
