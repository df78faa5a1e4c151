#![no_main]

//! `is_jwt_shaped` on any bearer value.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::request_jwt_shape(data));
