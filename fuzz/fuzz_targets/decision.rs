#![no_main]

//! The whole decision: a scenario of requests, replies, ticks and clock steps, run against
//! a worker and held to the contract at every step (tests/properties/model.rs).
use hokusai_auth_filter_fuzz::{model, DecisionInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: DecisionInput| {
    model::run(&input.0);
});
