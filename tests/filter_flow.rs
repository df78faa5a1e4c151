//! Requests and their callouts on one worker, through the real `.wasm`: coalescing (one
//! callout per key, every waiting stream decided in its own context), the in-flight cap,
//! the one retry, a leader whose client hung up, and the metrics each of them counts.

mod filter_support;
mod harness;

use std::time::Duration;

use filter_support::*;
use harness::{CalloutReply, Host, Outcome, Request, StreamId, Vm};

const READ: &str = "/api/2.0/mlflow/experiments/get?experiment_id=1";
const WRITE: &str = "/api/2.0/mlflow/runs/create";
const OTHER_KEY: &str = "hk_live_story_key_0002";

fn read(rid: &str) -> Request {
    Request::get(READ)
        .bearer(KEY)
        .set_header("x-request-id", rid)
}

fn write(rid: &str) -> Request {
    Request::post(WRITE)
        .bearer(KEY)
        .set_header("x-request-id", rid)
}

fn with_key(request: Request, key: &str) -> Request {
    request.set_header("authorization", format!("Bearer {key}"))
}

fn read_only() -> CalloutReply {
    allow(&["mlflow:read"])
}

/// A counter after the tick that flushes the VM's counts to Envoy.
#[track_caller]
fn counter(vm: &mut Vm, name: &str) -> u64 {
    vm.tick();
    vm.host()
        .metric(name)
        .unwrap_or_else(|| panic!("no metric {name}: {:?}", vm.host().metric_names()))
}

#[track_caller]
fn assert_identity(outcome: &Outcome, scopes: &str) {
    outcome.assert_forwarded();
    assert_eq!(outcome.header("x-user-id").as_deref(), Some("alice"));
    assert_eq!(outcome.header("x-api-key-id").as_deref(), Some("key-0001"));
    assert_eq!(outcome.header("x-auth-scopes").as_deref(), Some(scopes));
    assert_eq!(outcome.header("x-auth-path").as_deref(), Some("external"));
    assert_eq!(outcome.header("x-auth-method").as_deref(), Some("api_key"));
    assert_eq!(outcome.header("x-auth-stale"), None);
}

#[track_caller]
fn assert_unavailable(outcome: &Outcome, rid: &str) {
    assert_reply(outcome, 503, "Authentication service unavailable");
    assert_eq!(outcome.header("retry-after").as_deref(), Some("1"));
    assert_eq!(outcome.header("x-request-id").as_deref(), Some(rid));
}

#[track_caller]
fn assert_scope_miss(outcome: &Outcome, rid: &str) {
    let body = assert_reply(outcome, 403, "Insufficient permissions");
    assert_eq!(body["required_scope"], "mlflow:write", "{body}");
    assert_eq!(outcome.header("x-request-id").as_deref(), Some(rid));
}

// ---------------------------------------------------------------- coalescing

#[test]
fn a_burst_on_one_key_makes_one_callout_and_each_stream_gets_its_own_verdict() {
    let host = Host::new();
    let mut vm = vm(&host);
    let streams: Vec<(StreamId, &str, bool)> = [
        ("rid-1", false),
        ("rid-2", true),
        ("rid-3", false),
        ("rid-4", true),
        ("rid-5", false),
    ]
    .into_iter()
    .map(|(rid, writes)| {
        let request = if writes { write(rid) } else { read(rid) };
        (vm.send(request), rid, writes)
    })
    .collect();
    for (id, _, _) in &streams {
        vm.outcome(*id).assert_paused();
    }
    let callouts = vm.callouts();
    assert_eq!(
        callouts.len(),
        1,
        "one callout for five streams: {callouts:?}"
    );
    assert_eq!(callouts[0].stream(), streams[0].0, "the first stream leads");
    assert_eq!(callouts[0].header("x-request-id").as_deref(), Some("rid-1"));

    // A read-only key: the reads go upstream, the writes are refused, each on its own.
    vm.answer_only(read_only());
    for (id, rid, writes) in &streams {
        let outcome = vm.outcome(*id);
        if *writes {
            assert_scope_miss(&outcome, rid);
        } else {
            assert_identity(&outcome, "mlflow:read");
            assert_eq!(outcome.header("x-request-id").as_deref(), Some(*rid));
        }
    }
    for (id, _, _) in &streams {
        vm.finish(*id);
    }
    vm.assert_alive();
    assert_eq!(counter(&mut vm, "hokusai_auth.callouts"), 1);
    assert_eq!(counter(&mut vm, "hokusai_auth.coalesced"), 4);
    assert_eq!(counter(&mut vm, "hokusai_auth.decisions.outcome=allow"), 3);
    assert_eq!(counter(&mut vm, "hokusai_auth.decisions.outcome=403"), 2);
    // The verdict is cached: the next stream needs no callout.
    assert_identity(&vm.complete(read("rid-6")), "mlflow:read");
    assert_eq!(vm.callout_history().len(), 1);
}

#[test]
fn waiters_share_a_denial_each_with_its_own_request_id() {
    let host = Host::new();
    let mut vm = vm(&host);
    let ids: Vec<StreamId> = ["rid-a", "rid-b", "rid-c"]
        .iter()
        .map(|rid| vm.send(read(rid)))
        .collect();
    vm.answer_only(CalloutReply::new(401));
    for (id, rid) in ids.iter().zip(["rid-a", "rid-b", "rid-c"]) {
        let outcome = vm.outcome(*id);
        assert_reply(&outcome, 401, "Invalid or expired API key");
        assert_eq!(outcome.header("x-request-id").as_deref(), Some(rid));
    }
    assert_eq!(counter(&mut vm, "hokusai_auth.decisions.outcome=401"), 3);
}

#[test]
fn waiters_share_an_outage_each_with_retry_after() {
    let host = Host::new();
    let mut vm = vm(&host);
    let first = vm.send(read("rid-a"));
    let second = vm.send(write("rid-b"));
    vm.answer_only(CalloutReply::json(500, r#"{"detail": "boom"}"#));
    assert_unavailable(&vm.outcome(first), "rid-a");
    assert_unavailable(&vm.outcome(second), "rid-b");
    assert_eq!(counter(&mut vm, "hokusai_auth.decisions.outcome=503"), 2);
    assert_eq!(
        counter(&mut vm, "hokusai_auth.callout_failures.reason=5xx"),
        1
    );
}

#[test]
fn different_keys_are_never_coalesced() {
    let host = Host::new();
    let mut vm = vm(&host);
    let first = vm.send(read("rid-a"));
    let second = vm.send(with_key(read("rid-b"), OTHER_KEY));
    let callouts = vm.callouts();
    assert_eq!(callouts.len(), 2, "{callouts:?}");
    assert_eq!(callouts[1].json()["api_key"], OTHER_KEY);
    vm.answer(callouts[1].token, CalloutReply::new(401));
    assert_reply(&vm.outcome(second), 401, "Invalid or expired API key");
    vm.outcome(first).assert_paused();
    vm.answer(callouts[0].token, read_write());
    assert_identity(&vm.outcome(first), "mlflow:read mlflow:write");
    assert_eq!(counter(&mut vm, "hokusai_auth.coalesced"), 0);
}

// ---------------------------------------------------------------- the in-flight cap

const CAPPED: &str = r#"{
    "max_pending_callouts": 2,
    "cache": {"ttl_s": 300, "negative_ttl_s": 30, "stale_if_error_s": 60}
}"#;

#[test]
fn past_max_pending_callouts_a_new_key_is_refused_at_once() {
    let host = Host::new();
    let mut vm = host.vm(CAPPED).expect("config accepted");
    let a = vm.send(with_key(read("rid-a"), "hk_cap_a"));
    let b = vm.send(with_key(read("rid-b"), "hk_cap_b"));
    assert_eq!(vm.callouts().len(), 2);

    let refused = vm.send(with_key(read("rid-c"), "hk_cap_c"));
    assert_unavailable(&vm.outcome(refused), "rid-c");
    assert_eq!(vm.callouts().len(), 2, "no third callout");
    // A key already in flight still joins its callout: the cap counts callouts.
    let joined = vm.send(with_key(write("rid-a2"), "hk_cap_a"));
    vm.outcome(joined).assert_paused();
    assert_eq!(vm.callouts().len(), 2);

    let calls = vm.callouts();
    vm.answer(calls[0].token, read_write());
    assert_identity(&vm.outcome(a), "mlflow:read mlflow:write");
    assert_identity(&vm.outcome(joined), "mlflow:read mlflow:write");
    // A slot is free again.
    let d = vm.send(with_key(read("rid-d"), "hk_cap_d"));
    vm.outcome(d).assert_paused();
    assert_eq!(vm.callouts().len(), 2);
    vm.outcome(b).assert_paused();

    assert_eq!(counter(&mut vm, "hokusai_auth.callout_cap_rejections"), 1);
    assert_eq!(counter(&mut vm, "hokusai_auth.callouts"), 3);
    assert_eq!(counter(&mut vm, "hokusai_auth.coalesced"), 1);
    assert_eq!(counter(&mut vm, "hokusai_auth.decisions.outcome=503"), 1);
    vm.assert_alive();
}

#[test]
fn past_the_cap_a_stale_verdict_still_stands_in() {
    let host = Host::new();
    let mut vm = host
        .vm(r#"{"max_pending_callouts": 1, "cache": {"ttl_s": 300, "stale_if_error_s": 60}}"#)
        .expect("config accepted");
    through_callout(&mut vm, read("rid-warm"), read_write()).assert_forwarded();
    host.advance(Duration::from_secs(300 + 30));
    let busy = vm.send(with_key(read("rid-busy"), OTHER_KEY));
    vm.outcome(busy).assert_paused();

    let stale = vm.send(read("rid-stale"));
    let outcome = vm.outcome(stale);
    outcome.assert_forwarded();
    assert_eq!(outcome.header("x-auth-stale").as_deref(), Some("1"));
    assert_eq!(outcome.header("x-user-id").as_deref(), Some("alice"));
    assert_eq!(vm.callouts().len(), 1, "only the busy key's callout");
    assert_eq!(counter(&mut vm, "hokusai_auth.callout_cap_rejections"), 1);
    assert_eq!(counter(&mut vm, "hokusai_auth.decisions.outcome=stale"), 1);
}

// ---------------------------------------------------------------- one retry

/// Answers the stream's first callout with `failure`, and returns the retry it caused.
#[track_caller]
fn retried_after(vm: &mut Vm, id: StreamId, failure: CalloutReply) -> harness::Callout {
    let first = vm.answer_only(failure);
    vm.outcome(id).assert_paused();
    let pending = vm.callouts();
    assert_eq!(pending.len(), 1, "one retry: {pending:?}");
    let retry = pending[0].clone();
    assert_ne!(retry.token, first.token);
    assert_eq!(
        retry.context_id, first.context_id,
        "sent from the same context"
    );
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("x-request-id"), first.header("x-request-id"));
    assert!(retry.timeout_ms <= first.timeout_ms, "{retry:?}");
    retry
}

#[test]
fn a_reset_connection_is_retried_once_and_the_retry_decides() {
    let host = Host::new();
    let mut vm = vm(&host);
    let id = vm.send(read("rid-1"));
    retried_after(&mut vm, id, CalloutReply::reset());
    vm.answer_only(read_write());
    assert_identity(&vm.outcome(id), "mlflow:read mlflow:write");
    assert_eq!(counter(&mut vm, "hokusai_auth.callouts"), 2);
    assert_eq!(counter(&mut vm, "hokusai_auth.callout_retries"), 1);
    assert_eq!(
        counter(&mut vm, "hokusai_auth.callout_failures.reason=reset"),
        0,
        "a retry that worked is no failure"
    );
}

#[test]
fn a_refused_connection_is_retried_once() {
    let host = Host::new();
    let mut vm = vm(&host);
    let id = vm.send(write("rid-1"));
    retried_after(&mut vm, id, CalloutReply::refused());
    vm.answer_only(read_only());
    assert_scope_miss(&vm.outcome(id), "rid-1");
    assert_eq!(counter(&mut vm, "hokusai_auth.callout_retries"), 1);
}

#[test]
fn a_reply_with_no_response_at_all_is_retried_once() {
    let host = Host::new();
    let mut vm = vm(&host);
    let id = vm.send(read("rid-1"));
    retried_after(&mut vm, id, CalloutReply::failure());
    vm.answer_only(read_write());
    assert_identity(&vm.outcome(id), "mlflow:read mlflow:write");
    assert_eq!(counter(&mut vm, "hokusai_auth.callout_retries"), 1);
}

#[test]
fn a_second_reset_is_not_retried() {
    let host = Host::new();
    let mut vm = vm(&host);
    let id = vm.send(read("rid-1"));
    retried_after(&mut vm, id, CalloutReply::reset());
    vm.answer_only(CalloutReply::reset());
    assert_unavailable(&vm.outcome(id), "rid-1");
    assert!(vm.callouts().is_empty(), "{:?}", vm.callouts());
    assert_eq!(counter(&mut vm, "hokusai_auth.callouts"), 2);
    assert_eq!(counter(&mut vm, "hokusai_auth.callout_retries"), 1);
    assert_eq!(
        counter(&mut vm, "hokusai_auth.callout_failures.reason=reset"),
        1
    );
}

#[test]
fn the_retry_gets_only_what_is_left_of_the_first_deadline() {
    let host = Host::new();
    let mut vm = vm(&host);
    let start = host.now();
    let id = vm.send(read("rid-1"));
    host.advance(Duration::from_millis(1500));
    let retry = retried_after(&mut vm, id, CalloutReply::reset());
    assert_eq!(retry.timeout_ms, 500, "2000 ms in all: {retry:?}");
    vm.answer_only(CalloutReply::timeout());
    assert_unavailable(&vm.outcome(id), "rid-1");
    assert_eq!(
        host.now().duration_since(start).unwrap(),
        Duration::from_millis(2000)
    );
    assert_eq!(
        counter(&mut vm, "hokusai_auth.callout_failures.reason=timeout"),
        1
    );
    assert_eq!(
        vm.host().histogram("hokusai_auth.callout_latency_ms"),
        Some(vec![1500, 500])
    );
}

#[test]
fn a_timeout_is_not_retried() {
    let host = Host::new();
    let mut vm = vm(&host);
    let id = vm.send(read("rid-1"));
    vm.answer_only(CalloutReply::timeout());
    assert_unavailable(&vm.outcome(id), "rid-1");
    assert!(vm.callouts().is_empty(), "{:?}", vm.callouts());
    assert_eq!(counter(&mut vm, "hokusai_auth.callouts"), 1);
    assert_eq!(counter(&mut vm, "hokusai_auth.callout_retries"), 0);
    assert_eq!(
        counter(&mut vm, "hokusai_auth.callout_failures.reason=timeout"),
        1
    );
    assert_eq!(
        counter(&mut vm, "hokusai_auth.callout_failures.reason=5xx"),
        0
    );
    assert_eq!(
        vm.host().histogram("hokusai_auth.callout_latency_ms"),
        Some(vec![2000])
    );
}

#[test]
fn no_http_status_is_retried() {
    let host = Host::new();
    let mut vm = vm(&host);
    let replies = [
        CalloutReply::json(500, r#"{"detail": "boom"}"#),
        CalloutReply::new(502).body("<html>bad gateway</html>"),
        // The auth service's own 503 (it passed Envoy's router), not a broken connection.
        CalloutReply::json(503, r#"{"detail": "overloaded"}"#),
        CalloutReply::new(504),
        // The auth service echoing Envoy's words still answered: it is a 5xx, not a reset.
        CalloutReply::new(503).body(harness::ENVOY_RESET_BODY),
    ];
    for (i, reply) in replies.into_iter().enumerate() {
        let rid = format!("rid-{i}");
        let key = format!("hk_status_{i}");
        let id = vm.send(with_key(read(&rid), &key));
        vm.answer_only(reply);
        assert_unavailable(&vm.outcome(id), &rid);
        assert!(vm.callouts().is_empty(), "reply {i} was retried");
        vm.finish(id);
    }
    assert_eq!(counter(&mut vm, "hokusai_auth.callouts"), 5);
    assert_eq!(counter(&mut vm, "hokusai_auth.callout_retries"), 0);
    assert_eq!(
        counter(&mut vm, "hokusai_auth.callout_failures.reason=5xx"),
        5
    );
}

#[test]
fn an_unreadable_reply_is_a_bad_reply_and_not_retried() {
    let host = Host::new();
    let mut vm = vm(&host);
    let id = vm.send(read("rid-1"));
    vm.answer_only(CalloutReply::json(200, "<html>not json"));
    assert_unavailable(&vm.outcome(id), "rid-1");
    assert!(vm.callouts().is_empty());
    assert_eq!(
        counter(&mut vm, "hokusai_auth.callout_failures.reason=bad_reply"),
        1
    );
    assert_eq!(counter(&mut vm, "hokusai_auth.callout_retries"), 0);
}

#[test]
fn a_callout_envoy_will_not_start_counts_as_dispatch() {
    let host = Host::new();
    host.fail_dispatch(true);
    let mut vm = vm(&host);
    assert_unavailable(&vm.complete(read("rid-1")), "rid-1");
    assert_eq!(
        counter(&mut vm, "hokusai_auth.callout_failures.reason=dispatch"),
        1
    );
}

#[test]
fn callout_latency_is_recorded_per_attempt() {
    let host = Host::new();
    let mut vm = vm(&host);
    let id = vm.send(read("rid-1"));
    host.advance(Duration::from_millis(37));
    vm.answer_only(read_write());
    vm.outcome(id).assert_forwarded();
    let other = vm.send(with_key(read("rid-2"), OTHER_KEY));
    host.advance(Duration::from_millis(12));
    vm.answer_only(CalloutReply::reset());
    host.advance(Duration::from_millis(30));
    vm.answer_only(read_write());
    vm.outcome(other).assert_forwarded();
    vm.tick();
    assert_eq!(
        vm.host().histogram("hokusai_auth.callout_latency_ms"),
        Some(vec![37, 12, 30])
    );
}

// ------------------------------------------------- a leader that hangs up

#[test]
fn waiters_get_their_answer_from_the_callout_of_a_leader_that_hung_up() {
    let host = Host::new();
    let mut vm = vm(&host);
    let leader = vm.send(read("rid-lead"));
    let writer = vm.send(write("rid-w"));
    let reader = vm.send(read("rid-r"));
    let first = vm.callouts_for(leader).pop().expect("the leader's callout");
    assert_eq!(
        first.context_id,
        vm.root_id(),
        "Envoy makes it from the root"
    );

    vm.reset_by_client(leader);
    vm.tick();
    assert_eq!(
        vm.callouts().len(),
        1,
        "the call goes on, and is not sent again"
    );
    vm.outcome(writer).assert_paused();
    vm.outcome(reader).assert_paused();

    vm.answer(first.token, read_only());
    assert_scope_miss(&vm.outcome(writer), "rid-w");
    let outcome = vm.outcome(reader);
    assert_identity(&outcome, "mlflow:read");
    assert_eq!(outcome.header("x-request-id").as_deref(), Some("rid-r"));
    assert!(matches!(vm.outcome(leader), Outcome::Abandoned));
    vm.assert_alive();
    assert_eq!(counter(&mut vm, "hokusai_auth.callouts"), 1);
    assert_eq!(counter(&mut vm, "hokusai_auth.coalesced"), 2);
}

#[test]
fn the_reply_to_a_callout_everyone_left_still_fills_the_cache() {
    let host = Host::new();
    let mut vm = vm(&host);
    let leader = vm.send(read("rid-lead"));
    vm.reset_by_client(leader);
    vm.answer_only(read_write());
    // The next request with the key is a hit: no second call for the same key.
    let next = vm.send(read("rid-next"));
    assert_identity(&vm.outcome(next), "mlflow:read mlflow:write");
    assert_eq!(vm.callout_history().len(), 1);
    assert_eq!(counter(&mut vm, "hokusai_auth.cache.result=hit"), 1);
}

#[test]
fn a_waiter_that_goes_away_is_forgotten() {
    let host = Host::new();
    let mut vm = vm(&host);
    let leader = vm.send(read("rid-lead"));
    let waiter = vm.send(read("rid-w"));
    vm.reset_by_client(waiter);
    assert_eq!(vm.callouts().len(), 1, "the waiter made no call");
    vm.answer_only(read_write());
    assert_identity(&vm.outcome(leader), "mlflow:read mlflow:write");
    assert!(matches!(vm.outcome(waiter), Outcome::Abandoned));
    vm.assert_alive();
}

#[test]
fn a_reset_after_the_leader_hung_up_is_retried_for_the_waiters() {
    let host = Host::new();
    let mut vm = vm(&host);
    let leader = vm.send(read("rid-lead"));
    let waiter = vm.send(read("rid-w"));
    vm.reset_by_client(leader);
    vm.answer_only(CalloutReply::reset());
    let retry = vm.callouts();
    assert_eq!(retry.len(), 1, "{retry:?}");
    assert_eq!(retry[0].context_id, vm.root_id());
    vm.answer_only(read_write());
    assert_identity(&vm.outcome(waiter), "mlflow:read mlflow:write");
    assert_eq!(counter(&mut vm, "hokusai_auth.callouts"), 2);
    assert_eq!(counter(&mut vm, "hokusai_auth.callout_retries"), 1);
}

#[test]
fn waiters_of_a_callout_whose_reply_never_comes_get_503() {
    let host = Host::new();
    let mut vm = vm(&host);
    let leader = vm.send(read("rid-lead"));
    let waiter = vm.send(read("rid-w"));
    vm.reset_by_client(leader);
    // Envoy always answers by the timeout; should it not, the tick gives up after a grace.
    host.advance(Duration::from_millis(2000 + 4_000));
    vm.tick();
    vm.outcome(waiter).assert_paused();
    host.advance(Duration::from_millis(1_100));
    vm.tick();
    assert_unavailable(&vm.outcome(waiter), "rid-w");
    assert_eq!(
        counter(&mut vm, "hokusai_auth.callout_failures.reason=timeout"),
        1
    );
    // The late reply, should it come after all, is nobody's.
    vm.answer_only(read_write());
    vm.assert_alive();
}
