//! The dev auth service, exercised over real HTTP on an ephemeral port.

use std::time::Duration;

use hokusai_devstack::{dev_keys, DevAuth, DevAuthConfig, Fault, KeySpec, KeyStore, ServeOptions};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn client() -> Client {
    // no_proxy: a proxy from the environment must not see loopback test traffic.
    Client::builder().no_proxy().build().expect("client")
}

async fn start(service_token: Option<&str>) -> std::io::Result<DevAuth> {
    start_opts(service_token, ServeOptions::default()).await
}

async fn start_opts(service_token: Option<&str>, opts: ServeOptions) -> std::io::Result<DevAuth> {
    DevAuth::start_with(
        DevAuthConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            keys: KeyStore::dev_keys(),
            service_token: service_token.map(str::to_owned),
        },
        opts,
    )
    .await
}

async fn validate(auth: &DevAuth, body: Value) -> reqwest::Result<(StatusCode, Value)> {
    let resp = client()
        .post(format!("{}/api/v1/keys/validate", auth.base_url()))
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    Ok((status, resp.json().await?))
}

fn body_for(key: &str) -> Value {
    json!({"api_key": key, "service_id": "ml-platform", "client_ip": "10.1.2.3"})
}

#[tokio::test]
async fn valid_key_gets_the_full_allow_reply() -> TestResult {
    let auth = start(None).await?;
    let (status, body) = validate(&auth, body_for(dev_keys::READWRITE)).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "valid": true,
            "key_id": "key-rw-0001",
            "user_id": "dev-user-1",
            "service_id": "ml-platform",
            "scopes": ["mlflow:read", "mlflow:write"],
            "rate_limit_per_hour": 1000,
            "expires_at": null,
        })
    );
    let (_, ro) = validate(&auth, body_for(dev_keys::READONLY)).await?;
    assert_eq!(ro["scopes"], json!(["mlflow:read"]));
    assert_eq!(ro["rate_limit_per_hour"], Value::Null);
    let (_, limited) = validate(&auth, body_for(dev_keys::LIMITED)).await?;
    assert_eq!(limited["rate_limit_per_hour"], json!(3));
    auth.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bad_keys_get_401_and_other_service_403() -> TestResult {
    let auth = start(None).await?;
    let invalid = json!({"detail": "Invalid or expired API key"});
    for key in ["hk_nobody_knows_this", dev_keys::EXPIRED, dev_keys::REVOKED] {
        assert_eq!(
            validate(&auth, body_for(key)).await?,
            (StatusCode::UNAUTHORIZED, invalid.clone()),
            "{key}"
        );
    }
    assert_eq!(
        validate(&auth, body_for(dev_keys::OTHER_SERVICE)).await?,
        (
            StatusCode::FORBIDDEN,
            json!({"detail": "Insufficient permissions"})
        )
    );
    // The same key is fine for the service it belongs to.
    let (status, body) = validate(
        &auth,
        json!({"api_key": dev_keys::OTHER_SERVICE, "service_id": "other-service"}),
    )
    .await?;
    assert_eq!(
        (status, body["key_id"].clone()),
        (StatusCode::OK, json!("key-os-0005"))
    );
    Ok(())
}

#[tokio::test]
async fn malformed_requests_are_refused() -> TestResult {
    let auth = start(None).await?;
    let url = format!("{}/api/v1/keys/validate", auth.base_url());
    let c = client();
    let not_json = c.post(&url).body("{\"api_key\": ").send().await?;
    assert_eq!(not_json.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = validate(&auth, json!({"api_key": 42, "service_id": "ml-platform"})).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = validate(&auth, json!(["not", "an", "object"])).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = validate(&auth, json!({"service_id": "ml-platform"})).await?;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNAUTHORIZED,
            json!({"detail": "API key required"})
        )
    );
    assert_eq!(
        c.get(&url).send().await?.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    let health = c.get(format!("{}/health", auth.base_url())).send().await?;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        c.get(format!("{}/elsewhere", auth.base_url()))
            .send()
            .await?
            .status(),
        StatusCode::NOT_FOUND
    );
    Ok(())
}

#[tokio::test]
async fn bearer_transport_reads_the_key_from_authorization() -> TestResult {
    let auth = start(None).await?;
    let url = format!("{}/api/v1/keys/validate", auth.base_url());
    let resp = client()
        .post(&url)
        .header("authorization", format!("Bearer {}", dev_keys::READONLY))
        .json(&json!({"service_id": "ml-platform", "client_ip": "10.0.0.1"}))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await?["key_id"], json!("key-ro-0002"));
    // Scheme is case-insensitive, and an empty body is allowed.
    let resp = client()
        .post(&url)
        .header("authorization", format!("bEaReR {}", dev_keys::EXPIRED))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A key in the body wins over the header.
    let resp = client()
        .post(&url)
        .header("authorization", format!("Bearer {}", dev_keys::EXPIRED))
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn service_token_is_required_for_body_keys_when_configured() -> TestResult {
    let auth = start(Some("svc-token-123")).await?;
    let url = format!("{}/api/v1/keys/validate", auth.base_url());
    let c = client();

    let (status, body) = validate(&auth, body_for(dev_keys::READWRITE)).await?;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNAUTHORIZED,
            json!({"detail": "Service token required"})
        )
    );

    let wrong = c
        .post(&url)
        .bearer_auth("not-the-token")
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await?;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let right = c
        .post(&url)
        .bearer_auth("svc-token-123")
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await?;
    assert_eq!(right.status(), StatusCode::OK);

    // Bearer transport carries no body key, so no service token applies.
    let bearer = c
        .post(&url)
        .bearer_auth(dev_keys::READWRITE)
        .json(&json!({"service_id": "ml-platform"}))
        .send()
        .await?;
    assert_eq!(bearer.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn counts_calls_and_records_the_last_request() -> TestResult {
    let auth = start(None).await?;
    assert_eq!(auth.validate_calls(), 0);
    assert!(auth.last_validate_request().is_none());
    for _ in 0..3 {
        validate(&auth, body_for(dev_keys::READWRITE)).await?;
    }
    validate(&auth, body_for("unknown")).await?;
    assert_eq!(auth.validate_calls(), 4);
    assert_eq!(auth.ext_authz_calls(), 0);

    client()
        .post(format!("{}/api/v1/keys/validate", auth.base_url()))
        .header("x-request-id", "req-42")
        .json(&body_for(dev_keys::READONLY))
        .send()
        .await?;
    let last = auth.last_validate_request().expect("recorded");
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/api/v1/keys/validate");
    assert_eq!(last.header("X-Request-Id"), Some("req-42"));
    assert_eq!(last.header("content-type"), Some("application/json"));
    assert_eq!(last.body, Some(body_for(dev_keys::READONLY)));

    auth.reset_counts();
    assert_eq!((auth.validate_calls(), auth.ext_authz_calls()), (0, 0));
    Ok(())
}

#[tokio::test]
async fn keys_can_be_added_and_revoked_while_running() -> TestResult {
    let auth = DevAuth::start(DevAuthConfig {
        listen: "127.0.0.1:0".parse()?,
        keys: KeyStore::from_plain(&[(
            "hk_test_a",
            KeySpec::new("key-a", "user-a").with_scopes(&["mlflow:read"]),
        )]),
        service_token: None,
    })
    .await?;
    assert_eq!(
        validate(&auth, body_for("hk_test_a")).await?.0,
        StatusCode::OK
    );
    assert_eq!(
        validate(&auth, body_for("hk_test_b")).await?.0,
        StatusCode::UNAUTHORIZED
    );
    auth.insert_key(
        "hk_test_b",
        KeySpec::new("key-b", "user-b").with_expires_at("2999-01-01T00:00:00Z"),
    )?;
    let (status, body) = validate(&auth, body_for("hk_test_b")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_at"], json!("2999-01-01T00:00:00Z"));
    assert!(auth.revoke_key("hk_test_a"));
    assert_eq!(
        validate(&auth, body_for("hk_test_a")).await?.0,
        StatusCode::UNAUTHORIZED
    );
    Ok(())
}

#[tokio::test]
async fn fault_status_garbage_and_rate_limit() -> TestResult {
    let auth = start(None).await?;
    let url = format!("{}/api/v1/keys/validate", auth.base_url());
    let c = client();

    auth.set_fault(Fault::Status(500));
    let resp = c
        .post(&url)
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);

    auth.set_fault(Fault::Status(503));
    let resp = c
        .post(&url)
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    auth.set_fault(Fault::Garbage);
    let resp = c
        .post(&url)
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await?;
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    auth.set_fault(Fault::RateLimited { retry_after_s: 7 });
    let resp = c
        .post(&url)
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");

    auth.set_fault(Fault::None);
    assert_eq!(auth.fault(), Fault::None);
    let resp = c
        .post(&url)
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    // Faulted requests count too: the filter did call out.
    assert_eq!(auth.validate_calls(), 5);
    Ok(())
}

#[tokio::test]
async fn fault_close_connection_answers_nothing() -> TestResult {
    let auth = start(None).await?;
    let url = format!("{}/api/v1/keys/validate", auth.base_url());
    auth.set_fault(Fault::CloseConnection);
    let err = client()
        .post(&url)
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await
        .expect_err("the connection is dropped without a response");
    assert!(!err.is_timeout(), "{err:?}");
    assert!(auth.last_validate_request().is_some());

    auth.set_fault(Fault::None);
    let resp = client()
        .post(&url)
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(auth.validate_calls(), 2);
    Ok(())
}

#[tokio::test]
async fn fault_slow_delays_then_answers_normally() -> TestResult {
    let auth = start(None).await?;
    let url = format!("{}/api/v1/keys/validate", auth.base_url());

    // Far longer than the client waits: the client gives up first.
    auth.set_fault(Fault::Slow(Duration::from_secs(60)));
    let err = Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()?
        .post(&url)
        .json(&body_for(dev_keys::READWRITE))
        .send()
        .await
        .expect_err("still waiting");
    assert!(err.is_timeout(), "{err:?}");

    // A short delay still ends in the normal verdict.
    auth.set_fault(Fault::Slow(Duration::from_millis(20)));
    let (status, body) = validate(&auth, body_for(dev_keys::READWRITE)).await?;
    assert_eq!(
        (status, body["user_id"].clone()),
        (StatusCode::OK, json!("dev-user-1"))
    );
    let (status, _) = validate(&auth, body_for(dev_keys::EXPIRED)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn ext_authz_endpoint_follows_envoys_contract() -> TestResult {
    let auth = start(None).await?;
    let base = format!("{}/ext_authz", auth.base_url());
    let c = client();

    let ok = c
        .get(format!(
            "{base}/api/2.0/mlflow/experiments/search?max_results=5"
        ))
        .header("x-api-key", dev_keys::READWRITE)
        .send()
        .await?;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["x-user-id"], "dev-user-1");
    assert_eq!(ok.headers()["x-api-key-id"], "key-rw-0001");
    assert_eq!(ok.headers()["x-auth-scopes"], "mlflow:read mlflow:write");

    let ok = c
        .delete(format!("{base}/api/2.0/mlflow/runs/delete"))
        .bearer_auth(dev_keys::READONLY)
        .send()
        .await?;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["x-auth-scopes"], "mlflow:read");

    let none = c.post(&base).send().await?;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.headers()["www-authenticate"],
        "Bearer realm=\"hokusai\""
    );
    assert_eq!(
        none.json::<Value>().await?,
        json!({"detail": "API key required"})
    );

    let expired = c
        .get(format!("{base}/x"))
        .header("x-api-key", dev_keys::EXPIRED)
        .send()
        .await?;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        expired.json::<Value>().await?,
        json!({"detail": "Invalid or expired API key"})
    );

    let other = c
        .get(format!("{base}/x"))
        .bearer_auth(dev_keys::OTHER_SERVICE)
        .send()
        .await?;
    assert_eq!(other.status(), StatusCode::FORBIDDEN);

    auth.set_fault(Fault::Status(502));
    let faulted = c
        .get(format!("{base}/x"))
        .bearer_auth(dev_keys::READWRITE)
        .send()
        .await?;
    assert_eq!(faulted.status(), StatusCode::BAD_GATEWAY);

    assert_eq!(auth.ext_authz_calls(), 6);
    assert_eq!(auth.validate_calls(), 0);
    Ok(())
}

#[tokio::test]
async fn http_control_api_only_when_enabled() -> TestResult {
    let plain = start(None).await?;
    let c = client();
    let resp = c
        .get(format!("{}/__dev/stats", plain.base_url()))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let auth = start_opts(
        None,
        ServeOptions {
            control_api: true,
            log_requests: false,
            ..ServeOptions::default()
        },
    )
    .await?;
    let base = auth.base_url();
    validate(&auth, body_for(dev_keys::READWRITE)).await?;

    let stats: Value = c
        .get(format!("{base}/__dev/stats"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        stats,
        json!({"validate_calls": 1, "ext_authz_calls": 0, "token_validate_calls": 0, "max_in_flight": 1, "fault": {"fault": "none"}})
    );

    let set = c
        .post(format!("{base}/__dev/fault"))
        .json(&json!({"fault": "rate_limited", "retry_after_s": 3}))
        .send()
        .await?;
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(auth.fault(), Fault::RateLimited { retry_after_s: 3 });
    let (status, _) = validate(&auth, body_for(dev_keys::READWRITE)).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let bad = c
        .post(format!("{base}/__dev/fault"))
        .json(&json!({"fault": "explode"}))
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let reset: Value = c
        .post(format!("{base}/__dev/reset"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        reset,
        json!({"validate_calls": 0, "ext_authz_calls": 0, "token_validate_calls": 0, "max_in_flight": 0, "fault": {"fault": "none"}})
    );
    assert!(auth.last_validate_request().is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_many_concurrent_connections() -> TestResult {
    let auth = start_opts(
        None,
        ServeOptions {
            control_api: false,
            log_requests: false,
            ..ServeOptions::default()
        },
    )
    .await?;
    let url = format!("{}/api/v1/keys/validate", auth.base_url());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let url = url.clone();
        tasks.spawn(async move {
            // One client each: a separate connection per request.
            let key = if i % 2 == 0 {
                dev_keys::READWRITE
            } else {
                dev_keys::EXPIRED
            };
            let resp = client().post(url).json(&body_for(key)).send().await?;
            Ok::<_, reqwest::Error>((i, resp.status()))
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, status) = done??;
        let want = if i % 2 == 0 {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, want, "request {i}");
    }
    assert_eq!(auth.validate_calls(), 200);
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_listening() -> TestResult {
    let auth = start(None).await?;
    let url = format!("{}/api/v1/keys/validate", auth.base_url());
    assert_eq!(
        client()
            .post(&url)
            .json(&body_for("x"))
            .send()
            .await?
            .status(),
        StatusCode::UNAUTHORIZED
    );
    auth.shutdown().await;
    let err = client()
        .post(&url)
        .json(&body_for("x"))
        .send()
        .await
        .expect_err("closed");
    assert!(err.is_connect(), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn key_file_loads_from_disk() -> TestResult {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dev-keys.json");
    let store = KeyStore::from_file(path)?;
    assert_eq!(store.len(), KeyStore::dev_keys().len());
    let text = std::fs::read_to_string(path)?;
    assert!(
        !text.contains("hk_dev_"),
        "the key file must hold hashes only"
    );
    Ok(())
}

#[tokio::test]
async fn going_down_refuses_connections_and_coming_up_serves_the_same_port() -> TestResult {
    let auth = start(None).await?;
    let addr = auth.addr();
    assert_eq!(
        validate(&auth, body_for(dev_keys::READWRITE)).await?.0,
        StatusCode::OK
    );
    auth.set_fault(Fault::Status(503));
    auth.go_down().await;
    assert!(!auth.is_up().await);
    let err = validate(&auth, body_for(dev_keys::READWRITE))
        .await
        .expect_err("nothing listens");
    assert!(err.is_connect(), "{err:?}");
    auth.go_down().await; // already down: nothing happens

    auth.come_up().await?;
    assert!(auth.is_up().await);
    assert_eq!(auth.addr(), addr);
    // Counters and the fault survive the restart; the refused call never arrived.
    assert_eq!(
        validate(&auth, body_for(dev_keys::READWRITE)).await?.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(auth.validate_calls(), 2);
    auth.set_fault(Fault::None);
    auth.come_up().await?; // already up: nothing happens
    assert_eq!(
        validate(&auth, body_for(dev_keys::READWRITE)).await?.0,
        StatusCode::OK
    );
    auth.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_fault_for_n_calls_ends_by_itself() -> TestResult {
    let auth = start(None).await?;
    auth.set_fault_for(Fault::Status(500), 2);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(validate(&auth, body_for(dev_keys::READWRITE)).await?.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK
        ]
    );
    assert_eq!(auth.fault(), Fault::None);

    // Once, for a dropped connection: the next call is answered.
    auth.set_fault_for(Fault::CloseConnection, 1);
    assert!(validate(&auth, body_for(dev_keys::READWRITE))
        .await
        .is_err());
    assert_eq!(
        validate(&auth, body_for(dev_keys::READWRITE)).await?.0,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn counts_finished_calls_and_records_every_request_id() -> TestResult {
    let auth = start(None).await?;
    auth.set_fault(Fault::Slow(Duration::from_millis(300)));
    let url = format!("{}/api/v1/keys/validate", auth.base_url());
    let slow = tokio::spawn(
        client()
            .post(&url)
            .header("x-request-id", "rid-slow")
            .json(&body_for(dev_keys::READWRITE))
            .send(),
    );
    // The call has arrived but is not finished while the fault holds it.
    for _ in 0..100 {
        if auth.validate_calls() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!((auth.validate_calls(), auth.validate_finished()), (1, 0));
    assert_eq!(slow.await??.status(), StatusCode::OK);
    assert_eq!(auth.validate_finished(), 1);
    auth.set_fault(Fault::None);
    validate(&auth, body_for(dev_keys::READONLY)).await?;
    assert_eq!(auth.validate_request_ids(), ["rid-slow", "-"]);
    auth.reset_counts();
    assert!(auth.validate_request_ids().is_empty());
    assert_eq!(auth.validate_finished(), 0);
    Ok(())
}

#[tokio::test]
async fn held_calls_count_towards_the_most_served_at_once_until_released() -> TestResult {
    let auth = start(None).await?;
    auth.set_fault(Fault::Hold);
    let url = format!("{}/api/v1/keys/validate", auth.base_url());
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let (url, body) = (url.clone(), body_for(dev_keys::READWRITE));
            tokio::spawn(async move { client().post(url).json(&body).send().await })
        })
        .collect();
    // Bounded wait for all three to be held.
    for _ in 0..400 {
        if auth.held_calls() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(auth.held_calls(), 3);
    auth.set_fault(Fault::None);
    auth.release_held();
    for call in calls {
        assert_eq!(call.await??.status(), StatusCode::OK);
    }
    assert_eq!(auth.max_in_flight(), 3);
    // A reset starts the count again from what is in flight now: nothing.
    auth.reset_counts();
    assert_eq!(auth.max_in_flight(), 0);
    Ok(())
}
