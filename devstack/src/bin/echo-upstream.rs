//! echo-upstream: answers every request 200 with a JSON account of it.
//! Stands in for MLflow in tests and the benchmark. See devstack/README.md.

use std::net::SocketAddr;
use std::process::ExitCode;

use hokusai_devstack::Echo;

const USAGE: &str = "usage: echo-upstream [--listen ADDR]   (default 127.0.0.1:5001)";

#[tokio::main]
async fn main() -> ExitCode {
    let mut listen: SocketAddr = "127.0.0.1:5001".parse().expect("valid default");
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        match (flag.as_str(), argv.next()) {
            ("--listen", Some(v)) => match v.parse() {
                Ok(addr) => listen = addr,
                Err(e) => {
                    eprintln!("echo-upstream: --listen {v}: {e}");
                    return ExitCode::from(2);
                }
            },
            ("-h" | "--help", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("echo-upstream: bad arguments\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let echo = match Echo::start(listen).await {
        Ok(echo) => echo,
        Err(e) => {
            eprintln!("echo-upstream: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("echo-upstream: listening on {}", echo.base_url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    echo.shutdown().await;
    ExitCode::SUCCESS
}
