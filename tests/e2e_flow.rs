//! Coalescing, the in-flight cap and the one retry, through a real Envoy 1.40 (two
//! workers: `--concurrency 2`) in front of the dev auth service.

mod e2e;

use std::sync::Arc;
use std::time::Duration;

use e2e::clients::*;
use e2e::envoy::Tuning;
use e2e::raw_http::RawRequest;
use e2e::stack::*;
use hokusai_devstack::{EchoReply, Fault, KeySpec};
use tokio::task::JoinSet;

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";
/// Envoy's worker threads in the suite; at most one callout per key per worker.
const WORKERS: u64 = 2;

#[track_caller]
fn assert_readwrite_identity(got: &EchoReply) {
    assert_eq!(got.header("x-user-id"), Some("dev-user-1"), "{got:?}");
    assert_eq!(got.header("x-api-key-id"), Some("key-rw-0001"));
    assert_eq!(
        got.header("x-auth-scopes"),
        Some("mlflow:read mlflow:write")
    );
    assert_eq!(got.header("x-auth-path"), Some("external"));
    assert_eq!(got.header("x-auth-method"), Some("api_key"));
    assert_eq!(got.header("x-auth-stale"), None);
}

/// The filter's 503 for an unavailable auth service.
async fn assert_unavailable(resp: reqwest::Response) {
    let (status, headers, body) = filter_reply(resp).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["detail"], "Authentication service unavailable");
    assert_eq!(headers["retry-after"], "1");
}

async fn get(stack: &Stack, key: &str) -> reqwest::Response {
    plain_client()
        .get(stack.envoy.plain_url(SEARCH))
        .header("authorization", bearer(key))
        .send()
        .await
        .expect("request through Envoy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_with_one_new_key_make_one_callout_per_worker_at_most() {
    let stack = Arc::new(Stack::start().await);
    // Slow enough that the whole burst arrives while the first callouts are out.
    stack
        .auth()
        .set_fault(Fault::Slow(Duration::from_millis(1500)));
    let client = plain_client();
    let mut set = JoinSet::new();
    for i in 0..50 {
        let req = client
            .get(stack.envoy.plain_url(&format!("{SEARCH}?max_results={i}")))
            .header("authorization", bearer(READWRITE_KEY))
            .header("x-request-id", format!("e2e-burst-{i}"));
        set.spawn(async move { (i, req.send().await.expect("request")) });
    }
    while let Some(joined) = set.join_next().await {
        let (i, resp) = joined.unwrap();
        assert_eq!(
            resp.headers()["x-request-id"],
            format!("e2e-burst-{i}").as_str()
        );
        let got = echoed(resp).await;
        assert_readwrite_identity(&got);
        assert_eq!(got.path, format!("{SEARCH}?max_results={i}"));
        assert_eq!(
            got.header("x-request-id"),
            Some(format!("e2e-burst-{i}").as_str())
        );
    }
    let calls = stack.auth().validate_calls();
    eprintln!("50 concurrent requests, one new key: {calls} auth calls");
    assert!((1..=WORKERS).contains(&calls), "{calls} auth calls");
    assert_eq!(stack.auth_cluster_requests().await, calls);
    stack
        .await_filter_counter("hokusai_auth.requests.path=external", 50)
        .await;
    assert_eq!(stack.filter_counter("hokusai_auth.callouts").await, calls);
    let coalesced = stack.filter_counter("hokusai_auth.coalesced").await;
    let hits = stack.filter_counter("hokusai_auth.cache.result=hit").await;
    assert_eq!(
        calls + coalesced + hits,
        50,
        "leaders, waiters and cache hits"
    );
    assert!(coalesced >= 1, "the burst never waited on a callout");
    assert_eq!(
        stack
            .filter_counter("hokusai_auth.decisions.outcome=allow")
            .await,
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_whose_leader_hung_up_are_decided_by_its_callout() {
    // A long timeout, so the held calls cannot time out while the test waits on flushes.
    let stack = Stack::start_with(StackOptions::tuned(Tuning {
        timeout_ms: Some(30_000),
        ..Tuning::default()
    }))
    .await;
    // Every call is held at the auth service until the test lets them go.
    stack.auth().set_fault(Fault::Hold);
    const N: usize = 6;
    let auth_header = bearer(READWRITE_KEY);
    let mut pending = Vec::new();
    for i in 0..N {
        let rid = format!("e2e-lead-{i}");
        let headers = [
            ("authorization", auth_header.as_str()),
            ("x-request-id", &rid),
        ];
        pending.push((
            rid.clone(),
            RawRequest::get(stack.envoy.ports.plain, SEARCH, &headers).await,
        ));
    }
    // Every request has been seen, as a leader (one callout per worker) or a waiter, and
    // every callout is held.
    until("every request seen and every callout held", || async {
        let callouts = stack.filter_counter("hokusai_auth.callouts").await;
        callouts + stack.filter_counter("hokusai_auth.coalesced").await == N as u64
            && stack.auth().held_calls() == callouts
    })
    .await;
    let leaders = stack.auth().validate_request_ids();
    assert!(
        (1..=WORKERS as usize).contains(&leaders.len()),
        "{leaders:?}"
    );
    let (gone, waiting): (Vec<_>, Vec<_>) = pending
        .into_iter()
        .partition(|(rid, _)| leaders.contains(rid));
    // The leaders' clients hang up; Envoy resets their streams, and their callouts go on.
    stack.hang_up(gone, leaders.len() as u64).await;
    stack.auth().set_fault(Fault::None);
    stack.auth().release_held();
    for (rid, request) in waiting {
        let resp = request.response().await;
        assert_eq!(resp.status, 200, "{rid}: {resp:?}");
        assert_eq!(resp.header("x-request-id"), Some(rid.as_str()));
        let got: EchoReply = serde_json::from_value(resp.json()).expect("an echo reply");
        assert_readwrite_identity(&got);
        assert_eq!(got.header("x-request-id"), Some(rid.as_str()));
    }
    // The leaders' own callouts decided their waiters: nothing was sent twice.
    assert_eq!(stack.auth().validate_request_ids(), leaders);
    stack
        .await_filter_counter(
            "hokusai_auth.requests.path=external",
            (N - leaders.len()) as u64,
        )
        .await;
    assert_eq!(
        stack.filter_counter("hokusai_auth.callouts").await,
        leaders.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_whose_client_hung_up_still_fills_the_cache() {
    // A long timeout, so the held calls cannot time out while the test waits on flushes.
    let stack = Stack::start_with(StackOptions::tuned(Tuning {
        timeout_ms: Some(30_000),
        ..Tuning::default()
    }))
    .await;
    stack.auth().set_fault(Fault::Hold);
    let auth_header = bearer(READWRITE_KEY);
    let request = RawRequest::get(
        stack.envoy.ports.plain,
        SEARCH,
        &[("authorization", auth_header.as_str())],
    )
    .await;
    until("the callout held", || async {
        stack.auth().held_calls() == 1
    })
    .await;
    stack.hang_up(request, 1).await;
    stack.auth().set_fault(Fault::None);
    stack.auth().release_held();
    // The reply reached the filter, for nobody but the cache.
    stack
        .await_filter_counter("hokusai_auth.callouts_abandoned", 1)
        .await;
    let resp = get(&stack, READWRITE_KEY).await;
    assert_eq!(resp.status(), 200);
    let got: EchoReply = resp.json().await.expect("an echo reply");
    assert_readwrite_identity(&got);
    assert_eq!(
        stack.auth().validate_calls(),
        1,
        "no second call for the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callouts_of_clients_that_hung_up_count_against_the_cap() {
    // A long timeout: the held calls must stay in flight for the whole test (each step
    // waits for the workers' 1 s flush), not time out and free their places.
    let stack = Stack::start_with(StackOptions::tuned(Tuning {
        max_pending_callouts: Some(2),
        timeout_ms: Some(30_000),
        ..Tuning::default()
    }))
    .await;
    stack.auth().set_fault(Fault::Hold);
    let cap = 2 * WORKERS;
    // New keys, each hung up at once, until both workers hold their cap of calls; a request
    // that lands on a full worker is refused at once instead.
    let mut sent = 0;
    while stack.auth().held_calls() < cap {
        assert!(sent < 40, "the workers never filled up");
        let key = format!("hk_e2e_capgone_{sent}");
        let header = bearer(&key);
        let request = RawRequest::get(
            stack.envoy.ports.plain,
            SEARCH,
            &[("authorization", &header)],
        )
        .await;
        sent += 1;
        let seen = sent;
        until("the request decided or held", || async {
            let callouts = stack.filter_counter("hokusai_auth.callouts").await;
            let rejected = stack
                .filter_counter("hokusai_auth.callout_cap_rejections")
                .await;
            callouts + rejected == seen && stack.auth().held_calls() == callouts
        })
        .await;
        drop(request);
    }
    // Every client has gone, yet Envoy still holds the calls: a new key, on either worker,
    // gets 503 at once and no call reaches the auth service.
    let calls = stack.auth().validate_calls();
    for i in 0..4 {
        assert_unavailable(get(&stack, &format!("hk_e2e_capgone_new_{i}")).await).await;
    }
    assert_eq!(stack.auth().validate_calls(), calls);
    // Once the held calls are answered, there is room again.
    stack.auth().set_fault(Fault::None);
    stack.auth().release_held();
    stack
        .await_filter_counter("hokusai_auth.callouts_abandoned", cap)
        .await;
    assert_eq!(get(&stack, READWRITE_KEY).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_in_flight_cap_new_keys_get_503_at_once() {
    let stack = Arc::new(
        Stack::start_with(StackOptions::tuned(Tuning {
            max_pending_callouts: Some(2),
            timeout_ms: Some(5000),
            ..Tuning::default()
        }))
        .await,
    );
    const N: usize = 12;
    for i in 0..N {
        stack
            .auth()
            .insert_key(
                &format!("hk_e2e_cap_{i:02}"),
                KeySpec::new(&format!("key-cap-{i}"), &format!("user-cap-{i}")),
            )
            .unwrap();
    }
    stack
        .auth()
        .set_fault(Fault::Slow(Duration::from_millis(1500)));
    let client = plain_client();
    let mut set = JoinSet::new();
    for i in 0..N {
        let req = client
            .get(stack.envoy.plain_url(SEARCH))
            .header("authorization", bearer(&format!("hk_e2e_cap_{i:02}")));
        let stack = Arc::clone(&stack);
        set.spawn(async move {
            let resp = req.send().await.expect("request");
            // How many auth calls had been answered when this reply came.
            let answered = stack.auth().validate_finished();
            (i, answered, resp)
        });
    }
    let (mut allowed, mut refused) = (0u64, 0u64);
    while let Some(joined) = set.join_next().await {
        let (i, answered, resp) = joined.unwrap();
        if resp.status() == 200 {
            allowed += 1;
            let got = echoed(resp).await;
            assert_eq!(
                got.header("x-user-id"),
                Some(format!("user-cap-{i}").as_str())
            );
            assert_eq!(
                got.header("x-api-key-id"),
                Some(format!("key-cap-{i}").as_str())
            );
        } else {
            refused += 1;
            assert_eq!(
                answered, 0,
                "key {i} was refused only after a callout came back"
            );
            assert_unavailable(resp).await;
        }
    }
    eprintln!("{N} new keys, cap 2 per worker: {allowed} validated, {refused} refused at once");
    assert!((1..=2 * WORKERS).contains(&allowed), "{allowed} allowed");
    assert_eq!(allowed + refused, N as u64);
    assert_eq!(
        stack.auth().validate_calls(),
        allowed,
        "one callout per allowed key"
    );
    stack
        .await_filter_counter("hokusai_auth.requests.path=external", N as u64)
        .await;
    assert_eq!(
        stack
            .filter_counter("hokusai_auth.callout_cap_rejections")
            .await,
        refused
    );
    assert_eq!(stack.filter_counter("hokusai_auth.callouts").await, allowed);
    // With the callouts back, a new key gets its slot.
    stack.auth().set_fault(Fault::None);
    echoed(get(&stack, READWRITE_KEY).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_once_is_retried_and_the_request_succeeds() {
    let stack = Stack::start().await;
    stack.auth().set_fault_for(Fault::CloseConnection, 1);
    let got = echoed(get(&stack, READWRITE_KEY).await).await;
    assert_readwrite_identity(&got);
    assert_eq!(
        stack.auth().validate_calls(),
        2,
        "the call and its one retry"
    );
    assert_eq!(stack.auth_cluster_requests().await, 2);
    stack
        .await_filter_counter("hokusai_auth.requests.path=external", 1)
        .await;
    assert_eq!(stack.filter_counter("hokusai_auth.callouts").await, 2);
    assert_eq!(
        stack.filter_counter("hokusai_auth.callout_retries").await,
        1
    );
    assert_eq!(
        stack
            .filter_counter("hokusai_auth.callout_failures.reason=reset")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_once_then_answered_503() {
    let mut stack = Stack::start_with(StackOptions {
        auth: AuthMode::Down,
        ..StackOptions::default()
    })
    .await;
    assert_unavailable(get(&stack, READWRITE_KEY).await).await;
    assert_eq!(
        stack
            .envoy
            .stat("cluster.auth_service.upstream_cx_connect_fail")
            .await,
        2,
        "one connect attempt and one retry"
    );
    stack
        .await_filter_counter("hokusai_auth.requests.path=external", 1)
        .await;
    assert_eq!(
        stack.filter_counter("hokusai_auth.callout_retries").await,
        1
    );
    assert_eq!(
        stack
            .filter_counter("hokusai_auth.callout_failures.reason=reset")
            .await,
        1
    );
    stack.start_auth_now().await;
    assert_readwrite_identity(&echoed(get(&stack, READWRITE_KEY).await).await);
    assert_eq!(stack.auth().validate_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_error_statuses_are_not_retried() {
    let stack = Stack::start_with(StackOptions::tuned(Tuning {
        timeout_ms: Some(400),
        ..Tuning::default()
    }))
    .await;
    stack
        .auth()
        .set_fault(Fault::Slow(Duration::from_millis(1500)));
    assert_unavailable(get(&stack, READWRITE_KEY).await).await;
    assert_eq!(stack.auth().validate_calls(), 1);
    stack.auth().set_fault(Fault::Status(503));
    assert_unavailable(get(&stack, READWRITE_KEY).await).await;
    assert_eq!(stack.auth().validate_calls(), 2);
    stack
        .await_filter_counter("hokusai_auth.requests.path=external", 2)
        .await;
    assert_eq!(stack.filter_counter("hokusai_auth.callouts").await, 2);
    assert_eq!(
        stack.filter_counter("hokusai_auth.callout_retries").await,
        0
    );
    assert_eq!(
        stack
            .filter_counter("hokusai_auth.callout_failures.reason=timeout")
            .await,
        1
    );
    assert_eq!(
        stack
            .filter_counter("hokusai_auth.callout_failures.reason=5xx")
            .await,
        1
    );
}
