//! A key's hourly limit across workers, with the interleavings Envoy allows forced: another
//! worker counts the same key between this VM's read of its counter and its write. That
//! worker is the core's own counter code, run natively on the same shared data, so both
//! sides are the filter's; no interleaving may let more than the limit through.

mod filter_support;
mod harness;

use std::sync::{Arc, Mutex};

use filter_support::*;
use harness::shared_data::SharedData;
use harness::{Host, Request};
use hokusai_auth_filter::core::host::{SharedStore, StoreError};
use hokusai_auth_filter::core::verdict::digest::KeyDigest;
use hokusai_auth_filter::core::verdict::rate_limit::{Count, RateCounters};

const LIMIT: u64 = 3;
const PREFIX: &str = "hokusai.v1.ml-platform.rate.";

/// The harness's shared data, as the core's store trait sees it (Envoy's CAS rules).
struct Shared<'a>(std::cell::RefCell<&'a mut SharedData>);

impl SharedStore for Shared<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.borrow().get(key.as_bytes())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut shared = self.0.borrow_mut();
        shared
            .set(key.as_bytes(), value, cas.unwrap_or(0))
            .map_err(|_| StoreError::CasMismatch)
    }
}

/// Lets another worker count `key` once, right after the VM's `nth` read of a counter slot
/// (and after each later read while `every` is set); returns how often it was let through.
fn other_worker(host: &Host, key: &str, nth: usize, every: bool) -> Arc<Mutex<u64>> {
    let counted = Arc::new(Mutex::new(0));
    let (seen, digest, now) = (
        Arc::new(Mutex::new(0usize)),
        KeyDigest::of(key.as_bytes()),
        host.now_unix() as i64,
    );
    let tally = counted.clone();
    let counters = RateCounters::new(PREFIX.to_string(), 10_000);
    host.interleave(
        PREFIX,
        Some(Box::new(move |shared: &mut SharedData, _key: &[u8]| {
            let mut seen = seen.lock().unwrap();
            *seen += 1;
            if *seen == nth || (every && *seen > nth) {
                let store = Shared(std::cell::RefCell::new(shared));
                if counters.consume(&store, &digest, LIMIT, now) == Count::Counted {
                    *tally.lock().unwrap() += 1;
                }
            }
        })),
    );
    counted
}

fn limited() -> harness::CalloutReply {
    allow_with(&["mlflow:read"], &LIMIT.to_string(), "null")
}

#[test]
fn a_count_landing_between_a_read_and_a_write_is_never_lost() {
    for nth in 1..=6 {
        for every in [false, true] {
            let host = Host::new();
            let mut vm = vm(&host);
            let counted = other_worker(&host, KEY, nth, every);
            // Six requests wait on one callout; its reply decides them all at once.
            let ids: Vec<_> = (0..6).map(|_| vm.send(keyed_get())).collect();
            vm.answer_only(limited());
            let forwarded = ids
                .iter()
                .filter(|id| vm.outcome(**id).is_forwarded())
                .count() as u64;
            let other = *counted.lock().unwrap();
            assert_eq!(
                forwarded + other,
                LIMIT,
                "interloping at read {nth} (every: {every}): {forwarded} here, {other} there"
            );
            for id in ids {
                let outcome = vm.outcome(id);
                if !outcome.is_forwarded() {
                    assert_reply(&outcome, 429, "Rate limit exceeded");
                }
            }
            host.interleave(PREFIX, None);
        }
    }
}

#[test]
fn two_workers_deciding_a_new_key_at_once_share_one_count() {
    let host = Host::new();
    let (mut a, mut b) = (vm(&host), vm(&host));
    // Both workers get the key before either has a verdict: one callout each.
    let on_a: Vec<_> = (0..4).map(|_| a.send(keyed_get())).collect();
    let on_b: Vec<_> = (0..4).map(|_| b.send(keyed_get())).collect();
    a.answer_only(limited());
    b.answer_only(limited());
    let forwarded = on_a
        .iter()
        .map(|id| a.outcome(*id))
        .chain(on_b.iter().map(|id| b.outcome(*id)))
        .filter(|o| o.is_forwarded())
        .count() as u64;
    assert_eq!(forwarded, LIMIT);
    // And later requests, on either worker, from the cache: all refused this hour.
    for vm in [&mut a, &mut b] {
        assert_reply(
            &vm.complete(
                Request::get("/api/2.0/mlflow/experiments/get?experiment_id=2").bearer(KEY),
            ),
            429,
            "Rate limit exceeded",
        );
    }
}
