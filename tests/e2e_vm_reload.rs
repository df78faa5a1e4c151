//! A crashed VM heals: envoy.yaml's `failure_policy: FAIL_RELOAD` fails closed while the
//! VM is down and gives the worker a fresh VM after the reload backoff.
//!
//! The crash is real: the plugin JSON gets the test-only `testing.trap_path`, and a
//! request to that path traps the VM (`unreachable`) inside `proxy_on_request_headers`.
//! Envoy runs one worker, so every request after the trap meets the crashed VM (with two,
//! the other worker's healthy VM could answer and prove nothing).

mod e2e;

use std::time::{Duration, Instant};

use e2e::clients::*;
use e2e::envoy::EnvoyOptions;
use e2e::paths;
use e2e::stack::*;
use reqwest::{Client, Response};

/// Routed to the upstream like any MLflow call, so a request that got past a dead filter
/// would show up at the echo server.
const TRAP: &str = "/api/2.0/mlflow/testing/trap";
const SEARCH: &str = "/api/2.0/mlflow/experiments/search?max_results=5";
const TRAP_REQUEST_ID: &str = "rid-trap";
/// `reload_config.backoff.base_interval` in envoy.yaml.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Envoy 1.40's per-plugin counters (`wasm.<plugin name>.*`) and per-runtime VM count.
const RELOAD_SUCCESS: &str = "wasm.hokusai_auth.vm_reload_success";
const RELOAD_FAILURE: &str = "wasm.hokusai_auth.vm_reload_failure";
const RELOAD_BACKOFF: &str = "wasm.hokusai_auth.vm_reload_backoff";
const VMS_CREATED: &str = "wasm.envoy.wasm.runtime.v8.created";

async fn start(legacy_fail_open_false: bool) -> Stack {
    Stack::start_with(StackOptions {
        envoy: EnvoyOptions {
            workers: 1,
            trap_path: Some(TRAP),
            legacy_fail_open_false,
            ..EnvoyOptions::default()
        },
        ..StackOptions::default()
    })
    .await
}

async fn get(client: &Client, stack: &Stack, path: &str) -> Response {
    client
        .get(stack.envoy.plain_url(path))
        .header("authorization", bearer(READWRITE_KEY))
        .send()
        .await
        .expect("request through Envoy")
}

fn upstream_requests(stack: &Stack) -> u64 {
    stack.echo.as_ref().expect("echo upstream").requests()
}

/// A served request, validated and cached, then the trap: Envoy's own empty 503, and
/// nothing reaches the upstream.
async fn serve_then_trap(client: &Client, stack: &Stack) {
    let reply = echoed(get(client, stack, SEARCH).await).await;
    assert_eq!(reply.header("x-api-key-id"), Some("key-rw-0001"));
    assert_eq!(stack.auth().validate_calls(), 1);
    assert_eq!(upstream_requests(stack), 1);

    let resp = client
        .get(stack.envoy.plain_url(&format!("{TRAP}?query=ignored")))
        .header("authorization", bearer(READWRITE_KEY))
        .header("x-request-id", TRAP_REQUEST_ID)
        .send()
        .await
        .expect("request through Envoy");
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    assert_eq!(status, 503, "a crashed VM must fail closed; body: {body}");
    // Envoy's reply, not one of the filter's JSON replies: the VM died mid-request.
    assert_eq!(body, "", "a crash is answered by Envoy with an empty body");
    assert_eq!(
        upstream_requests(stack),
        1,
        "the trapping request was forwarded"
    );
}

/// Polls (bounded) until `text()` contains `needle`: Envoy writes its logs asynchronously.
async fn wait_for_log(what: &str, text: impl Fn() -> String, needle: &str) {
    for _ in 0..150 {
        if text().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never showed {needle:?}:\n{}", text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_vm_fails_closed_then_a_fresh_vm_serves_with_the_cache_intact() {
    let stack = start(false).await;
    let client = plain_client();
    serve_then_trap(&client, &stack).await;
    let trapped_at = Instant::now();
    let vms_before_reload = stack.envoy.stat(VMS_CREATED).await;
    assert_eq!(stack.envoy.stat(RELOAD_SUCCESS).await, 0);

    // Until the backoff has passed since the VM was loaded, the worker has no VM: every
    // request is refused, none forwarded. Then one request reloads it and is served.
    // 200 tries 25 ms apart cover several reload intervals.
    let mut refused = 0u64;
    let mut healed = None;
    for _ in 0..200 {
        let resp = get(&client, &stack, SEARCH).await;
        if resp.status() == 200 {
            healed = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 503, "while the VM is down");
        assert_eq!(
            upstream_requests(&stack),
            1,
            "forwarded while the VM was down"
        );
        refused += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let healed = healed.unwrap_or_else(|| {
        panic!(
            "the VM was not reloaded after {refused} requests over {:?}\n{}",
            trapped_at.elapsed(),
            stack.envoy.log()
        )
    });
    eprintln!(
        "e2e: served again {:?} after the trap, {refused} requests refused meanwhile \
         (reload interval {RELOAD_INTERVAL:?})",
        trapped_at.elapsed()
    );

    // The fresh VM makes the full decision (identity headers set) and finds the verdict
    // the old VM cached: shared data lives in Envoy, keyed by vm_id, not in the VM.
    let reply = echoed(healed).await;
    assert_eq!(reply.header("x-api-key-id"), Some("key-rw-0001"));
    assert_eq!(reply.header("x-auth-path"), Some("external"));
    assert_eq!(
        stack.auth().validate_calls(),
        1,
        "the verdict cache should survive a VM reload"
    );
    assert_eq!(upstream_requests(&stack), 2);

    // What an operator sees in the stats: one reload, each refused request counted as a
    // reload skipped for the backoff, one more VM created.
    assert_eq!(stack.envoy.stat(RELOAD_SUCCESS).await, 1);
    assert_eq!(stack.envoy.stat(RELOAD_FAILURE).await, 0);
    assert_eq!(stack.envoy.stat(RELOAD_BACKOFF).await, refused);
    assert_eq!(stack.envoy.stat(VMS_CREATED).await, vms_before_reload + 1);

    // ... and in the logs: the trap in Envoy's log, the crash reply in the access log.
    wait_for_log(
        "Envoy's log",
        || stack.envoy.log(),
        "proxy_on_request_headers failed: Uncaught RuntimeError: unreachable",
    )
    .await;
    let trapped = stack.envoy.access_record(TRAP_REQUEST_ID).await;
    assert_eq!(
        (&trapped["path"], &trapped["status"], &trapped["details"]),
        (
            &serde_json::json!(TRAP),
            &serde_json::json!(503),
            &serde_json::json!("wasm_fail_stream")
        ),
        "{trapped}"
    );

    // Healed for good: later requests are served without another reload.
    for _ in 0..3 {
        echoed(get(&client, &stack, SEARCH).await).await;
    }
    assert_eq!(stack.envoy.stat(RELOAD_SUCCESS).await, 1);
    assert_eq!(stack.auth().validate_calls(), 1);
}

/// The legacy setting, for contrast: without a failure policy that reloads, the crashed
/// VM is never replaced. Watched for twice the interval FAIL_RELOAD heals within; the
/// counters show Envoy never even considered a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_legacy_fail_open_false_a_crashed_vm_stays_dead() {
    let stack = start(true).await;
    let client = plain_client();
    serve_then_trap(&client, &stack).await;
    let trapped_at = Instant::now();
    let vms_after_trap = stack.envoy.stat(VMS_CREATED).await;

    let mut refused = 0u64;
    while trapped_at.elapsed() < 2 * RELOAD_INTERVAL && refused < 400 {
        let resp = get(&client, &stack, SEARCH).await;
        assert_eq!(resp.status(), 503, "the dead VM served a request");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        refused >= 10,
        "too few requests to show anything: {refused}"
    );
    assert_eq!(upstream_requests(&stack), 1);
    assert_eq!(stack.envoy.stat(RELOAD_SUCCESS).await, 0);
    assert_eq!(stack.envoy.stat(RELOAD_BACKOFF).await, 0);
    assert_eq!(stack.envoy.stat(VMS_CREATED).await, vms_after_trap);
}

/// The committed config reloads a crashed VM and carries no test switch.
#[test]
fn committed_config_has_the_reload_policy_and_no_trap() {
    let yaml = std::fs::read_to_string(paths::envoy_yaml()).expect("read envoy/envoy.yaml");
    assert_eq!(yaml.matches("failure_policy: FAIL_RELOAD").count(), 1);
    assert!(!yaml.contains("fail_open"), "legacy fail_open is back");
    assert!(
        !yaml.contains("trap_path"),
        "the test-only trap is committed"
    );
}
