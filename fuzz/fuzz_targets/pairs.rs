#![no_main]

//! `HeaderMap::parse` on any buffer, against a reference reading of the pairs format.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::pairs(data));
