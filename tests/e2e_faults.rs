//! The fault suite: a real Envoy 1.40 in front of a sick auth service. Slow past
//! `timeout_ms`, 500, 503, garbage, dropped connections, refused connections, and a bounded
//! load while it flaps between up and down. Only the contract's statuses ever come back
//! (200 for cached keys and stale-within-window, 503 with `retry-after: 1` otherwise, never
//! a 500), the VM never fails, cached keys keep working, and a stale verdict is served
//! only within `cache.stale_if_error_s`.

mod e2e;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::clients::*;
use e2e::envoy::Tuning;
use e2e::stack::*;
use hokusai_devstack::{EchoReply, Fault, KeySpec};
use tokio::task::JoinSet;

const READ: &str = "/api/2.0/mlflow/experiments/search";
const WRITE: &str = "/api/2.0/mlflow/runs/create";

/// The VM never failed: the stats did not move, no reply says `wasm_fail_stream`, Envoy
/// still runs and still counts the filter's metrics.
async fn assert_vm_never_failed(stack: &mut Stack, before: &[(&'static str, u64)]) {
    stack.envoy.assert_running();
    assert_eq!(stack.wasm_failure_stats().await, before);
    for (name, value) in before {
        if name.starts_with("wasm.hokusai_auth.") {
            assert_eq!(*value, 0, "{name}");
        }
    }
    let log = stack.envoy.access_log();
    assert!(!log.is_empty(), "no access log");
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("wasm_fail_stream"))
        .collect();
    assert!(failed.is_empty(), "wasm_fail_stream replies: {failed:#?}");
}

/// What one response was, in a line for a failure message: the filter's `detail`, or
/// who the request went upstream as.
fn describe(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> String {
    let what = match serde_json::from_str::<EchoReply>(body) {
        Ok(got) => format!(
            "upstream as {:?}/{:?}, x-auth-stale {:?}",
            got.header("x-api-key-id"),
            got.header("x-user-id"),
            got.header("x-auth-stale")
        ),
        Err(_) => format!("body {:?}", body.chars().take(200).collect::<String>()),
    };
    format!(
        "{status} retry-after={:?} {what}",
        headers.get("retry-after")
    )
}

/// Forwarded with a stale verdict: the filter marks the request upstream.
fn served_stale(body: &str) -> bool {
    serde_json::from_str::<EchoReply>(body).is_ok_and(|got| got.header("x-auth-stale") == Some("1"))
}

/// The filter's 503: the contract's body and `retry-after: 1`.
fn is_unavailable(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> bool {
    status == 503
        && headers.get("retry-after").is_some_and(|v| v == "1")
        && headers
            .get("content-type")
            .is_some_and(|v| v == "application/json")
        && serde_json::from_str::<serde_json::Value>(body)
            .is_ok_and(|json| json["detail"] == "Authentication service unavailable")
}

fn filter_detail(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("detail")?
        .as_str()
        .map(str::to_owned)
}

/// The echo reply when the request went upstream as `user` with key `key_id`.
fn forwarded_as(status: u16, body: &str, key_id: &str, user: &str) -> Option<EchoReply> {
    let got: EchoReply = serde_json::from_str(body).ok()?;
    (status == 200
        && got.header("x-api-key-id") == Some(key_id)
        && got.header("x-user-id") == Some(user)
        && got.header("x-auth-path") == Some("external"))
    .then_some(got)
}

struct Sent {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn send(client: &reqwest::Client, url: String, key: Option<&str>, write: bool) -> Sent {
    let mut req = if write {
        client.post(url)
    } else {
        client.get(url)
    };
    if let Some(key) = key {
        req = req.header("authorization", bearer(key));
    }
    let resp = req.send().await.expect("a response through Envoy");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("response body");
    Sent {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------- one fault at a time

#[derive(Debug, Clone, Copy)]
enum Sickness {
    Fault(Fault),
    Refusing,
}

struct Case {
    label: &'static str,
    sickness: Sickness,
    /// `hokusai_auth.callout_failures.reason=<this>` counts each failed new key.
    reason: &'static str,
    /// Auth calls per new key: 2 when the failure is retried once, 0 when refused.
    calls_per_key: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_keeps_cached_keys_working_and_refuses_new_keys_with_503() {
    let mut stack = Stack::start_with(StackOptions::tuned(Tuning {
        timeout_ms: Some(400),
        ..Tuning::default()
    }))
    .await;
    let before = stack.wasm_failure_stats().await;
    let auth = stack.auth();
    auth.insert_key("hk_e2e_cached_rw", KeySpec::new("key-cached-rw", "user-rw"))
        .unwrap();
    auth.insert_key(
        "hk_e2e_cached_ro",
        KeySpec::new("key-cached-ro", "user-ro").with_scopes(&["mlflow:read"]),
    )
    .unwrap();
    let client = plain_client();
    let url = |path: &str| stack.envoy.plain_url(path);
    for key in ["hk_e2e_cached_rw", "hk_e2e_cached_ro"] {
        let sent = send(&client, url(READ), Some(key), false).await;
        assert_eq!(sent.status, 200, "warming {key}: {}", sent.body);
    }

    let cases = [
        Case {
            label: "slow",
            sickness: Sickness::Fault(Fault::Slow(Duration::from_millis(1200))),
            reason: "timeout",
            calls_per_key: 1,
        },
        Case {
            label: "500",
            sickness: Sickness::Fault(Fault::Status(500)),
            reason: "5xx",
            calls_per_key: 1,
        },
        Case {
            label: "503",
            sickness: Sickness::Fault(Fault::Status(503)),
            reason: "5xx",
            calls_per_key: 1,
        },
        Case {
            label: "garbage",
            sickness: Sickness::Fault(Fault::Garbage),
            reason: "bad_reply",
            calls_per_key: 1,
        },
        Case {
            label: "reset",
            sickness: Sickness::Fault(Fault::CloseConnection),
            reason: "reset",
            calls_per_key: 2,
        },
        Case {
            label: "refused",
            sickness: Sickness::Refusing,
            reason: "reset",
            calls_per_key: 0,
        },
    ];
    // Every mismatch, so one run shows the whole matrix.
    let mut problems: Vec<String> = Vec::new();
    let mut sent_external = 2u64;
    let mut failures: BTreeMap<&str, u64> = BTreeMap::new();
    let mut retries = 0u64;
    for case in &cases {
        let label = case.label;
        let new_key = format!("hk_e2e_new_{label}");
        auth.insert_key(
            &new_key,
            KeySpec::new(&format!("key-new-{label}"), "user-new"),
        )
        .unwrap();
        match case.sickness {
            Sickness::Fault(fault) => auth.set_fault(fault),
            Sickness::Refusing => auth.go_down().await,
        }
        let calls_before = auth.validate_calls();

        // Cached verdicts answer without the auth service.
        let sent = send(&client, url(READ), Some("hk_e2e_cached_rw"), false).await;
        match forwarded_as(sent.status, &sent.body, "key-cached-rw", "user-rw") {
            Some(got) if got.header("x-auth-stale").is_none() => {}
            _ => problems.push(format!(
                "{label}: cached key: {}",
                describe(sent.status, &sent.headers, &sent.body)
            )),
        }
        let sent = send(&client, url(WRITE), Some("hk_e2e_cached_ro"), true).await;
        if sent.status != 403
            || filter_detail(&sent.body).as_deref() != Some("Insufficient permissions")
        {
            problems.push(format!(
                "{label}: cached read-only key writing: {}",
                describe(sent.status, &sent.headers, &sent.body)
            ));
        }
        // A key nobody has validated yet cannot be: 503, whether it is good or not.
        for key in [new_key.as_str(), "hk_e2e_never_issued"] {
            let sent = send(&client, url(READ), Some(key), false).await;
            if !is_unavailable(sent.status, &sent.headers, &sent.body) {
                problems.push(format!(
                    "{label}: new key {key}: {}",
                    describe(sent.status, &sent.headers, &sent.body)
                ));
            }
        }
        sent_external += 4;
        *failures.entry(case.reason).or_default() += 2;
        if case.calls_per_key == 2 || matches!(case.sickness, Sickness::Refusing) {
            retries += 2;
        }
        let calls = auth.validate_calls() - calls_before;
        if calls != 2 * case.calls_per_key {
            problems.push(format!(
                "{label}: {calls} auth calls for two new keys, expected {}",
                2 * case.calls_per_key
            ));
        }

        // Errors are never cached: once the service is well, the new key passes.
        match case.sickness {
            Sickness::Fault(_) => auth.set_fault(Fault::None),
            Sickness::Refusing => auth.come_up().await.expect("listen again"),
        }
        let sent = send(&client, url(READ), Some(&new_key), false).await;
        sent_external += 1;
        if forwarded_as(
            sent.status,
            &sent.body,
            &format!("key-new-{label}"),
            "user-new",
        )
        .is_none()
        {
            problems.push(format!(
                "{label}: new key after recovery: {}",
                describe(sent.status, &sent.headers, &sent.body)
            ));
        }
    }

    stack
        .await_filter_counter("hokusai_auth.requests.path=external", sent_external)
        .await;
    for reason in ["timeout", "5xx", "bad_reply", "reset", "dispatch"] {
        let name = format!("hokusai_auth.callout_failures.reason={reason}");
        let got = stack.filter_counter(&name).await;
        let want = failures.get(reason).copied().unwrap_or(0);
        if got != want {
            problems.push(format!("{name} = {got}, expected {want}"));
        }
    }
    let got = stack.filter_counter("hokusai_auth.callout_retries").await;
    if got != retries {
        problems.push(format!(
            "hokusai_auth.callout_retries = {got}, expected {retries}"
        ));
    }
    let got = stack
        .filter_counter("hokusai_auth.decisions.outcome=503")
        .await;
    if got != 2 * cases.len() as u64 {
        problems.push(format!("hokusai_auth.decisions.outcome=503 = {got}"));
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_vm_never_failed(&mut stack, &before).await;
}

// ---------------------------------------------------------------- stale within the window

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_verdict_is_served_only_within_stale_if_error_s() {
    const TTL: Duration = Duration::from_secs(1);
    const STALE: Duration = Duration::from_secs(2);
    let mut stack = Stack::start_with(StackOptions::tuned(Tuning {
        timeout_ms: Some(300),
        ttl_s: Some(TTL.as_secs()),
        stale_if_error_s: Some(STALE.as_secs()),
        ..Tuning::default()
    }))
    .await;
    let before = stack.wasm_failure_stats().await;
    stack
        .auth()
        .insert_key("hk_e2e_stale", KeySpec::new("key-stale", "user-stale"))
        .unwrap();
    // A few clients, so the requests spread over both workers' connections.
    let clients: Vec<reqwest::Client> = (0..4).map(|_| plain_client()).collect();
    let url = stack.envoy.plain_url(READ);

    // The key's first use: its verdict is cached during this very exchange, so the cache
    // entry was written between `sent_at` and `validated_at`.
    let sent_at = Instant::now();
    let sent = send(&clients[0], url.clone(), Some("hk_e2e_stale"), false).await;
    let validated_at = Instant::now();
    assert!(forwarded_as(sent.status, &sent.body, "key-stale", "user-stale").is_some());
    stack.auth().go_down().await;

    // The filter counts in whole seconds, so an entry written at `t` expires within
    // (t + TTL - 1 s, t + TTL] and its stale window ends within (t + TTL + STALE - 1 s,
    // t + TTL + STALE]. Classify each request by when it was sent and answered.
    let fresh_until = validated_at + TTL;
    let stale_until = validated_at + TTL + STALE;
    // Decided before this, the verdict is surely still usable (fresh or stale).
    let surely_usable_until = sent_at + TTL + STALE - Duration::from_secs(1);
    let mut problems = Vec::new();
    let (mut fresh, mut stale, mut unavailable_after) = (0, 0, 0);
    let mut interval = tokio::time::interval(Duration::from_millis(25));
    for i in 0..400 {
        // Pacing only: each request's outcome is judged by its own timestamps.
        interval.tick().await;
        let at = Instant::now();
        if at > stale_until + Duration::from_millis(500) {
            break;
        }
        let sent = send(&clients[i % 4], url.clone(), Some("hk_e2e_stale"), false).await;
        let back = Instant::now();
        let is_stale = served_stale(&sent.body);
        let forwarded = forwarded_as(sent.status, &sent.body, "key-stale", "user-stale").is_some();
        let line = describe(sent.status, &sent.headers, &sent.body);
        let t = at.duration_since(validated_at);
        if forwarded && is_stale {
            stale += 1;
            if at >= stale_until {
                problems.push(format!(
                    "stale verdict served {t:?} after validation: {line}"
                ));
            }
        } else if forwarded {
            fresh += 1;
            if at >= fresh_until {
                problems.push(format!(
                    "verdict served as fresh {t:?} after validation: {line}"
                ));
            }
        } else if is_unavailable(sent.status, &sent.headers, &sent.body) {
            if at >= stale_until {
                unavailable_after += 1;
            } else if back < surely_usable_until {
                problems.push(format!(
                    "503 {t:?} after validation, inside the window: {line}"
                ));
            }
        } else {
            problems.push(format!("unexpected reply {t:?} after validation: {line}"));
        }
    }
    eprintln!("stale window: {fresh} fresh, {stale} stale, {unavailable_after} refused after it");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(stale > 0, "no stale verdict was ever served");
    assert!(unavailable_after > 0, "the window never closed");

    // The error was never cached: back up, the key is validated afresh.
    stack.auth().come_up().await.expect("listen again");
    let calls = stack.auth().validate_calls();
    let sent = send(&clients[0], url, Some("hk_e2e_stale"), false).await;
    let got = forwarded_as(sent.status, &sent.body, "key-stale", "user-stale")
        .expect("the key passes once the service is back");
    assert_eq!(got.header("x-auth-stale"), None);
    assert_eq!(stack.auth().validate_calls(), calls + 1);
    stack
        .await_filter_counter("hokusai_auth.decisions.outcome=stale", stale)
        .await;
    assert_vm_never_failed(&mut stack, &before).await;
}

// ---------------------------------------------------------------- flapping under load

#[derive(Debug, Clone, Copy)]
enum Phase {
    Healthy,
    Sick(Fault),
    Down,
    /// Down and up again every 250 ms.
    Flapping,
}

/// One 1.5 s phase after another: a healthy phase between any two sick ones, so a cached
/// key is refreshed well within its TTL + stale window (2 s + 4 s).
const SCHEDULE: [Phase; 12] = [
    Phase::Healthy,
    Phase::Sick(Fault::Slow(Duration::from_millis(800))),
    Phase::Healthy,
    Phase::Down,
    Phase::Healthy,
    Phase::Sick(Fault::Status(500)),
    Phase::Healthy,
    Phase::Flapping,
    Phase::Healthy,
    Phase::Sick(Fault::CloseConnection),
    Phase::Healthy,
    Phase::Sick(Fault::Garbage),
];
const PHASE: Duration = Duration::from_millis(1500);
const LOAD_FOR: Duration = Duration::from_secs(30);
const MAX_REQUESTS: usize = 4000;
const CLIENTS: usize = 8;
/// Each client sends at most one request per period: ~130 requests/s in all.
const CLIENT_PERIOD: Duration = Duration::from_millis(60);
const HOT_KEYS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Validated before the load and used all along.
    Hot,
    /// A valid key used once, never validated before.
    Fresh,
    /// A key the service does not know.
    Unknown,
    NoKey,
}

#[derive(Default)]
struct Tally {
    by_outcome: BTreeMap<(Kind, u16, bool), u64>,
    problems: Vec<String>,
}

fn judge(kind: Kind, index: usize, sent: &Sent, tally: &mut Tally) {
    let stale = served_stale(&sent.body);
    *tally
        .by_outcome
        .entry((kind, sent.status, stale))
        .or_default() += 1;
    let ok = match kind {
        Kind::Hot => {
            let i = index % HOT_KEYS;
            forwarded_as(
                sent.status,
                &sent.body,
                &format!("key-hot-{i}"),
                &format!("user-hot-{i}"),
            )
            .is_some()
        }
        Kind::Fresh => {
            forwarded_as(
                sent.status,
                &sent.body,
                &format!("key-fresh-{index}"),
                "user-fresh",
            )
            .is_some()
                || is_unavailable(sent.status, &sent.headers, &sent.body)
        }
        Kind::Unknown => {
            (sent.status == 401
                && filter_detail(&sent.body).as_deref() == Some("Invalid or expired API key"))
                || is_unavailable(sent.status, &sent.headers, &sent.body)
        }
        Kind::NoKey => {
            sent.status == 401 && filter_detail(&sent.body).as_deref() == Some("API key required")
        }
    };
    if !ok && tally.problems.len() < 20 {
        tally.problems.push(format!(
            "{kind:?} #{index}: {}",
            describe(sent.status, &sent.headers, &sent.body)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flapping_auth_service_under_load_gets_only_contract_statuses() {
    let stack = Arc::new(
        Stack::start_with(StackOptions::tuned(Tuning {
            timeout_ms: Some(300),
            ttl_s: Some(2),
            negative_ttl_s: Some(2),
            stale_if_error_s: Some(4),
            ..Tuning::default()
        }))
        .await,
    );
    let before = stack.wasm_failure_stats().await;
    for i in 0..HOT_KEYS {
        stack
            .auth()
            .insert_key(
                &format!("hk_e2e_hot_{i}"),
                KeySpec::new(&format!("key-hot-{i}"), &format!("user-hot-{i}")),
            )
            .unwrap();
    }
    for i in 0..MAX_REQUESTS {
        stack
            .auth()
            .insert_key(
                &format!("hk_e2e_fresh_{i:04}"),
                KeySpec::new(&format!("key-fresh-{i}"), "user-fresh"),
            )
            .unwrap();
    }
    let warm = plain_client();
    for i in 0..HOT_KEYS {
        let sent = send(
            &warm,
            stack.envoy.plain_url(READ),
            Some(&format!("hk_e2e_hot_{i}")),
            false,
        )
        .await;
        assert_eq!(sent.status, 200, "warming hot key {i}: {}", sent.body);
    }

    let started = Instant::now();
    let deadline = started + LOAD_FOR;
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut load = JoinSet::new();
    for _ in 0..CLIENTS {
        let (stack, next, tally) = (Arc::clone(&stack), Arc::clone(&next), Arc::clone(&tally));
        load.spawn(async move {
            let client = plain_client();
            let url = stack.envoy.plain_url(READ);
            let mut pace = tokio::time::interval(CLIENT_PERIOD);
            loop {
                pace.tick().await;
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= MAX_REQUESTS || Instant::now() >= deadline {
                    return;
                }
                let (kind, key) = match n % 10 {
                    0..=5 => (Kind::Hot, Some(format!("hk_e2e_hot_{}", n % HOT_KEYS))),
                    6 | 7 => (Kind::Fresh, Some(format!("hk_e2e_fresh_{n:04}"))),
                    8 => (Kind::Unknown, Some(format!("hk_e2e_unknown_{n}"))),
                    _ => (Kind::NoKey, None),
                };
                let sent = send(&client, url.clone(), key.as_deref(), false).await;
                judge(kind, n, &sent, &mut tally.lock().unwrap());
            }
        });
    }

    // The auth service's timeline, phase by phase, while the load runs.
    let auth = stack.auth();
    let mut phase_no = 0;
    while Instant::now() < deadline && !load.is_empty() {
        let phase = SCHEDULE[phase_no % SCHEDULE.len()];
        let phase_end = (started + PHASE * (phase_no as u32 + 1)).min(deadline);
        match phase {
            Phase::Healthy => {
                auth.come_up().await.expect("listen again");
                auth.set_fault(Fault::None);
            }
            Phase::Sick(fault) => auth.set_fault(fault),
            Phase::Down => auth.go_down().await,
            Phase::Flapping => {
                while Instant::now() + Duration::from_millis(250) < phase_end {
                    auth.go_down().await;
                    tokio::time::sleep(Duration::from_millis(125)).await;
                    auth.come_up().await.expect("listen again");
                    tokio::time::sleep(Duration::from_millis(125)).await;
                }
            }
        }
        tokio::time::sleep_until(phase_end.into()).await;
        phase_no += 1;
    }
    while let Some(done) = load.join_next().await {
        done.unwrap();
    }
    auth.come_up().await.expect("listen again");
    auth.set_fault(Fault::None);
    let elapsed = started.elapsed();

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let total: u64 = tally.by_outcome.values().sum();
    eprintln!(
        "flapping: {total} requests in {elapsed:?}, {phase_no} phases, {} auth calls",
        auth.validate_calls()
    );
    for ((kind, status, stale), n) in &tally.by_outcome {
        eprintln!(
            "  {kind:?} {status}{} x{n}",
            if *stale { " stale" } else { "" }
        );
    }
    assert!(tally.problems.is_empty(), "{}", tally.problems.join("\n"));
    let count = |want: &dyn Fn(Kind, u16, bool) -> bool| -> u64 {
        tally
            .by_outcome
            .iter()
            .filter(|((k, s, st), _)| want(*k, *s, *st))
            .map(|(_, n)| n)
            .sum()
    };
    assert!(total >= 1000, "only {total} requests");
    // The faults really happened, and the stale path really ran.
    assert!(
        count(&|k, s, _| k == Kind::Fresh && s == 503) > 0,
        "no fresh key was ever refused"
    );
    assert!(
        count(&|k, s, _| k == Kind::Fresh && s == 200) > 0,
        "no fresh key ever passed"
    );
    assert!(
        count(&|k, _, st| k == Kind::Hot && st) > 0,
        "no hot key was ever served stale"
    );
    assert_eq!(count(&|_, s, _| s == 500), 0);

    // Envoy agrees: every request was decided by the filter as the clients saw it.
    stack
        .await_filter_counter(
            "hokusai_auth.requests.path=external",
            total + HOT_KEYS as u64,
        )
        .await;
    for (name, want) in [
        (
            "hokusai_auth.decisions.outcome=503",
            count(&|_, s, _| s == 503),
        ),
        (
            "hokusai_auth.decisions.outcome=401",
            count(&|_, s, _| s == 401),
        ),
        (
            "hokusai_auth.decisions.outcome=stale",
            count(&|_, _, st| st),
        ),
    ] {
        assert_eq!(stack.filter_counter(name).await, want, "{name}");
    }
    let mut stack = Arc::into_inner(stack).expect("the load is over");
    assert_vm_never_failed(&mut stack, &before).await;
}
