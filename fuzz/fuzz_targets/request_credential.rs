#![no_main]

//! `find_credential` on credential headers, one per line (`A` authorization, `K` x-api-key).
use hokusai_auth_filter_fuzz::{checks, credential_lines};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (auth, keys) = credential_lines(data);
    checks::request_credential(&auth, &keys);
});
