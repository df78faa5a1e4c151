//! The verdict cache seen from outside: one key, many requests, one callout.

mod e2e;

use e2e::clients::*;
use e2e::stack::*;
use tokio::task::JoinSet;

/// Sends `n` requests at once, alternating Authorization and x-api-key; all must pass.
async fn burst(stack: &Stack, key: &'static str, n: usize) {
    let client = plain_client();
    let mut set = JoinSet::new();
    for i in 0..n {
        let mut req = client.get(stack.envoy.plain_url(&format!(
            "/api/2.0/mlflow/experiments/get?experiment_id={i}"
        )));
        req = if i % 2 == 0 {
            req.header("authorization", bearer(key))
        } else {
            req.header("x-api-key", key)
        };
        set.spawn(async move { req.send().await.expect("request").status().as_u16() });
    }
    while let Some(status) = set.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_requests_with_one_key_make_one_callout() {
    let stack = Stack::start().await;
    let client = plain_client();
    let url = stack.envoy.plain_url("/api/2.0/mlflow/experiments/search");
    // The first request fills the cache that both Envoy workers share.
    echoed(
        client
            .get(&url)
            .header("authorization", bearer(READWRITE_KEY))
            .send()
            .await
            .unwrap(),
    )
    .await;
    burst(&stack, READWRITE_KEY, 49).await;
    for _ in 0..50 {
        let resp = client
            .get(&url)
            .header("x-api-key", READWRITE_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(stack.auth().validate_calls(), 1);
    assert_eq!(stack.auth_cluster_requests().await, 1);
    // Both bounds: every request after the first was answered from the cache.
    stack
        .await_filter_counter("hokusai_auth.requests.path=external", 100)
        .await;
    assert_eq!(
        stack.filter_counter("hokusai_auth.cache.result=hit").await,
        99
    );
    assert_eq!(
        stack.filter_counter("hokusai_auth.cache.result=miss").await,
        1
    );
    assert_eq!(stack.filter_counter("hokusai_auth.callouts").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_remembered_too() {
    let stack = Stack::start().await;
    let client = plain_client();
    for _ in 0..5 {
        let resp = client
            .get(stack.envoy.plain_url("/api/2.0/mlflow/experiments/search"))
            .header("authorization", bearer("hk_unknown_key_9999"))
            .send()
            .await
            .unwrap();
        assert_refused(resp, 401, "Invalid or expired API key", None).await;
    }
    assert_eq!(stack.auth().validate_calls(), 1);
    stack
        .await_filter_counter("hokusai_auth.requests.path=external", 5)
        .await;
    assert_eq!(
        stack.filter_counter("hokusai_auth.cache.result=hit").await,
        4
    );
    assert_eq!(
        stack.filter_counter("hokusai_auth.cache.result=miss").await,
        1
    );
    assert_eq!(
        stack
            .filter_counter("hokusai_auth.decisions.outcome=401")
            .await,
        5
    );
}
