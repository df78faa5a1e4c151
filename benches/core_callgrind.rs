//! The cost model's native view of a warm request (bench/README.md, "Cost model"): the
//! filter's decision (`hokusai_auth_filter::core`, built for this machine) for a key whose
//! verdict is in the worker's copy, `N` times in `warm_requests`, so that
//! `valgrind --tool=callgrind --toggle-collect='*warm_requests*'` attributes its
//! instructions to SHA-256, the cache lookup, header building and the allocator.
//! `bench/cost_model.py native` (run by `make cost-model`) does that and prints the table.
//!
//! Run alone it prints the heap allocations per request (a counting global allocator):
//! `cargo bench --profile ci --bench core_callgrind -- [N]`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use hokusai_auth_filter::core::auth_service::reply::interpret;
use hokusai_auth_filter::core::config::FilterConfig;
use hokusai_auth_filter::core::host::fake::FakeEnvoy;
use hokusai_auth_filter::core::output::access_log::access_log_record;
use hokusai_auth_filter::core::pairs::serialize;
use hokusai_auth_filter::core::policy::{Decision, Policy};
use hokusai_auth_filter::core::request::facts::RequestFacts;

/// Counts allocations so the report can say how many a warm decision makes.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// 2026-11-23T12:00:00Z, the harness's clock.
const NOW: i64 = 1_795_435_200;

/// The request headers as Envoy hands them over (the pairs buffer of an MLflow client call).
fn request_buffer() -> Vec<u8> {
    let pairs: [(&[u8], &[u8]); 10] = [
        (b":authority", b"127.0.0.1:10000"),
        (b":path", common::REQUEST_PATH.as_bytes()),
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b"user-agent", b"mlflow-python-client/3.17.2"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"accept", b"*/*"),
        (b"authorization", b"Bearer hk_bench_0000"),
        (b"x-forwarded-proto", b"http"),
        (b"x-request-id", b"8c2e7a3e-6b0e-4a43-9a6e-3f0b7f0a8b1c"),
    ];
    serialize(&pairs)
}

/// The measured loop: callgrind collects only inside this function. Per request: read the
/// facts from the pairs buffer, decide, and render the identity headers and the access-log
/// record, as the adapter does.
#[inline(never)]
fn warm_requests(policy: &mut Policy, host: &mut FakeEnvoy, buffer: &[u8], n: usize) -> usize {
    let mut headers = 0;
    for _ in 0..n {
        let facts = RequestFacts::from_pairs(black_box(buffer)).expect("well-formed buffer");
        match black_box(policy.decide(&facts, host, NOW)) {
            Decision::Forward(forward) => {
                let identity = forward.identity.as_ref().expect("identity headers");
                headers += identity.pairs().count();
                black_box(access_log_record(&forward.facts, Some(identity)));
            }
            other => panic!("expected a warm forward, got {other:?}"),
        }
    }
    headers
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .map(|a| a.parse().expect("N: requests to run"))
        .unwrap_or(10_000);
    let config = FilterConfig::parse(common::envoy_plugin_config().as_bytes())
        .expect("envoy.yaml's plugin configuration parses");
    let mut policy = Policy::new(config);
    let mut host = FakeEnvoy::default();
    let buffer = request_buffer();
    // The first request misses; the auth service's answer fills both caches.
    let facts = RequestFacts::from_pairs(&buffer).expect("well-formed buffer");
    let Decision::Validate(pending) = policy.decide(&facts, &mut host, NOW) else {
        panic!("the first request must miss the cache");
    };
    let reply = br#"{"valid":true,"key_id":"key-bench-0000","user_id":"bench-user-0000","service_id":"ml-platform","scopes":["mlflow:read","mlflow:write"],"rate_limit_per_hour":null,"expires_at":null}"#;
    let settled = policy.settle(
        &pending,
        interpret(Some(200), reply, None, NOW, "ml-platform"),
        &host,
        NOW,
    );
    let _ = policy.conclude(&settled, &pending, pending.access, &host, NOW);
    warm_requests(&mut policy, &mut host, &buffer, 100);

    let (a0, b0) = (ALLOCATIONS.load(Relaxed), BYTES.load(Relaxed));
    let start = Instant::now();
    let headers = warm_requests(&mut policy, &mut host, &buffer, n);
    let elapsed = start.elapsed();
    let (a1, b1) = (ALLOCATIONS.load(Relaxed), BYTES.load(Relaxed));
    assert_eq!(
        headers,
        5 * n,
        "five identity headers per forwarded request"
    );
    let per = |x: u64| x as f64 / n as f64;
    println!(
        "{{\"requests\": {n}, \"allocations_per_request\": {:.2}, \"bytes_per_request\": {:.1}, \"native_ns_per_request\": {:.0}}}",
        per(a1 - a0),
        per(b1 - b0),
        elapsed.as_nanos() as f64 / n as f64
    );
}
