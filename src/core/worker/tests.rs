use super::*;
use crate::core::host::fake::FakeEnvoy;
use crate::core::output::labels::CacheUse;
use crate::core::request::facts::Single;

const T0: i64 = 1_795_435_200_000;

fn worker_with(config: FilterConfig) -> Worker {
    Worker::new(config, None)
}

fn worker() -> Worker {
    worker_with(FilterConfig::default())
}

fn request<'a>(method: &'a str, path: &'a str, key: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        method,
        path,
        x_api_key: Single::One(key.as_bytes()),
        ..RequestFacts::default()
    }
}

fn read(key: &str) -> RequestFacts<'_> {
    request("GET", "/api/2.0/mlflow/experiments/get", key)
}

fn write(key: &str) -> RequestFacts<'_> {
    request("POST", "/api/2.0/mlflow/runs/create", key)
}

const READ_ONLY: &[u8] =
    br#"{"valid": true, "key_id": "kid", "user_id": "alice", "scopes": ["mlflow:read"]}"#;

fn ok(body: &[u8]) -> CalloutReply<'_> {
    CalloutReply {
        status: Some(200),
        body,
        retry_after: None,
        from_upstream: true,
    }
}

const NO_REPLY: CalloutReply<'static> = CalloutReply {
    status: None,
    body: b"",
    retry_after: None,
    from_upstream: false,
};

/// What Envoy's router hands back when the auth service never answered.
fn envoys_own(status: u16, body: &'static [u8]) -> CalloutReply<'static> {
    CalloutReply {
        status: Some(status),
        body,
        retry_after: None,
        from_upstream: false,
    }
}

const ENVOY_RESET: &[u8] =
    b"upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const ENVOY_TIMEOUT: &[u8] = b"upstream request timeout";

fn status_of(r: &Resolved) -> u16 {
    match &r.decision {
        Final::Forward(_) => 200,
        Final::Refuse(refusal) => refusal.reply.status,
    }
}

#[test]
fn concurrent_requests_for_one_key_make_one_callout_and_each_gets_its_own_verdict() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    assert_eq!(w.on_request(1, &read("hk_1"), T0, &mut envoy), Step::Wait);
    assert_eq!(w.on_request(2, &write("hk_1"), T0, &mut envoy), Step::Wait);
    assert_eq!(w.on_request(3, &read("hk_1"), T0, &mut envoy), Step::Wait);
    assert_eq!(envoy.sent.len(), 1, "one callout for three requests");
    assert_eq!(w.tally().coalesced, 2);
    let token = envoy.sent[0].token;
    let resolved = w.on_callout_reply(token, ok(READ_ONLY), T0 + 5, &mut envoy);
    let statuses: Vec<_> = resolved.iter().map(|r| (r.stream, status_of(r))).collect();
    assert_eq!(statuses, vec![(1, 200), (2, 403), (3, 200)]);
    assert_eq!(w.waiting(), 0);
    assert_eq!(w.callouts_in_flight(), 0);
    // The verdict is cached: the next request needs nobody.
    assert!(matches!(
        w.on_request(4, &read("hk_1"), T0 + 10, &mut envoy),
        Step::Forward(_)
    ));
    assert_eq!(w.tally().decisions[0], 3, "three allows");
    assert_eq!(w.tally().cache, [1, 3]);
}

#[test]
fn different_keys_get_their_own_callouts() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    w.on_request(2, &read("hk_2"), T0, &mut envoy);
    assert_eq!(envoy.sent.len(), 2);
    assert_eq!(w.callouts_in_flight(), 2);
}

#[test]
fn past_the_cap_a_new_key_is_refused_at_once() {
    let config = FilterConfig {
        max_pending_callouts: 2,
        ..FilterConfig::default()
    };
    let (mut w, mut envoy) = (worker_with(config), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    w.on_request(2, &read("hk_2"), T0, &mut envoy);
    let Step::Refuse(refusal) = w.on_request(3, &read("hk_3"), T0, &mut envoy) else {
        panic!("expected 503 at once")
    };
    assert_eq!(refusal.reply.status, 503);
    assert_eq!(refusal.reply.retry_after_s, Some(1));
    assert_eq!(envoy.sent.len(), 2);
    assert_eq!(w.tally().callout_cap_rejections, 1);
    // A key already in flight still joins its callout: the cap counts callouts, not waiters.
    assert_eq!(w.on_request(4, &read("hk_1"), T0, &mut envoy), Step::Wait);
    // Once one settles, there is room again.
    w.on_callout_reply(envoy.sent[0].token, ok(READ_ONLY), T0 + 1, &mut envoy);
    assert_eq!(
        w.on_request(5, &read("hk_3"), T0 + 1, &mut envoy),
        Step::Wait
    );
}

#[test]
fn a_reset_is_retried_once_within_the_deadline() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    let first = envoy.sent[0].token;
    assert!(
        w.on_callout_reply(first, NO_REPLY, T0 + 3, &mut envoy)
            .is_empty(),
        "retried, not decided"
    );
    assert_eq!(envoy.sent.len(), 2);
    assert_eq!(
        envoy.sent[1].call.body, envoy.sent[0].call.body,
        "the same request again"
    );
    assert_eq!(
        envoy.sent[1].timeout_ms,
        2000 - 3,
        "within what is left of the deadline"
    );
    assert_eq!(w.tally().callout_retries, 1);
    // A second reset is not retried again.
    let second = envoy.sent[1].token;
    let resolved = w.on_callout_reply(second, NO_REPLY, T0 + 6, &mut envoy);
    assert_eq!(resolved.len(), 1);
    assert_eq!(status_of(&resolved[0]), 503);
    assert_eq!(envoy.sent.len(), 2);
    assert_eq!(
        w.tally().callout_failures,
        [0, 1, 0, 0, 0],
        "one reset counted as failure"
    );
}

#[test]
fn a_retry_that_succeeds_decides_normally() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    w.on_callout_reply(envoy.sent[0].token, NO_REPLY, T0 + 1, &mut envoy);
    let resolved = w.on_callout_reply(envoy.sent[1].token, ok(READ_ONLY), T0 + 2, &mut envoy);
    assert_eq!(status_of(&resolved[0]), 200);
}

#[test]
fn a_timeout_or_an_http_status_is_never_retried() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    let resolved = w.on_callout_reply(envoy.sent[0].token, NO_REPLY, T0 + 2000, &mut envoy);
    assert_eq!((resolved.len(), envoy.sent.len()), (1, 1));
    assert_eq!(w.tally().callout_failures, [1, 0, 0, 0, 0], "a timeout");
    for status in [500, 503, 404] {
        let key = format!("hk_status_{status}");
        w.on_request(2, &read(&key), T0, &mut envoy);
        let token = envoy.sent.last().unwrap().token;
        let reply = CalloutReply {
            status: Some(status),
            body: b"",
            retry_after: None,
            from_upstream: true,
        };
        let resolved = w.on_callout_reply(token, reply, T0 + 1, &mut envoy);
        assert_eq!(status_of(&resolved[0]), 503);
    }
    assert_eq!(envoy.sent.len(), 4, "no retries");
    assert_eq!(w.tally().callout_failures, [1, 0, 2, 1, 0]);
}

#[test]
fn envoys_own_reset_reply_is_retried_like_no_reply() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    let reset = envoys_own(503, ENVOY_RESET);
    assert!(w
        .on_callout_reply(envoy.sent[0].token, reset, T0 + 1, &mut envoy)
        .is_empty());
    assert_eq!(envoy.sent.len(), 2, "retried");
    let resolved = w.on_callout_reply(envoy.sent[1].token, reset, T0 + 2, &mut envoy);
    assert_eq!(status_of(&resolved[0]), 503);
    assert_eq!(
        w.tally().callout_failures,
        [0, 1, 0, 0, 0],
        "a reset, not a 5xx"
    );
}

#[test]
fn envoys_own_timeout_reply_counts_as_a_timeout() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    let timeout = envoys_own(504, ENVOY_TIMEOUT);
    let resolved = w.on_callout_reply(envoy.sent[0].token, timeout, T0 + 2000, &mut envoy);
    assert_eq!((status_of(&resolved[0]), envoy.sent.len()), (503, 1));
    assert_eq!(w.tally().callout_failures, [1, 0, 0, 0, 0]);
}

#[test]
fn envoys_timeout_reply_is_a_timeout_even_when_our_clock_says_it_came_early() {
    // Envoy's timer and the wall clock the filter reads disagree by a few ms under load
    // (seen: the reply 6 ms "early"). Its 504 says what happened; it is not retried.
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    let early = T0 + envoy.sent[0].timeout_ms as i64 - 100;
    let timeout = envoys_own(504, ENVOY_TIMEOUT);
    let resolved = w.on_callout_reply(envoy.sent[0].token, timeout, early, &mut envoy);
    assert_eq!((status_of(&resolved[0]), envoy.sent.len()), (503, 1));
    assert_eq!(w.tally().callout_failures, [1, 0, 0, 0, 0], "a timeout");
}

#[test]
fn the_auth_service_cannot_pass_for_envoy() {
    // The same body from the auth service itself (it carries Envoy's upstream timing
    // header) is a 5xx: never retried, never confused with a reset.
    let mut reply = envoys_own(503, ENVOY_RESET);
    reply.from_upstream = true;
    assert_eq!(reply.envoys_own(), None);
    let mut timeout = envoys_own(504, ENVOY_TIMEOUT);
    timeout.from_upstream = true;
    assert_eq!(timeout.envoys_own(), None, "nor with a timeout");
    assert_eq!(
        envoys_own(503, ENVOY_RESET).envoys_own(),
        Some(NoReply::Reset)
    );
    assert_eq!(
        envoys_own(504, ENVOY_TIMEOUT).envoys_own(),
        Some(NoReply::Timeout)
    );
    assert_eq!(
        envoys_own(503, b"busy").envoys_own(),
        None,
        "other bodies are the service's"
    );
    assert_eq!(
        envoys_own(500, ENVOY_RESET).envoys_own(),
        None,
        "only 503 and 504"
    );
    assert_eq!(
        envoys_own(504, ENVOY_RESET).envoys_own(),
        None,
        "a reset is a 503"
    );
    assert_eq!(
        envoys_own(504, b"upstream request timeout, more").envoys_own(),
        None
    );
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    w.on_callout_reply(envoy.sent[0].token, reply, T0 + 1, &mut envoy);
    assert_eq!(envoy.sent.len(), 1, "no retry");
    assert_eq!(w.tally().callout_failures, [0, 0, 1, 0, 0], "a 5xx");
}

#[test]
fn a_reset_near_the_deadline_is_not_retried() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    // 1,985 ms in: not the 2,000 ms timeout, but too little left for a second attempt.
    let resolved = w.on_callout_reply(envoy.sent[0].token, NO_REPLY, T0 + 1985, &mut envoy);
    assert_eq!((resolved.len(), envoy.sent.len()), (1, 1));
}

#[test]
fn a_refused_dispatch_is_503_unless_a_stale_verdict_stands_in() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    envoy.refuse_dispatch = true;
    let Step::Refuse(r) = w.on_request(1, &read("hk_1"), T0, &mut envoy) else {
        panic!()
    };
    assert_eq!(r.reply.status, 503);
    assert_eq!(w.tally().callout_failures[4], 1);
    // With a verdict past its TTL but within stale_if_error_s (default 120 s):
    envoy.refuse_dispatch = false;
    w.on_request(2, &read("hk_2"), T0, &mut envoy);
    w.on_callout_reply(envoy.sent[0].token, ok(READ_ONLY), T0, &mut envoy);
    envoy.refuse_dispatch = true;
    let Step::Forward(f) = w.on_request(3, &read("hk_2"), T0 + 301_000, &mut envoy) else {
        panic!()
    };
    assert_eq!(f.facts.cache, CacheUse::Stale);
}

#[test]
fn when_the_leader_goes_away_its_callout_still_decides_the_others() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    w.on_request(2, &read("hk_1"), T0, &mut envoy);
    w.on_stream_gone(1);
    // Envoy keeps the call open (it belongs to the root context): nothing is sent again.
    assert!(w.on_tick(T0 + 1, &envoy).is_empty());
    assert_eq!(envoy.sent.len(), 1);
    let resolved = w.on_callout_reply(envoy.sent[0].token, ok(READ_ONLY), T0 + 3, &mut envoy);
    assert_eq!(resolved.len(), 1);
    assert_eq!((resolved[0].stream, status_of(&resolved[0])), (2, 200));
}

#[test]
fn a_callout_everyone_left_still_caches_its_verdict() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    w.on_stream_gone(1);
    assert_eq!((w.callouts_in_flight(), w.waiting()), (1, 0));
    let resolved = w.on_callout_reply(envoy.sent[0].token, ok(READ_ONLY), T0 + 3, &mut envoy);
    assert!(resolved.is_empty(), "nobody to decide");
    assert_eq!(w.callouts_in_flight(), 0);
    // The next request with the key is decided from the cache, with no callout.
    let Step::Forward(f) = w.on_request(2, &read("hk_1"), T0 + 4, &mut envoy) else {
        panic!("not forwarded from the cached verdict")
    };
    assert_eq!(f.facts.cache, CacheUse::Hit);
    assert_eq!(envoy.sent.len(), 1);
}

#[test]
fn callouts_whose_clients_hung_up_hold_their_place_under_the_cap() {
    let config = FilterConfig {
        max_pending_callouts: 2,
        ..FilterConfig::default()
    };
    let (mut w, mut envoy) = (worker_with(config), FakeEnvoy::default());
    for (id, key) in [(1, "hk_1"), (2, "hk_2")] {
        w.on_request(id, &read(key), T0, &mut envoy);
        w.on_stream_gone(id);
    }
    // Envoy still has both calls open: a third key may not add one.
    let Step::Refuse(r) = w.on_request(3, &read("hk_3"), T0, &mut envoy) else {
        panic!("a third callout past the cap")
    };
    assert_eq!(r.reply.status, 503);
    assert_eq!(envoy.sent.len(), 2);
    // Once one settles, there is room again.
    w.on_callout_reply(envoy.sent[0].token, ok(READ_ONLY), T0 + 1, &mut envoy);
    assert_eq!(
        w.on_request(4, &read("hk_3"), T0 + 1, &mut envoy),
        Step::Wait
    );
}

#[test]
fn a_wall_clock_step_back_never_stretches_a_callout() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    // Envoy's clock is the wall clock: an hour back, the deadline is not an hour away.
    let back = T0 - 3_600_000;
    let resolved = w.on_callout_reply(envoy.sent[0].token, NO_REPLY, back + 5, &mut envoy);
    assert!(resolved.is_empty(), "a reset is retried");
    assert_eq!(
        envoy.sent[1].timeout_ms, 2000,
        "at most timeout_ms, not an hour more"
    );
    // And a reply that never comes is given up timeout + grace after the step, not later.
    assert!(w.on_tick(back + 2000 + 4_000, &envoy).is_empty());
    assert_eq!(w.on_tick(back + 2000 + 5_100, &envoy).len(), 1);
}

#[test]
fn a_waiter_gone_is_simply_forgotten() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    w.on_request(2, &read("hk_1"), T0, &mut envoy);
    w.on_stream_gone(2);
    let resolved = w.on_callout_reply(envoy.sent[0].token, ok(READ_ONLY), T0 + 1, &mut envoy);
    assert_eq!(
        resolved.iter().map(|r| r.stream).collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn a_reply_that_never_comes_is_given_up_after_a_grace() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    w.on_request(2, &read("hk_2"), T0, &mut envoy);
    w.on_stream_gone(2);
    assert!(w.on_tick(T0 + 2000 + 4_000, &envoy).is_empty());
    let resolved = w.on_tick(T0 + 2000 + 5_001, &envoy);
    assert_eq!(resolved.len(), 1, "only request 1 still waited");
    assert_eq!(status_of(&resolved[0]), 503);
    assert_eq!(w.callouts_in_flight(), 0, "both flights are gone");
    // A reply that turns up after all is nobody's.
    assert!(w
        .on_callout_reply(envoy.sent[0].token, ok(READ_ONLY), T0 + 9_000, &mut envoy)
        .is_empty());
}

#[test]
fn a_token_envoy_issues_again_never_decides_the_old_flight() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    let token = envoy.sent[0].token;
    // Envoy's counter comes round to the same token for another key's call.
    envoy.next_token = token - 1;
    w.on_request(2, &read("hk_2"), T0, &mut envoy);
    assert_eq!(envoy.sent[1].token, token);
    let resolved = w.on_callout_reply(token, ok(READ_ONLY), T0 + 1, &mut envoy);
    assert_eq!(
        resolved.iter().map(|r| r.stream).collect::<Vec<_>>(),
        vec![2]
    );
    // The first flight, whose token was taken, is given up after its deadline.
    let resolved = w.on_tick(T0 + 2000 + 5_001, &envoy);
    assert_eq!(
        resolved.iter().map(|r| r.stream).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(w.callouts_in_flight(), 0);
}

#[test]
fn unknown_tokens_are_ignored() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    assert!(w
        .on_callout_reply(999, ok(READ_ONLY), T0, &mut envoy)
        .is_empty());
}

#[test]
fn latencies_are_recorded_per_attempt() {
    let (mut w, mut envoy) = (worker(), FakeEnvoy::default());
    w.on_request(1, &read("hk_1"), T0, &mut envoy);
    w.on_callout_reply(envoy.sent[0].token, ok(READ_ONLY), T0 + 42, &mut envoy);
    assert_eq!(w.tally().latencies_ms, vec![42]);
    assert_eq!(w.tally().callouts, 1);
}
