#![no_main]

//! `common_name` on any subject DN.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::common_name_check(data));
