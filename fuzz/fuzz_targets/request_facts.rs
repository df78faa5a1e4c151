#![no_main]

//! `RequestFacts::from_pairs`, the adapter's read of a request, on any bytes (as Envoy hands
//! a pairs buffer over).
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::request_facts(data));
