//! The replies the filter makes itself (CONTRACT section 5), seen from outside Envoy.

mod e2e;

use e2e::clients::*;
use e2e::stack::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_the_contract_status_detail_and_headers() {
    let stack = Stack::start().await;
    let client = plain_client();
    let search = stack.envoy.plain_url("/api/2.0/mlflow/experiments/search");
    let log_metric = stack.envoy.plain_url("/api/2.0/mlflow/runs/log-metric");
    let long_key = "k".repeat(300);
    let cases: [(&str, &str, Option<&str>, u16, &str); 5] = [
        ("GET", &search, None, 401, "API key required"),
        (
            "GET",
            &search,
            Some(&long_key),
            401,
            "Invalid API key format",
        ),
        (
            "GET",
            &search,
            Some(EXPIRED_KEY),
            401,
            "Invalid or expired API key",
        ),
        (
            "GET",
            &search,
            Some(OTHER_SERVICE_KEY),
            403,
            "Insufficient permissions",
        ),
        (
            "POST",
            &log_metric,
            Some(READONLY_KEY),
            403,
            "Insufficient permissions",
        ),
    ];
    for (i, (method, url, key, status, detail)) in cases.into_iter().enumerate() {
        let request_id = format!("e2e-refusal-{i}");
        let mut req = client
            .request(method.parse().unwrap(), url)
            .header("x-request-id", &request_id);
        if let Some(key) = key {
            req = req.header("authorization", bearer(key));
        }
        let (got, headers, body) = filter_reply(req.send().await.unwrap()).await;
        assert_eq!(
            (got, body["detail"].as_str()),
            (status, Some(detail)),
            "case {i}"
        );
        // MLflow's error dialect, so its client names the cause (CONTRACT section 5).
        let code = if status == 401 {
            "UNAUTHENTICATED"
        } else {
            "PERMISSION_DENIED"
        };
        assert_eq!(body["error_code"], code, "case {i}");
        let message = body["message"].as_str().unwrap_or_default();
        match body["required_scope"].as_str() {
            Some(scope) => assert_eq!(message, format!("{detail} (requires {scope})"), "case {i}"),
            None => assert_eq!(message, detail, "case {i}"),
        }
        assert_eq!(headers["content-type"], "application/json", "case {i}");
        assert_eq!(headers["x-request-id"], request_id.as_str(), "case {i}");
        if status == 401 {
            assert_eq!(
                headers["www-authenticate"], "Bearer realm=\"hokusai\"",
                "case {i}"
            );
        }
    }
    // The malformed key never left the filter; the other three keys each did once.
    assert_eq!(stack.auth().validate_calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_miss_names_the_scope_and_reads_still_work() {
    let stack = Stack::start().await;
    let client = plain_client();
    let resp = client
        .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/log-metric"))
        .header("authorization", bearer(READONLY_KEY))
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, _, body) = filter_reply(resp).await;
    assert_eq!(status, 403);
    // docs: the first scope of the needed set, as configured in envoy.yaml.
    assert_eq!(body["required_scope"], "mlflow:write");
    assert_eq!(
        body["message"],
        "Insufficient permissions (requires mlflow:write)"
    );
    // Reads sent as POST are still reads.
    let resp = client
        .post(stack.envoy.plain_url("/api/2.0/mlflow/runs/search"))
        .header("authorization", bearer(READONLY_KEY))
        .body("{}")
        .send()
        .await
        .unwrap();
    echoed(resp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_hourly_limit_gets_429() {
    let stack = Stack::start().await;
    let client = plain_client();
    let url = stack.envoy.plain_url("/api/2.0/mlflow/experiments/search");
    // hk_dev_limited_0004 allows 3 requests an hour.
    for _ in 0..3 {
        let resp = client
            .get(&url)
            .header("authorization", bearer(LIMITED_KEY))
            .send()
            .await
            .unwrap();
        echoed(resp).await;
    }
    let before = unix_now();
    let resp = client
        .get(&url)
        .header("authorization", bearer(LIMITED_KEY))
        .send()
        .await
        .unwrap();
    let after = unix_now();
    let (status, headers, body) = filter_reply(resp).await;
    assert_eq!(status, 429);
    assert_eq!(body["detail"], "Rate limit exceeded");
    assert_eq!(body["error_code"], "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(body["message"], "Rate limit exceeded");
    // docs: the seconds left in the clock-aligned hour the filter counts in.
    let retry: u64 = headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("retry-after in whole seconds");
    let left = |t: u64| 3600 - t % 3600;
    let (earliest, latest) = (left(after), left(before));
    let in_window = if before / 3600 == after / 3600 {
        (earliest..=latest).contains(&retry)
    } else {
        // The hour turned during the request: either window's count is right.
        retry <= latest || retry >= earliest
    };
    assert!(
        in_window,
        "retry-after {retry}, expected {earliest}..={latest}"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
