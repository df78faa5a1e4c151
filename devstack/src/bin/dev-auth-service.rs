//! dev-auth-service: the local stand-in for Hokusai's API-key service.
//! See devstack/README.md.

use std::net::SocketAddr;
use std::process::ExitCode;

use hokusai_devstack::{sha256_hex, DevAuth, DevAuthConfig, KeyStore, ServeOptions};

const USAGE: &str = "\
usage: dev-auth-service [--listen ADDR] [--keys FILE] [--service-token-env NAME]
                        [--control] [--quiet]
       dev-auth-service --hash KEY

  --listen ADDR             address to bind (default 127.0.0.1:8000)
  --keys FILE               key file of SHA-256 hashes (default: the built-in
                            devstack/dev-keys.json)
  --service-token-env NAME  require `Authorization: Bearer $NAME` when the key
                            comes in the body
  --control                 serve the dev-only /__dev/{fault,stats,reset} API
  --quiet                   no per-request log lines
  --hash KEY                print the key_sha256 for KEY (to add keys) and exit";

struct Args {
    listen: SocketAddr,
    keys: Option<String>,
    service_token_env: Option<String>,
    control: bool,
    quiet: bool,
}

enum Command {
    Serve(Args),
    Hash(String),
    Help,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut args = Args {
        listen: "127.0.0.1:8000".parse().expect("valid default"),
        keys: None,
        service_token_env: None,
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
            "--control" => args.control = true,
            "--quiet" => args.quiet = true,
            "--hash" => return Ok(Command::Hash(value()?)),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Command::Serve(args))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Command::Serve(args)) => args,
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
        },
    )
    .await
    .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "dev-auth-service: listening on {} ({key_count} keys, service token {token_note}, control API {})",
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
