//! The verdict cache: shared by workers, TTLs from the harness clock, errors never cached.

mod filter_support;
mod harness;

use filter_support::*;
use harness::{CalloutReply, Host};
use std::time::Duration;

#[test]
fn a_cached_allow_makes_no_callout_until_its_ttl_ends() {
    let host = Host::new();
    let mut vm = vm(&host);
    through_callout(&mut vm, keyed_get(), read_write()).assert_forwarded();
    host.advance(Duration::from_secs(299));
    let upstream = vm.complete(keyed_get());
    assert_eq!(upstream.header("x-user-id").as_deref(), Some("alice"));
    assert_eq!(vm.callout_history().len(), 1);
    host.advance(Duration::from_secs(1));
    vm.send(keyed_get());
    assert_eq!(vm.callout_history().len(), 2, "TTL over: validated again");
}

#[test]
fn denials_are_cached_for_the_negative_ttl() {
    let host = Host::new();
    let mut vm = vm(&host);
    through_callout(&mut vm, keyed_get(), CalloutReply::new(401));
    host.advance(Duration::from_secs(29));
    assert_reply(&vm.complete(keyed_get()), 401, "Invalid or expired API key");
    assert_eq!(vm.callout_history().len(), 1);
    host.advance(Duration::from_secs(1));
    vm.send(keyed_get());
    assert_eq!(vm.callout_history().len(), 2);
}

#[test]
fn errors_are_never_cached() {
    let host = Host::new();
    let mut vm = vm(&host);
    let outcome = through_callout(&mut vm, keyed_get(), CalloutReply::new(500));
    assert_reply(&outcome, 503, "Authentication service unavailable");
    assert_eq!(outcome.header("retry-after").as_deref(), Some("1"));
    through_callout(&mut vm, keyed_get(), read_write()).assert_forwarded();
    assert_eq!(vm.callout_history().len(), 2);
}

#[test]
fn expires_at_caps_the_ttl() {
    let host = Host::new();
    let mut vm = vm(&host);
    let expires = host.now_unix() + 60;
    let expires_at = format!("\"{}\"", hokusai_rfc3339::format_utc(expires as i64));
    through_callout(
        &mut vm,
        keyed_get(),
        allow_with(&["mlflow:read"], "null", &expires_at),
    )
    .assert_forwarded();
    host.advance(Duration::from_secs(59));
    vm.complete(keyed_get()).assert_forwarded();
    host.advance(Duration::from_secs(1));
    vm.send(keyed_get());
    assert_eq!(
        vm.callout_history().len(),
        2,
        "the key expired before the TTL"
    );
}

#[test]
fn two_workers_share_verdicts() {
    let host = Host::new();
    let mut worker1 = vm(&host);
    let mut worker2 = vm(&host);
    through_callout(&mut worker1, keyed_get(), read_write());
    let upstream = worker2.complete(keyed_get());
    assert_eq!(upstream.header("x-api-key-id").as_deref(), Some("key-0001"));
    assert!(worker2.callout_history().is_empty());
    // A denial learned by worker 2 is honoured by worker 1 too.
    let bad = || keyed_get().set_header("authorization", "Bearer hk_revoked");
    through_callout(&mut worker2, bad(), CalloutReply::new(401));
    assert_reply(&worker1.complete(bad()), 401, "Invalid or expired API key");
    assert_eq!(worker1.callout_history().len(), 1);
}

#[test]
fn stale_allow_stands_in_while_the_auth_service_fails() {
    let host = Host::new();
    let mut vm = vm(&host);
    through_callout(&mut vm, keyed_get(), read_write());
    host.advance(Duration::from_secs(300 + 30));
    let upstream = through_callout(&mut vm, keyed_get(), CalloutReply::timeout());
    assert_eq!(upstream.header("x-auth-stale").as_deref(), Some("1"));
    assert_eq!(upstream.header("x-user-id").as_deref(), Some("alice"));
    host.advance(Duration::from_secs(30));
    let outcome = through_callout(&mut vm, keyed_get(), CalloutReply::new(503));
    assert_reply(&outcome, 503, "Authentication service unavailable");
    assert_eq!(outcome.header("retry-after").as_deref(), Some("1"));
}

#[test]
fn the_store_never_holds_the_plaintext_key() {
    let host = Host::new();
    let mut vm = vm(&host);
    through_callout(
        &mut vm,
        keyed_get(),
        allow_with(&["mlflow:read"], "100", "null"),
    );
    assert!(!host.shared_data_entries().is_empty());
    for (key, value) in host.shared_data_entries() {
        let text = String::from_utf8_lossy(&[key, value].concat()).to_string();
        assert!(!text.contains(KEY), "plaintext key in shared data: {text}");
    }
}

#[test]
fn sprayed_keys_cannot_grow_the_cache_past_max_entries() {
    let host = Host::new();
    let mut vm = host.vm(r#"{"cache": {"max_entries": 8}}"#).unwrap();
    for i in 0..100 {
        let request = keyed_get().set_header("authorization", format!("Bearer spray_{i}"));
        through_callout(&mut vm, request, CalloutReply::new(401));
    }
    let slots = host
        .shared_data_keys()
        .iter()
        .filter(|k| k.contains("verdict"))
        .count();
    // Bounded, and yet used: 100 keys over two choices each fill every slot.
    assert_eq!(slots, 8, "{slots} verdict slots");
}
