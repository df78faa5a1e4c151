#![no_main]

//! `xfcc::parse` (and, on what it accepts, `unquote`, `common_name`, `certificate`).
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::xfcc(data));
