#![no_main]

//! `xfcc::cert_fields` against a reference reading, and `der_of` on what it finds.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::identity_xfcc(data));
