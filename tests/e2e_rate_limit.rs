//! A key's hourly limit holds across Envoy's workers on its very first use: two workers that
//! get the auth service's verdict at the same moment still count into one counter, so no
//! more than the limit ever reach the upstream.
//!
//! The window in which two workers' counts can collide is a few microseconds wide, so real
//! Envoy meets it only now and then; `tests/filter_rate_limit.rs` forces every interleaving
//! in the harness. These rounds hold the real thing to the same promise.

mod e2e;

use e2e::clients::*;
use e2e::stack::*;
use hokusai_devstack::{Fault, KeySpec};

const LIMIT: u64 = 3;
const CONCURRENT: usize = 12;
const ROUNDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_use_never_passes_more_than_the_limit() {
    // Two workers (the default), and an auth service that holds each validation until both
    // workers have asked, then answers both at once: the replies reach the two workers at
    // the same moment, and each counts the key's first uses in parallel with the other.
    let stack = Stack::start().await;
    stack.auth().set_fault(Fault::Gather(2));
    let mut rounds_on_both_workers = 0;
    for round in 0..ROUNDS {
        let key = format!("hk_race_round_{round:02}");
        let spec = KeySpec::new(&format!("key-race-{round}"), "racer")
            .with_scopes(&["mlflow:read"])
            .with_rate_limit(Some(LIMIT));
        stack.auth().insert_key(&key, spec).expect("insert key");
        stack.auth().reset_counts();
        let url = stack.envoy.plain_url("/api/2.0/mlflow/experiments/search");
        // A client (so a connection) per request, for the kernel to spread across workers.
        let requests = (0..CONCURRENT).map(|_| {
            plain_client()
                .get(&url)
                .header("authorization", bearer(&key))
                .send()
        });
        let statuses: Vec<u16> = futures_join(requests).await;
        let passed = statuses.iter().filter(|s| **s == 200).count() as u64;
        let limited = statuses.iter().filter(|s| **s == 429).count() as u64;
        assert_eq!(
            (passed, limited),
            (LIMIT, CONCURRENT as u64 - LIMIT),
            "round {round}: {statuses:?}"
        );
        if stack.auth().validate_calls() == 2 {
            rounds_on_both_workers += 1;
        }
    }
    let echo = stack.echo.as_ref().expect("echo upstream");
    assert_eq!(echo.requests(), LIMIT * ROUNDS as u64);
    eprintln!("{rounds_on_both_workers} of {ROUNDS} rounds ran on both workers");
    assert!(
        rounds_on_both_workers > 0,
        "no round had both workers validate the key: the race was never run"
    );
}

/// Awaits every request; a request that fails outright fails the test.
async fn futures_join<F>(requests: impl Iterator<Item = F>) -> Vec<u16>
where
    F: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
{
    let handles: Vec<_> = requests.map(tokio::spawn).collect();
    let mut statuses = Vec::new();
    for handle in handles {
        let resp = handle.await.expect("task").expect("request through Envoy");
        statuses.push(resp.status().as_u16());
    }
    statuses
}
