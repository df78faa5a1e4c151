#![no_main]

//! `xfcc::certificate` on a `Cert=` value, and on the input as DER inside a PEM.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::certificate(data));
