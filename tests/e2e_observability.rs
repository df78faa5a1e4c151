//! What operators see from Envoy alone: labelled Prometheus counts, the access log's verdict
//! facts, and no secret anywhere in any log, with Envoy at debug and the filter at trace.

mod e2e;

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::clients::*;
use e2e::paths;
use e2e::stack::*;

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";
const CREATE: &str = "/api/2.0/mlflow/runs/create";

/// The filter's series from `/stats/prometheus` (`hokusai_auth_*`), as `name{labels}` → value.
fn filter_series(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("hokusai_auth_") && !l.contains("_bucket{"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The notAfter of a certificate file, as Unix seconds (via openssl).
fn not_after(cert: &str) -> f64 {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(paths::cert(cert))
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let date = text
        .trim()
        .trim_start_matches("notAfter=")
        .trim_end_matches('Z');
    // "2029-03-05 19:25:53"
    let (day, time) = date.split_once(' ').expect("iso date");
    let d: Vec<i64> = day.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<i64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + (yoe * 365 + yoe / 4 - yoe / 100 + doy) - 719_468;
    (days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) as f64
}

async fn status(resp: reqwest::Response) -> u16 {
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_shows_exact_counts_per_label_after_a_scripted_mix() {
    let stack = Stack::start().await;
    let plain = plain_client();
    let internal = tls_client(Some("client"));
    let unlisted = tls_client(Some("unlisted-client"));
    let url = |p: &str| stack.envoy.plain_url(p);

    for _ in 0..2 {
        assert_eq!(
            status(plain.get(url("/health")).send().await.unwrap()).await,
            200
        );
    }
    for _ in 0..3 {
        let resp = plain.get(url(SEARCH)).send().await.unwrap();
        assert_refused(resp, 401, "API key required", None).await;
    }
    for _ in 0..4 {
        let resp = plain
            .get(url(SEARCH))
            .header("authorization", bearer(READWRITE_KEY));
        assert_eq!(status(resp.send().await.unwrap()).await, 200);
    }
    let resp = plain
        .post(url(CREATE))
        .header("x-api-key", READONLY_KEY)
        .body("{}");
    let resp = resp.send().await.unwrap();
    assert_refused(resp, 403, "Insufficient permissions", Some("mlflow:write")).await;
    let resp = plain.get(url(SEARCH)).header("x-api-key", EXPIRED_KEY);
    let resp = resp.send().await.unwrap();
    assert_refused(resp, 401, "Invalid or expired API key", None).await;
    for _ in 0..2 {
        let resp = internal
            .get(stack.envoy.tls_url(SEARCH))
            .send()
            .await
            .unwrap();
        assert_eq!(status(resp).await, 200);
    }
    let resp = unlisted
        .get(stack.envoy.tls_url(SEARCH))
        .send()
        .await
        .unwrap();
    assert_refused(resp, 401, "API key required", None).await;

    let identity = "spiffe://hokusai.internal/ns/development/sa/hokusai-api";
    let expected: BTreeMap<String, f64> = [
        ("hokusai_auth_requests{path=\"exempt\"}", 2.0),
        ("hokusai_auth_requests{path=\"external\"}", 10.0),
        ("hokusai_auth_requests{path=\"internal\"}", 2.0),
        ("hokusai_auth_decisions{outcome=\"allow\"}", 8.0),
        ("hokusai_auth_decisions{outcome=\"stale\"}", 0.0),
        ("hokusai_auth_decisions{outcome=\"401\"}", 5.0),
        ("hokusai_auth_decisions{outcome=\"403\"}", 1.0),
        ("hokusai_auth_decisions{outcome=\"429\"}", 0.0),
        ("hokusai_auth_decisions{outcome=\"503\"}", 0.0),
        ("hokusai_auth_cache{result=\"hit\"}", 3.0),
        ("hokusai_auth_cache{result=\"miss\"}", 3.0),
        ("hokusai_auth_callouts{}", 3.0),
        ("hokusai_auth_callout_retries{}", 0.0),
        ("hokusai_auth_callout_cap_rejections{}", 0.0),
        ("hokusai_auth_coalesced{}", 0.0),
        ("hokusai_auth_callouts_abandoned{}", 0.0),
        ("hokusai_auth_mtls_fallbacks{}", 1.0),
        ("hokusai_auth_callout_failures{reason=\"timeout\"}", 0.0),
        ("hokusai_auth_callout_failures{reason=\"reset\"}", 0.0),
        ("hokusai_auth_callout_failures{reason=\"5xx\"}", 0.0),
        ("hokusai_auth_callout_failures{reason=\"bad_reply\"}", 0.0),
        ("hokusai_auth_callout_failures{reason=\"dispatch\"}", 0.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cert_gauge = format!("hokusai_auth_peer_cert_not_after{{identity=\"{identity}\"}}");
    let want_not_after = not_after("client.crt");

    // The workers flush their counts on a 1 s tick: wait (bounded) until they have.
    let mut got = BTreeMap::new();
    for _ in 0..50 {
        got = filter_series(&stack.envoy.prometheus().await);
        let counts_match = expected.iter().all(|(k, v)| got.get(k) == Some(v));
        if counts_match && got.get(&cert_gauge) == Some(&want_not_after) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (series, value) in &expected {
        assert_eq!(got.get(series), Some(value), "{series}; all: {got:#?}");
    }
    assert_eq!(got.get(&cert_gauge), Some(&want_not_after), "{got:#?}");
    let histogram = "hokusai_auth_callout_latency_ms_count{}";
    let text = stack.envoy.prometheus().await;
    assert!(
        text.lines().any(|l| l.starts_with(histogram)),
        "the callout latency histogram is exported: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_carry_the_verdicts_facts() {
    let stack = Stack::start().await;
    let plain = plain_client();
    let external = plain
        .get(stack.envoy.plain_url(SEARCH))
        .header("authorization", bearer(READWRITE_KEY))
        .header("x-request-id", "rid-external")
        // A client cannot pose as the verdict in the log.
        .header("x-auth-path", "internal")
        .header("x-api-key-id", "forged");
    assert_eq!(status(external.send().await.unwrap()).await, 200);
    let denied = plain
        .get(stack.envoy.plain_url(SEARCH))
        .header("x-request-id", "rid-denied");
    assert_eq!(status(denied.send().await.unwrap()).await, 401);
    let internal = tls_client(Some("client"))
        .get(stack.envoy.tls_url(SEARCH))
        .header("x-request-id", "rid-internal");
    assert_eq!(status(internal.send().await.unwrap()).await, 200);

    // The verdict's facts: a JSON object in the record's `auth` string.
    let auth = |record: &serde_json::Value| -> serde_json::Value {
        let text = record["auth"]
            .as_str()
            .unwrap_or_else(|| panic!("{record}"));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {record}"))
    };
    let external = stack.envoy.access_record("rid-external").await;
    assert_eq!(
        auth(&external),
        serde_json::json!({"path": "external", "method": "api_key", "outcome": "allow",
                           "cache": "miss", "key_id": "key-rw-0001", "user_id": "dev-user-1"}),
        "{external}"
    );
    assert_eq!(external["status"], 200);
    let denied = stack.envoy.access_record("rid-denied").await;
    assert_eq!(denied["status"], 401, "{denied}");
    assert_eq!(
        auth(&denied),
        serde_json::json!({"path": "external", "method": "none", "outcome": "401", "cache": "none"})
    );
    let internal = stack.envoy.access_record("rid-internal").await;
    assert_eq!(
        auth(&internal),
        serde_json::json!({"path": "internal", "method": "mtls", "outcome": "allow",
                           "cache": "none", "user_id": "internal_service",
                           "peer": "spiffe://hokusai.internal/ns/development/sa/hokusai-api"})
    );
    for line in stack.envoy.access_log().lines() {
        assert!(
            !line.contains(READWRITE_KEY) && !line.contains("forged"),
            "{line}"
        );
    }
}

const FORGED_AGENT: &str = r#"ua", "auth": "{\"outcome\":\"allow\"}"#;

/// What a client sends cannot write the audit trail: a request id, a path and a user agent
/// that spell out another verdict stay values of their own record, and the filter's line
/// for the denial quotes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_verdict_in_client_values_stays_a_value() {
    let stack = Stack::start().await;
    let forged = r#"x" reason="internal peer" path=internal auth={"path":"internal","method":"mtls","outcome":"allow","user_id":"admin"}"#;
    let resp =
        plain_client()
            .get(stack.envoy.plain_url(
                "/api/2.0/mlflow/experiments/search?q=%22%7D%7B%22outcome%22:%22allow%22",
            ))
            .header("x-request-id", forged)
            .header("user-agent", FORGED_AGENT)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 401);
    // The access log: every line one JSON object; this request's holds the true verdict.
    let record = stack.envoy.access_record(forged).await;
    let auth: serde_json::Value = serde_json::from_str(record["auth"].as_str().unwrap()).unwrap();
    assert_eq!(
        auth,
        serde_json::json!({"path": "external", "method": "none", "outcome": "401", "cache": "none"})
    );
    assert_eq!(record["status"], 401);
    assert_eq!(
        record["user_agent"],
        r#"ua", "auth": "{\"outcome\":\"allow\"}"#
    );
    assert_eq!(
        stack.envoy.access_records().len(),
        stack.envoy.access_log().lines().count(),
        "one record per line"
    );
    // The filter's own line: the request id as one quoted value, then the true reason.
    let mut line = None;
    for _ in 0..100 {
        line = stack
            .envoy
            .log()
            .lines()
            .find(|l| l.contains("denied 401"))
            .map(String::from);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = line.expect("the filter's denied line");
    let after = line.split_once("request_id=").expect("request_id=").1;
    let mut values = serde_json::Deserializer::from_str(after).into_iter::<String>();
    assert_eq!(values.next().expect("a quoted request id").unwrap(), forged);
    let rest = &after[values.byte_offset()..];
    assert_eq!(
        rest.trim_start(),
        "reason=\"no credential\" path=external method=none key=-",
        "{line}"
    );
}

/// Lines of a PEM private key's body: any of them in a log means the key leaked.
fn pem_body_lines(file: &str) -> Vec<String> {
    std::fs::read_to_string(paths::cert(file))
        .expect("read key")
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_log_at_debug_and_trace() {
    // Everything at debug, the filter at trace; Envoy's http, router and jwt components are
    // held at info because Envoy itself prints every request header there at debug, with no
    // redaction (envoyproxy/envoy#9652): that is Envoy's log, not the filter's, and no
    // production should run those components at debug.
    let args = [
        "-l",
        "debug",
        "--component-log-level",
        "wasm:trace,http:info,router:info,jwt:info",
    ];
    let stack = Stack::start_with_envoy_args(StackOptions::default(), &args).await;
    let plain = plain_client();
    let url = |p: &str| stack.envoy.plain_url(p);
    for key in [
        READWRITE_KEY,
        READONLY_KEY,
        EXPIRED_KEY,
        OTHER_SERVICE_KEY,
        "hk_unknown_key_0007",
    ] {
        for _ in 0..2 {
            plain
                .get(url(SEARCH))
                .header("authorization", bearer(key))
                .send()
                .await
                .unwrap();
            plain
                .post(url(CREATE))
                .header("x-api-key", key)
                .body("{}")
                .send()
                .await
                .unwrap();
        }
    }
    let internal = tls_client(Some("client"));
    internal
        .get(stack.envoy.tls_url(SEARCH))
        .send()
        .await
        .unwrap();
    // Make sure the trace-level filter log actually ran, or the scan proves nothing.
    let mut envoy_log = String::new();
    for _ in 0..50 {
        envoy_log = stack.envoy.log();
        if envoy_log.contains("denied 401") && envoy_log.contains("[wasm]") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        envoy_log.contains("denied 401"),
        "the filter's deny line is logged: {envoy_log}"
    );
    let fingerprint =
        hokusai_auth_filter::core::verdict::digest::KeyDigest::of(EXPIRED_KEY.as_bytes())
            .fingerprint();
    assert!(
        envoy_log.contains(&fingerprint),
        "keys appear as fingerprints"
    );

    let mut secrets: Vec<String> = [
        READWRITE_KEY,
        READONLY_KEY,
        EXPIRED_KEY,
        OTHER_SERVICE_KEY,
        "hk_unknown_key_0007",
        SERVICE_TOKEN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    secrets.extend(pem_body_lines("client.key"));
    secrets.extend(pem_body_lines("server.key"));
    let all = format!("{envoy_log}\n{}", stack.envoy.access_log());
    for secret in &secrets {
        if let Some(line) = all.lines().find(|l| l.contains(secret.as_str())) {
            panic!("a secret reached the log: {line}");
        }
    }
    for line in all.lines() {
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.contains("bearer hk_") && !lower.contains("bearer e2e"),
            "an Authorization value reached the log: {line}"
        );
    }
}
