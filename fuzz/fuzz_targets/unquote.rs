#![no_main]

//! `xfcc::unquote` on any field value.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::unquote(data));
