#![no_main]

//! `FilterConfig::parse` on any plugin configuration.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::config(data));
