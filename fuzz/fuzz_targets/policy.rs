#![no_main]

//! The policy, one request's whole decision: a scenario of requests, replies, ticks and clock
//! steps, run against a worker and held to the contract at every step
//! (tests/properties/model.rs).
use hokusai_auth_filter_fuzz::{model, PolicyInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: PolicyInput| {
    model::run(&input.0);
});
