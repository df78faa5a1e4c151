//! Checks of the test harness itself: first the pure ABI pieces (wire formats,
//! shared-data CAS, request building), then, with the filter built, that the
//! harness really drives it the way Envoy would.

mod harness;

use std::time::Duration;

use harness::shared_data::{CasMismatch, SharedData};
use harness::wire::{decode_pairs, decode_property_path, encode_pairs, HeaderMap};
use harness::{
    CalloutReply, Host, LogLevel, Outcome, Request, ENVOY_REFUSED_BODY, ENVOY_RESET_BODY,
    ENVOY_TIMEOUT_BODY,
};

const CONFIG: &str = r#"{"auth_cluster":"auth_service"}"#;

// ---------------------------------------------------------------- wire formats

#[test]
fn header_pairs_use_the_sdk_byte_layout() {
    let bytes = encode_pairs(&[(":path", "/a"), ("x", "")]);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        2, 0, 0, 0,             // two pairs
        5, 0, 0, 0, 2, 0, 0, 0, // ":path", "/a"
        1, 0, 0, 0, 0, 0, 0, 0, // "x", ""
        b':', b'p', b'a', b't', b'h', 0, b'/', b'a', 0,
        b'x', 0, 0,
    ];
    assert_eq!(bytes, expected);
}

#[test]
fn header_pairs_round_trip_including_non_utf8_values() {
    let pairs: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), b"GET".to_vec()),
        ("x-bin".into(), vec![0xff, 0x00, 0xfe]),
        ("empty".into(), Vec::new()),
    ];
    let back: Vec<(String, Vec<u8>)> = decode_pairs(&encode_pairs(&pairs))
        .expect("well-formed")
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), v))
        .collect();
    assert_eq!(back, pairs);
    assert_eq!(decode_pairs(&encode_pairs::<&str, &str>(&[])), Some(vec![]));
}

#[test]
fn truncated_header_pairs_are_rejected_not_misread() {
    let bytes = encode_pairs(&[("name", "value")]);
    for cut in 0..bytes.len() - 1 {
        assert_eq!(decode_pairs(&bytes[..cut]), None, "cut at {cut}");
    }
    // A count far larger than the buffer must not allocate or overflow.
    assert_eq!(decode_pairs(&[0xff, 0xff, 0xff, 0xff]), None);
}

#[test]
fn header_map_follows_envoy_semantics() {
    let mut map = HeaderMap::from_pairs(&[("X-User-Id", "a"), ("x-user-id", "b"), ("other", "1")]);
    assert_eq!(map.get("x-user-id"), Some(&b"a"[..]), "first value wins");
    assert_eq!(map.get_all("X-USER-ID").len(), 2);
    // setCopy: every old value goes, the new one is appended.
    map.replace("x-user-id", b"c");
    assert_eq!(map.get_all("x-user-id"), vec![&b"c"[..]]);
    assert_eq!(map.entries().last().unwrap().0, "x-user-id");
    map.add("other", b"2");
    map.remove("OTHER");
    assert_eq!(map.get("other"), None);
    assert_eq!(map.len(), 1);
}

#[test]
fn property_paths_split_on_nul_like_envoy() {
    let seg = |s: &str| s.as_bytes().to_vec();
    assert_eq!(
        decode_property_path(b"connection\0mtls"),
        vec![seg("connection"), seg("mtls")]
    );
    assert_eq!(
        decode_property_path(b"source\0address\0"),
        vec![seg("source"), seg("address")]
    );
    // One segment with a dot is not the dotted property "connection.mtls".
    assert_eq!(
        decode_property_path(b"connection.mtls"),
        vec![seg("connection.mtls")]
    );
    assert!(decode_property_path(b"").is_empty());
}

// ---------------------------------------------------------------- shared data

#[test]
fn shared_data_cas_works_like_envoy() {
    let mut store = SharedData::new();
    assert_eq!(store.get(b"k"), None);
    // Missing key: created whatever the cas.
    store.set(b"k", b"v1", 77).unwrap();
    let (value, cas1) = store.get(b"k").unwrap();
    assert_eq!(value, b"v1");
    assert_ne!(cas1, 0);
    // Matching cas writes and moves the cas on; the old one is now stale.
    store.set(b"k", b"v2", cas1).unwrap();
    let (_, cas2) = store.get(b"k").unwrap();
    assert_ne!(cas2, cas1);
    assert_eq!(store.set(b"k", b"v3", cas1), Err(CasMismatch));
    assert_eq!(store.get(b"k").unwrap().0, b"v2");
    // cas 0 is unconditional.
    store.set(b"k", b"v4", 0).unwrap();
    assert_eq!(store.get(b"k").unwrap().0, b"v4");
    // One counter for the whole store: another key's cas never matches.
    store.set(b"other", b"x", 0).unwrap();
    let (_, other_cas) = store.get(b"other").unwrap();
    assert_eq!(store.set(b"k", b"v5", other_cas), Err(CasMismatch));
}

// ---------------------------------------------------------------- requests and replies

#[test]
fn requests_look_like_what_envoy_hands_the_filter() {
    let a = Request::get("/api/2.0/mlflow/experiments/get?experiment_id=1");
    let b = Request::post("/x").header("Authorization", "Bearer k");
    assert_ne!(a.request_id(), b.request_id(), "x-request-id is unique");
    let names: Vec<&str> = a.headers().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [":authority", ":path", ":method", ":scheme", "x-request-id"]
    );
    assert!(b
        .headers()
        .iter()
        .any(|(n, v)| n == "authorization" && v == b"Bearer k"));
    let c = Request::get("/").without_header("x-request-id");
    assert_eq!(c.request_id(), None);
}

#[test]
fn failed_callouts_reach_the_filter_as_envoy_1_40_delivers_them() {
    // Measured on Envoy 1.40: timeouts and broken connections are router local replies.
    let local = |reply: &CalloutReply, status: &str, body: &str| {
        let response = reply.response.as_ref().expect("a response");
        assert_eq!(response.headers.get(":status"), Some(status.as_bytes()));
        assert_eq!(
            response.headers.get("content-type"),
            Some(&b"text/plain"[..])
        );
        assert_eq!(response.headers.get("x-envoy-upstream-service-time"), None);
        assert_eq!(response.body, body.as_bytes());
    };
    let timeout = CalloutReply::timeout();
    local(&timeout, "504", ENVOY_TIMEOUT_BODY);
    assert!(timeout.timed_out);
    local(&CalloutReply::reset(), "503", ENVOY_RESET_BODY);
    local(&CalloutReply::refused(), "503", ENVOY_REFUSED_BODY);
    assert!(!CalloutReply::reset().timed_out && !CalloutReply::refused().timed_out);
    // What the auth service itself says passes Envoy's router, which marks it.
    let upstream = CalloutReply::json(503, "{}").header("retry-after", "3");
    let headers = &upstream.response.as_ref().unwrap().headers;
    assert!(headers.get("x-envoy-upstream-service-time").is_some());
    assert_eq!(headers.get("retry-after"), Some(&b"3"[..]));
    // onHttpCallFailure: nothing at all.
    assert!(CalloutReply::failure().response.is_none());
}

// ---------------------------------------------------------------- driving the real filter

fn host() -> Host {
    let host = Host::new();
    host.set_env("AUTH_SERVICE_TOKEN", "svc-token");
    host
}

#[test]
fn smoke_no_key_gets_401_and_a_key_gets_one_callout() {
    let host = host();
    let mut vm = host.vm(CONFIG).expect("config accepted");

    let denied = vm.complete(Request::get(
        "/api/2.0/mlflow/experiments/get?experiment_id=1",
    ));
    denied.assert_replied(401);
    assert_eq!(denied.detail().as_deref(), Some("API key required"));
    assert!(denied.header("www-authenticate").is_some(), "{denied:?}");
    assert!(vm.callouts().is_empty());

    let request =
        Request::get("/api/2.0/mlflow/experiments/get?experiment_id=1").bearer("hk_test_1");
    let request_id = request.request_id();
    let id = vm.send(request);
    vm.outcome(id).assert_paused();
    let callouts = vm.callouts();
    assert_eq!(callouts.len(), 1, "{callouts:?}");
    let call = &callouts[0];
    assert_eq!(call.upstream, "auth_service");
    assert_eq!(
        call.context_id,
        vm.root_id(),
        "Envoy makes calls from the root"
    );
    assert_eq!(call.stream(), id);
    assert_eq!(call.header(":method").as_deref(), Some("POST"));
    assert_eq!(call.header("x-request-id"), request_id);
    assert_eq!(call.json()["api_key"], "hk_test_1");
    assert!(call.timeout_ms > 0);
    vm.assert_alive();
}

#[test]
fn an_answered_callout_resumes_the_paused_stream() {
    let host = host();
    let mut vm = host.vm(CONFIG).unwrap();
    let id = vm.send(Request::get("/api/2.0/mlflow/experiments/get").bearer("hk_test_1"));
    vm.answer_only(CalloutReply::json(
        200,
        r#"{"valid":true,"key_id":"k1","user_id":"u1","scopes":["mlflow:read"]}"#,
    ));
    let outcome = vm.outcome(id);
    outcome.assert_forwarded();
    assert_eq!(outcome.header("x-user-id").as_deref(), Some("u1"));
    assert!(vm.callouts().is_empty());
    vm.finish(id);
    vm.assert_alive();
}

#[test]
fn workers_of_one_host_share_shared_data_metrics_and_clock() {
    let host = host();
    let mut first = host.vm(CONFIG).unwrap();
    let mut second = host.vm(CONFIG).unwrap();
    assert_eq!((first.worker(), second.worker()), (0, 1));

    let id = first.send(Request::get("/api/2.0/mlflow/experiments/get").bearer("hk_test_1"));
    first.answer_only(CalloutReply::json(
        200,
        r#"{"valid":true,"key_id":"k1","user_id":"u1","scopes":["mlflow:read"]}"#,
    ));
    first.outcome(id).assert_forwarded();
    assert!(
        !host.shared_data_keys().is_empty(),
        "the verdict went to shared data"
    );

    // The second worker finds the verdict: no callout of its own.
    let outcome =
        second.complete(Request::get("/api/2.0/mlflow/experiments/get").bearer("hk_test_1"));
    outcome.assert_forwarded();
    assert!(second.callout_history().is_empty());

    first
        .complete(Request::get("/api/2.0/mlflow/runs/get"))
        .assert_replied(401);
    second
        .complete(Request::get("/api/2.0/mlflow/runs/get"))
        .assert_replied(401);
    // Each worker counts in its own memory and flushes on its tick into the one stat.
    first.tick();
    second.tick();
    assert_eq!(
        host.metric("hokusai_auth.decisions.outcome=401"),
        Some(2),
        "a 401 counter summed over both workers: {:?}",
        host.metric_names()
    );

    let before = host.now_unix();
    host.advance(Duration::from_secs(301));
    assert_eq!(host.now_unix(), before + 301);
}

#[test]
fn a_refused_configuration_is_an_error_that_quotes_the_filter() {
    let host = host();
    let err = match host.vm(r#"{"auth_clustr":"auth_service"}"#) {
        Ok(_) => panic!("a misspelt field must be refused"),
        Err(err) => err,
    };
    assert!(err.contains("auth_clustr"), "{err}");
    assert!(host
        .logs_at_least(LogLevel::Error)
        .iter()
        .any(|l| l.message.contains("auth_clustr")));
}

#[test]
fn logs_are_captured_with_levels_and_workers() {
    let host = host();
    let _vm = host.vm(CONFIG).unwrap();
    let logs = host.logs();
    assert!(!logs.is_empty());
    assert!(logs.iter().all(|l| l.worker == 0));
    assert!(logs.iter().any(|l| l.level == LogLevel::Info));
}

#[test]
fn non_utf8_header_values_reach_the_filter() {
    let host = host();
    let mut vm = host.vm(CONFIG).unwrap();
    let outcome = vm.complete(
        Request::get("/api/2.0/mlflow/experiments/get")
            .header_bytes("authorization", &[0xff, 0xfe]),
    );
    assert!(!matches!(outcome, Outcome::Crashed(_)), "{outcome:?}");
    vm.assert_alive();
}

/// The filter imports only host functions it calls (no SDK brings in the rest), and the
/// harness plays every one of them: nothing is linked to a trap.
#[test]
fn every_import_of_the_filter_is_played_by_the_harness() {
    let host = host();
    assert_eq!(host.stubbed_imports(), Vec::<String>::new());
}

#[test]
fn a_timeout_reply_comes_when_the_callout_timeout_has_passed() {
    let host = host();
    let mut vm = host.vm(CONFIG).unwrap();
    let start = host.now();
    vm.send(Request::get("/api/2.0/mlflow/experiments/get").bearer("hk_test_1"));
    let callout = vm.answer_only(CalloutReply::timeout());
    let waited = host.now().duration_since(start).unwrap();
    assert_eq!(waited, Duration::from_millis(callout.timeout_ms.into()));
}

#[test]
fn a_stream_that_goes_away_leaves_its_callout_to_the_root_context() {
    // proxy-wasm-cpp-host's http_call makes every call from the root context: a stream's
    // end does not cancel it, and its reply goes to the root.
    let host = host();
    let mut vm = host.vm(CONFIG).unwrap();
    let id = vm.send(Request::get("/api/2.0/mlflow/experiments/get").bearer("hk_test_1"));
    let waiter = vm.send(Request::get("/api/2.0/mlflow/runs/get").bearer("hk_test_1"));
    let callout = vm.callouts_for(id).pop().expect("the stream's callout");
    vm.reset_by_client(id);
    assert!(
        matches!(vm.outcome(id), Outcome::Abandoned),
        "{:?}",
        vm.outcome(id)
    );
    assert_eq!(vm.callouts().len(), 1, "still pending");
    assert_eq!(callout.context_id, vm.root_id());
    vm.answer(
        callout.token,
        CalloutReply::json(
            200,
            r#"{"valid":true,"key_id":"k1","user_id":"u1","scopes":["mlflow:read"]}"#,
        ),
    );
    let outcome = vm.outcome(waiter);
    outcome.assert_forwarded();
    assert_eq!(outcome.header("x-user-id").as_deref(), Some("u1"));
    vm.assert_alive();
}

#[test]
fn a_stream_decided_during_on_tick_gets_its_reply() {
    // Replies made through set_effective_context from the root's timer are sent when the
    // VM call returns, as after any other callback.
    let host = host();
    let mut vm = host.vm(CONFIG).unwrap();
    let leader = vm.send(Request::get("/api/2.0/mlflow/experiments/get").bearer("hk_test_1"));
    let waiter = vm.send(Request::get("/api/2.0/mlflow/runs/get").bearer("hk_test_1"));
    vm.reset_by_client(leader);
    // The filter gives a callout up on the tick once its reply is long overdue.
    host.advance(std::time::Duration::from_secs(60));
    vm.tick();
    vm.outcome(waiter).assert_replied(503);
    vm.assert_alive();
}
