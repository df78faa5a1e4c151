#![no_main]

//! The request state machine: two workers on one shared store, streams going away, clock
//! jumps, refused dispatches and failing shared data (tests/properties/model.rs).
use hokusai_auth_filter_fuzz::{model, FlowInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: FlowInput| {
    model::run(&input.0);
});
