#![no_main]

//! The worker's request state machine: two workers on one shared store, streams going away,
//! clock jumps, refused dispatches and failing shared data (tests/properties/model.rs).
use hokusai_auth_filter_fuzz::{model, WorkerInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: WorkerInput| {
    model::run(&input.0);
});
