//! Clients that hang up while the filter waits on the auth service, a hundred thousand of
//! them, through real Envoy. Envoy makes every callout from the plugin's root context, so a
//! hang-up does not cancel the call: the auth service still answers, the reply reaches the
//! root context, and the filter settles it for the cache and forgets it. Afterwards Envoy's
//! memory and the wasm VM's are flat, no VM failed, no callout was sent twice or past the
//! cap, and every request is decided as before.

mod e2e;

use e2e::clients::*;
use e2e::envoy::Tuning;
use e2e::raw_http::RawRequest;
use e2e::stack::*;
use hokusai_devstack::Fault;

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";
/// Connections hung up together: below the in-flight cap (256 callouts per worker).
const BATCH: usize = 200;

/// `batches` × [`BATCH`] requests with keys never seen. Each batch: the auth service holds
/// every call; once all are held, every client hangs up, and once Envoy has reset their
/// streams, the calls are answered. The next batch starts when Envoy has every reply.
async fn hang_up(stack: &Stack, batches: usize, first: usize) {
    let port = stack.envoy.ports.plain;
    let auth = stack.auth();
    for batch in 0..batches {
        let mut open = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            let key = format!("hk_hangup_{}", first + batch * BATCH + i);
            let header = bearer(&key);
            open.push(RawRequest::get(port, SEARCH, &[("authorization", &header)]).await);
        }
        until(
            "every callout of the batch held at the auth service",
            || async { auth.held_calls() == BATCH as u64 },
        )
        .await;
        stack.hang_up(open, BATCH as u64).await;
        let done = auth.validate_calls();
        auth.release_held();
        until("Envoy has every reply", || async {
            stack
                .envoy
                .stat("cluster.auth_service.upstream_rq_completed")
                .await
                >= done
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_hang_ups_mid_callout_leave_envoy_and_the_vm_flat() {
    // One worker, so the VM whose memory the gauge reports is always the same one (with two,
    // each flush overwrites the other's figure). A small cache, so the warm-up fills the
    // worker's copy of it many times over: its steady state (a bounded map, emptied when
    // full) is reached before the measurement.
    let mut opts = StackOptions::tuned(Tuning {
        max_entries: Some(1000),
        ..Tuning::default()
    });
    opts.envoy.workers = 1;
    let mut stack = Stack::start_with(opts).await;
    let failures_before = stack.wasm_failure_stats().await;
    stack.auth().set_fault(Fault::Hold);
    // Warm up to the steady state (connection pools, maps at their working size).
    hang_up(&stack, 50, 0).await;
    let (rss_warm, vm_warm) = (stack.envoy.rss_bytes(), vm_memory(&stack).await);
    hang_up(&stack, 500, 50 * BATCH).await;
    let total = 550 * BATCH as u64;
    // Every call was sent once, none refused by the cap or the cluster's circuit breakers,
    // and each settled with nobody waiting (flushed on the workers' ticks).
    assert_eq!(stack.auth().validate_calls(), total);
    stack
        .await_filter_counter("hokusai_auth.callouts_abandoned", total)
        .await;
    assert_eq!(stack.filter_counter("hokusai_auth.callouts").await, total);
    assert_eq!(
        stack
            .filter_counter("hokusai_auth.callout_cap_rejections")
            .await,
        0
    );
    for stat in ["upstream_cx_overflow", "upstream_rq_pending_overflow"] {
        let name = format!("cluster.auth_service.{stat}");
        assert_eq!(stack.envoy.stat(&name).await, 0, "{name}");
    }
    let (rss_after, vm_after) = (stack.envoy.rss_bytes(), vm_memory(&stack).await);
    eprintln!(
        "after {} hang-ups: Envoy RSS {rss_warm} -> {rss_after} bytes, VM {vm_warm} -> {vm_after} bytes",
        500 * BATCH
    );
    assert!(vm_warm > 0, "the VM memory gauge is exported");
    assert!(
        vm_after <= vm_warm + 65_536,
        "the VM grew from {vm_warm} to {vm_after} bytes"
    );
    assert!(
        rss_after <= rss_warm + 16 * 1024 * 1024,
        "Envoy grew from {rss_warm} to {rss_after} bytes"
    );
    // Every later request is decided as before.
    stack.auth().set_fault(Fault::None);
    let client = plain_client();
    let url = stack.envoy.plain_url(SEARCH);
    let ok = client
        .get(&url)
        .header("authorization", bearer(READWRITE_KEY));
    assert_eq!(ok.send().await.unwrap().status(), 200);
    let write = client
        .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/create"))
        .header("authorization", bearer(READONLY_KEY));
    let (status, _, body) = filter_reply(write.send().await.unwrap()).await;
    assert_eq!(
        (status, &body["detail"]),
        (403, &serde_json::json!("Insufficient permissions"))
    );
    let (status, _, body) = filter_reply(client.get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, &body["detail"]),
        (401, &serde_json::json!("API key required"))
    );
    stack.envoy.assert_running();
    assert_eq!(stack.wasm_failure_stats().await, failures_before);
}

/// The filter's own gauge of its VM's linear memory (each worker flushes it on its tick).
async fn vm_memory(stack: &Stack) -> u64 {
    stack.filter_counter("hokusai_auth.vm_memory_bytes").await
}
